//! The peers workloads (`benches/peers.rs` of the main crate) on the PostgreSQL backend beside
//! the embedded store, in one process, one after the other: events per second, the median of
//! `RUNS` runs, each on a fresh directory or schema, and the ratio.
//!
//! `EVJ_PG_URL=... cargo bench -p eventjournal-postgres --bench peers_pg` (all workloads);
//! `-- replay` runs those whose name contains `replay`. Without `EVJ_PG_URL` it prints a note and
//! measures nothing.
//!
//! Every event has a 100-byte payload and the type `Deposited`. Both sides are durable where the
//! workload says `sync`: the embedded store with `Durability::Sync` (fdatasync, group commit),
//! PostgreSQL with its defaults (`synchronous_commit = on`, `fsync = on`: each commit waits for
//! its WAL flush). Reads are warm: one untimed read, then `READ_REPEATS` timed ones.

use std::hint::black_box;
use std::ops::ControlFlow;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use eventjournal::{Durability, EventData, ExpectedVersion, Options, Position, Store, StreamWrite};
use eventjournal_postgres::{PgOptions, PgStore};

const RUNS: usize = 3;
const READ_REPEATS: usize = 5;
const PAYLOAD: [u8; 100] = [0x5a; 100];
const TYPE: &str = "Deposited";

/// Events handled and the seconds they took.
type Timed = (u64, f64);

/// Something to append to and read from: either backend.
trait Engine: Send + Sync + 'static {
    fn append(&self, stream: &str, expected: ExpectedVersion, events: Vec<EventData>) -> u64;
    fn append_multi(&self, writes: Vec<StreamWrite>);
    fn replay(&self, stream: &str) -> u64;
    fn read_all(&self) -> u64;
}

impl Engine for Store {
    fn append(&self, stream: &str, expected: ExpectedVersion, events: Vec<EventData>) -> u64 {
        Store::append(self, stream, expected, events)
            .expect("append")
            .version
            .expect("a version")
    }
    fn append_multi(&self, writes: Vec<StreamWrite>) {
        Store::append_multi(self, writes).expect("append");
    }
    fn replay(&self, stream: &str) -> u64 {
        self.replay_stream(stream, 0, |e| {
            black_box(e.data());
            ControlFlow::Continue(())
        })
        .expect("replay")
    }
    fn read_all(&self) -> u64 {
        self.replay_all(Position::START, |e| {
            black_box(e.data());
            ControlFlow::Continue(())
        })
        .expect("replay")
    }
}

/// Pages of reads on PostgreSQL.
const PAGE: usize = 4096;

impl Engine for PgStore {
    fn append(&self, stream: &str, expected: ExpectedVersion, events: Vec<EventData>) -> u64 {
        PgStore::append(self, stream, expected, events)
            .expect("append")
            .version
            .expect("a version")
    }
    fn append_multi(&self, writes: Vec<StreamWrite>) {
        PgStore::append_multi(self, writes).expect("append");
    }
    fn replay(&self, stream: &str) -> u64 {
        let (mut n, mut from) = (0, 0);
        loop {
            let page = self.read_stream_forward(stream, from, PAGE).expect("read");
            for e in &page {
                black_box(e.data());
            }
            n += page.len() as u64;
            match page.last() {
                Some(e) if page.len() == PAGE => from = e.event_number() + 1,
                _ => return n,
            }
        }
    }
    fn read_all(&self) -> u64 {
        let (mut n, mut at) = (0, Position::START);
        loop {
            let page = self.read_all_forward(at, PAGE).expect("read");
            for e in &page {
                black_box(e.data());
            }
            n += page.len() as u64;
            match page.last() {
                Some(e) => at = e.next_position(),
                None => return n,
            }
        }
    }
}

fn event() -> EventData {
    EventData::new(TYPE, &PAYLOAD[..])
}

/// `batches` appends of `size` events to one stream, with exact expected versions.
fn append_one_stream(e: &dyn Engine, batches: u64, size: u64) -> Timed {
    let start = Instant::now();
    let mut expected = ExpectedVersion::NoStream;
    for _ in 0..batches {
        let v = e.append("account-1", expected, (0..size).map(|_| event()).collect());
        expected = ExpectedVersion::Exact(v);
    }
    (batches * size, start.elapsed().as_secs_f64())
}

/// `threads` threads, each appending `per_thread` single events to its own stream.
fn append_threads(e: Arc<dyn Engine>, threads: usize, per_thread: u64) -> Timed {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (e, barrier) = (e.clone(), barrier.clone());
            std::thread::spawn(move || {
                let stream = format!("account-{t}");
                let mut expected = ExpectedVersion::NoStream;
                barrier.wait();
                for _ in 0..per_thread {
                    expected = ExpectedVersion::Exact(e.append(&stream, expected, vec![event()]));
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().expect("appender");
    }
    (threads as u64 * per_thread, start.elapsed().as_secs_f64())
}

/// Fills `streams` streams, `per_stream` events each: one stream in batches of 1,000 events;
/// several round-robin, each round one multi-stream batch with an event for every stream.
fn fill(e: &dyn Engine, streams: u64, per_stream: u64) {
    if streams == 1 {
        let mut expected = ExpectedVersion::NoStream;
        for _ in 0..per_stream / 1000 {
            let v = e.append("account-0", expected, (0..1000).map(|_| event()).collect());
            expected = ExpectedVersion::Exact(v);
        }
    } else {
        for _ in 0..per_stream {
            e.append_multi(
                (0..streams)
                    .map(|s| {
                        StreamWrite::new(
                            format!("account-{s}"),
                            ExpectedVersion::Any,
                            vec![event()],
                        )
                    })
                    .collect(),
            );
        }
    }
}

fn warm(mut read: impl FnMut() -> u64) -> Timed {
    black_box(read());
    let start = Instant::now();
    let n: u64 = (0..READ_REPEATS).map(|_| read()).sum();
    (n, start.elapsed().as_secs_f64())
}

struct Workload {
    name: &'static str,
    run: fn(Arc<dyn Engine>) -> Timed,
    /// The embedded store's durability for it.
    durability: Durability,
}

fn workloads() -> Vec<Workload> {
    vec![
        Workload {
            name: "append_batch1_sync_1thread",
            run: |e| append_one_stream(&*e, 1_000, 1),
            durability: Durability::Sync,
        },
        Workload {
            name: "append_batch100_sync",
            run: |e| append_one_stream(&*e, 100, 100),
            durability: Durability::Sync,
        },
        Workload {
            name: "append_batch1_sync_16threads",
            run: |e| append_threads(e, 16, 200),
            durability: Durability::Sync,
        },
        Workload {
            name: "replay_contiguous_100k",
            run: |e| {
                fill(&*e, 1, 100_000);
                warm(|| e.replay("account-0"))
            },
            durability: Durability::None,
        },
        Workload {
            name: "replay_interleaved_100_of_100k",
            run: |e| {
                fill(&*e, 1000, 100);
                warm(|| e.replay("account-50"))
            },
            durability: Durability::None,
        },
        Workload {
            name: "read_all_100k",
            run: |e| {
                fill(&*e, 1, 100_000);
                warm(|| e.read_all())
            },
            durability: Durability::None,
        },
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let Ok(url) = std::env::var("EVJ_PG_URL") else {
        println!("note: EVJ_PG_URL is not set; peers_pg measures nothing");
        return;
    };
    // `cargo bench` passes `--bench`; any other argument filters workloads by name.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    println!(
        "{:<32} {:>14} {:>14} {:>9}",
        "workload (events/s)", "embedded", "postgresql", "emb/pg"
    );
    for w in workloads() {
        if !filter.is_empty() && !filter.iter().any(|f| w.name.contains(f.as_str())) {
            continue;
        }
        let (mut emb, mut pg) = (Vec::new(), Vec::new());
        for run in 0..RUNS {
            let dir = tempfile::tempdir().expect("temp dir");
            let store =
                Store::open(dir.path(), Options::default().durability(w.durability)).expect("open");
            let store: Arc<Store> = Arc::new(store);
            let (n, secs) = (w.run)(store.clone());
            emb.push(n as f64 / secs);
            store.close().expect("close");

            let schema = format!("bench_{}_{run}", std::process::id());
            let pg_store = PgStore::open(&url, PgOptions::default().schema(&schema).pool_size(16))
                .expect("open PostgreSQL");
            let (n, secs) = (w.run)(Arc::new(pg_store));
            pg.push(n as f64 / secs);
            PgStore::drop_schema(&url, &schema).expect("drop schema");
        }
        let (e, p) = (median(emb), median(pg));
        println!("{:<32} {:>14.0} {:>14.0} {:>8.1}x", w.name, e, p, e / p);
    }
}
