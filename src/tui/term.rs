//! The terminal: entering and leaving raw mode and the alternate screen,
//! restoring it on every exit path (a guard for normal returns and errors,
//! a panic hook for panics; Ctrl-C arrives as a key in raw mode), and the
//! event loop that feeds the app.

use crate::event::Event;
use crate::tui::app::{Action, App};
use anyhow::{bail, Context};
use crossterm::event as ct;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, BeginSynchronizedUpdate, EndSynchronizedUpdate,
    EnterAlternateScreen, LeaveAlternateScreen,
};
use crossterm::{cursor, execute, queue};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use std::io::{IsTerminal, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Once};
use std::thread;
use std::time::{Duration, Instant};

/// At most ten frames a second: enough to follow a run, cheap over SSH.
const FRAME: Duration = Duration::from_millis(100);
/// How long the loop sleeps when nothing happens; nothing is time-driven
/// on screen, so this only bounds how late a quit flag is noticed.
const IDLE: Duration = Duration::from_secs(1);
/// How often the input thread checks whether it should stop.
const INPUT_POLL: Duration = Duration::from_millis(250);
/// Messages handled between two draws at most, so a flood of run events
/// cannot starve the screen.
const MAX_BATCH: usize = 2048;

/// What reaches the loop: a key or resize, a run event, the end of a run.
pub enum AppMsg {
    Input(ct::Event),
    Run(Box<Event>),
    RunEnded,
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// Put the terminal back: leave the alternate screen, show the cursor,
/// leave raw mode. Safe to call more than once.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let mut out = std::io::stdout();
        let _ = execute!(
            out,
            EndSynchronizedUpdate,
            LeaveAlternateScreen,
            cursor::Show
        );
        let _ = disable_raw_mode();
    }
}

/// Restores the terminal when dropped.
pub struct TerminalGuard {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    pub fn enter() -> anyhow::Result<Self> {
        if !std::io::stdout().is_terminal() {
            bail!("stdout is not a terminal: use `meft run PRESET` for a headless run");
        }
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                // Restore first, or the panic message lands on the alternate screen and is lost.
                restore();
                previous(info);
            }));
        });
        ACTIVE.store(true, Ordering::SeqCst);
        let entered = (|| -> anyhow::Result<Terminal<CrosstermBackend<Stdout>>> {
            enable_raw_mode().context("cannot switch the terminal to raw mode")?;
            execute!(std::io::stdout(), EnterAlternateScreen, cursor::Hide)?;
            let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
            terminal.clear()?;
            Ok(terminal)
        })();
        match entered {
            Ok(terminal) => Ok(Self { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl TerminalGuard {
    /// Hand the terminal back for a while (to a chat): as on exit.
    pub fn suspend(&mut self) {
        restore();
    }

    /// Take the terminal again after [`TerminalGuard::suspend`], redrawn
    /// from scratch.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        ACTIVE.store(true, Ordering::SeqCst);
        enable_raw_mode().context("cannot switch the terminal to raw mode")?;
        execute!(std::io::stdout(), EnterAlternateScreen, cursor::Hide)?;
        self.terminal.clear()?;
        Ok(())
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// The input thread's switches: `stop` ends it; while `paused` it reads
/// nothing (the terminal is another program's) and says so in `idle`.
#[derive(Clone, Default)]
struct InputSwitch {
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    idle: Arc<AtomicBool>,
}

impl InputSwitch {
    /// Pause the input thread and wait until it is between reads.
    fn pause(&self) {
        self.idle.store(false, Ordering::SeqCst);
        self.paused.store(true, Ordering::SeqCst);
        let until = Instant::now() + 4 * INPUT_POLL;
        while !self.idle.load(Ordering::SeqCst) && Instant::now() < until {
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

fn spawn_input(tx: Sender<AppMsg>, switch: InputSwitch) {
    thread::spawn(move || {
        while !switch.stop.load(Ordering::Relaxed) {
            if switch.paused.load(Ordering::SeqCst) {
                switch.idle.store(true, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(20));
                continue;
            }
            match ct::poll(INPUT_POLL) {
                Ok(true) => match ct::read() {
                    Ok(ev) => {
                        if tx.send(AppMsg::Input(ev)).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                Ok(false) => {}
                Err(_) => return,
            }
        }
    });
}

fn spawn_forwarder(events: Receiver<Event>, tx: Sender<AppMsg>) {
    thread::spawn(move || {
        for ev in events {
            if tx.send(AppMsg::Run(Box::new(ev))).is_err() {
                return;
            }
        }
        let _ = tx.send(AppMsg::RunEnded);
    });
}

fn handle(app: &mut App, msg: AppMsg) -> bool {
    let action = match msg {
        AppMsg::Input(ct::Event::Key(k)) => app.action_for(k),
        AppMsg::Input(ct::Event::Resize(_, _)) => Some(Action::Redraw),
        AppMsg::Input(_) => None,
        AppMsg::Run(ev) => Some(Action::Run(ev)),
        AppMsg::RunEnded => Some(Action::RunEnded),
    };
    action.is_some_and(|a| app.update(a))
}

/// Run `app` until it quits. Redraws only when something changed, at most
/// every [`FRAME`], each frame inside synchronized output; when idle it
/// blocks on the channel.
pub fn run(mut app: App) -> anyhow::Result<()> {
    let mut guard = TerminalGuard::enter()?;
    let (tx, rx) = mpsc::channel();
    let switch = InputSwitch::default();
    spawn_input(tx.clone(), switch.clone());
    let result = (|| -> anyhow::Result<()> {
        let mut dirty = true;
        let mut last_draw: Option<Instant> = None;
        loop {
            if let Some(events) = app.take_new_events() {
                spawn_forwarder(events, tx.clone());
            }
            let since = last_draw.map_or(FRAME, |t| t.elapsed());
            if dirty && since >= FRAME {
                let size = guard.terminal.size()?;
                app.set_size(size.width, size.height);
                queue!(guard.terminal.backend_mut(), BeginSynchronizedUpdate)?;
                guard
                    .terminal
                    .draw(|f| {
                        let area = f.area();
                        app.render(area, f.buffer_mut());
                    })
                    .context("drawing the screen")?;
                execute!(guard.terminal.backend_mut(), EndSynchronizedUpdate)?;
                dirty = false;
                last_draw = Some(Instant::now());
            }
            let timeout = if dirty {
                FRAME.saturating_sub(since)
            } else {
                IDLE
            };
            match rx.recv_timeout(timeout) {
                Ok(msg) => {
                    dirty |= handle(&mut app, msg);
                    for msg in rx.try_iter().take(MAX_BATCH) {
                        dirty |= handle(&mut app, msg);
                        if app.should_quit() {
                            break;
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if !dirty {
                        dirty |= app.tick();
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            if app.should_quit() {
                return Ok(());
            }
            if let Some(dir) = app.take_chat_request() {
                // The terminal goes to the chat, as it would to an editor.
                switch.pause();
                guard.suspend();
                let said = crate::chat::at_terminal(&dir);
                guard.resume()?;
                switch.resume();
                if let Err(e) = said {
                    app.note_on_runs(format!("cannot chat: {}", crate::fsx::error_line(&e)));
                }
                dirty = true;
            }
        }
    })();
    switch.stop.store(true, Ordering::Relaxed);
    drop(guard);
    app.finish_run();
    result
}
