//! The kill -9 crash test of `tests/crash.rs` at scale: a child process appends, is killed with
//! SIGKILL at a random moment, and the store is reopened and checked, again and again.
//!
//! ```text
//! cargo run --release --example crashloop -- [KILLS] [--unsynced]
//! ```
//!
//! `KILLS` defaults to 1000; with `--unsynced` the child appends with `Durability::None`. It
//! prints a progress line every 50 kills and a summary line at the end, and exits with status 1
//! on the first violation (the panic message says what is wrong, and the store directory is kept
//! for inspection). The child is this program itself, started again with the environment that
//! the harness (`tests/crash_harness/mod.rs`) sets.

use std::process::ExitCode;

#[path = "../tests/crash_harness/mod.rs"]
mod crash_harness;

use crash_harness::{kill_loop, Config};

const DEFAULT_KILLS: u64 = 1000;
const PROGRESS_EVERY: u64 = 50;

fn main() -> ExitCode {
    crash_harness::run_child_if_asked();

    let mut kills = DEFAULT_KILLS;
    let mut unsynced = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--unsynced" => unsynced = true,
            n => match n.parse() {
                Ok(n) => kills = n,
                Err(_) => {
                    eprintln!("usage: crashloop [KILLS] [--unsynced]");
                    return ExitCode::from(2);
                }
            },
        }
    }
    let name = if unsynced {
        "crashloop --unsynced"
    } else {
        "crashloop"
    };
    let config = Config {
        kills,
        unsynced,
        child: (
            std::env::current_exe().expect("the path of this program"),
            Vec::new(),
        ),
        progress_every: Some(PROGRESS_EVERY),
        name: name.to_string(),
    };
    match std::panic::catch_unwind(|| kill_loop(&config)) {
        Ok(summary) => {
            println!("{name}: {summary}");
            ExitCode::SUCCESS
        }
        Err(_) => {
            eprintln!("{name}: FAILED: a violation (see the panic message above)");
            ExitCode::FAILURE
        }
    }
}
