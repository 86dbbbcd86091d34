//! The model against candle-transformers' reference implementations.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use candle_core::{DType, Device, Tensor, D};
use meft::model::load::{random_model, tiny_config};
use meft::model::{load_model, Input, ModelRef, NoHooks, Tokenizer};
use std::collections::HashMap;

/// Write `model` as a Hugging Face directory (config.json, safetensors,
/// tokenizer.json).
fn write_hf_dir(dir: &std::path::Path, model: &meft::model::Model, tok: &Tokenizer) {
    let config = meft::model::load::hf_config_json(&model.config, Some(1), Some(2));
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let tensors: HashMap<String, Tensor> = model.named_tensors().into_iter().collect();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tok.to_json().unwrap()).unwrap();
}

#[test]
fn hf_directory_matches_candle_transformers_llama() {
    let tok = Tokenizer::tiny(&[]).unwrap();
    for tied in [false, true] {
        let mut cfg = tiny_config(tok.vocab_size());
        cfg.tie_embeddings = tied;
        cfg.num_layers = 2;
        let model = random_model(&cfg, 7, &Device::Cpu).unwrap();
        // Non-trivial norms so a wrong norm placement shows.
        let dir = tempfile::tempdir().unwrap();
        write_hf_dir(dir.path(), &model, &tok);

        let ours = load_model(&ModelRef::Hf(dir.path().to_path_buf()), &Device::Cpu).unwrap();
        assert_eq!(ours.model.config.tie_embeddings, tied);
        let ids: Vec<u32> = tok
            .encode("Odile Marsk built the lighthouse in 1874.")
            .unwrap();

        let cfg_text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        let lc: candle_transformers::models::llama::LlamaConfig =
            serde_json::from_str(&cfg_text).unwrap();
        let rc = lc.into_config(false);
        let tensors: HashMap<String, Tensor> = model.named_tensors().into_iter().collect();
        let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let reference = candle_transformers::models::llama::Llama::load(vb, &rc).unwrap();
        let mut cache =
            candle_transformers::models::llama::Cache::new(false, DType::F32, &rc, &Device::Cpu)
                .unwrap();
        let x = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let want: Vec<f32> = reference
            .forward(&x, 0, &mut cache)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let got = common::row_logits(&ours.model, &ids, true);
        assert_eq!(got.len(), want.len());
        let max_diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("tied={tied}: max |ours - candle llama| = {max_diff:e}");
        assert!(max_diff <= 1e-4, "max abs diff {max_diff}");
    }
}

#[test]
fn left_padding_does_not_change_a_row() {
    let loaded = load_model(&ModelRef::TinyRandom, &Device::Cpu).unwrap();
    let tok = &loaded.tokenizer;
    let a = tok.encode("who built it").unwrap();
    let b = tok
        .encode("a longer question about the lighthouse")
        .unwrap();
    let s = b.len();
    let mut ids = vec![tok.pad_id; s - a.len()];
    ids.extend(&a);
    ids.extend(&b);
    let mut mask = vec![0u8; s - a.len()];
    mask.extend(vec![1u8; a.len()]);
    mask.extend(vec![1u8; s]);
    let input = Input {
        ids: &ids,
        pad_mask: &mask,
        batch: 2,
        seq: s,
    };
    let batched = loaded
        .model
        .forward(&input, None, &mut NoHooks, true)
        .unwrap();
    let row0: Vec<f32> = batched
        .get(0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let alone = common::row_logits(&loaded.model, &a, true);
    let diff = row0
        .iter()
        .zip(&alone)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-5, "padded row differs by {diff}");
}

#[test]
#[ignore = "needs SmolLM2: scripts/get-smollm2.sh, then --include-ignored"]
fn smollm2_matches_quantized_llama() {
    let path = common::smollm2();
    // The reference multiplies in f32 too, instead of quantising activations.
    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    let dev = Device::Cpu;
    let ours = load_model(&ModelRef::Gguf(path.clone()), &dev).unwrap();
    let ids = ours.tokenizer.encode(common::CHAT_FRANCE).unwrap();
    let got = common::row_logits(&ours.model, &ids, true);

    let mut file = std::fs::File::open(&path).unwrap();
    let ct = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let mut reference =
        candle_transformers::models::quantized_llama::ModelWeights::from_gguf(ct, &mut file, &dev)
            .unwrap();
    let x = Tensor::new(ids.as_slice(), &dev)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let want: Vec<f32> = reference
        .forward(&x, 0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let dot: f64 = got
        .iter()
        .zip(&want)
        .map(|(a, b)| *a as f64 * *b as f64)
        .sum();
    let na: f64 = got.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = want.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
    let cosine = dot / (na * nb);
    let am = |v: &[f32]| {
        Tensor::new(v, &dev)
            .unwrap()
            .argmax(D::Minus1)
            .unwrap()
            .to_scalar::<u32>()
            .unwrap()
    };
    eprintln!("SmolLM2 logits cosine vs quantized_llama: {cosine:.7}");
    assert!(cosine >= 0.9999, "cosine {cosine}");
    assert_eq!(am(&got), am(&want));
}
