//! Model-based test: random sequences of appends, retries, multi-stream appends, reads and
//! reopens run against a real [`Store`] and against a plain in-memory model of EventStoreDB's
//! expected-version and idempotency rules; results and full contents must agree after every op.
//!
//! Runs 64 cases by default; set `PROPTEST_CASES` for more.

use std::collections::HashMap;

use eventjournal::{
    AppendResult, Durability, Error, EventData, EventId, ExpectedVersion, Options, Position,
    RecordedEvent, Store, StreamWrite,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const NAMES: [&str; 4] = ["alpha", "beta-1", "γάμμα", "d"];
const TYPES: [&str; 4] = ["Created", "Updated", "Deleted", "T"];
const LONG_TYPE: &str = "AVeryLongEventTypeNameThatTakesUpRoomInTheRecord.................................\
                         ..........................................................................";

type TestResult<T = ()> = Result<T, TestCaseError>;

/// Turns a store error into a test failure.
fn ok<T>(r: eventjournal::Result<T>, what: &str) -> TestResult<T> {
    r.map_err(|e| TestCaseError::fail(format!("{what}: unexpected error {e:?}")))
}

fn collect<I: Iterator<Item = eventjournal::Result<RecordedEvent>>>(
    it: eventjournal::Result<I>,
    what: &str,
) -> TestResult<Vec<RecordedEvent>> {
    ok(
        ok(it, what)?.collect::<eventjournal::Result<Vec<_>>>(),
        what,
    )
}

// ---------------------------------------------------------------------------------------------
// Generated operations. Selectors (`u8`, `u16`) are resolved against the model's state when the
// op runs, so every generated sequence is meaningful and shrinks well.
// ---------------------------------------------------------------------------------------------

/// An expected version, relative to the stream's version when the op runs.
#[derive(Debug, Clone, Copy)]
enum Exp {
    Any,
    NoStream,
    StreamExists,
    /// `Exact(version + delta)`, where an empty stream's version counts as -1 and -1 itself
    /// means `NoStream` (below -1 is clamped to `Exact(0)`).
    Exact(i8),
}

#[derive(Debug, Clone)]
enum Ev {
    Fresh {
        ty: u8,
        data_len: u16,
        meta_len: u8,
        seed: u8,
    },
    /// A new payload with the id of an existing event of the target stream (selector).
    Reuse(u16),
}

#[derive(Debug, Clone)]
enum Mutation {
    None,
    DropLast,
    DropFirst,
    AddFresh,
    ReplaceOne(u8),
    SwapFirstTwo,
    Expected(Exp),
    OtherStream(u8),
}

/// Expected version of a window retry starting at event number `start`.
#[derive(Debug, Clone, Copy)]
enum WinExp {
    Any,
    StreamExists,
    /// `Exact(start - 1)`, or `NoStream` when `start == 0`.
    Before,
    /// `Exact(start - 1 + delta)`, clamped at 0.
    Off(i8),
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: u8,
        exp: Exp,
        events: Vec<Ev>,
    },
    /// A batch of `n` fresh events that may not fit in a segment (it then gets one of its own).
    Bulk {
        stream: u8,
        exp: Exp,
        n: u8,
        data_len: u16,
    },
    /// Re-send an earlier successful stream write, maybe altered.
    Retry {
        pick: u16,
        mutation: Mutation,
    },
    /// Re-send a window of a stream's existing events (maybe with a fresh one after it).
    Window {
        stream: u8,
        start: u16,
        len: u8,
        exp: WinExp,
        extra: bool,
    },
    Multi {
        parts: Vec<(u8, Exp, Vec<Ev>)>,
    },
    /// Re-send an earlier successful multi-stream append, maybe with one part altered.
    MultiRetry {
        pick: u16,
        mutation: Option<(u8, Mutation)>,
    },
    Invalid {
        kind: u8,
    },
    ReadForward {
        stream: u8,
        from: u16,
        max: Option<u16>,
    },
    ReadBackward {
        stream: u8,
        from: Option<u16>,
        max: Option<u16>,
    },
    ReadEvent {
        stream: u8,
        number: u16,
    },
    ReadAllFrom {
        pick: u16,
        next: bool,
        forward: bool,
        max: Option<u8>,
    },
    PageAll {
        page: u8,
        forward: bool,
    },
    BadPosition {
        pick: u16,
        forward: bool,
    },
    Reopen {
        close: bool,
        /// Remove the event-id tables first (as if lost): retries are then recognised through
        /// the stream index until the store has rebuilt them.
        drop_id_tables: bool,
    },
}

fn exp_strategy() -> impl Strategy<Value = Exp> {
    prop_oneof![
        3 => Just(Exp::Any),
        1 => Just(Exp::NoStream),
        1 => Just(Exp::StreamExists),
        7 => Just(Exp::Exact(0)),
        2 => (-2i8..=2).prop_map(Exp::Exact),
    ]
}

fn ev_strategy() -> impl Strategy<Value = Ev> {
    prop_oneof![
        8 => (
            0u8..5,
            0u16..=300,
            prop_oneof![3 => Just(0u8), 1 => 1u8..=40],
            any::<u8>()
        )
            .prop_map(|(ty, data_len, meta_len, seed)| Ev::Fresh {
                ty,
                data_len,
                meta_len,
                seed
            }),
        1 => any::<u16>().prop_map(Ev::Reuse),
    ]
}

fn events_strategy() -> impl Strategy<Value = Vec<Ev>> {
    prop::collection::vec(ev_strategy(), 0..=4)
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => Just(Mutation::None),
        1 => Just(Mutation::DropLast),
        1 => Just(Mutation::DropFirst),
        1 => Just(Mutation::AddFresh),
        1 => any::<u8>().prop_map(Mutation::ReplaceOne),
        1 => Just(Mutation::SwapFirstTwo),
        2 => exp_strategy().prop_map(Mutation::Expected),
        1 => any::<u8>().prop_map(Mutation::OtherStream),
    ]
}

fn win_exp_strategy() -> impl Strategy<Value = WinExp> {
    prop_oneof![
        Just(WinExp::Any),
        Just(WinExp::StreamExists),
        Just(WinExp::Before),
        (-2i8..=2).prop_map(WinExp::Off),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let max16 = || prop::option::weighted(0.8, 0u16..12);
    prop_oneof![
        10 => (any::<u8>(), exp_strategy(), events_strategy())
            .prop_map(|(stream, exp, events)| Op::Append { stream, exp, events }),
        1 => (any::<u8>(), exp_strategy(), 8u8..=24, 200u16..=300)
            .prop_map(|(stream, exp, n, data_len)| Op::Bulk { stream, exp, n, data_len }),
        5 => (any::<u16>(), mutation_strategy())
            .prop_map(|(pick, mutation)| Op::Retry { pick, mutation }),
        2 => (any::<u8>(), any::<u16>(), any::<u8>(), win_exp_strategy(), prop::bool::weighted(0.25))
            .prop_map(|(stream, start, len, exp, extra)| Op::Window { stream, start, len, exp, extra }),
        4 => prop::collection::vec((any::<u8>(), exp_strategy(), events_strategy()), 2..=3)
            .prop_map(|parts| Op::Multi { parts }),
        2 => (
            any::<u16>(),
            prop::option::weighted(0.4, (any::<u8>(), mutation_strategy()))
        )
            .prop_map(|(pick, mutation)| Op::MultiRetry { pick, mutation }),
        1 => (0u8..5).prop_map(|kind| Op::Invalid { kind }),
        2 => (any::<u8>(), 0u16..12, max16())
            .prop_map(|(stream, from, max)| Op::ReadForward { stream, from, max }),
        2 => (any::<u8>(), max16(), max16())
            .prop_map(|(stream, from, max)| Op::ReadBackward { stream, from, max }),
        2 => (any::<u8>(), 0u16..12).prop_map(|(stream, number)| Op::ReadEvent { stream, number }),
        2 => (any::<u16>(), any::<bool>(), any::<bool>(), prop::option::weighted(0.7, 0u8..8))
            .prop_map(|(pick, next, forward, max)| Op::ReadAllFrom { pick, next, forward, max }),
        1 => (1u8..6, any::<bool>()).prop_map(|(page, forward)| Op::PageAll { page, forward }),
        1 => (any::<u16>(), any::<bool>()).prop_map(|(pick, forward)| Op::BadPosition { pick, forward }),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(close, drop_id_tables)| Op::Reopen {
            close,
            drop_id_tables
        }),
    ]
}

// ---------------------------------------------------------------------------------------------
// The model.
// ---------------------------------------------------------------------------------------------

/// One event as the model knows it. Position, next position and timestamp are learned from the
/// store the first time the event is read, and must never change afterwards.
#[derive(Debug, Clone)]
struct MEvent {
    stream: String,
    number: u64,
    id: EventId,
    ty: String,
    data: Vec<u8>,
    meta: Vec<u8>,
    pos: Option<Position>,
    next: Option<Position>,
    ts: Option<u64>,
}

impl MEvent {
    fn to_data(&self) -> EventData {
        EventData::new(self.ty.clone(), self.data.clone())
            .with_id(self.id)
            .with_metadata(self.meta.clone())
    }
}

#[derive(Default)]
struct Model {
    /// `$all`, in commit order.
    all: Vec<MEvent>,
    /// Per stream, indexes into `all` by event number.
    streams: HashMap<String, Vec<usize>>,
    /// Stream names in the order they were first written.
    order: Vec<String>,
}

/// The model's verdict on one stream write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Write,
    /// Nothing to write; the result has this version.
    Done(Option<u64>),
}

/// A `WrongExpectedVersion` as the model predicts it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wrong {
    stream: String,
    expected: ExpectedVersion,
    actual: Option<u64>,
}

impl Model {
    fn events(&self, stream: &str) -> Vec<&MEvent> {
        self.streams
            .get(stream)
            .map(|ix| ix.iter().map(|&i| &self.all[i]).collect())
            .unwrap_or_default()
    }

    fn len(&self, stream: &str) -> u64 {
        self.streams.get(stream).map_or(0, |v| v.len() as u64)
    }

    fn version(&self, stream: &str) -> Option<u64> {
        self.len(stream).checked_sub(1)
    }

    fn event(&self, stream: &str, n: u64) -> &MEvent {
        &self.all[self.streams[stream][n as usize]]
    }

    fn id_at(&self, stream: &str, n: u64) -> EventId {
        self.event(stream, n).id
    }

    /// The rules of `Store::append` for one stream write.
    fn check(&self, w: &StreamWrite) -> Result<Plan, Wrong> {
        let count = self.len(&w.stream);
        let actual = count.checked_sub(1);
        let wrong = || Wrong {
            stream: w.stream.clone(),
            expected: w.expected,
            actual,
        };
        let len = w.events.len() as u64;
        if len == 0 {
            let ok = match w.expected {
                ExpectedVersion::Any => true,
                ExpectedVersion::NoStream => actual.is_none(),
                ExpectedVersion::StreamExists => actual.is_some(),
                ExpectedVersion::Exact(n) => actual == Some(n),
            };
            return if ok {
                Ok(Plan::Done(actual))
            } else {
                Err(wrong())
            };
        }
        // An idempotent retry: the stream holds exactly these ids from `start` on.
        let retry_from = |start: u64| {
            let holds = start + len <= count
                && w.events
                    .iter()
                    .enumerate()
                    .all(|(i, e)| self.id_at(&w.stream, start + i as u64) == e.id());
            if holds {
                Ok(Plan::Done(Some(start + len - 1)))
            } else {
                Err(wrong())
            }
        };
        match (w.expected, actual) {
            (ExpectedVersion::Exact(n), Some(a)) if a == n => Ok(Plan::Write),
            (ExpectedVersion::Exact(n), Some(a)) if a > n => retry_from(n + 1),
            (ExpectedVersion::Exact(_), _) => Err(wrong()),
            (ExpectedVersion::NoStream, None) => Ok(Plan::Write),
            (ExpectedVersion::NoStream, Some(_)) => retry_from(0),
            (ExpectedVersion::StreamExists, None) => Err(wrong()),
            (ExpectedVersion::Any | ExpectedVersion::StreamExists, _) => {
                // Retry detection under Any/StreamExists: the newest event with the batch's first
                // id; the batch must continue from there.
                let first = w.events[0].id();
                match (0..count)
                    .rev()
                    .find(|&k| self.id_at(&w.stream, k) == first)
                {
                    Some(k) => retry_from(k),
                    None => Ok(Plan::Write),
                }
            }
        }
    }

    /// The model's outcome for a (multi-)stream batch: all writes checked in order, the first
    /// failure wins.
    fn plan(&self, writes: &[StreamWrite]) -> Result<Vec<Plan>, Wrong> {
        writes.iter().map(|w| self.check(w)).collect()
    }

    /// Applies an accepted batch; returns the version of each write's result.
    fn apply(&mut self, writes: &[StreamWrite], plans: &[Plan]) -> Vec<Option<u64>> {
        let mut versions = Vec::new();
        for (w, plan) in writes.iter().zip(plans) {
            match plan {
                Plan::Done(v) => versions.push(*v),
                Plan::Write => {
                    if !self.streams.contains_key(&w.stream) {
                        self.order.push(w.stream.clone());
                    }
                    let first = self.len(&w.stream);
                    for (k, e) in w.events.iter().enumerate() {
                        self.all.push(MEvent {
                            stream: w.stream.clone(),
                            number: first + k as u64,
                            id: e.id(),
                            ty: e.event_type().to_string(),
                            data: e.data().to_vec(),
                            meta: e.metadata().to_vec(),
                            pos: None,
                            next: None,
                            ts: None,
                        });
                        let i = self.all.len() - 1;
                        self.streams.entry(w.stream.clone()).or_default().push(i);
                    }
                    versions.push(Some(first + w.events.len() as u64 - 1));
                }
            }
        }
        versions
    }

    /// The `AppendResult` for `version` of `stream` (positions must have been learned).
    fn result(&self, stream: &str, version: Option<u64>) -> AppendResult {
        AppendResult {
            version,
            position: version.map(|v| {
                self.event(stream, v)
                    .pos
                    .expect("position learned before results are compared")
            }),
        }
    }
}

/// Compares a stored event with the model's. With `learn`, fills in the position, next position
/// and timestamp the first time; otherwise they must already be known and equal.
fn same_event(e: &RecordedEvent, m: &mut MEvent, learn: bool) -> TestResult {
    prop_assert_eq!(e.stream(), m.stream.as_str());
    prop_assert_eq!(e.event_number(), m.number, "event number of {:?}", e);
    prop_assert_eq!(e.id(), m.id, "id of {:?}", e);
    prop_assert_eq!(e.event_type(), m.ty.as_str());
    prop_assert_eq!(e.data(), &m.data[..], "data of {:?}", e);
    prop_assert_eq!(e.metadata(), &m.meta[..], "metadata of {:?}", e);
    match m.pos {
        None if learn => {
            m.pos = Some(e.position());
            m.next = Some(e.next_position());
            m.ts = Some(e.timestamp_micros());
        }
        None => prop_assert!(false, "event {:?} read before it was seen in $all", e),
        Some(p) => {
            prop_assert_eq!(e.position(), p, "position of {:?} changed", e);
            prop_assert_eq!(Some(e.next_position()), m.next, "next position of {:?}", e);
            prop_assert_eq!(Some(e.timestamp_micros()), m.ts, "timestamp of {:?}", e);
        }
    }
    Ok(())
}

fn same_events(got: &[RecordedEvent], want: &[MEvent], what: &str) -> TestResult {
    prop_assert_eq!(
        got.len(),
        want.len(),
        "{}: got {:?}, want {:?}",
        what,
        got,
        want
    );
    for (e, m) in got.iter().zip(want) {
        let mut m = m.clone();
        same_event(e, &mut m, false)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The runner.
// ---------------------------------------------------------------------------------------------

/// A successful stream write, for retries.
#[derive(Debug, Clone)]
struct Sent {
    write: StreamWrite,
    result: AppendResult,
}

struct Runner {
    dir: tempfile::TempDir,
    opts: Options,
    store: Option<Store>,
    names: Vec<String>,
    model: Model,
    history: Vec<Sent>,
    multis: Vec<Vec<Sent>>,
    next_id: u64,
}

fn resolve_exp(e: Exp, version: Option<u64>) -> ExpectedVersion {
    match e {
        Exp::Any => ExpectedVersion::Any,
        Exp::NoStream => ExpectedVersion::NoStream,
        Exp::StreamExists => ExpectedVersion::StreamExists,
        Exp::Exact(d) => {
            let v = version.map_or(-1, |v| v as i64);
            match v + i64::from(d) {
                // The right version of an empty stream.
                -1 => ExpectedVersion::NoStream,
                n => ExpectedVersion::Exact(n.max(0) as u64),
            }
        }
    }
}

impl Runner {
    fn new(n_streams: usize, sync: bool) -> TestResult<Runner> {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let opts = Options::default().segment_size(4096).durability(if sync {
            Durability::Sync
        } else {
            Durability::None
        });
        let store = ok(Store::open(dir.path(), opts.clone()), "open")?;
        Ok(Runner {
            dir,
            opts,
            store: Some(store),
            names: NAMES[..n_streams].iter().map(|s| s.to_string()).collect(),
            model: Model::default(),
            history: Vec::new(),
            multis: Vec::new(),
            next_id: 0,
        })
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("store is open")
    }

    fn name(&self, sel: u8) -> String {
        self.names[sel as usize % self.names.len()].clone()
    }

    fn fresh_id(&mut self) -> EventId {
        self.next_id += 1;
        let mut b = [0u8; 16];
        b[0] = 0xE7;
        b[8..].copy_from_slice(&self.next_id.to_be_bytes());
        EventId(b)
    }

    fn fresh_event(&mut self, ty: u8, data_len: u16, meta_len: u8, seed: u8) -> EventData {
        let id = self.fresh_id();
        let ty = TYPES.get(ty as usize).copied().unwrap_or(LONG_TYPE);
        let data: Vec<u8> = (0..data_len as usize)
            .map(|i| seed.wrapping_add((i * 31) as u8))
            .collect();
        let meta: Vec<u8> = (0..meta_len as usize)
            .map(|i| seed.wrapping_mul(7).wrapping_add(i as u8))
            .collect();
        EventData::new(ty, data).with_id(id).with_metadata(meta)
    }

    fn make_events(&mut self, stream: &str, specs: &[Ev]) -> Vec<EventData> {
        specs
            .iter()
            .map(|spec| match *spec {
                Ev::Fresh {
                    ty,
                    data_len,
                    meta_len,
                    seed,
                } => self.fresh_event(ty, data_len, meta_len, seed),
                Ev::Reuse(k) => {
                    let len = self.model.len(stream);
                    if len == 0 {
                        self.fresh_event(0, 3, 0, k as u8)
                    } else {
                        let id = self.model.id_at(stream, u64::from(k) % len);
                        EventData::new("Reused", vec![k as u8; (k % 50) as usize]).with_id(id)
                    }
                }
            })
            .collect()
    }

    /// Appends through the store and the model, compares the outcomes and the whole state.
    /// Returns the results if the append succeeded.
    fn append(
        &mut self,
        writes: Vec<StreamWrite>,
        multi: bool,
    ) -> TestResult<Option<Vec<AppendResult>>> {
        let plan = self.model.plan(&writes);
        let got = if multi {
            self.store().append_multi(writes.clone())
        } else {
            let w = &writes[0];
            self.store()
                .append(&w.stream, w.expected, w.events.clone())
                .map(|r| vec![r])
        };
        match (plan, got) {
            (Ok(plans), Ok(results)) => {
                let versions = self.model.apply(&writes, &plans);
                self.verify()?;
                let want: Vec<AppendResult> = writes
                    .iter()
                    .zip(&versions)
                    .map(|(w, v)| self.model.result(&w.stream, *v))
                    .collect();
                prop_assert_eq!(
                    &results,
                    &want,
                    "results of {:?} (plans {:?})",
                    writes,
                    plans
                );
                let sent: Vec<Sent> = writes
                    .into_iter()
                    .zip(&results)
                    .map(|(write, &result)| Sent { write, result })
                    .collect();
                self.history.extend(sent.iter().cloned());
                if multi {
                    self.multis.push(sent);
                }
                Ok(Some(results))
            }
            (
                Err(want),
                Err(Error::WrongExpectedVersion {
                    stream,
                    expected,
                    actual,
                }),
            ) => {
                let got = Wrong {
                    stream,
                    expected,
                    actual,
                };
                prop_assert_eq!(got, want, "error for {:?}", writes);
                self.verify()?;
                Ok(None)
            }
            (want, got) => Err(TestCaseError::fail(format!(
                "append {writes:?}:\n  model: {want:?}\n  store: {got:?}"
            ))),
        }
    }

    /// Retries `sent` after `mutation`; returns the write as sent.
    fn mutate(&mut self, sent: &Sent, mutation: &Mutation) -> StreamWrite {
        let mut w = sent.write.clone();
        match *mutation {
            Mutation::None => {}
            Mutation::DropLast => {
                w.events.pop();
            }
            Mutation::DropFirst => {
                if !w.events.is_empty() {
                    w.events.remove(0);
                }
            }
            Mutation::AddFresh => {
                let e = self.fresh_event(1, 10, 0, 1);
                w.events.push(e);
            }
            Mutation::ReplaceOne(k) => {
                if !w.events.is_empty() {
                    let i = k as usize % w.events.len();
                    w.events[i] = self.fresh_event(2, 5, 0, k);
                }
            }
            Mutation::SwapFirstTwo => {
                if w.events.len() >= 2 {
                    w.events.swap(0, 1);
                }
            }
            Mutation::Expected(e) => {
                w.expected = resolve_exp(e, self.model.version(&w.stream));
            }
            Mutation::OtherStream(k) => w.stream = self.name(k),
        }
        w
    }

    fn run(&mut self, op: &Op) -> TestResult {
        match op {
            Op::Append {
                stream,
                exp,
                events,
            } => {
                let stream = self.name(*stream);
                let expected = resolve_exp(*exp, self.model.version(&stream));
                let events = self.make_events(&stream, events);
                self.append(vec![StreamWrite::new(stream, expected, events)], false)?;
            }
            Op::Bulk {
                stream,
                exp,
                n,
                data_len,
            } => {
                let stream = self.name(*stream);
                let expected = resolve_exp(*exp, self.model.version(&stream));
                let events = (0..*n)
                    .map(|k| self.fresh_event(k % 5, *data_len, k, k))
                    .collect();
                self.append(vec![StreamWrite::new(stream, expected, events)], false)?;
            }
            Op::Retry { pick, mutation } => {
                if self.history.is_empty() {
                    return Ok(());
                }
                let sent = self.history[*pick as usize % self.history.len()].clone();
                let w = self.mutate(&sent, mutation);
                let plain = matches!(mutation, Mutation::None);
                let r = self.append(vec![w.clone()], false)?;
                if plain
                    && !w.events.is_empty()
                    && matches!(
                        w.expected,
                        ExpectedVersion::Exact(_) | ExpectedVersion::NoStream
                    )
                {
                    // The model itself must say: a plain retry returns the original result.
                    prop_assert_eq!(r, Some(vec![sent.result]), "plain retry of {:?}", sent);
                }
            }
            Op::Window {
                stream,
                start,
                len,
                exp,
                extra,
            } => {
                let stream = self.name(*stream);
                let count = self.model.len(&stream);
                if count == 0 {
                    return Ok(());
                }
                let start = u64::from(*start) % count;
                let n = 1 + u64::from(*len) % (count - start).min(4);
                let mut events: Vec<EventData> = (start..start + n)
                    .map(|k| self.model.event(&stream, k).to_data())
                    .collect();
                if *extra {
                    events.push(self.fresh_event(3, 7, 2, 9));
                }
                let expected = match *exp {
                    WinExp::Any => ExpectedVersion::Any,
                    WinExp::StreamExists => ExpectedVersion::StreamExists,
                    WinExp::Before if start == 0 => ExpectedVersion::NoStream,
                    WinExp::Before => ExpectedVersion::Exact(start - 1),
                    WinExp::Off(d) => {
                        ExpectedVersion::Exact((start as i64 - 1 + i64::from(d)).max(0) as u64)
                    }
                };
                self.append(vec![StreamWrite::new(stream, expected, events)], false)?;
            }
            Op::Multi { parts } => {
                let mut used: Vec<String> = Vec::new();
                let mut writes = Vec::new();
                for (sel, exp, specs) in parts {
                    // Distinct streams: the first unused name from the selector on.
                    let n = self.names.len();
                    let stream = (0..n)
                        .map(|k| self.names[(*sel as usize + k) % n].clone())
                        .find(|s| !used.contains(s))
                        .expect("more names than parts");
                    used.push(stream.clone());
                    let expected = resolve_exp(*exp, self.model.version(&stream));
                    let events = self.make_events(&stream, specs);
                    writes.push(StreamWrite::new(stream, expected, events));
                }
                self.append(writes, true)?;
            }
            Op::MultiRetry { pick, mutation } => {
                if self.multis.is_empty() {
                    return Ok(());
                }
                let sent = self.multis[*pick as usize % self.multis.len()].clone();
                let mut writes: Vec<StreamWrite> = sent.iter().map(|s| s.write.clone()).collect();
                if let Some((k, m)) = mutation {
                    let i = *k as usize % sent.len();
                    writes[i] = self.mutate(&sent[i], m);
                }
                let dup = writes
                    .iter()
                    .enumerate()
                    .any(|(i, w)| writes[..i].iter().any(|o| o.stream == w.stream));
                if dup {
                    // Moved onto another part's stream: rejected as a whole.
                    let r = self.store().append_multi(writes.clone());
                    prop_assert!(
                        matches!(r, Err(Error::InvalidInput(_))),
                        "duplicate stream in {:?}: {:?}",
                        writes,
                        r
                    );
                    return self.verify();
                }
                let plain = mutation.is_none();
                let r = self.append(writes.clone(), true)?;
                if plain
                    && writes.iter().all(|w| {
                        !w.events.is_empty()
                            && matches!(
                                w.expected,
                                ExpectedVersion::Exact(_) | ExpectedVersion::NoStream
                            )
                    })
                {
                    let want: Vec<AppendResult> = sent.iter().map(|s| s.result).collect();
                    prop_assert_eq!(r, Some(want), "plain retry of {:?}", sent);
                }
            }
            Op::Invalid { kind } => self.invalid(*kind)?,
            Op::ReadForward { stream, from, max } => {
                let stream = self.name(*stream);
                let from = u64::from(*from);
                let max = max.map_or(usize::MAX, usize::from);
                let got = collect(self.store().read_stream_forward(&stream, from, max), "read")?;
                let want: Vec<MEvent> = self
                    .model
                    .events(&stream)
                    .into_iter()
                    .skip(from as usize)
                    .take(max)
                    .cloned()
                    .collect();
                same_events(
                    &got,
                    &want,
                    &format!("forward {stream} from {from} max {max}"),
                )?;
            }
            Op::ReadBackward { stream, from, max } => {
                let stream = self.name(*stream);
                let from = from.map_or(u64::MAX, u64::from);
                let max = max.map_or(usize::MAX, usize::from);
                let got = collect(
                    self.store().read_stream_backward(&stream, from, max),
                    "read",
                )?;
                let events = self.model.events(&stream);
                let top = (from.min(events.len() as u64) as usize + 1).min(events.len());
                let want: Vec<MEvent> = events[..top]
                    .iter()
                    .rev()
                    .take(max)
                    .map(|e| (*e).clone())
                    .collect();
                same_events(
                    &got,
                    &want,
                    &format!("backward {stream} from {from} max {max}"),
                )?;
            }
            Op::ReadEvent { stream, number } => {
                let stream = self.name(*stream);
                let n = u64::from(*number);
                let got = self.store().read_event(&stream, n);
                if n < self.model.len(&stream) {
                    let e = ok(got, "read_event")?;
                    same_events(&[e], &[self.model.event(&stream, n).clone()], "read_event")?;
                } else {
                    match got {
                        Err(Error::EventNotFound {
                            stream: s,
                            event_number,
                        }) => {
                            prop_assert_eq!(s, stream);
                            prop_assert_eq!(event_number, n);
                        }
                        other => prop_assert!(false, "read_event {stream} {n}: {other:?}"),
                    }
                }
            }
            Op::ReadAllFrom {
                pick,
                next,
                forward,
                max,
            } => {
                let max = max.map_or(usize::MAX, usize::from);
                let all = &self.model.all;
                let (from, want): (Position, Vec<MEvent>) = if all.is_empty() {
                    let from = if *forward {
                        Position::START
                    } else {
                        Position::END
                    };
                    (from, Vec::new())
                } else {
                    let i = *pick as usize % all.len();
                    let e = &all[i];
                    let from = if *next { e.next } else { e.pos }.expect("learned");
                    // Forward from an event's position starts with it, from its next position
                    // after it; backward from its position starts before it, from its next
                    // position with it.
                    let split = if *next { i + 1 } else { i };
                    let want = if *forward {
                        all[split..].iter().take(max).cloned().collect()
                    } else {
                        all[..split].iter().rev().take(max).cloned().collect()
                    };
                    (from, want)
                };
                let got = if *forward {
                    collect(self.store().read_all_forward(from, max), "read_all_forward")?
                } else {
                    collect(
                        self.store().read_all_backward(from, max),
                        "read_all_backward",
                    )?
                };
                same_events(
                    &got,
                    &want,
                    &format!("$all from {from} forward {forward} max {max}"),
                )?;
            }
            Op::PageAll { page, forward } => {
                let page = usize::from(*page);
                let mut from = if *forward {
                    Position::START
                } else {
                    Position::END
                };
                let mut got = Vec::new();
                loop {
                    let chunk = if *forward {
                        collect(self.store().read_all_forward(from, page), "page")?
                    } else {
                        collect(self.store().read_all_backward(from, page), "page")?
                    };
                    prop_assert!(chunk.len() <= page);
                    let Some(last) = chunk.last() else { break };
                    from = if *forward {
                        last.next_position()
                    } else {
                        last.position()
                    };
                    got.extend(chunk);
                    prop_assert!(
                        got.len() <= self.model.all.len(),
                        "paging runs past the end"
                    );
                }
                let mut want = self.model.all.clone();
                if !*forward {
                    want.reverse();
                }
                same_events(
                    &got,
                    &want,
                    &format!("paging $all by {page} forward {forward}"),
                )?;
            }
            Op::BadPosition { pick, forward } => {
                let head = self.store().head();
                // Past the head, or inside an event's record: neither is a valid position.
                let p = if self.model.all.is_empty() || pick % 4 == 0 {
                    Position(head.0 + 8)
                } else {
                    let e = &self.model.all[*pick as usize % self.model.all.len()];
                    Position(e.pos.expect("learned").0 + 1)
                };
                let r = if *forward {
                    self.store().read_all_forward(p, 10).map(|_| ())
                } else {
                    self.store().read_all_backward(p, 10).map(|_| ())
                };
                prop_assert!(
                    matches!(r, Err(Error::InvalidPosition(q)) if q == p),
                    "reading $all from {p} (head {head}): {r:?}"
                );
            }
            Op::Reopen {
                close,
                drop_id_tables,
            } => {
                let store = self.store.take().expect("store is open");
                if *close {
                    ok(store.close(), "close")?;
                } else {
                    drop(store);
                }
                if *drop_id_tables {
                    for entry in std::fs::read_dir(self.dir.path()).unwrap() {
                        let path = entry.unwrap().path();
                        if path.extension().is_some_and(|e| e == "ids") {
                            std::fs::remove_file(path).unwrap();
                        }
                    }
                }
                self.store = Some(ok(
                    Store::open(self.dir.path(), self.opts.clone()),
                    "reopen",
                )?);
            }
        }
        Ok(())
    }

    /// Inputs the store must reject before looking at versions; nothing may be written.
    fn invalid(&mut self, kind: u8) -> TestResult {
        let s = self.name(kind);
        let r = match kind {
            0 => {
                let a = self.fresh_event(0, 1, 0, 0);
                let b = self.fresh_event(0, 1, 0, 1);
                self.store().append_multi(vec![
                    StreamWrite::new(s.clone(), ExpectedVersion::Any, vec![a]),
                    StreamWrite::new(s, ExpectedVersion::Any, vec![b]),
                ])
            }
            1 => {
                let e = EventData::new("", "x").with_id(self.fresh_id());
                self.store()
                    .append(&s, ExpectedVersion::Any, [e])
                    .map(|r| vec![r])
            }
            2 => {
                let e = self.fresh_event(0, 1, 0, 2);
                self.store()
                    .append("", ExpectedVersion::Any, [e])
                    .map(|r| vec![r])
            }
            3 => {
                let long = "x".repeat(eventjournal::MAX_STREAM_NAME_LEN + 1);
                let e = self.fresh_event(0, 1, 0, 3);
                self.store()
                    .append(&long, ExpectedVersion::NoStream, [e])
                    .map(|r| vec![r])
            }
            _ => {
                // Not invalid: an empty multi-stream batch does nothing.
                let r = self.store().append_multi(Vec::new());
                prop_assert!(matches!(&r, Ok(v) if v.is_empty()), "empty multi: {r:?}");
                return self.verify();
            }
        };
        prop_assert!(
            matches!(r, Err(Error::InvalidInput(_))),
            "invalid input {kind}: {r:?}"
        );
        let r = self.store().read_stream_forward("", 0, 1).map(|_| ());
        prop_assert!(
            matches!(r, Err(Error::InvalidInput(_))),
            "read of '': {r:?}"
        );
        self.verify()
    }

    /// Compares the store's whole state with the model: `$all` both ways, every stream both
    /// ways, versions, stream names.
    fn verify(&mut self) -> TestResult {
        let store = self.store.as_ref().expect("store is open");
        let all = collect(store.read_all_forward(Position::START, usize::MAX), "$all")?;
        prop_assert_eq!(
            all.len(),
            self.model.all.len(),
            "$all has {:?}, model {:?}",
            all,
            self.model.all
        );
        for (e, m) in all.iter().zip(self.model.all.iter_mut()) {
            same_event(e, m, true)?;
        }
        for w in all.windows(2) {
            prop_assert!(
                w[0].position() < w[0].next_position() && w[0].next_position() <= w[1].position(),
                "positions out of order: {:?}",
                w
            );
        }
        if let Some(last) = all.last() {
            prop_assert_eq!(store.head(), last.next_position(), "head");
        }
        let tail = collect(
            store.read_all_forward(store.head(), usize::MAX),
            "$all at head",
        )?;
        prop_assert!(tail.is_empty(), "events after head: {:?}", tail);

        let back = collect(
            store.read_all_backward(Position::END, usize::MAX),
            "$all back",
        )?;
        let mut want = self.model.all.clone();
        want.reverse();
        same_events(&back, &want, "$all backward")?;

        for name in &self.names {
            let want: Vec<MEvent> = self.model.events(name).into_iter().cloned().collect();
            let fwd = collect(store.read_stream_forward(name, 0, usize::MAX), "stream")?;
            same_events(&fwd, &want, &format!("stream {name}"))?;
            let mut rev = want.clone();
            rev.reverse();
            let bwd = collect(
                store.read_stream_backward(name, u64::MAX, usize::MAX),
                "stream",
            )?;
            same_events(&bwd, &rev, &format!("stream {name} backward"))?;
            prop_assert_eq!(
                store.stream_version(name).unwrap(),
                self.model.version(name),
                "version of {}",
                name
            );
        }
        let mut order = self.model.order.clone();
        order.sort();
        prop_assert_eq!(store.streams().unwrap(), order, "streams()");
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn store_matches_model(
        n_streams in 3usize..=4,
        sync in prop::bool::weighted(0.25),
        ops in prop::collection::vec(op_strategy(), 1..=60),
    ) {
        let mut r = Runner::new(n_streams, sync)?;
        r.verify()?;
        for (i, op) in ops.iter().enumerate() {
            r.run(op).map_err(|e| TestCaseError::fail(format!("op #{i} {op:?}: {e}")))?;
            r.verify().map_err(|e| TestCaseError::fail(format!("after op #{i} {op:?}: {e}")))?;
        }
        // A last reopen: everything must survive it.
        r.run(&Op::Reopen {
            close: true,
            drop_id_tables: false,
        })?;
        r.verify()?;
    }
}
