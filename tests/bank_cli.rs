//! The bank program as a user meets it: the built `bank` binary, run in a directory of its own.
//!
//! `cargo test` builds the binary because the crate's dev-dependency on itself turns on the
//! `cli` feature the binary requires.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `bank args...` in `dir`, so that a default `bank-data` would land there.
fn bank(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bank"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the bank binary starts")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read the test directory")
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// A failure is one line on stderr saying what went wrong, not an error's `Debug` form.
fn assert_sentence(err: &str) {
    let line = err.trim_end();
    assert!(!line.is_empty(), "no message on stderr");
    assert!(!line.contains('\n'), "more than one line: {err:?}");
    for debug in ["Os {", "kind:", "Custom {", "Error {", "NotAStore {", "Io("] {
        assert!(!line.contains(debug), "Debug form ({debug}) in {err:?}");
    }
}

#[test]
fn help_prints_usage_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["--help", "-h"] {
        let out = bank(dir.path(), &[flag]);
        assert!(out.status.success(), "{flag}: {out:?}");
        let text = stdout(&out);
        assert!(
            text.contains("Usage: bank [OPTIONS] [DIR]"),
            "{flag}: {text}"
        );
        for option in ["--accounts", "--operations", "--threads", "--version"] {
            assert!(
                text.contains(option),
                "{flag} does not list {option}: {text}"
            );
        }
        assert!(
            !text.contains("--check"),
            "{flag} shows the internal --check: {text}"
        );
    }
    assert_eq!(entries(dir.path()), Vec::<String>::new());
}

#[test]
fn version_prints_the_crate_version_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = bank(dir.path(), &["--version"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out).trim(),
        format!("bank {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(entries(dir.path()), Vec::<String>::new());
}

#[test]
fn unknown_option_fails_with_a_message_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = bank(dir.path(), &["--frobnicate"]);
    assert!(!out.status.success(), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains("unexpected argument '--frobnicate'"), "{err}");
    assert!(err.contains("Usage: bank"), "{err}");
    assert!(stdout(&out).is_empty(), "{out:?}");
    assert_eq!(entries(dir.path()), Vec::<String>::new());
}

#[test]
fn bad_option_values_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--threads", "0"][..],
        &["--accounts", "0"],
        &["--operations", "many"],
    ] {
        let out = bank(dir.path(), args);
        assert!(!out.status.success(), "{args:?}: {out:?}");
        assert!(stderr(&out).contains(args[0]), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(entries(dir.path()), Vec::<String>::new());
}

#[test]
fn a_directory_that_is_a_file_fails_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plain"), b"not a store").unwrap();
    let out = bank(
        dir.path(),
        &["plain", "--accounts", "1", "--operations", "1"],
    );
    assert!(!out.status.success(), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.starts_with("bank: cannot open the store in plain: "),
        "{err}"
    );
    assert_sentence(&err);
    assert_eq!(
        std::fs::read(dir.path().join("plain")).unwrap(),
        b"not a store"
    );
}

#[test]
fn check_of_a_missing_store_fails_with_a_sentence_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = bank(dir.path(), &["--check", "nowhere"]);
    assert!(!out.status.success(), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains("nowhere"), "{err}");
    assert_sentence(&err);
    assert_eq!(entries(dir.path()), Vec::<String>::new());
}

#[test]
fn a_small_run_succeeds_and_a_second_run_continues_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let small = [
        "store",
        "--accounts",
        "20",
        "--operations",
        "200",
        "--threads",
        "2",
    ];

    let first = bank(dir.path(), &small);
    let text = stdout(&first);
    assert!(first.status.success(), "{text}\n{}", stderr(&first));
    assert!(text.contains("run 1 on this store"), "{text}");
    assert!(text.contains("20 opened, 0 already open"), "{text}");
    assert!(
        text.contains("ok: every balance is what it was before"),
        "{text}"
    );
    assert!(text.contains("as the run left them"), "{text}");
    assert!(!text.contains("MISMATCH"), "{text}");
    assert_eq!(entries(dir.path()), ["store"]);

    let second = bank(dir.path(), &small);
    let text = stdout(&second);
    assert!(second.status.success(), "{text}\n{}", stderr(&second));
    assert!(
        text.contains("run 2: the last run left 20 accounts"),
        "{text}"
    );
    assert!(text.contains("0 opened, 20 already open"), "{text}");
    assert!(!text.contains("MISMATCH"), "{text}");

    // Fewer accounts than the store has: the run still replays and checks all of them.
    let third = bank(
        dir.path(),
        &["store", "--accounts", "5", "--operations", "10"],
    );
    let text = stdout(&third);
    assert!(third.status.success(), "{text}\n{}", stderr(&third));
    assert!(
        text.contains("run 3: the last run left 20 accounts"),
        "{text}"
    );
    assert!(text.contains("0 opened, 20 already open"), "{text}");
}
