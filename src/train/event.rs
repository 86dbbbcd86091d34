//! The run's events live on the ground floor, [`crate::event`]; this path
//! stays for the rooms above that still name it.

pub use crate::event::*;
