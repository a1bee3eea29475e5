//! Bad input from callers: typed errors, nothing written.

mod common;

use common::*;
use eventjournal::*;

#[test]
fn bad_stream_names() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default()).unwrap();
    let long = "x".repeat(MAX_STREAM_NAME_LEN + 1);
    for name in ["", long.as_str()] {
        assert!(matches!(
            s.append(name, ExpectedVersion::Any, events("x", 0, 1)),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            s.read_stream_forward(name, 0, 1),
            Err(Error::InvalidInput(_))
        ));
    }
    let ok = "y".repeat(MAX_STREAM_NAME_LEN);
    s.append(&ok, ExpectedVersion::Any, events("y", 0, 1))
        .unwrap();
    assert_eq!(s.streams().unwrap(), [ok]);
    assert_eq!(all(&s).len(), 1);
}

#[test]
fn bad_event_types() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default()).unwrap();
    let long = "t".repeat(MAX_EVENT_TYPE_LEN + 1);
    for t in ["", long.as_str()] {
        let r = s.append("a", ExpectedVersion::Any, [EventData::new(t, "x")]);
        assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
    }
    assert!(all(&s).is_empty());
}

#[test]
fn oversized_events_are_rejected_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default().max_event_size(1000)).unwrap();
    let r = s.append(
        "a",
        ExpectedVersion::Any,
        [
            EventData::new("T", vec![0u8; 10]),
            EventData::new("T", vec![0u8; 999]),
        ],
    );
    match r {
        Err(Error::EventTooLarge { size, max }) => {
            assert_eq!(max, 1000);
            assert_eq!(size, 1 + 1 + 999);
        }
        other => panic!("{other:?}"),
    }
    assert!(all(&s).is_empty());
    // Metadata counts too.
    let r = s.append(
        "a",
        ExpectedVersion::Any,
        [EventData::new("T", vec![0u8; 500]).with_metadata(vec![0u8; 500])],
    );
    assert!(matches!(r, Err(Error::EventTooLarge { .. })));
    s.append(
        "a",
        ExpectedVersion::Any,
        [EventData::new("T", vec![0u8; 990])],
    )
    .unwrap();
    assert_eq!(all(&s).len(), 1);
}

#[test]
fn default_max_event_size_is_16_mib() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default().durability(Durability::None)).unwrap();
    let r = s.append(
        "a",
        ExpectedVersion::Any,
        [EventData::new("T", vec![0u8; 16 << 20])],
    );
    assert!(matches!(r, Err(Error::EventTooLarge { max, .. }) if max == 16 << 20));
    s.append(
        "a",
        ExpectedVersion::Any,
        [EventData::new("T", vec![1u8; (16 << 20) - 2])],
    )
    .unwrap();
    assert_eq!(s.read_event("a", 0).unwrap().data().len(), (16 << 20) - 2);
}

#[test]
fn a_bad_batch_in_a_group_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(Store::open(dir.path(), Options::default()).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let name = format!("t-{i}");
                for k in 0..20 {
                    let expected = if i % 2 == 0 {
                        ExpectedVersion::Any
                    } else {
                        ExpectedVersion::Exact(999) // always wrong
                    };
                    let r = s.append(&name, expected, events(&name, k, 1));
                    assert_eq!(r.is_ok(), i % 2 == 0, "{r:?}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for i in 0..8 {
        let n = stream(&s, &format!("t-{i}")).len();
        assert_eq!(n, if i % 2 == 0 { 20 } else { 0 });
    }
}

/// Payloads a caller serialised into a local buffer can be passed borrowed (they are copied);
/// owned buffers are moved in without a copy.
#[test]
#[allow(clippy::needless_borrows_for_generic_args)] // borrowing is what is being tested
fn borrowed_payloads_are_copied_and_owned_ones_moved() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default()).unwrap();
    let payload: String = format!("{{\"n\":{}}}", 42);
    let bytes: Vec<u8> = payload.clone().into_bytes();
    let array = [7u8; 4];
    let borrowed = vec![
        EventData::new("Json", &payload),
        EventData::new("Json", &*payload),
        EventData::new("Json", payload.as_str()),
        EventData::new("Json", payload.as_bytes()),
        EventData::new("Json", &bytes),
        EventData::new("Json", &bytes[..]),
        EventData::new("Json", std::borrow::Cow::Borrowed(payload.as_str())),
        EventData::new("Raw", &array).with_metadata(&payload),
        EventData::new("Raw", array),
    ];
    // The caller's buffers are still theirs.
    drop((payload.clone(), bytes.clone()));
    s.append("payload-1", ExpectedVersion::NoStream, borrowed)
        .unwrap();
    let read = stream(&s, "payload-1");
    for e in &read[..7] {
        assert_eq!(e.data(), payload.as_bytes());
    }
    assert_eq!(read[7].data(), &array);
    assert_eq!(read[7].metadata(), payload.as_bytes());
    assert_eq!(read[8].data(), &array);

    let owned = payload.clone().into_bytes();
    let at = owned.as_ptr();
    let e = EventData::new("Owned", owned);
    assert_eq!(e.data().as_ptr(), at, "a Vec<u8> is moved, not copied");
    let text = payload.clone();
    let at = text.as_ptr();
    let e2 = EventData::new("Owned", text);
    assert_eq!(e2.data().as_ptr(), at, "a String is moved, not copied");
    let shared = bytes::Bytes::from(payload.clone());
    let e3 = EventData::new("Owned", shared.clone());
    assert_eq!(e3.data().as_ptr(), shared.as_ptr(), "Bytes are shared");
    s.append("payload-1", ExpectedVersion::Exact(8), [e, e2, e3])
        .unwrap();
    assert_eq!(datas(&s, "payload-1").len(), 12);
}

/// Names starting with `$` belong to the store: an application's append to one, or with such an
/// event type, is refused with a typed error and writes nothing; the store's own checkpoints
/// still work, and reading a system stream is allowed.
#[test]
fn reserved_names_are_refused_on_user_appends() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default()).unwrap();
    let empty = s.head();
    for name in ["$all", "$snapshot-cart-1", "$checkpoint-x", "$anything"] {
        let r = s.append(name, ExpectedVersion::Any, events(name, 0, 1));
        match r {
            Err(Error::ReservedName { name: n, what }) => {
                assert_eq!(n, name);
                assert_eq!(what, "stream name");
            }
            other => panic!("append to {name}: {other:?}"),
        }
        let multi = s.append_multi(vec![
            StreamWrite::new("fine-1", ExpectedVersion::Any, events("fine-1", 0, 1)),
            StreamWrite::new(name, ExpectedVersion::Any, events(name, 0, 1)),
        ]);
        assert!(
            matches!(multi, Err(Error::ReservedName { .. })),
            "{multi:?}"
        );
    }
    let r = s.append(
        "cart-1",
        ExpectedVersion::Any,
        [EventData::new("$metadata", "{}")],
    );
    assert!(
        matches!(
            &r,
            Err(Error::ReservedName {
                what: "event type",
                ..
            })
        ),
        "{r:?}"
    );
    assert!(r
        .unwrap_err()
        .to_string()
        .contains("`$metadata` is a reserved event type"));
    assert!(all(&s).is_empty(), "nothing was written");
    assert_eq!(s.head(), empty);

    // The clash the reservation prevents: a checkpoint is saved and loaded as before.
    s.append("cart-1", ExpectedVersion::NoStream, events("cart-1", 0, 1))
        .unwrap();
    let p = all(&s)[0].position();
    s.save_checkpoint("x", p).unwrap();
    assert_eq!(s.load_checkpoint("x").unwrap(), Some(p));
    assert_eq!(
        stream(&s, "$checkpoint-x").len(),
        1,
        "system streams can be read"
    );
}

/// A category name with a `-` can never match (a category is a stream name's part before its
/// first `-`), and a checkpoint must be a position a subscription can resume after: both are
/// refused where they are given, not later.
#[test]
fn impossible_categories_and_checkpoints_are_refused_where_given() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default()).unwrap();
    s.append("cart-1", ExpectedVersion::NoStream, events("cart-1", 0, 3))
        .unwrap();
    let r = s.read_category("cart-1", 0, 10);
    match &r {
        Err(Error::InvalidInput(m)) => assert!(m.contains("`cart` for `cart-1`"), "{m}"),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("read_category(cart-1) was accepted"),
    }
    assert!(matches!(
        s.subscribe_to_category("cart-1", StreamFrom::Start),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        s.subscribe_to_all(AllFrom::Start, Some(Filter::new().category("cart-1"))),
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(s.read_category("cart", 0, 10).unwrap().count(), 3);

    let events = all(&s);
    for bad in [
        Position(1),
        Position(events[0].position().0 + 8),
        Position(1 << 40),
    ] {
        let r = s.save_checkpoint("projector", bad);
        assert!(
            matches!(r, Err(Error::InvalidPosition(p)) if p == bad),
            "{bad:?}: {r:?}"
        );
    }
    assert_eq!(
        s.load_checkpoint("projector").unwrap(),
        None,
        "nothing was saved"
    );
    for good in [
        Position::START,
        events[1].position(),
        events[2].next_position(),
    ] {
        s.save_checkpoint("projector", good).unwrap();
        assert_eq!(s.load_checkpoint("projector").unwrap(), Some(good));
        s.subscribe_from_checkpoint("projector", None).unwrap();
    }
}
