//! Simulated power loss (feature `fault-injection`).
//!
//! A workload runs with a recorder that sees every change the store makes to its files, in order
//! (creations, writes, map writes, lengths, syncs, renames, removals, directory syncs), and the
//! test marks each acknowledged batch in the same journal. Replaying that journal into a model
//! file system gives, at any point, the files a power loss would leave: only what was synced
//! (file bytes by `fsync`, directory entries by a directory `fsync`), or, in the other modes, also
//! a random prefix of the unsynced writes, or all of them with the last page torn.
//!
//! The store is crashed before and after every sync and at random points between. Each image
//! must open (strict recovery), hold every batch acknowledged before the crash in `Sync` mode,
//! show each batch whole or not at all and each writer's batches without gaps, and then take
//! appends and reopen again.

mod fault_harness;

use std::sync::Arc;
use std::time::Duration;

use eventjournal::*;
use fault_harness::*;

/// Runs the workload with one thread per writer, recording every file change: the first half of
/// each writer's batches, then a close and a reopen (so that crashes also hit a reopened store,
/// whose files were synced by the close), then the second half.
///
/// With `handover`, the second half is appended by a follower that took the store over from the
/// first writer (`Store::take_over`) instead of by a reopened store: crashes then also hit the
/// old writer's close for the handover and the new writer's first groups.
fn record(durability: Durability, batches: &[Vec<Batch>], handover: bool) -> Vec<Rec> {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let options = Options::default()
        .durability(durability)
        .segment_size(SEGMENT_SIZE)
        .fault_injector(recorder.clone());
    let mut previous: Option<Store> = None;
    for session in 0..2 {
        let store = match previous.take() {
            Some(old) if handover => {
                let new = Store::open_read_only(dir.path(), options.clone())
                    .and_then(|f| f.take_over(Duration::from_secs(10)))
                    .unwrap();
                drop(old);
                new
            }
            _ => Store::open(dir.path(), options.clone()).unwrap(),
        };
        std::thread::scope(|s| {
            for mine in batches {
                let half = mine.len() / 2;
                let mine = if session == 0 {
                    &mine[..half]
                } else {
                    &mine[half..]
                };
                let (store, recorder) = (&store, &recorder);
                s.spawn(move || {
                    for b in mine {
                        submit(store, b).unwrap();
                        recorder.mark(Rec::Acked(b.writer, b.seq));
                    }
                });
            }
        });
        if handover && session == 0 {
            previous = Some(store);
        } else {
            store.close().unwrap();
        }
    }
    let log = recorder.log.lock().clone();
    log
}

/// Opens a crash image and checks it; then appends the next batch of writer 0, reopens, and
/// checks again.
fn check_image(
    dir: &std::path::Path,
    batches: &[Vec<Batch>],
    acked: &[usize],
    ctx: &str,
) -> std::result::Result<usize, String> {
    let options = || Options::default().segment_size(SEGMENT_SIZE);
    let store = Store::open(dir, options()).map_err(|e| format!("{ctx}: open: {e}"))?;
    let visible = check(&store, batches, acked, ctx)?;
    // Every batch that survived is recognised as such when sent again (with `Any`, through the
    // event-id index in whatever state the crash left its tables): nothing is written twice.
    let head = store.head();
    for (writer, &n) in visible.iter().enumerate() {
        for batch in &batches[writer][..n] {
            submit(&store, batch).map_err(|e| format!("{ctx}: retry of a batch: {e}"))?;
        }
    }
    if store.head() != head {
        return Err(format!(
            "{ctx}: a retry of a surviving batch wrote it again"
        ));
    }
    let mut after = visible.clone();
    if let Some(next) = batches[0].get(visible[0]) {
        submit(&store, next).map_err(|e| format!("{ctx}: append after recovery: {e}"))?;
        after[0] += 1;
    }
    store
        .close()
        .map_err(|e| format!("{ctx}: close after recovery: {e}"))?;
    let store = Store::open(dir, options()).map_err(|e| format!("{ctx}: second open: {e}"))?;
    let again = check(&store, batches, &after, &format!("{ctx}, second open"))?;
    if again != after {
        return Err(format!(
            "{ctx}: second open shows {again:?}, expected {after:?}"
        ));
    }
    Ok(visible.iter().sum())
}

/// Crashes the recorded run at every sync boundary and at `random` other points, under each kind
/// of loss; returns the number of crash images checked.
fn crash_everywhere(
    durability: Durability,
    writers: usize,
    batches: usize,
    random: usize,
    seed: u64,
) -> usize {
    crash_everywhere_with(durability, writers, batches, random, seed, false)
}

fn crash_everywhere_with(
    durability: Durability,
    writers: usize,
    batches: usize,
    random: usize,
    seed: u64,
    handover: bool,
) -> usize {
    let batches = workload(seed, writers, batches * scale());
    let random = random * scale();
    let journal = record(durability, &batches, handover);
    let mut points: Vec<usize> = Vec::new();
    for (k, rec) in journal.iter().enumerate() {
        if matches!(rec, Rec::Sync(_) | Rec::SyncDir) {
            points.push(k);
            points.push(k + 1);
        }
    }
    let syncs = points.len() / 2;
    let mut rng = Random::new(seed);
    for _ in 0..random {
        points.push(rng.below(journal.len() as u64 + 1) as usize);
    }
    points.sort_unstable();
    points.dedup();
    assert!(syncs > 10, "the workload syncs ({syncs})");

    let mut model = ModelFs::default();
    let mut applied = 0;
    let mut acked = vec![0usize; writers];
    let mut images = 0;
    // Images in which a batch survived that the same crash loses when nothing unsynced is kept:
    // the modes that keep unsynced bytes did keep some.
    let mut kept_unsynced = 0;
    let mut failures = Vec::new();
    for &k in &points {
        while applied < k {
            let rec = &journal[applied];
            if let Rec::Acked(w, seq) = rec {
                assert_eq!(*seq, acked[*w], "acknowledgements come in order");
                acked[*w] += 1;
            }
            model.apply(rec);
            applied += 1;
        }
        // Only `Sync` promises that an acknowledged batch survives a power loss.
        let must_have = if durability == Durability::Sync {
            acked.clone()
        } else {
            vec![0; writers]
        };
        let mut losses = vec![
            Loss::Unsynced,
            Loss::Prefix(k as u64),
            Loss::Prefix(k as u64 ^ 0xdead),
            Loss::TornPage(k as u64),
        ];
        if durability == Durability::Sync {
            losses.push(Loss::Pages(k as u64));
        }
        let mut synced_only = 0;
        for loss in losses {
            let dir = tempfile::tempdir().unwrap();
            model.crash_image(dir.path(), loss);
            let ctx = format!(
                "{durability:?}, crash after op {k} of {}, {loss:?}",
                journal.len()
            );
            match check_image(dir.path(), &batches, &must_have, &ctx) {
                Ok(visible) if matches!(loss, Loss::Unsynced) => synced_only = visible,
                Ok(visible) => kept_unsynced += usize::from(visible > synced_only),
                Err(e) => failures.push(e),
            }
            images += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {images} crash images broke a promise:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
    eprintln!(
        "{durability:?}, {writers} writer(s): {} file operations, {syncs} syncs, {} crash points, \
         {images} crash images checked, {kept_unsynced} with unsynced batches kept",
        journal.len(),
        points.len()
    );
    assert!(kept_unsynced > 0, "no crash image kept an unsynced batch");
    images
}

#[test]
fn power_loss_at_every_sync_one_writer() {
    crash_everywhere(Durability::Sync, 1, 60, 60, 0x9011);
}

#[test]
fn power_loss_at_every_sync_four_writers() {
    crash_everywhere(Durability::Sync, 4, 15, 40, 0x9012);
}

#[test]
fn power_loss_across_a_handover() {
    crash_everywhere_with(Durability::Sync, 2, 30, 60, 0x9015, true);
}

#[test]
fn power_loss_without_sync_keeps_whole_batches() {
    crash_everywhere(Durability::None, 1, 60, 200, 0x9013);
}

#[test]
fn power_loss_with_buffered_sync_keeps_whole_batches() {
    crash_everywhere(
        Durability::Buffered(Duration::from_micros(200)),
        2,
        30,
        100,
        0x9014,
    );
}

/// The model itself: unsynced bytes and directory entries are lost, synced ones kept, and the
/// other modes keep part of what was not synced.
#[test]
fn the_model_keeps_only_what_was_synced() {
    let w = |name: &str, off: u64, data: &[u8]| {
        Rec::Change(name.into(), Change::Write(off, data.to_vec()))
    };
    let mut fs = ModelFs::default();
    for rec in [
        Rec::Create("a.tmp".into()),
        w("a.tmp", 0, b"synced"),
        Rec::Sync("a.tmp".into()),
        Rec::Rename("a.tmp".into(), "a".into()),
        Rec::SyncDir,
        w("a", 6, &[7u8; 5000]),
        Rec::Create("b".into()),
        w("b", 0, b"never durable"),
        Rec::Sync("b".into()),
    ] {
        fs.apply(&rec);
    }
    let read = |loss| {
        let dir = tempfile::tempdir().unwrap();
        fs.crash_image(dir.path(), loss);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        (names, std::fs::read(dir.path().join("a")).unwrap())
    };
    let (names, a) = read(Loss::Unsynced);
    assert_eq!(names, ["a"], "b's directory entry was never synced");
    assert_eq!(a, b"synced");
    let (_, torn) = read(Loss::TornPage(3));
    assert_eq!(
        &torn[..4096],
        &[b"synced".as_slice(), &[7u8; 4090]].concat()[..]
    );
    assert!(torn[4096..].contains(&0), "the last page is torn");
    let prefixes: Vec<usize> = (0..20)
        .map(|seed| read(Loss::Prefix(seed)).1.len())
        .collect();
    assert!(prefixes.iter().all(|&n| (6..=5006).contains(&n)));
    assert!(prefixes.iter().any(|&n| n > 6 && n < 5006), "{prefixes:?}");
}
