//! [`MemcachedStore`]: entries in one or more memcached servers (feature `memcached`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_memcached::{AsciiProtocol, Client, MetaProtocol};
use bytes::Bytes;
use tokio::sync::Mutex;

use super::breaker::Breaker;
use super::{
    FillLock, Store, StoreError, StoreErrorKind, StoreFuture, StoreGauges, lock_token, random_id,
};
use crate::codec::{BinaryCodec, Codec};
use crate::entry::CachedResponse;

/// The settings of a [`MemcachedStore`]; build one with struct-update syntax over
/// [`MemcachedConfig::new`].
#[derive(Clone)]
pub struct MemcachedConfig {
    /// The servers, as `host:port` (or `tcp://host:port`).
    pub servers: Vec<String>,
    /// What every key starts with. Default: `trc`.
    pub namespace: String,
    /// How entries are written. Default: [`BinaryCodec`].
    pub codec: Arc<dyn Codec>,
    /// How long a command may take before it counts as failed. Default: 100 ms.
    pub command_timeout: Duration,
    /// How long a connection may take to open. Default: 1 s.
    pub connect_timeout: Duration,
    /// Connections per server. Default: 4.
    pub pool_size: usize,
    /// Consecutive failures that open the circuit breaker (0: never). Default: 5.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before one command probes the servers. Default: 5 s.
    pub breaker_cooldown: Duration,
    /// The largest entry sent, encoded: memcached's item size (`-I`, 1 MiB by default)
    /// less its item header. Larger entries are not stored. Default: 1 MiB − 4 KiB.
    pub max_item_size: usize,
    /// How long an instance uses the namespace generation it read before reading it again:
    /// the delay before a `clear` on another instance is seen here. Default: 1 s.
    pub generation_ttl: Duration,
}

impl MemcachedConfig {
    /// The defaults, on `servers`.
    pub fn new<I>(servers: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self {
            servers: servers.into_iter().map(Into::into).collect(),
            namespace: "trc".to_owned(),
            codec: Arc::new(BinaryCodec),
            command_timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(1),
            pool_size: 4,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(5),
            max_item_size: (1 << 20) - 4096,
            generation_ttl: Duration::from_secs(1),
        }
    }
}

impl fmt::Debug for MemcachedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemcachedConfig")
            .field("servers", &self.servers)
            .field("namespace", &self.namespace)
            .field("command_timeout", &self.command_timeout)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// Entries in memcached; cheap to clone.
///
/// - **Servers**: each key goes to one server by rendezvous hashing (the highest
///   `xxh3(server, key)`), so adding or removing a server moves only that server's share of
///   the keys. Each server has a small pool of connections of its own, made on first use
///   and again after any failure (a command cut short by a timeout leaves its connection
///   unusable: it is dropped, never reused).
/// - **Limits**: a key longer than memcached's 250 bytes, or with a space or a control
///   character, is stored under a stable hash of it (SHA-256, 128 bits), never with its
///   characters replaced (`a b` and `a_b` stay apart). A TTL over 30 days is sent as an
///   absolute time, as the protocol asks. An entry over the server's item size
///   ([`MemcachedConfig::max_item_size`]) is not sent.
/// - **Clear**: memcached cannot list its keys, and `flush_all` would empty every
///   application's data. So the keys carry a namespace generation
///   (`<namespace>:<generation>:<key>`), kept in memcached and started at a random number;
///   [`clear`](Store::clear) increments it, and the old keys, unreachable, expire. Other
///   instances read the generation again at most [`MemcachedConfig::generation_ttl`] later.
/// - **Failing open**: every command is bounded by the command timeout, and consecutive
///   failures of a server open its circuit breaker (the one `RedisStore` uses), so that
///   one server down costs only its own keys.
///
/// ```no_run
/// use tower_response_cache::CacheLayer;
/// use tower_response_cache::store::{MemcachedConfig, MemcachedStore};
///
/// # fn run() -> Result<(), tower_response_cache::StoreError> {
/// let store = MemcachedStore::new(MemcachedConfig::new(["127.0.0.1:11211"]))?;
/// let cache = CacheLayer::new(store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemcachedStore {
    inner: Arc<Inner>,
}

struct Inner {
    servers: Vec<Server>,
    namespace: String,
    codec: Arc<dyn Codec>,
    command_timeout: Duration,
    connect_timeout: Duration,
    max_item_size: usize,
    generation: Generation,
}

/// One server and its connections.
struct Server {
    /// The address connections are made to.
    dsn: String,
    /// The address as hashed for rendezvous hashing (without a scheme).
    name: String,
    connections: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
    /// Its own breaker: one server down leaves the others' keys working.
    breaker: Breaker,
}

/// The namespace generation as last read, and when.
struct Generation {
    value: AtomicU64,
    /// Milliseconds after `start` when it was read (0: never).
    read_ms: AtomicU64,
    start: Instant,
    ttl: Duration,
}

impl fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemcachedStore")
            .field(
                "servers",
                &self
                    .inner
                    .servers
                    .iter()
                    .map(|server| server.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

/// Memcached's longest key.
const MAX_KEY: usize = 250;
/// TTLs above this many seconds are absolute times in the protocol.
const RELATIVE_TTL_LIMIT: u64 = 30 * 24 * 3600;

impl MemcachedStore {
    /// A store on `config.servers`. Connections are made on first use: a server that is
    /// down at start is a failing (and so bypassed) store until it is up, never an error
    /// here. Errors only for a configuration without servers.
    pub fn new(config: MemcachedConfig) -> Result<Self, StoreError> {
        if config.servers.is_empty() {
            return Err(StoreError::new(
                StoreErrorKind::Other,
                "a memcached store needs at least one server",
            ));
        }
        let servers = config
            .servers
            .iter()
            .map(|server| {
                let name = server
                    .trim_start_matches("tcp://")
                    .trim_end_matches('/')
                    .to_owned();
                Server {
                    dsn: format!("tcp://{name}"),
                    name,
                    connections: (0..config.pool_size.max(1))
                        .map(|_| Mutex::new(None))
                        .collect(),
                    next: AtomicUsize::new(0),
                    breaker: Breaker::new(config.breaker_threshold, config.breaker_cooldown),
                }
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                servers,
                namespace: config.namespace,
                codec: config.codec,
                command_timeout: config.command_timeout,
                connect_timeout: config.connect_timeout,
                max_item_size: config.max_item_size,
                generation: Generation {
                    value: AtomicU64::new(0),
                    read_ms: AtomicU64::new(0),
                    start: Instant::now(),
                    ttl: config.generation_ttl,
                },
            }),
        })
    }

    /// How many servers' circuit breakers are open (those servers are skipped).
    pub fn open_circuits(&self) -> usize {
        self.inner
            .servers
            .iter()
            .filter(|server| server.breaker.is_open())
            .count()
    }

    /// The memcached key of `key`, in the current generation: readable when memcached
    /// takes it as it is, else a hash of it.
    pub async fn memcached_key(&self, key: &str) -> Result<String, StoreError> {
        let generation = self.generation().await?;
        Ok(self.key_in(generation, key))
    }

    fn key_in(&self, generation: u64, key: &str) -> String {
        let plain = format!("{}:{generation}:{key}", self.inner.namespace);
        if plain.len() <= MAX_KEY && plain.bytes().all(|b| b > b' ' && b != 0x7f) {
            return plain;
        }
        // Hex only: the readable part of the crate's other hashed keys may hold spaces.
        let hash = crate::key::credential_hash(key.as_bytes());
        format!("{}:{generation}:#{hash}", self.inner.namespace)
    }

    /// The key that holds the namespace generation.
    fn generation_key(&self) -> String {
        let key = format!("{}:generation", self.inner.namespace);
        if key.len() <= MAX_KEY && key.bytes().all(|b| b > b' ' && b != 0x7f) {
            key
        } else {
            self.key_in(0, "generation")
        }
    }

    /// The namespace generation: as read within `generation_ttl`, else read (and made, at
    /// a random start, when memcached has none).
    async fn generation(&self) -> Result<u64, StoreError> {
        let generation = &self.inner.generation;
        let now_ms = u64::try_from(generation.start.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let read = generation.read_ms.load(Ordering::Acquire);
        let ttl_ms = u64::try_from(generation.ttl.as_millis()).unwrap_or(u64::MAX);
        if read != 0 && now_ms.saturating_sub(read) < ttl_ms {
            return Ok(generation.value.load(Ordering::Acquire));
        }
        let key = self.generation_key();
        let current = match self
            .command(&key, async |client: &mut Client| {
                let found = client.get(key.as_bytes()).await?;
                if let Some(value) = found.and_then(|value| value.data) {
                    return Ok(value);
                }
                // The first instance sets it; whoever loses the race reads the winner's.
                let start = random_start().to_string();
                let _ = client.add(key.as_bytes(), start.as_str(), None, None).await;
                Ok(client
                    .get(key.as_bytes())
                    .await?
                    .and_then(|value| value.data)
                    .unwrap_or_else(|| start.into_bytes()))
            })
            .await
        {
            Ok(current) => current,
            // The generation's server is down: so no instance can clear meanwhile, and the
            // generation last read still holds.
            Err(_) if read != 0 => return Ok(generation.value.load(Ordering::Acquire)),
            Err(error) => return Err(error),
        };
        let value = std::str::from_utf8(&current)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        generation.value.store(value, Ordering::Release);
        generation.read_ms.store(now_ms, Ordering::Release);
        Ok(value)
    }

    /// The server `key` lives on: rendezvous hashing.
    fn server_for(&self, key: &str) -> &Server {
        self.inner
            .servers
            .iter()
            .max_by_key(|server| {
                let mut hasher = xxhash_rust::xxh3::Xxh3::new();
                hasher.update(server.name.as_bytes());
                hasher.update(b"\0");
                hasher.update(key.as_bytes());
                hasher.digest()
            })
            .expect("at least one server")
    }

    /// Runs `run` on a connection of `key`'s server, through the breaker and within the
    /// command timeout. A connection whose command failed or timed out is dropped.
    async fn command<T>(
        &self,
        key: &str,
        run: impl AsyncFnOnce(&mut Client) -> Result<T, async_memcached::Error>,
    ) -> Result<T, StoreError> {
        let inner = &self.inner;
        let server = self.server_for(key);
        if !server.breaker.allow() {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "memcached server skipped: circuit open after consecutive failures",
            ));
        }
        let slot = server.next.fetch_add(1, Ordering::Relaxed) % server.connections.len();
        let mut connection = server.connections[slot].lock().await;
        let outcome = tokio::time::timeout(inner.command_timeout + inner.connect_timeout, async {
            if connection.as_ref().is_none_or(Client::is_closed) {
                let made = tokio::time::timeout(inner.connect_timeout, Client::new(&server.dsn))
                    .await
                    .map_err(|_| {
                        StoreError::new(StoreErrorKind::Timeout, "memcached connect timed out")
                    })?
                    .map_err(memcached_error)?;
                *connection = Some(made);
            }
            let client = connection.as_mut().expect("connected above");
            tokio::time::timeout(inner.command_timeout, run(client))
                .await
                .map_err(|_| StoreError::new(StoreErrorKind::Timeout, "memcached timed out"))?
                .map_err(memcached_error)
        })
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::new(
                StoreErrorKind::Timeout,
                "memcached timed out",
            ))
        });
        match &outcome {
            Ok(_) => server.breaker.on_success(),
            Err(_) => {
                // Cut short or failed: the connection's state is unknown.
                *connection = None;
                server.breaker.on_failure();
            }
        }
        outcome
    }

    /// What a write sends: the memcached key, the encoded entry (refused when larger than
    /// the item size) and the protocol's TTL.
    async fn prepare(
        &self,
        key: &str,
        entry: &CachedResponse,
        ttl: Duration,
    ) -> Result<(String, Bytes, i64), StoreError> {
        let bytes: Bytes = self.inner.codec.encode(entry);
        if bytes.len() > self.inner.max_item_size {
            return Err(StoreError::new(
                StoreErrorKind::TooLarge,
                "entry larger than memcached's item size: not stored",
            ));
        }
        Ok((self.memcached_key(key).await?, bytes, protocol_ttl(ttl)))
    }

    fn decode(&self, bytes: &[u8]) -> Result<Arc<CachedResponse>, StoreError> {
        self.inner
            .codec
            .decode(bytes)
            .map(Arc::new)
            .map_err(|error| {
                StoreError::with_source(
                    StoreErrorKind::Decode,
                    "the value in memcached is not an entry this codec reads",
                    error,
                )
            })
    }
}

/// A TTL as memcached's protocol takes it: seconds (rounded up, so that a short TTL does
/// not become 0, "never expires"), or past 30 days an absolute Unix time.
fn protocol_ttl(ttl: Duration) -> i64 {
    let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    if seconds <= RELATIVE_TTL_LIMIT {
        return i64::try_from(seconds).unwrap_or(i64::MAX);
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    i64::try_from(now.saturating_add(seconds)).unwrap_or(i64::MAX)
}

/// A random start for a namespace generation: within 2^40, so that there is room to count
/// up and it stays readable.
fn random_start() -> u64 {
    random_id() >> 24
}

fn memcached_error(error: async_memcached::Error) -> StoreError {
    let kind = match &error {
        async_memcached::Error::Connect(_) | async_memcached::Error::ConnectionClosed => {
            StoreErrorKind::Unavailable
        }
        async_memcached::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            StoreErrorKind::Timeout
        }
        async_memcached::Error::Io(_) => StoreErrorKind::Unavailable,
        _ => StoreErrorKind::Other,
    };
    StoreError::new(kind, format!("memcached: {error}"))
}

impl Store for MemcachedStore {
    fn name(&self) -> &'static str {
        "memcached"
    }

    fn gauges(&self) -> StoreGauges {
        StoreGauges {
            open_breakers: Some(self.open_circuits() as u64),
            ..StoreGauges::default()
        }
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<CachedResponse>>> {
        Box::pin(async move {
            let key = self.memcached_key(key).await?;
            let found = self
                .command(&key, async |client: &mut Client| {
                    client.get(key.as_bytes()).await
                })
                .await?;
            match found.and_then(|value| value.data) {
                Some(bytes) => self.decode(&bytes).map(Some),
                None => Ok(None),
            }
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let (key, bytes, ttl) = self.prepare(key, &entry, ttl).await?;
            self.command(&key, async |client: &mut Client| {
                client
                    .set(key.as_bytes(), bytes.as_ref(), Some(ttl), None)
                    .await
            })
            .await
        })
    }

    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let key = self.memcached_key(key).await?;
            let removed = self
                .command(&key, async |client: &mut Client| {
                    match client.delete(key.as_bytes()).await {
                        Ok(()) => Ok(true),
                        Err(async_memcached::Error::Protocol(
                            async_memcached::Status::NotFound,
                        )) => Ok(false),
                        Err(error) => Err(error),
                    }
                })
                .await?;
            Ok(removed)
        })
    }

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

    /// `add`: atomic across instances.
    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let (key, bytes, ttl) = self.prepare(key, &entry, ttl).await?;
            self.command(&key, async |client: &mut Client| {
                match client
                    .add(key.as_bytes(), bytes.as_ref(), Some(ttl), None)
                    .await
                {
                    Ok(()) => Ok(true),
                    Err(async_memcached::Error::Protocol(async_memcached::Status::NotStored)) => {
                        Ok(false)
                    }
                    Err(error) => Err(error),
                }
            })
            .await
        })
    }

    /// Fill locks (`add` of `<key>#lock`), so that one instance fetches a missing entry
    /// and the others wait for it.
    fn coordinates_fills(&self) -> bool {
        true
    }

    fn lock_fill<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Option<FillLock>> {
        Box::pin(async move {
            let generation = self.generation().await?;
            let lock = self.key_in(generation, &format!("{key}#lock"));
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
            let generation = self.generation().await?;
            let lock_key = self.key_in(generation, &format!("{key}#lock"));
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

    /// A new namespace generation: every key of the old one is out of reach (and expires).
    fn clear(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // Made if missing, so that there is a number to count up from.
            self.generation().await?;
            let key = self.generation_key();
            let next = self
                .command(&key, async |client: &mut Client| {
                    client.increment(key.as_bytes(), 1).await
                })
                .await?;
            let generation = &self.inner.generation;
            generation.value.store(next, Ordering::Release);
            let now_ms = u64::try_from(generation.start.elapsed().as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            generation.read_ms.store(now_ms, Ordering::Release);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> MemcachedStore {
        MemcachedStore::new(MemcachedConfig::new([
            "127.0.0.1:1",
            "127.0.0.1:2",
            "127.0.0.1:3",
        ]))
        .unwrap()
    }

    #[test]
    fn keys_memcached_cannot_take_are_hashed_never_rewritten() {
        let store = store();
        assert_eq!(store.key_in(7, "GET:/a"), "trc:7:GET:/a");
        let spaced = store.key_in(7, "a b");
        let underscored = store.key_in(7, "a_b");
        assert_ne!(spaced, underscored);
        assert!(spaced.starts_with("trc:7:#") && !spaced.contains(' '));
        assert_eq!(underscored, "trc:7:a_b");
        let long = store.key_in(7, &"x".repeat(300));
        assert!(long.len() <= MAX_KEY);
        assert_ne!(long, store.key_in(7, &"x".repeat(301)));
        assert!(store.key_in(7, "tab\there").starts_with("trc:7:#"));
        assert!(store.key_in(7, "é").starts_with("trc:7:"));
    }

    #[test]
    fn ttls_over_thirty_days_are_absolute_times() {
        assert_eq!(protocol_ttl(Duration::from_secs(60)), 60);
        assert_eq!(protocol_ttl(Duration::from_millis(1500)), 2, "rounded up");
        assert_eq!(
            protocol_ttl(Duration::from_millis(1)),
            1,
            "never 0 (forever)"
        );
        let month = Duration::from_secs(RELATIVE_TTL_LIMIT);
        assert_eq!(
            protocol_ttl(month),
            i64::try_from(RELATIVE_TTL_LIMIT).unwrap()
        );
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let absolute = protocol_ttl(month + Duration::from_secs(1));
        let expected = i64::try_from(now + RELATIVE_TTL_LIMIT + 1).unwrap();
        assert!(
            (expected - 2..=expected + 2).contains(&absolute),
            "{absolute}"
        );
    }

    #[test]
    fn rendezvous_hashing_moves_only_a_removed_servers_keys() {
        let three = store();
        let two =
            MemcachedStore::new(MemcachedConfig::new(["127.0.0.1:1", "127.0.0.1:2"])).unwrap();
        let mut moved = 0;
        let mut on_third = 0;
        for i in 0..3000 {
            let key = format!("key-{i}");
            let before = three.server_for(&key).name.clone();
            let after = two.server_for(&key).name.clone();
            if before == "127.0.0.1:3" {
                on_third += 1;
            } else if before != after {
                moved += 1;
            }
        }
        assert_eq!(moved, 0, "keys of the servers that stay do not move");
        assert!((800..1200).contains(&on_third), "about a third: {on_third}");
    }

    #[test]
    fn a_store_without_servers_is_an_error() {
        assert!(MemcachedStore::new(MemcachedConfig::new(Vec::<String>::new())).is_err());
    }
}
