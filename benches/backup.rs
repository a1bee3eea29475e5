//! Online backup: its throughput against `cp` of the same files, an incremental backup, and the
//! latency of appends while a backup runs.
//!
//! A store of `EVJ_BACKUP_MB` MB (default 256) of 100-byte events is built in a temporary
//! directory (`Durability::None`, batches of 1,000) and synced. Then, `EVJ_BACKUP_RUNS` times
//! (default 3), alternating:
//!
//! - `backup`: `Store::backup` into an empty directory (each file written, synced and renamed);
//! - `cp + sync`: `cp -r` of the store's directory then `sync -f` on the copy, so that both end
//!   with the copy on disk; the page cache holds the source for both.
//!
//! Then `incremental`: a backup into the last backup's directory after 1% more events (the newest
//! segment is copied again, with whatever segments were sealed since).
//!
//! Then appends of one 100-byte event with `Durability::Sync` (the default) and with
//! `Durability::None`, from one thread, for `EVJ_BACKUP_SECS` seconds (default 3) with no backup
//! running and as long again with backups running one after another in another thread (each
//! into a fresh directory): p50, p99 and max latency of each.
//!
//! ```sh
//! cargo bench --bench backup
//! ```

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventjournal::{Durability, EventData, ExpectedVersion, Options, Store, StreamWrite};
use tempfile::TempDir;

const PAYLOAD: [u8; 100] = [0x42; 100];

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fill(store: &Store, events: u64) {
    let mut done = 0;
    while done < events {
        let n = (events - done).min(1000);
        let writes = (0..n)
            .map(|i| {
                StreamWrite::new(
                    format!("s-{}", (done + i) % 10_000),
                    ExpectedVersion::Any,
                    vec![EventData::new("E", PAYLOAD)],
                )
            })
            .collect();
        store.append_multi(writes).expect("fill");
        done += n;
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").metadata().expect("stat").len())
        .sum()
}

fn cp_and_sync(from: &Path, to: &Path) -> Duration {
    let start = Instant::now();
    let ok = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp")
        .success();
    assert!(ok, "cp failed");
    let ok = Command::new("sync")
        .arg("-f")
        .arg(to)
        .status()
        .expect("sync")
        .success();
    assert!(ok, "sync failed");
    start.elapsed()
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration, Duration, usize) {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (at(0.5), at(0.99), v[v.len() - 1], v.len())
}

/// Appends one event at a time for `secs`, returning each append's latency.
fn appends(store: &Store, secs: u64) -> Vec<Duration> {
    let mut out = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        let t = Instant::now();
        store
            .append(
                "latency",
                ExpectedVersion::Any,
                [EventData::new("E", PAYLOAD)],
            )
            .expect("append");
        out.push(t.elapsed());
    }
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // No criterion groups to list.
    }
    let mb = env("EVJ_BACKUP_MB", 256);
    let runs = env("EVJ_BACKUP_RUNS", 3);
    let secs = env("EVJ_BACKUP_SECS", 3);
    let tmp = TempDir::new().expect("tempdir");
    let live = tmp.path().join("live");
    let events = mb * 1_000_000 / 150;
    let store = Store::open(&live, Options::default().durability(Durability::None)).expect("open");
    fill(&store, events);
    store.flush().expect("flush");
    let size = dir_bytes(&live);
    println!(
        "store: {events} events of 100 bytes, {:.0} MB on disk (segments preallocated), head at {:.0} MB",
        size as f64 / 1e6,
        store.head().0 as f64 / 1e6
    );
    let data_mb = store.head().0 as f64 / 1e6;

    println!("| run | backup | cp -r + sync -f |");
    println!("|---|---:|---:|");
    let mut last = None;
    for run in 0..runs {
        let dest = tmp.path().join(format!("backup-{run}"));
        let start = Instant::now();
        let report = store.backup(&dest).expect("backup");
        let took = start.elapsed();
        let copy = tmp.path().join(format!("cp-{run}"));
        let cp = cp_and_sync(&live, &copy);
        println!(
            "| {run} | {:.0} ms ({:.0} MB/s of data, {} segments) | {:.0} ms ({:.0} MB/s of data) |",
            took.as_secs_f64() * 1e3,
            data_mb / took.as_secs_f64(),
            report.segments_copied,
            cp.as_secs_f64() * 1e3,
            data_mb / cp.as_secs_f64(),
        );
        std::fs::remove_dir_all(&copy).expect("remove cp copy");
        if let Some(old) = last.replace(dest) {
            std::fs::remove_dir_all(old).expect("remove backup");
        }
    }
    let dest = last.expect("at least one run");
    fill(&store, events / 100);
    let start = Instant::now();
    let report = store.backup(&dest).expect("incremental backup");
    println!(
        "incremental, after 1% more events: {:.1} ms, {} segments copied, {} kept, {:.1} MB written",
        start.elapsed().as_secs_f64() * 1e3,
        report.segments_copied,
        report.segments_kept,
        report.bytes_copied as f64 / 1e6
    );
    std::fs::remove_dir_all(&dest).expect("remove backup");
    store.close().expect("close");

    println!("| appends, one thread | p50 | p99 | max | appends |");
    println!("|---|---:|---:|---:|---:|");
    for durability in [Durability::Sync, Durability::None] {
        let store = Arc::new(
            Store::open(&live, Options::default().durability(durability)).expect("reopen"),
        );
        for during in [false, true] {
            let stop = Arc::new(AtomicBool::new(false));
            let backups = during.then(|| {
                let (store, stop, root) = (store.clone(), stop.clone(), tmp.path().to_path_buf());
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let dest = root.join(format!("during-{n}"));
                        store.backup(&dest).expect("backup during appends");
                        std::fs::remove_dir_all(&dest).expect("remove");
                        n += 1;
                    }
                    n
                })
            });
            let lat = appends(&store, secs);
            stop.store(true, Ordering::Relaxed);
            let taken = backups.map(|b| b.join().expect("backup thread"));
            let (p50, p99, max, n) = percentiles(lat);
            println!(
                "| {durability:?}, {} | {:.1} µs | {:.1} µs | {:.1} ms | {n} |",
                match taken {
                    Some(k) => format!("{k} backups running"),
                    None => "no backup".to_string(),
                },
                p50.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6,
                max.as_secs_f64() * 1e3,
            );
        }
        Arc::try_unwrap(store)
            .ok()
            .expect("one handle")
            .close()
            .expect("close");
    }
}
