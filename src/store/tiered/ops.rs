//! The store's operations: L1 in place, L2 behind it, every write and purge evicting the
//! L1 copies of every instance.

use super::*;

/// Every method written out (clippy's `missing_trait_methods`): a decorator that forgot one
/// would answer with the trait's default instead of its tiers'.
#[deny(clippy::missing_trait_methods)]
impl Store for TieredStore {
    /// L1 reads in place; the rest is L2's, but for counting purges (L2's count, when it
    /// keeps one).
    fn capabilities(&self) -> Capabilities {
        let l2 = self.inner.l2.capabilities();
        Capabilities {
            name: "tiered",
            reads_in_place: true,
            writes_in_place: false,
            tiered: true,
            ..l2
        }
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<CachedResponse>>> {
        Box::pin(async move {
            if let Some(entry) = self.l1_hit(key) {
                return Ok(Some(entry));
            }
            let epoch = self.inner.health.epoch_of(key);
            let found = self.inner.l2.get(key).await?;
            if let Some(entry) = &found {
                self.fill_l1(key, entry, epoch).await;
            }
            Ok(found)
        })
    }

    /// An L1 hit, in place; anything else (an L1 miss, L1 not in use) is for
    /// [`get`](Store::get) to answer from L2.
    fn get_now(&self, key: &str) -> Option<Result<Option<Arc<CachedResponse>>, StoreError>> {
        self.l1_hit(key).map(|entry| Ok(Some(entry)))
    }

    /// Written to L2 under `condition`; when written, every instance's L1 copy is evicted
    /// (this one's first) and this instance keeps the new entry in L1.
    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
        condition: PutIf,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            if condition == PutIf::Absent {
                let written = self
                    .inner
                    .l2
                    .put(key, Arc::clone(&entry), ttl, condition)
                    .await?;
                if written {
                    // What L1 held under the key was stale or gone in L2: evicted everywhere.
                    self.evict_keys(&[key.to_owned()]).await;
                }
                return Ok(written);
            }
            self.inner.health.invalidated_key(key);
            let _ = self.inner.l1.remove(key).await;
            let written = self
                .inner
                .l2
                .put(key, Arc::clone(&entry), ttl, condition)
                .await?;
            if written {
                self.publish(Evict::Key(key)).await;
                self.fill_l1_written(key, &entry, ttl).await;
            }
            Ok(written)
        })
    }

    /// L2's (the entry is the same: L1 keeps its copy, and its own, shorter, life).
    fn touch<'a>(
        &'a self,
        key: &'a str,
        tags: &'a [String],
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        self.inner.l2.touch(key, tags, ttl)
    }

    /// L2's purge; then every instance's L1 copies of what it covers go, whatever the mode
    /// (a soft purge's stale entry is read from L2).
    fn purge<'a>(&'a self, target: PurgeTarget<'a>, mode: PurgeMode) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let purged = self.inner.l2.purge(target, mode).await;
            if !matches!(target, PurgeTarget::Keys(_)) {
                self.inner.health.invalidated();
            }
            match target {
                PurgeTarget::Keys(keys) => self.evict_keys(keys).await,
                PurgeTarget::Prefix { prefix, .. } => {
                    // Every key under the prefix, the filter aside: more than the purge,
                    // never less.
                    let _ = self.inner.l1.remove_prefix(prefix).await;
                    self.publish(Evict::Prefix(prefix)).await;
                }
                PurgeTarget::Tag { tag, within } => {
                    let _ = self
                        .inner
                        .l1
                        .purge(PurgeTarget::Tag { tag, within }, PurgeMode::Hard)
                        .await;
                    self.publish(Evict::Tag(tag)).await;
                }
                PurgeTarget::All => {
                    self.inner.l1.clear_now();
                    self.publish(Evict::All).await;
                }
            }
            purged
        })
    }

    fn shared(&self) -> Option<&dyn SharedStore> {
        self.inner.l2.shared().map(|_| self as &dyn SharedStore)
    }

    /// L2's counters (L1 holds none: every increment is shared).
    fn counters(&self) -> Option<&dyn Counters> {
        self.inner.l2.counters()
    }

    fn batches(&self) -> Option<&dyn Batches> {
        Some(self)
    }

    fn listen(&self, listener: StoreListener) -> bool {
        match listener {
            StoreListener::Flushes(listener) => {
                self.inner.health.listeners.add(listener);
                true
            }
            removals => self.inner.l1.listen(removals),
        }
    }

    /// L1's entries, bytes and capacity; L2's breaker; L1's flushes.
    fn gauges(&self) -> StoreGauges {
        StoreGauges {
            open_breakers: self.inner.l2.gauges().open_breakers,
            l1_flushes: Some(self.flushes()),
            ..self.inner.l1.gauges()
        }
    }
}

impl Batches for TieredStore {
    /// L1's entries where it has them, the rest in one read of many from L2 (which fill
    /// L1).
    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> StoreFuture<'a, Vec<Option<Arc<CachedResponse>>>> {
        Box::pin(async move {
            let mut found: Vec<Option<Arc<CachedResponse>>> =
                keys.iter().map(|key| self.l1_hit(key)).collect();
            let missing: Vec<usize> = (0..keys.len()).filter(|&i| found[i].is_none()).collect();
            if missing.is_empty() {
                return Ok(found);
            }
            let epochs: Vec<Epoch> = missing
                .iter()
                .map(|&i| self.inner.health.epoch_of(&keys[i]))
                .collect();
            let wanted: Vec<String> = missing.iter().map(|&i| keys[i].clone()).collect();
            let read = self.inner.l2.get_many(&wanted).await?;
            for ((&i, epoch), entry) in missing.iter().zip(epochs).zip(read) {
                if let Some(entry) = &entry {
                    self.fill_l1(&keys[i], entry, epoch).await;
                }
                found[i] = entry;
            }
            Ok(found)
        })
    }

    /// One after another, each evicting every instance's L1 copy.
    fn put_many<'a>(
        &'a self,
        entries: &'a [(String, Arc<CachedResponse>, Duration)],
    ) -> StoreFuture<'a, ()> {
        Box::pin(crate::store::put_each(self, entries))
    }
}

/// L2's protocol; a lookup reads L1 first.
#[deny(clippy::missing_trait_methods)]
impl SharedStore for TieredStore {
    fn purge_mark(&self) -> Option<u64> {
        self.l2_shared()?.purge_mark()
    }

    fn purged_since<'a>(
        &'a self,
        mark: u64,
        key: &'a str,
        tags: &'a [String],
    ) -> StoreFuture<'a, bool> {
        match self.l2_shared() {
            Some(l2) => l2.purged_since(mark, key, tags),
            None => Box::pin(async { Ok(false) }),
        }
    }

    fn purge_lag(&self) -> Duration {
        self.l2_shared()
            .map_or(Duration::ZERO, SharedStore::purge_lag)
    }

    fn lock_fill<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Option<FillLock>> {
        match self.l2_shared() {
            Some(l2) => l2.lock_fill(key, ttl),
            None => Box::pin(async { Err(StoreError::unsupported("fill locks")) }),
        }
    }

    fn unlock_fill<'a>(&'a self, key: &'a str, lock: FillLock) -> StoreFuture<'a, ()> {
        match self.l2_shared() {
            Some(l2) => l2.unlock_fill(key, lock),
            None => Box::pin(async { Ok(()) }),
        }
    }

    /// L2's one step, when it has it, around L1 as [`put`](Store::put) does: the key
    /// evicted from L1 (here and, once written, everywhere), and L1 filled with what L2
    /// stored.
    fn put_filled<'a>(&'a self, fill: Fill<'a>) -> Option<StoreFuture<'a, Filled>> {
        let (key, entry, ttl) = (fill.key, Arc::clone(&fill.entry), fill.ttl);
        let filled = self.l2_shared()?.put_filled(fill)?;
        Some(Box::pin(async move {
            self.inner.health.invalidated_key(key);
            let _ = self.inner.l1.remove(key).await;
            let filled = filled.await?;
            if filled == Filled::Stored {
                self.publish(Evict::Key(key)).await;
                self.fill_l1_written(key, &entry, ttl).await;
            }
            Ok(filled)
        }))
    }

    /// L1 first (when in use); then L2's lookup-or-lock, whose entry fills L1.
    fn get_or_lock_fill<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Lookup> {
        Box::pin(async move {
            if let Some(entry) = self.l1_hit(key) {
                return Ok(Lookup::Found(entry));
            }
            let Some(l2) = self.l2_shared() else {
                return Err(StoreError::unsupported("fill locks"));
            };
            let epoch = self.inner.health.epoch_of(key);
            let found = l2.get_or_lock_fill(key, ttl).await?;
            if let Lookup::Found(entry) = &found {
                self.fill_l1(key, entry, epoch).await;
            }
            Ok(found)
        })
    }
}
