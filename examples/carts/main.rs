//! A shopping-cart web application on eventjournal: carts and stock as journaled actors, pages
//! whose actions come from the cart's state (HTML for browsers, JSON for programs), and rolling
//! upgrades that fail no request.
//!
//! ```sh
//! cargo run --release --example carts                  # http://127.0.0.1:8080, data in carts-data/
//! cargo run --release --example carts -- --upgrade     # in another terminal: replaces the running one
//! ```
//!
//! Options: `--listen ADDR` (default 127.0.0.1:8080), `--data DIR` (default `carts-data`),
//! `--upgrade` (take over the listening socket and the store from the process running on
//! `DIR`, instead of listening).

mod app;
mod domain;
mod http;
mod server;

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use eventjournal::{Options, Store};

struct Args {
    listen: String,
    data: PathBuf,
    upgrade: bool,
}

const USAGE: &str = "usage: carts [--listen ADDR] [--data DIR] [--upgrade]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:8080".into(),
        data: PathBuf::from("carts-data"),
        upgrade: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--listen" => args.listen = it.next().ok_or("--listen needs an address")?,
            "--data" => args.data = it.next().ok_or("--data needs a directory")?.into(),
            "--upgrade" => args.upgrade = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok(args)
}

fn run(args: Args) -> Result<(), String> {
    let store_dir = args.data.join("store");
    std::fs::create_dir_all(&args.data)
        .map_err(|e| format!("creating {}: {e}", args.data.display()))?;
    let server = if args.upgrade {
        // Following first, so that taking over later reads only what the old process wrote
        // in its last moments.
        let follower = Store::open_read_only(&store_dir, Options::default())
            .map_err(|e| format!("following the store in {}: {e}", store_dir.display()))?;
        let inherited = server::request_upgrade(&args.data).map_err(|e| e.to_string())?;
        let received = server::now_ns();
        if std::env::var_os("CARTS_FAIL_UPGRADE").is_some() {
            // For the test of an upgrade whose new process dies before taking the store over.
            return Err("failing the upgrade, as CARTS_FAIL_UPGRADE asks".into());
        }
        let store = follower
            .take_over(Duration::from_secs(10))
            .map_err(|e| format!("taking over the store: {e}"))?;
        let took = server::now_ns();
        let mut conn = inherited.conn;
        let s = server::Server::start(&args.data, inherited.listener, store, inherited.connections)
            .map_err(|e| format!("starting: {e}"))?;
        let accepting = server::now_ns();
        conn.write_all(b"OK\n")
            .map_err(|e| format!("telling the old process: {e}"))?;
        let ms = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e6;
        println!(
            "UPGRADED asked_ns={} accepting_ns={accepting} ({:.2} ms from asking to accepting: \
             {:.2} until the old process had drained, {:.2} taking the store over)",
            inherited.asked_ns,
            ms(inherited.asked_ns, accepting),
            ms(inherited.asked_ns, received),
            ms(received, took),
        );
        s
    } else {
        let store = Store::open(&store_dir, Options::default())
            .map_err(|e| format!("opening the store in {}: {e}", store_dir.display()))?;
        let listener = TcpListener::bind(&args.listen)
            .map_err(|e| format!("listening on {}: {e}", args.listen))?;
        server::Server::start(&args.data, listener, store, Vec::new())
            .map_err(|e| format!("starting: {e}"))?
    };
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    println!(
        "listening on http://{addr}/ (data in {})",
        args.data.display()
    );
    let _ = std::io::stdout().flush();
    server.run().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("carts: {message}");
            ExitCode::FAILURE
        }
    }
}
