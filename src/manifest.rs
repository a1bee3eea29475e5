//! The manifest: what a clean close vouches for, so that the next open need not check it again.
//!
//! Opening a store spot-checks each sealed segment's index file against the log (FORMAT.md,
//! "Checks"): some thirty reads per segment, which at hundreds of segments is most of an open.
//! Those checks find index files that disagree with their segments, which only a crash in the
//! middle of writing them, a salvage, or files put in from elsewhere can leave. A clean close
//! has used every sealed segment's index file (each checked when the store opened, or written
//! by it from what it held), so it writes down, per sealed segment, the stamps of both files
//! (inode, length, modification time; see [`Stamp`]), and the stamp of each id table file: a
//! later open that finds files with those stamps is looking at the very files that were vouched
//! for, and skips their spot checks (and leaves an index file's body checks to its first use).
//! Any other file — rewritten by compaction, replaced by hand, restored from a backup, cut by a
//! salvage — has another stamp and is checked as before. So a stale manifest (a crash after a
//! later open) is harmless, and nothing ever needs to remove it.
//!
//! Layout (FORMAT.md, "The manifest"), little-endian:
//!
//! ```text
//! 0   magic "EVJLMANF"
//! 8   u32 layout (1)
//! 12  u32 segments: the number of segment entries
//! 16  u32 tables: the number of id table entries
//! 20  u32 reserved, zero
//! 24  segments entries of 64 bytes, in base order:
//!       0  u64 base               the segment's base
//!       8  u64 covered_end        its index file's covered_end (the segment's data end)
//!       16 u64 segment inode   24 u64 segment length   32 u64 segment mtime (ns)
//!       40 u64 index inode     48 u64 index length     56 u64 index mtime (ns)
//! then tables entries of 32 bytes, in base order:
//!       0  u64 base (the table's first segment)
//!       8  u64 inode   16 u64 length   24 u64 mtime (ns)
//! then u32 CRC32 of every byte before it
//! ```

use std::path::Path;

use crate::disk::{Disk, Stamp};
use crate::error::Result;

/// Name of the manifest file in the store directory.
pub const MANIFEST_FILE: &str = "eventjournal.manifest";
/// First eight bytes of the manifest.
const MAGIC: [u8; 8] = *b"EVJLMANF";
/// Layout version of the manifest this build writes and reads; a manifest of another layout is
/// ignored (it only saves work).
const LAYOUT: u32 = 1;
/// Magic, layout, the two counts, reserved.
const HEADER_LEN: usize = 24;
/// One sealed segment's entry.
const ENTRY_LEN: usize = 64;
/// One id table's entry.
const TABLE_ENTRY_LEN: usize = 32;
/// The trailing CRC32.
const TRAILER_LEN: usize = 4;
/// Most entries of each kind a manifest may claim: far past any store a process keeps open (4M
/// segments, 256 TiB of 64 MiB segments, each holding a file descriptor), and small enough that
/// its size cannot overflow even in 32 bits.
const MAX_ENTRIES: usize = 1 << 22;

/// What a clean close vouched for of one sealed segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The segment's base.
    pub(crate) base: u64,
    /// Its index file's `covered_end`: all of the segment's records.
    pub(crate) covered_end: u64,
    /// The segment file's stamp.
    pub(crate) segment: Stamp,
    /// The index file's stamp.
    pub(crate) index: Stamp,
}

/// A manifest read from a store directory: its entries by base.
#[derive(Debug, Default)]
pub(crate) struct Manifest {
    entries: Vec<Entry>,
    /// The id tables' bases and stamps.
    tables: Vec<(u64, Stamp)>,
}

impl Manifest {
    /// The directory's manifest, if it has one that is whole: a missing, short, damaged or
    /// foreign file is no manifest (nothing is skipped), never an error.
    ///
    /// A manifest names at most one entry of each kind per segment: one longer than that for the
    /// `segments` listed is not read.
    pub(crate) fn read(dir: &Path, segments: usize, disk: &Disk) -> Option<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let file = disk.open(&path, false).ok()?;
        let len = file.metadata().ok()?.len();
        let most = (segments.min(MAX_ENTRIES) as u64) * (ENTRY_LEN + TABLE_ENTRY_LEN) as u64
            + (HEADER_LEN + TRAILER_LEN) as u64;
        if len < (HEADER_LEN + TRAILER_LEN) as u64 || len > most {
            return None;
        }
        let mut bytes = vec![0u8; len as usize];
        disk.read_exact_at(&file, &path, &mut bytes, 0).ok()?;
        Manifest::decode(&bytes)
    }

    /// Decodes a manifest's bytes; `None` unless every check holds.
    fn decode(bytes: &[u8]) -> Option<Manifest> {
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
        };
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        if bytes.get(..8)? != MAGIC || u32_at(8)? != LAYOUT {
            return None;
        }
        let count = u32_at(12)? as usize;
        let tables = u32_at(16)? as usize;
        if count > MAX_ENTRIES || tables > MAX_ENTRIES || u32_at(20)? != 0 {
            return None;
        }
        // Within bounds on any target, with both counts at most `MAX_ENTRIES`.
        let size = HEADER_LEN + count * ENTRY_LEN + tables * TABLE_ENTRY_LEN + TRAILER_LEN;
        if bytes.len() != size {
            return None;
        }
        let body = bytes.len() - TRAILER_LEN;
        if crc32fast::hash(&bytes[..body]) != u32_at(body)? {
            return None;
        }
        let stamp = |at: usize| -> Option<Stamp> {
            Some(Stamp {
                ino: u64_at(at)?,
                len: u64_at(at + 8)?,
                mtime_ns: u64_at(at + 16)?,
            })
        };
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let at = HEADER_LEN + i * ENTRY_LEN;
            let e = Entry {
                base: u64_at(at)?,
                covered_end: u64_at(at + 8)?,
                segment: stamp(at + 16)?,
                index: stamp(at + 40)?,
            };
            // Written in base order: anything else is not a manifest this code wrote.
            if entries.last().is_some_and(|p: &Entry| p.base >= e.base) {
                return None;
            }
            entries.push(e);
        }
        let mut table_entries: Vec<(u64, Stamp)> = Vec::with_capacity(tables);
        for i in 0..tables {
            let at = HEADER_LEN + count * ENTRY_LEN + i * TABLE_ENTRY_LEN;
            let t = (u64_at(at)?, stamp(at + 8)?);
            if table_entries.last().is_some_and(|p| p.0 >= t.0) {
                return None;
            }
            table_entries.push(t);
        }
        Some(Manifest {
            entries,
            tables: table_entries,
        })
    }

    /// Whether the clean close vouched for the id table starting at `base` with this stamp.
    pub(crate) fn vouches_table(&self, base: u64, stamp: Stamp) -> bool {
        self.tables
            .binary_search_by_key(&base, |t| t.0)
            .is_ok_and(|i| self.tables[i].1 == stamp)
    }

    /// Whether the clean close vouched for the segment at `base` with these files: the
    /// segment file's stamp, its index file's stamp and `covered_end` all as it wrote them.
    pub(crate) fn vouches(
        &self,
        base: u64,
        segment: Stamp,
        index: Option<Stamp>,
        covered_end: u64,
    ) -> bool {
        let Ok(i) = self.entries.binary_search_by_key(&base, |e| e.base) else {
            return false;
        };
        let e = &self.entries[i];
        e.segment == segment && Some(e.index) == index && e.covered_end == covered_end
    }
}

/// The bytes of a manifest of `entries` and `tables` (each in base order).
fn encode(entries: &[Entry], tables: &[(u64, Stamp)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        HEADER_LEN + entries.len() * ENTRY_LEN + tables.len() * TABLE_ENTRY_LEN + TRAILER_LEN,
    );
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&LAYOUT.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&(tables.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for e in entries {
        for v in [
            e.base,
            e.covered_end,
            e.segment.ino,
            e.segment.len,
            e.segment.mtime_ns,
            e.index.ino,
            e.index.len,
            e.index.mtime_ns,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    for (base, t) in tables {
        for v in [*base, t.ino, t.len, t.mtime_ns] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Writes the manifest of `entries` and `tables` (each in base order, at most [`MAX_ENTRIES`]),
/// replacing any older one: under a temporary name, then renamed. It is not synced: a manifest
/// lost or torn by a power loss is only no manifest, and the files it names were synced before
/// it was written.
pub(crate) fn write(
    dir: &Path,
    entries: &[Entry],
    tables: &[(u64, Stamp)],
    disk: &Disk,
) -> Result<()> {
    let entries = &entries[..entries.len().min(MAX_ENTRIES)];
    let tables = &tables[..tables.len().min(MAX_ENTRIES)];
    let path = dir.join(MANIFEST_FILE);
    let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
    let bytes = encode(entries, tables);
    {
        let f = disk.create(&tmp)?;
        if let Err(e) = disk.write_all_at(&f, &tmp, &bytes, 0) {
            drop(f);
            // Best effort: a leftover temporary file is removed at the next open anyway.
            let _ = disk.remove(&tmp);
            return Err(e);
        }
    }
    disk.rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(base: u64) -> Entry {
        let s = |k: u64| Stamp {
            ino: base + k,
            len: 4096 * k,
            mtime_ns: 1_700_000_000_000_000_000 + k,
        };
        Entry {
            base,
            covered_end: 4000 + base,
            segment: s(1),
            index: s(2),
        }
    }

    #[test]
    fn a_manifest_round_trips_and_vouches_only_for_what_it_names() {
        let entries = [entry(0), entry(1 << 20), entry(2 << 20)];
        let tables = [(0, entry(0).index), (4 << 20, entry(4 << 20).segment)];
        let m = Manifest::decode(&encode(&entries, &tables)).expect("decodes");
        assert_eq!(m.entries, entries);
        assert_eq!(m.tables, tables);
        assert!(m.vouches_table(4 << 20, tables[1].1));
        assert!(!m.vouches_table(4 << 20, tables[0].1));
        assert!(!m.vouches_table(1 << 20, tables[1].1));
        let e = entries[1];
        assert!(m.vouches(e.base, e.segment, Some(e.index), e.covered_end));
        let other = Stamp { ino: 9, ..e.index };
        assert!(!m.vouches(e.base, e.segment, Some(other), e.covered_end));
        assert!(!m.vouches(e.base, other, Some(e.index), e.covered_end));
        assert!(!m.vouches(e.base, e.segment, None, e.covered_end));
        assert!(!m.vouches(e.base, e.segment, Some(e.index), e.covered_end + 8));
        assert!(!m.vouches(3 << 20, e.segment, Some(e.index), e.covered_end));
    }

    #[test]
    fn any_damaged_or_cut_manifest_is_no_manifest() {
        let bytes = encode(&[entry(0), entry(1 << 20)], &[(0, entry(7).index)]);
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(Manifest::decode(&bad).is_none(), "flip at {at} accepted");
        }
        for len in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..len]).is_none(), "cut at {len}");
        }
        // Entries out of order, even with a valid checksum.
        let mut swapped = encode(&[entry(1 << 20), entry(0)], &[]);
        let body = swapped.len() - 4;
        let crc = crc32fast::hash(&swapped[..body]);
        swapped[body..].copy_from_slice(&crc.to_le_bytes());
        assert!(Manifest::decode(&swapped).is_none());
    }
}
