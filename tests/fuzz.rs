//! Random bytes and random mutations of valid files, fed to every reader of
//! user files: the config parser, each dataset loader, the event log reader
//! and the checkpoint reader. Each must answer with a value or an error —
//! never a panic. Seeded and bounded, so the suite stays quick and
//! repeatable.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meft::data::Task;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

const MUTANTS: usize = 400;

/// A copy of `valid` with a few random edits: bit flips, a cut, a run of
/// random bytes inserted, a range deleted or duplicated.
fn mutate(rng: &mut ChaCha8Rng, valid: &[u8]) -> Vec<u8> {
    let mut v = valid.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = v.len().max(1);
        match rng.random_range(0..5) {
            0 => {
                let i = rng.random_range(0..len);
                if let Some(b) = v.get_mut(i) {
                    *b ^= 1 << rng.random_range(0..8);
                }
            }
            1 => v.truncate(rng.random_range(0..len)),
            2 => {
                let i = rng.random_range(0..=v.len());
                let mut junk = vec![0u8; rng.random_range(1..16)];
                rng.fill_bytes(&mut junk);
                v.splice(i..i, junk);
            }
            3 => {
                let a = rng.random_range(0..len);
                let b = (a + rng.random_range(0..64)).min(v.len());
                if a < b {
                    v.drain(a..b);
                }
            }
            _ => {
                let a = rng.random_range(0..len).min(v.len());
                let b = (a + rng.random_range(0..64)).min(v.len());
                let piece = v[a..b].to_vec();
                v.splice(a..a, piece);
            }
        }
    }
    v
}

/// Run `read` on `MUTANTS` mutations of `valid` and as many random byte
/// strings, each written to `path`; any panic fails the test.
fn no_panic(name: &str, seed: u64, valid: &[u8], path: &Path, read: impl Fn(&Path)) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // The valid file itself must read.
    std::fs::write(path, valid).unwrap();
    read(path);
    for i in 0..2 * MUTANTS {
        let bytes = if i < MUTANTS {
            mutate(&mut rng, valid)
        } else {
            let mut b = vec![0u8; rng.random_range(0..512)];
            rng.fill_bytes(&mut b);
            b
        };
        std::fs::write(path, &bytes).unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(path)));
        assert!(
            outcome.is_ok(),
            "{name}: case {i} panicked; input kept at {}",
            path.display()
        );
    }
}

#[test]
fn config_parser_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let valid = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/presets/nq.toml")).unwrap();
    no_panic("config", 1, &valid, &dir.path().join("c.toml"), |p| {
        if let Ok(exp) = meft::config::Experiment::load(p) {
            let _ = exp.validate();
        }
    });
}

#[test]
fn dataset_loaders_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let spec = meft::data::synth::WorldSpec {
        entities: 6,
        seed: 4,
        ..Default::default()
    };
    for (n, &task) in Task::ALL.iter().enumerate() {
        let out = dir.path().join(format!("{task}"));
        meft::data::synth::write(task, &spec, &out).unwrap();
        let (train, _) = meft::data::synth::file_names(task);
        let valid = std::fs::read(out.join(train)).unwrap();
        let target = dir.path().join(format!("fuzz-{train}"));
        no_panic(&format!("{task}"), 10 + n as u64, &valid, &target, |p| {
            let _ = meft::data::load(task, p);
        });
    }
}

#[test]
fn event_log_reader_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut exp = meft::config::Experiment::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/presets/example.toml"
    )))
    .unwrap();
    exp.train.steps = 2;
    exp.eval.limit = 1;
    exp.eval.max_new_tokens = 2;
    exp.data.train = "synth:entities=5,seed=2".into();
    let run = dir.path().join("run");
    let mut h = meft::train::start(exp, run.clone(), false).unwrap();
    for _ in h.events.iter() {}
    if let Some(t) = h.thread.take() {
        t.join().unwrap();
    }
    let valid = std::fs::read(run.join("events.jsonl")).unwrap();
    no_panic(
        "events",
        20,
        &valid,
        &dir.path().join("events.jsonl"),
        |p| {
            let _ = meft::train::read_events(p);
        },
    );
}

#[test]
fn checkpoint_reader_never_panics() {
    use meft::checkpoint::{Buffer, CheckpointReader, CheckpointWriter};
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<f32> = (0..96).map(|i| i as f32).collect();
    let rows = [0u32, 3, 5];
    let codes = [7u8; 24];
    let mut w = CheckpointWriter::new();
    w.add("meft.0.keys", &[8, 12], Buffer::F32(&keys));
    w.add("meft.0.moment_rows", &[3], Buffer::U32(&rows));
    w.add("meft.0.moments", &[3, 8], Buffer::U8(&codes));
    w.meta.insert("step".into(), "4".into());
    let path = w.save(dir.path(), 4).unwrap();
    let valid = std::fs::read(&path).unwrap();
    no_panic(
        "checkpoint",
        30,
        &valid,
        &dir.path().join("c.safetensors"),
        |p| {
            let Ok(mut r) = CheckpointReader::open(p) else {
                return;
            };
            let _ = r.meta_u64("step");
            let names: Vec<String> = r.names().map(str::to_string).collect();
            for name in names {
                let rank = r.info(&name).map(|i| i.shape.len()).unwrap_or(0);
                let open = vec![None; rank];
                let _ = r.read_vec::<f32>(&name, &open);
                let _ = r.read_vec::<u32>(&name, &open);
                let _ = r.read_vec::<u8>(&name, &open);
            }
            let mut dst = vec![0f32; 96];
            let _ = r.read_into("meft.0.keys", &[8, 12], &mut dst);
        },
    );
}
