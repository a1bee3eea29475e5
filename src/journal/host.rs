//! A host for journaled actors: one activation per actor id in the process, calls to one actor
//! one at a time, calls to different actors in parallel, and idle actors deactivated least
//! recently used first when there are more than the capacity.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Backend, Bincode, Codec, Journal, JournalState, Journaled};
use crate::error::{Error, Result};
use crate::store::Store;

/// One actor's place in the host: empty until activated, and again after a failed activation.
type Slot<S, B, C> = Arc<Mutex<Option<Journaled<S, B, C>>>>;

/// An actor's slot and when it was last called.
type Entry<S, B, C> = (Slot<S, B, C>, u64);

struct Table<S: JournalState, B: Backend, C: Codec> {
    /// Each actor's slot and when it was last called.
    actors: HashMap<Arc<str>, Entry<S, B, C>>,
    /// Actor ids by last call, oldest first.
    by_use: BTreeMap<u64, Arc<str>>,
    clock: u64,
}

/// Keeps the activations of one actor type (Orleans' single-activation guarantee, in-process).
///
/// ```
/// # use eventjournal::journal::*;
/// # use eventjournal::{Options, Store};
/// # use std::sync::Arc;
/// # #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
/// # struct Added(u64);
/// # impl JournalEvent for Added { fn event_type(&self) -> &'static str { "Added" } }
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
/// # struct Counter(u64);
/// # impl JournalState for Counter {
/// #     type Event = Added; type Error = Rejected; const TYPE: &'static str = "counter";
/// #     fn apply(&mut self, e: &Added) -> Result<(), Rejected> { self.0 += e.0; Ok(()) }
/// # }
/// # let dir = tempfile::tempdir()?;
/// let store = Arc::new(Store::open(dir.path(), Options::default())?);
/// let host = Host::new(store, Arc::new(Journal::<Counter>::new()), 1_000);
/// // The closure's error type is the caller's: here the store's own.
/// let total = host.call("visits", |c| -> eventjournal::Result<u64> {
///     c.raise_event(Added(1))?;
///     c.confirm_events()?;
///     Ok(c.state().0)
/// })?;
/// assert_eq!(total, 1);
///
/// // Or the application's, if the store's errors convert into it.
/// #[derive(Debug)]
/// enum AppError { Store(eventjournal::Error), TooMany }
/// impl From<eventjournal::Error> for AppError {
///     fn from(e: eventjournal::Error) -> AppError { AppError::Store(e) }
/// }
/// let r = host.call("visits", |c| {
///     if c.state().0 >= 1 {
///         return Err(AppError::TooMany);
///     }
///     c.raise_event(Added(1))?; // an eventjournal::Error becomes an AppError
///     Ok(c.state().0)
/// });
/// assert!(matches!(r, Err(AppError::TooMany)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Host<S: JournalState, B: Backend = Store, C: Codec = Bincode> {
    backend: Arc<B>,
    journal: Arc<Journal<S, C>>,
    capacity: usize,
    table: Mutex<Table<S, B, C>>,
    /// Set (under the table lock) by `drain`: no slot is handed out any more.
    draining: std::sync::atomic::AtomicBool,
}

/// What [`Host::drain`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Drained {
    /// Actors deactivated.
    pub deactivated: usize,
    /// Actors whose unconfirmed events were confirmed on the way out.
    pub confirmed: usize,
    /// Unconfirmed events that could not be (the store refused them: handed over, closed):
    /// never written, and gone with their actor's activation.
    pub failed_events: usize,
}

impl<S: JournalState, B: Backend, C: Codec> Host<S, B, C> {
    /// A host keeping at most about `capacity` actors active (more while more are in calls, or
    /// hold unconfirmed events).
    pub fn new(backend: Arc<B>, journal: Arc<Journal<S, C>>, capacity: usize) -> Host<S, B, C> {
        Host {
            backend,
            journal,
            capacity: capacity.max(1),
            table: Mutex::new(Table {
                actors: HashMap::new(),
                by_use: BTreeMap::new(),
                clock: 0,
            }),
            draining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Calls `f` on actor `id`, activating it first if it is not active. Calls to one actor run
    /// one at a time, in the order they take its lock; calls to different actors run in
    /// parallel. An activation that fails is reported to this call and tried again by the next.
    ///
    /// `f` returns the application's own error type, any `E` that an [`Error`] converts into
    /// (`eventjournal::Error` itself, or an application enum with a `From<Error>` variant), so
    /// both the journal's errors and the application's flow through `?`; activation errors are
    /// converted the same way.
    pub fn call<R, E>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Journaled<S, B, C>) -> Result<R, E>,
    ) -> Result<R, E>
    where
        E: From<Error>,
    {
        let slot = self.slot(id)?;
        let mut guard = slot.lock();
        // A drain that emptied the table while this call waited for the slot: not activated
        // again.
        if self.draining.load(std::sync::atomic::Ordering::Acquire) && guard.is_none() {
            return Err(Error::Draining.into());
        }
        if guard.is_none() {
            *guard = Some(Journaled::activate(
                self.backend.clone(),
                self.journal.clone(),
                id,
            )?);
        }
        match guard.as_mut() {
            Some(actor) => f(actor),
            None => Err(Error::InvalidInput("internal: actor not activated".into()).into()),
        }
    }

    /// The slot of `id`, made if missing, marked as just used; evicts idle actors over capacity.
    fn slot(&self, id: &str) -> Result<Slot<S, B, C>> {
        let mut table = self.table.lock();
        if self.draining.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::Draining);
        }
        let t = &mut *table;
        t.clock += 1;
        let now = t.clock;
        let slot = match t.actors.get_mut(id) {
            Some((slot, used)) => {
                if let Some(key) = t.by_use.remove(used) {
                    t.by_use.insert(now, key);
                }
                *used = now;
                slot.clone()
            }
            None => {
                let slot: Slot<S, B, C> = Arc::new(Mutex::new(None));
                let key: Arc<str> = Arc::from(id);
                t.actors.insert(key.clone(), (slot.clone(), now));
                t.by_use.insert(now, key);
                slot
            }
        };
        if t.actors.len() > self.capacity {
            Self::evict(t, self.capacity);
        }
        Ok(slot)
    }

    /// Drains the host, for a process that hands its work to another (see
    /// [`Store::take_over`](crate::Store::take_over)): calls from now on fail with
    /// [`Error::Draining`]; each call in progress is waited for; every actor with unconfirmed
    /// events confirms them (or, if the store refuses, they are dropped and counted); every
    /// actor is deactivated. Once it returns, no actor of this host is active, so none is
    /// active in two processes.
    pub fn drain(&self) -> Drained {
        let actors: Vec<Slot<S, B, C>> = {
            let mut table = self.table.lock();
            self.draining
                .store(true, std::sync::atomic::Ordering::Release);
            table.by_use.clear();
            table.actors.drain().map(|(_, (slot, _))| slot).collect()
        };
        let mut drained = Drained::default();
        for slot in actors {
            // Waits for the call that holds it, if any.
            let mut guard = slot.lock();
            if let Some(actor) = guard.as_mut() {
                let unconfirmed = actor.unconfirmed_events().len();
                if unconfirmed > 0 {
                    match actor.confirm_events() {
                        Ok(()) => drained.confirmed += 1,
                        Err(_) => drained.failed_events += actor.unconfirmed_events().len(),
                    }
                }
            }
            *guard = None;
            drained.deactivated += 1;
        }
        drained
    }

    /// Deactivates idle actors, least recently used first, until at most `keep` are active.
    ///
    /// An actor is idle when no call holds or waits for it — slots are handed out only under the
    /// table lock, so a slot referenced by the table alone has no caller — and it has no
    /// unconfirmed events, which deactivation would lose.
    fn evict(t: &mut Table<S, B, C>, keep: usize) -> usize {
        let excess = t.actors.len().saturating_sub(keep);
        // Oldest first, stopping as soon as enough are found: usually the first one.
        let mut victims = Vec::new();
        for (&used, id) in &t.by_use {
            if victims.len() >= excess {
                break;
            }
            let idle = t.actors.get(id).is_some_and(|(slot, _)| {
                Arc::strong_count(slot) == 1
                    && slot.try_lock().is_some_and(|actor| {
                        actor
                            .as_ref()
                            .is_none_or(|a| a.unconfirmed_events().len() == 0)
                    })
            });
            if idle {
                victims.push(used);
            }
        }
        for used in &victims {
            if let Some(id) = t.by_use.remove(used) {
                t.actors.remove(&id);
            }
        }
        victims.len()
    }

    /// Deactivates every idle actor; returns how many were deactivated. The next call to each
    /// activates it again from the store.
    pub fn deactivate_all(&self) -> usize {
        let mut table = self.table.lock();
        Self::evict(&mut table, 0)
    }

    /// How many actors are active (or being activated).
    pub fn active(&self) -> usize {
        self.table.lock().actors.len()
    }

    /// Whether actor `id` is active.
    pub fn is_active(&self, id: &str) -> bool {
        self.table.lock().actors.contains_key(id)
    }
}
