//! The one contract of a run: everything that happens is an [`Event`].
//! Sources (the trainer, the telemetry sampler, a recorded `events.jsonl`)
//! and sinks (the TUI, the run-directory writer, the headless printer) only
//! ever meet here.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bumped whenever a field changes meaning; readers reject newer versions.
pub const EVENT_VERSION: u32 = 1;

/// Bytes that crossed between host and device, by kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    /// Host → device: gathered key/value rows (|U|·2d f32).
    pub rows: u64,
    /// Host → device: union row ids (|U| u32).
    pub ids: u64,
    /// Host → device: per-token map into the union (N·K u32).
    pub map: u64,
    /// Device → host: queries (N·d f32).
    pub queries: u64,
    /// Device → host: probed expert ids and their gate values (N·P u32 + N·P f32).
    pub routing: u64,
    /// Device → host: row gradients (|U|·2d f32).
    pub grads: u64,
}

impl Traffic {
    pub fn h2d(&self) -> u64 {
        self.rows + self.ids + self.map
    }
    pub fn d2h(&self) -> u64 {
        self.queries + self.routing + self.grads
    }
    pub fn add(&mut self, o: &Traffic) {
        self.rows += o.rows;
        self.ids += o.ids;
        self.map += o.map;
        self.queries += o.queries;
        self.routing += o.routing;
        self.grads += o.grads;
    }
}

/// Bytes by category, e.g. the device ledger ("base", "trainable", …).
pub type Ledger = BTreeMap<String, u64>;

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
    pub metrics: BTreeMap<String, f64>,
    /// A few (question, prediction, gold) triples to show.
    pub samples: Vec<(String, String, String)>,
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
    pub peak_device_ledger: u64,
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
    pub metrics: BTreeMap<String, f64>,
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
