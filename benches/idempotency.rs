//! `Any` appends against `Exact` appends as a store grows: the cost of recognising a retry (the
//! event-id index) must not grow with the log.
//!
//! Three shapes, each written four times in the same run (twice with `Exact` expected versions,
//! twice with `Any`, in the order Exact, Any, Any, Exact) into fresh stores on the same disk,
//! `Durability::None`, 100-byte payloads:
//! - `streams-1k`: batches of 100 events to a random stream among 1,000;
//! - `one-stream`: batches of 100 events to a single stream;
//! - `many-streams`: batches of one event to a random stream among `EVJ_IDEMP_STREAMS`
//!   (default 10M), so that most appends go to a stream with a few events in a large store.
//!
//! ```sh
//! cargo bench --bench idempotency                       # 2M events per shape
//! EVJ_IDEMP_EVENTS=100000000 cargo bench --bench idempotency -- streams-1k
//! ```
//!
//! Prints, for each shape and each tenth of the run, events per second with `Exact` and with
//! `Any`, and their ratio; then the whole run's.

#[path = "common/rng.rs"]
mod rng;

use rng::Rng;
use std::time::Instant;

use eventjournal::{Durability, EventData, ExpectedVersion, Options, Store};

const PAYLOAD: &[u8] = &[b'x'; 100];

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Shape {
    name: &'static str,
    streams: u64,
    batch: u64,
}

/// Appends `total` events in `shape`, with `Any` or with exact versions; returns the seconds each
/// tenth took.
fn run(shape: &Shape, total: u64, any: bool) -> Vec<f64> {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temporary directory");
    let store =
        Store::open(dir.path(), Options::default().durability(Durability::None)).expect("open");
    // Versions known to the writer, for `Exact` (a stream's last event number, plus one).
    let mut next: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let batches = total / shape.batch;
    let tenth = (batches / 10).max(1);
    let mut times = Vec::new();
    let mut started = Instant::now();
    for b in 0..batches {
        let s = rng.below(shape.streams);
        let name = format!("stream-{s}");
        let events: Vec<EventData> = (0..shape.batch)
            .map(|_| EventData::new("Appended", PAYLOAD))
            .collect();
        let expected = if any {
            ExpectedVersion::Any
        } else {
            match next.get(&s) {
                None => ExpectedVersion::NoStream,
                Some(&n) => ExpectedVersion::Exact(n - 1),
            }
        };
        let r = store.append(&name, expected, events).expect("append");
        if !any {
            next.insert(s, r.version.map_or(0, |v| v + 1));
        }
        if (b + 1) % tenth == 0 {
            times.push(started.elapsed().as_secs_f64());
            started = Instant::now();
        }
    }
    store.close().expect("close");
    times
}

fn main() {
    let total = env("EVJ_IDEMP_EVENTS", 2_000_000);
    let many = env("EVJ_IDEMP_STREAMS", 10_000_000);
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let shapes = [
        Shape {
            name: "streams-1k",
            streams: 1_000,
            batch: 100,
        },
        Shape {
            name: "one-stream",
            streams: 1,
            batch: 100,
        },
        Shape {
            name: "many-streams",
            streams: many,
            batch: 1,
        },
    ];
    for shape in &shapes {
        if !filter.is_empty() && !filter.iter().any(|f| shape.name.contains(f.as_str())) {
            continue;
        }
        // Each kind twice, in the order Exact, Any, Any, Exact: the disk's write-back of one
        // run slows the next, and this order gives both kinds the same share of it.
        let mut exact = run(shape, total, false);
        let mut any = run(shape, total, true);
        for (e, a) in any.iter_mut().zip(run(shape, total, true)) {
            *e += a;
        }
        for (e, a) in exact.iter_mut().zip(run(shape, total, false)) {
            *e += a;
        }
        let per = 2.0 * (total / 10) as f64;
        println!(
            "{}: {} events in batches of {} ({} streams), Durability::None",
            shape.name, total, shape.batch, shape.streams
        );
        println!("  tenth   Exact ev/s      Any ev/s   Any/Exact");
        for (i, (e, a)) in exact.iter().zip(&any).enumerate() {
            println!(
                "  {:>5}  {:>11.0}  {:>12.0}   {:>9.2}",
                i + 1,
                per / e,
                per / a,
                e / a
            );
        }
        let (te, ta): (f64, f64) = (exact.iter().sum(), any.iter().sum());
        println!(
            "  whole  {:>11.0}  {:>12.0}   {:>9.2}",
            2.0 * total as f64 / te,
            2.0 * total as f64 / ta,
            te / ta
        );
    }
}
