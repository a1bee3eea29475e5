//! `eventjournal-pg`: moves a store between a directory (the embedded store) and PostgreSQL.
//!
//! ```text
//! eventjournal-pg copy-in  --dir ./store --url "host=/run/postgresql dbname=events"
//! eventjournal-pg copy-out --url "host=/run/postgresql dbname=events" --dir ./copy
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use eventjournal::{Options, Store};
use eventjournal_postgres::{copy_from_postgres, copy_to_postgres, PgOptions, PgStore};

#[derive(Parser)]
#[command(
    name = "eventjournal-pg",
    about = "Copy an eventjournal store into PostgreSQL and back"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Copies the embedded store in DIR into the (empty) PostgreSQL store.
    CopyIn {
        /// The embedded store's directory.
        #[arg(long)]
        dir: PathBuf,
        /// The database (a libpq connection string or URL).
        #[arg(long, env = "EVJ_PG_URL")]
        url: String,
        /// The schema of the PostgreSQL store.
        #[arg(long, default_value = "eventjournal")]
        schema: String,
    },
    /// Copies the PostgreSQL store into a new (or empty) embedded store in DIR.
    CopyOut {
        /// The database (a libpq connection string or URL).
        #[arg(long, env = "EVJ_PG_URL")]
        url: String,
        /// The schema of the PostgreSQL store.
        #[arg(long, default_value = "eventjournal")]
        schema: String,
        /// The embedded store's directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

fn run(cli: Cli) -> eventjournal::Result<String> {
    let started = Instant::now();
    let (report, what) = match cli.command {
        Command::CopyIn { dir, url, schema } => {
            let from = Store::open_read_only(&dir, Options::default())?;
            let to = PgStore::open(&url, PgOptions::default().schema(schema))?;
            (copy_to_postgres(&from, &to)?, "into PostgreSQL")
        }
        Command::CopyOut { url, schema, dir } => {
            let from = PgStore::open(&url, PgOptions::default().schema(schema))?;
            let to = Store::open(&dir, Options::default())?;
            let report = copy_from_postgres(&from, &to)?;
            to.close()?;
            (report, "out of PostgreSQL")
        }
    };
    Ok(format!(
        "copied {} events {what} in {:.2} s",
        report.events,
        started.elapsed().as_secs_f64()
    ))
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("eventjournal-pg: {e}");
            ExitCode::FAILURE
        }
    }
}
