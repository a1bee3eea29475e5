//! Concurrency on PostgreSQL: `$all` without gaps or skips under concurrent writers, and
//! expected versions deciding races between 16 clients. Skipped without `EVJ_PG_URL` (a failure
//! under CI). Cost: about 2 s.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use eventjournal::{AllFrom, Error, EventData, ExpectedVersion, Position, SubscriptionItem};
use eventjournal_postgres::PgOptions;

const WRITERS: usize = 8;
const BATCHES: usize = 60;

/// Writers append batches of one to three events to their own streams and to one shared stream
/// while a subscriber follows `$all` from the start: it must see every event exactly once, in
/// position order, and the same sequence a read of `$all` gives afterwards. A position handed out
/// before its commit (a sequence, say) would let the subscriber pass an event still in flight
/// and never see it.
#[test]
fn a_subscriber_sees_every_event_once_in_order_under_concurrent_writers() {
    let Some(pg) = common::pg_store_with("gapless", PgOptions::default().pool_size(WRITERS)) else {
        return;
    };
    let store = pg.store.clone();
    let mut sub = store.subscribe_to_all(AllFrom::Start, None).unwrap();
    let total: usize = (0..WRITERS)
        .map(|_| (0..BATCHES).map(|b| 1 + b % 3).sum::<usize>())
        .sum();
    let start = Arc::new(Barrier::new(WRITERS));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                for b in 0..BATCHES {
                    let stream = if b % 2 == 0 {
                        format!("own-{w}")
                    } else {
                        "shared-1".to_string()
                    };
                    let events = (0..1 + b % 3)
                        .map(|k| EventData::new("E", format!("{w}/{b}/{k}")))
                        .collect::<Vec<_>>();
                    store.append(&stream, ExpectedVersion::Any, events).unwrap();
                }
            })
        })
        .collect();
    let mut seen = Vec::with_capacity(total);
    while seen.len() < total {
        match sub.recv_timeout(Duration::from_secs(20)).unwrap() {
            Some(SubscriptionItem::Event(e)) => seen.push(e),
            Some(_) => {}
            None => panic!("only {} of {total} events arrived", seen.len()),
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    assert!(sub
        .recv_timeout(Duration::from_millis(100))
        .unwrap()
        .is_none());
    assert!(seen
        .windows(2)
        .all(|w| w[0].next_position() == w[1].position()));
    let keys: HashSet<_> = seen
        .iter()
        .map(|e| (e.stream().to_string(), e.event_number()))
        .collect();
    assert_eq!(keys.len(), total, "an event delivered twice");
    let all = store.read_all_forward(Position::START, total + 10).unwrap();
    assert_eq!(all, seen);
    // Each writer's batches in the order it wrote them, each batch whole and contiguous.
    for w in 0..WRITERS {
        let mine: Vec<_> = seen
            .iter()
            .map(|e| String::from_utf8(e.data().to_vec()).unwrap())
            .filter(|d| d.starts_with(&format!("{w}/")))
            .collect();
        let want: Vec<_> = (0..BATCHES)
            .flat_map(|b| (0..1 + b % 3).map(move |k| format!("{w}/{b}/{k}")))
            .collect();
        assert_eq!(mine, want);
    }
}

const RACERS: usize = 16;
const ROUNDS: u64 = 20;

/// 16 clients, each on its own connection, append to one stream expecting the same version,
/// round after round: exactly one wins each round, and every loser is told the winner's version.
#[test]
fn sixteen_racers_on_one_expected_version_exactly_one_wins() {
    let Some(pg) = common::pg_store_with("racers", PgOptions::default().pool_size(RACERS)) else {
        return;
    };
    let store = pg.store.clone();
    store
        .append(
            "race-1",
            ExpectedVersion::NoStream,
            [EventData::new("Start", "")],
        )
        .unwrap();
    let barrier = Arc::new(Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|r| {
            let store = store.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                // Wrong answers are noted, not panicked on: a racer that left would leave the
                // others waiting at the barrier.
                let (mut wins, mut wrong) = (Vec::new(), Vec::new());
                for round in 0..ROUNDS {
                    barrier.wait();
                    let event = EventData::new("Won", format!("{r}"));
                    match store.append("race-1", ExpectedVersion::Exact(round), [event]) {
                        Ok(res) if res.version == Some(round + 1) => wins.push(round),
                        Err(Error::WrongExpectedVersion { actual, .. })
                            if actual == Some(round + 1) => {}
                        other => wrong.push(format!("racer {r}, round {round}: {other:?}")),
                    }
                    // Every racer has its answer before the next round starts.
                    barrier.wait();
                }
                (wins, wrong)
            })
        })
        .collect();
    let (mut wins, mut wrong) = (Vec::new(), Vec::new());
    for t in racers {
        let (w, e) = t.join().unwrap();
        wins.extend(w);
        wrong.extend(e);
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    wins.sort_unstable();
    assert_eq!(wins, (0..ROUNDS).collect::<Vec<_>>());
    assert_eq!(store.stream_version("race-1").unwrap(), Some(ROUNDS));
}
