//! Criterion benchmarks of journaled actors (`eventjournal::journal`). The actor is an account:
//! events `Deposited(amount)` and `Withdrawn(amount)`, a state `{ balance, deposits }`, encoded
//! by the default bincode codec. Groups (pick one with `cargo bench --bench journal -- <group>`):
//!
//! - `activate`: `Journaled::activate` of one actor of 10,000 events, from the store (nothing is
//!   cached between iterations): `replay_10k` without snapshots (all 10,000 events decoded and
//!   applied), `snapshot_10k` from a snapshot covering all 10,000 events, and
//!   `snapshot_9k_replay_1k` from a snapshot at 9,000 events plus the 1,000 events after it.
//!   Throughput: the 10,000 events the activated state covers, in all three.
//! - `host`: a `Host` over 10,000 actors of 20 events each (200,000 events):
//!   `hit_active_10k`, calls `|a| Ok(a.version())` rotating over the 10,000 actors, all active
//!   (capacity 20,000); `churn_10k_cap_1k`, the same rotation with capacity 1,000, so every call
//!   activates an actor (20 events) and deactivates the least recently used one;
//!   `write_4_threads`, 4 threads each calling `raise_event` + `confirm_events` on its own 2,500
//!   actors through one shared host (one iteration: one call by every thread).
//!
//! A filter is a regular expression matched against `group/benchmark`: `-- '^host/'` selects only
//! the `host` group.
//!
//! Stores are built with `Durability::None` (durability is not what these measure) the first time
//! a benchmark that needs them runs, in temporary directories, through the journal API itself.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eventjournal::journal::{Host, Journal, JournalEvent, JournalState, Journaled, Rejected};
use eventjournal::{Durability, Options, Store};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

/// Events of the actor `activate` activates.
const ACTIVATE_EVENTS: u64 = 10_000;
/// Events covered by the snapshot of `activate/snapshot_9k_replay_1k`.
const PARTIAL_SNAPSHOT_AT: u64 = 9_000;
/// Actors of the `host` store, and events of each.
const HOST_ACTORS: usize = 10_000;
const HOST_EVENTS_PER_ACTOR: u64 = 20;
/// Events raised and confirmed as one append while building a store.
const FILL_CHUNK: u64 = 1_000;
/// Threads, and actors of each, of `host/write_4_threads`.
const WRITER_THREADS: usize = 4;
const WRITER_ACTORS_PER_THREAD: usize = 2_500;
/// Events written after which `host/write_4_threads` starts over with an empty store, so that a
/// long measurement does not fill the disk.
const WRITES_PER_STORE: u64 = 200_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Event {
    Deposited(u64),
    Withdrawn(u64),
}

impl JournalEvent for Event {
    fn event_type(&self) -> &'static str {
        match self {
            Event::Deposited(_) => "Deposited",
            Event::Withdrawn(_) => "Withdrawn",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Account {
    balance: u64,
    deposits: u64,
}

impl JournalState for Account {
    type Event = Event;
    type Error = Rejected;
    const TYPE: &'static str = "account";

    fn apply(&mut self, event: &Event) -> Result<(), Rejected> {
        match *event {
            Event::Deposited(n) => {
                self.balance += n;
                self.deposits += 1;
            }
            Event::Withdrawn(n) if n <= self.balance => self.balance -= n,
            Event::Withdrawn(_) => return Err(Rejected::new("insufficient funds")),
        }
        Ok(())
    }
}

/// Event number `i` of every account: three deposits of 1 to 1,000, then a withdrawal of less
/// than 100 (always covered).
fn event(i: u64) -> Event {
    if i % 4 == 3 {
        Event::Withdrawn(i % 100)
    } else {
        Event::Deposited(i % 1000 + 1)
    }
}

/// The state after events `0..n`.
fn expected_state(n: u64) -> Account {
    let mut state = Account::default();
    for i in 0..n {
        state.apply(&event(i)).expect("the events always apply");
    }
    state
}

type Actor = Journaled<Account>;

fn open() -> (TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(dir.path(), Options::default().durability(Durability::None))
        .expect("open store");
    (dir, Arc::new(store))
}

/// Closes a store built for a benchmark, once nothing else holds it, and removes its directory.
fn close(built: Option<(TempDir, Arc<Store>)>) {
    if let Some((dir, store)) = built {
        Arc::try_unwrap(store)
            .ok()
            .expect("the store is no longer shared")
            .close()
            .expect("close");
        drop(dir);
    }
}

/// Raises and confirms `n` more events on `actor`, `FILL_CHUNK` per append.
fn write_events(actor: &mut Actor, n: u64) {
    let end = actor.version() + n;
    while actor.version() < end {
        let from = actor.version();
        let to = end.min(from + FILL_CHUNK);
        actor
            .raise_events((from..to).map(event).collect())
            .expect("raise");
        actor.confirm_events().expect("confirm");
    }
}

/// The `activate` store: actor `replay` with 10,000 events, `snapshot` with 10,000 events and a
/// snapshot of all of them, `partial` with a snapshot at 9,000 and 1,000 events after it.
fn activate_store(journal: &Arc<Journal<Account>>) -> (TempDir, Arc<Store>) {
    let (dir, store) = open();
    let mut replay = Actor::activate(store.clone(), journal.clone(), "replay").expect("activate");
    write_events(&mut replay, ACTIVATE_EVENTS);
    let mut full = Actor::activate(store.clone(), journal.clone(), "snapshot").expect("activate");
    write_events(&mut full, ACTIVATE_EVENTS);
    full.snapshot().expect("snapshot");
    assert_eq!(full.snapshot_version(), ACTIVATE_EVENTS);
    let mut partial = Actor::activate(store.clone(), journal.clone(), "partial").expect("activate");
    write_events(&mut partial, PARTIAL_SNAPSHOT_AT);
    partial.snapshot().expect("snapshot");
    write_events(&mut partial, ACTIVATE_EVENTS - PARTIAL_SNAPSHOT_AT);
    assert_eq!(partial.snapshot_version(), PARTIAL_SNAPSHOT_AT);
    (dir, store)
}

fn activate(c: &mut Criterion) {
    // The store is written without snapshots (taken by hand); `snapshots` reads them.
    let plain = Arc::new(Journal::<Account>::new());
    let snapshots = Arc::new(Journal::<Account>::new().snapshot_every(ACTIVATE_EVENTS));
    let expected = expected_state(ACTIVATE_EVENTS);
    let mut built: Option<(TempDir, Arc<Store>)> = None;
    let mut group = c.benchmark_group("activate");
    group.throughput(Throughput::Elements(ACTIVATE_EVENTS));
    let cases = [
        ("replay_10k", &plain, "replay", 0),
        ("snapshot_10k", &snapshots, "snapshot", ACTIVATE_EVENTS),
        (
            "snapshot_9k_replay_1k",
            &snapshots,
            "partial",
            PARTIAL_SNAPSHOT_AT,
        ),
    ];
    for (name, journal, id, snapshot_at) in cases {
        group.bench_function(name, |b| {
            let (_, store) = built.get_or_insert_with(|| activate_store(&plain));
            // Untimed: checks that the activation starts from the intended snapshot and ends in
            // the right state, and maps the pages.
            let actor = Actor::activate(store.clone(), journal.clone(), id).expect("activate");
            assert_eq!(actor.snapshot_version(), snapshot_at);
            assert_eq!(
                (actor.version(), actor.state()),
                (ACTIVATE_EVENTS, &expected)
            );
            drop(actor);
            b.iter(|| {
                let actor = Actor::activate(store.clone(), journal.clone(), id).expect("activate");
                assert_eq!(actor.version(), ACTIVATE_EVENTS);
                black_box(actor)
            });
        });
    }
    group.finish();
    close(built);
}

/// The `host` store: actors `0` to `9999`, each with 20 events in one append.
fn host_store(journal: &Arc<Journal<Account>>, ids: &[String]) -> (TempDir, Arc<Store>) {
    let (dir, store) = open();
    for id in ids {
        let mut actor = Actor::activate(store.clone(), journal.clone(), id).expect("activate");
        write_events(&mut actor, HOST_EVENTS_PER_ACTOR);
    }
    (dir, store)
}

/// A host of `capacity` over `store`, after one untimed call to every actor of `ids`, in order.
fn warmed_host(
    store: &Arc<Store>,
    journal: &Arc<Journal<Account>>,
    ids: &[String],
    capacity: usize,
) -> Host<Account> {
    let host = Host::new(store.clone(), journal.clone(), capacity);
    for id in ids {
        let version = host
            .call(id, |a| Ok::<_, eventjournal::Error>(a.version()))
            .expect("call");
        assert_eq!(version, HOST_EVENTS_PER_ACTOR);
    }
    assert_eq!(host.active(), capacity.min(ids.len()));
    host
}

/// The `host/write_4_threads` setup: a fresh store and host, and the actors of each thread,
/// already active (their streams are empty).
struct Writers {
    dir: TempDir,
    store: Arc<Store>,
    host: Host<Account>,
    ids: Vec<Vec<String>>,
    written: u64,
}

impl Writers {
    fn new() -> Writers {
        let (dir, store) = open();
        let host = Host::new(
            store.clone(),
            Arc::new(Journal::new()),
            WRITER_THREADS * WRITER_ACTORS_PER_THREAD * 2,
        );
        let ids: Vec<Vec<String>> = (0..WRITER_THREADS)
            .map(|t| {
                (0..WRITER_ACTORS_PER_THREAD)
                    .map(|k| format!("w{t}-{k}"))
                    .collect()
            })
            .collect();
        for id in ids.iter().flatten() {
            host.call(id, |a| Ok::<_, eventjournal::Error>(a.version()))
                .expect("activate");
        }
        Writers {
            dir,
            store,
            host,
            ids,
            written: 0,
        }
    }

    /// Every thread makes `rounds` calls, each raising and confirming one event on the next of
    /// its actors; returns the time from the moment all are released until the last is done.
    fn run(&mut self, rounds: u64) -> Duration {
        let barrier = Barrier::new(WRITER_THREADS + 1);
        let (host, barrier) = (&self.host, &barrier);
        let elapsed = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .ids
                .iter()
                .map(|ids| {
                    s.spawn(move || {
                        let mut version = 0;
                        barrier.wait();
                        for r in 0..rounds {
                            let id = &ids[r as usize % ids.len()];
                            version = host
                                .call(id, |a| -> eventjournal::Result<_> {
                                    a.raise_event(Event::Deposited(r % 1000 + 1))?;
                                    a.confirm_events()?;
                                    Ok(a.version())
                                })
                                .expect("write");
                        }
                        black_box(version)
                    })
                })
                .collect();
            barrier.wait();
            let start = Instant::now();
            for h in handles {
                h.join().expect("writer thread");
            }
            start.elapsed()
        });
        self.written += rounds * WRITER_THREADS as u64;
        elapsed
    }

    fn close(self) {
        drop(self.host);
        close(Some((self.dir, self.store)));
    }
}

fn host(c: &mut Criterion) {
    let journal = Arc::new(Journal::<Account>::new());
    let ids: Vec<String> = (0..HOST_ACTORS).map(|i| i.to_string()).collect();
    let mut built: Option<(TempDir, Arc<Store>)> = None;
    let mut group = c.benchmark_group("host");
    group.throughput(Throughput::Elements(1));
    for (name, capacity) in [
        ("hit_active_10k", 2 * HOST_ACTORS),
        ("churn_10k_cap_1k", 1_000),
    ] {
        let mut warmed: Option<Host<Account>> = None;
        let mut next = 0usize;
        group.bench_function(name, |b| {
            let (_, store) = built.get_or_insert_with(|| host_store(&journal, &ids));
            let host = warmed.get_or_insert_with(|| warmed_host(store, &journal, &ids, capacity));
            b.iter(|| {
                let id = &ids[next];
                next = (next + 1) % ids.len();
                host.call(id, |a| Ok::<_, eventjournal::Error>(a.version()))
                    .expect("call")
            });
        });
        drop(warmed);
    }
    close(built);

    group.throughput(Throughput::Elements(WRITER_THREADS as u64));
    let mut writers: Option<Writers> = None;
    group.bench_function("write_4_threads", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let w = writers.get_or_insert_with(Writers::new);
                if w.written >= WRITES_PER_STORE {
                    if let Some(full) = writers.take() {
                        full.close();
                    }
                    continue;
                }
                let per_thread_left = (WRITES_PER_STORE - w.written) / WRITER_THREADS as u64;
                let rounds = left.min(per_thread_left.max(1));
                total += w.run(rounds);
                left -= rounds;
            }
            total
        });
    });
    if let Some(w) = writers {
        w.close();
    }
    group.finish();
}

criterion_group!(benches, activate, host);
criterion_main!(benches);
