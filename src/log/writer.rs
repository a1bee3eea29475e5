//! The append side of the log: one writer, copying records into the active segment's map,
//! fsync, and rolling to a new segment when the active one is full.

use std::path::PathBuf;
use std::sync::Arc;

use super::format::SEGMENT_HEADER_LEN;
use super::segment::Segment;
use super::Log;
use crate::error::{Error, Result};

/// How far ahead of the records the writer fills the active segment with zeros.
///
/// Space reserved with `posix_fallocate` is "unwritten" to the file system, and the first write
/// into it makes the next `fdatasync` commit a metadata change as well as the data: on ext4 that
/// made a durable group of a few kilobytes cost half again as much (measured: 130–145 µs against
/// 86–96 µs per write + `fdatasync` of 3–18 KB, into reserved versus zero-filled space). Zeroing a
/// mebibyte at a time puts that change in one sync per mebibyte instead of one per group.
pub const ZERO_AHEAD: u64 = 1 << 20;

/// A block of zeros to write from.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// The writer's state. Only the group-commit leader touches it, under the store's writer lock.
pub struct LogWriter {
    dir: PathBuf,
    active: Arc<Segment>,
    /// Offset in the active segment where the next record goes.
    write_off: u64,
    /// Offset in the active segment up to which the file has been written, with records or
    /// with zeros; see [`ZERO_AHEAD`].
    written_to: u64,
    segment_size: u64,
    sync_on_roll: bool,
    /// Whether records are copied into the map rather than written with `pwrite`; see
    /// [`write`](Self::write).
    through_map: bool,
    /// Set by the first failed write or sync: the reason every later write is refused.
    poisoned: Option<String>,
    /// Whether bytes were written since the last sync.
    unsynced: bool,
    /// Segments filled since the last publish, with their final data end.
    sealed: Vec<(Arc<Segment>, u64)>,
    /// Sealed segments not synced yet (only without `sync_on_roll`): synced on close.
    unsynced_sealed: Vec<Arc<Segment>>,
    /// Whether the directory may hold entries not synced yet (segments created without a sync,
    /// only without `sync_on_roll`; the first one may have been created so by opening).
    dir_unsynced: bool,
}

impl LogWriter {
    /// A writer appending to `active` at `write_off`.
    pub fn new(
        dir: PathBuf,
        active: Arc<Segment>,
        write_off: u64,
        segment_size: u64,
        sync_on_roll: bool,
        through_map: bool,
    ) -> LogWriter {
        LogWriter {
            dir,
            active,
            write_off,
            written_to: write_off,
            segment_size,
            sync_on_roll,
            through_map,
            poisoned: None,
            unsynced: false,
            sealed: Vec::new(),
            unsynced_sealed: Vec::new(),
            dir_unsynced: !sync_on_roll,
        }
    }

    /// Fails if an earlier I/O error poisoned the writer.
    pub fn check(&self) -> Result<()> {
        match &self.poisoned {
            Some(reason) => Err(Error::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// Refuses every later write, for `reason`.
    pub(crate) fn poison_with(&mut self, reason: &str) {
        self.poisoned.get_or_insert_with(|| reason.to_string());
    }

    /// Refuses every later write because of `e`, which is returned.
    fn poison<T>(&mut self, e: Error) -> Result<T> {
        self.poisoned = Some(e.to_string());
        Err(e)
    }

    /// Global position of the next record.
    pub fn position(&self) -> u64 {
        self.active.base + self.write_off
    }

    /// The active segment.
    pub fn active(&self) -> &Arc<Segment> {
        &self.active
    }

    /// Bytes left in the active segment (as far as its file goes).
    pub fn remaining(&self) -> u64 {
        self.active.usable().saturating_sub(self.write_off)
    }

    /// Writes `bytes` at the end of the active segment. They are not visible to readers until
    /// [`publish`](Self::publish).
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.check()?;
        if bytes.is_empty() {
            return Ok(());
        }
        if bytes.len() as u64 > self.remaining() {
            return Err(Error::InvalidInput(
                "internal: write past the end of the segment".into(),
            ));
        }
        // Without a sync per group, records are copied into the shared map: the same page-cache
        // write without a system call, which was half the cost of an unsynced append. With a
        // sync per group they are written with `pwrite`: every `fdatasync` write-protects the
        // pages it cleans, so the next copy into the same page would take a write fault (and a
        // journal handle), which made synced appends a third slower than `pwrite`.
        if self.through_map {
            if let Err(e) = self.active.write_through_map(bytes, self.write_off) {
                // Unreachable while `remaining` is checked above; if it ever is reached, bytes
                // before it may be in the log unpublished, and nothing may follow them.
                self.poison_with(&e.to_string());
                return Err(e);
            }
        } else if let Err(e) = self.active.disk.write_all_at(
            &self.active.file,
            &self.active.path,
            bytes,
            self.write_off,
        ) {
            return self.poison(e);
        }
        self.write_off += bytes.len() as u64;
        self.unsynced = true;
        if self.write_off > self.written_to {
            self.written_to = self.write_off;
        }
        // Only worth it when groups are synced one by one; otherwise the zeros would only
        // double what the kernel writes back.
        if !self.through_map && self.written_to - self.write_off < ZERO_AHEAD / 2 {
            let to = (self.write_off + ZERO_AHEAD).min(self.active.usable());
            while self.written_to < to {
                let n = (to - self.written_to).min(ZEROS.len() as u64) as usize;
                if let Err(e) = self.active.disk.write_all_at(
                    &self.active.file,
                    &self.active.path,
                    &ZEROS[..n],
                    self.written_to,
                ) {
                    return self.poison(e);
                }
                self.written_to += n as u64;
            }
        }
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn sync(&mut self) -> Result<()> {
        self.check()?;
        if !self.unsynced {
            return Ok(());
        }
        if let Err(e) = self
            .active
            .disk
            .sync_data(&self.active.file, &self.active.path)
        {
            return self.poison(e);
        }
        self.unsynced = false;
        Ok(())
    }

    /// Makes everything durable, sealed segments and directory entries included: for close.
    pub fn sync_all(&mut self) -> Result<()> {
        self.dir_unsynced = true;
        self.flush()
    }

    /// Makes every record written so far durable, with what reading it back after a power loss
    /// needs: the segments sealed without a sync, and the directory entries of segments created
    /// without one. Does nothing when all of that is synced already (always so under `Sync`).
    ///
    /// Records copied into the shared map rather than written with `pwrite` (see
    /// [`write`](Self::write)) are in the same page cache as written ones: `fdatasync` of the
    /// file writes back the pages dirtied through the map as well.
    pub fn flush(&mut self) -> Result<()> {
        self.check()?;
        while let Some(seg) = self.unsynced_sealed.pop() {
            if let Err(e) = seg.disk.sync_data(&seg.file, &seg.path) {
                return self.poison(e);
            }
        }
        self.sync()?;
        if self.dir_unsynced {
            if let Err(e) = self.active.disk.sync_dir(&self.dir) {
                return self.poison(e);
            }
            self.dir_unsynced = false;
        }
        Ok(())
    }

    /// Forgets the sealed segment with `seg`'s base among those waiting for a sync: compaction
    /// replaced it by `seg`, synced already, and the old map is not to be kept alive.
    pub(crate) fn forget_sealed(&mut self, seg: &Arc<Segment>) {
        self.unsynced_sealed.retain(|s| s.base != seg.base);
    }

    /// Whether bytes were written since the last sync.
    pub fn is_unsynced(&self) -> bool {
        self.unsynced
    }

    /// Seals the active segment (synced, unless durability is `None`) and starts a new one large
    /// enough for `needed` bytes of records.
    pub fn roll(&mut self, log: &Log, needed: u64) -> Result<()> {
        self.check()?;
        if self.sync_on_roll {
            self.sync()?;
        }
        let capacity = self
            .segment_size
            .max(SEGMENT_HEADER_LEN as u64 + needed)
            .next_multiple_of(4096);
        if capacity > u64::from(u32::MAX) {
            return Err(Error::InvalidInput(format!(
                "a batch of {needed} bytes does not fit in one segment"
            )));
        }
        let base = self.active.end_base();
        let seg = match Segment::create(
            &self.dir,
            base,
            capacity,
            self.sync_on_roll,
            &self.active.disk,
        ) {
            Ok(seg) => Arc::new(seg),
            Err(e @ Error::Io { .. }) => return self.poison(e),
            // The new file may be in the directory already: nothing may be written after a
            // segment the log cannot continue in.
            Err(e) => {
                self.poison_with(&format!("creating a segment failed: {e}"));
                return Err(e);
            }
        };
        log.push_segment(seg.clone());
        if !self.sync_on_roll {
            self.dir_unsynced = true;
        }
        let old = std::mem::replace(&mut self.active, seg);
        if self.unsynced {
            self.unsynced_sealed.push(old.clone());
        }
        self.sealed.push((old, self.write_off));
        self.write_off = SEGMENT_HEADER_LEN as u64;
        self.written_to = self.write_off;
        self.unsynced = false;
        Ok(())
    }

    /// Makes everything written so far visible to readers; returns the segments sealed since the
    /// last publish.
    pub fn publish(&mut self, log: &Log) -> Vec<Arc<Segment>> {
        let sealed: Vec<Arc<Segment>> = self
            .sealed
            .drain(..)
            .map(|(seg, end)| {
                seg.set_data_end(end);
                seg
            })
            .collect();
        self.active.set_data_end(self.write_off);
        log.publish(self.position());
        sealed
    }

    /// Forgets bytes written since the last publish after a failure, so they are never
    /// published; the writer is poisoned in that case, so nothing is written after them.
    pub fn discard_unpublished(&mut self) {
        self.sealed.clear();
    }
}
