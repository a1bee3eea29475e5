//! The read side of the log: decoding records at positions and walking `$all`.

use std::sync::Arc;

use super::format::{decode_record, trailer_len_before, u32_at, RecordView, SEGMENT_HEADER_LEN};
use super::segment::Segment;
use crate::error::{Error, Result};
use crate::types::{EventRef, Fields, Position, RecordedEvent};

const HEADER: u64 = SEGMENT_HEADER_LEN as u64;

/// The fields of a record decoded at `off`, relative to the record's start.
#[inline]
fn fields(v: &RecordView, off: usize) -> Fields {
    let rel = |(a, b): (usize, usize)| ((a - off) as u32, (b - off) as u32);
    Fields {
        event_number: v.event_number,
        timestamp_micros: v.timestamp_micros,
        id: v.id,
        stream: rel(v.stream),
        event_type: rel(v.event_type),
        data: rel(v.data),
        metadata: rel(v.metadata),
    }
}

/// A snapshot of the segment list and the visible end, taken once per read call.
pub struct LogView {
    segs: Arc<Vec<Arc<Segment>>>,
    visible: u64,
    verify: bool,
    /// A reference to the log's token of views alive, while this view is (see
    /// [`crate::log::Log`]): counted by its reference count.
    _alive: Option<Arc<()>>,
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
            _alive: None,
        }
    }

    /// This view, counted among the log's views alive until it is dropped.
    pub(crate) fn counted(mut self, alive: Arc<()>) -> LogView {
        self._alive = Some(alive);
        self
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

    #[cold]
    #[inline(never)]
    fn corrupt(&self, seg: usize, off: u64, reason: &str) -> Error {
        Error::Corrupt {
            file: self.segs[seg].path.clone(),
            offset: off,
            reason: reason.to_string(),
        }
    }

    /// Decodes the record at `c`; its ranges index the segment's [`Segment::bytes`], where it
    /// starts at `seg.file_off(c.off)`.
    #[inline(always)]
    fn decode(&self, c: Cursor, verify: bool) -> Result<RecordView> {
        let seg = &self.segs[c.seg];
        decode_record(seg.bytes(), seg.file_off(c.off) as usize, verify).map_err(|e| {
            // A sealed segment is mapped when first read: it has no bytes at all if that failed,
            // which is that failure, not damage.
            if let Err(unmapped) = seg.check_mapped() {
                return unmapped;
            }
            match e {
                super::format::RecordError::End => self.corrupt(
                    c.seg,
                    c.off,
                    "expected a record, found the end of the segment",
                ),
                super::format::RecordError::Bad(reason) => self.corrupt(c.seg, c.off, reason),
            }
        })
    }

    #[inline(always)]
    fn event(&self, c: Cursor, v: &RecordView) -> Result<RecordedEvent> {
        let seg = &self.segs[c.seg];
        let off = seg.file_off(c.off) as usize;
        let record = seg
            .slice(off, v.len)
            .ok_or_else(|| self.corrupt(c.seg, c.off, "record past the published end"))?;
        Ok(RecordedEvent {
            record,
            fields: fields(v, off),
            position: Position(seg.base + c.off),
        })
    }

    /// Always inlined, as `decode_record` is, for the same reason.
    #[inline(always)]
    fn event_ref(&self, c: Cursor, v: &RecordView) -> EventRef<'_> {
        let seg = &self.segs[c.seg];
        let off = seg.file_off(c.off) as usize;
        EventRef {
            record: &seg.bytes()[off..off + v.len],
            fields: fields(v, off),
            position: Position(seg.base + c.off),
        }
    }

    /// The event whose record starts at `pos`, borrowed; `None` if compaction removed it.
    /// `hint` is the segment of the previous call: replays read positions in order, and mostly
    /// stay in one segment.
    #[inline(always)]
    pub fn event_ref_at(&self, pos: u64, hint: &mut usize) -> Result<Option<EventRef<'_>>> {
        let c = match self.segs.get(*hint) {
            Some(s) if s.base + HEADER <= pos && pos - s.base <= s.capacity => Cursor {
                seg: *hint,
                off: pos - s.base,
            },
            _ => {
                let c = self
                    .locate(pos)
                    .ok_or(Error::InvalidPosition(Position(pos)))?;
                *hint = c.seg;
                c
            }
        };
        if self.removed(c) {
            return Ok(None);
        }
        let v = self.decode(c, self.verify)?;
        Ok(Some(self.event_ref(c, &v)))
    }

    /// Whether the record at `c` (a position from an index) was removed by compaction.
    #[inline(always)]
    fn removed(&self, c: Cursor) -> bool {
        let seg = &self.segs[c.seg];
        seg.compacted.is_some() && seg.gap_containing(c.off).is_some()
    }

    /// Starts loading the record at `pos` (a position from the index) into the CPU cache. A
    /// stream interleaved with others has each event on its own cache line, often its own page:
    /// a replay asking for a few events ahead overlaps those memory misses instead of taking
    /// them one at a time. Only the segment `hint` is looked at; elsewhere this does nothing.
    #[inline(always)]
    pub fn prefetch(&self, pos: u64, hint: usize) {
        if let Some(s) = self.segs.get(hint).filter(|s| s.compacted.is_none()) {
            // Outside this segment the address is wrong, and the hint merely useless. Four
            // lines: a record of 100-byte data is 176 bytes, and spans three or four (with two,
            // reading its trailer missed the cache: journaled actors' activation, +8 to 15%).
            let at = s.address_of(pos.wrapping_sub(s.base));
            prefetch_line(at);
            prefetch_line(at.wrapping_add(64));
            prefetch_line(at.wrapping_add(128));
            prefetch_line(at.wrapping_add(192));
        }
    }

    /// [`prefetch`](Self::prefetch), for a record in any segment.
    pub fn prefetch_located(&self, pos: u64) {
        if let Some(c) = self.locate(pos) {
            self.prefetch(pos, c.seg);
        }
    }

    /// The event whose record starts at `pos`, a position taken from the index; `None` if
    /// compaction removed it.
    ///
    /// Always inlined, with `event`, for `decode_record`'s reason: called, the event and the
    /// view it is built from went through memory. Measured: `read_stream_forward` over one
    /// stream, 9.4M to 18M events/s (the `workload` example's `replay-iter`).
    #[inline(always)]
    pub fn event_at(&self, pos: u64) -> Result<Option<RecordedEvent>> {
        let c = self
            .locate(pos)
            .ok_or(Error::InvalidPosition(Position(pos)))?;
        if self.removed(c) {
            return Ok(None);
        }
        let v = self.decode(c, self.verify)?;
        self.event(c, &v).map(Some)
    }

    /// The record at `pos` (checked as reads are), `None` if compaction removed it: for reading
    /// ids on the append path, where a damaged id must not pass for a retry.
    pub fn record_at(&self, pos: u64) -> Result<Option<RecordView>> {
        let c = self
            .locate(pos)
            .ok_or(Error::InvalidPosition(Position(pos)))?;
        if self.removed(c) {
            return Ok(None);
        }
        self.decode(c, self.verify).map(Some)
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
        // A position compaction removed (or the end of a removed record) still reads on from
        // there: the walk skips the gap.
        if self.segs[c.seg].gap_containing(c.off).is_some()
            || c.off
                .checked_sub(1)
                .is_some_and(|o| self.segs[c.seg].gap_containing(o).is_some())
        {
            return Ok(c);
        }
        if c.off > data_end || !c.off.is_multiple_of(8) || self.decode(c, true).is_err() {
            return Err(Error::InvalidPosition(pos));
        }
        Ok(c)
    }

    /// The event at `c` and the cursor after it, or `None` at the visible end.
    #[inline(always)]
    pub fn next_forward(&self, c: Cursor) -> Result<Option<(RecordedEvent, Cursor)>> {
        match self.record_forward(c)? {
            Some((at, v, next)) => Ok(Some((self.event(at, &v)?, next))),
            None => Ok(None),
        }
    }

    /// The event at `c` (made owned only if `keep` accepts it, decoded once either way), its
    /// position, and the cursor after it; `None` at the visible end.
    pub fn next_forward_if(
        &self,
        c: Cursor,
        keep: impl FnOnce(&EventRef<'_>) -> bool,
    ) -> Result<Option<(Option<RecordedEvent>, Position, Cursor)>> {
        match self.record_forward(c)? {
            Some((at, v, next)) => {
                let e = self.event_ref(at, &v);
                let pos = e.position();
                let owned = if keep(&e) {
                    Some(self.event(at, &v)?)
                } else {
                    None
                };
                Ok(Some((owned, pos, next)))
            }
            None => Ok(None),
        }
    }

    /// [`next_forward`](Self::next_forward), borrowed.
    #[inline]
    pub fn next_forward_ref(&self, c: Cursor) -> Result<Option<(EventRef<'_>, Cursor)>> {
        Ok(self
            .record_forward(c)?
            .map(|(at, v, next)| (self.event_ref(at, &v), next)))
    }

    /// The record at or after `c` (moving to the next segment at the end of one), where it is,
    /// and the cursor after it.
    #[inline(always)]
    fn record_forward(&self, mut c: Cursor) -> Result<Option<(Cursor, RecordView, Cursor)>> {
        loop {
            let seg = &self.segs[c.seg];
            if seg.base + c.off >= self.visible {
                return Ok(None);
            }
            let data_end = seg.data_end();
            if c.off >= data_end {
                if c.seg + 1 >= self.segs.len() {
                    return Ok(None);
                }
                c = Cursor {
                    seg: c.seg + 1,
                    off: HEADER,
                };
                continue;
            }
            if seg.compacted.is_some() {
                if let Some((_, end)) = seg.gap_containing(c.off) {
                    c.off = end;
                    continue;
                }
            } else if c.off + READ_AHEAD < data_end.min(self.visible - seg.base) {
                // Only within what may be read: past it are zeros, or the lines the writer is
                // about to fill (a subscription at the head of the log).
                prefetch_line(seg.address_of(c.off + READ_AHEAD));
            }
            let v = self.decode(c, self.verify)?;
            let next = Cursor {
                seg: c.seg,
                off: c.off + v.len as u64,
            };
            return Ok(Some((c, v, next)));
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
            if let Some((start, _)) = self.segs[c.seg].gap_containing(c.off - 1) {
                c.off = start;
                continue;
            }
            let seg = &self.segs[c.seg];
            let bytes = seg.bytes();
            // Where the record before `c` ends in the file (the same offset, but in a compacted
            // segment).
            let end = seg.file_off(c.off);
            let len = trailer_len_before(bytes, end as usize)
                .filter(|&l| c.off >= HEADER + l as u64 && end >= HEADER + l as u64)
                .ok_or_else(|| self.corrupt(c.seg, c.off - 4, "bad record trailer"))?;
            let start = Cursor {
                seg: c.seg,
                off: c.off - len as u64,
            };
            let file_start = (end - len as u64) as usize;
            // A header that repeats the trailer's length places the record; otherwise the
            // trailer itself is what is damaged, and the error points at it, not at whatever
            // lies where the damaged length leads.
            let header_len = bytes
                .get(file_start..file_start + 4)
                .map(|b| u32_at(b, 0) as usize);
            if header_len != Some(len) {
                // The checksum does not cover the length word: if the bytes the trailer spans
                // check out, the header's length is what is damaged.
                let (a, b) = (file_start, end as usize);
                let body_intact = bytes.get(a + 4..a + 8).is_some_and(|crc| {
                    u32_at(crc, 0) == super::checksum::record_crc(&bytes[a + 8..b])
                });
                return Err(if body_intact {
                    self.corrupt(c.seg, start.off, "record length disagrees with its trailer")
                } else {
                    self.corrupt(
                        c.seg,
                        c.off - 4,
                        "record trailer does not match the record before it",
                    )
                });
            }
            let v = self.decode(start, self.verify)?;
            return Ok(Some((self.event(start, &v)?, start)));
        }
    }
}

/// How far ahead of the record being read a forward scan of the log (`$all`, subscriptions)
/// asks the CPU for the log's bytes.
///
/// The hardware prefetcher follows a sequential read only within a 4 KiB page, so a scan of
/// records waits on memory at every page it enters. Asking, at each record, for the line two
/// pages on keeps the next pages coming. Measured: `$all` over 1M 200-byte events in a warm
/// page cache (Xeon, AVX-512), 4 KiB ahead +7%, 8 KiB +12%, 16 and 32 KiB +5%. Compacted
/// segments are left out: finding a record's place in their file is a search of its own. A
/// stream's replay does not ask: over 100,000 contiguous events it gained 2–6%, within the
/// noise, and a stream already in the CPU's caches would pay for the hint at every event.
const READ_AHEAD: u64 = 8192;

/// A hint to the CPU to load the cache line at `p`. It never faults, whatever the address, and
/// changes nothing else.
#[inline(always)]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` only hints the cache; it never faults, even on an invalid address,
    // and reads or writes no memory the program can see. SSE is part of the x86_64 baseline.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The id hash and position of every record of `seg` from its first record up to segment offset
/// `end` (its data end for a sealed segment), checksums verified: what the event-id index needs
/// of a segment it has no table for.
pub fn segment_ids_to(seg: &Segment, end: u64) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    visit_records(seg, end, |v, _, pos| {
        out.push((crate::ids::id_hash(&v.id), pos))
    })?;
    Ok(out)
}

/// Hands every record of `seg` from its first up to segment offset `end` to `f` (the record,
/// the bytes its ranges index, its position), checksums verified.
pub fn visit_records(
    seg: &Segment,
    end: u64,
    mut f: impl FnMut(&super::format::RecordView, &[u8], u64),
) -> Result<()> {
    seg.check_mapped()?;
    let bytes = seg.bytes();
    let end = end.min(seg.data_end()) as usize;
    let mut off = SEGMENT_HEADER_LEN;
    while off < end {
        if let Some((_, gap_end)) = seg.gap_containing(off as u64) {
            off = gap_end as usize;
            continue;
        }
        let at = seg.file_off(off as u64) as usize;
        let v = decode_record(bytes, at, true).map_err(|e| Error::Corrupt {
            file: seg.path.clone(),
            offset: off as u64,
            reason: match e {
                super::format::RecordError::End => "expected a record, found zeros".to_string(),
                super::format::RecordError::Bad(r) => r.to_string(),
            },
        })?;
        f(&v, bytes, seg.base + off as u64);
        off += v.len;
    }
    Ok(())
}

impl LogView {
    /// The segments with a base in `base..end`.
    pub fn segments_in(&self, base: u64, end: u64) -> Vec<Arc<Segment>> {
        self.segs
            .iter()
            .filter(|s| s.base >= base && s.base < end)
            .cloned()
            .collect()
    }
}
