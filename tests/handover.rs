//! Handover: a follower takes the writer role from a running writer (in this process or in
//! another), no acknowledged append is lost, none is acknowledged by both, and the old writer
//! refuses appends with `Error::HandedOver` from then on.

mod common;
mod crash_harness;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

use common::*;
use eventjournal::*;

fn small() -> Options {
    Options::default().segment_size(16 * 1024)
}

/// Appends events `range` of `prefix` one at a time, round-robin over streams `acct-0..acct-6`.
fn round_robin(store: &Store, prefix: &str, range: std::ops::Range<usize>) {
    for i in range {
        store
            .append(
                &format!("acct-{}", i % 7),
                ExpectedVersion::Any,
                events(prefix, i, 1),
            )
            .unwrap();
    }
}

#[test]
fn a_follower_takes_over_a_writer_and_the_old_one_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let old = Store::open(dir.path(), small()).unwrap();
    round_robin(&old, "acct", 0..200);
    // Written by the old writer, retried through the new one.
    let once = EventData::new("Once", "x").with_id(EventId([7; 16]));
    let first = old
        .append("once-1", ExpectedVersion::Any, [once.clone()])
        .unwrap();
    // A sealed segment's index file gone: a full open would write it again, taking over
    // from memory does not.
    let idx = dir.path().join("00000000000000000000.idx");
    std::fs::remove_file(&idx).unwrap();
    let follower = Store::open_read_only(dir.path(), small()).unwrap();
    let mut reading = follower
        .read_stream_forward("acct-1", 0, usize::MAX)
        .unwrap();
    assert!(reading.next().unwrap().is_ok());
    // Appends the follower has not seen yet when it asks.
    round_robin(&old, "acct", 200..230);
    let before = listing(&old);
    let new = follower.take_over(Duration::from_secs(5)).unwrap();
    let refused = old.append("acct-1", ExpectedVersion::Any, events("acct", 999, 1));
    assert!(
        matches!(refused, Err(Error::HandedOver { .. })),
        "{refused:?}"
    );
    assert!(matches!(
        old.read_event("acct-1", 0),
        Err(Error::HandedOver { .. })
    ));
    assert!(matches!(follower.refresh(), Err(Error::Closed)));
    assert!(
        !idx.exists(),
        "the store was opened again rather than taken over"
    );
    // The follower's handle has nothing left to answer from: it says so.
    assert!(matches!(
        follower.stream_version("acct-1"),
        Err(Error::Closed)
    ));
    let rest: Vec<Result<RecordedEvent>> = reading.collect();
    let read = rest.iter().filter(|r| r.is_ok()).count();
    assert!(
        read == 28 || matches!(rest.last(), Some(Err(Error::Closed))),
        "an iterator of the follower ended after {read} of 28 events without an error"
    );
    assert_eq!(listing(&new), before);
    assert_eq!(
        new.append("once-1", ExpectedVersion::Any, [once]).unwrap(),
        first,
        "a retry of the old writer's append was written again"
    );
    // The new writer goes on: expected versions, idempotent retries, segment changes.
    let v = new.stream_version("acct-1").unwrap().unwrap();
    new.append("acct-1", ExpectedVersion::Exact(v), events("acct-1", 0, 1))
        .unwrap();
    let wrong = new.append("acct-1", ExpectedVersion::Exact(v), events("acct-1", 1, 1));
    assert!(
        matches!(wrong, Err(Error::WrongExpectedVersion { .. })),
        "{wrong:?}"
    );
    let e = EventData::new("Once", "x").with_id(EventId([7; 16]));
    let first = new
        .append("once-1", ExpectedVersion::Any, [e.clone()])
        .unwrap();
    assert_eq!(
        new.append("once-1", ExpectedVersion::Any, [e]).unwrap(),
        first
    );
    round_robin(&new, "more", 0..300);
    let after = listing(&new);
    assert_eq!(&after[..before.len()], &before[..]);
    old.close().unwrap();
    new.close().unwrap();
    let reopened = open_after_close(dir.path(), small()).unwrap();
    assert_eq!(listing(&reopened), after);
}

#[test]
fn taking_over_a_store_without_a_writer_opens_it() {
    let dir = tempfile::tempdir().unwrap();
    let old = Store::open(dir.path(), small()).unwrap();
    old.append("acct-1", ExpectedVersion::NoStream, events("acct-1", 0, 3))
        .unwrap();
    let follower = Store::open_read_only(dir.path(), small()).unwrap();
    old.close().unwrap();
    let new = follower.take_over(Duration::from_millis(200)).unwrap();
    assert_eq!(new.stream_version("acct-1").unwrap(), Some(2));
    new.append("acct-1", ExpectedVersion::Exact(2), events("acct-1", 3, 1))
        .unwrap();
    // A writer is not a follower.
    let refused = new.take_over(Duration::from_millis(10));
    assert!(
        matches!(refused, Err(Error::InvalidInput(_))),
        "{:?}",
        refused.err()
    );
    new.close().unwrap();
}

/// Set in the child: the store directory.
const CHILD_ENV: &str = "EVJ_HANDOVER_CHILD_DIR";

/// The child: takes the store over from the parent, says so, appends until it is taken over
/// in turn (printing `ACK <seq> <position>` for each acknowledged append), then says `HANDED`.
#[test]
fn handover_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let follower = Store::open_read_only(&dir, small()).expect("child: open");
    let writer = follower
        .take_over(Duration::from_secs(10))
        .expect("child: take over");
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nTOOK").unwrap();
    out.flush().unwrap();
    let mut seq = 0u64;
    loop {
        match writer.append(
            "child-1",
            ExpectedVersion::Any,
            [EventData::new("C", seq.to_string())],
        ) {
            Ok(r) => {
                writeln!(out, "ACK {seq} {}", r.position.unwrap().0).unwrap();
                out.flush().unwrap();
                seq += 1;
            }
            Err(Error::HandedOver { .. }) => break,
            Err(e) => panic!("child: append: {e}"),
        }
    }
    writeln!(out, "HANDED").unwrap();
    out.flush().unwrap();
}

/// Appends to `stream` until the store is handed over, keeping each acknowledged sequence
/// number with its position. Panics if that takes a minute (rather than hang the test).
fn append_until_handed_over(
    store: Arc<Store>,
    stream: &'static str,
    log: Arc<Mutex<Vec<(u64, Instant)>>>,
) -> Vec<(u64, u64)> {
    let mut acked = Vec::new();
    let mut seq = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "not handed over in a minute"
        );
        match store.append(
            stream,
            ExpectedVersion::Any,
            [EventData::new("P", seq.to_string())],
        ) {
            Ok(r) => {
                let pos = r.position.unwrap().0;
                log.lock().unwrap().push((pos, Instant::now()));
                acked.push((seq, pos));
                seq += 1;
            }
            Err(Error::HandedOver { .. }) => break,
            Err(e) => panic!("parent: append: {e}"),
        }
    }
    acked
}

/// Handovers back and forth between this process and a child, each under appends that run
/// until the writer refuses them: every acknowledged append of either process is in the store,
/// where it was acknowledged, and the store opens with strict recovery at the end.
#[test]
fn handovers_between_processes_under_appends_lose_nothing() {
    let rounds: u64 = std::env::var("EVJ_HANDOVER_ROUNDS")
        .ok()
        .map(|v| v.parse().expect("EVJ_HANDOVER_ROUNDS is a number"))
        .unwrap_or(6);
    let dir = tempfile::tempdir().unwrap();
    let mut writer = Arc::new(open_after_close(dir.path(), small()).unwrap());
    let mut parent_acked: Vec<(u64, u64)> = Vec::new();
    let mut child_acked: Vec<(u64, u64)> = Vec::new();
    // Backups taken while the parent writes, up to and across the handover: (copy, when it
    // began).
    let mut backups: Vec<(tempfile::TempDir, Instant)> = Vec::new();
    let acked_at: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    for round in 0..rounds {
        let ctx = format!("round {round}");
        let appender = {
            let (w, log) = (writer.clone(), acked_at.clone());
            std::thread::spawn(move || append_until_handed_over(w, "parent-1", log))
        };
        let backer = {
            let w = writer.clone();
            std::thread::spawn(move || {
                let mut taken = Vec::new();
                while taken.len() < 30 {
                    let dest = tempfile::tempdir().unwrap();
                    let began = Instant::now();
                    match w.backup(dest.path().join("b")) {
                        Ok(_) => taken.push((dest, began)),
                        Err(Error::HandedOver { .. }) => break,
                        Err(e) => panic!("backup: {e}"),
                    }
                }
                taken
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "handover_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let took = lines.by_ref().map(|l| l.unwrap()).any(|l| l == "TOOK");
        assert!(took, "{ctx}: the child did not take over");
        let acked = appender.join().unwrap();
        backups.extend(backer.join().unwrap());
        assert!(!acked.is_empty(), "{ctx}: the parent appended nothing");
        // Sequence numbers of the parent's stream go on from one round to the next.
        let offset = parent_acked.len() as u64;
        parent_acked.extend(acked.iter().map(|&(s, p)| (s + offset, p)));
        let refused = writer.append("parent-1", ExpectedVersion::Any, events("x", 0, 1));
        assert!(
            matches!(refused, Err(Error::HandedOver { .. })),
            "{ctx}: {refused:?}"
        );
        std::thread::sleep(Duration::from_millis(20));

        // And back: this process takes over from the child while it appends.
        let follower = Store::open_read_only(dir.path(), small()).unwrap();
        let taken = follower.take_over(Duration::from_secs(10)).unwrap();
        let mut handed = false;
        let offset = child_acked.len() as u64;
        for l in lines {
            let l = l.unwrap();
            if let Some(rest) = l.strip_prefix("ACK ") {
                let (s, p) = rest.split_once(' ').unwrap();
                child_acked.push((s.parse::<u64>().unwrap() + offset, p.parse().unwrap()));
            }
            handed |= l == "HANDED";
        }
        assert!(child.wait().unwrap().success(), "{ctx}: the child failed");
        assert!(handed, "{ctx}: the child was not refused with HandedOver");
        writer = Arc::new(taken);
    }
    // Every acknowledged append is where it was acknowledged, and nothing else is in the store
    // (a refused append is never written).
    let stored: BTreeMap<u64, String> = listing(&writer)
        .into_iter()
        .map(|(pos, stream, _, _)| (pos, stream))
        .collect();
    for (stream, acked) in [("parent-1", &parent_acked), ("child-1", &child_acked)] {
        for (seq, p) in acked.iter() {
            assert_eq!(
                stored.get(p).map(String::as_str),
                Some(stream),
                "acknowledged append {seq} of {stream} at {p}"
            );
        }
    }
    assert_eq!(stored.len(), parent_acked.len() + child_acked.len());
    // Each backup opens with strict recovery and holds every append acknowledged before it
    // began, where it was acknowledged.
    assert!(
        backups.len() >= rounds as usize,
        "{} backups",
        backups.len()
    );
    let acked_at = acked_at.lock().unwrap().clone();
    for (dest, began) in &backups {
        let copy = Store::open(dest.path().join("b"), small()).unwrap();
        let held: BTreeMap<u64, String> = listing(&copy)
            .into_iter()
            .map(|(pos, stream, _, _)| (pos, stream))
            .collect();
        for (pos, at) in &acked_at {
            if at < began {
                assert_eq!(
                    held.get(pos).map(String::as_str),
                    Some("parent-1"),
                    "a backup lacks an append acknowledged before it began"
                );
            }
        }
        copy.close().unwrap();
    }
    let expected = listing(&writer);
    Arc::try_unwrap(writer).ok().unwrap().close().unwrap();
    let reopened = open_after_close(dir.path(), small()).unwrap();
    assert_eq!(listing(&reopened), expected);
}

/// The writer of the kill test below: the crash harness's child, which opens the store or takes
/// it over, appends batches as fast as it can, and prints an `ACK` line for each acknowledged
/// one. Does nothing unless started by it.
#[test]
fn handover_crash_child() {
    crash_harness::run_child_if_asked();
}

/// A writer in one child process is taken over by another child while both would append, and
/// one of them is killed with SIGKILL at a random moment — before, during or after the handover
/// — then the other. Each time, a fresh open finds every batch either child acknowledged, whole,
/// where it was acknowledged, and nothing torn (the checks of `tests/crash.rs`).
#[test]
fn kills_of_either_process_during_handovers_lose_no_acknowledged_batch() {
    /// Rounds on one store before the next starts afresh.
    const STORE_ROUNDS: u64 = 25;
    let kills: u64 = std::env::var("EVJ_HANDOVER_KILLS")
        .ok()
        .map(|v| v.parse().expect("EVJ_HANDOVER_KILLS is a number"))
        .unwrap_or(20);
    let mut dir = tempfile::tempdir().unwrap();
    let options = crash_harness::options();
    // The store exists before a follower opens (a read-only open never creates one).
    let mut child = crash_harness::child_of_this_test("handover_crash_child", dir.path());
    let mut model = crash_harness::Model::new();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let (mut taken_over, mut old_killed_first) = (0, 0);
    for iter in 0..kills {
        if iter > 0 && iter % STORE_ROUNDS == 0 {
            // A fresh store now and then, so that a long run's checks stay linear.
            dir = tempfile::tempdir().unwrap();
            child = crash_harness::child_of_this_test("handover_crash_child", dir.path());
            model = crash_harness::Model::new();
        }
        let unsynced = iter % 2 == 1;
        let old =
            crash_harness::spawn_child(&child, dir.path(), (2 * iter + 1) << 32, unsynced, false);
        assert!(
            old.wait_ready(),
            "iteration {iter}: the writer did not open the store"
        );
        std::thread::sleep(Duration::from_millis(5 + next(40)));
        let new =
            crash_harness::spawn_child(&child, dir.path(), (2 * iter + 2) << 32, unsynced, true);
        // Anywhere from the taker's start-up (tens of milliseconds: a process, a read-only
        // open) to well after its handover.
        std::thread::sleep(Duration::from_millis(next(250)));
        let old_first = next(2) == 0;
        let (old_acks, new_acks, new_ready) = if old_first {
            old_killed_first += 1;
            let (old_acks, _) = old.kill(iter);
            std::thread::sleep(Duration::from_millis(next(20)));
            let (new_acks, ready) = new.kill(iter);
            (old_acks, new_acks, ready)
        } else {
            let (new_acks, ready) = new.kill(iter);
            std::thread::sleep(Duration::from_millis(next(20)));
            let (old_acks, _) = old.kill(iter);
            (old_acks, new_acks, ready)
        };
        taken_over += u64::from(new_ready);
        let ctx = format!("iteration {iter} (old writer killed first: {old_first})");
        let store = open_after_close(dir.path(), options.clone())
            .unwrap_or_else(|e| panic!("{ctx}: reopening failed: {e}"));
        model.full_check(&store, &ctx);
        for (seed, parts) in crash_harness::acked_batches(&old_acks)
            .into_iter()
            .chain(crash_harness::acked_batches(&new_acks))
        {
            model.check_acked(seed, &parts, &ctx);
        }
        store.close().unwrap();
    }
    println!("{kills} iterations, {taken_over} with the store taken over before the kills");
    assert!(
        taken_over * 4 >= kills,
        "too few kills after a handover: {taken_over} of {kills}"
    );
    assert!(taken_over > 0, "no child ever took the store over");
    assert!(
        old_killed_first > 0 && old_killed_first < kills,
        "both orders of kills ran"
    );
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: a plain system call on a child process this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

/// A writer stopped with SIGSTOP is never taken over: it holds the lock and does not answer, so
/// `take_over` fails and changes nothing; resumed, it refuses the request whose deadline passed
/// and goes on. Taken over later, it never writes again, stopped and resumed or not.
#[test]
fn a_stopped_writer_is_not_taken_over_and_never_writes_after_a_handover() {
    let dir = tempfile::tempdir().unwrap();
    let options = crash_harness::options();
    // The store exists before a follower opens (a read-only open never creates one).
    let child = crash_harness::child_of_this_test("handover_crash_child", dir.path());
    let old = crash_harness::spawn_child(&child, dir.path(), 1 << 32, false, false);
    assert!(old.wait_ready());
    std::thread::sleep(Duration::from_millis(30));
    signal(old.pid(), libc::SIGSTOP);
    let follower = Store::open_read_only(dir.path(), options.clone().follow(None)).unwrap();
    let refused = follower.take_over(Duration::from_millis(300));
    assert!(
        matches!(refused, Err(Error::TakeOverFailed { .. })),
        "{:?}",
        refused.err()
    );
    let stopped_at = follower.refresh().unwrap();
    signal(old.pid(), libc::SIGCONT);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while follower.refresh().unwrap() == stopped_at {
        assert!(
            std::time::Instant::now() < deadline,
            "the resumed writer appends no more"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    // Now taken over; then stopped and resumed: it appends nothing more.
    let new = follower.take_over(Duration::from_secs(10)).unwrap();
    signal(old.pid(), libc::SIGSTOP);
    for i in 0..50 {
        new.append("other-1", ExpectedVersion::Any, events("other-1", i, 1))
            .unwrap();
    }
    signal(old.pid(), libc::SIGCONT);
    std::thread::sleep(Duration::from_millis(50));
    for i in 50..100 {
        new.append("other-1", ExpectedVersion::Any, events("other-1", i, 1))
            .unwrap();
    }
    let (acks, _) = old.kill(0);
    assert!(!acks.is_empty());
    let expected = listing(&new);
    new.close().unwrap();
    let reopened = open_after_close(dir.path(), options).unwrap();
    assert_eq!(
        listing(&reopened),
        expected,
        "the old writer wrote after the handover"
    );
    assert_eq!(datas(&reopened, "other-1").len(), 100);
    // Every batch it acknowledged before the handover is there, where it was acknowledged.
    for a in &acks {
        for n in a.first..a.first + u64::from(a.count) {
            let e = reopened.read_event(&format!("crash-{}", a.s), n).unwrap();
            let meta = String::from_utf8(e.metadata().to_vec()).unwrap();
            assert!(
                meta.starts_with(&format!("seed={};", a.seed)),
                "{a:?}: {meta}"
            );
        }
    }
}

/// A request whose deadline has passed is refused and the writer goes on; a connection that
/// says nothing does not hold up `close`, and neither does a handover asked for while the store
/// closes; a store at a path too long for a socket address is taken over too; and a timeout
/// of `Duration::MAX` is as good as forever.
#[test]
fn the_handover_protocol_refuses_late_requests_and_never_blocks_close() {
    use std::os::unix::net::UnixStream;
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(dir.path(), small()).unwrap();
    writer
        .append("acct-1", ExpectedVersion::NoStream, events("acct-1", 0, 1))
        .unwrap();
    let socket = dir.path().join("handover.sock");
    let mut late = UnixStream::connect(&socket).unwrap();
    late.write_all(b"HANDOVER 1\n").unwrap();
    let mut answer = String::new();
    BufReader::new(&late).read_line(&mut answer).unwrap();
    assert!(answer.starts_with("REFUSED"), "{answer:?}");
    writer
        .append("acct-1", ExpectedVersion::Exact(0), events("acct-1", 1, 1))
        .unwrap();
    let mut garbage = UnixStream::connect(&socket).unwrap();
    garbage.write_all(b"GIVE ME THE STORE\n").unwrap();
    let mut answer = String::new();
    BufReader::new(&garbage).read_line(&mut answer).unwrap();
    assert!(answer.starts_with("REFUSED"), "{answer:?}");

    // Silent, then asking while the store closes: close returns either way.
    let _silent = UnixStream::connect(&socket).unwrap();
    let mut asking = UnixStream::connect(&socket).unwrap();
    asking.write_all(b"HANDOVER 99999999999999\n").unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        done_tx.send(writer.close()).unwrap();
    });
    let closed = done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("close hung");
    assert!(closed.is_ok(), "{closed:?}");
    assert!(
        !socket.exists(),
        "the closed writer's socket is left behind"
    );

    // A path longer than a socket address may be.
    let long = dir.path().join("d".repeat(120));
    let writer = Store::open(&long, small()).unwrap();
    writer
        .append("acct-1", ExpectedVersion::NoStream, events("acct-1", 0, 1))
        .unwrap();
    let follower = Store::open_read_only(&long, small()).unwrap();
    let new = follower.take_over(Duration::MAX).unwrap();
    assert!(matches!(
        writer.append("acct-1", ExpectedVersion::Any, events("acct-1", 1, 1)),
        Err(Error::HandedOver { .. })
    ));
    new.append("acct-1", ExpectedVersion::Exact(0), events("acct-1", 1, 1))
        .unwrap();
    new.close().unwrap();
}

/// Makes every sync slow while set: a handover's groups in flight then outlast its deadline.
struct SlowSyncs(std::sync::atomic::AtomicBool);

impl eventjournal::fault::FaultInjector for SlowSyncs {
    fn before(&self, op: &eventjournal::fault::FileOp<'_>) -> Option<eventjournal::fault::Fault> {
        let slow = self.0.load(std::sync::atomic::Ordering::SeqCst);
        if slow && matches!(op, eventjournal::fault::FileOp::Sync { .. }) {
            std::thread::sleep(Duration::from_millis(400));
        }
        None
    }
}

/// A handover whose deadline passes while the writer commits a slow group is refused, and the
/// writer goes on, listening again; a close during it leaves no listener and no socket behind.
#[test]
fn a_too_late_handover_is_refused_and_a_close_during_it_leaves_no_listener() {
    use std::os::unix::net::UnixStream;
    let dir = tempfile::tempdir().unwrap();
    let slow = Arc::new(SlowSyncs(std::sync::atomic::AtomicBool::new(false)));
    let writer = Arc::new(Store::open(dir.path(), small().fault_injector(slow.clone())).unwrap());
    writer
        .append("acct-1", ExpectedVersion::NoStream, events("acct-1", 0, 1))
        .unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let socket = dir.path().join("handover.sock");
    let ask_slowly = |then_close: bool| {
        slow.0.store(true, std::sync::atomic::Ordering::SeqCst);
        let w = writer.clone();
        let appender = std::thread::spawn(move || {
            w.append("acct-1", ExpectedVersion::Any, events("acct-1", 1, 1))
        });
        std::thread::sleep(Duration::from_millis(50));
        let mut asker = UnixStream::connect(&socket).unwrap();
        asker
            .write_all(format!("HANDOVER {}\n", now() + 100).as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let closer = then_close.then(|| {
            let w = writer.clone();
            std::thread::spawn(move || w.close())
        });
        let mut answer = String::new();
        BufReader::new(&asker).read_line(&mut answer).unwrap();
        assert!(answer.starts_with("REFUSED"), "{answer:?}");
        assert!(
            appender.join().unwrap().is_ok(),
            "the group in flight was committed"
        );
        slow.0.store(false, std::sync::atomic::Ordering::SeqCst);
        closer.map(|c| c.join().unwrap())
    };
    ask_slowly(false);
    // Still the writer, and still listening.
    writer
        .append("acct-1", ExpectedVersion::Any, events("acct-1", 2, 1))
        .unwrap();
    assert!(socket.exists());
    let closed = ask_slowly(true);
    assert!(matches!(closed, Some(Ok(()))), "{closed:?}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(!socket.exists(), "a listener outlived the close");
    assert!(UnixStream::connect(&socket).is_err());
    let reopened = open_after_close(dir.path(), small()).unwrap();
    assert_eq!(reopened.stream_version("acct-1").unwrap(), Some(3));
}

/// Records the index files the store creates.
#[derive(Default)]
struct IndexWrites(Mutex<Vec<String>>);

impl eventjournal::fault::FaultInjector for IndexWrites {
    fn before(&self, op: &eventjournal::fault::FileOp<'_>) -> Option<eventjournal::fault::Fault> {
        if let eventjournal::fault::FileOp::Create { path } = op {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.contains(".idx") {
                self.0.lock().unwrap().push(name);
            }
        }
        None
    }
}

#[test]
fn the_new_writer_keeps_the_old_writers_checkpoints_of_the_active_segment() {
    // 1 MiB segments: the active segment's index file is saved every 128 KiB.
    let options = || Options::default().segment_size(1 << 20);
    let dir = tempfile::tempdir().unwrap();
    let old = Store::open(dir.path(), options()).unwrap();
    let data = vec![7u8; 1000];
    let append = |s: &Store, n: usize| {
        for _ in 0..n {
            s.append(
                "acct",
                ExpectedVersion::Any,
                [EventData::new("E", data.clone())],
            )
            .unwrap();
        }
    };
    append(&old, 50);
    let writes = Arc::new(IndexWrites::default());
    let follower =
        Store::open_read_only(dir.path(), options().fault_injector(writes.clone())).unwrap();
    // Past two checkpoints after the follower opened: the index file it knows is behind the
    // one on disk by more than a checkpoint's worth.
    append(&old, 300);
    let new = follower.take_over(Duration::from_secs(10)).unwrap();
    writes.0.lock().unwrap().clear();
    // Its first appends save no index file: the next checkpoint is 128 KiB after the old
    // writer's last one, not at once.
    append(&new, 5);
    assert_eq!(*writes.0.lock().unwrap(), Vec::<String>::new());
    // And the checkpoints go on.
    append(&new, 300);
    assert!(!writes.0.lock().unwrap().is_empty());
    drop(old);
}

/// A `$all` subscription on a follower that then takes over reads through the follower's own
/// index, which the new writer took: its next read fails with `Error::Closed`, as every other
/// read of that handle does, rather than go on from what it had seen.
#[test]
fn a_subscription_of_a_follower_that_took_over_fails_at_its_next_read() {
    let dir = tempfile::tempdir().unwrap();
    let old = Store::open(dir.path(), small()).unwrap();
    round_robin(&old, "acct", 0..300);
    let follower = Store::open_read_only(dir.path(), small()).unwrap();
    let mut sub = follower.subscribe_to_all(AllFrom::Start, None).unwrap();
    for _ in 0..10 {
        match sub.try_recv().unwrap() {
            Some(SubscriptionItem::Event(_)) => {}
            other => panic!("expected an event, got {other:?}"),
        }
    }
    let new = follower.take_over(Duration::from_secs(5)).unwrap();
    assert!(
        matches!(sub.try_recv(), Err(Error::Closed)),
        "the old handle's subscription read on"
    );
    assert_eq!(
        new.read_all_forward(Position::START, usize::MAX)
            .unwrap()
            .count(),
        300
    );
}
