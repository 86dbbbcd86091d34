//! Recorded runs read back for people: one [`RunRecord`] per run directory
//! (what it trained, how far it got, how it ended, what it measured), made
//! from its `events.jsonl` and `config.toml` through the same reader replay
//! uses, and the two tables built from records: `meft runs` (a row per run)
//! and `meft compare` (a column per run). Every figure comes from the run's
//! files; one that is not there reads "–".

use super::RunLock;
use crate::config::{Experiment, MethodKind, PaperFigure};
use crate::event::{read_events, EvalEvent, EvalSplit, Event, RunInfo, Summary};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How a run ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Trained every step and was evaluated.
    Finished,
    /// Asked to stop early; its last checkpoint can be resumed.
    Stopped,
    /// A non-finite loss, gradient norm or parameter ended it.
    Diverged,
    /// An error ended it.
    Failed,
    /// A process holds its lock and is writing it now.
    Running,
    /// It ended without a word (killed, crashed): no process holds it and
    /// its log has no ending.
    Interrupted,
    /// Its event log is missing or cannot be read.
    Unreadable,
}

impl RunState {
    pub fn name(self) -> &'static str {
        match self {
            RunState::Finished => "finished",
            RunState::Stopped => "stopped",
            RunState::Diverged => "diverged",
            RunState::Failed => "failed",
            RunState::Running => "running",
            RunState::Interrupted => "interrupted",
            RunState::Unreadable => "unreadable",
        }
    }
}

/// One run directory as its files describe it.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub dir: PathBuf,
    /// The directory's name.
    pub name: String,
    pub state: RunState,
    /// The latest `run_started` (a resumed run has one per start).
    pub info: Option<RunInfo>,
    /// The resolved config the run recorded, else its `config.toml`.
    pub exp: Option<Experiment>,
    /// (step, loss) of every recorded step, in order.
    pub losses: Vec<(u64, f64)>,
    /// The latest test evaluation's metrics.
    pub metrics: BTreeMap<String, f64>,
    /// (step, loss) of the latest validation.
    pub validation: Option<(u64, f64)>,
    /// The latest evaluation of the test split and of the validation rows,
    /// whole (metrics, and each row's scores where recorded).
    pub test_eval: Option<EvalEvent>,
    pub validation_eval: Option<EvalEvent>,
    pub summary: Option<Summary>,
    /// Why the log could not be read, for an unreadable run.
    pub problem: Option<String>,
    step_s: Vec<f64>,
    traffic: (u64, u64),
    peak_ledger: Option<u64>,
    /// Per telemetry sample: cores busy with other processes.
    other_cores: Vec<f64>,
}

impl RunRecord {
    /// Read `dir`. A log that is missing or corrupt gives an unreadable
    /// record saying why, not an error.
    pub fn read(dir: &Path) -> RunRecord {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        let mut rec = RunRecord {
            dir: dir.to_path_buf(),
            name,
            state: RunState::Unreadable,
            info: None,
            exp: Experiment::load(&dir.join("config.toml")).ok(),
            losses: Vec::new(),
            metrics: BTreeMap::new(),
            validation: None,
            test_eval: None,
            validation_eval: None,
            summary: None,
            problem: None,
            step_s: Vec::new(),
            traffic: (0, 0),
            peak_ledger: None,
            other_cores: Vec::new(),
        };
        let held = RunLock::ensure_free(dir).is_err();
        let log = crate::event::event_log(dir);
        if !log.is_file() {
            if held {
                rec.state = RunState::Running;
            } else {
                rec.problem = Some(format!("{}: missing", log.display()));
            }
            return rec;
        }
        match read_events(dir) {
            Ok(events) => rec.take(&events, held),
            Err(e) => rec.problem = Some(crate::fsx::error_line(&e)),
        }
        rec
    }

    /// The latest validation loss, then the test metrics, each as
    /// "name value".
    pub fn metric_items(&self) -> Vec<String> {
        self.validation
            .map(|(_, l)| format!("val_loss {}", decimal(l)))
            .into_iter()
            .chain(
                self.metrics
                    .iter()
                    .map(|(k, v)| format!("{k} {}", decimal(*v))),
            )
            .collect()
    }

    fn take(&mut self, events: &[Event], held: bool) {
        let last_start = events
            .iter()
            .rposition(|e| matches!(e, Event::RunStarted { .. }))
            // A log cut before its start holds one attempt: all of it counts.
            .unwrap_or(0);
        let mut ending = None;
        for (i, ev) in events.iter().enumerate() {
            match ev {
                Event::RunStarted { info, .. } => {
                    if let Ok(exp) = Experiment::from_toml(&info.config_toml, "run config") {
                        self.exp = Some(exp);
                    }
                    self.info = Some(info.clone());
                }
                Event::Step(s) => {
                    self.losses.push((s.step, s.loss));
                    self.step_s.push(s.wall_ms / 1e3);
                    self.traffic.0 += s.traffic.h2d();
                    self.traffic.1 += s.traffic.d2h();
                }
                Event::Ledger(l) => {
                    let total: u64 = l.device.values().sum();
                    self.peak_ledger = Some(self.peak_ledger.unwrap_or(0).max(total));
                }
                Event::Eval(e) if e.split == EvalSplit::Validation => {
                    self.validation = e.loss.map(|l| (e.step, l)).or(self.validation);
                    self.validation_eval = Some(e.clone());
                }
                Event::Eval(e) => {
                    self.metrics = e.metrics.clone();
                    self.test_eval = Some(e.clone());
                }
                Event::Finished { summary } => self.summary = Some(summary.clone()),
                // The machine's busy cores less this process's: what else
                // ran beside it while it was timed. A first sample has no
                // reading of the process yet (0 %).
                Event::Telemetry(t) if t.cores > 0 && t.cpu_process_pct > 0.0 => {
                    self.other_cores.push(
                        (t.cpu_system_pct / 100.0 * t.cores as f64 - t.cpu_process_pct / 100.0)
                            .max(0.0),
                    )
                }
                _ => {}
            }
            if i < last_start {
                continue;
            }
            // A stopped run also writes its summary; what ended it wins.
            ending = match (ending, ev) {
                (_, Event::Diverged { .. }) => Some(RunState::Diverged),
                (_, Event::Failed { .. }) => Some(RunState::Failed),
                (_, Event::Stopped { .. }) => Some(RunState::Stopped),
                (None, Event::Finished { .. }) => Some(RunState::Finished),
                (e, _) => e,
            };
        }
        self.state = match (ending, held) {
            (Some(s), _) => s,
            (None, true) => RunState::Running,
            (None, false) => RunState::Interrupted,
        };
    }

    /// The method as the config names it ("meft", "lora", …).
    pub fn method(&self) -> Option<String> {
        match (&self.exp, &self.info) {
            (Some(e), _) => Some(e.method.kind.to_string()),
            (None, Some(i)) => Some(i.method.clone()),
            _ => None,
        }
    }

    /// The adapter's size: M and K for MEFT, the rank for LoRA, the width
    /// of a Parallel Adapter.
    pub fn size(&self) -> Option<String> {
        let m = &self.exp.as_ref()?.method;
        match m.kind {
            MethodKind::Meft => Some(format!("M {} K {}", m.meft.neurons, m.meft.top_k)),
            MethodKind::Parallel => Some(format!("size {}", m.parallel.size)),
            MethodKind::Lora => Some(format!("r {}", m.lora.rank)),
            MethodKind::Full | MethodKind::None => None,
        }
    }

    pub fn steps_done(&self) -> Option<u64> {
        self.losses.last().map(|l| l.0)
    }

    pub fn total_steps(&self) -> Option<u64> {
        self.info.as_ref().map(|i| i.total_steps)
    }

    pub fn final_loss(&self) -> Option<f64> {
        self.losses.last().map(|l| l.1)
    }

    /// The loss recorded at `step`, else at the last step recorded before
    /// it, as (that step, its loss); `None` before the first. A resumed run
    /// that recorded a step twice answers with its latest start's.
    pub fn loss_at(&self, step: u64) -> Option<(u64, f64)> {
        self.losses.iter().rev().find(|l| l.0 <= step).copied()
    }

    pub fn trainable_params(&self) -> Option<u64> {
        self.info.as_ref().map(|i| i.trainable_params)
    }

    /// The summary's peak device ledger, else the largest ledger recorded.
    pub fn peak_device_ledger(&self) -> Option<u64> {
        self.summary
            .as_ref()
            .map(|s| s.peak_device_ledger)
            .or(self.peak_ledger)
    }

    /// Mean bytes host→device and device→host per recorded step.
    pub fn bytes_per_step(&self) -> Option<(f64, f64)> {
        let n = self.losses.len() as f64;
        (n > 0.0).then(|| (self.traffic.0 as f64 / n, self.traffic.1 as f64 / n))
    }

    /// The median wall time of a recorded step, in seconds.
    /// Cores other processes kept busy while the run trained, on average
    /// over its telemetry samples (None without samples).
    pub fn other_load_cores(&self) -> Option<f64> {
        let v = &self.other_cores;
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }

    pub fn median_step_s(&self) -> Option<f64> {
        let mut t = self.step_s.clone();
        t.sort_by(f64::total_cmp);
        t.get(t.len() / 2).copied()
    }

    pub fn paper(&self) -> Option<&PaperFigure> {
        self.exp.as_ref()?.paper.as_ref()
    }
}

/// Every run directory under `root` (a directory holding `events.jsonl`,
/// `config.toml` or `summary.json`), by name; `root` itself when it is one.
pub fn list(root: &Path) -> anyhow::Result<Vec<RunRecord>> {
    let is_run = |d: &Path| {
        ["events.jsonl", "config.toml", "summary.json"]
            .iter()
            .any(|f| d.join(f).is_file())
    };
    if is_run(root) {
        return Ok(vec![RunRecord::read(root)]);
    }
    let entries = std::fs::read_dir(root)
        .map_err(|e| anyhow::anyhow!("{}: cannot read the runs directory: {e}", root.display()))?;
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && is_run(p))
        .collect();
    dirs.sort();
    Ok(dirs.iter().map(|d| RunRecord::read(d)).collect())
}

/// What a figure the run's files do not hold reads as.
pub const ABSENT: &str = "–";

fn or_absent<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| ABSENT.into())
}

/// Losses and metrics read with four decimals everywhere.
pub fn decimal(v: f64) -> String {
    format!("{v:.4}")
}

/// 1048576 → "1,048,576".
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Columns padded to their widest cell, two spaces apart; `right[i]`
/// right-aligns column i (numbers).
pub fn text_table(header: &[String], rows: &[Vec<String>], right: &[bool]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate().take(cols) {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i > 0 {
                l.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                l.push_str(&" ".repeat(pad));
                l.push_str(cell);
            } else {
                l.push_str(cell);
                if i + 1 < cols {
                    l.push_str(&" ".repeat(pad));
                }
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(header);
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// `meft runs`: a row per run, then why any unreadable run could not be read.
pub fn runs_table(records: &[RunRecord]) -> String {
    let header: Vec<String> = [
        "run",
        "method",
        "size",
        "steps",
        "final loss",
        "state",
        "metrics",
    ]
    .map(String::from)
    .to_vec();
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let steps = match (r.steps_done(), r.total_steps()) {
                (None, None) => ABSENT.to_string(),
                (d, t) => format!("{}/{}", d.unwrap_or(0), or_absent(t, |t| t.to_string())),
            };
            let metrics = r.metric_items();
            vec![
                r.name.clone(),
                or_absent(r.method(), |m| m),
                or_absent(r.size(), |s| s),
                steps,
                or_absent(r.final_loss(), decimal),
                r.state.name().to_string(),
                if metrics.is_empty() {
                    ABSENT.to_string()
                } else {
                    metrics.join(" · ")
                },
            ]
        })
        .collect();
    let mut out = text_table(
        &header,
        &rows,
        &[false, false, false, true, true, false, false],
    );
    for r in records {
        if let Some(p) = &r.problem {
            out += &format!("{}: {p}\n", r.name);
        }
    }
    out
}

/// `meft compare`: a column per run, a row per quantity (every metric any
/// of them measured, and the paper's figure where a preset states one).
pub fn compare_table(records: &[RunRecord]) -> String {
    let mut header = vec![String::new()];
    header.extend(records.iter().map(|r| r.name.clone()));
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |label: &str, f: &dyn Fn(&RunRecord) -> String| {
        let mut cells = vec![label.to_string()];
        cells.extend(records.iter().map(f));
        rows.push(cells);
    };
    row("method", &|r| or_absent(r.method(), |m| m));
    row("adapter", &|r| {
        or_absent(r.info.as_ref(), |i| i.adapter.clone())
    });
    row("state", &|r| r.state.name().to_string());
    row("steps", &|r| {
        format!(
            "{}/{}",
            r.steps_done().unwrap_or(0),
            or_absent(r.total_steps(), |t| t.to_string())
        )
    });
    row("trainable parameters", &|r| {
        or_absent(r.trainable_params(), grouped)
    });
    row("peak device ledger", &|r| {
        or_absent(r.peak_device_ledger(), crate::units::bytes)
    });
    row("host→device / step", &|r| {
        or_absent(r.bytes_per_step(), |b| crate::units::bytes_f(b.0))
    });
    row("device→host / step", &|r| {
        or_absent(r.bytes_per_step(), |b| crate::units::bytes_f(b.1))
    });
    row("median step", &|r| {
        or_absent(r.median_step_s(), |s| format!("{s:.3} s"))
    });
    row("final loss", &|r| or_absent(r.final_loss(), decimal));
    if records.iter().any(|r| r.validation.is_some()) {
        row("validation loss", &|r| {
            or_absent(r.validation, |(step, l)| format!("{} @{step}", decimal(l)))
        });
    }
    let mut names: Vec<&String> = records.iter().flat_map(|r| r.metrics.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        row(name, &|r| or_absent(r.metrics.get(name).copied(), decimal));
    }
    let mut figures: Vec<&PaperFigure> = records.iter().filter_map(|r| r.paper()).collect();
    figures.sort_by(|a, b| (&a.metric, &a.setting).cmp(&(&b.metric, &b.setting)));
    figures.dedup_by(|a, b| a.metric == b.metric && a.setting == b.setting);
    let mut notes = String::new();
    for (i, fig) in figures.iter().enumerate() {
        let label = format!("paper {} [{}]", fig.metric, i + 1);
        row(&label, &|r| match r.paper() {
            Some(p) if p.metric == fig.metric && p.setting == fig.setting => decimal(p.value),
            _ => ABSENT.into(),
        });
        notes += &format!("[{}] {}\n", i + 1, fig.setting);
    }
    let mut right = vec![false];
    right.extend(records.iter().map(|_| true));
    text_table(&header, &rows, &right) + &notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EvalEvent, LedgerEvent, StepEvent, Traffic, EVENT_VERSION};

    fn step(step: u64, loss: f64, wall_ms: f64) -> Event {
        Event::Step(StepEvent {
            step,
            total_steps: 4,
            epoch: 0.0,
            loss,
            lr: 1e-3,
            grad_norm: 1.0,
            tokens: 100,
            wall_ms,
            traffic: Traffic::of(&[
                (crate::event::Kind::Rows, 1024),
                (crate::event::Kind::Grads, 2048),
            ]),
            union_sizes: vec![],
            picks: vec![],
            rows_updated: 0,
            row_cache: None,
        })
    }

    fn started(exp: &Experiment) -> Event {
        Event::RunStarted {
            version: EVENT_VERSION,
            info: RunInfo {
                run_id: "r".into(),
                config_toml: exp.to_toml().unwrap(),
                name: exp.name.clone(),
                method: exp.method.kind.to_string(),
                model: "embedded:tiny".into(),
                device: "cpu".into(),
                total_steps: 4,
                base_params: 10,
                trainable_params: 1_048_576,
                adapter: "MEFT M 4096 K 32 E 64 P 8".into(),
                plan: None,
                started_unix: 0,
                resumed_from: None,
                machine: None,
                meft_version: None,
                source: None,
            },
        }
    }

    fn write_log(dir: &Path, events: &[Event]) {
        let text: String = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("events.jsonl"), text).unwrap();
    }

    fn finished_run(dir: &Path) {
        let exp = Experiment {
            paper: Some(PaperFigure {
                metric: "nq_em".into(),
                value: 0.413,
                setting: "LLaMA-7B".into(),
            }),
            ..Default::default()
        };
        let mut device = crate::event::Ledger::new();
        device.insert(crate::event::Category::Base, 3 << 20);
        write_log(
            dir,
            &[
                started(&exp),
                step(1, 4.0, 100.0),
                Event::Ledger(LedgerEvent {
                    step: 1,
                    device,
                    host: Default::default(),
                    heap: None,
                    device_used: None,
                }),
                step(2, 3.0, 300.0),
                step(3, 2.5, 200.0),
                step(4, 2.25, 250.0),
                Event::Eval(EvalEvent {
                    step: 4,
                    n: 2,
                    split: Default::default(),
                    loss: None,
                    metrics: [("nq_em".to_string(), 0.5)].into(),
                    samples: vec![],
                    sample_scores: vec![],
                    row_scores: Default::default(),
                }),
            ],
        );
    }

    #[test]
    fn a_finished_run_reads_back_with_its_figures() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a-1");
        finished_run(&dir);
        let r = RunRecord::read(&dir);
        // No `finished` event and no process holding it: it was cut short.
        assert_eq!(r.state, RunState::Interrupted);
        assert_eq!((r.steps_done(), r.total_steps()), (Some(4), Some(4)));
        assert_eq!(r.final_loss(), Some(2.25));
        assert_eq!(r.size().as_deref(), Some("M 4096 K 32"));
        assert_eq!(r.method().as_deref(), Some("meft"));
        // 100, 200, 250, 300 ms: the upper median.
        assert_eq!(r.median_step_s(), Some(0.25));
        assert_eq!(r.bytes_per_step(), Some((1024.0, 2048.0)));
        assert_eq!(r.peak_device_ledger(), Some(3 << 20));
    }

    #[test]
    fn other_processes_load_is_the_machine_s_less_the_run_s() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("busy");
        let sample = |system: f64, process: f64| {
            Event::Telemetry(crate::event::TelemetrySample {
                t_ms: 0,
                rss: 0,
                sys_used: 0,
                sys_total: 0,
                cpu_process_pct: process,
                cpu_system_pct: system,
                cores: 2,
                gpus: Vec::new(),
                gpu_unavailable: None,
            })
        };
        // The first sample has no process reading and is left out; then 2
        // cores at 75 % = 1.5 busy, 1.0 of them this run's: 0.5 others';
        // at 50 % with the run on 1.2 cores (sampling skew): none.
        let exp = Experiment::default();
        write_log(
            &dir,
            &[
                started(&exp),
                sample(90.0, 0.0),
                sample(75.0, 100.0),
                sample(50.0, 120.0),
            ],
        );
        assert_eq!(RunRecord::read(&dir).other_load_cores(), Some(0.25));
        write_log(&dir, &[started(&exp)]);
        assert_eq!(RunRecord::read(&dir).other_load_cores(), None);
    }

    #[test]
    fn the_state_is_what_ended_the_latest_start() {
        let root = tempfile::tempdir().unwrap();
        let exp = Experiment::default();
        let stopped = [
            started(&exp),
            step(1, 4.0, 1.0),
            Event::Stopped { step: 1 },
            Event::Finished { summary: summary() },
        ];
        let cases: [(&str, Vec<Event>, RunState); 4] = [
            (
                "finished",
                vec![
                    started(&exp),
                    step(1, 4.0, 1.0),
                    Event::Finished { summary: summary() },
                ],
                RunState::Finished,
            ),
            ("stopped", stopped.to_vec(), RunState::Stopped),
            (
                "diverged",
                vec![
                    started(&exp),
                    // A diverging step is never logged; the one before it is.
                    step(1, 4.0, 1.0),
                    Event::Diverged {
                        step: 1,
                        what: "the loss is NaN".into(),
                    },
                ],
                RunState::Diverged,
            ),
            (
                // Stopped, then resumed: the resumed part has not ended.
                "resumed",
                [stopped.to_vec(), vec![started(&exp), step(2, 3.0, 1.0)]].concat(),
                RunState::Interrupted,
            ),
        ];
        for (name, events, want) in cases {
            let dir = root.path().join(name);
            write_log(&dir, &events);
            assert_eq!(RunRecord::read(&dir).state, want, "{name}");
        }
    }

    fn summary() -> Summary {
        serde_json::from_str(
            r#"{"steps":1,"final_loss":4.0,"first_loss":4.0,"tokens_per_s":1.0,"wall_s":1.0,
                "h2d_per_step":0.0,"d2h_per_step":0.0,"peak_device_ledger":5,
                "metrics":{},"predicted":{}}"#,
        )
        .unwrap()
    }

    #[test]
    fn the_runs_table_lists_every_run_and_says_what_is_wrong() {
        let root = tempfile::tempdir().unwrap();
        finished_run(&root.path().join("a-1"));
        let bad = root.path().join("b-2");
        write_log(&bad, &[]);
        std::fs::write(bad.join("events.jsonl"), "{\"type\":\"bogus\"}\n").unwrap();
        let missing = root.path().join("c-3");
        std::fs::create_dir_all(&missing).unwrap();
        std::fs::write(missing.join("config.toml"), "name = \"c\"\n").unwrap();
        // Not a run: ignored.
        std::fs::create_dir_all(root.path().join("screenshots")).unwrap();

        let records = list(root.path()).unwrap();
        let table = runs_table(&records);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "run  method  size         steps  final loss  state        metrics"
        );
        assert_eq!(
            lines[1],
            "a-1  meft    M 4096 K 32    4/4      2.2500  interrupted  nq_em 0.5000"
        );
        assert!(lines[2].starts_with("b-2  –"), "{table}");
        assert!(lines[2].contains("unreadable"), "{table}");
        // c-3 has a config but no log.
        assert!(lines[3].starts_with("c-3  meft    M 4096 K 32"), "{table}");
        assert!(lines[3].contains("unreadable"), "{table}");
        assert!(lines[4].starts_with("b-2: ") && lines[4].contains("events.jsonl:1"));
        assert!(lines[5].starts_with("c-3: ") && lines[5].ends_with("missing"));
        assert_eq!(lines.len(), 6, "{table}");
    }

    #[test]
    fn the_compare_table_puts_runs_side_by_side() {
        let root = tempfile::tempdir().unwrap();
        finished_run(&root.path().join("a"));
        write_log(
            &root.path().join("b"),
            &[started(&Experiment::default()), step(1, 5.0, 40.0)],
        );
        let records = list(root.path()).unwrap();
        let table = compare_table(&records);
        let row = |label: &str| {
            table
                .lines()
                .find(|l| l.starts_with(label))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap()
        };
        assert_eq!(row("trainable"), "trainable parameters 1,048,576 1,048,576");
        assert_eq!(row("peak device"), "peak device ledger 3 MiB –");
        assert_eq!(row("host→device"), "host→device / step 1 KiB 1 KiB");
        assert_eq!(row("median step"), "median step 0.250 s 0.040 s");
        assert_eq!(row("final loss"), "final loss 2.2500 5.0000");
        assert_eq!(row("nq_em"), "nq_em 0.5000 –");
        assert_eq!(row("paper nq_em"), "paper nq_em [1] 0.4130 –");
        assert!(table.ends_with("[1] LLaMA-7B\n"), "{table}");
    }

    #[test]
    fn the_loss_at_a_step_is_the_last_recorded_up_to_it() {
        let root = tempfile::tempdir().unwrap();
        let exp = Experiment::default();
        let dir = root.path().join("r");
        // Steps 1 to 3, stopped, resumed from a checkpoint at 2.
        write_log(
            &dir,
            &[
                started(&exp),
                step(1, 4.0, 1.0),
                step(2, 3.0, 1.0),
                step(3, 2.5, 1.0),
                Event::Stopped { step: 3 },
                started(&exp),
                step(3, 2.0, 1.0),
                step(5, 1.5, 1.0),
            ],
        );
        let r = RunRecord::read(&dir);
        assert_eq!(r.loss_at(0), None);
        assert_eq!(r.loss_at(1), Some((1, 4.0)));
        assert_eq!(r.loss_at(2), Some((2, 3.0)));
        // The resumed start's step 3, not the first one's.
        assert_eq!(r.loss_at(3), Some((3, 2.0)));
        assert_eq!(r.loss_at(4), Some((3, 2.0)));
        assert_eq!(r.loss_at(5), Some((5, 1.5)));
        assert_eq!(r.loss_at(99), Some((5, 1.5)));
    }

    #[test]
    fn grouped_counts() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_048_576), "1,048,576");
    }
}
