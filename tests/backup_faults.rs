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

mod fault_harness;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use eventjournal::fault::{Fault, FaultInjector, FileOp};
use eventjournal::{Durability, EventData, ExpectedVersion, Options, Position, Store};
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

fn listing(store: &Store) -> Vec<(u64, String, u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut from = Position::START;
    loop {
        let page = store.read_all_forward(from, 500).expect("read $all");
        let before = out.len();
        for e in page {
            let e = e.expect("event");
            out.push((
                e.position().0,
                e.stream().to_string(),
                e.event_number(),
                e.data().to_vec(),
            ));
            from = e.next_position();
        }
        if out.len() == before {
            return out;
        }
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
