//! `train.log` and `meft export-logs`: the TensorBoard event file, read back
//! here by a small TFRecord and protocol-buffer reader (checked once against
//! the `tensorboard` package's EventAccumulator too), holds one loss scalar
//! per step equal to `events.jsonl`'s, the validation losses, and picks
//! histograms whose counts add up to the run's pick counts; `metrics.csv`
//! has a row per step.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::run;
use meft::event::{EvalSplit, Event};
use std::path::Path;

fn varint(b: &[u8], at: &mut usize) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let byte = b[*at];
        *at += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte < 0x80 {
            return v;
        }
        shift += 7;
    }
}

/// The fields of one protocol-buffer message: (field, wire type, bytes or
/// the varint / fixed value's bytes).
fn fields(b: &[u8]) -> Vec<(u64, u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let key = varint(b, &mut at);
        let (field, wire) = (key >> 3, (key & 7) as u8);
        let value = match wire {
            0 => varint(b, &mut at).to_le_bytes().to_vec(),
            1 => {
                at += 8;
                b[at - 8..at].to_vec()
            }
            2 => {
                let n = varint(b, &mut at) as usize;
                at += n;
                b[at - n..at].to_vec()
            }
            5 => {
                at += 4;
                b[at - 4..at].to_vec()
            }
            w => panic!("wire type {w}"),
        };
        out.push((field, wire, value));
    }
    out
}

/// (step, tag, scalar) and (step, tag, bucket counts) of every event.
#[allow(clippy::type_complexity)]
fn read_tb(path: &Path) -> (Vec<(u64, String, f32)>, Vec<(u64, String, Vec<f64>)>) {
    let b = std::fs::read(path).unwrap();
    let (mut scalars, mut histos) = (Vec::new(), Vec::new());
    let mut at = 0;
    let mut first = true;
    while at < b.len() {
        let n = u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize;
        let data = &b[at + 12..at + 12 + n];
        at += 12 + n + 4;
        let ev = fields(data);
        if first {
            assert!(ev.iter().any(|f| f.0 == 3 && f.2 == b"brain.Event:2"));
            first = false;
            continue;
        }
        let step = ev
            .iter()
            .find(|f| f.0 == 2)
            .map(|f| u64::from_le_bytes(f.2[..8].try_into().unwrap()))
            .unwrap_or(0);
        for summary in ev.iter().filter(|f| f.0 == 5) {
            for value in fields(&summary.2).into_iter().filter(|f| f.0 == 1) {
                let v = fields(&value.2);
                let tag =
                    String::from_utf8(v.iter().find(|f| f.0 == 1).unwrap().2.clone()).unwrap();
                if let Some(s) = v.iter().find(|f| f.0 == 2) {
                    scalars.push((
                        step,
                        tag.clone(),
                        f32::from_le_bytes(s.2[..4].try_into().unwrap()),
                    ));
                }
                if let Some(h) = v.iter().find(|f| f.0 == 5) {
                    let counts = fields(&h.2)
                        .into_iter()
                        .find(|f| f.0 == 7)
                        .map(|f| {
                            f.2.chunks(8)
                                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                                .collect()
                        })
                        .unwrap_or_default();
                    histos.push((step, tag, counts));
                }
            }
        }
    }
    (scalars, histos)
}

#[test]
fn tensorboard_and_csv_hold_the_runs_figures() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("runs");
    let preset = concat!(env!("CARGO_MANIFEST_DIR"), "/presets/nq.toml");
    let (code, _, err) = run(&[
        "run",
        preset,
        "--set",
        "train.steps=10",
        "--set",
        "train.log=[\"tensorboard\", \"csv\"]",
        "--set",
        "data.validation=\"split:0.1\"",
        "--set",
        "train.eval_every=5",
        "--set",
        "eval.limit=1",
        "--out",
        &out.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    let dir = common::the_run_in(&out);
    let events = meft::event::read_events(&dir).unwrap();
    let losses: Vec<(u64, f64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Step(s) => Some((s.step, s.loss)),
            _ => None,
        })
        .collect();
    let validation: Vec<(u64, f64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Eval(e) if e.split == EvalSplit::Validation => Some((e.step, e.loss?)),
            _ => None,
        })
        .collect();
    assert_eq!(losses.len(), 10);
    assert_eq!(
        validation.iter().map(|v| v.0).collect::<Vec<_>>(),
        vec![5, 10]
    );

    let check = |tb_file: &Path| {
        let (scalars, histos) = read_tb(tb_file);
        let tb_loss: Vec<(u64, f32)> = scalars
            .iter()
            .filter(|s| s.1 == "train/loss")
            .map(|s| (s.0, s.2))
            .collect();
        assert_eq!(tb_loss.len(), losses.len());
        for ((s, l), (ts, tl)) in losses.iter().zip(&tb_loss) {
            assert_eq!(s, ts);
            assert_eq!(*l as f32, *tl);
        }
        let tb_val: Vec<(u64, f32)> = scalars
            .iter()
            .filter(|s| s.1 == "validation/loss")
            .map(|s| (s.0, s.2))
            .collect();
        assert_eq!(
            tb_val,
            validation
                .iter()
                .map(|v| (v.0, v.1 as f32))
                .collect::<Vec<_>>()
        );
        // Each picks histogram holds the picks of its layer's window.
        let mut n = 0;
        for e in &events {
            if let Event::Histogram(h) = e {
                let tag = format!("picks/layer{}", h.layer);
                let got = histos.iter().find(|x| x.0 == h.step && x.1 == tag).unwrap();
                let per_bin = h.neurons as f64 / h.picks_sorted.len() as f64;
                let want: f64 = h.picks_sorted.iter().map(|&p| p as f64 * per_bin).sum();
                let total: f64 = got.2.iter().sum();
                assert!(
                    (total - want).abs() < 1e-6 * want.max(1.0),
                    "{tag}: {total} vs {want}"
                );
                n += 1;
            }
        }
        assert!(n > 0);
    };
    let tb: Vec<_> = std::fs::read_dir(dir.join("tb"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(tb.len(), 1);
    check(&tb[0]);

    // The CSV: a row per step, the validation loss on the steps it was taken.
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "step,loss,lr,grad_norm,tokens_per_s,h2d_bytes,d2h_bytes,validation_loss"
    );
    assert_eq!(rows.len(), 11);
    let cells: Vec<&str> = rows[5].split(',').collect();
    assert_eq!(cells[0], "5");
    assert_eq!(cells[1].parse::<f64>().unwrap(), losses[4].1);
    assert_eq!(cells[7].parse::<f64>().unwrap(), validation[0].1);
    assert_eq!(rows[4].split(',').nth(7), Some(""));

    // The same from the log of the finished run.
    let again = root.path().join("tb-again");
    let csv2 = root.path().join("again.csv");
    let (code, said, err) = run(&[
        "export-logs",
        &dir.display().to_string(),
        "--tensorboard",
        &again.display().to_string(),
        "--csv",
        &csv2.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(said.lines().count(), 2);
    let tb: Vec<_> = std::fs::read_dir(&again)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    check(&tb[0]);
    assert_eq!(std::fs::read_to_string(&csv2).unwrap(), csv);
    let (code, _, err) = run(&[
        "export-logs",
        &dir.display().to_string(),
        "--csv",
        &csv2.display().to_string(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("exists; name a new file"), "{err}");
}
