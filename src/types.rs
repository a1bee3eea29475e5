//! The values callers hand to the store and get back from it.

use std::fmt;

use bytes::Bytes;

use crate::mapping::MapSlice;

/// What the caller believes a stream's version to be when appending.
///
/// The rules are EventStoreDB's; see [`Store::append`](crate::Store::append).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// No check: append whatever the stream holds.
    Any,
    /// The stream must have no events.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last event number must be exactly this.
    Exact(u64),
}

/// The category of a stream: the part of its name before the first `-` (the whole name if it
/// has none), as EventStoreDB's `$by_category` projection takes it.
///
/// ```
/// assert_eq!(eventjournal::category_of("account-42"), "account");
/// assert_eq!(eventjournal::category_of("settings"), "settings");
/// ```
pub fn category_of(stream: &str) -> &str {
    stream.split_once('-').map_or(stream, |(c, _)| c)
}

/// A global address in the log: events in `$all` order have strictly increasing positions.
///
/// A position is the byte address of an event's record; positions are not dense.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(pub u64);

impl Position {
    /// Before the first event: reading forward from here starts at the beginning of the log.
    pub const START: Position = Position(0);
    /// After the last event: reading backward from here starts at the newest event.
    pub const END: Position = Position(u64::MAX);
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A 16-byte event id, shaped like a UUID. Retrying an append with the same ids is idempotent.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EventId(pub [u8; 16]);

impl EventId {
    /// A fresh random (version 4) id.
    pub fn new_random() -> EventId {
        EventId(*uuid::Uuid::new_v4().as_bytes())
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl From<uuid::Uuid> for EventId {
    fn from(u: uuid::Uuid) -> EventId {
        EventId(*u.as_bytes())
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", uuid::Uuid::from_bytes(self.0))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What an event's data or metadata can be made from.
///
/// Owned buffers (`Bytes`, `Vec<u8>`, `String`, `Box<[u8]>`) are moved in without a copy;
/// borrowed ones (`&[u8]`, `&str`, `&String`, `&Vec<u8>`, `&[u8; N]`, `&Bytes`) are copied, so
/// a payload serialised into a local buffer can be passed as `&buffer`.
///
/// ```
/// use eventjournal::EventData;
///
/// let json = String::from(r#"{"sku":"apple"}"#);
/// let borrowed = EventData::new("ItemAdded", &json); // copied; `json` is still ours
/// let moved = EventData::new("ItemAdded", json); // moved, no copy
/// assert_eq!(borrowed.data(), moved.data());
/// ```
pub trait Payload {
    /// The payload as shared bytes.
    fn into_payload(self) -> Bytes;
}

impl Payload for Bytes {
    fn into_payload(self) -> Bytes {
        self
    }
}

impl Payload for Vec<u8> {
    fn into_payload(self) -> Bytes {
        Bytes::from(self)
    }
}

impl Payload for String {
    fn into_payload(self) -> Bytes {
        Bytes::from(self)
    }
}

impl Payload for Box<[u8]> {
    fn into_payload(self) -> Bytes {
        Bytes::from(self)
    }
}

impl Payload for &[u8] {
    fn into_payload(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl Payload for &str {
    fn into_payload(self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}

impl Payload for &String {
    fn into_payload(self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}

impl Payload for &Vec<u8> {
    fn into_payload(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl<const N: usize> Payload for &[u8; N] {
    fn into_payload(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl<const N: usize> Payload for [u8; N] {
    fn into_payload(self) -> Bytes {
        Bytes::copy_from_slice(&self)
    }
}

impl Payload for &Bytes {
    fn into_payload(self) -> Bytes {
        self.clone()
    }
}

impl Payload for std::borrow::Cow<'_, [u8]> {
    fn into_payload(self) -> Bytes {
        match self {
            std::borrow::Cow::Borrowed(b) => Bytes::copy_from_slice(b),
            std::borrow::Cow::Owned(v) => Bytes::from(v),
        }
    }
}

impl Payload for std::borrow::Cow<'_, str> {
    fn into_payload(self) -> Bytes {
        match self {
            std::borrow::Cow::Borrowed(s) => Bytes::copy_from_slice(s.as_bytes()),
            std::borrow::Cow::Owned(s) => Bytes::from(s),
        }
    }
}

/// An event to append.
///
/// The id is drawn at construction, so a retry of the same value is recognised as a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventData {
    pub(crate) id: EventId,
    pub(crate) event_type: String,
    pub(crate) data: Bytes,
    pub(crate) metadata: Bytes,
}

impl EventData {
    /// An event of type `event_type` with payload `data`, a fresh random id and no metadata.
    pub fn new(event_type: impl Into<String>, data: impl Payload) -> EventData {
        EventData {
            id: EventId::new_random(),
            event_type: event_type.into(),
            data: data.into_payload(),
            metadata: Bytes::new(),
        }
    }

    /// Replaces the id, for callers that derive ids themselves (e.g. from a command id).
    pub fn with_id(mut self, id: EventId) -> EventData {
        self.id = id;
        self
    }

    /// Attaches metadata bytes.
    pub fn with_metadata(mut self, metadata: impl Payload) -> EventData {
        self.metadata = metadata.into_payload();
        self
    }

    /// The event's id.
    pub fn id(&self) -> EventId {
        self.id
    }

    /// The event's type.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The payload.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The metadata.
    pub fn metadata(&self) -> &Bytes {
        &self.metadata
    }
}

/// One stream's part of an atomic multi-stream append.
#[derive(Debug, Clone)]
pub struct StreamWrite {
    /// Target stream.
    pub stream: String,
    /// The version the stream must have.
    pub expected: ExpectedVersion,
    /// Events to append, in order.
    pub events: Vec<EventData>,
}

impl StreamWrite {
    /// A write of `events` to `stream` expecting `expected`.
    pub fn new(
        stream: impl Into<String>,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> StreamWrite {
        StreamWrite {
            stream: stream.into(),
            expected,
            events,
        }
    }
}

/// What an append did to one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// The event number of the last event this append wrote (on an idempotent retry: the one it
    /// had written originally; for an empty batch: the stream's current version). `None` when the
    /// stream has no events.
    pub version: Option<u64>,
    /// The global position of that event, `None` when there is none.
    pub position: Option<Position>,
}

impl AppendResult {
    /// The expected version to pass for the next append to this stream.
    pub fn next_expected_version(&self) -> ExpectedVersion {
        match self.version {
            Some(v) => ExpectedVersion::Exact(v),
            None => ExpectedVersion::NoStream,
        }
    }
}

/// An event as stored. It holds its record's bytes in the shared memory map: reading it copies
/// no event bytes, and cloning it copies none either.
#[derive(Clone)]
pub struct RecordedEvent {
    /// The whole record, in the segment's map.
    pub(crate) record: MapSlice,
    pub(crate) fields: Fields,
    pub(crate) position: Position,
}

/// Where the variable fields of a record lie inside it, and its fixed fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fields {
    pub(crate) event_number: u64,
    pub(crate) timestamp_micros: u64,
    pub(crate) id: EventId,
    /// Record-relative byte ranges.
    pub(crate) stream: (u32, u32),
    pub(crate) event_type: (u32, u32),
    pub(crate) data: (u32, u32),
    pub(crate) metadata: (u32, u32),
}

#[inline]
fn text(bytes: &[u8], range: (u32, u32)) -> &str {
    // Checked as UTF-8 when the record was decoded.
    std::str::from_utf8(&bytes[range.0 as usize..range.1 as usize]).unwrap_or_default()
}

impl RecordedEvent {
    /// The stream the event belongs to.
    #[inline]
    pub fn stream(&self) -> &str {
        text(self.record.as_slice(), self.fields.stream)
    }

    /// The event's type.
    #[inline]
    pub fn event_type(&self) -> &str {
        text(self.record.as_slice(), self.fields.event_type)
    }

    /// Its number inside its stream, from 0.
    #[inline]
    pub fn event_number(&self) -> u64 {
        self.fields.event_number
    }

    /// Its global position (`$all` order).
    #[inline]
    pub fn position(&self) -> Position {
        self.position
    }

    /// The position just after this event: reading `$all` forward from it continues after this
    /// event, reading backward from it starts with this event.
    #[inline]
    pub fn next_position(&self) -> Position {
        Position(self.position.0 + self.record.as_slice().len() as u64)
    }

    /// Its id.
    #[inline]
    pub fn id(&self) -> EventId {
        self.fields.id
    }

    /// When the store recorded it, in microseconds since the Unix epoch.
    #[inline]
    pub fn timestamp_micros(&self) -> u64 {
        self.fields.timestamp_micros
    }

    /// When the store recorded it, as an RFC 3339 time in UTC with microseconds
    /// (`2026-12-04T03:10:04.096651Z`).
    #[inline]
    pub fn time_utc(&self) -> String {
        utc_time(self.fields.timestamp_micros)
    }

    /// The payload, borrowed from the memory map.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let (a, b) = self.fields.data;
        &self.record.as_slice()[a as usize..b as usize]
    }

    /// The payload as an owned handle on the same memory: no copy.
    #[inline]
    pub fn data_bytes(&self) -> Bytes {
        let (a, b) = self.fields.data;
        self.record.to_bytes(a as usize..b as usize)
    }

    /// The metadata, borrowed from the memory map.
    #[inline]
    pub fn metadata(&self) -> &[u8] {
        let (a, b) = self.fields.metadata;
        &self.record.as_slice()[a as usize..b as usize]
    }

    /// The metadata as an owned handle on the same memory: no copy.
    #[inline]
    pub fn metadata_bytes(&self) -> Bytes {
        let (a, b) = self.fields.metadata;
        self.record.to_bytes(a as usize..b as usize)
    }

    /// The same event, borrowed.
    #[inline]
    pub fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            record: self.record.as_slice(),
            fields: self.fields,
            position: self.position,
        }
    }
}

/// The fields of an event kept outside the embedded store's log (a row of another backend), to
/// make [`RecordedEvent`]s from with [`RecordedEvent::from_parts`].
#[derive(Debug, Clone, Copy)]
pub struct EventParts<'a> {
    /// Its stream.
    pub stream: &'a str,
    /// Its number in the stream.
    pub event_number: u64,
    /// Its position in that backend's `$all`.
    pub position: Position,
    /// Its id.
    pub id: EventId,
    /// Its type.
    pub event_type: &'a str,
    /// When it was recorded, in microseconds since the Unix epoch.
    pub timestamp_micros: u64,
    /// Its payload.
    pub data: &'a [u8],
    /// Its metadata.
    pub metadata: &'a [u8],
}

impl EventParts<'_> {
    /// How far [`RecordedEvent::next_position`] lies past the event's position: the length of its
    /// stream name, type, data and metadata together (at least 2, as names are not empty). A
    /// backend spaces its positions by it, as the embedded store spaces them by record sizes.
    pub fn span(&self) -> u64 {
        (self.stream.len() + self.event_type.len() + self.data.len() + self.metadata.len()) as u64
    }
}

impl RecordedEvent {
    /// Events made from another backend's rows, so that every backend hands out the same type.
    /// Their bytes are copied into one anonymous memory map shared by the batch;
    /// `next_position()` of each is its position plus [`EventParts::span`]. Fails only when that
    /// map cannot be made ([`Error::Io`](crate::Error::Io)).
    pub fn from_parts(parts: &[EventParts<'_>]) -> crate::Result<Vec<RecordedEvent>> {
        let total: usize = parts.iter().map(|p| p.span() as usize).sum();
        let mut buf = Vec::with_capacity(total);
        for p in parts {
            buf.extend_from_slice(p.stream.as_bytes());
            buf.extend_from_slice(p.event_type.as_bytes());
            buf.extend_from_slice(p.data);
            buf.extend_from_slice(p.metadata);
        }
        let map = MapSlice::anonymous(&buf).map_err(|source| crate::Error::Io {
            action: "mapping memory for events of",
            path: "another backend".into(),
            source,
        })?;
        let mut at = 0usize;
        Ok(parts
            .iter()
            .map(|p| {
                let len = p.span() as usize;
                let stream_end = p.stream.len() as u32;
                let type_end = stream_end + p.event_type.len() as u32;
                let data_end = type_end + p.data.len() as u32;
                let event = RecordedEvent {
                    record: map.sub(at, len),
                    fields: Fields {
                        event_number: p.event_number,
                        timestamp_micros: p.timestamp_micros,
                        id: p.id,
                        stream: (0, stream_end),
                        event_type: (stream_end, type_end),
                        data: (type_end, data_end),
                        metadata: (data_end, len as u32),
                    },
                    position: p.position,
                };
                at += len;
                event
            })
            .collect())
    }
}

impl PartialEq for RecordedEvent {
    fn eq(&self, other: &RecordedEvent) -> bool {
        self.as_ref() == other.as_ref()
    }
}

impl Eq for RecordedEvent {}

impl fmt::Debug for RecordedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_ref().fmt(f)
    }
}

/// An event borrowed from the log, as replays hand it to a closure
/// ([`Store::replay_stream`](crate::Store::replay_stream),
/// [`Store::replay_all`](crate::Store::replay_all)): the fastest way to fold events, since it
/// takes no reference count and copies nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    pub(crate) record: &'a [u8],
    pub(crate) fields: Fields,
    pub(crate) position: Position,
}

impl<'a> EventRef<'a> {
    /// The stream the event belongs to.
    #[inline]
    pub fn stream(&self) -> &'a str {
        text(self.record, self.fields.stream)
    }

    /// The stream name's bytes.
    #[inline]
    pub(crate) fn stream_bytes(&self) -> &'a [u8] {
        let (a, b) = self.fields.stream;
        &self.record[a as usize..b as usize]
    }

    /// The event's type.
    #[inline]
    pub fn event_type(&self) -> &'a str {
        text(self.record, self.fields.event_type)
    }

    /// Its number inside its stream, from 0.
    #[inline]
    pub fn event_number(&self) -> u64 {
        self.fields.event_number
    }

    /// Its global position (`$all` order).
    #[inline]
    pub fn position(&self) -> Position {
        self.position
    }

    /// The position just after this event.
    #[inline]
    pub fn next_position(&self) -> Position {
        Position(self.position.0 + self.record.len() as u64)
    }

    /// Its id.
    #[inline]
    pub fn id(&self) -> EventId {
        self.fields.id
    }

    /// When the store recorded it, in microseconds since the Unix epoch.
    #[inline]
    pub fn timestamp_micros(&self) -> u64 {
        self.fields.timestamp_micros
    }

    /// The payload.
    #[inline]
    pub fn data(&self) -> &'a [u8] {
        let (a, b) = self.fields.data;
        &self.record[a as usize..b as usize]
    }

    /// The metadata.
    #[inline]
    pub fn metadata(&self) -> &'a [u8] {
        let (a, b) = self.fields.metadata;
        &self.record[a as usize..b as usize]
    }
}

impl fmt::Debug for EventRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordedEvent")
            .field("stream", &self.stream())
            .field("event_number", &self.event_number())
            .field("position", &self.position.0)
            .field("event_type", &self.event_type())
            .field("id", &self.fields.id)
            .field("data_len", &self.data().len())
            .field("metadata_len", &self.metadata().len())
            .finish()
    }
}

/// Microseconds since the Unix epoch as an RFC 3339 UTC time.
pub(crate) fn utc_time(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to a civil date (Howard Hinnant's algorithm), valid over the whole u64 range used.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        micros % 1_000_000
    )
}

#[cfg(test)]
mod time_tests {
    #[test]
    fn utc_times() {
        use super::utc_time;
        assert_eq!(utc_time(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(utc_time(951_782_400_000_001), "2000-02-29T00:00:00.000001Z");
        assert_eq!(
            utc_time(1_767_225_599_999_999),
            "2025-12-31T23:59:59.999999Z"
        );
    }
}

#[cfg(test)]
mod parts_tests {
    use super::{EventId, EventParts, Position, RecordedEvent};

    #[test]
    fn events_made_from_parts_read_back_as_given() {
        let id = EventId::new_random();
        let parts = [
            EventParts {
                stream: "cart-1",
                event_number: 4,
                position: Position(100),
                id,
                event_type: "Added",
                timestamp_micros: 7,
                data: b"{\"sku\":1}",
                metadata: b"",
            },
            EventParts {
                stream: "c",
                event_number: 0,
                position: Position(120),
                id: EventId::default(),
                event_type: "T",
                timestamp_micros: 8,
                data: b"",
                metadata: b"meta",
            },
        ];
        let events = RecordedEvent::from_parts(&parts).unwrap();
        let (a, b) = (&events[0], &events[1]);
        assert_eq!(
            (a.stream(), a.event_type(), a.event_number()),
            ("cart-1", "Added", 4)
        );
        assert_eq!(
            (a.id(), a.timestamp_micros(), a.position()),
            (id, 7, Position(100))
        );
        assert_eq!((a.data(), a.metadata()), (&b"{\"sku\":1}"[..], &b""[..]));
        assert_eq!(&a.data_bytes()[..], a.data());
        assert_eq!(a.next_position(), Position(100 + parts[0].span()));
        assert_eq!(
            (b.stream(), b.data(), b.metadata()),
            ("c", &b""[..], &b"meta"[..])
        );
        assert_eq!(b.next_position(), Position(126));
        assert!(RecordedEvent::from_parts(&[]).unwrap().is_empty());
    }
}
