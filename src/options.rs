//! How a store is opened: durability, segment size, limits, recovery.

use std::time::Duration;

use crate::disk::Disk;

/// When an append's bytes reach stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fdatasync` before an append returns. Concurrent appenders share one sync (group commit).
    Sync,
    /// Written to the OS before an append returns; synced at most this long afterwards by a
    /// background flusher. A crash of the machine (not of the process) may lose that window.
    Buffered(Duration),
    /// Written to the OS only; synced when the store closes.
    None,
}

/// What to do with a damaged record found while opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Cut a torn tail of the newest segment back to its last whole batch; any other damage is
    /// [`Error::Corrupt`](crate::Error::Corrupt).
    Strict,
    /// Verify every record of every segment and keep the log up to the last whole batch before the
    /// first bad record; later segments are renamed `*.seg.salvaged`, never deleted.
    Salvage,
}

/// Settings for [`Store::open`](crate::Store::open). Start from `Options::default()`.
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) durability: Durability,
    pub(crate) segment_size: u64,
    pub(crate) max_event_size: u64,
    pub(crate) verify_checksums: bool,
    pub(crate) recovery: Recovery,
    pub(crate) follow: Option<Duration>,
    pub(crate) auto_compact: Option<(u64, Duration)>,
    pub(crate) compaction_niceness: u8,
    pub(crate) disk: Disk,
}

/// Smallest allowed segment size: room for a header and a few records.
pub const MIN_SEGMENT_SIZE: u64 = 4096;
/// Largest allowed segment size: record offsets inside a segment are 32-bit.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 31;

impl Default for Options {
    fn default() -> Options {
        Options {
            durability: Durability::Sync,
            segment_size: 64 << 20,
            max_event_size: 16 << 20,
            verify_checksums: true,
            recovery: Recovery::Strict,
            follow: Some(Duration::from_millis(1)),
            auto_compact: None,
            compaction_niceness: 10,
            disk: Disk::default(),
        }
    }
}

impl Options {
    /// Durability mode (default [`Durability::Sync`]).
    pub fn durability(mut self, durability: Durability) -> Options {
        self.durability = durability;
        self
    }

    /// Size of a new segment file in bytes (default 64 MiB; from 4 KiB to 2 GiB). A batch larger
    /// than this gets a segment of its own, sized to fit.
    pub fn segment_size(mut self, bytes: u64) -> Options {
        self.segment_size = bytes;
        self
    }

    /// Largest accepted event: stream name, type, data and metadata together (default 16 MiB).
    pub fn max_event_size(mut self, bytes: u64) -> Options {
        self.max_event_size = bytes;
        self
    }

    /// Whether reads verify each record's CRC32 (default true).
    pub fn verify_checksums(mut self, verify: bool) -> Options {
        self.verify_checksums = verify;
        self
    }

    /// What opening does with damaged records (default [`Recovery::Strict`]).
    pub fn recovery(mut self, recovery: Recovery) -> Options {
        self.recovery = recovery;
        self
    }

    /// How often a store opened with [`Store::open_read_only`](crate::Store::open_read_only)
    /// looks for batches a writer in another process committed since (default every
    /// millisecond, from a thread of its own). With `None` it shows the store as it opened,
    /// and what [`Store::refresh`](crate::Store::refresh) finds. No effect on a writer.
    pub fn follow(mut self, every: Option<Duration>) -> Options {
        self.follow = every;
        self
    }

    /// Compacts in the background (see [`Store::compact`](crate::Store::compact)): a thread of
    /// the store looks every `checked_every` at how many bytes of sealed segments hold events
    /// no reader sees any more, and compacts once they reach `reclaimable_bytes`. Off by
    /// default. No effect on a read-only store.
    pub fn compact_when(mut self, reclaimable_bytes: u64, checked_every: Duration) -> Options {
        self.auto_compact = Some((reclaimable_bytes, checked_every));
        self
    }

    /// How many steps of Unix niceness below the calling thread's CPU priority a compaction
    /// rewrites segments (default 10; the result is at most 19, the lowest). On a machine whose
    /// cores are busy, the application's appends and reads then get a core first and the
    /// compaction what is left: at 10 it still gets about a tenth of a core against one busy
    /// thread of normal priority, at 19 about a fiftieth. 0 rewrites at the caller's priority.
    /// Only the copy of the records that stay, and its sync, runs nicer: the planning, and
    /// whatever takes the store's locks or the kernel's (creating, renaming, mapping files),
    /// stays at the caller's priority. On a machine of two cores or more, two segments are
    /// copied at once, each on a thread of its own, while nothing else uses the store (no
    /// read and no append since the last look).
    /// Niceness ranks the threads of one scheduling group (a cgroup, or with Linux's
    /// autogroup a session): the application's own threads, not other processes'.
    pub fn compaction_niceness(mut self, steps: u8) -> Options {
        self.compaction_niceness = steps;
        self
    }

    /// Asks `injector` before every file operation, so that tests can fail any of them (feature
    /// `fault-injection`; see [`fault`](crate::fault)).
    #[cfg(feature = "fault-injection")]
    #[cfg_attr(docsrs, doc(cfg(feature = "fault-injection")))]
    pub fn fault_injector(
        mut self,
        injector: std::sync::Arc<dyn crate::fault::FaultInjector>,
    ) -> Options {
        self.disk = Disk::with_injector(injector);
        self
    }
}
