//! Category and event type indexes: reads and subscriptions served by them equal a scan of
//! `$all`, across sealed segments, reopening, and index files rebuilt from the log.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use eventjournal::*;
use proptest::prelude::*;

const STREAMS: &[&str] = &[
    "account-1",
    "account-2",
    "order-1",
    "order",
    "audit-x-y",
    "a-1",
];
const TYPES: &[&str] = &["Opened", "Deposited", "DepositFailed", "Shipped"];

/// `(position, stream, type, data)` of events, for comparing.
fn key(e: &RecordedEvent) -> (u64, String, String, Vec<u8>) {
    (
        e.position().0,
        e.stream().to_string(),
        e.event_type().to_string(),
        e.data().to_vec(),
    )
}

fn scan(
    store: &Store,
    keep: impl Fn(&RecordedEvent) -> bool,
) -> Vec<(u64, String, String, Vec<u8>)> {
    common::all(store)
        .iter()
        .filter(|e| keep(e))
        .map(key)
        .collect()
}

fn by_category(store: &Store, category: &str) -> Vec<(u64, String, String, Vec<u8>)> {
    store
        .read_category(category, 0, usize::MAX)
        .unwrap()
        .map(|e| key(&e.unwrap()))
        .collect()
}

fn by_type(store: &Store, event_type: &str) -> Vec<(u64, String, String, Vec<u8>)> {
    store
        .read_event_type(event_type, 0, usize::MAX)
        .unwrap()
        .map(|e| key(&e.unwrap()))
        .collect()
}

/// Every category and event type read equals the matching part of `$all`.
fn check_all(store: &Store, ctx: &str) {
    let categories: BTreeSet<&str> = STREAMS.iter().map(|s| category_of(s)).collect();
    for c in categories {
        let expect = scan(store, |e| category_of(e.stream()) == c);
        assert_eq!(by_category(store, c), expect, "{ctx}: category {c}");
        assert_eq!(
            store.category_len(c).unwrap(),
            expect.len() as u64,
            "{ctx}: {c} length"
        );
    }
    for t in TYPES {
        let expect = scan(store, |e| e.event_type() == *t);
        assert_eq!(by_type(store, t), expect, "{ctx}: type {t}");
        assert_eq!(
            store.event_type_len(t).unwrap(),
            expect.len() as u64,
            "{ctx}: {t} length"
        );
    }
    // Keys are not streams.
    let names = store.streams().unwrap();
    assert!(
        names.iter().all(|n| STREAMS.contains(&n.as_str())),
        "{ctx}: {names:?}"
    );
}

/// Appends `batches` (each a list of (stream index, type index, data length)), one stream per
/// append or several streams in one `append_multi`.
fn write(store: &Store, batches: &[Vec<(usize, usize, usize)>]) {
    for (b, batch) in batches.iter().enumerate() {
        let mut writes: Vec<StreamWrite> = Vec::new();
        for (k, &(s, t, len)) in batch.iter().enumerate() {
            let event = EventData::new(TYPES[t], vec![(b * 7 + k) as u8; len]);
            match writes.iter_mut().find(|w| w.stream == STREAMS[s]) {
                Some(w) => w.events.push(event),
                None => writes.push(StreamWrite::new(
                    STREAMS[s],
                    ExpectedVersion::Any,
                    vec![event],
                )),
            }
        }
        store.append_multi(writes).unwrap();
    }
}

fn remove_index_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "idx") {
            std::fs::remove_file(p).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Reads by category and by event type equal `$all` filtered, while the store is open, after
    /// reopening (index files of sealed segments), and after the index files are deleted (rebuilt
    /// from the log).
    #[test]
    fn category_and_type_reads_equal_a_scan_of_all(
        batches in prop::collection::vec(
            prop::collection::vec((0..STREAMS.len(), 0..TYPES.len(), 0usize..600), 1..5),
            1..60,
        )
    ) {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options::default().durability(Durability::None).segment_size(8192);
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        write(&store, &batches);
        check_all(&store, "open");
        store.close().unwrap();

        let store = Store::open(dir.path(), opts.clone()).unwrap();
        check_all(&store, "reopened");
        // More appends after a reopen continue the keys' numbering.
        write(&store, &batches[..batches.len().min(5)]);
        check_all(&store, "appended after reopening");
        store.close().unwrap();

        remove_index_files(dir.path());
        let store = Store::open(dir.path(), opts).unwrap();
        check_all(&store, "index files rebuilt");
    }
}

#[test]
fn reads_from_an_offset_and_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    for i in 0..10u8 {
        let stream = if i % 2 == 0 { "account-1" } else { "account-2" };
        store
            .append(
                stream,
                ExpectedVersion::Any,
                [EventData::new("Deposited", vec![i])],
            )
            .unwrap();
    }
    let from_4: Vec<u8> = store
        .read_category("account", 4, 3)
        .unwrap()
        .map(|e| e.unwrap().data()[0])
        .collect();
    assert_eq!(from_4, [4, 5, 6]);
    assert_eq!(store.read_category("nothing", 0, 10).unwrap().count(), 0);
    assert!(matches!(
        store.read_category("", 0, 1),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        store.read_event_type("", 0, 1),
        Err(Error::InvalidInput(_))
    ));
    // Stream names may not pose as index keys.
    assert!(matches!(
        store.append(
            "\0c:account",
            ExpectedVersion::Any,
            [EventData::new("T", "x")]
        ),
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(store.stream_version("\0c:account").unwrap(), None);
    assert!(matches!(
        store.read_stream_forward("\0t:Deposited", 0, 1),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn a_category_subscription_catches_up_then_follows() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().durability(Durability::None)).unwrap();
    store
        .append(
            "account-1",
            ExpectedVersion::Any,
            [EventData::new("Opened", "1")],
        )
        .unwrap();
    store
        .append(
            "order-1",
            ExpectedVersion::Any,
            [EventData::new("Opened", "x")],
        )
        .unwrap();
    let mut accounts = store
        .subscribe_to_category("account", StreamFrom::Start)
        .unwrap()
        .with_timeout(Duration::from_secs(20));
    let mut deposits = store
        .subscribe_to_event_type("Deposited", StreamFrom::Start)
        .unwrap()
        .with_timeout(Duration::from_secs(20));
    let writer = std::thread::scope(|s| {
        let h = s.spawn(|| {
            for i in 0..50 {
                let stream = ["account-2", "order-2", "account-1"][i % 3];
                store
                    .append(
                        stream,
                        ExpectedVersion::Any,
                        [EventData::new("Deposited", i.to_string())],
                    )
                    .unwrap();
            }
        });
        // As many as will come (1 + 33 account events, 50 deposits), each wait bounded.
        let got: Vec<RecordedEvent> = accounts.by_ref().take(34).map(|e| e.unwrap()).collect();
        let typed: Vec<RecordedEvent> = deposits.by_ref().take(50).map(|e| e.unwrap()).collect();
        h.join().unwrap();
        (got, typed)
    });
    let (got, typed) = writer;
    let expect_accounts = scan(&store, |e| category_of(e.stream()) == "account");
    let expect_types = scan(&store, |e| e.event_type() == "Deposited");
    assert_eq!(got.iter().map(key).collect::<Vec<_>>(), expect_accounts);
    assert_eq!(typed.iter().map(key).collect::<Vec<_>>(), expect_types);
    assert_eq!(expect_accounts.len(), 1 + 33);
    // And nothing more arrives.
    assert!(accounts
        .recv_timeout(Duration::from_millis(50))
        .unwrap()
        .is_none());
}

/// Names that start with NUL but are not index keys are ordinary stream names (stores written
/// before the indexes may hold them); `replay_stream` refuses key names as the other reads do.
#[test]
fn only_key_shaped_names_are_reserved() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().durability(Durability::None)).unwrap();
    store
        .append(
            "\0legacy",
            ExpectedVersion::NoStream,
            [EventData::new("T", "x")],
        )
        .unwrap();
    assert_eq!(store.stream_version("\0legacy").unwrap(), Some(0));
    assert!(store.streams().unwrap().contains(&"\0legacy".to_string()));
    assert!(matches!(
        store.replay_stream("\0t:T", 0, |_| std::ops::ControlFlow::Continue(())),
        Err(Error::InvalidInput(_))
    ));
    store.close().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(common::datas(&store, "\0legacy"), ["x"]);
    assert_eq!(store.read_event_type("T", 0, 10).unwrap().count(), 1);
}

/// A batch with thousands of event types never seen before is indexed in time linear in its
/// size (a quadratic search took seconds for 20,000), and every type is readable.
#[test]
fn a_batch_of_many_new_event_types() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().durability(Durability::None)).unwrap();
    let events: Vec<EventData> = (0..20_000)
        .map(|i| EventData::new(format!("Type{i}"), "x"))
        .collect();
    store
        .append("many-1", ExpectedVersion::Any, events)
        .unwrap();
    for i in [0, 7, 19_999] {
        let got: Vec<u64> = store
            .read_event_type(&format!("Type{i}"), 0, 10)
            .unwrap()
            .map(|e| e.unwrap().event_number())
            .collect();
        assert_eq!(got, [i]);
    }
    assert_eq!(store.category_len("many").unwrap(), 20_000);
}
