//! Model shapes without weights: the built-in table (the embedded model,
//! SmolLM2 and the paper's 7B models) and any reference's shape read from
//! its files' metadata.

use super::ops::RopeLayout;
use super::{Arch, ModelConfig};

/// The shape of a model known by name, so `meft plan` works on the paper's
/// settings without weights.
pub fn builtin_shape(name: &str) -> Option<ModelConfig> {
    let llama = |vocab, d, layers, heads, kv, ffn, tied, theta, max_pos| ModelConfig {
        arch: Arch::Llama,
        vocab_size: vocab,
        hidden_size: d,
        intermediate_size: ffn,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv,
        head_dim: d / heads,
        rms_norm_eps: 1e-5,
        rope_theta: theta,
        rope_layout: RopeLayout::HalfSplit,
        sliding_window: None,
        tie_embeddings: tied,
        max_position_embeddings: max_pos,
    };
    match name.strip_prefix("embedded:").unwrap_or(name) {
        "tiny" | "tiny-random" => Some(llama(259, 128, 4, 4, 2, 352, true, 10_000.0, 1024)),
        "smollm2-135m" => Some(llama(49152, 576, 30, 9, 3, 1536, true, 100_000.0, 8192)),
        "llama-7b" => Some(ModelConfig {
            rms_norm_eps: 1e-6,
            ..llama(32000, 4096, 32, 32, 32, 11008, false, 10_000.0, 2048)
        }),
        "mistral-7b" => Some(ModelConfig {
            arch: Arch::Mistral,
            sliding_window: Some(4096),
            ..llama(32000, 4096, 32, 32, 8, 14336, false, 10_000.0, 32768)
        }),
        _ => None,
    }
}

/// Names [`builtin_shape`] knows.
pub const BUILTIN_SHAPES: [&str; 4] = ["tiny", "smollm2-135m", "llama-7b", "mistral-7b"];

/// The shape of the model an experiment names: `builtin:NAME` (or a bare
/// built-in name) from the table, anything else from its files' metadata,
/// without loading weights.
pub fn shape_of(reference: &str) -> anyhow::Result<ModelConfig> {
    let name = reference.strip_prefix("builtin:").unwrap_or(reference);
    if let Some(shape) = builtin_shape(name) {
        return Ok(shape);
    }
    if reference.starts_with("builtin:") {
        anyhow::bail!(
            "model.reference: unknown built-in shape {name:?} (one of {})",
            BUILTIN_SHAPES.join(", ")
        );
    }
    let r =
        super::ModelRef::parse(reference).map_err(|e| anyhow::anyhow!("model.reference: {e}"))?;
    Ok(super::load::model_shape(&r)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_shapes_have_their_published_sizes() {
        let shape = |n: &str| match builtin_shape(n) {
            Some(s) => s,
            None => panic!("{n} is built in"),
        };
        let count = |n: &str| shape(n).param_count();
        assert_eq!(count("llama-7b"), 6_738_415_616);
        assert_eq!(count("mistral-7b"), 7_241_732_096);
        assert_eq!(count("smollm2-135m"), 134_515_008);
        assert_eq!(count("tiny"), 771_584);
        assert_eq!(builtin_shape("embedded:tiny"), builtin_shape("tiny"));
        assert_eq!(shape("mistral-7b").sliding_window, Some(4096));
        assert_eq!(builtin_shape("gpt-2"), None);
        assert!(BUILTIN_SHAPES.iter().all(|n| builtin_shape(n).is_some()));
    }
}
