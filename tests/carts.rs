//! The shopping-cart example (`examples/carts`), run as real processes on real TCP: its JSON
//! API walked by following links, its answers to bad input, exact stock (also across a crash
//! in the middle of a checkout), ten upgrades under a load of clients without a failed request,
//! and a real browser filling a cart across an upgrade.

mod browser_harness;

#[path = "../examples/carts/domain.rs"]
mod domain;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use eventjournal::journal::{Bincode, Codec, JournalState};
use eventjournal::{Options, Store};
use serde_json::Value;

use browser_harness::{screenshot_dir, Browser};
use domain::{Cart, CartEvent, Stock, StockEvent, PRINT_EDITION};

const DEADLINE: Duration = Duration::from_secs(20);

/// The example's binary, built once per test process with the cargo running the tests (and
/// its target directory): `CARGO_BIN_EXE_` names binaries only.
fn example() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "--example",
            "carts",
            "--message-format=json-render-diagnostics",
        ]);
        // For figures from an optimised server: CARTS_RELEASE=1.
        if std::env::var_os("CARTS_RELEASE").is_some() {
            build.arg("--release");
        }
        let out = build
            .arg("--manifest-path")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running cargo build --example carts");
        assert!(out.status.success(), "cargo build --example carts failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "carts")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo named no executable for the carts example")
    })
}

/// One server process and the lines it prints.
struct Process {
    child: Child,
    lines: Receiver<String>,
}

impl Process {
    fn start(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Process {
        let mut child = Command::new(example())
            .arg("--data")
            .arg(data)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the carts example");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Process { child, lines }
    }

    /// Waits for a line starting with `prefix`; returns the rest of it.
    fn line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return rest.to_string();
                    }
                }
                Err(_) => panic!(
                    "no `{prefix}` line from the server (exit status {:?})",
                    self.child.try_wait()
                ),
            }
        }
    }

    /// Waits for the process to exit; its status.
    fn exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running shop: the current process, upgraded in place.
struct Shop {
    data: PathBuf,
    process: Process,
    addr: String,
}

/// An upgrade's window, in `CLOCK_MONOTONIC` nanoseconds: from the new process asking to its
/// accepting connections.
struct Window {
    asked: u64,
    accepting: u64,
}

impl Shop {
    fn start(data: &Path) -> Shop {
        Shop::start_with(data, &[])
    }

    fn start_with(data: &Path, env: &[(&str, &str)]) -> Shop {
        let mut process = Process::start(data, &["--listen", "127.0.0.1:0"], env);
        let rest = process.line("listening on http://");
        let addr = rest.split('/').next().unwrap().to_string();
        Shop {
            data: data.to_path_buf(),
            process,
            addr,
        }
    }

    /// Replaces the running process with a new one; the old one must exit cleanly.
    fn upgrade(&mut self) -> Window {
        let new = self.begin_upgrade(&[]);
        self.finish_upgrade(new)
    }

    /// Starts the process that upgrades this one.
    fn begin_upgrade(&self, env: &[(&str, &str)]) -> Process {
        Process::start(&self.data, &["--upgrade"], env)
    }

    fn finish_upgrade(&mut self, mut new: Process) -> Window {
        let upgraded = new.line("UPGRADED ");
        let rest = new.line("listening on http://");
        assert_eq!(
            rest.split('/').next().unwrap(),
            self.addr,
            "another address"
        );
        let mut old = std::mem::replace(&mut self.process, new);
        let status = old.exit();
        assert!(status.success(), "the old process exited with {status}");
        let num = |key: &str| -> u64 {
            upgraded
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in `{upgraded}`"))
        };
        Window {
            asked: num("asked_ns="),
            accepting: num("accepting_ns="),
        }
    }

    fn pid(&self) -> String {
        self.process.child.id().to_string()
    }

    /// Stops the server gracefully (SIGTERM).
    fn stop(mut self) {
        // SAFETY: signalling a child of this process by its id.
        unsafe { libc::kill(self.process.child.id() as i32, libc::SIGTERM) };
        let status = self.process.exit();
        assert!(status.success(), "the server stopped with {status}");
    }
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends raw bytes as one request and reads the response to the end (the server closes).
fn raw(addr: &str, request: &[u8]) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(DEADLINE))?;
    s.write_all(request)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(&buf) {
        Ok(httparse::Status::Complete(n)) => n,
        other => {
            return Err(std::io::Error::other(format!(
                "no whole response ({other:?}, {} bytes)",
                buf.len()
            )))
        }
    };
    let reply = Reply {
        status: resp.code.unwrap_or_default(),
        headers: resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: buf[head..].to_vec(),
    };
    let length: usize = reply
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    if length != reply.body.len() {
        return Err(std::io::Error::other("a truncated body"));
    }
    Ok(reply)
}

fn request(
    addr: &str,
    method: &str,
    path: &str,
    accept: &str,
    form: Option<&str>,
) -> std::io::Result<Reply> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\n");
    if let Some(body) = form {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    raw(addr, req.as_bytes())
}

fn get_json(addr: &str, path: &str) -> Reply {
    request(addr, "GET", path, "application/json", None).unwrap()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The action of a representation with this rel (and item), if the state offers it.
fn action<'a>(doc: &'a Value, rel: &str, item: Option<&str>) -> Option<&'a Value> {
    doc["actions"]
        .as_array()?
        .iter()
        .find(|a| a["rel"] == rel && a["item"].as_str() == item)
}

/// Follows an action as its description says: its method, its href, its fields with their
/// values (some replaced by `fill`).
fn follow(addr: &str, action: &Value, fill: &[(&str, &str)]) -> std::io::Result<Reply> {
    let method = action["method"].as_str().unwrap();
    let href = action["href"].as_str().unwrap();
    if method == "GET" {
        return request(addr, method, href, "application/json", None);
    }
    assert_eq!(action["encoding"], "application/x-www-form-urlencoded");
    let body: Vec<String> = action["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = f["name"].as_str().unwrap();
            let value = fill
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
                .unwrap_or_else(|| f["value"].as_str().unwrap().to_string());
            format!("{}={}", encode(name), encode(&value))
        })
        .collect();
    request(
        addr,
        method,
        href,
        "application/json",
        Some(&body.join("&")),
    )
}

fn rels(doc: &Value) -> Vec<String> {
    doc["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| match a["item"].as_str() {
            Some(item) => format!("{}:{item}", a["rel"].as_str().unwrap()),
            None => a["rel"].as_str().unwrap().to_string(),
        })
        .collect()
}

#[test]
fn the_json_api_is_walked_from_home_to_a_receipt_by_following_links() {
    let data = tempfile::tempdir().unwrap();
    let shop = Shop::start(data.path());
    let addr = &shop.addr;
    let home = get_json(addr, "/");
    assert_eq!(home.status, 200);
    let created = follow(
        addr,
        action(&home.json(), "create-cart", None).unwrap(),
        &[],
    )
    .unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    let cart = created.json();
    assert_eq!(
        created.header("location").unwrap(),
        format!("/carts/{}", cart["cart"]["id"].as_str().unwrap())
    );
    // An empty cart offers no checkout, no quantity change, no removal.
    assert_eq!(
        rels(&cart),
        ["home", "add:tea", "add:mug", "add:sample", "add:print"]
    );

    let r = follow(addr, action(&cart, "add", Some("tea")).unwrap(), &[]).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = follow(addr, action(&r.json(), "add", Some("sample")).unwrap(), &[]).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let cart = r.json();
    // The sample is once per cart: neither added again nor given a quantity.
    assert_eq!(
        rels(&cart),
        [
            "home",
            "add:tea",
            "change-quantity:tea",
            "remove:tea",
            "add:mug",
            "remove:sample",
            "add:print",
            "checkout"
        ]
    );
    let change = action(&cart, "change-quantity", Some("tea")).unwrap();
    let r = follow(addr, change, &[("quantity", "3")]).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = follow(
        addr,
        action(&r.json(), "remove", Some("sample")).unwrap(),
        &[],
    )
    .unwrap();
    let cart = r.json();
    assert_eq!(cart["cart"]["version"], 5);
    assert_eq!(cart["cart"]["total_cents"], 3 * 450);

    let r = follow(addr, action(&cart, "checkout", None).unwrap(), &[]).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let receipt = r.json();
    assert_eq!(receipt["receipt"]["total_cents"], 1350);
    // After checkout, nothing but the receipt (and the way home).
    assert_eq!(rels(&receipt), ["home"]);
    let again = follow(addr, action(&receipt, "home", None).unwrap(), &[]).unwrap();
    assert_eq!(again.status, 200);
    shop.stop();
}

#[test]
fn representations_are_negotiated_and_bad_input_is_answered_not_panicked_on() {
    let data = tempfile::tempdir().unwrap();
    let shop = Shop::start(data.path());
    let addr = shop.addr.as_str();
    let get = |accept: &str| request(addr, "GET", "/", accept, None).unwrap();
    let kind = |r: &Reply| r.header("content-type").unwrap().to_string();
    assert!(kind(&get("text/html")).starts_with("text/html"));
    assert!(kind(&get("*/*")).starts_with("text/html"));
    assert!(kind(&get("application/json")).starts_with("application/json"));
    assert!(kind(&get("text/html;q=0.5, application/json")).starts_with("application/json"));
    assert!(kind(&get("application/json;q=0, */*;q=0.1")).starts_with("text/html"));
    assert!(kind(&get("application/*;q=0.9, text/html;q=0.8")).starts_with("application/json"));
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    assert!(kind(&get(browser)).starts_with("text/html"));
    assert_eq!(get("image/png").status, 406);
    assert_eq!(get("text/html;q=0, application/json;q=0").status, 406);
    let bad_q = get("text/html;q=lots");
    assert_eq!(bad_q.status, 400);
    assert!(bad_q.text().contains("q=lots"), "{}", bad_q.text());
    assert_eq!(get("nonsense").status, 400);

    let cart = follow(
        addr,
        action(&get_json(addr, "/").json(), "create-cart", None).unwrap(),
        &[],
    )
    .unwrap()
    .json();
    let id = cart["cart"]["id"].as_str().unwrap().to_string();
    let items = format!("/carts/{id}/items");
    let post = |path: &str, body: &str| {
        request(addr, "POST", path, "application/json", Some(body)).unwrap()
    };
    let cases: Vec<(Reply, u16, &str)> = vec![
        (post(&items, "sku=tea"), 400, "no `version` field"),
        (post(&items, "sku=tea&version=x"), 400, "version `x`"),
        (post(&items, "sku=tea&version=1&version=1"), 400, "twice"),
        (post(&items, "sku=%zz&version=1"), 400, "percent-encoding"),
        (post(&items, "sku=%ff&version=1"), 400, "UTF-8"),
        (post(&items, "sku=teapot&version=1"), 400, "no product `teapot`"),
        (post(&format!("/carts/{id}/items/tea/quantity"), "quantity=abc&version=1"), 400, "quantity"),
        (post(&format!("/carts/{id}/items/teapot/remove"), "version=1"), 400, "teapot"),
        (post("/carts/0123/items", "sku=tea&version=1"), 404, "no cart"),
        (post(&format!("/carts/{}/items", "a".repeat(32)), "sku=tea&version=1"), 404, "no cart"),
        (post(&format!("/carts/{id}/elsewhere"), ""), 404, "nothing at"),
        (request(addr, "DELETE", &format!("/carts/{id}"), "application/json", None).unwrap(), 405, "GET"),
        (raw(addr, b"this is not http\r\n\r\n").unwrap(), 400, "malformed"),
        (raw(addr, format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(20_000)).as_bytes()).unwrap(), 431, "head"),
        (raw(addr, b"POST /carts HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n").unwrap(), 413, "body"),
        (raw(addr, b"POST /carts HTTP/1.1\r\nContent-Length: many\r\n\r\n").unwrap(), 400, "Content-Length"),
        (raw(addr, b"POST /carts HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").unwrap(), 400, "Content-Length"),
        (raw(addr, format!("POST {items} HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc").as_bytes()).unwrap(), 400, "Content-Type"),
    ];
    for (reply, status, says) in &cases {
        assert_eq!(reply.status, *status, "{}", reply.text());
        assert!(
            reply.text().contains(says),
            "`{says}` not in {}",
            reply.text()
        );
    }
    let refused = request(addr, "DELETE", &format!("/carts/{id}"), "text/html", None).unwrap();
    assert_eq!(refused.header("allow"), Some("GET"));

    // Optimistic concurrency: the same form twice applies once; a stale one not at all.
    let add_tea = action(&cart, "add", Some("tea")).unwrap().clone();
    assert_eq!(follow(addr, &add_tea, &[]).unwrap().status, 200);
    let replay = follow(addr, &add_tea, &[]).unwrap();
    assert_eq!(replay.status, 409, "{}", replay.text());
    assert!(replay.text().contains("changed since"), "{}", replay.text());
    assert_eq!(
        action(&replay.json(), "cart", None).unwrap()["href"],
        format!("/carts/{id}")
    );
    let now = get_json(addr, &format!("/carts/{id}")).json();
    assert_eq!(now["cart"]["version"], 2);
    assert_eq!(now["cart"]["lines"][0]["quantity"], 1);
    // An action the state does not offer is refused even with the right version.
    let sample = follow(addr, action(&now, "add", Some("sample")).unwrap(), &[]).unwrap();
    let twice = follow(
        addr,
        action(&sample.json(), "remove", Some("sample")).unwrap(),
        &[("version", "3")],
    );
    assert_eq!(twice.unwrap().status, 200);
    let quantity_of_sample = post(
        &format!("/carts/{id}/items/sample/quantity"),
        "quantity=2&version=4",
    );
    assert_eq!(
        quantity_of_sample.status,
        409,
        "{}",
        quantity_of_sample.text()
    );
    let empty_checkout = post(&format!("/carts/{id}/items/tea/remove"), "version=4");
    assert_eq!(empty_checkout.status, 200);
    let empty_checkout = post(&format!("/carts/{id}/checkout"), "version=5");
    assert_eq!(empty_checkout.status, 409);
    assert!(
        empty_checkout.text().contains("empty"),
        "{}",
        empty_checkout.text()
    );

    // HTML escapes what it shows: the product's name and a path echoed in a 404.
    let html = request(addr, "GET", &format!("/carts/{id}"), "text/html", None)
        .unwrap()
        .text();
    assert!(html.contains("Tasting sample &lt;free&gt;"), "{html}");
    assert!(!html.contains("<free>"));
    let echoed = request(addr, "GET", "/<script>alert(1)</script>", "text/html", None).unwrap();
    assert_eq!(echoed.status, 404);
    assert!(echoed.text().contains("&lt;script&gt;") && !echoed.text().contains("<script>"));
    // A browser's form post is redirected back to the cart.
    let html_post = request(addr, "POST", &items, "text/html", Some("sku=mug&version=5")).unwrap();
    assert_eq!(html_post.status, 303);
    assert_eq!(
        html_post.header("location"),
        Some(format!("/carts/{id}").as_str())
    );
    // Still serving after all of it.
    assert_eq!(get("text/html").status, 200);
    shop.stop();
}

#[test]
fn the_command_line_says_what_it_cannot_do() {
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(example())
            .arg("--data")
            .arg(data.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--colour"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("unknown argument `--colour`") && err.contains("usage"),
        "{err}"
    );
    let (code, err) = run(&["--listen"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--listen needs an address"), "{err}");
    let (code, err) = run(&["--listen", "nowhere"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("listening on nowhere"), "{err}");
    // Nothing to upgrade: no server has run on this directory.
    let (code, err) = run(&["--upgrade"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("carts:"), "{err}");
    // A second server on a running one's data is refused by the store's lock.
    let shop = Shop::start(data.path());
    let (code, err) = run(&["--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("opening the store"), "{err}");
    assert_eq!(get_json(&shop.addr, "/").status, 200);
    shop.stop();
}

/// Reads a journaled actor's events from a store.
fn events_of<S: JournalState>(store: &Store, stream: &str) -> Vec<S::Event> {
    match store.read_stream_forward(stream, 0, usize::MAX) {
        Ok(events) => events
            .map(|e| Bincode.decode(e.unwrap().data()).unwrap())
            .collect(),
        Err(e) => panic!("reading {stream}: {e}"),
    }
}

fn fold<S: JournalState>(events: &[S::Event]) -> S {
    let mut s = S::default();
    for e in events {
        s.apply(e).unwrap();
    }
    s
}

#[test]
fn stock_is_exact_under_concurrent_checkouts_and_a_crash_between_sale_and_checkout() {
    let data = tempfile::tempdir().unwrap();
    // A server that dies right after the stock actor recorded a sale, before the cart's
    // CheckedOut.
    let crashing = Shop::start_with(data.path(), &[("CARTS_CRASH_AFTER_SALE", "1")]);
    let addr = crashing.addr.clone();
    let cart = follow(
        &addr,
        action(&get_json(&addr, "/").json(), "create-cart", None).unwrap(),
        &[],
    )
    .unwrap()
    .json();
    let r = follow(&addr, action(&cart, "add", Some("print")).unwrap(), &[]).unwrap();
    let r = follow(
        &addr,
        action(&r.json(), "change-quantity", Some("print")).unwrap(),
        &[("quantity", "2")],
    )
    .unwrap();
    let before = r.json();
    let lost = follow(&addr, action(&before, "checkout", None).unwrap(), &[]);
    assert!(lost.is_err(), "the checkout was answered: {lost:?}");
    let mut crashing = crashing;
    assert!(!crashing.process.exit().success());
    drop(crashing);

    let shop = Shop::start(data.path());
    let addr = shop.addr.clone();
    let id = before["cart"]["id"].as_str().unwrap();
    let now = get_json(&addr, &format!("/carts/{id}")).json();
    assert_eq!(now["cart"]["checked_out"], false);
    // The sale stands: 2 of the edition are held for this cart.
    assert_eq!(now["cart"]["left"][0]["units"], PRINT_EDITION - 2);
    // The retry, from the same page, finds the sale recorded and completes.
    let retried = follow(&addr, action(&before, "checkout", None).unwrap(), &[]).unwrap();
    assert_eq!(retried.status, 200, "{}", retried.text());
    assert_eq!(retried.json()["receipt"]["total_cents"], 7000);

    // More buyers than prints, all at once: each checkout wants 2 of the 23 left.
    let buyers: Vec<Value> = (0..14)
        .map(|_| {
            let c = follow(
                &addr,
                action(&get_json(&addr, "/").json(), "create-cart", None).unwrap(),
                &[],
            )
            .unwrap()
            .json();
            let c = follow(&addr, action(&c, "add", Some("print")).unwrap(), &[])
                .unwrap()
                .json();
            follow(
                &addr,
                action(&c, "change-quantity", Some("print")).unwrap(),
                &[("quantity", "2")],
            )
            .unwrap()
            .json()
        })
        .collect();
    let outcomes: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = buyers
            .iter()
            .map(|b| {
                let addr = addr.clone();
                s.spawn(move || {
                    follow(&addr, action(b, "checkout", None).unwrap(), &[])
                        .unwrap()
                        .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        outcomes.iter().filter(|&&s| s == 200).count(),
        11,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|&&s| s == 409).count(),
        3,
        "{outcomes:?}"
    );
    // One print left: a new cart may add it, and once it is sold nobody is offered it.
    let last = follow(
        &addr,
        action(&get_json(&addr, "/").json(), "create-cart", None).unwrap(),
        &[],
    )
    .unwrap()
    .json();
    assert_eq!(last["cart"]["left"][0]["units"], 1);
    let last = follow(&addr, action(&last, "add", Some("print")).unwrap(), &[])
        .unwrap()
        .json();
    assert!(
        action(&last, "add", Some("print")).is_none(),
        "{:?}",
        rels(&last)
    );
    assert_eq!(
        follow(&addr, action(&last, "checkout", None).unwrap(), &[])
            .unwrap()
            .status,
        200
    );
    let after = follow(
        &addr,
        action(&get_json(&addr, "/").json(), "create-cart", None).unwrap(),
        &[],
    )
    .unwrap()
    .json();
    assert!(
        action(&after, "add", Some("print")).is_none(),
        "{:?}",
        rels(&after)
    );
    shop.stop();

    // The store, read by this process: the edition sold exactly, each sale to a checked-out
    // cart, the crashed checkout's sale once.
    let store = Store::open(data.path().join("store"), Options::default()).unwrap();
    let stock: Stock = fold(&events_of::<Stock>(&store, "stock-print"));
    assert_eq!(stock.sold(), PRINT_EDITION);
    for (cart, units) in &stock.sales {
        let c: Cart = fold(&events_of::<Cart>(&store, &format!("cart-{cart}")));
        assert!(
            c.checked_out.is_some(),
            "a sale to cart {cart}, not checked out"
        );
        assert_eq!(c.quantity_of("print"), *units);
    }
    assert_eq!(stock.sold_to(id), 2);
    store.close().unwrap();
}

/// One client request, timed.
struct Timing {
    start: u64,
    end: u64,
}

/// What the load's clients saw.
#[derive(Default)]
struct Seen {
    timings: Vec<Timing>,
    failures: Vec<String>,
    /// Each cart's events, as its acknowledged actions imply, in order.
    carts: BTreeMap<String, Vec<CartEvent>>,
    sold_out: usize,
    /// Actions sent a second time with the same version.
    replays: usize,
}

/// A client: opens carts, fills them through the actions offered, checks out (and, when the
/// print is sold out, removes it and checks out again), until `stop`.
fn client(addr: &str, seed: u64, stop: &AtomicBool, seen: &Mutex<Seen>) {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let timed = |f: &mut dyn FnMut() -> std::io::Result<Reply>| -> Option<Reply> {
        let start = now_ns();
        let r = f();
        let end = now_ns();
        let mut s = seen.lock().unwrap();
        s.timings.push(Timing { start, end });
        match r {
            Ok(r) if r.status < 500 => Some(r),
            Ok(r) => {
                s.failures.push(format!("{}: {}", r.status, r.text()));
                None
            }
            Err(e) => {
                s.failures.push(e.to_string());
                None
            }
        }
    };
    'carts: while !stop.load(Ordering::SeqCst) {
        let Some(home) = timed(&mut || request(addr, "GET", "/", "application/json", None)) else {
            continue;
        };
        let create = action(&home.json(), "create-cart", None).unwrap().clone();
        let Some(r) = timed(&mut || follow(addr, &create, &[])) else {
            continue;
        };
        let mut cart = r.json();
        let id = cart["cart"]["id"].as_str().unwrap().to_string();
        seen.lock()
            .unwrap()
            .carts
            .insert(id.clone(), vec![CartEvent::Opened]);
        let steps = 2 + next(4);
        let mut step = 0;
        loop {
            let acts: Vec<Value> = cart["actions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["method"] == "POST" && (a["rel"] != "checkout" || step >= steps))
                .cloned()
                .collect();
            let Some(chosen) = (if step >= steps {
                action(&cart, "checkout", None).cloned()
            } else {
                acts.get(next(acts.len().max(1) as u64) as usize).cloned()
            }) else {
                continue 'carts;
            };
            step += 1;
            let quantity = (1 + next(4)).to_string();
            let fill = [("quantity", quantity.as_str())];
            let Some(r) = timed(&mut || follow(addr, &chosen, &fill)) else {
                continue 'carts;
            };
            let item = chosen["item"].as_str().unwrap_or_default().to_string();
            match r.status {
                200 => {
                    let event = match chosen["rel"].as_str().unwrap() {
                        "add" => CartEvent::ItemAdded {
                            sku: item,
                            quantity: 1,
                        },
                        "change-quantity" => CartEvent::QuantityChanged {
                            sku: item,
                            quantity: quantity.parse().unwrap(),
                        },
                        "remove" => CartEvent::ItemRemoved { sku: item },
                        "checkout" => CartEvent::CheckedOut {
                            total_cents: cart["cart"]["total_cents"].as_u64().unwrap(),
                        },
                        other => panic!("unexpected action {other}"),
                    };
                    let done = matches!(event, CartEvent::CheckedOut { .. });
                    seen.lock().unwrap().carts.get_mut(&id).unwrap().push(event);
                    cart = r.json();
                    if next(8) == 0 {
                        // A client retrying as if the answer had been lost: refused, and (the
                        // store check shows) not applied again.
                        let Some(again) = timed(&mut || follow(addr, &chosen, &fill)) else {
                            continue 'carts;
                        };
                        let mut s = seen.lock().unwrap();
                        s.replays += 1;
                        if again.status != 409 || !again.text().contains("changed since") {
                            s.failures.push(format!(
                                "a replayed {} got {}: {}",
                                chosen["rel"],
                                again.status,
                                again.text()
                            ));
                        }
                    }
                    if done {
                        continue 'carts;
                    }
                }
                409 if r.text().contains("left") || r.text().contains("sold out") => {
                    // The print sold out under this cart: look again and carry on without it.
                    seen.lock().unwrap().sold_out += 1;
                    let back = action(&r.json(), "cart", None).unwrap().clone();
                    let Some(again) = timed(&mut || follow(addr, &back, &[])) else {
                        continue 'carts;
                    };
                    cart = again.json();
                    if let Some(remove) = action(&cart, "remove", Some("print")).cloned() {
                        let Some(r) = timed(&mut || follow(addr, &remove, &[])) else {
                            continue 'carts;
                        };
                        assert_eq!(r.status, 200, "{}", r.text());
                        seen.lock().unwrap().carts.get_mut(&id).unwrap().push(
                            CartEvent::ItemRemoved {
                                sku: "print".into(),
                            },
                        );
                        cart = r.json();
                    }
                }
                status => {
                    seen.lock().unwrap().failures.push(format!(
                        "{status} on {}: {}",
                        chosen["rel"],
                        r.text()
                    ));
                    continue 'carts;
                }
            }
        }
    }
}

/// Nearest-rank percentile, in milliseconds.
fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1e6
}

#[test]
fn ten_upgrades_under_load_fail_no_request_and_lose_or_repeat_no_action() {
    const CLIENTS: u64 = 6;
    // More for a longer run of figures: CARTS_UPGRADES=100.
    let upgrades: usize = std::env::var("CARTS_UPGRADES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let data = tempfile::tempdir().unwrap();
    let mut shop = Shop::start(data.path());
    let addr = shop.addr.clone();
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    let mut windows = Vec::new();
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let (addr, stop, seen) = (&addr, &stop, &seen);
            s.spawn(move || client(addr, c + 1, stop, seen));
        }
        for _ in 0..upgrades {
            std::thread::sleep(Duration::from_millis(250));
            windows.push(shop.upgrade());
        }
        std::thread::sleep(Duration::from_millis(250));
        stop.store(true, Ordering::SeqCst);
    });
    shop.stop();
    let seen = seen.into_inner().unwrap();

    let (mut during, mut outside) = (Vec::new(), Vec::new());
    for t in &seen.timings {
        let overlaps = windows
            .iter()
            .any(|w| t.start < w.accepting && t.end > w.asked);
        let took = t.end - t.start;
        if overlaps {
            during.push(took)
        } else {
            outside.push(took)
        }
    }
    during.sort_unstable();
    outside.sort_unstable();
    let mut gaps: Vec<u64> = windows.iter().map(|w| w.accepting - w.asked).collect();
    gaps.sort_unstable();
    let checked_out = seen
        .carts
        .values()
        .filter(|e| matches!(e.last(), Some(CartEvent::CheckedOut { .. })))
        .count();
    let figures = format!(
        "{upgrades} upgrades under {CLIENTS} clients: {} requests, {} failed; {} carts ({checked_out} \
         checked out, {} checkouts refused for stock, {} actions replayed and refused)\n\
         during upgrades: {} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n\
         outside upgrades: {} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n\
         upgrade (asked to accepting): p50 {:.2} ms, max {:.2} ms\n",
        seen.timings.len(),
        seen.failures.len(),
        seen.carts.len(),
        seen.sold_out,
        seen.replays,
        during.len(),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
        percentile(&during, 1.0),
        outside.len(),
        percentile(&outside, 0.5),
        percentile(&outside, 0.99),
        percentile(&outside, 1.0),
        percentile(&gaps, 0.5),
        percentile(&gaps, 1.0),
    );
    eprint!("{figures}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("carts-upgrades.txt"), &figures);
    assert!(
        seen.failures.is_empty(),
        "failed requests: {:?}",
        seen.failures
    );
    assert!(!during.is_empty(), "no request ran during an upgrade");
    assert!(
        checked_out > 10,
        "too little load to say anything: {figures}"
    );

    // Every acknowledged action is in the store once, in order, and nothing else is.
    let store = Store::open(data.path().join("store"), Options::default()).unwrap();
    let mut print_sold = 0;
    for (id, expected) in &seen.carts {
        let stored = events_of::<Cart>(&store, &format!("cart-{id}"));
        assert_eq!(&stored, expected, "cart {id}");
        let cart: Cart = fold(&stored);
        if cart.checked_out.is_some() {
            print_sold += cart.quantity_of("print");
        }
    }
    let streams = store.streams().unwrap();
    let carts_stored = streams.iter().filter(|s| s.starts_with("cart-")).count();
    assert_eq!(carts_stored, seen.carts.len(), "carts nobody acknowledged");
    let sales = events_of::<Stock>(&store, "stock-print");
    let stock: Stock = fold(&sales);
    assert!(stock.sold() <= PRINT_EDITION);
    assert_eq!(
        stock.sold(),
        print_sold,
        "prints sold against prints in checked-out carts"
    );
    assert!(sales
        .iter()
        .all(|StockEvent::Sold { quantity, .. }| *quantity > 0));
    store.close().unwrap();
}

/// Reads a whole response from a connection the test wrote a request to itself.
fn response_on(mut s: TcpStream) -> Reply {
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no response: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    Reply {
        status,
        headers: head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(": "))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn an_upgrade_answers_started_requests_and_passes_on_connections_not_started() {
    let data = tempfile::tempdir().unwrap();
    let mut shop = Shop::start(data.path());
    let addr = shop.addr.clone();
    let cart = follow(
        &addr,
        action(&get_json(&addr, "/").json(), "create-cart", None).unwrap(),
        &[],
    )
    .unwrap()
    .json();
    let id = cart["cart"]["id"].as_str().unwrap();
    let old_pid = shop.pid();
    // A connection that has sent nothing yet (as a browser opens ahead of need), and one whose
    // request is half sent.
    let mut idle = TcpStream::connect(&addr).unwrap();
    let mut started = TcpStream::connect(&addr).unwrap();
    let body = "sku=tea&version=1";
    write!(
        started,
        "POST /carts/{id}/items HTTP/1.1\r\nAccept: application/json\r\nContent-Type: \
         application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\nsku=",
        body.len()
    )
    .unwrap();
    // Both are accepted before the upgrade is asked for.
    std::thread::sleep(Duration::from_millis(100));
    let new = shop.begin_upgrade(&[]);
    // The old process waits for the started request, however long it takes to arrive.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        shop.process.child.try_wait().unwrap().is_none(),
        "the old process left a request behind"
    );
    started.write_all(&body.as_bytes()[4..]).unwrap();
    let answered = response_on(started);
    assert_eq!(answered.status, 200, "{}", answered.text());
    assert_eq!(answered.header("x-process-id"), Some(old_pid.as_str()));
    shop.finish_upgrade(new);
    // The idle connection went to the new process with its bytes unread.
    write!(
        idle,
        "GET /carts/{id} HTTP/1.1\r\nAccept: application/json\r\n\r\n"
    )
    .unwrap();
    let later = response_on(idle);
    assert_eq!(later.status, 200, "{}", later.text());
    assert_eq!(later.header("x-process-id"), Some(shop.pid().as_str()));
    assert_ne!(shop.pid(), old_pid);
    assert_eq!(later.json()["cart"]["version"], 2);
    shop.stop();
}

#[test]
fn a_failed_upgrade_leaves_the_old_process_serving() {
    let data = tempfile::tempdir().unwrap();
    let mut shop = Shop::start(data.path());
    let addr = shop.addr.clone();
    let pid = shop.pid();
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    std::thread::scope(|s| {
        let (addr, stop, seen) = (&addr, &stop, &seen);
        s.spawn(move || client(addr, 99, stop, seen));
        std::thread::sleep(Duration::from_millis(100));
        // The new process gets the sockets, then dies before taking the store over.
        let mut failing = shop.begin_upgrade(&[("CARTS_FAIL_UPGRADE", "1")]);
        assert!(!failing.exit().success());
        let served = get_json(addr, "/");
        assert_eq!(served.status, 200);
        assert_eq!(served.header("x-process-id"), Some(pid.as_str()));
        std::thread::sleep(Duration::from_millis(200));
        // And a later upgrade works.
        shop.upgrade();
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::SeqCst);
    });
    let seen = seen.into_inner().unwrap();
    assert!(
        seen.failures.is_empty(),
        "failed requests: {:?}",
        seen.failures
    );
    assert!(seen.timings.len() > 20, "{} requests", seen.timings.len());
    assert_ne!(shop.pid(), pid);
    shop.stop();
    let store = Store::open(data.path().join("store"), Options::default()).unwrap();
    for (id, expected) in &seen.carts {
        assert_eq!(
            &events_of::<Cart>(&store, &format!("cart-{id}")),
            expected,
            "cart {id}"
        );
    }
    store.close().unwrap();
}

/// Submits the form `selector` finds in the page and waits for the cart at `version`.
fn submit(b: &mut Browser, selector: &str, version: u64) {
    let form = serde_json::json!(selector);
    b.wait_for(&format!("document.querySelector({form})"));
    b.eval(&format!(
        "document.querySelector({form}).querySelector('button').click()"
    ));
    b.wait_for(&format!(
        "document.readyState === 'complete' && document.querySelector('main').dataset.version === '{version}'"
    ));
}

fn absent(b: &mut Browser, selector: &str) -> bool {
    b.eval(&format!(
        "document.querySelector({}) === null",
        serde_json::json!(selector)
    )) == Value::Bool(true)
}

#[test]
fn a_browser_fills_a_cart_by_its_actions_and_checks_out_across_an_upgrade() {
    let data = tempfile::tempdir().unwrap();
    let mut shop = Shop::start(data.path());
    let shots = screenshot_dir().join("carts");
    let mut b = Browser::start(900, 900);
    b.goto(&format!("http://{}/", shop.addr));
    submit(&mut b, "form[data-rel=create-cart]", 1);
    assert!(b.text().contains("The cart is empty"));
    assert!(
        absent(&mut b, "form[data-rel=checkout]"),
        "checkout offered on an empty cart"
    );
    submit(&mut b, "form[data-rel=add][data-item=tea]", 2);
    submit(&mut b, "form[data-rel=add][data-item=sample]", 3);
    assert!(absent(
        &mut b,
        "form[data-rel=change-quantity][data-item=sample]"
    ));
    assert!(absent(&mut b, "form[data-rel=add][data-item=sample]"));
    assert!(!absent(
        &mut b,
        "form[data-rel=change-quantity][data-item=tea]"
    ));
    b.eval("document.querySelector('form[data-rel=change-quantity][data-item=tea] input[name=quantity]').value = '3'");
    submit(&mut b, "form[data-rel=change-quantity][data-item=tea]", 4);
    assert_eq!(
        b.eval("document.querySelector('tr[data-line=tea] .qty').dataset.quantity"),
        "3"
    );
    b.screenshot(&shots.join("1-cart.png"));

    // The page stays open while another process takes over; its forms go on working.
    let old_pid = shop.process.child.id();
    shop.upgrade();
    assert_ne!(shop.process.child.id(), old_pid);
    submit(&mut b, "form[data-rel=add][data-item=mug]", 5);
    b.screenshot(&shots.join("2-after-upgrade.png"));
    submit(&mut b, "form[data-rel=checkout]", 6);
    let text = b.text();
    assert!(text.contains("Thank you. Paid €25.50"), "{text}");
    assert_eq!(
        b.eval("document.querySelectorAll('form').length"),
        0,
        "actions after checkout"
    );
    b.screenshot(&shots.join("3-receipt.png"));
    shop.stop();
}
