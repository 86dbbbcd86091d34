//! The evaluation room: the metrics (standard and the paper's), pulling the
//! answer out of a decoded text, and scoring a predictions file against its
//! gold file. Training never depends on it.

pub mod metrics;
pub mod score;

pub use metrics::{extract_answer, metrics_for, Metric};
pub use score::{score, ScoreReport};
