//! eventjournal, SQLite and Tephra side by side on the same event-store workloads, in one
//! process, one after the other. Prints a table of events per second (median of several runs,
//! each on a fresh directory, after a file-system sync and a 100 ms pause) and the ratios, then the writers rows, then the resident memory per
//! event of a freshly opened store, and writes the rows to `target/peers.json` (in
//! `CARGO_TARGET_DIR` if set).
//!
//! `cargo bench --bench peers` (all workloads); `cargo bench --bench peers -- replay read_all`
//! (those whose name contains `replay` or `read_all`). `EVJ_PEERS_ENGINES=tephra` runs only the
//! listed engines (comma-separated), so that syscalls counted from outside (`perf stat -e
//! syscalls:sys_enter_fdatasync`) are one engine's. `EVJ_PEERS_10M=1` measures the memory figure
//! on a store of 10,000,000 events instead of 1,000,000. A whole run takes about 4 minutes on
//! the two-core machine of the README's figures.
//!
//! Every event has a 100-byte payload, the type `Deposited` and (on eventjournal and SQLite) a
//! random 16-byte id.
//!
//! SQLite is used the way a user would build an event store on it: bundled library, WAL mode,
//! `synchronous=FULL` for durable workloads and `OFF` otherwise, `busy_timeout` of 60 s, one table
//! `(position INTEGER PRIMARY KEY, stream TEXT, version INTEGER, type TEXT, id BLOB, data BLOB,
//! UNIQUE(stream, version))`, and the expected version checked inside each append transaction,
//! which is `BEGIN IMMEDIATE` so that concurrent appenders queue for the write lock instead of
//! failing to upgrade a read snapshot. Concurrent appenders have a connection each.
//!
//! Tephra (crate `tephra`, a DCB event store: events carry a type and tags, no stream) is used
//! the way its documentation shows: a `SegmentSet` of 256 MiB segments, one `WriteCoordinator`,
//! default `WriterConfig`, every caller appending through its `WriteHandle`. A stream is a tag
//! (`stream:account-7`); an expected version is an `AppendCondition` on the tag's query after
//! the stream's last position (`NoStream`: after none), which fails where eventjournal's
//! `WrongExpectedVersion` would (`append_batch100_sync` checks that a stale one is refused);
//! replay is a read of the tag's query and `$all` a read of `Query::all()`, through Tephra's
//! one read shape, a lending iterator of borrowed events (so `replay_contiguous_100k_iter`
//! reads the same way as `replay_contiguous_100k` on Tephra). Tephra has no event id, so its
//! events carry 16 bytes fewer. Tephra syncs every append and has no way not to: it is
//! compared on the durable and the read rows, and shows `-` on the non-durable append row; its
//! stores for the read rows are filled (untimed) in appends of 10,000 events to keep the syncs
//! of the fill few.
//!
//! Read workloads measure warm reads on every engine: after filling, one untimed read, then
//! `READ_REPEATS` timed reads; the figure is their events over their time. eventjournal reads
//! with `replay_stream` / `replay_all`, which hand borrowed events to a closure, as SQLite's
//! `Row::get_ref` hands borrowed column values; `replay_contiguous_100k_iter` reads with the
//! iterator of owned `RecordedEvent`s instead.
//!
//! The writers rows (`writers_01`, `writers_04`, `writers_16`, `writers_64`) run T threads, each
//! appending one event per call to its own stream with an exact expected version, fully
//! durable, for 3 s per engine and point, and print events per second and the ratio to the same
//! engine's one writer. Each point runs as three 1-second slices per engine, the engines taking
//! turns and each slice at T writers following one at one writer (the baseline of that point's
//! ratio), so that the drift of a shared disk falls on all of them alike. For eventjournal they
//! also print batches per sync and microseconds per sync cycle, from `Store::stats()`, and for
//! eventjournal and Tephra the 99th percentile of an append's latency at T writers (each call
//! timed, over the point's three slices).

mod common;

use std::hint::black_box;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use common::Account;
use eventjournal::{
    Durability, EventData, EventId, ExpectedVersion, Options, Position, Store, StreamWrite,
};
use rusqlite::{params, Connection, TransactionBehavior};
use tephra::{
    AppendCondition, AppendError as TpAppendError, Event as TpEvent, EventType,
    Position as TpPosition, Query, QueryItem, SegmentConfig, SegmentSet, Tag, Tags,
    WriteCoordinator, WriteHandle, WriterConfig,
};

const RUNS: usize = 5;
/// Runs of the workloads that fill a store of 1,000,000 events (or wait on many syncs): the
/// median of three.
const SLOW_RUNS: usize = 3;
/// Timed reads (and reopens) per run of a read workload, after one untimed read.
const READ_REPEATS: usize = 5;
const PAYLOAD: [u8; 100] = [0x5a; 100];
const TYPE: &str = "Deposited";
/// Long enough that a connection starved by the others through a stall of a shared disk waits
/// instead of failing the run (10 s did fail a 16-thread row).
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// One engine's answer to a workload: events it handled and the seconds it took.
type Timed = (u64, f64);

struct Workload {
    name: &'static str,
    runs: usize,
    /// Runs eventjournal on a fresh directory; returns (events, seconds) for the timed part.
    ej: fn(&Path) -> Timed,
    sqlite: fn(&Path) -> Timed,
    /// `None` where Tephra cannot run the workload as stated: it syncs every append.
    tephra: Option<fn(&Path) -> Timed>,
}

fn ids(n: u64) -> Vec<[u8; 16]> {
    (0..n).map(|_| *EventId::new_random().as_bytes()).collect()
}

/// A 100-byte payload whose first eight bytes are `amount`, little-endian.
fn amount_payload(amount: i64) -> Vec<u8> {
    let mut p = PAYLOAD.to_vec();
    p[..8].copy_from_slice(&amount.to_le_bytes());
    p
}

/// The amount of the `i`th event of the fold workload.
fn amount(i: u64) -> i64 {
    (i % 1000) as i64 + 1
}

impl Account {
    /// What folding the `events` events of the fold workload gives.
    fn expected(events: u64) -> Account {
        Account {
            balance: (0..events).map(amount).sum(),
            deposits: events,
        }
    }
}

/// Lets the file system finish what the engine run before left it (its writeback, the removal
/// of its files) before the next engine's run starts, so that no engine is timed while another's
/// leftovers take a core. Before this, eventjournal's contiguous replay fell to 23M–29M events/s
/// (from 34M–37M) in some runs beside SQLite's, and in none of four runs beside Tephra's only.
fn settle() {
    // SAFETY: `sync` takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_millis(100));
}

/// One untimed read, then `READ_REPEATS` timed ones: their events over their seconds.
fn warm(mut read: impl FnMut() -> Timed) -> Timed {
    black_box(read());
    let (mut events, mut secs) = (0, 0.0);
    for _ in 0..READ_REPEATS {
        let (n, s) = read();
        events += n;
        secs += s;
    }
    (events, secs)
}

/// Runs `per_thread(t, barrier)` on `threads` threads; each waits on the barrier when it is
/// ready. Returns the seconds from the barrier's release until the last thread finished.
fn on_threads<F>(threads: usize, per_thread: F) -> f64
where
    F: Fn(usize, &Barrier) + Sync,
{
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (f, barrier) = (&per_thread, &barrier);
                s.spawn(move || f(t, barrier))
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().expect("appender thread");
        }
        start.elapsed().as_secs_f64()
    })
}

/// Runs `per_thread(t, barrier, stop)` on `threads` threads for `span` after the barrier's
/// release; each returns the events it appended, and stops when `stop` is set. Returns all
/// their events and the seconds until the last thread finished.
fn for_a_while<F>(threads: usize, span: Duration, per_thread: F) -> Timed
where
    F: Fn(usize, &Barrier, &AtomicBool) -> u64 + Sync,
{
    let barrier = Barrier::new(threads + 1);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (f, barrier, stop) = (&per_thread, &barrier, &stop);
                s.spawn(move || f(t, barrier, stop))
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        std::thread::sleep(span);
        stop.store(true, Ordering::Relaxed);
        let events = handles
            .into_iter()
            .map(|h| h.join().expect("appender thread"))
            .sum();
        (events, start.elapsed().as_secs_f64())
    })
}

// ----- eventjournal ---------------------------------------------------------------------------

fn ej_open(dir: &Path, d: Durability) -> Store {
    Store::open(dir, Options::default().durability(d)).expect("open")
}

fn ej_append(dir: &Path, d: Durability, batches: u64, size: u64) -> Timed {
    let store = ej_open(dir, d);
    let all_ids = ids(batches * size);
    let start = Instant::now();
    let mut expected = ExpectedVersion::NoStream;
    for b in 0..batches {
        let events = (0..size).map(|i| {
            EventData::new(TYPE, &PAYLOAD[..]).with_id(EventId(all_ids[(b * size + i) as usize]))
        });
        expected = store
            .append("account-1", expected, events)
            .expect("append")
            .next_expected_version();
    }
    let secs = start.elapsed().as_secs_f64();
    store.close().expect("close");
    (batches * size, secs)
}

/// `threads` threads, each appending `per_thread` single events with `Sync` to its own stream,
/// with exact expected versions.
fn ej_append_threads(dir: &Path, threads: usize, per_thread: u64) -> Timed {
    let store = ej_open(dir, Durability::Sync);
    let all_ids: Vec<Vec<[u8; 16]>> = (0..threads).map(|_| ids(per_thread)).collect();
    let secs = on_threads(threads, |t, barrier| {
        let stream = format!("account-{t}");
        let mut expected = ExpectedVersion::NoStream;
        barrier.wait();
        for (v, id) in all_ids[t].iter().enumerate() {
            let event = EventData::new(TYPE, &PAYLOAD[..]).with_id(EventId(*id));
            let r = store.append(&stream, expected, [event]).expect("append");
            assert_eq!(r.version, Some(v as u64));
            expected = ExpectedVersion::Exact(v as u64);
        }
    });
    store.close().expect("close");
    (threads as u64 * per_thread, secs)
}

/// The writers rows: `threads` threads appending one event per call with `Sync` to their own
/// streams, with exact expected versions, for `span`. Also returns the batches and syncs the
/// store counted meanwhile.
fn ej_writers(dir: &Path, threads: usize, span: Duration) -> (Timed, (u64, u64), Vec<u32>) {
    let store = ej_open(dir, Durability::Sync);
    let before = store.stats();
    let latencies = Mutex::new(Vec::new());
    let timed = for_a_while(threads, span, |t, barrier, stop| {
        let stream = format!("account-{t}");
        let mut expected = ExpectedVersion::NoStream;
        let mut took = Vec::new();
        barrier.wait();
        while !stop.load(Ordering::Relaxed) {
            let event = EventData::new(TYPE, &PAYLOAD[..]).with_id(EventId::new_random());
            let start = Instant::now();
            expected = store
                .append(&stream, expected, [event])
                .expect("append")
                .next_expected_version();
            took.push(micros(start));
        }
        let n = took.len() as u64;
        latencies.lock().expect("latencies").append(&mut took);
        n
    });
    let after = store.stats();
    store.close().expect("close");
    (
        timed,
        (after.appends - before.appends, after.syncs - before.syncs),
        latencies.into_inner().expect("latencies"),
    )
}

/// Microseconds since `start`, for the writers rows' latencies.
fn micros(start: Instant) -> u32 {
    start.elapsed().as_micros().min(u128::from(u32::MAX)) as u32
}

/// The 99th percentile of `v`, sorting it.
fn p99_of(v: &mut [u32]) -> Option<u32> {
    v.sort_unstable();
    v.get(v.len().checked_sub(1)? * 99 / 100).copied()
}

/// Fills a store with `streams` streams `account-{i}`, `per_stream` events each, interleaved
/// round-robin: each round appends one event to every stream, as one multi-stream batch (of up
/// to 10,000 streams). Returns it open.
fn ej_fill(dir: &Path, streams: u64, per_stream: u64) -> Store {
    let store = ej_open(dir, Durability::None);
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
                        vec![EventData::new(TYPE, &PAYLOAD[..])],
                    )
                })
                .collect();
            store.append_multi(writes).expect("fill");
        }
    }
    store
}

/// One stream `account-1` of `events` events for the fold workload, in batches of 1,000.
fn ej_fill_account(dir: &Path, events: u64) -> Store {
    let store = ej_open(dir, Durability::None);
    let mut expected = ExpectedVersion::NoStream;
    for first in (0..events).step_by(1000) {
        let batch: Vec<EventData> = (first..(first + 1000).min(events))
            .map(|i| EventData::new(TYPE, amount_payload(amount(i))))
            .collect();
        expected = store
            .append("account-1", expected, batch)
            .expect("fill")
            .next_expected_version();
    }
    store
}

fn ej_replay(store: &Store, stream: &str) -> Timed {
    let start = Instant::now();
    let mut sum = 0u64;
    let n = store
        .replay_stream(stream, 0, |e| {
            sum += e.data().len() as u64;
            ControlFlow::Continue(())
        })
        .expect("replay");
    black_box(sum);
    (n, start.elapsed().as_secs_f64())
}

/// The same through the iterator, which hands out owned `RecordedEvent`s.
fn ej_replay_iter(store: &Store, stream: &str) -> Timed {
    let start = Instant::now();
    let mut n = 0u64;
    let mut sum = 0u64;
    for e in store
        .read_stream_forward(stream, 0, usize::MAX)
        .expect("read")
    {
        let e = e.expect("event");
        sum += e.data().len() as u64;
        n += 1;
    }
    black_box(sum);
    (n, start.elapsed().as_secs_f64())
}

fn ej_all(store: &Store) -> Timed {
    let start = Instant::now();
    let mut sum = 0u64;
    let n = store
        .replay_all(Position::START, |e| {
            sum += e.data().len() as u64;
            ControlFlow::Continue(())
        })
        .expect("replay");
    black_box(sum);
    (n, start.elapsed().as_secs_f64())
}

fn ej_fold(store: &Store, stream: &str) -> Timed {
    let start = Instant::now();
    let mut state = Account::default();
    let n = store
        .replay_stream(stream, 0, |e| {
            state = state.apply(e.event_type(), e.data());
            ControlFlow::Continue(())
        })
        .expect("replay");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(state, Account::expected(n));
    (n, secs)
}

/// Opens a closed store and reads one event: the time until the store can serve a read.
fn ej_reopen(dir: &Path, stream: &str) -> f64 {
    let start = Instant::now();
    let store = Store::open(dir, Options::default()).expect("open");
    let first = store.read_event(stream, 0).expect("first event");
    let secs = start.elapsed().as_secs_f64();
    black_box(first);
    store.close().expect("close");
    secs
}

// ----- SQLite ---------------------------------------------------------------------------------

/// A connection with the pragmas of every connection, and the table.
fn sq_open(dir: &Path, durable: bool) -> Connection {
    let c = Connection::open(dir.join("events.db")).expect("sqlite open");
    c.busy_timeout(BUSY_TIMEOUT).expect("busy timeout");
    c.pragma_update(None, "journal_mode", "WAL").expect("wal");
    c.pragma_update(None, "synchronous", if durable { "FULL" } else { "OFF" })
        .expect("synchronous");
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS events (position INTEGER PRIMARY KEY, stream TEXT NOT NULL, \
         version INTEGER NOT NULL, type TEXT NOT NULL, id BLOB NOT NULL, data BLOB NOT NULL, \
         UNIQUE(stream, version))",
    )
    .expect("schema");
    c
}

/// One append transaction with the expected version checked inside it.
fn sq_append_batch(
    c: &mut Connection,
    stream: &str,
    expected: Option<i64>,
    ids: &[[u8; 16]],
) -> i64 {
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .expect("begin");
    let actual: Option<i64> = tx
        .query_row(
            "SELECT max(version) FROM events WHERE stream = ?1",
            params![stream],
            |r| r.get(0),
        )
        .expect("version");
    assert_eq!(actual, expected, "wrong expected version");
    let mut v = actual.map_or(0, |a| a + 1);
    {
        let mut ins = tx
            .prepare_cached(
                "INSERT INTO events (stream, version, type, id, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .expect("prepare");
        for id in ids {
            ins.execute(params![stream, v, TYPE, &id[..], &PAYLOAD[..]])
                .expect("insert");
            v += 1;
        }
    }
    tx.commit().expect("commit");
    v - 1
}

fn sq_append(dir: &Path, durable: bool, batches: u64, size: u64) -> Timed {
    let mut c = sq_open(dir, durable);
    let all_ids = ids(batches * size);
    let start = Instant::now();
    let mut expected = None;
    for b in 0..batches {
        let chunk = &all_ids[(b * size) as usize..((b + 1) * size) as usize];
        expected = Some(sq_append_batch(&mut c, "account-1", expected, chunk));
    }
    (batches * size, start.elapsed().as_secs_f64())
}

/// `threads` threads, each with its own connection (`synchronous=FULL`), appending `per_thread`
/// single events to its own stream, each in its own `BEGIN IMMEDIATE` transaction.
fn sq_append_threads(dir: &Path, threads: usize, per_thread: u64) -> Timed {
    drop(sq_open(dir, true));
    let all_ids: Vec<Vec<[u8; 16]>> = (0..threads).map(|_| ids(per_thread)).collect();
    let secs = on_threads(threads, |t, barrier| {
        let mut c = sq_open(dir, true);
        let stream = format!("account-{t}");
        let mut expected = None;
        barrier.wait();
        for id in &all_ids[t] {
            expected = Some(sq_append_batch(&mut c, &stream, expected, &[*id]));
        }
    });
    (threads as u64 * per_thread, secs)
}

fn sq_writers(dir: &Path, threads: usize, span: Duration) -> Timed {
    drop(sq_open(dir, true));
    for_a_while(threads, span, |t, barrier, stop| {
        let mut c = sq_open(dir, true);
        let stream = format!("account-{t}");
        let mut expected = None;
        barrier.wait();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let id = *EventId::new_random().as_bytes();
            expected = Some(sq_append_batch(&mut c, &stream, expected, &[id]));
            n += 1;
        }
        n
    })
}

fn sq_fill(dir: &Path, streams: u64, per_stream: u64) -> Connection {
    let mut c = sq_open(dir, false);
    let tx = c.transaction().expect("begin");
    {
        let mut ins = tx
            .prepare(
                "INSERT INTO events (stream, version, type, id, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .expect("prepare");
        let names: Vec<String> = (0..streams).map(|s| format!("account-{s}")).collect();
        for v in 0..per_stream {
            for name in &names {
                let id = EventId::new_random();
                ins.execute(params![
                    name,
                    v as i64,
                    TYPE,
                    &id.as_bytes()[..],
                    &PAYLOAD[..]
                ])
                .expect("insert");
            }
        }
    }
    tx.commit().expect("commit");
    c
}

fn sq_fill_account(dir: &Path, events: u64) -> Connection {
    let mut c = sq_open(dir, false);
    let tx = c.transaction().expect("begin");
    {
        let mut ins = tx
            .prepare(
                "INSERT INTO events (stream, version, type, id, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .expect("prepare");
        for v in 0..events {
            let id = EventId::new_random();
            ins.execute(params![
                "account-1",
                v as i64,
                TYPE,
                &id.as_bytes()[..],
                amount_payload(amount(v))
            ])
            .expect("insert");
        }
    }
    tx.commit().expect("commit");
    c
}

fn sq_replay(c: &Connection, stream: &str) -> Timed {
    let start = Instant::now();
    let mut st = c
        .prepare_cached("SELECT version, data FROM events WHERE stream = ?1 ORDER BY version")
        .expect("prepare");
    let mut rows = st.query(params![stream]).expect("query");
    let (mut n, mut sum) = (0u64, 0u64);
    while let Some(r) = rows.next().expect("row") {
        let data = r.get_ref(1).expect("data").as_blob().expect("blob");
        sum += data.len() as u64;
        n += 1;
    }
    black_box(sum);
    (n, start.elapsed().as_secs_f64())
}

fn sq_all(c: &Connection) -> Timed {
    let start = Instant::now();
    let mut st = c
        .prepare_cached(
            "SELECT position, stream, version, type, id, data FROM events ORDER BY position",
        )
        .expect("prepare");
    let mut rows = st.query([]).expect("query");
    let (mut n, mut sum) = (0u64, 0u64);
    while let Some(r) = rows.next().expect("row") {
        sum += r.get_ref(5).expect("data").as_blob().expect("blob").len() as u64;
        n += 1;
    }
    black_box(sum);
    (n, start.elapsed().as_secs_f64())
}

fn sq_fold(c: &Connection, stream: &str) -> Timed {
    let start = Instant::now();
    let mut st = c
        .prepare_cached("SELECT type, data FROM events WHERE stream = ?1 ORDER BY version")
        .expect("prepare");
    let mut rows = st.query(params![stream]).expect("query");
    let mut n = 0u64;
    let mut state = Account::default();
    while let Some(r) = rows.next().expect("row") {
        let event_type = r.get_ref(0).expect("type").as_str().expect("text");
        let data = r.get_ref(1).expect("data").as_blob().expect("blob");
        state = state.apply(event_type, data);
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(state, Account::expected(n));
    (n, secs)
}

/// Opens a connection to a closed database, sets the pragmas and reads one event.
fn sq_reopen(dir: &Path, stream: &str) -> f64 {
    let start = Instant::now();
    let c = Connection::open(dir.join("events.db")).expect("sqlite open");
    c.busy_timeout(BUSY_TIMEOUT).expect("busy timeout");
    c.pragma_update(None, "journal_mode", "WAL").expect("wal");
    c.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous");
    let first: (String, Vec<u8>) = c
        .query_row(
            "SELECT type, data FROM events WHERE stream = ?1 AND version = 0",
            params![stream],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("first event");
    let secs = start.elapsed().as_secs_f64();
    black_box(first);
    drop(c);
    secs
}

// ----- Tephra ---------------------------------------------------------------------------------

/// Size of a Tephra log segment, the one its documentation's example uses. Segments are
/// preallocated, so a smaller size would only add rollovers to the 1,000,000-event workloads.
const TP_SEGMENT: usize = 256 * 1024 * 1024;

/// A Tephra store: the single writer's owner and the handle every caller appends and reads
/// through. The owner is kept so that `close` can join the writer thread.
struct TpStore {
    coordinator: WriteCoordinator,
    handle: WriteHandle,
}

impl TpStore {
    fn open(dir: &Path) -> TpStore {
        let set = SegmentSet::open(dir, SegmentConfig::new(TP_SEGMENT)).expect("tephra open");
        let (coordinator, handle) =
            WriteCoordinator::start(set, WriterConfig::default()).expect("tephra start");
        TpStore {
            coordinator,
            handle,
        }
    }

    fn close(self) {
        drop(self.handle);
        drop(self.coordinator.shutdown());
    }
}

/// Tephra has no streams: a stream is the events carrying its tag.
fn tp_tags(stream: &str) -> Tags {
    Tags::new([Tag::new(format!("stream:{stream}")).expect("tag")]).expect("tags")
}

fn tp_query(stream: &str) -> Query {
    Query::item(QueryItem::with_tags(tp_tags(stream)))
}

fn tp_type() -> EventType {
    EventType::new(TYPE).expect("event type")
}

/// The expected version as a DCB condition: no event of the stream's tag after the stream's
/// last position (`None`: none at all, which is `NoStream`). It fails exactly where
/// `WrongExpectedVersion` would.
fn tp_expect(query: &Query, last: Option<TpPosition>) -> AppendCondition {
    let condition = AppendCondition::new(query.clone());
    match last {
        Some(last) => condition.after(last),
        None => condition,
    }
}

/// Appends `batches` batches of `size` events to one stream, each guarded by the stream's
/// expected version; Tephra syncs every append.
fn tp_append(dir: &Path, batches: u64, size: u64) -> Timed {
    let store = TpStore::open(dir);
    let (ty, tags, query) = (tp_type(), tp_tags("account-1"), tp_query("account-1"));
    let start = Instant::now();
    let mut last = None;
    for _ in 0..batches {
        let events = (0..size)
            .map(|_| TpEvent::new(&ty, &tags, &PAYLOAD).expect("event"))
            .collect();
        let range = store
            .handle
            .append(events, Some(tp_expect(&query, last)))
            .expect("append");
        last = Some(range.last);
    }
    let secs = start.elapsed().as_secs_f64();
    // The mapping of expected versions is only fair if a stale one is refused: one that
    // predates the last batch must conflict, as `WrongExpectedVersion` would.
    let stale = last.map(|l| TpPosition::new(l.get() - size));
    let event = TpEvent::new(&ty, &tags, &PAYLOAD).expect("event");
    let refused = store
        .handle
        .append(vec![event], Some(tp_expect(&query, stale)));
    assert!(
        matches!(refused, Err(TpAppendError::Conflict { .. })),
        "a stale expected version was accepted: {refused:?}"
    );
    store.close();
    (batches * size, secs)
}

/// `threads` threads, each appending `per_thread` single events to its own stream, each with
/// the stream's expected version.
fn tp_append_threads(dir: &Path, threads: usize, per_thread: u64) -> Timed {
    let store = TpStore::open(dir);
    let secs = on_threads(threads, |t, barrier| {
        let (ty, tags, query) = tp_stream(t);
        let mut last = None;
        barrier.wait();
        for _ in 0..per_thread {
            last = Some(tp_append_one(&store.handle, &ty, &tags, &query, last));
        }
    });
    store.close();
    (threads as u64 * per_thread, secs)
}

/// The type, tags and query of thread `t`'s stream `account-{t}`.
fn tp_stream(t: usize) -> (EventType, Tags, Query) {
    let stream = format!("account-{t}");
    (tp_type(), tp_tags(&stream), tp_query(&stream))
}

/// Appends one event after `last`, the stream's last position; returns the event's position.
fn tp_append_one(
    handle: &WriteHandle,
    ty: &EventType,
    tags: &Tags,
    query: &Query,
    last: Option<TpPosition>,
) -> TpPosition {
    let event = TpEvent::new(ty, tags, &PAYLOAD).expect("event");
    handle
        .append(vec![event], Some(tp_expect(query, last)))
        .expect("append")
        .last
}

fn tp_writers(dir: &Path, threads: usize, span: Duration) -> (Timed, Vec<u32>) {
    let store = TpStore::open(dir);
    let latencies = Mutex::new(Vec::new());
    let timed = for_a_while(threads, span, |t, barrier, stop| {
        let (ty, tags, query) = tp_stream(t);
        let mut last = None;
        let mut took = Vec::new();
        barrier.wait();
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            last = Some(tp_append_one(&store.handle, &ty, &tags, &query, last));
            took.push(micros(start));
        }
        let n = took.len() as u64;
        latencies.lock().expect("latencies").append(&mut took);
        n
    });
    store.close();
    (timed, latencies.into_inner().expect("latencies"))
}

/// The fill of `ej_fill`, round-robin over `streams` streams. Tephra cannot skip the sync, so
/// the fill goes in appends of 10,000 events to keep its syncs few; it is not timed.
fn tp_fill(dir: &Path, streams: u64, per_stream: u64) -> TpStore {
    let store = TpStore::open(dir);
    let ty = tp_type();
    let tags: Vec<Tags> = (0..streams)
        .map(|s| tp_tags(&format!("account-{s}")))
        .collect();
    let total = streams * per_stream;
    for first in (0..total).step_by(10_000) {
        let events = (first..(first + 10_000).min(total))
            .map(|i| TpEvent::new(&ty, &tags[(i % streams) as usize], &PAYLOAD).expect("event"))
            .collect();
        store.handle.append(events, None).expect("fill");
    }
    store
}

fn tp_fill_account(dir: &Path, events: u64) -> TpStore {
    let store = TpStore::open(dir);
    let (ty, tags) = (tp_type(), tp_tags("account-1"));
    for first in (0..events).step_by(1000) {
        let batch = (first..(first + 1000).min(events))
            .map(|i| TpEvent::new(&ty, &tags, &amount_payload(amount(i))).expect("event"))
            .collect();
        store.handle.append(batch, None).expect("fill");
    }
    store
}

/// Reads every event `query` matches through Tephra's one read shape, a lending iterator of
/// borrowed events, handing each to `each`; returns how many there were.
fn tp_read(store: &TpStore, query: &Query, mut each: impl FnMut(&str, &[u8])) -> u64 {
    let mut reads = store.handle.read(query, TpPosition::ZERO, None);
    let mut n = 0;
    while let Some(item) = reads.next() {
        let seq = item.expect("read");
        each(seq.event.event_type(), seq.event.data());
        n += 1;
    }
    n
}

fn tp_replay(store: &TpStore, stream: &str) -> Timed {
    let query = tp_query(stream);
    let start = Instant::now();
    let mut sum = 0u64;
    let n = tp_read(store, &query, |_, data| sum += data.len() as u64);
    black_box(sum);
    (n, start.elapsed().as_secs_f64())
}

fn tp_all(store: &TpStore) -> Timed {
    let query = Query::all();
    let start = Instant::now();
    let mut sum = 0u64;
    let n = tp_read(store, &query, |_, data| sum += data.len() as u64);
    black_box(sum);
    (n, start.elapsed().as_secs_f64())
}

fn tp_fold(store: &TpStore, stream: &str) -> Timed {
    let query = tp_query(stream);
    let start = Instant::now();
    let mut state = Account::default();
    let n = tp_read(store, &query, |ty, data| state = state.apply(ty, data));
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(state, Account::expected(n));
    (n, secs)
}

/// Opens a closed store (the log, then the writer, which opens the tag index) and reads the
/// stream's first event.
fn tp_reopen(dir: &Path, stream: &str) -> f64 {
    let start = Instant::now();
    let store = TpStore::open(dir);
    let mut reads = store
        .handle
        .read(&tp_query(stream), TpPosition::ZERO, Some(1));
    let first = reads
        .next()
        .expect("first event")
        .expect("read")
        .event
        .to_owned();
    let secs = start.elapsed().as_secs_f64();
    black_box(first);
    drop(reads);
    store.close();
    secs
}

// ----- workloads ------------------------------------------------------------------------------

const CONTIGUOUS: u64 = 100_000;
const INTERLEAVED_STREAMS: u64 = 1_000;
const INTERLEAVED_PER_STREAM: u64 = 1_000;
const FOLD_EVENTS: u64 = 10_000;

/// `READ_REPEATS` reopens of a closed store of `events`: the events of the store over the
/// seconds to open it and read one event, so that the row reads like the others.
fn reopens(events: u64, mut reopen: impl FnMut() -> f64) -> Timed {
    let secs: f64 = (0..READ_REPEATS).map(|_| reopen()).sum();
    (events * READ_REPEATS as u64, secs)
}

fn workloads() -> Vec<Workload> {
    vec![
        Workload {
            name: "append_batch1_nosync",
            runs: RUNS,
            ej: |d| ej_append(d, Durability::None, 50_000, 1),
            sqlite: |d| sq_append(d, false, 50_000, 1),
            tephra: None,
        },
        Workload {
            name: "append_batch100_sync",
            runs: RUNS,
            ej: |d| ej_append(d, Durability::Sync, 500, 100),
            sqlite: |d| sq_append(d, true, 500, 100),
            tephra: Some(|d| tp_append(d, 500, 100)),
        },
        Workload {
            name: "append_batch1_sync_1thread",
            runs: RUNS,
            ej: |d| ej_append_threads(d, 1, 1_000),
            sqlite: |d| sq_append_threads(d, 1, 1_000),
            tephra: Some(|d| tp_append_threads(d, 1, 1_000)),
        },
        Workload {
            name: "append_batch1_sync_16threads",
            runs: SLOW_RUNS,
            ej: |d| ej_append_threads(d, 16, 500),
            sqlite: |d| sq_append_threads(d, 16, 500),
            tephra: Some(|d| tp_append_threads(d, 16, 500)),
        },
        Workload {
            name: "replay_contiguous_100k",
            runs: RUNS,
            ej: |d| {
                let s = ej_fill(d, 1, CONTIGUOUS);
                warm(|| ej_replay(&s, "account-0"))
            },
            sqlite: |d| {
                let c = sq_fill(d, 1, CONTIGUOUS);
                warm(|| sq_replay(&c, "account-0"))
            },
            tephra: Some(|d| {
                let s = tp_fill(d, 1, CONTIGUOUS);
                warm(|| tp_replay(&s, "account-0"))
            }),
        },
        Workload {
            name: "replay_contiguous_100k_iter",
            runs: RUNS,
            ej: |d| {
                let s = ej_fill(d, 1, CONTIGUOUS);
                warm(|| ej_replay_iter(&s, "account-0"))
            },
            sqlite: |d| {
                let c = sq_fill(d, 1, CONTIGUOUS);
                warm(|| sq_replay(&c, "account-0"))
            },
            tephra: Some(|d| {
                let s = tp_fill(d, 1, CONTIGUOUS);
                warm(|| tp_replay(&s, "account-0"))
            }),
        },
        Workload {
            name: "replay_interleaved_1k_of_1m",
            runs: SLOW_RUNS,
            ej: |d| {
                let s = ej_fill(d, INTERLEAVED_STREAMS, INTERLEAVED_PER_STREAM);
                warm(|| ej_replay(&s, "account-500"))
            },
            sqlite: |d| {
                let c = sq_fill(d, INTERLEAVED_STREAMS, INTERLEAVED_PER_STREAM);
                warm(|| sq_replay(&c, "account-500"))
            },
            tephra: Some(|d| {
                let s = tp_fill(d, INTERLEAVED_STREAMS, INTERLEAVED_PER_STREAM);
                warm(|| tp_replay(&s, "account-500"))
            }),
        },
        Workload {
            name: "read_all_1m",
            runs: SLOW_RUNS,
            ej: |d| {
                let s = ej_fill(d, INTERLEAVED_STREAMS, INTERLEAVED_PER_STREAM);
                warm(|| ej_all(&s))
            },
            sqlite: |d| {
                let c = sq_fill(d, INTERLEAVED_STREAMS, INTERLEAVED_PER_STREAM);
                warm(|| sq_all(&c))
            },
            tephra: Some(|d| {
                let s = tp_fill(d, INTERLEAVED_STREAMS, INTERLEAVED_PER_STREAM);
                warm(|| tp_all(&s))
            }),
        },
        Workload {
            name: "fold_10k",
            runs: RUNS,
            ej: |d| {
                let s = ej_fill_account(d, FOLD_EVENTS);
                warm(|| ej_fold(&s, "account-1"))
            },
            sqlite: |d| {
                let c = sq_fill_account(d, FOLD_EVENTS);
                warm(|| sq_fold(&c, "account-1"))
            },
            tephra: Some(|d| {
                let s = tp_fill_account(d, FOLD_EVENTS);
                warm(|| tp_fold(&s, "account-1"))
            }),
        },
        // This row's figure is the store's size over the time to open it and read one event
        // (events in the store / seconds), not a rate of events handled.
        Workload {
            name: "reopen_1m",
            runs: SLOW_RUNS,
            ej: |d| {
                let events = INTERLEAVED_STREAMS * INTERLEAVED_PER_STREAM;
                ej_fill(d, INTERLEAVED_STREAMS, INTERLEAVED_PER_STREAM)
                    .close()
                    .expect("close");
                reopens(events, || ej_reopen(d, "account-500"))
            },
            sqlite: |d| {
                let events = INTERLEAVED_STREAMS * INTERLEAVED_PER_STREAM;
                drop(sq_fill(d, INTERLEAVED_STREAMS, INTERLEAVED_PER_STREAM));
                reopens(events, || sq_reopen(d, "account-500"))
            },
            tephra: Some(|d| {
                let events = INTERLEAVED_STREAMS * INTERLEAVED_PER_STREAM;
                tp_fill(d, INTERLEAVED_STREAMS, INTERLEAVED_PER_STREAM).close();
                reopens(events, || tp_reopen(d, "account-500"))
            }),
        },
    ]
}

/// The median; `None` for an engine that did not run.
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied()
}

fn shown(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".into(), |r| format!("{r:.0}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

fn json(rate: Option<f64>) -> String {
    rate.map_or_else(|| "null".into(), |r| format!("{r:.0}"))
}

// ----- writers --------------------------------------------------------------------------------

/// Threads of the writers rows, named `writers_01` … `writers_64` so that no name contains
/// another and each can be selected alone.
const WRITERS: [usize; 4] = [1, 4, 16, 64];
/// Each engine appends at each point for `WRITERS_SLICES` slices of `WRITERS_SLICE`, the
/// engines (and each point with its one-writer baseline) taking turns, so that a change in the
/// disk's speed (it is shared) falls on all of them alike. Three seconds per engine and point:
/// thousands of syncs at one writer, and all the points take about 70 s.
const WRITERS_SLICES: u32 = 3;
const WRITERS_SLICE: Duration = Duration::from_secs(1);

/// One engine's totals at one writers point.
#[derive(Default, Clone, Copy)]
struct Slices {
    events: u64,
    secs: f64,
    /// eventjournal's batches and syncs, from `Store::stats()`.
    appends: u64,
    syncs: u64,
}

impl Slices {
    fn add(&mut self, (events, secs): Timed) {
        self.events += events;
        self.secs += secs;
    }

    fn rate(&self) -> f64 {
        self.events as f64 / self.secs
    }
}

/// The writers rows: each engine's events per second with T durable appenders, each appending
/// one event per call to its own stream, and its ratio to the same engine's one writer measured
/// in turns with it; for eventjournal also the batches per sync and the microseconds per sync cycle, which
/// the disk's drift moves less than throughput. Its rows in `peers.json` also carry each
/// engine's events at the point and in its one-writer slices, so that a count of syncs taken
/// from outside (a one-writer append is one sync on every engine) gives any engine's appends
/// per sync.
fn writers(
    selected: &dyn Fn(&str) -> bool,
    engine_on: &dyn Fn(&str) -> bool,
    rows: &mut Vec<String>,
) {
    let points: Vec<usize> = WRITERS
        .into_iter()
        .filter(|t| selected(&format!("writers_{t:02}")))
        .collect();
    if points.is_empty() {
        return;
    }
    println!(
        "durable writers, one event per call to its own stream, {} s per engine and point; \
         x1 = over the same engine's one writer, measured in turns with the point",
        WRITERS_SLICE.as_secs_f64() * f64::from(WRITERS_SLICES)
    );
    println!(
        "{:<8} {:>14} {:>7} {:>12} {:>9} {:>10} {:>7} {:>10} {:>7} {:>10} {:>10} {:>10} {:>10}",
        "writers",
        "eventjournal/s",
        "x1",
        "appends/sync",
        "us/sync",
        "sqlite/s",
        "x1",
        "tephra/s",
        "x1",
        "ej/sqlite",
        "ej/tephra",
        "ej p99 us",
        "tp p99 us"
    );
    let fresh = || tempfile::tempdir().expect("tempdir");
    // One slice of each engine at `t` writers, into `into[engine]`, with the latencies of
    // eventjournal's and Tephra's appends into `lat`.
    let slice = |t: usize, into: &mut [Slices; 3], lat: &mut [Vec<u32>; 2]| {
        if engine_on("eventjournal") {
            let (timed, (appends, syncs), mut took) = ej_writers(fresh().path(), t, WRITERS_SLICE);
            into[0].add(timed);
            into[0].appends += appends;
            into[0].syncs += syncs;
            lat[0].append(&mut took);
        }
        if engine_on("sqlite") {
            into[1].add(sq_writers(fresh().path(), t, WRITERS_SLICE));
        }
        if engine_on("tephra") {
            let (timed, mut took) = tp_writers(fresh().path(), t, WRITERS_SLICE);
            into[2].add(timed);
            lat[1].append(&mut took);
        }
    };
    let on = [
        engine_on("eventjournal"),
        engine_on("sqlite"),
        engine_on("tephra"),
    ];
    let rates =
        |s: &[Slices; 3]| -> [Option<f64>; 3] { [0, 1, 2].map(|i| on[i].then(|| s[i].rate())) };
    for t in points {
        // The one-writer baseline of each point is measured in turns with the point itself:
        // the disk's speed drifts between points far more than within one.
        let (mut at, mut base) = ([Slices::default(); 3], [Slices::default(); 3]);
        let (mut lat, mut base_lat) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
        for _ in 0..WRITERS_SLICES {
            if t > 1 {
                slice(1, &mut base, &mut base_lat);
            }
            slice(t, &mut at, &mut lat);
        }
        let [ej_p99, tp_p99] = lat.each_mut().map(|v| p99_of(v));
        let [e, s, p] = rates(&at);
        let one = if t > 1 { rates(&base) } else { [e, s, p] };
        let ej = at[0];
        let syncs = ej.syncs.max(1) as f64;
        let per_sync = e.map(|_| ej.appends as f64 / syncs);
        let us_per_sync = e.map(|_| ej.secs * 1e6 / syncs);
        let us = |v: Option<u32>| v.map_or_else(|| "-".into(), |v| v.to_string());
        println!(
            "{:<8} {:>14} {:>7} {:>12} {:>9} {:>10} {:>7} {:>10} {:>7} {:>10} {:>10} {:>10} {:>10}",
            t,
            shown(e),
            ratio(e, one[0]),
            per_sync.map_or_else(|| "-".into(), |v| format!("{v:.1}")),
            us_per_sync.map_or_else(|| "-".into(), |v| format!("{v:.0}")),
            shown(s),
            ratio(s, one[1]),
            shown(p),
            ratio(p, one[2]),
            ratio(e, s),
            ratio(e, p),
            us(ej_p99),
            us(tp_p99)
        );
        rows.push(format!(
            "{{\"workload\":\"writers_{t:02}\",\"eventjournal_per_s\":{},\"sqlite_per_s\":{},\
             \"tephra_per_s\":{},\"eventjournal_appends_per_sync\":{},\
             \"eventjournal_us_per_sync\":{},\"events\":[{},{},{}],\
             \"one_writer_events\":[{},{},{}],\"p99_us\":[{},{}]}}",
            json(e),
            json(s),
            json(p),
            per_sync.map_or_else(|| "null".into(), |v| format!("{v:.2}")),
            us_per_sync.map_or_else(|| "null".into(), |v| format!("{v:.1}")),
            at[0].events,
            at[1].events,
            at[2].events,
            base[0].events,
            base[1].events,
            base[2].events,
            ej_p99.map_or_else(|| "null".into(), |v| v.to_string()),
            tp_p99.map_or_else(|| "null".into(), |v| v.to_string())
        ));
    }
}

// ----- memory ---------------------------------------------------------------------------------

const MEMORY_ROW: &str = "resident_bytes_per_event_after_open";
/// Set in the child process that opens the store for the memory figure: the store's directory.
const MEMORY_CHILD_ENV: &str = "EVJ_PEERS_MEMORY_CHILD";

/// The process's resident set in bytes: resident pages from `/proc/self/statm` × 4096.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// In the child: resident bytes just before opening the store in `dir` and just after opening
/// it and reading one event, printed as two numbers.
fn memory_child(dir: &str) {
    let before = resident_bytes();
    let store = Store::open(dir, Options::default()).expect("open");
    let first = store.read_event("account-0", 0).expect("first event");
    let after = resident_bytes();
    black_box(first);
    // Pages of the log mapped by the read are the log's, not the index's: counted apart.
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut mapping = "";
    let mut log_bytes = 0u64;
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Rss:") {
            let kb: u64 = kb.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            if mapping.ends_with(".seg") {
                log_bytes += kb * 1024;
            }
            if std::env::var_os("EVJ_PEERS_SMAPS").is_some() && kb >= 256 {
                eprintln!("{kb:>8} kB  {mapping}");
            }
        } else if !line.starts_with(|c: char| c.is_ascii_uppercase()) {
            mapping = line;
        }
    }
    println!("{before} {after} {log_bytes}");
    store.close().expect("close");
}

/// Builds and closes a store of 1,000,000 events (10,000,000 with `EVJ_PEERS_10M=1`), then opens
/// it in a fresh process, whose resident set is not inflated by the build: returns the events and
/// the growth of that process's resident set over opening and one read, per event, without and
/// with the pages of the log that the read mapped.
fn memory_per_event() -> (u64, f64, f64) {
    let (streams, per_stream) = if std::env::var("EVJ_PEERS_10M").is_ok_and(|v| v == "1") {
        (10_000, 1_000)
    } else {
        (INTERLEAVED_STREAMS, INTERLEAVED_PER_STREAM)
    };
    let events = streams * per_stream;
    let d = tempfile::tempdir().expect("tempdir");
    ej_fill(d.path(), streams, per_stream)
        .close()
        .expect("close");
    let out = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .env(MEMORY_CHILD_ENV, d.path())
        .output()
        .expect("memory child");
    assert!(out.status.success(), "memory child failed: {out:?}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let nums: Vec<u64> = text
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let [before, after, log] = nums[..] else {
        panic!("memory child printed {text:?}");
    };
    println!(
        "resident set of a fresh process: {before} bytes before open, {after} after open and one \
         read ({events} events), of which {log} are pages of the log mapped by the read"
    );
    let grown = after.saturating_sub(before);
    (
        events,
        grown.saturating_sub(log) as f64 / events as f64,
        grown as f64 / events as f64,
    )
}

fn main() {
    if let Ok(dir) = std::env::var(MEMORY_CHILD_ENV) {
        memory_child(&dir);
        return;
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    // `EVJ_PEERS_ENGINES=tephra` (a comma-separated list) runs only those engines, so that a
    // count of syscalls taken from outside the process belongs to one engine.
    let engines = std::env::var("EVJ_PEERS_ENGINES").ok();
    let engine_on = |name: &str| {
        engines
            .as_deref()
            .is_none_or(|e| e.split(',').any(|x| x == name))
    };
    let mut rows = Vec::new();
    println!(
        "{:<30} {:>14} {:>14} {:>14} {:>10} {:>10}",
        "workload", "eventjournal/s", "sqlite/s", "tephra/s", "ej/sqlite", "ej/tephra"
    );
    for w in workloads() {
        if !selected(w.name) {
            continue;
        }
        let (mut ej, mut sq, mut tp) = (Vec::new(), Vec::new(), Vec::new());
        let rate = |engine: &str, run: Option<fn(&Path) -> Timed>, into: &mut Vec<f64>| {
            if let Some(run) = run.filter(|_| engine_on(engine)) {
                settle();
                let d = tempfile::tempdir().expect("tempdir");
                let (n, s) = run(d.path());
                into.push(n as f64 / s);
            }
        };
        for _ in 0..w.runs {
            rate("eventjournal", Some(w.ej), &mut ej);
            rate("sqlite", Some(w.sqlite), &mut sq);
            rate("tephra", w.tephra, &mut tp);
        }
        let (e, s, t) = (median(ej), median(sq), median(tp));
        println!(
            "{:<30} {:>14} {:>14} {:>14} {:>10} {:>10}",
            w.name,
            shown(e),
            shown(s),
            shown(t),
            ratio(e, s),
            ratio(e, t)
        );
        rows.push(format!(
            "{{\"workload\":\"{}\",\"eventjournal_per_s\":{},\"sqlite_per_s\":{},\"tephra_per_s\":{}}}",
            w.name,
            json(e),
            json(s),
            json(t)
        ));
    }
    writers(&selected, &engine_on, &mut rows);
    println!("(reopen_1m: events in the store / seconds to open it and read one event)");
    if selected(MEMORY_ROW) {
        let (events, index, total) = memory_per_event();
        println!(
            "resident bytes per event after open: {index:.1} without the log's pages, {total:.1} \
             with them"
        );
        rows.push(format!(
            "{{\"workload\":\"{MEMORY_ROW}\",\"events\":{events},\"bytes_per_event\":{index:.1},\
             \"bytes_per_event_with_log_pages\":{total:.1}}}"
        ));
    }
    // The target directory may be elsewhere (`CARGO_TARGET_DIR`), and a workspace built there
    // has no `target/` of its own.
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        Into::into,
    );
    let path = target.join("peers.json");
    let mut f = std::fs::File::create(&path).expect("peers.json");
    for r in rows {
        writeln!(f, "{r}").expect("write");
    }
    println!("rows written to {}", path.display());
}
