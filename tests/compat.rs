//! Stores written by earlier builds open in this one.
//!
//! `tests/fixtures/v1/` is a small store as format version 1 writes it (index layout 4, id table
//! layout 2): several sealed segments of 4 KiB with their index files and an id table, streams of
//! three categories, a multi-stream batch, events with metadata, a consumer checkpoint and a
//! journaled actor with snapshots. `events.txt` beside it lists every event of its `$all` as the
//! build that wrote it read them back, and what its checkpoint and actor held.
//!
//! The fixture was written by `write_fixture` below and is never rewritten: a later format gets a
//! fixture directory of its own, and this one must still open. To write a new one:
//!
//! ```sh
//! EVJ_FIXTURE_DIR=tests/fixtures/vN cargo test --test compat -- --ignored write_fixture
//! ```
//!
//! `tests/fixtures/v2/` is the same store, written the same way, then compacted (with
//! `EVJ_FIXTURE_COMPACTED=1`): `order-2` deleted and `blob-a` limited to its newest 3 events,
//! sealed and compacted, so that its sealed segments are compacted ones (format version 2).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use eventjournal::journal::{Journal, JournalEvent, JournalState, Journaled, Rejected};
use eventjournal::{
    EventData, EventId, ExpectedVersion, Options, Position, RecordedEvent, Store, StreamWrite,
};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

const FIXTURE_V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1");
const FIXTURE_V2: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v2");
const LISTING: &str = "events.txt";
const CONSUMER: &str = "projector";
const ACTOR: &str = "acct-1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Movement {
    Deposited(u64),
    Withdrawn(u64),
}

impl JournalEvent for Movement {
    fn event_type(&self) -> &'static str {
        match self {
            Movement::Deposited(_) => "Deposited",
            Movement::Withdrawn(_) => "Withdrawn",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Balance {
    cents: u64,
    movements: u64,
}

impl JournalState for Balance {
    type Event = Movement;
    type Error = Rejected;
    const TYPE: &'static str = "balance";

    fn apply(&mut self, e: &Movement) -> Result<(), Rejected> {
        match e {
            Movement::Deposited(n) => self.cents += n,
            Movement::Withdrawn(n) if *n <= self.cents => self.cents -= n,
            Movement::Withdrawn(_) => return Err(Rejected::new("insufficient funds")),
        }
        self.movements += 1;
        Ok(())
    }
}

fn options() -> Options {
    Options::default().segment_size(4096)
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "-".into();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One line of the listing: every field of the event as read.
fn line(e: &RecordedEvent) -> String {
    format!(
        "{} {} {} {} {} {} {} {}",
        e.position().0,
        e.stream(),
        e.event_number(),
        e.event_type(),
        e.id(),
        e.timestamp_micros(),
        hex(e.data()),
        hex(e.metadata()),
    )
}

/// Reads each stream of `events` (lines of `$all`) on its own and checks that it holds its
/// lines of `$all`, in order; returns the lines by stream.
fn each_stream_reads_its_lines(store: &Store, events: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut by_stream: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in events {
        let stream = l.split(' ').nth(1).expect("stream").to_string();
        by_stream.entry(stream).or_default().push(l.clone());
    }
    for (stream, lines) in &by_stream {
        let got: Vec<String> = store
            .read_stream_forward(stream, 0, usize::MAX)
            .expect("read stream")
            .map(|e| line(&e.expect("event")))
            .collect();
        assert_eq!(&got, lines, "stream {stream}");
    }
    by_stream
}

/// Every event of the store's `$all`, as listing lines.
fn all_lines(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    let mut from = Position::START;
    loop {
        let page = store.read_all_forward(from, 50).expect("read $all");
        let before = out.len();
        for e in page {
            let e = e.expect("event");
            out.push(line(&e));
            from = e.next_position();
        }
        if out.len() == before {
            return out;
        }
    }
}

fn id(n: u64) -> EventId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&0x6576_6a6c_6669_7874u64.to_be_bytes());
    b[8..].copy_from_slice(&n.to_be_bytes());
    EventId(b)
}

fn actor(store: &Arc<Store>) -> Journaled<Balance, Store> {
    let journal = Arc::new(Journal::<Balance>::new().snapshot_every(4));
    Journaled::activate(store.clone(), journal, ACTOR).expect("activate")
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("fixture directory") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name != LISTING {
            std::fs::copy(entry.path(), to.join(&name)).expect("copy");
        }
    }
}

/// The store files of a directory (not the listing, not the lock), by name.
fn store_files(dir: &Path) -> BTreeMap<String, PathBuf> {
    std::fs::read_dir(dir)
        .expect("directory")
        .map(|e| e.expect("entry"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(n, _)| n != LISTING && n != "LOCK")
        .collect()
}

/// Writes the fixture into `EVJ_FIXTURE_DIR` (which must not exist yet). Run by hand only.
#[test]
#[ignore = "writes a fixture; run by hand for a new format version"]
fn write_fixture() {
    let dir = PathBuf::from(std::env::var("EVJ_FIXTURE_DIR").expect("EVJ_FIXTURE_DIR"));
    assert!(
        !dir.exists(),
        "{} exists: fixtures are never rewritten",
        dir.display()
    );
    std::fs::create_dir_all(&dir).expect("create");
    let store = Arc::new(Store::open(&dir, options()).expect("open"));
    let mut n = 0;
    let mut next_id = || {
        n += 1;
        id(n)
    };
    for round in 0..14u64 {
        for k in 1..=4u64 {
            let stream = format!("order-{k}");
            let version = (round > 0).then(|| round - 1);
            let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
            let data = format!(
                r#"{{"order":{k},"step":{round},"note":"{}"}}"#,
                "x".repeat(40)
            );
            let mut e = EventData::new(if round == 0 { "Placed" } else { "Updated" }, data)
                .with_id(next_id());
            if k % 2 == 0 {
                e = e.with_metadata(format!(r#"{{"by":"user-{k}"}}"#));
            }
            store.append(&stream, expected, vec![e]).expect("append");
        }
        // Binary payloads in a second category, and a batch across two streams.
        let bytes: Vec<u8> = (0..64u8).map(|b| b.wrapping_mul(round as u8 + 3)).collect();
        store
            .append_multi(vec![
                StreamWrite::new(
                    "blob-a",
                    ExpectedVersion::Any,
                    vec![EventData::new("Chunk", bytes.clone()).with_id(next_id())],
                ),
                StreamWrite::new(
                    "blob-b",
                    ExpectedVersion::Any,
                    vec![
                        EventData::new("Chunk", bytes).with_id(next_id()),
                        EventData::new("Mark", &b"\x00\xff"[..]).with_id(next_id()),
                    ],
                ),
            ])
            .expect("multi-stream append");
        if round == 7 {
            store
                .save_checkpoint(CONSUMER, store.head())
                .expect("checkpoint");
        }
    }
    let mut acct = actor(&store);
    for k in 1..=10u64 {
        acct.raise_event(Movement::Deposited(100 * k))
            .expect("raise");
        if k % 3 == 0 {
            acct.raise_event(Movement::Withdrawn(50)).expect("raise");
        }
        acct.confirm_events().expect("confirm");
    }
    if std::env::var("EVJ_FIXTURE_COMPACTED").is_ok() {
        // A version-2 store: some events removed by compaction, in several sealed segments.
        store
            .delete_stream("order-2", ExpectedVersion::Any)
            .expect("delete");
        store
            .set_stream_metadata(
                "blob-a",
                ExpectedVersion::Any,
                eventjournal::StreamMetadata {
                    max_count: Some(3),
                    ..Default::default()
                },
            )
            .expect("metadata");
        store.seal().expect("seal");
        let report = store.compact().expect("compact");
        assert!(report.segments_rewritten >= 3, "{report:?}");
    }
    let (state, version, snapshot) = (
        acct.state().clone(),
        acct.version(),
        acct.snapshot_version(),
    );
    let checkpoint = store
        .load_checkpoint(CONSUMER)
        .expect("load")
        .expect("saved");
    let mut listing = vec![
        "# Every event of the fixture's $all: position stream number type id timestamp data metadata"
            .to_string(),
        format!("checkpoint {CONSUMER} {}", checkpoint.0),
        format!(
            "actor {ACTOR} version {version} snapshot {snapshot} cents {} movements {}",
            state.cents, state.movements
        ),
    ];
    listing.extend(all_lines(&store));
    drop(acct);
    store.close().expect("close");
    std::fs::remove_file(dir.join("LOCK")).expect("remove the lock file");
    std::fs::write(dir.join(LISTING), listing.join("\n") + "\n").expect("listing");
}

struct Listing {
    checkpoint: u64,
    actor: BTreeMap<String, u64>,
    events: Vec<String>,
}

fn listing(dir: &Path) -> Listing {
    let text = std::fs::read_to_string(dir.join(LISTING)).expect("listing");
    let mut out = Listing {
        checkpoint: 0,
        actor: BTreeMap::new(),
        events: Vec::new(),
    };
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let words: Vec<&str> = l.split(' ').collect();
        match words[0] {
            "checkpoint" => out.checkpoint = words[2].parse().expect("checkpoint position"),
            "actor" => {
                for pair in words[2..].chunks(2) {
                    out.actor
                        .insert(pair[0].to_string(), pair[1].parse().expect("actor figure"));
                }
            }
            _ => out.events.push(l.to_string()),
        }
    }
    out.events = hide_replaced(out.events);
    out
}

/// What readers see of a listing written by a build that kept every checkpoint, snapshot and
/// metadata event: of each such stream of the store's own, only its newest event (its newest
/// snapshot: the journal in the fixture keeps one).
fn hide_replaced(events: Vec<String>) -> Vec<String> {
    let stream = |l: &str| l.split(' ').nth(1).unwrap_or("").to_string();
    let replaced = |s: &str| {
        ["$checkpoint-", "$snapshot-", "$$"]
            .iter()
            .any(|p| s.starts_with(p))
    };
    let mut last: BTreeMap<String, usize> = BTreeMap::new();
    for (i, l) in events.iter().enumerate() {
        if replaced(&stream(l)) {
            last.insert(stream(l), i);
        }
    }
    events
        .into_iter()
        .enumerate()
        .filter(|(i, l)| last.get(&stream(l)).is_none_or(|&k| k == *i))
        .map(|(_, l)| l)
        .collect()
}

#[test]
fn a_version_1_store_opens_and_reads_as_written() {
    let fixture = Path::new(FIXTURE_V1);
    let expected = listing(fixture);
    let files = store_files(fixture);
    let sealed_indexes: Vec<&String> = files
        .keys()
        .filter(|n| n.ends_with(".idx") || n.ends_with(".ids"))
        .collect();
    assert!(
        files.keys().filter(|n| n.ends_with(".seg")).count() >= 3 && !sealed_indexes.is_empty(),
        "the fixture has several segments and index files: {files:?}"
    );
    assert!(expected.events.len() > 100);

    let tmp = TempDir::new().expect("tempdir");
    copy_dir(fixture, tmp.path());
    let inode =
        |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).expect("stat"));
    let inodes: BTreeMap<String, u64> = store_files(tmp.path())
        .into_iter()
        .map(|(n, p)| (n, inode(&p)))
        .collect();
    let store = Arc::new(Store::open(tmp.path(), options()).expect("open the v1 fixture"));

    // `$all`, byte for byte: positions, streams, numbers, types, ids, timestamps, payloads.
    assert_eq!(all_lines(&store), expected.events);

    // Each stream read on its own holds its events of `$all`, in order.
    let by_stream = each_stream_reads_its_lines(&store, &expected.events);
    for (stream, lines) in &by_stream {
        let version = store.stream_version(stream).expect("version");
        let last = lines.last().and_then(|l| l.split(' ').nth(2)?.parse().ok());
        assert_eq!(version, last, "stream {stream}");
    }
    // Category and event-type indexes, from the index files.
    let orders = by_stream
        .iter()
        .filter(|(s, _)| s.starts_with("order-"))
        .map(|(_, l)| l.len() as u64)
        .sum::<u64>();
    assert_eq!(store.category_len("order").expect("category"), orders);
    let marks = expected
        .events
        .iter()
        .filter(|l| l.split(' ').nth(3) == Some("Mark"))
        .count();
    assert_eq!(store.event_type_len("Mark").expect("type") as usize, marks);
    let read_marks: Vec<String> = store
        .read_event_type("Mark", 0, usize::MAX)
        .expect("read type")
        .map(|e| line(&e.expect("event")))
        .collect();
    assert_eq!(read_marks.len(), marks);

    // The checkpoint, and the actor from its snapshot and the events after it.
    assert_eq!(
        store.load_checkpoint(CONSUMER).expect("checkpoint"),
        Some(Position(expected.checkpoint))
    );
    let acct = actor(&store);
    let figure = |k: &str| expected.actor[k];
    assert_eq!(acct.version(), figure("version"));
    assert_eq!(acct.snapshot_version(), figure("snapshot"));
    assert!(acct.snapshot_version() > 0, "activated from a snapshot");
    assert_eq!(
        acct.state(),
        &Balance {
            cents: figure("cents"),
            movements: figure("movements"),
        }
    );
    drop(acct);

    // The store takes appends where the old build left off.
    let order_1 = by_stream["order-1"].len() as u64;
    store
        .append(
            "order-1",
            ExpectedVersion::Exact(order_1 - 1),
            vec![EventData::new("Updated", "after the upgrade")],
        )
        .expect("append");
    store.close().expect("close");
    drop(store);

    // The version-1 files were used as they are, not rebuilt: the sealed segments, their index
    // files and the id tables are the files copied in (a rebuilt one is written under a
    // temporary name and renamed over), byte for byte what the old build wrote.
    let after = store_files(tmp.path());
    let last_segment = files.keys().filter(|n| n.ends_with(".seg")).max().cloned();
    let last_index = last_segment.as_ref().map(|s| s.replace(".seg", ".idx"));
    for (name, path) in &files {
        if Some(name) == last_segment.as_ref() || Some(name) == last_index.as_ref() {
            continue; // The active segment and its index file took the new append.
        }
        let old = std::fs::read(path).expect("fixture file");
        let new = std::fs::read(&after[name]).expect("copied file");
        assert!(old == new, "{name} changed by opening and appending");
        assert_eq!(
            inode(&after[name]),
            inodes[name],
            "{name} was written again"
        );
    }
    let reopened = Store::open(tmp.path(), options()).expect("reopen");
    let mut expected_after = expected.events.clone();
    let all = all_lines(&reopened);
    assert_eq!(all.len(), expected_after.len() + 1);
    expected_after.push(all[all.len() - 1].clone());
    assert_eq!(all, expected_after);
    reopened.close().expect("close");
}

#[test]
fn a_version_2_store_opens_and_reads_as_written() {
    let fixture = Path::new(FIXTURE_V2);
    let expected = listing(fixture);
    let meta = std::fs::read(fixture.join("eventjournal.meta")).expect("meta");
    assert_eq!(meta[8..12], 2u32.to_le_bytes(), "a version-2 store");
    let compacted = store_files(fixture)
        .iter()
        .filter(|(n, _)| n.ends_with(".seg"))
        .filter(|(_, p)| std::fs::read(p).expect("segment")[8..12] == 2u32.to_le_bytes())
        .count();
    assert!(
        compacted >= 3,
        "compacted segments in the fixture: {compacted}"
    );
    let tmp = TempDir::new().expect("tempdir");
    copy_dir(fixture, tmp.path());
    let store = Arc::new(Store::open(tmp.path(), options()).expect("open the v2 fixture"));
    assert_eq!(all_lines(&store), expected.events);
    each_stream_reads_its_lines(&store, &expected.events);
    assert_eq!(
        store
            .read_stream_forward("order-2", 0, usize::MAX)
            .expect("read")
            .count(),
        0
    );
    assert_eq!(store.stream_version("order-2").expect("version"), Some(13));
    // What this build's rules hide beyond the fixture's (replaced checkpoints, snapshots and
    // metadata) is removed once, reads unchanged; then nothing is left to remove; appends go on.
    store.compact().expect("compact");
    assert_eq!(all_lines(&store), expected.events);
    assert_eq!(store.compact().expect("compact").segments_rewritten, 0);
    store
        .append(
            "order-2",
            ExpectedVersion::Exact(13),
            vec![EventData::new("Updated", "{}")],
        )
        .expect("append");
    drop(store);
    let report = eventjournal::verify::verify(tmp.path(), &mut |_, _| {}).expect("verify");
    assert!(report.events as usize > expected.events.len());
}
