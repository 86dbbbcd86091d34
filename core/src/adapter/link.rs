//! The `Link`: the one place where bytes cross between host memory and the
//! compute device. Every copy goes through it and is counted by direction,
//! kind and layer. On a CPU-only machine the copies are real copies into
//! separate tensors, so the counts are what a GPU run would move.

pub use crate::event::Kind;
use crate::event::Traffic;
use candle_core::{Device, Result, Shape, Tensor, WithDType};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Link {
    per_layer: Mutex<Vec<Traffic>>,
}

impl Link {
    pub fn new() -> Self {
        Self::default()
    }

    fn record(&self, layer: usize, kind: Kind, bytes: u64) {
        let mut g = match self.per_layer.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if g.len() <= layer {
            g.resize(layer + 1, Traffic::default());
        }
        g[layer][kind] += bytes;
    }

    /// Count `bytes` that crossed without a buffer of their own here (the
    /// fused CPU kernel's row gradients, in the rows' dtype on the device).
    pub fn count(&self, layer: usize, kind: Kind, bytes: u64) {
        self.record(layer, kind, bytes);
    }

    /// Copy a device tensor into a host vector of `T` (4-byte f32 or u32).
    pub fn to_host<T: WithDType>(&self, layer: usize, kind: Kind, t: &Tensor) -> Result<Vec<T>> {
        let v: Vec<T> = t.flatten_all()?.to_dtype(T::DTYPE)?.to_vec1()?;
        self.record(layer, kind, (std::mem::size_of::<T>() * v.len()) as u64);
        Ok(v)
    }

    /// Copy a host buffer into a new device tensor.
    pub fn to_device<T: WithDType, S: Into<Shape>>(
        &self,
        layer: usize,
        kind: Kind,
        data: Vec<T>,
        shape: S,
        device: &Device,
    ) -> Result<Tensor> {
        self.record(layer, kind, (std::mem::size_of::<T>() * data.len()) as u64);
        Tensor::from_vec(data, shape, device)
    }

    /// Bytes counted since the last call, per layer; the counters restart.
    pub fn take(&self) -> Vec<Traffic> {
        let mut g = match self.per_layer.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        std::mem::take(&mut *g)
    }
}
