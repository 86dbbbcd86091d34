//! Screen tests: the app driven by keys and a synthetic event stream,
//! drawn on ratatui's `TestBackend` and compared with insta snapshots.

use crate::config::Experiment;
use crate::event::Event;
use crate::train::{Control, RunHandle};
use crate::tui::app::{Action, App};
use crate::tui::export;
use crate::tui::fixtures;
use crate::tui::setup::Presets;
use crate::tui::state::{DashboardState, Phase, ViewOptions};
use crate::tui::theme::Theme;
use crate::tui::{Launcher, Previewer};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

const SIZES: [(u16, u16); 2] = [(80, 24), (160, 48)];

/// Box-drawing characters that end a pane's text on a row.
const BORDERS: &[char] = &['│', '┌', '┐', '└', '┘', '├', '┤', '┬', '┴', '┼', '─'];

/// Units a figure is written with; one of them opening a row right under a
/// row that ends in a digit is a value broken across the two.
const UNITS: &[&str] = &[
    "B", "KiB", "MiB", "GiB", "TiB", "K", "M", "G", "k", "%", "×", "/step", "/s", "s", "ms",
    "tok/s", "B/step",
];

/// Fails when a rendered screen (a `TestBackend` as text, quoted rows or
/// not) shows a figure cut short: a number or `=` clipped by an ellipsis
/// (`1..=…`, `12…`), a number against a pane's right edge with half its
/// unit (`8.4 MiB/ste│`), or a number ending one row of a pane and its unit
/// opening the next (`grads 512` / `KiB`).
fn assert_no_cut_values(buf: &str) {
    cut_by_segment(buf);
    let rows: Vec<Vec<char>> = buf
        .lines()
        .map(|l| {
            let l = l.strip_prefix('"').unwrap_or(l);
            l.strip_suffix('"').unwrap_or(l).chars().collect()
        })
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let mut start = 0;
        while start < row.len() {
            let end = (start..row.len())
                .find(|&j| BORDERS.contains(&row[j]))
                .unwrap_or(row.len());
            let seg: String = row[start..end].iter().collect();
            let shown = || format!("row {i}, columns {start}..{end}: {seg:?}\n{buf}");
            let ellipsis = seg.char_indices().any(|(k, c)| {
                c == '…'
                    && seg[..k]
                        .chars()
                        .last()
                        .is_some_and(|p| p.is_ascii_digit() || p == '=' || p == '.')
            });
            assert!(!ellipsis, "a value clipped by an ellipsis at {}", shown());
            let t = seg.trim_end();
            // Against the edge: no space left between the text and the border.
            if t.len() == seg.len() {
                let mut words = t.split(' ').rev();
                let last = words.next().unwrap_or("");
                let before = words.next().unwrap_or("");
                let unit = last.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
                let after_number =
                    unit.len() < last.len() || before.ends_with(|c: char| c.is_ascii_digit());
                let cut = after_number
                    && !unit.is_empty()
                    && !UNITS.contains(&unit)
                    && !unit.ends_with("/step")
                    && UNITS
                        .iter()
                        .flat_map(|u| [u.to_string(), format!("{u}/step")])
                        .any(|u| u.starts_with(unit));
                assert!(!cut, "a unit cut at the pane's edge at {}", shown());
            }
            // Two rows of one pane: walled by the same vertical borders (an
            // overlay's corner or a borderless status row is another thing).
            let walled = |r: &[char]| {
                start > 0 && r.get(start - 1) == Some(&'│') && r.get(end) == Some(&'│')
            };
            if t.ends_with(|c: char| c.is_ascii_digit()) && walled(row) {
                if let Some(next) = rows.get(i + 1).filter(|n| walled(n)) {
                    let below: String = next[start..end].iter().collect();
                    let below = below.trim_start();
                    let opens_with_unit = UNITS.iter().any(|u| {
                        below.strip_prefix(u).is_some_and(|rest| {
                            rest.is_empty() || rest.starts_with([' ', '·', ',', ')', ';', '/'])
                        })
                    });
                    assert!(
                        !opens_with_unit,
                        "a number and its unit on two rows at {}",
                        shown()
                    );
                }
            }
            start = end + 1;
        }
    }
}

#[test]
fn the_cut_value_check_catches_cut_values() {
    let caught = |screen: &str| std::panic::catch_unwind(|| assert_no_cut_values(screen)).is_err();
    assert!(caught("│✗ must be in 1..=…│"));
    assert!(caught("│H→D 8.4 MiB/ste│"));
    assert!(caught("│grads 512   │\n│KiB · ids 3 │"));
    assert!(caught("│dense 32.0│\n│MiB/step  │"));
    // Rows that are not one pane's: a status line over the key hints.
    assert!(!caught(" saved step 20 \n s screenshot "));
    assert!(!caught("│H→D 8.4M/step │\n│D→H 9.1M/step │"));
    assert!(!caught("│    1     step    15│\n└────────────────────┘"));
    // More items hidden behind an ellipsis right after a figure.
    assert!(caught("│queries 2M …  │"));
}

fn draw(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test backend");
    t.draw(|f| {
        let area = f.area();
        app.render(area, f.buffer_mut());
    })
    .expect("draw");
    t
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn press(app: &mut App, code: KeyCode) {
    if let Some(a) = app.action_for(key(code)) {
        app.update(a);
    }
}

fn press_n(app: &mut App, code: KeyCode, times: usize) {
    for _ in 0..times {
        press(app, code);
    }
}

/// The screen drawn at `w`×`h`, as text.
fn text(app: &App, w: u16, h: u16) -> String {
    format!("{}", draw(app, w, h).backend())
}

/// The planner itself, with no runs to take a measured union from.
fn planner() -> Previewer {
    crate::tui::launch::planner_preview(PathBuf::from("/nonexistent/runs"))
}

/// The presets that ship, as the binary finds them from the repository root.
fn shipped_presets() -> Presets {
    Presets::load(std::path::Path::new("presets"))
}

/// A launcher whose run is fed by the test through the returned sender.
struct TestLauncher {
    events: Option<Receiver<Event>>,
    control: Sender<Control>,
    started: Arc<Mutex<Vec<Experiment>>>,
    /// Where a started run's config.toml goes, as a real launch writes it.
    dir: Option<PathBuf>,
}

impl Launcher for TestLauncher {
    fn start(&mut self, exp: &Experiment) -> Result<RunHandle, String> {
        self.started
            .lock()
            .map_err(|_| "poisoned".to_string())?
            .push(exp.clone());
        let events = self.events.take().ok_or("already started")?;
        let run_dir = match &self.dir {
            Some(d) => {
                exp.save(&d.join("config.toml"))
                    .map_err(|e| e.to_string())?;
                d.clone()
            }
            None => PathBuf::from("runs/test"),
        };
        Ok(RunHandle {
            events,
            control: self.control.clone(),
            run_dir,
            thread: None,
        })
    }
}

struct Harness {
    app: App,
    feed: Sender<Event>,
    control: Receiver<Control>,
    started: Arc<Mutex<Vec<Experiment>>>,
}

fn setup_app() -> Harness {
    let (feed, events) = channel();
    let (control_tx, control) = channel();
    let started = Arc::new(Mutex::new(Vec::new()));
    let launcher = TestLauncher {
        events: Some(events),
        control: control_tx,
        started: started.clone(),
        dir: None,
    };
    let exp = Experiment {
        name: "nq".into(),
        ..Experiment::default()
    };
    let app = App::setup(
        exp,
        shipped_presets(),
        Box::new(launcher),
        planner(),
        Theme::default(),
    );
    Harness {
        app,
        feed,
        control,
        started,
    }
}

/// Start the run from the setup screen and feed it `events` through the
/// app's actions, as the event loop would.
fn live_app(events: &[Event]) -> Harness {
    let mut h = setup_app();
    // Off the preset row, where Enter lists the presets.
    press(&mut h.app, KeyCode::Tab);
    press(&mut h.app, KeyCode::Enter);
    let rx = h.app.take_new_events().expect("the run started");
    for e in events {
        h.feed.send(e.clone()).expect("feed");
    }
    for e in rx.try_iter() {
        h.app.update(Action::Run(Box::new(e)));
    }
    h
}

fn snapshot_all(name: &str, app: &App) {
    for (w, h) in SIZES {
        let t = draw(app, w, h);
        assert_no_cut_values(&t.backend().to_string());
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), t.backend());
    }
}

/// The screen at `w`×`h` as a snapshot, checked for cut values.
fn snapshot_one(name: &str, app: &App, w: u16, h: u16) {
    let t = draw(app, w, h);
    assert_no_cut_values(&t.backend().to_string());
    insta::assert_snapshot!(name, t.backend());
}

#[test]
fn setup_screen() {
    let h = setup_app();
    snapshot_all("setup", &h.app);
}

#[test]
fn replay_at_step_20() {
    let mut app = App::replay(
        fixtures::run_events(30, true),
        PathBuf::from("runs/test"),
        Theme::default(),
    );
    press_n(&mut app, KeyCode::Left, 10);
    assert_eq!(app.dashboard().map(DashboardState::step), Some(20));
    snapshot_all("replay_step_20", &app);
    press(&mut app, KeyCode::End);
    assert_eq!(app.dashboard().map(|s| s.phase), Some(Phase::Finished));
    press(&mut app, KeyCode::PageUp);
    assert_eq!(app.dashboard().map(DashboardState::step), Some(20));
    press(&mut app, KeyCode::Home);
    assert_eq!(app.dashboard().map(DashboardState::step), Some(1));
}

#[test]
fn setup_help_overlay() {
    let mut h = setup_app();
    press(&mut h.app, KeyCode::Char('?'));
    // Checked for cut values at both sizes, its first line included.
    snapshot_all("setup_help", &h.app);
    assert!(text(&h.app, 80, 24).contains("start · accept an edit · on Preset: presets"));
}

#[test]
fn help_overlay() {
    let mut h = live_app(&fixtures::run_events(15, false));
    press(&mut h.app, KeyCode::Char('?'));
    snapshot_all("help", &h.app);
    press(&mut h.app, KeyCode::Esc);
    assert!(!text(&h.app, 80, 24).contains("this help"));
}

/// The MEFT row of the comparison (the right pane's part of the line).
fn meft_row(app: &App) -> String {
    text(app, 80, 24)
        .lines()
        .filter_map(|l| {
            l.split('│')
                .find(|seg| seg.trim_start().starts_with("MEFT "))
        })
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The setup screen's state, to check values a snapshot only shows.
fn setup_of(app: &App) -> &crate::tui::setup::Setup {
    match &app.screen {
        crate::tui::app::Screen::Setup(s) => s,
        _ => panic!("still on the setup screen"),
    }
}

/// Tab presses from the preset row to `field`.
fn tabs_to(field: crate::tui::setup::Field) -> usize {
    crate::tui::setup::FIELDS
        .iter()
        .position(|f| *f == field)
        .expect("a setup field")
}

#[test]
fn changing_m_and_k_changes_the_predicted_bytes() {
    use crate::tui::setup::Field;
    let mut h = setup_app();
    let before = meft_row(&h.app);
    press_n(&mut h.app, KeyCode::Tab, tabs_to(Field::Neurons));
    press(&mut h.app, KeyCode::Char('+'));
    press(&mut h.app, KeyCode::Tab);
    press(&mut h.app, KeyCode::Char('+'));
    let after = meft_row(&h.app);
    insta::assert_snapshot!("setup_m_k_before", before);
    insta::assert_snapshot!("setup_m_k_after", after);
    snapshot_one("setup_m_k_after_80x24", &h.app, 80, 24);
    assert_ne!(before, after);
    // M steps to the next size users pick, K doubles.
    let s = setup_of(&h.app);
    assert_eq!(s.exp.method.meft.top_k, 64);
    assert_eq!(s.exp.method.meft.neurons, 6144);
}

#[test]
fn an_invalid_value_is_marked_and_blocks_start() {
    use crate::tui::setup::Field;
    let mut h = setup_app();
    press_n(&mut h.app, KeyCode::Tab, tabs_to(Field::MicroBatch));
    // Micro-batch: type 3, which does not divide the batch of 8.
    press(&mut h.app, KeyCode::Char('3'));
    press(&mut h.app, KeyCode::Enter);
    // Away from the bad field, Enter goes back to it and says why, once.
    press(&mut h.app, KeyCode::Tab);
    press(&mut h.app, KeyCode::Enter);
    assert_eq!(setup_of(&h.app).focused(), Field::MicroBatch);
    let screen = text(&h.app, 80, 24);
    assert!(screen.contains("▸Micro-batch 3  ✗"), "{screen}");
    assert!(
        screen.contains("✗ cannot start: train.micro_batch"),
        "{screen}"
    );
    assert_eq!(screen.matches("must divide").count(), 1, "{screen}");
    assert!(screen.contains("(8), got 3"), "{screen}");
    snapshot_one("setup_invalid_80x24", &h.app, 80, 24);
    assert!(h.started.lock().map(|v| v.is_empty()).unwrap_or(false));
    assert!(h.app.take_new_events().is_none());
}

#[test]
fn typing_a_bad_number_keeps_the_edit_open() {
    use crate::tui::setup::Field;
    let mut h = setup_app();
    press_n(&mut h.app, KeyCode::Tab, tabs_to(Field::Neurons));
    press(&mut h.app, KeyCode::Char('x'));
    press(&mut h.app, KeyCode::Enter);
    let screen = text(&h.app, 160, 48);
    assert!(screen.contains("whole number, got \"x\""), "{screen}");
    assert_eq!(screen.matches("whole number").count(), 1, "{screen}");
    press(&mut h.app, KeyCode::Esc);
    let screen = text(&h.app, 80, 24);
    assert!(screen.contains("4096"), "{screen}");
}

/// Open the preset list on the preset row and load the preset labelled `name`.
fn pick_preset(app: &mut App, name: &str) {
    let labels: Vec<String> = {
        let s = setup_of(app);
        (0..s.preset_count()).map(|i| s.preset_name(i)).collect()
    };
    let row = labels
        .iter()
        .position(|l| l == name)
        .unwrap_or_else(|| panic!("{name} not among {labels:?}"));
    press(app, KeyCode::Enter);
    press_n(app, KeyCode::Down, row);
    press(app, KeyCode::Enter);
}

#[test]
fn the_picker_lists_the_presets() {
    let mut h = setup_app();
    press(&mut h.app, KeyCode::Enter);
    let screen = text(&h.app, 80, 24);
    for name in ["nq", "squad", "gsm8k", "toolbench", "paper/nq"] {
        assert!(screen.contains(name), "{name} missing:\n{screen}");
    }
    snapshot_one("setup_picker_80x24", &h.app, 80, 24);
    press(&mut h.app, KeyCode::Esc);
    assert!(!text(&h.app, 80, 24).contains("Enter load"));
}

#[test]
fn each_runnable_preset_loads_through_the_picker() {
    for name in ["nq", "squad", "gsm8k", "toolbench"] {
        let mut h = setup_app();
        pick_preset(&mut h.app, name);
        let path = PathBuf::from(format!("presets/{name}.toml"));
        let want = Experiment::load(&path).expect("the preset loads");
        assert_eq!(setup_of(&h.app).exp, want, "{name}");
        snapshot_all(&format!("setup_preset_{name}"), &h.app);
    }
}

#[test]
fn arrows_on_the_preset_row_step_through_the_presets() {
    let mut h = setup_app();
    press(&mut h.app, KeyCode::Right);
    assert_eq!(setup_of(&h.app).exp.name, "nq");
    press(&mut h.app, KeyCode::Right);
    assert_eq!(setup_of(&h.app).exp.name, "squad");
    press(&mut h.app, KeyCode::Left);
    assert_eq!(setup_of(&h.app).exp.name, "nq");
    assert!(text(&h.app, 80, 24).contains("◀ nq ▶"));
}

#[test]
fn changing_the_task_brings_its_name_and_cutoff() {
    use crate::tui::setup::Field;
    let mut h = setup_app();
    pick_preset(&mut h.app, "nq");
    press_n(&mut h.app, KeyCode::Tab, tabs_to(Field::Task));
    // nq → squad.
    press(&mut h.app, KeyCode::Right);
    let s = setup_of(&h.app);
    let squad = Experiment::load(std::path::Path::new("presets/squad.toml")).expect("squad");
    assert_eq!(s.exp.data.task, crate::config::Task::Squad);
    assert_eq!(s.exp.name, "squad");
    assert_eq!(s.exp.train.cutoff_len, squad.train.cutoff_len);
    assert_eq!(s.exp.data.train, squad.data.train);
    assert!(s.is_valid());
    // A name the user typed stays.
    press_n(&mut h.app, KeyCode::BackTab, 2);
    for c in "mine".chars() {
        press(&mut h.app, KeyCode::Char(c));
    }
    press(&mut h.app, KeyCode::Enter);
    press_n(&mut h.app, KeyCode::Tab, 2);
    press(&mut h.app, KeyCode::Right);
    assert_eq!(setup_of(&h.app).exp.name, "squadmine");
}

#[test]
fn every_field_explains_itself_when_focused() {
    let mut h = setup_app();
    let mut seen = std::collections::HashSet::new();
    for _ in crate::tui::setup::FIELDS {
        let screen = text(&h.app, 80, 24);
        let s = setup_of(&h.app);
        let f = s.focused();
        // The description's first words open its paragraph on the right.
        let help = f.help(&s.exp);
        let opening: Vec<&str> = help.split(' ').take(2).collect();
        assert!(screen.contains(&opening.join(" ")), "{f:?}:\n{screen}");
        seen.insert(f.label());
        press(&mut h.app, KeyCode::Tab);
    }
    assert_eq!(seen.len(), crate::tui::setup::FIELDS.len());
}

#[test]
fn the_comparison_is_fair() {
    use crate::tui::setup::Field;
    let mut h = setup_app();
    pick_preset(&mut h.app, "nq");
    let rows = |app: &App| setup_of(app).preview().rows.clone();
    let r = rows(&h.app);
    let names: Vec<String> = r
        .iter()
        .map(|r| format!("{} {}", r.method, r.detail))
        .collect();
    assert_eq!(
        names,
        ["MEFT ", "MEFT worst", "Parallel M 4096", "LoRA r 8"]
    );
    // The dense adapter of the same M: two M×d matrices per layer, with
    // gradients and both AdamW moments, all f32 on the device.
    let m = 4096u64;
    let (d, layers) = (128u64, 4u64);
    let dense = layers * 2 * m * d * 4 * 4;
    assert!(r[2].device >= dense, "{} < {dense}", r[2].device);
    assert_eq!(r[2].per_step, 0);
    assert_eq!(r[2].host, 0);
    // MEFT keeps the adapter in host memory; at the paper's union it moves
    // less than a dense offload of the same M.
    assert!(r[0].device < r[2].device, "{r:?}");
    assert!(r[0].host > dense / 4, "{r:?}");
    let (offload, share) = setup_of(&h.app).preview().dense_offload.expect("offload");
    assert_eq!(offload, 2 * layers * 2 * m * d * 4);
    assert!(share < 1.0, "{share}");
    // The union knob moves MEFT's bytes per step, not the others'.
    press_n(&mut h.app, KeyCode::Tab, tabs_to(Field::Union));
    press(&mut h.app, KeyCode::Left);
    let after = rows(&h.app);
    assert!(after[0].per_step < r[0].per_step, "{after:?}");
    assert_eq!(after[2], r[2]);
    snapshot_all("setup_union_half", &h.app);
}

#[test]
fn a_run_of_the_same_shape_gives_the_measured_union() {
    use crate::tui::{PlanKnobs, UnionAssumption};
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("nq-20261202-120000");
    std::fs::create_dir_all(&run).expect("run dir");
    let exp = Experiment {
        name: "nq".into(),
        ..Experiment::default()
    };
    exp.save(&run.join("config.toml")).expect("config");
    let events = fixtures::run_events(30, true);
    let log: String = events
        .iter()
        .filter_map(|e| serde_json::to_string(e).ok())
        .map(|l| l + "\n")
        .collect();
    std::fs::write(run.join("events.jsonl"), log).expect("events");
    // The mean |U| per layer over the logged steps, one micro-batch each.
    let steps: Vec<&Vec<u64>> = events
        .iter()
        .filter_map(|e| match e {
            Event::Step(s) => Some(&s.union_sizes),
            _ => None,
        })
        .collect();
    let layers = steps[0].len();
    let per_layer: Vec<u64> = (0..layers)
        .map(|l| steps.iter().map(|u| u[l]).sum::<u64>() / steps.len() as u64)
        .collect();
    let mean = per_layer.iter().sum::<u64>() / layers as u64;
    let preview = crate::tui::launch::planner_preview(dir.path().to_path_buf());
    let knobs = |union| PlanKnobs {
        union,
        gpu_mem: 24 << 30,
    };
    let measured = preview(&exp, &knobs(UnionAssumption::Measured));
    assert!(
        measured
            .union_note
            .contains("measured by nq-20261202-120000"),
        "{}",
        measured.union_note
    );
    assert!(
        measured.union_note.starts_with(&format!("{mean} rows = ")),
        "{}",
        measured.union_note
    );
    // Fewer rows than the worst case move fewer bytes.
    assert!(measured.rows[0].per_step < measured.rows[1].per_step);
    // Another shape has no measurement and says so.
    let other = Experiment {
        train: crate::config::TrainSection {
            cutoff_len: 32,
            ..exp.train.clone()
        },
        ..exp.clone()
    };
    let none = preview(&other, &knobs(UnionAssumption::Measured));
    assert!(
        none.union_note.contains("no run of this shape"),
        "{}",
        none.union_note
    );
}

#[test]
fn save_writes_a_preset_that_loads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = setup_app();
    press(&mut h.app, KeyCode::Char('w'));
    // Replace the suggested path with one in the temporary directory.
    press_n(&mut h.app, KeyCode::Backspace, 40);
    let path = dir.path().join("p.toml");
    for c in path.display().to_string().chars() {
        press(&mut h.app, KeyCode::Char(c));
    }
    press(&mut h.app, KeyCode::Enter);
    let loaded = Experiment::load(&path).expect("preset written");
    assert_eq!(loaded.name, "nq");
}

#[test]
fn d_leaves_a_run_in_its_own_process_training() {
    // The launcher's run has no trainer thread here: it trains elsewhere.
    let mut h = live_app(&fixtures::run_events(5, false));
    press(&mut h.app, KeyCode::Char('q'));
    let screen = text(&h.app, 80, 24);
    assert!(screen.contains("d leave it training"), "{screen}");
    assert_no_cut_values(&screen);
    press(&mut h.app, KeyCode::Char('d'));
    assert!(h.app.should_quit());
    // Nothing was asked of the trainer.
    assert_eq!(h.control.try_iter().count(), 0);
    let mut h = live_app(&fixtures::run_events(5, false));
    press(&mut h.app, KeyCode::Char('d'));
    assert!(h.app.should_quit(), "d quits at once, without asking");
    assert_eq!(h.control.try_iter().count(), 0);
}

#[test]
fn start_pause_quit_talk_to_the_trainer() {
    let mut h = live_app(&fixtures::run_events(5, false));
    assert_eq!(h.started.lock().map(|v| v.len()).unwrap_or(0), 1);
    press(&mut h.app, KeyCode::Char(' '));
    press(&mut h.app, KeyCode::Char('c'));
    press(&mut h.app, KeyCode::Char('e'));
    press(&mut h.app, KeyCode::Char('q'));
    assert!(!h.app.should_quit(), "q asks first while training runs");
    assert!(text(&h.app, 80, 24).contains("Stop it and quit?"));
    press(&mut h.app, KeyCode::Char('n'));
    assert!(!h.app.should_quit());
    press(&mut h.app, KeyCode::Char('q'));
    press(&mut h.app, KeyCode::Char('y'));
    assert!(h.app.should_quit());
    let sent: Vec<Control> = h.control.try_iter().collect();
    assert_eq!(
        sent,
        vec![
            Control::Pause,
            Control::Checkpoint,
            Control::EvalNow,
            Control::Stop
        ]
    );
}

#[test]
fn space_resumes_a_paused_run() {
    let mut events = fixtures::run_events(5, false);
    events.push(Event::Paused { step: 5 });
    let mut h = live_app(&events);
    press(&mut h.app, KeyCode::Char(' '));
    assert_eq!(
        h.control.try_iter().collect::<Vec<_>>(),
        vec![Control::Resume]
    );
}

#[test]
fn a_finished_run_quits_without_asking() {
    let mut h = live_app(&fixtures::run_events(30, true));
    press(&mut h.app, KeyCode::Char('q'));
    assert!(h.app.should_quit());
    assert!(h.control.try_iter().next().is_none());
}

#[test]
fn screenshot_key_writes_svg_into_the_run_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut app = App::replay(
        fixtures::run_events(30, true),
        dir.path().to_path_buf(),
        Theme::default(),
    );
    press(&mut app, KeyCode::Char('s'));
    let path = dir.path().join("screenshots/step-30.svg");
    let svg = std::fs::read_to_string(&path).expect("screenshot written");
    assert!(svg.starts_with("<svg"));
    let note = app
        .dashboard()
        .and_then(|s| s.view.note.clone())
        .unwrap_or_default();
    assert!(note.contains("step-30.svg"), "{note}");
}

#[test]
fn layer_and_axis_keys_change_the_view() {
    let mut h = live_app(&fixtures::run_events(15, false));
    press(&mut h.app, KeyCode::Char(']'));
    press(&mut h.app, KeyCode::Char(']'));
    assert_eq!(
        h.app.dashboard().and_then(DashboardState::selected_layer),
        Some(2)
    );
    press(&mut h.app, KeyCode::Char('['));
    press(&mut h.app, KeyCode::Char('['));
    press(&mut h.app, KeyCode::Char('['));
    assert_eq!(
        h.app.dashboard().and_then(DashboardState::selected_layer),
        Some(3)
    );
    press(&mut h.app, KeyCode::Char('y'));
    press(&mut h.app, KeyCode::Char('t'));
    let screen = text(&h.app, 80, 24);
    assert!(screen.contains("Loss · log · by time"), "{screen}");
    // Layers count from 1: the fourth of four.
    assert!(screen.contains("layer 4/4"), "{screen}");
    assert!(screen.contains("L4 "), "{screen}");
}

#[test]
fn too_small_says_so() {
    let h = live_app(&fixtures::run_events(3, false));
    let screen = text(&h.app, 79, 24);
    assert!(screen.contains("terminal too small"), "{screen}");
    assert!(screen.contains("need 80×24, have 79×24"), "{screen}");
    let setup = setup_app();
    let screen = text(&setup.app, 100, 20);
    assert!(screen.contains("terminal too small"), "{screen}");
}

#[test]
fn no_color_theme_draws_without_colours() {
    let mut state = DashboardState::new(ViewOptions {
        theme: Theme::monochrome(),
        ..ViewOptions::default()
    });
    for e in fixtures::run_events(15, false) {
        state.apply(&e);
    }
    let buf = export::render_dashboard(&state, 120, 40);
    let coloured = buf
        .content()
        .iter()
        .filter(|c| c.fg != ratatui::style::Color::Reset || c.bg != ratatui::style::Color::Reset)
        .count();
    assert_eq!(coloured, 0);
}

#[test]
fn no_pane_shows_a_zero_for_missing_gpu_readings() {
    let h = live_app(&fixtures::run_events(15, false));
    let screen = text(&h.app, 160, 48);
    assert!(screen.contains("no NVIDIA driver"), "{screen}");
    // The loader's own words never reach the screen.
    assert!(!screen.contains("libnvidia"), "{screen}");
    for source in [
        "ledger",
        "planned",
        "NVML",
        "sysinfo",
        "link",
        "picks per neuron",
    ] {
        assert!(screen.contains(source), "{source} missing:\n{screen}");
    }
}

fn finished_state() -> DashboardState {
    let mut state = DashboardState::default();
    for e in fixtures::run_events(30, true) {
        state.apply(&e);
    }
    state
}

#[test]
fn svg_keeps_box_drawing_and_escapes_markup() {
    let mut state = finished_state();
    state.view.note = Some("loss < 1 & \"falling\"".into());
    let buf = export::render_dashboard(&state, 120, 40);
    let svg = export::to_svg(&buf);
    // Box-drawing lines, blocks and braille are shapes in their cells, so
    // no font's advance can move them; only text is left as text.
    assert!(!svg.contains('┌') && !svg.contains('─') && !svg.contains('│'));
    assert!(!svg.chars().any(|c| ('\u{2801}'..='\u{28ff}').contains(&c)));
    assert!(svg.contains("<circle"));
    assert!(
        svg.contains("loss &lt; 1 &amp; &quot;falling&quot;"),
        "note not escaped:\n{svg}"
    );
    assert!(!svg.contains("loss < 1"));
    assert!(svg.contains(r#"xml:space="preserve""#));
    // A well-formed document: the parser resvg uses accepts it.
    let opt = resvg::usvg::Options::default();
    assert!(resvg::usvg::Tree::from_str(&svg, &opt).is_ok());
}

#[test]
fn png_export_writes_a_png_of_the_grid_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("shot.png");
    let pic = export::Picture {
        step: Some(20),
        size: (80, 24),
        scale: 1.0,
    };
    export::screenshot(&fixtures::run_events(30, true), &pic, &out).expect("png written");
    let png = std::fs::read(&out).expect("read png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");
    let w = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
    let h = u32::from_be_bytes([png[20], png[21], png[22], png[23]]);
    // 80 cells of 9 pixels, 24 rows of 17.
    assert_eq!((w, h), (720, 408));
    // Twice the pixels at --scale 2.
    let big = dir.path().join("shot2.png");
    let pic = export::Picture { scale: 2.0, ..pic };
    export::screenshot(&fixtures::run_events(30, true), &pic, &big).expect("png written");
    let png = std::fs::read(&big).expect("read png");
    let w = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
    let h = u32::from_be_bytes([png[20], png[21], png[22], png[23]]);
    assert_eq!((w, h), (1440, 816));
}

#[test]
fn text_export_and_format_by_extension() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = fixtures::run_events(30, true);
    let txt = dir.path().join("shot.txt");
    let pic = export::Picture {
        step: None,
        size: (100, 30),
        scale: 1.0,
    };
    export::screenshot(&events, &pic, &txt).expect("txt written");
    let text = std::fs::read_to_string(&txt).expect("read");
    assert_eq!(text.lines().count(), 30);
    assert!(text.contains("finished"));
    let bad = export::screenshot(&events, &pic, &dir.path().join("shot.jpg"));
    assert!(bad.is_err());
    let small = export::Picture {
        size: (60, 20),
        ..pic
    };
    assert!(export::screenshot(&events, &small, &txt).is_err());
    let scaled_text = export::Picture { scale: 2.0, ..pic };
    assert!(export::screenshot(&events, &scaled_text, &txt).is_err());
    assert_eq!(export::parse_size("120x40").ok(), Some((120, 40)));
    assert!(export::parse_size("120").is_err());
}

/// Writes the 120×40 dashboard as a PNG for a person to look at:
/// `cargo test write_preview_png -- --ignored` (path from TUI_PREVIEW_PNG).
#[test]
#[ignore]
fn write_preview_png() {
    let out = std::env::var("TUI_PREVIEW_PNG").unwrap_or_else(|_| "/tmp/tui-dashboard.png".into());
    let mut state = DashboardState::default();
    for e in fixtures::run_events(22, false) {
        state.apply(&e);
    }
    let buf = export::render_dashboard(&state, 120, 40);
    export::write_buffer(&buf, std::path::Path::new(&out)).expect("png written");
    // The whole run as a recorded log, for trying replay by hand.
    let log: String = fixtures::run_events(30, true)
        .iter()
        .filter_map(|e| serde_json::to_string(e).ok())
        .map(|l| l + "\n")
        .collect();
    let log_path = std::path::Path::new(&out).with_extension("jsonl");
    std::fs::write(log_path, log).expect("log written");
}

/// The screen's rows without the quotes the test backend writes around them.
fn rows(screen: &str) -> Vec<Vec<char>> {
    screen
        .lines()
        .map(|l| {
            let l = l.strip_prefix('"').unwrap_or(l);
            l.strip_suffix('"').unwrap_or(l).chars().collect()
        })
        .collect()
}

/// Units a figure on the dashboard is written with.
/// Units the segment rules look for (a shorter list: `s` or `M` alone
/// starting a row is prose, not a torn unit).
const SEGMENT_UNITS: [&str; 9] = [
    "B", "KiB", "MiB", "GiB", "TiB", "%", "tok/s", "/step", "steps",
];

/// The rest of [`assert_no_cut_values`]: no ellipsis right after a number
/// (or after a number and its unit), no half-written unit (`Mi`, `/ste`) or
/// identifier (`contains_`) at the end of a pane's line, no figure starting
/// a pane's line without its label, and no pane line ending in a number
/// whose unit starts the line below.
fn cut_by_segment(screen: &str) {
    let rows = rows(screen);
    let is_border = |c: char| "│┌┐└┘├┤┬┴┼".contains(c);
    // Each row cut at pane borders into (first column, text).
    let segments = |row: &[char]| -> Vec<(usize, String)> {
        let mut out = Vec::new();
        let mut start = 0;
        for (i, &c) in row.iter().chain(std::iter::once(&'│')).enumerate() {
            if is_border(c) {
                if i > start {
                    out.push((start, row[start..i.min(row.len())].iter().collect()));
                }
                start = i + 1;
            }
        }
        out
    };
    for (y, row) in rows.iter().enumerate() {
        let line: String = row.iter().collect();
        for (j, &c) in row.iter().enumerate() {
            if c != '…' {
                continue;
            }
            let mut k = j;
            if k > 0 && row[k - 1] == ' ' {
                k -= 1;
            }
            while k > 0 && (row[k - 1].is_ascii_alphabetic() || row[k - 1] == '%') {
                k -= 1;
            }
            assert!(
                k == 0 || !row[k - 1].is_ascii_digit(),
                "a value cut with an ellipsis on row {y}: {line}"
            );
        }
        for (x, seg) in segments(row) {
            let t = seg.trim_end();
            for cut in [" Mi", " Gi", " Ki", " Ti", "/ste", "/st", "_"] {
                assert!(
                    !t.ends_with(cut) || t.is_empty(),
                    "a unit or name cut at the end of {t:?} on row {y}: {line}"
                );
            }
            // A figure never starts a pane's line without its label: one
            // that does was wrapped away from it.
            let words: Vec<&str> = t.split_whitespace().take(2).collect();
            if let [number, unit] = words[..] {
                let numeric = number.chars().all(|c| c.is_ascii_digit() || c == '.');
                assert!(
                    !(numeric
                        && SEGMENT_UNITS.contains(&unit)
                        && seg.starts_with(|c: char| c.is_ascii_digit())),
                    "a value without its label on row {y}: {line}"
                );
            }
            if !t.ends_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            // The same columns on the next row, in the same pane (walled
            // alike): does a unit start there?
            let Some(next) = rows.get(y + 1) else {
                continue;
            };
            let len = seg.chars().count();
            let wall = |r: &[char], i: Option<usize>| i.and_then(|i| r.get(i)).copied();
            let edges = |r: &[char]| (wall(r, x.checked_sub(1)), wall(r, Some(x + len)));
            if edges(next) != edges(row) {
                continue;
            }
            let below: String = next
                .iter()
                .skip(x)
                .take(seg.chars().count())
                .take_while(|&&c| !is_border(c))
                .collect();
            let first = below.split_whitespace().next().unwrap_or("");
            assert!(
                !SEGMENT_UNITS.contains(&first),
                "a number on row {y} has its unit {first:?} on the next row: {line}"
            );
        }
    }
}

#[test]
fn the_cut_value_check_catches_what_it_should() {
    let bad = [
        "│ledger  37 MiB  peak│\n│44 MiB              │",
        "│accumulators 8.2    │\n│MiB                 │",
        "│● contains_         │",
        "│H→D 8.4 MiB/ste     │",
        "│queries 944K …      │",
    ];
    for screen in bad {
        let caught = std::panic::catch_unwind(|| assert_no_cut_values(screen)).is_err();
        assert!(caught, "not caught:\n{screen}");
    }
    assert_no_cut_values("│ledger  37 MiB      │\n│        peak 44 MiB │");
}

#[test]
fn dashboard_snapshots_cut_no_value() {
    let h = live_app(&fixtures::run_events(15, false));
    snapshot_all("dashboard_mid_run", &h.app);
    let h = live_app(&fixtures::run_events(30, true));
    snapshot_all("dashboard_finished", &h.app);
    // The finished dashboard shows the evaluation's result.
    let screen = text(&h.app, 80, 24);
    assert!(screen.contains("eval em 0.42"), "{screen}");
}

#[test]
fn events_pane_shows_samples_checkpoints_and_warnings() {
    let mut h = live_app(&fixtures::run_events(30, true));
    press(&mut h.app, KeyCode::Char('l'));
    snapshot_all("events", &h.app);
    let screen = text(&h.app, 160, 48);
    for want in [
        "em 0.32 · f1 0.42 on 100 examples",
        "prompt  who wrote <Hamlet> & Macbeth?",
        "answer  Shakespeare",
        "gold    William Shakespeare",
        "score   em 0.00 · f1 0.67",
        "checkpoint  runs/nq/checkpoints/step-20.safetensors",
        "warning     gradient norm 2.9",
        "finished",
    ] {
        assert!(screen.contains(want), "{want} missing:\n{screen}");
    }
    // At 80×24 the newest lines show; ↑ and PgUp go back to the start.
    let bottom = text(&h.app, 80, 24);
    assert!(bottom.contains("finished"), "{bottom}");
    h.app.set_size(80, 24);
    press_n(&mut h.app, KeyCode::PageUp, 10);
    let top = text(&h.app, 80, 24);
    assert!(top.contains("training started"), "{top}");
    assert!(!top.contains("the last step is done"), "{top}");
    press(&mut h.app, KeyCode::Down);
    press(&mut h.app, KeyCode::Esc);
    assert!(
        !h.app.should_quit(),
        "Esc leaves the Events pane, not the app"
    );
    assert!(text(&h.app, 80, 24).contains("Device memory"));
}

#[test]
fn log_scale_and_events_keys_are_in_the_help() {
    let mut h = live_app(&fixtures::run_events(15, false));
    press(&mut h.app, KeyCode::Char('?'));
    let screen = text(&h.app, 80, 24);
    assert!(screen.contains("loss: linear / log scale"), "{screen}");
    assert!(screen.contains("events: evals with samples"), "{screen}");
}

#[test]
fn a_paused_run_says_paused_instead_of_rate_and_eta() {
    let mut events = fixtures::run_events(15, false);
    events.push(Event::Paused { step: 15 });
    let h = live_app(&events);
    for (w, hh) in SIZES {
        let screen = text(&h.app, w, hh);
        assert!(screen.contains("‖ paused · at step 15"), "{screen}");
        assert!(
            !screen.contains("tok/s") && !screen.contains("ETA"),
            "{screen}"
        );
        assert!(screen.contains("space resume"), "{screen}");
    }
}

#[test]
fn raw_ema_and_eval_have_their_own_glyphs_without_colour() {
    let mut state = DashboardState::new(ViewOptions {
        theme: Theme::monochrome(),
        ..ViewOptions::default()
    });
    for e in fixtures::run_events(30, true) {
        state.apply(&e);
    }
    let screen = export::to_text(&export::render_dashboard(&state, 80, 24));
    let loss: String = screen
        .lines()
        .map(|l| l.chars().take(35).collect::<String>() + "\n")
        .collect();
    assert!(loss.contains("• raw 1.14"), "{loss}");
    assert!(loss.contains("⠤ EMA 1.51"), "{loss}");
    assert!(loss.contains("█ eval em 0.42"), "{loss}");
    // Each glyph is on the chart itself too.
    let chart: String = loss.lines().skip(3).collect();
    assert!(chart.contains('•') && chart.contains('█'), "{loss}");
    assert!(
        chart
            .chars()
            .any(|c| ('\u{2801}'..='\u{28ff}').contains(&c)),
        "{loss}"
    );
}

#[test]
fn an_out_of_range_step_is_refused_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("shot.txt");
    let events = fixtures::run_events(30, true);
    for step in [0, 31, 5000] {
        let pic = export::Picture {
            step: Some(step),
            ..export::Picture::default()
        };
        let err = export::screenshot(&events, &pic, &out)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert_eq!(
            err,
            format!("--step {step}: this run recorded steps 1 to 30"),
            "step {step}"
        );
        assert!(!out.exists());
    }
    let pic = export::Picture {
        step: Some(30),
        ..export::Picture::default()
    };
    assert!(export::screenshot(&events, &pic, &out).is_ok());
}

/// A picture for a report: a caption (run, step, training time, start,
/// machine) where the key hints would be.
#[test]
fn pictures_have_a_caption_and_no_key_hints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("shot.txt");
    let pic = export::Picture {
        step: Some(20),
        size: (160, 48),
        scale: 1.0,
    };
    export::screenshot(&fixtures::run_events(30, true), &pic, &out).expect("written");
    let text = std::fs::read_to_string(&out).expect("read");
    let last = text.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        " nq-20250101-120000 · step 20/30 · 5s of training · started 2025-01-01 12:00 UTC · testbox · Test CPU @ 3.0GHz (2 cores)"
    );
    assert!(
        !text.contains("q quit") && !text.contains("? help"),
        "{text}"
    );
}

/// The state as it was: a run stopped early, or a log cut off by a kill,
/// never reads as running with an ETA.
#[test]
fn pictures_of_stopped_and_cut_off_runs_say_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("shot.txt");
    let mut stopped = fixtures::run_events(12, false);
    stopped.push(Event::Stopped { step: 12 });
    let cut_off = fixtures::run_events(12, false);
    for (events, want) in [
        (stopped, "■ stopped · at step 12 of 30"),
        (cut_off, "○ unfinished · the log ends at step 12 of 30"),
    ] {
        export::screenshot(&events, &export::Picture::default(), &out).expect("written");
        let text = std::fs::read_to_string(&out).expect("read");
        assert!(text.contains(want), "{want}:\n{text}");
        assert!(!text.contains("running") && !text.contains("ETA"), "{text}");
    }
}

#[test]
fn the_status_row_leaves_room_for_the_note() {
    let mut h = live_app(&fixtures::run_events(30, true));
    if let crate::tui::app::Screen::Live(l) = &mut h.app.screen {
        l.state.view.note =
            Some("screenshot → runs/nq-20250101-120000/screenshots/step-30.svg".into());
    }
    let screen = text(&h.app, 80, 24);
    let status = rows(&screen)[22].iter().collect::<String>();
    assert!(
        status.starts_with(" ✓ finished · 30 steps in 8s"),
        "{status}"
    );
    assert!(status.contains("step-30.svg"), "{status}");
    assert_no_cut_values(&screen);
}

/// Two finished runs, a MEFT and a LoRA one, and a third whose log is
/// corrupt, under a temporary runs directory.
fn runs_dir() -> tempfile::TempDir {
    use crate::config::MethodKind;
    let root = tempfile::tempdir().expect("tempdir");
    let meft = Experiment {
        name: "nq".into(),
        ..Experiment::default()
    };
    let mut lora = meft.clone();
    lora.method.kind = MethodKind::Lora;
    let curve = |s: u64, start: f64, end: f64| start + (end - start) * (s as f64 / 20.0).sqrt();
    let meft_losses: Vec<(u64, f64)> = (1..=20).map(|s| (s, curve(s, 3.0, 1.25))).collect();
    // LoRA records every other step.
    let lora_losses: Vec<(u64, f64)> = (1..=10).map(|i| (2 * i, curve(2 * i, 3.5, 2.0))).collect();
    let write = |name: &str, exp: &Experiment, losses: &[(u64, f64)], em: f64| {
        let dir = root.path().join(name);
        fixtures::write_log(
            &dir,
            &fixtures::recorded_run(name, exp, losses, &[("em", em), ("f1", em + 0.1)]),
        );
        exp.save(&dir.join("config.toml")).expect("config");
    };
    write("nq-20250101-120000", &meft, &meft_losses, 0.25);
    write("nq-20250101-130000", &lora, &lora_losses, 0.5);
    let bad = root.path().join("nq-20250101-140000");
    fixtures::write_log(&bad, &[]);
    std::fs::write(bad.join("events.jsonl"), "{\"type\":\"bogus\"}\n").expect("bad log");
    root
}

/// The setup app with its runs screen looking under `root`, opened with `r`.
fn runs_app(root: &std::path::Path) -> Harness {
    let mut h = setup_app();
    h.app = std::mem::replace(
        &mut h.app,
        App::replay(Vec::new(), PathBuf::new(), Theme::default()),
    )
    .with_runs_root(root.to_path_buf());
    press(&mut h.app, KeyCode::Char('r'));
    // The title names the directory as a user would have given it.
    if let Some(r) = h.app.runs_mut() {
        r.label = "runs".into();
    }
    h
}

#[test]
fn runs_screen_overlays_two_marked_runs() {
    let root = runs_dir();
    let mut h = runs_app(root.path());
    let runs = h.app.runs().expect("the runs screen is up");
    assert_eq!(runs.records.len(), 3);
    // Mark both readable runs, the cursor two steps back from the end.
    press(&mut h.app, KeyCode::Char(' '));
    press(&mut h.app, KeyCode::Down);
    press(&mut h.app, KeyCode::Char(' '));
    press_n(&mut h.app, KeyCode::Left, 3);
    let runs = h.app.runs().expect("runs");
    assert_eq!(runs.cursor_step(), Some(17));
    snapshot_all("runs_overlay", &h.app);
    let screen = text(&h.app, 80, 24);
    // MEFT recorded step 17; LoRA only 16, which the readout names.
    let meft17 = 3.0 + (1.25 - 3.0) * (17.0f64 / 20.0).sqrt();
    let lora16 = 3.5 + (2.0 - 3.5) * (16.0f64 / 20.0).sqrt();
    assert!(screen.contains(&format!("loss {meft17:.4}")), "{screen}");
    assert!(
        screen.contains(&format!("loss {lora16:.4} at 16")),
        "{screen}"
    );
    assert!(screen.contains("cursor at step 17"), "{screen}");
    // The corrupt run says why in its row.
    assert!(screen.contains("unreadable: "), "{screen}");
}

#[test]
fn runs_screen_opens_a_run_in_replay_and_goes_back() {
    let root = runs_dir();
    let mut h = runs_app(root.path());
    press(&mut h.app, KeyCode::Down);
    press(&mut h.app, KeyCode::Char(' '));
    press(&mut h.app, KeyCode::Enter);
    assert_eq!(h.app.dashboard().map(DashboardState::step), Some(20));
    let screen = text(&h.app, 160, 48);
    assert!(screen.contains("Esc back"), "{screen}");
    // Esc goes back to the runs, marks kept; Esc again to the setup screen.
    press(&mut h.app, KeyCode::Esc);
    assert_eq!(h.app.runs().map(|r| r.marked.len()), Some(1));
    press(&mut h.app, KeyCode::Esc);
    assert!(matches!(h.app.screen, crate::tui::app::Screen::Setup(_)));
    assert!(!h.app.should_quit());
    // The unreadable run does not open; the screen says why.
    press(&mut h.app, KeyCode::Char('r'));
    press_n(&mut h.app, KeyCode::Down, 2);
    press(&mut h.app, KeyCode::Enter);
    assert!(h.app.runs().is_some());
    let screen = text(&h.app, 80, 24);
    assert!(screen.contains("cannot open: "), "{screen}");
    assert_no_cut_values(&screen);
}

#[test]
fn c_on_the_runs_screen_asks_to_chat_with_the_selected_run() {
    let root = runs_dir();
    let mut h = runs_app(root.path());
    press(&mut h.app, KeyCode::Down);
    press(&mut h.app, KeyCode::Char('c'));
    // The loop hands the terminal to the chat with this run, once.
    assert_eq!(
        h.app.take_chat_request(),
        Some(root.path().join("nq-20250101-130000"))
    );
    assert_eq!(h.app.take_chat_request(), None);
    assert!(text(&h.app, 160, 48).contains("c chat"));
    // A chat that could not start says why on the runs screen.
    h.app
        .note_on_runs("cannot chat: the run has no checkpoint".into());
    assert!(text(&h.app, 80, 24).contains("cannot chat: the run has no checkpoint"));
}

#[test]
fn n_after_a_finished_run_goes_again_with_its_settings() {
    let (feed, events) = channel();
    let (control_tx, _control) = channel();
    let started = Arc::new(Mutex::new(Vec::new()));
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("nq-20250101-150000");
    std::fs::create_dir(&run).unwrap();
    let launcher = TestLauncher {
        events: Some(events),
        control: control_tx,
        started: started.clone(),
        dir: Some(run.clone()),
    };
    let exp = Experiment {
        name: "nq".into(),
        ..Experiment::default()
    };
    let mut app = App::setup(
        exp.clone(),
        shipped_presets(),
        Box::new(launcher),
        planner(),
        Theme::default(),
    );
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Enter);
    let rx = app.take_new_events().expect("the run started");
    for e in fixtures::run_events(5, true) {
        feed.send(e).unwrap();
    }
    for e in rx.try_iter() {
        app.update(Action::Run(Box::new(e)));
    }
    press(&mut app, KeyCode::Char('n'));
    let s = setup_of(&app);
    let first = Experiment::load(&run.join("config.toml")).unwrap();
    assert_eq!(first, exp);
    assert_eq!(s.exp.name, "nq-2");
    let mut same = s.exp.clone();
    same.name = first.name.clone();
    assert_eq!(same, first);
    snapshot_all("tune_after_run", &app);
}

#[test]
fn n_takes_a_runs_settings_to_change_one_and_go_again() {
    let root = runs_dir();
    let mut h = runs_app(root.path());
    press(&mut h.app, KeyCode::Down);
    press(&mut h.app, KeyCode::Char('n'));
    let base = Experiment::load(&root.path().join("nq-20250101-130000/config.toml")).unwrap();
    let s = setup_of(&h.app);
    assert_eq!(s.exp.name, "nq-2");
    let mut same = s.exp.clone();
    same.name = base.name.clone();
    assert_eq!(same, base, "the run's settings, but for the name");
    snapshot_all("tune_from_run", &h.app);
    // One change, marked with what it was.
    for _ in 0..30 {
        if setup_of(&h.app).focused() == crate::tui::setup::Field::Lr {
            break;
        }
        press(&mut h.app, KeyCode::Down);
    }
    assert_eq!(setup_of(&h.app).focused(), crate::tui::setup::Field::Lr);
    press(&mut h.app, KeyCode::Right);
    let was = crate::tui::setup::Field::Lr.get(&base);
    let screen = text(&h.app, 80, 24);
    assert!(screen.contains(&format!("was {was}")), "{screen}");
    assert_no_cut_values(&screen);
    press(&mut h.app, KeyCode::Enter);
    let started = h
        .started
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("a run started");
    assert_ne!(started.train.lr, base.train.lr);
    let mut rest = started.clone();
    rest.name = base.name.clone();
    rest.train.lr = base.train.lr;
    assert_eq!(rest, base, "only the name and the learning rate differ");
    // Once that run is over, n comes back to the setup with its settings.
    for e in fixtures::run_events(5, true) {
        h.feed.send(e).unwrap();
    }
    for e in h.app.take_new_events().expect("events").try_iter() {
        h.app.update(Action::Run(Box::new(e)));
    }
    assert!(text(&h.app, 160, 48).contains("n next run"));
}

#[test]
fn the_runs_key_is_in_the_bar_and_the_help() {
    let h = setup_app();
    assert!(text(&h.app, 160, 48).contains("r runs"));
    let mut h = live_app(&fixtures::run_events(15, false));
    press(&mut h.app, KeyCode::Char('?'));
    assert!(text(&h.app, 80, 24).contains("runs: every run"));
    press(&mut h.app, KeyCode::Esc);
    // Over a live run: its events keep arriving while the runs screen is up.
    press(&mut h.app, KeyCode::Char('r'));
    assert!(h.app.runs().is_some());
    for e in fixtures::run_events(20, false).into_iter().skip(16) {
        h.app.update(Action::Run(Box::new(e)));
    }
    press(&mut h.app, KeyCode::Char('q'));
    assert!(!h.app.should_quit(), "q asks first while training runs");
    assert!(text(&h.app, 80, 24).contains("Stop it and quit?"));
    press(&mut h.app, KeyCode::Char('n'));
    press(&mut h.app, KeyCode::Esc);
    assert!(h.app.dashboard().is_some_and(|s| s.step() > 15));
}
