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
use crate::entry::CachedResponse;

mod ops;
mod tags;

use ops::deadline;
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
#[derive(Clone, Debug)]
pub struct MemoryStore {
    cache: Cache<String, Slot>,
    tags: Arc<TagIndex>,
    removals: Arc<RemovalCounters>,
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
    /// When the store drops the entry: kept as it is by a soft purge, which must not extend
    /// an entry's life.
    expires_at: Instant,
    /// Which write this is, so that the tag index is cleaned by the removal of the slot it
    /// describes, not by that of an older slot of the same key.
    id: u64,
}

/// What moka itself keeps per entry (its node, the key's `Arc`, the expiry timer, the
/// frequency sketch's share): about 300 bytes, measured by `cargo bench --bench hit`.
const MOKA_OVERHEAD: usize = 300;

/// The most entries the map is sized for up front.
const MAX_INITIAL_ENTRIES: usize = 1 << 16;

/// Expiry read from each slot, so that every entry lives until its own deadline.
struct SlotExpiry;

impl Expiry<String, Slot> for SlotExpiry {
    fn expire_after_create(&self, _: &String, slot: &Slot, now: Instant) -> Option<Duration> {
        Some(slot.expires_at.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &String,
        slot: &Slot,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(slot.expires_at.saturating_duration_since(now))
    }
}

impl MemoryStore {
    /// A store that holds at most `max_bytes` bytes of entries.
    pub fn new(max_bytes: u64) -> Self {
        let tags = Arc::new(TagIndex::default());
        let index = Arc::clone(&tags);
        let removals = Arc::new(RemovalCounters::default());
        let counted = Arc::clone(&removals);
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
            .expire_after(SlotExpiry)
            // However a tagged slot leaves (expired, evicted, replaced, removed), its tags
            // leave the index with it; and every removal is counted by its cause.
            .eviction_listener(move |key: Arc<String>, slot: Slot, cause: MokaCause| {
                if !slot.entry.tags.is_empty() {
                    index.removed(&key, slot.id);
                }
                counted.count(match cause {
                    MokaCause::Expired => RemovalCause::Expired,
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
        }
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
        self.cache.iter().map(|(key, _)| (*key).clone()).collect()
    }

    fn lookup(&self, key: &str) -> Option<Arc<CachedResponse>> {
        self.cache.get(key).map(|slot| slot.entry)
    }

    /// A new slot for `entry`, indexed by its tags if it has any (called where the slot is
    /// written: under the key's lock, or before an insert that replaces no tagged slot).
    fn slot(&self, key: &str, entry: Arc<CachedResponse>, expires_at: Instant) -> Slot {
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

    /// Removes the entry under `key` if `condition` holds for it; whether it did.
    fn remove_if(&self, key: &str, condition: impl FnOnce(&CachedResponse) -> bool) -> bool {
        let result = self
            .cache
            .entry_by_ref(key)
            .and_compute_with(|existing| match existing {
                Some(existing) if condition(&existing.value().entry) => Op::Remove,
                _ => Op::Nop,
            });
        matches!(result, CompResult::Removed(_))
    }

    /// Makes the entry under `key` stale now if `condition` holds for it and it is fresh;
    /// whether it did. Atomic with respect to the key's other writers: a removed entry is
    /// not revived, and the entry's deadline in the store stays as it was.
    fn soften_if(&self, key: &str, condition: impl FnOnce(&CachedResponse) -> bool) -> bool {
        let now = SystemTime::now();
        let result = self.cache.entry_by_ref(key).and_compute_with(|existing| {
            let Some(existing) = existing else {
                return Op::Nop;
            };
            let slot = existing.value();
            if !condition(&slot.entry) {
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
            PurgeMode::Hard => self.remove_if(key, &condition),
            PurgeMode::Soft => self.soften_if(key, &condition),
        });
        purged.count() as u64
    }

    /// Stores `entry` under `key` for `ttl`, whatever the key holds.
    fn put_now(&self, key: &str, entry: Arc<CachedResponse>, ttl: Duration) {
        let expires_at = deadline(ttl);
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

    /// Stores `entry` under `key` for `ttl` unless `keep(existing, entry)` says the entry
    /// the key holds stays, in one step for the other writers of the key; whether it
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
                Some(existing) if keep(&existing.value().entry, &entry) => Op::Nop,
                _ => Op::Put(self.slot(key, entry, deadline(ttl))),
            });
        !matches!(result, CompResult::Unchanged(_) | CompResult::StillNone(_))
    }

    fn keys_matching(&self, prefix: &str, filter: Option<&KeyFilter>) -> Vec<Arc<String>> {
        self.cache
            .iter()
            .filter(|(key, _)| PurgeTarget::prefix_matches(prefix, filter, key))
            .map(|(key, _)| key)
            .collect()
    }
}

#[cfg(test)]
mod tests;
