//! Linearizability: 16 threads append (with expected versions) and read on three shared
//! streams; every call is recorded with its invocation and response ticks of one global counter,
//! its inputs and its outputs, and the history is checked against the model.
//!
//! The model: the store is the sequence of batches in `$all` (commit) order. A successful append
//! is one batch; it takes the next event numbers of each of its streams, as its expected
//! versions say. A failed append, `stream_version` and every read observe the state after some
//! number `G` of batches: a stream read sees exactly the events of that stream in the first `G`
//! batches, a `$all` read exactly the first `G` batches. The history is linearizable when every
//! operation can be given a point inside its [invocation, response] interval such that the
//! appends take their points in commit order and every observation lies between the batches it
//! saw and those it did not. The checker (`check`) decides exactly that (the appends' order is
//! fixed by `$all`, so an earliest-point sweep decides it), after direct checks that name what
//! went wrong more plainly: versions granted once and in order, expected-version rules, reads
//! that are prefixes of the final store made of whole batches, real-time bounds on what each
//! read saw, reads of one thread never going backwards.
//!
//! `concurrent_history_is_linearizable` runs `EVJ_LIN_ROUNDS` (default 8) rounds with
//! `Durability::None`; `concurrent_history_is_linearizable_with_group_commit` one shorter round
//! with `Durability::Sync` (group commit, real fdatasyncs). For a longer run:
//! `EVJ_LIN_ROUNDS=50 cargo test --release --test linearizability -- --nocapture`.
//! The `checker_rejects_*` tests feed the checker faulty histories, to show it can fail.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::Instant;

use eventjournal::*;

const STREAMS: [&str; 3] = ["lin-a", "lin-b", "lin-c"];
const THREADS: usize = 16;
/// Operations per thread in a `Durability::None` round.
const OPS_UNSYNCED: usize = 500;
/// Operations per thread in the `Durability::Sync` round (each append costs an fdatasync).
const OPS_SYNCED: usize = 100;
/// Violations reported at most.
const MAX_REPORTED: usize = 20;

// ---- The history -------------------------------------------------------------------------

/// xorshift64*: a tiny deterministic PRNG.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        (self.next() >> 16) % n
    }
}

/// An event's data: the thread, the operation (by index in its thread) and the event's index in
/// the operation's batch (counted across its streams).
fn tag(thread: usize, op: u32, event: usize) -> u64 {
    ((thread as u64) << 48) | (u64::from(op) << 16) | event as u64
}

/// The batch (thread and operation) a tag belongs to.
fn batch_of(tag: u64) -> u64 {
    tag >> 16
}

fn show_tag(tag: u64) -> String {
    format!(
        "t{}#{}.{}",
        tag >> 48,
        (tag >> 16) & 0xFFFF_FFFF,
        tag & 0xFFFF
    )
}

/// An event as a read returned it, or as the final store holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ev {
    stream: usize,
    tag: u64,
    number: u64,
    position: u64,
}

impl Ev {
    fn of(e: &RecordedEvent) -> Ev {
        Ev {
            stream: stream_index(e.stream()),
            tag: u64::from_le_bytes(e.data().try_into().expect("8-byte event data")),
            number: e.event_number(),
            position: e.position().0,
        }
    }
}

fn show_ev(e: &Ev) -> String {
    format!(
        "{}[{}]={} @{}",
        STREAMS[e.stream],
        e.number,
        show_tag(e.tag),
        e.position
    )
}

fn stream_index(name: &str) -> usize {
    STREAMS
        .iter()
        .position(|s| *s == name)
        .unwrap_or_else(|| panic!("unknown stream `{name}`"))
}

/// One stream's part of an append.
#[derive(Debug, Clone)]
struct Write {
    stream: usize,
    expected: ExpectedVersion,
    events: usize,
}

#[derive(Debug, Clone)]
enum Outcome {
    Ok(Vec<AppendResult>),
    Wrong {
        stream: usize,
        expected: ExpectedVersion,
        actual: Option<u64>,
    },
}

#[derive(Debug, Clone)]
enum Call {
    /// `append` (one write) or `append_multi`; event `i` of the batch (counted across writes) has
    /// the tag `tag(thread, index, i)`.
    Append {
        writes: Vec<Write>,
        outcome: Outcome,
    },
    StreamVersion {
        stream: usize,
        version: Option<u64>,
    },
    /// `read_stream_forward(stream, 0, usize::MAX)`.
    ReadForward {
        stream: usize,
        events: Vec<Ev>,
    },
    /// `read_stream_backward(stream, u64::MAX, max)`.
    ReadBackward {
        stream: usize,
        max: usize,
        events: Vec<Ev>,
    },
    /// `read_all_forward(.., usize::MAX)` from the start (`after: None`) or from the
    /// `next_position()` of the event tagged `after`.
    ReadAll {
        after: Option<u64>,
        events: Vec<Ev>,
    },
    /// `read_all_backward(Position::END, max)`.
    ReadAllBackward {
        max: usize,
        events: Vec<Ev>,
    },
}

/// One call: its thread, its index in the thread, its invocation and response ticks.
#[derive(Debug, Clone)]
struct Op {
    thread: usize,
    index: u32,
    inv: u64,
    resp: u64,
    call: Call,
}

/// The store after the run: each stream read forward, and `$all` read forward.
struct Final {
    streams: Vec<Vec<Ev>>,
    all: Vec<Ev>,
}

impl Final {
    /// The final state whose `$all` is `all` (for hand-made histories).
    fn from_all(all: Vec<Ev>) -> Final {
        let streams = (0..STREAMS.len())
            .map(|s| all.iter().copied().filter(|e| e.stream == s).collect())
            .collect();
        Final { streams, all }
    }
}

fn show_version(v: Option<u64>) -> String {
    v.map_or_else(|| "none".to_string(), |v| v.to_string())
}

fn show_events(events: &[Ev]) -> String {
    const SHOWN: usize = 4;
    let mut s: Vec<String> = events.iter().take(SHOWN).map(show_ev).collect();
    if events.len() > SHOWN {
        s.push(format!("… {} more", events.len() - SHOWN));
    }
    format!("{} events [{}]", events.len(), s.join(", "))
}

fn describe(op: &Op) -> String {
    let what = match &op.call {
        Call::Append { writes, outcome } => {
            let ws: Vec<String> = writes
                .iter()
                .map(|w| format!("{} {:?} +{}", STREAMS[w.stream], w.expected, w.events))
                .collect();
            let out = match outcome {
                Outcome::Ok(rs) => {
                    let rs: Vec<String> = rs
                        .iter()
                        .map(|r| {
                            format!(
                                "v{}@{}",
                                show_version(r.version),
                                r.position.map_or(-1, |p| p.0 as i64)
                            )
                        })
                        .collect();
                    format!("ok {}", rs.join(", "))
                }
                Outcome::Wrong {
                    stream,
                    expected,
                    actual,
                } => format!(
                    "wrong expected version on {} ({expected:?}), actual {}",
                    STREAMS[*stream],
                    show_version(*actual)
                ),
            };
            format!("append[{}] -> {out}", ws.join("; "))
        }
        Call::StreamVersion { stream, version } => {
            format!(
                "stream_version({}) -> {}",
                STREAMS[*stream],
                show_version(*version)
            )
        }
        Call::ReadForward { stream, events } => {
            format!(
                "read_stream_forward({}) -> {}",
                STREAMS[*stream],
                show_events(events)
            )
        }
        Call::ReadBackward {
            stream,
            max,
            events,
        } => format!(
            "read_stream_backward({}, END, {max}) -> {}",
            STREAMS[*stream],
            show_events(events)
        ),
        Call::ReadAll { after, events } => format!(
            "read_all_forward(after {}) -> {}",
            after.map_or_else(|| "START".to_string(), show_tag),
            show_events(events)
        ),
        Call::ReadAllBackward { max, events } => {
            format!("read_all_backward(END, {max}) -> {}", show_events(events))
        }
    };
    format!(
        "t{}#{} [{}..{}] {what}",
        op.thread, op.index, op.inv, op.resp
    )
}

// ---- Running a round ---------------------------------------------------------------------

fn timed<T>(clock: &AtomicU64, f: impl FnOnce() -> T) -> (u64, T, u64) {
    let inv = clock.fetch_add(1, Ordering::SeqCst);
    let r = f();
    let resp = clock.fetch_add(1, Ordering::SeqCst);
    (inv, r, resp)
}

/// Mostly the version the thread last saw; now and then another rule, or a version it has not
/// seen.
fn pick_expected(rng: &mut Rng, last: Option<u64>) -> ExpectedVersion {
    match rng.below(20) {
        0 => ExpectedVersion::Any,
        1 => ExpectedVersion::StreamExists,
        2 => ExpectedVersion::NoStream,
        3 => ExpectedVersion::Exact(last.map_or(0, |v| v + 1)),
        _ => last.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact),
    }
}

fn outcome(r: Result<Vec<AppendResult>>) -> Outcome {
    match r {
        Ok(rs) => Outcome::Ok(rs),
        Err(Error::WrongExpectedVersion {
            stream,
            expected,
            actual,
        }) => Outcome::Wrong {
            stream: stream_index(&stream),
            expected,
            actual,
        },
        Err(e) => panic!("append failed with an unexpected error: {e}"),
    }
}

fn collect(events: Result<impl Iterator<Item = Result<RecordedEvent>>>) -> Vec<Ev> {
    events
        .expect("read")
        .map(|e| e.map(|e| Ev::of(&e)))
        .collect::<Result<Vec<_>>>()
        .expect("read")
}

/// One thread's operations; returns its part of the history.
fn run_thread(
    store: &Store,
    clock: &AtomicU64,
    barrier: &Barrier,
    thread: usize,
    seed: u64,
    n_ops: usize,
) -> Vec<Op> {
    let mut rng = Rng::new(seed);
    // The version of each stream this thread saw last (from its reads and appends).
    let mut last: [Option<u64>; STREAMS.len()] = [None; STREAMS.len()];
    // Where this thread's `$all` reads continue: the next position after the last event seen.
    let mut all_after: Option<(Position, u64)> = None;
    let mut ops = Vec::with_capacity(n_ops);
    let ns = STREAMS.len() as u64;
    barrier.wait();
    for index in 0..n_ops as u32 {
        let data = |event: usize| tag(thread, index, event).to_le_bytes().to_vec();
        let roll = rng.below(100);
        let (inv, call, resp) = if roll < 52 {
            // Appends: one stream (1–3 events), two streams atomically (1–2 events each), or
            // an empty batch, which only checks the expected version.
            let mut writes = Vec::new();
            if roll < 40 {
                let s = rng.below(ns) as usize;
                let n = 1 + rng.below(3) as usize;
                writes.push(Write {
                    stream: s,
                    expected: pick_expected(&mut rng, last[s]),
                    events: n,
                });
            } else if roll < 50 {
                let s1 = rng.below(ns) as usize;
                let s2 = (s1 + 1 + rng.below(ns - 1) as usize) % STREAMS.len();
                for s in [s1, s2] {
                    writes.push(Write {
                        stream: s,
                        expected: pick_expected(&mut rng, last[s]),
                        events: 1 + rng.below(2) as usize,
                    });
                }
            } else {
                let s = rng.below(ns) as usize;
                writes.push(Write {
                    stream: s,
                    expected: pick_expected(&mut rng, last[s]),
                    events: 0,
                });
            }
            let mut next = 0;
            let batch: Vec<StreamWrite> = writes
                .iter()
                .map(|w| {
                    let events = (next..next + w.events)
                        .map(|i| EventData::new("Lin", data(i)))
                        .collect();
                    next += w.events;
                    StreamWrite::new(STREAMS[w.stream], w.expected, events)
                })
                .collect();
            let (inv, r, resp) = if writes.len() == 1 {
                let w = batch.into_iter().next().expect("one write");
                timed(clock, || {
                    store
                        .append(&w.stream, w.expected, w.events)
                        .map(|r| vec![r])
                })
            } else {
                timed(clock, || store.append_multi(batch))
            };
            let outcome = outcome(r);
            match &outcome {
                Outcome::Ok(rs) => {
                    for (w, r) in writes.iter().zip(rs) {
                        last[w.stream] = r.version;
                    }
                }
                Outcome::Wrong { stream, actual, .. } => last[*stream] = *actual,
            }
            (inv, Call::Append { writes, outcome }, resp)
        } else if roll < 60 {
            let s = rng.below(ns) as usize;
            let (inv, version, resp) = timed(clock, || store.stream_version(STREAMS[s]).unwrap());
            last[s] = version;
            (inv, Call::StreamVersion { stream: s, version }, resp)
        } else if roll < 72 {
            let s = rng.below(ns) as usize;
            let (inv, events, resp) = timed(clock, || {
                collect(store.read_stream_forward(STREAMS[s], 0, usize::MAX))
            });
            last[s] = events.last().map(|e| e.number);
            (inv, Call::ReadForward { stream: s, events }, resp)
        } else if roll < 82 {
            let s = rng.below(ns) as usize;
            let max = if rng.below(4) == 0 {
                usize::MAX
            } else {
                1 + rng.below(4) as usize
            };
            let (inv, events, resp) = timed(clock, || {
                collect(store.read_stream_backward(STREAMS[s], u64::MAX, max))
            });
            last[s] = events.first().map(|e| e.number);
            (
                inv,
                Call::ReadBackward {
                    stream: s,
                    max,
                    events,
                },
                resp,
            )
        } else if roll < 94 {
            // `$all` forward to its end: mostly from where this thread's last `$all` read
            // stopped (a catch-up subscription), sometimes from the start.
            let from = if roll < 91 { all_after } else { None };
            let (inv, (events, next), resp) = timed(clock, || {
                let mut next = None;
                let events = store
                    .read_all_forward(from.map_or(Position::START, |f| f.0), usize::MAX)
                    .expect("read $all")
                    .map(|e| {
                        e.map(|e| {
                            next = Some(e.next_position());
                            Ev::of(&e)
                        })
                    })
                    .collect::<Result<Vec<_>>>()
                    .expect("read $all");
                (events, next)
            });
            for e in &events {
                last[e.stream] = last[e.stream].max(Some(e.number));
            }
            let after = from.map(|f| f.1);
            if let (Some(next), Some(e)) = (next, events.last()) {
                all_after = Some((next, e.tag));
            }
            (inv, Call::ReadAll { after, events }, resp)
        } else {
            let max = 1 + rng.below(6) as usize;
            let (inv, events, resp) = timed(clock, || {
                collect(store.read_all_backward(Position::END, max))
            });
            for e in &events {
                last[e.stream] = last[e.stream].max(Some(e.number));
            }
            (inv, Call::ReadAllBackward { max, events }, resp)
        };
        ops.push(Op {
            thread,
            index,
            inv,
            resp,
            call,
        });
        // A thread runs hundreds of operations in one time slice; yielding now and then
        // interleaves the threads' operations more finely.
        if rng.below(4) == 0 {
            std::thread::yield_now();
        }
    }
    ops
}

/// Runs one round on a fresh store; returns the history and the final state.
fn run_round(round: u64, durability: Durability, n_ops: usize) -> (Vec<Op>, Final) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(dir.path(), Options::default().durability(durability)).expect("open");
    let clock = AtomicU64::new(1);
    let barrier = Barrier::new(THREADS);
    let ops: Vec<Op> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, clock, barrier) = (&store, &clock, &barrier);
                let seed = round * 1_000 + t as u64 + 1;
                scope.spawn(move || run_thread(store, clock, barrier, t, seed, n_ops))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    let fin = Final {
        streams: STREAMS
            .iter()
            .map(|s| collect(store.read_stream_forward(s, 0, usize::MAX)))
            .collect(),
        all: collect(store.read_all_forward(Position::START, usize::MAX)),
    };
    store.close().expect("close");
    (ops, fin)
}

// ---- The checker -------------------------------------------------------------------------

/// What a checked history held.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    ops: usize,
    appends_ok: usize,
    multi_ok: usize,
    appends_refused: usize,
    empty_appends: usize,
    stream_reads: usize,
    version_reads: usize,
    all_reads: usize,
    events: usize,
    /// Operations with another operation's invocation or response inside their interval.
    overlapping: usize,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.ops += o.ops;
        self.appends_ok += o.appends_ok;
        self.multi_ok += o.multi_ok;
        self.appends_refused += o.appends_refused;
        self.empty_appends += o.empty_appends;
        self.stream_reads += o.stream_reads;
        self.version_reads += o.version_reads;
        self.all_reads += o.all_reads;
        self.events += o.events;
        self.overlapping += o.overlapping;
    }
}

/// Violations found so far (the first `MAX_REPORTED`), and how many there were.
#[derive(Default)]
struct Violations {
    list: Vec<String>,
    count: usize,
}

impl Violations {
    fn push(&mut self, msg: String) {
        self.count += 1;
        if self.list.len() < MAX_REPORTED {
            self.list.push(msg);
        }
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn into_result<T>(self, ok: T) -> Result<T, Vec<String>> {
        if self.is_empty() {
            return Ok(ok);
        }
        let mut list = self.list;
        if self.count > list.len() {
            list.push(format!("… {} violations in all", self.count));
        }
        Err(list)
    }
}

/// A successful append's events on one stream: `first..=last`.
struct Grant {
    op: usize,
    write: usize,
    stream: usize,
    first: u64,
    last: u64,
    /// Index (in the batch) of its first event.
    base: usize,
}

/// A batch, in commit order.
struct Batch {
    op: usize,
    /// Its events are `$all[start..end]`.
    start: usize,
    end: usize,
}

/// The final store seen as a sequence of batches.
struct Model {
    batches: Vec<Batch>,
    /// Commit index of each successful append, by op.
    commit: HashMap<usize, usize>,
    /// For each stream, (commit index, stream length after it) of the batches writing to it.
    touches: Vec<Vec<(usize, u64)>>,
    /// `$all` length after `g` batches → `g`.
    boundary: HashMap<usize, usize>,
    /// Index in `$all` of each tag.
    all_index: HashMap<u64, usize>,
}

impl Model {
    /// The states `G` (batches committed) in which `stream` has `len` events; `None` if it never
    /// has exactly that many (the length ends inside a batch, or past the final store).
    fn stream_range(&self, stream: usize, len: u64) -> Option<(usize, usize)> {
        let b = self.batches.len();
        let t = &self.touches[stream];
        if len == 0 {
            return Some((0, t.first().map_or(b, |x| x.0)));
        }
        let k = t.binary_search_by_key(&len, |x| x.1).ok()?;
        Some((t[k].0 + 1, t.get(k + 1).map_or(b, |x| x.0)))
    }
}

/// What an operation that is not a successful non-empty append observed: a state `G` in
/// `lo..=hi`; for stream observations also the stream and its length.
struct Obs {
    op: usize,
    lo: usize,
    hi: usize,
    stream_len: Option<(usize, u64)>,
}

fn satisfied(expected: ExpectedVersion, actual: Option<u64>) -> bool {
    match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => actual.is_none(),
        ExpectedVersion::StreamExists => actual.is_some(),
        ExpectedVersion::Exact(v) => actual == Some(v),
    }
}

fn stats(ops: &[Op], fin: &Final) -> Stats {
    let mut st = Stats {
        ops: ops.len(),
        events: fin.all.len(),
        overlapping: ops.iter().filter(|o| o.resp - o.inv > 1).count(),
        ..Stats::default()
    };
    for op in ops {
        match &op.call {
            Call::Append { writes, outcome } => match outcome {
                _ if writes.iter().all(|w| w.events == 0) => st.empty_appends += 1,
                Outcome::Ok(_) => {
                    st.appends_ok += 1;
                    st.multi_ok += usize::from(writes.len() > 1);
                }
                Outcome::Wrong { .. } => st.appends_refused += 1,
            },
            Call::StreamVersion { .. } => st.version_reads += 1,
            Call::ReadForward { .. } | Call::ReadBackward { .. } => st.stream_reads += 1,
            Call::ReadAll { .. } | Call::ReadAllBackward { .. } => st.all_reads += 1,
        }
    }
    st
}

/// Checks a history against the final store; `Err` lists the violations.
fn check(ops: &[Op], fin: &Final) -> Result<Stats, Vec<String>> {
    let mut v = Violations::default();
    check_shapes(ops, fin, &mut v);
    if !v.is_empty() {
        return v.into_result(Stats::default());
    }
    let grants = grants(ops, &mut v);
    check_grants(ops, fin, &grants, &mut v);
    let Some(model) = build_model(ops, fin, &grants, &mut v) else {
        return v.into_result(Stats::default());
    };
    check_write_order(ops, &grants, &model, &mut v);
    let obs = observations(ops, fin, &model, &mut v);
    check_real_time_bounds(ops, &grants, &model, &obs, &mut v);
    check_threads(ops, &model, &obs, &mut v);
    check_linearization(ops, &model, &obs, &mut v);
    v.into_result(stats(ops, fin))
}

/// The history is well formed (each thread's calls in sequence), and so is the final store:
/// each stream numbered from 0 with rising positions, `$all` exactly their union in position
/// order, no event twice.
fn check_shapes(ops: &[Op], fin: &Final, v: &mut Violations) {
    let mut by_thread: HashMap<usize, Vec<&Op>> = HashMap::new();
    for op in ops {
        if op.inv >= op.resp {
            v.push(format!("malformed history: {}", describe(op)));
        }
        by_thread.entry(op.thread).or_default().push(op);
    }
    for list in by_thread.values_mut() {
        list.sort_by_key(|o| o.index);
        for w in list.windows(2) {
            if w[0].resp >= w[1].inv || w[0].index == w[1].index {
                v.push(format!(
                    "malformed history: {} overlaps {}",
                    describe(w[0]),
                    describe(w[1])
                ));
            }
        }
    }
    for (s, events) in fin.streams.iter().enumerate() {
        for (i, e) in events.iter().enumerate() {
            if e.stream != s || e.number != i as u64 {
                v.push(format!(
                    "final store: {} read as event {i} of {}",
                    show_ev(e),
                    STREAMS[s]
                ));
            }
        }
        let in_all: Vec<Ev> = fin.all.iter().copied().filter(|e| e.stream == s).collect();
        if in_all != *events {
            v.push(format!(
                "final store: {} read alone holds {}, but its events in $all are {}",
                STREAMS[s],
                show_events(events),
                show_events(&in_all)
            ));
        }
    }
    for w in fin.all.windows(2) {
        if w[0].position >= w[1].position {
            v.push(format!(
                "final store: $all position order broken at {} then {}",
                show_ev(&w[0]),
                show_ev(&w[1])
            ));
        }
    }
    let mut tags = HashSet::new();
    for e in &fin.all {
        if !tags.insert(e.tag) {
            v.push(format!(
                "final store: event {} is there twice",
                show_tag(e.tag)
            ));
        }
    }
}

/// The event numbers each successful append was granted, from its results.
fn grants(ops: &[Op], v: &mut Violations) -> Vec<Grant> {
    let mut grants = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let Call::Append {
            writes,
            outcome: Outcome::Ok(results),
        } = &op.call
        else {
            continue;
        };
        if results.len() != writes.len() {
            v.push(format!(
                "{}: {} results for {} writes",
                describe(op),
                results.len(),
                writes.len()
            ));
            continue;
        }
        let mut base = 0;
        for (j, (w, r)) in writes.iter().zip(results).enumerate() {
            if w.events > 0 {
                match r.version {
                    Some(last) if last + 1 >= w.events as u64 => grants.push(Grant {
                        op: i,
                        write: j,
                        stream: w.stream,
                        first: last + 1 - w.events as u64,
                        last,
                        base,
                    }),
                    _ => v.push(format!(
                        "{}: version {} cannot hold {} new events",
                        describe(op),
                        show_version(r.version),
                        w.events
                    )),
                }
            }
            base += w.events;
        }
    }
    grants
}

/// Versions granted once each, by the expected-version rules, and the final store holding
/// exactly the acknowledged events where they were granted.
fn check_grants(ops: &[Op], fin: &Final, grants: &[Grant], v: &mut Violations) {
    for g in grants {
        let op = &ops[g.op];
        let Call::Append {
            writes,
            outcome: Outcome::Ok(results),
        } = &op.call
        else {
            unreachable!()
        };
        let w = &writes[g.write];
        let ok = match w.expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => g.first == 0,
            ExpectedVersion::StreamExists => g.first > 0,
            ExpectedVersion::Exact(e) => g.first == e + 1,
        };
        if !ok {
            v.push(format!(
                "{}: {} granted event numbers {}..={} against expected version {:?}",
                describe(op),
                STREAMS[g.stream],
                g.first,
                g.last,
                w.expected
            ));
        }
        let stored = &fin.streams[g.stream];
        for k in 0..=(g.last - g.first) {
            let want = tag(op.thread, op.index, g.base + k as usize);
            let number = g.first + k;
            match stored.get(number as usize) {
                Some(e) if e.tag == want => {}
                Some(e) => v.push(format!(
                    "{}: {}[{number}] should be {} but the store holds {}",
                    describe(op),
                    STREAMS[g.stream],
                    show_tag(want),
                    show_ev(e)
                )),
                None => v.push(format!(
                    "{}: {}[{number}] ({}) is not in the store",
                    describe(op),
                    STREAMS[g.stream],
                    show_tag(want)
                )),
            }
        }
        let position = stored.get(g.last as usize).map(|e| Position(e.position));
        if results[g.write].position != position || position.is_none() {
            v.push(format!(
                "{}: reported position {:?} for {}[{}], the store has it at {position:?}",
                describe(op),
                results[g.write].position,
                STREAMS[g.stream],
                g.last
            ));
        }
    }
    // No event number of a stream granted twice.
    for (s, name) in STREAMS.iter().enumerate() {
        let mut mine: Vec<&Grant> = grants.iter().filter(|g| g.stream == s).collect();
        mine.sort_by_key(|g| (g.first, g.last));
        for w in mine.windows(2) {
            if w[1].first <= w[0].last {
                v.push(format!(
                    "{name} event numbers granted twice: {}..={} to {} and {}..={} to {}",
                    w[0].first,
                    w[0].last,
                    describe(&ops[w[0].op]),
                    w[1].first,
                    w[1].last,
                    describe(&ops[w[1].op])
                ));
            }
        }
    }
    // Nothing in the store but acknowledged events.
    let acknowledged: HashSet<u64> = grants
        .iter()
        .map(|g| batch_of(tag(ops[g.op].thread, ops[g.op].index, 0)))
        .collect();
    for e in &fin.all {
        if !acknowledged.contains(&batch_of(e.tag)) {
            v.push(format!(
                "the store holds {}, an event of an append that was not acknowledged",
                show_ev(e)
            ));
        }
    }
    let granted: u64 = grants.iter().map(|g| g.last - g.first + 1).sum();
    if granted != fin.all.len() as u64 {
        v.push(format!(
            "{granted} events acknowledged, the store holds {}",
            fin.all.len()
        ));
    }
}

/// Each acknowledged batch is one contiguous range of `$all`; commit order is their order there.
fn build_model(ops: &[Op], fin: &Final, grants: &[Grant], v: &mut Violations) -> Option<Model> {
    if !v.is_empty() {
        return None;
    }
    let all_index: HashMap<u64, usize> = fin
        .all
        .iter()
        .enumerate()
        .map(|(i, e)| (e.tag, i))
        .collect();
    let mut per_op: HashMap<usize, Vec<&Grant>> = HashMap::new();
    for g in grants {
        per_op.entry(g.op).or_default().push(g);
    }
    let mut batches = Vec::new();
    for (&op, gs) in &per_op {
        let n: usize = gs.iter().map(|g| (g.last - g.first + 1) as usize).sum();
        let at: Vec<usize> = (0..n)
            .map(|k| all_index[&tag(ops[op].thread, ops[op].index, k)])
            .collect();
        let (start, end) = (
            *at.iter().min().expect("events"),
            *at.iter().max().expect("events") + 1,
        );
        if end - start != n {
            v.push(format!(
                "{}: its batch is not contiguous in $all: it spans $all[{start}..{end}] \
                 for {n} events",
                describe(&ops[op])
            ));
        }
        batches.push(Batch { op, start, end });
    }
    if !v.is_empty() {
        return None;
    }
    batches.sort_by_key(|b| b.start);
    let mut commit = HashMap::new();
    let mut touches = vec![Vec::new(); STREAMS.len()];
    let mut boundary = HashMap::from([(0, 0)]);
    for (c, b) in batches.iter().enumerate() {
        commit.insert(b.op, c);
        boundary.insert(b.end, c + 1);
        let mut gs = per_op[&b.op].clone();
        gs.sort_by_key(|g| g.stream);
        for g in gs {
            let t: &mut Vec<(usize, u64)> = &mut touches[g.stream];
            if t.last().map_or(0, |x| x.1) != g.first {
                v.push(format!(
                    "{}: {} events {}..={} are not next in commit order",
                    describe(&ops[b.op]),
                    STREAMS[g.stream],
                    g.first,
                    g.last
                ));
            }
            t.push((c, g.last + 1));
        }
    }
    if !v.is_empty() {
        return None;
    }
    Some(Model {
        batches,
        commit,
        touches,
        boundary,
        all_index,
    })
}

/// Real-time order of appends: an append acknowledged before another was invoked got lower
/// event numbers on a shared stream, and lower `$all` positions.
fn check_write_order(ops: &[Op], grants: &[Grant], model: &Model, v: &mut Violations) {
    // Items in model order; finds one invoked after a later item (in that order) responded.
    let mut check_order = |items: &[usize], what: &str| {
        let mut min_resp_after: Option<usize> = None;
        for &i in items.iter().rev() {
            if let Some(j) = min_resp_after {
                if ops[j].resp < ops[i].inv {
                    v.push(format!(
                        "{what}: {} was acknowledged before {} was invoked, but comes after it",
                        describe(&ops[j]),
                        describe(&ops[i])
                    ));
                }
            }
            if min_resp_after.is_none_or(|j| ops[i].resp < ops[j].resp) {
                min_resp_after = Some(i);
            }
        }
    };
    for (s, name) in STREAMS.iter().enumerate() {
        let mut mine: Vec<&Grant> = grants.iter().filter(|g| g.stream == s).collect();
        mine.sort_by_key(|g| g.first);
        let items: Vec<usize> = mine.iter().map(|g| g.op).collect();
        check_order(&items, &format!("{name} versions"));
    }
    let items: Vec<usize> = model.batches.iter().map(|b| b.op).collect();
    check_order(&items, "$all commit order");
}

/// Each observing operation's states, after checking what it returned against the final store:
/// stream reads a prefix (forward) or a top slice of a prefix (backward), `$all` reads a slice
/// of `$all`; all ending at a batch boundary.
fn observations(ops: &[Op], fin: &Final, model: &Model, v: &mut Violations) -> Vec<Obs> {
    let mut obs = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        // The length of a stream the operation saw, or the length of `$all` it saw.
        let mut stream_len: Option<(usize, u64)> = None;
        let mut all_len: Option<usize> = None;
        match &op.call {
            Call::Append { writes, outcome } => match outcome {
                Outcome::Ok(results) => {
                    if writes.iter().any(|w| w.events > 0) {
                        continue; // a batch, not an observation
                    }
                    let (w, r) = (&writes[0], &results[0]);
                    if !satisfied(w.expected, r.version) {
                        v.push(format!(
                            "{}: succeeded although version {} does not satisfy {:?}",
                            describe(op),
                            show_version(r.version),
                            w.expected
                        ));
                    }
                    let stored = r
                        .version
                        .and_then(|n| fin.streams[w.stream].get(n as usize))
                        .map(|e| Position(e.position));
                    if r.position != stored {
                        v.push(format!(
                            "{}: position {:?} is not the store's {stored:?}",
                            describe(op),
                            r.position
                        ));
                    }
                    stream_len = Some((w.stream, r.version.map_or(0, |n| n + 1)));
                }
                Outcome::Wrong {
                    stream,
                    expected,
                    actual,
                } => {
                    if !writes
                        .iter()
                        .any(|w| w.stream == *stream && w.expected == *expected)
                    {
                        v.push(format!(
                            "{}: the error names a write the append did not have",
                            describe(op)
                        ));
                        continue;
                    }
                    if satisfied(*expected, *actual) {
                        v.push(format!(
                            "{}: refused although the actual version satisfies the expected one",
                            describe(op)
                        ));
                    }
                    stream_len = Some((*stream, actual.map_or(0, |n| n + 1)));
                }
            },
            Call::StreamVersion { stream, version } => {
                stream_len = Some((*stream, version.map_or(0, |n| n + 1)));
            }
            Call::ReadForward { stream, events } => {
                let stored = &fin.streams[*stream];
                let k = events.len();
                if k > stored.len() || events[..] != stored[..k] {
                    let at = events
                        .iter()
                        .zip(stored)
                        .position(|(a, b)| a != b)
                        .unwrap_or(stored.len());
                    v.push(format!(
                        "{}: not a prefix of the final {}: event {at} is {}, the store's is {}",
                        describe(op),
                        STREAMS[*stream],
                        events.get(at).map_or("missing".into(), show_ev),
                        stored.get(at).map_or("missing".into(), show_ev)
                    ));
                    continue;
                }
                stream_len = Some((*stream, k as u64));
            }
            Call::ReadBackward {
                stream,
                max,
                events,
            } => {
                let stored = &fin.streams[*stream];
                let len = events.first().map_or(0, |e| e.number + 1);
                let k = events.len() as u64;
                let matches = k <= len
                    && len <= stored.len() as u64
                    && events
                        .iter()
                        .zip(stored[(len - k) as usize..len as usize].iter().rev())
                        .all(|(a, b)| a == b);
                if events.len() > *max || !matches || (events.len() < *max && k != len) {
                    v.push(format!(
                        "{}: not the newest {} events of a prefix of the final {} ({})",
                        describe(op),
                        max,
                        STREAMS[*stream],
                        show_events(stored)
                    ));
                    continue;
                }
                stream_len = Some((*stream, len));
            }
            Call::ReadAll { after, events } => {
                let start = match after {
                    None => 0,
                    Some(t) => match model.all_index.get(t) {
                        Some(&i) => i + 1,
                        None => {
                            v.push(format!(
                                "{}: reads after {}, which is not in the store",
                                describe(op),
                                show_tag(*t)
                            ));
                            continue;
                        }
                    },
                };
                let end = start + events.len();
                if end > fin.all.len() || events[..] != fin.all[start..end] {
                    let at = events
                        .iter()
                        .zip(&fin.all[start..])
                        .position(|(a, b)| a != b)
                        .unwrap_or(fin.all.len() - start);
                    v.push(format!(
                        "{}: not a slice of the final $all from {start}: its event {at} is {}, \
                         the store's is {}",
                        describe(op),
                        events.get(at).map_or("missing".into(), show_ev),
                        fin.all.get(start + at).map_or("missing".into(), show_ev)
                    ));
                    continue;
                }
                all_len = Some(end);
            }
            Call::ReadAllBackward { max, events } => {
                let len = match events.first() {
                    None => 0,
                    Some(e) => match model.all_index.get(&e.tag) {
                        Some(&i) => i + 1,
                        None => fin.all.len() + 1,
                    },
                };
                let k = events.len();
                let matches = k <= len
                    && len <= fin.all.len()
                    && events
                        .iter()
                        .zip(fin.all[len - k..len].iter().rev())
                        .all(|(a, b)| a == b);
                if k > *max || !matches || (k < *max && k != len) {
                    v.push(format!(
                        "{}: not the newest {max} events of a prefix of the final $all",
                        describe(op)
                    ));
                    continue;
                }
                all_len = Some(len);
            }
        }
        let range = if let Some((s, len)) = stream_len {
            let r = model.stream_range(s, len);
            if r.is_none() {
                v.push(format!(
                    "{}: saw {len} events of {}, which ends inside a batch or past the store's \
                     {} events: a torn or phantom batch",
                    describe(op),
                    STREAMS[s],
                    fin.streams[s].len()
                ));
            }
            r
        } else if let Some(len) = all_len {
            let r = model.boundary.get(&len).map(|&g| (g, g));
            if r.is_none() {
                v.push(format!(
                    "{}: $all seen up to event {len}, which ends inside a batch: a torn batch",
                    describe(op)
                ));
            }
            r
        } else {
            None
        };
        if let Some((lo, hi)) = range {
            obs.push(Obs {
                op: i,
                lo,
                hi,
                stream_len,
            });
        }
    }
    obs
}

/// What an observation saw is bounded by the appends around it: at least every append
/// acknowledged before it was invoked, at most every append invoked before it returned.
fn check_real_time_bounds(
    ops: &[Op],
    grants: &[Grant],
    model: &Model,
    obs: &[Obs],
    v: &mut Violations,
) {
    // Per stream: (resp, length after) sorted by resp, with running maxima; (inv, events)
    // sorted by inv, with running sums.
    let mut acked: Vec<Vec<(u64, u64)>> = vec![Vec::new(); STREAMS.len()];
    let mut invoked: Vec<Vec<(u64, u64)>> = vec![Vec::new(); STREAMS.len()];
    for g in grants {
        acked[g.stream].push((ops[g.op].resp, g.last + 1));
        invoked[g.stream].push((ops[g.op].inv, g.last - g.first + 1));
    }
    for s in 0..STREAMS.len() {
        acked[s].sort_unstable();
        invoked[s].sort_unstable();
        for i in 1..acked[s].len() {
            acked[s][i].1 = acked[s][i].1.max(acked[s][i - 1].1);
            invoked[s][i].1 += invoked[s][i - 1].1;
        }
    }
    // Over all batches: (resp, commit index + 1) with running maxima; (inv, commit index) with
    // running minima from the end.
    let b = model.batches.len();
    let mut acked_g: Vec<(u64, usize)> = model
        .batches
        .iter()
        .enumerate()
        .map(|(c, x)| (ops[x.op].resp, c + 1))
        .collect();
    acked_g.sort_unstable();
    for i in 1..acked_g.len() {
        acked_g[i].1 = acked_g[i].1.max(acked_g[i - 1].1);
    }
    let mut invoked_g: Vec<(u64, usize)> = model
        .batches
        .iter()
        .enumerate()
        .map(|(c, x)| (ops[x.op].inv, c))
        .collect();
    invoked_g.sort_unstable();
    for i in (0..invoked_g.len().saturating_sub(1)).rev() {
        invoked_g[i].1 = invoked_g[i].1.min(invoked_g[i + 1].1);
    }
    for o in obs {
        let op = &ops[o.op];
        if let Some((s, len)) = o.stream_len {
            let a = acked[s].partition_point(|x| x.0 < op.inv);
            let at_least = if a == 0 { 0 } else { acked[s][a - 1].1 };
            let n = invoked[s].partition_point(|x| x.0 < op.resp);
            let at_most = if n == 0 { 0 } else { invoked[s][n - 1].1 };
            if len < at_least || len > at_most {
                v.push(format!(
                    "{}: saw {len} events of {}, but appends acknowledged before it was invoked \
                     had made it {at_least} long, and appends invoked before it returned at most \
                     {at_most}",
                    describe(op),
                    STREAMS[s]
                ));
                continue;
            }
        }
        let a = acked_g.partition_point(|x| x.0 < op.inv);
        let at_least = if a == 0 { 0 } else { acked_g[a - 1].1 };
        let n = invoked_g.partition_point(|x| x.0 < op.resp);
        let at_most = invoked_g.get(n).map_or(b, |x| x.1);
        if o.hi < at_least || o.lo > at_most {
            v.push(format!(
                "{}: saw the state after {}..={} batches, but batch {} had been acknowledged \
                 before it was invoked (so the first {at_least} batches were committed), and \
                 batch {at_most} was invoked only after it returned",
                describe(op),
                o.lo,
                o.hi,
                at_least.saturating_sub(1)
            ));
        }
    }
}

/// A thread never sees the store go backwards: each of its calls sees at least the state its
/// earlier calls saw or made.
fn check_threads(ops: &[Op], model: &Model, obs: &[Obs], v: &mut Violations) {
    // Per op: the states it may have seen, and the least state it leaves the thread in.
    let mut range: HashMap<usize, (usize, usize, usize)> = HashMap::new();
    for o in obs {
        range.insert(o.op, (o.lo, o.hi, o.lo));
    }
    for (&op, &c) in &model.commit {
        range.insert(op, (c, c, c + 1));
    }
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| (ops[i].thread, ops[i].index));
    let mut floor: Option<(usize, usize)> = None; // (state, op that put the thread there)
    for (n, &i) in order.iter().enumerate() {
        if n > 0 && ops[order[n - 1]].thread != ops[i].thread {
            floor = None;
        }
        let Some(&(lo, hi, after)) = range.get(&i) else {
            continue;
        };
        if let Some((f, by)) = floor {
            if hi < f {
                v.push(format!(
                    "thread {} went backwards: {} saw the state after at most {hi} batches, \
                     after {} had seen or made the state after {f}",
                    ops[i].thread,
                    describe(&ops[i]),
                    describe(&ops[by])
                ));
            }
        }
        if floor.is_none_or(|(f, _)| after.max(lo) > f) {
            floor = Some((after.max(lo), i));
        }
    }
}

/// The exact check: places every operation at the earliest point its constraints allow — the
/// appends in commit order, each observation after the last batch it saw and before the first
/// it did not — and fails if some operation's point falls after its response.
fn check_linearization(ops: &[Op], model: &Model, obs: &[Obs], v: &mut Violations) {
    // A point is (tick, n): n steps of an infinitesimal after tick.
    type Point = (u64, u64);
    let after = |t: Point| (t.0, t.1 + 1);
    let b = model.batches.len();
    let mut by_hi: Vec<Vec<&Obs>> = (0..=b).map(|_| Vec::new()).collect();
    for o in obs {
        by_hi[o.hi].push(o);
    }
    // Each batch's point, and the op whose constraint set it.
    let mut points: Vec<(Point, usize)> = Vec::with_capacity(b);
    for (w, group) in by_hi.iter().enumerate() {
        // The earliest point for batch `w`: after batch `w - 1`, and after every observation
        // that did not see it.
        let mut floor: Option<(Point, usize)> = w
            .checked_sub(1)
            .map(|p| (after(points[p].0), model.batches[p].op));
        for o in group {
            let op = &ops[o.op];
            let mut t = (op.inv, 1);
            let mut why = None;
            if o.lo > 0 && after(points[o.lo - 1].0) > t {
                t = after(points[o.lo - 1].0);
                why = Some(o.lo - 1);
            }
            if t >= (op.resp, 0) {
                let why = why.expect("a point later than the invocation has a cause");
                v.push(format!(
                    "not linearizable: {} must follow batch {why}, {}, which cannot be placed \
                     before tick {} (it must follow {})",
                    describe(op),
                    describe(&ops[model.batches[why].op]),
                    points[why].0 .0,
                    describe(&ops[points[why].1])
                ));
                return;
            }
            if floor.is_none_or(|(f, _)| after(t) > f) {
                floor = Some((after(t), o.op));
            }
        }
        if w == b {
            break;
        }
        let op_index = model.batches[w].op;
        let op = &ops[op_index];
        let (mut t, mut why) = ((op.inv, 1), op_index);
        if let Some((f, by)) = floor {
            if f > t {
                (t, why) = (f, by);
            }
        }
        if t >= (op.resp, 0) {
            v.push(format!(
                "not linearizable: batch {w}, {}, must follow {}, which cannot be placed before \
                 tick {}",
                describe(op),
                describe(&ops[why]),
                t.0
            ));
            return;
        }
        points.push((t, why));
    }
}

// ---- The tests ---------------------------------------------------------------------------

fn rounds() -> u64 {
    std::env::var("EVJ_LIN_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

/// Writes a failed round's history (by invocation) and final store to a file; returns its path.
fn dump(round: u64, ops: &[Op], fin: &Final) -> String {
    let path = std::env::temp_dir().join(format!("evj-linearizability-round-{round}.txt"));
    let mut order: Vec<&Op> = ops.iter().collect();
    order.sort_by_key(|o| o.inv);
    let mut text: Vec<String> = order.iter().map(|o| describe(o)).collect();
    text.push("final $all:".to_string());
    text.extend(fin.all.iter().map(show_ev));
    match std::fs::write(&path, text.join("\n")) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("nowhere: {e}"),
    }
}

fn run_and_check(first_round: u64, rounds: u64, durability: Durability, n_ops: usize) {
    let started = Instant::now();
    let mut total = Stats::default();
    for round in first_round..first_round + rounds {
        let (ops, fin) = run_round(round, durability, n_ops);
        match check(&ops, &fin) {
            Ok(st) => total.add(&st),
            Err(violations) => panic!(
                "round {round} ({durability:?}): the history is not linearizable (whole history \
                 in {}):\n{}",
                dump(round, &ops, &fin),
                violations.join("\n")
            ),
        }
    }
    println!(
        "linearizability ({durability:?}): {rounds} rounds, {} operations checked ({} overlapping \
         another): {} appends succeeded ({} multi-stream), {} refused, {} empty; {} stream \
         reads, {} stream_version, {} $all reads; {} events; {:.2} s",
        total.ops,
        total.overlapping,
        total.appends_ok,
        total.multi_ok,
        total.appends_refused,
        total.empty_appends,
        total.stream_reads,
        total.version_reads,
        total.all_reads,
        total.events,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn concurrent_history_is_linearizable() {
    run_and_check(0, rounds(), Durability::None, OPS_UNSYNCED);
}

#[test]
fn concurrent_history_is_linearizable_with_group_commit() {
    run_and_check(10_000, 1, Durability::Sync, OPS_SYNCED);
}

// ---- The checker fails on bad histories --------------------------------------------------

fn ev(stream: usize, tag: u64, number: u64, position: u64) -> Ev {
    Ev {
        stream,
        tag,
        number,
        position,
    }
}

fn op(thread: usize, index: u32, inv: u64, resp: u64, call: Call) -> Op {
    Op {
        thread,
        index,
        inv,
        resp,
        call,
    }
}

fn ok(version: u64, position: u64) -> AppendResult {
    AppendResult {
        version: Some(version),
        position: Some(Position(position)),
    }
}

fn write(stream: usize, expected: ExpectedVersion, events: usize) -> Write {
    Write {
        stream,
        expected,
        events,
    }
}

/// A small valid history on `lin-a` (0) and `lin-b` (1):
/// t0#0 appends a0; t1#0 tries the same and is refused; t1#1 appends a1, a2 and b0 atomically;
/// t2 reads `lin-a` while that is in flight (seeing only a0), then `$all`; t0 reads `lin-b`'s
/// version and the newest two events of `lin-a`.
fn valid_history() -> (Vec<Op>, Final) {
    let a0 = ev(0, tag(0, 0, 0), 0, 100);
    let a1 = ev(0, tag(1, 1, 0), 1, 200);
    let a2 = ev(0, tag(1, 1, 1), 2, 300);
    let b0 = ev(1, tag(1, 1, 2), 0, 400);
    let ops = vec![
        op(
            0,
            0,
            10,
            40,
            Call::Append {
                writes: vec![write(0, ExpectedVersion::NoStream, 1)],
                outcome: Outcome::Ok(vec![ok(0, 100)]),
            },
        ),
        op(
            0,
            1,
            120,
            130,
            Call::StreamVersion {
                stream: 1,
                version: Some(0),
            },
        ),
        op(
            0,
            2,
            140,
            150,
            Call::ReadBackward {
                stream: 0,
                max: 2,
                events: vec![a2, a1],
            },
        ),
        op(
            1,
            0,
            20,
            50,
            Call::Append {
                writes: vec![write(0, ExpectedVersion::NoStream, 1)],
                outcome: Outcome::Wrong {
                    stream: 0,
                    expected: ExpectedVersion::NoStream,
                    actual: Some(0),
                },
            },
        ),
        op(
            1,
            1,
            60,
            90,
            Call::Append {
                writes: vec![
                    write(0, ExpectedVersion::Exact(0), 2),
                    write(1, ExpectedVersion::NoStream, 1),
                ],
                outcome: Outcome::Ok(vec![ok(2, 300), ok(0, 400)]),
            },
        ),
        op(
            2,
            0,
            70,
            80,
            Call::ReadForward {
                stream: 0,
                events: vec![a0],
            },
        ),
        op(
            2,
            1,
            100,
            110,
            Call::ReadAll {
                after: None,
                events: vec![a0, a1, a2, b0],
            },
        ),
    ];
    (ops, Final::from_all(vec![a0, a1, a2, b0]))
}

fn find(ops: &mut [Op], thread: usize, index: u32) -> &mut Op {
    ops.iter_mut()
        .find(|o| o.thread == thread && o.index == index)
        .expect("op")
}

/// Asserts the checker rejects the history with a message containing `what`.
fn assert_rejected(ops: &[Op], fin: &Final, what: &str) {
    match check(ops, fin) {
        Ok(_) => panic!("the checker accepted a faulty history"),
        Err(violations) => {
            let all = violations.join("\n");
            println!("rejected as expected:\n{all}");
            assert!(
                all.contains(what),
                "expected a violation mentioning {what:?}, got:\n{all}"
            );
        }
    }
}

#[test]
fn checker_accepts_a_valid_hand_made_history() {
    let (ops, fin) = valid_history();
    let st = check(&ops, &fin).unwrap_or_else(|v| panic!("{}", v.join("\n")));
    assert_eq!((st.appends_ok, st.multi_ok, st.appends_refused), (2, 1, 1));
}

#[test]
fn checker_rejects_two_appends_granted_the_same_version() {
    let (mut ops, fin) = valid_history();
    // t1#0's NoStream append also "succeeds", with a0's version; the store keeps t0's event.
    find(&mut ops, 1, 0).call = Call::Append {
        writes: vec![write(0, ExpectedVersion::NoStream, 1)],
        outcome: Outcome::Ok(vec![ok(0, 100)]),
    };
    assert_rejected(&ops, &fin, "granted twice");
}

#[test]
fn checker_rejects_a_read_seeing_a_later_event_without_an_earlier_one() {
    let (mut ops, fin) = valid_history();
    // `$all` without a0 (then a1, a2, b0).
    let Call::ReadAll { events, .. } = &mut find(&mut ops, 2, 1).call else {
        unreachable!()
    };
    events.remove(0);
    assert_rejected(&ops, &fin, "not a slice of the final $all");

    // `lin-a` read as a0, a2.
    let (mut ops, fin) = valid_history();
    let a2 = fin.streams[0][2];
    let Call::ReadForward { events, .. } = &mut find(&mut ops, 2, 0).call else {
        unreachable!()
    };
    events.push(a2);
    assert_rejected(&ops, &fin, "not a prefix of the final lin-a");
}

#[test]
fn checker_rejects_a_torn_batch() {
    let (mut ops, fin) = valid_history();
    // `lin-a` read as a0, a1: half of t1#1's batch.
    let a1 = fin.streams[0][1];
    let Call::ReadForward { events, .. } = &mut find(&mut ops, 2, 0).call else {
        unreachable!()
    };
    events.push(a1);
    assert_rejected(&ops, &fin, "torn");
}

#[test]
fn checker_rejects_a_read_going_backwards() {
    let (mut ops, fin) = valid_history();
    // After t2 saw all four events, it reads `lin-a` and sees only a0.
    let a0 = fin.streams[0][0];
    ops.push(op(
        2,
        2,
        160,
        170,
        Call::ReadForward {
            stream: 0,
            events: vec![a0],
        },
    ));
    assert_rejected(&ops, &fin, "went backwards");
}

#[test]
fn checker_rejects_a_multi_stream_batch_seen_on_one_stream_and_then_missing_on_the_other() {
    let (mut ops, fin) = valid_history();
    // t2 sees t1#1's batch on `lin-a` while it is in flight (allowed); then t3, invoked after
    // that read returned, finds `lin-b` empty while the append is still in flight. Each read
    // alone is within its bounds; together they are not linearizable.
    let a = fin.streams[0].clone();
    let Call::ReadForward { events, .. } = &mut find(&mut ops, 2, 0).call else {
        unreachable!()
    };
    *events = a;
    ops.push(op(
        3,
        0,
        82,
        85,
        Call::StreamVersion {
            stream: 1,
            version: None,
        },
    ));
    assert_rejected(&ops, &fin, "not linearizable");
}

#[test]
fn checker_rejects_a_wrong_actual_version() {
    let (mut ops, fin) = valid_history();
    // t1#0 is refused naming version 2 as actual: the stream got there only after t1#0 returned.
    find(&mut ops, 1, 0).call = Call::Append {
        writes: vec![write(0, ExpectedVersion::NoStream, 1)],
        outcome: Outcome::Wrong {
            stream: 0,
            expected: ExpectedVersion::NoStream,
            actual: Some(2),
        },
    };
    assert_rejected(&ops, &fin, "invoked before it returned at most");
}

/// On a real history: a read made stale (its last batch dropped, a batch acknowledged before
/// the read was invoked) is caught, though what remains is a valid prefix of whole batches.
#[test]
fn checker_rejects_a_real_history_with_one_read_made_stale() {
    let (ops, fin) = run_round(20_000, Durability::None, 100);
    check(&ops, &fin).unwrap_or_else(|v| panic!("{}", v.join("\n")));
    let acked_at: HashMap<u64, u64> = ops
        .iter()
        .filter(|o| {
            matches!(
                o.call,
                Call::Append {
                    outcome: Outcome::Ok(_),
                    ..
                }
            )
        })
        .map(|o| (batch_of(tag(o.thread, o.index, 0)), o.resp))
        .collect();
    let mut made_stale = 0;
    for (i, o) in ops.iter().enumerate() {
        let (Call::ReadForward { events, .. }
        | Call::ReadAll {
            after: None,
            events,
        }) = &o.call
        else {
            continue;
        };
        let Some(last) = events.last() else { continue };
        if acked_at[&batch_of(last.tag)] >= o.inv {
            continue;
        }
        let mut bad = ops.clone();
        let (Call::ReadForward { events, .. } | Call::ReadAll { events, .. }) = &mut bad[i].call
        else {
            unreachable!()
        };
        events.retain(|e| batch_of(e.tag) != batch_of(last.tag));
        assert!(
            check(&bad, &fin).is_err(),
            "the checker accepted a stale {}",
            describe(&bad[i])
        );
        made_stale += 1;
        if made_stale == 20 {
            break;
        }
    }
    println!("{made_stale} reads made stale, each rejected");
    assert!(made_stale > 0, "no read to make stale");
}
