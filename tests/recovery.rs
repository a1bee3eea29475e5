//! Recovery on open: torn tails, partial batches, corruption, salvage, index files.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use eventjournal::*;

fn big() -> Options {
    Options::default().segment_size(1 << 20)
}

/// A store with five batches (2 events each) over two streams, left open: `dir` is what a crash
/// right now would leave.
fn five_batches(dir: &Path) -> Store {
    let s = Store::open(dir, big()).unwrap();
    for i in 0..5 {
        let name = if i % 2 == 0 { "even" } else { "odd" };
        s.append(name, ExpectedVersion::Any, events(name, i * 2, 2))
            .unwrap();
    }
    s
}

fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().ends_with(suffix))
        .collect();
    v.sort();
    v
}

#[test]
fn torn_tail_is_cut_back_to_the_last_whole_batch() {
    let live = tempfile::tempdir().unwrap();
    let s = five_batches(live.path());
    let head = s.head();
    let first = s.read_event("even", 0).unwrap();
    let rec_len = (first.next_position().0 - first.position().0) as usize;
    let crash = tempfile::tempdir().unwrap();
    snapshot(live.path(), crash.path());
    // Half a record written at the end, as a torn write leaves it.
    let seg = first_segment(crash.path());
    let rec = peek(&seg, first.position().0, rec_len);
    patch(&seg, head.0, &rec[..rec_len / 2]);

    let s = Store::open(crash.path(), big()).unwrap();
    assert_eq!(s.head(), head);
    assert_eq!(all(&s).len(), 10);
    // The cut bytes are gone for good: new appends, reopen, and the garbage does not come back.
    s.append(
        "even",
        ExpectedVersion::Exact(5),
        [EventData::new("T", "x")],
    )
    .unwrap();
    drop(s);
    let s = Store::open(crash.path(), big()).unwrap();
    assert_eq!(all(&s).len(), 11);
    assert_eq!(datas(&s, "even").last().unwrap(), "x");
}

#[test]
fn unfinished_batch_is_cut_whole() {
    let live = tempfile::tempdir().unwrap();
    let s = five_batches(live.path());
    let head = s.head();
    s.append_multi(vec![
        StreamWrite::new("even", ExpectedVersion::Exact(5), events("even", 6, 2)),
        StreamWrite::new("odd", ExpectedVersion::Exact(3), events("odd", 4, 1)),
    ])
    .unwrap();
    let last = s.read_event("odd", 4).unwrap();
    let crash = tempfile::tempdir().unwrap();
    snapshot(live.path(), crash.path());
    // The batch's last record (the one with the batch-end flag) never reached the disk.
    let seg = first_segment(crash.path());
    let len = (last.next_position().0 - last.position().0) as usize;
    patch(&seg, last.position().0, &vec![0u8; len]);

    let s = Store::open(crash.path(), big()).unwrap();
    assert_eq!(s.head(), head, "the whole batch is cut");
    assert_eq!(s.stream_version("even").unwrap(), Some(5));
    assert_eq!(s.stream_version("odd").unwrap(), Some(3));
    // The two whole records of the cut batch are erased, not left to resurface.
    assert!(peek(&seg, head.0, 64).iter().all(|&b| b == 0));
    s.append("odd", ExpectedVersion::Exact(3), [EventData::new("T", "y")])
        .unwrap();
    drop(s);
    let s = Store::open(crash.path(), big()).unwrap();
    assert_eq!(datas(&s, "odd").last().unwrap(), "y");
    assert_eq!(s.stream_version("even").unwrap(), Some(5));
}

#[test]
fn damage_before_the_tail_is_corrupt_and_salvage_keeps_the_prefix() {
    let live = tempfile::tempdir().unwrap();
    let s = five_batches(live.path());
    let victim = s.read_event("odd", 1).unwrap(); // in the second batch
    let crash = tempfile::tempdir().unwrap();
    snapshot(live.path(), crash.path());
    let seg = first_segment(crash.path());
    let data_at = victim.next_position().0 - 8;
    let mut b = peek(&seg, data_at, 1);
    b[0] ^= 0xff;
    patch(&seg, data_at, &b);

    match Store::open(crash.path(), big()) {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!(file, seg);
            assert_eq!(offset, victim.position().0);
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("opened a corrupt store"),
    }
    // Nothing was changed by the failed open.
    assert_eq!(peek(&seg, data_at, 1), b);

    let s = Store::open(crash.path(), big().recovery(Recovery::Salvage)).unwrap();
    assert_eq!(datas(&s, "even"), ["even:0", "even:1"]);
    assert_eq!(s.stream_version("odd").unwrap(), None);
    s.append("odd", ExpectedVersion::NoStream, events("odd", 0, 1))
        .unwrap();
    drop(s);
    let s = Store::open(crash.path(), big()).unwrap();
    assert_eq!(all(&s).len(), 3);
}

#[test]
fn salvage_sets_later_segments_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (opts, victim) = closed_single_stream(dir.path(), 200, 10);
    let segs = files_with_suffix(dir.path(), ".seg");
    assert!(segs.len() > 3);
    flip(&segs[0], victim.next_position().0 - 8, 1);
    for idx in files_with_suffix(dir.path(), ".idx") {
        fs::remove_file(idx).unwrap();
    }
    assert!(matches!(
        Store::open(dir.path(), opts.clone()),
        Err(Error::Corrupt { .. })
    ));
    let s = Store::open(dir.path(), opts.clone().recovery(Recovery::Salvage)).unwrap();
    assert_eq!(s.stream_version("a").unwrap(), Some(9));
    assert_eq!(files_with_suffix(dir.path(), ".seg").len(), 1);
    assert_eq!(
        files_with_suffix(dir.path(), ".salvaged").len(),
        segs.len() - 1
    );
    s.append("a", ExpectedVersion::Exact(9), events("a", 10, 1))
        .unwrap();
    drop(s);
    let s = Store::open(dir.path(), opts).unwrap();
    assert_eq!(s.stream_version("a").unwrap(), Some(10));
}

#[test]
fn open_reads_index_files_instead_of_rescanning() {
    let dir = tempfile::tempdir().unwrap();
    let (opts, victim) = closed_single_stream(dir.path(), 200, 3);
    let segs = files_with_suffix(dir.path(), ".seg");
    assert_eq!(files_with_suffix(dir.path(), ".idx").len(), segs.len());
    // Damage inside the first, sealed segment: an open that scanned it would fail.
    flip(&segs[0], victim.next_position().0 - 8, 1);

    let s = Store::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(s.stream_version("a").unwrap(), Some(199));
    // The damage is still caught when the event is read.
    match s.read_event("a", 3) {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!(file, segs[0]);
            assert_eq!(offset, victim.position().0);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.read_event("a", 4).unwrap().data(), b"a:4");
    drop(s);
    // Without index files, open has to scan, and finds it.
    for idx in files_with_suffix(dir.path(), ".idx") {
        fs::remove_file(idx).unwrap();
    }
    assert!(matches!(
        Store::open(dir.path(), opts),
        Err(Error::Corrupt { .. })
    ));
}

fn content(s: &Store) -> Vec<(String, u64, Vec<u8>, u64)> {
    all(s)
        .iter()
        .map(|e| {
            (
                e.stream().to_string(),
                e.event_number(),
                e.data().to_vec(),
                e.position().0,
            )
        })
        .collect()
}

fn multi_segment_store(dir: &Path, opts: &Options) -> Vec<(String, u64, Vec<u8>, u64)> {
    let s = Store::open(dir, opts.clone()).unwrap();
    for i in 0..300 {
        let name = format!("s-{}", i % 4);
        s.append(&name, ExpectedVersion::Any, events(&name, i, 1))
            .unwrap();
    }
    let c = content(&s);
    s.close().unwrap();
    c
}

#[test]
fn missing_or_damaged_index_files_are_rebuilt() {
    let opts = Options::default().segment_size(4096);
    // Missing.
    let dir = tempfile::tempdir().unwrap();
    let expect = multi_segment_store(dir.path(), &opts);
    for idx in files_with_suffix(dir.path(), ".idx") {
        fs::remove_file(idx).unwrap();
    }
    let s = Store::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(content(&s), expect);
    let sealed = files_with_suffix(dir.path(), ".seg").len() - 1;
    assert_eq!(files_with_suffix(dir.path(), ".idx").len(), sealed);
    drop(s);
    // Damaged: each byte position of one index file in turn, a few of them.
    let idx = files_with_suffix(dir.path(), ".idx")[1].clone();
    let good = fs::read(&idx).unwrap();
    for at in (0..good.len()).step_by(good.len() / 7 + 1) {
        let mut b = good.clone();
        b[at] ^= 0x55;
        fs::write(&idx, &b).unwrap();
        let s = Store::open(dir.path(), opts.clone()).unwrap();
        assert_eq!(content(&s), expect, "index damaged at {at}");
    }
    // Truncated, and replaced by another segment's index file.
    fs::write(&idx, &good[..good.len() / 2]).unwrap();
    assert_eq!(
        content(&Store::open(dir.path(), opts.clone()).unwrap()),
        expect
    );
    let other = files_with_suffix(dir.path(), ".idx")[2].clone();
    fs::copy(&other, &idx).unwrap();
    assert_eq!(
        content(&Store::open(dir.path(), opts.clone()).unwrap()),
        expect
    );
}

#[test]
fn stale_index_files_are_caught_up_from_the_log() {
    let opts = Options::default().segment_size(4096);
    let dir = tempfile::tempdir().unwrap();
    multi_segment_store(dir.path(), &opts);
    let s = Store::open(dir.path(), opts.clone()).unwrap();
    for i in 0..100 {
        s.append("late", ExpectedVersion::Any, events("late", i, 1))
            .unwrap();
    }
    let expect = content(&s);
    // A crash now: the newest index files are stale or missing.
    let crash = tempfile::tempdir().unwrap();
    snapshot(dir.path(), crash.path());
    drop(s);
    let s = Store::open(crash.path(), opts).unwrap();
    assert_eq!(content(&s), expect);
    assert_eq!(s.stream_version("late").unwrap(), Some(99));
}

#[test]
fn interrupted_segment_creation_is_discarded_and_gaps_are_corrupt() {
    let opts = Options::default().segment_size(4096);
    let dir = tempfile::tempdir().unwrap();
    let expect = multi_segment_store(dir.path(), &opts);
    let segs = files_with_suffix(dir.path(), ".seg");
    // A newest segment whose header never got written.
    let next_base: u64 = 4096 * segs.len() as u64;
    let blank = dir.path().join(format!("{next_base:020}.seg"));
    fs::write(&blank, vec![0u8; 4096]).unwrap();
    let s = Store::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(content(&s), expect);
    assert!(!blank.exists());
    drop(s);
    // A segment missing from the middle.
    fs::remove_file(&segs[1]).unwrap();
    assert!(matches!(
        Store::open(dir.path(), opts),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn index_file_of_a_cut_segment_is_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), big()).unwrap();
    for i in 0..20 {
        s.append("old", ExpectedVersion::Any, events("old", i, 1))
            .unwrap();
    }
    let victim = s.read_event("old", 5).unwrap();
    s.close().unwrap(); // saves an index file covering all 20 events
    let seg = first_segment(dir.path());
    let at = victim.next_position().0 - 8;
    let mut b = peek(&seg, at, 1);
    b[0] ^= 1;
    patch(&seg, at, &b);
    let s = Store::open(dir.path(), big().recovery(Recovery::Salvage)).unwrap();
    assert_eq!(s.stream_version("old").unwrap(), Some(4));
    // New events take the offsets the old index file described.
    for i in 0..40 {
        s.append("new", ExpectedVersion::Any, events("new", i, 1))
            .unwrap();
    }
    let expect = content(&s);
    let crash = tempfile::tempdir().unwrap();
    snapshot(dir.path(), crash.path());
    drop(s);
    let s = Store::open(crash.path(), big()).unwrap();
    assert_eq!(content(&s), expect);
    assert_eq!(s.stream_version("old").unwrap(), Some(4));
    assert_eq!(s.stream_version("new").unwrap(), Some(39));
}

#[test]
fn leftovers_of_an_unfinished_batch_after_a_zero_page_never_rejoin_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options::default().segment_size(4096);
    let s = Store::open(dir.path(), o.clone()).unwrap();
    s.append(
        "a",
        ExpectedVersion::NoStream,
        [EventData::new("T", vec![1u8; 40])],
    )
    .unwrap();
    let second = s
        .append_multi(vec![
            StreamWrite::new(
                "a",
                ExpectedVersion::Exact(0),
                vec![EventData::new("T", vec![2u8; 40])],
            ),
            StreamWrite::new(
                "b",
                ExpectedVersion::NoStream,
                vec![EventData::new("T", vec![3u8; 40])],
            ),
        ])
        .unwrap();
    let a1 = s.read_event("a", 1).unwrap();
    s.close().unwrap();
    assert_eq!(second[1].position, Some(a1.next_position()));
    // A crash in which the batch's first record stayed zero but its second reached the disk.
    let seg = first_segment(dir.path());
    let len = (a1.next_position().0 - a1.position().0) as usize;
    patch(&seg, a1.position().0, &vec![0u8; len]);
    fs::remove_file(dir.path().join("00000000000000000000.idx")).unwrap();

    let s = Store::open(dir.path(), o.clone()).unwrap();
    assert_eq!(s.streams().unwrap(), ["a"]);
    assert_eq!(s.head(), a1.position());
    s.append(
        "c",
        ExpectedVersion::NoStream,
        [EventData::new("T", vec![4u8; 40])],
    )
    .unwrap();
    s.close().unwrap();
    let s = Store::open(dir.path(), o).unwrap();
    assert_eq!(s.streams().unwrap(), ["a", "c"]);
    assert_eq!(all(&s).len(), 2);
}

/// Checks that every stream of `expect` (as [`content`] lists it) reads back through the index
/// exactly: the same events, numbers, data and positions, and the same version.
fn check_streams(s: &Store, expect: &[(String, u64, Vec<u8>, u64)]) {
    let mut names: Vec<&str> = Vec::new();
    for (name, ..) in expect {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    names.sort_unstable();
    assert_eq!(s.streams().unwrap(), names, "streams()");
    for name in names {
        let want: Vec<_> = expect.iter().filter(|e| e.0 == name).cloned().collect();
        let got: Vec<_> = stream(s, name)
            .iter()
            .map(|e| {
                (
                    e.stream().to_string(),
                    e.event_number(),
                    e.data().to_vec(),
                    e.position().0,
                )
            })
            .collect();
        assert_eq!(got, want, "stream `{name}`");
        assert_eq!(s.stream_version(name).unwrap(), Some(want.len() as u64 - 1));
    }
}

#[test]
fn index_file_that_disagrees_with_the_log_is_rebuilt() {
    let opts = Options::default().segment_size(4096);
    let dir = tempfile::tempdir().unwrap();
    let expect = multi_segment_store(dir.path(), &opts);
    let idx = files_with_suffix(dir.path(), ".idx").pop().unwrap();
    let seg = files_with_suffix(dir.path(), ".seg").pop().unwrap();
    // The encoder below writes what the store writes.
    let real = fs::read(&idx).unwrap();
    let decoded = decode_idx(&real);
    assert_eq!(encode_idx(&decoded), real);
    assert!(
        decoded.runs.iter().map(|r| r.offsets.len()).sum::<usize>() >= 5,
        "the newest segment should hold enough records for a stream to come round again"
    );
    // A valid index file for the newest segment that lists nothing but claims to cover its
    // first record (a whole batch): the log after it continues a stream whose event it dropped.
    let first_len = u32::from_le_bytes(peek(&seg, 64, 4).try_into().unwrap());
    let forged = encode_idx(&IdxFile {
        base: decoded.base,
        covered_end: 64 + u64::from(first_len),
        runs: Vec::new(),
    });
    assert_eq!(decode_idx(&forged).covered_end, 64 + u64::from(first_len));
    fs::write(&idx, &forged).unwrap();
    let s = Store::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(content(&s), expect);
    check_streams(&s, &expect);
    drop(s);
    // The same for a sealed segment, whose file covers the whole segment: the next segment
    // continues a stream whose events it dropped.
    let idx = files_with_suffix(dir.path(), ".idx")[1].clone();
    let sealed = decode_idx(&fs::read(&idx).unwrap());
    fs::write(
        &idx,
        encode_idx(&IdxFile {
            runs: Vec::new(),
            ..sealed
        }),
    )
    .unwrap();
    let s = Store::open(dir.path(), opts).unwrap();
    assert_eq!(content(&s), expect);
    check_streams(&s, &expect);
}

#[test]
fn a_damaged_run_that_open_does_not_spot_check_fails_its_first_read_and_is_rebuilt() {
    // Many streams in 64 KiB segments: the first segment's index file holds more runs than
    // opening spot-checks.
    let opts = Options::default().segment_size(64 << 10);
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts.clone()).unwrap();
    let names: Vec<String> = (0..60).map(|i| format!("stream-{i:02}")).collect();
    for round in 0..20 {
        for name in &names {
            s.append(name, ExpectedVersion::Any, events(name, round, 1))
                .unwrap();
        }
    }
    let expect = content(&s);
    s.close().unwrap();
    assert!(files_with_suffix(dir.path(), ".seg").len() >= 2);
    let idx = dir.path().join("00000000000000000000.idx");
    let good = fs::read(&idx).unwrap();
    let file = decode_idx(&good);
    let n = file.runs.len();
    assert!(n > 40, "{n} runs");
    // A stream's run (not a category or event type key's) that opening does not check.
    let victim = (0..n)
        .find(|i| !file.runs[*i].stream.starts_with('\0') && !spot_checked_runs(n).contains(i))
        .unwrap();
    let name = file.runs[victim].stream.clone();
    let (at, count) = idx_run_arrays(&good)[victim];
    assert!(count >= 3);
    // A flipped bit in the middle of the run's offsets, which its checksum alone can tell.
    flip(&idx, (at + 4 * (count / 2)) as u64, 0x08);

    let s = Store::open(dir.path(), opts.clone()).unwrap();
    // The directory is intact: the stream's version is known without using the run.
    assert_eq!(s.stream_version(&name).unwrap(), Some(19));
    let mut read = s.read_stream_forward(&name, 0, usize::MAX).unwrap();
    match read.next() {
        Some(Err(Error::Corrupt { file, offset, .. })) => {
            assert_eq!(file.file_name(), idx.file_name());
            assert_eq!(file, idx);
            assert_eq!(offset, at as u64);
        }
        other => panic!("{:?}", other.map(|r| r.map(|e| e.event_number()))),
    }
    assert!(read.next().is_none(), "a read ends after its error");
    drop(read);
    assert!(!idx.exists(), "the damaged index file is removed");
    // Still an error, not a wrong answer, while this store stays open.
    assert!(matches!(
        s.read_event(&name, 0),
        Err(Error::Corrupt { file, .. }) if file == idx
    ));
    // An empty append answers with the position of the stream's last event: an error where
    // reading that event is one, never an answer without a position.
    let empty = s.append(&name, ExpectedVersion::Any, Vec::<EventData>::new());
    match s.read_event(&name, 19) {
        Ok(last) => assert_eq!(empty.unwrap().position, Some(last.position())),
        Err(Error::Corrupt { .. }) => {
            assert!(matches!(empty, Err(Error::Corrupt { file, .. }) if file == idx))
        }
        Err(e) => panic!("{e}"),
    }
    // And for a stream whose last event is in the damaged run.
    let empty = s.append(&name, ExpectedVersion::Exact(19), Vec::<EventData>::new());
    assert!(empty.is_err() || empty.as_ref().unwrap().position.is_some());
    // The other streams are untouched.
    let others: Vec<_> = expect.iter().filter(|e| e.0 != name).cloned().collect();
    for other in names.iter().filter(|n| **n != name) {
        let want: Vec<_> = others
            .iter()
            .filter(|e| &e.0 == other)
            .map(|e| e.2.clone())
            .collect();
        let got: Vec<_> = stream(&s, other)
            .iter()
            .map(|e| e.data().to_vec())
            .collect();
        assert_eq!(got, want, "stream `{other}`");
    }
    drop(s);

    // The next open rebuilds the file from the log.
    let s = Store::open(dir.path(), opts).unwrap();
    assert_eq!(content(&s), expect);
    check_streams(&s, &expect);
    assert_eq!(fs::read(&idx).unwrap(), good, "the rebuilt index file");
}

#[test]
fn a_stale_index_file_of_a_sealed_segment_is_caught_up_from_the_log() {
    let opts = Options::default().segment_size(4096);
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join("00000000000000000000.idx");
    // Closing with the first segment active saves its index file up to there.
    let s = Store::open(dir.path(), opts.clone()).unwrap();
    for i in 0..9 {
        let name = ["x", "y", "z"][i % 3];
        s.append(name, ExpectedVersion::Any, events(name, i, 1))
            .unwrap();
    }
    let covered = s.head().0;
    let victim = s.read_event("x", 1).unwrap();
    s.close().unwrap();
    let stale = fs::read(&idx).unwrap();
    assert_eq!(decode_idx(&stale).covered_end, covered);
    // More events fill the first segment and seal it: its index file is rewritten in full.
    let s = Store::open(dir.path(), opts.clone()).unwrap();
    for i in 9..150 {
        let name = ["x", "y", "w"][i % 3];
        s.append(name, ExpectedVersion::Any, events(name, i, 1))
            .unwrap();
    }
    let expect = content(&s);
    s.close().unwrap();
    assert!(files_with_suffix(dir.path(), ".seg").len() >= 3);
    let full = fs::read(&idx).unwrap();
    assert!(decode_idx(&full).covered_end > covered);

    // The sealed segment's index file goes back to the one that covers only the first events.
    fs::write(&idx, &stale).unwrap();
    let s = Store::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(content(&s), expect);
    check_streams(&s, &expect);
    drop(s);
    assert_eq!(fs::read(&idx).unwrap(), full, "the caught-up index file");

    // Opening used the stale file: it did not scan the records the file covers, and the
    // damage there is found by the read that meets it.
    fs::write(&idx, &stale).unwrap();
    let seg = first_segment(dir.path());
    flip(&seg, victim.next_position().0 - 8, 1);
    let s = Store::open(dir.path(), opts.clone()).unwrap();
    match s.read_event("x", 1) {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!(file, seg);
            assert_eq!(offset, victim.position().0);
        }
        other => panic!("{:?}", other.map(|e| e.event_number())),
    }
    for name in ["y", "w"] {
        let want: Vec<_> = expect
            .iter()
            .filter(|e| e.0 == name)
            .map(|e| e.2.clone())
            .collect();
        let got: Vec<_> = stream(&s, name).iter().map(|e| e.data().to_vec()).collect();
        assert_eq!(got, want, "stream `{name}`");
    }
    assert_eq!(
        s.stream_version("x").unwrap(),
        expect.iter().filter(|e| e.0 == "x").map(|e| e.1).max()
    );
    assert_eq!(s.read_event("x", 2).unwrap().data(), b"x:6");
    drop(s);
    // Without index files, opening scans the segment and refuses it.
    for f in files_with_suffix(dir.path(), ".idx") {
        fs::remove_file(f).unwrap();
    }
    assert!(matches!(
        Store::open(dir.path(), opts),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn files_are_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let opts = Options::default().segment_size(4096);
    let dir = tempfile::tempdir().unwrap();
    multi_segment_store(dir.path(), &opts);
    let check = |what: &str| {
        let files: Vec<PathBuf> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(files.iter().any(|p| p.file_name().unwrap() == "LOCK"));
        let idx = files
            .iter()
            .filter(|p| p.extension().unwrap_or_default() == "idx")
            .count();
        let seg = files
            .iter()
            .filter(|p| p.extension().unwrap_or_default() == "seg")
            .count();
        // Every segment has one: the sealed ones since they were sealed, the newest since the
        // store closed.
        assert!(
            idx >= 3 && idx == seg,
            "{what}: {idx} index files, {seg} segments"
        );
        for p in &files {
            let mode = fs::metadata(p).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "{what}: {} has mode {:o}",
                p.display(),
                mode & 0o777
            );
        }
    };
    check("written by appends and close");
    // Index files rebuilt by open.
    for f in files_with_suffix(dir.path(), ".idx") {
        fs::remove_file(f).unwrap();
    }
    Store::open(dir.path(), opts).unwrap().close().unwrap();
    check("rebuilt by open");
}

#[test]
fn pages_of_the_last_group_written_out_of_order_are_a_torn_tail() {
    let live = tempfile::tempdir().unwrap();
    let s = Store::open(live.path(), big()).unwrap();
    s.append("acked", ExpectedVersion::Any, [EventData::new("E", "x")])
        .unwrap();
    let head = s.head();
    s.append(
        "unacked",
        ExpectedVersion::Any,
        (0..3u8).map(|i| EventData::new("E", vec![i; 10_000])),
    )
    .unwrap();
    let evs = all(&s);
    let crash = tempfile::tempdir().unwrap();
    snapshot(live.path(), crash.path());
    // A power loss during that batch's write: a middle page never reached the disk, the pages
    // after it did.
    let page = (evs[2].position().0 + 8).next_multiple_of(4096);
    patch(&first_segment(crash.path()), page, &[0u8; 4096]);
    let s = Store::open(crash.path(), big()).unwrap();
    assert_eq!(s.head(), head);
    assert_eq!(s.streams().unwrap(), ["acked"]);
    s.append(
        "unacked",
        ExpectedVersion::NoStream,
        events("unacked", 0, 1),
    )
    .unwrap();
}

#[test]
fn probing_for_records_after_a_torn_one_does_not_checksum_every_offset() {
    // A payload of words that each look like the length of a 1 MiB record: a probe that
    // checksummed each candidate would hash ~1 MiB at each of 131,072 offsets.
    let live = tempfile::tempdir().unwrap();
    let s = Store::open(live.path(), big().segment_size(4 << 20)).unwrap();
    s.append("a", ExpectedVersion::Any, events("a", 0, 1))
        .unwrap();
    let head = s.head();
    let data: Vec<u8> = (1u32 << 20)
        .to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect();
    s.append("b", ExpectedVersion::Any, [EventData::new("T234567", data)])
        .unwrap();
    let crash = tempfile::tempdir().unwrap();
    snapshot(live.path(), crash.path());
    flip(&first_segment(crash.path()), head.0 + 4, 0xff); // the record's checksum
    let s = Store::open(crash.path(), big().segment_size(4 << 20)).unwrap();
    assert_eq!(s.head(), head);
    assert_eq!(s.streams().unwrap(), ["a"]);
}

#[test]
fn newest_segment_with_a_blank_header_but_records_is_corrupt_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default().segment_size(4096);
    let s = Store::open(dir.path(), opts.clone()).unwrap();
    for i in 0..4 {
        s.append(
            "a",
            ExpectedVersion::Any,
            [EventData::new("E", vec![i; 1500])],
        )
        .unwrap();
    }
    drop(s);
    let segs = files_with_suffix(dir.path(), ".seg");
    assert_eq!(segs.len(), 2);
    patch(segs.last().unwrap(), 0, &[0u8; 64]);
    assert!(matches!(
        Store::open(dir.path(), opts.clone()),
        Err(Error::Corrupt { .. })
    ));
    assert!(segs[1].exists());
    // Salvage keeps the segments before it and sets it aside.
    let s = Store::open(dir.path(), opts.recovery(Recovery::Salvage)).unwrap();
    assert_eq!(s.stream_version("a").unwrap(), Some(1));
    assert_eq!(files_with_suffix(dir.path(), ".salvaged").len(), 1);
}

#[test]
fn salvage_never_overwrites_an_earlier_salvaged_file() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default().segment_size(4096);
    let fill = |s: &Store, from: u8| {
        for i in 0..6u8 {
            s.append(
                "a",
                ExpectedVersion::Any,
                [EventData::new("E", vec![from + i; 1500])],
            )
            .unwrap();
        }
    };
    let damage_first_record = |dir: &Path| {
        let seg = first_segment(dir);
        let mut b = peek(&seg, 100, 1);
        b[0] ^= 1;
        patch(&seg, 100, &b);
        for idx in files_with_suffix(dir, ".idx") {
            fs::remove_file(idx).unwrap();
        }
    };
    let s = Store::open(dir.path(), opts.clone()).unwrap();
    fill(&s, 0);
    drop(s);
    damage_first_record(dir.path());
    drop(Store::open(dir.path(), opts.clone().recovery(Recovery::Salvage)).unwrap());
    let first_round: Vec<Vec<u8>> = files_with_suffix(dir.path(), ".salvaged")
        .iter()
        .map(|p| fs::read(p).unwrap())
        .collect();
    assert!(!first_round.is_empty());
    let s = Store::open(dir.path(), opts.clone()).unwrap();
    fill(&s, 100);
    drop(s);
    damage_first_record(dir.path());
    drop(Store::open(dir.path(), opts.recovery(Recovery::Salvage)).unwrap());
    let mut kept = 0;
    for e in fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.to_str().unwrap().contains(".salvaged") {
            let bytes = fs::read(&p).unwrap();
            kept += usize::from(first_round.contains(&bytes));
        }
    }
    assert_eq!(
        kept,
        first_round.len(),
        "every first-round file is still there"
    );
}

#[test]
fn salvage_past_a_damaged_header_keeps_the_index_of_the_new_newest_segment() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default().segment_size(4096);
    let s = Store::open(dir.path(), opts.clone()).unwrap();
    for i in 0..4 {
        s.append(
            "a",
            ExpectedVersion::Any,
            [EventData::new("E", vec![i; 1500])],
        )
        .unwrap();
    }
    drop(s);
    let segs = files_with_suffix(dir.path(), ".seg");
    patch(segs.last().unwrap(), 0, &[0xffu8; 8]); // damaged magic
    let s = Store::open(dir.path(), opts.clone().recovery(Recovery::Salvage)).unwrap();
    assert_eq!(s.stream_version("a").unwrap(), Some(1));
    s.close().unwrap();
    let s = Store::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(all(&s).len(), 2);
    assert_eq!(s.stream_version("a").unwrap(), Some(1));
    assert!(matches!(
        s.append("a", ExpectedVersion::NoStream, events("a", 0, 1)),
        Err(Error::WrongExpectedVersion {
            actual: Some(1),
            ..
        })
    ));
    drop(s);
    for idx in files_with_suffix(dir.path(), ".idx") {
        fs::remove_file(idx).unwrap();
    }
    assert_eq!(
        Store::open(dir.path(), opts)
            .unwrap()
            .stream_version("a")
            .unwrap(),
        Some(1)
    );
}

#[test]
fn damage_before_the_newest_group_is_corrupt_even_at_a_batch_start() {
    let live = tempfile::tempdir().unwrap();
    let s = Store::open(live.path(), big()).unwrap();
    for i in 0..3 {
        // Three groups, each synced and acknowledged.
        s.append(
            "a",
            ExpectedVersion::Any,
            [EventData::new("E", format!("event-{i}"))],
        )
        .unwrap();
    }
    let victim = s.read_event("a", 1).unwrap();
    let crash = tempfile::tempdir().unwrap();
    snapshot(live.path(), crash.path());
    flip(
        &first_segment(crash.path()),
        victim.next_position().0 - 8,
        0xff,
    );
    match Store::open(crash.path(), big()) {
        Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, victim.position().0),
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_damaged_record_stops_any_appends_to_its_stream_but_not_exact_ones() {
    // Whether a batch is a retry cannot be decided past a damaged id: the append fails rather
    // than risk writing an event twice.
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), big()).unwrap();
    s.append("a", ExpectedVersion::NoStream, events("a", 0, 100))
        .unwrap();
    let victim = s.read_event("a", 0).unwrap();
    s.close().unwrap();
    flip(
        &first_segment(dir.path()),
        victim.next_position().0 - 8,
        0xff,
    );
    let s = Store::open(dir.path(), big()).unwrap();
    s.append("a", ExpectedVersion::Exact(99), events("a", 100, 1))
        .unwrap();
    assert!(matches!(
        s.append("a", ExpectedVersion::Any, events("a", 101, 1)),
        Err(Error::Corrupt { offset, .. }) if offset == victim.position().0
    ));
}

/// An empty append answers with the position of the stream's last event; when the index run
/// holding it is damaged, that is an error, not an answer without a position.
#[test]
fn an_empty_append_reports_a_damaged_index_run() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options::default().segment_size(4096);
    let s = Store::open(dir.path(), o.clone()).unwrap();
    // Forty one-event streams in the first segment, then enough to seal it.
    for i in 0..40 {
        s.append(
            &format!("s{i:02}"),
            ExpectedVersion::NoStream,
            [EventData::new("T", vec![])],
        )
        .unwrap();
    }
    for _ in 0..40 {
        s.append(
            "filler",
            ExpectedVersion::Any,
            [EventData::new("T", vec![0u8; 200])],
        )
        .unwrap();
    }
    s.close().unwrap();
    let idx = dir.path().join("00000000000000000000.idx");
    let file = decode_idx(&fs::read(&idx).unwrap());
    assert!(file.runs.len() > 40);
    // A stream's run that opening does not check.
    let n = file.runs.len();
    let victim = (0..n)
        .find(|i| !file.runs[*i].stream.starts_with('\0') && !spot_checked_runs(n).contains(i))
        .unwrap();
    let name = file.runs[victim].stream.clone();
    let (at, _) = idx_run_arrays(&fs::read(&idx).unwrap())[victim];
    flip(&idx, at as u64, 0x08);

    let s = Store::open(dir.path(), o).unwrap();
    assert!(matches!(
        s.append(&name, ExpectedVersion::Any, Vec::<EventData>::new()),
        Err(Error::Corrupt { file, .. }) if file == idx
    ));
    let healthy = s
        .append("s00", ExpectedVersion::Any, Vec::<EventData>::new())
        .unwrap();
    assert_eq!(healthy.version, Some(0));
    assert!(healthy.position.is_some());
}

/// A sealed segment whose header claims a gigabyte of capacity (with a valid checksum) is
/// reported as a break in the chain of segments; opening never grows its file to the claim.
#[test]
fn a_header_claiming_a_huge_capacity_grows_no_file() {
    let opts = Options::default().segment_size(4096);
    let dir = tempfile::tempdir().unwrap();
    multi_segment_store(dir.path(), &opts);
    let segments = files_with_suffix(dir.path(), ".seg");
    assert!(segments.len() >= 3);
    let sealed = &segments[1];
    let len = fs::metadata(sealed).unwrap().len();
    let mut header = peek(sealed, 0, 64);
    header[24..32].copy_from_slice(&(1u64 << 30).to_le_bytes());
    let crc = crc32fast::hash(&header[..60]);
    header[60..].copy_from_slice(&crc.to_le_bytes());
    patch(sealed, 0, &header);
    for recovery in [Recovery::Strict, Recovery::Salvage] {
        match Store::open(dir.path(), opts.clone().recovery(recovery)) {
            Err(Error::Corrupt { file, .. }) => assert_eq!(file, segments[2]),
            Err(e) => panic!("{recovery:?}: {e:?}"),
            // Salvage keeps the segments before the break and sets the rest aside.
            // Appends go on in a new segment where the claimed capacity ends.
            Ok(s) => {
                assert_eq!(recovery, Recovery::Salvage);
                assert!(!segments[2].exists());
                let before = all(&s).len();
                s.append("after", ExpectedVersion::NoStream, events("after", 0, 50))
                    .unwrap();
                s.close().unwrap();
                let s = Store::open(dir.path(), opts.clone().recovery(recovery)).unwrap();
                assert_eq!(all(&s).len(), before + 50);
                assert_eq!(datas(&s, "after")[49], "after:49");
                drop(s);
            }
        }
        assert!(
            fs::metadata(sealed).unwrap().len() <= len.max(1 << 20),
            "{recovery:?} grew the file to {}",
            fs::metadata(sealed).unwrap().len()
        );
    }
}

/// The writer saves the active segment's index file each time an eighth of the segment has been
/// appended and synced: a crash leaves at most that much of the log past the file to scan. Not
/// under `Durability::None`, where nothing is synced before `flush` or `close`.
#[test]
fn the_active_segments_index_file_is_saved_every_eighth_of_a_segment() {
    const SEG: u64 = 64 * 1024;
    let idx = |dir: &Path| dir.join("00000000000000000000.idx");
    for durability in [Durability::Sync, Durability::None] {
        let dir = tempfile::tempdir().unwrap();
        let options = Options::default().segment_size(SEG).durability(durability);
        let store = Store::open(dir.path(), options.clone()).unwrap();
        let mut saves = 0;
        let mut last_covered = 0;
        for i in 0..10_000 {
            store
                .append("acct-1", ExpectedVersion::Any, events("acct-1", 2 * i, 2))
                .unwrap();
            let head = store.head().0;
            if head >= SEG * 3 / 4 {
                break; // Still in the first segment, with room for the torn record below.
            }
            match fs::read(idx(dir.path())) {
                Ok(bytes) => {
                    assert_eq!(durability, Durability::Sync, "saved without a sync");
                    let file = decode_idx(&bytes);
                    if file.covered_end != last_covered {
                        saves += 1;
                        last_covered = file.covered_end;
                    }
                    assert!(
                        head - file.covered_end < SEG / 8,
                        "{head} {}",
                        file.covered_end
                    );
                    // The file holds exactly the stream's events up to its end.
                    let positions: Vec<u64> = stream(&store, "acct-1")
                        .iter()
                        .map(|e| e.position().0)
                        .filter(|&p| p < file.covered_end)
                        .collect();
                    let run = file.runs.iter().find(|r| r.stream == "acct-1").unwrap();
                    let offsets: Vec<u64> = run.offsets.iter().map(|&o| u64::from(o)).collect();
                    assert_eq!(offsets, positions);
                }
                Err(_) => assert!(
                    durability == Durability::None || head < SEG / 8 + 64,
                    "no index file at {head}"
                ),
            }
        }
        if durability == Durability::Sync {
            assert!(saves >= 5, "{saves} saves");
        }
        // A crash now: the copy opens with every event, scanning only past the file.
        let elsewhere = tempfile::tempdir().unwrap();
        let crashed = elsewhere.path().join("crashed");
        snapshot(dir.path(), &crashed);
        let n = stream(&store, "acct-1").len();
        // With a torn record past the end, which opening cuts: the file, which covers less, is
        // kept (a second crash before the next save scans only past it again).
        patch(&first_segment(&crashed), store.head().0, &[0xab; 24]);
        let reopened = Store::open(&crashed, options.clone()).unwrap();
        assert_eq!(stream(&reopened, "acct-1").len(), n);
        if durability == Durability::Sync {
            let kept = decode_idx(&fs::read(idx(&crashed)).unwrap());
            assert_eq!(kept.covered_end, last_covered);
        }
        drop(reopened);
        let again = Store::open(&crashed, options).unwrap();
        assert_eq!(stream(&again, "acct-1").len(), n);
        again.close().unwrap();
        store.close().unwrap();
    }
}
