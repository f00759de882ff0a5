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
//! # Writing a store
//!
//! A store implements [`Store`]'s core: [`capabilities`](Store::capabilities),
//! [`get`](Store::get), [`put`](Store::put) under a [`PutIf`] condition, atomically, and
//! [`purge`](Store::purge) of keys and of everything, with [`touch`](Store::touch) and the
//! other purges as its capabilities say. A store that other processes write as well (a
//! database, a remote cache) implements [`SharedStore`] too — the protocol that keeps purges
//! complete and fetches coordinated across them — and returns it from
//! [`Store::shared`]. [`Counters`] and [`Batches`] are for the value cache, when the store
//! has them. [`StoreExt`] builds `remove`, `clear`, `get_many` and the rest on the core.
//!
//! The store contract kit (`contract::run_contract`, feature `contract`) checks every
//! promise on a store in one call, from a test; `examples/custom_store.rs` is a complete
//! store written outside the crate that passes it.
//!
//! # What each store does
//!
//! What each store can do is one value, its [`Capabilities`] (with the accessors of the traits
//! it opts in to: [`Store::shared`], [`Store::counters`], [`Store::batches`]); the store contract
//! kit (`contract`, feature `contract`) checks that each store does what its capabilities say,
//! on the memory store, Redis standalone and cluster, the tiered store and memcached, and a test
//! holds this table (and the README's) to the capabilities:
//!
//! | | `MemoryStore` | `RedisStore` | `TieredStore` (on Redis) | `MemcachedStore` |
//! |---|---|---|---|---|
//! | get, put, remove, clear; put if absent and "an older entry never over a newer one", atomic | ✅ | ✅ `SET NX`, one script (1) | ✅ | ✅ `add`, compare-and-swap |
//! | hits in place, without a round trip or decoding | ✅ | — | ✅ L1 | — |
//! | touch (sliding expiry) | ✅ | ✅ `PEXPIRE` | ✅ L2's | ✅ `mg … T` |
//! | prefix purge | ✅ | ✅ `SCAN` | ✅ | ✅ (2) |
//! | purge of the URLs under a path (a prefix with a filter) | ✅ | ✅ | ✅ | — |
//! | tag purge | ✅ | ✅ tag index | ✅ | ✅ (2) |
//! | soft purge | ✅ | ✅ | ✅ | ✅ |
//! | a purge counts what it took | ✅ | ✅ | ✅ | — |
//! | counters | ✅ | ✅ `INCRBY` | ✅ L2's | ✅ `incr` / `decr`, unsigned |
//! | many keys in one round trip | — | ✅ `MGET`, a pipeline per hash slot | ✅ L1, then L2 | ✅ one `get` per server |
//! | shared: purges seen by every instance, fetches under way included | — | ✅ purge log | ✅ and L1s evicted over pub/sub | ✅ (3) |
//! | one origin fetch across instances (fill lock) | — | ✅ | ✅ | ✅ `add`, released by compare-and-swap |
//!
//! 1. With the binary codec; with another, a compare-and-set script.
//! 2. Numbered purges in a record, checked as entries are read.
//! 3. Purge numbers, a tombstone per purged key, tag records and namespace generations.
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
//!
//! Later (`REPEAT=2 scripts/bench.sh`, 2-core Xeon VM, `BENCHMARKS.md`): a fill on one
//! Redis server ends in one script ([`SharedStore::put_filled`]: the purge log checked, the
//! entry written with its tags, the fill lock released), so a miss is two scripts where it
//! was five; fred's command futures are boxed once instead of copied through every layer
//! of futures; and a miss looks in the store a second time only when a flight of its own
//! key's stripe ended meanwhile. Instructions per request: a Redis miss 139 628 (was
//! 342 382), a tiered miss 190 902 (was 389 409), a Redis hit 46 165 (was 57 208).

#[cfg(any(feature = "redis", feature = "memcached"))]
mod breaker;
mod capabilities;
#[cfg(feature = "contract")]
#[cfg_attr(docsrs, doc(cfg(feature = "contract")))]
pub mod contract;
mod error;
mod events;
mod extras;
#[cfg(feature = "memcached")]
pub(crate) mod memcached;
pub(crate) mod memory;
mod purge;
#[cfg(feature = "redis")]
pub(crate) mod redis;
mod shared;
#[cfg(feature = "redis")]
pub(crate) mod tiered;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use capabilities::Capabilities;
pub use error::{StoreError, StoreErrorKind};
pub use events::{
    FlushListener, FlushReason, L1Flushes, Listeners, RemovalCause, RemovalListener, StoreGauges,
    StoreListener, Tier,
};
pub use extras::{Batches, Counters};
pub use memory::Removals;
pub use purge::{KeyFilter, PurgeMode, PurgeTarget, softened};
#[cfg(feature = "redis")]
pub use redis::CircuitStats;
#[cfg(any(feature = "redis", feature = "memcached"))]
pub(crate) use shared::lock_token;
pub use shared::{Fill, FillLock, Filled, Lookup, SharedStore};
#[cfg(feature = "redis")]
pub use tiered::ChannelMode;

use crate::entry::CachedResponse;

/// The future a [`Store`] method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What a [`Store::put`] requires of what the key holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PutIf {
    /// Whatever the key holds, it is replaced. The default.
    #[default]
    Always,
    /// Unless the key holds a newer entry (one whose
    /// [`stored_at`](CachedResponse::stored_at) is later): so that a write that was
    /// overtaken (a slow background write of a miss, landing after a refresh's) never
    /// replaces a newer entry with an older one. What the key holds but cannot be decoded
    /// is replaced. The layer writes every response it fetched this way.
    Newer,
    /// Only if the key holds nothing.
    Absent,
}

/// A place to keep cached responses: the few operations a store author writes.
///
/// Keys are complete (namespace included); a store that shares its keyspace puts its own
/// namespace in front. The store drops an entry after the `ttl` it was put with, which
/// covers the entry's freshness and any stale window ([`CachedResponse::storage_ttl`]).
///
/// A store bounds its own latency (a slow store slows every lookup) and reports failures
/// as [`StoreError`]s: the layer counts them and serves the request from the inner service,
/// so a store failure never fails a request. What it cannot do it says in
/// [`capabilities`](Self::capabilities) and answers with [`StoreErrorKind::Unsupported`].
///
/// Beyond the core, a store opts in to what it has, each a trait of its own returned by an
/// accessor: [`SharedStore`] (the protocol between processes that share the store: purge
/// marks and fill locks; **a store other processes write must implement it**, or purges
/// and fetches are not coordinated between them), [`Counters`] and [`Batches`] (for the
/// value cache). [`StoreExt`] adds what is built on the core (`remove`, `clear`,
/// `get_many`…), for every store.
///
/// Run the contract kit (`store::contract::run_contract`, feature `contract`) on a store
/// to check it keeps every promise here and that its capabilities are true.
///
/// The trait is dyn-compatible (its futures are boxed): a layer holds any store behind an
/// `Arc<dyn Store>`, and several layers can share one.
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// What the store can do beyond the core: read once, when a layer is built.
    fn capabilities(&self) -> Capabilities;

    /// The entry under `key`, if there is one that has not expired.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<CachedResponse>>>;

    /// The entry under `key` without waiting, for stores that can answer in place
    /// ([`Capabilities::reads_in_place`]): `Some` with the answer, or `None` to say "use
    /// [`get`](Self::get)". The default is `None`.
    fn get_now(&self, key: &str) -> Option<Result<Option<Arc<CachedResponse>>, StoreError>> {
        let _ = key;
        None
    }

    /// Stores `entry` under `key` for `ttl` if `condition` holds, atomically (a condition
    /// checked in one step and written in another is a race the contract kit looks for);
    /// returns whether it stored.
    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
        condition: PutIf,
    ) -> StoreFuture<'a, bool>;

    /// Keeps the entry under `key`, tagged `tags`, for `ttl` from now (sliding expiry);
    /// `true` if there was one. A store whose tag index records when entries expire keeps
    /// it in step, so that the entry's tags still find it for its whole new life. The
    /// default reports [`StoreErrorKind::Unsupported`] ([`Capabilities::touch`]).
    fn touch<'a>(
        &'a self,
        key: &'a str,
        tags: &'a [String],
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        let _ = (key, tags, ttl);
        Box::pin(async { Err(StoreError::unsupported("touch")) })
    }

    /// Purges the entries `target` names, removing them or, in [`PurgeMode::Soft`], making
    /// them stale; returns how many entries it purged (see
    /// [`Capabilities::counts_purges`]). Every removal the layer makes comes here.
    ///
    /// Every store purges [`PurgeTarget::Keys`] and [`PurgeTarget::All`] (hard); the other
    /// targets and modes as its [`capabilities`](Self::capabilities) say, and
    /// [`StoreErrorKind::Unsupported`] for the rest. A store that purges tags indexes
    /// entries by their [`CachedResponse::tags`] when it stores them, keeps that index
    /// bounded (cleaned as entries expire or are evicted), and purges a tag in bounded
    /// batches. A soft purge is atomic per entry: it never revives an entry removed in the
    /// meantime, never replaces a newer one, and never extends an entry's life
    /// ([`softened`]).
    fn purge<'a>(&'a self, target: PurgeTarget<'a>, mode: PurgeMode) -> StoreFuture<'a, u64>;

    /// The store's side of the protocol between processes that share it, when it is shared
    /// ([`SharedStore`]). Default: `None` (a process-local store).
    fn shared(&self) -> Option<&dyn SharedStore> {
        None
    }

    /// The store's counters, when it has them ([`Counters`]). Default: `None`.
    fn counters(&self) -> Option<&dyn Counters> {
        None
    }

    /// Many keys in one round trip, when the store can ([`Batches`]). Default: `None`
    /// ([`StoreExt::get_many`] then reads one key after another).
    fn batches(&self) -> Option<&dyn Batches> {
        None
    }

    /// Calls `listener` with what it listens for from now on, for as long as it lives;
    /// returns whether the store reports that kind of event. The default reports nothing.
    fn listen(&self, listener: StoreListener) -> bool {
        let _ = listener;
        false
    }

    /// What the store can say about its size and health now, for gauges: cheap to call
    /// (no I/O). Default: nothing known.
    fn gauges(&self) -> StoreGauges {
        StoreGauges::default()
    }
}

/// What is built on a [`Store`]'s core, for every store (`use
/// tower_response_cache::store::StoreExt`).
pub trait StoreExt: Store {
    /// Removes the entry under `key`; `true` if there was one.
    fn remove<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'a {
        async move {
            let keys = [key.to_owned()];
            Ok(self
                .purge(PurgeTarget::Keys(&keys), PurgeMode::Hard)
                .await?
                > 0)
        }
    }

    /// Removes the entries under `keys`; returns how many there were.
    fn remove_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'a {
        self.purge(PurgeTarget::Keys(keys), PurgeMode::Hard)
    }

    /// Removes every entry whose key starts with `prefix`; returns how many (see
    /// [`Capabilities::counts_purges`]).
    fn remove_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'a {
        self.purge(
            PurgeTarget::Prefix {
                prefix,
                filter: None,
            },
            PurgeMode::Hard,
        )
    }

    /// Removes every entry of the store (of a store that shares its keyspace, every entry
    /// under its own namespace and nothing else).
    fn clear(&self) -> impl Future<Output = Result<(), StoreError>> + Send + '_ {
        async move {
            self.purge(PurgeTarget::All, PurgeMode::Hard).await?;
            Ok(())
        }
    }

    /// The entries under `keys`, in order; what is absent or unreadable is `None`. In one
    /// round trip where the store has [`Batches`], else one key after another.
    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> impl Future<Output = Result<Vec<Option<Arc<CachedResponse>>>, StoreError>> + Send + 'a
    {
        async move {
            if let Some(batches) = self.batches() {
                return batches.get_many(keys).await;
            }
            let mut found = Vec::with_capacity(keys.len());
            for key in keys {
                found.push(match self.get(key).await {
                    Err(error) if error.kind() == StoreErrorKind::Decode => None,
                    result => result?,
                });
            }
            Ok(found)
        }
    }

    /// Stores each `(key, entry, ttl)`, unconditionally. In one round trip where the store
    /// has [`Batches`], else one after another.
    fn put_many<'a>(
        &'a self,
        entries: &'a [(String, Arc<CachedResponse>, Duration)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        async move {
            match self.batches() {
                Some(batches) => batches.put_many(entries).await,
                None => put_each(self, entries).await,
            }
        }
    }

    /// [`Counters::increment`], or [`StoreErrorKind::Unsupported`] on a store without
    /// counters.
    fn increment<'a>(
        &'a self,
        key: &'a str,
        delta: i64,
        ttl: Duration,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send + 'a {
        async move {
            match self.counters() {
                Some(counters) => counters.increment(key, delta, ttl).await,
                None => Err(StoreError::unsupported("counters")),
            }
        }
    }

    /// [`Counters::counter`], or [`StoreErrorKind::Unsupported`] on a store without
    /// counters.
    fn counter<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send + 'a {
        async move {
            match self.counters() {
                Some(counters) => counters.counter(key).await,
                None => Err(StoreError::unsupported("counters")),
            }
        }
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// Stores each `(key, entry, ttl)` with its own put, one after another: many at once on a
/// store that has no command for it.
pub(crate) async fn put_each<S: Store + ?Sized>(
    store: &S,
    entries: &[(String, Arc<CachedResponse>, Duration)],
) -> Result<(), StoreError> {
    for (key, entry, ttl) in entries {
        store
            .put(key, Arc::clone(entry), *ttl, PutIf::Always)
            .await?;
    }
    Ok(())
}

/// Every method forwarded (clippy's `missing_trait_methods` makes a forgotten one an error).
#[deny(clippy::missing_trait_methods)]
impl<S: Store + ?Sized> Store for Arc<S> {
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }

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
        condition: PutIf,
    ) -> StoreFuture<'a, bool> {
        (**self).put(key, entry, ttl, condition)
    }

    fn touch<'a>(
        &'a self,
        key: &'a str,
        tags: &'a [String],
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        (**self).touch(key, tags, ttl)
    }

    fn purge<'a>(&'a self, target: PurgeTarget<'a>, mode: PurgeMode) -> StoreFuture<'a, u64> {
        (**self).purge(target, mode)
    }

    fn shared(&self) -> Option<&dyn SharedStore> {
        (**self).shared()
    }

    fn counters(&self) -> Option<&dyn Counters> {
        (**self).counters()
    }

    fn batches(&self) -> Option<&dyn Batches> {
        (**self).batches()
    }

    fn listen(&self, listener: StoreListener) -> bool {
        (**self).listen(listener)
    }

    fn gauges(&self) -> StoreGauges {
        (**self).gauges()
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
