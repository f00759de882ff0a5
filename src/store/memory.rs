use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::ops::compute::Op;
use moka::sync::Cache;

use super::{Store, StoreError, StoreFuture};
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
/// ```
/// use tower_response_cache::{CacheLayer, MemoryStore};
///
/// let store = MemoryStore::new(256 * 1024 * 1024); // 256 MiB
/// let layer = CacheLayer::new(store.clone());
/// ```
#[derive(Clone, Debug)]
pub struct MemoryStore {
    cache: Cache<String, Slot>,
}

#[derive(Clone, Debug)]
struct Slot {
    entry: Arc<CachedResponse>,
    ttl: Duration,
}

/// What moka itself keeps per entry (its node, the key's `Arc`, the expiry timer, the
/// frequency sketch's share): about 300 bytes, measured by `cargo bench --bench hit`.
const MOKA_OVERHEAD: usize = 300;

/// The most entries the map is sized for up front.
const MAX_INITIAL_ENTRIES: usize = 1 << 16;

/// Expiry read from each slot, so that every entry lives for its own TTL.
struct SlotExpiry;

impl Expiry<String, Slot> for SlotExpiry {
    fn expire_after_create(&self, _: &String, slot: &Slot, _: Instant) -> Option<Duration> {
        Some(slot.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        slot: &Slot,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(slot.ttl)
    }
}

impl MemoryStore {
    /// A store that holds at most `max_bytes` bytes of entries.
    pub fn new(max_bytes: u64) -> Self {
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
            .build();
        Self { cache }
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

    /// Applies pending evictions and expirations now, so that the counts are exact.
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
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
    /// use tower_response_cache::{CachedResponse, MemoryStore, Store};
    ///
    /// let store = MemoryStore::new(1 << 20);
    /// let entry = CachedResponse::new(StatusCode::OK, HeaderMap::new(), Bytes::from("hi"));
    /// store.put("app:GET:/a", Arc::new(entry), Duration::from_secs(60)).await.unwrap();
    /// assert_eq!(store.keys(), ["app:GET:/a"]);
    /// # }
    /// ```
    pub fn keys(&self) -> Vec<String> {
        self.cache.iter().map(|(key, _)| (*key).clone()).collect()
    }
}

// moka's operations do not wait on I/O: every method completes in its first poll, and a
// lookup is answered by `get_now` without a future at all.
impl Store for MemoryStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<CachedResponse>>> {
        Box::pin(std::future::ready(Ok(self.lookup(key))))
    }

    fn get_now(&self, key: &str) -> Option<Result<Option<Arc<CachedResponse>>, StoreError>> {
        Some(Ok(self.lookup(key)))
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        self.cache.insert(key.to_owned(), Slot { entry, ttl });
        Box::pin(std::future::ready(Ok(())))
    }

    fn put_newer<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        // Atomic with respect to other writers of the key going through the entry API.
        let result = self
            .cache
            .entry_by_ref(key)
            .and_compute_with(|existing| match existing {
                Some(existing) if existing.value().entry.stored_at > entry.stored_at => Op::Nop,
                _ => Op::Put(Slot { entry, ttl }),
            });
        let stored = !matches!(
            result,
            moka::ops::compute::CompResult::Unchanged(_)
                | moka::ops::compute::CompResult::StillNone(_)
        );
        Box::pin(std::future::ready(Ok(stored)))
    }

    fn writes_in_place(&self) -> bool {
        true
    }

    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(self.cache.remove(key).is_some())))
    }

    fn clear(&self) -> StoreFuture<'_, ()> {
        self.cache.invalidate_all();
        Box::pin(std::future::ready(Ok(())))
    }

    fn touch<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        // Atomic with respect to other writers of the key: a removed entry is not revived.
        let result = self
            .cache
            .entry_by_ref(key)
            .and_compute_with(|existing| match existing {
                Some(existing) => Op::Put(Slot {
                    entry: Arc::clone(&existing.into_value().entry),
                    ttl,
                }),
                None => Op::Nop,
            });
        let touched = matches!(result, moka::ops::compute::CompResult::ReplacedWith(_));
        Box::pin(std::future::ready(Ok(touched)))
    }

    fn remove_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, u64> {
        let keys: Vec<Arc<String>> = self
            .cache
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .map(|(key, _)| key)
            .collect();
        let removed = keys
            .iter()
            .filter(|key| self.cache.remove(key.as_str()).is_some())
            .count();
        Box::pin(std::future::ready(Ok(removed as u64)))
    }
}

impl MemoryStore {
    fn lookup(&self, key: &str) -> Option<Arc<CachedResponse>> {
        self.cache.get(key).map(|slot| slot.entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            .put("k", Arc::clone(&stored), Duration::from_secs(60))
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
            .put("short", entry(b"a"), Duration::from_millis(50))
            .await
            .unwrap();
        store
            .put("long", entry(b"b"), Duration::from_secs(60))
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
        assert!(store.put_newer("k", aged(b"old", 10), ttl).await.unwrap());
        assert!(store.put_newer("k", aged(b"new", 1), ttl).await.unwrap());
        assert!(!store.put_newer("k", aged(b"older", 5), ttl).await.unwrap());
        assert_eq!(store.get("k").await.unwrap().unwrap().body, "new");
    }

    #[tokio::test]
    async fn touch_extends_and_does_not_revive() {
        let store = MemoryStore::new(1 << 20);
        store
            .put("k", entry(b"a"), Duration::from_millis(80))
            .await
            .unwrap();
        assert!(store.touch("k", Duration::from_secs(60)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(store.get("k").await.unwrap().is_some());
        assert!(
            !store
                .touch("missing", Duration::from_secs(60))
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
                .put(key, entry(b"x"), Duration::from_secs(60))
                .await
                .unwrap();
        }
        assert_eq!(store.remove_prefix("a:").await.unwrap(), 2);
        assert!(store.get("b:1").await.unwrap().is_some());
        assert!(store.remove("b:1").await.unwrap());
        store
            .put("c", entry(b"x"), Duration::from_secs(60))
            .await
            .unwrap();
        store.clear().await.unwrap();
        assert!(store.get("c").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn capacity_is_counted_in_bytes() {
        let store = MemoryStore::new(64 * 1024);
        let body: &'static [u8] = Box::leak(vec![0u8; 4096].into_boxed_slice());
        for i in 0..64 {
            store
                .put(&format!("k{i}"), entry(body), Duration::from_secs(60))
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
