//! Criterion benchmarks of the engine. Every event has a 100-byte payload, the type `Deposited`
//! and a random 16-byte id. Groups (pick one with `cargo bench --bench engine -- <group>`):
//!
//! - `append`: one thread appending batches of 1 and of 100 events to one stream, with
//!   `Durability::None` and `Sync`; each append timed on its own.
//! - `append_threads`: 1, 4 and 16 threads appending concurrently, each to its own stream, batches
//!   of 1 and of 100, `None` and `Sync` (with `Sync`, concurrent appends share one fsync: group
//!   commit). One iteration is one append by every thread.
//! - `append_long_stream`: one-event appends with `Any` and `Exact` to a stream of 100,000 events.
//! - `read`: one stream of 10,000 events, and `$all` over those 10,000 events, through the
//!   iterators of owned `RecordedEvent`s.
//! - `replay`: one contiguous stream of 100,000 events; one stream of 1,000 events interleaved
//!   with 999 other streams (1,000,000 events in the store); through `Store::replay_stream`,
//!   which hands borrowed events to a closure.
//! - `all`: `$all` forward over the 1,000,000-event store of `replay`, through
//!   `Store::replay_all`, in the process that wrote it (`forward_1m`) and after closing and
//!   opening it again (`forward_1m_reopened`).
//! - `reopen`: opening a closed store of 1,000,000 and of 10,000,000 events (about 1.9 GB) and
//!   reading one event. The files were just written, so they are in the page cache: this is a
//!   restart of the process, not of the machine.
//! - `fold`: a journaled actor's recovery: replay a stream of 10,000 events and fold them into a
//!   small state.
//!
//! A filter is a regular expression matched against `group/benchmark`: `-- '^all/'` selects only
//! the `all` group (`-- all` would also select `read/all_forward_10k`).
//!
//! Stores a benchmark needs are built the first time it runs, so a filter that skips a benchmark
//! also skips building its store (the 10,000,000-event store takes a while).

mod common;

use std::hint::black_box;
use std::ops::ControlFlow;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::Account;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use eventjournal::{Durability, EventData, ExpectedVersion, Options, Position, Store, StreamWrite};
use tempfile::TempDir;

const PAYLOAD: [u8; 100] = [0x5a; 100];
const EVENT_TYPE: &str = "Deposited";
/// Events per read benchmark.
const READ_EVENTS: usize = 10_000;
/// Appended events after which an append benchmark starts over with an empty store, so that a
/// long measurement does not fill the disk.
const EVENTS_PER_STORE: u64 = 200_000;
/// Events of the contiguous stream of `replay`.
const CONTIGUOUS: u64 = 100_000;
/// Streams and events per stream of the interleaved store of `replay` and `all`.
const INTERLEAVED_STREAMS: u64 = 1_000;
const INTERLEAVED_PER_STREAM: u64 = 1_000;
/// Events of the stream `fold` reads.
const FOLD_EVENTS: u64 = 10_000;

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

/// Short runs for benchmarks whose iterations wait for fsync (about 200 µs each) or take
/// milliseconds.
fn slow<M: criterion::measurement::Measurement>(group: &mut BenchmarkGroup<'_, M>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    for (name, durability) in [("none", Durability::None), ("sync", Durability::Sync)] {
        if durability == Durability::Sync {
            slow(&mut group);
        }
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

/// `threads` threads, each appending `rounds` batches of `size` events to its own stream of a
/// fresh store; returns the time from the moment all are released until the last one is done.
/// The batches are built before the clock starts.
fn append_concurrently(
    durability: Durability,
    threads: usize,
    size: usize,
    rounds: u64,
) -> Duration {
    let (dir, store) = open(durability);
    let batches: Vec<Vec<Vec<EventData>>> = (0..threads)
        .map(|_| (0..rounds).map(|_| events(size)).collect())
        .collect();
    let barrier = Barrier::new(threads + 1);
    let elapsed = std::thread::scope(|s| {
        let handles: Vec<_> = batches
            .into_iter()
            .enumerate()
            .map(|(t, batches)| {
                let (store, barrier) = (&store, &barrier);
                s.spawn(move || {
                    let stream = format!("account-{t}");
                    let mut expected = ExpectedVersion::NoStream;
                    barrier.wait();
                    for batch in batches {
                        expected = store
                            .append(&stream, expected, batch)
                            .expect("append")
                            .next_expected_version();
                    }
                    black_box(expected)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().expect("appender thread");
        }
        start.elapsed()
    });
    store.close().expect("close");
    drop(dir);
    elapsed
}

fn append_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_threads");
    for (name, durability) in [("none", Durability::None), ("sync", Durability::Sync)] {
        if durability == Durability::Sync {
            slow(&mut group);
        } else {
            group
                .sample_size(20)
                .warm_up_time(Duration::from_secs(1))
                .measurement_time(Duration::from_secs(3));
        }
        for size in [1usize, 100] {
            for threads in [1usize, 4, 16] {
                // One iteration: one append by every thread.
                let per_iter = (threads * size) as u64;
                group.throughput(Throughput::Elements(per_iter));
                group.bench_function(format!("{name}/batch_{size}/threads_{threads}"), |b| {
                    b.iter_custom(|iters| {
                        // A fresh store every `EVENTS_PER_STORE` events, outside the clock.
                        let per_store = (EVENTS_PER_STORE / per_iter).max(1);
                        let mut total = Duration::ZERO;
                        let mut left = iters;
                        while left > 0 {
                            let rounds = left.min(per_store);
                            total += append_concurrently(durability, threads, size, rounds);
                            left -= rounds;
                        }
                        total
                    });
                });
            }
        }
    }
    group.finish();
}

/// One-event appends with `Any` and with `Exact` to a stream that already holds 100,000 events:
/// `Any` must recognise retries by id, which should not cost a walk over the stream.
fn append_long_stream(c: &mut Criterion) {
    /// Events the stream starts with.
    const START: u64 = 100_000;
    /// Length past which the stream is rebuilt (untimed), so that a long measurement measures a
    /// stream of this order and not one of millions of events.
    const REBUILD_AT: u64 = 1_000_000;
    let mut group = c.benchmark_group("append_long_stream");
    group.throughput(Throughput::Elements(1));
    let build = || {
        let (dir, store) = open(Durability::None);
        for _ in 0..START / 100 {
            store
                .append("account-1", ExpectedVersion::Any, events(100))
                .expect("fill");
        }
        (dir, store)
    };
    for (name, any) in [("any", true), ("exact", false)] {
        // Criterion calls the closure once per sample: the store is filled on the first call.
        let mut filled: Option<(TempDir, Store)> = None;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (_, store) = filled.get_or_insert_with(build);
                    let version = store.stream_version("account-1").unwrap().expect("filled");
                    if version >= REBUILD_AT {
                        close(filled.take());
                        continue;
                    }
                    let batch = events(1);
                    let expected = if any {
                        ExpectedVersion::Any
                    } else {
                        ExpectedVersion::Exact(version)
                    };
                    let start = Instant::now();
                    let r = store.append("account-1", expected, batch).expect("append");
                    total += start.elapsed();
                    black_box(r);
                }
                total
            });
        });
        close(filled);
    }
    group.finish();
}

/// Closes a store built for a benchmark, if it was built, and removes its directory.
fn close(built: Option<(TempDir, Store)>) {
    if let Some((dir, store)) = built {
        store.close().expect("close");
        drop(dir);
    }
}

/// Appends `events` events to `stream` of `store` in batches of up to 1,000.
fn fill_stream(store: &Store, stream: &str, events: u64, mut event: impl FnMut(u64) -> EventData) {
    let mut expected = ExpectedVersion::NoStream;
    let mut done = 0;
    while done < events {
        let n = (events - done).min(1000);
        let batch: Vec<EventData> = (done..done + n).map(&mut event).collect();
        expected = store
            .append(stream, expected, batch)
            .expect("fill")
            .next_expected_version();
        done += n;
    }
}

/// Fills `store` with `streams` streams `account-{i}` of `per_stream` events each, interleaved
/// round-robin: every round appends one event to each stream, as one multi-stream batch (of up
/// to 10,000 streams).
fn fill_interleaved(store: &Store, streams: u64, per_stream: u64) {
    let names: Vec<String> = (0..streams).map(|s| format!("account-{s}")).collect();
    for round in 0..per_stream {
        let expected = match round {
            0 => ExpectedVersion::NoStream,
            r => ExpectedVersion::Exact(r - 1),
        };
        for chunk in names.chunks(10_000) {
            let writes = chunk
                .iter()
                .map(|name| {
                    StreamWrite::new(
                        name.clone(),
                        expected,
                        vec![EventData::new(EVENT_TYPE, &PAYLOAD[..])],
                    )
                })
                .collect();
            store.append_multi(writes).expect("fill");
        }
    }
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

/// Replays all of `stream` through [`Store::replay_stream`]; returns the events read.
fn replay_stream(store: &Store, stream: &str) -> u64 {
    let mut bytes = 0usize;
    let n = store
        .replay_stream(stream, 0, |e| {
            bytes += e.data().len();
            ControlFlow::Continue(())
        })
        .expect("replay stream");
    black_box(bytes);
    n
}

/// Replays all of `$all` through [`Store::replay_all`]; returns the events read.
fn read_all(store: &Store) -> u64 {
    let mut bytes = 0usize;
    let n = store
        .replay_all(Position::START, |e| {
            bytes += e.data().len();
            ControlFlow::Continue(())
        })
        .expect("replay $all");
    black_box(bytes);
    n
}

/// A store of `streams` × `per_stream` events, filled round-robin without syncing.
fn interleaved_store(streams: u64, per_stream: u64) -> (TempDir, Store) {
    let (dir, store) = open(Durability::None);
    fill_interleaved(&store, streams, per_stream);
    (dir, store)
}

/// `replay` and `all`. Criterion calls a benchmark's closure once per sample, so each store is
/// built on the first call (and only if the benchmark is selected); every benchmark reads its
/// data once, untimed, before measuring, so the pages are mapped. The 1,000,000-event store is
/// shared by both groups.
fn replay_and_all(c: &mut Criterion) {
    let mut interleaved: Option<(TempDir, Store)> = None;
    let build_interleaved = || {
        let (dir, store) = interleaved_store(INTERLEAVED_STREAMS, INTERLEAVED_PER_STREAM);
        assert_eq!(
            read_all(&store),
            INTERLEAVED_STREAMS * INTERLEAVED_PER_STREAM
        );
        (dir, store)
    };

    let mut group = c.benchmark_group("replay");
    slow(&mut group);
    group.throughput(Throughput::Elements(CONTIGUOUS));
    let mut contiguous: Option<(TempDir, Store)> = None;
    group.bench_function("contiguous_100k", |b| {
        let (_, store) = contiguous.get_or_insert_with(|| {
            let (dir, store) = open(Durability::None);
            fill_stream(&store, "account-0", CONTIGUOUS, |_| {
                EventData::new(EVENT_TYPE, &PAYLOAD[..])
            });
            assert_eq!(replay_stream(&store, "account-0"), CONTIGUOUS);
            (dir, store)
        });
        b.iter(|| replay_stream(store, "account-0"));
    });
    close(contiguous);
    group.throughput(Throughput::Elements(INTERLEAVED_PER_STREAM));
    group.bench_function("interleaved_1k_of_1m", |b| {
        let (_, store) = interleaved.get_or_insert_with(build_interleaved);
        b.iter(|| replay_stream(store, "account-500"));
    });
    group.finish();

    let mut group = c.benchmark_group("all");
    slow(&mut group);
    // An iteration takes about 60 ms: ten samples need more than `slow`'s two seconds.
    group.measurement_time(Duration::from_secs(4));
    let total = INTERLEAVED_STREAMS * INTERLEAVED_PER_STREAM;
    group.throughput(Throughput::Elements(total));
    group.bench_function("forward_1m", |b| {
        let (_, store) = interleaved.get_or_insert_with(build_interleaved);
        b.iter(|| read_all(store));
    });
    // The same store, closed and opened again: what an application reads of what an earlier
    // process wrote. One untimed pass first, as for the others.
    let mut reopened: Option<(TempDir, Store)> = None;
    group.bench_function("forward_1m_reopened", |b| {
        let (_, store) = reopened.get_or_insert_with(|| {
            let (dir, store) = interleaved.take().unwrap_or_else(build_interleaved);
            store.close().expect("close");
            let store = Store::open(dir.path(), Options::default().durability(Durability::None))
                .expect("reopen");
            assert_eq!(read_all(&store), total);
            (dir, store)
        });
        b.iter(|| read_all(store));
    });
    group.finish();
    close(interleaved);
    close(reopened);
}

/// Open-to-first-event time of a closed store of 1,000,000 and of 10,000,000 events: each
/// iteration opens the store and reads the first event of one stream; closing is not timed.
fn reopen(c: &mut Criterion) {
    let mut group = c.benchmark_group("reopen");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (name, streams, per_stream) in [("1m", 1_000u64, 1_000u64), ("10m", 10_000, 1_000)] {
        // Elements: events in the store, so the figure reads as events opened per second.
        group.throughput(Throughput::Elements(streams * per_stream));
        let mut built: Option<TempDir> = None;
        let stream = format!("account-{}", streams / 2);
        group.bench_function(name, |b| {
            let dir = built.get_or_insert_with(|| {
                let (dir, store) = interleaved_store(streams, per_stream);
                store.close().expect("close");
                dir
            });
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let store =
                        Store::open(dir.path(), Options::default().durability(Durability::None))
                            .expect("open");
                    let first = store
                        .read_stream_forward(&stream, 0, 1)
                        .expect("read")
                        .next()
                        .expect("an event")
                        .expect("event");
                    total += start.elapsed();
                    black_box(first);
                    store.close().expect("close");
                }
                total
            });
        });
        drop(built);
    }
    group.finish();
}

/// A 100-byte payload whose first eight bytes are `amount`, little-endian.
fn amount_payload(amount: i64) -> Vec<u8> {
    let mut p = PAYLOAD.to_vec();
    p[..8].copy_from_slice(&amount.to_le_bytes());
    p
}

fn fold(c: &mut Criterion) {
    let mut group = c.benchmark_group("fold");
    group.throughput(Throughput::Elements(FOLD_EVENTS));
    let rebuild = |store: &Store| {
        let mut state = Account::default();
        store
            .replay_stream("account-1", 0, |e| {
                state = state.apply(e.event_type(), e.data());
                ControlFlow::Continue(())
            })
            .expect("replay stream");
        state
    };
    let mut filled: Option<(TempDir, Store)> = None;
    group.bench_function("account_10k", |b| {
        let (_, store) = filled.get_or_insert_with(|| {
            let (dir, store) = open(Durability::None);
            fill_stream(&store, "account-1", FOLD_EVENTS, |i| {
                EventData::new(EVENT_TYPE, amount_payload(i as i64 % 1000 + 1))
            });
            let expected = Account {
                balance: (0..FOLD_EVENTS as i64).map(|i| i % 1000 + 1).sum(),
                deposits: FOLD_EVENTS,
            };
            // Untimed: checks the fold and maps the pages.
            assert_eq!(rebuild(&store), expected);
            (dir, store)
        });
        b.iter(|| black_box(rebuild(store)));
    });
    close(filled);
    group.finish();
}

criterion_group!(
    benches,
    append,
    append_threads,
    append_long_stream,
    read,
    replay_and_all,
    reopen,
    fold
);
criterion_main!(benches);
