//! The headless sink: a progress line on a terminal (plain lines otherwise)
//! and a closing summary table.

use super::event::{Event, StepEvent, Summary};
use std::io::{IsTerminal, Write};

fn human_bytes(b: f64) -> String {
    crate::telemetry::human_bytes(b.max(0.0).round() as u64)
}

pub struct Printer {
    tty: bool,
    last_plain: std::time::Instant,
    pub finished: Option<Summary>,
    pub failed: Option<String>,
    pub diverged: Option<super::Diverged>,
    /// The step a stop request ended the run at.
    pub stopped: Option<u64>,
    pub run_dir: String,
    /// The paper's figure for this setting, from the run's config.
    pub paper: Option<crate::config::PaperFigure>,
}

impl Printer {
    pub fn new(run_dir: &std::path::Path) -> Self {
        Self {
            tty: std::io::stdout().is_terminal(),
            last_plain: std::time::Instant::now() - std::time::Duration::from_secs(10),
            finished: None,
            failed: None,
            diverged: None,
            stopped: None,
            run_dir: run_dir.display().to_string(),
            paper: None,
        }
    }

    fn step_line(s: &StepEvent) -> String {
        let tok_s = if s.wall_ms > 0.0 {
            s.tokens as f64 / (s.wall_ms / 1e3)
        } else {
            0.0
        };
        let mut line = format!(
            "step {}/{} loss {:.4} lr {:.2e} |g| {:.3} {:.0} tok/s",
            s.step, s.total_steps, s.loss, s.lr, s.grad_norm, tok_s
        );
        if s.traffic.h2d() + s.traffic.d2h() > 0 {
            line += &format!(
                " H→D {} D→H {}",
                human_bytes(s.traffic.h2d() as f64),
                human_bytes(s.traffic.d2h() as f64)
            );
        }
        line
    }

    pub fn handle(&mut self, ev: &Event) {
        let mut out = std::io::stdout();
        match ev {
            Event::RunStarted { info, .. } => {
                self.paper = crate::config::Experiment::from_toml(&info.config_toml, "run config")
                    .ok()
                    .and_then(|e| e.paper);
                let _ = writeln!(
                    out,
                    "{} · {} · {} · {} · {} steps{}",
                    info.name,
                    info.adapter,
                    info.model,
                    info.device,
                    info.total_steps,
                    info.resumed_from
                        .map(|s| format!(" (resumed at step {s})"))
                        .unwrap_or_default()
                );
                let _ = writeln!(out, "run directory: {}", self.run_dir);
            }
            Event::Step(s) => {
                let line = Self::step_line(s);
                if self.tty {
                    let bar_w = 24;
                    let filled = (s.step as usize * bar_w) / (s.total_steps.max(1) as usize);
                    let bar: String = "█".repeat(filled) + &"░".repeat(bar_w - filled.min(bar_w));
                    let _ = write!(out, "\r\x1b[2K{bar} {line}");
                    let _ = out.flush();
                } else if self.last_plain.elapsed().as_secs_f64() >= 2.0
                    || s.step == s.total_steps
                    || s.step == 1
                {
                    self.last_plain = std::time::Instant::now();
                    let _ = writeln!(out, "{line}");
                }
            }
            Event::Eval(e) => {
                if self.tty {
                    let _ = writeln!(out);
                }
                let m: Vec<String> = e
                    .metrics
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.4}"))
                    .collect();
                let _ = writeln!(
                    out,
                    "eval at step {} on {} rows: {}",
                    e.step,
                    e.n,
                    m.join(" · ")
                );
            }
            Event::Checkpoint { step, path } if !self.tty => {
                let _ = writeln!(out, "checkpoint at step {step}: {path}");
            }
            Event::Finished { summary } => self.finished = Some(summary.clone()),
            Event::Failed { error, .. } => self.failed = Some(error.clone()),
            Event::Diverged { step, what } => {
                self.diverged = Some(super::Diverged {
                    step: *step,
                    what: what.clone(),
                })
            }
            Event::Message { text } => {
                let _ = writeln!(out, "{text}");
            }
            Event::Stopped { step } => self.stopped = Some(*step),
            _ => {}
        }
    }

    pub fn summary_table(s: &Summary, paper: Option<&crate::config::PaperFigure>) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("steps".into(), s.steps.to_string()),
            (
                "loss (first → final)".into(),
                format!("{:.4} → {:.4}", s.first_loss, s.final_loss),
            ),
            ("tokens/s".into(), format!("{:.0}", s.tokens_per_s)),
            ("wall time".into(), format!("{:.1} s", s.wall_s)),
        ];
        // Measured figures with the planner's prediction for the same run
        // beside them, so the two can be read against each other.
        let planned = |key: &str| {
            s.predicted
                .get(key)
                .map(|v| format!("   planned {}", human_bytes(*v)))
                .unwrap_or_default()
        };
        let measured = [
            ("host→device / step", s.h2d_per_step, "h2d_per_step"),
            ("device→host / step", s.d2h_per_step, "d2h_per_step"),
            (
                "peak device ledger",
                s.peak_device_ledger as f64,
                "device_ledger",
            ),
            ("peak host ledger", s.peak_host_ledger as f64, "host_ledger"),
        ];
        for (label, value, key) in measured {
            rows.push((
                label.into(),
                format!("{}{}", human_bytes(value), planned(key)),
            ));
        }
        // On the CPU the planner's host and device memory are one heap.
        if s.heap_peak > 0 && s.predicted.contains_key("process_peak") {
            rows.push((
                "peak heap (allocator)".into(),
                format!(
                    "{}{}",
                    human_bytes(s.heap_peak as f64),
                    planned("process_peak")
                ),
            ));
        }
        if !s.rss_peaks.is_empty() {
            let phases: Vec<String> = ["train", "checkpoint", "eval"]
                .iter()
                .filter_map(|p| {
                    s.rss_peaks
                        .get(*p)
                        .map(|b| format!("{p} {}", human_bytes(*b as f64)))
                })
                .collect();
            rows.push(("peak RSS (VmHWM) after".into(), phases.join(" · ")));
        }
        if s.median_step_s > 0.0 {
            rows.push(("median step".into(), format!("{:.3} s", s.median_step_s)));
        }
        for (k, v) in &s.metrics {
            rows.push((k.clone(), format!("{v:.4}")));
        }
        if let Some(p) = paper {
            let ours = s
                .metrics
                .get(&p.metric)
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "not measured".into());
            rows.push((
                format!("{} ours vs paper", p.metric),
                format!("{ours} vs {:.3} ({})", p.value, p.setting),
            ));
        }
        let w = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
        let mut t = String::new();
        for (k, v) in rows {
            t += &format!("  {k:<w$}  {v}\n");
        }
        t
    }
}
