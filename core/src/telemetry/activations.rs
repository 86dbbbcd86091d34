//! What one micro-batch's forward pass keeps alive for its backward pass.
//!
//! candle keeps every tensor computed from a trainable value until the loss
//! is dropped, so what a step holds is the sum of the forward's outputs from
//! the first hooked op on. These counts mirror `Model::layer_forward`, the
//! loss and each adapter's forward op by op (views cost nothing, copies and
//! op outputs do); a test measures a real step with the counting allocator
//! and holds them to it.

use crate::model::ModelConfig;

const F32: u64 = 4;
const U32: u64 = 4;

/// The shape of one micro-batch as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MicroBatch {
    /// N: tokens including padding (rows × sequence length).
    pub tokens: u64,
    /// The padded sequence length.
    pub seq: u64,
    /// Bytes per value of the base's dtype (4 for f32, 2 for bf16 and f16).
    pub base_bytes: u64,
    /// The CPU's fused kernels run (one masked softmax op, the fused MEFT
    /// layer); other devices compose the same from stock ops.
    pub cpu: bool,
}

/// What an adapter keeps per hooked layer, by method.
#[derive(Debug, Clone, PartialEq)]
pub enum AdapterKept<'a> {
    None,
    /// Full fine-tuning: the norms run as composed, differentiable ops.
    Full,
    /// MEFT: K slots, E experts (0 for full routing), |U| per hooked
    /// layer; `composed` is the non-CPU path that works over the union.
    Meft {
        top_k: u64,
        experts: u64,
        unions: &'a [u64],
        composed: bool,
    },
    /// A dense Parallel Adapter of `size` neurons in `layers` layers.
    Parallel {
        size: u64,
        layers: u64,
    },
    /// LoRA of `rank` on projections of (fan-in, fan-out), in every layer.
    Lora {
        rank: u64,
        dropout: bool,
        targets: &'a [(u64, u64)],
    },
}

fn mul(f: &[u64]) -> u64 {
    // Saturating, so an absurd shape reads as "too much", never wraps.
    f.iter().fold(1u64, |a, &x| a.saturating_mul(x))
}

fn add(items: &[u64]) -> u64 {
    items.iter().fold(0u64, |a, &x| a.saturating_add(x))
}

/// Values one decoder layer keeps per token.
fn layer_values(model: &ModelConfig, seq: u64, cpu: bool) -> u64 {
    let d = model.hidden_size as u64;
    let q = (model.num_heads * model.head_dim) as u64;
    let kv = (model.num_kv_heads * model.head_dim) as u64;
    let ffn = model.intermediate_size as u64;
    let heads = model.num_heads as u64;
    add(&[
        // attention norm, o_proj, h + attention, FFN norm, down_proj, h + FFN
        mul(&[6, d]),
        // q, q by head, rotated q, the context, the context by position
        mul(&[5, q]),
        // k, v, both by head, rotated k
        mul(&[5, kv]),
        // gate, up, SiLU(gate)·up (on the CPU one op; composed, SiLU(gate)
        // is kept too)
        mul(&[if cpu { 3 } else { 4 }, ffn]),
        // per head and key: the scores and their softmax; composed, also
        // the scaled and the masked scores
        mul(&[if cpu { 2 } else { 4 }, heads, seq]),
    ])
}

/// The base's part: every layer, the final norm, the logits (widened to f32
/// for a half-precision base) and, composed off the CPU, the loss's
/// log-softmax (difference, exponent, result; f32). The CPU's fused loss
/// keeps nothing but the logits.
pub fn base_kept(model: &ModelConfig, mb: &MicroBatch) -> u64 {
    let (n, e) = (mb.tokens, mb.base_bytes);
    let d = model.hidden_size as u64;
    let vocab = model.vocab_size as u64;
    let layers = mul(&[
        model.num_layers as u64,
        n,
        layer_values(model, mb.seq, mb.cpu),
        e,
    ]);
    let widened = if e == F32 { 0 } else { mul(&[n, vocab, F32]) };
    add(&[
        layers,
        mul(&[n, d, e]),
        mul(&[n, vocab, e]),
        widened,
        if mb.cpu { 0 } else { mul(&[3, n, vocab, F32]) },
    ])
}

/// What the backward pass holds beyond the forward's tensors at its
/// fullest, before the parameters' gradients have piled up: the loss's
/// gradient crossing log-softmax (three N × vocab tensors at once), or, as
/// it crosses a layer, a gradient for each tensor that layer kept (its own,
/// and `adapter_per_layer` bytes of the adapter's), whichever is larger.
pub fn backward_working_set(model: &ModelConfig, mb: &MicroBatch, adapter_per_layer: u64) -> u64 {
    let loss = mul(&[3, mb.tokens, model.vocab_size as u64, F32]);
    let layer = add(&[
        mul(&[
            mb.tokens,
            layer_values(model, mb.seq, mb.cpu),
            mb.base_bytes,
        ]),
        adapter_per_layer,
    ]);
    loss.max(layer)
}

/// The adapter's part, beyond its parameters and the rows it gathered.
pub fn adapter_kept(model: &ModelConfig, mb: &MicroBatch, method: &AdapterKept) -> u64 {
    let (n, e) = (mb.tokens, mb.base_bytes);
    let d = model.hidden_size as u64;
    let half = e != F32;
    // A hook on the FFN adds its output to the layer's (in the base dtype);
    // a half-precision base also widens u for it and narrows the output.
    let ffn_hook = add(&[
        mul(&[d, e]),
        if half {
            add(&[mul(&[d, F32]), mul(&[d, e])])
        } else {
            0
        },
    ]);
    match method {
        AdapterKept::None => 0,
        AdapterKept::Full => {
            // Composed norms keep x², and two products, for each of the two
            // norms per layer and the final one.
            let per_norm = mul(&[2, d, e]);
            mul(&[
                n,
                add(&[mul(&[2, model.num_layers as u64, per_norm]), per_norm]),
            ])
        }
        AdapterKept::Meft {
            top_k,
            experts,
            unions,
            composed,
        } => {
            let k = *top_k;
            let per_layer = || {
                // Router logits, the slots' gates and their index into the
                // logits (none of it without a router), the output.
                let router = if *experts > 0 {
                    add(&[mul(&[*experts, F32]), mul(&[k, U32])])
                } else {
                    0
                };
                let mut token = add(&[router, mul(&[k, F32]), mul(&[d, F32]), ffn_hook]);
                if *composed {
                    // The composed op computes its output outside the graph
                    // and recomputes what its backward needs, keeping only
                    // the slots' map into the union (u32).
                    token = add(&[token, mul(&[k, U32])]);
                }
                mul(&[n, token])
            };
            add(&unions.iter().map(|_| per_layer()).collect::<Vec<_>>())
        }
        AdapterKept::Parallel { size, layers } => {
            // u·Kᵀ and its SiLU, then ·V.
            let token = add(&[mul(&[2, *size, F32]), mul(&[d, F32]), ffn_hook]);
            mul(&[*layers, n, token])
        }
        AdapterKept::Lora {
            rank,
            dropout,
            targets,
        } => {
            let per_layer: u64 = add(&targets
                .iter()
                .map(|&(fan_in, out)| {
                    add(&[
                        // The widened input, when the base is half precision.
                        if half { mul(&[fan_in, F32]) } else { 0 },
                        // Dropout's mask and the masked input.
                        if *dropout { mul(&[2, fan_in, F32]) } else { 0 },
                        // x·A, then ·B and scaled.
                        mul(&[*rank, F32]),
                        mul(&[2, out, F32]),
                        // Added to the projection (narrowed first if half).
                        mul(&[out, e]),
                        if half { mul(&[out, e]) } else { 0 },
                    ])
                })
                .collect::<Vec<_>>());
            mul(&[model.num_layers as u64, n, per_layer])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ModelConfig {
        match crate::model::shapes::builtin_shape("tiny") {
            Some(m) => m,
            None => panic!("tiny is a builtin shape"),
        }
    }

    #[test]
    fn base_kept_by_hand() {
        // Tiny: d 128, q 4 × 32 = 128, kv 2 × 32 = 64, FFN 352, 4 heads,
        // vocab 259, 4 layers. Per layer and token at sequences of 8:
        // 6·128 + 5·128 + 5·64 + 4·352 + 4·4·8 = 3264 values composed; on
        // the CPU two of the four score tensors (64) and SiLU(gate) (352)
        // fewer, and the fused loss keeps none of log-softmax's three
        // N × vocab tensors.
        let mb = MicroBatch {
            tokens: 8,
            seq: 8,
            base_bytes: 4,
            cpu: false,
        };
        let cpu = MicroBatch { cpu: true, ..mb };
        assert_eq!(
            base_kept(&tiny(), &mb) - base_kept(&tiny(), &cpu),
            4 * 8 * (64 + 352) * 4 + 3 * 8 * 259 * 4
        );
        let layers = 4 * 8 * 3264 * 4;
        let head = 8 * 128 * 4 + 8 * 259 * 4;
        let loss = 3 * 8 * 259 * 4;
        assert_eq!(base_kept(&tiny(), &mb), layers + head + loss);
        assert_eq!(base_kept(&tiny(), &mb), 455_040);
        // Half precision halves the layers and adds the widened logits.
        let half = MicroBatch {
            base_bytes: 2,
            ..mb
        };
        let widened = 8 * 259 * 4;
        assert_eq!(
            base_kept(&tiny(), &half),
            layers / 2 + head / 2 + widened + loss
        );
        // The loss's three N × vocab tensors (24 864 B) are fewer than one
        // layer's 8 · 3264 · 4 = 104 448 B (plus the adapter's).
        assert_eq!(backward_working_set(&tiny(), &mb, 0), 8 * 3264 * 4);
        assert_eq!(backward_working_set(&tiny(), &mb, 100), 8 * 3264 * 4 + 100);
        let one = MicroBatch { seq: 1, ..mb };
        let mut wide = tiny();
        wide.vocab_size = 50_000;
        assert_eq!(backward_working_set(&wide, &one, 0), 3 * 8 * 50_000 * 4);
        let huge = MicroBatch {
            tokens: u64::MAX,
            seq: u64::MAX,
            base_bytes: 4,
            cpu: true,
        };
        assert_eq!(base_kept(&tiny(), &huge), u64::MAX);
    }

    #[test]
    fn adapters_keep_by_hand() {
        let mb = MicroBatch {
            tokens: 8,
            seq: 8,
            base_bytes: 4,
            cpu: true,
        };
        // MEFT, K 4, E 16, two layers of unions 10 and 20: per token
        // logits 16, gate index 4, gates 4, output 128 (f32) and the sum
        // into the layer's output 128.
        let unions = [10, 20];
        let meft = |composed| AdapterKept::Meft {
            top_k: 4,
            experts: 16,
            unions: &unions,
            composed,
        };
        let per_token = (16 + 4 + 4 + 128 + 128) * 4;
        assert_eq!(adapter_kept(&tiny(), &mb, &meft(false)), 2 * 8 * per_token);
        // Composed: the slots' map (K u32) per token; nothing of N × |U|.
        assert_eq!(
            adapter_kept(&tiny(), &mb, &meft(true)),
            2 * 8 * (per_token + 4 * 4)
        );
        // Parallel Adapter of 64 in 3 layers: u·Kᵀ, SiLU, ·V and the sum.
        let parallel = AdapterKept::Parallel {
            size: 64,
            layers: 3,
        };
        assert_eq!(
            adapter_kept(&tiny(), &mb, &parallel),
            3 * 8 * (2 * 64 * 4 + 128 * 4 + 128 * 4)
        );
        // LoRA rank 2 on q (128 → 128) with dropout, all 4 layers: mask and
        // masked input, x·A, ·B and scaled, the sum.
        let targets = [(128, 128)];
        let lora = AdapterKept::Lora {
            rank: 2,
            dropout: true,
            targets: &targets,
        };
        assert_eq!(
            adapter_kept(&tiny(), &mb, &lora),
            4 * 8 * (2 * 128 * 4 + 2 * 4 + 2 * 128 * 4 + 128 * 4)
        );
    }
}
