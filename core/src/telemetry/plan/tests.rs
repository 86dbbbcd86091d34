//! The planner against figures worked out by hand.

use super::*;
use crate::model::shapes::builtin_shape;

const GIB: u64 = 1 << 30;

fn shape(name: &str) -> ModelConfig {
    match builtin_shape(name) {
        Some(m) => m,
        None => panic!("{name} is a builtin shape"),
    }
}

fn must(input: &PlanInput) -> Plan {
    match plan(input) {
        Ok(p) => p,
        Err(e) => panic!("plan failed: {e}"),
    }
}

/// The paper's LLaMA-7B NQ setting: M 8464 = 368 experts × 23 keys, K 64,
/// P 8, micro-batch 1 of 256 tokens, 64 examples per step.
/// The shipped preset of the paper's NQ setting (LLaMA-7B on cuda:0,
/// f16 base, M 8464 in 368 experts, K 64, P 8, batch 64 of micro-batch
/// 1 × 256 tokens, dense host optimizer).
fn paper_nq() -> Experiment {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../presets/paper/nq.toml");
    match Experiment::load(&path) {
        Ok(exp) => exp,
        Err(e) => panic!("{e}"),
    }
}

fn with_gpu<'a>(exp: &'a Experiment, model: &'a ModelConfig, gpu: u64) -> PlanInput<'a> {
    PlanInput {
        base_dtype_bytes: 2,
        gpu_mem: Some(gpu),
        ..PlanInput::new(exp, model)
    }
}

// LLaMA-7B figures used below, by hand: base params 6 738 415 616
// (f16: 13 476 831 232 B). Activations at N 256, sequences of 256, f16:
// per layer and token 6·4096 + 5·4096 + 5·4096 + 4·11008 + 4·32·256
// = 142 336 values, × 256 × 2 B × 32 layers = 2 332 033 024; the final
// norm 256·4096·2, the logits 256·32000·2 and widened 256·32000·4, the
// loss's log-softmax 3·256·32000·4: 2 481 586 176 B in all.
const LLAMA_BASE_F16: u64 = 13_476_831_232;
const LLAMA_ACT_256: u64 = 2_481_586_176;

#[test]
fn paper_meft_7b_fits_24_gib_at_any_union() {
    let model = shape("llama-7b");
    let exp = paper_nq();
    let input = with_gpu(&exp, &model, 24 * GIB);

    // Router 32 × 368 × 4096 f32, plus its gradient and two moments.
    let router = 32 * 368 * 4096 * 4;
    let worst = must(&input);
    println!(
        "{}",
        worst.table("LLaMA-7B · MEFT M 8464 · worst-case unions")
    );
    assert_eq!(worst.device[&Category::Base], LLAMA_BASE_F16);
    assert_eq!(worst.device[&Category::Activations], LLAMA_ACT_256);
    assert_eq!(worst.device[&Category::Trainable], router);
    assert_eq!(worst.device[&Category::Optimizer], 2 * router);
    // Worst case on a GPU (the composed path): every one of the M rows in
    // flight in every layer, in f16 (the base's dtype), and no gradient of
    // them left behind: each layer's leave as its backward makes them.
    let rows = 32 * 8464 * (2 * 4096) * 2;
    assert_eq!(worst.device[&Category::Rows], rows);
    // The adapter keeps per layer and token router logits (368), gate
    // indices and gates (2·64), its output (4096), the slots' map (64),
    // all 4 B, plus the f16 sum into the layer, u widened for it and the
    // output narrowed (4096·(2 + 4 + 2)); nothing of N × |U|.
    let per_token = (368 + 2 * 64 + 4096 + 64) * 4 + 4096 * 8;
    let adapter = 32 * 256 * per_token;
    assert_eq!(worst.device[&Category::AdapterActivations], adapter);
    // The backward pass at its fullest: one layer's gradients (its values,
    // 256 · 142 336 · 2 B, and the adapter's share), or the composed MEFT
    // backward over 8464 rows in f16, which runs first in its layer (two
    // 256 × 8464, the rows' key and value gradients and their
    // concatenation, three 256 × 4096), whichever is larger; less the
    // router's gradients, which take its place by the end.
    let layer = 256 * 142_336 * 2 + 256 * per_token;
    let surge = 2 * 256 * 8464 * 2 + 2 * 8464 * 8192 * 2 + 3 * 256 * 4096 * 2;
    assert!(surge > layer);
    let backward = surge - router;
    assert_eq!(worst.device[&Category::Backward], backward);
    let total = LLAMA_BASE_F16 + 4 * router + rows + adapter + LLAMA_ACT_256 + backward;
    assert_eq!(worst.device_total, total);
    assert_eq!(worst.device_total, 21_688_115_200); // 20.2 GiB
    assert_eq!(worst.fits, Some(true));
    assert_eq!(worst.headroom, Some((24 * GIB - total) as i64));
    assert_eq!(worst.largest_union, Some(8464));
    assert!(worst.notes.iter().any(|n| n
        == "fits at any union: the largest a micro-batch can pick, min(M, N·K) = 8464 rows per layer"));
    // The longest cutoff that fits: one more token does not.
    let c = worst.longest_cutoff.unwrap_or(0);
    assert!(c > 256, "{c}");
    let at = |cutoff: u64| {
        let p = must(&PlanInput {
            tokens_per_micro_batch: cutoff,
            seq_len: cutoff,
            gpu_mem: None,
            ..input
        });
        p.device_total <= 24 * GIB
    };
    assert!(at(c) && !at(c + 1));

    // Rows in f32 (method.meft.row_dtype): twice the rows' bytes, still no
    // gradient of them resident. Every row of every layer in flight then
    // does not fit; the paper's measured union (0.56 · M = 4740) does.
    let mut f32_rows = exp.clone();
    f32_rows.method.meft.row_dtype = Some(crate::config::BaseDtype::F32);
    let p32 = must(&PlanInput {
        exp: &f32_rows,
        ..input
    });
    assert_eq!(p32.device[&Category::Rows], 2 * rows);
    assert_eq!(p32.fits, Some(false));
    let paper_union = vec![4740; 32];
    let p32 = must(&PlanInput {
        exp: &f32_rows,
        union_sizes: Some(&paper_union),
        ..input
    });
    assert_eq!(p32.device[&Category::Rows], 32 * 4740 * 8192 * 4);
    assert_eq!(p32.fits, Some(true));

    // At half of M the rows halve; the store and the accumulators stay on
    // the host; the dense host optimizer keeps moments for every row, in
    // 4 MiB pages of 64 rows (16 values of 4 B per row element): 133
    // pages per layer.
    let half = vec![8464 / 2; 32];
    let measured = must(&PlanInput {
        union_sizes: Some(&half),
        ..input
    });
    println!("{}", measured.table("LLaMA-7B · MEFT M 8464 · |U| = M/2"));
    assert_eq!(measured.device[&Category::Rows], 32 * 4232 * 8192 * 2);
    assert_eq!(measured.fits, Some(true));
    assert_eq!(measured.host[&Category::Store], 32 * 8464 * 8192 * 4);
    assert_eq!(measured.host[&Category::Moments], 32 * 133 * 64 * 4096 * 16);

    // On a 16 GiB card it does not fit, and the margin says how far a
    // union may grow: the largest that fits, and one row more does not.
    let small = with_gpu(&exp, &model, 16 * GIB);
    let p16 = must(&small);
    assert_eq!(p16.fits, Some(false));
    let u = p16.largest_union.unwrap_or(0);
    assert!(u > 0 && u < 8464, "{u}");
    let fits_at = |u: u64| {
        let unions = vec![u; 32];
        must(&PlanInput {
            union_sizes: Some(&unions),
            ..small
        })
        .fits
    };
    assert_eq!(fits_at(u), Some(true));
    assert_eq!(fits_at(u + 1), Some(false));
}

#[test]
fn paper_dense_parallel_adapter_7b_needs_the_48_gib_card() {
    let model = shape("llama-7b");
    let mut exp = paper_nq();
    exp.method.kind = MethodKind::Parallel;
    exp.method.parallel.size = 8464;
    let p = must(&with_gpu(&exp, &model, 24 * GIB));
    println!("{}", p.table("LLaMA-7B · dense Parallel Adapter 8464"));
    // 32 layers × 2 × 8464 × 4096 f32 = 8.9 GB; with gradients and two
    // Adam moments 35.5 GB before the base is even loaded.
    let adapter = 32 * 2 * 8464 * 4096 * 4;
    assert_eq!(adapter, 8_875_147_264);
    assert_eq!(p.device[&Category::Trainable], adapter);
    assert_eq!(p.device[&Category::Grads], adapter);
    assert_eq!(p.device[&Category::Optimizer], 2 * adapter);
    assert!(!p.device.contains_key(&Category::Rows));
    assert!(p.host.is_empty());
    assert_eq!(p.traffic, Traffic::default());
    // It keeps u·Kᵀ and its SiLU (2·8464), its output (4096), f32, and
    // the f16 sum with u widened and the output narrowed (4096·8 B).
    let kept = 32 * 256 * ((2 * 8464 + 4096) * 4 + 4096 * 8);
    assert_eq!(p.device[&Category::AdapterActivations], kept);
    assert_eq!(
        p.device_total,
        LLAMA_BASE_F16 + 4 * adapter + kept + LLAMA_ACT_256
    );
    assert_eq!(p.device_total, 52_416_356_352); // 48.8 GiB
    assert_eq!(p.fits, Some(false));
    let on_48 = must(&with_gpu(&exp, &model, 48 * GIB));
    assert_eq!(on_48.fits, Some(false));
    let on_80 = must(&with_gpu(&exp, &model, 80 * GIB));
    assert_eq!(on_80.fits, Some(true));
}

/// The paper's traffic setting: LLaMA-7B, M 6144, batch 2 × 256 tokens.
fn paper_traffic() -> Experiment {
    let mut exp = paper_nq();
    exp.method.meft.neurons = 6144;
    exp.method.meft.experts = 0;
    exp.train.batch = 2;
    exp.train.micro_batch = 2;
    exp
}

#[test]
fn automatic_experts_take_the_nearest_divisor_of_m() {
    // round(√6144 / 0.25) = 314 does not divide 6144; 256 (58 below) is
    // nearer than 384 (70 above).
    let exp = paper_traffic();
    assert_eq!(exp.method.meft.resolved_experts(), 256);
    assert!(plan(&PlanInput::new(&exp, &shape("llama-7b"))).is_ok());
    // 32,768: the rule gives 724; 512 is the nearest power of two.
    let mut m = exp.method.meft.clone();
    m.neurons = 32_768;
    assert_eq!(m.resolved_experts(), 512);
    // A prime M has no divisor near the rule: refused with a nearby M.
    m.neurons = 4_099;
    assert_eq!(m.resolved_experts(), 256);
    let mut prime = exp.clone();
    prime.method.meft.neurons = 4_099;
    let msg = error_of(&PlanInput::new(&prime, &shape("llama-7b")));
    assert!(
        msg.starts_with("method.meft.neurons: 256 experts do not divide 4099 neurons"),
        "{msg}"
    );
}

#[test]
fn paper_traffic_setting_moves_half_of_a_dense_offload() {
    let model = shape("llama-7b");
    let mut exp = paper_traffic();
    exp.method.meft.experts = 384; // 384 × 16 keys
    let half = vec![6144 / 2; 32];
    let input = PlanInput {
        base_dtype_bytes: 2,
        union_sizes: Some(&half),
        ..PlanInput::new(&exp, &model)
    };
    assert_eq!(input.tokens_per_micro_batch, 512);
    let p = must(&input);
    println!(
        "{}",
        p.table("LLaMA-7B · MEFT M 6144 · batch 2 × 256 · |U| = M/2")
    );
    // Per layer: rows 3072·8192·2 (f16, the base's dtype) both ways, ids
    // 3072·4, map 512·64·4, queries 512·4096·4, routing 512·8·(4+4);
    // dense (f32) 2·2·6144·4096·4.
    let layer = 2 * 50_331_648 + 12_288 + 131_072 + 8_388_608 + 32_768;
    assert_eq!(p.traffic.h2d() + p.traffic.d2h(), 32 * layer);
    assert_eq!(p.dense_offload, 32 * 402_653_184);
    let ratio = p.offload_ratio().unwrap_or(f64::NAN);
    println!("MEFT moves {ratio:.4}× of a dense offload");
    assert!((ratio - 109_228_032.0 / 402_653_184.0).abs() < 1e-12);
    assert!(p.table("t").contains("MEFT moves 0.27× of a dense offload"));
    // Counted in parameters as the paper does (rows once): 3072 / 6144 / 2.
    assert_eq!(super::paper_counted_ratio(&p, 2), Some(0.25));
    // Rows in f32: 0.52×, as before half-precision rows.
    let mut f32_rows = exp.clone();
    f32_rows.method.meft.row_dtype = Some(crate::config::BaseDtype::F32);
    let p32 = must(&PlanInput {
        exp: &f32_rows,
        ..input
    });
    let r32 = p32.offload_ratio().unwrap_or(f64::NAN);
    assert!((r32 - 209_891_328.0 / 402_653_184.0).abs() < 1e-12);

    // Unmeasured, the worst case (|U| = M) moves a little more than half
    // the dense offload's bytes: rows 2·6144·8192·2 both ways, ids 6144·4,
    // the rest as above. The saving is the union and the rows' dtype.
    let worst = must(&PlanInput::new(&exp, &model));
    let worst_ratio = worst.offload_ratio().unwrap_or(f64::NAN);
    let moved = 201_326_592 + 24_576 + 131_072 + 8_388_608 + 32_768;
    assert!((worst_ratio - moved as f64 / 402_653_184.0).abs() < 1e-12);
}

/// d 128, 2 adapter layers, M 64 in 8 experts, K 4, P 2, N 8.
fn small() -> (Experiment, ModelConfig) {
    let mut model = shape("tiny");
    model.num_layers = 2;
    let mut exp = Experiment::default();
    exp.method.meft.neurons = 64;
    exp.method.meft.experts = 8;
    exp.method.meft.top_k = 4;
    exp.method.meft.probe = 2;
    exp.train.batch = 1;
    exp.train.micro_batch = 1;
    exp.train.cutoff_len = 8;
    (exp, model)
}

#[test]
fn small_meft_traffic_by_kind_is_exact() {
    let (exp, model) = small();
    let unions = [10, 12];
    let input = PlanInput {
        tokens_per_micro_batch: 8,
        union_sizes: Some(&unions),
        ..PlanInput::new(&exp, &model)
    };
    let p = must(&input);
    let want = Traffic::of(&[
        (Kind::Rows, (10 + 12) * 2 * 128 * 4),
        (Kind::Ids, (10 + 12) * 4),
        (Kind::Map, 2 * 8 * 4 * 4),
        (Kind::Queries, 2 * 8 * 128 * 4),
        (Kind::Routing, 2 * 8 * 2 * (4 + 4)),
        (Kind::Grads, (10 + 12) * 2 * 128 * 4),
    ]);
    assert_eq!(want[Kind::Rows], 22_528);
    assert_eq!(p.traffic, want);
    assert_eq!(p.dense_offload, 2 * 2 * 2 * 64 * 128 * 4);
    assert_eq!(p.device[&Category::Trainable], 2 * 8 * 128 * 4);
    // On the CPU the fused kernel sends row gradients to the host as it
    // makes them: only the rows themselves sit on the device.
    assert_eq!(p.device[&Category::Rows], (10 + 12) * 2 * 128 * 4);
    assert_eq!(p.host[&Category::Store], 2 * 64 * 2 * 128 * 4);
    assert_eq!(p.host[&Category::Moments], 2 * p.host[&Category::Store]);
    assert_eq!(p.host[&Category::Accumulators], (10 + 12) * 2 * 128 * 4);

    // Two micro-batches per step: every kind crosses twice, and the
    // accumulators may hold twice the rows (still at most M per layer).
    let mut twice = exp.clone();
    twice.train.batch = 2;
    let p2 = must(&PlanInput {
        exp: &twice,
        ..input
    });
    let mut want2 = want.clone();
    want2.add(&want);
    assert_eq!(p2.traffic, want2);
    assert_eq!(p2.host[&Category::Accumulators], (20 + 24) * 2 * 128 * 4);
    assert_eq!(p2.device[&Category::Rows], p.device[&Category::Rows]);

    // Off the CPU the composed path sends each layer's row gradients to
    // the host as its backward makes them too: only the rows stay; with a
    // row cache the cached layers' gradients stay on the device until the
    // backward pass ends, beside the cache's rows (f32) and sums (f32).
    let mut gpu = exp.clone();
    gpu.model.device = "cuda:0".into();
    let pg = must(&PlanInput { exp: &gpu, ..input });
    assert_eq!(pg.device[&Category::Rows], p.device[&Category::Rows]);
    gpu.method.meft.row_cache = 16;
    let pc = must(&PlanInput { exp: &gpu, ..input });
    assert_eq!(
        pc.device[&Category::Rows],
        2 * p.device[&Category::Rows] + 2 * 16 * 2 * 128 * (4 + 4)
    );
    // Rows in bf16: half the rows' bytes each way and on the device.
    gpu.method.meft.row_cache = 0;
    gpu.method.meft.row_dtype = Some(crate::config::BaseDtype::Bf16);
    let ph = must(&PlanInput { exp: &gpu, ..input });
    assert_eq!(ph.device[&Category::Rows], (10 + 12) * 2 * 128 * 2);
    assert_eq!(ph.traffic[Kind::Rows], (10 + 12) * 2 * 128 * 2);
    assert_eq!(ph.traffic[Kind::Grads], (10 + 12) * 2 * 128 * 2);
    // The fused CPU kernel computes in f32 over bf16 rows: they cross at
    // 2 bytes and sit widened at 4.
    let mut cpu_half = exp.clone();
    cpu_half.method.meft.row_dtype = Some(crate::config::BaseDtype::Bf16);
    let pf = must(&PlanInput {
        exp: &cpu_half,
        ..input
    });
    assert_eq!(pf.device[&Category::Rows], p.device[&Category::Rows]);
    assert_eq!(pf.traffic[Kind::Rows], (10 + 12) * 2 * 128 * 2);
}

#[test]
fn unmeasured_unions_are_the_worst_case() {
    let (exp, model) = small();
    // N·K = 8·4 = 32 < M = 64, so the worst union is 32 rows.
    let p = must(&PlanInput {
        tokens_per_micro_batch: 8,
        ..PlanInput::new(&exp, &model)
    });
    assert_eq!(p.traffic[Kind::Ids], 2 * 32 * 4);
    assert!(p
        .notes
        .iter()
        .any(|n| n.contains("worst case min(M, N·K) = 32")));
}

#[test]
fn full_routing_has_no_router_and_sends_no_routing() {
    let (mut exp, model) = small();
    exp.method.meft.routing = Routing::Full;
    let p = must(&PlanInput {
        tokens_per_micro_batch: 8,
        ..PlanInput::new(&exp, &model)
    });
    assert_eq!(p.traffic[Kind::Routing], 0);
    assert_eq!(p.traffic[Kind::Queries], 2 * 8 * 128 * 4);
    assert_eq!(p.device[&Category::Trainable], 0);
}

#[test]
fn lora_full_and_none_count_their_own_parameters() {
    let model = shape("tiny");
    let mut exp = Experiment::default();
    exp.method.kind = MethodKind::Lora;
    // q_proj 8·(128 + 128) + v_proj 8·(128 + 64), in 4 layers, f32.
    let lora = must(&PlanInput::new(&exp, &model));
    assert_eq!(lora.device[&Category::Trainable], 4 * (2048 + 1536) * 4);
    assert_eq!(lora.dense_offload, 2 * 4 * (2048 + 1536) * 4);
    assert_eq!(lora.traffic, Traffic::default());
    assert_eq!(lora.device[&Category::Base], 771_584 * 4);

    exp.method.kind = MethodKind::Full;
    let full = must(&PlanInput::new(&exp, &model));
    assert_eq!(full.device[&Category::Base], 0);
    assert_eq!(full.device[&Category::Trainable], 771_584 * 4);
    assert_eq!(full.device[&Category::Optimizer], 2 * 771_584 * 4);

    exp.method.kind = MethodKind::None;
    let none = must(&PlanInput::new(&exp, &model));
    let keys: Vec<Category> = none.device.keys().copied().collect();
    assert_eq!(keys, [Category::Base, Category::Activations]);
    assert_eq!(none.dense_offload, 0);
    assert_eq!(none.offload_ratio(), None);
    assert_eq!(none.fits, None);
}

fn error_of(input: &PlanInput) -> String {
    match plan(input) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_name_the_field() {
    let (mut exp, model) = small();
    exp.method.meft.top_k = 65;
    let msg = error_of(&PlanInput::new(&exp, &model));
    assert_eq!(
        msg,
        "method.meft.top_k: must be in 1..=64 (method.meft.neurons), got 65"
    );

    let (mut exp, model) = small();
    exp.method.meft.layers = crate::config::Layers::List(vec![0, 5]);
    let msg = error_of(&PlanInput::new(&exp, &model));
    assert!(msg.starts_with("method.meft.layers: layer 5"), "{msg}");

    let (exp, model) = small();
    let one = [3];
    let msg = error_of(&PlanInput {
        union_sizes: Some(&one),
        ..PlanInput::new(&exp, &model)
    });
    assert_eq!(
        msg,
        "union_sizes: expected one size per adapter layer (2), got 1"
    );
    // A union estimate past min(M, N·K) = 32 is clamped, not refused.
    let too_big = [3, 33];
    let exact = [3, 32];
    let clamped = plan(&PlanInput {
        tokens_per_micro_batch: 8,
        union_sizes: Some(&too_big),
        ..PlanInput::new(&exp, &model)
    })
    .unwrap();
    let at_most = plan(&PlanInput {
        tokens_per_micro_batch: 8,
        union_sizes: Some(&exact),
        ..PlanInput::new(&exp, &model)
    })
    .unwrap();
    assert_eq!(clamped.traffic, at_most.traffic);
    let msg = error_of(&PlanInput {
        base_dtype_bytes: 0,
        ..PlanInput::new(&exp, &model)
    });
    assert!(msg.starts_with("base_dtype_bytes: "), "{msg}");
    let msg = error_of(&PlanInput {
        tokens_per_micro_batch: 0,
        ..PlanInput::new(&exp, &model)
    });
    assert_eq!(msg, "tokens_per_micro_batch: must be at least 1");
}

#[test]
fn absurd_sizes_are_an_error_not_a_wrap() {
    let (mut exp, model) = small();
    exp.method.meft.neurons = 1 << 40;
    exp.method.meft.experts = 1 << 20;
    exp.method.meft.top_k = 1 << 30;
    let msg = error_of(&PlanInput {
        tokens_per_micro_batch: 1 << 40,
        ..PlanInput::new(&exp, &model)
    });
    assert!(msg.contains("do not fit in 64 bits"), "{msg}");
}

#[test]
fn table_lists_categories_in_order_with_the_verdict() {
    let (exp, model) = small();
    let unions = [10, 12];
    let p = must(&PlanInput {
        tokens_per_micro_batch: 8,
        union_sizes: Some(&unions),
        gpu_mem: Some(1 << 20),
        ..PlanInput::new(&exp, &model)
    });
    let table = p.table("small");
    let pos = |needle: &str| match table.find(needle) {
        Some(i) => i,
        None => panic!("{needle:?} missing from\n{table}"),
    };
    assert!(pos("  base") < pos("  rows") && pos("  rows") < pos("  activations"));
    assert!(pos("  store") < pos("  moments") && pos("  moments") < pos("  accumulators"));
    assert!(
        table.contains("rows 22 KiB · ids 88 B · map 256 B"),
        "{table}"
    );
    // 54 080 bytes moved against a 262 144-byte dense offload.
    assert!(
        table.contains("MEFT moves 0.21× of a dense offload"),
        "{table}"
    );
    assert!(table.contains("does not fit in 1 MiB ✗"), "{table}");
}

#[test]
fn plan_round_trips_through_json() {
    let (exp, model) = small();
    let p = must(&PlanInput::new(&exp, &model));
    let json = serde_json::to_value(&p).map_err(|e| e.to_string());
    let back = json.and_then(|v| serde_json::from_value::<Plan>(v).map_err(|e| e.to_string()));
    assert_eq!(back, Ok(p));
}

#[test]
fn the_row_cache_estimate_by_hand() {
    let t = |cache, hit| cache_traffic(100, 10, 4, cache, hit);
    // Off: every lookup crosses, 4 micro-batches × 10 rows.
    assert_eq!(t(0, None).misses, 40);
    // Room for every row the step touches: S = 100·(1 − 0.9⁴) = 34.39
    // distinct rows, each crossing once.
    assert_eq!(t(100, None).misses, 34);
    // 20 slots hold 20 of the 34.39 rows (58.2 % of the 40 lookups, 23.26):
    // 20 crossings for them and 16.74 for the rest.
    assert_eq!(t(20, None).misses, 37);
    assert_eq!(t(20, None).cached_touches, 23);
    // A measured hit rate of 75 %: a quarter of the 40 lookups cross.
    assert_eq!(t(20, Some(0.75)).misses, 10);
}

#[test]
fn the_row_cache_takes_the_paper_nq_setting_near_a_dense_offload() {
    let model = shape("llama-7b");
    let mut exp = paper_nq();
    let union = vec![4740u64; 32];
    let at = |exp: &Experiment| {
        let mut input = PlanInput::new(exp, &model);
        input.union_sizes = Some(&union);
        must(&input)
    };
    let off = at(&exp).offload_ratio().unwrap_or(0.0);
    exp.method.meft.row_cache = 8464;
    let on = at(&exp);
    // 64 micro-batches of 4740 rows re-send rows 36×; with every row cached
    // each of the ≈ 8464 rows the step touches crosses once, up and down,
    // as in a dense offload. The queries (64 × 256 tokens × 4096 f32 per
    // layer, 8.6 GB) still go down every micro-batch: half a dense offload.
    // (In f16 rows against the f32 offload's bytes: 18×.)
    assert!(off > 18.0, "{off}");
    // The rows cross in f16 (the base's dtype), the dense offload in f32:
    // half of its bytes.
    let rows_moved = (on.traffic[Kind::Rows] + on.traffic[Kind::Grads]) as f64;
    let r = rows_moved / on.dense_offload as f64;
    assert!((0.495..=0.5).contains(&r), "{r}");
    let q = on.traffic[Kind::Queries] as f64 / on.dense_offload as f64;
    assert!((0.48..0.5).contains(&q), "{q}");
    // The cache's rows (f16) and summed gradients (f32) sit on the device,
    // 8464 × 2d × (2 + 4) per layer, and with the cache the unions' row
    // gradients (4740 × 2d f16) stay until the backward pass ends.
    let cache = 8464 * 2 * 4096 * (2 + 4) * 32 + 4740 * 2 * 4096 * 2 * 32;
    let rows = |p: &Plan| p.device.get(&Category::Rows).copied().unwrap_or(0);
    assert_eq!(rows(&on) - rows(&at(&paper_nq())), cache);
    assert!(on
        .notes
        .iter()
        .any(|n| n.contains("row cache of 8464 rows")));
}
