//! Compaction: rewriting sealed segments without the records no reader can see any more
//! (deleted, truncated, beyond a stream's `max_count`, older than its `max_age_secs`), giving
//! their disk space back to the file system.
//!
//! Positions never move. A compacted segment stores its remaining records back to back, and a
//! table after them (see [`crate::log::compacted`]) says which ranges of positions were
//! removed (so a record's place in the file is its position less the removed bytes before it)
//! and what each removed record was — its stream, event type and number, none of its content —
//! so that the stream, category and event-type indexes, their files and every checkpoint keep
//! their numbers, and the index can still be rebuilt from the log alone.
//!
//! A compaction first syncs the log, so that the deletes and truncations it acts on are
//! durable before what they hide is removed. A segment is rewritten into
//! `<segment>.compact.tmp`, synced, and renamed over the segment; the directory is synced
//! (after the log is synced again) at the end of the compaction, and at least once a second
//! while it runs: a crash leaves either the old segment or the new one, each whole (a leftover
//! `.tmp` is deleted at open). Readers holding the old segment's map go on reading it; its
//! blocks are freed when the last of them lets go. Each segment is a step of its own, so an
//! interrupted compaction keeps the segments it finished (after a power loss, those renamed
//! before the last directory sync), and the next one reads only
//! the segments where something is left to remove: which those are is worked out from the
//! index and the streams' metadata, without reading any segment.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use tracing::Span;

use crate::error::{Error, Result};
use crate::index::StreamId;
use crate::log::compacted::{name_fits, Compacted, TableBuilder};
use crate::log::format::{
    decode_record, CompactedHeader, SegmentHeader, COMPACTED_VERSION, SEGMENT_HEADER_LEN,
};
use crate::log::segment::{segment_file_name, Segment};
use crate::store::Shared;

/// What [`Store::compact`](crate::Store::compact) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactionReport {
    /// Sealed segments that had records to remove, and were rewritten.
    pub segments_rewritten: usize,
    /// Records removed (not counting those an earlier compaction removed).
    pub events_removed: u64,
    /// Bytes of records removed.
    pub bytes_removed: u64,
    /// Disk space the rewritten segments took before (allocated blocks).
    pub disk_bytes_before: u64,
    /// Disk space they take now.
    pub disk_bytes_after: u64,
}

/// How often the directory is synced while segments are renamed into place. A rename whose
/// directory entry a power loss undoes leaves the old segment, whole and still valid, to be
/// compacted again: this bounds that repeated work, where a sync per segment cost a rewrite
/// of the benchmark's 16 MiB segments a tenth of its time, and every durable append waiting
/// behind it a flush.
const DIR_SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Suffix of a segment being rewritten by compaction (deleted at open, like every `.tmp`).
const COMPACT_SUFFIX: &str = ".compact.tmp";

impl Shared {
    /// Compacts every sealed segment that holds records no reader sees any more.
    pub(crate) fn compact(&self) -> Result<CompactionReport> {
        self.check_writable()?;
        let _one = self.compaction.lock();
        let _span = tracing::info_span!("compaction").entered();
        // What makes a record removable (a delete, a truncation: metadata events, most likely
        // in the segment being written) must be durable before its removal is: under
        // `Durability::None` or `Buffered`, a power loss could otherwise keep the compacted
        // segment and lose the delete, and the stream would come back with holes.
        {
            let mut w = self.writer.lock();
            w.log.flush()?;
            w.mark_synced();
            self.counters.sync();
        }
        let mut plan = Planner::new(self)?;
        let mut report = CompactionReport::default();
        let mut bumped = false;
        // Renames not yet made durable by a directory sync, and when the last one was.
        let mut renamed = false;
        let mut dir_synced = std::time::Instant::now();
        let most = self.copies_at_once();
        let syncs = &self.durable_syncs;
        // The durable syncs' count at the last look (odd while one is under way).
        let mut syncs_seen = None;
        let gate = parking_lot::Mutex::new(());
        let disk = &self.options.disk;
        // The first error, and a copy's panic: once a copy has failed or panicked, the copy
        // after it (if any) is waited for and its file removed, and the compaction stops there.
        let mut failed: Option<Error> = None;
        let mut panicked = None;
        std::thread::scope(|s| {
            // Copies under way, oldest segment first; each is renamed into place in that order.
            let mut flight = std::collections::VecDeque::new();
            let mut more = true;
            let mut stopping = false;
            loop {
                // A second copy only while nothing else uses the store, so that its reads and
                // appends keep a core (and the syncs of durable ones the disk) to themselves:
                // no view of the log alive (a long read holds one), none taken and no durable
                // sync made since the last look. The first look clears what the planning's own
                // view set, so the first two copies go at once unless a view is alive or a
                // sync under way.
                let used = self.log.take_used();
                let now = syncs.load(std::sync::atomic::Ordering::Acquire);
                let busy = syncs_seen.is_some_and(|s| used || s != now)
                    || self.log.views_alive() > 0
                    || !now.is_multiple_of(2);
                syncs_seen = Some(now);
                let width = if busy { 1 } else { most };
                while !stopping && failed.is_none() && more && flight.len() < width {
                    let next = self.next_rewrite(&mut plan, &mut bumped).and_then(|n| {
                        n.map(|(seg, fresh)| self.start_copy(s, seg, fresh, &gate, most == 1))
                            .transpose()
                    });
                    match next {
                        Ok(Some(copy)) => flight.push_back(copy),
                        Ok(None) => more = false,
                        // The copies under way are of earlier segments: they are still
                        // renamed into place.
                        Err(e) => failed = Some(e),
                    }
                }
                let Some(copy) = flight.pop_front() else {
                    break;
                };
                if stopping {
                    copy.abandon(disk);
                    continue;
                }
                // A close or a handover does not wait for more renames than it must.
                if let Err(e) = self.check_open() {
                    copy.abandon(disk);
                    (failed, stopping) = (Some(e), true);
                    continue;
                }
                let before = allocated(&copy.seg);
                let (new, removed, bytes) = match self.finish_copy(copy) {
                    Ok(Ok(r)) => r,
                    // An earlier segment's error than that of starting a later one.
                    Ok(Err(e)) => {
                        (failed, stopping) = (Some(e), true);
                        continue;
                    }
                    Err(panic) => {
                        panicked = Some(panic);
                        stopping = true;
                        continue;
                    }
                };
                report.disk_bytes_before += before;
                report.disk_bytes_after += allocated(&new);
                report.segments_rewritten += 1;
                report.events_removed += removed;
                report.bytes_removed += bytes;
                let new = Arc::new(new);
                self.log.replace_segment(new.clone());
                self.ids.replace_segment(&new);
                // The old file's unsynced writes (`Durability::None`) need no sync any more:
                // its records are in the new file, synced.
                self.writer.lock().log.forget_sealed(&new);
                renamed = true;
                if dir_synced.elapsed() >= DIR_SYNC_EVERY {
                    if let Err(e) = self.sync_renames() {
                        (failed, stopping) = (Some(e), true);
                        continue;
                    }
                    (renamed, dir_synced) = (false, std::time::Instant::now());
                }
            }
        });
        if let Some(panic) = panicked {
            std::panic::resume_unwind(panic);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if renamed {
            self.sync_renames()?;
        }
        // The plan holds the last references to the replaced segments (readers that took theirs
        // earlier let go when they finish). Letting go of a segment unmaps its file and, as it
        // was renamed over, has the kernel free its cached pages and blocks: some milliseconds
        // per segment that no caller needs to wait for.
        release(plan);
        tracing::info!(
            segments = report.segments_rewritten,
            events = report.events_removed,
            freed = report
                .disk_bytes_before
                .saturating_sub(report.disk_bytes_after),
            "compaction done"
        );
        Ok(report)
    }

    /// Bytes of sealed segments that a compaction would give back: the records no reader sees
    /// that are still there, and the unused space of segments sealed early.
    pub(crate) fn reclaimable(&self) -> Result<u64> {
        let mut plan = Planner::new(self)?;
        let mut bytes = 0u64;
        while let Some((seg, offsets)) = plan.next_segment(self)? {
            if sealed_early(&seg) {
                bytes += allocated(&seg).saturating_sub(seg.data_end());
            }
            seg.check_mapped()?;
            let b = seg.bytes();
            for o in offsets {
                if seg.gap_containing(u64::from(o)).is_some() {
                    continue;
                }
                let at = seg.file_off(u64::from(o)) as usize;
                if let Some(len) = b.get(at..at + 4) {
                    bytes += u64::from(crate::log::format::u32_at(len, 0));
                }
            }
        }
        Ok(bytes)
    }

    /// The background compaction: every `every`, compacts if `min` bytes can be given back.
    pub(crate) fn compact_loop(&self, min: u64, every: std::time::Duration) {
        let mut stop = self.stop.lock();
        while !*stop {
            self.stop_cv.wait_for(&mut stop, every);
            if *stop {
                break;
            }
            drop(stop);
            match self.reclaimable() {
                Ok(n) if n >= min => {
                    if let Err(e) = self.compact() {
                        tracing::warn!(error = %e, "background compaction failed");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "background compaction could not plan"),
            }
            stop = self.stop.lock();
        }
    }

    /// The first event number of `stream` (of `len` events, rules `md`) a reader sees: every
    /// event below it is hidden. Every rule hides a prefix of a stream (an age limit: the events
    /// up to the first one young enough, read from the log), so what compaction removes is
    /// always a stream's oldest events, and what stays is what readers see.
    fn floor(
        &self,
        id: StreamId,
        len: u64,
        md: &crate::StreamMetadata,
        now: u64,
        view: &crate::log::reader::LogView,
    ) -> Result<u64> {
        if md.tombstoned {
            return Ok(len);
        }
        let mut floor = md.first_visible(len);
        let oldest = md.oldest_visible(now);
        let mut positions = Vec::new();
        while oldest > 0 && floor < len {
            positions.clear();
            {
                let index = self.index.read();
                self.check_index()?;
                index.copy_positions(id, floor, len.min(floor + 256), true, &mut positions)?;
            }
            if positions.is_empty() {
                break;
            }
            for &p in &positions {
                if let Some(e) = view.event_at(p)? {
                    if e.timestamp_micros() >= oldest {
                        return Ok(floor);
                    }
                }
                floor += 1;
            }
        }
        Ok(floor)
    }
}

/// Positions read from the index per call.
const CHUNK: u64 = 256;

/// Works out, one sealed segment at a time in log order, which of its records no reader sees:
/// the streams with metadata and the first event each shows (in memory: one entry per such
/// stream), and a heap of where each one's next hidden event is, so that a segment costs the
/// work of the streams with hidden events in it, and memory does not grow with the log.
///
/// The store's own streams whose rules their names imply (checkpoints, snapshots, metadata: see
/// [`rules_of`](crate::lifecycle::rules_of)) may be one per actor, so they are not listed: they
/// are found by walking the event type index of each kind in log order, alongside the streams,
/// reading each of their records still in a sealed segment for its stream and number (a cache of
/// a bounded number of those streams' first visible events saves the lookups).
struct Planner {
    /// The sealed segments, oldest first, and the next one to plan.
    segments: Vec<Arc<Segment>>,
    next: usize,
    /// Per stream: its id, the first event a reader sees, and the next event to look at.
    streams: Vec<(StreamId, u64, u64)>,
    /// Per event type walked: its key's id, its length when planning began, the next entry.
    keys: Vec<(StreamId, u64, u64)>,
    /// The rules and first visible event of streams met in the walks of `keys`.
    table: Arc<crate::lifecycle::MetaTable>,
    firsts: std::collections::HashMap<String, u64>,
    /// (position of its next hidden event or walked entry, walk) for each walk with work left.
    heap: BinaryHeap<Reverse<(u64, Walk)>>,
    positions: Vec<u64>,
}

/// What a heap entry of the [`Planner`] stands for: an index into its streams or its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Walk {
    Stream(usize),
    Key(usize),
}

/// First visible events a [`Planner`] keeps of streams met in its walks before it starts again.
const MAX_FIRSTS: usize = 4096;

impl Planner {
    fn new(shared: &Shared) -> Result<Planner> {
        let view = shared.log.view();
        let mut segments = view.segments_in(0, u64::MAX);
        // The newest segment is still written; everything before it is sealed.
        segments.pop();
        let table = shared.metadata_table()?;
        let now = crate::lifecycle::now_micros();
        let mut plan = Planner {
            segments,
            next: 0,
            streams: Vec::new(),
            keys: Vec::new(),
            table: table.clone(),
            firsts: std::collections::HashMap::new(),
            heap: BinaryHeap::new(),
            positions: Vec::new(),
        };
        for (stream, (_, md)) in table.iter() {
            // The store's own streams are walked through their event types below.
            if stream.starts_with(crate::SYSTEM_PREFIX) {
                continue;
            }
            let Some(md) = crate::lifecycle::rules_of(stream, Some(md)) else {
                continue;
            };
            let (Some(id), len) = shared.stream_len(stream)? else {
                continue;
            };
            let floor = shared.floor(id, len, md, now, &view)?;
            if floor > 0 {
                plan.streams.push((id, floor, 0));
                plan.advance(shared, Walk::Stream(plan.streams.len() - 1))?;
            }
        }
        for event_type in crate::lifecycle::IMPLIED_RULE_TYPES {
            let key = crate::index::Key::EventType(event_type).name();
            if let (Some(id), len) = shared.stream_len(&key)? {
                plan.keys.push((id, len, 0));
                plan.advance(shared, Walk::Key(plan.keys.len() - 1))?;
            }
        }
        Ok(plan)
    }

    /// Puts walk `w` back in the heap at the position of its next event to look at, if any.
    fn advance(&mut self, shared: &Shared, w: Walk) -> Result<()> {
        let (id, end, next) = match w {
            Walk::Stream(i) => self.streams[i],
            Walk::Key(i) => self.keys[i],
        };
        if next >= end {
            return Ok(());
        }
        let index = shared.index.read();
        shared.check_index()?;
        if let Some(p) = index.position(id, next)? {
            self.heap.push(Reverse((p, w)));
        }
        Ok(())
    }

    /// The first event of `stream` a reader sees, by its count and truncation rules (an age
    /// limit, which none of the store's own streams has, is left to the reads).
    fn first_visible(&mut self, shared: &Shared, stream: &str) -> Result<u64> {
        if let Some(&f) = self.firsts.get(stream) {
            return Ok(f);
        }
        let md = self.table.get(stream).map(|(_, md)| &**md);
        let first = match crate::lifecycle::rules_of(stream, md) {
            None => 0,
            Some(md) => {
                let (_, len) = shared.stream_len(stream)?;
                if md.tombstoned {
                    len
                } else {
                    md.first_visible(len)
                }
            }
        };
        if self.firsts.len() >= MAX_FIRSTS {
            self.firsts.clear();
        }
        self.firsts.insert(stream.to_string(), first);
        Ok(first)
    }

    /// Adds to `offsets` the hidden records of key walk `i` that lie in `seg`; returns the
    /// entry to go on from.
    fn walk_key(
        &mut self,
        shared: &Shared,
        i: usize,
        seg: &Segment,
        offsets: &mut Vec<u32>,
    ) -> Result<u64> {
        let (id, len, mut next) = self.keys[i];
        let end = seg.end_base();
        seg.check_mapped()?;
        let bytes = seg.bytes();
        while next < len {
            self.positions.clear();
            {
                let index = shared.index.read();
                shared.check_index()?;
                let hi = len.min(next + CHUNK);
                index.copy_positions(id, next, hi, true, &mut self.positions)?;
            }
            if self.positions.is_empty() {
                return Ok(len);
            }
            let positions = std::mem::take(&mut self.positions);
            for &q in &positions {
                if q >= end {
                    self.positions = positions;
                    return Ok(next);
                }
                next += 1;
                if q < seg.base || seg.gap_containing(q - seg.base).is_some() {
                    continue;
                }
                let at = seg.file_off(q - seg.base) as usize;
                let v = decode_record(bytes, at, false).map_err(|_| Error::Corrupt {
                    file: seg.path.clone(),
                    offset: q - seg.base,
                    reason: "the index places an event where no record starts".to_string(),
                })?;
                let stream = std::str::from_utf8(&bytes[v.stream.0..v.stream.1]).unwrap_or("");
                if v.event_number < self.first_visible(shared, stream)? {
                    offsets.push((q - seg.base) as u32);
                }
            }
            self.positions = positions;
        }
        Ok(next)
    }

    /// The next sealed segment with hidden records or unused space, and the offsets of those
    /// records; `None` after the last sealed segment.
    fn next_segment(&mut self, shared: &Shared) -> Result<Option<(Arc<Segment>, Vec<u32>)>> {
        while let Some(seg) = self.segments.get(self.next).cloned() {
            self.next += 1;
            let end = seg.end_base();
            let mut offsets = Vec::new();
            while let Some(&Reverse((p, w))) = self.heap.peek() {
                if p >= end {
                    break;
                }
                self.heap.pop();
                let i = match w {
                    Walk::Stream(i) => i,
                    Walk::Key(k) => {
                        self.keys[k].2 = self.walk_key(shared, k, &seg, &mut offsets)?;
                        self.advance(shared, w)?;
                        continue;
                    }
                };
                // This stream's hidden events from here on, while they lie in this segment.
                let (id, floor, mut next) = self.streams[i];
                'stream: while next < floor {
                    self.positions.clear();
                    {
                        let index = shared.index.read();
                        shared.check_index()?;
                        let hi = floor.min(next + CHUNK);
                        index.copy_positions(id, next, hi, true, &mut self.positions)?;
                    }
                    if self.positions.is_empty() {
                        next = floor;
                        break;
                    }
                    for &q in &self.positions {
                        if q >= end {
                            break 'stream;
                        }
                        if q >= seg.base {
                            offsets.push((q - seg.base) as u32);
                        }
                        next += 1;
                    }
                }
                self.streams[i].2 = next;
                self.advance(shared, w)?;
            }
            if !offsets.is_empty() || sealed_early(&seg) {
                sort_offsets(&mut offsets);
                offsets.dedup();
                return Ok(Some((seg, offsets)));
            }
        }
        Ok(None)
    }
}

/// Sorts a segment's offsets of removed records: a radix sort, 12 bits a pass (two passes for
/// a segment under 16 MiB). The planner gathers them stream by stream, tens of thousands per
/// segment where every other record goes, and a comparison sort of them took a twentieth of
/// the compaction's time.
fn sort_offsets(v: &mut Vec<u32>) {
    const BITS: u32 = 12;
    if v.len() < 1024 {
        v.sort_unstable();
        return;
    }
    let max = v.iter().copied().max().unwrap_or(0);
    let mut out = vec![0u32; v.len()];
    let mut shift = 0;
    while shift < u32::BITS && max >> shift != 0 {
        let digit = |x: u32| ((x >> shift) & ((1 << BITS) - 1)) as usize;
        let mut start = vec![0u32; 1 << BITS];
        for &x in v.iter() {
            start[digit(x)] += 1;
        }
        let mut sum = 0;
        for c in start.iter_mut() {
            (*c, sum) = (sum, sum + *c);
        }
        for &x in v.iter() {
            let d = digit(x);
            out[start[d] as usize] = x;
            start[d] += 1;
        }
        std::mem::swap(v, &mut out);
        shift += BITS;
    }
}

impl Shared {
    /// Makes the renames of the segments rewritten so far durable.
    fn sync_renames(&self) -> Result<()> {
        // The directory sync also makes durable the entries of segments the writer created
        // since its last sync (`Durability::None`, `Buffered`): their predecessors must be whole
        // on disk first, or a power loss would leave a later segment after a torn one.
        self.writer.lock().log.flush()?;
        yield_to_sync(&self.durable_syncs);
        self.options.disk.sync_dir(&self.dir)
    }

    /// How many segments are copied at once while nothing else uses the store: two where the
    /// machine has two cores or more, so that a compaction of an otherwise idle store uses them
    /// both (each copy is bound by the CPU while the segments are in the page cache); one on a
    /// single core, and one when a fault injector watches the disk and needs every run of a
    /// test to make the same file operations in the same order.
    fn copies_at_once(&self) -> usize {
        if self.options.disk.keeps_order() {
            return 1;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
    }

    /// The next sealed segment to rewrite and the offsets of its records to remove that no
    /// earlier compaction removed; `None` when no segment is left.
    fn next_rewrite(
        &self,
        plan: &mut Planner,
        bumped: &mut bool,
    ) -> Result<Option<(Arc<Segment>, Vec<u32>)>> {
        while let Some((seg, offsets)) = plan.next_segment(self)? {
            self.check_open()?;
            // The segment as it is now (a view's may be older).
            let Some(seg) = self.log.segments().into_iter().find(|s| s.base == seg.base) else {
                continue;
            };
            // Incremental: what an earlier compaction removed is in the segment's table, and a
            // segment with nothing new to remove is not read.
            let fresh: Vec<u32> = offsets
                .into_iter()
                .filter(|&o| seg.gap_containing(u64::from(o)).is_none())
                .collect();
            if fresh.is_empty() && !sealed_early(&seg) {
                continue;
            }
            if !*bumped {
                // Builds that know only version 1 must refuse the store untouched, before they
                // reach a compacted segment: the meta file says version 2 first.
                let disk = &self.options.disk;
                if crate::startup::meta_version(&self.dir, disk)? < COMPACTED_VERSION {
                    crate::startup::write_meta(&self.dir, COMPACTED_VERSION, disk)?;
                }
                *bumped = true;
            }
            return Ok(Some((seg, fresh)));
        }
        Ok(None)
    }

    /// Creates the file `seg` is rewritten into and starts copying into it what stays of `seg`
    /// without the records at `remove` (sorted segment offsets, none removed before): on a
    /// thread of `s`, [`Options::compaction_niceness`] steps nicer than the caller, or here if
    /// the copy is to run at the caller's priority and `alone` (one copy at a time). The copy
    /// is all CPU while the segments are in the page cache, and an appender woken from its
    /// sync must not wait for a core behind it. Only the copy: the planning, and the steps that take the store's
    /// locks (the writer's, the index's) or the kernel's (creating, renaming and mapping a
    /// file), stay on the caller's thread, so that appends never wait for a lock held by a
    /// thread the scheduler puts last. Measured with `cargo bench --bench compaction` while
    /// another thread kept a core busy: durable append p99 during a compaction over without it
    /// 3.0 to 6.2 at the caller's priority (thirteen runs), 1.4 to 2.5 ten steps nicer
    /// (thirteen runs of fourteen; 3.4 in one; README, "Compaction performance").
    ///
    /// [`Options::compaction_niceness`]: crate::Options::compaction_niceness
    fn start_copy<'s>(
        &'s self,
        s: &'s std::thread::Scope<'s, '_>,
        seg: Arc<Segment>,
        remove: Vec<u32>,
        gate: &'s parking_lot::Mutex<()>,
        alone: bool,
    ) -> Result<Rewriting<'s>> {
        let disk = &self.options.disk;
        let tmp = self
            .dir
            .join(format!("{}{COMPACT_SUFFIX}", segment_file_name(seg.base)));
        seg.check_mapped()?;
        let file = disk.create(&tmp)?;
        let steps = self.options.compaction_niceness;
        if steps == 0 && alone {
            // A panic is caught as a thread's would be, so that its file is removed too.
            let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.copy(&seg, &remove, &file, &tmp, gate)
            }));
            return Ok(Rewriting {
                seg,
                tmp,
                run: Run::Done(done),
            });
        }
        // The caller's subscriber and span go along, so that its traces show the work where
        // they would have.
        let (dispatch, span) = (
            tracing::dispatcher::get_default(Clone::clone),
            Span::current(),
        );
        let (on, at) = (seg.clone(), tmp.clone());
        let started = std::thread::Builder::new()
            .name("evj-compact".into())
            .spawn_scoped(s, move || {
                lower_priority(steps);
                tracing::dispatcher::with_default(&dispatch, || {
                    span.in_scope(|| self.copy(&on, &remove, &file, &at, gate))
                })
            });
        match started {
            Ok(handle) => Ok(Rewriting {
                seg,
                tmp,
                run: Run::Thread(handle),
            }),
            // With no thread to be had, this segment stays as it is, and a later compaction
            // goes on from it.
            Err(e) => {
                let _ = disk.remove(&tmp);
                Err(Error::io("starting the thread that writes", &tmp, e))
            }
        }
    }

    /// Waits for `copy`, then renames its file into place (the directory is left to
    /// [`sync_renames`](Self::sync_renames)) and opens it; returns it with the records and bytes
    /// removed. A failed copy's file is removed and the segment stays as it was; so is a copy
    /// whose thread panicked, whose panic is returned as `Err` for the caller to resume once
    /// the other copy under way has been dealt with.
    fn finish_copy(&self, copy: Rewriting<'_>) -> std::thread::Result<Result<(Segment, u64, u64)>> {
        let disk = &self.options.disk;
        let (seg, tmp) = (copy.seg.clone(), copy.tmp.clone());
        let (removed, removed_bytes, built) = match copy.run.wait() {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let _ = disk.remove(&tmp);
                return Ok(Err(e));
            }
            Err(panic) => {
                let _ = disk.remove(&tmp);
                return Err(panic);
            }
        };
        let path = self.dir.join(segment_file_name(seg.base));
        Ok((|| {
            if let Err(e) = disk.rename(&tmp, &path) {
                let _ = disk.remove(&tmp);
                return Err(e);
            }
            let new = Segment::open_compacted(&path, seg.base, disk, Arc::new(built))?;
            Ok((new, removed, removed_bytes))
        })())
    }

    /// Writes what stays of `seg` without the records at `remove` into `file` (at `tmp`), with
    /// its compaction table and header, synced; returns the records and bytes removed and the
    /// table.
    fn copy(
        &self,
        seg: &Segment,
        remove: &[u32],
        file: &std::fs::File,
        tmp: &std::path::Path,
        gate: &parking_lot::Mutex<()>,
    ) -> Result<(u64, u64, Compacted)> {
        let disk = &self.options.disk;
        seg.check_mapped()?;
        let bytes = seg.bytes();
        let data_end = seg.data_end();
        let old = seg.compacted.clone();
        let corrupt = |offset: u64, reason: String| Error::Corrupt {
            file: seg.path.clone(),
            offset,
            reason,
        };
        let mut table = TableBuilder::default();
        let mut removed = 0u64;
        let mut removed_bytes = 0u64;
        let mut live_from: Option<u64> = None;
        let mut next = remove.iter().copied().peekable();
        let mut off = SEGMENT_HEADER_LEN as u64;
        let open = || self.check_open();
        let mut out = Output::new(disk, file, tmp, &self.durable_syncs, gate, &open);
        // Copies the records at segment offsets `from..to` (no gap among them, so they lie
        // together in the old file too).
        let mut flush = |from: &mut Option<u64>, to: u64| -> Result<()> {
            if let Some(a) = from.take() {
                let at = seg.file_off(a) as usize;
                out.push(&bytes[at..at + (to - a) as usize])?;
            }
            Ok(())
        };
        // Where the gaps of an earlier compaction start, in order: a run of records that
        // stay ends at the next one.
        let gap_starts: Vec<u64> = old.as_ref().map_or_else(Vec::new, |t| {
            t.gaps.iter().map(|&(start, _)| u64::from(start)).collect()
        });
        let mut next_gap = 0;
        let mut records = 0u32;
        while off < data_end {
            records = records.wrapping_add(1);
            if records.is_multiple_of(4096) {
                // A close (or a handover, whose write gap this would lengthen) does not
                // wait for the rest of the segment: the old one stays. (Each write asks too,
                // for the long runs of records that stay, which are one step here.)
                self.check_open()?;
            }
            if let (Some(t), Some((start, end))) = (&old, seg.gap_containing(off)) {
                flush(&mut live_from, off)?;
                let (from, to) = (start as u32, end as u32);
                let first = t.removed.partition_point(|r| r.offset < from);
                let inside = &t.removed[first..];
                let inside = &inside[..inside.partition_point(|r| r.offset < to)];
                for (k, r) in inside.iter().enumerate() {
                    let until = inside.get(k + 1).map_or(to, |n| n.offset);
                    table.carry(r.offset, until, t, r);
                }
                off = end;
                continue;
            }
            // The records that stay, up to the next removed one (or gap, or the end), are
            // copied as they are, checksums included, without being walked one by one: a
            // reader still finds any damage they hold. Only a removed record, whose names
            // and number go into the table, is decoded and has its checksum checked here,
            // which also catches an index placing an event where no record starts.
            let removing = next.peek().is_some_and(|&o| u64::from(o) == off);
            if !removing {
                if next.peek().is_some_and(|&o| u64::from(o) < off) {
                    return Err(corrupt(
                        off,
                        "the index places an event where no record starts".to_string(),
                    ));
                }
                while gap_starts.get(next_gap).is_some_and(|&g| g <= off) {
                    next_gap += 1;
                }
                let stop = next
                    .peek()
                    .map_or(data_end, |&o| u64::from(o))
                    .min(gap_starts.get(next_gap).copied().unwrap_or(data_end))
                    .min(data_end);
                live_from.get_or_insert(off);
                off = stop;
                continue;
            }
            let v = decode_record(bytes, seg.file_off(off) as usize, true).map_err(|e| {
                corrupt(
                    off,
                    match e {
                        crate::log::format::RecordError::End => {
                            "compaction found zeros where a record belongs".to_string()
                        }
                        crate::log::format::RecordError::Bad(r) => r.to_string(),
                    },
                )
            })?;
            next.next();
            flush(&mut live_from, off)?;
            let text = |(a, b): (usize, usize)| std::str::from_utf8(&bytes[a..b]).unwrap_or("");
            let (stream, event_type) = (text(v.stream), text(v.event_type));
            if !name_fits(stream.len()) || !name_fits(event_type.len()) {
                return Err(corrupt(
                    off,
                    "a removed record's stream name or event type is empty or too long".to_string(),
                ));
            }
            table.remove(off as u32, v.len as u32, stream, event_type, v.event_number);
            removed += 1;
            removed_bytes += v.len as u64;
            off += v.len as u64;
        }
        flush(&mut live_from, data_end)?;
        let end = out.finish()?;
        if let Some(o) = next.next() {
            return Err(corrupt(
                u64::from(o),
                "the index places an event past the segment's records".to_string(),
            ));
        }
        let built = table.finish(data_end);
        let table_at = built.table_at;
        if end != table_at {
            return Err(corrupt(
                data_end,
                "the records kept and the gaps do not add up to the segment".to_string(),
            ));
        }
        let table = built.encode();
        let header = SegmentHeader {
            version: COMPACTED_VERSION,
            base: seg.base,
            capacity: seg.capacity,
            compacted: Some(CompactedHeader {
                data_end,
                table_at,
                table_len: u32::try_from(table.len()).map_err(|_| {
                    Error::InvalidInput("compaction table larger than 4 GiB".into())
                })?,
                table_crc: crc32fast::hash(&table),
            }),
        };
        out.write_at(&table, table_at)?;
        out.write_at(&header.encode(), 0)?;
        disk.set_len(file, tmp, table_at + table.len() as u64)?;
        out.settle();
        // Always synced, whatever the durability mode: the old records it replaces were
        // durable, and must stay so.
        disk.sync_all(file, tmp)?;
        Ok((removed, removed_bytes, built))
    }
}

/// A segment's copy under way (or done, if it ran on the caller's thread).
struct Rewriting<'s> {
    seg: Arc<Segment>,
    tmp: std::path::PathBuf,
    run: Run<'s>,
}

/// What a [`Rewriting`] gives once done.
type Copied = Result<(u64, u64, Compacted)>;

enum Run<'s> {
    Thread(std::thread::ScopedJoinHandle<'s, Copied>),
    Done(std::thread::Result<Copied>),
}

impl Run<'_> {
    /// The copy's result, once it is done, or its panic.
    fn wait(self) -> std::thread::Result<Copied> {
        match self {
            Run::Thread(h) => h.join(),
            Run::Done(r) => r,
        }
    }
}

impl Rewriting<'_> {
    /// Waits for the copy and removes its file, whatever it gave (a panic too: the caller
    /// already has an error or a panic to report).
    fn abandon(self, disk: &crate::disk::Disk) {
        let _ = self.run.wait();
        let _ = disk.remove(&self.tmp);
    }
}

/// Drops `plan` on a thread of its own (or here, with the closure holding it, if no thread can
/// be started).
fn release(plan: Planner) {
    let _ = std::thread::Builder::new()
        .name("eventjournal-release".into())
        .spawn(move || drop(plan));
}

/// Bytes of remaining records gathered before they are written: few large writes rather than
/// one per run of records (a run is a single record where every other one is removed).
const OUTPUT_BUFFER: usize = 1 << 20;

/// Bytes whose writeback may be under way at once while no durable append waits on the disk:
/// enough that the disk always has the next write queued while the one before completes (with
/// one write in flight, a third of a rewrite's time went to waiting on it).
const IN_FLIGHT: u64 = 3 << 20;

/// Bytes written back at a time while durable appends run, one piece in flight: what an
/// append's sync may find queued ahead of it, and its flush must also carry. A mebibyte added
/// a millisecond to syncs that take a tenth of that on a quiet disk. Smaller pieces trade the
/// compaction's pace under a stream of durable appends for their latency: the append p99
/// during a compaction over without it was 2.44 to 2.82 with 128 KiB, 1.51 to 2.14 with
/// 64 KiB, 1.45 to 1.82 with 32 KiB and 1.36 to 1.84 with 16 KiB, while a compaction under
/// that stream of appends took 0.27, 0.47, 0.80 and 1.5 s for 75 MB (README, "Compaction
/// performance").
const YIELD_PIECE: u64 = 32 << 10;

/// The longest a piece of writeback waits for a durable append's sync to finish, so that a
/// stream of appends slows a compaction down but never stops it.
const YIELD_MAX: std::time::Duration = std::time::Duration::from_millis(10);

/// The remaining records of a segment being rewritten, gathered into [`OUTPUT_BUFFER`]-sized
/// writes placed back to back from the end of the header. The writeback of each write starts
/// at once, so that the disk works while the next one is gathered and the final sync has
/// little left to do, and is paced so that the store's own syncs do not queue behind it: with
/// no durable append about, up to [`IN_FLIGHT`] bytes are on their way; once one is (a sync
/// started since the last piece, or under way), pieces of [`YIELD_PIECE`] go one at a time,
/// each after the sync under way, if any, has finished.
///
/// The writes themselves defer to durable appends the same way: while an append's sync is under
/// way, what is gathered is written in pieces of at most [`YIELD_PIECE`], each after that sync
/// has finished. A write copies into the page cache inside one system call, which a kernel
/// without preemption does not interrupt: a mebibyte of it, begun while the append synced, kept
/// the appender from its core once the sync was done; and copies into the page cache made while
/// an append syncs slow that sync down (written during every sync on purpose, in an experiment:
/// p99 eleven times as long). Measured with `cargo bench --bench compaction` (durable append
/// p99 during a compaction over without): 1.49 to 1.97 in twelve runs of a first version of
/// this, against 2.40 to 3.46 in ten of the build before, and 2.44 to 2.94 in three where 1 MiB
/// writes only waited for the sync (README, "Compaction performance", for the version here;
/// pieces whenever appends run, not only while a sync is under way, were tried and not kept).
struct Output<'a> {
    disk: &'a crate::disk::Disk,
    file: &'a std::fs::File,
    path: &'a std::path::Path,
    buf: Vec<u8>,
    /// Where `buf` goes in the file.
    at: u64,
    /// Ranges whose writeback was started and not yet waited for, oldest first.
    in_flight: std::collections::VecDeque<(u64, u64)>,
    /// The store's count of durable syncs started and finished, and its value at the last piece.
    syncs: &'a std::sync::atomic::AtomicU64,
    seen: u64,
    /// Taken for each write made while a durable append syncs, by every copy of one
    /// compaction: copies under way at once write their pieces one after the other, so that an
    /// append's sync finds no more in front of it than with one.
    gate: &'a parking_lot::Mutex<()>,
    /// Fails once the store is closing or handed over: asked before each write, so that a long
    /// run of records that stay is not copied to its end first.
    open: &'a dyn Fn() -> Result<()>,
}

impl<'a> Output<'a> {
    fn new(
        disk: &'a crate::disk::Disk,
        file: &'a std::fs::File,
        path: &'a std::path::Path,
        syncs: &'a std::sync::atomic::AtomicU64,
        gate: &'a parking_lot::Mutex<()>,
        open: &'a dyn Fn() -> Result<()>,
    ) -> Output<'a> {
        Output {
            disk,
            file,
            path,
            buf: Vec::with_capacity(OUTPUT_BUFFER),
            at: SEGMENT_HEADER_LEN as u64,
            in_flight: std::collections::VecDeque::new(),
            syncs,
            seen: syncs.load(std::sync::atomic::Ordering::Acquire),
            gate,
            open,
        }
    }

    fn push(&mut self, mut run: &[u8]) -> Result<()> {
        while !run.is_empty() {
            let limit = if self.appending_now() {
                YIELD_PIECE as usize
            } else {
                OUTPUT_BUFFER
            };
            if self.buf.len() < limit {
                let n = run.len().min(limit - self.buf.len());
                self.buf.extend_from_slice(&run[..n]);
                run = &run[n..];
            }
            if self.buf.len() >= limit {
                self.write()?;
            }
        }
        Ok(())
    }

    /// Whether a durable append's sync is under way now: then what is gathered goes out in
    /// pieces of [`YIELD_PIECE`], each once that sync has finished (see [`Output`]).
    fn appending_now(&self) -> bool {
        !self
            .syncs
            .load(std::sync::atomic::Ordering::Acquire)
            .is_multiple_of(2)
    }

    fn write(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        (self.open)()?;
        let (gate, appending) = (self.gate, self.appending_now());
        let _turn = appending.then(|| gate.lock());
        if appending {
            // `seen` is left as it was: that sync still counts for the writeback's pacing.
            yield_to_sync(self.syncs);
        }
        self.disk
            .write_all_at(self.file, self.path, &self.buf, self.at)?;
        let end = self.at + self.buf.len() as u64;
        self.write_back(self.at, end);
        self.at = end;
        self.buf.clear();
        Ok(())
    }

    /// Starts the writeback of `from..end` of the file, paced.
    fn write_back(&mut self, mut from: u64, end: u64) {
        while from < end {
            let appending = self.appending();
            let len = if appending {
                YIELD_PIECE.min(end - from)
            } else {
                end - from
            };
            let limit = if appending {
                0
            } else {
                IN_FLIGHT - len.min(IN_FLIGHT)
            };
            self.wait_in_flight(limit);
            if appending {
                self.seen = yield_to_sync(self.syncs);
            }
            self.disk.start_write_back(self.file, from, len);
            self.in_flight.push_back((from, len));
            from += len;
        }
    }

    /// Writes `bytes` at `at` (outside the records: the table, the header), its writeback
    /// paced like theirs.
    fn write_at(&mut self, bytes: &[u8], at: u64) -> Result<()> {
        let gate = self.gate;
        let _turn = self.appending_now().then(|| gate.lock());
        self.disk.write_all_at(self.file, self.path, bytes, at)?;
        self.write_back(at, at + bytes.len() as u64);
        Ok(())
    }

    /// Before the file's sync: with durable appends about, what is left on its way is waited
    /// for a piece at a time, and the sync starts once theirs has finished, so that it finds
    /// little to write in front of theirs.
    fn settle(&mut self) {
        if self.appending() {
            self.wait_in_flight(0);
            self.seen = yield_to_sync(self.syncs);
        }
    }

    /// Whether a durable append has synced since the last piece, or is syncing.
    fn appending(&mut self) -> bool {
        let now = self.syncs.load(std::sync::atomic::Ordering::Acquire);
        let active = now != self.seen || !now.is_multiple_of(2);
        self.seen = now;
        active
    }

    /// Waits until the writeback started leaves at most `limit` bytes on their way.
    fn wait_in_flight(&mut self, limit: u64) {
        while self.in_flight.iter().map(|r| r.1).sum::<u64>() > limit {
            let Some((from, len)) = self.in_flight.pop_front() else {
                break;
            };
            self.disk.write_back(self.file, from, len);
        }
    }

    /// Writes what is gathered; returns where the records end in the file.
    fn finish(&mut self) -> Result<u64> {
        self.write()?;
        Ok(self.at)
    }
}

/// Waits, for at most [`YIELD_MAX`], until the durable append's sync under way, if any, has
/// finished (`syncs`, the store's count of them started and finished, is odd while one is);
/// returns the count. Only that sync: under a stream of appends the next one starts within
/// microseconds, and waiting for none to be under way waited out `YIELD_MAX` every time.
fn yield_to_sync(syncs: &std::sync::atomic::AtomicU64) -> u64 {
    let start = std::time::Instant::now();
    let first = syncs.load(std::sync::atomic::Ordering::Acquire);
    let mut now = first;
    while !now.is_multiple_of(2) && now == first && start.elapsed() < YIELD_MAX {
        std::thread::sleep(std::time::Duration::from_micros(20));
        now = syncs.load(std::sync::atomic::Ordering::Acquire);
    }
    now
}

/// Makes the calling thread `by` steps nicer (Unix niceness, at most 19) than it is.
///
/// Linux applies `setpriority` to the one thread whose id it is given. A thread may always make
/// itself nicer; a failure leaves it as it was, which only costs the appends some latency.
fn lower_priority(by: u8) {
    if by == 0 {
        return;
    }
    // SAFETY: gettid, getpriority and setpriority take and return plain integers, and errno is
    // the calling thread's own.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        // getpriority returns -1 both for niceness -1 and for a failure: errno tells them apart.
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if now == -1 && *libc::__errno_location() != 0 {
            return;
        }
        let nicer = (now + i32::from(by)).min(19);
        libc::setpriority(libc::PRIO_PROCESS, tid, nicer);
    }
}

/// Whether a segment was sealed with much of its preallocated space unused ([`Store::seal`],
/// or a batch too large for what was left): rewriting it gives that space back.
///
/// [`Store::seal`]: crate::Store::seal
fn sealed_early(seg: &Segment) -> bool {
    seg.compacted.is_none() && seg.data_end() + SEALED_EARLY_SLACK < allocated(seg)
}

/// Unused space past a sealed segment's records that compaction gives back, when there is more.
const SEALED_EARLY_SLACK: u64 = 1 << 20;

/// Bytes of disk a segment's file takes (its allocated blocks).
fn allocated(seg: &Segment) -> u64 {
    use std::os::unix::fs::MetadataExt;
    seg.file.metadata().map_or(0, |m| m.blocks() * 512)
}

impl crate::Store {
    /// Rewrites the sealed segments that hold events no reader sees any more — of deleted and
    /// tombstoned streams, below a stream's `truncate_before`, beyond its `max_count`, older than
    /// its `max_age_secs` — without them, giving their disk space back. Every other event keeps
    /// its position, so `$all` positions, checkpoints and subscriptions taken before go on
    /// working; event numbers and category and event-type entry numbers do not change either.
    ///
    /// Appends, reads, subscriptions and backups go on while it runs; one compaction runs at a
    /// time. The segment being written is not compacted. Each rewritten segment is synced and
    /// renamed into place, so a crash loses nothing and a later call goes on where this one
    /// stopped, reading only segments with something left to remove. Each segment is written
    /// again by a thread of the store at a lower CPU priority than the caller's
    /// ([`Options::compaction_niceness`](crate::Options::compaction_niceness)), which the
    /// call waits for.
    ///
    /// Fails with [`Error::ReadOnly`] on a store opened read-only.
    ///
    /// ```
    /// # use eventjournal::{EventData, ExpectedVersion, Options, Store};
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path(), Options::default().segment_size(4096))?;
    /// for i in 0..100 {
    ///     store.append("temp-1", ExpectedVersion::Any, [EventData::new("Read", format!("{i}"))])?;
    /// }
    /// store.delete_stream("temp-1", ExpectedVersion::Any)?;
    /// let report = store.compact()?;
    /// assert!(report.events_removed > 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compact(&self) -> Result<CompactionReport> {
        self.check_open()?;
        self.shared.compact()
    }

    /// Seals the segment being written, if it holds any event: later appends go to a new
    /// segment, and the next [`compact`](Self::compact) can rewrite this one. Returns whether
    /// it sealed one.
    ///
    /// Compaction never rewrites the segment being written, so events deleted there stay on
    /// disk until it fills (64 MiB by default). To erase them now — an erasure request, say —
    /// delete, seal, then compact: afterwards no byte of the deleted events' data or metadata
    /// is left in any file of the store's directory (their stream name, event type and number
    /// stay, in the compacted segment's table). A segment sealed early is rewritten by the next
    /// compaction even with nothing to remove, so that the rest of its preallocated space is
    /// given back too.
    ///
    /// ```
    /// # use eventjournal::{EventData, ExpectedVersion, Options, Store};
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path(), Options::default())?;
    /// store.append("person-7", ExpectedVersion::NoStream, [EventData::new("Registered", "{}")])?;
    /// store.delete_stream("person-7", ExpectedVersion::Any)?;
    /// assert!(store.seal()?);
    /// assert_eq!(store.compact()?.events_removed, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn seal(&self) -> Result<bool> {
        self.check_open()?;
        self.shared.seal_active()
    }
}

#[cfg(test)]
mod tests {
    use super::lower_priority;

    fn niceness() -> i32 {
        // SAFETY: as in `lower_priority`.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::getpriority(libc::PRIO_PROCESS, tid)
        }
    }

    #[test]
    fn offsets_sort_as_a_comparison_sort_sorts_them() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for (len, bits) in [
            (0, 8),
            (5, 30),
            (1023, 20),
            (1024, 24),
            (30_000, 24),
            (5000, 32),
        ] {
            let mut v: Vec<u32> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> (64 - bits)) as u32 & !7
                })
                .collect();
            // Runs of a stream's offsets, already in order, as the planner gathers them.
            v[..len / 2].sort_unstable();
            let mut expected = v.clone();
            expected.sort_unstable();
            super::sort_offsets(&mut v);
            assert_eq!(v, expected, "{len} offsets of {bits} bits");
        }
    }

    /// Records the length of every write to one file.
    struct WriteSizes(parking_lot::Mutex<Vec<usize>>);

    impl crate::fault::FaultInjector for WriteSizes {
        fn before(&self, op: &crate::fault::FileOp<'_>) -> Option<crate::fault::Fault> {
            if let crate::fault::FileOp::Write { bytes, .. } = op {
                self.0.lock().push(bytes.len());
            }
            None
        }
    }

    /// Writes `total` bytes through an [`Output`](super::Output) in runs of 272 bytes, with the
    /// store's sync count at `syncs`; checks the file holds them, and returns the lengths of the
    /// writes.
    fn written_through_output(total: usize, syncs: u64) -> Vec<usize> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        let sizes = std::sync::Arc::new(WriteSizes(Default::default()));
        let disk = crate::disk::Disk::with_injector(sizes.clone());
        let file = disk.create(&path).unwrap();
        let count = std::sync::atomic::AtomicU64::new(syncs);
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let gate = parking_lot::Mutex::new(());
        let open = || Ok(());
        let mut out = super::Output::new(&disk, &file, &path, &count, &gate, &open);
        for run in data.chunks(272) {
            out.push(run).unwrap();
        }
        let end = out.finish().unwrap();
        assert_eq!(end, (super::SEGMENT_HEADER_LEN + total) as u64);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            &bytes[super::SEGMENT_HEADER_LEN..],
            &data[..],
            "the runs, in order"
        );
        let sizes = sizes.0.lock().clone();
        sizes
    }

    #[test]
    fn while_an_append_syncs_the_records_go_out_in_small_pieces_and_else_in_large_writes() {
        // An odd count: a durable append's sync is under way throughout (each piece waits for
        // it up to YIELD_MAX, then goes).
        let sizes = written_through_output(300 << 10, 1);
        assert!(
            sizes.len() >= (300 << 10) / super::YIELD_PIECE as usize,
            "{sizes:?}"
        );
        assert!(
            sizes.iter().all(|&n| n as u64 <= super::YIELD_PIECE),
            "no write larger than a piece while a sync is under way: {sizes:?}"
        );
        // No append about: whole buffers.
        let sizes = written_through_output(3 << 20, 0);
        assert_eq!(
            sizes.iter().filter(|&&n| n == super::OUTPUT_BUFFER).count(),
            3,
            "{sizes:?}"
        );
    }

    #[test]
    fn a_compacted_segment_keeps_the_table_it_was_written_with_as_its_file_decodes() {
        use crate::{EventData, ExpectedVersion, Options, Store};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Options::default().segment_size(16 << 10)).unwrap();
        for i in 0..600u32 {
            let stream = format!("s-{}", i % 7);
            let event = EventData::new(["A", "B", "C"][i as usize % 3], vec![i as u8; 40]);
            store
                .append(&stream, ExpectedVersion::Any, [event])
                .unwrap();
        }
        // The second round compacts segments compacted in the first: their tables carry the
        // first round's removed records.
        for gone in [["s-2", "s-5"], ["s-3", "s-6"]] {
            for stream in gone {
                store.delete_stream(stream, ExpectedVersion::Any).unwrap();
            }
            store.seal().unwrap();
            let report = store.compact().unwrap();
            assert!(report.segments_rewritten >= 2, "{report:?}");
            let mut compared = 0;
            for seg in store.shared.log.segments() {
                let Some(kept) = &seg.compacted else { continue };
                let disk = &store.shared.options.disk;
                let fresh = crate::log::segment::Segment::open(&seg.path, seg.base, false, disk)
                    .expect("reopen the compacted file");
                assert_eq!(
                    fresh.compacted.as_deref(),
                    Some(&**kept),
                    "{}",
                    seg.path.display()
                );
                compared += 1;
            }
            assert!(compared >= report.segments_rewritten);
        }
    }

    #[test]
    fn a_removed_record_whose_names_no_table_can_hold_fails_the_compaction_and_loses_nothing() {
        use crate::log::format::{u16_at, u32_at, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
        use crate::{Error, EventData, ExpectedVersion, Options, Store};
        let dir = tempfile::tempdir().expect("tempdir");
        let options = || Options::default().segment_size(16 << 10);
        let store = Store::open(dir.path(), options()).unwrap();
        store
            .append(
                "victim",
                ExpectedVersion::Any,
                [EventData::new("T", [1; 40])],
            )
            .unwrap();
        for i in 0..600u32 {
            let event = EventData::new("A", vec![i as u8; 40]);
            store
                .append(&format!("s-{}", i % 5), ExpectedVersion::Any, [event])
                .unwrap();
        }
        store.close().unwrap();
        // The first record's event type made empty (its byte counted as data), with a checksum
        // that matches: a record the store never writes.
        let path = dir.path().join(crate::log::segment::segment_file_name(0));
        let mut b = std::fs::read(&path).unwrap();
        let at = SEGMENT_HEADER_LEN;
        let len = u32_at(&b, at) as usize;
        let stream_len = u16_at(&b, at + 10) as usize;
        let name = at + RECORD_HEADER_LEN;
        assert_eq!(&b[name..name + stream_len], b"victim");
        assert_eq!(u16_at(&b, at + 12), 1);
        b[at + 12..at + 14].copy_from_slice(&0u16.to_le_bytes());
        let data_len = u32_at(&b, at + 48) + 1;
        b[at + 48..at + 52].copy_from_slice(&data_len.to_le_bytes());
        let crc = crate::log::checksum::record_crc(&b[at + 8..at + len]);
        b[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &b).unwrap();

        let read = |store: &Store| -> Vec<Vec<u8>> {
            (0..5)
                .flat_map(|k| store.read_stream_forward(&format!("s-{k}"), 0, usize::MAX))
                .flatten()
                .map(|e| e.unwrap().data().to_vec())
                .collect()
        };
        let store = Store::open(dir.path(), options()).unwrap();
        let before = read(&store);
        assert_eq!(before.len(), 600);
        store.delete_stream("victim", ExpectedVersion::Any).unwrap();
        store.seal().unwrap();
        match store.compact() {
            Err(Error::Corrupt { reason, .. }) => {
                assert!(reason.contains("event type"), "{reason}")
            }
            other => panic!("compaction of a damaged record: {other:?}"),
        }
        assert_eq!(read(&store), before);
        store.close().unwrap();
        let store = Store::open(dir.path(), options()).expect("reopen");
        assert_eq!(read(&store), before);
    }

    #[test]
    fn a_thread_made_nicer_is_nicer_by_that_much_and_never_past_19() {
        std::thread::spawn(|| {
            let start = niceness();
            lower_priority(0);
            assert_eq!(niceness(), start);
            lower_priority(3);
            assert_eq!(niceness(), (start + 3).min(19));
            lower_priority(30);
            assert_eq!(niceness(), 19);
            lower_priority(1);
            assert_eq!(niceness(), 19);
        })
        .join()
        .expect("thread");
        // Only the thread that asked is nicer.
        let here = niceness();
        std::thread::spawn(move || lower_priority(5))
            .join()
            .expect("thread");
        assert_eq!(niceness(), here);
    }
}
