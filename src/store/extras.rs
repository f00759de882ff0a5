//! What a store may offer beyond entries, for the value cache: counters ([`Counters`]) and
//! many keys in one round trip ([`Batches`]).

use std::sync::Arc;
use std::time::Duration;

use super::StoreFuture;
use crate::entry::CachedResponse;

/// Atomic counters beside the entries ([`Store::counters`](super::Store::counters)), as the
/// value cache's `increment` uses them. A counter is no entry: [`Store::get`](super::Store::get)
/// does not read it.
pub trait Counters: Send + Sync {
    /// Adds `delta` to the counter under `key` — created at 0, to live `ttl`, when absent —
    /// and returns its new value, atomically: concurrent increments are never lost.
    fn increment<'a>(&'a self, key: &'a str, delta: i64, ttl: Duration) -> StoreFuture<'a, i64>;

    /// The counter under `key`, if there is one.
    fn counter<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<i64>>;
}

/// Many keys in one round trip ([`Store::batches`](super::Store::batches)). Without it, the
/// value cache's `get_many` and `set_many` read and write one key after another.
pub trait Batches: Send + Sync {
    /// The entries under `keys`, in order; what is absent or unreadable is `None`.
    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> StoreFuture<'a, Vec<Option<Arc<CachedResponse>>>>;

    /// Stores each `(key, entry, ttl)`, unconditionally.
    fn put_many<'a>(
        &'a self,
        entries: &'a [(String, Arc<CachedResponse>, Duration)],
    ) -> StoreFuture<'a, ()>;
}
