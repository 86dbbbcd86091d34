//! The machine's ceiling (sgemm, memcpy), the host optimizer against it,
//! and the planner's figures for traffic and device memory.

use super::{time, Options, Section};
use crate::adapter::meft::{HostOptimizer, HostStore};
use crate::config::{Experiment, MethodKind, MomentDtype};
use crate::event::Category;
use crate::model::shapes::builtin_shape;
use crate::optim::AdamWConfig;
use crate::telemetry::{plan, PlanInput, PAPER_UNION_FRACTION};
use crate::units::{bytes, ratio};
use candle_core::Tensor;

pub(super) fn random(n: usize, seed: u64) -> Vec<f32> {
    crate::rng::normal_vec(&mut crate::rng::seeded(seed), n, 1.0)
}

/// sgemm GFLOP/s and memcpy GB/s (bytes read and written per second).
pub fn ceiling(opts: &Options) -> anyhow::Result<(Section, f64, f64)> {
    let mut s = Section::new("Ceiling of this machine");
    let n = if opts.quick { 1024 } else { 2048 };
    let a = Tensor::from_vec(random(n * n, 1), (n, n), &opts.device)?;
    let b = Tensor::from_vec(random(n * n, 2), (n, n), &opts.device)?;
    // Reading one value back waits for the device to finish.
    let t = time(1, 5, || {
        Ok(a.matmul(&b)?.get(0)?.get(0)?.to_scalar::<f32>()?)
    })?;
    let gflops = 2.0 * (n as f64).powi(3) / t.median / 1e9;
    s.row(
        format!("sgemm {n}×{n}×{n} (candle, f32)"),
        format!("{gflops:.1} GFLOP/s ±{:.0} %", t.spread_pct()),
        "measured",
    );
    let len = if opts.quick { 64 << 20 } else { 256 << 20 };
    let src = vec![1u8; len];
    let mut dst = vec![0u8; len];
    let t = time(1, 5, || {
        dst.copy_from_slice(&src);
        Ok(())
    })?;
    let gbs = 2.0 * len as f64 / t.median / 1e9;
    s.row(
        format!("memcpy of {}", bytes(len as u64)),
        format!("{gbs:.1} GB/s ±{:.0} %", t.spread_pct()),
        "measured, read + written",
    );
    s.figure("sgemm_gflops", gflops);
    s.figure("memcpy_gbs", gbs);
    Ok((s, gflops, gbs))
}

/// Lazy host AdamW over a step's touched rows against memcpy, and lazy
/// against dense at M 65,536.
pub fn host_optimizer(opts: &Options, memcpy_gbs: f64) -> anyhow::Result<Section> {
    let mut s = Section::new("Host optimizer (one layer, d 576, M 65,536, f32 moments)");
    let (m, d) = (65_536usize, 576usize);
    let touched = if opts.quick { 2048 } else { 8192 };
    let mut store =
        HostStore::with_moments(m, d, random(m * d, 3), random(m * d, 4), MomentDtype::F32);
    // Every row has moments already, as after a few steps of training.
    let all: Vec<u32> = (0..m as u32).collect();
    store.accumulate(&all, vec![1e-3; m * 2 * d])?;
    store.step(HostOptimizer::Dense, 1e-3, 1.0, &AdamWConfig::default());
    let rows: Vec<u32> = (0..touched as u32)
        .map(|i| i * (m / touched) as u32)
        .collect();
    let grads = random(touched * 2 * d, 5);
    let cfg = AdamWConfig::default();
    let mut lazy = Vec::new();
    let mut dense = Vec::new();
    let reps = if opts.quick { 3 } else { 5 };
    for _ in 0..reps {
        store.accumulate(&rows, grads.clone())?;
        let t = time(0, 1, || {
            Ok(store.step(HostOptimizer::Lazy, 1e-3, 1.0, &cfg))
        })?;
        lazy.push(t.median);
        store.accumulate(&rows, grads.clone())?;
        let t = time(0, 1, || {
            Ok(store.step(HostOptimizer::Dense, 1e-3, 1.0, &cfg))
        })?;
        dense.push(t.median);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (lazy, dense) = (med(&mut lazy), med(&mut dense));
    // Per row: read key, value, their gradients and four moment blocks;
    // write key, value and the moments: 14·d f32.
    let per_row = 14.0 * d as f64 * 4.0;
    let lazy_gbs = touched as f64 * per_row / lazy / 1e9;
    s.row(
        format!("lazy AdamW, {touched} touched rows"),
        format!("{:.2} ms · {lazy_gbs:.1} GB/s", lazy * 1e3),
        "measured, read + written",
    );
    s.row(
        "dense AdamW, all 65,536 rows",
        format!(
            "{:.1} ms · {:.1} GB/s",
            dense * 1e3,
            m as f64 * per_row / dense / 1e9
        ),
        "measured",
    );
    s.row("dense / lazy", format!("{:.1}×", dense / lazy), "measured");
    let share = lazy_gbs / memcpy_gbs;
    s.row(
        "lazy AdamW / memcpy bandwidth",
        format!("{:.0} %", 100.0 * share),
        "measured",
    );
    s.check("lazy host AdamW ≥ 40 % of memcpy bandwidth", share >= 0.4);
    s.figure("lazy_adamw_gbs", lazy_gbs);
    s.figure("lazy_share_of_memcpy", share);
    s.figure("dense_over_lazy", dense / lazy);
    Ok(s)
}

/// The planner's figures: traffic against a dense offload at the paper's
/// traffic setting, device memory of MEFT against the dense adapter.
pub fn planned() -> anyhow::Result<Section> {
    let mut s = Section::new("Planned: traffic and device memory");
    let llama = builtin_shape("llama-7b").ok_or_else(|| anyhow::anyhow!("llama-7b shape"))?;
    // The paper's traffic setting: LLaMA-7B, M 6144, batch 2 × 256.
    // An f16 base, so the rows cross in f16 (method.meft.row_dtype's default).
    let mut exp = Experiment::default();
    exp.model.device = "cuda:0".into();
    exp.model.dtype = crate::config::BaseDtype::F16;
    exp.method.meft.neurons = 6144;
    exp.method.meft.top_k = 64;
    exp.train.batch = 2;
    exp.train.micro_batch = 2;
    exp.train.cutoff_len = 256;
    let union = vec![(PAPER_UNION_FRACTION * 6144.0).round() as u64; 32];
    let plan_rows = |exp: &Experiment| {
        plan(&PlanInput {
            union_sizes: Some(&union),
            base_dtype_bytes: 2,
            ..PlanInput::new(exp, &llama)
        })
    };
    let mut f32_rows = exp.clone();
    f32_rows.method.meft.row_dtype = Some(crate::config::BaseDtype::F32);
    let p32 = plan_rows(&f32_rows)?;
    let p = plan_rows(&exp)?;
    let r = p.offload_ratio().unwrap_or(f64::NAN);
    s.row(
        "MEFT / dense offload, paper traffic setting",
        format!(
            "{} ({} of {} per step)",
            ratio(r),
            bytes(p.traffic.h2d() + p.traffic.d2h()),
            bytes(p.dense_offload)
        ),
        "planned at the paper's union (0.56·M), rows in f16 counted both ways, the offload in f32",
    );
    s.row(
        "  the same with rows in f32",
        format!(
            "{} ({} per step)",
            ratio(p32.offload_ratio().unwrap_or(f64::NAN)),
            bytes(p32.traffic.h2d() + p32.traffic.d2h()),
        ),
        "planned; method.meft.row_dtype = \"f32\"",
    );
    s.check(
        "MEFT bytes per step ≤ 0.3× a dense offload (paper traffic setting)",
        r <= 0.3,
    );
    s.figure("paper_traffic_ratio", r);
    // The paper's own figure (0.56× the parameters against 2× for the
    // dense offload) counts MEFT's row copy one way and the offload's both.
    let once = crate::telemetry::plan::paper_counted_ratio(&p, 2).unwrap_or(f64::NAN);
    s.row(
        "  the same, counted as the paper counts",
        format!(
            "{} (parameters: rows one way, as its Eq. 8; the offload both ways): the paper's 0.56 / 2 = 0.28×",
            ratio(once)
        ),
        "planned; the rows above are the like-for-like byte figures",
    );
    s.figure("paper_traffic_ratio_paper_counting", once);
    // The paper's NQ setting: batch 64 in micro-batches of 1.
    let mut nq = exp.clone();
    nq.method.meft.neurons = 8464;
    nq.method.meft.experts = 368;
    nq.train.batch = 64;
    nq.train.micro_batch = 1;
    let union = vec![(PAPER_UNION_FRACTION * 8464.0).round() as u64; 32];
    for cache in [0, 8464] {
        nq.method.meft.row_cache = cache;
        let p = plan(&PlanInput {
            union_sizes: Some(&union),
            base_dtype_bytes: 2,
            ..PlanInput::new(&nq, &llama)
        })?;
        let r = p.offload_ratio().unwrap_or(f64::NAN);
        let what = match cache {
            0 => "no row cache".to_string(),
            c => format!("row cache of {c} rows"),
        };
        s.row(
            format!("MEFT / dense offload, paper NQ setting (64 micro-batches of 1), {what}"),
            format!("{} ({} per step)", ratio(r), bytes(p.traffic.h2d() + p.traffic.d2h())),
            "planned at the paper's union; the cache's effect estimated from M, |U| and 64 micro-batches",
        );
        s.figure(&format!("paper_nq_ratio_cache_{cache}"), r);
    }
    let smol = builtin_shape("smollm2-135m").ok_or_else(|| anyhow::anyhow!("smollm2 shape"))?;
    for m in [16_384usize, 65_536] {
        let mut meft = Experiment::default();
        meft.method.meft.neurons = m;
        meft.method.meft.top_k = 64;
        meft.train.batch = 4;
        meft.train.micro_batch = 4;
        meft.train.cutoff_len = 64;
        let mut dense = meft.clone();
        dense.method.kind = MethodKind::Parallel;
        dense.method.parallel.size = m;
        let a = plan(&PlanInput::new(&meft, &smol))?;
        let b = plan(&PlanInput::new(&dense, &smol))?;
        let share = a.device_total as f64 / b.device_total as f64;
        s.row(
            format!("SmolLM2, M {m}: MEFT / dense adapter device"),
            format!(
                "{:.0} % ({} of {})",
                100.0 * share,
                bytes(a.device_total),
                bytes(b.device_total)
            ),
            "planned, worst-case unions, batch 4 × 64",
        );
        s.figure(&format!("device_share_m{m}"), share);
        // What the adapter itself adds: the frozen base's weights, its
        // activations and its backward working set are the same under both.
        let own = |p: &crate::telemetry::Plan| -> u64 {
            [
                Category::Trainable,
                Category::Grads,
                Category::Optimizer,
                Category::Rows,
                Category::AdapterActivations,
            ]
            .iter()
            .map(|c| p.device.get(c).copied().unwrap_or(0))
            .sum()
        };
        let own_share = own(&a) as f64 / own(&b).max(1) as f64;
        s.row(
            format!("  the adapters' own device bytes, M {m}"),
            format!(
                "{:.1} % ({} of {}; the base, its activations and backward working set excluded)",
                100.0 * own_share,
                bytes(own(&a)),
                bytes(own(&b))
            ),
            "planned, worst-case unions",
        );
        s.check(
            format!("MEFT device ledger ≤ 10 % of the dense adapter's at M {m} (the adapters' own bytes)"),
            own_share <= 0.1,
        );
        s.figure(&format!("device_own_share_m{m}"), own_share);
    }
    Ok(s)
}
