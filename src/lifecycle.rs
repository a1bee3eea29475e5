//! A stream's lifecycle: its metadata (retention, soft delete, tombstone), kept as events of
//! type `$metadata` in the store-owned stream `$$<stream>`, and applied at read time.
//!
//! No record kind of its own: the metadata events are ordinary events in reserved names, so the
//! log, recovery, backups and followers carry them as they carry any other. The store keeps the
//! current metadata of the streams that have any in memory (sparse), brought up to date from the
//! `$metadata` event type index whenever it is used: the writer, a follower and a store just
//! opened all see a metadata event as soon as it is in the index.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::index::Key;
use crate::read::StreamEvents;
use crate::store::Shared;

/// The event type of metadata events.
pub const METADATA_EVENT_TYPE: &str = "$metadata";
/// The prefix of metadata streams: the metadata of `order-7` is in `$$order-7`.
pub const METADATA_STREAM_PREFIX: &str = "$$";

/// The prefix of consumer checkpoint streams (`$checkpoint-<consumer>`).
pub(crate) const CHECKPOINT_STREAM_PREFIX: &str = "$checkpoint-";
/// The prefix of journaled actors' snapshot streams (`$snapshot-<stream>`).
pub const SNAPSHOT_STREAM_PREFIX: &str = "$snapshot-";

/// The store's own streams whose rules are implied by their names rather than written as
/// metadata, each found through the event type its events are written with, so compaction can
/// walk them without a list of their names: checkpoint, snapshot and metadata streams.
pub(crate) const IMPLIED_RULE_TYPES: [&str; 3] = ["$checkpoint", "$snapshot", METADATA_EVENT_TYPE];

/// Keeps a stream's newest event only.
static KEEP_NEWEST: StreamMetadata = StreamMetadata {
    max_count: Some(1),
    max_age_secs: None,
    truncate_before: None,
    tombstoned: false,
    custom: BTreeMap::new(),
};

/// The rules readers and compaction apply to `stream`, whose metadata is `md`: the one place
/// they are decided.
///
/// - A consumer checkpoint stream keeps its newest checkpoint: a newer one replaces it.
/// - A metadata stream keeps its newest metadata: the one in force.
/// - A snapshot stream keeps what its metadata says (the journal writes `max_count` there when
///   it keeps more than one, see `Journal::keep_snapshots`), and without any, its newest
///   snapshot: activation reads only that one.
/// - Any other stream follows its metadata, if it has any.
///
/// So a process that does not know the journal's settings still applies them, and the
/// application never writes metadata for the store's own streams (it may not: they are
/// reserved).
pub(crate) fn rules_of<'a>(
    stream: &str,
    md: Option<&'a StreamMetadata>,
) -> Option<&'a StreamMetadata> {
    if !stream.starts_with(crate::SYSTEM_PREFIX) {
        return md;
    }
    if stream.starts_with(CHECKPOINT_STREAM_PREFIX) || stream.starts_with(METADATA_STREAM_PREFIX) {
        Some(&KEEP_NEWEST)
    } else if stream.starts_with(SNAPSHOT_STREAM_PREFIX) {
        md.or(Some(&KEEP_NEWEST))
    } else {
        md
    }
}

/// The metadata stream of `stream`.
pub fn metadata_stream(stream: &str) -> String {
    format!("{METADATA_STREAM_PREFIX}{stream}")
}

/// A stream's metadata: retention rules applied when the stream is read, soft deletion (a
/// `truncate_before` at the stream's length) and tombstones, and the application's own keys.
///
/// Stored as the JSON body of a `$metadata` event in `$$<stream>`, with these field names;
/// fields left out read as unset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamMetadata {
    /// Only the newest `max_count` events are read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
    /// Only events appended within the last `max_age_secs` seconds are read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u64>,
    /// Events numbered below this are not read (a soft delete sets it to the stream's length).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncate_before: Option<u64>,
    /// The stream is deleted for good: appends and reads fail with
    /// [`Error::StreamDeleted`](crate::Error::StreamDeleted).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tombstoned: bool,
    /// The application's own keys, kept and returned as they are.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: BTreeMap<String, serde_json::Value>,
}

impl StreamMetadata {
    /// The encoded body of a metadata event.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// The first event number a reader sees, of a stream of `len` events (at most `len`).
    pub(crate) fn first_visible(&self, len: u64) -> u64 {
        let mut first = self.truncate_before.unwrap_or(0);
        if let Some(c) = self.max_count {
            first = first.max(len.saturating_sub(c));
        }
        first.min(len)
    }

    /// The oldest timestamp (microseconds since the epoch) a reader sees, at `now`.
    pub(crate) fn oldest_visible(&self, now: u64) -> u64 {
        self.max_age_secs
            .map_or(0, |s| now.saturating_sub(s.saturating_mul(1_000_000)))
    }
}

/// Microseconds since the Unix epoch, as records are stamped.
pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The metadata of every stream that has any: its metadata stream's version and its newest
/// metadata.
pub(crate) type MetaTable = HashMap<String, (u64, Arc<StreamMetadata>)>;

/// What the store holds in memory of stream metadata.
#[derive(Default)]
pub(crate) struct MetaMap {
    /// How many `$metadata` events (of the event type index) `streams` holds.
    seen: u64,
    /// Shared with readers as a snapshot; copied on write (metadata changes are rare).
    streams: Arc<MetaTable>,
    /// Whether the index files were searched for the `$metadata` key: a key not in them at
    /// open never is, and one added later is in memory, so they are searched once, not on
    /// every append and read.
    files_searched: bool,
}

impl Shared {
    /// The metadata of every stream, as of the newest `$metadata` event in the index.
    pub(crate) fn metadata_table(&self) -> Result<Arc<MetaTable>> {
        // Every read asks, so the key's index name is built once, not per call.
        static KEY: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| Key::EventType(METADATA_EVENT_TYPE).name().into_owned());
        let key: &str = &KEY;
        let held = {
            let index = self.index.read();
            self.check_index()?;
            index.lookup(key).map(|id| index.len(id))
        };
        let len = match held {
            Some(len) => len,
            None if self.meta.read().files_searched => 0,
            None => {
                let (_, len) = self.stream_len(key)?;
                self.meta.write().files_searched = true;
                len
            }
        };
        {
            let m = self.meta.read();
            if m.seen >= len {
                return Ok(m.streams.clone());
            }
        }
        let mut m = self.meta.write();
        if m.seen < len {
            let from = m.seen;
            let mut events = StreamEvents::raw(self, key, from, (len - from) as usize)?;
            let mut streams = (*m.streams).clone();
            for e in &mut events {
                let e = e?;
                let Some(target) = e.stream().strip_prefix(METADATA_STREAM_PREFIX) else {
                    continue;
                };
                // Only the store writes `$` streams and types; a body it cannot read (written by
                // a newer version, say) leaves the metadata before it in place.
                if let Ok(md) = serde_json::from_slice::<StreamMetadata>(e.data()) {
                    streams.insert(target.to_string(), (e.event_number(), Arc::new(md)));
                }
            }
            // Counted by entries, not events: compaction removes metadata events replaced by
            // newer ones, which the read passes over.
            m.seen = events.next_entry();
            m.streams = Arc::new(streams);
        }
        Ok(m.streams.clone())
    }

    /// What part of `stream` (of `len` events) a reader sees: the first visible event number and
    /// the oldest visible timestamp (0: no age limit); `Error::StreamDeleted` if it is
    /// tombstoned. The one place the stream reads and replays take these rules from.
    pub(crate) fn visible_part(&self, stream: &str, len: u64) -> Result<(u64, u64)> {
        let table = self.metadata_table()?;
        match rules_of(stream, table.get(stream).map(|(_, md)| &**md)) {
            None => Ok((0, 0)),
            Some(md) if md.tombstoned => Err(crate::error::Error::StreamDeleted {
                stream: stream.to_string(),
            }),
            Some(md) => Ok((md.first_visible(len), md.oldest_visible(now_micros()))),
        }
    }

    /// The metadata of `stream`, if it has any.
    pub(crate) fn metadata_of(&self, stream: &str) -> Result<Option<(u64, Arc<StreamMetadata>)>> {
        Ok(self.metadata_table()?.get(stream).cloned())
    }
}

/// Decides which events of `$all`, a category or an event type a reader no longer sees: those
/// of tombstoned streams, and those a stream's rules ([`rules_of`]) hide.
pub(crate) struct Hider {
    table: Arc<MetaTable>,
    /// Lengths of the streams with `max_count`, looked up once per reader (at most
    /// `MAX_LENS` of them at a time: a read of `$all` meets every actor's snapshot stream).
    lens: HashMap<String, u64>,
    /// The clock `max_age` is measured against, read when a rule first needs it.
    now: Option<u64>,
}

/// Stream lengths a [`Hider`] keeps before it starts again.
const MAX_LENS: usize = 4096;

impl Hider {
    pub(crate) fn new(shared: &Shared) -> Result<Hider> {
        Ok(Hider {
            table: shared.metadata_table()?,
            lens: HashMap::new(),
            now: None,
        })
    }

    /// Starts another read with these rules (kept by a subscription): the clock `max_age` is
    /// measured against is read again when a rule first needs it.
    pub(crate) fn next_read(&mut self) {
        self.now = None;
    }

    /// Whether event `e` is hidden. Most streams have no rules: when no stream has metadata,
    /// one byte of the name tells, before the name is needed as text (its UTF-8 check was a
    /// twentieth of a read of `$all`).
    #[inline]
    pub(crate) fn hides(&mut self, shared: &Shared, e: &crate::types::EventRef<'_>) -> bool {
        let may = !self.table.is_empty()
            || e.stream_bytes()
                .first()
                .is_some_and(|&b| char::from(b) == crate::SYSTEM_PREFIX);
        may && self.hides_by_rules(shared, e.stream(), e.event_number(), e.timestamp_micros())
    }

    /// Whether event `number` of `stream`, stamped `ts`, is hidden by the stream's rules.
    fn hides_by_rules(&mut self, shared: &Shared, stream: &str, number: u64, ts: u64) -> bool {
        let Some(md) = rules_of(stream, self.table.get(stream).map(|(_, md)| &**md)) else {
            return false;
        };
        if md.tombstoned {
            return true;
        }
        let len = if md.max_count.is_some() {
            match self.lens.get(stream) {
                Some(&l) => l,
                None => match shared.stream_len(stream) {
                    Ok((_, l)) => {
                        if self.lens.len() >= MAX_LENS {
                            self.lens.clear();
                        }
                        self.lens.insert(stream.to_string(), l);
                        l
                    }
                    // Not kept: the next event asks again.
                    Err(_) => 0,
                },
            }
        } else {
            u64::MAX
        };
        if number < md.first_visible(len) {
            return true;
        }
        // The clock is read once per read, and only if some stream met has a `max_age`.
        md.max_age_secs.is_some()
            && ts < md.oldest_visible(*self.now.get_or_insert_with(now_micros))
    }
}

impl crate::Store {
    /// Writes `metadata` as the new metadata of `stream` (an event of type `$metadata` in
    /// `$$<stream>`), if the metadata stream's version is `expected`; returns that append's
    /// result. Retention takes effect at once, for every read (see the README's "Deleting
    /// streams and retention").
    ///
    /// Metadata with `tombstoned: true` tombstones the stream without checking the stream's
    /// version; [`tombstone_stream`](Self::tombstone_stream) checks it.
    ///
    /// Fails with [`Error::ReservedName`](crate::Error::ReservedName) for a name starting with
    /// `$` (the store's own streams) and [`Error::StreamDeleted`](crate::Error::StreamDeleted)
    /// for a tombstoned stream: a tombstone is never undone.
    ///
    /// ```
    /// # use eventjournal::{EventData, ExpectedVersion, Options, Store, StreamMetadata};
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path(), Options::default())?;
    /// for i in 0..5 {
    ///     store.append("sensor-1", ExpectedVersion::Any, [EventData::new("Read", format!("{i}"))])?;
    /// }
    /// let keep_two = StreamMetadata { max_count: Some(2), ..Default::default() };
    /// store.set_stream_metadata("sensor-1", ExpectedVersion::NoStream, keep_two)?;
    /// let seen: Vec<u64> = store
    ///     .read_stream_forward("sensor-1", 0, usize::MAX)?
    ///     .map(|e| e.map(|e| e.event_number()))
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(seen, [3, 4]);
    /// assert_eq!(store.stream_metadata("sensor-1")?.map(|(v, m)| (v, m.max_count)), Some((0, Some(2))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_stream_metadata(
        &self,
        stream: &str,
        expected: crate::ExpectedVersion,
        metadata: StreamMetadata,
    ) -> Result<crate::AppendResult> {
        self.check_open()?;
        check_target(stream)?;
        let write = metadata_write(stream, expected, &metadata);
        let mut results = self.shared.submit(vec![write])?;
        results.pop().ok_or_else(|| {
            crate::Error::InvalidInput("internal: no result for the metadata append".into())
        })
    }

    /// Writes what `change` makes of the metadata of `stream` (the store's own streams
    /// included), expecting the metadata stream's version it was read at, read again and
    /// changed again after a concurrent change.
    pub(crate) fn update_metadata_with(
        &self,
        stream: &str,
        change: &mut dyn FnMut(Option<&StreamMetadata>) -> Option<StreamMetadata>,
    ) -> Result<()> {
        use crate::ExpectedVersion as EV;
        self.check_open()?;
        crate::append::check_stream_name(stream)?;
        loop {
            let current = self.shared.metadata_of(stream)?;
            let Some(md) = change(current.as_ref().map(|(_, md)| &**md)) else {
                return Ok(());
            };
            let expected = current.map_or(EV::NoStream, |(v, _)| EV::Exact(v));
            match self
                .shared
                .submit(vec![metadata_write(stream, expected, &md)])
            {
                Ok(_) => return Ok(()),
                Err(crate::Error::WrongExpectedVersion { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The metadata of `stream` and the version of its metadata stream (`None`: it has none).
    /// A tombstoned stream's metadata says so (`tombstoned`).
    pub fn stream_metadata(&self, stream: &str) -> Result<Option<(u64, StreamMetadata)>> {
        self.check_open()?;
        crate::append::check_stream_name(stream)?;
        Ok(self
            .shared
            .metadata_of(stream)?
            .map(|(v, md)| (v, (*md).clone())))
    }

    /// Soft-deletes `stream` if its version is `expected`: its events are no longer read (from
    /// the stream, `$all`, categories, event types, subscriptions, journaled actors), and an
    /// append (`NoStream` included) starts it again, numbering on from where it was. Sets the
    /// stream's `truncate_before` to its length, in one batch with the expected-version check.
    ///
    /// ```
    /// # use eventjournal::{EventData, ExpectedVersion, Options, Store};
    /// # let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path(), Options::default())?;
    /// store.append("cart-9", ExpectedVersion::NoStream, [EventData::new("Added", "{}")])?;
    /// store.delete_stream("cart-9", ExpectedVersion::Exact(0))?;
    /// assert_eq!(store.read_stream_forward("cart-9", 0, 10)?.count(), 0);
    /// let r = store.append("cart-9", ExpectedVersion::NoStream, [EventData::new("Added", "{}")])?;
    /// assert_eq!(r.version, Some(1)); // the numbering goes on
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delete_stream(&self, stream: &str, expected: crate::ExpectedVersion) -> Result<()> {
        self.end_stream(stream, expected, false)
    }

    /// Deletes `stream` for good if its version is `expected`: its events are no longer read
    /// anywhere, and reads and appends of it fail with
    /// [`Error::StreamDeleted`](crate::Error::StreamDeleted), for ever. The name stays taken.
    pub fn tombstone_stream(&self, stream: &str, expected: crate::ExpectedVersion) -> Result<()> {
        self.end_stream(stream, expected, true)
    }

    fn end_stream(
        &self,
        stream: &str,
        expected: crate::ExpectedVersion,
        tombstone: bool,
    ) -> Result<()> {
        use crate::ExpectedVersion as EV;
        self.check_open()?;
        check_target(stream)?;
        loop {
            let current = self.shared.metadata_of(stream)?;
            if current.as_ref().is_some_and(|(_, md)| md.tombstoned) {
                return Err(crate::Error::StreamDeleted {
                    stream: stream.to_string(),
                });
            }
            let (_, len) = self.shared.stream_len(stream)?;
            let floor = current
                .as_ref()
                .and_then(|(_, md)| md.truncate_before)
                .unwrap_or(0);
            let holds = match expected {
                EV::Any => true,
                EV::NoStream => len <= floor,
                EV::StreamExists => len > 0,
                EV::Exact(n) => len == n.saturating_add(1),
            };
            if !holds {
                return Err(crate::Error::WrongExpectedVersion {
                    stream: stream.to_string(),
                    expected,
                    actual: len.checked_sub(1),
                });
            }
            // The length read above, checked again by the writer with the metadata in one
            // batch: an append in between makes the batch fail, and the check is made again.
            let exact = match len.checked_sub(1) {
                Some(v) => EV::Exact(v),
                None => EV::NoStream,
            };
            let mut md = current.map(|(_, md)| (*md).clone()).unwrap_or_default();
            md.truncate_before = Some(len.max(floor));
            md.tombstoned = tombstone;
            let writes = vec![
                crate::StreamWrite::new(stream, exact, Vec::new()),
                metadata_write(stream, EV::Any, &md),
            ];
            match self.shared.submit(writes) {
                Ok(_) => return Ok(()),
                Err(crate::Error::WrongExpectedVersion { stream: s, .. }) if s == stream => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Refuses metadata for the store's own streams.
fn check_target(stream: &str) -> Result<()> {
    crate::append::check_stream_name(stream)?;
    if stream.starts_with(crate::SYSTEM_PREFIX) {
        return Err(crate::Error::ReservedName {
            name: stream.to_string(),
            what: "stream name",
        });
    }
    Ok(())
}

fn metadata_write(
    stream: &str,
    expected: crate::ExpectedVersion,
    md: &StreamMetadata,
) -> crate::StreamWrite {
    crate::StreamWrite::new(
        metadata_stream(stream),
        expected,
        vec![crate::EventData::new(METADATA_EVENT_TYPE, md.to_json())],
    )
}
