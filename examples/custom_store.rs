//! A store written outside the crate, as a user would write one: entries in a
//! `Mutex<HashMap>`, with expiry, conditional writes, touch, and purges by key, prefix
//! (with a filter), tag and everything, hard and soft. It says what it can do in its
//! [`Capabilities`], and the store contract kit checks every promise in one call.
//!
//! ```sh
//! cargo run --example custom_store --features contract
//! ```
//!
//! (A store that several processes share also implements `SharedStore`, and is checked
//! with `run_shared_contract` on two handles.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tower_response_cache::CachedResponse;
use tower_response_cache::store::{
    Capabilities, PurgeMode, PurgeTarget, PutIf, Store, StoreError, StoreFuture, softened,
};

/// An entry and the instant it expires.
#[derive(Debug)]
struct Slot {
    entry: Arc<CachedResponse>,
    expires: Instant,
}

/// Entries in one map behind one lock: every operation is atomic, none waits on I/O.
#[derive(Debug, Default)]
pub(crate) struct HashMapStore {
    map: Mutex<HashMap<String, Slot>>,
}

impl HashMapStore {
    /// An empty store.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Runs `f` on the live entries (expired ones are dropped first).
    fn with_map<T>(&self, f: impl FnOnce(&mut HashMap<String, Slot>) -> T) -> T {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        map.retain(|_, slot| slot.expires > now);
        f(&mut map)
    }

    /// Purges the keys `matches` accepts: removed, or made stale in place; how many.
    fn purge_where(&self, mode: PurgeMode, matches: impl Fn(&str, &CachedResponse) -> bool) -> u64 {
        self.with_map(|map| {
            let keys: Vec<String> = map
                .iter()
                .filter(|(key, slot)| matches(key, &slot.entry))
                .map(|(key, _)| key.clone())
                .collect();
            for key in &keys {
                match mode {
                    PurgeMode::Soft => {
                        let slot = map.get_mut(key).expect("listed above");
                        // Stale from now on; the slot's expiry (its life) is unchanged.
                        if let Some(soft) = softened(&slot.entry, std::time::SystemTime::now()) {
                            slot.entry = Arc::new(soft);
                        }
                    }
                    _ => {
                        map.remove(key);
                    }
                }
            }
            keys.len() as u64
        })
    }
}

fn ready<'a, T: Send + 'a>(value: Result<T, StoreError>) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl Store for HashMapStore {
    fn capabilities(&self) -> Capabilities {
        let mut can = Capabilities::new("hashmap");
        can.reads_in_place = true;
        can.writes_in_place = true;
        can.touch = true;
        can.prefix_purges = true;
        can.filtered_prefix_purges = true;
        can.tag_purges = true;
        can.soft_purges = true;
        can.counts_purges = true;
        can
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<CachedResponse>>> {
        ready(self.get_now(key).expect("answers in place"))
    }

    fn get_now(&self, key: &str) -> Option<Result<Option<Arc<CachedResponse>>, StoreError>> {
        Some(Ok(self.with_map(|map| {
            map.get(key).map(|slot| Arc::clone(&slot.entry))
        })))
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
        condition: PutIf,
    ) -> StoreFuture<'a, bool> {
        let stored = self.with_map(|map| {
            let keep = map.get(key).is_some_and(|held| match condition {
                PutIf::Newer => held.entry.stored_at > entry.stored_at,
                PutIf::Absent => true,
                _ => false,
            });
            if !keep {
                let expires = Instant::now() + ttl;
                map.insert(key.to_owned(), Slot { entry, expires });
            }
            !keep
        });
        ready(Ok(stored))
    }

    fn touch<'a>(
        &'a self,
        key: &'a str,
        _tags: &'a [String],
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        let touched = self.with_map(|map| match map.get_mut(key) {
            Some(slot) => {
                slot.expires = Instant::now() + ttl;
                true
            }
            None => false,
        });
        ready(Ok(touched))
    }

    fn purge<'a>(&'a self, target: PurgeTarget<'a>, mode: PurgeMode) -> StoreFuture<'a, u64> {
        let purged = match target {
            PurgeTarget::Keys(keys) => {
                Ok(self.purge_where(mode, |key, _| keys.iter().any(|k| k == key)))
            }
            PurgeTarget::Prefix { prefix, filter } => Ok(self.purge_where(mode, |key, _| {
                key.starts_with(prefix) && filter.is_none_or(|filter| filter(key))
            })),
            PurgeTarget::Tag { tag, within } => Ok(self.purge_where(mode, |key, entry| {
                key.starts_with(within) && entry.tags.iter().any(|has| has == tag)
            })),
            PurgeTarget::All if mode == PurgeMode::Hard => {
                Ok(self.with_map(|map| map.drain().count() as u64))
            }
            _ => Err(StoreError::unsupported("this purge")),
        };
        ready(purged)
    }
}

#[allow(dead_code)]
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let store = HashMapStore::new();
    let report = tower_response_cache::store::contract::run_contract(&store).await;
    print!("{report}");
    // The store is a store like any other: a layer takes it as it is.
    let _layer = tower_response_cache::CacheLayer::new(store);
}
