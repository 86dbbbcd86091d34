//! Checkpoints: every trainable tensor, optimizer state and the loop's
//! position in one safetensors file. The file is streamed: each buffer is
//! written from where it lives (a host store of gigabytes is never copied)
//! and read back straight into its destination, in bounded chunks. Writes go
//! to a temporary name and are renamed, so a crash mid-write leaves the
//! previous checkpoint loadable.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
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

/// An element type a checkpoint stores, little-endian.
pub trait Element: Copy + Default + Send + Sync + 'static {
    /// The safetensors dtype name.
    const DTYPE: &'static str;
    const SIZE: usize;
    fn put(self, out: &mut [u8]);
    fn get(bytes: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty, $name:literal) => {
        impl Element for $t {
            const DTYPE: &'static str = $name;
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                let mut b = [0u8; std::mem::size_of::<$t>()];
                b.copy_from_slice(bytes);
                <$t>::from_le_bytes(b)
            }
        }
    };
}
element!(f32, "F32");
element!(u32, "U32");
element!(u8, "U8");

impl Element for half::bf16 {
    const DTYPE: &'static str = "BF16";
    const SIZE: usize = 2;
    fn put(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
    fn get(bytes: &[u8]) -> Self {
        half::bf16::from_le_bytes([bytes[0], bytes[1]])
    }
}

/// A borrowed buffer to write, by element type.
#[derive(Clone, Copy)]
pub enum Buffer<'a> {
    F32(&'a [f32]),
    U32(&'a [u32]),
    U8(&'a [u8]),
    Bf16(&'a [half::bf16]),
}

impl Buffer<'_> {
    fn dtype(&self) -> &'static str {
        match self {
            Buffer::F32(_) => f32::DTYPE,
            Buffer::U32(_) => u32::DTYPE,
            Buffer::U8(_) => u8::DTYPE,
            Buffer::Bf16(_) => half::bf16::DTYPE,
        }
    }

    fn elem_size(&self) -> u64 {
        match self {
            Buffer::F32(_) | Buffer::U32(_) => 4,
            Buffer::U8(_) => 1,
            Buffer::Bf16(_) => 2,
        }
    }

    fn byte_len(&self) -> u64 {
        let len = match self {
            Buffer::F32(v) => v.len(),
            Buffer::U32(v) => v.len(),
            Buffer::U8(v) => v.len(),
            Buffer::Bf16(v) => v.len(),
        };
        len as u64 * self.elem_size()
    }

    fn write_to(&self, w: &mut impl Write, chunk: &mut Vec<u8>) -> std::io::Result<()> {
        fn put_all<T: Element>(
            v: &[T],
            w: &mut impl Write,
            chunk: &mut Vec<u8>,
        ) -> std::io::Result<()> {
            for part in v.chunks(CHUNK / T::SIZE) {
                chunk.resize(part.len() * T::SIZE, 0);
                for (x, out) in part.iter().zip(chunk.chunks_exact_mut(T::SIZE)) {
                    x.put(out);
                }
                w.write_all(chunk)?;
            }
            Ok(())
        }
        match self {
            Buffer::F32(v) => put_all(v, w, chunk),
            Buffer::U32(v) => put_all(v, w, chunk),
            Buffer::U8(v) => w.write_all(v),
            Buffer::Bf16(v) => put_all(v, w, chunk),
        }
    }
}

/// Bytes converted at a time when streaming a buffer in or out.
const CHUNK: usize = 1 << 20;

/// What one checkpoint holds: named buffers (borrowed, not copied) and
/// string metadata.
#[derive(Default)]
pub struct CheckpointWriter<'a> {
    /// Each tensor's data, as one or more pieces written back to back.
    tensors: Vec<(String, Vec<usize>, Vec<Buffer<'a>>)>,
    owned_f32: Vec<(String, Vec<usize>, Vec<f32>)>,
    pub meta: BTreeMap<String, String>,
}

impl<'a> CheckpointWriter<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, name: impl Into<String>, shape: &[usize], data: Buffer<'a>) {
        self.tensors.push((name.into(), shape.to_vec(), vec![data]));
    }

    /// A tensor whose data lies in several pieces of one element type,
    /// written back to back in order.
    pub fn add_pieces(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        pieces: Vec<Buffer<'a>>,
    ) {
        self.tensors.push((name.into(), shape.to_vec(), pieces));
    }

    /// A small device tensor, copied to the host as f32.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        t: &candle_core::Tensor,
    ) -> candle_core::Result<()> {
        let v: Vec<f32> = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        self.owned_f32.push((name.into(), t.dims().to_vec(), v));
        Ok(())
    }

    /// Write `dir/step-NNNNNNN.safetensors` via a temporary name.
    pub fn save(&self, dir: &Path, step: u64) -> Result<PathBuf, CheckpointError> {
        let path = dir.join(file_name(step));
        let entries: Vec<(&str, &[usize], Vec<Buffer>)> = self
            .owned_f32
            .iter()
            .map(|(n, s, v)| (n.as_str(), s.as_slice(), vec![Buffer::F32(v)]))
            .chain(
                self.tensors
                    .iter()
                    .map(|(n, s, b)| (n.as_str(), s.as_slice(), b.clone())),
            )
            .collect();
        let mut header = serde_json::Map::new();
        if !self.meta.is_empty() {
            header.insert("__metadata__".into(), serde_json::json!(self.meta));
        }
        let mut offset = 0u64;
        for (name, shape, pieces) in &entries {
            let elems: usize = shape.iter().product();
            let bytes: u64 = pieces.iter().map(Buffer::byte_len).sum();
            let Some(buf) = pieces.first() else {
                return Err(err(&path, format!("tensor {name} has no data")));
            };
            if pieces.iter().any(|p| p.dtype() != buf.dtype()) {
                return Err(err(
                    &path,
                    format!("tensor {name}: pieces of different dtypes"),
                ));
            }
            if elems as u64 * buf.elem_size() != bytes {
                return Err(err(
                    &path,
                    format!("tensor {name}: shape {shape:?} does not match its {bytes} bytes"),
                ));
            }
            if header.contains_key(*name) {
                return Err(err(&path, format!("tensor {name} is listed twice")));
            }
            header.insert(
                name.to_string(),
                serde_json::json!({
                    "dtype": buf.dtype(),
                    "shape": shape,
                    "data_offsets": [offset, offset + bytes],
                }),
            );
            offset += bytes;
        }
        let mut text = serde_json::to_vec(&header).map_err(|e| err(&path, e))?;
        // safetensors pads the header with spaces to a multiple of 8 bytes.
        while text.len() % 8 != 0 {
            text.push(b' ');
        }
        crate::fsx::write_atomic_with(&path, |f| {
            let mut w = BufWriter::with_capacity(CHUNK, f);
            w.write_all(&(text.len() as u64).to_le_bytes())?;
            w.write_all(&text)?;
            let mut chunk = Vec::with_capacity(CHUNK);
            for buf in entries.iter().flat_map(|(_, _, pieces)| pieces) {
                buf.write_to(&mut w, &mut chunk)?;
            }
            w.flush()
        })
        .map_err(|e| err(&path, e))?;
        Ok(path)
    }
}

/// One tensor's entry in a checkpoint's header.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Byte offsets from [`CheckpointReader::data_start`].
    pub start: u64,
    pub end: u64,
}

/// A checkpoint opened for reading: the header is parsed and checked
/// against the file's size; tensors are read on demand.
pub struct CheckpointReader {
    path: PathBuf,
    file: File,
    data_start: u64,
    tensors: BTreeMap<String, TensorInfo>,
    pub meta: HashMap<String, String>,
}

impl CheckpointReader {
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let bad = |msg: String| err(path, format!("not a valid checkpoint: {msg}"));
        let mut file = File::open(path).map_err(|e| err(path, e))?;
        let size = file.metadata().map_err(|e| err(path, e))?.len();
        let mut n = [0u8; 8];
        file.read_exact(&mut n)
            .map_err(|_| bad(format!("{size} bytes is too short for a header")))?;
        let n = u64::from_le_bytes(n);
        if n > 100 << 20 || 8 + n > size {
            return Err(bad(format!(
                "header of {n} bytes does not fit in {size} bytes"
            )));
        }
        let mut text = vec![0u8; n as usize];
        file.read_exact(&mut text).map_err(|e| bad(e.to_string()))?;
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&text).map_err(|e| bad(format!("header: {e}")))?;
        let data_start = 8 + n;
        let mut meta = HashMap::new();
        let mut tensors = BTreeMap::new();
        let mut data_len = 0u64;
        for (name, v) in header {
            if name == "__metadata__" {
                if let Some(m) = v.as_object() {
                    for (k, v) in m {
                        meta.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
                    }
                }
                continue;
            }
            let dtype = v["dtype"].as_str().unwrap_or_default().to_string();
            let shape: Option<Vec<usize>> = v["shape"]
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect());
            let offsets: Option<Vec<u64>> = v["data_offsets"]
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_u64()).collect());
            let (Some(shape), Some(offsets)) = (shape, offsets) else {
                return Err(bad(format!("tensor {name}: no shape or data_offsets")));
            };
            let [start, end] = offsets[..] else {
                return Err(bad(format!(
                    "tensor {name}: data_offsets needs two numbers"
                )));
            };
            let elem = match dtype.as_str() {
                "F32" | "U32" => 4,
                "BF16" | "F16" => 2,
                "U8" => 1,
                other => return Err(bad(format!("tensor {name}: unexpected dtype {other}"))),
            };
            let elems = shape
                .iter()
                .try_fold(1u64, |a, &x| a.checked_mul(x as u64))
                .and_then(|n| n.checked_mul(elem));
            if end < start || Some(end - start) != elems {
                return Err(bad(format!(
                    "tensor {name}: shape {shape:?} {dtype} does not match offsets {start}..{end}"
                )));
            }
            data_len = data_len.max(end);
            tensors.insert(
                name,
                TensorInfo {
                    dtype,
                    shape,
                    start,
                    end,
                },
            );
        }
        if data_start + data_len != size {
            return Err(bad(format!(
                "the header describes {} bytes of data, the file has {} (truncated?)",
                data_len,
                size - data_start
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            data_start,
            tensors,
            meta,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the tensors' bytes start in the file (a tensor's `start` and
    /// `end` count from here).
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn info(&self, name: &str) -> Result<&TensorInfo, CheckpointError> {
        self.tensors
            .get(name)
            .ok_or_else(|| err(&self.path, format!("no tensor {name}")))
    }

    /// A metadata value parsed as a number.
    pub fn meta_u64(&self, key: &str) -> Result<u64, CheckpointError> {
        self.meta
            .get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| err(&self.path, format!("checkpoint metadata has no {key}")))
    }

    /// Check `name`'s dtype and shape; `expected` may leave dimensions open
    /// (None).
    pub fn check<T: Element>(
        &self,
        name: &str,
        expected: &[Option<usize>],
    ) -> Result<&TensorInfo, CheckpointError> {
        let info = self.info(name)?;
        let fits = info.dtype == T::DTYPE
            && info.shape.len() == expected.len()
            && info
                .shape
                .iter()
                .zip(expected)
                .all(|(&have, want)| want.is_none_or(|w| w == have));
        if !fits {
            let want: Vec<String> = expected
                .iter()
                .map(|e| e.map_or("any".to_string(), |x| x.to_string()))
                .collect();
            return Err(err(
                &self.path,
                format!(
                    "tensor {name}: the run expects [{}] {}, the file has {:?} {}",
                    want.join(", "),
                    T::DTYPE,
                    info.shape,
                    info.dtype
                ),
            ));
        }
        Ok(info)
    }

    /// Read `name` (dtype and shape checked) into `dst`, whose length must
    /// be the tensor's element count.
    pub fn read_into<T: Element>(
        &mut self,
        name: &str,
        shape: &[usize],
        dst: &mut [T],
    ) -> Result<(), CheckpointError> {
        self.read_into_pieces(name, shape, &mut [dst])
    }

    /// Read `name` (dtype and shape checked) into `pieces` in order; their
    /// lengths must add up to the tensor's element count.
    pub fn read_into_pieces<T: Element>(
        &mut self,
        name: &str,
        shape: &[usize],
        pieces: &mut [&mut [T]],
    ) -> Result<(), CheckpointError> {
        let want: Vec<Option<usize>> = shape.iter().map(|&x| Some(x)).collect();
        let info = self.check::<T>(name, &want)?.clone();
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        if len as u64 * T::SIZE as u64 != info.end - info.start {
            return Err(err(
                &self.path,
                format!("tensor {name}: {len} values do not fill it"),
            ));
        }
        let path = self.path.clone();
        let io = |e: std::io::Error| err(&path, format!("tensor {name}: {e}"));
        self.file
            .seek(SeekFrom::Start(self.data_start + info.start))
            .map_err(io)?;
        let mut chunk = vec![0u8; CHUNK.min(len * T::SIZE)];
        for dst in pieces.iter_mut() {
            for part in dst.chunks_mut(CHUNK / T::SIZE) {
                let bytes = &mut chunk[..part.len() * T::SIZE];
                self.file.read_exact(bytes).map_err(io)?;
                for (x, b) in part.iter_mut().zip(bytes.chunks_exact(T::SIZE)) {
                    *x = T::get(b);
                }
            }
        }
        Ok(())
    }

    /// Read `name` into a new buffer; `expected` may leave dimensions open.
    /// Returns the shape found and the values.
    pub fn read_vec<T: Element>(
        &mut self,
        name: &str,
        expected: &[Option<usize>],
    ) -> Result<(Vec<usize>, Vec<T>), CheckpointError> {
        let shape = self.check::<T>(name, expected)?.shape.clone();
        let mut v = vec![T::default(); shape.iter().product()];
        self.read_into(name, &shape, &mut v)?;
        Ok((shape, v))
    }

    /// Read an f32 tensor of exactly `shape` onto `device`.
    pub fn tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        device: &candle_core::Device,
    ) -> anyhow::Result<candle_core::Tensor> {
        let want: Vec<Option<usize>> = shape.iter().map(|&x| Some(x)).collect();
        let (shape, v) = self.read_vec::<f32>(name, &want)?;
        Ok(candle_core::Tensor::from_vec(v, shape, device)?)
    }
}

pub fn file_name(step: u64) -> String {
    format!("step-{step:07}.safetensors")
}

/// Every complete checkpoint in `dir`, oldest first.
fn all(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
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
        .collect();
    found.sort();
    found
}

/// Delete all but the newest `keep` checkpoints (0 keeps every one).
pub fn prune(dir: &Path, keep: usize) -> Result<(), CheckpointError> {
    let found = all(dir);
    if keep == 0 || found.len() <= keep {
        return Ok(());
    }
    for (_, path) in &found[..found.len() - keep] {
        std::fs::remove_file(path).map_err(|e| err(path, e))?;
    }
    Ok(())
}

/// Remove temporary files that an interrupted write left in `dir`.
pub fn remove_stray_temporaries(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The steps of every complete checkpoint in `dir`, oldest first.
pub fn steps(dir: &Path) -> Vec<u64> {
    all(dir).into_iter().map(|(s, _)| s).collect()
}

/// The newest complete checkpoint in `dir` (temporary files are ignored).
pub fn latest(dir: &Path) -> Option<(u64, PathBuf)> {
    all(dir).pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_every_dtype_and_reads_it_back_with_the_safetensors_crate() {
        let dir = tempfile::tempdir().unwrap();
        let f: Vec<f32> = (0..3_000_000).map(|i| i as f32 * 0.5).collect();
        let u = [7u32, 9, 11];
        let b = [1u8, 2, 3, 4];
        let h = [half::bf16::from_bits(0x3f80), half::bf16::from_bits(0xc000)];
        let mut w = CheckpointWriter::new();
        // One tensor may be written from several pieces (a paged store).
        w.add_pieces(
            "big",
            &[1000, 3000],
            vec![Buffer::F32(&f[..1_000_000]), Buffer::F32(&f[1_000_000..])],
        );
        w.add("ids", &[3], Buffer::U32(&u));
        w.add("codes", &[2, 2], Buffer::U8(&b));
        w.add("half", &[2], Buffer::Bf16(&h));
        w.meta.insert("step".into(), "5".into());
        let path = w.save(dir.path(), 5).unwrap();
        // The file is a valid safetensors file for the reference reader too.
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(
            st.tensor("ids").unwrap().data(),
            &[7, 0, 0, 0, 9, 0, 0, 0, 11, 0, 0, 0]
        );
        assert_eq!(st.tensor("half").unwrap().dtype(), safetensors::Dtype::BF16);
        let mut r = CheckpointReader::open(&path).unwrap();
        assert_eq!(r.meta_u64("step").unwrap(), 5);
        let mut back = vec![0f32; f.len()];
        let (a, b2) = back.split_at_mut(7);
        r.read_into_pieces("big", &[1000, 3000], &mut [a, b2])
            .unwrap();
        assert_eq!(back, f);
        assert_eq!(r.read_vec::<u32>("ids", &[None]).unwrap().1, u);
        assert_eq!(r.read_vec::<u8>("codes", &[Some(2), None]).unwrap().1, b);
        let half = r.read_vec::<half::bf16>("half", &[Some(2)]).unwrap().1;
        assert_eq!(half, h);
        assert_eq!(half[0].to_f32(), 1.0);
    }

    #[test]
    fn a_wrong_shape_or_dtype_names_the_tensor_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = CheckpointWriter::new();
        let v = [0f32; 6];
        w.add("meft.0.keys", &[2, 3], Buffer::F32(&v));
        let path = w.save(dir.path(), 1).unwrap();
        let mut r = CheckpointReader::open(&path).unwrap();
        let mut dst = [0f32; 8];
        let e = r.read_into("meft.0.keys", &[2, 4], &mut dst).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with(&path.display().to_string()), "{msg}");
        assert!(
            msg.contains("tensor meft.0.keys: the run expects [2, 4] F32, the file has [2, 3] F32"),
            "{msg}"
        );
        let e = r.read_vec::<u32>("meft.0.keys", &[None, None]).unwrap_err();
        assert!(e.to_string().contains("expects [any, any] U32"), "{e}");
        let e = r.read_vec::<f32>("meft.1.keys", &[None]).unwrap_err();
        assert!(e.to_string().ends_with("no tensor meft.1.keys"), "{e}");
    }

    #[test]
    fn a_truncated_file_is_rejected_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = CheckpointWriter::new();
        let v = [1f32; 64];
        w.add("w", &[64], Buffer::F32(&v));
        let path = w.save(dir.path(), 1).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let e = CheckpointReader::open(&path).err().unwrap().to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
