//! Opening, locking, closing; directories that are not stores; format versions.

mod common;

use std::fs;

use common::*;
use eventjournal::*;

#[test]
fn open_creates_and_reopens() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("nested/store");
    let s = Store::open(&dir, Options::default()).unwrap();
    assert_eq!(s.path(), dir.as_path());
    s.append("a", ExpectedVersion::NoStream, events("a", 0, 3))
        .unwrap();
    s.close().unwrap();
    assert!(dir.join("eventjournal.meta").is_file());
    let s = Store::open(&dir, Options::default()).unwrap();
    assert_eq!(datas(&s, "a"), ["a:0", "a:1", "a:2"]);
}

#[test]
fn second_opener_in_process_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default()).unwrap();
    s.append("a", ExpectedVersion::Any, events("a", 0, 1))
        .unwrap();
    match Store::open(dir.path(), Options::default()) {
        Err(Error::Locked { path }) => assert!(path.ends_with("LOCK")),
        Err(e) => panic!("unexpected error {e:?}"),
        Ok(_) => panic!("second open succeeded"),
    }
    // The failed opener changed nothing.
    s.append("a", ExpectedVersion::Exact(0), events("a", 1, 1))
        .unwrap();
    assert_eq!(datas(&s, "a"), ["a:0", "a:1"]);
    // close releases the lock; so does drop.
    s.close().unwrap();
    let s = Store::open(dir.path(), Options::default()).unwrap();
    drop(s);
    let s = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(datas(&s, "a"), ["a:0", "a:1"]);
}

#[test]
fn directory_that_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    assert!(matches!(
        Store::open(dir.path(), Options::default()),
        Err(Error::NotAStore { .. })
    ));
    // Nothing was written into it.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    let file = dir.path().join("notes.txt");
    assert!(matches!(
        Store::open(&file, Options::default()),
        Err(Error::NotAStore { .. })
    ));
    // A meta file that is something else.
    let other = tempfile::tempdir().unwrap();
    fs::write(other.path().join("eventjournal.meta"), "not a meta file").unwrap();
    assert!(matches!(
        Store::open(other.path(), Options::default()),
        Err(Error::NotAStore { .. })
    ));
}

#[test]
fn newer_format_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path(), Options::default())
        .unwrap()
        .close()
        .unwrap();
    // Meta file from the future: version 3 (this build reads 1 and 2), valid checksum.
    let meta = dir.path().join("eventjournal.meta");
    let mut bytes = fs::read(&meta).unwrap();
    let good = bytes.clone();
    bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32(&bytes[..12]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    fs::write(&meta, &bytes).unwrap();
    match Store::open(dir.path(), Options::default()) {
        Err(Error::UnsupportedVersion {
            found, supported, ..
        }) => assert_eq!((found, supported), (3, 2)),
        other => panic!("{:?}", other.err()),
    }
    fs::write(&meta, &good).unwrap();

    // Segment header from the future.
    let seg = first_segment(dir.path());
    let mut head = peek(&seg, 0, 64);
    head[8..12].copy_from_slice(&7u32.to_le_bytes());
    let crc = crc32(&head[..60]);
    head[60..64].copy_from_slice(&crc.to_le_bytes());
    patch(&seg, 0, &head);
    assert!(matches!(
        Store::open(dir.path(), Options::default()),
        Err(Error::UnsupportedVersion { found: 7, .. })
    ));
}

#[test]
fn options_out_of_range_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for o in [
        Options::default().segment_size(100),
        Options::default().segment_size(1 << 40),
        Options::default().max_event_size(0),
        Options::default().max_event_size(1 << 40),
    ] {
        assert!(matches!(
            Store::open(dir.path(), o),
            Err(Error::InvalidInput(_))
        ));
    }
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    assert_send_sync::<RecordedEvent>();
}

#[test]
fn zero_buffered_interval_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options::default().durability(Durability::Buffered(std::time::Duration::ZERO));
    assert!(matches!(
        Store::open(dir.path(), o),
        Err(Error::InvalidInput(_))
    ));
}
