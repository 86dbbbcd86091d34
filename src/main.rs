//! The `meft` command line: parse, dispatch, report errors as one line.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use meft::model::generate::{generate, GenerateOptions};
use meft::model::{load_model, ModelRef, NoHooks};

#[derive(Parser)]
#[command(
    name = "meft",
    version,
    about = "Memory-efficient fine-tuning with sparse adapters offloaded to host memory"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Write a synthetic dataset in a task's real format (train and test files).
    Synth {
        #[arg(long)]
        task: meft::data::Task,
        #[arg(long, default_value_t = 200)]
        entities: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Distinct values per attribute.
        #[arg(long, default_value_t = 24)]
        pool: usize,
        /// Keeps worlds apart: different namespaces never share a name.
        #[arg(long, default_value_t = 0)]
        namespace: u64,
        /// SQuAD only: add unanswerable questions (written as v2.0).
        #[arg(long)]
        unanswerable: bool,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Load a dataset file and report its records, or the first bad one.
    Check {
        #[arg(long)]
        format: meft::data::Task,
        file: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum Command {
    /// The interactive workbench: set up a run, then watch it live.
    Tui {
        /// Start from this experiment file instead of the defaults.
        #[arg(long)]
        preset: Option<std::path::PathBuf>,
        /// Directory that run directories are created in.
        #[arg(long, default_value = "runs")]
        out: std::path::PathBuf,
    },
    /// A recorded run in the dashboard, scrubbable with ←/→ and Home/End.
    Replay { run_dir: std::path::PathBuf },
    /// The dashboard of a run as a picture (.svg, .png) or text (.txt).
    Screenshot {
        run_dir: std::path::PathBuf,
        #[arg(long)]
        out: std::path::PathBuf,
        /// Columns x rows of the rendered terminal.
        #[arg(long, default_value = "120x40")]
        size: String,
        /// Show the dashboard as it was at this step (default: the end).
        #[arg(long)]
        step: Option<u64>,
    },
    /// Train headless: progress, a run directory, a summary table.
    Run {
        /// The experiment (preset) TOML; not needed with --resume.
        config: Option<std::path::PathBuf>,
        /// Override any field: --set method.meft.top_k=64
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Directory that run directories are created in.
        #[arg(long, default_value = "runs")]
        out: std::path::PathBuf,
        /// Continue a run from its last checkpoint.
        #[arg(long, value_name = "RUN_DIR")]
        resume: Option<std::path::PathBuf>,
    },
    /// Pretrain the embedded tiny base on a synthetic world of its own and
    /// write it to assets/tiny.
    Pretrain {
        #[arg(long, default_value_t = 100)]
        entities: usize,
        #[arg(long, default_value_t = 11)]
        seed: u64,
        #[arg(long, default_value_t = 3000)]
        steps: usize,
        #[arg(long, default_value_t = 3e-3)]
        lr: f64,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value = "assets/tiny")]
        out: std::path::PathBuf,
    },
    /// Decode a run's test split with its latest checkpoint and score it.
    Eval {
        run_dir: std::path::PathBuf,
        /// Score only the first N test rows (default: the run's eval.limit).
        #[arg(long)]
        limit: Option<usize>,
        /// Override the run's config for this evaluation, e.g.
        /// eval.decoding="beam" or eval.beams=4.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Predicted device memory, host memory and bytes per step, with and without MEFT.
    Plan {
        config: std::path::PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Device memory to check the fit against, e.g. 24GiB.
        #[arg(long)]
        gpu_mem: Option<String>,
        /// Assume |U| = this fraction of M per layer instead of the worst case.
        #[arg(long = "union")]
        union_fraction: Option<f64>,
        /// Measure N, |U| and the rows the host optimizer will touch with
        /// forward passes over the run's first micro-batches (up to this
        /// many) at its initial state; needs the model's weights and data.
        #[arg(long, value_name = "MICRO_BATCHES", num_args = 0..=1, default_missing_value = "64")]
        probe: Option<usize>,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Datasets: synthesise, check.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Score a predictions file against a gold file with every metric of the format.
    Score {
        #[arg(long)]
        format: meft::data::Task,
        #[arg(long)]
        gold: std::path::PathBuf,
        #[arg(long)]
        pred: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Continue a prompt with a base model (greedy or beam search).
    Generate {
        /// embedded:tiny, embedded:tiny-random, hf:DIR, gguf:FILE, or a path.
        #[arg(long, default_value = "embedded:tiny")]
        model: String,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 1)]
        beams: usize,
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f32,
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
    },
}

fn run(cli: Cli) -> Result<()> {
    let command = cli.command.unwrap_or(Command::Tui {
        preset: None,
        out: "runs".into(),
    });
    match command {
        Command::Tui { preset, out } => {
            let exp = match preset {
                Some(p) => meft::config::Experiment::load(&p)?,
                None => meft::config::Experiment::default(),
            };
            std::fs::create_dir_all(&out)?;
            let _log = StderrToFile::open(&out.join("meft-tui.log"))?;
            meft::tui::run_app(
                exp,
                Box::new(meft::tui::launch::RunLauncher { root: out }),
                meft::tui::launch::planner_preview(),
            )
        }
        Command::Replay { run_dir } => {
            let events = meft::tui::read_events(&run_dir)?;
            meft::tui::run_replay(events, &run_dir)
        }
        Command::Screenshot {
            run_dir,
            out,
            size,
            step,
        } => {
            // The cheap arguments first, so a typo is not hidden behind the log.
            let size = meft::tui::parse_size(&size)?;
            meft::tui::export::picture_format(&out)?;
            let events = meft::tui::read_events(&run_dir)?;
            meft::tui::screenshot(&events, step, size, &out)?;
            println!("{}", out.display());
            Ok(())
        }
        Command::Run {
            config,
            sets,
            out,
            resume,
        } => run_headless(config, sets, out, resume),
        Command::Data { command } => data_command(command),
        Command::Eval {
            run_dir,
            limit,
            sets,
            json,
        } => {
            let ev = meft::train::evaluate_run(&run_dir, limit, &sets)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&ev)?);
            } else {
                println!("{} rows at step {}", ev.n, ev.step);
                for (k, v) in &ev.metrics {
                    println!("  {k:<14} {v:.4}");
                }
                for (q, p, g) in &ev.samples {
                    println!("  {q:?} → {p:?} (gold {g:?})");
                }
            }
            Ok(())
        }
        Command::Pretrain {
            entities,
            seed,
            steps,
            lr,
            batch,
            out,
        } => {
            use meft::train::pretrain::{experiment, export_base, PretrainOptions};
            let opts = PretrainOptions {
                entities,
                seed,
                steps,
                lr,
                batch,
                out,
                ..Default::default()
            };
            let exp = experiment(&opts)?;
            let dir = meft::train::new_run_dir(&opts.runs, &exp.name)?;
            let summary =
                watch_headless(meft::train::start(exp.clone(), dir.clone(), false)?, &dir)?;
            let weights = export_base(&dir, &opts.out, &exp)?;
            println!(
                "base written to {} (nq_em on its own facts: {:.3})",
                weights.display(),
                summary.metrics.get("nq_em").copied().unwrap_or(f64::NAN)
            );
            Ok(())
        }
        Command::Plan {
            config,
            sets,
            gpu_mem,
            union_fraction,
            probe,
            json,
        } => {
            let exp = meft::config::Experiment::load(&config)?.apply_sets(&sets)?;
            let gpu = gpu_mem
                .map(|g| meft::telemetry::parse_bytes(&g))
                .transpose()?;
            let observed = probe.map(|limit| probe_run(&exp, limit)).transpose()?;
            print!(
                "{}",
                meft::telemetry::plan::report(&exp, gpu, union_fraction, observed.as_ref(), json)?
            );
            if json {
                println!();
            }
            Ok(())
        }
        Command::Score {
            format,
            gold,
            pred,
            json,
        } => {
            let report = meft::eval::score::score(format, &gold, &pred)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
        Command::Generate {
            model,
            prompt,
            beams,
            repetition_penalty,
            max_new_tokens,
        } => {
            anyhow::ensure!(beams >= 1, "--beams: must be at least 1");
            anyhow::ensure!(
                repetition_penalty > 0.0,
                "--repetition-penalty: must be positive"
            );
            let device = candle_core::Device::Cpu;
            let reference = ModelRef::parse(&model)?;
            let loaded = load_model(&reference, &device)?;
            let tok = &loaded.tokenizer;
            let ids = tok.encode_prompt(&prompt).context("encoding the prompt")?;
            let opts = GenerateOptions {
                max_new_tokens,
                beams,
                repetition_penalty,
            };
            let out = generate(
                &loaded.model,
                &[ids],
                &opts,
                &tok.stop_ids,
                tok.pad_id,
                &mut NoHooks,
            )?;
            let text = tok.decode(out.first().map(Vec::as_slice).unwrap_or(&[]))?;
            println!("{text}");
            Ok(())
        }
    }
}

/// `meft plan --probe`: measure the run's first micro-batches, with a
/// progress line on stderr.
fn probe_run(
    exp: &meft::config::Experiment,
    limit: usize,
) -> Result<meft::telemetry::plan::Observed> {
    anyhow::ensure!(limit >= 1, "--probe: probe at least one micro-batch");
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let p = meft::train::probe::probe(exp, limit, &mut |done, of| {
        if tty {
            eprint!("\rprobing micro-batch {done}/{of}");
        }
        if done == of {
            if tty {
                eprintln!();
            } else {
                eprintln!("probed {of} micro-batches");
            }
        }
    })?;
    let rows = if p.extrapolated {
        format!(
            "rows touched by the end followed out from {} of the run's {} micro-batches",
            p.micro_batches, p.run_micro_batches
        )
    } else {
        format!("all {} micro-batches of the run", p.run_micro_batches)
    };
    Ok(meft::telemetry::plan::Observed {
        tokens: p.tokens,
        seq: p.seq,
        unions: p.unions,
        moment_rows: Some(p.touched_at_end),
        source: format!("N, |U| and touched rows probed at the initial state ({rows})"),
    })
}

fn run_headless(
    config: Option<std::path::PathBuf>,
    sets: Vec<String>,
    out: std::path::PathBuf,
    resume: Option<std::path::PathBuf>,
) -> Result<()> {
    use meft::config::Experiment;
    let (exp, dir, resuming) = match (resume, config) {
        (Some(dir), _) => {
            let exp = Experiment::load(&dir.join("config.toml"))?.apply_sets(&sets)?;
            (exp, dir, true)
        }
        (None, Some(path)) => {
            let exp = Experiment::load(&path)?.apply_sets(&sets)?;
            exp.validate()?;
            let dir = meft::train::new_run_dir(&out, &exp.name)?;
            (exp, dir, false)
        }
        (None, None) => anyhow::bail!("run: give a config file or --resume RUN_DIR"),
    };
    exp.validate()?;
    if resuming {
        if let meft::train::ResumePoint::Finished(step) = meft::train::resume_point(&dir, &exp)? {
            println!(
                "{}: the run finished at step {step}; nothing to resume (to train further: meft run --resume {} --set train.steps=N)",
                dir.display(),
                dir.display()
            );
            return Ok(());
        }
        if !sets.is_empty() {
            exp.save(&dir.join("config.toml"))?;
        }
    }
    stop_signal::install();
    let handle = meft::train::start(exp, dir.clone(), resuming)?;
    let control = handle.control.clone();
    std::thread::spawn(move || loop {
        if stop_signal::received().is_some() {
            let _ = control.send(meft::train::Control::Stop);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    });
    let summary = watch_headless(handle, &dir)?;
    if let Some(sig) = stop_signal::received() {
        println!(
            "stopped at step {}: resume with `meft run --resume {}`, look back with `meft replay {}`",
            summary.steps,
            dir.display(),
            dir.display()
        );
        return Err(Interrupted(sig).into());
    }
    Ok(())
}

/// Print a run's progress until it ends, then its summary table.
fn watch_headless(
    mut handle: meft::train::RunHandle,
    dir: &std::path::Path,
) -> Result<meft::train::event::Summary> {
    let mut printer = meft::train::headless::Printer::new(dir);
    for ev in handle.events.iter() {
        printer.handle(&ev);
    }
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
            print!(
                "{}",
                meft::train::headless::Printer::summary_table(&s, printer.paper.as_ref())
            );
            Ok(s)
        }
        None => anyhow::bail!("the run ended without a summary"),
    }
}

fn data_command(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Synth {
            task,
            entities,
            seed,
            pool,
            namespace,
            unanswerable,
            out,
        } => {
            let spec = meft::data::synth::WorldSpec {
                entities,
                seed,
                pool,
                namespace,
                unanswerable,
                ..Default::default()
            };
            let report = meft::data::synth::write(task, &spec, &out)?;
            println!("{report}");
        }
        DataCommand::Check { format, file } => {
            let report = meft::data::check(format, &file)?;
            println!("{report}");
        }
    }
    Ok(())
}

/// While the TUI owns the terminal, anything a library writes to stderr goes
/// to a log file instead of over the screen; dropping this puts stderr back.
struct StderrToFile {
    #[cfg(unix)]
    saved: i32,
}

impl StderrToFile {
    fn open(path: &std::path::Path) -> Result<Self> {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("{}: cannot open the log", path.display()))?;
            // SAFETY: plain descriptor duplication; `file` outlives the dup2.
            let saved = unsafe { libc::dup(2) };
            unsafe { libc::dup2(file.as_raw_fd(), 2) };
            Ok(Self { saved })
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            Ok(Self {})
        }
    }
}

impl Drop for StderrToFile {
    fn drop(&mut self) {
        #[cfg(unix)]
        if self.saved >= 0 {
            // SAFETY: restores the descriptor saved in `open`.
            unsafe {
                libc::dup2(self.saved, 2);
                libc::close(self.saved);
            }
        }
    }
}

/// Training allocates and frees the same large buffers every step; glibc's
/// default hands each one back to the kernel, so every step pays for fresh
/// zeroed pages. Keep them in the heap instead.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

fn main() {
    keep_freed_memory();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        if let Some(Interrupted(sig)) = e.downcast_ref::<Interrupted>() {
            std::process::exit(128 + sig);
        }
        eprintln!("meft: {}", meft::fsx::error_line(&e));
        // A diverged run is a training outcome, not bad input.
        let code = if e.downcast_ref::<meft::train::Diverged>().is_some() {
            1
        } else {
            2
        };
        std::process::exit(code);
    }
}

/// A headless run that a signal stopped safely; exits 128 + the signal.
#[derive(Debug)]
struct Interrupted(i32);

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
