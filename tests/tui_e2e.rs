//! The real binary in a real terminal (tmux): start on the defaults, watch it
//! train, take a screenshot, quit with confirmation, and check the terminal
//! was handed back in its normal state.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn capture(session: &str) -> String {
    tmux(&["capture-pane", "-p", "-t", session])
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn step_of(screen: &str) -> Option<u64> {
    let at = screen.find("step ")?;
    let rest = &screen[at + 5..];
    let end = rest.find('/')?;
    rest[..end].trim().parse().ok()
}

fn line_with<'a>(screen: &'a str, needle: &str) -> Option<&'a str> {
    screen.lines().find(|l| l.contains(needle))
}

#[test]
#[ignore = "needs tmux (apt-get install tmux), then --include-ignored"]
fn tui_trains_screenshots_and_quits_cleanly() {
    assert!(
        Command::new("tmux").arg("-V").output().is_ok(),
        "tmux is not installed: apt-get install tmux"
    );
    let dir = tempfile::tempdir().unwrap();
    let session = format!("meft-e2e-{}", std::process::id());
    let bin = env!("CARGO_BIN_EXE_meft");
    let done = dir.path().join("exit-code");
    let script = format!(
        "cd {} && MEFT_CACHE={}/.cache {} tui --out runs; echo $? > {}; sleep 30",
        dir.path().display(),
        dir.path().display(),
        bin,
        done.display()
    );
    let cleanup = new_session(&session, &script);

    wait_for("the setup screen", Duration::from_secs(20), || {
        capture(&session).contains("new run")
    });
    // Enter on the first row (Preset) lists the presets; on any other it starts.
    tmux(&["send-keys", "-t", &session, "Tab"]);
    tmux(&["send-keys", "-t", &session, "Enter"]);
    wait_for("20 training steps", Duration::from_secs(240), || {
        step_of(&capture(&session)).is_some_and(|s| s >= 20)
    });
    let a = capture(&session);
    wait_for("more steps", Duration::from_secs(120), || {
        step_of(&capture(&session)) > step_of(&a).map(|s| s + 3)
    });
    let b = capture(&session);
    // The loss pane's headline and the bytes pane's history moved on.
    let (la, lb) = (
        line_with(&a, "raw ").unwrap(),
        line_with(&b, "raw ").unwrap(),
    );
    assert_ne!(la, lb, "loss pane did not change:\n{a}\n{b}");
    let (pa, pb) = (line_with(&a, "H→D").unwrap(), line_with(&b, "H→D").unwrap());
    assert!(pa.contains("MiB") || pa.contains("KiB"), "{pa}");
    let sa: Vec<&str> = a
        .lines()
        .skip_while(|l| !l.contains("H→D"))
        .take(5)
        .collect();
    let sb: Vec<&str> = b
        .lines()
        .skip_while(|l| !l.contains("H→D"))
        .take(5)
        .collect();
    assert!(sa != sb || pa != pb, "bytes pane did not change:\n{a}\n{b}");

    tmux(&["send-keys", "-t", &session, "s"]);
    let runs = dir.path().join("runs");
    wait_for("a screenshot", Duration::from_secs(20), || svg_in(&runs));
    tmux(&["send-keys", "-t", &session, "q"]);
    wait_for("the quit question", Duration::from_secs(10), || {
        let s = capture(&session);
        s.contains("quit?") && s.contains("y stop it")
    });
    tmux(&["send-keys", "-t", &session, "y"]);
    wait_for("the program to exit", Duration::from_secs(60), || {
        done.is_file()
    });
    assert_eq!(std::fs::read_to_string(&done).unwrap().trim(), "0");
    // Quitting mid-run stopped it safely: a checkpoint, a summary, and the
    // way back printed on the restored terminal.
    let run_dir = the_run_under(&runs);
    assert!(meft::checkpoint::latest(&run_dir.join("checkpoints")).is_some());
    assert!(run_dir.join("summary.json").is_file());
    let after = capture(&session);
    assert!(after.contains("resume with `meft run --resume"), "{after}");
    let flags = tmux(&[
        "display-message",
        "-p",
        "-t",
        &session,
        "#{alternate_on} #{cursor_flag}",
    ]);
    assert_eq!(
        flags.trim(),
        "0 1",
        "alternate screen and cursor after exit"
    );
    drop(cleanup);
}

fn svg_in(runs: &Path) -> bool {
    std::fs::read_dir(runs)
        .into_iter()
        .flatten()
        .flatten()
        .any(|run| {
            std::fs::read_dir(run.path().join("screenshots"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|f| f.path().extension().is_some_and(|x| x == "svg"))
        })
}

/// The run the TUI started outlives it: the tmux session (the terminal)
/// killed mid-run, the run trains on to its summary; another viewer
/// attached mid-run sees its steps advance, leaves with `d`, comes back.
#[test]
#[ignore = "needs tmux (apt-get install tmux), then --include-ignored"]
fn a_run_outlives_the_terminal_and_takes_viewers() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_meft");
    let preset = long_example(dir.path(), 150, 1000);
    let session = format!("meft-outlive-{}", std::process::id());
    let script = format!(
        "cd {} && MEFT_CACHE={}/.cache {bin} tui --preset {} --out runs",
        dir.path().display(),
        dir.path().display(),
        preset.display()
    );
    let tui = new_session(&session, &script);
    wait_for("the setup screen", Duration::from_secs(20), || {
        capture(&session).contains("new run")
    });
    tmux(&["send-keys", "-t", &session, "Tab"]);
    tmux(&["send-keys", "-t", &session, "Enter"]);
    wait_for("5 training steps", Duration::from_secs(120), || {
        step_of(&capture(&session)).is_some_and(|s| s >= 5)
    });
    let runs = dir.path().join("runs");
    let run_dir = the_run_under(&runs);
    // The terminal goes away.
    drop(tui);
    assert!(
        meft::train::remote::is_training(&run_dir),
        "the run died with its terminal"
    );
    // A viewer from another terminal sees it advance, and leaves it be.
    let viewer = format!("meft-viewer-{}", std::process::id());
    let v = new_session(
        &viewer,
        &format!("{bin} attach {}; sleep 30", run_dir.display()),
    );
    wait_for("the attached dashboard", Duration::from_secs(20), || {
        step_of(&capture(&viewer)).is_some()
    });
    let first = step_of(&capture(&viewer)).unwrap();
    wait_for("live steps", Duration::from_secs(60), || {
        step_of(&capture(&viewer)).is_some_and(|s| s > first)
    });
    tmux(&["send-keys", "-t", &viewer, "d"]);
    wait_for("the viewer to leave", Duration::from_secs(10), || {
        capture(&viewer).contains("trains on in its own process")
    });
    drop(v);
    // The run finishes by itself.
    wait_for("the run to finish", Duration::from_secs(300), || {
        !meft::train::remote::is_training(&run_dir)
    });
    assert!(run_dir.join("summary.json").is_file());
    let records = meft::train::runs::list(&runs).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].state, meft::train::runs::RunState::Finished);
}

/// The example preset with `steps` steps and a checkpoint every
/// `checkpoint_every`, written to `dir/long.toml`.
fn long_example(dir: &Path, steps: usize, checkpoint_every: u64) -> std::path::PathBuf {
    let preset = dir.join("long.toml");
    let mut exp = meft::config::Experiment::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/presets/example.toml"
    )))
    .unwrap();
    exp.train.steps = steps;
    exp.train.checkpoint_every = checkpoint_every as _;
    exp.eval.limit = 5;
    exp.save(&preset).unwrap();
    preset
}

/// The run directory the TUI made under `runs`.
fn the_run_under(runs: &Path) -> std::path::PathBuf {
    std::fs::read_dir(runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("events.jsonl").is_file())
        .expect("a run directory")
}

struct Session(String);
impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}
/// A detached 120×40 tmux session running `script`, killed when dropped.
fn new_session(name: &str, script: &str) -> Session {
    sized_session(name, script, 120, 40)
}

fn sized_session(name: &str, script: &str, w: u16, h: u16) -> Session {
    let (w, h) = (w.to_string(), h.to_string());
    tmux(&["new-session", "-d", "-s", name, "-x", &w, "-y", &h, script]);
    Session(name.to_string())
}

/// Tab through the setup screen until `field` has the focus marker.
fn focus(session: &str, field: &str) {
    for _ in 0..30 {
        if capture(session)
            .lines()
            .any(|l| l.contains(&format!("▸{field}")))
        {
            return;
        }
        tmux(&["send-keys", "-t", session, "Tab"]);
        std::thread::sleep(Duration::from_millis(150));
    }
    panic!("no field {field}:\n{}", capture(session));
}

/// At 80×24 as a user would: pick the nq preset from the list, change M
/// and K, start, open the events pane, quit; then `meft runs` lists the
/// run and `meft compare` charts it against a second one as a PNG.
#[test]
#[ignore = "needs tmux (apt-get install tmux), then --include-ignored"]
fn picker_to_events_pane_then_runs_and_compare() {
    let dir = tempfile::tempdir().unwrap();
    let session = format!("meft-pick-{}", std::process::id());
    let bin = env!("CARGO_BIN_EXE_meft");
    let done = dir.path().join("exit-code");
    let runs = dir.path().join("runs");
    // From the repository, where the picker finds presets/.
    let script = format!(
        "cd {} && MEFT_CACHE={}/.cache {bin} tui --out {}; echo $? > {}; sleep 30",
        env!("CARGO_MANIFEST_DIR"),
        dir.path().display(),
        runs.display(),
        done.display()
    );
    let cleanup = sized_session(&session, &script, 80, 24);
    wait_for("the setup screen", Duration::from_secs(20), || {
        capture(&session).contains("new run")
    });
    let keys = |k: &str| {
        tmux(&["send-keys", "-t", &session, k]);
        std::thread::sleep(Duration::from_millis(150));
    };
    // The picker lists the presets; nq is loaded from it.
    keys("Enter");
    wait_for("the preset list", Duration::from_secs(10), || {
        capture(&session).contains("squad")
    });
    for _ in 0..10 {
        let s = capture(&session);
        if s.lines().any(|l| l.contains("▸") && l.contains("nq")) {
            break;
        }
        keys("Down");
    }
    keys("Enter");
    wait_for("nq loaded", Duration::from_secs(10), || {
        capture(&session)
            .lines()
            .any(|l| l.contains("Preset") && l.contains("nq"))
    });
    focus(&session, "Neurons M");
    for c in ["2", "0", "4", "8", "Enter"] {
        keys(c);
    }
    focus(&session, "Top-K");
    for c in ["1", "6", "Enter"] {
        keys(c);
    }
    let set = capture(&session);
    assert!(
        line_with(&set, "Neurons M").unwrap().contains("2048"),
        "{set}"
    );
    assert!(line_with(&set, "Top-K").unwrap().contains("16"), "{set}");
    keys("Enter");
    wait_for("5 training steps", Duration::from_secs(240), || {
        step_of(&capture(&session)).is_some_and(|s| s >= 5)
    });
    keys("l");
    wait_for("the events pane", Duration::from_secs(10), || {
        capture(&session).contains("Events")
    });
    keys("q");
    wait_for("the quit question", Duration::from_secs(10), || {
        capture(&session).contains("quit?")
    });
    keys("y");
    wait_for("the program to exit", Duration::from_secs(60), || {
        done.is_file()
    });
    assert_eq!(std::fs::read_to_string(&done).unwrap().trim(), "0");
    drop(cleanup);

    // A second, headless run to compare with.
    let run = |args: &[&str]| {
        let out = Command::new(bin)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = runs.display().to_string();
    run(&[
        "run",
        "presets/nq.toml",
        "--set",
        "train.steps=4",
        "--set",
        "eval.limit=2",
        "--set",
        "method.kind=\"lora\"",
        "--out",
        &out,
    ]);
    let table = run(&["runs", &out]);
    let rows: Vec<&str> = table.lines().filter(|l| l.contains("nq")).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(
        rows.iter()
            .any(|l| l.contains("meft") && l.contains("M 2048 K 16")),
        "{table}"
    );
    let dirs: Vec<String> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| std::path::Path::new(p).join("events.jsonl").is_file())
        .collect();
    let png = dir.path().join("loss.png");
    let png_s = png.display().to_string();
    let mut args = vec!["compare"];
    args.extend(dirs.iter().map(String::as_str));
    args.extend(["--out", png_s.as_str()]);
    run(&args);
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 1000);
}

/// Resident memory of the process `pid`, from /proc.
fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn logged_steps(runs: &Path) -> usize {
    std::fs::read_dir(runs)
        .into_iter()
        .flatten()
        .flatten()
        .map(|run| {
            std::fs::read_to_string(run.path().join("events.jsonl"))
                .map(|t| t.matches("\"type\":\"step\"").count())
                .unwrap_or(0)
        })
        .sum()
}

/// The process training the run under `runs` (its lock names it).
fn trainer_pid(runs: &Path) -> Option<u32> {
    std::fs::read_dir(runs)
        .ok()?
        .flatten()
        .find_map(|run| std::fs::read_to_string(run.path().join("lock")).ok())?
        .trim()
        .parse()
        .ok()
}

/// A long run watched in the TUI: the TUI's memory and the memory of the
/// process training the run both stay flat, and the log keeps every step.
/// About ten minutes on two cores.
#[test]
#[ignore = "soak test, about ten minutes: cargo test --release --test tui_e2e -- --ignored"]
fn soak_a_long_run_in_the_tui_keeps_memory_flat_and_every_step() {
    const STEPS: usize = 5000;
    let dir = tempfile::tempdir().unwrap();
    let preset = long_example(dir.path(), STEPS, 500);
    let session = format!("meft-soak-{}", std::process::id());
    let pid_file = dir.path().join("pid");
    let script = format!(
        "cd {} && MEFT_CACHE={}/.cache sh -c 'echo $$ > {}; exec {} tui --preset {} --out runs'; sleep 30",
        dir.path().display(),
        dir.path().display(),
        pid_file.display(),
        env!("CARGO_BIN_EXE_meft"),
        preset.display()
    );
    let _cleanup = new_session(&session, &script);
    wait_for("the setup screen", Duration::from_secs(20), || {
        capture(&session).contains("new run")
    });
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Enter on the first row (Preset) lists the presets; on any other it starts.
    tmux(&["send-keys", "-t", &session, "Tab"]);
    tmux(&["send-keys", "-t", &session, "Enter"]);
    let runs = dir.path().join("runs");
    wait_for("step 500", Duration::from_secs(600), || {
        logged_steps(&runs) >= 500
    });
    let trainer = trainer_pid(&runs).expect("the trainer's pid in the run's lock");
    assert_ne!(trainer, pid, "the run trains in a process of its own");
    let at_500 = [rss_of(pid).unwrap(), rss_of(trainer).unwrap()];
    let mut peak = at_500;
    wait_for("the last step", Duration::from_secs(3600), || {
        peak[0] = peak[0].max(rss_of(pid).unwrap_or(0));
        peak[1] = peak[1].max(rss_of(trainer).unwrap_or(0));
        logged_steps(&runs) >= STEPS
    });
    for (who, (at, top)) in ["TUI", "trainer"].iter().zip(at_500.iter().zip(peak)) {
        eprintln!(
            "{who}: RSS at step 500 {:.1} MiB, largest after {:.1} MiB ({:+.1} %)",
            *at as f64 / 1048576.0,
            top as f64 / 1048576.0,
            100.0 * (top as f64 / *at as f64 - 1.0)
        );
        assert!(top as f64 <= 1.1 * *at as f64, "{who}");
    }
    assert_eq!(logged_steps(&runs), STEPS);
}
