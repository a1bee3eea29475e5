//! Followers: how long after a writer in another process acknowledges a batch a read-only store
//! in this one delivers it to a subscription.
//!
//! This program starts itself again as the writer, which opens the store (in a temporary
//! directory) and appends one batch (one 100-byte event to one of 1,000 streams) every
//! `EVJ_FOLLOW_GAP_US` microseconds (default 500), `EVJ_FOLLOW_BATCHES` times (default 5,000).
//! After each append returns it prints the batch's end position and the time
//! (`CLOCK_MONOTONIC`, the same clock in both processes). This process has the store open with
//! [`Store::open_read_only`] (default options: it looks every millisecond) and a subscription
//! to `$all`, and notes when each event arrives. A batch's delay is arrival minus
//! acknowledgement (zero when the follower had it before the writer's append returned: the
//! writer publishes after its `fdatasync`, the follower sees the bytes once they are written).
//!
//! Three shapes, each `EVJ_FOLLOW_RUNS` times (default 3): the writer with `Durability::Sync`
//! and 64 MiB segments (the defaults); with 64 KiB segments, so that the follower goes through a
//! segment change about every 400 batches; and with `Durability::None`, appending as fast as it
//! can (no gap), to show the follower keeping up with a writer that does not wait for the disk.
//!
//! ```sh
//! cargo bench --bench follow
//! ```

#[path = "common/env.rs"]
mod env;
use env::env;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use eventjournal::{
    AllFrom, Durability, EventData, ExpectedVersion, Options, Store, SubscriptionItem,
};

/// Set in the writer process: the store directory.
const WRITER_ENV: &str = "EVJ_FOLLOW_WRITER_DIR";
/// Set in the writer process: "sync", "small" or "none".
const SHAPE_ENV: &str = "EVJ_FOLLOW_SHAPE";

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process of the machine.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn options(shape: &str) -> Options {
    match shape {
        "small" => Options::default().segment_size(64 << 10),
        "none" => Options::default().durability(Durability::None),
        _ => Options::default(),
    }
}

/// The writer process.
fn writer(dir: &Path, shape: &str) {
    let store = Store::open(dir, options(shape)).expect("writer: open");
    let batches = env("EVJ_FOLLOW_BATCHES", 5_000);
    let gap = if shape == "none" {
        Duration::ZERO
    } else {
        Duration::from_micros(env("EVJ_FOLLOW_GAP_US", 500))
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(out, "READY").expect("stdout");
    out.flush().expect("stdout");
    // Wait for the follower to be ready.
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("stdin");
    for i in 0..batches {
        let r = store
            .append(
                &format!("account-{}", i % 1000),
                ExpectedVersion::Any,
                [EventData::new("Deposited", [0x42u8; 100])],
            )
            .expect("writer: append");
        let acked = now_ns();
        let pos = r.position.expect("a position").0;
        writeln!(out, "{pos} {acked}").expect("stdout");
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    out.flush().expect("stdout");
    store.close().expect("writer: close");
}

/// One run: returns each batch's delay, in microseconds, sorted.
fn run(shape: &str) -> Vec<u64> {
    let tmp = tempfile::TempDir::new().expect("tempdir");
    let dir = tmp.path();
    Store::open(dir, options(shape))
        .and_then(|s| s.close())
        .expect("create the store");
    let mut child = Command::new(std::env::current_exe().expect("this program"))
        .env(WRITER_ENV, dir)
        .env(SHAPE_ENV, shape)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the writer");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = lines.next().expect("READY").expect("READY");
    assert_eq!(ready, "READY");
    let follower = Store::open_read_only(dir, Options::default()).expect("open read-only");
    let mut sub = follower
        .subscribe_to_all(AllFrom::Start, None)
        .expect("subscribe");
    let batches = env("EVJ_FOLLOW_BATCHES", 5_000) as usize;
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::with_capacity(batches);
        while seen.len() < batches {
            match sub.recv_timeout(Duration::from_secs(30)).expect("recv") {
                Some(SubscriptionItem::Event(e)) => seen.push((e.position().0, now_ns())),
                Some(SubscriptionItem::Checkpoint(_)) => {}
                None => panic!("no event for 30 s after {}", seen.len()),
            }
        }
        seen
    });
    writeln!(child.stdin.as_mut().expect("stdin")).expect("go");
    let acks: Vec<(u64, u64)> = lines
        .map(|l| {
            let l = l.expect("line");
            let (p, t) = l.split_once(' ').expect("two fields");
            (p.parse().expect("position"), t.parse().expect("time"))
        })
        .collect();
    assert!(child.wait().expect("wait").success(), "the writer failed");
    let seen = reader.join().expect("reader");
    assert_eq!(acks.len(), seen.len());
    let mut delays: Vec<u64> = acks
        .iter()
        .zip(&seen)
        .map(|(&(p, acked), &(q, arrived))| {
            assert_eq!(p, q, "the follower delivered another event");
            arrived.saturating_sub(acked) / 1_000
        })
        .collect();
    delays.sort_unstable();
    follower.close().expect("close");
    delays
}

fn main() {
    if let Some(dir) = std::env::var_os(WRITER_ENV) {
        let shape = std::env::var(SHAPE_ENV).unwrap_or_default();
        writer(Path::new(&dir), &shape);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return; // No criterion groups to list.
    }
    let runs = env("EVJ_FOLLOW_RUNS", 3);
    println!("delay from a writer's acknowledgement to a follower's delivery, in another process");
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "shape", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "batches"
    );
    for (shape, name) in [
        ("sync", "Sync, 64 MiB segments, a batch every 0.5 ms"),
        ("small", "Sync, 64 KiB segments, a batch every 0.5 ms"),
        ("none", "None, 64 MiB segments, back to back"),
    ] {
        for _ in 0..runs {
            let d = run(shape);
            // Nearest rank.
            let at = |q: f64| d[((d.len() as f64 * q).ceil() as usize).clamp(1, d.len()) - 1];
            println!(
                "{name:<44} {:>8} {:>8} {:>8} {:>8} {:>7}",
                at(0.5),
                at(0.99),
                at(0.999),
                d[d.len() - 1],
                d.len()
            );
        }
    }
}
