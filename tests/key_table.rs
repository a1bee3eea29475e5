//! The key table (`keys.tbl`): made after a reopen from the index files left unread, loaded at the
//! next open while those files are in place, and never trusted past them. Every stream first used
//! through it appends and reads exactly as through the index files.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use eventjournal::{Durability, Error, ExpectedVersion, Options, Store};

fn opts() -> Options {
    // Small segments: the streams are spread over many sealed segments and index files.
    Options::default()
        .segment_size(16 << 10)
        .durability(Durability::None)
}

/// Writes `n` streams, some with events in several segments; returns each one's event count.
fn fill(store: &Store, n: usize) -> BTreeMap<String, u64> {
    let mut want = BTreeMap::new();
    for round in 0..3 {
        for i in 0..n {
            if round > 0 && i % 4 != 0 {
                continue;
            }
            let name = format!("{}-{i}", ["account", "order"][i % 2]);
            let k: &mut u64 = want.entry(name.clone()).or_default();
            store
                .append(&name, ExpectedVersion::Any, events(&name, *k as usize, 2))
                .unwrap();
            *k += 2;
        }
    }
    want
}

/// Opens `dir` and waits until a key table is in use; panics after 20 s.
fn open_with_table(dir: &Path) -> Store {
    let s = Store::open(dir, opts()).unwrap();
    let start = Instant::now();
    while s.index_info().key_table_files == 0 {
        assert!(start.elapsed() < Duration::from_secs(20), "no key table");
        std::thread::sleep(Duration::from_millis(10));
    }
    s
}

/// Checks every stream's version through a first use (a refused append), then appends to it and
/// reads it back.
fn check(s: &Store, want: &BTreeMap<String, u64>) {
    for (name, &n) in want {
        match s.append(name, ExpectedVersion::Exact(n + 5), events(name, 0, 1)) {
            Err(Error::WrongExpectedVersion { actual, .. }) => {
                assert_eq!(actual, Some(n - 1), "{name}")
            }
            other => panic!("{name}: {other:?}"),
        }
        s.append(
            name,
            ExpectedVersion::Exact(n - 1),
            events(name, n as usize, 1),
        )
        .unwrap();
        let read = s.read_stream_forward(name, 0, usize::MAX).unwrap().count();
        assert_eq!(read as u64, n + 1, "{name}");
    }
    let fresh = "account-never";
    assert!(s
        .append(fresh, ExpectedVersion::NoStream, events(fresh, 0, 1))
        .is_ok());
}

/// Appends `k` events to every `step`-th stream of `want`, with exact expected versions.
fn append_to_every(s: &Store, want: &mut BTreeMap<String, u64>, step: usize, k: usize) {
    for (name, n) in want.iter_mut().step_by(step) {
        let batch = events(name, *n as usize, k);
        s.append(name, ExpectedVersion::Exact(*n - 1), batch)
            .unwrap();
        *n += k as u64;
    }
}

fn filled(n: usize) -> (tempfile::TempDir, BTreeMap<String, u64>) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let want = fill(&s, n);
    s.close().unwrap();
    (dir, want)
}

#[test]
fn streams_first_used_through_the_key_table_append_and_read_as_written() {
    let (dir, want) = filled(2_000);
    // Made after the first reopen, loaded at the second.
    open_with_table(dir.path()).close().unwrap();
    assert!(dir.path().join("keys.tbl").exists());
    let s = open_with_table(dir.path());
    // The file of the segment active at open gets a key filter, which a first use then asks
    // before searching that file: a wrong "no" would show as a wrong version below.
    let start = Instant::now();
    while s.index_info().key_filter_bytes == 0 {
        assert!(start.elapsed() < Duration::from_secs(20), "no key filter");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(s.index_info().loaded_keys, 0);
    check(&s, &want);
    s.close().unwrap();
}

#[test]
fn a_damaged_key_table_is_never_trusted() {
    // Past the header and the covered list (which opening checks whole), so that the table is
    // used and its lookups meet the damage: bytes flipped here and there, or a page of slots
    // and names zeroed, as a lost write leaves it.
    let flipped = |b: &mut [u8], body: usize| {
        for at in (body..b.len()).step_by(61) {
            b[at] ^= 0x5a;
        }
    };
    let zeroed = |b: &mut [u8], body: usize| {
        let page = (body / 4096 + 1) * 4096;
        let end = (page + 4096).min(b.len());
        b[page..end].fill(0);
    };
    for damage in [&flipped as &dyn Fn(&mut [u8], usize), &zeroed] {
        let (dir, want) = filled(1_500);
        open_with_table(dir.path()).close().unwrap();
        let path = dir.path().join("keys.tbl");
        let mut bytes = std::fs::read(&path).unwrap();
        let covered = u32::from_le_bytes(bytes[32..36].try_into().unwrap()) as usize;
        damage(&mut bytes, 64 + 32 * covered);
        std::fs::write(&path, bytes).unwrap();
        let s = open_with_table(dir.path());
        check(&s, &want);
        s.close().unwrap();
        assert!(!path.exists(), "a table found damaged is removed");
    }
}

#[test]
fn a_table_of_files_no_longer_in_place_is_not_used() {
    let (dir, mut want) = filled(1_500);
    open_with_table(dir.path()).close().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    // New events in new segments, and the older segments compacted: their index files change.
    append_to_every(&s, &mut want, 3, 3);
    s.seal().unwrap();
    s.compact().unwrap();
    s.close().unwrap();
    let s = open_with_table(dir.path());
    check(&s, &want);
    s.close().unwrap();
}

#[test]
fn a_table_that_misses_an_older_index_file_is_not_used() {
    let (dir, want) = filled(1_500);
    // The oldest index file gone while the table is made: the table covers only the later ones.
    let mut idx: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "idx"))
        .collect();
    idx.sort();
    let oldest = idx[0].clone();
    let saved = std::fs::read(&oldest).unwrap();
    std::fs::remove_file(&oldest).unwrap();
    open_with_table(dir.path()).close().unwrap();
    // Back in place, older than every file the table covers.
    std::fs::write(&oldest, saved).unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    check(&s, &want);
    s.close().unwrap();
}

#[test]
fn a_table_is_made_again_once_many_files_are_sealed_after_it() {
    let (dir, mut want) = filled(1_500);
    let s = open_with_table(dir.path());
    let first = s.index_info().key_table_files;
    // Enough new events for several new sealed segments, whose index files the table does not
    // cover: the next open searches them (through their key filters) until it makes a new one.
    append_to_every(&s, &mut want, 2, 4);
    s.close().unwrap();
    let s = open_with_table(dir.path());
    let start = Instant::now();
    while s.index_info().key_table_files <= first + 4 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "table not made again: {} files, {first} before",
            s.index_info().key_table_files
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    check(&s, &want);
    s.close().unwrap();
}
