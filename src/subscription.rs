//! Catch-up subscriptions: the history of a stream or of `$all`, then live events as they are
//! committed, through one cursor — so nothing is missed or repeated at the switch.
//!
//! A subscription reads the log itself, from where it is, every time: it buffers nothing, a slow
//! one never holds up writers, and one that falls behind simply has more log to read.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::log::reader::{Cursor, LogView};
use crate::store::Shared;
use crate::types::{category_of, Position, RecordedEvent};

/// Wakes subscribers when a batch is committed, or the store closes.
#[derive(Default)]
pub(crate) struct Commits {
    lock: Mutex<()>,
    cv: Condvar,
    /// Subscribers waiting (or about to): commits take the lock only when there are some.
    waiters: AtomicUsize,
    closed: AtomicBool,
    /// Wakers of pending async streams, by stream (a task polling several streams registers
    /// the same waker for each, and dropping one stream must not unregister the others).
    #[cfg(feature = "async")]
    wakers: Mutex<Vec<(u64, std::task::Waker)>>,
    #[cfg(feature = "async")]
    next_stream: std::sync::atomic::AtomicU64,
    /// Whether `wakers` may hold any: commits lock it only then.
    #[cfg(feature = "async")]
    has_wakers: AtomicBool,
}

impl Commits {
    /// Called after a batch is published (and on close).
    pub(crate) fn notify(&self) {
        // Pairs with the fence in `wait`: either the waiter sees what was published, or this
        // sees the waiter.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) > 0 {
            let _guard = self.lock.lock();
            self.cv.notify_all();
        }
        #[cfg(feature = "async")]
        if self.has_wakers.load(Ordering::Relaxed) {
            let wakers = {
                let mut guard = self.wakers.lock();
                self.has_wakers.store(false, Ordering::Relaxed);
                std::mem::take(&mut *guard)
            };
            for (_, w) in wakers {
                w.wake();
            }
        }
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _guard = self.lock.lock();
        self.cv.notify_all();
        #[cfg(feature = "async")]
        for (_, w) in std::mem::take(&mut *self.wakers.lock()) {
            w.wake();
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Waits until `ready()` or the store closes, or `deadline` passes; returns `ready()`.
    fn wait(&self, deadline: Option<Instant>, ready: impl Fn() -> bool) -> bool {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        let mut guard = self.lock.lock();
        let ok = loop {
            if ready() {
                break true;
            }
            if self.is_closed() {
                break false;
            }
            match deadline {
                Some(d) => {
                    if self.cv.wait_until(&mut guard, d).timed_out() {
                        break ready();
                    }
                }
                None => self.cv.wait(&mut guard),
            }
        };
        drop(guard);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        ok
    }

    #[cfg(feature = "async")]
    fn unregister(&self, stream: u64) {
        self.wakers.lock().retain(|(s, _)| *s != stream);
    }

    #[cfg(feature = "async")]
    fn register(&self, stream: u64, waker: &std::task::Waker) {
        let mut wakers = self.wakers.lock();
        match wakers.iter_mut().find(|(s, _)| *s == stream) {
            Some((_, w)) if w.will_wake(waker) => {}
            Some((_, w)) => *w = waker.clone(),
            None => wakers.push((stream, waker.clone())),
        }
        // Before the caller looks at the log again; pairs with the fence in `notify`.
        self.has_wakers.store(true, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::SeqCst);
    }
}

/// Which events of `$all` a subscription or filtered read delivers. Criteria of one kind are
/// alternatives (any prefix); the stream criteria (prefixes and categories) and the event type
/// criteria must both hold when both are given. An empty filter matches everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    stream_prefixes: Vec<String>,
    categories: Vec<String>,
    event_type_prefixes: Vec<String>,
    exclude_system: bool,
    checkpoint_every: u64,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter::new()
    }
}

impl Filter {
    /// Refuses what can never match: a category with a `-` in it.
    pub(crate) fn check(&self) -> Result<()> {
        match self.categories.iter().find(|c| c.contains('-')) {
            Some(c) => Err(Error::InvalidInput(format!(
                "filter category `{c}` cannot match: a category is the part of a stream name \
                 before its first `-` (`{}` for `{c}`)",
                category_of(c)
            ))),
            None => Ok(()),
        }
    }

    /// A filter matching every event, with a checkpoint every 1,000 events passed over.
    pub fn new() -> Filter {
        Filter {
            stream_prefixes: Vec::new(),
            categories: Vec::new(),
            event_type_prefixes: Vec::new(),
            exclude_system: false,
            checkpoint_every: 1_000,
        }
    }

    /// Leaves out events of streams whose names start with `$`: consumer checkpoints, journal
    /// snapshots. A consumer of all of `$all` that saves checkpoints wants this, or it receives
    /// its own checkpoint events.
    pub fn exclude_system_streams(mut self) -> Filter {
        self.exclude_system = true;
        self
    }

    /// Also match streams whose names start with `prefix`.
    pub fn stream_prefix(mut self, prefix: impl Into<String>) -> Filter {
        self.stream_prefixes.push(prefix.into());
        self
    }

    /// Also match streams of `category` (see [`category_of`]).
    pub fn category(mut self, category: impl Into<String>) -> Filter {
        self.categories.push(category.into());
        self
    }

    /// Also match events whose type starts with `prefix`.
    pub fn event_type_prefix(mut self, prefix: impl Into<String>) -> Filter {
        self.event_type_prefixes.push(prefix.into());
        self
    }

    /// A subscription reports a [`SubscriptionItem::Checkpoint`] after this many events passed
    /// over without a match (default 1,000; at least 1).
    pub fn checkpoint_every(mut self, events: u64) -> Filter {
        self.checkpoint_every = events.max(1);
        self
    }

    /// Whether an event of `stream` with `event_type` matches.
    pub fn matches(&self, stream: &str, event_type: &str) -> bool {
        if self.exclude_system && stream.starts_with('$') {
            return false;
        }
        let by_stream = (self.stream_prefixes.is_empty() && self.categories.is_empty())
            || self.stream_prefixes.iter().any(|p| stream.starts_with(p))
            || self.categories.iter().any(|c| category_of(stream) == c);
        let by_type = self.event_type_prefixes.is_empty()
            || self
                .event_type_prefixes
                .iter()
                .any(|p| event_type.starts_with(p));
        by_stream && by_type
    }
}

/// Where a subscription to `$all` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllFrom {
    /// The first event of the log.
    Start,
    /// Only events committed after the subscription is made.
    End,
    /// The events after the event at this position (exclusive, as EventStoreDB does): pass the
    /// `position()` of the last event handled, or a checkpoint's position.
    After(Position),
}

/// Where a subscription to a stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFrom {
    /// Event 0.
    Start,
    /// Only events appended after the subscription is made.
    End,
    /// The events after this event number (exclusive).
    After(u64),
}

/// What a subscription delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionItem {
    /// The next event.
    Event(RecordedEvent),
    /// A filtered subscription passed over events up to (and including) the one at this position
    /// without a match: resume with [`AllFrom::After`] it.
    Checkpoint(Position),
}

enum Target {
    All {
        cursor: Cursor,
        /// Position of the last event passed over (`None`: none yet).
        last: Option<Position>,
        filter: Option<Filter>,
        since_item: u64,
        /// The log as of the last read, renewed when it has nothing more.
        view: LogView,
        /// The visible end when a read last found nothing: new events are past it.
        seen_end: u64,
        /// The retention rules the last reads applied (boxed: a subscription is moved around,
        /// and they are several times its size).
        rules: Option<Box<Rules>>,
    },
    Stream {
        name: String,
        next: u64,
        /// Events read ahead (at most `STREAM_READ_AHEAD`), oldest first, each with the entry
        /// to read from after it.
        ahead: std::collections::VecDeque<(u64, RecordedEvent)>,
    },
}

/// How many events of a stream a subscription reads at a time: one index lookup per batch.
const STREAM_READ_AHEAD: usize = 256;

/// A catch-up subscription: history first, then live events, in order.
///
/// As an [`Iterator`] it yields events, blocking for the next one up to its timeout (see
/// [`with_timeout`](Self::with_timeout); default: without limit) and ending when the timeout
/// passes or the store closes. [`recv_timeout`](Self::recv_timeout) also returns checkpoints.
pub struct Subscription {
    shared: Arc<Shared>,
    target: Target,
    timeout: Option<Duration>,
    failed: bool,
}

impl Subscription {
    pub(crate) fn to_all(
        shared: Arc<Shared>,
        from: AllFrom,
        filter: Option<Filter>,
    ) -> Result<Subscription> {
        let view = shared.log.view();
        let (cursor, last) = match from {
            AllFrom::Start => (view.cursor(Position::START)?, None),
            AllFrom::End => (view.cursor(Position::END)?, None),
            AllFrom::After(p) => {
                let c = view.cursor(p)?;
                // Past the event at `p`, if there is one there (a checkpoint may also be the
                // end of the log).
                match view.next_forward_ref(c)? {
                    Some((e, next)) if e.position() == p => (next, Some(p)),
                    _ => (c, Some(p)),
                }
            }
        };
        Ok(Subscription {
            shared,
            target: Target::All {
                cursor,
                last,
                filter,
                since_item: 0,
                seen_end: 0,
                view,
                rules: None,
            },
            timeout: None,
            failed: false,
        })
    }

    pub(crate) fn to_stream(
        shared: Arc<Shared>,
        stream: &str,
        from: StreamFrom,
    ) -> Result<Subscription> {
        let next = match from {
            StreamFrom::Start => 0,
            StreamFrom::After(n) => n.saturating_add(1),
            StreamFrom::End => shared.stream_len(stream)?.1,
        };
        Ok(Subscription {
            shared,
            target: Target::Stream {
                name: stream.to_string(),
                next,
                ahead: std::collections::VecDeque::new(),
            },
            timeout: None,
            failed: false,
        })
    }

    /// Makes the iterator end when no event comes for `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Subscription {
        self.timeout = Some(timeout);
        self
    }

    /// Where the subscription is: the position of the last event it passed over (delivered or
    /// filtered out), for `$all`; `None` before the first, and for stream subscriptions.
    pub fn position(&self) -> Option<Position> {
        match &self.target {
            Target::All { last, .. } => *last,
            Target::Stream { .. } => None,
        }
    }

    /// The next event or checkpoint, waiting up to `timeout` for one; `Ok(None)` when none came
    /// in time or the store closed.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<SubscriptionItem>> {
        self.recv_until(Some(Instant::now() + timeout))
    }

    /// The next event or checkpoint if one is ready now.
    pub fn try_recv(&mut self) -> Result<Option<SubscriptionItem>> {
        self.poll()
    }

    fn recv_until(&mut self, deadline: Option<Instant>) -> Result<Option<SubscriptionItem>> {
        if self.failed {
            // Nothing will come past a damaged record: wait out the time asked for (or the
            // store's close) without spinning; without a time limit, end at once.
            if deadline.is_some() {
                self.shared.commits.wait(deadline, || false);
            }
            return Ok(None);
        }
        loop {
            if let Some(item) = self.poll()? {
                return Ok(Some(item));
            }
            let shared = self.shared.clone();
            let more = match &self.target {
                // Measured by the visible end, not the cursor: a cursor at the end of a segment
                // followed by an empty one stands before the visible end with nothing to read.
                Target::All { seen_end, .. } => {
                    let seen = *seen_end;
                    shared
                        .commits
                        .wait(deadline, || shared.log.visible() > seen)
                }
                // A stream that cannot be looked up wakes the subscription, whose read then
                // reports why.
                Target::Stream { name, next, .. } => shared.commits.wait(deadline, || {
                    shared.stream_len(name).map_or(true, |(_, len)| len > *next)
                }),
            };
            if !more {
                return Ok(None);
            }
        }
    }

    /// Reads what is there now: the next matching event, or a checkpoint, or `None`.
    fn poll(&mut self) -> Result<Option<SubscriptionItem>> {
        if self.failed {
            return Ok(None);
        }
        let r = match &mut self.target {
            Target::All {
                cursor,
                last,
                filter,
                since_item,
                view,
                seen_end,
                rules,
            } => poll_all(
                &self.shared,
                view,
                seen_end,
                cursor,
                last,
                filter.as_ref(),
                since_item,
                rules,
            ),
            Target::Stream { name, next, ahead } => {
                if ahead.is_empty() {
                    let mut events = match crate::read::StreamEvents::new(
                        &self.shared,
                        name,
                        *next,
                        STREAM_READ_AHEAD,
                        true,
                    ) {
                        Ok(events) => events,
                        Err(e) => return self.fail(e),
                    };
                    // Events the stream's metadata hides are passed over: the entry after the
                    // last one read is where to go on from, whether or not it was delivered.
                    while let Some(e) = events.next() {
                        match e {
                            Ok(e) => ahead.push_back((events.next_entry(), e)),
                            Err(e) if ahead.is_empty() => return self.fail(e),
                            // Reported when the events before it have been delivered.
                            Err(_) => break,
                        }
                    }
                    if ahead.is_empty() {
                        *next = (*next).max(events.next_entry());
                    }
                }
                Ok(ahead.pop_front().map(|(after, e)| {
                    *next = after;
                    SubscriptionItem::Event(e)
                }))
            }
        };
        if r.is_err() {
            // A damaged record is reported once; the subscription cannot go past it.
            self.failed = true;
        }
        r
    }

    fn fail(&mut self, e: Error) -> Result<Option<SubscriptionItem>> {
        self.failed = true;
        Err(e)
    }

    /// A [`futures_core::Stream`] of this subscription's events and checkpoints (feature
    /// `async`). It is woken by commits; it needs no particular runtime.
    #[cfg(feature = "async")]
    #[cfg_attr(docsrs, doc(cfg(feature = "async")))]
    pub fn into_stream(self) -> SubscriptionStream {
        let id = self
            .shared
            .commits
            .next_stream
            .fetch_add(1, Ordering::Relaxed);
        SubscriptionStream { sub: self, id }
    }
}

/// The retention rules a `$all` subscription applies, kept from one read to the next while
/// nothing is committed: made for every read, as they were, the metadata table's look-up and
/// the clock were a fifth of a catch-up's time (one read per event). The clock `max_age` is
/// measured against is still read once per read, when a rule needs it.
struct Rules {
    hider: crate::lifecycle::Hider,
    /// The visible end of the log before they were made. Every change of the rules (metadata,
    /// deletes, a stream's length for `max_count`) is a commit, which moves it.
    visible: u64,
}

/// Reads `$all` from `cursor` for the next event `filter` accepts; passes over the others,
/// reporting a checkpoint every `checkpoint_every` of them.
#[allow(clippy::too_many_arguments)]
fn poll_all(
    shared: &Shared,
    view: &mut LogView,
    seen_end: &mut u64,
    cursor: &mut Cursor,
    last: &mut Option<Position>,
    filter: Option<&Filter>,
    since_item: &mut u64,
    rules: &mut Option<Box<Rules>>,
) -> Result<Option<SubscriptionItem>> {
    let mut renewed = false;
    // Kept rules skip the metadata table's look-up, which failed once the store was handed over
    // to another process: this check does it instead.
    shared.check_index()?;
    let visible = shared.log.visible();
    if rules.as_ref().is_none_or(|r| r.visible != visible) {
        *rules = None;
    }
    let kept = match rules {
        Some(r) => r,
        None => rules.insert(Box::new(Rules {
            hider: crate::lifecycle::Hider::new(shared)?,
            visible,
        })),
    };
    kept.hider.next_read();
    let hider = &mut kept.hider;
    loop {
        // Decoded once; made owned (sharing the map, no copy) only if delivered.
        let step = view.next_forward_if(*cursor, |e| {
            filter.is_none_or(|f| f.matches(e.stream(), e.event_type())) && !hider.hides(shared, e)
        })?;
        let Some((owned, pos, next)) = step else {
            if renewed {
                return Ok(None);
            }
            // The end of this view: look again at the log as it is now, once.
            *view = shared.log.view();
            *seen_end = view.visible();
            renewed = true;
            continue;
        };
        *cursor = next;
        *last = Some(pos);
        match (owned, filter) {
            (Some(e), _) => {
                *since_item = 0;
                return Ok(Some(SubscriptionItem::Event(e)));
            }
            (None, Some(f)) => {
                *since_item += 1;
                if *since_item >= f.checkpoint_every.max(1) {
                    *since_item = 0;
                    return Ok(Some(SubscriptionItem::Checkpoint(pos)));
                }
            }
            (None, None) => {}
        }
    }
}

impl Iterator for Subscription {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Result<RecordedEvent>> {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        loop {
            match self.recv_until(deadline) {
                Ok(Some(SubscriptionItem::Event(e))) => return Some(Ok(e)),
                Ok(Some(SubscriptionItem::Checkpoint(_))) => continue,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = match &self.target {
            Target::All { last, .. } => format!("$all after {last:?}"),
            Target::Stream { name, next, .. } => format!("{name} from {next}"),
        };
        f.debug_struct("Subscription")
            .field("target", &target)
            .finish()
    }
}

/// A subscription as a [`futures_core::Stream`] (feature `async`): items are
/// `Result<SubscriptionItem>`; it ends when the store closes.
#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub struct SubscriptionStream {
    sub: Subscription,
    /// This stream's number among the store's, for its waker's registration.
    id: u64,
}

#[cfg(feature = "async")]
impl Drop for SubscriptionStream {
    fn drop(&mut self) {
        self.sub.shared.commits.unregister(self.id);
    }
}

#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
impl futures_core::Stream for SubscriptionStream {
    type Item = Result<SubscriptionItem>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        if this.sub.failed {
            return Poll::Ready(None);
        }
        match this.sub.poll() {
            Ok(Some(item)) => return Poll::Ready(Some(Ok(item))),
            Err(e) => return Poll::Ready(Some(Err(e))),
            Ok(None) => {}
        }
        // Registered before looking again, so a commit in between wakes this task.
        this.sub.shared.commits.register(this.id, cx.waker());
        match this.sub.poll() {
            Ok(Some(item)) => Poll::Ready(Some(Ok(item))),
            Err(e) => Poll::Ready(Some(Err(e))),
            Ok(None) if this.sub.shared.commits.is_closed() => Poll::Ready(None),
            Ok(None) => Poll::Pending,
        }
    }
}

/// Checks that a consumer name can be used in a checkpoint stream name.
pub(crate) fn checkpoint_stream(consumer: &str) -> Result<String> {
    if consumer.is_empty() {
        return Err(Error::InvalidInput("consumer name is empty".into()));
    }
    Ok(format!(
        "{}{consumer}",
        crate::lifecycle::CHECKPOINT_STREAM_PREFIX
    ))
}
