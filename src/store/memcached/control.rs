//! The namespace's control values — its generation, its purge counter and the prefix purges'
//! record, copied for `version_ttl` — and the tag records entries are checked against.

use super::*;

impl Control {
    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The values, when read within the TTL.
    pub(super) fn fresh(&self) -> Option<(u64, u64)> {
        let read = self.read_ms.load(Ordering::Acquire);
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        (read != 0 && self.now_ms().saturating_sub(read) < ttl_ms).then(|| self.last())
    }

    pub(super) fn last(&self) -> (u64, u64) {
        (
            self.generation.load(Ordering::Acquire),
            self.purges.load(Ordering::Acquire),
        )
    }

    /// Records what was read (or done). Neither goes back here: both only rise in
    /// memcached, so a lower value is a read that a later one overtook (a clear made here
    /// meanwhile).
    pub(super) fn seen(&self, generation: u64, purges: u64) {
        self.generation.fetch_max(generation, Ordering::AcqRel);
        self.purges.fetch_max(purges, Ordering::AcqRel);
        self.read_ms.store(self.now_ms(), Ordering::Release);
    }

    /// What `read` makes of the record of prefix purges as last read (or written here).
    pub(super) fn with_prefixes<T>(&self, read: impl FnOnce(&TagRecord) -> T) -> T {
        match self.prefixes.read() {
            Ok(record) => read(&record),
            Err(poisoned) => read(&poisoned.into_inner()),
        }
    }

    /// Keeps `record` as the record of prefix purges, unless the one kept is later (a read
    /// that a purge made here overtook).
    pub(super) fn seen_prefixes(&self, record: TagRecord) {
        let mut kept = match self.prefixes.write() {
            Ok(kept) => kept,
            Err(poisoned) => poisoned.into_inner(),
        };
        if record.latest() >= kept.latest() {
            *kept = record;
        }
    }
}

impl MemcachedStore {
    /// The namespace generation (the number in every key).
    pub(super) async fn generation(&self) -> Result<u64, StoreError> {
        Ok(self.control(false).await?.0)
    }

    /// The generation and the purge counter: as read within `version_ttl` (unless `fresh`),
    /// else read from memcached, both in one command — or, while their server cannot be
    /// reached, as last read (no clear or purge can be numbered meanwhile). Made when missing: the counter at
    /// the current time in microseconds, so that it keeps rising across a restart of its
    /// server and a purge number is never given twice; the generation at a purge number,
    /// so that it never goes back to one whose keys may still be on the other servers,
    /// and a new generation is seen as a purge by fetches that started before it.
    pub(super) async fn control(&self, fresh: bool) -> Result<(u64, u64), StoreError> {
        let control = &self.inner.control;
        if !fresh && let Some(values) = control.fresh() {
            return Ok(values);
        }
        let generation_key = self.control_key("generation");
        let purges_key = self.control_key("purges");
        let prefixes_key = self.control_key("prefixes");
        let read = self
            .command_on(self.control_server(), async |client: &mut Client| {
                for _ in 0..4 {
                    let keys = [&generation_key, &purges_key, &prefixes_key];
                    let found = get_multi(client, &keys.map(String::as_str)).await?;
                    let data = |key: &str| {
                        found
                            .iter()
                            .find(|value| value.key == key.as_bytes())
                            .and_then(|value| value.data.as_deref())
                    };
                    let value = |key: &str| data(key).and_then(parse_number);
                    let (generation, purges) = (value(&generation_key), value(&purges_key));
                    match (generation, purges) {
                        (Some(generation), Some(purges)) => {
                            if let Some(record) = data(&prefixes_key).and_then(TagRecord::parse) {
                                return Ok(Some((generation, purges, record)));
                            }
                            // Made when missing (or garbage), numbered at the counter: the
                            // entries stored before it count as purged, since the purges it
                            // held are lost.
                            let made = TagRecord {
                                created: purges,
                                purges: Vec::new(),
                            };
                            compare_and_swap(client, &prefixes_key, None, |current| {
                                current
                                    .and_then(TagRecord::parse)
                                    .is_none()
                                    .then(|| made.to_bytes())
                            })
                            .await?;
                        }
                        // The first instance makes them; whoever loses the race reads the
                        // winner's.
                        (generation, None) => {
                            let start = micros_now().max(generation.unwrap_or(0) + 1);
                            added(
                                client
                                    .add(
                                        purges_key.as_bytes(),
                                        start.to_string().as_str(),
                                        None,
                                        None,
                                    )
                                    .await,
                            )?;
                        }
                        (None, Some(_)) => {
                            let number = client.increment(purges_key.as_bytes(), 1).await?;
                            added(
                                client
                                    .add(
                                        generation_key.as_bytes(),
                                        number.to_string().as_str(),
                                        None,
                                        None,
                                    )
                                    .await,
                            )?;
                        }
                    }
                }
                Ok(None)
            })
            .await;
        match read {
            Ok(Some((generation, purges, prefixes))) => {
                control.seen_prefixes(prefixes);
                control.seen(generation, purges);
                Ok(control.last())
            }
            Ok(None) => Err(StoreError::new(
                StoreErrorKind::Other,
                "memcached keeps dropping this namespace's control values",
            )),
            // Their server is down: so no instance can clear or purge meanwhile, and the
            // values last read still hold (the other servers' keys go on working).
            Err(_) if control.read_ms.load(Ordering::Acquire) != 0 => Ok(control.last()),
            Err(error) => Err(error),
        }
    }

    /// A new purge number (higher than any read before it), seen here at once.
    pub(super) async fn next_purge(&self) -> Result<u64, StoreError> {
        for _ in 0..2 {
            self.control(false).await?;
            let key = self.control_key("purges");
            let next = self
                .command_on(
                    self.control_server(),
                    async |client: &mut Client| match client.increment(key.as_bytes(), 1).await {
                        Ok(next) => Ok(Some(next)),
                        Err(async_memcached::Error::Protocol(
                            async_memcached::Status::NotFound,
                        )) => Ok(None),
                        Err(error) => Err(error),
                    },
                )
                .await?;
            if let Some(next) = next {
                self.inner.control.purges.fetch_max(next, Ordering::AcqRel);
                return Ok(next);
            }
            // Evicted since it was read: made again.
            self.control(true).await?;
        }
        Err(StoreError::new(
            StoreErrorKind::Other,
            "memcached keeps dropping this namespace's purge counter",
        ))
    }

    /// The key of `tag`'s record in `generation` (a form no entry key takes).
    pub(super) fn tag_key(&self, generation: u64, tag: &str) -> String {
        let plain = format!("{}:{generation}#tag:{tag}", self.inner.namespace);
        if valid_key(&plain) {
            return plain;
        }
        let hash = crate::key::credential_hash(tag.as_bytes());
        format!("{}:{generation}#tag#{hash}", self.inner.namespace)
    }

    /// The records of `tags` (`None` for one memcached does not hold): from this
    /// instance's copies when `cached` and read within `version_ttl`, else one command per
    /// server.
    pub(super) async fn tag_records(
        &self,
        generation: u64,
        tags: &[String],
        cached: bool,
    ) -> Result<Vec<Option<Arc<TagRecord>>>, StoreError> {
        let keys: Vec<String> = tags
            .iter()
            .map(|tag| self.tag_key(generation, tag))
            .collect();
        let mut records: Vec<Option<Arc<TagRecord>>> = match (&self.inner.tags, cached) {
            (Some(copies), true) => keys.iter().map(|key| copies.get(key)).collect(),
            _ => vec![None; keys.len()],
        };
        let unknown = (0..keys.len()).filter(|&i| records[i].is_none());
        for (i, item) in self.read_items(&keys, unknown).await? {
            // A record that does not parse is as good as lost.
            let Some(record) = item.data.as_deref().and_then(TagRecord::parse) else {
                continue;
            };
            let record = Arc::new(record);
            self.keep_copy(&keys[i], &record);
            records[i] = Some(record);
        }
        Ok(records)
    }

    /// The items memcached holds under the `wanted` of `keys` (memcached keys), each with
    /// its index in `keys`: one `get` of many keys per server.
    pub(super) async fn read_items(
        &self,
        keys: &[String],
        wanted: impl Iterator<Item = usize>,
    ) -> Result<Vec<(usize, Value)>, StoreError> {
        let mut by_server: Vec<(usize, Vec<usize>)> = Vec::new();
        for i in wanted {
            let server = self.server_index(&keys[i]);
            match by_server.iter_mut().find(|(at, _)| *at == server) {
                Some((_, batch)) => batch.push(i),
                None => by_server.push((server, vec![i])),
            }
        }
        let mut read = Vec::new();
        for (server, batch) in by_server {
            let names: Vec<&str> = batch.iter().map(|&i| keys[i].as_str()).collect();
            let items = self
                .command_on(&self.inner.servers[server], async |client: &mut Client| {
                    get_multi(client, &names).await
                })
                .await?;
            for item in items {
                if let Some(&i) = batch.iter().find(|&&i| keys[i].as_bytes() == item.key) {
                    read.push((i, item));
                }
            }
        }
        Ok(read)
    }

    /// Keeps `record` as this instance's copy of the record under `key` — unless the copy
    /// it has is later (a read that a purge made here overtook).
    pub(super) fn keep_copy(&self, key: &str, record: &Arc<TagRecord>) {
        let Some(copies) = &self.inner.tags else {
            return;
        };
        copies
            .entry(key.to_owned())
            .and_upsert_with(|kept| match kept {
                Some(kept) if kept.value().latest() > record.latest() => kept.into_value(),
                _ => Arc::clone(record),
            });
    }

    /// Makes the records of `tags` that this instance has not seen, numbered `mark`, before
    /// an entry with them is stored.
    pub(super) async fn make_tag_records(
        &self,
        generation: u64,
        tags: &[String],
        mark: u64,
    ) -> Result<(), StoreError> {
        let record = TagRecord {
            created: mark,
            purges: Vec::new(),
        };
        let bytes = record.to_bytes();
        let record = Arc::new(record);
        for tag in tags {
            let key = self.tag_key(generation, tag);
            if self
                .inner
                .tags
                .as_ref()
                .is_some_and(|copies| copies.contains_key(&key))
            {
                continue;
            }
            let made = self
                .command(&key, async |client: &mut Client| {
                    added(
                        client
                            .add(key.as_bytes(), bytes.as_slice(), None, None)
                            .await,
                    )
                })
                .await?;
            if made {
                self.keep_copy(&key, &record);
            }
        }
        Ok(())
    }

    /// What the prefix purges and the purges of its tags make of the entry under `key`
    /// stored with `mark`.
    pub(super) async fn verdict(
        &self,
        generation: u64,
        key: &str,
        mark: u64,
        tags: &[String],
    ) -> Result<Verdict, StoreError> {
        let by_prefix = self
            .inner
            .control
            .with_prefixes(|record| record.verdict(key, mark));
        if tags.is_empty() {
            return Ok(by_prefix);
        }
        let records = self.tag_records(generation, tags, true).await?;
        Ok(tags::combine(std::iter::once(by_prefix).chain(
            records.iter().map(|record| {
                record
                    .as_deref()
                    .map_or(Verdict::Purged, |record| record.verdict(key, mark))
            }),
        )))
    }

    /// Records a purge of `tag` (`None`: of every entry, a prefix purge) within `within`:
    /// its number in the record, written with compare-and-swap so that concurrent purges
    /// of a record all stand.
    pub(super) async fn purge_record(
        &self,
        tag: Option<&str>,
        within: &str,
        mode: PurgeMode,
    ) -> Result<(), StoreError> {
        let generation = self.generation().await?;
        let number = self.next_purge().await?;
        let at_ms = tags::millis_now();
        let (key, server) = match tag {
            Some(tag) => {
                let key = self.tag_key(generation, tag);
                let server = self.server_for(&key);
                (key, server)
            }
            None => (self.control_key("prefixes"), self.control_server()),
        };
        let mut written = None;
        let done = self
            .command_on(server, async |client: &mut Client| {
                compare_and_swap(client, &key, None, |current| {
                    // A record lost (or garbage) is made again, numbered by this purge:
                    // every entry stored before it counts as purged.
                    let mut record = current.and_then(TagRecord::parse).unwrap_or(TagRecord {
                        created: number,
                        purges: Vec::new(),
                    });
                    record.record(within, mode, number, at_ms);
                    let bytes = record.to_bytes();
                    written = Some(record);
                    Some(bytes)
                })
                .await
            })
            .await?;
        let (true, Some(record)) = (done, written) else {
            return Err(StoreError::new(
                StoreErrorKind::Other,
                "a tag's record kept changing under the purge: not purged",
            ));
        };
        match tag {
            Some(_) => self.keep_copy(&key, &Arc::new(record)),
            None => self.inner.control.seen_prefixes(record),
        }
        Ok(())
    }
}
