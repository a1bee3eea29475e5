//! The view on a server of its own: tiny_http, a thread per request.
//!
//! tiny_http parses requests on its own threads and hands them over one at a time; each is then
//! answered on a thread of its own, so that a live view (a response that never ends) holds up
//! nothing else. Threads are capped: past the cap a request is answered `503` at once.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{respond, Body, KEEP_ALIVE};
use crate::{Error, Result, Store};

/// Requests answered at once, live views included.
const MAX_THREADS: usize = 256;
/// How often a waiting thread looks whether the server is stopping.
const TICK: Duration = Duration::from_millis(100);

/// A running HTTP view of a store, from [`serve`]. Stops when [`stop`](Self::stop)ped or
/// dropped.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    stopping: AtomicBool,
    /// Request threads running.
    active: AtomicUsize,
    /// Threads answering `503` running.
    refusers: AtomicUsize,
    /// The connections with a request being answered, and the requests pipelined behind it.
    connections: parking_lot::Mutex<
        std::collections::HashMap<
            std::net::SocketAddr,
            std::collections::VecDeque<tiny_http::Request>,
        >,
    >,
}

/// Serves the view of `store` on `addr` (use port 0 for any free port, and a loopback address
/// unless the store's events may be shown to the network: the view has no access control).
///
/// Returns once the socket listens; requests are answered on background threads until the
/// [`Server`] is stopped or dropped. An address that cannot be bound is [`Error::Io`].
pub fn serve(store: Arc<Store>, addr: impl ToSocketAddrs) -> Result<Server> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| Error::io("binding the HTTP view's socket for", store.path(), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the HTTP view's address for", store.path(), e))?;
    let http = tiny_http::Server::from_listener(listener, None).map_err(|e| {
        Error::io(
            "starting the HTTP view of",
            store.path(),
            std::io::Error::other(e.to_string()),
        )
    })?;
    let shared = Arc::new(Shared {
        stopping: AtomicBool::new(false),
        active: AtomicUsize::new(0),
        refusers: AtomicUsize::new(0),
        connections: Default::default(),
    });
    let s = shared.clone();
    let dir = store.path().to_path_buf();
    let accept = std::thread::Builder::new()
        .name("eventjournal-http".into())
        .spawn(move || accept_loop(http, store, s))
        .map_err(|e| Error::io("starting the HTTP view's thread for", &dir, e))?;
    Ok(Server {
        addr,
        shared,
        accept: Some(accept),
    })
}

impl Server {
    /// The address the server listens on (with the port chosen, if 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting requests, ends live views, and waits (up to a few seconds) for the
    /// requests being answered to finish.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        // Request threads notice `stopping` within a tick; a client that stopped reading can
        // hold one in a write, which is not waited for beyond this.
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.shared.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

fn accept_loop(http: tiny_http::Server, store: Arc<Store>, shared: Arc<Shared>) {
    while !shared.stopping.load(Ordering::SeqCst) {
        let req = match http.recv_timeout(TICK) {
            Ok(Some(req)) => req,
            Ok(None) => continue,
            Err(e) => {
                // Not expected while the server lives; a pause keeps a lasting failure from
                // spinning.
                tracing::warn!(error = %e, "HTTP view: receiving a request failed");
                std::thread::sleep(TICK);
                continue;
            }
        };
        // A request pipelined behind one still being answered on its connection cannot be
        // answered before it (a live view never is): it waits in that connection's queue, for
        // the thread already there, rather than take a thread of its own.
        let peer = req.remote_addr().copied();
        if let Some(peer) = peer {
            let mut queues = shared.connections.lock();
            if let Some(queue) = queues.get_mut(&peer) {
                if queue.len() < MAX_PIPELINED {
                    queue.push_back(req);
                } else {
                    drop(queues);
                    tracing::warn!("HTTP view: too many requests pipelined; one dropped");
                    drop(req.into_writer());
                }
                continue;
            }
            queues.insert(peer, std::collections::VecDeque::new());
        }
        if shared.active.fetch_add(1, Ordering::SeqCst) >= MAX_THREADS {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            if let Some(peer) = peer {
                shared.connections.lock().remove(&peer);
            }
            refuse(req, &shared);
            continue;
        }
        let (store, s) = (store.clone(), shared.clone());
        let spawned = std::thread::Builder::new()
            .name("eventjournal-http-request".into())
            .spawn(move || {
                // Counted down however the thread ends, a panic included, so that `stop` does
                // not wait for a thread that is gone.
                let _done = Done(&s.active);
                let mut next = Some(req);
                while let Some(req) = next.take() {
                    answer(&store, req, &s);
                    let Some(peer) = peer else { break };
                    let mut queues = s.connections.lock();
                    next = queues.get_mut(&peer).and_then(|q| q.pop_front());
                    if next.is_none() {
                        queues.remove(&peer);
                    }
                }
            });
        if let Err(e) = spawned {
            // The request went with the closure; its client sees the connection close.
            shared.active.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(error = %e, "HTTP view: starting a request thread failed");
        }
    }
}

/// Requests that may wait behind the one being answered on their connection.
const MAX_PIPELINED: usize = 16;

/// Threads that may answer `503` to requests over [`MAX_THREADS`] at once.
const MAX_REFUSERS: usize = 8;

/// Answers `503` to a request over the limit, on a thread of its own: a response on a
/// connection waits for the responses to the requests before it on that connection, and one of
/// those may be a live view that never ends, which must not hold up the accept loop. With
/// every refusing thread busy, the request is dropped without an answer (dropping its writer
/// does not wait; dropping the request would, to write a `500`).
fn refuse(req: tiny_http::Request, shared: &Arc<Shared>) {
    if shared.refusers.fetch_add(1, Ordering::SeqCst) >= MAX_REFUSERS {
        shared.refusers.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!("HTTP view: too many requests at once; one dropped unanswered");
        drop(req.into_writer());
        return;
    }
    let s = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("eventjournal-http-refuse".into())
        .spawn(move || {
            let _done = Done(&s.refusers);
            let _ = req.respond(
                tiny_http::Response::from_string("too many requests at once\n")
                    .with_status_code(503),
            );
        });
    if spawned.is_err() {
        shared.refusers.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Done<'a>(&'a AtomicUsize);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The tiny_http request as an `http::Request`; `None` if its target or a header is not one
/// the `http` crate takes.
fn convert(req: &tiny_http::Request) -> Option<http::Request<()>> {
    let mut b = http::Request::builder()
        .method(http::Method::from_bytes(req.method().as_str().as_bytes()).ok()?)
        .uri(req.url());
    for h in req.headers() {
        b = b.header(h.field.as_str().as_str(), h.value.as_str());
    }
    b.body(()).ok()
}

fn answer(store: &Store, req: tiny_http::Request, shared: &Shared) {
    let Some(request) = convert(&req) else {
        let _ = req.respond(
            tiny_http::Response::from_string("malformed request target or header\n")
                .with_status_code(400),
        );
        return;
    };
    let (parts, body) = respond(store, &request).into_parts();
    match body {
        Body::Full(bytes) => {
            let len = parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(bytes.len());
            let mut res = tiny_http::Response::new(
                parts.status.as_u16().into(),
                Vec::new(),
                std::io::Cursor::new(bytes),
                Some(len),
                None,
            );
            for (name, value) in &parts.headers {
                if name == http::header::CONTENT_LENGTH {
                    continue;
                }
                if let Ok(h) = tiny_http::Header::from_bytes(name.as_str(), value.as_bytes()) {
                    res.add_header(h);
                }
            }
            if let Err(e) = req.respond(res) {
                tracing::debug!(error = %e, "HTTP view: writing a response failed");
            }
        }
        Body::Events(mut events) => {
            // tiny_http would buffer a streamed body; the raw connection is written and flushed
            // frame by frame instead. Chunked, on HTTP/1.1, so that the end of the stream (the
            // server stopping, the store closing) is the end of a response a client sees, and
            // the connection can carry the next request.
            let chunked = *req.http_version() >= tiny_http::HTTPVersion(1, 1);
            let reason = parts.status.canonical_reason().unwrap_or("OK");
            let mut head = format!("HTTP/1.1 {} {reason}\r\n", parts.status.as_str());
            head.push_str(if chunked {
                "Transfer-Encoding: chunked\r\n"
            } else {
                "Connection: close\r\n"
            });
            for (name, value) in &parts.headers {
                if let Ok(v) = value.to_str() {
                    head.push_str(&format!("{name}: {v}\r\n"));
                }
            }
            head.push_str("\r\n");
            let mut w = req.into_writer();
            let send = |w: &mut dyn Write, bytes: &[u8]| -> std::io::Result<()> {
                if chunked {
                    write!(w, "{:x}\r\n", bytes.len())?;
                    w.write_all(bytes)?;
                    w.write_all(b"\r\n")?;
                } else {
                    w.write_all(bytes)?;
                }
                w.flush()
            };
            if w.write_all(head.as_bytes()).is_err() || send(&mut w, b": connected\n\n").is_err() {
                return;
            }
            let mut quiet_since = Instant::now();
            while !shared.stopping.load(Ordering::SeqCst) {
                let frame = match events.next_event(TICK) {
                    Some(frame) => frame,
                    None if events.is_ended() => break,
                    // Writing to a client that went away fails: that ends the thread.
                    None if quiet_since.elapsed() >= KEEP_ALIVE => b": keep-alive\n\n".to_vec(),
                    None => continue,
                };
                if send(&mut w, &frame).is_err() {
                    return;
                }
                quiet_since = Instant::now();
            }
            if chunked {
                let _ = w.write_all(b"0\r\n\r\n").and_then(|()| w.flush());
            }
        }
    }
}
