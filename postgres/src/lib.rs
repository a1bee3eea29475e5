//! A PostgreSQL backend for [`eventjournal`]: the embedded store's API — expected versions,
//! idempotent retries by event id, multi-stream atomic appends, stream, `$all`, category and
//! event-type reads, catch-up subscriptions and consumer checkpoints — on a database server, with
//! the same types and errors, and the journal's [`Backend`] trait, so that
//! [`Journaled`](eventjournal::journal::Journaled) actors and their
//! [`Host`](eventjournal::journal::Host) run on it unchanged.
//!
//! ```no_run
//! use eventjournal::{EventData, ExpectedVersion};
//! use eventjournal_postgres::{PgOptions, PgStore};
//!
//! let store = PgStore::open("host=/tmp port=5432 user=me dbname=events", PgOptions::default())?;
//! let r = store.append("order-7", ExpectedVersion::NoStream, [EventData::new("Placed", "{}")])?;
//! assert_eq!(r.version, Some(0));
//! # Ok::<(), eventjournal::Error>(())
//! ```
//!
//! # `$all` in commit order
//!
//! Every append locks the one row of `evj_head`, which holds the next free position, takes its
//! positions from it, and keeps the lock until it commits. Positions are therefore handed out in
//! commit order: a reader that sees an event at position *p* sees every event before *p*, so a
//! subscription that resumes after the last position it delivered skips nothing. The price is that
//! appends to one database are serialised (their transactions, not their connections' round
//! trips to the server before the lock).
//!
//! Positions are spaced like the embedded store's: each event's
//! [`next_position`](RecordedEvent::next_position) is its position plus the size of its fields
//! ([`EventParts::span`]).

#![deny(missing_docs)]

mod copy;
mod pool;
mod subscription;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use eventjournal::journal::{check_not_reserved, Backend, StoredEvent, SNAPSHOT_STREAM_PREFIX};
use eventjournal::{
    AppendResult, Error, EventData, EventId, EventParts, ExpectedVersion, Position, RecordedEvent,
    Result, StreamWrite, MAX_EVENT_TYPE_LEN,
};
use postgres::types::ToSql;
use postgres::{Config, Row};

pub use copy::{copy_from_postgres, copy_to_postgres, CopyReport};
pub use eventjournal::{AllFrom, Filter, StreamFrom, SubscriptionItem};
pub use subscription::PgSubscription;

use pool::{Conn, Pool};

/// How a [`PgStore`] uses its database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The schema holding the store's tables (created if missing): several stores can share a
    /// database, one schema each. Lower-case ASCII letters, digits and `_`, starting with a
    /// letter, at most 48 bytes. Default `eventjournal`.
    pub schema: String,
    /// The most connections the store opens for appends and reads (subscriptions each hold one
    /// more of their own). Default 8.
    pub pool_size: usize,
    /// The largest event accepted (stream name, type, data and metadata), as
    /// [`Options::max_event_size`](eventjournal::Options::max_event_size). Default 16 MiB.
    pub max_event_size: u64,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions {
            schema: "eventjournal".into(),
            pool_size: 8,
            max_event_size: 16 << 20,
        }
    }
}

impl PgOptions {
    /// These options with the store's tables in `schema`.
    pub fn schema(mut self, schema: impl Into<String>) -> PgOptions {
        self.schema = schema.into();
        self
    }

    /// These options with at most `size` pooled connections.
    pub fn pool_size(mut self, size: usize) -> PgOptions {
        self.pool_size = size;
        self
    }
}

/// An event store in a PostgreSQL database. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    /// The channel appends notify and subscriptions listen on.
    pub(crate) channel: String,
    max_event_size: u64,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("channel", &self.inner.channel)
            .finish_non_exhaustive()
    }
}

/// A PostgreSQL error as the store's: the server's SQLSTATE and message when it sent one.
pub(crate) fn pg_error(e: postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) => Error::Backend(format!("{} ({})", db.message(), db.code().code())),
        None => Error::Backend(e.to_string()),
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A query of events from `evj_events` followed by `$rest` (its `WHERE` and `ORDER BY`): the
/// columns in the order [`events_of`] reads them, written once.
macro_rules! select_events {
    ($rest:literal) => {
        concat!(
            "SELECT position, stream, event_number, id, event_type, data, metadata, created_us \
             FROM evj_events ",
            $rest
        )
    };
}

/// Rows of the columns `select_events!` selects, as events.
pub(crate) fn events_of(rows: &[Row]) -> Result<Vec<RecordedEvent>> {
    let mut parts = Vec::with_capacity(rows.len());
    for r in rows {
        let get = |e: postgres::Error| pg_error(e);
        let position: i64 = r.try_get(0).map_err(get)?;
        let number: i64 = r.try_get(2).map_err(get)?;
        let id: uuid::Uuid = r.try_get(3).map_err(get)?;
        let micros: i64 = r.try_get(7).map_err(get)?;
        parts.push(EventParts {
            stream: r.try_get(1).map_err(get)?,
            event_number: number as u64,
            position: Position(position as u64),
            id: EventId::from(id),
            event_type: r.try_get(4).map_err(get)?,
            timestamp_micros: micros as u64,
            data: r.try_get(5).map_err(get)?,
            metadata: r.try_get(6).map_err(get)?,
        });
    }
    RecordedEvent::from_parts(&parts)
}

fn check_schema(schema: &str) -> Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 48
        && schema.starts_with(|c: char| c.is_ascii_lowercase())
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "schema `{schema}`: use 1 to 48 lower-case ASCII letters, digits or `_`, starting \
             with a letter"
        )))
    }
}

/// The embedded store's rules for a stream name, and one more: PostgreSQL's text cannot hold NUL.
pub(crate) fn check_stream_name(stream: &str) -> Result<()> {
    eventjournal::journal::check_stream_name(stream)?;
    if stream.contains('\0') {
        return Err(Error::InvalidInput("stream name holds a NUL".into()));
    }
    Ok(())
}

fn check_event_type(event_type: &str) -> Result<()> {
    if event_type.is_empty() || event_type.len() > MAX_EVENT_TYPE_LEN || event_type.contains('\0') {
        return Err(Error::InvalidInput(format!(
            "event type must be 1 to {MAX_EVENT_TYPE_LEN} bytes without NUL"
        )));
    }
    Ok(())
}

/// The category of a stream: its name up to the first `-` (all of it without one), as the
/// embedded store's [`category_of`](eventjournal::category_of).
fn category(stream: &str) -> &str {
    eventjournal::category_of(stream)
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn checkpoint_stream(consumer: &str) -> Result<String> {
    if consumer.is_empty() {
        return Err(Error::InvalidInput("consumer name is empty".into()));
    }
    let stream = format!("$checkpoint-{consumer}");
    check_stream_name(&stream)?;
    Ok(stream)
}

/// One stream write's outcome under the expected-version rules.
enum Plan {
    /// Write the events; the first gets this number.
    Write(u64),
    /// Nothing to write: an idempotent retry or an empty batch, answered with this.
    Done(AppendResult),
}

/// What rows to write: the columns of the events of one stream write.
struct Columns {
    positions: Vec<i64>,
    numbers: Vec<i64>,
    ids: Vec<uuid::Uuid>,
    types: Vec<String>,
    data: Vec<Vec<u8>>,
    metadata: Vec<Vec<u8>>,
}

impl PgStore {
    /// Connects to the database at `url` (a libpq connection string or URL: `host=/run/pg
    /// port=5432 user=me dbname=events`, `postgresql://me@localhost/events`) and creates the
    /// store's tables in `options.schema` if they are missing.
    pub fn open(url: &str, options: PgOptions) -> Result<PgStore> {
        check_schema(&options.schema)?;
        let mut config: Config = url
            .parse()
            .map_err(|e: postgres::Error| Error::InvalidInput(format!("database URL: {e}")))?;
        config.options(&format!("-c search_path={}", options.schema));
        let pool = Pool::new(config, options.pool_size);
        {
            let mut conn = pool.get()?;
            create_schema(&mut conn, &options.schema)?;
        }
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                channel: format!("evj_{}", options.schema),
                max_event_size: options.max_event_size,
            }),
        })
    }

    /// Drops the schema `schema` with the store it holds, if it exists: for tests and tools that
    /// made a store to throw away.
    pub fn drop_schema(url: &str, schema: &str) -> Result<()> {
        check_schema(schema)?;
        let mut client = url
            .parse::<Config>()
            .map_err(|e| Error::InvalidInput(format!("database URL: {e}")))?
            .connect(postgres::NoTls)
            .map_err(pg_error)?;
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .map_err(pg_error)
    }

    /// Appends `events` to `stream` if its version is `expected`, atomically, with the embedded
    /// store's rules ([`Store::append`](eventjournal::Store::append)): a mismatch is
    /// [`Error::WrongExpectedVersion`] and writes nothing; a retry of a batch already written
    /// (the same event ids where the expected version puts them) writes nothing and returns the
    /// original result.
    pub fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: impl IntoIterator<Item = EventData>,
    ) -> Result<AppendResult> {
        let write = StreamWrite::new(stream, expected, events.into_iter().collect());
        let mut r = self.append_multi(vec![write])?;
        r.pop()
            .ok_or_else(|| Error::Backend("no result for an append".into()))
    }

    /// Appends to several streams in one transaction, each with its own expected version: all or
    /// nothing. Returns each write's result, in order.
    pub fn append_multi(&self, writes: Vec<StreamWrite>) -> Result<Vec<AppendResult>> {
        check_not_reserved(&writes, &[])?;
        self.append_unchecked(writes)
    }

    /// Appends without the check for reserved names (the store's own writes and copies).
    pub(crate) fn append_unchecked(&self, writes: Vec<StreamWrite>) -> Result<Vec<AppendResult>> {
        for (i, w) in writes.iter().enumerate() {
            if writes[..i].iter().any(|o| o.stream == w.stream) {
                return Err(Error::InvalidInput(format!(
                    "stream `{}` appears twice in one batch",
                    w.stream
                )));
            }
            check_stream_name(&w.stream)?;
            for e in &w.events {
                check_event_type(e.event_type())?;
                let size =
                    (w.stream.len() + e.event_type().len() + e.data().len() + e.metadata().len())
                        as u64;
                if size > self.inner.max_event_size {
                    return Err(Error::EventTooLarge {
                        size,
                        max: self.inner.max_event_size,
                    });
                }
            }
        }
        let mut conn = self.inner.pool.get()?;
        let head_sql = "SELECT next_position FROM evj_head FOR UPDATE";
        let version_sql = "SELECT max(event_number) FROM evj_events WHERE stream = $1";
        let insert_sql = "INSERT INTO evj_events (position, stream, event_number, id, \
             event_type, category, data, metadata, created_us) \
             SELECT p, $2, n, i, t, $3, d, m, $4 FROM unnest($1::bigint[], $5::bigint[], \
             $6::uuid[], $7::text[], $8::bytea[], $9::bytea[]) AS u(p, n, i, t, d, m)";
        let bump_sql = "UPDATE evj_head SET next_position = $1";
        let notify_sql = "SELECT pg_notify($1, '')";
        let statements = [
            conn.prepare(head_sql)?,
            conn.prepare(version_sql)?,
            conn.prepare(insert_sql)?,
            conn.prepare(bump_sql)?,
            conn.prepare(notify_sql)?,
            conn.prepare(NEWEST_ID_SQL)?,
            conn.prepare(IDS_FROM_SQL)?,
            conn.prepare(POSITION_OF_SQL)?,
        ];
        let mut tx = conn.client.transaction().map_err(pg_error)?;
        // The lock that orders `$all`: held until commit.
        let head: i64 = tx.query_one(&statements[0], &[]).map_err(pg_error)?.get(0);
        let mut next = head;
        let micros = now_micros();
        let mut results = Vec::with_capacity(writes.len());
        for w in &writes {
            let actual: Option<i64> = tx
                .query_one(&statements[1], &[&w.stream])
                .map_err(pg_error)?
                .get(0);
            let actual = actual.map(|a| a as u64);
            match plan(&mut tx, &statements[5..], w, actual)? {
                Plan::Done(r) => results.push(r),
                Plan::Write(first) => {
                    let mut c = Columns {
                        positions: Vec::with_capacity(w.events.len()),
                        numbers: Vec::with_capacity(w.events.len()),
                        ids: Vec::with_capacity(w.events.len()),
                        types: Vec::with_capacity(w.events.len()),
                        data: Vec::with_capacity(w.events.len()),
                        metadata: Vec::with_capacity(w.events.len()),
                    };
                    for (k, e) in w.events.iter().enumerate() {
                        c.positions.push(next);
                        c.numbers.push((first + k as u64) as i64);
                        c.ids.push(uuid::Uuid::from_bytes(*e.id().as_bytes()));
                        c.types.push(e.event_type().to_string());
                        c.data.push(e.data().to_vec());
                        c.metadata.push(e.metadata().to_vec());
                        let span = EventParts {
                            stream: &w.stream,
                            event_number: 0,
                            position: Position(0),
                            id: e.id(),
                            event_type: e.event_type(),
                            timestamp_micros: 0,
                            data: e.data(),
                            metadata: e.metadata(),
                        }
                        .span();
                        next += span as i64;
                    }
                    let params: [&(dyn ToSql + Sync); 9] = [
                        &c.positions,
                        &w.stream,
                        &category(&w.stream),
                        &micros,
                        &c.numbers,
                        &c.ids,
                        &c.types,
                        &c.data,
                        &c.metadata,
                    ];
                    tx.execute(&statements[2], &params).map_err(pg_error)?;
                    results.push(AppendResult {
                        version: c.numbers.last().map(|&n| n as u64),
                        position: c.positions.last().map(|&p| Position(p as u64)),
                    });
                }
            }
        }
        if next != head {
            tx.execute(&statements[3], &[&next]).map_err(pg_error)?;
            tx.execute(&statements[4], &[&self.inner.channel])
                .map_err(pg_error)?;
        }
        tx.commit().map_err(pg_error)?;
        Ok(results)
    }

    fn query(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let mut conn = self.inner.pool.get()?;
        let statement = conn.prepare(sql)?;
        conn.client.query(&statement, params).map_err(pg_error)
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Up to `max` events of `stream` from event number `from` on, oldest first.
    pub fn read_stream_forward(
        &self,
        stream: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        check_stream_name(stream)?;
        let rows = self.query(
            select_events!(
                "WHERE stream = $1 AND event_number >= $2 \
             ORDER BY event_number LIMIT $3"
            ),
            &[&stream, &to_i64(from), &to_i64(max as u64)],
        )?;
        events_of(&rows)
    }

    /// Up to `max` events of `stream` from event number `from` down (`u64::MAX`: from the
    /// newest), newest first.
    pub fn read_stream_backward(
        &self,
        stream: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        check_stream_name(stream)?;
        let rows = self.query(
            select_events!(
                "WHERE stream = $1 AND event_number <= $2 \
             ORDER BY event_number DESC LIMIT $3"
            ),
            &[&stream, &to_i64(from), &to_i64(max as u64)],
        )?;
        events_of(&rows)
    }

    /// Event `event_number` of `stream`, or [`Error::EventNotFound`].
    pub fn read_event(&self, stream: &str, event_number: u64) -> Result<RecordedEvent> {
        self.read_stream_forward(stream, event_number, 1)?
            .into_iter()
            .find(|e| e.event_number() == event_number)
            .ok_or_else(|| Error::EventNotFound {
                stream: stream.to_string(),
                event_number,
            })
    }

    /// The number of the newest event of `stream`; `None` if it has none.
    pub fn stream_version(&self, stream: &str) -> Result<Option<u64>> {
        check_stream_name(stream)?;
        let rows = self.query(
            "SELECT max(event_number) FROM evj_events WHERE stream = $1",
            &[&stream],
        )?;
        let v: Option<i64> = rows.first().and_then(|r| r.get(0));
        Ok(v.map(|v| v as u64))
    }

    /// The end of `$all`: the position the next event will get.
    pub fn head(&self) -> Result<Position> {
        let rows = self.query("SELECT next_position FROM evj_head", &[])?;
        let head: i64 = rows
            .first()
            .map(|r| r.get(0))
            .ok_or_else(|| Error::Backend("evj_head has no row".into()))?;
        Ok(Position(head as u64))
    }

    /// Fails with [`Error::InvalidPosition`] unless `p` is the start, the end, the head or an
    /// event's position.
    fn check_position(&self, p: Position) -> Result<()> {
        if p == Position::START || p == Position::END {
            return Ok(());
        }
        let rows = self.query(
            "SELECT EXISTS (SELECT 1 FROM evj_events WHERE position = $1) \
             OR $1 = (SELECT next_position FROM evj_head)",
            &[&to_i64(p.0)],
        )?;
        if rows.first().is_some_and(|r| r.get::<_, bool>(0)) {
            Ok(())
        } else {
            Err(Error::InvalidPosition(p))
        }
    }

    /// Up to `max` events of `$all` from `from` on (an event's position, or
    /// [`Position::START`]), in commit order; page on with the last one's
    /// [`next_position`](RecordedEvent::next_position).
    pub fn read_all_forward(&self, from: Position, max: usize) -> Result<Vec<RecordedEvent>> {
        self.check_position(from)?;
        let rows = self.query(
            select_events!("WHERE position >= $1 ORDER BY position LIMIT $2"),
            &[&to_i64(from.0), &to_i64(max as u64)],
        )?;
        events_of(&rows)
    }

    /// Up to `max` events of `$all` before `from` ([`Position::END`]: from the newest), newest
    /// first.
    pub fn read_all_backward(&self, from: Position, max: usize) -> Result<Vec<RecordedEvent>> {
        self.check_position(from)?;
        let rows = self.query(
            select_events!("WHERE position < $1 ORDER BY position DESC LIMIT $2"),
            &[&to_i64(from.0), &to_i64(max as u64)],
        )?;
        events_of(&rows)
    }

    /// Up to `max` events of every stream in `category` (`account` for `account-42`), in
    /// position order, from the `from`-th (counting from 0). The server skips the first `from`
    /// through its index, so the cost of a page grows with `from`: page long categories with a
    /// subscription, which resumes by position.
    pub fn read_category(
        &self,
        category: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        if category.is_empty() || category.contains('-') || category.contains('\0') {
            return Err(Error::InvalidInput(format!(
                "`{category}` is not a category: a category is a stream name's part before its \
                 first `-`"
            )));
        }
        let rows = self.query(
            select_events!("WHERE category = $1 ORDER BY position OFFSET $2 LIMIT $3"),
            &[&category, &to_i64(from), &to_i64(max as u64)],
        )?;
        events_of(&rows)
    }

    /// Up to `max` events of type `event_type`, in position order, from the `from`-th.
    pub fn read_event_type(
        &self,
        event_type: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        check_event_type(event_type)?;
        let rows = self.query(
            select_events!("WHERE event_type = $1 ORDER BY position OFFSET $2 LIMIT $3"),
            &[&event_type, &to_i64(from), &to_i64(max as u64)],
        )?;
        events_of(&rows)
    }

    /// Saves `position` as consumer `consumer`'s checkpoint (an event of its
    /// `$checkpoint-<consumer>` stream, as the embedded store keeps it).
    pub fn save_checkpoint(&self, consumer: &str, position: Position) -> Result<()> {
        let stream = checkpoint_stream(consumer)?;
        self.check_position(position)?;
        self.append_unchecked(vec![StreamWrite::new(
            stream,
            ExpectedVersion::Any,
            vec![EventData::new("$checkpoint", position.0.to_le_bytes())],
        )])?;
        Ok(())
    }

    /// Consumer `consumer`'s last saved checkpoint.
    pub fn load_checkpoint(&self, consumer: &str) -> Result<Option<Position>> {
        let stream = checkpoint_stream(consumer)?;
        match self.read_stream_backward(&stream, u64::MAX, 1)?.first() {
            None => Ok(None),
            Some(e) => {
                let bytes: [u8; 8] = e.data().try_into().map_err(|_| {
                    Error::Backend(format!("checkpoint of `{consumer}` is not 8 bytes"))
                })?;
                Ok(Some(Position(u64::from_le_bytes(bytes))))
            }
        }
    }
}

const NEWEST_ID_SQL: &str = "SELECT event_number FROM evj_events WHERE stream = $1 AND id = $2 \
     ORDER BY event_number DESC LIMIT 1";
const IDS_FROM_SQL: &str = "SELECT event_number, id, position FROM evj_events \
     WHERE stream = $1 AND event_number >= $2 ORDER BY event_number LIMIT $3";
const POSITION_OF_SQL: &str =
    "SELECT position FROM evj_events WHERE stream = $1 AND event_number = $2";

/// The expected-version check of one write, with the embedded store's retry rules: a batch whose
/// ids are already in the stream where `expected` puts them (`Exact(n)`: from `n + 1`;
/// `NoStream`: from 0; `Any` and `StreamExists`: from the newest event with its first id) is a
/// retry, answered with the result it had; a partial overlap is a conflict.
fn plan(
    tx: &mut postgres::Transaction<'_>,
    statements: &[postgres::Statement],
    w: &StreamWrite,
    actual: Option<u64>,
) -> Result<Plan> {
    let count = actual.map_or(0, |a| a + 1);
    let len = w.events.len() as u64;
    let wrong = || Error::WrongExpectedVersion {
        stream: w.stream.clone(),
        expected: w.expected,
        actual,
    };
    let result_at = |tx: &mut postgres::Transaction<'_>, n: Option<u64>| -> Result<AppendResult> {
        let Some(n) = n else {
            return Ok(AppendResult {
                version: None,
                position: None,
            });
        };
        let rows = tx
            .query(&statements[2], &[&w.stream, &to_i64(n)])
            .map_err(pg_error)?;
        let p: Option<i64> = rows.first().map(|r| r.get(0));
        Ok(AppendResult {
            version: Some(n),
            position: p.map(|p| Position(p as u64)),
        })
    };
    if len == 0 {
        let ok = match w.expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual.is_none(),
            ExpectedVersion::StreamExists => actual.is_some(),
            ExpectedVersion::Exact(n) => actual == Some(n),
        };
        return if ok {
            Ok(Plan::Done(result_at(tx, actual)?))
        } else {
            Err(wrong())
        };
    }
    let retry_from = |tx: &mut postgres::Transaction<'_>, start: u64| -> Result<Plan> {
        let rows = tx
            .query(&statements[1], &[&w.stream, &to_i64(start), &to_i64(len)])
            .map_err(pg_error)?;
        let same = rows.len() as u64 == len
            && rows.iter().zip(&w.events).all(|(r, e)| {
                let id: uuid::Uuid = r.get(1);
                id.as_bytes() == e.id().as_bytes()
            });
        if !same {
            return Err(wrong());
        }
        let last = rows
            .last()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(2)));
        Ok(Plan::Done(AppendResult {
            version: last.map(|l| l.0 as u64),
            position: last.map(|l| Position(l.1 as u64)),
        }))
    };
    match w.expected {
        ExpectedVersion::Exact(n) if actual == Some(n) => Ok(Plan::Write(count)),
        ExpectedVersion::Exact(n) if actual.is_some_and(|a| a > n) => retry_from(tx, n + 1),
        ExpectedVersion::Exact(_) => Err(wrong()),
        ExpectedVersion::NoStream if actual.is_none() => Ok(Plan::Write(0)),
        ExpectedVersion::NoStream => retry_from(tx, 0),
        ExpectedVersion::StreamExists if actual.is_none() => Err(wrong()),
        ExpectedVersion::Any | ExpectedVersion::StreamExists => {
            let first = uuid::Uuid::from_bytes(*w.events[0].id().as_bytes());
            let rows = tx
                .query(&statements[0], &[&w.stream, &first])
                .map_err(pg_error)?;
            match rows.first() {
                Some(r) => retry_from(tx, r.get::<_, i64>(0) as u64),
                None => Ok(Plan::Write(count)),
            }
        }
    }
}

/// Creates the store's tables in `schema` if missing. An advisory lock keeps two openers from
/// racing on the catalog (`CREATE ... IF NOT EXISTS` is not safe against a concurrent create).
fn create_schema(conn: &mut Conn, schema: &str) -> Result<()> {
    let mut tx = conn.client.transaction().map_err(pg_error)?;
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock(7411062519);
         CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.evj_head (
             one boolean PRIMARY KEY DEFAULT true CHECK (one),
             next_position bigint NOT NULL);
         INSERT INTO {schema}.evj_head (one, next_position) VALUES (true, 1)
             ON CONFLICT DO NOTHING;
         CREATE TABLE IF NOT EXISTS {schema}.evj_events (
             position bigint PRIMARY KEY,
             stream text NOT NULL,
             event_number bigint NOT NULL,
             id uuid NOT NULL,
             event_type text NOT NULL,
             category text NOT NULL,
             data bytea NOT NULL,
             metadata bytea NOT NULL,
             created_us bigint NOT NULL,
             UNIQUE (stream, event_number));
         CREATE INDEX IF NOT EXISTS evj_events_ids ON {schema}.evj_events (stream, id);
         CREATE INDEX IF NOT EXISTS evj_events_category ON {schema}.evj_events (category, position);
         CREATE INDEX IF NOT EXISTS evj_events_type ON {schema}.evj_events (event_type, position);"
    ))
    .map_err(pg_error)?;
    tx.commit().map_err(pg_error)
}

fn stored(e: &RecordedEvent) -> StoredEvent<'_> {
    StoredEvent {
        event_number: e.event_number(),
        id: e.id(),
        event_type: e.event_type(),
        data: e.data(),
        metadata: e.metadata(),
    }
}

/// Pages of a stream read for the journal: large enough that a replay is a few round trips.
const JOURNAL_PAGE: usize = 512;

impl Backend for PgStore {
    fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult> {
        let writes = vec![StreamWrite::new(stream, expected, events)];
        // The journal writes its actors' snapshots beside their streams.
        check_not_reserved(&writes, &[SNAPSHOT_STREAM_PREFIX])?;
        let mut r = self.append_unchecked(writes)?;
        r.pop()
            .ok_or_else(|| Error::Backend("no result for an append".into()))
    }

    fn read(
        &self,
        stream: &str,
        from: u64,
        f: &mut dyn FnMut(StoredEvent<'_>) -> ControlFlow<()>,
    ) -> Result<u64> {
        let mut next = from;
        let mut handed = 0;
        loop {
            let page = self.read_stream_forward(stream, next, JOURNAL_PAGE)?;
            for e in &page {
                handed += 1;
                if f(stored(e)).is_break() {
                    return Ok(handed);
                }
            }
            match page.last() {
                Some(e) if page.len() == JOURNAL_PAGE => next = e.event_number() + 1,
                _ => return Ok(handed),
            }
        }
    }

    fn read_last(&self, stream: &str, f: &mut dyn FnMut(StoredEvent<'_>)) -> Result<bool> {
        match self.read_stream_backward(stream, u64::MAX, 1)?.first() {
            Some(e) => {
                f(stored(e));
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Runs `f` on a pooled connection: for the modules beside this one.
pub(crate) fn with_conn<T>(inner: &Inner, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
    let mut conn = inner.pool.get()?;
    f(&mut conn)
}
