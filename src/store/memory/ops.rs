//! The store's operations, each completing in its first poll (moka does no I/O): the
//! core, and counters.

use super::*;

// moka's operations do not wait on I/O: every method completes in its first poll, and a
// lookup is answered by `get_now` without a future at all.
impl Store for MemoryStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            reads_in_place: true,
            writes_in_place: true,
            touch: true,
            prefix_purges: true,
            filtered_prefix_purges: true,
            tag_purges: true,
            soft_purges: true,
            counts_purges: true,
            ..Capabilities::new("memory")
        }
    }

    /// Entries and bytes (approximate until moka's housekeeping has run: within about a
    /// second), and the capacity.
    fn gauges(&self) -> StoreGauges {
        StoreGauges {
            entries: Some(self.cache.entry_count()),
            bytes: Some(self.cache.weighted_size()),
            capacity: self.cache.policy().max_capacity(),
            open_breakers: None,
            l1_flushes: None,
        }
    }

    fn listen(&self, listener: StoreListener) -> bool {
        match listener {
            StoreListener::Removals(listener) => {
                self.removals.listen(listener);
                true
            }
            _ => false,
        }
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<CachedResponse>>> {
        Box::pin(std::future::ready(Ok(self.lookup(key))))
    }

    fn get_now(&self, key: &str) -> Option<Result<Option<Arc<CachedResponse>>, StoreError>> {
        Some(Ok(self.lookup(key)))
    }

    /// Atomic with respect to other writers of the key (moka's entry API); an expired
    /// entry is absent.
    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
        condition: PutIf,
    ) -> StoreFuture<'a, bool> {
        let stored = match condition {
            PutIf::Always => {
                self.put_now(key, entry, ttl);
                true
            }
            PutIf::Newer => self.put_unless(key, entry, ttl, |existing, entry| {
                existing.stored_at > entry.stored_at
            }),
            PutIf::Absent => {
                let now = self.now();
                self.put_unless(key, entry, ttl, |existing, _| existing.is_fresh(now))
            }
        };
        Box::pin(std::future::ready(Ok(stored)))
    }

    fn touch<'a>(
        &'a self,
        key: &'a str,
        tags: &'a [String],
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        let _ = tags;
        // Atomic with respect to other writers of the key: a removed entry is not revived.
        let result = self
            .cache
            .entry_by_ref(key)
            .and_compute_with(|existing| match existing {
                Some(existing) if self.live(existing.value()) => {
                    let entry = Arc::clone(&existing.into_value().entry);
                    Op::Put(self.slot(key, entry, self.deadline(ttl)))
                }
                _ => Op::Nop,
            });
        let touched = matches!(result, CompResult::ReplacedWith(_));
        Box::pin(std::future::ready(Ok(touched)))
    }

    fn purge<'a>(&'a self, target: PurgeTarget<'a>, mode: PurgeMode) -> StoreFuture<'a, u64> {
        let purged = match target {
            PurgeTarget::Keys(keys) => {
                Ok(self.purge_keys(keys.iter().map(String::as_str), mode, |_| true))
            }
            PurgeTarget::Prefix { prefix, filter } => {
                let keys = self.keys_matching(prefix, filter);
                Ok(self.purge_keys(keys.iter().map(|key| key.as_str()), mode, |_| true))
            }
            // Whatever slot the key holds when it is reached: removed (or softened) if it
            // has the tag, so that a copy written meanwhile (a soft purge's) is not missed.
            PurgeTarget::Tag { tag, within } => {
                let keys = self.tags.members(tag, within);
                Ok(
                    self.purge_keys(keys.iter().map(String::as_str), mode, |entry| {
                        entry.tags.iter().any(|has| has == tag)
                    }),
                )
            }
            PurgeTarget::All if mode == PurgeMode::Hard => {
                let count = self.cache.entry_count();
                self.cache.invalidate_all();
                Ok(count)
            }
            PurgeTarget::All => Err(StoreError::unsupported("soft purges of everything")),
        };
        Box::pin(std::future::ready(purged))
    }

    fn counters(&self) -> Option<&dyn Counters> {
        Some(self)
    }
}

impl Counters for MemoryStore {
    fn increment<'a>(&'a self, key: &'a str, delta: i64, ttl: Duration) -> StoreFuture<'a, i64> {
        // Atomic with respect to other writers of the key going through the entry API. The
        // counter keeps the life it was created with.
        let mut updated = Ok(0);
        self.cache.entry_by_ref(key).and_compute_with(|existing| {
            let live = existing.filter(|existing| self.live(existing.value()));
            let (current, expires_at) = match &live {
                Some(existing) => match counter_value(&existing.value().entry) {
                    Some(current) => (current, existing.value().expires_at),
                    None => {
                        updated = Err(StoreError::new(
                            StoreErrorKind::Other,
                            "the key holds an entry, not a counter",
                        ));
                        return Op::Nop;
                    }
                },
                None => (0, self.deadline(ttl)),
            };
            let Some(next) = current.checked_add(delta) else {
                updated = Err(StoreError::new(
                    StoreErrorKind::Other,
                    "the counter would overflow",
                ));
                return Op::Nop;
            };
            updated = Ok(next);
            Op::Put(self.slot(key, Arc::new(counter_entry(next)), expires_at))
        });
        Box::pin(std::future::ready(updated))
    }

    fn counter<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<i64>> {
        let value = self
            .live_slot(key)
            .and_then(|slot| counter_value(&slot.entry));
        Box::pin(std::future::ready(Ok(value)))
    }
}

/// The entry that holds a counter in memory: marked, its value in decimal.
pub(super) fn counter_entry(value: i64) -> CachedResponse {
    let mut headers = http::HeaderMap::with_capacity(1);
    headers.insert(COUNTER, http::HeaderValue::from_static("1"));
    CachedResponse::new(
        http::StatusCode::OK,
        headers,
        bytes::Bytes::from(value.to_string()),
    )
}

/// The value of a counter's entry; `None` for any other entry.
pub(super) fn counter_value(entry: &CachedResponse) -> Option<i64> {
    entry.headers.contains_key(COUNTER).then_some(())?;
    std::str::from_utf8(&entry.body).ok()?.parse().ok()
}

/// Marks a memory entry as a counter.
pub(super) const COUNTER: http::HeaderName = http::HeaderName::from_static("trc-counter");
