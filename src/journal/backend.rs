//! The seam between journaled actors and the store they persist to.

use std::ops::ControlFlow;

use crate::append::check_not_reserved;
use crate::error::Result;
use crate::lifecycle::StreamMetadata;
use crate::store::Store;
use crate::types::{AppendResult, EventData, EventId, EventRef, ExpectedVersion, StreamWrite};

/// One stored event as the journal sees it, borrowed from the backend for the length of a call.
#[derive(Debug, Clone, Copy)]
pub struct StoredEvent<'a> {
    /// Its number in the stream, from 0.
    pub event_number: u64,
    /// Its id: how the journal recognises its own events after an acknowledgement was lost.
    pub id: EventId,
    /// Its type name.
    pub event_type: &'a str,
    /// Its payload.
    pub data: &'a [u8],
    /// Its metadata.
    pub metadata: &'a [u8],
}

/// The future of [`Backend::append_async`] (feature `async`).
#[cfg(feature = "async")]
pub type AppendFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<AppendResult>> + Send + 'a>>;

/// What the journal needs from an event store: appends with an expected version, and reads of
/// one stream. [`Store`] implements it; another backend (a server database, say) can be added
/// without touching the journal.
pub trait Backend: Send + Sync + 'static {
    /// Appends `events` to `stream` if its version is `expected` (EventStoreDB rules, including
    /// idempotent retries by event id); a mismatch is
    /// [`Error::WrongExpectedVersion`](crate::Error::WrongExpectedVersion).
    fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult>;

    /// [`append`](Self::append) for async code (feature `async`), used by
    /// [`Journaled::confirm_events_async`](super::Journaled::confirm_events_async).
    ///
    /// The default calls the blocking [`append`](Self::append) when the future is first
    /// polled, so it holds up the thread polling it for as long as that append takes: right for a
    /// backend whose appends are quick (one in memory), a stopgap for one that waits on a disk
    /// or a network. [`Store`] implements it with [`Store::append_async`], which waits for the
    /// group commit without blocking the thread.
    #[cfg(feature = "async")]
    fn append_async<'a>(
        &'a self,
        stream: &'a str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> AppendFuture<'a> {
        Box::pin(async move { self.append(stream, expected, events) })
    }

    /// Hands the events of `stream` from event number `from` on to `f`, in order, until it
    /// breaks; returns how many it was handed.
    fn read(
        &self,
        stream: &str,
        from: u64,
        f: &mut dyn FnMut(StoredEvent<'_>) -> ControlFlow<()>,
    ) -> Result<u64>;

    /// Hands the newest event of `stream` to `f`; returns whether there was one.
    fn read_last(&self, stream: &str, f: &mut dyn FnMut(StoredEvent<'_>)) -> Result<bool>;

    /// Changes the metadata of `stream` (its own, or a snapshot stream's) to what `change`
    /// makes of the current one (`None`: it has none), unless `change` returns `None`; for the
    /// journal's retention settings ([`Journal::keep_snapshots`](super::Journal::keep_snapshots),
    /// [`Journal::truncate_covered_events`](super::Journal::truncate_covered_events)).
    ///
    /// The default keeps no metadata and fails with
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) when asked to change it: a backend
    /// without retention keeps every snapshot and event.
    fn update_metadata(
        &self,
        stream: &str,
        change: &mut dyn FnMut(Option<&StreamMetadata>) -> Option<StreamMetadata>,
    ) -> Result<()> {
        match change(None) {
            None => Ok(()),
            Some(_) => Err(crate::Error::InvalidInput(format!(
                "this backend keeps no stream metadata (for `{stream}`)"
            ))),
        }
    }
}

impl Backend for Store {
    fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult> {
        self.append_unchecked(journal_write(stream, expected, events)?)
    }

    #[cfg(feature = "async")]
    fn append_async<'a>(
        &'a self,
        stream: &'a str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> AppendFuture<'a> {
        Box::pin(async move {
            self.append_async_unchecked(journal_write(stream, expected, events)?)
                .await
        })
    }

    fn read(
        &self,
        stream: &str,
        from: u64,
        f: &mut dyn FnMut(StoredEvent<'_>) -> ControlFlow<()>,
    ) -> Result<u64> {
        self.replay_stream(stream, from, |e| f(stored(e)))
    }

    fn read_last(&self, stream: &str, f: &mut dyn FnMut(StoredEvent<'_>)) -> Result<bool> {
        match self.read_stream_backward(stream, u64::MAX, 1)?.next() {
            Some(e) => {
                f(stored(&e?.as_ref()));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn update_metadata(
        &self,
        stream: &str,
        change: &mut dyn FnMut(Option<&StreamMetadata>) -> Option<StreamMetadata>,
    ) -> Result<()> {
        // Only the actor's stream and its snapshot stream: the journal's, no other reserved one.
        if stream.starts_with(crate::SYSTEM_PREFIX)
            && !stream.starts_with(super::SNAPSHOT_STREAM_PREFIX)
        {
            return Err(crate::Error::ReservedName {
                name: stream.to_string(),
                what: "stream name",
            });
        }
        self.update_metadata_with(stream, change)
    }
}

/// A journal's write to `stream`, checked: the journal may use the names the store keeps for
/// itself only for its actors' snapshots, beside their streams.
fn journal_write(
    stream: &str,
    expected: ExpectedVersion,
    events: Vec<EventData>,
) -> Result<StreamWrite> {
    let write = StreamWrite::new(stream, expected, events);
    check_not_reserved(
        std::slice::from_ref(&write),
        &[super::SNAPSHOT_STREAM_PREFIX],
    )?;
    Ok(write)
}

/// The journal's view of a store event.
fn stored<'a>(e: &EventRef<'a>) -> StoredEvent<'a> {
    StoredEvent {
        event_number: e.event_number(),
        id: e.id(),
        event_type: e.event_type(),
        data: e.data(),
        metadata: e.metadata(),
    }
}
