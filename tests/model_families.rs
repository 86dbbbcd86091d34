//! Every supported family against candle-transformers' own implementation
//! (logits), and meft's hand-written backward passes against autograd
//! through a stock-op decoder (the input gradient), on tiny random configs
//! written as Hugging Face directories.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use candle_core::{DType, Device, Tensor, Var, D};
use common::{row_forward, values as flat};
use meft::model::load::{hf_config_json, random_model};
use meft::model::ops::{Activation, RopeLayout};
use meft::model::Tokenizer;
use meft::model::{load_model, Arch, Model, ModelConfig, ModelRef, RopeScaling};
use std::collections::HashMap;
use std::path::Path;

const TEXT: &str = "Odile Marsk built the lighthouse in 1874.";

fn base(arch: Arch, vocab: usize) -> ModelConfig {
    ModelConfig {
        arch,
        vocab_size: vocab,
        hidden_size: 64,
        intermediate_size: 96,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 16,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        rope_layout: RopeLayout::HalfSplit,
        sliding_window: None,
        tie_embeddings: false,
        max_position_embeddings: 1024,
        ..ModelConfig::default()
    }
}

/// The tiny config of each family, with every switch that family has on.
/// Where candle-transformers compares (`for_candle`), windows are wider than
/// the test text (its masks let a query see one key more than Hugging
/// Face's) and Gemma's query_pre_attn_scalar is head_dim (it scales by
/// 1/√head_dim whatever the config says).
fn family(name: &str, vocab: usize, for_candle: bool) -> ModelConfig {
    let window = if for_candle { 64 } else { 6 };
    let b = |a| base(a, vocab);
    match name {
        "llama3" => ModelConfig {
            // Frequencies on both sides of the band and in it.
            rope_scaling: Some(RopeScaling::Llama3 {
                factor: 4.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 64,
            }),
            ..b(Arch::Llama)
        },
        "qwen2" => ModelConfig {
            qkv_bias: true,
            tie_embeddings: true,
            rope_theta: 1e6,
            ..b(Arch::Qwen2)
        },
        "qwen3" => ModelConfig {
            qk_norm: true,
            head_dim: 32,
            ..b(Arch::Qwen3)
        },
        "gemma3" => ModelConfig {
            head_dim: 32,
            num_kv_heads: 1,
            tie_embeddings: true,
            rope_theta: 1e6,
            sliding_window: Some(window),
            sliding_window_pattern: Some(2),
            rope_local_theta: Some(10_000.0),
            qk_norm: true,
            post_norms: true,
            embed_scale: true,
            activation: Activation::GeluTanh,
            query_pre_attn_scalar: Some(if for_candle { 32.0 } else { 24.0 }),
            final_logit_softcapping: Some(30.0),
            attn_logit_softcapping: Some(50.0),
            ..b(Arch::Gemma3)
        },
        "mistral" => ModelConfig {
            sliding_window: Some(window),
            ..b(Arch::Mistral)
        },
        other => panic!("no family {other}"),
    }
}

const FAMILIES: [&str; 5] = ["llama3", "qwen2", "qwen3", "gemma3", "mistral"];

/// Seeded weights as a Hugging Face checkpoint stores them, norms away
/// from their neutral value so a misplaced or mis-offset norm shows.
fn file_tensors(cfg: &ModelConfig, seed: u64) -> HashMap<String, Tensor> {
    let model = random_model(cfg, seed, &Device::Cpu).unwrap();
    let mut rng = meft::rng::seeded(seed + 1);
    model
        .named_tensors()
        .into_iter()
        .map(|(name, t)| {
            let t = if name.contains("norm") {
                let n = t.elem_count();
                let noise =
                    Tensor::from_vec(meft::rng::normal_vec(&mut rng, n, 0.2), n, &Device::Cpu)
                        .unwrap();
                (t + noise).unwrap()
            } else {
                t
            };
            (name, t)
        })
        .collect()
}

fn write_dir(dir: &Path, cfg: &ModelConfig, tensors: &HashMap<String, Tensor>, tok: &Tokenizer) {
    let config = hf_config_json(cfg, Some(1), Some(2));
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    candle_core::safetensors::save(tensors, dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tok.to_json().unwrap()).unwrap();
}

fn max_rel(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
        / scale
}

/// Last-position logits of candle-transformers' implementation of the family.
fn candle_logits(
    name: &str,
    dir: &Path,
    tensors: &HashMap<String, Tensor>,
    ids: &[u32],
) -> Vec<f32> {
    use candle_transformers::models as ct;
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let dev = Device::Cpu;
    let vb = candle_nn::VarBuilder::from_tensors(tensors.clone(), DType::F32, &dev);
    let x = Tensor::new(ids, &dev).unwrap().unsqueeze(0).unwrap();
    let out = match name {
        "llama3" => {
            let lc: ct::llama::LlamaConfig = serde_json::from_str(&text).unwrap();
            let rc = lc.into_config(false);
            let m = ct::llama::Llama::load(vb, &rc).unwrap();
            let mut cache = ct::llama::Cache::new(false, DType::F32, &rc, &dev).unwrap();
            m.forward(&x, 0, &mut cache).unwrap()
        }
        "qwen2" => {
            let c: ct::qwen2::Config = serde_json::from_str(&text).unwrap();
            ct::qwen2::ModelForCausalLM::new(&c, vb)
                .unwrap()
                .forward(&x, 0)
                .unwrap()
        }
        "qwen3" => {
            let c: ct::qwen3::Config = serde_json::from_str(&text).unwrap();
            ct::qwen3::ModelForCausalLM::new(&c, vb)
                .unwrap()
                .forward(&x, 0)
                .unwrap()
        }
        "gemma3" => {
            let c: ct::gemma3::Config = serde_json::from_str(&text).unwrap();
            ct::gemma3::Model::new(false, &c, vb)
                .unwrap()
                .forward(&x, 0)
                .unwrap()
        }
        "mistral" => {
            let c: ct::mistral::Config = serde_json::from_str(&text).unwrap();
            ct::mistral::Model::new(&c, vb)
                .unwrap()
                .forward(&x, 0)
                .unwrap()
        }
        other => panic!("no family {other}"),
    };
    flat(&out)
}

#[test]
fn every_family_matches_candle_transformers() {
    let tok = Tokenizer::tiny(&[]).unwrap();
    let ids = tok.encode(TEXT).unwrap();
    for (i, name) in FAMILIES.iter().enumerate() {
        let cfg = family(name, tok.vocab_size(), true);
        let tensors = file_tensors(&cfg, 40 + i as u64);
        let dir = tempfile::tempdir().unwrap();
        write_dir(dir.path(), &cfg, &tensors, &tok);
        let ours = load_model(&ModelRef::Hf(dir.path().to_path_buf()), &Device::Cpu).unwrap();
        assert_eq!(ours.model.config, cfg, "{name}: config.json round trip");
        let got = flat(&row_forward(&ours.model, &ids, true));
        let want = candle_logits(name, dir.path(), &tensors, &ids);
        let rel = max_rel(&got, &want);
        eprintln!("{name}: max |meft − candle-transformers| / max |logit| = {rel:e}");
        assert!(rel <= 1e-4, "{name}: logits differ by {rel:e}");
    }
}

/// RMSNorm from stock ops.
fn norm(x: &Tensor, w: &Tensor, eps: f64) -> Tensor {
    let ms = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    let r = (ms + eps).unwrap().sqrt().unwrap().recip().unwrap();
    x.broadcast_mul(&r).unwrap().broadcast_mul(w).unwrap()
}

fn softcap(x: Tensor, cap: Option<f64>) -> Tensor {
    match cap {
        Some(c) => ((x / c).unwrap().tanh().unwrap() * c).unwrap(),
        None => x,
    }
}

/// The decoder written again from stock candle ops only (every op with
/// candle's own autograd), from a Hugging Face tensor map: the reference
/// for meft's fused ops and their hand-written backward passes. Logits for
/// every position.
fn stock_forward(
    cfg: &ModelConfig,
    t: &HashMap<String, Tensor>,
    embed: &Tensor,
    ids: &[u32],
) -> Tensor {
    let dev = Device::Cpu;
    let s = ids.len();
    let (nh, nkv, hd, d) = (
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
        cfg.hidden_size,
    );
    let off = if cfg.arch == Arch::Gemma3 { 1.0 } else { 0.0 };
    let w = |n: &str| t.get(n).unwrap_or_else(|| panic!("no {n}")).clone();
    let nw = |n: &str| (w(n) + off).unwrap();
    let lin = |x: &Tensor, n: &str, bias: bool| {
        let y = x
            .broadcast_matmul(&w(&format!("{n}.weight")).t().unwrap())
            .unwrap();
        match bias {
            true => y.broadcast_add(&w(&format!("{n}.bias"))).unwrap(),
            false => y,
        }
    };
    let idx = Tensor::new(ids, &dev).unwrap();
    let mut h = embed.index_select(&idx, 0).unwrap().unsqueeze(0).unwrap();
    if cfg.embed_scale {
        h = (h * (d as f64).sqrt()).unwrap();
    }
    let gemma = cfg.arch == Arch::Gemma3;
    for li in 0..cfg.num_layers {
        let p = format!("model.layers.{li}");
        let x = norm(
            &h,
            &nw(&format!("{p}.input_layernorm.weight")),
            cfg.rms_norm_eps,
        );
        let heads = |y: Tensor, n: usize, nn: &str| {
            let y = y.reshape((1, s, n, hd)).unwrap();
            let y = match cfg.qk_norm && !nn.is_empty() {
                true => norm(
                    &y,
                    &nw(&format!("{p}.self_attn.{nn}.weight")),
                    cfg.rms_norm_eps,
                ),
                false => y,
            };
            y.transpose(1, 2).unwrap().contiguous().unwrap()
        };
        let q = heads(
            lin(&x, &format!("{p}.self_attn.q_proj"), cfg.qkv_bias),
            nh,
            "q_norm",
        );
        let k = heads(
            lin(&x, &format!("{p}.self_attn.k_proj"), cfg.qkv_bias),
            nkv,
            "k_norm",
        );
        let v = heads(
            lin(&x, &format!("{p}.self_attn.v_proj"), cfg.qkv_bias),
            nkv,
            "",
        );
        // RoPE over halves, cos/sin tables from the family's frequencies.
        let freqs = cfg.inv_freq(li, s);
        let mut cos = Vec::new();
        let mut sin = Vec::new();
        for pos in 0..s {
            for f in &freqs {
                cos.push((pos as f64 * f).cos() as f32);
                sin.push((pos as f64 * f).sin() as f32);
            }
        }
        let cos = Tensor::from_vec(cos, (1, 1, s, hd / 2), &dev).unwrap();
        let sin = Tensor::from_vec(sin, (1, 1, s, hd / 2), &dev).unwrap();
        let rope = |x: &Tensor| {
            let x0 = x.narrow(D::Minus1, 0, hd / 2).unwrap();
            let x1 = x.narrow(D::Minus1, hd / 2, hd / 2).unwrap();
            let y0 = (x0.broadcast_mul(&cos).unwrap() - x1.broadcast_mul(&sin).unwrap()).unwrap();
            let y1 = (x0.broadcast_mul(&sin).unwrap() + x1.broadcast_mul(&cos).unwrap()).unwrap();
            Tensor::cat(&[y0, y1], D::Minus1).unwrap()
        };
        let (q, k) = (rope(&q), rope(&k));
        let rep = |x: Tensor| {
            let g = nh / nkv;
            let x = x.unsqueeze(2).unwrap();
            Tensor::cat(&vec![&x; g], 2)
                .unwrap()
                .reshape((1, nkv * g, s, hd))
                .unwrap()
        };
        let (k, v) = (rep(k), rep(v));
        let scores = (q.matmul(&k.t().unwrap()).unwrap() * cfg.attn_scale()).unwrap();
        let scores = softcap(scores, cfg.attn_logit_softcapping);
        let window = cfg.layer_window(li);
        let mask: Vec<f32> = (0..s)
            .flat_map(|i| {
                (0..s).map(move |j| match j <= i && window.is_none_or(|w| i - j < w) {
                    true => 0.0,
                    false => f32::NEG_INFINITY,
                })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (1, 1, s, s), &dev).unwrap();
        let scores = scores.broadcast_add(&mask).unwrap();
        let max = scores.max_keepdim(D::Minus1).unwrap().detach();
        let e = scores.broadcast_sub(&max).unwrap().exp().unwrap();
        let probs = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
        let ctx = probs
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((1, s, nh * hd))
            .unwrap();
        let mut attn = lin(&ctx, &format!("{p}.self_attn.o_proj"), cfg.o_bias);
        if gemma {
            attn = norm(
                &attn,
                &nw(&format!("{p}.post_attention_layernorm.weight")),
                cfg.rms_norm_eps,
            );
        }
        h = (h + attn).unwrap();
        let pre = match gemma {
            true => "pre_feedforward_layernorm",
            false => "post_attention_layernorm",
        };
        let u = norm(&h, &nw(&format!("{p}.{pre}.weight")), cfg.rms_norm_eps);
        let g = lin(&u, &format!("{p}.mlp.gate_proj"), false);
        let act = match cfg.activation {
            Activation::Silu => (&g * candle_nn::ops::sigmoid(&g).unwrap()).unwrap(),
            Activation::GeluTanh => {
                let inner = ((&g + ((g.sqr().unwrap() * &g).unwrap() * 0.044_715).unwrap())
                    .unwrap()
                    * (2.0 / std::f64::consts::PI).sqrt())
                .unwrap();
                ((&g * 0.5).unwrap() * (inner.tanh().unwrap() + 1.0).unwrap()).unwrap()
            }
        };
        let up = lin(&u, &format!("{p}.mlp.up_proj"), false);
        let mut ffn = lin(&(act * up).unwrap(), &format!("{p}.mlp.down_proj"), false);
        if gemma {
            ffn = norm(
                &ffn,
                &nw(&format!("{p}.post_feedforward_layernorm.weight")),
                cfg.rms_norm_eps,
            );
        }
        h = (h + ffn).unwrap();
    }
    let h = norm(&h, &nw("model.norm.weight"), cfg.rms_norm_eps);
    let head = match cfg.tie_embeddings {
        true => embed.clone(),
        false => w("lm_head.weight"),
    };
    softcap(
        h.broadcast_matmul(&head.t().unwrap()).unwrap(),
        cfg.final_logit_softcapping,
    )
}

#[test]
fn every_familys_backward_matches_autograd_through_stock_ops() {
    let tok = Tokenizer::tiny(&[]).unwrap();
    let ids = tok.encode(TEXT).unwrap();
    // A window shorter than the text, so local layers really are local.
    for (i, name) in FAMILIES.iter().enumerate() {
        let cfg = family(name, tok.vocab_size(), false);
        let tensors = file_tensors(&cfg, 60 + i as u64);
        let dir = tempfile::tempdir().unwrap();
        write_dir(dir.path(), &cfg, &tensors, &tok);
        let mut ours = load_model(&ModelRef::Hf(dir.path().to_path_buf()), &Device::Cpu)
            .unwrap()
            .model;
        let probe = Tensor::from_vec(
            meft::rng::normal_vec(&mut meft::rng::seeded(5), ids.len() * cfg.vocab_size, 1.0),
            (1, ids.len(), cfg.vocab_size),
            &Device::Cpu,
        )
        .unwrap();
        // The embedding as a variable: its gradient is the first layer's
        // input gradient, gathered by token (plus the tied head's part).
        let ev = Var::from_tensor(&ours.embed).unwrap();
        ours.embed = ev.as_tensor().clone();
        let logits = row_forward(&ours, &ids, false);
        let g_meft = (&logits * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let rv = Var::from_tensor(&tensors["model.embed_tokens.weight"]).unwrap();
        let want_logits = stock_forward(&cfg, &tensors, rv.as_tensor(), &ids);
        let rel = max_rel(&flat(&logits), &flat(&want_logits));
        assert!(
            rel <= 1e-4,
            "{name}: logits differ from the stock decoder by {rel:e}"
        );
        let g_ref = (&want_logits * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (a, b) = (
            flat(g_meft.get(ev.as_tensor()).unwrap()),
            flat(g_ref.get(rv.as_tensor()).unwrap()),
        );
        let rel = max_rel(&a, &b);
        eprintln!("{name}: input gradient, max |meft − autograd| / max |g| = {rel:e}");
        assert!(a.iter().any(|v| *v != 0.0), "{name}: no gradient");
        assert!(rel <= 1e-4, "{name}: input gradients differ by {rel:e}");
    }
}

/// Bad model files get one line naming the file and the field.
#[test]
fn bad_model_files_name_the_file_and_the_field() {
    let tok = Tokenizer::tiny(&[]).unwrap();
    let cfg = family("qwen2", tok.vocab_size(), true);
    let tensors = file_tensors(&cfg, 3);
    let case = |edit: &dyn Fn(&mut serde_json::Value, &mut HashMap<String, Tensor>)| -> String {
        let dir = tempfile::tempdir().unwrap();
        let mut config = hf_config_json(&cfg, Some(1), Some(2));
        let mut t = tensors.clone();
        edit(&mut config, &mut t);
        write_dir(dir.path(), &cfg, &t, &tok);
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        let err = match load_model(&ModelRef::Hf(dir.path().to_path_buf()), &Device::Cpu) {
            Ok(_) => panic!("loaded"),
            Err(e) => e.to_string(),
        };
        assert!(!err.contains('\n'), "one line: {err}");
        err
    };
    let e = case(&|c, _| c["model_type"] = "gpt_neox".into());
    assert!(
        e.contains("config.json") && e.contains("model_type \"gpt_neox\""),
        "{e}"
    );
    let e =
        case(&|c, _| c["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0}));
    assert!(
        e.contains("config.json") && e.contains("rope_scaling type \"yarn\""),
        "{e}"
    );
    let e = case(&|_, t| {
        t.remove("model.layers.1.self_attn.k_proj.bias");
    });
    assert!(
        e.contains("model.safetensors")
            && e.contains("missing tensor model.layers.1.self_attn.k_proj.bias"),
        "{e}"
    );
}

/// A GGUF file of `model` (llama.cpp's names and metadata keys) with its
/// matrices quantized to `dtype`, norms in f32, and `tok`.
fn write_gguf(
    path: &Path,
    model: &Model,
    arch: &str,
    dtype: candle_core::quantized::GgmlDType,
    tok: &Tokenizer,
) {
    assert_eq!(meft::model::gguf_write::gguf_arch(model.config.arch), arch);
    meft::model::gguf_write::write_gguf(model, tok, path, dtype).unwrap();
}

/// GGUF files of three families with their matrices in each of the
/// k-quants and Q8_0 load dequantized: the loaded model computes what the
/// model built from the dequantized weights computes (Llama 3's RoPE scaling
/// read back from the file's `rope_freqs`, LLaMA's q and k from llama.cpp's
/// interleaved rows), and those weights are the originals up to the format's
/// rounding.
#[test]
fn gguf_k_quants_and_q8_0_dequantize_at_load() {
    use candle_core::quantized::{GgmlDType, QTensor};
    let tok = Tokenizer::tiny(&[]).unwrap();
    let ids = tok.encode(TEXT).unwrap();
    for (name, arch) in [
        ("llama3", "llama"),
        ("qwen2", "qwen2"),
        ("gemma3", "gemma3"),
    ] {
        // Rows of 256 values: whole k-quant blocks.
        let mut cfg = family(name, tok.vocab_size(), true);
        cfg.hidden_size = 256;
        cfg.intermediate_size = 512;
        cfg.head_dim = 64;
        cfg.query_pre_attn_scalar = cfg.query_pre_attn_scalar.map(|_| 64.0);
        cfg.final_logit_softcapping = None;
        cfg.attn_logit_softcapping = None;
        if arch == "gemma3" {
            cfg.sliding_window_pattern = Some(6);
        }
        let original = random_model(&cfg, 11, &Device::Cpu).unwrap();
        for (dtype, limit) in [
            (GgmlDType::Q4K, 0.1),
            (GgmlDType::Q5K, 0.05),
            (GgmlDType::Q6K, 0.03),
            (GgmlDType::Q8_0, 0.01),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("m.gguf");
            write_gguf(&path, &original, arch, dtype, &tok);
            let loaded = load_model(&ModelRef::Gguf(path), &Device::Cpu)
                .unwrap()
                .model;
            assert_eq!(loaded.config.arch, cfg.arch, "{name}");
            // The reference: the original with every matrix rounded through
            // the format and back.
            let mut rounded = original.clone();
            let round = |t: &Tensor| {
                QTensor::quantize(t, dtype)
                    .unwrap()
                    .dequantize(&Device::Cpu)
                    .unwrap()
            };
            rounded.embed = round(&rounded.embed);
            if let Some(h) = rounded.lm_head.as_mut() {
                h.weight = round(&h.weight);
            }
            for l in rounded.layers.iter_mut() {
                for (_, t) in l.parts_mut() {
                    if t.rank() == 2 {
                        *t = round(t);
                    }
                }
            }
            let got = flat(&row_forward(&loaded, &ids, false));
            let want = flat(&row_forward(&rounded, &ids, false));
            let rel = max_rel(&got, &want);
            assert!(rel <= 1e-5, "{name} {dtype:?}: logits differ by {rel:e}");
            let w0 = flat(&original.layers[0].gate_proj.weight);
            let w1 = flat(&loaded.layers[0].gate_proj.weight);
            let err = max_rel(&w1, &w0);
            eprintln!("{name} {dtype:?}: max weight rounding {err:.4} of max |w|");
            assert!(err <= limit, "{name} {dtype:?}: weights off by {err}");
        }
    }
}

/// A GGUF-born LLaMA holds each head's q and k rows interleaved for RoPE;
/// written as a Hugging Face directory they go back to Hugging Face's
/// halves, so the directory computes what the GGUF file does, and written
/// as GGUF again they round-trip.
#[test]
fn a_gguf_llama_writes_back_as_hugging_face_and_gguf() {
    use candle_core::quantized::GgmlDType;
    let tok = Tokenizer::tiny(&[]).unwrap();
    let ids = tok.encode(TEXT).unwrap();
    // Llama 3's scaling would come back as GGUF's per-frequency divisors,
    // which a Hugging Face config cannot state (refused below).
    let mut cfg = family("llama3", tok.vocab_size(), true);
    let scaled = cfg.clone();
    cfg.rope_scaling = None;
    let original = random_model(&cfg, 5, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_gguf(&path, &original, "llama", GgmlDType::F32, &tok);
    let from_gguf = load_model(&ModelRef::Gguf(path), &Device::Cpu).unwrap();
    assert_eq!(from_gguf.model.config.rope_layout, RopeLayout::Interleaved);
    let want = flat(&row_forward(&original, &ids, false));
    let got = flat(&row_forward(&from_gguf.model, &ids, false));
    assert!(max_rel(&got, &want) <= 1e-5);
    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    meft::train::export::write_hf(&from_gguf.model, &from_gguf.tokenizer, &hf).unwrap();
    let from_hf = load_model(&ModelRef::Hf(hf), &Device::Cpu).unwrap().model;
    assert_eq!(from_hf.config.rope_layout, RopeLayout::HalfSplit);
    let got = flat(&row_forward(&from_hf, &ids, false));
    assert!(max_rel(&got, &want) <= 1e-5, "{}", max_rel(&got, &want));
    // The Hugging Face q rows are the original's, bit for bit.
    assert_eq!(
        flat(&from_hf.layers[1].q_proj.weight),
        flat(&original.layers[1].q_proj.weight)
    );
    let again = dir.path().join("again.gguf");
    meft::model::gguf_write::write_gguf(
        &from_gguf.model,
        &from_gguf.tokenizer,
        &again,
        GgmlDType::F32,
    )
    .unwrap();
    let back = load_model(&ModelRef::Gguf(again), &Device::Cpu)
        .unwrap()
        .model;
    assert!(max_rel(&flat(&row_forward(&back, &ids, false)), &want) <= 1e-5);
    let llama3 = random_model(&scaled, 5, &Device::Cpu).unwrap();
    let path = dir.path().join("l3.gguf");
    write_gguf(&path, &llama3, "llama", GgmlDType::F32, &tok);
    let l3 = load_model(&ModelRef::Gguf(path), &Device::Cpu).unwrap();
    let out = dir.path().join("l3");
    std::fs::create_dir(&out).unwrap();
    let e = meft::train::export::write_hf(&l3.model, &l3.tokenizer, &out).unwrap_err();
    assert!(e.to_string().contains("cannot state"), "{e}");
}
