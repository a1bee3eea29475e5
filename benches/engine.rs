//! Criterion benchmarks of the engine: appends (batch of 1 and of 100 events, 100-byte payloads,
//! with `Durability::None` and `Sync`), replaying one stream of 10,000 events, and reading `$all`
//! forward over 10,000 events.
//!
//! Run with `cargo bench --bench engine`; `cargo bench --bench engine -- append/` picks a group.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eventjournal::{Durability, EventData, ExpectedVersion, Options, Position, Store};
use tempfile::TempDir;

const PAYLOAD: [u8; 100] = [0x5a; 100];
const EVENT_TYPE: &str = "Deposited";
/// Events per read benchmark.
const READ_EVENTS: usize = 10_000;
/// Appended events after which an append benchmark starts over with an empty store, so that a
/// long measurement does not fill the disk.
const EVENTS_PER_STORE: u64 = 200_000;

fn events(n: usize) -> Vec<EventData> {
    (0..n)
        .map(|_| EventData::new(EVENT_TYPE, &PAYLOAD[..]))
        .collect()
}

fn open(durability: Durability) -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store =
        Store::open(dir.path(), Options::default().durability(durability)).expect("open store");
    (dir, store)
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    for (name, durability) in [("none", Durability::None), ("sync", Durability::Sync)] {
        for size in [1usize, 100] {
            group.throughput(Throughput::Elements(size as u64));
            group.bench_function(format!("{name}/batch_{size}"), |b| {
                // Timed by hand so that the batches are built, and full stores replaced, outside
                // the measurement.
                b.iter_custom(|iters| {
                    let (mut dir, mut store) = open(durability);
                    let mut in_store = 0u64;
                    // `Exact`: an `Any` append would also search the stream for a retry.
                    let mut expected = ExpectedVersion::NoStream;
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        if in_store >= EVENTS_PER_STORE {
                            store.close().expect("close");
                            (dir, store) = open(durability);
                            in_store = 0;
                            expected = ExpectedVersion::NoStream;
                        }
                        let batch = events(size);
                        let start = Instant::now();
                        let r = store.append("account-1", expected, batch).expect("append");
                        total += start.elapsed();
                        expected = black_box(r).next_expected_version();
                        in_store += size as u64;
                    }
                    store.close().expect("close");
                    drop(dir);
                    total
                });
            });
        }
    }
    group.finish();
}

/// One-event appends with `Any` and with `Exact` to a stream that already holds 100,000 events:
/// `Any` must recognise retries by id, which should not cost a walk over the stream.
fn append_long_stream(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_long_stream");
    group.throughput(Throughput::Elements(1));
    for (name, any) in [("any", true), ("exact", false)] {
        group.bench_function(name, |b| {
            let (dir, store) = open(Durability::None);
            for _ in 0..1000 {
                store
                    .append("account-1", ExpectedVersion::Any, events(100))
                    .expect("fill");
            }
            let mut version = store.stream_version("account-1").expect("filled");
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let batch = events(1);
                    let expected = if any {
                        ExpectedVersion::Any
                    } else {
                        ExpectedVersion::Exact(version)
                    };
                    let start = Instant::now();
                    let r = store.append("account-1", expected, batch).expect("append");
                    total += start.elapsed();
                    version = black_box(r).version.expect("written");
                }
                total
            });
            store.close().expect("close");
            drop(dir);
        });
    }
    group.finish();
}

/// A store with `READ_EVENTS` events in one stream, appended in batches of 100.
fn filled_store() -> (TempDir, Store) {
    let (dir, store) = open(Durability::None);
    let mut expected = ExpectedVersion::NoStream;
    for _ in 0..READ_EVENTS / 100 {
        let r = store
            .append("account-1", expected, events(100))
            .expect("append");
        expected = r.next_expected_version();
    }
    (dir, store)
}

fn read(c: &mut Criterion) {
    let (_dir, store) = filled_store();
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(READ_EVENTS as u64));
    group.bench_function("stream_forward_10k", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            for e in store
                .read_stream_forward("account-1", 0, usize::MAX)
                .expect("read stream")
            {
                bytes += e.expect("event").data().len();
            }
            assert_eq!(bytes, READ_EVENTS * PAYLOAD.len());
            black_box(bytes)
        });
    });
    group.bench_function("all_forward_10k", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            for e in store
                .read_all_forward(Position::START, usize::MAX)
                .expect("read $all")
            {
                bytes += e.expect("event").data().len();
            }
            assert_eq!(bytes, READ_EVENTS * PAYLOAD.len());
            black_box(bytes)
        });
    });
    group.finish();
    store.close().expect("close");
}

criterion_group!(benches, append, append_long_stream, read);
criterion_main!(benches);
