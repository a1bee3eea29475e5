//! The one error type of the crate.

use std::path::{Path, PathBuf};

use crate::types::{ExpectedVersion, Position};

/// Everything that can go wrong in eventjournal.
///
/// Callers match on the variant; the message is for humans.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream's version did not match the expected version; nothing was written.
    #[error("wrong expected version for stream `{stream}`: expected {expected:?}, actual {}", fmt_version(*actual))]
    WrongExpectedVersion {
        /// The stream the append targeted.
        stream: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's version at the time of the check (`None`: the stream has no events).
        actual: Option<u64>,
    },

    /// The stream was tombstoned ([`Store::tombstone_stream`](crate::Store::tombstone_stream)):
    /// it can be neither read nor written again.
    #[error("stream `{stream}` is deleted for good (tombstoned)")]
    StreamDeleted {
        /// The stream.
        stream: String,
    },

    /// Another `Store` (in this or another process) holds the directory.
    #[error("store directory {} is locked by another opener", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// A file on disk does not hold what the format says it must.
    #[error("corrupt store file {} at offset {offset}: {reason}", file.display())]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damage inside `file`.
        offset: u64,
        /// What was wrong.
        reason: String,
    },

    /// The directory exists and holds files, but is not an eventjournal store.
    #[error("{} is not an eventjournal store: {reason}", path.display())]
    NotAStore {
        /// The directory or file that was given.
        path: PathBuf,
        /// Why it was not recognised.
        reason: String,
    },

    /// A file was written by a newer (or unknown) format version.
    #[error("{} has format version {found}; this build reads versions up to {supported}", file.display())]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },

    /// The caller passed something the store rejects (see the message); nothing was written.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// An application's append used a name the store keeps for itself (starting with `$`, see
    /// [`SYSTEM_PREFIX`](crate::SYSTEM_PREFIX)); nothing was written.
    #[error(
        "`{name}` is a reserved {what}: names starting with `$` belong to the store ($all, \
             $checkpoint-<consumer>, $snapshot-<stream>)"
    )]
    ReservedName {
        /// The name.
        name: String,
        /// `stream name` or `event type`.
        what: &'static str,
    },

    /// One event is larger than `Options::max_event_size`; nothing was written.
    #[error("event of {size} bytes exceeds the maximum event size of {max} bytes")]
    EventTooLarge {
        /// Encoded size of the event (stream name, type, data and metadata).
        size: u64,
        /// The configured maximum.
        max: u64,
    },

    /// A global position that is not the start of an event, the start or the end of the log.
    #[error("position {} is not the position of an event in this store", .0 .0)]
    InvalidPosition(Position),

    /// `read_event` asked for an event number the stream does not have.
    #[error("stream `{stream}` has no event number {event_number}")]
    EventNotFound {
        /// The stream.
        stream: String,
        /// The event number asked for.
        event_number: u64,
    },

    /// An earlier write or fsync failed, so the store refuses further writes.
    ///
    /// Whatever was acknowledged before the failure is durable; reopen the store to recover.
    #[error("store refuses writes after an earlier I/O failure: {0}")]
    Poisoned(String),

    /// The store was opened with [`Store::open_read_only`](crate::Store::open_read_only): it
    /// takes no appends or checkpoints; nothing was written.
    #[error("the store in {} is open read-only: nothing was written", path.display())]
    ReadOnly {
        /// The store's directory.
        path: PathBuf,
    },

    /// The store was closed (by [`Store::close`](crate::Store::close) through this or another
    /// handle); nothing was done. Open the store again to go on.
    #[error("the store is closed")]
    Closed,

    /// The store handed its writer role to another process (which asked with
    /// [`Store::take_over`](crate::Store::take_over)) and is closed; nothing was done. Retry
    /// there: every append acknowledged here is in the store that process writes.
    #[error("the store in {path} was handed over to another process")]
    HandedOver {
        /// The store directory.
        path: PathBuf,
    },

    /// The journaled-actor [`Host`](crate::journal::Host) is draining (see
    /// [`Host::drain`](crate::journal::Host::drain)): its process is handing its work over.
    /// Nothing was done; call the actor in the process that took over.
    #[error("the host is draining: call the process that took over")]
    Draining,

    /// [`Store::take_over`](crate::Store::take_over) did not get the writer role: the writer
    /// did not answer in time, refused, or holds the store still. This store is unchanged.
    #[error("taking over the store in {path} failed: {reason}")]
    TakeOverFailed {
        /// The store directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// A journaled actor's event or snapshot could not be encoded or decoded.
    #[error("cannot {action} {what} of stream `{stream}`: {reason}")]
    Codec {
        /// `encode` or `decode`.
        action: &'static str,
        /// What: `event 12 (Deposited, schema 2)`, `a snapshot`, ...
        what: String,
        /// The actor's stream.
        stream: String,
        /// The codec's message.
        reason: String,
    },

    /// A journaled actor's state refused an event (its `apply` returned an error).
    #[error("stream `{stream}`: {} was not applied: {source}", match event_number {
        Some(n) => format!("event {n}"),
        None => "a raised event".to_string(),
    })]
    Apply {
        /// The actor's stream.
        stream: String,
        /// The event's number in the stream, for a confirmed event; `None` for a raised one.
        event_number: Option<u64>,
        /// The state's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A journaled actor's events before `covers` were truncated after a snapshot
    /// (`Journal::truncate_covered_events`), and its newest snapshot cannot be used (it was
    /// written with another `JournalState::SNAPSHOT_VERSION`, or no longer decodes): the state
    /// cannot be rebuilt, so the actor is not activated rather than activated with a wrong state.
    #[error(
        "stream `{stream}`: its events before {covers} were truncated after a snapshot, and no \
         usable snapshot covers them"
    )]
    SnapshotUnusable {
        /// The actor's stream.
        stream: String,
        /// The version the newest snapshot covers.
        covers: u64,
    },

    /// A journaled actor's events kept conflicting with other writers' on every retry.
    #[error("stream `{stream}`: still conflicting after {attempts} attempts to confirm")]
    Conflict {
        /// The actor's stream.
        stream: String,
        /// How many appends were tried.
        attempts: u32,
    },

    /// A backend other than the embedded store failed (a database server's error, a lost
    /// connection), with its message; whether a write that fails so was made is unknown, as with
    /// [`Error::Io`]: retry it with the same event ids.
    #[error("backend: {0}")]
    Backend(String),

    /// An operating system I/O error, with the file it concerned and what was being done.
    ///
    /// Displays as a sentence, e.g. "creating segment 00000000000067108864.seg in /data/store:
    /// permission denied (os error 13)"; the operating system's error is the
    /// [`source`](std::error::Error::source).
    #[error("{action} {}: {}", describe_path(path), sentence(source))]
    Io {
        /// What was being done: `creating`, `writing`, `syncing`, `reading`, ...
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A copy of this error for each appender of a failed group: I/O errors keep their OS error
    /// code, other errors become `Poisoned` with the same message.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Io {
                action,
                path,
                source,
            } => Error::Io {
                action,
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::new(source.kind(), source.to_string()),
                },
            },
            other => Error::Poisoned(other.to_string()),
        }
    }

    /// An I/O error met while `action` (`creating`, `syncing`, ...) was done to `path`.
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether this is an I/O error saying that a file does not exist.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Adds the action and the file to an `io::Result`'s error.
pub(crate) trait IoContext<T> {
    /// The result with its error turned into [`Error::Io`] naming `action` and `path`.
    fn at(self, action: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, action: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}

/// A store file named by its role, so that a message says what it is: "segment
/// 00000000000067108864.seg in /data/store". Other paths are shown as they are.
fn describe_path(path: &Path) -> String {
    let (Some(name), Some(dir)) = (path.file_name().and_then(|n| n.to_str()), path.parent()) else {
        return path.display().to_string();
    };
    // A file being created is written under a temporary name, then renamed.
    let (fresh, kind) = match name.strip_suffix(".tmp") {
        Some(kind) => ("new ", kind),
        None => ("", name),
    };
    let role = if kind.ends_with(".seg") {
        "segment"
    } else if kind.ends_with(".idx") {
        "index file"
    } else if kind == crate::startup::META_FILE {
        "meta file"
    } else if kind == crate::startup::LOCK_FILE {
        "lock file"
    } else {
        return path.display().to_string();
    };
    let role = format!("{fresh}{role}");
    if dir.as_os_str().is_empty() {
        format!("{role} {name}")
    } else {
        format!("{role} {name} in {}", dir.display())
    }
}

/// An I/O error's message with a lower-case first letter, to end a sentence.
fn sentence(e: &std::io::Error) -> String {
    let text = e.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(c) if c.is_uppercase() && !chars.next().is_some_and(|d| d.is_uppercase()) => c
            .to_lowercase()
            .chain(text[c.len_utf8()..].chars())
            .collect(),
        _ => text,
    }
}

fn fmt_version(v: Option<u64>) -> String {
    match v {
        Some(n) => n.to_string(),
        None => "no stream".to_string(),
    }
}

/// `Result` with eventjournal's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
