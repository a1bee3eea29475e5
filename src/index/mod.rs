//! The stream index: stream names to stream ids, and per stream, event number to position.
//!
//! A stream's positions are kept as runs, one per segment the stream has events in: the event
//! numbers of a run are contiguous, and its positions are 32-bit offsets into that segment. Runs
//! of the active segment live in memory; once a segment is sealed, [`persist`] writes its runs to
//! an index file, and the index maps that file and drops the in-memory copy.
//!
//! Opening a store loads no stream at all from the index files that cover the log up to some
//! position (the [`Lazy`] part, normally all of it after a clean close): the index holds only
//! the streams used since the store opened. A stream not held yet is looked up in those files
//! when first asked for (a hash search in each, see [`persist`]), and joins the index with its
//! runs there. So neither opening nor resident memory grows with the number of streams.

pub mod persist;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use persist::{Damaged, IndexFile, RunEntry, RunToSave};

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

impl<'a> Key<'a> {
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
            Key::Category(c) => crate::subscription::category_of(stream) == c,
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
struct Run {
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
            let _ = file.disk.remove(&file.path);
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

struct StreamEntry {
    name: Arc<str>,
    /// Number of events.
    len: u64,
    /// In event-number order; each starts where the one before ends.
    runs: Vec<Run>,
}

impl StreamEntry {
    /// The run holding event `n`; `n < len`.
    fn run_of(&self, n: u64) -> Option<&Run> {
        let i = self.runs.partition_point(|r| r.first_event <= n);
        self.runs.get(i.checked_sub(1)?)
    }
}

/// The category and event type key ids of streams and types seen before, so that indexing an
/// event builds no key name and (for its category) hashes nothing.
#[derive(Default)]
pub struct KeyCache {
    /// By stream id: its category's key id.
    categories: Vec<Option<StreamId>>,
    /// By event type.
    types: HashMap<Box<str>, StreamId>,
    /// The type asked for last, checked before hashing: most appends repeat a few types.
    last_type: Option<(Box<str>, StreamId)>,
}

impl KeyCache {
    /// The category key id of stream `id` (named `stream`), looked up or created if needed.
    pub fn category(&mut self, index: &mut Index, id: StreamId, stream: &str) -> Result<StreamId> {
        let slot = id as usize;
        if self.categories.len() <= slot {
            self.categories.resize(slot + 1, None);
        }
        if let Some(k) = self.categories[slot] {
            return Ok(k);
        }
        let key = Key::Category(crate::subscription::category_of(stream)).name();
        let k = index.get_or_create_resolved(&key)?;
        self.categories[slot] = Some(k);
        Ok(k)
    }

    /// Whether the category key of stream `id` is known.
    pub fn has_category(&self, id: StreamId) -> bool {
        self.categories
            .get(id as usize)
            .is_some_and(Option::is_some)
    }

    /// The key id of `event_type`, if seen before.
    pub fn cached_type(&mut self, event_type: &str) -> Option<StreamId> {
        if let Some((t, id)) = &self.last_type {
            if **t == *event_type {
                return Some(*id);
            }
        }
        let id = self.types.get(event_type).copied()?;
        self.last_type = Some((event_type.into(), id));
        Some(id)
    }

    /// The key id of `event_type`, looked up or created if needed.
    pub fn event_type(&mut self, index: &mut Index, event_type: &str) -> Result<StreamId> {
        if let Some(id) = self.cached_type(event_type) {
            return Ok(id);
        }
        let id = index.get_or_create_resolved(&Key::EventType(event_type).name())?;
        self.types.insert(event_type.into(), id);
        Ok(id)
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

/// A key's runs in the lazy part, found without holding the index's lock and handed to
/// [`Index::attach`].
pub struct LazyRuns(Run);

/// Where a key may have runs, as a table of key hashes (the event-id tables, which also hold the
/// hash of every key with the position of its last event in each segment) tells: so that a
/// lookup searches the index files of the few segments that may hold the key, not all of them.
pub trait Hints {
    /// Adds to `out` the positions whose entries have `hash`: a superset of the positions of the
    /// key's last event in each segment the hints cover. An error: search without hints.
    fn positions(&self, hash: u64, out: &mut Vec<u64>) -> Result<()>;
    /// Whether the hints cover the segment at `base`.
    fn covers(&self, base: u64) -> bool;
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
}

/// The runs of the key `name` in `lazy`, to be attached.
pub fn find_lazy(lazy: &Lazy, name: &str, hints: &dyn Hints) -> Result<Vec<LazyRuns>> {
    Ok(lazy.find(name, hints)?.into_iter().map(LazyRuns).collect())
}

/// The error for a damaged directory or names block of an index file, which is removed so that
/// the next open rebuilds it from the log.
fn damaged(file: &IndexFile, d: Damaged, what: &str) -> Error {
    let _ = file.disk.remove(&file.path);
    Error::Corrupt {
        file: file.path.clone(),
        offset: d.at as u64,
        reason: format!(
            "damaged index directory ({what}); the index file is removed and rebuilt from the log \
             when the store is next opened"
        ),
    }
}

/// The part of the log, a prefix of it, whose streams the index loads from index files when
/// they are first used rather than when the store opens: one file per segment, in log order.
pub struct Lazy {
    files: Vec<(u64, Arc<IndexFile>)>,
}

impl Lazy {
    /// The lazy part made of `files` (segment base and index file, in log order, each covering
    /// its segment up to its `covered_end`).
    pub fn new(files: Vec<(u64, Arc<IndexFile>)>) -> Lazy {
        Lazy { files }
    }

    /// How many index files the lazy part has.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// The index file of the segment at `base`, if it is part of the lazy part.
    pub fn file(&self, base: u64) -> Option<&Arc<IndexFile>> {
        self.files
            .binary_search_by_key(&base, |(b, _)| *b)
            .ok()
            .map(|i| &self.files[i].1)
    }

    /// The runs of the key `name` in the lazy part, in order (none if it has no events there).
    fn find(&self, name: &str, hints: &dyn Hints) -> Result<Vec<Run>> {
        let mut runs = Vec::new();
        let mut next = 0u64;
        let mut hinted = Vec::new();
        let use_hints = hints
            .positions(persist::name_hash(name), &mut hinted)
            .is_ok();
        for (i, (base, file)) in self.files.iter().enumerate() {
            let end = self.files.get(i + 1).map_or(u64::MAX, |(b, _)| *b);
            if use_hints && hints.covers(*base) && !hinted.iter().any(|p| (*base..end).contains(p))
            {
                continue;
            }
            let Some(e) = file
                .find(name)
                .map_err(|d| damaged(file, d, "checksum mismatch or entry out of place"))?
            else {
                continue;
            };
            if e.first_event != next {
                // The events between are missing from some file from the one of the run before
                // (or the first) to this one: none of them is used again.
                let from = runs.last().map_or(0, |r: &Run| {
                    self.files.partition_point(|(b, _)| *b < r.base)
                });
                for (_, f) in &self.files[from..i] {
                    let _ = f.disk.remove(&f.path);
                }
                return Err(damaged(
                    file,
                    Damaged { at: e.offsets_at },
                    &format!(
                        "the run of `{name}` starts at event {} where {next} belongs",
                        e.first_event
                    ),
                ));
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
        Ok(runs)
    }

    /// Adds to `out` up to `max` stream names (no category or type keys) of each file ordered
    /// after `after` (name hash, then name).
    fn names_after(
        &self,
        after: Option<(u64, &str)>,
        max: usize,
        out: &mut Vec<(u64, Arc<str>)>,
    ) -> Result<()> {
        for (_, file) in &self.files {
            let mut i = match after {
                Some((h, n)) => file
                    .first_after(h, n)
                    .map_err(|d| damaged(file, d, "checksum mismatch"))?,
                None => 0,
            };
            let mut taken = 0;
            while taken < max && i < file.run_count() {
                let e = file
                    .entry(i)
                    .map_err(|d| damaged(file, d, "checksum mismatch or entry out of place"))?;
                let name = file.name(&e);
                if !is_key_name(name) {
                    out.push((persist::name_hash(name), Arc::from(name)));
                    taken += 1;
                }
                i += 1;
            }
        }
        Ok(())
    }
}

/// The index.
#[derive(Default)]
pub struct Index {
    ids: HashMap<Arc<str>, StreamId>,
    streams: Vec<StreamEntry>,
    /// Per segment base: the streams with in-memory runs in that segment.
    touched: BTreeMap<u64, Vec<StreamId>>,
    /// The part of the log whose streams are loaded when first used.
    lazy: Option<Arc<Lazy>>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index::default()
    }

    /// The id of `stream`, if it is held in memory (see [`Index::lazy`] for the others).
    pub fn lookup(&self, stream: &str) -> Option<StreamId> {
        self.ids.get(stream).copied()
    }

    /// Makes the index look up the keys it does not hold in `lazy`'s index files. Only before
    /// any run after `lazy.end()` is added.
    pub fn set_lazy(&mut self, lazy: Lazy) {
        if !lazy.files.is_empty() {
            self.lazy = Some(Arc::new(lazy));
        }
    }

    /// How many keys are held in memory.
    pub fn loaded(&self) -> usize {
        self.streams.len()
    }

    /// Where keys the index does not hold in memory are to be looked up, if anywhere.
    pub fn lazy(&self) -> Option<&Arc<Lazy>> {
        self.lazy.as_ref()
    }

    /// Adds the key `name` with `runs`, its runs in the lazy part (from [`Lazy::find`] through
    /// [`find_lazy`]), unless it is held already; returns its id.
    pub fn attach(&mut self, name: &str, runs: Vec<LazyRuns>) -> StreamId {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let runs: Vec<Run> = runs.into_iter().map(|r| r.0).collect();
        let id = self.get_or_create(name);
        let entry = &mut self.streams[id as usize];
        entry.len = runs.last().map_or(0, |r| r.first_event + u64::from(r.len));
        entry.runs = runs;
        id
    }

    /// The id of the key `name`, looked up in the lazy part if it is not held, and created (with
    /// no events) if it has none anywhere.
    pub fn get_or_create_resolved(&mut self, name: &str) -> Result<StreamId> {
        if let Some(id) = self.ids.get(name) {
            return Ok(*id);
        }
        let runs = match &self.lazy {
            Some(lazy) => lazy.find(name, &NoHints)?,
            None => Vec::new(),
        };
        Ok(self.attach(name, runs.into_iter().map(LazyRuns).collect()))
    }

    /// Up to `max` stream names after `after` in the index's listing order (the hash of the
    /// name, then the name), from memory and the lazy part.
    pub fn names_page(&self, after: Option<&str>, max: usize) -> Result<Vec<Arc<str>>> {
        let after = after.map(|n| (persist::name_hash(n), n));
        let is_after = |h: u64, n: &str| after.is_none_or(|(ah, an)| (h, n) > (ah, an));
        let mut out: Vec<(u64, Arc<str>)> = Vec::new();
        if let Some(lazy) = &self.lazy {
            lazy.names_after(after, max, &mut out)?;
        }
        for s in &self.streams {
            if s.len > 0 && !is_key_name(&s.name) {
                let h = persist::name_hash(&s.name);
                if is_after(h, &s.name) {
                    out.push((h, s.name.clone()));
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out.truncate(max);
        Ok(out.into_iter().map(|(_, n)| n).collect())
    }

    /// How many events the stream has.
    pub fn len(&self, id: StreamId) -> u64 {
        self.streams.get(id as usize).map_or(0, |s| s.len)
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

    /// The stream's name.
    pub fn name(&self, id: StreamId) -> Option<&Arc<str>> {
        self.streams.get(id as usize).map(|s| &s.name)
    }

    /// The position of event `n` of stream `id`, `None` if it has no such event. An error if the
    /// index file holding it is damaged.
    pub fn position(&self, id: StreamId, n: u64) -> Result<Option<u64>> {
        let Some(s) = self.streams.get(id as usize) else {
            return Ok(None);
        };
        if n >= s.len {
            return Ok(None);
        }
        let Some(run) = s.run_of(n) else {
            return Ok(None);
        };
        run.check(&s.name)?;
        Ok(Some(run.position((n - run.first_event) as usize)))
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
        let Some(s) = self.streams.get(id as usize) else {
            return Ok(());
        };
        let hi = hi.min(s.len);
        if lo >= hi {
            return Ok(());
        }
        let first = s.runs.partition_point(|r| r.first_event <= lo).max(1) - 1;
        let last = s.runs.partition_point(|r| r.first_event < hi);
        let runs = s.runs.get(first..last).unwrap_or_default();
        let copy = |run: &Run, out: &mut Vec<u64>| -> Result<()> {
            run.check(&s.name)?;
            let a = lo.max(run.first_event) - run.first_event;
            let b = hi.min(run.first_event + u64::from(run.len)) - run.first_event;
            let (a, b) = (a as usize, b as usize);
            match (&run.offsets, forward) {
                (Offsets::Owned(v), true) => {
                    out.extend(v[a..b].iter().map(|&o| run.base + u64::from(o)))
                }
                (Offsets::Owned(v), false) => {
                    out.extend(v[a..b].iter().rev().map(|&o| run.base + u64::from(o)))
                }
                (Offsets::Mapped { file, at, .. }, true) => {
                    out.extend((a..b).map(|k| run.base + u64::from(file.offset(*at, k))))
                }
                (Offsets::Mapped { file, at, .. }, false) => out.extend(
                    (a..b)
                        .rev()
                        .map(|k| run.base + u64::from(file.offset(*at, k))),
                ),
            }
            Ok(())
        };
        if forward {
            runs.iter().try_for_each(|r| copy(r, out))
        } else {
            runs.iter().rev().try_for_each(|r| copy(r, out))
        }
    }

    /// The id of `stream`, creating an empty entry if it has none.
    pub fn get_or_create(&mut self, stream: &str) -> StreamId {
        if let Some(id) = self.ids.get(stream) {
            return *id;
        }
        let name: Arc<str> = Arc::from(stream);
        let id = self.streams.len() as StreamId;
        self.streams.push(StreamEntry {
            name: name.clone(),
            len: 0,
            runs: Vec::new(),
        });
        self.ids.insert(name, id);
        id
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
        let Some(entry) = self.streams.get_mut(id as usize) else {
            return Err(Discontinuity {
                stream: Arc::from(""),
                expected: 0,
                found: event_number,
            });
        };
        if event_number != entry.len {
            return Err(Discontinuity {
                stream: entry.name.clone(),
                expected: entry.len,
                found: event_number,
            });
        }
        let off = (position - segment_base) as u32;
        match entry.runs.last_mut() {
            Some(Run {
                base,
                len,
                offsets: Offsets::Owned(v),
                ..
            }) if *base == segment_base => {
                v.push(off);
                *len += 1;
            }
            _ => {
                entry.runs.push(Run {
                    base: segment_base,
                    first_event: event_number,
                    len: 1,
                    offsets: Offsets::Owned(vec![off]),
                });
                self.touched.entry(segment_base).or_default().push(id);
            }
        }
        entry.len += 1;
        Ok(())
    }

    /// The runs of every key with events in the segment at `base`, to be saved: those in memory,
    /// and, for the segment that was active when the store opened, those of its index file that
    /// are not (keys not used since).
    pub fn segment_runs(&self, base: u64) -> Result<Vec<RunToSave<'_>>> {
        let mut out = Vec::new();
        let mut held = std::collections::HashSet::new();
        for &id in self.touched.get(&base).map_or(&[][..], |v| &v[..]) {
            let s = &self.streams[id as usize];
            let mut in_seg = s.runs.iter().filter(|r| r.base == base).peekable();
            let Some(first) = in_seg.peek() else { continue };
            let first_event = first.first_event;
            let mut parts: Vec<&Run> = in_seg.collect();
            let offsets = match parts.as_slice() {
                [Run {
                    offsets: Offsets::Owned(v),
                    ..
                }] => Cow::Borrowed(&v[..]),
                _ => {
                    let mut v = Vec::new();
                    for r in parts.drain(..) {
                        r.check(&s.name)?;
                        v.extend((0..r.len as usize).map(|k| r.offset(k)));
                    }
                    Cow::Owned(v)
                }
            };
            held.insert(&*s.name);
            out.push(RunToSave {
                stream: Cow::Borrowed(&s.name),
                first_event,
                offsets,
            });
        }
        if let Some(file) = self.lazy.as_ref().and_then(|l| l.file(base)) {
            let entries = file
                .entries()
                .map_err(|d| damaged(file, d, "checksum mismatch or entry out of place"))?;
            for e in entries {
                let name = file.name(&e);
                if held.contains(name) {
                    continue;
                }
                if !file.run_is_intact(e.offsets_at, e.count, e.crc) {
                    return Err(damaged(
                        file,
                        Damaged { at: e.offsets_at },
                        "offsets checksum",
                    ));
                }
                out.push(RunToSave {
                    stream: Cow::Borrowed(name),
                    first_event: e.first_event,
                    offsets: Cow::Owned(
                        (0..e.count as usize)
                            .map(|k| file.offset(e.offsets_at, k))
                            .collect(),
                    ),
                });
            }
        }
        Ok(out)
    }

    /// Replaces the in-memory runs of the sealed segment at `base` with those of its index file,
    /// just written, freeing their memory. Runs the file does not match stay in memory.
    pub fn map_segment(&mut self, base: u64, file: IndexFile, entries: &[RunEntry]) {
        let file = Arc::new(file);
        for e in entries {
            let Some(id) = self.lookup(file.name(e)) else {
                continue;
            };
            let s = &mut self.streams[id as usize];
            let Some(at) = s.runs.iter().position(|r| r.base == base) else {
                continue;
            };
            let n = s.runs[at..].iter().take_while(|r| r.base == base).count();
            let parts = &s.runs[at..at + n];
            let same = parts[0].first_event == e.first_event
                && parts.iter().map(|r| u64::from(r.len)).sum::<u64>() == u64::from(e.count)
                && parts.last().is_some_and(|r| {
                    r.offset(r.len as usize - 1) == file.offset(e.offsets_at, e.count as usize - 1)
                });
            if same {
                s.runs.splice(
                    at..at + n,
                    [Run {
                        base,
                        first_event: e.first_event,
                        len: e.count,
                        offsets: Offsets::Mapped {
                            file: file.clone(),
                            at: e.offsets_at,
                            crc: e.crc,
                            checked: AtomicBool::new(true),
                        },
                    }],
                );
            }
        }
        self.touched.remove(&base);
    }

    /// Drops the bookkeeping of which streams a segment touches, once its runs are final but
    /// stay in memory (its index file could not be written).
    pub fn forget_segment(&mut self, base: u64) {
        self.touched.remove(&base);
    }

    /// Adds the runs of the segment at `base` from its index file. With `in_memory`, the offsets
    /// are copied (for the active segment, which appends extend) and every run's checksum is
    /// verified; otherwise the runs point into the file and are verified on first use.
    ///
    /// `false` if the file does not continue the index (a run that does not start at its
    /// stream's length, or a damaged run): the caller rebuilds from the log.
    pub fn apply_file(
        &mut self,
        base: u64,
        file: IndexFile,
        entries: &[RunEntry],
        in_memory: bool,
    ) -> bool {
        let file = Arc::new(file);
        for e in entries {
            let Ok(id) = self.get_or_create_resolved(file.name(e)) else {
                return false;
            };
            let entry = &mut self.streams[id as usize];
            if entry.len != e.first_event || entry.runs.last().is_some_and(|r| r.base >= base) {
                return false;
            }
            if in_memory {
                if !file.run_is_intact(e.offsets_at, e.count, e.crc) {
                    return false;
                }
                for k in 0..e.count as usize {
                    let pos = base + u64::from(file.offset(e.offsets_at, k));
                    if self.push(id, e.first_event + k as u64, pos, base).is_err() {
                        return false;
                    }
                }
            } else {
                entry.runs.push(Run {
                    base,
                    first_event: e.first_event,
                    len: e.count,
                    offsets: Offsets::Mapped {
                        file: file.clone(),
                        at: e.offsets_at,
                        crc: e.crc,
                        checked: AtomicBool::new(false),
                    },
                });
                entry.len += u64::from(e.count);
            }
        }
        if !in_memory {
            file.release_pages();
        }
        true
    }
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
        let (file, entries) = parse(bytes);
        ix.map_segment(0, file, &entries);
        assert!(ix.segment_runs(0).unwrap().is_empty());
        assert_eq!(positions(&ix, a, true), before);
        let mut mid = Vec::new();
        ix.copy_positions(a, 8, 12, false, &mut mid).unwrap();
        assert_eq!(mid, [before[11], before[10], before[9], before[8]]);
        assert_eq!(ix.position(b, 0).unwrap(), Some(4000));

        // The same from the file alone, as opening does it.
        let mut fresh = Index::new();
        let fa = fresh.get_or_create("a");
        let fb = fresh.get_or_create("b");
        for k in 0..10u64 {
            fresh.push(fa, k, 64 + 200 * k, 0).unwrap();
        }
        fresh.push(fb, 0, 4000, 0).unwrap();
        let bytes = persist::encode(0, 4096, &fresh.segment_runs(0).unwrap());
        let (file, entries) = parse(bytes);
        let mut opened = Index::new();
        assert!(opened.apply_file(0, file, &entries, false));
        let id = opened.lookup("a").unwrap();
        assert_eq!(positions(&opened, id, true), before[..10]);
        // A file that does not continue the index is refused.
        let bytes = persist::encode(0, 4096, &fresh.segment_runs(0).unwrap());
        let (file, entries) = parse(bytes);
        assert!(!opened.apply_file(0, file, &entries, false));
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
        let entries = file.entries().unwrap();
        let mut opened = Index::new();
        assert!(opened.apply_file(0, file, &entries, false));
        let id = opened.lookup("a").unwrap();
        assert_eq!(opened.len(id), 2);
        assert!(matches!(opened.position(id, 0), Err(Error::Corrupt { .. })));
        assert!(!path.exists(), "a damaged index file is removed");
    }
}
