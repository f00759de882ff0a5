//! [`RedisStore`]: entries shared by every instance of a service, on Redis (standalone,
//! Sentinel or Cluster) through [fred](https://docs.rs/fred).

// Past 600 lines on purpose: the store itself — connecting, keys, scripts, the breaker;
// its configuration, operations and purges are in `config`, `ops` and `purge`.

// Over 600 lines: one store over three topologies (standalone, Sentinel, Cluster) — the
// configuration, the breaker-wrapped commands, the scripts and the fill locks; most of its
// tests are the Redis suite (tests/redis).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use fred::clients::Pool;
use fred::error::{Error as FredError, ErrorKind as FredErrorKind};
use fred::interfaces::{ClientLike, KeysInterface, LuaInterface};
use fred::types::config::{
    Config as FredConfig, Options, ReconnectPolicy, ServerConfig, TcpConfig,
};
use fred::types::{Expiration, FromValue, Key, MultipleKeys, SetOptions};

mod config;
mod ops;
mod purge;

pub use config::RedisConfig;
use config::config_error;
use ops::RELEASE;

use super::breaker::Breaker;
use super::{
    Batches, Capabilities, Counters, Fill, FillLock, Filled, Lookup, PurgeMode, PurgeTarget, PutIf,
    SharedStore, Store, StoreError, StoreErrorKind, StoreFuture, StoreGauges, lock_token,
};
use crate::codec::{BINARY_PREFIX, BINARY_STORED_AT, BinaryCodec, Codec, binary_stored_at};
use crate::entry::CachedResponse;

/// What a [`RedisStore`]'s circuit breaker did ([`RedisStore::circuit_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CircuitStats {
    /// Whether Redis is being skipped now.
    pub open: bool,
    /// How often the circuit opened: Redis failed
    /// [`breaker_threshold`](RedisConfig::breaker_threshold) times in a row while it was
    /// closed (a failed probe keeps it open: no new opening).
    pub opened: u64,
    /// How often it closed again (a probe succeeded).
    pub closed: u64,
}

/// A [`Store`] on Redis, shared by every instance that points at the same server.
///
/// - One round trip per operation: `GET`, `SET key value PX ttl`, `UNLINK`, `PEXPIRE`.
/// - Instances coordinate their fetches: the first to miss a key takes a short lock
///   (`SET {key}#lock token NX PX`, taken by the lookup's own script,
///   [`get_or_lock_fill`](SharedStore::get_or_lock_fill)), the others wait for the entry to
///   appear (bounded by the layer's coalescing timeout) instead of calling their service
///   too.
///   `KEYS` is never used: [`clear`](crate::store::StoreExt::clear) and
///   [`remove_prefix`](crate::store::StoreExt::remove_prefix) `SCAN` (on every primary of a cluster) and
///   `UNLINK` in batches of keys that share a hash slot.
/// - It fails open: a command that errors or takes longer than
///   [`command_timeout`](RedisConfig::command_timeout) is an error the layer counts before
///   it serves the request from the service; after
///   [`breaker_threshold`](RedisConfig::breaker_threshold) consecutive failures Redis is
///   skipped entirely for a cool-down, so a dead server adds no latency, and one request
///   then probes it. Garbage or an unknown format version at a key is a
///   [`StoreErrorKind::Decode`] error (a miss, and the next store overwrites it).
///
/// ```no_run
/// use tower_response_cache::{CacheLayer, RedisStore};
///
/// # async fn run() -> Result<(), tower_response_cache::store::StoreError> {
/// let store = RedisStore::connect_url("redis://127.0.0.1:6379").await?;
/// let layer = CacheLayer::new(store);
/// # Ok(()) }
/// ```
///
/// # Sharing one Redis
///
/// ```no_run
/// use tower_response_cache::{CacheLayer, RedisConfig, RedisStore};
/// # async fn run() -> Result<(), tower_response_cache::store::StoreError> {
/// let store = RedisStore::connect(RedisConfig {
///     namespace: "shop".into(),           // every key is `shop:…`; clear() removes only those
///     ..RedisConfig::from_url("redis://127.0.0.1:6379/0")?
/// })
/// .await?;
/// let cache = CacheLayer::new(store);
/// # Ok(()) }
/// ```
///
/// Instances that share a Redis share their entries: a miss on one is a hit on the others.
/// `REDIS_URL=redis://127.0.0.1:6379 cargo run --release --features redis --example redis`
/// runs the quick start on Redis; start it twice (`LISTEN=127.0.0.1:3001` for the second)
/// to see it. [`RedisConfig`] takes a URL or fields (endpoint, port, ACL user, password,
/// database, pool size, namespace, codec, command timeout, reconnect policy), for a
/// standalone server, a Cluster or Sentinel; `rediss://` needs the `redis-tls` feature.
///
/// # When Redis fails
///
/// Redis down, slow or holding garbage never fails a request: each command has a timeout
/// (100 ms by default), failures are counted (`store_errors_by_kind` in the stats) and
/// logged at most once per 10 s, and after 5 consecutive failures Redis is skipped for a
/// cool-down (1 s) before one request probes it again. An entry Redis returns that the
/// codec cannot read (an unknown format version, garbage) is a miss, and the fresh response
/// overwrites it.
///
/// # Tested
///
/// Store behaviour and faults on a real server and on a local 3-primary cluster; ACL
/// authentication, database selection, Sentinel and TLS on real standalone servers; faults
/// under load on real servers and on a 3+3 cluster.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// `namespace:`, or empty.
    prefix: String,
    codec: Arc<dyn Codec>,
    options: Options,
    breaker: Breaker,
    scan_count: u32,
    fill_locks: bool,
    purge_log: bool,
    /// The latest count of purges seen in the purge log.
    purge_count: AtomicU64,
    /// Hashes of keys found lately, one per slot: a lookup of such a key (most likely a
    /// hit) is a plain `GET`; the lookup-or-lock script, which costs Redis and the client
    /// more, is for keys not seen lately (most likely misses). Only a guess: a wrong one
    /// costs a round trip or a few microseconds, never a wrong answer.
    present: Box<[AtomicU64]>,
}

/// Slots of [`Inner::present`]: 32 KiB.
const PRESENT_SLOTS: usize = 4096;

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("codec", &self.inner.codec.name())
            .field("command_timeout", &self.inner.options.timeout)
            .field("circuit_open", &self.inner.breaker.is_open())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects with `config`. Returns once connected, or after
    /// [`connect_timeout`](RedisConfig::connect_timeout) with the store reconnecting in the
    /// background (requests are served by the service meanwhile). Only a configuration error
    /// is an error.
    pub async fn connect(config: RedisConfig) -> Result<Self, StoreError> {
        let pool = fred::types::Builder::from_config(config.fred_config()?)
            .with_connection_config(|connection| {
                connection.connection_timeout = config.connect_timeout;
                connection.internal_command_timeout = config.connect_timeout;
                connection.max_command_attempts = 1;
                // Every lookup is a small request waiting on its reply: with Nagle's
                // algorithm a small write waits until the one before it is acknowledged.
                connection.tcp = TcpConfig {
                    nodelay: Some(true),
                    ..TcpConfig::default()
                };
                // A connection that stops answering (a partition, a paused server) is
                // closed and reconnected instead of timing out command after command.
                connection.unresponsive.max_timeout =
                    Some(config.command_timeout.max(Duration::from_millis(500)) * 4);
            })
            .with_performance_config(|performance| {
                performance.default_command_timeout = config.command_timeout;
            })
            .set_policy(config.reconnect.clone())
            .build_pool(config.pool_size.max(1))
            .map_err(|error| config_error("invalid Redis configuration", error))?;
        pool.connect();
        match tokio::time::timeout(config.connect_timeout, pool.wait_for_connect()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "Redis not reachable yet; the cache is skipped until it is")
            }
            Err(_) => tracing::warn!(
                timeout_ms = config.connect_timeout.as_millis() as u64,
                "Redis not connected in time; the cache is skipped until it is"
            ),
        }
        Ok(Self::from_pool(pool, &config))
    }

    /// Connects to `url` with the other settings at their defaults.
    pub async fn connect_url(url: &str) -> Result<Self, StoreError> {
        Self::connect(RedisConfig::from_url(url)?).await
    }

    /// A store on a pool you already run (connected or connecting). From `config`, only the
    /// namespace, codec, command timeout, breaker, scan, fill-lock and purge-log settings
    /// are used.
    pub fn from_pool(pool: Pool, config: &RedisConfig) -> Self {
        let prefix = if config.namespace.is_empty() {
            String::new()
        } else {
            format!("{}:", config.namespace)
        };
        let store = Self {
            inner: Arc::new(Inner {
                pool,
                prefix,
                codec: Arc::clone(&config.codec),
                options: Options {
                    timeout: Some(config.command_timeout),
                    // A cache must not wait for a reconnection: skip it instead.
                    fail_fast: true,
                    max_attempts: Some(1),
                    ..Options::default()
                },
                breaker: Breaker::new(config.breaker_threshold, config.breaker_cooldown),
                scan_count: config.scan_count.max(1),
                fill_locks: config.fill_locks,
                purge_log: config.purge_log,
                purge_count: AtomicU64::new(0),
                present: (0..PRESENT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            }),
        };
        if config.purge_log {
            // The log's count so far: until it is known, the first writes check every
            // record the log holds.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let learner = store.clone();
                runtime.spawn(async move {
                    let _ = learner.purges_since(u64::MAX, "", &[]).await;
                });
            }
        }
        store
    }

    /// A store on a client you already run (connected or connecting), as a pool of one.
    /// From `config`, only the namespace, codec, command timeout, breaker, scan, fill-lock
    /// and purge-log settings are used.
    pub fn from_client(
        client: fred::clients::Client,
        config: &RedisConfig,
    ) -> Result<Self, StoreError> {
        let pool = Pool::from_clients(vec![client])
            .map_err(|error| config_error("invalid Redis client", error))?;
        Ok(Self::from_pool(pool, config))
    }

    /// `namespace:`, or empty: what every key of this store starts with in Redis.
    pub(crate) fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The fred pool underneath, for commands of your own. Its clients carry the store's
    /// settings: the command timeout and a single attempt per command.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Whether the circuit breaker is skipping Redis now.
    pub fn circuit_open(&self) -> bool {
        self.inner.breaker.is_open()
    }

    /// The circuit breaker's state and how often it changed since the store was made.
    pub fn circuit_stats(&self) -> CircuitStats {
        let (opened, closed) = self.inner.breaker.transitions();
        CircuitStats {
            open: self.inner.breaker.is_open(),
            opened,
            closed,
        }
    }

    /// The key as stored in Redis: the store's namespace, `:`, then `key` (a key the layer
    /// or a [`ValueCache`](crate::value::ValueCache) gives the store).
    ///
    /// Under `redis-cli --scan --pattern 'trc:*'` (the default namespace `trc`), a store
    /// shows:
    ///
    /// - responses: `trc:<layer namespace>:[<route namespace>:]GET:<host>/<path>?<query>`,
    ///   then `|<header>=<value>` for headers in the key, and `#v<slot>` for a `Vary`
    ///   variant other than the first; keys past the layer's length limit end in `#` and
    ///   a hash (`CacheLayer::namespace` has the model);
    /// - values: `trc:<value namespace>:<key>` (`trc:values:user:1`);
    /// - beside them: `{trc:…}#lock` fill locks (a few seconds each), `trc:#tag:<tag>`
    ///   tag indexes (sorted sets), the purge log (`{trc:#purge}gen`, `{trc:#purge}log`), and, for a
    ///   [`TieredStore`](crate::TieredStore), the `trc:#l1:generation` marker.
    pub fn redis_key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.inner.prefix.len() + key.len());
        full.push_str(&self.inner.prefix);
        full.push_str(key);
        full
    }

    /// The key of the fill lock for `key`: the entry's key with a suffix no default key ends
    /// with (they escape `#`, and hashed keys end in hex digits), in the entry's hash slot
    /// where it can be (so that one script reads the entry and takes the lock on a
    /// cluster): an entry key without a hash tag is wrapped into one (`{key}#lock`), one
    /// with a hash tag keeps it (`key#lock`). An entry key with a `}` but no hash tag
    /// cannot be wrapped; its lock's slot is its own (`key#lock`).
    fn lock_key(&self, key: &str) -> String {
        let data = self.redis_key(key);
        slot_lock_key(&data).unwrap_or_else(|| format!("{data}#lock"))
    }

    /// An entry as the codec reads it from `bytes`.
    fn decode(&self, bytes: &Bytes) -> Result<Arc<CachedResponse>, StoreError> {
        super::decode_shared(&*self.inner.codec, bytes, "Redis")
    }

    /// Notes whether `key` was found (see [`Inner::present`]).
    fn seen(&self, key: &str, found: bool) {
        let hash = xxhash_rust::xxh3::xxh3_64(key.as_bytes()) | 1;
        let slot = &self.inner.present[(hash % PRESENT_SLOTS as u64) as usize];
        if found {
            if slot.load(Ordering::Relaxed) != hash {
                slot.store(hash, Ordering::Relaxed);
            }
        } else if slot.load(Ordering::Relaxed) == hash {
            slot.store(0, Ordering::Relaxed);
        }
    }

    /// Whether `key` was found lately (see [`Inner::present`]).
    fn likely_present(&self, key: &str) -> bool {
        let hash = xxhash_rust::xxh3::xxh3_64(key.as_bytes()) | 1;
        self.inner.present[(hash % PRESENT_SLOTS as u64) as usize].load(Ordering::Relaxed) == hash
    }

    /// Releases, on a spawned task, the fill lock of `key` if `token` holds it: after a
    /// command that may have taken it but whose reply was lost. That failure was counted
    /// (by the breaker, and by the layer's stats); this follow-up is not, either way — one
    /// lost reply is one failure — and is skipped while the breaker is open.
    fn release_later(&self, key: &str, token: &str) {
        let store = self.clone();
        let key = key.to_owned();
        let token = token.to_owned();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if store.inner.breaker.is_open() {
                    return;
                }
                let released: Result<i64, _> = store
                    .eval_unaccounted(&RELEASE, store.lock_key(&key).into(), vec![token.into()])
                    .await;
                if let Err(error) = released {
                    // Harmless: the lock expires by itself.
                    tracing::debug!(%error, key, "releasing a fill lock after a lost reply failed");
                }
            });
        }
    }

    /// Runs `write` (of `entry` under `key`, for `ttl`) and, for a tagged entry, adds it
    /// to its tags' sets alongside. An entry whose tags could not be indexed would escape
    /// their purges: it is removed again, and the write reported failed.
    async fn indexed<T>(
        &self,
        key: &str,
        entry: &CachedResponse,
        ttl: Duration,
        write: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if entry.tags.is_empty() {
            return write.await;
        }
        let redis_key = self.redis_key(key);
        let (written, indexed) =
            futures_util::future::join(write, self.index_tags(&redis_key, &entry.tags, ttl)).await;
        if let Err(error) = indexed {
            let inner = &self.inner;
            let client = inner.pool.next_connected().with_options(&inner.options);
            let _: Result<i64, _> = self.command(client.unlink(redis_key)).await;
            return Err(error);
        }
        written
    }

    /// Runs `lua` by its SHA-1 (`EVALSHA`), sending the whole script only when the server
    /// does not have it yet (a restarted server, a new cluster node), through the breaker.
    pub(super) async fn eval<R: FromValue>(
        &self,
        lua: &Lua,
        keys: impl Into<MultipleKeys>,
        args: Vec<fred::types::Value>,
    ) -> Result<R, StoreError> {
        self.command(self.eval_unaccounted(lua, keys.into(), args))
            .await
    }

    /// [`eval`](Self::eval) outside the breaker: neither its success nor its failure
    /// counts.
    async fn eval_unaccounted<R: FromValue>(
        &self,
        lua: &Lua,
        keys: MultipleKeys,
        args: Vec<fred::types::Value>,
    ) -> Result<R, FredError> {
        let inner = &self.inner;
        let client = inner.pool.next_connected().with_options(&inner.options);
        match client.evalsha(lua.sha(), keys.clone(), args.clone()).await {
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                client.eval(lua.source, keys, args).await
            }
            result => result,
        }
    }

    /// Runs one command through the breaker, mapping fred's errors.
    ///
    /// fred's command futures are about 5 KiB, most of it room for states not yet reached:
    /// the command moves to the heap once, here, so that the futures around it (each
    /// boxed in turn as a store future) stay small instead of copying that room at every
    /// step.
    fn command<'a, T, F>(&'a self, command: F) -> impl Future<Output = Result<T, StoreError>> + 'a
    where
        F: Future<Output = Result<T, FredError>> + 'a,
    {
        let command = Box::pin(command);
        async move {
            let inner = &self.inner;
            if !inner.breaker.allow() {
                return Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    "Redis skipped: circuit open after consecutive failures",
                ));
            }
            match command.await {
                Ok(value) => {
                    inner.breaker.on_success();
                    Ok(value)
                }
                Err(error) => {
                    inner.breaker.on_failure();
                    Err(store_error(error))
                }
            }
        }
    }
}

/// Groups keys by cluster hash slot, so that one `UNLINK` never spans slots.
fn by_slot(mut keys: Vec<Key>) -> Vec<Vec<Key>> {
    keys.sort_by_key(|key| fred::util::redis_keyslot(key.as_bytes()));
    let mut batches: Vec<Vec<Key>> = Vec::new();
    let mut last_slot = None;
    for key in keys {
        let slot = fred::util::redis_keyslot(key.as_bytes());
        match batches.last_mut() {
            Some(batch) if last_slot == Some(slot) => batch.push(key),
            _ => batches.push(vec![key]),
        }
        last_slot = Some(slot);
    }
    batches
}

/// Escapes the glob characters of `SCAN MATCH` so that a prefix matches only itself.
fn escape_glob(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len() + 8);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The Lua that adds `member` (an entry's key, written for `ttl` ms) to the tag set `set`,
/// at the server's time `now` ([`purge::INDEX_TAG`](self::purge) has the rules): one text
/// for the script that indexes a tag alone and for the one that ends a fill.
macro_rules! index_tag_lua {
    () => {
        r"
redis.call('ZREMRANGEBYSCORE', set, '-inf', string.format('%.0f', now))
local score = now + tonumber(ttl)
local old = redis.call('ZSCORE', set, member)
if old and tonumber(old) >= score then score = tonumber(old) + 0.001 end
redis.call('ZADD', set, string.format('%.3f', score), member)
local last = redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', set, string.format('%.0f', tonumber(last[2]) + 1000))"
    };
}
use index_tag_lua;

/// A Lua script, and its SHA-1 (computed once) to run it by.
pub(super) struct Lua {
    source: &'static str,
    sha: OnceLock<String>,
}

impl Lua {
    pub(super) const fn new(source: &'static str) -> Self {
        Self {
            source,
            sha: OnceLock::new(),
        }
    }

    fn sha(&self) -> String {
        self.sha
            .get_or_init(|| fred::util::sha1_hash(self.source))
            .clone()
    }
}

/// The hash tag of a Redis key (what its cluster slot is computed from), if it has one: the
/// text between its first `{` and the first `}` after it, when not empty.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}

/// The fill lock's key for the entry key `data` in the entry's hash slot, where one can be:
/// `{data}#lock` for a key without a hash tag, `data#lock` for one with a tag; `None` for a
/// key with a `}` but no hash tag, which cannot be wrapped.
fn slot_lock_key(data: &str) -> Option<String> {
    match hash_tag(data) {
        Some(_) => Some(format!("{data}#lock")),
        None if data.contains('}') => None,
        None => Some(format!("{{{data}}}#lock")),
    }
}

fn store_error(error: FredError) -> StoreError {
    let kind = match error.kind() {
        FredErrorKind::Timeout => StoreErrorKind::Timeout,
        FredErrorKind::IO
        | FredErrorKind::Canceled
        | FredErrorKind::Routing
        | FredErrorKind::Cluster
        | FredErrorKind::Auth => StoreErrorKind::Unavailable,
        // What fred says of a command it has no connection to send on (the server died, the
        // pool is reconnecting): the store is unavailable, not failing in some other way.
        FredErrorKind::Unknown if error.details().contains("Failed to route command") => {
            StoreErrorKind::Unavailable
        }
        _ => StoreErrorKind::Other,
    };
    StoreError::with_source(kind, "Redis command failed", error)
}

fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_locks_share_their_entry_s_slot_where_they_can() {
        assert_eq!(
            slot_lock_key("app:GET:/a").as_deref(),
            Some("{app:GET:/a}#lock")
        );
        assert_eq!(slot_lock_key("{u1}:a").as_deref(), Some("{u1}:a#lock"));
        assert_eq!(slot_lock_key("a{b").as_deref(), Some("{a{b}#lock"));
        assert_eq!(
            hash_tag("{a{b}#lock"),
            Some("a{b"),
            "the wrapped key's own slot"
        );
        assert_eq!(slot_lock_key("a}b"), None);
    }

    #[test]
    fn hash_tags_are_found_as_redis_finds_them() {
        assert_eq!(hash_tag("app:GET:/a"), None);
        assert_eq!(hash_tag("{user1}:a"), Some("user1"));
        assert_eq!(hash_tag("a{b}c{d}"), Some("b"));
        assert_eq!(
            hash_tag("a{}b{c}"),
            None,
            "an empty first tag: the whole key"
        );
        assert_eq!(hash_tag("a{b"), None);
        assert_eq!(hash_tag("a}b{c}"), Some("c"));
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("a*b?[c]\\d"), "a\\*b\\?\\[c\\]\\\\d");
        assert_eq!(escape_glob("trc:GET:/x"), "trc:GET:/x");
    }

    #[test]
    fn batches_never_span_slots() {
        let keys: Vec<Key> = ["{a}1", "{b}1", "{a}2", "c", "{b}2"]
            .into_iter()
            .map(Key::from)
            .collect();
        let batches = by_slot(keys);
        for batch in &batches {
            let slot = fred::util::redis_keyslot(batch[0].as_bytes());
            assert!(
                batch
                    .iter()
                    .all(|key| fred::util::redis_keyslot(key.as_bytes()) == slot)
            );
        }
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 5);
        assert!(batches.len() <= 3, "keys sharing a slot are batched");
    }

    #[test]
    fn urls_are_checked_up_front() {
        assert!(RedisConfig::from_url("redis://:pw@127.0.0.1:6380/3").is_ok());
        assert!(
            RedisConfig::from_url("redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001").is_ok()
        );
        assert!(RedisConfig::from_url("http://127.0.0.1").is_err());
        assert!(RedisConfig::from_url("not a url").is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let config = RedisConfig {
            password: Some("hunter2".into()),
            ..RedisConfig::from_url("redis://:hunter2@127.0.0.1:6379").unwrap()
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }
}
