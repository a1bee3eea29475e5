//! A headless Chromium driven over the DevTools protocol through a pipe
//! (`--remote-debugging-pipe`: the browser reads NUL-separated JSON commands on its fd 3 and
//! writes replies and events on its fd 4), so that the browser tests need no WebSocket client and
//! no crate that downloads the protocol's description at build time.
//!
//! The browser is found as `$EVJ_CHROMIUM`, else `chromium` or `chromium-browser` on the `PATH`;
//! `.ci/run` installs the Debian package when none is there.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long any one step (a command's reply, a page load, a DOM condition) may take.
pub const STEP: Duration = Duration::from_secs(20);

/// A running headless browser with one page attached.
pub struct Browser {
    child: Child,
    to_browser: File,
    replies: Receiver<Value>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

/// The browser executable.
pub fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("EVJ_CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "no Chromium found: install the `chromium` package (.ci/run does) or set EVJ_CHROMIUM \
         to the browser's path"
    );
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 returns.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both were just created and are owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    /// Starts the browser with a blank page of `width` × `height` pixels.
    pub fn start(width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let (cmd_read, cmd_write) = pipe();
        let (out_read, out_write) = pipe();
        let (cmd_fd, out_fd) = (cmd_read.as_raw_fd(), out_write.as_raw_fd());
        let mut command = Command::new(chromium());
        command
            .args([
                "--headless=new",
                "--remote-debugging-pipe",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // The browser's ends of the pipes become its fds 3 and 4 (without CLOEXEC).
                // Both ends are first copied to fds 10 and up: in a process with few files
                // open the pipes may themselves be fds 3 and 4, where a `dup2` onto itself
                // would leave CLOEXEC set, or the first `dup2` would close the other end.
                let cmd = libc::fcntl(cmd_fd, libc::F_DUPFD_CLOEXEC, 10);
                let out = libc::fcntl(out_fd, libc::F_DUPFD_CLOEXEC, 10);
                if cmd < 0 || out < 0 || libc::dup2(cmd, 3) < 0 || libc::dup2(out, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("starting chromium");
        drop(cmd_read);
        drop(out_write);
        let (tx, replies) = mpsc::channel();
        let out = File::from(out_read);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(out);
            let mut buf = Vec::new();
            while reader.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
                buf.clear();
            }
        });
        let mut browser = Browser {
            child,
            to_browser: File::from(cmd_write),
            replies,
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let targets = browser.call(None, "Target.getTargets", json!({}));
        let page = targets["targetInfos"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .map(|t| t["targetId"].clone());
        let target = match page {
            Some(id) => id,
            None => browser.call(None, "Target.createTarget", json!({"url": "about:blank"}))
                ["targetId"]
                .clone(),
        };
        let attached = browser.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        browser.page("Page.enable", json!({}));
        browser.page("Runtime.enable", json!({}));
        browser
    }

    /// Sends a command (to the browser, or to the page's session) and waits for its result.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_call(session, method, params)
            .unwrap_or_else(|e| panic!("{method} failed: {e}"))
    }

    /// As `call`, with the protocol's error as an `Err`: a command sent to a page that is
    /// navigating away (its execution context gone) fails that way, and polling tries again.
    fn try_call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .expect("writing to chromium");
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.replies.recv_timeout(left) {
                Ok(v) if v["id"] == id => {
                    return match v.get("error") {
                        Some(e) => Err(e.clone()),
                        None => Ok(v["result"].clone()),
                    };
                }
                Ok(_) => continue, // an event, or the reply to another command
                Err(RecvTimeoutError::Timeout) => panic!("no reply to {method} within {STEP:?}"),
                Err(RecvTimeoutError::Disconnected) => panic!("chromium exited during {method}"),
            }
        }
    }

    /// A command to the page.
    pub fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params)
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.page(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("`{expression}` threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy in the page; its last value otherwise, in the panic.
    pub fn wait_for(&mut self, expression: &str) -> Value {
        let deadline = Instant::now() + STEP;
        let guarded =
            format!("(() => {{ try {{ return {expression}; }} catch (e) {{ return null; }} }})()");
        loop {
            let session = self.session.clone();
            let params =
                json!({"expression": guarded, "returnByValue": true, "awaitPromise": true});
            // A page being replaced by the next one answers with an error: not yet, not false.
            let v = match self.try_call(Some(&session), "Runtime.evaluate", params) {
                Ok(r) => r["result"]["value"].clone(),
                Err(_) => Value::Null,
            };
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "`{expression}` still {v} after {STEP:?}; page: {}",
                    self.text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Loads `url` and waits until its document has loaded.
    pub fn goto(&mut self, url: &str) {
        self.page("Page.navigate", json!({"url": url}));
        self.wait_for(&format!(
            "document.readyState === 'complete' && location.href === {}",
            json!(url)
        ));
    }

    /// Clicks the element `selector` finds (which must be a link) and waits for the page it
    /// leads to; returns that page's address.
    pub fn click_link(&mut self, selector: &str) -> String {
        let href = self.wait_for(&format!(
            "document.querySelector({s}) && document.querySelector({s}).href",
            s = json!(selector)
        ));
        let href = href.as_str().unwrap().to_string();
        self.eval(&format!(
            "document.querySelector({}).click()",
            json!(selector)
        ));
        self.wait_for(&format!(
            "document.readyState === 'complete' && location.href === {}",
            json!(href)
        ));
        href
    }

    /// The text the page shows.
    pub fn text(&mut self) -> String {
        self.eval("document.body ? document.body.innerText : ''")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Saves a PNG of the page at `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let r = self.page("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64_decode(r["data"].as_str().unwrap());
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 (with padding), as the protocol sends binary data.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= u32::from(value(c)) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// Where tests leave screenshots for people to look at: `target/browser/`.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("browser")
}
