//! The setup screen: the experiment's knobs on the left, the planner's
//! prediction on the right, re-validated and re-predicted on every change.
//! Keyboard only: Tab/↑↓ move, ◀ ▶ or +/- change, typing edits, Enter
//! starts (on the preset row it lists the presets), `w` saves the setup as
//! a preset.

mod cost;
mod fields;
mod keys;
mod presets;
mod state;
mod view;

pub use fields::{Field, FIELDS};
pub use keys::SetupInput;
pub use presets::{Preset, Presets};
pub use state::{Setup, SetupOutcome};
