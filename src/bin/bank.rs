//! Bank accounts as journaled actors: each account is an actor whose state is the fold of its
//! own stream (`account-<n>`), hosted with one activation per account, persisted in an embedded
//! store with durable appends.
//!
//! `cargo run --release --features cli --bin bank` uses the store directory `bank-data` (created
//! if missing); `cargo run --release --features cli --bin bank -- DIR` uses `DIR`, and `-- --help`
//! lists the options (how many accounts, operations and threads). Each run opens the accounts
//! that do not exist yet, runs deposits and withdrawals from several threads (a withdrawal that
//! would overdraw is refused), deactivates every actor and reactivates it by replaying its
//! stream, then checks from a fresh process that every balance survived. A later run on the same
//! directory first checks what the earlier one left.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use eventjournal::journal::{Host, Journal, JournalEvent, JournalState, Rejected};
use eventjournal::{Error, EventData, ExpectedVersion, Options, Store};
use serde::{Deserialize, Serialize};

/// The stream where each run leaves its totals, for the next run to check.
const RUNS_STREAM: &str = "bank-runs";

/// Bank accounts as journaled actors in an eventjournal store.
///
/// Opens the accounts the store does not have yet, runs deposits and withdrawals
/// on them from several threads with durable appends, deactivates every account
/// and reactivates it from its snapshot and stream, then checks from a new
/// process that every balance survived. A later run on the same directory first
/// checks what the earlier one left.
#[derive(Debug, Parser)]
#[command(name = "bank", version, verbatim_doc_comment)]
struct Args {
    /// The store directory (created if missing)
    #[arg(value_name = "DIR", default_value = "bank-data")]
    dir: PathBuf,

    /// Accounts to open; a store that already has more keeps using them all
    #[arg(
        long,
        value_name = "N",
        default_value_t = 5_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    accounts: u64,

    /// Deposits and withdrawals to run
    #[arg(
        long,
        value_name = "N",
        default_value_t = 300_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    operations: u64,

    /// Threads running them
    #[arg(
        long,
        value_name = "N",
        default_value_t = 32,
        value_parser = clap::value_parser!(u64).range(1..=1024)
    )]
    threads: u64,

    /// Checks the store in DIR against the totals its last run recorded, and nothing else: how
    /// the program checks a run from a new process.
    #[arg(long, value_name = "DIR", hide = true, conflicts_with = "dir")]
    check: Option<PathBuf>,
}

/// An error of this program: boxed, as the store's, codecs' and its own errors all end here.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the program was doing when something failed, and the failure.
#[derive(Debug)]
struct Failed {
    doing: String,
    source: BoxError,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.doing)
    }
}

impl std::error::Error for Failed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Names what a fallible step was doing, for its error message.
trait Doing<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, Failed>;
}

impl<T, E: Into<BoxError>> Doing<T> for Result<T, E> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, Failed> {
        self.map_err(|e| Failed {
            doing: what(),
            source: e.into(),
        })
    }
}

/// `error` and its sources as one line, each source after a colon unless the message before it
/// already says it (the store's `I/O error: ...` carries its source's message).
fn sentence(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !line.contains(&part) {
            line.push_str(": ");
            line.push_str(&part);
        }
        source = e.source();
    }
    line
}

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
    /// Accounts open after the run: always the ids `0..accounts`, as each run opens every
    /// missing account of its range.
    accounts: u64,
    events: u64,
    total_cents: u64,
}

type Bank = Host<Account>;

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.check {
        Some(dir) => check_in_child(dir),
        None => run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bank: {}", sentence(&*e));
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), BoxError> {
    let dir = &args.dir;
    println!("eventjournal bank: store in {}", dir.display());

    let store = Arc::new(
        Store::open(dir, Options::default())
            .doing(|| format!("cannot open the store in {}", dir.display()))?,
    );
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
            let (accounts, total, took) = replay_all(&bank, p.accounts)?;
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

    // A store keeps the accounts it has: a run asked for fewer still works on all of them.
    let work = Work {
        accounts: previous
            .as_ref()
            .map_or(args.accounts, |p| p.accounts.max(args.accounts)),
        operations: args.operations,
        threads: args.threads,
    };
    step(&format!("opening {} accounts", group(work.accounts)));
    let started = Instant::now();
    let opened = open_accounts(&bank, &work)?;
    println!(
        "  {} opened, {} already open, in {}",
        group(opened),
        group(work.accounts - opened),
        secs(started.elapsed())
    );

    step(&format!(
        "{} deposits and withdrawals from {} threads (durable: each confirmed with fdatasync, shared by concurrent appends)",
        group(work.operations),
        work.threads
    ));
    let (written, refused, took) = run_operations(&bank, run, &work)?;
    println!(
        "  {} events written, {} withdrawals refused (would overdraw), in {}: {}/s",
        group(written),
        group(refused),
        secs(took),
        group((written as f64 / took.as_secs_f64()) as u64)
    );

    step("deactivating every account, then reactivating each from its snapshot and stream");
    let before = balances(&bank, work.accounts)?;
    let deactivated = bank.deactivate_all();
    let events = count_events(&store, work.accounts);
    let (accounts, total, took) = replay_all(&bank, work.accounts)?;
    println!(
        "  {} accounts deactivated; {} reactivated in {}: {} accounts/s, {} events in the store",
        group(deactivated as u64),
        group(accounts),
        secs(took),
        group((accounts as f64 / took.as_secs_f64()) as u64),
        group(events)
    );
    let after = balances(&bank, work.accounts)?;
    verdict(before == after, "every balance is what it was before")?;
    let full = replay_without_snapshots(&store, work.accounts)?;
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
    let child = std::env::current_exe()
        .and_then(|exe| {
            std::process::Command::new(exe)
                .arg("--check")
                .arg(dir)
                .output()
        })
        .doing(|| "cannot start the check in a new process".to_string())?;
    print!("{}", String::from_utf8_lossy(&child.stdout));
    if !child.status.success() {
        eprint!("{}", String::from_utf8_lossy(&child.stderr));
        return Err(format!("the check in a new process failed ({})", child.status).into());
    }
    println!(
        "done: {} accounts, {} in total. Run the same command again to continue this store.",
        group(accounts),
        dollars(total)
    );
    Ok(())
}

/// How much a run does.
struct Work {
    /// Accounts, with ids `0..accounts`.
    accounts: u64,
    /// Deposits and withdrawals, spread over the threads.
    operations: u64,
    threads: u64,
}

impl Work {
    /// The operations thread `t` runs: an equal share, the remainder going to the first threads.
    fn share(&self, t: u64) -> u64 {
        self.operations / self.threads + u64::from(t < self.operations % self.threads)
    }
}

/// Opens the accounts that are not open yet, from several threads; returns how many it opened.
fn open_accounts(bank: &Bank, work: &Work) -> Result<u64, Error> {
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..work.threads)
            .map(|t| {
                s.spawn(move || -> Result<u64, Error> {
                    let mut opened = 0;
                    for n in (t..work.accounts).step_by(work.threads as usize) {
                        opened += bank.call(&n.to_string(), |a| -> eventjournal::Result<_> {
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
    })
}

/// Deposits and withdrawals on random accounts from several threads, each confirmed on its own;
/// returns (events written, withdrawals refused, time).
fn run_operations(bank: &Bank, run: u64, work: &Work) -> Result<(u64, u64, Duration), Error> {
    let written = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let started = Instant::now();
    let result = std::thread::scope(|s| {
        let progress =
            s.spawn(|| show_progress(&written, &refused, &done, started, work.operations));
        let workers: Vec<_> = (0..work.threads)
            .map(|t| {
                let (written, refused) = (&written, &refused);
                s.spawn(move || -> Result<(), Error> {
                    let mut rng = Rng(run * 1_000 + t + 1);
                    for _ in 0..work.share(t) {
                        let id = rng.below(work.accounts).to_string();
                        let cents = 100 + rng.below(50_000);
                        let event = if rng.below(5) < 3 {
                            AccountEvent::Deposited { cents }
                        } else {
                            AccountEvent::Withdrawn { cents }
                        };
                        let wrote = bank.call(&id, |a| -> eventjournal::Result<_> {
                            match a.raise_event(event) {
                                Ok(()) => a.confirm_events().map(|()| true),
                                Err(Error::Apply { .. }) => Ok(false),
                                Err(e) => Err(e),
                            }
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
fn show_progress(
    written: &AtomicU64,
    refused: &AtomicU64,
    done: &AtomicBool,
    started: Instant,
    operations: u64,
) {
    let tty = std::io::stdout().is_terminal();
    let mut quarter = 0;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(if tty { 100 } else { 50 }));
        let n = written.load(Ordering::Relaxed) + refused.load(Ordering::Relaxed);
        let rate = n as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let filled = (n * 30 / operations) as usize;
        let line = format!(
            "  [{}{}] {:>3}%  {} operations, {}/s",
            "#".repeat(filled),
            ".".repeat(30 - filled.min(30)),
            n * 100 / operations,
            group(n),
            group(rate as u64)
        );
        if tty {
            print!("\r{line}");
            let _ = std::io::stdout().flush();
        } else if n * 4 / operations > quarter && n < operations {
            quarter = n * 4 / operations;
            println!("{line}");
        }
    }
    if tty {
        print!("\r{}\r", " ".repeat(80));
        let _ = std::io::stdout().flush();
    }
}

/// Activates accounts `0..ids` (each from its newest snapshot and the events after it); returns
/// (accounts, total balance, time).
fn replay_all(bank: &Bank, ids: u64) -> Result<(u64, u64, Duration), Error> {
    let started = Instant::now();
    let mut accounts = 0;
    let mut total = 0;
    for n in 0..ids {
        let (open, balance) = bank.call(&n.to_string(), |a| -> eventjournal::Result<_> {
            Ok((a.state().owner.is_some(), a.state().balance))
        })?;
        accounts += u64::from(open);
        total += balance;
    }
    Ok((accounts, total, started.elapsed()))
}

/// Every account's balance, in id order.
fn balances(bank: &Bank, ids: u64) -> Result<Vec<u64>, Error> {
    (0..ids)
        .map(|n| {
            bank.call(&n.to_string(), |a| -> eventjournal::Result<_> {
                Ok(a.state().balance)
            })
        })
        .collect()
}

/// Activates every account from its events alone (a host without snapshots); returns (events
/// replayed, time).
fn replay_without_snapshots(store: &Arc<Store>, ids: u64) -> Result<(u64, Duration), Error> {
    let bank: Bank = Host::new(store.clone(), Arc::new(Journal::new()), 10_000);
    let started = Instant::now();
    let mut events = 0;
    for n in 0..ids {
        events += bank.call(&n.to_string(), |a| -> eventjournal::Result<_> {
            Ok(a.version())
        })?;
    }
    Ok((events, started.elapsed()))
}

/// Events in the streams of accounts `0..ids`.
fn count_events(store: &Store, ids: u64) -> u64 {
    (0..ids)
        .filter_map(|n| store.stream_version(&format!("account-{n}")).ok().flatten())
        .map(|v| v + 1)
        .sum()
}

/// What the last run left, if any.
fn last_summary(store: &Store) -> Result<Option<RunSummary>, BoxError> {
    match store.read_stream_backward(RUNS_STREAM, u64::MAX, 1)?.next() {
        None => Ok(None),
        Some(e) => {
            let e = e?;
            let (s, _) =
                bincode::serde::decode_from_slice(e.data(), bincode::config::standard())
                    .doing(|| format!("cannot decode the last run's summary in `{RUNS_STREAM}`"))?;
            Ok(Some(s))
        }
    }
}

/// Run as `bank --check DIR` by the parent after it closed the store: reopens it, replays every
/// account and compares with the totals the parent recorded.
fn check_in_child(dir: &Path) -> Result<(), BoxError> {
    if !dir.is_dir() {
        return Err(format!("there is no store to check in {}", dir.display()).into());
    }
    let store = Arc::new(
        Store::open(dir, Options::default())
            .doing(|| format!("cannot open the store in {}", dir.display()))?,
    );
    let summary = last_summary(&store)?.ok_or("no run summary in the store")?;
    let bank: Bank = Host::new(store.clone(), Arc::new(Journal::new()), 10_000);
    let (accounts, total, took) = replay_all(&bank, summary.accounts)?;
    verdict(
        accounts == summary.accounts
            && total == summary.total_cents
            && count_events(&store, summary.accounts) == summary.events,
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

fn verdict(ok: bool, what: &str) -> Result<(), BoxError> {
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
