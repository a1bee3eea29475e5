//! Fault injection, for testing what the store does when the file system fails (feature
//! `fault-injection`).
//!
//! A [`FaultInjector`] set with [`Options::fault_injector`](crate::Options::fault_injector) is
//! asked before every file operation the store performs that writes, syncs, renames, removes or
//! creates a file, and before every positioned read while opening (reads through memory maps
//! cannot be failed this way: a failing disk under a map is a SIGBUS); it can fail the operation
//! with any
//! `io::Error` (`ENOSPC`, `EIO`), or let a write do only part of its bytes first. Because it sees
//! every change to the store's files, in order, it can also keep its own copy of what was synced,
//! to build the files a power loss would leave.
//!
//! ```
//! # #[cfg(feature = "fault-injection")] {
//! use std::sync::Arc;
//! use eventjournal::fault::{Fault, FaultInjector, FileOp};
//! use eventjournal::{Error, EventData, ExpectedVersion, Options, Store};
//!
//! /// Fails every fsync with EIO.
//! struct FailSyncs;
//! impl FaultInjector for FailSyncs {
//!     fn before(&self, op: &FileOp<'_>) -> Option<Fault> {
//!         matches!(op, FileOp::Sync { path } if path.extension().is_some_and(|e| e == "seg"))
//!             .then(|| Fault::Error(std::io::Error::from_raw_os_error(5)))
//!     }
//! }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path(), Options::default().fault_injector(Arc::new(FailSyncs))).unwrap();
//! let first = store.append("s", ExpectedVersion::Any, [EventData::new("E", "x")]);
//! assert!(matches!(first, Err(Error::Io { .. })));
//! let next = store.append("s", ExpectedVersion::Any, [EventData::new("E", "y")]);
//! assert!(matches!(next, Err(Error::Poisoned(_))));
//! # }
//! ```

use std::io;
use std::path::Path;

/// A file operation about to be performed. Paths are those of the store's files.
#[derive(Debug)]
#[non_exhaustive]
pub enum FileOp<'a> {
    /// Creating (or truncating to empty) a file, with owner-only permissions.
    Create {
        /// The file.
        path: &'a Path,
    },
    /// Opening an existing file, or the lock file (created empty if missing).
    Open {
        /// The file.
        path: &'a Path,
    },
    /// A positioned read while opening the store.
    Read {
        /// The file.
        path: &'a Path,
        /// Where the read starts.
        offset: u64,
        /// How many bytes it reads.
        len: usize,
    },
    /// A positioned write.
    Write {
        /// The file.
        path: &'a Path,
        /// Where the bytes go.
        offset: u64,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// A copy into the file's shared memory map: to the file what a write is, without a system
    /// call.
    MapWrite {
        /// The file.
        path: &'a Path,
        /// Where the bytes go.
        offset: u64,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// Reserving the first `len` bytes of the file (`posix_fallocate`): extends it with zeros.
    Allocate {
        /// The file.
        path: &'a Path,
        /// The length reserved.
        len: u64,
    },
    /// Giving back the space of `len` bytes at `offset` (a hole punched, the length kept): the
    /// range reads as zeros.
    Punch {
        /// The file.
        path: &'a Path,
        /// Where the range starts.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// Setting the file's length (cutting it, or extending it with zeros).
    SetLen {
        /// The file.
        path: &'a Path,
        /// The new length.
        len: u64,
    },
    /// `fsync` or `fdatasync` of the file: its bytes and length durable.
    Sync {
        /// The file.
        path: &'a Path,
    },
    /// `fsync` of a directory: its entries (creations, renames, removals) durable.
    SyncDir {
        /// The directory.
        path: &'a Path,
    },
    /// Renaming a file, replacing the target.
    Rename {
        /// The old name.
        from: &'a Path,
        /// The new name.
        to: &'a Path,
    },
    /// Removing a file.
    Remove {
        /// The file.
        path: &'a Path,
    },
    /// Creating the store's directory.
    CreateDir {
        /// The directory.
        path: &'a Path,
    },
}

/// How an operation fails.
#[derive(Debug)]
pub enum Fault {
    /// The operation does nothing and returns this error.
    Error(io::Error),
    /// For a write or a map write: the first `done` bytes are written, then this error is
    /// returned (a short write followed by a failure, as when the disk fills mid-write). Other
    /// operations just fail with it.
    Short {
        /// Bytes written before the failure.
        done: usize,
        /// The error returned.
        error: io::Error,
    },
}

/// Decides, before each file operation, whether it fails.
pub trait FaultInjector: Send + Sync + 'static {
    /// Called before `op` is performed; `None` lets it go ahead.
    fn before(&self, op: &FileOp<'_>) -> Option<Fault>;

    /// Whether the store may, while this injector watches, run on two threads at once file
    /// operations whose order can differ from one run to the next: a compaction's copies of
    /// two segments. `false` by default, so that every run of a test makes the same operations
    /// in the same order, as a test that fails the `n`th operation of a run needs; an injector
    /// that only records them (a model of the disk) can say `true`, to watch the store as it
    /// runs without one. `before` may then be called from two threads at once.
    fn allows_interleaving(&self) -> bool {
        false
    }
}
