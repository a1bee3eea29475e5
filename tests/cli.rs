//! The `eventjournal` command line as a user meets it: the built binary, run as a process on
//! stores written by the library in the test, its output read back (the JSON parsed).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use eventjournal::{Durability, EventData, ExpectedVersion, Options, Store};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_eventjournal");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the eventjournal binary starts")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The exit code, after checking that the process ended by itself and did not panic.
fn code(o: &Output) -> i32 {
    assert!(!stderr(o).contains("panicked"), "panic: {}", stderr(o));
    o.status.code().expect("exited, not killed")
}

/// Runs a command that must succeed; its standard output.
fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert_eq!(code(&o), 0, "{args:?} failed: {}", stderr(&o));
    stdout(&o)
}

/// Each line of a `--json` output, parsed.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn json_one(args: &[&str]) -> Value {
    let mut lines = json_lines(&ok(args));
    assert_eq!(lines.len(), 1, "{args:?}");
    lines.remove(0)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temporary path")
}

/// Events the fixture writes: `account-0..3` get 10 JSON events each, `order-1` 5, `blob-1`
/// one event whose data is not JSON; small segments so that there are sealed ones, with index
/// files.
const ACCOUNTS: u64 = 4;
const PER_ACCOUNT: u64 = 10;
const ORDERS: u64 = 5;
const TOTAL: u64 = ACCOUNTS * PER_ACCOUNT + ORDERS + 1;
const BLOB: &[u8] = &[0x00, 0x01, 0xfe, 0xff];

fn fixture() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = tmp.path().join("store");
    let store = Store::open(&dir, small()).expect("open the fixture store");
    for i in 0..PER_ACCOUNT {
        for a in 0..ACCOUNTS {
            let data = format!(r#"{{"account":{a},"amount":{i}}}"#);
            let event = EventData::new("Deposited", data).with_metadata(r#"{"by":"test"}"#);
            store
                .append(&format!("account-{a}"), ExpectedVersion::Any, [event])
                .expect("append");
        }
    }
    let orders: Vec<EventData> = (0..ORDERS)
        .map(|i| EventData::new("Placed", format!(r#"{{"line":{i}}}"#)))
        .collect();
    store
        .append("order-1", ExpectedVersion::NoStream, orders)
        .expect("append orders");
    store
        .append(
            "blob-1",
            ExpectedVersion::NoStream,
            [EventData::new("Blob", BLOB)],
        )
        .expect("append blob");
    store.close().expect("close");
    (tmp, dir)
}

fn small() -> Options {
    Options::default()
        .segment_size(4096)
        .durability(Durability::None)
}

/// Files of `dir` whose names end with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list the store")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

fn flip(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open for damage");
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).expect("read a byte");
    b[0] ^= 0x5a;
    f.write_all_at(&b, at).expect("write a byte");
}

#[test]
fn info_reports_files_events_streams_and_head() {
    let (_tmp, dir) = fixture();
    let head = Store::open_read_only(&dir, Options::default().follow(None))
        .expect("open")
        .head();
    let v = json_one(&["--json", "info", s(&dir)]);
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["events"], TOTAL);
    assert_eq!(v["streams"], ACCOUNTS + 2);
    assert_eq!(v["categories"], 3);
    assert_eq!(v["event_types"], 3);
    // Counting the events replayed them all, in this open.
    assert_eq!(v["stats"]["events_replayed"], TOTAL);
    assert_eq!(v["stats"]["appends"], 0);
    assert_eq!(v["head"], head.0);
    let segments = v["segments"].as_array().expect("segments");
    assert!(segments.len() > 1, "the fixture seals segments");
    assert_eq!(segments[0]["base"], 0);
    assert!(!v["index_files"].as_array().expect("index files").is_empty());

    let text = ok(&["info", s(&dir)]);
    assert!(text.contains(&format!("events          {TOTAL}")), "{text}");
    assert!(text.contains(&format!("head            position {}", head.0)));
    assert!(text.contains("00000000000000000000.seg"), "{text}");
}

#[test]
fn streams_lists_names_with_counts_and_filters_by_prefix() {
    let (_tmp, dir) = fixture();
    let mut got: Vec<(String, u64)> = json_lines(&ok(&["streams", s(&dir), "--json"]))
        .iter()
        .map(|v| {
            (
                v["stream"].as_str().expect("name").to_string(),
                v["events"].as_u64().expect("count"),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, u64)> = (0..ACCOUNTS)
        .map(|a| (format!("account-{a}"), PER_ACCOUNT))
        .collect();
    want.push(("blob-1".into(), 1));
    want.push(("order-1".into(), ORDERS));
    want.sort();
    assert_eq!(got, want);

    let text = ok(&["streams", s(&dir), "--prefix", "order"]);
    assert_eq!(text, format!("order-1\t{ORDERS}\n"));
    assert_eq!(ok(&["streams", s(&dir), "--max", "2"]).lines().count(), 2);

    let mut categories: Vec<(String, u64)> = json_lines(&ok(&["categories", s(&dir), "--json"]))
        .iter()
        .map(|v| {
            (
                v["category"].as_str().unwrap().into(),
                v["events"].as_u64().unwrap(),
            )
        })
        .collect();
    categories.sort();
    let want = [
        ("account".to_string(), ACCOUNTS * PER_ACCOUNT),
        ("blob".into(), 1),
        ("order".into(), ORDERS),
    ];
    assert_eq!(categories, want);
    let types = ok(&["types", s(&dir), "--prefix", "Pl"]);
    assert_eq!(types, format!("Placed\t{ORDERS}\n"));
}

#[test]
fn read_prints_events_with_json_data_or_hex() {
    let (_tmp, dir) = fixture();
    let events = json_lines(&ok(&["--json", "read", s(&dir), "account-2"]));
    assert_eq!(events.len() as u64, PER_ACCOUNT);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["stream"], "account-2");
        assert_eq!(e["event_number"], i as u64);
        assert_eq!(e["type"], "Deposited");
        assert_eq!(e["data"]["amount"], i as u64);
        assert_eq!(e["metadata"]["by"], "test");
        assert!(e["position"].as_u64().expect("position") > 0);
        assert_eq!(e["id"].as_str().expect("id").len(), 36);
        assert!(e["timestamp"].as_str().expect("time").ends_with('Z'));
    }

    let back = json_lines(&ok(&[
        "read",
        s(&dir),
        "account-2",
        "--backward",
        "--max",
        "2",
        "--json",
    ]));
    let numbers: Vec<u64> = back
        .iter()
        .map(|e| e["event_number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [PER_ACCOUNT - 1, PER_ACCOUNT - 2]);
    let from = json_lines(&ok(&["read", s(&dir), "order-1", "--from", "3", "--json"]));
    assert_eq!(from.len() as u64, ORDERS - 3);
    assert_eq!(from[0]["data"]["line"], 3);

    let blob = json_one(&["--json", "read", s(&dir), "blob-1"]);
    assert_eq!(blob["data_hex"], "0001feff");
    assert!(blob.get("data").is_none());
    assert_eq!(blob["metadata"], Value::Null);

    let text = ok(&["read", s(&dir), "blob-1"]);
    assert!(text.starts_with("blob-1@0  position "), "{text}");
    assert!(text.contains("  data: hex:0001feff"), "{text}");
    let text = ok(&["read", s(&dir), "account-0", "--max", "1"]);
    assert!(
        text.contains(r#"  data: {"account":0,"amount":0}"#),
        "{text}"
    );
    assert!(text.contains(r#"  metadata: {"by":"test"}"#), "{text}");
}

#[test]
fn all_category_and_type_read_their_indexes() {
    let (_tmp, dir) = fixture();
    let all = json_lines(&ok(&["all", s(&dir), "--json"]));
    assert_eq!(all.len() as u64, TOTAL);
    let positions: Vec<u64> = all
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    // From an event's position, as a script continues a listing.
    let third = positions[2].to_string();
    let page = json_lines(&ok(&[
        "all",
        s(&dir),
        "--from",
        &third,
        "--max",
        "2",
        "--json",
    ]));
    assert_eq!(page.len(), 2);
    assert_eq!(page[0]["position"], positions[2]);
    let newest = json_one(&["all", s(&dir), "--backward", "--max", "1", "--json"]);
    assert_eq!(newest["stream"], "blob-1");

    let category = json_lines(&ok(&["category", s(&dir), "account", "--json"]));
    assert_eq!(category.len() as u64, ACCOUNTS * PER_ACCOUNT);
    assert!(category
        .iter()
        .all(|e| e["stream"].as_str().unwrap().starts_with("account-")));
    let placed = json_lines(&ok(&["type", s(&dir), "Placed", "--json"]));
    assert_eq!(placed.len() as u64, ORDERS);
    assert!(placed.iter().all(|e| e["stream"] == "order-1"));
    let skipped = json_lines(&ok(&["type", s(&dir), "Placed", "--from", "4", "--json"]));
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["data"]["line"], 4);
}

/// Every bad input gets its documented exit code and a message, never a panic.
#[test]
fn bad_input_fails_with_a_message_and_the_documented_code() {
    let (tmp, dir) = fixture();
    let missing = tmp.path().join("missing");
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "hello").unwrap();
    let file = foreign.join("notes.txt");
    let cases: &[(&[&str], i32, &str)] = &[
        (&["info", s(&missing)], 1, "not an eventjournal store"),
        (&["read", s(&foreign), "x"], 1, "not an eventjournal store"),
        (&["streams", s(&file)], 1, "not an eventjournal store"),
        (&["verify", s(&missing)], 1, "not an eventjournal store"),
        (&["tail", s(&missing)], 1, "not an eventjournal store"),
        (&["read", s(&dir), "no-such-stream"], 1, "has no events"),
        (&["category", s(&dir), "nothing"], 1, "has no events"),
        (&["type", s(&dir), "Nothing"], 1, "no events of type"),
        (&["read", s(&dir), "$all"], 1, ""),
        (
            &["all", s(&dir), "--from", "7"],
            1,
            "not the position of an event",
        ),
        (
            &["read", s(&dir), "account-1", "--max", "many"],
            2,
            "invalid value",
        ),
        (&["read", s(&dir), "account-1", "--from", "-1"], 2, ""),
        (&["frobnicate", s(&dir)], 2, "unrecognized subcommand"),
        (&["read"], 2, "required"),
        (
            &[
                "append",
                s(&dir),
                "a-1",
                "--expected",
                "maybe",
                "--type",
                "T",
                "--data",
                "x",
            ],
            2,
            "not any, no-stream",
        ),
        (
            &[
                "append",
                s(&dir),
                "a-1",
                "--expected",
                "any",
                "--type",
                "T",
                "--data",
                "@/no/such/file",
            ],
            1,
            "reading /no/such/file",
        ),
        (
            &[
                "append",
                s(&missing),
                "a-1",
                "--expected",
                "any",
                "--type",
                "T",
                "--data",
                "x",
            ],
            1,
            "not an eventjournal store",
        ),
        (
            &[
                "append",
                s(&dir),
                "a-1",
                "--expected",
                "any",
                "--type",
                "T",
                "--data",
                "x",
                "--id",
                "nope",
            ],
            2,
            "not a UUID",
        ),
        (
            &[
                "append",
                s(&dir),
                "$x",
                "--expected",
                "any",
                "--type",
                "T",
                "--data",
                "x",
            ],
            1,
            "reserved",
        ),
        (&["backup", s(&dir), s(&foreign)], 1, ""),
    ];
    for (args, want, message) in cases {
        let o = run(args);
        let err = stderr(&o);
        assert_eq!(code(&o), *want, "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
        assert!(!err.trim().is_empty(), "{args:?} failed silently");
    }
    assert!(!missing.exists(), "a read created the store directory");
    let help = ok(&["--help"]);
    assert!(
        help.contains("Exit status:") && help.contains("3  damage"),
        "{help}"
    );
}

#[test]
fn verify_passes_a_whole_store() {
    let (_tmp, dir) = fixture();
    let v = json_one(&["verify", s(&dir), "--json"]);
    assert_eq!(v["ok"], true);
    assert_eq!(v["events"], TOTAL);
    assert!(v["segments"].as_u64().unwrap() > 1);
    assert!(v["index_files"].as_u64().unwrap() > 0);
    // Each event is in three index keys: its stream, its category and its type.
    assert!(v["index_offsets"].as_u64().unwrap() > 0);
    let text = ok(&["verify", s(&dir)]);
    assert!(text.starts_with("ok: "), "{text}");
}

/// A damaged file gets exit status 3 and a message naming the file and an offset.
fn assert_damage(dir: &Path, file: &Path, offset: Option<u64>) {
    let o = run(&["verify", s(dir)]);
    let err = stderr(&o);
    assert_eq!(code(&o), 3, "{err}");
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name), "{err} does not name {name}");
    match offset {
        Some(at) => assert!(err.contains(&format!("at offset {at}:")), "{err}"),
        None => assert!(err.contains("at offset "), "{err}"),
    }
    let v = json_one_failing(&["verify", s(dir), "--json"]);
    assert_eq!(v["ok"], false);
    assert!(v["file"].as_str().unwrap().ends_with(name));
}

fn json_one_failing(args: &[&str]) -> Value {
    let o = run(args);
    assert_eq!(code(&o), 3);
    serde_json::from_str(stdout(&o).trim()).expect("JSON on a failed verify")
}

#[test]
fn verify_finds_a_damaged_segment_record() {
    let (_tmp, dir) = fixture();
    let seg = &files(&dir, ".seg")[0];
    // The first record's event number field: inside a sealed segment, under later batches.
    flip(seg, 64 + 16);
    assert_damage(&dir, seg, Some(64));
}

#[test]
fn verify_finds_damaged_index_offsets_and_directory() {
    let (_tmp, dir) = fixture();
    let idx = files(&dir, ".idx")[0].clone();
    let bytes = std::fs::read(&idx).unwrap();
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
    // FORMAT.md: a 64-byte header, 40-byte directory entries, the names, then the offsets
    // arrays at the next multiple of 4.
    let (runs, names_len) = (u32_at(12), u64_at(32));
    let offsets_at = (64 + 40 * runs + names_len).next_multiple_of(4);

    flip(&idx, offsets_at as u64 + 1);
    assert_damage(&dir, &idx, Some(offsets_at as u64));
    flip(&idx, offsets_at as u64 + 1);
    ok(&["verify", s(&dir)]);

    // A directory entry's first event number.
    flip(&idx, 64 + 8);
    assert_damage(&dir, &idx, None);
}

#[test]
fn verify_finds_a_damaged_id_table() {
    let (_tmp, dir) = fixture();
    let ids = files(&dir, ".ids");
    let table = ids
        .first()
        .expect("the fixture's sealed segment has an id table");
    // The first entry, in the body after the 64-byte header.
    flip(table, 64 + 3);
    assert_damage(&dir, table, Some(64));
}

/// Opens `dir` for writing, retrying while it is locked: a store this process closed a moment
/// ago can still be locked by a child another test is starting, which holds a copy of every
/// descriptor of this process between its fork and its exec.
fn open_writer(dir: &Path) -> Store {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open(dir, small()) {
            Err(eventjournal::Error::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            r => return r.expect("open the writer"),
        }
    }
}

/// A child process killed when the test is done with it, or fails before that.
struct Killed(std::process::Child);

impl Killed {
    fn end(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.end();
    }
}

/// Reads lines from a child's standard output on a thread, so that the test can wait for one
/// with a deadline.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `tail` follows a store another process writes: events appended through a writer `Store`
/// here after the child started show up in its output.
#[test]
fn tail_prints_events_another_process_appends() {
    let (_tmp, dir) = fixture();
    for stream in [None, Some("order-1")] {
        let mut args = vec!["tail", s(&dir), "--json"];
        args.extend(stream);
        let mut child = Killed(
            Command::new(BIN)
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start tail"),
        );
        let lines = lines_of(&mut child.0);
        let writer = open_writer(&dir);
        // The child subscribes at the end of the log once it has opened the store: events
        // appended before that are not shown. Append until one is.
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut seen = None;
        let mut appended = 0u64;
        while seen.is_none() && Instant::now() < deadline {
            let data = format!(r#"{{"tick":{appended}}}"#);
            writer
                .append(
                    "order-1",
                    ExpectedVersion::Any,
                    [EventData::new("Tick", data)],
                )
                .expect("append");
            appended += 1;
            seen = lines.recv_timeout(Duration::from_millis(100)).ok();
        }
        child.end();
        writer.close().expect("close the writer");
        let line = seen.unwrap_or_else(|| panic!("tail {stream:?} printed nothing"));
        let v: Value = serde_json::from_str(&line).expect("tail prints JSON");
        assert_eq!(v["stream"], "order-1");
        assert_eq!(v["type"], "Tick");
        assert!(v["data"]["tick"].as_u64().unwrap() < appended);
        assert!(v["event_number"].as_u64().unwrap() >= ORDERS);
        let mut err = String::new();
        let _ = child
            .0
            .stderr
            .take()
            .map(|mut e| e.read_to_string(&mut err));
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn append_then_read_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new");
    let data_file = tmp.path().join("event.json");
    std::fs::write(&data_file, r#"{"from":"file"}"#).unwrap();
    let at_file = format!("@{}", data_file.display());
    let id = "6f9619ff-8b86-d011-b42d-00c04fc964ff";

    let v = json_one(&[
        "append",
        s(&dir),
        "cart-1",
        "--expected",
        "no-stream",
        "--type",
        "Created",
        "--data",
        &at_file,
        "--create",
        "--id",
        id,
        "--json",
    ]);
    assert_eq!(v["event_number"], 0);
    assert_eq!(v["id"], id);
    let text = ok(&[
        "append",
        s(&dir),
        "cart-1",
        "--expected",
        "0",
        "--type",
        "Added",
        "--data",
        r#"{"sku":"apple"}"#,
        "--metadata",
        "plain text",
    ]);
    assert!(
        text.starts_with("appended event 1 of `cart-1` at position "),
        "{text}"
    );
    let mut child = Command::new(BIN)
        .args([
            "append",
            s(&dir),
            "cart-1",
            "--expected",
            "exists",
            "--type",
            "Raw",
            "--data",
            "@-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&[9, 8, 7]).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    // A stale expected version: exit status 4, nothing written.
    let o = run(&[
        "append",
        s(&dir),
        "cart-1",
        "--expected",
        "0",
        "--type",
        "Late",
        "--data",
        "{}",
    ]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("wrong expected version"));

    let events = json_lines(&ok(&["read", s(&dir), "cart-1", "--json"]));
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["id"], id);
    assert_eq!(events[0]["data"]["from"], "file");
    assert_eq!(events[1]["data"]["sku"], "apple");
    assert_eq!(events[1]["metadata_hex"], "706c61696e2074657874");
    assert_eq!(events[2]["type"], "Raw");
    assert_eq!(events[2]["data_hex"], "090807");

    // A writer holds the store: the append says so.
    let writer = Store::open(&dir, Options::default()).unwrap();
    let o = run(&[
        "append",
        s(&dir),
        "cart-1",
        "--expected",
        "any",
        "--type",
        "T",
        "--data",
        "{}",
    ]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("locked"), "{}", stderr(&o));
    drop(writer);
}

#[test]
fn backup_copies_a_store_that_opens() {
    let (tmp, dir) = fixture();
    let dest = tmp.path().join("copy");
    let v = json_one(&["backup", s(&dir), s(&dest), "--json"]);
    assert!(v["segments_copied"].as_u64().unwrap() > 1);
    // Again into the same place: the sealed segments are kept.
    let again = json_one(&["backup", s(&dir), s(&dest), "--json"]);
    assert!(again["segments_kept"].as_u64().unwrap() > 0, "{again}");
    let text = ok(&["backup", s(&dir), s(&dest)]);
    assert!(text.contains("already there kept"), "{text}");
    ok(&["verify", s(&dest)]);
    let copy = open_writer(&dest);
    assert_eq!(copy.head().0, v["head"].as_u64().unwrap());
    assert_eq!(
        copy.stream_version("account-3").unwrap(),
        Some(PER_ACCOUNT - 1)
    );
    copy.close().unwrap();
}

/// A reader that stops early (`| head -1`) closes the pipe: the command ends without a panic
/// and with status 0.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("big");
    let store = Store::open(&dir, Options::default().durability(Durability::None)).unwrap();
    // Well over a pipe's buffer of output.
    let batch: Vec<EventData> = (0..2000)
        .map(|i| EventData::new("Filled", format!(r#"{{"padding":"{:0>100}"}}"#, i)))
        .collect();
    store.append("bulk-1", ExpectedVersion::Any, batch).unwrap();
    store.close().unwrap();
    for args in [
        vec!["all", s(&dir)],
        vec!["read", s(&dir), "bulk-1", "--json"],
    ] {
        let mut child = Command::new(BIN)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        // The reader is dropped here: the pipe is closed.
        assert!(!first.is_empty());
        let o = child.wait_with_output().unwrap();
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    }
}

/// One GET over a fresh connection; the status and the body.
fn get(addr: &str, path: &str, accept: &str) -> (u16, String) {
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to serve");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

#[test]
fn serve_shows_the_store_and_follows_another_process_writing() {
    let (_tmp, dir) = fixture();
    let mut child = Killed(
        Command::new(BIN)
            .args(["serve", s(&dir), "--listen", "127.0.0.1:0", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve"),
    );
    let lines = lines_of(&mut child.0);
    let first = lines
        .recv_timeout(Duration::from_secs(15))
        .expect("serve says where it listens");
    let v: Value = serde_json::from_str(&first).expect("JSON");
    let addr = v["listening"].as_str().expect("an address").to_string();
    let (status, body) = get(&addr, "/", "application/json");
    assert_eq!(status, 200, "{body}");
    let home: Value = serde_json::from_str(&body).expect("the home page as JSON");
    let head = home["head"].as_u64().expect("a head");
    let (status, html) = get(&addr, "/streams/order-1", "text/html");
    assert_eq!(status, 200);
    assert!(html.contains("<html") && html.contains("order-1"), "{html}");
    // Appends by a writer in this process show in the view: it follows the store.
    let writer = open_writer(&dir);
    writer
        .append(
            "order-9",
            ExpectedVersion::NoStream,
            [EventData::new("Placed", "{}")],
        )
        .expect("append");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = get(&addr, "/streams/order-9", "application/json");
        if status == 200 {
            let v: Value = serde_json::from_str(&body).expect("JSON");
            assert_eq!(v["version"], 0, "{v}");
            break;
        }
        assert_eq!(status, 404, "{body}");
        assert!(
            Instant::now() < deadline,
            "the view never showed the new stream"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, body) = get(&addr, "/", "application/json");
    let home: Value = serde_json::from_str(&body).unwrap();
    assert!(home["head"].as_u64().unwrap() > head);
    // Read-only: no route writes.
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(conn, "POST /streams/order-9 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 405"), "{raw}");
    child.end();
    writer.close().expect("close the writer");
    // A port already taken is an error with a message, not a panic.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let o = run(&["serve", s(&dir), "--listen", &port]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("binding"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
}

/// Every file of the store whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("list the store")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            std::fs::read(p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .collect()
}

fn stream_numbers(dir: &Path, stream: &str) -> eventjournal::Result<Vec<u64>> {
    let store = Store::open_read_only(dir, Options::default().follow(None))?;
    let out = store
        .read_stream_forward(stream, 0, usize::MAX)?
        .map(|e| e.map(|e| e.event_number()))
        .collect();
    out
}

#[test]
fn delete_then_compact_erases_the_stream() {
    let (_tmp, dir) = fixture();
    // The wrong expected version is refused with the conflict status, and nothing changes.
    let o = run(&["delete", s(&dir), "account-0", "--expected", "3"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert_eq!(stream_numbers(&dir, "account-0").unwrap().len(), 10);

    let text = ok(&["delete", s(&dir), "account-0", "--expected", "9"]);
    assert_eq!(text.trim(), "deleted `account-0`");
    assert!(stream_numbers(&dir, "account-0").unwrap().is_empty());
    assert!(!files_holding(&dir, br#"{"account":0,"#).is_empty());

    let v = json_one(&["compact", s(&dir), "--seal", "--json"]);
    assert_eq!(v["events_removed"], 10, "{v}");
    assert!(v["segments_rewritten"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(
        files_holding(&dir, br#"{"account":0,"#),
        Vec::<PathBuf>::new()
    );
    // The other streams are whole, and a second compaction finds nothing left to remove.
    assert_eq!(stream_numbers(&dir, "account-1").unwrap().len(), 10);
    let text = ok(&["compact", s(&dir)]);
    assert!(
        text.starts_with("rewrote 0 segments: removed 0 events"),
        "{text}"
    );
}

#[test]
fn tombstone_makes_reads_and_appends_fail() {
    let (_tmp, dir) = fixture();
    let v = json_one(&["tombstone", s(&dir), "order-1", "--json"]);
    assert_eq!(v["tombstoned"], true, "{v}");
    let o = run(&["read", s(&dir), "order-1"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("order-1"), "{}", stderr(&o));
    assert!(matches!(
        stream_numbers(&dir, "order-1"),
        Err(eventjournal::Error::StreamDeleted { .. })
    ));
    let o = run(&[
        "append",
        s(&dir),
        "order-1",
        "--expected",
        "any",
        "--type",
        "Placed",
        "--data",
        "{}",
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    // A tombstone is for good: a second one is refused too.
    assert_eq!(code(&run(&["tombstone", s(&dir), "order-1"])), 1);
}

#[test]
fn metadata_shows_and_sets_retention() {
    let (_tmp, dir) = fixture();
    assert_eq!(
        ok(&["metadata", s(&dir), "order-1"]).trim(),
        "`order-1` has no metadata"
    );
    let v = json_one(&["metadata", s(&dir), "order-1", "--json"]);
    assert!(v["metadata"].is_null(), "{v}");

    let v = json_one(&[
        "metadata",
        s(&dir),
        "order-1",
        "--set",
        r#"{"max_count":2,"custom":{"owner":"billing"}}"#,
        "--expected",
        "no-stream",
        "--json",
    ]);
    assert_eq!(v["version"], 0, "{v}");
    assert_eq!(stream_numbers(&dir, "order-1").unwrap(), [3, 4]);
    let v = json_one(&["metadata", s(&dir), "order-1", "--json"]);
    assert_eq!(v["version"], 0, "{v}");
    assert_eq!(v["metadata"]["max_count"], 2, "{v}");
    assert_eq!(v["metadata"]["custom"]["owner"], "billing", "{v}");

    // A stale expected version, and a body that is not metadata, change nothing.
    let o = run(&[
        "metadata",
        s(&dir),
        "order-1",
        "--set",
        "{}",
        "--expected",
        "no-stream",
    ]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let o = run(&[
        "metadata",
        s(&dir),
        "order-1",
        "--set",
        r#"{"max_count":"many"}"#,
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("metadata"), "{}", stderr(&o));
    assert_eq!(stream_numbers(&dir, "order-1").unwrap(), [3, 4]);
    // The store's own streams take no metadata from outside.
    let o = run(&["metadata", s(&dir), "$checkpoint-x", "--set", "{}"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
}

#[test]
fn seal_starts_a_new_segment_once() {
    let (_tmp, dir) = fixture();
    let before = files(&dir, ".seg").len();
    assert_eq!(json_one(&["seal", s(&dir), "--json"])["sealed"], true);
    assert_eq!(
        ok(&["seal", s(&dir)]).trim(),
        "nothing to seal: the segment being written holds no event"
    );
    assert_eq!(files(&dir, ".seg").len(), before + 1);
    // A store that is not there is not made by a writing command.
    let missing = dir.with_file_name("missing");
    assert_eq!(code(&run(&["seal", s(&missing)])), 1);
    assert!(!missing.exists());
}
