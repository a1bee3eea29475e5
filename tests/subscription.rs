//! Catch-up subscriptions (`Store::subscribe_to_all`, `Store::subscribe_to_stream`), their
//! filters and checkpoints, durable consumer checkpoints, and the async stream, against real
//! stores in temporary directories.
//!
//! Every blocking wait is bounded, and every test body runs under a watchdog (`bounded`), so a
//! subscription that never returns fails its test instead of hanging the run.

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use eventjournal::{
    category_of, AllFrom, Durability, Error, EventData, ExpectedVersion, Filter, Options, Position,
    RecordedEvent, Store, StreamFrom, StreamWrite, Subscription, SubscriptionItem,
    SubscriptionStream,
};
use futures_core::Stream;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The longest any single wait for an expected item may take.
const WAIT: Duration = Duration::from_secs(5);
/// How long a drain waits for one more item before deciding there is none.
const QUIET: Duration = Duration::from_millis(30);
/// The watchdog limit for one test body.
const TEST_LIMIT: Duration = Duration::from_secs(20);

/// Runs `f` on its own thread and fails (instead of hanging) if it does not finish in
/// `TEST_LIMIT`. A panic in `f` is passed on.
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    bounded_for(TEST_LIMIT, f)
}

fn bounded_for<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(limit) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("test body did not finish within {limit:?}: a wait is not bounded")
        }
    }
}

/// A store without syncs (fast), in `dir`.
fn open_fast(dir: &Path) -> Store {
    Store::open(dir, Options::default().durability(Durability::None)).unwrap()
}

fn ev(event_type: &str, data: impl Into<String>) -> EventData {
    EventData::new(event_type, data.into())
}

fn put(store: &Store, stream: &str, event_type: &str, data: impl Into<String>) -> Position {
    store
        .append(stream, ExpectedVersion::Any, [ev(event_type, data)])
        .unwrap()
        .position
        .unwrap()
}

fn all(store: &Store) -> Vec<RecordedEvent> {
    store
        .read_all_forward(Position::START, usize::MAX)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn stream_events(store: &Store, name: &str) -> Vec<RecordedEvent> {
    store
        .read_stream_forward(name, 0, usize::MAX)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// What identifies an event, printable in a failed comparison.
type Key = (u64, String, u64, String, Vec<u8>);

fn key(e: &RecordedEvent) -> Key {
    (
        e.position().0,
        e.stream().to_string(),
        e.event_number(),
        e.event_type().to_string(),
        e.data().to_vec(),
    )
}

fn keys(events: &[RecordedEvent]) -> Vec<Key> {
    events.iter().map(key).collect()
}

/// Asserts two event sequences are the same events (readable diff first, then full equality).
fn assert_same(got: &[RecordedEvent], want: &[RecordedEvent], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: number of events");
    assert_eq!(keys(got), keys(want), "{what}");
    assert!(got == want, "{what}: records differ");
}

/// The next event (checkpoints skipped), waiting at most `WAIT`.
fn next_event(sub: &mut Subscription) -> RecordedEvent {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.recv_timeout(left).unwrap() {
            Some(SubscriptionItem::Event(e)) => return e,
            Some(SubscriptionItem::Checkpoint(_)) => continue,
            None => panic!("no event within {WAIT:?}"),
        }
    }
}

/// `n` events (checkpoints skipped), each waited for at most `WAIT`.
fn take_events(sub: &mut Subscription, n: usize) -> Vec<RecordedEvent> {
    (0..n).map(|_| next_event(sub)).collect()
}

/// Every item until none comes for `QUIET` (bounded: at most `WAIT` in all).
fn drain_items(sub: &mut Subscription) -> Vec<SubscriptionItem> {
    let deadline = Instant::now() + WAIT;
    let mut out = Vec::new();
    while let Some(item) = sub.recv_timeout(QUIET).unwrap() {
        out.push(item);
        assert!(Instant::now() < deadline, "drain did not end");
    }
    out
}

fn only_events(items: Vec<SubscriptionItem>) -> Vec<RecordedEvent> {
    items
        .into_iter()
        .filter_map(|i| match i {
            SubscriptionItem::Event(e) => Some(e),
            SubscriptionItem::Checkpoint(_) => None,
        })
        .collect()
}

fn drain_events(sub: &mut Subscription) -> Vec<RecordedEvent> {
    only_events(drain_items(sub))
}

/// Every item ready now.
fn try_drain(sub: &mut Subscription) -> Vec<SubscriptionItem> {
    let mut out = Vec::new();
    while let Some(item) = sub.try_recv().unwrap() {
        out.push(item);
        assert!(out.len() < 1_000_000, "try_recv never ran dry");
    }
    out
}

/// The first segment file (base 0: its file offsets are `$all` positions).
fn first_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.into_iter().next().expect("a segment file")
}

/// Memory maps and open file descriptors of this process that refer to files in `dir`.
fn handles_into(dir: &Path) -> usize {
    let dir = dir.canonicalize().unwrap();
    let dir_s = dir.to_string_lossy().to_string();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mapped = maps.lines().filter(|l| l.contains(&dir_s)).count();
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|it| {
            it.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|p| p.starts_with(&dir))
                .count()
        })
        .unwrap_or(0);
    mapped + fds
}

/// Wakes a parked thread, and counts wakes.
struct Signal {
    thread: thread::Thread,
    woken: AtomicBool,
    wakes: AtomicUsize,
}

impl Signal {
    fn new() -> Arc<Signal> {
        Arc::new(Signal {
            thread: thread::current(),
            woken: AtomicBool::new(false),
            wakes: AtomicUsize::new(0),
        })
    }
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.woken.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// Polls `stream` once with `signal`'s waker.
fn poll_once<S: Stream + Unpin>(stream: &mut S, signal: &Arc<Signal>) -> Poll<Option<S::Item>> {
    let waker = Waker::from(signal.clone());
    let mut cx = Context::from_waker(&waker);
    Pin::new(stream).poll_next(&mut cx)
}

/// A tiny `block_on(stream.next())`: polls, and after `Pending` polls again only once woken.
/// `None` if `limit` passes first (the stream was never woken, or kept pending).
fn next_within<S: Stream + Unpin>(
    stream: &mut S,
    signal: &Arc<Signal>,
    limit: Duration,
) -> Option<Option<S::Item>> {
    let deadline = Instant::now() + limit;
    loop {
        signal.woken.store(false, Ordering::SeqCst);
        if let Poll::Ready(item) = poll_once(stream, signal) {
            return Some(item);
        }
        while !signal.woken.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            thread::park_timeout(deadline - now);
        }
    }
}

/// Every item the stream has ready now (until it is pending).
fn stream_ready_items(stream: &mut SubscriptionStream) -> Vec<SubscriptionItem> {
    let signal = Signal::new();
    let mut out = Vec::new();
    loop {
        match poll_once(stream, &signal) {
            Poll::Ready(Some(item)) => out.push(item.unwrap()),
            Poll::Ready(None) => panic!("the stream ended while the store is open"),
            Poll::Pending => return out,
        }
    }
}

/// A mixed history: several categories, types and batch shapes.
fn fixture(store: &Store) {
    let streams = [
        "acct-1",
        "acct-2",
        "account-7",
        "order-1",
        "order-2",
        "order",
        "orders-1",
        "user-a-b",
    ];
    let types = ["Created", "CreatedV2", "Deleted", "Renamed"];
    for i in 0..120usize {
        let s = streams[(i * 7) % streams.len()];
        let t = types[(i * 3) % types.len()];
        if i % 5 == 0 {
            let s2 = streams[(i * 7 + 1) % streams.len()];
            store
                .append_multi(vec![
                    StreamWrite::new(
                        s,
                        ExpectedVersion::Any,
                        vec![ev(t, format!("{i}a")), ev(t, format!("{i}b"))],
                    ),
                    StreamWrite::new(s2, ExpectedVersion::Any, vec![ev(t, format!("{i}c"))]),
                ])
                .unwrap();
        } else {
            put(store, s, t, format!("{i}"));
        }
    }
}

/// What a filtered subscription must deliver over `events`: matching events, and a checkpoint
/// (at the position of the event that completes the count) after every `every` events passed
/// over without an item.
fn model_items(events: &[RecordedEvent], filter: &Filter, every: u64) -> Vec<SubscriptionItem> {
    let mut out = Vec::new();
    let mut since = 0u64;
    for e in events {
        if filter.matches(e.stream(), e.event_type()) {
            since = 0;
            out.push(SubscriptionItem::Event(e.clone()));
        } else {
            since += 1;
            if since >= every {
                since = 0;
                out.push(SubscriptionItem::Checkpoint(e.position()));
            }
        }
    }
    out
}

fn item_keys(items: &[SubscriptionItem]) -> Vec<String> {
    items
        .iter()
        .map(|i| match i {
            SubscriptionItem::Event(e) => format!("E{:?}", key(e)),
            SubscriptionItem::Checkpoint(p) => format!("C{}", p.0),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Catch-up then live
// ---------------------------------------------------------------------------------------------

#[test]
fn all_catch_up_then_live_has_no_gap_and_no_duplicate() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open_fast(dir.path()));
        fixture(&store);
        let history = all(&store).len();
        let mut sub = store.subscribe_to_all(AllFrom::Start, None).unwrap();
        // Part of the history first, then writers start while the rest is being read.
        let mut got = take_events(&mut sub, history / 2);

        let writer = {
            let store = store.clone();
            thread::spawn(move || {
                for i in 0..400usize {
                    if i % 4 == 0 {
                        store
                            .append_multi(vec![
                                StreamWrite::new(
                                    format!("live-{}", i % 3),
                                    ExpectedVersion::Any,
                                    vec![ev("Live", format!("{i}x")), ev("Live", format!("{i}y"))],
                                ),
                                StreamWrite::new(
                                    "other-1",
                                    ExpectedVersion::Any,
                                    vec![ev("Other", format!("{i}"))],
                                ),
                            ])
                            .unwrap();
                    } else {
                        put(&store, &format!("live-{}", i % 3), "Live", format!("{i}"));
                    }
                    if i % 50 == 0 {
                        thread::sleep(Duration::from_millis(2));
                    }
                }
            })
        };
        // 100 batches of 3 events and 300 single appends.
        let total = history + 100 * 3 + 300;
        got.extend(take_events(&mut sub, total - got.len()));
        writer.join().unwrap();
        assert_eq!(
            sub.try_recv().unwrap(),
            None,
            "an event past the last append"
        );

        let committed = all(&store);
        assert_same(&got, &committed, "$all subscription vs read_all_forward");
        assert!(got.windows(2).all(|w| w[0].position() < w[1].position()));
        assert_eq!(sub.position(), Some(committed.last().unwrap().position()));
    });
}

#[test]
fn stream_catch_up_then_live_sees_only_its_stream() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open_fast(dir.path()));
        // Names that share a prefix or a category with the subscribed stream.
        let neighbours = ["order-10", "order-1x", "order", "order-2", "xorder-1"];
        for i in 0..60usize {
            put(&store, "order-1", "Placed", format!("h{i}"));
            put(
                &store,
                neighbours[i % neighbours.len()],
                "Placed",
                format!("n{i}"),
            );
        }
        let mut sub = store
            .subscribe_to_stream("order-1", StreamFrom::Start)
            .unwrap();
        let mut got = take_events(&mut sub, 30);
        let writer = {
            let store = store.clone();
            thread::spawn(move || {
                for i in 0..200usize {
                    if i % 3 == 0 {
                        store
                            .append_multi(vec![
                                StreamWrite::new(
                                    "order-10",
                                    ExpectedVersion::Any,
                                    vec![ev("Placed", format!("m{i}"))],
                                ),
                                StreamWrite::new(
                                    "order-1",
                                    ExpectedVersion::Any,
                                    vec![
                                        ev("Placed", format!("l{i}a")),
                                        ev("Paid", format!("l{i}b")),
                                    ],
                                ),
                            ])
                            .unwrap();
                    } else {
                        put(&store, "order-1", "Placed", format!("l{i}"));
                        put(
                            &store,
                            neighbours[i % neighbours.len()],
                            "Placed",
                            format!("o{i}"),
                        );
                    }
                }
            })
        };
        // 60 history + 67 batches of 2 + 133 singles.
        let total = 60 + 67 * 2 + 133;
        got.extend(take_events(&mut sub, total - got.len()));
        writer.join().unwrap();
        assert_eq!(sub.try_recv().unwrap(), None);
        let committed = stream_events(&store, "order-1");
        assert_same(
            &got,
            &committed,
            "stream subscription vs read_stream_forward",
        );
        assert!(got.iter().all(|e| e.stream() == "order-1"));
        let numbers: Vec<u64> = got.iter().map(|e| e.event_number()).collect();
        assert_eq!(numbers, (0..total as u64).collect::<Vec<_>>());
        assert_eq!(
            sub.position(),
            None,
            "stream subscriptions have no $all position"
        );
    });
}

#[test]
fn catch_up_and_live_across_segment_rolls() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options::default()
            .durability(Durability::None)
            .segment_size(4096);
        let store = Arc::new(Store::open(dir.path(), opts).unwrap());
        let payload = "p".repeat(150);
        for i in 0..100 {
            put(
                &store,
                &format!("acct-{}", i % 3),
                "Deposited",
                format!("{i}{payload}"),
            );
        }
        let segments = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count();
        assert!(
            segments >= 4,
            "the history spans several segments ({segments})"
        );

        let mut all_sub = store.subscribe_to_all(AllFrom::Start, None).unwrap();
        let mut stream_sub = store
            .subscribe_to_stream("acct-1", StreamFrom::Start)
            .unwrap();
        let mut filtered = store
            .subscribe_to_all(
                AllFrom::Start,
                Some(Filter::new().stream_prefix("acct-2").checkpoint_every(5)),
            )
            .unwrap();
        // Catch up completely, so that the next events are live for everyone (some waits end at
        // the end of a segment that the next append seals).
        let mut got_all = take_events(&mut all_sub, 100);
        let mut got_stream = drain_events(&mut stream_sub);
        let mut got_filtered = drain_items(&mut filtered);
        let writer = {
            let store = store.clone();
            let payload = payload.clone();
            thread::spawn(move || {
                for i in 100..250 {
                    put(
                        &store,
                        &format!("acct-{}", i % 3),
                        "Deposited",
                        format!("{i}{payload}"),
                    );
                    if i % 40 == 0 {
                        thread::sleep(Duration::from_millis(5));
                    }
                }
            })
        };
        got_all.extend(take_events(&mut all_sub, 150));
        writer.join().unwrap();
        got_stream.extend(drain_events(&mut stream_sub));
        got_filtered.extend(drain_items(&mut filtered));

        let committed = all(&store);
        assert_same(&got_all, &committed, "$all across segments");
        assert_same(
            &got_stream,
            &stream_events(&store, "acct-1"),
            "stream across segments",
        );
        let want = model_items(&committed, &Filter::new().stream_prefix("acct-2"), 5);
        assert_eq!(item_keys(&got_filtered), item_keys(&want));

        // Starting after the last event of a segment, and after the first of the next.
        let mut boundaries = 0;
        for w in committed.windows(3) {
            if w[0].next_position() == w[1].position() {
                continue;
            }
            boundaries += 1;
            let mut s = store
                .subscribe_to_all(AllFrom::After(w[0].position()), None)
                .unwrap();
            assert_eq!(
                key(&next_event(&mut s)),
                key(&w[1]),
                "after {:?}",
                w[0].position()
            );
            let mut s = store
                .subscribe_to_all(AllFrom::After(w[1].position()), None)
                .unwrap();
            assert_eq!(
                key(&next_event(&mut s)),
                key(&w[2]),
                "after {:?}",
                w[1].position()
            );
        }
        assert!(boundaries >= 4, "segment boundaries: {boundaries}");
    });
}

// ---------------------------------------------------------------------------------------------
// 2. Start points
// ---------------------------------------------------------------------------------------------

#[test]
fn all_from_end_sees_only_later_events() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = open_fast(dir.path());
        fixture(&store);
        let before = all(&store).len();
        let mut sub = store.subscribe_to_all(AllFrom::End, None).unwrap();
        assert_eq!(sub.try_recv().unwrap(), None);
        assert_eq!(sub.recv_timeout(QUIET).unwrap(), None);
        put(&store, "late-1", "Late", "1");
        put(&store, "late-2", "Late", "2");
        let got = drain_events(&mut sub);
        let committed = all(&store);
        assert_same(&got, &committed[before..], "AllFrom::End");
        // An empty store too.
        let dir2 = tempfile::tempdir().unwrap();
        let empty = open_fast(dir2.path());
        let mut sub = empty.subscribe_to_all(AllFrom::End, None).unwrap();
        assert_eq!(sub.try_recv().unwrap(), None);
        put(&empty, "a-1", "A", "x");
        assert_eq!(next_event(&mut sub).data(), b"x");
    });
}

#[test]
fn all_from_after_is_exclusive() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = open_fast(dir.path());
        fixture(&store);
        let committed = all(&store);
        for i in [0, 1, 2, committed.len() / 2, committed.len() - 2] {
            let mut sub = store
                .subscribe_to_all(AllFrom::After(committed[i].position()), None)
                .unwrap();
            assert_eq!(sub.position(), Some(committed[i].position()));
            let got = drain_events(&mut sub);
            assert_same(&got, &committed[i + 1..], &format!("after event {i}"));
        }
        // After the last event: only what comes later.
        let last = committed.last().unwrap().position();
        let mut sub = store.subscribe_to_all(AllFrom::After(last), None).unwrap();
        assert_eq!(sub.try_recv().unwrap(), None);
        let p = put(&store, "late-1", "Late", "1");
        let e = next_event(&mut sub);
        assert_eq!((e.position(), e.stream()), (p, "late-1"));
        // After START is the start; after END is the end.
        let mut sub = store
            .subscribe_to_all(AllFrom::After(Position::START), None)
            .unwrap();
        assert_eq!(key(&next_event(&mut sub)), key(&committed[0]));
        let mut sub = store
            .subscribe_to_all(AllFrom::After(Position::END), None)
            .unwrap();
        assert_eq!(sub.try_recv().unwrap(), None);
        put(&store, "late-2", "Late", "2");
        assert_eq!(next_event(&mut sub).stream(), "late-2");
    });
}

#[test]
fn stream_start_points() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = open_fast(dir.path());
        for i in 0..10 {
            put(&store, "acct-1", "Deposited", format!("{i}"));
            put(&store, "acct-2", "Deposited", format!("{i}"));
        }
        let history = stream_events(&store, "acct-1");
        // After(n) starts at n + 1.
        for n in [0u64, 3, 8] {
            let mut sub = store
                .subscribe_to_stream("acct-1", StreamFrom::After(n))
                .unwrap();
            let got = drain_events(&mut sub);
            assert_same(&got, &history[n as usize + 1..], &format!("After({n})"));
        }
        // After the last event, and End: only later events.
        let mut after_last = store
            .subscribe_to_stream("acct-1", StreamFrom::After(9))
            .unwrap();
        let mut end = store
            .subscribe_to_stream("acct-1", StreamFrom::End)
            .unwrap();
        assert_eq!(after_last.try_recv().unwrap(), None);
        assert_eq!(end.recv_timeout(QUIET).unwrap(), None);
        put(&store, "acct-2", "Deposited", "other");
        put(&store, "acct-1", "Deposited", "ten");
        for sub in [&mut after_last, &mut end] {
            let got = drain_events(sub);
            assert_eq!(keys(&got), keys(&stream_events(&store, "acct-1")[10..]));
        }
        // End of a stream that does not exist yet: its first event.
        let mut fresh = store.subscribe_to_stream("new-1", StreamFrom::End).unwrap();
        assert_eq!(fresh.try_recv().unwrap(), None);
        put(&store, "new-1", "Created", "first");
        let e = next_event(&mut fresh);
        assert_eq!((e.stream(), e.event_number()), ("new-1", 0));
        // After(u64::MAX) does not overflow; it never has anything to deliver.
        let mut far = store
            .subscribe_to_stream("acct-1", StreamFrom::After(u64::MAX))
            .unwrap();
        assert_eq!(far.recv_timeout(QUIET).unwrap(), None);
        // Invalid stream names.
        assert!(matches!(
            store.subscribe_to_stream("", StreamFrom::Start),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            store.subscribe_to_stream("\0c:x", StreamFrom::Start),
            Err(Error::InvalidInput(_))
        ));
    });
}

#[test]
fn all_from_after_an_invalid_position_is_invalid_position() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = open_fast(dir.path());
        fixture(&store);
        let committed = all(&store);
        let e = &committed[5];
        let head = store.head();
        let invalid = [
            Position(e.position().0 + 1),
            Position(e.position().0 + 8),
            Position(e.next_position().0 - 8),
            Position(head.0 + 8),
            Position(head.0 + 4096),
            Position(u64::MAX - 1),
            Position(3),
        ];
        for p in invalid {
            match store.subscribe_to_all(AllFrom::After(p), None) {
                Err(Error::InvalidPosition(q)) => assert_eq!(q, p),
                Err(other) => panic!("After({p:?}): {other:?}"),
                Ok(_) => panic!("After({p:?}) was accepted"),
            }
            match store.subscribe_to_all(AllFrom::After(p), Some(Filter::new().category("x"))) {
                Err(Error::InvalidPosition(_)) => {}
                other => panic!("filtered After({p:?}): {other:?}"),
            }
        }
        // The head itself (the end of the log) is valid.
        let mut sub = store.subscribe_to_all(AllFrom::After(head), None).unwrap();
        assert_eq!(sub.try_recv().unwrap(), None);
    });
}

/// Builds a store in which the payload of one event holds two byte-exact copies of another
/// event's record, at 8-aligned positions; returns the positions of the copies.
fn store_with_records_in_a_payload(dir: &Path) -> (Store, Position, Position) {
    let store = Store::open(dir, Options::default()).unwrap();
    let a = store
        .append("acct-1", ExpectedVersion::Any, [ev("Opened", "genuine")])
        .unwrap()
        .position
        .unwrap();
    let a_event = store.read_event("acct-1", 0).unwrap();
    let len = (a_event.next_position().0 - a.0) as usize;
    let seg = first_segment(dir);
    let bytes = std::fs::read(&seg).unwrap();
    let record = &bytes[a.0 as usize..a.0 as usize + len];
    let mut payload = record.to_vec();
    payload.extend_from_slice(record);
    // Stream name and type of 8 bytes each: the payload starts 56 + 16 = 72 bytes into the
    // record, an 8-aligned offset.
    let b = store
        .append(
            "carrier1",
            ExpectedVersion::Any,
            [EventData::new("Carrier1", payload)],
        )
        .unwrap()
        .position
        .unwrap();
    put(&store, "acct-2", "Opened", "after");
    let fake1 = Position(b.0 + 72);
    let fake2 = Position(fake1.0 + len as u64);
    (store, fake1, fake2)
}

#[test]
fn all_from_after_a_position_inside_a_payload_is_rejected() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let (store, fake1, fake2) = store_with_records_in_a_payload(dir.path());
        // The store's own reads reject the position (Store::all_cursor checks the index).
        assert!(matches!(
            store.read_all_forward(fake1, 10),
            Err(Error::InvalidPosition(_))
        ));
        assert!(matches!(
            store.read_all_forward(fake2, 10),
            Err(Error::InvalidPosition(_))
        ));
        match store.subscribe_to_all(AllFrom::After(fake1), None) {
            Err(Error::InvalidPosition(p)) => assert_eq!(p, fake1),
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(mut sub) => {
                let first = sub.recv_timeout(QUIET);
                panic!(
                    "AllFrom::After({fake1:?}) (inside a payload) was accepted; first item: \
                     {first:?} (a copy of acct-1/0 at {fake2:?} is not an event of the store)"
                );
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// 3. Timeouts, wake-ups and close
// ---------------------------------------------------------------------------------------------

#[test]
fn recv_timeout_returns_none_after_the_timeout() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = open_fast(dir.path());
        put(&store, "acct-1", "Opened", "x");
        let mut all_sub = store.subscribe_to_all(AllFrom::End, None).unwrap();
        let mut stream_sub = store
            .subscribe_to_stream("acct-1", StreamFrom::End)
            .unwrap();
        let mut filtered = store
            .subscribe_to_all(AllFrom::Start, Some(Filter::new().category("nothing")))
            .unwrap();
        for sub in [&mut all_sub, &mut stream_sub, &mut filtered] {
            let t = Instant::now();
            assert_eq!(sub.recv_timeout(Duration::from_millis(300)).unwrap(), None);
            let took = t.elapsed();
            assert!(
                took >= Duration::from_millis(290) && took < Duration::from_secs(3),
                "recv_timeout(300 ms) took {took:?}"
            );
            // A zero timeout is a poll.
            let t = Instant::now();
            assert_eq!(sub.recv_timeout(Duration::ZERO).unwrap(), None);
            assert!(t.elapsed() < Duration::from_secs(1));
        }
    });
}

#[test]
fn iterator_with_timeout_ends() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = open_fast(dir.path());
        fixture(&store);
        let t = Instant::now();
        let got: Vec<RecordedEvent> = store
            .subscribe_to_all(AllFrom::Start, None)
            .unwrap()
            .with_timeout(Duration::from_millis(200))
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(t.elapsed() >= Duration::from_millis(190));
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_same(&got, &all(&store), "iterator over $all");

        let got: Vec<RecordedEvent> = store
            .subscribe_to_stream("order-1", StreamFrom::Start)
            .unwrap()
            .with_timeout(Duration::from_millis(100))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_same(
            &got,
            &stream_events(&store, "order-1"),
            "iterator over a stream",
        );

        // A filtered iterator skips checkpoints and ends too.
        let filter = Filter::new().category("acct").checkpoint_every(1);
        let got: Vec<RecordedEvent> = store
            .subscribe_to_all(AllFrom::Start, Some(filter.clone()))
            .unwrap()
            .with_timeout(Duration::from_millis(100))
            .collect::<Result<_, _>>()
            .unwrap();
        let want: Vec<RecordedEvent> = all(&store)
            .into_iter()
            .filter(|e| filter.matches(e.stream(), e.event_type()))
            .collect();
        assert_same(&got, &want, "filtered iterator");
    });
}

#[test]
fn blocked_recv_wakes_promptly_on_append() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
        // Each made just before its round: made earlier, it would see the previous rounds.
        for label in ["$all", "stream", "filtered"] {
            let mut sub = match label {
                "$all" => store.subscribe_to_all(AllFrom::End, None),
                "stream" => store.subscribe_to_stream("acct-9", StreamFrom::End),
                _ => store.subscribe_to_all(AllFrom::End, Some(Filter::new().category("acct"))),
            }
            .unwrap();
            let writer = {
                let store = store.clone();
                thread::spawn(move || {
                    thread::sleep(Duration::from_millis(100));
                    put(&store, "acct-9", "Deposited", "wake")
                })
            };
            let t = Instant::now();
            let item = sub.recv_timeout(Duration::from_secs(10)).unwrap();
            let took = t.elapsed();
            let p = writer.join().unwrap();
            match item {
                Some(SubscriptionItem::Event(e)) => assert_eq!(e.position(), p, "{label}"),
                other => panic!("{label}: {other:?}"),
            }
            assert!(
                took >= Duration::from_millis(90) && took < Duration::from_secs(5),
                "{label}: woke after {took:?}"
            );
        }
        // A blocked iterator without a timeout wakes too.
        let mut sub = store.subscribe_to_all(AllFrom::End, None).unwrap();
        let writer = {
            let store = store.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(100));
                put(&store, "acct-9", "Deposited", "iter")
            })
        };
        let e = sub.next().unwrap().unwrap();
        assert_eq!(e.position(), writer.join().unwrap());
    });
}

#[test]
fn closing_the_store_ends_blocked_subscribers() {
    bounded(|| {
        for how in ["close", "drop"] {
            for kind in ["all", "stream", "filtered", "iterator"] {
                let dir = tempfile::tempdir().unwrap();
                let store = open_fast(dir.path());
                put(&store, "acct-1", "Opened", "x");
                let sub = match kind {
                    "stream" => store.subscribe_to_stream("acct-1", StreamFrom::End),
                    "filtered" => store.subscribe_to_all(
                        AllFrom::Start,
                        Some(Filter::new().category("nothing").checkpoint_every(1000)),
                    ),
                    _ => store.subscribe_to_all(AllFrom::End, None),
                }
                .unwrap();
                let closer = thread::spawn(move || {
                    thread::sleep(Duration::from_millis(100));
                    if how == "close" {
                        store.close().unwrap();
                    } else {
                        drop(store);
                    }
                });
                // The subscription, alone, blocks on another thread so that a missed wake-up
                // fails here rather than hanging.
                let waiter = thread::spawn(move || {
                    let mut sub = sub;
                    let t = Instant::now();
                    let ended = if kind == "iterator" {
                        sub.next().is_none()
                    } else {
                        sub.recv_timeout(Duration::from_secs(10)).unwrap().is_none()
                    };
                    (ended, t.elapsed(), sub)
                });
                closer.join().unwrap();
                let t = Instant::now();
                while !waiter.is_finished() {
                    assert!(
                        t.elapsed() < Duration::from_secs(5),
                        "{how}/{kind}: a blocked subscriber was not ended by the store closing"
                    );
                    thread::sleep(Duration::from_millis(5));
                }
                let (ended, took, mut sub) = waiter.join().unwrap();
                assert!(ended, "{how}/{kind}: got an item");
                assert!(took < Duration::from_secs(5), "{how}/{kind}: took {took:?}");
                // Closed for good: later calls return at once.
                let t = Instant::now();
                assert_eq!(sub.recv_timeout(Duration::from_secs(10)).unwrap(), None);
                assert!(sub.next().is_none());
                assert!(t.elapsed() < Duration::from_secs(1), "{how}/{kind}");
                drop(sub);
                assert_eq!(
                    handles_into(dir.path()),
                    0,
                    "{how}/{kind}: files still open"
                );
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// 4. Filters and checkpoints
// ---------------------------------------------------------------------------------------------

#[test]
fn category_of_is_the_text_before_the_first_dash() {
    assert_eq!(category_of("account-1"), "account");
    assert_eq!(category_of("account-1-2"), "account");
    assert_eq!(category_of("account"), "account");
    assert_eq!(category_of("-1"), "");
    assert_eq!(category_of("a-"), "a");
    assert_eq!(category_of("$checkpoint-projector"), "$checkpoint");
}

#[test]
fn filter_matches_follows_its_rules() {
    let f = Filter::new();
    assert!(f.matches("anything", "Any"));
    let f = Filter::new().stream_prefix("acc");
    assert!(f.matches("acct-1", "X") && f.matches("account", "X") && !f.matches("xacc", "X"));
    let f = Filter::new().category("acct");
    assert!(f.matches("acct-1", "X") && f.matches("acct", "X") && f.matches("acct-1-2", "X"));
    assert!(!f.matches("acct2-1", "X") && !f.matches("acc-1", "X") && !f.matches("x-acct", "X"));
    let f = Filter::new().event_type_prefix("Crea");
    assert!(f.matches("s", "Created") && !f.matches("s", "Recreated"));
    // Alternatives within a kind: OR.
    let f = Filter::new().category("acct").stream_prefix("ord");
    assert!(f.matches("acct-1", "X") && f.matches("orders-1", "X") && !f.matches("user-1", "X"));
    let f = Filter::new().event_type_prefix("A").event_type_prefix("B");
    assert!(f.matches("s", "Apple") && f.matches("s", "Banana") && !f.matches("s", "Cherry"));
    // Stream criteria AND type criteria.
    let f = Filter::new().category("acct").event_type_prefix("Dep");
    assert!(f.matches("acct-1", "Deposited"));
    assert!(!f.matches("acct-1", "Withdrawn") && !f.matches("user-1", "Deposited"));
}

/// The filters the fixture is subscribed with, and an independent statement of each.
type Expect = fn(&str, &str) -> bool;

fn filter_cases() -> Vec<(&'static str, Filter, Expect)> {
    vec![
        (
            "stream prefix",
            Filter::new().stream_prefix("order"),
            |s, _| s.starts_with("order"),
        ),
        ("category", Filter::new().category("order"), |s, _| {
            s == "order" || s.starts_with("order-")
        }),
        (
            "type prefix",
            Filter::new().event_type_prefix("Created"),
            |_, t| t.starts_with("Created"),
        ),
        (
            "two categories",
            Filter::new().category("acct").category("user"),
            |s, _| s.starts_with("acct-") || s.starts_with("user-"),
        ),
        (
            "prefix or category",
            Filter::new().stream_prefix("orders").category("acct"),
            |s, _| s.starts_with("orders") || s.starts_with("acct-"),
        ),
        (
            "category and type",
            Filter::new().category("order").event_type_prefix("Del"),
            |s, t| (s == "order" || s.starts_with("order-")) && t.starts_with("Del"),
        ),
        (
            "categories and types",
            Filter::new()
                .category("acct")
                .category("account")
                .event_type_prefix("Ren")
                .event_type_prefix("CreatedV"),
            |s, t| {
                (s.starts_with("acct-") || s.starts_with("account-"))
                    && (t == "Renamed" || t == "CreatedV2")
            },
        ),
        ("no match", Filter::new().category("nothing"), |_, _| false),
        ("empty", Filter::new(), |_, _| true),
    ]
}

#[test]
fn filtered_subscriptions_deliver_exactly_the_matching_events() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open_fast(dir.path()));
        fixture(&store);
        let mut subs: Vec<(&str, Subscription, Expect)> = filter_cases()
            .into_iter()
            .map(|(name, f, expect)| {
                (
                    name,
                    store.subscribe_to_all(AllFrom::Start, Some(f)).unwrap(),
                    expect,
                )
            })
            .collect();
        let mut got: Vec<Vec<RecordedEvent>> = subs
            .iter_mut()
            .map(|(_, s, _)| only_events(try_drain(s)))
            .collect();
        // And live.
        fixture(&store);
        for (g, (_, s, _)) in got.iter_mut().zip(subs.iter_mut()) {
            g.extend(drain_events(s));
        }
        let committed = all(&store);
        for ((name, _, expect), g) in subs.iter().zip(&got) {
            let want: Vec<RecordedEvent> = committed
                .iter()
                .filter(|e| expect(e.stream(), e.event_type()))
                .cloned()
                .collect();
            assert_same(g, &want, name);
        }
        // The cases are not trivial: each non-empty filter picks some events, not all.
        for ((name, f, _), g) in filter_cases().iter().zip(&got) {
            if *name != "empty" && *name != "no match" {
                assert!(
                    !g.is_empty() && g.len() < committed.len(),
                    "{name}: {}",
                    g.len()
                );
            }
            let by_matches = committed
                .iter()
                .filter(|e| f.matches(e.stream(), e.event_type()))
                .count();
            assert_eq!(g.len(), by_matches, "{name}");
        }
    });
}

#[test]
fn checkpoints_come_every_n_events_passed_over_and_resume_without_loss() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = open_fast(dir.path());
        for i in 0..100 {
            put(&store, &format!("noise-{}", i % 7), "Tick", format!("{i}"));
        }
        let matching = put(&store, "acct-1", "Deposited", "the one");
        let noise: Vec<RecordedEvent> = all(&store)[..100].to_vec();
        let filter = Filter::new().category("acct").checkpoint_every(10);
        let mut sub = store
            .subscribe_to_all(AllFrom::Start, Some(filter.clone()))
            .unwrap();
        let items = drain_items(&mut sub);
        let checkpoints: Vec<Position> = items
            .iter()
            .filter_map(|i| match i {
                SubscriptionItem::Checkpoint(p) => Some(*p),
                SubscriptionItem::Event(_) => None,
            })
            .collect();
        let want: Vec<Position> = (0..10).map(|k| noise[k * 10 + 9].position()).collect();
        assert_eq!(
            checkpoints, want,
            "a checkpoint at every 10th event passed over"
        );
        assert!(checkpoints.windows(2).all(|w| w[0] < w[1]));
        let real: HashSet<Position> = all(&store).iter().map(|e| e.position()).collect();
        assert!(checkpoints.iter().all(|p| real.contains(p)));
        match items.last() {
            Some(SubscriptionItem::Event(e)) => assert_eq!(e.position(), matching),
            other => panic!("{other:?}"),
        }
        assert_eq!(items.len(), 11);

        // Resuming after any checkpoint continues without missing the matching event; the
        // checkpoints that follow are again every 10 events passed over after it.
        for (k, cp) in checkpoints.iter().enumerate() {
            let mut resumed = store
                .subscribe_to_all(AllFrom::After(*cp), Some(filter.clone()))
                .unwrap();
            let items = drain_items(&mut resumed);
            let events = only_events(items.clone());
            assert_eq!(events.len(), 1, "after checkpoint {k}");
            assert_eq!(events[0].position(), matching);
            assert_eq!(items.len(), 1 + (9 - k), "after checkpoint {k}: {items:?}");
        }
        // A resumed subscription that has caught up gets a later match live, and a subscriber
        // resuming from its last checkpoint mid-way gets it too.
        let mut caught_up = store
            .subscribe_to_all(AllFrom::After(checkpoints[9]), Some(filter.clone()))
            .unwrap();
        assert_eq!(next_event(&mut caught_up).position(), matching);
        let mut partial = store
            .subscribe_to_all(AllFrom::Start, Some(filter.clone()))
            .unwrap();
        let first = partial.recv_timeout(WAIT).unwrap();
        assert_eq!(first, Some(SubscriptionItem::Checkpoint(checkpoints[0])));
        drop(partial);
        for i in 0..25 {
            put(&store, "noise-x", "Tick", format!("late{i}"));
        }
        let later = put(&store, "acct-2", "Deposited", "later");
        assert_eq!(next_event(&mut caught_up).position(), later);
        let mut resumed = store
            .subscribe_to_all(AllFrom::After(checkpoints[0]), Some(filter.clone()))
            .unwrap();
        let events = drain_events(&mut resumed);
        let positions: Vec<Position> = events.iter().map(|e| e.position()).collect();
        assert_eq!(positions, [matching, later]);
    });
}

#[test]
fn filter_default_checkpoints_like_filter_new() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = open_fast(dir.path());
        for i in 0..100 {
            put(&store, "noise-1", "Tick", format!("{i}"));
        }
        put(&store, "acct-1", "Deposited", "match");
        let mut by_new = store
            .subscribe_to_all(AllFrom::Start, Some(Filter::new().category("acct")))
            .unwrap();
        let mut by_default = store
            .subscribe_to_all(AllFrom::Start, Some(Filter::default().category("acct")))
            .unwrap();
        let new_items = drain_items(&mut by_new);
        let default_items = drain_items(&mut by_default);
        assert_eq!(
            new_items.len(),
            1,
            "Filter::new(): no checkpoint within 1,000 events"
        );
        assert_eq!(
            default_items.len(),
            1,
            "Filter::default(): {} items, {} of them checkpoints",
            default_items.len(),
            default_items.len() - 1
        );
    });
}

/// Stream names (several categories, some sharing prefixes) and event types for the property.
const P_STREAMS: [&str; 8] = [
    "acct-1",
    "acct-2",
    "account-9",
    "order-1",
    "order",
    "ord-x-1",
    "user-a-b",
    // A system stream: written through `save_checkpoint`, since applications may not append to
    // names starting with `$`.
    "$checkpoint-sys",
];
const P_TYPES: [&str; 5] = ["Created", "CreatedV2", "Deleted", "Renamed", "Meta"];
const P_PREFIXES: [&str; 6] = ["acc", "order-", "ord", "u", "$", "zz"];
const P_CATEGORIES: [&str; 7] = [
    "acct",
    "account",
    "order",
    "ord",
    "user",
    "$checkpoint",
    "zz",
];
const P_TYPE_PREFIXES: [&str; 6] = ["Cre", "CreatedV", "D", "$", "R", "Q"];

fn arb_filter() -> impl Strategy<Value = (Filter, u64)> {
    (
        proptest::collection::vec(0..P_PREFIXES.len(), 0..3),
        proptest::collection::vec(0..P_CATEGORIES.len(), 0..3),
        proptest::collection::vec(0..P_TYPE_PREFIXES.len(), 0..3),
        1u64..12,
    )
        .prop_map(|(ps, cs, ts, every)| {
            let mut f = Filter::new();
            for p in ps {
                f = f.stream_prefix(P_PREFIXES[p]);
            }
            for c in cs {
                f = f.category(P_CATEGORIES[c]);
            }
            for t in ts {
                f = f.event_type_prefix(P_TYPE_PREFIXES[t]);
            }
            (f.checkpoint_every(every), every)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A filtered subscription delivers what `read_all_forward` filtered with `Filter::matches`
    /// holds, history and live, with checkpoints exactly where the rule puts them.
    #[test]
    fn filtered_subscription_equals_filtered_read(
        events in proptest::collection::vec((0..P_STREAMS.len(), 0..P_TYPES.len(), 1usize..4), 0..50),
        split in 0usize..50,
        (filter, every) in arb_filter(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = open_fast(dir.path());
        let split = split.min(events.len());
        // Each checkpoint under a consumer of its own: a newer checkpoint hides the one it
        // replaces, which a live subscription has delivered but a later read no longer shows.
        let saved = std::cell::Cell::new(0u32);
        let append = |batch: &[(usize, usize, usize)]| {
            for (i, &(s, t, n)) in batch.iter().enumerate() {
                if let Some(consumer) = P_STREAMS[s].strip_prefix("$checkpoint-") {
                    for _ in 0..n {
                        saved.set(saved.get() + 1);
                        let consumer = format!("{consumer}-{}", saved.get());
                        store.save_checkpoint(&consumer, Position::START).unwrap();
                    }
                    continue;
                }
                let evs: Vec<EventData> =
                    (0..n).map(|k| ev(P_TYPES[t], format!("{i}.{k}"))).collect();
                store.append(P_STREAMS[s], ExpectedVersion::Any, evs).unwrap();
            }
        };
        append(&events[..split]);
        let mut sub = store.subscribe_to_all(AllFrom::Start, Some(filter.clone())).unwrap();
        let mut items = try_drain(&mut sub);
        append(&events[split..]);
        items.extend(drain_items(&mut sub));

        let committed = all(&store);
        let want_events: Vec<RecordedEvent> = committed
            .iter()
            .filter(|e| filter.matches(e.stream(), e.event_type()))
            .cloned()
            .collect();
        let got_events = only_events(items.clone());
        prop_assert_eq!(keys(&got_events), keys(&want_events));
        prop_assert!(got_events == want_events);
        prop_assert_eq!(item_keys(&items), item_keys(&model_items(&committed, &filter, every)));
        if let Some(last) = committed.last() {
            prop_assert_eq!(sub.position(), Some(last.position()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Several writers and several subscribers
// ---------------------------------------------------------------------------------------------

#[test]
fn concurrent_writers_and_subscribers_see_exactly_the_committed_sequence() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
        put(&store, "order-1", "Placed", "history");
        put(&store, "acct-1", "Opened", "history");
        let done = Arc::new(AtomicBool::new(false));
        let start = Arc::new(Barrier::new(4 + 3));

        let subscriber = |sub: Subscription| {
            let done = done.clone();
            let start = start.clone();
            thread::spawn(move || {
                let mut sub = sub;
                let mut got = Vec::new();
                start.wait();
                let deadline = Instant::now() + Duration::from_secs(15);
                loop {
                    assert!(Instant::now() < deadline, "subscriber did not finish");
                    let finished = done.load(Ordering::SeqCst);
                    match sub.recv_timeout(Duration::from_millis(50)).unwrap() {
                        Some(SubscriptionItem::Event(e)) => got.push(e),
                        Some(SubscriptionItem::Checkpoint(_)) => {}
                        // Nothing left after the writers had finished: all is delivered.
                        None if finished => return got,
                        None => {}
                    }
                }
            })
        };
        let subs = [
            subscriber(store.subscribe_to_all(AllFrom::Start, None).unwrap()),
            subscriber(
                store
                    .subscribe_to_all(
                        AllFrom::Start,
                        Some(Filter::new().category("order").checkpoint_every(3)),
                    )
                    .unwrap(),
            ),
            subscriber(
                store
                    .subscribe_to_stream("order-1", StreamFrom::Start)
                    .unwrap(),
            ),
        ];
        let writers: Vec<_> = (0..4usize)
            .map(|w| {
                let store = store.clone();
                let start = start.clone();
                thread::spawn(move || {
                    start.wait();
                    for i in 0..150usize {
                        let k = (i + w) % 3;
                        if i % 3 == 0 {
                            store
                                .append_multi(vec![
                                    StreamWrite::new(
                                        format!("order-{k}"),
                                        ExpectedVersion::Any,
                                        vec![
                                            ev("Placed", format!("{w}.{i}a")),
                                            ev("Paid", format!("{w}.{i}b")),
                                        ],
                                    ),
                                    StreamWrite::new(
                                        format!("acct-{k}"),
                                        ExpectedVersion::Any,
                                        vec![ev("Charged", format!("{w}.{i}"))],
                                    ),
                                    StreamWrite::new(
                                        format!("audit-{w}"),
                                        ExpectedVersion::Any,
                                        vec![ev("Logged", format!("{w}.{i}"))],
                                    ),
                                ])
                                .unwrap();
                        } else {
                            let stream = match i % 3 {
                                1 => format!("order-{k}"),
                                _ => format!("acct-{k}"),
                            };
                            put(&store, &stream, "Single", format!("{w}.{i}"));
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
        let [all_sub, category_sub, stream_sub] = subs.map(|s| s.join().unwrap());

        let committed = all(&store);
        assert_eq!(committed.len(), 2 + 4 * (50 * 4 + 100));
        assert_same(&all_sub, &committed, "$all subscriber");
        let orders: Vec<RecordedEvent> = committed
            .iter()
            .filter(|e| category_of(e.stream()) == "order")
            .cloned()
            .collect();
        assert_same(&category_sub, &orders, "category subscriber");
        assert_same(
            &stream_sub,
            &stream_events(&store, "order-1"),
            "stream subscriber",
        );
    });
}

// ---------------------------------------------------------------------------------------------
// 6. Slow consumers
// ---------------------------------------------------------------------------------------------

#[test]
fn a_slow_consumer_does_not_block_writers_and_catches_up() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open_fast(dir.path()));
        put(&store, "first-1", "First", "0");
        let mut sub = store.subscribe_to_all(AllFrom::Start, None).unwrap();
        let mut stream_sub = store.subscribe_to_stream("w-0", StreamFrom::Start).unwrap();
        // It reads one event, then sleeps until the writers are done.
        let first = next_event(&mut sub);
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let consumer = thread::spawn(move || {
            go_rx
                .recv_timeout(Duration::from_secs(15))
                .expect("writers did not finish");
            let t = Instant::now();
            let mut got = vec![first];
            while let Some(item) = sub.recv_timeout(Duration::from_millis(200)).unwrap() {
                if let SubscriptionItem::Event(e) = item {
                    got.push(e);
                }
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "catching up is too slow"
                );
            }
            let got_stream = drain_events(&mut stream_sub);
            (got, got_stream)
        });
        let t = Instant::now();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let store = store.clone();
                thread::spawn(move || {
                    for i in 0..5_000 {
                        put(&store, &format!("w-{w}"), "Tick", format!("{w}.{i}"));
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let took = t.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "20,000 appends took {took:?} with an idle subscriber"
        );
        assert!(!consumer.is_finished());
        go_tx.send(()).unwrap();
        let (got, got_stream) = consumer.join().unwrap();
        let committed = all(&store);
        assert_eq!(committed.len(), 20_001);
        assert_same(&got, &committed, "slow $all consumer");
        assert_same(
            &got_stream,
            &stream_events(&store, "w-0"),
            "slow stream consumer",
        );
    });
}

// ---------------------------------------------------------------------------------------------
// 7. Durable checkpoints
// ---------------------------------------------------------------------------------------------

#[test]
fn checkpoints_survive_reopen_and_resuming_misses_nothing() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        for i in 0..30 {
            put(
                &store,
                &format!("acct-{}", i % 4),
                "Deposited",
                format!("{i}"),
            );
        }
        let mut sub = store.subscribe_to_all(AllFrom::Start, None).unwrap();
        let handled = take_events(&mut sub, 12);
        store
            .save_checkpoint("projector", handled[4].position())
            .unwrap();
        store
            .save_checkpoint("projector", handled[11].position())
            .unwrap();
        store
            .save_checkpoint("other", handled[2].position())
            .unwrap();
        assert_eq!(
            store.load_checkpoint("projector").unwrap(),
            Some(handled[11].position()),
            "the last save wins"
        );
        drop(sub);
        store.close().unwrap();

        let store = Store::open(dir.path(), Options::default()).unwrap();
        let loaded = store.load_checkpoint("projector").unwrap();
        assert_eq!(loaded, Some(handled[11].position()));
        assert_eq!(
            store.load_checkpoint("other").unwrap(),
            Some(handled[2].position())
        );
        for i in 30..40 {
            put(
                &store,
                &format!("acct-{}", i % 4),
                "Deposited",
                format!("{i}"),
            );
        }
        let mut resumed = store
            .subscribe_to_all(AllFrom::After(loaded.unwrap()), None)
            .unwrap();
        let got = drain_events(&mut resumed);
        let want: Vec<RecordedEvent> = all(&store)
            .into_iter()
            .filter(|e| e.position() > loaded.unwrap())
            .collect();
        assert_same(&got, &want, "resumed after the loaded checkpoint");
        // Events 12..40 of the accounts are all there (the checkpoint events are in $all too).
        let datas: Vec<String> = got
            .iter()
            .filter(|e| e.stream().starts_with("acct-"))
            .map(|e| String::from_utf8(e.data().to_vec()).unwrap())
            .collect();
        assert_eq!(datas, (12..40).map(|i| i.to_string()).collect::<Vec<_>>());
        // A filtered resume sees exactly the matching events after it.
        let filter = Filter::new().category("acct");
        let mut resumed = store
            .subscribe_to_all(AllFrom::After(loaded.unwrap()), Some(filter.clone()))
            .unwrap();
        let got = drain_events(&mut resumed);
        let want: Vec<RecordedEvent> = want
            .into_iter()
            .filter(|e| filter.matches(e.stream(), e.event_type()))
            .collect();
        assert_same(&got, &want, "filtered resume");
        store.close().unwrap();
    });
}

#[test]
fn load_checkpoint_of_unknown_consumer_and_invalid_names() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = open_fast(dir.path());
        assert_eq!(store.load_checkpoint("nobody").unwrap(), None);
        put(&store, "acct-1", "Opened", "x");
        assert_eq!(store.load_checkpoint("nobody").unwrap(), None);
        assert!(matches!(
            store.save_checkpoint("", Position(64)),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            store.load_checkpoint(""),
            Err(Error::InvalidInput(_))
        ));
        let long = "x".repeat(eventjournal::MAX_STREAM_NAME_LEN);
        assert!(matches!(
            store.save_checkpoint(&long, Position(64)),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            store.load_checkpoint(&long),
            Err(Error::InvalidInput(_))
        ));
        // Nothing was written by the failed saves.
        assert_eq!(all(&store).len(), 1);
        // Names are distinct consumers.
        store.save_checkpoint("a", Position(64)).unwrap();
        assert_eq!(store.load_checkpoint("a").unwrap(), Some(Position(64)));
        assert_eq!(store.load_checkpoint("a-").unwrap(), None);
        assert_eq!(store.load_checkpoint("A").unwrap(), None);
    });
}

// ---------------------------------------------------------------------------------------------
// 8. Dropped subscriptions, and subscriptions that outlive the store
// ---------------------------------------------------------------------------------------------

#[test]
fn a_thousand_dropped_subscriptions_leak_nothing() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open_fast(dir.path()));
        fixture(&store);
        let open_handles = handles_into(dir.path());
        for i in 0..1_000usize {
            match i % 6 {
                0 => {
                    let mut s = store.subscribe_to_all(AllFrom::Start, None).unwrap();
                    let _ = take_events(&mut s, 3);
                }
                1 => {
                    let mut s = store
                        .subscribe_to_stream("order-1", StreamFrom::Start)
                        .unwrap();
                    assert!(s.next().unwrap().is_ok());
                }
                2 => {
                    let mut s = store.subscribe_to_all(AllFrom::End, None).unwrap();
                    assert_eq!(s.recv_timeout(Duration::from_millis(1)).unwrap(), None);
                }
                3 => {
                    let f = Filter::new().category("acct").checkpoint_every(2);
                    let s = store
                        .subscribe_to_all(AllFrom::Start, Some(f))
                        .unwrap()
                        .with_timeout(Duration::from_millis(1));
                    assert!(s.count() > 0);
                }
                4 => {
                    let mut s = store
                        .subscribe_to_stream("order-1", StreamFrom::End)
                        .unwrap()
                        .with_timeout(Duration::from_millis(1));
                    assert!(s.next().is_none());
                }
                _ => {
                    // Never polled at all; and an async one left pending.
                    drop(store.subscribe_to_all(AllFrom::Start, None).unwrap());
                    let mut st = store
                        .subscribe_to_stream("none-1", StreamFrom::Start)
                        .unwrap()
                        .into_stream();
                    assert!(poll_once(&mut st, &Signal::new()).is_pending());
                }
            }
        }
        assert_eq!(
            handles_into(dir.path()),
            open_handles,
            "handles held by dropped subscriptions"
        );
        // Appends and new subscriptions are unaffected.
        let before = all(&store).len();
        let t = Instant::now();
        for i in 0..100 {
            put(&store, "after-1", "After", format!("{i}"));
        }
        assert!(t.elapsed() < Duration::from_secs(5));
        let mut s = store
            .subscribe_to_stream("after-1", StreamFrom::Start)
            .unwrap();
        assert_eq!(drain_events(&mut s).len(), 100);
        drop(s);
        assert_eq!(all(&store).len(), before + 100);
        // The store closes cleanly, releases every file, and reopens.
        let store = Arc::try_unwrap(store)
            .ok()
            .expect("no other handle on the store");
        store.close().unwrap();
        // A closed handle keeps its maps (for what it read before) until it is dropped.
        drop(store);
        assert_eq!(handles_into(dir.path()), 0, "files still open after close");
        let store = open_fast(dir.path());
        assert_eq!(all(&store).len(), before + 100);
        store.close().unwrap();
    });
}

#[test]
fn a_subscription_outliving_close_ends_and_does_not_hold_the_store() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = open_fast(dir.path());
        for i in 0..10 {
            put(&store, "acct-1", "Deposited", format!("{i}"));
        }
        let history = all(&store);
        let mut all_sub = store.subscribe_to_all(AllFrom::Start, None).unwrap();
        let mut stream_sub = store
            .subscribe_to_stream("acct-1", StreamFrom::Start)
            .unwrap();
        let mut iter_sub = store.subscribe_to_all(AllFrom::End, None).unwrap();
        let mut async_sub = store
            .subscribe_to_all(AllFrom::End, None)
            .unwrap()
            .into_stream();
        assert!(poll_once(&mut async_sub, &Signal::new()).is_pending());
        let read = take_events(&mut all_sub, 3);
        assert_same(&read, &history[..3], "before close");
        store.close().unwrap();

        // The directory is free although the subscriptions live on.
        let reopened = open_fast(dir.path());
        put(&reopened, "acct-1", "Deposited", "after reopen");

        // Each old subscription ends promptly, without panicking, having delivered at most the
        // rest of the history it had (in order), never what the new store appended.
        for (label, sub, done) in [
            ("$all", &mut all_sub, 3usize),
            ("stream", &mut stream_sub, 0),
        ] {
            let t = Instant::now();
            let mut got = Vec::new();
            while let Some(item) = sub.recv_timeout(Duration::from_secs(10)).unwrap() {
                match item {
                    SubscriptionItem::Event(e) => got.push(e),
                    other => panic!("{label}: {other:?}"),
                }
                assert!(got.len() <= history.len(), "{label}: too many events");
            }
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "{label}: {:?}",
                t.elapsed()
            );
            assert_same(&got, &history[done..done + got.len()], label);
        }
        let t = Instant::now();
        assert!(iter_sub.next().is_none());
        assert!(t.elapsed() < Duration::from_secs(2));
        let signal = Signal::new();
        match next_within(&mut async_sub, &signal, Duration::from_secs(2)) {
            Some(None) => {}
            other => panic!("async stream after close: {other:?}"),
        }
        // Events share the map of their segment: these keep the old store's segment mapped.
        drop((all_sub, stream_sub, iter_sub, async_sub, history, read));
        // So does the closed handle itself, until it is dropped.
        drop(store);
        // Only the new store's files are open.
        let new_handles = handles_into(dir.path());
        reopened.close().unwrap();
        drop(reopened);
        assert_eq!(handles_into(dir.path()), 0);
        assert!(new_handles > 0);
        let store = open_fast(dir.path());
        assert_eq!(all(&store).len(), 11);
    });
}

// ---------------------------------------------------------------------------------------------
// 9. The async stream
// ---------------------------------------------------------------------------------------------

#[test]
fn into_stream_yields_what_the_blocking_api_does() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = open_fast(dir.path());
        fixture(&store);
        let make = |label: &str| match label {
            "$all" => store.subscribe_to_all(AllFrom::Start, None).unwrap(),
            "filtered" => store
                .subscribe_to_all(
                    AllFrom::Start,
                    Some(Filter::new().category("order").checkpoint_every(4)),
                )
                .unwrap(),
            _ => store
                .subscribe_to_stream("acct-1", StreamFrom::Start)
                .unwrap(),
        };
        for label in ["$all", "filtered", "stream"] {
            let mut blocking = make(label);
            let mut stream = make(label).into_stream();
            let mut want = try_drain(&mut blocking);
            let mut got = stream_ready_items(&mut stream);
            assert!(!want.is_empty(), "{label}");
            // Live events too.
            for i in 0..30 {
                put(
                    &store,
                    ["acct-1", "order-3", "noise-1"][i % 3],
                    "Live",
                    format!("{i}"),
                );
            }
            want.extend(try_drain(&mut blocking));
            got.extend(stream_ready_items(&mut stream));
            assert_eq!(item_keys(&got), item_keys(&want), "{label}");
            assert!(got == want, "{label}");
        }
    });
}

#[test]
fn a_pending_stream_is_woken_by_a_later_append() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
        put(&store, "acct-1", "Opened", "x");
        for label in ["$all", "stream", "filtered"] {
            let sub = match label {
                "$all" => store.subscribe_to_all(AllFrom::End, None),
                "stream" => store.subscribe_to_stream("acct-1", StreamFrom::End),
                _ => store.subscribe_to_all(AllFrom::End, Some(Filter::new().category("acct"))),
            }
            .unwrap();
            let mut stream = sub.into_stream();
            let signal = Signal::new();
            assert!(poll_once(&mut stream, &signal).is_pending(), "{label}");
            let writer = {
                let store = store.clone();
                thread::spawn(move || {
                    thread::sleep(Duration::from_millis(100));
                    // An append to another category first: the filtered stream may be woken
                    // and find nothing, and must still be woken by the next one.
                    put(&store, "noise-1", "Tick", "n");
                    thread::sleep(Duration::from_millis(20));
                    put(&store, "acct-1", "Deposited", "wake")
                })
            };
            let t = Instant::now();
            let item = loop {
                match next_within(&mut stream, &signal, Duration::from_secs(5)) {
                    Some(Some(Ok(SubscriptionItem::Event(e)))) if e.stream() == "acct-1" => {
                        break e
                    }
                    Some(Some(Ok(_))) => continue,
                    other => panic!("{label}: {other:?} after {:?}", t.elapsed()),
                }
            };
            let p = writer.join().unwrap();
            assert_eq!(item.position(), p, "{label}");
            assert!(t.elapsed() < Duration::from_secs(5), "{label}");
            assert!(
                signal.wakes.load(Ordering::SeqCst) >= 1,
                "{label}: never woken"
            );
        }
        // Closing the store wakes a pending stream, which ends.
        let mut stream = store
            .subscribe_to_all(AllFrom::End, None)
            .unwrap()
            .into_stream();
        let signal = Signal::new();
        assert!(poll_once(&mut stream, &signal).is_pending());
        let store = Arc::try_unwrap(store).ok().unwrap();
        let closer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            store.close().unwrap();
        });
        match next_within(&mut stream, &signal, Duration::from_secs(5)) {
            Some(None) => {}
            other => panic!("after close: {other:?}"),
        }
        closer.join().unwrap();
    });
}

#[test]
fn many_pending_streams_are_all_woken() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open_fast(dir.path()));
        let mut streams: Vec<(SubscriptionStream, Arc<Signal>)> = (0..16)
            .map(|i| {
                let sub = if i % 2 == 0 {
                    store.subscribe_to_all(AllFrom::End, None).unwrap()
                } else {
                    store
                        .subscribe_to_stream("acct-1", StreamFrom::End)
                        .unwrap()
                };
                (sub.into_stream(), Signal::new())
            })
            .collect();
        // All polled from this thread: the wakers unpark it; each has its own flag.
        for (s, sig) in &mut streams {
            assert!(poll_once(s, sig).is_pending());
        }
        let p = put(&store, "acct-1", "Deposited", "one");
        for (i, (s, sig)) in streams.iter_mut().enumerate() {
            let deadline = Instant::now() + WAIT;
            while !sig.woken.load(Ordering::SeqCst) {
                assert!(Instant::now() < deadline, "stream {i} was not woken");
                thread::park_timeout(Duration::from_millis(10));
            }
            match poll_once(s, sig) {
                Poll::Ready(Some(Ok(SubscriptionItem::Event(e)))) => assert_eq!(e.position(), p),
                other => panic!("stream {i}: {other:?}"),
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Damaged records
// ---------------------------------------------------------------------------------------------

/// A store whose second event (of three, in `acct-1`) has a damaged payload byte.
fn store_with_a_damaged_record(dir: &Path) -> Store {
    let store = Store::open(dir, Options::default()).unwrap();
    for i in 0..3 {
        put(&store, "acct-1", "Deposited", format!("payload-{i}"));
    }
    let e = store.read_event("acct-1", 1).unwrap();
    // The payload starts after the 56-byte header, the stream name and the type.
    let at = e.position().0 + 56 + "acct-1".len() as u64 + "Deposited".len() as u64;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(first_segment(dir))
        .unwrap();
    f.write_all_at(b"X", at).unwrap();
    store
}

/// Runs `recv_timeout(300 ms)` on another thread; whether it came back within 3 s.
fn recv_returns_in_time(mut sub: Subscription) -> bool {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let r = sub.recv_timeout(Duration::from_millis(300));
        let _ = tx.send(format!("{r:?}"));
        // Kept alive until the result is out.
        drop(sub);
    });
    rx.recv_timeout(Duration::from_secs(3)).is_ok()
}

#[test]
fn a_damaged_record_is_reported_to_subscribers() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_a_damaged_record(dir.path());
        let mut sub = store.subscribe_to_all(AllFrom::Start, None).unwrap();
        assert_eq!(next_event(&mut sub).data(), b"payload-0");
        assert!(matches!(sub.recv_timeout(WAIT), Err(Error::Corrupt { .. })));
        let mut sub = store
            .subscribe_to_stream("acct-1", StreamFrom::Start)
            .unwrap();
        assert_eq!(next_event(&mut sub).data(), b"payload-0");
        assert!(matches!(sub.recv_timeout(WAIT), Err(Error::Corrupt { .. })));
        let mut stream = store
            .subscribe_to_all(AllFrom::Start, None)
            .unwrap()
            .into_stream();
        let signal = Signal::new();
        assert!(matches!(
            poll_once(&mut stream, &signal),
            Poll::Ready(Some(Ok(SubscriptionItem::Event(_))))
        ));
        assert!(matches!(
            poll_once(&mut stream, &signal),
            Poll::Ready(Some(Err(Error::Corrupt { .. })))
        ));
    });
}

#[test]
fn recv_timeout_after_a_damaged_record_returns_in_time() {
    // The spinning threads of a failure are left behind; the test fails within seconds.
    bounded_for(Duration::from_secs(15), || {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_a_damaged_record(dir.path());
        let mut all_sub = store.subscribe_to_all(AllFrom::Start, None).unwrap();
        let _ = next_event(&mut all_sub);
        assert!(all_sub.recv_timeout(WAIT).is_err());
        let mut stream_sub = store
            .subscribe_to_stream("acct-1", StreamFrom::Start)
            .unwrap();
        let _ = next_event(&mut stream_sub);
        assert!(stream_sub.recv_timeout(WAIT).is_err());
        let all_ok = recv_returns_in_time(all_sub);
        let stream_ok = recv_returns_in_time(stream_sub);
        assert!(
            all_ok && stream_ok,
            "recv_timeout(300 ms) after the error did not return within 3 s \
             ($all: {all_ok}, stream: {stream_ok})"
        );
        drop(store);
    });
}

/// Polls `n` streams (each with its own waker) until pending, then drops them; returns the
/// wakers, to see who still holds them.
fn dropped_pending_streams(store: &Store, n: usize) -> Vec<Arc<Signal>> {
    (0..n)
        .map(|i| {
            let sub = if i % 2 == 0 {
                store.subscribe_to_all(AllFrom::End, None).unwrap()
            } else {
                store
                    .subscribe_to_stream("acct-1", StreamFrom::End)
                    .unwrap()
            };
            let mut stream = sub.into_stream();
            let signal = Signal::new();
            assert!(poll_once(&mut stream, &signal).is_pending());
            drop(stream);
            signal
        })
        .collect()
}

fn still_held(signals: &[Arc<Signal>]) -> usize {
    signals.iter().filter(|s| Arc::strong_count(s) > 1).count()
}

#[test]
fn wakers_of_dropped_streams_are_released_by_the_next_commit() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = open_fast(dir.path());
        put(&store, "acct-1", "Opened", "x");
        let signals = dropped_pending_streams(&store, 200);
        put(&store, "acct-1", "Deposited", "y");
        assert_eq!(still_held(&signals), 0);
    });
}

#[test]
fn dropping_a_pending_stream_releases_its_waker() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = open_fast(dir.path());
        put(&store, "acct-1", "Opened", "x");
        let signals = dropped_pending_streams(&store, 1_000);
        assert_eq!(
            still_held(&signals),
            0,
            "wakers of dropped streams still held by the store"
        );
    });
}

/// A consumer of all of `$all` that saves checkpoints, with `exclude_system_streams`, never
/// receives its own checkpoint events (nor journal snapshots).
#[test]
fn excluding_system_streams_leaves_out_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().durability(Durability::None)).unwrap();
    let mut sub = store
        .subscribe_to_all(AllFrom::Start, Some(Filter::new().exclude_system_streams()))
        .unwrap();
    for i in 0..5u8 {
        store
            .append(
                "account-1",
                ExpectedVersion::Any,
                [EventData::new("Deposited", vec![i])],
            )
            .unwrap();
    }
    let mut seen = Vec::new();
    while let Some(item) = sub
        .recv_timeout(std::time::Duration::from_millis(100))
        .unwrap()
    {
        if let SubscriptionItem::Event(e) = item {
            store.save_checkpoint("projector", e.position()).unwrap();
            seen.push(e.stream().to_string());
        }
    }
    assert_eq!(seen, vec!["account-1"; 5]);
    assert!(store
        .stream_version("$checkpoint-projector")
        .unwrap()
        .is_some());
    assert!(Filter::new()
        .exclude_system_streams()
        .matches("account-1", "T"));
    assert!(!Filter::new()
        .exclude_system_streams()
        .matches("$snapshot-account-1", "T"));
}

/// The blocking iterator without a time limit ends after reporting a damaged record, rather than
/// waiting for the store to close.
#[test]
fn the_iterator_ends_after_an_error_without_a_timeout() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_a_damaged_record(dir.path());
        let mut sub = store.subscribe_to_all(AllFrom::Start, None).unwrap();
        assert!(matches!(sub.next(), Some(Ok(_))));
        assert!(matches!(sub.next(), Some(Err(Error::Corrupt { .. }))));
        assert!(sub.next().is_none());
    });
}

/// One task polling two streams registers one waker for both; dropping one of them leaves the
/// other's registration in place, so the next commit still wakes the task.
#[test]
fn dropping_one_of_two_streams_of_a_task_keeps_the_other_woken() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = open_fast(dir.path());
        let signal = Signal::new();
        let mut b = store
            .subscribe_to_all(AllFrom::End, None)
            .unwrap()
            .into_stream();
        let mut a = store
            .subscribe_to_all(AllFrom::End, None)
            .unwrap()
            .into_stream();
        assert!(poll_once(&mut b, &signal).is_pending());
        assert!(poll_once(&mut a, &signal).is_pending());
        drop(a);
        signal.woken.store(false, Ordering::SeqCst);
        put(&store, "s-1", "T", "x");
        assert!(
            signal.woken.load(Ordering::SeqCst),
            "the task was not woken"
        );
        assert!(matches!(
            poll_once(&mut b, &signal),
            Poll::Ready(Some(Ok(SubscriptionItem::Event(_))))
        ));
    });
}

/// When the newest segment is empty (a torn first batch cut after a crash right after a roll),
/// a caught-up `$all` subscriber still waits out its timeout instead of spinning.
#[test]
fn a_caught_up_subscriber_before_an_empty_newest_segment_waits() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options::default()
            .durability(Durability::None)
            .segment_size(4096);
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        for i in 0..40 {
            put(&store, "s-1", "T", format!("{i:0>200}"));
        }
        store.close().unwrap();
        let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segments.sort();
        assert!(segments.len() >= 2);
        // The newest segment loses its records: only its header stays.
        let newest = std::fs::OpenOptions::new()
            .write(true)
            .open(segments.last().unwrap())
            .unwrap();
        newest.write_all_at(&[0u8; 4096 - 64], 64).unwrap();
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "idx") {
                std::fs::remove_file(p).unwrap();
            }
        }
        let store = Store::open(dir.path(), opts).unwrap();
        let total = all(&store).len();
        let mut sub = store.subscribe_to_all(AllFrom::Start, None).unwrap();
        assert_eq!(take_events(&mut sub, total).len(), total);
        let start = Instant::now();
        assert_eq!(sub.recv_timeout(Duration::from_millis(300)).unwrap(), None);
        assert!(start.elapsed() < Duration::from_secs(5));
        // And it still follows new appends.
        put(&store, "s-1", "T", "after");
        assert!(matches!(
            sub.recv_timeout(Duration::from_secs(5)).unwrap(),
            Some(SubscriptionItem::Event(e)) if e.data() == b"after"
        ));
    });
}

/// `subscribe_from_checkpoint` resumes a consumer after a reopen exactly after its checkpoint,
/// and from the start for a consumer without one.
#[test]
fn a_consumer_resumes_from_its_checkpoint_after_a_reopen() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let filter = Filter::new().exclude_system_streams();
        let store = open_fast(dir.path());
        for i in 0..20 {
            put(&store, "acct-1", "T", format!("{i}"));
        }
        let mut sub = store
            .subscribe_from_checkpoint("proj", Some(filter.clone()))
            .unwrap();
        for _ in 0..8 {
            let e = next_event(&mut sub);
            store.save_checkpoint("proj", e.position()).unwrap();
        }
        drop(sub);
        store.close().unwrap();

        let store = open_fast(dir.path());
        let mut sub = store
            .subscribe_from_checkpoint("proj", Some(filter.clone()))
            .unwrap();
        let rest: Vec<String> = take_events(&mut sub, 12)
            .iter()
            .map(|e| String::from_utf8(e.data().to_vec()).unwrap())
            .collect();
        assert_eq!(rest, (8..20).map(|i| i.to_string()).collect::<Vec<_>>());
        assert!(sub.try_recv().unwrap().is_none());
        let mut fresh = store
            .subscribe_from_checkpoint("other", Some(filter))
            .unwrap();
        assert_eq!(take_events(&mut fresh, 20).len(), 20);
    });
}
