//! Opening the log: finding the segments, and scanning records to find the last whole batch.

use std::fs;
use std::path::{Path, PathBuf};

use super::format::{
    decode_record, u32_at, u64_at, RecordError, RecordView, MIN_RECORD_LEN, RECORD_ALIGN,
};
use super::segment::{parse_segment_file_name, Segment};
use crate::disk::Disk;
use crate::error::{Error, IoContext, Result};

/// The segment files in `dir`, by base. Leftover temporary files from an interrupted segment or
/// index creation are removed.
pub fn list_segments(dir: &Path, disk: &Disk) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let listing = "listing the files of";
    for entry in fs::read_dir(dir).at(listing, dir)? {
        let entry = entry.at(listing, dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            let _ = disk.remove(&entry.path());
            continue;
        }
        if let Some(base) = parse_segment_file_name(name) {
            out.push((base, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// How a scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEnd {
    /// Offset just past the last whole batch.
    pub end: u64,
    /// Offset where the scan stopped: past `end` when an unfinished batch follows it.
    pub stopped_at: u64,
    /// Offset of the bad record that cut the scan short, with why, if one did.
    pub cut: Option<(u64, &'static str)>,
}

/// What to do on a bad record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBad {
    /// The newest segment: a bad record with nothing valid after it is a torn tail.
    TornTailAllowed,
    /// A sealed segment: any bad record is corruption.
    Strict,
    /// Salvage: stop at the first bad record, whatever follows.
    Salvage,
    /// A read-only store, beside a writer that may be writing the segment: the log ends at the
    /// first record that does not read whole, or the first zero length word, nothing after it
    /// is looked at (it may be a group in flight), and nothing is damage.
    Reader,
}

/// Scans `seg` from offset `from`, verifying each record's checksum, and calls `on_record` with
/// each record of each whole batch, in order, with its offset. Records after the last whole batch
/// are not reported.
pub fn scan(
    seg: &Segment,
    from: u64,
    on_bad: OnBad,
    on_record: impl FnMut(&RecordView, u64) -> Result<()>,
) -> Result<ScanEnd> {
    scan_bytes(seg, seg.all_bytes(), from, on_bad, on_record)
}

/// Scans a compacted segment from offset `from` to its data end: each record still there,
/// checksum verified, and each record compaction removed (from the segment's table), in offset
/// order, handed to `on_event` as (stream, event type, event number, offset). A compacted
/// segment is sealed and was written whole before it was renamed into place: anything that
/// does not read is damage.
pub fn scan_compacted(
    seg: &Segment,
    from: u64,
    mut on_event: impl FnMut(&str, &str, u64, u64) -> Result<()>,
) -> Result<ScanEnd> {
    let Some(table) = seg.compacted.as_ref() else {
        return Err(corrupt(seg, 0, "internal: not a compacted segment"));
    };
    let bytes = seg.bytes();
    if (bytes.len() as u64) < table.table_at {
        return Err(corrupt(
            seg,
            table.table_at,
            "compacted segment shorter than its records",
        ));
    }
    let end = table.data_end as usize;
    let mut removed = table
        .removed
        .iter()
        .skip_while(|r| u64::from(r.offset) < from)
        .peekable();
    let mut off = from as usize;
    while off < end {
        if let Some((_, gap_end)) = table.gap_containing(off as u64) {
            while let Some(r) = removed.next_if(|r| (r.offset as usize) < gap_end as usize) {
                on_event(
                    table.name(r.stream),
                    table.name(r.event_type),
                    r.event_number,
                    u64::from(r.offset),
                )?;
            }
            off = gap_end as usize;
            continue;
        }
        let v = decode_record(bytes, table.file_off(off as u64) as usize, true).map_err(|e| {
            corrupt(
                seg,
                off as u64,
                match e {
                    RecordError::End => "zero record length inside a compacted segment",
                    RecordError::Bad(r) => r,
                },
            )
        })?;
        let text = |(a, b): (usize, usize)| std::str::from_utf8(&bytes[a..b]).unwrap_or("");
        on_event(
            text(v.stream),
            text(v.event_type),
            v.event_number,
            off as u64,
        )?;
        off += v.len;
    }
    Ok(ScanEnd {
        end: table.data_end,
        stopped_at: table.data_end,
        cut: None,
    })
}

/// Bytes of a segment a follower copies at first to look for batches past its end; doubled
/// while a record runs past the copy.
const FOLLOW_COPY: u64 = 64 * 1024;

/// For a read-only store beside a writer in another process: the whole batches from `from` on
/// in `seg`, as [`scan`] finds them with [`OnBad::Reader`], but in a copy of the bytes taken
/// once, so that what is checksummed is what is read (the writer may be changing the map).
/// Returns the copy, which starts at `from` (offsets given to `on_record` are the segment's),
/// and how the scan ended.
pub fn scan_copy(
    seg: &Segment,
    from: u64,
    mut on_record: impl FnMut(&RecordView, u64) -> Result<()>,
) -> Result<(Vec<u8>, ScanEnd)> {
    let avail = seg.usable().saturating_sub(from);
    let nothing = ScanEnd {
        end: from,
        stopped_at: from,
        cut: None,
    };
    // The usual case, checked without a copy: nothing written past the end yet.
    if avail < 4 || seg.copy_out(from, 4).iter().all(|&b| b == 0) {
        return Ok((Vec::new(), nothing));
    }
    let mut len = FOLLOW_COPY.min(avail);
    loop {
        let copy = seg.copy_out(from, len);
        let mut found: Vec<(RecordView, u64)> = Vec::new();
        let end = scan_bytes(seg, &copy, 0, OnBad::Reader, |rec, off| {
            found.push((*rec, off));
            Ok(())
        })?;
        let at = end.stopped_at as usize;
        let runs_past = copy.len() < at + 4 || u32_at(&copy, at) as usize > copy.len() - at;
        if runs_past && len < avail {
            len = (len * 2).min(avail);
            continue;
        }
        for (rec, off) in &found {
            on_record(rec, from + off)?;
        }
        let end = ScanEnd {
            end: from + end.end,
            stopped_at: from + end.stopped_at,
            cut: end.cut.map(|(off, why)| (from + off, why)),
        };
        return Ok((copy, end));
    }
}

/// [`scan`] over `bytes`, the segment's (or, for [`OnBad::Reader`], a copy of them starting at
/// offset 0).
fn scan_bytes(
    seg: &Segment,
    bytes: &[u8],
    from: u64,
    on_bad: OnBad,
    mut on_record: impl FnMut(&RecordView, u64) -> Result<()>,
) -> Result<ScanEnd> {
    let mut off = from as usize;
    let mut batch_start = off;
    let mut batch: Vec<RecordView> = Vec::new();
    let mut offsets: Vec<u64> = Vec::new();
    let mut cut = None;
    loop {
        match decode_record(bytes, off, true) {
            // One group's records share its timestamp. Beside a writer, a record of another
            // group inside a batch means the bytes changed under the scan: the batch's first
            // records were those of a batch a crashed writer left unfinished, and its
            // successor, after recovery zeroed them, wrote a batch of its own there. Not whole.
            Ok(v)
                if on_bad == OnBad::Reader
                    && batch
                        .first()
                        .is_some_and(|f| f.timestamp_micros != v.timestamp_micros) =>
            {
                cut = Some((off as u64, "a batch not written whole yet"));
                break;
            }
            Ok(v) => {
                batch.push(v);
                offsets.push(off as u64);
                off += v.len;
                if v.is_batch_end() {
                    for (rec, at) in batch.iter().zip(&offsets) {
                        on_record(rec, *at)?;
                    }
                    batch.clear();
                    offsets.clear();
                    batch_start = off;
                }
            }
            Err(RecordError::End)
                if on_bad != OnBad::Reader
                    && bytes_after(seg, off as u64)?
                    && record_after(bytes, off) =>
            {
                // A zero length word with records after it is not the end of the log: a zeroed
                // sector or page, either in the group that was being written (a torn tail) or
                // under records already committed (damage), told apart as for a bad record.
                // Stray bytes that are not records, past the end, lose nothing and are ignored.
                let group = batch.first().map(|v| v.timestamp_micros);
                let torn = on_bad == OnBad::TornTailAllowed && !damaged_mid_log(bytes, off, group);
                let reason = "zero record length with data after it";
                if !torn && on_bad != OnBad::Salvage {
                    return Err(corrupt(seg, off as u64, reason));
                }
                cut = Some((off as u64, reason));
                break;
            }
            Err(RecordError::End) => {
                if !batch.is_empty() && on_bad == OnBad::Reader {
                    cut = Some((off as u64, "a batch not written whole yet"));
                }
                if !batch.is_empty() && on_bad == OnBad::Strict {
                    return Err(corrupt(
                        seg,
                        batch_start as u64,
                        "sealed segment ends inside a batch",
                    ));
                }
                break;
            }
            Err(RecordError::Bad(_)) if on_bad == OnBad::Reader => {
                cut = Some((off as u64, "a record not written whole yet"));
                break;
            }
            Err(RecordError::Bad(reason)) => {
                // The group in flight is the one of the unfinished batch's records so far, or
                // else the one the bad record names (its timestamp is 8-aligned inside its
                // first 32 bytes, so it is either written whole or still zero).
                let group = batch.first().map(|v| v.timestamp_micros).or_else(|| {
                    bytes
                        .get(off + 24..off + 32)
                        .map(|b| u64_at(b, 0))
                        .filter(|&t| t != 0)
                });
                let torn = on_bad == OnBad::TornTailAllowed && !damaged_mid_log(bytes, off, group);
                if !torn && on_bad != OnBad::Salvage {
                    return Err(corrupt(seg, off as u64, reason));
                }
                cut = Some((off as u64, reason));
                break;
            }
        }
    }
    Ok(ScanEnd {
        end: batch_start as u64,
        stopped_at: off as u64,
        cut,
    })
}

/// Whether a whole, checksummed record starts anywhere after `off`.
fn record_after(bytes: &[u8], off: usize) -> bool {
    let mut at = off + RECORD_ALIGN;
    while at + MIN_RECORD_LEN <= bytes.len() {
        if decode_record(bytes, at, true).is_ok() {
            return true;
        }
        at += RECORD_ALIGN;
    }
    false
}

/// Whether valid records after the bad record at `bad` show damage in the middle of the log
/// rather than a torn tail.
///
/// One group commit writes all its records with one timestamp, in one write. A crash during that
/// write can leave any of its pages unwritten while later ones reached the disk, so valid records
/// of the same group after a bad one are still a torn tail. Valid records of two different groups
/// after it mean the bad record was followed by later commits: damage.
fn damaged_mid_log(bytes: &[u8], bad: usize, group_timestamp: Option<u64>) -> bool {
    let mut seen = group_timestamp;
    let mut off = bad + RECORD_ALIGN;
    while off + MIN_RECORD_LEN <= bytes.len() {
        let len = u32_at(bytes, off) as usize;
        if len >= MIN_RECORD_LEN && len.is_multiple_of(RECORD_ALIGN) && len <= bytes.len() - off {
            if let Ok(v) = decode_record(bytes, off, true) {
                match seen {
                    Some(t) if t != v.timestamp_micros => return true,
                    _ => seen = Some(v.timestamp_micros),
                }
                off += v.len;
                continue;
            }
        }
        off += RECORD_ALIGN;
    }
    false
}

/// Whether any byte of the segment file from `from` on is not zero. Read with positioned reads, a
/// chunk at a time, so that checking the empty rest of a segment maps none of it; ranges the file
/// system reports as holes (reserved, never written space) are skipped without reading.
fn bytes_after(seg: &Segment, from: u64) -> Result<bool> {
    let len = seg
        .file
        .metadata()
        .at("reading the size of", &seg.path)?
        .len();
    let end = seg.capacity.min(len);
    let mut buf = vec![0u8; ZERO_CHECK_CHUNK];
    // Reading reserved space fills the page cache with zero pages (and read-ahead with more),
    // which the next `SEEK_DATA` reports as data to read again: no read-ahead here, and what was
    // read is dropped from the cache afterwards (clean pages only).
    advise(&seg.file, 0, 0, libc::POSIX_FADV_RANDOM);
    let found = zero_or_not(seg, from, end, &mut buf);
    advise(&seg.file, 0, 0, libc::POSIX_FADV_NORMAL);
    forget_cached(&seg.file, from, end.saturating_sub(from));
    found
}

/// Bytes read at a time by [`bytes_after`].
const ZERO_CHECK_CHUNK: usize = 256 * 1024;

/// Whether any byte of `from..end` of the segment's file is not zero, holes skipped.
fn zero_or_not(seg: &Segment, from: u64, end: u64, buf: &mut [u8]) -> Result<bool> {
    let mut at = from;
    while at < end {
        let (data, hole) = match data_range(&seg.file, at, end) {
            Some(r) => r,
            None => return Ok(false),
        };
        let mut pos = data;
        while pos < hole {
            let n = ((hole - pos) as usize).min(ZERO_CHECK_CHUNK);
            seg.disk
                .read_exact_at(&seg.file, &seg.path, &mut buf[..n], pos)?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(true);
            }
            pos += n as u64;
        }
        at = hole;
    }
    Ok(false)
}

/// Drops the page cache's clean pages of `file` in `at..at + len`.
fn forget_cached(file: &std::fs::File, at: u64, len: u64) {
    advise(file, at, len, libc::POSIX_FADV_DONTNEED);
}

/// `posix_fadvise`: advice, whose failure changes nothing but speed.
fn advise(file: &std::fs::File, at: u64, len: u64, advice: libc::c_int) {
    use std::os::fd::AsRawFd;
    let (Ok(at), Ok(len)) = (libc::off_t::try_from(at), libc::off_t::try_from(len)) else {
        return;
    };
    // SAFETY: a plain system call on a descriptor we own; no memory is passed.
    let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), at, len, advice) };
}

/// The next range of `file` at or after `at` (and before `end`) that may hold data, as told by
/// `SEEK_DATA`/`SEEK_HOLE`; `None` if the rest is a hole. Where the calls are not supported, the
/// whole rest.
fn data_range(file: &std::fs::File, at: u64, end: u64) -> Option<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let seek = |whence: libc::c_int, from: u64| -> std::result::Result<u64, i32> {
        let from = libc::off_t::try_from(from).map_err(|_| libc::EINVAL)?;
        // SAFETY: a plain system call on a descriptor we own; it only reads the file's extent
        // map (the file offset it moves is not used: all reads here are positioned).
        let r = unsafe { libc::lseek(file.as_raw_fd(), from, whence) };
        if r < 0 {
            Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL))
        } else {
            Ok(r as u64)
        }
    };
    match seek(libc::SEEK_DATA, at) {
        Err(libc::ENXIO) => None,
        Err(_) => Some((at, end)),
        Ok(data) if data >= end => None,
        Ok(data) => {
            let hole = seek(libc::SEEK_HOLE, data).unwrap_or(end).min(end);
            Some((data, hole.max(data + 1).min(end)))
        }
    }
}

fn corrupt(seg: &Segment, offset: u64, reason: &str) -> Error {
    Error::Corrupt {
        file: seg.path.clone(),
        offset,
        reason: reason.to_string(),
    }
}

/// Cuts the segment at `end`: everything after reads as zeros (the end of the log) again, as
/// far as the file went before (it is not grown to a capacity its header may overstate).
///
/// The bytes are zeroed in place (a hole punched), not cut off and grown back: the file never
/// gets shorter, so a read-only store that has it mapped beside this writer never faults on a
/// page past its end. Where the file system cannot punch holes, zeros are written.
pub fn truncate(seg: &Segment, end: u64) -> Result<()> {
    let len = seg.usable();
    if end < len {
        match seg.disk.punch(&seg.file, &seg.path, end, len - end) {
            Ok(()) => {}
            Err(Error::Io { source, .. })
                if matches!(
                    source.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
                ) =>
            {
                // Written over with zeros rather than cut off: never shorter (see above).
                let zeros = vec![0u8; 1 << 20];
                let mut at = end;
                while at < len {
                    let n = (len - at).min(zeros.len() as u64) as usize;
                    seg.disk
                        .write_all_at(&seg.file, &seg.path, &zeros[..n], at)?;
                    at += n as u64;
                }
            }
            Err(e) => return Err(e),
        }
    }
    seg.disk.allocate(&seg.file, &seg.path, len)?;
    seg.disk.sync_all(&seg.file, &seg.path)?;
    Ok(())
}
