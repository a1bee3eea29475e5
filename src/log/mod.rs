//! The log: segment files of records, appended by one writer and read through memory maps.
//!
//! - [`format`](mod@format): the byte layout of segments and records;
//! - `checksum`: the records' CRC-32, on a wide path where the CPU allows;
//! - [`segment`]: one segment file;
//! - [`writer`]: the append side (positioned writes, fsync, segment rolling);
//! - [`reader`]: the read side (records at positions, `$all` cursors);
//! - [`recovery`]: finding the segments and the last whole batch when a store opens;
//! - [`compacted`]: what a segment rewritten by compaction says of the records it no longer holds.

pub(crate) mod checksum;
pub mod compacted;
pub mod format;
pub mod reader;
pub mod recovery;
pub mod segment;
pub mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use self::reader::LogView;
use self::segment::Segment;

/// The shared, read-mostly state of the log.
pub struct Log {
    segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    /// Global position just past the newest whole, durable (per the durability mode) batch.
    /// Readers never look at bytes at or past it.
    visible: AtomicU64,
    verify: bool,
    /// Set by every view taken (each read and each group of appends takes one), cleared by
    /// [`take_used`](Self::take_used): whether the store was in use meanwhile. Set only when
    /// clear, so that a busy store's views only read it: a write on each would bounce the
    /// cache line between the cores that read.
    used: AtomicBool,
    /// Held by every view alive, so that its reference count counts them: a long read (a
    /// replay of `$all`, an iterator, a subscription) holds one throughout, where `used` would
    /// only see it start.
    alive: Arc<()>,
}

impl Log {
    /// A log over `segments` (in base order, at least one) with everything up to `visible` whole.
    pub fn new(segments: Vec<Arc<Segment>>, visible: u64, verify: bool) -> Log {
        Log {
            segments: RwLock::new(Arc::new(segments)),
            visible: AtomicU64::new(visible),
            verify,
            used: AtomicBool::new(false),
            alive: Default::default(),
        }
    }

    /// A consistent snapshot for reading: the visible end first, then the segments that hold it.
    pub fn view(&self) -> LogView {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
        let visible = self.visible.load(Ordering::Acquire);
        LogView::new(self.segments.read().clone(), visible, self.verify).counted(self.alive.clone())
    }

    /// Whether a view was taken since the last call (see the field).
    pub(crate) fn take_used(&self) -> bool {
        self.used.swap(false, Ordering::Relaxed)
    }

    /// How many views are alive now (see the field).
    pub(crate) fn views_alive(&self) -> usize {
        Arc::strong_count(&self.alive) - 1
    }

    /// The visible end of the log.
    pub fn visible(&self) -> u64 {
        self.visible.load(Ordering::Acquire)
    }

    /// Makes everything before `end` readable in `$all`.
    pub(crate) fn publish(&self, end: u64) {
        self.visible.store(end, Ordering::Release);
    }

    /// The segments, oldest first.
    pub(crate) fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments.read().as_ref().clone()
    }

    /// The newest segment.
    pub(crate) fn newest(&self) -> Arc<Segment> {
        // A log has at least one segment (see `new`), and none is ever removed.
        let segments = self.segments.read();
        segments
            .last()
            .cloned()
            .unwrap_or_else(|| unreachable!("a log without segments"))
    }

    /// Puts `seg` in place of the segment with its base (compaction's rewrite of it). Readers
    /// that took a view before keep the old one, whose map stays valid while they hold it.
    pub(crate) fn replace_segment(&self, seg: Arc<Segment>) -> bool {
        let mut guard = self.segments.write();
        let mut next: Vec<Arc<Segment>> = guard.as_ref().clone();
        match next.iter_mut().find(|s| s.base == seg.base) {
            Some(slot) => *slot = seg,
            None => return false,
        }
        *guard = Arc::new(next);
        true
    }

    pub(crate) fn push_segment(&self, seg: Arc<Segment>) {
        let mut guard = self.segments.write();
        let mut next: Vec<Arc<Segment>> = guard.as_ref().clone();
        next.push(seg);
        *guard = Arc::new(next);
    }
}
