//! Adapters: MEFT (host store, Key-Experts routing, the counted host↔device
//! link), the dense Parallel Adapter and LoRA. They attach to the base model
//! through `model::Hooks`; none of them runs the training loop.

pub mod link;
pub mod lora;
pub mod meft;

pub mod parallel;
pub mod reference;
