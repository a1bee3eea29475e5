//! Durability modes, and what a failed write does: the store refuses further writes, loses
//! nothing it acknowledged, and recovers on reopen.

mod common;

use std::time::Duration;

use common::*;
use eventjournal::*;

#[test]
fn disk_full_poisons_writes_and_loses_nothing() {
    let Some(fs) = TinyFs::mount("2m") else {
        return;
    };
    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![1u8; 512 << 10]).unwrap();
    let dir = fs.path().join("store");
    // Segment space is reserved when a segment is created, so a full disk shows up when the
    // store rolls to a new segment.
    let opts = Options::default().segment_size(256 << 10);
    let s = Store::open(&dir, opts.clone()).unwrap();
    let payload = |i: usize| vec![(i % 251) as u8; 60 << 10];
    let mut acked = 0;
    let err = loop {
        match s.append(
            "big",
            ExpectedVersion::Any,
            [EventData::new("Chunk", payload(acked))],
        ) {
            Ok(r) => {
                assert_eq!(r.version, Some(acked as u64));
                acked += 1;
                assert!(acked < 100, "the 2 MiB file system never filled up");
            }
            Err(e) => break e,
        }
    };
    match &err {
        Error::Io { source, path, .. } => {
            assert_eq!(source.raw_os_error(), Some(28), "{source}"); // ENOSPC
            assert!(path.starts_with(&dir), "{err}");
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(acked > 5);
    // Poisoned: even a small append is refused now, with the reason.
    match s.append("small", ExpectedVersion::Any, events("small", 0, 1)) {
        Err(Error::Poisoned(reason)) => assert!(reason.contains("segment"), "{reason}"),
        other => panic!("expected Poisoned, got {other:?}"),
    }
    // Still readable, and every acknowledged event is intact.
    let evs = stream(&s, "big");
    assert_eq!(evs.len(), acked);
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e.data()[..], payload(i)[..]);
    }
    assert!(s.close().is_err(), "close reports the poisoned store");

    // Free space, reopen: all acknowledged events, and appends work again.
    std::fs::remove_file(&filler).unwrap();
    let s = Store::open(&dir, opts).unwrap();
    let evs = stream(&s, "big");
    assert_eq!(evs.len(), acked);
    assert_eq!(evs[acked - 1].data()[..], payload(acked - 1)[..]);
    s.append(
        "big",
        ExpectedVersion::Exact(acked as u64 - 1),
        [EventData::new("Chunk", payload(acked))],
    )
    .unwrap();
    assert_eq!(stream(&s, "big").len(), acked + 1);
}

#[test]
fn every_durability_mode_keeps_acknowledged_events_across_reopen() {
    for d in [
        Durability::Sync,
        Durability::Buffered(Duration::from_millis(5)),
        Durability::None,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options::default().durability(d).segment_size(4096);
        let s = Store::open(dir.path(), opts.clone()).unwrap();
        for i in 0..50 {
            s.append("a", ExpectedVersion::Any, events("a", 2 * i, 2))
                .unwrap();
            if i == 25 {
                // Long enough for the buffered flusher to run at least once meanwhile.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        s.close().unwrap();
        let s = Store::open(dir.path(), opts).unwrap();
        assert_eq!(stream(&s, "a").len(), 100, "{d:?}");
        assert_eq!(datas(&s, "a")[99], "a:99", "{d:?}");
    }
}
