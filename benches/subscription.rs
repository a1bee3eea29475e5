//! Catch-up subscriptions (`Store::subscribe_to_all`, `subscribe_to_stream`,
//! `subscribe_to_category`) against each other and against the plain reads they compete with. A
//! plain `main` with its own timing, since latency percentiles are wanted. Prints a table, and
//! writes its rows as JSON lines to `target/subscription.json`.
//!
//! `cargo bench --bench subscription` runs everything (under a minute);
//! `cargo bench --bench subscription -- <filter>` runs the rows whose name contains `<filter>`,
//! plus the baseline row of their group, which the ratios need: `-- latency` (part 1),
//! `-- catchup` (part 2), `-- category` or `-- event_type` (part 3), `-- _sync` or `-- _none`
//! (the latency rows of one durability mode). Flags such as `--bench` are ignored.
//!
//! Every event has a 100-byte payload and a random id (`EventData::new`). Stores live in
//! temporary directories.
//!
//! 1. `latency_*`: append-to-delivery latency of a live subscriber. One thread appends one event at
//!    a time to the stream `lat-1` (expected version exact), recording `Instant::now()` just before
//!    each `append`; the event's index is in the first eight bytes of its data. A subscriber
//!    thread blocked in `recv_timeout` receives each event and records when `recv_timeout`
//!    returned it; latency = delivery − append start. The appender is paced so that queueing
//!    cannot dominate: before each append it waits until the previous event has been delivered
//!    (spinning with `yield_now`), then sleeps `PAUSE` (50 µs; about 0.1 ms with the kernel's
//!    timer slack), so the subscriber is back asleep in `recv_timeout` when the event comes.
//!    Subscribers: `$all` from `AllFrom::End` (`latency_all_*`) and the stream `lat-1` from
//!    `StreamFrom::Start` (`latency_stream_*`), each with `Durability::Sync` and
//!    `Durability::None`. `latency_append_alone_*` makes the same appends, paced by the same sleep,
//!    with no subscriber: the duration of `append` alone, the baseline from which the delivery
//!    overhead is read (column `over alone`: p50 of the row − p50 of append alone). Each run is a
//!    fresh store: 200 warm-up events, then `LATENCY_EVENTS` (5,000) measured ones; p50, p99 and
//!    max are nearest-rank over the run's 5,000 samples, and the table shows the median of
//!    `LATENCY_RUNS` (5) runs of each. `append p50` is the p50 of the appends themselves in the
//!    same runs (with a subscriber waiting, an append also wakes it).
//!
//! 2. `catchup_*`: catch-up throughput over a store of 1,000,000 events (1,000 streams of 1,000
//!    events, built with `Durability::None` in 1,000 `append_multi` batches of one event per
//!    stream): a `$all` subscription from `AllFrom::Start` drained with `try_recv` until it
//!    returns `None` (`catchup_subscription_all`), `Store::replay_all` from the start (borrowed
//!    events handed to a closure; the baseline), and the `read_all_forward` iterator of owned
//!    events. Each reads every event and sums the lengths of their data.
//!
//! 3. `category_*` and `event_type_*`: the same store; its streams are `cat<s % 10>-<s>`, so ten
//!    categories of 100,000 events each, interleaved in `$all` (every tenth event is `cat3`), and
//!    event `n` of stream `s` has the type `TYPES[(s + n) % 10]`, ten types of 100,000 events each,
//!    spread differently. One category (`cat3`) is read through `read_category` (the category
//!    index; the baseline), through `subscribe_to_category` drained with `try_recv`, through a
//!    filtered `$all` subscription (`Filter::new().category("cat3")`) drained with `try_recv`, and
//!    through `replay_all` with a closure that keeps the events whose `category_of(stream)` is
//!    `cat3`. The same for one event type (`Withdrawn`): `read_event_type`,
//!    `subscribe_to_event_type`, `Filter::new().event_type_prefix("Withdrawn")`, and `replay_all`
//!    keeping the types that start with `Withdrawn`. Figures are events of the category (type)
//!    delivered per second — the filtered reads pass over the other 900,000 to find them.
//!
//! Parts 2 and 3 share one store, built once. They measure warm reads: after building, each row
//! reads once untimed, then `READ_RUNS` (11) times timed; the table shows the median rate, and the
//! ratio to the group's baseline row.

use std::hint::black_box;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use eventjournal::{
    category_of, AllFrom, Durability, EventData, EventRef, ExpectedVersion, Filter, Options,
    Position, RecordedEvent, Store, StreamFrom, StreamWrite, Subscription, SubscriptionItem,
};

const PAYLOAD: [u8; 100] = [0x5a; 100];
const LATENCY_TYPE: &str = "Deposited";
/// The stream the latency runs append to.
const LATENCY_STREAM: &str = "lat-1";
/// Measured events per latency run, after `WARMUP_EVENTS` unmeasured ones.
const LATENCY_EVENTS: usize = 5_000;
const WARMUP_EVENTS: usize = 200;
/// Latency runs per row, each on a fresh store: the table shows the median of each figure.
const LATENCY_RUNS: usize = 5;
/// The appender's sleep before each append (after the previous event was delivered).
const PAUSE: Duration = Duration::from_micros(50);
/// Longest a latency subscriber waits for one event before the run fails.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// Streams and events per stream of the store of parts 2 and 3.
const STREAMS: u64 = 1_000;
const PER_STREAM: u64 = 1_000;
const CATEGORIES: u64 = 10;
/// The event types of that store: event `n` of stream `s` has `TYPES[(s + n) % 10]`. No type is
/// a prefix of another.
const TYPES: [&str; 10] = [
    "Opened",
    "Deposited",
    "Withdrawn",
    "Frozen",
    "Unfrozen",
    "Renamed",
    "Audited",
    "Charged",
    "Refunded",
    "Closed",
];
/// The category and the event type part 3 reads.
const CATEGORY: &str = "cat3";
const EVENT_TYPE: &str = "Withdrawn";
/// Timed reads per throughput row, after one untimed read.
const READ_RUNS: usize = 11;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

// ----- part 1: latency ------------------------------------------------------------------------

/// Who receives the appended events in a latency run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Receiver {
    /// Nobody: appends alone.
    Nobody,
    /// A `$all` subscription from `AllFrom::End`.
    All,
    /// A subscription to `LATENCY_STREAM` from `StreamFrom::Start`.
    Stream,
}

/// Nearest-rank p50, p99 and max of `v`, in microseconds.
fn percentiles(mut v: Vec<Duration>) -> [f64; 3] {
    v.sort();
    let rank = |p: f64| {
        let k = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[k - 1].as_secs_f64() * 1e6
    };
    [rank(0.50), rank(0.99), rank(1.0)]
}

/// The measured figures of one latency run, in microseconds: p50, p99 and max of the row's
/// latency (delivery − append start, or the append alone), and p50 of the appends.
struct LatencyRun {
    row: [f64; 3],
    append_p50: f64,
}

/// A 100-byte payload whose first eight bytes are `i`, little-endian.
fn indexed_payload(i: u64) -> Vec<u8> {
    let mut p = PAYLOAD.to_vec();
    p[..8].copy_from_slice(&i.to_le_bytes());
    p
}

fn index_of(data: &[u8]) -> u64 {
    u64::from_le_bytes(data[..8].try_into().expect("an 8-byte index"))
}

/// Receives `total` events and records when each arrived; checks they come in order.
fn receive(mut sub: Subscription, total: usize, delivered: &AtomicU64) -> Vec<Instant> {
    let mut at = Vec::with_capacity(total);
    while at.len() < total {
        match sub.recv_timeout(RECV_TIMEOUT).expect("recv") {
            Some(SubscriptionItem::Event(e)) => {
                let now = Instant::now();
                assert_eq!(index_of(e.data()), at.len() as u64, "event out of order");
                at.push(now);
                delivered.store(at.len() as u64, Ordering::Release);
            }
            Some(SubscriptionItem::Checkpoint(_)) => {}
            None => panic!("no event within {RECV_TIMEOUT:?}"),
        }
    }
    at
}

/// One latency run on a fresh store.
fn latency_run(durability: Durability, receiver: Receiver) -> LatencyRun {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), Options::default().durability(durability)).expect("open");
    let total = WARMUP_EVENTS + LATENCY_EVENTS;
    let sub = match receiver {
        Receiver::Nobody => None,
        Receiver::All => Some(store.subscribe_to_all(AllFrom::End, None).expect("sub")),
        Receiver::Stream => Some(
            store
                .subscribe_to_stream(LATENCY_STREAM, StreamFrom::Start)
                .expect("sub"),
        ),
    };
    let delivered = AtomicU64::new(0);
    let (starts, appends, arrivals) = std::thread::scope(|s| {
        let subscriber = sub.map(|sub| {
            let delivered = &delivered;
            s.spawn(move || receive(sub, total, delivered))
        });
        let mut starts = Vec::with_capacity(total);
        let mut appends = Vec::with_capacity(total);
        let mut expected = ExpectedVersion::NoStream;
        for i in 0..total as u64 {
            if let Some(h) = &subscriber {
                while delivered.load(Ordering::Acquire) < i {
                    assert!(!h.is_finished(), "the subscriber stopped");
                    std::thread::yield_now();
                }
            }
            std::thread::sleep(PAUSE);
            let event = EventData::new(LATENCY_TYPE, indexed_payload(i));
            let start = Instant::now();
            let r = store
                .append(LATENCY_STREAM, expected, [event])
                .expect("append");
            appends.push(start.elapsed());
            starts.push(start);
            expected = r.next_expected_version();
        }
        let arrivals = subscriber.map(|h| h.join().expect("subscriber"));
        (starts, appends, arrivals)
    });
    store.close().expect("close");
    let appends = appends[WARMUP_EVENTS..].to_vec();
    let append_p50 = percentiles(appends.clone())[0];
    let row = match arrivals {
        None => percentiles(appends),
        Some(arrivals) => percentiles(
            starts
                .iter()
                .zip(&arrivals)
                .skip(WARMUP_EVENTS)
                .map(|(s, a)| a.duration_since(*s))
                .collect(),
        ),
    };
    LatencyRun { row, append_p50 }
}

struct LatencyRow {
    name: &'static str,
    durability: Durability,
    receiver: Receiver,
}

/// The latency groups: one per durability, the append alone first (the baseline).
fn latency_groups() -> Vec<Vec<LatencyRow>> {
    let group = |durability, names: [&'static str; 3]| {
        let receivers = [Receiver::Nobody, Receiver::All, Receiver::Stream];
        names
            .into_iter()
            .zip(receivers)
            .map(|(name, receiver)| LatencyRow {
                name,
                durability,
                receiver,
            })
            .collect()
    };
    vec![
        group(
            Durability::Sync,
            [
                "latency_append_alone_sync",
                "latency_all_sync",
                "latency_stream_sync",
            ],
        ),
        group(
            Durability::None,
            [
                "latency_append_alone_none",
                "latency_all_none",
                "latency_stream_none",
            ],
        ),
    ]
}

fn run_latency(selected: &dyn Fn(&str) -> bool, rows: &mut Vec<String>) {
    let groups: Vec<Vec<LatencyRow>> = latency_groups()
        .into_iter()
        .filter(|g| g.iter().any(|r| selected(r.name)))
        .collect();
    if groups.is_empty() {
        return;
    }
    println!(
        "\nappend-to-delivery latency, µs (median of {LATENCY_RUNS} runs of {LATENCY_EVENTS} \
         events each)"
    );
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>11} {:>11}",
        "workload", "p50", "p99", "max", "append p50", "over alone"
    );
    for group in groups {
        let mut alone_p50 = None;
        for (i, r) in group.iter().enumerate() {
            // The baseline (first) row runs whenever any row of its group does.
            if i > 0 && !selected(r.name) {
                continue;
            }
            let runs: Vec<LatencyRun> = (0..LATENCY_RUNS)
                .map(|_| latency_run(r.durability, r.receiver))
                .collect();
            let fig = |k: usize| median(runs.iter().map(|x| x.row[k]).collect());
            let (p50, p99, max) = (fig(0), fig(1), fig(2));
            let append_p50 = median(runs.iter().map(|x| x.append_p50).collect());
            let over = match (r.receiver, alone_p50) {
                (Receiver::Nobody, _) => {
                    alone_p50 = Some(p50);
                    None
                }
                (_, Some(a)) => Some(p50 - a),
                (_, None) => None,
            };
            let over_text = over.map_or("-".to_string(), |o| format!("{o:.1}"));
            println!(
                "{:<28} {p50:>9.1} {p99:>9.1} {max:>9.1} {append_p50:>11.1} {over_text:>11}",
                r.name
            );
            rows.push(format!(
                "{{\"workload\":\"{}\",\"events\":{LATENCY_EVENTS},\"runs\":{LATENCY_RUNS},\
                 \"p50_us\":{p50:.1},\"p99_us\":{p99:.1},\"max_us\":{max:.1},\
                 \"append_p50_us\":{append_p50:.1},\"p50_over_append_alone_us\":{}}}",
                r.name,
                over.map_or("null".to_string(), |o| format!("{o:.1}"))
            ));
        }
    }
}

// ----- parts 2 and 3: reads -------------------------------------------------------------------

/// The store of parts 2 and 3: `STREAMS` streams `cat<s % 10>-<s>` of `PER_STREAM` events,
/// interleaved: each `append_multi` batch appends one event to every stream.
fn fill(dir: &Path) -> Store {
    let store = Store::open(dir, Options::default().durability(Durability::None)).expect("open");
    let names: Vec<String> = (0..STREAMS)
        .map(|s| format!("cat{}-{s}", s % CATEGORIES))
        .collect();
    for round in 0..PER_STREAM {
        let expected = match round {
            0 => ExpectedVersion::NoStream,
            r => ExpectedVersion::Exact(r - 1),
        };
        let writes = names
            .iter()
            .enumerate()
            .map(|(s, name)| {
                let event_type = TYPES[(s + round as usize) % TYPES.len()];
                let event = EventData::new(event_type, &PAYLOAD[..]);
                StreamWrite::new(name.clone(), expected, vec![event])
            })
            .collect();
        store.append_multi(writes).expect("fill");
    }
    store
}

/// A read: the events it delivered, having summed the lengths of their data.
type Read = fn(&Store) -> u64;

struct ReadRow {
    name: &'static str,
    read: Read,
}

struct ReadGroup {
    title: &'static str,
    /// Events every read of the group delivers.
    events: u64,
    /// Index of the row the others are compared with.
    baseline: usize,
    rows: Vec<ReadRow>,
}

/// Drains a subscription with `try_recv` until it returns `None`: the events it delivered.
fn drain(mut sub: Subscription) -> u64 {
    let (mut n, mut sum) = (0u64, 0u64);
    while let Some(item) = sub.try_recv().expect("subscription") {
        if let SubscriptionItem::Event(e) = item {
            sum += e.data().len() as u64;
            n += 1;
        }
    }
    black_box(sum);
    n
}

/// The events of `events` summed as the other reads do.
fn count(events: impl Iterator<Item = eventjournal::Result<RecordedEvent>>) -> u64 {
    let (mut n, mut sum) = (0u64, 0u64);
    for e in events {
        sum += e.expect("event").data().len() as u64;
        n += 1;
    }
    black_box(sum);
    n
}

/// `replay_all` from the start, keeping the events `keep` accepts.
fn replay_keeping(store: &Store, keep: impl Fn(&EventRef<'_>) -> bool) -> u64 {
    let (mut n, mut sum) = (0u64, 0u64);
    store
        .replay_all(Position::START, |e| {
            if keep(e) {
                sum += e.data().len() as u64;
                n += 1;
            }
            ControlFlow::Continue(())
        })
        .expect("replay");
    black_box(sum);
    n
}

fn read_groups() -> Vec<ReadGroup> {
    let all = STREAMS * PER_STREAM;
    vec![
        ReadGroup {
            title: "catch-up over $all, 1,000,000 events",
            events: all,
            baseline: 1,
            rows: vec![
                ReadRow {
                    name: "catchup_subscription_all",
                    read: |s| drain(s.subscribe_to_all(AllFrom::Start, None).expect("sub")),
                },
                ReadRow {
                    name: "catchup_replay_all",
                    read: |s| replay_keeping(s, |_| true),
                },
                ReadRow {
                    name: "catchup_read_all_forward",
                    read: |s| {
                        count(
                            s.read_all_forward(Position::START, usize::MAX)
                                .expect("read"),
                        )
                    },
                },
            ],
        },
        ReadGroup {
            title: "one category (cat3: 100,000 of 1,000,000 events)",
            events: all / CATEGORIES,
            baseline: 0,
            rows: vec![
                ReadRow {
                    name: "category_read_category",
                    read: |s| count(s.read_category(CATEGORY, 0, usize::MAX).expect("read")),
                },
                ReadRow {
                    name: "category_subscribe_to_category",
                    read: |s| {
                        drain(
                            s.subscribe_to_category(CATEGORY, StreamFrom::Start)
                                .expect("sub"),
                        )
                    },
                },
                ReadRow {
                    name: "category_filtered_all_subscription",
                    read: |s| {
                        let filter = Filter::new().category(CATEGORY);
                        drain(
                            s.subscribe_to_all(AllFrom::Start, Some(filter))
                                .expect("sub"),
                        )
                    },
                },
                ReadRow {
                    name: "category_replay_all_filtered",
                    read: |s| replay_keeping(s, |e| category_of(e.stream()) == CATEGORY),
                },
            ],
        },
        ReadGroup {
            title: "one event type (Withdrawn: 100,000 of 1,000,000 events)",
            events: all / TYPES.len() as u64,
            baseline: 0,
            rows: vec![
                ReadRow {
                    name: "event_type_read_event_type",
                    read: |s| count(s.read_event_type(EVENT_TYPE, 0, usize::MAX).expect("read")),
                },
                ReadRow {
                    name: "event_type_subscribe_to_event_type",
                    read: |s| {
                        drain(
                            s.subscribe_to_event_type(EVENT_TYPE, StreamFrom::Start)
                                .expect("sub"),
                        )
                    },
                },
                ReadRow {
                    name: "event_type_filtered_all_subscription",
                    read: |s| {
                        let filter = Filter::new().event_type_prefix(EVENT_TYPE);
                        drain(
                            s.subscribe_to_all(AllFrom::Start, Some(filter))
                                .expect("sub"),
                        )
                    },
                },
                ReadRow {
                    name: "event_type_replay_all_filtered",
                    read: |s| replay_keeping(s, |e| e.event_type().starts_with(EVENT_TYPE)),
                },
            ],
        },
    ]
}

/// One untimed read, then `READ_RUNS` timed ones, each checked to deliver `events`: the median
/// rate in events per second.
fn rate(store: &Store, read: Read, events: u64) -> f64 {
    assert_eq!(read(store), events, "events delivered");
    let rates = (0..READ_RUNS)
        .map(|_| {
            let start = Instant::now();
            let n = read(store);
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(n, events, "events delivered");
            n as f64 / secs
        })
        .collect();
    median(rates)
}

fn run_reads(selected: &dyn Fn(&str) -> bool, rows: &mut Vec<String>) {
    let groups: Vec<ReadGroup> = read_groups()
        .into_iter()
        .filter(|g| g.rows.iter().any(|r| selected(r.name)))
        .collect();
    if groups.is_empty() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let start = Instant::now();
    let store = fill(dir.path());
    println!(
        "\nbuilt a store of {} events ({STREAMS} streams, {CATEGORIES} categories) in {:.1} s",
        STREAMS * PER_STREAM,
        start.elapsed().as_secs_f64()
    );
    for g in groups {
        let base = &g.rows[g.baseline];
        let base_rate = rate(&store, base.read, g.events);
        println!(
            "\n{} (median of {READ_RUNS} warm reads; ratio to {})",
            g.title, base.name
        );
        println!("{:<38} {:>14} {:>10}", "workload", "events/s", "ratio");
        for (i, r) in g.rows.iter().enumerate() {
            if i != g.baseline && !selected(r.name) {
                continue;
            }
            let per_s = if i == g.baseline {
                base_rate
            } else {
                rate(&store, r.read, g.events)
            };
            let ratio = per_s / base_rate;
            println!("{:<38} {per_s:>14.0} {ratio:>9.3}x", r.name);
            rows.push(format!(
                "{{\"workload\":\"{}\",\"events\":{},\"events_per_s\":{per_s:.0},\
                 \"baseline\":\"{}\",\"ratio\":{ratio:.4}}}",
                r.name, g.events, base.name
            ));
        }
    }
    store.close().expect("close");
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let selected = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let mut rows = Vec::new();
    run_latency(&selected, &mut rows);
    run_reads(&selected, &mut rows);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/subscription.json");
    let mut f = std::fs::File::create(&path).expect("subscription.json");
    for r in rows {
        writeln!(f, "{r}").expect("write");
    }
    println!("\nrows written to {}", path.display());
}
