//! `Store::open_read_only`: reads everything, takes no lock, changes no file (beside a live
//! writer, after a crash, on a read-only file system), refuses writes with `Error::ReadOnly`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use eventjournal::*;

fn options() -> Options {
    Options::default().segment_size(4096)
}

/// Every file of a directory with its bytes, to check that nothing changed.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

fn fill(store: &Store) {
    for i in 0..60 {
        for s in ["order-1", "order-2", "cart-9"] {
            store
                .append(s, ExpectedVersion::Any, events(s, i, 2))
                .unwrap();
        }
    }
    let head = store.head();
    store.save_checkpoint("projector", head).unwrap();
}

/// What a reader must find, read through every API: `$all`, each stream, categories, types,
/// the checkpoint and a catch-up subscription.
fn check_reads(reader: &Store, expected: &[(u64, String, u64, Vec<u8>)], checkpoint: Position) {
    assert_eq!(listing(reader), expected);
    for s in ["order-1", "order-2", "cart-9"] {
        let want: Vec<&Vec<u8>> = expected.iter().filter(|e| e.1 == s).map(|e| &e.3).collect();
        let got: Vec<Vec<u8>> = stream(reader, s)
            .iter()
            .map(|e| e.data().to_vec())
            .collect();
        assert_eq!(got.iter().collect::<Vec<_>>(), want, "stream {s}");
    }
    assert_eq!(reader.category_len("order").unwrap(), 240);
    assert_eq!(reader.event_type_len("Deposited").unwrap(), 360);
    assert_eq!(
        reader.load_checkpoint("projector").unwrap(),
        Some(checkpoint)
    );
    let mut sub = reader.subscribe_to_all(AllFrom::Start, None).unwrap();
    let mut seen = 0;
    while let Some(item) = sub.recv_timeout(Duration::from_millis(200)).unwrap() {
        if matches!(item, SubscriptionItem::Event(_)) {
            seen += 1;
        }
        if seen == expected.len() {
            break;
        }
    }
    assert_eq!(seen, expected.len());
}

fn check_refuses_writes(reader: &Store) {
    let refused = reader.append("order-1", ExpectedVersion::Any, events("order-1", 0, 1));
    assert!(
        matches!(refused, Err(Error::ReadOnly { .. })),
        "{refused:?}"
    );
    let refused = reader.append_multi(vec![StreamWrite::new(
        "x-1",
        ExpectedVersion::NoStream,
        events("x-1", 0, 1),
    )]);
    assert!(
        matches!(refused, Err(Error::ReadOnly { .. })),
        "{refused:?}"
    );
    let refused = reader.save_checkpoint("other", Position::START);
    assert!(
        matches!(refused, Err(Error::ReadOnly { .. })),
        "{refused:?}"
    );
    reader.flush().unwrap();
}

/// Lets every file operation through: set on the writer, it makes the writer's id-table work
/// run inline at each seal instead of on a background thread, so that its files change only
/// while it appends and the test can tell its changes from a reader's.
struct Inline;

impl eventjournal::fault::FaultInjector for Inline {
    fn before(&self, _: &eventjournal::fault::FileOp<'_>) -> Option<eventjournal::fault::Fault> {
        None
    }
}

#[test]
fn a_read_only_open_beside_a_writer_reads_everything_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(
        dir.path(),
        options().fault_injector(std::sync::Arc::new(Inline)),
    )
    .unwrap();
    fill(&writer);
    let checkpoint = load(&writer);
    let expected = listing(&writer);
    let before = files(dir.path());
    assert!(before.keys().filter(|n| n.ends_with(".seg")).count() >= 3);

    // The writer holds the lock; a reader takes none.
    let reader = Store::open_read_only(dir.path(), options()).unwrap();
    check_reads(&reader, &expected, checkpoint);
    check_refuses_writes(&reader);
    // A second reader at once.
    let second = Store::open_read_only(dir.path(), options()).unwrap();
    assert_eq!(listing(&second), expected);
    second.close().unwrap();
    reader.close().unwrap();
    assert!(
        files(dir.path()) == before,
        "a reader changed the store's files"
    );

    // Without following, it shows the store as it opened; refreshed, what the writer added
    // since (`tests/follower.rs` tests following).
    let reader = Store::open_read_only(dir.path(), options().follow(None)).unwrap();
    writer
        .append("order-1", ExpectedVersion::Any, events("order-1", 500, 1))
        .unwrap();
    assert_eq!(listing(&reader).len(), expected.len());
    reader.refresh().unwrap();
    assert_eq!(listing(&reader).len(), expected.len() + 1);
    reader.close().unwrap();
    writer.close().unwrap();
}

fn load(store: &Store) -> Position {
    store.load_checkpoint("projector").unwrap().unwrap()
}

/// A store as a crash left it — a torn tail, a leftover temporary file, an index file missing —
/// is read as recovery would read it, and left exactly as it was.
#[test]
fn a_read_only_open_after_a_crash_changes_nothing() {
    let live = tempfile::tempdir().unwrap();
    let writer = Store::open(live.path(), options()).unwrap();
    fill(&writer);
    let checkpoint = load(&writer);
    let expected = listing(&writer);
    let head = writer.head().0;
    let crashed = tempfile::tempdir().unwrap();
    snapshot(live.path(), crashed.path());
    writer.close().unwrap();

    let newest = std::fs::read_dir(crashed.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max()
        .unwrap();
    let base: u64 = newest
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    patch(&newest, head - base, &[0x5a; 40]);
    std::fs::write(
        crashed.path().join("00000000000000000000.idx.tmp"),
        b"partial",
    )
    .unwrap();
    let _ = std::fs::remove_file(crashed.path().join("00000000000000000000.idx"));
    let before = files(crashed.path());

    let reader = Store::open_read_only(crashed.path(), options()).unwrap();
    check_reads(&reader, &expected, checkpoint);
    check_refuses_writes(&reader);
    reader.close().unwrap();
    assert!(
        files(crashed.path()) == before,
        "a reader changed a crashed store's files"
    );

    // A writer then recovers it as usual, to the same events.
    let recovered = Store::open(crashed.path(), options()).unwrap();
    assert_eq!(listing(&recovered), expected);
    recovered.close().unwrap();
}

#[test]
fn a_read_only_open_works_on_a_read_only_file_system() {
    let Some(fs) = TinyFs::mount("4m") else {
        return;
    };
    let dir = fs.path().join("store");
    let writer = Store::open(&dir, options()).unwrap();
    fill(&writer);
    let checkpoint = load(&writer);
    let expected = listing(&writer);
    writer.close().unwrap();
    // Its maps go with the last handle: a file system with files mapped writable stays busy.
    drop(writer);
    fs.set_read_only(true);
    assert!(Store::open(&dir, options()).is_err());
    let reader = Store::open_read_only(&dir, options()).unwrap();
    check_reads(&reader, &expected, checkpoint);
    check_refuses_writes(&reader);
    reader.close().unwrap();
    fs.set_read_only(false);
}

#[test]
fn a_read_only_open_never_creates_or_salvages() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none");
    assert!(matches!(
        Store::open_read_only(&missing, options()),
        Err(Error::NotAStore { .. })
    ));
    assert!(!missing.exists());
    assert!(matches!(
        Store::open_read_only(dir.path(), options()),
        Err(Error::NotAStore { .. })
    ));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let store = Store::open(dir.path(), options()).unwrap();
    store.close().unwrap();
    let salvage = options().recovery(Recovery::Salvage);
    assert!(matches!(
        Store::open_read_only(dir.path(), salvage),
        Err(Error::InvalidInput(_))
    ));
}

/// Read-only opens while two threads append to the store (small segments, so that groups roll
/// from one segment to the next): each open succeeds, and shows a beginning of `$all` made of
/// whole batches, never a batch in part or one after a batch it does not show.
#[test]
fn read_only_opens_beside_busy_writers_show_a_beginning_of_whole_batches() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let writer = Arc::new(Store::open(dir.path(), options().durability(Durability::None)).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let (writer, stop) = (writer.clone(), stop.clone());
            std::thread::spawn(move || {
                let s = format!("w-{t}");
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < 30_000 {
                    writer
                        .append(&s, ExpectedVersion::Any, events(&s, n, 3))
                        .unwrap();
                    n += 3;
                }
            })
        })
        .collect();
    while writer.head().0 < 8192 {
        std::thread::yield_now();
    }
    let mut seen = Vec::new();
    for _ in 0..60 {
        std::thread::sleep(Duration::from_millis(1));
        let reader = Store::open_read_only(dir.path(), options())
            .unwrap_or_else(|e| panic!("a read-only open beside writers failed: {e}"));
        let got = listing(&reader);
        for t in 0..2 {
            let s = format!("w-{t}");
            let mine: Vec<&Vec<u8>> = got.iter().filter(|e| e.1 == s).map(|e| &e.3).collect();
            assert_eq!(mine.len() % 3, 0, "a batch of {s} in part");
            for (i, data) in mine.iter().enumerate() {
                assert_eq!(**data, format!("{s}:{i}").into_bytes());
            }
        }
        seen.push(got);
        reader.close().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let history = listing(&writer);
    for got in &seen {
        assert!(got.len() <= history.len() && got[..] == history[..got.len()]);
    }
    assert!(seen.iter().any(|g| !g.is_empty()));
}

#[test]
fn a_read_only_open_refuses_a_sealed_segment_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    fill(&store);
    store.close().unwrap();
    drop(store);
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() > 2, "{segments:?}");
    // A sealed segment's file loses its end (as a bad copy would): what a writer's open calls
    // damage, a reader must not show as a shorter log.
    let cut = &segments[1];
    let len = std::fs::metadata(cut).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(cut)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    match Store::open_read_only(dir.path(), options()) {
        Err(Error::Corrupt { file, .. }) => assert_eq!(&file, cut),
        other => panic!("not refused: {:?}", other.map(|s| s.head())),
    }
    assert!(matches!(
        Store::open(dir.path(), options()),
        Err(Error::Corrupt { .. })
    ));
}
