//! The read side of the log: decoding records at positions and walking `$all`.

use std::sync::Arc;

use super::format::{decode_record, trailer_len_before, RecordView, SEGMENT_HEADER_LEN};
use super::segment::Segment;
use crate::error::{Error, Result};
use crate::types::{Position, RecordedEvent};

const HEADER: u64 = SEGMENT_HEADER_LEN as u64;

/// A snapshot of the segment list and the visible end, taken once per read call.
pub struct LogView {
    segs: Arc<Vec<Arc<Segment>>>,
    visible: u64,
    verify: bool,
}

/// Where a `$all` cursor stands: segment index and offset inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    seg: usize,
    off: u64,
}

impl LogView {
    pub(crate) fn new(segs: Arc<Vec<Arc<Segment>>>, visible: u64, verify: bool) -> LogView {
        LogView {
            segs,
            visible,
            verify,
        }
    }

    /// The visible end of the log in this snapshot.
    pub fn visible(&self) -> u64 {
        self.visible
    }

    /// Whether `pos` lies in a segment this snapshot knows.
    pub fn covers(&self, pos: u64) -> bool {
        self.segs.last().is_some_and(|s| pos < s.end_base())
    }

    fn locate(&self, pos: u64) -> Option<Cursor> {
        let i = self
            .segs
            .partition_point(|s| s.base + HEADER <= pos)
            .checked_sub(1)?;
        let off = pos - self.segs[i].base;
        (off <= self.segs[i].capacity).then_some(Cursor { seg: i, off })
    }

    fn corrupt(&self, seg: usize, off: u64, reason: &str) -> Error {
        Error::Corrupt {
            file: self.segs[seg].path.clone(),
            offset: off,
            reason: reason.to_string(),
        }
    }

    fn decode(&self, c: Cursor, verify: bool) -> Result<RecordView> {
        let seg = &self.segs[c.seg];
        decode_record(seg.bytes(), c.off as usize, verify).map_err(|e| match e {
            super::format::RecordError::End => self.corrupt(
                c.seg,
                c.off,
                "expected a record, found the end of the segment",
            ),
            super::format::RecordError::Bad(reason) => self.corrupt(c.seg, c.off, reason),
        })
    }

    fn event(&self, c: Cursor, v: &RecordView) -> RecordedEvent {
        let map = &self.segs[c.seg].map;
        RecordedEvent {
            stream: map.slice(v.stream.0..v.stream.1),
            event_type: map.slice(v.event_type.0..v.event_type.1),
            event_number: v.event_number,
            position: Position(self.segs[c.seg].base + c.off),
            next_position: Position(self.segs[c.seg].base + c.off + v.len as u64),
            id: v.id,
            timestamp_micros: v.timestamp_micros,
            data: map.slice(v.data.0..v.data.1),
            metadata: map.slice(v.metadata.0..v.metadata.1),
        }
    }

    /// The event whose record starts at `pos`, a position taken from the index.
    pub fn event_at(&self, pos: u64) -> Result<RecordedEvent> {
        let c = self
            .locate(pos)
            .ok_or(Error::InvalidPosition(Position(pos)))?;
        let v = self.decode(c, self.verify)?;
        Ok(self.event(c, &v))
    }

    /// The record at `pos` (checked as reads are): for reading ids on the append path, where a
    /// damaged id must not pass for a retry.
    pub fn record_at(&self, pos: u64) -> Result<RecordView> {
        let c = self
            .locate(pos)
            .ok_or(Error::InvalidPosition(Position(pos)))?;
        self.decode(c, self.verify)
    }

    /// The cursor for a caller-given position: `START`, `END`, the visible end, or the position of
    /// an event (equivalently, the end of one).
    pub fn cursor(&self, pos: Position) -> Result<Cursor> {
        let p = match pos {
            Position::START => self.segs[0].base + HEADER,
            Position::END => self.visible,
            Position(p) => p,
        };
        let invalid = Error::InvalidPosition(pos);
        if p > self.visible {
            return Err(invalid);
        }
        let c = self.locate(p).ok_or(invalid)?;
        let data_end = self.segs[c.seg].data_end();
        if p == self.visible || c.off == HEADER || c.off == data_end {
            return Ok(c);
        }
        if c.off > data_end || !c.off.is_multiple_of(8) || self.decode(c, true).is_err() {
            return Err(Error::InvalidPosition(pos));
        }
        Ok(c)
    }

    /// The event at `c` and the cursor after it, or `None` at the visible end.
    pub fn next_forward(&self, mut c: Cursor) -> Result<Option<(RecordedEvent, Cursor)>> {
        loop {
            let seg = &self.segs[c.seg];
            if seg.base + c.off >= self.visible {
                return Ok(None);
            }
            if c.off >= seg.data_end() {
                if c.seg + 1 >= self.segs.len() {
                    return Ok(None);
                }
                c = Cursor {
                    seg: c.seg + 1,
                    off: HEADER,
                };
                continue;
            }
            let v = self.decode(c, self.verify)?;
            let ev = self.event(c, &v);
            let next = Cursor {
                seg: c.seg,
                off: c.off + v.len as u64,
            };
            return Ok(Some((ev, next)));
        }
    }

    /// The event just before `c` and its cursor, or `None` at the start of the log.
    pub fn next_backward(&self, mut c: Cursor) -> Result<Option<(RecordedEvent, Cursor)>> {
        loop {
            if c.off <= HEADER {
                if c.seg == 0 {
                    return Ok(None);
                }
                let seg = c.seg - 1;
                c = Cursor {
                    seg,
                    off: self.segs[seg].data_end(),
                };
                continue;
            }
            let bytes = self.segs[c.seg].bytes();
            let len = trailer_len_before(bytes, c.off as usize)
                .filter(|&l| c.off >= HEADER + l as u64)
                .ok_or_else(|| self.corrupt(c.seg, c.off - 4, "bad record trailer"))?;
            let start = Cursor {
                seg: c.seg,
                off: c.off - len as u64,
            };
            let v = self.decode(start, self.verify)?;
            if v.len != len {
                return Err(self.corrupt(c.seg, start.off, "record trailer disagrees with header"));
            }
            return Ok(Some((self.event(start, &v), start)));
        }
    }
}
