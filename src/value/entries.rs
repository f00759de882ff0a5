//! How values are kept: their entries (bytes, format, tags), reads and writes bounded by
//! the store timeout, and the events and counts of each.

use super::*;

impl<S: Serializer> ValueCache<S> {
    pub(super) fn format(&self) -> &'static str {
        self.serializer.format()
    }

    /// A value's entry: its bytes, its format, `ttl` and its tags.
    pub(super) fn entry<I>(
        &self,
        bytes: impl Into<Bytes>,
        format: &'static str,
        ttl: Duration,
        tags: I,
    ) -> CachedResponse
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut headers = HeaderMap::with_capacity(2);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(format));
        headers.insert(MARK, HeaderValue::from_static("ok"));
        let mut entry = CachedResponse::new(StatusCode::OK, headers, bytes.into());
        entry.stored_at = self.now();
        entry.ttl = ttl;
        entry.tags = tags
            .into_iter()
            .map(|tag| tag.as_ref().trim_ascii().to_owned())
            .filter(|tag| !tag.is_empty())
            .collect();
        entry
    }

    /// The entry under a store key, when fresh; a store error is counted and reported.
    pub(super) async fn read(&self, key: &str) -> Result<Option<Arc<CachedResponse>>, ValueError> {
        let entry = self
            .get_entry(key)
            .await
            .inspect_err(|error| self.on_store_error(StoreOperation::Read, error))?;
        Ok(entry.filter(|entry| entry.is_fresh(self.now())))
    }

    /// The store's entry under `key`; what the store cannot read as an entry (a counter, a
    /// foreign value) is none, counted as a mismatch.
    pub(super) async fn get_entry(
        &self,
        key: &str,
    ) -> Result<Option<Arc<CachedResponse>>, StoreError> {
        match self.inner.store.get(key).await {
            Err(error) if error.kind() == StoreErrorKind::Decode => {
                bump(&self.inner.counters.mismatches);
                Ok(None)
            }
            result => result,
        }
    }

    pub(super) async fn write(
        &self,
        key: &str,
        entry: CachedResponse,
        ttl: Duration,
    ) -> Result<(), ValueError> {
        if ttl.is_zero() {
            return Ok(());
        }
        let entry = Arc::new(entry);
        self.inner
            .store
            .put(key, Arc::clone(&entry), ttl, PutIf::Always)
            .await
            .inspect_err(|error| self.on_store_error(StoreOperation::Write, error))?;
        self.on_stored(&entry);
        Ok(())
    }

    /// The value an entry holds, counted as a hit or a miss (a mismatch when it does not
    /// decode as `T`, or is no value of this cache's format).
    pub(super) fn value_of<T: DeserializeOwned>(
        &self,
        entry: Option<&CachedResponse>,
    ) -> Option<T> {
        match self.decoded(entry) {
            Decoded::Value(value) => {
                self.on_hit(entry);
                Some(value)
            }
            Decoded::Absent => {
                self.on_miss();
                None
            }
            Decoded::Mismatch => {
                bump(&self.inner.counters.mismatches);
                self.on_miss();
                None
            }
        }
    }

    /// What an entry holds for a `T`, uncounted.
    pub(super) fn decoded<T: DeserializeOwned>(
        &self,
        entry: Option<&CachedResponse>,
    ) -> Decoded<T> {
        let Some(entry) = entry else {
            return Decoded::Absent;
        };
        if is_error(entry) {
            // A loader's error, cached: no value, and no mismatch either.
            return Decoded::Absent;
        }
        if !is_value(entry) || format_of(entry) != Some(self.format()) {
            return Decoded::Mismatch;
        }
        match self.serializer.decode::<T>(&entry.body) {
            Ok(value) => Decoded::Value(value),
            Err(_) => Decoded::Mismatch,
        }
    }

    /// A store call bounded by the store timeout: `None` when it failed or took too long
    /// (counted), so that the caller goes on without the store.
    pub(super) async fn bounded<R>(
        &self,
        operation: StoreOperation,
        call: impl Future<Output = Result<R, StoreError>>,
    ) -> Option<R> {
        match tokio::time::timeout(self.inner.store_timeout, call).await {
            Ok(Ok(result)) => Some(result),
            Ok(Err(error)) => {
                self.on_store_error(operation, &error);
                tracing::debug!(%error, "value cache: store call failed; going on without it");
                None
            }
            Err(_) => {
                let error = StoreError::new(StoreErrorKind::Timeout, "past the store timeout");
                self.on_store_error(operation, &error);
                tracing::debug!("value cache: store call timed out; going on without it");
                None
            }
        }
    }
}

impl<S: Serializer> ValueCache<S> {
    /// Stores a loaded value (or error), bounded by the store timeout; a failure is
    /// counted, never reported.
    pub(super) async fn store_loaded(&self, key: &str, entry: Arc<CachedResponse>, ttl: Duration) {
        let written = self
            .bounded(
                StoreOperation::Write,
                self.inner
                    .store
                    .put(key, Arc::clone(&entry), ttl, PutIf::Always),
            )
            .await;
        if written.is_some() {
            self.on_stored(&entry);
        }
    }
}

/// Counting and telling observers, one method per event.
impl<S> ValueCache<S> {
    /// The time now, by the cache's clock.
    pub(crate) fn now(&self) -> SystemTime {
        match &self.inner.clock {
            None => SystemTime::now(),
            Some(clock) => clock.now(),
        }
    }

    pub(super) fn emit(&self, kind: EventKind) {
        if let Some(observers) = &self.inner.observers {
            observers.emit(&CacheEvent {
                kind,
                route: Some(&self.inner.prefix),
                method: None,
                timings: Timings::default(),
            });
        }
    }

    /// A lookup answered by a stored value.
    pub(super) fn on_hit(&self, entry: Option<&CachedResponse>) {
        bump(&self.inner.counters.hits);
        if self.inner.observers.is_some() {
            let ttl = entry.map_or(Duration::ZERO, |entry| entry.remaining_ttl(self.now()));
            self.emit(EventKind::Hit { ttl, tier: None });
        }
    }

    /// A lookup that found nothing usable, or a load that did not look.
    pub(super) fn on_miss(&self) {
        bump(&self.inner.counters.misses);
        self.emit(EventKind::Miss);
    }

    /// A caller answered by another caller's load.
    pub(super) fn on_coalesced(&self, waited: Duration) {
        bump(&self.inner.counters.coalesced);
        bump(&self.inner.counters.hits);
        self.emit(EventKind::Coalesced { waited });
    }

    pub(super) fn on_stored(&self, entry: &CachedResponse) {
        bump(&self.inner.counters.sets);
        self.emit(EventKind::Stored {
            bytes: entry.body.len(),
            ttl: entry.ttl,
            tags: entry.tags.len(),
        });
    }

    pub(super) fn on_store_error(&self, operation: StoreOperation, error: &StoreError) {
        bump(&self.inner.counters.store_errors);
        self.emit(EventKind::StoreError {
            operation,
            kind: error.kind(),
        });
    }
}
