//! The manifest a clean close writes (FORMAT.md, "The manifest"): the next open skips the spot
//! checks of the sealed segments it vouches for, and checks every file that is not the one it
//! vouched for — changed, replaced, compacted — or all of them when the manifest is damaged.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use eventjournal::fault::{Fault, FaultInjector, FileOp};
use eventjournal::*;
use parking_lot::Mutex;

const MANIFEST: &str = "eventjournal.manifest";

fn options() -> Options {
    Options::default().segment_size(8 * 1024)
}

/// Counts, per segment file, the positioned reads opening makes past its header.
#[derive(Default)]
struct Reads(Mutex<BTreeMap<String, usize>>);

impl FaultInjector for Reads {
    fn before(&self, op: &FileOp<'_>) -> Option<Fault> {
        if let FileOp::Read { path, offset, .. } = op {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".seg") && *offset > 0 {
                *self.0.lock().entry(name).or_default() += 1;
            }
        }
        None
    }
}

fn segments(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    v.sort();
    v
}

/// Appends 600 events of about 230 bytes to `streams` streams named `<prefix>-<n>`.
fn fill(store: &Store, prefix: &str, streams: u64) {
    for i in 0..600u64 {
        let stream = format!("{prefix}-{}", i % streams);
        let data = format!("{stream} event {i} {}", "x".repeat(200));
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                [EventData::new("Moved", data.into_bytes())],
            )
            .unwrap();
    }
}

/// A store of several sealed segments, 30 streams, closed cleanly; returns every stream's
/// events as read.
fn build(dir: &Path) -> BTreeMap<String, Vec<Vec<u8>>> {
    let store = Store::open(dir, options()).unwrap();
    fill(&store, "acct", 30);
    let all = listing(&store);
    store.close().unwrap();
    // More than enough for opening to open half of them on a second thread.
    assert!(segments(dir).len() > 16, "{:?}", segments(dir));
    assert!(
        dir.join(MANIFEST).exists(),
        "a clean close writes the manifest"
    );
    all
}

fn listing(store: &Store) -> BTreeMap<String, Vec<Vec<u8>>> {
    (0..30)
        .map(|s| {
            let stream = format!("acct-{s}");
            let events = store
                .read_stream_forward(&stream, 0, usize::MAX)
                .unwrap()
                .map(|e| e.unwrap().data().to_vec())
                .collect();
            (stream, events)
        })
        .collect()
}

/// Opens the store with a read counter, checks it reads `expected`, closes it; returns the reads
/// per segment file that opening made past the headers.
fn open_counting(dir: &Path, expected: &BTreeMap<String, Vec<Vec<u8>>>) -> BTreeMap<String, usize> {
    let reads = Arc::new(Reads::default());
    let store = Store::open(dir, options().fault_injector(reads.clone())).unwrap();
    let opened = reads.0.lock().clone();
    assert_eq!(&listing(&store), expected);
    store.close().unwrap();
    opened
}

/// The sealed segments (all but the newest) that opening read past their headers.
fn sealed_read(dir: &Path, reads: &BTreeMap<String, usize>) -> Vec<String> {
    let segs = segments(dir);
    let sealed = &segs[..segs.len() - 1];
    sealed
        .iter()
        .filter(|s| reads.contains_key(*s))
        .cloned()
        .collect()
}

#[test]
fn a_clean_close_lets_the_next_open_skip_the_checks_of_its_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let expected = build(dir.path());
    let reads = open_counting(dir.path(), &expected);
    assert_eq!(
        sealed_read(dir.path(), &reads),
        Vec::<String>::new(),
        "{reads:?}"
    );

    // Without the manifest, every sealed segment is spot-checked again.
    fs::remove_file(dir.path().join(MANIFEST)).unwrap();
    let reads = open_counting(dir.path(), &expected);
    let segs = segments(dir.path());
    assert_eq!(
        sealed_read(dir.path(), &reads),
        segs[..segs.len() - 1].to_vec()
    );
    // That open's close wrote it again.
    let reads = open_counting(dir.path(), &expected);
    assert_eq!(sealed_read(dir.path(), &reads), Vec::<String>::new());
}

#[test]
fn a_damaged_or_torn_manifest_is_no_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let expected = build(dir.path());
    let path = dir.path().join(MANIFEST);
    let good = fs::read(&path).unwrap();
    let segs = segments(dir.path());
    let every_sealed = segs[..segs.len() - 1].to_vec();
    let mut flipped = good.clone();
    flipped[40] ^= 1;
    for bad in [
        flipped,
        good[..good.len() - 3].to_vec(),
        vec![0; good.len()],
        Vec::new(),
    ] {
        fs::write(&path, &bad).unwrap();
        let reads = open_counting(dir.path(), &expected);
        assert_eq!(sealed_read(dir.path(), &reads), every_sealed);
    }
}

/// Replaces `file` by a copy of itself (same bytes, another inode).
fn recopy(file: &Path) {
    let tmp = PathBuf::from(format!("{}.copy", file.display()));
    fs::copy(file, &tmp).unwrap();
    fs::rename(&tmp, file).unwrap();
}

#[test]
fn files_replaced_since_the_close_are_checked_again() {
    let dir = tempfile::tempdir().unwrap();
    let expected = build(dir.path());
    let segs = segments(dir.path());
    let second = dir.path().join(&segs[1]);
    let third_index = dir.path().join(segs[2].replace(".seg", ".idx"));
    recopy(&second);
    recopy(&third_index);
    let reads = open_counting(dir.path(), &expected);
    assert_eq!(
        sealed_read(dir.path(), &reads),
        vec![segs[1].clone(), segs[2].clone()]
    );
}

#[test]
fn an_index_file_put_in_from_another_store_is_caught_and_rebuilt() {
    // Two stores of the same shape and different streams: the same segment bases, index files
    // that pass every header check for either.
    let dir = tempfile::tempdir().unwrap();
    let expected = build(dir.path());
    let other = tempfile::tempdir().unwrap();
    {
        let store = Store::open(other.path(), options()).unwrap();
        fill(&store, "other", 7);
        store.close().unwrap();
    }
    let segs = segments(dir.path());
    let name = segs[1].replace(".seg", ".idx");
    let theirs = fs::read(other.path().join(&name)).unwrap();
    let ours = dir.path().join(&name);
    let tmp = dir.path().join("swap");
    fs::write(&tmp, theirs).unwrap();
    fs::rename(&tmp, &ours).unwrap();
    // The foreign file fails the spot check, and the index is rebuilt from the log.
    let reads = open_counting(dir.path(), &expected);
    assert!(reads.contains_key(&segs[1]), "{reads:?}");
    let reopened = Store::open(dir.path(), options()).unwrap();
    assert_eq!(listing(&reopened), expected);
    assert_eq!(reopened.stream_version("other-3").unwrap(), None);
}

#[test]
fn a_compacted_segment_is_checked_whatever_the_manifest_says() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = build(dir.path());
    let before = fs::read(dir.path().join(MANIFEST)).unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    store.delete_stream("acct-4", ExpectedVersion::Any).unwrap();
    store.seal().unwrap();
    let report = store.compact().unwrap();
    assert!(report.segments_rewritten > 0);
    store.close().unwrap();
    expected.insert("acct-4".into(), Vec::new());
    // The manifest of the earlier close, as a crash after the compaction would have left it.
    fs::write(dir.path().join(MANIFEST), before).unwrap();
    let reads = open_counting(dir.path(), &expected);
    let checked = sealed_read(dir.path(), &reads);
    assert!(
        checked.len() >= report.segments_rewritten as usize,
        "{checked:?}"
    );
}

#[test]
fn a_store_closed_under_durability_none_vouches_for_nothing() {
    // Its index files and id tables are written without a sync: a power loss could keep their
    // names and stamps and lose their bytes.
    let dir = tempfile::tempdir().unwrap();
    let unsynced = || options().durability(Durability::None);
    let store = Store::open(dir.path(), unsynced()).unwrap();
    fill(&store, "acct", 30);
    store.close().unwrap();
    assert!(segments(dir.path()).len() > 16);
    assert!(!dir.path().join(MANIFEST).exists());
    // The same store closed under `Sync` gets one.
    let synced = Store::open(dir.path(), options()).unwrap();
    synced.close().unwrap();
    assert!(dir.path().join(MANIFEST).exists());
}
