//! The store's operations: the core, conditional writes, the protocol between instances
//! (purge log, fill locks), counters and batches.

use super::*;

impl RedisStore {
    /// [`PutIf::Newer`] with the binary codec: one script compares the stored entry's
    /// `stored_at` in place and sets the new entry unless the stored one is newer.
    pub(super) async fn put_newer_binary(
        &self,
        key: &str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        // Replaces the key unless it holds a binary entry of this format whose `stored_at`
        // (big-endian, so compared byte by byte) is later than ARGV[4].
        static PUT_NEWER: Lua = Lua::new(
            r"
local head = redis.call('GETRANGE', KEYS[1], 0, ARGV[5] - 1)
if #head == tonumber(ARGV[5]) and string.sub(head, 1, #ARGV[3]) == ARGV[3] then
  local stored = string.sub(head, ARGV[6] + 1, ARGV[5])
  for i = 1, #ARGV[4] do
    local a, b = string.byte(stored, i), string.byte(ARGV[4], i)
    if a > b then return 0 end
    if a < b then break end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1",
        );
        let value = self.inner.codec.encode(&entry);
        let args: Vec<fred::types::Value> = vec![
            value.into(),
            millis(ttl).into(),
            Bytes::copy_from_slice(&BINARY_PREFIX).into(),
            Bytes::copy_from_slice(&binary_stored_at(&entry)).into(),
            (BINARY_STORED_AT.end as i64).into(),
            (BINARY_STORED_AT.start as i64).into(),
        ];
        let put_newer = self.eval(&PUT_NEWER, self.redis_key(key), args);
        let stored: i64 = self.indexed(key, &entry, ttl, put_newer).await?;
        Ok(stored == 1)
    }

    /// [`PutIf::Newer`] with a codec a script cannot read: the stored entry is read and
    /// compared here, and the new one written by a script only if the key still holds the
    /// bytes that were read (or still nothing); read again while other writers come
    /// between. Two round trips, and the stored bytes sent back once: atomic all the same.
    pub(super) async fn put_newer_by_compare(
        &self,
        key: &str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        // ARGV[3] is '0' to expect no value, '1' to expect ARGV[4].
        static COMPARE_AND_SET: Lua = Lua::new(
            r"
local current = redis.call('GET', KEYS[1])
if ARGV[3] == '0' then
  if current then return 0 end
elseif current ~= ARGV[4] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1",
        );
        let inner = &self.inner;
        let value = inner.codec.encode(&entry);
        let redis_key = self.redis_key(key);
        for _ in 0..16 {
            let client = inner.pool.next_connected().with_options(&inner.options);
            let current: Option<Bytes> = self.command(client.get(redis_key.as_str())).await?;
            if let Some(bytes) = &current {
                // What does not decode is replaced.
                if let Ok(stored) = inner.codec.decode_shared(bytes)
                    && stored.stored_at > entry.stored_at
                {
                    return Ok(false);
                }
            }
            let (expect, expected) = match current {
                Some(bytes) => ("1", bytes),
                None => ("0", Bytes::new()),
            };
            let args: Vec<fred::types::Value> = vec![
                value.clone().into(),
                millis(ttl).into(),
                expect.into(),
                expected.into(),
            ];
            let set = self.eval(&COMPARE_AND_SET, redis_key.as_str(), args);
            let stored: i64 = self.indexed(key, &entry, ttl, set).await?;
            if stored == 1 {
                return Ok(true);
            }
        }
        Err(StoreError::new(
            StoreErrorKind::Other,
            "the key changed under every attempt to write it",
        ))
    }

    /// [`SharedStore::put_filled`] in one script: on one server (not a cluster, where the
    /// purge log, the entry, its lock and its tags' sets live on different nodes), with the
    /// binary codec (whose `stored_at` a script reads) and the purge log.
    fn put_filled_script<'a>(&'a self, fill: Fill<'a>) -> Option<StoreFuture<'a, Filled>> {
        // KEYS: the entry, the purge count, the lock (the entry again when there is none),
        // then the entry's tag sets. ARGV: the value, its TTL in ms, the binary prefix, the
        // entry's `stored_at`, the length of the head that holds it and its offset, the
        // mark, the lock's token ('' when none). Nothing is done when a purge was recorded
        // since the mark (-1); otherwise the entry is written unless the key holds a newer
        // one (1, else 0), its tags indexed, and the lock released.
        static PUT_FILLED: Lua = Lua::new(concat!(
            r"
local count = tonumber(redis.call('GET', KEYS[2]) or '0')
if count ~= tonumber(ARGV[7]) then return -1 end
local stored = 1
local head = redis.call('GETRANGE', KEYS[1], 0, ARGV[5] - 1)
if #head == tonumber(ARGV[5]) and string.sub(head, 1, #ARGV[3]) == ARGV[3] then
  local current = string.sub(head, ARGV[6] + 1, ARGV[5])
  for i = 1, #ARGV[4] do
    local a, b = string.byte(current, i), string.byte(ARGV[4], i)
    if a > b then stored = 0 break end
    if a < b then break end
  end
end
if stored == 1 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  if #KEYS > 3 then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local member, ttl = KEYS[1], ARGV[2]
    for i = 4, #KEYS do
      local set = KEYS[i]",
            index_tag_lua!(),
            r"
    end
  end
end
if ARGV[8] ~= '' and redis.call('GET', KEYS[3]) == ARGV[8] then redis.call('DEL', KEYS[3]) end
return stored"
        ));
        let inner = &self.inner;
        if !inner.purge_log || inner.codec.name() != BinaryCodec.name() {
            return None;
        }
        let client = inner.pool.next_connected();
        if client.is_clustered() {
            return None;
        }
        Some(Box::pin(async move {
            let entry = &fill.entry;
            let redis_key = self.redis_key(fill.key);
            let (count_key, _) = self.log_keys();
            let (lock_key, token) = match fill.lock {
                Some((key, lock)) => (self.lock_key(key), lock.token()),
                None => (redis_key.clone(), ""),
            };
            let mut keys = Vec::with_capacity(3 + entry.tags.len());
            keys.extend([redis_key, count_key, lock_key]);
            keys.extend(entry.tags.iter().map(|tag| self.tag_key(tag)));
            let args: Vec<fred::types::Value> = vec![
                inner.codec.encode(entry).into(),
                millis(fill.ttl).into(),
                Bytes::copy_from_slice(&BINARY_PREFIX).into(),
                Bytes::copy_from_slice(&binary_stored_at(entry)).into(),
                (BINARY_STORED_AT.end as i64).into(),
                (BINARY_STORED_AT.start as i64).into(),
                i64::try_from(fill.mark).unwrap_or(i64::MAX).into(),
                token.into(),
            ];
            let keys: Vec<Key> = keys.into_iter().map(Key::from).collect();
            let filled: i64 = self.eval(&PUT_FILLED, keys, args).await?;
            Ok(match filled {
                1 => Filled::Stored,
                0 => Filled::Superseded,
                _ => Filled::Unchecked,
            })
        }))
    }

    /// [`SharedStore::get_or_lock_fill`] in two round trips: a `GET`, then, on a miss, the
    /// lock.
    pub(super) async fn get_then_lock(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Lookup, StoreError> {
        if let Some(entry) = self.get(key).await? {
            return Ok(Lookup::Found(entry));
        }
        Ok(match self.lock_fill(key, ttl).await? {
            Some(lock) => Lookup::Locked(lock),
            None => Lookup::Held,
        })
    }
}

impl Store for RedisStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            touch: true,
            prefix_purges: true,
            filtered_prefix_purges: true,
            tag_purges: true,
            soft_purges: true,
            counts_purges: true,
            fill_locks: self.inner.fill_locks,
            ..Capabilities::new("redis")
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

    /// Whether its circuit breaker is open (entries and bytes are Redis's to report).
    fn gauges(&self) -> StoreGauges {
        StoreGauges {
            open_breakers: Some(u64::from(self.inner.breaker.is_open())),
            ..StoreGauges::default()
        }
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<CachedResponse>>> {
        Box::pin(async move {
            let inner = &self.inner;
            let client = inner.pool.next_connected().with_options(&inner.options);
            let bytes: Option<Bytes> = self.command(client.get(self.redis_key(key))).await?;
            self.seen(key, bytes.is_some());
            match bytes {
                Some(bytes) => self.decode(&bytes).map(Some),
                None => Ok(None),
            }
        })
    }

    /// `SET … PX` for [`PutIf::Always`], `SET … NX PX` for [`PutIf::Absent`]; for
    /// [`PutIf::Newer`] with the binary codec, one script that compares the stored entry's
    /// `stored_at` (read in place, without fetching the entry) and sets the new one, and with
    /// another codec a compare-and-set (the entry read and decoded here, the write made by a
    /// script only if the key still holds the bytes read). Atomic whichever instance writes.
    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
        condition: PutIf,
    ) -> StoreFuture<'a, bool> {
        match condition {
            PutIf::Always => Box::pin(async move {
                let inner = &self.inner;
                let value = inner.codec.encode(&entry);
                let client = inner.pool.next_connected().with_options(&inner.options);
                let set = client.set::<(), _, _>(
                    self.redis_key(key),
                    value,
                    Some(Expiration::PX(millis(ttl))),
                    None,
                    false,
                );
                self.indexed(key, &entry, ttl, self.command(set)).await?;
                Ok(true)
            }),
            PutIf::Absent => Box::pin(async move {
                let inner = &self.inner;
                let value = inner.codec.encode(&entry);
                let client = inner.pool.next_connected().with_options(&inner.options);
                let set = client.set::<Option<String>, _, _>(
                    self.redis_key(key),
                    value,
                    Some(Expiration::PX(millis(ttl))),
                    Some(SetOptions::NX),
                    false,
                );
                let set = async { self.command(set).await.map(|set| set.is_some()) };
                self.indexed(key, &entry, ttl, set).await
            }),
            PutIf::Newer if self.inner.codec.name() == BinaryCodec.name() => {
                Box::pin(self.put_newer_binary(key, entry, ttl))
            }
            PutIf::Newer => Box::pin(self.put_newer_by_compare(key, entry, ttl)),
        }
    }

    /// `PEXPIRE`, and the entry's tags indexed for its new expiry alongside.
    fn touch<'a>(
        &'a self,
        key: &'a str,
        tags: &'a [String],
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let inner = &self.inner;
            let redis_key = self.redis_key(key);
            let client = inner.pool.next_connected().with_options(&inner.options);
            let expire = async {
                let touched: bool = self
                    .command(client.pexpire(redis_key.as_str(), millis(ttl), None))
                    .await?;
                Ok(touched)
            };
            if tags.is_empty() {
                return expire.await;
            }
            let (touched, indexed) =
                futures_util::future::join(expire, self.index_tags(&redis_key, tags, ttl)).await;
            indexed?;
            touched
        })
    }

    /// Every target and mode: tags through the tag index, prefixes by `SCAN` (see the
    /// `purge` module's notes on costs and bounds).
    fn purge<'a>(&'a self, target: PurgeTarget<'a>, mode: PurgeMode) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            if self.inner.purge_log {
                self.record_purge(&target).await?;
            }
            match target {
                PurgeTarget::Keys(keys) if mode == PurgeMode::Hard => {
                    let keys = keys.iter().map(|key| self.redis_key(key).into()).collect();
                    self.unlink(keys).await
                }
                PurgeTarget::Keys(keys) => {
                    let keys = keys.iter().map(|key| self.redis_key(key).into()).collect();
                    self.purge_keys(keys, mode, None).await
                }
                PurgeTarget::Prefix { prefix, filter } => {
                    self.purge_matching(&self.redis_key(prefix), filter, mode)
                        .await
                }
                PurgeTarget::Tag { tag, within } => self.purge_tag(tag, within, mode).await,
                PurgeTarget::All if self.inner.prefix.is_empty() => Err(StoreError::new(
                    StoreErrorKind::Unsupported,
                    "refusing to clear a RedisStore without a namespace: it would remove every key",
                )),
                PurgeTarget::All => self.purge_matching(&self.inner.prefix, None, mode).await,
            }
        })
    }
}

impl SharedStore for RedisStore {
    fn purge_mark(&self) -> Option<u64> {
        let inner = &self.inner;
        inner
            .purge_log
            .then(|| inner.purge_count.load(Ordering::Acquire))
    }

    fn purged_since<'a>(
        &'a self,
        mark: u64,
        key: &'a str,
        tags: &'a [String],
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.purges_since(mark, key, tags))
    }

    fn lock_fill<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Option<FillLock>> {
        Box::pin(async move {
            let inner = &self.inner;
            let token = lock_token();
            let client = inner.pool.next_connected().with_options(&inner.options);
            let set = client.set::<Option<String>, _, _>(
                self.lock_key(key),
                token.as_str(),
                Some(Expiration::PX(millis(ttl))),
                Some(SetOptions::NX),
                false,
            );
            match self.command(set).await {
                Ok(taken) => Ok(taken.map(|_| FillLock::new(token))),
                Err(error) => {
                    // The SET may have been applied before the reply was lost: release what
                    // may be ours rather than leave others waiting for its expiry.
                    self.release_later(key, &token);
                    Err(error)
                }
            }
        })
    }

    /// One script: `GET` the entry, and when there is none, `SET` the fill lock `NX PX` —
    /// a miss reaches the origin after one round trip. (An entry key whose lock cannot
    /// share its slot: a `GET`, then the lock.)
    fn get_or_lock_fill<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Lookup> {
        // A key found lately is most likely found again: a plain `GET` (and, if it is gone
        // after all, the lock in a second round trip) — decided before the script's larger
        // future is made, which a hit would pay to move.
        if self.likely_present(key) {
            return Box::pin(self.get_then_lock(key, ttl));
        }
        Box::pin(async move {
            let data = self.redis_key(key);
            let Some(lock) = slot_lock_key(&data) else {
                // The lock cannot share the entry's slot: two round trips.
                return self.get_then_lock(key, ttl).await;
            };
            static GET_OR_LOCK: Lua = Lua::new(
                "local v = redis.call('GET', KEYS[1]) \
                 if v then return {1, v} end \
                 if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0, 1} end \
                 return {0, 0}",
            );
            let token = lock_token();
            let reply: Result<Vec<fred::types::Value>, StoreError> = Box::pin(self.eval(
                &GET_OR_LOCK,
                vec![data, lock],
                vec![token.as_str().into(), millis(ttl).into()],
            ))
            .await;
            let mut reply = match reply {
                Ok(reply) => reply.into_iter(),
                Err(error) => {
                    // The lock may have been taken before the reply was lost.
                    self.release_later(key, &token);
                    return Err(error);
                }
            };
            let (found, value) = (reply.next(), reply.next());
            match (found.and_then(|found| found.as_i64()), value) {
                (Some(1), Some(value)) => {
                    self.seen(key, true);
                    let bytes = value.into_bytes().unwrap_or_default();
                    self.decode(&bytes).map(Lookup::Found)
                }
                (Some(0), Some(taken)) if taken.as_i64() == Some(1) => {
                    Ok(Lookup::Locked(FillLock::new(token)))
                }
                (Some(0), Some(_)) => Ok(Lookup::Held),
                _ => Err(StoreError::new(
                    StoreErrorKind::Other,
                    "unexpected reply to the lookup-or-lock script",
                )),
            }
        })
    }

    /// One script, on one server with the binary codec and the purge log: the count
    /// checked, the entry written and its tags indexed, the lock released.
    fn put_filled<'a>(&'a self, fill: Fill<'a>) -> Option<StoreFuture<'a, Filled>> {
        self.put_filled_script(fill)
    }

    fn unlock_fill<'a>(&'a self, key: &'a str, lock: FillLock) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let _: i64 = self
                .eval(&RELEASE, self.lock_key(key), vec![lock.token().into()])
                .await?;
            Ok(())
        })
    }
}

/// Deletes a fill lock only if it is still the caller's (`ARGV[1]`, its token): it may
/// have expired and been taken by another process.
pub(super) static RELEASE: Lua = Lua::new(
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end",
);

impl Counters for RedisStore {
    /// `INCRBY`, and a `PEXPIRE` when the counter has no life yet (it was just made): one
    /// script, atomic across instances.
    fn increment<'a>(&'a self, key: &'a str, delta: i64, ttl: Duration) -> StoreFuture<'a, i64> {
        Box::pin(async move {
            static INCREMENT: Lua = Lua::new(
                "local v = redis.call('INCRBY', KEYS[1], ARGV[1]) \
                 if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end \
                 return v",
            );
            self.eval(
                &INCREMENT,
                self.redis_key(key),
                vec![delta.into(), millis(ttl).into()],
            )
            .await
        })
    }

    fn counter<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<i64>> {
        Box::pin(async move {
            let inner = &self.inner;
            let client = inner.pool.next_connected().with_options(&inner.options);
            let value: Option<String> = self.command(client.get(self.redis_key(key))).await?;
            // Anything but a whole number (an entry) is no counter.
            Ok(value.and_then(|value| value.parse().ok()))
        })
    }
}

impl Batches for RedisStore {
    /// One `MGET` per hash slot, all at once (one in all on a single server); what does
    /// not decode is `None`.
    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> StoreFuture<'a, Vec<Option<Arc<CachedResponse>>>> {
        Box::pin(async move {
            let inner = &self.inner;
            let client = inner.pool.next_connected().with_options(&inner.options);
            let redis_keys: Vec<String> = keys.iter().map(|key| self.redis_key(key)).collect();
            // Indices of the keys, grouped by slot on a cluster.
            let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
            for (i, key) in redis_keys.iter().enumerate() {
                let slot = if client.is_clustered() {
                    fred::util::redis_keyslot(key.as_bytes())
                } else {
                    0
                };
                match groups.iter_mut().find(|(group, _)| *group == slot) {
                    Some((_, indices)) => indices.push(i),
                    None => groups.push((slot, vec![i])),
                }
            }
            let reads = groups.iter().map(|(_, indices)| {
                let batch: Vec<String> = indices.iter().map(|&i| redis_keys[i].clone()).collect();
                let client = &client;
                async move {
                    let values: Vec<Option<Bytes>> = self.command(client.mget(batch)).await?;
                    Ok::<_, StoreError>(values)
                }
            });
            let batches = futures_util::future::try_join_all(reads).await?;
            let mut found = vec![None; keys.len()];
            for ((_, indices), values) in groups.iter().zip(batches) {
                for (&i, value) in indices.iter().zip(values) {
                    found[i] = value.and_then(|bytes| self.decode(&bytes).ok());
                }
            }
            Ok(found)
        })
    }

    /// Untagged entries in one pipeline of `SET … PX` per hash slot, all at once; tagged
    /// ones (whose tag sets are written with them) one by one.
    fn put_many<'a>(
        &'a self,
        entries: &'a [(String, Arc<CachedResponse>, Duration)],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            let client = inner.pool.next_connected();
            let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
            for (i, (key, entry, _)) in entries.iter().enumerate() {
                if !entry.tags.is_empty() {
                    continue;
                }
                let slot = if client.is_clustered() {
                    fred::util::redis_keyslot(self.redis_key(key).as_bytes())
                } else {
                    0
                };
                match groups.iter_mut().find(|(group, _)| *group == slot) {
                    Some((_, indices)) => indices.push(i),
                    None => groups.push((slot, vec![i])),
                }
            }
            let writes = groups.iter().map(|(_, indices)| async move {
                let pipeline = client.pipeline();
                for &i in indices {
                    let (key, entry, ttl) = &entries[i];
                    let queued: Result<(), _> = pipeline
                        .set(
                            self.redis_key(key),
                            inner.codec.encode(entry),
                            Some(Expiration::PX(millis(*ttl))),
                            None,
                            false,
                        )
                        .await;
                    // Queued in memory: only the pipeline's answer counts toward the breaker.
                    queued.map_err(store_error)?;
                }
                let _: Vec<fred::types::Value> = self.command(pipeline.all()).await?;
                Ok::<_, StoreError>(())
            });
            futures_util::future::try_join_all(writes).await?;
            for (key, entry, ttl) in entries
                .iter()
                .filter(|(_, entry, _)| !entry.tags.is_empty())
            {
                self.put(key, Arc::clone(entry), *ttl, PutIf::Always)
                    .await?;
            }
            Ok(())
        })
    }
}
