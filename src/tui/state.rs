//! The dashboard's state: a pure reducer over the [`Event`] stream. The live
//! trainer, a recorded `events.jsonl` and a test's synthetic stream all go
//! through [`DashboardState::apply`], so what the screen shows never depends
//! on where the events came from.

use crate::event::{
    EvalEvent, Event, HistogramEvent, LedgerEvent, RunInfo, StepEvent, Summary, TelemetrySample,
    Traffic,
};
use crate::tui::theme::Theme;
use std::collections::BTreeMap;

/// Weight of the newest step in the smoothed loss (≈ a 20-step window).
const EMA_ALPHA: f64 = 0.1;
/// Steps the tokens/s and ETA estimates average over.
const RATE_WINDOW: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// No `RunStarted` seen yet.
    #[default]
    Waiting,
    Running,
    Paused,
    Finished,
    /// Asked to stop before its last step; a checkpoint was written.
    Stopped,
    Failed,
    /// A recorded log that ends with no finish, stop or failure (the
    /// process was killed, or is still writing it).
    Unfinished,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::Finished => "finished",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
            Phase::Unfinished => "unfinished",
        }
    }
    /// A run the trainer may still be executing (quitting would abandon it).
    pub fn is_live(self) -> bool {
        matches!(self, Phase::Running | Phase::Paused)
    }
}

/// Something that happened in a run, for the Events pane.
#[derive(Debug, Clone, PartialEq)]
pub enum Happening {
    Started {
        resumed_from: Option<u64>,
    },
    /// An evaluation: of the test split, or of the validation rows
    /// (`validation`), their loss among the metrics.
    Eval {
        n: u64,
        metrics: BTreeMap<String, f64>,
        validation: bool,
    },
    /// One decoded example of an evaluation; `scores` is None in logs
    /// written before per-sample scores were recorded.
    Sample {
        prompt: String,
        answer: String,
        gold: String,
        scores: Option<BTreeMap<String, f64>>,
    },
    Checkpoint {
        path: String,
    },
    Paused,
    Resumed,
    /// A message from the trainer or the sampler.
    Warning(String),
    Stopped,
    Finished,
    Error(String),
}

/// A [`Happening`] and the step it happened at.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub step: u64,
    pub what: Happening,
}

/// One point of the loss history.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPoint {
    pub step: u64,
    pub loss: f64,
    pub ema: f64,
    /// Milliseconds of training up to and including this step.
    pub wall_ms: f64,
    pub tokens: u64,
    pub h2d: u64,
    pub d2h: u64,
}

/// What the planner predicted, pulled out of `RunInfo.plan`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Planned {
    /// Predicted device bytes by category (when the plan breaks them down).
    pub device: BTreeMap<String, u64>,
    pub device_total: Option<u64>,
    /// Bytes per step a dense offload of the same adapter would move.
    pub dense_offload: Option<u64>,
}

impl Planned {
    /// Read the fields the dashboard shows; anything missing stays unknown
    /// rather than becoming a zero.
    pub fn from_json(v: &serde_json::Value) -> Self {
        let mut p = Planned::default();
        match v.get("device") {
            Some(serde_json::Value::Object(m)) => {
                for (k, x) in m {
                    if let Some(n) = json_bytes(x) {
                        p.device.insert(k.clone(), n);
                    }
                }
            }
            Some(x) => p.device_total = json_bytes(x),
            None => {}
        }
        if let Some(t) = v.get("device_total").and_then(json_bytes) {
            p.device_total = Some(t);
        }
        if p.device_total.is_none() && !p.device.is_empty() {
            p.device_total = Some(p.device.values().sum());
        }
        p.dense_offload = v.get("dense_offload").and_then(|x| match x {
            serde_json::Value::Object(m) => {
                // A breakdown: prefer an explicit total, else add the directions.
                ["total", "bytes_per_step", "per_step"]
                    .iter()
                    .find_map(|k| m.get(*k).and_then(json_bytes))
                    .or_else(|| {
                        let s: u64 = m.values().filter_map(json_bytes).sum();
                        (s > 0).then_some(s)
                    })
            }
            other => json_bytes(other),
        });
        p
    }
}

fn json_bytes(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f.round() as u64)),
        _ => None,
    }
}

/// How the dashboard is being looked at; the reducer never touches this.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ViewOptions {
    pub theme: Theme,
    pub log_loss: bool,
    /// X axis of the loss chart: wall time instead of steps.
    pub wall_time_axis: bool,
    /// Index into [`DashboardState::layers`] of the layer the Activations pane shows.
    pub layer_index: usize,
    /// The Events pane instead of the pane grid.
    pub events: bool,
    /// Lines the Events pane is scrolled back from its newest line.
    pub events_scroll: usize,
    /// A one-line note for the status bar (e.g. where a screenshot went).
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DashboardState {
    pub info: Option<RunInfo>,
    pub planned: Planned,
    pub phase: Phase,
    pub steps: Vec<StepPoint>,
    pub last_step: Option<StepEvent>,
    pub telemetry: Option<TelemetrySample>,
    /// Latest histogram per adapter layer.
    pub histograms: BTreeMap<u32, HistogramEvent>,
    pub ledger: Option<LedgerEvent>,
    pub peak_device_ledger: u64,
    pub evals: Vec<EvalEvent>,
    pub last_checkpoint: Option<(u64, String)>,
    pub last_message: Option<String>,
    pub summary: Option<Summary>,
    pub failure: Option<(u64, String)>,
    /// Evaluations, samples, checkpoints, warnings and errors, oldest first.
    pub log: Vec<LogEntry>,
    pub events_seen: u64,
    pub view: ViewOptions,
}

impl DashboardState {
    pub fn new(view: ViewOptions) -> Self {
        Self {
            view,
            ..Self::default()
        }
    }

    /// Fold one event into the state. Pure: no clock, no I/O.
    pub fn apply(&mut self, ev: &Event) {
        self.events_seen += 1;
        let step = self.step();
        match ev {
            Event::RunStarted { info, .. } => {
                self.planned = info
                    .plan
                    .as_ref()
                    .map(Planned::from_json)
                    .unwrap_or_default();
                self.info = Some(info.clone());
                self.phase = Phase::Running;
                self.summary = None;
                self.failure = None;
                let at = info.resumed_from.unwrap_or(step);
                self.note(
                    at,
                    Happening::Started {
                        resumed_from: info.resumed_from,
                    },
                );
            }
            Event::Step(s) => self.apply_step(s),
            Event::Telemetry(t) => self.telemetry = Some(t.clone()),
            Event::Histogram(h) => {
                self.histograms.insert(h.layer, h.clone());
            }
            Event::Ledger(l) => {
                let total: u64 = l.device.values().sum();
                self.peak_device_ledger = self.peak_device_ledger.max(total);
                self.ledger = Some(l.clone());
            }
            Event::Eval(e) => {
                self.evals.push(e.clone());
                self.note(
                    e.step,
                    Happening::Eval {
                        n: e.n,
                        metrics: e
                            .loss
                            .map(|l| ("loss".to_string(), l))
                            .into_iter()
                            .chain(e.metrics.clone())
                            .collect(),
                        validation: e.split == crate::event::EvalSplit::Validation,
                    },
                );
                for (i, (prompt, answer, gold)) in e.samples.iter().enumerate() {
                    self.note(
                        e.step,
                        Happening::Sample {
                            prompt: prompt.clone(),
                            answer: answer.clone(),
                            gold: gold.clone(),
                            scores: e.sample_scores.get(i).cloned(),
                        },
                    );
                }
            }
            Event::Checkpoint { step, path } => {
                self.last_checkpoint = Some((*step, path.clone()));
                self.note(*step, Happening::Checkpoint { path: path.clone() });
            }
            Event::Paused { step } => {
                if self.phase.is_live() || self.phase == Phase::Waiting {
                    self.phase = Phase::Paused;
                }
                self.note(*step, Happening::Paused);
            }
            Event::Resumed { step } => {
                if self.phase.is_live() || self.phase == Phase::Waiting {
                    self.phase = Phase::Running;
                }
                self.note(*step, Happening::Resumed);
            }
            Event::Message { text } => {
                self.last_message = Some(text.clone());
                self.note(step, Happening::Warning(text.clone()));
            }
            Event::Stopped { step } => {
                self.phase = Phase::Stopped;
                self.last_message = None;
                self.note(*step, Happening::Stopped);
            }
            Event::Finished { summary } => {
                self.summary = Some(summary.clone());
                // A stopped run still ends with its summary; it stays stopped.
                if self.phase != Phase::Stopped {
                    self.phase = Phase::Finished;
                    self.note(step, Happening::Finished);
                }
            }
            Event::Failed { step, error } => {
                self.failure = Some((*step, error.clone()));
                self.phase = Phase::Failed;
                self.note(*step, Happening::Error(error.clone()));
            }
            Event::Diverged { step, what } => {
                let text = format!("diverged: {what}; the last finite checkpoint is kept");
                self.failure = Some((*step, text.clone()));
                self.phase = Phase::Failed;
                self.note(*step, Happening::Error(text));
            }
        }
    }

    fn note(&mut self, step: u64, what: Happening) {
        self.log.push(LogEntry { step, what });
    }

    /// A recorded log has been read to its end: a run that never said it
    /// finished, stopped or failed is not running any more as far as the
    /// record goes, so it must not read as running.
    pub fn end_of_record(&mut self) {
        if self.phase.is_live() {
            self.phase = Phase::Unfinished;
        }
    }

    fn apply_step(&mut self, s: &StepEvent) {
        if self.phase == Phase::Waiting {
            self.phase = Phase::Running;
        }
        let prev = self.steps.last();
        let ema = match prev {
            Some(p) if s.loss.is_finite() => EMA_ALPHA * s.loss + (1.0 - EMA_ALPHA) * p.ema,
            Some(p) => p.ema,
            None => s.loss,
        };
        let wall_ms = prev.map_or(0.0, |p| p.wall_ms) + s.wall_ms.max(0.0);
        self.steps.push(StepPoint {
            step: s.step,
            loss: s.loss,
            ema,
            wall_ms,
            tokens: s.tokens,
            h2d: s.traffic.h2d(),
            d2h: s.traffic.d2h(),
        });
        self.last_step = Some(s.clone());
    }

    pub fn step(&self) -> u64 {
        self.last_step.as_ref().map_or(0, |s| s.step)
    }

    pub fn total_steps(&self) -> u64 {
        self.last_step
            .as_ref()
            .map(|s| s.total_steps)
            .filter(|&t| t > 0)
            .or_else(|| self.info.as_ref().map(|i| i.total_steps))
            .unwrap_or(0)
    }

    fn recent(&self) -> &[StepPoint] {
        let n = self.steps.len();
        &self.steps[n.saturating_sub(RATE_WINDOW)..]
    }

    /// Tokens per second over the last few steps.
    pub fn tokens_per_s(&self) -> Option<f64> {
        let r = self.recent();
        let first_wall = r.first().map(|p| p.wall_ms)?;
        let last_wall = r.last().map(|p| p.wall_ms)?;
        // The first point's wall time is the end of that step, so the window
        // spans its successors only; a single step uses its own duration.
        let (tokens, ms) = if r.len() >= 2 {
            (
                r[1..].iter().map(|p| p.tokens).sum::<u64>(),
                last_wall - first_wall,
            )
        } else {
            let s = self.last_step.as_ref()?;
            (s.tokens, s.wall_ms)
        };
        (ms > 0.0).then(|| tokens as f64 / (ms / 1000.0))
    }

    /// Seconds left at the recent pace.
    pub fn eta_s(&self) -> Option<f64> {
        let r = self.recent();
        if r.len() < 2 {
            return None;
        }
        let first = r.first()?;
        let last = r.last()?;
        let steps = last.step.saturating_sub(first.step);
        if steps == 0 {
            return None;
        }
        let per_step = (last.wall_ms - first.wall_ms) / steps as f64 / 1000.0;
        let left = self.total_steps().saturating_sub(last.step);
        Some(per_step * left as f64)
    }

    /// Adapter layers known from histograms or from the per-layer union sizes.
    pub fn layers(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.histograms.keys().copied().collect();
        if v.is_empty() {
            if let Some(s) = &self.last_step {
                v = (0..s.union_sizes.len() as u32).collect();
            }
        }
        v
    }

    /// The layer the Activations pane shows, if any is known.
    pub fn selected_layer(&self) -> Option<u32> {
        let layers = self.layers();
        let i = self.view.layer_index.min(layers.len().saturating_sub(1));
        layers.get(i).copied()
    }

    pub fn last_traffic(&self) -> Option<&Traffic> {
        self.last_step.as_ref().map(|s| &s.traffic)
    }

    /// MEFT's headline ratio for a layer: β = |U| / picks.
    pub fn beta(&self, layer: usize) -> Option<f64> {
        let s = self.last_step.as_ref()?;
        let u = *s.union_sizes.get(layer)?;
        let p = *s.picks.get(layer)?;
        (p > 0).then(|| u as f64 / p as f64)
    }
}

/// The dashboard is a sink like the log and the printer: it folds each
/// event into its state.
impl crate::event::Sink for DashboardState {
    fn handle(&mut self, ev: &Event) -> anyhow::Result<()> {
        self.apply(ev);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::fixtures;

    #[test]
    fn reducer_tracks_the_run() {
        let mut s = DashboardState::default();
        for e in fixtures::run_events(30, true) {
            s.apply(&e);
        }
        assert_eq!(s.phase, Phase::Finished);
        assert_eq!(s.steps.len(), 30);
        assert_eq!(s.step(), 30);
        // Plan JSON fields reach the state.
        assert_eq!(s.planned.device_total, Some(fixtures::PLANNED_DEVICE));
        assert_eq!(s.planned.dense_offload, Some(fixtures::DENSE_OFFLOAD));
        // Smoothed loss lags a falling raw loss.
        let last = s.steps.last().map(|p| (p.loss, p.ema)).unwrap_or_default();
        assert!(last.1 > last.0);
        assert_eq!(s.last_checkpoint.as_ref().map(|c| c.0), Some(20));
    }

    #[test]
    fn paused_then_resumed() {
        let mut s = DashboardState::default();
        let evs = fixtures::run_events(5, false);
        for e in &evs {
            s.apply(e);
        }
        s.apply(&Event::Paused { step: 5 });
        assert_eq!(s.phase, Phase::Paused);
        s.apply(&Event::Resumed { step: 5 });
        assert_eq!(s.phase, Phase::Running);
    }

    #[test]
    fn rates_from_wall_time() {
        let mut s = DashboardState::default();
        for e in fixtures::run_events(10, false) {
            s.apply(&e);
        }
        // Fixture steps take 250 ms and carry 512 tokens each → 2048 tok/s.
        let tps = s.tokens_per_s().unwrap_or_default();
        assert!((tps - 2048.0).abs() < 1e-6, "{tps}");
        // 10 of 30 done at 0.25 s/step → 5 s left.
        let eta = s.eta_s().unwrap_or_default();
        assert!((eta - 5.0).abs() < 1e-6, "{eta}");
    }
}
