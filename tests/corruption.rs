//! Corruption: one damaged byte at a time in every file of a small, closed store.
//!
//! A store of a few streams in 4 KiB segments (so that there are several segments, sealed ones
//! with index files, and a newest one) is built once; its files are kept as bytes, together with
//! an exact model of every event written. Then, for each file and each byte offset (every byte
//! with `EVJ_CORRUPTION_ALL=1`; otherwise every byte of the meta file, the segment headers, the
//! index files and the fixed fields of the records, and a deterministic sample of the rest), a
//! fresh copy of the store is written with that byte XORed with a mask, and:
//!
//! - **`Recovery::Strict`**: opening fails with a typed error naming the damaged file and an
//!   offset inside it (see [`Region`] for what each kind of damage must give), or succeeds; then
//!   every read — streams forward and backward, `read_event`, `$all` forward and backward, and
//!   the replays — returns only events byte-identical to the model (stream, number, type, data,
//!   metadata, id, timestamp, position), and may end in `Error::Corrupt` (naming the damaged
//!   file), never in different bytes. What the store holds is the model up to a batch boundary:
//!   all of it, or (FORMAT.md, "torn tail") without the newest group when the damage is inside
//!   that group's records. Damage to an index file (a cache) never changes what reads return.
//! - **`Recovery::Salvage`** on another fresh copy: succeeds (except for a damaged meta file or
//!   a damaged header of the first segment, with the errors FORMAT.md gives), keeps exactly the
//!   batches before the damage (see [`Region::salvage_keeps`]), all of them readable without an
//!   error; an append works afterwards, and the store then opens with `Strict` holding exactly
//!   the kept prefix and the new event.
//! - Nothing panics: each case runs inside `catch_unwind`, and a panic is reported with the
//!   file, offset and mask.
//!
//! Every violation is collected and printed with its reproduction (`file`, `offset`, `mask`);
//! `EVJ_CORRUPTION_ONLY=<file>:<offset>:<mask>` (e.g. `00000000000000004096.seg:300:0x80`) runs
//! just that case, in each sweep whose store has that file, and prints what it saw (the store is
//! built the same way on every run, so offsets name the same bytes). Run with `--nocapture` for
//! the summary lines.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eventjournal::*;

// ---------------------------------------------------------------------------------------------
// The model: what was written.
// ---------------------------------------------------------------------------------------------

/// One event as written, and where the store put it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ev {
    stream: String,
    number: u64,
    event_type: String,
    data: Vec<u8>,
    metadata: Vec<u8>,
    id: EventId,
    timestamp: u64,
    position: u64,
    next_position: u64,
    /// Index of the append (batch) that wrote it.
    batch: usize,
    /// Whether it is the last event of its batch.
    batch_end: bool,
}

/// An event as a read returned it, copied out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    stream: String,
    number: u64,
    event_type: String,
    data: Vec<u8>,
    metadata: Vec<u8>,
    id: EventId,
    timestamp: u64,
    position: u64,
    next_position: u64,
}

impl From<&RecordedEvent> for Got {
    fn from(e: &RecordedEvent) -> Got {
        Got {
            stream: e.stream().to_string(),
            number: e.event_number(),
            event_type: e.event_type().to_string(),
            data: e.data().to_vec(),
            metadata: e.metadata().to_vec(),
            id: e.id(),
            timestamp: e.timestamp_micros(),
            position: e.position().0,
            next_position: e.next_position().0,
        }
    }
}

impl From<&EventRef<'_>> for Got {
    fn from(e: &EventRef<'_>) -> Got {
        Got {
            stream: e.stream().to_string(),
            number: e.event_number(),
            event_type: e.event_type().to_string(),
            data: e.data().to_vec(),
            metadata: e.metadata().to_vec(),
            id: e.id(),
            timestamp: e.timestamp_micros(),
            position: e.position().0,
            next_position: e.next_position().0,
        }
    }
}

/// The fields in which `got` differs from `want`, or `None` if it is the same event, byte for
/// byte.
fn diff(got: &Got, want: &Ev) -> Option<String> {
    let mut d = Vec::new();
    if got.stream != want.stream {
        d.push(format!("stream {:?} != {:?}", got.stream, want.stream));
    }
    if got.number != want.number {
        d.push(format!("number {} != {}", got.number, want.number));
    }
    if got.event_type != want.event_type {
        d.push(format!(
            "type {:?} != {:?}",
            got.event_type, want.event_type
        ));
    }
    if got.data != want.data {
        d.push(format!(
            "data ({} bytes) != model ({} bytes)",
            got.data.len(),
            want.data.len()
        ));
    }
    if got.metadata != want.metadata {
        d.push(format!(
            "metadata ({} bytes) != model ({} bytes)",
            got.metadata.len(),
            want.metadata.len()
        ));
    }
    if got.id != want.id {
        d.push(format!("id {} != {}", got.id, want.id));
    }
    if got.timestamp != want.timestamp {
        d.push(format!("timestamp {} != {}", got.timestamp, want.timestamp));
    }
    if got.position != want.position || got.next_position != want.next_position {
        d.push(format!(
            "position {}..{} != {}..{}",
            got.position, got.next_position, want.position, want.next_position
        ));
    }
    (!d.is_empty()).then(|| format!("`{}` #{}: {}", want.stream, want.number, d.join(", ")))
}

/// A deterministic generator (splitmix64), so the store has the same layout on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const STREAMS: [&str; 4] = ["acct-1", "acct-2", "audit-log", "orders-ß"];
const TYPES: [&str; 5] = ["Opened", "Deposited", "Withdrawn", "Logged", "Ω-Noted"];
/// Record length as FORMAT.md gives it.
fn record_len(s: usize, t: usize, d: usize, m: usize) -> usize {
    (56 + s + t + d + m + 4).next_multiple_of(8)
}

/// Writes the store (default durability: every append is synced, so each batch is its own
/// group) and returns the model, with positions and timestamps read back before closing.
///
/// Every fifth event gets a record length of exactly 128, 256 or 512 bytes: a length word with a
/// single bit set, which one flipped bit turns into zero, the word that means "end of the log".
fn build_store(dir: &Path) -> Vec<Ev> {
    let mut rng = Rng(0x00C0_FFEE_D15C_0BAD);
    let store = Store::open(dir, Options::default().segment_size(4096)).unwrap();
    let mut versions = [None::<u64>; STREAMS.len()];
    let mut planned: Vec<Ev> = Vec::new();
    let batches: usize = 26;
    for batch in 0..batches {
        // 0, 1: one event; 2: 2 to 4 events of one stream; 3, 4: two or three streams at once.
        let kind = if batch < 2 {
            batch % 2
        } else {
            rng.below(5) as usize
        };
        let streams: Vec<usize> = match kind {
            0..=2 => vec![rng.below(STREAMS.len() as u64) as usize],
            _ => {
                let mut v: Vec<usize> = (0..STREAMS.len()).collect();
                for i in (1..v.len()).rev() {
                    v.swap(i, rng.below(i as u64 + 1) as usize);
                }
                v.truncate(2 + rng.below(2) as usize);
                v
            }
        };
        let mut writes = Vec::new();
        for &s in &streams {
            let n = match kind {
                2 => 2 + rng.below(3) as usize,
                3 | 4 => 1 + rng.below(2) as usize,
                _ => 1,
            };
            let mut evs = Vec::new();
            for _ in 0..n {
                let k = planned.len();
                let event_type = TYPES[rng.below(TYPES.len() as u64) as usize];
                let sl = STREAMS[s].len();
                let tl = event_type.len();
                let (data_len, meta_len) = if k % 5 == 2 {
                    let target = [128usize, 256, 512][(k / 5) % 3];
                    let m = if target == 128 { 0 } else { 8 };
                    (target - 60 - sl - tl - m, m)
                } else {
                    (rng.below(320) as usize, [0usize, 3, 17, 40][k % 4])
                };
                let mut data = format!("event {k} of {}: ", STREAMS[s]).into_bytes();
                data.extend(rng.bytes(data_len.saturating_sub(data.len())));
                data.truncate(data_len);
                let metadata = rng.bytes(meta_len);
                if k % 5 == 2 {
                    let l = record_len(sl, tl, data.len(), metadata.len());
                    assert!(l.is_power_of_two(), "{l}");
                }
                let id = EventId(rng.bytes(16).try_into().unwrap());
                let number = versions[s].map_or(0, |v| v + 1);
                versions[s] = Some(number);
                planned.push(Ev {
                    stream: STREAMS[s].to_string(),
                    number,
                    event_type: event_type.to_string(),
                    data: data.clone(),
                    metadata: metadata.clone(),
                    id,
                    timestamp: 0,
                    position: 0,
                    next_position: 0,
                    batch,
                    batch_end: false,
                });
                evs.push(
                    EventData::new(event_type, data)
                        .with_metadata(metadata)
                        .with_id(id),
                );
            }
            let expected = match number_before(&planned, STREAMS[s], evs.len()) {
                Some(v) => ExpectedVersion::Exact(v),
                None => ExpectedVersion::NoStream,
            };
            writes.push(StreamWrite::new(STREAMS[s], expected, evs));
        }
        planned.last_mut().unwrap().batch_end = true;
        // Synced appends from one thread are one group each; recovery tells groups apart by
        // their microsecond timestamps, so make sure the clock moves between them.
        std::thread::sleep(std::time::Duration::from_micros(20));
        if writes.len() == 1 && batch % 2 == 0 {
            let w = writes.pop().unwrap();
            store.append(&w.stream, w.expected, w.events).unwrap();
        } else {
            store.append_multi(writes).unwrap();
        }
    }
    // Positions and timestamps, from the store; everything else must be what was written.
    let read: Vec<RecordedEvent> = store
        .read_all_forward(Position::START, usize::MAX)
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    assert_eq!(read.len(), planned.len());
    for (e, p) in read.iter().zip(planned.iter_mut()) {
        p.timestamp = e.timestamp_micros();
        p.position = e.position().0;
        p.next_position = e.next_position().0;
        assert_eq!(diff(&Got::from(e), p), None);
    }
    store.close().unwrap();
    planned
}

/// The version `stream` had before its last `n` planned events.
fn number_before(planned: &[Ev], stream: &str, n: usize) -> Option<u64> {
    let count = planned.iter().filter(|e| e.stream == stream).count();
    (count > n).then(|| (count - n - 1) as u64)
}

// ---------------------------------------------------------------------------------------------
// The store's files, and what each byte of them is.
// ---------------------------------------------------------------------------------------------

struct Seg {
    file: usize,
    base: u64,
    /// End of the last record in it.
    data_end: u64,
}

struct Fixture {
    /// File names and bytes, sorted by name (`LOCK` left out).
    files: Vec<(String, Vec<u8>)>,
    segs: Vec<Seg>,
    model: Vec<Ev>,
}

const META: &str = "eventjournal.meta";
/// The key table (FORMAT.md, "The key table").
const KEYS: &str = "keys.tbl";

impl Fixture {
    fn new(scratch: &Path, keep_index_files: bool) -> Fixture {
        let dir = scratch.join("pristine");
        let model = build_store(&dir);
        if keep_index_files {
            // Opened again, as an application's store has been: its key table is made.
            let store = Store::open(&dir, opts()).unwrap();
            let started = Instant::now();
            while store.index_info().key_table_files == 0 {
                assert!(started.elapsed() < Duration::from_secs(20), "no key table");
                std::thread::sleep(Duration::from_millis(5));
            }
            store.close().unwrap();
        }
        let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| e.file_name().into_string().unwrap())
            .filter(|n| n != "LOCK")
            .filter(|n| keep_index_files || !is_cache(n))
            .map(|n| {
                let bytes = fs::read(dir.join(&n)).unwrap();
                (n, bytes)
            })
            .collect();
        files.sort();
        fs::remove_dir_all(&dir).unwrap();
        let mut segs = Vec::new();
        for (i, (name, bytes)) in files.iter().enumerate() {
            let Some(digits) = name.strip_suffix(".seg") else {
                continue;
            };
            let base: u64 = digits.parse().unwrap();
            // Every batch fits in 4 KiB: every segment has the configured size (check_store
            // relies on it to find segment starts).
            let capacity = bytes.len() as u64;
            assert_eq!(capacity, 4096, "{name}");
            let data_end = model
                .iter()
                .filter(|e| e.position >= base && e.position < base + capacity)
                .map(|e| e.next_position - base)
                .max()
                .unwrap_or(64);
            segs.push(Seg {
                file: i,
                base,
                data_end,
            });
        }
        assert!(segs.len() >= 4, "{} segments", segs.len());
        assert_eq!(
            files.iter().filter(|f| f.0.ends_with(".idx")).count(),
            if keep_index_files { segs.len() } else { 0 },
            "every segment of a closed store has an index file"
        );
        assert!(files.iter().any(|f| f.0 == META));
        assert_eq!(files.iter().any(|f| f.0 == KEYS), keep_index_files);
        Fixture { files, segs, model }
    }

    /// What byte `offset` of file `file` is.
    fn region(&self, file: usize, offset: u64) -> Region {
        let name = &self.files[file].0;
        if name == META {
            return Region::Meta;
        }
        if is_cache(name) {
            return Region::Index;
        }
        let seg = self.segs.iter().position(|s| s.file == file).unwrap();
        let s = &self.segs[seg];
        if offset < 64 {
            return Region::SegHeader { seg };
        }
        let pos = s.base + offset;
        if let Some(event) = self
            .model
            .iter()
            .position(|e| e.position <= pos && pos < e.next_position)
        {
            return Region::Record { seg, event };
        }
        if offset >= s.data_end && offset < s.data_end + 4 {
            Region::EndWord { seg }
        } else {
            Region::Tail { seg }
        }
    }

    fn path_in(&self, dir: &Path, file: usize) -> PathBuf {
        dir.join(&self.files[file].0)
    }

    /// Writes the store into `dir`, with byte `offset` of file `file` XORed with `mask`.
    ///
    /// The key table is written last, its list of covered index files given the stamps of the
    /// files just written (as if the store had made it from them), since a table whose files are
    /// not the ones it was made from is never used, and so its damage would never be read.
    fn materialize(&self, dir: &Path, case: &Case) {
        fs::create_dir(dir).unwrap();
        for (i, (name, _)) in self.files.iter().enumerate() {
            if name == KEYS {
                continue;
            }
            fs::write(dir.join(name), self.damaged_bytes(i, case)).unwrap();
        }
        if let Some(i) = self.files.iter().position(|f| f.0 == KEYS) {
            let mut b = self.files[i].1.clone();
            restamp_key_table(&mut b, dir);
            if i == case.file {
                b[case.offset as usize] ^= case.mask;
            }
            fs::write(dir.join(KEYS), b).unwrap();
        }
    }

    /// The bytes of file `file` as [`materialize`](Self::materialize) writes them for `case`.
    fn damaged_bytes(&self, file: usize, case: &Case) -> Vec<u8> {
        let mut b = self.files[file].1.clone();
        if file == case.file {
            b[case.offset as usize] ^= case.mask;
        }
        b
    }

    /// Segment files (of the store as written) that are not in `dir` as they were written.
    fn changed_segments(&self, dir: &Path, case: &Case) -> Vec<String> {
        (0..self.files.len())
            .filter(|&i| self.files[i].0.ends_with(".seg"))
            .filter(|&i| {
                fs::read(dir.join(&self.files[i].0)).ok() != Some(self.damaged_bytes(i, case))
            })
            .map(|i| self.files[i].0.clone())
            .collect()
    }

    /// Index of the first event of the batch holding event `k`.
    fn batch_start(&self, k: usize) -> usize {
        let b = self.model[k].batch;
        self.model.iter().position(|e| e.batch == b).unwrap()
    }

    /// Events of the model in segments before `seg`.
    fn events_before_seg(&self, seg: usize) -> usize {
        let base = self.segs[seg].base;
        self.model.iter().filter(|e| e.position < base).count()
    }

    /// The first event of the newest group: every batch here was appended alone and synced, so
    /// a group is a batch unless two batches got the same timestamp (then they share a group as
    /// far as recovery can tell).
    fn newest_group_start(&self) -> usize {
        let last = self.model.last().unwrap().timestamp;
        let mut k = self.model.len();
        while k > 0 && self.model[k - 1].timestamp == last {
            k -= 1;
        }
        k
    }
}

/// One damaged byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Case {
    file: usize,
    offset: u64,
    mask: u8,
}

/// What a damaged byte is, and what that damage must lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Region {
    /// `eventjournal.meta`. FORMAT.md: bytes 0..8 (the magic) give `NotAStore`; the others fail
    /// the checksum (checked before the version): `Corrupt` naming the meta file, offset 0. Both
    /// modes fail the same way: the meta file is checked before recovery.
    Meta,
    /// A segment header. Every byte is covered by the header CRC (checked before the version, so
    /// never `UnsupportedVersion` for one flipped byte): `Corrupt` naming the segment, offset 0
    /// (or 16 for a base mismatch). `Strict` must fail. `Salvage` keeps the segments before it
    /// and sets it and the later ones aside; for the first segment there is nothing before it and
    /// `Salvage` fails with the same error.
    SegHeader { seg: usize },
    /// Inside the record of model event `event`: its checksum (or a length/trailer check) fails.
    /// `Strict` may open (damage under an index file is found by the read that meets it, and
    /// damage in the newest group is a torn tail, cut) or fail with `Corrupt` naming the segment
    /// at the record (or its batch) start. `Salvage` keeps exactly the batches before it.
    Record { seg: usize, event: usize },
    /// The four bytes after the last record of a segment: the length word that ends the log
    /// becomes non-zero, a bad record. In a sealed segment `Strict` may fail (`Corrupt` at that
    /// offset) and `Salvage` keeps everything up to it, setting later segments aside; in the
    /// newest it is a torn tail of nothing.
    EndWord { seg: usize },
    /// Zeros after the end word: never read. Everything reads back exactly.
    Tail { seg: usize },
    /// An index file: a cache, rebuilt when damaged. Both modes open and read back everything.
    Index,
}

impl Region {
    /// How many model events `Salvage` must keep, or `None` if it must fail.
    fn salvage_keeps(self, fx: &Fixture) -> Option<usize> {
        let all = fx.model.len();
        match self {
            Region::Meta | Region::SegHeader { seg: 0 } => None,
            Region::SegHeader { seg } => Some(fx.events_before_seg(seg)),
            Region::Record { event, .. } => Some(fx.batch_start(event)),
            Region::EndWord { seg } => Some(
                fx.segs
                    .get(seg + 1)
                    .map_or(all, |_| fx.events_before_seg(seg + 1)),
            ),
            Region::Tail { .. } | Region::Index => Some(all),
        }
    }

    /// Which event counts a successful `Strict` open may hold: all of them, or, for damage in
    /// the records of the newest group (indistinguishable from a torn write of it), all but that
    /// group.
    ///
    /// One more case reads as a torn write of the newest group: damage to the timestamp of a
    /// batch's first record that makes it name the newest group's timestamp. A record that fails
    /// its checksum has only that field to tell its group by (FORMAT.md, "Torn tail"), so strict
    /// recovery takes the batch for part of the newest group and cuts it with that group.
    fn strict_may_keep(self, fx: &Fixture, case: &Case) -> Vec<usize> {
        let all = fx.model.len();
        match self {
            Region::Record { event, .. } if event >= fx.newest_group_start() => {
                vec![all, fx.newest_group_start()]
            }
            Region::Record { seg, event } if fx.batch_start(event) == event => {
                let record = fx.model[event].position - fx.segs[seg].base;
                let field = record + 24..record + 32;
                let newest = fx.model.last().map(|e| e.timestamp);
                if field.contains(&case.offset) {
                    let at = (case.offset - field.start) * 8;
                    let named = fx.model[event].timestamp ^ (u64::from(case.mask) << at);
                    if Some(named) == newest {
                        return vec![all, event];
                    }
                }
                vec![all]
            }
            _ => vec![all],
        }
    }

    /// Where in the damaged file an error may point: from this offset up to the damaged byte.
    fn first_blamable_offset(self, fx: &Fixture) -> u64 {
        match self {
            Region::Meta | Region::SegHeader { .. } | Region::Index => 0,
            Region::Record { seg, event } => {
                fx.model[fx.batch_start(event)].position - fx.segs[seg].base
            }
            Region::EndWord { seg } | Region::Tail { seg } => fx.segs[seg].data_end,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checking a store against the model.
// ---------------------------------------------------------------------------------------------

/// A violation: a short kind (for the summary), and what exactly was seen.
type Violation = (&'static str, String);

/// What reading a whole store found.
#[derive(Debug, Default)]
struct StoreCheck {
    /// Model events the store holds (its head is after them).
    kept: usize,
    /// Reads that ended in an error (allowed ones; others are violations).
    read_errors: usize,
    violations: Vec<Violation>,
}

impl StoreCheck {
    /// Judges one read: `got` in order must be `want` in order; it may stop early only with an
    /// error, which `allowed` must accept.
    fn judge(
        &mut self,
        what: &str,
        got: &[Got],
        end: Option<Error>,
        want: &[&Ev],
        allowed: &dyn Fn(&Error) -> bool,
    ) {
        for (i, g) in got.iter().enumerate() {
            match want.get(i) {
                Some(w) => {
                    if let Some(d) = diff(g, w) {
                        self.violations.push((
                            "wrong bytes returned",
                            format!("{what}: item {i} differs from the model: {d}"),
                        ));
                        return;
                    }
                }
                None => {
                    self.violations.push((
                        "event beyond the store's head returned",
                        format!(
                            "{what}: returned {} events, the store holds {} (extra: {g:?})",
                            got.len(),
                            want.len()
                        ),
                    ));
                    return;
                }
            }
        }
        match end {
            Some(e) => {
                self.read_errors += 1;
                if !allowed(&e) {
                    self.violations.push((
                        "read failed with an unexpected error",
                        format!("{what}: error after {} events: {e:?}", got.len()),
                    ));
                }
            }
            None if got.len() < want.len() => self.violations.push((
                "read ended early without an error",
                format!("{what}: ended after {} of {} events", got.len(), want.len()),
            )),
            None => {}
        }
    }
}

/// Everything an iterator yields until its first error.
fn collect(it: impl Iterator<Item = Result<RecordedEvent>>) -> (Vec<Got>, Option<Error>) {
    let mut got = Vec::new();
    for r in it {
        match r {
            Ok(e) => got.push(Got::from(&e)),
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

/// Reads everything in `store` every way the API offers and compares each event with `model`.
/// The store must hold a batch-aligned prefix of `model` (its `kept` events); a read may end in
/// an error for which `allowed` says yes, and must otherwise return exactly the prefix.
fn check_store(store: &Store, model: &[Ev], allowed: &dyn Fn(&Error) -> bool) -> StoreCheck {
    let mut c = StoreCheck::default();
    let head = store.head().0;
    let kept = model.iter().take_while(|e| e.position < head).count();
    c.kept = kept;
    let prev_end = if kept == 0 {
        64
    } else {
        model[kept - 1].next_position
    };
    // A cut at the first record of a segment leaves that segment with nothing: the head is at its
    // first record offset.
    let at_segment_start = kept < model.len() && head == model[kept].position && head % 4096 == 64;
    if head != prev_end && !at_segment_start {
        c.violations.push((
            "head not at an event boundary",
            format!("head {head} is not the end of an event of the model (after {kept} events)"),
        ));
    }
    if kept > 0 && !model[kept - 1].batch_end {
        c.violations.push((
            "part of a batch kept",
            format!(
                "the store holds {kept} events: part of batch {}",
                model[kept - 1].batch
            ),
        ));
    }
    let prefix = &model[..kept];

    // First, each stream's first use since open by an append, refused for its expected version
    // (so nothing is written): an append finds a stream it has not used through the key table
    // when one is in use, and the version it reports must be the stream's.
    let mut names: Vec<&str> = STREAMS.to_vec();
    names.extend(model.iter().map(|e| e.stream.as_str()));
    names.sort();
    names.dedup();
    for &name in &names {
        let version = prefix
            .iter()
            .rev()
            .find(|e| e.stream == name)
            .map(|e| e.number);
        let refused = store.append(
            name,
            ExpectedVersion::Exact(u64::MAX - 1),
            [EventData::new("Probe", &b""[..])],
        );
        match refused {
            Err(Error::WrongExpectedVersion { actual, .. }) if actual == version => {}
            Err(e) if allowed(&e) => c.read_errors += 1,
            other => c.violations.push((
                "wrong version at a first append",
                format!(
                    "append to `{name}` expecting {}: {other:?}, version {version:?}",
                    u64::MAX - 1
                ),
            )),
        }
    }

    let mut streams: Vec<&str> = Vec::new();
    for e in prefix {
        if !streams.contains(&e.stream.as_str()) {
            streams.push(&e.stream);
        }
    }
    streams.sort_unstable();
    // An error is damage reported (an index file's names that do not read), not a wrong answer.
    if let Ok(listed) = store.streams() {
        if listed != streams {
            c.violations.push((
                "wrong stream list",
                format!("streams() {listed:?} != {streams:?}"),
            ));
        }
    }

    let all_fwd: Vec<&Ev> = prefix.iter().collect();
    let all_bwd: Vec<&Ev> = prefix.iter().rev().collect();
    let (got, end) = match store.read_all_forward(Position::START, usize::MAX) {
        Ok(it) => collect(it),
        Err(e) => (Vec::new(), Some(e)),
    };
    c.judge("$all forward", &got, end, &all_fwd, allowed);
    let (got, end) = match store.read_all_backward(Position::END, usize::MAX) {
        Ok(it) => collect(it),
        Err(e) => (Vec::new(), Some(e)),
    };
    c.judge("$all backward", &got, end, &all_bwd, allowed);
    let mut got = Vec::new();
    let r = store.replay_all(Position::START, |e| {
        got.push(Got::from(e));
        ControlFlow::Continue(())
    });
    c.judge("replay_all", &got, r.err(), &all_fwd, allowed);

    for name in names {
        let fwd: Vec<&Ev> = prefix.iter().filter(|e| e.stream == name).collect();
        let bwd: Vec<&Ev> = fwd.iter().rev().copied().collect();
        let version = fwd.last().map(|e| e.number);
        match store.stream_version(name) {
            Ok(got) if got != version => c.violations.push((
                "wrong stream version",
                format!("stream_version({name}) {got:?} != {version:?}"),
            )),
            _ => {}
        }
        let (got, end) = match store.read_stream_forward(name, 0, usize::MAX) {
            Ok(it) => collect(it),
            Err(e) => (Vec::new(), Some(e)),
        };
        c.judge(&format!("`{name}` forward"), &got, end, &fwd, allowed);
        let (got, end) = match store.read_stream_backward(name, u64::MAX, usize::MAX) {
            Ok(it) => collect(it),
            Err(e) => (Vec::new(), Some(e)),
        };
        c.judge(&format!("`{name}` backward"), &got, end, &bwd, allowed);
        let mut got = Vec::new();
        let r = store.replay_stream(name, 0, |e| {
            got.push(Got::from(e));
            ControlFlow::Continue(())
        });
        c.judge(
            &format!("replay_stream `{name}`"),
            &got,
            r.err(),
            &fwd,
            allowed,
        );
    }
    for (k, want) in model.iter().enumerate() {
        let what = format!("read_event({}, {})", want.stream, want.number);
        match store.read_event(&want.stream, want.number) {
            Ok(e) if k < kept => c.judge(&what, &[Got::from(&e)], None, &[want], allowed),
            Ok(e) => c.violations.push((
                "event beyond the store's head returned",
                format!(
                    "{what}: returned {:?}, but the store holds only {kept} events",
                    Got::from(&e)
                ),
            )),
            Err(Error::EventNotFound { .. }) if k >= kept => {}
            Err(e) if k < kept => c.judge(&what, &[], Some(e), &[want], allowed),
            Err(e) => c.violations.push((
                "read failed with an unexpected error",
                format!("{what} (not held): {e:?}"),
            )),
        }
    }
    c
}

// ---------------------------------------------------------------------------------------------
// One case.
// ---------------------------------------------------------------------------------------------

/// What one case saw.
#[derive(Debug, Default)]
struct Outcome {
    strict: String,
    strict_kept: Option<usize>,
    strict_read_errors: usize,
    salvage: String,
    salvage_kept: Option<usize>,
    violations: Vec<Violation>,
}

fn opts() -> Options {
    Options::default().segment_size(4096)
}

fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::Corrupt { .. } => "Corrupt",
        Error::NotAStore { .. } => "NotAStore",
        Error::UnsupportedVersion { .. } => "UnsupportedVersion",
        Error::Io { .. } => "Io",
        Error::InvalidInput(_) => "InvalidInput",
        _ => "other",
    }
}

/// Whether `e` is a `Corrupt` that blames the damaged file at a plausible offset: inside the
/// file, no later than the damaged byte and no earlier than `first` (the start of the damaged
/// record's batch, say). Reads may also blame the store directory `dir` (an index entry that
/// points at the wrong record), with a position as the offset.
fn blames(
    e: &Error,
    damaged: &Path,
    dir: Option<&Path>,
    first: u64,
    case: &Case,
    len: u64,
) -> bool {
    match e {
        Error::Corrupt { file, offset, .. } if file == damaged => {
            *offset < len && *offset <= case.offset && *offset >= first
        }
        Error::Corrupt { file, .. } => dir.is_some_and(|d| file == d),
        _ => false,
    }
}

/// Whether `e` is an error an open may fail with for damage in `region`.
fn expected_open_error(
    region: Region,
    e: &Error,
    damaged: &Path,
    case: &Case,
    fx: &Fixture,
) -> bool {
    let len = fx.files[case.file].1.len() as u64;
    match region {
        Region::Meta if case.offset < 8 => matches!(e, Error::NotAStore { .. }),
        Region::Meta => {
            matches!(e, Error::Corrupt { file, offset: 0, .. } if file == damaged)
        }
        Region::SegHeader { .. } => blames(e, damaged, None, 0, case, len),
        Region::Record { .. } | Region::EndWord { .. } => blames(
            e,
            damaged,
            None,
            region.first_blamable_offset(fx),
            case,
            len,
        ),
        Region::Tail { .. } | Region::Index => false,
    }
}

/// Stream index files, event-id tables and the manifest are caches of the log. (Every case's
/// store is a fresh copy, whose files have other inodes than the manifest names: it vouches for
/// none of them, and a damaged one is as good as none.)
fn is_cache(name: &str) -> bool {
    name.ends_with(".idx")
        || name.ends_with(".ids")
        || name == "eventjournal.manifest"
        || name == KEYS
}

/// Gives the key table's covered files (32 bytes each from byte 64: base, inode, length,
/// modification time in nanoseconds) the stamps of those files in `dir`, and signs its covered
/// list and header again (FORMAT.md, "The key table").
fn restamp_key_table(b: &mut [u8], dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let covered = u32::from_le_bytes(b[32..36].try_into().unwrap()) as usize;
    for k in 0..covered {
        let at = 64 + 32 * k;
        let base = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        let meta = fs::metadata(dir.join(format!("{base:020}.idx"))).unwrap();
        let mtime_ns = (meta.mtime() as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(meta.mtime_nsec() as u64);
        for (w, v) in [meta.ino(), meta.len(), mtime_ns].into_iter().enumerate() {
            b[at + 8 + 8 * w..at + 16 + 8 * w].copy_from_slice(&v.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&b[64..64 + 32 * covered]);
    b[40..44].copy_from_slice(&crc.to_le_bytes());
    let crc = crc32fast::hash(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// Whether byte `offset` of the key table `b` is one a lookup of this store's few keys may read:
/// the header, the covered list, the home slots and a few past them, the names. The other slots
/// (the spill area, free) are sampled.
fn key_table_byte_read(b: &[u8], offset: u64) -> bool {
    let slot_bits = u32::from_le_bytes(b[12..16].try_into().unwrap());
    let covered = u32::from_le_bytes(b[32..36].try_into().unwrap()) as u64;
    let slots_at = 64 + 32 * covered;
    let slots = (1u64 << slot_bits) + 4096;
    let names_at = slots_at + 32 * slots;
    offset < slots_at + 32 * ((1 << slot_bits) + 16) || offset >= names_at
}

/// With the key table damaged, waits until the store uses a table (the damaged one, or one it
/// made again after refusing it), so that the first uses the checks make go through it; a
/// violation if it does not within seconds.
fn await_key_table(store: &Store, fx: &Fixture, case: &Case) -> Option<Violation> {
    if fx.files[case.file].0 != KEYS {
        return None;
    }
    let started = Instant::now();
    while store.index_info().key_table_files == 0 {
        if started.elapsed() > Duration::from_secs(10) {
            return Some((
                "no key table in use",
                "strict open: no key table in use after 10 s".to_string(),
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

fn run_case(fx: &Fixture, scratch: &Path, case: &Case) -> Outcome {
    let mut out = Outcome::default();
    let region = fx.region(case.file, case.offset);
    let len = fx.files[case.file].1.len() as u64;
    let all = fx.model.len();

    // Strict.
    let dir = scratch.join("strict");
    fx.materialize(&dir, case);
    let damaged = fx.path_in(&dir, case.file);
    let first = region.first_blamable_offset(fx);
    match Store::open(&dir, opts()) {
        Err(e) => {
            out.strict = error_kind(&e).to_string();
            if !expected_open_error(region, &e, &damaged, case, fx) {
                out.violations.push((
                    "strict open failed with an unexpected error",
                    format!("strict open failed with {e:?}"),
                ));
            }
            // A refused store is left as it was, for `Salvage` (or a person) to look at.
            let changed = fx.changed_segments(&dir, case);
            if !changed.is_empty() {
                out.violations.push((
                    "failed strict open changed segment files",
                    format!("strict open failed with {e:?} and changed {changed:?}"),
                ));
            }
        }
        Ok(store) => {
            out.strict = "opened".to_string();
            out.violations.extend(await_key_table(&store, fx, case));
            if matches!(region, Region::Meta | Region::SegHeader { .. }) {
                out.violations.push((
                    "strict open accepted a damaged header",
                    format!("strict open succeeded, head {}", store.head()),
                ));
            }
            // Reads may fail only on damage a checksum finds: in the damaged segment's records
            // (or a misplaced index entry, blamed on the directory), or, for a damaged index file
            // whose run is checked on first use, naming that file.
            let read_ok = |e: &Error| match region {
                Region::Record { .. } | Region::EndWord { .. } => {
                    blames(e, &damaged, Some(&dir), first, case, len)
                }
                Region::Index => blames(e, &damaged, None, 0, case, len),
                _ => false,
            };
            let c = check_store(&store, &fx.model, &read_ok);
            drop(store);
            out.strict_kept = Some(c.kept);
            out.strict_read_errors = c.read_errors;
            let may_keep = region.strict_may_keep(fx, case);
            if !may_keep.contains(&c.kept) {
                out.violations.push((
                    "strict open dropped acknowledged batches without an error",
                    format!(
                        "strict open kept {} of {all} events (allowed: {may_keep:?})",
                        c.kept
                    ),
                ));
            }
            out.violations.extend(
                c.violations
                    .into_iter()
                    .map(|(k, v)| (k, format!("strict: {v}"))),
            );
        }
    }
    fs::remove_dir_all(&dir).unwrap();

    // Salvage, on a fresh copy of the damaged store.
    let dir = scratch.join("salvage");
    fx.materialize(&dir, case);
    let damaged = fx.path_in(&dir, case.file);
    let want = region.salvage_keeps(fx);
    match Store::open(&dir, opts().recovery(Recovery::Salvage)) {
        Err(e) => {
            out.salvage = format!("failed: {}", error_kind(&e));
            if want.is_some() || !expected_open_error(region, &e, &damaged, case, fx) {
                out.violations.push((
                    "salvage failed",
                    format!("salvage open failed with {e:?} (expected to keep {want:?} events)"),
                ));
            }
        }
        Ok(store) => {
            out.salvage = "opened".to_string();
            // Segments set aside are renamed, never changed or deleted.
            for (i, (name, _)) in fx.files.iter().enumerate() {
                if name.ends_with(".seg") && !dir.join(name).exists() {
                    let aside = dir.join(format!("{name}.salvaged"));
                    if fs::read(&aside).ok() != Some(fx.damaged_bytes(i, case)) {
                        out.violations.push((
                            "salvage lost a segment",
                            format!("{name} is gone and {} does not hold it", aside.display()),
                        ));
                    }
                }
            }
            if want.is_none() {
                out.violations.push((
                    "salvage accepted a store it cannot open",
                    format!("salvage open succeeded, head {}", store.head()),
                ));
            }
            // Salvage verified every record it kept: no read may fail.
            let c = check_store(&store, &fx.model, &|_| false);
            out.salvage_kept = Some(c.kept);
            if want.is_some_and(|w| w != c.kept) {
                out.violations.push((
                    "salvage kept a wrong prefix",
                    format!("salvage kept {} events, expected {want:?}", c.kept),
                ));
            }
            out.violations.extend(
                c.violations
                    .into_iter()
                    .map(|(k, v)| (k, format!("salvage: {v}"))),
            );
            // Appends continue after the kept prefix, and the result opens strictly.
            let mut after: Vec<Ev> = fx.model[..c.kept].to_vec();
            let probe = EventData::new("Probe", &b"after salvage"[..]).with_metadata(&b"m"[..]);
            let probe_id = probe.id();
            match store.append("probe", ExpectedVersion::NoStream, [probe]) {
                Ok(_) => match store.read_event("probe", 0) {
                    Ok(e) => {
                        let g = Got::from(&e);
                        after.push(Ev {
                            stream: "probe".into(),
                            number: 0,
                            event_type: "Probe".into(),
                            data: b"after salvage".to_vec(),
                            metadata: b"m".to_vec(),
                            id: probe_id,
                            timestamp: g.timestamp,
                            position: g.position,
                            next_position: g.next_position,
                            batch: usize::MAX,
                            batch_end: true,
                        });
                        if let Some(d) = diff(&g, after.last().unwrap()) {
                            out.violations.push((
                                "wrong bytes returned",
                                format!("salvage: the appended event reads {d}"),
                            ));
                        }
                    }
                    Err(e) => out.violations.push((
                        "append after salvage failed",
                        format!("reading the appended event: {e:?}"),
                    )),
                },
                Err(e) => out
                    .violations
                    .push(("append after salvage failed", format!("{e:?}"))),
            }
            drop(store);
            match Store::open(&dir, opts()) {
                Ok(store) => {
                    let c = check_store(&store, &after, &|_| false);
                    if c.kept != after.len() {
                        out.violations.push((
                            "reopen after salvage lost events",
                            format!("holds {} events, expected {}", c.kept, after.len()),
                        ));
                    }
                    out.violations.extend(
                        c.violations
                            .into_iter()
                            .map(|(k, v)| (k, format!("reopened after salvage: {v}"))),
                    );
                }
                Err(e) => out.violations.push((
                    "strict reopen after salvage failed",
                    format!("strict open after salvage and an append failed: {e:?}"),
                )),
            }
        }
    }
    fs::remove_dir_all(&dir).unwrap();
    out
}

// ---------------------------------------------------------------------------------------------
// Sweeps.
// ---------------------------------------------------------------------------------------------

fn full_sweep() -> bool {
    std::env::var("EVJ_CORRUPTION_ALL").is_ok_and(|v| v == "1")
}

/// A scratch directory: on tmpfs when there is one (each case writes and fsyncs a whole store).
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("evj-corruption")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

/// A cheap deterministic hash for sampling and masks.
fn mix(a: u64, b: u64) -> u64 {
    Rng(a.wrapping_mul(0x1000_0000_01B3) ^ b).next()
}

/// The cases of one sweep. Full: every byte of every file, with masks 0x01, 0x80 and a
/// per-byte pseudo-random non-zero mask. Sampled (the default): every byte of the meta file,
/// the segment headers, the index files, the record fields before the stream name, the record
/// trailers and the end words, with 0x01; about one byte in 12 of the rest of the records and
/// one in 64 of the zero tails, also with 0x01; and a second pass over about a third of those
/// bytes with 0x80 (every record length word is in it).
fn cases(fx: &Fixture, full: bool) -> Vec<Case> {
    let mut out = Vec::new();
    for (file, (_, bytes)) in fx.files.iter().enumerate() {
        for offset in 0..bytes.len() as u64 {
            let region = fx.region(file, offset);
            let h = mix(file as u64 + 1, offset);
            if full {
                for mask in [0x01, 0x80, (h % 255) as u8 + 1] {
                    out.push(Case { file, offset, mask });
                }
                continue;
            }
            let (every, len_word) = match region {
                Region::Index if fx.files[file].0 == KEYS => (
                    key_table_byte_read(bytes, offset) || h.is_multiple_of(256),
                    false,
                ),
                Region::Meta
                | Region::SegHeader { .. }
                | Region::Index
                | Region::EndWord { .. } => (true, false),
                Region::Record { seg, event } => {
                    let at = fx.segs[seg].base + offset - fx.model[event].position;
                    let end = fx.model[event].next_position - fx.model[event].position;
                    (at < 56 || at >= end - 4 || h.is_multiple_of(12), at < 4)
                }
                Region::Tail { .. } => (h.is_multiple_of(64), false),
            };
            if every {
                out.push(Case {
                    file,
                    offset,
                    mask: 0x01,
                });
                if len_word || (h >> 8).is_multiple_of(3) {
                    out.push(Case {
                        file,
                        offset,
                        mask: 0x80,
                    });
                }
            }
        }
    }
    out
}

/// `EVJ_CORRUPTION_ONLY=<file>:<offset>:<mask>`: `None` if not set, else the one case to run
/// (none, if this sweep's store has no such file, e.g. an index file in the sweep without them).
fn only_case(fx: &Fixture) -> Option<Vec<Case>> {
    let spec = std::env::var("EVJ_CORRUPTION_ONLY").ok()?;
    let parse = || {
        let mut parts = spec.split(':');
        let name = parts.next()?;
        let offset: u64 = parts.next()?.parse().ok()?;
        let mask = u8::from_str_radix(parts.next()?.trim_start_matches("0x"), 16).ok()?;
        Some((name.to_string(), offset, mask))
    };
    let (name, offset, mask) =
        parse().unwrap_or_else(|| panic!("EVJ_CORRUPTION_ONLY={spec}: expected file:offset:mask"));
    Some(
        fx.files
            .iter()
            .position(|f| f.0 == name)
            .filter(|&file| offset < fx.files[file].1.len() as u64)
            .map(|file| Case { file, offset, mask })
            .into_iter()
            .collect(),
    )
}

#[derive(Default)]
struct Stats {
    cases: usize,
    strict: BTreeMap<String, usize>,
    strict_cut: usize,
    strict_with_read_errors: usize,
    salvage: BTreeMap<String, usize>,
    salvage_kept: BTreeMap<usize, usize>,
    by_region: BTreeMap<&'static str, usize>,
    panics: usize,
    violations: Vec<String>,
    violation_kinds: BTreeMap<String, usize>,
}

fn region_name(r: Region) -> &'static str {
    match r {
        Region::Meta => "meta",
        Region::SegHeader { .. } => "segment header",
        Region::Record { .. } => "record",
        Region::EndWord { .. } => "end word",
        Region::Tail { .. } => "zero tail",
        Region::Index => "index file",
    }
}

/// Runs every case of a sweep over `fx` and fails, listing every violation, if any.
fn sweep(label: &str, fx: &Fixture, scratch: &Path) {
    let started = Instant::now();
    let full = full_sweep();
    let only = only_case(fx);
    let verbose = only.is_some();
    let cases = only.unwrap_or_else(|| cases(fx, full));
    let mut st = Stats::default();
    for (n, case) in cases.iter().enumerate() {
        let region = fx.region(case.file, case.offset);
        let work = scratch.join(format!("case-{n}"));
        fs::create_dir(&work).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| run_case(fx, &work, case)));
        let _ = fs::remove_dir_all(&work);
        st.cases += 1;
        *st.by_region.entry(region_name(region)).or_default() += 1;
        let repro = format!(
            "{}:{}:{:#04x} ({region:?})",
            fx.files[case.file].0, case.offset, case.mask
        );
        match r {
            Ok(o) => {
                if verbose {
                    if let Region::Record { seg, event } = region {
                        let e = &fx.model[event];
                        let base = fx.segs[seg].base;
                        println!(
                            "damaged byte {} of the record of `{}` #{} (segment offsets {}..{}, \
                             batch {} from event {})",
                            fx.segs[seg].base + case.offset - e.position,
                            e.stream,
                            e.number,
                            e.position - base,
                            e.next_position - base,
                            e.batch,
                            fx.batch_start(event)
                        );
                    }
                    println!("{label} {repro}: {o:#?}");
                }
                *st.strict.entry(o.strict.clone()).or_default() += 1;
                if o.strict_kept.is_some_and(|k| k < fx.model.len()) {
                    st.strict_cut += 1;
                }
                if o.strict_read_errors > 0 {
                    st.strict_with_read_errors += 1;
                }
                *st.salvage.entry(o.salvage.clone()).or_default() += 1;
                if let Some(k) = o.salvage_kept {
                    *st.salvage_kept.entry(k).or_default() += 1;
                }
                for (kind, v) in o.violations {
                    *st.violation_kinds
                        .entry(format!("{} / {kind}", region_name(region)))
                        .or_default() += 1;
                    st.violations.push(format!("{repro}: {v}"));
                }
            }
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                st.panics += 1;
                *st.violation_kinds
                    .entry(format!("{} / panic", region_name(region)))
                    .or_default() += 1;
                st.violations.push(format!("{repro}: PANIC: {msg}"));
            }
        }
    }
    let bytes: usize = fx.files.iter().map(|f| f.1.len()).sum();
    let mut summary = String::new();
    let _ = write!(
        summary,
        "corruption [{label}]: {} cases ({}) over {} files, {bytes} bytes, {} events in {} \
         segments, {:.1?}; by region {:?}; strict: {:?}, {} cut back, {} with a read error; \
         salvage: {:?}, kept events -> cases {:?}; {} panics, {} violations",
        st.cases,
        if full {
            "every byte, 3 masks"
        } else {
            "sampled"
        },
        fx.files.len(),
        fx.model.len(),
        fx.segs.len(),
        started.elapsed(),
        st.by_region,
        st.strict,
        st.strict_cut,
        st.strict_with_read_errors,
        st.salvage,
        st.salvage_kept,
        st.panics,
        st.violations.len(),
    );
    println!("{summary}");
    if !st.violations.is_empty() {
        let mut report = format!(
            "{} violations [{label}] by kind: {:#?}\n",
            st.violations.len(),
            st.violation_kinds
        );
        for v in st.violations.iter().take(60) {
            let _ = writeln!(report, "  {v}");
        }
        if st.violations.len() > 60 {
            let _ = writeln!(report, "  ... and {} more", st.violations.len() - 60);
        }
        panic!("{report}");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------------

/// The store as written: every file, with its index files.
#[test]
fn every_damaged_byte_is_reported_or_salvaged_and_never_misread() {
    let scratch = scratch();
    let fx = Fixture::new(scratch.path(), true);
    sweep("with index files", &fx, scratch.path());
}

/// The same store without its index files: opening scans every segment, so damage is met by
/// recovery rather than by reads.
#[test]
fn every_damaged_byte_without_index_files_is_reported_or_salvaged() {
    let scratch = scratch();
    let fx = Fixture::new(scratch.path(), false);
    sweep("without index files", &fx, scratch.path());
}

/// The undamaged store reads back exactly, in both modes: the checks above do not flag a store
/// that is right.
#[test]
fn the_undamaged_store_reads_back_exactly() {
    let scratch = scratch();
    let fx = Fixture::new(scratch.path(), true);
    for recovery in [Recovery::Strict, Recovery::Salvage] {
        let dir = scratch.path().join(format!("{recovery:?}"));
        fs::create_dir(&dir).unwrap();
        for (name, bytes) in &fx.files {
            fs::write(dir.join(name), bytes).unwrap();
        }
        let store = Store::open(&dir, opts().recovery(recovery)).unwrap();
        let c = check_store(&store, &fx.model, &|_| false);
        assert_eq!(c.violations, Vec::<Violation>::new(), "{recovery:?}");
        assert_eq!(c.kept, fx.model.len());
        assert_eq!(c.read_errors, 0);
    }
    // The store has what the sweep needs: multi-event and multi-stream batches, sealed segments,
    // record lengths with a single bit set, batches in distinct groups.
    let batches = fx.model.last().unwrap().batch + 1;
    let sizes: Vec<usize> = (0..batches)
        .map(|b| fx.model.iter().filter(|e| e.batch == b).count())
        .collect();
    assert!(sizes.iter().filter(|&&n| n > 1).count() >= 5, "{sizes:?}");
    assert!((30..=60).contains(&fx.model.len()), "{}", fx.model.len());
    let pow2 = fx
        .model
        .iter()
        .filter(|e| (e.next_position - e.position).is_power_of_two())
        .count();
    assert!(pow2 >= 6, "{pow2}");
    assert_eq!(fx.newest_group_start(), fx.batch_start(fx.model.len() - 1));
}

/// The comparison rejects an event that differs from the model in any field, and the store
/// check reports a store that does not hold what the model says.
#[test]
fn the_checks_reject_a_modified_event() {
    let scratch = scratch();
    let fx = Fixture::new(scratch.path(), true);
    let want = &fx.model[7];
    let same = Got {
        stream: want.stream.clone(),
        number: want.number,
        event_type: want.event_type.clone(),
        data: want.data.clone(),
        metadata: want.metadata.clone(),
        id: want.id,
        timestamp: want.timestamp,
        position: want.position,
        next_position: want.next_position,
    };
    assert_eq!(diff(&same, want), None);
    let mut changed: Vec<Got> = Vec::new();
    let mut g = same.clone();
    g.stream.push('x');
    changed.push(g);
    let mut g = same.clone();
    g.number += 1;
    changed.push(g);
    let mut g = same.clone();
    g.event_type.pop();
    changed.push(g);
    let mut g = same.clone();
    g.data[3] ^= 1;
    changed.push(g);
    let mut g = same.clone();
    g.metadata.push(0);
    changed.push(g);
    let mut g = same.clone();
    g.id.0[15] ^= 0x80;
    changed.push(g);
    let mut g = same.clone();
    g.timestamp += 1;
    changed.push(g);
    let mut g = same.clone();
    g.position += 8;
    changed.push(g);
    let mut g = same.clone();
    g.next_position -= 8;
    changed.push(g);
    for g in &changed {
        assert!(diff(g, want).is_some(), "{g:?} passed as {want:?}");
    }

    // A store whose event 7 has one byte of data other than the model's.
    let dir = scratch.path().join("store");
    fs::create_dir(&dir).unwrap();
    for (name, bytes) in &fx.files {
        fs::write(dir.join(name), bytes).unwrap();
    }
    let store = Store::open(&dir, opts()).unwrap();
    let mut model = fx.model.clone();
    model[7].data[3] ^= 1;
    let c = check_store(&store, &model, &|_| true);
    assert!(
        c.violations.iter().any(|v| v.1.contains("data")),
        "{:?}",
        c.violations
    );
    // A store missing the model's last batch (as if cut) is flagged by the sweep's rule for
    // where a strict open may cut.
    let mut longer = fx.model.clone();
    let mut extra = longer.last().unwrap().clone();
    extra.number += 1;
    extra.position = extra.next_position;
    extra.next_position += 64;
    extra.batch += 1;
    longer.push(extra);
    let c = check_store(&store, &longer, &|_| true);
    assert_eq!(c.kept, fx.model.len());
    assert!(c.kept < longer.len());
    // Reads that fail where no error is allowed are violations.
    drop(store);
    let seg = &fx.segs[1];
    // A data byte (not a field the spot check at open decodes) of an event in a sealed
    // segment that the index file covers: open succeeds, the reads that meet it fail.
    let victim = fx
        .model
        .iter()
        .find(|e| {
            e.position > seg.base + 64 && e.position < seg.base + seg.data_end && e.data.len() > 4
        })
        .unwrap();
    let data_at = 56 + victim.stream.len() + victim.event_type.len() + 2;
    common::flip(
        &dir.join(&fx.files[seg.file].0),
        victim.position - seg.base + data_at as u64,
        1,
    );
    let store = Store::open(&dir, opts()).unwrap();
    let c = check_store(&store, &fx.model, &|_| false);
    assert!(c.read_errors > 0);
    assert!(!c.violations.is_empty());
    let c = check_store(&store, &fx.model, &|e| matches!(e, Error::Corrupt { .. }));
    assert_eq!(c.violations, Vec::<Violation>::new());
}
