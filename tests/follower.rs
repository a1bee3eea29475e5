//! Followers: a store opened with `Store::open_read_only` shows, whole and in order, what a
//! writer commits after it opened — a writer in this process or in another, through segment
//! changes, reopens, kills and the recovery that follows them.

mod common;
mod crash_harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use crash_harness::{acked_batches, run_and_kill, Kill, Model};
use eventjournal::*;
use proptest::prelude::*;

fn small() -> Options {
    Options::default().segment_size(4096)
}

/// Waits for the follower's own thread to show everything up to `head` (10 s at most).
fn wait_for(follower: &Store, head: Position) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while follower.head() < head {
        assert!(
            Instant::now() < deadline,
            "the follower is at {} after 10 s, the writer at {head}",
            follower.head()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Every stream of the store with its events' data.
fn streams(store: &Store) -> Vec<(String, Vec<Vec<u8>>)> {
    let mut names = store.streams().unwrap();
    names.sort();
    names
        .into_iter()
        .map(|s| {
            let data = stream(store, &s)
                .iter()
                .map(|e| e.data().to_vec())
                .collect();
            (s, data)
        })
        .collect()
}

#[test]
fn a_follower_shows_each_batch_the_writer_commits_through_every_read() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(dir.path(), small()).unwrap();
    writer
        .append(
            "order-1",
            ExpectedVersion::NoStream,
            events("order-1", 0, 1),
        )
        .unwrap();
    let follower = Store::open_read_only(dir.path(), small()).unwrap();
    let second = Store::open_read_only(dir.path(), small()).unwrap();
    let mut all = follower.subscribe_to_all(AllFrom::Start, None).unwrap();
    let mut orders = follower
        .subscribe_to_category("order", StreamFrom::Start)
        .unwrap();
    let segments = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count()
    };
    let before = segments(dir.path());

    // Batches of one and of several streams, over many segments.
    for i in 0..80 {
        writer
            .append_multi(vec![
                StreamWrite::new("order-1", ExpectedVersion::Any, events("order-1", i, 2)),
                StreamWrite::new(
                    "cart-9",
                    ExpectedVersion::Any,
                    vec![EventData::new("Added", format!("cart-9:{i}"))],
                ),
            ])
            .unwrap();
        writer
            .append(
                &format!("order-{}", 2 + i % 3),
                ExpectedVersion::Any,
                events("order", i, 1),
            )
            .unwrap();
    }
    writer.save_checkpoint("projector", writer.head()).unwrap();
    assert!(
        segments(dir.path()) >= before + 5,
        "the writer changed segments"
    );
    wait_for(&follower, writer.head());

    wait_for(&second, writer.head());
    let expected = listing(&writer);
    assert_eq!(listing(&follower), expected);
    assert_eq!(listing(&second), expected);
    second.close().unwrap();
    assert_eq!(streams(&follower), streams(&writer));
    for s in ["order-1", "order-2", "cart-9", "nobody-1"] {
        assert_eq!(
            follower.stream_version(s).unwrap(),
            writer.stream_version(s).unwrap()
        );
    }
    assert_eq!(follower.category_len("order").unwrap(), 1 + 160 + 80);
    assert_eq!(follower.event_type_len("Added").unwrap(), 80);
    assert_eq!(
        follower.load_checkpoint("projector").unwrap(),
        writer.load_checkpoint("projector").unwrap()
    );
    let read: Vec<String> = follower
        .read_event_type("Added", 0, usize::MAX)
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().data().to_vec()).unwrap())
        .collect();
    assert_eq!(
        read,
        (0..80).map(|i| format!("cart-9:{i}")).collect::<Vec<_>>()
    );

    // Subscriptions made before the writer went on got every event, in order.
    let mut got = Vec::new();
    while got.len() < expected.len() {
        match all.recv_timeout(Duration::from_secs(5)).unwrap() {
            Some(SubscriptionItem::Event(e)) => got.push((e.position().0, e.stream().to_string())),
            Some(SubscriptionItem::Checkpoint(_)) => {}
            None => panic!("the subscription to $all stopped at {} events", got.len()),
        }
    }
    let want: Vec<(u64, String)> = expected.iter().map(|e| (e.0, e.1.clone())).collect();
    assert_eq!(got, want);
    let mut order_events = 0;
    while let Some(SubscriptionItem::Event(e)) =
        orders.recv_timeout(Duration::from_millis(500)).unwrap()
    {
        assert!(e.stream().starts_with("order-"));
        order_events += 1;
    }
    assert_eq!(order_events, 1 + 160 + 80);

    let refused = follower.append("order-1", ExpectedVersion::Any, events("order-1", 0, 1));
    assert!(
        matches!(refused, Err(Error::ReadOnly { .. })),
        "{refused:?}"
    );

    // The writer closes and another opens: the follower goes on with it.
    writer.close().unwrap();
    let writer = Store::open(dir.path(), small()).unwrap();
    let r = writer
        .append("order-1", ExpectedVersion::Any, events("order-1", 999, 1))
        .unwrap();
    assert_eq!(follower.refresh().unwrap(), writer.head());
    assert_eq!(follower.stream_version("order-1").unwrap(), r.version);
    writer.close().unwrap();
    follower.close().unwrap();
    assert!(matches!(follower.refresh(), Err(Error::Closed)));
}

#[test]
fn a_follower_without_its_thread_shows_the_store_as_it_opened_until_refreshed() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(dir.path(), small()).unwrap();
    writer
        .append(
            "order-1",
            ExpectedVersion::NoStream,
            events("order-1", 0, 3),
        )
        .unwrap();
    let opened = writer.head();
    let follower = Store::open_read_only(dir.path(), small().follow(None)).unwrap();
    for i in 0..50 {
        writer
            .append("order-1", ExpectedVersion::Any, events("order-1", 3 + i, 1))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(follower.head(), opened);
    assert_eq!(follower.stream_version("order-1").unwrap(), Some(2));
    assert_eq!(follower.refresh().unwrap(), writer.head());
    assert_eq!(listing(&follower), listing(&writer));

    // A zero interval is refused: it would spin.
    let zero = Store::open_read_only(dir.path(), small().follow(Some(Duration::ZERO)));
    assert!(
        matches!(zero, Err(Error::InvalidInput(_))),
        "{:?}",
        zero.err()
    );
    // A writer ignores the setting, and refresh just tells its head.
    assert_eq!(writer.refresh().unwrap(), writer.head());
}

/// What the property test does next.
#[derive(Debug, Clone)]
enum Step {
    /// One append of these parts: (stream, events, bytes of data each).
    Append(Vec<(usize, usize, usize)>),
    /// The writer closes and a new one opens.
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => prop::collection::vec((0usize..5, 1usize..4, 0usize..700), 1..4).prop_map(Step::Append),
        1 => Just(Step::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// After every batch, a follower that catches up holds exactly what the writer holds: `$all`,
    /// every stream, every category and event type count.
    #[test]
    fn a_follower_equals_the_writer_after_every_batch(
        steps in prop::collection::vec(step(), 1..40),
        segment_size in 4096u64..12288,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let options = Options::default().segment_size(segment_size);
        let mut writer = Store::open(dir.path(), options.clone()).unwrap();
        writer.append("seed-0", ExpectedVersion::Any, events("seed-0", 0, 1)).unwrap();
        let follower = Store::open_read_only(dir.path(), options.clone().follow(None)).unwrap();
        for (i, step) in steps.iter().enumerate() {
            match step {
                Step::Append(parts) => {
                    let mut writes: Vec<StreamWrite> = Vec::new();
                    for &(s, n, len) in parts {
                        let name = format!("{}-{s}", ["acct", "cart"][s % 2]);
                        if writes.iter().any(|w| w.stream == name) {
                            continue;
                        }
                        let events = (0..n)
                            .map(|k| EventData::new(format!("T{}", k % 2), vec![i as u8; len]))
                            .collect();
                        writes.push(StreamWrite::new(name, ExpectedVersion::Any, events));
                    }
                    writer.append_multi(writes).unwrap();
                }
                Step::Reopen => {
                    writer.close().unwrap();
                    writer = open_after_close(dir.path(), options.clone()).unwrap();
                }
            }
            prop_assert_eq!(follower.refresh().unwrap(), writer.head(), "step {}", i);
            prop_assert_eq!(listing(&follower), listing(&writer), "step {}", i);
            prop_assert_eq!(streams(&follower), streams(&writer), "step {}", i);
            for key in ["acct", "cart"] {
                prop_assert_eq!(follower.category_len(key).unwrap(), writer.category_len(key).unwrap());
            }
            for t in ["T0", "T1"] {
                prop_assert_eq!(follower.event_type_len(t).unwrap(), writer.event_type_len(t).unwrap());
            }
        }
        writer.close().unwrap();
        follower.close().unwrap();
    }
}

/// The writer of the test below: the crash harness's child, which appends batches as fast as it
/// can and prints an `ACK` line for each acknowledged one. Does nothing unless started by it.
#[test]
fn follow_child() {
    crash_harness::run_child_if_asked();
}

/// A writer in another process, killed with SIGKILL at random moments and recovered by the
/// next one, while a follower in this process checks, again and again, that what it shows is
/// whole batches in order (never a batch in part, never one that goes away). After each kill the
/// follower holds every acknowledged batch and exactly what a fresh open holds.
#[test]
fn a_follower_follows_a_writer_in_another_process_through_kills() {
    let kills: u64 = std::env::var("EVJ_FOLLOW_KILLS")
        .ok()
        .map(|v| v.parse().expect("EVJ_FOLLOW_KILLS is a number"))
        .unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    let options = crash_harness::options();
    // The store exists before a follower opens (a read-only open never creates one).
    let child = crash_harness::child_of_this_test("follow_child", dir.path());
    let mut follower =
        Some(Store::open_read_only(dir.path(), options.clone().follow(None)).unwrap());
    // Another one on its own thread, as an application would have it.
    let threaded = Store::open_read_only(dir.path(), options.clone()).unwrap();
    let mut model = Some(Model::new());
    let mut looks = 0u64;
    for iter in 0..kills {
        let stop = Arc::new(AtomicBool::new(false));
        let checker = {
            let (stop, store, mut model) = (
                stop.clone(),
                follower.take().unwrap(),
                model.take().unwrap(),
            );
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    store.refresh().unwrap();
                    model.extend(&store, &format!("iteration {iter}, look {n}"));
                    n += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                (store, model, n)
            })
        };
        let delay = Duration::from_millis(40 + (iter * 37) % 120);
        let (acks, _) = run_and_kill(
            &child,
            dir.path(),
            (iter + 1) << 32,
            Kill::AfterReady(delay),
            iter,
            // Every other child writes without syncing: through the segment's map.
            iter % 2 == 1,
        );
        stop.store(true, Ordering::Relaxed);
        let (store, mut m, n) = checker.join().expect("the checker found a violation");
        looks += n;
        let ctx = format!("after kill {iter}");
        store.refresh().unwrap();
        m.extend(&store, &ctx);
        for (seed, parts) in acked_batches(&acks) {
            m.check_acked(seed, &parts, &ctx);
        }
        // What the next writer's recovery keeps (on a copy, as the kill left the files).
        let copy = tempfile::tempdir().unwrap();
        snapshot(dir.path(), copy.path());
        let recovered = open_after_close(copy.path(), options.clone()).unwrap();
        let shown = listing(&store);
        assert_eq!(
            shown,
            listing(&recovered),
            "{ctx}: the follower and recovery differ"
        );
        recovered.close().unwrap();
        wait_for(&threaded, store.head());
        assert_eq!(
            listing(&threaded),
            shown,
            "{ctx}: the threaded follower differs"
        );
        follower = Some(store);
        model = Some(m);
    }
    assert!(looks > kills * 5, "the follower looked only {looks} times");
    let (follower, mut model) = (follower.unwrap(), model.unwrap());
    assert!(
        model.events() > 100,
        "the children wrote only {} events",
        model.events()
    );

    // A writer's recovery keeps exactly what the follower shows, and the follower goes on.
    model.full_check(&follower, "at the end");
    let writer = open_after_close(dir.path(), options).unwrap();
    assert_eq!(listing(&writer), listing(&follower));
    writer
        .append("crash-0", ExpectedVersion::Any, events("crash-0", 0, 1))
        .unwrap();
    assert_eq!(follower.refresh().unwrap(), writer.head());
    assert_eq!(listing(&writer), listing(&follower));
}

/// A batch being written, byte by byte as another process's `pwrite` or copy into the map puts
/// it there, is shown only once it is whole; and a batch spliced from two writers' bytes (the
/// first records of one a killed writer left unfinished, the rest of the one its successor wrote
/// at the same place after recovery) is never shown.
#[test]
fn a_batch_is_shown_only_once_it_is_whole_and_never_spliced() {
    let options = || Options::default().segment_size(1 << 20);
    let live = tempfile::tempdir().unwrap();
    let writer = Store::open(live.path(), options()).unwrap();
    writer
        .append("a-1", ExpectedVersion::NoStream, events("a-1", 0, 1))
        .unwrap();
    let h0 = writer.head();
    let copy = tempfile::tempdir().unwrap();
    snapshot(live.path(), copy.path());
    let batch = |store: &Store, from: usize| {
        store
            .append_multi(vec![
                StreamWrite::new("a-1", ExpectedVersion::Any, events("a-1", from, 2)),
                StreamWrite::new("b-1", ExpectedVersion::Any, events("b-1", from, 1)),
            ])
            .unwrap();
    };
    batch(&writer, 1);
    let h1 = writer.head();
    let segment = first_segment(live.path());
    let x = peek(&segment, h0.0, (h1.0 - h0.0) as usize);
    // Where each record of the batch starts (its first four bytes are its length).
    let mut starts = vec![0usize];
    while *starts.last().unwrap() < x.len() {
        let at = *starts.last().unwrap();
        starts.push(at + u32::from_le_bytes(x[at..at + 4].try_into().unwrap()) as usize);
    }
    assert_eq!(starts.len(), 4, "three records: {starts:?}");

    let follower = Store::open_read_only(copy.path(), options().follow(None)).unwrap();
    assert_eq!(follower.head(), h0);
    let copied = first_segment(copy.path());
    // Whole records but not the batch's last, and records cut anywhere.
    let mut cuts: Vec<usize> = starts[1..3].to_vec();
    cuts.extend([
        4,
        40,
        starts[1] + 7,
        starts[2] + 33,
        (starts[2] + x.len()) / 2,
    ]);
    cuts.sort();
    for cut in cuts {
        patch(&copied, h0.0, &x[..cut]);
        assert_eq!(
            follower.refresh().unwrap(),
            h0,
            "{cut} of {} bytes",
            x.len()
        );
        assert_eq!(follower.stream_version("a-1").unwrap(), Some(0));
        assert_eq!(follower.stream_version("b-1").unwrap(), None);
    }
    patch(&copied, h0.0, &x);
    assert_eq!(follower.refresh().unwrap(), h1);
    assert_eq!(listing(&follower), listing(&writer));

    // The next batch at h1: one copy written by this writer, and one written later, at the same
    // place, by a writer of another copy (same shape, another group's timestamp).
    let other = tempfile::tempdir().unwrap();
    writer.flush().unwrap();
    snapshot(live.path(), other.path());
    batch(&writer, 3);
    let h2 = writer.head();
    let y = peek(&segment, h1.0, (h2.0 - h1.0) as usize);
    std::thread::sleep(Duration::from_millis(5));
    let second = Store::open(other.path(), options()).unwrap();
    batch(&second, 3);
    assert_eq!(second.head(), h2);
    let z = peek(&first_segment(other.path()), h1.0, y.len());
    second.close().unwrap();
    assert_ne!(
        y, z,
        "the two writers' batches differ (in their timestamps)"
    );
    let mut spliced = y[..starts[1]].to_vec();
    spliced.extend_from_slice(&z[starts[1]..]);
    patch(&copied, h1.0, &spliced);
    assert_eq!(follower.refresh().unwrap(), h1, "a spliced batch was shown");
    assert_eq!(follower.stream_version("a-1").unwrap(), Some(2));
    patch(&copied, h1.0, &y);
    assert_eq!(follower.refresh().unwrap(), h2);
    assert_eq!(listing(&follower), listing(&writer));
    writer.close().unwrap();
}

/// A follower of a store whose older streams are in index files (loaded when first used) adds
/// the writer's new events to them at the right event numbers; a subscriber waiting on the
/// follower is woken by each batch it shows.
#[test]
fn a_follower_continues_streams_left_in_index_files_and_wakes_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(dir.path(), small()).unwrap();
    for i in 0..40 {
        writer
            .append(
                &format!("acct-{}", i % 10),
                ExpectedVersion::Any,
                events("acct", i, 2),
            )
            .unwrap();
    }
    writer.close().unwrap();
    let writer = Store::open(dir.path(), small()).unwrap();
    let follower = Store::open_read_only(dir.path(), small()).unwrap();
    assert!(
        follower.index_info().index_files > 0,
        "{:?}",
        follower.index_info()
    );
    assert_eq!(follower.index_info().loaded_keys, 0);
    let mut sub = follower
        .subscribe_to_stream("acct-3", StreamFrom::After(7))
        .unwrap();
    // Woken, not found at the end of its wait: the wait is far longer than any wake-up.
    let wait = Duration::from_secs(20);
    let waiter = std::thread::spawn(move || match sub.recv_timeout(wait) {
        Ok(Some(SubscriptionItem::Event(e))) => {
            (e.event_number(), e.data().to_vec(), Instant::now())
        }
        other => panic!("{other:?}"),
    });
    std::thread::sleep(Duration::from_millis(20));
    for i in 0..10 {
        writer
            .append(
                &format!("acct-{i}"),
                ExpectedVersion::Any,
                events("late", i, 1),
            )
            .unwrap();
    }
    let appended = Instant::now();
    let (n, data, woken) = waiter.join().unwrap();
    assert_eq!((n, data), (8, b"late:3".to_vec()));
    assert!(
        woken < appended + wait / 2,
        "the subscriber was not woken: it found the event at the end of its wait"
    );
    wait_for(&follower, writer.head());
    assert_eq!(streams(&follower), streams(&writer));
    assert_eq!(follower.category_len("acct").unwrap(), 90);
    writer.close().unwrap();
}
