//! Replays every file of `fuzz/corpus/<target>/` through the body of fuzz target `<target>`
//! (`fuzz/logic.rs`, shared with the cargo-fuzz targets), so the seed corpus and any regression
//! inputs added to it run with the ordinary tests, without libFuzzer.

use std::fs;
use std::path::{Path, PathBuf};

#[path = "../fuzz/logic.rs"]
mod logic;

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = corpus_root().join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let (_, body) = logic::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("known target");
    let files = inputs(target);
    assert!(!files.is_empty(), "fuzz/corpus/{target}/ is empty");
    for file in files {
        let data = fs::read(&file).expect("read corpus file");
        eprintln!("{target}: {} ({} bytes)", file.display(), data.len());
        body(&data);
    }
}

#[test]
fn every_corpus_directory_is_a_target() {
    for entry in fs::read_dir(corpus_root()).expect("fuzz/corpus") {
        let entry = entry.expect("directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            logic::TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz/corpus/{name}/ belongs to no fuzz target"
        );
    }
}

#[test]
fn open_segment_corpus() {
    replay("open_segment");
}

#[test]
fn open_index_corpus() {
    replay("open_index");
}

#[test]
fn ops_corpus() {
    replay("ops");
}

#[test]
fn open_compacted_corpus() {
    replay("open_compacted");
}

#[test]
fn open_ids_corpus() {
    replay("open_ids");
}

#[test]
fn open_manifest_corpus() {
    replay("open_manifest");
}

#[test]
fn web_corpus() {
    replay("web");
}

#[test]
fn open_keys_corpus() {
    replay("open_keys");
}
