//! One behaviour suite, two backends: each test below is written once, over the small
//! [`Subject`] trait, and run against the embedded store (in a temporary directory) and against
//! PostgreSQL (a schema of its own in the server `EVJ_PG_URL` names; skipped without it, except
//! under CI). What they hold to: expected versions, idempotent retries, multi-stream atomic
//! appends, stream, `$all`, category and event-type reads, catch-up subscriptions, checkpoints,
//! and journaled actors on the journal's `Backend` trait.
//!
//! Cost: about 1 s for both backends together.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use eventjournal::journal::{Backend, Host, Journal, JournalEvent, JournalState, Rejected};
use eventjournal::{
    AllFrom, AppendResult, Durability, Error, EventData, ExpectedVersion, Filter, Options,
    Position, RecordedEvent, Result, Store, StreamFrom, StreamWrite, SubscriptionItem,
};
use eventjournal_postgres::{PgStore, PgSubscription};
use serde::{Deserialize, Serialize};

/// A subscription of either backend: the next event within a timeout.
trait Sub {
    fn next_event(&mut self, timeout: Duration) -> Result<Option<RecordedEvent>>;
}

impl Sub for eventjournal::Subscription {
    fn next_event(&mut self, timeout: Duration) -> Result<Option<RecordedEvent>> {
        loop {
            match self.recv_timeout(timeout)? {
                Some(SubscriptionItem::Event(e)) => return Ok(Some(e)),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }
}

impl Sub for PgSubscription {
    fn next_event(&mut self, timeout: Duration) -> Result<Option<RecordedEvent>> {
        loop {
            match self.recv_timeout(timeout)? {
                Some(SubscriptionItem::Event(e)) => return Ok(Some(e)),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }
}

/// What the suite needs of a backend: the store API both offer.
trait Subject: Send + Sync + 'static {
    type B: Backend;
    fn backend(&self) -> Arc<Self::B>;
    fn append(&self, s: &str, e: ExpectedVersion, ev: Vec<EventData>) -> Result<AppendResult>;
    fn append_multi(&self, w: Vec<StreamWrite>) -> Result<Vec<AppendResult>>;
    fn forward(&self, s: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>>;
    fn backward(&self, s: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>>;
    fn read_event(&self, s: &str, n: u64) -> Result<RecordedEvent>;
    fn version(&self, s: &str) -> Result<Option<u64>>;
    fn all_forward(&self, from: Position, max: usize) -> Result<Vec<RecordedEvent>>;
    fn all_backward(&self, from: Position, max: usize) -> Result<Vec<RecordedEvent>>;
    fn category(&self, c: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>>;
    fn event_type(&self, t: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>>;
    fn sub_all(&self, from: AllFrom, f: Option<Filter>) -> Result<Box<dyn Sub>>;
    fn sub_stream(&self, s: &str, from: StreamFrom) -> Result<Box<dyn Sub>>;
    fn sub_category(&self, c: &str, from: StreamFrom) -> Result<Box<dyn Sub>>;
    fn sub_event_type(&self, t: &str, from: StreamFrom) -> Result<Box<dyn Sub>>;
    fn save_checkpoint(&self, c: &str, p: Position) -> Result<()>;
    fn load_checkpoint(&self, c: &str) -> Result<Option<Position>>;
    fn sub_checkpoint(&self, c: &str, f: Option<Filter>) -> Result<Box<dyn Sub>>;
}

fn collect<'a>(it: impl Iterator<Item = Result<RecordedEvent>> + 'a) -> Result<Vec<RecordedEvent>> {
    it.collect()
}

impl Subject for Arc<Store> {
    type B = Store;
    fn backend(&self) -> Arc<Store> {
        self.clone()
    }
    fn append(&self, s: &str, e: ExpectedVersion, ev: Vec<EventData>) -> Result<AppendResult> {
        Store::append(self, s, e, ev)
    }
    fn append_multi(&self, w: Vec<StreamWrite>) -> Result<Vec<AppendResult>> {
        Store::append_multi(self, w)
    }
    fn forward(&self, s: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        collect(self.read_stream_forward(s, from, max)?)
    }
    fn backward(&self, s: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        collect(self.read_stream_backward(s, from, max)?)
    }
    fn read_event(&self, s: &str, n: u64) -> Result<RecordedEvent> {
        Store::read_event(self, s, n)
    }
    fn version(&self, s: &str) -> Result<Option<u64>> {
        self.stream_version(s)
    }
    fn all_forward(&self, from: Position, max: usize) -> Result<Vec<RecordedEvent>> {
        collect(self.read_all_forward(from, max)?)
    }
    fn all_backward(&self, from: Position, max: usize) -> Result<Vec<RecordedEvent>> {
        collect(self.read_all_backward(from, max)?)
    }
    fn category(&self, c: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        collect(self.read_category(c, from, max)?)
    }
    fn event_type(&self, t: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        collect(self.read_event_type(t, from, max)?)
    }
    fn sub_all(&self, from: AllFrom, f: Option<Filter>) -> Result<Box<dyn Sub>> {
        Ok(Box::new(self.subscribe_to_all(from, f)?))
    }
    fn sub_stream(&self, s: &str, from: StreamFrom) -> Result<Box<dyn Sub>> {
        Ok(Box::new(self.subscribe_to_stream(s, from)?))
    }
    fn sub_category(&self, c: &str, from: StreamFrom) -> Result<Box<dyn Sub>> {
        Ok(Box::new(self.subscribe_to_category(c, from)?))
    }
    fn sub_event_type(&self, t: &str, from: StreamFrom) -> Result<Box<dyn Sub>> {
        Ok(Box::new(self.subscribe_to_event_type(t, from)?))
    }
    fn save_checkpoint(&self, c: &str, p: Position) -> Result<()> {
        Store::save_checkpoint(self, c, p)
    }
    fn load_checkpoint(&self, c: &str) -> Result<Option<Position>> {
        Store::load_checkpoint(self, c)
    }
    fn sub_checkpoint(&self, c: &str, f: Option<Filter>) -> Result<Box<dyn Sub>> {
        Ok(Box::new(self.subscribe_from_checkpoint(c, f)?))
    }
}

impl Subject for Arc<PgStore> {
    type B = PgStore;
    fn backend(&self) -> Arc<PgStore> {
        self.clone()
    }
    fn append(&self, s: &str, e: ExpectedVersion, ev: Vec<EventData>) -> Result<AppendResult> {
        PgStore::append(self, s, e, ev)
    }
    fn append_multi(&self, w: Vec<StreamWrite>) -> Result<Vec<AppendResult>> {
        PgStore::append_multi(self, w)
    }
    fn forward(&self, s: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        self.read_stream_forward(s, from, max)
    }
    fn backward(&self, s: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        self.read_stream_backward(s, from, max)
    }
    fn read_event(&self, s: &str, n: u64) -> Result<RecordedEvent> {
        PgStore::read_event(self, s, n)
    }
    fn version(&self, s: &str) -> Result<Option<u64>> {
        self.stream_version(s)
    }
    fn all_forward(&self, from: Position, max: usize) -> Result<Vec<RecordedEvent>> {
        self.read_all_forward(from, max)
    }
    fn all_backward(&self, from: Position, max: usize) -> Result<Vec<RecordedEvent>> {
        self.read_all_backward(from, max)
    }
    fn category(&self, c: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        self.read_category(c, from, max)
    }
    fn event_type(&self, t: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        self.read_event_type(t, from, max)
    }
    fn sub_all(&self, from: AllFrom, f: Option<Filter>) -> Result<Box<dyn Sub>> {
        Ok(Box::new(self.subscribe_to_all(from, f)?))
    }
    fn sub_stream(&self, s: &str, from: StreamFrom) -> Result<Box<dyn Sub>> {
        Ok(Box::new(self.subscribe_to_stream(s, from)?))
    }
    fn sub_category(&self, c: &str, from: StreamFrom) -> Result<Box<dyn Sub>> {
        Ok(Box::new(self.subscribe_to_category(c, from)?))
    }
    fn sub_event_type(&self, t: &str, from: StreamFrom) -> Result<Box<dyn Sub>> {
        Ok(Box::new(self.subscribe_to_event_type(t, from)?))
    }
    fn save_checkpoint(&self, c: &str, p: Position) -> Result<()> {
        PgStore::save_checkpoint(self, c, p)
    }
    fn load_checkpoint(&self, c: &str) -> Result<Option<Position>> {
        PgStore::load_checkpoint(self, c)
    }
    fn sub_checkpoint(&self, c: &str, f: Option<Filter>) -> Result<Box<dyn Sub>> {
        Ok(Box::new(self.subscribe_from_checkpoint(c, f)?))
    }
}

fn ev(t: &str, data: &str) -> EventData {
    EventData::new(t, data.to_string())
}

fn wrong(r: Result<AppendResult>) -> (ExpectedVersion, Option<u64>) {
    match r {
        Err(Error::WrongExpectedVersion {
            expected, actual, ..
        }) => (expected, actual),
        other => panic!("expected WrongExpectedVersion, got {other:?}"),
    }
}

fn shape(events: &[RecordedEvent]) -> Vec<(String, u64, String, Vec<u8>)> {
    events
        .iter()
        .map(|e| {
            (
                e.stream().to_string(),
                e.event_number(),
                e.event_type().to_string(),
                e.data().to_vec(),
            )
        })
        .collect()
}

// ---- The behaviours ----------------------------------------------------------------------------

fn expected_versions(s: &impl Subject) {
    use ExpectedVersion::*;
    assert_eq!(
        wrong(s.append("a-1", StreamExists, vec![ev("E", "0")])),
        (StreamExists, None)
    );
    assert_eq!(
        wrong(s.append("a-1", Exact(0), vec![ev("E", "0")])),
        (Exact(0), None)
    );
    let r = s
        .append("a-1", NoStream, vec![ev("E", "0"), ev("E", "1")])
        .unwrap();
    assert_eq!(r.version, Some(1));
    assert_eq!(r.next_expected_version(), Exact(1));
    assert_eq!(
        wrong(s.append("a-1", NoStream, vec![ev("E", "x")])),
        (NoStream, Some(1))
    );
    assert_eq!(
        wrong(s.append("a-1", Exact(0), vec![ev("E", "x")])),
        (Exact(0), Some(1))
    );
    assert_eq!(
        wrong(s.append("a-1", Exact(7), vec![ev("E", "x")])),
        (Exact(7), Some(1))
    );
    let r2 = s.append("a-1", Exact(1), vec![ev("E", "2")]).unwrap();
    assert_eq!(r2.version, Some(2));
    assert!(r2.position > r.position);
    assert_eq!(
        s.append("a-1", StreamExists, vec![ev("E", "3")])
            .unwrap()
            .version,
        Some(3)
    );
    assert_eq!(
        s.append("a-1", Any, vec![ev("E", "4")]).unwrap().version,
        Some(4)
    );
    assert_eq!(
        s.append("b-1", Any, vec![ev("E", "0")]).unwrap().version,
        Some(0)
    );
    // An empty batch checks and writes nothing.
    assert_eq!(s.append("a-1", Exact(4), vec![]).unwrap().version, Some(4));
    assert_eq!(
        wrong(s.append("a-1", Exact(3), vec![])),
        (Exact(3), Some(4))
    );
    assert_eq!(s.append("none-1", NoStream, vec![]).unwrap().version, None);
    assert_eq!(s.version("a-1").unwrap(), Some(4));
    assert_eq!(s.version("none-1").unwrap(), None);
    let data: Vec<_> = s
        .forward("a-1", 0, 100)
        .unwrap()
        .iter()
        .map(|e| e.data().to_vec())
        .collect();
    assert_eq!(data, [b"0", b"1", b"2", b"3", b"4"]);
    // Names the store keeps are refused, with nothing written.
    assert!(matches!(
        s.append("$mine", Any, vec![ev("E", "")]),
        Err(Error::ReservedName { .. })
    ));
    assert!(matches!(
        s.append("a-1", Any, vec![ev("$E", "")]),
        Err(Error::ReservedName { .. })
    ));
    assert!(matches!(
        s.append("", Any, vec![ev("E", "")]),
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(s.version("a-1").unwrap(), Some(4));
}

fn idempotent_retries(s: &impl Subject) {
    use ExpectedVersion::*;
    let first = vec![ev("E", "0"), ev("E", "1")];
    let r = s.append("c-1", NoStream, first.clone()).unwrap();
    let second = vec![ev("E", "2")];
    let r2 = s.append("c-1", Exact(1), second.clone()).unwrap();
    let third = vec![ev("E", "3"), ev("E", "4")];
    let r3 = s.append("c-1", Any, third.clone()).unwrap();
    let head = s.all_backward(Position::END, 1).unwrap()[0].position();
    // Each retried with the expected version it was written with: the original result.
    assert_eq!(s.append("c-1", NoStream, first.clone()).unwrap(), r);
    assert_eq!(s.append("c-1", Exact(1), second.clone()).unwrap(), r2);
    assert_eq!(s.append("c-1", Any, third.clone()).unwrap(), r3);
    assert_eq!(s.append("c-1", StreamExists, third.clone()).unwrap(), r3);
    assert_eq!(s.append("c-1", Any, second.clone()).unwrap(), r2);
    // A partial overlap is a conflict, and writes nothing.
    let mut partial = third.clone();
    partial[1] = ev("E", "other");
    assert!(matches!(
        s.append("c-1", Any, partial),
        Err(Error::WrongExpectedVersion { .. })
    ));
    let mut partial = first.clone();
    partial.push(ev("E", "more"));
    assert!(matches!(
        s.append("c-1", NoStream, partial),
        Err(Error::WrongExpectedVersion { .. })
    ));
    assert_eq!(
        s.all_backward(Position::END, 1).unwrap()[0].position(),
        head
    );
    assert_eq!(s.version("c-1").unwrap(), Some(4));
    // The same ids in another stream are that stream's events.
    let other = s.append("d-1", NoStream, first.clone()).unwrap();
    assert_eq!(other.version, Some(1));
    assert_eq!(s.append("c-1", Any, first.clone()).unwrap(), r);
    assert_eq!(s.append("d-1", Any, first.clone()).unwrap(), other);
}

fn multi_stream(s: &impl Subject) {
    use ExpectedVersion::*;
    s.append("m-1", NoStream, vec![ev("E", "0")]).unwrap();
    let before = s.all_backward(Position::END, 1).unwrap()[0].position();
    // One wrong expected version: nothing written for any stream.
    let r = s.append_multi(vec![
        StreamWrite::new("m-2", NoStream, vec![ev("E", "a")]),
        StreamWrite::new("m-1", Exact(5), vec![ev("E", "b")]),
    ]);
    assert!(matches!(r, Err(Error::WrongExpectedVersion { ref stream, .. }) if stream == "m-1"));
    assert_eq!(s.version("m-2").unwrap(), None);
    assert_eq!(
        s.all_backward(Position::END, 1).unwrap()[0].position(),
        before
    );
    let writes = vec![
        StreamWrite::new("m-2", NoStream, vec![ev("E", "a"), ev("E", "b")]),
        StreamWrite::new("m-1", Exact(0), vec![ev("E", "c")]),
    ];
    let r = s.append_multi(writes.clone()).unwrap();
    assert_eq!(
        r.iter().map(|r| r.version).collect::<Vec<_>>(),
        [Some(1), Some(1)]
    );
    // One range of `$all`, in the batch's order.
    let tail = s.all_forward(Position::START, 100).unwrap();
    let tail: Vec<_> = tail.iter().filter(|e| e.position() > before).collect();
    assert_eq!(
        tail.iter()
            .map(|e| (e.stream(), e.data()))
            .collect::<Vec<_>>(),
        [("m-2", &b"a"[..]), ("m-2", b"b"), ("m-1", b"c")]
    );
    assert_eq!(Some(tail[1].position()), r[0].position);
    assert_eq!(Some(tail[2].position()), r[1].position);
    // A retry of the whole batch is recognised.
    assert_eq!(s.append_multi(writes).unwrap(), r);
}

fn reads(s: &impl Subject) {
    use ExpectedVersion::*;
    for i in 0..5 {
        s.append(
            &format!("cart-{}", i % 2),
            Any,
            vec![ev(
                if i % 2 == 0 { "Added" } else { "Removed" },
                &i.to_string(),
            )],
        )
        .unwrap();
        s.append("order-1", Any, vec![ev("Added", &format!("o{i}"))])
            .unwrap();
    }
    let f = s.forward("order-1", 1, 2).unwrap();
    assert_eq!(
        f.iter().map(|e| e.event_number()).collect::<Vec<_>>(),
        [1, 2]
    );
    let b = s.backward("order-1", u64::MAX, 2).unwrap();
    assert_eq!(
        b.iter().map(|e| e.event_number()).collect::<Vec<_>>(),
        [4, 3]
    );
    let b = s.backward("order-1", 1, 10).unwrap();
    assert_eq!(
        b.iter().map(|e| e.event_number()).collect::<Vec<_>>(),
        [1, 0]
    );
    assert_eq!(s.read_event("order-1", 3).unwrap().data(), b"o3");
    assert!(matches!(
        s.read_event("order-1", 9),
        Err(Error::EventNotFound { .. })
    ));
    assert!(s.forward("nothing-1", 0, 10).unwrap().is_empty());
    // `$all`, paged forward by next_position, and backward: the same events, reversed.
    let mut paged = Vec::new();
    let mut at = Position::START;
    loop {
        let page = s.all_forward(at, 3).unwrap();
        let Some(last) = page.last() else { break };
        at = last.next_position();
        paged.extend(page);
    }
    assert_eq!(paged.len(), 10);
    assert!(paged.windows(2).all(|w| w[0].position() < w[1].position()));
    assert!(paged
        .windows(2)
        .all(|w| w[0].next_position() <= w[1].position()));
    let mut back = s.all_backward(Position::END, 100).unwrap();
    back.reverse();
    assert_eq!(shape(&back), shape(&paged));
    assert_eq!(
        s.all_backward(paged[3].next_position(), 1).unwrap()[0].position(),
        paged[3].position()
    );
    assert!(matches!(
        s.all_forward(Position(paged[0].position().0 + 1), 1),
        Err(Error::InvalidPosition(_))
    ));
    // Categories and event types, in position order, from the n-th.
    let cart = s.category("cart", 0, 100).unwrap();
    assert_eq!(
        cart.iter().map(|e| e.data()).collect::<Vec<_>>(),
        [b"0", b"1", b"2", b"3", b"4"]
    );
    let cart = s.category("cart", 3, 100).unwrap();
    assert_eq!(
        cart.iter().map(|e| e.data()).collect::<Vec<_>>(),
        [b"3", b"4"]
    );
    let added = s.event_type("Added", 0, 100).unwrap();
    assert_eq!(added.len(), 8);
    assert!(added.windows(2).all(|w| w[0].position() < w[1].position()));
    assert!(matches!(
        s.category("cart-1", 0, 1),
        Err(Error::InvalidInput(_))
    ));
    // Ids, types and metadata come back as written.
    let e = ev("Meta", "d").with_metadata(b"m".to_vec());
    let id = e.id();
    s.append("meta-1", NoStream, vec![e]).unwrap();
    let got = s.read_event("meta-1", 0).unwrap();
    assert_eq!(
        (got.id(), got.event_type(), got.metadata()),
        (id, "Meta", &b"m"[..])
    );
    assert!(got.timestamp_micros() > 0);
}

const WAIT: Duration = Duration::from_secs(10);

fn subscriptions<S: Subject + Clone>(s: &S) {
    use ExpectedVersion::*;
    s.append("sub-1", Any, vec![ev("A", "h0"), ev("B", "h1")])
        .unwrap();
    s.append("other-1", Any, vec![ev("A", "h2")]).unwrap();
    let mut all = s.sub_all(AllFrom::Start, None).unwrap();
    let mut end = s.sub_all(AllFrom::End, None).unwrap();
    let mut filtered = s
        .sub_all(AllFrom::Start, Some(Filter::new().stream_prefix("sub")))
        .unwrap();
    let mut stream = s.sub_stream("sub-1", StreamFrom::After(0)).unwrap();
    let mut category = s.sub_category("other", StreamFrom::Start).unwrap();
    let mut types = s.sub_event_type("A", StreamFrom::After(0)).unwrap();
    let writer = {
        let s = s.clone();
        thread::spawn(move || {
            for i in 0..20 {
                let stream = if i % 2 == 0 { "sub-1" } else { "other-1" };
                s.append(stream, Any, vec![ev("A", &format!("l{i}"))])
                    .unwrap();
            }
        })
    };
    let take = |sub: &mut Box<dyn Sub>, n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                let e = sub
                    .next_event(WAIT)
                    .unwrap()
                    .expect("an event within the wait");
                String::from_utf8(e.data().to_vec()).unwrap()
            })
            .collect()
    };
    let live: Vec<String> = (0..20).map(|i| format!("l{i}")).collect();
    let mut want = vec!["h0".to_string(), "h1".into(), "h2".into()];
    want.extend(live.iter().cloned());
    assert_eq!(take(&mut all, 23), want);
    assert_eq!(take(&mut end, 20), live);
    let sub_live: Vec<String> = (0..20).step_by(2).map(|i| format!("l{i}")).collect();
    let mut want = vec!["h0".to_string(), "h1".into()];
    want.extend(sub_live.iter().cloned());
    assert_eq!(take(&mut filtered, 12), want);
    let mut want = vec!["h1".to_string()];
    want.extend(sub_live.iter().cloned());
    assert_eq!(take(&mut stream, 11), want);
    let mut want = vec!["h2".to_string()];
    want.extend((1..20).step_by(2).map(|i| format!("l{i}")));
    assert_eq!(take(&mut category, 11), want);
    let mut want = vec!["h2".to_string()];
    want.extend(live.iter().cloned());
    assert_eq!(take(&mut types, 21), want);
    writer.join().unwrap();
    // Nothing more, nothing twice.
    for sub in [
        &mut all,
        &mut end,
        &mut filtered,
        &mut stream,
        &mut category,
        &mut types,
    ] {
        assert!(sub.next_event(Duration::from_millis(50)).unwrap().is_none());
    }
    s.append("sub-1", Exact(11), vec![ev("A", "after")])
        .unwrap();
    assert_eq!(take(&mut stream, 1), ["after"]);
}

fn checkpoints(s: &impl Subject) {
    let filter = Filter::new().exclude_system_streams();
    assert_eq!(s.load_checkpoint("proj").unwrap(), None);
    for i in 0..4 {
        s.append("ck-1", ExpectedVersion::Any, vec![ev("E", &i.to_string())])
            .unwrap();
    }
    let mut sub = s.sub_checkpoint("proj", Some(filter.clone())).unwrap();
    let first = sub.next_event(WAIT).unwrap().unwrap();
    let second = sub.next_event(WAIT).unwrap().unwrap();
    assert_eq!((first.data(), second.data()), (&b"0"[..], &b"1"[..]));
    s.save_checkpoint("proj", second.position()).unwrap();
    assert_eq!(s.load_checkpoint("proj").unwrap(), Some(second.position()));
    // Resumes after the checkpoint.
    let mut sub = s.sub_checkpoint("proj", Some(filter)).unwrap();
    assert_eq!(sub.next_event(WAIT).unwrap().unwrap().data(), b"2");
    assert!(matches!(
        s.save_checkpoint("proj", Position(second.position().0 + 1)),
        Err(Error::InvalidPosition(_))
    ));
    assert!(s.save_checkpoint("", second.position()).is_err());
}

// ---- Journaled actors on the backend ------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Move {
    Deposited(u64),
    Withdrawn(u64),
}

impl JournalEvent for Move {
    fn event_type(&self) -> &'static str {
        match self {
            Move::Deposited(_) => "Deposited",
            Move::Withdrawn(_) => "Withdrawn",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Wallet {
    balance: u64,
}

impl JournalState for Wallet {
    type Event = Move;
    type Error = Rejected;
    const TYPE: &'static str = "wallet";
    fn apply(&mut self, e: &Move) -> std::result::Result<(), Rejected> {
        match *e {
            Move::Deposited(n) => self.balance += n,
            Move::Withdrawn(n) if n > self.balance => return Err(Rejected::new("overdrawn")),
            Move::Withdrawn(n) => self.balance -= n,
        }
        Ok(())
    }
}

fn journaled_actors(s: &impl Subject) {
    let journal = Arc::new(Journal::<Wallet>::new().snapshot_every(5));
    let host = Arc::new(Host::new(s.backend(), journal.clone(), 4));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let host = host.clone();
            thread::spawn(move || {
                for i in 0..30u64 {
                    let id = format!("w{}", (t + i) % 6);
                    host.call(&id, |w| -> Result<()> {
                        w.raise_event(Move::Deposited(10))?;
                        if i % 3 == 0 {
                            // Refused when it would overdraw: not raised.
                            let _ = w.raise_event(Move::Withdrawn(25));
                        }
                        w.confirm_events()
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let balances: Vec<u64> = (0..6)
        .map(|k| {
            host.call(&format!("w{k}"), |w| Ok::<_, Error>(w.state().balance))
                .unwrap()
        })
        .collect();
    host.deactivate_all();
    // Rebuilt from snapshots and streams by a new host: the same balances.
    let again = Host::new(s.backend(), journal, 2);
    for (k, b) in balances.iter().enumerate() {
        let got = again
            .call(&format!("w{k}"), |w| Ok::<_, Error>(w.state().balance))
            .unwrap();
        assert_eq!(got, *b);
    }
    let total: u64 = balances.iter().sum();
    let deposits = s.event_type("Deposited", 0, 1000).unwrap().len() as u64;
    let withdrawals = s.event_type("Withdrawn", 0, 1000).unwrap().len() as u64;
    assert_eq!(deposits, 120);
    assert_eq!(total, deposits * 10 - withdrawals * 25);
    // Two handles of one actor: the second to confirm conflicts, refreshes and retries.
    let b = s.backend();
    let mut one = eventjournal::journal::Journaled::activate(
        b.clone(),
        Arc::new(Journal::<Wallet>::new()),
        "w0",
    )
    .unwrap();
    let mut two =
        eventjournal::journal::Journaled::activate(b, Arc::new(Journal::<Wallet>::new()), "w0")
            .unwrap();
    one.raise_event(Move::Deposited(1)).unwrap();
    one.confirm_events().unwrap();
    two.raise_event(Move::Deposited(2)).unwrap();
    two.confirm_events().unwrap();
    assert_eq!(two.state().balance, balances[0] + 3);
}

// ---- The two backends --------------------------------------------------------------------------

fn embedded() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().durability(Durability::None)).unwrap();
    (dir, Arc::new(store))
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod embedded_store {
            $(
                #[test]
                fn $name() {
                    let (_dir, store) = super::embedded();
                    super::$name(&store);
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    let Some(pg) = super::common::pg_store(stringify!($name)) else { return };
                    super::$name(&std::sync::Arc::new(pg.store.clone()));
                }
            )*
        }
    };
}

on_both!(
    expected_versions,
    idempotent_retries,
    multi_stream,
    reads,
    subscriptions,
    checkpoints,
    journaled_actors,
);
