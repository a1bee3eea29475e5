//! A full check of a store's files, reading only: every record of every segment against its
//! checksum, every index file against its checksums and against the records it points at, and
//! every id table against its checksums.
//!
//! Opening a store checks much less (the tail of the log, index file headers, samples), and
//! reads check what they touch; this is for finding damage before a read trips on it, and for
//! telling which file holds it. The rules themselves are not repeated here: records are decoded
//! by `log::format` through the recovery scan, index files by `index::persist`, id tables by
//! `ids`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::ids::parse_ids_file_name;
use crate::index::persist::{self, index_file_name};
use crate::index::Key;
use crate::log::format::{decode_record, SEGMENT_HEADER_LEN};
use crate::log::recovery::{self, OnBad};
use crate::log::segment::{segment_file_name, Segment};
use crate::startup::{blank_segment, check_meta, META_FILE};

/// The files of a store, as [`inventory`] lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inventory {
    /// The store's format version (from its meta file).
    pub format_version: u32,
    /// Segment files, oldest first: path, base position, length in bytes.
    pub segments: Vec<(PathBuf, u64, u64)>,
    /// Index files (`<base>.idx`), by name: path and length.
    pub index_files: Vec<(PathBuf, u64)>,
    /// Event-id table files (`<base>.ids`), by name: path and length.
    pub id_tables: Vec<(PathBuf, u64)>,
}

impl Inventory {
    /// Bytes of all the files listed.
    pub fn total_bytes(&self) -> u64 {
        let segs: u64 = self.segments.iter().map(|s| s.2).sum();
        let rest: u64 = self
            .index_files
            .iter()
            .chain(&self.id_tables)
            .map(|f| f.1)
            .sum();
        segs + rest
    }
}

/// Lists the files of the store in `dir` and reads its format version, reading nothing else
/// and changing nothing. Fails with [`Error::NotAStore`] if `dir` holds no store,
/// [`Error::Corrupt`] for a damaged meta file and [`Error::UnsupportedVersion`] for a newer
/// format.
pub fn inventory(dir: &Path) -> Result<Inventory> {
    let disk = Disk::default().read_only();
    if !dir.is_dir() {
        return Err(Error::NotAStore {
            path: dir.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    let meta = dir.join(META_FILE);
    let meta_bytes = match disk.read_whole(&meta) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => {
            return Err(Error::NotAStore {
                path: dir.to_path_buf(),
                reason: format!("no {META_FILE}"),
            })
        }
        Err(e) => return Err(e),
    };
    let mut inv = Inventory {
        format_version: check_meta(dir, &meta_bytes)?,
        ..Inventory::default()
    };
    // A read-only disk refuses the removal of leftover temporary files the listing would do.
    for (base, path) in recovery::list_segments(dir, &disk)? {
        let len = file_len(&path);
        inv.segments.push((path, base, len));
    }
    let listing = "listing the files of";
    let mut others = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(listing, dir, e))? {
        let entry = entry.map_err(|e| Error::io(listing, dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if parse_index_file_name(&name).is_some() || parse_ids_file_name(&name).is_some() {
            others.push((name.into_owned(), entry.path()));
        }
    }
    others.sort();
    for (name, path) in others {
        let len = file_len(&path);
        if parse_ids_file_name(&name).is_some() {
            inv.id_tables.push((path, len));
        } else {
            inv.index_files.push((path, len));
        }
    }
    Ok(inv)
}

/// What [`verify`] checked in a store found whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// The store's format version (from its meta file).
    pub format_version: u32,
    /// Every segment, oldest first.
    pub segments: Vec<SegmentCheck>,
    /// Index files checked.
    pub index_files: usize,
    /// Offsets of index files checked against their records.
    pub index_offsets: u64,
    /// Id table files checked.
    pub id_tables: usize,
    /// Entries of the id tables checked.
    pub id_entries: u64,
    /// Events in the log (whole batches only).
    pub events: u64,
    /// Where the newest segment stops being readable, if it does before its written end: a torn
    /// write a crash left (the next writable open cuts it), or a batch a running writer is
    /// writing. Not damage: nothing acknowledged is there.
    pub unfinished_tail: Option<(PathBuf, u64)>,
    /// Files passed over, with why: cache files of another layout version (rebuilt when a
    /// writer opens the store), a blank newest segment.
    pub skipped: Vec<(PathBuf, String)>,
}

/// One segment as [`verify`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentCheck {
    /// The file.
    pub path: PathBuf,
    /// Global position of its first byte.
    pub base: u64,
    /// The file's length in bytes (its preallocated capacity, mostly).
    pub file_len: u64,
    /// Offset just past its last whole batch.
    pub end: u64,
    /// Events in it.
    pub events: u64,
}

/// Checks every file of the store in `dir`, reading only: nothing is written, cut, removed or
/// locked, so it can run beside a writer in another process (whose batch in flight may then
/// show as [`Report::unfinished_tail`]).
///
/// `progress(done, total)` is called as bytes are checked (segments' written parts, then index
/// and id table files), for a progress bar.
///
/// Fails with [`Error::Corrupt`] naming the first damaged file and the offset of the damage in
/// it, [`Error::NotAStore`] if `dir` holds no store, [`Error::UnsupportedVersion`] for a newer
/// format, and [`Error::Io`] if a file cannot be read.
pub fn verify(dir: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<Report> {
    let disk = Disk::default().read_only();
    let inv = inventory(dir)?;
    let mut report = Report {
        format_version: inv.format_version,
        ..Report::default()
    };
    let total = inv.total_bytes();
    let mut done = 0u64;
    progress(done, total);

    // Record offsets of each segment, to check index files against.
    let mut records: BTreeMap<u64, (Segment, Vec<u32>, u64)> = BTreeMap::new();
    // Each stream's next event number: the log must number every stream's events 0, 1, 2...
    // in position order, as opening checks (an index file may be missing, so the log alone
    // must show it).
    let mut next_numbers: std::collections::HashMap<Box<str>, u64> =
        std::collections::HashMap::new();
    let mut expected_base = 0u64;
    let count = inv.segments.len();
    for (i, (path, base, len)) in inv.segments.iter().enumerate() {
        let (base, len) = (*base, *len);
        let newest = i + 1 == count;
        if newest && blank_segment(path, &disk)? {
            // What a crash during the creation of a segment leaves: it held nothing.
            report
                .skipped
                .push((path.clone(), "blank newest segment".into()));
            continue;
        }
        let seg = Segment::open(path, base, false, &disk)?;
        if seg.base > expected_base && dir.join(segment_file_name(expected_base)).exists() {
            // The listing missed a segment a writer created while it ran, and saw a newer one:
            // the log this check sees ends before the gap.
            for (later, ..) in &inv.segments[i..] {
                let why = "created during the check (a writer is running)";
                report.skipped.push((later.clone(), why.into()));
            }
            break;
        }
        if seg.base != expected_base {
            return Err(Error::Corrupt {
                file: path.clone(),
                offset: 16,
                reason: format!(
                    "segment starts at {}, but the log continues at {expected_base}",
                    seg.base
                ),
            });
        }
        expected_base = seg.end_base();
        let start = done;
        let on_bad = if newest {
            OnBad::TornTailAllowed
        } else {
            OnBad::Strict
        };
        let (offsets, end) = scan_settled(&seg, on_bad, &mut |off| progress(start + off, total))?;
        if let Some((at, _)) = end.cut {
            report.unfinished_tail = Some((path.clone(), at));
        } else if end.stopped_at > end.end {
            report.unfinished_tail = Some((path.clone(), end.end));
        }
        check_numbering(&seg, path, &offsets, &mut next_numbers)?;
        report.events += offsets.len() as u64;
        report.segments.push(SegmentCheck {
            path: path.clone(),
            base: seg.base,
            file_len: len,
            end: end.end,
            events: offsets.len() as u64,
        });
        records.insert(seg.base, (seg, offsets, end.end));
        done += len;
        progress(done, total);
    }

    for (path, len) in &inv.id_tables {
        match crate::ids::check_file(&disk, path) {
            Ok(Some(entries)) => {
                report.id_tables += 1;
                report.id_entries += entries;
            }
            Ok(None) => report
                .skipped
                .push((path.clone(), "id table of another layout version".into())),
            // Replaced by a merge of a running writer since the listing.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        done += len;
        progress(done, total);
    }
    for (path, len) in &inv.index_files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let base = parse_index_file_name(name);
        match base.and_then(|b| records.get(&b)) {
            Some((seg, offsets, end)) => {
                let n = check_index_file(path, seg, offsets, *end, &disk, &mut report)?;
                if let Some(n) = n {
                    report.index_files += 1;
                    report.index_offsets += n;
                }
            }
            None => report
                .skipped
                .push((path.clone(), "index file without its segment".into())),
        }
        done += len;
        progress(done, total);
    }
    Ok(report)
}

/// Checks that the records at `offsets` (whole, checked already) continue their streams'
/// numbering from `next`, which it moves on.
fn check_numbering(
    seg: &Segment,
    path: &Path,
    offsets: &[u32],
    next: &mut std::collections::HashMap<Box<str>, u64>,
) -> Result<()> {
    for &off in offsets {
        let damage = |reason: String| Error::Corrupt {
            file: path.to_path_buf(),
            offset: u64::from(off),
            reason,
        };
        let (stream, _, number) = record_at(seg, off)
            .ok_or_else(|| damage("record unreadable on a second look".into()))?;
        let expected = next.get(stream).copied().unwrap_or(0);
        if number != expected {
            return Err(damage(format!(
                "stream `{}` continues with event {} where {expected} belongs",
                printable(stream),
                number
            )));
        }
        match next.get_mut(stream) {
            Some(n) => *n += 1,
            None => {
                next.insert(stream.into(), 1);
            }
        }
    }
    Ok(())
}

/// The stream, event type and number of the record at `off` of `seg` (checked already), or of
/// the record compaction removed from there.
fn record_at(seg: &Segment, off: u32) -> Option<(&str, &str, u64)> {
    if let Some(c) = &seg.compacted {
        if c.gap_containing(u64::from(off)).is_some() {
            let r = c.removed_at(u64::from(off))?;
            return Some((c.name(r.stream), c.name(r.event_type), r.event_number));
        }
    }
    // Segments opened here have no data end set; a compacted one's is in its header.
    let bytes = if seg.compacted.is_some() {
        seg.bytes()
    } else {
        seg.all_bytes()
    };
    let r = decode_record(bytes, seg.file_off(u64::from(off)) as usize, false).ok()?;
    let text = |(a, b): (usize, usize)| std::str::from_utf8(&bytes[a..b]).ok();
    Some((text(r.stream)?, text(r.event_type)?, r.event_number))
}

/// Scans `seg` as recovery does ([`recovery::scan`]), with the offsets of its records. A writer
/// beside the check may be writing the segment while it is read (the newest, or one a group
/// rolls through): what looks like damage may be a batch landing under the scan. Such a scan
/// is repeated: bytes that are landing read differently the next time, damage reads the same,
/// so damage is reported once two scans in a row find it at the same offset.
fn scan_settled(
    seg: &Segment,
    on_bad: OnBad,
    progress: &mut dyn FnMut(u64),
) -> Result<(Vec<u32>, recovery::ScanEnd)> {
    let mut last: Option<u64> = None;
    // A writer moves on; a bound all the same, past which the finding is reported.
    let mut tries = 0;
    if seg.compacted.is_some() {
        // Sealed and written whole before it was renamed into place: read once.
        let mut offsets = Vec::new();
        let end = recovery::scan_compacted(seg, SEGMENT_HEADER_LEN as u64, |_, _, _, off| {
            offsets.push(off as u32);
            if offsets.len().is_multiple_of(4096) {
                progress(off);
            }
            Ok(())
        })?;
        return Ok((offsets, end));
    }
    loop {
        let mut offsets = Vec::new();
        let scanned = recovery::scan(seg, SEGMENT_HEADER_LEN as u64, on_bad, |_, off| {
            offsets.push(off as u32);
            if offsets.len().is_multiple_of(4096) {
                progress(off);
            }
            Ok(())
        });
        tries += 1;
        match scanned {
            Ok(end) => return Ok((offsets, end)),
            Err(Error::Corrupt { offset, .. }) if last != Some(offset) && tries < 100 => {
                last = Some(offset)
            }
            Err(e) => return Err(e),
        }
    }
}

/// Checks the index file at `path` of `seg`, whose whole batches hold records at `offsets` and
/// end at `whole_end`: the number of offsets it holds, or `None` if it was passed over (see
/// [`Report::skipped`]).
fn check_index_file(
    path: &Path,
    seg: &Segment,
    offsets: &[u32],
    whole_end: u64,
    disk: &Disk,
    report: &mut Report,
) -> Result<Option<u64>> {
    let damage = |at: usize, reason: String| Error::Corrupt {
        file: path.to_path_buf(),
        offset: at as u64,
        reason,
    };
    let file = match persist::open_checked(path, seg.base, seg.extent(), disk)? {
        None => return Ok(None),
        Some(Ok(file)) => file,
        Some(Err(r)) if r.stale => {
            report.skipped.push((path.to_path_buf(), r.reason.into()));
            return Ok(None);
        }
        Some(Err(r)) => return Err(damage(r.at, r.reason.into())),
    };
    let covered_end = file.covered_end;
    let newest = report.segments.last().is_some_and(|s| s.base == seg.base);
    if covered_end > whole_end && newest {
        // A writer beside this check may have appended and saved the file after the segment
        // was scanned: newer than the scan, not damage, if the log now holds what it covers.
        // Without a writer the log reads the same again, and it is damage.
        let (_, again) = scan_settled(seg, OnBad::TornTailAllowed, &mut |_| {})?;
        if again.end >= covered_end {
            let why = "index file newer than the scan of its segment (a writer is running)";
            report.skipped.push((path.to_path_buf(), why.into()));
            return Ok(None);
        }
    }
    if covered_end > whole_end {
        return Err(damage(
            24,
            format!(
                "covers the segment up to {covered_end}, past its last whole batch at {whole_end}"
            ),
        ));
    }
    let entries = file.entries().map_err(|d| {
        damage(
            d.at,
            "directory or names block fails its checksum or is malformed".into(),
        )
    })?;
    let mut checked = 0u64;
    for e in &entries {
        let name = file.name(e);
        if !file.run_is_intact(e.offsets_at, e.count, e.crc) {
            return Err(damage(
                e.offsets_at,
                format!(
                    "offsets of `{}` fail their checksum or order",
                    printable(name)
                ),
            ));
        }
        let key = Key::parse(name);
        for k in 0..e.count as usize {
            let off = file.offset(e.offsets_at, k);
            let n = e.first_event + k as u64;
            let wrong = |why: &str| {
                damage(
                    e.offsets_at + 4 * k,
                    format!(
                        "entry {n} of `{}` points at offset {off}, {why}",
                        printable(name)
                    ),
                )
            };
            if offsets.binary_search(&off).is_err() {
                return Err(wrong("where no record of a whole batch starts"));
            }
            let (stream, event_type, number) =
                record_at(seg, off).ok_or_else(|| wrong("where no record starts"))?;
            if !key.holds(stream, event_type, number, n) {
                return Err(wrong("a record of another stream, type or number"));
            }
            checked += 1;
        }
    }
    Ok(Some(checked))
}

/// Index key names start with a NUL byte: shown without it.
fn printable(name: &str) -> String {
    match Key::parse(name) {
        Key::Stream(s) => s.to_string(),
        Key::Category(c) => format!("category {c}"),
        Key::EventType(t) => format!("event type {t}"),
    }
}

/// The base an index file name stands for.
fn parse_index_file_name(name: &str) -> Option<u64> {
    let base: u64 = name.strip_suffix(".idx")?.parse().ok()?;
    (index_file_name(base) == name).then_some(base)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}
