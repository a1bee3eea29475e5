//! Index files: one per segment, `<base>.idx`, holding that segment's stream runs.
//!
//! An index file is a cache of what its segment says. A missing, damaged or stale one is never
//! an error at open: opening rebuilds it from the segment.
//!
//! Index files of sealed segments are memory-mapped, not read: opening a store parses only their
//! headers and directories (one entry per stream and segment), and the offsets arrays, four bytes
//! per event, are paged in when a read needs them. Each offsets array carries its own checksum,
//! verified the first time the array is used, so that opening does no work per event.

use std::path::{Path, PathBuf};

use crate::disk::Disk;
use crate::log::format::{u16_at, u32_at, u64_at, SEGMENT_HEADER_LEN};

/// First eight bytes of an index file.
pub const INDEX_MAGIC: [u8; 8] = *b"EVJLIDX\0";
/// Layout version of index files written by this build. Index files are caches: a file of any
/// other layout is not read but rebuilt from its segment.
pub const INDEX_VERSION: u32 = 3;
/// Bytes of the header, before the directory.
pub const INDEX_HEADER_LEN: usize = 64;
/// Bytes of one directory entry.
pub const DIR_ENTRY_LEN: usize = 32;
/// Where the header's own checksum sits: its last four bytes.
const HEADER_CRC_AT: usize = INDEX_HEADER_LEN - 4;

/// The index file name for the segment at `base`.
pub fn index_file_name(base: u64) -> String {
    format!("{base:020}.idx")
}

/// One stream's events inside one segment, to be written: a contiguous run of event numbers.
pub struct RunToSave<'a> {
    /// Stream name.
    pub stream: &'a str,
    /// Event number of the first event of the run.
    pub first_event: u64,
    /// Offsets of the events inside the segment, in event-number order.
    pub offsets: &'a [u32],
}

/// Encodes the index file bytes for the segment at `base`.
pub fn encode(base: u64, covered_end: u64, runs: &[RunToSave<'_>]) -> Vec<u8> {
    let names_len: usize = runs.iter().map(|r| r.stream.len()).sum();
    let offsets_count: usize = runs.iter().map(|r| r.offsets.len()).sum();
    let dir_len = runs.len() * DIR_ENTRY_LEN;
    let offsets_at = (INDEX_HEADER_LEN + dir_len + names_len).next_multiple_of(4);
    let mut out = vec![0u8; offsets_at + 4 * offsets_count];
    out[0..8].copy_from_slice(&INDEX_MAGIC);
    out[8..12].copy_from_slice(&INDEX_VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&(runs.len() as u32).to_le_bytes());
    out[16..24].copy_from_slice(&base.to_le_bytes());
    out[24..32].copy_from_slice(&covered_end.to_le_bytes());
    out[32..40].copy_from_slice(&(names_len as u64).to_le_bytes());
    out[40..48].copy_from_slice(&(offsets_count as u64).to_le_bytes());
    let mut name_at = 0usize;
    let mut offset_index = 0usize;
    let names_start = INDEX_HEADER_LEN + dir_len;
    for (i, r) in runs.iter().enumerate() {
        let e = INDEX_HEADER_LEN + i * DIR_ENTRY_LEN;
        let array = offsets_at + 4 * offset_index;
        for (k, off) in r.offsets.iter().enumerate() {
            out[array + 4 * k..array + 4 * k + 4].copy_from_slice(&off.to_le_bytes());
        }
        let crc = crc32fast::hash(&out[array..array + 4 * r.offsets.len()]);
        out[e..e + 8].copy_from_slice(&r.first_event.to_le_bytes());
        out[e + 8..e + 12].copy_from_slice(&(r.offsets.len() as u32).to_le_bytes());
        out[e + 12..e + 14].copy_from_slice(&(r.stream.len() as u16).to_le_bytes());
        out[e + 16..e + 20].copy_from_slice(&(name_at as u32).to_le_bytes());
        out[e + 20..e + 24].copy_from_slice(&(offset_index as u32).to_le_bytes());
        out[e + 24..e + 28].copy_from_slice(&crc.to_le_bytes());
        out[names_start + name_at..names_start + name_at + r.stream.len()]
            .copy_from_slice(r.stream.as_bytes());
        name_at += r.stream.len();
        offset_index += r.offsets.len();
    }
    let dir_crc = crc32fast::hash(&out[INDEX_HEADER_LEN..names_start + names_len]);
    out[48..52].copy_from_slice(&dir_crc.to_le_bytes());
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

/// An opened index file: its bytes (mapped) and what its header says.
pub struct IndexFile {
    /// The file, for error messages.
    pub path: PathBuf,
    /// Where removing it (when damage is found) goes through.
    pub(crate) disk: Disk,
    bytes: Bytes,
    /// Offset in the segment up to which the runs are complete; the log after it is scanned.
    pub covered_end: u64,
}

/// Either a memory map or, for tests and tiny files, owned bytes.
enum Bytes {
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
    /// Unmaps the pages that opening touched (the header, the directory, the sampled runs),
    /// so that a store's resident memory does not grow with its index files: after open, the
    /// index reads only offsets arrays, each when a read first needs it.
    pub fn release_pages(&self) {
        #[allow(irrefutable_let_patterns)] // Owned exists in tests only
        if let Bytes::Mapped(map) = &self.bytes {
            // SAFETY: a shared, read-only mapping of a file: dropping its pages only makes the
            // next access fault them in again from the page cache, with the same contents. No
            // reference into the mapping is held across this call.
            let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }

    /// The stream name of `run`.
    pub fn name(&self, run: &RunEntry) -> &str {
        // Checked as UTF-8 when the directory was parsed.
        std::str::from_utf8(&self.bytes[run.name.0..run.name.1]).unwrap_or_default()
    }

    /// Offset `k` of `run`'s array; `k < run.count`, which parsing bounded by the file.
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
}

/// Parses index file bytes for the segment at `base` whose capacity is `capacity`: the header and
/// the directory, checked against their checksums, never the offsets arrays. `None` for anything
/// that is not a whole, matching, well-formed index file.
#[cfg(test)]
pub fn parse(
    path: PathBuf,
    bytes: Vec<u8>,
    base: u64,
    capacity: u64,
) -> Option<(IndexFile, Vec<RunEntry>)> {
    parse_bytes(path, Bytes::Owned(bytes), base, capacity)
}

fn parse_bytes(
    path: PathBuf,
    bytes: Bytes,
    base: u64,
    capacity: u64,
) -> Option<(IndexFile, Vec<RunEntry>)> {
    let h = bytes.get(..INDEX_HEADER_LEN)?;
    if h[..8] != INDEX_MAGIC || crc32fast::hash(&h[..HEADER_CRC_AT]) != u32_at(h, HEADER_CRC_AT) {
        return None;
    }
    if u32_at(h, 8) != INDEX_VERSION || u64_at(h, 16) != base {
        return None;
    }
    let covered_end = u64_at(h, 24);
    if covered_end < SEGMENT_HEADER_LEN as u64 || covered_end > capacity {
        return None;
    }
    let count = u32_at(h, 12) as usize;
    let names_len = usize::try_from(u64_at(h, 32)).ok()?;
    let offsets_count = usize::try_from(u64_at(h, 40)).ok()?;
    // Every length is checked against the file's real size before anything is sized by it.
    let names_start = INDEX_HEADER_LEN.checked_add(count.checked_mul(DIR_ENTRY_LEN)?)?;
    let names_end = names_start.checked_add(names_len)?;
    let offsets_start = names_end.next_multiple_of(4);
    let total = offsets_start.checked_add(offsets_count.checked_mul(4)?)?;
    if total != bytes.len() || bytes[names_end..offsets_start].iter().any(|&b| b != 0) {
        return None;
    }
    if crc32fast::hash(&bytes[INDEX_HEADER_LEN..names_end]) != u32_at(h, 48)
        || h[52..HEADER_CRC_AT].iter().any(|&b| b != 0)
    {
        return None;
    }
    let mut runs = Vec::with_capacity(count);
    let (mut next_name, mut next_offset) = (0usize, 0usize);
    for i in 0..count {
        let e = &bytes[INDEX_HEADER_LEN + i * DIR_ENTRY_LEN..][..DIR_ENTRY_LEN];
        let first_event = u64_at(e, 0);
        let n = u32_at(e, 8);
        let name_len = u16_at(e, 12) as usize;
        let name_at = u32_at(e, 16) as usize;
        let offset_index = u32_at(e, 20) as usize;
        // Names and arrays are laid out in directory order, back to back: anything else is not
        // a file this code wrote.
        if n == 0
            || name_len == 0
            || name_at != next_name
            || offset_index != next_offset
            || u16_at(e, 14) != 0
            || u32_at(e, 28) != 0
            || first_event.checked_add(u64::from(n)).is_none()
        {
            return None;
        }
        next_name = name_at.checked_add(name_len)?;
        next_offset = offset_index.checked_add(n as usize)?;
        if next_name > names_len || next_offset > offsets_count {
            return None;
        }
        let name = (names_start + name_at, names_start + next_name);
        std::str::from_utf8(&bytes[name.0..name.1]).ok()?;
        runs.push(RunEntry {
            name,
            first_event,
            count: n,
            offsets_at: offsets_start + 4 * offset_index,
            crc: u32_at(e, 24),
        });
    }
    if next_name != names_len || next_offset != offsets_count {
        return None;
    }
    Some((
        IndexFile {
            path,
            disk: Disk::default(),
            bytes,
            covered_end,
        },
        runs,
    ))
}

/// Opens the index file of the segment at `base`, if there is a valid one (see [`parse`]).
pub fn open(
    dir: &Path,
    base: u64,
    capacity: u64,
    disk: &Disk,
) -> Option<(IndexFile, Vec<RunEntry>)> {
    let path = dir.join(index_file_name(base));
    let file = disk.open(&path, false).ok()?;
    let len = file.metadata().ok()?.len();
    if len < INDEX_HEADER_LEN as u64 {
        return None;
    }
    // SAFETY: index files are written under a temporary name and renamed into place, never
    // modified in place; the directory lock keeps other eventjournal openers out. A file replaced
    // or removed later keeps its old inode mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let (mut file, runs) = parse_bytes(path, Bytes::Mapped(map), base, capacity)?;
    file.disk = disk.clone();
    Some((file, runs))
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
            RunToSave {
                stream: "account-1",
                first_event: 3,
                offsets: &[64, 200, 400],
            },
            RunToSave {
                stream: "b",
                first_event: 0,
                offsets: &[128],
            },
        ]
    }

    fn parse_vec(bytes: &[u8], base: u64) -> Option<(IndexFile, Vec<RunEntry>)> {
        parse(PathBuf::from("x.idx"), bytes.to_vec(), base, 8192)
    }

    #[test]
    fn round_trips() {
        let bytes = encode(4096, 512, &runs());
        let (file, entries) = parse_vec(&bytes, 4096).unwrap();
        assert_eq!(file.covered_end, 512);
        assert_eq!(entries.len(), 2);
        for (e, r) in entries.iter().zip(runs()) {
            assert_eq!(file.name(e), r.stream);
            assert_eq!(e.first_event, r.first_event);
            assert_eq!(e.count as usize, r.offsets.len());
            assert!(file.run_is_intact(e.offsets_at, e.count, e.crc));
            let got: Vec<u32> = (0..e.count as usize)
                .map(|k| file.offset(e.offsets_at, k))
                .collect();
            assert_eq!(got, r.offsets);
        }
    }

    #[test]
    fn rejects_damage_truncation_and_wrong_segment() {
        let bytes = encode(4096, 512, &runs());
        assert!(parse_vec(&bytes, 0).is_none());
        for cut in 0..bytes.len() {
            assert!(parse_vec(&bytes[..cut], 4096).is_none(), "cut {cut}");
        }
        let arrays = bytes.len() - 16;
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            match parse_vec(&b, 4096) {
                // Damage in an offsets array passes the directory checks, and is caught by the
                // array's own checksum.
                Some((file, entries)) => {
                    assert!(i >= arrays, "flip at {i} accepted");
                    assert!(
                        entries
                            .iter()
                            .any(|e| !file.run_is_intact(e.offsets_at, e.count, e.crc)),
                        "flip at {i} not caught by a run checksum"
                    );
                }
                None => assert!(i < arrays, "flip at {i} rejected"),
            }
        }
    }

    #[test]
    fn an_empty_index_round_trips() {
        let bytes = encode(0, 64, &[]);
        let (file, entries) = parse_vec(&bytes, 0).unwrap();
        assert!(entries.is_empty());
        assert_eq!(file.covered_end, 64);
    }
}
