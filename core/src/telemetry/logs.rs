//! A run's events in the log formats other tools read: TensorBoard event
//! files (scalars and histograms, written as TensorFlow's `Event` protocol
//! buffers in TFRecord framing) and a `metrics.csv` of one row per step.
//! Both are sinks of the same event stream `events.jsonl` records, so a past
//! run converts from its log exactly as a live one writes.

use crate::event::{Category, EvalSplit, Event, Sink};
use std::io::Write;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------- framing

/// CRC-32C (Castagnoli), as TFRecord frames its records.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its masked CRC, the bytes, their masked CRC.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

// ---------------------------------------------------------------- protobuf

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(field: u32, wire: u8, out: &mut Vec<u8>) {
    varint(((field as u64) << 3) | wire as u64, out);
}

fn f64_field(field: u32, v: f64, out: &mut Vec<u8>) {
    key(field, 1, out);
    out.extend_from_slice(&v.to_le_bytes());
}

fn bytes_field(field: u32, v: &[u8], out: &mut Vec<u8>) {
    key(field, 2, out);
    varint(v.len() as u64, out);
    out.extend_from_slice(v);
}

fn packed_f64(field: u32, vs: &[f64], out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(vs.len() * 8);
    for v in vs {
        body.extend_from_slice(&v.to_le_bytes());
    }
    bytes_field(field, &body, out);
}

/// `Event { wall_time = 1, step = 2, file_version = 3 | summary = 5 }`.
fn event(wall_time: f64, step: u64, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    f64_field(1, wall_time, &mut out);
    key(2, 0, &mut out);
    varint(step, &mut out);
    body(&mut out);
    out
}

/// `Summary.Value { tag = 1, simple_value = 2 (float) }`.
fn scalar_value(tag: &str, v: f32) -> Vec<u8> {
    let mut out = Vec::new();
    bytes_field(1, tag.as_bytes(), &mut out);
    key(2, 5, &mut out);
    out.extend_from_slice(&v.to_le_bytes());
    out
}

/// `Summary.Value { tag = 1, histo = 5: HistogramProto { min = 1, max = 2,
/// num = 3, sum = 4, sum_squares = 5, bucket_limit = 6, bucket = 7 } }`:
/// bucket i holds `counts[i]` values in (limits[i-1], limits[i]], each
/// counted at its bucket's upper edge for the sums.
fn histogram_value(tag: &str, lo: f64, limits: &[f64], counts: &[f64]) -> Vec<u8> {
    let num: f64 = counts.iter().sum();
    let sum: f64 = limits.iter().zip(counts).map(|(l, c)| l * c).sum();
    let sum_sq: f64 = limits.iter().zip(counts).map(|(l, c)| l * l * c).sum();
    let mut h = Vec::new();
    f64_field(1, lo, &mut h);
    f64_field(2, limits.last().copied().unwrap_or(lo), &mut h);
    f64_field(3, num, &mut h);
    f64_field(4, sum, &mut h);
    f64_field(5, sum_sq, &mut h);
    packed_f64(6, limits, &mut h);
    packed_f64(7, counts, &mut h);
    let mut out = Vec::new();
    bytes_field(1, tag.as_bytes(), &mut out);
    bytes_field(5, &h, &mut out);
    out
}

fn category_name(c: Category) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace(' ', "_")))
        .unwrap_or_default()
}

/// The scalars an event carries, as (tag, value).
fn scalars(ev: &Event) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    match ev {
        Event::Step(s) => {
            out.push(("train/loss".into(), s.loss));
            out.push(("train/lr".into(), s.lr));
            out.push(("train/grad_norm".into(), s.grad_norm));
            if s.wall_ms > 0.0 {
                out.push((
                    "train/tokens_per_s".into(),
                    s.tokens as f64 * 1e3 / s.wall_ms,
                ));
            }
            out.push(("pcie/h2d_bytes".into(), s.traffic.h2d() as f64));
            out.push(("pcie/d2h_bytes".into(), s.traffic.d2h() as f64));
        }
        Event::Eval(e) => {
            let split = match e.split {
                EvalSplit::Test => "test",
                EvalSplit::Validation => "validation",
            };
            if let Some(l) = e.loss {
                out.push((format!("{split}/loss"), l));
            }
            for (k, v) in &e.metrics {
                if !(k == "loss" && e.loss.is_some()) {
                    out.push((format!("{split}/{k}"), *v));
                }
            }
        }
        Event::Ledger(l) => {
            for (side, ledger) in [("device", &l.device), ("host", &l.host)] {
                for (c, b) in ledger {
                    out.push((format!("ledger/{side}/{}", category_name(*c)), *b as f64));
                }
            }
        }
        _ => {}
    }
    out
}

fn step_of(ev: &Event) -> Option<u64> {
    match ev {
        Event::Step(s) => Some(s.step),
        Event::Eval(e) => Some(e.step),
        Event::Ledger(l) => Some(l.step),
        Event::Histogram(h) => Some(h.step),
        _ => None,
    }
}

// ---------------------------------------------------------------- sinks

/// TensorBoard event files in a directory (`events.out.tfevents.*`).
pub struct TensorBoardSink {
    path: PathBuf,
    file: std::fs::File,
}

impl TensorBoardSink {
    /// A new event file in `dir` (created if needed).
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", dir.display()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let host = sysinfo::System::host_name()
            .unwrap_or_else(|_| "localhost".into())
            .replace(['/', ' '], "_");
        let mut n = 0;
        let path = loop {
            let p = dir.join(format!(
                "events.out.tfevents.{}.{host}.{}.{n}",
                now.as_secs(),
                std::process::id()
            ));
            if !p.exists() {
                break p;
            }
            n += 1;
        };
        let mut file = std::fs::File::create(&path)
            .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", path.display()))?;
        let first = event(now.as_secs_f64(), 0, |out| {
            bytes_field(3, b"brain.Event:2", out)
        });
        file.write_all(&record(&first))
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Self { path, file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, step: u64, values: Vec<Vec<u8>>) -> anyhow::Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let ev = event(wall, step, |out| {
            let mut summary = Vec::new();
            for v in &values {
                bytes_field(1, v, &mut summary);
            }
            bytes_field(5, &summary, out);
        });
        self.file
            .write_all(&record(&ev))
            .and_then(|()| self.file.flush())
            .map_err(|e| anyhow::anyhow!("{}: cannot write: {e}", self.path.display()))
    }
}

impl Sink for TensorBoardSink {
    fn handle(&mut self, ev: &Event) -> anyhow::Result<()> {
        let Some(step) = step_of(ev) else {
            return Ok(());
        };
        let mut values: Vec<Vec<u8>> = scalars(ev)
            .into_iter()
            .map(|(tag, v)| scalar_value(&tag, v as f32))
            .collect();
        if let Event::Histogram(h) = ev {
            // Picks per neuron, hot → cold: bucket i is the i-th bin of
            // neurons by rank, holding the picks they got in the window.
            let bins = h.picks_sorted.len().max(1) as f64;
            let per_bin = h.neurons as f64 / bins;
            let limits: Vec<f64> = (1..=h.picks_sorted.len())
                .map(|i| i as f64 * per_bin)
                .collect();
            let counts: Vec<f64> = h.picks_sorted.iter().map(|&p| p as f64 * per_bin).collect();
            values.push(histogram_value(
                &format!("picks/layer{}", h.layer),
                0.0,
                &limits,
                &counts,
            ));
            let n = h.act_bins.len().max(1) as f64;
            let width = (h.act_hi - h.act_lo) as f64 / n;
            let limits: Vec<f64> = (1..=h.act_bins.len())
                .map(|i| h.act_lo as f64 + i as f64 * width)
                .collect();
            let counts: Vec<f64> = h.act_bins.iter().map(|&c| c as f64).collect();
            values.push(histogram_value(
                &format!("activations/layer{}", h.layer),
                h.act_lo as f64,
                &limits,
                &counts,
            ));
        }
        self.write(step, values)
    }
}

/// `metrics.csv`: one row per step (loss, lr, gradient norm, tokens/s,
/// bytes each way), a validation loss in its own column on the steps that
/// have one.
pub struct CsvSink {
    path: PathBuf,
    file: std::fs::File,
    pending: Option<crate::event::StepEvent>,
}

const CSV_HEADER: &str = "step,loss,lr,grad_norm,tokens_per_s,h2d_bytes,d2h_bytes,validation_loss";

impl CsvSink {
    /// Append to `path`, writing the header when the file is new.
    pub fn append(path: &Path) -> anyhow::Result<Self> {
        let new = !path.exists();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("{}: cannot open for writing: {e}", path.display()))?;
        if new {
            writeln!(file, "{CSV_HEADER}")
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            pending: None,
        })
    }

    fn flush_row(&mut self, validation: Option<f64>) -> anyhow::Result<()> {
        let Some(s) = self.pending.take() else {
            return Ok(());
        };
        let tps = if s.wall_ms > 0.0 {
            s.tokens as f64 * 1e3 / s.wall_ms
        } else {
            0.0
        };
        writeln!(
            self.file,
            "{},{},{},{},{tps:.1},{},{},{}",
            s.step,
            s.loss,
            s.lr,
            s.grad_norm,
            s.traffic.h2d(),
            s.traffic.d2h(),
            validation.map(|v| v.to_string()).unwrap_or_default()
        )
        .and_then(|()| self.file.flush())
        .map_err(|e| anyhow::anyhow!("{}: cannot write: {e}", self.path.display()))
    }
}

impl Sink for CsvSink {
    fn handle(&mut self, ev: &Event) -> anyhow::Result<()> {
        match ev {
            // A step's row waits for its validation, which comes right after.
            Event::Step(s) => {
                self.flush_row(None)?;
                self.pending = Some(s.clone());
                Ok(())
            }
            Event::Eval(e) if e.split == EvalSplit::Validation => match &self.pending {
                Some(p) if p.step == e.step => self.flush_row(e.loss),
                _ => Ok(()),
            },
            Event::Finished { .. } | Event::Stopped { .. } | Event::Failed { .. } => {
                self.flush_row(None)
            }
            _ => Ok(()),
        }
    }
}

impl Drop for CsvSink {
    fn drop(&mut self) {
        let _ = self.flush_row(None);
    }
}

/// `meft export-logs`: a past run's events as TensorBoard files in `tb`
/// and, when asked, a CSV.
pub fn export_logs(
    run_dir: &Path,
    tb: Option<&Path>,
    csv: Option<&Path>,
) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::ensure!(
        tb.is_some() || csv.is_some(),
        "name an output: --tensorboard DIR and/or --csv FILE"
    );
    let events = crate::event::read_events(run_dir)?;
    let mut written = Vec::new();
    if let Some(dir) = tb {
        let mut sink = TensorBoardSink::create(dir)?;
        crate::event::pump(events.iter().cloned(), &mut sink)?;
        written.push(sink.path().to_path_buf());
    }
    if let Some(path) = csv {
        anyhow::ensure!(
            !path.exists(),
            "--csv: {} exists; name a new file",
            path.display()
        );
        let mut sink = CsvSink::append(path)?;
        crate::event::pump(events.iter().cloned(), &mut sink)?;
        sink.flush_row(None)?;
        written.push(path.to_path_buf());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_and_its_mask_match_the_published_values() {
        // RFC 3720's check value for "123456789".
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"a"), 0xc1d0_4330);
        // TFRecord's mask: rotate right by 15, add 0xa282ead8.
        assert_eq!(masked_crc(b"a"), 0x28e4_6e78);
    }

    #[test]
    fn varints_are_little_endian_base_128() {
        let mut v = Vec::new();
        varint(300, &mut v);
        assert_eq!(v, vec![0xac, 0x02]);
        v.clear();
        varint(1, &mut v);
        assert_eq!(v, vec![1]);
    }
}
