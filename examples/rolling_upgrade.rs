//! A rolling upgrade, shown: a bank of journaled accounts is served by one process after
//! another, each taking the store over from the one before while it is busy, with the write gap
//! of every handover measured and every acknowledged deposit checked at the end.
//!
//! ```sh
//! cargo run --release --example rolling_upgrade -- 100   # handovers (default 20)
//! ```
//!
//! This program is the orchestrator. It starts generation 0, which opens the store and serves
//! deposits from 4 threads (each a `Host::call` that raises an event and confirms it, with
//! `Durability::Sync`), printing one line per acknowledged deposit. Every 300 ms it starts the
//! next generation: that process opens the store read-only (a follower), takes it over
//! (`Store::take_over`), and serves deposits in turn. The old generation's deposits then fail
//! with `Error::HandedOver`; it drains its host (`Host::drain`) and exits. A handover's write
//! gap is the time from the old generation's last acknowledged deposit to the new one's first
//! (`CLOCK_MONOTONIC`, one clock for both processes), which covers everything in between: the
//! old writer finishing its groups in flight and syncing, the lock changing hands, the new
//! writer catching up and its first sync.
//!
//! At the end, a fresh process opens the store and checks that every acknowledged deposit is
//! in it exactly once, and that nothing else is.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventjournal::journal::{Bincode, Codec, Host, Journal, JournalEvent, JournalState, Rejected};
use eventjournal::{Error, Options, Position, Store};
use serde::{Deserialize, Serialize};

const WORKERS: usize = 4;
const ACCOUNTS: usize = 50;
const GENERATION_MS: u64 = 300;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Deposited {
    /// Which deposit: `<generation>-<worker>-<n>`, unique.
    op: String,
    amount: u64,
}

impl JournalEvent for Deposited {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Account {
    balance: u64,
}

impl JournalState for Account {
    type Event = Deposited;
    type Error = Rejected;
    const TYPE: &'static str = "account";

    fn apply(&mut self, e: &Deposited) -> Result<(), Rejected> {
        self.balance += e.amount;
        Ok(())
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A generation: serves deposits until it is taken over (or its stdin closes), then drains.
fn serve(dir: &Path, generation: u64) {
    let store = if generation == 0 {
        Store::open(dir, Options::default()).expect("open")
    } else {
        Store::open_read_only(dir, Options::default())
            .and_then(|f| f.take_over(Duration::from_secs(10)))
            .expect("take over")
    };
    let store = Arc::new(store);
    let out = Arc::new(Mutex::new(std::io::stdout()));
    writeln!(out.lock().unwrap(), "TOOK {}", now_ns()).expect("stdout");
    let host = Arc::new(Host::new(
        store.clone(),
        // A snapshot every 500 events: an account activated by the next generation replays at
        // most that many, however long its history.
        Arc::new(Journal::<Account>::new().snapshot_every(500)),
        ACCOUNTS,
    ));
    let stop = Arc::new(AtomicBool::new(false));
    {
        // The orchestrator ends the last generation by closing its stdin.
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_line(&mut String::new());
            stop.store(true, Ordering::SeqCst);
        });
    }
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (host, out, stop) = (host.clone(), out.clone(), stop.clone());
            std::thread::spawn(move || {
                for n in 0u64.. {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let op = format!("{generation}-{w}-{n}");
                    let account = format!("{}", (n as usize * WORKERS + w) % ACCOUNTS);
                    let deposit = Deposited {
                        op: op.clone(),
                        amount: 1,
                    };
                    let r = host.call(&account, |a| {
                        a.raise_event(deposit)?;
                        a.confirm_events()
                    });
                    match r {
                        Ok(()) => {
                            let line = format!("ACK {op} {}\n", now_ns());
                            out.lock()
                                .unwrap()
                                .write_all(line.as_bytes())
                                .expect("stdout");
                        }
                        Err(Error::HandedOver { .. } | Error::Draining) => return,
                        Err(e) => panic!("deposit {op}: {e}"),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let drained = host.drain();
    writeln!(
        out.lock().unwrap(),
        "DRAINED {} actors, {} unconfirmed events failed",
        drained.deactivated,
        drained.failed_events
    )
    .expect("stdout");
    store.close().expect("close");
}

/// The final check, in a fresh process: every acknowledged deposit (their ops on stdin) is in
/// the store once, and nothing else is.
fn check(dir: &Path) {
    let acked: HashSet<String> = std::io::stdin()
        .lock()
        .lines()
        .map(|l| l.expect("stdin"))
        .collect();
    let store = Store::open(dir, Options::default()).expect("open");
    let mut seen = HashSet::new();
    let mut from = Position::START;
    loop {
        let page = store.read_all_forward(from, 10_000).expect("read");
        let mut any = false;
        for e in page {
            let e = e.expect("event");
            from = e.next_position();
            any = true;
            if e.event_type() != "Deposited" {
                continue;
            }
            let d: Deposited = Bincode.decode(e.data()).expect("a deposit");
            assert!(
                seen.insert(d.op.clone()),
                "deposit {} is in the store twice",
                d.op
            );
        }
        if !any {
            break;
        }
    }
    let missing = acked.difference(&seen).count();
    let extra = seen.difference(&acked).count();
    println!(
        "final check (a fresh process): {} deposits in the store, {} acknowledged, {missing} \
         acknowledged missing, {extra} unacknowledged present",
        seen.len(),
        acked.len()
    );
    assert_eq!((missing, extra), (0, 0), "the check failed");
}

/// A running generation: its process, its lines as they come, and when it took the store.
struct Generation {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    took: u64,
}

fn start(dir: &Path, generation: u64) -> Generation {
    let mut child = Command::new(std::env::current_exe().expect("this program"))
        .args(["serve", &dir.display().to_string(), &generation.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start a generation");
    let out = child.stdout.take().expect("stdout");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    for line in lines.iter() {
        if let Some(t) = line.strip_prefix("TOOK ") {
            let took = t.parse().expect("time");
            return Generation { child, lines, took };
        }
    }
    let _ = child.wait();
    panic!("generation {generation} ended before it took the store");
}

/// Collects a generation's acknowledged deposits (op, time) until it exits; returns how it
/// drained.
fn finish(g: Generation, acked: &mut Vec<(String, u64)>) -> String {
    let mut drained = String::new();
    for line in g.lines.iter() {
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (op, t) = rest.split_once(' ').expect("ACK op time");
            acked.push((op.to_string(), t.parse().expect("time")));
        } else if line.starts_with("DRAINED") {
            drained = line;
        }
    }
    let mut child = g.child;
    assert!(child.wait().expect("wait").success(), "a generation failed");
    drained
}

/// What a generation did: its acknowledged deposits (op, time), how it drained, and when it
/// took the store.
struct Served {
    acked: Vec<(String, u64)>,
    drained: String,
    took: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => return serve(Path::new(&args[2]), args[3].parse().expect("generation")),
        Some("check") => return check(Path::new(&args[2])),
        _ => {}
    }
    let handovers: u64 = args.get(1).map_or(20, |n| n.parse().expect("handovers"));
    let tmp = tempfile::TempDir::new().expect("tempdir");
    let dir = tmp.path().join("bank");
    let mut generations: Vec<Served> = Vec::new();
    let mut current = start(&dir, 0);
    for generation in 1..=handovers + 1 {
        std::thread::sleep(Duration::from_millis(GENERATION_MS));
        // The next generation takes over; after the last handover, the last one is told to end.
        let next = if generation <= handovers {
            Some(start(&dir, generation))
        } else {
            drop(current.child.stdin.take());
            None
        };
        let mut acked = Vec::new();
        let took = current.took;
        let drained = finish(current, &mut acked);
        generations.push(Served {
            acked,
            drained,
            took,
        });
        match next {
            Some(next) => current = next,
            None => break,
        }
    }

    let mut gaps: Vec<f64> = Vec::new();
    for (g, pair) in generations.windows(2).enumerate() {
        let last_old = pair[0]
            .acked
            .iter()
            .map(|a| a.1)
            .max()
            .expect("deposits before");
        let first_new = pair[1]
            .acked
            .iter()
            .map(|a| a.1)
            .min()
            .expect("deposits after");
        let gap = first_new.saturating_sub(last_old) as f64 / 1e6;
        // Split at the moment `take_over` returned in the new generation.
        let to_took = pair[1].took.saturating_sub(last_old) as f64 / 1e6;
        gaps.push(gap);
        println!(
            "handover {:>3}: write gap {gap:>6.2} ms ({to_took:.2} to the end of take_over, \
             then the first deposit); generation {g} served {} deposits, {}",
            g + 1,
            pair[0].acked.len(),
            pair[0].drained
        );
    }
    let all_acked: Vec<(String, u64)> = generations.into_iter().flat_map(|g| g.acked).collect();
    gaps.sort_by(f64::total_cmp);
    // Nearest rank: the 99th of 100 for p99.
    let at = |q: f64| gaps[((gaps.len() as f64 * q).ceil() as usize).clamp(1, gaps.len()) - 1];
    println!(
        "{} handovers under {WORKERS} depositing threads: write gap p50 {:.2} ms, p99 {:.2} ms, \
         max {:.2} ms; {} deposits acknowledged",
        gaps.len(),
        at(0.5),
        at(0.99),
        gaps[gaps.len() - 1],
        all_acked.len()
    );
    let mut checker = Command::new(std::env::current_exe().expect("this program"))
        .args(["check", &dir.display().to_string()])
        .stdin(Stdio::piped())
        .spawn()
        .expect("start the check");
    {
        let mut input = std::io::BufWriter::new(checker.stdin.take().expect("stdin"));
        for (op, _) in &all_acked {
            writeln!(input, "{op}").expect("write ops");
        }
    }
    assert!(
        checker.wait().expect("wait").success(),
        "the final check failed"
    );
}
