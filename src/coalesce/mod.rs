//! Request coalescing: one origin call per key at a time.
//!
//! The first request that misses a key (or refreshes it) becomes the *leader* of a flight
//! and calls the service; the requests for the same key that arrive meanwhile *wait* for the
//! flight, bounded by a timeout, and are answered from the complete response the leader
//! receives — what Varnish's waiting list and nginx's `proxy_cache_lock` do. A waiter whose
//! wait times out, or whose flight ends without a storable response (or with an error), goes
//! to the service itself; if the leader was cancelled, the waiters elect a new one.
//!
//! A flight whose response could not be stored leaves a *hit-for-miss* mark on its key for a
//! short while: requests for a key that is not cacheable are not serialized behind each
//! other.
//!
//! The map of flights is bounded and every flight is removed when its leader finishes, fails,
//! is cancelled or panics (the leader's [`FlightGuard`] does it on drop). A flight older than
//! the coalescing timeout (a leader whose client stopped reading) is not waited for: the next
//! request starts a new one.

// Over 600 lines: the in-flight map, its lead and the shared store's fill lease (about
// 440 lines), then their tests.

mod lock;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::entry::CachedResponse;
use crate::store::{FillLock, Store};

pub(crate) use lock::{LockWait, Locked, take_fill_lock};

/// How a flight ended, as its waiters see it.
#[derive(Clone, Debug)]
pub(crate) enum Landing {
    /// Still in the air.
    Pending,
    /// The complete, storable response.
    Ready(Arc<CachedResponse>),
    /// No response to share. With `retry` (the leader was cancelled or its client went
    /// away) the waiters elect a new leader; without (the response was not storable, or the
    /// fetch failed) each fetches for itself.
    Fallback { retry: bool },
}

/// What a request is to do about a key.
pub(crate) enum Join {
    /// Fetch, and publish the outcome through the guard.
    Leader(FlightGuard),
    /// Wait for the leader.
    Waiter(watch::Receiver<Landing>),
    /// Fetch alone: the key is marked hit-for-miss, or the map is full.
    Alone,
}

#[derive(Debug)]
struct Flight {
    /// Identifies the flight, so that a late guard never removes its successor.
    id: u64,
    started: Instant,
    tx: watch::Sender<Landing>,
    /// A shared store's fill lock a waiter took with its lookup, handed to the leader
    /// (released with the flight if the leader does not take it).
    handoff: Option<FillLease>,
    /// Woken by a hand-off, for a leader waiting on another process's lock
    /// ([`FlightGuard::handoff_wake`]).
    handoff_wake: Option<Arc<Notify>>,
}

#[derive(Debug, Default)]
struct Flights {
    next_id: u64,
    in_flight: HashMap<String, Flight>,
    /// Keys whose last fetch was not storable, until when.
    hit_for_miss: HashMap<String, Instant>,
}

/// The lead of a fetch: the flight its waiters joined, and the shared store's fill lock
/// when there is one.
#[derive(Debug)]
pub(crate) struct Lead {
    guard: FlightGuard,
    lease: Option<FillLease>,
}

impl Lead {
    pub(crate) fn new(guard: FlightGuard, lease: Option<FillLease>) -> Self {
        Self { guard, lease }
    }

    /// The fetch delivered `entry`: the waiters get it now. The flight stays joinable (the
    /// returned [`Landed`]) and the lock held until the entry is written.
    pub(crate) fn ready(self, entry: Arc<CachedResponse>) -> (Landed, Option<FillLease>) {
        (self.guard.ready(entry), self.lease)
    }

    /// The fetch has nothing to share: the waiters try for themselves, and for a while the
    /// key's requests are not serialized when `not_cacheable` (hit-for-miss). The lock goes.
    pub(crate) fn fallback(self, not_cacheable: bool) {
        self.guard.fallback(not_cacheable);
    }
}

/// The in-flight map of one layer.
#[derive(Debug)]
pub(crate) struct Coalescer {
    flights: Mutex<Flights>,
    max_flights: usize,
    hit_for_miss: Duration,
    /// A flight older than this is stale (a leader whose client stopped reading): new
    /// requests do not wait for it (nginx's `proxy_cache_lock_age`).
    max_age: Duration,
    /// Flights that landed with an entry not yet written: read without the lock, so that a
    /// hit looks for a newer landed entry only when there may be one.
    landed: AtomicUsize,
    /// Flights ended so far, by a stripe of their key ([`stripe`]): a request that missed
    /// in the store, then finds no flight to join, looks again if one of its stripe ended
    /// in between (it may have written the entry). Striped so that misses of other keys
    /// ending meanwhile seldom send a miss to the store a second time.
    ended: [AtomicU64; ENDED_STRIPES],
}

/// How many counts of ended flights a coalescer keeps.
const ENDED_STRIPES: usize = 64;

/// The stripe of the count of ended flights a key's flights move: from the key without
/// its variant slot (a variant's flight may write the entry a request for the key finds),
/// its length and its last eight bytes (where keys of one route differ most), mixed. Keys
/// that share a stripe only look again when they need not: never the other way round.
fn stripe(key: &str) -> usize {
    let key = crate::key::CacheKey::without_slot(key).as_bytes();
    let mut tail = [0u8; 8];
    let from = key.len().saturating_sub(8);
    tail[..key.len() - from].copy_from_slice(&key[from..]);
    let mixed = (u64::from_le_bytes(tail) ^ key.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // The top bits: as many as there are stripes.
    (mixed >> (64 - ENDED_STRIPES.trailing_zeros())) as usize
}

/// Keys fetched at once that other requests can wait for; past it requests fetch alone.
const MAX_FLIGHTS: usize = 10_000;

impl Coalescer {
    /// An empty map: uncacheable keys are not serialized for `hit_for_miss`, and a request
    /// waits for another's fetch up to `timeout`.
    pub(crate) fn new(hit_for_miss: Duration, timeout: Duration) -> Self {
        Self::with_capacity(MAX_FLIGHTS, hit_for_miss, timeout)
    }

    pub(crate) fn with_capacity(
        max_flights: usize,
        hit_for_miss: Duration,
        timeout: Duration,
    ) -> Self {
        Self {
            flights: Mutex::new(Flights::default()),
            max_flights,
            hit_for_miss,
            max_age: timeout,
            landed: AtomicUsize::new(0),
            ended: [const { AtomicU64::new(0) }; ENDED_STRIPES],
        }
    }

    /// How long a request waits for another's fetch (and how old a flight may be to be
    /// joined).
    pub(crate) fn timeout(&self) -> Duration {
        self.max_age
    }

    /// How long an uncacheable key's requests are not serialized.
    pub(crate) fn hit_for_miss(&self) -> Duration {
        self.hit_for_miss
    }

    /// Removes the flight for `key` from the map, keeping the count of landed ones.
    /// How many flights of `key`'s stripe have ended so far: noted before a store lookup,
    /// compared when the request that missed would lead a fetch.
    pub(crate) fn ended(&self, key: &str) -> u64 {
        self.ended[stripe(key)].load(Ordering::Acquire)
    }

    fn take(&self, flights: &mut Flights, key: &str) -> Option<Flight> {
        let flight = flights.in_flight.remove(key)?;
        self.ended[stripe(key)].fetch_add(1, Ordering::AcqRel);
        if matches!(*flight.tx.borrow(), Landing::Ready(_)) {
            self.landed.fetch_sub(1, Ordering::Relaxed);
        }
        Some(flight)
    }

    /// The entry a flight for `key` landed with, if it is newer than `than` (which the
    /// store returned): its write is under way, and until it is done a request must not be
    /// answered with what it replaces.
    pub(crate) fn newer_landed(
        &self,
        key: &str,
        than: &CachedResponse,
    ) -> Option<Arc<CachedResponse>> {
        if self.landed.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let flights = self.lock();
        let flight = flights.in_flight.get(key)?;
        match &*flight.tx.borrow() {
            Landing::Ready(entry) if entry.stored_at > than.stored_at => Some(Arc::clone(entry)),
            _ => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Flights> {
        // A panic while holding this short lock cannot leave the maps half-updated in a way
        // that matters: the worst is a stale mark, which expires.
        match self.flights.lock() {
            Ok(flights) => flights,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Joins the flight for `key`, or starts one.
    pub(crate) fn join(self: &Arc<Self>, key: &str) -> Join {
        self.join_locked(&mut self.lock(), key)
    }

    /// Joins the flight for `key` as [`join`](Self::join) does, except that a flight that
    /// landed with `rejected` (an entry this request may not take: another variant, older
    /// than it accepts) is not joined again but replaced by a new one: the request leads the
    /// next fetch, or waits for one under way, instead of fetching outside any flight.
    pub(crate) fn join_past(self: &Arc<Self>, key: &str, rejected: &Arc<CachedResponse>) -> Join {
        let mut flights = self.lock();
        let landed_with_rejected = flights.in_flight.get(key).is_some_and(|flight| {
            matches!(&*flight.tx.borrow(), Landing::Ready(entry) if Arc::ptr_eq(entry, rejected))
        });
        if landed_with_rejected {
            // Its `Landed` removes nothing later: the ids differ.
            self.take(&mut flights, key);
        }
        self.join_locked(&mut flights, key)
    }

    fn join_locked(self: &Arc<Self>, flights: &mut Flights, key: &str) -> Join {
        if let Some(flight) = flights.in_flight.get(key) {
            if flight.started.elapsed() < self.max_age {
                return Join::Waiter(flight.tx.subscribe());
            }
            // Stale: replaced by a new flight below; its late landing is ignored (ids).
            self.take(flights, key);
        }
        if let Some(until) = flights.hit_for_miss.get(key) {
            if Instant::now() < *until {
                return Join::Alone;
            }
            flights.hit_for_miss.remove(key);
        }
        if flights.in_flight.len() >= self.max_flights {
            return Join::Alone;
        }
        flights.next_id += 1;
        let id = flights.next_id;
        let (tx, _) = watch::channel(Landing::Pending);
        let flight = Flight {
            id,
            started: Instant::now(),
            tx,
            handoff: None,
            handoff_wake: None,
        };
        flights.in_flight.insert(key.to_owned(), flight);
        Join::Leader(FlightGuard {
            coalescer: Arc::clone(self),
            key: key.to_owned(),
            id,
            landed: false,
        })
    }

    /// Publishes how flight `id` ended; the flight leaves the map unless it landed with an
    /// entry (it stays until the entry is written, see [`Landed`]).
    fn land(&self, key: &str, id: u64, landing: Landing, hit_for_miss: bool) {
        let mut flights = self.lock();
        if flights
            .in_flight
            .get(key)
            .is_some_and(|flight| flight.id == id)
        {
            if matches!(landing, Landing::Ready(_)) {
                if let Some(flight) = flights.in_flight.get(key) {
                    flight.tx.send_replace(landing);
                    self.landed.fetch_add(1, Ordering::Relaxed);
                }
            } else if let Some(flight) = self.take(&mut flights, key) {
                flight.tx.send_replace(landing);
            }
        }
        if hit_for_miss && !self.hit_for_miss.is_zero() {
            let now = Instant::now();
            if flights.hit_for_miss.len() >= self.max_flights {
                flights.hit_for_miss.retain(|_, until| *until > now);
            }
            if flights.hit_for_miss.len() < self.max_flights {
                flights
                    .hit_for_miss
                    .insert(key.to_owned(), now + self.hit_for_miss);
            }
        }
    }

    fn remove(&self, key: &str, id: u64) {
        let mut flights = self.lock();
        if flights
            .in_flight
            .get(key)
            .is_some_and(|flight| flight.id == id)
        {
            self.take(&mut flights, key);
        }
    }

    /// Hands a fill lock taken by a request that then joined the flight for `key` as a
    /// waiter to that flight's leader; given back when there is no flight to take it.
    pub(crate) fn hand_off(&self, key: &str, lease: FillLease) -> Option<FillLease> {
        let mut flights = self.lock();
        match flights.in_flight.get_mut(key) {
            Some(flight) if flight.handoff.is_none() => {
                flight.handoff = Some(lease);
                if let Some(wake) = &flight.handoff_wake {
                    // A permit if the leader is not waiting yet: never lost.
                    wake.notify_one();
                }
                None
            }
            _ => Some(lease),
        }
    }

    /// Drops the flight for `key`, if any: a request that comes after an invalidation must
    /// not be answered by a fetch that began before it. Its waiters elect a new leader.
    pub(crate) fn forget(&self, key: &str) {
        self.take(&mut self.lock(), key);
    }

    /// Drops the flights whose keys `covers` accepts (a purge of a prefix or of a tag).
    pub(crate) fn forget_where(&self, covers: impl Fn(&str) -> bool) {
        let mut flights = self.lock();
        let keys: Vec<String> = flights
            .in_flight
            .keys()
            .filter(|key| covers(key))
            .cloned()
            .collect();
        for key in keys {
            self.take(&mut flights, &key);
        }
    }

    /// How many flights are in the air (for tests and metrics).
    pub(crate) fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }
}

/// The leader's side of a flight: publishes how it ended, and ends it on drop (a cancelled
/// or panicking leader lets its waiters go to the service).
#[derive(Debug)]
pub(crate) struct FlightGuard {
    coalescer: Arc<Coalescer>,
    key: String,
    id: u64,
    landed: bool,
}

impl FlightGuard {
    /// A fill lock a waiter of this flight handed over, if one did.
    pub(crate) fn take_handoff(&self) -> Option<FillLease> {
        let mut flights = self.coalescer.lock();
        flights
            .in_flight
            .get_mut(&self.key)
            .filter(|flight| flight.id == self.id)
            .and_then(|flight| flight.handoff.take())
    }

    /// What a hand-off to this flight wakes: a leader waiting for another process's lock
    /// sleeps on it too, so that a lock a waiter took reaches it at once. `None` when the
    /// flight is gone.
    pub(crate) fn handoff_wake(&self) -> Option<Arc<Notify>> {
        let mut flights = self.coalescer.lock();
        let flight = flights
            .in_flight
            .get_mut(&self.key)
            .filter(|flight| flight.id == self.id)?;
        let pending = flight.handoff.is_some();
        let wake = flight.handoff_wake.get_or_insert_with(|| {
            let wake = Notify::new();
            if pending {
                // Handed off before anyone listened: the first wait ends at once.
                wake.notify_one();
            }
            Arc::new(wake)
        });
        Some(Arc::clone(wake))
    }

    /// The complete response: waiters, and requests that join until the entry is written,
    /// are answered with it. Drop the returned [`Landed`] once the store has the entry.
    pub(crate) fn ready(mut self, entry: Arc<CachedResponse>) -> Landed {
        self.landed = true;
        self.coalescer
            .land(&self.key, self.id, Landing::Ready(entry), false);
        Landed {
            coalescer: Arc::clone(&self.coalescer),
            key: std::mem::take(&mut self.key),
            id: self.id,
        }
    }

    /// Nothing to share: each waiter fetches for itself. With `not_cacheable`, the key is
    /// also marked hit-for-miss.
    pub(crate) fn fallback(mut self, not_cacheable: bool) {
        self.landed = true;
        self.coalescer.land(
            &self.key,
            self.id,
            Landing::Fallback { retry: false },
            not_cacheable,
        );
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        // Cancelled, panicked, or its client went away: the fetch may well succeed for
        // another request, so the waiters elect a new leader.
        if !self.landed {
            self.coalescer
                .land(&self.key, self.id, Landing::Fallback { retry: true }, false);
        }
    }
}

/// A flight that landed with an entry: it stays joinable (answering at once) until this is
/// dropped, after the entry is written, so that no request misses in between.
#[derive(Debug)]
pub(crate) struct Landed {
    coalescer: Arc<Coalescer>,
    key: String,
    id: u64,
}

impl Drop for Landed {
    fn drop(&mut self) {
        self.coalescer.remove(&self.key, self.id);
    }
}

/// A fill lock held in a shared store ([`SharedStore::lock_fill`](crate::store::SharedStore::lock_fill)):
/// released once the entry is written, or, if the fetch ends otherwise, when dropped (on a
/// spawned task; the lock expires by itself anyway).
pub(crate) struct FillLease {
    store: Arc<dyn Store>,
    key: String,
    lock: Option<FillLock>,
}

impl FillLease {
    pub(crate) fn new(store: Arc<dyn Store>, key: &str, lock: FillLock) -> Self {
        Self {
            store,
            key: key.to_owned(),
            lock: Some(lock),
        }
    }

    /// The key the lock is for.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The lock, while this lease holds it.
    pub(crate) fn lock(&self) -> Option<&FillLock> {
        self.lock.as_ref()
    }

    /// The store released the lock (with the write that ended the fill): nothing is left
    /// to release.
    pub(crate) fn released(&mut self) {
        self.lock = None;
    }

    pub(crate) async fn release(mut self) {
        if let Some(lock) = self.lock.take() {
            release(Arc::clone(&self.store), std::mem::take(&mut self.key), lock).await;
        }
    }
}

impl Drop for FillLease {
    fn drop(&mut self) {
        if let Some(lock) = self.lock.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let key = std::mem::take(&mut self.key);
            runtime.spawn(release(Arc::clone(&self.store), key, lock));
        }
    }
}

impl std::fmt::Debug for FillLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FillLease")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

async fn release(store: Arc<dyn Store>, key: String, lock: FillLock) {
    let Some(shared) = store.shared() else {
        return;
    };
    if let Err(error) = shared.unlock_fill(&key, lock).await {
        // Harmless: the lock expires by itself.
        tracing::debug!(%error, key, "releasing a fill lock failed");
    }
}

/// Waits for a flight to land, at most `timeout`; `None` on timeout.
pub(crate) async fn wait(mut rx: watch::Receiver<Landing>, timeout: Duration) -> Option<Landing> {
    let landed = async {
        match rx
            .wait_for(|landing| !matches!(landing, Landing::Pending))
            .await
        {
            Ok(landing) => landing.clone(),
            // The sender is gone without a landing: as if the leader was cancelled.
            Err(_) => Landing::Fallback { retry: true },
        }
    };
    tokio::time::timeout(timeout, landed).await.ok()
}

#[cfg(test)]
mod tests;
