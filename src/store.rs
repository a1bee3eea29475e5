//! The store: opening and closing, and the public API over the log and the index.

use std::fs::{self, File, TryLockError};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::append::{check_not_reserved, check_stream_name, Queue, WriterState};
use crate::disk::Disk;
use crate::error::{Error, IoContext, Result};
use crate::ids::IdTables;
use crate::index::persist::{self, IndexFile};
use crate::index::{Index, Key, KeyCache, StreamId};
use crate::log::format::{
    decode_record, u32_at, HeaderError, RecordView, SegmentHeader, FORMAT_VERSION,
    SEGMENT_HEADER_LEN,
};
use crate::log::reader::{Cursor, LogView};
use crate::log::recovery::{self, OnBad};
use crate::log::segment::Segment;
use crate::log::writer::LogWriter;
use crate::log::Log;
use crate::options::{Durability, Options, Recovery, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};
use crate::read::{self, AllEvents, StreamEvents};
use crate::subscription::{checkpoint_stream, AllFrom, Commits, Filter, StreamFrom, Subscription};
use crate::types::{
    AppendResult, EventData, EventRef, ExpectedVersion, Position, RecordedEvent, StreamWrite,
};

/// Name of the file that marks a directory as a store and holds its format version.
pub const META_FILE: &str = "eventjournal.meta";
/// Name of the lock file; an exclusive `flock` on it is held while the store is open.
pub const LOCK_FILE: &str = "LOCK";
/// First eight bytes of the meta file.
const META_MAGIC: [u8; 8] = *b"EVJLSTOR";
/// Largest event size an option may set: an event must fit in a segment.
const MAX_EVENT_SIZE_LIMIT: u64 = 1 << 30;

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
    /// Wakes subscriptions on commits.
    pub(crate) commits: Commits,
    /// The event-id tables of sealed segments.
    pub(crate) ids: Arc<IdTables>,
    /// Whether the index has a lazy part (set at open, never changes): keys it does not hold
    /// may be in index files.
    pub(crate) lazy: bool,
    /// Set by `close` (under the queue lock): every later call fails with `Error::Closed`.
    pub(crate) closed: AtomicBool,
    /// Wakes `close` when the queue drains; used with the queue lock.
    pub(crate) drained: Condvar,
    stop: Mutex<bool>,
    stop_cv: Condvar,
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
    shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    /// The thread that writes and merges id tables.
    ids_worker: Mutex<Option<JoinHandle<()>>>,
    /// The directory lock, until the store is closed. Held by `close` for all of its work, so
    /// that a second `close` returns only when the first is done.
    lock: Mutex<Option<File>>,
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
        check_options(&options)?;
        let dir = dir.as_ref().to_path_buf();
        prepare_dir(&dir, &options.disk)?;
        let lock = lock_dir(&dir, &options.disk)?;
        let (segments, index) = recover(&dir, &options)?;
        let lazy = !index.files().is_empty();
        let Some(active) = segments.last().cloned() else {
            return Err(Error::InvalidInput(
                "internal: no segment after recovery".into(),
            ));
        };
        let visible = active.base + active.data_end();
        let sealed = &segments[..segments.len() - 1];
        let ids = Arc::new(open_id_tables(&dir, &options, sealed)?);
        let mut index = index;
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
            commits: Commits::default(),
            ids,
            lazy,
            closed: AtomicBool::new(false),
            drained: Condvar::new(),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
            options,
        });
        let flusher = match shared.options.durability {
            Durability::Buffered(every) => {
                let s = shared.clone();
                Some(
                    std::thread::Builder::new()
                        .name("eventjournal-flush".into())
                        .spawn(move || s.flush_loop(every))
                        .at("starting the background flusher of", &shared.dir)?,
                )
            }
            _ => None,
        };
        let ids_worker = if shared.ids.is_inline() {
            let _ = shared.ids.maintain(table_entries);
            None
        } else {
            let ids = shared.ids.clone();
            Some(
                std::thread::Builder::new()
                    .name("eventjournal-ids".into())
                    .spawn(move || ids.run(table_entries))
                    .at("starting the id index worker of", &shared.dir)?,
            )
        };
        Ok(Store {
            shared,
            flusher: Mutex::new(flusher),
            ids_worker: Mutex::new(ids_worker),
            lock: Mutex::new(Some(lock)),
            #[cfg(feature = "async")]
            committer: Mutex::new(None),
            #[cfg(feature = "async")]
            committer_started: AtomicBool::new(false),
        })
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
        self.shutdown()
    }

    fn shutdown(&self) -> Result<()> {
        let mut held = self.lock.lock();
        let Some(lock) = held.take() else {
            return Ok(());
        };
        {
            // From here on nothing is queued; what is queued already is committed by its
            // appenders (or the committer thread, for async ones) as usual.
            let mut q = self.shared.queue.lock();
            q.closed = true;
            self.shared.closed.store(true, Ordering::SeqCst);
            while !q.is_drained() {
                self.shared.drained.wait(&mut q);
            }
            #[cfg(feature = "async")]
            {
                q.stop_committer = true;
                if let Some(c) = &q.committer {
                    c.unpark();
                }
            }
        }
        #[cfg(feature = "async")]
        if let Some(t) = self.committer.lock().take() {
            let _ = t.join();
        }
        *self.shared.stop.lock() = true;
        self.shared.stop_cv.notify_all();
        if let Some(t) = self.flusher.lock().take() {
            let _ = t.join();
        }
        // No file of the store may change once the lock is released.
        self.shared.ids.stop();
        if let Some(t) = self.ids_worker.lock().take() {
            let _ = t.join();
        }
        let _ = self.shared.ids.write_pending();
        let result = {
            let mut w = self.shared.writer.lock();
            w.log.sync_all().map(|()| {
                let active = w.log.active().clone();
                let _ = self.shared.save_segment_index(&active, false);
                // The next open checks that the segment is zero past its data end, reading what
                // the file system does not report as a hole: made one (best effort; the bytes
                // there are zeros already, so a crash anywhere in this leaves the same log).
                let from = active.data_end().next_multiple_of(4096);
                if from < active.usable() {
                    let _ = self.shared.options.disk.punch(
                        &active.file,
                        &active.path,
                        from,
                        active.usable() - from,
                    );
                }
            })
        };
        drop(lock);
        self.shared.commits.close();
        result
    }

    /// Fails with [`Error::Closed`] once the store is closed.
    fn check_open(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
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
        // Whoever wrote a group held the writer while writing it, so every append that has
        // returned has its bytes in the log by the time the writer is free.
        let mut w = self.shared.writer.lock();
        w.log.flush()?;
        w.mark_synced();
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
        self.start_committer()?;
        self.shared.submit_async(writes)?.await
    }

    /// Starts the committer thread if it is not running.
    #[cfg(feature = "async")]
    fn start_committer(&self) -> Result<()> {
        if self.committer_started.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut slot = self.committer.lock();
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
        self.committer_started.store(true, Ordering::Release);
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
            Some(r) => r,
            None => Err(Error::EventNotFound {
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
        read::replay_stream(&self.shared, stream, from, f)
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
        read::replay_all(&view, cursor, f)
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
        Ok(AllEvents::new(view, cursor, max, true))
    }

    /// Up to `max` events of `$all` in reverse commit order, from the event just before `from`
    /// (use [`Position::END`] for the newest). Valid `from` values are as for
    /// [`read_all_forward`](Self::read_all_forward); reading backward from an event's
    /// `next_position()` starts with that event.
    pub fn read_all_backward(&self, from: Position, max: usize) -> Result<AllEvents> {
        self.check_open()?;
        let view = self.shared.log.view();
        let cursor = self.all_cursor(&view, from)?;
        Ok(AllEvents::new(view, cursor, max, false))
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
        if let Ok(e) = view.event_at(from.0) {
            let placed = match self.shared.stream_id(e.stream())? {
                Some(id) => self.shared.index.read().position(id, e.event_number())?,
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

    fn streams_page(&self, after: Option<&str>, max: usize) -> Result<Vec<String>> {
        let page = self.shared.index.read().names_page(after, max)?;
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
    /// The copy holds every event committed before the call, up to [`Backup::head`], and no
    /// part of a later batch; it opens like any store ([`Store::open`] on `dest`, with strict
    /// recovery): restoring is opening it, or moving it into place first. `dest` is created if
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
        let _ = self.shutdown();
    }
}

impl Shared {
    /// The id of the stream or index key `name`, if it has events: from memory, or else from the
    /// index files, in which case it is loaded into memory.
    pub(crate) fn stream_id(&self, name: &str) -> Result<Option<StreamId>> {
        self.resolve(name, false)
    }

    /// The id of the index key `name`, loaded as [`stream_id`](Self::stream_id) does, or added
    /// with no events: so that committing an event of a new category or type looks nothing up.
    pub(crate) fn key_id(&self, name: &str) -> Result<Option<StreamId>> {
        self.resolve(name, true)
    }

    fn resolve(&self, name: &str, create: bool) -> Result<Option<StreamId>> {
        let files = {
            let index = self.index.read();
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
        let runs = files.runs(name, None, &self.ids.key_hints())?;
        if runs.is_empty() && !create {
            return Ok(None);
        }
        Ok(Some(self.index.write().attach(name, runs)))
    }

    /// The id and number of events of the stream or key `name` (0 if it has none).
    pub(crate) fn stream_len(&self, name: &str) -> Result<(Option<StreamId>, u64)> {
        {
            // The usual case, a key held, under one lock.
            let index = self.index.read();
            if let Some(id) = index.lookup(name) {
                return Ok((Some(id), index.len(id)));
            }
        }
        let id = self.stream_id(name)?;
        Ok((id, id.map_or(0, |id| self.index.read().len(id))))
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
                        Some((persist::name_hash(&r.stream), seg.base + u64::from(*last)))
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
                .then(|| persist::open_file(&self.dir, seg.base, seg.usable(), &self.options.disk))
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
            crate::subscription::category_of(category)
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
    if o.max_event_size == 0 || o.max_event_size > MAX_EVENT_SIZE_LIMIT {
        return Err(Error::InvalidInput(format!(
            "max event size {} is outside 1..={MAX_EVENT_SIZE_LIMIT}",
            o.max_event_size
        )));
    }
    Ok(())
}

/// Opens the event-id tables of the sealed segments, each checked against the log on a sample
/// of its entries: a table that disagrees is dropped, and its segments' ids read from the log
/// again by the worker.
fn open_id_tables(dir: &Path, options: &Options, sealed: &[Arc<Segment>]) -> Result<IdTables> {
    let sync = options.durability != Durability::None;
    let disk = &options.disk;
    let tables = IdTables::open(dir, disk, sync, disk.is_watched(), sealed)?;
    let view = LogView::new(Arc::new(sealed.to_vec()), u64::MAX, true);
    for t in tables.snapshot().tables.iter() {
        let agrees = t.sample(16).iter().all(|&(hash, pos)| {
            view.event_at(pos).is_ok_and(|e| {
                let stream = e.stream();
                crate::ids::id_hash(&e.id()) == hash
                    || [
                        Key::Stream(stream).name(),
                        Key::Category(crate::subscription::category_of(stream)).name(),
                        Key::EventType(e.event_type()).name(),
                    ]
                    .iter()
                    .any(|k| persist::name_hash(k) == hash)
            })
        });
        if !agrees {
            tables.drop_broken(t);
        }
    }
    Ok(tables)
}

/// The entries of a sealed segment's id table, read from the log: each record's id hash and
/// position, and each index key's name hash with the position of its last event.
pub(crate) fn table_entries(seg: &Segment) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut last: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    crate::log::reader::visit_records(seg, seg.data_end(), |v, bytes, pos| {
        out.push((crate::ids::id_hash(&v.id), pos));
        let text = |(a, b): (usize, usize)| std::str::from_utf8(&bytes[a..b]).unwrap_or("");
        let (stream, event_type) = (text(v.stream), text(v.event_type));
        for key in [
            Key::Stream(stream).name(),
            Key::Category(crate::subscription::category_of(stream)).name(),
            Key::EventType(event_type).name(),
        ] {
            match last.get_mut(&*key) {
                Some(p) => *p = pos,
                None => {
                    last.insert(key.into_owned(), pos);
                }
            }
        }
    })?;
    out.extend(last.iter().map(|(k, &p)| (persist::name_hash(k), p)));
    Ok(out)
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
        Ok(bytes) => {
            if bytes.len() != 16 || bytes[..8] != META_MAGIC {
                return Err(not_a_store("unrecognised eventjournal.meta"));
            }
            if crc32fast::hash(&bytes[..12]) != u32_at(&bytes, 12) {
                return Err(Error::Corrupt {
                    file: meta,
                    offset: 0,
                    reason: "meta file checksum mismatch".into(),
                });
            }
            let version = u32_at(&bytes, 8);
            if version > FORMAT_VERSION || version == 0 {
                return Err(Error::UnsupportedVersion {
                    file: meta,
                    found: version,
                    supported: FORMAT_VERSION,
                });
            }
            Ok(())
        }
        Err(e) if e.is_not_found() => {
            if let Some(name) = foreign_file(dir)? {
                return Err(not_a_store(&format!(
                    "it holds `{name}` but no {META_FILE}; a new store needs an empty directory"
                )));
            }
            let mut bytes = Vec::with_capacity(16);
            bytes.extend_from_slice(&META_MAGIC);
            bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            let crc = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&crc.to_le_bytes());
            let tmp = dir.join(format!("{META_FILE}.tmp"));
            let f = disk.create(&tmp)?;
            disk.write_all_at(&f, &tmp, &bytes, 0)?;
            disk.sync_all(&f, &tmp)?;
            drop(f);
            disk.rename(&tmp, &meta)?;
            disk.sync_dir(dir)?;
            Ok(())
        }
        Err(e) => Err(e),
    }
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
fn recover(dir: &Path, options: &Options) -> Result<(Vec<Arc<Segment>>, Index)> {
    let salvage = options.recovery == Recovery::Salvage;
    match recover_pass(dir, options, !salvage) {
        Ok(r) => Ok(r),
        Err(Pass::Failed(e)) => Err(e),
        Err(Pass::Rebuild) => match recover_pass(dir, options, false) {
            Ok(r) => Ok(r),
            Err(Pass::Failed(e)) => Err(e),
            Err(Pass::Rebuild) => Err(Error::InvalidInput(
                "internal: index rebuild without index files".into(),
            )),
        },
    }
}

fn recover_pass(
    dir: &Path,
    options: &Options,
    use_index_files: bool,
) -> Result<(Vec<Arc<Segment>>, Index), Pass> {
    let salvage = options.recovery == Recovery::Salvage;
    let sync = options.durability != Durability::None;
    let disk = &options.disk;
    let mut listed = recovery::list_segments(dir, disk)?;
    // A newest segment whose header never reached the disk held no acknowledged batch.
    if let Some((base, path)) = listed.last() {
        if blank_segment(path, disk)? {
            disk.remove(path)?;
            let _ = disk.remove(&dir.join(persist::index_file_name(*base)));
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
        let expected_base = segments.last().map_or(0, |s| s.end_base());
        let opened = Segment::open(path, base, true, disk).and_then(|seg| {
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
        let mut from = SEGMENT_HEADER_LEN as u64;
        let mut had_index_file = false;
        // A sealed segment whose index file covers every record needs no scan: probing its end
        // through the map would map a page (or a 2 MiB folio) of the log into memory.
        let mut covered = false;
        let mut eager = use_index_files;
        if use_index_files {
            // The streams of a segment whose index file covers it (the newest: up to the file's
            // `covered_end`) are left in the file, to be looked up when first used.
            if let Some(file) = persist::open_file(dir, base, seg.usable(), disk) {
                if !ends_a_batch(&seg, file.covered_end) || !sample_matches(&seg, &file) {
                    return Err(Pass::Rebuild);
                }
                let end = file.covered_end;
                let more = end + 4 <= seg.usable() && read_u32(&seg, end).is_none_or(|l| l != 0);
                if is_last || !more {
                    file.release_pages();
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
            if let Some((file, entries)) = persist::open(dir, base, seg.usable(), disk) {
                if !ends_a_batch(&seg, file.covered_end) || !sample_matches(&seg, &file) {
                    return Err(Pass::Rebuild);
                }
                from = file.covered_end;
                // The runs are loaded (the scan below may extend them; the keys' lengths must
                // count them); a sealed segment whose file covers all of it then hands them
                // back to the file.
                let more = from + 4 <= seg.usable() && read_u32(&seg, from).is_none_or(|l| l != 0);
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
        } else if is_last {
            OnBad::TornTailAllowed
        } else {
            OnBad::Strict
        };
        let mut scanned = 0u64;
        let discontinuous = std::cell::Cell::new(false);
        let bytes = seg.all_bytes();
        let scanned_end = if covered {
            Ok(recovery::ScanEnd {
                end: from,
                stopped_at: from,
                cut: None,
            })
        } else {
            recovery::scan(&seg, from, on_bad, |rec, off| {
                scanned += 1;
                let name = std::str::from_utf8(&bytes[rec.stream.0..rec.stream.1]).unwrap_or("");
                let event_type =
                    std::str::from_utf8(&bytes[rec.event_type.0..rec.event_type.1]).unwrap_or("");
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
                index
                    .push(id, rec.event_number, base + off, base)
                    .map_err(|d| {
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
            })
        };
        let end = match scanned_end {
            // The log disagrees with what index files said: trust the log alone.
            Err(_) if discontinuous.get() && used_index_files => return Err(Pass::Rebuild),
            r => r?,
        };
        let cut_here = end.cut.is_some() || end.stopped_at > end.end;
        if cut_here {
            // An index file must never describe bytes that were cut: later appends could put
            // other records at the offsets it names.
            let _ = disk.remove(&dir.join(persist::index_file_name(base)));
        }
        if cut_here || is_last {
            // Erase everything after the last whole batch of the newest segment, not just a
            // detected torn record: a crash may have written later pages of an unfinished batch
            // after a page that stayed zero, and the next append must not join them to the log.
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
                .and_then(|_| persist::open(dir, base, seg.usable(), disk))
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
        i += 1;
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
    Ok((segments, index))
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

/// Whether `off` is the start of a segment or the end of a whole batch in it.
fn ends_a_batch(seg: &Segment, off: u64) -> bool {
    if off == SEGMENT_HEADER_LEN as u64 {
        return true;
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
            read_record(seg, u64::from(file.offset(e.offsets_at, k)), false).is_some_and(
                |(buf, r)| {
                    let text = |(a, b): (usize, usize)| std::str::from_utf8(&buf[a..b]).ok();
                    match (text(r.stream), text(r.event_type)) {
                        (Some(stream), Some(event_type)) => {
                            key.holds(stream, event_type, r.event_number, e.first_event + k as u64)
                        }
                        _ => false,
                    }
                },
            )
        };
        at(0) && at(e.count as usize - 1)
    })
}

/// Whether a segment file is a blank left by an interrupted creation: no header, and no first
/// record either (records are written in order from the end of the header, so a segment whose
/// first record is missing holds none).
fn blank_segment(path: &Path, disk: &Disk) -> Result<bool> {
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
