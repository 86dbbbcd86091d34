//! meft: a terminal workbench for memory-efficient fine-tuning of
//! LLaMA-family models with MEFT sparse adapters offloaded to host memory.
//!
//! The core ([`meft_core`]: runs, adapters, the planner, the event
//! contract) knows nothing of terminals; this crate adds the terminal UI on
//! top of it and the `meft` command.

pub use meft_core::*;

pub mod chat;
pub mod detach;
pub mod plot;
pub mod study_run;
pub mod tui;
