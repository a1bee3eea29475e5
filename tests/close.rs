//! Closing a store through a shared handle: appends in flight finish, later calls fail with
//! `Error::Closed`, and the directory is free for another opener as soon as `close` returns.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use eventjournal::journal::{Host, Journal, JournalEvent, JournalState, Rejected};
use eventjournal::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Added(u64);

impl JournalEvent for Added {
    fn event_type(&self) -> &'static str {
        "Added"
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Counter(u64);

impl JournalState for Counter {
    type Event = Added;
    type Error = Rejected;
    const TYPE: &'static str = "counter";
    fn apply(&mut self, e: &Added) -> std::result::Result<(), Rejected> {
        self.0 += e.0;
        Ok(())
    }
}

#[test]
fn close_through_an_arc_shared_with_a_host() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
    let host = Host::new(store.clone(), Arc::new(Journal::<Counter>::new()), 100);
    for id in ["a", "b"] {
        let total = host
            .call(id, |c| -> Result<_> {
                c.raise_event(Added(2))?;
                c.confirm_events()?;
                Ok(c.state().0)
            })
            .unwrap();
        assert_eq!(total, 2);
    }
    // Closed through the handle the host shares: no need to drop the host or unwrap the Arc.
    store.close().unwrap();
    assert!(
        Arc::strong_count(&store) > 2,
        "the host and its actors hold it too"
    );

    // The active actor's confirm and a new actor's activation both meet the closed store.
    let confirm = host.call("a", |c| {
        c.raise_event(Added(1))?;
        c.confirm_events()
    });
    assert!(matches!(confirm, Err(Error::Closed)), "{confirm:?}");
    let activate = host.call("c", |c| Ok(c.version()));
    assert!(matches!(activate, Err(Error::Closed)), "{activate:?}");

    // The directory is free while the host still holds the closed store.
    let reopened = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(reopened.stream_version("counter-a").unwrap(), Some(0));
    assert_eq!(reopened.stream_version("counter-b").unwrap(), Some(0));
    drop(host);
    drop(store);
    reopened.close().unwrap();
}

/// Threads append until the store closes under them: every append either succeeds, and is
/// there after reopening, or fails with `Closed` and wrote nothing.
fn appends_racing_close(durability: Durability) {
    const THREADS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let options = || Options::default().durability(durability);
    let store = Arc::new(Store::open(dir.path(), options()).unwrap());
    let started = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (store, started) = (store.clone(), started.clone());
            std::thread::spawn(move || {
                let name = format!("racer-{t}");
                let mut acked = 0u64;
                loop {
                    let expected = match acked {
                        0 => ExpectedVersion::NoStream,
                        n => ExpectedVersion::Exact(n - 1),
                    };
                    let r = if t % 2 == 0 {
                        store.append(&name, expected, events(&name, acked as usize, 1))
                    } else {
                        store
                            .append_multi(vec![StreamWrite::new(
                                name.clone(),
                                expected,
                                events(&name, acked as usize, 1),
                            )])
                            .map(|mut r| r.remove(0))
                    };
                    match r {
                        Ok(r) => {
                            assert_eq!(r.version, Some(acked), "{name}");
                            acked += 1;
                            started.store(true, Ordering::SeqCst);
                        }
                        Err(Error::Closed) => return acked,
                        Err(e) => panic!("{name}: an append failed with {e:?}, not Closed"),
                    }
                }
            })
        })
        .collect();
    while !started.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(30));
    store.close().unwrap();
    // Reopened at once, while the workers may still hold their handles.
    let reopened = Store::open(dir.path(), options()).unwrap();
    let acked: Vec<u64> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(acked.iter().sum::<u64>() > 0);
    for (t, &n) in acked.iter().enumerate() {
        let name = format!("racer-{t}");
        let expected: Vec<String> = (0..n).map(|i| format!("{name}:{i}")).collect();
        assert_eq!(datas(&reopened, &name), expected, "{durability:?}");
    }
    reopened.close().unwrap();
}

#[test]
fn appends_racing_close_succeed_or_fail_closed_sync() {
    appends_racing_close(Durability::Sync);
}

#[test]
fn appends_racing_close_succeed_or_fail_closed_without_sync() {
    appends_racing_close(Durability::None);
}

#[test]
fn appends_racing_close_succeed_or_fail_closed_buffered() {
    appends_racing_close(Durability::Buffered(Duration::from_millis(5)));
}

#[test]
fn reopen_right_after_close_while_clones_are_alive() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(Store::open(dir.path(), Options::default().durability(Durability::None)).unwrap());
    store
        .append("a", ExpectedVersion::NoStream, events("a", 0, 3))
        .unwrap();
    let clones: Vec<Arc<Store>> = (0..3).map(|_| store.clone()).collect();
    let mut sub = store
        .subscribe_to_stream("a", StreamFrom::Start)
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    let iter = store.read_stream_forward("a", 0, usize::MAX).unwrap();
    clones[1].close().unwrap();

    // Under `Durability::None` the close synced what the appends left unsynced.
    let reopened = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(datas(&reopened, "a"), ["a:0", "a:1", "a:2"]);
    reopened
        .append("a", ExpectedVersion::Exact(2), events("a", 3, 1))
        .unwrap();
    // The old handles see the closed store, not the new one's appends.
    assert!(matches!(
        clones[0].append("a", ExpectedVersion::Any, events("a", 9, 1)),
        Err(Error::Closed)
    ));
    // What was made before the close yields what was committed before it; the subscription
    // then ends (promptly, although its timeout is long).
    assert_eq!(iter.count(), 3);
    let delivered: Vec<u64> = sub.by_ref().map(|e| e.unwrap().event_number()).collect();
    assert_eq!(delivered, [0, 1, 2]);
    // A second opener is still locked out of the new store.
    assert!(matches!(
        Store::open(dir.path(), Options::default()),
        Err(Error::Locked { .. })
    ));
    drop(clones);
    drop(store);
    reopened.close().unwrap();
    let again = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(again.stream_version("a").unwrap(), Some(3));
}

#[test]
fn every_call_after_close_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let r = store
        .append(
            "account-1",
            ExpectedVersion::NoStream,
            events("account-1", 0, 2),
        )
        .unwrap();
    store.save_checkpoint("c", r.position.unwrap()).unwrap();
    let head = store.head();
    store.close().unwrap();

    fn closed<T: std::fmt::Debug>(what: &str, r: Result<T>) {
        match r {
            Err(Error::Closed) => {}
            other => panic!("{what} after close: {other:?}"),
        }
    }
    closed(
        "append",
        store.append("account-1", ExpectedVersion::Any, events("x", 0, 1)),
    );
    // Closed comes before any other verdict on the input.
    closed(
        "append of a bad batch",
        store.append("", ExpectedVersion::Any, []),
    );
    closed(
        "append_multi",
        store.append_multi(vec![StreamWrite::new(
            "b",
            ExpectedVersion::Any,
            events("b", 0, 1),
        )]),
    );
    closed("flush", store.flush());
    closed(
        "read_stream_forward",
        store.read_stream_forward("account-1", 0, 10).map(|_| ()),
    );
    closed(
        "read_stream_backward",
        store.read_stream_backward("account-1", 0, 10).map(|_| ()),
    );
    closed("read_event", store.read_event("account-1", 0));
    closed(
        "read_all_forward",
        store.read_all_forward(Position::START, 10).map(|_| ()),
    );
    closed(
        "read_all_backward",
        store.read_all_backward(Position::END, 10).map(|_| ()),
    );
    closed(
        "replay_stream",
        store.replay_stream("account-1", 0, |_| std::ops::ControlFlow::Continue(())),
    );
    closed(
        "replay_all",
        store.replay_all(Position::START, |_| std::ops::ControlFlow::Continue(())),
    );
    closed(
        "read_category",
        store.read_category("account", 0, 10).map(|_| ()),
    );
    closed(
        "read_event_type",
        store.read_event_type("Deposited", 0, 10).map(|_| ()),
    );
    closed(
        "subscribe_to_all",
        store.subscribe_to_all(AllFrom::Start, None).map(|_| ()),
    );
    closed(
        "subscribe_to_stream",
        store
            .subscribe_to_stream("account-1", StreamFrom::Start)
            .map(|_| ()),
    );
    closed(
        "subscribe_to_category",
        store
            .subscribe_to_category("account", StreamFrom::Start)
            .map(|_| ()),
    );
    closed(
        "subscribe_to_event_type",
        store
            .subscribe_to_event_type("Deposited", StreamFrom::Start)
            .map(|_| ()),
    );
    closed(
        "save_checkpoint",
        store.save_checkpoint("c", Position::START),
    );
    closed("load_checkpoint", store.load_checkpoint("c"));
    closed(
        "subscribe_from_checkpoint",
        store.subscribe_from_checkpoint("c", None).map(|_| ()),
    );
    // The calls without a `Result` answer from what the store held.
    assert_eq!(store.head(), head);
    assert_eq!(store.stream_version("account-1").unwrap(), Some(1));
    assert_eq!(store.category_len("account").unwrap(), 2);
    assert!(store.streams().unwrap().contains(&"account-1".to_string()));
    assert_eq!(Error::Closed.to_string(), "the store is closed");

    // Closing again is harmless, and so is dropping.
    store.close().unwrap();
    store.close().unwrap();
    drop(store);
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(store.stream_version("account-1").unwrap(), Some(1));
}

#[test]
fn concurrent_closes_all_return_after_the_lock_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
    store
        .append("a", ExpectedVersion::NoStream, events("a", 0, 1))
        .unwrap();
    let closers: Vec<_> = (0..4)
        .map(|_| {
            let (store, path) = (store.clone(), dir.path().to_path_buf());
            std::thread::spawn(move || {
                store.close().unwrap();
                // Whichever close did the work, each returns with the directory free.
                match Store::open(&path, Options::default()) {
                    Ok(s) => drop(s),
                    Err(Error::Locked { .. }) => {} // another closer's reopen holds it now
                    Err(e) => panic!("{e:?}"),
                }
            })
        })
        .collect();
    for c in closers {
        c.join().unwrap();
    }
    drop(store);
    let s = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(datas(&s, "a"), ["a:0"]);
}

#[test]
fn close_gives_back_the_space_after_the_end_of_the_log() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    store
        .append("a", ExpectedVersion::NoStream, [EventData::new("E", "x")])
        .unwrap();
    let seg = dir.path().join("00000000000000000000.seg");
    let reserved = std::fs::metadata(&seg).unwrap().blocks() * 512;
    store.close().unwrap();
    let meta = std::fs::metadata(&seg).unwrap();
    // The length stays (the segment's capacity); the reserved space past the data is a hole, so
    // that the next open has nothing to read there when it checks the end of the log.
    assert_eq!(meta.len(), 64 << 20);
    assert!(
        meta.blocks() * 512 < reserved.min(1 << 20),
        "{} bytes still allocated (were {reserved})",
        meta.blocks() * 512
    );
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(store.stream_version("a").unwrap(), Some(0));
    store
        .append("a", ExpectedVersion::Exact(0), [EventData::new("E", "y")])
        .unwrap();
    store.close().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(store.stream_version("a").unwrap(), Some(1));
}
