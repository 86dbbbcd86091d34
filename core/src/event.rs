//! The ground floor: the one contract of a run. Everything that happens is
//! an [`Event`]. Sources (the trainer, the telemetry sampler, a recorded
//! `events.jsonl`) and sinks (the TUI, the run-directory writer, the
//! headless printer) only ever meet here, through [`Sink`]; every other
//! room may depend on this one and this one on none of them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bumped whenever a field changes meaning; readers reject newer versions.
pub const EVENT_VERSION: u32 = 1;

/// What crosses between host memory and the compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Host → device: gathered key/value rows (|U|·2d f32).
    Rows,
    /// Host → device: union row ids (|U| u32).
    Ids,
    /// Host → device: per-token map into the union (N·K u32).
    Map,
    /// Device → host: queries (N·d f32).
    Queries,
    /// Device → host: probed expert ids and their gate values (N·P u32 + N·P f32).
    Routing,
    /// Device → host: row gradients (|U|·2d f32).
    Grads,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Rows,
        Kind::Ids,
        Kind::Map,
        Kind::Queries,
        Kind::Routing,
        Kind::Grads,
    ];

    /// True for the kinds that go host → device.
    pub fn to_device(self) -> bool {
        matches!(self, Kind::Rows | Kind::Ids | Kind::Map)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Rows => "rows",
            Kind::Ids => "ids",
            Kind::Map => "map",
            Kind::Queries => "queries",
            Kind::Routing => "routing",
            Kind::Grads => "grads",
        }
    }
}

/// Bytes that crossed between host and device, indexed by [`Kind`]. In
/// `events.jsonl` it is an object with one field per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traffic([u64; 6]);

impl std::ops::Index<Kind> for Traffic {
    type Output = u64;
    fn index(&self, k: Kind) -> &u64 {
        &self.0[k as usize]
    }
}

impl std::ops::IndexMut<Kind> for Traffic {
    fn index_mut(&mut self, k: Kind) -> &mut u64 {
        &mut self.0[k as usize]
    }
}

impl Traffic {
    /// Traffic of the given bytes by kind (the rest 0).
    pub fn of(parts: &[(Kind, u64)]) -> Self {
        let mut t = Traffic::default();
        for &(k, b) in parts {
            t[k] += b;
        }
        t
    }

    /// Bytes of the kinds in one direction.
    fn sum(&self, to_device: bool) -> u64 {
        Kind::ALL
            .iter()
            .filter(|k| k.to_device() == to_device)
            .map(|&k| self[k])
            .sum()
    }

    pub fn h2d(&self) -> u64 {
        self.sum(true)
    }

    pub fn d2h(&self) -> u64 {
        self.sum(false)
    }

    pub fn add(&mut self, o: &Traffic) {
        for k in Kind::ALL {
            self[k] += o[k];
        }
    }

    /// The kinds in one direction with their bytes, in [`Kind::ALL`] order.
    pub fn by_kind(&self, to_device: bool) -> Vec<(Kind, u64)> {
        Kind::ALL
            .iter()
            .filter(|k| k.to_device() == to_device)
            .map(|&k| (k, self[k]))
            .collect()
    }
}

impl Serialize for Traffic {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(Kind::ALL.len()))?;
        for k in Kind::ALL {
            m.serialize_entry(&k, &self[k])?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Traffic {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = BTreeMap::<Kind, u64>::deserialize(d)?;
        let mut t = Traffic::default();
        for (k, v) in m {
            t[k] = v;
        }
        Ok(t)
    }
}

/// A category of memory in a ledger, on the device or the host. Planner and
/// trainer use the same categories, so a prediction and a measurement can be
/// read line by line; the declaration order is the order they are shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Category {
    /// Device: base-model weights at the base dtype.
    #[serde(rename = "base")]
    Base,
    /// Device: trainable parameters that live on the device (f32).
    #[serde(rename = "trainable")]
    Trainable,
    /// Device: their gradients.
    #[serde(rename = "grads")]
    Grads,
    /// Device: their AdamW moments.
    #[serde(rename = "optimizer")]
    Optimizer,
    /// Device: MEFT rows gathered from the host (and, on the composed path,
    /// their gradients).
    #[serde(rename = "rows")]
    Rows,
    /// Device: what the adapter keeps for its backward pass besides rows.
    #[serde(rename = "adapter act")]
    AdapterActivations,
    /// Device: what the base's forward pass keeps for the backward pass.
    #[serde(rename = "activations")]
    Activations,
    /// Device: the backward pass's working set at its fullest, beyond what
    /// the gradients take by its end (so the categories add up to the peak).
    #[serde(rename = "backward")]
    Backward,
    /// Host: the MEFT key and value rows.
    #[serde(rename = "store")]
    Store,
    /// Host: AdamW moments of the store.
    #[serde(rename = "moments")]
    Moments,
    /// Host: per-row gradient accumulators between optimizer steps.
    #[serde(rename = "accumulators")]
    Accumulators,
}

impl Category {
    pub const DEVICE: [Category; 8] = [
        Category::Base,
        Category::Trainable,
        Category::Grads,
        Category::Optimizer,
        Category::Rows,
        Category::AdapterActivations,
        Category::Activations,
        Category::Backward,
    ];
    pub const HOST: [Category; 3] = [Category::Store, Category::Moments, Category::Accumulators];

    pub fn name(self) -> &'static str {
        match self {
            Category::Base => "base",
            Category::Trainable => "trainable",
            Category::Grads => "grads",
            Category::Optimizer => "optimizer",
            Category::Rows => "rows",
            Category::AdapterActivations => "adapter act",
            Category::Activations => "activations",
            Category::Backward => "backward",
            Category::Store => "store",
            Category::Moments => "moments",
            Category::Accumulators => "accumulators",
        }
    }

    /// Whether a run's ledger measures this category from the buffers and
    /// tensors that exist, rather than computing it with the planner's
    /// formulas at the run's measured shape and unions.
    pub fn measured_in_run(self) -> bool {
        matches!(
            self,
            Category::Base
                | Category::Trainable
                | Category::Store
                | Category::Moments
                | Category::Accumulators
        )
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Bytes by category; iterates in [`Category`] order.
pub type Ledger = BTreeMap<Category, u64>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEvent {
    pub step: u64,
    pub total_steps: u64,
    pub epoch: f64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Tokens (non-padding) in this step's batch.
    pub tokens: u64,
    pub wall_ms: f64,
    pub traffic: Traffic,
    /// |U| per adapter layer (empty for non-MEFT methods).
    pub union_sizes: Vec<u64>,
    /// N·K per adapter layer, so β = |U| / (N·K) can be derived.
    pub picks: Vec<u64>,
    /// Rows the host optimizer updated this step.
    pub rows_updated: u64,
    /// The device row cache's hits and misses over the step's micro-batches
    /// and adapter layers (absent when the cache is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_cache: Option<CacheCounts>,
}

/// Union rows served from the device row cache (hits) and union rows that
/// crossed from the host (misses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheCounts {
    pub hits: u64,
    pub misses: u64,
}

impl CacheCounts {
    pub fn add(&mut self, o: CacheCounts) {
        self.hits += o.hits;
        self.misses += o.misses;
    }

    /// hits / (hits + misses), when anything was looked up.
    pub fn hit_rate(&self) -> Option<f64> {
        let all = self.hits + self.misses;
        (all > 0).then(|| self.hits as f64 / all as f64)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSample {
    pub index: u32,
    pub name: String,
    pub mem_used: u64,
    pub mem_total: u64,
    pub util_pct: Option<f64>,
    /// PCIe throughput, bytes per second, when the driver reports it.
    pub pcie_tx: Option<u64>,
    pub pcie_rx: Option<u64>,
    pub pcie_gen: Option<u32>,
    pub pcie_width: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySample {
    /// Milliseconds since the run started.
    pub t_ms: u64,
    pub rss: u64,
    pub sys_used: u64,
    pub sys_total: u64,
    pub cpu_process_pct: f64,
    pub cpu_system_pct: f64,
    pub cores: u32,
    pub gpus: Vec<GpuSample>,
    /// Why there are no GPU readings (e.g. "no NVIDIA driver: …"); None when NVML answered.
    pub gpu_unavailable: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramEvent {
    pub step: u64,
    pub layer: u32,
    /// Steps the window covers.
    pub window: u32,
    /// Pick counts per neuron, sorted hot → cold and averaged into bins.
    pub picks_sorted: Vec<f32>,
    /// Neurons picked at least once in the window.
    pub distinct: u64,
    pub neurons: u64,
    /// Histogram of kept activation values a_tj over [lo, hi].
    pub act_bins: Vec<u32>,
    pub act_lo: f32,
    pub act_hi: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEvent {
    pub step: u64,
    /// Bytes resident on the compute device by category.
    pub device: Ledger,
    /// Bytes in host memory owned by the run, by category.
    pub host: Ledger,
    /// The process's heap around this step, counted by the allocator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heap: Option<HeapReading>,
    /// The compute device's used memory, measured (NVML, the whole GPU),
    /// at its most after this step's backward passes; absent on the CPU
    /// or without a driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_used: Option<u64>,
}

/// The process's Rust heap (every allocation through the global allocator),
/// measured: on the CPU it holds the device's tensors too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HeapReading {
    /// Live bytes when the step began.
    pub before: u64,
    /// The most the heap held at any moment of the step.
    pub peak: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalEvent {
    pub step: u64,
    pub n: u64,
    /// Which rows were scored: the test split (at the end, or on demand) or
    /// the validation rows (every `train.eval_every` steps).
    #[serde(default, skip_serializing_if = "EvalSplit::is_test")]
    pub split: EvalSplit,
    /// The mean loss over the scored rows' target tokens (validation, and
    /// raw text's held-out test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    pub metrics: BTreeMap<String, f64>,
    /// A few (question, prediction, gold) triples to show.
    pub samples: Vec<(String, String, String)>,
    /// Each sample's score by metric, in the order of `samples` (absent
    /// from logs written before scores were recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample_scores: Vec<BTreeMap<String, f64>>,
    /// Every scored row's score by metric, in row order (what a bootstrap
    /// over questions resamples); absent from older logs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub row_scores: BTreeMap<String, Vec<f64>>,
}

/// The rows an evaluation scored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalSplit {
    #[default]
    Test,
    Validation,
}

impl EvalSplit {
    pub fn is_test(&self) -> bool {
        *self == EvalSplit::Test
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub run_id: String,
    /// The resolved experiment config, as TOML text.
    pub config_toml: String,
    pub name: String,
    pub method: String,
    pub model: String,
    pub device: String,
    pub total_steps: u64,
    pub base_params: u64,
    pub trainable_params: u64,
    /// One-line description of the adapter ("MEFT M 4096 K 32 E 256 P 8").
    pub adapter: String,
    pub plan: Option<serde_json::Value>,
    pub started_unix: u64,
    pub resumed_from: Option<u64>,
    /// The machine the run trains on: host name, CPU model and cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// The meft version and the hash of the source tree that trained it
    /// ([`crate::SOURCE_HASH`]); absent from logs written before either was
    /// recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meft_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub steps: u64,
    pub final_loss: f64,
    pub first_loss: f64,
    pub tokens_per_s: f64,
    pub wall_s: f64,
    pub h2d_per_step: f64,
    pub d2h_per_step: f64,
    /// The largest device ledger: base and trainable measured from their
    /// tensors, the other categories modelled (the planner's formulas at
    /// the run's shapes and unions).
    pub peak_device_ledger: u64,
    /// The compute device's used memory at its most, measured (NVML, the
    /// whole GPU); absent on the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_device_used: Option<u64>,
    /// Tokens trained on over the whole run (padding excluded).
    #[serde(default)]
    pub tokens: u64,
    /// Largest host ledger (store, moments, accumulators) over the run.
    #[serde(default)]
    pub peak_host_ledger: u64,
    /// Median wall time of one optimizer step.
    #[serde(default)]
    pub median_step_s: f64,
    /// The process's peak resident memory (the kernel's VmHWM) read after
    /// each phase: "train", "checkpoint" (the final one), "eval".
    #[serde(default)]
    pub rss_peaks: BTreeMap<String, u64>,
    /// The most the heap held during any step, and the most one step added
    /// to what it held when it began (both measured by the allocator).
    #[serde(default)]
    pub heap_peak: u64,
    #[serde(default)]
    pub step_heap_growth: u64,
    /// The row cache's hits and misses over the run (absent when off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_cache: Option<CacheCounts>,
    pub metrics: BTreeMap<String, f64>,
    /// The validation loss at each `train.eval_every` step (empty without
    /// validation rows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_loss: Vec<(u64, f64)>,
    /// Predicted values from the planner where known.
    pub predicted: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        version: u32,
        info: RunInfo,
    },
    Step(StepEvent),
    Telemetry(TelemetrySample),
    Histogram(HistogramEvent),
    Ledger(LedgerEvent),
    Eval(EvalEvent),
    Checkpoint {
        step: u64,
        path: String,
    },
    Paused {
        step: u64,
    },
    Resumed {
        step: u64,
    },
    Message {
        text: String,
    },
    Finished {
        summary: Summary,
    },
    Failed {
        step: u64,
        error: String,
    },
    /// The run was asked to stop before its last step; a checkpoint of
    /// `step` was written and it can be resumed.
    Stopped {
        step: u64,
    },
    /// A non-finite loss, gradient norm or parameter stopped the run at
    /// `step`; `what` says which.
    Diverged {
        step: u64,
        what: String,
    },
}

/// Where events go: the run directory's log, the headless printer, the
/// TUI's state. A sink that cannot take an event says why; the others
/// never fail.
pub trait Sink {
    fn handle(&mut self, ev: &Event) -> anyhow::Result<()>;
}

/// Feed every event of `source` (a live run's channel, a recorded log) to
/// `sink`, stopping at the sink's first failure.
pub fn pump(source: impl IntoIterator<Item = Event>, sink: &mut dyn Sink) -> anyhow::Result<()> {
    for ev in source {
        sink.handle(&ev)?;
    }
    Ok(())
}

/// `events.jsonl`: one event per line, flushed as it is written, so step
/// events are never lost. A write that fails is reported, naming the file.
pub struct JsonlSink {
    path: PathBuf,
    file: std::fs::File,
}

impl JsonlSink {
    /// Append to `path`, creating it.
    pub fn append(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("{}: cannot open for writing: {e}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }
}

impl Sink for JsonlSink {
    fn handle(&mut self, ev: &Event) -> anyhow::Result<()> {
        let written = serde_json::to_string(ev)
            .map_err(std::io::Error::other)
            .and_then(|line| writeln!(self.file, "{line}"))
            .and_then(|()| self.file.flush());
        written.map_err(|e| {
            anyhow::anyhow!("{}: cannot write the event log: {e}", self.path.display())
        })
    }
}

/// A run directory's event log: `events.jsonl`, or the gzipped
/// `events.jsonl.gz` a packed study keeps instead.
pub fn event_log(dir: &Path) -> std::path::PathBuf {
    let plain = dir.join("events.jsonl");
    let packed = dir.join("events.jsonl.gz");
    match !plain.exists() && packed.is_file() {
        true => packed,
        false => plain,
    }
}

fn read_log_text(file: &Path) -> std::io::Result<String> {
    if file.extension().is_some_and(|x| x == "gz") {
        use std::io::Read;
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(file)?).read_to_string(&mut text)?;
        return Ok(text);
    }
    std::fs::read_to_string(file)
}

/// The recorded source: a run's `events.jsonl` (or a run directory holding
/// one), read back whole. Errors name the file and line; a stream from a
/// newer version is refused; a torn last line (a run killed mid-write) is
/// dropped.
pub fn read_events(path: &Path) -> anyhow::Result<Vec<Event>> {
    let file = if path.is_dir() {
        event_log(path)
    } else {
        path.to_path_buf()
    };
    let text = read_log_text(&file)
        .map_err(|e| anyhow::anyhow!("{}: cannot read the event log: {e}", file.display()))?;
    let lines = text.lines().count();
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let ev: Event = match serde_json::from_str(line) {
            Ok(ev) => ev,
            Err(_) if i + 1 == lines && !text.ends_with('\n') => break,
            Err(e) => anyhow::bail!("{}:{}: not an event: {e}", file.display(), i + 1),
        };
        if let Event::RunStarted { version, .. } = &ev {
            if *version > EVENT_VERSION {
                anyhow::bail!(
                    "{}:{}: event version {version} is newer than this meft understands ({EVENT_VERSION})",
                    file.display(),
                    i + 1
                );
            }
        }
        events.push(ev);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_is_indexed_by_kind_and_reads_as_named_fields() {
        let mut t = Traffic::default();
        t[Kind::Rows] = 1024;
        t[Kind::Map] = 64;
        t[Kind::Grads] = 1024;
        t[Kind::Queries] = 192;
        assert_eq!(t.h2d(), 1088);
        assert_eq!(t.d2h(), 1216);
        let json = serde_json::to_string(&t).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"rows":1024,"ids":0,"map":64,"queries":192,"routing":0,"grads":1024}"#
        );
        // An older log without some kinds reads them as 0.
        let back: Traffic = serde_json::from_str(r#"{"rows":5,"grads":7}"#).unwrap_or_default();
        assert_eq!(
            (back[Kind::Rows], back[Kind::Grads], back[Kind::Ids]),
            (5, 7, 0)
        );
    }

    #[test]
    fn ledgers_keep_their_recorded_names_and_show_in_order() {
        let mut l = Ledger::new();
        l.insert(Category::Activations, 3);
        l.insert(Category::Base, 1);
        l.insert(Category::AdapterActivations, 2);
        let json = serde_json::to_string(&l).unwrap_or_default();
        assert_eq!(json, r#"{"base":1,"adapter act":2,"activations":3}"#);
        let back: Ledger = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, l);
    }
}
