//! Journaled actors (`eventjournal::journal`, the Orleans `JournaledGrain` model) on real stores
//! in temporary directories, and on an in-memory backend written here.
//!
//! Sections:
//! 1. actor semantics: activation, raise/confirm, atomic raises, refusals and undecodable events;
//! 2. two handles of one actor conflicting;
//! 3. state surviving a reopen of the store;
//! 4. snapshots (including a property test: snapshot + tail == full replay);
//! 5. snapshots that no longer decode, and snapshot versions;
//! 6. upcasting events of an old schema;
//! 7. the JSON codec;
//! 8. `retrieve_confirmed_events`;
//! 9. the `Host` (single activation, parallelism, LRU eviction);
//! 10. the `Backend` seam (an in-memory backend).

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Debug;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::Duration;

use eventjournal::journal::{
    Backend, Bincode, Codec, Host, Journal, JournalEvent, JournalState, Journaled, Json, Rejected,
    StoredEvent, MAX_CONFIRM_ATTEMPTS,
};
use eventjournal::{
    AppendResult, Durability, Error, EventData, EventId, ExpectedVersion, Options, Position,
    Result, Store,
};
use parking_lot::Mutex;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

// ---- The shared test actor: a bank account ----------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum AccountEvent {
    Opened { owner: String },
    Deposited { amount: u64 },
    Withdrawn { amount: u64 },
}

impl JournalEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Opened { .. } => "Opened",
            AccountEvent::Deposited { .. } => "Deposited",
            AccountEvent::Withdrawn { .. } => "Withdrawn",
        }
    }
}

fn opened(owner: &str) -> AccountEvent {
    AccountEvent::Opened {
        owner: owner.to_string(),
    }
}

fn deposited(amount: u64) -> AccountEvent {
    AccountEvent::Deposited { amount }
}

fn withdrawn(amount: u64) -> AccountEvent {
    AccountEvent::Withdrawn { amount }
}

const INSUFFICIENT_FUNDS: &str = "insufficient funds";
const NOT_OPEN: &str = "account is not open";
const ALREADY_OPEN: &str = "account is already open";

thread_local! {
    /// How many events `Account::apply` was handed on this thread: shows how much of a stream an
    /// activation replayed (a snapshot means only the tail is replayed).
    static APPLIED: Cell<u64> = const { Cell::new(0) };
}

/// How many events `Account::apply` is handed (on this thread) while `f` runs.
fn applies_during<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = APPLIED.with(Cell::get);
    let r = f();
    (r, APPLIED.with(Cell::get) - before)
}

/// An account: must be opened before money moves, and refuses to be overdrawn.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Account {
    owner: Option<String>,
    balance: u64,
    transactions: u32,
}

impl JournalState for Account {
    type Event = AccountEvent;
    type Error = Rejected;
    const TYPE: &'static str = "account";

    fn apply(&mut self, event: &AccountEvent) -> std::result::Result<(), Rejected> {
        APPLIED.with(|n| n.set(n.get() + 1));
        match event {
            AccountEvent::Opened { owner } => {
                if self.owner.is_some() {
                    return Err(Rejected::new(ALREADY_OPEN));
                }
                self.owner = Some(owner.clone());
            }
            AccountEvent::Deposited { amount } => {
                if self.owner.is_none() {
                    return Err(Rejected::new(NOT_OPEN));
                }
                self.balance += amount;
                self.transactions += 1;
            }
            AccountEvent::Withdrawn { amount } => {
                if self.owner.is_none() {
                    return Err(Rejected::new(NOT_OPEN));
                }
                if *amount > self.balance {
                    return Err(Rejected::new(INSUFFICIENT_FUNDS));
                }
                self.balance -= amount;
                self.transactions += 1;
            }
        }
        Ok(())
    }
}

/// The account after `events`, folded directly (no journal): the model the journal must match.
fn fold(events: &[AccountEvent]) -> Account {
    let mut acct = Account::default();
    for e in events {
        acct.apply(e).expect("the model's events apply");
    }
    acct
}

type AccountHandle = Journaled<Account>;

// ---- Shared helpers ---------------------------------------------------------------------------

fn options() -> Options {
    Options::default()
        .durability(Durability::None)
        .segment_size(1 << 20)
}

/// Given: an empty store in a fresh temporary directory.
fn given_a_store() -> (TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), options()).unwrap());
    (dir, store)
}

/// Closes `store` (every handle on it must be gone) and opens its directory again.
fn reopen(dir: &TempDir, store: Arc<Store>) -> Arc<Store> {
    Arc::into_inner(store)
        .expect("no actor handle still holds the store")
        .close()
        .unwrap();
    Arc::new(Store::open(dir.path(), options()).unwrap())
}

fn journal() -> Arc<Journal<Account>> {
    Arc::new(Journal::new())
}

fn snapshot_journal(every: u64) -> Arc<Journal<Account>> {
    Arc::new(Journal::new().snapshot_every(every))
}

fn activate(store: &Arc<Store>, id: &str) -> AccountHandle {
    Journaled::activate(store.clone(), journal(), id).unwrap()
}

/// Given: account `id` opened by `owner` and holding `deposits`, confirmed event by event
/// through `journal`. Returns the handle.
fn given_account<B: Backend, C: Codec>(
    backend: &Arc<B>,
    journal: &Arc<Journal<Account, C>>,
    id: &str,
    deposits: &[u64],
) -> Journaled<Account, B, C> {
    let mut acct = Journaled::activate(backend.clone(), journal.clone(), id).unwrap();
    acct.raise_event(opened("ann")).unwrap();
    acct.confirm_events().unwrap();
    for &d in deposits {
        acct.raise_event(deposited(d)).unwrap();
        acct.confirm_events().unwrap();
    }
    acct
}

/// The stored events of `stream`: (type, data, metadata).
fn stored(store: &Store, stream: &str) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    store
        .read_stream_forward(stream, 0, usize::MAX)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.event_type().to_string(),
                e.data().to_vec(),
                e.metadata().to_vec(),
            )
        })
        .collect()
}

/// The events of `stream`, decoded with bincode.
fn stored_events(store: &Store, stream: &str) -> Vec<AccountEvent> {
    stored(store, stream)
        .iter()
        .map(|(_, data, _)| Bincode.decode(data).unwrap())
        .collect()
}

/// Then: `result` is `Error::Apply` for event `number` of `stream`, refused because `why`.
#[track_caller]
fn assert_apply_error<T: Debug>(result: Result<T>, stream: &str, number: Option<u64>, why: &str) {
    match result {
        Err(Error::Apply {
            stream: s,
            event_number,
            source,
        }) => {
            assert_eq!(s, stream);
            assert_eq!(event_number, number);
            assert_eq!(source.to_string(), why);
        }
        other => panic!("expected Error::Apply for {number:?} ({why}), got {other:?}"),
    }
}

/// Then: `result` is a decode `Error::Codec` of `stream` whose description contains `what`.
#[track_caller]
fn assert_decode_error<T: Debug>(result: Result<T>, stream: &str, what: &str) {
    match result {
        Err(Error::Codec {
            action,
            what: w,
            stream: s,
            reason,
        }) => {
            assert_eq!(action, "decode");
            assert_eq!(s, stream);
            assert!(w.contains(what), "`{w}` does not mention `{what}`");
            assert!(!reason.is_empty());
        }
        other => panic!("expected a decode Error::Codec, got {other:?}"),
    }
}

// ---- 1. Actor semantics -----------------------------------------------------------------------

#[test]
fn a_new_actor_activates_at_version_zero_with_the_default_state() {
    // Given
    let (_dir, store) = given_a_store();
    // When
    let acct = activate(&store, "new");
    // Then
    assert_eq!(acct.id(), "new");
    assert_eq!(acct.stream(), "account-new");
    assert_eq!(Journal::<Account>::stream_of("new"), "account-new");
    assert_eq!(acct.version(), 0);
    assert_eq!(acct.state(), &Account::default());
    assert_eq!(acct.tentative_state(), &Account::default());
    assert_eq!(acct.unconfirmed_events().len(), 0);
    assert_eq!(acct.snapshot_version(), 0);
    assert!(
        store.streams().unwrap().is_empty(),
        "activation wrote nothing"
    );
}

#[test]
fn a_raised_event_is_tentative_until_confirmed() {
    // Given
    let (_dir, store) = given_a_store();
    let mut acct = activate(&store, "1");

    // When: an event is raised
    acct.raise_event(opened("ann")).unwrap();

    // Then: only the tentative state has it, and nothing is stored
    assert_eq!(acct.tentative_state().owner.as_deref(), Some("ann"));
    assert_eq!(acct.state(), &Account::default());
    assert_eq!(acct.version(), 0);
    assert_eq!(
        acct.unconfirmed_events().cloned().collect::<Vec<_>>(),
        vec![opened("ann")]
    );
    assert_eq!(store.stream_version("account-1").unwrap(), None);

    // When: it is confirmed
    acct.confirm_events().unwrap();

    // Then: it is stored, the version moves, the confirmed state catches up with the tentative
    assert_eq!(acct.version(), 1);
    assert_eq!(acct.state(), acct.tentative_state());
    assert_eq!(acct.state().owner.as_deref(), Some("ann"));
    assert_eq!(acct.unconfirmed_events().len(), 0);
    assert_eq!(stored_events(&store, "account-1"), vec![opened("ann")]);
    assert_eq!(stored(&store, "account-1")[0].0, "Opened");

    // When: two more events are raised and confirmed together
    acct.raise_event(deposited(100)).unwrap();
    acct.raise_event(withdrawn(30)).unwrap();
    assert_eq!(acct.tentative_state().balance, 70);
    assert_eq!(acct.state().balance, 0);
    acct.confirm_events().unwrap();

    // Then
    assert_eq!(acct.version(), 3);
    assert_eq!(acct.state().balance, 70);
    assert_eq!(
        stored_events(&store, "account-1"),
        vec![opened("ann"), deposited(100), withdrawn(30)]
    );
    let types: Vec<String> = stored(&store, "account-1")
        .into_iter()
        .map(|(t, _, _)| t)
        .collect();
    assert_eq!(types, ["Opened", "Deposited", "Withdrawn"]);

    // And: confirming with nothing pending writes nothing
    acct.confirm_events().unwrap();
    assert_eq!(acct.version(), 3);
    assert_eq!(store.stream_version("account-1").unwrap(), Some(2));
}

#[test]
fn raise_events_is_atomic_when_apply_refuses_one_of_them() {
    // Given: an account holding 100
    let (_dir, store) = given_a_store();
    let mut acct = given_account(&store, &journal(), "1", &[100]);
    let before = acct.state().clone();

    // When: a sequence whose second event overdraws is raised
    let result = acct.raise_events(vec![deposited(50), withdrawn(500), deposited(1)]);

    // Then: the refusal names no event number, and none of the sequence is queued
    assert_apply_error(result, "account-1", None, INSUFFICIENT_FUNDS);
    assert_eq!(acct.unconfirmed_events().len(), 0);
    assert_eq!(acct.tentative_state(), &before);
    assert_eq!(acct.state(), &before);

    // When: a single refused event is raised after a queued one
    acct.raise_event(deposited(5)).unwrap();
    assert_apply_error(
        acct.raise_event(opened("bob")),
        "account-1",
        None,
        ALREADY_OPEN,
    );

    // Then: only the accepted one is queued, and confirming writes only it
    assert_eq!(
        acct.unconfirmed_events().cloned().collect::<Vec<_>>(),
        vec![deposited(5)]
    );
    acct.confirm_events().unwrap();
    assert_eq!(acct.version(), 3);
    assert_eq!(acct.state().balance, 105);
    assert_eq!(
        stored_events(&store, "account-1"),
        vec![opened("ann"), deposited(100), deposited(5)]
    );
}

#[test]
fn a_stored_event_the_state_refuses_fails_activation_with_its_number() {
    // Given: a stream written by another tool whose third event overdraws
    let (_dir, store) = given_a_store();
    let raw = |e: &AccountEvent| EventData::new(e.event_type(), Bincode.encode(e).unwrap());
    store
        .append(
            "account-raw",
            ExpectedVersion::NoStream,
            [
                raw(&opened("ann")),
                raw(&deposited(10)),
                raw(&withdrawn(1000)),
            ],
        )
        .unwrap();

    // When
    let result = Journaled::activate(store.clone(), journal(), "raw");

    // Then: an Apply error naming event 2, not a panic
    assert_apply_error(result, "account-raw", Some(2), INSUFFICIENT_FUNDS);
}

#[test]
fn a_stored_event_that_does_not_decode_fails_activation_with_a_codec_error() {
    // Given: a valid first event, then garbage bytes with the right event type
    let (_dir, store) = given_a_store();
    given_account(&store, &journal(), "garbage", &[]);
    store
        .append(
            "account-garbage",
            ExpectedVersion::Exact(0),
            [EventData::new("Deposited", b"this is not bincode".to_vec())],
        )
        .unwrap();

    // When
    let result = Journaled::activate(store.clone(), journal(), "garbage");

    // Then: a decode error naming event 1, not a panic
    assert_decode_error(result, "account-garbage", "event 1 (Deposited");
}

#[test]
fn an_event_written_without_the_journal_names_the_missing_metadata_and_what_to_do() {
    // Given: an actor's stream holding an event appended by other code, without journal metadata
    let (_dir, store) = given_a_store();
    given_account(&store, &journal(), "foreign", &[]);
    store
        .append(
            "account-foreign",
            ExpectedVersion::Exact(0),
            [EventData::new("Deposited", r#"{"amount":5}"#)],
        )
        .unwrap();

    // When
    let err =
        Journaled::activate(store.clone(), journal(), "foreign").expect_err("activation fails");

    // Then: a codec error naming the event, the missing metadata, and the two ways out
    let text = err.to_string();
    assert!(matches!(err, Error::Codec { .. }), "{err:?}");
    for part in [
        "event 1 (Deposited)",
        "no journal metadata",
        "account-foreign",
        "through `Journaled`",
        "Journal::upcaster(\"Deposited\", 1, ..)",
    ] {
        assert!(text.contains(part), "`{part}` missing from: {text}");
    }
}

#[test]
fn an_undecodable_event_met_while_confirming_is_a_codec_error() {
    // Given: a handle at version 1, and garbage appended behind its back
    let (_dir, store) = given_a_store();
    let mut acct = given_account(&store, &journal(), "g", &[]);
    store
        .append(
            "account-g",
            ExpectedVersion::Exact(0),
            [EventData::new("Deposited", vec![0xff; 3])],
        )
        .unwrap();

    // When: the handle confirms (conflicts, then refreshes onto the garbage)
    acct.raise_event(deposited(1)).unwrap();
    let result = acct.confirm_events();

    // Then: a codec error, and the handle's event was not written
    assert_decode_error(result, "account-g", "event 1");
    assert_eq!(store.stream_version("account-g").unwrap(), Some(1));
}

/// A note; a note reading `POISON` cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
struct Note(String);

const POISON: &str = "poison";
const SECRET: &str = "secret";

impl Serialize for Note {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if self.0 == POISON {
            return Err(serde::ser::Error::custom("a poisoned note"));
        }
        s.serialize_newtype_struct("Note", &self.0)
    }
}

impl JournalEvent for Note {
    fn event_type(&self) -> &'static str {
        "Note"
    }
}

/// Notes; a notebook holding a note reading `SECRET` cannot be encoded (so not snapshotted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
struct Notebook {
    notes: Vec<Note>,
}

impl Serialize for Notebook {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        if self.notes.iter().any(|n| n.0 == SECRET) {
            return Err(serde::ser::Error::custom("a secret notebook"));
        }
        let mut st = s.serialize_struct("Notebook", 1)?;
        st.serialize_field("notes", &self.notes)?;
        st.end()
    }
}

impl JournalState for Notebook {
    type Event = Note;
    type Error = Rejected;
    const TYPE: &'static str = "notebook";

    fn apply(&mut self, event: &Note) -> std::result::Result<(), Rejected> {
        self.notes.push(event.clone());
        Ok(())
    }
}

#[test]
fn encoding_failures_are_codec_errors_and_a_failed_snapshot_does_not_fail_the_confirm() {
    // Given: a notebook snapshotted after every event
    let (_dir, store) = given_a_store();
    let journal = Arc::new(Journal::<Notebook>::new().snapshot_every(1));
    let mut book = Journaled::activate(store.clone(), journal.clone(), "n").unwrap();

    // When: an event that cannot be encoded is confirmed
    book.raise_event(Note(POISON.into())).unwrap();
    let result = book.confirm_events();

    // Then: an encode error; nothing is written and the event stays unconfirmed
    match result {
        Err(Error::Codec {
            action,
            what,
            stream,
            ..
        }) => {
            assert_eq!(action, "encode");
            assert!(what.contains("Note"), "{what}");
            assert_eq!(stream, "notebook-n");
        }
        other => panic!("expected an encode Error::Codec, got {other:?}"),
    }
    assert_eq!(store.stream_version("notebook-n").unwrap(), None);
    assert_eq!((book.version(), book.unconfirmed_events().len()), (0, 1));

    // When: a fresh handle confirms an event after which the state cannot be snapshotted
    let mut book = Journaled::activate(store.clone(), journal.clone(), "n").unwrap();
    book.raise_event(Note(SECRET.into())).unwrap();
    book.confirm_events().unwrap();

    // Then: the event is stored although the snapshot failed; an explicit snapshot says why
    assert_eq!(book.version(), 1);
    assert_eq!(book.snapshot_version(), 0);
    assert_eq!(store.stream_version("$snapshot-notebook-n").unwrap(), None);
    match book.snapshot() {
        Err(Error::Codec { action, what, .. }) => {
            assert_eq!((action, what.as_str()), ("encode", "a snapshot"));
        }
        other => panic!("expected an encode Error::Codec, got {other:?}"),
    }
    let again = Journaled::activate(store.clone(), journal, "n").unwrap();
    assert_eq!(again.state().notes, [Note(SECRET.into())]);
}

// ---- 2. Two handles of one actor --------------------------------------------------------------

#[test]
fn confirm_after_another_handle_confirmed_reapplies_pending_events_on_the_fresh_state() {
    // Given: two handles of one account holding 100, both at version 2
    let (_dir, store) = given_a_store();
    given_account(&store, &journal(), "1", &[100]);
    let mut a = activate(&store, "1");
    let mut b = activate(&store, "1");
    assert_eq!((a.version(), b.version()), (2, 2));

    // When: A confirms first, then B confirms events raised on its stale view
    a.raise_event(deposited(10)).unwrap();
    a.confirm_events().unwrap();
    b.raise_events(vec![withdrawn(30), deposited(5)]).unwrap();
    assert_eq!(b.tentative_state().balance, 75);
    b.confirm_events().unwrap();

    // Then: B's events were re-applied on top of A's
    assert_eq!(b.version(), 5);
    assert_eq!(b.state().balance, 100 + 10 - 30 + 5);
    assert_eq!(b.state(), b.tentative_state());
    assert_eq!(b.unconfirmed_events().len(), 0);
    assert_eq!(
        stored_events(&store, "account-1"),
        vec![
            opened("ann"),
            deposited(100),
            deposited(10),
            withdrawn(30),
            deposited(5)
        ]
    );
    let fresh = activate(&store, "1");
    assert_eq!((fresh.version(), fresh.state()), (5, b.state()));
}

#[test]
fn a_conditional_event_after_interference_is_refused_and_refreshes_the_handle() {
    // Given: two handles at version 2; A confirms a deposit
    let (_dir, store) = given_a_store();
    given_account(&store, &journal(), "1", &[100]);
    let mut a = activate(&store, "1");
    let mut b = activate(&store, "1");
    a.raise_event(deposited(10)).unwrap();
    a.confirm_events().unwrap();

    // When: B raises a conditional event on its stale view
    let written = b.raise_conditional_event(withdrawn(20)).unwrap();

    // Then: refused, nothing written, and B now sees A's deposit
    assert!(!written);
    assert_eq!(store.stream_version("account-1").unwrap(), Some(2));
    assert_eq!(b.version(), 3);
    assert_eq!(b.state().balance, 110);
    assert_eq!(b.state(), b.tentative_state());
    assert_eq!(b.unconfirmed_events().len(), 0);

    // When: B tries again on its fresh view
    let written = b.raise_conditional_event(withdrawn(20)).unwrap();

    // Then: written
    assert!(written);
    assert_eq!(b.version(), 4);
    assert_eq!(b.state().balance, 90);
    assert_eq!(store.stream_version("account-1").unwrap(), Some(3));
    assert_eq!(stored_events(&store, "account-1")[3], withdrawn(20));
}

#[test]
fn a_conditional_event_without_interference_is_written() {
    // Given
    let (_dir, store) = given_a_store();
    let mut acct = given_account(&store, &journal(), "1", &[100]);

    // When
    let written = acct
        .raise_conditional_events(vec![withdrawn(40), deposited(1)])
        .unwrap();

    // Then
    assert!(written);
    assert_eq!(acct.version(), 4);
    assert_eq!(acct.state().balance, 61);
    assert_eq!(acct.state(), acct.tentative_state());
    assert_eq!(
        stored_events(&store, "account-1")[2..],
        [withdrawn(40), deposited(1)]
    );

    // And: a conditional event the state refuses is an Apply error, writing nothing
    assert_apply_error(
        acct.raise_conditional_event(withdrawn(1000)),
        "account-1",
        None,
        INSUFFICIENT_FUNDS,
    );
    assert_eq!(store.stream_version("account-1").unwrap(), Some(3));
}

#[test]
fn a_pending_event_that_no_longer_applies_after_the_refresh_is_dropped() {
    // Given: two handles of an account holding 100
    let (_dir, store) = given_a_store();
    given_account(&store, &journal(), "1", &[100]);
    let mut a = activate(&store, "1");
    let mut b = activate(&store, "1");

    // When: A withdraws 80, then B confirms a withdrawal of 50 raised on its stale view
    a.raise_event(withdrawn(80)).unwrap();
    a.confirm_events().unwrap();
    b.raise_event(withdrawn(50)).unwrap();
    let result = b.confirm_events();

    // Then: an Apply error; B's event is dropped and B holds the fresh state
    assert_apply_error(result, "account-1", None, INSUFFICIENT_FUNDS);
    assert_eq!(b.unconfirmed_events().len(), 0);
    assert_eq!(b.version(), 3);
    assert_eq!(b.state().balance, 20);
    assert_eq!(b.tentative_state(), b.state());
    assert_eq!(
        stored_events(&store, "account-1"),
        vec![opened("ann"), deposited(100), withdrawn(80)]
    );

    // And: confirming again writes nothing
    b.confirm_events().unwrap();
    assert_eq!(store.stream_version("account-1").unwrap(), Some(2));
}

// ---- 3. Reopening the store -------------------------------------------------------------------

#[test]
fn state_and_version_survive_closing_and_reopening_the_store() {
    // Given: an account with some history, its handle dropped
    let (dir, store) = given_a_store();
    let mut acct = given_account(&store, &journal(), "1", &[100, 20]);
    acct.raise_event(withdrawn(70)).unwrap();
    acct.confirm_events().unwrap();
    let (state, version) = (acct.state().clone(), acct.version());
    drop(acct);

    // When: the store is closed and reopened, and the actor activated again
    let store = reopen(&dir, store);
    let again = activate(&store, "1");

    // Then
    assert_eq!(again.state(), &state);
    assert_eq!(again.version(), version);
    assert_eq!((again.version(), again.state().balance), (4, 50));
}

// ---- 4. Snapshots -----------------------------------------------------------------------------

#[test]
fn a_snapshot_is_written_every_n_confirmed_events_and_activation_replays_only_the_tail() {
    // Given: snapshots every 3 events
    let (_dir, store) = given_a_store();
    let snaps = snapshot_journal(3);
    let mut acct = Journaled::activate(store.clone(), snaps.clone(), "s").unwrap();
    let mut events = vec![];
    let mut raise = |acct: &mut AccountHandle, e: AccountEvent| {
        acct.raise_event(e.clone()).unwrap();
        acct.confirm_events().unwrap();
        events.push(e);
    };

    // When: two events are confirmed
    raise(&mut acct, opened("ann"));
    raise(&mut acct, deposited(10));
    // Then: no snapshot yet
    assert_eq!(acct.snapshot_version(), 0);
    assert!(!store
        .streams()
        .unwrap()
        .contains(&"$snapshot-account-s".to_string()));

    // When: the third is confirmed
    raise(&mut acct, deposited(20));
    // Then: a snapshot covering 3 events is stored in `$snapshot-<TYPE>-<id>`
    assert_eq!(acct.snapshot_version(), 3);
    assert!(store
        .streams()
        .unwrap()
        .contains(&"$snapshot-account-s".to_string()));
    assert_eq!(
        store.stream_version("$snapshot-account-s").unwrap(),
        Some(0)
    );

    // When: five more events are confirmed
    for amount in [1, 2, 3, 4, 5] {
        raise(&mut acct, withdrawn(amount));
    }
    // Then: one more snapshot, at 6
    assert_eq!(acct.snapshot_version(), 6);
    assert_eq!(
        store.stream_version("$snapshot-account-s").unwrap(),
        Some(1)
    );
    assert_eq!(acct.version(), 8);

    // When: activated with snapshots, and without
    let (from_snapshot, tail) =
        applies_during(|| Journaled::activate(store.clone(), snaps.clone(), "s").unwrap());
    let (replayed, all) = applies_during(|| activate(&store, "s"));

    // Then: the same state and version; the snapshot activation replayed only the 2-event tail
    assert_eq!(from_snapshot.snapshot_version(), 6);
    assert_eq!(replayed.snapshot_version(), 0);
    assert_eq!(from_snapshot.state(), replayed.state());
    assert_eq!(from_snapshot.state(), &fold(&events));
    assert_eq!(from_snapshot.version(), 8);
    assert_eq!(replayed.version(), 8);
    assert_eq!((tail, all), (2, 8));
}

#[test]
fn an_explicit_snapshot_is_used_by_the_next_activation() {
    // Given: snapshots on, but fewer events than the interval
    let (_dir, store) = given_a_store();
    let snaps = snapshot_journal(100);
    let mut acct = given_account(&store, &snaps, "e", &[5, 6]);
    assert_eq!(acct.snapshot_version(), 0);

    // When: a snapshot is taken now, and taken again with nothing new
    acct.snapshot().unwrap();
    acct.snapshot().unwrap();

    // Then: one snapshot at version 3, used by activation
    assert_eq!(acct.snapshot_version(), 3);
    assert_eq!(
        store.stream_version("$snapshot-account-e").unwrap(),
        Some(0)
    );
    let (again, replayed) =
        applies_during(|| Journaled::activate(store.clone(), snaps.clone(), "e").unwrap());
    assert_eq!(again.snapshot_version(), 3);
    assert_eq!(replayed, 0);
    assert_eq!((again.version(), again.state()), (3, acct.state()));

    // And: a fresh actor takes no snapshot
    let mut empty = Journaled::activate(store.clone(), snaps, "empty").unwrap();
    empty.snapshot().unwrap();
    assert_eq!(empty.snapshot_version(), 0);
    assert_eq!(
        store.stream_version("$snapshot-account-empty").unwrap(),
        None
    );
}

/// One step of the snapshot property test.
#[derive(Debug, Clone)]
enum Step {
    Deposit(u64),
    Withdraw(u64),
    Confirm,
    /// An explicit `snapshot()`.
    Snapshot,
    /// Drop the handle (losing unconfirmed events) and activate again from the store.
    Reactivate,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1..100u64).prop_map(Step::Deposit),
        3 => (1..150u64).prop_map(Step::Withdraw),
        3 => Just(Step::Confirm),
        1 => Just(Step::Snapshot),
        1 => Just(Step::Reactivate),
    ]
}

/// The snapshot property's model: what is confirmed, what is pending, and the version the
/// newest snapshot covers (placed by the documented rule).
#[derive(Default)]
struct Model {
    confirmed: Vec<AccountEvent>,
    pending: Vec<AccountEvent>,
    snapshot_at: u64,
}

impl Model {
    fn version(&self) -> u64 {
        self.confirmed.len() as u64
    }

    /// Whether the state accepts `e` after the confirmed and pending events.
    fn accepts(&self, e: &AccountEvent) -> bool {
        let mut state = fold(&self.confirmed);
        self.pending
            .iter()
            .chain([e])
            .all(|p| state.apply(p).is_ok())
    }

    /// `confirm_events`: a snapshot when `every` events were confirmed since the last one.
    fn confirm(&mut self, every: u64) {
        if !self.pending.is_empty() {
            self.confirmed.append(&mut self.pending);
            if self.version() - self.snapshot_at >= every {
                self.snapshot_at = self.version();
            }
        }
    }
}

/// Given random events raised and confirmed in random batches (with explicit snapshots and
/// reactivations) with snapshots every `every` events, when the actor is activated, then
/// snapshot + tail equals a full replay and the model, replaying only the tail.
fn snapshot_property(steps: Vec<Step>, every: u64) -> std::result::Result<(), TestCaseError> {
    // Given
    let (_dir, store) = given_a_store();
    let snaps = snapshot_journal(every);
    let mut acct = Journaled::activate(store.clone(), snaps.clone(), "p").unwrap();
    let mut model = Model::default();
    acct.raise_event(opened("ann")).unwrap();
    model.pending.push(opened("ann"));

    // When
    for s in steps {
        match s {
            Step::Deposit(n) | Step::Withdraw(n) => {
                let e = match s {
                    Step::Deposit(_) => deposited(n),
                    _ => withdrawn(n),
                };
                let accepted = model.accepts(&e);
                match acct.raise_event(e.clone()) {
                    Ok(()) => {
                        prop_assert!(accepted, "{e:?} was raised; the model refuses it");
                        model.pending.push(e);
                    }
                    Err(Error::Apply {
                        event_number: None, ..
                    }) => prop_assert!(!accepted, "{e:?} was refused; the model accepts it"),
                    Err(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
                }
            }
            Step::Confirm => {
                acct.confirm_events().unwrap();
                model.confirm(every);
            }
            Step::Snapshot => {
                acct.snapshot().unwrap();
                if model.version() > 0 {
                    model.snapshot_at = model.version();
                }
            }
            Step::Reactivate => {
                drop(acct);
                model.pending.clear();
                acct = Journaled::activate(store.clone(), snaps.clone(), "p").unwrap();
                prop_assert_eq!(acct.snapshot_version(), model.snapshot_at);
                prop_assert_eq!(acct.version(), model.version());
            }
        }
        prop_assert_eq!(acct.snapshot_version(), model.snapshot_at);
    }
    acct.confirm_events().unwrap();
    model.confirm(every);
    drop(acct);

    // Then
    let (from_snapshot, tail) =
        applies_during(|| Journaled::activate(store.clone(), snaps.clone(), "p").unwrap());
    let replayed = activate(&store, "p");
    prop_assert_eq!(from_snapshot.state(), replayed.state());
    prop_assert_eq!(from_snapshot.state(), &fold(&model.confirmed));
    prop_assert_eq!(from_snapshot.version(), model.version());
    prop_assert_eq!(replayed.version(), model.version());
    prop_assert_eq!(from_snapshot.snapshot_version(), model.snapshot_at);
    prop_assert_eq!(tail, model.version() - model.snapshot_at);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn snapshot_plus_tail_equals_full_replay(
        steps in prop::collection::vec(step(), 0..60),
        every in 1..8u64,
    ) {
        snapshot_property(steps, every)?;
    }
}

// ---- 5. Snapshots that no longer decode; snapshot versions ------------------------------------

/// The account with a history: the same actor type and snapshot version as `Account`, but its
/// snapshots have more fields, so an `Account` snapshot does not decode as one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct AuditedAccount {
    account: Account,
    history: Vec<String>,
}

impl JournalState for AuditedAccount {
    type Event = AccountEvent;
    type Error = Rejected;
    const TYPE: &'static str = "account";

    fn apply(&mut self, event: &AccountEvent) -> std::result::Result<(), Rejected> {
        self.account.apply(event)?;
        self.history.push(event.event_type().to_string());
        Ok(())
    }
}

/// `Account` with a bumped snapshot version (the encoding is the same).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
struct AccountV2(Account);

impl JournalState for AccountV2 {
    type Event = AccountEvent;
    type Error = Rejected;
    const TYPE: &'static str = "account";
    const SNAPSHOT_VERSION: u32 = 2;

    fn apply(&mut self, event: &AccountEvent) -> std::result::Result<(), Rejected> {
        self.0.apply(event)
    }
}

#[test]
fn an_undecodable_snapshot_falls_back_to_full_replay_and_the_next_snapshot_replaces_it() {
    // Given: an `Account` snapshot at 4, and a fifth event
    let (_dir, store) = given_a_store();
    let acct = given_account(&store, &snapshot_journal(4), "x", &[1, 2, 3, 4]);
    assert_eq!((acct.version(), acct.snapshot_version()), (5, 4));
    let audited = Arc::new(Journal::<AuditedAccount>::new().snapshot_every(4));
    let full_replay = || {
        Journaled::activate(
            store.clone(),
            Arc::new(Journal::<AuditedAccount>::new()),
            "x",
        )
        .unwrap()
    };

    // When: activated as an `AuditedAccount`, whose snapshots are encoded differently
    let (mut a, replayed) =
        applies_during(|| Journaled::activate(store.clone(), audited.clone(), "x").unwrap());

    // Then: the snapshot is ignored and every event replayed
    assert_eq!(a.snapshot_version(), 0);
    assert_eq!(replayed, 5);
    assert_eq!(a.version(), 5);
    assert_eq!(a.state(), full_replay().state());
    assert_eq!(a.state().history.len(), 5);
    assert_eq!(a.state().account.balance, 10);

    // When: more events are confirmed (more than the interval since the last usable snapshot)
    a.raise_event(withdrawn(3)).unwrap();
    a.confirm_events().unwrap();

    // Then: a new snapshot is written, and activation uses it
    assert_eq!(a.snapshot_version(), 6);
    assert_eq!(
        store.stream_version("$snapshot-account-x").unwrap(),
        Some(1)
    );
    let (again, replayed) =
        applies_during(|| Journaled::activate(store.clone(), audited.clone(), "x").unwrap());
    assert_eq!(again.snapshot_version(), 6);
    assert_eq!(replayed, 0);
    assert_eq!(again.state(), full_replay().state());
    assert_eq!(again.version(), 6);
}

#[test]
fn an_explicit_snapshot_replaces_one_that_does_not_decode() {
    // Given: an `Account` snapshot at 3, activated as an `AuditedAccount`
    let (_dir, store) = given_a_store();
    given_account(&store, &snapshot_journal(3), "y", &[7, 8]);
    let audited = Arc::new(Journal::<AuditedAccount>::new().snapshot_every(3));
    let mut a = Journaled::activate(store.clone(), audited.clone(), "y").unwrap();
    assert_eq!((a.version(), a.snapshot_version()), (3, 0));

    // When: a snapshot is taken explicitly
    a.snapshot().unwrap();

    // Then: the next activation starts from it
    let again = Journaled::activate(store.clone(), audited, "y").unwrap();
    assert_eq!(again.snapshot_version(), 3);
    assert_eq!(again.state(), a.state());
    assert_eq!(again.state().history, ["Opened", "Deposited", "Deposited"]);
}

#[test]
fn a_bumped_snapshot_version_ignores_old_snapshots() {
    // Given: a version-1 snapshot at 2, and a third event
    let (_dir, store) = given_a_store();
    given_account(&store, &snapshot_journal(2), "v", &[10, 20]);
    let v2 = Arc::new(Journal::<AccountV2>::new().snapshot_every(2));

    // When: activated by a state with snapshot version 2
    let (mut acct, replayed) =
        applies_during(|| Journaled::activate(store.clone(), v2.clone(), "v").unwrap());

    // Then: the old snapshot is ignored (although it would decode)
    assert_eq!(acct.snapshot_version(), 0);
    assert_eq!(replayed, 3);
    assert_eq!((acct.version(), acct.state().0.balance), (3, 30));

    // When: it confirms an event, writing a version-2 snapshot
    acct.raise_event(deposited(5)).unwrap();
    acct.confirm_events().unwrap();
    assert_eq!(acct.snapshot_version(), 4);

    // Then: version-2 activations use it; version-1 activations ignore it
    let again = Journaled::activate(store.clone(), v2, "v").unwrap();
    assert_eq!((again.snapshot_version(), again.state().0.balance), (4, 35));
    let old = Journaled::activate(store.clone(), snapshot_journal(2), "v").unwrap();
    assert_eq!((old.snapshot_version(), old.state().balance), (0, 35));
    assert_eq!(old.version(), 4);
}

// ---- 6. Upcasting -----------------------------------------------------------------------------

/// The account's events, schema 2: deposits carry a memo. `Deposited` is written as schema 2;
/// the variants keep their order, so `Opened` and `Withdrawn` of schema 1 still decode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum MemoEvent {
    Opened { owner: String },
    Deposited { amount: u64, memo: String },
    Withdrawn { amount: u64 },
}

impl JournalEvent for MemoEvent {
    fn event_type(&self) -> &'static str {
        match self {
            MemoEvent::Opened { .. } => "Opened",
            MemoEvent::Deposited { .. } => "Deposited",
            MemoEvent::Withdrawn { .. } => "Withdrawn",
        }
    }

    fn schema_version(&self) -> u32 {
        match self {
            MemoEvent::Deposited { .. } => 2,
            _ => 1,
        }
    }
}

/// The account of schema-2 events (the same actor type, so the same streams).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct MemoAccount {
    balance: u64,
    memos: Vec<String>,
}

impl JournalState for MemoAccount {
    type Event = MemoEvent;
    type Error = Rejected;
    const TYPE: &'static str = "account";

    fn apply(&mut self, event: &MemoEvent) -> std::result::Result<(), Rejected> {
        match event {
            MemoEvent::Opened { .. } => {}
            MemoEvent::Deposited { amount, memo } => {
                self.balance += amount;
                self.memos.push(memo.clone());
            }
            MemoEvent::Withdrawn { amount } if *amount <= self.balance => self.balance -= amount,
            MemoEvent::Withdrawn { .. } => return Err(Rejected::new(INSUFFICIENT_FUNDS)),
        }
        Ok(())
    }
}

/// Reads a schema-1 `Deposited` (an `AccountEvent`) as a schema-2 one.
fn upcast_deposit(bytes: &[u8], codec: &Bincode) -> std::result::Result<MemoEvent, String> {
    match codec.decode::<AccountEvent>(bytes)? {
        AccountEvent::Deposited { amount } => Ok(MemoEvent::Deposited {
            amount,
            memo: "upcast".into(),
        }),
        other => Err(format!("not a schema-1 deposit: {other:?}")),
    }
}

#[test]
fn old_schema_events_load_through_a_registered_upcaster() {
    // Given: a stream written with the schema-1 events
    let (dir, store) = given_a_store();
    let mut old = given_account(&store, &journal(), "u", &[100, 5]);
    old.raise_event(withdrawn(30)).unwrap();
    old.confirm_events().unwrap();
    drop(old);
    let upcasting =
        Arc::new(Journal::<MemoAccount>::new().upcaster("Deposited", 1, upcast_deposit));

    // When: activated with schema-2 events and an upcaster for schema-1 deposits
    let mut acct = Journaled::activate(store.clone(), upcasting.clone(), "u").unwrap();

    // Then: the old deposits were converted
    assert_eq!(acct.version(), 4);
    assert_eq!(acct.state().balance, 75);
    assert_eq!(acct.state().memos, ["upcast", "upcast"]);
    assert_eq!(
        acct.retrieve_confirmed_events(1, 3).unwrap(),
        vec![
            MemoEvent::Deposited {
                amount: 100,
                memo: "upcast".into()
            },
            MemoEvent::Deposited {
                amount: 5,
                memo: "upcast".into()
            },
        ]
    );

    // When: a schema-2 deposit is confirmed and the store reopened
    acct.raise_event(MemoEvent::Deposited {
        amount: 7,
        memo: "new".into(),
    })
    .unwrap();
    acct.confirm_events().unwrap();
    drop(acct);
    let store = reopen(&dir, store);
    let again = Journaled::activate(store.clone(), upcasting, "u").unwrap();

    // Then: old and new events load together, and the new one is stored as schema 2
    assert_eq!(again.version(), 5);
    assert_eq!(again.state().balance, 82);
    assert_eq!(again.state().memos, ["upcast", "upcast", "new"]);
    let metas: Vec<Vec<u8>> = stored(&store, "account-u")
        .into_iter()
        .map(|(_, _, meta)| meta)
        .collect();
    assert_eq!(metas[1], [b'J', 1, 0, 0, 0], "schema 1 deposit");
    assert_eq!(metas[4], [b'J', 2, 0, 0, 0], "schema 2 deposit");
}

#[test]
fn old_schema_events_without_an_upcaster_fail_with_a_codec_error() {
    // Given: a stream of schema-1 events
    let (_dir, store) = given_a_store();
    given_account(&store, &journal(), "u", &[100]);

    // When: activated with schema-2 events and no upcaster
    let result = Journaled::activate(store.clone(), Arc::new(Journal::<MemoAccount>::new()), "u");

    // Then: a codec error for the schema-1 deposit, not a panic
    assert_decode_error(result, "account-u", "event 1 (Deposited, schema 1)");

    // And: an upcaster's own error is reported as a codec error too
    let failing = Journal::<MemoAccount>::new()
        .upcaster("Deposited", 1, |_, _| Err("cannot upcast this".to_string()));
    match Journaled::activate(store.clone(), Arc::new(failing), "u") {
        Err(Error::Codec { reason, .. }) => assert_eq!(reason, "cannot upcast this"),
        other => panic!("expected Error::Codec, got {other:?}"),
    }
}

// ---- 7. The JSON codec ------------------------------------------------------------------------

#[test]
fn the_json_codec_round_trips_an_actor_through_a_reopen_and_stores_json() {
    // Given: an account journaled as JSON, with snapshots every 2 events
    let (dir, store) = given_a_store();
    let json = Arc::new(Journal::<Account, Json>::with_codec(Json).snapshot_every(2));
    let mut acct = given_account(&store, &json, "j", &[100]);
    acct.raise_event(withdrawn(40)).unwrap();
    acct.confirm_events().unwrap();
    let (state, version) = (acct.state().clone(), acct.version());
    drop(acct);

    // When: the store is reopened and the actor activated again
    let store = reopen(&dir, store);
    let again = Journaled::activate(store.clone(), json.clone(), "j").unwrap();

    // Then: the same state and version
    assert_eq!((again.state(), again.version()), (&state, version));
    assert_eq!(again.snapshot_version(), 2);
    let replayed = Journaled::activate(
        store.clone(),
        Arc::new(Journal::<Account, Json>::with_codec(Json)),
        "j",
    )
    .unwrap();
    assert_eq!(replayed.state(), &state);

    // And: the events and snapshots are stored as JSON
    let values: Vec<serde_json::Value> = stored(&store, "account-j")
        .iter()
        .map(|(_, data, _)| serde_json::from_slice(data).expect("event data is JSON"))
        .collect();
    assert_eq!(values[0]["Opened"]["owner"], "ann");
    assert_eq!(values[1]["Deposited"]["amount"], 100);
    assert_eq!(values[2]["Withdrawn"]["amount"], 40);
    let snapshot: serde_json::Value =
        serde_json::from_slice(&stored(&store, "$snapshot-account-j")[0].1).unwrap();
    assert_eq!(snapshot["owner"], "ann");
    assert_eq!(snapshot["balance"], 100);
}

// ---- 8. retrieve_confirmed_events -------------------------------------------------------------

#[test]
fn retrieve_confirmed_events_returns_exactly_the_half_open_range() {
    // Given: five confirmed events and one unconfirmed
    let (_dir, store) = given_a_store();
    let mut acct = given_account(&store, &journal(), "r", &[1, 2, 3, 4]);
    acct.raise_event(deposited(99)).unwrap();
    let all = vec![
        opened("ann"),
        deposited(1),
        deposited(2),
        deposited(3),
        deposited(4),
    ];

    // When / Then: ranges inside the confirmed events
    assert_eq!(acct.retrieve_confirmed_events(0, 5).unwrap(), all);
    assert_eq!(acct.retrieve_confirmed_events(1, 3).unwrap(), all[1..3]);
    assert_eq!(acct.retrieve_confirmed_events(4, 5).unwrap(), all[4..5]);
    assert!(acct.retrieve_confirmed_events(2, 2).unwrap().is_empty());
    assert!(acct.retrieve_confirmed_events(5, 5).unwrap().is_empty());

    // When / Then: ranges that are not
    for (from, to) in [(3, 2), (0, 6), (5, 6), (7, 9)] {
        match acct.retrieve_confirmed_events(from, to) {
            Err(Error::InvalidInput(_)) => {}
            other => panic!("{from}..{to}: expected InvalidInput, got {other:?}"),
        }
    }

    // And: events another handle stored later are not in this handle's range
    let mut other = activate(&store, "r");
    other.raise_event(withdrawn(10)).unwrap();
    other.confirm_events().unwrap();
    assert_eq!(acct.retrieve_confirmed_events(3, 5).unwrap(), all[3..5]);
    assert_eq!(
        other.retrieve_confirmed_events(4, 6).unwrap()[1],
        withdrawn(10)
    );
}

// ---- 9. The host ------------------------------------------------------------------------------

fn account_host(store: &Arc<Store>, capacity: usize) -> Host<Account> {
    Host::new(store.clone(), journal(), capacity)
}

/// Given (through the host): account `id` opened, with `deposit` in it.
fn host_open(host: &Host<Account>, id: &str, deposit: u64) {
    host.call(id, |acct| -> eventjournal::Result<_> {
        acct.raise_events(vec![opened(id), deposited(deposit)])?;
        acct.confirm_events()
    })
    .unwrap();
}

/// The (version, state) of an actor, through the host.
fn host_view(host: &Host<Account>, id: &str) -> (u64, Account) {
    host.call(id, |acct| {
        Ok::<_, eventjournal::Error>((acct.version(), acct.state().clone()))
    })
    .unwrap()
}

/// An application's own error type, which the store's errors convert into.
#[derive(Debug)]
enum BankError {
    Store(Error),
    Frozen(String),
}

impl From<Error> for BankError {
    fn from(e: Error) -> BankError {
        BankError::Store(e)
    }
}

#[test]
fn host_calls_return_the_application_error_type() {
    // Given: an open account behind a host
    let (_dir, store) = given_a_store();
    let host = account_host(&store, 10);
    host_open(&host, "app", 10);

    // When: a call fails with the application's own error, before raising anything
    let frozen = host.call("app", |acct| {
        if acct.state().balance >= 10 {
            return Err(BankError::Frozen(acct.id().to_string()));
        }
        acct.raise_event(deposited(1))?;
        Ok(())
    });
    // Then: it is the application's error, unchanged, and nothing was written
    assert!(
        matches!(&frozen, Err(BankError::Frozen(id)) if id == "app"),
        "{frozen:?}"
    );
    assert_eq!(host_view(&host, "app").0, 2);

    // When: the journal refuses an event inside such a call
    let refused = host.call("app", |acct| -> Result<(), BankError> {
        acct.raise_event(withdrawn(1_000))?;
        acct.confirm_events()?;
        Ok(())
    });
    // Then: the store's error arrives converted
    assert!(
        matches!(&refused, Err(BankError::Store(Error::Apply { .. }))),
        "{refused:?}"
    );

    // When: activation itself fails (an undecodable event), the error converts the same way
    store
        .append(
            "account-app",
            ExpectedVersion::Exact(1),
            [EventData::new("Deposited", vec![0xff; 3])],
        )
        .unwrap();
    let fresh = account_host(&store, 10);
    let r = fresh.call("app", |acct| Ok::<_, BankError>(acct.version()));
    assert!(
        matches!(&r, Err(BankError::Store(Error::Codec { .. }))),
        "{r:?}"
    );
}

#[test]
fn the_host_keeps_one_activation_per_actor_and_serialises_its_calls() {
    // Given: an open account behind a host
    const THREADS: usize = 8;
    const CALLS: usize = 25;
    let (_dir, store) = given_a_store();
    let host = Arc::new(account_host(&store, 16));
    host_open(&host, "same", 0);
    let in_call = Arc::new(AtomicUsize::new(0));
    let most_in_call = Arc::new(AtomicUsize::new(0));
    let stale = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(THREADS));

    // When: many threads each deposit 1, CALLS times, raising and confirming in each call
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (host, store, barrier) = (host.clone(), store.clone(), barrier.clone());
            let (in_call, most_in_call, stale) =
                (in_call.clone(), most_in_call.clone(), stale.clone());
            thread::spawn(move || {
                barrier.wait();
                for _ in 0..CALLS {
                    host.call("same", |acct| -> eventjournal::Result<_> {
                        let now = in_call.fetch_add(1, Ordering::SeqCst) + 1;
                        most_in_call.fetch_max(now, Ordering::SeqCst);
                        // The activation is never behind the store: nobody else writes.
                        let stored = store
                            .stream_version("account-same")
                            .unwrap()
                            .map_or(0, |v| v + 1);
                        let before = acct.version();
                        if before != stored {
                            stale.fetch_add(1, Ordering::SeqCst);
                        }
                        acct.raise_event(deposited(1))?;
                        let confirmed = acct.confirm_events();
                        if acct.version() != before + 1 {
                            stale.fetch_add(1, Ordering::SeqCst);
                        }
                        in_call.fetch_sub(1, Ordering::SeqCst);
                        confirmed
                    })
                    .expect("no call fails: no conflict reaches a caller");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }

    // Then: every call was applied, one at a time, on a current activation
    let calls = (THREADS * CALLS) as u64;
    assert_eq!(most_in_call.load(Ordering::SeqCst), 1);
    assert_eq!(stale.load(Ordering::SeqCst), 0);
    let (version, state) = host_view(&host, "same");
    assert_eq!(version, 2 + calls);
    assert_eq!(state.balance, calls);
    assert_eq!(
        store.stream_version("account-same").unwrap(),
        Some(1 + calls)
    );
    assert_eq!(activate(&store, "same").state(), &state);
}

#[test]
fn the_host_runs_calls_to_different_actors_in_parallel() {
    // Given: two active accounts
    let (_dir, store) = given_a_store();
    let host = Arc::new(account_host(&store, 16));
    host_open(&host, "a", 1);
    host_open(&host, "b", 1);
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();

    // When: a call on A waits (at most 10 s) for a call on B to run
    let on_a = {
        let host = host.clone();
        thread::spawn(move || {
            host.call("a", move |acct| -> eventjournal::Result<_> {
                entered_tx.send(()).unwrap();
                let heard_from_b = release_rx.recv_timeout(Duration::from_secs(10)).is_ok();
                acct.raise_event(deposited(1))?;
                acct.confirm_events()?;
                Ok(heard_from_b)
            })
        })
    };
    entered_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the call on A started");
    host.call("b", move |acct| -> eventjournal::Result<_> {
        acct.raise_event(deposited(2))?;
        acct.confirm_events()?;
        let _ = release_tx.send(());
        Ok(())
    })
    .unwrap();

    // Then: B ran while A's call was still running
    let heard_from_b = on_a.join().unwrap().unwrap();
    assert!(heard_from_b, "the call on B waited for the call on A");
    assert_eq!(host_view(&host, "a").1.balance, 2);
    assert_eq!(host_view(&host, "b").1.balance, 3);
}

#[test]
fn the_host_evicts_the_least_recently_used_actors_over_capacity() {
    // Given: a host for 3 actors, with a, b, c active and a used again
    let (_dir, store) = given_a_store();
    let host = account_host(&store, 3);
    for (id, deposit) in [("a", 1), ("b", 2), ("c", 3)] {
        host_open(&host, id, deposit);
    }
    let b_before = {
        let b = activate(&store, "b"); // read from the store, not through the host
        (b.version(), b.state().clone())
    };
    host_view(&host, "a");
    let active = |ids: &[&str]| ids.iter().all(|id| host.is_active(id));

    // When: d is called
    host_open(&host, "d", 4);
    // Then: b, the least recently used, is evicted
    assert!(!host.is_active("b"));
    assert!(active(&["a", "c", "d"]));
    assert_eq!(host.active(), 3);

    // When: e is called
    host_open(&host, "e", 5);
    // Then: c is evicted
    assert!(!host.is_active("c"));
    assert!(active(&["a", "d", "e"]));
    assert_eq!(host.active(), 3);

    // When: the evicted b is called again
    let b_after = host_view(&host, "b");
    // Then: it is activated with its state, and a (now least recently used) makes room
    assert_eq!(b_after, b_before);
    assert_eq!((b_after.0, b_after.1.balance), (2, 2));
    assert!(!host.is_active("a"));
    assert!(active(&["b", "d", "e"]));
    assert!(host.active() <= 3);
}

#[test]
fn the_host_does_not_evict_an_actor_with_unconfirmed_events() {
    // Given: a host for 2 actors; `dirty` holds an unconfirmed event
    let (_dir, store) = given_a_store();
    let host = account_host(&store, 2);
    host_open(&host, "dirty", 10);
    host.call("dirty", |acct| acct.raise_event(deposited(5)))
        .unwrap();

    // When: three more actors are called
    for id in ["x", "y", "z"] {
        host_open(&host, id, 1);
    }

    // Then: `dirty`, although least recently used, is still active; the others made room
    assert!(host.is_active("dirty"));
    assert!(!host.is_active("x") && !host.is_active("y"));
    assert!(host.is_active("z"));
    assert_eq!(host.active(), 2);

    // When: everything idle is deactivated
    let deactivated = host.deactivate_all();
    // Then: only z went; `dirty` keeps its unconfirmed event
    assert_eq!(deactivated, 1);
    assert!(host.is_active("dirty"));
    let pending = host
        .call("dirty", |acct| {
            Ok::<_, eventjournal::Error>(acct.unconfirmed_events().len())
        })
        .unwrap();
    assert_eq!(pending, 1);

    // When: the event is confirmed, and everything deactivated again
    host.call("dirty", |acct| acct.confirm_events()).unwrap();
    assert_eq!(host.deactivate_all(), 1);
    assert_eq!(host.active(), 0);

    // Then: it reactivates with the event
    let (version, state) = host_view(&host, "dirty");
    assert_eq!((version, state.balance), (3, 15));
}

#[test]
fn the_host_keeps_one_activation_per_actor_while_evicting_under_load() {
    // Given: 5 open accounts behind a host for 2 actors
    const THREADS: usize = 6;
    const CALLS: usize = 40;
    const ACTORS: [&str; 5] = ["k0", "k1", "k2", "k3", "k4"];
    let (_dir, store) = given_a_store();
    let host = Arc::new(account_host(&store, 2));
    for id in ACTORS {
        host_open(&host, id, 0);
    }
    let in_call: Arc<Vec<AtomicUsize>> =
        Arc::new(ACTORS.iter().map(|_| AtomicUsize::new(0)).collect());
    let anomalies = Arc::new(AtomicUsize::new(0));

    // When: threads call the actors round-robin from different starting points
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (host, store) = (host.clone(), store.clone());
            let (in_call, anomalies) = (in_call.clone(), anomalies.clone());
            thread::spawn(move || {
                for i in 0..CALLS {
                    let k = (t + i) % ACTORS.len();
                    let id = ACTORS[k];
                    host.call(id, |acct| -> eventjournal::Result<_> {
                        if in_call[k].fetch_add(1, Ordering::SeqCst) != 0 {
                            anomalies.fetch_add(1, Ordering::SeqCst);
                        }
                        let stream = Journal::<Account>::stream_of(id);
                        let stored = store.stream_version(&stream).unwrap().map_or(0, |v| v + 1);
                        if acct.version() != stored {
                            anomalies.fetch_add(1, Ordering::SeqCst);
                        }
                        acct.raise_event(deposited(1))?;
                        let confirmed = acct.confirm_events();
                        in_call[k].fetch_sub(1, Ordering::SeqCst);
                        confirmed
                    })
                    .expect("no call fails");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }

    // Then: no two activations of one actor, no stale activation, every deposit counted
    assert_eq!(anomalies.load(Ordering::SeqCst), 0);
    host_open(&host, "k5", 0); // a new actor makes room: back to capacity once all are idle
    assert_eq!(host.active(), 2);
    let total: u64 = ACTORS
        .iter()
        .map(|id| activate(&store, id).state().balance)
        .sum();
    assert_eq!(total, (THREADS * CALLS) as u64);
}

#[test]
fn deactivate_all_returns_how_many_actors_it_deactivated() {
    // Given
    let (_dir, store) = given_a_store();
    let host = account_host(&store, 10);
    assert_eq!(host.deactivate_all(), 0);
    for id in ["p", "q", "r"] {
        host_open(&host, id, 1);
    }
    assert_eq!(host.active(), 3);
    // When
    let n = host.deactivate_all();
    // Then
    assert_eq!(n, 3);
    assert_eq!(host.active(), 0);
    assert!(!host.is_active("p"));
    assert_eq!(host_view(&host, "q").0, 2);
}

// ---- 10. The backend seam: an in-memory backend -----------------------------------------------

/// One event held by `MemBackend`.
#[derive(Clone)]
struct MemEvent {
    id: EventId,
    event_type: String,
    data: Vec<u8>,
    metadata: Vec<u8>,
}

/// A backend in a hash map, with EventStoreDB's expected-version rules (and idempotent retries
/// under `Exact`/`NoStream`), and switches for faults.
#[derive(Default)]
struct MemBackend {
    streams: Mutex<HashMap<String, Vec<MemEvent>>>,
    positions: AtomicU64,
    /// How many appends were refused with WrongExpectedVersion.
    conflicts: AtomicUsize,
    /// Reads fail with an I/O error while set.
    fail_reads: AtomicBool,
    /// The next append is stored, but reported as an I/O error (a lost acknowledgement).
    lose_next_ack: AtomicBool,
    /// Before each append to a stream under a version check, another writer appends a deposit.
    interfere: AtomicBool,
}

impl MemBackend {
    fn events(&self, stream: &str) -> Vec<MemEvent> {
        self.streams.lock().get(stream).cloned().unwrap_or_default()
    }

    fn decoded(&self, stream: &str) -> Vec<AccountEvent> {
        self.events(stream)
            .iter()
            .map(|e| Bincode.decode(&e.data).unwrap())
            .collect()
    }
}

fn io_error(what: &str) -> Error {
    Error::Io {
        action: "reaching",
        path: "the test backend".into(),
        source: std::io::Error::other(what.to_string()),
    }
}

impl Backend for MemBackend {
    fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult> {
        let mut streams = self.streams.lock();
        let held = streams.entry(stream.to_string()).or_default();
        if self.interfere.load(Ordering::SeqCst) && expected != ExpectedVersion::Any {
            held.push(MemEvent {
                id: EventId::new_random(),
                event_type: "Deposited".into(),
                data: Bincode.encode(&deposited(1)).unwrap(),
                metadata: vec![],
            });
        }
        let count = held.len() as u64;
        let ok = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => count == 0,
            ExpectedVersion::StreamExists => count > 0,
            ExpectedVersion::Exact(n) => count == n + 1,
        };
        let result = |last: u64| AppendResult {
            version: Some(last),
            position: Some(Position(self.positions.load(Ordering::SeqCst))),
        };
        if !ok {
            // A retry of events already stored right after the expected version succeeds.
            let start = match expected {
                ExpectedVersion::NoStream => Some(0),
                ExpectedVersion::Exact(n) => Some(n + 1),
                _ => None,
            };
            if let Some(start) = start {
                let start = start as usize;
                let ids: Vec<EventId> = held.iter().skip(start).map(|e| e.id).collect();
                if !events.is_empty()
                    && ids.len() >= events.len()
                    && events.iter().zip(&ids).all(|(e, id)| e.id() == *id)
                {
                    return Ok(result((start + events.len() - 1) as u64));
                }
            }
            self.conflicts.fetch_add(1, Ordering::SeqCst);
            return Err(Error::WrongExpectedVersion {
                stream: stream.to_string(),
                expected,
                actual: count.checked_sub(1),
            });
        }
        for e in events {
            held.push(MemEvent {
                id: e.id(),
                event_type: e.event_type().to_string(),
                data: e.data().to_vec(),
                metadata: e.metadata().to_vec(),
            });
            self.positions.fetch_add(1, Ordering::SeqCst);
        }
        let last = held.len() as u64 - 1;
        if self.lose_next_ack.swap(false, Ordering::SeqCst) {
            return Err(io_error("connection reset after the commit"));
        }
        Ok(result(last))
    }

    fn read(
        &self,
        stream: &str,
        from: u64,
        f: &mut dyn FnMut(StoredEvent<'_>) -> ControlFlow<()>,
    ) -> Result<u64> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(io_error("backend unreachable"));
        }
        // Copied out, so `f` runs without the lock.
        let events = self.events(stream);
        let mut handed = 0;
        for (n, e) in events.iter().enumerate().skip(from as usize) {
            handed += 1;
            let event = StoredEvent {
                event_number: n as u64,
                id: e.id,
                event_type: &e.event_type,
                data: &e.data,
                metadata: &e.metadata,
            };
            if f(event).is_break() {
                break;
            }
        }
        Ok(handed)
    }

    fn read_last(&self, stream: &str, f: &mut dyn FnMut(StoredEvent<'_>)) -> Result<bool> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(io_error("backend unreachable"));
        }
        let events = self.events(stream);
        match events.last() {
            Some(e) => {
                f(StoredEvent {
                    event_number: events.len() as u64 - 1,
                    id: e.id,
                    event_type: &e.event_type,
                    data: &e.data,
                    metadata: &e.metadata,
                });
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

#[test]
fn a_journaled_actor_runs_on_an_in_memory_backend() {
    // Given: an in-memory backend
    let mem = Arc::new(MemBackend::default());

    // When: an actor is activated, raises and confirms
    let mut a: Journaled<Account, MemBackend> =
        Journaled::activate(mem.clone(), journal(), "m").unwrap();
    assert_eq!((a.version(), a.state()), (0, &Account::default()));
    a.raise_events(vec![opened("ann"), deposited(100)]).unwrap();
    assert_eq!(a.state(), &Account::default());
    a.confirm_events().unwrap();

    // Then: the backend holds the events
    assert_eq!(a.version(), 2);
    assert_eq!(
        mem.decoded("account-m"),
        vec![opened("ann"), deposited(100)]
    );

    // When: a second handle conflicts with the first
    let mut b: Journaled<Account, MemBackend> =
        Journaled::activate(mem.clone(), journal(), "m").unwrap();
    a.raise_event(withdrawn(60)).unwrap();
    a.confirm_events().unwrap();
    b.raise_event(deposited(1)).unwrap();
    b.confirm_events().unwrap();

    // Then: B refreshed and re-applied, after one refused append
    assert_eq!(mem.conflicts.load(Ordering::SeqCst), 1);
    assert_eq!((b.version(), b.state().balance), (4, 41));
    assert_eq!(
        mem.decoded("account-m"),
        vec![opened("ann"), deposited(100), withdrawn(60), deposited(1)]
    );

    // And: a conditional event on A's stale view is refused, and A refreshed
    assert!(!a.raise_conditional_event(withdrawn(40)).unwrap());
    assert_eq!((a.version(), a.state().balance), (4, 41));
    assert_eq!(mem.events("account-m").len(), 4);

    // And: a pending event that no longer applies is dropped
    b.raise_event(withdrawn(41)).unwrap();
    a.raise_event(withdrawn(41)).unwrap();
    b.confirm_events().unwrap();
    assert_apply_error(a.confirm_events(), "account-m", None, INSUFFICIENT_FUNDS);
    assert_eq!((a.version(), a.state().balance), (5, 0));
    assert_eq!(a.unconfirmed_events().len(), 0);
}

#[test]
fn snapshots_work_on_an_in_memory_backend_and_one_ahead_of_the_stream_is_ignored() {
    // Given: an actor on the in-memory backend with a snapshot at 4
    let mem = Arc::new(MemBackend::default());
    let snaps = snapshot_journal(4);
    let acct = given_account(&mem, &snaps, "s", &[1, 2, 3, 4]);
    assert_eq!(acct.snapshot_version(), 4);
    assert_eq!(mem.events("$snapshot-account-s").len(), 1);
    let again = Journaled::activate(mem.clone(), snaps.clone(), "s").unwrap();
    assert_eq!((again.snapshot_version(), again.state()), (4, acct.state()));

    // When: the stream is cut to 2 events (the snapshot now covers more than the stream holds)
    mem.streams.lock().get_mut("account-s").unwrap().truncate(2);
    let (cut, replayed) =
        applies_during(|| Journaled::activate(mem.clone(), snaps.clone(), "s").unwrap());

    // Then: the snapshot is ignored and the two events replayed
    assert_eq!(cut.snapshot_version(), 0);
    assert_eq!(replayed, 2);
    assert_eq!(cut.version(), 2);
    assert_eq!(cut.state(), &fold(&[opened("ann"), deposited(1)]));
}

#[test]
fn confirm_gives_up_with_a_conflict_when_other_writers_keep_getting_in_first() {
    // Given: an open account, and another writer that appends before each of its appends
    let mem = Arc::new(MemBackend::default());
    let mut acct = given_account(&mem, &journal(), "busy", &[]);
    mem.interfere.store(true, Ordering::SeqCst);

    // When
    acct.raise_event(deposited(500)).unwrap();
    let result = acct.confirm_events();

    // Then: a Conflict after MAX_CONFIRM_ATTEMPTS appends; the event is still unconfirmed
    match result {
        Err(Error::Conflict { stream, attempts }) => {
            assert_eq!(stream, "account-busy");
            assert_eq!(attempts, MAX_CONFIRM_ATTEMPTS);
        }
        other => panic!("expected Error::Conflict, got {other:?}"),
    }
    let attempts = u64::from(MAX_CONFIRM_ATTEMPTS);
    assert_eq!(mem.conflicts.load(Ordering::SeqCst) as u64, attempts);
    assert_eq!(mem.events("account-busy").len() as u64, 1 + attempts);
    assert!(!mem.decoded("account-busy").contains(&deposited(500)));
    assert_eq!(acct.version(), 1 + attempts);
    assert_eq!(acct.unconfirmed_events().len(), 1);

    // When: the other writer stops
    mem.interfere.store(false, Ordering::SeqCst);
    acct.confirm_events().unwrap();

    // Then: the event is written once, on top of the others
    assert_eq!(acct.state().balance, attempts + 500);
    assert_eq!(acct.version(), 2 + attempts);
}

#[test]
fn after_a_lost_acknowledgement_a_later_confirm_retries_idempotently() {
    // Given: an open account; the backend stores the next append but reports an I/O error
    let mem = Arc::new(MemBackend::default());
    let mut acct = given_account(&mem, &journal(), "ack", &[]);
    mem.lose_next_ack.store(true, Ordering::SeqCst);
    acct.raise_event(deposited(10)).unwrap();

    // When: the confirm fails, and is called again
    assert!(matches!(acct.confirm_events(), Err(Error::Io { .. })));
    assert_eq!(acct.unconfirmed_events().len(), 1);
    assert_eq!(acct.version(), 1);
    acct.confirm_events().unwrap();

    // Then: the event is stored once
    assert_eq!(
        mem.decoded("account-ack"),
        vec![opened("ann"), deposited(10)]
    );
    assert_eq!((acct.version(), acct.state().balance), (2, 10));
}

/// After a confirm whose append was stored but reported as an I/O error, `refresh()` finds the
/// handle's own events (by their ids) in the stream: they count as confirmed, once.
#[test]
fn after_a_lost_acknowledgement_a_refresh_does_not_apply_the_events_twice() {
    // Given: a confirm whose events were stored although the backend reported an I/O error
    let mem = Arc::new(MemBackend::default());
    let mut acct = given_account(&mem, &journal(), "ack", &[]);
    mem.lose_next_ack.store(true, Ordering::SeqCst);
    acct.raise_event(deposited(10)).unwrap();
    assert!(matches!(acct.confirm_events(), Err(Error::Io { .. })));

    // When: the handle refreshes, then confirms
    acct.refresh().unwrap();
    acct.confirm_events().unwrap();

    // Then: the deposit is in the stream (and the state) once
    assert_eq!(
        mem.decoded("account-ack"),
        vec![opened("ann"), deposited(10)]
    );
    assert_eq!(acct.state().balance, 10);
    assert_eq!(acct.unconfirmed_events().len(), 0);
    assert_eq!(acct.version(), 2);
}

#[test]
fn a_host_on_the_in_memory_backend_reports_a_failed_activation_and_retries_it() {
    // Given: a host on the in-memory backend, an account, and a backend that cannot be read
    let mem = Arc::new(MemBackend::default());
    given_account(&mem, &journal(), "h", &[42]);
    let host: Host<Account, MemBackend> = Host::new(mem.clone(), journal(), 4);
    mem.fail_reads.store(true, Ordering::SeqCst);

    // When: the actor is called
    let failed = host.call("h", |acct| Ok::<_, eventjournal::Error>(acct.version()));

    // Then: the call reports the I/O error
    assert!(matches!(failed, Err(Error::Io { .. })), "{failed:?}");

    // When: the backend is back, and the actor is called again
    mem.fail_reads.store(false, Ordering::SeqCst);
    let (version, balance) = host
        .call("h", |acct| -> eventjournal::Result<_> {
            acct.raise_event(withdrawn(2))?;
            acct.confirm_events()?;
            Ok((acct.version(), acct.state().balance))
        })
        .unwrap();

    // Then: it was activated this time, with its state
    assert_eq!((version, balance), (3, 40));
}

/// `Host::drain`: calls after it fail with `Error::Draining`, a call in progress finishes
/// first, unconfirmed events are confirmed if the store takes them and counted as failed if it
/// refuses them (handed over), and no actor stays active.
#[test]
fn a_drained_host_confirms_or_fails_every_unconfirmed_event_and_deactivates_every_actor() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
    let host = Arc::new(Host::new(
        store.clone(),
        Arc::new(Journal::<Account>::new()),
        100,
    ));
    for id in ["a", "b", "c"] {
        host.call(id, |acct| {
            acct.raise_event(opened(id))?;
            acct.confirm_events()
        })
        .unwrap();
    }
    // Raised, not confirmed: left for the drain.
    host.call("a", |acct| acct.raise_event(deposited(5)))
        .unwrap();
    // A call in progress while the drain starts.
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let busy = {
        let host = host.clone();
        std::thread::spawn(move || {
            host.call("b", |acct| {
                started_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(100));
                acct.raise_event(deposited(7))?;
                acct.confirm_events()
            })
        })
    };
    started_rx.recv().unwrap();
    let drained = host.drain();
    assert!(
        busy.join().unwrap().is_ok(),
        "the call in progress finished"
    );
    assert_eq!(
        (
            drained.deactivated,
            drained.confirmed,
            drained.failed_events
        ),
        (3, 1, 0)
    );
    assert_eq!(host.active(), 0);
    let late = host.call("c", |acct| acct.raise_event(deposited(1)));
    assert!(matches!(late, Err(Error::Draining)), "{late:?}");
    let balance = |id: &str| {
        let fresh = Host::new(store.clone(), Arc::new(Journal::<Account>::new()), 10);
        fresh
            .call(id, |acct| Ok::<_, Error>(acct.state().balance))
            .unwrap()
    };
    assert_eq!((balance("a"), balance("b")), (5, 7));

    // Events the store refuses (it was handed over) are failed, and counted.
    let host = Host::new(store.clone(), Arc::new(Journal::<Account>::new()), 100);
    host.call("c", |acct| {
        acct.raise_events(vec![deposited(1), deposited(2)])
    })
    .unwrap();
    let follower = Store::open_read_only(dir.path(), Options::default()).unwrap();
    let new = follower.take_over(Duration::from_secs(5)).unwrap();
    let drained = host.drain();
    assert_eq!(
        (
            drained.deactivated,
            drained.confirmed,
            drained.failed_events
        ),
        (1, 0, 2)
    );
    let fresh = Host::new(Arc::new(new), Arc::new(Journal::<Account>::new()), 10);
    let c = fresh
        .call("c", |acct| Ok::<_, Error>(acct.state().balance))
        .unwrap();
    assert_eq!(c, 0, "no refused event was written");
}
