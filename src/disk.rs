//! Every file operation the engine performs that changes a file, syncs one, or reads one while
//! opening the store, in one place.
//!
//! With the `fault-injection` feature, each of them first asks the store's
//! [`crate::fault::FaultInjector`] whether to fail, so that tests can fail any write,
//! sync, rename or read on demand and can watch every change to the files to simulate a power
//! loss. Without the feature the seam compiles to the plain calls.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::fault::FileOp;
#[cfg(feature = "fault-injection")]
use crate::fault::{Fault, FaultInjector};

/// The engine's handle on the file system: the place where faults can be injected.
#[derive(Clone, Default)]
pub(crate) struct Disk {
    #[cfg(feature = "fault-injection")]
    injector: Option<std::sync::Arc<dyn FaultInjector>>,
    /// A read-only store's disk: every operation that would create, change, sync, rename or
    /// remove a file fails with `EROFS` before it is attempted, so that no code path of a
    /// read-only store can change a file, whatever it does with the error.
    read_only: bool,
    /// Set when the store that owns this disk gives up its directory lock (closing, or handing
    /// over): from then on it refuses every change as a read-only disk does, so that nothing
    /// the old store still does (a lookup that would remove a damaged cache file) can change
    /// a file another process now writes. Shared by the clones of one store's disk only (see
    /// [`for_store`](Self::for_store)).
    fenced: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        #[cfg(feature = "fault-injection")]
        let injected = self.injector.is_some();
        #[cfg(not(feature = "fault-injection"))]
        let injected = false;
        f.debug_struct("Disk")
            .field("fault_injector", &injected)
            .finish()
    }
}

/// What the seam lets an operation do: all of it, or only its first `n` bytes and then fail.
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
enum Go {
    All,
    Part(usize, io::Error),
}

impl Disk {
    /// A disk whose operations all ask `injector` first.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn with_injector(injector: std::sync::Arc<dyn FaultInjector>) -> Disk {
        Disk {
            injector: Some(injector),
            read_only: false,
            fenced: Default::default(),
        }
    }

    /// This disk, refusing every change to a file (see the field).
    // Without `fault-injection` these are all the fields; with it, the injector is kept.
    #[allow(clippy::needless_update)]
    pub(crate) fn read_only(&self) -> Disk {
        Disk {
            read_only: true,
            fenced: Default::default(),
            ..self.clone()
        }
    }

    /// This disk, for one store: with a fence of its own (see the field), so that stores opened
    /// with clones of the same options do not fence each other.
    pub(crate) fn for_store(&self) -> Disk {
        Disk {
            fenced: Default::default(),
            ..self.clone()
        }
    }

    /// Refuses every later change through this disk and its clones.
    pub(crate) fn fence(&self) {
        self.fenced.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// This disk, allowed to change files: for a copy written elsewhere (a backup).
    // Without `fault-injection` these are all the fields; with it, the injector is kept.
    #[allow(clippy::needless_update)]
    pub(crate) fn writable(&self) -> Disk {
        Disk {
            read_only: false,
            fenced: Default::default(),
            ..self.clone()
        }
    }

    /// Whether this disk refuses every change.
    pub(crate) fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// `EROFS` for an operation that changes a file, on a read-only disk.
    fn refuse(&self, op: &FileOp<'_>) -> io::Result<()> {
        let reads = matches!(op, FileOp::Open { .. } | FileOp::Read { .. });
        let fenced = self.fenced.load(std::sync::atomic::Ordering::SeqCst);
        if (self.read_only || fenced) && !reads {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        Ok(())
    }

    /// Whether a fault injector watches this disk: background work is then done inline, so that
    /// every run of a test does the same file operations in the same order.
    pub(crate) fn is_watched(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        return self.injector.is_some();
        #[cfg(not(feature = "fault-injection"))]
        false
    }

    /// Whether work that could run on two threads at once must run on one, so that every run
    /// of a test makes the same file operations in the same order: when a fault injector
    /// watches this disk, unless it allows interleaving
    /// ([`allows_interleaving`](crate::fault::FaultInjector::allows_interleaving)).
    pub(crate) fn keeps_order(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        return self
            .injector
            .as_ref()
            .is_some_and(|i| !i.allows_interleaving());
        #[cfg(not(feature = "fault-injection"))]
        false
    }

    /// Asks the injector about `op`: `Err` to fail it outright.
    #[cfg(feature = "fault-injection")]
    fn ask(&self, op: FileOp<'_>) -> io::Result<Go> {
        self.refuse(&op)?;
        let Some(injector) = &self.injector else {
            return Ok(Go::All);
        };
        match injector.before(&op) {
            None => Ok(Go::All),
            Some(Fault::Error(e)) => Err(e),
            Some(Fault::Short { done, error }) => match op {
                FileOp::Write { bytes, .. } | FileOp::MapWrite { bytes, .. } => {
                    Ok(Go::Part(done.min(bytes.len()), error))
                }
                _ => Err(error),
            },
        }
    }

    #[cfg(not(feature = "fault-injection"))]
    #[inline(always)]
    fn ask(&self, op: FileOp<'_>) -> io::Result<Go> {
        self.refuse(&op)?;
        Ok(Go::All)
    }

    /// Creates (or truncates) a file readable and writable by its owner only.
    pub(crate) fn create(&self, path: &Path) -> Result<File> {
        self.ask(FileOp::Create { path })
            .and_then(|_| {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(path)
            })
            .at("creating", path)
    }

    /// Opens an existing file.
    pub(crate) fn open(&self, path: &Path, writable: bool) -> Result<File> {
        let writable = writable && !self.read_only;
        self.ask(FileOp::Open { path })
            .and_then(|_| OpenOptions::new().read(true).write(writable).open(path))
            .at("opening", path)
    }

    /// Opens the lock file, creating it (empty, owner-only) if missing; never truncates it.
    pub(crate) fn open_lock(&self, path: &Path) -> Result<File> {
        self.refuse(&FileOp::Create { path }).at("opening", path)?;
        self.ask(FileOp::Open { path })
            .and_then(|_| {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(path)
            })
            .at("opening", path)
    }

    /// Reads a whole (small) file.
    pub(crate) fn read_whole(&self, path: &Path) -> Result<Vec<u8>> {
        self.ask(FileOp::Open { path })
            .and_then(|_| fs::read(path))
            .at("reading", path)
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub(crate) fn read_exact_at(
        &self,
        file: &File,
        path: &Path,
        buf: &mut [u8],
        offset: u64,
    ) -> Result<()> {
        self.ask(FileOp::Read {
            path,
            offset,
            len: buf.len(),
        })
        .and_then(|_| file.read_exact_at(buf, offset))
        .at("reading", path)
    }

    /// Writes all of `bytes` at `offset`.
    pub(crate) fn write_all_at(
        &self,
        file: &File,
        path: &Path,
        bytes: &[u8],
        offset: u64,
    ) -> Result<()> {
        self.ask(FileOp::Write {
            path,
            offset,
            bytes,
        })
        .and_then(|go| match go {
            Go::All => file.write_all_at(bytes, offset),
            Go::Part(n, e) => {
                file.write_all_at(&bytes[..n], offset)?;
                Err(e)
            }
        })
        .at("writing", path)
    }

    /// Asks before `bytes` are copied into a file's shared map at `offset`; returns how many of
    /// them may be copied before the copy fails with the error.
    pub(crate) fn map_write(
        &self,
        path: &Path,
        bytes: &[u8],
        offset: u64,
    ) -> Result<Option<(usize, Error)>> {
        match self.ask(FileOp::MapWrite {
            path,
            offset,
            bytes,
        }) {
            Ok(Go::All) => Ok(None),
            Ok(Go::Part(n, e)) => Ok(Some((n, Error::io("writing", path, e)))),
            Err(e) => Err(Error::io("writing", path, e)),
        }
    }

    /// Reserves the first `len` bytes of the file on disk, extending it with zeros.
    ///
    /// Space is reserved up front, not left as a sparse hole, so that a full disk fails here, as
    /// an error, rather than later: on some file systems (tmpfs) reading a hole through a shared
    /// memory map allocates a page, and with no space left that read is killed by SIGBUS.
    pub(crate) fn allocate(&self, file: &File, path: &Path, len: u64) -> Result<()> {
        use std::os::fd::AsRawFd;
        let reserve = || -> io::Result<()> {
            self.ask(FileOp::Allocate { path, len })?;
            let len = libc::off_t::try_from(len)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
            loop {
                // SAFETY: plain system call on a file descriptor we own; no memory is passed.
                let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
                match r {
                    0 => return Ok(()),
                    libc::EINTR => continue,
                    code => return Err(io::Error::from_raw_os_error(code)),
                }
            }
        };
        reserve().at("reserving space for", path)
    }

    /// Cuts or extends the file to `len` bytes.
    /// Punches a hole of `len` bytes at `offset` (the file keeps its length): the range reads as
    /// zeros and holds no space.
    pub(crate) fn punch(&self, file: &File, path: &Path, offset: u64, len: u64) -> Result<()> {
        use std::os::fd::AsRawFd;
        let punch = || -> io::Result<()> {
            self.ask(FileOp::Punch { path, offset, len })?;
            let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len))
            else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "range too large",
                ));
            };
            // SAFETY: a plain system call on a descriptor we own; no memory is passed.
            let r = unsafe {
                libc::fallocate(
                    file.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    off,
                    n,
                )
            };
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        punch().at("punching a hole in", path)
    }

    /// Writes `offset..offset + len` of the file back to disk and waits for it: a copy calls it
    /// every few megabytes, so that the file's final sync has little left to write and the
    /// store's own syncs, on the same disk, never queue behind a whole file's writeback. Not a
    /// durability point (the file's metadata is not synced): only the final sync is, so a
    /// failure here is left to that sync to report.
    pub(crate) fn write_back(&self, file: &File, offset: u64, len: u64) {
        use std::os::fd::AsRawFd;
        let (Ok(off), Ok(n)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return;
        };
        // SAFETY: a plain system call on a descriptor we own; no memory is passed.
        let _ = unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                off,
                n,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            )
        };
    }

    /// Starts writing `offset..offset + len` of the file back to disk, without waiting: a file
    /// written in large pieces then synced once has most of its bytes on their way by the
    /// sync. Not a durability point; a failure is left to the final sync to report.
    pub(crate) fn start_write_back(&self, file: &File, offset: u64, len: u64) {
        use std::os::fd::AsRawFd;
        let (Ok(off), Ok(n)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return;
        };
        // SAFETY: a plain system call on a descriptor we own; no memory is passed.
        let _ =
            unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE) };
    }

    pub(crate) fn set_len(&self, file: &File, path: &Path, len: u64) -> Result<()> {
        self.ask(FileOp::SetLen { path, len })
            .and_then(|_| file.set_len(len))
            .at("resizing", path)
    }

    /// `fdatasync`: the file's bytes, and its length, durable.
    pub(crate) fn sync_data(&self, file: &File, path: &Path) -> Result<()> {
        self.ask(FileOp::Sync { path })
            .and_then(|_| file.sync_data())
            .at("syncing", path)
    }

    /// `fsync`: the file's bytes and all its metadata durable.
    pub(crate) fn sync_all(&self, file: &File, path: &Path) -> Result<()> {
        self.ask(FileOp::Sync { path })
            .and_then(|_| file.sync_all())
            .at("syncing", path)
    }

    /// Makes a directory's entries (creations, renames, removals) durable.
    pub(crate) fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.ask(FileOp::SyncDir { path: dir })
            .and_then(|_| File::open(dir)?.sync_all())
            .at("syncing directory", dir)
    }

    /// Renames `from` to `to`, replacing `to`.
    pub(crate) fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.ask(FileOp::Rename { from, to })
            .and_then(|_| fs::rename(from, to))
            .at("renaming", from)
    }

    /// Removes a file.
    pub(crate) fn remove(&self, path: &Path) -> Result<()> {
        self.ask(FileOp::Remove { path })
            .and_then(|_| fs::remove_file(path))
            .at("removing", path)
    }

    /// Creates a directory and its missing parents.
    pub(crate) fn create_dir_all(&self, path: &Path) -> Result<()> {
        self.ask(FileOp::CreateDir { path })
            .and_then(|_| fs::create_dir_all(path))
            .at("creating directory", path)
    }
}

/// What tells one version of a file from another without reading it: its inode, length and
/// modification time, as `fstat` gives them. The files it is kept for are never changed in
/// place once written (a rewrite is a new file renamed over the old one, so a new inode), so a
/// file with the same stamp is the same bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Inode number.
    pub(crate) ino: u64,
    /// Length in bytes.
    pub(crate) len: u64,
    /// Modification time, nanoseconds since the Unix epoch (two's complement before it).
    pub(crate) mtime_ns: u64,
}

impl Stamp {
    /// The stamp of a file's metadata.
    pub(crate) fn of(meta: &fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: (meta.mtime() as u64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(meta.mtime_nsec() as u64),
        }
    }
}
