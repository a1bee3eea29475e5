//! `Store::flush` (feature `fault-injection`): under `Durability::None` and `Buffered`, appends
//! that returned before a flush survive a power loss right after it, proved on the power-loss
//! model (only synced bytes and directory entries kept); a failed sync during a flush is reported
//! and refuses later writes; under `Sync` a flush does no I/O.

mod fault_harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventjournal::fault::{Fault, FaultInjector, FileOp};
use eventjournal::*;
use fault_harness::*;

/// Journal positions of one recorded run: where each flush started and where it returned.
struct Run {
    journal: Vec<Rec>,
    batches: Vec<Vec<Batch>>,
    /// Per round: (journal length before the flush, after it, batches acknowledged per writer).
    rounds: Vec<(usize, usize, Vec<usize>)>,
}

/// Two rounds of appends from two writers (small segments, so that segments are sealed and
/// created without syncs), each followed by a flush; every file change recorded.
fn record(durability: Durability) -> Run {
    const WRITERS: usize = 2;
    const PER_ROUND: usize = 12;
    let batches = workload(0xf105, WRITERS, 2 * PER_ROUND);
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let store = Store::open(
        dir.path(),
        Options::default()
            .durability(durability)
            .segment_size(SEGMENT_SIZE)
            .fault_injector(recorder.clone()),
    )
    .unwrap();
    let mut rounds = Vec::new();
    for round in 0..2 {
        std::thread::scope(|s| {
            for mine in &batches {
                let (store, recorder) = (&store, &recorder);
                s.spawn(move || {
                    for b in &mine[round * PER_ROUND..(round + 1) * PER_ROUND] {
                        submit(store, b).unwrap();
                        recorder.mark(Rec::Acked(b.writer, b.seq));
                    }
                });
            }
        });
        let before = recorder.log.lock().len();
        store.flush().unwrap();
        let after = recorder.log.lock().len();
        rounds.push((before, after, vec![(round + 1) * PER_ROUND; WRITERS]));
    }
    // Taken before closing: the power loss comes before the close's syncs.
    let journal = recorder.log.lock().clone();
    store.close().unwrap();
    Run {
        journal,
        batches,
        rounds,
    }
}

/// Opens the image of a power loss after the first `ops` recorded operations that keeps only
/// synced bytes and directory entries, and checks it against the workload with `acked` batches
/// required; returns the batches visible per writer.
fn synced_only_image(
    run: &Run,
    ops: usize,
    acked: &[usize],
) -> std::result::Result<Vec<usize>, String> {
    let mut model = ModelFs::default();
    for rec in &run.journal[..ops] {
        model.apply(rec);
    }
    let dir = tempfile::tempdir().unwrap();
    model.crash_image(dir.path(), Loss::Unsynced);
    let store = Store::open(dir.path(), Options::default().segment_size(SEGMENT_SIZE))
        .map_err(|e| format!("open: {e}"))?;
    let visible = check(&store, &run.batches, acked, &format!("after op {ops}"))?;
    store.close().map_err(|e| e.to_string())?;
    Ok(visible)
}

fn flush_survives_power_loss(durability: Durability) {
    let run = record(durability);
    let none = vec![0; run.batches.len()];
    for (round, (before, after, acked)) in run.rounds.iter().enumerate() {
        // Right after the flush returned: everything acknowledged before it is there.
        let visible = synced_only_image(&run, *after, acked)
            .unwrap_or_else(|e| panic!("{durability:?}, round {round}, after flush: {e}"));
        assert!(visible.iter().zip(acked).all(|(v, a)| v >= a));
        // Right before it: the same check fails, since some were not synced yet. This is what
        // makes the check above a proof of the flush.
        let visible = synced_only_image(&run, *before, &none)
            .unwrap_or_else(|e| panic!("{durability:?}, round {round}, before flush: {e}"));
        assert!(
            visible.iter().zip(acked).any(|(v, a)| v < a),
            "{durability:?}, round {round}: all {acked:?} acknowledged batches were durable \
             before the flush ({visible:?})"
        );
        assert!(
            synced_only_image(&run, *before, acked).is_err(),
            "{durability:?}, round {round}"
        );
    }
}

#[test]
fn flush_makes_appends_durable_without_sync() {
    flush_survives_power_loss(Durability::None);
}

#[test]
fn flush_makes_appends_durable_with_buffered_sync() {
    // An interval that never passes during the test: only the flush syncs.
    flush_survives_power_loss(Durability::Buffered(Duration::from_secs(3600)));
}

#[test]
fn flush_under_sync_does_no_io() {
    let dir = tempfile::tempdir().unwrap();
    let counter = FailAt::new(usize::MAX, Kind::Eio);
    let store = Store::open(
        dir.path(),
        Options::default()
            .segment_size(SEGMENT_SIZE)
            .fault_injector(counter.clone()),
    )
    .unwrap();
    for b in &workload(7, 1, 20)[0] {
        submit(&store, b).unwrap();
    }
    let ops = counter.count();
    store.flush().unwrap();
    store.flush().unwrap();
    assert_eq!(counter.count(), ops, "{:?}", &counter.seen.lock()[ops..]);
    store.close().unwrap();
}

/// Fails every sync of a segment once armed.
#[derive(Default)]
struct FailSegmentSyncs {
    armed: AtomicBool,
    fired: AtomicBool,
}

impl FaultInjector for FailSegmentSyncs {
    fn before(&self, op: &FileOp<'_>) -> Option<Fault> {
        let segment =
            matches!(op, FileOp::Sync { path } if path.extension().is_some_and(|e| e == "seg"));
        (segment && self.armed.load(Ordering::SeqCst)).then(|| {
            self.fired.store(true, Ordering::SeqCst);
            Fault::Error(eio())
        })
    }
}

fn failed_flush_poisons(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FailSegmentSyncs::default());
    let options = Options::default()
        .durability(durability)
        .fault_injector(faults.clone());
    let store = Store::open(dir.path(), options).unwrap();
    store
        .append("s", ExpectedVersion::NoStream, [EventData::new("E", "a")])
        .unwrap();
    faults.armed.store(true, Ordering::SeqCst);
    let flushed = store.flush();
    assert!(faults.fired.load(Ordering::SeqCst));
    assert!(
        matches!(flushed, Err(Error::Io { .. })),
        "{durability:?}: {flushed:?}"
    );
    faults.armed.store(false, Ordering::SeqCst);
    // Never retried and assumed fine: every later write, and flush, is refused.
    let next = store.append("s", ExpectedVersion::Exact(0), [EventData::new("E", "b")]);
    assert!(matches!(next, Err(Error::Poisoned(_))), "{next:?}");
    assert!(matches!(store.flush(), Err(Error::Poisoned(_))));
    assert!(matches!(store.close(), Err(Error::Poisoned(_))));
    // Closed all the same: the directory is free.
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(store.stream_version("s").unwrap(), Some(0));
}

#[test]
fn a_failed_sync_during_flush_is_reported_and_refuses_later_appends_without_sync() {
    failed_flush_poisons(Durability::None);
}

#[test]
fn a_failed_sync_during_flush_is_reported_and_refuses_later_appends_buffered() {
    failed_flush_poisons(Durability::Buffered(Duration::from_secs(3600)));
}
