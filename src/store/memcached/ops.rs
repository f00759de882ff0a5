//! The store's operations: entries written with their purge mark and read as the purges
//! leave them, conditional writes by compare-and-swap, tombstones, and the trait impls.

use super::*;

impl MemcachedStore {
    /// What a write of `entry` sends: refused when larger than the item size. The entry goes
    /// with the purge counter's value in front (its mark), after the records it is checked
    /// against are made. A tagged entry's mark is the counter as it is now; an untagged
    /// one's, as read within `version_ttl` (no round trip on most writes): a mark that
    /// lags only makes an entry look older to the purges, never younger.
    pub(super) async fn prepare(
        &self,
        key: &str,
        entry: &CachedResponse,
        ttl: Duration,
    ) -> Result<Write, StoreError> {
        let encoded: Bytes = self.inner.codec.encode(entry);
        let size = encoded.len() + MARK_LEN;
        if size > self.inner.max_item_size {
            return Err(StoreError::new(
                StoreErrorKind::TooLarge,
                "entry larger than memcached's item size: not stored",
            ));
        }
        let ttl = protocol_ttl(ttl);
        // The counter as it is now: a purge before this read is in the records already;
        // one after it has a higher number.
        let (generation, mark) = self.control(!entry.tags.is_empty()).await?;
        self.make_tag_records(generation, &entry.tags, mark).await?;
        let mut bytes = BytesMut::with_capacity(size);
        bytes.put_u64(mark);
        bytes.extend_from_slice(&encoded);
        Ok(Write {
            key: self.key_in(generation, key),
            bytes: bytes.freeze(),
            flags: MARKED,
            ttl,
        })
    }

    /// The entry an item holds, as its tags' purges leave it. The body is shared with
    /// `data`, not copied.
    pub(super) async fn entry_of(
        &self,
        generation: u64,
        key: &str,
        data: Bytes,
        flags: u32,
    ) -> Result<Option<Arc<CachedResponse>>, StoreError> {
        if flags & MARKED == 0 {
            // Without a mark (written by an earlier version of this store): whether a
            // purge took it cannot be told. What does not decode is garbage, reported so.
            self.decode(&data)?;
            return Ok(None);
        }
        let Some(mark) = data.first_chunk::<MARK_LEN>() else {
            return Err(StoreError::new(
                StoreErrorKind::Decode,
                "the value in memcached is too short for its purge mark",
            ));
        };
        let mark = u64::from_be_bytes(*mark);
        let entry = self.decode(&data.slice(MARK_LEN..))?;
        Ok(
            match self.verdict(generation, key, mark, &entry.tags).await? {
                Verdict::Kept => Some(entry),
                Verdict::Purged => None,
                Verdict::SoftPurged(at_ms) => {
                    Some(Arc::new(tags::soften(Arc::unwrap_or_clone(entry), at_ms)))
                }
            },
        )
    }

    /// Makes the entry under `key` stale now (a soft purge): compare-and-swap, keeping its
    /// remaining life and its mark, so that it never revives an entry removed meanwhile,
    /// never replaces a newer one, and never extends a life. Whether it did.
    pub(super) async fn soften_key(&self, key: &str) -> Result<bool, StoreError> {
        let generation = self.generation().await?;
        let key_in = self.key_in(generation, key);
        let now = SystemTime::now();
        self.command(&key_in, async |client: &mut Client| {
            for _ in 0..16 {
                let Some(found) = client
                    .meta_get(key_in.as_bytes(), false, None, Some(&["v", "c", "f", "t"]))
                    .await?
                else {
                    return Ok(false);
                };
                let flags = found.flags.unwrap_or(0);
                let data = found.data.unwrap_or_default();
                let (mark, encoded) = match data.split_first_chunk::<MARK_LEN>() {
                    Some((mark, rest)) if flags & MARKED != 0 => (Some(*mark), rest),
                    _ => (None, &data[..]),
                };
                let Ok(entry) = self.inner.codec.decode(encoded) else {
                    return Ok(false);
                };
                let Some(soft) = crate::store::softened(&entry, now) else {
                    return Ok(false);
                };
                let mut bytes = BytesMut::new();
                if let Some(mark) = mark {
                    bytes.extend_from_slice(&mark);
                }
                bytes.extend_from_slice(&self.inner.codec.encode(&soft));
                let cas = format!("C{}", found.cas.unwrap_or_default());
                let flags = format!("F{flags}");
                // The life it has left (`-1`: none set; 0 would be forever).
                let ttl = match found.ttl_remaining {
                    Some(-1) => 0,
                    Some(left) => left.max(1),
                    None => return Ok(false),
                };
                let ttl = format!("T{ttl}");
                match client
                    .meta_set(
                        key_in.as_bytes(),
                        &bytes[..],
                        false,
                        None,
                        Some(&[cas.as_str(), flags.as_str(), ttl.as_str()]),
                    )
                    .await
                {
                    Ok(_) => return Ok(true),
                    Err(async_memcached::Error::Protocol(async_memcached::Status::NotFound)) => {
                        return Ok(false);
                    }
                    Err(async_memcached::Error::Protocol(async_memcached::Status::Exists)) => {}
                    Err(error) => return Err(error),
                }
            }
            Ok(false)
        })
        .await
    }

    pub(super) fn decode(&self, bytes: &Bytes) -> Result<Arc<CachedResponse>, StoreError> {
        crate::store::decode_shared(&*self.inner.codec, bytes, "memcached")
    }
}

impl MemcachedStore {
    /// `set`: the entry replaces whatever the key holds.
    pub(super) async fn put_always(
        &self,
        key: &str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let write = self.prepare(key, &entry, ttl).await?;
        self.command(&write.key, async |client: &mut Client| {
            client
                .set(
                    write.key.as_bytes(),
                    write.bytes.as_ref(),
                    Some(write.ttl),
                    Some(write.flags),
                )
                .await
        })
        .await
    }

    /// `add`: atomic across instances.
    pub(super) async fn put_absent(
        &self,
        key: &str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let write = self.prepare(key, &entry, ttl).await?;
        self.command(&write.key, async |client: &mut Client| {
            added(
                client
                    .add(
                        write.key.as_bytes(),
                        write.bytes.as_ref(),
                        Some(write.ttl),
                        Some(write.flags),
                    )
                    .await,
            )
        })
        .await
    }

    /// [`PutIf::Newer`] by compare-and-swap (meta protocol): the item read with its CAS
    /// value, its `stored_at` compared, and the new entry set only with that CAS (or added,
    /// when there was none); read again while other writers come between. Atomic whichever
    /// instance writes: an older entry never replaces a newer one.
    pub(super) async fn put_newer(
        &self,
        key: &str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let write = self.prepare(key, &entry, ttl).await?;
        let flags = format!("F{}", write.flags);
        let ttl = format!("T{}", write.ttl);
        let outcome = self
            .command(&write.key, async |client: &mut Client| {
                for _ in 0..16 {
                    let current = client
                        .meta_get(write.key.as_bytes(), false, None, Some(&["v", "c", "f"]))
                        .await?;
                    let Some(current) = current else {
                        let added = added(
                            client
                                .add(
                                    write.key.as_bytes(),
                                    write.bytes.as_ref(),
                                    Some(write.ttl),
                                    Some(write.flags),
                                )
                                .await,
                        )?;
                        if added {
                            return Ok(Some(true));
                        }
                        continue;
                    };
                    let data = current.data.as_deref().unwrap_or_default();
                    if self.holds_newer(data, current.flags.unwrap_or(0), &entry) {
                        return Ok(Some(false));
                    }
                    let cas = format!("C{}", current.cas.unwrap_or_default());
                    match client
                        .meta_set(
                            write.key.as_bytes(),
                            write.bytes.as_ref(),
                            false,
                            None,
                            Some(&[cas.as_str(), flags.as_str(), ttl.as_str()]),
                        )
                        .await
                    {
                        Ok(_) => return Ok(Some(true)),
                        // Changed or removed since it was read: read again.
                        Err(async_memcached::Error::Protocol(
                            async_memcached::Status::Exists | async_memcached::Status::NotFound,
                        )) => {}
                        Err(error) => return Err(error),
                    }
                }
                Ok(None)
            })
            .await?;
        outcome.ok_or_else(|| {
            StoreError::new(
                StoreErrorKind::Other,
                "the item changed under every attempt to write it",
            )
        })
    }

    /// Whether an item (its bytes and flags) holds an entry stored after `entry`. What
    /// cannot be read holds nothing to keep.
    pub(super) fn holds_newer(&self, data: &[u8], flags: u32, entry: &CachedResponse) -> bool {
        let encoded = match data.split_first_chunk::<MARK_LEN>() {
            Some((_, rest)) if flags & MARKED != 0 => rest,
            _ => data,
        };
        // The binary codec's `stored_at` is read in place (big-endian: compared as bytes).
        if self.inner.codec.name() == BinaryCodec.name() {
            return encoded.get(BINARY_STORED_AT).is_some_and(|stored| {
                encoded.starts_with(&BINARY_PREFIX) && stored > &binary_stored_at(entry)[..]
            });
        }
        self.inner
            .codec
            .decode(encoded)
            .is_ok_and(|stored| stored.stored_at > entry.stored_at)
    }

    /// Records a purge of `keys` for [`SharedStore::purged_since`]: a new purge number,
    /// left under each key's tombstone (a key stands for its variant slots, so a slot
    /// whose URL is purged too is not recorded apart). Raised, never lowered; kept for
    /// [`TOMBSTONE_TTL`].
    pub(super) async fn record_key_purges(&self, keys: &[String]) -> Result<(), StoreError> {
        let number = self.next_purge().await?;
        let recorded = keys.iter().filter(|key| {
            let base = CacheKey::without_slot(key);
            base == key.as_str() || !keys.iter().any(|other| other == base)
        });
        let ttl = protocol_ttl(TOMBSTONE_TTL);
        for key in recorded {
            let tombstone = self.key_aside("purged", key);
            self.command(&tombstone, async |client: &mut Client| {
                compare_and_swap(client, &tombstone, Some(ttl), |current| {
                    (current.and_then(parse_number) < Some(number))
                        .then(|| number.to_string().into_bytes())
                })
                .await
            })
            .await?;
        }
        Ok(())
    }

    /// Whether `key` (or the URL whose variant slot it is) was purged after `mark`, by its
    /// tombstone.
    pub(super) async fn key_purged_since(&self, mark: u64, key: &str) -> Result<bool, StoreError> {
        let base = CacheKey::without_slot(key);
        let mut tombstones = vec![self.key_aside("purged", key)];
        if base != key {
            tombstones.push(self.key_aside("purged", base));
        }
        let read = self.read_items(&tombstones, 0..tombstones.len()).await?;
        Ok(read.iter().any(|(_, item)| {
            item.data
                .as_deref()
                .and_then(parse_number)
                .is_some_and(|number| number > mark)
        }))
    }

    /// `delete`; whether there was an item.
    pub(super) async fn remove_key(&self, key: &str) -> Result<bool, StoreError> {
        let key = self.memcached_key(key).await?;
        let removed = self
            .command(&key, async |client: &mut Client| {
                match client.delete(key.as_bytes()).await {
                    Ok(()) => Ok(true),
                    Err(async_memcached::Error::Protocol(async_memcached::Status::NotFound)) => {
                        Ok(false)
                    }
                    Err(error) => Err(error),
                }
            })
            .await?;
        Ok(removed)
    }

    /// A new namespace generation, numbered by a purge: every key of the old one is out
    /// of reach (and expires), and fetches that started before it do not write back.
    pub(super) async fn clear_generation(&self) -> Result<(), StoreError> {
        let number = self.next_purge().await?;
        let key = self.control_key("generation");
        // Raised, never lowered: of two clears at once, the later number stands.
        let raised = self
            .command_on(self.control_server(), async |client: &mut Client| {
                compare_and_swap(client, &key, None, |current| {
                    (current.and_then(parse_number) < Some(number))
                        .then(|| number.to_string().into_bytes())
                })
                .await
            })
            .await?;
        if !raised {
            return Err(StoreError::new(
                StoreErrorKind::Other,
                "the namespace generation kept changing under the clear",
            ));
        }
        self.inner.control.seen(number, number);
        Ok(())
    }
}

/// What a write sends.
pub(super) struct Write {
    /// The memcached key.
    key: String,
    bytes: Bytes,
    /// [`MARKED`] or 0.
    flags: u32,
    /// As the protocol takes it.
    ttl: i64,
}

/// The item flag of an entry stored with its purge mark in front.
pub(super) const MARKED: u32 = 1;
/// The bytes of a purge mark (big-endian `u64`).
pub(super) const MARK_LEN: usize = 8;

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
                (PurgeTarget::Keys(keys), PurgeMode::Hard) => {
                    self.record_key_purges(keys).await?;
                    let mut removed = 0;
                    for key in keys {
                        removed += u64::from(self.remove_key(key).await?);
                    }
                    Ok(removed)
                }
                (PurgeTarget::Keys(keys), PurgeMode::Soft) => {
                    self.record_key_purges(keys).await?;
                    let mut softened = 0;
                    for key in keys {
                        softened += u64::from(self.soften_key(key).await?);
                    }
                    Ok(softened)
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
            if self.key_purged_since(mark, key).await? {
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
        Box::pin(async move {
            for (key, entry, ttl) in entries {
                self.put_always(key, Arc::clone(entry), *ttl).await?;
            }
            Ok(())
        })
    }
}
