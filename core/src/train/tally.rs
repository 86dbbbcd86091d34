//! What a run has done so far, kept step by step: losses, tokens, time,
//! traffic, unions and the batch shape, the ledgers' and the heap's peaks,
//! and the summary made from them. Steps an earlier process of the same run
//! logged are folded in on resume, so the summary covers the whole run.

use crate::event::{CacheCounts, HeapReading, Ledger, StepEvent, Summary, Traffic};
use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct Tally {
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    pub tokens: u64,
    pub wall_s: f64,
    pub traffic: Traffic,
    /// Optimizer steps counted (this process's and, after a resume, the
    /// earlier ones').
    pub steps: u64,
    pub step_times: Vec<f64>,
    /// Σ |U| per adapter layer over every micro-batch so far.
    pub union_totals: Vec<u64>,
    /// Each adapter layer's largest |U| in the last step.
    pub step_unions: Vec<u64>,
    /// Tokens (padded batch × seq) and sequence length of the last
    /// micro-batch.
    pub micro_shape: Option<(u64, u64)>,
    /// Host gradient accumulators at their fullest in the last step.
    pub accumulator_bytes: u64,
    pub peak_device: u64,
    /// The device's used memory at its most, measured (absent on the CPU).
    pub peak_device_used: Option<u64>,
    pub peak_host: u64,
    pub heap_peak: u64,
    pub step_heap_growth: u64,
    pub rss_peaks: BTreeMap<String, u64>,
    pub metrics: BTreeMap<String, f64>,
    /// (step, validation loss) at each validation.
    pub validation_loss: Vec<(u64, f64)>,
    /// Consecutive steps whose gradient norm was exactly 0.
    pub zero_grad_steps: u64,
    /// The row cache's hits and misses so far.
    pub row_cache: CacheCounts,
}

/// Steps of an exactly-zero gradient norm after which the run warns.
const DEAD_AFTER: u64 = 10;

impl Tally {
    /// Count one step (this process's, or a logged one on resume).
    pub fn add_step(&mut self, s: &StepEvent) {
        self.first_loss.get_or_insert(s.loss);
        self.last_loss = Some(s.loss);
        self.tokens += s.tokens;
        self.wall_s += s.wall_ms / 1e3;
        self.traffic.add(&s.traffic);
        self.steps += 1;
        self.step_times.push(s.wall_ms / 1e3);
        if self.union_totals.len() != s.union_sizes.len() {
            self.union_totals = vec![0; s.union_sizes.len()];
        }
        for (t, u) in self.union_totals.iter_mut().zip(&s.union_sizes) {
            *t += u;
        }
        if let Some(c) = s.row_cache {
            self.row_cache.add(c);
        }
    }

    pub fn add_ledgers(&mut self, device: &Ledger, host: &Ledger, heap: &HeapReading) {
        self.peak_device = self.peak_device.max(device.values().sum());
        self.peak_host = self.peak_host.max(host.values().sum());
        self.heap_peak = self.heap_peak.max(heap.peak);
        self.step_heap_growth = self
            .step_heap_growth
            .max(heap.peak.saturating_sub(heap.before));
    }

    /// Count a step's gradient norm; a warning, once, when it has been
    /// exactly 0 for a while (nothing is learning).
    pub fn watch_gradient_norm(&mut self, norm: f64, step: u64) -> Option<String> {
        self.zero_grad_steps = match norm == 0.0 {
            true => self.zero_grad_steps + 1,
            false => 0,
        };
        (self.zero_grad_steps == DEAD_AFTER).then(|| {
            format!(
                "warning: the gradient norm has been exactly 0 for {DEAD_AFTER} steps (to step {step}): nothing is learning; lower train.lr"
            )
        })
    }

    /// The process's peak resident memory now, under `phase`.
    pub fn note_rss(&mut self, phase: &str) {
        if let Some(b) = crate::telemetry::peak_rss() {
            self.rss_peaks.insert(phase.to_string(), b);
        }
    }

    /// Mean |U| per adapter layer over every micro-batch counted.
    pub fn mean_unions(&self, micro_batches_per_step: u64) -> Option<Vec<u64>> {
        (!self.union_totals.is_empty()).then(|| {
            let n = (self.steps.max(1) * micro_batches_per_step.max(1)) as f64;
            self.union_totals
                .iter()
                .map(|u| (*u as f64 / n).round() as u64)
                .collect()
        })
    }

    pub fn summary(&self, step: u64, predicted: BTreeMap<String, f64>) -> Summary {
        let n = self.steps.max(1) as f64;
        let mut times = self.step_times.clone();
        times.sort_by(f64::total_cmp);
        Summary {
            steps: step,
            final_loss: self.last_loss.unwrap_or(f64::NAN),
            first_loss: self.first_loss.unwrap_or(f64::NAN),
            tokens_per_s: if self.wall_s > 0.0 {
                self.tokens as f64 / self.wall_s
            } else {
                0.0
            },
            wall_s: self.wall_s,
            h2d_per_step: self.traffic.h2d() as f64 / n,
            d2h_per_step: self.traffic.d2h() as f64 / n,
            peak_device_ledger: self.peak_device,
            peak_device_used: self.peak_device_used,
            tokens: self.tokens,
            peak_host_ledger: self.peak_host,
            median_step_s: times.get(times.len() / 2).copied().unwrap_or(0.0),
            rss_peaks: self.rss_peaks.clone(),
            heap_peak: self.heap_peak,
            step_heap_growth: self.step_heap_growth,
            row_cache: (self.row_cache != CacheCounts::default()).then_some(self.row_cache),
            metrics: self.metrics.clone(),
            validation_loss: self.validation_loss.clone(),
            predicted,
        }
    }
}
