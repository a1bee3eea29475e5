//! Kill -9 during compaction: a child process appends, deletes and truncates streams, seals and
//! compacts in a loop, printing each operation before it starts and once it is acknowledged; the
//! parent kills it with SIGKILL (in one run in four the store also compacts in the background,
//! every 10 ms), half the time within moments of a compaction starting, then
//! opens the store with strict recovery and checks that every acknowledged live event reads at
//! its position with its bytes, that no event below a stream's acknowledged truncation shows in
//! any read (the stream, `$all`), and that `verify` passes.
//!
//! The test binary re-executes itself: `compaction_crash_child` does nothing unless the parent
//! set its environment. The default run kills the child 12 times (a few seconds);
//! `EVJ_CRASH_ITERATIONS` sets the number:
//!
//! ```text
//! EVJ_CRASH_ITERATIONS=500 cargo test --release --test compaction_crash -- --nocapture
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use eventjournal::*;

const DIR_ENV: &str = "EVJ_CCRASH_DIR";
const SEED_ENV: &str = "EVJ_CCRASH_SEED";
const UNSYNCED_ENV: &str = "EVJ_CCRASH_UNSYNCED";
/// Set in the child when the store also compacts in the background (`Options::compact_when`).
const AUTO_ENV: &str = "EVJ_CCRASH_AUTO";
const ITERATIONS_ENV: &str = "EVJ_CRASH_ITERATIONS";
const DEFAULT_ITERATIONS: u64 = 12;
const STREAMS: u64 = 6;
/// Once the store holds this many events, the next kill goes to a fresh store.
const STORE_MAX_EVENTS: usize = 4000;

fn options(unsynced: bool) -> Options {
    Options::default()
        .segment_size(16 * 1024)
        .durability(if unsynced {
            Durability::None
        } else {
            Durability::Sync
        })
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The data of event `n` of stream `s`, from a few bytes to 2 KiB, naming itself.
fn payload(s: &str, n: u64) -> Vec<u8> {
    let h = mix(n ^ mix(s.len() as u64 ^ s.as_bytes()[s.len() - 1] as u64));
    let len = (h % 2048) as usize;
    let mut d = format!("{s}#{n}#").into_bytes();
    d.extend((0..len).map(|i| (h >> (i % 8 * 8)) as u8 ^ (i / 8) as u8));
    d
}

fn stream(i: u64) -> String {
    format!("c-{i}")
}

/// The child: the operations, forever. Lines: `P A s n` / `A s n pos` (an append),
/// `P T s f` / `T s f` (truncation below `f`: a delete or a metadata change), `P S` / `S`
/// (a seal), `P C` / `C rewritten removed` (a compaction).
#[test]
fn compaction_crash_child() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let mut rng: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
    let mut below = |n: u64| {
        rng = mix(rng);
        rng % n
    };
    let unsynced = std::env::var_os(UNSYNCED_ENV).is_some();
    let mut opts = options(unsynced);
    if std::env::var_os(AUTO_ENV).is_some() {
        opts = opts.compact_when(1, Duration::from_millis(10));
    }
    let store = Store::open(&dir, opts).expect("child open");
    println!("READY");
    loop {
        let s = stream(below(STREAMS));
        let len = store.stream_version(&s).unwrap().map_or(0, |v| v + 1);
        let r = below(100);
        if r < 85 {
            println!("P A {s} {len}");
            let res = store
                .append(
                    &s,
                    ExpectedVersion::Any,
                    [EventData::new("Noted", payload(&s, len))],
                )
                .unwrap();
            assert_eq!(res.version, Some(len));
            println!("A {s} {len} {}", res.position.unwrap().0);
        } else if r < 95 {
            let current = store
                .stream_metadata(&s)
                .unwrap()
                .and_then(|(_, md)| md.truncate_before)
                .unwrap_or(0);
            if r < 90 {
                println!("P T {s} {}", len.max(current));
                store.delete_stream(&s, ExpectedVersion::Any).unwrap();
                println!("T {s} {}", len.max(current));
            } else {
                let floor = len.saturating_sub(below(6)).max(current);
                println!("P T {s} {floor}");
                let md = StreamMetadata {
                    truncate_before: Some(floor),
                    ..Default::default()
                };
                store
                    .set_stream_metadata(&s, ExpectedVersion::Any, md)
                    .unwrap();
                println!("T {s} {floor}");
            }
        } else if r < 97 {
            println!("P S");
            store.seal().unwrap();
            println!("S");
        } else {
            println!("P C");
            let report = store.compact().unwrap();
            println!("C {} {}", report.segments_rewritten, report.events_removed);
        }
    }
}

/// What the parent knows of a stream.
#[derive(Default, Debug)]
struct Known {
    /// Acknowledged events: number → position.
    events: BTreeMap<u64, u64>,
    /// Events below this are hidden (acknowledged).
    floor: u64,
}

#[derive(Debug)]
enum Pending {
    Append(String, u64),
    Truncate(String, u64),
    Seal,
    Compact,
}

#[derive(Default, Debug)]
struct Counts {
    kills: u64,
    kills_in_compact: u64,
    kills_in_append: u64,
    kills_in_truncate: u64,
    appends: u64,
    truncations: u64,
    seals: u64,
    compactions: u64,
    segments_rewritten: u64,
    events_removed: u64,
    stores: u64,
    with_background_compaction: u64,
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn compaction_crash_kill_loop() {
    let iterations: u64 = std::env::var(ITERATIONS_ENV)
        .ok()
        .map(|v| v.parse().expect("EVJ_CRASH_ITERATIONS is a number"))
        .unwrap_or(DEFAULT_ITERATIONS);
    // Kept on disk if a check fails; removed once checked.
    let fresh = || tempfile::tempdir().unwrap().keep();
    let mut dir = fresh();
    let mut model: BTreeMap<String, Known> = BTreeMap::new();
    let mut counts = Counts {
        stores: 1,
        ..Counts::default()
    };
    let mut rng = 0x5eed_u64;
    let mut below = |n: u64| {
        rng = mix(rng);
        rng % n
    };
    for iter in 0..iterations {
        let unsynced = iter % 3 == 2;
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "compaction_crash_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, &dir)
        .env(SEED_ENV, (iter * 7919 + 13).to_string())
        .env_remove(ITERATIONS_ENV)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if unsynced {
            cmd.env(UNSYNCED_ENV, "1");
        }
        if iter % 4 == 1 {
            cmd.env(AUTO_ENV, "1");
            counts.with_background_compaction += 1;
        }
        let mut child = KillOnDrop(cmd.spawn().unwrap());
        let out = child.0.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        // Wait for the child to open the store (its recovery of the last kill included).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("iteration {iter}: the child did not open the store"));
            let ready = line.ends_with("READY");
            lines.push(line);
            if ready {
                break;
            }
        }
        if below(2) == 0 {
            std::thread::sleep(Duration::from_millis(5 + below(150)));
        } else {
            // Within moments of a compaction starting, wherever it has got to.
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                let started = line == "P C";
                lines.push(line);
                if started {
                    break;
                }
            }
            let micros = below(if cfg!(debug_assertions) {
                30_000
            } else {
                8_000
            });
            std::thread::sleep(Duration::from_micros(micros));
        }
        let _ = child.0.kill();
        let _ = child.0.wait();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        counts.kills += 1;

        let mut pending = None;
        for line in &lines {
            let f: Vec<&str> = line.split(' ').collect();
            let num = |i: usize| -> u64 { f[i].parse().unwrap() };
            match f[0] {
                "P" => {
                    pending = Some(match f[1] {
                        "A" => Pending::Append(f[2].to_string(), num(3)),
                        "T" => Pending::Truncate(f[2].to_string(), num(3)),
                        "S" => Pending::Seal,
                        _ => Pending::Compact,
                    })
                }
                "A" => {
                    let k = model.entry(f[1].to_string()).or_default();
                    k.events.insert(num(2), num(3));
                    counts.appends += 1;
                    pending = None;
                }
                "T" => {
                    let k = model.entry(f[1].to_string()).or_default();
                    assert!(num(2) >= k.floor);
                    k.floor = num(2);
                    counts.truncations += 1;
                    pending = None;
                }
                "S" => {
                    counts.seals += 1;
                    pending = None;
                }
                "C" => {
                    counts.compactions += 1;
                    counts.segments_rewritten += num(1);
                    counts.events_removed += num(2);
                    pending = None;
                }
                "READY" => {}
                _ => {} // a line cut by the kill
            }
        }
        match &pending {
            Some(Pending::Compact) => counts.kills_in_compact += 1,
            Some(Pending::Append(..)) => counts.kills_in_append += 1,
            Some(Pending::Truncate(..)) => counts.kills_in_truncate += 1,
            _ => {}
        }
        let ctx = format!("iteration {iter} (killed during {pending:?})");
        let total = check(&dir, &mut model, pending, &ctx);
        if total > STORE_MAX_EVENTS {
            let _ = std::fs::remove_dir_all(&dir);
            dir = fresh();
            model.clear();
            counts.stores += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("compaction_crash_kill_loop: {counts:?}");
    assert!(counts.appends > 0);
}

/// Opens the store (strict recovery), settles the operation the kill interrupted, and checks
/// every read against the model; returns the events in the store.
fn check(
    dir: &Path,
    model: &mut BTreeMap<String, Known>,
    pending: Option<Pending>,
    ctx: &str,
) -> usize {
    let fail = |what: String| -> ! {
        panic!("{ctx}: {what} (the store is kept in {})", dir.display());
    };
    let store = Store::open(dir, options(false).recovery(Recovery::Strict))
        .unwrap_or_else(|e| fail(format!("strict open: {e}")));
    match pending {
        Some(Pending::Append(s, n)) => {
            // Written or not; if written, it is the event it claims to be.
            let v = store.stream_version(&s).unwrap();
            if v == Some(n) {
                if let Some(e) = store.read_stream_forward(&s, n, 1).unwrap().next() {
                    let e = e.unwrap();
                    model
                        .entry(s.clone())
                        .or_default()
                        .events
                        .insert(n, e.position().0);
                }
            } else if v.map_or(0, |v| v + 1) != n {
                fail(format!(
                    "{s}: version {v:?} after a kill while appending #{n}"
                ));
            }
        }
        Some(Pending::Truncate(s, f)) => {
            let tb = store
                .stream_metadata(&s)
                .unwrap()
                .and_then(|(_, md)| md.truncate_before)
                .unwrap_or(0);
            let k = model.entry(s.clone()).or_default();
            if tb == f {
                k.floor = f;
            } else if tb != k.floor {
                fail(format!(
                    "{s}: truncated below {tb}, neither {} nor {f}",
                    k.floor
                ));
            }
        }
        _ => {}
    }
    let mut total = 0;
    for i in 0..STREAMS {
        let s = stream(i);
        let k = model.entry(s.clone()).or_default();
        let read: Vec<(u64, u64)> = store
            .read_stream_forward(&s, 0, usize::MAX)
            .unwrap()
            .map(|e| {
                let e = e.unwrap_or_else(|e| fail(format!("{s}: read: {e}")));
                if e.data() != payload(&s, e.event_number()) {
                    fail(format!("{s}#{}: other bytes", e.event_number()));
                }
                (e.event_number(), e.position().0)
            })
            .collect();
        let expected: Vec<(u64, u64)> = k.events.range(k.floor..).map(|(&n, &p)| (n, p)).collect();
        if read != expected {
            fail(format!(
                "{s} (hidden below {}): reads {read:?}, acknowledged {expected:?}",
                k.floor
            ));
        }
        total += k.events.len();
    }
    let mut shown = 0;
    for e in store.read_all_forward(Position::START, usize::MAX).unwrap() {
        let e = e.unwrap_or_else(|e| fail(format!("$all: {e}")));
        let s = e.stream();
        if s.starts_with('$') {
            continue;
        }
        let n = e.event_number();
        let k = &model[s];
        if n < k.floor || k.events.get(&n) != Some(&e.position().0) {
            fail(format!("$all shows {s}#{n} at {}", e.position().0));
        }
        if e.data() != payload(s, n) {
            fail(format!("$all: {s}#{n}: other bytes"));
        }
        shown += 1;
    }
    let visible: usize = model
        .values()
        .map(|k| k.events.range(k.floor..).count())
        .sum();
    if shown != visible {
        fail(format!("$all shows {shown} events, {visible} visible"));
    }
    store.close().unwrap();
    if let Err(e) = eventjournal::verify::verify(dir, &mut |_, _| {}) {
        fail(format!("verify: {e}"));
    }
    total
}
