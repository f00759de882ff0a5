//! Purges on Redis: the tag index, and purges of keys, prefixes and tags, hard or soft, in
//! bounded batches of cluster-safe commands.
//!
//! - **The tag index** is one sorted set per tag, `<namespace>:#tag:<tag>`, whose members
//!   are the Redis keys of the entries with that tag, scored by when they expire (server
//!   time; never below an entry's expiry, and changed by every write). A write of a tagged
//!   entry adds it with one single-key script per tag, sent alongside the entry's `SET` (no
//!   added round trip); a sliding hit re-scores it. The script first drops the members that
//!   have expired and keeps the set alive as long as its longest-lived member, so the index
//!   is cleaned as entries expire and stays bounded under churn. An untagged entry costs the
//!   index nothing, and no lookup ever reads it.
//! - **A tag purge** walks its set with `ZSCAN` (a page at a time, so a tag with 100 000
//!   entries never blocks Redis), `UNLINK`s each page's keys (grouped by hash slot on a
//!   cluster), then removes from the set the members whose score is still the one it read
//!   (a key written again meanwhile stays indexed). A key whose entry was replaced since by
//!   one without the tag is purged all the same (until the index forgets it at the old
//!   entry's expiry): a tag purge may take an entry too many, never one too few.
//! - **A prefix purge** `SCAN`s each primary with an escaped, anchored pattern; a filter
//!   then decides on each key by parsing it.
//! - **The purge log** makes purges complete across processes. Every purge is first
//!   recorded — a counter (`INCR`) and a sorted set of the last records by count — under
//!   one hash tag, then carried out. A process notes the latest count it has seen when a
//!   fetch starts (no command: it learns counts from its own purges and checks), reads the
//!   records since before it writes the fetched entry (and does not write if one covers
//!   it), and again after (removing the entry if one does): either the purge finds the
//!   entry, or the check finds the purge. A purge by a filtered prefix is recorded as its
//!   plain prefix (a check then refuses any write under it); records the log no longer
//!   holds, more than a check reads (256), or a count that went back (a flushed log) count
//!   as covering.
//! - **A soft purge** rewrites each entry stale (its freshness cut to its age) with a
//!   one-key compare-and-set that keeps the key's TTL (`SET … KEEPTTL`): an entry removed
//!   or replaced in between is left alone, so a hard purge stays hard and a newer entry is
//!   never replaced by an older one.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fred::error::Error as FredError;
use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::scan::Scanner;
use fred::types::{Key, Value};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use std::sync::atomic::Ordering;

use super::{Lua, RedisStore, by_slot, escape_glob, index_tag_lua, millis, store_error};
use crate::key::CacheKey;
use crate::store::purge::{KeyFilter, PurgeMode, PurgeTarget, softened};
use crate::store::{StoreError, StoreErrorKind};

/// Adds a key to a tag's set: drops the members that have expired, and scores the key by
/// its expiry (server time, in milliseconds) — or, when the set scores it later already (a
/// longer-lived write of the key, landed first), a thousandth of a millisecond above that:
/// a member's score never falls below its entry's expiry, and every write changes it, so
/// that a purge can tell a member written since it read the set. The set lives a second
/// past its longest-lived member.
static INDEX_TAG: Lua = Lua::new(concat!(
    r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local set, member, ttl = KEYS[1], ARGV[1], ARGV[2]",
    index_tag_lua!(),
    "
return 1"
));

/// Removes members from a tag's set (ARGV: member, score, member, score, …) whose score is
/// still the one a purge read: a member written again since stays.
static UNINDEX_PURGED: Lua = Lua::new(
    r"
local removed = 0
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed",
);

/// Replaces the value at a key, keeping its TTL, if it is still the one that was read.
static COMPARE_AND_SET: Lua = Lua::new(
    r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0",
);

/// Records a purge: the next count, and the record under it; keeps the last ARGV[2]
/// records, for ARGV[3] ms after the last purge.
static RECORD_PURGE: Lua = Lua::new(
    r"
local g = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], g, g .. ':' .. ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[2]) + 1))
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return g",
);

/// The latest count, the oldest count the log holds, and the records after ARGV[1] (at
/// most ARGV[2]).
static PURGES_SINCE: Lua = Lua::new(
    r"
local g = tonumber(redis.call('GET', KEYS[1]) or '0')
if g <= tonumber(ARGV[1]) then return {g, 0, {}} end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local oldest = 0
if first[2] then oldest = tonumber(first[2]) end
return {g, oldest, redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'LIMIT', 0, ARGV[2])}",
);

/// How many purge records the log keeps.
const LOG_RECORDS: i64 = 1_000;
/// The most records a check reads; more since a fetch started count as covering it.
const MAX_CHECKED_RECORDS: i64 = 256;
/// How long the log is kept after the last purge.
const LOG_RETENTION: Duration = Duration::from_secs(3600);

/// How many soft purges of single entries run at once.
const SOFT_CONCURRENCY: usize = 32;

impl RedisStore {
    /// The Redis key of `tag`'s set. Entry keys are the layers' (`<namespace>:<layer>:…`);
    /// a layer's namespace does not start with `#`.
    pub(super) fn tag_key(&self, tag: &str) -> String {
        let mut key = String::with_capacity(self.inner.prefix.len() + 5 + tag.len());
        key.push_str(&self.inner.prefix);
        key.push_str("#tag:");
        key.push_str(tag);
        key
    }

    /// Adds the entry at `redis_key`, stored for `ttl`, to the sets of its `tags`: one
    /// script per tag, sent together.
    pub(super) async fn index_tags(
        &self,
        redis_key: &str,
        tags: &[String],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let adds = tags.iter().map(|tag| {
            let args: Vec<Value> = vec![redis_key.into(), millis(ttl).into()];
            self.eval::<i64>(&INDEX_TAG, self.tag_key(tag), args)
        });
        for added in futures_util::future::join_all(adds).await {
            added?;
        }
        Ok(())
    }

    /// Refuses to start a scan while the circuit is open: a scan is no probe.
    fn check_circuit(&self) -> Result<(), StoreError> {
        if self.inner.breaker.is_open() {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "Redis skipped: circuit open after consecutive failures",
            ));
        }
        Ok(())
    }

    /// Purges every key that starts with `prefix` (already namespaced) and that `filter`
    /// accepts (given the key without the store's namespace), with `SCAN` on each primary.
    pub(super) async fn purge_matching(
        &self,
        prefix: &str,
        filter: Option<&KeyFilter>,
        mode: PurgeMode,
    ) -> Result<u64, StoreError> {
        if prefix.is_empty() {
            return Err(StoreError::new(
                StoreErrorKind::Unsupported,
                "refusing to purge by an empty prefix: it would take every key",
            ));
        }
        self.check_circuit()?;
        let inner = &self.inner;
        let pattern = format!("{}*", escape_glob(prefix));
        let client = inner.pool.next_connected();
        let pages = if client.is_clustered() {
            client
                .scan_cluster(pattern, Some(inner.scan_count), None)
                .boxed()
        } else {
            client.scan(pattern, Some(inner.scan_count), None).boxed()
        };
        let keep = |key: &Key| {
            let Some(key) = key.as_str() else {
                return false;
            };
            let key = key.strip_prefix(inner.prefix.as_str()).unwrap_or(key);
            filter.is_none_or(|filter| filter(key))
        };
        let unscored = |keys: Vec<Key>| keys.into_iter().map(|key| (key, 0.0)).collect();
        self.purge_pages(pages, unscored, keep, mode, None).await
    }

    /// Purges the entries tagged `tag` whose keys (without the store's namespace) start
    /// with `within`, walking the tag's set with `ZSCAN`.
    pub(super) async fn purge_tag(
        &self,
        tag: &str,
        within: &str,
        mode: PurgeMode,
    ) -> Result<u64, StoreError> {
        self.check_circuit()?;
        let inner = &self.inner;
        let tag_key = self.tag_key(tag);
        let pages = inner
            .pool
            .next_connected()
            .zscan(tag_key.as_str(), "*", Some(inner.scan_count))
            .boxed();
        let members = |page: Vec<(Value, f64)>| {
            page.into_iter()
                .filter_map(|(member, score)| member.as_bytes().map(|key| (Key::from(key), score)))
                .collect()
        };
        let within = format!("{}{within}", inner.prefix);
        let ours = |key: &Key| key.as_bytes().starts_with(within.as_bytes());
        self.purge_pages(pages, members, ours, mode, Some((tag, &tag_key)))
            .await
    }

    /// Purges the keys of each page of a scan that `keep` accepts, a page at a time; each
    /// page is bounded by the command timeout and counted by the circuit breaker.
    async fn purge_pages<S: Scanner>(
        &self,
        mut pages: BoxStream<'_, Result<S, FredError>>,
        keys_of: impl Fn(S::Page) -> Vec<(Key, f64)>,
        keep: impl Fn(&Key) -> bool,
        mode: PurgeMode,
        tag: Option<(&str, &str)>,
    ) -> Result<u64, StoreError> {
        let inner = &self.inner;
        let timeout = inner.options.timeout.unwrap_or(Duration::from_secs(1));
        let mut purged = 0u64;
        loop {
            let page = match tokio::time::timeout(timeout, pages.next()).await {
                Ok(Some(page)) => page,
                Ok(None) => break,
                Err(_) => {
                    inner.breaker.on_failure();
                    return Err(StoreError::new(
                        StoreErrorKind::Timeout,
                        "Redis SCAN timed out",
                    ));
                }
            };
            let mut page = match page {
                Ok(page) => page,
                Err(error) => {
                    inner.breaker.on_failure();
                    return Err(store_error(error));
                }
            };
            let (keys, scores): (Vec<Key>, Vec<f64>) = page
                .take_results()
                .map(&keys_of)
                .unwrap_or_default()
                .into_iter()
                .filter(|(key, _)| keep(key))
                .unzip();
            let purged_page = match tag {
                Some((_, tag_key)) if mode == PurgeMode::Hard => {
                    self.purge_tagged(keys, &scores, tag_key).await
                }
                Some((tag, _)) => self.purge_keys(keys, mode, Some(tag)).await,
                None => self.purge_keys(keys, mode, None).await,
            };
            match purged_page {
                Ok(count) => purged += count,
                Err(error) => {
                    // Stop the scan rather than let the dropped page carry on.
                    page.cancel();
                    return Err(error);
                }
            }
            page.next();
        }
        Ok(purged)
    }

    /// Purges `keys` (Redis keys): one `UNLINK` per hash slot, sent together; or, soft, a
    /// compare-and-set per entry that has `tag` (if given), a few at a time.
    pub(super) async fn purge_keys(
        &self,
        keys: Vec<Key>,
        mode: PurgeMode,
        tag: Option<&str>,
    ) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        match mode {
            PurgeMode::Soft => {
                let softens = futures_util::stream::iter(keys)
                    .map(|key| self.soften(key, tag))
                    .buffer_unordered(SOFT_CONCURRENCY);
                let results: Vec<Result<bool, StoreError>> = softens.collect().await;
                let mut softened = 0;
                for result in results {
                    softened += u64::from(result?);
                }
                Ok(softened)
            }
            _ => self.unlink(keys).await,
        }
    }

    /// Removes a page of a tag's members (`keys`, with the `scores` the scan read) and
    /// then takes them out of the tag's set — those not written again meanwhile, which
    /// must stay indexed.
    async fn purge_tagged(
        &self,
        keys: Vec<Key>,
        scores: &[f64],
        tag_key: &str,
    ) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut members: Vec<Value> = Vec::with_capacity(keys.len() * 2);
        for (key, score) in keys.iter().zip(scores) {
            members.push(key.as_bytes().into());
            members.push(score.to_string().into());
        }
        let removed = self.unlink(keys).await?;
        self.eval::<i64>(&UNINDEX_PURGED, tag_key, members).await?;
        Ok(removed)
    }

    /// Removes `keys` (Redis keys): one `UNLINK` for all of them, or on a cluster one per
    /// hash slot, sent together; how many there were.
    pub(super) async fn unlink(&self, keys: Vec<Key>) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let inner = &self.inner;
        let client = inner.pool.next_connected();
        let batches = if client.is_clustered() {
            by_slot(keys)
        } else {
            vec![keys]
        };
        let client = client.with_options(&inner.options);
        let unlinks = batches
            .into_iter()
            .map(|batch| self.command::<i64, _>(client.unlink(batch)));
        let mut removed = 0u64;
        for unlinked in futures_util::future::join_all(unlinks).await {
            removed += u64::try_from(unlinked?).unwrap_or_default();
        }
        Ok(removed)
    }

    /// Makes the entry at `key` (a Redis key) stale, if it is fresh (and has `tag`, if
    /// given); whether it did.
    async fn soften(&self, key: Key, tag: Option<&str>) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let client = inner.pool.next_connected().with_options(&inner.options);
        let stored: Option<Bytes> = self.command(client.get(key.clone())).await?;
        let Some(stored) = stored else {
            return Ok(false);
        };
        // What this codec cannot read is no entry to soften.
        let Ok(entry) = inner.codec.decode_shared(&stored) else {
            return Ok(false);
        };
        if tag.is_some_and(|tag| !entry.tags.iter().any(|has| has == tag)) {
            return Ok(false);
        }
        let Some(soft) = softened(&entry, SystemTime::now()) else {
            return Ok(false);
        };
        let args: Vec<Value> = vec![stored.into(), inner.codec.encode(&soft).into()];
        let set: i64 = self.eval(&COMPARE_AND_SET, key, args).await?;
        Ok(set == 1)
    }

    /// The keys of the purge log's counter and records: one hash tag, one slot.
    pub(super) fn log_keys(&self) -> (String, String) {
        let tag = format!("{{{}#purge}}", self.inner.prefix);
        (format!("{tag}gen"), format!("{tag}log"))
    }

    /// Records a purge of `target` in the log, before it is carried out.
    pub(super) async fn record_purge(&self, target: &PurgeTarget<'_>) -> Result<(), StoreError> {
        let record = match target {
            // A key stands for its variant slots (`key#v<slot>`) too: a URL's record names
            // the key once, not once per slot.
            PurgeTarget::Keys(keys) => {
                let mut record = vec!["k"];
                record.extend(keys.iter().map(String::as_str).filter(|key| {
                    CacheKey::without_slot(key) == *key
                        || !keys.iter().any(|k| k == CacheKey::without_slot(key))
                }));
                serde_json::to_string(&record)
            }
            // A filter cannot be recorded: the plain prefix covers more, never less.
            PurgeTarget::Prefix { prefix, .. } => serde_json::to_string(&["p", prefix]),
            PurgeTarget::Tag { tag, within } => serde_json::to_string(&["t", tag, within]),
            PurgeTarget::All => serde_json::to_string(&["p", ""]),
        }
        .map_err(|error| StoreError::with_source(StoreErrorKind::Other, "purge record", error))?;
        let (gen_key, log_key) = self.log_keys();
        let args: Vec<Value> = vec![
            record.into(),
            LOG_RECORDS.into(),
            millis(LOG_RETENTION).into(),
        ];
        let count: i64 = self
            .eval(&RECORD_PURGE, vec![gen_key, log_key], args)
            .await?;
        self.saw_purges(count);
        Ok(())
    }

    /// Notes the count of purges the log holds: the latest, or, when the count went back
    /// (the log's keys were flushed or evicted, and counting started again), the new one.
    pub(super) fn saw_purges(&self, count: i64) {
        let count = u64::try_from(count).unwrap_or_default();
        let known = &self.inner.purge_count;
        if count < known.load(Ordering::Acquire) {
            known.store(count, Ordering::Release);
        } else {
            known.fetch_max(count, Ordering::AcqRel);
        }
    }

    /// Whether a record after `mark` covers an entry under `key` with `tags`; records the
    /// log no longer holds count as covering.
    pub(super) async fn purges_since(
        &self,
        mark: u64,
        key: &str,
        tags: &[String],
    ) -> Result<bool, StoreError> {
        let (gen_key, log_key) = self.log_keys();
        let mark = i64::try_from(mark).unwrap_or(i64::MAX);
        let reply: Vec<Value> = self
            .eval(
                &PURGES_SINCE,
                vec![gen_key, log_key],
                vec![mark.into(), (MAX_CHECKED_RECORDS + 1).into()],
            )
            .await?;
        let mut reply = reply.into_iter();
        let count = reply
            .next()
            .and_then(|value| value.as_i64())
            .unwrap_or_default();
        let oldest = reply
            .next()
            .and_then(|value| value.as_i64())
            .unwrap_or_default();
        let records = match reply.next() {
            Some(Value::Array(records)) => records,
            _ => Vec::new(),
        };
        self.saw_purges(count);
        if count < mark {
            // Counting started again (the log was flushed): what happened is not known.
            return Ok(true);
        }
        if count == mark {
            return Ok(false);
        }
        // Records the log no longer holds, or more than a check reads.
        if oldest == 0 || oldest > mark + 1 || records.len() as i64 > MAX_CHECKED_RECORDS {
            return Ok(true);
        }
        Ok(records.iter().any(|record| {
            let Some(record) = record.as_str() else {
                return true;
            };
            let json = record.split_once(':').map_or("", |(_, json)| json);
            covers(json, key, tags)
        }))
    }
}

/// Whether the purge recorded as `json` covers an entry under `key` with `tags`; a record
/// this version cannot read covers everything.
fn covers(json: &str, key: &str, tags: &[String]) -> bool {
    let Ok(record) = serde_json::from_str::<Vec<String>>(json) else {
        return true;
    };
    match record.split_first() {
        Some((kind, keys)) if kind == "k" => {
            let base = CacheKey::without_slot(key);
            keys.iter().any(|purged| purged == key || purged == base)
        }
        Some((kind, [prefix])) if kind == "p" => key.starts_with(prefix.as_str()),
        Some((kind, [tag, within])) if kind == "t" => {
            key.starts_with(within.as_str()) && tags.iter().any(|has| has == tag)
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn records_cover_what_they_purged_and_unknown_ones_everything() {
        let tags = ["user:42".to_owned()];
        assert!(covers(r#"["k","a","b"]"#, "b", &[]));
        assert!(
            covers(r#"["k","a","b"]"#, "a#v3", &[]),
            "a key covers its slots"
        );
        assert!(!covers(r#"["k","a"]"#, "a#x3", &[]));
        assert!(!covers(r#"["k","a","b"]"#, "c", &[]));
        assert!(covers(r#"["p","ns:"]"#, "ns:GET:/", &[]));
        assert!(!covers(r#"["p","ns:"]"#, "other:GET:/", &[]));
        assert!(covers(r#"["t","user:42","ns:"]"#, "ns:GET:/", &tags));
        assert!(!covers(r#"["t","user:4","ns:"]"#, "ns:GET:/", &tags));
        assert!(!covers(r#"["t","user:42","ns:"]"#, "other:GET:/", &tags));
        assert!(covers(r#"["x","new kind"]"#, "anything", &[]));
        assert!(covers("not json", "anything", &[]));
    }
}
