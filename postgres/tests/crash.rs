//! A kill -9 of the application mid-append loses nothing acknowledged: this test binary, run
//! again as a child, appends batches of three events and prints each acknowledgement; the parent
//! kills it while it is appending, then finds every acknowledged batch in the database, whole,
//! and no batch in part. Skipped without `EVJ_PG_URL` (a failure under CI). Cost: about 1 s.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eventjournal::{EventData, ExpectedVersion, Position};
use eventjournal_postgres::{PgOptions, PgStore};

const CHILD: &str = "EVJ_PG_CRASH_CHILD_SCHEMA";

/// The child's work: appends until killed, one line per acknowledged batch.
fn child(url: &str, schema: &str) {
    let store = PgStore::open(url, PgOptions::default().schema(schema)).unwrap();
    let mut out = std::io::stdout().lock();
    for b in 0u64.. {
        let events: Vec<EventData> = (0..3)
            .map(|k| EventData::new("Step", format!("{b}/{k}")))
            .collect();
        let ids: Vec<String> = events.iter().map(|e| e.id().to_string()).collect();
        let stream = format!("crash-{}", b % 4);
        let r = store.append(&stream, ExpectedVersion::Any, events).unwrap();
        writeln!(out, "{stream} {} {}", r.version.unwrap(), ids.join(" ")).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn a_killed_application_loses_no_acknowledged_append() {
    if let Ok(schema) = std::env::var(CHILD) {
        let url = std::env::var("EVJ_PG_URL").unwrap();
        child(&url, &schema);
        return;
    }
    let Some(pg) = common::pg_store("crash") else {
        return;
    };
    let mut kid = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_killed_application_loses_no_acknowledged_append",
            "--nocapture",
        ])
        .env(CHILD, &pg.schema)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(kid.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.len() < 300 && Instant::now() < deadline {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("crash-") => acked.push(line),
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    // SIGKILL, while the child is in its next append.
    kid.kill().unwrap();
    kid.wait().unwrap();
    // Lines written before the kill and not read yet were acknowledged too.
    for line in lines.map_while(Result::ok) {
        if line.starts_with("crash-") {
            acked.push(line);
        }
    }
    assert!(
        acked.len() >= 100,
        "the child acknowledged only {}",
        acked.len()
    );
    let store = &pg.store;
    for line in &acked {
        let mut f = line.split(' ');
        let stream = f.next().unwrap();
        let last: u64 = f.next().unwrap().parse().unwrap();
        let events = store.read_stream_forward(stream, last - 2, 3).unwrap();
        let ids: Vec<String> = events.iter().map(|e| e.id().to_string()).collect();
        assert_eq!(ids, f.collect::<Vec<_>>(), "batch `{line}` lost");
    }
    // Every batch in the store is whole: the one in flight at the kill is all there or absent.
    let all = store.read_all_forward(Position::START, usize::MAX).unwrap();
    assert_eq!(all.len() % 3, 0);
    for batch in all.chunks(3) {
        let b: Vec<_> = batch
            .iter()
            .map(|e| String::from_utf8(e.data().to_vec()).unwrap())
            .collect();
        let n = b[0].split('/').next().unwrap().to_string();
        assert_eq!(b, [0, 1, 2].map(|k| format!("{n}/{k}")));
    }
    assert!(all.len() / 3 >= acked.len() && all.len() / 3 <= acked.len() + 1);
}
