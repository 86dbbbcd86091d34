//! The real binary in a real terminal (tmux): start on the defaults, watch it
//! train, take a screenshot, quit with confirmation, and check the terminal
//! was handed back in its normal state.

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
fn tui_trains_screenshots_and_quits_cleanly() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: tmux is not installed");
        return;
    }
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
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "120",
        "-y",
        "40",
        &script,
    ]);
    let cleanup = scopeguard(&session);

    wait_for("the setup screen", Duration::from_secs(20), || {
        capture(&session).contains("new run")
    });
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
        s.contains("quit?") && s.contains("y yes")
    });
    tmux(&["send-keys", "-t", &session, "y"]);
    wait_for("the program to exit", Duration::from_secs(60), || {
        done.is_file()
    });
    assert_eq!(std::fs::read_to_string(&done).unwrap().trim(), "0");
    // Quitting mid-run stopped it safely: a checkpoint, a summary, and the
    // way back printed on the restored terminal.
    let run_dir = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("events.jsonl").is_file())
        .expect("a run directory");
    assert!(meft::train::checkpoint::latest(&run_dir.join("checkpoints")).is_some());
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

struct Session(String);
impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}
fn scopeguard(name: &str) -> Session {
    Session(name.to_string())
}
