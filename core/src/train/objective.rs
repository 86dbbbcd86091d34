//! The training objective: next-token cross-entropy over the loss-masked,
//! non-padding positions of a batch.

use crate::data::batch::Batch;
use candle_core::{Result, Tensor};

/// Mean cross-entropy over the loss-masked next-token targets: position t
/// of each row predicts token t + 1, where that token is real and in the
/// loss mask. Returns the loss and how many positions it averages.
pub fn masked_loss(logits: &Tensor, batch: &Batch) -> Result<(Tensor, usize)> {
    let (b, s, _) = logits.dims3()?;
    let mut targets = vec![0u32; b * s];
    let mut weights = vec![0f32; b * s];
    for r in 0..b {
        for t in 0..s - 1 {
            let i = r * s + t + 1;
            targets[r * s + t] = batch.ids[i];
            if batch.loss_mask[i] == 1 && batch.attn_mask[i] == 1 {
                weights[r * s + t] = 1.0;
            }
        }
    }
    let count = weights.iter().filter(|w| **w > 0.0).count();
    let loss = crate::model::ops::cross_entropy(logits, targets, weights)?;
    Ok((loss, count))
}
