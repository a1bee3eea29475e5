//! One workload in a loop, for profilers: `perf record -g target/release/examples/workload replay`.
//!
//! ```text
//! cargo build --release --example workload
//! target/release/examples/workload <mode> [seconds]
//! ```
//!
//! Modes (100-byte payloads, event type `Deposited`; the store is in a temporary directory):
//!
//! - `replay` — `replay_stream` over one stream of 100,000 events, again and again;
//! - `replay-iter` — the same through `read_stream_forward`;
//! - `replay-interleaved` — `replay_stream` over one stream of 1,000 events among 1,000,000;
//! - `all` — `replay_all` over those 1,000,000 events;
//! - `all-iter` — the same through `read_all_forward`;
//! - `append` — one-event appends with `Durability::None` and exact expected versions;
//! - `append-sync-100` — 100-event appends with `Durability::Sync`;
//! - `sync-threads-N` — N threads, each appending one event at a time with `Sync` to its own
//!   stream;
//! - `activate` — journaled actors: 5,000 accounts of 60 events each, interleaved in the log;
//!   every actor deactivated and activated again through a `Host`, again and again.
//!
//! It prints the events per second it reached.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use std::sync::Arc;

use eventjournal::journal::{Host, Journal, JournalEvent, JournalState, Rejected};
use eventjournal::{Durability, EventData, ExpectedVersion, Options, Position, Store, StreamWrite};

const PAYLOAD: [u8; 100] = [0x5a; 100];
const TYPE: &str = "Deposited";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "replay".into());
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let run_for = Duration::from_secs(seconds);
    if mode == "activate" {
        return activate(run_for);
    }
    let dir = tempfile::tempdir()?;
    let durability = if mode.starts_with("append-sync") || mode.starts_with("sync-threads") {
        Durability::Sync
    } else {
        Durability::None
    };
    let store = Store::open(dir.path(), Options::default().durability(durability))?;
    match mode.as_str() {
        "replay" | "replay-iter" => fill(&store, 1, 100_000)?,
        "replay-interleaved" | "all" | "all-iter" => fill(&store, 1_000, 1_000)?,
        _ => {}
    }
    let start = Instant::now();
    let mut events = 0u64;
    let mut bytes = 0usize;
    while start.elapsed() < run_for {
        match mode.as_str() {
            "replay" | "replay-interleaved" => {
                let stream = if mode == "replay" {
                    "account-0"
                } else {
                    "account-500"
                };
                events += store.replay_stream(stream, 0, |e| {
                    bytes += e.data().len();
                    ControlFlow::Continue(())
                })?;
            }
            "replay-iter" => {
                for e in store.read_stream_forward("account-0", 0, usize::MAX)? {
                    bytes += e?.data().len();
                    events += 1;
                }
            }
            "all" => {
                events += store.replay_all(Position::START, |e| {
                    bytes += e.data().len();
                    ControlFlow::Continue(())
                })?;
            }
            "all-iter" => {
                for e in store.read_all_forward(Position::START, usize::MAX)? {
                    bytes += e?.data().len();
                    events += 1;
                }
            }
            "append" | "append-sync-100" => {
                let size = if mode == "append" { 1 } else { 100 };
                let stream = format!("account-{events}");
                let mut expected = ExpectedVersion::NoStream;
                for _ in 0..1_000 {
                    let batch = (0..size).map(|_| EventData::new(TYPE, &PAYLOAD[..]));
                    expected = store
                        .append(&stream, expected, batch)?
                        .next_expected_version();
                    events += size;
                }
            }
            m if m.starts_with("sync-threads-") => {
                let threads: u64 = m["sync-threads-".len()..].parse()?;
                let per_thread = 1_000;
                std::thread::scope(|scope| {
                    for t in 0..threads {
                        let store = &store;
                        let stream = format!("account-{events}-{t}");
                        scope.spawn(move || {
                            let mut expected = ExpectedVersion::NoStream;
                            for _ in 0..per_thread {
                                expected = store
                                    .append(&stream, expected, [EventData::new(TYPE, &PAYLOAD[..])])
                                    .expect("append")
                                    .next_expected_version();
                            }
                        });
                    }
                });
                events += threads * per_thread;
            }
            other => return Err(format!("unknown mode `{other}`").into()),
        }
    }
    std::hint::black_box(bytes);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{mode}: {:.0} events/s ({events} events in {secs:.1} s)",
        events as f64 / secs
    );
    store.close()?;
    Ok(())
}

/// `streams` streams `account-{i}` of `per_stream` events each, one event per stream per batch.
fn fill(store: &Store, streams: u64, per_stream: u64) -> eventjournal::Result<()> {
    let names: Vec<String> = (0..streams).map(|s| format!("account-{s}")).collect();
    for _ in 0..per_stream {
        for chunk in names.chunks(10_000) {
            let writes = chunk
                .iter()
                .map(|n| {
                    StreamWrite::new(
                        n.clone(),
                        ExpectedVersion::Any,
                        vec![EventData::new(TYPE, &PAYLOAD[..])],
                    )
                })
                .collect();
            store.append_multi(writes)?;
        }
    }
    Ok(())
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum Moved {
    In(u64),
    Out(u64),
}

impl JournalEvent for Moved {
    fn event_type(&self) -> &'static str {
        match self {
            Moved::In(_) => "Deposited",
            Moved::Out(_) => "Withdrawn",
        }
    }
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Balance(u64);

impl JournalState for Balance {
    type Event = Moved;
    type Error = Rejected;
    const TYPE: &'static str = "account";
    fn apply(&mut self, e: &Moved) -> Result<(), Rejected> {
        match *e {
            Moved::In(n) => self.0 += n,
            Moved::Out(n) if n <= self.0 => self.0 -= n,
            Moved::Out(_) => return Err(Rejected::new("would overdraw")),
        }
        Ok(())
    }
}

/// The `activate` mode.
fn activate(run_for: Duration) -> Result<(), Box<dyn std::error::Error>> {
    const ACTORS: u64 = 5_000;
    const EVENTS: u64 = 60;
    let dir = tempfile::tempdir()?;
    let store = Arc::new(Store::open(
        dir.path(),
        Options::default().durability(Durability::None),
    )?);
    let host = Host::new(store.clone(), Arc::new(Journal::<Balance>::new()), 10_000);
    for round in 0..EVENTS {
        for n in 0..ACTORS {
            host.call(&n.to_string(), |a| -> eventjournal::Result<_> {
                a.raise_event(Moved::In(round + n))?;
                a.confirm_events()
            })?;
        }
    }
    let ids: Vec<String> = (0..ACTORS).map(|n| n.to_string()).collect();
    let start = Instant::now();
    let mut activations = 0u64;
    let mut total = 0u64;
    while start.elapsed() < run_for {
        host.deactivate_all();
        for id in &ids {
            total =
                total.wrapping_add(host.call(id, |a| Ok::<_, eventjournal::Error>(a.state().0))?);
        }
        activations += ACTORS;
    }
    std::hint::black_box(total);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "activate: {:.0} activations/s, {:.0} events/s ({activations} activations of {EVENTS} events in {secs:.1} s)",
        activations as f64 / secs,
        (activations * EVENTS) as f64 / secs
    );
    Ok(())
}
