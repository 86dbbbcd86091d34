//! The application: which screen is up, and the one place where state
//! changes — [`App::update`] applied to an [`Action`]. Keys become actions
//! in [`App::action_for`], through the key table of the screen or overlay
//! in force; run events arrive as actions too, so a test can
//! drive the whole app without a terminal.

use crate::config::Experiment;
use crate::event::Event;
use crate::train::{Control, RunHandle};
use crate::tui::dashboard::{self, Chrome, HELP_KEYS, QUIT_KEYS};
use crate::tui::export;
use crate::tui::keys::{self, Binding, Key};
use crate::tui::replay::Replay;
use crate::tui::runs::{view::RunsChrome, RunsInput, RunsScreen, RUNS_KEYS};
use crate::tui::setup::{Presets, Setup, SetupInput, SetupOutcome};
use crate::tui::state::{DashboardState, ViewOptions};
use crate::tui::theme::Theme;
use crate::tui::{Launcher, Previewer};
use crossterm::event::{KeyEvent, KeyEventKind};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};

/// Everything that can change the app's state.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Setup(SetupInput),
    TogglePause,
    Checkpoint,
    EvalNow,
    Screenshot,
    ToggleHelp,
    ToggleLogScale,
    ToggleTimeAxis,
    /// The Events pane in place of the pane grid, and back.
    ToggleEvents,
    /// Scroll the Events pane back (positive) or forward by lines…
    ScrollEvents(i64),
    /// …or by pages.
    PageEvents(i64),
    PrevLayer,
    NextLayer,
    /// `q`: quits, or asks first while training runs.
    RequestQuit,
    ConfirmQuit,
    CancelQuit,
    /// Ctrl-C: stop the run (if any) and quit without asking.
    Interrupt,
    /// Quit and leave the run training in its own process.
    Detach,
    /// The learning rate ×2 (`true`) or ÷2 from the next step.
    ScaleLr(bool),
    /// The setup with the settings of the run on screen (or selected on
    /// the runs screen), to change one and go again.
    TuneNext,
    /// Move the replay cursor by this many recorded steps.
    Seek(i64),
    SeekStart,
    SeekEnd,
    /// Boxed: events are large and most actions are a word.
    Run(Box<Event>),
    /// The run's event stream closed.
    RunEnded,
    /// The runs screen; on it, read the runs directory again.
    OpenRuns,
    /// On the runs screen.
    Runs(RunsInput),
    /// Open the selected run of the runs screen in replay.
    OpenSelected,
    /// Chat with the selected run of the runs screen (the terminal is
    /// handed to `meft chat` until it ends).
    ChatSelected,
    /// Back to the screen the runs screen (or a replay opened from it) came from.
    Back,
    /// The terminal changed size; only a redraw is needed.
    Redraw,
}

impl Action {
    /// Whether the action is a request to the trainer, which only a live run can answer.
    pub fn controls_trainer(&self) -> bool {
        matches!(
            self,
            Action::TogglePause | Action::Checkpoint | Action::EvalNow | Action::ScaleLr(_)
        )
    }
}

/// Keys that mean the same on every screen and under every overlay.
const APP_KEYS: &[Binding<Action>] = &[Binding::new(&[Key::Ctrl('c', Action::Interrupt)])];

/// A run being watched live.
pub struct Live {
    pub state: DashboardState,
    control: Sender<Control>,
    run_dir: PathBuf,
    stream_open: bool,
    /// The run trains in a process of its own, which quitting can leave.
    pub detachable: bool,
}

pub struct Replaying {
    pub replay: Replay,
    pub state: DashboardState,
    run_dir: PathBuf,
}

pub enum Screen {
    Setup(Setup),
    Live(Live),
    Replay(Replaying),
    Runs(RunsScreen),
}

pub struct App {
    pub screen: Screen,
    /// The screens under the one shown, which Esc goes back to: the setup
    /// screen or a dashboard under the runs screen, the runs screen under
    /// a replay opened from it. A live run below keeps receiving its events.
    back: Vec<Screen>,
    /// Where the runs screen looks for runs.
    runs_root: PathBuf,
    launcher: Option<Box<dyn Launcher>>,
    theme: Theme,
    help: bool,
    confirm_quit: bool,
    quit: bool,
    /// The receiver of a just-started run, for the loop to forward.
    new_events: Option<Receiver<Event>>,
    /// The trainer thread of the run on screen, and its directory.
    trainer: Option<(std::thread::JoinHandle<()>, PathBuf)>,
    /// The size screenshots are drawn at (the terminal's, once known).
    size: (u16, u16),
    /// A run to chat with, for the loop to hand the terminal over.
    chat_request: Option<PathBuf>,
    /// Quitting asked the live run to stop.
    stop_sent: bool,
    /// The setup screen while a run it started is watched, for `n`.
    parked: Option<Box<Setup>>,
}

impl App {
    pub fn setup(
        exp: Experiment,
        presets: Presets,
        launcher: Box<dyn Launcher>,
        previewer: Previewer,
        theme: Theme,
    ) -> Self {
        Self::with_screen(
            Screen::Setup(Setup::new(exp, presets, previewer)),
            Some(launcher),
            theme,
        )
    }

    /// Watch an already started run (no setup screen).
    pub fn live(handle: RunHandle, theme: Theme) -> Self {
        let mut app = Self::with_screen(Screen::Live(live_screen(theme, &handle)), None, theme);
        app.watch(handle);
        app
    }

    pub fn replay(events: Vec<Event>, run_dir: PathBuf, theme: Theme) -> Self {
        let replay = Replay::new(events);
        let state = replay.state(view(theme));
        Self::with_screen(
            Screen::Replay(Replaying {
                replay,
                state,
                run_dir,
            }),
            None,
            theme,
        )
    }

    fn with_screen(screen: Screen, launcher: Option<Box<dyn Launcher>>, theme: Theme) -> Self {
        Self {
            screen,
            back: Vec::new(),
            runs_root: PathBuf::from("runs"),
            launcher,
            theme,
            help: false,
            confirm_quit: false,
            quit: false,
            new_events: None,
            trainer: None,
            size: (120, 40),
            chat_request: None,
            stop_sent: false,
            parked: None,
        }
    }

    /// The runs screen lists the runs under `root` (the TUI's `--out`).
    pub fn with_runs_root(mut self, root: PathBuf) -> Self {
        self.runs_root = root;
        self
    }

    fn watch(&mut self, mut handle: RunHandle) {
        let before = std::mem::replace(
            &mut self.screen,
            Screen::Live(live_screen(self.theme, &handle)),
        );
        if let Screen::Setup(s) = before {
            self.parked = Some(Box::new(s));
        }
        self.trainer = handle.thread.take().map(|t| (t, handle.run_dir.clone()));
        self.new_events = Some(handle.events);
    }

    /// After the terminal is restored: wait for a run this app started or
    /// watched to end, so that a quit mid-run still leaves its checkpoint
    /// and summary (the trainer was told to stop), and say how to go on.
    pub fn finish_run(&mut self) {
        let dir = match self.trainer.take() {
            Some((thread, dir)) => {
                if !thread.is_finished() {
                    println!("stopping the run: it finishes its step and writes a checkpoint …");
                }
                let _ = thread.join();
                dir
            }
            None => {
                let Some(l) = self
                    .live_mut()
                    .filter(|l| l.detachable && l.run_dir.is_dir())
                else {
                    return;
                };
                let dir = l.run_dir.clone();
                if crate::train::remote::is_training(&dir) {
                    if !self.stop_sent {
                        println!(
                            "{} trains on in its own process: `meft attach {}` watches it, `meft stop {}` stops it",
                            dir.display(),
                            dir.display(),
                            dir.display()
                        );
                        return;
                    }
                    println!("stopping the run: it finishes its step and writes a checkpoint …");
                    while crate::train::remote::is_training(&dir) {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                }
                dir
            }
        };
        let stopped = crate::train::read_events(&dir).is_ok_and(|events| {
            events
                .iter()
                .rev()
                .take_while(|e| !matches!(e, Event::RunStarted { .. }))
                .any(|e| matches!(e, Event::Stopped { .. }))
        });
        println!(
            "run directory {}{}",
            dir.display(),
            if stopped {
                format!(
                    "; resume with `meft run --resume {}`, look back with `meft replay {}`",
                    dir.display(),
                    dir.display()
                )
            } else {
                String::new()
            }
        );
    }

    pub fn should_quit(&self) -> bool {
        self.quit
    }

    /// Time passed with nothing else happening: a runs screen listing a
    /// run that trains reads the directory again. Returns whether the
    /// screen changed.
    pub fn tick(&mut self) -> bool {
        let Some(r) = self.runs_mut() else {
            return false;
        };
        let running = r
            .records
            .iter()
            .any(|rec| rec.state == crate::train::runs::RunState::Running);
        if running {
            r.reload();
        }
        running
    }

    /// The run `c` asked to chat with, once.
    pub fn take_chat_request(&mut self) -> Option<PathBuf> {
        self.chat_request.take()
    }

    /// Say `text` on the runs screen (what a chat that could not start said).
    pub fn note_on_runs(&mut self, text: String) {
        if let Some(r) = self.runs_mut() {
            r.note = Some(text);
        }
    }

    /// The event receiver of a run started since the last call.
    pub fn take_new_events(&mut self) -> Option<Receiver<Event>> {
        self.new_events.take()
    }

    pub fn set_size(&mut self, w: u16, h: u16) {
        self.size = (w, h);
    }

    /// The dashboard state on screen, if a dashboard is up.
    pub fn dashboard(&self) -> Option<&DashboardState> {
        match &self.screen {
            Screen::Live(l) => Some(&l.state),
            Screen::Replay(r) => Some(&r.state),
            Screen::Setup(_) | Screen::Runs(_) => None,
        }
    }

    /// The runs screen, if it is up.
    pub fn runs(&self) -> Option<&RunsScreen> {
        match &self.screen {
            Screen::Runs(r) => Some(r),
            _ => None,
        }
    }

    pub fn runs_mut(&mut self) -> Option<&mut RunsScreen> {
        match &mut self.screen {
            Screen::Runs(r) => Some(r),
            _ => None,
        }
    }

    /// The live run, on screen or under the runs screen.
    fn live_mut(&mut self) -> Option<&mut Live> {
        std::iter::once(&mut self.screen)
            .chain(self.back.iter_mut())
            .find_map(|s| match s {
                Screen::Live(l) => Some(l),
                _ => None,
            })
    }

    /// Whether a run is training now, on screen or under another screen.
    /// Whether the live run trains in its own process.
    fn detachable(&self) -> bool {
        std::iter::once(&self.screen)
            .chain(self.back.iter())
            .any(|s| matches!(s, Screen::Live(l) if l.detachable))
    }

    fn training(&self) -> bool {
        std::iter::once(&self.screen)
            .chain(self.back.iter())
            .any(|s| matches!(s, Screen::Live(l) if l.state.phase.is_live() && l.stream_open))
    }

    /// What is drawn around a dashboard.
    fn chrome(&self) -> Chrome {
        match &self.screen {
            Screen::Replay(r) => Chrome {
                replay: Some(r.replay.position()),
                help: self.help,
                confirm_quit: false,
                detachable: false,
                from_runs: !self.back.is_empty(),
                picture: false,
            },
            _ => Chrome {
                help: self.help,
                confirm_quit: self.confirm_quit,
                detachable: self.detachable(),
                ..Chrome::default()
            },
        }
    }

    fn dashboard_mut(&mut self) -> Option<&mut DashboardState> {
        match &mut self.screen {
            Screen::Live(l) => Some(&mut l.state),
            Screen::Replay(r) => Some(&mut r.state),
            Screen::Setup(_) | Screen::Runs(_) => None,
        }
    }

    /// What a key press means on the current screen.
    pub fn action_for(&self, key: KeyEvent) -> Option<Action> {
        if key.kind != KeyEventKind::Press {
            return None;
        }
        if let Some(a) = keys::action(APP_KEYS, key) {
            return Some(a);
        }
        if let Screen::Setup(s) = &self.screen {
            return s.input_for(key).map(Action::Setup);
        }
        // The dashboard has no chords: a key means the same with a
        // modifier held, so a stray Ctrl or Alt does not swallow it.
        keys::action(self.dashboard_keys(), KeyEvent::from(key.code))
    }

    /// The bindings in force over the dashboard: an overlay's, else the screen's.
    fn dashboard_keys(&self) -> &'static [Binding<Action>] {
        if self.confirm_quit {
            if self.detachable() {
                dashboard::QUIT_OR_DETACH_KEYS
            } else {
                QUIT_KEYS
            }
        } else if self.help {
            HELP_KEYS
        } else {
            match &self.screen {
                Screen::Replay(r) => dashboard::screen_keys(&r.state, &self.chrome()),
                Screen::Live(l) => dashboard::screen_keys(&l.state, &self.chrome()),
                Screen::Runs(_) => RUNS_KEYS,
                Screen::Setup(_) => &[],
            }
        }
    }

    /// Apply an action; returns whether the screen needs redrawing.
    pub fn update(&mut self, action: Action) -> bool {
        match action {
            Action::Setup(input) => self.update_setup(input),
            Action::Run(ev) => {
                if let Some(l) = self.live_mut() {
                    // The trainer's answer replaces the "… requested" note.
                    if matches!(
                        *ev,
                        Event::Paused { .. }
                            | Event::Resumed { .. }
                            | Event::Checkpoint { .. }
                            | Event::Eval(_)
                    ) && l
                        .state
                        .view
                        .note
                        .as_deref()
                        .is_some_and(|n| n.ends_with("requested"))
                    {
                        l.state.view.note = None;
                    }
                    l.state.apply(&ev);
                    return true;
                }
                false
            }
            Action::RunEnded => {
                if let Some(l) = self.live_mut() {
                    l.stream_open = false;
                    if l.state.phase.is_live() {
                        // Without Finished or Failed the trainer went away mid-run.
                        l.state.view.note = Some("the run's event stream ended".into());
                    }
                    return true;
                }
                false
            }
            Action::TogglePause => {
                let paused = self
                    .dashboard()
                    .is_some_and(|s| s.phase == crate::tui::state::Phase::Paused);
                let (ctl, note) = if paused {
                    (Control::Resume, "resume requested")
                } else {
                    (Control::Pause, "pause requested")
                };
                self.send(ctl, note)
            }
            Action::Checkpoint => self.send(Control::Checkpoint, "checkpoint requested"),
            Action::EvalNow => self.send(Control::EvalNow, "eval requested"),
            Action::ScaleLr(up) => self.send(
                Control::ScaleLr { up },
                if up {
                    "learning rate × 2 from the next step"
                } else {
                    "learning rate ÷ 2 from the next step"
                },
            ),
            Action::Screenshot => {
                self.screenshot();
                true
            }
            Action::ToggleHelp => {
                self.help = !self.help;
                true
            }
            Action::ToggleLogScale => self.with_view(|v| v.log_loss = !v.log_loss),
            Action::ToggleTimeAxis => self.with_view(|v| v.wall_time_axis = !v.wall_time_axis),
            Action::ToggleEvents => self.with_view(|v| {
                v.events = !v.events;
                v.events_scroll = 0;
            }),
            Action::ScrollEvents(d) => self.scroll_events(d),
            Action::PageEvents(d) => {
                // The pane's rows less its frame and header, under the title bar
                // and above the status and hint rows.
                let page = self.size.1.saturating_sub(6).max(1) as i64;
                self.scroll_events(d * page)
            }
            Action::PrevLayer => self.step_layer(false),
            Action::NextLayer => self.step_layer(true),
            Action::RequestQuit => {
                if self.training() {
                    self.confirm_quit = true;
                } else {
                    self.quit = true;
                }
                true
            }
            Action::ConfirmQuit | Action::Interrupt => {
                if let Some(l) = self.live_mut() {
                    if l.state.phase.is_live() {
                        // The trainer may already be gone; quitting goes ahead
                        // anyway. One in its own process is told at once, on
                        // disk, before this process ends.
                        if l.detachable && l.run_dir.is_dir() {
                            let _ = crate::train::remote::send(&l.run_dir, Control::Stop);
                        } else {
                            let _ = l.control.send(Control::Stop);
                        }
                        self.stop_sent = true;
                    }
                }
                self.quit = true;
                true
            }
            Action::CancelQuit => {
                self.confirm_quit = false;
                true
            }
            Action::TuneNext => self.tune_next(),
            Action::Detach => {
                let detachable = self.detachable();
                if detachable {
                    self.quit = true;
                }
                detachable
            }
            Action::Seek(d) => self.seek(|r| r.seek(d)),
            Action::SeekStart => self.seek(Replay::home),
            Action::SeekEnd => self.seek(Replay::end),
            Action::OpenRuns => {
                match self.runs_mut() {
                    Some(r) => r.reload(),
                    None => self.open_runs(),
                }
                true
            }
            Action::Runs(input) => match self.runs_mut() {
                Some(r) => {
                    r.apply(input);
                    true
                }
                None => false,
            },
            Action::OpenSelected => self.open_selected(),
            Action::ChatSelected => {
                self.chat_request = self
                    .runs()
                    .and_then(|r| r.selected_record())
                    .map(|r| r.dir.clone());
                false
            }
            Action::Back => {
                if let Some(prev) = self.back.pop() {
                    self.screen = prev;
                    self.help = false;
                }
                true
            }
            Action::Redraw => true,
        }
    }

    /// `n`: the setup with the settings of the finished run on screen, or
    /// of the run selected on the runs screen.
    fn tune_next(&mut self) -> bool {
        let from: Option<(String, Option<Experiment>)> = match &self.screen {
            Screen::Runs(r) => r
                .selected_record()
                .map(|rec| (rec.name.clone(), rec.exp.clone())),
            Screen::Live(l) => Some((
                dir_name(&l.run_dir),
                Experiment::load(&l.run_dir.join("config.toml")).ok(),
            )),
            Screen::Replay(r) => Some((
                dir_name(&r.run_dir),
                Experiment::load(&r.run_dir.join("config.toml")).ok(),
            )),
            Screen::Setup(_) => None,
        };
        let Some((name, exp)) = from else {
            return false;
        };
        let say = |app: &mut Self, text: String| {
            match &mut app.screen {
                Screen::Runs(r) => r.note = Some(text),
                Screen::Live(l) => l.state.view.note = Some(text),
                Screen::Replay(r) => r.state.view.note = Some(text),
                Screen::Setup(_) => {}
            }
            true
        };
        if self.training() {
            return say(
                self,
                "a run is training: n takes a finished run's settings (d leaves this one training)"
                    .into(),
            );
        }
        let Some(exp) = exp else {
            return say(self, format!("{name} has no readable config.toml"));
        };
        let setup = self.parked.take().or_else(|| {
            let i = self
                .back
                .iter()
                .position(|s| matches!(s, Screen::Setup(_)))?;
            match self.back.remove(i) {
                Screen::Setup(s) => Some(Box::new(s)),
                _ => None,
            }
        });
        let Some(mut setup) = setup else {
            return say(
                self,
                "no setup screen here: `meft tui` starts from one".into(),
            );
        };
        setup.tune(exp, &name);
        self.back.clear();
        self.screen = Screen::Setup(*setup);
        self.help = false;
        true
    }

    /// Put the runs screen over the one shown, which Esc goes back to.
    fn open_runs(&mut self) {
        let runs = Screen::Runs(RunsScreen::load(&self.runs_root));
        let prev = std::mem::replace(&mut self.screen, runs);
        self.back.push(prev);
        self.help = false;
    }

    /// The selected run in replay, as `meft replay` opens it; a run that
    /// cannot be read says why on the runs screen.
    fn open_selected(&mut self) -> bool {
        let Some(dir) = self
            .runs()
            .map(|r| r.selected_record().map(|r| r.dir.clone()))
        else {
            return false;
        };
        let Some(dir) = dir else {
            return true;
        };
        // A run another process trains opens live (when none is watched here).
        if crate::train::remote::is_training(&dir) && !self.training() {
            match crate::train::remote::attach(&dir) {
                Ok(handle) => {
                    let live = Screen::Live(live_screen(self.theme, &handle));
                    let prev = std::mem::replace(&mut self.screen, live);
                    self.back.push(prev);
                    self.new_events = Some(handle.events);
                    self.help = false;
                }
                Err(e) => {
                    self.note_on_runs(format!("cannot attach: {}", crate::fsx::error_line(&e)))
                }
            }
            return true;
        }
        let Some(runs) = self.runs_mut() else {
            return false;
        };
        match crate::tui::replay::read_events(&dir) {
            Ok(events) => {
                let replay = Replay::new(events);
                let state = replay.state(view(self.theme));
                let screen = Screen::Replay(Replaying {
                    replay,
                    state,
                    run_dir: dir,
                });
                let prev = std::mem::replace(&mut self.screen, screen);
                self.back.push(prev);
            }
            Err(e) => {
                // The file is named within the run's directory, as in its row.
                let why = crate::fsx::error_line(&e);
                let prefix = format!("{}{}", dir.display(), std::path::MAIN_SEPARATOR);
                runs.note = Some(format!("cannot open: {}", why.replace(&prefix, "")));
            }
        }
        true
    }

    fn update_setup(&mut self, input: SetupInput) -> bool {
        let Screen::Setup(setup) = &mut self.screen else {
            return false;
        };
        match setup.apply(input) {
            SetupOutcome::Stay => {}
            SetupOutcome::Quit => self.quit = true,
            SetupOutcome::Runs => {
                self.open_runs();
                return true;
            }
            SetupOutcome::Start => {
                let exp = setup.exp.clone();
                let started = match self.launcher.as_mut() {
                    Some(l) => l.start(&exp),
                    None => Err("no launcher to start a run with".into()),
                };
                match started {
                    Ok(handle) => self.watch(handle),
                    Err(e) => setup.set_error_note(format!("cannot start: {e}")),
                }
            }
        }
        true
    }

    fn send(&mut self, ctl: Control, note: &str) -> bool {
        let Screen::Live(l) = &mut self.screen else {
            return false;
        };
        if !l.state.phase.is_live() {
            l.state.view.note = Some(format!("the run is {}", l.state.phase.label()));
        } else if l.control.send(ctl).is_err() {
            l.state.view.note = Some("the trainer is no longer listening".into());
        } else {
            l.state.view.note = Some(note.to_string());
        }
        true
    }

    fn with_view(&mut self, f: impl FnOnce(&mut ViewOptions)) -> bool {
        match self.dashboard_mut() {
            Some(s) => {
                f(&mut s.view);
                true
            }
            None => false,
        }
    }

    fn scroll_events(&mut self, delta: i64) -> bool {
        let (w, h) = self.size;
        let Some(s) = self.dashboard_mut() else {
            return false;
        };
        let lines = crate::tui::panes::events::line_count(s, w);
        let shown = h.saturating_sub(6) as usize;
        let most = lines.saturating_sub(shown) as i64;
        s.view.events_scroll = (s.view.events_scroll as i64 + delta).clamp(0, most) as usize;
        true
    }

    fn step_layer(&mut self, forward: bool) -> bool {
        let Some(s) = self.dashboard_mut() else {
            return false;
        };
        let n = s.layers().len();
        if n == 0 {
            return false;
        }
        let i = s.view.layer_index.min(n - 1);
        s.view.layer_index = if forward {
            (i + 1) % n
        } else {
            (i + n - 1) % n
        };
        true
    }

    fn seek(&mut self, f: impl FnOnce(&mut Replay)) -> bool {
        let Screen::Replay(r) = &mut self.screen else {
            return false;
        };
        f(&mut r.replay);
        let mut view = r.state.view.clone();
        view.note = None;
        r.state = r.replay.state(view);
        true
    }

    fn screenshot(&mut self) {
        let (w, h) = self.size;
        let (state, run_dir) = match &mut self.screen {
            Screen::Live(l) => (&mut l.state, &l.run_dir),
            Screen::Replay(r) => (&mut r.state, &r.run_dir),
            Screen::Setup(_) | Screen::Runs(_) => return,
        };
        let path = run_dir
            .join("screenshots")
            .join(format!("step-{}.svg", state.step()));
        // The picture shows the panes, not the note about the picture.
        state.view.note = None;
        let buf = export::render_picture(state, w.max(80), h.max(24));
        state.view.note = Some(match export::write_buffer(&buf, &path) {
            Ok(()) => format!("screenshot → {}", path.display()),
            Err(e) => format!("screenshot failed: {e:#}"),
        });
    }

    /// Draw the current screen.
    pub fn render(&self, area: Rect, buf: &mut Buffer) {
        match &self.screen {
            Screen::Setup(s) => s.render(&self.theme, area, buf),
            Screen::Live(l) => dashboard::render(&l.state, &self.chrome(), area, buf),
            Screen::Replay(r) => dashboard::render(&r.state, &self.chrome(), area, buf),
            Screen::Runs(r) => {
                let chrome = RunsChrome {
                    help: self.help,
                    confirm_quit: self.confirm_quit,
                    detachable: self.detachable(),
                };
                crate::tui::runs::view::render(r, chrome, &self.theme, area, buf);
            }
        }
    }
}

fn view(theme: Theme) -> ViewOptions {
    ViewOptions {
        theme,
        ..ViewOptions::default()
    }
}

fn live_screen(theme: Theme, handle: &RunHandle) -> Live {
    Live {
        state: DashboardState::new(view(theme)),
        control: handle.control.clone(),
        run_dir: handle.run_dir.clone(),
        stream_open: true,
        detachable: handle.thread.is_none(),
    }
}

/// The last component of a run directory, as the runs screen names it.
fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}
