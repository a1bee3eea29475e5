//! Index files: one per segment, `<base>.idx`, holding that segment's stream runs.
//!
//! An index file is a cache of what its segment says. A missing, damaged or stale one is never
//! an error at open: opening rebuilds it from the segment.
//!
//! Index files are memory-mapped, not read. The directory is sorted by the hash of each run's
//! name ([`name_hash`]), so a stream's run is found by a search that touches a few entries, and
//! opening a store reads no directory at all: it checks each file's header and the small array
//! of block checksums, and a stream's runs are looked up in the files when it is first used
//! (see [`super::Files`]). The directory and names are checksummed in blocks of [`BLOCK_LEN`]
//! bytes, each verified the first time a search touches it; each offsets array carries its own
//! checksum, verified the first time the array is used.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::disk::Disk;
use crate::log::checksum::CheckedBlocks;
use crate::log::format::{u16_at, u32_at, u64_at, SEGMENT_HEADER_LEN};

/// First eight bytes of an index file.
pub const INDEX_MAGIC: [u8; 8] = *b"EVJLIDX\0";
/// Layout version of index files written by this build. Index files are caches: a file of any
/// other layout is not read but rebuilt from its segment.
pub const INDEX_VERSION: u32 = 4;
/// Bytes of the header, before the directory.
pub const INDEX_HEADER_LEN: usize = 64;
/// Bytes of one directory entry.
pub const DIR_ENTRY_LEN: usize = 40;
/// The directory and the names blob are checksummed in blocks of this many bytes (the last one
/// shorter), so that a lookup verifies only the blocks it reads, a few hundred bytes each.
pub const BLOCK_LEN: usize = 512;
/// Where the header's own checksum sits: its last four bytes.
const HEADER_CRC_AT: usize = INDEX_HEADER_LEN - 4;

/// The index file name for the segment at `base`.
pub fn index_file_name(base: u64) -> String {
    format!("{base:020}.idx")
}

/// The 64-bit hash of an index key's name that orders a directory. Written to disk, so it must
/// never change: the name's bytes in little-endian 8-byte words (the last one zero-padded), each
/// mixed into the state by a multiply and shift, then the SplitMix64 finaliser; never 0.
pub fn name_hash(name: &str) -> u64 {
    const M: u64 = 0xff51_afd7_ed55_8ccd;
    let b = name.as_bytes();
    let mut h = 0x243f_6a88_85a3_08d3u64 ^ (b.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for chunk in b.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(M);
        h ^= h >> 29;
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    h.max(1)
}

/// One stream's events inside one segment, to be written: a contiguous run of event numbers.
pub struct RunToSave<'a> {
    /// Stream name.
    pub stream: Cow<'a, str>,
    /// [`name_hash`] of `stream`, computed once (by [`RunToSave::new`]), for the directory's
    /// order, its entry and the id table's key entry.
    hash: u64,
    /// Event number of the first event of the run.
    pub first_event: u64,
    /// Offsets of the events inside the segment, in event-number order.
    pub offsets: RunOffsets<'a>,
}

/// The offsets of a [`RunToSave`]: one held inline (a seal of a segment written by many streams
/// has a run of one event per stream, and allocates nothing for it), or any number.
pub enum RunOffsets<'a> {
    /// A run of one event.
    One([u32; 1]),
    /// Any run.
    Many(Cow<'a, [u32]>),
}

impl std::ops::Deref for RunOffsets<'_> {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        match self {
            RunOffsets::One(o) => o,
            RunOffsets::Many(o) => o,
        }
    }
}

impl<'a> From<Cow<'a, [u32]>> for RunOffsets<'a> {
    fn from(o: Cow<'a, [u32]>) -> RunOffsets<'a> {
        RunOffsets::Many(o)
    }
}

impl<'a> RunToSave<'a> {
    /// The run of `stream` from `first_event` at `offsets`.
    pub fn new(
        stream: Cow<'a, str>,
        first_event: u64,
        offsets: impl Into<RunOffsets<'a>>,
    ) -> RunToSave<'a> {
        RunToSave {
            hash: name_hash(&stream),
            stream,
            first_event,
            offsets: offsets.into(),
        }
    }

    /// The stream name's [`name_hash`].
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The directory's order: name hash, then name.
    pub fn key(&self) -> (u64, &str) {
        (self.hash, &self.stream)
    }
}

/// Where the parts of a file with `count` runs, `names_len` bytes of names and `offsets_count`
/// offsets lie; `None` if the sizes overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    count: usize,
    names_start: usize,
    names_len: usize,
    offsets_start: usize,
    offsets_count: usize,
    crcs_at: usize,
    blocks: usize,
    total: usize,
}

impl Layout {
    fn new(count: usize, names_len: usize, offsets_count: usize) -> Option<Layout> {
        let names_start = INDEX_HEADER_LEN.checked_add(count.checked_mul(DIR_ENTRY_LEN)?)?;
        let names_end = names_start.checked_add(names_len)?;
        let offsets_start = names_end.checked_next_multiple_of(4)?;
        let crcs_at = offsets_start.checked_add(offsets_count.checked_mul(4)?)?;
        let blocks = (offsets_start - INDEX_HEADER_LEN).div_ceil(BLOCK_LEN);
        let total = crcs_at.checked_add(blocks.checked_mul(4)?)?;
        Some(Layout {
            count,
            names_start,
            names_len,
            offsets_start,
            offsets_count,
            crcs_at,
            blocks,
            total,
        })
    }

    /// Byte range of block `b` of the checksummed region.
    fn block(&self, b: usize) -> (usize, usize) {
        let from = INDEX_HEADER_LEN + b * BLOCK_LEN;
        (from, (from + BLOCK_LEN).min(self.offsets_start))
    }
}

/// Encodes the index file bytes for the segment at `base`. The runs may come in any order: the
/// directory is sorted by name hash (then name).
pub fn encode(base: u64, covered_end: u64, runs: &[RunToSave<'_>]) -> Vec<u8> {
    // Usually in order already ([`Index::segment_runs`](super::Index::segment_runs) sorts),
    // which the sort finds in one pass.
    let mut order: Vec<(u64, usize)> = runs.iter().enumerate().map(|(i, r)| (r.hash, i)).collect();
    order.sort_unstable_by(|a, b| runs[a.1].key().cmp(&runs[b.1].key()));
    let names_len: usize = runs.iter().map(|r| r.stream.len()).sum();
    let offsets_count: usize = runs.iter().map(|r| r.offsets.len()).sum();
    let Some(l) = Layout::new(runs.len(), names_len, offsets_count) else {
        return Vec::new();
    };
    let mut out = vec![0u8; l.total];
    out[0..8].copy_from_slice(&INDEX_MAGIC);
    out[8..12].copy_from_slice(&INDEX_VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&(runs.len() as u32).to_le_bytes());
    out[16..24].copy_from_slice(&base.to_le_bytes());
    out[24..32].copy_from_slice(&covered_end.to_le_bytes());
    out[32..40].copy_from_slice(&(names_len as u64).to_le_bytes());
    out[40..48].copy_from_slice(&(offsets_count as u64).to_le_bytes());
    let mut name_at = 0usize;
    let mut offset_index = 0usize;
    for (i, &(hash, r)) in order.iter().enumerate() {
        let r = &runs[r];
        let e = INDEX_HEADER_LEN + i * DIR_ENTRY_LEN;
        let array = l.offsets_start + 4 * offset_index;
        for (k, off) in r.offsets.iter().enumerate() {
            out[array + 4 * k..array + 4 * k + 4].copy_from_slice(&off.to_le_bytes());
        }
        let crc = crc32fast::hash(&out[array..array + 4 * r.offsets.len()]);
        out[e..e + 8].copy_from_slice(&hash.to_le_bytes());
        out[e + 8..e + 16].copy_from_slice(&r.first_event.to_le_bytes());
        out[e + 16..e + 20].copy_from_slice(&(r.offsets.len() as u32).to_le_bytes());
        out[e + 20..e + 22].copy_from_slice(&(r.stream.len() as u16).to_le_bytes());
        out[e + 24..e + 28].copy_from_slice(&(name_at as u32).to_le_bytes());
        out[e + 28..e + 32].copy_from_slice(&(offset_index as u32).to_le_bytes());
        out[e + 32..e + 36].copy_from_slice(&crc.to_le_bytes());
        let n = l.names_start + name_at;
        out[n..n + r.stream.len()].copy_from_slice(r.stream.as_bytes());
        name_at += r.stream.len();
        offset_index += r.offsets.len();
    }
    for b in 0..l.blocks {
        let (from, to) = l.block(b);
        let crc = crc32fast::hash(&out[from..to]);
        out[l.crcs_at + 4 * b..l.crcs_at + 4 * b + 4].copy_from_slice(&crc.to_le_bytes());
    }
    let crcs_crc = crc32fast::hash(&out[l.crcs_at..]);
    out[48..52].copy_from_slice(&crcs_crc.to_le_bytes());
    let header_crc = crc32fast::hash(&out[..HEADER_CRC_AT]);
    out[HEADER_CRC_AT..INDEX_HEADER_LEN].copy_from_slice(&header_crc.to_le_bytes());
    out
}

/// One directory entry of an opened index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunEntry {
    /// Byte range of the stream name in the file (valid UTF-8, not empty).
    pub name: (usize, usize),
    /// Event number of the run's first event.
    pub first_event: u64,
    /// Events in the run, at least one.
    pub count: u32,
    /// Byte offset of the run's offsets array in the file (inside the file).
    pub offsets_at: usize,
    /// CRC32 of the offsets array.
    pub crc: u32,
}

/// A block of the directory or names that does not match its checksum, or an entry no writer of
/// this layout makes: the file must not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damaged {
    /// Byte offset in the file of the damaged block or entry.
    pub at: usize,
}

/// An opened index file: its bytes (mapped) and what its header says.
pub struct IndexFile {
    /// The file, for error messages.
    pub path: PathBuf,
    /// Where removing it (when damage is found) goes through.
    pub(crate) disk: Disk,
    bytes: Bytes,
    /// Offset in the segment up to which the runs are complete; the log after it is scanned.
    pub covered_end: u64,
    layout: Layout,
    /// The directory's and names' blocks, each checked when a lookup first reads it.
    blocks: CheckedBlocks,
    /// Device and inode of the file mapped, so that removing it never removes a newer file
    /// written under the same name since (a seal rewrites the active segment's file).
    identity: Option<(u64, u64)>,
    /// The file's stamp when it was opened (index files never change once renamed into place).
    pub(crate) stamp: Option<crate::disk::Stamp>,
}

/// Either a memory map or, for tests and tiny files, owned bytes (of index files and of the
/// key table).
pub(super) enum Bytes {
    Mapped(memmap2::Mmap),
    #[cfg(test)]
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            #[cfg(test)]
            Bytes::Owned(v) => v,
        }
    }
}

impl IndexFile {
    fn new(path: PathBuf, bytes: Bytes, header: Header) -> IndexFile {
        let layout = header.layout;
        IndexFile {
            path,
            disk: Disk::default(),
            bytes,
            covered_end: header.covered_end,
            layout,
            blocks: CheckedBlocks::new(
                INDEX_HEADER_LEN,
                layout.offsets_start,
                layout.crcs_at,
                BLOCK_LEN,
            ),
            identity: None,
            stamp: None,
        }
    }

    /// Unmaps the pages that opening or a lookup touched, so that a store's resident memory does
    /// not grow with its index files: the kernel's page cache keeps them, and the next access
    /// maps them again.
    pub fn release_pages(&self) {
        #[allow(irrefutable_let_patterns)] // Owned exists in tests only
        if let Bytes::Mapped(map) = &self.bytes {
            // SAFETY: a shared, read-only mapping of a file: dropping its pages only makes the
            // next access fault them in again from the page cache, with the same contents. No
            // reference into the mapping is held across this call.
            let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }

    /// Removes the file, found damaged, so that the next open rebuilds it: unless the name now
    /// holds a newer file. Best effort: the damage is reported either way.
    pub fn remove(&self) {
        use std::os::unix::fs::MetadataExt;
        let current = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if self.identity.is_none() || current == self.identity {
            let _ = self.disk.remove(&self.path);
        }
    }

    /// How many runs the file holds.
    pub fn run_count(&self) -> usize {
        self.layout.count
    }

    /// The stream name of `run`.
    pub fn name(&self, run: &RunEntry) -> &str {
        // Checked as UTF-8 when the entry was read.
        std::str::from_utf8(self.bytes.get(run.name.0..run.name.1).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Offset `k` of `run`'s array; `k < run.count`, which reading the entry bounded by the file.
    pub fn offset(&self, offsets_at: usize, k: usize) -> u32 {
        let at = offsets_at + 4 * k;
        self.bytes.get(at..at + 4).map_or(0, |b| u32_at(b, 0))
    }

    /// Whether the offsets array of a run matches its checksum and is one this code writes:
    /// ascending, aligned offsets of records inside the part of the segment the file covers.
    /// Readers locate events by these offsets, so a run that fails is never used.
    pub fn run_is_intact(&self, offsets_at: usize, count: u32, crc: u32) -> bool {
        let Some(b) = self.bytes.get(offsets_at..offsets_at + 4 * count as usize) else {
            return false;
        };
        if crc32fast::hash(b) != crc {
            return false;
        }
        let mut prev = 0u32;
        b.chunks_exact(4).all(|c| {
            let off = u32_at(c, 0);
            let ok = off as usize >= SEGMENT_HEADER_LEN
                && u64::from(off) < self.covered_end
                && off.is_multiple_of(8)
                && off > prev;
            prev = off;
            ok
        })
    }

    /// Checks the blocks that bytes `from..to` of the checksummed region lie in, each once.
    fn verify(&self, from: usize, to: usize) -> Result<(), Damaged> {
        if from >= to {
            return Err(Damaged { at: from });
        }
        self.blocks
            .check(&self.bytes, from, to)
            .map_err(|at| Damaged { at })
    }

    /// The name hash of directory entry `i`; `i < run_count()`.
    pub(super) fn hash_at(&self, i: usize) -> Result<u64, Damaged> {
        let at = INDEX_HEADER_LEN + i * DIR_ENTRY_LEN;
        self.verify(at, at + 8)?;
        Ok(u64_at(&self.bytes, at))
    }

    /// Directory entry `i`, verified; `i < run_count()`.
    pub fn entry(&self, i: usize) -> Result<RunEntry, Damaged> {
        let l = &self.layout;
        let at = INDEX_HEADER_LEN + i * DIR_ENTRY_LEN;
        let bad = Damaged { at };
        if i >= l.count {
            return Err(bad);
        }
        self.verify(at, at + DIR_ENTRY_LEN)?;
        let e = &self.bytes[at..at + DIR_ENTRY_LEN];
        let first_event = u64_at(e, 8);
        let n = u32_at(e, 16);
        let name_len = u16_at(e, 20) as usize;
        let name_at = u32_at(e, 24) as usize;
        let offset_index = u32_at(e, 28) as usize;
        let name_end = name_at.checked_add(name_len).ok_or(bad)?;
        let array_end = offset_index.checked_add(n as usize).ok_or(bad)?;
        if n == 0
            || name_len == 0
            || name_end > l.names_len
            || array_end > l.offsets_count
            || u16_at(e, 22) != 0
            || u32_at(e, 36) != 0
            || first_event.checked_add(u64::from(n)).is_none()
        {
            return Err(bad);
        }
        let name = (l.names_start + name_at, l.names_start + name_end);
        self.verify(name.0, name.1)?;
        let text = std::str::from_utf8(&self.bytes[name.0..name.1]).map_err(|_| bad)?;
        if name_hash(text) != u64_at(e, 0) {
            return Err(bad);
        }
        Ok(RunEntry {
            name,
            first_event,
            count: n,
            offsets_at: l.offsets_start + 4 * offset_index,
            crc: u32_at(e, 32),
        })
    }

    /// The first directory entry whose hash is at least `hash`: an interpolation search (the
    /// hashes are uniform), then a binary one, so a lookup reads a few entries.
    ///
    /// The probes read hashes unchecked: only the two entries the search ends between are
    /// verified (their blocks). That is enough: the writer lays the directory out in hash
    /// order, so once those two read as written and `hash` falls between them, the answer is
    /// the one a fully checked search would give, wherever a damaged probe sent the search.
    /// Checking every probe's block read four to five blocks per lookup instead of one or two.
    fn lower_bound(&self, hash: u64) -> Result<usize, Damaged> {
        let raw = |i: usize| Ok(u64_at(&self.bytes, INDEX_HEADER_LEN + i * DIR_ENTRY_LEN));
        let lo = self.search(hash, raw)?;
        // The boundary, checked: entry `lo - 1` below `hash`, entry `lo` at or above it. Should
        // it not hold, damage misled the search: searched again, every probe checked, which
        // finds the damaged block (or, if the probes it reads are intact, the right answer).
        let below = lo == 0 || self.hash_at(lo - 1)? < hash;
        let above = lo == self.layout.count || self.hash_at(lo)? >= hash;
        if below && above {
            Ok(lo)
        } else {
            self.search(hash, |i| self.hash_at(i))
        }
    }

    /// The search of [`lower_bound`](Self::lower_bound), reading entry `i`'s hash with `hash_of`.
    fn search(
        &self,
        hash: u64,
        hash_of: impl Fn(usize) -> Result<u64, Damaged>,
    ) -> Result<usize, Damaged> {
        let (mut lo, mut hi) = (0usize, self.layout.count);
        let (mut key_lo, mut key_hi) = (0u64, u64::MAX);
        let mut step = 0;
        while lo < hi {
            let span = (hi - lo) as u128;
            let guess = if step < 4 && key_hi > key_lo && (key_lo..=key_hi).contains(&hash) {
                let frac = u128::from(hash - key_lo) * span / (u128::from(key_hi - key_lo) + 1);
                lo + (frac as usize).min(hi - lo - 1)
            } else {
                lo + (hi - lo) / 2
            };
            step += 1;
            let h = hash_of(guess)?;
            if h < hash {
                lo = guess + 1;
                key_lo = h;
            } else {
                hi = guess;
                key_hi = h;
            }
        }
        Ok(lo)
    }

    /// The run of `name`, if the file has one.
    pub fn find(&self, name: &str) -> Result<Option<RunEntry>, Damaged> {
        let hash = name_hash(name);
        let mut i = self.lower_bound(hash)?;
        while i < self.layout.count && self.hash_at(i)? == hash {
            let e = self.entry(i)?;
            if self.name(&e) == name {
                return Ok(Some(e));
            }
            i += 1;
        }
        Ok(None)
    }

    /// The index of the first entry ordered after `(hash, name)` (hash, then name).
    pub fn first_after(&self, hash: u64, name: &str) -> Result<usize, Damaged> {
        let mut i = self.lower_bound(hash)?;
        while i < self.layout.count && self.hash_at(i)? == hash {
            let e = self.entry(i)?;
            if self.name(&e) > name {
                break;
            }
            i += 1;
        }
        Ok(i)
    }

    /// Every entry, each checked, and checked to lie back to back as this layout's writer lays
    /// them out, in hash order: for a segment whose runs are all loaded.
    pub fn entries(&self) -> Result<Vec<RunEntry>, Damaged> {
        let l = self.layout;
        if l.count > 0 {
            self.verify(INDEX_HEADER_LEN, l.offsets_start)?;
        }
        let mut runs = Vec::with_capacity(l.count);
        let (mut next_name, mut next_offset, mut prev) = (l.names_start, l.offsets_start, 0u64);
        for i in 0..l.count {
            let e = self.entry(i)?;
            let hash = u64_at(&self.bytes, INDEX_HEADER_LEN + i * DIR_ENTRY_LEN);
            if e.name.0 != next_name || e.offsets_at != next_offset || hash < prev {
                return Err(Damaged {
                    at: INDEX_HEADER_LEN + i * DIR_ENTRY_LEN,
                });
            }
            next_name = e.name.1;
            next_offset = e.offsets_at + 4 * e.count as usize;
            prev = hash;
            runs.push(e);
        }
        if next_name != l.names_start + l.names_len || next_offset != l.crcs_at {
            return Err(Damaged { at: l.names_start });
        }
        Ok(runs)
    }
}

/// Parses index file bytes for the segment at `base` whose capacity is `capacity`: the header
/// and the array of block checksums; never the directory, names or offsets, which are checked
/// as they are read. `None` for anything that is not a matching index file of this layout.
#[cfg(test)]
pub fn parse(path: PathBuf, bytes: Vec<u8>, base: u64, capacity: u64) -> Option<IndexFile> {
    check_bytes(path, Bytes::Owned(bytes), base, capacity).ok()
}

/// Why an index file's header part was rejected: the byte offset of the check that failed, and
/// the rule. An index file of another layout (`version`) is not damage but a file to rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// Byte offset in the file of what failed.
    pub at: usize,
    /// Which rule failed.
    pub reason: &'static str,
    /// The file holds another layout version, whole: stale, not damaged.
    pub stale: bool,
}

/// What the header of an index file says, once its checks hold.
struct Header {
    covered_end: u64,
    layout: Layout,
    /// CRC32 of the block checksum array.
    crcs_crc: u32,
}

/// The checks of an index file's 64-byte header, for a file of `file_len` bytes of the segment
/// at `base` whose mapped length is `capacity`: the one place the header rules are written.
fn check_header(h: &[u8], file_len: u64, base: u64, capacity: u64) -> Result<Header, Rejected> {
    let bad = |at: usize, reason: &'static str| Rejected {
        at,
        reason,
        stale: false,
    };
    let h = h
        .get(..INDEX_HEADER_LEN)
        .ok_or(bad(0, "shorter than an index header"))?;
    if h[..8] != INDEX_MAGIC {
        return Err(bad(0, "bad index file magic"));
    }
    if crc32fast::hash(&h[..HEADER_CRC_AT]) != u32_at(h, HEADER_CRC_AT) {
        return Err(bad(HEADER_CRC_AT, "index header checksum mismatch"));
    }
    if u32_at(h, 8) != INDEX_VERSION {
        return Err(Rejected {
            at: 8,
            reason: "index file of another layout version",
            stale: true,
        });
    }
    if u64_at(h, 16) != base {
        return Err(bad(16, "index file names another segment's base"));
    }
    let covered_end = u64_at(h, 24);
    if covered_end < SEGMENT_HEADER_LEN as u64 || covered_end > capacity {
        return Err(bad(24, "covered end outside its segment"));
    }
    let count = u32_at(h, 12) as usize;
    let sizes = bad(32, "index sizes out of range");
    let names_len = usize::try_from(u64_at(h, 32)).map_err(|_| sizes)?;
    let offsets_count = usize::try_from(u64_at(h, 40)).map_err(|_| sizes)?;
    // Every length is checked against the file's real size before anything is sized by it.
    let layout = Layout::new(count, names_len, offsets_count).ok_or(sizes)?;
    // Every record covered has three entries (its stream's, its category's and its type's): a
    // file that covers records lists some, and no more than the records could be.
    let most = (offsets_count as u64 / 3).checked_mul(crate::log::format::MIN_RECORD_LEN as u64);
    if (offsets_count == 0) != (covered_end == SEGMENT_HEADER_LEN as u64)
        || most.is_none_or(|m| m > covered_end - SEGMENT_HEADER_LEN as u64)
    {
        return Err(bad(40, "more offsets than the covered records could have"));
    }
    if layout.total as u64 != file_len {
        return Err(bad(0, "file length does not match its header"));
    }
    if h[52..HEADER_CRC_AT].iter().any(|&b| b != 0) {
        return Err(bad(52, "reserved header bytes not zero"));
    }
    Ok(Header {
        covered_end,
        layout,
        crcs_crc: u32_at(h, 48),
    })
}

/// The checks of the rest of a file whose header passed: the block checksum array against its
/// checksum, and the padding after the names.
fn check_body(bytes: &[u8], layout: &Layout, crcs_crc: u32) -> Result<(), Rejected> {
    if crc32fast::hash(&bytes[layout.crcs_at..]) != crcs_crc {
        return Err(Rejected {
            at: layout.crcs_at,
            reason: "block checksum array fails its checksum",
            stale: false,
        });
    }
    if bytes[layout.names_start + layout.names_len..layout.offsets_start]
        .iter()
        .any(|&b| b != 0)
    {
        return Err(Rejected {
            at: layout.names_start + layout.names_len,
            reason: "padding not zero",
            stale: false,
        });
    }
    Ok(())
}

/// Checks index file bytes whole (header and body), saying which check failed.
fn check_bytes(
    path: PathBuf,
    bytes: Bytes,
    base: u64,
    capacity: u64,
) -> Result<IndexFile, Rejected> {
    let header = check_header(&bytes, bytes.len() as u64, base, capacity)?;
    check_body(&bytes, &header.layout, header.crcs_crc)?;
    Ok(IndexFile::new(path, bytes, header))
}

/// Opens the index file at `path`, of the segment at `base` whose mapped length is `capacity`,
/// for a full check ([`crate::verify`]): `Ok(None)` if there is no file, the failed header
/// check otherwise.
pub fn open_checked(
    path: &Path,
    base: u64,
    capacity: u64,
    disk: &Disk,
) -> crate::error::Result<Option<Result<IndexFile, Rejected>>> {
    let file = match disk.open(path, false) {
        Ok(f) => f,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file
        .metadata()
        .map_err(|e| crate::error::Error::io("reading the size of", path, e))?
        .len();
    if len < INDEX_HEADER_LEN as u64 {
        return Ok(Some(Err(Rejected {
            at: 0,
            reason: "shorter than an index header",
            stale: false,
        })));
    }
    // SAFETY: as in `open_file`: index files are never modified in place.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| crate::error::Error::io("memory-mapping", path, e))?;
    Ok(Some(check_bytes(
        path.to_path_buf(),
        Bytes::Mapped(map),
        base,
        capacity,
    )))
}

/// Opens the index file of the segment at `base` for lookups, if there is one of this layout
/// whose header and body pass their checks ([`check_header`], [`check_body`]).
pub fn open_file(dir: &Path, base: u64, capacity: u64, disk: &Disk) -> Option<IndexFile> {
    open_vouched(dir, base, capacity, disk, &|_, _| false)
}

/// [`open_file`], where `vouched(stamp, covered_end)` says whether the file with that stamp is one
/// the manifest of a clean close vouches for, i.e. one that passed every check when it was first
/// used, or was written by the store: only its header is checked again (read with one positioned
/// read), not the rest of the file (block checksum array, padding), which would read its end and
/// middle. Each block is still checked against its checksum when a lookup first reads it.
pub fn open_vouched(
    dir: &Path,
    base: u64,
    capacity: u64,
    disk: &Disk,
    vouched: &dyn Fn(crate::disk::Stamp, u64) -> bool,
) -> Option<IndexFile> {
    let (path, file, meta, header) = read_header(dir, base, capacity, disk)?;
    let identity = {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    };
    let stamp = crate::disk::Stamp::of(&meta);
    let trusted = vouched(stamp, header.covered_end);
    // SAFETY: index files are written under a temporary name and renamed into place, never
    // modified in place; the directory lock keeps other eventjournal openers out. A file replaced
    // or removed later keeps its old inode mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let bytes = Bytes::Mapped(map);
    if !trusted {
        check_body(&bytes, &header.layout, header.crcs_crc).ok()?;
    }
    let mut file = IndexFile::new(path, bytes, header);
    file.disk = disk.clone();
    file.identity = Some(identity);
    file.stamp = Some(stamp);
    Some(file)
}

/// The `covered_end` of the index file of the segment at `base` as it is on disk now (its header
/// read and checked, nothing else), if there is one of this layout.
pub fn covered_end_on_disk(dir: &Path, base: u64, capacity: u64, disk: &Disk) -> Option<u64> {
    read_header(dir, base, capacity, disk).map(|(.., h)| h.covered_end)
}

/// The index file of the segment at `base`, opened, with its metadata and its checked header
/// (one 64-byte positioned read), if there is one of this layout.
fn read_header(
    dir: &Path,
    base: u64,
    capacity: u64,
    disk: &Disk,
) -> Option<(PathBuf, std::fs::File, std::fs::Metadata, Header)> {
    let path = dir.join(index_file_name(base));
    let file = disk.open(&path, false).ok()?;
    let meta = file.metadata().ok()?;
    if meta.len() < INDEX_HEADER_LEN as u64 {
        return None;
    }
    let mut h = [0u8; INDEX_HEADER_LEN];
    disk.read_exact_at(&file, &path, &mut h, 0).ok()?;
    let header = check_header(&h, meta.len(), base, capacity).ok()?;
    Some((path, file, meta, header))
}

/// Opens the index file of the segment at `base` and reads its whole directory, if the file is
/// whole and matching.
pub fn open(
    dir: &Path,
    base: u64,
    capacity: u64,
    disk: &Disk,
) -> Option<(IndexFile, Vec<RunEntry>)> {
    let file = open_file(dir, base, capacity, disk)?;
    let entries = file.entries().ok()?;
    Some((file, entries))
}

/// Writes the index file of the segment at `base` (bytes from [`encode`]), replacing any older
/// one atomically.
pub fn save(
    dir: &Path,
    base: u64,
    bytes: &[u8],
    sync: bool,
    disk: &Disk,
) -> crate::error::Result<PathBuf> {
    let path = dir.join(index_file_name(base));
    let tmp = dir.join(format!("{}.tmp", index_file_name(base)));
    let f = disk.create(&tmp)?;
    let written = disk.write_all_at(&f, &tmp, bytes, 0).and_then(|()| {
        if sync {
            disk.sync_data(&f, &tmp)
        } else {
            Ok(())
        }
    });
    drop(f);
    if let Err(e) = written {
        // Best effort: a leftover temporary file is removed on the next open anyway.
        let _ = disk.remove(&tmp);
        return Err(e);
    }
    disk.rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs() -> Vec<RunToSave<'static>> {
        vec![
            RunToSave::new("account-1".into(), 3, Cow::Borrowed(&[64u32, 200, 400][..])),
            RunToSave::new("b".into(), 0, RunOffsets::One([128])),
        ]
    }

    fn parse_vec(bytes: &[u8], base: u64) -> Option<(IndexFile, Vec<RunEntry>)> {
        let file = parse(PathBuf::from("x.idx"), bytes.to_vec(), base, 8192)?;
        let entries = file.entries().ok()?;
        Some((file, entries))
    }

    #[test]
    fn round_trips_and_finds_each_run() {
        let bytes = encode(4096, 512, &runs());
        let (file, entries) = parse_vec(&bytes, 4096).unwrap();
        assert_eq!(file.covered_end, 512);
        assert_eq!(entries.len(), 2);
        for r in runs() {
            let e = file.find(&r.stream).unwrap().unwrap();
            assert!(entries.contains(&e));
            assert_eq!(file.name(&e), r.stream);
            assert_eq!(e.first_event, r.first_event);
            assert_eq!(e.count as usize, r.offsets.len());
            assert!(file.run_is_intact(e.offsets_at, e.count, e.crc));
            let got: Vec<u32> = (0..e.count as usize)
                .map(|k| file.offset(e.offsets_at, k))
                .collect();
            assert_eq!(got, *r.offsets);
        }
        assert_eq!(file.find("account-2").unwrap(), None);
    }

    /// Streams `s-0` to `s-{n - 1}`, one event each, and their index file's bytes.
    fn many_names(n: usize) -> (Vec<String>, Vec<u8>) {
        let names: Vec<String> = (0..n).map(|i| format!("s-{i}")).collect();
        let offsets = [64u32];
        let runs: Vec<RunToSave<'_>> = names
            .iter()
            .map(|n| RunToSave::new(n.as_str().into(), 0, Cow::Borrowed(&offsets[..])))
            .collect();
        let bytes = encode(0, 1 << 20, &runs);
        (names, bytes)
    }

    #[test]
    fn finds_every_name_among_many() {
        let (names, bytes) = many_names(5000);
        let file = parse(PathBuf::from("x.idx"), bytes, 0, 1 << 20).unwrap();
        for n in &names {
            let e = file.find(n).unwrap().unwrap();
            assert_eq!(file.name(&e), n);
        }
        for i in 5000..6000 {
            assert_eq!(file.find(&format!("s-{i}")).unwrap(), None);
        }
        // Paging in directory order visits every name once.
        let (mut seen, mut i) = (0, 0);
        while i < file.run_count() {
            let e = file.entry(i).unwrap();
            let name = file.name(&e).to_string();
            i = file.first_after(name_hash(&name), &name).unwrap();
            seen += 1;
        }
        assert_eq!(seen, names.len());
    }

    /// A lookup reads its probes unchecked and checks where the search ends: damage to any
    /// directory hash must give the right run or an error, never a wrong answer.
    #[test]
    fn a_damaged_probe_never_gives_a_wrong_answer() {
        let (names, bytes) = many_names(3000);
        let mut errors = 0;
        for entry in (0..names.len()).step_by(41) {
            for byte in [0, 7] {
                let mut b = bytes.clone();
                b[INDEX_HEADER_LEN + entry * DIR_ENTRY_LEN + byte] ^= 0x80;
                let file = parse(PathBuf::from("x.idx"), b, 0, 1 << 20).unwrap();
                for n in &names {
                    match file.find(n) {
                        Ok(Some(e)) => assert_eq!(file.name(&e), n),
                        Ok(None) => panic!("{n} not found with entry {entry} damaged"),
                        Err(_) => errors += 1,
                    }
                }
                for absent in ["t-1", "t-2", "t-3"] {
                    assert!(!matches!(file.find(absent), Ok(Some(_))));
                }
            }
        }
        // The damage is found by the lookups that need the damaged entries.
        assert!(errors > 0);
    }

    #[test]
    fn rejects_damage_truncation_and_wrong_segment() {
        let bytes = encode(4096, 512, &runs());
        assert!(parse_vec(&bytes, 0).is_none());
        for cut in 0..bytes.len() {
            assert!(parse_vec(&bytes[..cut], 4096).is_none(), "cut {cut}");
        }
        let l = Layout::new(2, "account-1".len() + 1, 4).unwrap();
        let arrays = l.offsets_start..l.crcs_at;
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            match parse_vec(&b, 4096) {
                // Damage in an offsets array passes the directory checks, and is caught by the
                // array's own checksum.
                Some((file, entries)) => {
                    assert!(arrays.contains(&i), "flip at {i} accepted");
                    assert!(
                        entries
                            .iter()
                            .any(|e| !file.run_is_intact(e.offsets_at, e.count, e.crc)),
                        "flip at {i} not caught by a run checksum"
                    );
                }
                None => assert!(!arrays.contains(&i), "flip at {i} rejected"),
            }
            // A lookup never returns a run from a damaged directory or names blob.
            if let Some(file) = parse(PathBuf::from("x.idx"), b.clone(), 4096, 8192) {
                if !arrays.contains(&i) {
                    assert!(
                        file.find("account-1").is_err() || file.find("b").is_err(),
                        "flip at {i} not caught by a lookup"
                    );
                }
            }
        }
    }

    #[test]
    fn removing_a_damaged_file_spares_a_newer_one_under_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::default();
        save(dir.path(), 4096, &encode(4096, 512, &runs()), false, &disk).unwrap();
        let old = open_file(dir.path(), 4096, 8192, &disk).unwrap();
        // A seal writes the segment's file again: the old mapping stays, the name moves on.
        save(dir.path(), 4096, &encode(4096, 512, &runs()), false, &disk).unwrap();
        old.remove();
        assert!(dir.path().join(index_file_name(4096)).exists());
        let current = open_file(dir.path(), 4096, 8192, &disk).unwrap();
        current.remove();
        assert!(!dir.path().join(index_file_name(4096)).exists());
    }

    #[test]
    fn an_empty_index_round_trips() {
        let bytes = encode(0, 64, &[]);
        let (file, entries) = parse_vec(&bytes, 0).unwrap();
        assert!(entries.is_empty());
        assert_eq!(file.covered_end, 64);
        assert_eq!(file.find("a").unwrap(), None);
    }
}
