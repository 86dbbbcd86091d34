//! The loop: micro-batches, gradient accumulation, clipping over device and
//! host parameters, optimizer steps, control messages, evaluation,
//! checkpoints — reporting everything as events. What a method keeps, and
//! how it saves it, is the method's; the run's accounting is [`Tally`]'s.

use super::ledger::{check_memory, device_ledger, plan_at, predicted};
use super::method::Method;
use super::step::{optimizer_step, StepAt};
use super::tally::Tally;
use super::Control;
use crate::checkpoint::{CheckpointReader, CheckpointWriter};
use crate::config::Experiment;
use crate::data::batch::{Batch, Batcher, Encoded, Position};
use crate::data::spec::{encode_all, load_splits};
use crate::data::Example;
use crate::event::*;
use crate::model::{LoadedModel, Model};
use crate::optim::{AdamWConfig, DeviceAdamW};
use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::Instant;

fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}

pub struct Trainer {
    pub exp: Experiment,
    pub model: Model,
    pub tokenizer: crate::model::Tokenizer,
    pub method: Method,
    pub opt: DeviceAdamW,
    pub train: Vec<Encoded>,
    pub test: Vec<Example>,
    /// The validation rows, as records (for task metrics) and encoded as
    /// training encodes them (for their loss).
    pub validation: Vec<Example>,
    pub validation_rows: Vec<Encoded>,
    pub batcher: Batcher,
    pub step: u64,
    pub total: u64,
    pub run_dir: PathBuf,
    pub tally: Tally,
    events: Sender<Event>,
    control: Receiver<Control>,
    /// Said once at the start (records the cut-off shortens, memory the
    /// plan may need beyond what is free).
    warnings: Vec<String>,
    /// The device's used memory, measured, on a GPU with a driver.
    device_used: Option<crate::telemetry::nvml::DeviceUsed>,
    /// What the schedule's learning rate is multiplied by (`+`/`-` while
    /// training; kept in checkpoints).
    pub lr_scale: f64,
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
        let splits = load_splits(&exp)?;
        let train = encode_all(&exp, &splits.train, &tokenizer, Some(&splits.train_path))?;
        let validation_rows = encode_all(
            &exp,
            &splits.validation,
            &tokenizer,
            splits.validation_path.as_deref(),
        )?;
        let (test, validation) = (splits.test, splits.validation);
        let memory_warning = check_memory(&exp, &model)?;
        let (method, vars) = Method::build(&exp, &mut model)?;
        let cfg = AdamWConfig {
            weight_decay: exp.train.weight_decay,
            ..AdamWConfig::default()
        };
        let opt = DeviceAdamW::new(vars, cfg)?;
        let batcher = Batcher::new(train.len(), exp.train.micro_batch, exp.train.seed)?;
        let total = exp.total_steps(train.len());
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
        // A row whose targets all fall past the cut-off teaches nothing.
        let untrained = train.iter().filter(|e| !e.loss_mask.contains(&1)).count();
        anyhow::ensure!(
            untrained < train.len(),
            "train.cutoff_len: no training row keeps a target token within its first {} tokens; raise it (meft data check --model shows the lengths)",
            exp.train.cutoff_len
        );
        let untrained_warning = (untrained > 0).then(|| {
            format!(
                "warning: {untrained} of {} training records have no target token within train.cutoff_len = {}: they teach nothing",
                train.len(),
                exp.train.cutoff_len
            )
        });
        let device_used = crate::telemetry::nvml::DeviceUsed::open(&model.device);
        Ok(Self {
            device_used,
            lr_scale: 1.0,
            exp,
            model,
            tokenizer,
            method,
            opt,
            train,
            test,
            validation,
            validation_rows,
            batcher,
            step: 0,
            total,
            run_dir: run_dir.to_path_buf(),
            tally: Tally::default(),
            events,
            control,
            warnings: cutoff_warning
                .into_iter()
                .chain(untrained_warning)
                .chain(memory_warning)
                .collect(),
        })
    }

    fn emit(&self, ev: Event) {
        let _ = self.events.send(ev);
    }

    pub fn run_info(&self, resumed_from: Option<u64>) -> Result<RunInfo> {
        Ok(RunInfo {
            run_id: self
                .run_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            config_toml: self.exp.to_toml()?,
            name: self.exp.name.clone(),
            method: self.exp.method.kind.to_string(),
            model: self.exp.model.reference.clone(),
            device: self.exp.model.device.clone(),
            total_steps: self.total,
            base_params: self.model.config.param_count() as u64,
            trainable_params: self.opt.param_count() as u64 + self.method.host_params(),
            adapter: Method::describe(&self.exp),
            plan: self.plan(false).and_then(|p| serde_json::to_value(p).ok()),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            resumed_from,
            machine: crate::telemetry::machine(),
            meft_version: Some(crate::VERSION.into()),
            source: Some(crate::SOURCE_HASH.into()),
        })
    }

    /// Device memory by category at this step's shape and unions.
    pub fn device_ledger(&self) -> Ledger {
        let t = &self.tally;
        let unions = (!t.step_unions.is_empty()).then_some(t.step_unions.as_slice());
        let planned = plan_at(
            &self.exp,
            &self.model,
            unions,
            t.micro_shape,
            None,
            t.row_cache.hit_rate(),
        );
        device_ledger(planned, &self.model, &self.opt.vars)
    }

    /// The planner's prediction for this run: the config's worst case, or
    /// (`measured`) at the unions, batch shape and touched rows measured so
    /// far.
    pub fn plan(&self, measured: bool) -> Option<crate::telemetry::Plan> {
        if !measured {
            return plan_at(&self.exp, &self.model, None, None, None, None);
        }
        let accum = (self.exp.train.batch / self.exp.train.micro_batch) as u64;
        let unions = self.tally.mean_unions(accum);
        plan_at(
            &self.exp,
            &self.model,
            unions.as_deref(),
            self.tally.micro_shape,
            self.method.moment_rows(),
            self.tally.row_cache.hit_rate(),
        )
    }

    /// Wait while paused; returns false when asked to stop.
    fn handle_control(&mut self) -> Result<bool> {
        loop {
            let msg = match self.control.try_recv() {
                Ok(m) => m,
                // No message, or the controller went away (a headless run):
                // keep training.
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return Ok(true),
            };
            match msg {
                Control::Pause => {
                    self.emit(Event::Paused { step: self.step });
                    loop {
                        match self.control.recv() {
                            Ok(Control::Resume) => break,
                            Ok(Control::Stop) | Err(_) => return Ok(false),
                            Ok(other) => self.act(other)?,
                        }
                    }
                    self.emit(Event::Resumed { step: self.step });
                }
                Control::Stop => return Ok(false),
                other => self.act(other)?,
            }
        }
    }

    /// A control message that does not change whether the loop runs.
    fn act(&mut self, c: Control) -> Result<()> {
        match c {
            Control::Checkpoint => self.checkpoint(),
            Control::EvalNow => self.evaluate(),
            Control::ScaleLr { up } => {
                self.lr_scale *= if up { 2.0 } else { 0.5 };
                self.emit(Event::Message {
                    text: format!(
                        "learning rate {} from step {}: {} × the schedule's",
                        if up { "× 2" } else { "÷ 2" },
                        self.step + 1,
                        self.lr_scale
                    ),
                });
                Ok(())
            }
            Control::Pause | Control::Resume | Control::Stop => Ok(()),
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
            let every = self.exp.train.eval_every as u64;
            if every > 0 && self.step.is_multiple_of(every) {
                self.validate()?;
            }
            let every = self.exp.train.checkpoint_every as u64;
            if every > 0 && self.step.is_multiple_of(every) && self.step < self.total {
                self.checkpoint()?;
            }
        }
        self.tally.note_rss("train");
        self.checkpoint()?;
        self.tally.note_rss("checkpoint");
        if stopped {
            self.emit(Event::Stopped { step: self.step });
        } else if self.exp.eval.test {
            self.evaluate()?;
            self.tally.note_rss("eval");
        }
        let summary = self.summary();
        let text = serde_json::to_string_pretty(&summary)?;
        crate::fsx::write_atomic(&self.run_dir.join("summary.json"), text.as_bytes())?;
        self.emit(Event::Finished {
            summary: summary.clone(),
        });
        Ok(summary)
    }

    pub fn summary(&self) -> Summary {
        let cpu = self.model.device.is_cpu();
        let predicted = match self.tally.steps {
            0 => Default::default(),
            _ => self
                .plan(true)
                .map(|p| predicted(&p, cpu))
                .unwrap_or_default(),
        };
        self.tally.summary(self.step, predicted)
    }

    /// One optimizer step over `batch / micro_batch` micro-batches (the
    /// one [`super::step::optimizer_step`] every run and `meft bench` take),
    /// then its accounting: ledgers, events, histograms.
    pub fn train_step(&mut self) -> Result<()> {
        let t0 = Instant::now();
        let heap_before = crate::telemetry::heap::live();
        crate::telemetry::heap::reset_peak();
        let at = StepAt {
            step: self.step,
            total: self.total,
            lr_scale: self.lr_scale,
        };
        let (batcher, train, pad) = (&mut self.batcher, &self.train, self.tokenizer.pad_id);
        let mut next_batch = || {
            let rows: Vec<Encoded> = batcher
                .next_batch()
                .iter()
                .map(|&i| train[i].clone())
                .collect();
            Batch::left_padded(&rows, pad)
        };
        let device_used = self.device_used.as_ref();
        let out = optimizer_step(
            &self.exp,
            &self.model,
            &mut self.method,
            &mut self.opt,
            at,
            &mut next_batch,
            &|| device_used.and_then(|d| d.used()),
            true,
        )?;
        self.tally.micro_shape = Some(out.micro_shape);
        if let Some(text) = self.tally.watch_gradient_norm(out.grad_norm, self.step + 1) {
            self.emit(Event::Message { text });
        }
        self.tally.accumulator_bytes = out.accumulator_bytes;
        self.step += 1;
        let wall = t0.elapsed().as_secs_f64();
        let heap = HeapReading {
            before: heap_before,
            peak: crate::telemetry::heap::peak(),
        };
        let (stats, device_used) = (out.stats, out.device_used);
        self.tally.step_unions = stats.peak_unions;
        let pos = self.batcher.position();
        let step = StepEvent {
            step: self.step,
            total_steps: self.total,
            epoch: pos.epoch as f64 + pos.index as f64 / self.train.len().max(1) as f64,
            loss: out.loss,
            lr: out.lr,
            grad_norm: out.grad_norm,
            tokens: out.tokens,
            wall_ms: wall * 1e3,
            traffic: stats.traffic,
            union_sizes: stats.unions,
            picks: stats.picks,
            rows_updated: out.rows_updated,
            row_cache: stats.row_cache,
        };
        self.tally.add_step(&step);
        self.emit(Event::Step(step));
        let device = self.device_ledger();
        let host = self.method.host_ledger(self.tally.accumulator_bytes);
        self.tally.add_ledgers(&device, &host, &heap);
        self.tally.peak_device_used = self.tally.peak_device_used.max(device_used);
        self.emit(Event::Ledger(LedgerEvent {
            step: self.step,
            device,
            host,
            heap: Some(heap),
            device_used,
        }));
        if self.step.is_multiple_of(5) || self.step == 1 || self.step == self.total {
            for h in self.method.histograms(self.step) {
                self.emit(Event::Histogram(h));
            }
        }
        Ok(())
    }

    /// Decode the test split (up to `eval.limit`) and score it.
    pub fn evaluate(&mut self) -> Result<()> {
        self.method.settle()?;
        let ev = super::evaluation::evaluate(
            &self.exp,
            &self.model,
            &self.tokenizer,
            &mut self.method,
            &self.test,
            self.step,
        )?;
        if let Some(ev) = ev {
            self.tally.metrics = ev.metrics.clone();
            self.emit(Event::Eval(ev));
        }
        Ok(())
    }

    /// Score the validation rows: their loss, and with `eval.limit` the
    /// task's metrics on the first `eval.limit` of them. The test split is
    /// not touched.
    pub fn validate(&mut self) -> Result<()> {
        if self.validation_rows.is_empty() {
            return Ok(());
        }
        self.method.settle()?;
        let loss = super::evaluation::heldout_loss(
            &self.model,
            &mut self.method,
            &self.validation_rows,
            self.exp.train.micro_batch,
            self.tokenizer.pad_id,
        )?;
        let scored = match self.exp.eval.limit > 0 && !self.exp.data.task.metrics().is_empty() {
            true => super::evaluation::evaluate(
                &self.exp,
                &self.model,
                &self.tokenizer,
                &mut self.method,
                &self.validation,
                self.step,
            )?,
            false => None,
        };
        let mut ev = scored.unwrap_or(EvalEvent {
            step: self.step,
            n: self.validation.len() as u64,
            split: EvalSplit::Validation,
            loss: None,
            metrics: Default::default(),
            samples: Vec::new(),
            sample_scores: Vec::new(),
            row_scores: Default::default(),
        });
        ev.split = EvalSplit::Validation;
        ev.loss = loss;
        if let Some(l) = loss {
            self.tally.validation_loss.push((self.step, l));
        }
        self.emit(Event::Eval(ev));
        Ok(())
    }

    /// Write every trainable tensor, the optimizers' state and the data
    /// position. Host stores are streamed from their buffers, so a
    /// checkpoint costs no second copy of the store in memory.
    pub fn checkpoint(&mut self) -> Result<()> {
        // A checkpoint is only ever a finite state, so the newest one on disk
        // is always one a diverged run can go back to.
        self.method.settle()?;
        if !self.parameters_finite()? {
            return Err(super::Diverged {
                step: self.step,
                what: "the last update left non-finite parameters".into(),
            }
            .into());
        }
        let mut w = CheckpointWriter::new();
        self.opt.save(&mut w)?;
        self.method.save(&mut w)?;
        let pos = self.batcher.position();
        w.meta.insert("step".into(), self.step.to_string());
        w.meta.insert("epoch".into(), pos.epoch.to_string());
        w.meta.insert("index".into(), pos.index.to_string());
        w.meta.insert("lr_scale".into(), self.lr_scale.to_string());
        let dir = self.run_dir.join("checkpoints");
        let path = w.save(&dir, self.step)?;
        crate::checkpoint::prune(&dir, self.exp.train.keep_checkpoints)?;
        self.emit(Event::Checkpoint {
            step: self.step,
            path: path.display().to_string(),
        });
        Ok(())
    }

    /// Every trainable value is finite (device variables and host rows).
    fn parameters_finite(&self) -> Result<bool> {
        for (_, v) in &self.opt.vars {
            if !scalar(&v.as_tensor().abs()?.sum_all()?)?.is_finite() {
                return Ok(false);
            }
        }
        Ok(self.method.host_finite())
    }

    /// Restore trainable tensors, optimizer state and data position. Every
    /// tensor's shape and dtype is checked against this run's config; host
    /// rows are read straight into the store.
    pub fn restore(&mut self, path: &Path) -> Result<u64> {
        let mut r = CheckpointReader::open(path)?;
        self.opt.restore(&mut r)?;
        self.method.restore(&mut r)?;
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
        // Checkpoints from before the learning rate could be scaled have none.
        self.lr_scale = match r.meta.get("lr_scale") {
            Some(v) => v
                .parse()
                .with_context(|| format!("{}: lr_scale {v:?}", path.display()))?,
            None => 1.0,
        };
        self.step = step;
        Ok(step)
    }
}
