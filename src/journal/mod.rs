//! Journaled actors: state that is the fold of its own event stream, persisted with optimistic
//! concurrency — the model of Orleans' `JournaledGrain`, on eventjournal.
//!
//! An actor type implements [`JournalState`]: a default state, an event type, and `apply`, which
//! moves the state by one event (Orleans' `TransitionState`). Each actor id has one stream,
//! `<TYPE>-<id>`. A [`Journaled`] handle holds an actor's confirmed state (the fold of its stored
//! events) and its tentative state (confirmed plus events raised but not yet confirmed);
//! [`Journaled::confirm_events`] writes the pending events as one batch that expects the stream's
//! version to be what the handle last saw. A [`Host`] keeps one activation per actor id and
//! serialises the calls to each.
//!
//! ```
//! use eventjournal::journal::{Journal, JournalEvent, JournalState, Journaled, Rejected};
//! use eventjournal::{Options, Store};
//! use serde::{Deserialize, Serialize};
//! use std::sync::Arc;
//!
//! #[derive(Clone, Debug, Serialize, Deserialize)]
//! enum Event { Deposited(u64), Withdrawn(u64) }
//!
//! impl JournalEvent for Event {
//!     fn event_type(&self) -> &'static str {
//!         match self { Event::Deposited(_) => "Deposited", Event::Withdrawn(_) => "Withdrawn" }
//!     }
//! }
//!
//! #[derive(Clone, Debug, Default, Serialize, Deserialize)]
//! struct Account { balance: u64 }
//!
//! impl JournalState for Account {
//!     type Event = Event;
//!     type Error = Rejected;
//!     const TYPE: &'static str = "account";
//!     fn apply(&mut self, event: &Event) -> Result<(), Rejected> {
//!         match *event {
//!             Event::Deposited(n) => self.balance += n,
//!             Event::Withdrawn(n) if n <= self.balance => self.balance -= n,
//!             Event::Withdrawn(_) => return Err(Rejected::new("insufficient funds")),
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let store = Arc::new(Store::open(dir.path(), Options::default())?);
//! let journal = Arc::new(Journal::<Account>::new());
//! let mut acct = Journaled::activate(store.clone(), journal.clone(), "42")?;
//! acct.raise_event(Event::Deposited(100))?;
//! assert!(acct.raise_event(Event::Withdrawn(500)).is_err()); // refused, nothing queued
//! acct.confirm_events()?;
//! assert_eq!((acct.state().balance, acct.version()), (100, 1));
//!
//! let again = Journaled::activate(store, journal, "42")?;
//! assert_eq!(again.state().balance, 100);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backend;
mod codec;
mod host;

use std::collections::HashMap;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

#[cfg(feature = "async")]
pub use backend::AppendFuture;
pub use backend::{Backend, StoredEvent};
#[cfg(feature = "json")]
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
pub use codec::Json;
pub use codec::{Bincode, Codec};
pub use host::{Drained, Host};

use crate::error::{Error, Result};
use crate::lifecycle::StreamMetadata;
use crate::store::Store;
use crate::types::{AppendResult, EventData, EventId, ExpectedVersion};

/// An actor's event: serde-encodable, with a type name stored beside its bytes.
pub trait JournalEvent: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The event's type name (stored as the event type: `Deposited`).
    fn event_type(&self) -> &'static str;

    /// The schema version this build writes for the event's type (default 1). Raise it when the
    /// type's encoding changes, and register an upcaster for the old version
    /// ([`Journal::upcaster`]).
    fn schema_version(&self) -> u32 {
        1
    }
}

/// An actor's state: the fold of its events. Serde-encodable for snapshots.
pub trait JournalState:
    Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The actor's events.
    type Event: JournalEvent;
    /// Why `apply` refuses an event.
    type Error: std::error::Error + Send + Sync + 'static;
    /// The actor type: its streams are `<TYPE>-<id>`.
    const TYPE: &'static str;
    /// The version of the state's encoding in snapshots (default 1). Snapshots of another version
    /// are ignored: the actor is rebuilt from its events and the next snapshot replaces them.
    const SNAPSHOT_VERSION: u32 = 1;

    /// Moves the state by one event (Orleans' `TransitionState`). An error leaves the event out:
    /// a raised event is not queued; a stored one fails the activation with [`Error::Apply`].
    fn apply(&mut self, event: &Self::Event) -> std::result::Result<(), Self::Error>;
}

/// A plain refusal, for states whose `apply` only needs a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected(pub String);

impl Rejected {
    /// A refusal saying `why`.
    pub fn new(why: impl Into<String>) -> Rejected {
        Rejected(why.into())
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Rejected {}

/// Turns the bytes of an older schema version of an event into the current event type.
pub type Upcaster<S, C> =
    dyn Fn(&[u8], &C) -> std::result::Result<<S as JournalState>::Event, String> + Send + Sync;

/// How many times [`Journaled::confirm_events`] appends before it gives up on a stream that
/// other writers keep changing.
pub const MAX_CONFIRM_ATTEMPTS: u32 = 64;

/// Metadata of a journal event: this tag, then the schema version (u32, little-endian).
const EVENT_META_TAG: u8 = b'J';
/// Metadata of a snapshot: this tag, the version covered (u64), the state's snapshot version
/// (u32), and, only when the events it covers are truncated, a flags byte with
/// `SNAPSHOT_TRUNCATES` set (so that snapshots of journals that do not truncate stay readable
/// by builds that know only the first three fields).
const SNAPSHOT_META_TAG: u8 = b'S';
/// Flag of a snapshot's metadata: the events it covers (all but the last) are truncated.
const SNAPSHOT_TRUNCATES: u8 = 1;
/// Event type of snapshots, in `$snapshot-<stream>` streams.
const SNAPSHOT_EVENT_TYPE: &str = "$snapshot";

/// The settings of one actor type: its codec, upcasters and snapshot interval. Shared by all
/// its handles (behind an `Arc`).
pub struct Journal<S: JournalState, C: Codec = Bincode> {
    codec: C,
    snapshot_every: u64,
    keep_snapshots: u64,
    truncate_covered: bool,
    upcasters: HashMap<(String, u32), Box<Upcaster<S, C>>>,
}

impl<S: JournalState> Journal<S, Bincode> {
    /// bincode, no snapshots, no upcasters.
    pub fn new() -> Journal<S, Bincode> {
        Journal::with_codec(Bincode)
    }
}

impl<S: JournalState> Default for Journal<S, Bincode> {
    fn default() -> Self {
        Journal::new()
    }
}

impl<S: JournalState, C: Codec> Journal<S, C> {
    /// The given codec, no snapshots, no upcasters.
    pub fn with_codec(codec: C) -> Journal<S, C> {
        Journal {
            codec,
            snapshot_every: 0,
            keep_snapshots: 1,
            truncate_covered: false,
            upcasters: HashMap::new(),
        }
    }

    /// Stores a snapshot of the confirmed state whenever `n` events have been confirmed since
    /// the last one (0, the default: never). Activation starts from the newest snapshot.
    pub fn snapshot_every(mut self, n: u64) -> Journal<S, C> {
        self.snapshot_every = n;
        self
    }

    /// Keeps each actor's newest `k` snapshots (at least 1; 1, the default, keeps the newest
    /// only): older ones are hidden at once and removed by
    /// [`Store::compact`](crate::Store::compact). Activation reads only the newest; keep more to
    /// have older states at hand for inspection.
    ///
    /// A count other than 1 is written as the snapshot stream's metadata (`max_count`) before
    /// the actor's first snapshot by this journal, so the store applies it whatever process
    /// opens it later; without that metadata a snapshot stream keeps its newest snapshot.
    pub fn keep_snapshots(mut self, k: u64) -> Journal<S, C> {
        self.keep_snapshots = k.max(1);
        self
    }

    /// After each snapshot, truncates the events it covers (Akka's `deleteMessagesTo`; off by
    /// default): the actor's stream gets `truncate_before` set to the snapshot's version less
    /// one, so readers no longer see those events and [`Store::compact`](crate::Store::compact)
    /// removes them, and the actor is activated from the snapshot.
    ///
    /// The newest covered event stays visible. It tells a truncation from a soft delete (which
    /// hides every event up to the stream's end, so a snapshot no longer applies) and keeps the
    /// stream's version readable by any reader.
    ///
    /// The state then lives in the snapshot: a snapshot this build cannot use (written with
    /// another [`JournalState::SNAPSHOT_VERSION`], or one that no longer decodes) fails the
    /// activation with [`Error::SnapshotUnusable`] instead of rebuilding a state from the
    /// events left. Change the state's encoding by reading the old snapshot version first.
    pub fn truncate_covered_events(mut self, on: bool) -> Journal<S, C> {
        self.truncate_covered = on;
        self
    }

    /// Registers `f` to read events of `event_type` stored with schema `version` (an older one)
    /// as the current event type. `f` gets the stored bytes and the codec.
    pub fn upcaster(
        mut self,
        event_type: &str,
        version: u32,
        f: impl Fn(&[u8], &C) -> std::result::Result<S::Event, String> + Send + Sync + 'static,
    ) -> Journal<S, C> {
        self.upcasters
            .insert((event_type.to_string(), version), Box::new(f));
        self
    }

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// The stream of actor `id`: `<TYPE>-<id>`.
    pub fn stream_of(id: &str) -> String {
        format!("{}-{id}", S::TYPE)
    }

    fn encode_event(&self, stream: &str, id: EventId, event: &S::Event) -> Result<EventData> {
        let data = self.codec.encode(event).map_err(|reason| Error::Codec {
            action: "encode",
            what: format!("a raised {} event", event.event_type()),
            stream: stream.to_string(),
            reason,
        })?;
        let mut meta = Vec::with_capacity(5);
        meta.push(EVENT_META_TAG);
        meta.extend_from_slice(&event.schema_version().to_le_bytes());
        Ok(EventData::new(event.event_type(), data)
            .with_id(id)
            .with_metadata(meta))
    }

    /// Decodes a stored event, through its upcaster if its schema version has one.
    fn decode_event(&self, stream: &str, e: &StoredEvent<'_>) -> Result<S::Event> {
        // Events written by other tools carry no journal metadata: schema 1.
        let (version, foreign) = match e.metadata {
            [EVENT_META_TAG, v @ ..] if v.len() == 4 => {
                (u32::from_le_bytes([v[0], v[1], v[2], v[3]]), false)
            }
            _ => (1, true),
        };
        let upcaster = self.upcasters.get(&(e.event_type.to_string(), version));
        let decoded = match upcaster {
            Some(up) => up(e.data, &self.codec),
            None => self.codec.decode(e.data),
        };
        decoded.map_err(|reason| {
            if foreign && upcaster.is_none() {
                // Most likely written with `Store::append` by other code: say so, and how to
                // read it, rather than leave the codec's message alone.
                Error::Codec {
                    action: "decode",
                    what: format!(
                        "event {} ({}), which has no journal metadata (it was not written through \
                         `Journaled`),",
                        e.event_number, e.event_type
                    ),
                    stream: stream.to_string(),
                    reason: format!(
                        "{reason}; write this actor's events through `Journaled`, or read events \
                         written by other code with `Journal::upcaster(\"{}\", 1, ..)`",
                        e.event_type
                    ),
                }
            } else {
                Error::Codec {
                    action: "decode",
                    what: format!(
                        "event {} ({}, schema {version})",
                        e.event_number, e.event_type
                    ),
                    stream: stream.to_string(),
                    reason,
                }
            }
        })
    }
}

/// One actor: its confirmed and tentative state, and the events raised but not confirmed.
pub struct Journaled<S: JournalState, B: Backend = Store, C: Codec = Bincode> {
    backend: Arc<B>,
    journal: Arc<Journal<S, C>>,
    id: String,
    stream: String,
    confirmed: S,
    version: u64,
    tentative: S,
    pending: Vec<(EventId, S::Event)>,
    /// The version the newest usable snapshot covers (0: none).
    snapshot_version: u64,
    /// Whether the snapshot stream's retention was checked against the journal's.
    retention_checked: bool,
}

impl<S: JournalState, B: Backend, C: Codec> Journaled<S, B, C> {
    /// Activates actor `id`: loads its newest snapshot, if snapshots are on and one decodes, and
    /// replays the events after it.
    pub fn activate(
        backend: Arc<B>,
        journal: Arc<Journal<S, C>>,
        id: &str,
    ) -> Result<Journaled<S, B, C>> {
        let stream = Journal::<S, C>::stream_of(id);
        let mut actor = Journaled {
            backend,
            journal,
            id: id.to_string(),
            stream,
            confirmed: S::default(),
            version: 0,
            tentative: S::default(),
            pending: Vec::new(),
            snapshot_version: 0,
            retention_checked: false,
        };
        let first = if actor.journal.snapshot_every > 0 {
            let mut first = None;
            actor.backend.read(&actor.stream, 0, &mut |e| {
                first = Some(e.event_number);
                ControlFlow::Break(())
            })?;
            first
        } else {
            // Snapshots off: the replay finds out whether the stream starts above event 0, with
            // no read of its own; it is done again from a snapshot only if it does.
            match actor.replay(true)? {
                Some(f) if f > 0 => Some(f),
                _ => {
                    actor.tentative = actor.confirmed.clone();
                    return Ok(actor);
                }
            }
        };
        // Events truncated (by this journal's snapshots, or any other rule): a snapshot is
        // looked for even with snapshots off, since it may hold the state of the events gone.
        if actor.journal.snapshot_every > 0 || first.is_some_and(|f| f > 0) {
            if let Some(snap) = actor.load_snapshot()? {
                // A snapshot of more events than the stream holds is not of this stream.
                let mut events = 0;
                actor
                    .backend
                    .read_last(&actor.stream, &mut |e| events = e.event_number + 1)?;
                // Nor is one of events deleted since: it must cover the first event the stream
                // still shows, or there must be none.
                let applies =
                    snap.version <= events && first.is_none_or(|f| snap.version > f || f == 0);
                match snap.state {
                    Some(state) if applies => {
                        actor.confirmed = state;
                        actor.version = snap.version;
                        actor.snapshot_version = snap.version;
                    }
                    // The events it covers are gone, not deleted since (that hides them all,
                    // the last included): nothing else holds their state.
                    None if snap.truncates && first.is_some_and(|f| f > 0 && f < snap.version) => {
                        return Err(Error::SnapshotUnusable {
                            stream: actor.stream.clone(),
                            covers: snap.version,
                        });
                    }
                    _ => {}
                }
            }
        }
        actor.catch_up()?;
        actor.tentative = actor.confirmed.clone();
        Ok(actor)
    }

    /// The newest snapshot, with its state if this build can use it.
    fn load_snapshot(&self) -> Result<Option<Snapshot<S>>> {
        let mut found = None;
        self.backend
            .read_last(&snapshot_stream(&self.stream), &mut |e| {
                let Some(meta) = parse_snapshot_meta(e.metadata) else {
                    return;
                };
                if e.event_type != SNAPSHOT_EVENT_TYPE {
                    return;
                }
                // A snapshot that no longer decodes (the state type changed without a new
                // snapshot version) is not used: the actor is rebuilt from its events, if they
                // are all still there.
                let state = (meta.state_version == S::SNAPSHOT_VERSION)
                    .then(|| self.journal.codec.decode::<S>(e.data).ok())
                    .flatten();
                found = Some(Snapshot {
                    state,
                    version: meta.version,
                    truncates: meta.truncates,
                });
            })?;
        Ok(found)
    }

    /// Applies the stored events after `version` to the confirmed state. Unconfirmed events
    /// found among them (stored by an earlier confirm whose acknowledgement was lost) are
    /// confirmed, not applied again.
    fn catch_up(&mut self) -> Result<()> {
        self.replay(false).map(|_| ())
    }

    /// [`catch_up`](Self::catch_up), returning the number of the first event read, if any; with
    /// `stop_at_gap`, returns before applying anything if that is not the next one (the events
    /// before it are gone: their state may be in a snapshot).
    fn replay(&mut self, stop_at_gap: bool) -> Result<Option<u64>> {
        let Journaled {
            backend,
            journal,
            stream,
            confirmed,
            version,
            pending,
            ..
        } = self;
        let mut landed = 0;
        let mut failure = None;
        let start = *version;
        let mut state = confirmed.clone();
        let mut next = start;
        let mut first = None;
        backend.read(stream, start, &mut |e| {
            if first.is_none() {
                first = Some(e.event_number);
                if stop_at_gap && e.event_number != start {
                    return ControlFlow::Break(());
                }
            }
            // A stream soft-deleted (or truncated) since `start` is read from its first event
            // still visible: the events before it are gone, and the state starts without them.
            if e.event_number > next && next == start && landed == 0 {
                state = S::default();
                next = e.event_number;
            }
            let step = if e.event_number != next {
                Err(Error::InvalidInput(format!(
                    "the backend returned event {} of `{stream}` where {next} belongs",
                    e.event_number
                )))
            } else {
                journal.decode_event(stream, &e).and_then(|ev| {
                    state.apply(&ev).map_err(|err| Error::Apply {
                        stream: stream.clone(),
                        event_number: Some(e.event_number),
                        source: Box::new(err),
                    })
                })
            };
            match step {
                Ok(()) => {
                    if pending.get(landed).is_some_and(|(id, _)| *id == e.id) {
                        landed += 1;
                    }
                    next += 1;
                    ControlFlow::Continue(())
                }
                Err(err) => {
                    failure = Some(err);
                    ControlFlow::Break(())
                }
            }
        })?;
        if let Some(err) = failure {
            return Err(err);
        }
        if stop_at_gap && first.is_some_and(|f| f != start) {
            return Ok(first);
        }
        *confirmed = state;
        *version = next;
        pending.drain(..landed);
        Ok(first)
    }

    /// The actor's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The actor's stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The confirmed state: the fold of the stored events.
    pub fn state(&self) -> &S {
        &self.confirmed
    }

    /// How many events are confirmed (Orleans' `Version`).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The confirmed state with the unconfirmed events applied.
    pub fn tentative_state(&self) -> &S {
        &self.tentative
    }

    /// The events raised but not yet confirmed, oldest first.
    pub fn unconfirmed_events(&self) -> impl ExactSizeIterator<Item = &S::Event> {
        self.pending.iter().map(|(_, e)| e)
    }

    /// Queues `event` for the next [`confirm_events`](Self::confirm_events), applying it to the
    /// tentative state. If the state refuses it, nothing is queued and the error is returned.
    pub fn raise_event(&mut self, event: S::Event) -> Result<()> {
        self.raise_events(vec![event])
    }

    /// Queues `events` atomically: all are applied to the tentative state, or (if the state
    /// refuses one) none is queued.
    pub fn raise_events(&mut self, events: Vec<S::Event>) -> Result<()> {
        let mut next = self.tentative.clone();
        for event in &events {
            next.apply(event).map_err(|e| self.refused(e))?;
        }
        self.tentative = next;
        self.pending
            .extend(events.into_iter().map(|e| (EventId::new_random(), e)));
        Ok(())
    }

    fn refused(&self, e: S::Error) -> Error {
        Error::Apply {
            stream: self.stream.clone(),
            event_number: None,
            source: Box::new(e),
        }
    }

    /// The expected version of the next append: the handle's view of the stream.
    fn expected(&self) -> ExpectedVersion {
        match self.version {
            0 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v - 1),
        }
    }

    /// Writes the unconfirmed events as one batch, expecting the stream to be at
    /// [`version`](Self::version). If another writer got in first, the handle catches up with
    /// the stream, applies the unconfirmed events again on the fresh state and retries (up to
    /// [`MAX_CONFIRM_ATTEMPTS`]); if they no longer apply, they are dropped and the error is
    /// returned. After an I/O error the events stay unconfirmed, with the same event ids, so a
    /// later call retries them idempotently.
    pub fn confirm_events(&mut self) -> Result<()> {
        for _ in 0..MAX_CONFIRM_ATTEMPTS {
            let Some(batch) = self.confirm_batch()? else {
                return Ok(());
            };
            let appended = self.backend.append(&self.stream, self.expected(), batch);
            if self.confirmed_by(appended)? {
                if self.snapshot_due() {
                    // A failure is not the confirm's: the events are stored; the next confirm
                    // tries again.
                    let _ = self.snapshot();
                }
                return Ok(());
            }
        }
        Err(self.gave_up())
    }

    /// [`confirm_events`](Self::confirm_events) for async code (feature `async`): the same
    /// batches, conflict handling, retries and snapshots, with the appends made through
    /// [`Backend::append_async`] (for a [`Store`], without blocking the thread while the group
    /// commit syncs). Reads (catching up after a conflict) are done in place: they come from
    /// memory and do not wait on the disk's syncs.
    ///
    /// Dropping the future before it completes leaves the handle as an I/O error would: the
    /// events stay unconfirmed with their ids, and the next confirm writes them, or recognises
    /// them as written.
    #[cfg(feature = "async")]
    pub async fn confirm_events_async(&mut self) -> Result<()> {
        for _ in 0..MAX_CONFIRM_ATTEMPTS {
            let Some(batch) = self.confirm_batch()? else {
                return Ok(());
            };
            let expected = self.expected();
            let appended = self
                .backend
                .append_async(&self.stream, expected, batch)
                .await;
            if self.confirmed_by(appended)? {
                if self.snapshot_due() {
                    // The metadata writes (once per activation, and after each snapshot when
                    // truncating) are blocking: rare, and small.
                    if let (Ok(Some(event)), Ok(())) =
                        (self.snapshot_event(), self.check_retention())
                    {
                        let stream = snapshot_stream(&self.stream);
                        let stored = self
                            .backend
                            .append_async(&stream, ExpectedVersion::Any, vec![event])
                            .await;
                        if stored.is_ok() {
                            self.snapshot_version = self.version;
                            let _ = self.truncate_covered();
                        }
                    }
                }
                return Ok(());
            }
        }
        Err(self.gave_up())
    }

    /// The unconfirmed events, encoded (with the same ids each attempt, so that a retry of a
    /// batch that landed is recognised); `None` if there are none.
    fn confirm_batch(&self) -> Result<Option<Vec<EventData>>> {
        if self.pending.is_empty() {
            // None raised, or a refresh found them all stored already.
            return Ok(None);
        }
        // Encoded for each attempt rather than cloned: most confirms take one attempt.
        let mut batch = Vec::with_capacity(self.pending.len());
        for (id, e) in &self.pending {
            batch.push(self.journal.encode_event(&self.stream, *id, e)?);
        }
        Ok(Some(batch))
    }

    /// Takes in the outcome of appending the unconfirmed events: true when they are confirmed;
    /// false after a conflict, caught up with the stream and ready to try again.
    fn confirmed_by(&mut self, appended: Result<AppendResult>) -> Result<bool> {
        match appended {
            Ok(r) => {
                // The stream's numbering, which a soft delete does not reset.
                self.version = match r.version {
                    Some(v) => v + 1,
                    None => self.version + self.pending.len() as u64,
                };
                self.pending.clear();
                self.confirmed = self.tentative.clone();
                Ok(true)
            }
            Err(Error::WrongExpectedVersion { .. }) => {
                self.refresh()?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn gave_up(&self) -> Error {
        Error::Conflict {
            stream: self.stream.clone(),
            attempts: MAX_CONFIRM_ATTEMPTS,
        }
    }

    /// Raises `event` only if no other events got in first: confirms any unconfirmed events,
    /// then writes `event` expecting the stream to be where this handle saw it. Returns false,
    /// writing nothing and catching up with the stream, if another writer got in first.
    pub fn raise_conditional_event(&mut self, event: S::Event) -> Result<bool> {
        self.raise_conditional_events(vec![event])
    }

    /// [`raise_conditional_event`](Self::raise_conditional_event) for several events, written
    /// as one batch: all or none.
    pub fn raise_conditional_events(&mut self, events: Vec<S::Event>) -> Result<bool> {
        self.confirm_events()?;
        let mut next = self.confirmed.clone();
        for event in &events {
            next.apply(event).map_err(|e| self.refused(e))?;
        }
        let mut batch = Vec::with_capacity(events.len());
        for e in &events {
            batch.push(
                self.journal
                    .encode_event(&self.stream, EventId::new_random(), e)?,
            );
        }
        match self.backend.append(&self.stream, self.expected(), batch) {
            Ok(_) => {
                self.version += events.len() as u64;
                self.confirmed = next;
                self.tentative = self.confirmed.clone();
                if self.snapshot_due() {
                    let _ = self.snapshot();
                }
                Ok(true)
            }
            Err(Error::WrongExpectedVersion { .. }) => {
                self.refresh()?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Catches up with events other writers stored, then applies the unconfirmed events again on
    /// the fresh state. If one no longer applies, the unconfirmed events are dropped and the
    /// error is returned.
    pub fn refresh(&mut self) -> Result<()> {
        self.catch_up()?;
        let mut next = self.confirmed.clone();
        for (_, event) in &self.pending {
            if let Err(e) = next.apply(event) {
                self.pending.clear();
                self.tentative = self.confirmed.clone();
                return Err(self.refused(e));
            }
        }
        self.tentative = next;
        Ok(())
    }

    /// The confirmed events numbered `from..to` (Orleans' `RetrieveConfirmedEvents`), read and
    /// decoded from the store. `to` may not pass [`version`](Self::version).
    pub fn retrieve_confirmed_events(&self, from: u64, to: u64) -> Result<Vec<S::Event>> {
        if from > to || to > self.version {
            return Err(Error::InvalidInput(format!(
                "event range {from}..{to} is not within the {} confirmed events of `{}`",
                self.version, self.stream
            )));
        }
        let mut out = Vec::with_capacity((to - from) as usize);
        let mut failure = None;
        if from < to {
            self.backend.read(&self.stream, from, &mut |e| {
                match self.journal.decode_event(&self.stream, &e) {
                    Ok(ev) => out.push(ev),
                    Err(err) => {
                        failure = Some(err);
                        return ControlFlow::Break(());
                    }
                }
                if e.event_number + 1 >= to {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
        }
        if let Some(err) = failure {
            return Err(err);
        }
        Ok(out)
    }

    /// Stores a snapshot of the confirmed state now (if it covers events not in the newest one).
    ///
    /// With [`Journal::truncate_covered_events`], then truncates the events it covers; with
    /// [`Journal::keep_snapshots`] other than 1, first writes that count as the snapshot
    /// stream's metadata (once per activation).
    pub fn snapshot(&mut self) -> Result<()> {
        let Some(event) = self.snapshot_event()? else {
            return Ok(());
        };
        self.check_retention()?;
        self.backend.append(
            &snapshot_stream(&self.stream),
            ExpectedVersion::Any,
            vec![event],
        )?;
        self.snapshot_version = self.version;
        self.truncate_covered()
    }

    /// Writes the journal's snapshot count as the snapshot stream's metadata if it says
    /// otherwise, before this handle's first snapshot: before, so that no compaction in between
    /// applies the default count to the snapshots the journal keeps.
    fn check_retention(&mut self) -> Result<()> {
        if self.retention_checked {
            return Ok(());
        }
        let k = self.journal.keep_snapshots;
        self.backend
            .update_metadata(&snapshot_stream(&self.stream), &mut |current| {
                // Without metadata a snapshot stream keeps 1.
                let kept = current.map_or(Some(1), |md| md.max_count);
                (kept != Some(k)).then(|| StreamMetadata {
                    max_count: Some(k),
                    ..current.cloned().unwrap_or_default()
                })
            })?;
        self.retention_checked = true;
        Ok(())
    }

    /// Truncates the events the newest snapshot covers, all but its last, if the journal says
    /// so: the actor's stream's `truncate_before` goes up to the snapshot's version less one,
    /// the rest of its metadata kept.
    fn truncate_covered(&mut self) -> Result<()> {
        let covered = self.snapshot_version;
        if !self.journal.truncate_covered || covered < 2 {
            return Ok(());
        }
        let floor = covered - 1;
        self.backend.update_metadata(&self.stream, &mut |current| {
            if current.is_some_and(|md| md.truncate_before.unwrap_or(0) >= floor) {
                return None;
            }
            Some(StreamMetadata {
                truncate_before: Some(floor),
                ..current.cloned().unwrap_or_default()
            })
        })
    }

    /// The snapshot event of the confirmed state; `None` if the newest snapshot covers it.
    fn snapshot_event(&self) -> Result<Option<EventData>> {
        if self.version == 0 || self.version == self.snapshot_version {
            return Ok(None);
        }
        let data = self
            .journal
            .codec
            .encode(&self.confirmed)
            .map_err(|reason| Error::Codec {
                action: "encode",
                what: "a snapshot".into(),
                stream: self.stream.clone(),
                reason,
            })?;
        let mut meta = Vec::with_capacity(14);
        meta.push(SNAPSHOT_META_TAG);
        meta.extend_from_slice(&self.version.to_le_bytes());
        meta.extend_from_slice(&S::SNAPSHOT_VERSION.to_le_bytes());
        if self.journal.truncate_covered {
            meta.push(SNAPSHOT_TRUNCATES);
        }
        Ok(Some(
            EventData::new(SNAPSHOT_EVENT_TYPE, data).with_metadata(meta),
        ))
    }

    /// Whether `snapshot_every` events were confirmed since the last snapshot.
    fn snapshot_due(&self) -> bool {
        let every = self.journal.snapshot_every;
        every > 0 && self.version - self.snapshot_version >= every
    }

    /// The version the newest snapshot this handle knows of covers (0: none).
    pub fn snapshot_version(&self) -> u64 {
        self.snapshot_version
    }
}

impl<S: JournalState + fmt::Debug, B: Backend, C: Codec> fmt::Debug for Journaled<S, B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journaled")
            .field("stream", &self.stream)
            .field("version", &self.version)
            .field("state", &self.confirmed)
            .field("unconfirmed", &self.pending.len())
            .finish()
    }
}

/// What the names of snapshot streams start with: a reserved name (see
/// [`SYSTEM_PREFIX`](crate::SYSTEM_PREFIX)) that only the journal writes.
pub use crate::lifecycle::SNAPSHOT_STREAM_PREFIX;

pub use crate::append::{check_not_reserved, check_stream_name};

/// The stream holding snapshots of `stream`.
fn snapshot_stream(stream: &str) -> String {
    format!("{SNAPSHOT_STREAM_PREFIX}{stream}")
}

/// What a snapshot's metadata says.
struct SnapshotMeta {
    version: u64,
    state_version: u32,
    truncates: bool,
}

/// The newest snapshot of an actor: its state, if this build can use it, and what it covers.
struct Snapshot<S> {
    state: Option<S>,
    version: u64,
    truncates: bool,
}

fn parse_snapshot_meta(meta: &[u8]) -> Option<SnapshotMeta> {
    let [SNAPSHOT_META_TAG, rest @ ..] = meta else {
        return None;
    };
    let flags = match rest.len() {
        12 => 0,
        13 => rest[12],
        _ => return None,
    };
    Some(SnapshotMeta {
        version: u64::from_le_bytes(rest[..8].try_into().ok()?),
        state_version: u32::from_le_bytes(rest[8..12].try_into().ok()?),
        truncates: flags & SNAPSHOT_TRUNCATES != 0,
    })
}
