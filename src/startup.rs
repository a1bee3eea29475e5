//! Opening a store's directory: its own files (the meta file, which marks it as a store and
//! says its format version, and the lock), and recovery: finding the segments, the last whole
//! batch and the stream index, from the index files where they hold and from the log where they
//! do not (FORMAT.md, "Opening a store: recovery"). `Store::open` and `Store::backup` call it; the
//! façade in `store` keeps none of it.

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk::Disk;
use crate::error::{Error, IoContext, Result};
use crate::ids::IdTables;
use crate::index::persist::{self, IndexFile};
use crate::index::{Index, Key, KeyCache};
use crate::log::format::{
    decode_record, u32_at, HeaderError, RecordView, SegmentHeader, COMPACTED_VERSION,
    FORMAT_VERSION, SEGMENT_HEADER_LEN,
};
use crate::log::reader::LogView;
use crate::log::recovery::{self, OnBad};
use crate::log::segment::Segment;
use crate::manifest::{self, Manifest};
use crate::options::{Durability, Options, Recovery};

/// Name of the file that marks a directory as a store and holds its format version.
pub const META_FILE: &str = "eventjournal.meta";
/// Name of the lock file; an exclusive `flock` on it is held while the store is open.
pub const LOCK_FILE: &str = "LOCK";
/// First eight bytes of the meta file.
const META_MAGIC: [u8; 8] = *b"EVJLSTOR";

/// Opens the event-id tables of the sealed segments, each checked against the log on a sample
/// of its entries: a table that disagrees is dropped, and its segments' ids read from the log
/// again by the worker.
pub(crate) fn open_id_tables(
    dir: &Path,
    options: &Options,
    sealed: &[Arc<Segment>],
    manifest: Option<&Manifest>,
) -> Result<IdTables> {
    let sync = options.durability != Durability::None;
    let disk = &options.disk;
    let vouched = |base, stamp| manifest.is_some_and(|m| m.vouches_table(base, stamp));
    let tables = IdTables::open(dir, disk, sync, disk.is_watched(), sealed, &vouched)?;
    let view = LogView::new(Arc::new(sealed.to_vec()), u64::MAX, true);
    for t in tables.snapshot().tables.iter() {
        // A table the last clean close vouched for was checked (or written) by that store.
        if t.stamp().is_some_and(|stamp| vouched(t.base, stamp)) {
            continue;
        }
        let mut agrees = true;
        for &(hash, pos) in &t.sample(16) {
            let e = match view.event_at(pos) {
                Ok(e) => e,
                // A segment that cannot be mapped says nothing of the table: the open fails, as
                // it would if that segment were mapped when opened.
                Err(e @ Error::Io { .. }) => return Err(e),
                Err(_) => {
                    agrees = false;
                    break;
                }
            };
            // An entry of a record compaction removed: it can match no lookup.
            let Some(e) = e else { continue };
            let stream = e.stream();
            let matches = crate::ids::id_hash(&e.id()) == hash
                || [
                    Key::Stream(stream).name(),
                    Key::Category(crate::types::category_of(stream)).name(),
                    Key::EventType(e.event_type()).name(),
                ]
                .iter()
                .any(|k| persist::name_hash(k) == hash);
            if !matches {
                agrees = false;
                break;
            }
        }
        if !agrees {
            tables.drop_broken(t);
        }
    }
    Ok(tables)
}

/// Makes sure `dir` is a store directory: an existing store, or a new empty one.
pub(crate) fn prepare_dir(dir: &Path, disk: &Disk) -> Result<()> {
    let not_a_store = |reason: &str| Error::NotAStore {
        path: dir.to_path_buf(),
        reason: reason.to_string(),
    };
    if dir.as_os_str().is_empty() {
        return Err(Error::InvalidInput(
            "the store directory path is empty".into(),
        ));
    }
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(not_a_store("not a directory")),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            disk.create_dir_all(dir)?;
            // The new directory's own entry must be durable too, or a power loss could take the
            // whole store, acknowledged appends and all, with it.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                disk.sync_dir(parent)?;
            }
        }
        Err(e) => return Err(Error::io("opening", dir, e)),
    }
    let meta = dir.join(META_FILE);
    match disk.read_whole(&meta) {
        Ok(bytes) => check_meta(dir, &bytes).map(|_| ()),
        Err(e) if e.is_not_found() => {
            if let Some(name) = foreign_file(dir)? {
                return Err(not_a_store(&format!(
                    "it holds `{name}` but no {META_FILE}; a new store needs an empty directory"
                )));
            }
            write_meta(dir, FORMAT_VERSION, disk)
        }
        Err(e) => Err(e),
    }
}

/// Writes the meta file of the store in `dir` with format `version`: under a temporary name,
/// synced, renamed into place, and the directory synced.
pub(crate) fn write_meta(dir: &Path, version: u32, disk: &Disk) -> Result<()> {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&META_MAGIC);
    bytes.extend_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    let f = disk.create(&tmp)?;
    disk.write_all_at(&f, &tmp, &bytes, 0)?;
    disk.sync_all(&f, &tmp)?;
    drop(f);
    disk.rename(&tmp, &dir.join(META_FILE))?;
    disk.sync_dir(dir)
}

/// The format version of the store in `dir`, from its meta file.
pub(crate) fn meta_version(dir: &Path, disk: &Disk) -> Result<u32> {
    check_meta(dir, &disk.read_whole(&dir.join(META_FILE))?)
}

/// The format version a meta file's `bytes` give, checked (the meta file of the store in `dir`).
pub(crate) fn check_meta(dir: &Path, bytes: &[u8]) -> Result<u32> {
    let meta = dir.join(META_FILE);
    if bytes.len() != 16 || bytes[..8] != META_MAGIC {
        return Err(Error::NotAStore {
            path: dir.to_path_buf(),
            reason: "unrecognised eventjournal.meta".into(),
        });
    }
    if crc32fast::hash(&bytes[..12]) != u32_at(bytes, 12) {
        return Err(Error::Corrupt {
            file: meta,
            offset: 0,
            reason: "meta file checksum mismatch".into(),
        });
    }
    let version = u32_at(bytes, 8);
    if version > COMPACTED_VERSION || version == 0 {
        return Err(Error::UnsupportedVersion {
            file: meta,
            found: version,
            supported: COMPACTED_VERSION,
        });
    }
    Ok(version)
}

/// The first file in `dir`, a directory without a meta file, that a new store may not be
/// created beside. Leftover temporary files of an interrupted creation are fine, and so is
/// `lost+found`, which every new ext2/3/4 file system has at its root.
fn foreign_file(dir: &Path) -> Result<Option<String>> {
    let listing = "listing the files of";
    for entry in fs::read_dir(dir).at(listing, dir)? {
        let name = entry.at(listing, dir)?.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".tmp") || name == "lost+found" {
            continue;
        }
        return Ok(Some(name.into_owned()));
    }
    Ok(None)
}

pub(crate) fn lock_dir(dir: &Path, disk: &Disk) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = disk.open_lock(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(TryLockError::Error(e)) => Err(Error::io("locking", &path, e)),
    }
}

/// Why a pass over the segments must start again without index files.
enum Pass {
    Failed(Error),
    Rebuild,
}

impl From<Error> for Pass {
    fn from(e: Error) -> Pass {
        Pass::Failed(e)
    }
}

/// Opens the segments and builds the index: from index files where they are valid, scanning the
/// log only past what they cover (and everything, if one disagrees with the log).
pub(crate) fn recover(dir: &Path, options: &Options) -> Result<Recovered> {
    let _span = tracing::info_span!("recovery", dir = %dir.display()).entered();
    let salvage = options.recovery == Recovery::Salvage;
    match recover_pass(dir, options, !salvage) {
        Ok(r) => Ok(r),
        Err(Pass::Failed(e)) => Err(e),
        Err(Pass::Rebuild) => {
            tracing::warn!("an index file disagrees with the log: rebuilding the index from it");
            match recover_pass(dir, options, false) {
                Ok(r) => Ok(r),
                Err(Pass::Failed(e)) => Err(e),
                Err(Pass::Rebuild) => Err(Error::InvalidInput(
                    "internal: index rebuild without index files".into(),
                )),
            }
        }
    }
}

/// What opening found: the segments (the newest whole up to its data end), the index of
/// everything in them, and the manifest of the last clean close, if one was used.
pub(crate) type Recovered = (Vec<Arc<Segment>>, Index, Option<Arc<Manifest>>);

fn recover_pass(dir: &Path, options: &Options, use_index_files: bool) -> Result<Recovered, Pass> {
    let salvage = options.recovery == Recovery::Salvage;
    let sync = options.durability != Durability::None;
    let disk = &options.disk;
    let mut listed = recovery::list_segments(dir, disk)?;
    // A newest segment whose header never reached the disk held no acknowledged batch.
    if let Some((base, path)) = listed.last() {
        if blank_segment(path, disk)? {
            // A read-only open leaves it where it is, and reads the log without it.
            if !disk.is_read_only() {
                disk.remove(path)?;
                let _ = disk.remove(&dir.join(persist::index_file_name(*base)));
            }
            listed.pop();
        }
    }
    if salvage {
        // Salvage keeps the log up to the last segment that opens and follows on; found before
        // scanning, so that the newest kept segment is treated as the newest.
        let mut expected_base = 0;
        for (i, (base, path)) in listed.iter().enumerate() {
            match Segment::open(path, *base, true, disk) {
                Ok(seg) if seg.base == expected_base => expected_base = seg.end_base(),
                Ok(_) | Err(Error::Corrupt { .. }) if i > 0 => {
                    set_aside(dir, &listed[i..], disk)?;
                    listed.truncate(i);
                    break;
                }
                _ => break, // reported by the scan loop below
            }
        }
    }
    // What the last clean close vouched for: sealed segments whose files are still the ones it
    // named need no spot check (see `manifest`). Not for a salvage, which checks everything.
    let manifest = if use_index_files && !salvage {
        Manifest::read(dir, listed.len(), disk).map(Arc::new)
    } else {
        None
    };
    // With a manifest, most of opening a sealed segment is opening its two files: half of them
    // are opened on a second thread meanwhile.
    let mut ahead = manifest
        .as_ref()
        .filter(|_| listed.len() > OPEN_AHEAD_FROM)
        .and_then(|m| OpenAhead::start(dir, &listed, m.clone(), disk));
    let mut index = Index::new();
    let mut secondary = KeyCache::default();
    let mut used_index_files = false;
    let mut segments: Vec<Arc<Segment>> = Vec::new();
    let count = listed.len();
    let mut i = 0;
    while i < count {
        let (base, path) = &listed[i];
        let base = *base;
        let is_last = i + 1 == count;
        // Beside a writer, any segment without an index file covering it may be being written
        // (a group can roll through several segments before it is published, and a segment's
        // file is written when it is sealed, after that): for a read-only store, the first
        // record of a scan that does not read whole ends the log, whatever follows, and is
        // never called damage.
        let reader = disk.is_read_only();
        let expected_base = segments.last().map_or(0, |s| s.end_base());
        if reader && base != expected_base && !segments.is_empty() {
            // A directory listing taken while the writer creates segments can miss one and see
            // the next: the log this reader shows ends before the gap.
            break;
        }
        let (opened, index_file) = match ahead.as_mut().and_then(|a| a.take(i)) {
            Some((seg, file)) => (seg, Some(file)),
            // A sealed segment is mapped when first read (or scanned, below).
            None if is_last => (Segment::open(path, base, true, disk), None),
            None => (Segment::open_unmapped(path, base, true, disk), None),
        };
        let opened = opened.and_then(|seg| {
            if base == expected_base {
                Ok(seg)
            } else {
                Err(Error::Corrupt {
                    file: path.clone(),
                    offset: 16,
                    reason: format!(
                        "segment starts at {base}, but the log continues at {expected_base}"
                    ),
                })
            }
        });
        let seg = opened?;
        // A compacted segment is sealed, whatever follows it: it is never appended to, and its
        // file ends at its compaction table.
        let compacted = seg.compacted.is_some();
        let is_last = is_last && !compacted;
        if reader && !is_last && !compacted && seg.usable() < seg.capacity {
            // Segments are created at full size and only the newest is ever cut (by a writer's
            // recovery, which extends it again): one with a successor, shorter, lost its end.
            return Err(Pass::Failed(Error::Corrupt {
                file: path.clone(),
                offset: seg.usable(),
                reason: format!(
                    "the segment file ends at {} of its {} bytes",
                    seg.usable(),
                    seg.capacity
                ),
            }));
        }
        let mut from = SEGMENT_HEADER_LEN as u64;
        let mut had_index_file = false;
        // A sealed segment whose index file covers every record needs no scan: probing its end
        // through the map would map a page (or a 2 MiB folio) of the log into memory.
        let mut covered = false;
        let mut eager = use_index_files;
        if use_index_files {
            // The streams of a segment whose index file covers it (the newest: up to the file's
            // `covered_end`) are left in the file, to be looked up when first used.
            // A sealed segment the manifest vouches for has its index file covering all of it,
            // checked against it by the store that closed cleanly.
            let vouches = |stamp, end| {
                !is_last
                    && manifest
                        .as_ref()
                        .is_some_and(|m| m.vouches(base, seg.stamp, Some(stamp), end))
            };
            let file = match index_file {
                Some(opened) => opened,
                None => persist::open_vouched(dir, base, seg.extent(), disk, &vouches),
            };
            if let Some(file) = file {
                let end = file.covered_end;
                let vouched = file.stamp.is_some_and(|s| vouches(s, end));
                if !vouched && (!ends_a_batch(&seg, end) || !sample_matches(&seg, &file)) {
                    return Err(Pass::Rebuild);
                }
                let more = !vouched && records_after(&seg, end);
                if is_last || !more {
                    if !vouched {
                        file.release_pages();
                    }
                    if !index.add_file(base, Arc::new(file)) {
                        return Err(Pass::Rebuild);
                    }
                    used_index_files = true;
                    had_index_file = true;
                    from = end;
                    eager = false;
                    covered = !is_last;
                }
            }
        }
        if eager {
            if let Some((file, entries)) = persist::open(dir, base, seg.extent(), disk) {
                if !ends_a_batch(&seg, file.covered_end) || !sample_matches(&seg, &file) {
                    return Err(Pass::Rebuild);
                }
                from = file.covered_end;
                // The runs are loaded (the scan below may extend them; the keys' lengths must
                // count them); a sealed segment whose file covers all of it then hands them
                // back to the file.
                let more = records_after(&seg, from);
                let extended = is_last || more;
                covered = !extended;
                if !index.load_file(base, &file, &entries) {
                    return Err(Pass::Rebuild);
                }
                if covered {
                    index.map_segment(base, file);
                }
                had_index_file = true;
                used_index_files = true;
            }
        }
        let on_bad = if salvage {
            OnBad::Salvage
        } else if reader {
            OnBad::Reader
        } else if is_last {
            OnBad::TornTailAllowed
        } else {
            OnBad::Strict
        };
        let mut scanned = 0u64;
        let discontinuous = std::cell::Cell::new(false);
        // A segment left to its index file is not mapped by opening.
        let bytes = if covered {
            &[][..]
        } else {
            seg.check_mapped()?;
            seg.all_bytes()
        };
        let scanned_end = if covered {
            Ok(recovery::ScanEnd {
                end: from,
                stopped_at: from,
                cut: None,
            })
        } else {
            let mut on_event = |name: &str, event_type: &str, number: u64, off: u64| {
                scanned += 1;
                if crate::index::is_key_name(name) {
                    // No append writes such a name: it would pose as a category or type key.
                    return Err(Error::Corrupt {
                        file: path.clone(),
                        offset: off,
                        reason: "record of a stream named like an index key (NUL, `c:` or `t:`)"
                            .into(),
                    });
                }
                let unreadable = |e: Error| {
                    discontinuous.set(true);
                    e
                };
                let id = index.get_or_create_resolved(name).map_err(unreadable)?;
                index.push(id, number, base + off, base).map_err(|d| {
                    discontinuous.set(true);
                    Error::Corrupt {
                        file: path.clone(),
                        offset: off,
                        reason: format!(
                            "stream `{}` continues with event {} where {} belongs",
                            d.stream, d.found, d.expected
                        ),
                    }
                })?;
                let keys = [
                    secondary.category(&mut index, name).map_err(unreadable)?,
                    secondary
                        .event_type(&mut index, event_type)
                        .map_err(unreadable)?,
                ];
                index.push_secondary(keys, base + off, base);
                Ok(())
            };
            if compacted {
                recovery::scan_compacted(&seg, from, on_event)
            } else {
                recovery::scan(&seg, from, on_bad, |rec, off| {
                    let text =
                        |(a, b): (usize, usize)| std::str::from_utf8(&bytes[a..b]).unwrap_or("");
                    on_event(
                        text(rec.stream),
                        text(rec.event_type),
                        rec.event_number,
                        off,
                    )
                })
            }
        };
        let end = match scanned_end {
            // The log disagrees with what index files said: trust the log alone.
            Err(_) if discontinuous.get() && used_index_files => return Err(Pass::Rebuild),
            r => r?,
        };
        let cut_here = end.cut.is_some() || end.stopped_at > end.end;
        if cut_here && !reader {
            tracing::warn!(
                segment = %path.display(),
                kept = end.end,
                found = end.stopped_at,
                "the log ends in a torn or unfinished batch: cut after the last whole one"
            );
        }
        if cut_here && !had_index_file {
            // An index file must never describe bytes that were cut: later appends could put
            // other records at the offsets it names. One that was used describes only bytes
            // before the scan began, which the cut keeps (the active segment's checkpoint after
            // a crash): kept, so that a second crash does not scan the whole segment.
            let _ = disk.remove(&dir.join(persist::index_file_name(base)));
        }
        if (cut_here || is_last) && !disk.is_read_only() {
            // Erase everything after the last whole batch of the newest segment, not just a
            // detected torn record: a crash may have written later pages of an unfinished batch
            // after a page that stayed zero, and the next append must not join them to the log.
            // (A read-only open, which never appends, only stops reading there.)
            recovery::truncate(&seg, end.end)?;
        }
        seg.set_data_end(end.end);
        let seg = Arc::new(seg);
        let stop_salvage = salvage && end.cut.is_some();
        if !is_last && !stop_salvage && (!had_index_file || scanned > 0) {
            let bytes = index
                .segment_runs(base)
                .map(|runs| persist::encode(base, end.end, &runs));
            match bytes
                .ok()
                .and_then(|bytes| persist::save(dir, base, &bytes, sync, disk).ok())
                .and_then(|_| persist::open(dir, base, seg.extent(), disk))
            {
                Some((file, _)) => index.map_segment(base, file),
                None => index.forget_segment(base),
            }
        } else if !is_last && !stop_salvage {
            index.forget_segment(base);
        }
        segments.push(seg);
        if stop_salvage {
            set_aside(dir, &listed[i + 1..], disk)?;
            break;
        }
        if reader && end.cut.is_some() {
            // A batch in flight here: the next segment's records come after it.
            break;
        }
        i += 1;
    }
    if let Some(newest) = segments.last() {
        // The newest segment is appended to, or followed past its end, through its map: one
        // that cannot be mapped fails the open (a reader's newest may be one left unmapped above,
        // where a gap in the listing ended its log).
        newest.check_mapped()?;
    }
    if segments.is_empty() && disk.is_read_only() {
        return Err(Pass::Failed(Error::NotAStore {
            path: dir.to_path_buf(),
            reason: "it holds no segment yet (a store is given its first segment when it is \
                     first opened for writing)"
                .into(),
        }));
    }
    if let Some(last) = segments.last().filter(|s| s.compacted.is_some()) {
        // A compacted segment is never appended to (its table follows its records): the log
        // goes on in a new segment. (The newest segment is compacted only when the one after
        // it was a blank that opening removed.)
        if !disk.is_read_only() {
            let next = Segment::create(dir, last.end_base(), options.segment_size, sync, disk)?;
            segments.push(Arc::new(next));
        }
    }
    if segments.is_empty() {
        segments.push(Arc::new(Segment::create(
            dir,
            0,
            options.segment_size,
            sync,
            disk,
        )?));
    }
    Ok((segments, index, manifest))
}

/// Segments listed, past which opening with a manifest opens half of the sealed segments and
/// their index files on a second thread: below, starting the thread costs more than it saves.
const OPEN_AHEAD_FROM: usize = 16;

/// A sealed segment and its index file (if it has one that passes its header checks), opened
/// ahead of the pass.
type Opened = (Result<Segment>, Option<IndexFile>);

/// The thread that opens every other sealed segment, and its index file, while the pass opens
/// the ones between: in listing order, each as the pass would (the manifest consulted alike).
struct OpenAhead {
    results: std::sync::mpsc::Receiver<(usize, Opened)>,
}

impl OpenAhead {
    /// Starts the thread on the odd positions of `listed`, but never on the newest segment
    /// (which is not sealed, and opened with its own checks). `None` if no thread can be
    /// started: the pass opens everything itself.
    fn start(
        dir: &Path,
        listed: &[(u64, PathBuf)],
        manifest: Arc<Manifest>,
        disk: &Disk,
    ) -> Option<OpenAhead> {
        let sealed: Vec<(usize, u64, PathBuf)> = listed[..listed.len().saturating_sub(1)]
            .iter()
            .enumerate()
            .skip(1)
            .step_by(2)
            .map(|(i, (base, path))| (i, *base, path.clone()))
            .collect();
        let (tx, results) = std::sync::mpsc::sync_channel(sealed.len());
        let (dir, disk) = (dir.to_path_buf(), disk.clone());
        std::thread::Builder::new()
            .name("eventjournal-open".into())
            .spawn(move || {
                for (i, base, path) in sealed {
                    let seg = Segment::open_unmapped(&path, base, true, &disk);
                    let file = seg.as_ref().ok().and_then(|seg| {
                        let vouches =
                            |stamp, end| manifest.vouches(base, seg.stamp, Some(stamp), end);
                        persist::open_vouched(&dir, base, seg.extent(), &disk, &vouches)
                    });
                    // The pass stopped early (an error, or the end of a reader's log).
                    if tx.send((i, (seg, file))).is_err() {
                        return;
                    }
                }
            })
            .ok()
            .map(|_| OpenAhead { results })
    }

    /// The segment at position `i` of the listing, if the thread opened it (waiting for it).
    fn take(&mut self, i: usize) -> Option<Opened> {
        if i.is_multiple_of(2) {
            return None;
        }
        loop {
            match self.results.recv() {
                Ok((j, opened)) if j == i => return Some(opened),
                Ok((j, _)) if j < i => continue,
                _ => return None,
            }
        }
    }
}

// The checks at open read the log with positioned reads rather than through its map: a fault
// on a mapped page maps its neighbours too, and sampling every segment that way would leave
// megabytes of the log resident in every process that opens the store.

/// The little-endian u32 at `off` in the segment's file.
fn read_u32(seg: &Segment, off: u64) -> Option<u32> {
    let mut b = [0u8; 4];
    if off.checked_add(4)? > seg.usable() {
        return None;
    }
    seg.disk
        .read_exact_at(&seg.file, &seg.path, &mut b, off)
        .ok()?;
    Some(u32::from_le_bytes(b))
}

/// A copy of the record at `off`, decoded (checksum verified if `verify`). One read for records
/// up to a page, the usual case; two for larger ones.
fn read_record(seg: &Segment, off: u64, verify: bool) -> Option<(Vec<u8>, RecordView)> {
    const FIRST_READ: u64 = 4096;
    let first = FIRST_READ.min(seg.usable().checked_sub(off)?);
    if first < 4 {
        return None;
    }
    let mut buf = vec![0u8; first as usize];
    seg.disk
        .read_exact_at(&seg.file, &seg.path, &mut buf, off)
        .ok()?;
    let len = u64::from(u32_at(&buf, 0));
    if len == 0 || off.checked_add(len)? > seg.usable() {
        return None;
    }
    if len > first {
        buf.resize(len as usize, 0);
        seg.disk
            .read_exact_at(
                &seg.file,
                &seg.path,
                &mut buf[first as usize..],
                off + first,
            )
            .ok()?;
    }
    buf.truncate(len as usize);
    let view = decode_record(&buf, 0, verify).ok()?;
    Some((buf, view))
}

/// Whether records follow segment offset `off` (an index file's `covered_end`).
fn records_after(seg: &Segment, off: u64) -> bool {
    match &seg.compacted {
        Some(c) => off < c.data_end,
        None => off + 4 <= seg.usable() && read_u32(seg, off).is_none_or(|l| l != 0),
    }
}

/// Whether `off` is the start of a segment or the end of a whole batch in it.
fn ends_a_batch(seg: &Segment, off: u64) -> bool {
    if off == SEGMENT_HEADER_LEN as u64 {
        return true;
    }
    if let Some(c) = &seg.compacted {
        // Compaction keeps every batch boundary of a record still there; the end of the
        // records is one. An index file of a compacted segment covers all of it.
        return off == c.data_end;
    }
    let Some(len) = off.checked_sub(4).and_then(|at| read_u32(seg, at)) else {
        return false;
    };
    let len = u64::from(len);
    off >= len + SEGMENT_HEADER_LEN as u64
        && read_record(seg, off - len, true)
            .is_some_and(|(_, r)| r.len as u64 == len && r.is_batch_end())
}

/// Spot-checks an index file against the log: for a sample of its runs (all of them in a small
/// file), the entry and its checksum, the checksum of its offsets, and that its first and last
/// record are the stream's events the run says they are. Checking every record would read the
/// whole log, which index files exist to avoid; reads check each record they return.
fn sample_matches(seg: &Segment, file: &IndexFile) -> bool {
    /// Runs checked per index file.
    const SAMPLE: usize = 16;
    let n = file.run_count();
    let step = n.div_ceil(SAMPLE).max(1);
    (0..n).step_by(step).chain(n.checked_sub(1)).all(|i| {
        let Ok(e) = file.entry(i) else {
            return false;
        };
        if !file.run_is_intact(e.offsets_at, e.count, e.crc) {
            return false;
        }
        let key = Key::parse(file.name(&e));
        let at = |k: usize| {
            let off = u64::from(file.offset(e.offsets_at, k));
            if let Some(c) = &seg.compacted {
                if c.gap_containing(off).is_some() {
                    return c.removed_at(off).is_some_and(|r| {
                        key.holds(
                            c.name(r.stream),
                            c.name(r.event_type),
                            r.event_number,
                            e.first_event + k as u64,
                        )
                    });
                }
            }
            read_record(seg, seg.file_off(off), false).is_some_and(|(buf, r)| {
                let text = |(a, b): (usize, usize)| std::str::from_utf8(&buf[a..b]).ok();
                match (text(r.stream), text(r.event_type)) {
                    (Some(stream), Some(event_type)) => {
                        key.holds(stream, event_type, r.event_number, e.first_event + k as u64)
                    }
                    _ => false,
                }
            })
        };
        at(0) && at(e.count as usize - 1)
    })
}

/// Whether a segment file is a blank left by an interrupted creation: no header, and no first
/// record either (records are written in order from the end of the header, so a segment whose
/// first record is missing holds none).
pub(crate) fn blank_segment(path: &Path, disk: &Disk) -> Result<bool> {
    let file = disk.open(path, false)?;
    let len = file
        .metadata()
        .at("reading the size of", path)?
        .len()
        .min(SEGMENT_HEADER_LEN as u64 + 4);
    let mut head = vec![0u8; len as usize];
    disk.read_exact_at(&file, path, &mut head, 0)?;
    let header = &head[..head.len().min(SEGMENT_HEADER_LEN)];
    let no_first_record = head.iter().skip(SEGMENT_HEADER_LEN).all(|&b| b == 0);
    Ok(SegmentHeader::decode(header) == Err(HeaderError::Blank) && no_first_record)
}

/// Writes the manifest of a store closing cleanly: every sealed segment whose index file (as the
/// index holds it) covers all of its records, with both files' stamps. Called once everything
/// is synced; a failure only costs the next open its spot checks.
pub(crate) fn write_manifest(
    dir: &Path,
    sealed: &[Arc<Segment>],
    index: &Index,
    ids: &IdTables,
    disk: &Disk,
) -> Result<()> {
    let files = index.files();
    let entries: Vec<manifest::Entry> = sealed
        .iter()
        .filter_map(|seg| {
            let file = files.file(seg.base)?;
            (file.covered_end == seg.data_end()).then_some(())?;
            Some(manifest::Entry {
                base: seg.base,
                covered_end: file.covered_end,
                segment: seg.current_stamp()?,
                index: file.stamp?,
            })
        })
        .collect();
    let tables: Vec<_> = ids
        .snapshot()
        .tables
        .iter()
        .filter(|t| !t.is_broken())
        .filter_map(|t| Some((t.base, t.stamp()?)))
        .collect();
    manifest::write(dir, &entries, &tables, disk)
}

/// Renames segment files out of the log (`*.salvaged`, numbered if that name is taken) and drops
/// their index files.
fn set_aside(dir: &Path, segments: &[(u64, PathBuf)], disk: &Disk) -> Result<()> {
    for (base, path) in segments {
        let mut n = 0u32;
        let aside = loop {
            let mut name = path.clone().into_os_string();
            name.push(".salvaged");
            if n > 0 {
                name.push(format!(".{n}"));
            }
            let candidate = PathBuf::from(name);
            if !candidate.exists() {
                break candidate;
            }
            n += 1;
        };
        disk.rename(path, &aside)?;
        let _ = disk.remove(&dir.join(persist::index_file_name(*base)));
    }
    disk.sync_dir(dir)?;
    Ok(())
}
