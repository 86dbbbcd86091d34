//! meft's core: everything a run is and does, without a terminal UI. The
//! compiler keeps it so: this crate does not depend on ratatui or
//! crossterm. The rooms, from the ground floor up (a room imports only from
//! rooms below it; docs/ARCHITECTURE.md draws the plan):
//!
//! - [`event`], [`units`], [`fsx`], [`rng`], [`checkpoint`]: the event
//!   contract, how quantities read, atomic files, seeded randomness, the
//!   streamed safetensors format.
//! - [`config`]: the experiment schema and its closed choices.
//! - [`model`]: the frozen base, its loaders, ops and generation.
//! - [`optim`]: AdamW on the device and for host rows, schedules.
//! - [`data`]: formats, the synthetic world, prompts, batching.
//! - [`eval`]: metrics and the evaluation loop.
//! - [`adapter`]: MEFT, the Parallel Adapter, LoRA.
//! - [`telemetry`]: sampling the machine, and the planner.
//! - [`train`]: the loop, methods, checkpoints, runs, headless output.
//! - [`bench`]: the performance table, measured side by side.
//! - [`study`]: grids of runs and the report of what they show.
//! - [`selftest`]: the compute device's path against the CPU reference.

/// meft's version, as every run records it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// A hash of the source tree this binary was built from (both crates'
/// sources, the embedded assets, the manifests and the lock file): a study
/// reuses a run only when it was trained by the same tree.
pub const SOURCE_HASH: &str = env!("MEFT_SOURCE_HASH");

pub mod adapter;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod event;
pub mod fsx;
pub mod model;
pub mod optim;
pub mod rng;
pub mod selftest;
pub mod study;
pub mod telemetry;
pub mod train;
pub mod units;
