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

/// Tag → keys, and the tagged slot each key holds, behind one lock taken only by writes of
/// tagged entries, removals of tagged entries and purges by tag.
#[derive(Debug, Default)]
struct TagIndex {
    next_id: AtomicU64,
    state: Mutex<Tagged>,
}

#[derive(Debug, Default)]
struct Tagged {
    by_tag: HashMap<String, HashSet<String>>,
    /// The id of the tagged slot each key holds, with its tags.
    by_key: HashMap<String, (u64, Vec<String>)>,
}

impl TagIndex {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Tagged> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Records that `key` now holds slot `id` with `tags` (called as the slot is written,
    /// under the key's lock): the key leaves the tags it no longer has.
    fn set(&self, key: &str, id: u64, tags: &[String]) {
        let mut state = self.lock();
        let state = &mut *state;
        if let Some((_, old)) = state.by_key.remove(key) {
            for tag in old.iter().filter(|tag| !tags.contains(tag)) {
                remove_member(&mut state.by_tag, tag, key);
            }
        }
        if tags.is_empty() {
            return;
        }
        for tag in tags {
            state
                .by_tag
                .entry(tag.clone())
                .or_default()
                .insert(key.to_owned());
        }
        state.by_key.insert(key.to_owned(), (id, tags.to_vec()));
    }

    /// Slot `id` of `key` left the store: its tags leave the index, unless a later slot of
    /// the key owns them now.
    fn removed(&self, key: &str, id: u64) {
        let mut state = self.lock();
        let state = &mut *state;
        if state.by_key.get(key).is_some_and(|(owner, _)| *owner == id)
            && let Some((_, tags)) = state.by_key.remove(key)
        {
            for tag in &tags {
                remove_member(&mut state.by_tag, tag, key);
            }
        }
    }

    /// The keys tagged `tag` that start with `within`.
    fn members(&self, tag: &str, within: &str) -> Vec<String> {
        self.lock().by_tag.get(tag).map_or_else(Vec::new, |keys| {
            keys.iter()
                .filter(|key| key.starts_with(within))
                .cloned()
                .collect()
        })
    }
}

fn remove_member(by_tag: &mut HashMap<String, HashSet<String>>, tag: &str, key: &str) {
    if let Some(keys) = by_tag.get_mut(tag) {
        keys.remove(key);
        if keys.is_empty() {
            by_tag.remove(tag);
        }
    }
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

// moka's operations do not wait on I/O: every method completes in its first poll, and a
// lookup is answered by `get_now` without a future at all.
impl Store for MemoryStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            reads_in_place: true,
            writes_in_place: true,
            touch: true,
            prefix_purges: true,
            filtered_prefix_purges: true,
            tag_purges: true,
            soft_purges: true,
            counts_purges: true,
            ..Capabilities::new("memory")
        }
    }

    /// Entries and bytes (approximate until moka's housekeeping has run: within about a
    /// second), and the capacity.
    fn gauges(&self) -> StoreGauges {
        StoreGauges {
            entries: Some(self.cache.entry_count()),
            bytes: Some(self.cache.weighted_size()),
            capacity: self.cache.policy().max_capacity(),
            open_breakers: None,
            l1_flushes: None,
        }
    }

    fn listen(&self, listener: StoreListener) -> bool {
        match listener {
            StoreListener::Removals(listener) => {
                self.removals.listen(listener);
                true
            }
            _ => false,
        }
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<CachedResponse>>> {
        Box::pin(std::future::ready(Ok(self.lookup(key))))
    }

    fn get_now(&self, key: &str) -> Option<Result<Option<Arc<CachedResponse>>, StoreError>> {
        Some(Ok(self.lookup(key)))
    }

    /// Atomic with respect to other writers of the key (moka's entry API); an expired
    /// entry is absent.
    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
        condition: PutIf,
    ) -> StoreFuture<'a, bool> {
        let stored = match condition {
            PutIf::Always => {
                self.put_now(key, entry, ttl);
                true
            }
            PutIf::Newer => self.put_unless(key, entry, ttl, |existing, entry| {
                existing.stored_at > entry.stored_at
            }),
            PutIf::Absent => {
                let now = SystemTime::now();
                self.put_unless(key, entry, ttl, |existing, _| existing.is_fresh(now))
            }
        };
        Box::pin(std::future::ready(Ok(stored)))
    }

    fn touch<'a>(
        &'a self,
        key: &'a str,
        tags: &'a [String],
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        let _ = tags;
        // Atomic with respect to other writers of the key: a removed entry is not revived.
        let result = self
            .cache
            .entry_by_ref(key)
            .and_compute_with(|existing| match existing {
                Some(existing) => {
                    let entry = Arc::clone(&existing.into_value().entry);
                    Op::Put(self.slot(key, entry, deadline(ttl)))
                }
                None => Op::Nop,
            });
        let touched = matches!(result, CompResult::ReplacedWith(_));
        Box::pin(std::future::ready(Ok(touched)))
    }

    fn purge<'a>(&'a self, target: PurgeTarget<'a>, mode: PurgeMode) -> StoreFuture<'a, u64> {
        let purged = match target {
            PurgeTarget::Keys(keys) => {
                Ok(self.purge_keys(keys.iter().map(String::as_str), mode, |_| true))
            }
            PurgeTarget::Prefix { prefix, filter } => {
                let keys = self.keys_matching(prefix, filter);
                Ok(self.purge_keys(keys.iter().map(|key| key.as_str()), mode, |_| true))
            }
            // Whatever slot the key holds when it is reached: removed (or softened) if it
            // has the tag, so that a copy written meanwhile (a soft purge's) is not missed.
            PurgeTarget::Tag { tag, within } => {
                let keys = self.tags.members(tag, within);
                Ok(
                    self.purge_keys(keys.iter().map(String::as_str), mode, |entry| {
                        entry.tags.iter().any(|has| has == tag)
                    }),
                )
            }
            PurgeTarget::All if mode == PurgeMode::Hard => {
                let count = self.cache.entry_count();
                self.cache.invalidate_all();
                Ok(count)
            }
            PurgeTarget::All => Err(StoreError::unsupported("soft purges of everything")),
        };
        Box::pin(std::future::ready(purged))
    }

    fn counters(&self) -> Option<&dyn Counters> {
        Some(self)
    }
}

impl Counters for MemoryStore {
    fn increment<'a>(&'a self, key: &'a str, delta: i64, ttl: Duration) -> StoreFuture<'a, i64> {
        // Atomic with respect to other writers of the key going through the entry API. The
        // counter keeps the life it was created with.
        let mut updated = Ok(0);
        self.cache.entry_by_ref(key).and_compute_with(|existing| {
            let (current, expires_at) = match &existing {
                Some(existing) => match counter_value(&existing.value().entry) {
                    Some(current) => (current, existing.value().expires_at),
                    None => {
                        updated = Err(StoreError::new(
                            StoreErrorKind::Other,
                            "the key holds an entry, not a counter",
                        ));
                        return Op::Nop;
                    }
                },
                None => (0, deadline(ttl)),
            };
            let Some(next) = current.checked_add(delta) else {
                updated = Err(StoreError::new(
                    StoreErrorKind::Other,
                    "the counter would overflow",
                ));
                return Op::Nop;
            };
            updated = Ok(next);
            Op::Put(self.slot(key, Arc::new(counter_entry(next)), expires_at))
        });
        Box::pin(std::future::ready(updated))
    }

    fn counter<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<i64>> {
        let value = self
            .cache
            .get(key)
            .and_then(|slot| counter_value(&slot.entry));
        Box::pin(std::future::ready(Ok(value)))
    }
}

/// The entry that holds a counter in memory: marked, its value in decimal.
fn counter_entry(value: i64) -> CachedResponse {
    let mut headers = http::HeaderMap::with_capacity(1);
    headers.insert(COUNTER, http::HeaderValue::from_static("1"));
    CachedResponse::new(
        http::StatusCode::OK,
        headers,
        bytes::Bytes::from(value.to_string()),
    )
}

/// The value of a counter's entry; `None` for any other entry.
fn counter_value(entry: &CachedResponse) -> Option<i64> {
    entry.headers.contains_key(COUNTER).then_some(())?;
    std::str::from_utf8(&entry.body).ok()?.parse().ok()
}

/// Marks a memory entry as a counter.
const COUNTER: http::HeaderName = http::HeaderName::from_static("trc-counter");

/// The instant `ttl` from now (far ahead when that is past what an `Instant` holds).
fn deadline(ttl: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(ttl)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreExt;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    fn entry(body: &'static [u8]) -> Arc<CachedResponse> {
        Arc::new(CachedResponse::new(
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from_static(body),
        ))
    }

    #[tokio::test]
    async fn get_returns_the_same_allocation() {
        let store = MemoryStore::new(1 << 20);
        let stored = entry(b"hello");
        store
            .put(
                "k",
                Arc::clone(&stored),
                Duration::from_secs(60),
                PutIf::Always,
            )
            .await
            .unwrap();
        let got = store.get("k").await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&got, &stored));
        assert_eq!(got.body.as_ptr(), stored.body.as_ptr());
    }

    #[tokio::test]
    async fn entries_expire_after_their_own_ttl() {
        let store = MemoryStore::new(1 << 20);
        store
            .put(
                "short",
                entry(b"a"),
                Duration::from_millis(50),
                PutIf::Always,
            )
            .await
            .unwrap();
        store
            .put("long", entry(b"b"), Duration::from_secs(60), PutIf::Always)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(store.get("short").await.unwrap().is_none());
        assert!(store.get("long").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn an_older_entry_never_replaces_a_newer_one() {
        let store = MemoryStore::new(1 << 20);
        let aged = |body: &'static [u8], seconds_ago: u64| {
            let mut entry = (*entry(body)).clone();
            entry.stored_at = std::time::SystemTime::now() - Duration::from_secs(seconds_ago);
            Arc::new(entry)
        };
        let ttl = Duration::from_secs(60);
        assert!(
            store
                .put("k", aged(b"old", 10), ttl, PutIf::Newer)
                .await
                .unwrap()
        );
        assert!(
            store
                .put("k", aged(b"new", 1), ttl, PutIf::Newer)
                .await
                .unwrap()
        );
        assert!(
            !store
                .put("k", aged(b"older", 5), ttl, PutIf::Newer)
                .await
                .unwrap()
        );
        assert_eq!(store.get("k").await.unwrap().unwrap().body, "new");
    }

    #[tokio::test]
    async fn touch_extends_and_does_not_revive() {
        let store = MemoryStore::new(1 << 20);
        store
            .put("k", entry(b"a"), Duration::from_millis(80), PutIf::Always)
            .await
            .unwrap();
        assert!(
            store
                .touch("k", &[], Duration::from_secs(60))
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(store.get("k").await.unwrap().is_some());
        assert!(
            !store
                .touch("missing", &[], Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert!(store.get("missing").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn remove_prefix_and_clear() {
        let store = MemoryStore::new(1 << 20);
        for key in ["a:1", "a:2", "b:1"] {
            store
                .put(key, entry(b"x"), Duration::from_secs(60), PutIf::Always)
                .await
                .unwrap();
        }
        assert_eq!(store.remove_prefix("a:").await.unwrap(), 2);
        assert!(store.get("b:1").await.unwrap().is_some());
        assert!(store.remove("b:1").await.unwrap());
        store
            .put("c", entry(b"x"), Duration::from_secs(60), PutIf::Always)
            .await
            .unwrap();
        store.clear().await.unwrap();
        assert!(store.get("c").await.unwrap().is_none());
    }

    fn tagged(body: &'static [u8], tags: &[&str]) -> Arc<CachedResponse> {
        let mut entry = (*entry(body)).clone();
        entry.ttl = Duration::from_secs(60);
        entry.tags = tags.iter().map(|tag| (*tag).to_owned()).collect();
        Arc::new(entry)
    }

    #[tokio::test]
    async fn a_tag_purge_takes_its_entries_within_the_scope_only() {
        let store = MemoryStore::new(1 << 20);
        let ttl = Duration::from_secs(60);
        store
            .put("a:1", tagged(b"1", &["user:4"]), ttl, PutIf::Always)
            .await
            .unwrap();
        store
            .put(
                "a:2",
                tagged(b"2", &["user:42", "users"]),
                ttl,
                PutIf::Always,
            )
            .await
            .unwrap();
        store
            .put(
                "a:3",
                tagged(b"3", &["user:4", "users"]),
                ttl,
                PutIf::Always,
            )
            .await
            .unwrap();
        store
            .put("b:1", tagged(b"4", &["user:4"]), ttl, PutIf::Always)
            .await
            .unwrap();
        let purge = |tag| PurgeTarget::Tag { tag, within: "a:" };
        assert_eq!(
            store.purge(purge("user:4"), PurgeMode::Hard).await.unwrap(),
            2
        );
        let mut keys = store.keys();
        keys.sort();
        assert_eq!(keys, ["a:2", "b:1"], "user:42 and the other namespace stay");
        assert_eq!(
            store.purge(purge("user:4"), PurgeMode::Hard).await.unwrap(),
            0
        );
        assert_eq!(
            store.purge(purge("users"), PurgeMode::Hard).await.unwrap(),
            1
        );
    }

    #[tokio::test]
    async fn the_tag_index_follows_entries_out_of_the_store() {
        let store = MemoryStore::new(1 << 20);
        let ttl = Duration::from_secs(60);
        store
            .put("k", tagged(b"1", &["a", "b"]), ttl, PutIf::Always)
            .await
            .unwrap();
        assert_eq!(store.tag_index_len(), (2, 1));
        // Replaced by an entry with other tags: the old ones leave.
        store
            .put("k", tagged(b"2", &["b", "c"]), ttl, PutIf::Always)
            .await
            .unwrap();
        store.run_pending_tasks();
        assert_eq!(store.tag_index_len(), (2, 1));
        let purge = |tag| PurgeTarget::Tag { tag, within: "" };
        assert_eq!(store.purge(purge("a"), PurgeMode::Hard).await.unwrap(), 0);
        // Replaced by an untagged entry: nothing left.
        store
            .put("k", entry(b"3"), ttl, PutIf::Always)
            .await
            .unwrap();
        store.run_pending_tasks();
        assert_eq!(store.tag_index_len(), (0, 0));
        // Removed, expired, cleared.
        store
            .put("r", tagged(b"4", &["r"]), ttl, PutIf::Always)
            .await
            .unwrap();
        store.remove("r").await.unwrap();
        store
            .put(
                "e",
                tagged(b"5", &["e"]),
                Duration::from_millis(20),
                PutIf::Always,
            )
            .await
            .unwrap();
        store
            .put("c", tagged(b"6", &["c"]), ttl, PutIf::Always)
            .await
            .unwrap();
        // moka's timer wheel hands expired entries over within about a second.
        for _ in 0..40 {
            store.run_pending_tasks();
            if store.tag_index_len() == (1, 1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(store.tag_index_len(), (1, 1), "only c is left");
        store.clear().await.unwrap();
        store.run_pending_tasks();
        assert_eq!(store.tag_index_len(), (0, 0));
    }

    #[tokio::test]
    async fn the_tag_index_stays_bounded_under_churn() {
        let store = MemoryStore::new(256 * 1024);
        for i in 0..20_000 {
            let ttl = if i % 2 == 0 {
                Duration::from_millis(1)
            } else {
                Duration::from_secs(60)
            };
            let tags = [format!("t{}", i % 1000), "all".to_owned()];
            let mut entry = (*entry(b"x")).clone();
            entry.tags = tags.to_vec();
            store
                .put(&format!("k{i}"), Arc::new(entry), ttl, PutIf::Always)
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        store.run_pending_tasks();
        let (tags, keys) = store.tag_index_len();
        assert_eq!(
            keys as u64,
            store.entry_count(),
            "one record per tagged entry held"
        );
        assert!(tags <= 1001, "{tags}");
    }

    #[tokio::test]
    async fn a_soft_purge_makes_entries_stale_without_reviving_or_extending_them() {
        let store = MemoryStore::new(1 << 20);
        let mut fresh = (*tagged(b"1", &["t"])).clone();
        fresh.stale_while_revalidate = Duration::from_secs(30);
        store
            .put(
                "k",
                Arc::new(fresh),
                Duration::from_millis(300),
                PutIf::Always,
            )
            .await
            .unwrap();
        let soft = PurgeTarget::Tag {
            tag: "t",
            within: "",
        };
        assert_eq!(store.purge(soft, PurgeMode::Soft).await.unwrap(), 1);
        let got = store.get("k").await.unwrap().unwrap();
        assert!(!got.is_fresh(SystemTime::now()));
        assert!(got.may_serve_while_revalidating(SystemTime::now()));
        assert_eq!(got.tags, ["t"], "still found by its tag");
        assert_eq!(
            store.purge(soft, PurgeMode::Soft).await.unwrap(),
            0,
            "stale already"
        );
        // Its life in the store is what it was: 300 ms, not the stale window.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(store.get("k").await.unwrap().is_none());
        // A soft purge of a key that is gone revives nothing.
        let keys = ["k".to_owned()];
        assert_eq!(
            store
                .purge(PurgeTarget::Keys(&keys), PurgeMode::Soft)
                .await
                .unwrap(),
            0
        );
        assert!(store.get("k").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_filtered_prefix_purge_takes_what_the_filter_accepts() {
        let store = MemoryStore::new(1 << 20);
        for key in ["a:1", "a:2", "a:22", "b:2"] {
            store
                .put(
                    key,
                    tagged(b"x", &[]),
                    Duration::from_secs(60),
                    PutIf::Always,
                )
                .await
                .unwrap();
        }
        let filter = |key: &str| key.ends_with('2');
        let target = PurgeTarget::Prefix {
            prefix: "a:",
            filter: Some(&filter),
        };
        assert_eq!(store.purge(target, PurgeMode::Hard).await.unwrap(), 2);
        let mut keys = store.keys();
        keys.sort();
        assert_eq!(keys, ["a:1", "b:2"]);
    }

    #[tokio::test]
    async fn removals_are_counted_by_cause() {
        let store = MemoryStore::new(1 << 20);
        let ttl = Duration::from_secs(60);
        store
            .put("a", entry(b"1"), ttl, PutIf::Always)
            .await
            .unwrap();
        store
            .put("a", entry(b"2"), ttl, PutIf::Always)
            .await
            .unwrap();
        store.remove("a").await.unwrap();
        store
            .put(
                "short",
                entry(b"3"),
                Duration::from_millis(10),
                PutIf::Always,
            )
            .await
            .unwrap();
        // moka's timer wheel hands expired entries over within about a second.
        for _ in 0..40 {
            store.run_pending_tasks();
            if store.removals().expired == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let removals = store.removals();
        assert_eq!(
            (
                removals.replaced,
                removals.removed,
                removals.expired,
                removals.evicted
            ),
            (1, 1, 1, 0)
        );

        let small = MemoryStore::new(64 * 1024);
        let body: &'static [u8] = Box::leak(vec![0u8; 4096].into_boxed_slice());
        for i in 0..64 {
            small
                .put(&format!("big{i}"), entry(body), ttl, PutIf::Always)
                .await
                .unwrap();
        }
        small.run_pending_tasks();
        let removals = small.removals();
        assert_eq!(
            removals.evicted + small.entry_count(),
            64,
            "every entry is held or counted as evicted: {removals:?}"
        );
        assert!(removals.evicted > 40, "{removals:?}");
    }

    #[tokio::test]
    async fn capacity_is_counted_in_bytes() {
        let store = MemoryStore::new(64 * 1024);
        let body: &'static [u8] = Box::leak(vec![0u8; 4096].into_boxed_slice());
        for i in 0..64 {
            store
                .put(
                    &format!("k{i}"),
                    entry(body),
                    Duration::from_secs(60),
                    PutIf::Always,
                )
                .await
                .unwrap();
        }
        store.run_pending_tasks();
        assert!(
            store.weighted_size() <= 64 * 1024,
            "{}",
            store.weighted_size()
        );
        assert!(store.entry_count() < 16, "{}", store.entry_count());
    }
}
