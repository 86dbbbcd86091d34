//! The training loop, control handling, checkpoints, the run directory and
//! the [`event::Event`] stream.

pub mod event;
