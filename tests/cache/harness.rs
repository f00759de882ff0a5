use tower_response_cache::clock::TokioClock;
use tower_response_cache::{
    CacheLayer, MemoryStore, WriteMode, stats::StatsSnapshot, store::Store,
};

pub(crate) use crate::client::{Calls, Reply, fetch, get_with, post, send};

/// A fresh memory store and a layer on it that writes inline, so that the store holds the
/// entry as soon as the client has read the body. The layer reads Tokio's clock: a test on
/// paused time (`#[tokio::test(start_paused = true)]`) lets entries grow stale without
/// waiting for them.
pub(crate) fn layer() -> (CacheLayer, MemoryStore) {
    // The store expires entries by the layer's clock: Tokio's, paused in tests about time.
    let clock = TokioClock::new();
    let store = MemoryStore::with_clock(16 * 1024 * 1024, clock);
    let layer = CacheLayer::new(store.clone())
        .namespace("t")
        .write_mode(WriteMode::Inline)
        .clock(clock);
    (layer, store)
}

/// Whether the store holds an entry under `key`.
pub(crate) async fn stored(store: &MemoryStore, key: &str) -> bool {
    store.get(key).await.unwrap().is_some()
}

pub(crate) async fn entry_count(store: &MemoryStore) -> u64 {
    store.run_pending_tasks();
    store.entry_count()
}

pub(crate) fn snapshot(layer: &CacheLayer) -> StatsSnapshot {
    layer.stats().snapshot()
}

/// The tests that set a tracing subscriber, one at a time (each rebuilds the interest
/// cache after setting its own): tracing keeps one maximum level and one interest per call
/// site for every thread, which a subscriber set on another test's thread changes.
pub(crate) async fn one_subscriber_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ONE.lock().await
}
