//! The bodies of the fuzz targets.
//!
//! Each target in `fuzz/fuzz_targets/` and the ordinary test `tests/fuzz_corpus.rs` (which replays
//! `fuzz/corpus/*/`) include this file with `#[path = ...] mod logic;`. It uses only the public API
//! of `eventjournal` (with its `http` feature), `http`, `serde_json`, `tempfile` and `std`, so it
//! builds without libFuzzer.
//!
//! - [`open_segment`]: the input is the bytes of segment file `00000000000000000000.seg`.
//! - [`open_index`]: the input damages the `.idx` files of a small real store.
//! - [`ops`]: the input is a program of appends, deletes, metadata writes, seals, compactions,
//!   reads and reopens, checked against a model.
//! - [`open_compacted`]: the input damages a compacted segment (format version 2: records back
//!   to back, then the compaction table) of a small real store.
//! - [`open_ids`]: the input damages or forges the id tables (`.ids`) of a small real store.
//! - [`open_manifest`]: the input is the manifest of a small real store, and damage to a file it
//!   may vouch for.
//! - [`web`]: the input is HTTP requests, answered by the HTTP view of a small real store.
//! - [`open_keys`]: the input damages, replaces or forges the key table (`keys.tbl`) of a small
//!   real store.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventjournal::{
    category_of, metadata_stream, AppendResult, Durability, Error, EventData, EventId,
    ExpectedVersion, Options, Position, RecordedEvent, Recovery, Store, StreamMetadata,
    StreamWrite, MAX_EVENT_TYPE_LEN, MAX_STREAM_NAME_LEN, METADATA_EVENT_TYPE,
    METADATA_STREAM_PREFIX, SYSTEM_PREFIX,
};

/// The body of a fuzz target.
pub type Target = fn(&[u8]);

/// The targets, by name: the names of `fuzz/fuzz_targets/*.rs` and of `fuzz/corpus/*/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("open_segment", open_segment),
    ("open_index", open_index),
    ("ops", ops),
    ("open_compacted", open_compacted),
    ("open_ids", open_ids),
    ("open_manifest", open_manifest),
    ("web", web),
    ("open_keys", open_keys),
];

/// File name of the first segment (base 0).
pub const FIRST_SEGMENT: &str = "00000000000000000000.seg";
/// File name of the store's meta file.
pub const META_FILE: &str = "eventjournal.meta";
/// Segment size of the stores the targets make: small, so that segments roll often.
const SEGMENT_SIZE: u64 = 4096;
/// Largest segment capacity the checksum-fixing variant of `open_segment` leaves in a header, so
/// that inputs do not spend their time on multi-gigabyte sparse files.
const FIXED_MAX_CAPACITY: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// An event as read back, owned (no reference into a memory map that a later open may cut).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ev {
    pub stream: String,
    pub event_type: String,
    pub number: u64,
    pub position: u64,
    pub next: u64,
    pub id: EventId,
    pub timestamp: u64,
    pub data: Vec<u8>,
    pub metadata: Vec<u8>,
}

impl From<&RecordedEvent> for Ev {
    fn from(e: &RecordedEvent) -> Ev {
        Ev {
            stream: e.stream().to_string(),
            event_type: e.event_type().to_string(),
            number: e.event_number(),
            position: e.position().0,
            next: e.next_position().0,
            id: e.id(),
            timestamp: e.timestamp_micros(),
            data: e.data().to_vec(),
            metadata: e.metadata().to_vec(),
        }
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("evj-fuzz")
        .tempdir()
        .expect("create a temporary directory")
}

fn options(recovery: Recovery) -> Options {
    Options::default()
        .durability(Durability::None)
        .segment_size(SEGMENT_SIZE)
        .recovery(recovery)
}

/// The meta file of an empty store, as `Store::open` writes it.
pub fn meta_bytes() -> &'static [u8] {
    static META: OnceLock<Vec<u8>> = OnceLock::new();
    META.get_or_init(|| {
        let dir = tempdir();
        Store::open(dir.path(), options(Recovery::Strict))
            .expect("open an empty store")
            .close()
            .expect("close an empty store");
        fs::read(dir.path().join(META_FILE)).expect("read the meta file")
    })
}

/// CRC-32 (IEEE, the checksum of every eventjournal file), bit by bit: inputs are small.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Copies the store files of `from` into `to` (not `LOCK`, not temporaries, not a writer's
/// handover socket).
fn copy_store_files(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).expect("list store directory") {
        let entry = entry.expect("directory entry");
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let regular = entry.file_type().is_ok_and(|t| t.is_file());
        if name == "LOCK" || name.ends_with(".tmp") || !regular {
            continue;
        }
        match fs::copy(entry.path(), to.join(&*name)) {
            Ok(_) => {}
            // The store's background work deletes files it replaced (id tables, say): a crash
            // just then would not have left the file either.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("copy store file {name}: {e}"),
        }
    }
}

/// Reads everything a store holds, through every read API, checking that the APIs agree with each
/// other; returns `$all` in order. Nothing may fail: every record was verified when the store
/// opened.
pub fn read_everything(store: &Store) -> Vec<Ev> {
    let forward: Vec<Ev> = store
        .read_all_forward(Position::START, usize::MAX)
        .expect("read_all_forward(START)")
        .map(|r| Ev::from(&r.expect("$all forward")))
        .collect();
    let mut backward: Vec<Ev> = store
        .read_all_backward(Position::END, usize::MAX)
        .expect("read_all_backward(END)")
        .map(|r| Ev::from(&r.expect("$all backward")))
        .collect();
    backward.reverse();
    assert_eq!(forward, backward, "$all forward and backward disagree");
    for e in &forward {
        assert!(e.next > e.position, "event ends before it starts: {e:?}");
    }
    for w in forward.windows(2) {
        assert!(w[0].next <= w[1].position, "positions out of order");
    }
    if let Some(last) = forward.last() {
        assert!(store.head().0 >= last.next, "head before the last event");
    }
    // $all from the middle, both ways.
    if let Some(mid) = forward.get(forward.len() / 2) {
        let from_mid: Vec<Ev> = store
            .read_all_forward(Position(mid.position), usize::MAX)
            .expect("read_all_forward(event position)")
            .map(|r| Ev::from(&r.expect("$all forward from the middle")))
            .collect();
        assert_eq!(from_mid, forward[forward.len() / 2..]);
        let back_mid: Vec<Ev> = store
            .read_all_backward(Position(mid.next), 2)
            .expect("read_all_backward(next position)")
            .map(|r| Ev::from(&r.expect("$all backward from the middle")))
            .collect();
        let i = forward.len() / 2;
        let want: Vec<Ev> = forward[i.saturating_sub(1)..=i]
            .iter()
            .rev()
            .cloned()
            .collect();
        assert_eq!(back_mid, want);
    }

    let mut first_seen: Vec<String> = Vec::new();
    for e in &forward {
        if !first_seen.contains(&e.stream) {
            first_seen.push(e.stream.clone());
        }
    }
    let names = store.streams().unwrap();
    first_seen.sort();
    assert_eq!(names, first_seen, "streams() is not sorted by name");
    for name in &names {
        let want: Vec<&Ev> = forward.iter().filter(|e| &e.stream == name).collect();
        for (k, e) in want.iter().enumerate() {
            assert_eq!(
                e.number, k as u64,
                "stream `{name}` is not numbered 0, 1, ..."
            );
        }
        let got = match store.read_stream_forward(name, 0, usize::MAX) {
            Ok(events) => events,
            Err(Error::InvalidInput(_)) => {
                // The log may hold names the API refuses (empty, too long); a writer never
                // produces them.
                assert!(name.is_empty() || name.len() > MAX_STREAM_NAME_LEN);
                continue;
            }
            Err(e) => panic!("read_stream_forward({name}): {e}"),
        };
        let got: Vec<Ev> = got.map(|r| Ev::from(&r.expect("stream forward"))).collect();
        assert_eq!(
            got.iter().collect::<Vec<_>>(),
            want,
            "stream `{name}` forward"
        );
        let mut back: Vec<Ev> = store
            .read_stream_backward(name, u64::MAX, usize::MAX)
            .expect("read_stream_backward")
            .map(|r| Ev::from(&r.expect("stream backward")))
            .collect();
        back.reverse();
        assert_eq!(back, got, "stream `{name}` backward");
        assert_eq!(
            store.stream_version(name).unwrap(),
            Some(want.len() as u64 - 1)
        );
    }
    forward
}

// ---------------------------------------------------------------------------------------------
// open_segment
// ---------------------------------------------------------------------------------------------

/// Writes `data` as the only segment of a store, opens it with `Strict` and with `Salvage`, and
/// reads everything. Nothing may panic; besides:
/// - opening may fail only with `Corrupt` or `UnsupportedVersion`;
/// - if `Strict` opens, `Salvage` opens too and sees the same events;
/// - a store that opened accepts an append and reopens (`Strict`) with the same events plus it.
///
/// Then the same again with the header and record checksums recomputed, so that the checks behind
/// the checksums get exercised too.
pub fn open_segment(data: &[u8]) {
    open_segment_once(data);
    let fixed = fix_segment_checksums(data);
    if fixed != data {
        open_segment_once(&fixed);
    }
}

fn open_segment_once(data: &[u8]) {
    let strict = open_segment_with(data, Recovery::Strict);
    let salvage = open_segment_with(data, Recovery::Salvage);
    if let Some(events) = strict {
        assert_eq!(
            salvage.as_ref(),
            Some(&events),
            "Strict opened but Salvage disagrees"
        );
    }
}

/// Opens a store whose only segment holds `data`; `None` if it does not open.
fn open_segment_with(data: &[u8], recovery: Recovery) -> Option<Vec<Ev>> {
    let dir = tempdir();
    fs::write(dir.path().join(META_FILE), meta_bytes()).expect("write meta");
    fs::write(dir.path().join(FIRST_SEGMENT), data).expect("write segment");
    let store = match Store::open(dir.path(), options(recovery)) {
        Ok(store) => store,
        Err(Error::Corrupt { .. } | Error::UnsupportedVersion { .. }) => return None,
        Err(e) => panic!("opening with {recovery:?} failed with an unexpected error: {e}"),
    };
    let events = read_everything(&store);

    // The recovered log must take an append and come back whole.
    let r = store
        .append(
            "fuzz-check",
            ExpectedVersion::Any,
            [EventData::new("Checked", &b"after recovery"[..])],
        )
        .expect("append after recovery");
    let mut after = read_everything(&store);
    let new = after.last().cloned().expect("the appended event");
    assert_eq!(r.position, Some(Position(new.position)));
    assert_eq!(new.data, b"after recovery");
    assert_eq!(after[..after.len() - 1], events[..]);
    assert_eq!(store.head().0, new.next);
    store.close().expect("close");

    let store = Store::open(dir.path(), options(Recovery::Strict))
        .unwrap_or_else(|e| panic!("reopening a recovered store failed: {e}"));
    let again = read_everything(&store);
    assert_eq!(again, after, "reopened store differs");
    store.close().expect("close");
    after.pop();
    Some(after)
}

/// `data` with a valid header checksum (and a capacity of at most [`FIXED_MAX_CAPACITY`]) and a
/// valid checksum on each record that a length chain from offset 64 reaches.
pub fn fix_segment_checksums(data: &[u8]) -> Vec<u8> {
    let mut b = data.to_vec();
    if b.len() < 64 {
        return b;
    }
    let mut capacity = le_u64(&b, 24);
    if capacity > FIXED_MAX_CAPACITY {
        capacity = 64 + capacity % FIXED_MAX_CAPACITY;
        b[24..32].copy_from_slice(&capacity.to_le_bytes());
    }
    let crc = crc32(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    let end = b.len().min(capacity as usize);
    let mut off = 64;
    while off + 8 <= end {
        let len = le_u32(&b, off) as usize;
        if len < 64 || !len.is_multiple_of(8) || len > end - off {
            break;
        }
        let crc = crc32(&b[off + 8..off + len]);
        b[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
        off += len;
    }
    b
}

// ---------------------------------------------------------------------------------------------
// open_index
// ---------------------------------------------------------------------------------------------

/// A small real store, made once: its files and its events.
struct Golden {
    files: Vec<(String, Vec<u8>)>,
    events: Vec<Ev>,
}

/// Runs of an index file that opening spot-checks, at most, besides the last one (every
/// `ceil(n / 16)`-th of `n`): see `runs_match_log` in `src/store.rs`.
const SPOT_CHECKED_RUNS: u32 = 16;

/// Streams with one run each in the golden store's first segment: more than opening spot-checks,
/// so that some runs are verified only by the first read that uses them.
const MANY_STREAMS: usize = 24;

fn golden() -> &'static Golden {
    static GOLDEN: OnceLock<Golden> = OnceLock::new();
    GOLDEN.get_or_init(|| {
        let dir = tempdir();
        let store = Store::open(dir.path(), options(Recovery::Strict)).expect("open");
        // The first segment: two small events in each of many streams.
        for round in 0..2u8 {
            let writes = (0..MANY_STREAMS)
                .map(|s| {
                    let mut id = [0u8; 16];
                    id[0] = 0xA0 + round;
                    id[1] = s as u8;
                    StreamWrite::new(
                        format!("s{s:02}"),
                        ExpectedVersion::Any,
                        vec![EventData::new("T", vec![round; 1 + s % 5]).with_id(EventId(id))],
                    )
                })
                .collect();
            store.append_multi(writes).expect("append_multi");
        }
        let streams = ["a", "b", "account-42", "c"];
        let mut n = 0u8;
        let mut event = |k: usize| {
            n += 1;
            let len = 20 + (usize::from(n) * 37) % 150;
            EventData::new(["Deposited", "Withdrawn", "T"][k % 3], vec![n; len])
                .with_id(EventId([n; 16]))
                .with_metadata(if n.is_multiple_of(4) {
                    vec![n; 3]
                } else {
                    vec![]
                })
        };
        for i in 0..24 {
            let batch: Vec<EventData> = (0..1 + i % 3).map(&mut event).collect();
            store
                .append(streams[i % streams.len()], ExpectedVersion::Any, batch)
                .expect("append");
            if i % 8 == 7 {
                let writes = vec![
                    StreamWrite::new("a", ExpectedVersion::Any, vec![event(0), event(1)]),
                    StreamWrite::new("multi", ExpectedVersion::Any, vec![event(2)]),
                ];
                store.append_multi(writes).expect("append_multi");
            }
        }
        let events = read_everything(&store);
        store.close().expect("close");
        let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| {
                let e = e.expect("entry");
                let name = e.file_name().to_string_lossy().into_owned();
                let bytes = fs::read(e.path()).expect("read");
                (name, bytes)
            })
            .filter(|(name, _)| name != "LOCK")
            .collect();
        files.sort();
        let idx: Vec<&[u8]> = files
            .iter()
            .filter(|(n, _)| n.ends_with(".idx"))
            .map(|(_, b)| &b[..])
            .collect();
        assert!(
            idx.len() >= 3,
            "the golden store should span several segments"
        );
        assert!(
            le_u32(idx[0], 12) > SPOT_CHECKED_RUNS + 2,
            "the golden store's first index file should hold more runs than open spot-checks"
        );
        Golden { files, events }
    })
}

/// Damages the index files of a small real store as `data` says, reopens it twice, and checks
/// what the store shows (see [`check_golden`]): an index file is a cache, so whatever it holds,
/// opening must rebuild what it gets wrong from the log, and no read may return an event other
/// than the one written.
///
/// `data[0]` is a mode byte:
/// - bits 0-1: which index files: 0 the first (whose runs are too many to be all spot-checked
///   at open), 1 the last, 2 all, 3 the one `data[1]` picks;
/// - bit 2: XOR the rest of the input onto the file (else: replace the file with it);
/// - bit 3: then make the file's checksums valid, as a buggy writer would, in the layout its
///   header names (see [`forge_index_checksums_v4`], for the files this build writes, and
///   [`forge_index_checksums`], for layout 2);
/// - bit 4: delete the files instead;
/// - bit 5: with bit 3, leave the runs' offsets checksums as they are (only the directory and
///   header checksums are made valid).
pub fn open_index(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let g = golden();
    let dir = tempdir();
    for (name, bytes) in &g.files {
        fs::write(dir.path().join(name), bytes).expect("restore golden file");
    }
    let idx: Vec<&String> = g
        .files
        .iter()
        .map(|(n, _)| n)
        .filter(|n| n.ends_with(".idx"))
        .collect();
    let (chosen, payload): (Vec<&String>, &[u8]) = match mode & 3 {
        0 => (vec![idx[0]], rest),
        1 => (vec![idx[idx.len() - 1]], rest),
        2 => (idx.clone(), rest),
        _ => {
            let pick = rest.first().map_or(0, |&b| usize::from(b) % idx.len());
            (vec![idx[pick]], rest.get(1..).unwrap_or(&[]))
        }
    };
    let forged = mode & 8 != 0;
    for name in chosen {
        let path = dir.path().join(name);
        if mode & 16 != 0 {
            fs::remove_file(&path).expect("remove index file");
            continue;
        }
        let mut bytes = if mode & 4 != 0 {
            let mut b = fs::read(&path).expect("read index file");
            if b.len() < payload.len() {
                b.resize(payload.len(), 0);
            }
            for (x, p) in b.iter_mut().zip(payload) {
                *x ^= p;
            }
            b
        } else {
            payload.to_vec()
        };
        if forged {
            // Forged in the layout the file says it has: files this build writes are layout 4.
            if bytes.get(8..12) == Some(&4u32.to_le_bytes()[..]) {
                forge_index_checksums_v4(&mut bytes, mode & 32 == 0);
            } else {
                forge_index_checksums(&mut bytes, mode & 32 == 0);
            }
        }
        fs::write(&path, bytes).expect("write index file");
    }

    for round in 0..2 {
        let store = Store::open(dir.path(), options(Recovery::Strict)).unwrap_or_else(|e| {
            panic!("open with damaged index files (round {round}) failed: {e}")
        });
        let tolerate = if forged {
            Tolerate::Forged
        } else if round == 0 {
            Tolerate::DamagedRun
        } else {
            Tolerate::Nothing
        };
        check_golden(&store, &g.events, tolerate);
        store.close().expect("close");
    }
}

/// Makes the checksums of index file `b` (layout 2) valid over whatever it holds, as a buggy
/// writer would: with `runs`, each run's offsets checksum, for the directory entries and offsets
/// arrays that lie inside the file; then the directory checksum, if the header's run count and
/// names length put the directory and names inside the file; then the header checksum. Lengths
/// are left as they are: a file whose lengths disagree with its size is still rejected.
pub fn forge_index_checksums(b: &mut [u8], runs: bool) {
    const HEADER: usize = 64;
    const ENTRY: usize = 32;
    if b.len() < HEADER {
        return;
    }
    let count = le_u32(b, 12) as usize;
    let names_end = usize::try_from(le_u64(b, 32)).ok().and_then(|names_len| {
        count
            .checked_mul(ENTRY)?
            .checked_add(HEADER)?
            .checked_add(names_len)
    });
    if let Some(names_end) = names_end.filter(|&end| end <= b.len()) {
        if runs {
            let offsets_start = names_end.next_multiple_of(4);
            for i in 0..count {
                let e = HEADER + i * ENTRY;
                let n = le_u32(b, e + 8) as usize;
                let first = le_u32(b, e + 20) as usize;
                let array = (|| {
                    let from = offsets_start.checked_add(first.checked_mul(4)?)?;
                    Some((from, from.checked_add(n.checked_mul(4)?)?))
                })();
                if let Some((from, to)) = array.filter(|&(_, to)| to <= b.len()) {
                    let crc = crc32(&b[from..to]);
                    b[e + 24..e + 28].copy_from_slice(&crc.to_le_bytes());
                }
            }
        }
        let crc = crc32(&b[HEADER..names_end]);
        b[48..52].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// What [`check_golden`] lets a store get wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tolerate {
    /// Nothing: everything reads back exactly as written.
    Nothing,
    /// Index files damaged without fixing their checksums, at the first open after the damage.
    /// Opening checks every header and directory, but only a sample of the runs' offsets
    /// arrays (all of them in a file of few runs); the others are checked by the first read
    /// that uses them. So a read may end in `Corrupt` naming the index file, which is then
    /// deleted (and rebuilt at the next open); what the read returned before must be exact, and
    /// so must be everything the directories say (the streams, their versions).
    DamagedRun,
    /// Forged index files or id tables (valid checksums over wrong content, which only a buggy
    /// writer makes). Opening spot-checks runs and id table entries against the log but cannot
    /// check every offset without reading the whole log: a read may end in `Corrupt` (naming
    /// the index file, or the store when the record found is not the event the index
    /// promised), a stream may look shorter or be missing, or have a version past its last
    /// event (reading that event fails), and `streams()` may list a name that was never written
    /// (a forged run that open did not sample), but a read may never return an event that
    /// differs from what was written.
    Forged,
}

/// Whether a read may end with `e`: a `Corrupt` error that `tolerate` allows. A damaged index
/// file that a read reports is gone afterwards.
fn tolerates(tolerate: Tolerate, e: &Error) -> bool {
    let Error::Corrupt { file, .. } = e else {
        return false;
    };
    let names_index_file = file.extension().is_some_and(|x| x == "idx");
    if names_index_file {
        assert!(
            !file.exists(),
            "index file {} reported damaged but not removed",
            file.display()
        );
    }
    match tolerate {
        Tolerate::Nothing => false,
        Tolerate::DamagedRun => names_index_file,
        Tolerate::Forged => true,
    }
}

/// Checks that `store` holds exactly `events`, reading each stream through the index, up to
/// what `tolerate` allows. In every case nothing panics, no read returns an event other than
/// the one written, and `$all` from the start (which does not use the index) is exact.
fn check_golden(store: &Store, events: &[Ev], tolerate: Tolerate) {
    let forged = tolerate == Tolerate::Forged;
    let tolerated = |e: &Error| tolerates(tolerate, e);
    let mut names: Vec<String> = Vec::new();
    for e in events {
        if !names.contains(&e.stream) {
            names.push(e.stream.clone());
        }
    }
    let mut listed = match store.streams() {
        Ok(listed) => listed,
        // The listing reads every index file's names: a damaged one ends it, and is removed.
        Err(e) if tolerated(&e) => return,
        Err(e) => panic!("streams() ({tolerate:?}): {e}"),
    };
    if forged {
        // Opening compares only a sample of the runs with the log, so a forged run may name a
        // stream that was never written (and hide the one that was, which then reads shorter):
        // such a name is listed, but reading it must not yield an event.
        for phantom in listed.iter().filter(|n| !names.contains(n)) {
            let events = match store.read_stream_forward(phantom, 0, usize::MAX) {
                Ok(events) => events,
                Err(Error::InvalidInput(_)) => continue, // a name the API refuses
                Err(e) => panic!("reading stream `{phantom}` ({tolerate:?}): {e}"),
            };
            // A read ends after its first error: the first item decides.
            match events.into_iter().next() {
                None => {}
                Some(Ok(e)) => panic!("stream `{phantom}` was never written, yet yields {e:?}"),
                Some(Err(e)) if tolerated(&e) => {}
                Some(Err(e)) => panic!("reading stream `{phantom}` ({tolerate:?}): {e}"),
            }
        }
        listed.retain(|n| names.contains(n));
        let mut sorted = listed.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            listed.len(),
            "streams() lists a name twice: {listed:?}"
        );
    } else {
        names.sort();
        assert_eq!(listed, names, "streams()");
    }
    let mut corrupt_seen = false;
    for name in &names {
        let want: Vec<&Ev> = events.iter().filter(|e| &e.stream == name).collect();
        let mut got: Vec<Ev> = Vec::new();
        let mut cut = false;
        let read = match store.read_stream_forward(name, 0, usize::MAX) {
            Ok(read) => Some(read),
            // Looking the stream up in the index files can meet their damage too.
            Err(e) if tolerated(&e) => {
                cut = true;
                None
            }
            Err(e) => panic!("read_stream_forward({name}) ({tolerate:?}): {e}"),
        };
        for r in read.into_iter().flatten() {
            match r {
                Ok(e) => got.push(Ev::from(&e)),
                Err(e) if tolerated(&e) => {
                    cut = true;
                    break;
                }
                Err(e) => panic!("reading stream `{name}` ({tolerate:?}): {e}"),
            }
        }
        corrupt_seen |= cut;
        if cut || forged {
            assert!(got.len() <= want.len(), "stream `{name}` too long");
            assert_eq!(
                got.iter().collect::<Vec<_>>(),
                want[..got.len()],
                "stream `{name}`"
            );
        } else {
            assert_eq!(got.iter().collect::<Vec<_>>(), want, "stream `{name}`");
        }
        let version = match store.stream_version(name) {
            Ok(version) => version,
            Err(e) if tolerated(&e) => continue,
            Err(e) => panic!("stream_version({name}) ({tolerate:?}): {e}"),
        };
        if forged {
            // A forged run can claim more events than its stream has (its count is checked
            // against its offsets and the log only when a read uses it): the version is then
            // past the last event, and reading that event must fail.
            if let Some(v) = version.filter(|&v| v > want.len() as u64 - 1) {
                match store.read_event(name, v) {
                    Err(e) if tolerated(&e) => {}
                    Err(Error::EventNotFound { .. }) => {}
                    Ok(e) => panic!(
                        "stream `{name}` has event {v}, never written: {}",
                        Ev::from(&e).position
                    ),
                    Err(e) => panic!("read_event({name}, {v}) ({tolerate:?}): {e}"),
                }
            }
            continue;
        }
        assert_eq!(
            version,
            Some(want.len() as u64 - 1),
            "stream `{name}` version"
        );
        match store.read_event(name, want.len() as u64 - 1) {
            Ok(last) => assert_eq!(&Ev::from(&last), *want.last().expect("events")),
            Err(e) if tolerated(&e) => corrupt_seen = true,
            Err(e) => panic!("read_event `{name}` ({tolerate:?}): {e}"),
        }
    }
    if forged || corrupt_seen {
        // Only `$all` from the start is independent of the index (from other positions, it
        // checks the position against the index).
        let all: Vec<Ev> = store
            .read_all_forward(Position::START, usize::MAX)
            .expect("read_all_forward(START)")
            .map(|r| Ev::from(&r.expect("$all forward")))
            .collect();
        assert_eq!(all, events, "$all");
    } else {
        assert_eq!(read_everything(store), events, "$all");
    }
}

// ---------------------------------------------------------------------------------------------
// ops
// ---------------------------------------------------------------------------------------------

/// Largest event the `ops` stores accept (stream name, type, data and metadata).
const OPS_MAX_EVENT: u64 = 10_000;

/// The input as a stream of bytes; zeros after its end.
struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
}

/// Microseconds since the Unix epoch: the clock records are stamped with and `max_age_secs` is
/// read against.
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What the model says an append, a delete or a metadata write does.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    /// Written, or answered without writing (a retry, an empty batch): the results.
    Ok(Vec<AppendResult>),
    Wrong {
        stream: String,
        actual: Option<u64>,
    },
    Invalid,
    TooLarge {
        size: u64,
    },
    Deleted {
        stream: String,
    },
    Reserved,
}

enum Plan {
    Write(u64),
    Done(AppendResult),
}

/// An event as the model holds it: what was written, and where (worked out from the record
/// lengths FORMAT.md gives, backward from the head the append left).
#[derive(Debug, Clone)]
struct MEv {
    stream: String,
    event_type: String,
    number: u64,
    position: u64,
    next: u64,
    /// `None` for a metadata event until it is first read: the store gives those random ids.
    id: Option<EventId>,
    /// The clock before and after the append that wrote it; the timestamp itself once read.
    ts: (u64, u64),
    data: Vec<u8>,
    metadata: Vec<u8>,
    /// Removed by a compaction: never shown again, whatever the metadata says later.
    removed: bool,
}

/// The model: `$all` as a list (hidden and removed events included), each stream as indexes
/// into it, and the metadata in force.
struct Model {
    all: Vec<MEv>,
    order: Vec<String>,
    streams: HashMap<String, Vec<usize>>,
    md: HashMap<String, StreamMetadata>,
    head: u64,
    /// The clock after the newest append returned: no record is stamped later.
    newest: u64,
}

/// A stream name the store accepts: a metadata stream's may be longer by its prefix, so that
/// every stream can have metadata.
fn valid_name(name: &str) -> bool {
    let max = if name.starts_with(METADATA_STREAM_PREFIX) {
        MAX_STREAM_NAME_LEN + METADATA_STREAM_PREFIX.len()
    } else {
        MAX_STREAM_NAME_LEN
    };
    !name.is_empty() && name.len() <= max
}

/// A category or event type name the store reads.
fn valid_key(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_STREAM_NAME_LEN
}

/// Bytes a record takes in the log (FORMAT.md, "Records").
fn record_len(e: &MEv) -> u64 {
    let raw = 56 + e.stream.len() + e.event_type.len() + e.data.len() + e.metadata.len() + 4;
    raw.div_ceil(8) as u64 * 8
}

impl Model {
    fn new() -> Model {
        Model {
            all: Vec::new(),
            order: Vec::new(),
            streams: HashMap::new(),
            md: HashMap::new(),
            head: 64,
            newest: 0,
        }
    }

    fn stream(&self, name: &str) -> &[usize] {
        self.streams.get(name).map_or(&[], |v| v.as_slice())
    }

    fn len(&self, name: &str) -> u64 {
        self.stream(name).len() as u64
    }

    fn version(&self, name: &str) -> Option<u64> {
        self.len(name).checked_sub(1)
    }

    fn tombstoned(&self, name: &str) -> bool {
        self.md.get(name).is_some_and(|md| md.tombstoned)
    }

    /// The first event number of `name` a reader sees. A metadata stream shows its newest
    /// event (the metadata in force); any other stream what its metadata leaves.
    fn first_visible(&self, name: &str) -> u64 {
        let len = self.len(name);
        if name.starts_with(METADATA_STREAM_PREFIX) {
            return len.saturating_sub(1);
        }
        match self.md.get(name) {
            None => 0,
            Some(md) if md.tombstoned => len,
            Some(md) => {
                let mut first = md.truncate_before.unwrap_or(0);
                if let Some(c) = md.max_count {
                    first = first.max(len.saturating_sub(c));
                }
                first.min(len)
            }
        }
    }

    /// Whether `$all`, stream, category and event-type reads leave event `i` out. The only ages
    /// the fuzzer sets are 0 (every event is older: see [`settle`]) and ones no event of a run
    /// reaches.
    fn hidden(&self, i: usize) -> bool {
        let e = &self.all[i];
        e.removed
            || e.number < self.first_visible(&e.stream)
            || self
                .md
                .get(&e.stream)
                .is_some_and(|md| md.max_age_secs == Some(0))
    }

    fn result_at(&self, name: &str, last: Option<u64>) -> AppendResult {
        AppendResult {
            version: last,
            position: last.map(|k| Position(self.all[self.stream(name)[k as usize]].position)),
        }
    }

    /// The expected-version rules of `Store::append`, written out: a tombstoned stream takes
    /// nothing; `NoStream` holds on a soft-deleted stream; a retry is recognised by the ids of
    /// events compaction left (a removed event's id went with it).
    fn plan(&self, w: &StreamWrite) -> Result<Plan, Expect> {
        if self.tombstoned(&w.stream) {
            return Err(Expect::Deleted {
                stream: w.stream.clone(),
            });
        }
        let floor = self
            .md
            .get(&w.stream)
            .and_then(|md| md.truncate_before)
            .unwrap_or(0);
        let ids: Vec<Option<EventId>> = self
            .stream(&w.stream)
            .iter()
            .map(|&i| Some(&self.all[i]).filter(|e| !e.removed).and_then(|e| e.id))
            .collect();
        let count = ids.len() as u64;
        let actual = count.checked_sub(1);
        let wrong = || Expect::Wrong {
            stream: w.stream.clone(),
            actual,
        };
        let len = w.events.len() as u64;
        if len == 0 {
            let ok = match w.expected {
                ExpectedVersion::Any => true,
                ExpectedVersion::NoStream => count <= floor,
                ExpectedVersion::StreamExists => actual.is_some(),
                ExpectedVersion::Exact(n) => actual == Some(n),
            };
            return if ok {
                Ok(Plan::Done(self.result_at(&w.stream, actual)))
            } else {
                Err(wrong())
            };
        }
        let retry_from = |start: u64| {
            let matches = start + len <= count
                && w.events
                    .iter()
                    .zip(&ids[start as usize..])
                    .all(|(e, id)| Some(e.id()) == *id);
            if matches {
                Ok(Plan::Done(self.result_at(&w.stream, Some(start + len - 1))))
            } else {
                Err(wrong())
            }
        };
        match w.expected {
            ExpectedVersion::Exact(n) if actual == Some(n) => Ok(Plan::Write(count)),
            ExpectedVersion::Exact(n) if actual.is_some_and(|a| a > n) => retry_from(n + 1),
            ExpectedVersion::Exact(_) => Err(wrong()),
            ExpectedVersion::NoStream if count <= floor => Ok(Plan::Write(count)),
            ExpectedVersion::NoStream => retry_from(floor),
            ExpectedVersion::StreamExists if actual.is_none() => Err(wrong()),
            ExpectedVersion::Any | ExpectedVersion::StreamExists => {
                let first = Some(w.events[0].id());
                match ids.iter().rposition(|id| *id == first) {
                    Some(k) => retry_from(k as u64),
                    None => Ok(Plan::Write(count)),
                }
            }
        }
    }

    /// Checks a batch as the store does: input first, then each write in turn.
    fn check(&self, writes: &[StreamWrite]) -> Result<Vec<Plan>, Expect> {
        for (i, w) in writes.iter().enumerate() {
            if !valid_name(&w.stream) {
                return Err(Expect::Invalid);
            }
            if writes[..i].iter().any(|o| o.stream == w.stream) {
                return Err(Expect::Invalid);
            }
            for e in &w.events {
                if e.event_type().is_empty() || e.event_type().len() > MAX_EVENT_TYPE_LEN {
                    return Err(Expect::Invalid);
                }
                let size =
                    (w.stream.len() + e.event_type().len() + e.data().len() + e.metadata().len())
                        as u64;
                if size > OPS_MAX_EVENT {
                    return Err(Expect::TooLarge { size });
                }
            }
        }
        writes.iter().map(|w| self.plan(w)).collect()
    }

    /// What `delete_stream`/`tombstone_stream` of `name` expecting `expected` does: the
    /// metadata it writes, or its error.
    fn end_stream(
        &self,
        name: &str,
        expected: ExpectedVersion,
        tombstone: bool,
    ) -> Result<StreamMetadata, Expect> {
        self.check_target(name)?;
        if self.tombstoned(name) {
            return Err(Expect::Deleted {
                stream: name.to_string(),
            });
        }
        let len = self.len(name);
        let current = self.md.get(name).cloned().unwrap_or_default();
        let floor = current.truncate_before.unwrap_or(0);
        let holds = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => len <= floor,
            ExpectedVersion::StreamExists => len > 0,
            ExpectedVersion::Exact(n) => len == n.saturating_add(1),
        };
        if !holds {
            return Err(Expect::Wrong {
                stream: name.to_string(),
                actual: len.checked_sub(1),
            });
        }
        let mut md = current;
        md.truncate_before = Some(len.max(floor));
        md.tombstoned = tombstone;
        Ok(md)
    }

    /// What `set_stream_metadata` of `name` expecting `expected` (of the metadata stream) does.
    fn set_metadata(&self, name: &str, expected: ExpectedVersion) -> Result<(), Expect> {
        self.check_target(name)?;
        if self.tombstoned(name) {
            return Err(Expect::Deleted {
                stream: name.to_string(),
            });
        }
        let md_stream = metadata_stream(name);
        let actual = self.version(&md_stream);
        // The store's metadata events have random ids, so no retry ever matches one.
        let holds = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual.is_none(),
            ExpectedVersion::StreamExists => actual.is_some(),
            ExpectedVersion::Exact(n) => actual == Some(n),
        };
        if holds {
            Ok(())
        } else {
            Err(Expect::Wrong {
                stream: md_stream,
                actual,
            })
        }
    }

    /// The checks of a name that metadata is written for.
    fn check_target(&self, name: &str) -> Result<(), Expect> {
        if !valid_name(name) {
            return Err(Expect::Invalid);
        }
        if name.starts_with(SYSTEM_PREFIX) {
            return Err(Expect::Reserved);
        }
        Ok(())
    }

    /// Places a batch's new events, written between the clock readings `clock`, by their record
    /// lengths backward from the head the append left; adds them to the model.
    fn push(&mut self, store: &Store, mut new: Vec<MEv>, clock: (u64, u64)) {
        if new.is_empty() {
            assert_eq!(store.head().0, self.head, "head moved without a write");
            return;
        }
        let head = store.head().0;
        let mut next = head;
        for e in new.iter_mut().rev() {
            e.next = next;
            e.position = next - record_len(e);
            e.ts = clock;
            next = e.position;
        }
        assert!(
            next >= self.head,
            "a batch ending at {head} would start at {next}, before the old head {}",
            self.head
        );
        self.head = head;
        self.newest = clock.1;
        for e in new {
            if !self.streams.contains_key(&e.stream) {
                self.order.push(e.stream.clone());
            }
            self.streams
                .entry(e.stream.clone())
                .or_default()
                .push(self.all.len());
            self.all.push(e);
        }
    }

    /// Compares event `i` with what a read returned; learns what the model did not know (a
    /// metadata event's id, the exact timestamp).
    fn agree(&mut self, i: usize, got: &Ev, what: &str) {
        let e = &mut self.all[i];
        let want = (
            &e.stream,
            &e.event_type,
            e.number,
            e.position,
            e.next,
            &e.data,
            &e.metadata,
        );
        let have = (
            &got.stream,
            &got.event_type,
            got.number,
            got.position,
            got.next,
            &got.data,
            &got.metadata,
        );
        assert_eq!(have, want, "{what}");
        match e.id {
            Some(id) => assert_eq!(got.id, id, "{what}: id"),
            None => e.id = Some(got.id),
        }
        assert!(
            (e.ts.0..=e.ts.1).contains(&got.timestamp),
            "{what}: timestamp {} outside the append's {:?}",
            got.timestamp,
            e.ts
        );
        e.ts = (got.timestamp, got.timestamp);
    }

    /// Compares a read's events with the model's events `want`, in that order.
    fn agree_all(&mut self, want: &[usize], got: &[Ev], what: &str) {
        let have: Vec<(&str, u64)> = got.iter().map(|e| (e.stream.as_str(), e.number)).collect();
        let expected: Vec<(&str, u64)> = want
            .iter()
            .map(|&i| (self.all[i].stream.as_str(), self.all[i].number))
            .collect();
        assert_eq!(have, expected, "{what}");
        for (&i, e) in want.iter().zip(got) {
            self.agree(i, e, what);
        }
    }

    fn visible(&self) -> Vec<usize> {
        (0..self.all.len()).filter(|&i| !self.hidden(i)).collect()
    }
}

/// Waits until the clock is past every record's timestamp, so that `max_age_secs: 0` hides all
/// of a stream's events, exactly (a record stamped in the same microsecond as a read would be
/// shown). A microsecond or so.
fn settle(m: &Model) {
    while now_micros() <= m.newest {
        std::hint::spin_loop();
    }
}

fn classify_err(e: Error) -> Expect {
    match e {
        Error::WrongExpectedVersion { stream, actual, .. } => Expect::Wrong { stream, actual },
        Error::InvalidInput(_) => Expect::Invalid,
        Error::EventTooLarge { size, .. } => Expect::TooLarge { size },
        Error::StreamDeleted { stream } => Expect::Deleted { stream },
        Error::ReservedName { .. } => Expect::Reserved,
        e => panic!("failed unexpectedly: {e}"),
    }
}

fn classify(r: Result<Vec<AppendResult>, Error>) -> Expect {
    match r {
        Ok(v) => Expect::Ok(v),
        Err(e) => classify_err(e),
    }
}

/// A store under test, with the directory it lives in.
struct Subject {
    dir: tempfile::TempDir,
    store: Option<Store>,
    options: Options,
}

impl Subject {
    fn store(&self) -> &Store {
        self.store.as_ref().expect("open store")
    }
}

fn ops_options(b: u8) -> Options {
    // Mostly `None`: an fsync per append would slow the fuzzer down a lot.
    let durability = match b % 8 {
        1 => Durability::Sync,
        2 => Durability::Buffered(Duration::from_millis(2)),
        _ => Durability::None,
    };
    let segment_size = [4096, 3 * 4096, 1 << 16][usize::from(b / 8) % 3];
    Options::default()
        .durability(durability)
        .segment_size(segment_size)
        .max_event_size(OPS_MAX_EVENT)
}

const OPS_STREAMS: [&str; 4] = ["a", "b", "account-42", "c"];

/// Event types the `ops` programs write, and the one the store writes metadata with.
const OPS_TYPES: [&str; 4] = ["Deposited", "Withdrawn", "T", METADATA_EVENT_TYPE];

fn pick_stream(b: u8) -> String {
    match b % 16 {
        15 => "L".repeat(MAX_STREAM_NAME_LEN),
        14 if b >= 128 => String::new(),
        14 => "L".repeat(MAX_STREAM_NAME_LEN + 1),
        k => OPS_STREAMS[usize::from(k) % OPS_STREAMS.len()].to_string(),
    }
}

/// A stream to read: one of [`pick_stream`]'s, or its metadata stream.
fn pick_read(b: u8) -> String {
    let name = pick_stream(b);
    if b % 32 >= 16 && b < 128 {
        metadata_stream(&name)
    } else {
        name
    }
}

/// A stream to delete or write metadata for: one of [`pick_stream`]'s, or a reserved name.
fn pick_target(b: u8) -> String {
    if b >= 248 {
        metadata_stream("a")
    } else {
        pick_stream(b)
    }
}

/// An expected version near `version`.
fn gen_expected(input: &mut Input<'_>, version: Option<u64>) -> ExpectedVersion {
    match input.byte() % 7 {
        0 | 1 => ExpectedVersion::Any,
        2 => ExpectedVersion::NoStream,
        3 => ExpectedVersion::StreamExists,
        4 => version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact),
        5 => ExpectedVersion::Exact(
            version
                .unwrap_or(0)
                .saturating_sub(u64::from(input.byte() % 3)),
        ),
        _ => ExpectedVersion::Exact(u64::from(input.byte() % 8)),
    }
}

/// Metadata drawn from the input, for a stream of `len` events: limits around its length, an
/// age of 0 (hides everything) or one nothing reaches, now and then a tombstone, and custom
/// keys of every JSON kind.
fn gen_metadata(input: &mut Input<'_>, len: u64) -> StreamMetadata {
    let b = input.byte();
    let max_count = (b & 1 != 0).then(|| u64::from(input.byte() % 4));
    let truncate_before = (b & 2 != 0).then(|| u64::from(input.byte()) % (len + 3));
    let max_age_secs = match (b >> 2) % 8 {
        1 => Some(0),
        2 => Some(3600),
        3 => Some(u64::MAX),
        _ => None,
    };
    let mut custom = std::collections::BTreeMap::new();
    match (b >> 5) % 4 {
        1 => {
            custom.insert("owner".to_string(), serde_json::json!("fuzz"));
        }
        2 => {
            let n = input.byte();
            custom.insert(
                "n".to_string(),
                serde_json::json!({ "n": n, "neg": -i64::from(n), "list": [1, "two", null, true] }),
            );
        }
        3 => {
            custom.insert(
                "quote\"\\\u{0}é".to_string(),
                serde_json::json!("\u{1F600}\n"),
            );
            custom.insert(String::new(), serde_json::Value::Null);
        }
        _ => {}
    }
    StreamMetadata {
        max_count,
        max_age_secs,
        truncate_before,
        tombstoned: b == 255,
        custom,
    }
}

/// Base of the segment being written: the newest segment file's. Compaction leaves it alone.
fn active_base(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .expect("list store directory")
        .filter_map(|e| {
            let name = e.expect("directory entry").file_name();
            let name = name.to_str()?;
            let base = name.strip_suffix(".seg")?;
            (base.len() == 20).then(|| base.parse::<u64>().ok())?
        })
        .max()
        .expect("a segment file")
}

/// Interprets the input as a program of operations on a store and on [`Model`], and checks that
/// they agree after every step. Ops (first byte of each, modulo 18): append, retry the last
/// append, multi-append, read a stream forward / backward, read `$all` forward / backward, read
/// one event, compare everything, reopen, reopen after a simulated crash (the files copied while
/// the store is open), append with bad input, soft delete, tombstone, write metadata, seal,
/// compact, read a category or an event type.
pub fn ops(data: &[u8]) {
    let mut input = Input { data, at: 0 };
    let options = ops_options(input.byte());
    let dir = tempdir();
    let store = Store::open(dir.path(), options.clone()).expect("open a new store");
    let mut s = Subject {
        dir,
        store: Some(store),
        options,
    };
    let mut m = Model::new();
    let mut last: Option<Vec<StreamWrite>> = None;
    let mut counter = 0u32;
    let mut steps = 0;
    while !input.done() && steps < 200 {
        steps += 1;
        match input.byte() % 18 {
            0 => {
                let w = gen_write(&mut input, &m, &mut counter);
                let writes = vec![w];
                let clock = now_micros();
                let got = s
                    .store()
                    .append(
                        &writes[0].stream,
                        writes[0].expected,
                        writes[0].events.clone(),
                    )
                    .map(|r| vec![r]);
                apply(&s, &mut m, &writes, got, (clock, now_micros()));
                last = Some(writes);
            }
            1 => {
                if let Some(writes) = last.clone() {
                    let clock = now_micros();
                    let got = s.store().append_multi(writes.clone());
                    apply(&s, &mut m, &writes, got, (clock, now_micros()));
                }
            }
            2 => {
                let n = input.byte() % 4;
                let writes: Vec<StreamWrite> = (0..n)
                    .map(|_| gen_write(&mut input, &m, &mut counter))
                    .collect();
                let clock = now_micros();
                let got = s.store().append_multi(writes.clone());
                apply(&s, &mut m, &writes, got, (clock, now_micros()));
                last = Some(writes);
            }
            3 | 4 => {
                let forward = input.byte().is_multiple_of(2);
                let name = pick_read(input.byte());
                let len = m.len(&name);
                let from = match input.byte() % 4 {
                    0 => 0,
                    1 => u64::MAX,
                    _ => u64::from(input.byte()) % (len + 3),
                };
                let max = match input.byte() % 4 {
                    0 => usize::MAX,
                    k => usize::from(k) * usize::from(input.byte() % 5),
                };
                check_stream_read(s.store(), &mut m, &name, from, max, forward);
            }
            5 | 6 => {
                let forward = input.byte().is_multiple_of(2);
                let from = input.byte();
                let max = match input.byte() % 4 {
                    0 => usize::MAX,
                    k => usize::from(k) * usize::from(input.byte() % 5),
                };
                check_all_read(s.store(), &mut m, from, max, forward);
            }
            7 => {
                let name = pick_read(input.byte());
                let n = u64::from(input.byte() % 16);
                settle(&m);
                let got = s.store().read_event(&name, n);
                let shown = m
                    .stream(&name)
                    .get(n as usize)
                    .copied()
                    .filter(|&i| !m.hidden(i));
                match got {
                    Ok(e) => {
                        let i = shown.unwrap_or_else(|| panic!("event {n} of `{name}` read"));
                        m.agree(i, &Ev::from(&e), "read_event");
                    }
                    Err(Error::EventNotFound {
                        stream,
                        event_number,
                    }) => {
                        assert!(shown.is_none(), "event {n} of `{name}` not found");
                        assert!(!m.tombstoned(&name));
                        assert_eq!((stream, event_number), (name, n));
                    }
                    Err(Error::StreamDeleted { stream }) => {
                        assert!(m.tombstoned(&name), "`{name}` deleted");
                        assert_eq!(stream, name);
                    }
                    Err(Error::InvalidInput(_)) => assert!(!valid_name(&name)),
                    Err(e) => panic!("read_event: {e}"),
                }
            }
            8 => check_model(s.store(), &mut m),
            9 => {
                s.store.take().expect("store").close().expect("close");
                s.options = ops_options(input.byte());
                s.store = Some(
                    Store::open(s.dir.path(), s.options.clone())
                        .unwrap_or_else(|e| panic!("reopen failed: {e}")),
                );
                check_model(s.store(), &mut m);
            }
            10 => {
                // A crash: what the files hold now, without close (no index save, no sync; every
                // append returned, so its bytes were written).
                let crashed = tempdir();
                copy_store_files(s.dir.path(), crashed.path());
                s.store.take().expect("store").close().expect("close");
                s.dir = crashed;
                s.options = ops_options(input.byte());
                s.store = Some(
                    Store::open(s.dir.path(), s.options.clone())
                        .unwrap_or_else(|e| panic!("reopen after crash failed: {e}")),
                );
                check_model(s.store(), &mut m);
            }
            11 => {
                let mut w = gen_write(&mut input, &m, &mut counter);
                match input.byte() % 3 {
                    0 => w.stream = String::new(),
                    1 => w.events.push(EventData::new("", "no type")),
                    _ => w.events.push(EventData::new(
                        "Big",
                        vec![7u8; OPS_MAX_EVENT as usize + 1 - w.stream.len() - 3],
                    )),
                }
                let writes = vec![w];
                let clock = now_micros();
                let got = s.store().append_multi(writes.clone());
                apply(&s, &mut m, &writes, got, (clock, now_micros()));
            }
            op @ (12 | 13) => {
                let tombstone = op == 13;
                let name = pick_target(input.byte());
                let expected = gen_expected(&mut input, m.version(&name));
                let clock = now_micros();
                let got = if tombstone {
                    s.store().tombstone_stream(&name, expected)
                } else {
                    s.store().delete_stream(&name, expected)
                };
                let clock = (clock, now_micros());
                match (got, m.end_stream(&name, expected, tombstone)) {
                    (Ok(()), Ok(md)) => write_metadata(&s, &mut m, &name, md, clock),
                    (Err(e), Err(want)) => {
                        assert_eq!(classify_err(e), want, "ending `{name}` at {expected:?}")
                    }
                    (got, want) => panic!("ending `{name}` at {expected:?}: {got:?}, not {want:?}"),
                }
                check_stream_read(s.store(), &mut m, &name, 0, usize::MAX, true);
            }
            14 => {
                let name = pick_target(input.byte());
                let md = gen_metadata(&mut input, m.len(&name));
                let md_stream = metadata_stream(&name);
                let expected = gen_expected(&mut input, m.version(&md_stream));
                let clock = now_micros();
                let got = s.store().set_stream_metadata(&name, expected, md.clone());
                let clock = (clock, now_micros());
                match (got, m.set_metadata(&name, expected)) {
                    (Ok(r), Ok(())) => {
                        write_metadata(&s, &mut m, &name, md, clock);
                        assert_eq!(r, m.result_at(&md_stream, m.version(&md_stream)));
                    }
                    (Err(e), Err(want)) => {
                        assert_eq!(
                            classify_err(e),
                            want,
                            "metadata of `{name}` at {expected:?}"
                        )
                    }
                    (got, want) => {
                        panic!("metadata of `{name}` at {expected:?}: {got:?}, not {want:?}")
                    }
                }
                check_stream_read(s.store(), &mut m, &name, 0, usize::MAX, true);
            }
            15 => {
                // Whether the segment being written holds anything is whether an event lies at
                // or after its base.
                let base = active_base(s.dir.path());
                let holds = m.all.iter().any(|e| e.position >= base);
                let sealed = s.store().seal().expect("seal");
                assert_eq!(sealed, holds, "seal with the active segment at {base}");
                if sealed {
                    // The head moves to where the new segment's first record goes.
                    let new_base = active_base(s.dir.path());
                    assert!(new_base >= m.head, "a new segment at {new_base}");
                    m.head = new_base + 64;
                }
                assert_eq!(s.store().head().0, m.head, "head after a seal");
            }
            16 => compact(&s, &mut m),
            _ => {
                let b = input.byte();
                let from = match input.byte() % 4 {
                    0 | 1 => 0,
                    _ => u64::from(input.byte() % 16),
                };
                let max = match input.byte() % 4 {
                    0 => usize::MAX,
                    k => usize::from(k) * usize::from(input.byte() % 5),
                };
                let key = if b.is_multiple_of(2) {
                    Key::Category(category_of(&pick_read(b / 2)).to_string())
                } else {
                    Key::Type(OPS_TYPES[usize::from(b / 2) % OPS_TYPES.len()].to_string())
                };
                check_key_read(s.store(), &mut m, &key, from, max);
            }
        }
    }
    check_model(s.store(), &mut m);
    s.store.take().expect("store").close().expect("close");
}

/// Writes the metadata event a delete, tombstone or metadata write made into the model.
fn write_metadata(s: &Subject, m: &mut Model, name: &str, md: StreamMetadata, clock: (u64, u64)) {
    let stream = metadata_stream(name);
    let e = MEv {
        number: m.len(&stream),
        stream,
        event_type: METADATA_EVENT_TYPE.to_string(),
        position: 0,
        next: 0,
        id: None,
        ts: clock,
        // The store writes the metadata as serde serialises it (FORMAT.md).
        data: serde_json::to_vec(&md).expect("metadata as JSON"),
        metadata: Vec::new(),
        removed: false,
    };
    m.push(s.store(), vec![e], clock);
    m.md.insert(name.to_string(), md);
}

/// Compacts, and removes from the model what the store must have removed: every event readers
/// do not see that lies in a sealed segment (before the base of the segment being written).
fn compact(s: &Subject, m: &mut Model) {
    settle(m);
    let base = active_base(s.dir.path());
    let report = s.store().compact().expect("compact");
    let mut removed = 0;
    for i in 0..m.all.len() {
        if !m.all[i].removed && m.hidden(i) && m.all[i].position < base {
            m.all[i].removed = true;
            removed += 1;
        }
    }
    assert_eq!(
        report.events_removed, removed,
        "events compaction removed below {base}"
    );
    assert_eq!(active_base(s.dir.path()), base, "compaction rolled the log");
}

/// One stream write drawn from the input: a stream, an expected version near the model's, and
/// up to four events whose ids sometimes repeat (to exercise idempotent retries).
fn gen_write(input: &mut Input<'_>, m: &Model, counter: &mut u32) -> StreamWrite {
    let stream = pick_stream(input.byte());
    let expected = gen_expected(input, m.version(&stream));
    let n = input.byte() % 5;
    let events = (0..n)
        .map(|_| {
            *counter += 1;
            let idb = input.byte();
            let id = if idb < 48 {
                EventId([idb % 6; 16])
            } else {
                let mut id = [0xEEu8; 16];
                id[..4].copy_from_slice(&counter.to_le_bytes());
                EventId(id)
            };
            let lb = input.byte();
            let len = if lb < 200 {
                usize::from(lb)
            } else {
                usize::from(lb - 199) * 180
            };
            let data: Vec<u8> = (0..len).map(|i| (i as u32 ^ *counter) as u8).collect();
            let meta = vec![0x4Du8; [0, 1, 7, 32][usize::from(input.byte() % 4)]];
            let ty = OPS_TYPES[usize::from(lb % 3)];
            EventData::new(ty, data).with_id(id).with_metadata(meta)
        })
        .collect();
    StreamWrite::new(stream, expected, events)
}

/// Compares an append's outcome with the model's, and applies it to the model.
fn apply(
    s: &Subject,
    m: &mut Model,
    writes: &[StreamWrite],
    got: Result<Vec<AppendResult>, Error>,
    clock: (u64, u64),
) {
    let got = classify(got);
    let plans = match m.check(writes) {
        Ok(plans) => plans,
        Err(want) => {
            assert_eq!(got, want, "append outcome for {writes:?}");
            assert_eq!(s.store().head().0, m.head, "head moved by a failed append");
            return;
        }
    };
    let Expect::Ok(results) = got else {
        panic!("append failed with {got:?} where the model accepts {writes:?}");
    };
    assert_eq!(results.len(), writes.len());
    let mut new: Vec<MEv> = Vec::new();
    for (w, plan) in writes.iter().zip(&plans) {
        if let Plan::Write(first) = plan {
            for (k, e) in w.events.iter().enumerate() {
                new.push(MEv {
                    stream: w.stream.clone(),
                    event_type: e.event_type().to_string(),
                    number: first + k as u64,
                    position: 0,
                    next: 0,
                    id: Some(e.id()),
                    ts: clock,
                    data: e.data().to_vec(),
                    metadata: e.metadata().to_vec(),
                    removed: false,
                });
            }
        }
    }
    let written = new.len();
    m.push(s.store(), new, clock);
    for ((w, plan), got) in writes.iter().zip(&plans).zip(&results) {
        let want = match plan {
            Plan::Done(r) => *r,
            Plan::Write(_) => m.result_at(&w.stream, m.version(&w.stream)),
        };
        assert_eq!(*got, want, "result for stream `{}`", w.stream);
    }
    if written > 0 {
        // The tail of `$all`, as far as the new events reach.
        check_all_read(s.store(), m, 1, written + 1, false);
    }
}

fn check_stream_read(store: &Store, m: &mut Model, name: &str, from: u64, max: usize, fwd: bool) {
    settle(m);
    let got = if fwd {
        store.read_stream_forward(name, from, max)
    } else {
        store.read_stream_backward(name, from, max)
    };
    let what = format!("read `{name}` from {from} max {max} forward={fwd}");
    let got: Vec<Ev> = match got {
        Ok(events) => {
            assert!(!m.tombstoned(name), "{what}: tombstoned, but read");
            events.map(|r| Ev::from(&r.expect("stream read"))).collect()
        }
        Err(Error::InvalidInput(_)) => {
            assert!(!valid_name(name), "{what}: refused");
            return;
        }
        Err(Error::StreamDeleted { stream }) => {
            assert!(m.tombstoned(name), "{what}: deleted");
            assert_eq!(stream, name);
            return;
        }
        Err(e) => panic!("{what}: {e}"),
    };
    let shown: Vec<usize> = m
        .stream(name)
        .iter()
        .copied()
        .filter(|&i| !m.hidden(i))
        .collect();
    let want: Vec<usize> = if fwd {
        shown
            .into_iter()
            .filter(|&i| m.all[i].number >= from)
            .take(max)
            .collect()
    } else {
        let start = from.min(m.len(name).saturating_sub(1));
        shown
            .into_iter()
            .rev()
            .filter(|&i| m.all[i].number <= start)
            .take(max)
            .collect()
    };
    m.agree_all(&want, &got, &what);
}

fn check_all_read(store: &Store, m: &mut Model, pick: u8, max: usize, fwd: bool) {
    settle(m);
    let n = m.all.len();
    // Where to start, and the index of the first event a forward read may yield (for a backward
    // read: one past the first event it may yield).
    let (from, split, valid) = match pick % 6 {
        0 => (Position::START, 0, true),
        1 => (Position::END, n, true),
        2 if n > 0 => {
            let i = usize::from(pick / 6) % n;
            (Position(m.all[i].position), i, true)
        }
        3 if n > 0 => {
            let i = usize::from(pick / 6) % n;
            (Position(m.all[i].next), i + 1, true)
        }
        4 if n > 0 && !m.all[usize::from(pick / 6) % n].removed => {
            let i = usize::from(pick / 6) % n;
            (Position(m.all[i].position + 1), 0, false)
        }
        5 => (Position(m.head + 8), 0, false),
        _ => (Position::START, 0, true),
    };
    let got = if fwd {
        store.read_all_forward(from, max)
    } else {
        store.read_all_backward(from, max)
    };
    let what = format!("$all from {from:?} max {max} forward={fwd}");
    let events = match got {
        Ok(events) => {
            assert!(valid, "{what}: accepted");
            events
        }
        Err(Error::InvalidPosition(p)) => {
            assert!(!valid, "{what}: refused");
            assert_eq!(p, from);
            return;
        }
        Err(e) => panic!("{what}: {e}"),
    };
    let got: Vec<Ev> = events.map(|r| Ev::from(&r.expect("$all read"))).collect();
    let visible = m.visible();
    let want: Vec<usize> = if fwd {
        visible
            .into_iter()
            .filter(|&i| i >= split)
            .take(max)
            .collect()
    } else {
        visible
            .into_iter()
            .rev()
            .filter(|&i| i < split)
            .take(max)
            .collect()
    };
    m.agree_all(&want, &got, &what);
}

/// A category or an event type.
#[derive(Debug)]
enum Key {
    Category(String),
    Type(String),
}

impl Key {
    fn holds(&self, e: &MEv) -> bool {
        match self {
            Key::Category(c) => category_of(&e.stream) == c,
            Key::Type(t) => e.event_type == *t,
        }
    }
}

/// Reads a category or event type from its `from`-th entry (hidden and removed events keep
/// their entry numbers) and compares with the model; its length too.
fn check_key_read(store: &Store, m: &mut Model, key: &Key, from: u64, max: usize) {
    settle(m);
    let entries: Vec<usize> = (0..m.all.len()).filter(|&i| key.holds(&m.all[i])).collect();
    let (got, len, valid) = match key {
        Key::Category(c) => (
            store.read_category(c, from, max),
            store.category_len(c),
            valid_key(c) && !c.contains('-'),
        ),
        Key::Type(t) => (
            store.read_event_type(t, from, max),
            store.event_type_len(t),
            valid_key(t),
        ),
    };
    assert_eq!(len.expect("key length"), entries.len() as u64, "{key:?}");
    let what = format!("{key:?} from {from} max {max}");
    let got: Vec<Ev> = match got {
        Ok(events) => {
            assert!(valid, "{what}: read");
            events.map(|r| Ev::from(&r.expect("key read"))).collect()
        }
        Err(Error::InvalidInput(_)) => {
            assert!(!valid, "{what}: refused");
            return;
        }
        Err(e) => panic!("{what}: {e}"),
    };
    let want: Vec<usize> = entries
        .into_iter()
        .enumerate()
        .filter(|&(k, i)| k as u64 >= from && !m.hidden(i))
        .map(|(_, i)| i)
        .take(max)
        .collect();
    m.agree_all(&want, &got, &what);
}

/// Compares everything the store shows with the model: `$all` both ways, every stream both
/// ways, versions, metadata, categories, event types, the stream list and the head.
fn check_model(store: &Store, m: &mut Model) {
    check_all_read(store, m, 0, usize::MAX, true);
    check_all_read(store, m, 1, usize::MAX, false);
    let mut order = m.order.clone();
    order.sort();
    assert_eq!(store.streams().unwrap(), order, "streams()");
    let mut names = m.order.clone();
    names.extend(OPS_STREAMS.iter().map(|s| s.to_string()));
    let mut categories: Vec<String> = Vec::new();
    for name in &names {
        check_stream_read(store, m, name, 0, usize::MAX, true);
        check_stream_read(store, m, name, u64::MAX, usize::MAX, false);
        assert_eq!(
            store.stream_version(name).unwrap(),
            m.version(name),
            "{name}"
        );
        if !name.starts_with(SYSTEM_PREFIX) {
            let want = m.md.get(name).map(|md| {
                (
                    m.version(&metadata_stream(name)).expect("version"),
                    md.clone(),
                )
            });
            assert_eq!(
                store.stream_metadata(name).unwrap(),
                want,
                "metadata of {name}"
            );
        }
        let c = category_of(name).to_string();
        if !categories.contains(&c) {
            categories.push(c);
        }
    }
    for c in categories {
        check_key_read(store, m, &Key::Category(c), 0, usize::MAX);
    }
    for t in OPS_TYPES {
        check_key_read(store, m, &Key::Type(t.to_string()), 0, usize::MAX);
    }
    assert_eq!(store.head().0, m.head, "head");
}

// ---------------------------------------------------------------------------------------------
// open_compacted
// ---------------------------------------------------------------------------------------------

/// A small real store, compacted twice (so that some segments carry removed records of an
/// earlier compaction in their tables): its files, which of them are compacted segments, and
/// what it shows.
struct CompactedGolden {
    files: Vec<(String, Vec<u8>)>,
    compacted: Vec<String>,
    events: Vec<Ev>,
}

fn compacted_golden() -> &'static CompactedGolden {
    static GOLDEN: OnceLock<CompactedGolden> = OnceLock::new();
    GOLDEN.get_or_init(|| {
        let dir = tempdir();
        let store = Store::open(dir.path(), options(Recovery::Strict)).expect("open");
        let event = |n: u32, ty: &str| {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&n.to_le_bytes());
            id[15] = 0xC0;
            EventData::new(ty, vec![n as u8; 16 + (n as usize * 29) % 120])
                .with_id(EventId(id))
                .with_metadata(if n.is_multiple_of(5) {
                    vec![7; 4]
                } else {
                    vec![]
                })
        };
        let streams = ["keep-1", "gone-2", "cap-3", "dead-4", "trim-5"];
        let mut n = 0u32;
        for round in 0..40 {
            let s = streams[round % streams.len()];
            let batch: Vec<EventData> = (0..1 + round % 3)
                .map(|k| {
                    n += 1;
                    event(n, ["Opened", "Moved", "Closed"][k % 3])
                })
                .collect();
            store
                .append(s, ExpectedVersion::Any, batch)
                .expect("append");
        }
        store
            .delete_stream("gone-2", ExpectedVersion::Any)
            .expect("delete");
        store
            .tombstone_stream("dead-4", ExpectedVersion::Any)
            .expect("tombstone");
        let md = eventjournal::StreamMetadata {
            max_count: Some(2),
            ..Default::default()
        };
        store
            .set_stream_metadata("cap-3", ExpectedVersion::Any, md)
            .expect("max_count");
        store.seal().expect("seal");
        store.compact().expect("first compaction");
        // More removed from segments compacted already: their tables carry the old entries.
        let md = eventjournal::StreamMetadata {
            truncate_before: Some(4),
            ..Default::default()
        };
        store
            .set_stream_metadata("trim-5", ExpectedVersion::Any, md)
            .expect("truncate_before");
        for _ in 0..6 {
            n += 1;
            store
                .append("keep-1", ExpectedVersion::Any, [event(n, "Late")])
                .expect("append");
        }
        store.seal().expect("seal");
        store.compact().expect("second compaction");
        let (events, clean) = read_tolerantly(&store);
        assert!(clean, "a read of the golden store failed");
        store.close().expect("close");
        let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| {
                let e = e.expect("entry");
                let name = e.file_name().to_string_lossy().into_owned();
                let bytes = fs::read(e.path()).expect("read");
                (name, bytes)
            })
            .filter(|(name, _)| name != "LOCK" && !name.ends_with(".tmp"))
            .collect();
        files.sort();
        let compacted: Vec<String> = files
            .iter()
            .filter(|(n, b)| n.ends_with(".seg") && b.len() >= 64 && le_u32(b, 8) == 2)
            .map(|(n, _)| n.clone())
            .collect();
        assert!(
            compacted.len() >= 2,
            "the golden store should have several compacted segments"
        );
        CompactedGolden {
            files,
            compacted,
            events,
        }
    })
}

/// Damages a compacted segment of a small real store as `data` says, opens the store with
/// `Strict` and with `Salvage`, and reads everything through every read API. Nothing may panic;
/// opening may fail only with `Corrupt` or `UnsupportedVersion`; an undamaged store shows what
/// was written; a store that opened takes an append and reopens.
///
/// `data[0]` is a mode byte, `data[1]` picks the compacted segment:
/// - bit 0: XOR the rest of the input onto the segment, as (offset: u16, byte) triples (else:
///   replace its compaction table with the rest of the input, and its `table_len` to match);
/// - bit 1: then make the header's and the table's checksums valid, and each record's that the
///   records' length chain reaches;
/// - bit 2: delete the index files, so that opening rebuilds them from the log and the tables;
/// - bit 3: cut the segment file to the length `data[2..4]` names (before the rest applies).
pub fn open_compacted(data: &[u8]) {
    let g = compacted_golden();
    let (mode, pick, rest) = match data {
        [] => (0u8, 0u8, &[][..]),
        [m] => (*m, 0, &[][..]),
        [m, p, rest @ ..] => (*m, *p, rest),
    };
    let dir = tempdir();
    for (name, bytes) in &g.files {
        fs::write(dir.path().join(name), bytes).expect("restore golden file");
    }
    let name = &g.compacted[usize::from(pick) % g.compacted.len()];
    let golden = &g.files.iter().find(|(n, _)| n == name).expect("golden").1;
    let mut b = golden.clone();
    let mut rest = rest;
    if mode & 8 != 0 && rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        b.truncate(len);
        rest = &rest[2..];
    }
    if mode & 1 != 0 {
        for t in rest.chunks_exact(3) {
            if b.is_empty() {
                break;
            }
            let at = usize::from(u16::from_le_bytes([t[0], t[1]])) % b.len();
            b[at] ^= t[2];
        }
    } else if !data.is_empty() && b.len() >= 64 {
        let table_at = usize::try_from(le_u64(&b, 40)).unwrap_or(usize::MAX);
        if table_at <= b.len() {
            b.truncate(table_at);
            b.extend_from_slice(rest);
            let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
            b[48..52].copy_from_slice(&len.to_le_bytes());
        }
    }
    if mode & 2 != 0 {
        fix_compacted_checksums(&mut b);
    }
    let untouched = b == *golden && mode & 4 == 0;
    fs::write(dir.path().join(name), &b).expect("write segment");
    if mode & 4 != 0 {
        for (n, _) in &g.files {
            if n.ends_with(".idx") {
                fs::remove_file(dir.path().join(n)).expect("remove index file");
            }
        }
    }
    let mut strict_opened = false;
    for recovery in [Recovery::Strict, Recovery::Salvage] {
        let store = match Store::open(dir.path(), options(recovery)) {
            Ok(store) => store,
            Err(Error::Corrupt { .. } | Error::UnsupportedVersion { .. }) => {
                assert!(!untouched, "the undamaged store did not open");
                continue;
            }
            Err(e) => panic!("opening with {recovery:?} failed with an unexpected error: {e}"),
        };
        let (events, clean) = read_tolerantly(&store);
        if untouched {
            assert!(clean, "a read of the undamaged store failed");
            assert!(events == g.events, "the undamaged store shows other events");
        }
        strict_opened |= recovery == Recovery::Strict;
        store.close().expect("close");
    }
    if !strict_opened {
        return;
    }
    // A store that opened takes an append (to the newest segment, which is not compacted) and
    // opens again.
    for round in 0..2 {
        let store = match Store::open(dir.path(), options(Recovery::Strict)) {
            Ok(store) => store,
            Err(Error::Corrupt { .. }) => {
                assert!(!untouched, "the undamaged store did not reopen");
                return;
            }
            Err(e) => panic!("reopening failed with an unexpected error: {e}"),
        };
        if round == 0 {
            match store.append(
                "fuzz-check",
                ExpectedVersion::Any,
                [EventData::new("Checked", &b"after open"[..])],
            ) {
                Ok(_) | Err(Error::Corrupt { .. }) => {}
                Err(e) => panic!("append after opening failed with an unexpected error: {e}"),
            }
        } else {
            let (events, clean) = read_tolerantly(&store);
            if untouched {
                assert!(clean, "a read of the reopened undamaged store failed");
                assert!(
                    events.len() == g.events.len() + 1 && events[..g.events.len()] == g.events[..],
                    "the reopened undamaged store shows other events"
                );
            }
        }
        store.close().expect("close");
    }
}

/// Whether a read error is one a damaged log may give.
fn damage_error(e: &Error) -> bool {
    matches!(e, Error::Corrupt { .. })
}

/// Reads every event of `got` to the first error, which goes to `check`; an error opening the
/// read goes to `check` too, unless `tolerated` says it is the answer the read may give.
fn drain<I: Iterator<Item = eventjournal::Result<RecordedEvent>>>(
    got: eventjournal::Result<I>,
    tolerated: fn(&Error) -> bool,
    check: &mut dyn FnMut(&Error),
) {
    match got {
        Ok(events) => {
            for r in events {
                if let Err(e) = r {
                    check(&e);
                    break;
                }
            }
        }
        Err(e) if tolerated(&e) => {}
        Err(e) => check(&e),
    }
}

/// Reads `$all` both ways, every stream both ways, every category and the streams' versions and
/// metadata, accepting `Corrupt` anywhere (the log is damaged); returns `$all` forward as far as
/// it read, and whether every read went through.
fn read_tolerantly(store: &Store) -> (Vec<Ev>, bool) {
    let mut clean = true;
    let mut check = |r: &Error| {
        assert!(
            damage_error(r),
            "a read failed with an unexpected error: {r}"
        );
        clean = false;
    };
    let mut forward = Vec::new();
    match store.read_all_forward(Position::START, usize::MAX) {
        Ok(events) => {
            for r in events {
                match r {
                    Ok(e) => forward.push(Ev::from(&e)),
                    Err(e) => {
                        check(&e);
                        break;
                    }
                }
            }
        }
        Err(e) => check(&e),
    }
    drain(
        store.read_all_backward(Position::END, usize::MAX),
        |_| false,
        &mut check,
    );
    for e in forward.iter().step_by(7) {
        for from in [e.position, e.next] {
            drain(
                store.read_all_backward(Position(from), 3),
                |e| matches!(e, Error::InvalidPosition(_)),
                &mut check,
            );
        }
    }
    let names = match store.streams() {
        Ok(names) => names,
        Err(e) => {
            check(&e);
            Vec::new()
        }
    };
    let mut categories: Vec<String> = Vec::new();
    for name in &names {
        if let Some((c, _)) = name.split_once('-') {
            if !categories.iter().any(|x| x == c) {
                categories.push(c.to_string());
            }
        }
        for fwd in [true, false] {
            let got = if fwd {
                store.read_stream_forward(name, 0, usize::MAX)
            } else {
                store.read_stream_backward(name, u64::MAX, usize::MAX)
            };
            drain(
                got,
                |e| matches!(e, Error::InvalidInput(_) | Error::StreamDeleted { .. }),
                &mut check,
            );
        }
        match store.stream_version(name) {
            Ok(_) | Err(Error::InvalidInput(_)) => {}
            Err(e) => check(&e),
        }
        match store.stream_metadata(name) {
            Ok(_) | Err(Error::InvalidInput(_)) => {}
            Err(e) => check(&e),
        }
    }
    for c in &categories {
        drain(
            store.read_category(c, 0, usize::MAX),
            |e| matches!(e, Error::InvalidInput(_)),
            &mut check,
        );
    }
    (forward, clean)
}

/// Makes the checksums of compacted segment `b` valid over whatever it holds: each record's that
/// the length chain from offset 64 reaches up to `table_at`, the table's (if `table_at` and
/// `table_len` put it inside the file), then the header's.
pub fn fix_compacted_checksums(b: &mut [u8]) {
    if b.len() < 64 {
        return;
    }
    let table_at = usize::try_from(le_u64(b, 40)).unwrap_or(usize::MAX);
    let table_len = le_u32(b, 48) as usize;
    let end = b.len().min(table_at);
    let mut off = 64;
    while off + 8 <= end {
        let len = le_u32(b, off) as usize;
        if len < 64 || !len.is_multiple_of(8) || len > end - off {
            break;
        }
        let crc = crc32(&b[off + 8..off + len]);
        b[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
        off += len;
    }
    if let Some(table) = table_at
        .checked_add(table_len)
        .filter(|&e| e <= b.len())
        .map(|e| &b[table_at..e])
    {
        let crc = crc32(table);
        b[52..56].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// The store files of `dir`, sorted by name: every regular file but `LOCK` and temporaries.
fn store_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .expect("list store directory")
        .map(|e| e.expect("directory entry"))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(name, _)| name != "LOCK" && !name.ends_with(".tmp"))
        .map(|(name, path)| {
            let bytes = fs::read(&path).expect("read store file");
            (name, bytes)
        })
        .collect();
    files.sort();
    files
}

/// Writes `files` into `dir`.
fn restore(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (name, bytes) in files {
        fs::write(dir.join(name), bytes).expect("restore golden file");
    }
}

/// XORs `patches` (offset: u16 little-endian, byte) onto `b`, offsets taken modulo its length.
fn xor_patches(b: &mut [u8], patches: &[u8]) {
    for t in patches.chunks_exact(3) {
        if b.is_empty() {
            return;
        }
        let at = usize::from(u16::from_le_bytes([t[0], t[1]])) % b.len();
        b[at] ^= t[2];
    }
}

// ---------------------------------------------------------------------------------------------
// open_ids, open_manifest
// ---------------------------------------------------------------------------------------------

/// Sealed segments of the tables golden store: the first four's id tables are merged into one
/// of level 1, the next two keep tables of level 0.
const TABLES_SEALED: usize = 6;

/// A small real store with every sealed segment's id table written (one merged), closed cleanly
/// with a manifest: its files, what it shows, and the batches written (to send again as
/// retries).
struct TablesGolden {
    /// The store's files, the manifest left out.
    files: Vec<(String, Vec<u8>)>,
    /// The manifest its clean close wrote (stamps of the directory it was written in).
    manifest: Vec<u8>,
    events: Vec<Ev>,
    /// Each batch appended, with what the append returned.
    batches: Vec<(String, Vec<EventData>, AppendResult)>,
}

/// The file names of `files` with extension `ext`, in order.
fn named<'a>(files: &'a [(String, Vec<u8>)], ext: &str) -> Vec<&'a String> {
    files
        .iter()
        .map(|(n, _)| n)
        .filter(|n| n.ends_with(ext))
        .collect()
}

/// `(base, end, level)` of each id table file in `dir`, by base; `None` while one is being
/// written (a temporary file) or does not read.
fn id_tables_in(dir: &Path) -> Option<Vec<(u64, u64, u32)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).ok()? {
        let e = e.ok()?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            return None;
        }
        if name.ends_with(".ids") {
            let b = fs::read(e.path()).ok()?;
            if b.len() < 64 {
                return None;
            }
            out.push((le_u64(&b, 16), le_u64(&b, 24), le_u32(&b, 40)));
        }
    }
    out.sort_unstable();
    Some(out)
}

/// Whether `tables` cover the log up to `active` (the newest segment's base), one after the
/// other, with no four adjacent tables of one level left to merge.
fn tables_settled(tables: &[(u64, u64, u32)], active: u64) -> bool {
    let mut at = 0;
    for &(base, end, _) in tables {
        if base != at {
            return false;
        }
        at = end;
    }
    at == active && !tables.windows(4).any(|w| w.iter().all(|t| t.2 == w[0].2))
}

fn tables_golden() -> &'static TablesGolden {
    static GOLDEN: OnceLock<TablesGolden> = OnceLock::new();
    GOLDEN.get_or_init(|| {
        let dir = tempdir();
        let store = Store::open(dir.path(), options(Recovery::Strict)).expect("open");
        let segments = |dir: &Path| {
            fs::read_dir(dir)
                .expect("list store directory")
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                })
                .count()
        };
        let mut batches = Vec::new();
        let mut n = 0u32;
        let mut event = |ty: &str, id: Option<EventId>| {
            n += 1;
            let id = id.unwrap_or_else(|| {
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&n.to_le_bytes());
                id[15] = 0x1D;
                EventId(id)
            });
            EventData::new(ty, vec![n as u8; 8 + (n as usize * 41) % 140])
                .with_id(id)
                .with_metadata(if n.is_multiple_of(6) {
                    vec![1; 5]
                } else {
                    vec![]
                })
        };
        let streams = ["acct-1", "acct-2", "cart-1", "solo"];
        let types = ["Opened", "Moved", "Closed"];
        let mut round = 0usize;
        // Past the sealed segments wanted, a few batches into the newest one.
        let mut extra = 0;
        while extra < 4 {
            if segments(dir.path()) > TABLES_SEALED {
                extra += 1;
            }
            // Streams used throughout, and one stream per few batches (so that most segments
            // hold a stream's events and others do not: the tables' key entries say which).
            let stream = if round % 3 == 2 {
                format!("once-{}", round / 3)
            } else {
                streams[round % streams.len()].to_string()
            };
            // Now and then an event with the id of an earlier one, in another stream: not a
            // retry, a second event with that id.
            let reused = if round % 11 == 10 {
                batches
                    .iter()
                    .find(|(s, _, _): &&(String, Vec<EventData>, AppendResult)| *s != stream)
                    .map(|(_, b, _)| b[0].id())
            } else {
                None
            };
            let batch: Vec<EventData> = (0..1 + round % 3)
                .map(|k| event(types[(round + k) % 3], if k == 0 { reused } else { None }))
                .collect();
            let r = store
                .append(&stream, ExpectedVersion::Any, batch.clone())
                .expect("append");
            batches.push((stream, batch, r));
            round += 1;
        }
        let events = read_everything(&store);
        store.close().expect("close");
        // Reopened with a durability that writes a manifest at close, once the background
        // thread has written every table and merged what it merges.
        let store = Store::open(
            dir.path(),
            options(Recovery::Strict).durability(Durability::Sync),
        )
        .expect("reopen");
        let active = {
            let segs = named(&store_files(dir.path()), ".seg")
                .into_iter()
                .cloned()
                .collect::<Vec<_>>();
            segs.last()
                .and_then(|s| s.strip_suffix(".seg"))
                .and_then(|d| d.parse::<u64>().ok())
                .expect("a newest segment")
        };
        let started = std::time::Instant::now();
        while !id_tables_in(dir.path()).is_some_and(|t| tables_settled(&t, active)) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the id tables of the golden store did not settle: {:?}",
                id_tables_in(dir.path())
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(read_everything(&store), events);
        store.close().expect("close");
        let tables = id_tables_in(dir.path()).expect("id tables");
        assert!(
            tables_settled(&tables, active) && tables.iter().any(|t| t.2 > 0),
            "the golden store should have a merged id table: {tables:?}"
        );
        let mut files = store_files(dir.path());
        let at = files
            .iter()
            .position(|(n, _)| n == MANIFEST_FILE)
            .expect("a clean close writes a manifest");
        let manifest = files.remove(at).1;
        // The manifest re-stamped for the very directory it was written in is itself.
        assert_eq!(
            restamp_manifest(&manifest, dir.path()).as_deref(),
            Some(&manifest[..]),
            "re-stamping the golden manifest changes it"
        );
        TablesGolden {
            files,
            manifest,
            events,
            batches,
        }
    })
}

/// File name of the manifest.
pub const MANIFEST_FILE: &str = "eventjournal.manifest";

/// The stamp of a file as the manifest records it: inode, length, modification time (ns).
fn stamp_of(path: &Path) -> [u64; 3] {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).expect("stat store file");
    [
        m.ino(),
        m.len(),
        (m.mtime() as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(m.mtime_nsec() as u64),
    ]
}

/// `manifest` (layout 1, see FORMAT.md) with the stamps of its entries replaced by those of the
/// files in `dir` of the same base, and its checksum made valid again: the manifest a clean
/// close of the store in `dir` would have written. `None` if it is not one this code reads.
fn restamp_manifest(manifest: &[u8], dir: &Path) -> Option<Vec<u8>> {
    if manifest.len() < 28 || manifest[..8] != *b"EVJLMANF" {
        return None;
    }
    let segments = le_u32(manifest, 12) as usize;
    let tables = le_u32(manifest, 16) as usize;
    if manifest.len() != 28 + 64 * segments + 32 * tables {
        return None;
    }
    let mut b = manifest.to_vec();
    let put = |b: &mut [u8], at: usize, stamp: [u64; 3]| {
        for (k, v) in stamp.iter().enumerate() {
            b[at + 8 * k..at + 8 * k + 8].copy_from_slice(&v.to_le_bytes());
        }
    };
    for i in 0..segments {
        let at = 24 + 64 * i;
        let base = le_u64(&b, at);
        put(
            &mut b,
            at + 16,
            stamp_of(&dir.join(format!("{base:020}.seg"))),
        );
        put(
            &mut b,
            at + 40,
            stamp_of(&dir.join(format!("{base:020}.idx"))),
        );
    }
    for i in 0..tables {
        let at = 24 + 64 * segments + 32 * i;
        let base = le_u64(&b, at);
        put(
            &mut b,
            at + 8,
            stamp_of(&dir.join(format!("{base:020}.ids"))),
        );
    }
    fix_manifest_checksum(&mut b);
    Some(b)
}

/// Makes the trailing CRC of manifest `b` valid over whatever it holds.
pub fn fix_manifest_checksum(b: &mut [u8]) {
    if b.len() >= 4 {
        let body = b.len() - 4;
        let crc = crc32(&b[..body]);
        b[body..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Writes, from `crcs_at` on, the checksum of each 512-byte block of `b[from..to]` (the last one
/// shorter), as far as the array lies inside `b`: the block checksums of id tables and index
/// files.
fn sign_blocks(b: &mut [u8], from: usize, to: usize, crcs_at: usize) {
    for (k, start) in (from..to).step_by(512).enumerate() {
        let end = (start + 512).min(to);
        let at = crcs_at + 4 * k;
        if at + 4 > b.len() {
            break;
        }
        let crc = crc32(&b[start..end]);
        b[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Makes the checksums of id table `b` (layout 2) valid over whatever it holds, as a buggy writer
/// would: the block checksums of the body (entries and directory), as far as `count` and
/// `dir_bits` put them inside the file; the CRC of the block checksums; the header's. Lengths
/// are left as they are: a file whose length disagrees with its header is still refused.
pub fn forge_ids_checksums(b: &mut [u8]) {
    const HEADER: u64 = 64;
    if b.len() < HEADER as usize {
        return;
    }
    let count = le_u64(b, 32);
    let bits = le_u32(b, 12);
    let body_len = (bits < 64)
        .then(|| 1u64 << bits)
        .and_then(|buckets| {
            count
                .checked_mul(16)?
                .checked_add(buckets.checked_add(1)?.checked_mul(8)?)
        })
        .filter(|&len| len <= b.len() as u64 - HEADER);
    if let Some(body_len) = body_len {
        let crcs_at = HEADER as usize + body_len as usize;
        sign_blocks(b, HEADER as usize, crcs_at, crcs_at);
        let crc = crc32(&b[crcs_at..]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// Makes the checksums of index file `b` (layout 4) valid over whatever it holds, as a buggy
/// writer would: with `runs`, each run's offsets checksum, where its directory entry and offsets
/// array lie inside the file; the block checksums of the directory and names, as far as they lie
/// inside it; the CRC of the block checksums; the header's. Lengths are left as they are.
pub fn forge_index_checksums_v4(b: &mut [u8], runs: bool) {
    const HEADER: usize = 64;
    const ENTRY: usize = 40;
    if b.len() < HEADER {
        return;
    }
    let count = le_u32(b, 12) as usize;
    let layout = (|| {
        let names_end = count
            .checked_mul(ENTRY)?
            .checked_add(HEADER)?
            .checked_add(usize::try_from(le_u64(b, 32)).ok()?)?;
        let offsets_at = names_end.checked_next_multiple_of(4)?;
        let crcs_at =
            offsets_at.checked_add(usize::try_from(le_u64(b, 40)).ok()?.checked_mul(4)?)?;
        Some((offsets_at, crcs_at))
    })();
    if let Some((offsets_at, crcs_at)) = layout.filter(|&(_, crcs_at)| crcs_at <= b.len()) {
        let signed = if runs {
            count.min((b.len() - HEADER) / ENTRY)
        } else {
            0
        };
        for i in 0..signed {
            let e = HEADER + i * ENTRY;
            let n = le_u32(b, e + 16) as usize;
            let first = le_u32(b, e + 28) as usize;
            let array = (|| {
                let from = offsets_at.checked_add(first.checked_mul(4)?)?;
                Some((from, from.checked_add(n.checked_mul(4)?)?))
            })();
            if let Some((from, to)) = array.filter(|&(_, to)| to <= b.len()) {
                let crc = crc32(&b[from..to]);
                b[e + 32..e + 36].copy_from_slice(&crc.to_le_bytes());
            }
        }
        sign_blocks(b, HEADER, offsets_at, crcs_at);
        let crc = crc32(&b[crcs_at..]);
        b[48..52].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// Damages the id table files of the tables golden store as `data` says, opens it and checks
/// what it shows, twice (see [`check_tables_store`]): id tables are a cache, so whatever they
/// hold, the store opens, every read shows what was written, a retry of a batch written is
/// recognised as one and a new batch never is.
///
/// `data[0]` is a mode byte:
/// - bits 0-1: which id table files: 0 the merged one (level 1, the first four sealed
///   segments), 1 the last, 2 all, 3 the one `data[1]` picks;
/// - bit 2: XOR the rest of the input onto the file, as (offset: u16, byte) triples (else:
///   replace the file with it);
/// - bit 3: then make the file's checksums valid, as a buggy writer would (see
///   [`forge_ids_checksums`]);
/// - bit 4: delete the files instead;
/// - bit 5: write the result under the name of the sealed segment `data[1]` picks, keeping the
///   file it came from (a table in the wrong place, or one inside another).
pub fn open_ids(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let g = tables_golden();
    let dir = tempdir();
    restore(dir.path(), &g.files);
    let ids = named(&g.files, ".ids");
    let segs = named(&g.files, ".seg");
    let pick = rest.first().copied().unwrap_or(0);
    let (chosen, payload): (Vec<&String>, &[u8]) = match mode & 3 {
        0 => (vec![ids[0]], rest),
        1 => (vec![ids[ids.len() - 1]], rest),
        2 => (ids.clone(), rest),
        _ => (
            vec![ids[usize::from(pick) % ids.len()]],
            rest.get(1..).unwrap_or(&[]),
        ),
    };
    let forged = mode & 8 != 0;
    let mut changed = false;
    for name in chosen {
        let path = dir.path().join(name);
        if mode & 16 != 0 {
            fs::remove_file(&path).expect("remove id table");
            changed = true;
            continue;
        }
        let golden = fs::read(&path).expect("read id table");
        let mut bytes = if mode & 4 != 0 {
            let mut b = golden.clone();
            xor_patches(&mut b, payload);
            b
        } else {
            payload.to_vec()
        };
        if forged {
            forge_ids_checksums(&mut bytes);
        }
        changed |= bytes != golden;
        let to = if mode & 32 != 0 {
            let seg = segs[usize::from(pick) % (segs.len() - 1)];
            let target = dir.path().join(seg.replace(".seg", ".ids"));
            changed |= target != path;
            target
        } else {
            path
        };
        fs::write(&to, &bytes).expect("write id table");
    }
    let tolerate = if forged && changed {
        Tolerate::Forged
    } else {
        Tolerate::Nothing
    };
    check_tables_store(dir.path(), g, tolerate);
}

/// Opens the tables golden store in `dir` (its id tables or manifest damaged or forged) twice,
/// and checks it each time with [`check_golden`], which `tolerate` tells what a damaged or forged
/// file may make it get wrong; the first time, it also sends batches written before again, which
/// must be recognised as retries (unless files with valid checksums over wrong content may have
/// hidden them: then they may be written again, as new), and new batches, which must be written
/// as new, even those whose first event id another stream has.
///
/// With forged files, what follows those appends is checked less: a forged id table that leaves
/// out a stream's key entry for a segment hides that segment's events of the stream from the
/// stream index (opening compares only a sample of each table's entries with the log, and no
/// sample finds an entry that is not there), so the stream looks shorter or absent, as
/// [`Tolerate::Forged`] allows, and an append to it numbers its events on from what it shows:
/// the stream then holds two events of one number. Likewise a forged index file whose run claims
/// more events than its stream has (with `Any`, the append numbers its events on from there).
/// Only `$all` from the start, which does not use the index, must still show exactly what was
/// written, and every other read may fail only with `Corrupt`. And the next open, which checks
/// the numbering of every stream it scans, refuses the store with `Corrupt`, with `Strict` and
/// with `Salvage` alike (the store wrote a log it no longer opens: see `fuzz/README.md`, "Runs").
fn check_tables_store(dir: &Path, g: &TablesGolden, tolerate: Tolerate) {
    let mut events = g.events.clone();
    for round in 0..2 {
        let store = match Store::open(dir, options(Recovery::Strict)) {
            Ok(store) => store,
            Err(Error::Corrupt { .. }) if round == 1 && misnumbered(&events) => {
                assert_eq!(tolerate, Tolerate::Forged, "a stream misnumbered");
                match Store::open(dir, options(Recovery::Salvage)) {
                    Ok(store) => store.close().expect("close"),
                    Err(Error::Corrupt { .. }) => {}
                    Err(e) => panic!("salvaging the store failed with an unexpected error: {e}"),
                }
                return;
            }
            Err(e) => {
                panic!("opening with damaged id tables or manifest (round {round}) failed: {e}")
            }
        };
        if round == 0 {
            check_golden(&store, &events, tolerate);
            retries_and_new_batches(&store, g, tolerate, &mut events);
        }
        if tolerate == Tolerate::Forged {
            let (all, _) = read_tolerantly(&store);
            assert!(all == events, "$all after appends (round {round})");
        } else {
            check_golden(&store, &events, tolerate);
        }
        store.close().expect("close");
    }
}

/// Whether some stream's events in `events` (`$all` order) are not numbered 0, 1, 2, ...
fn misnumbered(events: &[Ev]) -> bool {
    let mut next: HashMap<&str, u64> = HashMap::new();
    !events.iter().all(|e| {
        let n = next.entry(&e.stream).or_insert(0);
        *n += 1;
        e.number == *n - 1
    })
}

/// Sends some of the golden store's batches again (retries) and a few new ones; adds the events
/// written to `events`.
fn retries_and_new_batches(
    store: &Store,
    g: &TablesGolden,
    tolerate: Tolerate,
    events: &mut Vec<Ev>,
) {
    let forged = tolerate == Tolerate::Forged;
    let head = |store: &Store| store.head();
    // The first batch, one from the middle, the last batch written into each of the last
    // segments, all of them every seventh.
    let picks: Vec<usize> = (0..g.batches.len())
        .filter(|&i| i == 0 || i == g.batches.len() - 1 || i % 7 == 3)
        .collect();
    for i in picks {
        let (stream, batch, original) = &g.batches[i];
        let before = head(store);
        let got = match store.append(stream, ExpectedVersion::Any, batch.clone()) {
            Ok(r) => r,
            // The stream's lookup met the damaged index file, or a forged file.
            Err(e) if tolerates(tolerate, &e) => continue,
            // A forged file that makes the stream look shorter than the batch: its first event
            // is there, the others are not, so it is not a whole retry.
            Err(Error::WrongExpectedVersion { .. }) if forged => continue,
            Err(e) => panic!("retry of batch {i} to `{stream}` failed: {e}"),
        };
        if got == *original {
            assert_eq!(head(store), before, "a retry of batch {i} wrote something");
            continue;
        }
        // Only a table with valid checksums over wrong content can hide a batch written: it is
        // then written again, as new.
        assert!(
            forged,
            "batch {i} to `{stream}` sent again: {got:?}, not its original {original:?}"
        );
        written_since(store, before, events);
        assert_eq!(
            got.position.map(|p| p.0),
            events.last().map(|e| e.position),
            "batch {i} sent again"
        );
    }
    // New batches: a fresh id, and the id of an event of another stream.
    let fresh = EventId([0xF5; 16]);
    let other = g
        .batches
        .iter()
        .rfind(|(s, _, _)| s.starts_with("once-"))
        .map(|(_, b, _)| b[0].id())
        .expect("a batch of another stream");
    assert!(
        !g.events
            .iter()
            .any(|e| e.id == other && e.stream == "acct-1"),
        "the id of another stream's event is also one of `acct-1`"
    );
    for (k, id) in [fresh, other].into_iter().enumerate() {
        let before = head(store);
        let version = store.stream_version("acct-1");
        let r = store.append(
            "acct-1",
            ExpectedVersion::Any,
            [EventData::new("Checked", vec![k as u8; 3]).with_id(id)],
        );
        let r = match r {
            Ok(r) => r,
            Err(e) if tolerates(tolerate, &e) => continue,
            Err(e) => panic!("new batch {k} failed: {e}"),
        };
        written_since(store, before, events);
        let last = events.last().expect("the new event");
        assert!(
            last.position >= before.0 && last.id == id && last.stream == "acct-1",
            "new batch {k} was taken for a retry: {r:?}; last {last:?}, before {before:?}"
        );
        assert_eq!(r.position, Some(Position(last.position)));
        if let Ok(Some(v)) = version {
            assert_eq!(r.version, Some(v + 1), "new batch {k}");
        }
    }
}

/// Adds the events of `$all` from `from` to `events`.
fn written_since(store: &Store, from: Position, events: &mut Vec<Ev>) {
    for r in store
        .read_all_forward(from, usize::MAX)
        .expect("read_all_forward(the head before an append)")
    {
        events.push(Ev::from(&r.expect("$all after an append")));
    }
}

/// Writes a manifest into the tables golden store as `data` says, perhaps after damaging one of
/// its index files or id tables in place (so that the manifest vouches for the damaged file, as
/// it would for a file changed in place within a clock tick of a clean close), opens it and
/// checks what it shows, twice (see [`check_tables_store`]). A manifest only lets opening skip
/// checks of files it vouches for: whatever it holds, the store opens, and reads show exactly
/// what was written unless a vouched-for file was damaged (then a read may end in `Corrupt`
/// naming an index file; with checksums forged over wrong content, what [`Tolerate::Forged`]
/// allows).
///
/// `data[0]` is a mode byte, `data[1]` picks the file to damage, `data[2]` is the number of
/// (offset: u16, byte) triples that XOR it, and the rest of the input is for the manifest:
/// - bits 0-1: the manifest: 0 the golden one re-stamped for this directory (vouching for
///   every file), 1 the rest of the input, 2 the re-stamped one with the rest of the input
///   XORed onto it as (offset: u16, byte) triples, 3 the golden one as it was written (the
///   stamps of another directory: a manifest restored from elsewhere), XORed likewise;
/// - bit 2: then make the manifest's checksum valid;
/// - bit 3: first damage the index file or id table `data[1]` picks with the triples;
/// - bit 4: then make that file's checksums valid, as a buggy writer would;
/// - bit 5: leave no manifest at all.
pub fn open_manifest(data: &[u8]) {
    let g = tables_golden();
    let (mode, pick, count, rest) = match data {
        [] => (0u8, 0u8, 0u8, &[][..]),
        [m] => (*m, 0, 0, &[][..]),
        [m, p] => (*m, *p, 0, &[][..]),
        [m, p, c, rest @ ..] => (*m, *p, *c, rest),
    };
    let patches_len = (usize::from(count) * 3).min(rest.len());
    let (patches, payload) = rest.split_at(patches_len);
    let dir = tempdir();
    restore(dir.path(), &g.files);
    let mut tolerate = Tolerate::Nothing;
    if mode & 8 != 0 {
        let candidates: Vec<&String> = g
            .files
            .iter()
            .map(|(n, _)| n)
            .filter(|n| n.ends_with(".idx") || n.ends_with(".ids"))
            .collect();
        let name = candidates[usize::from(pick) % candidates.len()];
        let path = dir.path().join(name);
        let golden = fs::read(&path).expect("read file to damage");
        let mut b = golden.clone();
        xor_patches(&mut b, patches);
        let forge = mode & 16 != 0;
        if forge {
            if name.ends_with(".ids") {
                forge_ids_checksums(&mut b);
            } else {
                forge_index_checksums_v4(&mut b, true);
            }
        }
        if b != golden {
            // In place: the same inode, the same length.
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, &b))
                .expect("damage file in place");
            tolerate = if forge {
                Tolerate::Forged
            } else if name.ends_with(".idx") {
                Tolerate::DamagedRun
            } else {
                // A damaged id table is dropped when its checksums fail: reads never see it.
                Tolerate::Nothing
            };
        }
    }
    let manifest = match mode & 3 {
        0 => restamp_manifest(&g.manifest, dir.path()).expect("the golden manifest"),
        1 => payload.to_vec(),
        2 => {
            let mut b = restamp_manifest(&g.manifest, dir.path()).expect("the golden manifest");
            xor_patches(&mut b, payload);
            b
        }
        _ => {
            let mut b = g.manifest.clone();
            xor_patches(&mut b, payload);
            b
        }
    };
    let mut manifest = manifest;
    if mode & 4 != 0 {
        fix_manifest_checksum(&mut manifest);
    }
    if mode & 32 == 0 {
        fs::write(dir.path().join(MANIFEST_FILE), &manifest).expect("write manifest");
    }
    check_tables_store(dir.path(), g, tolerate);
}

// ---------------------------------------------------------------------------------------------
// web
// ---------------------------------------------------------------------------------------------

/// Text planted in the web store's stream names, event types and data: an HTML page may show it
/// only escaped.
const PLANTED: &str = "<x-evj";

/// Requests answered per input, at most.
const WEB_MAX_REQUESTS: usize = 16;

/// Links followed per input, at most (each is a request of its own).
const WEB_MAX_FOLLOWED: usize = 6;

/// A small real store with every kind of stream the HTTP view shows differently, open read-only
/// (as `eventjournal serve` opens it) for the life of the process, and its visible events by
/// position, with their data.
struct WebStore {
    store: Store,
    events: HashMap<u64, Ev>,
}

fn web_store() -> &'static WebStore {
    static STORE: OnceLock<WebStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempdir();
        let store = Store::open(dir.path(), options(Recovery::Strict)).expect("open");
        let mut n = 0usize;
        let mut append = |stream: &str, count: usize| {
            let types = ["Opened", "Deposited", "<x-evj-type> ü/x", "Closed"];
            let events: Vec<EventData> = (0..count)
                .map(|_| {
                    n += 1;
                    let ty = types[n % types.len()];
                    match n % 4 {
                        0 => EventData::new(ty, vec![0u8, 159, 146, 150, n as u8]),
                        1 => EventData::new(ty, format!("{{\"n\":{n},\"s\":{stream:?}}}"))
                            .with_metadata("{\"by\":\"<x-evj-meta>\"}"),
                        2 => EventData::new(ty, Vec::new()).with_metadata(vec![0xFF, 0]),
                        _ => EventData::new(ty, format!("\"{PLANTED}-data {n}\"")),
                    }
                })
                .collect();
            store
                .append(stream, ExpectedVersion::Any, events)
                .expect("append");
        };
        append("order-7", 45);
        append("order-8", 3);
        for (i, name) in [
            "<x-evj>-1",
            "a/b c-2",
            "ünï-3",
            "100%-4",
            "-lead",
            "nodash",
            "q\"&'-5",
            "?x=1#frag",
        ]
        .iter()
        .enumerate()
        {
            append(name, 1 + i % 3);
        }
        for c in 0..12 {
            append(&format!("cat{c}-1"), 1 + c % 2);
        }
        append("gone-1", 3);
        store
            .delete_stream("gone-1", ExpectedVersion::Any)
            .expect("delete");
        append("dead-1", 2);
        store
            .tombstone_stream("dead-1", ExpectedVersion::Any)
            .expect("tombstone");
        append("cut-1", 30);
        let md = |f: fn(&mut StreamMetadata)| {
            let mut md = StreamMetadata::default();
            f(&mut md);
            md
        };
        store
            .set_stream_metadata(
                "cut-1",
                ExpectedVersion::Any,
                md(|m| m.truncate_before = Some(7)),
            )
            .expect("truncate_before");
        append("cap-1", 10);
        store
            .set_stream_metadata("cap-1", ExpectedVersion::Any, md(|m| m.max_count = Some(3)))
            .expect("max_count");
        append("old-1", 2);
        store
            .set_stream_metadata(
                "old-1",
                ExpectedVersion::Any,
                md(|m| m.max_age_secs = Some(0)),
            )
            .expect("max_age_secs");
        append("order-7", 2);
        let last = store
            .read_all_backward(Position::END, 1)
            .expect("read_all_backward")
            .next()
            .expect("an event")
            .expect("the last event");
        store
            .save_checkpoint("fuzz", last.position())
            .expect("save_checkpoint");
        store.close().expect("close");
        // Read-only and not following a writer: nothing runs in the background, and nothing
        // opens a file of the directory once the store is open, so the directory goes now
        // (a store kept for the life of the process would otherwise leave it behind).
        let store = Store::open_read_only(dir.path(), options(Recovery::Strict).follow(None))
            .expect("open the web store read-only");
        drop(dir);
        let events = store
            .read_all_forward(Position::START, usize::MAX)
            .expect("read_all_forward")
            .map(|r| {
                let e = Ev::from(&r.expect("$all"));
                (e.position, e)
            })
            .collect();
        WebStore { store, events }
    })
}

/// What answering one input's requests has left to do: the links still to follow.
struct WebRun<'a> {
    store: &'a Store,
    golden: &'a WebStore,
    followed: std::collections::HashSet<String>,
}

/// Answers the requests of `data` with the HTTP view (`web::respond`, the whole view but the
/// server's sockets) of a small real store, and checks each answer.
///
/// The input is text in the shape of HTTP/1.1 requests: each request a line `METHOD TARGET`
/// (anything after a further space is left out, as `HTTP/1.1` would be), then header lines
/// `Name: value`, then an empty line. Bytes need not be UTF-8. A request whose method, target
/// or a header the `http` crate does not take is left out (the server answers it `400` before
/// the view sees it).
///
/// Checks: nothing panics; a method other than `GET`/`HEAD` is `405` with `Allow`; everything
/// else is `200`, `400`, `404`, `406` or `410` (never `500`: the store is sound) with `Vary:
/// Accept`; a `HEAD` answer has no body and the `Content-Length` of the `GET` answer; a body is
/// HTML or JSON as its `Content-Type` says (an error in JSON has its status), an HTML page shows
/// no planted markup unescaped, and links to paths; every event a JSON page or a Server-Sent
/// Events frame shows is the one written at its position, with its data; every link of a JSON
/// page is served (`200`), up to [`WEB_MAX_FOLLOWED`] per input.
pub fn web(data: &[u8]) {
    let golden = web_store();
    let mut run = WebRun {
        store: &golden.store,
        golden,
        followed: std::collections::HashSet::new(),
    };
    let mut lines = data.split(|&b| b == b'\n').peekable();
    for _ in 0..WEB_MAX_REQUESTS {
        if lines.peek().is_none() {
            break;
        }
        let mut request: Vec<&[u8]> = Vec::new();
        for line in lines.by_ref() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break;
            }
            request.push(line);
        }
        if let Some(req) = web_request(&request) {
            run.check(&req, None);
        }
    }
}

/// The request of `lines` (see [`web`]) as the server would hand it to the view.
fn web_request(lines: &[&[u8]]) -> Option<http::Request<()>> {
    let (first, headers) = lines.split_first()?;
    let mut parts = first.splitn(3, |&b| b == b' ');
    let method = http::Method::from_bytes(parts.next()?).ok()?;
    let target = parts.next().unwrap_or(b"/");
    let mut b = http::Request::builder().method(method).uri(target);
    for h in headers {
        let at = h.iter().position(|&b| b == b':')?;
        let value = h[at + 1..].trim_ascii_start();
        b = b.header(&h[..at], value);
    }
    b.body(()).ok()
}

impl WebRun<'_> {
    /// Answers `req` and checks the answer; `linked_from` is the request whose answer linked to
    /// it, if it did (it must then be served).
    fn check(&mut self, req: &http::Request<()>, linked_from: Option<&str>) {
        use eventjournal::web::{self, Body};
        let res = web::respond(self.store, req);
        let what = format!("{} {}", req.method(), req.uri());
        let status = res.status().as_u16();
        let (parts, body) = res.into_parts();
        if let Some(from) = linked_from {
            assert_eq!(status, 200, "{from} links to {what}, which is not served");
        }
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .map(|v| v.to_str().expect("a header value of text").to_string())
        };
        let (get, head) = (
            req.method() == http::Method::GET,
            req.method() == http::Method::HEAD,
        );
        if !get && !head {
            assert_eq!(status, 405, "{what}");
            assert_eq!(header("allow").as_deref(), Some("GET, HEAD"), "{what}");
            return;
        }
        assert!(
            matches!(status, 200 | 400 | 404 | 406 | 410),
            "{what}: status {status}"
        );
        assert_eq!(header("vary").as_deref(), Some("Accept"), "{what}");
        let content_type = header("content-type").unwrap_or_default();
        let length = header("content-length");
        if status == 406 {
            assert!(
                content_type.starts_with("text/plain"),
                "{what}: {content_type}"
            );
        } else {
            assert!(
                header("cache-control").is_some(),
                "{what}: no Cache-Control"
            );
        }
        let bytes = match body {
            Body::Events(events) => {
                assert!(
                    status == 200 && !head,
                    "{what}: an event stream with {status}"
                );
                assert!(
                    content_type.starts_with("text/event-stream"),
                    "{what}: {content_type}"
                );
                self.check_frames(&what, events);
                return;
            }
            Body::Full(bytes) => bytes,
        };
        if head {
            assert!(bytes.is_empty(), "{what}: HEAD with a body ({status})");
            let mut get = http::Request::new(());
            *get.uri_mut() = req.uri().clone();
            *get.headers_mut() = req.headers().clone();
            let res = web::respond(self.store, &get);
            assert_eq!(res.status().as_u16(), status, "{what}: GET and HEAD");
            match res.into_body() {
                // `/live` as Server-Sent Events: no length to announce.
                Body::Events(_) => assert_eq!(length, None, "{what}: Content-Length"),
                // The home page counts the keys reads have loaded: its length may move.
                Body::Full(_) if req.uri().path().trim_start_matches('/').is_empty() => {
                    assert!(length.is_some(), "{what}: no Content-Length")
                }
                Body::Full(body) => {
                    assert_eq!(
                        length,
                        Some(body.len().to_string()),
                        "{what}: Content-Length"
                    )
                }
            }
            return;
        }
        if status == 406 {
            let text = String::from_utf8(bytes).expect("406 as text");
            assert!(
                text.contains("text/html") && text.contains("application/json"),
                "{what}"
            );
            return;
        }
        if content_type.starts_with("application/json") {
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{what}: not JSON ({e})"));
            if status != 200 {
                assert_eq!(v["error"]["status"], status, "{what}: {v}");
                assert!(v["error"]["message"].is_string(), "{what}: {v}");
                return;
            }
            let mut links = Vec::new();
            self.check_json(&what, &v, &mut links);
            for l in links {
                assert!(l.starts_with('/'), "{what} links to `{l}`");
                if self.followed.len() >= WEB_MAX_FOLLOWED || !self.followed.insert(l.clone()) {
                    continue;
                }
                let follow = http::Request::get(l.as_str())
                    .header("accept", "application/json")
                    .body(())
                    .unwrap_or_else(|e| panic!("{what} links to `{l}`, not a request target: {e}"));
                self.check(&follow, Some(&what));
            }
        } else if content_type.starts_with("text/html") {
            let text = String::from_utf8(bytes).expect("HTML as UTF-8");
            assert!(text.starts_with("<!DOCTYPE html>"), "{what}");
            assert!(!text.contains(PLANTED), "{what} shows markup unescaped");
            assert!(
                header("content-security-policy").is_some_and(|c| c.contains("default-src 'none'")),
                "{what}: no Content-Security-Policy"
            );
            for href in text.split("href=\"").skip(1) {
                let href = href.split_once('"').map_or(href, |(h, _)| h);
                assert!(href.starts_with('/'), "{what} links to `{href}`");
            }
        } else {
            panic!("{what}: Content-Type `{content_type}`");
        }
    }

    /// Checks every event a JSON page shows against the store's, and gathers its links.
    fn check_json(&self, what: &str, v: &serde_json::Value, links: &mut Vec<String>) {
        use serde_json::Value;
        match v {
            Value::Object(m) => {
                // An event: `position`, `stream`, `number` (a stream page has no `position`).
                if let (Some(p), true, true) = (
                    m.get("position").and_then(Value::as_u64),
                    m.contains_key("stream"),
                    m.contains_key("number"),
                ) {
                    self.check_event(what, p, m);
                }
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("links", Value::Object(l)) => {
                            links.extend(l.values().filter_map(|l| l.as_str().map(String::from)));
                        }
                        ("data" | "metadata", _) => {}
                        _ => self.check_json(what, v, links),
                    }
                }
            }
            Value::Array(items) => {
                for v in items {
                    self.check_json(what, v, links);
                }
            }
            _ => {}
        }
    }

    /// Checks an event the view shows (at `position`, as JSON) against the one written there.
    fn check_event(
        &self,
        what: &str,
        position: u64,
        m: &serde_json::Map<String, serde_json::Value>,
    ) {
        let e =
            self.golden.events.get(&position).unwrap_or_else(|| {
                panic!("{what} shows an event at {position}, where none is read")
            });
        assert_eq!(m["stream"], e.stream.as_str(), "{what}");
        assert_eq!(m["number"], e.number, "{what}");
        assert_eq!(m["type"], e.event_type.as_str(), "{what}");
        assert_eq!(m["id"], e.id.to_string(), "{what}");
        for (field, bytes) in [("data", &e.data), ("metadata", &e.metadata)] {
            let Some(shown) = m.get(field) else { continue };
            let encoding = &m[&format!("{field}Encoding")];
            if encoding == "json" {
                let want: serde_json::Value =
                    serde_json::from_slice(bytes).expect("the event's JSON");
                assert_eq!(*shown, want, "{what}: {field}");
            } else {
                assert_eq!(encoding, "hex", "{what}: {field}");
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(*shown, hex, "{what}: {field}");
            }
        }
    }

    /// Checks the frames a live view has ready now (the events after the position it was asked
    /// to start after), up to a few.
    fn check_frames(&self, what: &str, mut events: eventjournal::web::EventStream) {
        let mut last = None;
        for _ in 0..4 {
            let Some(frame) = events.next_event(Duration::ZERO) else {
                break;
            };
            let text = String::from_utf8(frame).expect("a frame as UTF-8");
            let rest = text.strip_prefix("id: ").expect("a frame with an id");
            let (id, rest) = rest.split_once('\n').expect("a frame's id line");
            let data = rest
                .strip_prefix("data: ")
                .and_then(|d| d.strip_suffix("\n\n"))
                .expect("a frame's data line");
            let position: u64 = id.parse().expect("an id that is a position");
            assert!(last < Some(position), "{what}: frames out of order");
            last = Some(position);
            let v: serde_json::Value = serde_json::from_str(data).expect("a frame of JSON");
            let m = v.as_object().expect("a frame of a JSON object");
            assert_eq!(m["position"], position, "{what}");
            self.check_event(what, position, m);
        }
        assert!(
            !events.is_ended(),
            "{what}: the live view ended with the store open"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// open_keys
// ---------------------------------------------------------------------------------------------

/// The key table's file name (FORMAT.md, "The key table").
const KEYS_FILE: &str = "keys.tbl";
/// Streams of the keys golden store.
const KEYS_STREAMS: usize = 60;

/// A small real store of many streams over several segments, opened again once so that its key
/// table was made: its files (the key table among them) and each stream's version.
struct KeysGolden {
    files: Vec<(String, Vec<u8>)>,
    versions: Vec<(String, Option<u64>)>,
}

fn keys_golden() -> &'static KeysGolden {
    static GOLDEN: OnceLock<KeysGolden> = OnceLock::new();
    GOLDEN.get_or_init(|| {
        let dir = tempdir();
        let store = Store::open(dir.path(), options(Recovery::Strict)).expect("open");
        let mut versions: Vec<(String, Option<u64>)> = (0..KEYS_STREAMS)
            .map(|i| (format!("k-{i}"), None))
            .collect();
        // Each stream in one to three rounds, so that streams have runs in several segments.
        for round in 0..3 {
            for (i, (name, version)) in versions.iter_mut().enumerate() {
                if i % 3 < round {
                    continue;
                }
                let n = 1 + (i + round) % 3;
                let events = (0..n).map(|k| EventData::new("Noted", vec![k as u8; 20 + i]));
                let r = store
                    .append(name, ExpectedVersion::Any, events)
                    .expect("append");
                *version = r.version;
            }
        }
        store.close().expect("close");
        let store = Store::open(dir.path(), options(Recovery::Strict)).expect("reopen");
        let started = std::time::Instant::now();
        while store.index_info().key_table_files == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no key table made"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        store.close().expect("close");
        let files = store_files(dir.path());
        assert!(files.iter().any(|(n, _)| n == KEYS_FILE));
        versions.push(("k-none".to_string(), None));
        KeysGolden { files, versions }
    })
}

/// The key table `b` with its covered files given the stamps of those in `dir`, and its covered
/// list and header signed again: the table the store would have made from them. Left as it is if
/// too short to hold what it claims.
fn restamp_keys(b: &mut [u8], dir: &Path) {
    if b.len() < 64 {
        return;
    }
    let covered = le_u32(b, 32) as usize;
    if b.len() < 64 + 32 * covered {
        return;
    }
    for k in 0..covered {
        let at = 64 + 32 * k;
        let base = le_u64(b, at);
        let path = dir.join(format!("{base:020}.idx"));
        if !path.exists() {
            continue;
        }
        for (w, v) in stamp_of(&path).into_iter().enumerate() {
            b[at + 8 + 8 * w..at + 16 + 8 * w].copy_from_slice(&v.to_le_bytes());
        }
    }
    sign_keys_header(b);
}

/// Makes the covered list's and the header's checksums of key table `b` valid.
fn sign_keys_header(b: &mut [u8]) {
    let covered = le_u32(b, 32) as usize;
    if b.len() < 64 + 32 * covered {
        return;
    }
    let crc = crc32(&b[64..64 + 32 * covered]);
    b[40..44].copy_from_slice(&crc.to_le_bytes());
    let crc = crc32(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// Makes every checksum of key table `b` valid (slots, names, covered list, header), as a forger
/// would: its slots then say whatever the input made them say.
pub fn forge_keys_checksums(b: &mut [u8]) {
    if b.len() < 64 {
        return;
    }
    let bits = le_u32(b, 12);
    let covered = le_u32(b, 32) as usize;
    if !(1..=20).contains(&bits) {
        sign_keys_header(b);
        return;
    }
    let slots = (1usize << bits) + 4096;
    let slots_at = 64 + 32 * covered;
    let names_at = slots_at + 32 * slots;
    for i in 0..slots {
        let at = slots_at + 32 * i;
        if at + 32 > b.len() {
            break;
        }
        let place = le_u64(b, at + 8);
        let (name_at, len) = ((place >> 16) as usize, (place & 0xffff) as usize);
        if let Some(name) = names_at
            .checked_add(name_at)
            .and_then(|from| b.get(from..from.checked_add(len)?))
        {
            let crc = crc32(name);
            b[at + 24..at + 28].copy_from_slice(&crc.to_le_bytes());
        }
        let mut signed = (i as u64).to_le_bytes().to_vec();
        signed.extend_from_slice(&bits.to_le_bytes());
        signed.extend_from_slice(&b[at..at + 28]);
        let crc = crc32(&signed);
        b[at + 28..at + 32].copy_from_slice(&crc.to_le_bytes());
    }
    sign_keys_header(b);
}

/// XORs `patches` (offset: u24 little-endian, byte) onto `b`, offsets taken modulo its length: a
/// key table's names lie past the 64 KiB that [`xor_patches`] reaches.
fn xor_patches_wide(b: &mut [u8], patches: &[u8]) {
    for t in patches.chunks_exact(4) {
        if b.is_empty() {
            return;
        }
        let at = (usize::from(t[0]) | usize::from(t[1]) << 8 | usize::from(t[2]) << 16) % b.len();
        b[at] ^= t[3];
    }
}

/// Fuzz target `open_keys`: a mode byte, then bytes XORed onto the key table of
/// [`keys_golden`]'s store as (u24 offset, byte) pairs (mode bit 0), or that replace it; the
/// table is given the stamps of the copied index files first (so that the store uses it), or,
/// with bit 2, after the input changed it; with bit 1, every checksum is made valid. The store
/// opens with `Strict` and uses a table (this one, or one it made again after refusing it); each
/// stream's first use since open, by an append refused for its expected version, reports the
/// stream's version, and nothing is written (with forged checksums: any answer, never a panic);
/// then every stream reads back whole.
pub fn open_keys(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let g = keys_golden();
    let dir = tempdir();
    let others: Vec<(String, Vec<u8>)> = g
        .files
        .iter()
        .filter(|(n, _)| n != KEYS_FILE)
        .cloned()
        .collect();
    restore(dir.path(), &others);
    let golden = &g
        .files
        .iter()
        .find(|(n, _)| n == KEYS_FILE)
        .expect("key table")
        .1;
    let mut table = if mode & 1 != 0 {
        let mut b = golden.clone();
        restamp_keys(&mut b, dir.path());
        xor_patches_wide(&mut b, rest);
        b
    } else {
        rest.to_vec()
    };
    if mode & 4 != 0 {
        restamp_keys(&mut table, dir.path());
    }
    let forged = mode & 2 != 0;
    if forged {
        forge_keys_checksums(&mut table);
    }
    fs::write(dir.path().join(KEYS_FILE), &table).expect("write key table");
    let store = Store::open(dir.path(), options(Recovery::Strict)).expect("a key table is a cache");
    let started = std::time::Instant::now();
    while store.index_info().key_table_files == 0 && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let head = store.head();
    for (name, version) in &g.versions {
        let probe = [EventData::new("Probe", &b""[..])];
        let r = store.append(name, ExpectedVersion::Exact(u64::MAX - 1), probe);
        match r {
            Err(Error::WrongExpectedVersion { actual, .. }) if actual == *version => {}
            _ if forged => {}
            other => panic!("first append to {name}: {other:?}, version {version:?}"),
        }
    }
    if forged {
        return;
    }
    assert_eq!(store.head(), head, "a refused append wrote");
    for (name, version) in &g.versions {
        let read = store
            .read_stream_forward(name, 0, usize::MAX)
            .expect("read")
            .count() as u64;
        assert_eq!(
            Some(read).filter(|&n| n > 0),
            version.map(|v| v + 1),
            "{name}"
        );
    }
    store.close().expect("close");
}
