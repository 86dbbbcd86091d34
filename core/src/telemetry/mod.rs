//! Telemetry: what the machine is doing while a run trains, and what a run
//! will cost before it starts.
//!
//! - [`sampler`]: a background task that samples process and system memory,
//!   CPU load and the GPUs, and sends [`crate::event::Event::Telemetry`]
//!   without ever blocking the trainer.
//! - [`nvml`]: NVIDIA readings behind the [`nvml::GpuSource`] trait; a machine
//!   without the driver gets a reason instead of readings.
//! - [`plan`]: closed-form predictions of device memory, host memory and
//!   host↔device bytes per step for any experiment, in the same categories as
//!   the trainer's measured ledger.

pub mod activations;
pub mod heap;
pub mod logs;
pub mod nvml;
pub mod plan;
pub mod sampler;

pub use nvml::{open_gpu_source, GpuSource, NvmlSource};
pub use plan::{plan, Plan, PlanError, PlanInput, PAPER_UNION_FRACTION};
pub use sampler::{available_memory, machine, peak_rss, spawn_sampler, SamplerHandle};
