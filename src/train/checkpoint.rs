//! Checkpoints: every trainable tensor, optimizer state and the loop's
//! position in one safetensors file, written to a temporary name and renamed,
//! so a crash mid-write leaves the previous checkpoint loadable.

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
}

fn err(path: &Path, msg: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::File {
        path: path.display().to_string(),
        msg: crate::fsx::one_line(msg),
    }
}

/// Host-side buffers and device tensors to store, by name.
#[derive(Default)]
pub struct CheckpointData {
    pub f32s: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    pub u32s: BTreeMap<String, (Vec<usize>, Vec<u32>)>,
    pub meta: HashMap<String, String>,
}

impl CheckpointData {
    pub fn put_tensor(&mut self, name: &str, t: &Tensor) -> candle_core::Result<()> {
        let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        self.f32s.insert(name.to_string(), (t.dims().to_vec(), v));
        Ok(())
    }

    pub fn tensor(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        match self.f32s.get(name) {
            Some((shape, v)) => Tensor::from_vec(v.clone(), shape.as_slice(), device),
            None => candle_core::bail!("checkpoint has no tensor {name}"),
        }
    }
}

pub fn file_name(step: u64) -> String {
    format!("step-{step:07}.safetensors")
}

pub fn save(dir: &Path, step: u64, data: &CheckpointData) -> Result<PathBuf, CheckpointError> {
    let path = dir.join(file_name(step));
    fn le_bytes<T: Copy, const N: usize>(
        m: &BTreeMap<String, (Vec<usize>, Vec<T>)>,
        to: fn(T) -> [u8; N],
        dtype: Dtype,
    ) -> Vec<(String, Vec<usize>, Vec<u8>, Dtype)> {
        m.iter()
            .map(|(n, (s, v))| {
                (
                    n.clone(),
                    s.clone(),
                    v.iter().flat_map(|x| to(*x)).collect(),
                    dtype,
                )
            })
            .collect()
    }
    let mut raw = le_bytes(&data.f32s, f32::to_le_bytes, Dtype::F32);
    raw.extend(le_bytes(&data.u32s, u32::to_le_bytes, Dtype::U32));
    let mut views: Vec<(String, TensorView)> = Vec::with_capacity(raw.len());
    for (n, s, b, dt) in &raw {
        views.push((
            n.clone(),
            TensorView::new(*dt, s.clone(), b).map_err(|e| err(&path, e))?,
        ));
    }
    let bytes = safetensors::tensor::serialize(views, Some(data.meta.clone()))
        .map_err(|e| err(&path, e))?;
    crate::fsx::write_atomic(&path, &bytes).map_err(|e| err(&path, e))?;
    Ok(path)
}

pub fn load(path: &Path) -> Result<CheckpointData, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| err(path, format!("not a valid checkpoint: {e}")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| err(path, format!("not a valid checkpoint: {e}")))?;
    let mut out = CheckpointData {
        meta: meta.metadata().clone().unwrap_or_default(),
        ..Default::default()
    };
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        match view.dtype() {
            Dtype::F32 => {
                let v = data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                out.f32s.insert(name, (shape, v));
            }
            Dtype::U32 => {
                let v = data
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                out.u32s.insert(name, (shape, v));
            }
            other => {
                return Err(err(
                    path,
                    format!("tensor {name}: unexpected dtype {other:?}"),
                ))
            }
        }
    }
    Ok(out)
}

/// The newest complete checkpoint in `dir` (temporary files are ignored).
pub fn latest(dir: &Path) -> Option<(u64, PathBuf)> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name
                .strip_prefix("step-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((step, e.path()))
        })
        .max_by_key(|(s, _)| *s)
}
