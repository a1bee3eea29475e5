//! The kill -9 crash harness, shared by the test `tests/crash.rs` (a short run with the ordinary
//! tests) and the example `examples/crashloop.rs` (thousands of kills with one command):
//!
//! ```text
//! cargo run --release --example crashloop -- 5000 [--unsynced]
//! ```
//!
//! A child process appends as fast as it can and is killed with SIGKILL at a random moment; the
//! parent then reopens the store and checks that every acknowledged event is there with its exact
//! bytes, that no batch is torn, and that `$all` agrees with the streams.
//!
//! The parent ([`kill_loop`]) starts the child as [`Config::child`] says, a program that calls
//! [`run_child_if_asked`] first thing (the test binary with a filter that runs only its
//! `crash_child` test; the example binary itself), with environment variables that tell it to be
//! the child and on which store. It uses one store directory; a long run moves to a fresh
//! directory whenever the store reaches `STORE_MAX_EVENTS` events. Seven kills in eight come 5 to
//! 150 ms after the child has opened the store; the eighth comes 1 to 60 ms after the spawn, so
//! some land in the child's start-up or in its recovery of the previous kill.
//!
//! A kill is a process crash, not a machine crash: the page cache survives, so this checks that
//! the store never acknowledges before its bytes are written, that recovery cuts a torn tail back
//! to the last whole batch (wherever the kill lands: in a write, a segment roll, an index file
//! save, or recovery itself), and that nothing whole is lost. It does not test fsync.
//!
//! Every event's id, type, data and metadata are a function of its batch's seed, its stream and
//! its index in the batch, and the metadata names the batch's seed and all of its parts, so the
//! parent can check every event it finds, acknowledged or not.
//!
//! A violation panics, naming the iteration and what is wrong; the store directory of that run is
//! then kept on disk (its path is printed on stderr) instead of being removed.
//!
//! `tests/follower.rs` uses the child and the checker too, with a follower in the parent.

// Each binary that includes the harness uses a part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use eventjournal::*;

/// Set in the child: the store directory.
const CHILD_DIR_ENV: &str = "EVJ_CRASH_CHILD_DIR";
/// Set in the child: the seed of its first batch is this plus one.
const CHILD_SEED_ENV: &str = "EVJ_CRASH_CHILD_SEED";
/// Set in the child when it appends with `Durability::None`.
const CHILD_UNSYNCED_ENV: &str = "EVJ_CRASH_CHILD_UNSYNCED";
/// Set in the child when it takes the store over from a running writer (`Store::take_over`)
/// rather than opening it.
const CHILD_TAKE_OVER_ENV: &str = "EVJ_CRASH_CHILD_TAKE_OVER";
/// How many kills the test does (removed from the child's environment).
pub const ITERATIONS_ENV: &str = "EVJ_CRASH_ITERATIONS";
pub const STREAMS: usize = 8;
const SEGMENT_SIZE: u64 = 64 * 1024;
const SIGKILL: i32 = 9;
/// How long the parent waits for a child to open the store.
const CHILD_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The parent re-reads and checks the whole store after every kill; once the store holds this
/// many events, it is checked a last time and the next kill goes to a fresh store, so that long
/// runs stay linear and the store's file count stays bounded (about 800 segments).
const STORE_MAX_EVENTS: usize = 100_000;

/// For a test that starts this test binary as its child, running only the test `test` (which
/// calls [`run_child_if_asked`]): creates the store in `dir` (so that read-only opens find it)
/// and returns the child's program and arguments.
pub fn child_of_this_test(test: &str, dir: &Path) -> (PathBuf, Vec<String>) {
    Store::open(dir, options())
        .and_then(|s| s.close())
        .expect("creating the store");
    (
        std::env::current_exe().expect("this test binary"),
        [test, "--exact", "--nocapture", "--test-threads=1"]
            .map(String::from)
            .to_vec(),
    )
}

pub fn options() -> Options {
    Options::default().segment_size(SEGMENT_SIZE)
}

fn stream_name(s: usize) -> String {
    format!("crash-{s}")
}

fn stream_index(name: &str) -> Option<usize> {
    let s: usize = name.strip_prefix("crash-")?.parse().ok()?;
    (s < STREAMS && stream_name(s) == name).then_some(s)
}

/// SplitMix64: a small deterministic PRNG.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---- Deterministic event content -------------------------------------------------------------

/// A batch: its seed and its parts, (stream, number of events), in write order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub seed: u64,
    pub parts: Vec<(usize, u32)>,
}

fn event_hash(seed: u64, s: usize, k: u32) -> u64 {
    mix(seed ^ mix(((s as u64) << 32) | u64::from(k)))
}

fn event_id(seed: u64, s: usize, k: u32) -> EventId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&seed.to_be_bytes());
    b[8..12].copy_from_slice(&(s as u32).to_be_bytes());
    b[12..].copy_from_slice(&k.to_be_bytes());
    EventId(b)
}

fn event_type(seed: u64, s: usize, k: u32) -> String {
    format!("Crashed{}", event_hash(seed, s, k) % 7)
}

/// Mostly small payloads, some empty, one in ten of 1 to 5 KiB: segments (64 KiB) fill after a
/// few dozen batches, so kills also land in segment rolls.
fn event_data(seed: u64, s: usize, k: u32) -> Vec<u8> {
    let h = event_hash(seed, s, k);
    let len = match h % 10 {
        0 => 0,
        1 => 1024 + (h >> 8) % 4096,
        _ => (h >> 8) % 300,
    } as usize;
    (0..len)
        .map(|i| (h >> ((i % 8) * 8)) as u8 ^ (i / 8) as u8)
        .collect()
}

impl Batch {
    fn metadata(&self, k: u32) -> String {
        let parts: Vec<String> = self.parts.iter().map(|(s, n)| format!("{s}:{n}")).collect();
        format!("seed={};k={k};parts={}", self.seed, parts.join(","))
    }

    fn events(&self, s: usize, count: u32) -> Vec<EventData> {
        (0..count)
            .map(|k| {
                EventData::new(event_type(self.seed, s, k), event_data(self.seed, s, k))
                    .with_id(event_id(self.seed, s, k))
                    .with_metadata(self.metadata(k))
            })
            .collect()
    }

    /// The writes of this batch, expecting the streams to have `versions`.
    pub fn writes(&self, versions: &[Option<u64>]) -> Vec<StreamWrite> {
        self.parts
            .iter()
            .map(|&(s, n)| {
                let expected = match versions[s] {
                    Some(v) => ExpectedVersion::Exact(v),
                    None => ExpectedVersion::NoStream,
                };
                StreamWrite::new(stream_name(s), expected, self.events(s, n))
            })
            .collect()
    }
}

/// What an event's metadata says.
struct Meta {
    seed: u64,
    k: u32,
    parts: Vec<(usize, u32)>,
}

fn parse_meta(bytes: &[u8]) -> Option<Meta> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut fields = text.split(';');
    let seed = fields.next()?.strip_prefix("seed=")?.parse().ok()?;
    let k = fields.next()?.strip_prefix("k=")?.parse().ok()?;
    let parts = fields
        .next()?
        .strip_prefix("parts=")?
        .split(',')
        .map(|p| {
            let (s, n) = p.split_once(':')?;
            Some((s.parse().ok()?, n.parse().ok()?))
        })
        .collect::<Option<Vec<(usize, u32)>>>()?;
    if fields.next().is_some() {
        return None;
    }
    Some(Meta { seed, k, parts })
}

/// Checks that `e`, read from stream `s`, is exactly what its metadata says it is.
fn check_content(e: &RecordedEvent, s: usize, ctx: &str) -> Meta {
    let meta = parse_meta(e.metadata()).unwrap_or_else(|| {
        panic!(
            "{ctx}: {e:?} has unreadable metadata {:?}",
            String::from_utf8_lossy(e.metadata())
        )
    });
    let Meta { seed, k, .. } = meta;
    assert!(
        meta.parts.iter().any(|&(ps, n)| ps == s && k < n),
        "{ctx}: {e:?} is event {k} of batch {seed}, whose parts are {:?}",
        meta.parts
    );
    assert_eq!(e.id(), event_id(seed, s, k), "{ctx}: id of {e:?}");
    assert_eq!(
        e.event_type(),
        event_type(seed, s, k),
        "{ctx}: event type of {e:?}"
    );
    assert!(
        e.data()[..] == event_data(seed, s, k)[..],
        "{ctx}: data of {e:?} (batch {seed}, k {k}) differs from what was appended"
    );
    meta
}

// ---- The child -------------------------------------------------------------------------------

/// The child: appends batches forever, printing one `ACK` line per stream part of every
/// acknowledged batch. Returns at once unless the parent started this process as its child
/// (`EVJ_CRASH_CHILD_DIR` is set); otherwise never returns.
pub fn run_child_if_asked() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let seed_base: u64 = std::env::var(CHILD_SEED_ENV)
        .expect("EVJ_CRASH_CHILD_SEED")
        .parse()
        .expect("EVJ_CRASH_CHILD_SEED is a number");
    // Without syncs, an acknowledged append is in the page cache (written through the segment's
    // map), which a process crash does not lose either.
    let opts = if std::env::var_os(CHILD_UNSYNCED_ENV).is_some() {
        options().durability(Durability::None)
    } else {
        options()
    };
    let store = if std::env::var_os(CHILD_TAKE_OVER_ENV).is_some() {
        Store::open_read_only(&dir, opts)
            .and_then(|f| f.take_over(Duration::from_secs(30)))
            .expect("child: take over")
    } else {
        Store::open(&dir, opts).expect("child: open")
    };
    let mut versions: Vec<Option<u64>> = (0..STREAMS)
        .map(|s| store.stream_version(&stream_name(s)).unwrap())
        .collect();
    let mut rng = Rng(seed_base ^ 0xC0FF_EE00);
    let mut out = std::io::stdout().lock();
    // The test harness may have printed `test crash_child ... ` without a newline.
    out.write_all(b"\nREADY\n").unwrap();
    out.flush().unwrap();
    let mut seed = seed_base;
    loop {
        seed += 1;
        let mut order: Vec<usize> = (0..STREAMS).collect();
        let nparts = if rng.below(3) == 0 {
            2 + rng.below(2) as usize
        } else {
            1
        };
        let mut parts = Vec::with_capacity(nparts);
        for i in 0..nparts {
            let j = i + rng.below((STREAMS - i) as u64) as usize;
            order.swap(i, j);
            let count = if nparts == 1 {
                1 + rng.below(5)
            } else {
                1 + rng.below(3)
            };
            parts.push((order[i], count as u32));
        }
        let batch = Batch { seed, parts };
        let mut writes = batch.writes(&versions);
        let results = if nparts == 1 {
            let w = writes.pop().unwrap();
            store
                .append(&w.stream, w.expected, w.events)
                .map(|r| vec![r])
        } else {
            store.append_multi(writes)
        };
        let results = match results {
            Ok(results) => results,
            // Taken over by another child: nothing more to do but wait for the kill.
            Err(Error::HandedOver { .. }) => loop {
                std::thread::sleep(Duration::from_secs(1));
            },
            Err(e) => panic!("child: append of {batch:?} failed: {e}"),
        };
        assert_eq!(results.len(), nparts, "child: results of {batch:?}");
        let mut line = String::new();
        for (&(s, count), r) in batch.parts.iter().zip(&results) {
            let first = versions[s].map_or(0, |v| v + 1);
            let last = first + u64::from(count) - 1;
            assert_eq!(r.version, Some(last), "child: result of {batch:?}");
            assert!(r.position.is_some(), "child: result of {batch:?}");
            versions[s] = Some(last);
            line.push_str(&format!("ACK {} {first} {count} {seed}\n", stream_name(s)));
        }
        out.write_all(line.as_bytes()).unwrap();
        out.flush().unwrap();
    }
}

// ---- The parent ------------------------------------------------------------------------------

/// The acknowledged batches among `acks`, by seed, with their parts.
pub fn acked_batches(acks: &[Ack]) -> BTreeMap<u64, Vec<Part>> {
    let mut by_seed: BTreeMap<u64, Vec<Part>> = BTreeMap::new();
    for a in acks {
        by_seed
            .entry(a.seed)
            .or_default()
            .push((a.s, a.first, a.count));
    }
    by_seed
}

/// One `ACK` line: events `first..first + count` of stream `s` are batch `seed`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub s: usize,
    pub first: u64,
    pub count: u32,
    pub seed: u64,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let rest = &line[line.find("ACK ")? + 4..];
    let mut f = rest.split_whitespace();
    let s = stream_index(f.next()?)?;
    let ack = Ack {
        s,
        first: f.next()?.parse().ok()?,
        count: f.next()?.parse().ok()?,
        seed: f.next()?.parse().ok()?,
    };
    f.next().is_none().then_some(ack)
}

/// The `ACK` lines of the child's stdout, up to its end. A line cut short by the kill (no newline)
/// is not an acknowledgement the parent counts on.
fn read_acks(out: impl Read) -> Vec<Ack> {
    let mut reader = BufReader::new(out);
    let mut acks = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return acks,
            Ok(_) => {}
        }
        if !line.ends_with('\n') || !line.contains("ACK ") {
            continue;
        }
        let ack = parse_ack(&line).unwrap_or_else(|| panic!("malformed ACK line {line:?}"));
        acks.push(ack);
    }
}

/// Everything the parent has checked in the store so far.
#[derive(Clone, PartialEq, Eq)]
pub struct Model {
    /// Per stream, the ids of its events, by event number.
    streams: Vec<Vec<EventId>>,
    /// `$all`, in order: position and stream of each event.
    all: Vec<(Position, usize)>,
    /// Where `$all` continues past `all`.
    all_next: Position,
    /// Every batch found, by seed: its parts as (stream, first event number, count).
    batches: BTreeMap<u64, Vec<Part>>,
}

/// Where a batch put events in one stream: (stream, first event number, count).
pub type Part = (usize, u64, u32);

/// A batch found among newly read events.
struct Found {
    parts: Vec<(usize, u32)>,
    /// Per stream: (event number, index in the batch) of each event found.
    seen: BTreeMap<usize, Vec<(u64, u32)>>,
}

impl Model {
    pub fn new() -> Model {
        Model {
            streams: vec![Vec::new(); STREAMS],
            all: Vec::new(),
            all_next: Position::START,
            batches: BTreeMap::new(),
        }
    }

    pub fn events(&self) -> usize {
        self.all.len()
    }

    /// Reads everything the store holds past what the model holds, checks it, and adds it.
    pub fn extend(&mut self, store: &Store, ctx: &str) {
        let old_len: Vec<u64> = self.streams.iter().map(|v| v.len() as u64).collect();
        let mut found: BTreeMap<u64, Found> = BTreeMap::new();

        // Streams: contiguous, each event what its metadata says.
        for (s, &from) in old_len.iter().enumerate() {
            let name = stream_name(s);
            let len = store.stream_version(&name).unwrap().map_or(0, |v| v + 1);
            assert!(
                len >= from,
                "{ctx}: stream {name} shrank from {from} to {len} events"
            );
            if from > 0 {
                let e = store
                    .read_event(&name, from - 1)
                    .unwrap_or_else(|e| panic!("{ctx}: {name} event {}: {e}", from - 1));
                assert_eq!(
                    e.id(),
                    self.streams[s][from as usize - 1],
                    "{ctx}: {name} event {} changed",
                    from - 1
                );
            }
            let events: Vec<RecordedEvent> = store
                .read_stream_forward(&name, from, usize::MAX)
                .unwrap()
                .collect::<Result<_>>()
                .unwrap_or_else(|e| panic!("{ctx}: reading {name} from {from}: {e}"));
            assert_eq!(
                events.len() as u64,
                len - from,
                "{ctx}: reading {name} from {from} disagrees with stream_version {:?}",
                store.stream_version(&name).unwrap()
            );
            for (i, e) in events.iter().enumerate() {
                let n = from + i as u64;
                assert_eq!(e.event_number(), n, "{ctx}: {name} read at {n}: {e:?}");
                assert_eq!(e.stream(), name, "{ctx}: {name} read at {n}: {e:?}");
                let meta = check_content(e, s, ctx);
                let f = found.entry(meta.seed).or_insert_with(|| Found {
                    parts: meta.parts.clone(),
                    seen: BTreeMap::new(),
                });
                assert_eq!(
                    f.parts, meta.parts,
                    "{ctx}: events of batch {} disagree on its parts",
                    meta.seed
                );
                f.seen.entry(s).or_default().push((n, meta.k));
                self.streams[s].push(e.id());
            }
        }

        // Batches: every new batch is whole in every stream it names, and new.
        for (&seed, f) in &found {
            assert!(
                !self.batches.contains_key(&seed),
                "{ctx}: batch {seed} found again past events already checked"
            );
            let named: BTreeSet<usize> = f.parts.iter().map(|p| p.0).collect();
            let present: BTreeSet<usize> = f.seen.keys().copied().collect();
            assert_eq!(
                present, named,
                "{ctx}: torn batch {seed}: parts {:?}, present in streams {present:?}",
                f.parts
            );
            let mut parts = Vec::with_capacity(f.parts.len());
            for &(s, count) in &f.parts {
                let seen = &f.seen[&s];
                let ks: Vec<u32> = seen.iter().map(|x| x.1).collect();
                assert_eq!(
                    ks,
                    (0..count).collect::<Vec<_>>(),
                    "{ctx}: torn batch {seed}: {} holds these of its {count} events",
                    stream_name(s)
                );
                let first = seen[0].0;
                for (i, &(n, _)) in seen.iter().enumerate() {
                    assert_eq!(n, first + i as u64, "{ctx}: batch {seed} is not contiguous");
                }
                parts.push((s, first, count));
            }
            self.batches.insert(seed, parts);
        }

        // $all: exactly the new stream events, in stream order, positions strictly increasing,
        // each batch in one piece.
        let all: Vec<RecordedEvent> = store
            .read_all_forward(self.all_next, usize::MAX)
            .unwrap_or_else(|e| panic!("{ctx}: read_all_forward({}): {e}", self.all_next))
            .collect::<Result<_>>()
            .unwrap_or_else(|e| panic!("{ctx}: reading $all from {}: {e}", self.all_next));
        let mut next = old_len;
        let mut batch_in_progress = None;
        let mut done_batches = HashSet::new();
        for e in &all {
            let ctx = format!("{ctx}: $all event {e:?}");
            assert!(
                e.position() >= self.all_next
                    && self.all.last().is_none_or(|&(p, _)| e.position() > p),
                "{ctx}: position not past the previous one {:?}",
                self.all.last()
            );
            assert!(e.next_position() > e.position(), "{ctx}: next_position");
            let s = stream_index(e.stream()).unwrap_or_else(|| panic!("{ctx}: unknown stream"));
            let n = e.event_number();
            assert_eq!(
                n, next[s],
                "{ctx}: expected event {} of its stream",
                next[s]
            );
            assert!(
                (n as usize) < self.streams[s].len(),
                "{ctx}: in $all but not in its stream"
            );
            assert_eq!(e.id(), self.streams[s][n as usize], "{ctx}: id");
            let meta = check_content(e, s, &ctx);
            if batch_in_progress != Some(meta.seed) {
                assert!(
                    done_batches.insert(meta.seed),
                    "{ctx}: batch {} is split in $all",
                    meta.seed
                );
                batch_in_progress = Some(meta.seed);
            }
            next[s] += 1;
            self.all.push((e.position(), s));
            self.all_next = e.next_position();
        }
        for (s, (&n, ids)) in next.iter().zip(&self.streams).enumerate() {
            assert_eq!(
                n,
                ids.len() as u64,
                "{ctx}: $all lacks events of {}",
                stream_name(s)
            );
        }
        assert!(
            store.head() >= self.all_next,
            "{ctx}: head {} before the end of the last event {}",
            store.head(),
            self.all_next
        );
    }

    /// Re-reads the whole store and checks that it still holds everything the model holds.
    pub fn full_check(&mut self, store: &Store, ctx: &str) {
        let mut fresh = Model::new();
        fresh.extend(store, ctx);
        for s in 0..STREAMS {
            assert!(
                fresh.streams[s].starts_with(&self.streams[s]),
                "{ctx}: {} no longer holds the events checked before",
                stream_name(s)
            );
        }
        assert!(
            fresh.all.starts_with(&self.all),
            "{ctx}: $all no longer starts with what it held before"
        );
        for (seed, parts) in &self.batches {
            assert_eq!(fresh.batches.get(seed), Some(parts), "{ctx}: batch {seed}");
        }
        *self = fresh;
    }

    /// Sends 64 of the batches in the store again with `Any` (through the event-id index, in
    /// whatever state the kill left its tables): each is recognised, answered with the versions
    /// it was written at, and nothing is written.
    pub fn check_retries(&self, store: &Store, ctx: &str) {
        let head = store.head();
        for (&seed, parts) in self.batches.iter().rev().take(64) {
            let batch = Batch {
                seed,
                parts: parts.iter().map(|&(s, _, n)| (s, n)).collect(),
            };
            let writes = parts
                .iter()
                .map(|&(s, _, n)| {
                    StreamWrite::new(stream_name(s), ExpectedVersion::Any, batch.events(s, n))
                })
                .collect();
            let results = store
                .append_multi(writes)
                .unwrap_or_else(|e| panic!("{ctx}: retry of batch {seed}: {e}"));
            for (&(s, first, n), r) in parts.iter().zip(&results) {
                assert_eq!(
                    r.version,
                    Some(first + u64::from(n) - 1),
                    "{ctx}: retry of batch {seed} in {}",
                    stream_name(s)
                );
            }
        }
        assert_eq!(store.head(), head, "{ctx}: a retry was written again");
    }

    /// Checks that the batch `seed` is in the store with exactly `parts`.
    pub fn check_acked(&self, seed: u64, parts: &[Part], ctx: &str) {
        match self.batches.get(&seed) {
            Some(found) => assert_eq!(
                found, parts,
                "{ctx}: acknowledged batch {seed} is not where it was acknowledged"
            ),
            None => panic!("{ctx}: acknowledged batch {seed} {parts:?} is lost"),
        }
    }
}

// ---- The parent loop -------------------------------------------------------------------------

/// What a run of the parent does.
pub struct Config {
    /// How many times the child is killed.
    pub kills: u64,
    /// Whether the child appends with `Durability::None`.
    pub unsynced: bool,
    /// The program run as the child, and its arguments; the parent adds the environment that
    /// makes the program call [`run_child_if_asked`] act as the child.
    pub child: (PathBuf, Vec<String>),
    /// Print a progress line (`name (kills done/kills): ` and the [`Summary`] so far) every this
    /// many kills.
    pub progress_every: Option<u64>,
    /// Names the run in progress lines.
    pub name: String,
}

/// What a run did; its `Display` is a one-line summary.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub kills: u64,
    /// Kills that came before the child had opened the store.
    pub kills_before_ready: u64,
    pub acked_events: u64,
    pub acked_batches: u64,
    /// Batches written but killed before their acknowledgement, found whole in the store.
    pub unacked_batches: u64,
    /// Events in the stores at the end (acknowledged or not, and the parent's own).
    pub events: u64,
    /// Store directories used.
    pub stores: u64,
    pub elapsed: Duration,
    pub time_child: Duration,
    pub time_open: Duration,
    pub time_check: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self;
        write!(
            f,
            "{} kills ({} before the child was ready), {} acknowledged events in {} batches, {} \
             unacknowledged batches found whole, {} events in {} store(s), {:.1?} (children \
             {:.1?}, reopening {:.1?}, checking {:.1?})",
            s.kills,
            s.kills_before_ready,
            s.acked_events,
            s.acked_batches,
            s.unacked_batches,
            s.events,
            s.stores,
            s.elapsed,
            s.time_child,
            s.time_open,
            s.time_check
        )
    }
}

/// The store directory of a run: removed when it is done with, but kept on disk (and named on
/// stderr) when the run panics on a violation, for a look at what the kill left.
struct StoreDir(Option<tempfile::TempDir>);

impl StoreDir {
    fn new() -> StoreDir {
        StoreDir(Some(
            tempfile::Builder::new()
                .prefix("evj-crash")
                .tempdir()
                .expect("create a store directory"),
        ))
    }

    fn path(&self) -> &Path {
        self.0.as_ref().expect("a store directory").path()
    }
}

impl Drop for StoreDir {
    fn drop(&mut self) {
        if let (true, Some(dir)) = (std::thread::panicking(), self.0.take()) {
            eprintln!("crash harness: store kept in {}", dir.keep().display());
        }
    }
}

/// The parent: kills the child again and again, checking the store after each kill; panics on the
/// first violation.
pub fn kill_loop(config: &Config) -> Summary {
    let iterations = config.kills;
    let unsynced = config.unsynced;
    let mut dir = StoreDir::new();
    let mut sum = Summary {
        stores: 1,
        ..Summary::default()
    };
    let mut events_in_earlier_stores = 0;
    let started = Instant::now();
    let mut model = Model::new();
    // The parent's own batch of the previous iteration, checked after the next kill.
    let mut parent_batch: Option<(u64, Vec<Part>)> = None;

    for iter in 0..iterations {
        if model.events() >= STORE_MAX_EVENTS {
            let ctx = format!("before iteration {iter}, finishing store {}", sum.stores);
            finish_store(dir.path(), &mut model, parent_batch.take(), &ctx);
            events_in_earlier_stores += model.events() as u64;
            model = Model::new();
            dir = StoreDir::new();
            sum.stores += 1;
        }
        let seed_base = (iter + 1) << 32;
        let mut rng = Rng(0x5EED_0000 + iter);
        // Mostly while appending; one kill in eight at any moment from the spawn on, which lands
        // in the child's start-up or in its recovery of the previous kill once the store is big.
        let kill = if iter % 8 == 7 {
            Kill::AfterSpawn(Duration::from_millis(1 + rng.below(60)))
        } else {
            Kill::AfterReady(Duration::from_millis(5 + rng.below(146)))
        };
        let t = Instant::now();
        let (acks, ready) =
            run_and_kill(&config.child, dir.path(), seed_base, kill, iter, unsynced);
        sum.time_child += t.elapsed();
        sum.kills += 1;
        if !ready {
            sum.kills_before_ready += 1;
        }

        let ctx = format!("iteration {iter} (killed {kill:?})");
        let t = Instant::now();
        let store = Store::open(dir.path(), options())
            .unwrap_or_else(|e| panic!("{ctx}: reopening after the kill failed: {e}"));
        sum.time_open += t.elapsed();
        let t = Instant::now();
        model.full_check(&store, &ctx);
        sum.time_check += t.elapsed();

        if let Some((seed, parts)) = parent_batch.take() {
            model.check_acked(seed, &parts, &ctx);
        }

        // Every acknowledged batch is there, whole, where it was acknowledged.
        let by_seed = acked_batches(&acks);
        sum.acked_events += acks.iter().map(|a| u64::from(a.count)).sum::<u64>();
        for (&seed, parts) in &by_seed {
            model.check_acked(seed, parts, &ctx);
        }
        sum.acked_batches += by_seed.len() as u64;
        // The child appends one batch at a time, with seeds counting up from seed_base + 1: the
        // acknowledged ones are a run from there, and at most the one after them may also be in
        // the store (written, but killed before its ACK line).
        let acked_seeds: Vec<u64> = by_seed.keys().copied().collect();
        let last_acked = seed_base + acked_seeds.len() as u64;
        assert_eq!(
            acked_seeds,
            (seed_base + 1..=last_acked).collect::<Vec<_>>(),
            "{ctx}: acknowledged seeds"
        );
        let stored: Vec<u64> = model
            .batches
            .range(seed_base + 1..seed_base + (1 << 32))
            .map(|(&seed, _)| seed)
            .collect();
        let extra = &stored[acked_seeds.len().min(stored.len())..];
        assert!(
            stored.starts_with(&acked_seeds) && (extra.is_empty() || extra == [last_acked + 1]),
            "{ctx}: batches of this child in the store {stored:?} beyond the acknowledged \
             {seed_base}+1..={last_acked}"
        );
        sum.unacked_batches += extra.len() as u64;

        // The store takes appends after recovery.
        let versions: Vec<Option<u64>> = model
            .streams
            .iter()
            .map(|v| (v.len() as u64).checked_sub(1))
            .collect();
        let batch = Batch {
            seed: seed_base,
            parts: vec![
                (iter as usize % STREAMS, 2),
                ((iter as usize + 3) % STREAMS, 1),
            ],
        };
        let results = store
            .append_multi(batch.writes(&versions))
            .unwrap_or_else(|e| panic!("{ctx}: appending after recovery failed: {e}"));
        let parts: Vec<Part> = batch
            .parts
            .iter()
            .map(|&(s, n)| (s, versions[s].map_or(0, |v| v + 1), n))
            .collect();
        for (&(_, first, n), r) in parts.iter().zip(&results) {
            assert_eq!(r.version, Some(first + u64::from(n) - 1), "{ctx}: {r:?}");
        }
        parent_batch = Some((seed_base, parts));
        store
            .close()
            .unwrap_or_else(|e| panic!("{ctx}: close: {e}"));

        let done = iter + 1;
        if done < iterations
            && config
                .progress_every
                .is_some_and(|n| n > 0 && done % n == 0)
        {
            let so_far = Summary {
                events: events_in_earlier_stores + model.events() as u64,
                elapsed: started.elapsed(),
                ..sum.clone()
            };
            println!("{} ({done}/{iterations}): {so_far}", config.name);
        }
    }

    finish_store(
        dir.path(),
        &mut model,
        parent_batch.take(),
        "after the last iteration",
    );
    assert!(
        iterations == 0 || sum.acked_events > 0,
        "no append was ever acknowledged: the child never got to work"
    );
    sum.events = events_in_earlier_stores + model.events() as u64;
    sum.elapsed = started.elapsed();
    sum
}

/// The last check of a store: everything is still there, with the parent's last batch.
fn finish_store(dir: &Path, model: &mut Model, parent_batch: Option<(u64, Vec<Part>)>, ctx: &str) {
    let store = Store::open(dir, options()).unwrap_or_else(|e| panic!("{ctx}: open: {e}"));
    model.full_check(&store, ctx);
    if let Some((seed, parts)) = parent_batch {
        model.check_acked(seed, &parts, ctx);
    }
    model.check_retries(&store, ctx);
    store
        .close()
        .unwrap_or_else(|e| panic!("{ctx}: close: {e}"));
}

/// When the parent kills the child.
#[derive(Debug, Clone, Copy)]
pub enum Kill {
    /// This long after the child printed READY (it has opened the store and appends).
    AfterReady(Duration),
    /// This long after spawning it, ready or not: may land in its start-up or in recovery.
    AfterSpawn(Duration),
}

/// A child running on a store.
pub struct Running {
    child: std::process::Child,
    ready: mpsc::Receiver<()>,
    out: std::thread::JoinHandle<(Vec<Ack>, bool)>,
    err: std::thread::JoinHandle<String>,
}

/// Starts the child on `dir` (appending with `Durability::None` if `unsynced`; taking the store
/// over from a running writer if `take_over`).
pub fn spawn_child(
    (program, args): &(PathBuf, Vec<String>),
    dir: &Path,
    seed_base: u64,
    unsynced: bool,
    take_over: bool,
) -> Running {
    let mut command = Command::new(program);
    if unsynced {
        command.env(CHILD_UNSYNCED_ENV, "1");
    } else {
        command.env_remove(CHILD_UNSYNCED_ENV);
    }
    if take_over {
        command.env(CHILD_TAKE_OVER_ENV, "1");
    } else {
        command.env_remove(CHILD_TAKE_OVER_ENV);
    }
    let mut child = command
        .args(args)
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_SEED_ENV, seed_base.to_string())
        .env_remove(ITERATIONS_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the child");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (ready_tx, ready) = mpsc::channel::<()>();
    let out = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        // Note READY (the store is open), then collect the ACK lines.
        let mut first = String::new();
        let mut ready = false;
        while reader.read_line(&mut first).unwrap_or(0) > 0 {
            if first.trim_end() == "READY" {
                ready = true;
                let _ = ready_tx.send(());
                break;
            }
            first.clear();
        }
        drop(ready_tx);
        (read_acks(reader), ready)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    Running {
        child,
        ready,
        out,
        err,
    }
}

impl Running {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to a minute) until the child has the store open; false if it ended before.
    pub fn wait_ready(&self) -> bool {
        self.ready.recv_timeout(CHILD_READY_TIMEOUT).is_ok()
    }

    /// Kills the child; returns its acknowledgements and whether it got as far as having the
    /// store open. Panics if it had ended by itself.
    pub fn kill(mut self, iter: u64) -> (Vec<Ack>, bool) {
        let _ = self.child.kill();
        let status = self.child.wait().unwrap();
        let (acks, ready) = self.out.join().expect("ACK reader");
        let err = self.err.join().unwrap();
        assert_eq!(
            status.signal(),
            Some(SIGKILL),
            "iteration {iter}: the child was not killed but ended by itself ({status}); its stderr:\n{err}"
        );
        (acks, ready)
    }
}

/// Runs the child on `dir`, kills it as `kill` says, and returns its acknowledgements and whether
/// it got as far as opening the store.
pub fn run_and_kill(
    program: &(PathBuf, Vec<String>),
    dir: &Path,
    seed_base: u64,
    kill: Kill,
    iter: u64,
    unsynced: bool,
) -> (Vec<Ack>, bool) {
    let running = spawn_child(program, dir, seed_base, unsynced, false);
    match kill {
        Kill::AfterSpawn(delay) => std::thread::sleep(delay),
        Kill::AfterReady(delay) => {
            // Disconnected: the child ended before READY; the status check reports it.
            if running.wait_ready() {
                std::thread::sleep(delay);
            }
        }
    }
    running.kill(iter)
}
