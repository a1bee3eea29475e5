//! Reads with a cold page cache: what a restarted machine pays. A plain `main` with its own
//! timing. Every figure is a ratio against the disk's sequential read measured in the same run.
//!
//! Two stores of `EVJ_COLD_EVENTS` events (default 3,000,000) with 100-byte payloads, built with
//! `Durability::None` and closed: **interleaved** (1,000 streams, batches of one event to each of
//! 100 streams in turn) and **contiguous** (one stream). Before each timed read every file of the
//! store is dropped from the page cache (`POSIX_FADV_DONTNEED` after a sync: as after
//! `echo 3 > /proc/sys/vm/drop_caches`, for these files only), the store is opened (timed on its
//! own: column `cold open ms`), and the timed part reads:
//!
//! - `peer`: the segment files read front to back with 1 MiB `read` calls into one buffer, as
//!   `cat` does — the disk's sequential read rate in MB/s of segment files;
//! - `all_cold`: `replay_all` of the interleaved store from the start; MB/s of segment bytes
//!   (the files' sizes up to the data) and events/s;
//! - `contiguous_cold`: `replay_stream` of the contiguous store's stream;
//! - `interleaved_10_cold`: `replay_stream` of 10 of the interleaved store's streams, one after
//!   the other (each 1/1,000 of the log, spread through all of it), events/s;
//! - `activation_5000_cold`: a bank's restart: a third store of 5,000 accounts of 100 events
//!   (written round-robin, 100 accounts to a batch), every account replayed whole, one after the
//!   other, as activating each journaled actor does; MB/s of the whole log and events/s.
//!
//! Each is run `EVJ_COLD_RUNS` times (default 3), alternating with the peer, and the medians are
//! printed with their ratio to the peer's median.
//!
//! ```sh
//! cargo bench --bench cold
//! EVJ_COLD_EVENTS=10000000 cargo bench --bench cold
//! ```

#[path = "common/env.rs"]
mod env;
use env::env;

use std::io::Read;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use eventjournal::{Durability, EventData, ExpectedVersion, Options, Position, Store, StreamWrite};
use tempfile::TempDir;

const PAYLOAD: [u8; 100] = [0x5a; 100];
const STREAMS: u64 = 1000;

fn options() -> Options {
    Options::default().durability(Durability::None)
}

fn build_interleaved(events: u64) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), options()).expect("open");
    let mut i = 0;
    while i < events {
        let to = (i + 100).min(events);
        let writes = (i..to)
            .map(|k| {
                StreamWrite::new(
                    format!("account-{}", k % STREAMS),
                    ExpectedVersion::Any,
                    vec![EventData::new("Deposited", PAYLOAD)],
                )
            })
            .collect();
        store.append_multi(writes).expect("append");
        i = to;
    }
    store.close().expect("close");
    dir
}

/// Actors of the activation store, and events each.
const ACTORS: u64 = 5000;
const ACTOR_EVENTS: u64 = 100;

/// The activation store: `ACTORS` streams of `ACTOR_EVENTS` events, written round-robin in
/// batches of one event to each of 100 streams, as a bank's accounts are.
fn build_actors() -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), options()).expect("open");
    for round in 0..ACTOR_EVENTS {
        for first in (0..ACTORS).step_by(100) {
            let writes = (first..first + 100)
                .map(|a| {
                    StreamWrite::new(
                        format!("account-{a}"),
                        ExpectedVersion::Any,
                        vec![EventData::new("Deposited", PAYLOAD)],
                    )
                })
                .collect();
            store.append_multi(writes).expect("append");
        }
        let _ = round;
    }
    store.close().expect("close");
    dir
}

fn build_contiguous(events: u64) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), options()).expect("open");
    let mut i = 0;
    while i < events {
        let n = (events - i).min(1000);
        let batch: Vec<EventData> = (0..n)
            .map(|_| EventData::new("Deposited", PAYLOAD))
            .collect();
        store
            .append("account-0", ExpectedVersion::Any, batch)
            .expect("append");
        i += n;
    }
    store.close().expect("close");
    dir
}

/// The segment files of a store, in log order.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Evicts every file of the store in `dir` from the page cache: synced, then dropped with
/// `POSIX_FADV_DONTNEED` (the kernel drops clean pages). The rest of the cache is untouched, so
/// other work on the machine keeps its pages, and no privilege is needed.
fn evict(dir: &Path) {
    use std::os::fd::AsRawFd;
    for entry in std::fs::read_dir(dir).expect("list").flatten() {
        let Ok(f) = std::fs::File::open(entry.path()) else {
            continue;
        };
        let _ = f.sync_all();
        // SAFETY: plain system call on a descriptor we own; no memory is passed.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

/// Reads the segment files whole: bytes read and seconds.
fn peer(dir: &Path) -> (u64, f64) {
    let mut buf = vec![0u8; 1 << 20];
    let start = Instant::now();
    let mut total = 0u64;
    for p in segments(dir) {
        let mut f = std::fs::File::open(&p).expect("open segment");
        loop {
            let n = f.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    (total, start.elapsed().as_secs_f64())
}

/// Bytes of the log a full read covers: its head position, which counts every segment's header
/// and records.
fn log_bytes(dir: &Path) -> u64 {
    let store = Store::open(dir, options()).expect("open");
    let head = store.head().0;
    store.close().expect("close");
    head
}

/// Opens the store in `dir` and reads it with `read`: events read, seconds the read took, and
/// seconds the open took (not part of the read's figure: a cold open has costs of its own).
fn timed(dir: &Path, read: impl Fn(&Store) -> u64) -> (u64, f64, f64) {
    let start = Instant::now();
    let store = Store::open(dir, options()).expect("open");
    let opened = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let n = read(&store);
    let took = start.elapsed().as_secs_f64();
    store.close().expect("close");
    (n, took, opened)
}

fn replay_all(store: &Store) -> u64 {
    let mut sum = 0u64;
    let n = store
        .replay_all(Position::START, |e| {
            sum += e.data().len() as u64;
            ControlFlow::Continue(())
        })
        .expect("replay $all");
    std::hint::black_box(sum);
    n
}

fn replay(store: &Store, stream: &str) -> u64 {
    let mut sum = 0u64;
    let n = store
        .replay_stream(stream, 0, |e| {
            sum += e.data().len() as u64;
            ControlFlow::Continue(())
        })
        .expect("replay stream");
    std::hint::black_box(sum);
    n
}

/// A row of the table: its name, and per run MB/s, events/s and the open's milliseconds.
type Row = (&'static str, Vec<f64>, Vec<f64>, Vec<f64>);
/// A timed read: the store, the log bytes it covers (0: not a read of the whole log), the read.
type Case<'a> = (&'a Path, u64, &'a dyn Fn(&Store) -> u64);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let events = env("EVJ_COLD_EVENTS", 3_000_000);
    let runs = env("EVJ_COLD_RUNS", 3).max(1) as usize;
    let interleaved = build_interleaved(events);
    let contiguous = build_contiguous(events);
    let actors = build_actors();
    let (all_bytes, one_bytes) = (log_bytes(interleaved.path()), log_bytes(contiguous.path()));
    let actor_bytes = log_bytes(actors.path());
    let mut peers = Vec::new();
    let mut rows: Vec<Row> = vec![
        ("all_cold", Vec::new(), Vec::new(), Vec::new()),
        ("contiguous_cold", Vec::new(), Vec::new(), Vec::new()),
        ("interleaved_10_cold", Vec::new(), Vec::new(), Vec::new()),
        ("activation_5000_cold", Vec::new(), Vec::new(), Vec::new()),
    ];
    for _ in 0..runs {
        evict(interleaved.path());
        let (bytes, secs) = peer(interleaved.path());
        peers.push(bytes as f64 / secs / 1e6);
        let cases: [Case; 4] = [
            (interleaved.path(), all_bytes, &replay_all),
            (contiguous.path(), one_bytes, &|s| replay(s, "account-0")),
            (interleaved.path(), 0, &|s| {
                (0..10)
                    .map(|k| replay(s, &format!("account-{}", k * 97)))
                    .sum()
            }),
            (actors.path(), actor_bytes, &|s| {
                (0..ACTORS)
                    .map(|a| replay(s, &format!("account-{a}")))
                    .sum()
            }),
        ];
        for (row, (dir, bytes, read)) in rows.iter_mut().zip(cases) {
            evict(dir);
            let (n, secs, open) = timed(dir, read);
            row.1.push(bytes as f64 / secs / 1e6);
            row.2.push(n as f64 / secs);
            row.3.push(open * 1e3);
        }
    }
    let peer_mb = median(peers);
    println!(
        "{events} events; disk sequential read (peer, `cat`-like): {peer_mb:.0} MB/s (median of {runs})"
    );
    println!(
        "{:<22} {:>10} {:>12} {:>10} {:>14}",
        "read", "MB/s", "events/s", "/ peer", "cold open ms"
    );
    for (name, mb, ev, open) in rows {
        let mb = median(mb);
        let ratio = if mb > 0.0 {
            format!("{:.2}", mb / peer_mb)
        } else {
            "-".into()
        };
        println!(
            "{name:<22} {:>10} {:>12.0} {ratio:>10} {:>14.1}",
            if mb > 0.0 {
                format!("{mb:.0}")
            } else {
                "-".into()
            },
            median(ev),
            median(open)
        );
    }
}
