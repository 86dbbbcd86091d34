//! The embedded tiny base is real: it answers questions about its own
//! pretraining world and knows nothing of the worlds the presets teach.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::Device;
use meft::data::prompt::Template;
use meft::data::Task;
use meft::model::generate::GenerateOptions;
use meft::model::{load_model, ModelRef, NoHooks};
use meft::train::pretrain::{experiment, PretrainOptions};

fn nq_em_of(examples: &[meft::data::Example]) -> f64 {
    let loaded = load_model(&ModelRef::Tiny, &Device::Cpu).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 24,
        ..Default::default()
    };
    let (report, preds) = meft::eval::decode_and_score(
        &loaded.model,
        &loaded.tokenizer,
        &mut NoHooks,
        Task::Nq,
        Template::Plain,
        examples,
        &opts,
    )
    .unwrap();
    for (e, p) in examples.iter().zip(&preds).take(3) {
        eprintln!("{:?} → {p:?} (gold {:?})", e.instruction, e.gold);
    }
    report.get(meft::eval::Metric::NqEm).unwrap()
}

#[test]
fn base_knows_its_own_facts_and_not_the_presets() {
    // The committed base's own world, held-out question template.
    let (_, own_test) = meft::train::pretrain::world_files(&PretrainOptions::default()).unwrap();
    let own = meft::data::load(Task::Nq, &own_test).unwrap();
    let own_em = nq_em_of(&own[..200.min(own.len())]);
    // The world the presets inject (namespace 0), never seen in pretraining.
    let preset = meft::config::Experiment::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/presets/nq.toml"
    )))
    .unwrap();
    let (_, test) = meft::data::spec::load_data(&preset).unwrap();
    let new_em = nq_em_of(&test[..200.min(test.len())]);
    eprintln!("nq_em on its own facts {own_em:.3}, on the nq preset's facts {new_em:.3}");
    assert!(own_em >= 0.8, "own facts: {own_em}");
    assert!(new_em <= 0.05, "preset facts: {new_em}");
}

#[test]
fn pretraining_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let mut weights = Vec::new();
    for i in 0..2 {
        let opts = PretrainOptions {
            entities: 10,
            steps: 3,
            out: dir.path().join(format!("base{i}")),
            ..Default::default()
        };
        let mut exp = experiment(&opts).unwrap();
        exp.eval.limit = 1;
        let run_dir = dir.path().join(format!("run{i}"));
        std::fs::create_dir_all(&run_dir).unwrap();
        let mut h = meft::train::start(exp.clone(), run_dir.clone(), false).unwrap();
        for _ in h.events.iter() {}
        h.thread.take().unwrap().join().unwrap();
        let w = meft::train::pretrain::export_base(&run_dir, &opts.out, &exp).unwrap();
        weights.push(std::fs::read(w).unwrap());
        // The exported directory is a Hugging Face checkpoint as well.
        load_model(&ModelRef::Hf(opts.out.clone()), &Device::Cpu).unwrap();
    }
    assert_eq!(weights[0], weights[1]);
}

#[test]
fn a_pretraining_world_with_tools_asks_for_its_own_tools() {
    let opts = PretrainOptions {
        entities: 10,
        tools: 12,
        ..Default::default()
    };
    let (all, _) = meft::train::pretrain::world_files(&opts).unwrap();
    let rows = meft::data::load(Task::Nq, &all).unwrap();
    let tools: Vec<_> = rows
        .iter()
        .filter(|r| r.target.starts_with("API MAIN INFO: "))
        .collect();
    // Every question of the ten people (four wordings of their facts), then
    // one row per tool request, its answer the request's target blocks.
    assert_eq!(tools.len(), 12);
    assert_eq!(rows.len() - tools.len(), 10 * 6 * 4);
    let preset_endings = ["cast", "mark", "loom", "ly", "hub", "wise", "line", "post"];
    for r in tools {
        for block in r.target.split("\n\n") {
            let name = block["API MAIN INFO: ".len()..].split(',').next().unwrap();
            assert!(
                r.instruction.contains(name),
                "{name} not in {:?}",
                r.instruction
            );
            assert!(
                !preset_endings.iter().any(|e| name.ends_with(e)),
                "{name}: a presets' tool name"
            );
        }
    }
}
