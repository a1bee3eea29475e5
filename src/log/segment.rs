//! One segment file: a header, then records, then zeros up to its preallocated capacity.
//!
//! The whole file is mapped once, shared. Readers read records through the map; the writer of
//! the active segment copies records into it, past the end that readers may see (`data_end`),
//! and `fdatasync` makes them durable like any write to the file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::mapping::MapSlice;

use super::compacted::Compacted;
use super::format::{HeaderError, SegmentHeader, FORMAT_VERSION, SEGMENT_HEADER_LEN};
use crate::disk::{Disk, Stamp};
use crate::error::{Error, IoContext, Result};

/// File name suffix of segments.
pub const SEGMENT_SUFFIX: &str = ".seg";

/// A segment's file name: its base position in 20 decimal digits, so names sort by position.
pub fn segment_file_name(base: u64) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

/// The base position a segment file name stands for, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// An open segment.
pub struct Segment {
    /// Global position of byte 0.
    pub base: u64,
    /// Bytes reserved for the segment; the next segment's base is `base + capacity`.
    pub capacity: u64,
    /// The file.
    pub path: PathBuf,
    pub(crate) file: File,
    /// Where the file's operations go through.
    pub(crate) disk: Disk,
    /// The file mapped, shared: `map_len` bytes. Only raw pointers into it are kept; slices are
    /// made over published bytes only (see `bytes`). Mapped when first used (see
    /// [`open_unmapped`](Self::open_unmapped)).
    raw: OnceLock<Arc<memmap2::MmapRaw>>,
    /// Bytes mapped: `capacity`, or fewer if the file is shorter.
    map_len: u64,
    /// Whether the map is writable (the writer's segments) or read-only (a read-only store's).
    map_writable: bool,
    /// Offset just past the last whole batch: what readers may see of this segment.
    data_end: AtomicU64,
    /// A compacted segment's table: the ranges that hold no record any more, and what was there.
    pub compacted: Option<Arc<Compacted>>,
    /// The file's stamp when it was opened: what the manifest of a clean close is checked
    /// against.
    pub(crate) stamp: Stamp,
}

impl Segment {
    /// Creates a segment file atomically (written under a temporary name, then renamed), sized to
    /// `capacity` with zeros so that its unwritten tail reads as the end of the log.
    pub fn create(
        dir: &Path,
        base: u64,
        capacity: u64,
        sync: bool,
        disk: &Disk,
    ) -> Result<Segment> {
        let path = dir.join(segment_file_name(base));
        let tmp = dir.join(format!("{}.tmp", segment_file_name(base)));
        let header = SegmentHeader {
            version: FORMAT_VERSION,
            base,
            capacity,
            compacted: None,
        };
        {
            let f = disk.create(&tmp)?;
            disk.write_all_at(&f, &tmp, &header.encode(), 0)?;
            disk.allocate(&f, &tmp, capacity)?;
            if sync {
                disk.sync_all(&f, &tmp)?;
            }
        }
        disk.rename(&tmp, &path)?;
        if sync {
            disk.sync_dir(dir)?;
        }
        Segment::open(&path, base, true, disk)
    }

    /// Opens an existing segment whose file name says `base`, checking its header. The file is
    /// never grown: a file shorter than the capacity its header gives (cut, or a header that
    /// claims gigabytes) is mapped and used only as far as it goes.
    pub fn open(path: &Path, base: u64, writable: bool, disk: &Disk) -> Result<Segment> {
        let seg = Segment::open_unmapped(path, base, writable, disk)?;
        seg.check_mapped()?;
        Ok(seg)
    }

    /// [`open`](Self::open), leaving the file to be mapped when it is first read: opening a store
    /// maps none of its sealed segments, of which a first read may need only one. Whatever reads
    /// a segment whole (recovery's scan, compaction, backup, verification, the id tables'
    /// rebuild) calls [`check_mapped`](Self::check_mapped) first, which reports a failure to map;
    /// a read of a record through a segment that cannot be mapped finds no record there and fails.
    pub fn open_unmapped(path: &Path, base: u64, writable: bool, disk: &Disk) -> Result<Segment> {
        Segment::open_with(path, base, writable, disk, None)
    }

    /// [`open`](Self::open) of a segment just compacted into `path`, whose `table` is in hand:
    /// it is taken as it is when the file's header places a table where it ends, instead of
    /// being read back and decoded again.
    pub fn open_compacted(
        path: &Path,
        base: u64,
        disk: &Disk,
        table: Arc<Compacted>,
    ) -> Result<Segment> {
        let seg = Segment::open_with(path, base, false, disk, Some(table))?;
        seg.check_mapped()?;
        Ok(seg)
    }

    fn open_with(
        path: &Path,
        base: u64,
        writable: bool,
        disk: &Disk,
        known: Option<Arc<Compacted>>,
    ) -> Result<Segment> {
        let writable = writable && !disk.is_read_only();
        let file = disk.open(path, writable)?;
        let meta = file.metadata().at("reading the size of", path)?;
        let stamp = Stamp::of(&meta);
        let file_len = meta.len();
        let mut head = vec![0u8; SEGMENT_HEADER_LEN.min(file_len as usize)];
        disk.read_exact_at(&file, path, &mut head, 0)?;
        let header = SegmentHeader::decode(&head).map_err(|e| header_error(path, e))?;
        if header.base != base {
            return Err(Error::Corrupt {
                file: path.to_path_buf(),
                offset: 16,
                reason: format!(
                    "segment header says base {} but the file name says {base}",
                    header.base
                ),
            });
        }
        let compacted = match header.compacted {
            None => None,
            Some(c)
                if known
                    .as_ref()
                    .is_some_and(|t| t.table_at == c.table_at && t.data_end == c.data_end) =>
            {
                known
            }
            Some(c) => {
                let corrupt = |offset: u64, reason: &str| Error::Corrupt {
                    file: path.to_path_buf(),
                    offset,
                    reason: reason.to_string(),
                };
                let table_end = c.table_at + u64::from(c.table_len);
                if table_end > file_len {
                    return Err(corrupt(
                        c.table_at,
                        "compaction table past the end of the file",
                    ));
                }
                let mut table = vec![0u8; c.table_len as usize];
                disk.read_exact_at(&file, path, &mut table, c.table_at)?;
                if crc32fast::hash(&table) != c.table_crc {
                    return Err(corrupt(c.table_at, "compaction table checksum mismatch"));
                }
                let t = Compacted::decode(&table, c.data_end, c.table_at)
                    .map_err(|r| corrupt(c.table_at, r))?;
                Some(Arc::new(t))
            }
        };
        let map_len = header.capacity.min(file_len);
        Ok(Segment {
            base,
            capacity: header.capacity,
            path: path.to_path_buf(),
            file,
            disk: disk.clone(),
            raw: OnceLock::new(),
            map_len,
            map_writable: writable,
            data_end: AtomicU64::new(
                compacted
                    .as_ref()
                    .map_or(SEGMENT_HEADER_LEN as u64, |c| c.data_end),
            ),
            compacted,
            stamp,
        })
    }

    /// The map, made now if it was not yet; `Err` if the file cannot be mapped.
    fn map(&self) -> Result<&Arc<memmap2::MmapRaw>> {
        if let Some(raw) = self.raw.get() {
            return Ok(raw);
        }
        // The directory lock keeps other eventjournal openers out, and this crate never leaves a
        // segment shorter than `map_len` while it is mapped (recovery cuts and re-extends it
        // before anything reads or writes past the cut), so the mapped range stays backed by the
        // file.
        let mut map = memmap2::MmapOptions::new();
        map.len(self.map_len as usize);
        // A read-only store opens its files read-only, so its maps must be too (it never
        // writes through them: appends are refused before they reach the writer).
        let mapped = if self.map_writable {
            map.map_raw(&self.file)
        } else {
            map.map_raw_read_only(&self.file)
        };
        let raw = Arc::new(mapped.at("memory-mapping", &self.path)?);
        // Two threads may map it at once: one map is kept, the other unmapped.
        Ok(self.raw.get_or_init(|| raw))
    }

    /// Maps the file if it is not yet: the error, if it cannot be.
    pub(crate) fn check_mapped(&self) -> Result<()> {
        self.map().map(|_| ())
    }

    /// The map's start and length; a null start and no length if the file cannot be mapped
    /// (see [`open_unmapped`](Self::open_unmapped)).
    #[inline(always)]
    fn raw_parts(&self) -> (*mut u8, usize) {
        // Every read of a record comes here: the map, once made, is one load away.
        match self.raw.get() {
            Some(raw) => (raw.as_mut_ptr(), raw.len()),
            None => self.raw_parts_first(),
        }
    }

    /// [`raw_parts`](Self::raw_parts) before the map is made: out of the readers' way.
    #[cold]
    #[inline(never)]
    fn raw_parts_first(&self) -> (*mut u8, usize) {
        match self.map() {
            Ok(raw) => (raw.as_mut_ptr(), raw.len()),
            Err(_) => (std::ptr::null_mut(), 0),
        }
    }

    /// The file's stamp as it is now (its length and modification time change while it is
    /// written).
    pub(crate) fn current_stamp(&self) -> Option<Stamp> {
        self.file.metadata().ok().map(|m| Stamp::of(&m))
    }

    /// The gap of a compacted segment that `off` lies in: no record is there any more.
    #[inline]
    pub fn gap_containing(&self, off: u64) -> Option<(u64, u64)> {
        self.compacted.as_ref()?.gap_containing(off)
    }

    /// Global position one past the segment's reserved space: the next segment's base.
    #[inline]
    pub fn end_base(&self) -> u64 {
        self.base + self.capacity
    }

    /// The address of byte `off` of the map, for a cache prefetch only: computed without a
    /// bounds check, never dereferenced.
    #[inline(always)]
    pub(crate) fn address_of(&self, off: u64) -> *const u8 {
        self.raw_parts().0.wrapping_add(off as usize)
    }

    /// How far its records reach as positions count (what an index file of it may cover):
    /// [`usable`](Self::usable), or for a compacted segment, its data end.
    pub fn extent(&self) -> u64 {
        match &self.compacted {
            None => self.usable(),
            Some(c) => c.data_end,
        }
    }

    /// How far the segment can be written: its capacity, or less if its file is shorter.
    pub fn usable(&self) -> u64 {
        self.map_len
    }

    /// Offset just past the last whole batch.
    #[inline]
    pub fn data_end(&self) -> u64 {
        self.data_end.load(Ordering::Acquire)
    }

    pub(crate) fn set_data_end(&self, end: u64) {
        self.data_end.store(end, Ordering::Release);
    }

    /// Where in the file the record at segment offset `off` is: `off` itself, except in a
    /// compacted segment, whose remaining records are stored back to back (`off` must not lie
    /// in one of its gaps).
    #[inline(always)]
    pub fn file_off(&self, off: u64) -> u64 {
        match &self.compacted {
            None => off,
            Some(c) => c.file_off(off),
        }
    }

    /// The bytes readers may see: the mapped file up to `data_end` (up to the end of the
    /// records, in a compacted segment: index them with [`file_off`](Self::file_off)). The
    /// writer only writes past it, so these bytes never change while borrowed.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        let end = match &self.compacted {
            None => self.data_end(),
            Some(c) => c.table_at,
        };
        let (ptr, len) = self.raw_parts();
        if ptr.is_null() {
            return &[];
        }
        let end = (end as usize).min(len);
        // SAFETY: the map is `len` bytes long and lives as long as `self`; bytes below
        // `data_end` are written before `data_end` is stored with release ordering (loaded here
        // with acquire ordering) and never written again.
        unsafe { std::slice::from_raw_parts(ptr, end) }
    }

    /// Every mapped byte, for recovery, which runs before any writer of this process exists.
    /// (A read-only store, beside a writer in another process, scans a copy instead: see
    /// [`copy_out`](Self::copy_out).)
    pub fn all_bytes(&self) -> &[u8] {
        let (ptr, len) = self.raw_parts();
        if ptr.is_null() {
            return &[];
        }
        // SAFETY: the map is `len` bytes long and lives as long as `self`; recovery reads it
        // before a writer for the store exists, so nothing writes to it while borrowed. (A
        // read-only open's recovery may read bytes a writer elsewhere is writing past its
        // published end: they are untrusted input, bounds-checked and checksummed; the batches
        // taken are whole ones, which no writer changes.)
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }

    /// A copy of `off..off + len` (cut at the end of the map), read through raw pointers: for
    /// a read-only store's look past its end, at bytes a writer in another process may be
    /// changing. The copy is then read alone, so what is checksummed is what is used.
    pub(crate) fn copy_out(&self, off: u64, len: u64) -> Vec<u8> {
        let (ptr, map_len) = self.raw_parts();
        if ptr.is_null() {
            return Vec::new();
        }
        let map_len = map_len as u64;
        let start = off.min(map_len);
        let n = len.min(map_len - start) as usize;
        let mut out = vec![0u8; n];
        // SAFETY: `start + n <= len`; no reference to the source range is made, and the
        // destination is a new buffer of `n` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(ptr.add(start as usize), out.as_mut_ptr(), n);
        }
        out
    }

    /// The published bytes `off..off + len`, as a handle that outlives the borrow of `self`.
    /// `None` unless the range lies below `data_end`.
    pub fn slice(&self, off: usize, len: usize) -> Option<MapSlice> {
        let end = off.checked_add(len)?;
        if end > self.bytes().len() {
            return None;
        }
        Some(MapSlice::new(self.map().ok()?.clone(), off, len))
    }

    /// Copies `bytes` into the map at `off`, past `data_end`, for the writer.
    pub(crate) fn write_through_map(&self, bytes: &[u8], off: u64) -> Result<()> {
        let off = usize::try_from(off).unwrap_or(usize::MAX);
        let raw = self.map()?;
        let fits = off
            .checked_add(bytes.len())
            .is_some_and(|end| end <= raw.len());
        if !fits || (off as u64) < self.data_end() {
            return Err(Error::InvalidInput(
                "internal: write outside the writable part of a segment".into(),
            ));
        }
        let (bytes, failure) = match self.disk.map_write(&self.path, bytes, off as u64)? {
            None => (bytes, None),
            Some((n, e)) => (&bytes[..n], Some(e)),
        };
        // SAFETY: in bounds (checked above); at or past `data_end`, where no reader looks and no
        // reference exists (`bytes()` ends at `data_end`, `all_bytes()` is used before a writer
        // exists); only the store's single writer, holding the writer lock, writes here.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), raw.as_mut_ptr().add(off), bytes.len());
        }
        match failure {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

fn header_error(path: &Path, e: HeaderError) -> Error {
    match e {
        HeaderError::Version(found) => Error::UnsupportedVersion {
            file: path.to_path_buf(),
            found,
            supported: super::format::COMPACTED_VERSION,
        },
        HeaderError::Blank => Error::Corrupt {
            file: path.to_path_buf(),
            offset: 0,
            reason: "blank segment header".into(),
        },
        HeaderError::Bad(reason) => Error::Corrupt {
            file: path.to_path_buf(),
            offset: 0,
            reason: reason.into(),
        },
    }
}
