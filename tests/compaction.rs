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
    // Builds that read only version 1 refuse the store before reaching a compacted segment.
    let meta = std::fs::read(dir.path().join("eventjournal.meta")).unwrap();
    assert_eq!(meta[8..12], 2u32.to_le_bytes());
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
        // A file the store's own threads renamed or removed meanwhile (a temporary file of an
        // index or id table being written) is passed over: it holds no event data.
        let bytes = match std::fs::read(e.path()) {
            Ok(b) => b,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => panic!("{}: {err}", e.path().display()),
        };
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
            .append(
                "kept-1",
                ExpectedVersion::Any,
                [EventData::new("Kept", format!("{i}"))],
            )
            .unwrap();
        store
            .append(
                "person-2",
                ExpectedVersion::Any,
                [EventData::new("Told", &marker[..])],
            )
            .unwrap();
    }
    store
        .delete_stream("person-2", ExpectedVersion::Any)
        .unwrap();
    let before = all(&store);
    // Without a seal, the segment being written is left alone.
    assert_eq!(store.compact().unwrap().events_removed, 0);
    assert!(!files_holding(dir.path(), marker).is_empty());
    assert!(store.seal().unwrap());
    assert!(
        !store.seal().unwrap(),
        "nothing to seal in an empty segment"
    );
    let report = store.compact().unwrap();
    assert_eq!(report.events_removed, 20, "{report:?}");
    // The early-sealed segment gave back its preallocated 64 MiB.
    assert!(report.disk_bytes_after < 1 << 20, "{report:?}");
    assert_eq!(all(&store), before);
    let r = store
        .append(
            "kept-1",
            ExpectedVersion::Exact(19),
            [EventData::new("Kept", "20")],
        )
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
    assert!(
        segment_blocks(dir.path()) < blocks,
        "no background compaction in 30 s"
    );
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

// ---- The model ---------------------------------------------------------------------------

mod model {
    use super::*;
    use proptest::prelude::*;

    const STREAMS: [&str; 4] = ["a-1", "a-2", "b-1", "c"];
    const TYPES: [&str; 2] = ["T0", "T1"];

    #[derive(Debug, Clone)]
    pub enum Op {
        Append(usize, u8, usize),
        Delete(usize),
        Tombstone(usize),
        MaxCount(usize, u64),
        Truncate(usize, u64),
        Unlimit(usize),
        Compact {
            seal: bool,
        },
        Reopen,
        /// Consumer `CONSUMERS[i]` saves a checkpoint: at the start, or at the head if true.
        Checkpoint(usize, bool),
    }

    const CONSUMERS: [&str; 2] = ["p", "q"];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0..STREAMS.len(), 1u8..4, 0..TYPES.len()).prop_map(|(s, n, t)| Op::Append(s, n, t)),
            1 => (0..STREAMS.len()).prop_map(Op::Delete),
            1 => (0..STREAMS.len()).prop_map(Op::Tombstone),
            2 => (0..STREAMS.len(), 0u64..4).prop_map(|(s, c)| Op::MaxCount(s, c)),
            1 => (0..STREAMS.len(), 0u64..12).prop_map(|(s, t)| Op::Truncate(s, t)),
            1 => (0..STREAMS.len()).prop_map(Op::Unlimit),
            3 => any::<bool>().prop_map(|seal| Op::Compact { seal }),
            1 => Just(Op::Reopen),
            2 => (0..CONSUMERS.len(), any::<bool>()).prop_map(|(c, h)| Op::Checkpoint(c, h)),
        ]
    }

    /// One event as the model holds it.
    #[derive(Debug, Clone, PartialEq)]
    struct Ev {
        seq: u64,
        number: u64,
        data: Vec<u8>,
        ty: usize,
        /// Removed by a compaction: never read again, whatever the metadata says later.
        removed: bool,
        /// In a sealed segment as far as the model knows (a seal or a reopen passed since).
        sealed: bool,
    }

    #[derive(Debug, Clone, Default)]
    struct Stream {
        events: Vec<Ev>,
        len: u64,
        md: StreamMetadata,
        has_md: bool,
    }

    impl Stream {
        fn visible(&self) -> impl Iterator<Item = &Ev> {
            let first = if self.md.tombstoned {
                u64::MAX
            } else {
                let mut f = self.md.truncate_before.unwrap_or(0);
                if let Some(c) = self.md.max_count {
                    f = f.max(self.len.saturating_sub(c));
                }
                f
            };
            self.events
                .iter()
                .filter(move |e| !e.removed && e.number >= first)
        }
    }

    fn read_stream(store: &Store, s: &str) -> Result<Vec<(u64, Vec<u8>)>, String> {
        let it = store
            .read_stream_forward(s, 0, usize::MAX)
            .map_err(|e| e.to_string())?;
        it.map(|e| {
            e.map(|e| (e.event_number(), e.data().to_vec()))
                .map_err(|e| e.to_string())
        })
        .collect()
    }

    fn check(store: &Store, streams: &[Stream]) -> Result<(), TestCaseError> {
        for (i, s) in STREAMS.iter().enumerate() {
            let m = &streams[i];
            let got = read_stream(store, s);
            if m.md.tombstoned {
                prop_assert!(got.is_err(), "{s} tombstoned, read {got:?}");
                continue;
            }
            let want: Vec<(u64, Vec<u8>)> =
                m.visible().map(|e| (e.number, e.data.clone())).collect();
            prop_assert_eq!(got, Ok(want), "stream {}", s);
            let version = store
                .stream_version(s)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(version, m.len.checked_sub(1), "version of {}", s);
        }
        // $all, without the store's own streams, in commit order.
        let mut want: Vec<(u64, String, u64)> = Vec::new();
        for (i, m) in streams.iter().enumerate() {
            for e in m.visible() {
                want.push((e.seq, STREAMS[i].to_string(), e.number));
            }
        }
        want.sort();
        let want: Vec<(String, u64)> = want.into_iter().map(|(_, s, n)| (s, n)).collect();
        let got: Vec<(String, u64)> = all(store)
            .into_iter()
            .filter(|r| !r.1.starts_with('$'))
            .map(|r| (r.1, r.2))
            .collect();
        prop_assert_eq!(&got, &want, "$all");
        // A catch-up subscription from the start sees what `$all` shows: nothing is written
        // meanwhile, so the first empty poll means it has caught up.
        let mut sub = store.subscribe_to_all(AllFrom::Start, None).unwrap();
        let mut seen = Vec::new();
        while let Some(item) = sub
            .try_recv()
            .map_err(|e| TestCaseError::fail(e.to_string()))?
        {
            if let eventjournal::SubscriptionItem::Event(e) = item {
                if !e.stream().starts_with('$') {
                    seen.push((e.stream().to_string(), e.event_number()));
                }
            }
        }
        prop_assert_eq!(&seen, &want, "subscription to $all");
        let back: Vec<(String, u64)> = store
            .read_all_backward(Position::END, usize::MAX)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| !e.stream().starts_with('$'))
            .map(|e| (e.stream().to_string(), e.event_number()))
            .collect();
        let mut rev = want.clone();
        rev.reverse();
        prop_assert_eq!(back, rev, "$all backward");
        // A category and an event type: the same events as `$all`, filtered.
        let cat: Vec<(String, u64)> = store
            .read_category("a", 0, usize::MAX)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.stream().to_string(), e.event_number()))
            .collect();
        let want_cat: Vec<_> = want
            .iter()
            .filter(|(s, _)| s.starts_with("a-"))
            .cloned()
            .collect();
        prop_assert_eq!(cat, want_cat, "category a");
        let ty: Vec<(String, u64)> = store
            .read_event_type("T1", 0, usize::MAX)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.stream().to_string(), e.event_number()))
            .collect();
        let mut want_ty = Vec::new();
        for (i, m) in streams.iter().enumerate() {
            for e in m.visible().filter(|e| e.ty == 1) {
                want_ty.push((e.seq, STREAMS[i].to_string(), e.number));
            }
        }
        want_ty.sort();
        let want_ty: Vec<_> = want_ty.into_iter().map(|(_, s, n)| (s, n)).collect();
        prop_assert_eq!(ty, want_ty, "event type T1");
        Ok(())
    }

    /// Each consumer reads back its newest checkpoint, the only event its stream shows.
    fn check_checkpoints(store: &Store, saved: &[Vec<Position>]) -> Result<(), TestCaseError> {
        for (c, saved) in CONSUMERS.iter().zip(saved) {
            let loaded = store
                .load_checkpoint(c)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(loaded, saved.last().copied(), "checkpoint of {}", c);
            let numbers: Vec<u64> = read_stream(store, &format!("$checkpoint-{c}"))
                .map_err(TestCaseError::fail)?
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            let want: Vec<u64> = (saved.len() as u64).checked_sub(1).into_iter().collect();
            prop_assert_eq!(numbers, want, "checkpoint stream of {}", c);
        }
        Ok(())
    }

    fn set_md(store: &Store, m: &mut Stream, s: &str, f: impl FnOnce(&mut StreamMetadata)) {
        if m.md.tombstoned {
            return;
        }
        let mut md = m.md.clone();
        f(&mut md);
        store
            .set_stream_metadata(s, ExpectedVersion::Any, md.clone())
            .unwrap();
        m.md = md;
        m.has_md = true;
    }

    fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options::default()
            .segment_size(4096)
            .durability(Durability::None);
        let mut store = Store::open(dir.path(), opts.clone()).unwrap();
        let mut streams = vec![Stream::default(); STREAMS.len()];
        let mut saved: Vec<Vec<Position>> = vec![Vec::new(); CONSUMERS.len()];
        let mut seq = 0u64;
        for op in ops {
            match op {
                Op::Append(i, n, ty) => {
                    let m = &mut streams[i];
                    let events: Vec<EventData> = (0..n)
                        .map(|k| {
                            EventData::new(TYPES[ty], format!("{}:{}:{}", STREAMS[i], m.len, k))
                        })
                        .collect();
                    let r = store.append(STREAMS[i], ExpectedVersion::Any, events);
                    if m.md.tombstoned {
                        prop_assert!(matches!(r, Err(Error::StreamDeleted { .. })), "{r:?}");
                        continue;
                    }
                    r.unwrap();
                    // The data names the stream's length before the batch, as written above.
                    let base = m.len;
                    for k in 0..n {
                        m.events.push(Ev {
                            seq,
                            number: m.len,
                            data: format!("{}:{}:{}", STREAMS[i], base, k).into_bytes(),
                            ty,
                            removed: false,
                            sealed: false,
                        });
                        seq += 1;
                        m.len += 1;
                    }
                }
                Op::Delete(i) => {
                    let m = &mut streams[i];
                    let r = store.delete_stream(STREAMS[i], ExpectedVersion::Any);
                    if m.md.tombstoned {
                        prop_assert!(r.is_err());
                        continue;
                    }
                    r.unwrap();
                    let tb = m.len.max(m.md.truncate_before.unwrap_or(0));
                    m.md.truncate_before = Some(tb);
                    m.has_md = true;
                }
                Op::Tombstone(i) => {
                    let m = &mut streams[i];
                    let r = store.tombstone_stream(STREAMS[i], ExpectedVersion::Any);
                    if m.md.tombstoned {
                        prop_assert!(r.is_err());
                        continue;
                    }
                    r.unwrap();
                    m.md.truncate_before = Some(m.len.max(m.md.truncate_before.unwrap_or(0)));
                    m.md.tombstoned = true;
                    m.has_md = true;
                }
                Op::MaxCount(i, c) => set_md(&store, &mut streams[i], STREAMS[i], |md| {
                    md.max_count = Some(c)
                }),
                Op::Truncate(i, t) => set_md(&store, &mut streams[i], STREAMS[i], |md| {
                    md.truncate_before = Some(t)
                }),
                Op::Unlimit(i) => set_md(&store, &mut streams[i], STREAMS[i], |md| {
                    md.max_count = None;
                    md.truncate_before = None;
                }),
                Op::Compact { seal } => {
                    let visible_before: Vec<std::collections::HashSet<u64>> = streams
                        .iter()
                        .map(|m| m.visible().map(|e| e.number).collect())
                        .collect();
                    if seal {
                        store.seal().unwrap();
                        for m in streams.iter_mut() {
                            for e in m.events.iter_mut() {
                                e.sealed = true;
                            }
                        }
                    }
                    store.compact().unwrap();
                    // What compaction may remove: what readers do not see, in sealed
                    // segments. Those of the model's events it knows are sealed must go;
                    // others may (the segment may have rolled on its own).
                    let mut must_go = Vec::new();
                    for (i, m) in streams.iter().enumerate() {
                        let visible: std::collections::HashSet<u64> =
                            m.visible().map(|e| e.number).collect();
                        for e in m.events.iter().filter(|e| !e.removed) {
                            if !visible.contains(&e.number) && e.sealed {
                                must_go.push((i, e.number));
                            }
                        }
                    }
                    for (i, n) in must_go {
                        if let Some(e) = streams[i].events.iter_mut().find(|e| e.number == n) {
                            e.removed = true;
                        }
                    }
                    if seal {
                        // Everything was sealed: the data of every event readers no longer see
                        // is gone from the directory, and that of every event they see is there.
                        for (i, m) in streams.iter().enumerate() {
                            let shown: std::collections::HashSet<u64> =
                                m.visible().map(|e| e.number).collect();
                            for e in &m.events {
                                let on_disk = !files_holding(dir.path(), &e.data).is_empty();
                                prop_assert_eq!(
                                    on_disk,
                                    shown.contains(&e.number),
                                    "event {} of {} on disk after sealing and compacting",
                                    e.number,
                                    STREAMS[i]
                                );
                            }
                        }
                    }
                    // Hidden events in segments the model does not know as sealed: removed or
                    // not, they stay hidden, unless metadata shows them again; the model
                    // cannot tell which, so it shows them again only if the store still has
                    // them. (A raise after this is checked against the store's own answer.)
                    for (i, m) in streams.iter_mut().enumerate() {
                        if m.md.tombstoned {
                            continue;
                        }
                        let held: std::collections::HashSet<u64> = probe(&store, STREAMS[i], m);
                        for e in m.events.iter_mut() {
                            // Only hidden events may go: a visible one the store lost stays in
                            // the model, and the check below fails.
                            if !held.contains(&e.number) && !visible_before[i].contains(&e.number) {
                                e.removed = true;
                            }
                        }
                    }
                }
                Op::Reopen => {
                    store.close().unwrap();
                    store = Store::open(dir.path(), opts.clone()).unwrap();
                }
                Op::Checkpoint(c, at_head) => {
                    let p = if at_head {
                        store.head()
                    } else {
                        Position::START
                    };
                    store.save_checkpoint(CONSUMERS[c], p).unwrap();
                    saved[c].push(p);
                }
            }
            check(&store, &streams)?;
            check_checkpoints(&store, &saved)?;
        }
        store.close().unwrap();
        let store = Store::open(dir.path(), opts).unwrap();
        check(&store, &streams)?;
        check_checkpoints(&store, &saved)?;
        let report = eventjournal::verify::verify(dir.path(), &mut |_, _| {})
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let total: u64 = streams.iter().map(|m| m.len).sum();
        prop_assert!(report.events >= total);
        Ok(())
    }

    /// The events of `m` the store still holds, found by lifting every limit for a moment: so
    /// that the model learns which hidden events a compaction removed from segments it could
    /// not know were sealed, without guessing.
    fn probe(store: &Store, s: &str, m: &Stream) -> std::collections::HashSet<u64> {
        let md = m.md.clone();
        if !m.has_md {
            return m.events.iter().map(|e| e.number).collect();
        }
        store
            .set_stream_metadata(s, ExpectedVersion::Any, StreamMetadata::default())
            .unwrap();
        let held = read_stream(store, s)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        store
            .set_stream_metadata(s, ExpectedVersion::Any, md)
            .unwrap();
        held
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48)
        ))]
        #[test]
        fn compaction_never_changes_what_readers_see(ops in proptest::collection::vec(op(), 1..60)) {
            run(ops)?;
        }
    }
}

#[test]
fn subscriptions_followers_and_backups_carry_on_across_a_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(dir.path()));
    fill(&store, 100, 300);
    // A follower opened before, one opened after; a subscription live through it all.
    let early = Store::open_read_only(dir.path(), options().follow(None)).unwrap();
    let mut sub = store.subscribe_to_all(AllFrom::Start, None).unwrap();
    let mut delivered = Vec::new();
    let mut take = |sub: &mut eventjournal::Subscription, until: u64| {
        while delivered.last().is_none_or(|&p| p < until) {
            match sub
                .recv_timeout(std::time::Duration::from_secs(5))
                .unwrap()
                .expect("an event within 5 s")
            {
                eventjournal::SubscriptionItem::Event(e) => delivered.push(e.position().0),
                eventjournal::SubscriptionItem::Checkpoint(_) => {}
            }
        }
    };
    let half = all(&store)[200].0;
    take(&mut sub, half);
    // A first backup, then the delete and compaction, then an incremental one.
    let backup_dir = tempfile::tempdir().unwrap();
    store.backup(backup_dir.path()).unwrap();
    store.delete_stream("gone-1", ExpectedVersion::Any).unwrap();
    pad(&store);
    let compactor = {
        let store = store.clone();
        std::thread::spawn(move || store.compact().unwrap())
    };
    // Appends go on while it runs.
    for i in 0..50 {
        store
            .append(
                "keep-1",
                ExpectedVersion::Any,
                [EventData::new("During", format!("{i}"))],
            )
            .unwrap();
    }
    let report = compactor.join().unwrap();
    assert!(report.events_removed > 0, "{report:?}");
    let rows = all(&store);
    take(&mut sub, rows.last().unwrap().0);
    // The subscription saw each event once, in order: those before the delete (some of
    // `gone-1`'s among them, delivered before it was deleted) and every later one.
    assert!(delivered.windows(2).all(|w| w[0] < w[1]));
    let after_half: Vec<u64> = delivered.iter().copied().filter(|&p| p > half).collect();
    let want: Vec<u64> = rows.iter().map(|r| r.0).filter(|&p| p > half).collect();
    assert_eq!(after_half, want);

    early.refresh().unwrap();
    let late = Store::open_read_only(dir.path(), options().follow(None)).unwrap();
    assert_eq!(all(&late), rows);
    assert_eq!(all(&early), rows);
    assert_eq!(stream(&late, "keep-1"), stream(&store, "keep-1"));

    let b = store.backup(backup_dir.path()).unwrap();
    assert!(b.segments_copied > 0, "{b:?}");
    let restored = Store::open(backup_dir.path(), options()).unwrap();
    assert_eq!(all(&restored), rows);
    // The backup holds the compacted segments: no deleted event in it either.
    assert!(stream(&restored, "gone-1").is_empty());
    drop(restored);
    let again = store.backup(backup_dir.path()).unwrap();
    assert_eq!(again.segments_copied, 0, "nothing changed since: {again:?}");
}

#[test]
fn a_deleted_actor_is_not_rebuilt_after_compaction_and_reopen() {
    use eventjournal::journal::{Host, Journal, JournalEvent, JournalState, Rejected};
    #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
    struct Added(u64);
    impl JournalEvent for Added {
        fn event_type(&self) -> &'static str {
            "Added"
        }
    }
    #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    struct Counter(u64);
    impl JournalState for Counter {
        type Event = Added;
        type Error = Rejected;
        const TYPE: &'static str = "counter";
        fn apply(&mut self, e: &Added) -> Result<(), Rejected> {
            self.0 += e.0;
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let total = |store: std::sync::Arc<Store>, id: &str| {
        let host = Host::new(store, std::sync::Arc::new(Journal::<Counter>::new()), 100);
        host.call(id, |c| Ok::<u64, Error>(c.state().0)).unwrap()
    };
    {
        let store = std::sync::Arc::new(open(dir.path()));
        let host = Host::new(
            store.clone(),
            std::sync::Arc::new(Journal::<Counter>::new()),
            100,
        );
        for _ in 0..100 {
            for id in ["kept", "gone"] {
                host.call(id, |c| {
                    c.raise_event(Added(2))?;
                    c.confirm_events()
                })
                .unwrap();
            }
        }
        drop(host);
        store
            .delete_stream("counter-gone", ExpectedVersion::Any)
            .unwrap();
        pad(&store);
        assert!(store.compact().unwrap().events_removed >= 50);
        assert_eq!(total(store.clone(), "kept"), 200);
        assert_eq!(total(store.clone(), "gone"), 0);
        store.close().unwrap();
    }
    let store = std::sync::Arc::new(open(dir.path()));
    assert_eq!(total(store.clone(), "kept"), 200);
    assert_eq!(total(store.clone(), "gone"), 0);
}

/// Maps of this process onto segment files of `dir` that were deleted (replaced by a
/// compaction). Id tables are left out: the writer merges them on its own schedule, and a
/// follower keeps the tables it opened with until it reopens (they are small).
fn deleted_maps(dir: &Path) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let dir = dir.canonicalize().unwrap();
    let dir = dir.to_string_lossy();
    maps.lines()
        .filter(|l| l.contains(dir.as_ref()) && l.ends_with(".seg (deleted)"))
        .count()
}

#[test]
fn a_follower_lets_go_of_the_segments_the_writer_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 100, 300);
    pad(&store);
    let follower = Store::open_read_only(dir.path(), options()).unwrap();
    assert_eq!(all(&follower), all(&store));
    store.delete_stream("gone-1", ExpectedVersion::Any).unwrap();
    pad(&store);
    assert!(store.compact().unwrap().segments_rewritten > 0);
    // The writer's own old maps are gone with its view; the follower lets go of its within
    // a second or so of its next look.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while deleted_maps(dir.path()) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        deleted_maps(dir.path()),
        0,
        "the follower still maps replaced segments"
    );
    follower.refresh().unwrap();
    assert_eq!(all(&follower), all(&store));
    assert!(stream(&follower, "gone-1").is_empty());
}

#[test]
fn a_compaction_under_durable_appends_keeps_every_event_where_it_was() {
    // Runs of kept records longer than the pieces the compaction writes in while an append
    // syncs, removed records few and far between, and a thread appending durably throughout.
    let dir = tempfile::tempdir().unwrap();
    let opts = |d: Durability| Options::default().segment_size(1 << 20).durability(d);
    let mut gone = 0;
    {
        let store = Store::open(dir.path(), opts(Durability::None)).unwrap();
        for i in 0..2400u64 {
            let data = format!("keep-1:{i}:{}", "k".repeat(4000));
            store
                .append(
                    "keep-1",
                    ExpectedVersion::Any,
                    [EventData::new("Kept", data)],
                )
                .unwrap();
            if i % 97 == 0 {
                store
                    .append(
                        "gone-1",
                        ExpectedVersion::Any,
                        [EventData::new("Gone", "g")],
                    )
                    .unwrap();
                gone += 1;
            }
        }
        store.delete_stream("gone-1", ExpectedVersion::Any).unwrap();
        store.seal().unwrap();
        store.close().unwrap();
    }
    let store = std::sync::Arc::new(Store::open(dir.path(), opts(Durability::Sync)).unwrap());
    let before = all(&store);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let appender = {
        let (store, stop, done) = (store.clone(), stop.clone(), done.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while n < 20 || !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let expected = match n {
                    0 => ExpectedVersion::NoStream,
                    n => ExpectedVersion::Exact(n - 1),
                };
                store
                    .append("probe-1", expected, [EventData::new("P", n.to_string())])
                    .unwrap();
                n += 1;
                done.store(n, std::sync::atomic::Ordering::SeqCst);
            }
            n
        })
    };
    // Syncs under way from the start of the compaction on.
    while done.load(std::sync::atomic::Ordering::SeqCst) < 5 {
        std::thread::yield_now();
    }
    let report = store.compact().unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let probes = appender.join().unwrap();
    assert_eq!(report.events_removed, gone, "{report:?}");
    assert!(report.segments_rewritten >= 6, "{report:?}");
    let check = |store: &Store| {
        let rows = all(store);
        let (probe, rest): (Vec<AllRow>, Vec<AllRow>) =
            rows.into_iter().partition(|r| r.1 == "probe-1");
        assert_eq!(rest, before);
        let numbers: Vec<u64> = probe.iter().map(|r| r.2).collect();
        assert_eq!(numbers, (0..probes).collect::<Vec<_>>());
    };
    check(&store);
    drop(store);
    let store = Store::open(dir.path(), opts(Durability::Sync)).unwrap();
    check(&store);
    store.close().unwrap();
}

#[test]
fn with_no_durable_append_about_two_segments_are_rewritten_at_once_and_read_as_before() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        // One core: one copy at a time, which every other test covers.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .segment_size(1 << 20)
        .durability(Durability::None);
    let store = Store::open(dir.path(), opts).unwrap();
    fill(&store, 4000, 600);
    store.delete_stream("gone-1", ExpectedVersion::Any).unwrap();
    store.delete_stream("gone-2", ExpectedVersion::Any).unwrap();
    store.seal().unwrap();
    let before = all(&store);
    // The most `.compact.tmp` files seen in the directory at once while it compacts.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, dir) = (stop.clone(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            let mut most = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let copies = std::fs::read_dir(&dir)
                    .map(|d| {
                        d.filter_map(|e| e.ok())
                            .filter(|e| e.file_name().to_string_lossy().ends_with(".compact.tmp"))
                            .count()
                    })
                    .unwrap_or(0);
                most = most.max(copies);
            }
            most
        })
    };
    let report = store.compact().unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let most = watcher.join().unwrap();
    assert!(report.segments_rewritten >= 6, "{report:?}");
    assert_eq!(report.events_removed, 8000, "{report:?}");
    assert_eq!(most, 2, "two copies under way at once, never more");
    let kept: Vec<AllRow> = before
        .into_iter()
        .filter(|r| !r.1.starts_with("gone-"))
        .collect();
    assert_eq!(all(&store), kept);
    drop(store);
    let store = Store::open(
        dir.path(),
        options().recovery(eventjournal::Recovery::Strict),
    )
    .unwrap();
    assert_eq!(all(&store), kept);
    drop(store);
    eventjournal::verify::verify(dir.path(), &mut |_, _| {}).unwrap();
}
