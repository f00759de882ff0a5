//! The store traits on memcached: the core, the protocol between instances (purge
//! numbers, tombstones, fill locks), counters and batches.

use super::*;

impl Store for MemcachedStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            touch: true,
            prefix_purges: true,
            tag_purges: true,
            soft_purges: true,
            fill_locks: true,
            ..Capabilities::new("memcached")
        }
    }

    fn shared(&self) -> Option<&dyn SharedStore> {
        Some(self)
    }

    fn counters(&self) -> Option<&dyn Counters> {
        Some(self)
    }

    fn batches(&self) -> Option<&dyn Batches> {
        Some(self)
    }

    fn gauges(&self) -> StoreGauges {
        StoreGauges {
            open_breakers: Some(self.open_circuits() as u64),
            ..StoreGauges::default()
        }
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<CachedResponse>>> {
        Box::pin(async move {
            let generation = self.generation().await?;
            let key_in = self.key_in(generation, key);
            let found = self
                .command(&key_in, async |client: &mut Client| {
                    client.get(key_in.as_bytes()).await
                })
                .await?;
            match found {
                Some(Value {
                    data: Some(data),
                    flags,
                    ..
                }) => {
                    self.entry_of(generation, key, Bytes::from(data), flags.unwrap_or(0))
                        .await
                }
                _ => Ok(None),
            }
        })
    }

    /// `set` for [`PutIf::Always`], `add` for [`PutIf::Absent`], compare-and-swap for
    /// [`PutIf::Newer`]: atomic across instances.
    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
        condition: PutIf,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            match condition {
                PutIf::Always => self.put_always(key, entry, ttl).await.map(|()| true),
                PutIf::Absent => self.put_absent(key, entry, ttl).await,
                PutIf::Newer => self.put_newer(key, entry, ttl).await,
            }
        })
    }

    /// Meta get with a new TTL (`mg <key> T<ttl> t`): the entry's life from now, without
    /// reading it; a missing one is not revived.
    fn touch<'a>(
        &'a self,
        key: &'a str,
        tags: &'a [String],
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        let _ = tags;
        Box::pin(async move {
            let key = self.memcached_key(key).await?;
            let ttl = format!("T{}", protocol_ttl(ttl));
            self.command(&key, async |client: &mut Client| {
                // `t` asks for the TTL back, so that a hit answers with a value.
                let found = client
                    .meta_get(key.as_bytes(), false, None, Some(&[ttl.as_str(), "t"]))
                    .await?;
                Ok(found.is_some())
            })
            .await
        })
    }

    /// Keys (hard: removed; soft: made stale in place, by compare-and-swap), tags (a
    /// numbered purge in the tag's record, applied as entries are read: hard or soft) and
    /// prefixes (the same, in the record every entry is checked against: a miss from then
    /// on here, within `version_ttl` on other instances). Memcached cannot list its keys,
    /// so a tag or prefix purge cannot count what it takes: it returns 0. Everything: a new
    /// namespace generation, numbered by a purge (hard only). A prefix purge with a filter
    /// (a purge of the URLs under a path) is [`StoreErrorKind::Unsupported`]: a filter
    /// cannot be kept in a record.
    fn purge<'a>(&'a self, target: PurgeTarget<'a>, mode: PurgeMode) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            match (target, mode) {
                // Recorded first, for other instances' fetches under way; carried out even
                // when it cannot be recorded (the control values' server down, when no
                // instance's fetch can check a purge and none stores), that failure then
                // reported.
                (PurgeTarget::Keys(keys), mode) => {
                    let recorded = self.record_key_purges(keys).await;
                    let mut purged = 0;
                    for key in keys {
                        let done = match mode {
                            PurgeMode::Soft => self.soften_key(key).await?,
                            _ => self.remove_key(key).await?,
                        };
                        purged += u64::from(done);
                    }
                    recorded.map(|()| purged)
                }
                (PurgeTarget::Tag { tag, within }, mode) => {
                    self.purge_record(Some(tag), within, mode).await?;
                    Ok(0)
                }
                (
                    PurgeTarget::Prefix {
                        prefix,
                        filter: None,
                    },
                    mode,
                ) => {
                    self.purge_record(None, prefix, mode).await?;
                    Ok(0)
                }
                (PurgeTarget::Prefix { .. }, _) => Err(StoreError::unsupported(
                    "filtered prefix purges (memcached cannot list its keys)",
                )),
                (PurgeTarget::All, PurgeMode::Hard) => {
                    self.clear_generation().await?;
                    Ok(0)
                }
                (PurgeTarget::All, PurgeMode::Soft) => {
                    Err(StoreError::unsupported("soft purges of everything"))
                }
            }
        })
    }
}

impl SharedStore for MemcachedStore {
    /// [`MemcachedConfig::version_ttl`].
    fn purge_lag(&self) -> Duration {
        self.inner.control.ttl
    }

    /// The purge counter as last read here (`None` before it was ever read).
    fn purge_mark(&self) -> Option<u64> {
        let control = &self.inner.control;
        (control.read_ms.load(Ordering::Acquire) != 0).then(|| control.last().1)
    }

    /// Read from memcached, not from this instance's copies: a clear (a generation
    /// numbered above `mark`), or a purge above `mark` in the prefix purges' record, in the
    /// key's tombstone (purges of keys, kept an hour) or in the record of one of `tags`.
    fn purged_since<'a>(
        &'a self,
        mark: u64,
        key: &'a str,
        tags: &'a [String],
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let (generation, _) = self.control(true).await?;
            if generation > mark {
                return Ok(true);
            }
            let control = &self.inner.control;
            if control.with_prefixes(|record| record.purged_since(key, mark)) {
                return Ok(true);
            }
            if self.key_purged_since(generation, mark, key).await? {
                return Ok(true);
            }
            let records = self.tag_records(generation, tags, false).await?;
            // A record missing holds no purge: a purge makes the record it finds missing
            // (and reads that find none take the entry as purged).
            Ok(records.iter().any(|record| {
                record
                    .as_deref()
                    .is_some_and(|record| record.purged_since(key, mark))
            }))
        })
    }

    /// `add` of the key's lock, with the lock's TTL: taken by one instance at a time. The
    /// lock is outside the namespace generations, so that instances whose copies of the
    /// generation differ for a while (after a clear) still share it.
    fn lock_fill<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Option<FillLock>> {
        Box::pin(async move {
            let lock = self.key_aside("lock", key);
            let token = lock_token();
            let ttl = protocol_ttl(ttl);
            let taken = self
                .command(&lock, async |client: &mut Client| {
                    match client
                        .add(lock.as_bytes(), token.as_str(), Some(ttl), None)
                        .await
                    {
                        Ok(()) => Ok(true),
                        Err(async_memcached::Error::Protocol(
                            async_memcached::Status::NotStored,
                        )) => Ok(false),
                        Err(error) => Err(error),
                    }
                })
                .await?;
            Ok(taken.then(|| FillLock::new(token)))
        })
    }

    /// Deleted only while it is still this holder's: read with its CAS value, and deleted
    /// with that CAS (meta protocol), so that a lock that expired and went to another
    /// process is left alone.
    fn unlock_fill<'a>(&'a self, key: &'a str, lock: FillLock) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let lock_key = self.key_aside("lock", key);
            self.command(&lock_key, async |client: &mut Client| {
                let held = client
                    .meta_get(lock_key.as_bytes(), false, None, Some(&["v", "c"]))
                    .await?;
                let Some(held) = held else {
                    return Ok(());
                };
                if held.data.as_deref() != Some(lock.token().as_bytes()) {
                    return Ok(());
                }
                let Some(cas) = held.cas else {
                    return Ok(());
                };
                let cas = format!("C{cas}");
                match client
                    .meta_delete(lock_key.as_bytes(), false, None, Some(&[cas.as_str()]))
                    .await
                {
                    Ok(_) => Ok(()),
                    // Taken by another since: not ours to delete.
                    Err(async_memcached::Error::Protocol(_)) => Ok(()),
                    Err(error) => Err(error),
                }
            })
            .await
        })
    }
}

impl Counters for MemcachedStore {
    /// `incr` / `decr` of a counter memcached keeps as decimal text; made with `add` (and
    /// its TTL) when absent. Memcached's counters are unsigned: one taken below zero stays
    /// at zero.
    fn increment<'a>(&'a self, key: &'a str, delta: i64, ttl: Duration) -> StoreFuture<'a, i64> {
        Box::pin(async move {
            let key = self.memcached_key(key).await?;
            let ttl = protocol_ttl(ttl);
            let value = self
                .command(&key, async |client: &mut Client| {
                    let amount = delta.unsigned_abs();
                    // Twice at most: a counter another instance made between the two.
                    for _ in 0..2 {
                        let changed = if delta >= 0 {
                            client.increment(key.as_bytes(), amount).await
                        } else {
                            client.decrement(key.as_bytes(), amount).await
                        };
                        match changed {
                            Err(async_memcached::Error::Protocol(
                                async_memcached::Status::NotFound,
                            )) => {}
                            other => return other,
                        }
                        let start = delta.max(0).unsigned_abs();
                        match client
                            .add(key.as_bytes(), start.to_string().as_str(), Some(ttl), None)
                            .await
                        {
                            Ok(()) => return Ok(start),
                            Err(async_memcached::Error::Protocol(
                                async_memcached::Status::NotStored,
                            )) => {}
                            Err(error) => return Err(error),
                        }
                    }
                    Err(async_memcached::Error::Protocol(
                        async_memcached::Status::NotFound,
                    ))
                })
                .await?;
            i64::try_from(value).map_err(|_| {
                StoreError::new(StoreErrorKind::Other, "memcached counter past i64::MAX")
            })
        })
    }

    fn counter<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<i64>> {
        Box::pin(async move {
            let key = self.memcached_key(key).await?;
            let found = self
                .command(&key, async |client: &mut Client| {
                    client.get(key.as_bytes()).await
                })
                .await?;
            // Anything but a whole number (an entry) is no counter.
            Ok(found
                .and_then(|value| value.data)
                .and_then(|bytes| std::str::from_utf8(&bytes).ok()?.trim().parse().ok()))
        })
    }
}

impl Batches for MemcachedStore {
    /// One `get` of many keys per server; an entry the codec cannot read is `None`, as a
    /// miss.
    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> StoreFuture<'a, Vec<Option<Arc<CachedResponse>>>> {
        Box::pin(async move {
            let generation = self.generation().await?;
            let keys_in: Vec<String> = keys
                .iter()
                .map(|key| self.key_in(generation, key))
                .collect();
            let mut found: Vec<Option<Arc<CachedResponse>>> = vec![None; keys.len()];
            for (i, item) in self.read_items(&keys_in, 0..keys.len()).await? {
                let (Some(data), flags) = (item.data, item.flags.unwrap_or(0)) else {
                    continue;
                };
                found[i] = match self
                    .entry_of(generation, &keys[i], Bytes::from(data), flags)
                    .await
                {
                    Err(error) if error.kind() == StoreErrorKind::Decode => None,
                    result => result?,
                };
            }
            Ok(found)
        })
    }

    /// One write after another (memcached has no multi-set).
    fn put_many<'a>(
        &'a self,
        entries: &'a [(String, Arc<CachedResponse>, Duration)],
    ) -> StoreFuture<'a, ()> {
        Box::pin(crate::store::put_each(self, entries))
    }
}
