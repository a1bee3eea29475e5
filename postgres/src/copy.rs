//! Moving a store between the embedded store and PostgreSQL, whole: every event of `$all`, in
//! its order, with its stream, event number, id, type, data and metadata — the store's own
//! streams too (checkpoints, snapshots, stream metadata).

use eventjournal::{
    Error, EventData, ExpectedVersion, Position, RecordedEvent, Result, Store, StreamWrite,
};
use postgres::types::ToSql;

use crate::{category, pg_error, PgStore};

/// Events read and written per transaction or batch.
const CHUNK: usize = 1024;

/// What a copy moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopyReport {
    /// Events copied.
    pub events: u64,
}

/// Copies every event of the embedded store `from` into `to`, which must hold no event yet, in
/// `$all` order, keeping each event's stream, event number, id, type, data, metadata and
/// timestamp. Positions are `to`'s own (spaced by its rule), in the same order. Reads go through
/// the store's retention rules: events a stream's metadata hides are not copied. A copy that
/// fails part way leaves what it copied so far, a prefix of `$all`, committed.
pub fn copy_to_postgres(from: &Store, to: &PgStore) -> Result<CopyReport> {
    if !to.read_all_forward(Position::START, 1)?.is_empty() {
        return Err(Error::InvalidInput(
            "the PostgreSQL store already holds events: copy into an empty one".into(),
        ));
    }
    let mut report = CopyReport::default();
    let mut at = Position::START;
    loop {
        let page: Vec<RecordedEvent> = from.read_all_forward(at, CHUNK)?.collect::<Result<_>>()?;
        let Some(last) = page.last() else {
            return Ok(report);
        };
        at = last.next_position();
        insert_as_is(to, &page)?;
        report.events += page.len() as u64;
    }
}

/// Writes `events` after the end of `to`'s `$all`, with their own event numbers, in one
/// transaction under the head lock (see the crate's documentation).
fn insert_as_is(to: &PgStore, events: &[RecordedEvent]) -> Result<()> {
    crate::with_conn(to.inner(), |conn| {
        let mut tx = conn.client.transaction().map_err(pg_error)?;
        let head: i64 = tx
            .query_one("SELECT next_position FROM evj_head FOR UPDATE", &[])
            .map_err(pg_error)?
            .get(0);
        let mut next = head;
        let n = events.len();
        let (mut positions, mut streams, mut categories, mut numbers, mut ids) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut types, mut data, mut metadata, mut micros) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for e in events {
            positions.push(next);
            next += (e.stream().len() + e.event_type().len() + e.data().len() + e.metadata().len())
                as i64;
            streams.push(e.stream());
            categories.push(category(e.stream()));
            numbers.push(e.event_number() as i64);
            ids.push(uuid::Uuid::from_bytes(*e.id().as_bytes()));
            types.push(e.event_type());
            data.push(e.data());
            metadata.push(e.metadata());
            micros.push(e.timestamp_micros() as i64);
        }
        let params: [&(dyn ToSql + Sync); 9] = [
            &positions,
            &streams,
            &categories,
            &numbers,
            &ids,
            &types,
            &data,
            &metadata,
            &micros,
        ];
        tx.execute(
            "INSERT INTO evj_events (position, stream, category, event_number, id, event_type, \
             data, metadata, created_us) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], \
             $5::uuid[], $6::text[], $7::bytea[], $8::bytea[], $9::bigint[])",
            &params,
        )
        .map_err(pg_error)?;
        tx.execute("UPDATE evj_head SET next_position = $1", &[&next])
            .map_err(pg_error)?;
        tx.execute("SELECT pg_notify($1, '')", &[&to.inner().channel])
            .map_err(pg_error)?;
        tx.commit().map_err(pg_error)
    })
}

/// Copies every event of `from` into the embedded store `to`, which must hold no event yet, in
/// `$all` order, keeping each event's stream, event number, id, type, data and metadata; the
/// embedded store stamps its own time on each. Consecutive events are written in batches (one
/// stream at most once each), every write expecting the stream's version before it, so a stream
/// whose event numbers have gaps (a store copied in from an embedded one whose retention hid
/// events) stops the copy with [`Error::WrongExpectedVersion`].
pub fn copy_from_postgres(from: &PgStore, to: &Store) -> Result<CopyReport> {
    if to.read_all_forward(Position::START, 1)?.next().is_some() {
        return Err(Error::InvalidInput(
            "the embedded store already holds events: copy into an empty one".into(),
        ));
    }
    let mut report = CopyReport::default();
    let mut at = Position::START;
    loop {
        let page = from.read_all_forward(at, CHUNK)?;
        let Some(last) = page.last() else {
            return Ok(report);
        };
        at = last.next_position();
        let mut batch: Vec<StreamWrite> = Vec::new();
        for e in &page {
            let data = EventData::new(e.event_type(), e.data_bytes())
                .with_id(e.id())
                .with_metadata(e.metadata_bytes());
            match batch.last_mut() {
                Some(w) if w.stream == e.stream() => w.events.push(data),
                _ => {
                    if batch.iter().any(|w| w.stream == e.stream()) {
                        to.append_multi_including_reserved(std::mem::take(&mut batch))?;
                    }
                    let expected = match e.event_number() {
                        0 => ExpectedVersion::NoStream,
                        n => ExpectedVersion::Exact(n - 1),
                    };
                    batch.push(StreamWrite::new(e.stream(), expected, vec![data]));
                }
            }
        }
        to.append_multi_including_reserved(batch)?;
        report.events += page.len() as u64;
    }
}
