//! Handing the writer role from one process to another, for rolling upgrades.
//!
//! Every writer listens on a Unix socket in the store directory ([`SOCKET_FILE`]). A follower
//! (a store opened read-only, caught up with the log) that wants the role connects and sends
//! one line, `HANDOVER <deadline>` (milliseconds since the Unix epoch). The writer, unless the
//! deadline has passed, closes as `Store::close` does — new appends fail with
//! `Error::HandedOver`, the groups in flight are committed, the log is synced, its threads are
//! stopped — and releases the directory lock; then it answers `RELEASED <end>`, the end of its
//! log, or `UNCLEAN <why>` when its log could not be synced (a poisoned writer).
//!
//! The follower then takes the lock, reads the log up to `end` and becomes the writer from what
//! it holds in memory: no recovery, no index to load. It never writes before it holds the
//! lock, which the old writer gives up only once it has stopped writing for good, and it
//! continues the log only at the exact end the old writer named; so a stalled old writer cannot
//! write after the handover, and a follower that is behind cannot cut anything. Any other
//! outcome (no answer in time, no listener, an unclean end) leaves the follower unchanged
//! unless it can take the lock, in which case the old writer is gone and it opens the store as
//! `Store::open` does, recovery and all.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::log::segment::Segment;
use crate::startup::lock_dir;
use crate::store::{shutdown, Life, Shared, Store};

/// The writer's socket in the store directory. Not a file of the store: removed by the writer
/// that made it when it closes, and replaced by the next one (a crash leaves it behind).
pub(crate) const SOCKET_FILE: &str = "handover.sock";

/// Longest request or answer line, in bytes.
const MAX_LINE: u64 = 512;

/// How long the writer waits for a connected follower's request line.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(100);

/// How much longer than its timeout a follower waits for the lock once it has asked.
const RELEASE_GRACE: Duration = Duration::from_secs(1);

/// How long a follower waits for the rest of the writer's close once the writer has decided
/// to hand over.
const DECIDED_TIMEOUT: Duration = Duration::from_secs(60);

/// A writer's listening thread.
pub(crate) struct Listener {
    socket: Arc<UnixListener>,
    stopping: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    path: PathBuf,
}

impl Listener {
    /// Stops the thread (and waits for it, unless this is it) and removes the socket file.
    pub(crate) fn stop(self) {
        let thread = self.stop_without_waiting();
        if thread.thread().id() != std::thread::current().id() {
            let _ = thread.join();
        }
    }

    /// Stops the thread, which ends on its own once the request it may be serving is answered,
    /// and removes the socket file.
    pub(crate) fn stop_without_waiting(self) -> JoinHandle<()> {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = std::fs::remove_file(&self.path);
        // SAFETY: a plain system call on the listening socket's descriptor, kept open by
        // `self.socket`; it wakes the thread's `accept` (which then fails).
        unsafe { libc::shutdown(self.socket.as_raw_fd(), libc::SHUT_RDWR) };
        self.thread
    }
}

/// Starts listening for handover requests to the writer `shared`; `None` if the socket cannot
/// be made (the writer then works as before, and is taken over only once it has closed).
pub(crate) fn listen(shared: &Arc<Shared>, life: &Arc<Life>) -> Option<Listener> {
    let path = shared.dir.join(SOCKET_FILE);
    // This writer holds the lock: a socket file left here is a crashed writer's. (Not a file
    // of the store: removed outside the store's disk seam, whose faults are about the log.)
    let _ = std::fs::remove_file(&path);
    let socket = Arc::new(at_socket(&shared.dir, |p| UnixListener::bind(p)).ok()?);
    let stopping = Arc::new(AtomicBool::new(false));
    let thread = {
        let (socket, stopping) = (socket.clone(), stopping.clone());
        let (shared, life) = (Arc::downgrade(shared), Arc::downgrade(life));
        let spawned = std::thread::Builder::new()
            .name("eventjournal-handover".into())
            .spawn(move || {
                while !stopping.load(Ordering::SeqCst) {
                    let Ok((conn, _)) = socket.accept() else {
                        if stopping.load(Ordering::SeqCst) {
                            return;
                        }
                        // Out of descriptors for a moment, say.
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let (Some(shared), Some(life)) = (shared.upgrade(), life.upgrade()) else {
                        return;
                    };
                    if serve(&shared, &life, conn) {
                        return;
                    }
                }
            })
            .ok();
        match spawned {
            Some(thread) => thread,
            None => {
                let _ = std::fs::remove_file(&path);
                return None;
            }
        }
    };
    Some(Listener {
        socket,
        stopping,
        thread,
        path,
    })
}

/// Answers one connection; returns whether the store was handed over.
fn serve(shared: &Arc<Shared>, life: &Arc<Life>, conn: UnixStream) -> bool {
    let _ = conn.set_read_timeout(Some(REQUEST_TIMEOUT));
    let mut line = String::new();
    let read = BufReader::new(std::io::Read::take(&conn, MAX_LINE))
        .read_line(&mut line)
        .is_ok();
    let mut conn = conn;
    let deadline = line
        .strip_prefix("HANDOVER ")
        .and_then(|d| d.trim_end().parse::<u64>().ok());
    let answer = match deadline {
        _ if !read => return false,
        None => "REFUSED a request is `HANDOVER <deadline>`\n".to_string(),
        Some(deadline) if now_millis() > deadline => {
            // The follower has given up: closing now would leave the store without a writer.
            "REFUSED the deadline has passed\n".to_string()
        }
        Some(deadline) => {
            let decided = || {
                let _ = (&conn).write_all(b"DECIDED\n");
            };
            match shutdown(shared, life, Some((deadline, &decided))) {
                Ok(()) if shared.handed_over.load(Ordering::SeqCst) => {
                    format!("RELEASED {}\n", shared.log.visible())
                }
                // Closed by its own process meanwhile: nothing was handed over.
                Ok(()) => "REFUSED the store closed\n".to_string(),
                Err(Error::TakeOverFailed { reason, .. }) => {
                    // Still the writer: listening again (this thread ends, its socket is
                    // gone), unless a close has taken the lock since.
                    let held = life.lock.lock();
                    if held.as_ref().is_some_and(|l| l.is_some()) {
                        *life.listener.lock() = listen(shared, life);
                    }
                    format!("REFUSED {reason}\n")
                }
                Err(e) => format!("UNCLEAN {}\n", e.to_string().replace('\n', " ")),
            }
        }
    };
    let _ = conn.write_all(answer.as_bytes());
    answer.starts_with("RELEASED") || answer.starts_with("UNCLEAN")
}

pub(crate) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `f` (a bind or a connect) on the socket of the store in `dir`. A socket's path may be at
/// most 107 bytes: a longer one is reached through this process's descriptor of the directory
/// (`/proc/self/fd/<n>/handover.sock`), which the kernel resolves to the same file.
fn at_socket<T>(dir: &Path, f: impl Fn(&Path) -> std::io::Result<T>) -> std::io::Result<T> {
    let path = dir.join(SOCKET_FILE);
    if path.as_os_str().len() < 100 {
        return f(&path);
    }
    let handle = std::fs::File::open(dir)?;
    f(&PathBuf::from(format!(
        "/proc/self/fd/{}/{SOCKET_FILE}",
        handle.as_raw_fd()
    )))
}

/// What the writer answered.
enum Answer {
    Released(u64),
    Unclean(String),
    Refused(String),
}

/// Why no answer came.
enum NoAnswer {
    /// No writer listens: it was not asked.
    NotAsked(String),
    /// It was asked, and may be releasing the store still.
    Asked(String),
}

/// Asks the writer of `dir` for its role.
fn ask(dir: &Path, timeout: Duration) -> std::result::Result<Answer, NoAnswer> {
    let mut conn = at_socket(dir, |p| UnixStream::connect(p))
        .map_err(|e| NoAnswer::NotAsked(format!("no writer answers on {SOCKET_FILE}: {e}")))?;
    let asked = |e: String| NoAnswer::Asked(e);
    conn.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(|e| asked(e.to_string()))?;
    let deadline = now_millis().saturating_add(timeout.as_millis().min(u64::MAX.into()) as u64);
    conn.write_all(format!("HANDOVER {deadline}\n").as_bytes())
        .map_err(|e| asked(format!("asking the writer: {e}")))?;
    let mut reader = BufReader::new(std::io::Read::take(&conn, 2 * MAX_LINE));
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| asked(format!("no answer from the writer in {timeout:?}: {e}")))?;
    if line.trim_end() == "DECIDED" {
        // It goes ahead: the rest of its close is waited for, deadline or not (a writer that
        // dies meanwhile ends the connection, and its lock).
        let _ = conn.set_read_timeout(Some(DECIDED_TIMEOUT));
        line.clear();
        reader
            .read_line(&mut line)
            .map_err(|e| asked(format!("the writer decided, then: {e}")))?;
    }
    let line = line.trim_end();
    if let Some(end) = line.strip_prefix("RELEASED ") {
        return end
            .parse()
            .map(Answer::Released)
            .map_err(|_| asked(format!("the writer answered {line:?}")));
    }
    if let Some(why) = line.strip_prefix("UNCLEAN ") {
        return Ok(Answer::Unclean(why.to_string()));
    }
    if let Some(why) = line.strip_prefix("REFUSED ") {
        return Ok(Answer::Refused(why.to_string()));
    }
    Err(asked(format!("the writer answered {line:?}")))
}

/// `lock_dir`, tried again while another process holds the lock, until `deadline`: a process
/// the old writer started holds a copy of its lock until it calls `exec`.
fn lock_until(dir: &Path, disk: &Disk, deadline: Instant) -> Result<std::fs::File> {
    loop {
        match lock_dir(dir, disk) {
            Err(Error::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(200));
            }
            r => return r,
        }
    }
}

impl Store {
    /// Takes the writer role from the process that writes the store, for a rolling upgrade:
    /// called on a store opened with [`open_read_only`](Self::open_read_only), it returns the
    /// store's writer, and this handle is closed.
    ///
    /// The writer is asked over a socket in the store directory; it stops taking appends
    /// (they fail with [`Error::HandedOver`]: retry them here), commits and syncs those in
    /// flight, and gives up the directory lock. This store then takes the lock, reads the log
    /// to the writer's end and continues it from what it holds in memory, with no recovery and
    /// no index to load: the time during which neither process can append is a few
    /// milliseconds (see the README's figures). Every append the old writer acknowledged is in
    /// the log; none is acknowledged by both.
    ///
    /// If no writer answers within `timeout` and the lock is free (the writer is gone, or
    /// crashed), the store is opened as [`Store::open`] opens it. Fails with
    /// [`Error::TakeOverFailed`] if the writer refused, did not answer and still holds the
    /// lock (a stalled process), or is not listening; this handle is then unchanged.
    ///
    /// ```
    /// use eventjournal::{Error, EventData, ExpectedVersion, Options, Store};
    /// use std::time::Duration;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let old = Store::open(dir.path(), Options::default())?; // another process, in real life
    /// old.append("order-7", ExpectedVersion::NoStream, [EventData::new("Placed", "{}")])?;
    ///
    /// let follower = Store::open_read_only(dir.path(), Options::default())?;
    /// let new = follower.take_over(Duration::from_secs(1))?;
    /// let late = old.append("order-7", ExpectedVersion::Exact(0), [EventData::new("Paid", "{}")]);
    /// assert!(matches!(late, Err(Error::HandedOver { .. })));
    /// new.append("order-7", ExpectedVersion::Exact(0), [EventData::new("Paid", "{}")])?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn take_over(&self, timeout: Duration) -> Result<Store> {
        let shared = &self.shared;
        shared.check_open()?;
        let dir = shared.dir.clone();
        if !shared.is_read_only() {
            return Err(Error::InvalidInput(
                "take_over is called on a store opened with open_read_only".into(),
            ));
        }
        // Longer than a year is as good as forever, and does not overflow.
        let timeout = timeout.min(Duration::from_secs(365 * 24 * 3600));
        // A writer that passed its last check of the deadline just in time releases the store
        // right after: the lock is waited for this much longer.
        let until = Instant::now() + timeout + RELEASE_GRACE;
        // Most of what is left to read, read before the writer stops.
        shared.catch_up()?;
        let disk = shared.options.disk.writable();
        let failed = |reason: String| Error::TakeOverFailed {
            path: dir.clone(),
            reason,
        };
        match ask(&dir, timeout) {
            Ok(Answer::Released(end)) => {
                let lock = lock_until(&dir, &disk, until)?;
                self.promote(lock, end, disk)
            }
            Ok(Answer::Refused(why)) => Err(failed(format!("the writer refused: {why}"))),
            Ok(Answer::Unclean(why)) => {
                // It stopped and gave up the lock, but its log may end in bytes it could not
                // sync: recovered as an open recovers it.
                let lock = lock_until(&dir, &disk, until)?;
                self.reopen(lock, disk)
                    .map_err(|e| failed(format!("the writer ended unclean ({why}); {e}")))
            }
            Err(NoAnswer::Asked(why)) => match lock_until(&dir, &disk, until) {
                // Released without a word (it crashed, or answered too late): whatever its log
                // ends in is recovered.
                Ok(lock) => self.reopen(lock, disk),
                Err(Error::Locked { .. }) => Err(failed(why)),
                Err(e) => Err(e),
            },
            Err(NoAnswer::NotAsked(why)) => match lock_dir(&dir, &disk) {
                Ok(lock) => self.reopen(lock, disk),
                Err(Error::Locked { .. }) => Err(failed(why)),
                Err(e) => Err(e),
            },
        }
    }

    /// Becomes the writer from what this follower holds, once the old writer, which ended its
    /// log at `end`, has given up the lock, now held. Whatever goes wrong, the store is opened
    /// as an open opens it instead: the old writer is gone.
    fn promote(&self, lock: std::fs::File, end: u64, disk: Disk) -> Result<Store> {
        let shared = &self.shared;
        self.stop_following();
        let caught_up = shared.catch_up().is_ok() && shared.log.visible() == end;
        let mut segments = shared.log.segments();
        let newest = match segments.pop() {
            Some(newest) if caught_up => newest,
            _ => return self.reopen(lock, disk),
        };
        // Reopened for writing (this store's files and maps are read-only).
        let Ok(active) = Segment::open(&newest.path, newest.base, true, &disk) else {
            return self.reopen(lock, disk);
        };
        // Where the old writer last saved the active segment's index file (this follower may
        // know only an older one): its checkpoints go on from there, rather than the new
        // writer's first group writing and syncing the whole file, inside the write gap.
        let checkpointed = crate::index::persist::covered_end_on_disk(
            &shared.dir,
            active.base,
            active.extent(),
            &disk,
        )
        .filter(|&c| c <= newest.data_end())
        .map(|c| (active.base, c));
        active.set_data_end(newest.data_end());
        segments.push(Arc::new(active));
        shutdown(shared, &self.life, None)?;
        let index = {
            // Flagged under the lock, which readers check it under.
            let mut held = shared.index.write();
            shared
                .index_gone
                .store(true, std::sync::atomic::Ordering::Release);
            std::mem::take(&mut *held)
        };
        let mut options = shared.options.clone();
        options.disk = disk;
        // The same lock (one open file description): kept if assembling fails.
        let spare = lock.try_clone();
        // The id tables' first writes wait a second, behind the new writer's first syncs.
        let quiet = Duration::from_secs(1);
        let dir = shared.dir.clone();
        match Store::assemble(
            dir,
            options.clone(),
            segments,
            index,
            Some(lock),
            quiet,
            None,
        ) {
            Ok(store) => {
                if let Some((base, covered)) = checkpointed {
                    store.shared.writer.lock().set_checkpointed(base, covered);
                }
                Ok(store)
            }
            Err(e) => match spare {
                Ok(lock) => Store::open_locked(shared.dir.clone(), options, Some(lock)),
                Err(_) => Err(e),
            },
        }
    }

    /// Closes this follower and opens the store for writing as `Store::open` does, with `lock`.
    fn reopen(&self, lock: std::fs::File, disk: Disk) -> Result<Store> {
        shutdown(&self.shared, &self.life, None)?;
        let mut options = self.shared.options.clone();
        options.disk = disk;
        Store::open_locked(self.shared.dir.clone(), options, Some(lock))
    }
}
