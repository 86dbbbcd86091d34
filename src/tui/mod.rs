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
pub mod runs;
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

/// What a preview is computed under that the experiment does not say: how
/// large the unions are taken to be, and the device memory a plan must fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanKnobs {
    pub union: UnionAssumption,
    pub gpu_mem: u64,
}

/// |U|, the rows each adapter layer gathers per micro-batch, for the plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnionAssumption {
    /// min(M, N·K): every pick a different row.
    WorstCase,
    /// This fraction of M per layer, as `meft plan --union` takes it.
    Fraction(f64),
    /// What the newest run of the same shape measured.
    Measured,
}

/// One method's predicted cost, in bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostRow {
    /// "MEFT", "Parallel", "LoRA".
    pub method: String,
    /// The name where columns are few: "PA" for the Parallel Adapter.
    pub abbrev: String,
    /// What sets its size or assumption: "M 4096", "r 8", "worst |U|".
    pub detail: String,
    pub device: u64,
    pub host: u64,
    /// Host↔device bytes per optimizer step, both directions.
    pub per_step: u64,
    /// Whether `device` fits the knobs' device memory.
    pub fits: bool,
    /// The method the experiment uses.
    pub chosen: bool,
}

/// What the setup screen shows on the right: computed by the caller (the
/// planner) from an Experiment and the [`PlanKnobs`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostPreview {
    /// MEFT at the assumed unions, MEFT at the worst case (when the
    /// assumption is another), the dense Parallel Adapter of the same M,
    /// LoRA.
    pub rows: Vec<CostRow>,
    /// What the unions were taken to be, e.g. "0.56·M = 2294 rows (the paper's)".
    pub union_note: String,
    /// Bytes per step a dense offload of the same M moves, and MEFT's share of it.
    pub dense_offload: Option<(u64, f64)>,
    /// The device memory the rows are checked against.
    pub gpu_mem: u64,
    /// The chosen method's bytes by category ("device", [("base", 24 MiB), …]),
    /// and the planner's assumptions, for screens with room for them.
    pub breakdown: Vec<(String, Vec<(String, u64)>)>,
    pub notes: Vec<String>,
    pub error: Option<String>,
}

pub type Previewer = Box<dyn Fn(&Experiment, &PlanKnobs) -> CostPreview>;

/// The setup screen (offering the presets under `presets`), then the live
/// dashboard of the run it starts; the runs screen lists the runs under `runs`.
pub fn run_app(
    exp: Experiment,
    presets: &Path,
    runs: &Path,
    launcher: Box<dyn Launcher>,
    previewer: Previewer,
) -> anyhow::Result<()> {
    let presets = setup::Presets::load(presets);
    let app = app::App::setup(exp, presets, launcher, previewer, theme::Theme::from_env())
        .with_runs_root(runs.to_path_buf());
    term::run(app)
}

/// The live dashboard of a run started elsewhere.
pub fn run_dashboard(handle: RunHandle) -> anyhow::Result<()> {
    term::run(app::App::live(handle, theme::Theme::from_env()))
}

/// A recorded run in the dashboard, scrubbable step by step; screenshots
/// go to `<run_dir>/screenshots/`. The runs screen lists the runs beside it.
pub fn run_replay(events: Vec<Event>, run_dir: &Path) -> anyhow::Result<()> {
    // `run_dir` may name the log itself.
    let dir = if run_dir.is_file() {
        run_dir.parent().unwrap_or(run_dir)
    } else {
        run_dir
    };
    let runs = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let app =
        app::App::replay(events, dir.to_path_buf(), theme::Theme::from_env()).with_runs_root(runs);
    term::run(app)
}
