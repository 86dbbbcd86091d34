//! Model shapes without weights: the built-in table (the embedded model,
//! SmolLM2, the paper's 7B models and today's common bases) and any reference's shape read from
//! its files' metadata.

use super::ops::Activation;
use super::ops::RopeLayout;
use super::{Arch, ModelConfig, RopeScaling};

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
        ..ModelConfig::default()
    };
    let llama3 = |factor| {
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        })
    };
    let gemma3 = |d, layers, ffn| ModelConfig {
        arch: Arch::Gemma3,
        head_dim: 256,
        rms_norm_eps: 1e-6,
        sliding_window: Some(512),
        qk_norm: true,
        post_norms: true,
        embed_scale: true,
        activation: Activation::GeluTanh,
        query_pre_attn_scalar: Some(256.0),
        sliding_window_pattern: Some(6),
        rope_local_theta: Some(10_000.0),
        ..llama(262_144, d, layers, 4, 1, ffn, true, 1e6, 32_768)
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
        "llama-3.1-8b" => Some(ModelConfig {
            rope_scaling: llama3(8.0),
            ..llama(128_256, 4096, 32, 32, 8, 14_336, false, 500_000.0, 131_072)
        }),
        "llama-3.2-1b" => Some(ModelConfig {
            rope_scaling: llama3(32.0),
            ..llama(128_256, 2048, 16, 32, 8, 8192, true, 500_000.0, 131_072)
        }),
        "qwen2.5-7b" => Some(ModelConfig {
            arch: Arch::Qwen2,
            rms_norm_eps: 1e-6,
            qkv_bias: true,
            ..llama(152_064, 3584, 28, 28, 4, 18_944, false, 1e6, 32_768)
        }),
        "qwen2.5-0.5b" => Some(ModelConfig {
            arch: Arch::Qwen2,
            rms_norm_eps: 1e-6,
            qkv_bias: true,
            ..llama(151_936, 896, 24, 14, 2, 4864, true, 1e6, 32_768)
        }),
        "gemma-3-1b" => Some(gemma3(1152, 26, 6912)),
        "gemma-3-270m" => Some(gemma3(640, 18, 2048)),
        _ => None,
    }
}

/// Names [`builtin_shape`] knows.
pub const BUILTIN_SHAPES: [&str; 10] = [
    "tiny",
    "smollm2-135m",
    "llama-7b",
    "mistral-7b",
    "llama-3.1-8b",
    "llama-3.2-1b",
    "qwen2.5-7b",
    "qwen2.5-0.5b",
    "gemma-3-1b",
    "gemma-3-270m",
];

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
        // The published parameter counts of the newer families.
        assert_eq!(count("llama-3.1-8b"), 8_030_261_248);
        assert_eq!(count("llama-3.2-1b"), 1_235_814_400);
        assert_eq!(count("qwen2.5-7b"), 7_615_616_512);
        assert_eq!(count("qwen2.5-0.5b"), 494_032_768);
        assert_eq!(count("gemma-3-1b"), 999_885_952);
        assert_eq!(count("gemma-3-270m"), 268_098_176);
        assert_eq!(builtin_shape("embedded:tiny"), builtin_shape("tiny"));
        assert_eq!(shape("mistral-7b").sliding_window, Some(4096));
        assert_eq!(builtin_shape("gpt-2"), None);
        assert!(BUILTIN_SHAPES.iter().all(|n| builtin_shape(n).is_some()));
    }
}
