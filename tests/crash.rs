//! A real crash test: a child process appends as fast as it can and is killed with SIGKILL at a
//! random moment; the parent then reopens the store and checks that every acknowledged event is
//! there with its exact bytes, that no batch is torn, and that `$all` agrees with the streams.
//! The harness (the child, the parent's kill loop and the checker) is `tests/crash_harness/`,
//! which `examples/crashloop.rs` shares.
//!
//! The test binary re-executes itself: `crash_child` does nothing unless the parent started it as
//! its child, and `crash_kill_loop` runs it with a filter that runs only that test. The default
//! run kills the child 50 times (about 10 s in the test profile; `EVJ_CRASH_ITERATIONS` sets the
//! number, and `crash_kill_loop_unsynced` does half as many). To run thousands of kills, with
//! progress lines and a summary:
//!
//! ```text
//! cargo run --release --example crashloop -- 5000             # or: -- 5000 --unsynced
//! ```

mod crash_harness;

use crash_harness::{kill_loop, options, Batch, Config, Model, ITERATIONS_ENV, STREAMS};
use eventjournal::*;

const DEFAULT_ITERATIONS: u64 = 50;

/// The child: appends batches forever, printing an `ACK` line for every acknowledged batch. Does
/// nothing unless the parent started this test binary as its child.
#[test]
fn crash_child() {
    crash_harness::run_child_if_asked();
}

/// The parent: kill the child again and again, checking the store after each kill.
#[test]
fn crash_kill_loop() {
    run_kill_loop("crash_kill_loop", false);
}

/// The same with a child that appends with `Durability::None` (half as many kills).
#[test]
fn crash_kill_loop_unsynced() {
    run_kill_loop("crash_kill_loop_unsynced", true);
}

fn run_kill_loop(name: &str, unsynced: bool) {
    let iterations: u64 = std::env::var(ITERATIONS_ENV)
        .ok()
        .map(|v| v.parse().expect("EVJ_CRASH_ITERATIONS is a number"))
        .unwrap_or(DEFAULT_ITERATIONS);
    let child_args = ["crash_child", "--exact", "--nocapture", "--test-threads=1"];
    let summary = kill_loop(&Config {
        kills: if unsynced {
            iterations.div_ceil(2)
        } else {
            iterations
        },
        unsynced,
        child: (
            std::env::current_exe().unwrap(),
            child_args.map(String::from).to_vec(),
        ),
        progress_every: None,
        name: name.to_string(),
    });
    println!("{name}: {summary}");
}

// ---- The checker can fail ----------------------------------------------------------------------

/// A multi-stream batch of which only one stream's part is in the store (written here as a batch
/// of its own, as a store that tore batches would leave it) is reported as torn.
#[test]
#[should_panic(expected = "torn batch 7")]
fn checker_reports_a_torn_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let batch = Batch {
        seed: 7,
        parts: vec![(1, 2), (4, 1)],
    };
    let mut writes = batch.writes(&[None; STREAMS]);
    writes.truncate(1);
    store.append_multi(writes).unwrap();
    Model::new().full_check(&store, "torn");
}

/// An acknowledged batch that is not in the store is reported as lost.
#[test]
#[should_panic(expected = "acknowledged batch 9 [(2, 0, 1)] is lost")]
fn checker_reports_a_lost_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let batch = Batch {
        seed: 8,
        parts: vec![(2, 1)],
    };
    store.append_multi(batch.writes(&[None; STREAMS])).unwrap();
    let mut model = Model::new();
    model.full_check(&store, "lost");
    model.check_acked(8, &[(2, 0, 1)], "lost");
    model.check_acked(9, &[(2, 0, 1)], "lost");
}
