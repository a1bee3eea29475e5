//! Bank accounts as journaled actors: each account is an actor whose state is the fold of its
//! own stream (`account-<n>`), hosted with one activation per account, persisted in an embedded
//! store with durable appends.
//!
//! `cargo run --release --example bank` uses the store directory `bank-data` (created if
//! missing); `cargo run --release --example bank -- DIR` uses `DIR`. Each run opens the accounts
//! that do not exist yet, runs deposits and withdrawals from several threads (a withdrawal that
//! would overdraw is refused), deactivates every actor and reactivates it by replaying its
//! stream, then checks from a fresh process that every balance survived. A later run on the same
//! directory first checks what the earlier one left.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventjournal::journal::{Host, Journal, JournalEvent, JournalState, Rejected};
use eventjournal::{Error, EventData, ExpectedVersion, Options, Store};
use serde::{Deserialize, Serialize};

const ACCOUNTS: u64 = 5_000;
const OPERATIONS: u64 = 300_000;
const THREADS: u64 = 32;
/// The stream where each run leaves its totals, for the next run to check.
const RUNS_STREAM: &str = "bank-runs";

/// What can happen to an account.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum AccountEvent {
    Opened { owner: String },
    Deposited { cents: u64 },
    Withdrawn { cents: u64 },
}

impl JournalEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Opened { .. } => "Opened",
            AccountEvent::Deposited { .. } => "Deposited",
            AccountEvent::Withdrawn { .. } => "Withdrawn",
        }
    }
}

/// An account: the fold of its events.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Account {
    owner: Option<String>,
    balance: u64,
}

impl JournalState for Account {
    type Event = AccountEvent;
    type Error = Rejected;
    const TYPE: &'static str = "account";

    fn apply(&mut self, event: &AccountEvent) -> Result<(), Rejected> {
        match (event, &self.owner) {
            (AccountEvent::Opened { owner }, None) => self.owner = Some(owner.clone()),
            (AccountEvent::Opened { .. }, Some(_)) => return Err(Rejected::new("already open")),
            (_, None) => return Err(Rejected::new("account not open")),
            (AccountEvent::Deposited { cents }, _) => self.balance += cents,
            (AccountEvent::Withdrawn { cents }, _) if *cents <= self.balance => {
                self.balance -= cents
            }
            (AccountEvent::Withdrawn { .. }, _) => return Err(Rejected::new("would overdraw")),
        }
        Ok(())
    }
}

/// What a run leaves for the next one to check.
#[derive(Debug, Serialize, Deserialize)]
struct RunSummary {
    run: u64,
    accounts: u64,
    events: u64,
    total_cents: u64,
}

type Bank = Host<Account>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    if first.as_deref() == Some("--check") {
        let dir = PathBuf::from(args.next().ok_or("--check needs a directory")?);
        return check_in_child(&dir);
    }
    let dir = PathBuf::from(first.unwrap_or_else(|| "bank-data".into()));
    println!("eventjournal bank example: store in {}", dir.display());

    let store = Arc::new(Store::open(&dir, Options::default())?);
    let journal = Arc::new(Journal::<Account>::new().snapshot_every(25));
    let bank: Bank = Host::new(store.clone(), journal, 10_000);

    let previous = last_summary(&store)?;
    let run = previous.as_ref().map_or(1, |s| s.run + 1);
    match &previous {
        None => println!("run 1 on this store"),
        Some(p) => {
            println!(
                "run {run}: the last run left {} accounts, {} events, {} in total",
                group(p.accounts),
                group(p.events),
                dollars(p.total_cents)
            );
            step("checking what it left, by replaying every account");
            let (accounts, total, took) = replay_all(&bank)?;
            verdict(
                accounts == p.accounts && total == p.total_cents,
                &format!(
                    "{} accounts, {} in {}",
                    group(accounts),
                    dollars(total),
                    secs(took)
                ),
            )?;
        }
    }

    step(&format!("opening {} accounts", group(ACCOUNTS)));
    let started = Instant::now();
    let opened = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let bank = &bank;
                s.spawn(move || -> Result<u64, Error> {
                    let mut opened = 0;
                    for n in (t..ACCOUNTS).step_by(THREADS as usize) {
                        opened += bank.call(&n.to_string(), |a| {
                            if a.state().owner.is_some() {
                                return Ok(0);
                            }
                            a.raise_event(AccountEvent::Opened {
                                owner: format!("customer {n}"),
                            })?;
                            a.confirm_events()?;
                            Ok(1)
                        })?;
                    }
                    Ok(opened)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or(Ok(0)))
            .sum::<Result<u64, Error>>()
    })?;
    println!(
        "  {} opened, {} already open, in {}",
        group(opened),
        group(ACCOUNTS - opened),
        secs(started.elapsed())
    );

    step(&format!(
        "{} deposits and withdrawals from {THREADS} threads (durable: each confirmed with fdatasync, shared by concurrent appends)",
        group(OPERATIONS)
    ));
    let (written, refused, took) = run_operations(&bank, run)?;
    println!(
        "  {} events written, {} withdrawals refused (would overdraw), in {}: {}/s",
        group(written),
        group(refused),
        secs(took),
        group((written as f64 / took.as_secs_f64()) as u64)
    );

    step("deactivating every account, then reactivating each from its snapshot and stream");
    let before = balances(&bank)?;
    let deactivated = bank.deactivate_all();
    let events = count_events(&store)?;
    let (accounts, total, took) = replay_all(&bank)?;
    println!(
        "  {} accounts deactivated; {} reactivated in {}: {} accounts/s, {} events in the store",
        group(deactivated as u64),
        group(accounts),
        secs(took),
        group((accounts as f64 / took.as_secs_f64()) as u64),
        group(events)
    );
    let after = balances(&bank)?;
    verdict(before == after, "every balance is what it was before")?;
    let full = replay_without_snapshots(&store)?;
    println!(
        "  without snapshots: {} events replayed in {}: {} events/s",
        group(full.0),
        secs(full.1),
        group((full.0 as f64 / full.1.as_secs_f64()) as u64)
    );

    let summary = RunSummary {
        run,
        accounts,
        events,
        total_cents: total,
    };
    let data = bincode::serde::encode_to_vec(&summary, bincode::config::standard())?;
    store.append(
        RUNS_STREAM,
        ExpectedVersion::Any,
        [EventData::new("RunFinished", data)],
    )?;
    // Closed through the handle the bank's host shares: the lock is free when it returns.
    store.close()?;
    drop(bank);

    step("checking from a new process that the state survived this one");
    let child = std::process::Command::new(std::env::current_exe()?)
        .arg("--check")
        .arg(&dir)
        .output()?;
    print!("{}", String::from_utf8_lossy(&child.stdout));
    if !child.status.success() {
        eprint!("{}", String::from_utf8_lossy(&child.stderr));
        return Err("the check in a new process failed".into());
    }
    println!(
        "done: {} accounts, {} in total. Run the same command again to continue this store.",
        group(accounts),
        dollars(total)
    );
    Ok(())
}

/// Deposits and withdrawals on random accounts from several threads, each confirmed on its own;
/// returns (events written, withdrawals refused, time).
fn run_operations(bank: &Bank, run: u64) -> Result<(u64, u64, Duration), Error> {
    let written = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let started = Instant::now();
    let result = std::thread::scope(|s| {
        let progress = s.spawn(|| show_progress(&written, &refused, &done, started));
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (written, refused) = (&written, &refused);
                s.spawn(move || -> Result<(), Error> {
                    let mut rng = Rng(run * 1_000 + t + 1);
                    for _ in 0..OPERATIONS / THREADS {
                        let id = rng.below(ACCOUNTS).to_string();
                        let cents = 100 + rng.below(50_000);
                        let event = if rng.below(5) < 3 {
                            AccountEvent::Deposited { cents }
                        } else {
                            AccountEvent::Withdrawn { cents }
                        };
                        let wrote = bank.call(&id, |a| match a.raise_event(event) {
                            Ok(()) => a.confirm_events().map(|()| true),
                            Err(Error::Apply { .. }) => Ok(false),
                            Err(e) => Err(e),
                        })?;
                        if wrote {
                            written.fetch_add(1, Ordering::Relaxed);
                        } else {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        let mut result = Ok(());
        for w in workers {
            let r = w.join().unwrap_or(Ok(()));
            if result.is_ok() {
                result = r;
            }
        }
        done.store(true, Ordering::Relaxed);
        let _ = progress.join();
        result
    });
    result?;
    Ok((
        written.into_inner(),
        refused.into_inner(),
        started.elapsed(),
    ))
}

/// A progress line: redrawn in place on a terminal, a line per quarter otherwise.
fn show_progress(written: &AtomicU64, refused: &AtomicU64, done: &AtomicBool, started: Instant) {
    let tty = std::io::stdout().is_terminal();
    let mut quarter = 0;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(if tty { 100 } else { 50 }));
        let n = written.load(Ordering::Relaxed) + refused.load(Ordering::Relaxed);
        let rate = n as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let filled = (n * 30 / OPERATIONS) as usize;
        let line = format!(
            "  [{}{}] {:>3}%  {} operations, {}/s",
            "#".repeat(filled),
            ".".repeat(30 - filled.min(30)),
            n * 100 / OPERATIONS,
            group(n),
            group(rate as u64)
        );
        if tty {
            print!("\r{line}");
            let _ = std::io::stdout().flush();
        } else if n * 4 / OPERATIONS > quarter && n < OPERATIONS {
            quarter = n * 4 / OPERATIONS;
            println!("{line}");
        }
    }
    if tty {
        print!("\r{}\r", " ".repeat(80));
        let _ = std::io::stdout().flush();
    }
}

/// Activates every account (from its newest snapshot and the events after it); returns
/// (accounts, total balance, time).
fn replay_all(bank: &Bank) -> Result<(u64, u64, Duration), Error> {
    let started = Instant::now();
    let mut accounts = 0;
    let mut total = 0;
    for n in 0..ACCOUNTS {
        let (open, balance) = bank.call(&n.to_string(), |a| {
            Ok((a.state().owner.is_some(), a.state().balance))
        })?;
        accounts += u64::from(open);
        total += balance;
    }
    Ok((accounts, total, started.elapsed()))
}

/// Every account's balance, in id order.
fn balances(bank: &Bank) -> Result<Vec<u64>, Error> {
    (0..ACCOUNTS)
        .map(|n| bank.call(&n.to_string(), |a| Ok(a.state().balance)))
        .collect()
}

/// Activates every account from its events alone (a host without snapshots); returns (events
/// replayed, time).
fn replay_without_snapshots(store: &Arc<Store>) -> Result<(u64, Duration), Error> {
    let bank: Bank = Host::new(store.clone(), Arc::new(Journal::new()), 10_000);
    let started = Instant::now();
    let mut events = 0;
    for n in 0..ACCOUNTS {
        events += bank.call(&n.to_string(), |a| Ok(a.version()))?;
    }
    Ok((events, started.elapsed()))
}

/// Events in account streams.
fn count_events(store: &Store) -> Result<u64, Error> {
    Ok((0..ACCOUNTS)
        .filter_map(|n| store.stream_version(&format!("account-{n}")))
        .map(|v| v + 1)
        .sum())
}

/// What the last run left, if any.
fn last_summary(store: &Store) -> Result<Option<RunSummary>, Box<dyn std::error::Error>> {
    match store.read_stream_backward(RUNS_STREAM, u64::MAX, 1)?.next() {
        None => Ok(None),
        Some(e) => {
            let e = e?;
            let (s, _) = bincode::serde::decode_from_slice(e.data(), bincode::config::standard())?;
            Ok(Some(s))
        }
    }
}

/// Run as `bank --check DIR` by the parent after it closed the store: reopens it, replays every
/// account and compares with the totals the parent recorded.
fn check_in_child(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(Store::open(dir, Options::default())?);
    let summary = last_summary(&store)?.ok_or("no run summary in the store")?;
    let bank: Bank = Host::new(store.clone(), Arc::new(Journal::new()), 10_000);
    let (accounts, total, took) = replay_all(&bank)?;
    verdict(
        accounts == summary.accounts
            && total == summary.total_cents
            && count_events(&store)? == summary.events,
        &format!(
            "process {}: {} accounts, {} events replayed in {}, {} in total, as the run left them",
            std::process::id(),
            group(accounts),
            group(summary.events),
            secs(took),
            dollars(total)
        ),
    )
}

fn step(what: &str) {
    println!("- {what}");
}

fn verdict(ok: bool, what: &str) -> Result<(), Box<dyn std::error::Error>> {
    if ok {
        println!("  ok: {what}");
        Ok(())
    } else {
        println!("  MISMATCH: {what}");
        Err(format!("mismatch: {what}").into())
    }
}

/// 1234567 → "1,234,567".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn dollars(cents: u64) -> String {
    format!("${}.{:02}", group(cents / 100), cents % 100)
}

fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// A small deterministic generator, so a run's operations are repeatable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut z = self.0;
        z = (z ^ (z >> 31)).wrapping_mul(0xbf58476d1ce4e5b9);
        (z ^ (z >> 29)) % n
    }
}
