//! `Store::stats`: the counters follow what the store did.

use std::ops::ControlFlow;
use std::sync::Arc;

use eventjournal::{Durability, EventData, ExpectedVersion, Options, Position, Store};

#[test]
fn stats_count_batches_events_bytes_groups_syncs_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
    assert_eq!(store.stats(), Default::default());
    // Eight threads of synced appends: group commits carry several batches each.
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    let events = [
                        EventData::new("E", vec![7u8; 100]),
                        EventData::new("F", "x"),
                    ];
                    let expected = match i {
                        0 => ExpectedVersion::NoStream,
                        _ => ExpectedVersion::Exact(i * 2 - 1),
                    };
                    store.append(&format!("s-{t}"), expected, events).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = store.stats();
    assert_eq!(s.appends, 400);
    assert_eq!(s.events_appended, 800);
    assert!(s.bytes_appended > 400 * 101, "{s:?}");
    assert!(s.groups >= 1 && s.groups <= 400, "{s:?}");
    assert!(s.largest_group >= 1 && s.largest_group <= 8, "{s:?}");
    assert_eq!(s.syncs, s.groups, "every durable group syncs once: {s:?}");
    assert!((s.mean_group() - 400.0 / s.groups as f64).abs() < 1e-9);
    assert_eq!(s.events_replayed, 0);

    // A retry of a written batch writes nothing and counts nothing.
    let id = eventjournal::EventId::new_random();
    let batch = || [EventData::new("G", "y").with_id(id)];
    store
        .append("r", ExpectedVersion::NoStream, batch())
        .unwrap();
    let before = store.stats();
    store
        .append("r", ExpectedVersion::NoStream, batch())
        .unwrap();
    assert_eq!(store.stats(), before);

    let n = store
        .replay_stream("s-3", 0, |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(n, 100);
    let all = store
        .replay_all(Position::START, |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(all, 801);
    assert_eq!(store.stats().events_replayed, 901);
}

#[test]
fn unsynced_appends_count_the_syncs_of_flush_only() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().durability(Durability::None);
    let store = Store::open(dir.path(), options).unwrap();
    for i in 0..10 {
        store
            .append(
                "s",
                ExpectedVersion::Any,
                [EventData::new("E", format!("{i}"))],
            )
            .unwrap();
    }
    assert_eq!((store.stats().appends, store.stats().syncs), (10, 0));
    store.flush().unwrap();
    assert_eq!(store.stats().syncs, 1);
}

/// A subscriber that records the names of the spans opened and the events sent.
#[derive(Default)]
struct Recorder {
    names: std::sync::Mutex<Vec<String>>,
    next: std::sync::atomic::AtomicU64,
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        self.names
            .lock()
            .unwrap()
            .push(span.metadata().name().to_string());
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::span::Id::from_u64(n + 1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let level = event.metadata().level().to_string();
        self.names.lock().unwrap().push(format!("event:{level}"));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn appends_commits_syncs_replays_and_recovery_are_traced() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    tracing::subscriber::with_default(recorder.clone(), || {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        store
            .append("s", ExpectedVersion::NoStream, [EventData::new("E", "x")])
            .unwrap();
        store
            .replay_stream("s", 0, |_| ControlFlow::Continue(()))
            .unwrap();
        store.close().unwrap();
    });
    let names = recorder.names.lock().unwrap().clone();
    for span in ["recovery", "append", "group_commit", "sync", "replay"] {
        assert!(
            names.iter().any(|n| n == span),
            "no `{span}` span in {names:?}"
        );
    }
    // A torn tail is cut at the next open, with a warning.
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let head = {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let head = store.head().0;
        store.close().unwrap();
        head
    };
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x55; 64], head).unwrap();
    drop(f);
    let recorder = Arc::new(Recorder::default());
    tracing::subscriber::with_default(recorder.clone(), || {
        Store::open(dir.path(), Options::default())
            .unwrap()
            .close()
            .unwrap();
    });
    let names = recorder.names.lock().unwrap().clone();
    assert!(
        names.iter().any(|n| n == "event:WARN"),
        "no warning in {names:?}"
    );
}
