//! Every file of the fuzz corpus (`fuzz/corpus/<target>/`), replayed through the target's
//! body on the stable toolchain: what the fuzzer found once (kept in the corpus with its
//! fix) stays found, without the fuzzer.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use tower_response_cache::__fuzz;

/// The corpus directory: `None` (the replay skipped, with a message) where it is not there,
/// as in the published package, which does not ship it — except under `CI=true`, where
/// that is a failure.
fn corpus() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    if root.is_dir() || std::env::var_os("WRITE_FUZZ_SEEDS").is_some() {
        return Some(root);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} is missing, and CI=true makes that a failure",
        root.display()
    );
    eprintln!(
        "skipped: {} is not there (the repository has it)",
        root.display()
    );
    None
}

/// Runs `target` on every file of its corpus directory; the corpus must not be empty.
fn replay(name: &str, target: fn(&[u8])) {
    let Some(root) = corpus() else {
        return;
    };
    let dir = root.join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no seed", dir.display());
    for file in &files {
        let data = std::fs::read(file).unwrap();
        let outcome = std::panic::catch_unwind(|| target(&data));
        assert!(outcome.is_ok(), "{name}: {} fails", file.display());
    }
}

#[test]
fn the_seeds_are_in_the_corpus() {
    let Some(root) = corpus() else {
        return;
    };
    let write = std::env::var_os("WRITE_FUZZ_SEEDS").is_some();
    for (target, name, data) in __fuzz::seeds() {
        let path = root.join(target).join(&name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &data).unwrap();
        }
        let stored = std::fs::read(&path).unwrap_or_else(|error| {
            panic!("{}: {error} (WRITE_FUZZ_SEEDS=1 writes it)", path.display())
        });
        assert_eq!(
            stored,
            data,
            "{} is outdated (WRITE_FUZZ_SEEDS=1 rewrites it)",
            path.display()
        );
    }
}

#[test]
fn binary_codec_corpus() {
    replay("binary_codec", __fuzz::binary_codec);
}

#[test]
fn json_codec_corpus() {
    replay("json_codec", __fuzz::json_codec);
}

#[test]
fn directives_corpus() {
    replay("directives", __fuzz::directives);
}

#[test]
fn conditional_corpus() {
    replay("conditional", __fuzz::conditional);
}

#[test]
fn key_corpus() {
    replay("key", __fuzz::key);
}

#[test]
fn layer_request_corpus() {
    replay("layer_request", __fuzz::layer_request);
}
