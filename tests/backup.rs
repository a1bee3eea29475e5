//! Online backup (`Store::backup`): consistent copies of live stores, incremental copies, refused
//! destinations, and backups cut short by kill -9 (the fault sweep and the power-loss model of
//! backups are in `tests/backup_faults.rs`).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{listing, TinyFs};
use eventjournal::{Durability, Error, EventData, ExpectedVersion, Options, Store, StreamWrite};
use tempfile::TempDir;

const SEGMENT: u64 = 16 * 1024;

fn options() -> Options {
    Options::default()
        .segment_size(SEGMENT)
        .durability(Durability::None)
}

/// Retries `f` while it fails with `Error::Locked`: another test of this binary that spawns a
/// process shares the open files of the moment with the child until its `exec`, a lock file
/// released by `close` just before among them, for a few milliseconds.
fn unlocked<T>(mut f: impl FnMut() -> eventjournal::Result<T>) -> eventjournal::Result<T> {
    let start = Instant::now();
    loop {
        match f() {
            Err(Error::Locked { .. }) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Appends `n` batches of three events to `stream` (which has `*v` events), each event's data
/// naming the stream, the batch and its place in it.
fn append_batches(store: &Store, stream: &str, v: &mut u64, n: u64) {
    for _ in 0..n {
        let batch = *v / 3;
        let events = (0..3)
            .map(|i| EventData::new("Step", format!("{stream}/{batch}/{i}/{}", "p".repeat(150))))
            .collect::<Vec<_>>();
        let expected = v
            .checked_sub(1)
            .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        store.append(stream, expected, events).expect("append");
        *v += 3;
    }
}

fn segments(dir: &Path) -> BTreeMap<String, u64> {
    std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry"))
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| {
            let ino = std::os::unix::fs::MetadataExt::ino(&e.metadata().expect("stat"));
            (e.file_name().to_string_lossy().into_owned(), ino)
        })
        .collect()
}

#[test]
fn a_backup_opens_strictly_and_holds_the_store_as_it_was() {
    let tmp = TempDir::new().unwrap();
    let (live, copy) = (tmp.path().join("live"), tmp.path().join("copy"));
    let store = Store::open(&live, options()).unwrap();
    let mut v = 0;
    append_batches(&store, "order-1", &mut v, 80);
    store
        .append_multi(vec![
            StreamWrite::new("a-1", ExpectedVersion::Any, vec![EventData::new("A", "x")]),
            StreamWrite::new("b-1", ExpectedVersion::Any, vec![EventData::new("B", "y")]),
        ])
        .unwrap();
    let checkpoint = store.head();
    store.save_checkpoint("reader", checkpoint).unwrap();
    let before = listing(&store);
    let backup = unlocked(|| store.backup(&copy)).unwrap();
    assert_eq!(backup.head, store.head());
    assert!(backup.segments_copied >= 3, "{backup:?}");
    assert_eq!(backup.segments_kept, 0);
    // Appends after the backup began are not in it.
    append_batches(&store, "order-1", &mut v, 5);

    let restored =
        unlocked(|| Store::open(&copy, Options::default().segment_size(SEGMENT))).unwrap();
    assert_eq!(listing(&restored), before);
    assert_eq!(restored.head(), backup.head);
    assert_eq!(restored.stream_version("order-1").unwrap(), Some(239));
    assert_eq!(
        restored.load_checkpoint("reader").unwrap(),
        Some(checkpoint)
    );
    assert_eq!(restored.category_len("order").unwrap(), 240);
    // The copy is a store of its own: it takes appends.
    restored
        .append(
            "order-1",
            ExpectedVersion::Exact(239),
            vec![EventData::new("E", "z")],
        )
        .unwrap();
    restored.close().unwrap();
    store.close().unwrap();
}

#[test]
fn a_second_backup_copies_only_what_changed() {
    let tmp = TempDir::new().unwrap();
    let (live, copy) = (tmp.path().join("live"), tmp.path().join("copy"));
    let store = Store::open(&live, options()).unwrap();
    let mut v = 0;
    append_batches(&store, "s-1", &mut v, 30);
    let first = unlocked(|| store.backup(&copy)).unwrap();
    let after_first = segments(&copy);

    append_batches(&store, "s-1", &mut v, 30);
    let second = unlocked(|| store.backup(&copy)).unwrap();
    // Every segment sealed at the first backup is kept, file and all; the first backup's newest
    // segment, then a prefix, is copied again with what followed.
    let sealed_then = after_first.len() - 1;
    assert_eq!(second.segments_kept, sealed_then, "{second:?}");
    let after_second = segments(&copy);
    let newest_then = after_first.keys().max().unwrap();
    for (name, ino) in &after_first {
        if name != newest_then {
            assert_eq!(after_second[name], *ino, "{name} was copied again");
        }
    }
    assert_eq!(
        second.segments_copied,
        after_second.len() - sealed_then,
        "{second:?}"
    );
    assert!(second.bytes_copied < store.head().0, "{second:?} {first:?}");

    // Nothing changed: nothing copied.
    let third = unlocked(|| store.backup(&copy)).unwrap();
    assert_eq!(
        (third.segments_copied, third.bytes_copied),
        (0, 0),
        "{third:?}"
    );
    assert_eq!(third.segments_kept, after_second.len());

    let restored = unlocked(|| Store::open(&copy, options())).unwrap();
    assert_eq!(listing(&restored), listing(&store));
    restored.close().unwrap();

    // A backup opened as a store and closed is still a backup of the store.
    append_batches(&store, "s-1", &mut v, 3);
    let fourth = unlocked(|| store.backup(&copy)).unwrap();
    assert_eq!(fourth.segments_copied, 1, "{fourth:?}");
    let restored = unlocked(|| Store::open(&copy, options())).unwrap();
    assert_eq!(listing(&restored), listing(&store));
    restored.close().unwrap();
    store.close().unwrap();
}

#[test]
fn a_destination_that_is_not_this_stores_backup_is_refused_untouched() {
    let tmp = TempDir::new().unwrap();
    let a = Store::open(tmp.path().join("a"), options()).unwrap();
    let b = Store::open(tmp.path().join("b"), options()).unwrap();
    let (mut va, mut vb) = (0, 0);
    append_batches(&a, "s-1", &mut va, 20);
    append_batches(&b, "s-1", &mut vb, 20);
    let dest = tmp.path().join("copy");
    unlocked(|| a.backup(&dest)).unwrap();
    let snapshot = |dir: &Path| -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    };
    let before = snapshot(&dest);
    match unlocked(|| b.backup(&dest)) {
        Err(Error::InvalidInput(why)) => assert!(why.contains("not a copy"), "{why}"),
        other => panic!("backup of another store into a backup: {other:?}"),
    }
    assert!(snapshot(&dest) == before, "the destination changed");

    // A directory with other files is not a store; the store's own directory is refused.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    assert!(matches!(a.backup(&other), Err(Error::NotAStore { .. })));
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);
    assert!(matches!(
        a.backup(tmp.path().join("a")),
        Err(Error::InvalidInput(_))
    ));

    // A backup that is open as a store is locked.
    let opened = unlocked(|| Store::open(&dest, options())).unwrap();
    assert!(matches!(a.backup(&dest), Err(Error::Locked { .. })));
    opened.close().unwrap();
    unlocked(|| a.backup(&dest)).unwrap();
    a.close().unwrap();
    b.close().unwrap();
}

/// Backups at random moments of concurrent appends: each holds every batch acknowledged before
/// it began, no batch in part, and opens with strict recovery.
#[test]
fn backups_under_concurrent_appends_hold_every_batch_acknowledged_before() {
    let tmp = TempDir::new().unwrap();
    // Larger segments: the writers fill several in the test, not thousands.
    let options = || options().segment_size(1 << 20);
    let store = Arc::new(Store::open(tmp.path().join("live"), options()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    const WRITERS: usize = 3;
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, stop, acked) = (store.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut v = 0;
                while !stop.load(Ordering::Relaxed) {
                    append_batches(&store, &format!("w-{w}"), &mut v, 1);
                    acked[w].store(v / 3, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_micros(50));
                }
            })
        })
        .collect();
    for k in 0..12 {
        std::thread::sleep(Duration::from_millis(5 + (k * 7) % 20));
        let before: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
        let dest = tmp.path().join(format!("copy-{}", k % 4));
        let backup = unlocked(|| store.backup(&dest)).unwrap();
        let copy = unlocked(|| Store::open(&dest, options())).unwrap();
        assert_eq!(copy.head(), backup.head);
        for (w, &acked_batches) in before.iter().enumerate() {
            let stream = format!("w-{w}");
            let events: Vec<String> = copy
                .read_stream_forward(&stream, 0, usize::MAX)
                .unwrap()
                .map(|e| String::from_utf8(e.unwrap().data().to_vec()).unwrap())
                .collect();
            assert_eq!(
                events.len() % 3,
                0,
                "a torn batch of {stream} in backup {k}"
            );
            assert!(
                events.len() as u64 >= acked_batches * 3,
                "backup {k} lost batches of {stream}: {} events, {acked_batches} batches acked",
                events.len()
            );
            for (n, data) in events.iter().enumerate() {
                assert!(data.starts_with(&format!("{stream}/{}/{}/", n / 3, n % 3)));
            }
        }
        copy.close().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
}

// ---- kill -9 during backups ------------------------------------------------------------------

const CHILD_SRC_ENV: &str = "EVJ_BACKUP_CHILD_SRC";
const CHILD_DEST_ENV: &str = "EVJ_BACKUP_CHILD_DEST";

/// The child of `a_backup_killed_midway_leaves_a_destination_that_opens`: appends and backs up
/// in a loop until killed, printing each completed backup's head. Does nothing as an ordinary
/// test.
#[test]
fn backup_child() {
    let (Ok(src), Ok(dest)) = (std::env::var(CHILD_SRC_ENV), std::env::var(CHILD_DEST_ENV)) else {
        return;
    };
    let store = unlocked(|| Store::open(&src, options())).expect("child open");
    let mut v = store
        .stream_version("s-1")
        .expect("version")
        .map_or(0, |n| n + 1);
    println!("ready");
    loop {
        append_batches(&store, "s-1", &mut v, 20);
        let backup = store.backup(&dest).expect("child backup");
        println!("backed up {}", backup.head.0);
    }
}

#[test]
fn a_backup_killed_midway_leaves_a_destination_that_opens() {
    let iterations: u64 = std::env::var("EVJ_BACKUP_KILLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let tmp = TempDir::new().unwrap();
    let (src, dest) = (tmp.path().join("live"), tmp.path().join("copy"));
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut completed = 0u64;
    let mut kills_in_backup = 0;
    for i in 0..iterations {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "backup_child",
                "--exact",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_SRC_ENV, &src)
            .env(CHILD_DEST_ENV, &dest)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The test harness prints its own lines first.
        while !rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap()
            .ends_with("ready")
        {}
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_millis(5 + rng % 120);
        let start = Instant::now();
        while start.elapsed() < delay {
            if let Ok(line) = rx.recv_timeout(delay.saturating_sub(start.elapsed())) {
                if let Some(head) = line.strip_prefix("backed up ") {
                    completed = head.parse().unwrap();
                }
            }
        }
        kill9(child.id());
        child.wait().unwrap();
        reader.join().unwrap();
        for line in rx.try_iter() {
            if let Some(head) = line.strip_prefix("backed up ") {
                completed = head.parse().unwrap();
            }
        }
        // The destination opens strictly, holds at least the last completed backup, and is a
        // beginning of the store's history.
        if !dest.join("eventjournal.meta").exists() {
            assert_eq!(completed, 0, "iteration {i}: a completed backup vanished");
            continue;
        }
        let live = unlocked(|| Store::open(&src, options())).unwrap();
        let history = listing(&live);
        live.close().unwrap();
        let copy = unlocked(|| Store::open(&dest, options()))
            .unwrap_or_else(|e| panic!("iteration {i}: the backup does not open: {e}"));
        assert!(
            copy.head().0 >= completed,
            "iteration {i}: behind the last completed backup"
        );
        if copy.head().0 > completed {
            kills_in_backup += 1;
        }
        let got = listing(&copy);
        assert!(
            got.len() <= history.len() && got[..] == history[..got.len()],
            "iteration {i}"
        );
        copy.close().unwrap();
    }
    assert!(
        completed > 0,
        "no backup completed in {iterations} iterations"
    );
    eprintln!(
        "{iterations} kills, {kills_in_backup} with a backup under way past the last completed one"
    );
}

fn kill9(pid: u32) {
    // `kill -9` through the command, so that the test needs no unsafe code of its own.
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A backup into a file system that fills up fails with the operating system's error, leaves a
/// destination that opens (a beginning of the store), and the next backup, once there is room,
/// completes it.
#[test]
fn a_backup_into_a_full_disk_fails_and_the_next_one_completes() {
    let Some(fs) = TinyFs::mount("1m") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let options = || options().segment_size(256 * 1024);
    let store = Store::open(tmp.path().join("live"), options()).unwrap();
    let mut v = 0;
    append_batches(&store, "s-1", &mut v, 3000);
    let history = listing(&store);
    let dest = fs.path().join("copy");
    match unlocked(|| store.backup(&dest)) {
        Err(Error::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(28), "{source}"),
        other => panic!(
            "a backup of {} MB into 1 MB: {other:?}",
            store.head().0 / 1_000_000
        ),
    }
    let copy = unlocked(|| Store::open(&dest, options())).unwrap();
    let got = listing(&copy);
    assert!(!got.is_empty() && got.len() < history.len() && got[..] == history[..got.len()]);
    copy.close().unwrap();

    let grown = Command::new("mount")
        .args(["-o", "remount,size=16m"])
        .arg(fs.path())
        .status()
        .unwrap();
    assert!(grown.success());
    let backup = unlocked(|| store.backup(&dest)).unwrap();
    assert!(backup.segments_kept > 0, "{backup:?}");
    let copy = unlocked(|| Store::open(&dest, options())).unwrap();
    assert_eq!(listing(&copy), history);
    copy.close().unwrap();
    store.close().unwrap();
}
