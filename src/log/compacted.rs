//! The compaction table of a compacted segment: which ranges of segment offsets no longer hold
//! records (its **gaps**), and what each removed record was (stream, event type, event number),
//! so that positions never move and the segment's index can be rebuilt from the log exactly as
//! it was before compaction. The remaining records are stored back to back in the file; a
//! record's place in the file is its segment offset less the bytes of the gaps before it.
//!
//! Layout (little-endian; FORMAT.md draws it), at the segment's data end, `table_len` bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `"EVJLGAPS"` |
//! | 8 | 4 | gap count `g` |
//! | 12 | 4 | removed-record count `r` |
//! | 16 | 4 | name count `n` |
//! | 20 | 4 | reserved, zero |
//! | 24 | 8·g | gaps: `start: u32`, `end: u32` (segment offsets), ascending, apart |
//! | 24+8g | 24·r | removed records: `offset: u32`, `stream: u32`, `event_type: u32` (name numbers), `reserved: u32`, `event_number: u64`, ascending by offset, each inside a gap |
//! | 24+8g+24r | … | names: `n` × (`len: u16`, UTF-8 bytes), to the end of the table |

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::format::{u16_at, u32_at, u64_at, RECORD_ALIGN, SEGMENT_HEADER_LEN};

/// First eight bytes of a compaction table.
pub const TABLE_MAGIC: [u8; 8] = *b"EVJLGAPS";
/// Bytes before the gaps.
const TABLE_HEADER_LEN: usize = 24;
/// Bytes per gap.
const GAP_LEN: usize = 8;
/// Bytes per removed record.
const REMOVED_LEN: usize = 24;
/// Longest name (stream or event type) the writer accepts; so no longer one is read.
const MAX_NAME_LEN: usize = crate::append::MAX_METADATA_STREAM_NAME_LEN;

/// Whether a name (stream or event type) `len` bytes long can be in a table: every name the
/// store writes can; a record naming another is damaged, and is not removed into a table that
/// the next open would refuse.
pub fn name_fits(len: usize) -> bool {
    (1..=MAX_NAME_LEN).contains(&len)
}

/// A record compaction removed: enough to keep it in the stream, category and event-type
/// indexes (so that event numbers and entry numbers never change), nothing of its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Its segment offset: its position minus the segment's base.
    pub offset: u32,
    /// Its stream, as a name number.
    pub stream: u32,
    /// Its event type, as a name number.
    pub event_type: u32,
    /// Its number in its stream.
    pub event_number: u64,
}

/// A compacted segment's table, decoded and checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Where the segment's records end, as positions count (before compaction).
    pub data_end: u64,
    /// Where they end in the file, back to back (and the table starts).
    pub table_at: u64,
    /// For gap `i`, the bytes of all gaps before it (one more entry: all of them).
    shift: Vec<u64>,
    /// Byte ranges with no record, ascending, apart (two gaps never touch).
    pub gaps: Vec<(u32, u32)>,
    /// Where to start looking among `gaps` for an offset (see [`GapIndex`]).
    index: GapIndex,
    /// The removed records, ascending by offset.
    pub removed: Vec<Removed>,
    /// The stream names and event types the removed records name.
    pub names: Vec<String>,
}

/// For each window of `2^shift` segment offsets, the first gap that ends past the window's
/// start: a reader walking a compacted segment looks up every record's offset (is it in a gap,
/// and where is it in the file), and a search of all the gaps there, two or three per record,
/// made `$all` over a segment with every other record removed 1.5 to 1.8 times slower than over
/// the same segment before compaction. The windows are about as many as the gaps, so a lookup
/// searches one or two.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct GapIndex {
    shift: u32,
    first: Vec<u32>,
}

/// Smallest window of [`GapIndex`]: a record takes a few dozen bytes at least.
const MIN_WINDOW_SHIFT: u32 = 9;

impl GapIndex {
    fn new(gaps: &[(u32, u32)], data_end: u64) -> GapIndex {
        let per_gap = data_end / (gaps.len() as u64).max(1);
        let shift = (u64::BITS - 1 - per_gap.max(1).leading_zeros()).max(MIN_WINDOW_SHIFT);
        let windows = (data_end >> shift) as usize + 1;
        let mut first = Vec::with_capacity(windows);
        let mut i = 0usize;
        for w in 0..windows as u64 {
            let start = w << shift;
            while i < gaps.len() && u64::from(gaps[i].1) <= start {
                i += 1;
            }
            first.push(i as u32);
        }
        GapIndex { shift, first }
    }
}

impl Compacted {
    /// The number of the first gap that ends past `off` (`gaps.len()` if none does).
    #[inline]
    fn first_gap_after(&self, off: u64) -> usize {
        let w = (off >> self.index.shift) as usize;
        let (lo, hi) = match (self.index.first.get(w), self.index.first.get(w + 1)) {
            (Some(&lo), Some(&hi)) => (lo as usize, (hi as usize + 1).min(self.gaps.len())),
            (Some(&lo), None) => (lo as usize, self.gaps.len()),
            _ => (0, self.gaps.len()),
        };
        let lo = lo.min(hi);
        lo + self.gaps[lo..hi].partition_point(|&(_, end)| u64::from(end) <= off)
    }

    /// The gap that `off` lies in, if any.
    #[inline]
    pub fn gap_containing(&self, off: u64) -> Option<(u64, u64)> {
        let &(start, end) = self.gaps.get(self.first_gap_after(off))?;
        (u64::from(start) <= off).then_some((u64::from(start), u64::from(end)))
    }

    /// Where in the file segment offset `off` (the start or the end of a record still there)
    /// is: the remaining records are stored back to back, so it moved down by the gaps that
    /// end at or before it.
    #[inline]
    pub fn file_off(&self, off: u64) -> u64 {
        off - self.shift[self.first_gap_after(off)]
    }

    /// The removed record at `off`, if one was there.
    pub fn removed_at(&self, off: u64) -> Option<&Removed> {
        self.removed
            .binary_search_by_key(&off, |r| u64::from(r.offset))
            .ok()
            .map(|i| &self.removed[i])
    }

    /// A name of the table.
    pub fn name(&self, n: u32) -> &str {
        self.names.get(n as usize).map_or("", String::as_str)
    }

    /// The table's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let removed_at = TABLE_HEADER_LEN + GAP_LEN * self.gaps.len();
        let names_at = removed_at + REMOVED_LEN * self.removed.len();
        let len = names_at + self.names.iter().map(|n| 2 + n.len()).sum::<usize>();
        // Filled in place, entry by entry: tens of thousands of them per segment, where pushing
        // each field took a twentieth of a compaction's time.
        let mut out = vec![0u8; len];
        out[..8].copy_from_slice(&TABLE_MAGIC);
        out[8..12].copy_from_slice(&(self.gaps.len() as u32).to_le_bytes());
        out[12..16].copy_from_slice(&(self.removed.len() as u32).to_le_bytes());
        out[16..20].copy_from_slice(&(self.names.len() as u32).to_le_bytes());
        let gaps = out[TABLE_HEADER_LEN..removed_at].chunks_exact_mut(GAP_LEN);
        for (b, &(start, end)) in gaps.zip(&self.gaps) {
            b[..4].copy_from_slice(&start.to_le_bytes());
            b[4..].copy_from_slice(&end.to_le_bytes());
        }
        let removed = out[removed_at..names_at].chunks_exact_mut(REMOVED_LEN);
        for (b, r) in removed.zip(&self.removed) {
            b[..4].copy_from_slice(&r.offset.to_le_bytes());
            b[4..8].copy_from_slice(&r.stream.to_le_bytes());
            b[8..12].copy_from_slice(&r.event_type.to_le_bytes());
            // 12..16 reserved, zero.
            b[16..].copy_from_slice(&r.event_number.to_le_bytes());
        }
        let mut at = names_at;
        for n in &self.names {
            out[at..at + 2].copy_from_slice(&(n.len() as u16).to_le_bytes());
            out[at + 2..at + 2 + n.len()].copy_from_slice(n.as_bytes());
            at += 2 + n.len();
        }
        out
    }

    /// Decodes and checks the table of a segment whose records ended at `data_end` before
    /// compaction and end at `table_at` in its file now; the reason if it breaks a rule.
    pub fn decode(b: &[u8], data_end: u64, table_at: u64) -> Result<Compacted, &'static str> {
        if b.len() < TABLE_HEADER_LEN || b[..8] != TABLE_MAGIC {
            return Err("bad compaction table magic");
        }
        if u32_at(b, 20) != 0 {
            return Err("compaction table reserved bytes are not zero");
        }
        let (g, r, n) = (
            u32_at(b, 8) as usize,
            u32_at(b, 12) as usize,
            u32_at(b, 16) as usize,
        );
        let gaps_end = g
            .checked_mul(GAP_LEN)
            .and_then(|x| x.checked_add(TABLE_HEADER_LEN))
            .filter(|&e| e <= b.len())
            .ok_or("compaction table gap count out of range")?;
        let removed_end = r
            .checked_mul(REMOVED_LEN)
            .and_then(|x| x.checked_add(gaps_end))
            .filter(|&e| e <= b.len())
            .ok_or("compaction table record count out of range")?;
        // Each name takes two bytes at least.
        if n > (b.len() - removed_end) / 2 {
            return Err("compaction table name count out of range");
        }
        let mut gaps = Vec::with_capacity(g);
        let mut prev_end = SEGMENT_HEADER_LEN as u64;
        for i in 0..g {
            let at = TABLE_HEADER_LEN + GAP_LEN * i;
            let (start, end) = (u32_at(b, at), u32_at(b, at + 4));
            let aligned = |x: u32| u64::from(x).is_multiple_of(RECORD_ALIGN as u64);
            if !aligned(start)
                || !aligned(end)
                || u64::from(start) < prev_end
                || (i > 0 && u64::from(start) == prev_end)
                || start >= end
                || u64::from(end) > data_end
            {
                return Err("compaction table gaps out of order or out of the segment");
            }
            prev_end = u64::from(end);
            gaps.push((start, end));
        }
        let mut removed = Vec::with_capacity(r);
        let mut gap = 0usize;
        let mut prev: Option<u32> = None;
        for i in 0..r {
            let at = gaps_end + REMOVED_LEN * i;
            let rec = Removed {
                offset: u32_at(b, at),
                stream: u32_at(b, at + 4),
                event_type: u32_at(b, at + 8),
                event_number: u64_at(b, at + 16),
            };
            if u32_at(b, at + 12) != 0 {
                return Err("compaction table reserved bytes are not zero");
            }
            if prev.is_some_and(|p| rec.offset <= p)
                || !u64::from(rec.offset).is_multiple_of(RECORD_ALIGN as u64)
            {
                return Err("compaction table records out of order");
            }
            while gap < gaps.len() && gaps[gap].1 <= rec.offset {
                gap += 1;
            }
            if gap == gaps.len() || rec.offset < gaps[gap].0 {
                return Err("compaction table record outside every gap");
            }
            if rec.stream as usize >= n || rec.event_type as usize >= n {
                return Err("compaction table name number out of range");
            }
            prev = Some(rec.offset);
            removed.push(rec);
        }
        // A gap starts where a removed record was: a gap with none has nothing to stand for.
        let mut k = 0usize;
        for &(start, end) in &gaps {
            while k < removed.len() && removed[k].offset < start {
                k += 1;
            }
            if removed.get(k).is_none_or(|r| r.offset != start) {
                return Err("compaction table gap that starts at no removed record");
            }
            let _ = end;
        }
        if removed.is_empty() != gaps.is_empty() {
            return Err("compaction table with records but no gap");
        }
        let mut names = Vec::with_capacity(n);
        let mut at = removed_end;
        for _ in 0..n {
            if at + 2 > b.len() {
                return Err("compaction table names cut short");
            }
            let len = u16_at(b, at) as usize;
            let bytes = b
                .get(at + 2..at + 2 + len)
                .ok_or("compaction table names cut short")?;
            if !name_fits(len) {
                return Err("compaction table name length out of range");
            }
            let name = std::str::from_utf8(bytes).map_err(|_| "compaction table name not UTF-8")?;
            names.push(name.to_string());
            at += 2 + len;
        }
        if at != b.len() {
            return Err("compaction table has bytes past its names");
        }
        let mut shift = Vec::with_capacity(gaps.len() + 1);
        let mut total = 0u64;
        shift.push(0);
        for &(start, end) in &gaps {
            total += u64::from(end - start);
            shift.push(total);
        }
        if data_end - total != table_at {
            return Err("compaction table gaps do not account for the records removed");
        }
        Ok(Compacted {
            data_end,
            table_at,
            shift,
            index: GapIndex::new(&gaps, data_end),
            gaps,
            removed,
            names,
        })
    }
}

/// Builds a table: removed records added in offset order, merged into gaps.
#[derive(Default)]
pub struct TableBuilder {
    table: Compacted,
    numbers: HashMap<String, u32, BuildHasherDefault<NameHasher>>,
    /// The number given last to a stream name and to an event type: most removed records have
    /// the event type of the one before, and many its stream.
    last: [u32; 2],
}

/// A multiply-rotate hash, a word at a time, for the name numbers of a table being built: two
/// look-ups per removed record, where the default hasher (SipHash) took a sixth of a
/// compaction's time. Its keys are names from one segment of the store itself, at most a few
/// per record.
#[derive(Default, Clone, Copy)]
pub struct NameHasher(u64);

impl Hasher for NameHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().unwrap_or_default());
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            self.0 = (self.0.rotate_left(5) ^ short_word(rest)).wrapping_mul(K);
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // A multiplication carries only upwards, and names often share their first bytes: fold
        // the high half of a wide product into the low bits, which pick the bucket.
        let m = u128::from(self.0) * 0x2D35_8DCC_AA6C_78A5;
        (m as u64) ^ ((m >> 64) as u64)
    }
}

/// The 1 to 7 bytes of `b` as one word, from two loads that overlap when there are fewer than
/// eight, rather than a copy of a variable length (a call into the C library that took most of
/// a name's hashing, and hashing a fifth of a compaction's time). Names of different lengths can
/// give the same word (the length's bits overlap a 7-byte name's last byte): the map compares
/// the names themselves, so that costs a comparison, never a wrong number.
#[inline]
fn short_word(b: &[u8]) -> u64 {
    let n = b.len();
    let (lo, hi) = if n >= 4 {
        (
            u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            u64::from(u32::from_le_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]])),
        )
    } else {
        let (a, m, z) = (b[0], b[n / 2], b[n - 1]);
        (u64::from(a) | u64::from(m) << 8 | u64::from(z) << 16, 0)
    };
    lo | hi << 32 | (n as u64) << 61
}

impl TableBuilder {
    /// Adds the removed record `len` bytes long at `offset` (after every one added so far).
    pub fn remove(&mut self, offset: u32, len: u32, stream: &str, event_type: &str, number: u64) {
        let end = offset + len;
        match self.table.gaps.last_mut() {
            Some(g) if g.1 == offset => g.1 = end,
            _ => self.table.gaps.push((offset, end)),
        }
        let stream = self.name(stream, 0);
        let event_type = self.name(event_type, 1);
        self.table.removed.push(Removed {
            offset,
            stream,
            event_type,
            event_number: number,
        });
    }

    /// Adds a record removed earlier (from the old table), spanning `offset..end` of a gap.
    pub fn carry(&mut self, offset: u32, end: u32, old: &Compacted, r: &Removed) {
        let (stream, event_type) = (old.name(r.stream), old.name(r.event_type));
        self.remove(offset, end - offset, stream, event_type, r.event_number);
    }

    fn name(&mut self, name: &str, kind: usize) -> u32 {
        let last = self.last[kind];
        if self
            .table
            .names
            .get(last as usize)
            .is_some_and(|n| n == name)
        {
            return last;
        }
        let n = match self.numbers.get(name) {
            Some(&n) => n,
            None => {
                let n = self.table.names.len() as u32;
                self.table.names.push(name.to_string());
                self.numbers.insert(name.to_string(), n);
                n
            }
        };
        self.last[kind] = n;
        n
    }

    /// The table, for a segment whose records ended at `data_end`.
    pub fn finish(mut self, data_end: u64) -> Compacted {
        let removed: u64 = self.table.gaps.iter().map(|&(a, b)| u64::from(b - a)).sum();
        self.table.data_end = data_end;
        self.table.table_at = data_end - removed;
        self.table.shift = std::iter::once(0)
            .chain(self.table.gaps.iter().scan(0u64, |t, &(a, b)| {
                *t += u64::from(b - a);
                Some(*t)
            }))
            .collect();
        self.table.index = GapIndex::new(&self.table.gaps, data_end);
        self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_through_the_gap_index_agree_with_a_search_of_every_gap() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        // Records of 8 to 2,048 bytes, each removed with odds from none to all, and clustered
        // layouts (a removed run in one part of the segment only).
        for case in 0..60u64 {
            let odds = case % 6;
            let mut b = TableBuilder::default();
            let mut off = SEGMENT_HEADER_LEN as u32;
            let records = 1 + next(3000);
            for k in 0..records {
                let len = 8 * (1 + next(if case % 2 == 0 { 34 } else { 256 })) as u32;
                let clustered = case % 5 == 0 && k > records / 3;
                if !clustered && next(5) < odds {
                    b.remove(off, len, "s", "t", k);
                }
                off += len;
            }
            let t = b.finish(u64::from(off));
            let naive_gap = |o: u64| {
                t.gaps
                    .iter()
                    .find(|&&(a, e)| u64::from(a) <= o && o < u64::from(e))
                    .map(|&(a, e)| (u64::from(a), u64::from(e)))
            };
            let naive_file = |o: u64| {
                o - t
                    .gaps
                    .iter()
                    .filter(|&&(_, e)| u64::from(e) <= o)
                    .map(|&(a, e)| u64::from(e - a))
                    .sum::<u64>()
            };
            for o in (0..u64::from(off) + 4096).step_by(8) {
                assert_eq!(t.gap_containing(o), naive_gap(o), "case {case} offset {o}");
                assert_eq!(t.file_off(o), naive_file(o), "case {case} offset {o}");
            }
            let back = Compacted::decode(&t.encode(), t.data_end, t.table_at);
            assert_eq!(back.as_ref(), Ok(&t), "case {case}");
        }
    }

    #[test]
    fn table_round_trips_and_rejects_damage() {
        let mut b = TableBuilder::default();
        b.remove(64, 96, "acct-1", "Opened", 0);
        b.remove(160, 88, "acct-1", "Deposited", 1);
        b.remove(400, 88, "audit", "Logged", 0);
        let t = b.finish(600);
        assert_eq!(t.gaps, vec![(64, 248), (400, 488)]);
        assert_eq!(t.table_at, 600 - 184 - 88);
        assert_eq!(t.file_off(248), 64);
        assert_eq!(
            t.file_off(400),
            400 - 184,
            "the end of the record before a gap"
        );
        assert_eq!(t.file_off(488), 400 - 184);
        let bytes = t.encode();
        assert_eq!(Compacted::decode(&bytes, 600, 328), Ok(t.clone()));
        assert_eq!(t.gap_containing(64), Some((64, 248)));
        assert_eq!(t.gap_containing(247), Some((64, 248)));
        assert_eq!(t.gap_containing(248), None);
        assert_eq!(t.removed_at(160).map(|r| r.event_number), Some(1));
        assert!(
            Compacted::decode(&bytes, 480, 208).is_err(),
            "gap past the data end"
        );
        assert!(
            Compacted::decode(&bytes, 600, 336).is_err(),
            "gaps and file disagree"
        );
        for i in 0..bytes.len() {
            for bit in [1u8, 0x80] {
                let mut d = bytes.clone();
                d[i] ^= bit;
                // Any result but a panic; most flips are refused, a flipped name byte may not be.
                let _ = Compacted::decode(&d, 600, 328);
            }
        }
        for cut in 0..bytes.len() {
            assert!(
                Compacted::decode(&bytes[..cut], 600, 328).is_err(),
                "cut at {cut}"
            );
        }
    }
}
