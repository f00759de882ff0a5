//! The store's operations: entries written with their purge mark and read as the purges
//! leave them, conditional writes by compare-and-swap, and tombstones.

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
            write.add(client).await
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
                        if write.add(client).await? {
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
        let generation = self.generation().await?;
        let recorded = keys.iter().filter(|key| {
            let base = CacheKey::without_slot(key);
            base == key.as_str() || !keys.iter().any(|other| other == base)
        });
        let ttl = protocol_ttl(TOMBSTONE_TTL);
        for key in recorded {
            let tombstone = self.key_aside("purged", key);
            let server = self.tombstone_server(generation, key);
            self.command_on(server, async |client: &mut Client| {
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

    /// The server of `key`'s tombstone: its entry's, so that the keys of a server that is
    /// up keep being stored and checked while another is down.
    fn tombstone_server(&self, generation: u64, key: &str) -> &Server {
        self.server_for(&self.key_in(generation, key))
    }

    /// Whether `key` (or the URL whose variant slot it is) was purged after `mark`, by its
    /// tombstone.
    pub(super) async fn key_purged_since(
        &self,
        generation: u64,
        mark: u64,
        key: &str,
    ) -> Result<bool, StoreError> {
        let base = CacheKey::without_slot(key);
        let mut keys = vec![key];
        if base != key {
            keys.push(base);
        }
        for key in keys {
            let tombstone = self.key_aside("purged", key);
            let server = self.tombstone_server(generation, key);
            let found = self
                .command_on(server, async |client: &mut Client| {
                    client.get(tombstone.as_bytes()).await
                })
                .await?;
            let number = found
                .and_then(|item| item.data)
                .and_then(|data| parse_number(&data));
            if number.is_some_and(|number| number > mark) {
                return Ok(true);
            }
        }
        Ok(false)
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

impl Write {
    /// `add`: stored only where memcached holds nothing under the key; whether it did.
    async fn add(&self, client: &mut Client) -> Result<bool, async_memcached::Error> {
        let added = client
            .add(
                self.key.as_bytes(),
                self.bytes.as_ref(),
                Some(self.ttl),
                Some(self.flags),
            )
            .await;
        super::added(added)
    }
}

/// The item flag of an entry stored with its purge mark in front.
pub(super) const MARKED: u32 = 1;
/// The bytes of a purge mark (big-endian `u64`).
pub(super) const MARK_LEN: usize = 8;
