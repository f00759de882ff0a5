//! The public store contract kit (`store::contract`, feature `contract`) on the memory
//! store and on a store written outside the crate (`examples/custom_store.rs`); the Redis,
//! tiered and memcached stores run it in their own test crates, on real servers.

#![allow(clippy::unwrap_used)]

#[path = "../examples/custom_store.rs"]
mod custom_store;

use tower_response_cache::MemoryStore;
use tower_response_cache::store::contract::run_contract;

#[tokio::test]
async fn the_memory_store_keeps_the_store_contract() {
    let report = run_contract(&MemoryStore::new(16 << 20)).await;
    assert_eq!(report.unsupported(), [""; 0], "{report}");
    assert!(report.checked().len() >= 12, "{report}");
}

#[tokio::test]
async fn a_store_written_outside_the_crate_keeps_the_store_contract() {
    let store = custom_store::HashMapStore::new();
    let report = run_contract(&store).await;
    assert_eq!(report.unsupported(), ["counters"], "{report}");
}

/// A store whose `PutIf::Newer` reads, compares and writes in three steps (each atomic, the
/// whole not): the kit's race finds it out.
#[tokio::test]
#[should_panic(expected = "of concurrent PutIf::Newer writes the newest stands")]
async fn the_contract_finds_a_conditional_write_that_is_not_atomic() {
    run_contract(&faulty::Faulty::new(faulty::Fault::RacyNewer)).await;
}

/// A store that keeps entries longer than it is told: the kit finds it out.
#[tokio::test]
#[should_panic(expected = "an entry expires after the ttl it was put with")]
async fn the_contract_finds_an_expiry_that_is_not_kept() {
    run_contract(&faulty::Faulty::new(faulty::Fault::NoExpiry)).await;
}

/// The example's store with one broken promise.
mod faulty {
    use std::sync::Arc;
    use std::time::Duration;

    use tower_response_cache::CachedResponse;
    use tower_response_cache::store::{
        Capabilities, PurgeMode, PurgeTarget, PutIf, Store, StoreFuture,
    };

    use super::custom_store::HashMapStore;

    /// The promise broken.
    #[derive(Clone, Copy, Debug)]
    pub(super) enum Fault {
        /// `PutIf::Newer` as a read, then a write, with other writers between.
        RacyNewer,
        /// Every entry kept for an hour, whatever its TTL.
        NoExpiry,
    }

    #[derive(Debug)]
    pub(super) struct Faulty(HashMapStore, Fault);

    impl Faulty {
        pub(super) fn new(fault: Fault) -> Self {
            Self(HashMapStore::new(), fault)
        }
    }

    impl Store for Faulty {
        fn capabilities(&self) -> Capabilities {
            self.0.capabilities()
        }

        fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<CachedResponse>>> {
            self.0.get(key)
        }

        fn put<'a>(
            &'a self,
            key: &'a str,
            entry: Arc<CachedResponse>,
            ttl: Duration,
            condition: PutIf,
        ) -> StoreFuture<'a, bool> {
            Box::pin(async move {
                match (self.1, condition) {
                    (Fault::RacyNewer, PutIf::Newer) => {
                        let held = self.0.get(key).await?;
                        // A network store's round trip: other writers come between.
                        tokio::task::yield_now().await;
                        if held.is_some_and(|held| held.stored_at > entry.stored_at) {
                            return Ok(false);
                        }
                        self.0.put(key, entry, ttl, PutIf::Always).await
                    }
                    (Fault::NoExpiry, _) => {
                        let hour = Duration::from_secs(3600);
                        self.0.put(key, entry, hour, condition).await
                    }
                    _ => self.0.put(key, entry, ttl, condition).await,
                }
            })
        }

        fn touch<'a>(
            &'a self,
            key: &'a str,
            tags: &'a [String],
            ttl: Duration,
        ) -> StoreFuture<'a, bool> {
            self.0.touch(key, tags, ttl)
        }

        fn purge<'a>(&'a self, target: PurgeTarget<'a>, mode: PurgeMode) -> StoreFuture<'a, u64> {
            self.0.purge(target, mode)
        }
    }
}
