//! Counters of what a store has done since it opened, read by [`Store::stats`]: cheap enough
//! (a relaxed atomic add per group commit or replay, never per event) to be always on.
//!
//! [`Store::stats`]: crate::Store::stats

use std::sync::atomic::{AtomicU64, Ordering};

/// What an open store has done since it opened (each process counts its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Batches (one `append` or `append_multi` call, or an async append) written to the log;
    /// an idempotent retry, which writes nothing, is not counted.
    pub appends: u64,
    /// Events those batches wrote.
    pub events_appended: u64,
    /// Bytes written to the log by them, record framing included.
    pub bytes_appended: u64,
    /// Group commits that wrote to the log: each is one positioned write, and with
    /// `Durability::Sync` one sync, for every batch in the group.
    pub groups: u64,
    /// The most batches one group commit carried.
    pub largest_group: u64,
    /// Syncs of the log to the disk: those of group commits, of the background flusher, of
    /// `flush` and of `close`.
    pub syncs: u64,
    /// Events handed out by `replay_stream` and `replay_all` (which journaled actors'
    /// activations use).
    pub events_replayed: u64,
}

impl Stats {
    /// Batches per group commit, on average: how much appenders share each write and sync.
    pub fn mean_group(&self) -> f64 {
        if self.groups == 0 {
            0.0
        } else {
            self.appends as f64 / self.groups as f64
        }
    }
}

/// The live counters behind [`Stats`].
#[derive(Default)]
pub(crate) struct Counters {
    appends: AtomicU64,
    events_appended: AtomicU64,
    bytes_appended: AtomicU64,
    groups: AtomicU64,
    largest_group: AtomicU64,
    syncs: AtomicU64,
    events_replayed: AtomicU64,
}

impl Counters {
    /// A group commit that wrote `bytes` for `batches` batches of `events` events in all.
    pub(crate) fn group(&self, batches: u64, events: u64, bytes: u64) {
        self.appends.fetch_add(batches, Ordering::Relaxed);
        self.events_appended.fetch_add(events, Ordering::Relaxed);
        self.bytes_appended.fetch_add(bytes, Ordering::Relaxed);
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.largest_group.fetch_max(batches, Ordering::Relaxed);
    }

    /// A sync of the log.
    pub(crate) fn sync(&self) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }

    /// Events handed to a replay's callback.
    pub(crate) fn replayed(&self, events: u64) {
        self.events_replayed.fetch_add(events, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            appends: get(&self.appends),
            events_appended: get(&self.events_appended),
            bytes_appended: get(&self.bytes_appended),
            groups: get(&self.groups),
            largest_group: get(&self.largest_group),
            syncs: get(&self.syncs),
            events_replayed: get(&self.events_replayed),
        }
    }
}
