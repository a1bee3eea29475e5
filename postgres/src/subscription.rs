//! Catch-up subscriptions: pages read by position after the last one delivered, and between
//! pages, a wait on the store's notification channel.
//!
//! The subscription listens on its own connection before its first read, so an append committed
//! after that read has its notification waiting. Positions are given out in commit order (see
//! the crate's documentation), so resuming after the last delivered position neither skips nor
//! repeats an event.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventjournal::{
    category_of, AllFrom, Filter, Position, RecordedEvent, Result, StreamFrom, SubscriptionItem,
};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;

use crate::pool::Conn;
use crate::{check_stream_name, events_of, pg_error, to_i64, with_conn, Inner, PgStore};

/// Events read per query.
const PAGE: i64 = 512;

/// What a subscription follows.
#[derive(Debug)]
enum Target {
    All(Option<Filter>),
    Stream(String),
    Category(String),
    EventType(String),
}

/// A catch-up subscription to a [`PgStore`]: history first, then live events, in order, woken by
/// `LISTEN`/`NOTIFY` when it has caught up.
///
/// As an [`Iterator`] it yields events, blocking for the next one up to its timeout (see
/// [`with_timeout`](Self::with_timeout); default: without limit), and ends when the timeout
/// passes or after an error, which it yields first.
pub struct PgSubscription {
    inner: Arc<Inner>,
    listener: Conn,
    target: Target,
    /// The position of the last event read (delivered or filtered out).
    after: i64,
    /// Events of the target still to pass over before delivering (`StreamFrom::After` of a
    /// category or event type counts events, not positions).
    skip: u64,
    ahead: VecDeque<RecordedEvent>,
    timeout: Option<Duration>,
    failed: bool,
}

impl std::fmt::Debug for PgSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSubscription")
            .field("target", &self.target)
            .field("after", &self.after)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    fn subscribe(&self, target: Target, after: i64, skip: u64) -> Result<PgSubscription> {
        let inner = self.inner().clone();
        let mut listener = Conn::open(inner.pool.config())?;
        // Quoted: the channel is case-sensitive in pg_notify, and lower-case as built.
        listener
            .client
            .batch_execute(&format!("LISTEN \"{}\"", inner.channel))
            .map_err(pg_error)?;
        Ok(PgSubscription {
            inner,
            listener,
            target,
            after,
            skip,
            ahead: VecDeque::new(),
            timeout: None,
            failed: false,
        })
    }

    /// The last position given out, or 0.
    fn last_position(&self) -> Result<i64> {
        Ok(self.head()?.0 as i64 - 1)
    }

    /// A subscription to `$all` (with `filter`, the events it matches): from the start, from
    /// the end (only events appended later), or after an event's position.
    pub fn subscribe_to_all(
        &self,
        from: AllFrom,
        filter: Option<Filter>,
    ) -> Result<PgSubscription> {
        let after = match from {
            AllFrom::Start => 0,
            AllFrom::End => self.last_position()?,
            AllFrom::After(p) => {
                self.read_all_forward(p, 0)?;
                to_i64(p.0)
            }
        };
        self.subscribe(Target::All(filter), after, 0)
    }

    /// A subscription to `stream`: from its start, after event number `n`, or from its end.
    pub fn subscribe_to_stream(&self, stream: &str, from: StreamFrom) -> Result<PgSubscription> {
        check_stream_name(stream)?;
        let (after, skip) = self.start(from, "stream = $1", stream)?;
        self.subscribe(Target::Stream(stream.to_string()), after, skip)
    }

    /// A subscription to every stream of `category`: from its start, after its `n`-th event
    /// (from 0), or from its end.
    pub fn subscribe_to_category(
        &self,
        category: &str,
        from: StreamFrom,
    ) -> Result<PgSubscription> {
        // The same checks as a read.
        self.read_category(category, 0, 0)?;
        let (after, skip) = self.start(from, "category = $1", category)?;
        self.subscribe(Target::Category(category.to_string()), after, skip)
    }

    /// A subscription to every event of type `event_type`: from the start, after its `n`-th
    /// event (from 0), or from the end.
    pub fn subscribe_to_event_type(
        &self,
        event_type: &str,
        from: StreamFrom,
    ) -> Result<PgSubscription> {
        self.read_event_type(event_type, 0, 0)?;
        let (after, skip) = self.start(from, "event_type = $1", event_type)?;
        self.subscribe(Target::EventType(event_type.to_string()), after, skip)
    }

    /// A subscription to `$all` for consumer `consumer`: after its saved checkpoint, or from the
    /// start if it has none.
    pub fn subscribe_from_checkpoint(
        &self,
        consumer: &str,
        filter: Option<Filter>,
    ) -> Result<PgSubscription> {
        let from = match self.load_checkpoint(consumer)? {
            Some(p) => AllFrom::After(p),
            None => AllFrom::Start,
        };
        self.subscribe_to_all(from, filter)
    }

    /// Where a subscription to the events `condition` selects starts: the position to read
    /// after, and how many of its events to pass over from there.
    fn start(&self, from: StreamFrom, condition: &str, key: &str) -> Result<(i64, u64)> {
        match from {
            StreamFrom::Start => Ok((0, 0)),
            StreamFrom::End => Ok((self.last_position()?, 0)),
            StreamFrom::After(n) => {
                // The position of the `n`-th event, when there is one; past the end, the events
                // still missing are counted off as they come.
                let sql = format!(
                    "SELECT position FROM evj_events WHERE {condition} ORDER BY position OFFSET $2 LIMIT 1"
                );
                let rows = with_conn(&self.inner, |c| {
                    c.client.query(&sql, &[&key, &to_i64(n)]).map_err(pg_error)
                })?;
                Ok(match rows.first() {
                    Some(r) => (r.get(0), 0),
                    None => (0, n.saturating_add(1)),
                })
            }
        }
    }
}

impl PgSubscription {
    /// Makes the iterator end when no event comes for `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> PgSubscription {
        self.timeout = Some(timeout);
        self
    }

    /// The position of the last event read, delivered or passed over by the filter.
    pub fn position(&self) -> Option<Position> {
        (self.after > 0).then_some(Position(self.after as u64))
    }

    /// The next event, waiting up to `timeout` for one; `Ok(None)` if none came.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<SubscriptionItem>> {
        // A timeout too long to add to the clock waits without end.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(e) = self.ahead.pop_front() {
                return Ok(Some(SubscriptionItem::Event(e)));
            }
            if self.read_page()? {
                continue;
            }
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                return Ok(None);
            }
            let mut notes = self.listener.client.notifications();
            let woken = notes.timeout_iter(left).next().map_err(pg_error)?;
            if woken.is_some() {
                // Every notification waiting says the same: read again.
                while notes.iter().next().map_err(pg_error)?.is_some() {}
            }
        }
    }

    /// The next event if one is there now.
    pub fn try_recv(&mut self) -> Result<Option<SubscriptionItem>> {
        self.recv_timeout(Duration::ZERO)
    }

    /// Reads the next page after `after` into `ahead`; returns whether it found any event.
    fn read_page(&mut self) -> Result<bool> {
        let (sql, key): (&'static str, Option<&str>) = match &self.target {
            Target::All(_) => (
                "SELECT position, stream, event_number, id, event_type, data, metadata, \
                 created_us FROM evj_events WHERE position > $1 ORDER BY position LIMIT $2",
                None,
            ),
            Target::Stream(s) => (
                "SELECT position, stream, event_number, id, event_type, data, metadata, \
                 created_us FROM evj_events WHERE stream = $3 AND position > $1 \
                 ORDER BY position LIMIT $2",
                Some(s),
            ),
            Target::Category(c) => (
                "SELECT position, stream, event_number, id, event_type, data, metadata, \
                 created_us FROM evj_events WHERE category = $3 AND position > $1 \
                 ORDER BY position LIMIT $2",
                Some(c),
            ),
            Target::EventType(t) => (
                "SELECT position, stream, event_number, id, event_type, data, metadata, \
                 created_us FROM evj_events WHERE event_type = $3 AND position > $1 \
                 ORDER BY position LIMIT $2",
                Some(t),
            ),
        };
        let after = self.after;
        let rows = with_conn(&self.inner, |c| {
            let statement = c.prepare(sql)?;
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&after, &PAGE];
            if let Some(k) = &key {
                params.push(k);
            }
            c.client.query(&statement, &params).map_err(pg_error)
        })?;
        if rows.is_empty() {
            return Ok(false);
        }
        let events = events_of(&rows)?;
        for e in events {
            self.after = e.position().0 as i64;
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            let wanted = match &self.target {
                Target::All(Some(f)) => f.matches(e.stream(), e.event_type()),
                Target::Category(c) => category_of(e.stream()) == c,
                _ => true,
            };
            if wanted {
                self.ahead.push_back(e);
            }
        }
        Ok(true)
    }
}

impl Iterator for PgSubscription {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Result<RecordedEvent>> {
        if self.failed {
            return None;
        }
        let timeout = self.timeout.unwrap_or(Duration::MAX);
        loop {
            match self.recv_timeout(timeout) {
                Ok(Some(SubscriptionItem::Event(e))) => return Some(Ok(e)),
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
