//! Appends: expected versions, idempotent retries, multi-stream batches.

mod common;

use common::*;
use eventjournal::*;

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, Options::default()).unwrap()
}

fn wrong(r: Result<AppendResult>) -> (ExpectedVersion, Option<u64>) {
    match r {
        Err(Error::WrongExpectedVersion {
            expected, actual, ..
        }) => (expected, actual),
        other => panic!("expected WrongExpectedVersion, got {other:?}"),
    }
}

#[test]
fn expected_version_rules() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    // NoStream on a new stream, then Exact.
    let r = s
        .append("a", ExpectedVersion::NoStream, events("a", 0, 2))
        .unwrap();
    assert_eq!(r.version, Some(1));
    assert_eq!(r.next_expected_version(), ExpectedVersion::Exact(1));
    assert_eq!(
        wrong(s.append("a", ExpectedVersion::NoStream, events("a", 2, 1))),
        (ExpectedVersion::NoStream, Some(1))
    );
    assert_eq!(
        wrong(s.append("a", ExpectedVersion::Exact(0), events("a", 2, 1))),
        (ExpectedVersion::Exact(0), Some(1))
    );
    assert_eq!(
        wrong(s.append("a", ExpectedVersion::Exact(5), events("a", 2, 1))),
        (ExpectedVersion::Exact(5), Some(1))
    );
    s.append("a", ExpectedVersion::Exact(1), events("a", 2, 1))
        .unwrap();
    s.append("a", ExpectedVersion::StreamExists, events("a", 3, 1))
        .unwrap();
    s.append("a", ExpectedVersion::Any, events("a", 4, 1))
        .unwrap();
    // StreamExists and Exact on a missing stream.
    assert_eq!(
        wrong(s.append("b", ExpectedVersion::StreamExists, events("b", 0, 1))),
        (ExpectedVersion::StreamExists, None)
    );
    assert_eq!(
        wrong(s.append("b", ExpectedVersion::Exact(0), events("b", 0, 1))),
        (ExpectedVersion::Exact(0), None)
    );
    s.append("b", ExpectedVersion::Any, events("b", 0, 1))
        .unwrap();
    // Failed appends wrote nothing.
    assert_eq!(datas(&s, "a"), ["a:0", "a:1", "a:2", "a:3", "a:4"]);
    assert_eq!(datas(&s, "b"), ["b:0"]);
    assert_eq!(all(&s).len(), 6);
}

#[test]
fn wrong_expected_version_error_names_stream_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.append("acct-1", ExpectedVersion::Any, events("x", 0, 3))
        .unwrap();
    let e = s
        .append("acct-1", ExpectedVersion::Exact(0), events("x", 3, 1))
        .unwrap_err();
    match &e {
        Error::WrongExpectedVersion {
            stream,
            expected,
            actual,
        } => {
            assert_eq!(stream, "acct-1");
            assert_eq!(*expected, ExpectedVersion::Exact(0));
            assert_eq!(*actual, Some(2));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("acct-1"));
}

#[test]
fn empty_batch_checks_version_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let head = s.head();
    let r = s.append("e", ExpectedVersion::NoStream, []).unwrap();
    assert_eq!(r.version, None);
    assert_eq!(r.position, None);
    assert_eq!(s.head(), head);
    assert!(s.streams().unwrap().is_empty());
    wrong(s.append("e", ExpectedVersion::StreamExists, []));
    s.append("e", ExpectedVersion::Any, events("e", 0, 2))
        .unwrap();
    let head = s.head();
    let r = s.append("e", ExpectedVersion::Exact(1), []).unwrap();
    assert_eq!(r.version, Some(1));
    assert_eq!(r.position, Some(stream(&s, "e")[1].position()));
    wrong(s.append("e", ExpectedVersion::Exact(0), []));
    assert_eq!(s.head(), head);
}

#[test]
fn event_fields_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let id = EventId([7; 16]);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let r = s
        .append(
            "acct",
            ExpectedVersion::Any,
            [
                EventData::new("Opened", "data-1")
                    .with_id(id)
                    .with_metadata("meta"),
                EventData::new("Deposited", vec![0u8, 1, 2]),
            ],
        )
        .unwrap();
    let evs = stream(&s, "acct");
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0].id(), id);
    assert_eq!(evs[0].event_type(), "Opened");
    assert_eq!(evs[0].data(), b"data-1");
    assert_eq!(evs[0].metadata(), b"meta");
    assert_eq!(evs[0].stream(), "acct");
    assert_eq!(evs[1].event_number(), 1);
    assert_eq!(evs[1].data(), &[0, 1, 2]);
    assert!(evs[1].metadata().is_empty());
    assert_ne!(evs[1].id(), id, "a generated id");
    assert_ne!(evs[1].id(), EventId::default());
    assert!(evs[0].timestamp_micros() >= before);
    assert_eq!(r.position, Some(evs[1].position()));
    assert_eq!(r.version, Some(1));
    // Generated ids differ between events.
    let a = EventData::new("T", "x");
    let b = EventData::new("T", "x");
    assert_ne!(a.id(), b.id());
}

#[test]
fn idempotent_retry_with_exact_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.append("a", ExpectedVersion::NoStream, events("a", 0, 2))
        .unwrap();
    let batch = events("a", 2, 3);
    let first = s
        .append("a", ExpectedVersion::Exact(1), batch.clone())
        .unwrap();
    s.append("a", ExpectedVersion::Exact(4), events("a", 5, 1))
        .unwrap();
    let head = s.head();
    // Same ids, same expected version: success, original result, nothing written.
    let again = s
        .append("a", ExpectedVersion::Exact(1), batch.clone())
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(s.head(), head);
    // A prefix of the batch is also a retry of what was written from n+1 on.
    let prefix = s
        .append("a", ExpectedVersion::Exact(1), batch[..2].to_vec())
        .unwrap();
    assert_eq!(prefix.version, Some(3));
    // Different ids, or the batch shifted, or longer than what is stored: wrong version.
    wrong(s.append("a", ExpectedVersion::Exact(1), events("a", 9, 3)));
    wrong(s.append("a", ExpectedVersion::Exact(2), batch.clone()));
    let mut longer = batch.clone();
    longer.extend(events("a", 10, 3));
    wrong(s.append("a", ExpectedVersion::Exact(1), longer));
    assert_eq!(s.head(), head);
    assert_eq!(stream(&s, "a").len(), 6);
}

#[test]
fn idempotent_retry_with_no_stream_and_any() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let batch = events("a", 0, 2);
    let first = s
        .append("a", ExpectedVersion::NoStream, batch.clone())
        .unwrap();
    assert_eq!(
        s.append("a", ExpectedVersion::NoStream, batch.clone())
            .unwrap(),
        first
    );
    let any_batch = events("a", 2, 2);
    let any_first = s
        .append("a", ExpectedVersion::Any, any_batch.clone())
        .unwrap();
    s.append("a", ExpectedVersion::Any, events("a", 4, 1))
        .unwrap();
    let head = s.head();
    assert_eq!(
        s.append("a", ExpectedVersion::Any, any_batch.clone())
            .unwrap(),
        any_first
    );
    assert_eq!(
        s.append("a", ExpectedVersion::StreamExists, any_batch.clone())
            .unwrap(),
        any_first
    );
    // First id known but the rest differs: wrong version.
    let mut mixed = vec![any_batch[0].clone()];
    mixed.extend(events("a", 20, 1));
    wrong(s.append("a", ExpectedVersion::Any, mixed));
    assert_eq!(s.head(), head);
    assert_eq!(stream(&s, "a").len(), 5);
}

#[test]
fn idempotency_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let batch = events("a", 0, 3);
    let any_batch = events("a", 3, 2);
    let (first, any_first) = {
        let s = open(dir.path());
        let r = s
            .append("a", ExpectedVersion::NoStream, batch.clone())
            .unwrap();
        let r2 = s
            .append("a", ExpectedVersion::Any, any_batch.clone())
            .unwrap();
        s.close().unwrap();
        (r, r2)
    };
    let s = open(dir.path());
    assert_eq!(
        s.append("a", ExpectedVersion::NoStream, batch.clone())
            .unwrap(),
        first
    );
    assert_eq!(
        s.append("a", ExpectedVersion::Any, any_batch.clone())
            .unwrap(),
        any_first
    );
    assert_eq!(stream(&s, "a").len(), 5);
    // And after a crash (no clean close: the index file is stale or missing).
    let snap = tempfile::tempdir().unwrap();
    s.append("a", ExpectedVersion::Exact(4), events("a", 5, 1))
        .unwrap();
    snapshot(dir.path(), snap.path());
    let c = open(snap.path());
    assert_eq!(
        c.append("a", ExpectedVersion::Exact(2), any_batch).unwrap(),
        any_first
    );
    assert_eq!(stream(&c, "a").len(), 6);
}

#[test]
fn multi_stream_append_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.append("a", ExpectedVersion::Any, events("a", 0, 1))
        .unwrap();
    let head = s.head();
    let err = s
        .append_multi(vec![
            StreamWrite::new("a", ExpectedVersion::Exact(0), events("a", 1, 2)),
            StreamWrite::new("b", ExpectedVersion::Exact(3), events("b", 0, 2)),
        ])
        .unwrap_err();
    assert!(matches!(
        err,
        Error::WrongExpectedVersion { ref stream, actual: None, .. } if stream == "b"
    ));
    assert_eq!(s.head(), head);
    assert_eq!(stream(&s, "a").len(), 1);
    assert!(stream(&s, "b").is_empty());

    let rs = s
        .append_multi(vec![
            StreamWrite::new("a", ExpectedVersion::Exact(0), events("a", 1, 2)),
            StreamWrite::new("b", ExpectedVersion::NoStream, events("b", 0, 2)),
            StreamWrite::new("c", ExpectedVersion::Any, vec![]),
        ])
        .unwrap();
    assert_eq!(rs.len(), 3);
    assert_eq!(rs[0].version, Some(2));
    assert_eq!(rs[1].version, Some(1));
    assert_eq!(rs[2].version, None);
    // One contiguous position range in $all: the four new events follow each other.
    let evs = all(&s);
    assert_eq!(evs.len(), 5);
    for w in evs[1..].windows(2) {
        assert_eq!(w[0].next_position(), w[1].position());
    }
    assert_eq!(
        evs[1..]
            .iter()
            .map(|e| (e.stream().to_string(), e.event_number()))
            .collect::<Vec<_>>(),
        [
            ("a".into(), 1),
            ("a".into(), 2),
            ("b".into(), 0),
            ("b".into(), 1)
        ]
    );
    // A retry of the whole multi-stream batch writes nothing and answers the same.
    let again = s
        .append_multi(vec![
            StreamWrite::new("a", ExpectedVersion::Exact(0), evs_data(&s, "a", 1)),
            StreamWrite::new("b", ExpectedVersion::NoStream, evs_data(&s, "b", 0)),
        ])
        .unwrap();
    assert_eq!(again[..], rs[..2]);
    assert_eq!(all(&s).len(), 5);
}

/// The stored events of `stream` from `from` on, as EventData with their original ids.
fn evs_data(s: &Store, name: &str, from: usize) -> Vec<EventData> {
    stream(s, name)[from..]
        .iter()
        .map(|e| {
            EventData::new(e.event_type(), e.data_bytes())
                .with_id(e.id())
                .with_metadata(e.metadata_bytes())
        })
        .collect()
}

#[test]
fn multi_stream_rejects_duplicate_streams() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let e = s
        .append_multi(vec![
            StreamWrite::new("a", ExpectedVersion::Any, events("a", 0, 1)),
            StreamWrite::new("a", ExpectedVersion::Any, events("a", 1, 1)),
        ])
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    assert!(all(&s).is_empty());
}

#[test]
fn many_appends_roll_segments_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .segment_size(8192)
        .durability(Durability::None);
    {
        let s = Store::open(dir.path(), opts.clone()).unwrap();
        for i in 0..500 {
            let name = format!("s-{}", i % 5);
            s.append(&name, ExpectedVersion::Any, events(&name, i / 5, 1))
                .unwrap();
        }
        s.close().unwrap();
    }
    let segs = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .ends_with(".seg")
        })
        .count();
    assert!(segs >= 4, "only {segs} segments");
    let s = Store::open(dir.path(), opts).unwrap();
    for k in 0..5 {
        let name = format!("s-{k}");
        let d = datas(&s, &name);
        assert_eq!(d.len(), 100);
        assert_eq!(d[99], format!("{name}:99"));
    }
    assert_eq!(all(&s).len(), 500);
}

#[test]
fn batch_larger_than_a_segment_gets_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default().segment_size(4096);
    let s = Store::open(dir.path(), opts.clone()).unwrap();
    s.append("a", ExpectedVersion::Any, events("a", 0, 1))
        .unwrap();
    let big = vec![EventData::new("Big", vec![9u8; 20_000]); 3]
        .into_iter()
        .map(|e| e.with_id(EventId::new_random()))
        .collect::<Vec<_>>();
    s.append("a", ExpectedVersion::Exact(0), big).unwrap();
    s.append("a", ExpectedVersion::Exact(3), events("a", 4, 1))
        .unwrap();
    drop(s);
    let s = Store::open(dir.path(), opts).unwrap();
    let evs = stream(&s, "a");
    assert_eq!(evs.len(), 5);
    assert_eq!(evs[2].data().len(), 20_000);
    assert_eq!(all(&s).len(), 5);
}

#[test]
fn any_retries_on_long_streams_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default().durability(Durability::None);
    let early = events("long", 0, 3);
    let (early_result, late_result, late) = {
        let s = Store::open(dir.path(), opts.clone()).unwrap();
        let r = s
            .append("long", ExpectedVersion::Any, early.clone())
            .unwrap();
        for i in 0..200 {
            s.append("long", ExpectedVersion::Any, events("long", 3 + i, 1))
                .unwrap();
        }
        let late = events("long", 500, 2);
        let r2 = s
            .append("long", ExpectedVersion::Any, late.clone())
            .unwrap();
        // Retries while the store is open: the early batch deep in the stream, the late one.
        assert_eq!(
            s.append("long", ExpectedVersion::Any, early.clone())
                .unwrap(),
            r
        );
        assert_eq!(
            s.append("long", ExpectedVersion::Any, late.clone())
                .unwrap(),
            r2
        );
        s.close().unwrap();
        (r, r2, late)
    };
    let s = Store::open(dir.path(), opts).unwrap();
    let head = s.head();
    assert_eq!(
        s.append("long", ExpectedVersion::StreamExists, early.clone())
            .unwrap(),
        early_result
    );
    assert_eq!(
        s.append("long", ExpectedVersion::Any, late.clone())
            .unwrap(),
        late_result
    );
    // First id known, second not: wrong version, nothing written.
    let mut mixed = vec![early[0].clone()];
    mixed.extend(events("long", 900, 1));
    wrong(s.append("long", ExpectedVersion::Any, mixed));
    assert_eq!(s.head(), head);
    // New ids are written, and a retry of them is recognised straight away.
    let fresh = events("long", 1000, 2);
    let r = s
        .append("long", ExpectedVersion::Any, fresh.clone())
        .unwrap();
    assert_eq!(r.version, Some(206));
    assert_eq!(s.append("long", ExpectedVersion::Any, fresh).unwrap(), r);
    assert_eq!(s.stream_version("long").unwrap(), Some(206));
}
