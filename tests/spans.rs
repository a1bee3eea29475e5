//! The store's `tracing` spans and warnings, seen by a subscriber.
//!
//! Alone in its test binary: a callsite's interest is cached process-wide the first time it is
//! hit, so a span reached by another test's thread before this one installs its subscriber
//! would stay unseen by it.

use std::ops::ControlFlow;
use std::sync::Arc;

use eventjournal::{EventData, ExpectedVersion, Options, Store};

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
