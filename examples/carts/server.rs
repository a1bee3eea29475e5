//! The accept loop, the connections, and the upgrade: handing the listening socket, the
//! connections that have not sent a byte yet, and the store's writer role to a new process
//! without refusing, resetting or failing a single request.
//!
//! The old process, asked over `upgrade.sock` in the data directory:
//! 1. stops calling `accept` (connections arriving from now on wait in the socket's backlog,
//!    which the new process will own too: it is the same socket);
//! 2. lets every request that has started arrive finish and be answered; a connection with no
//!    byte received yet is set aside rather than waited for (a browser opens such sockets ahead
//!    of need, and might not use them for a long time);
//! 3. drains its hosts, so no actor stays active in two processes;
//! 4. sends the listening socket and the set-aside connections (`SCM_RIGHTS`), then `D`;
//! 5. waits for the new process to say it took the store over and accepts, then exits.
//!
//! The new process opened the store as a follower before asking; on `D` it calls `take_over`,
//! starts accepting on the inherited socket and serves the set-aside connections.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use eventjournal::Store;

use crate::app::{handle, Shop};
use crate::http::{linger, read_request, write_response, ReadError, Response};

/// Set by SIGTERM or SIGINT: stop gracefully.
static SHUTDOWN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SHUTDOWN.store(true, Ordering::SeqCst);
}

/// How long a connection may stay silent before it is closed (outside an upgrade).
const IDLE: Duration = Duration::from_secs(30);
/// How long a request that started arriving may take to arrive whole.
const READ: Duration = Duration::from_secs(10);

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process, so the test can line up the
/// moments an upgrade began and ended with its own request timings.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What the connections share with the process's control thread.
struct Gate {
    /// No new connection is taken and silent ones are set aside.
    closing: AtomicBool,
    /// Connections taken and not yet answered or set aside.
    open: Mutex<usize>,
    idle: Condvar,
    set_aside: Mutex<Vec<TcpStream>>,
    /// An eventfd, readable while closing: it wakes every poll at once, so that stopping
    /// costs no polling interval.
    wake: OwnedFd,
}

impl Gate {
    fn new(open: usize) -> std::io::Result<Gate> {
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Gate {
            closing: AtomicBool::new(false),
            open: Mutex::new(open),
            idle: Condvar::new(),
            set_aside: Mutex::new(Vec::new()),
            // SAFETY: just created, owned by nothing else.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to the eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
    }

    fn reopen(&self) {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer; resets the eventfd to unreadable.
        unsafe { libc::read(self.wake.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        self.closing.store(false, Ordering::SeqCst);
    }

    /// Waits up to `ms` for `fd` to become readable; true if it did. Returns early (false)
    /// when the gate closes.
    fn readable(&self, fd: RawFd, ms: i32) -> bool {
        let mut fds = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is an array of two valid pollfds.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        ready > 0 && fds[0].revents != 0
    }

    fn done(&self) {
        let mut open = self.open.lock().unwrap();
        *open -= 1;
        if *open == 0 {
            self.idle.notify_all();
        }
    }
}

pub struct Server {
    listener: Arc<TcpListener>,
    store: Arc<Store>,
    shop: Arc<Shop>,
    gate: Arc<Gate>,
    accepting: Option<std::thread::JoinHandle<()>>,
    upgrade_path: PathBuf,
}

pub fn upgrade_socket(data: &Path) -> PathBuf {
    data.join("upgrade.sock")
}

impl Server {
    /// Serves `listener` (and `inherited` connections) with `store`, answering upgrade requests
    /// on `upgrade.sock` in `data`.
    pub fn start(
        data: &Path,
        listener: TcpListener,
        store: Store,
        inherited: Vec<TcpStream>,
    ) -> std::io::Result<Server> {
        listener.set_nonblocking(true)?;
        let store = Arc::new(store);
        let shop = Arc::new(Shop::new(store.clone()));
        let gate = Arc::new(Gate::new(inherited.len())?);
        for stream in inherited {
            spawn_connection(stream, shop.clone(), gate.clone());
        }
        let listener = Arc::new(listener);
        let accepting = {
            let (listener, shop, gate) = (listener.clone(), shop.clone(), gate.clone());
            std::thread::spawn(move || accept_loop(&listener, &shop, &gate))
        };
        Ok(Server {
            listener,
            store,
            shop,
            gate,
            accepting: Some(accepting),
            upgrade_path: upgrade_socket(data),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers upgrade requests and signals until one ends this process.
    pub fn run(mut self) -> std::io::Result<()> {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
            libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        }
        loop {
            let upgrades = self.listen_for_upgrades()?;
            loop {
                if SHUTDOWN.load(Ordering::SeqCst) {
                    return self.stop();
                }
                match upgrades.recv_timeout(Duration::from_millis(50)) {
                    Ok(conn) => {
                        if self.hand_over(conn) {
                            return Ok(());
                        }
                        break;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                }
            }
        }
    }

    /// Answers on `upgrade.sock`; the first connection that asks for an upgrade comes out of
    /// the channel.
    fn listen_for_upgrades(&self) -> std::io::Result<mpsc::Receiver<UnixStream>> {
        // The path may hold the socket of the process this one took over from, of one that
        // crashed, or this process's own from an upgrade that failed: none answers any more.
        let _ = std::fs::remove_file(&self.upgrade_path);
        let upgrades = UnixListener::bind(&self.upgrade_path)?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in upgrades.incoming() {
                let Ok(conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut line = String::new();
                let mut reader = BufReader::new(&conn);
                if reader.read_line(&mut line).is_ok() && line.trim() == "UPGRADE" {
                    let _ = tx.send(conn);
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// A graceful stop: the requests started are answered, the rest of the backlog is not.
    fn stop(mut self) -> std::io::Result<()> {
        self.quiesce();
        // Nobody takes these over: closing them is all there is to do.
        self.gate.set_aside.lock().unwrap().clear();
        let _ = std::fs::remove_file(&self.upgrade_path);
        self.drain_hosts();
        self.store.close().map_err(std::io::Error::other)?;
        println!("stopped");
        Ok(())
    }

    /// Stops accepting and waits until every connection is answered or set aside.
    fn quiesce(&mut self) {
        self.gate.close();
        if let Some(t) = self.accepting.take() {
            let _ = t.join();
        }
        let mut open = self.gate.open.lock().unwrap();
        while *open > 0 {
            open = self.gate.idle.wait(open).unwrap();
        }
    }

    fn drain_hosts(&self) {
        let carts = self.shop.carts.drain();
        let stock = self.shop.stock.drain();
        if carts.failed_events + stock.failed_events > 0 {
            eprintln!(
                "draining lost {} unconfirmed events",
                carts.failed_events + stock.failed_events
            );
        }
    }

    /// Hands the sockets and the store to the process on `conn`; true once it has them. If
    /// it fails before taking the store over, this process takes up serving again (false).
    fn hand_over(&mut self, conn: UnixStream) -> bool {
        let asked = now_ns();
        self.quiesce();
        self.drain_hosts();
        let set_aside = std::mem::take(&mut *self.gate.set_aside.lock().unwrap());
        let parked = set_aside.len();
        let mut said = String::new();
        let exchange = (|| -> std::io::Result<()> {
            send_fd(&conn, b'L', Some(self.listener.as_raw_fd()))?;
            for stream in &set_aside {
                send_fd(&conn, b'C', Some(stream.as_raw_fd()))?;
            }
            send_fd(&conn, b'D', None)?;
            // Our copies of the sockets stay open until the new process has them for good.
            conn.set_read_timeout(Some(Duration::from_secs(30)))?;
            BufReader::new(&conn).read_line(&mut said)?;
            Ok(())
        })();
        let handed = now_ns();
        if exchange.is_ok() && said.trim() == "OK" {
            drop(set_aside);
            // The store was handed over through `take_over`: closing it now changes nothing.
            let _ = self.store.close();
            println!(
                "handed over: {parked} unstarted connections passed on, {:.2} ms from the \
                 request to the new process's answer",
                (handed - asked) as f64 / 1e6
            );
            return true;
        }
        // Still the writer? A handed-over store refuses every call.
        if let Err(e) = self.store.stream_version("stock-print") {
            eprintln!("the upgrade failed after the store was handed over ({e}); exiting");
            std::process::exit(1);
        }
        eprintln!(
            "the upgrade failed ({}); serving on",
            match exchange {
                Err(e) => e.to_string(),
                Ok(()) => format!("the new process said {said:?}"),
            }
        );
        self.resume(set_aside);
        false
    }

    /// Serves again after an upgrade that did not happen: new hosts (the drained ones refuse
    /// calls for good), the accept loop, and the connections set aside.
    fn resume(&mut self, set_aside: Vec<TcpStream>) {
        self.shop = Arc::new(Shop::new(self.store.clone()));
        self.gate.reopen();
        *self.gate.open.lock().unwrap() += set_aside.len();
        for stream in set_aside {
            spawn_connection(stream, self.shop.clone(), self.gate.clone());
        }
        let (listener, shop, gate) = (self.listener.clone(), self.shop.clone(), self.gate.clone());
        self.accepting = Some(std::thread::spawn(move || {
            accept_loop(&listener, &shop, &gate)
        }));
    }
}

fn accept_loop(listener: &TcpListener, shop: &Arc<Shop>, gate: &Arc<Gate>) {
    while !gate.closing.load(Ordering::SeqCst) {
        if !gate.readable(listener.as_raw_fd(), 1000) {
            continue;
        }
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(false).is_err() {
                        continue;
                    }
                    *gate.open.lock().unwrap() += 1;
                    spawn_connection(stream, shop.clone(), gate.clone());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
            if gate.closing.load(Ordering::SeqCst) {
                return;
            }
        }
    }
}

fn spawn_connection(stream: TcpStream, shop: Arc<Shop>, gate: Arc<Gate>) {
    std::thread::spawn(move || {
        serve_connection(stream, &shop, &gate);
    });
}

/// Waits for the first byte of a request; returns false if the connection was set aside (the
/// process is closing) or given up on.
fn first_byte(stream: &TcpStream, gate: &Gate) -> bool {
    let started = Instant::now();
    loop {
        if gate.readable(stream.as_raw_fd(), 1000) {
            return true;
        }
        if gate.closing.load(Ordering::SeqCst) {
            return false;
        }
        if started.elapsed() > IDLE {
            return false;
        }
    }
}

fn serve_connection(mut stream: TcpStream, shop: &Shop, gate: &Gate) {
    if !first_byte(&stream, gate) {
        if gate.closing.load(Ordering::SeqCst) {
            // Nothing was read from it, so the next process can serve it whole.
            gate.set_aside.lock().unwrap().push(stream);
        }
        gate.done();
        return;
    }
    let _ = stream.set_read_timeout(Some(READ));
    let response = match read_request(&mut stream) {
        Ok(req) => {
            // A panic in a handler must not take the process (or an upgrade's wait) with it.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(shop, &req)))
                .unwrap_or_else(|_| Response::text(500, "the server failed on this request"))
        }
        Err(ReadError::Gone) => {
            gate.done();
            return;
        }
        Err(ReadError::Bad(status, message)) => Response::text(status, &message),
    };
    // Counted as answered once the response is written: the lingering after it only waits
    // for the client to close.
    let mut response = response;
    // Which process answered: the tests tell the old process from the new one by it.
    response
        .headers
        .push(("X-Process-Id", std::process::id().to_string()));
    let written = write_response(&mut stream, &response);
    gate.done();
    if written {
        linger(&mut stream);
    }
}

/// Sends one byte, `tag`, with `fd` attached (`SCM_RIGHTS`) if given.
fn send_fd(sock: &UnixStream, tag: u8, fd: Option<RawFd>) -> std::io::Result<()> {
    let mut byte = [tag];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // u64s, for the alignment a cmsghdr needs.
    let mut control = [0u64; 8];
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        let int = std::mem::size_of::<libc::c_int>() as u32;
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(int) } as _;
        // SAFETY: the control buffer is larger than CMSG_SPACE(int) and aligned, so the first
        // header and its data lie within it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(int) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd);
        }
    }
    // SAFETY: `msg` points at live buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n == 1 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Receives one tagged byte and the descriptor attached to it, if any.
fn recv_fd(sock: &UnixStream) -> std::io::Result<(u8, Option<RawFd>)> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 8];
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points at live buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the old process closed the upgrade connection",
        ));
    }
    let mut fd = None;
    // SAFETY: the kernel filled `msg_control` up to `msg_controllen`; the CMSG macros walk it
    // within those bounds.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if !cmsg.is_null()
            && (*cmsg).cmsg_level == libc::SOL_SOCKET
            && (*cmsg).cmsg_type == libc::SCM_RIGHTS
        {
            fd = Some(std::ptr::read_unaligned(
                libc::CMSG_DATA(cmsg).cast::<libc::c_int>(),
            ));
        }
    }
    Ok((byte[0], fd))
}

/// What a new process receives from the one it upgrades.
pub struct Inherited {
    pub listener: TcpListener,
    pub connections: Vec<TcpStream>,
    /// The upgrade connection, to say "OK" on once the store is taken over.
    pub conn: UnixStream,
    pub asked_ns: u64,
}

/// Asks the running process to hand over, and receives its sockets once it has drained.
pub fn request_upgrade(data: &Path) -> std::io::Result<Inherited> {
    let path = upgrade_socket(data);
    let mut conn = UnixStream::connect(&path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("no running server answers on {}: {e}", path.display()),
        )
    })?;
    let asked_ns = now_ns();
    conn.write_all(b"UPGRADE\n")?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut listener = None;
    let mut connections = Vec::new();
    loop {
        let (tag, fd) = recv_fd(&conn)?;
        // SAFETY: each descriptor arrived with this message and belongs to nothing else here.
        match (tag, fd) {
            (b'L', Some(fd)) => listener = Some(unsafe { TcpListener::from_raw_fd(fd) }),
            (b'C', Some(fd)) => connections.push(unsafe { TcpStream::from_raw_fd(fd) }),
            (b'D', None) => break,
            (tag, _) => {
                return Err(std::io::Error::other(format!(
                    "unexpected upgrade message {tag}"
                )))
            }
        }
    }
    let listener = listener.ok_or_else(|| std::io::Error::other("no listening socket received"))?;
    for c in &connections {
        c.set_nonblocking(false)?;
    }
    Ok(Inherited {
        listener,
        connections,
        conn,
        asked_ns,
    })
}
