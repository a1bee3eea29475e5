//! Compaction (issue 14, point 2): sealed segments rewritten without what no reader sees, on real
//! stores in temporary directories. Each test compares what every kind of read returns before
//! and after compacting (and after reopening), and what is left on disk.

use std::collections::BTreeMap;
use std::path::Path;

use eventjournal::{
    AllFrom, Durability, Error, EventData, ExpectedVersion, Options, Position, Store,
    StreamMetadata,
};

fn options() -> Options {
    Options::default()
        .segment_size(16 << 10)
        .durability(Durability::None)
}

fn open(dir: &Path) -> Store {
    Store::open(dir, options()).expect("open")
}

/// `(position, stream, number, type, data)` of every event in `$all`.
type AllRow = (u64, String, u64, String, Vec<u8>);

fn all(store: &Store) -> Vec<AllRow> {
    store
        .read_all_forward(Position::START, usize::MAX)
        .expect("read $all")
        .map(|e| {
            let e = e.expect("event");
            (
                e.position().0,
                e.stream().to_string(),
                e.event_number(),
                e.event_type().to_string(),
                e.data().to_vec(),
            )
        })
        .collect()
}

fn all_backward(store: &Store) -> Vec<u64> {
    store
        .read_all_backward(Position::END, usize::MAX)
        .expect("read $all backward")
        .map(|e| e.expect("event").position().0)
        .collect()
}

fn stream(store: &Store, s: &str) -> Vec<(u64, u64, Vec<u8>)> {
    store
        .read_stream_forward(s, 0, usize::MAX)
        .expect("read stream")
        .map(|e| {
            let e = e.expect("event");
            (e.event_number(), e.position().0, e.data().to_vec())
        })
        .collect()
}

fn category(store: &Store, c: &str) -> Vec<u64> {
    store
        .read_category(c, 0, usize::MAX)
        .expect("read category")
        .map(|e| e.expect("event").position().0)
        .collect()
}

/// Disk blocks the segment files take.
fn segment_blocks(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().unwrap().blocks() * 512)
        .sum()
}

/// Interleaves `keep-*` and `gone-*` streams over several segments.
fn fill(store: &Store, rounds: u64, size: usize) {
    for i in 0..rounds {
        for s in ["keep-1", "gone-1", "keep-2", "gone-2"] {
            let data = format!("{s}:{i}:{}", "x".repeat(size));
            store
                .append(s, ExpectedVersion::Any, [EventData::new("Happened", data)])
                .expect("append");
        }
    }
}

/// Appends to `pad-1` until the segment written last is a new one: everything before is sealed.
fn pad(store: &Store) {
    for _ in 0..3 {
        store
            .append(
                "pad-1",
                ExpectedVersion::Any,
                [EventData::new("Pad", vec![b'p'; 9000])],
            )
            .expect("append");
    }
}

#[test]
fn compacting_deleted_streams_keeps_every_other_event_where_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 200, 300);
    store.delete_stream("gone-1", ExpectedVersion::Any).unwrap();
    store
        .tombstone_stream("gone-2", ExpectedVersion::Any)
        .unwrap();
    // A few more, so that the deleted events all lie in sealed segments.
    pad(&store);
    let before_all = all(&store);
    let before_back = all_backward(&store);
    let before_keep = stream(&store, "keep-1");
    let before_cat = category(&store, "keep");
    let blocks_before = segment_blocks(dir.path());

    let report = store.compact().unwrap();
    assert!(report.segments_rewritten > 5, "{report:?}");
    assert_eq!(report.events_removed, 400, "{report:?}");
    assert!(
        report.disk_bytes_after < report.disk_bytes_before,
        "{report:?}"
    );
    let blocks_after = segment_blocks(dir.path());
    // Every byte removed is given back, but for each file's table and its last block.
    assert!(
        report.disk_bytes_after + report.bytes_removed
            <= report.disk_bytes_before + report.segments_rewritten as u64 * 8192,
        "{report:?}"
    );
    assert!(
        blocks_after < blocks_before,
        "{blocks_before} -> {blocks_after}"
    );

    let check = |store: &Store| {
        assert_eq!(all(store), before_all);
        assert_eq!(all_backward(store), before_back);
        assert_eq!(stream(store, "keep-1"), before_keep);
        assert_eq!(category(store, "keep"), before_cat);
        assert!(stream(store, "gone-1").is_empty());
        assert!(matches!(
            store
                .read_stream_forward("gone-2", 0, 10)
                .map(|mut i| i.next()),
            Err(Error::StreamDeleted { .. }) | Ok(Some(Err(Error::StreamDeleted { .. })))
        ));
        // A soft-deleted stream numbers on from where it was.
        assert_eq!(store.stream_version("gone-1").unwrap(), Some(199));
    };
    check(&store);
    // Compacting again finds nothing left to do, and reads no segment.
    let again = store.compact().unwrap();
    assert_eq!(again.segments_rewritten, 0, "{again:?}");
    store.close().unwrap();

    let store = open(dir.path());
    check(&store);
    let r = store
        .append(
            "gone-1",
            ExpectedVersion::Any,
            [EventData::new("Again", "1")],
        )
        .unwrap();
    assert_eq!(r.version, Some(200));
    store.close().unwrap();

    // Without index files, the index is rebuilt from the compacted log, numbers unchanged.
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "idx" || x == "ids") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let store = open(dir.path());
    assert_eq!(stream(&store, "keep-1"), before_keep);
    assert_eq!(category(&store, "keep"), before_cat);
    assert_eq!(store.stream_version("gone-1").unwrap(), Some(200));
    store.close().unwrap();
    let report = eventjournal::verify::verify(dir.path(), &mut |_, _| {}).expect("verify");
    assert_eq!(report.events as usize, before_all.len() + 400 + 1);
}

#[test]
fn positions_taken_before_compaction_still_read_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 100, 200);
    let rows = all(&store);
    // Every position a checkpoint could hold: each event's, and each event's end.
    let gone: Vec<u64> = rows
        .iter()
        .filter(|r| r.1 == "gone-1")
        .map(|r| r.0)
        .collect();
    store.delete_stream("gone-1", ExpectedVersion::Any).unwrap();
    pad(&store);
    let expect_after = |p: u64| -> Vec<u64> {
        all(&store)
            .into_iter()
            .map(|r| r.0)
            .filter(|&q| q > p)
            .take(3)
            .collect()
    };
    let wanted: BTreeMap<u64, Vec<u64>> = gone.iter().map(|&p| (p, expect_after(p))).collect();
    store.compact().unwrap();
    for (&p, want) in &wanted {
        let got: Vec<u64> = store
            .read_all_forward(Position(p), 4)
            .unwrap()
            .map(|e| e.unwrap().position().0)
            .filter(|&q| q != p)
            .take(3)
            .collect();
        assert_eq!(&got, want, "reading on from removed position {p}");
        // A subscription from there too.
        let mut sub = store
            .subscribe_to_all(AllFrom::After(Position(p)), None)
            .unwrap();
        let first = sub
            .recv_timeout(std::time::Duration::from_secs(5))
            .unwrap()
            .unwrap();
        let first = match first {
            eventjournal::SubscriptionItem::Event(e) => e.position().0,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(Some(first), want.first().copied());
    }
}

#[test]
fn retention_by_count_is_made_permanent_and_raising_it_shows_what_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 100, 300);
    store
        .set_stream_metadata(
            "keep-1",
            ExpectedVersion::Any,
            StreamMetadata {
                max_count: Some(10),
                ..Default::default()
            },
        )
        .unwrap();
    pad(&store);
    let seen = stream(&store, "keep-1");
    assert_eq!(seen.len(), 10);
    let report = store.compact().unwrap();
    assert!(report.events_removed >= 80, "{report:?}");
    assert_eq!(stream(&store, "keep-1"), seen);
    // Raise the limit: what compaction removed stays removed; what is left reads.
    store
        .set_stream_metadata(
            "keep-1",
            ExpectedVersion::Any,
            StreamMetadata {
                max_count: Some(1000),
                ..Default::default()
            },
        )
        .unwrap();
    let after = stream(&store, "keep-1");
    assert!(after.len() >= 10 && after.len() < 101, "{}", after.len());
    assert_eq!(after.last(), seen.last());
    let numbers: Vec<u64> = after.iter().map(|e| e.0).collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    // A second delete on top of an earlier compaction merges into the same gaps.
    store.delete_stream("keep-1", ExpectedVersion::Any).unwrap();
    pad(&store);
    store.compact().unwrap();
    assert!(stream(&store, "keep-1").is_empty());
    store.close().unwrap();
    let store = open(dir.path());
    assert!(stream(&store, "keep-1").is_empty());
    assert_eq!(stream(&store, "keep-2").len(), 100);
}

#[test]
fn no_byte_of_a_deleted_event_remains_in_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let marker = b"PERSONAL-DATA-7f3a9c";
    for i in 0..50 {
        store
            .append(
                "other-1",
                ExpectedVersion::Any,
                [EventData::new("Noise", vec![b'n'; 500])],
            )
            .unwrap();
        let mut data = marker.to_vec();
        data.extend_from_slice(format!(":{i}").as_bytes());
        store
            .append(
                "person-1",
                ExpectedVersion::Any,
                [EventData::new("Registered", data).with_metadata(&marker[..])],
            )
            .unwrap();
    }
    store
        .delete_stream("person-1", ExpectedVersion::Any)
        .unwrap();
    pad(&store);
    store.compact().unwrap();
    store.close().unwrap();
    let found = files_holding(dir.path(), marker);
    assert!(found.is_empty(), "the deleted data is still in {found:?}");
    // And the check can fail: the marker is found in a store that was not compacted.
    let dir2 = tempfile::tempdir().unwrap();
    let store = open(dir2.path());
    store
        .append(
            "person-1",
            ExpectedVersion::Any,
            [EventData::new("Registered", &marker[..])],
        )
        .unwrap();
    store.close().unwrap();
    assert!(!files_holding(dir2.path(), marker).is_empty());
}

fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if !e.file_type().unwrap().is_file() {
            continue;
        }
        let bytes = std::fs::read(e.path()).unwrap();
        if bytes.windows(needle.len()).any(|w| w == needle) {
            found.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

#[test]
fn sealing_early_lets_compaction_erase_the_segment_being_written() {
    let dir = tempfile::tempdir().unwrap();
    // The default segment size: the deleted events lie in the segment being written.
    let store = Store::open(dir.path(), Options::default().durability(Durability::None)).unwrap();
    let marker = b"ERASE-ME-0c1d";
    for i in 0..20 {
        store
            .append("kept-1", ExpectedVersion::Any, [EventData::new("Kept", format!("{i}"))])
            .unwrap();
        store
            .append("person-2", ExpectedVersion::Any, [EventData::new("Told", &marker[..])])
            .unwrap();
    }
    store.delete_stream("person-2", ExpectedVersion::Any).unwrap();
    let before = all(&store);
    // Without a seal, the segment being written is left alone.
    assert_eq!(store.compact().unwrap().events_removed, 0);
    assert!(!files_holding(dir.path(), marker).is_empty());
    assert!(store.seal().unwrap());
    assert!(!store.seal().unwrap(), "nothing to seal in an empty segment");
    let report = store.compact().unwrap();
    assert_eq!(report.events_removed, 20, "{report:?}");
    // The early-sealed segment gave back its preallocated 64 MiB.
    assert!(report.disk_bytes_after < 1 << 20, "{report:?}");
    assert_eq!(all(&store), before);
    let r = store
        .append("kept-1", ExpectedVersion::Exact(19), [EventData::new("Kept", "20")])
        .unwrap();
    assert_eq!(r.version, Some(20));
    store.close().unwrap();
    assert!(files_holding(dir.path(), marker).is_empty());
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(stream(&store, "kept-1").len(), 21);
    assert!(stream(&store, "person-2").is_empty());
}

#[test]
fn background_compaction_runs_once_enough_can_be_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        options().compact_when(64 << 10, std::time::Duration::from_millis(20)),
    )
    .unwrap();
    fill(&store, 200, 300);
    pad(&store);
    let before = all(&store);
    let blocks = segment_blocks(dir.path());
    // Nothing to give back: nothing happens.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(segment_blocks(dir.path()), blocks);
    store.delete_stream("gone-1", ExpectedVersion::Any).unwrap();
    store.delete_stream("gone-2", ExpectedVersion::Any).unwrap();
    pad(&store);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while segment_blocks(dir.path()) >= blocks && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(segment_blocks(dir.path()) < blocks, "no background compaction in 30 s");
    let kept: Vec<_> = before
        .into_iter()
        .filter(|r| !r.1.starts_with("gone"))
        .collect();
    let now: Vec<_> = all(&store)
        .into_iter()
        .filter(|r| !r.1.starts_with("$$") && r.0 <= kept.last().unwrap().0)
        .collect();
    assert_eq!(now, kept);
    store.close().unwrap();
}
