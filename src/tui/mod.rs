//! The terminal UI: the setup screen, the live dashboard, replay of a
//! recorded run, the help overlay, and screenshots of the dashboard as SVG,
//! PNG or text. It draws what the [`Event`] stream says and sends
//! [`Control`](crate::train::Control)s back; it computes nothing the trainer
//! or the planner owns (the setup screen's prediction comes from the
//! caller's [`Previewer`]).

pub mod app;
pub mod dashboard;
pub mod export;
pub mod keys;
pub mod launch;
pub mod overlay;
pub mod panes;
pub mod replay;
pub mod setup;
pub mod state;
mod stderr_log;
pub mod term;
pub mod theme;
pub mod units;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;

use crate::config::Experiment;
use crate::event::Event;
use crate::train::RunHandle;
use std::path::Path;

pub use export::{parse_size, render_dashboard, screenshot};
pub use replay::read_events;
pub use state::DashboardState;
pub use stderr_log::StderrToFile;

/// Starts a run for the setup screen (the trainer lives behind this).
pub trait Launcher {
    fn start(&mut self, exp: &Experiment) -> Result<RunHandle, String>;
}

/// What the setup screen shows on the right: computed by the caller (the planner) from an Experiment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostPreview {
    /// Label, value.
    pub lines: Vec<(String, String)>,
    pub fits: Option<bool>,
    pub error: Option<String>,
}

pub type Previewer = Box<dyn Fn(&Experiment) -> CostPreview>;

/// The setup screen, then the live dashboard of the run it starts.
pub fn run_app(
    exp: Experiment,
    launcher: Box<dyn Launcher>,
    previewer: Previewer,
) -> anyhow::Result<()> {
    let app = app::App::setup(exp, launcher, previewer, theme::Theme::from_env());
    term::run(app)
}

/// The live dashboard of a run started elsewhere.
pub fn run_dashboard(handle: RunHandle) -> anyhow::Result<()> {
    term::run(app::App::live(handle, theme::Theme::from_env()))
}

/// A recorded run in the dashboard, scrubbable step by step; screenshots
/// go to `<run_dir>/screenshots/`.
pub fn run_replay(events: Vec<Event>, run_dir: &Path) -> anyhow::Result<()> {
    let app = app::App::replay(events, run_dir.to_path_buf(), theme::Theme::from_env());
    term::run(app)
}
