//! The HTTP view (`eventjournal::web`) over real stores and a real server on a loopback port:
//! every link it writes is followed, and negotiation, paging links, bad input and the live
//! view are checked through plain TCP requests.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventjournal::web::{self, Body, Server};
use eventjournal::{Durability, EventData, ExpectedVersion, Options, Store, StreamMetadata};
use serde_json::Value;

const SCRIPT: &str = "<script>alert(1)</script>";

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request on a connection of its own, read to its end.
fn request(addr: SocketAddr, method: &str, target: &str, accept: Option<&str>) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).expect("responses are UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header section");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

fn get(addr: SocketAddr, target: &str, accept: &str) -> Reply {
    request(addr, "GET", target, Some(accept))
}

fn html(addr: SocketAddr, target: &str) -> Reply {
    get(
        addr,
        target,
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    )
}

fn json(addr: SocketAddr, target: &str) -> Reply {
    get(addr, target, "application/json")
}

fn open(dir: &std::path::Path) -> Arc<Store> {
    Arc::new(Store::open(dir, Options::default().durability(Durability::None)).unwrap())
}

fn append(store: &Store, stream: &str, n: usize) {
    let types = ["Opened", "Deposited", "Withdrawn", "Renamed", "Closed"];
    let events: Vec<EventData> = (0..n)
        .map(|i| {
            let ty = types[(stream.len() + i) % types.len()];
            if i % 3 == 2 {
                EventData::new(ty, vec![0u8, 159, 146, 150]).with_metadata("{\"by\":\"test\"}")
            } else {
                EventData::new(ty, format!("{{\"stream\":{:?},\"i\":{i}}}", stream))
            }
        })
        .collect();
    store.append(stream, ExpectedVersion::Any, events).unwrap();
}

/// `href` values of an HTML page, unescaped.
fn hrefs(page: &str) -> Vec<String> {
    page.split("href=\"")
        .skip(1)
        .filter_map(|s| s.split_once('"'))
        .map(|(h, _)| {
            h.replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        })
        .collect()
}

/// Every string under a `links` object of a JSON document.
fn json_links(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("links", Value::Object(links)) => {
                        out.extend(links.values().filter_map(|l| l.as_str().map(String::from)))
                    }
                    ("href", Value::String(h)) => out.push(h.clone()),
                    _ => json_links(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| json_links(v, out)),
        _ => {}
    }
}

/// Follows every link reachable from `/` in one format; returns how many pages it fetched.
fn crawl(addr: SocketAddr, as_json: bool) -> (usize, HashSet<String>) {
    let mut seen: HashSet<String> = HashSet::from(["/".to_string()]);
    let mut queue = VecDeque::from(["/".to_string()]);
    let mut fetched = 0;
    while let Some(target) = queue.pop_front() {
        let reply = if as_json {
            json(addr, &target)
        } else {
            html(addr, &target)
        };
        fetched += 1;
        assert_eq!(reply.status, 200, "{target}: {}", reply.body);
        let links = if as_json {
            assert!(reply
                .header("content-type")
                .unwrap()
                .starts_with("application/json"));
            let mut links = Vec::new();
            json_links(&reply.json(), &mut links);
            links
        } else {
            assert!(reply
                .header("content-type")
                .unwrap()
                .starts_with("text/html"));
            assert!(
                !reply.body.contains(SCRIPT),
                "{target} shows a raw script tag"
            );
            hrefs(&reply.body)
        };
        for l in links {
            assert!(l.starts_with('/'), "{target} links to {l}");
            if seen.insert(l.clone()) {
                queue.push_back(l);
            }
        }
    }
    (fetched, seen)
}

#[test]
fn a_crawler_follows_every_link_in_html_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let odd = [
        SCRIPT,
        "a/b/c-1",
        "with space-2",
        "ünïcødé-ß",
        "100%-sure",
        "q\"uote&amp-x",
        "-no-category",
        "no_dash",
        "?x=1#frag",
    ];
    for (i, name) in odd.iter().enumerate() {
        append(&store, name, 1 + i % 3);
    }
    // An odd event type, and the store's own `$` streams.
    store
        .append(
            "types-1",
            ExpectedVersion::Any,
            [EventData::new("<b>Odd/Type</b> ü", "{}")],
        )
        .unwrap();
    let last = store
        .read_all_backward(eventjournal::Position::END, 1)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    store.save_checkpoint("crawler", last.position()).unwrap();
    let categories = ["account", "order", "cart", "user"];
    for i in 0..240 {
        // Enough categories besides these for their list to have pages.
        let extra = format!("extra{i}");
        let c = if i < 200 {
            categories[i % categories.len()]
        } else {
            extra.as_str()
        };
        // A few streams longer than a page, several pages in some.
        let n = match i {
            0 => 45,
            1..=3 => 21,
            _ => 1,
        };
        append(&store, &format!("{c}-{i}"), n);
    }
    // Streams deleted, tombstoned and truncated: their pages say so, and nothing links to
    // what is gone (the crawl below fails on any link that is not a 200).
    append(&store, "gone-1", 3);
    store.delete_stream("gone-1", ExpectedVersion::Any).unwrap();
    append(&store, "dead-1", 2);
    store
        .tombstone_stream("dead-1", ExpectedVersion::Any)
        .unwrap();
    append(&store, "cut-1", 45);
    store
        .set_stream_metadata(
            "cut-1",
            ExpectedVersion::NoStream,
            StreamMetadata {
                truncate_before: Some(7),
                ..Default::default()
            },
        )
        .unwrap();
    let server = web::serve(store.clone(), "127.0.0.1:0").unwrap();
    let addr = server.addr();
    let started = Instant::now();
    let html_crawl = std::thread::spawn(move || crawl(addr, false));
    let (json_pages, json_seen) = crawl(addr, true);
    let (html_pages, html_seen) = html_crawl.join().unwrap();
    eprintln!(
        "crawled {html_pages} HTML and {json_pages} JSON pages in {:?}",
        started.elapsed()
    );
    // Every stream, event and paging page is reachable: more pages than events.
    assert!(
        html_pages > 400 && json_pages > 400,
        "{html_pages} {json_pages}"
    );
    for seen in [&html_seen, &json_seen] {
        for name in odd {
            let enc: String = name
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~$:@".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            assert!(
                seen.contains(&format!("/streams/{enc}")),
                "{name} not reached"
            );
        }
        for c in categories {
            assert!(
                seen.contains(&format!("/categories/{c}")),
                "category {c} not reached"
            );
        }
        assert!(seen.contains("/types/Deposited"));
        assert!(seen.contains("/categories/extra239") && seen.contains("/categories/extra200"));
        assert!(seen.contains("/categories") && seen.contains("/types"));
        assert!(seen.contains("/types/%3Cb%3EOdd%2FType%3C%2Fb%3E%20%C3%BC"));
        assert!(seen.contains("/streams/$checkpoint-crawler"));
        assert!(seen.contains("/streams/account-0/44"));
        assert!(seen.contains("/streams/account-0/0"));
        assert!(seen.contains("/streams/gone-1") && seen.contains("/streams/dead-1"));
        assert!(!seen.iter().any(|l| l.starts_with("/streams/gone-1/")));
        assert!(!seen.iter().any(|l| l.starts_with("/streams/dead-1/")));
        assert!(seen.contains("/streams/cut-1/7") && seen.contains("/streams/cut-1/44"));
        for n in 0..7 {
            assert!(!seen.contains(&format!("/streams/cut-1/{n}")), "cut-1/{n}");
        }
    }
    server.stop();
}

#[test]
fn negotiation_by_accept_with_quality_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, "order-1", 2);
    let server = web::serve(store, "127.0.0.1:0").unwrap();
    let addr = server.addr();
    let cases = [
        (
            Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            200,
            "text/html",
        ),
        (Some("application/json"), 200, "application/json"),
        (Some("*/*"), 200, "text/html"),
        (None, 200, "text/html"),
        (Some("text/*"), 200, "text/html"),
        (Some("application/*"), 200, "application/json"),
        (
            Some("text/html;q=0.4, application/json;q=0.9"),
            200,
            "application/json",
        ),
        (Some("application/json, text/html"), 200, "application/json"),
        (Some("text/html;q=0, */*"), 200, "application/json"),
        (Some("*/*;q=0, text/html"), 200, "text/html"),
        (Some("image/png"), 406, "text/plain"),
        // A quoted parameter may hold a comma; a range with parameters names another variant.
        (
            Some("text/html;foo=\"a,b\";q=0, application/json"),
            200,
            "application/json",
        ),
        (Some("text/html;level=1;q=0, text/html"), 200, "text/html"),
        (Some("text/html;charset=utf-8"), 200, "text/html"),
        (
            Some("text/html;q=0, application/json;q=0"),
            406,
            "text/plain",
        ),
    ];
    for target in [
        "/",
        "/streams/order-1",
        "/streams/order-1/1",
        "/streams/$all",
        "/streams",
    ] {
        for (accept, status, content_type) in cases {
            let r = request(addr, "GET", target, accept);
            assert_eq!(r.status, status, "{target} {accept:?}: {}", r.body);
            assert!(
                r.header("content-type").unwrap().starts_with(content_type),
                "{target} {accept:?}: {:?}",
                r.header("content-type")
            );
            assert_eq!(r.header("vary"), Some("Accept"), "{target} {accept:?}");
        }
    }
    // The home page: counts, listings, stats.
    let home = json(addr, "/").json();
    assert_eq!(home["streams"], 1);
    assert_eq!(home["categories"][0]["name"], "order");
    assert_eq!(home["categories"][0]["events"], 2);
    assert_eq!(home["stats"]["eventsAppended"], 2);
    assert_eq!(home["links"]["types"], "/types");
    // The same resource both ways.
    let j = json(addr, "/streams/order-1/1").json();
    assert_eq!(j["stream"], "order-1");
    assert_eq!(j["number"], 1);
    assert_eq!(j["links"]["self"], "/streams/order-1/1");
    let h = html(addr, "/streams/order-1/1");
    assert!(h.body.contains("id=\"event\""));
    assert!(h
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'none'"));
    // Errors are negotiated too.
    let e = json(addr, "/streams/nope");
    assert_eq!(e.status, 404);
    assert_eq!(e.json()["error"]["status"], 404);
    let e = html(addr, "/streams/nope");
    assert_eq!(e.status, 404);
    assert!(e.body.contains("id=\"error\""));
}

#[test]
fn links_come_from_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, "long-1", 45);
    append(&store, "short-1", 3);
    let server = web::serve(store.clone(), "127.0.0.1:0").unwrap();
    let addr = server.addr();
    let page = |target: &str| {
        let r = json(addr, target);
        assert_eq!(r.status, 200, "{target}: {}", r.body);
        r.json()
    };
    let has = |v: &Value, rel: &str| v["links"].get(rel).is_some();

    // The head page: older pages exist, newer ones do not.
    let head = page("/streams/long-1");
    assert_eq!(head["events"][0]["number"], 44);
    assert_eq!(head["events"].as_array().unwrap().len(), 20);
    assert!(!has(&head, "previous") && !has(&head, "first") && !has(&head, "head"));
    assert_eq!(head["links"]["next"], "/streams/long-1?from=24");
    assert_eq!(head["links"]["last"], "/streams/long-1?from=19");
    // Following `next` to the end; the last page has no `next` or `last`.
    let middle = page(head["links"]["next"].as_str().unwrap());
    assert_eq!(middle["events"][0]["number"], 24);
    assert!(has(&middle, "previous") && has(&middle, "next") && has(&middle, "head"));
    assert_eq!(middle["links"]["head"], "/streams/long-1");
    let end = page(middle["links"]["next"].as_str().unwrap());
    let numbers: Vec<u64> = end["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..=4).rev().collect::<Vec<_>>());
    assert!(!has(&end, "next") && !has(&end, "last"));
    assert!(has(&end, "previous") && has(&end, "first"));
    // A one-page stream has no paging links at all.
    let short = page("/streams/short-1");
    for rel in ["next", "previous", "first", "last", "head"] {
        assert!(
            !has(&short, rel),
            "{rel} on a one-page stream: {}",
            short["links"]
        );
    }
    // The HTML says the same with `rel` attributes.
    let h = html(addr, "/streams/long-1?from=24").body;
    assert!(h.contains("rel=\"next\"") && h.contains("rel=\"previous\""));
    assert!(h.contains("rel=\"first head\""));
    assert!(!html(addr, "/streams/short-1").body.contains("rel=\"next\""));
    assert!(
        html(addr, "/streams/long-1")
            .body
            .matches("class=\"event\"")
            .count()
            == 20
    );

    // $all: 48 events; the head page has no link to the head, a page further back has.
    let all = page("/streams/$all?limit=10");
    assert!(!has(&all, "head") && !has(&all, "previous"));
    let older = page(all["links"]["next"].as_str().unwrap());
    assert!(has(&older, "head") && has(&older, "previous"));
    assert_eq!(older["links"]["head"], "/streams/$all?limit=10");
    // Walking `next` from the head reaches every event once, then stops.
    let mut seen = 0;
    let mut target = Some("/streams/$all?limit=10".to_string());
    while let Some(t) = target {
        let p = page(&t);
        seen += p["events"].as_array().unwrap().len();
        target = p["links"]["next"].as_str().map(String::from);
    }
    assert_eq!(seen, 48);
    // Before the first event there is nothing, and the way back to the head.
    let start = page("/streams/$all?from=0&limit=10");
    assert_eq!(start["events"].as_array().unwrap().len(), 0);
    assert_eq!(start["links"]["head"], "/streams/$all?limit=10");
    assert!(!has(&start, "next") && !has(&start, "previous"));
    // Once more events are committed, the old head page is no longer the head.
    let old_head = all["links"]["self"].as_str().unwrap().to_string();
    assert!(!has(&page(&old_head), "head"));
    let pinned = format!("/streams/$all?from={}&limit=10", store.head().0);
    append(&store, "short-1", 1);
    assert!(
        has(&page(&pinned), "head"),
        "a page pinned below the head links to it"
    );
    server.stop();
}

#[test]
fn bad_requests_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, "order-1", 3);
    append(&store, SCRIPT, 1);
    let server = web::serve(store, "127.0.0.1:0").unwrap();
    let addr = server.addr();
    for target in [
        "/streams/order-1?from=abc",
        "/streams/order-1?from=-1",
        "/streams/order-1?limit=0",
        "/streams/order-1?limit=101",
        "/streams/order-1?limit=99999999999999999999999",
        "/streams/order-1?bogus=1",
        "/streams/order-1?from=1&from=2",
        "/streams/order%zz",
        "/streams/order%ff",
        "/streams/order-1/x",
        "/streams/order-1/+1",
        "/streams/$all?from=1",
        "/streams/$all?from=notanumber",
        "/streams/",
        "/categories/a-b",
        "/categories?from=1",
        "/types?limit=1000",
        "/live?after=x",
        "/live?from=1",
        &format!("/streams/{}", "a".repeat(1025)),
        &format!("/streams/{}/0", "a".repeat(1025)),
    ] {
        let r = json(addr, target);
        assert_eq!(r.status, 400, "{target}: {}", r.body);
        assert!(r.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        let r = html(addr, target);
        assert_eq!(r.status, 400, "{target}");
        assert!(r.body.contains("id=\"error\""));
    }
    for target in [
        "/streams/unknown",
        "/streams/order-1/3",
        "/streams/unknown/0",
        "/streams/order-1?from=3",
        "/categories/nothing",
        "/types/Nothing",
        "/nowhere",
        "/streams/order-1/0/more",
    ] {
        assert_eq!(json(addr, target).status, 404, "{target}");
    }
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = request(addr, method, "/streams/order-1", Some("application/json"));
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
    let head = request(addr, "HEAD", "/streams/order-1", Some("application/json"));
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let get = json(addr, "/streams/order-1");
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );

    // The stream named like a script is text in HTML, and itself in JSON.
    let enc = "%3Cscript%3Ealert%281%29%3C%2Fscript%3E";
    let page = html(addr, &format!("/streams/{enc}"));
    assert_eq!(page.status, 200);
    assert!(!page.body.contains(SCRIPT));
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert_eq!(
        json(addr, &format!("/streams/{enc}/0")).json()["stream"],
        SCRIPT
    );
    let list = html(addr, "/streams");
    assert!(!list.body.contains(SCRIPT) && list.body.contains(&format!("href=\"/streams/{enc}\"")));
}

#[test]
fn the_live_view_pushes_committed_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, "order-1", 1);
    let server = web::serve(store.clone(), "127.0.0.1:0").unwrap();
    let addr = server.addr();

    let page = html(addr, "/live");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"live\"") && page.body.contains("new EventSource("));
    let csp = page.header("content-security-policy").unwrap().to_string();
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    assert!(page.body.contains(&format!("<script nonce=\"{nonce}\">")));

    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /live HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK\r\n");
    let mut content_type = None;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        let line = line.to_ascii_lowercase();
        if let Some(v) = line.strip_prefix("content-type: ") {
            content_type = Some(v.trim().to_string());
        }
        chunked |= line.trim() == "transfer-encoding: chunked";
    }
    assert_eq!(
        content_type.as_deref(),
        Some("text/event-stream; charset=utf-8")
    );
    assert!(chunked, "an event stream on HTTP/1.1 is chunked");

    // Also while the live view is open, other requests are answered.
    assert_eq!(json(addr, "/").status, 200);

    // The event committed after the connection, and not the one before it.
    append(&store, "cart-9", 1);
    let mut sse = Sse {
        reader,
        buffer: String::new(),
    };
    let frame = loop {
        let frame = sse.frame().expect("an event before the stream ends");
        if !frame.starts_with(':') {
            break frame;
        }
    };
    let id = frame
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("an id");
    let data = frame
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("data");
    let event: Value = serde_json::from_str(data).unwrap();
    assert_eq!(event["stream"], "cart-9");
    assert_eq!(
        id.parse::<u64>().unwrap(),
        event["position"].as_u64().unwrap()
    );
    assert_eq!(event["links"]["self"], "/streams/cart-9/0");
    let id = id.to_string();

    // A reconnect after that id starts after it.
    let mut sub = web::respond(
        &store,
        &http::Request::get("/live")
            .header("accept", "text/event-stream")
            .header("last-event-id", id.as_str())
            .body(())
            .unwrap(),
    )
    .into_body();
    let Body::Events(events) = &mut sub else {
        panic!("not an event stream")
    };
    assert!(events.next_event(Duration::from_millis(50)).is_none());
    append(&store, "cart-10", 1);
    let frame = events
        .next_event(Duration::from_secs(5))
        .expect("the next event");
    assert!(String::from_utf8(frame).unwrap().contains("\"cart-10\""));

    // Stopping the server ends the live view it serves: the response ends, within the read
    // timeout.
    let stopped = Instant::now();
    server.stop();
    assert!(stopped.elapsed() < Duration::from_secs(2));
    let mut rest = Vec::new();
    while let Some(frame) = sse.frame() {
        if !frame.starts_with(':') {
            rest.push(frame);
        }
    }
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert!(rest[0].contains("\"stream\":\"cart-10\""), "{rest:?}");
    assert!(request_fails(addr));
}

/// A chunked Server-Sent Events body, a frame at a time.
struct Sse {
    reader: BufReader<TcpStream>,
    buffer: String,
}

impl Sse {
    /// The next frame (without its blank line), or `None` at the end of the response.
    fn frame(&mut self) -> Option<String> {
        loop {
            if let Some((frame, rest)) = self.buffer.split_once("\n\n") {
                let frame = frame.to_string();
                self.buffer = rest.to_string();
                return Some(frame);
            }
            let mut size = String::new();
            self.reader
                .read_line(&mut size)
                .expect("a chunk within the timeout");
            let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).unwrap();
            if size == 0 {
                return None;
            }
            self.buffer
                .push_str(std::str::from_utf8(&chunk[..size]).unwrap());
        }
    }
}

/// Whether a request to a stopped server gets no answer.
fn request_fails(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return true;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 16];
    !matches!(s.read(&mut buf), Ok(n) if n > 0)
}

#[test]
fn respond_is_usable_without_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, "order-1", 2);
    let req = http::Request::get("/streams/order-1?limit=1")
        .header("accept", "application/json")
        .body(())
        .unwrap();
    let res = web::respond(&store, &req);
    assert_eq!(res.status(), 200);
    let Body::Full(bytes) = res.into_body() else {
        panic!("a full body")
    };
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["links"]["next"], "/streams/order-1?from=0&limit=1");
    let head = http::Request::head("/").body(()).unwrap();
    let res = web::respond(&store, &head);
    assert!(res.headers().contains_key("content-length"));
    assert!(matches!(res.body(), Body::Full(b) if b.is_empty()));
    // Refused by negotiation, a `HEAD` still has no body.
    let head = http::Request::head("/")
        .header("accept", "image/png")
        .body(())
        .unwrap();
    let res = web::respond(&store, &head);
    assert_eq!(res.status(), 406);
    assert!(res.headers().contains_key("content-length"));
    assert!(matches!(res.body(), Body::Full(b) if b.is_empty()));
    // An event stream ends when its store closes, at once rather than at its timeout.
    let live = http::Request::get("/live")
        .header("accept", "text/event-stream")
        .body(())
        .unwrap();
    let Body::Events(mut events) = web::respond(&store, &live).into_body() else {
        panic!("an event stream")
    };
    assert!(events.next_event(Duration::from_millis(20)).is_none() && !events.is_ended());
    let closed = Instant::now();
    store.close().unwrap();
    assert!(events.next_event(Duration::from_secs(10)).is_none());
    assert!(events.is_ended() && closed.elapsed() < Duration::from_secs(5));
    assert_eq!(events.next(), None);
    let res = web::respond(&store, &live);
    assert_eq!(res.status(), 503, "a closed store cannot be watched");
}

#[test]
fn a_dropped_server_stops_listening() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let server: Server = web::serve(store.clone(), "127.0.0.1:0").unwrap();
    let addr = server.addr();
    assert_eq!(json(addr, "/").status, 200);
    drop(server);
    assert!(request_fails(addr));
    // The address is free again.
    let again = web::serve(store, addr).unwrap();
    assert_eq!(json(again.addr(), "/").status, 200);
}

/// Every name a listing gives, page after page by its `next` links (JSON), `limit` at a time.
fn walk_names(addr: SocketAddr, first: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut at = Some(first.to_string());
    while let Some(target) = at {
        let page = json(addr, &target).json();
        for item in page["categories"].as_array().expect("categories") {
            names.push(item["name"].as_str().unwrap().to_string());
        }
        at = page["links"]["next"].as_str().map(str::to_string);
    }
    names
}

#[test]
fn every_category_is_reached_by_next_links_at_every_page_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // `-x` is in the category ``, which is not listed: pages must still come out full.
    for stream in ["-x", "a-1", "b-1", "c-1", "d-1", "e-1"] {
        append(&store, stream, 1);
    }
    let server = web::serve(store.clone(), "127.0.0.1:0").unwrap();
    let mut want: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
    want.sort();
    for limit in 1..=6 {
        let mut got = walk_names(server.addr(), &format!("/categories?limit={limit}"));
        got.sort();
        assert_eq!(got, want, "limit {limit}");
    }
}

#[test]
fn live_views_pipelined_on_one_connection_hold_up_no_other_client() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, "order-1", 1);
    let server = web::serve(store.clone(), "127.0.0.1:0").unwrap();
    let addr = server.addr();
    // More live views than the server has request threads, all behind one another on one
    // connection: each waits for the one before it, which never ends.
    let mut hog = TcpStream::connect(addr).unwrap();
    let one = format!("GET /live HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    hog.write_all(one.repeat(300).as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Another client is answered, promptly: the pipelined requests wait on their connection
    // and take no thread.
    let start = Instant::now();
    assert_eq!(json(addr, "/").status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // Once that connection is gone, its threads are given back within a keep-alive or two.
    drop(hog);
    let deadline = Instant::now() + Duration::from_secs(15);
    while json(addr, "/").status != 200 {
        assert!(Instant::now() < deadline, "the server never recovered");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The values of `key` in a page's `events`, then its link `rel`.
fn page_of(addr: SocketAddr, target: &str, key: &str, rel: &str) -> (Vec<u64>, Option<String>) {
    let page = json(addr, target).json();
    let values = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e[key].as_u64().expect("a number"))
        .collect();
    (values, page["links"][rel].as_str().map(str::to_string))
}

#[test]
fn walking_back_up_by_previous_links_shows_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, "cart-1", 45);
    let server = web::serve(store.clone(), "127.0.0.1:0").unwrap();
    let addr = server.addr();
    for (first, key, total) in [
        ("/streams/cart-1?limit=20", "number", 45),
        ("/streams/$all?limit=20", "position", 45),
        ("/categories/cart?limit=7", "number", 45),
    ] {
        let (_, last) = page_of(addr, first, key, "last");
        let mut at = last;
        let mut seen = Vec::new();
        while let Some(target) = at {
            let (values, previous) = page_of(addr, &target, key, "previous");
            seen.extend(values);
            at = previous;
        }
        let unique: HashSet<u64> = seen.iter().copied().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{first}: an event shown twice: {seen:?}"
        );
        assert_eq!(seen.len(), total, "{first}: {seen:?}");
    }
}

#[test]
fn deleted_tombstoned_and_truncated_streams_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, "gone-1", 3);
    store
        .delete_stream("gone-1", ExpectedVersion::Exact(2))
        .unwrap();
    append(&store, "dead-1", 2);
    store
        .tombstone_stream("dead-1", ExpectedVersion::Exact(1))
        .unwrap();
    append(&store, "cut-1", 45);
    store
        .set_stream_metadata(
            "cut-1",
            ExpectedVersion::NoStream,
            StreamMetadata {
                truncate_before: Some(30),
                ..Default::default()
            },
        )
        .unwrap();
    append(&store, "live-1", 2);
    append(&store, "old-1", 2);
    store
        .set_stream_metadata(
            "old-1",
            ExpectedVersion::NoStream,
            StreamMetadata {
                max_count: Some(0),
                ..Default::default()
            },
        )
        .unwrap();
    let server = web::serve(store.clone(), "127.0.0.1:0").unwrap();
    let addr = server.addr();

    let gone = json(addr, "/streams/gone-1");
    assert_eq!(gone.status, 200, "{}", gone.body);
    let v = gone.json();
    assert_eq!(v["state"], "deleted");
    assert_eq!(v["version"], 2);
    assert!(v["events"].as_array().unwrap().is_empty());
    assert!(v["links"].get("next").is_none() && v["links"].get("last").is_none());
    let page = html(addr, "/streams/gone-1");
    assert!(
        page.body.contains("This stream is deleted"),
        "{}",
        page.body
    );
    assert_eq!(json(addr, "/streams/gone-1/0").status, 404);

    let dead = json(addr, "/streams/dead-1").json();
    assert_eq!(dead["state"], "tombstoned");
    assert!(html(addr, "/streams/dead-1").body.contains("tombstoned"));
    assert_eq!(json(addr, "/streams/dead-1/1").status, 410);

    let cut = json(addr, "/streams/cut-1").json();
    assert_eq!(cut["state"], "truncated before 30");
    assert_eq!(cut["events"].as_array().unwrap().len(), 15);
    assert!(cut["links"].get("next").is_none() && cut["links"].get("last").is_none());
    assert!(html(addr, "/streams/cut-1")
        .body
        .contains("truncated before 30"));
    assert_eq!(json(addr, "/streams/cut-1?from=29").status, 404);
    let first = json(addr, "/streams/cut-1/30").json();
    assert!(first["links"].get("previous").is_none(), "{first}");
    assert_eq!(json(addr, "/streams/cut-1/29").status, 404);

    assert_eq!(json(addr, "/streams/live-1").json()["state"], "present");
    assert_eq!(json(addr, "/streams/old-1").json()["state"], "expired");
    assert!(html(addr, "/streams/old-1").body.contains("expired"));
    // Categories and types show only what is still read.
    let cat = json(addr, "/categories/gone").json();
    assert!(cat["events"].as_array().unwrap().is_empty(), "{cat}");
    let cut_cat = json(addr, "/categories/cut").json();
    let numbers: Vec<u64> = cut_cat["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (30..45).rev().collect::<Vec<_>>());
    server.stop();
}
