//! Online backup: a consistent copy of a live store, taken while appends go on.
//!
//! The copy holds the log up to the visible end when the backup began (every batch acknowledged
//! by then, none torn: the end is a batch boundary), so that it opens with strict recovery. The
//! segments below that end never change, so they are copied straight from the store's maps
//! without stopping the writer, which only writes past the end.
//!
//! Into a destination that already holds a backup of the store, only what changed is copied:
//! sealed segments already there (recognised by their bytes, see [`Plan`]) are kept, and the
//! newest segment of the earlier backup, a prefix of the same segment now, is replaced.
//!
//! Every file is written under a temporary name, synced and renamed into place, in base order,
//! so a backup cut short at any point (a crash, a full disk) leaves a destination that opens to a
//! prefix of the store's history at least as long as the earlier backup's: never less, never a
//! torn batch. Index files of sealed segments are copied too (they are a cache: a missing one is
//! rebuilt when the copy opens); id tables are not (the copy's background thread builds them).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::ids::parse_ids_file_name;
use crate::index::persist::{self, index_file_name};
use crate::log::segment::{parse_segment_file_name, segment_file_name, Segment};
use crate::startup::{lock_dir, prepare_dir};
use crate::store::Shared;
use crate::types::Position;

/// What a backup did: see [`Store::backup`](crate::Store::backup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backup {
    /// The copy holds every event before this position (the store's head when the backup
    /// began), and nothing after it.
    pub head: Position,
    /// Segment files written.
    pub segments_copied: usize,
    /// Segment files already in the destination, unchanged, and kept.
    pub segments_kept: usize,
    /// Bytes written into the destination (segments and index files).
    pub bytes_copied: u64,
}

/// Bytes compared at the start of a segment to recognise a copy already in the destination: the
/// header and the first records, whose random event ids tell one store's segment from another's.
const HEAD_CHECK: usize = 64 * 1024;
/// Bytes compared just before a segment's copied end: a copy that stops earlier differs there.
const TAIL_CHECK: usize = 4096;
/// Bytes written per write call.
const CHUNK: usize = 1 << 20;
/// Chunks written between two write-backs: what the store's own syncs may find queued ahead of
/// them on the disk while a backup runs, instead of a whole segment at the file's final sync.
const WRITE_BACK_CHUNKS: usize = 4;

/// One source segment, and how much of it the backup holds.
struct Part {
    seg: Arc<Segment>,
    /// Bytes of the segment file to copy: the header and the records before the backup's end.
    len: usize,
    /// Whether that is all the segment will ever hold (a sealed segment).
    sealed: bool,
    /// A compacted segment's whole file (header, records, compaction table), copied as it is.
    image: Option<Vec<u8>>,
}

impl Part {
    /// The bytes the copy of the segment file starts with.
    fn bytes(&self) -> &[u8] {
        match &self.image {
            Some(image) => image,
            None => self.seg.bytes().get(..self.len).unwrap_or_default(),
        }
    }
}

/// The whole file of a compacted segment, read through the segment's own open file (the one
/// this backup's view holds, even if a later compaction has replaced it since).
fn compacted_image(seg: &Segment) -> Result<Option<Vec<u8>>> {
    let Some(c) = &seg.compacted else {
        return Ok(None);
    };
    // The file ends at its table (a compaction writes it so, and nothing extends it).
    let len = seg
        .file
        .metadata()
        .map_err(|e| Error::io("reading the size of", &seg.path, e))?
        .len();
    if len < c.table_at {
        return Err(Error::Corrupt {
            file: seg.path.clone(),
            offset: len,
            reason: "compacted segment shorter than its records".into(),
        });
    }
    let mut image = vec![0u8; len as usize];
    seg.disk
        .read_exact_at(&seg.file, &seg.path, &mut image, 0)?;
    Ok(Some(image))
}

/// What the destination already holds of the parts, checked before anything is written.
struct Plan {
    parts: Vec<(Part, bool)>,
}

pub(crate) fn run(shared: &Shared, dest: &Path) -> Result<Backup> {
    // The destination is written even when the store is open read-only.
    let disk = &shared.options.disk.writable();
    if same_dir(&shared.dir, dest) {
        return Err(Error::InvalidInput(format!(
            "backup destination {} is the store's own directory",
            dest.display()
        )));
    }
    prepare_dir(dest, disk)?;
    // Held while writing, so that no store opens the destination halfway through.
    let _lock = lock_dir(dest, disk)?;

    let view = shared.log.view();
    let end = view.visible();
    let segments: Vec<Arc<Segment>> = view
        .segments_in(0, u64::MAX)
        .into_iter()
        .filter(|s| s.base < end)
        .collect();
    // The segment holding `end` is not sealed for the backup, even if the writer has rolled
    // past it: a group that rolled may not have published its records there yet, and the
    // segment's final end (and its index file) may lie past `end`. The ones below it are.
    let holding_end = segments.last().map(|s| s.base);
    let parts: Vec<Part> = segments
        .into_iter()
        .map(|seg| {
            seg.check_mapped()?;
            let data_end = seg.data_end().min(seg.bytes().len() as u64);
            let len = data_end.min(end - seg.base) as usize;
            let image = compacted_image(&seg)?;
            let sealed = Some(seg.base) != holding_end || image.is_some();
            Ok(Part {
                seg,
                len,
                sealed,
                image,
            })
        })
        .collect::<Result<_>>()?;
    let plan = plan(dest, parts)?;

    let mut report = Backup {
        head: Position(end),
        segments_copied: 0,
        segments_kept: 0,
        bytes_copied: 0,
    };
    // Id tables a store opened on the destination may have written: tables of what may be
    // replaced below.
    for name in file_names(dest)? {
        if parse_ids_file_name(&name).is_some() {
            disk.remove(&dest.join(&name))?;
        }
    }
    for (part, kept) in &plan.parts {
        let base = part.seg.base;
        let index = dest.join(index_file_name(base));
        if *kept {
            report.segments_kept += 1;
        } else {
            // The old copy's index file describes the old copy.
            if index.exists() {
                disk.remove(&index)?;
            }
            let bytes = part.bytes();
            // A compacted segment's file ends at its table; any other is as long as its
            // capacity, zeros past its records.
            let len = part.image.is_none().then_some(part.seg.capacity);
            write_file(disk, dest, &segment_file_name(base), bytes, len)?;
            report.segments_copied += 1;
            report.bytes_copied += bytes.len() as u64;
        }
        if part.sealed && !index.exists() {
            // Best effort: an index file is a cache, and the store may be replacing it. Only a
            // file that covers exactly the bytes copied describes the copy.
            let source = shared.dir.join(index_file_name(base));
            let covers = persist::open_file(&shared.dir, base, part.seg.extent(), disk)
                .is_some_and(|f| {
                    f.covered_end == part.len as u64
                        || part.image.is_some() && f.covered_end == part.seg.data_end()
                });
            if let (true, Ok(bytes)) = (covers, fs::read(&source)) {
                write_file(disk, dest, &index_file_name(base), &bytes, None)?;
                report.bytes_copied += bytes.len() as u64;
            }
        }
    }
    disk.sync_dir(dest)?;
    Ok(report)
}

/// Whether `a` and `b` name the same directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn file_names(dir: &Path) -> Result<Vec<String>> {
    let listing = |e| Error::io("listing the files of", dir, e);
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(listing)? {
        out.push(
            entry
                .map_err(listing)?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    Ok(out)
}

/// Checks what the destination holds against the parts: each segment there must be a copy of
/// the same segment of this store, the newest of them possibly a shorter one (an earlier
/// backup's end), and none past the parts. Decides which parts are there already.
fn plan(dest: &Path, parts: Vec<Part>) -> Result<Plan> {
    let mut bases: Vec<u64> = file_names(dest)?
        .iter()
        .filter_map(|n| parse_segment_file_name(n))
        .collect();
    bases.sort_unstable();
    let diverged = |base: u64, why: &str| {
        Error::InvalidInput(format!(
            "backup destination {} holds a segment {} that is not a copy of this store's ({why}); \
             back up into an empty directory",
            dest.display(),
            dest.join(segment_file_name(base)).display()
        ))
    };
    let newest = bases.last().copied();
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        let base = part.seg.base;
        let kept = match bases.binary_search(&base) {
            Err(_) => false,
            Ok(_) => {
                let path = dest.join(segment_file_name(base));
                let ours = part.bytes();
                let compared = fs::File::open(&path)
                    .and_then(|f| compare(&f, ours, Some(base) == newest))
                    .map_err(|e| Error::io("reading", &path, e))?;
                match compared {
                    Copy::Same => true,
                    Copy::Prefix => false,
                    // Compacted since the copy was made: replaced by the compacted segment.
                    Copy::Other(_) if part.image.is_some() => false,
                    Copy::Other(why) => return Err(diverged(base, why)),
                }
            }
        };
        out.push((part, kept));
    }
    if let Some(&extra) = bases
        .iter()
        .find(|b| !out.iter().any(|(p, _)| p.seg.base == **b))
    {
        return Err(diverged(
            extra,
            "the store has no such segment before the backup's end",
        ));
    }
    Ok(Plan { parts: out })
}

/// How a segment file in the destination relates to the bytes the backup would write.
enum Copy {
    /// The same bytes, and zeros after them.
    Same,
    /// A shorter copy of them (allowed for the destination's newest segment only): a beginning
    /// of them, and zeros after it.
    Prefix,
    /// Something else.
    Other(&'static str),
}

fn compare(copy: &fs::File, ours: &[u8], newest: bool) -> std::io::Result<Copy> {
    use std::os::unix::fs::FileExt;
    let meta = copy.metadata()?;
    if !meta.is_file() {
        return Ok(Copy::Other("it is not a file"));
    }
    let len = meta.len();
    // Bytes `at..at + n` of the copy (fewer where it ends).
    let read = |at: usize, n: usize| -> std::io::Result<Vec<u8>> {
        let n = n.min(len.saturating_sub(at as u64) as usize);
        let mut buf = vec![0u8; n];
        copy.read_exact_at(&mut buf, at as u64)?;
        Ok(buf)
    };
    if newest {
        // Compared whole, a chunk at a time: it is one segment per backup.
        let mut at = 0;
        while at < ours.len() {
            let n = CHUNK.min(ours.len() - at);
            let theirs = read(at, n)?;
            if let Some(k) = theirs
                .iter()
                .zip(&ours[at..at + n])
                .position(|(a, b)| a != b)
            {
                return Ok(if zeros_from(copy, (at + k) as u64, len)? {
                    Copy::Prefix
                } else {
                    Copy::Other("its records differ")
                });
            }
            if theirs.len() < n {
                // The copy ends inside our bytes: a beginning of them.
                return Ok(Copy::Prefix);
            }
            at += n;
        }
        return Ok(if zeros_from(copy, ours.len() as u64, len)? {
            Copy::Same
        } else {
            Copy::Other("it holds records past ours")
        });
    }
    let head = ours.len().min(HEAD_CHECK);
    let tail = ours.len().saturating_sub(TAIL_CHECK);
    let after = read(ours.len(), 8)?;
    let same = (len as usize) >= ours.len()
        && read(0, head)? == ours[..head]
        && read(tail, ours.len() - tail)? == ours[tail..]
        && after.iter().all(|&b| b == 0);
    Ok(if same {
        Copy::Same
    } else {
        Copy::Other("its bytes differ")
    })
}

/// Whether every byte of the file from `from` to `len` is zero; ranges the file system reports
/// as holes (the space past a copy's records) are skipped without reading.
fn zeros_from(file: &fs::File, from: u64, len: u64) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let seek = |whence: libc::c_int, at: u64| -> Option<u64> {
        let at = libc::off_t::try_from(at).ok()?;
        // SAFETY: a plain system call on a descriptor we own; no memory is passed.
        let r = unsafe { libc::lseek(file.as_raw_fd(), at, whence) };
        u64::try_from(r).ok()
    };
    let mut at = from;
    let mut buf = vec![0u8; CHUNK];
    while at < len {
        // No data at or past `at` (ENXIO): zeros to the end. A file system without SEEK_DATA
        // reports the whole file as data, which is then read.
        let Some(data) = seek(libc::SEEK_DATA, at) else {
            return Ok(true);
        };
        let hole = seek(libc::SEEK_HOLE, data).unwrap_or(len).min(len);
        let mut pos = data.max(at);
        while pos < hole {
            let n = ((hole - pos) as usize).min(CHUNK);
            file.read_exact_at(&mut buf[..n], pos)?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            pos += n as u64;
        }
        at = hole.max(at + 1);
    }
    Ok(true)
}

/// Writes `bytes` to `dir/name` through a temporary file, synced and renamed into place; with
/// `len`, the file is extended to that length (the segment's capacity, read as zeros).
fn write_file(disk: &Disk, dir: &Path, name: &str, bytes: &[u8], len: Option<u64>) -> Result<()> {
    let path = dir.join(name);
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let f = disk.create(&tmp)?;
    for (i, chunk) in bytes.chunks(CHUNK).enumerate() {
        let at = (i * CHUNK) as u64;
        disk.write_all_at(&f, &tmp, chunk, at)?;
        if (i + 1) % WRITE_BACK_CHUNKS == 0 {
            let from = at + CHUNK as u64 - (WRITE_BACK_CHUNKS * CHUNK) as u64;
            disk.write_back(&f, from, (WRITE_BACK_CHUNKS * CHUNK) as u64);
        }
    }
    if let Some(len) = len.filter(|&l| l > bytes.len() as u64) {
        disk.set_len(&f, &tmp, len)?;
    }
    disk.sync_all(&f, &tmp)?;
    drop(f);
    disk.rename(&tmp, &path)?;
    // The rename is made durable before the next file is written, so that files land in order.
    disk.sync_dir(dir)
}
