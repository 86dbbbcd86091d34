//! A run another process trains, reached through its directory: commands
//! are files dropped in `RUN_DIR/control/` that the trainer picks up between
//! steps (each one's effect is an event in its log), and the run is watched
//! by following `events.jsonl` as it grows. Any number of viewers may do
//! both at once; a viewer that dies leaves nothing the run depends on.

use super::{Control, RunHandle, RunLock};
use crate::event::Event;
use anyhow::{Context, Result};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where commands for a run are dropped.
pub const CONTROL_DIR: &str = "control";
/// How often the trainer looks for commands and a viewer for new events.
const POLL: Duration = Duration::from_millis(100);
/// How long a viewer waits for a run's process to take its directory.
const START_WAIT: Duration = Duration::from_secs(60);

fn word(c: Control) -> &'static str {
    match c {
        Control::Pause => "pause",
        Control::Resume => "resume",
        Control::Stop => "stop",
        Control::Checkpoint => "checkpoint",
        Control::EvalNow => "eval",
        Control::ScaleLr { up: true } => "lr*2",
        Control::ScaleLr { up: false } => "lr/2",
    }
}

fn parse(word: &str) -> Option<Control> {
    Some(match word.trim() {
        "pause" => Control::Pause,
        "resume" => Control::Resume,
        "stop" => Control::Stop,
        "checkpoint" => Control::Checkpoint,
        "eval" => Control::EvalNow,
        "lr*2" => Control::ScaleLr { up: true },
        "lr/2" => Control::ScaleLr { up: false },
        _ => return None,
    })
}

/// Ask the run in `dir` to do `c` at its next step boundary: a command
/// file, written under a temporary name and renamed, so the trainer never
/// reads half of one.
pub fn send(dir: &Path, c: Control) -> Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let control = dir.join(CONTROL_DIR);
    std::fs::create_dir_all(&control)
        .with_context(|| format!("{}: cannot create", control.display()))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        // A clock set before 1970 only loses the order across processes;
        // the process id and the sequence still keep the names distinct.
        .unwrap_or(0);
    let name = format!(
        "{nanos:020}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let path = control.join(format!("{name}.cmd"));
    crate::fsx::write_atomic(&path, word(c).as_bytes())
        .with_context(|| format!("{}: cannot write", path.display()))
}

/// The commands waiting in `dir`, oldest first, each removed as it is read.
fn take_commands(dir: &Path) -> Vec<Control> {
    let Ok(entries) = std::fs::read_dir(dir.join(CONTROL_DIR)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cmd"))
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).ok();
            let _ = std::fs::remove_file(&p);
            text.as_deref().and_then(parse)
        })
        .collect()
}

/// The trainer's side: commands left from an earlier process are dropped,
/// then every command dropped in `dir` goes to `to` until `done`.
pub fn spawn_poller(
    dir: &Path,
    to: Sender<Control>,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let _ = take_commands(dir);
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        while !done.load(Ordering::Relaxed) {
            for c in take_commands(&dir) {
                if to.send(c).is_err() {
                    return;
                }
            }
            std::thread::sleep(POLL);
        }
    })
}

/// Whether a process holds the run in `dir` (is training it).
pub fn is_training(dir: &Path) -> bool {
    RunLock::ensure_free(dir).is_err()
}

/// Follow the run in `dir` that another process trains (or is about to):
/// its events from the first as they are appended, ending once no process
/// holds the run and nothing more comes; commands sent on the handle's
/// control reach it through [`send`].
pub fn attach(dir: &Path) -> Result<RunHandle> {
    anyhow::ensure!(dir.is_dir(), "{}: no such run directory", dir.display());
    let (ev_tx, ev_rx) = channel::<Event>();
    let (ctl_tx, ctl_rx) = channel::<Control>();
    let to = dir.to_path_buf();
    std::thread::spawn(move || {
        for c in ctl_rx {
            let _ = send(&to, c);
        }
    });
    let from = dir.to_path_buf();
    std::thread::spawn(move || follow(&from, &ev_tx));
    Ok(RunHandle {
        events: ev_rx,
        control: ctl_tx,
        run_dir: dir.to_path_buf(),
        thread: None,
    })
}

/// Send the log's events to `to` as they come; see [`attach`].
fn follow(dir: &Path, to: &Sender<Event>) {
    let path = dir.join("events.jsonl");
    let began = Instant::now();
    let mut seen_process = false;
    let mut file: Option<std::fs::File> = None;
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let training = is_training(dir);
        seen_process |= training;
        if file.is_none() {
            file = std::fs::File::open(&path).ok();
        }
        let mut grew = false;
        if let Some(f) = file.as_mut() {
            loop {
                match f.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        pending.extend_from_slice(&chunk[..n]);
                        grew = true;
                    }
                }
            }
            // Whole lines only: the writer may be between a line and its
            // newline.
            while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                let Ok(ev) = serde_json::from_slice::<Event>(&line) else {
                    continue;
                };
                if to.send(ev).is_err() {
                    return;
                }
            }
            // A log rewritten from the start (a resume trims it) is read again.
            if let (Ok(meta), Ok(pos)) = (f.metadata(), f.stream_position()) {
                if meta.len() < pos {
                    file = None;
                    pending.clear();
                    continue;
                }
            }
        }
        let waited_out = !seen_process && began.elapsed() > START_WAIT;
        if !grew && !training && (seen_process || waited_out) {
            return;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_taken_once_in_the_order_sent() {
        let dir = tempfile::tempdir().unwrap();
        for c in [
            Control::Pause,
            Control::Checkpoint,
            Control::ScaleLr { up: true },
            Control::Resume,
        ] {
            send(dir.path(), c).unwrap();
        }
        std::fs::write(dir.path().join(CONTROL_DIR).join("x.cmd"), "bogus").unwrap();
        assert_eq!(
            take_commands(dir.path()),
            [
                Control::Pause,
                Control::Checkpoint,
                Control::ScaleLr { up: true },
                Control::Resume
            ]
        );
        assert!(take_commands(dir.path()).is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join(CONTROL_DIR))
                .unwrap()
                .count(),
            0
        );
    }
}
