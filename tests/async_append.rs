//! Async appends (feature `async`): on a tokio runtime, without any runtime, cancelled, mixed
//! with blocking appenders, racing `close`, and through `Journaled::confirm_events_async`.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use common::*;
use eventjournal::journal::{
    Backend, Journal, JournalEvent, JournalState, Journaled, Rejected, StoredEvent,
};
use eventjournal::*;
use serde::{Deserialize, Serialize};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn expected_after(acked: u64) -> ExpectedVersion {
    match acked {
        0 => ExpectedVersion::NoStream,
        n => ExpectedVersion::Exact(n - 1),
    }
}

#[test]
fn many_tasks_on_two_workers_append_durably() {
    const TASKS: usize = 200;
    const EACH: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
    runtime().block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    let name = format!("task-{t}");
                    let mut positions = Vec::new();
                    for i in 0..EACH {
                        let r = store
                            .append_async(&name, expected_after(i as u64), events(&name, i, 1))
                            .await
                            .unwrap();
                        assert_eq!(r.version, Some(i as u64));
                        positions.push(r.position.unwrap());
                    }
                    positions
                })
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        for t in tasks {
            for p in t.await.unwrap() {
                assert!(seen.insert(p), "position {p:?} handed out twice");
            }
        }
    });
    store.close().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    for t in 0..TASKS {
        let name = format!("task-{t}");
        let want: Vec<String> = (0..EACH).map(|i| format!("{name}:{i}")).collect();
        assert_eq!(datas(&store, &name), want);
    }
    assert_eq!(all(&store).len(), TASKS * EACH);
}

/// Wakes a parked thread.
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// The smallest executor: polls `futures` on this thread until all are done, parking in between.
fn block_on_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let waker: Waker = Arc::new(ThreadWaker(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    loop {
        for (f, o) in futures.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                if let Poll::Ready(r) = f.as_mut().poll(&mut cx) {
                    *o = Some(r);
                }
            }
        }
        if out.iter().all(Option::is_some) {
            return out.into_iter().map(Option::unwrap).collect();
        }
        std::thread::park();
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    block_on_all(vec![f]).pop().unwrap()
}

#[test]
fn works_without_any_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let r =
        block_on(store.append_async("a", ExpectedVersion::NoStream, events("a", 0, 2))).unwrap();
    assert_eq!(r.version, Some(1));
    // Fifty appends polled together from one thread, sharing group commits.
    let names: Vec<String> = (0..50).map(|i| format!("s-{i}")).collect();
    let results = block_on_all(
        names
            .iter()
            .map(|n| store.append_async(n, ExpectedVersion::NoStream, events(n, 0, 1)))
            .collect(),
    );
    for r in results {
        assert_eq!(r.unwrap().version, Some(0));
    }
    let multi = block_on(store.append_multi_async(vec![
        StreamWrite::new("a", ExpectedVersion::Exact(1), events("a", 2, 1)),
        StreamWrite::new("b", ExpectedVersion::NoStream, events("b", 0, 1)),
    ]))
    .unwrap();
    assert_eq!(multi[0].version, Some(2));
    assert_eq!(multi[1].version, Some(0));
    // The same rules as `append`: a wrong expected version writes nothing; a retry is answered.
    let wrong = block_on(store.append_async("a", ExpectedVersion::NoStream, events("a", 9, 1)));
    assert!(matches!(
        wrong,
        Err(Error::WrongExpectedVersion {
            actual: Some(2),
            ..
        })
    ));
    let again = events("c", 0, 1);
    let first = block_on(store.append_async("c", ExpectedVersion::Any, again.clone())).unwrap();
    let retry = block_on(store.append_async("c", ExpectedVersion::Any, again)).unwrap();
    assert_eq!(first, retry);
    // Bad input fails before anything is queued.
    assert!(matches!(
        block_on(store.append_async("", ExpectedVersion::Any, events("x", 0, 1))),
        Err(Error::InvalidInput(_))
    ));
    store.close().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(datas(&store, "a"), ["a:0", "a:1", "a:2"]);
    assert_eq!(store.streams().unwrap().len(), 53);
}

/// Polls a future once, leaving it queued (or done).
fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    let waker: Waker = Arc::new(ThreadWaker(std::thread::current())).into();
    Pin::new(f).poll(&mut Context::from_waker(&waker))
}

#[test]
fn dropped_futures_lose_nothing_and_hold_up_nobody() {
    for durability in [Durability::Sync, Durability::None] {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(Store::open(dir.path(), Options::default().durability(durability)).unwrap());
        // Queued, then dropped at once: some before any group took them, some in a group.
        for round in 0..20 {
            let names: Vec<String> = (0..20).map(|i| format!("dropped-{round}-{i}")).collect();
            let mut futures: Vec<_> = names
                .iter()
                .map(|n| {
                    Box::pin(store.append_async(n, ExpectedVersion::NoStream, events(n, 0, 1)))
                })
                .collect();
            for f in &mut futures {
                let _ = poll_once(f);
            }
            if round % 2 == 0 {
                std::thread::yield_now();
            }
            drop(futures);
        }
        // Timeouts on a runtime cancel appends mid-flight, while others go on.
        let rt = runtime();
        let finished = rt.block_on(async {
            let tasks: Vec<_> = (0..64)
                .map(|t| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let name = format!("timed-{t}");
                        let mut done = 0;
                        for i in 0..20u64 {
                            let append = store.append_async(
                                &name,
                                ExpectedVersion::Any,
                                events(&name, i as usize, 1),
                            );
                            let wait = Duration::from_micros(if t % 2 == 0 { 1 } else { 50_000 });
                            if let Ok(r) = tokio::time::timeout(wait, append).await {
                                r.unwrap();
                                done += 1;
                            }
                        }
                        done
                    })
                })
                .collect();
            let mut finished = 0;
            for t in tasks {
                finished += t.await.unwrap();
            }
            finished
        });
        assert!(finished > 0);
        drop(rt);
        // Nothing is stuck: blocking and async appends go on, and close returns.
        store
            .append("after", ExpectedVersion::NoStream, events("after", 0, 1))
            .unwrap();
        let r =
            block_on(store.append_async("after", ExpectedVersion::Exact(0), events("after", 1, 1)))
                .unwrap();
        assert_eq!(r.version, Some(1));
        store.close().unwrap();

        let store = Store::open(dir.path(), Options::default()).unwrap();
        for name in store.streams().unwrap() {
            let got = datas(&store, &name);
            if name.starts_with("dropped-") {
                // Written whole or not at all.
                assert!(got.len() <= 1, "{name}: {got:?}");
                if let Some(d) = got.first() {
                    assert_eq!(d, &format!("{name}:0"));
                }
            } else if name.starts_with("timed-") {
                // Each event at most once, in order.
                let mut numbers: Vec<usize> = got
                    .iter()
                    .map(|d| d.rsplit(':').next().unwrap().parse().unwrap())
                    .collect();
                let sorted = {
                    let mut s = numbers.clone();
                    s.sort_unstable();
                    s.dedup();
                    s
                };
                assert_eq!(numbers, sorted, "{name}");
                numbers.clear();
            }
        }
        assert_eq!(datas(&store, "after"), ["after:0", "after:1"]);
    }
}

#[test]
fn blocking_and_async_appenders_mixed() {
    const THREADS: usize = 6;
    const TASKS: usize = 40;
    const EACH: u64 = 25;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let name = format!("thread-{t}");
                for i in 0..EACH {
                    let r = store
                        .append(&name, expected_after(i), events(&name, i as usize, 1))
                        .unwrap();
                    assert_eq!(r.version, Some(i));
                }
            })
        })
        .collect();
    runtime().block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    let name = format!("task-{t}");
                    for i in 0..EACH {
                        let r = store
                            .append_async(&name, expected_after(i), events(&name, i as usize, 1))
                            .await
                            .unwrap();
                        assert_eq!(r.version, Some(i));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    for t in threads {
        t.join().unwrap();
    }
    store.close().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    for name in (0..THREADS)
        .map(|t| format!("thread-{t}"))
        .chain((0..TASKS).map(|t| format!("task-{t}")))
    {
        let want: Vec<String> = (0..EACH).map(|i| format!("{name}:{i}")).collect();
        assert_eq!(datas(&store, &name), want);
    }
}

#[test]
fn async_appends_racing_close() {
    const TASKS: usize = 32;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
    let started = Arc::new(AtomicUsize::new(0));
    let rt = runtime();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (store, started) = (store.clone(), started.clone());
            rt.spawn(async move {
                let name = format!("racer-{t}");
                let mut acked = 0u64;
                loop {
                    match store
                        .append_async(
                            &name,
                            expected_after(acked),
                            events(&name, acked as usize, 1),
                        )
                        .await
                    {
                        Ok(r) => {
                            assert_eq!(r.version, Some(acked));
                            acked += 1;
                            started.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(Error::Closed) => return acked,
                        Err(e) => panic!("{name}: {e:?}, not Closed"),
                    }
                }
            })
        })
        .collect();
    while started.load(Ordering::SeqCst) < TASKS {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(20));
    store.close().unwrap();
    let reopened = Store::open(dir.path(), Options::default()).unwrap();
    let acked: Vec<u64> = rt.block_on(async {
        let mut acked = Vec::new();
        for t in tasks {
            acked.push(t.await.unwrap());
        }
        acked
    });
    for (t, &n) in acked.iter().enumerate() {
        let name = format!("racer-{t}");
        let want: Vec<String> = (0..n).map(|i| format!("{name}:{i}")).collect();
        assert_eq!(datas(&reopened, &name), want);
    }
    // After close, an async append fails at once.
    assert!(matches!(
        block_on(store.append_async("late", ExpectedVersion::Any, events("late", 0, 1))),
        Err(Error::Closed)
    ));
}

#[test]
fn the_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let f = store.append_async("a", ExpectedVersion::Any, events("a", 0, 1));
    send(&f);
    drop(f);
    let store = Arc::new(store);
    let mut actor = Journaled::activate(store, Arc::new(Journal::<Account>::new()), "1").unwrap();
    let f = actor.confirm_events_async();
    send(&f);
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum AccountEvent {
    Deposited(u64),
    Withdrawn(u64),
}

impl JournalEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Deposited(_) => "Deposited",
            AccountEvent::Withdrawn(_) => "Withdrawn",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Account {
    balance: u64,
}

impl JournalState for Account {
    type Event = AccountEvent;
    type Error = Rejected;
    const TYPE: &'static str = "account";
    fn apply(&mut self, e: &AccountEvent) -> std::result::Result<(), Rejected> {
        match *e {
            AccountEvent::Deposited(n) => self.balance += n,
            AccountEvent::Withdrawn(n) if n <= self.balance => self.balance -= n,
            AccountEvent::Withdrawn(_) => return Err(Rejected::new("insufficient funds")),
        }
        Ok(())
    }
}

#[test]
fn confirm_events_async_handles_conflicts_and_snapshots_like_confirm_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
    let journal = Arc::new(Journal::<Account>::new().snapshot_every(3));
    let rt = runtime();
    let mut a = Journaled::activate(store.clone(), journal.clone(), "7").unwrap();
    let mut b = Journaled::activate(store.clone(), journal.clone(), "7").unwrap();
    rt.block_on(async {
        // Nothing to confirm.
        a.confirm_events_async().await.unwrap();
        a.raise_event(AccountEvent::Deposited(100)).unwrap();
        a.confirm_events_async().await.unwrap();
        assert_eq!((a.version(), a.state().balance), (1, 100));

        // `b` saw the stream empty: it conflicts, catches up, applies its event again, retries.
        b.raise_event(AccountEvent::Deposited(5)).unwrap();
        b.confirm_events_async().await.unwrap();
        assert_eq!((b.version(), b.state().balance), (2, 105));
        assert_eq!(b.unconfirmed_events().len(), 0);
        // The third confirmed event took a snapshot.
        b.raise_event(AccountEvent::Withdrawn(50)).unwrap();
        b.confirm_events_async().await.unwrap();
        assert_eq!(b.snapshot_version(), 3);

        // `a` is behind; its withdrawal no longer applies after catching up: dropped, reported.
        a.raise_event(AccountEvent::Withdrawn(100)).unwrap();
        let r = a.confirm_events_async().await;
        assert!(matches!(r, Err(Error::Apply { .. })), "{r:?}");
        assert_eq!((a.version(), a.state().balance), (3, 55));
        assert_eq!(a.unconfirmed_events().len(), 0);
    });
    // The same outcome as the blocking confirm gives: a fresh handle from the snapshot.
    let fresh = Journaled::activate(store.clone(), journal, "7").unwrap();
    assert_eq!((fresh.version(), fresh.state().balance), (3, 55));
    assert_eq!(fresh.snapshot_version(), 3);
    assert_eq!(store.stream_version("account-7").unwrap(), Some(2));
    // After close, the confirm fails with `Closed` and the events stay unconfirmed.
    store.close().unwrap();
    a.raise_event(AccountEvent::Deposited(1)).unwrap();
    assert!(matches!(
        block_on(a.confirm_events_async()),
        Err(Error::Closed)
    ));
    assert_eq!(a.unconfirmed_events().len(), 1);
}

/// A backend that implements only the blocking calls: the trait's default async append.
struct BlockingOnly(Store, AtomicBool);

impl Backend for BlockingOnly {
    fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult> {
        self.1.store(true, Ordering::SeqCst);
        self.0.append(stream, expected, events)
    }

    fn read(
        &self,
        stream: &str,
        from: u64,
        f: &mut dyn FnMut(StoredEvent<'_>) -> std::ops::ControlFlow<()>,
    ) -> Result<u64> {
        self.0.read(stream, from, f)
    }

    fn read_last(&self, stream: &str, f: &mut dyn FnMut(StoredEvent<'_>)) -> Result<bool> {
        self.0.read_last(stream, f)
    }
}

#[test]
fn confirm_events_async_through_the_default_backend_method() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(BlockingOnly(
        Store::open(dir.path(), Options::default()).unwrap(),
        AtomicBool::new(false),
    ));
    let journal = Arc::new(Journal::<Account>::new());
    let mut a = Journaled::activate(backend.clone(), journal.clone(), "1").unwrap();
    let mut b = Journaled::activate(backend.clone(), journal, "1").unwrap();
    a.raise_event(AccountEvent::Deposited(10)).unwrap();
    block_on(a.confirm_events_async()).unwrap();
    assert!(
        backend.1.load(Ordering::SeqCst),
        "the blocking append did the work"
    );
    b.raise_event(AccountEvent::Deposited(1)).unwrap();
    block_on(b.confirm_events_async()).unwrap();
    assert_eq!((b.version(), b.state().balance), (2, 11));
}
