//! `eventjournal::verify` on stores written here: a whole store passes with every event counted
//! and the progress reaching its total; damage is `Error::Corrupt` naming the file and offset;
//! nothing in the directory changes.

use std::path::Path;

use eventjournal::verify::{inventory, verify};
use eventjournal::{Durability, Error, EventData, ExpectedVersion, Options, Store};

fn build(dir: &Path) -> u64 {
    let store = Store::open(
        dir,
        Options::default()
            .segment_size(4096)
            .durability(Durability::None),
    )
    .unwrap();
    let mut n = 0;
    for i in 0..60u64 {
        let stream = format!("s{}-{}", i % 3, i % 5);
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                [EventData::new("E", vec![i as u8; 40])],
            )
            .unwrap();
        n += 1;
    }
    store.close().unwrap();
    n
}

/// Every file's name, length and modification time.
fn snapshot(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                m.len(),
                m.modified().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_whole_store_passes_and_is_left_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let events = build(tmp.path());
    let before = snapshot(tmp.path());
    let mut last = (0, 0);
    let report = verify(tmp.path(), &mut |done, total| last = (done, total)).unwrap();
    assert_eq!(report.events, events);
    assert!(report.segments.len() > 1);
    assert_eq!(
        report.segments.iter().map(|s| s.events).sum::<u64>(),
        events
    );
    assert!(report.index_files > 0);
    assert!(report.unfinished_tail.is_none());
    assert_eq!(last.0, last.1, "progress ends at its total");
    assert_eq!(last.1, inventory(tmp.path()).unwrap().total_bytes());
    assert_eq!(snapshot(tmp.path()), before, "verify changed the directory");
}

#[test]
fn damage_in_a_sealed_segment_names_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path());
    let seg = tmp.path().join("00000000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    // Inside the data of the first record (header 64 + record header 56 + names).
    bytes[64 + 56 + 8] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    match verify(tmp.path(), &mut |_, _| {}) {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!(file, seg);
            assert_eq!(offset, 64);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_directory_without_a_store_is_not_a_store() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        verify(tmp.path(), &mut |_, _| {}),
        Err(Error::NotAStore { .. })
    ));
    assert!(matches!(
        verify(&tmp.path().join("missing"), &mut |_, _| {}),
        Err(Error::NotAStore { .. })
    ));
}
