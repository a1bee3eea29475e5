//! Fault injection on every file operation (feature `fault-injection`).
//!
//! A workload runs once to count its file operations; then once per operation and per kind of
//! fault (EIO; ENOSPC where space can run out; a short write followed by ENOSPC), failing that
//! one operation. Each run checks that:
//! - an append during which a log operation failed returns an error, never a success;
//! - after a failed write or sync every later append is refused (`Error::Poisoned`);
//! - closing reports a failure of its own syncs;
//! - after reopening without faults, every acknowledged batch is there, byte for byte, no batch
//!   is partly visible, and the store takes appends again.
//!
//! Failures of index-file operations need not reach the caller: index files are a cache, rebuilt
//! from the log when missing or bad, and the reopen check shows nothing was lost.
//!
//! The same sweep runs over the operations of opening a store that needs recovery (a torn tail
//! to cut, an index file to rebuild, a leftover temporary file).

mod fault_harness;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use eventjournal::fault::FaultInjector;
use eventjournal::*;
use fault_harness::*;

fn options(durability: Durability) -> Options {
    Options::default()
        .durability(durability)
        .segment_size(SEGMENT_SIZE)
}

fn with(durability: Durability, injector: Arc<dyn FaultInjector>) -> Options {
    options(durability).fault_injector(injector)
}

/// Tallies of a sweep.
#[derive(Default)]
struct Tally {
    runs: usize,
    fired: usize,
    by_op: BTreeMap<String, usize>,
}

impl Tally {
    fn add(&mut self, injector: &FailAt) {
        self.runs += 1;
        if let Some(op) = injector.fired.lock().clone() {
            self.fired += 1;
            let file = if op.file.ends_with(".seg") || op.file.ends_with(".seg.tmp") {
                "segment"
            } else if op.is_cache_file() {
                "index"
            } else if op.file.contains("meta") {
                "meta"
            } else if op.file == "LOCK" {
                "lock"
            } else {
                "dir"
            };
            *self.by_op.entry(format!("{} {file}", op.kind)).or_default() += 1;
        }
    }
}

/// The kinds of fault worth injecting into an operation of this kind.
fn kinds_for(op: &OpInfo) -> Vec<Kind> {
    let mut kinds = vec![Kind::Eio];
    if matches!(
        op.kind,
        "Write" | "MapWrite" | "Allocate" | "Create" | "SetLen" | "CreateDir" | "Sync" | "SyncDir"
    ) {
        kinds.push(Kind::NoSpace);
    }
    if op.is_write() {
        kinds.push(Kind::ShortWrite);
    }
    kinds
}

/// Runs the workload on a fresh store in `dir` with operation `fail_at` failed; checks the
/// promises above. Returns the failure, if a promise was broken.
fn run_once(
    dir: &Path,
    batches: &[Vec<Batch>],
    durability: Durability,
    injector: &Arc<FailAt>,
) -> std::result::Result<(), String> {
    let mut acked = 0usize;
    match Store::open(dir, with(durability, injector.clone())) {
        Err(e) => {
            if injector.fired.lock().is_none() {
                return Err(format!("open failed without a fault: {e}"));
            }
        }
        Ok(store) => {
            let mut refused_from = None;
            for batch in &batches[0] {
                let before = injector.fired.lock().is_some();
                let result = submit(&store, batch);
                let fired_now = if before {
                    None
                } else {
                    injector.fired.lock().clone()
                };
                match result {
                    Ok(()) => {
                        if let Some(at) = refused_from {
                            return Err(format!(
                                "batch {} acknowledged after the log failed at batch {at}",
                                batch.seq
                            ));
                        }
                        if let Some(op) = fired_now.filter(|op| !op.is_cache_file()) {
                            return Err(format!(
                                "batch {} acknowledged although {op:?} failed during it",
                                batch.seq
                            ));
                        }
                        acked += 1;
                    }
                    Err(e) => {
                        if refused_from.is_some() {
                            if !matches!(e, Error::Poisoned(_)) {
                                return Err(format!(
                                    "after a failed write, batch {} got {e:?}, not Poisoned",
                                    batch.seq
                                ));
                            }
                        } else if fired_now.is_none() {
                            return Err(format!("batch {} failed without a fault: {e}", batch.seq));
                        }
                        refused_from.get_or_insert(batch.seq);
                    }
                }
            }
            let before = injector.fired.lock().is_some();
            let closed = store.close();
            let fired_now = if before {
                None
            } else {
                injector.fired.lock().clone()
            };
            // Index files, id tables, the manifest and the hole `close` punches past the log's
            // end are best effort: their failure changes no promise.
            if let Some(op) = fired_now.filter(|op| !op.is_cache_file() && op.kind != "Punch") {
                if closed.is_ok() {
                    return Err(format!("close succeeded although {op:?} failed during it"));
                }
            }
        }
    }
    reopen_and_check(dir, batches, durability, injector, acked)
}

/// Reopens the store without faults: every acknowledged batch (the first `acked`) is there, and
/// the next batch of the workload can be appended and read back.
fn reopen_and_check(
    dir: &Path,
    batches: &[Vec<Batch>],
    durability: Durability,
    injector: &Arc<FailAt>,
    acked: usize,
) -> std::result::Result<(), String> {
    let ctx = format!(
        "{durability:?}, fault in {:?}, reopened",
        injector.fired.lock().clone()
    );
    let store = Store::open(dir, options(durability)).map_err(|e| format!("{ctx}: {e}"))?;
    let visible = check(&store, batches, &[acked], &ctx)?;
    if let Some(next) = batches[0].get(visible[0]) {
        submit(&store, next).map_err(|e| format!("{ctx}: append after reopen: {e}"))?;
        check(&store, batches, &[visible[0] + 1], &ctx)?;
    }
    store.close().map_err(|e| format!("{ctx}: close: {e}"))?;
    Ok(())
}

/// One run of a workload under an injector.
type Run = fn(&Path, &[Vec<Batch>], Durability, &Arc<FailAt>) -> std::result::Result<(), String>;

fn sweep(durability: Durability, batches: usize) -> Tally {
    sweep_with(run_once, durability, batches)
}

fn sweep_with(run_once: Run, durability: Durability, batches: usize) -> Tally {
    let batches = workload(0xfa17, 1, batches * scale());
    let counter = FailAt::new(usize::MAX, Kind::Eio);
    let clean = tempfile::tempdir().unwrap();
    run_once(clean.path(), &batches, durability, &counter).unwrap();
    let ops = counter.seen.lock().clone();
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for (k, op) in ops.iter().enumerate() {
        for kind in kinds_for(op) {
            let dir = tempfile::tempdir().unwrap();
            let injector = FailAt::new(k, kind);
            if let Err(e) = run_once(dir.path(), &batches, durability, &injector) {
                failures.push(format!("op {k} ({op:?}), {kind:?}: {e}"));
            }
            tally.add(&injector);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} runs broke a promise:\n{}",
        failures.len(),
        tally.runs,
        failures.join("\n")
    );
    let ops_of = |kind: &str| ops.iter().filter(|o| o.kind == kind).count();
    // The sweep reached every kind of operation the issue names.
    for kind in ["Write", "Sync", "SyncDir", "Create", "Rename", "Allocate"] {
        assert!(ops_of(kind) > 0, "no {kind} operation in the workload");
    }
    assert!(
        ops.iter().any(|o| o.is_cache_file() && o.kind == "Write"),
        "no index file was saved"
    );
    assert!(
        ops.iter()
            .any(|o| o.file.contains(".ids") && o.kind == "Rename"),
        "no event-id table was saved"
    );
    assert!(
        ops.iter().filter(|o| o.kind == "Rename").count() > 2,
        "no segment was sealed"
    );
    assert_eq!(tally.fired, tally.runs, "every run injected its fault");
    eprintln!(
        "{durability:?}: {} operations, {} runs, {} faults injected: {:?}",
        ops.len(),
        tally.runs,
        tally.fired,
        tally.by_op
    );
    tally
}

#[test]
fn every_operation_failed_in_turn_with_sync() {
    let tally = sweep(Durability::Sync, 40);
    assert!(tally.by_op.keys().any(|k| k.starts_with("Sync segment")));
}

#[test]
fn every_operation_failed_in_turn_without_sync() {
    let tally = sweep(Durability::None, 40);
    assert!(tally
        .by_op
        .keys()
        .any(|k| k.starts_with("MapWrite segment")));
}

/// A closed store that opening has to repair: the newest segment has a torn record after its
/// last batch, a sealed segment lost its index file, and a temporary file was left behind.
fn store_needing_recovery(dir: &Path, batches: &[Vec<Batch>]) {
    let store = Store::open(dir, options(Durability::Sync)).unwrap();
    for b in &batches[0] {
        submit(&store, b).unwrap();
    }
    let head = store.head().0;
    store.close().unwrap();
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "the workload seals segments");
    let idx = segments[1].with_extension("idx");
    std::fs::remove_file(&idx).unwrap();
    let last = segments.last().unwrap();
    let base: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(last).unwrap();
    f.write_all_at(&[0xab; 100], head - base).unwrap();
    std::fs::write(dir.join("00000000000000999999.seg.tmp"), b"partial").unwrap();
}

#[test]
fn every_operation_of_recovery_failed_in_turn() {
    let batches = workload(0x2ec0, 1, 30 * scale());
    let base = tempfile::tempdir().unwrap();
    store_needing_recovery(base.path(), &batches);
    let copy = |to: &Path| {
        for e in std::fs::read_dir(base.path()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    };
    let acked = [batches[0].len()];

    // How many operations a clean open makes.
    let counter = FailAt::new(usize::MAX, Kind::Eio);
    let clean = tempfile::tempdir().unwrap();
    copy(clean.path());
    let store = Store::open(clean.path(), with(Durability::Sync, counter.clone())).unwrap();
    let ops = counter.seen.lock().clone();
    check(&store, &batches, &acked, "clean recovery").unwrap();
    drop(store);
    assert!(
        ops.iter().any(|o| o.kind == "Punch" || o.kind == "SetLen"),
        "recovery cut a tail"
    );
    assert!(
        ops.iter().any(|o| o.kind == "Write" && o.is_cache_file()),
        "recovery rebuilt an index file"
    );
    assert!(
        ops.iter().any(|o| o.kind == "Remove"),
        "recovery removed a leftover"
    );

    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for (k, op) in ops.iter().enumerate() {
        for kind in kinds_for(op) {
            let dir = tempfile::tempdir().unwrap();
            copy(dir.path());
            let injector = FailAt::new(k, kind);
            let ctx = format!("recovery, op {k} ({op:?}) failed with {kind:?}");
            match Store::open(dir.path(), with(Durability::Sync, injector.clone())) {
                // A fault opening may survive (a best-effort step) must leave a correct store.
                Ok(store) => {
                    if let Err(e) = check(&store, &batches, &acked, &ctx) {
                        failures.push(e);
                    }
                }
                Err(Error::Io { .. }) => {}
                Err(e) => failures.push(format!("{ctx}: open failed with {e:?}, not Io")),
            }
            tally.add(&injector);
            match Store::open(dir.path(), options(Durability::Sync)) {
                Ok(store) => {
                    if let Err(e) = check(&store, &batches, &acked, &format!("{ctx}, reopened")) {
                        failures.push(e);
                    }
                }
                Err(e) => failures.push(format!("{ctx}: reopen failed: {e}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} runs broke a promise:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(tally.fired, tally.runs);
    eprintln!(
        "recovery: {} operations, {} faults injected: {:?}",
        ops.len(),
        tally.fired,
        tally.by_op
    );
}

/// Fails every sync of a segment once armed.
#[derive(Default)]
struct FailSegmentSyncs {
    armed: std::sync::atomic::AtomicBool,
    failed: std::sync::atomic::AtomicUsize,
}

impl FaultInjector for FailSegmentSyncs {
    fn before(&self, op: &eventjournal::fault::FileOp<'_>) -> Option<eventjournal::fault::Fault> {
        use std::sync::atomic::Ordering::SeqCst;
        let eventjournal::fault::FileOp::Sync { path } = op else {
            return None;
        };
        if !self.armed.load(SeqCst) || path.extension().is_none_or(|e| e != "seg") {
            return None;
        }
        self.failed.fetch_add(1, SeqCst);
        Some(eventjournal::fault::Fault::Error(eio()))
    }
}

/// With `Buffered`, the background flusher's sync fails after the append was acknowledged: the
/// next append and the close report it, and nothing is written after it.
#[test]
fn a_failed_background_sync_refuses_later_appends() {
    use std::sync::atomic::Ordering::SeqCst;
    let batches = workload(0xb0f, 1, 4);
    let dir = tempfile::tempdir().unwrap();
    let injector = Arc::new(FailSegmentSyncs::default());
    let durability = Durability::Buffered(std::time::Duration::from_millis(2));
    let store = Store::open(dir.path(), with(durability, injector.clone())).unwrap();
    submit(&store, &batches[0][0]).unwrap();
    injector.armed.store(true, SeqCst);
    // Acknowledged before the sync; unless the interval ran out before it was written, when the
    // append syncs by itself and reports the failure at once.
    match submit(&store, &batches[0][1]) {
        Ok(()) | Err(Error::Io { .. }) => {}
        Err(e) => panic!("append with a failing sync: {e:?}"),
    }
    let start = std::time::Instant::now();
    while injector.failed.load(SeqCst) == 0 {
        assert!(start.elapsed().as_secs() < 10, "the flusher never synced");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    match submit(&store, &batches[0][2]) {
        Err(Error::Poisoned(reason)) => assert!(reason.contains("syncing segment"), "{reason}"),
        other => panic!("append after a failed background sync: {other:?}"),
    }
    assert!(store.close().is_err(), "close reports the failed sync");
    let store = Store::open(dir.path(), options(durability)).unwrap();
    let visible = check(&store, &batches, &[1], "reopened").unwrap();
    assert!(
        visible[0] <= 2,
        "nothing written after the failure: {visible:?}"
    );
}

/// Creating a store's directory also syncs its parent, so that the new directory's entry (and
/// the store in it) survives a power loss.
#[test]
fn a_new_store_directory_is_made_durable_in_its_parent() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("new-store");
    let counter = FailAt::new(usize::MAX, Kind::Eio);
    Store::open(&dir, with(Durability::Sync, counter.clone()))
        .unwrap()
        .close()
        .unwrap();
    let ops = counter.seen.lock().clone();
    let parent_name = parent
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let created = ops.iter().position(|o| o.kind == "CreateDir").unwrap();
    assert!(
        ops[created..]
            .iter()
            .any(|o| o.kind == "SyncDir" && o.file == parent_name),
        "{ops:?}"
    );
}

/// The workload with a handover in its middle: the first half appended by a writer, the rest by
/// the follower that took the store over from it (`Store::take_over`), every file operation of
/// both (the old writer's close, the new one's reopening of the newest segment, its appends and
/// seals) failed in turn. A failure anywhere stops the workload there; the promises are those of
/// the sweep above, over the writer that was current.
fn run_with_handover(
    dir: &Path,
    batches: &[Vec<Batch>],
    durability: Durability,
    injector: &Arc<FailAt>,
) -> std::result::Result<(), String> {
    let fired = || injector.fired.lock().clone();
    let mut acked = 0usize;
    let half = batches[0].len() / 2;
    let mut store = match Store::open(dir, with(durability, injector.clone())) {
        Ok(store) => Some(store),
        Err(e) if fired().is_none() => return Err(format!("open failed without a fault: {e}")),
        Err(_) => None,
    };
    let mut handed = false;
    for (i, batch) in batches[0].iter().enumerate() {
        let Some(current) = store.as_ref() else { break };
        if i == half && !handed {
            handed = true;
            let before = fired().is_some();
            let taken = Store::open_read_only(dir, with(durability, injector.clone()))
                .and_then(|f| f.take_over(std::time::Duration::from_secs(10)));
            match taken {
                Ok(new) => {
                    let late = current.append("x-1", ExpectedVersion::Any, vec![]);
                    if !matches!(late, Err(Error::HandedOver { .. })) {
                        return Err(format!("the old writer after the handover: {late:?}"));
                    }
                    store = Some(new);
                }
                Err(e) if before || fired().is_none() => {
                    return Err(format!("take over failed without a fault: {e}"));
                }
                Err(_) => break,
            }
        }
        let Some(current) = store.as_ref() else { break };
        let before = fired().is_some();
        match submit(current, batch) {
            Ok(()) => {
                if let Some(op) = fired().filter(|op| !before && !op.is_cache_file()) {
                    return Err(format!(
                        "batch {} acknowledged although {op:?} failed during it",
                        batch.seq
                    ));
                }
                acked += 1;
            }
            Err(e) if !before && fired().is_none() => {
                return Err(format!("batch {} failed without a fault: {e}", batch.seq));
            }
            Err(_) => break,
        }
    }
    if let Some(store) = store {
        let _ = store.close();
    }
    reopen_and_check(dir, batches, durability, injector, acked)
}

#[test]
fn every_operation_of_a_handover_failed_in_turn() {
    let tally = sweep_with(run_with_handover, Durability::Sync, 40);
    assert!(tally.fired > 0);
}

/// Fails the `fail_at`-th sync of a segment file (counting from 0), nothing else.
struct FailSegmentSync {
    syncs: std::sync::atomic::AtomicUsize,
    fail_at: usize,
    fired: std::sync::atomic::AtomicBool,
}

impl FaultInjector for FailSegmentSync {
    fn before(&self, op: &fault::FileOp<'_>) -> Option<fault::Fault> {
        use std::sync::atomic::Ordering;
        let fault::FileOp::Sync { path } = op else {
            return None;
        };
        if path.extension().is_none_or(|e| e != "seg") {
            return None;
        }
        if self.syncs.fetch_add(1, Ordering::SeqCst) != self.fail_at {
            return None;
        }
        self.fired.store(true, Ordering::SeqCst);
        Some(fault::Fault::Error(eio()))
    }
}

/// Under `Sync` with eight writers, a failed sync fails its group and every later one, hangs no
/// appender waiting in the queue, acknowledges no batch written after the failed group, and loses
/// no acknowledged batch (a sample of the syncs failed in turn).
#[test]
fn a_failed_sync_among_groups_in_flight_fails_every_later_one() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const WRITERS: usize = 8;
    let batches = workload(0x5e9c, WRITERS, 25 * scale());
    let mut fired = 0;
    for fail_at in (0..120).step_by(7) {
        let dir = tempfile::tempdir().unwrap();
        let injector = Arc::new(FailSegmentSync {
            syncs: AtomicUsize::new(0),
            fail_at,
            fired: AtomicBool::new(false),
        });
        let store = Arc::new(
            Store::open(
                dir.path(),
                with(Durability::Sync, injector.clone() as Arc<dyn FaultInjector>),
            )
            .unwrap(),
        );
        let (done, results) = std::sync::mpsc::channel();
        for writer in 0..WRITERS {
            let (store, batches, done) = (store.clone(), batches.clone(), done.clone());
            std::thread::spawn(move || {
                // Acknowledged batches, and the first failure's batch: every later one must fail.
                let mut acked = 0;
                let mut io_failed = Vec::new();
                let mut failed: Option<usize> = None;
                let mut broken = None;
                for batch in &batches[writer] {
                    match submit(&store, batch) {
                        Ok(()) if failed.is_some() => {
                            broken = Some(format!(
                                "batch {writer}/{} acknowledged after a failure",
                                batch.seq
                            ));
                        }
                        Ok(()) => acked += 1,
                        Err(Error::Io { .. }) => {
                            failed.get_or_insert(batch.seq);
                            io_failed.push(batch.seq);
                        }
                        Err(Error::Poisoned(_)) => {
                            failed.get_or_insert(batch.seq);
                        }
                        Err(e) => broken = Some(format!("batch {writer}/{}: {e:?}", batch.seq)),
                    }
                }
                drop(store);
                let _ = done.send((writer, acked, io_failed, broken));
            });
        }
        drop(done);
        let mut acked = vec![0; WRITERS];
        let mut io_failed = std::collections::BTreeSet::new();
        for _ in 0..WRITERS {
            let (writer, n, failed, broken) = results
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("sync {fail_at} failed: a writer never returned"));
            assert_eq!(broken, None, "sync {fail_at} failed");
            acked[writer] = n;
            io_failed.extend(failed.into_iter().map(|seq| (writer, seq)));
        }
        let was_fired = injector.fired.load(Ordering::SeqCst);
        fired += usize::from(was_fired);
        if was_fired {
            assert!(
                matches!(
                    store.append("after", ExpectedVersion::Any, [EventData::new("E", "x")]),
                    Err(Error::Poisoned(_))
                ),
                "sync {fail_at} failed: the store takes appends"
            );
        }
        // Closing may report the failed sync again; the writers let go of the store before
        // reporting.
        let _ = Arc::try_unwrap(store)
            .map_err(|_| "a writer still holds the store")
            .unwrap()
            .close();
        let reopened = Store::open(dir.path(), options(Durability::Sync)).unwrap();
        check(
            &reopened,
            &batches,
            &acked,
            &format!("sync {fail_at} failed, reopened"),
        )
        .unwrap();
        // The batches whose own sync failed are in the page cache, so in the reopened log; no
        // batch after the first of them may have been acknowledged: its group was written after
        // a group whose sync failed.
        let batch_of = |e: &RecordedEvent| {
            let text = String::from_utf8_lossy(&e.data()[..e.data().len().min(32)]).into_owned();
            let mut parts = text.split('/');
            let writer: usize = parts.next()?.parse().ok()?;
            let seq: usize = parts.next()?.parse().ok()?;
            Some((writer, seq))
        };
        let mut after_failure = false;
        for e in reopened
            .read_all_forward(Position::START, usize::MAX)
            .unwrap()
        {
            let (writer, seq) = batch_of(&e.unwrap()).expect("an event of the workload");
            after_failure |= io_failed.contains(&(writer, seq));
            assert!(
                !after_failure || seq >= acked[writer],
                "sync {fail_at} failed: batch {writer}/{seq} acknowledged, after a failed group"
            );
        }
        reopened.close().unwrap();
    }
    assert!(fired >= 10, "only {fired} runs reached their failing sync");
}
