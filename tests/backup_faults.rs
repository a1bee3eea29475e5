//! Backups under failing file operations and power loss (feature `fault-injection`).
//!
//! - The sweep fails each file operation a backup makes in its destination, one run per
//!   operation and per kind of fault (EIO, ENOSPC, a short write): the backup must report the
//!   failure, the live store must go on taking appends, the destination must still open (strict
//!   recovery) holding a beginning of the store's history no shorter than the earlier backup it
//!   held, and a backup taken again without faults must complete it.
//! - The power-loss model records every change two backups make to an empty destination and
//!   builds the files a power loss after each of them would leave: each must open, hold a
//!   beginning of the history, all of a backup that had returned, and nothing torn.

mod common;
mod fault_harness;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::listing;
use eventjournal::fault::{Fault, FaultInjector, FileOp};
use eventjournal::{Durability, EventData, ExpectedVersion, Options, Store};
use fault_harness::{FailAt, Kind, Loss, ModelFs, Rec, Recorder};
use tempfile::TempDir;

const SEGMENT: u64 = 8 * 1024;

fn options() -> Options {
    Options::default()
        .segment_size(SEGMENT)
        .durability(Durability::None)
}

/// Passes on to `inner` only the operations on files in `dir` (the backup's destination), so
/// that the live store's own operations are neither counted nor failed.
struct Only {
    dir: PathBuf,
    inner: Arc<dyn FaultInjector>,
}

impl FaultInjector for Only {
    fn before(&self, op: &FileOp<'_>) -> Option<Fault> {
        let path = match op {
            FileOp::Create { path }
            | FileOp::Open { path }
            | FileOp::Read { path, .. }
            | FileOp::Write { path, .. }
            | FileOp::MapWrite { path, .. }
            | FileOp::Allocate { path, .. }
            | FileOp::SetLen { path, .. }
            | FileOp::Punch { path, .. }
            | FileOp::Sync { path }
            | FileOp::Remove { path }
            | FileOp::CreateDir { path } => *path,
            FileOp::SyncDir { path } => *path,
            FileOp::Rename { to, .. } => *to,
            _ => return None,
        };
        let ours = path == self.dir || path.parent() == Some(self.dir.as_path());
        if ours {
            self.inner.before(op)
        } else {
            None
        }
    }
}

fn only(dir: &Path, inner: Arc<dyn FaultInjector>) -> Arc<dyn FaultInjector> {
    Arc::new(Only {
        dir: dir.to_path_buf(),
        inner,
    })
}

fn append(store: &Store, stream: &str, v: &mut u64, batches: u64) {
    for _ in 0..batches {
        let events = (0..3)
            .map(|i| {
                EventData::new(
                    "Step",
                    format!("{stream}/{}/{i}/{}", *v / 3, "q".repeat(120)),
                )
            })
            .collect::<Vec<_>>();
        let expected = v
            .checked_sub(1)
            .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        store.append(stream, expected, events).expect("append");
        *v += 3;
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Opens a destination left by a failed or interrupted backup and checks it against the live
/// store's history: a beginning of it, at least `at_least` events long, every batch whole.
fn check_copy(dir: &Path, history: &[(u64, String, u64, Vec<u8>)], at_least: usize, what: &str) {
    let copy = Store::open(dir, options()).unwrap_or_else(|e| panic!("{what}: does not open: {e}"));
    let got = listing(&copy);
    assert!(
        got.len() >= at_least,
        "{what}: {} events, fewer than {at_least}",
        got.len()
    );
    let first_diff = got.iter().zip(history).position(|(a, b)| a != b);
    assert!(
        got.len() <= history.len() && first_diff.is_none(),
        "{what}: not a beginning of the history: {} events against {}, first difference at \
         {first_diff:?}: {:?} against {:?}",
        got.len(),
        history.len(),
        first_diff.map(|i| (&got[i].0, &got[i].1, got[i].2)),
        first_diff.map(|i| (&history[i].0, &history[i].1, history[i].2)),
    );
    assert_eq!(got.len() % 3, 0, "{what}: a torn batch");
    copy.close().unwrap();
}

#[test]
fn a_failed_backup_reports_it_and_leaves_a_destination_that_opens() {
    let tmp = TempDir::new().unwrap();
    let (src, prior) = (tmp.path().join("live"), tmp.path().join("prior"));
    // The earlier backup holds the first half; the store has gone on since.
    let store = Store::open(&src, options()).unwrap();
    let mut v = 0;
    append(&store, "s-1", &mut v, 30);
    store.backup(&prior).unwrap();
    let prior_len = listing(&store).len();
    append(&store, "s-1", &mut v, 30);
    let history = listing(&store);
    store.close().unwrap();

    let pristine = tmp.path().join("pristine");
    copy_dir(&src, &pristine);
    let run = |dest: &Path, injector: Arc<dyn FaultInjector>| {
        for dir in [dest, src.as_path()] {
            let _ = std::fs::remove_dir_all(dir);
        }
        copy_dir(&prior, dest);
        copy_dir(&pristine, &src);
        let store = Store::open(&src, options().fault_injector(only(dest, injector))).unwrap();
        let result = store.backup(dest);
        // The live store is not harmed by its backup's failure: it takes appends (after the
        // history the checks compare with, which the store is copied back to for every run).
        let mut w = 0;
        append(&store, "after", &mut w, 1);
        store.close().unwrap();
        result
    };
    let counter = FailAt::new(usize::MAX, Kind::Eio);
    let dest = tmp.path().join("count");
    run(&dest, counter.clone()).unwrap();
    let ops = counter.count();
    assert!(ops > 30, "only {ops} operations");

    let (mut runs, mut fired) = (0, 0);
    for kind in [Kind::Eio, Kind::NoSpace, Kind::ShortWrite] {
        for at in 0..ops {
            if matches!(kind, Kind::ShortWrite) && !counter.seen.lock()[at].is_write() {
                continue;
            }
            let dest = tmp.path().join("dest");
            let injector = FailAt::new(at, kind);
            let result = run(&dest, injector.clone());
            runs += 1;
            let what = format!("{kind:?} at operation {at} ({:?})", injector.fired.lock());
            if injector.fired.lock().is_some() {
                fired += 1;
                assert!(result.is_err(), "{what}: the backup reported success");
            }
            check_copy(&dest, &history, prior_len, &what);
            // A backup again, without faults, completes the copy.
            let store = Store::open(&src, options()).unwrap();
            store
                .backup(&dest)
                .unwrap_or_else(|e| panic!("{what}: the backup again: {e}"));
            let now = listing(&store);
            store.close().unwrap();
            check_copy(&dest, &now, now.len(), &what);
        }
    }
    assert!(fired * 10 >= runs * 9, "{fired} of {runs} runs fired");
    eprintln!("{runs} runs, {fired} faults fired, over {ops} operations");
}

#[test]
fn a_power_loss_during_backups_leaves_a_destination_that_opens() {
    let tmp = TempDir::new().unwrap();
    let (src, dest) = (tmp.path().join("live"), tmp.path().join("copy"));
    let recorder = Arc::new(Recorder::default());
    let store = Store::open(
        &src,
        options().fault_injector(only(&dest, recorder.clone())),
    )
    .unwrap();
    let mut v = 0;
    append(&store, "s-1", &mut v, 25);
    store.backup(&dest).unwrap();
    let first = listing(&store).len();
    recorder.mark(Rec::Acked(0, 1));
    append(&store, "s-1", &mut v, 25);
    store.backup(&dest).unwrap();
    let history = listing(&store);
    recorder.mark(Rec::Acked(0, 2));
    store.close().unwrap();

    let journal = recorder.log.lock().clone();
    let mut fs = ModelFs::default();
    let mut done = 0;
    let mut images = 0;
    for (k, rec) in journal.iter().enumerate() {
        fs.apply(rec);
        if let Rec::Acked(_, n) = rec {
            done = *n;
        }
        for (m, loss) in [
            Loss::Unsynced,
            Loss::Prefix(k as u64),
            Loss::TornPage(k as u64),
        ]
        .into_iter()
        .enumerate()
        {
            let image = tmp.path().join(format!("image-{k}-{m}"));
            fs.crash_image(&image, loss);
            let at_least = match done {
                0 => 0,
                1 => first,
                _ => history.len(),
            };
            check_copy(
                &image,
                &history,
                at_least,
                &format!("power loss after {k} ({rec:?}), {loss:?}"),
            );
            std::fs::remove_dir_all(&image).unwrap();
            images += 1;
        }
    }
    assert!(journal.len() > 40, "{} operations recorded", journal.len());
    eprintln!(
        "{images} power-loss images of {} recorded operations",
        journal.len()
    );
}

// ---- Regressions -----------------------------------------------------------------------------

/// A gate a file operation waits at, once armed, until the test releases it.
#[derive(Default)]
struct Gate {
    state: Mutex<(bool, bool, bool)>, // armed, reached, released
    cv: Condvar,
}

impl Gate {
    fn arm(&self) {
        self.state.lock().unwrap().0 = true;
    }
    fn hit(&self) {
        let mut s = self.state.lock().unwrap();
        if !s.0 || s.1 {
            return;
        }
        s.1 = true;
        self.cv.notify_all();
        while !s.2 {
            s = self.cv.wait(s).unwrap();
        }
    }
    fn wait_reached(&self) {
        let mut s = self.state.lock().unwrap();
        while !s.1 {
            let (g, t) = self.cv.wait_timeout(s, Duration::from_secs(20)).unwrap();
            s = g;
            assert!(!t.timed_out() || s.1, "gate never reached");
        }
    }
    fn release(&self) {
        self.state.lock().unwrap().2 = true;
        self.cv.notify_all();
    }
}

struct Gates {
    src: PathBuf,
    dest: PathBuf,
    sync_seg0: Gate,
    write_seg1: Gate,
    dest_seg_tmp: Gate,
}

impl FaultInjector for Gates {
    fn before(&self, op: &FileOp<'_>) -> Option<Fault> {
        match op {
            FileOp::Sync { path } if *path == self.src.join("00000000000000000000.seg") => {
                self.sync_seg0.hit()
            }
            FileOp::Write { path, offset, .. }
                if *path == self.src.join("00000000000000008192.seg") && *offset == 64 =>
            {
                self.write_seg1.hit()
            }
            FileOp::Create { path }
                if path.parent() == Some(self.dest.as_path())
                    && path.to_string_lossy().ends_with(".seg.tmp") =>
            {
                self.dest_seg_tmp.hit()
            }
            _ => {}
        }
        None
    }
}

fn covered_end(idx: &Path) -> u64 {
    let b = std::fs::read(idx).unwrap();
    u64::from_le_bytes(b[24..32].try_into().unwrap())
}

/// A backup whose view is taken after the writer rolled to a new segment but before the group
/// that rolled published its records in the old one must not treat the old one as sealed: its
/// final index file covers records the copy does not hold.
#[test]
fn a_backup_taken_while_a_group_rolls_copies_no_index_file_past_its_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("live");
    let dest = tmp.path().join("copy");
    let gates = Arc::new(Gates {
        src: src.clone(),
        dest: dest.clone(),
        sync_seg0: Gate::default(),
        write_seg1: Gate::default(),
        dest_seg_tmp: Gate::default(),
    });
    let opts = Options::default()
        .segment_size(8192)
        .durability(Durability::Sync)
        .fault_injector(gates.clone());
    let store = Arc::new(Store::open(&src, opts).unwrap());
    store
        .append(
            "a-1",
            ExpectedVersion::Any,
            [EventData::new("E", vec![1u8; 500])],
        )
        .unwrap();

    gates.sync_seg0.arm();
    gates.write_seg1.arm();
    gates.dest_seg_tmp.arm();
    let s = store.clone();
    let a = std::thread::spawn(move || {
        s.append(
            "a-1",
            ExpectedVersion::Any,
            [EventData::new("E", vec![2u8; 100])],
        )
        .unwrap()
    });
    gates.sync_seg0.wait_reached();
    let s = store.clone();
    let b = std::thread::spawn(move || {
        s.append(
            "b-1",
            ExpectedVersion::Any,
            [EventData::new("E", vec![3u8; 100])],
        )
        .unwrap()
    });
    std::thread::sleep(Duration::from_millis(200));
    let s = store.clone();
    let c = std::thread::spawn(move || {
        s.append(
            "c-1",
            ExpectedVersion::Any,
            [EventData::new("E", vec![4u8; 7600])],
        )
        .unwrap()
    });
    std::thread::sleep(Duration::from_millis(200));
    gates.sync_seg0.release();
    a.join().unwrap();
    gates.write_seg1.wait_reached();
    // The writer rolled and is about to publish: take a backup now.
    let s = store.clone();
    let d0 = dest.clone();
    let d = std::thread::spawn(move || s.backup(&d0).unwrap());
    gates.dest_seg_tmp.wait_reached();
    gates.write_seg1.release();
    b.join().unwrap();
    c.join().unwrap();
    gates.dest_seg_tmp.release();
    let report = d.join().unwrap();

    let seg0_len = report.head.0; // copy ends in segment 0
    let idx = dest.join("00000000000000000000.idx");
    assert!(
        !idx.exists() || covered_end(&idx) <= seg0_len,
        "copy's newest segment holds {} bytes but its index file covers {}",
        seg0_len,
        covered_end(&idx)
    );
}

#[test]
fn a_kept_segment_with_bytes_past_its_records_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("live");
    let dest = tmp.path().join("copy");
    let opts = || {
        Options::default()
            .segment_size(4096)
            .durability(Durability::None)
    };
    let store = Store::open(&src, opts()).unwrap();
    for i in 0..40 {
        store
            .append(
                "s-1",
                ExpectedVersion::Any,
                [EventData::new("E", vec![i as u8 + 1; 200])],
            )
            .unwrap();
    }
    store.backup(&dest).unwrap();
    let seg0 = dest.join("00000000000000000000.seg");
    let bytes = std::fs::read(&seg0).unwrap();
    // data end of segment 0: the first zero length word from 64
    let mut off = 64usize;
    loop {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        off += len;
    }
    let mut t = bytes[..off].to_vec();
    t.extend_from_slice(&[0xff; 4]);
    std::fs::write(&seg0, &t).unwrap();
    let _ = std::fs::remove_file(dest.join("00000000000000000000.idx"));
    // The copy would not open: the backup must not keep the segment and report success.
    match store.backup(&dest) {
        Err(eventjournal::Error::InvalidInput(why)) => assert!(why.contains("not a copy"), "{why}"),
        other => panic!("a damaged kept segment: {other:?}"),
    }
}
