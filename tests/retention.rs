//! The rules the store applies to its own streams without being told (issue 14, point 1):
//! superseded consumer checkpoints, snapshots beyond the newest k, and the events a snapshot
//! covers when the journal truncates them. Each rule is checked where readers meet it (stream,
//! `$all`, category, event type, subscriptions), on disk after compaction (a byte scan of every
//! file of the store), and across a reopen.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use eventjournal::journal::{Journal, JournalEvent, JournalState, Journaled, Rejected};
use eventjournal::{
    AllFrom, Durability, Error, EventData, ExpectedVersion, Options, Position, Store, StreamFrom,
    SubscriptionItem,
};
use serde::{Deserialize, Serialize};

fn options() -> Options {
    Options::default()
        .segment_size(16 << 10)
        .durability(Durability::None)
}

/// Every file of the store whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            std::fs::read(p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .collect()
}

fn numbers(store: &Store, stream: &str) -> Vec<u64> {
    store
        .read_stream_forward(stream, 0, usize::MAX)
        .unwrap()
        .map(|e| e.unwrap().event_number())
        .collect()
}

/// `(stream, number)` of every event of `$all`, of `category`, and of `event_type` that belongs
/// to `stream`.
fn everywhere(store: &Store, stream: &str, category: &str, event_type: &str) -> [Vec<u64>; 4] {
    let of = |it: eventjournal::AllEvents| -> Vec<u64> {
        it.map(|e| e.unwrap())
            .filter(|e| e.stream() == stream)
            .map(|e| e.event_number())
            .collect()
    };
    let keyed = |it: eventjournal::StreamEvents<'_>| -> Vec<u64> {
        it.map(|e| e.unwrap())
            .filter(|e| e.stream() == stream)
            .map(|e| e.event_number())
            .collect()
    };
    let mut sub = store.subscribe_to_all(AllFrom::Start, None).unwrap();
    let mut live = Vec::new();
    while let Some(item) = sub.recv_timeout(Duration::from_millis(50)).unwrap() {
        if let SubscriptionItem::Event(e) = item {
            if e.stream() == stream {
                live.push(e.event_number());
            }
        }
    }
    [
        of(store.read_all_forward(Position::START, usize::MAX).unwrap()),
        keyed(store.read_category(category, 0, usize::MAX).unwrap()),
        keyed(store.read_event_type(event_type, 0, usize::MAX).unwrap()),
        live,
    ]
}

#[test]
fn superseded_checkpoints_are_hidden_everywhere_and_compacted_away() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let mut saved = Vec::new();
    for i in 0..300u32 {
        let r = store
            .append(
                "work-1",
                ExpectedVersion::Any,
                [EventData::new("Done", format!("job {i}"))],
            )
            .unwrap();
        if i % 3 == 0 {
            let p = r.position.unwrap();
            store.save_checkpoint("projector", p).unwrap();
            saved.push(p);
        }
    }
    let newest = *saved.last().unwrap();
    let only_newest = vec![saved.len() as u64 - 1];
    let check = |store: &Store| {
        assert_eq!(store.load_checkpoint("projector").unwrap(), Some(newest));
        assert_eq!(numbers(store, "$checkpoint-projector"), only_newest);
        for seen in everywhere(store, "$checkpoint-projector", "$checkpoint", "$checkpoint") {
            assert_eq!(seen, only_newest);
        }
        let mut sub = store
            .subscribe_to_stream("$checkpoint-projector", StreamFrom::Start)
            .unwrap();
        let first = sub.recv_timeout(Duration::from_millis(50)).unwrap();
        assert!(
            matches!(&first, Some(SubscriptionItem::Event(e)) if e.event_number() == only_newest[0]),
            "{first:?}"
        );
        assert!(sub.try_recv().unwrap().is_none());
    };
    check(&store);
    // A checkpoint's record: its type, then its data (the position).
    let record = |p: Position| [b"$checkpoint".as_slice(), &p.0.to_le_bytes()].concat();
    assert!(!files_holding(dir.path(), &record(saved[0])).is_empty());

    store.seal().unwrap();
    let report = store.compact().unwrap();
    assert_eq!(report.events_removed, saved.len() as u64 - 1, "{report:?}");
    for &p in &saved[..saved.len() - 1] {
        let left = files_holding(dir.path(), &record(p));
        assert!(left.is_empty(), "checkpoint {p:?} is still in {left:?}");
    }
    assert_eq!(files_holding(dir.path(), &record(newest)).len(), 1);
    check(&store);
    store.close().unwrap();

    let store = Store::open(dir.path(), options()).unwrap();
    check(&store);
    assert_eq!(store.compact().unwrap().events_removed, 0);
    store.close().unwrap();
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Added {
    n: u64,
    note: String,
}

impl JournalEvent for Added {
    fn event_type(&self) -> &'static str {
        "Added"
    }
}

/// A counter whose snapshots say which version they hold (`state-at-00042`): bytes found only in
/// snapshots, for the scans.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Counter {
    total: u64,
    count: u64,
    label: String,
}

impl JournalState for Counter {
    type Event = Added;
    type Error = Rejected;
    const TYPE: &'static str = "counter";
    fn apply(&mut self, e: &Added) -> Result<(), Rejected> {
        self.total += e.n;
        self.count += 1;
        self.label = format!("state-at-{:05}", self.count);
        Ok(())
    }
}

/// The same actor type with another snapshot encoding: it cannot use `Counter`'s snapshots.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct CounterV2 {
    total: u64,
}

impl JournalState for CounterV2 {
    type Event = Added;
    type Error = Rejected;
    const TYPE: &'static str = "counter";
    const SNAPSHOT_VERSION: u32 = 2;
    fn apply(&mut self, e: &Added) -> Result<(), Rejected> {
        self.total += e.n;
        Ok(())
    }
}

fn note(i: u64) -> String {
    format!("event-{i:05}")
}

/// Confirms events `from..to` of actor `id`, one per confirm (so snapshots fall where
/// `snapshot_every` puts them); returns the actor.
fn raise<S: JournalState<Event = Added>>(
    store: &Arc<Store>,
    journal: &Arc<Journal<S>>,
    id: &str,
    from: u64,
    to: u64,
) -> Journaled<S> {
    let mut actor = Journaled::activate(store.clone(), journal.clone(), id).unwrap();
    assert_eq!(actor.version(), from);
    for i in from..to {
        actor
            .raise_event(Added {
                n: i + 1,
                note: note(i),
            })
            .unwrap();
        actor.confirm_events().unwrap();
    }
    actor
}

fn expected(count: u64) -> Counter {
    Counter {
        total: count * (count + 1) / 2,
        count,
        label: format!("state-at-{count:05}"),
    }
}

#[test]
fn snapshots_beyond_the_newest_k_are_hidden_and_compacted_away() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), options()).unwrap());
    let keep3 = Arc::new(
        Journal::<Counter>::new()
            .snapshot_every(5)
            .keep_snapshots(3),
    );
    raise(&store, &keep3, "a", 0, 50);
    // The default keeps one: no metadata written for it.
    let keep1 = Arc::new(Journal::<Counter>::new().snapshot_every(5));
    raise(&store, &keep1, "b", 0, 20);

    let check = |store: &Store| {
        assert_eq!(numbers(store, "$snapshot-counter-a"), [7, 8, 9]);
        assert_eq!(
            store
                .stream_metadata("$snapshot-counter-a")
                .unwrap()
                .and_then(|(_, md)| md.max_count),
            Some(3)
        );
        assert_eq!(numbers(store, "$snapshot-counter-b"), [3]);
        assert_eq!(store.stream_metadata("$snapshot-counter-b").unwrap(), None);
        for seen in everywhere(store, "$snapshot-counter-a", "$snapshot", "$snapshot") {
            assert_eq!(seen, [7, 8, 9]);
        }
        for seen in everywhere(store, "$snapshot-counter-b", "$snapshot", "$snapshot") {
            assert_eq!(seen, [3]);
        }
    };
    check(&store);
    store.seal().unwrap();
    let report = store.compact().unwrap();
    assert_eq!(report.events_removed, 7 + 3, "{report:?}");
    // Actor a's snapshots at 5..35 are gone, those at 40..50 stay; b's at 5..15 are gone (its
    // newest, at 20, is the only `state-at-00020`: a's was removed).
    for v in (5..=35).step_by(5).filter(|&v| v != 20) {
        let gone = format!("state-at-{v:05}");
        assert_eq!(
            files_holding(dir.path(), gone.as_bytes()),
            Vec::<PathBuf>::new(),
            "{gone}"
        );
    }
    for v in [20, 40, 45, 50] {
        let kept = format!("state-at-{v:05}");
        assert_eq!(
            files_holding(dir.path(), kept.as_bytes()).len(),
            1,
            "{kept}"
        );
    }
    check(&store);
    drop(store);

    // A process that does not know k (snapshots off) keeps what the metadata says.
    let store = Arc::new(Store::open(dir.path(), options()).unwrap());
    check(&store);
    let plain = Arc::new(Journal::<Counter>::new());
    let a = Journaled::activate(store.clone(), plain.clone(), "a").unwrap();
    assert_eq!((a.state(), a.version()), (&expected(50), 50));
    let b = Journaled::activate(store.clone(), plain, "b").unwrap();
    assert_eq!((b.state(), b.version()), (&expected(20), 20));
    assert_eq!(store.compact().unwrap().events_removed, 0);
}

#[test]
fn truncated_covered_events_are_hidden_and_compacted_while_the_actor_keeps_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), options()).unwrap());
    let journal = Arc::new(
        Journal::<Counter>::new()
            .snapshot_every(10)
            .truncate_covered_events(true),
    );
    // Metadata of the application's own is kept beside the truncation.
    let mut md = eventjournal::StreamMetadata::default();
    md.custom.insert("owner".into(), "billing".into());
    store
        .set_stream_metadata("counter-t", ExpectedVersion::NoStream, md)
        .unwrap();
    let actor = raise(&store, &journal, "t", 0, 35);
    assert_eq!(actor.snapshot_version(), 30);
    assert_eq!((actor.state(), actor.version()), (&expected(35), 35));

    // The snapshot at 30 covers events 0..30; all but the last of them are hidden.
    let check = |store: &Arc<Store>| {
        let visible: Vec<u64> = (29..35).collect();
        assert_eq!(numbers(store, "counter-t"), visible);
        for seen in everywhere(store, "counter-t", "counter", "Added") {
            assert_eq!(seen, visible);
        }
        let (_, md) = store.stream_metadata("counter-t").unwrap().unwrap();
        assert_eq!(md.truncate_before, Some(29));
        assert_eq!(md.custom["owner"], "billing");
        // Activation starts from the snapshot, with snapshots on or off.
        for journal in [journal.clone(), Arc::new(Journal::<Counter>::new())] {
            let a = Journaled::activate(store.clone(), journal, "t").unwrap();
            assert_eq!((a.state(), a.version()), (&expected(35), 35));
        }
    };
    check(&store);
    store.seal().unwrap();
    let report = store.compact().unwrap();
    // 29 events, the 2 snapshots replaced, and the metadata events replaced (the application's
    // own, and the truncations at 9 and 19).
    assert_eq!(report.events_removed, 29 + 2 + 3, "{report:?}");
    for i in 0..29 {
        assert_eq!(
            files_holding(dir.path(), note(i).as_bytes()),
            Vec::<PathBuf>::new()
        );
    }
    for i in 29..35 {
        assert_eq!(files_holding(dir.path(), note(i).as_bytes()).len(), 1);
    }
    check(&store);
    drop(actor);
    drop(store);

    let store = Arc::new(Store::open(dir.path(), options()).unwrap());
    check(&store);
    // The actor goes on: the next snapshot moves the truncation up.
    let actor = raise(&store, &journal, "t", 35, 42);
    assert_eq!(actor.snapshot_version(), 40);
    assert_eq!(numbers(&store, "counter-t"), (39..42).collect::<Vec<_>>());
    let a = Journaled::activate(store.clone(), journal.clone(), "t").unwrap();
    assert_eq!((a.state(), a.version()), (&expected(42), 42));
}

#[test]
fn truncated_events_without_a_usable_snapshot_fail_activation() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), options()).unwrap());
    let journal = Arc::new(
        Journal::<Counter>::new()
            .snapshot_every(10)
            .truncate_covered_events(true),
    );
    raise(&store, &journal, "t", 0, 25);
    // Another snapshot encoding cannot use the snapshot, and the events before 19 are gone.
    let v2 = Arc::new(Journal::<CounterV2>::new().snapshot_every(10));
    match Journaled::activate(store.clone(), v2.clone(), "t") {
        Err(Error::SnapshotUnusable { stream, covers }) => {
            assert_eq!((stream.as_str(), covers), ("counter-t", 20));
        }
        other => panic!("{:?}", other.map(|a| a.version())),
    }
    // Without truncation an unusable snapshot is passed over: the events are all there.
    let plain = Arc::new(Journal::<Counter>::new().snapshot_every(10));
    raise(&store, &plain, "u", 0, 25);
    let u = Journaled::activate(store.clone(), v2.clone(), "u").unwrap();
    assert_eq!((u.state().total, u.version()), (25 * 26 / 2, 25));

    // A soft delete hides the witness too: the actor starts again, from nothing, whatever its
    // snapshots.
    store
        .delete_stream("counter-t", ExpectedVersion::Any)
        .unwrap();
    // (Its version reads 0 until it appends again, numbering on from 25.)
    let t = Journaled::activate(store.clone(), v2, "t").unwrap();
    assert_eq!((t.state(), t.version()), (&CounterV2::default(), 0));
    let mut t = Journaled::activate(store.clone(), journal, "t").unwrap();
    assert_eq!((t.state(), t.version()), (&Counter::default(), 0));
    t.raise_event(Added {
        n: 7,
        note: note(99),
    })
    .unwrap();
    t.confirm_events().unwrap();
    assert_eq!((t.state().total, t.version()), (7, 26));
}
