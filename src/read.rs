//! The read path: stream reads through the index, `$all` reads through the log.

use std::ops::ControlFlow;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::index::{is_key_name, Key, StreamId};
use crate::log::reader::{Cursor, LogView};
use crate::store::Shared;
use crate::types::{EventRef, RecordedEvent};

/// Positions copied out of the index per lock acquisition: the index lock is held for a short
/// copy, never while events are decoded, so reads never hold up appends for long.
const CHUNK: usize = 512;

/// Events of one stream, in event-number order (forward) or reverse (backward).
///
/// Yields `Err` once, then ends, if a record fails its checksum.
pub struct StreamEvents<'a> {
    shared: &'a Shared,
    name: Arc<str>,
    id: Option<StreamId>,
    /// Next event number to yield.
    next: u64,
    /// Forward: one past the last event number to yield (the stream's length when the read
    /// started, so a read sees a fixed set of events).
    end: u64,
    remaining: usize,
    forward: bool,
    chunk: Vec<u64>,
    at: usize,
    /// Whether the chunk's events lie spread out, and are prefetched.
    spread: bool,
    view: LogView,
    /// Whether `name` is a category or event type key rather than a stream.
    keyed: bool,
    /// Backward: the lowest event number to yield (the first one the stream's metadata leaves
    /// visible).
    floor: u64,
    /// Events stamped before this (microseconds since the epoch) are passed over (`max_age`).
    oldest: u64,
    /// For a category or event type: what hides the events of deleted or retained streams.
    hider: Option<crate::lifecycle::Hider>,
    /// Set when the read has reached its end.
    done: bool,
}

impl<'a> StreamEvents<'a> {
    pub(crate) fn new(
        shared: &'a Shared,
        stream: &str,
        from: u64,
        max: usize,
        forward: bool,
    ) -> Result<StreamEvents<'a>> {
        let keyed = is_key_name(stream);
        let (id, len) = shared.stream_len(stream)?;
        let (mut floor, mut oldest, mut hider) = (0, 0, None);
        if keyed {
            hider = Some(crate::lifecycle::Hider::new(shared)?);
        } else {
            (floor, oldest) = shared.visible_part(stream, len)?;
        }
        let mut events = StreamEvents::raw_from(shared, stream, id, len, from, max, forward);
        events.floor = floor;
        events.oldest = oldest;
        events.hider = hider;
        if forward {
            events.next = events.next.max(floor);
        } else if events.next < floor {
            events.done = true;
        }
        Ok(events)
    }

    /// A forward read of `stream` (or a key) that applies no stream metadata: for the store's
    /// own reads of the metadata.
    pub(crate) fn raw(
        shared: &'a Shared,
        stream: &str,
        from: u64,
        max: usize,
    ) -> Result<StreamEvents<'a>> {
        let (id, len) = shared.stream_len(stream)?;
        Ok(StreamEvents::raw_from(
            shared, stream, id, len, from, max, true,
        ))
    }

    fn raw_from(
        shared: &'a Shared,
        stream: &str,
        id: Option<StreamId>,
        len: u64,
        from: u64,
        max: usize,
        forward: bool,
    ) -> StreamEvents<'a> {
        let (next, remaining) = if forward {
            (from, max)
        } else if len == 0 {
            (0, 0)
        } else {
            (from.min(len - 1), max)
        };
        StreamEvents {
            shared,
            name: Arc::from(stream),
            id,
            next,
            end: len,
            remaining: if id.is_some() { remaining } else { 0 },
            forward,
            chunk: Vec::new(),
            at: 0,
            spread: false,
            view: shared.log.view(),
            keyed: is_key_name(stream),
            floor: 0,
            oldest: 0,
            hider: None,
            done: false,
        }
    }

    /// Forward: the number of the next entry the read would look at (past those it passed
    /// over as hidden).
    pub(crate) fn next_entry(&self) -> u64 {
        self.next
    }

    fn refill(&mut self) -> Result<bool> {
        let Some(id) = self.id else { return Ok(false) };
        let want = self.remaining.min(CHUNK) as u64;
        self.chunk.clear();
        self.at = 0;
        let index = self.shared.index.read();
        // Under the lock the index is moved under: an index that is gone does not read as empty.
        self.shared.check_index()?;
        if self.forward {
            let lo = self.next.min(self.end);
            let hi = self.end.min(lo + want);
            index.copy_positions(id, lo, hi, true, &mut self.chunk)?;
        } else {
            let hi = self.next + 1;
            let lo = hi.saturating_sub(want).max(self.floor);
            index.copy_positions(id, lo, hi, false, &mut self.chunk)?;
        }
        Ok(!self.chunk.is_empty())
    }
}

impl StreamEvents<'_> {
    /// The next entry of the index, whether visible or not (`None` inside: compaction removed
    /// its record).
    fn next_entry_raw(&mut self) -> Option<Result<Option<RecordedEvent>>> {
        if self.done {
            return None;
        }
        if self.at == self.chunk.len() {
            match self.refill() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let pos = self.chunk[self.at];
        // As a replay does: a stream or key spread among others has each event on its own cache
        // line, often its own page.
        if self.at == 0 {
            self.spread = prefetch_start(&self.view, &self.chunk);
        }
        if self.spread {
            if let Some(&ahead) = self.chunk.get(self.at + PREFETCH_AHEAD) {
                self.view.prefetch_located(ahead);
            }
        }
        self.at += 1;
        if !self.view.covers(pos) {
            self.view = self.shared.log.view();
        }
        let expected = self.next;
        if self.forward {
            self.next += 1;
        } else if self.next <= self.floor {
            self.done = true;
        } else {
            self.next -= 1;
        }
        let r = self.view.event_at(pos).and_then(|e| {
            let Some(e) = e else { return Ok(None) };
            if self.keyed {
                check_key(self.shared, &e.as_ref(), &self.name, expected, pos)?;
            } else {
                check_place(self.shared, &e.as_ref(), &self.name, expected, pos)?;
            }
            Ok(Some(e))
        });
        if r.is_err() {
            self.done = true;
        }
        Some(r)
    }
}

impl Iterator for StreamEvents<'_> {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Result<RecordedEvent>> {
        loop {
            if self.remaining == 0 {
                return None;
            }
            let r = match self.next_entry_raw()? {
                Ok(None) => continue,
                Ok(Some(e)) => Ok(e),
                Err(e) => Err(e),
            };
            if let Ok(e) = &r {
                if e.timestamp_micros() < self.oldest {
                    continue;
                }
                if let Some(h) = &mut self.hider {
                    if h.hides(self.shared, &e.as_ref()) {
                        continue;
                    }
                }
            }
            self.remaining -= 1;
            return Some(r);
        }
    }
}

/// Checks that the record the index placed at `pos` is event `expected` of `name`: an index
/// that disagrees with the log must not make a read return another stream's event.
#[inline]
fn check_place(
    shared: &Shared,
    e: &EventRef<'_>,
    name: &str,
    expected: u64,
    pos: u64,
) -> Result<()> {
    if e.event_number() == expected && same_bytes(e.stream_bytes(), name.as_bytes()) {
        return Ok(());
    }
    misplaced(shared, e, name, expected, pos)
}

/// Checks that the record the index placed at `pos` belongs to the category or event type key
/// `name` (entry `expected` of it).
fn check_key(shared: &Shared, e: &EventRef<'_>, name: &str, expected: u64, pos: u64) -> Result<()> {
    if Key::parse(name).holds(e.stream(), e.event_type(), e.event_number(), expected) {
        return Ok(());
    }
    misplaced(shared, e, name, expected, pos)
}

/// How many events ahead a stream replay asks the CPU to load (see `LogView::prefetch`).
const PREFETCH_AHEAD: usize = 8;
/// Average bytes between a chunk's consecutive events above which they are prefetched: the
/// hardware prefetcher already follows a stream whose events lie close together.
const SPREAD: u64 = 1024;

/// Whether the events of a chunk of positions lie spread out, to be prefetched
/// `PREFETCH_AHEAD` ahead as they are read; if so, asks for the first ones, which have none that
/// far before them to ask for them (a journaled actor's replay is often one short chunk).
fn prefetch_start(view: &LogView, chunk: &[u64]) -> bool {
    let (Some(&first), Some(&last)) = (chunk.first(), chunk.last()) else {
        return false;
    };
    let gaps = chunk.len() as u64 - 1;
    let spread = gaps > 0 && first.abs_diff(last) / gaps > SPREAD;
    if spread {
        for &p in chunk.iter().take(PREFETCH_AHEAD) {
            view.prefetch_located(p);
        }
    }
    spread
}

/// Byte equality without a library call: stream names are short, and a call to `memcmp` per
/// event was a tenth of a replay's time.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        if u64::from_ne_bytes(x.try_into().unwrap_or_default())
            != u64::from_ne_bytes(y.try_into().unwrap_or_default())
        {
            return false;
        }
    }
    ca.remainder()
        .iter()
        .zip(cb.remainder())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cold]
#[inline(never)]
fn misplaced(shared: &Shared, e: &EventRef<'_>, name: &str, expected: u64, pos: u64) -> Result<()> {
    Err(Error::Corrupt {
        file: shared.dir.clone(),
        offset: pos,
        reason: format!(
            "index points at event {} of `{}` where event {expected} of `{name}` belongs",
            e.event_number(),
            e.stream(),
        ),
    })
}

/// Hands events `from..` of `stream` to `f`, in order, until `f` breaks; returns how many it
/// was handed.
pub(crate) fn replay_stream<F>(shared: &Shared, stream: &str, from: u64, mut f: F) -> Result<u64>
where
    F: FnMut(&EventRef<'_>) -> ControlFlow<()>,
{
    let (id, end) = match shared.stream_len(stream)? {
        (Some(id), len) => (id, len),
        // A tombstoned stream that never had events is still refused.
        (None, _) => return shared.visible_part(stream, 0).map(|_| 0),
    };
    let (first, oldest) = shared.visible_part(stream, end)?;
    let mut next = from.max(first);
    let mut handed = 0u64;
    let mut view = shared.log.view();
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut hint = 0usize;
    while next < end {
        chunk.clear();
        {
            // Held only to copy positions: not while `f` runs.
            let index = shared.index.read();
            shared.check_index()?;
            index.copy_positions(id, next, end.min(next + CHUNK as u64), true, &mut chunk)?;
        }
        let Some(&last) = chunk.last() else { break };
        if !view.covers(last) {
            view = shared.log.view();
        }
        let spread = prefetch_start(&view, &chunk);
        for (i, &pos) in chunk.iter().enumerate() {
            if spread {
                if let Some(&ahead) = chunk.get(i + PREFETCH_AHEAD) {
                    view.prefetch(ahead, hint);
                }
            }
            let Some(e) = view.event_ref_at(pos, &mut hint)? else {
                next += 1;
                continue;
            };
            check_place(shared, &e, stream, next, pos)?;
            next += 1;
            if oldest > 0 && e.timestamp_micros() < oldest {
                continue;
            }
            handed += 1;
            if f(&e).is_break() {
                return Ok(handed);
            }
        }
    }
    Ok(handed)
}

/// Hands the events of `$all` from `cursor` on to `f`, in commit order, until `f` breaks;
/// returns how many it was handed.
pub(crate) fn replay_all<F>(
    shared: &Shared,
    view: &LogView,
    mut cursor: Cursor,
    mut f: F,
) -> Result<u64>
where
    F: FnMut(&EventRef<'_>) -> ControlFlow<()>,
{
    let mut hider = crate::lifecycle::Hider::new(shared)?;
    let mut handed = 0u64;
    while let Some((e, next)) = view.next_forward_ref(cursor)? {
        if hider.hides(shared, &e) {
            cursor = next;
            continue;
        }
        handed += 1;
        if f(&e).is_break() {
            break;
        }
        cursor = next;
    }
    Ok(handed)
}

/// Events of `$all`, in commit order (forward) or reverse (backward).
///
/// Yields `Err` once, then ends, if a record fails its checksum.
pub struct AllEvents {
    view: LogView,
    cursor: Cursor,
    remaining: usize,
    forward: bool,
    /// What hides the events of deleted or retained streams.
    hider: Option<(Arc<Shared>, crate::lifecycle::Hider)>,
}

impl AllEvents {
    pub(crate) fn new(
        shared: &Arc<Shared>,
        view: LogView,
        cursor: Cursor,
        max: usize,
        forward: bool,
    ) -> Result<AllEvents> {
        let hider = crate::lifecycle::Hider::new(shared)?;
        Ok(AllEvents {
            view,
            cursor,
            remaining: max,
            forward,
            hider: Some((shared.clone(), hider)),
        })
    }
}

impl Iterator for AllEvents {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Result<RecordedEvent>> {
        // A loop, not a call again per hidden event: a deleted stream can hide millions in a row.
        loop {
            if self.remaining == 0 {
                return None;
            }
            let step = if self.forward {
                self.view.next_forward(self.cursor)
            } else {
                self.view.next_backward(self.cursor)
            };
            match step {
                Ok(Some((event, cursor))) => {
                    self.cursor = cursor;
                    if let Some((shared, h)) = &mut self.hider {
                        if h.hides(shared, &event.as_ref()) {
                            continue;
                        }
                    }
                    self.remaining -= 1;
                    return Some(Ok(event));
                }
                Ok(None) => {
                    self.remaining = 0;
                    return None;
                }
                Err(e) => {
                    self.remaining = 0;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::same_bytes;

    #[test]
    fn same_bytes_is_byte_equality() {
        for len in 0..40usize {
            let a: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
            assert!(same_bytes(&a, &a.clone()));
            for i in 0..len {
                let mut b = a.clone();
                b[i] ^= 0x80;
                assert!(!same_bytes(&a, &b), "len {len}, differs at {i}");
            }
            let mut longer = a.clone();
            longer.push(0);
            assert!(!same_bytes(&a, &longer));
        }
    }
}
