//! Deleting streams and retention (issue 14, point 1): soft delete, tombstones and stream
//! metadata (`max_count`, `max_age_secs`, `truncate_before`), applied at read time by every kind
//! of read, on real stores in temporary directories.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use eventjournal::journal::{Journal, JournalEvent, JournalState, Journaled, Rejected};
use eventjournal::{
    AllFrom, Error, EventData, ExpectedVersion, Options, Position, Store, StreamFrom,
    StreamMetadata, StreamWrite,
};
use serde::{Deserialize, Serialize};

/// Small segments: the model test opens many stores, and some of its runs span segments.
fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, Options::default().segment_size(16 << 10)).expect("open")
}

fn ev(i: u64) -> EventData {
    EventData::new("Happened", format!("{i}"))
}

/// Appends `n` events to `stream`, one batch each.
fn fill(store: &Store, stream: &str, n: u64) {
    for i in 0..n {
        store
            .append(stream, ExpectedVersion::Any, [ev(i)])
            .expect("append");
    }
}

fn numbers(
    it: impl Iterator<Item = eventjournal::Result<eventjournal::RecordedEvent>>,
) -> Vec<u64> {
    it.map(|e| e.expect("event").event_number()).collect()
}

/// `(stream, event number)` of every event of `$all` that is not in a `$` stream.
fn all_of(store: &Store) -> Vec<(String, u64)> {
    store
        .read_all_forward(Position::START, usize::MAX)
        .expect("read $all")
        .map(|e| e.expect("event"))
        .filter(|e| !e.stream().starts_with('$'))
        .map(|e| (e.stream().to_string(), e.event_number()))
        .collect()
}

fn all_backward_of(store: &Store) -> Vec<(String, u64)> {
    let mut v: Vec<_> = store
        .read_all_backward(Position::END, usize::MAX)
        .expect("read $all")
        .map(|e| e.expect("event"))
        .filter(|e| !e.stream().starts_with('$'))
        .map(|e| (e.stream().to_string(), e.event_number()))
        .collect();
    v.reverse();
    v
}

fn replay_all_of(store: &Store) -> Vec<(String, u64)> {
    let mut v = Vec::new();
    store
        .replay_all(Position::START, |e| {
            if !e.stream().starts_with('$') {
                v.push((e.stream().to_string(), e.event_number()));
            }
            ControlFlow::Continue(())
        })
        .expect("replay $all");
    v
}

fn category_of(store: &Store, category: &str) -> Vec<(String, u64)> {
    store
        .read_category(category, 0, usize::MAX)
        .expect("read category")
        .map(|e| e.expect("event"))
        .map(|e| (e.stream().to_string(), e.event_number()))
        .collect()
}

fn type_of(store: &Store, event_type: &str) -> Vec<(String, u64)> {
    store
        .read_event_type(event_type, 0, usize::MAX)
        .expect("read event type")
        .map(|e| e.expect("event"))
        .map(|e| (e.stream().to_string(), e.event_number()))
        .collect()
}

fn replayed(store: &Store, stream: &str) -> eventjournal::Result<Vec<u64>> {
    let mut v = Vec::new();
    store.replay_stream(stream, 0, |e| {
        v.push(e.event_number());
        ControlFlow::Continue(())
    })?;
    Ok(v)
}

fn pairs(stream: &str, numbers: impl IntoIterator<Item = u64>) -> Vec<(String, u64)> {
    numbers
        .into_iter()
        .map(|n| (stream.to_string(), n))
        .collect()
}

/// Drains what a subscription has now (it waits at most a little for each next item).
fn drain(sub: eventjournal::Subscription) -> Vec<(String, u64)> {
    sub.with_timeout(Duration::from_millis(200))
        .map(|e| e.expect("event"))
        .filter(|e| !e.stream().starts_with('$'))
        .map(|e| (e.stream().to_string(), e.event_number()))
        .collect()
}

// ---- Soft delete ------------------------------------------------------------------------------

#[test]
fn a_soft_deleted_stream_vanishes_from_every_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, "order-1", 3);
    fill(&store, "order-2", 2);
    store
        .delete_stream("order-1", ExpectedVersion::Exact(2))
        .unwrap();

    assert!(numbers(store.read_stream_forward("order-1", 0, 100).unwrap()).is_empty());
    assert!(numbers(
        store
            .read_stream_backward("order-1", u64::MAX, 100)
            .unwrap()
    )
    .is_empty());
    assert!(matches!(
        store.read_event("order-1", 1),
        Err(Error::EventNotFound { .. })
    ));
    assert!(replayed(&store, "order-1").unwrap().is_empty());
    let rest = pairs("order-2", 0..2);
    assert_eq!(all_of(&store), rest);
    assert_eq!(all_backward_of(&store), rest);
    assert_eq!(replay_all_of(&store), rest);
    assert_eq!(category_of(&store, "order"), rest);
    assert_eq!(type_of(&store, "Happened"), rest);
    // The numbering stays: it is what the next append expects.
    assert_eq!(store.stream_version("order-1").unwrap(), Some(2));
    let md = store.stream_metadata("order-1").unwrap().unwrap().1;
    assert_eq!((md.truncate_before, md.tombstoned), (Some(3), false));
}

#[test]
fn an_append_after_a_soft_delete_continues_the_numbering() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, "cart-1", 3);
    store.delete_stream("cart-1", ExpectedVersion::Any).unwrap();
    // `NoStream` holds on a soft-deleted stream, as in EventStoreDB.
    let e = ev(9);
    let r = store
        .append("cart-1", ExpectedVersion::NoStream, [e.clone()])
        .unwrap();
    assert_eq!(r.version, Some(3));
    // A retry of it is recognised, not written again.
    let again = store
        .append("cart-1", ExpectedVersion::NoStream, [e])
        .unwrap();
    assert_eq!(again, r);
    // Now that it has events again, `NoStream` does not hold.
    assert!(matches!(
        store.append("cart-1", ExpectedVersion::NoStream, [ev(10)]),
        Err(Error::WrongExpectedVersion {
            actual: Some(3),
            ..
        })
    ));
    assert_eq!(
        numbers(store.read_stream_forward("cart-1", 0, 100).unwrap()),
        [3]
    );
    assert_eq!(
        numbers(store.read_stream_backward("cart-1", u64::MAX, 100).unwrap()),
        [3]
    );
    assert_eq!(all_of(&store), pairs("cart-1", [3]));
    store
        .append("cart-1", ExpectedVersion::Exact(3), [ev(11)])
        .unwrap();
    assert_eq!(replayed(&store, "cart-1").unwrap(), [3, 4]);
}

#[test]
fn delete_checks_its_expected_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, "acct-1", 2);
    assert!(matches!(
        store.delete_stream("acct-1", ExpectedVersion::Exact(0)),
        Err(Error::WrongExpectedVersion {
            expected: ExpectedVersion::Exact(0),
            actual: Some(1),
            ..
        })
    ));
    assert!(matches!(
        store.delete_stream("acct-1", ExpectedVersion::NoStream),
        Err(Error::WrongExpectedVersion { .. })
    ));
    assert_eq!(store.stream_metadata("acct-1").unwrap(), None);
    assert_eq!(replayed(&store, "acct-1").unwrap(), [0, 1]);
    store
        .delete_stream("acct-1", ExpectedVersion::StreamExists)
        .unwrap();
    assert!(replayed(&store, "acct-1").unwrap().is_empty());
    // Deleted streams may be deleted again, expecting no stream.
    store
        .delete_stream("acct-1", ExpectedVersion::NoStream)
        .unwrap();
    // The store's own streams are not the application's to delete.
    assert!(matches!(
        store.delete_stream("$checkpoint-x", ExpectedVersion::Any),
        Err(Error::ReservedName { .. })
    ));
}

// ---- Tombstones -------------------------------------------------------------------------------

#[test]
fn a_tombstoned_stream_is_never_read_or_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, "user-1", 2);
    fill(&store, "user-2", 1);
    store
        .tombstone_stream("user-1", ExpectedVersion::Exact(1))
        .unwrap();

    let deleted = |r: eventjournal::Result<_>| matches!(r, Err(Error::StreamDeleted { stream }) if stream == "user-1");
    assert!(deleted(
        store.read_stream_forward("user-1", 0, 10).map(|_| ())
    ));
    assert!(deleted(
        store.read_stream_backward("user-1", 0, 10).map(|_| ())
    ));
    assert!(deleted(store.read_event("user-1", 0).map(|_| ())));
    assert!(deleted(replayed(&store, "user-1").map(|_| ())));
    assert!(deleted(
        store
            .append("user-1", ExpectedVersion::Any, [ev(0)])
            .map(|_| ())
    ));
    assert!(deleted(
        store
            .append("user-1", ExpectedVersion::NoStream, [ev(0)])
            .map(|_| ())
    ));
    assert!(deleted(
        store
            .append_multi(vec![
                StreamWrite::new("user-2", ExpectedVersion::Any, vec![ev(1)]),
                StreamWrite::new("user-1", ExpectedVersion::Any, vec![ev(1)]),
            ])
            .map(|_| ())
    ));
    assert!(deleted(store.delete_stream("user-1", ExpectedVersion::Any)));
    assert!(deleted(
        store.tombstone_stream("user-1", ExpectedVersion::Any)
    ));
    assert!(deleted(
        store
            .set_stream_metadata("user-1", ExpectedVersion::Any, StreamMetadata::default())
            .map(|_| ())
    ));
    assert!(deleted(
        store
            .subscribe_to_stream("user-1", StreamFrom::Start)
            .and_then(|mut s| s.try_recv().map(|_| ()))
    ));
    let rest = pairs("user-2", [0]);
    assert_eq!(all_of(&store), rest);
    assert_eq!(replay_all_of(&store), rest);
    assert_eq!(category_of(&store, "user"), rest);
    assert_eq!(type_of(&store, "Happened"), rest);
    // The name stays taken, and the tombstone survives a reopen.
    assert!(store.streams().unwrap().contains(&"user-1".to_string()));
    store.close().unwrap();
    let store = open(dir.path());
    assert!(deleted(
        store
            .append("user-1", ExpectedVersion::Any, [ev(0)])
            .map(|_| ())
    ));
    assert_eq!(all_of(&store), rest);
}

// ---- Retention --------------------------------------------------------------------------------

#[test]
fn max_count_keeps_the_newest_events_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, "sensor-1", 10);
    fill(&store, "sensor-2", 2);
    let md = StreamMetadata {
        max_count: Some(3),
        ..Default::default()
    };
    let r = store
        .set_stream_metadata("sensor-1", ExpectedVersion::NoStream, md.clone())
        .unwrap();
    assert_eq!(r.version, Some(0));
    assert_eq!(store.stream_metadata("sensor-1").unwrap(), Some((0, md)));

    assert_eq!(
        numbers(store.read_stream_forward("sensor-1", 0, 100).unwrap()),
        [7, 8, 9]
    );
    assert_eq!(
        numbers(store.read_stream_forward("sensor-1", 8, 100).unwrap()),
        [8, 9]
    );
    assert_eq!(
        numbers(
            store
                .read_stream_backward("sensor-1", u64::MAX, 100)
                .unwrap()
        ),
        [9, 8, 7]
    );
    assert_eq!(
        numbers(store.read_stream_backward("sensor-1", 2, 100).unwrap()),
        Vec::<u64>::new()
    );
    assert!(matches!(
        store.read_event("sensor-1", 6),
        Err(Error::EventNotFound { .. })
    ));
    assert_eq!(store.read_event("sensor-1", 7).unwrap().event_number(), 7);
    assert_eq!(replayed(&store, "sensor-1").unwrap(), [7, 8, 9]);
    let mut want = pairs("sensor-1", 7..10);
    want.extend(pairs("sensor-2", 0..2));
    want.sort();
    let sorted = |mut v: Vec<(String, u64)>| {
        v.sort();
        v
    };
    assert_eq!(sorted(all_of(&store)), want);
    assert_eq!(sorted(replay_all_of(&store)), want);
    assert_eq!(sorted(category_of(&store, "sensor")), want);
    assert_eq!(sorted(type_of(&store, "Happened")), want);
    // The window moves with new events.
    fill(&store, "sensor-1", 1);
    assert_eq!(replayed(&store, "sensor-1").unwrap(), [8, 9, 10]);
}

#[test]
fn truncate_before_hides_the_events_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, "log-1", 5);
    store
        .set_stream_metadata(
            "log-1",
            ExpectedVersion::Any,
            StreamMetadata {
                truncate_before: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        numbers(store.read_stream_forward("log-1", 0, 2).unwrap()),
        [2, 3]
    );
    assert_eq!(
        numbers(store.read_stream_backward("log-1", u64::MAX, 100).unwrap()),
        [4, 3, 2]
    );
    assert_eq!(all_of(&store), pairs("log-1", 2..5));
    assert_eq!(category_of(&store, "log"), pairs("log-1", 2..5));
    // Metadata is replaced as a whole: without a truncation, everything shows again.
    store
        .set_stream_metadata(
            "log-1",
            ExpectedVersion::Exact(0),
            StreamMetadata::default(),
        )
        .unwrap();
    assert_eq!(replayed(&store, "log-1").unwrap(), [0, 1, 2, 3, 4]);
}

#[test]
fn max_age_hides_old_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, "temp-1", 2);
    std::thread::sleep(Duration::from_millis(2100));
    fill(&store, "temp-1", 1);
    store
        .set_stream_metadata(
            "temp-1",
            ExpectedVersion::Any,
            StreamMetadata {
                max_age_secs: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        numbers(store.read_stream_forward("temp-1", 0, 100).unwrap()),
        [2]
    );
    assert_eq!(
        numbers(store.read_stream_backward("temp-1", u64::MAX, 100).unwrap()),
        [2]
    );
    assert_eq!(all_of(&store), pairs("temp-1", [2]));
    assert_eq!(type_of(&store, "Happened"), pairs("temp-1", [2]));
    // Time passes: the last one expires too.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(replayed(&store, "temp-1").unwrap().is_empty());
    assert!(all_of(&store).is_empty());
}

#[test]
fn metadata_checks_its_expected_version_and_keeps_custom_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut md = StreamMetadata::default();
    md.custom
        .insert("owner".into(), serde_json::json!({"team": "billing"}));
    store
        .set_stream_metadata("inv-1", ExpectedVersion::NoStream, md.clone())
        .unwrap();
    assert!(matches!(
        store.set_stream_metadata("inv-1", ExpectedVersion::NoStream, md.clone()),
        Err(Error::WrongExpectedVersion {
            actual: Some(0),
            ..
        })
    ));
    assert!(matches!(
        store.set_stream_metadata("inv-1", ExpectedVersion::Exact(3), md.clone()),
        Err(Error::WrongExpectedVersion { .. })
    ));
    assert_eq!(store.stream_metadata("inv-1").unwrap(), Some((0, md)));
    assert_eq!(store.stream_metadata("inv-2").unwrap(), None);
    // The application may not write the metadata stream itself.
    assert!(matches!(
        store.append("$$inv-1", ExpectedVersion::Any, [ev(0)]),
        Err(Error::ReservedName { .. })
    ));
}

#[test]
fn metadata_survives_a_reopen_and_reaches_a_follower() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, "dev-1", 4);
    let follower = Store::open_read_only(dir.path(), Options::default().follow(None)).unwrap();
    assert_eq!(replayed(&follower, "dev-1").unwrap(), [0, 1, 2, 3]);
    store
        .set_stream_metadata(
            "dev-1",
            ExpectedVersion::NoStream,
            StreamMetadata {
                max_count: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    fill(&store, "dev-2", 1);
    store.delete_stream("dev-2", ExpectedVersion::Any).unwrap();
    follower.refresh().unwrap();
    assert_eq!(replayed(&follower, "dev-1").unwrap(), [3]);
    assert!(replayed(&follower, "dev-2").unwrap().is_empty());
    assert_eq!(all_of(&follower), pairs("dev-1", [3]));
    store.close().unwrap();
    let store = open(dir.path());
    assert_eq!(replayed(&store, "dev-1").unwrap(), [3]);
    assert_eq!(all_of(&store), pairs("dev-1", [3]));
    assert_eq!(
        store.stream_metadata("dev-1").unwrap().unwrap().1.max_count,
        Some(1)
    );
}

// ---- Subscriptions ----------------------------------------------------------------------------

#[test]
fn subscriptions_skip_deleted_and_retained_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, "job-1", 3);
    fill(&store, "job-2", 4);
    fill(&store, "job-3", 1);
    store.delete_stream("job-1", ExpectedVersion::Any).unwrap();
    store
        .set_stream_metadata(
            "job-2",
            ExpectedVersion::Any,
            StreamMetadata {
                max_count: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
    store
        .tombstone_stream("job-3", ExpectedVersion::Any)
        .unwrap();
    let want = pairs("job-2", [2, 3]);
    assert_eq!(
        drain(store.subscribe_to_all(AllFrom::Start, None).unwrap()),
        want
    );
    assert_eq!(
        drain(
            store
                .subscribe_to_category("job", StreamFrom::Start)
                .unwrap()
        ),
        want
    );
    assert_eq!(
        drain(
            store
                .subscribe_to_event_type("Happened", StreamFrom::Start)
                .unwrap()
        ),
        want
    );
    assert_eq!(
        drain(
            store
                .subscribe_to_stream("job-2", StreamFrom::Start)
                .unwrap()
        ),
        want
    );
    assert!(drain(
        store
            .subscribe_to_stream("job-1", StreamFrom::Start)
            .unwrap()
    )
    .is_empty());

    // Live: a stream subscription of a deleted stream picks up where the numbering goes on.
    let sub = store
        .subscribe_to_stream("job-1", StreamFrom::Start)
        .unwrap();
    store
        .append("job-1", ExpectedVersion::NoStream, [ev(7)])
        .unwrap();
    assert_eq!(drain(sub), pairs("job-1", [3]));
}

// ---- Journaled actors -------------------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Added(u64);

impl JournalEvent for Added {
    fn event_type(&self) -> &'static str {
        "Added"
    }
}

#[derive(Clone, Default, Debug, PartialEq, Serialize, Deserialize)]
struct Counter(u64);

impl JournalState for Counter {
    type Event = Added;
    type Error = Rejected;
    const TYPE: &'static str = "counter";
    fn apply(&mut self, e: &Added) -> Result<(), Rejected> {
        self.0 += e.0;
        Ok(())
    }
}

#[test]
fn an_actor_activated_after_a_delete_starts_empty() {
    for snapshots in [0, 2] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(dir.path()));
        let journal = Arc::new(Journal::<Counter>::new().snapshot_every(snapshots));
        let mut actor = Journaled::activate(store.clone(), journal.clone(), "c1").unwrap();
        for n in [1, 2, 3] {
            actor.raise_event(Added(n)).unwrap();
            actor.confirm_events().unwrap();
        }
        assert_eq!(actor.state(), &Counter(6));
        drop(actor);
        store
            .delete_stream("counter-c1", ExpectedVersion::Exact(2))
            .unwrap();

        let mut actor = Journaled::activate(store.clone(), journal.clone(), "c1").unwrap();
        assert_eq!(actor.state(), &Counter(0), "snapshots every {snapshots}");
        actor.raise_event(Added(10)).unwrap();
        actor.confirm_events().unwrap();
        actor.raise_event(Added(5)).unwrap();
        actor.confirm_events().unwrap();
        assert_eq!(actor.state(), &Counter(15));
        assert_eq!(store.stream_version("counter-c1").unwrap(), Some(4));
        drop(actor);

        let actor = Journaled::activate(store.clone(), journal.clone(), "c1").unwrap();
        assert_eq!(actor.state(), &Counter(15), "snapshots every {snapshots}");

        store
            .tombstone_stream("counter-c1", ExpectedVersion::Any)
            .unwrap();
        assert!(matches!(
            Journaled::activate(store.clone(), journal, "c1"),
            Err(Error::StreamDeleted { .. })
        ));
    }
}

// ---- A model of the rules ---------------------------------------------------------------------

mod model {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const STREAMS: [&str; 3] = ["m-a", "m-b", "n-c"];

    #[derive(Debug, Clone)]
    enum Op {
        Append { s: usize, n: u64, no_stream: bool },
        Delete { s: usize },
        Tombstone { s: usize },
        MaxCount { s: usize, count: Option<u64> },
        Truncate { s: usize, before: Option<u64> },
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..3usize, 1..4u64, any::<bool>()).prop_map(|(s, n, no_stream)| Op::Append { s, n, no_stream }),
            2 => (0..3usize).prop_map(|s| Op::Delete { s }),
            1 => (0..3usize).prop_map(|s| Op::Tombstone { s }),
            2 => (0..3usize, proptest::option::of(0..5u64)).prop_map(|(s, count)| Op::MaxCount { s, count }),
            2 => (0..3usize, proptest::option::of(0..10u64)).prop_map(|(s, before)| Op::Truncate { s, before }),
            1 => Just(Op::Reopen),
        ]
    }

    #[derive(Default)]
    struct Model {
        len: HashMap<&'static str, u64>,
        md: HashMap<&'static str, StreamMetadata>,
        /// Every event, in commit order.
        all: Vec<(String, u64)>,
    }

    impl Model {
        fn tombstoned(&self, s: &str) -> bool {
            self.md.get(s).is_some_and(|m| m.tombstoned)
        }
        fn len(&self, s: &str) -> u64 {
            self.len.get(s).copied().unwrap_or(0)
        }
        /// The event numbers a read of `s` shows.
        fn visible(&self, s: &str) -> Vec<u64> {
            let len = self.len(s);
            let Some(md) = self.md.get(s) else {
                return (0..len).collect();
            };
            if md.tombstoned {
                return Vec::new();
            }
            let mut first = md.truncate_before.unwrap_or(0);
            if let Some(c) = md.max_count {
                first = first.max(len.saturating_sub(c));
            }
            (first.min(len)..len).collect()
        }
        fn shown(&self, (s, n): &(String, u64)) -> bool {
            self.visible(s).contains(n)
        }
    }

    fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let mut m = Model::default();
        for op in ops {
            match op {
                Op::Append { s, n, no_stream } => {
                    let name = STREAMS[s];
                    let exp = if no_stream {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Any
                    };
                    let r = store.append(name, exp, (0..n).map(ev));
                    let len = m.len(name);
                    let floor =
                        m.md.get(name)
                            .and_then(|md| md.truncate_before)
                            .unwrap_or(0);
                    if m.tombstoned(name) {
                        prop_assert!(matches!(r, Err(Error::StreamDeleted { .. })), "{r:?}");
                    } else if no_stream && len > floor {
                        prop_assert!(
                            matches!(r, Err(Error::WrongExpectedVersion { .. })),
                            "{r:?}"
                        );
                    } else {
                        let r = r.map_err(|e| TestCaseError::fail(format!("{e}")))?;
                        prop_assert_eq!(r.version, Some(len + n - 1));
                        for k in len..len + n {
                            m.all.push((name.to_string(), k));
                        }
                        m.len.insert(name, len + n);
                    }
                }
                Op::Delete { s } | Op::Tombstone { s } => {
                    let name = STREAMS[s];
                    let tomb = matches!(op, Op::Tombstone { .. });
                    let r = if tomb {
                        store.tombstone_stream(name, ExpectedVersion::Any)
                    } else {
                        store.delete_stream(name, ExpectedVersion::Any)
                    };
                    if m.tombstoned(name) {
                        prop_assert!(matches!(r, Err(Error::StreamDeleted { .. })), "{r:?}");
                    } else {
                        prop_assert!(r.is_ok(), "{r:?}");
                        let len = m.len(name);
                        let md = m.md.entry(name).or_default();
                        md.truncate_before = Some(len.max(md.truncate_before.unwrap_or(0)));
                        md.tombstoned = tomb;
                    }
                }
                Op::MaxCount { s, .. } | Op::Truncate { s, .. } => {
                    let name = STREAMS[s];
                    let mut md = m.md.get(name).cloned().unwrap_or_default();
                    match op {
                        Op::MaxCount { count, .. } => md.max_count = count,
                        Op::Truncate { before, .. } => md.truncate_before = before,
                        _ => unreachable!(),
                    }
                    let r = store.set_stream_metadata(name, ExpectedVersion::Any, md.clone());
                    if m.tombstoned(name) {
                        prop_assert!(matches!(r, Err(Error::StreamDeleted { .. })), "{r:?}");
                    } else {
                        prop_assert!(r.is_ok(), "{r:?}");
                        m.md.insert(name, md);
                    }
                }
                Op::Reopen => {
                    store.close().unwrap();
                    drop(store);
                    store = open(dir.path());
                }
            }
            // Every read agrees with the model.
            for name in STREAMS {
                let want = m.visible(name);
                prop_assert_eq!(
                    store.stream_version(name).unwrap(),
                    m.len(name).checked_sub(1)
                );
                if m.tombstoned(name) {
                    let r = store.read_stream_forward(name, 0, 100).map(|_| ());
                    prop_assert!(matches!(r, Err(Error::StreamDeleted { .. })), "{r:?}");
                    let r = replayed(&store, name);
                    prop_assert!(matches!(r, Err(Error::StreamDeleted { .. })), "{r:?}");
                    continue;
                }
                prop_assert_eq!(
                    &numbers(store.read_stream_forward(name, 0, 100).unwrap()),
                    &want
                );
                let mut back = numbers(store.read_stream_backward(name, u64::MAX, 100).unwrap());
                back.reverse();
                prop_assert_eq!(&back, &want);
                prop_assert_eq!(&replayed(&store, name).unwrap(), &want);
                if let Some(&first) = want.first() {
                    prop_assert_eq!(
                        numbers(store.read_stream_forward(name, 0, 1).unwrap()),
                        vec![first]
                    );
                    if first > 0 {
                        prop_assert!(store.read_event(name, first - 1).is_err());
                    }
                }
            }
            let want_all: Vec<_> = m.all.iter().filter(|e| m.shown(e)).cloned().collect();
            prop_assert_eq!(&all_of(&store), &want_all);
            prop_assert_eq!(&replay_all_of(&store), &want_all);
            let want_m: Vec<_> = want_all
                .iter()
                .filter(|(s, _)| s.starts_with("m-"))
                .cloned()
                .collect();
            prop_assert_eq!(&category_of(&store, "m"), &want_m);
            prop_assert_eq!(&type_of(&store, "Happened"), &want_all);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn every_read_agrees_with_a_model_of_the_rules(ops in proptest::collection::vec(op(), 1..30)) {
            run(ops)?;
        }
    }
}

#[test]
fn a_long_run_of_hidden_events_is_passed_over_in_every_all_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Many events in a row that `$all` must pass over, each hidden: more than a call stack per
    // hidden event would hold.
    for chunk in 0..100u64 {
        let events = (0..1000).map(|i| ev(chunk * 1000 + i)).collect::<Vec<_>>();
        store
            .append("gone-1", ExpectedVersion::Any, events)
            .unwrap();
    }
    fill(&store, "kept-1", 2);
    store
        .delete_stream("gone-1", ExpectedVersion::Exact(99_999))
        .unwrap();
    assert_eq!(all_of(&store), pairs("kept-1", 0..2));
    assert_eq!(all_backward_of(&store), pairs("kept-1", 0..2));
    assert_eq!(replay_all_of(&store), pairs("kept-1", 0..2));
}

/// The metadata stream of a stream of the longest name is longer than that name by its `$$`:
/// the store takes it, so such a stream can be deleted, and its metadata events survive a
/// compaction (whose table keeps their names) and a reopen. Found by the `ops` fuzz target.
#[test]
fn a_stream_of_the_longest_name_can_have_metadata_and_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let name = "x".repeat(eventjournal::MAX_STREAM_NAME_LEN);
    let md_stream = eventjournal::metadata_stream(&name);
    let store = open(dir.path());
    fill(&store, &name, 3);
    let keep_one = StreamMetadata {
        max_count: Some(1),
        ..Default::default()
    };
    store
        .set_stream_metadata(&name, ExpectedVersion::NoStream, keep_one.clone())
        .expect("metadata of the longest name");
    assert_eq!(store.stream_metadata(&name).unwrap(), Some((0, keep_one)));
    assert_eq!(
        numbers(store.read_stream_forward(&name, 0, usize::MAX).unwrap()),
        [2]
    );
    store
        .delete_stream(&name, ExpectedVersion::Exact(2))
        .expect("delete the longest name");
    assert!(numbers(store.read_stream_forward(&name, 0, usize::MAX).unwrap()).is_empty());
    assert_eq!(
        numbers(
            store
                .read_stream_forward(&md_stream, 0, usize::MAX)
                .unwrap()
        ),
        [1],
        "the metadata stream shows the metadata in force"
    );
    store.seal().unwrap();
    // The stream's three events and the replaced metadata event.
    assert_eq!(store.compact().unwrap().events_removed, 4);
    store.close().unwrap();

    let store = open(dir.path());
    let (version, md) = store.stream_metadata(&name).unwrap().expect("metadata");
    assert_eq!((version, md.truncate_before), (1, Some(3)));
    assert!(numbers(store.read_stream_forward(&name, 0, usize::MAX).unwrap()).is_empty());
    assert_eq!(store.stream_version(&name).unwrap(), Some(2));
    let r = store
        .append(&name, ExpectedVersion::NoStream, [ev(3)])
        .unwrap();
    assert_eq!(r.version, Some(3));
    store
        .tombstone_stream(&name, ExpectedVersion::Exact(3))
        .expect("tombstone the longest name");
    assert!(matches!(
        store.append(&name, ExpectedVersion::Any, [ev(4)]),
        Err(Error::StreamDeleted { .. })
    ));
    // One byte more is not a metadata stream of any stream.
    let too_long = format!("{md_stream}x");
    assert!(matches!(
        store.read_stream_forward(&too_long, 0, 1),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        store.set_stream_metadata(
            &format!("{name}x"),
            ExpectedVersion::Any,
            StreamMetadata::default()
        ),
        Err(Error::InvalidInput(_))
    ));
    store.close().unwrap();
}

fn open_unsynced(dir: &std::path::Path) -> Store {
    Store::open(
        dir,
        Options::default().durability(eventjournal::Durability::None),
    )
    .expect("open")
}

/// `n` events in each of `streams`, taking turns.
fn round_robin(store: &Store, streams: &[&str], n: u64) {
    for i in 0..n {
        for s in streams {
            store
                .append(s, ExpectedVersion::Any, [ev(i)])
                .expect("append");
        }
    }
}

/// The next event of an unfiltered subscription, as its stream and number, if one is there now.
fn next_of(sub: &mut eventjournal::Subscription) -> Option<(String, u64)> {
    match sub.try_recv().expect("read") {
        Some(eventjournal::SubscriptionItem::Event(e)) => {
            Some((e.stream().to_string(), e.event_number()))
        }
        Some(eventjournal::SubscriptionItem::Checkpoint(_)) => {
            unreachable!("no filter, no checkpoints")
        }
        None => None,
    }
}

/// The next `n` events of an unfiltered subscription (all of them there now).
fn take_of(sub: &mut eventjournal::Subscription, n: usize) -> Vec<(String, u64)> {
    (0..n).map(|_| next_of(sub).expect("an event")).collect()
}

/// Every event an unfiltered subscription has for now.
fn rest_of(sub: &mut eventjournal::Subscription) -> Vec<(String, u64)> {
    std::iter::from_fn(|| next_of(sub)).collect()
}

/// A `$all` subscription keeps the retention rules it applies from one read to the next while
/// nothing is committed; a rule set in the middle of its catch-up (a commit) applies to the very
/// next event it delivers, though those events were already in the log it was reading.
#[test]
fn rules_set_while_a_subscription_catches_up_apply_to_its_next_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_unsynced(dir.path());
    round_robin(&store, &["gone-1", "capped-1", "kept-1"], 600);
    let mut sub = store.subscribe_to_all(AllFrom::Start, None).unwrap();
    // Far enough in for the rules to have been kept over many reads.
    take_of(&mut sub, 300);
    store
        .delete_stream("gone-1", ExpectedVersion::Any)
        .expect("delete");
    store
        .set_stream_metadata(
            "capped-1",
            ExpectedVersion::NoStream,
            StreamMetadata {
                max_count: Some(5),
                ..Default::default()
            },
        )
        .expect("metadata");
    let rest = rest_of(&mut sub);
    assert!(
        !rest.iter().any(|(s, _)| s == "gone-1"),
        "a deleted stream's events were delivered after its delete"
    );
    let capped: Vec<u64> = rest
        .iter()
        .filter(|(s, _)| s == "capped-1")
        .map(|&(_, n)| n)
        .collect();
    assert_eq!(capped, [595, 596, 597, 598, 599]);
    let kept = rest.iter().filter(|(s, _)| s == "kept-1").count();
    assert_eq!(kept, 500, "the stream without rules lost events");
}

/// A subscription that keeps its rules between reads still measures `max_age` against the clock
/// of each read: events that age past it while the subscriber pauses are not delivered.
#[test]
fn events_that_age_while_a_subscriber_pauses_are_not_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_unsynced(dir.path());
    store
        .set_stream_metadata(
            "aging-1",
            ExpectedVersion::NoStream,
            StreamMetadata {
                max_age_secs: Some(1),
                ..Default::default()
            },
        )
        .expect("metadata");
    round_robin(&store, &["aging-1", "kept-1"], 100);
    let mut sub = store.subscribe_to_all(AllFrom::Start, None).unwrap();
    let before = take_of(&mut sub, 10);
    assert!(
        before.iter().any(|(s, _)| s == "aging-1"),
        "young events are delivered: {before:?}"
    );
    std::thread::sleep(Duration::from_millis(1_200));
    let after = rest_of(&mut sub);
    assert!(
        !after.iter().any(|(s, _)| s == "aging-1"),
        "events past their max_age were delivered"
    );
    let kept = before
        .iter()
        .chain(&after)
        .filter(|(s, _)| s == "kept-1")
        .count();
    assert_eq!(kept, 100, "the stream without rules lost events");
}
