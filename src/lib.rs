//! meft: a terminal workbench for memory-efficient fine-tuning of
//! LLaMA-family models with MEFT sparse adapters offloaded to host memory.

pub mod adapter;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod event;
pub mod fsx;
pub mod model;
pub mod optim;
pub mod rng;
pub mod telemetry;
pub mod train;
pub mod tui;
pub mod units;
