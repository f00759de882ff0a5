//! [`RedisStore`]: entries shared by every instance of a service, on Redis (standalone,
//! Sentinel or Cluster) through [fred](https://docs.rs/fred).

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

mod purge;

use super::breaker::Breaker;
use super::{
    Batches, Capabilities, Counters, FillLock, Lookup, PurgeMode, PurgeTarget, PutIf, SharedStore,
    Store, StoreError, StoreErrorKind, StoreFuture, StoreGauges, lock_token,
};
use crate::codec::{BINARY_PREFIX, BINARY_STORED_AT, BinaryCodec, Codec, binary_stored_at};
use crate::entry::CachedResponse;

/// How to reach Redis and how to use it. Plain fields with documented defaults; start from
/// [`RedisConfig::default`] or [`RedisConfig::from_url`].
///
/// ```
/// use std::time::Duration;
/// use tower_response_cache::codec::JsonCodec;
/// use tower_response_cache::RedisConfig;
///
/// let config = RedisConfig {
///     namespace: "shop".into(),
///     command_timeout: Duration::from_millis(50),
///     ..RedisConfig::from_url("redis://:secret@127.0.0.1:6379/2").unwrap()
/// }
/// .codec(JsonCodec);
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    /// Where the server is: `redis://[user:password@]host:port[/db]`, `rediss://…` (TLS,
    /// needs the `redis-tls` feature; also `rediss-cluster://`, `rediss-sentinel://`), `redis-cluster://host:port?node=host:port…`,
    /// `redis-sentinel://host:port/db?sentinelServiceName=name…`. When set it wins over
    /// `endpoint` and `port`. Default: `None`.
    pub url: Option<String>,
    /// The server's host, when there is no `url`. Default: `"127.0.0.1"`.
    pub endpoint: String,
    /// The server's port, when there is no `url`. Default: `6379`.
    pub port: u16,
    /// The ACL user; overrides the URL's. Default: `None`.
    pub username: Option<String>,
    /// The password; overrides the URL's. Default: `None`.
    pub password: Option<String>,
    /// The database number (not available on a cluster); overrides the URL's. Default:
    /// `None` (the URL's, else 0).
    pub db: Option<u8>,
    /// How many connections to keep. Default: `4`.
    pub pool_size: usize,
    /// Every key the store writes starts with `namespace:`, before the layer's own
    /// namespace (`trc:cache:GET:…`: the model is at
    /// [`CacheLayer::namespace`](crate::CacheLayer::namespace)); [`StoreExt::clear`](crate::store::StoreExt::clear) removes
    /// the keys that start so (so a namespace `shop` also clears `shop:eu`'s keys: give stores
    /// namespaces that are not prefixes of each other). An empty namespace writes keys as
    /// they are, and `clear` then refuses to run (it would have to empty the whole
    /// database). Default: `"trc"`.
    pub namespace: String,
    /// How entries are serialized. Default: [`BinaryCodec`].
    pub codec: Arc<dyn Codec>,
    /// How long one command may take before the store gives up (the request then goes to
    /// the service). Default: 100 ms.
    pub command_timeout: Duration,
    /// How long [`RedisStore::connect`] waits for the first connection before returning
    /// anyway (the store then reconnects in the background). Default: 1 s.
    pub connect_timeout: Duration,
    /// How to reconnect after the connection drops. Default: exponential back-off from
    /// 50 ms to 2 s, forever.
    pub reconnect: ReconnectPolicy,
    /// Consecutive failures after which Redis is skipped for `breaker_cooldown` (0: never).
    /// Default: `5`.
    pub breaker_threshold: u32,
    /// How long Redis is skipped once the breaker opens; then one request probes it.
    /// Default: 1 s.
    pub breaker_cooldown: Duration,
    /// Keys asked for per `SCAN` call when clearing or purging by prefix, and members per
    /// `ZSCAN` call when purging a tag: the size of a purge's batches. Default: `500`.
    pub scan_count: u32,
    /// Whether the processes that share this Redis coordinate their misses: the one that
    /// takes a short lock (`SET {key}#lock token NX PX`, in the lookup's own script: no
    /// round trip of its own) fetches, the others wait for its entry (for at most half the
    /// layer's coalescing timeout). The lock costs a round trip after the fetch (its
    /// release). Turn it off when one
    /// process uses the store, or when one origin fetch per process and key is acceptable:
    /// coalescing within each process stays. Default: `true`.
    pub fill_locks: bool,
    /// Whether purges are recorded in a short log in Redis (a counter and the last 1 000
    /// records, under one hash tag) that every process sharing the store checks before and
    /// after it writes a fetched entry: a fetch under way in one process while another
    /// purges does not write back what the purge took. It costs a purge one command and
    /// each write of a fetched entry two more round trips (in the background by default);
    /// lookups nothing. Turn it off when one process uses the store. Default: `true`.
    pub purge_log: bool,
    /// The TLS connector, e.g. one that trusts a private CA (`fred::types::config::TlsConnector`
    /// converts from a `rustls::ClientConfig`; fred re-exports `rustls`). When set,
    /// connections use TLS whatever the URL's scheme. Default: `None` (a `rediss://` URL
    /// trusts the system's roots).
    #[cfg(feature = "redis-tls")]
    pub tls: Option<fred::types::config::TlsConnector>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            endpoint: "127.0.0.1".to_owned(),
            port: 6379,
            username: None,
            password: None,
            db: None,
            pool_size: 4,
            namespace: "trc".to_owned(),
            codec: Arc::new(BinaryCodec),
            command_timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(1),
            reconnect: ReconnectPolicy::new_exponential(0, 50, 2_000, 2),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(1),
            scan_count: 500,
            fill_locks: true,
            purge_log: true,
            #[cfg(feature = "redis-tls")]
            tls: None,
        }
    }
}

impl RedisConfig {
    /// The defaults with `url`, checked now: an unknown scheme or a malformed URL is an
    /// error here rather than at the first request.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        const SCHEMES: [&str; 8] = [
            "redis",
            "rediss",
            "redis-cluster",
            "rediss-cluster",
            "redis-sentinel",
            "rediss-sentinel",
            "valkey",
            "valkeys",
        ];
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        if !scheme.is_some_and(|scheme| SCHEMES.contains(&scheme)) {
            return Err(StoreError::new(
                StoreErrorKind::Other,
                format!(
                    "invalid Redis URL: expected one of the schemes {}",
                    SCHEMES.join("://, ") + "://"
                ),
            ));
        }
        FredConfig::from_url(url).map_err(|error| config_error("invalid Redis URL", error))?;
        Ok(Self {
            url: Some(url.to_owned()),
            ..Self::default()
        })
    }

    /// The same configuration with another codec.
    #[must_use]
    pub fn codec(mut self, codec: impl Codec) -> Self {
        self.codec = Arc::new(codec);
        self
    }

    fn fred_config(&self) -> Result<FredConfig, StoreError> {
        let mut config = match &self.url {
            Some(url) => FredConfig::from_url(url)
                .map_err(|error| config_error("invalid Redis URL", error))?,
            None => FredConfig {
                server: ServerConfig::new_centralized(self.endpoint.clone(), self.port),
                ..FredConfig::default()
            },
        };
        if self.username.is_some() {
            config.username.clone_from(&self.username);
        }
        if self.password.is_some() {
            config.password.clone_from(&self.password);
        }
        if self.db.is_some() {
            config.database = self.db;
        }
        #[cfg(feature = "redis-tls")]
        if let Some(connector) = &self.tls {
            config.tls = Some(connector.clone().into());
        }
        // Start even when Redis is down: the first connection is retried like any other.
        config.fail_fast = false;
        Ok(config)
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password stays out of logs, and so does the URL, which may carry it.
        f.debug_struct("RedisConfig")
            .field("url", &self.url.as_ref().map(|_| "<set>"))
            .field("endpoint", &self.endpoint)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("db", &self.db)
            .field("pool_size", &self.pool_size)
            .field("namespace", &self.namespace)
            .field("codec", &self.codec.name())
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("breaker_threshold", &self.breaker_threshold)
            .field("breaker_cooldown", &self.breaker_cooldown)
            .field("scan_count", &self.scan_count)
            .field("fill_locks", &self.fill_locks)
            .field("purge_log", &self.purge_log)
            .finish_non_exhaustive()
    }
}

fn config_error(message: &'static str, error: FredError) -> StoreError {
    StoreError::with_source(StoreErrorKind::Other, message, error)
}

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

    /// [`PutIf::Newer`] with the binary codec: one script compares the stored entry's
    /// `stored_at` in place and sets the new entry unless the stored one is newer.
    async fn put_newer_binary(
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
    async fn put_newer_by_compare(
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

    /// [`SharedStore::get_or_lock_fill`] in two round trips: a `GET`, then, on a miss, the
    /// lock.
    async fn get_then_lock(&self, key: &str, ttl: Duration) -> Result<Lookup, StoreError> {
        if let Some(entry) = self.get(key).await? {
            return Ok(Lookup::Found(entry));
        }
        Ok(match self.lock_fill(key, ttl).await? {
            Some(lock) => Lookup::Locked(lock),
            None => Lookup::Held,
        })
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
    async fn command<T, F>(&self, command: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, FredError>>,
    {
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
static RELEASE: Lua = Lua::new(
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
