//! Concurrency: optimistic concurrency under contention, group commit with `Durability::Sync`,
//! and readers running while appends are committed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use eventjournal::*;

/// SplitMix64: a small deterministic PRNG.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

fn expected_for(version: Option<u64>) -> ExpectedVersion {
    match version {
        Some(v) => ExpectedVersion::Exact(v),
        None => ExpectedVersion::NoStream,
    }
}

fn read_stream(store: &Store, stream: &str) -> Vec<RecordedEvent> {
    store
        .read_stream_forward(stream, 0, usize::MAX)
        .unwrap()
        .collect::<Result<Vec<_>>>()
        .unwrap()
}

fn read_all(store: &Store) -> Vec<RecordedEvent> {
    store
        .read_all_forward(Position::START, usize::MAX)
        .unwrap()
        .collect::<Result<Vec<_>>>()
        .unwrap()
}

// ---- Expected versions under contention ------------------------------------------------------

/// An append that succeeded: `stream` got events `first..=last` with `ids`.
#[derive(Debug, Clone)]
struct Granted {
    thread: usize,
    round: usize,
    stream: usize,
    first: u64,
    last: u64,
    ids: Vec<EventId>,
}

/// An append refused with `WrongExpectedVersion`.
#[derive(Debug, Clone)]
struct Refused {
    thread: usize,
    round: usize,
    stream: usize,
    /// The version the thread had read, and expected.
    read: Option<u64>,
    /// The version the store said the stream had.
    actual: Option<u64>,
}

/// What one appending thread saw.
#[derive(Default)]
struct Log {
    granted: Vec<Granted>,
    refused: Vec<Refused>,
}

const RACE_STREAMS: usize = 3;

fn race_stream(s: usize) -> String {
    format!("race-{s}")
}

/// `threads` threads, `rounds` appends each, to `RACE_STREAMS` shared streams: read
/// `stream_version`, append with the matching `Exact`/`NoStream`. With `lockstep`, every round
/// starts only when the previous one is done, and every thread reads before any appends.
fn race(store: &Arc<Store>, threads: usize, rounds: usize, lockstep: bool) -> Vec<Log> {
    let start = Arc::new(Barrier::new(threads));
    let read = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            let start = start.clone();
            let read = read.clone();
            thread::spawn(move || {
                let mut rng = Rng(0xACE0 + t as u64);
                let mut log = Log::default();
                for round in 0..rounds {
                    let s = rng.below(RACE_STREAMS as u64) as usize;
                    let name = race_stream(s);
                    let n = 1 + rng.below(3) as usize;
                    let events: Vec<EventData> = (0..n)
                        .map(|i| {
                            EventData::new("Raced", format!("t{t} r{round} {i}/{n}"))
                                .with_metadata(format!("{t}"))
                        })
                        .collect();
                    let ids: Vec<EventId> = events.iter().map(EventData::id).collect();
                    if lockstep {
                        start.wait();
                    }
                    let v = store.stream_version(&name).unwrap();
                    if lockstep {
                        read.wait();
                    } else if rng.below(4) == 0 {
                        // Widen the window between the read and the append now and then.
                        thread::yield_now();
                    }
                    let expected = expected_for(v);
                    match store.append(&name, expected, events) {
                        Ok(r) => {
                            let first = v.map_or(0, |v| v + 1);
                            let last = first + n as u64 - 1;
                            assert_eq!(
                                r.version,
                                Some(last),
                                "thread {t} round {round}: {name} appended at {expected:?}"
                            );
                            assert!(r.position.is_some());
                            log.granted.push(Granted {
                                thread: t,
                                round,
                                stream: s,
                                first,
                                last,
                                ids,
                            });
                        }
                        Err(Error::WrongExpectedVersion {
                            stream,
                            expected: e,
                            actual,
                        }) => {
                            assert_eq!(stream, name);
                            assert_eq!(e, expected);
                            log.refused.push(Refused {
                                thread: t,
                                round,
                                stream: s,
                                read: v,
                                actual,
                            });
                        }
                        Err(e) => panic!("thread {t} round {round}: unexpected error {e}"),
                    }
                }
                log
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Checks the logs of `race` against each other and against the store.
fn check_race(store: &Store, logs: &[Log]) -> (usize, usize) {
    let granted: Vec<&Granted> = logs.iter().flat_map(|l| &l.granted).collect();
    let refused: Vec<&Refused> = logs.iter().flat_map(|l| &l.refused).collect();
    for s in 0..RACE_STREAMS {
        let name = race_stream(s);
        let mut mine: Vec<&Granted> = granted.iter().copied().filter(|g| g.stream == s).collect();
        mine.sort_by_key(|g| g.first);
        // Granted ranges tile the stream: no version granted twice, none skipped.
        let mut next = 0;
        for g in &mine {
            assert_eq!(
                g.first, next,
                "{name}: {g:?} does not start where the previous grant ended: version granted \
                 twice or skipped"
            );
            next = g.last + 1;
        }
        let total: u64 = mine.iter().map(|g| g.last - g.first + 1).sum();
        assert_eq!(
            store.stream_version(&name).unwrap(),
            total.checked_sub(1),
            "{name}: final version vs {total} granted events"
        );
        // Every granted event is where it was granted.
        let events = read_stream(store, &name);
        assert_eq!(events.len() as u64, total, "{name}: events read");
        for g in &mine {
            for (k, id) in g.ids.iter().enumerate() {
                let e = &events[(g.first + k as u64) as usize];
                assert_eq!(e.event_number(), g.first + k as u64);
                assert_eq!(e.id(), *id, "{name}: event {} of {g:?}", g.first + k as u64);
                assert_eq!(e.metadata(), g.thread.to_string().as_bytes());
            }
        }
        // Every refusal names a version the stream really had, newer than the one expected.
        let versions: Vec<u64> = mine.iter().map(|g| g.last).collect();
        for r in refused.iter().filter(|r| r.stream == s) {
            let actual = r.actual.unwrap_or_else(|| {
                panic!(
                    "{name}: thread {} round {}: refused although it had no events",
                    r.thread, r.round
                )
            });
            assert!(
                r.read.is_none_or(|v| actual > v),
                "{name}: {r:?}: refused with an actual version not newer than the expected one"
            );
            assert!(
                versions.binary_search(&actual).is_ok(),
                "{name}: {r:?}: actual version {actual} is not one the stream ever had \
                 (versions: {versions:?})"
            );
        }
    }
    (granted.len(), refused.len())
}

#[test]
fn expected_versions_in_lockstep_rounds() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    // With `Sync`, the first appender's fsync keeps the others queued, so they are checked
    // against each other in one group.
    let store =
        Arc::new(Store::open(dir.path(), Options::default().durability(Durability::Sync)).unwrap());
    let logs = race(&store, THREADS, ROUNDS, true);
    let (granted, refused) = check_race(&store, &logs);
    assert_eq!(granted + refused, THREADS * ROUNDS);
    // In a round every thread read its stream before any appended, so for every stream that
    // some thread targeted, exactly one append won.
    let mut per_round: BTreeMap<(usize, usize), (usize, usize)> = BTreeMap::new();
    for l in &logs {
        for g in &l.granted {
            per_round.entry((g.round, g.stream)).or_default().0 += 1;
        }
        for r in &l.refused {
            per_round.entry((r.round, r.stream)).or_default().1 += 1;
        }
    }
    for ((round, s), (won, lost)) in &per_round {
        assert_eq!(
            *won,
            1,
            "round {round}, {}: {won} appends won and {lost} lost",
            race_stream(*s)
        );
    }
    assert_eq!(granted, per_round.len());
    assert!(refused > 0);
    eprintln!("expected_versions_in_lockstep_rounds: {granted} appends granted, {refused} refused");
    Arc::try_unwrap(store).ok().unwrap().close().unwrap();
}

#[test]
fn expected_versions_free_running() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 1500;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open(
            dir.path(),
            Options::default()
                .durability(Durability::None)
                .segment_size(16 * 1024),
        )
        .unwrap(),
    );
    let logs = race(&store, THREADS, ROUNDS, false);
    let (granted, refused) = check_race(&store, &logs);
    assert_eq!(granted + refused, THREADS * ROUNDS);
    assert!(granted > 0);
    eprintln!("expected_versions_free_running: {granted} appends granted, {refused} refused");
    Arc::try_unwrap(store).ok().unwrap().close().unwrap();
    // The same holds after a reopen.
    let store = Store::open(dir.path(), Options::default().segment_size(16 * 1024)).unwrap();
    check_race(&store, &logs);
    store.close().unwrap();
}

// ---- Group commit ----------------------------------------------------------------------------

#[test]
fn group_commit_sync_any_to_distinct_streams() {
    const THREADS: usize = 8;
    const BATCHES: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .durability(Durability::Sync)
        .segment_size(32 * 1024);
    let store = Arc::new(Store::open(dir.path(), opts.clone()).unwrap());
    let started = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || {
                let name = format!("group-{t}");
                let mut rng = Rng(0x6C0 + t as u64);
                let mut appended: Vec<EventData> = Vec::new();
                let mut last_position = None;
                for b in 0..BATCHES {
                    let n = 1 + rng.below(3) as usize;
                    let events: Vec<EventData> = (0..n)
                        .map(|i| {
                            EventData::new("Grouped", vec![t as u8; 1 + (b * 7 + i) % 200])
                                .with_metadata(format!("{t}/{b}/{i}"))
                        })
                        .collect();
                    let r = store
                        .append(&name, ExpectedVersion::Any, events.clone())
                        .unwrap_or_else(|e| panic!("{name} batch {b}: {e}"));
                    appended.extend(events);
                    assert_eq!(
                        r.version,
                        Some(appended.len() as u64 - 1),
                        "{name} batch {b}"
                    );
                    assert!(r.position > last_position, "{name} batch {b}: position");
                    last_position = r.position;
                }
                (name, appended)
            })
        })
        .collect();
    let written: Vec<(String, Vec<EventData>)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let elapsed = started.elapsed();
    Arc::try_unwrap(store).ok().unwrap().close().unwrap();

    let store = Store::open(dir.path(), opts).unwrap();
    let mut total = 0;
    for (name, appended) in &written {
        let events = read_stream(&store, name);
        assert_eq!(events.len(), appended.len(), "{name} after reopen");
        for (k, (e, a)) in events.iter().zip(appended).enumerate() {
            assert_eq!(e.event_number(), k as u64);
            assert_eq!(e.id(), a.id(), "{name} event {k}");
            assert_eq!(e.event_type(), a.event_type());
            assert_eq!(e.data(), a.data(), "{name} event {k}");
            assert_eq!(e.metadata(), a.metadata(), "{name} event {k}");
        }
        total += appended.len();
    }
    let all = read_all(&store);
    assert_eq!(all.len(), total, "$all after reopen");
    assert!(all.windows(2).all(|w| w[0].position() < w[1].position()));
    store.close().unwrap();
    eprintln!(
        "group_commit_sync_any_to_distinct_streams: {} batches, {total} events from {THREADS} \
         threads in {elapsed:.1?}",
        THREADS * BATCHES
    );
}

// ---- Readers during appends ------------------------------------------------------------------

const READ_STREAMS: usize = 3;

fn read_stream_name(s: usize) -> String {
    format!("read-{s}")
}

/// What a batch event's metadata says: `<batch id>:<i>/<events in the batch>:<events in this
/// stream's part>`.
struct BatchMeta {
    batch: String,
    i: usize,
    of: usize,
    part: usize,
}

fn batch_meta(e: &RecordedEvent) -> BatchMeta {
    let text = std::str::from_utf8(e.metadata()).unwrap();
    let parse = || {
        let mut f = text.split(':');
        let batch = f.next()?.to_string();
        let (i, of) = f.next()?.split_once('/')?;
        let part = f.next()?;
        Some(BatchMeta {
            batch,
            i: i.parse().ok()?,
            of: of.parse().ok()?,
            part: part.parse().ok()?,
        })
    };
    parse().unwrap_or_else(|| panic!("bad metadata {text:?} on {e:?}"))
}

/// Checks that `events` (of one stream, or of `$all`, in read order) hold only whole batches:
/// each batch's events are consecutive, numbered in order, and all there (in a stream: the
/// stream's part of it). Returns the number of batches.
fn check_whole_batches(events: &[RecordedEvent], in_all: bool, what: &str) -> usize {
    let mut batches = 0;
    let mut k = 0;
    while k < events.len() {
        let head = batch_meta(&events[k]);
        let want = if in_all { head.of } else { head.part };
        assert!(
            k + want <= events.len(),
            "{what}: torn batch {}: only {} of its {want} events at the end of the read",
            head.batch,
            events.len() - k
        );
        let first_i = head.i;
        for j in 0..want {
            let m = batch_meta(&events[k + j]);
            assert_eq!(
                (m.batch.as_str(), m.i),
                (head.batch.as_str(), first_i + j),
                "{what}: batch {} is torn or interleaved at read index {}",
                head.batch,
                k + j
            );
        }
        k += want;
        batches += 1;
    }
    batches
}

#[test]
fn readers_never_see_torn_batches() {
    const SINGLE_BATCHES: usize = 1500;
    const MULTI_BATCHES: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open(
            dir.path(),
            Options::default()
                .durability(Durability::None)
                .segment_size(16 * 1024),
        )
        .unwrap(),
    );
    let done = Arc::new(AtomicBool::new(false));
    let writers_left = Arc::new(AtomicUsize::new(2));

    // Writer A: batches of 3 events to one stream.
    let single = {
        let (store, left) = (store.clone(), writers_left.clone());
        thread::spawn(move || {
            let mut rng = Rng(0xA);
            for b in 0..SINGLE_BATCHES {
                let s = rng.below(READ_STREAMS as u64) as usize;
                let events = (0..3).map(|i| {
                    EventData::new("Single", vec![b as u8; 40 + 60 * i])
                        .with_metadata(format!("s{b}:{i}/3:3"))
                });
                store
                    .append(&read_stream_name(s), ExpectedVersion::Any, events)
                    .unwrap();
            }
            left.fetch_sub(1, Ordering::SeqCst);
        })
    };
    // Writer B: batches of 3 events over two streams (2 + 1), atomically.
    let multi = {
        let (store, left) = (store.clone(), writers_left.clone());
        thread::spawn(move || {
            let mut rng = Rng(0xB);
            for b in 0..MULTI_BATCHES {
                let s0 = rng.below(READ_STREAMS as u64) as usize;
                let s1 = (s0 + 1 + rng.below(READ_STREAMS as u64 - 1) as usize) % READ_STREAMS;
                let ev = |i: usize, part: usize| {
                    EventData::new("Multi", vec![b as u8; 100])
                        .with_metadata(format!("m{b}:{i}/3:{part}"))
                };
                store
                    .append_multi(vec![
                        StreamWrite::new(
                            read_stream_name(s0),
                            ExpectedVersion::Any,
                            vec![ev(0, 2), ev(1, 2)],
                        ),
                        StreamWrite::new(
                            read_stream_name(s1),
                            ExpectedVersion::Any,
                            vec![ev(2, 1)],
                        ),
                    ])
                    .unwrap();
            }
            left.fetch_sub(1, Ordering::SeqCst);
        })
    };

    // Stream readers: whole batches, contiguous event numbers, versions never going back.
    let stream_readers: Vec<_> = (0..2)
        .map(|r| {
            let (store, done) = (store.clone(), done.clone());
            thread::spawn(move || {
                let mut seen = [0usize; READ_STREAMS];
                let mut reads = 0;
                while !done.load(Ordering::SeqCst) {
                    for (s, seen) in seen.iter_mut().enumerate() {
                        let name = read_stream_name(s);
                        let before =
                            store.stream_version(&name).unwrap().map_or(0, |v| v + 1) as usize;
                        let events = read_stream(&store, &name);
                        let what = format!("stream reader {r}, {name}");
                        assert!(
                            events.len() >= before && events.len() >= *seen,
                            "{what}: read {} events after stream_version said {before} and an \
                             earlier read saw {seen}",
                            events.len()
                        );
                        for (k, e) in events.iter().enumerate() {
                            assert_eq!(e.event_number(), k as u64, "{what}");
                            assert_eq!(e.stream(), name, "{what}");
                        }
                        check_whole_batches(&events, false, &what);
                        // Backward from the end: whole batches too, once reversed.
                        let mut back: Vec<RecordedEvent> = store
                            .read_stream_backward(&name, u64::MAX, usize::MAX)
                            .unwrap()
                            .collect::<Result<_>>()
                            .unwrap();
                        back.reverse();
                        assert!(back.len() >= events.len(), "{what}: backward read shrank");
                        check_whole_batches(&back, false, &format!("{what} (backward)"));
                        *seen = back.len();
                        reads += 1;
                    }
                }
                reads
            })
        })
        .collect();

    // $all readers: whole batches, strictly increasing positions, never shrinking; one reads
    // everything each time, the other continues from where it stopped.
    let all_readers: Vec<_> = (0..2)
        .map(|r| {
            let (store, done) = (store.clone(), done.clone());
            thread::spawn(move || {
                let mut seen: Vec<RecordedEvent> = Vec::new();
                let mut reads = 0;
                while !done.load(Ordering::SeqCst) {
                    let what = format!("$all reader {r}");
                    let head = store.head();
                    let events = if r == 0 {
                        let events = read_all(&store);
                        assert!(
                            events.len() >= seen.len()
                                && events[..seen.len()]
                                    .iter()
                                    .zip(&seen)
                                    .all(|(a, b)| a.id() == b.id()),
                            "{what}: $all no longer starts with what an earlier read saw"
                        );
                        events
                    } else {
                        let from = seen.last().map_or(Position::START, |e| e.next_position());
                        let mut events = seen.clone();
                        events.extend(
                            store
                                .read_all_forward(from, usize::MAX)
                                .unwrap()
                                .collect::<Result<Vec<_>>>()
                                .unwrap(),
                        );
                        events
                    };
                    assert!(
                        events.last().map_or(Position::START, |e| e.next_position()) >= head
                            || events.is_empty(),
                        "{what}: read ends before the head {head} seen before reading"
                    );
                    assert!(
                        events.windows(2).all(|w| w[0].position() < w[1].position()),
                        "{what}: positions not strictly increasing"
                    );
                    let mut numbers: HashMap<String, u64> = HashMap::new();
                    for e in &events {
                        let n = numbers.entry(e.stream().to_string()).or_insert(0);
                        assert_eq!(e.event_number(), *n, "{what}: {e:?} out of stream order");
                        *n += 1;
                    }
                    check_whole_batches(&events, true, &what);
                    // Backward from the end: the same events, reversed, whole batches.
                    let mut back: Vec<RecordedEvent> = store
                        .read_all_backward(Position::END, usize::MAX)
                        .unwrap()
                        .collect::<Result<_>>()
                        .unwrap();
                    back.reverse();
                    assert!(back.len() >= events.len(), "{what}: backward read shrank");
                    assert!(
                        back.iter().zip(&events).all(|(a, b)| a.id() == b.id()),
                        "{what}: backward read disagrees with forward read"
                    );
                    check_whole_batches(&back, true, &format!("{what} (backward)"));
                    seen = events;
                    reads += 1;
                }
                reads
            })
        })
        .collect();

    single.join().unwrap();
    multi.join().unwrap();
    assert_eq!(writers_left.load(Ordering::SeqCst), 0);
    // Let the readers make one more pass over the final state.
    thread::sleep(Duration::from_millis(20));
    done.store(true, Ordering::SeqCst);
    let stream_reads: usize = stream_readers.into_iter().map(|h| h.join().unwrap()).sum();
    let all_reads: usize = all_readers.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(stream_reads > 0 && all_reads > 0);

    let all = read_all(&store);
    assert_eq!(all.len(), 3 * (SINGLE_BATCHES + MULTI_BATCHES));
    assert_eq!(
        check_whole_batches(&all, true, "final $all"),
        SINGLE_BATCHES + MULTI_BATCHES
    );
    eprintln!(
        "readers_never_see_torn_batches: {stream_reads} stream reads, {all_reads} $all reads"
    );
    Arc::try_unwrap(store).ok().unwrap().close().unwrap();
}

/// Regression: an event that a stream read returns is in `$all` too. The index used to be
/// updated (and its lock released) before the visible end of the log moved, so a reader in
/// between found an event through its stream whose position `$all` did not accept yet.
#[test]
fn an_event_read_from_its_stream_is_in_all() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(Store::open(dir.path(), Options::default().durability(Durability::None)).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, done) = (store.clone(), done.clone());
        thread::spawn(move || {
            let started = std::time::Instant::now();
            for b in 0.. {
                if done.load(Ordering::SeqCst) || started.elapsed().as_secs_f64() > 1.5 {
                    break;
                }
                let expected = match b {
                    0 => ExpectedVersion::NoStream,
                    _ => ExpectedVersion::Exact(b - 1),
                };
                store
                    .append(
                        "agree",
                        expected,
                        [EventData::new("Agreed", b.to_le_bytes().to_vec())],
                    )
                    .unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut anomaly = None;
    let mut checks = 0u64;
    while !done.load(Ordering::SeqCst) {
        let Some(v) = store.stream_version("agree").unwrap() else {
            continue;
        };
        let e = store.read_event("agree", v).unwrap();
        let head = store.head();
        let from_all = store
            .read_all_forward(e.position(), 1)
            .map(|mut it| it.next().map(|r| r.map(|x| x.id())));
        checks += 1;
        if e.next_position() > head || !matches!(from_all, Ok(Some(Ok(id))) if id == e.id()) {
            anomaly = Some(format!(
                "after {checks} checks: event {v} of `agree` (position {}, next {}) was read \
                 from its stream, but then head() = {head} and read_all_forward(its position) \
                 = {from_all:?}",
                e.position(),
                e.next_position()
            ));
            done.store(true, Ordering::SeqCst);
        }
    }
    writer.join().unwrap();
    assert!(anomaly.is_none(), "{}", anomaly.unwrap());
    Arc::try_unwrap(store).ok().unwrap().close().unwrap();
}

/// Concurrent multi-stream batches of more than eight streams each, over a shared pool: groups
/// then hold many requests on the same streams, and each stream's events must still be numbered
/// 0, 1, 2, … with every batch whole and contiguous in `$all`.
#[test]
fn wide_batches_from_many_threads_share_groups_correctly() {
    const THREADS: usize = 8;
    const BATCHES: usize = 40;
    const WIDTH: usize = 12;
    const POOL: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default().durability(Durability::Sync)).unwrap();
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let s = &s;
            scope.spawn(move || {
                for b in 0..BATCHES {
                    let writes = (0..WIDTH)
                        .map(|k| {
                            let stream = format!("pool-{}", (t + b + k) % POOL);
                            let tag = format!("{t}/{b}");
                            StreamWrite::new(
                                stream,
                                ExpectedVersion::Any,
                                vec![EventData::new("E", tag.into_bytes())],
                            )
                        })
                        .collect();
                    s.append_multi(writes).unwrap();
                }
            });
        }
    });
    let mut total = 0;
    for p in 0..POOL {
        let name = format!("pool-{p}");
        let numbers: Vec<u64> = s
            .read_stream_forward(&name, 0, usize::MAX)
            .unwrap()
            .map(|e| e.unwrap().event_number())
            .collect();
        assert_eq!(
            numbers,
            (0..numbers.len() as u64).collect::<Vec<_>>(),
            "{name}"
        );
        total += numbers.len();
    }
    assert_eq!(total, THREADS * BATCHES * WIDTH);
    // Each batch's events are adjacent in `$all`.
    let all: Vec<Vec<u8>> = s
        .read_all_forward(Position::START, usize::MAX)
        .unwrap()
        .map(|e| e.unwrap().data().to_vec())
        .collect();
    assert_eq!(all.len(), total);
    for chunk in all.chunks(WIDTH) {
        assert!(
            chunk.iter().all(|d| d == &chunk[0]),
            "a batch is split in $all"
        );
    }
}
