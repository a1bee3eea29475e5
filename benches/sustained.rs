//! Sustained appends as the log grows past the page cache's dirty limit: events per second per
//! tenth of the run, and what the disk receives per byte of log.
//!
//! One store, `Durability::None`, `Exact` appends of batches of 100 events (100-byte payloads)
//! to a random stream among 1,000, `EVJ_SUSTAINED_EVENTS` events in all (default 10,000,000;
//! about 1.8 GB of log). For each tenth: events per second, the log's bytes per second
//! (`Stats::bytes_appended`), the bytes the store's disk wrote in that time (from
//! `/proc/diskstats`, Linux only: everything the disk wrote, the page cache's writeback of
//! earlier tenths included, and anything else writing to that disk) and their ratio. Closing
//! (which syncs what is left) is timed and counted on its own line, and the whole run's ratio
//! includes it.
//!
//! The peer, after the run: writing as many bytes as the log to a fresh file on the same file
//! system, in 1 MiB writes of random bytes, with one `fdatasync` at the end (the disk's
//! sequential write rate through the page cache, as the log is written).
//!
//! Then `$all` is read whole once, and again (events per second, the second pass from the page
//! cache as far as it holds the log), with the rate of reading the first tenth's events for
//! comparison.
//!
//! ```sh
//! cargo bench --bench sustained
//! EVJ_SUSTAINED_EVENTS=100000000 cargo bench --bench sustained   # about 18 GB of log
//! ```

#[path = "common/env.rs"]
mod env;
#[path = "common/peer.rs"]
mod peer;
#[path = "common/rng.rs"]
mod rng;

use env::env;
use rng::Rng;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use eventjournal::{Durability, EventData, ExpectedVersion, Options, Position, Store};

const PAYLOAD: &[u8] = &[b'x'; 100];
const STREAMS: u64 = 1000;
const BATCH: u64 = 100;

/// Bytes the disk holding `dir` has written since boot, if `/proc/diskstats` says.
fn disk_written(dir: &Path) -> Option<u64> {
    let dev = std::fs::metadata(dir).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let stats = std::fs::read_to_string("/proc/diskstats").ok()?;
    stats.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let same =
            f.first()?.parse::<u32>().ok()? == major && f.get(1)?.parse::<u32>().ok()? == minor;
        // Field 10: sectors written, of 512 bytes whatever the device's own size.
        same.then(|| f.get(9)?.parse::<u64>().ok().map(|s| s * 512))?
    })
}

/// Seconds to write `bytes` of random data to a fresh file in `dir` and sync it.
fn peer_write(dir: &Path, bytes: u64) -> f64 {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut block = vec![0u8; 1 << 20];
    for chunk in block.chunks_mut(8) {
        chunk.copy_from_slice(&rng.below(u64::MAX).to_le_bytes());
    }
    peer::sequential_write(&dir.join("peer.bin"), bytes, &mut block)
}

fn main() {
    // `cargo bench` passes `--bench`; this program takes no filter.
    let total = env("EVJ_SUSTAINED_EVENTS", 10_000_000);
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temporary directory");
    let dir = root.path().join("store");
    let store =
        Store::open(&dir, Options::default().durability(Durability::None)).expect("open store");
    let batches = total / BATCH;
    let tenth = (batches / 10).max(1);
    let mut versions = vec![ExpectedVersion::NoStream; STREAMS as usize];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    let mb = |b: f64| b / 1e6;
    println!(
        "sustained: {total} events, batches of {BATCH} to a random stream among {STREAMS}, \
         Durability::None"
    );
    println!();
    println!("| tenth | events/s | log MB/s | disk MB/s | disk bytes / log byte |");
    println!("| ---: | ---: | ---: | ---: | ---: |");

    let (disk_start, log_start) = (disk_written(&dir), store.stats().bytes_appended);
    let (mut t, mut disk, mut log) = (Instant::now(), disk_start, log_start);
    let mut first_tenth_end = Position::START;
    let run_start = Instant::now();
    for b in 0..batches {
        let s = rng.below(STREAMS) as usize;
        let events = (0..BATCH).map(|_| EventData::new("Appended", PAYLOAD));
        let r = store
            .append(&format!("stream-{s}"), versions[s], events)
            .expect("append");
        versions[s] = r.next_expected_version();
        if (b + 1) % tenth == 0 {
            let secs = t.elapsed().as_secs_f64();
            let now_disk = disk_written(&dir);
            let now_log = store.stats().bytes_appended;
            let log_bytes = (now_log - log) as f64;
            let disk_bytes = match (disk, now_disk) {
                (Some(a), Some(b)) => Some((b - a) as f64),
                _ => None,
            };
            println!(
                "| {} | {:.0} | {:.1} | {} | {} |",
                (b + 1) / tenth,
                (tenth * BATCH) as f64 / secs,
                mb(log_bytes) / secs,
                disk_bytes.map_or("-".into(), |d| format!("{:.1}", mb(d) / secs)),
                disk_bytes.map_or("-".into(), |d| format!("{:.2}", d / log_bytes)),
            );
            if (b + 1) / tenth == 1 {
                first_tenth_end = r.position.unwrap_or(first_tenth_end);
            }
            (t, disk, log) = (Instant::now(), now_disk, now_log);
        }
    }
    let appending = run_start.elapsed().as_secs_f64();
    let log_total = store.stats().bytes_appended - log_start;
    let closing = Instant::now();
    store.close().expect("close");
    let close_secs = closing.elapsed().as_secs_f64();
    let disk_total = match (disk_start, disk_written(&dir)) {
        (Some(a), Some(b)) => format!("{:.2}", (b - a) as f64 / log_total as f64),
        _ => "-".into(),
    };
    println!();
    println!(
        "whole run: {:.0} events/s, {:.1} MB/s of log over the appends ({:.1} s) and the close \
         ({:.2} s); disk bytes / log byte, the close included: {disk_total}",
        total as f64 / (appending + close_secs),
        mb(log_total as f64) / (appending + close_secs),
        appending,
        close_secs
    );
    let peer = peer_write(root.path(), log_total);
    println!(
        "peer: {:.0} MB/s writing as many bytes ({:.0} MB) in 1 MiB writes + fdatasync; the \
         log's rate over the peer's: {:.2}",
        mb(log_total as f64) / peer,
        mb(log_total as f64),
        peer / (appending + close_secs)
    );
    let store = Store::open(&dir, Options::default()).expect("reopen");
    let read = |to: Option<Position>| -> (u64, f64) {
        let start = Instant::now();
        let mut n = 0u64;
        for e in store
            .read_all_forward(Position::START, usize::MAX)
            .expect("read $all")
        {
            let e = e.expect("event");
            if to.is_some_and(|end| e.position() > end) {
                break;
            }
            std::hint::black_box(e.data().len());
            n += 1;
        }
        (n, start.elapsed().as_secs_f64())
    };
    let (n1, s1) = read(None);
    let (n2, s2) = read(None);
    let (nf, sf) = read(Some(first_tenth_end));
    println!(
        "$all: {:.0} events/s reading it first, {:.0} the second time; its first tenth alone: \
         {:.0} events/s ({n1}, {n2} and {nf} events)",
        n1 as f64 / s1,
        n2 as f64 / s2,
        nf as f64 / sf
    );
    store.close().expect("close");
}
