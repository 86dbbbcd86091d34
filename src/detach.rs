//! Runs that outlive the terminal: `meft run --detach` and the TUI start
//! the trainer as a process of its own (its own session, so a hangup of
//! the terminal does not reach it), its output in `RUN_DIR/run.log`;
//! `meft attach` and `meft stop` reach it through its directory
//! ([`crate::train::remote`]).

use anyhow::{Context, Result};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// The detached trainer's output.
pub const LOG: &str = "run.log";

/// Start `meft run` on the run in `dir` (a new directory holding its
/// config.toml, or with `resume` one to continue) as a detached process,
/// and wait until it has started training: returns its process id, or the
/// reason it did not start.
pub fn spawn(dir: &Path, resume: bool) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("cannot find the meft executable")?;
    let log_path = dir.join(LOG);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("{}: cannot create", log_path.display()))?;
    // Read from the start of what this process will write, even if a run
    // that does not start removes its directory (and the file's name).
    let mut said = std::fs::File::open(&log_path)?;
    let start = log.metadata()?.len();
    std::io::Seek::seek(&mut said, std::io::SeekFrom::Start(start))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("run");
    match resume {
        true => cmd.arg("--resume").arg(dir),
        false => cmd.arg("--into").arg(dir),
    };
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches nothing of the
    // parent's; it gives the child a session without a terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let events_before = std::fs::metadata(dir.join("events.jsonl"))
        .map(|m| m.len())
        .unwrap_or(0);
    let mut child = cmd.spawn().context("cannot start the trainer")?;
    let pid = child.id();
    let mut text = String::new();
    loop {
        let mut more = String::new();
        let _ = said.read_to_string(&mut more);
        text.push_str(&more);
        if started(dir, events_before) {
            return Ok(pid);
        }
        if let Some(status) = child.try_wait()? {
            let _ = said.read_to_string(&mut text);
            let why = text
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("meft: "))
                .map(str::to_string)
                .unwrap_or_else(|| format!("the trainer exited ({status}) before it started"));
            anyhow::bail!("{why}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the run's log has a `run_started` after its first `from` bytes.
fn started(dir: &Path, from: u64) -> bool {
    use std::io::Seek;
    let Ok(mut f) = std::fs::File::open(dir.join("events.jsonl")) else {
        return false;
    };
    let mut text = String::new();
    f.seek(std::io::SeekFrom::Start(from)).is_ok()
        && f.read_to_string(&mut text).is_ok()
        && text.contains("\"type\":\"run_started\"")
}

/// `meft stop`: ask the run in `dir` for a safe stop and wait until its
/// process has let the run go.
pub fn stop(dir: &Path) -> Result<()> {
    use crate::train::remote;
    anyhow::ensure!(
        remote::is_training(dir),
        "{}: no process is training this run",
        dir.display()
    );
    remote::send(dir, crate::train::Control::Stop)?;
    while remote::is_training(dir) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let events = crate::event::read_events(dir)?;
    let stopped = events.iter().rev().find_map(|e| match e {
        crate::event::Event::Stopped { step } => Some(format!("stopped at step {step}")),
        _ => None,
    });
    let finished = || {
        events.iter().rev().find_map(|e| match e {
            crate::event::Event::Finished { summary } => {
                Some(format!("finished at step {}", summary.steps))
            }
            _ => None,
        })
    };
    let steps = stopped.or_else(finished).unwrap_or_else(|| "ended".into());
    let checkpoint = crate::checkpoint::latest(&dir.join("checkpoints"))
        .map(|(s, _)| format!("; its newest checkpoint is of step {s}"))
        .unwrap_or_default();
    println!("{}: {steps}{checkpoint}", dir.display());
    Ok(())
}
