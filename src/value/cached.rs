//! [`Cached`]: one key's value, loaded once per key at a time across instances, with
//! its TTL, tags, skip rule and bypass or refresh for one call.

use super::*;
use crate::coalesce::{FillLease, FlightGuard, LockWait, Locked};
use crate::store::SharedStore;

/// What a [`Cached`] call does with the stored value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Normal,
    /// Neither read nor write: the loader answers.
    Bypass,
    /// Do not read; load and store.
    Refresh,
}

/// A [`ValueCache::get_or_insert_with`] with options, run by [`load`](Self::load).
///
/// ```
/// use std::time::Duration;
/// use tower_response_cache::MemoryStore;
/// use tower_response_cache::value::ValueCache;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let values = ValueCache::new(MemoryStore::new(16 << 20));
/// let rows: Vec<u32> = values
///     .cached("recent-orders")
///     // Kept longer when there are many, not at all when there are none.
///     .ttl_fn(|rows: &Vec<u32>| Duration::from_secs(10 * rows.len() as u64))
///     .skip_if(|rows| rows.is_empty())
///     .tags(["orders"])
///     .load(|| async { Ok::<_, std::io::Error>(vec![7, 8, 9]) })
///     .await
///     .unwrap();
/// assert_eq!(rows, [7, 8, 9]);
/// # }
/// ```
#[must_use = "nothing happens until `load`"]
pub struct Cached<'a, S, T> {
    cache: &'a ValueCache<S>,
    key: String,
    ttl: Option<Duration>,
    #[allow(clippy::type_complexity)]
    ttl_fn: Option<Box<dyn Fn(&T) -> Duration + Send + Sync + 'a>>,
    #[allow(clippy::type_complexity)]
    skip: Option<Box<dyn Fn(&T) -> bool + Send + Sync + 'a>>,
    tags: Vec<String>,
    mode: Mode,
    sliding: bool,
}

impl<'a, S, T> Cached<'a, S, T> {
    /// A call for the value under `key` (a store key) of `cache`, with its defaults.
    pub(super) fn new(cache: &'a ValueCache<S>, key: String) -> Self {
        Self {
            cache,
            key,
            ttl: None,
            ttl_fn: None,
            skip: None,
            tags: Vec::new(),
            mode: Mode::Normal,
            sliding: false,
        }
    }
}

impl<'a, S: Serializer, T: Serialize + DeserializeOwned> Cached<'a, S, T> {
    /// How long the loaded value is kept. Default: the cache's default TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How long the loaded value is kept, from the value (zero: not kept).
    pub fn ttl_fn(mut self, ttl: impl Fn(&T) -> Duration + Send + Sync + 'a) -> Self {
        self.ttl_fn = Some(Box::new(ttl));
        self
    }

    /// Values for which `skip` says `true` are returned but not stored (empty results,
    /// error-shaped values).
    pub fn skip_if(mut self, skip: impl Fn(&T) -> bool + Send + Sync + 'a) -> Self {
        self.skip = Some(Box::new(skip));
        self
    }

    /// Tags the stored value can be purged by ([`ValueCache::invalidate_tag`]).
    pub fn tags<I>(mut self, tags: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.tags = tags
            .into_iter()
            .map(|tag| tag.as_ref().to_owned())
            .collect();
        self
    }

    /// Skip the cache for this call, even with a value stored and fresh: the loader
    /// answers and nothing is stored.
    pub fn bypass(mut self, bypass: bool) -> Self {
        if bypass {
            self.mode = Mode::Bypass;
        }
        self
    }

    /// Load again for this call, even with a value stored and fresh, and store the new
    /// value.
    pub fn refresh(mut self, refresh: bool) -> Self {
        if refresh {
            self.mode = Mode::Refresh;
        }
        self
    }

    /// Give a value found a full TTL again on each hit.
    pub fn sliding(mut self, sliding: bool) -> Self {
        self.sliding = sliding;
        self
    }

    /// The stored value, or `loader`'s (stored unless skipped); see
    /// [`ValueCache::get_or_insert_with`].
    pub async fn load<E, F, Fut>(self, loader: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let cache = self.cache;
        if self.mode == Mode::Bypass {
            return self.call(loader).await;
        }
        let coalescer = &cache.inner.coalescer;
        // A load that ends between this lookup and the join below has stored its value:
        // looked up again then, rather than loaded twice.
        let ended = coalescer.ended(&self.key);
        if self.mode == Mode::Normal
            && let Some(value) = self.lookup().await
        {
            return Ok(value);
        }
        let joined = tokio::time::Instant::now();
        let deadline = joined + coalescer.timeout();
        let mut loader = Some(loader);
        loop {
            match coalescer.join(&self.key) {
                Join::Leader(guard) => {
                    if self.mode == Mode::Normal
                        && coalescer.ended(&self.key) != ended
                        && let Some(value) = self.lookup_again().await
                    {
                        drop(guard);
                        return Ok(value);
                    }
                    // Across instances: one of them loads; the others find its value.
                    let lease = self.lock(&guard).await;
                    if let Some(Found(value, entry)) = lease.found {
                        drop(guard.ready(entry));
                        return Ok(value);
                    }
                    let loader = loader.take().expect("the loader is used once");
                    let loaded = self.call(loader).await;
                    match &loaded {
                        // The waiters take the value, stored or not (skipped).
                        Ok(value) => match self.prepare(value) {
                            Some((entry, store)) => {
                                let entry = Arc::new(entry);
                                let landed = guard.ready(Arc::clone(&entry));
                                if store {
                                    let ttl = entry.ttl;
                                    cache.store_loaded(&self.key, entry, ttl).await;
                                }
                                drop(landed);
                            }
                            None => guard.fallback(false),
                        },
                        // An error is not shared: the waiters load for themselves, at once
                        // (not one after another).
                        Err(_) => guard.fallback(false),
                    }
                    if let Some(lease) = lease.lease {
                        lease.release().await;
                    }
                    return loaded;
                }
                Join::Waiter(rx) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    match coalesce::wait(rx, left).await {
                        Some(Landing::Ready(entry)) => {
                            if let Decoded::Value(value) = cache.decoded::<T>(Some(&entry)) {
                                cache.on_coalesced(joined.elapsed());
                                return Ok(value);
                            }
                        }
                        // The leader failed or went away: elect another.
                        Some(Landing::Fallback { retry: true } | Landing::Pending) => continue,
                        Some(Landing::Fallback { retry: false }) | None => {}
                    }
                    let loader = loader.take().expect("the loader is used once");
                    return self.load_alone(loader).await;
                }
                Join::Alone => {
                    let loader = loader.take().expect("the loader is used once");
                    return self.load_alone(loader).await;
                }
            }
        }
    }

    /// [`load`](Self::load), caching the loader's errors too, for `negative_ttl` (a short
    /// one: "not found", "rate limited"), so that a failing source is not asked again at
    /// once. A cached error answers (as `Err`) until it expires; a bypass neither reads
    /// nor stores one, a refresh does not read one. Callers that were waiting for the
    /// failed load when it failed may each load once.
    pub async fn load_caching_errors<E, F, Fut>(
        self,
        negative_ttl: Duration,
        loader: F,
    ) -> Result<T, E>
    where
        E: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let cache = self.cache;
        let key = self.key.clone();
        let mode = self.mode;
        if mode == Mode::Normal {
            let entry = cache
                .bounded(StoreOperation::Read, cache.get_entry(&key))
                .await
                .flatten()
                .filter(|entry| entry.is_fresh(self.cache.now()) && is_error(entry));
            if let Some(entry) = entry
                && let Ok(error) = cache.serializer.decode::<E>(&entry.body)
            {
                cache.on_hit(Some(&entry));
                return Err(error);
            }
        }
        let result = self.load(loader).await;
        if let Err(error) = &result
            && mode != Mode::Bypass
            && !negative_ttl.is_zero()
            && let Ok(bytes) = cache.serializer.encode(error)
        {
            let mut entry = cache.entry(
                bytes,
                cache.format(),
                negative_ttl,
                std::iter::empty::<&str>(),
            );
            entry
                .headers
                .insert(MARK, HeaderValue::from_static("error"));
            cache
                .store_loaded(&key, Arc::new(entry), negative_ttl)
                .await;
        }
        result
    }

    /// A stored value for this call, counted; `None` to load.
    pub(super) async fn lookup(&self) -> Option<T> {
        let cache = self.cache;
        let (value, entry) = self.stored().await?;
        cache.on_hit(Some(&entry));
        if self.sliding {
            let ttl = entry.ttl;
            let mut renewed = CachedResponse::clone(&entry);
            renewed.stored_at = self.cache.now();
            let _ = cache
                .bounded(
                    StoreOperation::Touch,
                    cache
                        .inner
                        .store
                        .put(&self.key, Arc::new(renewed), ttl, PutIf::Always),
                )
                .await;
        }
        Some(value)
    }

    /// A second look, after a load ended meanwhile: the value another caller loaded, a
    /// coalesced hit.
    pub(super) async fn lookup_again(&self) -> Option<T> {
        let (value, _) = self.stored().await?;
        self.cache.on_coalesced(Duration::ZERO);
        Some(value)
    }

    /// The fresh value stored under the key, with its entry (uncounted, but a mismatch).
    pub(super) async fn stored(&self) -> Option<(T, Arc<CachedResponse>)> {
        let cache = self.cache;
        let entry = cache
            .bounded(StoreOperation::Read, cache.get_entry(&self.key))
            .await
            .flatten()
            .filter(|entry| entry.is_fresh(self.cache.now()))?;
        match cache.decoded::<T>(Some(&entry)) {
            Decoded::Value(value) => Some((value, entry)),
            Decoded::Absent => None,
            Decoded::Mismatch => {
                bump(&cache.inner.counters.mismatches);
                None
            }
        }
    }

    /// The cross-instance fill lock, on a store that coordinates fills: taken, or the
    /// value another instance stored while this one waited for its lock.
    pub(super) async fn lock(&self, guard: &FlightGuard) -> Lease<T> {
        let cache = self.cache;
        let store = &cache.inner.store;
        let none = Lease {
            lease: None,
            found: None,
        };
        let Some(shared) = store.shared().filter(|_| store.capabilities().fill_locks) else {
            return none;
        };
        let mut wait = ValueLock { call: self, shared };
        let timeout = cache.inner.coalescer.timeout() / 2;
        match coalesce::take_fill_lock(&mut wait, guard, timeout).await {
            Locked::Taken(lease) => Lease {
                lease: Some(lease),
                found: None,
            },
            Locked::Found(found) => {
                self.cache.on_hit(Some(&found.1));
                Lease {
                    lease: None,
                    found: Some(found),
                }
            }
            // Without the store, or past the wait: this instance loads.
            Locked::Without | Locked::TimedOut => none,
        }
    }

    pub(super) async fn load_alone<E, F, Fut>(&self, loader: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let value = self.call(loader).await?;
        if let Some((entry, true)) = self.prepare(&value) {
            let ttl = entry.ttl;
            self.cache
                .store_loaded(&self.key, Arc::new(entry), ttl)
                .await;
        }
        Ok(value)
    }

    /// Calls the loader, counted (a miss, unless the call bypasses the cache).
    pub(super) async fn call<E, F, Fut>(&self, loader: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let counters = &self.cache.inner.counters;
        if self.mode != Mode::Bypass {
            self.cache.on_miss();
        }
        bump(&counters.loads);
        let result = loader().await;
        if result.is_err() {
            bump(&counters.load_errors);
        }
        result
    }

    /// The entry of a loaded value, and whether it is to be stored (not when skipped, of
    /// no TTL, or bypassing the cache); `None` when it cannot be serialized (logged).
    pub(super) fn prepare(&self, value: &T) -> Option<(CachedResponse, bool)> {
        let cache = self.cache;
        let ttl = match &self.ttl_fn {
            Some(ttl_fn) => ttl_fn(value),
            None => self.ttl.unwrap_or(cache.inner.default_ttl),
        };
        let store = self.mode != Mode::Bypass
            && !ttl.is_zero()
            && !self.skip.as_ref().is_some_and(|skip| skip(value));
        match cache.serializer.encode(value) {
            Ok(bytes) => Some((cache.entry(bytes, cache.format(), ttl, &self.tags), store)),
            Err(error) => {
                tracing::warn!(%error, "value cache: a loaded value cannot be serialized; not stored");
                None
            }
        }
    }
}

impl<S, T> fmt::Debug for Cached<'_, S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cached")
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .field("tags", &self.tags)
            .field("mode", &self.mode)
            .field("sliding", &self.sliding)
            .finish_non_exhaustive()
    }
}

/// A value found while waiting for another instance's load, with its entry.
pub(super) struct Found<T>(T, Arc<CachedResponse>);

pub(super) struct Lease<T> {
    lease: Option<coalesce::FillLease>,
    found: Option<Found<T>>,
}

/// A value's wait for the shared store's fill lock ([`coalesce::take_fill_lock`]).
struct ValueLock<'c, 'a, S, T> {
    call: &'c Cached<'a, S, T>,
    shared: &'c dyn SharedStore,
}

impl<S: Serializer, T: Serialize + DeserializeOwned> LockWait for ValueLock<'_, '_, S, T> {
    type Found = Found<T>;

    async fn attempt(&mut self) -> Result<Option<FillLease>, ()> {
        let call = self.call;
        let cache = call.cache;
        let lock_ttl = cache.inner.coalescer.timeout();
        let attempt = self.shared.lock_fill(&call.key, lock_ttl);
        match cache.bounded(StoreOperation::Lock, attempt).await {
            Some(lock) => Ok(
                lock.map(|lock| FillLease::new(Arc::clone(&cache.inner.store), &call.key, lock))
            ),
            // Failed or timed out (counted): this instance loads.
            None => Err(()),
        }
    }

    async fn reread(&mut self) -> Option<Found<T>> {
        self.call
            .stored()
            .await
            .map(|(value, entry)| Found(value, entry))
    }
}
