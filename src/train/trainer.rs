//! The loop: micro-batches, gradient accumulation, clipping over device and
//! host parameters, optimizer steps, control messages, evaluation,
//! checkpoints — reporting everything as events.

use super::checkpoint::{self, Buffer, CheckpointReader, CheckpointWriter};
use super::event::*;
use super::method::Method;
use super::Control;
use crate::config::Experiment;
use crate::data::batch::{encode_example, Batch, Batcher, Encoded, Position};
use crate::data::prompt::Template;
use crate::data::{Example, Task};
use crate::model::generate::GenerateOptions;
use crate::model::{Input, LoadedModel, Model};
use crate::optim::moments::{MomentPieces, MomentPiecesMut, MomentRows, BLOCKS};
use crate::optim::{clip_coefficient, lr_at, warmup_steps, AdamWConfig, DeviceAdamW, Schedule};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::Instant;

/// Where a `synth:` dataset is written before the real loaders read it back.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("MEFT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".cache"))
}

/// Parse `synth:entities=N,seed=S,pool=P,namespace=K` into a world spec.
pub fn parse_synth(spec: &str, field: &str) -> Result<crate::data::synth::WorldSpec> {
    let mut w = crate::data::synth::WorldSpec::default();
    let body = spec.strip_prefix("synth:").unwrap_or(spec);
    for part in body.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("{field}: expected key=value in {spec:?}, got {part:?}"))?;
        let num: u64 = v
            .trim()
            .parse()
            .with_context(|| format!("{field}: {k} must be a whole number, got {v:?}"))?;
        match k.trim() {
            "entities" => w.entities = num as usize,
            "seed" => w.seed = num,
            "pool" => w.pool = num as usize,
            "namespace" => w.namespace = num,
            "attributes" => w.attributes = num as usize,
            other => anyhow::bail!("{field}: unknown synth key {other:?} (entities, seed, pool, namespace, attributes)"),
        }
    }
    w.validate().map_err(|e| anyhow::anyhow!("{field}: {e}"))?;
    Ok(w)
}

/// The files the config's data section reads: the training file and the
/// evaluation file, if any (a `synth:` spec is written to the cache first).
pub fn data_files(exp: &Experiment) -> Result<(Task, PathBuf, Option<PathBuf>)> {
    let task: Task = exp
        .data
        .task
        .parse()
        .map_err(|e| anyhow::anyhow!("data.task: {e}"))?;
    let resolve = |spec: &str, field: &str, want_test: bool| -> Result<PathBuf> {
        if spec.starts_with("synth:") {
            let w = parse_synth(spec, field)?;
            let dir = cache_dir().join("data").join(format!(
                "{}-e{}-s{}-p{}-a{}-n{}",
                task, w.entities, w.seed, w.pool, w.attributes, w.namespace
            ));
            let (train, test) = crate::data::synth::file_names(task);
            let wanted = dir.join(if want_test { test } else { train });
            if !wanted.is_file() {
                crate::data::synth::write(task, &w, &dir)
                    .map_err(|e| anyhow::anyhow!("{field}: {e}"))?;
            }
            Ok(wanted)
        } else {
            Ok(PathBuf::from(spec))
        }
    };
    let train = resolve(&exp.data.train, "data.train", false)?;
    // No eval set named: a synthetic world brings its own held-out split.
    let test = match (exp.data.eval.as_str(), exp.data.train.starts_with("synth:")) {
        ("", true) => Some(resolve(&exp.data.train, "data.train", true)?),
        ("", false) => None,
        (spec, _) => Some(resolve(spec, "data.eval", spec.starts_with("synth:"))?),
    };
    Ok((task, train, test))
}

/// Train and test examples of the config's data section.
pub fn load_data(exp: &Experiment) -> Result<(Vec<Example>, Vec<Example>)> {
    let (task, train_path, test_path) = data_files(exp)?;
    let train = crate::data::load(task, &train_path)?;
    let test = match &test_path {
        Some(p) => crate::data::load(task, p)?,
        None => Vec::new(),
    };
    anyhow::ensure!(
        !train.is_empty(),
        "data.train: no training records in {}",
        train_path.display()
    );
    Ok((train, test))
}

fn template_of(exp: &Experiment) -> Result<Template> {
    exp.data
        .template
        .parse()
        .map_err(|e| anyhow::anyhow!("data.template: {e}"))
}

/// Training examples as the run's template and cut-off encode them.
pub fn encode_all(
    exp: &Experiment,
    examples: &[Example],
    tokenizer: &crate::model::Tokenizer,
) -> Result<Vec<Encoded>> {
    let template = template_of(exp)?;
    examples
        .iter()
        .map(|e| {
            encode_example(
                e,
                template,
                tokenizer,
                exp.train.cutoff_len,
                exp.train.train_on_inputs,
            )
        })
        .collect()
}

pub fn total_steps(exp: &Experiment, n_train: usize) -> u64 {
    if exp.train.steps > 0 {
        exp.train.steps as u64
    } else {
        ((exp.train.epochs * n_train as f64) / exp.train.batch as f64)
            .ceil()
            .max(1.0) as u64
    }
}

/// Mean cross-entropy over the loss-masked next-token targets: position t
/// of each row predicts token t + 1, where that token is real and in the
/// loss mask.
pub fn masked_loss(logits: &Tensor, batch: &Batch) -> candle_core::Result<(Tensor, usize)> {
    let (b, s, _) = logits.dims3()?;
    let mut targets = vec![0u32; b * s];
    let mut weights = vec![0f32; b * s];
    for r in 0..b {
        for t in 0..s - 1 {
            let i = r * s + t + 1;
            targets[r * s + t] = batch.ids[i];
            if batch.loss_mask[i] == 1 && batch.attn_mask[i] == 1 {
                weights[r * s + t] = 1.0;
            }
        }
    }
    let count = weights.iter().filter(|w| **w > 0.0).count();
    let loss = crate::model::ops::cross_entropy(logits, targets, weights)?;
    Ok((loss, count))
}

/// Steps of an exactly-zero gradient norm after which the run warns.
const DEAD_AFTER: u64 = 10;

pub struct Trainer {
    pub exp: Experiment,
    pub model: Model,
    pub tokenizer: crate::model::Tokenizer,
    pub method: Method,
    pub opt: DeviceAdamW,
    pub train: Vec<Encoded>,
    pub test: Vec<Example>,
    pub batcher: Batcher,
    pub step: u64,
    pub total: u64,
    pub run_dir: PathBuf,
    pub template: Template,
    pub task: Task,
    events: Sender<Event>,
    control: Receiver<Control>,
    first_loss: Option<f64>,
    last_loss: f64,
    tokens_done: u64,
    wall_s: f64,
    traffic_sum: Traffic,
    steps_done: u64,
    peak_device: u64,
    last_metrics: BTreeMap<String, f64>,
    /// Each adapter layer's largest |U| in the current step.
    step_unions: Vec<u64>,
    /// Σ |U| per adapter layer over every micro-batch so far.
    union_totals: Vec<u64>,
    /// Tokens (padded batch × seq) and sequence length of the last micro-batch.
    micro_shape: Option<(u64, u64)>,
    /// Host gradient accumulators at their fullest in the last step.
    accumulator_bytes: u64,
    peak_host: u64,
    step_times: Vec<f64>,
    rss_peaks: BTreeMap<String, u64>,
    heap_peak: u64,
    step_heap_growth: u64,
    /// Consecutive steps whose gradient norm was exactly 0.
    zero_grad_steps: u64,
    /// Said once at the start (records the cut-off shortens, memory the
    /// plan may need beyond what is free).
    warnings: Vec<String>,
}

impl Trainer {
    pub fn new(
        exp: Experiment,
        loaded: LoadedModel,
        run_dir: &Path,
        events: Sender<Event>,
        control: Receiver<Control>,
    ) -> Result<Self> {
        let LoadedModel {
            mut model,
            tokenizer,
            ..
        } = loaded;
        let (train_ex, test) = load_data(&exp)?;
        let template = template_of(&exp)?;
        let task: Task = exp
            .data
            .task
            .parse()
            .map_err(|e| anyhow::anyhow!("data.task: {e}"))?;
        let train = encode_all(&exp, &train_ex, &tokenizer)?;
        let memory_warning = check_memory(&exp, &model)?;
        let (method, vars) = Method::build(&exp, &mut model)?;
        let opt = DeviceAdamW::new(vars, AdamWConfig::default())?;
        let batcher = Batcher::new(train.len(), exp.train.micro_batch, exp.train.seed)?;
        let total = total_steps(&exp, train.len());
        // A record that fills the cut-off lost its end (or at least its
        // end-of-sequence token): say how many, once.
        let eos = crate::data::batch::TextEncoder::eos_id(&tokenizer);
        let cut = train
            .iter()
            .filter(|e| e.len() >= exp.train.cutoff_len && e.ids.last().copied() != eos)
            .count();
        let cutoff_warning = (cut > 0).then(|| {
            format!(
                "warning: {cut} of {} training records ({:.1} %) reach train.cutoff_len = {}: their answer is cut or loses its end-of-sequence token",
                train.len(),
                100.0 * cut as f64 / train.len().max(1) as f64,
                exp.train.cutoff_len
            )
        });
        Ok(Self {
            exp,
            model,
            tokenizer,
            method,
            opt,
            train,
            test,
            batcher,
            step: 0,
            total,
            run_dir: run_dir.to_path_buf(),
            template,
            task,
            events,
            control,
            first_loss: None,
            last_loss: f64::NAN,
            tokens_done: 0,
            wall_s: 0.0,
            traffic_sum: Traffic::default(),
            steps_done: 0,
            peak_device: 0,
            last_metrics: BTreeMap::new(),
            step_unions: Vec::new(),
            union_totals: Vec::new(),
            micro_shape: None,
            accumulator_bytes: 0,
            peak_host: 0,
            step_times: Vec::new(),
            rss_peaks: BTreeMap::new(),
            heap_peak: 0,
            step_heap_growth: 0,
            zero_grad_steps: 0,
            warnings: cutoff_warning.into_iter().chain(memory_warning).collect(),
        })
    }

    fn emit(&self, ev: Event) {
        let _ = self.events.send(ev);
    }

    pub fn run_info(&self, resumed_from: Option<u64>) -> Result<RunInfo> {
        let trainable = self.opt.param_count() as u64
            + self.method.meft().map(|m| m.store_bytes() / 4).unwrap_or(0);
        Ok(RunInfo {
            run_id: self
                .run_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            config_toml: self.exp.to_toml()?,
            name: self.exp.name.clone(),
            method: self.exp.method.kind.clone(),
            model: self.exp.model.reference.clone(),
            device: self.exp.model.device.clone(),
            total_steps: self.total,
            base_params: self.model.config.param_count() as u64,
            trainable_params: trainable,
            adapter: Method::describe(&self.exp),
            plan: self.plan(false).and_then(|p| serde_json::to_value(p).ok()),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            resumed_from,
        })
    }

    /// Bytes resident on the compute device by category: base and trainable
    /// parameters measured from the tensors that exist, the rest the
    /// planner's formulas at this step's batch shape and unions.
    pub fn device_ledger(&self) -> Ledger {
        let unions = (!self.step_unions.is_empty()).then_some(self.step_unions.as_slice());
        let mut l = self
            .plan_with(unions, self.micro_shape, None)
            .map(|p| p.device)
            .unwrap_or_default();
        let base: u64 = self
            .model
            .named_tensors()
            .iter()
            .map(|(_, t)| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
            .sum();
        let trainable: u64 = self
            .opt
            .vars
            .iter()
            .map(|(_, v)| (v.elem_count() * 4) as u64)
            .sum();
        let base = if matches!(self.method, Method::Full) {
            base.saturating_sub(trainable)
        } else {
            base
        };
        l.insert(Category::Base, base);
        l.insert(Category::Trainable, trainable);
        l.insert(Category::Grads, trainable);
        l.insert(Category::Optimizer, 2 * trainable);
        l
    }

    /// The planner's prediction for this run; with measured union sizes and
    /// tokens once steps have run.
    pub fn plan(&self, measured: bool) -> Option<crate::telemetry::Plan> {
        if !measured {
            return self.plan_with(None, None, None);
        }
        let accum = (self.exp.train.batch / self.exp.train.micro_batch).max(1) as u64;
        let unions: Option<Vec<u64>> = (!self.union_totals.is_empty()).then(|| {
            self.union_totals
                .iter()
                .map(|u| (*u as f64 / (self.steps_done.max(1) * accum) as f64).round() as u64)
                .collect()
        });
        // The rows the lazy optimizer holds moments for, as measured.
        let moment_rows = self.method.meft().map(|m| {
            let rows: usize = m.layers.iter().map(|l| l.store.rows_with_moments()).sum();
            (rows / m.layers.len().max(1)) as u64
        });
        self.plan_with(unions.as_deref(), self.micro_shape, moment_rows)
    }

    /// The plan at given unions and micro-batch shape (tokens, sequence
    /// length); the config's worst case where they are None.
    fn plan_with(
        &self,
        unions: Option<&[u64]>,
        shape: Option<(u64, u64)>,
        moment_rows: Option<u64>,
    ) -> Option<crate::telemetry::Plan> {
        let mut input = crate::telemetry::PlanInput::new(&self.exp, &self.model.config);
        input.base_dtype_bytes = self.model.dtype.size_in_bytes() as u64;
        if let Some((n, seq)) = shape {
            input.tokens_per_micro_batch = n;
            input.seq_len = seq;
        }
        input.union_sizes = unions;
        input.moment_rows = moment_rows;
        crate::telemetry::plan(&input).ok()
    }

    pub fn host_ledger(&self) -> Ledger {
        let mut l = Ledger::new();
        if let Some(m) = self.method.meft() {
            l.insert(Category::Store, m.store_bytes());
            l.insert(Category::Moments, m.moment_bytes());
            l.insert(Category::Accumulators, self.accumulator_bytes);
        }
        l
    }

    /// Wait while paused; returns false when asked to stop.
    fn handle_control(&mut self) -> Result<bool> {
        loop {
            match self.control.try_recv() {
                Ok(Control::Pause) => {
                    self.emit(Event::Paused { step: self.step });
                    loop {
                        match self.control.recv() {
                            Ok(Control::Resume) => {
                                self.emit(Event::Resumed { step: self.step });
                                break;
                            }
                            Ok(Control::Stop) | Err(_) => return Ok(false),
                            Ok(Control::Checkpoint) => self.checkpoint()?,
                            Ok(Control::EvalNow) => self.evaluate()?,
                            Ok(Control::Pause) => {}
                        }
                    }
                }
                Ok(Control::Resume) => {}
                Ok(Control::Stop) => return Ok(false),
                Ok(Control::Checkpoint) => self.checkpoint()?,
                Ok(Control::EvalNow) => self.evaluate()?,
                Err(TryRecvError::Empty) => return Ok(true),
                // The controller went away (headless run): keep training.
                Err(TryRecvError::Disconnected) => return Ok(true),
            }
        }
    }

    /// Train to the end (or a stop), evaluate, summarise.
    pub fn run(&mut self) -> Result<Summary> {
        for text in std::mem::take(&mut self.warnings) {
            self.emit(Event::Message { text });
        }
        let mut stopped = false;
        while self.step < self.total {
            if !self.handle_control()? {
                stopped = true;
                break;
            }
            self.train_step()?;
            let every = self.exp.train.checkpoint_every as u64;
            if every > 0 && self.step.is_multiple_of(every) && self.step < self.total {
                self.checkpoint()?;
            }
        }
        self.note_rss("train");
        self.checkpoint()?;
        self.note_rss("checkpoint");
        if !stopped {
            self.evaluate()?;
            self.note_rss("eval");
        }
        if stopped {
            self.emit(Event::Stopped { step: self.step });
        }
        let summary = self.summary();
        let text = serde_json::to_string_pretty(&summary)?;
        crate::fsx::write_atomic(&self.run_dir.join("summary.json"), text.as_bytes())?;
        self.emit(Event::Finished {
            summary: summary.clone(),
        });
        Ok(summary)
    }

    /// Fold in the steps an earlier process of this run logged (after a
    /// resume), so the summary's first loss, tokens, time and traffic cover
    /// the whole run.
    pub fn count_earlier_steps(&mut self, steps: &[StepEvent]) {
        for s in steps {
            self.first_loss.get_or_insert(s.loss);
            self.tokens_done += s.tokens;
            self.wall_s += s.wall_ms / 1e3;
            self.traffic_sum.add(&s.traffic);
            self.steps_done += 1;
            self.step_times.push(s.wall_ms / 1e3);
            if self.union_totals.len() != s.union_sizes.len() {
                self.union_totals = vec![0; s.union_sizes.len()];
            }
            for (t, u) in self.union_totals.iter_mut().zip(&s.union_sizes) {
                *t += u;
            }
        }
        if let Some(s) = steps.last() {
            self.last_loss = s.loss;
        }
    }

    fn note_rss(&mut self, phase: &str) {
        if let Some(b) = crate::telemetry::peak_rss() {
            self.rss_peaks.insert(phase.to_string(), b);
        }
    }

    pub fn summary(&self) -> Summary {
        let n = self.steps_done.max(1) as f64;
        let mut times = self.step_times.clone();
        times.sort_by(f64::total_cmp);
        Summary {
            steps: self.step,
            final_loss: self.last_loss,
            first_loss: self.first_loss.unwrap_or(f64::NAN),
            tokens_per_s: if self.wall_s > 0.0 {
                self.tokens_done as f64 / self.wall_s
            } else {
                0.0
            },
            wall_s: self.wall_s,
            h2d_per_step: self.traffic_sum.h2d() as f64 / n,
            d2h_per_step: self.traffic_sum.d2h() as f64 / n,
            peak_device_ledger: self.peak_device,
            tokens: self.tokens_done,
            peak_host_ledger: self.peak_host,
            median_step_s: times.get(times.len() / 2).copied().unwrap_or(0.0),
            rss_peaks: self.rss_peaks.clone(),
            heap_peak: self.heap_peak,
            step_heap_growth: self.step_heap_growth,
            metrics: self.last_metrics.clone(),
            predicted: self.predicted(),
        }
    }

    /// The planner's figures for what this run measured: bytes per step and
    /// the device ledger, given the measured union sizes and batch shape.
    fn predicted(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        if self.steps_done == 0 {
            return out;
        }
        if let Some(p) = self.plan(true) {
            out.insert("h2d_per_step".into(), p.traffic.h2d() as f64);
            out.insert("d2h_per_step".into(), p.traffic.d2h() as f64);
            out.insert("device_ledger".into(), p.device_total as f64);
            out.insert("host_ledger".into(), p.host_total as f64);
            // On the CPU the device is host memory too: the process holds both.
            if self.model.device.is_cpu() {
                out.insert(
                    "process_peak".into(),
                    (p.host_total + p.device_total) as f64,
                );
            }
        }
        out
    }

    /// One optimizer step over `batch / micro_batch` micro-batches.
    pub fn train_step(&mut self) -> Result<()> {
        let t0 = Instant::now();
        let heap_before = crate::telemetry::heap::live();
        crate::telemetry::heap::reset_peak();
        let accum = (self.exp.train.batch / self.exp.train.micro_batch).max(1);
        let n_vars = self.opt.vars.len();
        let mut grads: Vec<Option<Tensor>> = vec![None; n_vars];
        let mut loss_sum = 0f64;
        let mut tokens = 0u64;
        self.method.set_train(true);
        if let Some(m) = self.method.meft_mut() {
            m.collect_stats = true;
            m.union_log.clear();
        }
        for micro in 0..accum {
            if let Method::Lora(l) = &mut self.method {
                l.reseed(self.exp.train.seed ^ (self.step * 1_000 + micro as u64 + 1));
            }
            let idx = self.batcher.next_batch();
            let rows: Vec<Encoded> = idx.iter().map(|&i| self.train[i].clone()).collect();
            let batch = Batch::left_padded(&rows, self.tokenizer.pad_id);
            self.micro_shape = Some(((batch.batch * batch.seq) as u64, batch.seq as u64));
            tokens += batch.attn_mask.iter().filter(|&&m| m == 1).count() as u64;
            let input = Input {
                ids: &batch.ids,
                pad_mask: &batch.attn_mask,
                batch: batch.batch,
                seq: batch.seq,
            };
            let logits = self.model.forward(&input, None, &mut self.method, false)?;
            let (loss, _) = masked_loss(&logits, &batch)?;
            let loss = (loss / accum as f64)?;
            loss_sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            let g = loss.backward()?;
            for (i, (_, var)) in self.opt.vars.iter().enumerate() {
                if let Some(gi) = g.get(var.as_tensor()) {
                    grads[i] = Some(match grads[i].take() {
                        Some(acc) => (acc + gi)?,
                        None => gi.clone(),
                    });
                }
            }
            if let Some(m) = self.method.meft_mut() {
                m.collect_grads(&g)?;
            }
        }
        // Global norm over device parameters and host rows together.
        let mut sq = 0f64;
        for g in grads.iter().flatten() {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
        if let Some(m) = self.method.meft() {
            sq += m.host_grad_sq_norm();
        }
        let norm = sq.sqrt();
        if !loss_sum.is_finite() || !norm.is_finite() {
            // Nothing of this step is applied and no checkpoint is written:
            // the newest checkpoint on disk is the last finite state.
            return Err(super::Diverged {
                step: self.step + 1,
                what: format!("the loss is {loss_sum} and the gradient norm {norm}"),
            }
            .into());
        }
        let coef = clip_coefficient(norm, self.exp.train.clip);
        self.zero_grad_steps = if norm == 0.0 {
            self.zero_grad_steps + 1
        } else {
            0
        };
        if self.zero_grad_steps == DEAD_AFTER {
            self.emit(Event::Message {
                text: format!(
                    "warning: the gradient norm has been exactly 0 for {DEAD_AFTER} steps (to step {}): nothing is learning; lower train.lr",
                    self.step + 1
                ),
            });
        }
        let schedule = if self.exp.train.schedule == "constant_with_warmup" {
            Schedule::ConstantWithWarmup
        } else {
            Schedule::Linear
        };
        let warm = warmup_steps(self.total, self.exp.train.warmup_ratio);
        let lr = lr_at(self.exp.train.lr, self.step, self.total, warm, schedule);
        self.opt.step(&grads, lr, coef)?;
        let cfg = self.opt.cfg;
        let rows_updated = match self.method.meft_mut() {
            Some(m) => {
                let acc = m.accumulator_bytes();
                let n = m.host_step(lr, coef, &cfg) as u64;
                self.accumulator_bytes = acc;
                n
            }
            None => 0,
        };
        self.step += 1;
        let wall = t0.elapsed().as_secs_f64();
        let heap = HeapReading {
            before: heap_before,
            peak: crate::telemetry::heap::peak(),
        };
        self.heap_peak = self.heap_peak.max(heap.peak);
        self.step_heap_growth = self
            .step_heap_growth
            .max(heap.peak.saturating_sub(heap.before));
        let (traffic, unions, picks) = match self.method.meft_mut() {
            Some(m) => {
                let per_layer = m.link.take();
                let mut t = Traffic::default();
                for l in &per_layer {
                    t.add(l);
                }
                let nl = m.layers.len();
                let mut unions = vec![0u64; nl];
                let mut picks = vec![0u64; nl];
                let mut peak = vec![0u64; nl];
                for (i, (u, p)) in m.union_log.drain(..).enumerate() {
                    unions[i % nl] += u;
                    picks[i % nl] += p;
                    peak[i % nl] = peak[i % nl].max(u);
                }
                self.step_unions = peak;
                if self.union_totals.len() != nl {
                    self.union_totals = vec![0; nl];
                }
                for (tot, u) in self.union_totals.iter_mut().zip(&unions) {
                    *tot += u;
                }
                (t, unions, picks)
            }
            None => (Traffic::default(), Vec::new(), Vec::new()),
        };
        self.traffic_sum.add(&traffic);
        self.steps_done += 1;
        self.tokens_done += tokens;
        self.wall_s += wall;
        self.first_loss.get_or_insert(loss_sum);
        self.last_loss = loss_sum;
        let pos = self.batcher.position();
        let epoch = pos.epoch as f64 + pos.index as f64 / self.train.len().max(1) as f64;
        self.emit(Event::Step(StepEvent {
            step: self.step,
            total_steps: self.total,
            epoch,
            loss: loss_sum,
            lr,
            grad_norm: norm,
            tokens,
            wall_ms: wall * 1e3,
            traffic,
            union_sizes: unions,
            picks,
            rows_updated,
        }));
        let device = self.device_ledger();
        self.peak_device = self.peak_device.max(device.values().sum());
        let host = self.host_ledger();
        self.peak_host = self.peak_host.max(host.values().sum());
        self.step_times.push(wall);
        self.emit(Event::Ledger(LedgerEvent {
            step: self.step,
            device,
            host,
            heap: Some(heap),
        }));
        if self.step.is_multiple_of(5) || self.step == 1 || self.step == self.total {
            self.emit_histograms();
        }
        Ok(())
    }

    fn emit_histograms(&mut self) {
        let step = self.step;
        let Some(m) = self.method.meft_mut() else {
            return;
        };
        let mut out = Vec::new();
        for l in &mut m.layers {
            let st = std::mem::take(&mut l.stats);
            if st.counts.is_empty() {
                continue;
            }
            let mut sorted = st.counts.clone();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            let bins = 48.min(sorted.len()).max(1);
            let per = sorted.len().div_ceil(bins);
            let picks_sorted = sorted
                .chunks(per)
                .map(|c| c.iter().sum::<u32>() as f32 / c.len() as f32)
                .collect();
            let distinct = st.counts.iter().filter(|&&c| c > 0).count() as u64;
            let hi = st
                .act_values
                .iter()
                .copied()
                .fold(0f32, f32::max)
                .max(1e-12);
            let mut act_bins = vec![0u32; 24];
            for v in &st.act_values {
                let b = ((v / hi) * 23.999) as usize;
                act_bins[b.min(23)] += 1;
            }
            out.push(Event::Histogram(HistogramEvent {
                step,
                layer: l.layer as u32,
                window: 5,
                picks_sorted,
                distinct,
                neurons: st.counts.len() as u64,
                act_bins,
                act_lo: 0.0,
                act_hi: hi,
            }));
        }
        for ev in out {
            self.emit(ev);
        }
    }

    /// Decode the test split (up to `eval.limit`) and score it.
    pub fn evaluate(&mut self) -> Result<()> {
        if self.test.is_empty() {
            return Ok(());
        }
        let limit = if self.exp.eval.limit == 0 {
            self.test.len()
        } else {
            self.exp.eval.limit.min(self.test.len())
        };
        let examples: Vec<Example> = self.test[..limit].to_vec();
        let opts = GenerateOptions {
            max_new_tokens: self.exp.eval.max_new_tokens,
            beams: if self.exp.eval.decoding == "beam" {
                self.exp.eval.beams
            } else {
                1
            },
            repetition_penalty: self.exp.eval.repetition_penalty as f32,
        };
        self.method.set_train(false);
        if let Some(m) = self.method.meft_mut() {
            m.collect_stats = false;
        }
        let (report, preds) = crate::eval::decode_and_score(
            &self.model,
            &self.tokenizer,
            &mut self.method,
            self.task,
            self.template,
            &examples,
            &opts,
        )?;
        // Decoding's traffic is not a training step's.
        if let Some(m) = self.method.meft_mut() {
            m.link.take();
        }
        self.method.set_train(true);
        // eval.metrics, when given, chooses which of the task's metrics count.
        let wanted = &self.exp.eval.metrics;
        let metrics: BTreeMap<String, f64> = report
            .scores
            .iter()
            .map(|(m, v)| (m.name().to_string(), *v))
            .filter(|(name, _)| wanted.is_empty() || wanted.contains(name))
            .collect();
        self.last_metrics = metrics.clone();
        let samples = examples
            .iter()
            .zip(&preds)
            .take(5)
            .map(|(e, p)| {
                (
                    e.instruction.clone(),
                    p.clone(),
                    e.gold.first().cloned().unwrap_or_default(),
                )
            })
            .collect();
        self.emit(Event::Eval(EvalEvent {
            step: self.step,
            n: examples.len() as u64,
            metrics,
            samples,
        }));
        Ok(())
    }

    /// Write every trainable tensor, the optimizers' state and the data
    /// position. Host stores are streamed from their buffers, so a
    /// checkpoint costs no second copy of the store in memory.
    pub fn checkpoint(&mut self) -> Result<()> {
        // A checkpoint is only ever a finite state, so the newest one on disk
        // is always one a diverged run can go back to.
        if !self.parameters_finite()? {
            return Err(super::Diverged {
                step: self.step,
                what: "the last update left non-finite parameters".into(),
            }
            .into());
        }
        let mut w = CheckpointWriter::new();
        for (i, (name, var)) in self.opt.vars.iter().enumerate() {
            w.add_tensor(name.clone(), var.as_tensor())?;
            w.add_tensor(format!("opt.m.{name}"), &self.opt.m[i])?;
            w.add_tensor(format!("opt.v.{name}"), &self.opt.v[i])?;
        }
        if let Some(m) = self.method.meft() {
            let d = m.shape.d;
            for l in &m.layers {
                let p = format!("meft.{}", l.layer);
                let s = &l.store;
                w.add(format!("{p}.keys"), &[s.m, d], Buffer::F32(&s.keys));
                w.add(format!("{p}.values"), &[s.m, d], Buffer::F32(&s.values));
                w.add(format!("{p}.row_steps"), &[s.m], Buffer::U32(&s.row_steps));
                let (rows, moments) = s.moments();
                let n = rows.len();
                w.add(format!("{p}.moment_rows"), &[n], Buffer::U32(rows));
                let shape = [n, BLOCKS * d];
                let name = format!("{p}.moments");
                match moments.pieces() {
                    MomentPieces::F32(v) => {
                        w.add_pieces(name, &shape, v.into_iter().map(Buffer::F32).collect())
                    }
                    MomentPieces::Bf16(v) => {
                        w.add_pieces(name, &shape, v.into_iter().map(Buffer::Bf16).collect())
                    }
                    MomentPieces::Q8 { codes, scales } => {
                        w.add_pieces(name, &shape, codes.into_iter().map(Buffer::U8).collect());
                        w.add_pieces(
                            format!("{p}.moment_scales"),
                            &[n, BLOCKS],
                            scales.into_iter().map(Buffer::F32).collect(),
                        );
                    }
                }
            }
        }
        let pos = self.batcher.position();
        w.meta.insert("step".into(), self.step.to_string());
        w.meta.insert("opt_step".into(), self.opt.step.to_string());
        w.meta.insert("epoch".into(), pos.epoch.to_string());
        w.meta.insert("index".into(), pos.index.to_string());
        let dir = self.run_dir.join("checkpoints");
        let path = w.save(&dir, self.step)?;
        checkpoint::prune(&dir, self.exp.train.keep_checkpoints)?;
        self.emit(Event::Checkpoint {
            step: self.step,
            path: path.display().to_string(),
        });
        Ok(())
    }

    /// Every trainable value is finite (device variables and host rows).
    fn parameters_finite(&self) -> Result<bool> {
        for (_, v) in &self.opt.vars {
            let s = v
                .as_tensor()
                .abs()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            if !s.is_finite() {
                return Ok(false);
            }
        }
        Ok(self.method.meft().is_none_or(|m| {
            use rayon::prelude::*;
            m.layers.iter().all(|l| {
                let finite = |v: &[f32]| {
                    v.par_chunks(1 << 16)
                        .all(|c| c.iter().all(|x| x.is_finite()))
                };
                finite(&l.store.keys) && finite(&l.store.values)
            })
        }))
    }

    /// Restore trainable tensors, optimizer state and data position. Every
    /// tensor's shape and dtype is checked against this run's config; host
    /// rows are read straight into the store.
    pub fn restore(&mut self, path: &Path) -> Result<u64> {
        let mut r = CheckpointReader::open(path)?;
        let dev = self.model.device.clone();
        for (i, (name, var)) in self.opt.vars.iter().enumerate() {
            let shape = var.dims().to_vec();
            var.set(&r.tensor(name, &shape, &dev)?.to_dtype(var.dtype())?)?;
            self.opt.m[i] = r.tensor(&format!("opt.m.{name}"), &shape, &dev)?;
            self.opt.v[i] = r.tensor(&format!("opt.v.{name}"), &shape, &dev)?;
        }
        self.opt.step = r.meta_u64("opt_step")?;
        if let Some(m) = self.method.meft_mut() {
            let d = m.shape.d;
            for l in &mut m.layers {
                let p = format!("meft.{}", l.layer);
                let s = &mut l.store;
                let m_rows = s.m;
                r.read_into(&format!("{p}.keys"), &[m_rows, d], &mut s.keys)?;
                r.read_into(&format!("{p}.values"), &[m_rows, d], &mut s.values)?;
                r.read_into(&format!("{p}.row_steps"), &[m_rows], &mut s.row_steps)?;
                let (_, rows) = r.read_vec::<u32>(&format!("{p}.moment_rows"), &[None])?;
                let n = rows.len();
                let name = format!("{p}.moments");
                let shape = [n, BLOCKS * d];
                // Read straight into the pages the store will keep.
                let mut moments = MomentRows::zeroed(s.moment_dtype(), d, s.m, n);
                match moments.pieces_mut() {
                    MomentPiecesMut::F32(mut v) => r.read_into_pieces(&name, &shape, &mut v)?,
                    MomentPiecesMut::Bf16(mut v) => r.read_into_pieces(&name, &shape, &mut v)?,
                    MomentPiecesMut::Q8 {
                        mut codes,
                        mut scales,
                    } => {
                        r.read_into_pieces(&name, &shape, &mut codes)?;
                        r.read_into_pieces(
                            &format!("{p}.moment_scales"),
                            &[n, BLOCKS],
                            &mut scales,
                        )?;
                    }
                }
                s.set_moments(rows, moments)
                    .with_context(|| format!("{}: {name}", path.display()))?;
            }
        }
        let step = r.meta_u64("step")?;
        let pos = Position {
            epoch: r.meta_u64("epoch")?,
            index: r.meta_u64("index")? as usize,
        };
        self.batcher = Batcher::resume(
            self.train.len(),
            self.exp.train.micro_batch,
            self.exp.train.seed,
            pos,
        )
        .with_context(|| format!("{}", path.display()))?;
        self.step = step;
        Ok(step)
    }
}

/// Before anything of the adapter is allocated: refuse a configuration whose
/// certain host memory (the MEFT store, and the moments of every row when
/// the host optimizer is dense) exceeds what the machine has free, naming
/// the knob; warn when the plan's worst case (moments for every row,
/// worst-case unions, activations) does. The base is already loaded, so it
/// is not counted again.
fn check_memory(exp: &Experiment, model: &Model) -> Result<Option<String>> {
    let mut input = crate::telemetry::PlanInput::new(exp, &model.config);
    input.base_dtype_bytes = model.dtype.size_in_bytes() as u64;
    let p = crate::telemetry::plan(&input)?;
    let Some(free) = crate::telemetry::available_memory() else {
        return Ok(None);
    };
    let h = |k: Category| p.host.get(&k).copied().unwrap_or(0);
    let dv = |k: Category| p.device.get(&k).copied().unwrap_or(0);
    let mut certain = h(Category::Store);
    if exp.method.meft.host_optimizer == "dense" {
        certain += h(Category::Moments);
    }
    if model.device.is_cpu() {
        // Trainable parameters and their AdamW moments exist from the start.
        certain += dv(Category::Trainable) + dv(Category::Optimizer);
    }
    let gib = |b: u64| crate::units::human_bytes(b);
    if certain > free {
        let knob = match exp.method.kind.as_str() {
            "meft" => "method.meft.neurons",
            "parallel" => "method.parallel.size",
            "lora" => "method.lora.rank",
            _ => "method.kind",
        };
        anyhow::bail!(
            "{knob}: the adapter's parameters and their state need {} of memory before the first step; {} is free",
            gib(certain),
            gib(free)
        );
    }
    let base = p.device.get(&Category::Base).copied().unwrap_or(0);
    let worst = p.host_total
        + if model.device.is_cpu() {
            p.device_total.saturating_sub(base)
        } else {
            0
        };
    Ok((worst > free).then(|| {
        format!(
            "warning: at worst (moments for every row, worst-case unions) this run needs {} beyond the base; {} is free: it may run out of memory (method.meft.moments = \"q8\" or a smaller batch needs less)",
            gib(worst),
            gib(free)
        )
    }))
}

pub fn device_of(spec: &str) -> Result<Device> {
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    if let Some(n) = spec.strip_prefix("cuda:") {
        let n: usize = n
            .parse()
            .with_context(|| format!("model.device: bad CUDA ordinal in {spec:?}"))?;
        if !cfg!(feature = "cuda") {
            anyhow::bail!("model.device: {spec} needs a build with `--features cuda`");
        }
        return Ok(Device::new_cuda(n)?);
    }
    anyhow::bail!("model.device: expected cpu or cuda:N, got {spec:?}")
}
