//! Durable one-event appends from many writers, each to its own stream: 1,000 tasks on a
//! two-thread tokio runtime using `append_async`, against 64 OS threads using the blocking
//! `append`, in the same run, on the same disk (`Durability::Sync`: each append returns once its
//! group is `fdatasync`ed).
//!
//! ```sh
//! cargo bench --bench async_append            # 3 s per side; EVJ_BENCH_SECS=N for N seconds
//! ```
//!
//! Prints events per second for each side and the ratio async / blocking.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventjournal::{EventData, ExpectedVersion, Options, Store};

const TASKS: usize = 1_000;
const THREADS: usize = 64;
const PAYLOAD: &[u8] = &[b'x'; 100];

fn expected_after(acked: u64) -> ExpectedVersion {
    match acked {
        0 => ExpectedVersion::NoStream,
        n => ExpectedVersion::Exact(n - 1),
    }
}

fn open() -> (tempfile::TempDir, Arc<Store>) {
    // On the disk the project builds on (the system's temporary directory may be in memory,
    // where a sync costs nothing).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temporary directory");
    let store = Store::open(dir.path(), Options::default()).expect("open");
    (dir, Arc::new(store))
}

/// Appends (events) per second of `THREADS` threads appending for `run`.
fn blocking(run: Duration) -> f64 {
    let (_dir, store) = open();
    let start = Instant::now();
    let deadline = start + run;
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let name = format!("thread-{t}");
                let mut acked = 0u64;
                while Instant::now() < deadline {
                    store
                        .append(
                            &name,
                            expected_after(acked),
                            [EventData::new("Appended", PAYLOAD)],
                        )
                        .expect("append");
                    acked += 1;
                }
                acked
            })
        })
        .collect();
    let total: u64 = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    let rate = total as f64 / start.elapsed().as_secs_f64();
    store.close().expect("close");
    rate
}

/// Appends (events) per second of `TASKS` tasks on a two-thread runtime appending for `run`.
fn asynchronous(run: Duration) -> f64 {
    let (_dir, store) = open();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let start = Instant::now();
    let deadline = start + run;
    let total: u64 = runtime.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    let name = format!("task-{t}");
                    let mut acked = 0u64;
                    while Instant::now() < deadline {
                        store
                            .append_async(
                                &name,
                                expected_after(acked),
                                [EventData::new("Appended", PAYLOAD)],
                            )
                            .await
                            .expect("append");
                        acked += 1;
                    }
                    acked
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.expect("task");
        }
        total
    });
    let rate = total as f64 / start.elapsed().as_secs_f64();
    drop(runtime);
    store.close().expect("close");
    rate
}

fn main() {
    let secs: f64 = std::env::var("EVJ_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(3.0);
    let run = Duration::from_secs_f64(secs);
    // `cargo bench` passes `--bench`; a name filter other than this bench's skips it.
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    if !filter.is_empty() && !"async_append".contains(filter.as_str()) {
        return;
    }
    let blocking = blocking(run);
    let asynchronous = asynchronous(run);
    println!("durable one-event appends, each writer to its own stream, {secs} s per side");
    let sides = [
        (format!("blocking `append`, {THREADS} OS threads"), blocking),
        (
            format!("`append_async`, {TASKS} tasks on 2 tokio threads"),
            asynchronous,
        ),
    ];
    for (label, rate) in sides {
        println!("  {label:<48} {rate:>10.0} events/s");
    }
    println!("  async / blocking: {:.2}x", asynchronous / blocking);
}
