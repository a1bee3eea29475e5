//! Compaction when the file system fails or the power goes (feature `fault-injection`).
//!
//! One workload builds a store whose sealed segments hold deleted, truncated and live events,
//! interleaved; its readers' view (every stream, `$all`) is taken as the reference. Then:
//! - every file operation of a compaction is failed in turn (durable store and
//!   `Durability::None`): the compaction returns a typed error or completes, a reopen shows the
//!   reference, and the next compaction rewrites only the segments the failed one did not finish;
//! - a compaction is stopped by a dead disk in the middle of a segment, leaving a half-compacted
//!   store and a temporary file, and every operation of opening that store is failed in turn;
//! - the power is cut at every file operation of a compaction (with appends running beside it):
//!   every image the model allows opens with strict recovery, keeps every synced live event and
//!   shows no hidden one;
//! - id tables rebuilt from compacted segments still lead every stream's reads to its events.
//!
//! The default run costs a few seconds; `EVJ_FAULT_SCALE=N` tries every kind of fault at every
//! operation and more crash images.

mod fault_harness;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use eventjournal::fault::{Fault, FaultInjector, FileOp};
use eventjournal::*;
use fault_harness::*;

const SEGMENT: u64 = 16 * 1024;

fn options(durability: Durability) -> Options {
    Options::default()
        .segment_size(SEGMENT)
        .durability(durability)
}

/// The payload of event `n` of `stream`: from a few bytes to 1.5 KiB, naming itself.
fn payload(stream: &str, n: u64) -> Vec<u8> {
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (stream.len() as u64 * 0x51);
    let len = 20 + (h >> 7) % 1500;
    let mut d = format!("{stream}#{n}#").into_bytes();
    d.extend((0..len).map(|i| (h >> (i % 7 * 8)) as u8 ^ i as u8));
    d
}

fn append(store: &Store, stream: &str) -> Result<AppendResult> {
    let n = store.stream_version(stream)?.map_or(0, |v| v + 1);
    store.append(
        stream,
        ExpectedVersion::Any,
        [EventData::new("Noted", payload(stream, n))],
    )
}

/// Streams kept, deleted and truncated, written in bursts of a few events each so that the
/// removed records of a segment lie in a handful of runs; then the deletes and the truncation,
/// and a seal, so that every segment with events is sealed.
fn workload(store: &Store, rounds: u64) {
    let streams = ["keep-0", "gone-0", "keep-1", "trim-0", "gone-1", "keep-2"];
    for r in 0..rounds {
        for s in streams {
            for _ in 0..1 + r % 3 {
                append(store, s).unwrap();
            }
        }
    }
    store.delete_stream("gone-0", ExpectedVersion::Any).unwrap();
    store.delete_stream("gone-1", ExpectedVersion::Any).unwrap();
    let len = store.stream_version("trim-0").unwrap().unwrap() + 1;
    let md = StreamMetadata {
        truncate_before: Some(len - 3),
        ..Default::default()
    };
    store
        .set_stream_metadata("trim-0", ExpectedVersion::Any, md)
        .unwrap();
    store.seal().unwrap();
}

/// `(position, stream, number, data)` of an event read.
type Row = (u64, String, u64, Vec<u8>);

/// What readers see: `$all` and every stream the workload writes (with its version).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    all: Vec<Row>,
    streams: BTreeMap<String, (Option<u64>, Vec<Row>)>,
}

const STREAMS: [&str; 7] = [
    "keep-0", "gone-0", "keep-1", "trim-0", "gone-1", "keep-2", "live-0",
];

fn row(e: Result<RecordedEvent>) -> Result<Row> {
    let e = e?;
    Ok((
        e.position().0,
        e.stream().to_string(),
        e.event_number(),
        e.data().to_vec(),
    ))
}

fn snapshot(store: &Store) -> Result<Snapshot> {
    let all = store
        .read_all_forward(Position::START, usize::MAX)?
        .map(row)
        .collect::<Result<Vec<_>>>()?;
    let mut streams = BTreeMap::new();
    for s in STREAMS {
        let rows = store
            .read_stream_forward(s, 0, usize::MAX)?
            .map(row)
            .collect::<Result<Vec<_>>>()?;
        streams.insert(s.to_string(), (store.stream_version(s)?, rows));
    }
    // Every event names itself: whatever is read is the event it claims to be.
    for (_, s, n, data) in &all {
        if !s.starts_with('$') && data != &payload(s, *n) {
            return Err(Error::InvalidInput(format!("{s}#{n} reads other bytes")));
        }
    }
    Ok(Snapshot { all, streams })
}

/// Copies the store's files (a closed store) into a fresh directory.
fn copy_store(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.path().join(e.file_name())).unwrap();
    }
    to
}

fn verify_ok(dir: &Path, ctx: &str) {
    if let Err(e) = eventjournal::verify::verify(dir, &mut |_, _| {}) {
        panic!("{ctx}: verify: {e}");
    }
}

/// A store built by the workload and closed, with what readers see of it.
struct Template {
    dir: tempfile::TempDir,
    snap: Snapshot,
}

fn template(durability: Durability, rounds: u64) -> Template {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(durability)).unwrap();
    workload(&store, rounds);
    let snap = snapshot(&store).unwrap();
    store.close().unwrap();
    Template { dir, snap }
}

/// Fails every operation from the `from`-th on (a disk that died), counting from 0.
struct DeadFrom {
    count: AtomicUsize,
    from: usize,
    dead: AtomicBool,
}

impl FaultInjector for DeadFrom {
    fn before(&self, _: &FileOp<'_>) -> Option<Fault> {
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        (n >= self.from).then(|| {
            self.dead.store(true, Ordering::SeqCst);
            Fault::Error(eio())
        })
    }
}

/// The operations of a fault-free open and compaction of a copy of `t`: (operations of the
/// open, every operation seen, segments the compaction rewrote).
fn dry_run(t: &Template, durability: Durability) -> (usize, Vec<OpInfo>, usize) {
    let dir = copy_store(t.dir.path());
    let counter = FailAt::new(usize::MAX, Kind::Eio);
    let store = Store::open(
        dir.path(),
        options(durability).fault_injector(counter.clone()),
    )
    .expect("open");
    let opened = counter.count();
    let report = store.compact().expect("compact");
    assert!(report.segments_rewritten >= 3, "{report:?}");
    assert!(report.events_removed > 20, "{report:?}");
    assert_eq!(
        snapshot(&store).unwrap(),
        t.snap,
        "compaction changed reads"
    );
    let seen = counter.seen.lock().clone();
    drop(store);
    (opened, seen, report.segments_rewritten)
}

/// Renames of a compacted segment into place among `ops`.
fn renames(ops: &[OpInfo]) -> usize {
    ops.iter()
        .filter(|o| o.kind == "Rename" && o.file.ends_with(".seg"))
        .count()
}

/// Fails each operation of a compaction in turn; after each, reopens without faults and checks
/// the reference, then compacts again: only the segments left are rewritten (the ones done
/// before the fault are not read again), and a third compaction has nothing to do.
fn sweep_compaction(durability: Durability) {
    let t = template(durability, 7);
    let (opened, seen, total) = dry_run(&t, durability);
    let ops = &seen[opened..];
    assert!(renames(ops) == total, "one rename per segment rewritten");
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, op) in ops.iter().enumerate() {
        let kinds = {
            let mut kinds = vec![Kind::Eio];
            if op.is_write() {
                kinds.push(Kind::ShortWrite);
            }
            if matches!(op.kind, "Write" | "Create" | "SetLen" | "Sync") {
                kinds.push(Kind::NoSpace);
            }
            if scale() > 1 {
                kinds
            } else {
                vec![kinds[k % kinds.len()]]
            }
        };
        for kind in kinds {
            let ctx = format!("{durability:?}: fault {kind:?} at compaction op {k} ({op:?})");
            let dir = copy_store(t.dir.path());
            let inj = FailAt::new(opened + k, kind);
            let store =
                Store::open(dir.path(), options(durability).fault_injector(inj.clone())).unwrap();
            let result = store.compact();
            let fired = inj.fired.lock().clone().expect("the fault fired");
            assert!(
                fired.kind == op.kind && (fired.file == op.file || op.kind == "SyncDir"),
                "{ctx}: the run went another way: {fired:?}"
            );
            let done = match &result {
                Ok(r) => {
                    *outcomes.entry("completed").or_default() += 1;
                    assert_eq!(r.segments_rewritten, total, "{ctx}");
                    total
                }
                Err(Error::Io { .. } | Error::Poisoned(_)) => {
                    *outcomes.entry("failed").or_default() += 1;
                    // The renames that went ahead: the one failed did not.
                    renames(&ops[..k])
                }
                Err(e) => panic!("{ctx}: unexpected error {e:?}"),
            };
            // The store as the fault left it, while still open, shows no hidden event.
            if let Ok(snap) = snapshot(&store) {
                assert_eq!(snap, t.snap, "{ctx}: reads after the fault");
            }
            drop(store);
            let store = Store::open(dir.path(), options(durability))
                .unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
            assert_eq!(snapshot(&store).unwrap(), t.snap, "{ctx}: after reopen");
            let again = store
                .compact()
                .unwrap_or_else(|e| panic!("{ctx}: resume: {e}"));
            assert_eq!(
                again.segments_rewritten,
                total - done,
                "{ctx}: the resumed compaction rewrites exactly the segments left"
            );
            assert_eq!(store.compact().unwrap().segments_rewritten, 0, "{ctx}");
            assert_eq!(snapshot(&store).unwrap(), t.snap, "{ctx}: after resume");
            store.close().unwrap();
            verify_ok(dir.path(), &ctx);
        }
    }
    eprintln!(
        "{durability:?}: {} compaction operations failed in turn: {outcomes:?}",
        ops.len()
    );
    assert!(outcomes.get("failed").copied().unwrap_or(0) > ops.len() / 2);
}

#[test]
fn every_operation_of_a_compaction_failed_in_turn() {
    sweep_compaction(Durability::Sync);
}

#[test]
fn every_operation_of_an_unsynced_compaction_failed_in_turn() {
    sweep_compaction(Durability::None);
}

/// A disk that dies in the middle of rewriting a segment leaves a half-compacted store: some
/// segments compacted, one temporary file, the rest as they were. Every operation of opening it
/// is failed in turn; whatever the open did, a later open shows the reference, and compacting
/// rewrites only what was left.
#[test]
fn every_operation_of_recovering_a_half_compacted_store_failed_in_turn() {
    let t = template(Durability::Sync, 7);
    let (opened, seen, total) = dry_run(&t, Durability::Sync);
    let ops = &seen[opened..];
    // A write into the temporary file of the third segment rewritten.
    let third = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.kind == "Create" && o.file.ends_with(".compact.tmp"))
        .nth(2)
        .map(|(k, _)| k)
        .unwrap();
    let die_at = third + 2;
    assert_eq!(ops[die_at].kind, "Write", "{:?}", &ops[third..die_at + 1]);
    let half = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(t.dir.path()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), half.path().join(e.file_name())).unwrap();
    }
    {
        let dead = Arc::new(DeadFrom {
            count: AtomicUsize::new(0),
            from: opened + die_at,
            dead: AtomicBool::new(false),
        });
        let store = Store::open(
            half.path(),
            options(Durability::Sync).fault_injector(dead.clone()),
        )
        .unwrap();
        assert!(store.compact().is_err());
        assert!(dead.dead.load(Ordering::SeqCst));
        drop(store);
    }
    let leftovers: Vec<String> = std::fs::read_dir(half.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".compact.tmp"))
        .collect();
    assert_eq!(leftovers.len(), 1, "the dead disk left the temporary file");
    let done = renames(&ops[..die_at]);
    assert_eq!(done, 2);

    let counter = FailAt::new(usize::MAX, Kind::Eio);
    let dir = copy_store(half.path());
    let store = Store::open(
        dir.path(),
        options(Durability::Sync).fault_injector(counter.clone()),
    )
    .unwrap();
    let open_ops = counter.seen.lock().clone();
    assert!(open_ops
        .iter()
        .any(|o| o.kind == "Remove" && o.file.ends_with(".compact.tmp")));
    assert_eq!(snapshot(&store).unwrap(), t.snap);
    drop(store);

    let mut failed = 0;
    let mut tried = 0;
    for (k, op) in open_ops.iter().enumerate() {
        // Reads while opening are many and alike: the default run fails one in eight.
        if op.kind == "Read" && k % 8 != 0 && scale() == 1 {
            continue;
        }
        tried += 1;
        let kind = if op.is_write() && k % 2 == 1 {
            Kind::ShortWrite
        } else {
            Kind::Eio
        };
        let ctx = format!("fault {kind:?} at recovery op {k} ({op:?})");
        let dir = copy_store(half.path());
        let inj = FailAt::new(k, kind);
        match Store::open(dir.path(), options(Durability::Sync).fault_injector(inj)) {
            Ok(store) => {
                if let Ok(snap) = snapshot(&store) {
                    assert_eq!(snap, t.snap, "{ctx}: reads of the store opened");
                }
            }
            Err(Error::Io { .. } | Error::Poisoned(_)) => failed += 1,
            Err(e) => panic!("{ctx}: unexpected error {e:?}"),
        }
        let store = Store::open(dir.path(), options(Durability::Sync))
            .unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
        assert_eq!(snapshot(&store).unwrap(), t.snap, "{ctx}: after reopen");
        let r = store.compact().unwrap();
        assert_eq!(r.segments_rewritten, total - done, "{ctx}: resumed");
        assert_eq!(snapshot(&store).unwrap(), t.snap, "{ctx}: after compacting");
        store.close().unwrap();
        verify_ok(dir.path(), &ctx);
    }
    eprintln!(
        "{tried} of the {} operations of recovering a half-compacted store failed in turn, \
         {failed} open failures",
        open_ops.len()
    );
    assert!(failed > 0);
}

/// Id tables rebuilt from the log of a compacted store (their files lost) still hold every key
/// of the removed records: a stream whose events in a segment were all removed is found, its
/// version stays, and appends go on numbering from it.
#[test]
fn id_tables_rebuilt_from_a_compacted_log_find_every_stream() {
    let t = template(Durability::None, 7);
    let dir = copy_store(t.dir.path());
    let store = Store::open(dir.path(), options(Durability::None)).unwrap();
    assert!(store.compact().unwrap().segments_rewritten > 0);
    store.close().unwrap();
    let mut removed = 0;
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "ids") {
            std::fs::remove_file(p).unwrap();
            removed += 1;
        }
    }
    assert!(removed > 0);
    // With an injector the tables are rebuilt while opening, not by a thread later.
    let counter = FailAt::new(usize::MAX, Kind::Eio);
    let store = Store::open(
        dir.path(),
        options(Durability::None).fault_injector(counter),
    )
    .unwrap();
    store.close().unwrap();
    assert!(std::fs::read_dir(dir.path()).unwrap().any(|e| e
        .unwrap()
        .path()
        .extension()
        .is_some_and(|x| x == "ids")));
    // A store whose index is read lazily from its files, guided by the tables.
    let store = Store::open(dir.path(), options(Durability::None)).unwrap();
    assert_eq!(snapshot(&store).unwrap(), t.snap);
    for s in ["gone-0", "trim-0", "keep-1"] {
        let v = t.snap.streams[s].0.unwrap();
        let r = store
            .append(
                s,
                ExpectedVersion::Exact(v),
                [EventData::new("Noted", payload(s, v + 1))],
            )
            .unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(r.version, Some(v + 1));
    }
    store.close().unwrap();
    verify_ok(dir.path(), "rebuilt tables");
}

// ---- Power loss --------------------------------------------------------------------------------

/// A [`Recorder`] that lets the store run as it does unwatched (two segments copied at once),
/// and shows that two copies wrote at once: the first write to a segment's copy waits (up to
/// ten seconds) until another segment's copy writes too, which only a second copy running at
/// the same time can do.
struct Interleaved {
    recorder: Arc<Recorder>,
    /// The copy whose first write waits, whether it is still waiting, and whether another
    /// copy wrote while it was.
    meet: parking_lot::Mutex<Meeting>,
    met: parking_lot::Condvar,
}

#[derive(Default)]
struct Meeting {
    first: Option<String>,
    waiting: bool,
    met: bool,
}

impl FaultInjector for Interleaved {
    fn before(&self, op: &FileOp<'_>) -> Option<Fault> {
        if let FileOp::Write { path, .. } = op {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if let Some(name) = name.filter(|n| n.ends_with(".compact.tmp")) {
                let mut meet = self.meet.lock();
                if meet.first.is_none() {
                    meet.first = Some(name);
                    meet.waiting = true;
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                    while !meet.met && !self.met.wait_until(&mut meet, deadline).timed_out() {}
                    meet.waiting = false;
                } else if meet.waiting && meet.first.as_ref() != Some(&name) {
                    meet.met = true;
                    self.met.notify_all();
                }
            }
        }
        self.recorder.before(op)
    }
    fn allows_interleaving(&self) -> bool {
        true
    }
}

/// Panics on the first write to the `.compact.tmp` created `nth` (counting from 0): the
/// creations are made in segment order on the compaction's own thread, so `nth` is the segment's
/// place among those copied. Lets two copies run at once, and counts the creations.
struct PanicInCopy {
    nth: usize,
    created: parking_lot::Mutex<Vec<String>>,
    panicked: AtomicBool,
}

impl FaultInjector for PanicInCopy {
    fn before(&self, op: &FileOp<'_>) -> Option<Fault> {
        let name = |p: &Path| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        };
        match op {
            FileOp::Create { path } if name(path).ends_with(".compact.tmp") => {
                self.created.lock().push(name(path));
            }
            FileOp::Write { path, .. } => {
                let target = self.created.lock().get(self.nth).cloned();
                if target == Some(name(path)) && !self.panicked.swap(true, Ordering::SeqCst) {
                    panic!("a panic in the copy of {}", name(path));
                }
            }
            _ => {}
        }
        None
    }
    fn allows_interleaving(&self) -> bool {
        true
    }
}

/// A copy that panics (the first, or the second of two under way): the panic reaches the
/// caller of `compact` once the other copy has been waited for, no `.compact.tmp` is left, reads
/// are as before, and the next compaction does the rest.
#[test]
fn a_panic_in_a_copy_leaves_no_copy_behind_and_the_next_compaction_goes_on() {
    let t = template(Durability::Sync, 7);
    for nth in [0, 1] {
        let dir = copy_store(t.dir.path());
        let injector = Arc::new(PanicInCopy {
            nth,
            created: Default::default(),
            panicked: AtomicBool::new(false),
        });
        let store = Store::open(
            dir.path(),
            options(Durability::Sync).fault_injector(injector.clone()),
        )
        .unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.compact()));
        assert!(outcome.is_err(), "the copy's panic reaches the caller");
        // It stopped there: no copy started after the one that panicked and the one beside it.
        assert!(
            injector.created.lock().len() <= nth + 2,
            "{:?}",
            injector.created.lock()
        );
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".compact.tmp"))
            .collect();
        assert!(left.is_empty(), "copies left behind: {left:?}");
        assert_eq!(snapshot(&store).unwrap(), t.snap);
        let report = store.compact().unwrap();
        assert!(report.segments_rewritten >= 2, "{report:?}");
        assert_eq!(snapshot(&store).unwrap(), t.snap);
        store.close().unwrap();
        verify_ok(dir.path(), "after a panic in a copy");
    }
}

/// Fails with `EIO` the creation of the second `.compact.tmp` of a compaction, and lets two
/// copies run at once.
struct FailSecondCopy {
    creations: AtomicUsize,
}

impl FaultInjector for FailSecondCopy {
    fn before(&self, op: &FileOp<'_>) -> Option<Fault> {
        match op {
            FileOp::Create { path } if path.to_string_lossy().ends_with(".compact.tmp") => {
                (self.creations.fetch_add(1, Ordering::SeqCst) == 1).then(|| Fault::Error(eio()))
            }
            _ => None,
        }
    }
    fn allows_interleaving(&self) -> bool {
        true
    }
}

/// A copy that cannot start (its file cannot be created) stops the compaction with that error,
/// but the copy of the segment before it, under way, still lands: the next compaction rewrites
/// one segment fewer.
#[test]
fn a_copy_that_cannot_start_lets_the_one_before_it_land() {
    let t = template(Durability::Sync, 7);
    let total = {
        let dir = copy_store(t.dir.path());
        let store = Store::open(dir.path(), options(Durability::Sync)).unwrap();
        store.compact().unwrap().segments_rewritten
    };
    assert!(total >= 3, "{total}");
    let dir = copy_store(t.dir.path());
    let store = Store::open(
        dir.path(),
        options(Durability::Sync).fault_injector(Arc::new(FailSecondCopy {
            creations: AtomicUsize::new(0),
        })),
    )
    .unwrap();
    assert!(matches!(store.compact(), Err(Error::Io { .. })));
    assert_eq!(snapshot(&store).unwrap(), t.snap);
    let rest = store.compact().unwrap();
    assert_eq!(rest.segments_rewritten, total - 1, "{rest:?}");
    assert_eq!(snapshot(&store).unwrap(), t.snap);
    store.close().unwrap();
    verify_ok(dir.path(), "after a copy that could not start");
}

/// Records every operation, lets two copies run at once, and before each creation or rename of
/// a `.compact.tmp` waits (up to ten seconds) until a reader has read again since the last one:
/// so that the compaction, looking between two segments, always finds the store in use.
struct ReadBetween {
    recorder: Arc<Recorder>,
    reads: Arc<AtomicUsize>,
    last: parking_lot::Mutex<usize>,
}

impl FaultInjector for ReadBetween {
    fn before(&self, op: &FileOp<'_>) -> Option<Fault> {
        let copy = |p: &Path| p.to_string_lossy().ends_with(".compact.tmp");
        let wait = match op {
            FileOp::Create { path } => copy(path),
            FileOp::Rename { from, .. } => copy(from),
            _ => false,
        };
        if wait {
            let mut last = self.last.lock();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while self.reads.load(Ordering::SeqCst) == *last && std::time::Instant::now() < deadline
            {
                std::thread::yield_now();
            }
            *last = self.reads.load(Ordering::SeqCst);
        }
        self.recorder.before(op)
    }
    fn allows_interleaving(&self) -> bool {
        true
    }
}

/// The most `.compact.tmp` files the journal shows at once after the first rename of one.
fn copies_at_once_after_the_first(journal: &[Rec]) -> usize {
    let (mut open, mut most, mut renamed) = (std::collections::BTreeSet::new(), 0, false);
    for rec in journal {
        match rec {
            Rec::Create(f) if f.ends_with(".compact.tmp") => {
                open.insert(f.clone());
                if renamed {
                    most = most.max(open.len());
                }
            }
            Rec::Rename(f, _) | Rec::Remove(f) if f.ends_with(".compact.tmp") => {
                open.remove(f);
                renamed = true;
            }
            _ => {}
        }
    }
    most
}

/// While reads run beside it, a compaction copies one segment at a time (after the first two,
/// which start before it has looked twice): the reads keep a core.
#[test]
fn reads_beside_a_compaction_keep_it_to_one_copy_at_a_time() {
    let t = template(Durability::Sync, 7);
    let dir = copy_store(t.dir.path());
    let recorder = Arc::new(Recorder::default());
    let reads = Arc::new(AtomicUsize::new(0));
    let store = Store::open(
        dir.path(),
        options(Durability::Sync).fault_injector(Arc::new(ReadBetween {
            recorder: recorder.clone(),
            reads: reads.clone(),
            last: parking_lot::Mutex::new(0),
        })),
    )
    .unwrap();
    let (done, bad_read) = (AtomicBool::new(false), AtomicBool::new(false));
    let report = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                let n = store
                    .read_all_forward(Position::START, 10)
                    .map(|e| e.count());
                reads.fetch_add(1, Ordering::SeqCst);
                if !matches!(n, Ok(10)) {
                    bad_read.store(true, Ordering::SeqCst);
                    return;
                }
            }
        });
        // The reader stops whatever the compaction gives, so that a failure fails the test.
        let r = store.compact();
        done.store(true, Ordering::SeqCst);
        r
    })
    .unwrap();
    assert!(
        !bad_read.load(Ordering::SeqCst),
        "a read beside the compaction failed"
    );
    assert!(report.segments_rewritten >= 4, "{report:?}");
    assert_eq!(copies_at_once_after_the_first(&recorder.log.lock()), 1);
    assert_eq!(snapshot(&store).unwrap(), t.snap);
}

/// A [`Recorder`] that lets two copies run at once, and waits for nothing.
struct Recorded(Arc<Recorder>);

impl FaultInjector for Recorded {
    fn before(&self, op: &FileOp<'_>) -> Option<Fault> {
        self.0.before(op)
    }
    fn allows_interleaving(&self) -> bool {
        true
    }
}

/// The most `.compact.tmp` files the journal shows at once.
fn most_copies_at_once(journal: &[Rec]) -> usize {
    let (mut open, mut most) = (std::collections::BTreeSet::new(), 0);
    for rec in journal {
        match rec {
            Rec::Create(f) if f.ends_with(".compact.tmp") => {
                open.insert(f.clone());
                most = most.max(open.len());
            }
            Rec::Rename(f, _) | Rec::Remove(f) => {
                open.remove(f);
            }
            _ => {}
        }
    }
    most
}

/// A read in progress (an iterator over `$all` not yet finished holds its view of the log)
/// keeps a compaction to one copy from its first segment on; once it is done, two go at once.
#[test]
fn a_read_in_progress_keeps_a_compaction_to_one_copy() {
    let t = template(Durability::Sync, 7);
    for reading in [true, false] {
        let dir = copy_store(t.dir.path());
        let recorder = Arc::new(Recorder::default());
        let store = Store::open(
            dir.path(),
            options(Durability::Sync).fault_injector(Arc::new(Recorded(recorder.clone()))),
        )
        .unwrap();
        // Held through the compaction, or dropped before it.
        let mut read = Some(store.read_all_forward(Position::START, usize::MAX).unwrap());
        assert!(read.as_mut().and_then(|r| r.next()).is_some());
        if !reading {
            read = None;
        }
        let report = store.compact().unwrap();
        assert!(report.segments_rewritten >= 3, "{report:?}");
        let two_cores = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
        let most = most_copies_at_once(&recorder.log.lock());
        assert_eq!(
            most,
            if reading || !two_cores { 1 } else { 2 },
            "reading: {reading}"
        );
        assert_eq!(snapshot(&store).unwrap(), t.snap);
        drop(read);
    }
}

/// The segments renamed into place from their copies, in the journal's order.
fn renamed_copies(journal: &[Rec]) -> Vec<String> {
    journal
        .iter()
        .filter_map(|rec| match rec {
            Rec::Rename(from, to) if from.ends_with(".compact.tmp") => Some(to.clone()),
            _ => None,
        })
        .collect()
}

/// Per stream, the reads a crash image may show: before the workload's last changes (deletes and
/// truncation not yet durable), or after.
fn power_loss(durability: Durability, random: usize) {
    power_loss_with(durability, random, false)
}

/// The power cut at every operation of a compaction with appends beside it (see the module's
/// documentation); with `interleaved`, the store copies two segments at once as it does
/// unwatched, and the test checks that it did.
fn power_loss_with(durability: Durability, random: usize, interleaved: bool) {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let meeting = Arc::new(Interleaved {
        recorder: recorder.clone(),
        meet: Default::default(),
        met: Default::default(),
    });
    let injector: Arc<dyn FaultInjector> = if interleaved {
        meeting.clone()
    } else {
        recorder.clone()
    };
    let store = Store::open(dir.path(), options(durability).fault_injector(injector)).unwrap();
    // Everything written before the deletes is synced; the deletes, under `Durability::None`,
    // are not when the compaction starts.
    let before = {
        let streams = ["keep-0", "gone-0", "keep-1", "trim-0", "gone-1", "keep-2"];
        for r in 0..8u64 {
            for s in streams {
                for _ in 0..1 + r % 3 {
                    append(&store, s).unwrap();
                }
            }
        }
        store.flush().unwrap();
        store.seal().unwrap();
        snapshot(&store).unwrap()
    };
    // The changes that make events hidden are in the segment being written, which compaction
    // does not rewrite: under `Durability::None` they are not synced unless compaction does it.

    store.delete_stream("gone-0", ExpectedVersion::Any).unwrap();
    store.delete_stream("gone-1", ExpectedVersion::Any).unwrap();
    let md = StreamMetadata {
        truncate_before: Some(before.streams["trim-0"].0.unwrap() + 1 - 3),
        ..Default::default()
    };
    store
        .set_stream_metadata("trim-0", ExpectedVersion::Any, md)
        .unwrap();
    let after = snapshot(&store).unwrap();
    let start = recorder.log.lock().len();
    // Appends to `live-0` beside the compaction, each marked when acknowledged.
    let done = AtomicBool::new(false);
    let report = std::thread::scope(|s| {
        s.spawn(|| {
            // With two copies at once, the appends wait for the first copy's first write: the
            // compaction's first look decides how many copies go at once, and an append of
            // this thread planning at that moment holds a view of the log, which makes it copy
            // one segment at a time, as it does beside any reader.
            if interleaved {
                let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while meeting.meet.lock().first.is_none()
                    && !done.load(Ordering::SeqCst)
                    && std::time::Instant::now() < until
                {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            let mut seq = 0;
            // Paced, so that they spread over the compaction and the journal stays short.
            while (!done.load(Ordering::SeqCst) || seq < 20) && seq < 200 {
                // Batches of five, so that segments fill and roll while the compaction runs.
                let n = store.stream_version("live-0").unwrap().map_or(0, |v| v + 1);
                let batch = (n..n + 5).map(|n| EventData::new("Noted", payload("live-0", n)));
                store.append("live-0", ExpectedVersion::Any, batch).unwrap();
                recorder.mark(Rec::Acked(0, seq));
                seq += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        let r = store.compact().unwrap();
        done.store(true, Ordering::SeqCst);
        r
    });
    assert!(report.segments_rewritten >= 3, "{report:?}");
    let end = recorder.log.lock().len();
    store.close().unwrap();
    let journal = recorder.log.lock().clone();
    let renamed = renamed_copies(&journal[start..end]);
    assert_eq!(renamed.len(), report.segments_rewritten);
    assert!(
        renamed.windows(2).all(|w| w[0] < w[1]),
        "renamed in segment order: {renamed:?}"
    );
    // Two copies wrote at once where the machine has two cores for them.
    let two_cores = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    assert_eq!(meeting.meet.lock().met, interleaved && two_cores);

    let mut points: Vec<usize> = (start..=end).collect();
    let mut rng = Random::new(0xc0ff);
    // Under the default run, every sync boundary and a random share of the other operations.
    if scale() == 1 {
        points.retain(|&k| {
            matches!(
                journal.get(k.wrapping_sub(1)),
                Some(Rec::Sync(_) | Rec::SyncDir | Rec::Rename(..))
            ) || matches!(
                journal.get(k),
                Some(Rec::Sync(_) | Rec::SyncDir | Rec::Rename(..))
            ) || rng.below(journal.len() as u64) < random as u64
        });
    }
    let mut model = ModelFs::default();
    let mut applied = 0;
    let mut acked = 0usize;
    let mut images = 0;
    let mut failures: Vec<String> = Vec::new();
    for &k in &points {
        while applied < k {
            if let Rec::Acked(_, _) = journal[applied] {
                acked += 1;
            }
            model.apply(&journal[applied]);
            applied += 1;
        }
        let mut others = vec![Loss::Prefix(k as u64), Loss::TornPage(k as u64)];
        if durability == Durability::Sync {
            others.push(Loss::Pages(k as u64));
        }
        // The default run: only what was synced, and one other kind of loss in turn (every
        // kind right after a directory sync, which makes other segments' entries durable too).
        let after_dir_sync = matches!(journal.get(k.wrapping_sub(1)), Some(Rec::SyncDir));
        if scale() == 1 && !after_dir_sync {
            others = vec![others[k % others.len()]];
        }
        let losses = [vec![Loss::Unsynced], others].concat();
        for loss in losses {
            let img = tempfile::tempdir().unwrap();
            model.crash_image(img.path(), loss);
            let ctx = format!(
                "{durability:?}: power lost after op {k} ({:?}), {loss:?}",
                journal.get(k.wrapping_sub(1)).map(|r| match r {
                    Rec::Change(f, _) => format!("change of {f}"),
                    r => format!("{r:?}"),
                })
            );
            images += 1;
            if let Err(e) = check_image(
                img.path(),
                &before,
                &after,
                durability,
                acked,
                report.segments_rewritten,
            ) {
                failures.push(format!("{ctx}: {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {images} images broke a promise:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
    eprintln!(
        "{durability:?}: {} operations during the compaction, {} crash points, {images} images",
        end - start,
        points.len()
    );
}

fn check_image(
    dir: &Path,
    before: &Snapshot,
    after: &Snapshot,
    durability: Durability,
    acked: usize,
    total: usize,
) -> std::result::Result<(), String> {
    // Segments the crash left compacted (a compacted header says where its table is).
    let compacted = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .filter(|p| {
            let b = std::fs::read(p).unwrap();
            b.get(40..48).is_some_and(|t| t.iter().any(|&x| x != 0))
        })
        .count();
    let store = Store::open(dir, options(Durability::Sync)).map_err(|e| format!("open: {e}"))?;
    let snap = snapshot(&store).map_err(|e| format!("read: {e}"))?;
    for (s, (version, rows)) in &snap.streams {
        if s == "live-0" {
            // Whole, numbered from 0, each event itself; every acknowledged one there if synced.
            for (i, r) in rows.iter().enumerate() {
                if r.2 != i as u64 {
                    return Err(format!("live-0 has a gap at {i}: {:?}", r.2));
                }
            }
            if durability == Durability::Sync && rows.len() < 5 * acked {
                return Err(format!(
                    "live-0: {} of {} acknowledged",
                    rows.len(),
                    5 * acked
                ));
            }
            continue;
        }
        let b = &before.streams[s];
        let a = &after.streams[s];
        // A stream's metadata change is either durable or not: its reads are one or the other
        // (under `Sync` it was durable before the compaction started).
        if rows != &a.1 && (durability == Durability::Sync || rows != &b.1) {
            return Err(format!(
                "{s}: reads {} events ({:?}..), neither the {} before its last change nor the {} after",
                rows.len(),
                rows.first().map(|r| r.2),
                b.1.len(),
                a.1.len()
            ));
        }
        if *version != b.0 {
            return Err(format!("{s}: version {version:?}, was {:?}", b.0));
        }
    }
    // `$all` shows what the streams show, nothing more.
    let in_streams: usize = snap
        .streams
        .values()
        .map(|(_, rows)| rows.len())
        .sum::<usize>();
    let in_all = snap.all.iter().filter(|r| !r.1.starts_with('$')).count();
    if in_all != in_streams {
        return Err(format!(
            "$all shows {in_all} events, the streams {in_streams}"
        ));
    }
    // The compaction goes on where the crash stopped it: the segments left, no other. (Under
    // `Durability::None` a crash before its first sync may have lost the deletes: fewer.)
    let r = store
        .compact()
        .map_err(|e| format!("resumed compaction: {e}"))?;
    let left = total - compacted;
    if r.segments_rewritten > left
        || (durability == Durability::Sync && r.segments_rewritten != left)
    {
        return Err(format!(
            "resumed compaction rewrote {} segments, {compacted} of {total} were done",
            r.segments_rewritten
        ));
    }
    if snapshot(&store).map_err(|e| format!("read: {e}"))? != snap {
        return Err("the resumed compaction changed what readers see".into());
    }
    store.close().map_err(|e| format!("close: {e}"))?;
    eventjournal::verify::verify(dir, &mut |_, _| {}).map_err(|e| format!("verify: {e}"))?;
    Ok(())
}

#[test]
fn power_loss_at_every_operation_of_a_compaction() {
    power_loss(Durability::Sync, 10);
}

#[test]
fn power_loss_during_an_unsynced_compaction() {
    power_loss(Durability::None, 10);
}

/// Two segments copied at once (no durable append syncs under `Durability::None`, so the
/// compaction keeps two copies under way throughout): every crash image is as safe as with one.
#[test]
fn power_loss_while_two_segments_are_copied_at_once() {
    power_loss_with(Durability::None, 10, true);
}

/// A retry of an append whose events compaction removed (the stream was deleted) is an
/// ordinary append once they are gone: no error, the same answer whether the id tables were
/// made before the compaction or rebuilt from the compacted log after. (Before the compaction
/// the retry is recognised: the removed record's id is not kept, so it cannot be after.)
#[test]
fn a_retry_of_removed_events_is_the_same_with_tables_rebuilt() {
    let id = EventId([7; 16]);
    let event = || EventData::new("Noted", payload("gone-9", 0)).with_id(id);
    let build = |dir: &Path| {
        let store = Store::open(dir, options(Durability::None)).unwrap();
        store
            .append("gone-9", ExpectedVersion::NoStream, [event()])
            .unwrap();
        for _ in 0..30 {
            append(&store, "keep-9").unwrap();
        }
        store.delete_stream("gone-9", ExpectedVersion::Any).unwrap();
        store.seal().unwrap();
        store
    };
    let retry = |store: &Store| -> String {
        let r = store.append("gone-9", ExpectedVersion::Any, [event()]);
        format!("{r:?} {:?}", store.stream_version("gone-9"))
    };
    let plain = tempfile::tempdir().unwrap();
    let before = retry(&build(plain.path()));
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path());
    assert!(store.compact().unwrap().events_removed >= 1);
    let after = retry(&store);
    store.close().unwrap();
    assert!(
        before.starts_with("Ok(AppendResult { version: Some(0)"),
        "{before}"
    );
    assert!(
        after.starts_with("Ok(AppendResult { version: Some(1)"),
        "{after}"
    );

    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path());
    store.compact().unwrap();
    store.close().unwrap();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "ids") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let counter = FailAt::new(usize::MAX, Kind::Eio);
    let store = Store::open(
        dir.path(),
        options(Durability::None).fault_injector(counter),
    )
    .unwrap();
    let rebuilt = retry(&store);
    assert_eq!(
        rebuilt, after,
        "with the tables rebuilt from the compacted log"
    );
}

/// Niceness of the calling thread.
fn niceness() -> i32 {
    // SAFETY: gettid and getpriority take and return plain integers.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::getpriority(libc::PRIO_PROCESS, tid)
    }
}

/// Records the niceness of the threads that write the compacted segments' files.
#[derive(Default)]
struct NicenessOfWrites(parking_lot::Mutex<Vec<i32>>);

impl FaultInjector for NicenessOfWrites {
    fn before(&self, op: &FileOp<'_>) -> Option<Fault> {
        if let FileOp::Write { path, .. } = op {
            if path.to_string_lossy().ends_with(".compact.tmp") {
                self.0.lock().push(niceness());
            }
        }
        None
    }
}

#[test]
fn a_compaction_works_at_a_lower_cpu_priority_than_its_caller() {
    let t = template(Durability::Sync, 6);
    for steps in [0u8, 4, 10] {
        let dir = copy_store(t.dir.path());
        let seen = Arc::new(NicenessOfWrites::default());
        let store = Store::open(
            dir.path(),
            options(Durability::Sync)
                .compaction_niceness(steps)
                .fault_injector(seen.clone()),
        )
        .unwrap();
        // In a thread of its own, as the caller's niceness is what the compaction's is relative to.
        let (caller, report, after) = std::thread::scope(|s| {
            s.spawn(|| {
                let before = niceness();
                let report = store.compact().unwrap();
                (before, report, niceness())
            })
            .join()
            .unwrap()
        });
        // The caller's own priority is left as it was.
        assert_eq!(after, caller);
        assert!(report.segments_rewritten > 0, "{report:?}");
        let writes = seen.0.lock().clone();
        assert!(!writes.is_empty());
        let expected = (caller + i32::from(steps)).min(19);
        assert!(
            writes.iter().all(|&n| n == expected),
            "steps {steps}: caller at {caller}, writes at {writes:?}"
        );
        assert_eq!(snapshot(&store).unwrap(), t.snap);
    }
}
