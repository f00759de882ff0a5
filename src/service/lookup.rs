//! The lookup: the entry of the request's variant, in place or from the store, whether it
//! may answer the request, and coalescing with a fetch of the key already under way.

use super::decide::{Decision, Directives, decide};
use super::*;

impl Ctx {
    /// The lookup phase of a request that has a key: what its stored entry (of its
    /// variant) means for it — answered now, or fetched, and how — with what the read
    /// brought for the next phase (the tier, the fill lock).
    pub(super) async fn find(
        &self,
        mode: RequestMode,
        key: &CacheKey,
        headers: &HeaderMap,
        missed: bool,
        now: SystemTime,
    ) -> Found {
        match mode {
            RequestMode::Lookup {
                max_age,
                only_if_cached,
            } => {
                // A lookup that leads to a fetch when it finds nothing takes the shared
                // store's fill lock along.
                let lock = !only_if_cached && self.locks_with_lookup();
                let read = if missed {
                    Read::default()
                } else {
                    self.stored_variant(key, headers, lock).await
                };
                let usable = read
                    .entry
                    .as_ref()
                    .is_some_and(|entry| self.usable(entry, headers, now, None));
                let directives = Directives {
                    max_age,
                    only_if_cached,
                };
                let tier = read.tier(self.config.capabilities.tiered);
                Found {
                    decision: decide(read.entry, usable, directives, now),
                    slot: read.slot,
                    tier,
                    lock: read.lock,
                }
            }
            // A request's `no-cache` (or `max-age=0`) asks for the stored response to be
            // validated with the origin before use (RFC 9111 §5.2.1.4): a conditional
            // request when the entry has a validator; it may not stand in for a failure.
            // The bypass header and a warming refresh force a full fetch: their lookup only
            // finds the variant's slot.
            RequestMode::Refresh(reason) => {
                let read = self.stored_variant(key, headers, false).await;
                let entry = read.entry.filter(|_| {
                    !matches!(reason, RefreshReason::BypassHeader | RefreshReason::Warm)
                });
                Found {
                    decision: Decision::Fetch {
                        refresh: Some(reason),
                        entry,
                        stands_in: false,
                    },
                    slot: read.slot,
                    tier: None,
                    lock: None,
                }
            }
            RequestMode::Bypass(_) => Found {
                decision: Decision::Fetch {
                    refresh: None,
                    entry: None,
                    stands_in: false,
                },
                slot: None,
                tier: None,
                lock: None,
            },
        }
    }

    /// Joins the flight of `target` for a GET: `Err` with the response when another
    /// request's fetch answered it, else the lead of this request's fetch, if it leads one.
    /// The request is marked with the flight it leads, so that a cache layer inside this
    /// one (the same layer mounted twice, or a route's own layer under the router's) does
    /// not wait for it — that would be waiting for itself.
    pub(super) async fn join_flight<B: Body>(
        &self,
        parts: &mut Parts,
        (key, target): (&CacheKey, &CacheKey),
        accept: Accept,
        ended: u64,
        lock: Option<PreLock>,
    ) -> Result<Option<Lead>, Response<CacheBody<B>>> {
        let flight_id = FlightOf(xxhash_rust::xxh3::xxh3_64(target.as_str().as_bytes()));
        let enclosed = parts.extensions.get::<FlightOf>() == Some(&flight_id);
        // Without a fetch to lead (no coalescing, not a GET, or enclosed by its own
        // flight), the lookup's lock is let go as it drops.
        let Some(coalescer) = self.config.coalescer() else {
            return Ok(None);
        };
        if parts.method != Method::GET || enclosed {
            return Ok(None);
        }
        let joined = self.clock().map(|_| tokio::time::Instant::now());
        match self
            .coalesce(
                coalescer,
                (key, target),
                &parts.headers,
                (accept, ended),
                lock,
            )
            .await
        {
            Coalesced::Served { entry, waited } => {
                if let (Some(clock), Some(joined)) = (self.clock(), joined) {
                    clock.set_waited(joined.elapsed());
                }
                let now = self.config.now();
                let response = self.response_from(&entry, &parts.headers, false, now);
                // Answered from an entry the fetch had delivered already: a hit. Waiting
                // for a fetch under way: coalesced.
                let outcome = if waited {
                    Outcome::Coalesced
                } else {
                    // Delivered by the flight, not read from a tier.
                    Outcome::Hit {
                        ttl: entry.remaining_ttl(now),
                        tier: None,
                    }
                };
                Err(self.finish(response, outcome))
            }
            Coalesced::Lead(lead) => {
                parts.extensions.insert(flight_id);
                Ok(Some(lead))
            }
            Coalesced::Alone => Ok(None),
        }
    }

    /// A hit answered without a future, on a store that answers in place (`get_now`): no
    /// allocation for the lookup, no boxed future for the request.
    pub(super) fn in_place<B: Body>(
        &self,
        mode: RequestMode,
        key: Option<&CacheKey>,
        parts: &Parts,
    ) -> InPlace<B> {
        let (
            RequestMode::Lookup {
                max_age,
                only_if_cached,
            },
            Some(key),
        ) = (mode, key)
        else {
            return InPlace::Unknown;
        };
        let entry = match self.config.store.get_now(key.as_str()) {
            Some(Ok(Some(entry))) => self.newest(key, entry),
            Some(Ok(None)) => return InPlace::Miss,
            Some(Err(_)) | None => return InPlace::Unknown,
        };
        let now = self.config.now();
        // Sliding routes touch the entry on a hit: the async path does that; so does
        // every decision but a hit.
        if self.sliding() || !self.cookie_allows(&entry) {
            return InPlace::Unknown;
        }
        let usable = self.usable(&entry, &parts.headers, now, None);
        let directives = Directives {
            max_age,
            only_if_cached,
        };
        let Decision::Hit(entry) = decide(Some(entry), usable, directives, now) else {
            return InPlace::Unknown;
        };
        let head = parts.method == Method::HEAD;
        let response = self.response_from(&entry, &parts.headers, head, now);
        let ttl = entry.remaining_ttl(now);
        if let Some(clock) = self.clock() {
            clock.lookup_done();
        }
        let tier = self.config.capabilities.tiered.then_some(Tier::L1);
        InPlace::Hit(self.finish(response, Outcome::Hit { ttl, tier }))
    }

    /// A usable entry for the request: present, fresh (or on a sliding route, not expired),
    /// and of the variant the request selects.
    pub(super) async fn lookup(
        &self,
        key: &CacheKey,
        request_headers: &HeaderMap,
        now: SystemTime,
    ) -> Option<Arc<CachedResponse>> {
        let entry = self
            .stored_variant(key, request_headers, false)
            .await
            .entry?;
        self.usable(&entry, request_headers, now, None)
            .then_some(entry)
    }

    /// The stored entry of the request's variant (RFC 9111 §4.1), whatever its freshness,
    /// and the slot that variant is (or is to be) stored in when it is not `key` itself.
    ///
    /// The first variant of a URL is stored under its key; a request that the entry there
    /// does not match looks in one of `max_variants - 1` slots, chosen by a hash of its
    /// values of the headers that entry varies on.
    /// With `lock`, a miss under `key` takes its fill lock in the same round trip
    /// ([`stored_or_lock`](Self::stored_or_lock)).
    pub(super) async fn stored_variant(
        &self,
        key: &CacheKey,
        request_headers: &HeaderMap,
        lock: bool,
    ) -> Read {
        let mut read = if lock {
            self.stored_or_lock(key).await
        } else {
            self.stored(key).await
        };
        let Some(entry) = read.entry.take() else {
            return read;
        };
        if variant_matches(&entry, request_headers) {
            read.entry = Some(entry).filter(|entry| self.cookie_allows(entry));
            return read;
        }
        let slots = self.config.max_variants as u64 - 1;
        if slots == 0 {
            return read;
        }
        let slot = key.variant(variant_hash(&entry.vary, request_headers) % slots);
        let found = self.stored(&slot).await;
        Read {
            entry: found.entry.filter(|entry| {
                variant_matches(entry, request_headers) && self.cookie_allows(entry)
            }),
            slot: Some(slot),
            from_l2: read.from_l2 || found.from_l2,
            lock: read.lock,
        }
    }

    /// Whether this request may take `entry` at all (fresh, stale or to revalidate): a
    /// request with cookies only one the origin marked shared.
    pub(super) fn cookie_allows(&self, entry: &CachedResponse) -> bool {
        !self.cookie || explicitly_shared(&self.config.response_directives(&entry.headers))
    }

    /// The entry under `key`, whatever its freshness, and whether the shared tier answered;
    /// a store error counts and is a miss.
    pub(super) async fn stored(&self, key: &CacheKey) -> Read {
        let store = &self.config.store;
        let (found, from_l2) = match store.get_now(key.as_str()) {
            Some(found) => (found, false),
            None => {
                let found = store.get(key.as_str()).await;
                let from_l2 = self.config.capabilities.tiered && matches!(found, Ok(Some(_)));
                (found, from_l2)
            }
        };
        match found {
            Ok(entry) => Read {
                entry: entry.map(|entry| self.newest(key, entry)),
                from_l2,
                ..Read::default()
            },
            Err(error) => {
                self.store_failed(StoreOperation::Read, key.as_str(), &error);
                Read::default()
            }
        }
    }

    /// Whether this request's lookup takes the shared store's fill lock along: a GET whose
    /// miss leads a coalesced fetch, on a store that coordinates fills.
    fn locks_with_lookup(&self) -> bool {
        *self.method == Method::GET
            && self.config.coalescer().is_some()
            && self.config.fill_locks().is_some()
    }

    /// [`stored`](Self::stored), taking the fill lock of `key` in the same round trip when
    /// nothing is there (or noting that another process holds it): the fetch this request
    /// may lead then goes to the origin without another round trip.
    pub(super) async fn stored_or_lock(&self, key: &CacheKey) -> Read {
        let store = &self.config.store;
        let Some(shared) = self.config.fill_locks() else {
            return self.stored(key).await;
        };
        match shared
            .get_or_lock_fill(key.as_str(), self.config.coalesce_timeout())
            .await
        {
            Ok(Lookup::Found(entry)) => Read {
                entry: Some(self.newest(key, entry)),
                from_l2: self.config.capabilities.tiered,
                ..Read::default()
            },
            Ok(Lookup::Locked(lock)) => Read {
                lock: Some(PreLock::Taken(FillLease::new(
                    Arc::clone(store),
                    key.as_str(),
                    lock,
                ))),
                ..Read::default()
            },
            Ok(Lookup::Held) => Read {
                lock: Some(PreLock::Held),
                ..Read::default()
            },
            Err(error) => {
                self.store_failed(StoreOperation::Read, key.as_str(), &error);
                Read::default()
            }
        }
    }

    /// `entry` as the store returned it — or the newer entry a fetch of `key` has just
    /// delivered and is writing: once a newer response was delivered, no request is
    /// answered with an older one.
    pub(super) fn newest(&self, key: &CacheKey, entry: Arc<CachedResponse>) -> Arc<CachedResponse> {
        self.config
            .coalescer()
            .and_then(|coalescer| coalescer.newer_landed(key.as_str(), &entry))
            .unwrap_or(entry)
    }

    /// Whether `entry` may answer the request: fresh (on a sliding route, present is
    /// enough: the store's expiry, moved on every hit, is the only clock), of the request's
    /// variant, and no older than the request's `max-age`.
    pub(super) fn usable(
        &self,
        entry: &CachedResponse,
        request_headers: &HeaderMap,
        now: SystemTime,
        max_age: Option<u64>,
    ) -> bool {
        (self.sliding() || entry.is_fresh(now))
            && within_max_age(entry, max_age, now)
            && variant_matches(entry, request_headers)
    }

    /// Joins the flight for `key`: served by another request's fetch, leading a fetch, or
    /// fetching alone. A flight that ends with nothing to share is joined again (its waiters
    /// elect a new leader), until the coalescing timeout.
    pub(super) async fn coalesce(
        &self,
        coalescer: &Arc<Coalescer>,
        (key, target): (&CacheKey, &CacheKey),
        headers: &HeaderMap,
        (accept, ended): (Accept, u64),
        lock: Option<PreLock>,
    ) -> Coalesced {
        // The lookup's lock, for the fetch of `target` (a lock of another key is let go).
        let mut lock = lock.filter(|lock| match lock {
            PreLock::Taken(lease) => lease.key() == target.as_str(),
            PreLock::Held => true,
        });
        let deadline = tokio::time::Instant::now() + self.config.coalesce_timeout();
        let joined = self.config.now();
        let mut rejoined = false;
        let mut rejected: Option<Arc<CachedResponse>> = None;
        loop {
            let join = match &rejected {
                Some(entry) => coalescer.join_past(target.as_str(), entry),
                None => coalescer.join(target.as_str()),
            };
            let rx = match join {
                // After a flight ended — one this request waited for, or one that ended
                // between its lookup and now — the entry may be there: look again before
                // fetching once more.
                Join::Leader(guard) if rejoined || coalescer.ended(key.as_str()) != ended => {
                    return match self.lookup_accepting(key, headers, accept).await {
                        Some(entry) => {
                            drop(lock);
                            drop(guard.ready(Arc::clone(&entry)));
                            // Found in the store without waiting: a hit.
                            Coalesced::Served {
                                entry,
                                waited: rejoined,
                            }
                        }
                        None => self.lead(guard, (key, target), headers, accept, lock).await,
                    };
                }
                Join::Leader(guard) => {
                    return self.lead(guard, (key, target), headers, accept, lock).await;
                }
                Join::Alone => return Coalesced::Alone,
                Join::Waiter(rx) => {
                    // The lock this request's lookup took goes to the flight's leader.
                    if let Some(PreLock::Taken(lease)) = lock.take() {
                        drop(coalescer.hand_off(target.as_str(), lease));
                    }
                    rx
                }
            };
            // A flight that has landed is answered at once, from its complete entry.
            let landed = matches!(*rx.borrow(), Landing::Ready(_));
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match coalesce::wait(rx, left).await {
                Some(Landing::Ready(entry))
                    if variant_matches(&entry, headers)
                        && accept.shared(&entry, joined, self.config.now())
                        && self.cookie_allows(&entry) =>
                {
                    return Coalesced::Served {
                        entry,
                        waited: !landed || rejoined,
                    };
                }
                // Another variant, or not one this request may take (a refresh that came
                // after it was fetched): the next flight, which this request may lead.
                Some(Landing::Ready(entry)) => {
                    rejected = Some(entry);
                    rejoined = true;
                }
                // The leader was cancelled: elect a new one among the waiters.
                Some(Landing::Fallback { retry: true } | Landing::Pending) => rejoined = true,
                // Nothing to share (not storable, or the fetch failed): each fetches alone.
                Some(Landing::Fallback { retry: false }) => return Coalesced::Alone,
                None => {
                    self.record(EventKind::CoalesceTimeout);
                    return Coalesced::Alone;
                }
            }
        }
    }

    /// This process fetches `key` — unless the store is shared and another process is
    /// fetching it already: then wait for its entry to appear, for at most half the
    /// coalescing timeout (this request's own waiters must not time out meanwhile).
    pub(super) async fn lead(
        &self,
        guard: FlightGuard,
        (key, target): (&CacheKey, &CacheKey),
        headers: &HeaderMap,
        accept: Accept,
        // The lookup's own attempt at the lock, if it made one: not made again.
        prelock: Option<PreLock>,
    ) -> Coalesced {
        let Some(shared) = self.config.fill_locks() else {
            return Coalesced::Lead(Lead::new(guard, None));
        };
        let mut wait = ResponseLock {
            ctx: self,
            shared,
            keys: (key, target),
            headers,
            accept,
            prelock,
        };
        let timeout = self.config.coalesce_timeout() / 2;
        match coalesce::take_fill_lock(&mut wait, &guard, timeout).await {
            Locked::Taken(lease) => Coalesced::Lead(Lead::new(guard, Some(lease))),
            Locked::Found(entry) => {
                drop(guard.ready(Arc::clone(&entry)));
                Coalesced::Served {
                    entry,
                    waited: true,
                }
            }
            Locked::Without => Coalesced::Lead(Lead::new(guard, None)),
            Locked::TimedOut => {
                self.record(EventKind::CoalesceTimeout);
                Coalesced::Lead(Lead::new(guard, None))
            }
        }
    }

    /// An entry that answers the request: [`lookup`](Self::lookup), no older than the
    /// request allows and, for a refresh, stored after the request arrived.
    pub(super) async fn lookup_accepting(
        &self,
        key: &CacheKey,
        headers: &HeaderMap,
        accept: Accept,
    ) -> Option<Arc<CachedResponse>> {
        let now = self.config.now();
        let entry = self.lookup(key, headers, now).await?;
        accept.admits(&entry, now).then_some(entry)
    }
}

/// A request's wait for the shared store's fill lock ([`coalesce::take_fill_lock`]).
struct ResponseLock<'a> {
    ctx: &'a Ctx,
    shared: &'a dyn SharedStore,
    keys: (&'a CacheKey, &'a CacheKey),
    headers: &'a HeaderMap,
    accept: Accept,
    prelock: Option<PreLock>,
}

impl LockWait for ResponseLock<'_> {
    type Found = Arc<CachedResponse>;

    async fn attempt(&mut self) -> Result<Option<FillLease>, ()> {
        let ctx = self.ctx;
        let target = self.keys.1;
        match self.prelock.take() {
            Some(PreLock::Taken(lease)) => return Ok(Some(lease)),
            Some(PreLock::Held) => return Ok(None),
            None => {}
        }
        match self
            .shared
            .lock_fill(target.as_str(), ctx.config.coalesce_timeout())
            .await
        {
            Ok(lock) => Ok(lock
                .map(|lock| FillLease::new(Arc::clone(&ctx.config.store), target.as_str(), lock))),
            // Without the lock service, coalescing stays within this process.
            Err(error) => {
                ctx.store_failed(StoreOperation::Lock, target.as_str(), &error);
                Err(())
            }
        }
    }

    async fn reread(&mut self) -> Option<Arc<CachedResponse>> {
        self.ctx
            .lookup_accepting(self.keys.0, self.headers, self.accept)
            .await
    }
}
