//! Runs without the TUI: the headless sink (a progress line on a terminal,
//! plain lines otherwise, and a closing summary table), and the signals
//! that stop a headless run safely.

use crate::event::{EvalSplit, Event, Sink, StepEvent, Summary};
use anyhow::Result;
use std::io::{IsTerminal, Write};
use std::path::Path;

fn bytes(b: f64) -> String {
    crate::units::bytes(b.max(0.0).round() as u64)
}

pub struct Printer {
    tty: bool,
    last_plain: std::time::Instant,
    /// When training began (the `run_started` event) and at which step.
    began: Option<(std::time::Instant, u64)>,
    /// Tokens and step wall time since then, for the mean throughput.
    tokens: u64,
    wall_ms: f64,
    /// The progress line last drawn on the terminal, redrawn under any
    /// line printed while it shows.
    bar: Option<String>,
    pub finished: Option<Summary>,
    pub failed: Option<String>,
    pub diverged: Option<super::Diverged>,
    /// The step a stop request ended the run at.
    pub stopped: Option<u64>,
    pub run_dir: String,
    /// The paper's figure for this setting, from the run's config.
    pub paper: Option<crate::config::PaperFigure>,
    /// Only the terminal's progress line, cleared at the end: for callers
    /// that print their own line per run.
    pub quiet: bool,
}

impl Printer {
    pub fn new(run_dir: &std::path::Path) -> Self {
        Self {
            tty: std::io::stdout().is_terminal(),
            last_plain: std::time::Instant::now() - std::time::Duration::from_secs(10),
            began: None,
            tokens: 0,
            wall_ms: 0.0,
            bar: None,
            finished: None,
            failed: None,
            diverged: None,
            stopped: None,
            run_dir: run_dir.display().to_string(),
            paper: None,
            quiet: false,
        }
    }

    /// One step's progress, most telling first: where, the loss, mean
    /// throughput, time spent and to go, then the step's details.
    /// `elapsed` is seconds since training began at step `from`.
    fn step_parts(&self, s: &StepEvent, elapsed: f64, from: u64) -> Vec<String> {
        let tok_s = if self.wall_ms > 0.0 {
            self.tokens as f64 / (self.wall_ms / 1e3)
        } else {
            0.0
        };
        let done = s.step.saturating_sub(from);
        let eta = if done > 0 {
            elapsed / done as f64 * s.total_steps.saturating_sub(s.step) as f64
        } else {
            f64::NAN
        };
        let mut parts = vec![
            format!("step {}/{}", s.step, s.total_steps),
            format!("loss {:.4}", s.loss),
            format!("{} tok/s", crate::units::count(tok_s)),
            format!("elapsed {}", crate::units::duration(elapsed)),
            format!("ETA {}", crate::units::duration(eta)),
            format!("lr {:.2e}", s.lr),
            format!("|g| {:.4}", s.grad_norm),
        ];
        if s.traffic.h2d() + s.traffic.d2h() > 0 {
            parts.push(format!(
                "H→D {} D→H {}",
                bytes(s.traffic.h2d() as f64),
                bytes(s.traffic.d2h() as f64)
            ));
        }
        parts
    }

    fn step_line(&self, s: &StepEvent, elapsed: f64, from: u64) -> String {
        self.step_parts(s, elapsed, from).join(" · ")
    }

    /// The terminal's progress line: a bar, then as many whole parts as
    /// fit in `width` columns, so it never wraps (a wrapped line cannot
    /// be redrawn in place).
    fn bar_line(s: &StepEvent, parts: &[String], width: usize) -> String {
        let bar_w = if width >= 100 { 24 } else { 12 };
        let filled = ((s.step as usize * bar_w) / (s.total_steps.max(1) as usize)).min(bar_w);
        let mut line = "█".repeat(filled) + &"░".repeat(bar_w - filled);
        let mut used = bar_w;
        for (i, p) in parts.iter().enumerate() {
            let sep = if i == 0 { " " } else { " · " };
            let w = sep.chars().count() + p.chars().count();
            // Keep the last column free: some terminals wrap on writing it.
            if used + w >= width && i > 0 {
                break;
            }
            line += sep;
            line += p;
            used += w;
        }
        line
    }

    /// A line of its own; on a terminal it goes above the progress line.
    fn line(&mut self, text: &str) {
        if self.quiet {
            return;
        }
        let mut out = std::io::stdout();
        if self.tty {
            let _ = write!(
                out,
                "\r\x1b[2K{text}\n{}",
                self.bar.as_deref().unwrap_or("")
            );
            let _ = out.flush();
        } else {
            let _ = writeln!(out, "{text}");
        }
    }

    /// Leave the progress line as it stands and go on below it.
    fn end_bar(&mut self) {
        if self.bar.take().is_some() {
            let mut out = std::io::stdout();
            let _ = match self.quiet {
                true => write!(out, "\r\x1b[2K"),
                false => writeln!(out),
            };
            let _ = out.flush();
        }
    }

    fn print(&mut self, ev: &Event) {
        match ev {
            Event::RunStarted { info, .. } => {
                self.paper = crate::config::Experiment::from_toml(&info.config_toml, "run config")
                    .ok()
                    .and_then(|e| e.paper);
                self.began = Some((std::time::Instant::now(), info.resumed_from.unwrap_or(0)));
                self.line(&format!(
                    "{} · {} · {} · {} · {} steps{}",
                    info.name,
                    info.adapter,
                    info.model,
                    info.device,
                    info.total_steps,
                    info.resumed_from
                        .map(|s| format!(" (resumed at step {s})"))
                        .unwrap_or_default()
                ));
                self.line(&format!("run directory: {}", self.run_dir));
            }
            Event::Step(s) => {
                self.tokens += s.tokens;
                self.wall_ms += s.wall_ms;
                let (t0, from) = *self
                    .began
                    .get_or_insert_with(|| (std::time::Instant::now(), s.step.saturating_sub(1)));
                let elapsed = t0.elapsed().as_secs_f64();
                if self.tty {
                    let parts = self.step_parts(s, elapsed, from);
                    let bar = Self::bar_line(s, &parts, terminal_width().unwrap_or(80));
                    let mut out = std::io::stdout();
                    let _ = write!(out, "\r\x1b[2K{bar}");
                    let _ = out.flush();
                    self.bar = Some(bar);
                } else if self.last_plain.elapsed().as_secs_f64() >= 2.0
                    || s.step == s.total_steps
                    || s.step == 1
                {
                    self.last_plain = std::time::Instant::now();
                    let line = self.step_line(s, elapsed, from);
                    self.line(&line);
                }
            }
            Event::Eval(e) => {
                let loss = e.loss.filter(|_| !e.metrics.contains_key("loss"));
                let m: Vec<String> = loss
                    .map(|l| format!("loss {l:.4}"))
                    .into_iter()
                    .chain(e.metrics.iter().map(|(k, v)| format!("{k} {v:.4}")))
                    .collect();
                let split = match e.split {
                    EvalSplit::Test => "eval",
                    EvalSplit::Validation => "validation",
                };
                self.line(&format!(
                    "{split} at step {} on {} rows: {}",
                    e.step,
                    e.n,
                    m.join(" · ")
                ));
            }
            Event::Checkpoint { step, path } => {
                self.line(&format!("checkpoint at step {step}: {path}"));
            }
            Event::Finished { summary } => {
                self.end_bar();
                self.finished = Some(summary.clone());
            }
            Event::Failed { error, .. } => {
                self.end_bar();
                self.failed = Some(error.clone());
            }
            Event::Diverged { step, what } => {
                self.end_bar();
                self.diverged = Some(super::Diverged {
                    step: *step,
                    what: what.clone(),
                })
            }
            Event::Message { text } => self.line(text),
            Event::Stopped { step } => self.stopped = Some(*step),
            _ => {}
        }
    }

    /// The closing table: what the run measured (and its device ledger,
    /// modelled, said so), with the planner's prediction for the same
    /// figure beside it where there is one ("–" where the plan has none),
    /// then its metrics against the paper's.
    pub fn summary_table(s: &Summary, paper: Option<&crate::config::PaperFigure>) -> String {
        let planned = |key: &str| {
            s.predicted
                .get(key)
                .map(|v| bytes(*v))
                .unwrap_or_else(|| "–".into())
        };
        let row = |label: &str, measured: String, planned: String| {
            vec![label.to_string(), measured, planned]
        };
        let mut rows: Vec<Vec<String>> = vec![
            row("steps", s.steps.to_string(), String::new()),
            row(
                "loss (first → final)",
                format!("{:.4} → {:.4}", s.first_loss, s.final_loss),
                String::new(),
            ),
            row("tokens/s", format!("{:.0}", s.tokens_per_s), String::new()),
            row("wall time", format!("{:.3} s", s.wall_s), String::new()),
        ];
        if s.median_step_s > 0.0 {
            rows.push(row(
                "median step",
                format!("{:.3} s", s.median_step_s),
                String::new(),
            ));
        }
        let measured = [
            ("host→device / step", s.h2d_per_step, "h2d_per_step"),
            ("device→host / step", s.d2h_per_step, "d2h_per_step"),
            (
                // Base and trainable measured from their tensors, the rest
                // the planner's formulas at the run's shapes and unions.
                "peak device ledger (modelled)",
                s.peak_device_ledger as f64,
                "device_ledger",
            ),
            (
                "peak host memory (ledger)",
                s.peak_host_ledger as f64,
                "host_ledger",
            ),
        ];
        for (label, value, key) in measured {
            rows.push(row(label, bytes(value), planned(key)));
        }
        if let Some(used) = s.peak_device_used {
            rows.push(row(
                "peak device memory (NVML, measured)",
                bytes(used as f64),
                planned("device_ledger"),
            ));
        }
        if let Some(c) = s.row_cache {
            rows.push(row(
                "row cache hits",
                format!(
                    "{:.1} % of {}",
                    100.0 * c.hit_rate().unwrap_or(0.0),
                    crate::units::count((c.hits + c.misses) as f64)
                ),
                String::new(),
            ));
        }
        // On the CPU the planner's host and device memory are one heap.
        if s.heap_peak > 0 && s.predicted.contains_key("process_peak") {
            rows.push(row(
                "peak heap (allocator)",
                bytes(s.heap_peak as f64),
                planned("process_peak"),
            ));
        }
        for phase in ["train", "checkpoint", "eval"] {
            if let Some(b) = s.rss_peaks.get(phase) {
                rows.push(row(
                    &format!("peak RSS after {phase}"),
                    bytes(*b as f64),
                    String::new(),
                ));
            }
        }
        for (k, v) in &s.metrics {
            rows.push(row(k, format!("{v:.4}"), String::new()));
        }
        if let Some(p) = paper {
            let ours = s
                .metrics
                .get(&p.metric)
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "not measured".into());
            rows.push(row(
                &format!("{} ours vs paper", p.metric),
                format!("{ours} vs {:.4}", p.value),
                String::new(),
            ));
        }
        let header = ["", "this run", "planned"].map(String::from);
        let table = super::runs::text_table(&header, &rows, &[false, true, true]);
        let mut out: String = table.lines().map(|l| format!("  {l}\n")).collect();
        if let Some(p) = paper {
            out += &format!("  paper: {}\n", p.setting);
        }
        out
    }
}

impl Sink for Printer {
    fn handle(&mut self, ev: &Event) -> Result<()> {
        self.print(ev);
        Ok(())
    }
}

/// Columns of the terminal on stdout, when it is one.
fn terminal_width() -> Option<usize> {
    #[cfg(unix)]
    {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ fills the winsize it is given.
        let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
        if ok && ws.ws_col > 0 {
            return Some(ws.ws_col as usize);
        }
    }
    None
}

/// Print a run's progress until it ends, then its summary table.
pub fn watch(handle: super::RunHandle, dir: &Path) -> Result<Summary> {
    watch_with(handle, dir, false)
}

/// [`watch`], or with `quiet` only a progress line on a terminal and no
/// summary table.
fn watch_with(mut handle: super::RunHandle, dir: &Path, quiet: bool) -> Result<Summary> {
    let mut printer = Printer::new(dir);
    printer.quiet = quiet;
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
            if !quiet {
                let _ = write!(
                    std::io::stdout(),
                    "\nsummary ({})\n{}",
                    dir.display(),
                    Printer::summary_table(&s, printer.paper.as_ref())
                );
            }
            Ok(s)
        }
        None => anyhow::bail!("the run ended without a summary"),
    }
}

/// `meft run`: train `exp` (or resume `dir`) headless, with SIGINT,
/// SIGTERM and SIGHUP (the terminal hung up) asking for a safe stop.
pub fn run(exp: crate::config::Experiment, dir: &Path, resume: bool) -> Result<Summary> {
    run_with(exp, dir, resume, false)
}

/// [`run`], printing with `quiet` only a progress line on a terminal.
pub fn run_with(
    exp: crate::config::Experiment,
    dir: &Path,
    resume: bool,
    quiet: bool,
) -> Result<Summary> {
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
    // A run whose data or model would not load has removed its directory
    // by the time this returns (the trainer thread does, and it is joined).
    let summary = watch_with(handle, dir, quiet)?;
    if let Some(sig) = stop_signal::received() {
        // After a hangup the terminal is gone: what cannot be said is not.
        let _ = writeln!(
            std::io::stdout(),
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

/// SIGINT, SIGTERM and SIGHUP during a headless run: the first asks the
/// trainer to stop after its current step (checkpoint, summary); a second
/// ends the process at once, leaving the last complete checkpoint.
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
            libc::signal(libc::SIGHUP, handler);
        }
    }

    pub fn received() -> Option<i32> {
        match SIGNAL.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Traffic;

    #[test]
    fn the_summary_puts_each_plan_beside_its_measurement() {
        let mut s: Summary = serde_json::from_str(
            r#"{"steps":3,"final_loss":2.5,"first_loss":4.0,"tokens_per_s":1234.4,
                "wall_s":1.5,"h2d_per_step":2048.0,"d2h_per_step":1024.0,
                "peak_device_ledger":3145728,"peak_host_ledger":1048576,
                "median_step_s":0.25,"metrics":{"nq_em":0.5},
                "predicted":{"h2d_per_step":2048.0,"d2h_per_step":1536.0,"device_ledger":4194304}}"#,
        )
        .unwrap();
        s.rss_peaks.insert("train".into(), 64 << 20);
        let paper = crate::config::PaperFigure {
            metric: "nq_em".into(),
            value: 0.413,
            setting: "LLaMA-7B".into(),
        };
        let t = Printer::summary_table(&s, Some(&paper));
        let want = "                                         this run  planned
  steps                                         3
  loss (first → final)            4.0000 → 2.5000
  tokens/s                                   1234
  wall time                               1.500 s
  median step                             0.250 s
  host→device / step                        2 KiB    2 KiB
  device→host / step                        1 KiB  1.5 KiB
  peak device ledger (modelled)             3 MiB    4 MiB
  peak host memory (ledger)                 1 MiB        –
  peak RSS after train                     64 MiB
  nq_em                                    0.5000
  nq_em ours vs paper            0.5000 vs 0.4130
  paper: LLaMA-7B
";
        assert_eq!(t, want, "\n{t}");
    }

    #[test]
    fn the_progress_line_says_time_spent_and_to_go() {
        let mut p = Printer::new(Path::new("runs/x"));
        p.tokens = 3000;
        p.wall_ms = 1500.0;
        let s = StepEvent {
            step: 30,
            total_steps: 100,
            epoch: 0.0,
            loss: 2.5,
            lr: 1e-3,
            grad_norm: 0.5,
            tokens: 100,
            wall_ms: 50.0,
            traffic: Traffic::default(),
            union_sizes: vec![],
            picks: vec![],
            rows_updated: 0,
            row_cache: None,
        };
        // Resumed at step 10: 20 steps in 40 s, so 70 to go take 140 s.
        assert_eq!(
            p.step_line(&s, 40.0, 10),
            "step 30/100 · loss 2.5000 · 2.0k tok/s · elapsed 40s · ETA 2m20s · lr 1.00e-3 · |g| 0.5000"
        );
        // At 80 columns the bar keeps whole parts only, and never wraps.
        let bar = Printer::bar_line(&s, &p.step_parts(&s, 40.0, 10), 80);
        assert_eq!(
            bar,
            "███░░░░░░░░░ step 30/100 · loss 2.5000 · 2.0k tok/s · elapsed 40s · ETA 2m20s"
        );
        assert!(bar.chars().count() < 80);
    }
}
