//! The training loop, control handling, checkpoints, the run directory and
//! the [`event::Event`] stream.
//!
//! A run is three threads: the trainer, the telemetry sampler, and a hub that
//! appends every event to `events.jsonl` (flushed per event, so step events
//! are never lost) and forwards it to whoever watches (the TUI or the
//! headless printer). A slow watcher never blocks the trainer.

pub mod evaluation;
pub mod export;
pub mod headless;
pub mod ledger;
pub mod method;
pub mod objective;
pub mod pretrain;
pub mod probe;
pub mod remote;
pub mod runs;
pub mod step;
pub mod tally;
pub mod trainer;

use crate::config::Experiment;
use crate::event::{Event, EVENT_VERSION};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};

/// A run stopped because its loss or gradient norm stopped being finite.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("step {step}: {what}: the run diverged (lower train.lr or set train.clip); the newest checkpoint is the last finite state")]
pub struct Diverged {
    pub step: u64,
    /// What stopped being finite, e.g. "the loss is NaN and the gradient norm inf".
    pub what: String,
}

/// Held for the life of a run: an exclusive lock on `RUN_DIR/lock`, which
/// names the process holding it. The kernel drops the lock when the process
/// ends, however it ends, so a crashed run never blocks its resume.
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    pub fn acquire(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join("lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("{}: cannot open the run's lock", path.display()))?;
        Self::take(&file, run_dir)?;
        use std::io::Seek;
        file.set_len(0)?;
        file.seek(std::io::SeekFrom::Start(0))?;
        writeln!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(Self { _file: file })
    }

    /// Fail, naming the holder, when another process writes `run_dir`;
    /// writes nothing either way.
    pub fn ensure_free(run_dir: &Path) -> Result<()> {
        match std::fs::File::open(run_dir.join("lock")) {
            Ok(file) => Self::take(&file, run_dir),
            Err(_) => Ok(()),
        }
    }

    fn take(file: &std::fs::File, run_dir: &Path) -> Result<()> {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a descriptor the caller owns.
            let taken =
                unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
            if !taken {
                let holder = std::fs::read_to_string(run_dir.join("lock")).unwrap_or_default();
                anyhow::bail!(
                    "{}: another meft process (pid {}) is writing this run; wait for it to end or stop it",
                    run_dir.display(),
                    holder.trim()
                );
            }
        }
        let _ = (file, run_dir);
        Ok(())
    }
}

/// Where `meft run --resume` would pick up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumePoint {
    /// From the checkpoint of this step.
    At(u64),
    /// The run already trained all its steps; there is nothing to do.
    Finished(u64),
}

/// Check that `run_dir` can be resumed under `exp` (its config, with any
/// `--set` applied) and say from where. Reads only.
pub fn resume_point(run_dir: &Path, exp: &Experiment) -> Result<ResumePoint> {
    RunLock::ensure_free(run_dir)?;
    check_data(exp, run_dir)?;
    let Some((step, _)) = crate::checkpoint::latest(&run_dir.join("checkpoints")) else {
        anyhow::bail!(
            "{}: no checkpoint to resume from; start the run again without --resume",
            run_dir.display()
        );
    };
    let events = match run_dir.join("events.jsonl").is_file() {
        true => read_events(run_dir)?,
        false => Vec::new(),
    };
    let last_start = events
        .iter()
        .rposition(|e| matches!(e, Event::RunStarted { .. }));
    let recorded_total = last_start.and_then(|i| match &events[i] {
        Event::RunStarted { info, .. } => Some(info.total_steps),
        _ => None,
    });
    let finished = last_start.is_some_and(|i| {
        events[i..]
            .iter()
            .any(|e| matches!(e, Event::Finished { .. }))
    });
    let wanted = match exp.train.steps {
        0 => recorded_total.unwrap_or(u64::MAX),
        n => n as u64,
    };
    Ok(if finished && step >= wanted {
        ResumePoint::Finished(step)
    } else {
        ResumePoint::At(step)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Control {
    Pause,
    Resume,
    Stop,
    Checkpoint,
    EvalNow,
    /// The learning rate ×2 (`up`) or ÷2 from the next step on.
    ScaleLr {
        up: bool,
    },
}

pub struct RunHandle {
    pub events: Receiver<Event>,
    pub control: Sender<Control>,
    pub run_dir: PathBuf,
    pub thread: Option<std::thread::JoinHandle<()>>,
}

/// A new run directory `root/<name>-<YYYYmmdd-HHMMSS>` (suffixed if taken).
pub fn new_run_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let stamp = utc_stamp(secs);
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    std::fs::create_dir_all(root)
        .with_context(|| format!("{}: cannot create the runs directory", root.display()))?;
    // create_dir fails on a name that exists, so two runs started at once
    // never share a directory.
    let mut i = 1;
    loop {
        let dir = match i {
            1 => root.join(format!("{safe}-{stamp}")),
            _ => root.join(format!("{safe}-{stamp}-{i}")),
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::create_dir_all(dir.join("checkpoints")).with_context(|| {
                    format!("{}: cannot create the run directory", dir.display())
                })?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && i < 10_000 => i += 1,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("{}: cannot create the run directory", dir.display()))
            }
        }
    }
}

fn utc_stamp(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = crate::units::civil_date(days as i64);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

pub use crate::event::read_events;

/// After a crash the log may hold steps past the last checkpoint; they will
/// be trained again, so drop them (and anything after them) before resuming.
fn forget_after_checkpoint(run_dir: &Path) -> Result<()> {
    let path = run_dir.join("events.jsonl");
    if !path.is_file() {
        return Ok(());
    }
    let kept_step = crate::checkpoint::latest(&run_dir.join("checkpoints"))
        .map(|(s, _)| s)
        .unwrap_or(0);
    let events = read_events(&path)?;
    let cut = events
        .iter()
        .position(|e| matches!(e, Event::Step(s) if s.step > kept_step))
        .unwrap_or(events.len());
    // A torn last line (a crash mid-write) is dropped too, so that what is
    // appended next starts on a line of its own.
    let torn = std::fs::read(&path)
        .map(|b| b.last().is_some_and(|&c| c != b'\n'))
        .unwrap_or(false);
    if cut == events.len() && !torn {
        return Ok(());
    }
    let mut text = String::new();
    for ev in &events[..cut] {
        text.push_str(&serde_json::to_string(ev)?);
        text.push('\n');
    }
    crate::fsx::write_atomic(&path, text.as_bytes())?;
    Ok(())
}

/// Append every event to `events.jsonl` and forward it. The first write
/// that fails (a full disk, say) stops the run: the trainer is told to stop
/// and the watcher gets a `failed` event naming the file.
fn spawn_hub(
    run_dir: &Path,
    logs: &[crate::config::LogFormat],
    from: Receiver<Event>,
    to: Sender<Event>,
    control: Sender<Control>,
) -> Result<std::thread::JoinHandle<()>> {
    use crate::config::LogFormat;
    use crate::telemetry::logs::{CsvSink, TensorBoardSink};
    let mut sinks: Vec<Box<dyn crate::event::Sink + Send>> = vec![Box::new(
        crate::event::JsonlSink::append(&run_dir.join("events.jsonl"))?,
    )];
    for format in logs {
        sinks.push(match format {
            LogFormat::Tensorboard => Box::new(TensorBoardSink::create(&run_dir.join("tb"))?),
            LogFormat::Csv => Box::new(CsvSink::append(&run_dir.join("metrics.csv"))?),
        });
    }
    let mut sinks = Some(sinks);
    Ok(std::thread::spawn(move || {
        let mut finished = false;
        for ev in from {
            // A reading the sampler took as the run ended is not part of it:
            // the log ends with the run's last event.
            if finished && matches!(ev, Event::Telemetry(_)) {
                continue;
            }
            finished |= matches!(ev, Event::Finished { .. });
            if let Some(all) = sinks.as_mut() {
                if let Some(e) = all.iter_mut().find_map(|s| s.handle(&ev).err()) {
                    sinks = None;
                    let _ = control.send(Control::Stop);
                    let _ = to.send(Event::Failed {
                        step: 0,
                        error: crate::fsx::error_line(&e),
                    });
                }
            }
            let _ = to.send(ev);
        }
    }))
}

/// Start a run (or resume the one in `resume`) on background threads. A
/// new run refused here leaves no directory behind.
pub fn start(exp: Experiment, run_dir: PathBuf, resume: bool) -> Result<RunHandle> {
    let dir = run_dir.clone();
    launch(exp, run_dir, resume).inspect_err(|_| forget_unstarted(&dir, resume))
}

/// A new run that never started (its device, data or model would not
/// load; no `run_started` in its log) is removed: nothing in it was
/// trained. A directory another process holds is left alone.
fn forget_unstarted(dir: &Path, resume: bool) {
    if resume || !dir.is_dir() || RunLock::ensure_free(dir).is_err() {
        return;
    }
    let started = read_events(dir)
        .map(|ev| ev.iter().any(|e| matches!(e, Event::RunStarted { .. })))
        .unwrap_or(dir.join("events.jsonl").exists());
    if !started {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn launch(exp: Experiment, run_dir: PathBuf, resume: bool) -> Result<RunHandle> {
    exp.validate()?;
    // A device this build cannot open stops the run before it writes
    // anything.
    crate::model::load::cuda_ordinal(&exp.model.device)?;
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("{}: cannot create the run directory", run_dir.display()))?;
    let lock = RunLock::acquire(&run_dir)?;
    if resume {
        forget_after_checkpoint(&run_dir)?;
    } else {
        exp.save(&run_dir.join("config.toml"))?;
    }
    let (tx, hub_rx) = channel::<Event>();
    let (ui_tx, ui_rx) = channel::<Event>();
    let (ctl_tx, ctl_rx) = channel::<Control>();
    crate::checkpoint::remove_stray_temporaries(&run_dir);
    crate::checkpoint::remove_stray_temporaries(&run_dir.join("checkpoints"));
    let hub = spawn_hub(&run_dir, &exp.train.log, hub_rx, ui_tx, ctl_tx.clone())?;
    // Commands from other processes (meft attach, meft stop, the TUI).
    let polling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = remote::spawn_poller(&run_dir, ctl_tx.clone(), polling.clone());
    // The sampler drops readings rather than wait; a forwarder feeds them in.
    let (sample_tx, sample_rx) = std::sync::mpsc::sync_channel::<Event>(4);
    let sampler = crate::telemetry::spawn_sampler(
        crate::telemetry::sampler::DEFAULT_PERIOD,
        std::time::Instant::now(),
        sample_tx,
    );
    let forward = tx.clone();
    std::thread::spawn(move || {
        for ev in sample_rx {
            if forward.send(ev).is_err() {
                break;
            }
        }
    });
    let dir = run_dir.clone();
    let thread = std::thread::Builder::new()
        .name("meft-trainer".into())
        .spawn(move || {
            let failed = tx.clone();
            let result = run_trainer(exp, &dir, resume, tx, ctl_rx);
            sampler.stop();
            polling.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = poller.join();
            let refused = result.is_err();
            if let Err(e) = result {
                let ev = match e.downcast_ref::<Diverged>() {
                    Some(d) => Event::Diverged {
                        step: d.step,
                        what: d.what.clone(),
                    },
                    None => Event::Failed {
                        step: 0,
                        error: crate::fsx::error_line(&e),
                    },
                };
                let _ = failed.send(ev);
            }
            drop(failed);
            let _ = hub.join();
            drop(lock);
            // A run whose data or model would not load never started: its
            // watcher has the reason, and nothing of it stays on disk.
            if refused {
                forget_unstarted(&dir, resume);
            }
        })?;
    Ok(RunHandle {
        events: ui_rx,
        control: ctl_tx,
        run_dir,
        thread: Some(thread),
    })
}

/// The experiment's base model on its device, in its dtype.
pub fn load_base(exp: &Experiment) -> Result<crate::model::LoadedModel> {
    let device = crate::model::load::device_of(&exp.model.device)?;
    let dtype = exp.model.dtype.dtype();
    let reference = crate::model::ModelRef::parse(&exp.model.reference)
        .map_err(|e| anyhow::anyhow!("model.reference: {e}"))?;
    Ok(crate::model::load::load_model_as(
        &reference, &device, dtype,
    )?)
}

/// A data file a run reads, by size and FNV-1a hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct DataPrint {
    field: String,
    path: String,
    bytes: u64,
    fnv1a64: String,
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a 64 of `bytes`, continuing from `hash`.
fn fnv1a64(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash = (hash ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// FNV-1a 64 of a model's weights as loaded (each as f32, little-endian, in
/// `named_tensors` order, names included): whatever file they came from,
/// the same weights give the same print.
pub fn weights_fingerprint(model: &crate::model::Model) -> Result<String> {
    let mut hash = FNV_START;
    for (name, t) in model.named_tensors() {
        hash = fnv1a64(hash, name.as_bytes());
        let v: Vec<f32> = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        for x in v {
            hash = fnv1a64(hash, &x.to_le_bytes());
        }
    }
    Ok(format!("{hash:016x}"))
}

/// [`weights_fingerprint`] of the run's base.
pub fn base_fingerprint(exp: &Experiment) -> Result<String> {
    weights_fingerprint(&load_base(exp)?.model)
}

fn data_print(field: &str, path: &Path) -> Result<DataPrint> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)
        .with_context(|| format!("{field}: {}: cannot read", path.display()))?;
    let (mut hash, mut bytes) = (FNV_START, 0u64);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("{field}: {}: cannot read", path.display()))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hash = fnv1a64(hash, &buf[..n]);
    }
    Ok(DataPrint {
        field: field.into(),
        path: path.display().to_string(),
        bytes,
        fnv1a64: format!("{hash:016x}"),
    })
}

fn data_prints(exp: &Experiment) -> Result<Vec<DataPrint>> {
    let (_, train, test) = crate::data::spec::data_files(exp)?;
    let mut now = vec![data_print("data.train", &train)?];
    if let Some(t) = &test {
        now.push(data_print("data.eval", t)?);
    }
    // A `split:` or `test:` validation is drawn from the training or test
    // file, printed above.
    let validation = &exp.data.validation;
    let drawn = crate::data::spec::split_share(validation).is_some()
        || crate::data::spec::test_share(validation).is_some();
    if !validation.is_empty() && !drawn {
        now.push(data_print(
            "data.validation",
            std::path::Path::new(validation),
        )?);
    }
    Ok(now)
}

/// A new run records its data files in `RUN_DIR/data.json`.
fn record_data(exp: &Experiment, dir: &Path) -> Result<()> {
    let now = data_prints(exp)?;
    crate::fsx::write_atomic(
        &dir.join("data.json"),
        serde_json::to_string_pretty(&now)?.as_bytes(),
    )?;
    Ok(())
}

/// A resume checks that the recorded data files are still the same, so it
/// never trains on other data. Reads only.
fn check_data(exp: &Experiment, dir: &Path) -> Result<()> {
    let record = dir.join("data.json");
    if record.is_file() {
        let now = data_prints(exp)?;
        let text = std::fs::read_to_string(&record)
            .with_context(|| format!("{}: cannot read", record.display()))?;
        let then: Vec<DataPrint> = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a data record", record.display()))?;
        for (a, b) in then.iter().zip(&now) {
            if a != b {
                anyhow::bail!(
                    "{}: {} is not the file this run started with ({} bytes, hash {} then; {} bytes, hash {} now); resuming would train on other data",
                    a.field,
                    b.path,
                    a.bytes,
                    a.fnv1a64,
                    b.bytes,
                    b.fnv1a64
                );
            }
        }
    }
    Ok(())
}

fn run_trainer(
    exp: Experiment,
    dir: &Path,
    resume: bool,
    tx: Sender<Event>,
    ctl: Receiver<Control>,
) -> Result<()> {
    if !resume {
        record_data(&exp, dir)?;
    }
    let loaded = load_base(&exp)?;
    let mut t = trainer::Trainer::new(exp, loaded, dir, tx.clone(), ctl)?;
    let mut resumed = None;
    if resume {
        if let Some((_, path)) = crate::checkpoint::latest(&dir.join("checkpoints")) {
            resumed = Some(t.restore(&path)?);
            // The summary covers the whole run, not just this part of it.
            for e in read_events(dir)? {
                if let Event::Step(s) = e {
                    t.tally.add_step(&s);
                }
            }
        }
    }
    let info = t.run_info(resumed)?;
    let _ = tx.send(Event::RunStarted {
        version: EVENT_VERSION,
        info,
    });
    t.run()?;
    Ok(())
}

/// `meft eval`: decode the run's test split with its latest checkpoint and
/// score it (the same evaluation a run ends with), with the base and the
/// method built as the run built them and restored from the checkpoint.
pub fn evaluate_run(
    run_dir: &Path,
    limit: Option<usize>,
    sets: &[String],
) -> Result<crate::event::EvalEvent> {
    let mut sets = sets.to_vec();
    sets.extend(limit.map(|l| format!("eval.limit={l}")));
    let mut r = export::restore_run(run_dir, None, &sets)?;
    let (_, test) = crate::data::spec::load_data(&r.exp)?;
    evaluation::evaluate(&r.exp, &r.model, &r.tokenizer, &mut r.method, &test, r.step)?
        .context("the run has no test split to evaluate (set data.eval)")
}
