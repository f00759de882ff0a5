use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use moka::Expiry;
use moka::notification::RemovalCause as MokaCause;
use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;

use super::purge::{KeyFilter, PurgeMode, PurgeTarget, softened};
use super::{
    Capabilities, Counters, Listeners, PutIf, RemovalCause, RemovalListener, Store, StoreError,
    StoreErrorKind, StoreFuture, StoreGauges, StoreListener,
};
use crate::clock::Clock;
use crate::entry::CachedResponse;

mod ops;
mod tags;

use tags::TagIndex;

/// An in-process store on [moka](https://docs.rs/moka): bounded in bytes, with a TTL per
/// entry and TinyLFU admission and eviction.
///
/// Entries are kept decoded behind an `Arc`, so a hit clones a pointer: no decoding, no copy
/// of the body. Capacity counts each entry's key, headers, body and bookkeeping
/// ([`CachedResponse::weight`] plus moka's own, about 300 bytes), so that it is close to the
/// heap the entries take; an entry larger than the whole capacity is not kept.
/// Cloning a `MemoryStore` shares its entries.
///
/// Every [`PurgeTarget`] and [`PurgeMode`] is supported. Tagged entries are indexed by tag
/// as they are stored, and leave the index as they leave the store (expired, evicted,
/// replaced or removed): the index never holds more than the entries do. An untagged entry
/// costs the index nothing.
///
/// ```
/// use tower_response_cache::{CacheLayer, MemoryStore};
///
/// let store = MemoryStore::new(256 * 1024 * 1024); // 256 MiB
/// let layer = CacheLayer::new(store.clone());
/// ```
///
/// Entries expire by the system's clock, on moka's timer. A store made
/// [`with_clock`](Self::with_clock) expires them by that clock instead — for tests on
/// Tokio's paused time.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    cache: Cache<String, Slot>,
    tags: Arc<TagIndex>,
    removals: Arc<RemovalCounters>,
    /// The clock entries expire by, when it is not the system's (moka's timer is off then).
    clock: Option<Arc<dyn Clock>>,
    /// When the store was made: deadlines are kept as time since then.
    epoch: Epoch,
}

/// The store's creation, by each clock: deadlines are offsets from it, measured on the
/// system's monotonic clock (as moka's timer is, so that a step of the wall clock moves no
/// deadline) or on the store's own clock.
#[derive(Clone, Copy, Debug)]
struct Epoch {
    monotonic: Instant,
    clock: SystemTime,
}

impl Epoch {
    fn new(clock: Option<&Arc<dyn Clock>>) -> Self {
        Self {
            monotonic: Instant::now(),
            clock: clock.map_or(SystemTime::UNIX_EPOCH, |clock| clock.now()),
        }
    }

    /// The time since the epoch now, by the store's clock (`None`: the system's monotonic
    /// one).
    fn elapsed(&self, clock: Option<&Arc<dyn Clock>>) -> Duration {
        match clock {
            Some(clock) => clock.now().duration_since(self.clock).unwrap_or_default(),
            None => self.monotonic.elapsed(),
        }
    }
}

/// How many entries left a [`MemoryStore`], by cause ([`MemoryStore::removals`]).
/// Expired and evicted entries are counted when moka's housekeeping hands them over
/// (within about a second, or at [`MemoryStore::run_pending_tasks`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Removals {
    /// Entries whose time was up.
    pub expired: u64,
    /// Entries evicted to keep the store within its capacity (or too large to admit).
    pub evicted: u64,
    /// Entries replaced by a newer write of their key (a refresh, a revalidation, a soft
    /// purge, a sliding hit's new expiry).
    pub replaced: u64,
    /// Entries removed on purpose: invalidations, purges, `clear`.
    pub removed: u64,
}

#[derive(Default)]
struct RemovalCounters {
    expired: AtomicU64,
    evicted: AtomicU64,
    replaced: AtomicU64,
    removed: AtomicU64,
    /// Observers of layers on this store, told of each removal
    /// ([`StoreListener::Removals`](super::StoreListener::Removals)).
    listeners: Listeners<RemovalListener>,
}

impl fmt::Debug for RemovalCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemovalCounters")
            .field("removals", &self.snapshot())
            .finish_non_exhaustive()
    }
}

impl RemovalCounters {
    fn count(&self, cause: RemovalCause) {
        let counter = match cause {
            RemovalCause::Expired => &self.expired,
            RemovalCause::Evicted => &self.evicted,
            RemovalCause::Replaced => &self.replaced,
            _ => &self.removed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.listeners.tell(|listener| listener(cause));
    }

    fn listen(&self, listener: Weak<RemovalListener>) {
        self.listeners.add(listener);
    }

    fn snapshot(&self) -> Removals {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Removals {
            expired: load(&self.expired),
            evicted: load(&self.evicted),
            replaced: load(&self.replaced),
            removed: load(&self.removed),
        }
    }
}

#[derive(Clone, Debug)]
struct Slot {
    entry: Arc<CachedResponse>,
    /// When the store drops the entry, as time since the store's [`Epoch`]: kept as it is
    /// by a soft purge, which must not extend an entry's life.
    expires_at: Duration,
    /// Which write this is, so that the tag index is cleaned by the removal of the slot it
    /// describes, not by that of an older slot of the same key.
    id: u64,
}

/// What moka itself keeps per entry (its node, the key's `Arc`, the expiry timer, the
/// frequency sketch's share): about 300 bytes, measured by `cargo bench --bench hit`.
const MOKA_OVERHEAD: usize = 300;

/// The most entries the map is sized for up front.
const MAX_INITIAL_ENTRIES: usize = 1 << 16;

/// Expiry read from each slot, so that every entry lives until its own deadline: on moka's
/// timer when the store keeps the system's time; not at all when it keeps a clock of its
/// own, whose deadlines the reads check.
struct SlotExpiry {
    /// The store's epoch on the monotonic clock; `None` when the store keeps its own clock.
    timed: Option<Instant>,
}

impl SlotExpiry {
    fn after(&self, slot: &Slot, now: Instant) -> Option<Duration> {
        let epoch = self.timed?;
        Some(
            slot.expires_at
                .saturating_sub(now.saturating_duration_since(epoch)),
        )
    }
}

impl Expiry<String, Slot> for SlotExpiry {
    fn expire_after_create(&self, _: &String, slot: &Slot, now: Instant) -> Option<Duration> {
        self.after(slot, now)
    }

    fn expire_after_update(
        &self,
        _: &String,
        slot: &Slot,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.after(slot, now)
    }
}

impl MemoryStore {
    /// A store that holds at most `max_bytes` bytes of entries.
    pub fn new(max_bytes: u64) -> Self {
        Self::build(max_bytes, None)
    }

    /// A store that holds at most `max_bytes` bytes of entries, which expire by `clock`:
    /// with the layer's [`TokioClock`](crate::clock::TokioClock), a test on Tokio's paused
    /// time sees entries leave as the time it advances reaches their TTL.
    ///
    /// moka's timer keeps the system's time, so it is off: an entry past its TTL is gone
    /// for every read, write and purge, and leaves the map when it is next read or written,
    /// or evicted for room ([`keys`](Self::keys) lists only live entries; the entry count
    /// and the weighted size include the expired ones not yet dropped).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use bytes::Bytes;
    /// use http::{HeaderMap, StatusCode};
    /// use tower_response_cache::clock::TokioClock;
    /// use tower_response_cache::store::{PutIf, Store};
    /// use tower_response_cache::{CachedResponse, MemoryStore};
    ///
    /// let store = MemoryStore::with_clock(1 << 20, TokioClock::new());
    /// let entry = Arc::new(CachedResponse::new(StatusCode::OK, HeaderMap::new(), Bytes::from("hi")));
    /// store.put("k", entry, Duration::from_secs(60), PutIf::Always).await.unwrap();
    /// tokio::time::sleep(Duration::from_secs(59)).await; // paused: at once
    /// assert!(store.get("k").await.unwrap().is_some());
    /// tokio::time::sleep(Duration::from_secs(1)).await;
    /// assert!(store.get("k").await.unwrap().is_none());
    /// # }
    /// ```
    pub fn with_clock(max_bytes: u64, clock: impl Clock) -> Self {
        Self::build(max_bytes, Some(Arc::new(clock)))
    }

    fn build(max_bytes: u64, clock: Option<Arc<dyn Clock>>) -> Self {
        let tags = Arc::new(TagIndex::default());
        let index = Arc::clone(&tags);
        let removals = Arc::new(RemovalCounters::default());
        let counted = Arc::clone(&removals);
        let epoch = Epoch::new(clock.as_ref());
        let expired_by = clock.clone();
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            // Room for an entry per 2 KiB up to 65 536 entries (about 1 MiB of table): a
            // filling store does not rehash its way up, and a large capacity that stays
            // empty does not reserve much.
            .initial_capacity(
                usize::try_from(max_bytes / 2048)
                    .unwrap_or(MAX_INITIAL_ENTRIES)
                    .min(MAX_INITIAL_ENTRIES),
            )
            .weigher(|key: &String, slot: &Slot| {
                u32::try_from(key.len() + MOKA_OVERHEAD + slot.entry.weight()).unwrap_or(u32::MAX)
            })
            .expire_after(SlotExpiry {
                timed: clock.is_none().then_some(epoch.monotonic),
            })
            // However a tagged slot leaves (expired, evicted, replaced, removed), its tags
            // leave the index with it; and every removal is counted by its cause.
            .eviction_listener(move |key: Arc<String>, slot: Slot, cause: MokaCause| {
                if !slot.entry.tags.is_empty() {
                    index.removed(&key, slot.id);
                }
                counted.count(match cause {
                    MokaCause::Expired => RemovalCause::Expired,
                    // Dropped by a read past its deadline, on a store with a clock.
                    MokaCause::Explicit
                        if expired_by.is_some()
                            && slot.expires_at <= epoch.elapsed(expired_by.as_ref()) =>
                    {
                        RemovalCause::Expired
                    }
                    MokaCause::Size => RemovalCause::Evicted,
                    MokaCause::Replaced => RemovalCause::Replaced,
                    MokaCause::Explicit => RemovalCause::Removed,
                });
            })
            .build();
        Self {
            cache,
            tags,
            removals,
            clock,
            epoch,
        }
    }

    /// The time now, by the store's clock.
    fn now(&self) -> SystemTime {
        match &self.clock {
            Some(clock) => clock.now(),
            None => SystemTime::now(),
        }
    }

    /// The deadline `ttl` from now, as time since the store's epoch: at most a century
    /// ahead, as deadlines were before they were offsets (a longer TTL is no different in
    /// practice, and the sum cannot overflow).
    fn deadline(&self, ttl: Duration) -> Duration {
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        self.epoch
            .elapsed(self.clock.as_ref())
            .saturating_add(ttl.min(CENTURY))
    }

    /// Whether a slot's time is not up. moka does not hand out expired slots on its timer;
    /// on a clock of the store's own, this is what keeps them out.
    fn live(&self, slot: &Slot) -> bool {
        self.clock.is_none() || slot.expires_at > self.epoch.elapsed(self.clock.as_ref())
    }

    /// How many entries left the store so far, by cause: for gauges and for telling a
    /// store too small (many `evicted`) from short TTLs (many `expired`).
    ///
    /// ```
    /// use tower_response_cache::MemoryStore;
    ///
    /// let store = MemoryStore::new(64 << 20);
    /// let removals = store.removals();
    /// assert_eq!(removals.evicted + removals.expired, 0);
    /// ```
    pub fn removals(&self) -> Removals {
        self.removals.snapshot()
    }

    /// The number of entries (approximate until [`run_pending_tasks`](Self::run_pending_tasks)).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// The bytes the entries weigh (approximate until
    /// [`run_pending_tasks`](Self::run_pending_tasks)).
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Empties the store now (what `clear` does, without the future).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn clear_now(&self) {
        self.cache.invalidate_all();
    }

    /// Applies pending evictions and expirations now, so that the counts are exact.
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }

    /// How many distinct tags the tag index holds, and how many tagged entries: for
    /// inspection (the index shrinks as tagged entries leave; call
    /// [`run_pending_tasks`](Self::run_pending_tasks) first for expired ones).
    pub fn tag_index_len(&self) -> (usize, usize) {
        let state = self.tags.lock();
        (state.by_tag.len(), state.by_key.len())
    }

    /// The keys of the entries held now, in no particular order: for inspection and tests
    /// (it visits every entry).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use bytes::Bytes;
    /// use http::{HeaderMap, StatusCode};
    /// use tower_response_cache::store::{PutIf, Store};
    /// use tower_response_cache::{CachedResponse, MemoryStore};
    ///
    /// let store = MemoryStore::new(1 << 20);
    /// let entry = Arc::new(CachedResponse::new(StatusCode::OK, HeaderMap::new(), Bytes::from("hi")));
    /// let ttl = Duration::from_secs(60);
    /// store.put("app:GET:/a", entry, ttl, PutIf::Always).await.unwrap();
    /// assert_eq!(store.keys(), ["app:GET:/a"]);
    /// # }
    /// ```
    pub fn keys(&self) -> Vec<String> {
        self.cache
            .iter()
            .filter(|(_, slot)| self.live(slot))
            .map(|(key, _)| (*key).clone())
            .collect()
    }

    fn lookup(&self, key: &str) -> Option<Arc<CachedResponse>> {
        self.live_slot(key).map(|slot| slot.entry)
    }

    /// The slot under `key` if its time is not up; one that is up (on a clock of the
    /// store's own) is dropped.
    #[inline]
    fn live_slot(&self, key: &str) -> Option<Slot> {
        let slot = self.cache.get(key)?;
        if self.clock.is_some() && !self.live(&slot) {
            self.drop_expired(key, slot.id);
            return None;
        }
        Some(slot)
    }

    /// Drops the slot `id` under `key`, whose time is up by the store's clock (not a
    /// newer slot written meanwhile).
    #[cold]
    #[inline(never)]
    fn drop_expired(&self, key: &str, id: u64) {
        self.remove_if(key, |existing| existing.id == id);
    }

    /// A new slot for `entry`, indexed by its tags if it has any (called where the slot is
    /// written: under the key's lock, or before an insert that replaces no tagged slot).
    fn slot(&self, key: &str, entry: Arc<CachedResponse>, expires_at: Duration) -> Slot {
        let id = self.tags.next_id();
        if !entry.tags.is_empty() {
            self.tags.set(key, id, &entry.tags);
        }
        Slot {
            entry,
            expires_at,
            id,
        }
    }

    /// Removes the slot under `key` if `condition` holds for it; whether it did.
    fn remove_if(&self, key: &str, condition: impl FnOnce(&Slot) -> bool) -> bool {
        let result = self
            .cache
            .entry_by_ref(key)
            .and_compute_with(|existing| match existing {
                Some(existing) if condition(existing.value()) => Op::Remove,
                _ => Op::Nop,
            });
        matches!(result, CompResult::Removed(_))
    }

    /// Makes the entry under `key` stale now if `condition` holds for it and it is fresh;
    /// whether it did. Atomic with respect to the key's other writers: a removed entry is
    /// not revived, and the entry's deadline in the store stays as it was.
    fn soften_if(&self, key: &str, condition: impl FnOnce(&CachedResponse) -> bool) -> bool {
        let now = self.now();
        let result = self.cache.entry_by_ref(key).and_compute_with(|existing| {
            let Some(existing) = existing else {
                return Op::Nop;
            };
            let slot = existing.value();
            if !self.live(slot) || !condition(&slot.entry) {
                return Op::Nop;
            }
            match softened(&slot.entry, now) {
                Some(soft) => Op::Put(self.slot(key, Arc::new(soft), slot.expires_at)),
                None => Op::Nop,
            }
        });
        matches!(result, CompResult::ReplacedWith(_))
    }

    fn purge_keys<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
        mode: PurgeMode,
        condition: impl Fn(&CachedResponse) -> bool,
    ) -> u64 {
        let purged = keys.into_iter().filter(|key| match mode {
            PurgeMode::Hard => {
                self.remove_if(key, |slot| self.live(slot) && condition(&slot.entry))
            }
            PurgeMode::Soft => self.soften_if(key, &condition),
        });
        purged.count() as u64
    }

    /// Stores `entry` under `key` for `ttl`, whatever the key holds.
    fn put_now(&self, key: &str, entry: Arc<CachedResponse>, ttl: Duration) {
        let expires_at = self.deadline(ttl);
        if entry.tags.is_empty() {
            // Nothing to index: a tagged slot it replaces is cleaned by its removal.
            let id = self.tags.next_id();
            self.cache.insert(
                key.to_owned(),
                Slot {
                    entry,
                    expires_at,
                    id,
                },
            );
        } else {
            self.cache
                .entry_by_ref(key)
                .and_compute_with(|_| Op::Put(self.slot(key, entry, expires_at)));
        }
    }

    /// Stores `entry` under `key` for `ttl` unless `keep(existing, entry)` says the live
    /// entry the key holds stays, in one step for the other writers of the key; whether it
    /// stored.
    fn put_unless(
        &self,
        key: &str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
        keep: impl FnOnce(&CachedResponse, &CachedResponse) -> bool,
    ) -> bool {
        let result = self
            .cache
            .entry_by_ref(key)
            .and_compute_with(|existing| match existing {
                Some(existing)
                    if self.live(existing.value()) && keep(&existing.value().entry, &entry) =>
                {
                    Op::Nop
                }
                _ => Op::Put(self.slot(key, entry, self.deadline(ttl))),
            });
        !matches!(result, CompResult::Unchanged(_) | CompResult::StillNone(_))
    }

    fn keys_matching(&self, prefix: &str, filter: Option<&KeyFilter>) -> Vec<Arc<String>> {
        self.cache
            .iter()
            .filter(|(key, slot)| {
                self.live(slot) && PurgeTarget::prefix_matches(prefix, filter, key)
            })
            .map(|(key, _)| key)
            .collect()
    }
}

#[cfg(test)]
mod tests;
