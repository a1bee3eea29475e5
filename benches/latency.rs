//! Tail latency: HDR histograms of appends (`Durability::Sync` and `Durability::None`), of the
//! replay of a 1,000-event stream, and of subscription delivery, with stream popularity
//! Zipf-distributed (exponent 0.99, as YCSB and the public event-store benchmarks use: a few
//! streams take most of the traffic, most streams are rarely touched). A plain `main` with its
//! own timing; prints p50, p90, p99, p99.9 and max of each workload in microseconds and writes
//! the rows as JSON lines to `target/latency.json`.
//!
//! - `append_sync`, `append_none`: `EVJ_LAT_WRITERS` threads (default 4) append one 100-byte
//!   event per call to a stream drawn from the Zipf distribution over `EVJ_LAT_STREAMS` streams
//!   (default 10,000), with `ExpectedVersion::Any`, for `EVJ_LAT_SECS` seconds (default 5) on a
//!   fresh store; one sample per append call.
//! - `replay_1000`: a store of 1,000 streams of 1,000 events each (1,000,000 events, built
//!   with `Durability::None` in batches of one event per stream, so every stream's events are
//!   spread over the whole log); one thread replays whole streams drawn from the Zipf
//!   distribution over the 1,000 with `replay_stream`, summing their data lengths, for
//!   `EVJ_LAT_SECS` seconds after one untimed pass; one sample per replay.
//! - `delivery_sync`: the `append_sync` workload with a `$all` subscriber (`AllFrom::End`) on
//!   its own thread, blocked in `recv_timeout`; each event carries in its first eight bytes the
//!   nanoseconds from a shared clock's start at which its `append` was called, and the sample is
//!   the time from that to `recv_timeout` returning it.
//!
//! ```sh
//! cargo bench --bench latency
//! EVJ_LAT_SECS=10 EVJ_LAT_WRITERS=16 cargo bench --bench latency
//! ```

#[path = "common/env.rs"]
mod env;
#[path = "common/rng.rs"]
mod rng;
use env::env;
use rng::Rng;

use std::io::Write;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use eventjournal::{
    AllFrom, Durability, EventData, ExpectedVersion, Options, Store, StreamWrite, SubscriptionItem,
};
use hdrhistogram::Histogram;
use tempfile::TempDir;

const PAYLOAD_LEN: usize = 100;
/// Zipf exponent: YCSB's default.
const ZIPF_EXPONENT: f64 = 0.99;
const REPLAY_STREAMS: usize = 1000;
const REPLAY_EVENTS: usize = 1000;

/// A generator per thread, seeded apart: a shared one would add contention to what is timed.
fn rng(seed: u64) -> Rng {
    Rng(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D))
}

/// Ranks `0..n` drawn with probability proportional to `1 / (rank + 1)^s`, by a search of the
/// cumulative distribution.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    fn draw(&self, rng: &mut Rng) -> usize {
        let u = rng.below(1 << 53) as f64 / (1u64 << 53) as f64;
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

fn histogram() -> Histogram<u64> {
    // Nanoseconds from 1 ns to one minute, three significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// One row of the table.
struct Row {
    name: String,
    shape: String,
    h: Histogram<u64>,
    seconds: f64,
}

/// The columns after the name: their JSON keys, in table order.
const COLUMNS: [&str; 7] = [
    "samples",
    "per_second",
    "p50_us",
    "p90_us",
    "p99_us",
    "p999_us",
    "max_us",
];

impl Row {
    /// The row's figures, in the order of [`COLUMNS`].
    fn figures(&self) -> [f64; 7] {
        let us = |q: f64| self.h.value_at_quantile(q) as f64 / 1000.0;
        [
            self.h.len() as f64,
            self.h.len() as f64 / self.seconds,
            us(0.5),
            us(0.9),
            us(0.99),
            us(0.999),
            self.h.max() as f64 / 1000.0,
        ]
    }

    fn print(&self) {
        let f = self.figures();
        println!(
            "{:<14} {:>9} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.1}  {}",
            self.name, f[0], f[1], f[2], f[3], f[4], f[5], f[6], self.shape
        );
    }

    fn json(&self) -> String {
        let fields: Vec<String> = COLUMNS
            .iter()
            .zip(self.figures())
            .map(|(k, v)| format!("\"{k}\":{v:.1}"))
            .collect();
        format!("{{\"name\":\"{}\",{}}}", self.name, fields.join(","))
    }
}

/// `writers` threads appending to Zipf-drawn streams for `secs`; each event's first eight bytes
/// are the nanoseconds since `clock` at which its append was called. Returns the append
/// latencies and the seconds the appends ran.
fn append_zipf(
    store: &Arc<Store>,
    writers: usize,
    streams: usize,
    secs: f64,
    clock: Instant,
) -> (Histogram<u64>, f64) {
    let zipf = Arc::new(Zipf::new(streams, ZIPF_EXPONENT));
    let names: Arc<Vec<String>> = Arc::new((0..streams).map(|s| format!("acct-{s}")).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(writers + 1));
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (store, zipf, names, stop, barrier) = (
                store.clone(),
                zipf.clone(),
                names.clone(),
                stop.clone(),
                barrier.clone(),
            );
            std::thread::spawn(move || {
                let mut rng = rng(w as u64 + 1);
                let mut h = histogram();
                let mut data = [0x5au8; PAYLOAD_LEN];
                barrier.wait();
                while !stop.load(Ordering::Relaxed) {
                    let stream = &names[zipf.draw(&mut rng)];
                    let start = Instant::now();
                    data[..8].copy_from_slice(&nanos(start - clock).to_le_bytes());
                    store
                        .append(
                            stream,
                            ExpectedVersion::Any,
                            [EventData::new("Deposited", data.to_vec())],
                        )
                        .expect("append");
                    h.saturating_record(nanos(start.elapsed()));
                }
                h
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut total = histogram();
    for h in handles {
        total.add(h.join().expect("appender")).expect("same bounds");
    }
    (total, start.elapsed().as_secs_f64())
}

fn open(dir: &Path, durability: Durability) -> Arc<Store> {
    Arc::new(Store::open(dir, Options::default().durability(durability)).expect("open"))
}

fn appends(durability: Durability, name: &str, writers: usize, streams: usize, secs: f64) -> Row {
    let tmp = TempDir::new().expect("tempdir");
    let store = open(tmp.path(), durability);
    let (h, seconds) = append_zipf(&store, writers, streams, secs, Instant::now());
    Row {
        name: name.into(),
        shape: format!("{writers} writers, Zipf over {streams} streams, one event per append"),
        h,
        seconds,
    }
}

fn delivery(writers: usize, streams: usize, secs: f64) -> Row {
    let tmp = TempDir::new().expect("tempdir");
    let store = open(tmp.path(), Durability::Sync);
    let clock = Instant::now();
    let mut sub = store
        .subscribe_to_all(AllFrom::End, None)
        .expect("subscribe");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut h = histogram();
            loop {
                match sub.recv_timeout(Duration::from_millis(50)).expect("recv") {
                    Some(SubscriptionItem::Event(e)) => {
                        let sent = e
                            .data()
                            .get(..8)
                            .and_then(|b| b.try_into().ok())
                            .map_or(0, u64::from_le_bytes);
                        h.saturating_record(nanos(clock.elapsed()).saturating_sub(sent));
                    }
                    Some(SubscriptionItem::Checkpoint(_)) => {}
                    None if stop.load(Ordering::Relaxed) => return h,
                    None => {}
                }
            }
        })
    };
    let (_, seconds) = append_zipf(&store, writers, streams, secs, clock);
    stop.store(true, Ordering::Relaxed);
    let h = reader.join().expect("subscriber");
    Row {
        name: "delivery_sync".into(),
        shape: format!(
            "append call to $all subscriber, {writers} writers, Zipf over {streams} streams"
        ),
        h,
        seconds,
    }
}

fn replay(secs: f64) -> Row {
    let tmp = TempDir::new().expect("tempdir");
    let store = open(tmp.path(), Durability::None);
    let names: Vec<String> = (0..REPLAY_STREAMS).map(|s| format!("acct-{s}")).collect();
    for _ in 0..REPLAY_EVENTS {
        let writes = names
            .iter()
            .map(|n| {
                StreamWrite::new(
                    n.clone(),
                    ExpectedVersion::Any,
                    vec![EventData::new("Deposited", [0x5au8; PAYLOAD_LEN])],
                )
            })
            .collect();
        store.append_multi(writes).expect("append");
    }
    store.flush().expect("flush");
    let fold = |name: &str| {
        let mut sum = 0u64;
        let n = store
            .replay_stream(name, 0, |e| {
                sum += e.data().len() as u64;
                ControlFlow::Continue(())
            })
            .expect("replay");
        assert_eq!(n as usize, REPLAY_EVENTS, "a whole stream");
        std::hint::black_box(sum);
    };
    for n in &names {
        fold(n);
    }
    let zipf = Zipf::new(REPLAY_STREAMS, ZIPF_EXPONENT);
    let mut rng = rng(7);
    let mut h = histogram();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let name = &names[zipf.draw(&mut rng)];
        let t = Instant::now();
        fold(name);
        h.saturating_record(nanos(t.elapsed()));
    }
    Row {
        name: "replay_1000".into(),
        shape: format!(
            "whole stream of {REPLAY_EVENTS} events, Zipf over {REPLAY_STREAMS} streams of an interleaved 1M-event log"
        ),
        h,
        seconds: start.elapsed().as_secs_f64(),
    }
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let secs = env("EVJ_LAT_SECS", 5) as f64;
    let writers = env("EVJ_LAT_WRITERS", 4).max(1) as usize;
    let streams = env("EVJ_LAT_STREAMS", 10_000).max(1) as usize;
    println!(
        "{:<14} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10}  shape (latencies in µs)",
        "workload", "samples", "per s", "p50", "p90", "p99", "p99.9", "max"
    );
    let mut rows = Vec::new();
    let mut run = |name: &str, f: &dyn Fn() -> Row| {
        if wanted(name) {
            let row = f();
            row.print();
            rows.push(row);
        }
    };
    run("append_sync", &|| {
        appends(Durability::Sync, "append_sync", writers, streams, secs)
    });
    run("append_none", &|| {
        appends(Durability::None, "append_none", writers, streams, secs)
    });
    run("replay_1000", &|| replay(secs));
    run("delivery_sync", &|| delivery(writers, streams, secs));
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/latency.json");
    if let Ok(mut f) = std::fs::File::create(&out) {
        for r in &rows {
            let _ = writeln!(f, "{}", r.json());
        }
    }
}
