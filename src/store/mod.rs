//! Where entries live.
//!
//! [`Store`] is dyn-compatible (its futures are boxed), so a layer holds any store behind an
//! `Arc<dyn Store>` and several layers can share one. [`MemoryStore`](crate::MemoryStore) keeps entries in
//! process; stores that keep bytes elsewhere serialize entries with a
//! [`Codec`](crate::codec::Codec).
//!
//! A store must bound its own latency (a slow store slows every lookup) and report failures
//! as [`StoreError`]s: the layer counts them and serves the request from the inner service,
//! so a store failure never fails a request.
//!
//! # Choosing a store
//!
//! - [`MemoryStore`](crate::MemoryStore): hits in place, no network, no decoding. With several instances, each
//!   caches (and purges) alone.
//! - [`RedisStore`](crate::RedisStore) (feature `redis`): entries shared by every instance,
//!   so a miss on one instance is a hit on the others; every hit is a Redis round trip.
//! - [`TieredStore`](crate::TieredStore) (feature `redis`): hot entries at memory speed on
//!   every instance, the rest shared through Redis, coherent across instances.
//! - [`MemcachedStore`](crate::MemcachedStore) (feature `memcached`): entries shared over
//!   one or more memcached servers; also a `TieredStore`'s shared tier, with the channel on
//!   a Redis.
//!
//! Pick `MemoryStore` for a single instance, or where instances may disagree for a TTL.
//! Pick `RedisStore` when the entries are large or many and hits are rare enough that a
//! round trip does not matter. Pick `TieredStore` when several instances serve the same hot
//! entries.
//!
//! # What each store does
//!
//! As `tests/common/contract.rs` checks: it is written once and run on the memory store,
//! Redis standalone and cluster, the tiered store and memcached, covers what every `Store`
//! promises, and reports "unsupported" honestly where a store cannot do something.
//!
//! | | `MemoryStore` | `RedisStore` | `TieredStore` | `MemcachedStore` |
//! |---|---|---|---|---|
//! | get, put, remove, an older entry never over a newer one | ✅ | ✅ (1) | ✅ | ✅ (2) |
//! | put if absent | ✅ atomic | ✅ `SET NX` | ✅ (L2) | ✅ `add` |
//! | touch (sliding expiry) | ✅ | ✅ `PEXPIRE` | ✅ (L2) | ✅ `mg … T` |
//! | counters | ✅ | ✅ `INCRBY` | ✅ (L2) | ✅ `incr` / `decr`, unsigned |
//! | many at once | one by one, in memory | (3) | L1 first, then L2 | (4) |
//! | clear | ✅ | `SCAN` + `UNLINK` of its namespace | ✅ | new generation |
//! | prefix purge | ✅ | ✅ | ✅ | ✅ (7) |
//! | tag purge, soft purge | ✅ | ✅ | ✅ | ✅ (5) |
//! | one origin fetch across instances (fill lock) | — | ✅ | ✅ | ✅ (6) |
//!
//! 1. One script with the binary codec.
//! 2. Read, compare, write.
//! 3. `MGET` / a pipeline per hash slot.
//! 4. One `get` of many keys per server.
//! 5. Numbered purges, checked on read; no count.
//! 6. `add`, released by compare-and-swap.
//! 7. Numbered purges, checked on read; no count; not by a filter (the URLs under a path).
//!
//! # Measured
//!
//! `REPEAT=3 scripts/bench.sh`, medians of three rounds in one run, `/hello` 1 KiB over
//! HTTP, 64 connections:
//!
//! | | requests/s | p50 | p99 | instructions/request (callgrind) |
//! |---|---|---|---|---|
//! | `MemoryStore` hit | 63 164 | 970 µs | 1.91 ms | 20 315 |
//! | `TieredStore` L1 hit | 62 561 | 980 µs | 1.80 ms | 20 513 (+1.0%) |
//! | `RedisStore` hit | 24 849 | 2.47 ms | 5.73 ms | 56 694 |
//!
//! An L2 hit (`L1_BYTES=0 examples/bench_server tiered` under callgrind) takes
//! 63 761–63 808 instructions against a plain Redis hit's 60 379–60 660 in the same build:
//! +5%, mostly the attempt to fill L1.
//!
//! A miss reaches the origin after one Redis round trip: the lookup takes the fill lock in
//! the same script. Through a proxy that adds 100 ms each way, a miss reaches the origin
//! after 203 ms, against 408 ms when the lookup and the lock are two round trips
//! (`tests/redis/shared.rs`). Over HTTP (`/slow` with a unique query per request), a miss
//! adds this much to the origin's p50:
//!
//! | | before: lookup, then lock (`REPEAT=1`) | now: one script (`REPEAT=3`, medians) |
//! |---|---|---|
//! | `RedisStore` | +1.29 ms | +0.55 ms (`fill_locks: false`: +0.76 ms) |
//! | `TieredStore` | +1.67 ms | +0.72 ms |
//!
//! A miss costs 339 000 instructions on Redis and 385 000 on the tiered store, which
//! publishes its invalidation. A key found lately is looked up with a plain `GET`, not the
//! script, so a Redis hit stays at 56 694 instructions (56 187 before). The memcached
//! figures are at [`MemcachedStore`](crate::MemcachedStore#measured), the memory store's
//! at the [crate root](crate#performance).

#[cfg(any(feature = "redis", feature = "memcached"))]
mod breaker;
#[cfg(feature = "memcached")]
pub(crate) mod memcached;
pub(crate) mod memory;
mod purge;
#[cfg(feature = "redis")]
pub(crate) mod redis;
#[cfg(feature = "redis")]
pub(crate) mod tiered;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

pub use memory::Removals;
pub use purge::{KeyFilter, PurgeMode, PurgeTarget, softened};
#[cfg(feature = "redis")]
pub use redis::CircuitStats;
#[cfg(feature = "redis")]
pub use tiered::ChannelMode;

use crate::entry::CachedResponse;

/// The future a [`Store`] method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A place to keep cached responses.
///
/// Keys are complete (namespace included). `put` replaces any entry under the key; the
/// store drops the entry after `ttl`, which covers the entry's freshness and any stale
/// window ([`CachedResponse::storage_ttl`]).
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// The entry under `key`, if there is one that has not expired.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<CachedResponse>>>;

    /// The entry under `key` without waiting, for stores that can answer in place (an
    /// in-process map): `Some` with the answer, or `None` to say "use [`get`](Self::get)".
    /// A cache hit on such a store then costs no future and no allocation for the lookup.
    /// The default is `None`.
    fn get_now(&self, key: &str) -> Option<Result<Option<Arc<CachedResponse>>, StoreError>> {
        let _ = key;
        None
    }

    /// Stores `entry` under `key` for `ttl`.
    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
    ) -> StoreFuture<'a, ()>;

    /// Stores `entry` under `key` for `ttl` unless the store holds a newer entry there (one
    /// whose [`stored_at`](CachedResponse::stored_at) is later); `true` if it stored. The
    /// layer writes every response it fetched through this, so that a write that was
    /// overtaken (a slow background write of a miss, landing after a refresh's) never
    /// replaces a newer entry with an older one.
    ///
    /// The default reads the entry, compares and puts, which is not atomic: a store that can
    /// compare and write in one step should do so ([`MemoryStore`](crate::MemoryStore) and
    /// `RedisStore` with the binary codec do).
    fn put_newer<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        Box::pin(read_compare_put(self, key, entry, ttl))
    }

    /// Whether a [`put`](Self::put) completes without waiting (an in-process map): the
    /// layer's default [`WriteMode::Auto`](crate::WriteMode::Auto) then writes entries
    /// inline, so that the next request finds the entry as soon as a response's body has
    /// been delivered. Default: `false`.
    fn writes_in_place(&self) -> bool {
        false
    }

    /// Removes the entry under `key`; `true` if there was one.
    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool>;

    /// Removes the entries under `keys`; returns how many there were. The layer uses it to
    /// remove a URL's entry and all its variant slots at once. The default removes them one
    /// after another and stops at the first error.
    fn remove_many<'a>(&'a self, keys: &'a [String]) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let mut removed = 0;
            for key in keys {
                removed += u64::from(self.remove(key).await?);
            }
            Ok(removed)
        })
    }

    /// Removes every entry of this store (for a shared store, every entry under its own
    /// namespace and nothing else).
    fn clear(&self) -> StoreFuture<'_, ()>;

    /// Keeps the entry under `key` for `ttl` from now (sliding expiry); `true` if there was
    /// one. The default reports [`StoreErrorKind::Unsupported`].
    fn touch<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        let _ = (key, ttl);
        Box::pin(async { Err(StoreError::unsupported("touch")) })
    }

    /// [`touch`](Self::touch) for an entry tagged `tags` (sliding expiry): a store whose
    /// tag index records when entries expire keeps it in step, so that the entry's tags
    /// still find it for its whole new life. The default touches.
    fn touch_tagged<'a>(
        &'a self,
        key: &'a str,
        tags: &'a [String],
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        let _ = tags;
        self.touch(key, ttl)
    }

    /// Removes every entry whose key starts with `prefix`; returns how many. The default
    /// reports [`StoreErrorKind::Unsupported`].
    fn remove_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, u64> {
        let _ = prefix;
        Box::pin(async { Err(StoreError::unsupported("remove_prefix")) })
    }

    /// Purges the entries `target` names, removing them or, in [`PurgeMode::Soft`], making
    /// them stale; returns how many entries it purged. Every purge of the layer's
    /// [`CacheHandle`](crate::CacheHandle) comes here.
    ///
    /// A store that supports tags indexes entries by their [`CachedResponse::tags`] when
    /// it stores them, keeps that index bounded (cleaned as entries expire or are evicted),
    /// and purges a tag in bounded batches. A soft purge must be atomic per entry: it never
    /// revives an entry removed in the meantime, never replaces a newer one, and never
    /// extends an entry's life.
    ///
    /// The default supports hard purges of keys ([`remove_many`](Self::remove_many)) and
    /// of prefixes without a filter ([`remove_prefix`](Self::remove_prefix)), and reports
    /// [`StoreErrorKind::Unsupported`] for the rest.
    fn purge<'a>(&'a self, target: PurgeTarget<'a>, mode: PurgeMode) -> StoreFuture<'a, u64> {
        match (target, mode) {
            (PurgeTarget::Keys(keys), PurgeMode::Hard) => self.remove_many(keys),
            (
                PurgeTarget::Prefix {
                    prefix,
                    filter: None,
                },
                PurgeMode::Hard,
            ) => self.remove_prefix(prefix),
            (PurgeTarget::Tag { .. }, _) => {
                Box::pin(async { Err(StoreError::unsupported("purging by tag")) })
            }
            (_, PurgeMode::Soft) => Box::pin(async { Err(StoreError::unsupported("soft purges")) }),
            (PurgeTarget::Prefix { .. }, PurgeMode::Hard) => {
                Box::pin(async { Err(StoreError::unsupported("filtered prefix purges")) })
            }
        }
    }

    /// A mark of the purges recorded in this store so far, by every process that shares
    /// it, for a fetch that is starting; `None` (the default) for a store that no other
    /// process purges. It is read on every miss, so it must not wait: a store keeps the
    /// latest mark it has seen, which may lag behind (a lower mark only makes
    /// [`purged_since`](Self::purged_since) look further back).
    fn purge_mark(&self) -> Option<u64> {
        None
    }

    /// Whether a purge recorded since `mark` (by any process) may cover an entry that was
    /// just stored under `key` with `tags`: the layer then removes it again, so that a
    /// fetch that was under way during another process's purge does not write back what
    /// the purge took. A store that returns marks records every purge before carrying it
    /// out, which makes either the purge find the entry or this check find the purge.
    /// Records it no longer holds count as covering. Default: `false`.
    fn purged_since<'a>(
        &'a self,
        mark: u64,
        key: &'a str,
        tags: &'a [String],
    ) -> StoreFuture<'a, bool> {
        let _ = (mark, key, tags);
        Box::pin(async { Ok(false) })
    }

    /// Whether this store is shared between processes and coordinates their fetches with
    /// [`lock_fill`](Self::lock_fill): one process fetches a missing entry while the others
    /// wait for it to appear. Default: `false` (a process-local store needs no more than the
    /// layer's own coalescing).
    fn coordinates_fills(&self) -> bool {
        false
    }

    /// Tries to take the short-lived lock that makes this process the one to fetch `key`:
    /// `Some` when taken (it expires by itself after `ttl`), `None` when another process
    /// holds it. The default reports [`StoreErrorKind::Unsupported`].
    fn lock_fill<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Option<FillLock>> {
        let _ = (key, ttl);
        Box::pin(async { Err(StoreError::unsupported("lock_fill")) })
    }

    /// A lookup that, when `key` holds nothing, also tries to take its fill lock — in one
    /// round trip on a store that can (`RedisStore`: one script), so
    /// that a miss reaches the origin after one round trip instead of two. Called for the
    /// lookups that lead to a fetch when nothing is found, on stores that
    /// [coordinate fills](Self::coordinates_fills). The default is
    /// [`get`](Self::get), then [`lock_fill`](Self::lock_fill) on a miss.
    fn get_or_lock_fill<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Lookup> {
        Box::pin(get_then_lock(self, key, ttl))
    }

    /// Releases a lock taken with [`lock_fill`](Self::lock_fill), if this process still
    /// holds it. The default does nothing.
    fn unlock_fill<'a>(&'a self, key: &'a str, lock: FillLock) -> StoreFuture<'a, ()> {
        let _ = (key, lock);
        Box::pin(async { Ok(()) })
    }

    /// How long after another process's purge or clear this store may still answer as
    /// before it: a store that keeps copies of shared state for a while (a
    /// `MemcachedStore`'s tag records and generation, for its `version_ttl`). A
    /// `TieredStore` copies nothing it reads into its memory tier for this long after such
    /// a purge arrives on its channel. Default: zero (read on every command).
    fn purge_lag(&self) -> Duration {
        Duration::ZERO
    }

    /// A short, stable name for metrics and spans (`memory`, `redis`). Default: `custom`.
    fn name(&self) -> &'static str {
        "custom"
    }

    /// What the store can say about its size and health now, for gauges: cheap to call
    /// (no I/O). Default: nothing known.
    fn gauges(&self) -> StoreGauges {
        StoreGauges::default()
    }

    /// Whether the store has tiers: [`get_now`](Self::get_now) answers from the first
    /// (per-instance memory), [`get`](Self::get) from the second (shared). The layer then
    /// names the tier of each hit ([`Tier`]). Default: `false`.
    fn tiered(&self) -> bool {
        false
    }

    /// Stores `entry` under `key` for `ttl` only if nothing is stored there; returns whether
    /// it did. The default reads, then writes: not atomic. [`MemoryStore`](crate::MemoryStore), `RedisStore`
    /// (`SET … NX`) and `TieredStore` are.
    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            if self.get(key).await?.is_some() {
                return Ok(false);
            }
            self.put(key, entry, ttl).await?;
            Ok(true)
        })
    }

    /// The entries under `keys`, in order; what is absent or unreadable is `None`. The
    /// default reads them one after another; `RedisStore` sends one `MGET` per hash slot
    /// (one in all on a single server).
    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> StoreFuture<'a, Vec<Option<Arc<CachedResponse>>>> {
        Box::pin(async move {
            let mut found = Vec::with_capacity(keys.len());
            for key in keys {
                found.push(match self.get(key).await {
                    Err(error) if error.kind() == StoreErrorKind::Decode => None,
                    result => result?,
                });
            }
            Ok(found)
        })
    }

    /// Stores each `(key, entry, ttl)`. The default writes them one after another;
    /// `RedisStore` pipelines the untagged ones, one pipeline per hash slot.
    fn put_many<'a>(
        &'a self,
        entries: &'a [(String, Arc<CachedResponse>, Duration)],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            for (key, entry, ttl) in entries {
                self.put(key, Arc::clone(entry), *ttl).await?;
            }
            Ok(())
        })
    }

    /// Adds `delta` to the counter under `key` — created at 0, to live `ttl`, when absent —
    /// and returns its new value; atomic on [`MemoryStore`](crate::MemoryStore), `RedisStore` (`INCRBY`) and
    /// `TieredStore`. A counter is no entry: [`get`](Self::get) does not read it,
    /// [`counter`](Self::counter) does. The default reports
    /// [`StoreErrorKind::Unsupported`].
    fn increment<'a>(&'a self, key: &'a str, delta: i64, ttl: Duration) -> StoreFuture<'a, i64> {
        let _ = (key, delta, ttl);
        Box::pin(std::future::ready(Err(StoreError::new(
            StoreErrorKind::Unsupported,
            "this store has no counters",
        ))))
    }

    /// The counter under `key` ([`increment`](Self::increment)), if there is one. The
    /// default reports [`StoreErrorKind::Unsupported`].
    fn counter<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<i64>> {
        let _ = key;
        Box::pin(std::future::ready(Err(StoreError::new(
            StoreErrorKind::Unsupported,
            "this store has no counters",
        ))))
    }

    /// Calls `listener` with the cause of every entry that leaves the store from now on,
    /// for as long as `listener` lives (the store holds it weakly): what feeds observers'
    /// [`Removed`](crate::observe::EventKind::Removed) events. Returns whether the store
    /// reports removals; the default does not.
    fn listen_removals(&self, listener: Weak<RemovalListener>) -> bool {
        let _ = listener;
        false
    }

    /// Calls `listener` each time the store empties a memory tier of its own accord (a
    /// tiered store whose invalidation channel is in doubt, or a `clear` from another
    /// instance), for as long as `listener` lives: what feeds observers'
    /// [`L1Flushed`](crate::observe::EventKind::L1Flushed) events. Returns whether the
    /// store reports flushes; the default does not.
    fn listen_flushes(&self, listener: Weak<FlushListener>) -> bool {
        let _ = listener;
        false
    }
}

/// [`Store::get_or_lock_fill`] in two round trips: [`Store::get`], then, on a miss,
/// [`Store::lock_fill`].
async fn get_then_lock<S: Store + ?Sized>(
    store: &S,
    key: &str,
    ttl: Duration,
) -> Result<Lookup, StoreError> {
    if let Some(entry) = store.get(key).await? {
        return Ok(Lookup::Found(entry));
    }
    Ok(match store.lock_fill(key, ttl).await? {
        Some(lock) => Lookup::Locked(lock),
        None => Lookup::Held,
    })
}

/// [`Store::put_newer`] in three steps: read, compare, put. What the store holds but cannot
/// decode is replaced.
async fn read_compare_put<S: Store + ?Sized>(
    store: &S,
    key: &str,
    entry: Arc<CachedResponse>,
    ttl: Duration,
) -> Result<bool, StoreError> {
    match store.get(key).await {
        Ok(Some(current)) if current.stored_at > entry.stored_at => return Ok(false),
        Err(error) if error.kind() != StoreErrorKind::Decode => return Err(error),
        _ => {}
    }
    store.put(key, entry, ttl).await?;
    Ok(true)
}

/// Why an entry left a store that reports it ([`MemoryStore`](crate::MemoryStore)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemovalCause {
    /// Its time was up.
    Expired,
    /// Evicted to keep the store within its capacity (or too large to admit).
    Evicted,
    /// Replaced by a newer write of its key.
    Replaced,
    /// Removed on purpose: an invalidation, a purge, a clear.
    Removed,
}

impl RemovalCause {
    /// Every cause, in a stable order.
    pub const ALL: [Self; 4] = [Self::Expired, Self::Evicted, Self::Replaced, Self::Removed];

    /// `expired`, `evicted`, `replaced` or `removed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Evicted => "evicted",
            Self::Replaced => "replaced",
            Self::Removed => "removed",
        }
    }
}

/// Which tier of a tiered store (`TieredStore`, feature `redis`) answered a hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Tier {
    /// The instance's own memory tier, in place.
    L1,
    /// The shared tier (Redis).
    L2,
}

impl Tier {
    /// `l1` or `l2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::L1 => "l1",
            Self::L2 => "l2",
        }
    }
}

/// The listeners of a store's events ([`Store::listen_removals`],
/// [`Store::listen_flushes`]), held weakly: a dropped layer's are forgotten.
pub(crate) struct Listeners<L: ?Sized> {
    list: std::sync::RwLock<Vec<Weak<L>>>,
    /// Whether one was ever added: until then, telling costs one load.
    any: std::sync::atomic::AtomicBool,
}

impl<L: ?Sized> Default for Listeners<L> {
    fn default() -> Self {
        Self {
            list: std::sync::RwLock::new(Vec::new()),
            any: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl<L: ?Sized> Listeners<L> {
    /// Adds `listener`, forgetting those whose layers are gone.
    pub(crate) fn add(&self, listener: Weak<L>) {
        let mut list = match self.list.write() {
            Ok(list) => list,
            Err(poisoned) => poisoned.into_inner(),
        };
        list.retain(|listener| listener.strong_count() > 0);
        list.push(listener);
        self.any.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Calls `tell` with each listener still alive.
    pub(crate) fn tell(&self, mut tell: impl FnMut(&L)) {
        if !self.any.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let list = match self.list.read() {
            Ok(list) => list,
            Err(poisoned) => poisoned.into_inner(),
        };
        for listener in list.iter().filter_map(Weak::upgrade) {
            tell(&listener);
        }
    }
}

/// What a store calls as entries leave it ([`Store::listen_removals`]).
pub type RemovalListener = dyn Fn(RemovalCause) + Send + Sync;

/// What a store calls as it empties a memory tier ([`Store::listen_flushes`]).
pub type FlushListener = dyn Fn(FlushReason) + Send + Sync;

/// Why a tiered store emptied its memory tier ([`L1Flushes`] counts each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlushReason {
    /// The subscriber's connection dropped and reconnected.
    Reconnected,
    /// Its heartbeat did not come back within `max_staleness` (or could not be sent).
    Heartbeat,
    /// The subscriber fell behind the channel and lost messages.
    Lagged,
    /// Redis lost the generation marker: flushed, or restarted empty.
    Flushed,
    /// A store-wide [`Store::clear`] from another instance (the layer's
    /// [`CacheHandle::clear`](crate::CacheHandle::clear) is a purge of its namespace, not
    /// a flush).
    Cleared,
}

impl FlushReason {
    /// `reconnected`, `heartbeat`, `lagged`, `flushed` or `cleared`: the label of
    /// `http_cache_l1_flushes_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reconnected => "reconnected",
            Self::Heartbeat => "heartbeat",
            Self::Lagged => "lagged",
            Self::Flushed => "flushed",
            Self::Cleared => "cleared",
        }
    }
}

/// How often a tiered store emptied its memory tier, by reason
/// ([`TieredStore::flushes`](crate::TieredStore::flushes), [`StoreGauges::l1_flushes`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct L1Flushes {
    /// The subscriber's connection dropped and reconnected.
    pub reconnected: u64,
    /// Its heartbeat did not come back within `max_staleness` (or could not be sent).
    pub heartbeat: u64,
    /// The subscriber fell behind the channel and lost messages.
    pub lagged: u64,
    /// Redis lost the generation marker: flushed, or restarted empty.
    pub flushed: u64,
    /// A store-wide [`Store::clear`] from another instance.
    pub cleared: u64,
}

/// A store's size and health as it knows them now ([`Store::gauges`]); `None` where it does
/// not know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreGauges {
    /// Entries held.
    pub entries: Option<u64>,
    /// Bytes the entries take, as the store weighs them.
    pub bytes: Option<u64>,
    /// The most bytes the store holds.
    pub capacity: Option<u64>,
    /// Circuit breakers open now (the store is skipped while one is).
    pub open_breakers: Option<u64>,
    /// A tiered store's memory-tier flushes so far, by reason.
    pub l1_flushes: Option<L1Flushes>,
}

/// What [`Store::get_or_lock_fill`] found.
#[derive(Debug)]
#[non_exhaustive]
pub enum Lookup {
    /// The entry under the key.
    Found(Arc<CachedResponse>),
    /// Nothing under the key, and this process now holds its fill lock.
    Locked(FillLock),
    /// Nothing under the key, and another process holds its fill lock.
    Held,
}

/// Proof of a fill lock taken with [`Store::lock_fill`]: the token the store released it
/// by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FillLock {
    token: String,
}

impl FillLock {
    /// A lock identified by `token` (unique to the taker).
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
        }
    }

    /// The token.
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl<S: Store + ?Sized> Store for Arc<S> {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<CachedResponse>>> {
        (**self).get(key)
    }

    fn get_now(&self, key: &str) -> Option<Result<Option<Arc<CachedResponse>>, StoreError>> {
        (**self).get_now(key)
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        (**self).put(key, entry, ttl)
    }

    fn put_newer<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        (**self).put_newer(key, entry, ttl)
    }

    fn writes_in_place(&self) -> bool {
        (**self).writes_in_place()
    }

    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        (**self).remove(key)
    }

    fn remove_many<'a>(&'a self, keys: &'a [String]) -> StoreFuture<'a, u64> {
        (**self).remove_many(keys)
    }

    fn clear(&self) -> StoreFuture<'_, ()> {
        (**self).clear()
    }

    fn touch<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        (**self).touch(key, ttl)
    }

    fn touch_tagged<'a>(
        &'a self,
        key: &'a str,
        tags: &'a [String],
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        (**self).touch_tagged(key, tags, ttl)
    }

    fn remove_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, u64> {
        (**self).remove_prefix(prefix)
    }

    fn purge<'a>(&'a self, target: PurgeTarget<'a>, mode: PurgeMode) -> StoreFuture<'a, u64> {
        (**self).purge(target, mode)
    }

    fn purge_mark(&self) -> Option<u64> {
        (**self).purge_mark()
    }

    fn purged_since<'a>(
        &'a self,
        mark: u64,
        key: &'a str,
        tags: &'a [String],
    ) -> StoreFuture<'a, bool> {
        (**self).purged_since(mark, key, tags)
    }

    fn coordinates_fills(&self) -> bool {
        (**self).coordinates_fills()
    }

    fn lock_fill<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Option<FillLock>> {
        (**self).lock_fill(key, ttl)
    }

    fn unlock_fill<'a>(&'a self, key: &'a str, lock: FillLock) -> StoreFuture<'a, ()> {
        (**self).unlock_fill(key, lock)
    }

    fn get_or_lock_fill<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Lookup> {
        (**self).get_or_lock_fill(key, ttl)
    }

    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn purge_lag(&self) -> Duration {
        (**self).purge_lag()
    }

    fn gauges(&self) -> StoreGauges {
        (**self).gauges()
    }

    fn listen_removals(&self, listener: Weak<RemovalListener>) -> bool {
        (**self).listen_removals(listener)
    }

    fn listen_flushes(&self, listener: Weak<FlushListener>) -> bool {
        (**self).listen_flushes(listener)
    }

    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        (**self).put_if_absent(key, entry, ttl)
    }

    fn increment<'a>(&'a self, key: &'a str, delta: i64, ttl: Duration) -> StoreFuture<'a, i64> {
        (**self).increment(key, delta, ttl)
    }

    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> StoreFuture<'a, Vec<Option<Arc<CachedResponse>>>> {
        (**self).get_many(keys)
    }

    fn put_many<'a>(
        &'a self,
        entries: &'a [(String, Arc<CachedResponse>, Duration)],
    ) -> StoreFuture<'a, ()> {
        (**self).put_many(entries)
    }

    fn counter<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<i64>> {
        (**self).counter(key)
    }

    fn tiered(&self) -> bool {
        (**self).tiered()
    }
}

/// What kind of failure a [`StoreError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store could not be reached.
    Unavailable,
    /// The store did not answer in time.
    Timeout,
    /// A stored value could not be decoded (garbage, or an unknown format version).
    Decode,
    /// The store does not support the operation.
    Unsupported,
    /// The entry is larger than the store takes (memcached's item size): not stored, which
    /// the layer counts as not stored (`too-large`), not as a store error.
    TooLarge,
    /// Anything else.
    Other,
}

impl StoreErrorKind {
    /// Every kind, in a stable order.
    pub const ALL: [Self; 6] = [
        Self::Unavailable,
        Self::Timeout,
        Self::Decode,
        Self::Unsupported,
        Self::TooLarge,
        Self::Other,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// A short, stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Decode => "decode",
            Self::Unsupported => "unsupported",
            Self::TooLarge => "too-large",
            Self::Other => "other",
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A failed store operation.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: Cow<'static, str>,
    source: Option<BoxError>,
}

impl StoreError {
    /// An error of `kind` with a message.
    pub fn new(kind: StoreErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `kind` caused by `source`.
    pub fn with_source(
        kind: StoreErrorKind,
        message: impl Into<Cow<'static, str>>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The store does not support `operation`.
    pub fn unsupported(operation: &'static str) -> Self {
        Self::new(
            StoreErrorKind::Unsupported,
            format!("the store does not support {operation}"),
        )
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cache store error ({}): {}",
            self.kind.as_str(),
            self.message
        )
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

/// An entry as `codec` reads it from `bytes` (sharing them), for a remote store: what it
/// cannot read is a [`StoreErrorKind::Decode`] error saying `what` held it.
#[cfg_attr(not(any(feature = "redis", feature = "memcached")), allow(dead_code))]
pub(crate) fn decode_shared(
    codec: &dyn crate::codec::Codec,
    bytes: &bytes::Bytes,
    what: &'static str,
) -> Result<Arc<CachedResponse>, StoreError> {
    codec.decode_shared(bytes).map(Arc::new).map_err(|error| {
        StoreError::with_source(
            StoreErrorKind::Decode,
            format!("the value in {what} is not an entry this codec reads"),
            error,
        )
    })
}

/// A token no other lock holder has: this process, a counter, and the time.
#[cfg_attr(not(any(feature = "redis", feature = "memcached")), allow(dead_code))]
pub(crate) fn lock_token() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    // The process and the time it first took a lock: unique to this process, read once.
    static PROCESS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let process = PROCESS.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        format!("{}-{nanos}", std::process::id())
    });
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{process}-{count}")
}

/// A random number, for ids and starts that must differ between processes: the clock and
/// the address of a fresh allocation, mixed.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn random_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let place = Box::new(0u8);
    let address = std::ptr::addr_of!(*place) as usize as u64;
    let mut bytes = [0u8; 24];
    bytes[..16].copy_from_slice(&nanos.to_le_bytes());
    bytes[16..].copy_from_slice(&address.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}
