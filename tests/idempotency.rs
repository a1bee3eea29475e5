//! Retries of `Any` and `StreamExists` appends are recognised through the event-id index —
//! the active segment's map, the sealed segments' id tables (written and merged in the
//! background) — and, where a table is missing or damaged, through the stream's own events:
//! exactly, wherever the batch is in the stream, and across reopens.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use eventjournal::*;

const STREAMS: [&str; 3] = ["orders-1", "orders-2", "audit-1"];

fn opts() -> Options {
    // Small segments: many seals, so many id tables and merges of them.
    Options::default()
        .segment_size(4 << 10)
        .durability(Durability::None)
}

/// Every `.ids` file of the store, by name.
fn id_tables(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".ids"))
        .collect();
    v.sort();
    v
}

fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count()
}

/// One batch as written: its stream, events and the original result.
struct Written {
    stream: &'static str,
    events: Vec<EventData>,
    result: AppendResult,
}

fn write_batches(s: &Store, n: usize) -> Vec<Written> {
    (0..n)
        .map(|i| {
            let stream = STREAMS[i % STREAMS.len()];
            let events = events(stream, i, 1 + i % 3);
            let expected = if i < STREAMS.len() {
                ExpectedVersion::Any
            } else if i % 2 == 0 {
                ExpectedVersion::StreamExists
            } else {
                ExpectedVersion::Any
            };
            let result = s.append(stream, expected, events.clone()).unwrap();
            Written {
                stream,
                events,
                result,
            }
        })
        .collect()
}

/// Retries every `step`-th batch with `Any` and `StreamExists`: each answers the original result
/// and writes nothing.
fn retry_all(s: &Store, written: &[Written], step: usize, when: &str) {
    let head = s.head();
    for (i, w) in written.iter().enumerate().step_by(step) {
        for expected in [ExpectedVersion::Any, ExpectedVersion::StreamExists] {
            let r = s
                .append(w.stream, expected, w.events.clone())
                .unwrap_or_else(|e| panic!("{when}: retry of batch {i} failed: {e}"));
            assert_eq!(r, w.result, "{when}: retry of batch {i} with {expected:?}");
        }
    }
    assert_eq!(s.head(), head, "{when}: a retry wrote something");
}

/// Waits (bounded) until the worker has merged tables: fewer `.ids` files than sealed segments.
fn wait_for_merges(dir: &Path) {
    let start = Instant::now();
    loop {
        let tables = id_tables(dir).len();
        if tables > 0 && tables * 2 < segments(dir) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no merged id tables after 20 s: {tables} tables, {} segments",
            segments(dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn retries_are_recognised_across_seals_merges_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let written = write_batches(&s, 1500);
    assert!(
        segments(dir.path()) > 40,
        "{} segments",
        segments(dir.path())
    );
    retry_all(&s, &written, 7, "live");
    wait_for_merges(dir.path());
    retry_all(&s, &written, 5, "after merges");
    s.close().unwrap();
    drop(s);

    let s = Store::open(dir.path(), opts()).unwrap();
    retry_all(&s, &written, 3, "reopened");
    // New appends go on from where the streams are.
    let more = s
        .append(
            "orders-1",
            ExpectedVersion::Any,
            events("orders-1", 9000, 1),
        )
        .unwrap();
    let before = written
        .iter()
        .filter(|w| w.stream == "orders-1")
        .map(|w| w.events.len() as u64)
        .sum::<u64>();
    assert_eq!(more.version, Some(before));
    assert_eq!(stream(&s, "orders-1").len() as u64, before + 1);
    s.close().unwrap();
}

#[test]
fn without_id_tables_retries_are_found_in_the_stream_and_the_tables_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let written = write_batches(&s, 300);
    s.close().unwrap();
    drop(s);
    let tables = id_tables(dir.path());
    assert!(!tables.is_empty());
    for t in &tables {
        std::fs::remove_file(dir.path().join(t)).unwrap();
    }
    // As an older store without id tables opens.
    let s = Store::open(dir.path(), opts()).unwrap();
    retry_all(&s, &written, 1, "no tables");
    wait_for_merges(dir.path());
    retry_all(&s, &written, 2, "tables rebuilt");
    s.close().unwrap();
}

#[test]
fn a_damaged_id_table_is_never_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let written = write_batches(&s, 300);
    s.close().unwrap();
    drop(s);
    // Every byte after the header of every table flipped: checksums fail where lookups read.
    for t in id_tables(dir.path()) {
        let path = dir.path().join(&t);
        let mut bytes = std::fs::read(&path).unwrap();
        for b in &mut bytes[64..] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, bytes).unwrap();
    }
    let s = Store::open(dir.path(), opts()).unwrap();
    retry_all(&s, &written, 1, "damaged tables");
    s.close().unwrap();
    drop(s);
    // Tables that agree with their checksums but not with the log: positions shifted.
    for t in id_tables(dir.path()) {
        let path = dir.path().join(&t);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    }
    let s = Store::open(dir.path(), opts()).unwrap();
    retry_all(&s, &written, 1, "cut tables");
    wait_for_merges(dir.path());
    s.close().unwrap();
    drop(s);
    // One byte of one entry that the open-time sample skips: found by the block checksum when a
    // lookup reads it.
    let mut damaged = Vec::new();
    for t in id_tables(dir.path()) {
        let path = dir.path().join(&t);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[64 + 16 + 11] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        damaged.push((path, bytes));
    }
    let s = Store::open(dir.path(), opts()).unwrap();
    retry_all(&s, &written, 1, "one damaged entry");
    s.close().unwrap();
    // The damaged tables were dropped (and rebuilt from the log, under the same names).
    for (path, bytes) in &damaged {
        assert_ne!(
            std::fs::read(path).ok().as_ref(),
            Some(bytes),
            "{}",
            path.display()
        );
    }
}

#[test]
fn a_partial_overlap_is_refused_and_an_id_in_two_streams_is_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let written = write_batches(&s, 200);
    let w = written.iter().find(|w| w.events.len() >= 2).unwrap();
    // The first id matches, the second does not: not a retry, and nothing written.
    let mut partial = w.events.clone();
    partial[1] = EventData::new("Other", "x");
    let head = s.head();
    let r = s.append(w.stream, ExpectedVersion::Any, partial);
    assert!(
        matches!(r, Err(Error::WrongExpectedVersion { .. })),
        "{r:?}"
    );
    assert_eq!(s.head(), head);

    // The same id in another stream, written later: a retry to the first stream is still the
    // first stream's batch; to the second, the second's.
    let first = &written[0];
    let again = s
        .append(
            "elsewhere-1",
            ExpectedVersion::NoStream,
            first.events.clone(),
        )
        .unwrap();
    s.close().unwrap();
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(
        s.append(first.stream, ExpectedVersion::Any, first.events.clone())
            .unwrap(),
        first.result
    );
    assert_eq!(
        s.append("elsewhere-1", ExpectedVersion::Any, first.events.clone())
            .unwrap(),
        again
    );
    // An id never written is a new batch.
    let fresh = s
        .append(
            first.stream,
            ExpectedVersion::Any,
            events(first.stream, 7777, 1),
        )
        .unwrap();
    assert!(fresh.version > first.result.version);
}

/// A table whose last segment's data end is not the segment's now (its segment was cut and
/// written again since) is stale: dropped at open, and the retries found without it.
#[test]
fn a_stale_id_table_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let written = write_batches(&s, 300);
    s.close().unwrap();
    drop(s);
    let mut stale = Vec::new();
    for t in id_tables(dir.path()) {
        let path = dir.path().join(&t);
        let mut bytes = std::fs::read(&path).unwrap();
        let last_end = u64::from_le_bytes(bytes[48..56].try_into().unwrap());
        bytes[48..56].copy_from_slice(&(last_end - 8).to_le_bytes());
        let crc = crc32(&bytes[..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        stale.push((path, bytes));
    }
    assert!(!stale.is_empty());
    let s = Store::open(dir.path(), opts()).unwrap();
    retry_all(&s, &written, 1, "stale tables");
    s.close().unwrap();
    for (path, bytes) in &stale {
        assert_ne!(
            std::fs::read(path).ok().as_ref(),
            Some(bytes),
            "{}",
            path.display()
        );
    }
}
