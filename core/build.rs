//! The source tree's hash, recorded by every run (`RunInfo::source`) so a
//! study reuses a run only when the code that trained it is the code that
//! would train it again: FNV-1a over every file of both crates' sources,
//! the embedded assets and the manifests, in path order.

use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let core = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let root = core
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| core.clone());
    let mut list = Vec::new();
    for dir in [core.join("src"), root.join("src"), root.join("assets")] {
        println!("cargo:rerun-if-changed={}", dir.display());
        files(&dir, &mut list);
    }
    for f in [
        core.join("Cargo.toml"),
        root.join("Cargo.toml"),
        root.join("Cargo.lock"),
    ] {
        println!("cargo:rerun-if-changed={}", f.display());
        list.push(f);
    }
    list.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for f in &list {
        // Paths relative to the repository, so the hash is the same in
        // every checkout of the same tree.
        let rel = f.strip_prefix(&root).unwrap_or(f);
        eat(rel.to_string_lossy().as_bytes());
        eat(&[0]);
        eat(&std::fs::read(f).unwrap_or_default());
        eat(&[0]);
    }
    println!("cargo:rustc-env=MEFT_SOURCE_HASH={h:016x}");
}
