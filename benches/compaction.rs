//! Compaction: how fast it rewrites segments against the disk's own sequential write rate, what
//! it costs the appends and replays that run beside it, and what a stream's `max_count` costs a
//! read. Every figure is a ratio against a peer measured in the same run.
//!
//! The stores: `EVJ_COMPACT_MB` MB (default 128) of 200-byte events, appended round-robin over
//! 1,000 streams (`Durability::None`, batches of 1,000, 16 MiB segments), synced, then a share
//! of the streams deleted (`delete_stream`) and the last segment sealed, so that every segment
//! is sealed and holds that share of hidden events spread evenly through it. Two shapes: 50% and
//! 10% of the events deleted.
//!
//! - `rewrite`: `Store::compact` on such a store, as bytes written (the compacted segments'
//!   size) per second, against writing as many bytes to a fresh file on the same file system in
//!   1 MiB writes with one `fdatasync` at the end, measured once right before and twice right
//!   after the compaction (the median of the three is the peer). The segments are in the page cache (just
//!   written), as they are for a compaction of a store in use. `EVJ_COMPACT_REPEAT` stores of
//!   each shape (default 2). The CPU time the process used meanwhile (the compaction's thread:
//!   nothing else runs) is shown beside: on a machine whose cores are busy with other work, a
//!   compaction waits for a core for about as long again, and the peer, which mostly waits on
//!   the disk, hardly does.
//! - `append p99`: one thread appends one 100-byte event at a time with the default durability
//!   (a sync per append) to a 50%-shape store, first for as long as the compaction took in the
//!   round before (1 s in the first round) with nothing else running, then while `compact` runs
//!   on the same store; p99 of each, over `EVJ_COMPACT_ROUNDS` stores (default 3), and how long
//!   each of those compactions took. Then the same with a thread of normal priority spinning
//!   throughout (both phases), as other work of an application would: the compaction runs
//!   `EVJ_COMPACT_NICENESS` (default 10, the store's default) steps nicer than its caller.
//! - `replay`: the same, with one thread reading `$all` from the start over and over (events
//!   per second).
//! - `max_count read`: reading a stream of 20,000 events whose `max_count` is 100, against reading
//!   a stream of 100 events, forward, whole, alternately, `EVJ_COMPACT_READS` times each (default
//!   20,000).
//!
//! ```sh
//! cargo bench --bench compaction
//! EVJ_COMPACT_MB=512 EVJ_COMPACT_ROUNDS=5 cargo bench --bench compaction
//! ```

#[path = "common/env.rs"]
mod env;
#[path = "common/peer.rs"]
mod peer;
use env::env;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventjournal::{
    Durability, EventData, ExpectedVersion, Options, Position, Store, StreamMetadata, StreamWrite,
};
use tempfile::TempDir;

const PAYLOAD: [u8; 200] = [0x5A; 200];
const STREAMS: u64 = 1000;
const SEGMENT: u64 = 16 << 20;

fn fill_options() -> Options {
    Options::default()
        .durability(Durability::None)
        .segment_size(SEGMENT)
}

/// A store of `mb` MB in which every `delete_every`-th stream is deleted, every segment sealed
/// and everything synced; closed.
fn build(mb: u64, delete_every: u64) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("evj-compact-bench")
        .tempdir_in(bench_root())
        .expect("tempdir");
    let store = Store::open(dir.path(), fill_options()).expect("open");
    // A record of a 200-byte event in a stream named `s-NNN` takes 272 bytes.
    let events = (mb << 20) / 272;
    let mut done = 0;
    while done < events {
        let n = (events - done).min(1000);
        let writes = (0..n)
            .map(|i| {
                StreamWrite::new(
                    format!("s-{}", (done + i) % STREAMS),
                    ExpectedVersion::Any,
                    vec![EventData::new("E", PAYLOAD)],
                )
            })
            .collect();
        store.append_multi(writes).expect("fill");
        done += n;
    }
    for s in (0..STREAMS).filter(|s| s % delete_every == 0) {
        store
            .delete_stream(&format!("s-{s}"), ExpectedVersion::Any)
            .expect("delete");
    }
    store.seal().expect("seal");
    store.close().expect("close");
    sync_all();
    dir
}

/// Where the stores go: `EVJ_COMPACT_DIR`, else the system's temporary directory.
fn bench_root() -> std::path::PathBuf {
    std::env::var_os("EVJ_COMPACT_DIR").map_or_else(std::env::temp_dir, Into::into)
}

/// Flushes every dirty page of the machine, so that a measurement does not pay for the writes
/// of the one before.
fn sync_all() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Bytes the segment files of `dir` take on disk.
fn segment_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry"))
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().expect("stat").blocks() * 512)
        .sum()
}

/// Seconds to write `bytes` to a fresh file in `dir` in 1 MiB writes, then `fdatasync` it.
fn peer_write(dir: &Path, bytes: u64) -> f64 {
    let mut chunk = vec![0xA5u8; 1 << 20];
    let secs = peer::sequential_write(&dir.join("peer-write"), bytes, &mut chunk);
    sync_all();
    secs
}

struct Rewrite {
    shape: u64,
    bytes: u64,
    secs: f64,
    /// CPU time of the process while it compacted: on a busy machine, what it waits for a core.
    cpu_secs: f64,
    peer_secs: f64,
}

/// Seconds of CPU the process has used.
fn process_cpu() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given, which lives across the call.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Compacts a fresh store of the shape (every `delete_every`-th stream deleted) and the peer
/// write of as many bytes around it.
fn rewrite(mb: u64, delete_every: u64) -> Rewrite {
    let dir = build(mb, delete_every);
    let store = Store::open(dir.path(), fill_options()).expect("open");
    let before_guess = segment_bytes(dir.path()) * (delete_every - 1) / delete_every;
    let peer_before = peer_write(&bench_root(), before_guess);
    // The store copies each segment's records in a thread of its own (`perf report --comm
    // evj-compact` shows the copies alone; the planning runs on this thread).
    let (start, cpu) = (Instant::now(), process_cpu());
    let report = store.compact().expect("compact");
    let (secs, cpu_secs) = (start.elapsed().as_secs_f64(), process_cpu() - cpu);
    assert!(report.segments_rewritten > 0, "nothing compacted");
    let bytes = report.disk_bytes_after;
    store.close().expect("close");
    sync_all();
    // The disk's speed varies from one write to the next (a virtual disk, other work on the
    // machine): the peer is the median of one write before the compaction and two after.
    // The first wrote an estimate of the bytes; it is scaled to the bytes written.
    let mut peers = [
        peer_before * bytes as f64 / before_guess.max(1) as f64,
        peer_write(&bench_root(), bytes),
        peer_write(&bench_root(), bytes),
    ];
    peers.sort_by(f64::total_cmp);
    Rewrite {
        shape: 100 / delete_every,
        bytes,
        secs,
        cpu_secs,
        peer_secs: peers[1],
    }
}

const IDLE: u8 = 0;
const BASELINE: u8 = 1;
const COMPACTING: u8 = 2;

/// What a probe thread measured in each phase.
#[derive(Default)]
struct Probe {
    /// Append latencies (the append probe).
    latencies: [Vec<Duration>; 3],
    /// Events read and seconds spent (the replay probe).
    replayed: [(u64, f64); 3],
}

/// Runs `probe` in a thread on a fresh 50%-shape store: `baseline` with nothing else running,
/// then while the store compacts; returns what it measured and how long the compaction took.
fn round(
    mb: u64,
    baseline: Duration,
    probe: fn(&Store, &AtomicU8, &AtomicBool) -> Probe,
    busy_core: bool,
) -> (Probe, Duration) {
    let dir = build(mb, 2);
    let options = Options::default()
        .segment_size(SEGMENT)
        .compaction_niceness(env("EVJ_COMPACT_NICENESS", 10) as u8);
    let store = Arc::new(Store::open(dir.path(), options).expect("open"));
    let phase = Arc::new(AtomicU8::new(IDLE));
    let stop = Arc::new(AtomicBool::new(false));
    // Other work of the application that keeps one core busy, in both phases.
    let spinner = busy_core.then(|| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut x = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        })
    });
    let thread = {
        let (store, phase, stop) = (store.clone(), phase.clone(), stop.clone());
        std::thread::spawn(move || probe(&store, &phase, &stop))
    };
    std::thread::sleep(Duration::from_millis(100));
    phase.store(BASELINE, Ordering::SeqCst);
    std::thread::sleep(baseline);
    phase.store(COMPACTING, Ordering::SeqCst);
    let start = Instant::now();
    store.compact().expect("compact");
    let took = start.elapsed();
    phase.store(IDLE, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let probe = thread.join().expect("probe thread");
    if let Some(s) = spinner {
        s.join().expect("busy thread");
    }
    drop(store);
    (probe, took)
}

fn append_probe(store: &Store, phase: &AtomicU8, stop: &AtomicBool) -> Probe {
    let mut p = Probe::default();
    while !stop.load(Ordering::SeqCst) {
        let at = phase.load(Ordering::SeqCst);
        let start = Instant::now();
        store
            .append(
                "probe-1",
                ExpectedVersion::Any,
                [EventData::new("P", &PAYLOAD[..100])],
            )
            .expect("append");
        let took = start.elapsed();
        // An append that straddles a change of phase belongs to neither.
        if phase.load(Ordering::SeqCst) == at {
            p.latencies[at as usize].push(took);
        }
    }
    p
}

fn replay_probe(store: &Store, phase: &AtomicU8, stop: &AtomicBool) -> Probe {
    let mut p = Probe::default();
    'outer: while !stop.load(Ordering::SeqCst) {
        let events = store
            .read_all_forward(Position::START, usize::MAX)
            .expect("replay");
        let mut at = phase.load(Ordering::SeqCst);
        let mut start = Instant::now();
        let mut n = 0u64;
        for e in events {
            let e = e.expect("event");
            std::hint::black_box(e.data().len());
            n += 1;
            if n == 4096 {
                let now = phase.load(Ordering::SeqCst);
                if now == at {
                    let r = &mut p.replayed[at as usize];
                    r.0 += n;
                    r.1 += start.elapsed().as_secs_f64();
                }
                if stop.load(Ordering::SeqCst) {
                    break 'outer;
                }
                (at, n, start) = (now, 0, Instant::now());
            }
        }
    }
    p
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v.get((v.len() * 99 / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// Seconds per read of a stream of 20,000 events with `max_count` 100, and of a stream of 100.
fn max_count_reads(reads: u64) -> (f64, f64) {
    let dir = tempfile::Builder::new()
        .prefix("evj-compact-bench")
        .tempdir_in(bench_root())
        .expect("tempdir");
    let store = Store::open(dir.path(), fill_options()).expect("open");
    for (stream, n) in [("capped-1", 20_000u64), ("small-1", 100)] {
        for _ in 0..n / 100 {
            let batch: Vec<EventData> = (0..100).map(|_| EventData::new("E", PAYLOAD)).collect();
            store
                .append(stream, ExpectedVersion::Any, batch)
                .expect("append");
        }
    }
    let md = StreamMetadata {
        max_count: Some(100),
        ..Default::default()
    };
    store
        .set_stream_metadata("capped-1", ExpectedVersion::Any, md)
        .expect("max_count");
    let read = |stream: &str| {
        let start = Instant::now();
        let mut n = 0;
        for e in store
            .read_stream_forward(stream, 0, usize::MAX)
            .expect("read")
        {
            std::hint::black_box(e.expect("event").data().len());
            n += 1;
        }
        assert_eq!(n, 100);
        start.elapsed().as_secs_f64()
    };
    let (mut capped, mut small) = (0.0, 0.0);
    for _ in 0..reads {
        capped += read("capped-1");
        small += read("small-1");
    }
    (capped / reads as f64, small / reads as f64)
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter this program does not use.
    let mb = env("EVJ_COMPACT_MB", 128);
    let repeat = env("EVJ_COMPACT_REPEAT", 2);
    let rounds = env("EVJ_COMPACT_ROUNDS", 3);
    let reads = env("EVJ_COMPACT_READS", 20_000);
    println!(
        "compaction: {mb} MB stores of 200-byte events over {STREAMS} streams, 16 MiB segments; \
         stores in {}",
        bench_root().display()
    );

    println!();
    println!(
        "| shape (events deleted) | bytes written | compaction | peer write + fdatasync | ratio | compaction CPU |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for delete_every in [2, 10] {
        for _ in 0..repeat {
            let r = rewrite(mb, delete_every);
            let mbps = |s: f64| r.bytes as f64 / s / 1e6;
            println!(
                "| {}% | {:.1} MB | {:.3} s ({:.0} MB/s) | {:.3} s ({:.0} MB/s) | {:.2} | {:.3} s |",
                r.shape,
                r.bytes as f64 / 1e6,
                r.secs,
                mbps(r.secs),
                r.peer_secs,
                mbps(r.peer_secs),
                r.peer_secs / r.secs,
                r.cpu_secs
            );
        }
    }

    println!();
    println!("| probe (50% shape) | without compaction | while compacting | ratio |");
    println!("| --- | --- | --- | --- |");
    let mut baseline = Duration::from_secs(1);
    for busy_core in [false, true] {
        let (mut quiet, mut busy) = (Vec::new(), Vec::new());
        let mut took_under_appends = Vec::new();
        for _ in 0..rounds {
            let (mut p, took) = round(mb, baseline, append_probe, busy_core);
            baseline = took.max(Duration::from_millis(200));
            took_under_appends.push(took);
            quiet.append(&mut p.latencies[BASELINE as usize]);
            busy.append(&mut p.latencies[COMPACTING as usize]);
        }
        let what = if busy_core {
            "durable append p99, another thread busy throughout"
        } else {
            "durable append p99"
        };
        let (nq, nb) = (quiet.len(), busy.len());
        let (q, b) = (p99(quiet), p99(busy));
        println!(
            "| {what} | {:.2} ms ({nq} appends) | {:.2} ms ({nb} appends) | {:.2} |",
            q.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            b.as_secs_f64() / q.as_secs_f64()
        );
        let took: Vec<String> = took_under_appends
            .iter()
            .map(|t| format!("{:.3} s", t.as_secs_f64()))
            .collect();
        println!(
            "| compaction's time under that probe | | {} | |",
            took.join(", ")
        );
    }
    let (mut quiet, mut busy) = ((0u64, 0f64), (0u64, 0f64));
    for _ in 0..rounds {
        let (p, took) = round(mb, baseline, replay_probe, false);
        baseline = took.max(Duration::from_millis(200));
        let (a, b) = (
            p.replayed[BASELINE as usize],
            p.replayed[COMPACTING as usize],
        );
        quiet = (quiet.0 + a.0, quiet.1 + a.1);
        busy = (busy.0 + b.0, busy.1 + b.1);
    }
    let rate = |(n, s): (u64, f64)| n as f64 / s.max(1e-9);
    println!(
        "| `$all` replay | {:.0} events/s | {:.0} events/s | {:.2} |",
        rate(quiet),
        rate(busy),
        rate(busy) / rate(quiet)
    );

    let (capped, small) = max_count_reads(reads);
    println!();
    println!("| read of a whole stream | 20,000 events, `max_count` 100 | 100 events | ratio |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| forward, 100 events returned | {:.1} µs | {:.1} µs | {:.2} |",
        capped * 1e6,
        small * 1e6,
        capped / small
    );
}
