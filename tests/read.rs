//! Reads: streams forward and backward, single events, `$all`, stream lists, zero copy.

mod common;

use common::*;
use eventjournal::*;

fn filled() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default().segment_size(4096)).unwrap();
    for i in 0..60 {
        let name = ["alpha", "beta", "gamma"][i % 3];
        s.append(name, ExpectedVersion::Any, events(name, i / 3, 1))
            .unwrap();
    }
    (dir, s)
}

fn nums(it: StreamEvents<'_>) -> Vec<u64> {
    it.map(|e| e.unwrap().event_number()).collect()
}

#[test]
fn stream_forward_and_backward_with_limits() {
    let (_d, s) = filled();
    assert_eq!(
        nums(s.read_stream_forward("beta", 0, usize::MAX).unwrap()),
        (0..20).collect::<Vec<_>>()
    );
    assert_eq!(
        nums(s.read_stream_forward("beta", 5, 3).unwrap()),
        [5, 6, 7]
    );
    assert_eq!(
        nums(s.read_stream_forward("beta", 18, 10).unwrap()),
        [18, 19]
    );
    assert!(nums(s.read_stream_forward("beta", 20, 10).unwrap()).is_empty());
    assert!(nums(s.read_stream_forward("beta", u64::MAX, 10).unwrap()).is_empty());
    assert!(nums(s.read_stream_forward("beta", 0, 0).unwrap()).is_empty());
    assert_eq!(
        nums(s.read_stream_backward("beta", u64::MAX, 3).unwrap()),
        [19, 18, 17]
    );
    assert_eq!(
        nums(s.read_stream_backward("beta", 2, 10).unwrap()),
        [2, 1, 0]
    );
    assert_eq!(nums(s.read_stream_backward("beta", 0, 10).unwrap()), [0]);
    assert!(nums(s.read_stream_forward("nope", 0, 10).unwrap()).is_empty());
    assert!(nums(s.read_stream_backward("nope", u64::MAX, 10).unwrap()).is_empty());
    // Long reads cross the index copy chunks.
    let s2dir = tempfile::tempdir().unwrap();
    let s2 = Store::open(
        s2dir.path(),
        Options::default().durability(Durability::None),
    )
    .unwrap();
    for k in 0..3 {
        s2.append("long", ExpectedVersion::Any, events("long", k * 700, 700))
            .unwrap();
    }
    assert_eq!(
        nums(s2.read_stream_forward("long", 100, 1500).unwrap()),
        (100..1600).collect::<Vec<_>>()
    );
    assert_eq!(
        nums(s2.read_stream_backward("long", 1999, 1300).unwrap()),
        (700..2000).rev().collect::<Vec<_>>()
    );
}

#[test]
fn read_event_and_version() {
    let (_d, s) = filled();
    let e = s.read_event("gamma", 7).unwrap();
    assert_eq!(e.event_number(), 7);
    assert_eq!(e.stream(), "gamma");
    assert_eq!(e.data(), b"gamma:7");
    assert!(matches!(
        s.read_event("gamma", 20),
        Err(Error::EventNotFound { ref stream, event_number: 20 }) if stream == "gamma"
    ));
    assert!(matches!(
        s.read_event("missing", 0),
        Err(Error::EventNotFound { .. })
    ));
    assert_eq!(s.stream_version("gamma").unwrap(), Some(19));
    assert_eq!(s.stream_version("missing").unwrap(), None);
    assert_eq!(s.streams().unwrap(), ["alpha", "beta", "gamma"]);
}

#[test]
fn all_forward_backward_and_paging() {
    let (_d, s) = filled();
    let fwd = all(&s);
    assert_eq!(fwd.len(), 60);
    for w in fwd.windows(2) {
        assert!(w[0].position() < w[1].position());
    }
    for (i, e) in fwd.iter().enumerate() {
        assert_eq!(e.stream(), ["alpha", "beta", "gamma"][i % 3]);
        assert_eq!(e.event_number(), (i / 3) as u64);
    }
    let bwd: Vec<_> = s
        .read_all_backward(Position::END, usize::MAX)
        .unwrap()
        .map(|e| e.unwrap().position())
        .collect();
    let mut expect: Vec<_> = fwd.iter().map(|e| e.position()).collect();
    expect.reverse();
    assert_eq!(bwd, expect);

    // Paging forward with next_position, 7 at a time, across segment boundaries.
    let mut from = Position::START;
    let mut paged = Vec::new();
    loop {
        let page: Vec<_> = s
            .read_all_forward(from, 7)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        let Some(last) = page.last() else { break };
        from = last.next_position();
        paged.extend(page.iter().map(|e| e.position()));
    }
    assert_eq!(paged, fwd.iter().map(|e| e.position()).collect::<Vec<_>>());

    // Paging backward: from a position, backward starts with the event before it.
    let mut from = Position::END;
    let mut back = Vec::new();
    loop {
        let page: Vec<_> = s
            .read_all_backward(from, 9)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        let Some(last) = page.last() else { break };
        from = last.position();
        back.extend(page.iter().map(|e| e.position()));
    }
    assert_eq!(back, expect);

    // From an event's own position, forward starts with it.
    let mid = &fwd[31];
    let first = s
        .read_all_forward(mid.position(), 1)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(first.position(), mid.position());
    let before = s
        .read_all_backward(mid.next_position(), 1)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(before.position(), mid.position());
    assert_eq!(s.read_all_forward(s.head(), 10).unwrap().count(), 0);
}

#[test]
fn invalid_positions_are_typed_errors() {
    let (_d, s) = filled();
    let fwd = all(&s);
    let mid = fwd[10].position().0;
    for bad in [mid + 8, mid + 1, s.head().0 + 8, s.head().0 + 4096 * 10, 3] {
        let p = Position(bad);
        assert!(
            matches!(s.read_all_forward(p, 1), Err(Error::InvalidPosition(q)) if q == p),
            "forward from {bad}"
        );
        assert!(
            matches!(s.read_all_backward(p, 1), Err(Error::InvalidPosition(_))),
            "backward from {bad}"
        );
    }
}

#[test]
fn empty_store_reads() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default()).unwrap();
    assert!(all(&s).is_empty());
    assert_eq!(s.read_all_backward(Position::END, 10).unwrap().count(), 0);
    assert_eq!(s.read_all_forward(s.head(), 10).unwrap().count(), 0);
    assert!(s.streams().unwrap().is_empty());
}

#[test]
fn event_bytes_are_not_copied() {
    let (_d, s) = filled();
    let a = s.read_event("alpha", 3).unwrap();
    let b = s.read_event("alpha", 3).unwrap();
    let c = s
        .read_all_forward(a.position(), 1)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    // All three views point at the same bytes: the memory map, not per-read copies.
    assert_eq!(a.data().as_ptr(), b.data().as_ptr());
    assert_eq!(a.data().as_ptr(), c.data().as_ptr());
}

#[test]
fn readers_hold_no_lock_across_appends() {
    let (_d, s) = filled();
    // An iterator half-way through a stream does not stop appends to it.
    let mut it = s.read_stream_forward("alpha", 0, usize::MAX).unwrap();
    assert_eq!(it.next().unwrap().unwrap().event_number(), 0);
    s.append("alpha", ExpectedVersion::Exact(19), events("alpha", 20, 1))
        .unwrap();
    // The read sees the stream as it was when it started.
    assert_eq!(it.count(), 19);
    assert_eq!(s.stream_version("alpha").unwrap(), Some(20));
}

#[test]
fn a_position_inside_a_payload_cannot_forge_an_event() {
    // The raw bytes of a record of another store, stored as the payload of an event here.
    let other = tempfile::tempdir().unwrap();
    let o = Store::open(other.path(), Options::default()).unwrap();
    o.append(
        "victim",
        ExpectedVersion::Any,
        [EventData::new("Forged", "evil")],
    )
    .unwrap();
    let e = o.read_event("victim", 0).unwrap();
    o.close().unwrap();
    let seg = std::fs::read(other.path().join("00000000000000000000.seg")).unwrap();
    let rec = seg[e.position().0 as usize..e.next_position().0 as usize].to_vec();

    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default()).unwrap();
    // Type of 7 bytes and stream of 1 byte: the data starts 8-aligned, at position 128.
    s.append("s", ExpectedVersion::Any, [EventData::new("T234567", rec)])
        .unwrap();
    let host = s.read_event("s", 0).unwrap();
    let inside = Position(host.position().0 + 64);
    for r in [
        s.read_all_forward(inside, 1).map(|_| ()),
        s.read_all_backward(inside, 1).map(|_| ()),
    ] {
        assert!(
            matches!(r, Err(Error::InvalidPosition(p)) if p == inside),
            "{r:?}"
        );
    }
    assert_eq!(all(&s).len(), 1);
}

/// What `replay_stream` hands over, as (event number, data) pairs.
fn replayed(s: &Store, stream: &str, from: u64, stop_after: usize) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let handed = s
        .replay_stream(stream, from, |e| {
            assert_eq!(e.stream(), stream);
            out.push((e.event_number(), e.data().to_vec()));
            if out.len() == stop_after {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(handed as usize, out.len());
    out
}

#[test]
fn replay_with_a_closure_equals_the_iterators() {
    let (_d, s) = filled();
    for name in ["alpha", "beta", "gamma"] {
        let iter: Vec<(u64, Vec<u8>)> = s
            .read_stream_forward(name, 0, usize::MAX)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.event_number(), e.data().to_vec())
            })
            .collect();
        assert_eq!(iter.len(), 20);
        assert_eq!(replayed(&s, name, 0, usize::MAX), iter);
        assert_eq!(replayed(&s, name, 7, usize::MAX), iter[7..]);
        assert_eq!(replayed(&s, name, 7, 3), iter[7..10]);
        assert!(replayed(&s, name, 20, usize::MAX).is_empty());
        assert!(replayed(&s, name, u64::MAX, usize::MAX).is_empty());
    }
    assert!(replayed(&s, "nobody", 0, usize::MAX).is_empty());

    let all: Vec<(Position, Position)> = s
        .read_all_forward(Position::START, usize::MAX)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.position(), e.next_position())
        })
        .collect();
    assert_eq!(all.len(), 60);
    let mut seen = Vec::new();
    s.replay_all(Position::START, |e| {
        seen.push((e.position(), e.next_position()));
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(seen, all);
    // Resuming from where a stopped replay ended.
    let mut first = Vec::new();
    s.replay_all(Position::START, |e| {
        first.push(e.next_position());
        if first.len() == 25 {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    })
    .unwrap();
    let mut rest = 0;
    s.replay_all(first[24], |_| {
        rest += 1;
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(rest, 35);
    assert!(matches!(
        s.replay_all(Position(all[3].0 .0 + 8), |_| {
            std::ops::ControlFlow::Continue(())
        }),
        Err(Error::InvalidPosition(_))
    ));
}
