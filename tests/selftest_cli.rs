//! `meft selftest` through the binary: on the CPU every check runs and
//! passes, the JSON says the same, and a device it cannot use is one line.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::meft_bin;

#[test]
fn every_check_passes_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("selftest.json");
    let out = meft_bin()
        .args(["selftest", "--device", "cpu", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    // Rows and the adapter's compute in bf16 are held to 1e-2; the rest
    // to 1e-4.
    let limit = |name: &str| if name.contains("bf16") { 1e-2 } else { 1e-4 };
    let names: Vec<&str> = stdout
        .lines()
        .map(|l| {
            let name = l.split(": max rel err").next().unwrap();
            let want = format!(" (limit {:e}) ", limit(name));
            assert!(
                l.contains(": max rel err ") && l.contains(&want) && l.ends_with(" ok"),
                "{l}"
            );
            name
        })
        .collect();
    assert_eq!(
        names,
        [
            "base logits",
            "meft loss",
            "meft key grads",
            "meft value grads",
            "meft router grads",
            "meft composed loss",
            "meft composed key grads",
            "meft composed value grads",
            "meft composed router grads",
            "meft composed bf16 rows loss",
            "meft composed bf16 rows key grads",
            "meft composed bf16 rows value grads",
            "meft composed bf16 rows router grads",
            "lora loss",
            "lora A grads",
            "lora B grads",
            "parallel loss",
            "parallel key grads",
            "parallel value grads",
        ]
    );
    // Two CPU copies of the base compute the same logits bit for bit; MEFT
    // against its dense reference sums in another order.
    assert!(
        stdout.starts_with("base logits: max rel err 0.0e0 "),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["device"], "cpu");
    assert_eq!(report["ok"], true);
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), names.len());
    for c in checks {
        let l = limit(c["name"].as_str().unwrap());
        assert_eq!(c["ok"], true, "{c}");
        assert_eq!(c["limit"], l, "{c}");
        assert!(c["max_rel_err"].as_f64().unwrap() <= l, "{c}");
    }
}

#[test]
fn a_device_it_cannot_use_is_one_line() {
    for (device, why) in [
        ("gpu", "expected cpu or cuda:N"),
        ("cuda:x", "bad CUDA ordinal"),
    ] {
        let out = meft_bin()
            .args(["selftest", "--device", device])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("--device") && stderr.contains(why),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}
