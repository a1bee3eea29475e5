//! The directory lock against another process. In a test binary of its own: a child process
//! inherits, between fork and exec, the open files of every thread of its parent, the lock files
//! of other tests' stores included, which would hold their locks a moment longer.

use std::process::Command;

use eventjournal::*;

/// Child half of `other_process_is_locked_out`: opens the store named by the environment and
/// reports the outcome on stdout.
#[test]
fn lock_probe_child() {
    let Ok(dir) = std::env::var("EVJ_LOCK_PROBE_DIR") else {
        return;
    };
    match Store::open(&dir, Options::default()) {
        Err(Error::Locked { .. }) => println!("PROBE=locked"),
        Err(e) => println!("PROBE=error {e}"),
        Ok(_) => println!("PROBE=opened"),
    }
}

fn probe(dir: &std::path::Path) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "lock_probe_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("EVJ_LOCK_PROBE_DIR", dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| l.split("PROBE=").nth(1))
        .unwrap_or("no answer")
        .to_string()
}

#[test]
fn other_process_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(probe(dir.path()), "locked");
    s.close().unwrap();
    assert_eq!(probe(dir.path()), "opened");
}
