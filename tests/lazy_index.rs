//! The stream index's lazy part: a store reopened after a clean close loads no stream from its
//! index files, and a stream, category or event type first used since open reads, appends and
//! lists exactly as one used before.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use common::*;
use eventjournal::{Durability, Error, EventData, ExpectedVersion, Options, Store};

fn opts() -> Options {
    // Small segments: the streams are spread over many sealed segments and index files.
    Options::default()
        .segment_size(16 << 10)
        .durability(Durability::None)
}

/// Writes `n` streams in three categories, some of them with events in several segments; returns
/// each stream's data in order.
fn fill(store: &Store, n: usize) -> BTreeMap<String, Vec<String>> {
    let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for round in 0..3 {
        for i in 0..n {
            // Every fifth stream gets events in every round, the others only in the first.
            if round > 0 && i % 5 != 0 {
                continue;
            }
            let name = format!("{}-{i}", ["account", "order", "cart"][i % 3]);
            let k = want.get(&name).map_or(0, Vec::len);
            store
                .append(&name, ExpectedVersion::Any, events(&name, k, 2))
                .unwrap();
            want.entry(name.clone())
                .or_default()
                .extend((k..k + 2).map(|j| format!("{name}:{j}")));
        }
    }
    want
}

/// A closed store filled by [`fill`] with `n` streams, and what they hold.
fn filled(n: usize) -> (tempfile::TempDir, BTreeMap<String, Vec<String>>) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let want = fill(&s, n);
    s.close().unwrap();
    (dir, want)
}

fn files(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

#[test]
fn a_reopened_store_loads_each_stream_when_first_used() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let want = fill(&s, 600);
    let types_before = s.event_type_len("Test").unwrap();
    let category_before: Vec<_> = s
        .read_category("order", 0, usize::MAX)
        .unwrap()
        .map(|e| e.unwrap().position())
        .collect();
    s.close().unwrap();
    drop(s);
    assert!(files(dir.path(), ".idx").len() > 5, "several index files");

    let s = Store::open(dir.path(), opts()).unwrap();
    let info = s.index_info();
    assert_eq!(info.loaded_keys, 0, "opening loaded streams: {info:?}");
    assert_eq!(info.index_files, files(dir.path(), ".idx").len());

    // Reading one stream loads that stream alone.
    let name = "order-4";
    assert_eq!(datas(&s, name), want[name]);
    assert_eq!(s.index_info().loaded_keys, 1);
    // Every stream reads back whole, with its version; each once loaded.
    for (name, data) in &want {
        assert_eq!(&datas(&s, name), data, "{name}");
        assert_eq!(s.stream_version(name).unwrap(), Some(data.len() as u64 - 1));
    }
    assert_eq!(s.index_info().loaded_keys, want.len());
    assert_eq!(s.stream_version("order-100000").unwrap(), None);
    assert_eq!(
        s.index_info().loaded_keys,
        want.len(),
        "a missing name is not held"
    );
    // Category and type reads are those of before the reopen.
    let category_after: Vec<_> = s
        .read_category("order", 0, usize::MAX)
        .unwrap()
        .map(|e| e.unwrap().position())
        .collect();
    assert_eq!(category_after, category_before);
    assert_eq!(s.event_type_len("Test").unwrap(), types_before);
    s.close().unwrap();
}

#[test]
fn appends_to_streams_not_used_since_open_check_versions_and_retries() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let mut want = fill(&s, 400);
    // A batch to retry after the reopen, in a sealed segment by then.
    let retry = events("order-7", 99, 1);
    let first = s
        .append("order-7", ExpectedVersion::Any, retry.clone())
        .unwrap();
    want.get_mut("order-7").unwrap().push("order-7:99".into());
    fill_more(&s, &mut want);
    s.close().unwrap();
    drop(s);

    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(s.index_info().loaded_keys, 0);
    // A retry of a batch written before the reopen, to a stream not used since: recognised.
    assert_eq!(
        s.append("order-7", ExpectedVersion::Any, retry.clone())
            .unwrap(),
        first
    );
    let v = first.version.unwrap();
    assert_eq!(
        s.append("order-7", ExpectedVersion::Exact(v - 1), retry)
            .unwrap(),
        first,
        "an exact retry"
    );
    // Exact, NoStream and StreamExists against streams first used by the append.
    let head = s.head();
    for (name, data) in want.iter().take(50) {
        let v = data.len() as u64 - 1;
        match s.append(name, ExpectedVersion::Exact(v + 1), events(name, 0, 1)) {
            Err(Error::WrongExpectedVersion { .. }) => {}
            r => panic!("{name}: {r:?}"),
        }
        match s.append(name, ExpectedVersion::NoStream, events(name, 0, 1)) {
            Err(Error::WrongExpectedVersion { .. }) => {}
            r => panic!("{name}: {r:?}"),
        }
    }
    assert_eq!(s.head(), head, "a refused append wrote something");
    for (name, data) in want.iter_mut().skip(50).take(100) {
        let v = data.len() as u64 - 1;
        let r = s
            .append(name, ExpectedVersion::Exact(v), events(name, 500, 1))
            .unwrap();
        assert_eq!(r.version, Some(v + 1));
        data.push(format!("{name}:500"));
    }
    for (name, data) in want.iter_mut().skip(150).take(100) {
        let r = s
            .append(name, ExpectedVersion::StreamExists, events(name, 600, 1))
            .unwrap();
        assert_eq!(r.version, Some(data.len() as u64));
        data.push(format!("{name}:600"));
    }
    s.close().unwrap();
    drop(s);
    // And all of it again after another reopen, through the index files written since.
    let s = Store::open(dir.path(), opts()).unwrap();
    for (name, data) in &want {
        assert_eq!(&datas(&s, name), data, "{name}");
    }
    let categories: usize = ["account", "order", "cart"]
        .iter()
        .map(|c| s.category_len(c).unwrap() as usize)
        .sum();
    assert_eq!(categories, want.values().map(Vec::len).sum::<usize>());
}

/// More streams after the batch to retry, so that it ends up in a sealed segment.
fn fill_more(s: &Store, want: &mut BTreeMap<String, Vec<String>>) {
    for i in 0..300 {
        let name = format!("cart-x{i}");
        s.append(&name, ExpectedVersion::NoStream, events(&name, 0, 1))
            .unwrap();
        want.insert(name.clone(), vec![format!("{name}:0")]);
    }
}

#[test]
fn pages_of_stream_names_list_each_stream_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let mut want: BTreeSet<String> = fill(&s, 500).into_keys().collect();
    s.close().unwrap();
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    // Some streams used since open, some new ones, among those left in the files.
    for name in want.iter().take(40) {
        s.stream_version(name).unwrap();
    }
    for i in 0..30 {
        let name = format!("new-{i}");
        s.append(&name, ExpectedVersion::NoStream, events(&name, 0, 1))
            .unwrap();
        want.insert(name);
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.list_streams(after.as_deref(), 7).unwrap();
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        after = Some(last.clone());
        seen.extend(page);
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a name listed twice");
    assert_eq!(unique, want);
    let mut sorted: Vec<String> = want.into_iter().collect();
    sorted.sort();
    assert_eq!(s.streams().unwrap(), sorted);
    s.close().unwrap();
    assert!(matches!(s.list_streams(None, 1), Err(Error::Closed)));
}

/// Every page of `list` (a listing of `page` names after the last name of the page before).
fn all_pages(list: impl Fn(Option<&str>) -> eventjournal::Result<Vec<String>>) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = list(after.as_deref()).unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.clone());
        seen.extend(page);
    }
    seen
}

#[test]
fn pages_of_categories_and_event_types_list_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let mut categories = BTreeSet::new();
    let mut types = BTreeSet::new();
    let mut add = |s: &Store, i: usize| {
        let stream = format!("cat{}-{i}", i % 37);
        let event_type = format!("Type{}", i % 11);
        s.append(
            &stream,
            ExpectedVersion::Any,
            [EventData::new(event_type.as_str(), "x")],
        )
        .unwrap();
        categories.insert(format!("cat{}", i % 37));
        types.insert(event_type);
    };
    // Enough to seal segments, so that most keys are left in index files at the next open.
    for i in 0..600 {
        add(&s, i);
    }
    s.close().unwrap();
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert!(s.index_info().index_files > 1);
    s.append(
        "plain",
        ExpectedVersion::Any,
        [EventData::new("Other", "y")],
    )
    .unwrap();
    categories.insert("plain".to_string());
    types.insert("Other".to_string());
    // In the category ``, which no read can name: not listed.
    s.append(
        "-dash",
        ExpectedVersion::Any,
        [EventData::new("Other", "z")],
    )
    .unwrap();
    for (listed, want) in [
        (all_pages(|a| s.list_categories(a, 5)), &categories),
        (all_pages(|a| s.list_categories(a, 1)), &categories),
        (all_pages(|a| s.list_event_types(a, 4)), &types),
    ] {
        let unique: BTreeSet<String> = listed.iter().cloned().collect();
        assert_eq!(unique.len(), listed.len(), "a name listed twice");
        assert_eq!(&unique, want);
    }
    assert_eq!(all_pages(|a| s.list_streams(a, 50)).len(), 602);
    s.close().unwrap();
    assert!(matches!(s.list_categories(None, 1), Err(Error::Closed)));
}

#[test]
fn index_files_of_the_previous_layout_are_rebuilt() {
    let (dir, want) = filled(300);
    // Index files and id tables of an older layout: a store written by an earlier version.
    for idx in files(dir.path(), ".idx") {
        let mut bytes = fs::read(&idx).unwrap();
        bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
        let crc = crc32(&bytes[..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        fs::write(&idx, bytes).unwrap();
    }
    for ids in files(dir.path(), ".ids") {
        let mut bytes = fs::read(&ids).unwrap();
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32(&bytes[..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        fs::write(&ids, bytes).unwrap();
    }
    let s = Store::open(dir.path(), opts()).unwrap();
    assert!(
        s.index_info().loaded_keys > 0,
        "old files are not read: the log is"
    );
    for (name, data) in &want {
        assert_eq!(&datas(&s, name), data, "{name}");
    }
    s.close().unwrap();
    drop(s);
    // Opening rewrote them in the current layout: the next open leaves the streams in them.
    for idx in files(dir.path(), ".idx") {
        assert!(!decode_idx(&fs::read(&idx).unwrap()).runs.is_empty());
    }
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(s.index_info().loaded_keys, 0);
    assert!(s.index_info().index_files > 0);
    for (name, data) in &want {
        assert_eq!(&datas(&s, name), data, "{name}");
    }
}

#[test]
fn a_forged_index_file_that_drops_a_run_fails_the_read_and_is_rebuilt() {
    let (dir, want) = filled(300);
    // A valid file (every checksum right) for a sealed segment in the middle of the log that
    // lists every run but one of a stream with events in later segments: only a faulty writer
    // makes it, and the open-time sample may miss it.
    let idx = files(dir.path(), ".idx");
    let victim_file = &idx[idx.len() / 2];
    let mut file = decode_idx(&fs::read(victim_file).unwrap());
    let victim = file
        .runs
        .iter()
        .position(|r| want.get(&r.stream).is_some_and(|d| d.len() > 2))
        .expect("a stream with events in several segments");
    let victim_name = file.runs[victim].stream.clone();
    file.runs.remove(victim);
    fs::write(victim_file, encode_idx(&file)).unwrap();

    let s = Store::open(dir.path(), opts()).unwrap();
    // Never a wrong answer: the whole stream, or an error naming the index file.
    match s.read_stream_forward(&victim_name, 0, usize::MAX) {
        Ok(events) => {
            let got: Result<Vec<_>, _> = events.collect();
            match got {
                Ok(got) => assert_eq!(
                    got.iter()
                        .map(|e| String::from_utf8(e.data().to_vec()).unwrap())
                        .collect::<Vec<_>>(),
                    want[&victim_name]
                ),
                Err(e) => assert!(matches!(e, Error::Corrupt { .. }), "{e}"),
            }
        }
        Err(Error::Corrupt { file, .. }) => assert!(idx.contains(&file), "{}", file.display()),
        Err(e) => panic!("{e}"),
    }
    s.close().unwrap();
    drop(s);
    // The next open rebuilds what was wrong: everything reads back.
    let s = Store::open(dir.path(), opts()).unwrap();
    for (name, data) in &want {
        assert_eq!(&datas(&s, name), data, "{name}");
    }
}

#[test]
fn a_stream_used_after_a_crash_is_found_in_files_and_in_the_scanned_tail() {
    let dir = tempfile::tempdir().unwrap();
    let copy = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let mut want = fill(&s, 300);
    s.close().unwrap();
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    // Appends after the reopen to streams left in the files, then a crash: the copy is taken
    // while the store is open, as kill -9 would leave it (the active segment's index file is
    // the one of the previous close, older than the log).
    for (name, data) in want.iter_mut().step_by(7) {
        let v = data.len() as u64 - 1;
        s.append(name, ExpectedVersion::Exact(v), events(name, 900, 1))
            .unwrap();
        data.push(format!("{name}:900"));
    }
    // The id worker may merge tables meanwhile: a table gone from under the copy is a cache
    // entry the copy lacks, as after a crash between its removal and the next open.
    for e in fs::read_dir(dir.path()).unwrap() {
        let e = e.unwrap();
        // Not the lock, nor the writer's handover socket.
        if e.file_name() != "LOCK" && e.file_type().unwrap().is_file() {
            match fs::copy(e.path(), copy.path().join(e.file_name())) {
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                r => {
                    r.unwrap();
                }
            }
        }
    }
    drop(s);
    let s = Store::open(copy.path(), opts()).unwrap();
    for (name, data) in &want {
        assert_eq!(&datas(&s, name), data, "{name}");
        assert_eq!(s.stream_version(name).unwrap(), Some(data.len() as u64 - 1));
    }
}

#[test]
fn event_data_stays_readable_where_it_was_written() {
    // The lazy part covers the active segment's first records too (the index file `close`
    // wrote); appends after the reopen extend it in the same segment.
    let dir = tempfile::tempdir().unwrap();
    let big = Options::default().durability(Durability::None);
    let s = Store::open(dir.path(), big.clone()).unwrap();
    for i in 0..100 {
        let name = format!("s-{i}");
        s.append(
            &name,
            ExpectedVersion::NoStream,
            [EventData::new("E", format!("{i}"))],
        )
        .unwrap();
    }
    s.close().unwrap();
    drop(s);
    let s = Store::open(dir.path(), big.clone()).unwrap();
    assert_eq!(s.index_info().index_files, 1);
    assert_eq!(s.index_info().loaded_keys, 0);
    for i in 0..100 {
        let name = format!("s-{i}");
        s.append(
            &name,
            ExpectedVersion::Exact(0),
            [EventData::new("E", "again")],
        )
        .unwrap();
    }
    s.close().unwrap();
    drop(s);
    let s = Store::open(dir.path(), big).unwrap();
    for i in 0..100 {
        let name = format!("s-{i}");
        let got: Vec<String> = stream(&s, &name)
            .iter()
            .map(|e| String::from_utf8(e.data().to_vec()).unwrap())
            .collect();
        assert_eq!(got, [format!("{i}"), "again".to_string()]);
    }
    assert_eq!(s.event_type_len("E").unwrap(), 200);
}

/// 64 KiB segments: index files of a few thousand runs, more than opening samples.
fn big_segments() -> Options {
    Options::default()
        .segment_size(64 << 10)
        .durability(Durability::None)
}

/// A closed store of 3,000 one-event streams in 64 KiB segments.
fn three_thousand_streams() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), big_segments()).unwrap();
    for i in 0..3000 {
        let name = format!("acct-{i}");
        s.append(&name, ExpectedVersion::NoStream, [EventData::new("E", "x")])
            .unwrap();
    }
    s.close().unwrap();
    dir
}

/// The directory blocks that opening reads to spot-check a file of `n` runs.
fn sampled_blocks(n: usize) -> BTreeSet<usize> {
    spot_checked_runs(n)
        .into_iter()
        .flat_map(|i| {
            let (a, b) = block_of_entry(i);
            [a, b]
        })
        .collect()
}

fn block_of_entry(i: usize) -> (usize, usize) {
    let a = (i * IDX_ENTRY_LEN) / IDX_BLOCK_LEN;
    let b = (i * IDX_ENTRY_LEN + IDX_ENTRY_LEN - 1) / IDX_BLOCK_LEN;
    (a, b)
}

#[test]
fn a_new_category_or_type_is_committed_whole_beside_a_damaged_directory_block() {
    let dir = three_thousand_streams();
    let files = files(dir.path(), ".idx");
    assert!(files.len() >= 3);
    // A sealed segment's file: damage every directory block no open-time spot check reads.
    let victim = &files[0];
    let mut bytes = fs::read(victim).unwrap();
    let n = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let sampled = sampled_blocks(n);
    let dir_blocks = (n * IDX_ENTRY_LEN) / IDX_BLOCK_LEN; // whole blocks inside the directory
    let mut damaged = Vec::new();
    for b in 0..dir_blocks {
        if !sampled.contains(&b) {
            // the reserved bytes 36..40 of the first whole entry of the block
            let first_entry = (b * IDX_BLOCK_LEN).div_ceil(IDX_ENTRY_LEN);
            let at = IDX_HEADER_LEN + first_entry * IDX_ENTRY_LEN + 36;
            bytes[at] ^= 1;
            damaged.push(b);
        }
    }
    assert!(!damaged.is_empty());
    fs::write(victim, &bytes).unwrap();
    // A category and a type whose first interpolation probe lands in a damaged block.
    let probe_block = |name: &str| {
        let h = idx_name_hash(name) as u128;
        let guess = (h * n as u128 / (1u128 << 64)) as usize;
        block_of_entry(guess).0
    };
    let k = (0..10_000)
        .find(|k| {
            damaged.contains(&probe_block(&format!("\0c:newcat{k}")))
                && damaged.contains(&probe_block(&format!("\0t:NewType{k}")))
        })
        .unwrap();

    let s = Store::open(dir.path(), big_segments()).unwrap();
    assert_eq!(s.index_info().loaded_keys, 0, "lazy open");
    assert_eq!(
        fs::read(victim).unwrap(),
        bytes,
        "the open did not rebuild the file"
    );
    let name = format!("newcat{k}-1");
    let ty = format!("NewType{k}");
    let r = s.append(
        &name,
        ExpectedVersion::NoStream,
        [EventData::new(ty.as_str(), "y")],
    );
    // Refused whole (the damage reported), or written whole: never written without its entries.
    if r.is_ok() {
        let cat = format!("newcat{k}");
        assert_eq!(s.category_len(&cat).unwrap(), 1);
        assert_eq!(s.event_type_len(&ty).unwrap(), 1);
        let read: Vec<_> = s.read_category(&cat, 0, 10).unwrap().collect();
        assert_eq!(read.len(), 1);
        s.close().unwrap();
        drop(s);
        let s = Store::open(dir.path(), big_segments()).unwrap();
        assert_eq!(s.stream_version(&name).unwrap(), Some(0));
        assert_eq!(
            s.category_len(&cat).unwrap(),
            1,
            "the event is in its category"
        );
        assert_eq!(
            s.event_type_len(&ty).unwrap(),
            1,
            "the event is in its type"
        );
    } else {
        assert!(matches!(r, Err(Error::Corrupt { .. })), "{r:?}");
    }
}

#[test]
fn a_damaged_directory_block_is_an_error_never_no_stream() {
    let dir = three_thousand_streams();
    let files = files(dir.path(), ".idx");
    let victim = &files[0];
    let mut bytes = fs::read(victim).unwrap();
    let file = decode_idx(&bytes);
    let n = file.runs.len();
    let sampled = sampled_blocks(n);
    // a stream of this file whose own directory entry lies in a block no spot check reads
    let mut sorted = file.runs.clone();
    sorted.sort_by_key(|r| (idx_name_hash(&r.stream), r.stream.clone()));
    let (i, victim_run) = sorted
        .iter()
        .enumerate()
        .find(|(i, r)| {
            let (a, b) = block_of_entry(*i);
            a == b && !sampled.contains(&a) && !r.stream.starts_with('\0')
        })
        .unwrap();
    let at = IDX_HEADER_LEN + i * IDX_ENTRY_LEN + 36; // a reserved byte of that entry
    bytes[at] ^= 1;
    fs::write(victim, &bytes).unwrap();
    let name = victim_run.stream.clone();

    let s = Store::open(dir.path(), big_segments()).unwrap();
    assert_eq!(s.index_info().loaded_keys, 0);
    match s.stream_version(&name) {
        Err(Error::Corrupt { file, .. }) => assert_eq!(&file, victim),
        r => panic!("{name}: {r:?}, not the damage reported"),
    }
    drop(s);
    // The damaged file was removed: the next open rebuilds it, and the stream is there.
    let s = Store::open(dir.path(), big_segments()).unwrap();
    assert_eq!(s.stream_version(&name).unwrap(), Some(0));
}

/// A closed store in 4 KiB segments where `wide` has one event in each of about 150 segments,
/// beside a filler stream; returns `wide`'s data.
fn a_wide_stream(dir: &Path) -> Vec<String> {
    let s = Store::open(dir, Options::default().segment_size(4096)).unwrap();
    for k in 0..150 {
        let expected = match k {
            0 => ExpectedVersion::NoStream,
            k => ExpectedVersion::Exact(k as u64 - 1),
        };
        s.append("wide", expected, events("wide", k, 1)).unwrap();
        let filler = EventData::new("F", vec![b'f'; 3000]);
        s.append("filler", ExpectedVersion::Any, [filler]).unwrap();
    }
    s.close().unwrap();
    (0..150).map(|j| format!("wide:{j}")).collect()
}

#[test]
fn a_stream_in_a_hundred_index_files_is_found_whole_when_first_used() {
    let dir = tempfile::tempdir().unwrap();
    let want = a_wide_stream(dir.path());
    assert!(files(dir.path(), ".idx").len() >= 140);
    let s = Store::open(dir.path(), Options::default().segment_size(4096)).unwrap();
    assert_eq!(s.index_info().loaded_keys, 0);
    // Its first use searches the index files, half of them on a second thread: every run is
    // found, in order.
    assert_eq!(datas(&s, "wide"), want);
    assert_eq!(s.stream_version("wide").unwrap(), Some(149));
    s.append("wide", ExpectedVersion::Exact(149), events("wide", 150, 1))
        .unwrap();
    assert!(matches!(
        s.append("wide", ExpectedVersion::Exact(149), events("wide", 151, 1)),
        Err(Error::WrongExpectedVersion { .. })
    ));
}

#[test]
fn damage_found_by_a_search_on_either_thread_names_the_first_damaged_file() {
    let dir = tempfile::tempdir().unwrap();
    let want = a_wide_stream(dir.path());
    let idx = files(dir.path(), ".idx");
    // One damaged file in each half of the search: the first directory block of each (every
    // lookup in such a small file reads it). Each keeps its stamp (the manifest's inode,
    // length and modification time), as a change within the clock's tick would: opening skips
    // their checks, and the lookup meets the damage.
    for victim in [&idx[30], &idx[110]] {
        let mtime = fs::metadata(victim).unwrap().modified().unwrap();
        let mut bytes = fs::read(victim).unwrap();
        bytes[IDX_HEADER_LEN + 1] ^= 0x40;
        let f = fs::OpenOptions::new().write(true).open(victim).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &bytes, 0).unwrap();
        f.set_modified(mtime).unwrap();
    }
    let s = Store::open(dir.path(), Options::default().segment_size(4096)).unwrap();
    match s.stream_version("wide") {
        Err(Error::Corrupt { file, .. }) => assert_eq!(file, idx[30]),
        r => panic!("{r:?}, not the damage reported"),
    }
    drop(s);
    // The file named was removed: the next open rebuilds it from the log, which holds the stream
    // in memory from there on; the other damaged file then fails as the stream's later runs are
    // looked up in it while opening, and the index is rebuilt from the log whole.
    let s = Store::open(dir.path(), Options::default().segment_size(4096)).unwrap();
    assert_eq!(datas(&s, "wide"), want);
    assert_eq!(s.stream_version("wide").unwrap(), Some(149));
}
