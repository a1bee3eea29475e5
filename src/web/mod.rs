//! A read-only hypermedia view of a store over HTTP (feature `http`).
//!
//! Every resource answers the same URL as HTML to a browser and as JSON to a program, chosen by
//! the request's `Accept` header; the JSON carries its links as data (`"links": {"next": ..}`)
//! so that a client follows them instead of building URLs. Links come from the store's state:
//! pages run newest first, `next` (older) and `last` (the oldest page) are there only when older
//! events exist, `previous` (newer) and `first`/`head` (the newest page, which follows new
//! events) only when the page is not already at the head. A one-page stream has no paging links.
//!
//! | path | resource |
//! |---|---|
//! | `/` | the store: head position, stream count, categories, event types, stats, links to all below |
//! | `/streams?after=NAME&limit=N` | stream names, a page at a time, in the store's listing order |
//! | `/categories?after=NAME&limit=N`, `/types?after=..` | category and event type names, likewise |
//! | `/streams/NAME?from=N&limit=N` | a stream's events, newest first, from event number `from` down |
//! | `/streams/NAME/N` | one event: number, position, id, type, time, metadata, data |
//! | `/streams/$all?from=P&limit=N` | `$all`, newest first, from just before position `P` |
//! | `/categories/NAME?from=N&limit=N` | a category's events, newest first (`from` counts them from 0) |
//! | `/types/NAME?from=N&limit=N` | an event type's events, likewise |
//! | `/live` | events as they are committed: a page that updates itself, or Server-Sent Events |
//!
//! `limit` is 1 to [`MAX_LIMIT`] ([`DEFAULT_LIMIT`] if absent). Names in paths are
//! percent-encoded UTF-8 (`/streams/a%2Fb` is the stream `a/b`).
//!
//! [`respond`] is the whole view as a function from an [`http::Request`] to an
//! [`http::Response`], to mount beside an application's own routes on any server; [`serve`]
//! runs it on a small threaded server of its own.
//!
//! ```no_run
//! use std::sync::Arc;
//! use eventjournal::{web, Options, Store};
//!
//! let store = Arc::new(Store::open("data", Options::default())?);
//! let server = web::serve(store, "127.0.0.1:8080")?;
//! println!("http://{}", server.addr());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Mounting on another server is converting its request to an `http::Request<()>` and the
//! [`Body`] back. For example, for every path under `/journal` of an application:
//!
//! ```
//! use eventjournal::{web, EventData, ExpectedVersion, Options, Store};
//!
//! # let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path(), Options::default())?;
//! store.append("order-7", ExpectedVersion::NoStream, [EventData::new("Placed", "{}")])?;
//!
//! // What the application's server received, as the `http` crate's types (most Rust servers
//! // use them already), its `/journal` prefix taken off.
//! let req = http::Request::get("/streams/order-7")
//!     .header("accept", "application/json")
//!     .body(())?;
//! let res = web::respond(&store, &req);
//! assert_eq!(res.status(), 200);
//! match res.into_body() {
//!     // A complete body: hand the bytes to the server.
//!     web::Body::Full(bytes) => assert!(bytes.starts_with(b"{")),
//!     // Server-Sent Events (only from `/live`): frames to write and flush as they come, from
//!     // a thread that may block (on an async server, `spawn_blocking`).
//!     web::Body::Events(events) => for _frame in events { /* write, flush; stop on error */ },
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The view links to absolute paths (`/streams/..`): an application that mounts it under a
//! prefix rewrites them, or mounts it at the root of a host or port of its own.

mod html;
mod negotiate;
mod pages;
mod server;
mod url;

use std::time::{Duration, Instant};

use crate::{RecordedEvent, Store, Subscription, SubscriptionItem};

pub use html::escape;
pub use server::{serve, Server};
pub use url::{DEFAULT_LIMIT, MAX_LIMIT};

use negotiate::Format;
use url::Query;

/// The body of a response from [`respond`].
pub enum Body {
    /// The whole body (empty for `HEAD` and for statuses without one).
    Full(Vec<u8>),
    /// Server-Sent Events as they happen: each item is one frame to write and flush.
    Events(EventStream),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Full(b) => write!(f, "Body::Full({} bytes)", b.len()),
            Body::Events(_) => f.write_str("Body::Events(..)"),
        }
    }
}

/// Committed events as Server-Sent Events frames (`id:` the event's position, `data:` the event
/// as JSON, as the live resource shows it).
///
/// As an [`Iterator`] it blocks until the next event, yielding a comment frame after every
/// [`KEEP_ALIVE`] without one (so a server notices a client that went away when writing it
/// fails), and ends when the store closes.
pub struct EventStream {
    sub: Subscription,
    ended: bool,
}

/// How long an [`EventStream`] iterator waits for an event before it yields a keep-alive
/// comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);

impl EventStream {
    /// The next event's frame if one is committed within `wait`; `None` if none was, or the
    /// stream has ended (see [`is_ended`](Self::is_ended)).
    pub fn next_event(&mut self, wait: Duration) -> Option<Vec<u8>> {
        if self.ended {
            return None;
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.sub.recv_timeout(left) {
                Ok(Some(SubscriptionItem::Event(e))) => return Some(sse_frame(&e)),
                Ok(Some(SubscriptionItem::Checkpoint(_))) => continue,
                Ok(None) => {
                    // A subscription returns early, with nothing, only when its store closed:
                    // it waits out its whole time otherwise.
                    if Instant::now() < deadline {
                        self.ended = true;
                    }
                    return None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "live view: the subscription failed");
                    self.ended = true;
                    return None;
                }
            }
        }
    }

    /// Whether no event will come any more: the store closed, or a record could not be read.
    pub fn is_ended(&self) -> bool {
        self.ended
    }
}

impl Iterator for EventStream {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        match self.next_event(KEEP_ALIVE) {
            Some(frame) => Some(frame),
            None if self.ended => None,
            None => Some(b": keep-alive\n\n".to_vec()),
        }
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("position", &self.sub.position())
            .field("ended", &self.ended)
            .finish()
    }
}

fn sse_frame(e: &RecordedEvent) -> Vec<u8> {
    // serde_json writes no raw newlines, so the event is one `data:` line.
    format!(
        "id: {}\ndata: {}\n\n",
        e.position().0,
        pages::event_summary_json(e)
    )
    .into_bytes()
}

/// A link of a resource: its relation (`next`, `first`, ..; several separated by spaces, as in
/// HTML), target and a human title.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub rel: String,
    pub href: String,
    pub title: String,
}

impl Link {
    pub fn new(rel: &str, href: String, title: impl Into<String>) -> Link {
        Link {
            rel: rel.into(),
            href,
            title: title.into(),
        }
    }
}

/// A resource ready to be shown either way: its links and fields as JSON, and its content as
/// HTML.
pub(crate) struct Resource {
    pub title: String,
    pub links: Vec<Link>,
    pub json: serde_json::Map<String, serde_json::Value>,
    pub html: String,
    /// A script for the HTML page (the live view's), run under the page's nonce.
    pub script: Option<&'static str>,
}

/// What a route produced.
pub(crate) enum Outcome {
    Page(Resource),
    Events(EventStream),
}

/// Answers `req` from `store`: the whole view, read-only.
///
/// `GET` and `HEAD` are served (`HEAD` with the headers `GET` would have); any other method is
/// `405` with `Allow`. Names, positions and page sizes in the URL are checked: what does not
/// parse or is out of range is `400`, a stream or event that does not exist `404`, and a request
/// whose `Accept` allows neither HTML nor JSON `406`. Errors are shown in the negotiated format.
pub fn respond(store: &Store, req: &http::Request<()>) -> http::Response<Body> {
    let head = req.method() == http::Method::HEAD;
    if req.method() != http::Method::GET && !head {
        let mut res = plain(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "this view is read-only: GET and HEAD only\n",
        );
        res.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD"),
        );
        return res;
    }
    // Every answer from here varies by `Accept`, and a `HEAD` gets each without its body.
    let mut res = negotiated(store, req);
    vary(&mut res);
    if head {
        head_only(&mut res);
    }
    res
}

/// The answer to a `GET` in the format `Accept` allows (`406` if none).
fn negotiated(store: &Store, req: &http::Request<()>) -> http::Response<Body> {
    let accept = header(req, http::header::ACCEPT);
    let route = pages::route(req.uri().path());
    let offered: &[Format] = if matches!(route, Ok(pages::Route::Live)) {
        &[Format::Html, Format::Json, Format::EventStream]
    } else {
        &[Format::Html, Format::Json]
    };
    let Some(format) = negotiate::choose(accept.as_deref(), offered) else {
        return plain(
            http::StatusCode::NOT_ACCEPTABLE,
            &format!(
                "this resource is available as {}\n",
                offered
                    .iter()
                    .map(|f| f.media_type())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    };
    let last_event_id = header(req, http::header::HeaderName::from_static("last-event-id"));
    let outcome = route.and_then(|route| {
        let query = Query::parse(req.uri().query())?;
        pages::build(store, route, &query, format, last_event_id.as_deref())
    });
    match outcome {
        Ok(Outcome::Page(r)) => render(http::StatusCode::OK, r, format),
        Ok(Outcome::Events(stream)) => {
            let mut res = http::Response::new(Body::Events(stream));
            let h = res.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(Format::EventStream.content_type()),
            );
            h.insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-cache"),
            );
            res
        }
        Err(p) => render(p.status, pages::problem(&p), format),
    }
}

/// The answer to a `HEAD`: the length `GET` would send, without the body; an event stream has
/// none to announce.
fn head_only(res: &mut http::Response<Body>) {
    if let Body::Full(b) = res.body() {
        let len = b.len();
        res.headers_mut()
            .insert(http::header::CONTENT_LENGTH, len.into());
    }
    *res.body_mut() = Body::Full(Vec::new());
}

fn header(req: &http::Request<()>, name: impl http::header::AsHeaderName) -> Option<String> {
    // Several `Accept` headers are one list (RFC 9110, 5.3).
    let values: Vec<&str> = req
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

fn vary(res: &mut http::Response<Body>) {
    res.headers_mut()
        .insert(http::header::VARY, http::HeaderValue::from_static("Accept"));
}

fn plain(status: http::StatusCode, text: &str) -> http::Response<Body> {
    let mut res = http::Response::new(Body::Full(text.as_bytes().to_vec()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

fn render(status: http::StatusCode, r: Resource, format: Format) -> http::Response<Body> {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let body = match format {
        Format::Json | Format::EventStream => {
            let mut json = r.json;
            let mut links = serde_json::Map::new();
            for l in &r.links {
                for rel in l.rel.split_whitespace() {
                    links.insert(rel.to_string(), l.href.clone().into());
                }
            }
            json.insert("links".into(), links.into());
            let mut bytes = serde_json::to_vec_pretty(&serde_json::Value::Object(json))
                .unwrap_or_else(|_| b"{}".to_vec());
            bytes.push(b'\n');
            bytes
        }
        Format::Html => html::page(&r.title, &r.links, &r.html, r.script, &nonce).into_bytes(),
    };
    let mut res = http::Response::new(Body::Full(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    let content_type = if format == Format::EventStream {
        // An error answered to an EventSource: JSON says what went wrong.
        Format::Json.content_type()
    } else {
        format.content_type()
    };
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    // Only the page's own style and script run, and a script may only connect back here.
    if let Ok(csp) = http::HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )) {
        h.insert(http::header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    res
}
