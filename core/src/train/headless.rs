//! Runs without the TUI: the headless sink (a progress line on a terminal,
//! plain lines otherwise, and a closing summary table), and the signals
//! that stop a headless run safely.

use crate::event::{Event, Sink, StepEvent, Summary};
use anyhow::Result;
use std::io::{IsTerminal, Write};
use std::path::Path;

fn bytes(b: f64) -> String {
    crate::units::bytes(b.max(0.0).round() as u64)
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
                bytes(s.traffic.h2d() as f64),
                bytes(s.traffic.d2h() as f64)
            );
        }
        line
    }

    fn print(&mut self, ev: &Event) {
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
                .map(|v| format!("   planned {}", bytes(*v)))
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
            rows.push((label.into(), format!("{}{}", bytes(value), planned(key))));
        }
        // On the CPU the planner's host and device memory are one heap.
        if s.heap_peak > 0 && s.predicted.contains_key("process_peak") {
            rows.push((
                "peak heap (allocator)".into(),
                format!("{}{}", bytes(s.heap_peak as f64), planned("process_peak")),
            ));
        }
        if !s.rss_peaks.is_empty() {
            let phases: Vec<String> = ["train", "checkpoint", "eval"]
                .iter()
                .filter_map(|p| {
                    s.rss_peaks
                        .get(*p)
                        .map(|b| format!("{p} {}", bytes(*b as f64)))
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

impl Sink for Printer {
    fn handle(&mut self, ev: &Event) -> Result<()> {
        self.print(ev);
        Ok(())
    }
}

/// Print a run's progress until it ends, then its summary table.
pub fn watch(mut handle: super::RunHandle, dir: &Path) -> Result<Summary> {
    let mut printer = Printer::new(dir);
    crate::event::pump(handle.events.iter(), &mut printer)?;
    if let Some(t) = handle.thread.take() {
        let _ = t.join();
    }
    if let Some(err) = printer.failed {
        anyhow::bail!("{err}");
    }
    if let Some(d) = printer.diverged {
        return Err(d.into());
    }
    match printer.finished {
        Some(s) => {
            println!("\nsummary ({})", dir.display());
            print!("{}", Printer::summary_table(&s, printer.paper.as_ref()));
            Ok(s)
        }
        None => anyhow::bail!("the run ended without a summary"),
    }
}

/// `meft run`: train `exp` (or resume `dir`) headless, with SIGINT and
/// SIGTERM asking for a safe stop.
pub fn run(exp: crate::config::Experiment, dir: &Path, resume: bool) -> Result<Summary> {
    stop_signal::install();
    let handle = super::start(exp, dir.to_path_buf(), resume)?;
    let control = handle.control.clone();
    std::thread::spawn(move || loop {
        if stop_signal::received().is_some() {
            let _ = control.send(super::Control::Stop);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    });
    let summary = watch(handle, dir)?;
    if let Some(sig) = stop_signal::received() {
        println!(
            "stopped at step {}: resume with `meft run --resume {}`, look back with `meft replay {}`",
            summary.steps,
            dir.display(),
            dir.display()
        );
        return Err(Interrupted(sig).into());
    }
    Ok(summary)
}

/// A headless run that a signal stopped safely; the process exits with
/// 128 + the signal.
#[derive(Debug)]
pub struct Interrupted(pub i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped by signal {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// SIGINT and SIGTERM during a headless run: the first asks the trainer to
/// stop after its current step (checkpoint, summary); a second ends the
/// process at once, leaving the last complete checkpoint.
mod stop_signal {
    use std::sync::atomic::{AtomicI32, Ordering};

    static SIGNAL: AtomicI32 = AtomicI32::new(0);

    #[cfg(unix)]
    extern "C" fn on_signal(sig: libc::c_int) {
        if SIGNAL.swap(sig, Ordering::SeqCst) != 0 {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(128 + sig) };
        }
    }

    pub fn install() {
        #[cfg(unix)]
        // SAFETY: the handler only touches an atomic and calls _exit.
        unsafe {
            let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::signal(libc::SIGINT, handler);
            libc::signal(libc::SIGTERM, handler);
        }
    }

    pub fn received() -> Option<i32> {
        match SIGNAL.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }
}
