//! eventjournal and SQLite side by side on the same event-store workloads, in one process, one
//! after the other. Prints a table of events per second (median of `RUNS` runs) and the ratio,
//! and writes the rows to `target/peers.json`.
//!
//! `cargo bench --bench peers` (all workloads); `cargo bench --bench peers -- replay` (those whose
//! name contains `replay`).
//!
//! SQLite is used the way a user would build an event store on it: bundled library, WAL mode,
//! `synchronous=FULL` for durable workloads and `OFF` otherwise, one table
//! `(position INTEGER PRIMARY KEY, stream TEXT, version INTEGER, type TEXT, id BLOB, data BLOB,
//! UNIQUE(stream, version))`, and the expected version checked inside each append transaction.

use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use eventjournal::{Durability, EventData, ExpectedVersion, Options, Position, Store};
use rusqlite::{params, Connection};

const RUNS: usize = 5;
const PAYLOAD: [u8; 100] = [0x5a; 100];
const TYPE: &str = "Deposited";

/// One engine's answer to a workload: events it handled and the seconds it took.
type Timed = (u64, f64);

struct Workload {
    name: &'static str,
    /// Runs eventjournal on a fresh directory; returns (events, seconds) for the timed part.
    ej: fn(&std::path::Path) -> Timed,
    sqlite: fn(&std::path::Path) -> Timed,
}

fn ids(n: u64) -> Vec<[u8; 16]> {
    (0..n)
        .map(|_| *eventjournal::EventId::new_random().as_bytes())
        .collect()
}

// ----- eventjournal ---------------------------------------------------------------------------

fn ej_open(dir: &std::path::Path, d: Durability) -> Store {
    Store::open(dir, Options::default().durability(d)).expect("open")
}

fn ej_append(dir: &std::path::Path, d: Durability, batches: u64, size: u64) -> Timed {
    let store = ej_open(dir, d);
    let all_ids = ids(batches * size);
    let start = Instant::now();
    let mut expected = ExpectedVersion::NoStream;
    for b in 0..batches {
        let events = (0..size).map(|i| {
            EventData::new(TYPE, &PAYLOAD[..])
                .with_id(eventjournal::EventId(all_ids[(b * size + i) as usize]))
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

/// Fills a store with `streams` streams, `per_stream` events each, interleaved round-robin in
/// batches of one event per stream; returns it open.
fn ej_fill(dir: &std::path::Path, streams: u64, per_stream: u64) -> Store {
    let store = ej_open(dir, Durability::None);
    let names: Vec<String> = (0..streams).map(|s| format!("account-{s}")).collect();
    for _ in 0..per_stream {
        for name in &names {
            store
                .append(
                    name,
                    ExpectedVersion::Any,
                    [EventData::new(TYPE, &PAYLOAD[..])],
                )
                .expect("fill");
        }
    }
    store
}

fn ej_replay(store: &Store, stream: &str) -> Timed {
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
    let mut n = 0u64;
    let mut sum = 0u64;
    for e in store
        .read_all_forward(Position::START, usize::MAX)
        .expect("read")
    {
        sum += e.expect("event").data().len() as u64;
        n += 1;
    }
    black_box(sum);
    (n, start.elapsed().as_secs_f64())
}

// ----- SQLite ---------------------------------------------------------------------------------

fn sq_open(dir: &std::path::Path, durable: bool) -> Connection {
    let c = Connection::open(dir.join("events.db")).expect("sqlite open");
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
    let tx = c.transaction().expect("begin");
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

fn sq_append(dir: &std::path::Path, durable: bool, batches: u64, size: u64) -> Timed {
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

fn sq_fill(dir: &std::path::Path, streams: u64, per_stream: u64) -> Connection {
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
                let id = eventjournal::EventId::new_random();
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

// ----- workloads ------------------------------------------------------------------------------

const CONTIGUOUS: u64 = 100_000;
const INTERLEAVED_STREAMS: u64 = 1_000;
const INTERLEAVED_PER_STREAM: u64 = 1_000;

fn workloads() -> Vec<Workload> {
    vec![
        Workload {
            name: "append_batch1_nosync",
            ej: |d| ej_append(d, Durability::None, 50_000, 1),
            sqlite: |d| sq_append(d, false, 50_000, 1),
        },
        Workload {
            name: "append_batch100_sync",
            ej: |d| ej_append(d, Durability::Sync, 500, 100),
            sqlite: |d| sq_append(d, true, 500, 100),
        },
        Workload {
            name: "replay_contiguous_100k",
            ej: |d| {
                let s = ej_fill(d, 1, CONTIGUOUS);
                ej_replay(&s, "account-0")
            },
            sqlite: |d| {
                let c = sq_fill(d, 1, CONTIGUOUS);
                sq_replay(&c, "account-0")
            },
        },
        Workload {
            name: "replay_interleaved_1k_of_1m",
            ej: |d| {
                let s = ej_fill(d, INTERLEAVED_STREAMS, INTERLEAVED_PER_STREAM);
                ej_replay(&s, "account-500")
            },
            sqlite: |d| {
                let c = sq_fill(d, INTERLEAVED_STREAMS, INTERLEAVED_PER_STREAM);
                sq_replay(&c, "account-500")
            },
        },
        Workload {
            name: "read_all_1m",
            ej: |d| {
                let s = ej_fill(d, INTERLEAVED_STREAMS, INTERLEAVED_PER_STREAM);
                ej_all(&s)
            },
            sqlite: |d| {
                let c = sq_fill(d, INTERLEAVED_STREAMS, INTERLEAVED_PER_STREAM);
                sq_all(&c)
            },
        },
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let mut rows = Vec::new();
    println!(
        "{:<30} {:>16} {:>16} {:>8}",
        "workload", "eventjournal/s", "sqlite/s", "ratio"
    );
    for w in workloads() {
        if filter.as_deref().is_some_and(|f| !w.name.contains(f)) {
            continue;
        }
        let (mut ej, mut sq) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let d = tempfile::tempdir().expect("tempdir");
            let (n, s) = (w.ej)(d.path());
            ej.push(n as f64 / s);
            let d = tempfile::tempdir().expect("tempdir");
            let (n, s) = (w.sqlite)(d.path());
            sq.push(n as f64 / s);
        }
        let (e, s) = (median(ej), median(sq));
        println!("{:<30} {:>16.0} {:>16.0} {:>7.2}x", w.name, e, s, e / s);
        rows.push(format!(
            "{{\"workload\":\"{}\",\"eventjournal_per_s\":{e:.0},\"sqlite_per_s\":{s:.0}}}",
            w.name
        ));
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers.json");
    let mut f = std::fs::File::create(&path).expect("peers.json");
    for r in rows {
        writeln!(f, "{r}").expect("write");
    }
    println!("rows written to {}", path.display());
}
