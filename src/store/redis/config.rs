//! [`RedisConfig`]: how to reach Redis, and how to use it.

use super::*;

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

    pub(super) fn fred_config(&self) -> Result<FredConfig, StoreError> {
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

pub(super) fn config_error(message: &'static str, error: FredError) -> StoreError {
    StoreError::with_source(StoreErrorKind::Other, message, error)
}
