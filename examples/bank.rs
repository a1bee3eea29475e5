//! Bank accounts on eventjournal: one stream per account, appended with expected versions and
//! rebuilt by replaying its events.
//!
//! `cargo run --release --example bank` uses a fresh temporary directory;
//! `cargo run --release --example bank -- DIR` uses (and on later runs, continues) `DIR`.

use std::time::Instant;

use eventjournal::{EventData, ExpectedVersion, Options, Store, StreamWrite};
use serde::{Deserialize, Serialize};

/// What can happen to an account. Encoded with bincode into each event's data.
#[derive(Debug, Serialize, Deserialize)]
enum AccountEvent {
    Opened { owner: String },
    Deposited { cents: u64 },
    Withdrawn { cents: u64 },
}

impl AccountEvent {
    fn type_name(&self) -> &'static str {
        match self {
            AccountEvent::Opened { .. } => "Opened",
            AccountEvent::Deposited { .. } => "Deposited",
            AccountEvent::Withdrawn { .. } => "Withdrawn",
        }
    }

    fn to_event(&self) -> EventData {
        let bytes = bincode::serde::encode_to_vec(self, bincode::config::standard())
            .expect("account events always encode");
        EventData::new(self.type_name(), bytes)
    }
}

/// An account's state: the fold of its events.
#[derive(Debug, Default)]
struct Account {
    owner: String,
    balance: i64,
    version: Option<u64>,
}

impl Account {
    fn apply(&mut self, e: &AccountEvent) {
        match e {
            AccountEvent::Opened { owner } => self.owner = owner.clone(),
            AccountEvent::Deposited { cents } => self.balance += *cents as i64,
            AccountEvent::Withdrawn { cents } => self.balance -= *cents as i64,
        }
    }

    /// Replays the account's stream.
    fn load(store: &Store, id: u32) -> Result<Account, Box<dyn std::error::Error>> {
        let mut acc = Account::default();
        for ev in store.read_stream_forward(&stream(id), 0, usize::MAX)? {
            let ev = ev?;
            let (e, _): (AccountEvent, usize) =
                bincode::serde::decode_from_slice(ev.data(), bincode::config::standard())?;
            acc.apply(&e);
            acc.version = Some(ev.event_number());
        }
        Ok(acc)
    }

    fn expected(&self) -> ExpectedVersion {
        self.version
            .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact)
    }
}

fn stream(id: u32) -> String {
    format!("account-{id}")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp;
    let dir = match std::env::args().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let store = Store::open(&dir, Options::default())?;
    println!("store: {}", dir.display());
    const ACCOUNTS: u32 = 5;

    // Open the accounts that do not exist yet (NoStream: a second opener would get a conflict).
    for id in 0..ACCOUNTS {
        if store.stream_version(&stream(id)).is_none() {
            let opened = AccountEvent::Opened {
                owner: format!("owner {id}"),
            };
            store.append(&stream(id), ExpectedVersion::NoStream, [opened.to_event()])?;
        }
    }

    // Deposits and withdrawals, each checked against the account's current version.
    let started = Instant::now();
    let mut appended = 0;
    for round in 0..200u64 {
        let id = (round % ACCOUNTS as u64) as u32;
        let acc = Account::load(&store, id)?;
        let e = if round % 3 == 2 && acc.balance >= 500 {
            AccountEvent::Withdrawn { cents: 500 }
        } else {
            AccountEvent::Deposited { cents: 100 + round }
        };
        store.append(&stream(id), acc.expected(), [e.to_event()])?;
        appended += 1;
    }
    println!(
        "appended {appended} events, each after replaying its account, in {:?} (durable: fdatasync per append)",
        started.elapsed()
    );

    // A stale writer loses: its expected version is behind.
    let stale = store.append(
        &stream(0),
        ExpectedVersion::Exact(0),
        [AccountEvent::Deposited { cents: 1 }.to_event()],
    );
    println!("stale append to {}: {}", stream(0), stale.unwrap_err());

    // A transfer touches two accounts atomically.
    let (a, b) = (Account::load(&store, 1)?, Account::load(&store, 2)?);
    store.append_multi(vec![
        StreamWrite::new(
            stream(1),
            a.expected(),
            vec![AccountEvent::Withdrawn { cents: 250 }.to_event()],
        ),
        StreamWrite::new(
            stream(2),
            b.expected(),
            vec![AccountEvent::Deposited { cents: 250 }.to_event()],
        ),
    ])?;
    println!("transferred 250 cents from {} to {}", stream(1), stream(2));
    store.close()?;

    // Reopen and replay every account.
    let store = Store::open(&dir, Options::default())?;
    for id in 0..ACCOUNTS {
        let acc = Account::load(&store, id)?;
        println!(
            "{}: owner {:?}, balance {} cents, version {}",
            stream(id),
            acc.owner,
            acc.balance,
            acc.version.unwrap_or_default()
        );
    }
    let total = store
        .read_all_forward(eventjournal::Position::START, usize::MAX)?
        .count();
    println!(
        "$all holds {total} events in {} streams",
        store.streams().len()
    );
    store.close()?;
    Ok(())
}
