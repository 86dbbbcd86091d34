//! Training steps side by side: the frozen base's forward and backward
//! alone, LoRA, the dense Parallel Adapter and MEFT of the same M, on the
//! tiny model and on the SmolLM2 shape; MEFT's traffic against a dense
//! offload; the cost of telemetry and histograms.

use super::{time, Options, Section, Timing};
use crate::adapter::meft::StepStats;
use crate::config::{Experiment, MethodKind, Proj, Task, Template};
use crate::data::batch::Batch;
use crate::event::Event;
use crate::model::{Hooks, Input, Model, ModelConfig};
use crate::optim::{AdamWConfig, DeviceAdamW};
use crate::train::method::Method;
use crate::train::objective::masked_loss;
use crate::train::step::{optimizer_step, StepAt};
use crate::units::{bytes, ratio};
use candle_core::{Result, Tensor, Var};

/// The batch every method of a section trains on: real records of the
/// synthetic SQuAD world when the model has a tokenizer (what a run sees),
/// random tokens otherwise.
pub(super) struct BenchBatch(pub(super) Batch);

impl BenchBatch {
    pub(super) fn random(vocab: usize, rows: usize, seq: usize, seed: u64) -> Self {
        use rand::Rng;
        let mut rng = crate::rng::seeded(seed);
        let ids: Vec<u32> = (0..rows * seq)
            .map(|_| rng.random_range(0..vocab as u32))
            .collect();
        Self(Batch {
            ids,
            loss_mask: vec![1; rows * seq],
            attn_mask: vec![1; rows * seq],
            batch: rows,
            seq,
        })
    }

    /// The first `rows` records of a synthetic SQuAD world in `template`,
    /// cut at `cutoff` tokens.
    fn records(
        tokenizer: &crate::model::Tokenizer,
        template: Template,
        rows: usize,
        cutoff: usize,
    ) -> anyhow::Result<Self> {
        Self::micro_batches(tokenizer, template, 1, rows, cutoff)?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no records"))
    }

    /// `count` micro-batches of `rows` consecutive records each.
    pub(super) fn micro_batches(
        tokenizer: &crate::model::Tokenizer,
        template: Template,
        count: usize,
        rows: usize,
        cutoff: usize,
    ) -> anyhow::Result<Vec<Self>> {
        let mut exp = Experiment::default();
        exp.data.task = Task::Squad;
        exp.data.train = "synth:entities=50,seed=7".into();
        exp.data.template = template;
        exp.train.cutoff_len = cutoff;
        let (train, _) = crate::data::spec::load_data(&exp)?;
        let take = &train[..(count * rows).min(train.len())];
        let encoded = crate::data::spec::encode_all(&exp, take, tokenizer, None)?;
        encoded
            .chunks(rows.max(1))
            .map(|c| Batch::left_padded(c, tokenizer.pad_id).map(Self))
            .collect()
    }

    fn tokens(&self) -> usize {
        self.0.batch * self.0.seq
    }

    pub(super) fn loss(&self, model: &Model, hooks: &mut dyn Hooks) -> anyhow::Result<Tensor> {
        let b = &self.0;
        let input = Input::from(b);
        let logits = model.forward(&input, None, hooks, false)?;
        Ok(masked_loss(&logits, b)?.0)
    }
}

/// A trainable bias added at layer 0's FFN output: its gradient has to
/// cross every layer above, so a step with it is the frozen base's forward
/// and backward and nothing else.
struct BiasAtLayerZero(Var);

impl Hooks for BiasAtLayerZero {
    fn ffn(&mut self, layer: usize, u: &Tensor) -> Result<Option<Tensor>> {
        (layer == 0)
            .then(|| self.0.as_tensor().broadcast_as(u.shape()))
            .transpose()
    }
}

/// One optimizer step of `exp`'s `method` over `micro` (its micro-batches),
/// with pick statistics when `stats`; returns what MEFT moved. This is the
/// trainer's own step ([`crate::train::step::optimizer_step`]: the global
/// norm, clipping, the schedule and both optimizers), at the schedule's
/// step 100 of 1,000 with the learning rate 1e-4.
pub(super) fn train_step(
    exp: &Experiment,
    model: &Model,
    method: &mut Method,
    opt: &mut DeviceAdamW,
    micro: &[&BenchBatch],
    stats: bool,
) -> anyhow::Result<StepStats> {
    let mut exp = exp.clone();
    let rows = micro.first().map_or(1, |b| b.0.batch);
    exp.train.micro_batch = rows;
    exp.train.batch = rows * micro.len().max(1);
    exp.train.lr = 1e-4;
    let mut next = 0;
    let mut next_batch = || {
        let b = micro[next % micro.len()].0.clone();
        next += 1;
        Ok(b)
    };
    let at = StepAt {
        step: 100,
        total: 1_000,
        lr_scale: 1.0,
    };
    let out = optimizer_step(
        &exp,
        model,
        method,
        opt,
        at,
        &mut next_batch,
        &|| None,
        stats,
    )?;
    Ok(out.stats)
}

/// Forward FLOPs per token of the base (its linear maps, attention over
/// `seq` keys and the head), and of its backward pass with frozen weights
/// (input gradients only: the linear maps once more, attention twice).
fn base_flops(c: &ModelConfig, seq: u64) -> (f64, f64) {
    let (d, ffn, v) = (
        c.hidden_size as u64,
        c.intermediate_size as u64,
        c.vocab_size as u64,
    );
    let q = (c.num_heads * c.head_dim) as u64;
    let kv = (c.num_kv_heads * c.head_dim) as u64;
    let linear = 2 * (d * q + 2 * d * kv + q * d + 3 * d * ffn) * c.num_layers as u64 + 2 * d * v;
    let attention = 4 * q * seq * c.num_layers as u64;
    let fwd = (linear + attention) as f64;
    (fwd, fwd + attention as f64)
}

/// The frozen base's linear layers as bare matmuls at a step's own shapes:
/// the forward x·Wᵀ and the input gradient dY·W of each distinct shape,
/// timed once and counted as often as a step runs it. Seconds and FLOPs
/// per step.
fn matmul_roof(
    c: &ModelConfig,
    tokens: usize,
    reps: usize,
    dev: &candle_core::Device,
) -> anyhow::Result<(f64, f64)> {
    let (d, ffn, v, l) = (
        c.hidden_size,
        c.intermediate_size,
        c.vocab_size,
        c.num_layers,
    );
    let q = c.num_heads * c.head_dim;
    let kv = c.num_kv_heads * c.head_dim;
    // (in, out, times per step): q; k and v; o; gate and up; down; head.
    let shapes = [
        (d, q, l),
        (d, kv, 2 * l),
        (q, d, l),
        (d, ffn, 2 * l),
        (ffn, d, l),
        (d, v, 1),
    ];
    let (mut secs, mut flops) = (0.0, 0.0);
    for (i, &(inp, out, times)) in shapes.iter().enumerate() {
        let random = |rows: usize, cols: usize, seed: u64| {
            Tensor::from_vec(super::memory::random(rows * cols, seed), (rows, cols), dev)
        };
        let seed = 100 + 3 * i as u64;
        let (x, w, dy) = (
            random(tokens, inp, seed)?,
            random(out, inp, seed + 1)?,
            random(tokens, out, seed + 2)?,
        );
        // Reading one value of each back waits for the device.
        let t = time(1, reps.max(3), || {
            let y = crate::model::ops::frozen_linear(&x, &w)?;
            let dx = dy.matmul(&w)?;
            Ok(y.get(0)?.get(0)?.to_scalar::<f32>()? + dx.get(0)?.get(0)?.to_scalar::<f32>()?)
        })?;
        secs += t.median * times as f64;
        flops += 4.0 * (tokens * inp * out) as f64 * times as f64;
    }
    Ok((secs, flops))
}

struct Case {
    kind: MethodKind,
    m: usize,
    label: String,
    timing: Timing,
    stats: StepStats,
}

/// Steps of every method on one model.
#[allow(clippy::too_many_arguments)]
fn model_section(
    title: String,
    model: &mut Model,
    batch: &BenchBatch,
    neurons: &[usize],
    top_k: usize,
    reps: usize,
    sgemm_gflops: f64,
    parallel: bool,
    // Whether the frozen base's targets (its share of sgemm, LoRA over it)
    // are this model's: they are set at the SmolLM2 shape.
    base_targets: bool,
    limits: &[(MethodKind, usize, f64)],
) -> anyhow::Result<Section> {
    let mut s = Section::new(&title);
    let cfg = model.config.clone();
    let tokens = batch.tokens() as f64;
    // The frozen base alone.
    let bias = Var::zeros(cfg.hidden_size, candle_core::DType::F32, &model.device)?;
    let mut hook = BiasAtLayerZero(bias);
    let base = time(1, reps, || Ok(batch.loss(model, &mut hook)?.backward()?))?;
    let (fwd, bwd) = base_flops(&cfg, batch.0.seq as u64);
    let gflops = tokens * (fwd + bwd) / base.median / 1e9;
    s.row(
        "frozen base, forward + backward",
        format!(
            "{:.3} s ±{:.0} % · {gflops:.1} GFLOP/s ({:.0} % of sgemm)",
            base.median,
            base.spread_pct(),
            100.0 * gflops / sgemm_gflops
        ),
        "measured; FLOPs by formula",
    );
    if base_targets {
        s.check(
            "frozen base forward + backward ≥ 70 % of sgemm GFLOP/s",
            gflops >= 0.7 * sgemm_gflops,
        );
    }
    s.figure("base_s", base.median);
    s.figure("base_gflops", gflops);
    let (roof_s, roof_flops) = matmul_roof(&cfg, batch.tokens(), reps, &model.device)?;
    let roof_gflops = roof_flops / roof_s / 1e9;
    s.row(
        "  its matmuls alone, at its own shapes",
        format!(
            "{roof_s:.3} s · {roof_gflops:.1} GFLOP/s ({:.0} % of sgemm); the step spends {:.0} % of its time in them",
            100.0 * roof_gflops / sgemm_gflops,
            100.0 * roof_s / base.median
        ),
        "measured: x·Wᵀ and dY·W per linear layer and the head",
    );
    s.figure("base_matmul_s", roof_s);
    s.figure("base_matmul_gflops", roof_gflops);
    let mut cases = vec![];
    let mut exp = Experiment::default();
    exp.method.lora.rank = 8;
    exp.method.lora.targets = vec![Proj::QProj, Proj::VProj];
    let mut kinds: Vec<(MethodKind, usize, &'static str)> =
        vec![(MethodKind::Lora, 0, "LoRA r 8 (q, v)")];
    for &m in neurons {
        if parallel && m == neurons[0] {
            kinds.push((MethodKind::Parallel, m, "Parallel Adapter"));
        }
        kinds.push((MethodKind::Meft, m, "MEFT"));
    }
    for (kind, m, label) in kinds {
        exp.method.kind = kind;
        exp.method.meft.neurons = m.max(1);
        exp.method.meft.top_k = top_k;
        exp.method.parallel.size = m.max(1);
        let (mut method, vars) = Method::build(&exp, model)?;
        let mut opt = DeviceAdamW::new(vars, AdamWConfig::default())?;
        let mut stats = StepStats::default();
        let timing = time(1, reps, || {
            stats = train_step(&exp, model, &mut method, &mut opt, &[batch], false)?;
            Ok(())
        })?;
        let name = match kind {
            MethodKind::Lora => label.to_string(),
            MethodKind::Meft => format!("{label} M {m} K {top_k}"),
            _ => format!("{label} M {m}"),
        };
        s.row(
            name.clone(),
            format!(
                "{:.3} s ±{:.0} % (fastest {:.3})",
                timing.median,
                timing.spread_pct(),
                timing.min
            ),
            "measured, one optimizer step",
        );
        s.figure(&name, timing.median);
        cases.push(Case {
            kind,
            m,
            label: name,
            timing,
            stats,
        });
        if kind == MethodKind::Meft {
            if let Some(st) = cases.last().map(|c| &c.stats) {
                let moved = st.traffic.h2d() + st.traffic.d2h();
                let layers = st.unions.len() as u64;
                let dense = 2 * layers * 2 * m as u64 * cfg.hidden_size as u64 * 4;
                s.row(
                    format!("  traffic, M {m}"),
                    format!(
                        "{} per step = {} a dense offload of {}",
                        bytes(moved),
                        ratio(moved as f64 / dense as f64),
                        bytes(dense)
                    ),
                    "measured by the Link; dense offload computed",
                );
            }
        }
    }
    let lora = cases
        .iter()
        .find(|c| c.kind == MethodKind::Lora)
        .map(|c| c.timing.min);
    // Ratios of the fastest repeats: on a shared machine other work only
    // ever adds time, and a burst of it should not decide a ratio.
    if let Some(lora) = lora {
        s.row(
            "LoRA / frozen base",
            format!("{:.2}×", lora / base.min),
            "measured, fastest repeats",
        );
        if base_targets {
            s.check("LoRA ≤ 1.1× the frozen base", lora <= 1.1 * base.min);
        }
        for c in cases.iter().filter(|c| c.kind != MethodKind::Lora) {
            let r = c.timing.min / lora;
            s.row(
                format!("{} / LoRA", c.label),
                format!("{r:.2}×"),
                "measured, fastest repeats",
            );
            s.figure(&format!("{} over LoRA", c.label), r);
            if c.kind == MethodKind::Parallel {
                // Its dense matmuls alone: u·Kᵀ and a·V forward, and for
                // each the input's and the weight's gradient backward.
                let flops = 12.0 * tokens * (cfg.hidden_size * c.m * cfg.num_layers) as f64;
                let floor = flops / (sgemm_gflops * 1e9);
                let added = (c.timing.min - lora).max(1e-9);
                s.row(
                    format!("  {}: its own matmuls", c.label),
                    format!(
                        "{:.2} GFLOP per step; its part of the step (over LoRA's) runs at {:.1} GFLOP/s ({:.0} % of sgemm); at the sgemm rate it would be ≥ {:.2}× LoRA",
                        flops / 1e9,
                        flops / added / 1e9,
                        100.0 * flops / added / 1e9 / sgemm_gflops,
                        (lora + floor) / lora
                    ),
                    "computed: 12·N·d·M·layers FLOPs over the measured times",
                );
            }
            for &(kind, m, max) in limits {
                if kind == c.kind && m == c.m {
                    s.check(format!("{} ≤ {max}× LoRA", c.label), r <= max);
                }
            }
        }
    }
    Ok(s)
}

/// The SmolLM2 GGUF when fetched (`scripts/get-smollm2.sh`).
fn smollm2_file() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("MEFT_SMOLLM2").map(std::path::PathBuf::from) {
        return p.is_file().then_some(p);
    }
    std::fs::read_dir(".cache/smollm2")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "gguf"))
}

/// Telemetry and histograms on against off, on the tiny model.
fn overhead(model: &mut Model, batch: &BenchBatch, reps: usize) -> anyhow::Result<Section> {
    let mut s =
        Section::new("Overhead: telemetry sampler and pick histograms (tiny, MEFT M 4096 K 16)");
    let mut exp = Experiment::default();
    exp.method.meft.neurons = 4096;
    exp.method.meft.top_k = 16;
    let (mut method, vars) = Method::build(&exp, model)?;
    let mut opt = DeviceAdamW::new(vars, AdamWConfig::default())?;
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..reps.max(3) {
        for with in [round % 2 == 0, round % 2 != 0] {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Event>(4);
            let sampler = with.then(|| {
                crate::telemetry::spawn_sampler(
                    crate::telemetry::sampler::DEFAULT_PERIOD,
                    std::time::Instant::now(),
                    tx,
                )
            });
            let drain = std::thread::spawn(move || rx.iter().count());
            let t = time(1, 10, || {
                train_step(&exp, model, &mut method, &mut opt, &[batch], with)?;
                if with {
                    let _ = method.histograms(1);
                }
                Ok(())
            })?;
            if let Some(h) = sampler {
                h.stop();
            }
            let _ = drain.join();
            if with {
                on.push(t)
            } else {
                off.push(t)
            }
        }
    }
    let med = |v: &[Timing]| {
        let mut m: Vec<f64> = v.iter().map(|t| t.median).collect();
        m.sort_by(f64::total_cmp);
        (m[m.len() / 2], m[0], m[m.len() - 1])
    };
    let (a, amin, amax) = med(&on);
    let (b, bmin, bmax) = med(&off);
    s.row(
        "on",
        format!(
            "{:.1} ms per step ({:.1}–{:.1})",
            a * 1e3,
            amin * 1e3,
            amax * 1e3
        ),
        "measured",
    );
    s.row(
        "off",
        format!(
            "{:.1} ms per step ({:.1}–{:.1})",
            b * 1e3,
            bmin * 1e3,
            bmax * 1e3
        ),
        "measured",
    );
    // Within spread: the two ranges overlap.
    s.check(
        "telemetry on vs off: no difference beyond run-to-run spread",
        amin <= bmax && bmin <= amax,
    );
    s.figure("on_ms", a * 1e3);
    s.figure("off_ms", b * 1e3);
    Ok(s)
}

pub fn sections(opts: &Options, sgemm_gflops: f64) -> anyhow::Result<Vec<Section>> {
    let mut out = Vec::new();
    let dev = opts.device.clone();
    let tiny_ref = crate::model::ModelRef::Tiny;
    let loaded = crate::model::load_model(&tiny_ref, &dev)?;
    let mut tiny = loaded.model;
    let tiny_batch = BenchBatch::records(&loaded.tokenizer, Template::Plain, 4, 32)?;
    out.push(model_section(
        format!(
            "Steps: tiny model (embedded:tiny), synthetic SQuAD records, batch {} × {}",
            tiny_batch.0.batch, tiny_batch.0.seq
        ),
        &mut tiny,
        &tiny_batch,
        &[4096],
        16,
        if opts.quick { 5 } else { 10 },
        sgemm_gflops,
        true,
        false,
        &[
            (MethodKind::Parallel, 4096, 2.5),
            (MethodKind::Meft, 4096, 1.2),
        ],
    )?);
    out.push(overhead(
        &mut tiny,
        &tiny_batch,
        if opts.quick { 3 } else { 5 },
    )?);
    let micro = BenchBatch::micro_batches(&loaded.tokenizer, Template::Plain, 8, 1, 32)?;
    out.push(super::overlap::section(
        format!(
            "Overlap: tiny model, MEFT M 4096 K 16, batch {} × {}",
            tiny_batch.0.batch, tiny_batch.0.seq
        ),
        &mut tiny,
        &tiny_batch,
        4096,
        16,
        if opts.quick { 5 } else { 10 },
    )?);
    out.push(super::cache::section(
        "Row cache: tiny model, MEFT M 4096 K 16, one step of 8 micro-batches of 1 × 32".into(),
        &mut tiny,
        &micro,
        4096,
        16,
        if opts.quick { 1 } else { 3 },
        true,
    )?);
    let (mut smol, smol_batch, smol_micro, what) = match smollm2_file() {
        Some(p) => {
            let loaded = crate::model::load_model(&crate::model::ModelRef::Gguf(p), &dev)?;
            let t = &loaded.tokenizer;
            let batch = BenchBatch::records(t, Template::Alpaca, 4, 64)?;
            let micro = BenchBatch::micro_batches(t, Template::Alpaca, 4, 1, 64)?;
            (
                loaded.model,
                batch,
                micro,
                "SmolLM2-135M-Instruct (GGUF weights), synthetic SQuAD records in the Alpaca template",
            )
        }
        None => {
            let shape = crate::model::shapes::builtin_shape("smollm2-135m")
                .ok_or_else(|| anyhow::anyhow!("the smollm2-135m shape"))?;
            let v = shape.vocab_size;
            (
                crate::model::load::random_model(&shape, 5, &dev)?,
                BenchBatch::random(v, 4, 64, 2),
                (0..4)
                    .map(|i| BenchBatch::random(v, 1, 64, 10 + i))
                    .collect(),
                "the SmolLM2-135M shape with random weights and tokens (the GGUF file is absent)",
            )
        }
    };
    let neurons: &[usize] = if opts.quick { &[4096] } else { &[4096, 65_536] };
    out.push(model_section(
        format!(
            "Steps: {what}, batch {} × {}, all 30 layers",
            smol_batch.0.batch, smol_batch.0.seq
        ),
        &mut smol,
        &smol_batch,
        neurons,
        64,
        if opts.quick { 2 } else { 3 },
        sgemm_gflops,
        true,
        true,
        &[
            (MethodKind::Meft, 4096, 1.3),
            (MethodKind::Meft, 65_536, 2.0),
        ],
    )?);
    let overlap_m = *neurons.last().unwrap_or(&4096);
    out.push(super::overlap::section(
        format!(
            "Overlap: {what}, MEFT M {overlap_m} K 64, batch {} × {}, all 30 layers",
            smol_batch.0.batch, smol_batch.0.seq
        ),
        &mut smol,
        &smol_batch,
        overlap_m,
        64,
        if opts.quick { 2 } else { 3 },
    )?);
    out.push(super::cache::section(
        format!("Row cache: {what}, MEFT M 4096 K 64, one step of 4 micro-batches of 1 × 64"),
        &mut smol,
        &smol_micro,
        4096,
        64,
        1,
        false,
    )?);
    Ok(out)
}
