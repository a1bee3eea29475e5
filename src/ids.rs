//! The event-id index: which positions hold an event with a given id, so that an append with
//! `Any` or `StreamExists` recognises a retry without reading the stream.
//!
//! Ids are hashed to 64 bits ([`id_hash`]). The active segment's ids are in memory
//! ([`ActiveIds`], an open-addressing multimap kept by the writer). When a segment is sealed its
//! ids become an immutable **id table** covering the segment's position range: first in memory,
//! then written by a background worker to an `.ids` file (layout in FORMAT.md, "Id tables"), which
//! is memory-mapped and read in place. The worker merges four adjacent tables of one level into
//! one table of the next level, so a lookup probes a number of tables that grows with the
//! logarithm of the log's size, not with its number of segments.
//!
//! Tables are a cache of the log: a hit is only a candidate, always checked against the record
//! at its position; a table that is missing, damaged or stale is ignored, and the sealed segments
//! it would cover are searched through the stream index instead until the worker has rebuilt it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::log::checksum::CheckedBlocks;
use crate::log::segment::Segment;
use crate::types::EventId;

/// First eight bytes of an id table file.
pub const IDS_MAGIC: [u8; 8] = *b"EVJLIDS\0";
/// Layout version of id table files this build writes and reads. Layout 2 added the key
/// entries (see [`crate::index::Hints`]); a table of layout 1 lacks them and is rebuilt.
pub const IDS_LAYOUT: u32 = 2;
/// Length of an id table file's header.
pub const IDS_HEADER_LEN: usize = 64;
/// Bytes of one entry: the id's hash and the event's position, both little-endian `u64`.
pub const ENTRY_LEN: usize = 16;
/// The body (entries, then directory) is checksummed in blocks of this many bytes, each verified
/// the first time a lookup touches it.
pub const BLOCK_LEN: usize = 512;
/// Average entries per directory bucket the writer aims for: a lookup scans one bucket.
const BUCKET_TARGET: u64 = 8;
/// Largest directory: `2^MAX_DIR_BITS` buckets.
const MAX_DIR_BITS: u32 = 32;
/// How many adjacent tables of one level are merged into one table of the next level.
pub(crate) const MERGE_FAN_IN: usize = 4;
/// Highest level a table can reach: four tables per level from single segments, far past any
/// log (a file claiming more is not one this code wrote).
const MAX_LEVEL: u32 = 64;

/// File name of the id table whose range starts at `base`.
pub fn ids_file_name(base: u64) -> String {
    format!("{base:020}.ids")
}

/// The base an id table file name stands for.
pub fn parse_ids_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".ids")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The 64-bit hash of an event id used by the index; never 0 (0 marks an empty slot). Written to
/// disk, so it must never change: the two halves of the id, little-endian, mixed by the
/// SplitMix64 finaliser.
pub fn id_hash(id: &EventId) -> u64 {
    let b = id.as_bytes();
    let lo = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    let hi = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
    let mut z = lo ^ hi.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    z.max(1)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes(s.try_into().unwrap_or([0; 4])))
}

// ---- The active segment's ids -------------------------------------------------------------------

/// The ids of the active segment's events: an open-addressing multimap from id hash to position,
/// kept by the writer (one insert per committed event). `complete` is false after opening until
/// the events the segment held before are loaded, which happens on the first lookup or seal.
pub(crate) struct ActiveIds {
    slots: Vec<(u64, u64)>,
    len: usize,
    /// Whether every event of the active segment is in the map.
    pub(crate) complete: bool,
}

impl ActiveIds {
    pub(crate) fn new(complete: bool) -> ActiveIds {
        ActiveIds {
            slots: Vec::new(),
            len: 0,
            complete,
        }
    }

    /// Adds the ids of `seg`'s records before segment offset `end` (what the segment held when
    /// the store opened), after which the map is complete.
    pub(crate) fn load(&mut self, seg: &Segment, end: u64) -> Result<()> {
        for (hash, pos) in crate::log::reader::segment_ids_to(seg, end)? {
            self.insert(hash, pos);
        }
        self.complete = true;
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn insert(&mut self, hash: u64, pos: u64) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        self.put(hash, pos);
    }

    /// [`insert`](Self::insert) for the key entries added just before a seal: the map is full
    /// up to 7/8 before it grows rather than half. It is searched as it is only until the
    /// worker writes its table, and growing it there doubled a map of the segment's ids (tens of
    /// megabytes, page-faulted in) that the next segment's map is then sized after: a third of
    /// a seal's time for a segment of a few hundred thousand one-event streams.
    pub(crate) fn insert_dense(&mut self, hash: u64, pos: u64) {
        if (self.len + 1) * 8 > self.slots.len() * 7 {
            self.grow();
        }
        self.put(hash, pos);
    }

    /// Adds the entry to a map with room for it.
    fn put(&mut self, hash: u64, pos: u64) {
        let mask = self.slots.len() - 1;
        let mut i = (hash as usize) & mask;
        while self.slots[i].0 != 0 {
            if self.slots[i] == (hash, pos) {
                return;
            }
            i = (i + 1) & mask;
        }
        self.slots[i] = (hash, pos);
        self.len += 1;
    }

    fn grow(&mut self) {
        let cap = (self.slots.len() * 2).max(1024);
        let old = std::mem::replace(&mut self.slots, crate::slots::zeroed(cap, (0, 0)));
        self.len = 0;
        for (h, p) in old {
            if h != 0 {
                self.insert(h, p);
            }
        }
    }

    /// How many slots the map has.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Adds the positions whose id hash is `hash` to `out`.
    pub(crate) fn candidates(&self, hash: u64, out: &mut Vec<u64>) {
        if self.slots.is_empty() {
            return;
        }
        let mask = self.slots.len() - 1;
        let mut i = (hash as usize) & mask;
        while self.slots[i].0 != 0 {
            if self.slots[i].0 == hash {
                out.push(self.slots[i].1);
            }
            i = (i + 1) & mask;
        }
    }

    /// Hands over the map at a seal of the segment ending at `end`: the map itself becomes the
    /// sealed segment's table (searched as it is until the worker sorts and writes it), and
    /// `self` starts again, sized as the old one, with the entries at or past `end` (those of
    /// the group that rolled to the next segment). One pass over the slots, no sort: the pause
    /// at a seal stays short. `fresh`, a zeroed table of the old one's size made beforehand
    /// ([`IdTables::take_spare`]), spares the seal zeroing one. Returns the old map and how many
    /// of its entries lie below `end`.
    pub(crate) fn seal(&mut self, end: u64, fresh: Option<Vec<(u64, u64)>>) -> (ActiveIds, u64) {
        let capacity = self.slots.len();
        let slots = fresh
            .filter(|t| t.len() == capacity)
            .unwrap_or_else(|| crate::slots::zeroed(capacity, (0, 0)));
        let old = std::mem::replace(
            self,
            ActiveIds {
                slots,
                len: 0,
                complete: true,
            },
        );
        let mut below = 0;
        for &(h, p) in &old.slots {
            if h == 0 {
                continue;
            }
            if p < end {
                below += 1;
            } else {
                self.insert(h, p);
            }
        }
        (old, below)
    }

    /// The entries in `base..end`, sorted.
    fn sorted_in(&self, base: u64, end: u64) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = self
            .slots
            .iter()
            .copied()
            .filter(|&(h, p)| h != 0 && p >= base && p < end)
            .collect();
        v.sort_unstable();
        v
    }
}

// ---- Tables -------------------------------------------------------------------------------------

/// An immutable id table covering the sealed segments in `base..end`.
pub(crate) struct Table {
    pub(crate) base: u64,
    pub(crate) end: u64,
    /// The last covered segment's data end when the table was made: a table of a segment whose
    /// content has changed since (cut by a salvage, then written again) is stale.
    pub(crate) last_end: u64,
    pub(crate) level: u32,
    data: Data,
    /// Set when a checksum failed: the table is then ignored (its range searched without it).
    broken: AtomicBool,
}

enum Data {
    /// The writer's map of a segment just sealed (entries outside the table's range ignored),
    /// with the number of entries in range, before the worker has sorted and written it.
    Map(ActiveIds, u64),
    File(MappedTable),
}

/// An id table file, mapped.
struct MappedTable {
    path: PathBuf,
    map: memmap2::Mmap,
    dir_bits: u32,
    count: u64,
    /// The body's blocks, each checked against its checksum when a lookup first reads it.
    blocks: CheckedBlocks,
    /// The file's stamp when it was opened (tables never change once renamed into place).
    stamp: crate::disk::Stamp,
}

impl Table {
    /// The table of a segment just sealed: the writer's map of its ids.
    pub(crate) fn from_map(seg: &Segment, (map, count): (ActiveIds, u64)) -> Table {
        Table {
            base: seg.base,
            end: seg.end_base(),
            last_end: seg.data_end(),
            level: 0,
            data: Data::Map(map, count),
            broken: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    pub(crate) fn is_written(&self) -> bool {
        matches!(self.data, Data::File(_))
    }

    /// The stamp of a written table's file.
    pub(crate) fn stamp(&self) -> Option<crate::disk::Stamp> {
        match &self.data {
            Data::File(m) => Some(m.stamp),
            Data::Map(..) => None,
        }
    }

    /// The file, for a written table.
    pub(crate) fn path(&self) -> Option<&Path> {
        match &self.data {
            Data::File(m) => Some(&m.path),
            Data::Map(..) => None,
        }
    }

    /// Number of entries.
    pub(crate) fn count(&self) -> u64 {
        match &self.data {
            Data::Map(_, count) => *count,
            Data::File(m) => m.count,
        }
    }

    /// Adds the positions whose id hash is `hash` to `out`. A checksum failure marks the table
    /// broken and is an error: the caller then searches the range without it.
    pub(crate) fn candidates(&self, hash: u64, out: &mut Vec<u64>) -> Result<()> {
        match &self.data {
            Data::Map(map, _) => {
                let from = out.len();
                map.candidates(hash, out);
                let mut k = from;
                for i in from..out.len() {
                    if out[i] >= self.base && out[i] < self.end {
                        out[k] = out[i];
                        k += 1;
                    }
                }
                out.truncate(k);
                Ok(())
            }
            Data::File(m) => m.candidates(hash, out).inspect_err(|_| {
                self.broken.store(true, Ordering::Relaxed);
            }),
        }
    }

    /// Verifies every checksum of the table, so that its entries can be read without checks.
    fn verify_all(&self) -> Result<()> {
        match &self.data {
            Data::Map(..) => Ok(()),
            Data::File(m) => m.verify(0, m.body_len()).inspect_err(|_| {
                self.broken.store(true, Ordering::Relaxed);
            }),
        }
    }

    /// Every entry in (hash, position) order; for a file, after [`verify_all`](Self::verify_all).
    fn iter(&self) -> Box<dyn Iterator<Item = (u64, u64)> + '_> {
        match &self.data {
            Data::Map(map, _) => Box::new(map.sorted_in(self.base, self.end).into_iter()),
            Data::File(m) => {
                let body = &m.map[IDS_HEADER_LEN..];
                Box::new((0..m.count as usize).map(move |i| {
                    let at = i * ENTRY_LEN;
                    (u64_at(body, at), u64_at(body, at + 8))
                }))
            }
        }
    }

    /// A sample of a written table's entries (at most `n + 1`, spread over it), without
    /// checksum checks: for the open-time comparison with the log.
    pub(crate) fn sample(&self, n: usize) -> Vec<(u64, u64)> {
        let Data::File(m) = &self.data else {
            return Vec::new();
        };
        let count = m.count as usize;
        if count == 0 {
            return Vec::new();
        }
        let step = count.div_ceil(n.max(1)).max(1);
        let body = &m.map[IDS_HEADER_LEN..];
        let at = |i: usize| (u64_at(body, i * ENTRY_LEN), u64_at(body, i * ENTRY_LEN + 8));
        let mut out: Vec<(u64, u64)> = (0..count).step_by(step).map(at).collect();
        out.push(at(count - 1));
        out
    }
}

fn dir_bits_for(count: u64) -> u32 {
    let buckets = count.div_ceil(BUCKET_TARGET).max(1);
    (64 - (buckets - 1).leading_zeros()).min(MAX_DIR_BITS)
}

fn bucket_of(hash: u64, bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        (hash >> (64 - bits)) as usize
    }
}

impl MappedTable {
    fn body_len(&self) -> usize {
        self.count as usize * ENTRY_LEN + 8 * ((1usize << self.dir_bits) + 1)
    }

    /// Verifies the checksums of the body blocks holding body bytes `from..to`.
    fn verify(&self, from: usize, to: usize) -> Result<()> {
        self.blocks
            .check(&self.map, IDS_HEADER_LEN + from, IDS_HEADER_LEN + to)
            .map_err(|at| Error::Corrupt {
                file: self.path.clone(),
                offset: at as u64,
                reason: format!(
                    "id table block {} fails its checksum",
                    at.saturating_sub(IDS_HEADER_LEN) / BLOCK_LEN
                ),
            })
    }

    /// Reads, unchecked, what a lookup of `hash` reads first: at `stage` 0 the bucket's
    /// directory entry and its block's checksum, at 1 the bucket's first entry and its block's
    /// checksum. A lookup calls it for every table, stage by stage, before searching any: the
    /// tables' memory accesses are independent, so the processor overlaps them, where searching
    /// one table after another waits for each miss in turn. Returns what it read, for
    /// `black_box`, so that the reads are kept.
    fn warm(&self, hash: u64, stage: u8) -> u64 {
        let body_len = self.body_len();
        let entries_len = self.count as usize * ENTRY_LEN;
        let dir_at = entries_len + 8 * bucket_of(hash, self.dir_bits);
        let at = if stage == 0 {
            dir_at
        } else {
            let lo = self
                .map
                .get(IDS_HEADER_LEN + dir_at..IDS_HEADER_LEN + dir_at + 8);
            lo.map_or(0, |b| u64_at(b, 0) as usize)
                .saturating_mul(ENTRY_LEN)
                .min(body_len.saturating_sub(1))
        };
        let crc_at = IDS_HEADER_LEN + body_len + 4 * (at / BLOCK_LEN);
        let word = |i: usize| self.map.get(i..i + 8).map_or(0, |b| u64_at(b, 0));
        word(IDS_HEADER_LEN + at) ^ u64::from(self.map.get(crc_at).copied().unwrap_or(0))
    }

    fn candidates(&self, hash: u64, out: &mut Vec<u64>) -> Result<()> {
        let entries_len = self.count as usize * ENTRY_LEN;
        let b = bucket_of(hash, self.dir_bits);
        let dir_at = entries_len + 8 * b;
        self.verify(dir_at, dir_at + 16)?;
        let body = &self.map[IDS_HEADER_LEN..];
        let (lo, hi) = (u64_at(body, dir_at), u64_at(body, dir_at + 8));
        if lo > hi || hi > self.count {
            return Err(Error::Corrupt {
                file: self.path.clone(),
                offset: (IDS_HEADER_LEN + dir_at) as u64,
                reason: "id table directory out of order".into(),
            });
        }
        let (lo, hi) = (lo as usize, hi as usize);
        self.verify(lo * ENTRY_LEN, hi * ENTRY_LEN)?;
        for i in lo..hi {
            let h = u64_at(body, i * ENTRY_LEN);
            if h == hash {
                out.push(u64_at(body, i * ENTRY_LEN + 8));
            } else if h > hash {
                break;
            }
        }
        Ok(())
    }
}

// ---- The file format ----------------------------------------------------------------------------

/// Writes a table file's body, computing each block's checksum as it goes, in writes of
/// [`BODY_WRITE`] bytes (a table of a million entries is 32,768 blocks: one system call each
/// would cost the writer, and the appenders sharing its cores, more than the copy).
struct BodyWriter<'a> {
    disk: &'a Disk,
    file: &'a std::fs::File,
    path: &'a Path,
    /// The block being filled.
    block: Vec<u8>,
    /// Whole blocks not written yet.
    out: Vec<u8>,
    /// Where `out` goes in the file.
    at: u64,
    crcs: Vec<u32>,
}

/// Bytes of whole blocks gathered before they are written.
const BODY_WRITE: usize = 128 * BLOCK_LEN;

impl BodyWriter<'_> {
    fn push(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let n = (BLOCK_LEN - self.block.len()).min(bytes.len());
            self.block.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.block.len() == BLOCK_LEN {
                self.end_block();
                if self.out.len() >= BODY_WRITE {
                    self.write_out()?;
                }
            }
        }
        Ok(())
    }

    /// Closes the block being filled (the last one may be short).
    fn end_block(&mut self) {
        self.crcs.push(crc32fast::hash(&self.block));
        self.out.extend_from_slice(&self.block);
        self.block.clear();
    }

    fn write_out(&mut self) -> Result<()> {
        self.disk
            .write_all_at(self.file, self.path, &self.out, self.at)?;
        self.at += self.out.len() as u64;
        self.out.clear();
        Ok(())
    }

    /// Writes everything pushed; `at` is then where the body ends.
    fn flush(&mut self) -> Result<()> {
        if !self.block.is_empty() {
            self.end_block();
        }
        if !self.out.is_empty() {
            self.write_out()?;
        }
        Ok(())
    }
}

/// What a table file says about itself.
struct TableHead {
    base: u64,
    end: u64,
    /// Data end (segment offset) of the last covered segment when the table was made.
    last_end: u64,
    level: u32,
    count: u64,
}

/// Writes an id table of `head.count` entries, given in (hash, position) order, to `path`
/// (through a temporary file and a rename), streaming: entries, then the directory, then the
/// block checksums, then the header.
fn write_table(
    disk: &Disk,
    path: &Path,
    head: &TableHead,
    entries: impl Iterator<Item = (u64, u64)>,
    sync: bool,
) -> Result<()> {
    let tmp = path.with_extension("ids.tmp");
    let file = disk.create(&tmp)?;
    let result = write_body(disk, &file, &tmp, head, entries).and_then(|()| {
        if sync {
            disk.sync_data(&file, &tmp)?;
        }
        Ok(())
    });
    drop(file);
    if let Err(e) = result {
        let _ = disk.remove(&tmp);
        return Err(e);
    }
    disk.rename(&tmp, path)
}

fn write_body(
    disk: &Disk,
    file: &std::fs::File,
    tmp: &Path,
    head: &TableHead,
    entries: impl Iterator<Item = (u64, u64)>,
) -> Result<()> {
    let bits = dir_bits_for(head.count);
    let mut dir = vec![0u64; (1usize << bits) + 1];
    let mut w = BodyWriter {
        disk,
        file,
        path: tmp,
        block: Vec::with_capacity(BLOCK_LEN),
        out: Vec::with_capacity(BODY_WRITE + BLOCK_LEN),
        at: IDS_HEADER_LEN as u64,
        crcs: Vec::new(),
    };
    let mut written = 0u64;
    let mut last = (0u64, 0u64);
    for (h, p) in entries {
        if written == head.count || (h, p) < last || h == 0 {
            return Err(Error::InvalidInput(
                "internal: id table entries out of order".into(),
            ));
        }
        last = (h, p);
        dir[bucket_of(h, bits) + 1] += 1;
        let mut e = [0u8; ENTRY_LEN];
        e[..8].copy_from_slice(&h.to_le_bytes());
        e[8..].copy_from_slice(&p.to_le_bytes());
        w.push(&e)?;
        written += 1;
    }
    if written != head.count {
        return Err(Error::InvalidInput(
            "internal: id table entry count changed".into(),
        ));
    }
    // Bucket counts to bucket starts.
    for i in 1..dir.len() {
        dir[i] += dir[i - 1];
    }
    for d in &dir {
        w.push(&d.to_le_bytes())?;
    }
    w.flush()?;
    let mut tail = Vec::with_capacity(w.crcs.len() * 4);
    for c in &w.crcs {
        tail.extend_from_slice(&c.to_le_bytes());
    }
    disk.write_all_at(file, tmp, &tail, w.at)?;
    let header = encode_header(head, bits, crc32fast::hash(&tail));
    disk.write_all_at(file, tmp, &header, 0)
}

/// Merges sorted entry lists into one sorted sequence.
fn merge_sorted(
    lists: Vec<Box<dyn Iterator<Item = (u64, u64)> + '_>>,
) -> impl Iterator<Item = (u64, u64)> + '_ {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut lists = lists;
    let mut heap = BinaryHeap::new();
    for (i, l) in lists.iter_mut().enumerate() {
        if let Some(e) = l.next() {
            heap.push(Reverse((e, i)));
        }
    }
    std::iter::from_fn(move || {
        let Reverse((e, i)) = heap.pop()?;
        if let Some(next) = lists[i].next() {
            heap.push(Reverse((next, i)));
        }
        Some(e)
    })
}

fn encode_header(head: &TableHead, bits: u32, crcs_crc: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(IDS_HEADER_LEN);
    h.extend_from_slice(&IDS_MAGIC);
    h.extend_from_slice(&IDS_LAYOUT.to_le_bytes());
    h.extend_from_slice(&bits.to_le_bytes());
    h.extend_from_slice(&head.base.to_le_bytes());
    h.extend_from_slice(&head.end.to_le_bytes());
    h.extend_from_slice(&head.count.to_le_bytes());
    h.extend_from_slice(&head.level.to_le_bytes());
    h.extend_from_slice(&crcs_crc.to_le_bytes());
    h.extend_from_slice(&head.last_end.to_le_bytes());
    h.resize(60, 0);
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// Checks an id table file whole, for [`crate::verify`]: its header, length and every block
/// checksum. `Ok(None)` for a file of another layout (stale: rebuilt, not damage), else the
/// number of entries.
pub(crate) fn check_file(disk: &Disk, path: &Path) -> Result<Option<u64>> {
    if let Some(table) = open_table(disk, path) {
        table.verify_all()?;
        return Ok(Some(table.count()));
    }
    let head = disk.read_whole(path)?;
    if head.len() >= 12 && head[..8] == IDS_MAGIC && u32_at(&head, 8) != IDS_LAYOUT {
        return Ok(None);
    }
    Err(Error::Corrupt {
        file: path.to_path_buf(),
        offset: 0,
        reason: "id table header, length or checksum array does not check".into(),
    })
}

/// Opens and checks an id table file: header, length, and the checksum of the block checksums
/// (the blocks themselves are verified when first read). `None` for anything else.
fn open_table(disk: &Disk, path: &Path) -> Option<Table> {
    open_table_vouched(disk, path, &|_, _| false)
}

/// [`open_table`], where `vouched(base, stamp)` says whether the manifest of a clean close vouches
/// for the file: its block checksum array is then not checked against its checksum (reading it
/// whole, 1/128 of the table, at every open); each block is still checked when first read.
fn open_table_vouched(
    disk: &Disk,
    path: &Path,
    vouched: &dyn Fn(u64, crate::disk::Stamp) -> bool,
) -> Option<Table> {
    let file = disk.open(path, false).ok()?;
    let meta = file.metadata().ok()?;
    let len = meta.len();
    if len < IDS_HEADER_LEN as u64 {
        return None;
    }
    // SAFETY: id table files are written under a temporary name and renamed into place, never
    // modified in place; the directory lock keeps other eventjournal openers out. A file replaced
    // or removed later keeps its old inode mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let h = &map[..IDS_HEADER_LEN];
    if h[..8] != IDS_MAGIC
        || u32_at(h, 8) != IDS_LAYOUT
        || crc32fast::hash(&h[..60]) != u32_at(h, 60)
        || h[56..60].iter().any(|&b| b != 0)
    {
        return None;
    }
    let bits = u32_at(h, 12);
    let (base, end, count, level) = (u64_at(h, 16), u64_at(h, 24), u64_at(h, 32), u32_at(h, 40));
    let last_end = u64_at(h, 48);
    if bits > MAX_DIR_BITS || bits != dir_bits_for(count) || end <= base || level > MAX_LEVEL {
        return None;
    }
    let body_len = count
        .checked_mul(ENTRY_LEN as u64)?
        .checked_add(8 * ((1u64 << bits) + 1))?;
    let blocks = body_len.div_ceil(BLOCK_LEN as u64);
    let want = (IDS_HEADER_LEN as u64)
        .checked_add(body_len)?
        .checked_add(blocks.checked_mul(4)?)?;
    if len != want {
        return None;
    }
    let crcs_at = IDS_HEADER_LEN + body_len as usize;
    let stamp = crate::disk::Stamp::of(&meta);
    if !vouched(base, stamp) && crc32fast::hash(&map[crcs_at..]) != u32_at(h, 44) {
        return None;
    }
    let body_end = IDS_HEADER_LEN + body_len as usize;
    let blocks = CheckedBlocks::new(IDS_HEADER_LEN, body_end, crcs_at, BLOCK_LEN);
    Some(Table {
        base,
        end,
        last_end,
        level,
        data: Data::File(MappedTable {
            path: path.to_path_buf(),
            map,
            dir_bits: bits,
            count,
            blocks,
            stamp,
        }),
        broken: AtomicBool::new(false),
    })
}

/// The tables also hold, for each index key (stream name, category key, event type key) with
/// events in a segment, the key's [`name_hash`](crate::index::persist::name_hash) and the
/// position of its last event there: the stream index finds which segments hold a key through
/// them.
/// The tables of a moment, as hints for the stream index (see [`crate::index::Hints`]).
pub(crate) struct KeyHints<'a> {
    owner: &'a IdTables,
    sets: Sets,
}

impl IdTables {
    /// The tables as they are now, as hints for the stream index.
    pub(crate) fn key_hints(&self) -> KeyHints<'_> {
        KeyHints {
            owner: self,
            sets: self.snapshot(),
        }
    }
}

impl crate::index::HintSource for IdTables {
    fn hints(&self) -> Box<dyn crate::index::Hints + '_> {
        Box::new(self.key_hints())
    }
}

impl crate::index::Hints for KeyHints<'_> {
    fn positions(&self, hash: u64, out: &mut Vec<u64>) -> Result<()> {
        for stage in 0..2 {
            for t in self.sets.tables.iter() {
                if let Data::File(m) = &t.data {
                    std::hint::black_box(m.warm(hash, stage));
                }
            }
        }
        for t in self.sets.tables.iter().filter(|t| !t.is_broken()) {
            if let Err(e) = t.candidates(hash, out) {
                // Rebuilt by the worker from the log.
                self.owner.drop_broken(t);
                return Err(e);
            }
        }
        Ok(())
    }

    fn covers(&self, base: u64) -> bool {
        let tables = &self.sets.tables;
        let i = tables.partition_point(|t| t.base <= base);
        i.checked_sub(1)
            .and_then(|i| tables.get(i))
            .is_some_and(|t| base < t.end && !t.is_broken())
    }
}

// ---- The set of tables, and the worker that writes and merges them ------------------------------

/// What lookups search besides the active segment: tables by base, and the sealed segments no
/// table covers. Changed as one, so that a lookup never sees a segment in neither.
#[derive(Clone, Default)]
pub(crate) struct Sets {
    pub(crate) tables: Arc<Vec<Arc<Table>>>,
    pub(crate) uncovered: Arc<Vec<Arc<Segment>>>,
}

/// The id tables of a store's sealed segments, and the background worker that writes new ones
/// to files and merges them.
pub(crate) struct IdTables {
    dir: PathBuf,
    disk: Disk,
    sync: bool,
    sets: Mutex<Sets>,
    /// Every sealed segment, by base: what a dropped table's range is rebuilt from.
    sealed: Mutex<Vec<Arc<Segment>>>,
    wake: Condvar,
    stop: Mutex<bool>,
    /// Set with `stop`, read without a lock inside long writes, which it cuts short.
    stopping: AtomicBool,
    /// Whether maintenance runs inline (at each seal) rather than on the worker thread, for tests
    /// that need every run to do the same file operations in the same order.
    inline: bool,
    /// The slot table the active segment's map starts again with at the next seal, zeroed by
    /// the worker beforehand (see [`IdTables::take_spare`]).
    spare: Mutex<Spare>,
}

/// A zeroed slot table kept ready for the next seal, and the size the last seal asked for.
#[derive(Default)]
struct Spare {
    wanted: usize,
    ready: Option<Vec<(u64, u64)>>,
}

/// Reads the ids of a sealed segment's records: given by the log layer.
pub(crate) type SegmentIds = fn(&Segment) -> Result<Vec<(u64, u64)>>;

impl IdTables {
    /// Loads the valid id table files of `dir` covering ranges of `sealed` (segments by base,
    /// oldest first, the active one excluded); removes the others. Returns the set, and the
    /// sealed segments no table covers.
    pub(crate) fn open(
        dir: &Path,
        disk: &Disk,
        sync: bool,
        inline: bool,
        sealed: &[Arc<Segment>],
        vouched: &dyn Fn(u64, crate::disk::Stamp) -> bool,
    ) -> Result<IdTables> {
        let starts: BTreeMap<u64, u64> = sealed.iter().map(|s| (s.base, s.end_base())).collect();
        // Each sealed segment's end, with its data end.
        let ends: std::collections::HashMap<u64, u64> = sealed
            .iter()
            .map(|s| (s.end_base(), s.data_end()))
            .collect();
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        let listing = "listing the files of";
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(listing, dir, e))? {
            let entry = entry.map_err(|e| Error::io(listing, dir, e))?;
            let name = entry.file_name();
            if let Some(base) = name.to_str().and_then(parse_ids_file_name) {
                found.push((base, entry.path()));
            }
        }
        found.sort();
        let mut kept: Vec<Arc<Table>> = Vec::new();
        for (base, path) in found {
            let table = open_table_vouched(disk, &path, vouched).filter(|t| {
                t.base == base
                    && starts.contains_key(&t.base)
                    && ends.get(&t.end) == Some(&t.last_end)
                    && kept.last().is_none_or(|k| k.end <= t.base)
            });
            match table {
                Some(t) => kept.push(Arc::new(t)),
                // Damaged, stale (its segments were cut by a salvage), or inside a merged table
                // whose inputs were not all removed: a cache entry to drop.
                None => {
                    let _ = disk.remove(&path);
                }
            }
        }
        let mut uncovered = Vec::new();
        let mut t = kept.iter().peekable();
        for seg in sealed {
            while t.peek().is_some_and(|t| t.end <= seg.base) {
                t.next();
            }
            if t.peek().is_none_or(|t| t.base > seg.base) {
                uncovered.push(seg.clone());
            }
        }
        Ok(IdTables {
            dir: dir.to_path_buf(),
            disk: disk.clone(),
            sync,
            sets: Mutex::new(Sets {
                tables: Arc::new(kept),
                uncovered: Arc::new(uncovered),
            }),
            sealed: Mutex::new(sealed.to_vec()),
            wake: Condvar::new(),
            stop: Mutex::new(false),
            stopping: AtomicBool::new(false),
            inline,
            spare: Mutex::new(Spare::default()),
        })
    }

    /// A zeroed slot table of `capacity` slots for the active segment's map to start again
    /// with at a seal, if the worker has one ready; either way, asks it to have one of that
    /// size ready for the next seal.
    ///
    /// Zeroing the table at the seal, most of it faulting the pages in, lengthens the pause of
    /// the group that rolls: measured on a 2-core virtual machine with 1M slots (16 MiB, a
    /// segment of 100-byte events), the seal took 6.8–7.2 ms that way and 4.7–4.9 ms with a
    /// table made beforehand (a timer in a build not kept). The worker makes it in between, at
    /// the price of one table's memory held ready.
    pub(crate) fn take_spare(&self, capacity: usize) -> Option<Vec<(u64, u64)>> {
        let mut s = self.spare.lock();
        s.wanted = capacity;
        s.ready.take().filter(|v| v.len() == capacity)
    }

    /// Makes the table [`take_spare`](Self::take_spare) last asked for, if none is ready.
    fn refill_spare(&self) {
        let wanted = {
            let s = self.spare.lock();
            if s.ready.is_some() || s.wanted == 0 {
                return;
            }
            s.wanted
        };
        let table = crate::slots::zeroed(wanted, (0, 0));
        let mut s = self.spare.lock();
        if s.wanted == wanted && s.ready.is_none() {
            s.ready = Some(table);
        }
    }

    /// Whether maintenance runs inline, at each seal, rather than on a worker thread.
    pub(crate) fn is_inline(&self) -> bool {
        self.inline
    }

    /// The tables and uncovered segments as they are now.
    pub(crate) fn snapshot(&self) -> Sets {
        self.sets.lock().clone()
    }

    /// Changes the sets in one step: tables out (`remove`) and in (`add`), segments covered
    /// (`covered`) and uncovered (`uncover`).
    fn change(
        &self,
        remove: &[Arc<Table>],
        add: Option<Table>,
        covered: Option<u64>,
        uncover: Vec<Arc<Segment>>,
    ) {
        let mut sets = self.sets.lock();
        let mut tables: Vec<Arc<Table>> = sets
            .tables
            .iter()
            .filter(|t| !remove.iter().any(|r| Arc::ptr_eq(r, t)))
            .cloned()
            .collect();
        if let Some(t) = add {
            tables.push(Arc::new(t));
        }
        tables.sort_by_key(|t| t.base);
        let mut uncovered: Vec<Arc<Segment>> = sets
            .uncovered
            .iter()
            .filter(|s| Some(s.base) != covered)
            .cloned()
            .collect();
        uncovered.extend(uncover);
        *sets = Sets {
            tables: Arc::new(tables),
            uncovered: Arc::new(uncovered),
        };
    }

    /// Drops a table found damaged (its file too): its range is searched without it, and the
    /// worker builds it again.
    pub(crate) fn drop_broken(&self, broken: &Arc<Table>) {
        broken.broken.store(true, Ordering::Relaxed);
        let segments: Vec<Arc<Segment>> = self
            .sealed
            .lock()
            .iter()
            .filter(|s| s.base >= broken.base && s.base < broken.end)
            .cloned()
            .collect();
        {
            // Only once, and only while it is in the set: a table replaced since (merged into a
            // file of the same name) is not this one any more.
            let sets = self.sets.lock();
            if !sets.tables.iter().any(|t| Arc::ptr_eq(t, broken)) {
                return;
            }
        }
        self.change(std::slice::from_ref(broken), None, None, segments);
        if let Some(path) = broken.path() {
            let _ = self.disk.remove(path);
        }
        self.notify();
    }

    /// Adds the table of a segment just sealed (in memory until the worker writes it).
    pub(crate) fn add_sealed(&self, seg: &Arc<Segment>, table: Table, ids_of: SegmentIds) {
        self.sealed.lock().push(seg.clone());
        self.change(&[], Some(table), None, Vec::new());
        if self.inline {
            let _ = self.maintain(ids_of);
        } else {
            self.notify();
        }
    }

    /// Puts `seg` in place of the sealed segment with its base (compaction's rewrite of it), so
    /// that the old segment's map is not kept alive here.
    pub(crate) fn replace_segment(&self, seg: &Arc<Segment>) {
        for s in self.sealed.lock().iter_mut().filter(|s| s.base == seg.base) {
            *s = seg.clone();
        }
        let mut sets = self.sets.lock();
        if sets.uncovered.iter().any(|s| s.base == seg.base) {
            let uncovered = sets
                .uncovered
                .iter()
                .map(|s| {
                    if s.base == seg.base {
                        seg.clone()
                    } else {
                        s.clone()
                    }
                })
                .collect();
            sets.uncovered = Arc::new(uncovered);
        }
    }

    /// A sealed segment whose table could not be made: the worker builds it from the log.
    pub(crate) fn add_uncovered(&self, seg: &Arc<Segment>) {
        self.sealed.lock().push(seg.clone());
        self.change(&[], None, None, vec![seg.clone()]);
        self.notify();
    }

    /// The worker's loop: maintenance until `stop`. After a round in which something failed
    /// (a full disk, an unreadable segment), it waits before trying again rather than spin.
    ///
    /// The first round waits `after` (or a seal): a writer that just took over from another
    /// process lets its first groups' syncs go before the tables' writes and syncs.
    pub(crate) fn run(&self, ids_of: SegmentIds, after: std::time::Duration) {
        if !after.is_zero() {
            let mut stop = self.stop.lock();
            if !*stop {
                self.wake.wait_for(&mut stop, after);
            }
            if *stop {
                return;
            }
        }
        loop {
            let failed = self.maintain(ids_of);
            let mut stop = self.stop.lock();
            if *stop {
                return;
            }
            if failed || !self.has_work() {
                self.wake
                    .wait_for(&mut stop, std::time::Duration::from_secs(1));
            }
            if *stop {
                return;
            }
        }
    }

    /// Wakes the worker. Under the lock it checks for work with, so the wake-up is not lost.
    fn notify(&self) {
        let _held = self.stop.lock();
        self.wake.notify_all();
    }

    /// Asks the worker to stop.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        *self.stop.lock() = true;
        self.wake.notify_all();
    }

    fn has_work(&self) -> bool {
        let sets = self.snapshot();
        !sets.uncovered.is_empty()
            || sets
                .tables
                .iter()
                .any(|t| !t.is_written() && !t.is_broken())
            || self.merge_candidate().is_some()
    }

    /// One round of maintenance: build tables for uncovered segments (newest first, each written
    /// and merged before the next is read, so that memory holds one segment's ids at a time),
    /// write in-memory tables, merge. Failures leave things as they are (the tables are a
    /// cache), to be tried again; returns whether something failed.
    pub(crate) fn maintain(&self, ids_of: SegmentIds) -> bool {
        let mut failed = false;
        let todo = self.snapshot().uncovered;
        for seg in todo.iter().rev() {
            let written = ids_of(seg).and_then(|mut entries| {
                entries.sort_unstable();
                let head = TableHead {
                    base: seg.base,
                    end: seg.end_base(),
                    last_end: seg.data_end(),
                    level: 0,
                    count: entries.len() as u64,
                };
                self.write(&head, entries.into_iter(), &[], Some(seg.base))
            });
            failed |= written.is_err();
            failed |= self.write_pending() | self.merge();
            if *self.stop.lock() {
                return failed;
            }
        }
        let failed = failed | self.write_pending() | self.merge();
        if !self.inline && !*self.stop.lock() {
            self.refill_spare();
        }
        failed
    }

    /// Merges while there are tables to merge; returns whether a merge failed.
    fn merge(&self) -> bool {
        while let Some(run) = self.merge_candidate() {
            if let Some(bad) = run.iter().find(|t| t.verify_all().is_err()) {
                // Its range is read from the log again in the next round.
                self.drop_broken(bad);
                continue;
            }
            if self.replace(&run, run[0].level + 1).is_err() {
                return true;
            }
            if *self.stop.lock() {
                break;
            }
        }
        false
    }

    /// Writes the tables still in memory to files (also at close, so that the next open finds
    /// them); returns whether a write failed.
    pub(crate) fn write_pending(&self) -> bool {
        for t in self.snapshot().tables.iter() {
            if t.is_written() || t.is_broken() {
                continue;
            }
            if self.replace(std::slice::from_ref(t), t.level).is_err() {
                return true;
            }
        }
        false
    }

    /// `MERGE_FAN_IN` adjacent written tables of one level, if there are.
    fn merge_candidate(&self) -> Option<Vec<Arc<Table>>> {
        let tables = self.snapshot().tables;
        let mut run: Vec<Arc<Table>> = Vec::new();
        for t in tables.iter() {
            let joins = run
                .last()
                .is_some_and(|l| l.level == t.level && l.end == t.base);
            if !joins {
                run.clear();
            }
            if t.is_written() && !t.is_broken() {
                run.push(t.clone());
                if run.len() == MERGE_FAN_IN {
                    return Some(run);
                }
            } else {
                run.clear();
            }
        }
        None
    }

    /// Writes the entries of `inputs` (adjacent tables) as one table file of `level` covering
    /// their range, and puts it in their place.
    fn replace(&self, inputs: &[Arc<Table>], level: u32) -> Result<()> {
        let (Some(first), Some(last)) = (inputs.first(), inputs.last()) else {
            return Ok(());
        };
        let head = TableHead {
            base: first.base,
            end: last.end,
            last_end: last.last_end,
            level,
            count: inputs.iter().map(|t| t.count()).sum(),
        };
        // A merge of large tables takes seconds: `close` cuts it short (the entry count then
        // falls short, the temporary file is removed, the inputs stay). A single table, such as
        // one `close` itself writes, is written whole.
        let merging = inputs.len() > 1;
        let mut n = 0u32;
        let entries = merge_sorted(inputs.iter().map(|t| t.iter()).collect()).take_while(|_| {
            n = n.wrapping_add(1);
            !merging || !n.is_multiple_of(4096) || !self.stopping.load(Ordering::Relaxed)
        });
        self.write(&head, entries, inputs, None)
    }

    /// Writes a table file of `head` with `entries` and puts it in the set in place of `inputs`
    /// (whose files, but the first's, which it replaces, are removed), covering segment
    /// `covered` if given.
    fn write(
        &self,
        head: &TableHead,
        entries: impl Iterator<Item = (u64, u64)>,
        inputs: &[Arc<Table>],
        covered: Option<u64>,
    ) -> Result<()> {
        let path = self.dir.join(ids_file_name(head.base));
        write_table(&self.disk, &path, head, entries, self.sync)?;
        let table = open_table(&self.disk, &path).ok_or_else(|| Error::Corrupt {
            file: path.clone(),
            offset: 0,
            reason: "an id table just written does not read back".into(),
        })?;
        self.change(inputs, Some(table), covered, Vec::new());
        if inputs.len() > 1 {
            // No directory sync between the rename and these removals: should a power loss keep
            // the removals and lose the rename, the segments of the lost tables are simply not
            // covered, and their ids are read from the log again.
            for t in &inputs[1..] {
                if let Some(p) = t.path() {
                    let _ = self.disk.remove(p);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: u64, seed: u64) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = (0..n)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&(i ^ seed).to_le_bytes());
                (id_hash(&EventId(id)), 64 + 8 * i)
            })
            .collect();
        v.sort_unstable();
        v
    }

    fn head(count: u64) -> TableHead {
        TableHead {
            base: 0,
            end: 1 << 20,
            last_end: 4096,
            level: 0,
            count,
        }
    }

    #[test]
    fn a_written_table_finds_every_entry_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for n in [0u64, 1, 7, 9, 1000, 5000] {
            let e = entries(n, 7);
            let path = dir.path().join(ids_file_name(0));
            write_table(&Disk::default(), &path, &head(n), e.iter().copied(), false).unwrap();
            let t = open_table(&Disk::default(), &path).unwrap();
            assert_eq!(t.count(), n);
            for &(h, p) in &e {
                let mut out = Vec::new();
                t.candidates(h, &mut out).unwrap();
                assert!(out.contains(&p), "n {n}: {h:x} -> {out:?}");
            }
            let mut out = Vec::new();
            t.candidates(12345, &mut out).unwrap();
            assert!(out.is_empty());
        }
    }

    #[test]
    fn a_damaged_block_is_found_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let e = entries(2000, 3);
        let path = dir.path().join(ids_file_name(0));
        write_table(
            &Disk::default(),
            &path,
            &head(2000),
            e.iter().copied(),
            false,
        )
        .unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[IDS_HEADER_LEN + 100] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let t = open_table(&Disk::default(), &path).unwrap();
        let failed = e.iter().any(|&(h, _)| {
            let mut out = Vec::new();
            t.candidates(h, &mut out).is_err()
        });
        assert!(failed && t.is_broken());
        // A damaged header or checksum array is refused at open.
        bytes[IDS_HEADER_LEN + 100] ^= 1;
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(open_table(&Disk::default(), &path).is_none());
    }

    #[test]
    fn merging_keeps_the_order() {
        let lists: Vec<Vec<(u64, u64)>> = (0..4).map(|k| entries(500, k * 1000)).collect();
        let merged: Vec<(u64, u64)> = merge_sorted(
            lists
                .iter()
                .map(|l| Box::new(l.iter().copied()) as Box<dyn Iterator<Item = (u64, u64)>>)
                .collect(),
        )
        .collect();
        let mut want: Vec<(u64, u64)> = lists.concat();
        want.sort_unstable();
        assert_eq!(merged, want);
    }

    #[test]
    fn the_active_map_keeps_duplicates_and_splits_at_a_seal() {
        let mut a = ActiveIds::new(true);
        for i in 0..5000u64 {
            a.insert(1 + i % 100, 64 + 8 * i);
        }
        a.insert(1, 64);
        assert_eq!(a.len(), 5000);
        let mut out = Vec::new();
        a.candidates(1, &mut out);
        assert_eq!(out.len(), 50);
        let (sealed, below) = a.seal(64 + 8 * 2500, None);
        assert_eq!(below, 2500);
        let sorted = sealed.sorted_in(0, 64 + 8 * 2500);
        assert_eq!(sorted.len(), 2500);
        assert!(sorted.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(a.len(), 2500);
        let mut out = Vec::new();
        a.candidates(1, &mut out);
        assert!(out.iter().all(|&p| p >= 64 + 8 * 2500));
    }

    #[test]
    fn the_worker_keeps_a_zeroed_table_ready_for_the_next_seal() {
        let dir = tempfile::tempdir().unwrap();
        let tables = IdTables::open(dir.path(), &Disk::default(), false, false, &[], &|_, _| {
            false
        })
        .unwrap();
        // Nothing asked yet: the first seal zeroes its own table, and asks for one.
        assert!(tables.take_spare(1024).is_none());
        tables.maintain(|_| Ok(Vec::new()));
        let ready = tables.take_spare(1024).expect("a table made by the worker");
        assert_eq!(ready.len(), 1024);
        assert!(ready.iter().all(|&s| s == (0, 0)));
        // Taken: the next seal finds none until the worker has run again.
        assert!(tables.take_spare(1024).is_none());
        // A map that grew asks for its new size; a table of the old size is not handed out.
        tables.maintain(|_| Ok(Vec::new()));
        assert!(tables.take_spare(2048).is_none());
        tables.maintain(|_| Ok(Vec::new()));
        assert_eq!(tables.take_spare(2048).map(|t| t.len()), Some(2048));

        // A seal starts the map again on the table it is given.
        let mut a = ActiveIds::new(true);
        for i in 0..100u64 {
            a.insert(1 + i, 64 + 8 * i);
        }
        let fresh = crate::slots::zeroed(a.capacity(), (0, 0));
        let at = fresh.as_ptr();
        let (_, below) = a.seal(64 + 8 * 50, Some(fresh));
        assert_eq!(below, 50);
        assert_eq!(a.slots.as_ptr(), at);
        assert_eq!(a.len(), 50);
    }
}
