//! A synthetic run for tests: the event stream a small MEFT run on the
//! embedded model would produce, with figures a person can check by hand.

use crate::event::{Category, Kind};
use crate::event::{
    EvalEvent, Event, HistogramEvent, LedgerEvent, RunInfo, StepEvent, Summary, TelemetrySample,
    Traffic, EVENT_VERSION,
};
use std::collections::BTreeMap;

pub const MIB: u64 = 1024 * 1024;
pub const LAYERS: u32 = 4;
/// Hidden size of the embedded model the figures assume.
const D: u64 = 256;
const TOKENS: u64 = 512;
const TOP_K: u64 = 32;
const PROBE: u64 = 8;
pub const NEURONS: u64 = 4096;
pub const PLANNED_DEVICE: u64 = 300 * MIB;
/// A dense offload moves every key and value row both ways each step.
pub const DENSE_OFFLOAD: u64 = NEURONS * 2 * D * 4 * 2 * LAYERS as u64;

fn union_size(step: u64, layer: u64) -> u64 {
    // Unions shrink a little as routing settles, deeper layers pick wider.
    700 + layer * 90 - (step.min(30) * 4)
}

pub fn step_event(step: u64, total: u64) -> StepEvent {
    let mut traffic = Traffic::default();
    let mut union_sizes = Vec::new();
    let mut picks = Vec::new();
    for l in 0..LAYERS as u64 {
        let u = union_size(step, l);
        traffic.add(&Traffic::of(&[
            (Kind::Rows, u * 2 * D * 4),
            (Kind::Ids, u * 4),
            (Kind::Map, TOKENS * TOP_K * 4),
            (Kind::Queries, TOKENS * D * 4),
            (Kind::Routing, TOKENS * PROBE * 8),
            (Kind::Grads, u * 2 * D * 4),
        ]));
        union_sizes.push(u);
        picks.push(TOKENS * TOP_K / 8);
    }
    let s = step as f64;
    StepEvent {
        step,
        total_steps: total,
        epoch: s / 10.0,
        loss: 3.2 * (-s / 12.0).exp() + 0.8 + 0.12 * (s * 1.7).sin(),
        lr: 1e-3,
        grad_norm: 1.0 / (1.0 + s / 10.0),
        tokens: TOKENS,
        wall_ms: 250.0,
        traffic,
        union_sizes,
        picks,
        rows_updated: 2800,
        row_cache: None,
    }
}

pub fn run_info(total: u64) -> RunInfo {
    RunInfo {
        run_id: "nq-20250101-120000".into(),
        config_toml: "name = \"nq\"\n".into(),
        name: "nq".into(),
        method: "meft".into(),
        model: "embedded:tiny".into(),
        device: "cpu".into(),
        total_steps: total,
        base_params: 6_000_000,
        trainable_params: 9_000_000,
        adapter: "MEFT M 4096 K 32 E 256 P 8".into(),
        plan: Some(serde_json::json!({
            "device": {"base": 24 * MIB, "rows": 8 * MIB, "router": MIB, "activations": 267 * MIB},
            "device_total": PLANNED_DEVICE,
            "host": {"store": 32 * MIB, "moments": 64 * MIB},
            "dense_offload": DENSE_OFFLOAD,
        })),
        started_unix: 1_735_732_800,
        resumed_from: None,
        machine: Some("testbox · Test CPU @ 3.0GHz (2 cores)".into()),
        meft_version: None,
        source: None,
    }
}

pub fn telemetry(t_ms: u64) -> Event {
    Event::Telemetry(TelemetrySample {
        t_ms,
        rss: 2200 * MIB,
        sys_used: 10 * 1024 * MIB,
        sys_total: 24 * 1024 * MIB,
        cpu_process_pct: 187.0,
        cpu_system_pct: 95.0,
        cores: 2,
        gpus: Vec::new(),
        gpu_unavailable: Some("no NVIDIA driver: libnvidia-ml.so not found".into()),
    })
}

pub fn histogram(step: u64, layer: u32) -> Event {
    let picks_sorted = (0..64)
        .map(|i| 40.0 * (-(i as f32) / (8.0 + layer as f32 * 3.0)).exp())
        .collect();
    let act_bins = (0..24)
        .map(|i| {
            let x = i as f32 - 6.0;
            (900.0 * (-(x * x) / 18.0).exp()) as u32
        })
        .collect();
    Event::Histogram(HistogramEvent {
        step,
        layer,
        window: 10,
        picks_sorted,
        distinct: 1200 + layer as u64 * 150,
        neurons: NEURONS,
        act_bins,
        act_lo: 0.0,
        act_hi: 2.4,
    })
}

pub fn ledger(step: u64) -> Event {
    let mut device = BTreeMap::new();
    device.insert(Category::Base, 24 * MIB);
    device.insert(Category::Rows, 7 * MIB + step * 1024);
    device.insert(Category::Trainable, MIB);
    device.insert(Category::Activations, 250 * MIB);
    let mut host = BTreeMap::new();
    host.insert(Category::Store, 32 * MIB);
    host.insert(Category::Moments, 21 * MIB);
    Event::Ledger(LedgerEvent {
        step,
        device,
        host,
        heap: None,
        device_used: None,
    })
}

pub fn eval(step: u64, em: f64) -> Event {
    let mut metrics = BTreeMap::new();
    metrics.insert("em".to_string(), em);
    metrics.insert("f1".to_string(), em + 0.1);
    let scores =
        |em: f64, f1: f64| BTreeMap::from([("em".to_string(), em), ("f1".to_string(), f1)]);
    Event::Eval(EvalEvent {
        step,
        n: 100,
        split: Default::default(),
        loss: None,
        metrics,
        samples: vec![
            (
                "who wrote <Hamlet> & Macbeth?".into(),
                "Shakespeare".into(),
                "William Shakespeare".into(),
            ),
            (
                "where was the author of the novel about the lighthouse keeper on the northern coast born?".into(),
                "Port Elsby".into(),
                "Port Elsby".into(),
            ),
        ],
        sample_scores: vec![scores(0.0, 0.67), scores(1.0, 1.0)],
        row_scores: Default::default(),
    })
}

/// `steps` steps of a 30-step run; `finish` appends the Finished event.
pub fn run_events(steps: u64, finish: bool) -> Vec<Event> {
    let total = 30;
    let mut v = vec![
        Event::RunStarted {
            version: EVENT_VERSION,
            info: run_info(total),
        },
        telemetry(0),
    ];
    for s in 1..=steps {
        v.push(Event::Step(step_event(s, total)));
        if s % 5 == 0 {
            v.push(telemetry(s * 250));
            v.push(ledger(s));
        }
        if s % 10 == 0 {
            for l in 0..LAYERS {
                v.push(histogram(s, l));
            }
            v.push(eval(s, 0.1 * (s / 10) as f64 + 0.12));
        }
        if s == 20 {
            v.push(Event::Checkpoint {
                step: 20,
                path: "runs/nq/checkpoints/step-20.safetensors".into(),
            });
            v.push(Event::Message {
                text: "gradient norm 2.9 at step 20 is 3.1× its running median".into(),
            });
        }
    }
    if finish {
        let first = step_event(1, total);
        let last = step_event(steps, total);
        let mut metrics = BTreeMap::new();
        metrics.insert("em".to_string(), 0.42);
        v.push(Event::Finished {
            summary: Summary {
                steps,
                final_loss: last.loss,
                first_loss: first.loss,
                tokens_per_s: 2048.0,
                wall_s: steps as f64 * 0.25,
                h2d_per_step: last.traffic.h2d() as f64,
                d2h_per_step: last.traffic.d2h() as f64,
                peak_device_ledger: 282 * MIB,
                peak_device_used: None,
                validation_loss: Vec::new(),
                tokens: 2048 * steps,
                peak_host_ledger: 0,
                median_step_s: 0.25,
                rss_peaks: BTreeMap::new(),
                heap_peak: 0,
                step_heap_growth: 0,
                row_cache: None,
                metrics,
                predicted: BTreeMap::new(),
            },
        });
    }
    v
}

/// A recorded run of `exp` named `name`: its start, a step per `(step,
/// loss)`, an evaluation with `metrics` after the last step, and its end.
pub fn recorded_run(
    name: &str,
    exp: &crate::config::Experiment,
    losses: &[(u64, f64)],
    metrics: &[(&str, f64)],
) -> Vec<Event> {
    let total = losses.last().map_or(0, |l| l.0);
    let info = RunInfo {
        run_id: name.into(),
        config_toml: exp.to_toml().unwrap_or_default(),
        name: exp.name.clone(),
        method: exp.method.kind.to_string(),
        adapter: match exp.method.kind {
            crate::config::MethodKind::Lora => format!("LoRA r {}", exp.method.lora.rank),
            _ => run_info(total).adapter,
        },
        ..run_info(total)
    };
    let mut v = vec![Event::RunStarted {
        version: EVENT_VERSION,
        info,
    }];
    for &(step, loss) in losses {
        v.push(Event::Step(StepEvent {
            loss,
            ..step_event(step, total)
        }));
    }
    let metrics: BTreeMap<String, f64> = metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    v.push(Event::Eval(EvalEvent {
        step: total,
        n: 4,
        split: Default::default(),
        loss: None,
        metrics: metrics.clone(),
        samples: Vec::new(),
        sample_scores: Vec::new(),
        row_scores: Default::default(),
    }));
    if let Some(Event::Finished { summary }) = run_events(1, true).pop() {
        v.push(Event::Finished {
            summary: Summary {
                steps: total,
                final_loss: losses.last().map_or(0.0, |l| l.1),
                metrics,
                ..summary
            },
        });
    }
    v
}

/// Write `events` as a run directory's `events.jsonl`.
pub fn write_log(dir: &std::path::Path, events: &[Event]) {
    let log: String = events
        .iter()
        .filter_map(|e| serde_json::to_string(e).ok())
        .map(|l| l + "\n")
        .collect();
    std::fs::create_dir_all(dir).expect("run dir");
    std::fs::write(dir.join("events.jsonl"), log).expect("events written");
}

/// A finished MEFT run with these losses, in `dir`.
pub fn write_run(dir: &std::path::Path, losses: &[(u64, f64)]) {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let exp = crate::config::Experiment::default();
    write_log(dir, &recorded_run(&name, &exp, losses, &[("em", 0.5)]));
}
