//! Following a writer in another process: a read-only store reads, from the segment files, the
//! batches committed after it opened, and shows each one whole.
//!
//! The writer publishes nothing but the log itself: a batch is committed once its last record
//! (the one with the batch-end flag) reads whole. A follower looks past what it has shown, in
//! the newest segment's map (the same page cache the writer writes to), for whole batches; when
//! none follows, for the next segment's file, which the writer creates (under a temporary name,
//! then renamed) only after writing everything before it. Batches it finds are indexed in
//! memory, under the index lock, and published as the writer publishes its own.
//!
//! Nothing is written: the segments the writer seals later keep their runs in this process's
//! memory, and their index files are not read.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::index::{is_key_name, Key, KeyCache, StreamId};
use crate::log::format::RecordView;
use crate::log::recovery;
use crate::log::segment::{segment_file_name, Segment};
use crate::store::Shared;
use crate::types::category_of;

/// Records indexed under one hold of the index lock, at most (whole batches, so a larger batch
/// is taken in one hold): readers wait for no more than that.
const RECORDS_PER_LOCK: usize = 4096;

/// What a follower keeps between catch-ups.
#[derive(Default)]
pub(crate) struct FollowState {
    keys: KeyCache,
    /// Set when the log stopped continuing what this store has shown (a writer cut batches it
    /// had shown, or the directory now holds another store): nothing more is shown. The
    /// `Error::Corrupt` said so, by its parts.
    diverged: Option<(std::path::PathBuf, u64, String)>,
    /// When sealed segments were last checked for a compaction by the writer.
    compactions_checked: Option<std::time::Instant>,
}

/// How often a follower looks for sealed segments the writer compacted, to map the compacted
/// files instead (so that the old ones' disk space is freed): a `stat` per sealed segment.
const COMPACTIONS_CHECKED_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// One record of a whole batch: its offset in the segment, and where its name and type are in
/// the copy it was read from.
struct Found {
    off: u64,
    stream: (usize, usize),
    event_type: (usize, usize),
    event_number: u64,
}

impl Found {
    fn new(rec: &RecordView, off: u64) -> Found {
        Found {
            off,
            stream: rec.stream,
            event_type: rec.event_type,
            event_number: rec.event_number,
        }
    }
}

impl FollowState {
    /// Notes that the log no longer continues what was shown; returns `e`, which says so.
    fn diverge(&mut self, e: Error) -> Error {
        if let Error::Corrupt {
            file,
            offset,
            reason,
        } = &e
        {
            self.diverged = Some((file.clone(), *offset, reason.clone()));
        }
        e
    }
}

impl Shared {
    /// Maps, in place of each sealed segment the writer has compacted since this store mapped
    /// it, the compacted file: the same records at the same positions, less hidden ones. The old
    /// map is dropped once no reader holds it, and with it the last hold on the old file's disk
    /// space. Best effort: a file that does not open as the same segment is left alone.
    fn take_compacted_segments(&self) {
        use std::os::unix::fs::MetadataExt;
        let segments = self.log.segments();
        let Some((_, sealed)) = segments.split_last() else {
            return;
        };
        for seg in sealed.iter().filter(|s| s.compacted.is_none()) {
            let (Ok(now), Ok(mapped)) = (std::fs::metadata(&seg.path), seg.file.metadata()) else {
                continue;
            };
            if now.ino() == mapped.ino() && now.dev() == mapped.dev() {
                continue;
            }
            match Segment::open(&seg.path, seg.base, false, &self.options.disk) {
                Ok(new)
                    if new
                        .compacted
                        .as_ref()
                        .is_some_and(|c| c.data_end == seg.data_end()) =>
                {
                    let new = Arc::new(new);
                    self.log.replace_segment(new.clone());
                    self.ids.replace_segment(&new);
                }
                _ => {}
            }
        }
    }

    /// Shows every whole batch the writer committed past what this read-only store has shown;
    /// returns whether it showed any. Concurrent calls take turns.
    pub(crate) fn catch_up(&self) -> Result<bool> {
        let mut state = self.follow.lock();
        if let Some((file, offset, reason)) = &state.diverged {
            return Err(Error::Corrupt {
                file: file.clone(),
                offset: *offset,
                reason: reason.clone(),
            });
        }
        if state
            .compactions_checked
            .is_none_or(|t| t.elapsed() >= COMPACTIONS_CHECKED_EVERY)
        {
            state.compactions_checked = Some(std::time::Instant::now());
            self.take_compacted_segments();
        }
        let mut shown = false;
        // Until nothing more is there, or the store closes (a writer that outpaces this one
        // must not keep `close` waiting).
        while !self.closed.load(std::sync::atomic::Ordering::Acquire) {
            let seg = self.log.newest();
            if self.show_whole_batches(&seg, &mut state)? {
                shown = true;
                continue;
            }
            // Nothing more here (for now): has the writer gone on to the next segment?
            let base = seg.end_base();
            let path = self.dir.join(segment_file_name(base));
            if !path.exists() {
                break;
            }
            let next = match Segment::open(&path, base, false, &self.options.disk) {
                Ok(next) => next,
                Err(e @ Error::Corrupt { .. }) => {
                    // Made under another name and renamed whole, so never seen unfinished: the
                    // directory holds another log now.
                    return Err(state.diverge(e));
                }
                Err(e) => return Err(e),
            };
            // Everything in `seg` was written before the next file was renamed into place.
            shown |= self.show_whole_batches(&seg, &mut state)?;
            if !seg.copy_out(seg.data_end(), 4).iter().all(|&b| b == 0) {
                // A batch left unfinished before a newer segment: only a writer's crash with
                // a power loss leaves that, and its recovery cuts the newer segments. Wait.
                break;
            }
            self.log.push_segment(Arc::new(next));
        }
        Ok(shown)
    }

    /// Shows the whole batches after `seg`'s published end; returns whether there were any.
    fn show_whole_batches(&self, seg: &Segment, state: &mut FollowState) -> Result<bool> {
        let from = seg.data_end();
        let mut found: Vec<Found> = Vec::new();
        // Offsets just past each batch, with how many records precede that point.
        let mut batch_ends: Vec<(usize, u64)> = Vec::new();
        let (copy, _) = recovery::scan_copy(seg, from, |rec, off| {
            found.push(Found::new(rec, off));
            if rec.is_batch_end() {
                batch_ends.push((found.len(), off + rec.len as u64));
            }
            Ok(())
        })?;
        if batch_ends.is_empty() {
            return Ok(false);
        }
        let mut start = 0;
        let mut i = 0;
        while i < batch_ends.len() {
            // Whole batches, up to RECORDS_PER_LOCK records (at least one batch).
            let mut j = i;
            while j + 1 < batch_ends.len() && batch_ends[j + 1].0 - start <= RECORDS_PER_LOCK {
                j += 1;
            }
            let (count, end) = batch_ends[j];
            self.show(seg, &copy, &found[start..count], end, state)?;
            start = count;
            i = j + 1;
        }
        Ok(true)
    }

    /// Indexes `records` (whole batches of `seg`, right after its published end, read from
    /// `copy`) and publishes them, up to `end`.
    fn show(
        &self,
        seg: &Segment,
        copy: &[u8],
        records: &[Found],
        end: u64,
        state: &mut FollowState,
    ) -> Result<()> {
        let text = |(a, b): (usize, usize)| std::str::from_utf8(&copy[a..b]).unwrap_or("");
        if self.lazy {
            // Keys the index may hold only in the files it opened with are loaded first, as an
            // append loads them, without the lock that readers wait on.
            for r in records {
                let name = text(r.stream);
                self.stream_id(name)?;
                if state.keys.cached_category(name).is_none() {
                    self.key_id(&Key::Category(category_of(name)).name())?;
                }
                let event_type = text(r.event_type);
                if state.keys.cached_type(event_type).is_none() {
                    self.key_id(&Key::EventType(event_type).name())?;
                }
            }
        }
        let mut index = self.index.write();
        // Checked before any event is added (keys without events may be), so that a log that
        // does not continue what was shown adds nothing of it.
        let mut ids: Vec<(StreamId, [StreamId; 2])> = Vec::with_capacity(records.len());
        let mut next: HashMap<StreamId, u64> = HashMap::new();
        for r in records {
            let name = text(r.stream);
            let corrupt = |reason: String| Error::Corrupt {
                file: seg.path.clone(),
                offset: r.off,
                reason,
            };
            if is_key_name(name) {
                return Err(state.diverge(corrupt(
                    "record of a stream named like an index key (NUL, `c:` or `t:`)".into(),
                )));
            }
            let id = index.get_or_create(name);
            let expected = next.entry(id).or_insert_with(|| index.len(id));
            if r.event_number != *expected {
                let e = corrupt(format!(
                    "stream `{name}` continues with event {} where {} belongs: the log no \
                     longer continues what this read-only store has shown (open it again)",
                    r.event_number, *expected
                ));
                return Err(state.diverge(e));
            }
            *expected += 1;
            let keys = [
                state.keys.category(&mut index, name)?,
                state.keys.event_type(&mut index, text(r.event_type))?,
            ];
            ids.push((id, keys));
        }
        for (r, (id, keys)) in records.iter().zip(ids) {
            // Cannot fail: checked above.
            let _ = index.push(id, r.event_number, seg.base + r.off, seg.base);
            index.push_secondary(keys, seg.base + r.off, seg.base);
        }
        seg.set_data_end(end);
        // Published before the index lock is released, as the writer does: whoever finds an
        // event through the index can also find it in `$all`.
        self.log.publish(seg.base + end);
        drop(index);
        self.commits.notify();
        Ok(())
    }

    /// Catches up every `every` until the store closes: the read-only store's follower thread.
    pub(crate) fn follow_loop(&self, every: std::time::Duration) {
        let mut stop = self.stop.lock();
        while !*stop {
            drop(stop);
            // An error is kept (a diverged log) or passing (an I/O error on a file the writer
            // is creating): `Store::refresh` reports it; the thread goes on either way.
            let _ = self.catch_up();
            stop = self.stop.lock();
            if !*stop {
                self.stop_cv.wait_for(&mut stop, every);
            }
        }
    }
}
