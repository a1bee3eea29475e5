//! Handover: a follower takes the writer role from a running writer (in this process or in
//! another), no acknowledged append is lost, none is acknowledged by both, and the old writer
//! refuses appends with `Error::HandedOver` from then on.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use eventjournal::*;

fn small() -> Options {
    Options::default().segment_size(16 * 1024)
}

#[test]
fn a_follower_takes_over_a_writer_and_the_old_one_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let old = Store::open(dir.path(), small()).unwrap();
    for i in 0..200 {
        old.append(
            &format!("acct-{}", i % 7),
            ExpectedVersion::Any,
            events("acct", i, 1),
        )
        .unwrap();
    }
    let follower = Store::open_read_only(dir.path(), small()).unwrap();
    // Appends the follower has not seen yet when it asks.
    for i in 200..230 {
        old.append(
            &format!("acct-{}", i % 7),
            ExpectedVersion::Any,
            events("acct", i, 1),
        )
        .unwrap();
    }
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
    assert_eq!(listing(&new), before);
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
    for i in 0..300 {
        new.append(
            &format!("acct-{}", i % 7),
            ExpectedVersion::Any,
            events("more", i, 1),
        )
        .unwrap();
    }
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
/// number with its position.
fn append_until_handed_over(
    store: Arc<Store>,
    stream: &'static str,
    stop: Arc<AtomicBool>,
) -> Vec<(u64, u64)> {
    let mut acked = Vec::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match store.append(
            stream,
            ExpectedVersion::Any,
            [EventData::new("P", seq.to_string())],
        ) {
            Ok(r) => {
                acked.push((seq, r.position.unwrap().0));
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
    for round in 0..rounds {
        let ctx = format!("round {round}");
        let stop = Arc::new(AtomicBool::new(false));
        let appender = {
            let (w, stop) = (writer.clone(), stop.clone());
            std::thread::spawn(move || append_until_handed_over(w, "parent-1", stop))
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
        stop.store(true, Ordering::Relaxed);
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
    let expected = listing(&writer);
    Arc::try_unwrap(writer).ok().unwrap().close().unwrap();
    let reopened = open_after_close(dir.path(), small()).unwrap();
    assert_eq!(listing(&reopened), expected);
}
