//! The write path: input checks, group commit, expected-version and idempotency rules.
//!
//! Appenders queue their batches; whichever finds no leader becomes the leader, takes every
//! queued batch, checks each against the index (and the batches before it in the group), writes
//! them with one positioned write and one fsync, updates the index, publishes the new end of the
//! log, and hands every appender its own result.

use std::collections::HashMap;
use std::thread::{Thread, ThreadId};

use parking_lot::MutexGuard;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::ids::{id_hash, ActiveIds, IdTables, Table};
use crate::index::{is_key_name, Index, Key, KeyCache, StreamId};
use crate::lifecycle::{StreamMetadata, METADATA_EVENT_TYPE, METADATA_STREAM_PREFIX};
use crate::log::format::{encode_record, record_len, RecordFields, FLAG_BATCH_END};
use crate::log::reader::LogView;
use crate::log::segment::Segment;
use crate::log::writer::LogWriter;
use crate::options::{Durability, MAX_SEGMENT_SIZE};
use crate::store::Shared;
use crate::types::{AppendResult, EventData, EventId, ExpectedVersion, Position, StreamWrite};

/// Longest stream name, in bytes.
pub const MAX_STREAM_NAME_LEN: usize = 1024;
/// Longest name of a metadata stream (`$$<stream>`): longer than any stream name by its prefix,
/// so that a stream of the longest name can have metadata, and so be deleted.
pub(crate) const MAX_METADATA_STREAM_NAME_LEN: usize =
    MAX_STREAM_NAME_LEN + METADATA_STREAM_PREFIX.len();
/// Longest event type, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 1024;

/// Who waits for a queued batch: a thread, parked until its result is in (or the queue needs it
/// as the next leader), or an async task, woken through the waker kept in [`Queue::wakers`].
pub(crate) enum Waiter {
    Thread(Thread),
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    Task,
}

/// The group-commit queue.
#[derive(Default)]
pub(crate) struct Queue {
    next_ticket: u64,
    pending: Vec<(u64, Vec<StreamWrite>)>,
    /// Who queued each pending batch.
    pending_waiters: Vec<Waiter>,
    done: HashMap<u64, Result<Vec<AppendResult>>>,
    leader: bool,
    /// Set by `close`: no batch is queued any more.
    pub(crate) closed: bool,
    /// Set while a handover is decided: batches wait to be queued (on `Shared::resumed`), then
    /// go on here or fail with `Error::HandedOver`, rather than fail before it is decided.
    pub(crate) paused: bool,
    /// Async appends waiting while `paused`.
    #[cfg(feature = "async")]
    pub(crate) paused_wakers: Vec<std::task::Waker>,
    /// The threads of the last two groups, for [`Shared::gather`].
    recent: [Vec<ThreadId>; 2],
    /// When leaders gather (see [`Shared::gather`]).
    gathering: GatherPace,
    /// The wakers of async appends not answered yet, by ticket.
    #[cfg(feature = "async")]
    wakers: HashMap<u64, std::task::Waker>,
    /// Tickets of async appends dropped while their group was being committed: their results
    /// are thrown away.
    #[cfg(feature = "async")]
    abandoned: std::collections::HashSet<u64>,
    /// The store's committer thread, which leads groups for async appenders.
    #[cfg(feature = "async")]
    pub(crate) committer: Option<Thread>,
    /// Tells the committer thread to end.
    #[cfg(feature = "async")]
    pub(crate) stop_committer: bool,
}

impl Queue {
    /// Whether the queue is idle: nothing queued and no group being committed.
    pub(crate) fn is_drained(&self) -> bool {
        self.pending.is_empty() && !self.leader
    }

    /// Queues a batch; returns its ticket.
    fn enqueue(&mut self, writes: Vec<StreamWrite>, waiter: Waiter) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.pending.push((ticket, writes));
        self.pending_waiters.push(waiter);
        ticket
    }

    /// Hands a batch its result; collects the waker of an async appender into `wake`.
    fn deliver(
        &mut self,
        ticket: u64,
        result: Result<Vec<AppendResult>>,
        wake: &mut Vec<std::task::Waker>,
    ) {
        #[cfg(feature = "async")]
        {
            if !self.abandoned.is_empty() && self.abandoned.remove(&ticket) {
                return;
            }
            if !self.wakers.is_empty() {
                if let Some(w) = self.wakers.remove(&ticket) {
                    wake.push(w);
                }
            }
        }
        #[cfg(not(feature = "async"))]
        let _ = wake;
        self.done.insert(ticket, result);
    }

    /// Who must be woken to lead the next group: the first queued thread, or for an async
    /// appender the committer thread.
    fn next_leader(&self) -> Option<Thread> {
        match self.pending_waiters.first()? {
            Waiter::Thread(t) => Some(t.clone()),
            #[cfg(feature = "async")]
            Waiter::Task => self.committer.clone(),
            #[cfg(not(feature = "async"))]
            Waiter::Task => None,
        }
    }
}

/// Longest a durable group waits for appenders to join it: a fraction of what a sync costs,
/// so that waiting can never cost more than the syncs it saves.
const MAX_GATHER: Duration = Duration::from_micros(200);

/// Most groups led without gathering after gathers that ran out of time, before one gathers
/// again to see whether waiting pays once more.
const MAX_GATHER_SKIPS: u32 = 64;

/// Times an appender waiting on a group without a sync yields before it sleeps.
const SPIN_YIELDS: u32 = 64;

/// How long an appender waiting on a durable group yields before it sleeps, in syncs (the last
/// one's time): long enough to outlast the sync under way and the next group's, so that the
/// leader rarely has to wake it.
const SPIN_SYNCS: u32 = 3;

/// Bounds of that wait.
const SPIN_MIN: Duration = Duration::from_micros(20);
const SPIN_MAX: Duration = Duration::from_millis(1);

/// Whether leaders gather. A gather that runs out of time shows that the appenders take longer
/// to come back than a sync: while a group syncs they queue for the next one, and waiting for
/// them only idles the disk. So gathering stops for a while, for twice as long after each gather
/// that runs out of time (up to [`MAX_GATHER_SKIPS`] groups), and is tried again then.
#[derive(Default, Debug, PartialEq)]
struct GatherPace {
    /// Groups still to lead without gathering.
    skip: u32,
    /// How many were skipped after the last gather.
    backoff: u32,
}

impl GatherPace {
    /// Whether the next group gathers (counts it off if not).
    fn next_gathers(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// Notes how a gather ended.
    fn gathered(&mut self, ran_out: bool) {
        if ran_out {
            self.backoff = (self.backoff * 2).clamp(1, MAX_GATHER_SKIPS);
            self.skip = self.backoff;
        } else {
            self.backoff = 0;
        }
    }
}

/// What only the leader touches.
pub(crate) struct WriterState {
    pub(crate) log: LogWriter,
    buf: Vec<u8>,
    last_sync: Instant,
    /// The active segment's event ids (see [`crate::ids`]).
    ids: ActiveIds,
    /// The data end the active segment had when the store opened: what `ids` lacks until it is
    /// complete.
    open_end: u64,
    keys: KeyCache,
    /// The group's new events in position order (position, segment base, stream slot, event
    /// type), for the category and event type index entries; kept to reuse its allocation.
    secondary: Vec<(u64, u64, u32, TypeKey)>,
    /// The group's stream ids by slot; kept to reuse its allocation.
    stream_ids: Vec<StreamId>,
    /// The active segment's base and the data end its index file covers, as last saved (see
    /// [`Shared::checkpoint_active`]); `None` until known for the active segment.
    checkpointed: Option<(u64, u64)>,
}

/// The active segment's index file is saved again each time this fraction of the segment's
/// capacity has been appended and synced since it was last saved: opening after a crash then
/// scans at most that much of the log (8 MiB of a 64 MiB segment) past the file, whatever the
/// segment's fill.
const CHECKPOINT_FRACTION: u64 = 8;

impl WriterState {
    pub(crate) fn new(log: LogWriter) -> WriterState {
        let open_end = log.active().data_end();
        WriterState {
            // Nothing to load for a segment without records.
            ids: ActiveIds::new(open_end <= crate::log::format::SEGMENT_HEADER_LEN as u64),
            open_end,
            log,
            buf: Vec::new(),
            last_sync: Instant::now(),
            keys: KeyCache::default(),
            secondary: Vec::new(),
            stream_ids: Vec::new(),
            checkpointed: None,
        }
    }

    /// Notes that the active segment's index file, at `base`, covers its records up to
    /// `covered`: the next checkpoint comes a [`CHECKPOINT_FRACTION`] of the segment later.
    pub(crate) fn set_checkpointed(&mut self, base: u64, covered: u64) {
        self.checkpointed = Some((base, covered));
    }

    /// Notes a sync done outside an append (by the background flusher).
    pub(crate) fn mark_synced(&mut self) {
        self.last_sync = Instant::now();
    }
}

/// Checks a stream name given by a caller: 1 to [`MAX_STREAM_NAME_LEN`] bytes, or two more for
/// a metadata stream (`$$<stream>`). Public for other backends of the journal, so that a name
/// refused here is refused there too.
pub fn check_stream_name(stream: &str) -> Result<()> {
    if stream.is_empty() {
        return Err(Error::InvalidInput("stream name is empty".into()));
    }
    let max = if stream.starts_with(METADATA_STREAM_PREFIX) {
        MAX_METADATA_STREAM_NAME_LEN
    } else {
        MAX_STREAM_NAME_LEN
    };
    if stream.len() > max {
        return Err(Error::InvalidInput(format!(
            "stream name of {} bytes is longer than {max}",
            stream.len()
        )));
    }
    if is_key_name(stream) {
        return Err(Error::InvalidInput(
            "stream names may not start with NUL followed by `c:` or `t:` (reserved for the \
             category and event type indexes)"
                .into(),
        ));
    }
    Ok(())
}

/// The first character of every name the store keeps for itself: the stream names `$all`,
/// `$checkpoint-<consumer>` (consumer checkpoints), `$snapshot-<stream>` (journaled actors'
/// snapshots), and every other stream name or event type starting with it, kept for what the
/// store may add later. An application's appends may not use them.
pub const SYSTEM_PREFIX: char = '$';

/// Refuses a write by the application to a reserved stream name or with a reserved event type,
/// except to streams starting with one of `allowed` (what a store-owned writer, such as the
/// journal's snapshots, may write). Public for other backends of the journal, so that one rule
/// decides what an application may write on every backend.
pub fn check_not_reserved(writes: &[StreamWrite], allowed: &[&str]) -> Result<()> {
    for w in writes {
        if allowed.iter().any(|p| w.stream.starts_with(p)) {
            continue;
        }
        if w.stream.starts_with(SYSTEM_PREFIX) {
            return Err(Error::ReservedName {
                name: w.stream.clone(),
                what: "stream name",
            });
        }
        if let Some(e) = w
            .events
            .iter()
            .find(|e| e.event_type.starts_with(SYSTEM_PREFIX))
        {
            return Err(Error::ReservedName {
                name: e.event_type.clone(),
                what: "event type",
            });
        }
    }
    Ok(())
}

/// Checks a whole multi-stream batch before it is queued; returns its encoded size.
fn check_batch(writes: &[StreamWrite], max_event_size: u64) -> Result<u64> {
    let mut total = 0u64;
    // A linear scan for small batches; a set for large ones, which would be quadratic.
    let mut seen = std::collections::HashSet::new();
    for (i, w) in writes.iter().enumerate() {
        check_stream_name(&w.stream)?;
        let twice = if writes.len() <= 16 {
            writes[..i].iter().any(|o| o.stream == w.stream)
        } else {
            !seen.insert(w.stream.as_str())
        };
        if twice {
            return Err(Error::InvalidInput(format!(
                "stream `{}` appears twice in one batch",
                w.stream
            )));
        }
        for e in &w.events {
            if e.event_type.is_empty() || e.event_type.len() > MAX_EVENT_TYPE_LEN {
                return Err(Error::InvalidInput(format!(
                    "event type must be 1 to {MAX_EVENT_TYPE_LEN} bytes, got {}",
                    e.event_type.len()
                )));
            }
            let size = (w.stream.len() + e.event_type.len()) as u64
                + e.data.len() as u64
                + e.metadata.len() as u64;
            if size > max_event_size {
                return Err(Error::EventTooLarge {
                    size,
                    max: max_event_size,
                });
            }
        }
        total += encoded_len(w);
    }
    if total > MAX_SEGMENT_SIZE {
        return Err(Error::InvalidInput(format!(
            "batch of {total} encoded bytes is larger than the largest segment"
        )));
    }
    Ok(total)
}

/// Bytes the records of `w` take in the log.
fn encoded_len(w: &StreamWrite) -> u64 {
    w.events
        .iter()
        .map(|e| {
            record_len(
                w.stream.len(),
                e.event_type.len(),
                e.data.len(),
                e.metadata.len(),
            ) as u64
        })
        .sum()
}

/// A stream's state as the group sees it: committed events plus earlier batches of the group.
struct GroupStream {
    name: String,
    id: Option<StreamId>,
    committed: u64,
    new_ids: Vec<EventId>,
    /// Position and segment base of each new event.
    new_places: Vec<(u64, u64)>,
}

/// The group's view of every stream it touches, in the order the group first wrote to them (the
/// order new streams enter the index).
#[derive(Default)]
struct Group {
    streams: Vec<GroupStream>,
    /// Slots by stream name, once the group has more than [`Group::SCAN`] streams; a scan finds
    /// them in smaller groups, the usual case, without hashing or copying names.
    by_name: HashMap<String, usize>,
    write_order: Vec<usize>,
    /// Event types of the group's new events that have no key id cached yet.
    new_types: NewTypes,
}

/// An event type's index key: its id, or (not seen before) its place in `Group::new_types`.
#[derive(Clone, Copy)]
enum TypeKey {
    Known(StreamId),
    New(u32),
}

/// The place of `event_type` in a group's `new_types`, added if missing: a scan while there are
/// few, a map once there are many (a batch may hold thousands of new types).
fn new_type(new_types: &mut NewTypes, event_type: &str) -> u32 {
    let found = if new_types.list.len() <= 8 {
        new_types
            .list
            .iter()
            .position(|t| t == event_type)
            .map(|t| t as u32)
    } else {
        if new_types.map.is_empty() {
            for (i, t) in new_types.list.iter().enumerate() {
                new_types.map.insert(t.clone(), i as u32);
            }
        }
        new_types.map.get(event_type).copied()
    };
    found.unwrap_or_else(|| {
        let t = new_types.list.len() as u32;
        new_types.list.push(event_type.to_string());
        if !new_types.map.is_empty() {
            new_types.map.insert(event_type.to_string(), t);
        }
        t
    })
}

/// Event types of a group not seen before, in first-use order.
#[derive(Default)]
struct NewTypes {
    list: Vec<String>,
    /// By name, once `list` is long.
    map: HashMap<String, u32>,
}

impl Group {
    /// Most streams a group finds by a linear scan.
    const SCAN: usize = 8;

    fn slot_of(&self, name: &str) -> Option<usize> {
        if self.streams.len() <= Self::SCAN {
            self.streams.iter().position(|g| g.name == name)
        } else {
            self.by_name.get(name).copied()
        }
    }

    fn add(&mut self, g: GroupStream) -> usize {
        let slot = self.streams.len();
        self.streams.push(g);
        if self.streams.len() > Self::SCAN {
            if self.by_name.is_empty() {
                for (i, s) in self.streams.iter().enumerate() {
                    self.by_name.insert(s.name.clone(), i);
                }
            } else {
                self.by_name.insert(self.streams[slot].name.clone(), slot);
            }
        }
        slot
    }
}

/// The outcome of the expected-version check for one stream write.
enum Plan {
    /// Append the events; the first gets this event number.
    Write(u64),
    /// An idempotent retry: write nothing, answer this. `provisional` if it matched events of this
    /// group that are not durable yet.
    Done(AppendResult, bool),
}

struct Checker<'a> {
    index: &'a Index,
    view: &'a LogView,
    tables: &'a IdTables,
    /// Base of the active segment, and its data end when the store opened.
    active_base: u64,
    open_end: u64,
}

impl Checker<'_> {
    /// The id of event `k` of the stream; `None` if compaction removed the event (its id is
    /// gone with it, so it matches no retry).
    fn id_at(&self, g: &GroupStream, k: u64) -> Result<Option<EventId>> {
        if k < g.committed {
            let pos = match g.id {
                Some(id) => self.index.position(id, k)?,
                None => None,
            }
            .ok_or_else(|| Error::InvalidInput("internal: index out of step".into()))?;
            Ok(self.view.record_at(pos)?.map(|r| r.id))
        } else {
            g.new_ids
                .get((k - g.committed) as usize)
                .copied()
                .map(Some)
                .ok_or_else(|| Error::InvalidInput("internal: group out of step".into()))
        }
    }

    fn position_at(&self, g: &GroupStream, k: u64) -> Result<Option<Position>> {
        let p = if k < g.committed {
            match g.id {
                Some(id) => self.index.position(id, k)?,
                None => None,
            }
        } else {
            g.new_places.get((k - g.committed) as usize).map(|p| p.0)
        };
        Ok(p.map(Position))
    }

    fn result_at(&self, g: &GroupStream, last: Option<u64>) -> Result<AppendResult> {
        Ok(AppendResult {
            version: last,
            position: match last {
                Some(k) => self.position_at(g, k)?,
                None => None,
            },
        })
    }

    /// Whether the stream holds `events`' ids, in order, from event number `start` on.
    fn matches_from(&self, g: &GroupStream, start: u64, events: &[EventData]) -> Result<bool> {
        let count = g.committed + g.new_ids.len() as u64;
        if start + events.len() as u64 > count {
            return Ok(false);
        }
        for (i, e) in events.iter().enumerate() {
            if self.id_at(g, start + i as u64)? != Some(e.id) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The newest event number of the stream whose id is `id`: this group's new events, then
    /// the event-id index (the active segment's map, then the sealed segments' tables, newest
    /// first), each candidate checked against its record.
    fn find_id(&self, g: &GroupStream, id: EventId, ids: &mut ActiveIds) -> Result<Option<u64>> {
        if let Some(i) = g.new_ids.iter().rposition(|x| *x == id) {
            return Ok(Some(g.committed + i as u64));
        }
        let Some(sid) = g.id else { return Ok(None) };
        if !ids.complete {
            self.complete_active(ids)?;
        }
        let hash = id_hash(&id);
        let mut candidates = Vec::new();
        ids.candidates(hash, &mut candidates);
        if let Some(k) = self.newest_match(&g.name, id, &mut candidates)? {
            return Ok(Some(k));
        }
        // Sealed segments, newest range first: a table's candidates, or for a range without a
        // usable table, the stream's own events in it.
        let sets = self.tables.snapshot();
        let mut ranges: Vec<(u64, u64, Option<&Arc<Table>>)> = sets
            .tables
            .iter()
            .map(|t| (t.base, t.end, Some(t)))
            .chain(sets.uncovered.iter().map(|s| (s.base, s.end_base(), None)))
            .collect();
        ranges.sort_by_key(|r| std::cmp::Reverse(r.0));
        for (base, end, table) in ranges {
            if let Some(t) = table.filter(|t| !t.is_broken()) {
                candidates.clear();
                // A table entry that does not read as a record of its range is the table's
                // damage, not the log's: the table is dropped (and rebuilt by the worker) and
                // the range searched without it.
                let found = t.candidates(hash, &mut candidates).and_then(|()| {
                    if candidates.iter().any(|&p| p < base || p >= end) {
                        return Err(Error::InvalidInput("id table entry out of range".into()));
                    }
                    self.newest_match(&g.name, id, &mut candidates)
                });
                match found {
                    Ok(Some(k)) => return Ok(Some(k)),
                    Ok(None) => continue,
                    Err(_) => self.tables.drop_broken(t),
                }
            }
            candidates.clear();
            self.positions_in(sid, g.committed, base, end, &mut candidates)?;
            if let Some(k) = self.newest_match(&g.name, id, &mut candidates)? {
                return Ok(Some(k));
            }
        }
        Ok(None)
    }

    /// The positions of stream `sid`'s first `count` events that lie in `base..end`, found by
    /// binary search over its event numbers (positions grow with them).
    fn positions_in(
        &self,
        sid: StreamId,
        count: u64,
        base: u64,
        end: u64,
        out: &mut Vec<u64>,
    ) -> Result<()> {
        let first_at_or_after = |bound: u64| -> Result<u64> {
            let (mut lo, mut hi) = (0u64, count);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                match self.index.position(sid, mid)? {
                    Some(p) if p < bound => lo = mid + 1,
                    _ => hi = mid,
                }
            }
            Ok(lo)
        };
        let (from, to) = (first_at_or_after(base)?, first_at_or_after(end)?);
        if from < to {
            self.index.copy_positions(sid, from, to, true, out)?;
        }
        Ok(())
    }

    /// The event number of the newest of `candidates` (positions) holding an event of `stream`
    /// with id `id`. A record that does not read (damage) fails the append rather than risk
    /// writing a retry twice.
    fn newest_match(
        &self,
        stream: &str,
        id: EventId,
        candidates: &mut [u64],
    ) -> Result<Option<u64>> {
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        for &pos in candidates.iter() {
            // A removed event's id matches nothing: its table entry outlived it.
            let Some(e) = self.view.event_at(pos)? else {
                continue;
            };
            if e.id() == id && e.stream() == stream {
                return Ok(Some(e.event_number()));
            }
        }
        Ok(None)
    }

    /// Loads into `ids` the events the active segment held when the store opened.
    fn complete_active(&self, ids: &mut ActiveIds) -> Result<()> {
        let Some(seg) = self.view.segments_in(self.active_base, u64::MAX).pop() else {
            return Ok(());
        };
        ids.load(&seg, self.open_end)
    }

    /// `floor`: the stream's `truncate_before` (0: none), below which its events do not count
    /// for `NoStream`.
    fn check(
        &self,
        w: &StreamWrite,
        g: &GroupStream,
        floor: u64,
        ids: &mut ActiveIds,
    ) -> Result<Plan> {
        let count = g.committed + g.new_ids.len() as u64;
        let actual = count.checked_sub(1);
        let wrong = || Error::WrongExpectedVersion {
            stream: w.stream.clone(),
            expected: w.expected,
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
                // Provisional when the version it confirms comes from this group's own writes.
                let pending = actual.is_some_and(|a| a >= g.committed);
                Ok(Plan::Done(self.result_at(g, actual)?, pending))
            } else {
                Err(wrong())
            };
        }
        let retry_from = |start: u64| -> Result<Plan> {
            if self.matches_from(g, start, &w.events)? {
                let last = start + len - 1;
                Ok(Plan::Done(
                    self.result_at(g, Some(last))?,
                    last >= g.committed,
                ))
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
                // A retry under `Any` is recognised by its first id, taking the newest event
                // with that id.
                match self.find_id(g, w.events[0].id, ids)? {
                    Some(k) => retry_from(k),
                    None => Ok(Plan::Write(count)),
                }
            }
        }
    }
}

/// A request as the leader processes it.
struct Outcome {
    ticket: u64,
    result: Result<Vec<AppendResult>>,
    /// Whether `result` depends on this group's write reaching disk.
    provisional: bool,
}

/// Hands the group's appenders an error, and the queue a new leader, should the leader's work
/// ever unwind: without it every appender would wait forever. The writer is poisoned, since its
/// state is unknown.
struct LeaderGuard<'a> {
    shared: &'a Shared,
    tickets: Vec<u64>,
    waiters: Vec<Waiter>,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if self.tickets.is_empty() {
            return;
        }
        let reason = "an internal error interrupted a group commit";
        self.shared.writer.lock().log.poison_with(reason);
        let mut q = self.shared.queue.lock();
        q.leader = false;
        let mut wakers = Vec::new();
        for t in self.tickets.drain(..) {
            q.deliver(t, Err(Error::Poisoned(reason.into())), &mut wakers);
        }
        self.shared.hand_over(q, &self.waiters, wakers);
    }
}

impl Shared {
    /// Appends a multi-stream batch through the group commit.
    pub(crate) fn submit(&self, writes: Vec<StreamWrite>) -> Result<Vec<AppendResult>> {
        let _span = tracing::debug_span!("append", streams = writes.len()).entered();
        self.check_writable()?;
        check_batch(&writes, self.options.max_event_size)?;
        let mut q = self.queue.lock();
        while q.paused {
            self.resumed.wait(&mut q);
        }
        if q.closed {
            return Err(self.check_open().err().unwrap_or(Error::Closed));
        }
        let ticket = q.enqueue(writes, Waiter::Thread(std::thread::current()));
        // A group without a sync takes a microsecond or two, less than putting a thread to sleep
        // and waking it. With a sync, an appender yields for a few syncs' time, watching the
        // count of groups done rather than the queue (whose lock the leader needs to hand out
        // results): woken from sleep it would reach the CPU later, and queue again later, on a
        // machine with few cores. Measured: 16 threads, one-event synced appends, +20%.
        let mut yields = SPIN_YIELDS;
        let spin_until = (self.options.durability == Durability::Sync).then(|| {
            let sync = self.writer_sync_cost().unwrap_or(SPIN_MIN);
            Instant::now() + (sync * SPIN_SYNCS).clamp(SPIN_MIN, SPIN_MAX)
        });
        loop {
            if let Some(r) = q.done.remove(&ticket) {
                return r;
            }
            if !q.leader {
                return self.lead(q, Some(ticket)).unwrap_or_else(|| {
                    Err(Error::Poisoned("internal: append result lost".into()))
                });
            }
            match spin_until {
                Some(until) if Instant::now() < until => {
                    let seen = self.groups_done.load(Ordering::Acquire);
                    MutexGuard::unlocked(&mut q, || {
                        while self.groups_done.load(Ordering::Acquire) == seen
                            && Instant::now() < until
                        {
                            std::thread::yield_now();
                        }
                    });
                    continue;
                }
                None if yields > 0 => {
                    yields -= 1;
                    MutexGuard::unlocked(&mut q, std::thread::yield_now);
                    continue;
                }
                _ => {}
            }
            // Woken by the leader when this batch is done or the queue needs a leader; a wake-up
            // for anything else only goes round the loop again.
            MutexGuard::unlocked(&mut q, std::thread::park);
        }
    }

    /// Leads one group: takes every queued batch, commits them, hands each its result and the
    /// queue its next leader. The caller found no leader; `mine` is the caller's own ticket,
    /// whose result is returned rather than handed over.
    pub(crate) fn lead(
        &self,
        mut q: MutexGuard<'_, Queue>,
        mine: Option<u64>,
    ) -> Option<Result<Vec<AppendResult>>> {
        q.leader = true;
        self.gather(&mut q);
        let group = std::mem::take(&mut q.pending);
        let waiters = std::mem::take(&mut q.pending_waiters);
        q.recent.swap(0, 1);
        q.recent[1] = waiters
            .iter()
            .filter_map(|w| match w {
                Waiter::Thread(t) => Some(t.id()),
                Waiter::Task => None,
            })
            .collect();
        drop(q);

        let mut guard = LeaderGuard {
            shared: self,
            tickets: group.iter().map(|(t, _)| *t).collect(),
            waiters,
        };
        let published = self.log.visible();
        let outcomes = self.commit_group(group);
        guard.tickets.clear();
        let waiters = std::mem::take(&mut guard.waiters);
        drop(guard);

        let mut q = self.queue.lock();
        q.leader = false;
        let mut wakers = Vec::new();
        let mut mine_result = None;
        for o in outcomes {
            if Some(o.ticket) == mine {
                mine_result = Some(o.result);
            } else {
                q.deliver(o.ticket, o.result, &mut wakers);
            }
        }
        self.hand_over(q, &waiters, wakers);
        // Subscribers are woken after the writer lock is released (and the group's appenders are
        // woken), so that waking them never holds up the next group.
        if self.log.visible() != published {
            self.commits.notify();
        }
        mine_result
    }

    /// After a group: wakes the next leader (the first queued thread, or the committer thread
    /// for an async appender), then the appenders whose results are in (`group`, and the tasks'
    /// `wakers`), after releasing the queue. Each appender sleeps on its own: waking only these
    /// keeps a busy store from waking every waiting thread after every group, and waking them
    /// outside the lock lets them queue again at once.
    pub(crate) fn hand_over(
        &self,
        q: MutexGuard<'_, Queue>,
        group: &[Waiter],
        wakers: Vec<std::task::Waker>,
    ) {
        let next = q.next_leader();
        let closing = q.closed || q.paused;
        self.groups_done.fetch_add(1, Ordering::Release);
        drop(q);
        if closing {
            self.drained.notify_all();
        }
        let me = std::thread::current().id();
        let threads = group.iter().filter_map(|w| match w {
            Waiter::Thread(t) => Some(t),
            Waiter::Task => None,
        });
        for t in next.iter().chain(threads) {
            if t.id() != me {
                t.unpark();
            }
        }
        for w in wakers {
            w.wake();
        }
    }

    /// Lets a new leader of a durable group wait, briefly, for the appenders of the last two
    /// groups that have not queued again yet.
    ///
    /// Without it, appenders that keep a store busy settle into two half-size groups taking
    /// turns: the appenders of one group are still returning when the next leader takes the
    /// queue. Waiting for them (a small part of one sync, and only while more threads have been
    /// appending than are queued) lets one sync carry them all. A single appender never waits.
    ///
    /// That pays only while they come back within the wait. When there are more of them than
    /// the cores can bring back in a sync's time, two groups taking turns keep the disk busy:
    /// each queues while the other syncs. Measured with 64 one-event appenders on 2 cores while
    /// the waiting leader slept (below): 21× one writer's rate against 16× when every group
    /// waited.
    ///
    /// The leader yields while it waits, rather than sleeping until an appender that queues
    /// wakes it: the wake-up, on a machine with few cores, came later than the appender did.
    /// Measured: 3.3–3.5× one writer's rate at 4 writers against 2.8–2.9×, 10.3–10.9× against
    /// 9.3–9.6× at 16.
    fn gather(&self, q: &mut MutexGuard<'_, Queue>) {
        if self.options.durability != Durability::Sync {
            return;
        }
        let mut expected: Vec<ThreadId> = Vec::new();
        for t in q.recent.iter().flatten() {
            if !expected.contains(t) {
                expected.push(*t);
            }
        }
        if expected.len() <= 1 {
            return;
        }
        // The expected threads not queued yet. While the leader gathers, batches are only
        // added to the queue, so each check looks at those queued since the last one.
        let mut missing = expected;
        let mut seen = 0;
        let mut arrive = |q: &Queue| {
            for p in q.pending_waiters.get(seen..).unwrap_or_default() {
                if let Waiter::Thread(t) = p {
                    missing.retain(|m| *m != t.id());
                }
            }
            seen = q.pending_waiters.len();
            !missing.is_empty()
        };
        if !arrive(q) || !q.gathering.next_gathers() {
            return;
        }
        let wait = self
            .writer_sync_cost()
            .map_or(MAX_GATHER, |c| c.min(MAX_GATHER));
        let deadline = Instant::now() + wait;
        let mut wanted = true;
        while wanted && Instant::now() < deadline {
            MutexGuard::unlocked(q, std::thread::yield_now);
            wanted = arrive(q);
        }
        q.gathering.gathered(wanted);
    }

    /// What the last sync took.
    fn writer_sync_cost(&self) -> Option<Duration> {
        match self.sync_nanos.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    /// The leader's work for one group.
    fn commit_group(&self, group: Vec<(u64, Vec<StreamWrite>)>) -> Vec<Outcome> {
        let _span = tracing::debug_span!("group_commit", batches = group.len()).entered();
        let mut w = self.writer.lock();
        if let Err(e) = w.log.check() {
            let reason = e.to_string();
            return group
                .into_iter()
                .map(|(ticket, _)| Outcome {
                    ticket,
                    result: Err(Error::Poisoned(reason.clone())),
                    provisional: false,
                })
                .collect();
        }
        let (mut outcomes, written) = self.plan_and_write(&mut w, group);
        let wrote = outcomes.iter().any(|o| o.provisional);
        let durable = if !wrote {
            Ok(())
        } else {
            let ws = &mut *w;
            let mut r = ws.log.write(&ws.buf);
            if r.is_ok() {
                r = match self.options.durability {
                    Durability::Sync => {
                        let _span = tracing::debug_span!("sync").entered();
                        let start = Instant::now();
                        self.durable_syncs.fetch_add(1, Ordering::AcqRel);
                        let r = ws.log.sync();
                        self.durable_syncs.fetch_add(1, Ordering::AcqRel);
                        let took = start.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
                        self.sync_nanos.store(took, Ordering::Relaxed);
                        self.counters.sync();
                        r
                    }
                    Durability::Buffered(every) if ws.last_sync.elapsed() >= every => {
                        let _span = tracing::debug_span!("sync").entered();
                        self.counters.sync();
                        ws.log.sync()
                    }
                    _ => Ok(()),
                };
                if r.is_ok() && !ws.log.is_unsynced() {
                    ws.last_sync = Instant::now();
                }
            }
            r
        };
        let bytes = w.buf.len() as u64;
        w.buf.clear();
        if let Err(e) = durable {
            w.log.discard_unpublished();
            for o in outcomes.iter_mut().filter(|o| o.provisional) {
                o.result = Err(e.duplicate());
            }
            return outcomes;
        }
        if wrote {
            let batches = outcomes.iter().filter(|o| o.provisional).count() as u64;
            let events = written.streams.iter().map(|g| g.new_places.len() as u64);
            self.counters.group(batches, events.sum(), bytes);
            let sealed = {
                let mut index = self.index.write();
                let ws = &mut *w;
                ws.stream_ids.clear();
                ws.stream_ids.resize(written.streams.len(), 0);
                for &i in &written.write_order {
                    let g = &written.streams[i];
                    let id = index.get_or_create(&g.name);
                    ws.stream_ids[i] = id;
                    for (k, &(pos, base)) in g.new_places.iter().enumerate() {
                        // Cannot fail: the event numbers were assigned from this index.
                        let _ = index.push(id, g.committed + k as u64, pos, base);
                    }
                }
                // Category and event type entries, in position order.
                for &(pos, base, slot, t) in &ws.secondary {
                    let g = &written.streams[slot as usize];
                    // Neither lookup can fail: planning loaded every key these events use
                    // (`load_keys`). Were one to, the entry would be left out (an id past the
                    // index's end adds nothing) rather than numbered wrongly.
                    let category = ws
                        .keys
                        .category(&mut index, &g.name)
                        .unwrap_or(StreamId::MAX);
                    let event_type = match t {
                        TypeKey::Known(id) => id,
                        TypeKey::New(k) => ws
                            .keys
                            .event_type(&mut index, &written.new_types.list[k as usize])
                            .unwrap_or(StreamId::MAX),
                    };
                    index.push_secondary([category, event_type], pos, base);
                }
                // Published before the index lock is released: whoever finds an event through
                // the index can also find it in `$all`.
                w.log.publish(&self.log)
            };
            // Only the leader reads the id map: it is filled after the index lock is released,
            // so that readers never wait for it.
            for g in &written.streams {
                for (e, &(pos, _)) in g.new_ids.iter().zip(&g.new_places) {
                    w.ids.insert(id_hash(e), pos);
                }
            }
            for seg in sealed {
                let keys = self.save_segment_index(&seg, true);
                self.seal_ids(&mut w, &seg, keys);
            }
            self.checkpoint_active(&mut w);
        }
        outcomes
    }

    /// Seals the active segment now, if it holds any record: the log goes on in a new segment,
    /// and the sealed one can be compacted. The same steps as a roll between two groups
    /// (taken under the writer lock, so no group is half written).
    pub(crate) fn seal_active(&self) -> Result<bool> {
        self.check_open()?;
        self.check_writable()?;
        let mut w = self.writer.lock();
        self.check_open()?;
        w.log.check()?;
        if w.log.active().data_end() <= crate::log::format::SEGMENT_HEADER_LEN as u64
            || !w.buf.is_empty()
        {
            return Ok(false);
        }
        w.log.roll(&self.log, 0)?;
        let sealed = {
            // As after a group: published under the index lock, which readers take first.
            let _index = self.index.write();
            w.log.publish(&self.log)
        };
        for seg in sealed {
            let keys = self.save_segment_index(&seg, true);
            self.seal_ids(&mut w, &seg, keys);
        }
        self.checkpoint_active(&mut w);
        Ok(true)
    }

    /// Saves the active segment's index file once a [`CHECKPOINT_FRACTION`] of its capacity has
    /// been appended since the file was last saved (or since the store opened with it), and only
    /// when everything written is synced, so that the file never covers bytes a power loss could
    /// take. Done by the leader under the writer lock, so that no seal can race it; it costs the
    /// group's appenders the time to encode and write the segment's runs.
    fn checkpoint_active(&self, w: &mut WriterState) {
        if w.log.is_unsynced() {
            return;
        }
        // Read without cloning the segment: this runs after every group.
        let (base, capacity, end) = {
            let seg = w.log.active();
            (seg.base, seg.capacity, seg.data_end())
        };
        let covered = match w.checkpointed {
            Some((b, covered)) if b == base => covered,
            _ => {
                let files = self.index.read().files();
                let covered = files
                    .file(base)
                    .map_or(crate::log::format::SEGMENT_HEADER_LEN as u64, |f| {
                        f.covered_end
                    });
                w.checkpointed = Some((base, covered));
                covered
            }
        };
        if end < covered + capacity / CHECKPOINT_FRACTION {
            return;
        }
        // Best effort, as every index file: a failure leaves the previous file, or none.
        let seg = w.log.active().clone();
        let _ = self.save_segment_index(&seg, false);
        w.checkpointed = Some((base, end));
    }

    /// Loads into the index what appending `sw` needs and the index may not hold yet (the
    /// store's lazy part): the stream, its category key and its event types' keys.
    fn load_keys(&self, w: &mut WriterState, sw: &StreamWrite) -> Result<()> {
        if !self.lazy {
            return Ok(());
        }
        self.stream_id_to_append(&sw.stream)?;
        if w.keys.cached_category(&sw.stream).is_none() {
            let category = crate::types::category_of(&sw.stream);
            self.key_id(&Key::Category(category).name())?;
        }
        for e in &sw.events {
            if w.keys.cached_type(&e.event_type).is_none() {
                self.key_id(&Key::EventType(&e.event_type).name())?;
            }
        }
        Ok(())
    }

    /// Turns the ids of a segment just sealed, and its index keys (`keys`, from its index
    /// runs), into its id table.
    fn seal_ids(&self, w: &mut WriterState, seg: &Arc<Segment>, keys: Option<Vec<(u64, u64)>>) {
        // The segment active at open: its older events first. Should its records not read back,
        // or its keys be unknown, the table is left out and the worker builds it from the log.
        let loaded = w.ids.complete || w.ids.load(seg, w.open_end).is_ok();
        let Some(keys) = keys.filter(|_| loaded) else {
            let fresh = self.ids.take_spare(w.ids.capacity());
            w.ids.seal(seg.end_base(), fresh);
            self.ids.add_uncovered(seg);
            return;
        };
        for (hash, pos) in keys {
            w.ids.insert_dense(hash, pos);
        }
        let fresh = self.ids.take_spare(w.ids.capacity());
        let sealed = w.ids.seal(seg.end_base(), fresh);
        self.ids.add_sealed(
            seg,
            Table::from_map(seg, sealed),
            crate::store::table_entries,
        );
    }

    /// Checks every request of the group in order and encodes the accepted ones into the
    /// writer's buffer, rolling segments as needed; returns each request's outcome and the new
    /// events per stream.
    fn plan_and_write(
        &self,
        w: &mut WriterState,
        group: Vec<(u64, Vec<StreamWrite>)>,
    ) -> (Vec<Outcome>, Group) {
        w.secondary.clear();
        // Streams and keys not used since the store opened are loaded from the index files
        // first, without the index lock held during the planning below.
        let unloaded: Vec<Option<Error>> = group
            .iter()
            .map(|(_, writes)| writes.iter().try_for_each(|sw| self.load_keys(w, sw)).err())
            .collect();
        // The streams' metadata, read before the index lock is taken (reading it may take the
        // lock); what this group's own metadata writes change is kept beside it.
        let table = self.metadata_table();
        let mut changed: HashMap<String, Arc<StreamMetadata>> = HashMap::new();
        let index = self.index.read();
        let view = self.log.view();
        let checker = Checker {
            index: &index,
            view: &view,
            tables: &self.ids,
            active_base: w.log.active().base,
            open_end: w.open_end,
        };
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut streams = Group::default();
        let mut outcomes = Vec::with_capacity(group.len());

        for ((ticket, writes), unloaded) in group.into_iter().zip(unloaded) {
            if let Some(e) = unloaded {
                outcomes.push(Outcome {
                    ticket,
                    result: Err(e),
                    provisional: false,
                });
                continue;
            }
            let table = match &table {
                Ok(t) => t,
                Err(e) => {
                    outcomes.push(Outcome {
                        ticket,
                        // Every request of the group gets the error; a damaged log stays a
                        // `Corrupt` error, not the caller's mistake.
                        result: Err(match e {
                            Error::Corrupt {
                                file,
                                offset,
                                reason,
                            } => Error::Corrupt {
                                file: file.clone(),
                                offset: *offset,
                                reason: format!("reading stream metadata: {reason}"),
                            },
                            e => Error::InvalidInput(format!("reading stream metadata: {e}")),
                        }),
                        provisional: false,
                    });
                    continue;
                }
            };
            // Check every stream of the request before touching anything.
            let mut plans = Vec::with_capacity(writes.len());
            let mut failed = None;
            let mut slots = Vec::with_capacity(writes.len());
            for sw in &writes {
                let slot = match streams.slot_of(&sw.stream) {
                    Some(slot) => slot,
                    None => {
                        let id = index.lookup(&sw.stream);
                        streams.add(GroupStream {
                            name: sw.stream.clone(),
                            id,
                            committed: id.map_or(0, |id| index.len(id)),
                            new_ids: Vec::new(),
                            new_places: Vec::new(),
                        })
                    }
                };
                slots.push(slot);
                let g = &streams.streams[slot];
                // A metadata stream is refused as its stream is: a tombstone is never undone.
                let target = sw
                    .stream
                    .strip_prefix(METADATA_STREAM_PREFIX)
                    .unwrap_or(&sw.stream);
                let md = changed
                    .get(target)
                    .or_else(|| table.get(target).map(|(_, md)| md));
                if md.is_some_and(|md| md.tombstoned) {
                    failed = Some((
                        Error::StreamDeleted {
                            stream: target.to_string(),
                        },
                        false,
                    ));
                    break;
                }
                // `NoStream` on a soft-deleted stream: its events before `truncate_before`
                // do not count.
                let floor = match md {
                    Some(md) if target.len() == sw.stream.len() => md.truncate_before.unwrap_or(0),
                    _ => 0,
                };
                match checker.check(sw, g, floor, &mut w.ids) {
                    Ok(p) => plans.push(p),
                    Err(e) => {
                        // An answer worked out against this group's own writes stands only if
                        // they reach the disk.
                        failed = Some((e, !g.new_ids.is_empty()));
                        break;
                    }
                }
            }
            if let Some((e, pending)) = failed {
                outcomes.push(Outcome {
                    ticket,
                    result: Err(e),
                    provisional: pending,
                });
                continue;
            }
            let size: u64 = writes
                .iter()
                .zip(&plans)
                .filter(|(_, p)| matches!(p, Plan::Write(_)))
                .map(|(sw, _)| encoded_len(sw))
                .sum();
            if size > 0 && (w.buf.len() as u64 + size) > w.log.remaining() {
                let flushed = w.log.write(&w.buf);
                w.buf.clear();
                if let Err(e) = flushed.and_then(|_| w.log.roll(&self.log, size)) {
                    // The writer is poisoned (or the batch cannot fit anywhere): this request
                    // fails; earlier ones fail at the final write.
                    outcomes.push(Outcome {
                        ticket,
                        result: Err(e),
                        provisional: false,
                    });
                    continue;
                }
            }
            let last_record = writes
                .iter()
                .zip(&plans)
                .rposition(|(sw, p)| matches!(p, Plan::Write(_)) && !sw.events.is_empty());
            let mut results = Vec::with_capacity(writes.len());
            let mut provisional = false;
            for (i, ((sw, plan), slot)) in writes.iter().zip(plans).zip(slots).enumerate() {
                let g = &mut streams.streams[slot];
                match plan {
                    Plan::Done(r, prov) => {
                        provisional |= prov;
                        results.push(r);
                    }
                    Plan::Write(first) => {
                        provisional = true;
                        if g.new_ids.is_empty() {
                            streams.write_order.push(slot);
                        }
                        let base = w.log.active().base;
                        let n = sw.events.len();
                        for (k, e) in sw.events.iter().enumerate() {
                            let pos = w.log.position() + w.buf.len() as u64;
                            let type_key = match w.keys.cached_type(&e.event_type) {
                                Some(id) => TypeKey::Known(id),
                                None => {
                                    TypeKey::New(new_type(&mut streams.new_types, &e.event_type))
                                }
                            };
                            w.secondary.push((pos, base, slot as u32, type_key));
                            let end = Some(i) == last_record && k + 1 == n;
                            encode_record(
                                &mut w.buf,
                                &RecordFields {
                                    flags: if end { FLAG_BATCH_END } else { 0 },
                                    event_number: first + k as u64,
                                    timestamp_micros: timestamp,
                                    id: e.id,
                                    stream: sw.stream.as_bytes(),
                                    event_type: e.event_type.as_bytes(),
                                    data: &e.data,
                                    metadata: &e.metadata,
                                },
                            );
                            g.new_ids.push(e.id);
                            g.new_places.push((pos, base));
                        }
                        results.push(AppendResult {
                            version: Some(first + n as u64 - 1),
                            position: g.new_places.last().map(|p| Position(p.0)),
                        });
                    }
                }
            }
            for sw in &writes {
                let Some(target) = sw.stream.strip_prefix(METADATA_STREAM_PREFIX) else {
                    continue;
                };
                let newest = sw.events.iter().rev().find_map(|e| {
                    (e.event_type == METADATA_EVENT_TYPE)
                        .then(|| serde_json::from_slice::<StreamMetadata>(&e.data).ok())
                        .flatten()
                });
                if let Some(md) = newest {
                    changed.insert(target.to_string(), Arc::new(md));
                }
            }
            outcomes.push(Outcome {
                ticket,
                result: Ok(results),
                provisional,
            });
        }
        (outcomes, streams)
    }
}

/// An async append on its way through the group commit (feature `async`): queued on its first
/// poll, answered when the group that took it is committed. The group is led by a thread (the
/// store's committer thread, or a blocking appender that happens to lead), never by the task.
///
/// Dropped before its first poll, it queued nothing. Dropped while queued, its batch is taken out
/// of the queue and never written. Dropped while its group is being committed, its batch may
/// still be written (as a request that timed out may still have been carried out) and its result
/// is thrown away.
#[cfg(feature = "async")]
pub(crate) struct Submission<'a> {
    shared: &'a Shared,
    state: SubmissionState,
}

#[cfg(feature = "async")]
enum SubmissionState {
    /// Checked, not queued yet.
    Ready(Vec<StreamWrite>),
    Queued(u64),
    Finished,
}

#[cfg(feature = "async")]
impl Shared {
    /// An async append of a multi-stream batch, checked now and queued when first polled.
    pub(crate) fn submit_async(&self, writes: Vec<StreamWrite>) -> Result<Submission<'_>> {
        self.check_writable()?;
        check_batch(&writes, self.options.max_event_size)?;
        Ok(Submission {
            shared: self,
            state: SubmissionState::Ready(writes),
        })
    }

    /// The committer thread: leads a group whenever batches are queued and nobody leads, until
    /// told to stop (after `close` has seen the queue drained).
    pub(crate) fn commit_loop(&self) {
        let mut q = self.queue.lock();
        loop {
            if q.stop_committer {
                return;
            }
            if !q.leader && !q.pending.is_empty() {
                // A leader that unwinds hands its group an error and the queue on (see
                // `LeaderGuard`); the committer must outlive it, or async appenders would wait
                // for a leader that never comes.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.lead(q, None);
                }));
                q = self.queue.lock();
                continue;
            }
            // Unparked by an async appender that finds no leader, by a leader whose next queued
            // appender is a task, and by `close`.
            MutexGuard::unlocked(&mut q, std::thread::park);
        }
    }
}

#[cfg(feature = "async")]
impl std::future::Future for Submission<'_> {
    type Output = Result<Vec<AppendResult>>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = self.get_mut();
        let mut q = this.shared.queue.lock();
        match std::mem::replace(&mut this.state, SubmissionState::Finished) {
            SubmissionState::Finished => Poll::Ready(Err(Error::InvalidInput(
                "an append future was polled after it completed".into(),
            ))),
            SubmissionState::Ready(writes) => {
                if q.paused {
                    q.paused_wakers.push(cx.waker().clone());
                    this.state = SubmissionState::Ready(writes);
                    return Poll::Pending;
                }
                if q.closed {
                    let e = this.shared.check_open().err().unwrap_or(Error::Closed);
                    return Poll::Ready(Err(e));
                }
                let ticket = q.enqueue(writes, Waiter::Task);
                q.wakers.insert(ticket, cx.waker().clone());
                this.state = SubmissionState::Queued(ticket);
                if !q.leader {
                    if let Some(c) = &q.committer {
                        c.unpark();
                    }
                }
                Poll::Pending
            }
            SubmissionState::Queued(ticket) => {
                if let Some(r) = q.done.remove(&ticket) {
                    return Poll::Ready(r);
                }
                if let Some(w) = q.wakers.get_mut(&ticket) {
                    if !w.will_wake(cx.waker()) {
                        *w = cx.waker().clone();
                    }
                }
                this.state = SubmissionState::Queued(ticket);
                Poll::Pending
            }
        }
    }
}

#[cfg(feature = "async")]
impl Drop for Submission<'_> {
    fn drop(&mut self) {
        let SubmissionState::Queued(ticket) = self.state else {
            return;
        };
        let mut q = self.shared.queue.lock();
        if q.done.remove(&ticket).is_some() {
            return;
        }
        q.wakers.remove(&ticket);
        match q.pending.iter().position(|(t, _)| *t == ticket) {
            Some(i) => {
                // Not taken by a leader yet: it is never written.
                q.pending.remove(i);
                q.pending_waiters.remove(i);
                if !q.leader {
                    // It may have been the one a finished leader handed the queue to, or the
                    // last one `close` waits for.
                    self.shared.hand_over(q, &[], Vec::new());
                }
            }
            // In a group being committed: its result is thrown away when it comes.
            None => {
                q.abandoned.insert(ticket);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{GatherPace, MAX_GATHER_SKIPS};

    /// Groups led without a gather before the next gather, given how each gather ends.
    fn skips_after(ends: &[bool]) -> Vec<u32> {
        let mut pace = GatherPace::default();
        let mut out = Vec::new();
        for &ran_out in ends {
            pace.gathered(ran_out);
            let mut skipped = 0;
            while !pace.next_gathers() {
                skipped += 1;
            }
            out.push(skipped);
        }
        out
    }

    #[test]
    fn gathers_that_run_out_of_time_are_skipped_for_longer_each_time_and_tried_again() {
        assert_eq!(
            skips_after(&[true, true, true, false, true]),
            vec![1, 2, 4, 0, 1]
        );
        let many = skips_after(&[true; 10]);
        assert_eq!(*many.last().unwrap(), MAX_GATHER_SKIPS);
        assert!(many.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn gathers_that_complete_keep_every_group_gathering() {
        assert_eq!(skips_after(&[false; 5]), vec![0; 5]);
    }
}
