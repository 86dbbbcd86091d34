//! `meft selftest`: the compute device's path against the CPU reference, on
//! small shapes of the embedded tiny model with an f32 base. Each check is
//! one number against one limit:
//!
//! - the frozen base's logits on the device against the CPU's;
//! - MEFT offloaded to the device (host store, the counted Link, the fused
//!   kernel on the CPU, composed candle ops elsewhere) against the dense
//!   reference ([`crate::adapter::reference`]) on the CPU holding the same
//!   numbers: the loss of a whole forward pass, the key and value row
//!   gradients where they land (the host accumulators) and the router's;
//! - LoRA and the Parallel Adapter with the same weights on the device and
//!   on the CPU: the loss and every adapter gradient.
//!
//! On the CPU the device side is a second CPU copy, so the base, LoRA and
//! the Parallel Adapter agree exactly, while MEFT against the dense
//! reference is a real check.
//!
//! The error of a check is max |a − b| / max |b| over every value it
//! compares (b the reference): the largest difference in units of the
//! largest reference value, so a gradient that is zero in most places does
//! not divide by zero.

use crate::adapter::meft::MeftShape;
use crate::adapter::reference::{DenseMeft, DenseMeftLayer};
use crate::config::{Experiment, MethodKind, Routing};
use crate::data::batch::{Batch, Encoded};
use crate::model::{load_model, Hooks, Input, Model, ModelRef, NoHooks};
use crate::train::method::Method;
use crate::train::objective::masked_loss;
use anyhow::{Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use serde::Serialize;

/// The largest error a check allows: f32 sums in another order, well
/// below anything a wrong index or a missing term would give.
pub const LIMIT: f64 = 1e-4;

/// One comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub name: String,
    /// max |a − b| / max |b|; NaN when a value is not finite or the
    /// reference is all zero (a comparison that could not fail).
    pub max_rel_err: f64,
    pub limit: f64,
    pub ok: bool,
    /// Why the error is NaN, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Check {
    fn new(name: &str, device: &[f32], reference: &[f32]) -> Self {
        Self::within(name, device, reference, LIMIT)
    }

    fn within(name: &str, device: &[f32], reference: &[f32], limit: f64) -> Self {
        let (max_rel_err, note) = max_rel_err(device, reference);
        Self {
            name: name.to_string(),
            max_rel_err,
            limit,
            ok: max_rel_err <= limit,
            note,
        }
    }

    /// `name: max rel err X (limit 1e-4) ok|FAIL`.
    pub fn line(&self) -> String {
        let verdict = if self.ok { "ok" } else { "FAIL" };
        let note = self
            .note
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        format!(
            "{}: max rel err {:.1e} (limit {:e}) {verdict}{note}",
            self.name, self.max_rel_err, self.limit
        )
    }
}

/// Every check on one device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub device: String,
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.checks.iter().filter(|c| !c.ok).count()
    }
}

/// Some checks failed: the report says which.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("selftest: {failed} of {total} checks failed on {device}")]
pub struct Failed {
    pub failed: usize,
    pub total: usize,
    pub device: String,
}

/// max |a − b| / max |b|, or NaN and why.
pub fn max_rel_err(a: &[f32], b: &[f32]) -> (f64, Option<String>) {
    if a.len() != b.len() {
        let why = format!("{} values against {} in the reference", a.len(), b.len());
        return (f64::NAN, Some(why));
    }
    if !a.iter().chain(b).all(|x| x.is_finite()) {
        return (f64::NAN, Some("a value is not finite".into()));
    }
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
        .fold(0.0, f64::max);
    let scale = b.iter().map(|y| f64::from(*y).abs()).fold(0.0, f64::max);
    if scale == 0.0 {
        return (f64::NAN, Some("the reference is all zero".into()));
    }
    (diff / scale, None)
}

/// The model every check runs on.
const MODEL: ModelRef = ModelRef::Tiny;

/// Run every check on `device`, handing each to `progress` as it is made.
pub fn run(device: &Device, progress: &mut dyn FnMut(&Check)) -> Result<Report> {
    let on_device = load_model(&MODEL, device)
        .with_context(|| format!("loading {MODEL} on {}", device_name(device)))?;
    let on_cpu = load_model(&MODEL, &Device::Cpu)?;
    let mut pair = Pair {
        batch: batch(&on_cpu.tokenizer)?,
        device: on_device.model,
        cpu: on_cpu.model,
    };
    let mut checks = Vec::new();
    for case in [base_logits, meft, meft_composed, meft_half, lora, parallel] {
        for c in case(&mut pair)? {
            progress(&c);
            checks.push(c);
        }
    }
    Ok(Report {
        device: device_name(device),
        ok: checks.iter().all(|c| c.ok),
        checks,
    })
}

/// `cpu` or `cuda:N`, as the command line names it.
fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        other => format!("{other:?}"),
    }
}

/// The same model on the device and on the CPU, and the batch both see.
struct Pair {
    device: Model,
    cpu: Model,
    batch: Batch,
}

/// Two questions of different lengths, left-padded, so the masks matter.
fn batch(tok: &crate::model::Tokenizer) -> Result<Batch> {
    let rows = [
        "Q: what town is Gifil Kutax from\nA: Gefuvale",
        "Q: who wrote it\nA: Sora",
    ]
    .iter()
    .map(|text| {
        let ids: Vec<u32> = tok.bos_id.into_iter().chain(tok.encode(text)?).collect();
        let loss_mask = vec![1; ids.len()];
        Ok(Encoded { ids, loss_mask })
    })
    .collect::<Result<Vec<_>>>()?;
    Batch::left_padded(&rows, tok.pad_id)
}

fn logits(model: &Model, batch: &Batch, hooks: &mut dyn Hooks) -> Result<Tensor> {
    let input = Input::from(batch);
    Ok(model.forward(&input, None, hooks, false)?)
}

/// The run's objective on `batch` and its gradients.
fn loss(model: &Model, batch: &Batch, hooks: &mut dyn Hooks) -> Result<(Vec<f32>, GradStore)> {
    let (loss, _) = masked_loss(&logits(model, batch, hooks)?, batch)?;
    let grads = loss.backward()?;
    Ok((host(&loss)?, grads))
}

/// A tensor's values on the host, in f32.
fn host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// The gradients of `vars` one after another (zeros where a variable got none).
fn grads_of(g: &GradStore, vars: &[&Var]) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for v in vars {
        match g.get(v.as_tensor()) {
            Some(t) => out.extend(host(t)?),
            None => out.extend(std::iter::repeat_n(0.0, v.elem_count())),
        }
    }
    Ok(out)
}

fn base_logits(p: &mut Pair) -> Result<Vec<Check>> {
    let a = host(&logits(&p.device, &p.batch, &mut NoHooks)?)?;
    let b = host(&logits(&p.cpu, &p.batch, &mut NoHooks)?)?;
    Ok(vec![Check::new("base logits", &a, &b)])
}

/// Seeded values for a variable, the same on every device.
fn seeded(var: &Var, seed: u64, std: f32) -> Result<Tensor> {
    let n = var.elem_count();
    let v = crate::rng::normal_vec(&mut crate::rng::seeded(seed), n, std);
    Ok(Tensor::from_vec(v, var.shape(), var.device())?)
}

/// A small MEFT adapter in every layer; `kind` and the sizes of the others.
fn experiment(kind: MethodKind) -> Experiment {
    let mut exp = Experiment::default();
    exp.method.kind = kind;
    let m = &mut exp.method.meft;
    (m.neurons, m.top_k, m.experts, m.probe) = (256, 8, 16, 4);
    m.routing = Routing::KeyExperts;
    exp.method.parallel.size = 64;
    exp.method.lora.rank = 4;
    exp.method.lora.dropout = 0.1;
    exp
}

/// The largest error the MEFT checks allow with the rows and the adapter's
/// compute in bf16 (8 mantissa bits: values round at 2^-9 ≈ 2e-3, and the
/// row gradients sum many such terms).
pub const HALF_LIMIT: f64 = 1e-2;

/// MEFT on the device's own kernel (the fused one on the CPU, composed
/// elsewhere), rows in f32.
fn meft(p: &mut Pair) -> Result<Vec<Check>> {
    meft_on(p, "meft", crate::config::MeftKernel::Auto, None, LIMIT)
}

/// The composed kernel (the GPU path) on any device, rows in f32.
fn meft_composed(p: &mut Pair) -> Result<Vec<Check>> {
    let composed = crate::config::MeftKernel::Composed;
    meft_on(p, "meft composed", composed, None, LIMIT)
}

/// The composed kernel with the rows and the adapter's compute in bf16.
fn meft_half(p: &mut Pair) -> Result<Vec<Check>> {
    let composed = crate::config::MeftKernel::Composed;
    let bf16 = Some(crate::config::BaseDtype::Bf16);
    meft_on(p, "meft composed bf16 rows", composed, bf16, HALF_LIMIT)
}

fn meft_on(
    p: &mut Pair,
    label: &str,
    kernel: crate::config::MeftKernel,
    row_dtype: Option<crate::config::BaseDtype>,
    limit: f64,
) -> Result<Vec<Check>> {
    let mut exp = experiment(MethodKind::Meft);
    exp.model.device = device_name(&p.device.device);
    exp.method.meft.kernel = kernel;
    exp.method.meft.row_dtype = row_dtype;
    let (mut method, _) = Method::build(&exp, &mut p.device)?;
    let Some(ad) = method.meft_mut() else {
        anyhow::bail!("selftest: the MEFT experiment built another method");
    };
    let shape: MeftShape = ad.shape.clone();
    let (m, d) = (shape.neurons, shape.d);
    let mut layers = Vec::new();
    for (slot, l) in ad.layers.iter_mut().enumerate() {
        // Values start at zero; random ones make the adapter change the loss
        // and give the keys and the router a gradient.
        let values = crate::rng::normal_vec(&mut crate::rng::seeded(40 + slot as u64), m * d, 0.05);
        l.store.values = values.clone().into();
        let router = match &l.router {
            Some(r) => Some(Var::from_tensor(&r.as_tensor().to_device(&Device::Cpu)?)?),
            None => None,
        };
        layers.push(DenseMeftLayer {
            layer: l.layer,
            keys: Var::from_vec(l.store.keys.to_vec(), (m, d), &Device::Cpu)?,
            values: Var::from_vec(values, (m, d), &Device::Cpu)?,
            router,
        });
    }
    let mut dense = DenseMeft { shape, layers };
    let (loss_a, g_a) = loss(&p.device, &p.batch, ad)?;
    ad.collect_grads()?;
    let (loss_b, g_b) = loss(&p.cpu, &p.batch, &mut dense)?;

    // The host accumulators scattered into M × d, layer after layer.
    let (mut keys_a, mut values_a) = (Vec::new(), Vec::new());
    for l in &ad.layers {
        let (mut k, mut v) = (vec![0f32; m * d], vec![0f32; m * d]);
        for r in 0..m {
            if let Some((gk, gv)) = l.store.accumulated(r) {
                k[r * d..(r + 1) * d].copy_from_slice(gk);
                v[r * d..(r + 1) * d].copy_from_slice(gv);
            }
        }
        keys_a.extend(k);
        values_a.extend(v);
    }
    let keys: Vec<&Var> = dense.layers.iter().map(|l| &l.keys).collect();
    let values: Vec<&Var> = dense.layers.iter().map(|l| &l.values).collect();
    let routers_a: Vec<&Var> = ad.layers.iter().filter_map(|l| l.router.as_ref()).collect();
    let routers_b: Vec<&Var> = dense
        .layers
        .iter()
        .filter_map(|l| l.router.as_ref())
        .collect();
    let check =
        |what: &str, a: &[f32], b: &[f32]| Check::within(&format!("{label} {what}"), a, b, limit);
    Ok(vec![
        check("loss", &loss_a, &loss_b),
        check("key grads", &keys_a, &grads_of(&g_b, &keys)?),
        check("value grads", &values_a, &grads_of(&g_b, &values)?),
        check(
            "router grads",
            &grads_of(&g_a, &routers_a)?,
            &grads_of(&g_b, &routers_b)?,
        ),
    ])
}

/// LoRA or the Parallel Adapter built on both sides from one experiment,
/// its zero-initialised variables (LoRA's B, the adapter's values) set to
/// the same seeded values; the losses, then each named group of gradients.
fn dense_twins(
    p: &mut Pair,
    kind: MethodKind,
    prefix: &str,
    groups: &[(&str, &str)],
) -> Result<Vec<Check>> {
    let exp = experiment(kind);
    let (mut on_device, vars_a) = Method::build(&exp, &mut p.device)?;
    let (mut on_cpu, vars_b) = Method::build(&exp, &mut p.cpu)?;
    for (i, ((name, a), (_, b))) in vars_a.iter().zip(&vars_b).enumerate() {
        if name.ends_with(".b") || name.ends_with(".values") {
            a.set(&seeded(a, 70 + i as u64, 0.05)?)?;
            b.set(&seeded(b, 70 + i as u64, 0.05)?)?;
        }
    }
    // The same dropout masks on both sides.
    on_device.begin_micro_batch(3);
    on_cpu.begin_micro_batch(3);
    let (loss_a, g_a) = loss(&p.device, &p.batch, &mut on_device)?;
    let (loss_b, g_b) = loss(&p.cpu, &p.batch, &mut on_cpu)?;
    let mut checks = vec![Check::new(&format!("{prefix} loss"), &loss_a, &loss_b)];
    for (suffix, label) in groups {
        let pick = |vars: &[(String, Var)]| -> Vec<Var> {
            vars.iter()
                .filter(|(n, _)| n.ends_with(suffix))
                .map(|(_, v)| v.clone())
                .collect()
        };
        let (a, b) = (pick(&vars_a), pick(&vars_b));
        let a = grads_of(&g_a, &a.iter().collect::<Vec<_>>())?;
        let b = grads_of(&g_b, &b.iter().collect::<Vec<_>>())?;
        checks.push(Check::new(&format!("{prefix} {label} grads"), &a, &b));
    }
    Ok(checks)
}

fn lora(p: &mut Pair) -> Result<Vec<Check>> {
    dense_twins(p, MethodKind::Lora, "lora", &[(".a", "A"), (".b", "B")])
}

fn parallel(p: &mut Pair) -> Result<Vec<Check>> {
    dense_twins(
        p,
        MethodKind::Parallel,
        "parallel",
        &[(".keys", "key"), (".values", "value")],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_is_the_largest_difference_over_the_largest_reference_value() {
        // |0.5 − 0.4| = 0.1 is the largest difference; 2 the largest |b|.
        let (e, note) = max_rel_err(&[1.0, 0.5, -2.0], &[1.0, 0.4, -2.0]);
        assert!((e - 0.05).abs() < 1e-7, "{e}");
        assert_eq!(note, None);
        assert_eq!(
            max_rel_err(&[0.0; 3], &[0.0; 3]).1.as_deref(),
            Some("the reference is all zero")
        );
        assert!(max_rel_err(&[f32::NAN], &[1.0]).0.is_nan());
        assert!(max_rel_err(&[1.0, 2.0], &[1.0]).0.is_nan());
    }

    #[test]
    fn a_nan_error_fails_and_says_why() {
        let c = Check::new("x", &[0.0], &[0.0]);
        assert!(!c.ok);
        assert_eq!(
            c.line(),
            "x: max rel err NaN (limit 1e-4) FAIL (the reference is all zero)"
        );
        assert_eq!(
            Check::new("y", &[1.00001], &[1.0]).line(),
            "y: max rel err 1.0e-5 (limit 1e-4) ok"
        );
    }
}
