//! Caching values — what a handler computes (a database row, an outgoing API call's
//! answer) — in the same stores as responses: aiocache's `get` / `set` / `add` / `delete`
//! and its `@cached` decorator ([`ValueCache::get_or_insert_with`], [`Cached`]).
//!
//! A [`ValueCache`] keeps its values under its own namespace (`values:` by default) of any
//! [`Store`]: memory, Redis, tiered. Each value is serialized ([`Json`] by default,
//! [`MessagePack`] with the `msgpack` feature, or a [`Serializer`]
//! of your own) and stored with its format, its TTL and its tags. A stored value that does
//! not decode as the type asked for is a miss (counted), never a panic.
//!
//! ```
//! use std::time::Duration;
//! use tower_response_cache::MemoryStore;
//! use tower_response_cache::value::{ValueCache, ValueKey};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let values = ValueCache::new(MemoryStore::new(16 << 20));
//! let key = ValueKey::new("price").arg("EUR");
//! // The loader runs once per key at a time; its answer is kept for a minute.
//! let price: f64 = values
//!     .get_or_insert_with(&key, Duration::from_secs(60), || async {
//!         Ok::<_, std::io::Error>(42.5)
//!     })
//!     .await?;
//! assert_eq!(values.get::<f64>(&key).await?, Some(42.5));
//! # Ok(()) }
//! ```
//!
//! # Beside a layer's responses
//!
//! [`CacheLayer::values`](crate::CacheLayer::values) makes one on the layer's store, beside
//! its `cache:` keys, with the layer's tag purges and observers (`examples/values.rs` runs
//! the articles' example):
//!
//! ```
//! use std::time::Duration;
//! use tower_response_cache::value::ValueKey;
//!
//! # async fn f(layer: tower_response_cache::CacheLayer) -> Result<(), std::io::Error> {
//! let values = layer.values("values"); // beside the layer's `cache:` keys; Clone, for `State`
//! let user: String = values
//!     .cached(ValueKey::new("user").arg(42))
//!     .ttl(Duration::from_secs(60))
//!     .tags(["user:42"]) // `layer.handle().invalidate_tag("user:42")` drops it with the pages
//!     .load(|| async { Ok::<_, std::io::Error>("alice".to_owned()) })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # For aiocache users
//!
//! - `Cache(Cache.REDIS, namespace=…)`:
//!   [`ValueCache::new(store).namespace(…)`](ValueCache::namespace), or `layer.values(…)` on
//!   a layer's store.
//! - `serializer=JsonSerializer()` / `MsgPackSerializer()` / `StringSerializer()`: [`Json`]
//!   (default) / [`MessagePack`] (feature `msgpack`) / [`get_bytes`](ValueCache::get_bytes),
//!   [`set_bytes`](ValueCache::set_bytes); `impl` [`Serializer`] for your own.
//! - `get`, `set(ttl=…)`, `add`, `exists`, `delete`, `expire`, `clear`:
//!   [`get::<T>`](ValueCache::get), [`set`](ValueCache::set), [`add`](ValueCache::add)
//!   (atomic: memory, Redis `SET NX`, memcached `add`), [`exists`](ValueCache::exists),
//!   [`delete`](ValueCache::delete), [`expire`](ValueCache::expire),
//!   [`clear`](ValueCache::clear) (its namespace only, never a flush).
//! - `increment`: [`increment(key, delta)`](ValueCache::increment) (atomic: memory, Redis
//!   `INCRBY`; a plain integer in Redis), read with [`counter(key)`](ValueCache::counter).
//! - `multi_get`, `multi_set`: [`multi_get`](ValueCache::multi_get) (one `MGET` per Redis
//!   hash slot, [`Batches::get_many`](crate::store::Batches::get_many)), [`multi_set`](ValueCache::multi_set) (one pipeline of
//!   `SET … PX` per slot, [`Batches::put_many`](crate::store::Batches::put_many)): ten values through a link with 100 ms of
//!   latency each way take 203 ms with either, in the tests.
//! - `@cached(ttl=…, key_builder=…, skip_cache_func=…)`:
//!   [`get_or_insert_with(key, ttl, loader)`](ValueCache::get_or_insert_with), or
//!   [`cached(key)`](ValueCache::cached) with `.ttl_fn(…)`, `.skip_if(…)`, `.tags(…)`,
//!   `.bypass(…)`, `.refresh(…)`, `.sliding(…)` then [`.load(loader)`](Cached::load).
//! - key builders: [`ValueKey::new("f").arg(a).arg(b)`](ValueKey): arguments escaped, so
//!   `("a:b", "c")` and `("a", "b:c")` differ; keys past 250 bytes hashed as response keys
//!   are.
//! - the hit/miss plugin: [`values.stats()`](ValueCache::stats): hits, misses, mismatches,
//!   sets, deletes, loads, load errors, coalesced waits, store errors,
//!   [`hit_ratio()`](ValueStats::hit_ratio); a layer's observers (and so `CacheMetrics`) get
//!   the events of `layer.values(…)`, with `values:` as the route.
//!
//! # Loaders and failures
//!
//! A stored value that does not decode as the type asked for is a miss (counted in
//! `mismatches`), never a panic. The loader runs once per key at a time: in the process, and
//! across instances on Redis through the fill lock (1 000 concurrent calls on two instances
//! make one loader call, in the tests). Loader errors pass through and are not stored —
//! unless [`load_caching_errors(ttl, loader)`](Cached::load_caching_errors) asks for them to
//! be, for their own short TTL. [`get_or_insert_with`](ValueCache::get_or_insert_with) fails
//! open: a store that is down or slower than [`store_timeout`](ValueCache::store_timeout)
//! (250 ms) makes it call the loader; `get`, `set` and the others report the store's error.
//! Tested on the memory store, Redis standalone and cluster, and the tiered store.

// Past 600 lines on purpose: the cache's public operations, one subject, a third of it
// their docs; how values are kept and loaded is in `entries` and `cached`.

mod cached;
mod entries;
mod key;
mod serializer;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::Clock;
use crate::coalesce::{self, Coalescer, Join, Landing};
use crate::entry::CachedResponse;
use crate::observe::Observers;
use crate::observe::{CacheEvent, EventKind, StoreOperation, Timings};
use crate::store::{PurgeMode, PurgeTarget};
use crate::store::{PutIf, Store, StoreError, StoreErrorKind, StoreExt};

pub use cached::Cached;
pub use key::ValueKey;
#[cfg(feature = "msgpack")]
pub use serializer::MessagePack;
pub use serializer::{Json, Serializer};

/// The header that marks an entry as a value, not a response: `ok` for a value, `error`
/// for a cached loader error.
const MARK: HeaderName = HeaderName::from_static("trc-value");

/// What went wrong with a value operation.
#[derive(Debug)]
#[non_exhaustive]
pub enum ValueError {
    /// The store failed (down, slow, refused).
    Store(StoreError),
    /// The value could not be serialized.
    Encode(String),
    /// Stored bytes could not be read as the type asked for (reported only where a miss
    /// would hide it: [`ValueCache::get`] counts it and answers `None`).
    Decode(String),
}

impl ValueError {
    /// A serializer's error turning a value into bytes.
    pub fn encode(error: impl fmt::Display) -> Self {
        Self::Encode(error.to_string())
    }

    /// A serializer's error reading bytes as a value.
    pub fn decode(error: impl fmt::Display) -> Self {
        Self::Decode(error.to_string())
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Store(error) => write!(f, "value cache store: {error}"),
            Self::Encode(error) => write!(f, "value cannot be serialized: {error}"),
            Self::Decode(error) => write!(f, "stored value cannot be read: {error}"),
        }
    }
}

impl std::error::Error for ValueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Store(error) => Some(error),
            _ => None,
        }
    }
}

impl From<StoreError> for ValueError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

/// A [`ValueCache`]'s counters so far ([`ValueCache::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ValueStats {
    /// Lookups answered by a stored value (a wait for another caller's load included).
    pub hits: u64,
    /// Lookups that found nothing usable, and loads that did not look (a refresh).
    pub misses: u64,
    /// Of the misses, stored values that did not decode as the type asked for.
    pub mismatches: u64,
    /// Values written.
    pub sets: u64,
    /// Values removed by `delete`.
    pub deletes: u64,
    /// Loader calls (`get_or_insert_with`, [`Cached::load`]).
    pub loads: u64,
    /// Loader calls that returned an error.
    pub load_errors: u64,
    /// Callers that waited for another caller's load of the same key, in this process.
    pub coalesced: u64,
    /// Store operations that failed or timed out.
    pub store_errors: u64,
}

impl ValueStats {
    /// Hits over lookups; `0.0` before the first.
    pub fn hit_ratio(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    mismatches: AtomicU64,
    sets: AtomicU64,
    deletes: AtomicU64,
    loads: AtomicU64,
    load_errors: AtomicU64,
    coalesced: AtomicU64,
    store_errors: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A cache of values over a [`Store`], under a namespace of its own; cheap to clone (share
/// it through axum's `State`).
///
/// Operations that read or write report store errors ([`ValueError::Store`]) so that the
/// caller can choose; [`get_or_insert_with`](Self::get_or_insert_with) never does: a store
/// that is down or slower than [`store_timeout`](Self::store_timeout) makes it call the
/// loader (fail open), counted in [`ValueStats::store_errors`].
pub struct ValueCache<S = Json> {
    inner: Arc<Inner>,
    serializer: S,
}

impl<S: Clone> Clone for ValueCache<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            serializer: self.serializer.clone(),
        }
    }
}

impl<S> fmt::Debug for ValueCache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueCache")
            .field("namespace", &self.inner.namespace)
            .field("store", &self.inner.store.capabilities().name)
            .field("default_ttl", &self.inner.default_ttl)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Inner {
    store: Arc<dyn Store>,
    namespace: String,
    /// `namespace:`, before every key.
    prefix: String,
    default_ttl: Duration,
    store_timeout: Duration,
    coalescer: Arc<Coalescer>,
    /// Where the time is read; `None`: the system's.
    clock: Option<Arc<dyn Clock>>,
    max_key_len: usize,
    counters: Arc<Counters>,
    /// Told of each event, for a cache made from a layer with observers.
    observers: Option<Arc<Observers>>,
}

impl ValueCache<Json> {
    /// A cache of JSON values on `store`, under the namespace `values`, kept for 5 minutes
    /// unless told otherwise; store calls of `get_or_insert_with` wait at most 250 ms.
    pub fn new(store: impl Store) -> Self {
        Self::on(Arc::new(store))
    }

    /// [`new`](Self::new) on a store already shared.
    pub fn on(store: Arc<dyn Store>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                namespace: "values".to_owned(),
                prefix: "values:".to_owned(),
                default_ttl: Duration::from_secs(300),
                store_timeout: Duration::from_millis(250),
                coalescer: Arc::new(Coalescer::new(Duration::ZERO, Duration::from_secs(10))),
                max_key_len: 250,
                counters: Arc::default(),
                observers: None,
                clock: None,
            }),
            serializer: Json,
        }
    }
}

impl<S: Serializer> ValueCache<S> {
    fn settings(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.inner)
    }

    /// The namespace the values live under (its keys start with `namespace:`): beside a
    /// response cache's (`cache:`) in the same store, and what [`clear`](Self::clear)
    /// empties. Default: `values`.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        let settings = self.settings();
        settings.prefix = format!("{namespace}:");
        settings.namespace = namespace;
        self
    }

    /// The TTL of values set without one ([`Cached`] without `ttl`). Default: 5 minutes.
    #[must_use]
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.settings().default_ttl = ttl;
        self
    }

    /// How long `get_or_insert_with` waits for each store call before it goes on without
    /// the store (fail open). Default: 250 ms.
    #[must_use]
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.settings().store_timeout = timeout;
        self
    }

    /// Reads the time from `clock` instead of the system's: values' freshness and the
    /// times they are stored at. For tests about time, a
    /// [`TokioClock`](crate::clock::TokioClock) on Tokio's paused clock.
    #[must_use]
    pub fn clock(self, clock: impl Clock) -> Self {
        self.clock_arc(Arc::new(clock))
    }

    /// [`clock`](Self::clock), shared with a layer.
    pub(crate) fn clock_arc(mut self, clock: Arc<dyn Clock>) -> Self {
        self.settings().clock = Some(clock);
        self
    }

    /// How long a caller waits for another caller's load of the same key before it loads
    /// itself. Default: 10 s.
    #[must_use]
    pub fn coalesce_timeout(mut self, timeout: Duration) -> Self {
        self.settings().coalescer = Arc::new(Coalescer::new(Duration::ZERO, timeout));
        self
    }

    /// The same cache, values read and written with `serializer`.
    pub fn serializer<S2: Serializer>(self, serializer: S2) -> ValueCache<S2> {
        ValueCache {
            inner: self.inner,
            serializer,
        }
    }

    /// The cache, its events told to `observers` (a layer's).
    pub(crate) fn observed(mut self, observers: Option<Arc<Observers>>) -> Self {
        self.settings().observers = observers;
        self
    }

    /// What every store key of this cache starts with: `namespace:`.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The counters so far (shared by every clone).
    pub fn stats(&self) -> ValueStats {
        let c = &self.inner.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ValueStats {
            hits: load(&c.hits),
            misses: load(&c.misses),
            mismatches: load(&c.mismatches),
            sets: load(&c.sets),
            deletes: load(&c.deletes),
            loads: load(&c.loads),
            load_errors: load(&c.load_errors),
            coalesced: load(&c.coalesced),
            store_errors: load(&c.store_errors),
        }
    }

    /// The key this cache gives its store for `key`: the namespace, then the key — or,
    /// past the store's key length, the crate's hashed form (the key's first bytes, `#`
    /// and a hash of it), as response keys are. It is the key of the [`Store`] methods
    /// (`store.get(&values.store_key("user:1"))`), and what a [`MemoryStore`] holds.
    ///
    /// A shared store puts its own namespace in front: what Redis holds is
    /// [`RedisStore::redis_key`] of it (`trc:values:user:1` for a `RedisStore` of the
    /// default namespace `trc`, the key to look for with `redis-cli`), and what memcached
    /// holds is [`MemcachedStore::memcached_key`] of it (with the store's generation, or
    /// hashed).
    ///
    /// ```
    /// use tower_response_cache::MemoryStore;
    /// use tower_response_cache::value::ValueCache;
    ///
    /// let values = ValueCache::new(MemoryStore::new(1 << 20)).namespace("n1");
    /// assert_eq!(values.store_key("get_user_data:123"), "n1:get_user_data:123");
    /// ```
    ///
    /// [`MemoryStore`]: crate::MemoryStore
    /// [`RedisStore::redis_key`]: crate::RedisStore::redis_key
    /// [`MemcachedStore::memcached_key`]: crate::MemcachedStore::memcached_key
    pub fn store_key(&self, key: impl AsRef<str>) -> String {
        crate::key::CacheKey::new(key.as_ref())
            .namespaced(&self.inner.namespace, None, self.inner.max_key_len)
            .into_string()
    }

    /// The value under `key`, if one is stored, fresh and decodes as `T` (one that does not
    /// is a miss, counted in [`ValueStats::mismatches`]); a store error is reported.
    pub async fn get<T: DeserializeOwned>(
        &self,
        key: impl AsRef<str>,
    ) -> Result<Option<T>, ValueError> {
        let entry = self.read(&self.store_key(key)).await?;
        Ok(self.value_of(entry.as_deref()))
    }

    /// The raw bytes stored under `key` by [`set_bytes`](Self::set_bytes), whatever this
    /// cache's serializer.
    pub async fn get_bytes(&self, key: impl AsRef<str>) -> Result<Option<Bytes>, ValueError> {
        let entry = self.read(&self.store_key(key)).await?;
        let bytes = entry
            .filter(|entry| format_of(entry) == Some(RAW) && is_value(entry))
            .map(|entry| entry.body.clone());
        match &bytes {
            Some(_) => self.on_hit(None),
            None => self.on_miss(),
        }
        Ok(bytes)
    }

    /// Stores `value` under `key` for `ttl`.
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: impl AsRef<str>,
        value: &T,
        ttl: Duration,
    ) -> Result<(), ValueError> {
        self.set_tagged(key, value, ttl, std::iter::empty::<&str>())
            .await
    }

    /// [`set`](Self::set), with tags the value can be purged by
    /// ([`invalidate_tag`](Self::invalidate_tag)).
    pub async fn set_tagged<T, I>(
        &self,
        key: impl AsRef<str>,
        value: &T,
        ttl: Duration,
        tags: I,
    ) -> Result<(), ValueError>
    where
        T: Serialize + ?Sized,
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let entry = self.entry(self.serializer.encode(value)?, self.format(), ttl, tags);
        self.write(&self.store_key(key), entry, ttl).await
    }

    /// Stores raw bytes under `key`, not serialized (read back with
    /// [`get_bytes`](Self::get_bytes)).
    pub async fn set_bytes(
        &self,
        key: impl AsRef<str>,
        bytes: impl Into<Bytes>,
        ttl: Duration,
    ) -> Result<(), ValueError> {
        let entry = self.entry(bytes.into(), RAW, ttl, std::iter::empty::<&str>());
        self.write(&self.store_key(key), entry, ttl).await
    }

    /// Stores `value` under `key` only if nothing is stored there; returns whether it did.
    /// Atomic on stores whose [`PutIf::Absent`] is (every store of this crate's).
    pub async fn add<T: Serialize + ?Sized>(
        &self,
        key: impl AsRef<str>,
        value: &T,
        ttl: Duration,
    ) -> Result<bool, ValueError> {
        let entry = Arc::new(self.entry(
            self.serializer.encode(value)?,
            self.format(),
            ttl,
            std::iter::empty::<&str>(),
        ));
        let added = self
            .inner
            .store
            .put(&self.store_key(key), Arc::clone(&entry), ttl, PutIf::Absent)
            .await
            .inspect_err(|error| self.on_store_error(StoreOperation::Write, error))?;
        if added {
            self.on_stored(&entry);
        }
        Ok(added)
    }

    /// Adds `delta` to the counter under `key` — created at 0, to live the default TTL,
    /// when absent — and returns its new value (aiocache's `increment`); atomic on the
    /// memory store, Redis and tiered stores. Read it with [`counter`](Self::counter).
    pub async fn increment(&self, key: impl AsRef<str>, delta: i64) -> Result<i64, ValueError> {
        self.inner
            .store
            .increment(&self.store_key(key), delta, self.inner.default_ttl)
            .await
            .inspect_err(|error| self.on_store_error(StoreOperation::Write, error))
            .map_err(ValueError::from)
    }

    /// The counter under `key` ([`increment`](Self::increment)), if there is one.
    pub async fn counter(&self, key: impl AsRef<str>) -> Result<Option<i64>, ValueError> {
        self.inner
            .store
            .counter(&self.store_key(key))
            .await
            .inspect_err(|error| self.on_store_error(StoreOperation::Read, error))
            .map_err(ValueError::from)
    }

    /// Whether a fresh value is stored under `key` (of any type).
    pub async fn exists(&self, key: impl AsRef<str>) -> Result<bool, ValueError> {
        let entry = self.read(&self.store_key(key)).await?;
        Ok(entry.is_some_and(|entry| is_value(&entry)))
    }

    /// Removes the value under `key`; returns whether there was one.
    pub async fn delete(&self, key: impl AsRef<str>) -> Result<bool, ValueError> {
        let removed = self
            .inner
            .store
            .remove(&self.store_key(key))
            .await
            .inspect_err(|error| self.on_store_error(StoreOperation::Remove, error))?;
        if removed {
            bump(&self.inner.counters.deletes);
        }
        Ok(removed)
    }

    /// Gives the value under `key` a new life of `ttl` from now (aiocache's `expire`);
    /// returns whether there was one.
    pub async fn expire(&self, key: impl AsRef<str>, ttl: Duration) -> Result<bool, ValueError> {
        let key = self.store_key(key);
        let Some(entry) = self.read(&key).await? else {
            return Ok(false);
        };
        if !is_value(&entry) {
            return Ok(false);
        }
        // The entry's own TTL moves with its life in the store: rewritten, not touched.
        let mut renewed = CachedResponse::clone(&entry);
        renewed.stored_at = self.now();
        renewed.ttl = ttl;
        self.write(&key, renewed, ttl).await?;
        Ok(true)
    }

    /// Removes every value of this namespace — and nothing else the store holds (a
    /// response cache's entries, other namespaces): never a flush. Returns how many.
    pub async fn clear(&self) -> Result<u64, ValueError> {
        self.inner
            .store
            .remove_prefix(&self.inner.prefix)
            .await
            .inspect_err(|error| self.on_store_error(StoreOperation::Purge, error))
            .map_err(ValueError::from)
    }

    /// Removes every value of this namespace tagged `tag`; returns how many.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<u64, ValueError> {
        self.inner
            .store
            .purge(
                PurgeTarget::Tag {
                    tag: tag.trim_ascii(),
                    within: &self.inner.prefix,
                },
                PurgeMode::Hard,
            )
            .await
            .inspect_err(|error| self.on_store_error(StoreOperation::Purge, error))
            .map_err(ValueError::from)
    }

    /// The values under `keys`, in order, each as [`get`](Self::get) reads it — in one
    /// round trip per Redis hash slot ([`Batches::get_many`](crate::store::Batches::get_many)).
    pub async fn multi_get<T, I>(&self, keys: I) -> Result<Vec<Option<T>>, ValueError>
    where
        T: DeserializeOwned,
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let keys: Vec<String> = keys.into_iter().map(|key| self.store_key(key)).collect();
        let entries = self
            .inner
            .store
            .get_many(&keys)
            .await
            .inspect_err(|error| self.on_store_error(StoreOperation::Read, error))?;
        let now = self.now();
        Ok(entries
            .iter()
            .map(|entry| {
                let fresh = entry.as_deref().filter(|entry| entry.is_fresh(now));
                self.value_of(fresh)
            })
            .collect())
    }

    /// Stores each `(key, value)` for `ttl` — in one round trip per Redis hash slot
    /// ([`Batches::put_many`](crate::store::Batches::put_many)). A value that cannot be serialized stores none.
    pub async fn multi_set<'v, T, K, I>(&self, pairs: I, ttl: Duration) -> Result<(), ValueError>
    where
        T: Serialize + ?Sized + 'v,
        K: AsRef<str>,
        I: IntoIterator<Item = (K, &'v T)>,
    {
        if ttl.is_zero() {
            return Ok(());
        }
        let mut entries = Vec::new();
        for (key, value) in pairs {
            let entry = self.entry(
                self.serializer.encode(value)?,
                self.format(),
                ttl,
                std::iter::empty::<&str>(),
            );
            entries.push((self.store_key(key), Arc::new(entry), ttl));
        }
        self.inner
            .store
            .put_many(&entries)
            .await
            .inspect_err(|error| self.on_store_error(StoreOperation::Write, error))?;
        for (_, entry, _) in &entries {
            self.on_stored(entry);
        }
        Ok(())
    }

    /// The value under `key`, or the loader's, stored for `ttl` — aiocache's `@cached`.
    /// One loader call per key at a time in this process, and across instances on a store
    /// that coordinates fills (Redis): the others wait for its value. A loader error is
    /// passed through and not stored. The store never fails it: down or slow, the loader
    /// runs. [`cached`](Self::cached) has the other options.
    pub async fn get_or_insert_with<T, E, F, Fut>(
        &self,
        key: impl AsRef<str>,
        ttl: Duration,
        loader: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.cached(key).ttl(ttl).load(loader).await
    }

    /// A [`get_or_insert_with`](Self::get_or_insert_with) with options: a TTL computed from
    /// the value, a predicate that keeps values out, tags, a bypass or refresh for this
    /// call, a sliding TTL.
    pub fn cached<T>(&self, key: impl AsRef<str>) -> Cached<'_, S, T> {
        Cached::new(self, self.store_key(key))
    }
}
/// What a stored entry holds for the type asked for.
enum Decoded<T> {
    Value(T),
    Absent,
    Mismatch,
}

/// The media type of raw values ([`ValueCache::set_bytes`]).
const RAW: &str = "application/octet-stream";

fn is_value(entry: &CachedResponse) -> bool {
    entry.headers.get(MARK).is_some_and(|mark| mark == "ok")
}

fn is_error(entry: &CachedResponse) -> bool {
    entry.headers.get(MARK).is_some_and(|mark| mark == "error")
}

fn format_of(entry: &CachedResponse) -> Option<&str> {
    entry
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
}
