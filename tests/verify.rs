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

/// Beside a writer that appends and seals segments all along, every check passes: a batch in
/// flight is an unfinished tail at most, never damage.
#[test]
fn a_store_being_written_is_never_called_damaged() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path());
    let store = Store::open(
        tmp.path(),
        Options::default()
            .segment_size(4096)
            .durability(Durability::None),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<EventData> = (0..1 + i % 4)
                    .map(|k| EventData::new("W", vec![k as u8; 50 + (i % 200) as usize]))
                    .collect();
                store
                    .append(&format!("w-{}", i % 7), ExpectedVersion::Any, batch)
                    .unwrap();
                i += 1;
            }
            store.close().unwrap();
            i
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(1000);
    let mut checks = 0;
    while std::time::Instant::now() < deadline {
        let r = verify(tmp.path(), &mut |_, _| {});
        assert!(r.is_ok(), "check {checks} beside the writer: {r:?}");
        checks += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let appended = writer.join().unwrap();
    assert!(appended > 0 && checks > 1);
    let r = verify(tmp.path(), &mut |_, _| {}).unwrap();
    assert!(r.unfinished_tail.is_none());
}

/// Zeroes `len` bytes of `path` before `end`.
fn zero_before(path: &Path, end: u64, len: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&vec![0u8; len as usize], end - len).unwrap();
}

#[test]
fn a_sealed_segment_cut_short_is_damage_without_its_index_file() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path());
    let report = verify(tmp.path(), &mut |_, _| {}).unwrap();
    let first = &report.segments[0];
    // Its last record zeroed, and the index file that would say where it ended removed: the
    // segment reads as one that ends early, and only the numbering of the streams shows the
    // events that are gone.
    // Every record here has the same length (one event of 40 bytes, stream names of 4).
    let record = (first.end - 64) / first.events;
    zero_before(&first.path, first.end, record);
    std::fs::remove_file(first.path.with_extension("idx")).unwrap();
    match verify(tmp.path(), &mut |_, _| {}) {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("continues"), "{reason}"),
        other => panic!("not found: {other:?}"),
    }
}

#[test]
fn an_acknowledged_batch_zeroed_at_the_end_of_a_closed_store_is_damage() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path());
    let report = verify(tmp.path(), &mut |_, _| {}).unwrap();
    let newest = report.segments.last().unwrap();
    // The close saved the newest segment's index file up to its end: no writer runs, so a log
    // that now ends before it lost acknowledged events.
    zero_before(&newest.path, newest.end, 64);
    match verify(tmp.path(), &mut |_, _| {}) {
        Err(Error::Corrupt { file, .. }) => assert_eq!(file, newest.path.with_extension("idx")),
        other => panic!("not found: {other:?}"),
    }
}
