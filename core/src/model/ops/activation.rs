//! SiLU, and the gated products of the FFN (SwiGLU's silu(gate)·up, GeGLU's
//! gelu_tanh(gate)·up), each one op with a one-sweep backward.

use super::{contiguous, host_vec, run_kernel, FloatKernel};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use num_traits::Float;
use rayon::prelude::*;

/// The activation on the gate of a gated FFN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// SwiGLU (LLaMA, Mistral, Qwen).
    #[default]
    Silu,
    /// GeGLU with GELU's tanh approximation (Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
}

impl Activation {
    /// The activation a Hugging Face `hidden_act` names.
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "silu" | "swish" => Some(Self::Silu),
            "gelu_pytorch_tanh" | "gelu_tanh" | "gelu_new" => Some(Self::GeluTanh),
            _ => None,
        }
    }

    fn value<T: Float>(self, g: T) -> T {
        match self {
            Self::Silu => g * sigmoid(g),
            Self::GeluTanh => {
                let half = T::from(0.5).unwrap_or_else(T::one);
                half * g * (T::one() + gelu_inner(g).tanh())
            }
        }
    }

    fn derivative<T: Float>(self, g: T) -> T {
        match self {
            Self::Silu => {
                let s = sigmoid(g);
                s * (T::one() + g * (T::one() - s))
            }
            Self::GeluTanh => {
                let half = T::from(0.5).unwrap_or_else(T::one);
                let t = gelu_inner(g).tanh();
                let c = T::from(GELU_C).unwrap_or_else(T::one);
                let a3 = T::from(3.0 * GELU_A).unwrap_or_else(T::zero);
                half * (T::one() + t) + half * g * (T::one() - t * t) * c * (T::one() + a3 * g * g)
            }
        }
    }
}

/// √(2/π) and the cubic coefficient of GELU's tanh approximation.
const GELU_C: f64 = 0.797_884_560_802_865_4;
const GELU_A: f64 = 0.044_715;

fn gelu_inner<T: Float>(g: T) -> T {
    let c = T::from(GELU_C).unwrap_or_else(T::one);
    let a = T::from(GELU_A).unwrap_or_else(T::zero);
    c * (g + a * g * g * g)
}

/// `silu(gate) · up`, the SwiGLU product, as one op: the backward pass
/// keeps only its two inputs and its output, and computes both gradients in
/// one sweep instead of the dozen temporaries candle's composed SiLU
/// backward makes. CPU only; other devices compose it.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gated_mul(gate, up, Activation::Silu)
}

/// `act(gate) · up` as one op (see [`silu_mul`]).
pub fn gated_mul(gate: &Tensor, up: &Tensor, act: Activation) -> Result<Tensor> {
    if gate.device().is_cpu() && gate.shape() == up.shape() {
        gate.contiguous()?
            .apply_op2(&up.contiguous()?, GatedMul(act))
    } else {
        match act {
            Activation::Silu => gate.silu()? * up,
            Activation::GeluTanh => gate.gelu()? * up,
        }
    }
}

/// `silu(x)` as one op with a one-sweep backward, for the dense adapter.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(Silu)
    } else {
        x.silu()
    }
}

fn sigmoid<T: Float>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

struct GatedMul(Activation);

impl GatedMul {
    fn forward<T: Float + Send + Sync>(&self, g: &[T], u: &[T]) -> Vec<T> {
        let act = self.0;
        g.par_iter()
            .zip(u)
            .map(|(&g, &u)| act.value(g) * u)
            .collect()
    }

    /// d gate = grad·up·act'(g), d up = grad·act(g).
    fn backward<T: Float + Send + Sync>(&self, g: &[T], u: &[T], grad: &[T]) -> (Vec<T>, Vec<T>) {
        let act = self.0;
        g.par_iter()
            .zip(u)
            .zip(grad)
            .map(|((&g, &u), &d)| (d * u * act.derivative(g), d * act.value(g)))
            .unzip()
    }
}

impl CustomOp2 for GatedMul {
    fn name(&self) -> &'static str {
        match self.0 {
            Activation::Silu => "silu-mul",
            Activation::GeluTanh => "gelu-tanh-mul",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(g), CpuStorage::F32(u)) => CpuStorage::F32(self.forward(
                contiguous(g, l1, "silu_mul")?,
                contiguous(u, l2, "silu_mul")?,
            )),
            (CpuStorage::F64(g), CpuStorage::F64(u)) => CpuStorage::F64(self.forward(
                contiguous(g, l1, "silu_mul")?,
                contiguous(u, l2, "silu_mul")?,
            )),
            (g, u) => {
                let wide = |s: &CpuStorage, l: &Layout| -> Result<Vec<f32>> {
                    Ok(match s {
                        CpuStorage::BF16(v) => contiguous(v, l, "silu_mul")?
                            .iter()
                            .map(|x| x.to_f32())
                            .collect(),
                        CpuStorage::F16(v) => contiguous(v, l, "silu_mul")?
                            .iter()
                            .map(|x| x.to_f32())
                            .collect(),
                        _ => candle_core::bail!("silu_mul: both inputs f32, f64, bf16 or f16"),
                    })
                };
                let y = self.forward(&wide(g, l1)?, &wide(u, l2)?);
                match g {
                    CpuStorage::BF16(_) => {
                        CpuStorage::BF16(y.into_iter().map(half::bf16::from_f32).collect())
                    }
                    _ => CpuStorage::F16(y.into_iter().map(half::f16::from_f32).collect()),
                }
            }
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (shape, dev, dtype) = (g.shape(), g.device(), g.dtype());
        let (dg, du) = match dtype {
            DType::F64 => {
                let (dg, du) = self.backward(
                    &host_vec::<f64>(g)?,
                    &host_vec::<f64>(u)?,
                    &host_vec::<f64>(grad)?,
                );
                (
                    Tensor::from_vec(dg, shape, dev)?,
                    Tensor::from_vec(du, shape, dev)?,
                )
            }
            _ => {
                let (dg, du) = self.backward(
                    &host_vec::<f32>(g)?,
                    &host_vec::<f32>(u)?,
                    &host_vec::<f32>(grad)?,
                );
                (
                    Tensor::from_vec(dg, shape, dev)?.to_dtype(dtype)?,
                    Tensor::from_vec(du, shape, dev)?.to_dtype(dtype)?,
                )
            }
        };
        Ok((Some(dg), Some(du)))
    }
}

struct Silu;

impl FloatKernel for Silu {
    fn apply<T: Float + Send + Sync>(&self, x: &[T], _dims: &[usize]) -> Vec<T> {
        x.par_iter().map(|&v| Activation::Silu.value(v)).collect()
    }
}

impl CustomOp1 for Silu {
    fn name(&self) -> &'static str {
        "silu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        run_kernel(self, s, l, "silu")
    }

    /// dx = grad·σ(x)(1 + x(1 − σ(x))).
    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        fn d<T: Float + Send + Sync>(x: &[T], g: &[T]) -> Vec<T> {
            x.par_iter()
                .zip(g)
                .map(|(&x, &g)| g * Activation::Silu.derivative(x))
                .collect()
        }
        let (shape, dev, dtype) = (x.shape(), x.device(), x.dtype());
        Ok(Some(match dtype {
            DType::F64 => {
                Tensor::from_vec(d(&host_vec::<f64>(x)?, &host_vec::<f64>(grad)?), shape, dev)?
            }
            _ => Tensor::from_vec(d(&host_vec::<f32>(x)?, &host_vec::<f32>(grad)?), shape, dev)?
                .to_dtype(dtype)?,
        }))
    }
}
