//! meft: a terminal workbench for memory-efficient fine-tuning of
//! LLaMA-family models with MEFT sparse adapters offloaded to host memory.

pub mod config;
pub mod fsx;
pub mod model;
pub mod rng;
