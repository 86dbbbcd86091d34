//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The SmolLM2 GGUF file (`scripts/get-smollm2.sh`, or `MEFT_SMOLLM2=path`).
/// The tests that need it are ignored by default; run with
/// `--include-ignored` without the file, they fail saying how to get it.
pub fn smollm2() -> PathBuf {
    if let Ok(p) = std::env::var("MEFT_SMOLLM2") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return p;
        }
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/smollm2");
    std::fs::read_dir(dir)
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "gguf"))
        })
        .unwrap_or_else(|| panic!("SmolLM2 GGUF not found: run scripts/get-smollm2.sh"))
}

pub const CHAT_FRANCE: &str =
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";

pub fn meft_bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_meft"))
}
