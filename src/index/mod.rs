//! The stream index: stream names to stream ids, and per stream, event number to position.
//!
//! A stream's positions are kept as runs, one per segment the stream has events in: the event
//! numbers of a run are contiguous, and its positions are 32-bit offsets into that segment. Once a
//! segment is sealed, [`persist`] writes its runs to an index file, which the index maps; opening a
//! store maps the index files of the segments and reads nothing else from them.
//!
//! The index holds in memory only the keys (streams, categories, event types) used since the
//! store opened, each in a compact entry: its name, its number of events, and its runs that are in
//! no index file yet (the active segment's; up to two events inline). A key not held is looked up
//! in the index files when first used (a hash search, in the files of the segments that the
//! [`Hints`] say may hold it), and joins the index. The runs a key has in index files are looked
//! up when a read needs them and kept in a bounded cache. So neither opening nor resident memory
//! grows with the number of streams in the store, only with the number used.

pub mod filter;
pub mod keys;
pub mod persist;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use filter::KeyFilter;
use keys::KeyTable;
use persist::{name_hash, Damaged, IndexFile, RunEntry, RunOffsets, RunToSave};

/// Dense id of a stream (or of a category or event type key) inside one open store (its creation
/// order); never written to disk.
pub type StreamId = u32;

/// Index keys that are not stream names start with this character and a kind letter and `:`;
/// stream names may not start that way (see `check_stream_name`).
const KEY_MARK: char = '\0';
/// Prefix of the key listing a category's events: `KEY_MARK`, `c`, `:`, the category.
const CATEGORY_KEY: &str = "\0c:";
/// Prefix of the key listing an event type's events: `KEY_MARK`, `t`, `:`, the type.
const TYPE_KEY: &str = "\0t:";

/// What an index key lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'a> {
    /// A stream's events, numbered by event number.
    Stream(&'a str),
    /// The events of every stream of a category (the part of a stream name before its first
    /// `-`), in position order, numbered from 0.
    Category(&'a str),
    /// The events of one type, in position order, numbered from 0.
    EventType(&'a str),
}

/// Whether `name` is a category or event type key's name, which no stream may have.
pub fn is_key_name(name: &str) -> bool {
    name.starts_with(KEY_MARK) && !matches!(Key::parse(name), Key::Stream(_))
}

/// The three kinds of [`Key`], for listing the keys of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Streams.
    Stream,
    /// Categories.
    Category,
    /// Event types.
    EventType,
}

impl<'a> Key<'a> {
    /// The key of `kind` named `name` (a stream, category or event type name).
    pub fn of(kind: KeyKind, name: &'a str) -> Key<'a> {
        match kind {
            KeyKind::Stream => Key::Stream(name),
            KeyKind::Category => Key::Category(name),
            KeyKind::EventType => Key::EventType(name),
        }
    }

    /// Its kind and the name it has as a stream, category or event type.
    pub fn split(&self) -> (KeyKind, &'a str) {
        match *self {
            Key::Stream(s) => (KeyKind::Stream, s),
            Key::Category(c) => (KeyKind::Category, c),
            Key::EventType(t) => (KeyKind::EventType, t),
        }
    }

    /// The key an index name stands for.
    pub fn parse(name: &'a str) -> Key<'a> {
        if let Some(c) = name.strip_prefix(CATEGORY_KEY) {
            Key::Category(c)
        } else if let Some(t) = name.strip_prefix(TYPE_KEY) {
            Key::EventType(t)
        } else {
            Key::Stream(name)
        }
    }

    /// The name this key has in the index.
    pub fn name(&self) -> std::borrow::Cow<'a, str> {
        match *self {
            Key::Stream(s) => std::borrow::Cow::Borrowed(s),
            Key::Category(c) => std::borrow::Cow::Owned(format!("{CATEGORY_KEY}{c}")),
            Key::EventType(t) => std::borrow::Cow::Owned(format!("{TYPE_KEY}{t}")),
        }
    }

    /// Whether the record of an event of `stream` with `event_type` and `event_number` is the
    /// `n`-th entry of this key, as far as the record can tell.
    pub fn holds(&self, stream: &str, event_type: &str, event_number: u64, n: u64) -> bool {
        match *self {
            Key::Stream(s) => s == stream && event_number == n,
            Key::Category(c) => crate::types::category_of(stream) == c,
            Key::EventType(t) => t == event_type,
        }
    }
}

/// Where a run's offsets are.
enum Offsets {
    /// In memory: a run of a segment whose index file is not written yet.
    Owned(Vec<u32>),
    /// In a mapped index file, at byte `at`. The array's checksum is verified on first use and
    /// `checked` remembers it.
    Mapped {
        file: Arc<IndexFile>,
        at: usize,
        crc: u32,
        checked: AtomicBool,
    },
}

/// One stream's events in one segment.
pub struct Run {
    /// Base position of the segment.
    base: u64,
    first_event: u64,
    len: u32,
    offsets: Offsets,
}

impl Run {
    /// Verifies a mapped run's checksum the first time it is used.
    fn check(&self, stream: &str) -> Result<()> {
        let Offsets::Mapped {
            file,
            at,
            crc,
            checked,
        } = &self.offsets
        else {
            return Ok(());
        };
        if checked.load(Ordering::Relaxed) {
            return Ok(());
        }
        if !file.run_is_intact(*at, self.len, *crc) {
            // The file is a cache of the log: without it, the next open rebuilds it.
            file.remove();
            return Err(Error::Corrupt {
                file: file.path.clone(),
                offset: *at as u64,
                reason: format!(
                    "damaged index of stream `{stream}` (checksum mismatch or offsets out of \
                     place); the index file is removed and rebuilt from the log when the store is \
                     next opened"
                ),
            });
        }
        checked.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Segment offset of the run's `k`-th event; `k < len`.
    fn offset(&self, k: usize) -> u32 {
        match &self.offsets {
            Offsets::Owned(v) => v.get(k).copied().unwrap_or(0),
            Offsets::Mapped { file, at, .. } => file.offset(*at, k),
        }
    }

    /// Position of the run's `k`-th event; `k < len`.
    fn position(&self, k: usize) -> u64 {
        self.base + u64::from(self.offset(k))
    }
}

/// A run whose events are the entry's last ones.
impl Run {
    fn end(&self) -> u64 {
        self.first_event + u64::from(self.len)
    }
}

/// The runs of a key that are in no index file: the active segment's, and those of a sealed
/// segment whose index file could not be written.
enum MemRuns {
    /// The position of the key's last event, its only one in memory (0: none; a record is never
    /// at position 0). The common case of a key used since open: no allocation, and an entry of
    /// 32 bytes.
    Inline([u64; 1]),
    /// Any number of runs, in event order. Boxed, so that the entry stays 32 bytes.
    #[allow(clippy::box_collection)]
    Heap(Box<Vec<Run>>),
}

impl MemRuns {
    const NONE: MemRuns = MemRuns::Inline([0]);

    /// The (first event, events) of each run held, in order, for a key of `len` events.
    fn spans(&self, len: u64) -> Vec<(u64, u64)> {
        match self {
            MemRuns::Inline(_) => {
                let n = self.count();
                if n == 0 {
                    Vec::new()
                } else {
                    vec![(len - n, n)]
                }
            }
            MemRuns::Heap(runs) => runs
                .iter()
                .map(|r| (r.first_event, u64::from(r.len)))
                .collect(),
        }
    }

    /// Events held.
    fn count(&self) -> u64 {
        match self {
            MemRuns::Inline(p) => p.iter().filter(|&&p| p != 0).count() as u64,
            MemRuns::Heap(runs) => runs.iter().map(|r| u64::from(r.len)).sum(),
        }
    }
}

/// One key in memory: 32 bytes, plus its name in the arena and its slot in the table.
struct StreamEntry {
    name: NameRef,
    /// Number of events (in files and in memory).
    len: u64,
    mem: MemRuns,
}

/// Where a name is in the arena: chunk (24 bits), offset in it (24 bits), length (16 bits).
#[derive(Clone, Copy)]
struct NameRef(u64);

/// Bytes per chunk of the name arena: chunks are never moved, so growing the arena copies
/// nothing and leaves no slack beyond the last chunk.
const NAME_CHUNK: usize = 1 << 22;

/// The names of the keys in memory, back to back.
#[derive(Default)]
struct Names {
    chunks: Vec<Vec<u8>>,
}

impl Names {
    fn add(&mut self, name: &str) -> NameRef {
        let b = name.as_bytes();
        if self
            .chunks
            .last()
            .is_none_or(|c| c.len() + b.len() > NAME_CHUNK)
        {
            self.chunks
                .push(Vec::with_capacity(NAME_CHUNK.max(b.len())));
        }
        let chunk = self.chunks.len() - 1;
        let c = &mut self.chunks[chunk];
        let off = c.len();
        c.extend_from_slice(b);
        NameRef(((chunk as u64) << 40) | ((off as u64) << 16) | b.len() as u64)
    }

    fn bytes(&self, r: NameRef) -> &[u8] {
        let (chunk, off, len) = (
            (r.0 >> 40) as usize,
            ((r.0 >> 16) & 0xff_ffff) as usize,
            (r.0 & 0xffff) as usize,
        );
        self.chunks
            .get(chunk)
            .and_then(|c| c.get(off..off + len))
            .unwrap_or_default()
    }

    fn get(&self, r: NameRef) -> &str {
        // Only whole `str`s are added.
        std::str::from_utf8(self.bytes(r)).unwrap_or_default()
    }
}

/// A slot's tag for a name of `hash`: its top 7 bits (the slot index comes from the low bits),
/// with the top bit set, so that 0 marks a free slot.
fn tag_of(hash: u64) -> u8 {
    (hash >> 57) as u8 | 0x80
}

/// Entries per chunk of the entry list (chunks are never moved, as for names).
const ENTRY_CHUNK: usize = 1 << 16;

/// The index files of the store's segments, by base (a segment has at most one; the active one
/// has the one its last `close` wrote, if any). Replaced as a whole when a segment's file is
/// added, so that a lookup can work on a copy without the index's lock.
#[derive(Clone, Default)]
pub struct Files {
    list: Vec<(u64, Arc<IndexFile>)>,
    /// The bases of the files that may hold keys the index does not hold: those left unread
    /// when the store opened. A file written since holds only keys that were in memory (or
    /// those of the unread file it replaces, whose base stays here), and keys stay in memory.
    unread: Vec<u64>,
    /// The key table, while every file it covers is the one in place (see [`keys`]).
    keys: Option<Arc<KeyTable>>,
    /// Filters of the keys of unread files searched at a first use (see [`filter`]), by base.
    /// Kept when their file is rewritten: what they say of keys not held stays true.
    filters: Vec<(u64, Arc<KeyFilter>)>,
}

/// What the index files say of a key not held, at its first use: its runs, searched file by
/// file, or (through the key table) only its number of events, its runs left to the first read
/// that needs them.
pub enum FirstUse {
    /// Its runs in the index files.
    Runs(Vec<Run>),
    /// Its number of events.
    Events(u64),
}

/// The error for a damaged directory or names block of an index file, which is removed so that
/// the next open rebuilds it from the log.
fn damaged(file: &IndexFile, d: Damaged, what: &str) -> Error {
    file.remove();
    Error::Corrupt {
        file: file.path.clone(),
        offset: d.at as u64,
        reason: format!(
            "damaged index directory ({what}); the index file is removed and rebuilt from the log \
             when the store is next opened"
        ),
    }
}

/// Where a key may have runs, as a table of key hashes (the event-id tables, which also hold the
/// hash of every key with the position of its last event in each segment) tells: so that a
/// lookup searches the index files of the few segments that may hold the key, not all of them.
pub trait Hints {
    /// Adds to `out` the positions whose entries have `hash`: a superset of the positions of the
    /// key's last event in each segment the hints cover. An error: search without hints.
    fn positions(&self, hash: u64, out: &mut Vec<u64>) -> Result<()>;
    /// Whether the hints cover the segment at `base`.
    fn covers(&self, base: u64) -> bool;
    /// Whether a search of many index files may use a second thread (see [`Files::runs`]).
    fn parallel(&self) -> bool {
        true
    }
}

/// What gives the index its [`Hints`] of the moment.
pub trait HintSource: Send + Sync {
    /// The hints as they are now.
    fn hints(&self) -> Box<dyn Hints + '_>;
}

/// No hints: every index file is searched.
pub struct NoHints;

impl Hints for NoHints {
    fn positions(&self, _: u64, _: &mut Vec<u64>) -> Result<()> {
        Ok(())
    }
    fn covers(&self, _: u64) -> bool {
        false
    }
    /// Opening resolves every key of the log it scans, without hints: one thread, since after
    /// the first key the files' pages are mapped and a search costs less than starting a thread.
    fn parallel(&self) -> bool {
        false
    }
}

impl Files {
    /// How many index files there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The index file of the segment at `base`.
    pub fn file(&self, base: u64) -> Option<&Arc<IndexFile>> {
        self.list
            .binary_search_by_key(&base, |(b, _)| *b)
            .ok()
            .map(|i| &self.list[i].1)
    }

    /// Makes `file` the file of the segment at `base` (`unread`: its keys may not be held).
    fn insert(&mut self, base: u64, file: Arc<IndexFile>, unread: bool) {
        // A table made from the file this one replaces no longer says what the files do.
        if self
            .keys
            .as_ref()
            .is_some_and(|t| t.covered().iter().any(|c| c.base == base))
        {
            self.keys = None;
        }
        match self.list.binary_search_by_key(&base, |(b, _)| *b) {
            Ok(i) => self.list[i].1 = file,
            Err(i) => self.list.insert(i, (base, file)),
        }
        if let (true, Err(i)) = (unread, self.unread.binary_search(&base)) {
            self.unread.insert(i, base);
        }
    }

    /// [`insert`](Self::insert) into `files`: in place while no lookup holds a copy (as while
    /// the store opens, which adds a file per segment), else into a copy that replaces it.
    fn put(files: &mut Arc<Files>, base: u64, file: Arc<IndexFile>, unread: bool) {
        Arc::make_mut(files).insert(base, file, unread);
    }

    /// The runs of the key `name` in the index files, in order. With `held`, the key's number of
    /// events and the (first event, events) of its runs in memory: the runs found and those must
    /// make up its events, each run following on from the one before, else the files are
    /// damaged. Without, the key is not held: only the files left unread at open can have it.
    pub fn runs(
        &self,
        name: &str,
        held: Option<(u64, &[(u64, u64)])>,
        hints: &dyn Hints,
    ) -> Result<Vec<Run>> {
        self.runs_past(name, held, hints, None)
    }

    /// What the index files say of the key `name`, not held, at its first use (see
    /// [`FirstUse`]). With a key table, that is the events it counts in the files it covers,
    /// and the runs in the files it does not (written after it, the newest), which must follow
    /// on from them. A slot or name of the table that fails its checksum makes this lookup search
    /// the files.
    pub fn first_use(&self, name: &str, hints: &dyn Hints) -> Result<FirstUse> {
        // A table is put in use only over the oldest unread files (`matches`), and `unread`
        // changes only while the store opens; checked again, as it costs a few comparisons.
        if let Some(t) = self.keys.as_ref().filter(|t| self.covers_oldest(t)) {
            if let Ok(events) = t.events(name) {
                let runs = self.runs_past(name, None, hints, Some((t, events)))?;
                return Ok(FirstUse::Events(runs.last().map_or(events, Run::end)));
            }
            t.remove();
        }
        self.runs(name, None, hints).map(FirstUse::Runs)
    }

    /// Whether `table` was made from the files in place now, the oldest of those left unread at
    /// open (so that it says what they say of the keys not held, and the files it does not
    /// cover hold only later events of them).
    fn matches(&self, table: &KeyTable) -> bool {
        !table.covered().is_empty()
            && self.covers_oldest(table)
            && table
                .covered()
                .iter()
                .all(|c| self.file(c.base).is_some_and(|f| f.stamp == Some(c.stamp)))
    }

    /// Whether the files `table` covers are, base for base, the oldest of those left unread at
    /// open: what the search past it relies on.
    fn covers_oldest(&self, table: &KeyTable) -> bool {
        let covered = table.covered();
        covered.len() <= self.unread.len()
            && covered.iter().zip(&self.unread).all(|(c, b)| c.base == *b)
    }

    /// [`runs`](Self::runs); with `table` (and the events it counts for the key), only in the
    /// files it does not cover, the first run found following on from those events.
    fn runs_past(
        &self,
        name: &str,
        held: Option<(u64, &[(u64, u64)])>,
        hints: &dyn Hints,
        table: Option<(&KeyTable, u64)>,
    ) -> Result<Vec<Run>> {
        if held.is_none() && self.unread.is_empty() {
            return Ok(Vec::new());
        }
        let hash = name_hash(name);
        // The files that may hold the key, by their place in the list: for a key not held, those
        // left unread at open, but the ones the table covers (the oldest of them) and the
        // filtered ones that do not hold it (a key not held has there only the runs it had at
        // open).
        let considered: Vec<usize> = match held {
            Some(_) => (0..self.list.len()).collect(),
            None => {
                // The table covers the oldest unread files (`covers_oldest`, which `first_use`
                // checks).
                let covered = table.map_or(0, |(t, _)| t.covered().len());
                self.unread
                    .get(covered..)
                    .unwrap_or_default()
                    .iter()
                    .filter(|&&base| {
                        let filter = self.filters.iter().find(|(b, _)| *b == base);
                        filter.is_none_or(|(_, f)| f.may_hold(hash))
                    })
                    .filter_map(|base| self.list.binary_search_by_key(base, |(b, _)| *b).ok())
                    .collect()
            }
        };
        let mut runs: Vec<Run> = Vec::new();
        let mut hinted = Vec::new();
        // The hints are probed only if they cover a file that may hold the key: past a key
        // table, often only the file of the segment active at open is left, which they do not.
        let hintable = considered.iter().any(|&i| hints.covers(self.list[i].0));
        let use_hints = hintable && hints.positions(hash, &mut hinted).is_ok();
        hinted.sort_unstable();
        let candidates: Vec<usize> = considered
            .into_iter()
            .filter(|&i| {
                let base = self.list[i].0;
                let seg_end = self.list.get(i + 1).map_or(u64::MAX, |(b, _)| *b);
                !use_hints || !hints.covers(base) || {
                    let at = hinted.partition_point(|&p| p < base);
                    hinted.get(at).is_some_and(|&p| p < seg_end)
                }
            })
            .collect();
        let found = self.find_in(name, &candidates, hints.parallel());
        let mut next = table.map_or(0, |(_, events)| events);
        let mut spans = held.map_or(&[][..], |(_, s)| s).iter().peekable();
        for (&i, found) in candidates.iter().zip(found) {
            let (base, file) = &self.list[i];
            let Some(e) =
                found.map_err(|d| damaged(file, d, "checksum mismatch or entry out of place"))?
            else {
                continue;
            };
            while let Some((_, n)) = spans.next_if(|(first, _)| *first == next) {
                next += n;
            }
            if e.first_event != next {
                return Err(self.gap(name, &runs, i, e.first_event, next));
            }
            next = e.first_event + u64::from(e.count);
            runs.push(Run {
                base: *base,
                first_event: e.first_event,
                len: e.count,
                offsets: Offsets::Mapped {
                    file: file.clone(),
                    at: e.offsets_at,
                    crc: e.crc,
                    checked: AtomicBool::new(false),
                },
            });
        }
        while let Some((_, n)) = spans.next_if(|(first, _)| *first == next) {
            next += n;
        }
        if let Some((end, _)) = held.filter(|(end, _)| *end != next) {
            return Err(self.gap(name, &runs, self.list.len(), end, next));
        }
        Ok(runs)
    }

    /// The entry of `name` in each of the files at `candidates` (places in the list). A first
    /// lookup of a key with events in many segments (a stream written since the first) searches
    /// one file per segment, each search a page fault or two: past [`PARALLEL_FILES`] files, half
    /// of them are searched on a second thread.
    fn find_in(
        &self,
        name: &str,
        candidates: &[usize],
        parallel: bool,
    ) -> Vec<std::result::Result<Option<RunEntry>, Damaged>> {
        let find = |places: &[usize]| -> Vec<_> {
            places.iter().map(|&i| self.list[i].1.find(name)).collect()
        };
        if !parallel || candidates.len() < PARALLEL_FILES {
            return find(candidates);
        }
        let (first, second) = candidates.split_at(candidates.len() / 2);
        std::thread::scope(|s| {
            let other = std::thread::Builder::new()
                .name("eventjournal-lookup".into())
                .spawn_scoped(s, || find(second));
            let mut out = find(first);
            match other.map(|h| h.join()) {
                Ok(Ok(rest)) => out.extend(rest),
                // No thread (or it panicked, which `find` does not): searched here.
                _ => out.extend(find(second)),
            }
            out
        })
    }

    /// The error for runs of `name` that do not follow on (a run found at `found` where `next`
    /// belongs, in file `i`): every file the missing events may be in, from the one of the run
    /// before (or the first) to file `i`, is removed, to be rebuilt at the next open.
    fn gap(&self, name: &str, runs: &[Run], i: usize, found: u64, next: u64) -> Error {
        let from = runs
            .last()
            .map_or(0, |r| self.list.partition_point(|(b, _)| *b < r.base));
        let mut named = None;
        for (_, f) in self
            .list
            .get(from..=i.min(self.list.len().saturating_sub(1)))
            .unwrap_or_default()
        {
            f.remove();
            named = Some(f.path.clone());
        }
        Error::Corrupt {
            file: named.unwrap_or_default(),
            offset: 0,
            reason: format!(
                "the index files disagree on stream `{name}`: event {found} where {next} belongs; \
                 they are removed and rebuilt from the log when the store is next opened"
            ),
        }
    }

    /// Adds to `out` the first `max` stream names (no category or type keys) of all the files
    /// together, ordered after `after` (name hash, then name), each once: a merge of the files'
    /// directories, which reads about `max` entries and one search per file. With `kind`, the
    /// keys of that kind instead (index names).
    fn names_after(
        &self,
        after: Option<(u64, &str)>,
        max: usize,
        kind: KeyKind,
        out: &mut Vec<(u64, Arc<str>)>,
    ) -> Result<()> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        // The first stream name of file `f` at or after entry `i`.
        let next = |f: usize, mut i: usize| -> Result<Option<(u64, &str, usize, usize)>> {
            let file = &self.list[f].1;
            while i < file.run_count() {
                let e = file
                    .entry(i)
                    .map_err(|d| damaged(file, d, "checksum mismatch or entry out of place"))?;
                let name = file.name(&e);
                if Key::parse(name).split().0 == kind {
                    return Ok(Some((name_hash(name), name, f, i)));
                }
                i += 1;
            }
            Ok(None)
        };
        let mut heap = BinaryHeap::new();
        for (f, (_, file)) in self.list.iter().enumerate() {
            let first = match after {
                Some((h, n)) => file
                    .first_after(h, n)
                    .map_err(|d| damaged(file, d, "checksum mismatch"))?,
                None => 0,
            };
            if let Some(head) = next(f, first)? {
                heap.push(Reverse(head));
            }
        }
        let mut last: Option<(u64, &str)> = None;
        let mut taken = 0;
        while taken < max {
            let Some(Reverse((hash, name, f, i))) = heap.pop() else {
                break;
            };
            if last != Some((hash, name)) {
                out.push((hash, Arc::from(name)));
                last = Some((hash, name));
                taken += 1;
            }
            if let Some(head) = next(f, i + 1)? {
                heap.push(Reverse(head));
            }
        }
        Ok(())
    }
}

/// Index files past which a key's first lookup searches half of them on a second thread: a
/// search costs some microseconds (a page fault or two), starting a thread some tens.
const PARALLEL_FILES: usize = 64;

/// How many keys' runs in index files the cache keeps: what bounds the memory a read adds beyond
/// the key's entry (a run takes 48 bytes; a stream usually has one per segment it is in).
const CACHED_KEYS: usize = 1 << 12;

/// The runs in index files of keys read lately.
#[derive(Default)]
struct RunCache {
    /// The runs, with the number of the `put` that added them.
    map: HashMap<StreamId, (Arc<Vec<Run>>, u64)>,
    /// Oldest first: each key and the `put` it was added by (a key put again, or forgotten,
    /// leaves a stale pair here, which evicts nothing).
    order: VecDeque<(StreamId, u64)>,
    puts: u64,
}

impl RunCache {
    fn get(&self, id: StreamId) -> Option<Arc<Vec<Run>>> {
        self.map.get(&id).map(|(runs, _)| runs.clone())
    }

    fn put(&mut self, id: StreamId, runs: Arc<Vec<Run>>) {
        self.puts += 1;
        self.map.insert(id, (runs, self.puts));
        self.order.push_back((id, self.puts));
        while self.map.len() > CACHED_KEYS || self.order.len() > 2 * CACHED_KEYS {
            let Some((old, put)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|(_, p)| *p == put) {
                self.map.remove(&old);
            }
        }
    }

    fn forget(&mut self, id: StreamId) {
        self.map.remove(&id);
    }
}

/// The index.
pub struct Index {
    /// Open addressing by name hash: `id + 1` of the key in each used slot, 0 in a free one.
    slots: Vec<u32>,
    /// Per slot, 7 bits of the name's hash with the top bit set (0: free), so that a probe
    /// reads a key's entry and name only when these match.
    tags: Vec<u8>,
    entries: Vec<Vec<StreamEntry>>,
    count: usize,
    names: Names,
    /// Per segment base: the keys with in-memory runs in that segment.
    touched: BTreeMap<u64, Vec<StreamId>>,
    files: Arc<Files>,
    hints: Option<Arc<dyn HintSource>>,
    cache: Mutex<RunCache>,
}

impl Default for Index {
    fn default() -> Index {
        Index::new()
    }
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index {
            slots: Vec::new(),
            tags: Vec::new(),
            entries: Vec::new(),
            count: 0,
            names: Names::default(),
            touched: BTreeMap::new(),
            files: Arc::new(Files::default()),
            hints: None,
            cache: Mutex::new(RunCache::default()),
        }
    }

    fn entry(&self, id: StreamId) -> Option<&StreamEntry> {
        let id = id as usize;
        self.entries.get(id / ENTRY_CHUNK)?.get(id % ENTRY_CHUNK)
    }

    fn entry_mut(&mut self, id: StreamId) -> Option<&mut StreamEntry> {
        let id = id as usize;
        self.entries
            .get_mut(id / ENTRY_CHUNK)?
            .get_mut(id % ENTRY_CHUNK)
    }

    /// The slot of `name`: its own if held, else the free one where it would go.
    fn slot_of(&self, name: &str, hash: u64) -> (usize, Option<StreamId>) {
        let mask = self.slots.len() - 1;
        let tag = tag_of(hash);
        let mut i = (hash as usize) & mask;
        loop {
            match self.tags[i] {
                0 => return (i, None),
                t if t == tag => {
                    let id = self.slots[i].wrapping_sub(1);
                    if self
                        .entry(id)
                        .is_some_and(|e| self.names.bytes(e.name) == name.as_bytes())
                    {
                        return (i, Some(id));
                    }
                }
                _ => {}
            }
            i = (i + 1) & mask;
        }
    }

    /// Doubles the slot table: every held name is hashed again (once per doubling, so a name is
    /// hashed about twice in all).
    fn grow(&mut self) {
        let cap = (self.slots.len() * 2).max(1024);
        let mut slots = vec![0u32; cap];
        let mut tags = crate::slots::zeroed(cap, 0u8);
        let mask = cap - 1;
        for id in 0..self.count as StreamId {
            let Some(e) = self.entry(id) else { continue };
            let hash = name_hash(self.names.get(e.name));
            let mut i = (hash as usize) & mask;
            while tags[i] != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = id + 1;
            tags[i] = tag_of(hash);
        }
        self.slots = slots;
        self.tags = tags;
    }

    /// The id of `stream`, if it is held in memory (see [`Index::files`] for the others).
    pub fn lookup(&self, stream: &str) -> Option<StreamId> {
        if self.slots.is_empty() {
            return None;
        }
        self.slot_of(stream, name_hash(stream)).1
    }

    /// The index files, to look keys up in without the index's lock.
    pub fn files(&self) -> Arc<Files> {
        self.files.clone()
    }

    /// Makes `file`, unread, the index file of the segment at `base`: its keys are looked up in
    /// it when first used. The keys already held that it has runs of (opening found them in an
    /// earlier segment it scanned) count those runs' events; `false` if a run does not follow on
    /// from what the index holds, or the file's directory is damaged: the caller rebuilds.
    pub fn add_file(&mut self, base: u64, file: Arc<IndexFile>) -> bool {
        for id in 0..self.count as StreamId {
            let Some(e) = self.entry(id) else { continue };
            let run = match file.find(self.names.get(e.name)) {
                Ok(Some(run)) => run,
                Ok(None) => continue,
                Err(_) => return false,
            };
            if run.first_event != e.len {
                return false;
            }
            if let Some(e) = self.entry_mut(id) {
                e.len += u64::from(run.count);
            }
        }
        Files::put(&mut self.files, base, file, true);
        true
    }

    /// The files a key table is made from: those left unread at open, but the one of the
    /// segment at `active` (which a seal writes again), with their stamps.
    pub fn key_table_sources(&self, active: u64) -> Vec<(u64, Arc<IndexFile>, crate::disk::Stamp)> {
        self.files
            .list
            .iter()
            .filter(|(base, _)| *base != active && self.files.unread.binary_search(base).is_ok())
            .filter_map(|(base, f)| Some((*base, f.clone(), f.stamp?)))
            .collect()
    }

    /// The files worth a [`KeyFilter`]: unread at open, with none yet, not covered by the key
    /// table. (The id tables' hints narrow the search too, where they cover a file, but asking
    /// them probes every id table: a filter answers for one file in one read.)
    pub fn filter_sources(&self) -> Vec<(u64, Arc<IndexFile>)> {
        let f = &self.files;
        let covered = |base: u64| {
            f.keys
                .as_ref()
                .is_some_and(|t| t.covered().iter().any(|c| c.base == base))
        };
        f.list
            .iter()
            .filter(|(base, _)| f.unread.binary_search(base).is_ok())
            .filter(|(base, _)| !covered(*base))
            .filter(|(base, _)| !f.filters.iter().any(|(b, _)| b == base))
            .map(|(base, file)| (*base, file.clone()))
            .collect()
    }

    /// Uses `filter` at the first use of keys, for the file at `base`.
    pub fn add_filter(&mut self, base: u64, filter: Arc<KeyFilter>) {
        let files = Arc::make_mut(&mut self.files);
        if !files.filters.iter().any(|(b, _)| *b == base) {
            files.filters.push((base, filter));
        }
    }

    /// How many key filters are in use, and the bytes they take.
    pub fn key_filters(&self) -> (usize, usize) {
        let f = &self.files.filters;
        (f.len(), f.iter().map(|(_, f)| f.bytes()).sum())
    }

    /// How many of the files a key table would be made from (see
    /// [`key_table_sources`](Self::key_table_sources)) the one in use does not cover.
    pub fn past_key_table(&self, active: u64) -> usize {
        let covered = self.key_table_files();
        self.key_table_sources(active).len().saturating_sub(covered)
    }

    /// How many index files the key table in use covers (0 without one).
    pub fn key_table_files(&self) -> usize {
        self.files.keys.as_ref().map_or(0, |t| t.covered().len())
    }

    /// Uses `table` for the first use of keys, if it was made from the files in place.
    pub fn set_key_table(&mut self, table: Arc<KeyTable>) -> bool {
        if !self.files.matches(&table) {
            return false;
        }
        let files = Arc::make_mut(&mut self.files);
        // The files it covers are not searched any more: their filters go.
        let covered = table.covered();
        files
            .filters
            .retain(|(base, _)| covered.binary_search_by_key(base, |c| c.base).is_err());
        files.keys = Some(table);
        true
    }

    /// Adds the key `name`, not held, with `events` events, its runs in index files left to the
    /// first read that needs them (which finds them, checked to count as many); returns its id.
    pub fn attach_counted(&mut self, name: &str, events: u64) -> StreamId {
        if let Some(id) = self.lookup(name) {
            return id;
        }
        let id = self.get_or_create(name);
        if let Some(e) = self.entry_mut(id) {
            e.len = events;
        }
        id
    }

    /// Sets where lookups get their hints from.
    pub fn set_hints(&mut self, hints: Arc<dyn HintSource>) {
        self.hints = Some(hints);
    }

    /// How many keys are held in memory.
    pub fn loaded(&self) -> usize {
        self.count
    }

    /// Adds the key `name`, not held, with `runs`, its runs in the index files (from
    /// [`Files::runs`]), unless it is held already; returns its id.
    pub fn attach(&mut self, name: &str, runs: Vec<Run>) -> StreamId {
        if let Some(id) = self.lookup(name) {
            return id;
        }
        let id = self.get_or_create(name);
        let len = runs.last().map_or(0, Run::end);
        if let Some(e) = self.entry_mut(id) {
            e.len = len;
        }
        if !runs.is_empty() {
            let mut runs = runs;
            runs.shrink_to_fit();
            self.cache.lock().put(id, Arc::new(runs));
        }
        id
    }

    /// The id of the key `name`, looked up in the index files if it is not held, and created
    /// (with no events) if it has none anywhere. Without hints: for opening.
    pub fn get_or_create_resolved(&mut self, name: &str) -> Result<StreamId> {
        if let Some(id) = self.lookup(name) {
            return Ok(id);
        }
        let runs = self.files.runs(name, None, &NoHints)?;
        Ok(self.attach(name, runs))
    }

    /// The id of `stream`, creating an empty entry if it is not held. For a key that has no
    /// runs in index files (or whose runs were looked up first, see [`Index::attach`]).
    pub fn get_or_create(&mut self, stream: &str) -> StreamId {
        // At most 7/8 full: the tags keep the probes of a full table cheap.
        if (self.count + 1) * 8 > self.slots.len() * 7 {
            self.grow();
        }
        let hash = name_hash(stream);
        let (slot, found) = self.slot_of(stream, hash);
        if let Some(id) = found {
            return id;
        }
        let id = self.count as StreamId;
        let name = self.names.add(stream);
        if self.entries.last().is_none_or(|c| c.len() == ENTRY_CHUNK) {
            self.entries.push(Vec::with_capacity(ENTRY_CHUNK));
        }
        if let Some(c) = self.entries.last_mut() {
            c.push(StreamEntry {
                name,
                len: 0,
                mem: MemRuns::NONE,
            });
        }
        self.slots[slot] = id + 1;
        self.tags[slot] = tag_of(hash);
        self.count += 1;
        id
    }

    /// How many events the stream has.
    pub fn len(&self, id: StreamId) -> u64 {
        self.entry(id).map_or(0, |s| s.len)
    }

    /// Up to `max` names of keys of `kind` after the one named `after` in the index's listing
    /// order (the hash of the key's index name, then that name), from memory and the index
    /// files: stream, category or event type names, as `kind` says.
    pub fn names_page(
        &self,
        kind: KeyKind,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<Arc<str>>> {
        let after_key = after.map(|n| Key::of(kind, n).name());
        let after = after_key.as_deref().map(|n| (name_hash(n), n));
        let is_after = |h: u64, n: &str| after.is_none_or(|(ah, an)| (h, n) > (ah, an));
        let mut out: Vec<(u64, Arc<str>)> = Vec::new();
        self.files.names_after(after, max, kind, &mut out)?;
        for e in self.entries.iter().flatten() {
            let name = self.names.get(e.name);
            if e.len > 0 && Key::parse(name).split().0 == kind {
                let h = name_hash(name);
                if is_after(h, name) {
                    out.push((h, Arc::from(name)));
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out.truncate(max);
        Ok(out
            .into_iter()
            .map(|(_, n)| match Key::parse(&n).split() {
                (KeyKind::Stream, _) => n,
                (_, short) => Arc::from(short),
            })
            .collect())
    }

    /// The runs of key `id` in index files: all its events but those in memory.
    fn file_runs(&self, id: StreamId, e: &StreamEntry) -> Result<Option<Arc<Vec<Run>>>> {
        let in_files = e.len - e.mem.count();
        if in_files == 0 {
            return Ok(None);
        }
        if let Some(runs) = self.cache.lock().get(id) {
            if runs.iter().map(|r| u64::from(r.len)).sum::<u64>() == in_files {
                return Ok(Some(runs));
            }
        }
        let name = self.names.get(e.name);
        let spans = e.mem.spans(e.len);
        let runs = match &self.hints {
            Some(h) => self.files.runs(name, Some((e.len, &spans)), &*h.hints())?,
            None => self.files.runs(name, Some((e.len, &spans)), &NoHints)?,
        };
        let mut runs = runs;
        runs.shrink_to_fit();
        let runs = Arc::new(runs);
        self.cache.lock().put(id, runs.clone());
        Ok(Some(runs))
    }

    /// Calls `f` with each run of key `id` holding events `lo..hi`, in event order (or reverse
    /// order if not `forward`), and the part of the run to use.
    fn with_runs(
        &self,
        id: StreamId,
        lo: u64,
        hi: u64,
        forward: bool,
        mut f: impl FnMut(RunRef<'_>, usize, usize) -> Result<()>,
    ) -> Result<()> {
        let Some(e) = self.entry(id) else {
            return Ok(());
        };
        let hi = hi.min(e.len);
        if lo >= hi {
            return Ok(());
        }
        let name = self.names.get(e.name);
        let filed = self.file_runs(id, e)?;
        let in_range = |runs: &'_ [Run]| -> (usize, usize) {
            (
                runs.partition_point(|r| r.end() <= lo),
                runs.partition_point(|r| r.first_event < hi),
            )
        };
        let file = match &filed {
            Some(runs) => {
                let (a, b) = in_range(runs);
                &runs[a..b]
            }
            None => &[],
        };
        let (heap, inline): (&[Run], Option<RunRef<'_>>) = match &e.mem {
            MemRuns::Inline(p) => {
                let n = p.iter().filter(|&&p| p != 0).count();
                let first = e.len - n as u64;
                (
                    &[],
                    (n > 0 && hi > first).then(|| RunRef::Inline(first, &p[..n])),
                )
            }
            MemRuns::Heap(runs) => {
                let (a, b) = in_range(runs);
                (&runs[a..b], None)
            }
        };
        let mem_len = heap.len() + usize::from(inline.is_some());
        let mem = |j: usize| heap.get(j).map(RunRef::Run).or(inline);
        let mut each = |r: RunRef<'_>| -> Result<()> {
            if let RunRef::Run(run) = r {
                run.check(name)?;
            }
            let (first, len) = r.span();
            let a = (lo.max(first) - first) as usize;
            let b = (hi.min(first + len) - first) as usize;
            f(r, a, b)
        };
        // Both lists are in event order; merged without allocating.
        let (mut i, mut j) = (0usize, 0usize);
        while i < file.len() || j < mem_len {
            let (fi, mj) = if forward {
                (i, j)
            } else {
                (file.len().wrapping_sub(i + 1), mem_len.wrapping_sub(j + 1))
            };
            let take_file = match (file.get(fi), mem(mj).filter(|_| j < mem_len)) {
                (Some(f), Some(m)) => (f.first_event < m.span().0) == forward,
                (Some(_), None) => true,
                _ => false,
            };
            if take_file {
                each(RunRef::Run(&file[fi]))?;
                i += 1;
            } else {
                if let Some(m) = mem(mj) {
                    each(m)?;
                }
                j += 1;
            }
        }
        Ok(())
    }

    /// The position of event `n` of stream `id`, `None` if it has no such event. An error if the
    /// index file holding it is damaged.
    pub fn position(&self, id: StreamId, n: u64) -> Result<Option<u64>> {
        let mut out = None;
        self.with_runs(id, n, n.saturating_add(1), true, |r, a, _| {
            out = Some(r.position(a));
            Ok(())
        })?;
        Ok(out)
    }

    /// Appends to `out` the positions of events `lo..hi` of stream `id` (clamped to the stream),
    /// in ascending order if `forward`, else descending.
    pub fn copy_positions(
        &self,
        id: StreamId,
        lo: u64,
        hi: u64,
        forward: bool,
        out: &mut Vec<u64>,
    ) -> Result<()> {
        self.with_runs(id, lo, hi, forward, |r, a, b| {
            if forward {
                out.extend((a..b).map(|k| r.position(k)));
            } else {
                out.extend((a..b).rev().map(|k| r.position(k)));
            }
            Ok(())
        })
    }

    /// Records the category and event type entries of an event at `position` (in the segment
    /// at `segment_base`), given the ids of its category and type keys.
    pub fn push_secondary(&mut self, keys: [StreamId; 2], position: u64, segment_base: u64) {
        for id in keys {
            let n = self.len(id);
            // Cannot fail: the entry number is the key's length.
            let _ = self.push(id, n, position, segment_base);
        }
    }

    /// Records that event `event_number` of stream `id` is at `position`, in the segment at
    /// `segment_base`. Event numbers must arrive in order.
    pub fn push(
        &mut self,
        id: StreamId,
        event_number: u64,
        position: u64,
        segment_base: u64,
    ) -> Result<(), Discontinuity> {
        let base_of_inline =
            |index: &Index, p: u64| index.touched.range(..=p).next_back().map_or(0, |(b, _)| *b);
        let Some(entry) = self.entry(id) else {
            return Err(Discontinuity {
                stream: Arc::from(""),
                expected: 0,
                found: event_number,
            });
        };
        if event_number != entry.len {
            return Err(Discontinuity {
                stream: Arc::from(self.names.get(entry.name)),
                expected: entry.len,
                found: event_number,
            });
        }
        let new_run = match &entry.mem {
            MemRuns::Inline([0]) => true,
            MemRuns::Inline([p]) => base_of_inline(self, *p) != segment_base,
            MemRuns::Heap(runs) => runs
                .last()
                .is_none_or(|r| r.base != segment_base || !matches!(r.offsets, Offsets::Owned(_))),
        };
        // Inline positions need their segment's base from `touched`: spilled to the heap before
        // anything else changes.
        let spill = match &entry.mem {
            MemRuns::Inline([0]) => None,
            MemRuns::Inline(p) => Some(*p),
            _ => None,
        };
        let spilled = spill.map(|p| {
            let base = base_of_inline(self, p[0]);
            let n = p.iter().filter(|&&p| p != 0).count() as u64;
            Run {
                base,
                first_event: event_number - n,
                len: n as u32,
                offsets: Offsets::Owned(
                    p[..n as usize].iter().map(|&p| (p - base) as u32).collect(),
                ),
            }
        });
        let off = (position - segment_base) as u32;
        let Some(entry) = self.entry_mut(id) else {
            return Ok(());
        };
        match (&mut entry.mem, spilled) {
            (mem @ MemRuns::Inline([0]), _) => *mem = MemRuns::Inline([position]),
            (mem @ MemRuns::Inline(_), Some(run)) => {
                let mut runs = Vec::with_capacity(1 + usize::from(new_run));
                runs.push(run);
                add_to_runs(&mut runs, new_run, segment_base, event_number, off);
                *mem = MemRuns::Heap(Box::new(runs));
            }
            (MemRuns::Inline(p), None) => p[0] = position,
            (MemRuns::Heap(runs), _) => add_to_runs(runs, new_run, segment_base, event_number, off),
        }
        entry.len += 1;
        if new_run {
            self.touched.entry(segment_base).or_default().push(id);
        }
        Ok(())
    }

    /// The runs in memory of key `id` in the segment at `base`, as offsets, with the first's
    /// event number.
    fn mem_runs_in(&self, e: &StreamEntry, base: u64) -> Option<(u64, RunOffsets<'_>)> {
        match &e.mem {
            MemRuns::Inline([0]) => None,
            MemRuns::Inline([p]) => Some((e.len - 1, RunOffsets::One([(p - base) as u32]))),
            MemRuns::Heap(runs) => {
                let mut parts = runs.iter().filter(|r| r.base == base);
                let first = parts.next()?;
                let mut v: Vec<u32> = (0..first.len as usize).map(|k| first.offset(k)).collect();
                for r in parts {
                    v.extend((0..r.len as usize).map(|k| r.offset(k)));
                }
                Some((first.first_event, RunOffsets::Many(Cow::Owned(v))))
            }
        }
    }

    /// The runs of every key with events in the segment at `base`, to be saved: those in memory
    /// (joined to the key's run in the segment's older index file, if it has one), and the older
    /// file's runs of keys not used since; in the directory's order (name hash, then name).
    ///
    /// The runs in memory are sorted, and the older file's, in that order already, are merged
    /// into them: no map of names, and an encoder that then writes the directory front to back.
    /// A seal of a segment written by hundreds of thousands of streams costs about a run's
    /// sorting and copying per stream.
    pub fn segment_runs(&self, base: u64) -> Result<Vec<RunToSave<'_>>> {
        let mut unsorted: Vec<Option<RunToSave<'_>>> = Vec::new();
        for &id in self.touched.get(&base).map_or(&[][..], |v| &v[..]) {
            let Some(e) = self.entry(id) else { continue };
            let Some((first_event, offsets)) = self.mem_runs_in(e, base) else {
                continue;
            };
            let name = self.names.get(e.name);
            unsorted.push(Some(RunToSave::new(
                Cow::Borrowed(name),
                first_event,
                offsets,
            )));
        }
        // Sorted by reference, 16 bytes an item, rather than moving the runs, 64 bytes each;
        // built in the order the entries are in memory (by id), which a build in hash order,
        // reaching each entry and name at random, was slower than.
        let key = |i: u32| unsorted[i as usize].as_ref().map(RunToSave::key);
        let mut order: Vec<(u64, u32)> = (0..unsorted.len() as u32)
            .map(|i| (key(i).map_or(0, |k| k.0), i))
            .collect();
        order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| key(a.1).cmp(&key(b.1))));
        let mem: Vec<RunToSave<'_>> = order
            .iter()
            .filter_map(|&(_, i)| unsorted.get_mut(i as usize).and_then(Option::take))
            .collect();
        drop(unsorted);
        let Some(f) = self.files.file(base) else {
            return Ok(mem);
        };
        let bad = |d: Damaged| damaged(f, d, "checksum mismatch or entry out of place");
        let entries = f.entries().map_err(bad)?;
        let offsets_of = |run: &RunEntry| -> Result<Vec<u32>> {
            if !f.run_is_intact(run.offsets_at, run.count, run.crc) {
                return Err(bad(Damaged { at: run.offsets_at }));
            }
            Ok((0..run.count as usize)
                .map(|k| f.offset(run.offsets_at, k))
                .collect())
        };
        let mut out = Vec::with_capacity(mem.len() + entries.len());
        let mut mem = mem.into_iter().peekable();
        let mut last: Option<(u64, &str)> = None;
        for (i, e) in entries.iter().enumerate() {
            let name = f.name(e);
            let key = (name_hash(name), name);
            // The merge needs the writer's strict order; a file out of it is damaged.
            if last.is_some_and(|l| l >= key) {
                return Err(bad(Damaged {
                    at: persist::INDEX_HEADER_LEN + i * persist::DIR_ENTRY_LEN,
                }));
            }
            last = Some(key);
            while let Some(m) = mem.next_if(|m| m.key() < key) {
                out.push(m);
            }
            match mem.next_if(|m| m.key() == key) {
                // The key's run in memory follows on from its run in the file: one run. One that
                // does not replaces it (its events there are the ones in memory).
                Some(m) => {
                    if e.first_event + u64::from(e.count) == m.first_event {
                        let mut v = offsets_of(e)?;
                        v.extend_from_slice(&m.offsets);
                        out.push(RunToSave::new(m.stream, e.first_event, Cow::Owned(v)));
                    } else {
                        out.push(m);
                    }
                }
                None => out.push(RunToSave::new(
                    Cow::Borrowed(name),
                    e.first_event,
                    Cow::Owned(offsets_of(e)?),
                )),
            }
        }
        out.extend(mem);
        Ok(out)
    }

    /// Makes `file`, just written from [`Index::segment_runs`], the index file of the sealed
    /// segment at `base`, and frees the runs in memory it holds.
    pub fn map_segment(&mut self, base: u64, file: IndexFile) {
        Files::put(&mut self.files, base, Arc::new(file), false);
        let ids = self.touched.remove(&base).unwrap_or_default();
        let mut cache = self.cache.lock();
        for id in ids {
            cache.forget(id);
            let id = id as usize;
            let Some(e) = self
                .entries
                .get_mut(id / ENTRY_CHUNK)
                .and_then(|c| c.get_mut(id % ENTRY_CHUNK))
            else {
                continue;
            };
            match &mut e.mem {
                // A key's inline run is its only run in memory, in the newest segment it has
                // runs in memory in: this one, since the key is listed for it.
                MemRuns::Inline(p) => *p = [0],
                MemRuns::Heap(runs) => {
                    runs.retain(|r| r.base != base);
                    if runs.is_empty() {
                        e.mem = MemRuns::NONE;
                    }
                }
            }
        }
    }

    /// Drops the bookkeeping of which streams a segment touches, once its runs are final but
    /// stay in memory (its index file could not be written).
    pub fn forget_segment(&mut self, base: u64) {
        let ids = self.touched.remove(&base).unwrap_or_default();
        for id in ids {
            let idx = id as usize;
            let Some(e) = self
                .entries
                .get_mut(idx / ENTRY_CHUNK)
                .and_then(|c| c.get_mut(idx % ENTRY_CHUNK))
            else {
                continue;
            };
            // Inline positions find their base in `touched`: moved to the heap first.
            if let MemRuns::Inline(p) = e.mem {
                if p[0] != 0 {
                    let n = p.iter().filter(|&&p| p != 0).count();
                    e.mem = MemRuns::Heap(Box::new(vec![Run {
                        base,
                        first_event: e.len - n as u64,
                        len: n as u32,
                        offsets: Offsets::Owned(
                            p[..n].iter().map(|&p| (p - base) as u32).collect(),
                        ),
                    }]));
                }
            }
        }
    }

    /// Loads the runs of the segment at `base` from its index file into memory (for a segment
    /// whose file the scan of the log goes on from), verifying every run's checksum. `false` if
    /// the file does not continue the index: the caller rebuilds from the log.
    pub fn load_file(&mut self, base: u64, file: &IndexFile, entries: &[RunEntry]) -> bool {
        for e in entries {
            let Ok(id) = self.get_or_create_resolved(file.name(e)) else {
                return false;
            };
            if self.len(id) != e.first_event || !file.run_is_intact(e.offsets_at, e.count, e.crc) {
                return false;
            }
            for k in 0..e.count as usize {
                let pos = base + u64::from(file.offset(e.offsets_at, k));
                if self.push(id, e.first_event + k as u64, pos, base).is_err() {
                    return false;
                }
            }
        }
        true
    }
}

/// Adds event `event_number` at segment offset `off` to the key's runs in memory: to the last
/// run, or (`new_run`) as a run of its own in the segment at `base`.
fn add_to_runs(runs: &mut Vec<Run>, new_run: bool, base: u64, event_number: u64, off: u32) {
    if new_run {
        runs.push(Run {
            base,
            first_event: event_number,
            len: 1,
            offsets: Offsets::Owned(vec![off]),
        });
    } else if let Some(Run {
        offsets: Offsets::Owned(v),
        len,
        ..
    }) = runs.last_mut()
    {
        v.push(off);
        *len += 1;
    }
}

/// A run of a key, in memory or in a file.
#[derive(Clone, Copy)]
enum RunRef<'a> {
    Run(&'a Run),
    /// Inline positions, with the event number of the first.
    Inline(u64, &'a [u64]),
}

impl RunRef<'_> {
    /// First event number and number of events.
    fn span(&self) -> (u64, u64) {
        match self {
            RunRef::Run(r) => (r.first_event, u64::from(r.len)),
            RunRef::Inline(first, p) => (*first, p.len() as u64),
        }
    }

    fn position(&self, k: usize) -> u64 {
        match self {
            RunRef::Run(r) => r.position(k),
            RunRef::Inline(_, p) => p.get(k).copied().unwrap_or(0),
        }
    }
}

/// Key ids by a name (a category, an event type), with the one asked for last checked before
/// hashing: most appends repeat a few.
#[derive(Default)]
struct NamedIds {
    ids: HashMap<Box<str>, StreamId>,
    last: Option<(Box<str>, StreamId)>,
}

impl NamedIds {
    fn get(&mut self, name: &str) -> Option<StreamId> {
        if let Some((n, id)) = &self.last {
            if **n == *name {
                return Some(*id);
            }
        }
        let id = self.ids.get(name).copied()?;
        self.last = Some((name.into(), id));
        Some(id)
    }

    /// The id of `name`, looked up in `index` (as the key `key`) the first time.
    fn get_or_resolve(&mut self, index: &mut Index, name: &str, key: Key<'_>) -> Result<StreamId> {
        if let Some(id) = self.get(name) {
            return Ok(id);
        }
        let id = index.get_or_create_resolved(&key.name())?;
        self.ids.insert(name.into(), id);
        Ok(id)
    }
}

/// The category and event type key ids of categories and types seen before, so that indexing an
/// event builds no key name and (for the most recent category and type) hashes nothing.
#[derive(Default)]
pub struct KeyCache {
    categories: NamedIds,
    types: NamedIds,
}

impl KeyCache {
    /// The category key id of `stream`'s category, if seen before.
    pub fn cached_category(&mut self, stream: &str) -> Option<StreamId> {
        self.categories.get(crate::types::category_of(stream))
    }

    /// The category key id of `stream`'s category, looked up or created if needed.
    pub fn category(&mut self, index: &mut Index, stream: &str) -> Result<StreamId> {
        let category = crate::types::category_of(stream);
        self.categories
            .get_or_resolve(index, category, Key::Category(category))
    }

    /// The key id of `event_type`, if seen before.
    pub fn cached_type(&mut self, event_type: &str) -> Option<StreamId> {
        self.types.get(event_type)
    }

    /// The key id of `event_type`, looked up or created if needed.
    pub fn event_type(&mut self, index: &mut Index, event_type: &str) -> Result<StreamId> {
        self.types
            .get_or_resolve(index, event_type, Key::EventType(event_type))
    }
}

/// An event number that does not follow the stream's last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discontinuity {
    /// The stream.
    pub stream: Arc<str>,
    /// The event number the index expected next.
    pub expected: u64,
    /// The one it was given.
    pub found: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn parse(bytes: Vec<u8>) -> (IndexFile, Vec<RunEntry>) {
        let file = persist::parse(PathBuf::from("0.idx"), bytes, 0, 8192).unwrap();
        let entries = file.entries().unwrap();
        (file, entries)
    }

    fn positions(ix: &Index, id: StreamId, forward: bool) -> Vec<u64> {
        let mut out = Vec::new();
        ix.copy_positions(id, 0, u64::MAX, forward, &mut out)
            .unwrap();
        out
    }

    #[test]
    fn push_checks_continuity_and_tracks_segments() {
        let mut ix = Index::new();
        let a = ix.get_or_create("a");
        let b = ix.get_or_create("b");
        ix.push(a, 0, 64, 0).unwrap();
        ix.push(b, 0, 128, 0).unwrap();
        ix.push(a, 1, 4160, 4096).unwrap();
        assert!(ix.push(a, 5, 4200, 4096).is_err());
        assert_eq!(ix.len(a), 2);
        let runs = ix.segment_runs(0).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(*runs[0].offsets, [64]);
        let runs = ix.segment_runs(4096).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].first_event, 1);
        assert_eq!(*runs[0].offsets, [64]);
        assert_eq!(positions(&ix, a, true), [64, 4160]);
        assert_eq!(positions(&ix, a, false), [4160, 64]);
        assert_eq!(ix.position(a, 1).unwrap(), Some(4160));
        assert_eq!(ix.position(a, 2).unwrap(), None);
    }

    #[test]
    fn a_seal_joins_the_runs_in_memory_to_the_older_file_in_directory_order() {
        // The segment active at open, with the file its last close wrote: `a` continues there,
        // `b` is not used since, `d` is new.
        let older = persist::encode(
            0,
            1024,
            &[
                RunToSave::new("a".into(), 0, Cow::Borrowed(&[64u32, 128, 192][..])),
                RunToSave::new("b".into(), 0, RunOffsets::One([256])),
                RunToSave::new("c".into(), 0, Cow::Borrowed(&[320u32, 384][..])),
            ],
        );
        let (file, _) = parse(older);
        let mut ix = Index::new();
        assert!(ix.add_file(0, Arc::new(file)));
        let runs = ix.files().runs("a", None, &NoHints).unwrap();
        let a = ix.attach("a", runs);
        ix.push(a, 3, 1024, 0).unwrap();
        let runs = ix.files().runs("c", None, &NoHints).unwrap();
        let c = ix.attach("c", runs);
        ix.push(c, 2, 1088, 0).unwrap();
        let d = ix.get_or_create("d");
        ix.push(d, 0, 1152, 0).unwrap();
        let runs = ix.segment_runs(0).unwrap();
        let got: Vec<(&str, u64, Vec<u32>)> = runs
            .iter()
            .map(|r| (&*r.stream, r.first_event, r.offsets.to_vec()))
            .collect();
        let mut want = vec![
            ("a", 0, vec![64, 128, 192, 1024]),
            ("b", 0, vec![256]),
            ("c", 0, vec![320, 384, 1088]),
            ("d", 0, vec![1152]),
        ];
        want.sort_by_key(|w| (name_hash(w.0), w.0));
        assert_eq!(got, want);
        assert!(runs.windows(2).all(|w| w[0].key() < w[1].key()));
    }

    #[test]
    fn an_entry_takes_32_bytes() {
        // What a stream used since open costs, besides its name and its slot.
        assert_eq!(std::mem::size_of::<StreamEntry>(), 32);
    }

    #[test]
    fn inline_runs_spill_to_the_heap_across_segments() {
        let mut ix = Index::new();
        let a = ix.get_or_create("a");
        ix.push(a, 0, 64, 0).unwrap();
        ix.push(a, 1, 128, 0).unwrap();
        ix.push(a, 2, 192, 0).unwrap();
        ix.push(a, 3, 4096 + 64, 4096).unwrap();
        let b = ix.get_or_create("b");
        ix.push(b, 0, 256, 0).unwrap();
        ix.push(b, 1, 4096 + 128, 4096).unwrap();
        assert_eq!(positions(&ix, a, true), [64, 128, 192, 4160]);
        assert_eq!(positions(&ix, b, false), [4224, 256]);
        let runs = ix.segment_runs(0).unwrap();
        let b0 = runs.iter().find(|r| r.stream == "b").unwrap();
        assert_eq!(*b0.offsets, [256]);
        // A segment whose file could not be written keeps its runs in memory.
        ix.forget_segment(0);
        ix.push(b, 2, 4096 + 192, 4096).unwrap();
        assert_eq!(positions(&ix, b, true), [256, 4224, 4288]);
    }

    #[test]
    fn mapped_runs_read_like_in_memory_ones() {
        let mut ix = Index::new();
        let a = ix.get_or_create("a");
        let b = ix.get_or_create("b");
        for k in 0..10u64 {
            ix.push(a, k, 64 + 200 * k, 0).unwrap();
        }
        ix.push(b, 0, 4000, 0).unwrap();
        for k in 10..15u64 {
            ix.push(a, k, 8192 + 64 + 100 * (k - 10), 8192).unwrap();
        }
        let before = positions(&ix, a, true);
        let bytes = persist::encode(0, 4096, &ix.segment_runs(0).unwrap());
        let (file, _) = parse(bytes.clone());
        ix.map_segment(0, file);
        assert!(ix.segment_runs(0).unwrap().is_empty() || ix.files().file(0).is_some());
        assert_eq!(positions(&ix, a, true), before);
        let mut mid = Vec::new();
        ix.copy_positions(a, 8, 12, false, &mut mid).unwrap();
        assert_eq!(mid, [before[11], before[10], before[9], before[8]]);
        assert_eq!(ix.position(b, 0).unwrap(), Some(4000));

        // The same from the file alone, as opening does it: nothing loaded until asked for.
        let mut opened = Index::new();
        let (file, _) = parse(bytes);
        assert!(opened.add_file(0, Arc::new(file)));
        assert_eq!(opened.loaded(), 0);
        assert_eq!(opened.lookup("a"), None);
        let id = opened.get_or_create_resolved("a").unwrap();
        assert_eq!(opened.len(id), 10);
        assert_eq!(positions(&opened, id, true), before[..10]);
        assert_eq!(opened.loaded(), 1);
        let c = opened.get_or_create_resolved("c").unwrap();
        assert_eq!(opened.len(c), 0);
    }

    #[test]
    fn a_damaged_mapped_run_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = Index::new();
        let a = ix.get_or_create("a");
        ix.push(a, 0, 64, 0).unwrap();
        ix.push(a, 1, 128, 0).unwrap();
        let mut bytes = persist::encode(0, 4096, &ix.segment_runs(0).unwrap());
        // The last offset of the array (before the one block checksum).
        let n = bytes.len() - 4;
        bytes[n - 1] ^= 1;
        let path = dir.path().join("0.idx");
        std::fs::write(&path, &bytes).unwrap();
        let file = persist::parse(path.clone(), bytes, 0, 8192).unwrap();
        let mut opened = Index::new();
        assert!(opened.add_file(0, Arc::new(file)));
        let id = opened.get_or_create_resolved("a").unwrap();
        assert_eq!(opened.len(id), 2);
        assert!(matches!(opened.position(id, 0), Err(Error::Corrupt { .. })));
        assert!(!path.exists(), "a damaged index file is removed");
    }
}
