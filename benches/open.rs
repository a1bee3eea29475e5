//! Opening a store: after a clean close, at any size and any fill of the newest segment, and
//! after a kill -9.
//!
//! Stores of N events (100-byte payloads, 1,000 streams, default options: 64 MiB segments of about
//! 435,000 of these events, `Durability::Sync` with batches of 1,000) are built in temporary
//! directories, with the newest segment nearly empty (2%), half full and nearly full (98%): one
//! store per N, appended to between the shapes. Criterion groups:
//!
//! - `open_clean/{N}_{empty,half,full}`: `Store::open`, then the first event of one stream read,
//!   of the cleanly closed store (closing is not timed);
//! - `open_killed/{N}`: the same, in a fresh process, after a process that appended to the
//!   closed store was killed with SIGABRT: it appended just under one index checkpoint's worth
//!   (an eighth of a segment, 8 MiB) past the newest index file, the most a crash leaves to
//!   scan. Each iteration's process reports its own open time and exits without closing, so that
//!   every iteration opens the store as the crash left it.
//!
//! N is 1,000,000 and 10,000,000; `EVJ_OPEN_100M=1` adds 100,000,000 (about 15 GB of disk, built
//! in several minutes; outside CI).
//!
//! ```sh
//! cargo bench --bench open
//! EVJ_OPEN_100M=1 cargo bench --bench open
//! ```

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::Criterion;
use eventjournal::{EventData, ExpectedVersion, Options, Store, StreamWrite};
use tempfile::TempDir;

const PAYLOAD: [u8; 100] = [0x17; 100];
/// Set in a child process: the store to open (and the phase).
const CHILD_ENV: &str = "EVJ_OPEN_CHILD";
const CHILD_MODE_ENV: &str = "EVJ_OPEN_CHILD_MODE";
/// Bytes a crash may leave past the newest index file: the store saves the active segment's
/// index file every eighth of a 64 MiB segment.
const CHECKPOINT: u64 = 8 << 20;

fn append(store: &Store, from: u64, n: u64) {
    let mut i = from;
    while i < from + n {
        let to = (i + 1000).min(from + n);
        let writes = (i..to)
            .map(|k| {
                StreamWrite::new(
                    format!("s-{}", k % 1000),
                    ExpectedVersion::Any,
                    vec![EventData::new("E", PAYLOAD)],
                )
            })
            .collect();
        store.append_multi(writes).expect("append");
        i = to;
    }
}

/// The fill of the newest segment, as a fraction of its capacity.
fn fill(store: &Store) -> f64 {
    let head = store.head().0;
    (head % (64 << 20)) as f64 / (64u64 << 20) as f64
}

/// Appends until the newest segment is at least `target` full (a fraction), from event `next`.
fn fill_to(store: &Store, next: &mut u64, target: f64) {
    while fill(store) < target {
        append(store, *next, 1000);
        *next += 1000;
    }
}

fn open_and_read(dir: &Path) -> (Store, Duration) {
    let start = Instant::now();
    let store = Store::open(dir, Options::default()).expect("open");
    let e = store
        .read_stream_forward("s-7", 0, 1)
        .expect("read")
        .next()
        .expect("an event")
        .expect("event");
    black_box(e);
    (store, start.elapsed())
}

/// In a child: `kill` appends just under a checkpoint's worth past the closed store's end and
/// aborts; `open` opens, reads, prints the time in ns and exits without closing.
fn child(dir: &str, mode: &str) {
    let dir = Path::new(dir);
    match mode {
        "kill" => {
            let store = Store::open(dir, Options::default()).expect("open");
            let start = store.head().0;
            let mut next = 0;
            // Batches of 100 events (about 15 KB): stop one batch short of the checkpoint.
            while store.head().0 + 32 * 1024 < start + CHECKPOINT {
                let writes = (0..100)
                    .map(|k| {
                        StreamWrite::new(
                            format!("s-{}", (next + k) % 1000),
                            ExpectedVersion::Any,
                            vec![EventData::new("E", PAYLOAD)],
                        )
                    })
                    .collect();
                store.append_multi(writes).expect("append");
                next += 100;
            }
            std::process::abort();
        }
        _ => {
            let (_store, took) = open_and_read(dir);
            println!("{}", took.as_nanos());
            std::process::exit(0);
        }
    }
}

fn run_child(dir: &Path, mode: &str) -> Option<Duration> {
    let out = Command::new(std::env::current_exe().expect("exe"))
        .env(CHILD_ENV, dir)
        .env(CHILD_MODE_ENV, mode)
        .output()
        .expect("child");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().ok().map(Duration::from_nanos)
}

fn main() {
    if let (Ok(dir), Ok(mode)) = (std::env::var(CHILD_ENV), std::env::var(CHILD_MODE_ENV)) {
        child(&dir, &mode);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let mut sizes = vec![("1m", 1_000_000u64), ("10m", 10_000_000)];
    if std::env::var("EVJ_OPEN_100M").is_ok() {
        sizes.push(("100m", 100_000_000));
    }
    for (label, n) in sizes {
        let tmp = TempDir::new().expect("tempdir");
        let store = Store::open(tmp.path(), Options::default()).expect("open");
        // N events, then up to the first shape: the newest segment 2% full.
        append(&store, 0, n);
        let mut next = n;
        store.close().expect("close");
        let mut group = c.benchmark_group("open_clean");
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for (shape, target) in [("empty", 0.02), ("half", 0.5), ("full", 0.98)] {
            let store = Store::open(tmp.path(), Options::default()).expect("open");
            if fill(&store) > target {
                // Into the next segment: a whole one more, then up to the target.
                fill_to(&store, &mut next, 0.99);
                while fill(&store) > target {
                    append(&store, next, 1000);
                    next += 1000;
                }
            }
            fill_to(&store, &mut next, target);
            let events = next;
            store.close().expect("close");
            group.bench_function(format!("{label}_{shape}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let (store, took) = open_and_read(tmp.path());
                        total += took;
                        store.close().expect("close");
                    }
                    total
                });
            });
            eprintln!(
                "{label}_{shape}: {events} events, newest segment {:.0}% full",
                target * 100.0
            );
        }
        group.finish();

        // The store as a kill -9 leaves it: from the half shape's successor (the full one) would
        // roll a segment; start from a closed store with room for a checkpoint's worth.
        let store = Store::open(tmp.path(), Options::default()).expect("open");
        if fill(&store) > 0.8 {
            fill_to(&store, &mut next, 0.99);
            while fill(&store) > 0.5 {
                append(&store, next, 1000);
                next += 1000;
            }
        }
        store.close().expect("close");
        assert!(
            run_child(tmp.path(), "kill").is_none(),
            "the killed child reported"
        );
        let mut group = c.benchmark_group("open_killed");
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| run_child(tmp.path(), "open").expect("open time"))
                    .sum()
            });
        });
        group.finish();
    }
    c.final_summary();
}
