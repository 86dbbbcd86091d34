//! Tokenizers: pinned SmolLM2 ids, exact round trips.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use meft::model::Tokenizer;

#[test]
fn tiny_round_trips_every_byte() {
    let tok = Tokenizer::tiny(&[]).unwrap();
    for s in [
        "Who completed the Veltrano lighthouse?",
        "  two leading spaces, tabs\tand\nnew lines",
        "4 * 18 = <<4*18=72>>72\n#### 72",
        "non-ASCII: café, naïve, 日本語, 🤖",
        "API MAIN INFO: Skyloom, Forecast, Weather",
    ] {
        let ids = tok.encode(s).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), s);
    }
    // Three specials, then the 256 bytes.
    assert_eq!(tok.vocab_size(), 259);
    assert_eq!((tok.pad_id, tok.bos_id, tok.eos_id), (0, Some(1), Some(2)));
    assert_eq!(tok.encode("<s>hi</s>").unwrap()[0], 1);
}

#[test]
#[ignore = "needs SmolLM2: scripts/get-smollm2.sh, then --include-ignored"]
fn smollm2_pinned_ids() {
    let path = common::smollm2();
    let loaded = meft::model::load_model(
        &meft::model::ModelRef::Gguf(path),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let tok = &loaded.tokenizer;
    for (text, ids) in PINNED {
        let got = tok.encode(text).unwrap();
        let pieces: Vec<String> = got
            .iter()
            .map(|&i| tok.id_to_token(i).unwrap_or_default())
            .collect();
        eprintln!("{text:?} -> {got:?} {pieces:?}");
        assert_eq!(&got, ids, "ids of {text:?}");
        assert_eq!(tok.decode(&got).unwrap(), *text, "round trip of {text:?}");
    }
    // Control tokens of the chat template are single special ids.
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
    assert!(tok.stop_ids.contains(&2));
}

// Digits split one by one before the byte-level BPE (llama.cpp's "smollm"
// pre-tokenizer); the pieces are printed by the test for a human check.
const PINNED: &[(&str, &[u32])] = &[
    ("Hello world", &[19556, 905]),
    ("  leading spaces", &[216, 2899, 5600]),
    (
        "caf\u{e9} na\u{ef}ve \u{65e5}\u{672c}\u{8a9e}",
        &[
            83, 1939, 2756, 15486, 46494, 17097, 241, 115, 40993, 179, 120, 248,
        ],
    ),
    ("12345 apples", &[33, 34, 35, 36, 37, 13855]),
    (
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n",
        &[1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198],
    ),
];
