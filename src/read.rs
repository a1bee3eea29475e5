//! The read path: stream reads through the index, `$all` reads through the log.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::index::StreamId;
use crate::log::reader::{Cursor, LogView};
use crate::store::Shared;
use crate::types::RecordedEvent;

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
    view: LogView,
}

impl<'a> StreamEvents<'a> {
    pub(crate) fn new(
        shared: &'a Shared,
        stream: &str,
        from: u64,
        max: usize,
        forward: bool,
    ) -> StreamEvents<'a> {
        let index = shared.index.read();
        let id = index.lookup(stream);
        let len = id.map_or(0, |id| index.len(id));
        let name = id
            .and_then(|id| index.name(id).cloned())
            .unwrap_or_else(|| Arc::from(stream));
        drop(index);
        let (next, remaining) = if forward {
            (from, max)
        } else if len == 0 {
            (0, 0)
        } else {
            (from.min(len - 1), max)
        };
        StreamEvents {
            shared,
            name,
            id,
            next,
            end: len,
            remaining: if id.is_some() { remaining } else { 0 },
            forward,
            chunk: Vec::new(),
            at: 0,
            view: shared.log.view(),
        }
    }

    fn refill(&mut self) -> Result<bool> {
        let Some(id) = self.id else { return Ok(false) };
        let want = self.remaining.min(CHUNK) as u64;
        self.chunk.clear();
        self.at = 0;
        let index = self.shared.index.read();
        if self.forward {
            let lo = self.next.min(self.end);
            let hi = self.end.min(lo + want);
            index.copy_positions(id, lo, hi, true, &mut self.chunk)?;
        } else {
            let hi = self.next + 1;
            let lo = hi.saturating_sub(want);
            index.copy_positions(id, lo, hi, false, &mut self.chunk)?;
        }
        Ok(!self.chunk.is_empty())
    }
}

impl Iterator for StreamEvents<'_> {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Result<RecordedEvent>> {
        if self.remaining == 0 {
            return None;
        }
        if self.at == self.chunk.len() {
            match self.refill() {
                Ok(true) => {}
                Ok(false) => {
                    self.remaining = 0;
                    return None;
                }
                Err(e) => {
                    self.remaining = 0;
                    return Some(Err(e));
                }
            }
        }
        let pos = self.chunk[self.at];
        self.at += 1;
        if !self.view.covers(pos) {
            self.view = self.shared.log.view();
        }
        let expected = self.next;
        self.remaining -= 1;
        if self.forward {
            self.next += 1;
        } else if self.next == 0 {
            self.remaining = 0;
        } else {
            self.next -= 1;
        }
        let r = self.view.event_at(pos).and_then(|e| {
            if e.event_number == expected && e.stream[..] == *self.name.as_bytes() {
                Ok(e)
            } else {
                Err(Error::Corrupt {
                    file: self.shared.dir.clone(),
                    offset: pos,
                    reason: format!(
                        "index points at event {} of `{}` where event {expected} of `{}` belongs",
                        e.event_number,
                        e.stream(),
                        self.name
                    ),
                })
            }
        });
        if r.is_err() {
            self.remaining = 0;
        }
        Some(r)
    }
}

/// Events of `$all`, in commit order (forward) or reverse (backward).
///
/// Yields `Err` once, then ends, if a record fails its checksum.
pub struct AllEvents {
    view: LogView,
    cursor: Cursor,
    remaining: usize,
    forward: bool,
}

impl AllEvents {
    pub(crate) fn new(view: LogView, cursor: Cursor, max: usize, forward: bool) -> AllEvents {
        AllEvents {
            view,
            cursor,
            remaining: max,
            forward,
        }
    }
}

impl Iterator for AllEvents {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Result<RecordedEvent>> {
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
                self.remaining -= 1;
                Some(Ok(event))
            }
            Ok(None) => {
                self.remaining = 0;
                None
            }
            Err(e) => {
                self.remaining = 0;
                Some(Err(e))
            }
        }
    }
}
