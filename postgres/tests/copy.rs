//! Moving a store: an embedded store copied into PostgreSQL (`copy_to_postgres`) and out again
//! through the command line (`eventjournal-pg copy-out`) holds the same events in the same
//! `$all` order, with the same streams, event numbers, ids, types, data and metadata, the
//! store's own streams included. Skipped without `EVJ_PG_URL` (a failure under CI). Cost: about
//! 1 s.

mod common;

use std::process::Command;

use eventjournal::{
    Durability, EventData, ExpectedVersion, Options, Position, RecordedEvent, Store,
    StreamMetadata, StreamWrite,
};
use eventjournal_postgres::{copy_to_postgres, CopyReport};

type Shape = (String, u64, eventjournal::EventId, String, Vec<u8>, Vec<u8>);

fn shape(events: &[RecordedEvent]) -> Vec<Shape> {
    events
        .iter()
        .map(|e| {
            (
                e.stream().to_string(),
                e.event_number(),
                e.id(),
                e.event_type().to_string(),
                e.data().to_vec(),
                e.metadata().to_vec(),
            )
        })
        .collect()
}

fn all_of(store: &Store) -> Vec<RecordedEvent> {
    store
        .read_all_forward(Position::START, usize::MAX)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_store_round_trips_through_postgres() {
    let Some(pg) = common::pg_store("copy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default().durability(Durability::None);
    let source = Store::open(dir.path().join("source"), opts.clone()).unwrap();
    for i in 0..1500u32 {
        let stream = format!("acct-{}", i % 7);
        let e = EventData::new(if i % 2 == 0 { "In" } else { "Out" }, i.to_le_bytes())
            .with_metadata(format!("{{\"i\":{i}}}"));
        source.append(&stream, ExpectedVersion::Any, [e]).unwrap();
        if i % 100 == 0 {
            source
                .append_multi(vec![
                    StreamWrite::new("a-1", ExpectedVersion::Any, vec![EventData::new("M", "x")]),
                    StreamWrite::new("b-1", ExpectedVersion::Any, vec![EventData::new("M", "")]),
                ])
                .unwrap();
        }
    }
    let p = all_of(&source)[10].position();
    source.save_checkpoint("projector", p).unwrap();
    source
        .set_stream_metadata(
            "acct-1",
            ExpectedVersion::NoStream,
            StreamMetadata::default(),
        )
        .unwrap();
    let original = all_of(&source);

    let report = copy_to_postgres(&source, &pg.store).unwrap();
    assert_eq!(
        report,
        CopyReport {
            events: original.len() as u64
        }
    );
    let in_pg = pg
        .store
        .read_all_forward(Position::START, usize::MAX)
        .unwrap();
    assert_eq!(shape(&in_pg), shape(&original));
    assert!(in_pg
        .iter()
        .zip(&original)
        .all(|(a, b)| a.timestamp_micros() == b.timestamp_micros()));
    assert_eq!(
        pg.store.stream_version("acct-3").unwrap(),
        source.stream_version("acct-3").unwrap()
    );
    // A checkpoint is an event like any other; its position is the source's, so it is loaded as
    // saved (moving checkpoints to the new positions is the consumer's business).
    assert_eq!(pg.store.load_checkpoint("projector").unwrap(), Some(p));
    // Appends go on after the copy, with the copied versions.
    assert!(pg
        .store
        .append(
            "acct-3",
            ExpectedVersion::Exact(213),
            [EventData::new("In", "")]
        )
        .is_ok());
    assert!(
        copy_to_postgres(&source, &pg.store).is_err(),
        "a copy into a store with events"
    );
    source.close().unwrap();

    let back = dir.path().join("back");
    let out = Command::new(env!("CARGO_BIN_EXE_eventjournal-pg"))
        .args([
            "copy-out", "--url", &pg.url, "--schema", &pg.schema, "--dir",
        ])
        .arg(&back)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with(&format!("copied {} events", original.len() + 1)),
        "{said}"
    );
    let copy = Store::open(&back, opts).unwrap();
    let round = all_of(&copy);
    assert_eq!(shape(&round[..original.len()]), shape(&original));
    assert_eq!(round.len(), original.len() + 1);
    assert_eq!(
        copy.stream_metadata("acct-1").unwrap().map(|m| m.0),
        Some(0)
    );
    // From a directory that holds no store: a message and a failing exit.
    let out = Command::new(env!("CARGO_BIN_EXE_eventjournal-pg"))
        .args(["copy-in", "--url", &pg.url, "--schema", &pg.schema, "--dir"])
        .arg(dir.path().join("nothing-here"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("eventjournal-pg: "));
}
