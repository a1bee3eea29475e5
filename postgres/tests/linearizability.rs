//! Linearizability on PostgreSQL: 16 clients, each on its own connection, append with expected
//! versions to three shared streams and read their versions; every call is recorded with its
//! invocation and response ticks of one global counter. The history is checked against the
//! model the embedded store's `tests/linearizability.rs` states — the store is the sequence of
//! batches in `$all` order, each read observes a prefix of it:
//!
//! - every version of a stream is granted once, to the batch `$all` holds at that place, with the
//!   event ids that append sent;
//! - an append that returned before another was invoked has the earlier position (real time);
//! - an append refused with `WrongExpectedVersion` was right to be refused: the `actual` it was
//!   told is a version the stream had at some moment inside the call, and does not satisfy its
//!   expected version;
//! - a version read is one the stream had at some moment inside the read: the append that made it
//!   was invoked before the read returned, and no append of a later version returned before the
//!   read was invoked.
//!
//! Skipped without `EVJ_PG_URL` (a failure under CI). Cost: about 2 s
//! (`EVJ_LIN_OPS` per client, default 100).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use eventjournal::{Error, EventData, EventId, ExpectedVersion, Position};
use eventjournal_postgres::PgOptions;

const STREAMS: [&str; 3] = ["lin-a", "lin-b", "lin-c"];
const CLIENTS: usize = 16;

#[derive(Debug, Clone)]
enum Outcome {
    Appended { version: u64, position: u64 },
    Refused { actual: Option<u64> },
    Read { version: Option<u64> },
}

#[derive(Debug, Clone)]
struct Op {
    stream: usize,
    expected: Option<ExpectedVersion>,
    ids: Vec<EventId>,
    inv: u64,
    resp: u64,
    outcome: Outcome,
}

fn satisfied(expected: ExpectedVersion, actual: Option<u64>) -> bool {
    match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => actual.is_none(),
        ExpectedVersion::StreamExists => actual.is_some(),
        ExpectedVersion::Exact(n) => actual == Some(n),
    }
}

/// The violations of the model in `ops`, given the final streams (each event's id and
/// position, by stream and number).
fn check(ops: &[Op], streams: &[Vec<(EventId, u64)>]) -> Vec<String> {
    let mut bad = Vec::new();
    // Who made each version: (stream, version) -> the append's invocation and response.
    let mut made: HashMap<(usize, u64), (u64, u64)> = HashMap::new();
    let mut appends: Vec<&Op> = Vec::new();
    for op in ops {
        if let Outcome::Appended { version, position } = op.outcome {
            let len = op.ids.len() as u64;
            let first = version + 1 - len;
            let held = &streams[op.stream];
            for (k, id) in op.ids.iter().enumerate() {
                match held.get((first + k as u64) as usize) {
                    Some((got, _)) if got == id => {}
                    _ => bad.push(format!("{op:?}: event {} is not its own", first + k as u64)),
                }
                if made
                    .insert((op.stream, first + k as u64), (op.inv, op.resp))
                    .is_some()
                {
                    bad.push(format!(
                        "{op:?}: version {} granted twice",
                        first + k as u64
                    ));
                }
            }
            if held.get(version as usize).map(|e| e.1) != Some(position) {
                bad.push(format!("{op:?}: position is not where `$all` holds it"));
            }
            appends.push(op);
        }
    }
    for (s, held) in streams.iter().enumerate() {
        for n in 0..held.len() as u64 {
            if !made.contains_key(&(s, n)) {
                bad.push(format!(
                    "{} event {n} written by no acknowledged append",
                    STREAMS[s]
                ));
            }
        }
    }
    // Real time: an append that returned before another began committed first.
    let position = |op: &Op| match op.outcome {
        Outcome::Appended { position, .. } => position,
        _ => 0,
    };
    for x in &appends {
        for y in &appends {
            if x.resp < y.inv && position(x) > position(y) {
                bad.push(format!(
                    "{y:?} committed before {x:?}, which returned first"
                ));
            }
        }
    }
    // Observations: a version the stream had at some moment inside the call.
    for op in ops {
        let seen = match op.outcome {
            Outcome::Refused { actual } => {
                if let Some(e) = op.expected {
                    if satisfied(e, actual) {
                        bad.push(format!("{op:?}: refused though {actual:?} satisfies it"));
                    }
                }
                actual
            }
            Outcome::Read { version } => version,
            Outcome::Appended { .. } => continue,
        };
        if let Some(v) = seen {
            match made.get(&(op.stream, v)) {
                Some(&(inv, _)) if inv < op.resp => {}
                _ => bad.push(format!("{op:?}: saw version {v} before it was written")),
            }
        }
        let next = seen.map_or(0, |v| v + 1);
        if let Some(&(_, resp)) = made.get(&(op.stream, next)) {
            if resp < op.inv {
                bad.push(format!(
                    "{op:?}: missed version {next}, written before it began"
                ));
            }
        }
    }
    bad
}

fn ops_per_client() -> usize {
    std::env::var("EVJ_LIN_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

#[test]
fn concurrent_history_on_postgres_is_linearizable() {
    let Some(pg) = common::pg_store_with("lin", PgOptions::default().pool_size(CLIENTS)) else {
        return;
    };
    let clock = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let n_ops = ops_per_client();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (store, clock, barrier) = (pg.store.clone(), clock.clone(), barrier.clone());
            thread::spawn(move || {
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (c as u64 + 1);
                let mut next = || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut last: [Option<u64>; 3] = [None; 3];
                let mut ops = Vec::with_capacity(n_ops);
                barrier.wait();
                for _ in 0..n_ops {
                    let stream = (next() % 3) as usize;
                    let tick = || clock.fetch_add(1, Ordering::SeqCst);
                    if next() % 4 == 0 {
                        let inv = tick();
                        let v = store.stream_version(STREAMS[stream]).unwrap();
                        let resp = tick();
                        last[stream] = v;
                        ops.push(Op {
                            stream,
                            expected: None,
                            ids: Vec::new(),
                            inv,
                            resp,
                            outcome: Outcome::Read { version: v },
                        });
                        continue;
                    }
                    let expected = match next() % 5 {
                        0 => ExpectedVersion::Any,
                        1 => ExpectedVersion::NoStream,
                        2 => ExpectedVersion::StreamExists,
                        _ => last[stream].map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact),
                    };
                    let events: Vec<EventData> = (0..1 + next() % 3)
                        .map(|_| EventData::new("E", ""))
                        .collect();
                    let ids = events.iter().map(|e| e.id()).collect();
                    let inv = tick();
                    let r = store.append(STREAMS[stream], expected, events);
                    let resp = tick();
                    let outcome = match r {
                        Ok(r) => {
                            last[stream] = r.version;
                            Outcome::Appended {
                                version: r.version.unwrap(),
                                position: r.position.unwrap().0,
                            }
                        }
                        Err(Error::WrongExpectedVersion { actual, .. }) => {
                            last[stream] = actual;
                            Outcome::Refused { actual }
                        }
                        Err(e) => panic!("client {c}: {e}"),
                    };
                    ops.push(Op {
                        stream,
                        expected: Some(expected),
                        ids,
                        inv,
                        resp,
                        outcome,
                    });
                }
                ops
            })
        })
        .collect();
    let ops: Vec<Op> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let streams: Vec<Vec<(EventId, u64)>> = STREAMS
        .iter()
        .map(|s| {
            pg.store
                .read_stream_forward(s, 0, usize::MAX)
                .unwrap()
                .iter()
                .map(|e| (e.id(), e.position().0))
                .collect()
        })
        .collect();
    let appended = ops
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Appended { .. }))
        .count();
    let refused = ops
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Refused { .. }))
        .count();
    assert!(
        appended > 50 && refused > 50,
        "{appended} appended, {refused} refused"
    );
    let all = pg
        .store
        .read_all_forward(Position::START, usize::MAX)
        .unwrap();
    assert_eq!(all.len(), streams.iter().map(Vec::len).sum::<usize>());
    let bad = check(&ops, &streams);
    assert!(
        bad.is_empty(),
        "{} violations:\n{}",
        bad.len(),
        bad[..bad.len().min(20)].join("\n")
    );
}

/// The checker rejects a history in which a read missed a version written before it began.
#[test]
fn checker_rejects_a_stale_read() {
    let id = EventId::new_random();
    let ops = vec![
        Op {
            stream: 0,
            expected: Some(ExpectedVersion::NoStream),
            ids: vec![id],
            inv: 0,
            resp: 1,
            outcome: Outcome::Appended {
                version: 0,
                position: 1,
            },
        },
        Op {
            stream: 0,
            expected: None,
            ids: vec![],
            inv: 2,
            resp: 3,
            outcome: Outcome::Read { version: None },
        },
    ];
    let streams = vec![vec![(id, 1)], vec![], vec![]];
    assert_eq!(check(&ops[..1], &streams), Vec::<String>::new());
    assert_eq!(check(&ops, &streams).len(), 1);
}

/// The checker rejects appends committed against real time, and a refusal that was wrong.
#[test]
fn checker_rejects_reordered_appends_and_a_wrong_refusal() {
    let (a, b) = (EventId::new_random(), EventId::new_random());
    let ops = vec![
        Op {
            stream: 0,
            expected: Some(ExpectedVersion::Any),
            ids: vec![a],
            inv: 0,
            resp: 1,
            outcome: Outcome::Appended {
                version: 0,
                position: 9,
            },
        },
        Op {
            stream: 1,
            expected: Some(ExpectedVersion::Any),
            ids: vec![b],
            inv: 2,
            resp: 3,
            outcome: Outcome::Appended {
                version: 0,
                position: 5,
            },
        },
        Op {
            stream: 1,
            expected: Some(ExpectedVersion::Exact(0)),
            ids: vec![],
            inv: 4,
            resp: 5,
            outcome: Outcome::Refused { actual: Some(0) },
        },
    ];
    let streams = vec![vec![(a, 9)], vec![(b, 5)], vec![]];
    let bad = check(&ops, &streams);
    assert_eq!(bad.len(), 2, "{bad:?}");
}
