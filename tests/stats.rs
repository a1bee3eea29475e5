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
