//! The store: opening and closing, and the public API over the log and the index.

use std::fs::File;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::append::{check_not_reserved, check_stream_name, Queue, WriterState};
use crate::error::{Error, IoContext, Result};
use crate::ids::IdTables;
use crate::index::persist;
use crate::index::FirstUse;
use crate::index::{Index, Key, KeyKind, StreamId};
use crate::log::reader::{Cursor, LogView};
use crate::log::segment::Segment;
use crate::log::writer::LogWriter;
use crate::log::Log;
use crate::options::{Durability, Options, Recovery, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};
use crate::read::{self, AllEvents, StreamEvents};
use crate::startup::{lock_dir, open_id_tables, prepare_dir, recover};
use crate::stats::{Counters, Stats};
use crate::subscription::{checkpoint_stream, AllFrom, Commits, Filter, StreamFrom, Subscription};
use crate::types::{
    AppendResult, EventData, EventRef, ExpectedVersion, Position, RecordedEvent, StreamWrite,
};

/// Largest event size an option may set: an event must fit in a segment.
const MAX_EVENT_SIZE_LIMIT: u64 = 1 << 30;

/// Index files sealed since the key table in place was made, past which an open makes a new one:
/// a first use asks each of them (its key filter: a cache miss), where a table made again (some
/// seconds of one thread at 10M keys) answers for all in one probe.
const REMAKE_PAST: usize = 4;

/// State shared by the store, its appenders and its background flusher.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) options: Options,
    pub(crate) log: Log,
    pub(crate) index: RwLock<Index>,
    pub(crate) writer: Mutex<WriterState>,
    pub(crate) queue: Mutex<Queue>,
    /// Nanoseconds the last sync of a group took.
    pub(crate) sync_nanos: std::sync::atomic::AtomicU64,
    /// Bumped when a durable append's sync starts and again when it ends (odd: one under way),
    /// so that compaction can hold its writeback back while appends wait on the disk.
    pub(crate) durable_syncs: std::sync::atomic::AtomicU64,
    /// Bumped each time a group's appenders are handed their results, so that appenders
    /// waiting for theirs can watch it without taking the queue's lock.
    pub(crate) groups_done: std::sync::atomic::AtomicU64,
    /// What `Store::stats` reports.
    pub(crate) counters: Counters,
    /// The metadata of the streams that have any (see `lifecycle`).
    pub(crate) meta: RwLock<crate::lifecycle::MetaMap>,
    /// Wakes subscriptions on commits.
    pub(crate) commits: Commits,
    /// The event-id tables of sealed segments.
    pub(crate) ids: Arc<IdTables>,
    /// Whether the index has a lazy part (set at open, never changes): keys it does not hold
    /// may be in index files.
    pub(crate) lazy: bool,
    /// Set by `close` (under the queue lock): every later call fails with `Error::Closed`.
    pub(crate) closed: AtomicBool,
    /// Set with `closed` when the store closed to hand the writer role to another process:
    /// later calls fail with `Error::HandedOver` instead.
    pub(crate) handed_over: AtomicBool,
    /// Set when a follower's index was moved to the writer it became: reads of this store that
    /// would use it fail with `Error::Closed` (iterators made before too).
    pub(crate) index_gone: AtomicBool,
    /// Wakes `close` when the queue drains; used with the queue lock.
    pub(crate) drained: Condvar,
    /// Wakes appenders that wait while a handover is decided; used with the queue lock.
    pub(crate) resumed: Condvar,
    /// Set by `close`: the background threads (flusher, follower) end.
    pub(crate) stop: Mutex<bool>,
    pub(crate) stop_cv: Condvar,
    /// What a read-only store keeps between catch-ups with a writer in another process.
    pub(crate) follow: Mutex<crate::follower::FollowState>,
    /// Held by a compaction for all of its work: one runs at a time.
    pub(crate) compaction: Mutex<()>,
}

/// What [`Store::index_info`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexInfo {
    /// Index keys in memory: the streams used (read or written) since the store opened, and the
    /// category and event type keys used, each counted once.
    pub loaded_keys: usize,
    /// Index files the stream index looks keys up in (their streams are loaded when first used,
    /// not when the store opens).
    pub index_files: usize,
    /// Index files the key table in use covers (0 without one): a key first used since the
    /// store opened is found in the table for these, searched for in the others.
    pub key_table_files: usize,
    /// Bytes of memory taken by the key filters: one per index file left unread at open that the
    /// key table does not cover (most often only the file of the segment active at open), so
    /// that a first use searches it only for keys it may hold.
    pub key_filter_bytes: usize,
}

/// An open event store.
///
/// `Store` is `Send + Sync`: share it between threads with `Arc`. Appends from many threads are
/// committed together (group commit); reads never wait for appends.
///
/// ```
/// use eventjournal::{EventData, ExpectedVersion, Options, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path(), Options::default())?;
/// let r = store.append("account-1", ExpectedVersion::NoStream, [EventData::new("Opened", "{}")])?;
/// assert_eq!(r.version, Some(0));
/// for event in store.read_stream_forward("account-1", 0, usize::MAX)? {
///     let event = event?;
///     assert_eq!(event.event_type(), "Opened");
/// }
/// store.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`close`](Self::close) takes `&self`, so a store shared through an `Arc` — with a
/// [`Host`](crate::journal::Host), with threads — is closed through any of its handles, without
/// gathering them first. Calls through the other handles then fail with [`Error::Closed`], and the
/// directory can be opened again at once:
///
/// ```
/// # use eventjournal::journal::*;
/// # use eventjournal::{Error, Options, Store};
/// # use std::sync::Arc;
/// # #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
/// # struct Added(u64);
/// # impl JournalEvent for Added { fn event_type(&self) -> &'static str { "Added" } }
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
/// # struct Counter(u64);
/// # impl JournalState for Counter {
/// #     type Event = Added; type Error = Rejected; const TYPE: &'static str = "counter";
/// #     fn apply(&mut self, e: &Added) -> Result<(), Rejected> { self.0 += e.0; Ok(()) }
/// # }
/// # let dir = tempfile::tempdir()?;
/// let store = Arc::new(Store::open(dir.path(), Options::default())?);
/// let host = Host::new(store.clone(), Arc::new(Journal::<Counter>::new()), 1_000);
/// host.call("visits", |c| {
///     c.raise_event(Added(1))?;
///     c.confirm_events()
/// })?;
///
/// store.close()?; // the host still holds its handle
/// let late = host.call("visits", |c| {
///     c.raise_event(Added(1))?;
///     c.confirm_events()
/// });
/// assert!(matches!(late, Err(Error::Closed)));
/// let reopened = Store::open(dir.path(), Options::default())?; // the directory is free
/// assert_eq!(reopened.stream_version("counter-visits")?, Some(0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Store {
    pub(crate) shared: Arc<Shared>,
    pub(crate) life: Arc<Life>,
}

/// A store's threads and directory lock: what closing ends, whether `close`, the last handle's
/// drop or a handover another process asked for closes the store.
pub(crate) struct Life {
    /// The background flusher (`Durability::Buffered`), or a read-only store's follower.
    flusher: Mutex<Option<JoinHandle<()>>>,
    /// The background compaction (`Options::compact_when`).
    compactor: Mutex<Option<JoinHandle<()>>>,
    /// The thread that writes and merges id tables.
    ids_worker: Mutex<Option<JoinHandle<()>>>,
    /// The thread that loads or makes the key table after the store opened.
    keys_worker: Mutex<Option<JoinHandle<()>>>,
    /// `Some` until the store is closed, with the directory lock (none for a read-only store).
    /// Held by `close` for all of its work, so that a second `close` returns only when the
    /// first is done.
    pub(crate) lock: Mutex<Option<Option<File>>>,
    /// The thread that hands the writer role over when another process asks (a writer's).
    pub(crate) listener: Mutex<Option<crate::handover::Listener>>,
    /// The thread that leads groups for async appenders, started by the first one.
    #[cfg(feature = "async")]
    committer: Mutex<Option<JoinHandle<()>>>,
    #[cfg(feature = "async")]
    committer_started: AtomicBool,
}

impl Store {
    /// Opens the store in `dir`, creating the directory and an empty store if there is none.
    ///
    /// Fails with [`Error::Locked`] if another `Store` has it open, [`Error::NotAStore`] if the
    /// directory holds other files, [`Error::UnsupportedVersion`] for a newer format, and
    /// [`Error::Corrupt`] for damage other than a torn tail (unless `Recovery::Salvage`).
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        Store::open_as(dir.as_ref(), options, false)
    }

    /// Opens the store in `dir` for reading only, beside a writer in another process or on
    /// files this process may only read (read-only media, another user's store).
    ///
    /// It takes no lock and changes no file: a torn tail is left where it is and only not read,
    /// leftover temporary files stay, and what recovery would rebuild on disk (index files, id
    /// tables) is built in memory. Every read works on it: streams, `$all`, categories and event
    /// types, checkpoints, subscriptions; appends and `save_checkpoint` fail with
    /// [`Error::ReadOnly`].
    ///
    /// It follows a writer in another process (or this one): every millisecond (see
    /// [`Options::follow`]) it shows the batches committed since, each one whole, as if they
    /// had been appended through it — subscriptions get them too. It goes on through the
    /// writer's segment changes, crashes and recovery: what a crash left unfinished is never
    /// shown. [`refresh`](Self::refresh) catches up at once.
    ///
    /// Fails with [`Error::NotAStore`] if `dir` holds no store (it is never created), and
    /// [`Error::InvalidInput`] with `Recovery::Salvage`, which changes files.
    ///
    /// ```
    /// use eventjournal::{Error, EventData, ExpectedVersion, Options, Store};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let writer = Store::open(dir.path(), Options::default())?;
    /// writer.append("order-7", ExpectedVersion::NoStream, [EventData::new("Placed", "{}")])?;
    ///
    /// let reader = Store::open_read_only(dir.path(), Options::default())?;
    /// assert_eq!(reader.stream_version("order-7")?, Some(0));
    /// let refused = reader.append("order-7", ExpectedVersion::Exact(0), [EventData::new("Paid", "{}")]);
    /// assert!(matches!(refused, Err(Error::ReadOnly { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_read_only(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        Store::open_as(dir.as_ref(), options, true)
    }

    fn open_as(dir: &Path, mut options: Options, read_only: bool) -> Result<Store> {
        check_options(&options)?;
        options.disk = options.disk.for_store();
        let dir = dir.to_path_buf();
        let lock = if read_only {
            if options.recovery == Recovery::Salvage {
                return Err(Error::InvalidInput(
                    "a read-only open cannot salvage: salvage cuts and renames files".into(),
                ));
            }
            options.disk = options.disk.read_only();
            if !dir.join(crate::startup::META_FILE).is_file() {
                return Err(Error::NotAStore {
                    path: dir,
                    reason: format!(
                        "no {}: a read-only open does not create a store",
                        crate::startup::META_FILE
                    ),
                });
            }
            prepare_dir(&dir, &options.disk)?;
            None
        } else {
            prepare_dir(&dir, &options.disk)?;
            Some(lock_dir(&dir, &options.disk)?)
        };
        Store::open_locked(dir, options, lock)
    }

    /// Opens the store in `dir` (prepared), holding `lock` (`None`: read-only).
    pub(crate) fn open_locked(dir: PathBuf, options: Options, lock: Option<File>) -> Result<Store> {
        let (segments, index, manifest) = recover(&dir, &options)?;
        Store::assemble(
            dir,
            options,
            segments,
            index,
            lock,
            std::time::Duration::ZERO,
            manifest,
        )
    }

    /// A store over `segments` (in base order, the newest whole up to its data end) and the
    /// index of everything in them: its writer, threads and listener started.
    ///
    /// `quiet` delays the id-table worker's first round (see `IdTables::run`): for a writer
    /// that took over from another process.
    pub(crate) fn assemble(
        dir: PathBuf,
        options: Options,
        segments: Vec<Arc<Segment>>,
        mut index: Index,
        lock: Option<File>,
        quiet: std::time::Duration,
        manifest: Option<Arc<crate::manifest::Manifest>>,
    ) -> Result<Store> {
        let read_only = lock.is_none();
        let lazy = !index.files().is_empty();
        let Some(active) = segments.last().cloned() else {
            return Err(Error::InvalidInput(
                "internal: no segment after recovery".into(),
            ));
        };
        let visible = active.base + active.data_end();
        let sealed = &segments[..segments.len() - 1];
        let ids = Arc::new(open_id_tables(&dir, &options, sealed, manifest.as_deref())?);
        index.set_hints(ids.clone());
        let writer = LogWriter::new(
            dir.clone(),
            active.clone(),
            active.data_end(),
            options.segment_size,
            options.durability != Durability::None,
            options.durability != Durability::Sync,
        );
        let shared = Arc::new(Shared {
            dir,
            log: Log::new(segments, visible, options.verify_checksums),
            index: RwLock::new(index),
            writer: Mutex::new(WriterState::new(writer)),
            queue: Mutex::new(Queue::default()),
            sync_nanos: std::sync::atomic::AtomicU64::new(0),
            durable_syncs: std::sync::atomic::AtomicU64::new(0),
            groups_done: std::sync::atomic::AtomicU64::new(0),
            counters: Counters::default(),
            meta: RwLock::new(Default::default()),
            commits: Commits::default(),
            ids,
            lazy,
            closed: AtomicBool::new(false),
            handed_over: AtomicBool::new(false),
            index_gone: AtomicBool::new(false),
            drained: Condvar::new(),
            resumed: Condvar::new(),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
            follow: Mutex::new(Default::default()),
            compaction: Mutex::new(()),
            options,
        });
        let flusher = match shared.options.durability {
            Durability::Buffered(every) if !read_only => {
                let s = shared.clone();
                Some(
                    std::thread::Builder::new()
                        .name("eventjournal-flush".into())
                        .spawn(move || s.flush_loop(every))
                        .at("starting the background flusher of", &shared.dir)?,
                )
            }
            _ if read_only => match shared.options.follow {
                Some(every) => {
                    let s = shared.clone();
                    Some(
                        std::thread::Builder::new()
                            .name("eventjournal-follow".into())
                            .spawn(move || s.follow_loop(every))
                            .at("starting the follower of", &shared.dir)?,
                    )
                }
                None => None,
            },
            _ => None,
        };
        let ids_worker = if read_only {
            // Id tables that could not be used are searched around, never rebuilt.
            None
        } else if shared.ids.is_inline() {
            let _ = shared.ids.maintain(table_entries);
            None
        } else {
            let ids = shared.ids.clone();
            Some(
                std::thread::Builder::new()
                    .name("eventjournal-ids".into())
                    .spawn(move || ids.run(table_entries, quiet))
                    .at("starting the id index worker of", &shared.dir)?,
            )
        };
        let compactor = match shared.options.auto_compact {
            Some((bytes, every)) if !read_only => {
                let s = shared.clone();
                Some(
                    std::thread::Builder::new()
                        .name("eventjournal-compact".into())
                        .spawn(move || s.compact_loop(bytes, every))
                        .at("starting the background compaction of", &shared.dir)?,
                )
            }
            _ => None,
        };
        let keys_worker = if read_only || !lazy {
            None
        } else if shared.options.disk.is_watched() {
            shared.keep_key_table();
            None
        } else {
            let s = shared.clone();
            Some(
                std::thread::Builder::new()
                    .name("eventjournal-keys".into())
                    .spawn(move || s.keep_key_table())
                    .at("starting the key table's worker of", &shared.dir)?,
            )
        };
        let life = Arc::new(Life {
            flusher: Mutex::new(flusher),
            compactor: Mutex::new(compactor),
            ids_worker: Mutex::new(ids_worker),
            keys_worker: Mutex::new(keys_worker),
            lock: Mutex::new(Some(lock)),
            listener: Mutex::new(None),
            #[cfg(feature = "async")]
            committer: Mutex::new(None),
            #[cfg(feature = "async")]
            committer_started: AtomicBool::new(false),
        });
        if !read_only {
            // Best effort: a writer that cannot listen (a directory it may not create a socket
            // in) works as before, and a handover to it falls back to a full open.
            *life.listener.lock() = crate::handover::listen(&shared, &life);
        }
        Ok(Store { shared, life })
    }

    /// Closes the store: lets the appends already queued or in flight finish (each gets its
    /// own result), syncs everything, saves the index, stops the background threads, ends every
    /// subscription and releases the directory lock, so that `Store::open` of the same directory
    /// succeeds as soon as this returns — even while other handles on this `Store` (an
    /// `Arc<Store>` shared with a [`Host`](crate::journal::Host) or with other threads) are still
    /// alive.
    ///
    /// After `close`, every method of this store that returns a `Result` fails with
    /// [`Error::Closed`]: appends, `flush`, reads and replays, subscriptions, checkpoints. The
    /// methods without a `Result` (`head`, `index_info`, `path`) and `streams`, `stream_version`,
    /// `category_len` and `event_type_len` answer from what the store held when it closed. Iterators and
    /// subscriptions made before `close` yield the events committed before it; subscriptions then
    /// end. The segments' memory maps stay until the last handle (and the last event or
    /// subscription read through it) is dropped.
    ///
    /// An error is what syncing found (the lock is released all the same). Closing again is
    /// harmless and returns `Ok(())`, as closing a connection twice is in SQLite's Python
    /// binding: only the first call does the work and reports its outcome; a call made while
    /// another is closing waits for it. Dropping the last handle closes an open store too, but
    /// can only discard the error: call `close` to see it.
    pub fn close(&self) -> Result<()> {
        shutdown(&self.shared, &self.life, None)
    }
}

/// Closes a store (see [`Store::close`]). For a handover whose asker waits until `deadline`
/// (milliseconds since the Unix epoch; `decided` tells it the handover goes ahead): appends refused from now on fail with
/// [`Error::HandedOver`]; once the groups in flight are committed and synced, if the deadline
/// has passed, the asker has given up, and the store takes appends again rather than be left
/// without a writer (`Err(Error::TakeOverFailed)`); and what only speeds up the next open
/// (saving the newest segment's index file, writing id tables) is left to the new writer.
pub(crate) fn shutdown(
    shared: &Shared,
    life: &Life,
    handover_until: Option<(u64, &dyn Fn())>,
) -> Result<()> {
    let handover = handover_until.is_some();
    // Stopped before the close begins: a handover it is serving closes the store itself (and a
    // close that waited for the listener under the lock would wait for it forever).
    if let Some(listener) = life.listener.lock().take() {
        listener.stop();
    }
    let mut held = life.lock.lock();
    // One a refused handover started again meanwhile: stopped without waiting for it, since
    // a request it serves waits for this lock.
    if let Some(listener) = life.listener.lock().take() {
        listener.stop_without_waiting();
    }
    let Some(lock) = held.take() else {
        return Ok(());
    };
    if let Some((deadline, decided)) = handover_until {
        // New batches wait while the groups in flight are committed and synced; then the
        // handover is decided: they go on here if the asker has given up meanwhile, and fail
        // with `HandedOver` (never written) if it goes ahead.
        {
            let mut q = shared.queue.lock();
            q.paused = true;
            while !q.is_drained() {
                shared.drained.wait(&mut q);
            }
        }
        // What the durability mode has not made durable yet (under `Sync`, nothing: no sync).
        let synced = shared.writer.lock().log.flush();
        let mut q = shared.queue.lock();
        q.paused = false;
        let too_late = synced.is_ok() && crate::handover::now_millis() > deadline;
        if !too_late {
            q.closed = true;
            shared.handed_over.store(true, Ordering::SeqCst);
            shared.closed.store(true, Ordering::SeqCst);
        }
        shared.resumed.notify_all();
        #[cfg(feature = "async")]
        for w in q.paused_wakers.drain(..) {
            w.wake();
        }
        drop(q);
        if !too_late {
            // From here the asker waits for the rest of the close, however long it takes.
            decided();
        }
        if too_late {
            *held = Some(lock);
            return Err(Error::TakeOverFailed {
                path: shared.dir.clone(),
                reason: "the deadline passed while the writer committed its groups in flight"
                    .into(),
            });
        }
    } else {
        // From here on nothing is queued; what is queued already is committed by its
        // appenders (or the committer thread, for async ones) as usual.
        let mut q = shared.queue.lock();
        q.closed = true;
        shared.closed.store(true, Ordering::SeqCst);
        while !q.is_drained() {
            shared.drained.wait(&mut q);
        }
    }
    #[cfg(feature = "async")]
    {
        let mut q = shared.queue.lock();
        q.stop_committer = true;
        if let Some(c) = &q.committer {
            c.unpark();
        }
    }
    #[cfg(feature = "async")]
    if let Some(t) = life.committer.lock().take() {
        let _ = t.join();
    }
    *shared.stop.lock() = true;
    shared.stop_cv.notify_all();
    if let Some(t) = life.flusher.lock().take() {
        let _ = t.join();
    }
    if let Some(t) = life.compactor.lock().take() {
        let _ = t.join();
    }
    // Stops at its next index file once the store is closed.
    if let Some(t) = life.keys_worker.lock().take() {
        let _ = t.join();
    }
    // A compaction a caller runs stops at its next step (4,096 records, or a write of at most
    // 1 MiB) once the store is closed; it is waited for (and kept from starting) until the
    // lock is released, since no file of the store may change after that.
    let _compaction = shared.compaction.lock();
    // No file of the store may change once the lock is released.
    shared.ids.stop();
    if let Some(t) = life.ids_worker.lock().take() {
        let _ = t.join();
    }
    let result = if shared.is_read_only() {
        Ok(())
    } else {
        if !handover {
            let _ = shared.ids.write_pending();
        }
        let mut w = shared.writer.lock();
        // A handover flushed everything once the groups in flight were committed, and nothing
        // was written since; a close syncs the directory too, whatever the mode.
        let synced = if handover {
            w.log.flush()
        } else {
            w.log.sync_all()
        };
        synced.map(|()| {
            let active = w.log.active().clone();
            if !handover {
                let _ = shared.save_segment_index(&active, false);
            }
            // The next open checks that the segment is zero past its data end, reading what
            // the file system does not report as a hole: made one (best effort; the bytes
            // there are zeros already, so a crash anywhere in this leaves the same log).
            let from = active.data_end().next_multiple_of(4096);
            if from < active.usable() {
                let _ = shared.options.disk.punch(
                    &active.file,
                    &active.path,
                    from,
                    active.usable() - from,
                );
            }
            if !handover && shared.options.durability != Durability::None {
                // Best effort, like the index file above: without it the next open checks
                // every sealed segment's index file against the log. Not under `None`, whose
                // index files and id tables are written without a sync: the manifest names
                // only files a power loss keeps.
                let segments = shared.log.segments();
                let sealed = &segments[..segments.len().saturating_sub(1)];
                let index = shared.index.read();
                let _ = crate::startup::write_manifest(
                    &shared.dir,
                    sealed,
                    &index,
                    &shared.ids,
                    &shared.options.disk,
                );
            }
        })
    };
    if !shared.is_read_only() {
        shared.options.disk.fence();
    }
    drop(lock);
    shared.commits.close();
    result
}

impl Store {
    /// Ends a read-only store's follower thread.
    pub(crate) fn stop_following(&self) {
        *self.shared.stop.lock() = true;
        self.shared.stop_cv.notify_all();
        if let Some(t) = self.life.flusher.lock().take() {
            let _ = t.join();
        }
    }

    /// Fails with [`Error::Closed`] once the store is closed ([`Error::HandedOver`] once it
    /// handed the writer role to another process).
    pub(crate) fn check_open(&self) -> Result<()> {
        self.shared.check_open()
    }

    /// For a store opened with [`open_read_only`](Self::open_read_only): shows at once every
    /// batch the writer committed since it last looked, and returns the new head. For a writer,
    /// the head.
    ///
    /// Fails with [`Error::Corrupt`] once the log no longer continues what this store has
    /// shown (a salvage cut batches it had shown, or the directory holds another store now):
    /// what it showed stays readable, and nothing more is shown; open the store again.
    ///
    /// ```
    /// use eventjournal::{EventData, ExpectedVersion, Options, Store};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let writer = Store::open(dir.path(), Options::default())?;
    /// let reader = Store::open_read_only(dir.path(), Options::default().follow(None))?;
    /// let r = writer.append("order-7", ExpectedVersion::NoStream, [EventData::new("Placed", "{}")])?;
    /// assert_eq!(reader.stream_version("order-7")?, None);
    /// assert_eq!(reader.refresh()?, writer.head());
    /// assert_eq!(reader.stream_version("order-7")?, r.version);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn refresh(&self) -> Result<Position> {
        self.check_open()?;
        if self.shared.is_read_only() {
            self.shared.catch_up()?;
        }
        Ok(self.head())
    }

    /// Makes every append that returned before this call durable, and returns when it is on
    /// disk: under [`Durability::Buffered`] and [`Durability::None`], the way to make a point
    /// durable without closing the store. Under [`Durability::Sync`] every acknowledged append
    /// is durable already, and this does no I/O.
    ///
    /// Appends that run meanwhile wait for it (it holds the writer for the sync). A failed sync
    /// is an error, and, as for any failed sync, the store then refuses writes
    /// ([`Error::Poisoned`]) until it is reopened.
    pub fn flush(&self) -> Result<()> {
        self.check_open()?;
        if self.shared.is_read_only() {
            return Ok(()); // Nothing was written.
        }
        // Whoever wrote a group held the writer while writing it, so every append that has
        // returned has its bytes in the log by the time the writer is free.
        let mut w = self.shared.writer.lock();
        w.log.flush()?;
        w.mark_synced();
        self.shared.counters.sync();
        Ok(())
    }

    /// Appends `events` to `stream` if its version is `expected`; all or none of them.
    ///
    /// The rules are EventStoreDB's:
    /// - `Any` appends whatever the stream holds; `NoStream` needs a stream without events;
    ///   `StreamExists` one with events; `Exact(n)` one whose last event number is `n`.
    /// - Otherwise the result is [`Error::WrongExpectedVersion`] and nothing is written — except
    ///   for a retry: if the stream already holds the batch's event ids, in order, right after
    ///   the expected version (for `Any` and `StreamExists`: from wherever the first id is), the
    ///   append succeeds without writing and returns the original result. This is derived from
    ///   the log, so it holds across restarts.
    /// - An empty batch writes nothing and checks only the expected version.
    ///
    /// With [`Durability::Sync`] the events are on disk when this returns.
    pub fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: impl IntoIterator<Item = EventData>,
    ) -> Result<AppendResult> {
        self.check_open()?;
        let write = StreamWrite::new(stream, expected, events.into_iter().collect());
        check_not_reserved(std::slice::from_ref(&write), &[])?;
        self.append_unchecked(write)
    }

    /// Appends one stream's write without refusing reserved names: for the store's own writers
    /// (checkpoints, and the journal's snapshots), which check what they may write themselves.
    pub(crate) fn append_unchecked(&self, write: StreamWrite) -> Result<AppendResult> {
        let mut results = self.shared.submit(vec![write])?;
        results
            .pop()
            .ok_or_else(|| Error::InvalidInput("internal: no result for the append".into()))
    }

    /// Appends to several streams atomically: each write is checked against its own expected
    /// version, and either all are written, as one batch with one position range, or none.
    /// Results come back in the order of `writes`. A stream may appear only once.
    pub fn append_multi(&self, writes: Vec<StreamWrite>) -> Result<Vec<AppendResult>> {
        self.check_open()?;
        check_not_reserved(&writes, &[])?;
        self.shared.submit(writes)
    }

    /// [`append_multi`](Self::append_multi) that may also write the names the store keeps for
    /// itself (checkpoints, snapshots, stream metadata; see [`SYSTEM_PREFIX`](crate::SYSTEM_PREFIX)):
    /// for tools that copy a whole store in from another backend, such as
    /// `eventjournal-postgres`'s `copy_from_postgres`. Not for an application's own events.
    pub fn append_multi_including_reserved(
        &self,
        writes: Vec<StreamWrite>,
    ) -> Result<Vec<AppendResult>> {
        self.check_open()?;
        self.shared.submit(writes)
    }

    /// [`append`](Self::append) for async code (feature `async`): the same rules and results,
    /// but waiting for the group commit (and its `fdatasync`) does not block the thread polling
    /// the future. It needs no particular runtime: the batch joins the group-commit queue with
    /// the task's waker, and the write and sync are led by a thread of the store (started by the
    /// first async append, stopped by [`close`](Self::close)) or by a blocking appender leading
    /// a group at the time.
    ///
    /// Dropping the future before it completes (a cancelled task, a timeout) leaves the store
    /// consistent: a batch not yet taken into a group is never written; one already in a group
    /// being committed may still be written, like a request that timed out on its way, and is
    /// recognised as a retry if sent again with the same event ids and expected version.
    ///
    /// ```
    /// # use eventjournal::{EventData, ExpectedVersion, Options, Store};
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     struct W(std::thread::Thread);
    /// #     impl std::task::Wake for W { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
    /// #     let waker = std::sync::Arc::new(W(std::thread::current())).into();
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         if let std::task::Poll::Ready(r) = f.as_mut().poll(&mut cx) { return r; }
    /// #         std::thread::park();
    /// #     }
    /// # }
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path(), Options::default())?;
    /// let r = block_on(store.append_async(
    ///     "account-1",
    ///     ExpectedVersion::NoStream,
    ///     [EventData::new("Opened", "{}")],
    /// ))?;
    /// assert_eq!(r.version, Some(0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "async")]
    pub async fn append_async(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: impl IntoIterator<Item = EventData>,
    ) -> Result<AppendResult> {
        let write = StreamWrite::new(stream, expected, events.into_iter().collect());
        check_not_reserved(std::slice::from_ref(&write), &[])?;
        self.append_async_unchecked(write).await
    }

    /// [`append_async`](Self::append_async) without refusing reserved names, for the store's own
    /// writers (see [`append_unchecked`](Self::append_unchecked)).
    #[cfg(feature = "async")]
    pub(crate) async fn append_async_unchecked(&self, write: StreamWrite) -> Result<AppendResult> {
        let mut results = self.submit_async(vec![write]).await?;
        results
            .pop()
            .ok_or_else(|| Error::InvalidInput("internal: no result for the append".into()))
    }

    /// [`append_multi`](Self::append_multi) for async code (feature `async`); see
    /// [`append_async`](Self::append_async).
    #[cfg(feature = "async")]
    pub async fn append_multi_async(&self, writes: Vec<StreamWrite>) -> Result<Vec<AppendResult>> {
        check_not_reserved(&writes, &[])?;
        self.submit_async(writes).await
    }

    #[cfg(feature = "async")]
    async fn submit_async(&self, writes: Vec<StreamWrite>) -> Result<Vec<AppendResult>> {
        self.check_open()?;
        self.shared.check_writable()?;
        self.start_committer()?;
        self.shared.submit_async(writes)?.await
    }

    /// Starts the committer thread if it is not running.
    #[cfg(feature = "async")]
    fn start_committer(&self) -> Result<()> {
        if self.life.committer_started.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut slot = self.life.committer.lock();
        if slot.is_some() {
            return Ok(());
        }
        // `close` sets this before it takes the slot: a committer started after that would
        // never be stopped.
        self.check_open()?;
        let s = self.shared.clone();
        let handle = std::thread::Builder::new()
            .name("eventjournal-commit".into())
            .spawn(move || s.commit_loop())
            .at("starting the commit thread of", &self.shared.dir)?;
        self.shared.queue.lock().committer = Some(handle.thread().clone());
        *slot = Some(handle);
        self.life.committer_started.store(true, Ordering::Release);
        Ok(())
    }

    /// Up to `max` events of `stream` from event number `from` on, oldest first. A stream without
    /// events, or `from` past its end, yields nothing.
    pub fn read_stream_forward(
        &self,
        stream: &str,
        from: u64,
        max: usize,
    ) -> Result<StreamEvents<'_>> {
        self.check_open()?;
        check_stream_name(stream)?;
        StreamEvents::new(&self.shared, stream, from, max, true)
    }

    /// Up to `max` events of `stream` from event number `from` down, newest first. `from` past
    /// the end (e.g. `u64::MAX`) starts at the newest event.
    pub fn read_stream_backward(
        &self,
        stream: &str,
        from: u64,
        max: usize,
    ) -> Result<StreamEvents<'_>> {
        self.check_open()?;
        check_stream_name(stream)?;
        StreamEvents::new(&self.shared, stream, from, max, false)
    }

    /// Event number `event_number` of `stream`, or [`Error::EventNotFound`].
    pub fn read_event(&self, stream: &str, event_number: u64) -> Result<RecordedEvent> {
        match self.read_stream_forward(stream, event_number, 1)?.next() {
            // A read from a hidden event starts at the first visible one.
            Some(Ok(e)) if e.event_number() == event_number => Ok(e),
            Some(Err(e)) => Err(e),
            _ => Err(Error::EventNotFound {
                stream: stream.to_string(),
                event_number,
            }),
        }
    }

    /// Hands the events of `stream` from event number `from` on to `f`, in order, borrowed from
    /// the log, until `f` returns [`ControlFlow::Break`]; returns how many events `f` was handed.
    /// This is the fastest way to rebuild state from a stream: no event is copied, and no
    /// reference count is taken per event. The events are those committed when the call starts.
    ///
    /// ```
    /// # use eventjournal::{EventData, ExpectedVersion, Options, Store};
    /// # use std::ops::ControlFlow;
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path(), Options::default())?;
    /// store.append("account-1", ExpectedVersion::NoStream, [
    ///     EventData::new("Deposited", 100i64.to_le_bytes().to_vec()),
    ///     EventData::new("Withdrawn", 30i64.to_le_bytes().to_vec()),
    /// ])?;
    /// let mut balance = 0i64;
    /// store.replay_stream("account-1", 0, |e| {
    ///     let amount = i64::from_le_bytes(e.data().try_into().unwrap_or_default());
    ///     match e.event_type() {
    ///         "Deposited" => balance += amount,
    ///         "Withdrawn" => balance -= amount,
    ///         _ => {}
    ///     }
    ///     ControlFlow::Continue(())
    /// })?;
    /// assert_eq!(balance, 70);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn replay_stream<F>(&self, stream: &str, from: u64, f: F) -> Result<u64>
    where
        F: FnMut(&EventRef<'_>) -> ControlFlow<()>,
    {
        self.check_open()?;
        check_stream_name(stream)?;
        let _span = tracing::debug_span!("replay", stream, from).entered();
        let n = read::replay_stream(&self.shared, stream, from, f)?;
        self.shared.counters.replayed(n);
        Ok(n)
    }

    /// Hands the events of `$all` from `from` on (as for
    /// [`read_all_forward`](Self::read_all_forward)) to `f`, in commit order, borrowed from the
    /// log, until `f` returns [`ControlFlow::Break`]; returns how many events `f` was handed.
    /// `next_position()` of the last one is where to continue.
    pub fn replay_all<F>(&self, from: Position, f: F) -> Result<u64>
    where
        F: FnMut(&EventRef<'_>) -> ControlFlow<()>,
    {
        self.check_open()?;
        let view = self.shared.log.view();
        let cursor = self.all_cursor(&view, from)?;
        let _span = tracing::debug_span!("replay", stream = "$all", from = from.0).entered();
        let n = read::replay_all(&self.shared, &view, cursor, f)?;
        self.shared.counters.replayed(n);
        Ok(n)
    }

    /// What this store has done since it opened: appends, bytes, group commits and syncs,
    /// events replayed.
    ///
    /// ```
    /// # use eventjournal::{EventData, ExpectedVersion, Options, Store};
    /// # let dir = tempfile::tempdir()?;
    /// # let store = Store::open(dir.path(), Options::default())?;
    /// store.append("order-1", ExpectedVersion::NoStream, [EventData::new("Placed", "{}")])?;
    /// let stats = store.stats();
    /// assert_eq!((stats.appends, stats.events_appended, stats.syncs), (1, 1, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// The stream's last event number; `None` if it has no events. An error if the stream had
    /// to be looked up in an index file that turned out damaged ([`Error::Corrupt`]).
    pub fn stream_version(&self, stream: &str) -> Result<Option<u64>> {
        if crate::index::is_key_name(stream) {
            return Ok(None);
        }
        let (_, len) = self.shared.stream_len(stream)?;
        Ok(len.checked_sub(1))
    }

    /// Up to `max` events of `$all` in commit order, from the event at `from` (or
    /// [`Position::START`]) on. `from` must be `START`, `END`, or an event's `position()` or
    /// `next_position()`; anything else is [`Error::InvalidPosition`].
    pub fn read_all_forward(&self, from: Position, max: usize) -> Result<AllEvents> {
        self.check_open()?;
        let view = self.shared.log.view();
        let cursor = self.all_cursor(&view, from)?;
        AllEvents::new(&self.shared, view, cursor, max, true)
    }

    /// Up to `max` events of `$all` in reverse commit order, from the event just before `from`
    /// (use [`Position::END`] for the newest). Valid `from` values are as for
    /// [`read_all_forward`](Self::read_all_forward); reading backward from an event's
    /// `next_position()` starts with that event.
    pub fn read_all_backward(&self, from: Position, max: usize) -> Result<AllEvents> {
        self.check_open()?;
        let view = self.shared.log.view();
        let cursor = self.all_cursor(&view, from)?;
        AllEvents::new(&self.shared, view, cursor, max, false)
    }

    /// Checks a caller's `$all` position. A record found there must be the one the index places
    /// there: event payloads can hold bytes that look like a record, and a position inside one
    /// must not make up an event.
    fn all_cursor(&self, view: &LogView, from: Position) -> Result<Cursor> {
        let cursor = view.cursor(from)?;
        // At the visible end there is no event yet (bytes of a batch being committed may be
        // there, not yet in the index).
        if from == Position::START || from == Position::END || from.0 >= view.visible() {
            return Ok(cursor);
        }
        if let Ok(Some(e)) = view.event_at(from.0) {
            let placed = match self.shared.stream_id(e.stream())? {
                Some(id) => {
                    let index = self.shared.index.read();
                    self.shared.check_index()?;
                    index.position(id, e.event_number())?
                }
                None => None,
            };
            if placed != Some(from.0) {
                return Err(Error::InvalidPosition(from));
            }
        }
        Ok(cursor)
    }

    /// The names of all streams with events, sorted by name. This holds every name at once: on
    /// a store of millions of streams, page through them with
    /// [`list_streams`](Self::list_streams) instead. An error as for
    /// [`stream_version`](Self::stream_version).
    pub fn streams(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.streams_page(after.as_deref(), 4096)?;
            match page.last() {
                Some(last) => after = Some(last.clone()),
                None => break,
            }
            out.extend(page);
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Up to `max` stream names that come after `after` (`None`: from the first) in the store's
    /// listing order, which is stable but otherwise unspecified (it follows a hash of the
    /// names). Pass the last name of a page to get the next one; an empty page is the end. Memory
    /// and time per page grow with `max` and the number of streams used since the store opened,
    /// not with the number of streams in the store.
    ///
    /// ```
    /// # use eventjournal::{EventData, ExpectedVersion, Options, Store};
    /// # let dir = tempfile::tempdir()?;
    /// # let store = Store::open(dir.path(), Options::default())?;
    /// # for i in 0..10 {
    /// #     store.append(&format!("s-{i}"), ExpectedVersion::Any, [EventData::new("E", "")])?;
    /// # }
    /// let mut after = None;
    /// let mut seen = 0;
    /// loop {
    ///     let page = store.list_streams(after.as_deref(), 3)?;
    ///     let Some(last) = page.last() else { break };
    ///     seen += page.len();
    ///     after = Some(last.clone());
    /// }
    /// assert_eq!(seen, 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn list_streams(&self, after: Option<&str>, max: usize) -> Result<Vec<String>> {
        self.check_open()?;
        self.streams_page(after, max)
    }

    /// Up to `max` category names (see [`category_of`](crate::category_of)) after `after`, paged
    /// as [`list_streams`](Self::list_streams) pages stream names.
    ///
    /// ```
    /// # use eventjournal::{EventData, ExpectedVersion, Options, Store};
    /// # let dir = tempfile::tempdir()?;
    /// # let store = Store::open(dir.path(), Options::default())?;
    /// store.append("order-1", ExpectedVersion::Any, [EventData::new("Placed", "{}")])?;
    /// store.append("cart-1", ExpectedVersion::Any, [EventData::new("Opened", "{}")])?;
    /// let mut categories = store.list_categories(None, 10)?;
    /// categories.sort();
    /// assert_eq!(categories, ["cart", "order"]);
    /// assert_eq!(store.list_event_types(None, 10)?.len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn list_categories(&self, after: Option<&str>, max: usize) -> Result<Vec<String>> {
        self.check_open()?;
        self.keys_page(KeyKind::Category, after, max)
    }

    /// Up to `max` event type names after `after`, paged as
    /// [`list_streams`](Self::list_streams) pages stream names.
    pub fn list_event_types(&self, after: Option<&str>, max: usize) -> Result<Vec<String>> {
        self.check_open()?;
        self.keys_page(KeyKind::EventType, after, max)
    }

    fn streams_page(&self, after: Option<&str>, max: usize) -> Result<Vec<String>> {
        self.keys_page(KeyKind::Stream, after, max)
    }

    fn keys_page(&self, kind: KeyKind, after: Option<&str>, max: usize) -> Result<Vec<String>> {
        let index = self.shared.index.read();
        self.shared.check_index()?;
        // Streams named `-x` are in the category ``, which no read can name (a category has at
        // least one byte): left out, in its place the name after the page (so that a page is
        // short only at the end, which callers that ask for one more name rely on).
        let skip_empty = kind == KeyKind::Category;
        let mut page =
            index.names_page(kind, after, max.saturating_add(usize::from(skip_empty)))?;
        if skip_empty {
            page.retain(|n| !n.is_empty());
            page.truncate(max);
        }
        Ok(page.iter().map(|n| n.to_string()).collect())
    }

    /// The position just past the newest event: where the next event will be written, at the
    /// earliest.
    pub fn head(&self) -> Position {
        Position(self.shared.log.visible())
    }

    /// Copies the store into the directory `dest` while it stays open: appends go on and are
    /// not slowed by more than the copy's reads of the page cache.
    ///
    /// The copy holds every event committed before the call, up to
    /// [`Backup::head`](crate::Backup::head), and no part of a later batch; it opens like any
    /// store ([`Store::open`] on `dest`, with strict recovery): restoring is opening it, or
    /// moving it into place first. `dest` is created if
    /// missing; it must be empty or hold an earlier backup of this store, in which case only
    /// what changed is copied (sealed segments never change). A destination holding anything
    /// else is refused with [`Error::NotAStore`] or [`Error::InvalidInput`] and left as it was;
    /// one open as a store is [`Error::Locked`]. A backup cut short (a crash, a full disk)
    /// leaves a destination that still opens, holding at least what the earlier backup held.
    ///
    /// ```
    /// use eventjournal::{EventData, ExpectedVersion, Options, Store};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path().join("live"), Options::default())?;
    /// store.append("order-7", ExpectedVersion::NoStream, [EventData::new("Placed", "{}")])?;
    /// let backup = store.backup(dir.path().join("copy"))?;
    /// store.append("order-7", ExpectedVersion::Exact(0), [EventData::new("Paid", "{}")])?;
    ///
    /// let copy = Store::open(dir.path().join("copy"), Options::default())?;
    /// assert_eq!(copy.head(), backup.head);
    /// assert_eq!(copy.stream_version("order-7")?, Some(0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<crate::Backup> {
        self.check_open()?;
        crate::backup::run(&self.shared, dest.as_ref())
    }

    /// What the stream index holds in memory now, against what it leaves in its files.
    pub fn index_info(&self) -> IndexInfo {
        let index = self.shared.index.read();
        IndexInfo {
            loaded_keys: index.loaded(),
            index_files: index.files().len(),
            key_table_files: index.key_table_files(),
            key_filter_bytes: index.key_filters().1,
        }
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.shared.dir
    }

    /// A catch-up subscription to `$all`: the events after `from`, then live events as they are
    /// committed, optionally only those `filter` matches (with checkpoints while none do).
    ///
    /// ```
    /// # use eventjournal::{AllFrom, EventData, ExpectedVersion, Filter, Options, Store};
    /// # use std::time::Duration;
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path(), Options::default())?;
    /// store.append("account-1", ExpectedVersion::Any, [EventData::new("Opened", "{}")])?;
    /// let mut sub = store
    ///     .subscribe_to_all(AllFrom::Start, Some(Filter::new().category("account")))?
    ///     .with_timeout(Duration::from_millis(100));
    /// store.append("account-2", ExpectedVersion::Any, [EventData::new("Opened", "{}")])?;
    /// let streams: Vec<String> = sub.by_ref().map(|e| e.map(|e| e.stream().to_string()))
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(streams, ["account-1", "account-2"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn subscribe_to_all(&self, from: AllFrom, filter: Option<Filter>) -> Result<Subscription> {
        self.check_open()?;
        if let Some(f) = &filter {
            f.check()?;
        }
        if let AllFrom::After(p) = from {
            // The same check as reads: a position inside a payload must not make up an event.
            self.all_cursor(&self.shared.log.view(), p)?;
        }
        Subscription::to_all(self.shared.clone(), from, filter)
    }

    /// A catch-up subscription to `stream`: its events after `from`, then live ones.
    pub fn subscribe_to_stream(&self, stream: &str, from: StreamFrom) -> Result<Subscription> {
        self.check_open()?;
        check_stream_name(stream)?;
        Subscription::to_stream(self.shared.clone(), stream, from)
    }

    /// Up to `max` events of every stream in `category` (the part of a stream's name before its
    /// first `-`: `account` for `account-42`), in position order, from the `from`-th (counting
    /// the category's events from 0). Served by the category index, maintained with the log: no
    /// scan of `$all`, no extra events written.
    pub fn read_category(&self, category: &str, from: u64, max: usize) -> Result<StreamEvents<'_>> {
        self.check_open()?;
        check_category(category)?;
        let key = Key::Category(category).name();
        StreamEvents::new(&self.shared, &key, from, max, true)
    }

    /// Up to `max` events of type `event_type`, in position order, from the `from`-th (counting
    /// the type's events from 0); served by the event type index.
    pub fn read_event_type(
        &self,
        event_type: &str,
        from: u64,
        max: usize,
    ) -> Result<StreamEvents<'_>> {
        self.check_open()?;
        check_key_text("event type", event_type)?;
        let key = Key::EventType(event_type).name();
        StreamEvents::new(&self.shared, &key, from, max, true)
    }

    /// How many events `category` has. An error as for
    /// [`stream_version`](Self::stream_version).
    pub fn category_len(&self, category: &str) -> Result<u64> {
        self.key_len(&Key::Category(category).name())
    }

    /// How many events of type `event_type` there are. An error as for
    /// [`stream_version`](Self::stream_version).
    pub fn event_type_len(&self, event_type: &str) -> Result<u64> {
        self.key_len(&Key::EventType(event_type).name())
    }

    fn key_len(&self, key: &str) -> Result<u64> {
        Ok(self.shared.stream_len(key)?.1)
    }

    /// A catch-up subscription to a category: its events after the `from`-th as
    /// [`read_category`](Self::read_category) numbers them, then live ones.
    pub fn subscribe_to_category(&self, category: &str, from: StreamFrom) -> Result<Subscription> {
        self.check_open()?;
        check_category(category)?;
        let key = Key::Category(category).name();
        Subscription::to_stream(self.shared.clone(), &key, from)
    }

    /// A catch-up subscription to an event type, numbered as by
    /// [`read_event_type`](Self::read_event_type).
    pub fn subscribe_to_event_type(
        &self,
        event_type: &str,
        from: StreamFrom,
    ) -> Result<Subscription> {
        self.check_open()?;
        check_key_text("event type", event_type)?;
        let key = Key::EventType(event_type).name();
        Subscription::to_stream(self.shared.clone(), &key, from)
    }

    /// Stores `position` as consumer `consumer`'s checkpoint (in the stream
    /// `$checkpoint-<consumer>`), durably as appends are.
    ///
    /// Delivery is at least once: a consumer that handles events, then saves its checkpoint,
    /// handles again after a crash the events between its last saved checkpoint and the crash.
    /// Make handling idempotent: record the position (or event id) of the last event applied in
    /// the same transaction as its effect, and skip events at or before it.
    ///
    /// `position` must be one a subscription to `$all` can resume after: [`Position::START`], an
    /// event's `position()` (or `next_position()`), or a [`SubscriptionItem::Checkpoint`]'s;
    /// anything else is [`Error::InvalidPosition`], and nothing is saved.
    ///
    /// [`SubscriptionItem::Checkpoint`]: crate::SubscriptionItem::Checkpoint
    pub fn save_checkpoint(&self, consumer: &str, position: Position) -> Result<()> {
        self.check_open()?;
        let stream = checkpoint_stream(consumer)?;
        self.all_cursor(&self.shared.log.view(), position)?;
        self.append_unchecked(StreamWrite::new(
            stream,
            ExpectedVersion::Any,
            vec![EventData::new("$checkpoint", position.0.to_le_bytes())],
        ))?;
        Ok(())
    }

    /// A subscription to `$all` for consumer `consumer`: after its saved checkpoint, or from the
    /// start if it has none. Save progress with [`save_checkpoint`](Self::save_checkpoint).
    ///
    /// ```
    /// # use eventjournal::{EventData, ExpectedVersion, Filter, Options, Store, SubscriptionItem};
    /// # use std::time::Duration;
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path(), Options::default())?;
    /// store.append("account-1", ExpectedVersion::Any, [EventData::new("Opened", "{}")])?;
    /// let filter = Filter::new().exclude_system_streams();
    /// let mut sub = store.subscribe_from_checkpoint("projector", Some(filter.clone()))?;
    /// while let Some(item) = sub.recv_timeout(Duration::from_millis(50))? {
    ///     if let SubscriptionItem::Event(e) = item {
    ///         // ... apply `e`, then:
    ///         store.save_checkpoint("projector", e.position())?;
    ///     }
    /// }
    /// // After a restart: nothing handled is delivered again.
    /// let mut again = store.subscribe_from_checkpoint("projector", Some(filter))?;
    /// assert!(again.try_recv()?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn subscribe_from_checkpoint(
        &self,
        consumer: &str,
        filter: Option<Filter>,
    ) -> Result<Subscription> {
        self.check_open()?;
        let from = match self.load_checkpoint(consumer)? {
            Some(p) => AllFrom::After(p),
            None => AllFrom::Start,
        };
        self.subscribe_to_all(from, filter)
    }

    /// Consumer `consumer`'s last saved checkpoint; resume with `AllFrom::After` it.
    pub fn load_checkpoint(&self, consumer: &str) -> Result<Option<Position>> {
        self.check_open()?;
        let stream = checkpoint_stream(consumer)?;
        match self.read_stream_backward(&stream, u64::MAX, 1)?.next() {
            None => Ok(None),
            Some(e) => {
                let e = e?;
                let bytes: [u8; 8] = e.data().try_into().map_err(|_| Error::Corrupt {
                    file: self.shared.dir.clone(),
                    offset: e.position().0,
                    reason: format!("checkpoint of `{consumer}` is not 8 bytes"),
                })?;
                Ok(Some(Position(u64::from_le_bytes(bytes))))
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = shutdown(&self.shared, &self.life, None);
    }
}

impl Shared {
    /// Fails with [`Error::Closed`] once the store is closed, or [`Error::HandedOver`].
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            if self.handed_over.load(Ordering::Acquire) {
                return Err(Error::HandedOver {
                    path: self.dir.clone(),
                });
            }
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Fails with [`Error::Closed`] once this store's index went to the writer a follower became
    /// ([`Store::take_over`]): what it would answer from is gone, and must not read as empty.
    pub(crate) fn check_index(&self) -> Result<()> {
        if self.index_gone.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Whether the store was opened with `Store::open_read_only`: its disk refuses every change.
    pub(crate) fn is_read_only(&self) -> bool {
        self.options.disk.is_read_only()
    }

    /// Fails with [`Error::ReadOnly`] for a store opened read-only.
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.is_read_only() {
            return Err(Error::ReadOnly {
                path: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// The id of the stream or index key `name`, if it has events: from memory, or else from the
    /// index files, in which case it is loaded into memory.
    pub(crate) fn stream_id(&self, name: &str) -> Result<Option<StreamId>> {
        self.resolve(name, false, false)
    }

    /// The id of the index key `name`, loaded as [`stream_id`](Self::stream_id) does, or added
    /// with no events: so that committing an event of a new category or type looks nothing up.
    pub(crate) fn key_id(&self, name: &str) -> Result<Option<StreamId>> {
        self.resolve(name, true, true)
    }

    /// [`stream_id`](Self::stream_id) for an append, which needs the stream's number of events
    /// only: found through the key table when one is in use, the runs left to the first read.
    pub(crate) fn stream_id_to_append(&self, name: &str) -> Result<Option<StreamId>> {
        self.resolve(name, false, true)
    }

    /// The id of key `name`, loaded if it is not held (`counted`: with its number of events
    /// only, through the key table if there is one; else with its runs, which a read needs).
    fn resolve(&self, name: &str, create: bool, counted: bool) -> Result<Option<StreamId>> {
        let files = {
            let index = self.index.read();
            self.check_index()?;
            if let Some(id) = index.lookup(name) {
                return Ok(Some(id));
            }
            if !self.lazy {
                return Ok(None);
            }
            index.files()
        };
        // Looked up without the lock: a key not in memory has no runs but those in the files
        // left unread at open, which never change for keys not in memory; so whoever attaches
        // it first attaches the same runs.
        let hints = self.ids.key_hints();
        let first = if counted {
            files.first_use(name, &hints)?
        } else {
            FirstUse::Runs(files.runs(name, None, &hints)?)
        };
        let runs = match first {
            FirstUse::Events(0) if !create => return Ok(None),
            FirstUse::Events(events) => {
                let mut index = self.index.write();
                self.check_index()?;
                return Ok(Some(index.attach_counted(name, events)));
            }
            FirstUse::Runs(runs) => runs,
        };
        if runs.is_empty() && !create {
            return Ok(None);
        }
        let mut index = self.index.write();
        self.check_index()?;
        Ok(Some(index.attach(name, runs)))
    }

    /// Puts a key table in use for the first use of keys (see [`crate::index::keys`]): the one
    /// in the directory if it was made from the index files in place, else a new one made from
    /// them, when there are at least two (best effort: without one, keys are searched for in
    /// the files). Runs after the store opened; a close stops it between two index files.
    pub(crate) fn keep_key_table(&self) {
        self.make_key_table();
        self.make_key_filters();
    }

    /// Makes a [`KeyFilter`](crate::index::filter::KeyFilter) for each index file left unread at
    /// open that the key table does not cover, and a first use would otherwise search: the file
    /// of the segment active at open, and those sealed since the table was made.
    fn make_key_filters(&self) {
        use crate::index::filter::KeyFilter;
        let stop = || self.closed.load(Ordering::SeqCst);
        let sources = self.index.read().filter_sources();
        for (base, file) in sources {
            match KeyFilter::of(&file, &stop) {
                Some(filter) => self.index.write().add_filter(base, Arc::new(filter)),
                // A damaged directory: that file goes without (its lookups find the damage).
                None if !stop() => continue,
                None => return,
            }
        }
    }

    /// Puts the key table in use (see [`keep_key_table`](Self::keep_key_table)).
    fn make_key_table(&self) {
        use crate::index::keys;
        let active = self.log.segments().last().map_or(0, |s| s.base);
        let sources = self.index.read().key_table_sources(active);
        if sources.len() < 2 {
            return;
        }
        let disk = &self.options.disk;
        if let Some(t) = keys::open(&self.dir, disk) {
            let mut index = self.index.write();
            // Kept until a new one is made, if the files sealed since it are many.
            if index.set_key_table(Arc::new(t)) && index.past_key_table(active) < REMAKE_PAST {
                return;
            }
        }
        let stop = || self.closed.load(Ordering::SeqCst);
        let refs: Vec<_> = sources.iter().map(|(b, f, st)| (*b, &**f, *st)).collect();
        let sync = self.options.durability != Durability::None;
        if !matches!(keys::save(&self.dir, &refs, &stop, sync, disk), Ok(true)) || stop() {
            return;
        }
        if let Some(t) = keys::open(&self.dir, disk) {
            self.index.write().set_key_table(Arc::new(t));
        }
    }

    /// The id and number of events of the stream or key `name` (0 if it has none).
    pub(crate) fn stream_len(&self, name: &str) -> Result<(Option<StreamId>, u64)> {
        {
            // The usual case, a key held, under one lock.
            let index = self.index.read();
            self.check_index()?;
            if let Some(id) = index.lookup(name) {
                return Ok((Some(id), index.len(id)));
            }
        }
        let id = self.stream_id(name)?;
        let index = self.index.read();
        self.check_index()?;
        Ok((id, id.map_or(0, |id| index.len(id))))
    }

    /// Saves the index file of `seg` (best effort: an index file is a cache; a missing one is
    /// rebuilt from the log on open). Returns, for the id table, each key with events in the
    /// segment (its name hash) and the position of its last event there; `None` if the runs
    /// could not be gathered.
    pub(crate) fn save_segment_index(
        &self,
        seg: &Segment,
        sealed: bool,
    ) -> Option<Vec<(u64, u64)>> {
        let sync = self.options.durability != Durability::None;
        // Encoded under the read lock, written without it: readers and appends to the next
        // segment go on while the file is written and synced.
        let bytes = {
            let index = self.index.read();
            let files = index.files();
            if !sealed
                && files
                    .file(seg.base)
                    .is_some_and(|f| f.covered_end == seg.data_end())
            {
                // Nothing was appended since the store opened with this file.
                return None;
            }
            index.segment_runs(seg.base).map(|runs| {
                let keys: Vec<(u64, u64)> = runs
                    .iter()
                    .filter_map(|r| {
                        let last = r.offsets.last()?;
                        Some((r.hash(), seg.base + u64::from(*last)))
                    })
                    .collect();
                (persist::encode(seg.base, seg.data_end(), &runs), keys)
            })
        };
        let (bytes, keys) = match bytes {
            Ok((bytes, keys)) => (Some(bytes), Some(keys)),
            Err(_) => (None, None),
        };
        let saved = bytes.is_some_and(|bytes| {
            persist::save(&self.dir, seg.base, &bytes, sync, &self.options.disk).is_ok()
        });
        if sealed {
            let mut index = self.index.write();
            match saved
                .then(|| persist::open_file(&self.dir, seg.base, seg.extent(), &self.options.disk))
                .flatten()
            {
                Some(file) => index.map_segment(seg.base, file),
                None => index.forget_segment(seg.base),
            }
        }
        keys
    }

    fn flush_loop(&self, every: std::time::Duration) {
        let mut stop = self.stop.lock();
        while !*stop {
            self.stop_cv.wait_for(&mut stop, every);
            if *stop {
                break;
            }
            let mut w = self.writer.lock();
            // A failure poisons the writer; the next append reports it.
            if w.log.is_unsynced() && w.log.sync().is_ok() {
                w.mark_synced();
                self.counters.sync();
            }
        }
    }
}

fn check_key_text(what: &str, text: &str) -> Result<()> {
    if text.is_empty() || text.len() > crate::append::MAX_STREAM_NAME_LEN {
        return Err(Error::InvalidInput(format!(
            "a {what} must be 1 to {} bytes",
            crate::append::MAX_STREAM_NAME_LEN
        )));
    }
    Ok(())
}

/// Checks a category name: it is a stream name's part before the first `-`, so it has none.
fn check_category(category: &str) -> Result<()> {
    check_key_text("category", category)?;
    if category.contains('-') {
        return Err(Error::InvalidInput(format!(
            "`{category}` cannot be a category: a category is the part of a stream name before \
             its first `-` (`{}` for `{category}`)",
            crate::types::category_of(category)
        )));
    }
    Ok(())
}

fn check_options(o: &Options) -> Result<()> {
    if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&o.segment_size) {
        return Err(Error::InvalidInput(format!(
            "segment size {} is outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}",
            o.segment_size
        )));
    }
    if o.durability == Durability::Buffered(std::time::Duration::ZERO) {
        return Err(Error::InvalidInput(
            "a buffered sync interval must be longer than zero (use Durability::Sync)".into(),
        ));
    }
    if o.follow == Some(std::time::Duration::ZERO) {
        return Err(Error::InvalidInput(
            "a follow interval must be longer than zero (or None: no following)".into(),
        ));
    }
    if o.max_event_size == 0 || o.max_event_size > MAX_EVENT_SIZE_LIMIT {
        return Err(Error::InvalidInput(format!(
            "max event size {} is outside 1..={MAX_EVENT_SIZE_LIMIT}",
            o.max_event_size
        )));
    }
    Ok(())
}

/// The entries of a sealed segment's id table, read from the log: each record's id hash and
/// position, and each index key's name hash with the position of its last event.
pub(crate) fn table_entries(seg: &Segment) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut last: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut note = |stream: &str, event_type: &str, pos: u64| {
        for key in [
            Key::Stream(stream).name(),
            Key::Category(crate::types::category_of(stream)).name(),
            Key::EventType(event_type).name(),
        ] {
            match last.get_mut(&*key) {
                Some(p) => *p = (*p).max(pos),
                None => {
                    last.insert(key.into_owned(), pos);
                }
            }
        }
    };
    crate::log::reader::visit_records(seg, seg.data_end(), |v, bytes, pos| {
        out.push((crate::ids::id_hash(&v.id), pos));
        let text = |(a, b): (usize, usize)| std::str::from_utf8(&bytes[a..b]).unwrap_or("");
        note(text(v.stream), text(v.event_type), pos);
    })?;
    // The index files still number the records compaction removed, so the stream index looks
    // for their keys in this segment too: the tables must lead it there. Their ids are left
    // out, as the events are.
    if let Some(t) = &seg.compacted {
        for r in &t.removed {
            note(
                t.name(r.stream),
                t.name(r.event_type),
                seg.base + u64::from(r.offset),
            );
        }
    }
    out.extend(last.iter().map(|(k, &p)| (persist::name_hash(k), p)));
    Ok(out)
}
