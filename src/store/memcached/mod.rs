//! [`MemcachedStore`]: entries in one or more memcached servers (feature `memcached`).

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use async_memcached::{AsciiProtocol, Client, MetaProtocol, Value};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{Mutex, Semaphore};

use self::tags::{TagRecord, Verdict};
use super::breaker::Breaker;
use super::purge::{PurgeMode, PurgeTarget};
use super::{
    Batches, Capabilities, Counters, FillLock, PutIf, SharedStore, Store, StoreError,
    StoreErrorKind, StoreFuture, StoreGauges, lock_token,
};
use crate::codec::{BINARY_PREFIX, BINARY_STORED_AT, BinaryCodec, Codec, binary_stored_at};
use crate::entry::CachedResponse;
use crate::key::CacheKey;

mod tags;

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
    /// Connections per server; commands wait, first come first served, for the first one
    /// free. Default: 8.
    pub pool_size: usize,
    /// Consecutive failures that open the circuit breaker (0: never). Default: 5.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before one command probes the servers. Default: 5 s.
    pub breaker_cooldown: Duration,
    /// The largest entry sent, encoded: memcached's item size (`-I`, 1 MiB by default)
    /// less its item header. Larger entries are not stored. Default: 1 MiB − 4 KiB.
    pub max_item_size: usize,
    /// How long an instance uses the namespace generation, the purge counter and the tag
    /// records it read before reading them again: the longest a `clear` or a tag purge by
    /// another instance takes to be seen here (this instance's own are seen at once).
    /// Zero reads them for every command. Default: 1 s.
    pub version_ttl: Duration,
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
            pool_size: 8,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(5),
            max_item_size: (1 << 20) - 4096,
            version_ttl: Duration::from_secs(1),
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
///   (`<namespace>:<generation>:<key>`), kept in memcached; [`clear`](crate::store::StoreExt::clear)
///   raises it, and the old keys, unreachable, expire. Other instances read it again at
///   most [`MemcachedConfig::version_ttl`] later.
/// - **Tag purges** (hard and soft): numbered, not listed. A purge takes a number from the
///   namespace's purge counter (`incr`) and records it in the tag's record (JSON, written
///   by compare-and-swap), per namespace it is made within. A tagged entry is stored with
///   the counter's value in front (its mark), and is checked against its tags' records as
///   it is read: a miss when a purge of one of them came after it, stale from the purge on
///   for a soft purge. An instance keeps copies of the records it read for
///   [`MemcachedConfig::version_ttl`] (its own purges at once); an entry whose tag's record
///   memcached evicted counts as purged. A tag purge cannot count what it takes: it
///   returns 0. A fetch under way during another instance's purge or clear does not write
///   back ([`SharedStore::purged_since`]).
/// - **Prefix purges** (hard and soft) the same way: every entry carries a mark, and is
///   checked against one more record, that of the namespace's prefix purges, kept beside
///   the generation and read with it in the same command (no round trip more on a hit).
///   So [`ValueCache::clear`](crate::value::ValueCache::clear),
///   [`CacheHandle::clear`](crate::CacheHandle::clear) and
///   [`StoreExt::remove_prefix`](crate::store::StoreExt::remove_prefix) work here, and count 0. The record keeps 16 prefixes apart;
///   past that, the two purged least recently merge into their common prefix, which purges
///   more, never less. A purge of the URLs under a path
///   ([`CacheHandle::invalidate_prefix`](crate::CacheHandle::invalidate_prefix)) is
///   unsupported: it selects keys by a filter, which a record cannot keep. An entry
///   without a mark (written by a version of this store before prefix purges) is a miss.
/// - **Soft purges of keys**: the entry is rewritten stale in place, by compare-and-swap,
///   with the life it had left.
/// - **Failing open**: every command is bounded by the command timeout, and consecutive
///   failures of a server open its circuit breaker (the one `RedisStore` uses), so that
///   one server down costs only its own keys.
///
/// ```no_run
/// use tower_response_cache::CacheLayer;
/// use tower_response_cache::{MemcachedConfig, MemcachedStore};
///
/// # fn run() -> Result<(), tower_response_cache::store::StoreError> {
/// let store = MemcachedStore::new(MemcachedConfig::new(["127.0.0.1:11211"]))?;
/// let cache = CacheLayer::new(store);
/// # Ok(()) }
/// ```
///
/// On `async-memcached` 0.9. `MEMCACHED=127.0.0.1:11211 cargo run --features memcached
/// --example memcached` runs the quick start on it.
///
/// # In more detail
///
/// - **Connections**: a server's pool holds [`MemcachedConfig::pool_size`] connections (8
///   by default). A command takes the first one free, and commands wait their turn in
///   order, within the command timeout.
/// - **Too large**: an entry over the item size (1 MiB by default) is counted as *not
///   stored: too-large*, not as a store error.
/// - **Clear** is never `flush_all`. Other instances see the new generation within
///   `version_ttl` (1 s). If the server holding the generation restarts empty, the
///   generation starts again higher (from a purge number), never at one used before: that
///   counts as a clear.
/// - **Tag purges**: the purging instance sees its purge at once; the others within
///   `version_ttl` (1 s; 0 reads the records on every hit of a tagged entry).
/// - **Prefix purges**: as tag purges, the purging instance at once, the others within
///   `version_ttl`; [`clear`](crate::store::StoreExt::clear) empties the store's whole namespace.
/// - **Atomic operations**: [`PutIf::Absent`] is memcached's `add`,
///   and counters are `incr` / `decr`. Memcached counters are unsigned, so one taken below
///   zero stays at zero. [Values](crate::value) work on it as on Redis.
/// - **As the shared tier of a [`TieredStore`](crate::TieredStore)**:
///   `TieredStore::with_channel(memcached, redis, config)`, with the channel on a Redis
///   (memcached has no pub/sub).
///
/// What it does beside the other stores is in the [`store`](crate::store#what-each-store-does)
/// docs.
///
/// # Tested
///
/// Against real `memcached` processes the tests start (`tests/memcached.rs`): the limits
/// above, garbage at a key (a miss, then overwritten), two servers with one down (its keys
/// miss, the other's hit), a server killed and restarted under 8 concurrent clients (no
/// request fails; hits resume), tag purges across instances and namespaces, a fill under
/// way during another instance's purge, a lost tag record, the store contract on two
/// servers and under `TieredStore`.
///
/// # Measured
///
/// `scripts/bench.sh`, `/hello` 1 KiB over HTTP, 64 connections, one server core: 24 206
/// hits/s, p50 2.5 ms, p99 4.3 ms, against 25 908 for `RedisStore`. The same run's
/// `memcaslap` (1 KiB gets, 64 connections) does 76 568 gets/s, so a memcached hit through
/// the layer runs at 0.32× of it, where a Redis hit runs at 0.43× of `redis-benchmark`. The
/// difference is pipelining: fred keeps the commands of concurrent requests in flight
/// together on a connection and writes them in batches, while `async-memcached` runs one
/// command per connection at a time (4.2 system calls per hit against Redis's 3.4). The hit
/// costs 41 549 instructions, against Redis's 56 953 and the floor's 15 315.
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
    control: Control,
    /// Tag records as last read (or written here), for `version_ttl`; bounded.
    tags: Option<moka::sync::Cache<String, Arc<TagRecord>>>,
}

/// One server and its connections.
struct Server {
    /// The address connections are made to.
    dsn: String,
    /// The address as hashed for rendezvous hashing (without a scheme).
    name: String,
    connections: Vec<Mutex<Option<Client>>>,
    /// One permit per connection not in use: commands wait here, first come first served,
    /// for whichever connection is free first.
    idle: Semaphore,
    next: AtomicUsize,
    /// Its own breaker: one server down leaves the others' keys working.
    breaker: Breaker,
}

/// The namespace's control values as last read, and when: the generation in every key,
/// the purge counter that numbers clears and purges, and the record of prefix purges that
/// every entry is checked against. All live on one server (the generation key's), read
/// together in one command; while it cannot be reached, no purge can be numbered, so the
/// values last read hold.
struct Control {
    generation: AtomicU64,
    /// The highest purge number seen.
    purges: AtomicU64,
    /// The record of prefix purges: a tag's record that every entry has.
    prefixes: RwLock<TagRecord>,
    /// Milliseconds after `start` when they were read (0: never).
    read_ms: AtomicU64,
    start: Instant,
    ttl: Duration,
}

impl Control {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The values, when read within the TTL.
    fn fresh(&self) -> Option<(u64, u64)> {
        let read = self.read_ms.load(Ordering::Acquire);
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        (read != 0 && self.now_ms().saturating_sub(read) < ttl_ms).then(|| self.last())
    }

    fn last(&self) -> (u64, u64) {
        (
            self.generation.load(Ordering::Acquire),
            self.purges.load(Ordering::Acquire),
        )
    }

    /// Records what was read (or done). Neither goes back here: both only rise in
    /// memcached, so a lower value is a read that a later one overtook (a clear made here
    /// meanwhile).
    fn seen(&self, generation: u64, purges: u64) {
        self.generation.fetch_max(generation, Ordering::AcqRel);
        self.purges.fetch_max(purges, Ordering::AcqRel);
        self.read_ms.store(self.now_ms(), Ordering::Release);
    }

    /// What `read` makes of the record of prefix purges as last read (or written here).
    fn with_prefixes<T>(&self, read: impl FnOnce(&TagRecord) -> T) -> T {
        match self.prefixes.read() {
            Ok(record) => read(&record),
            Err(poisoned) => read(&poisoned.into_inner()),
        }
    }

    /// Keeps `record` as the record of prefix purges, unless the one kept is later (a read
    /// that a purge made here overtook).
    fn seen_prefixes(&self, record: TagRecord) {
        let mut kept = match self.prefixes.write() {
            Ok(kept) => kept,
            Err(poisoned) => poisoned.into_inner(),
        };
        if record.latest() >= kept.latest() {
            *kept = record;
        }
    }
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

/// The tag records an instance keeps copies of.
const TAG_RECORDS_KEPT: u64 = 10_000;
/// How long a key's purge is recorded ([`MemcachedStore::record_key_purges`]): a fetch
/// that started before another instance purged its key, and ends within this, is caught.
const TOMBSTONE_TTL: Duration = Duration::from_secs(3600);
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
                    idle: Semaphore::new(config.pool_size.max(1)),
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
                control: Control {
                    generation: AtomicU64::new(0),
                    purges: AtomicU64::new(0),
                    prefixes: RwLock::new(TagRecord::default()),
                    read_ms: AtomicU64::new(0),
                    start: Instant::now(),
                    ttl: config.version_ttl,
                },
                tags: (!config.version_ttl.is_zero()).then(|| {
                    moka::sync::Cache::builder()
                        .max_capacity(TAG_RECORDS_KEPT)
                        .time_to_live(config.version_ttl)
                        .build()
                }),
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
        if valid_key(&plain) {
            return plain;
        }
        // Hex only: the readable part of the crate's other hashed keys may hold spaces.
        let hash = crate::key::credential_hash(key.as_bytes());
        format!("{}:{generation}:#{hash}", self.inner.namespace)
    }

    /// The memcached key of what this store keeps about `key` as `kind` (its fill lock, its
    /// tombstone): outside every generation, and a form no entry key takes.
    fn key_aside(&self, kind: &str, key: &str) -> String {
        let plain = format!("{}#{kind}:{key}", self.inner.namespace);
        if valid_key(&plain) {
            return plain;
        }
        let hash = crate::key::credential_hash(key.as_bytes());
        format!("{}#{kind}#{hash}", self.inner.namespace)
    }

    /// The key of a control value (`generation`, `purges`): outside every generation.
    fn control_key(&self, name: &str) -> String {
        let key = format!("{}:{name}", self.inner.namespace);
        if valid_key(&key) {
            key
        } else {
            let hash = crate::key::credential_hash(self.inner.namespace.as_bytes());
            format!("#{hash}:{name}")
        }
    }

    /// The server of the control values: the generation key's.
    fn control_server(&self) -> &Server {
        self.server_for(&self.control_key("generation"))
    }

    /// The namespace generation (the number in every key).
    async fn generation(&self) -> Result<u64, StoreError> {
        Ok(self.control(false).await?.0)
    }

    /// The generation and the purge counter: as read within `version_ttl` (unless `fresh`),
    /// else read from memcached, both in one command — or, while their server cannot be
    /// reached, as last read (no clear or purge can be numbered meanwhile). Made when missing: the counter at
    /// the current time in microseconds, so that it keeps rising across a restart of its
    /// server and a purge number is never given twice; the generation at a purge number,
    /// so that it never goes back to one whose keys may still be on the other servers,
    /// and a new generation is seen as a purge by fetches that started before it.
    async fn control(&self, fresh: bool) -> Result<(u64, u64), StoreError> {
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
    async fn next_purge(&self) -> Result<u64, StoreError> {
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
    fn tag_key(&self, generation: u64, tag: &str) -> String {
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
    async fn tag_records(
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
    async fn read_items(
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
    fn keep_copy(&self, key: &str, record: &Arc<TagRecord>) {
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
    async fn make_tag_records(
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
    async fn verdict(
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
    async fn purge_record(
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

    /// The server `key` lives on: rendezvous hashing.
    fn server_for(&self, key: &str) -> &Server {
        &self.inner.servers[self.server_index(key)]
    }

    /// The index of the server `key` lives on: the highest `xxh3(server, key)`.
    fn server_index(&self, key: &str) -> usize {
        if self.inner.servers.len() == 1 {
            return 0;
        }
        (0..self.inner.servers.len())
            .max_by_key(|&i| {
                let mut hasher = xxhash_rust::xxh3::Xxh3::new();
                hasher.update(self.inner.servers[i].name.as_bytes());
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
        self.command_on(self.server_for(key), run).await
    }

    /// [`command`](Self::command) on `server`.
    async fn command_on<T>(
        &self,
        server: &Server,
        run: impl AsyncFnOnce(&mut Client) -> Result<T, async_memcached::Error>,
    ) -> Result<T, StoreError> {
        let inner = &self.inner;
        if !server.breaker.allow() {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "memcached server skipped: circuit open after consecutive failures",
            ));
        }
        // A free connection, waiting (within the command timeout) while all are in use. The
        // permit is released after the connection (declared first, dropped last), so that
        // a permit always finds one unlocked.
        let Ok(permit) = tokio::time::timeout(inner.command_timeout, server.idle.acquire()).await
        else {
            // Congestion here, not a fault of the server: the breaker is left alone.
            return Err(StoreError::new(
                StoreErrorKind::Timeout,
                "no memcached connection free within the command timeout",
            ));
        };
        let _permit = permit.expect("the semaphore is never closed");
        let count = server.connections.len();
        let start = server.next.fetch_add(1, Ordering::Relaxed);
        let free = (0..count).find_map(|i| server.connections[(start + i) % count].try_lock().ok());
        let mut connection = match free {
            Some(connection) => connection,
            None => server.connections[start % count].lock().await,
        };
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

    /// What a write of `entry` sends: refused when larger than the item size. The entry goes
    /// with the purge counter's value in front (its mark), after the records it is checked
    /// against are made. A tagged entry's mark is the counter as it is now; an untagged
    /// one's, as read within `version_ttl` (no round trip on most writes): a mark that
    /// lags only makes an entry look older to the purges, never younger.
    async fn prepare(
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
    async fn entry_of(
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
    async fn soften_key(&self, key: &str) -> Result<bool, StoreError> {
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
                let Some(soft) = super::purge::softened(&entry, now) else {
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

    fn decode(&self, bytes: &Bytes) -> Result<Arc<CachedResponse>, StoreError> {
        super::decode_shared(&*self.inner.codec, bytes, "memcached")
    }
}

impl MemcachedStore {
    /// `set`: the entry replaces whatever the key holds.
    async fn put_always(
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
    async fn put_absent(
        &self,
        key: &str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let write = self.prepare(key, &entry, ttl).await?;
        self.command(&write.key, async |client: &mut Client| {
            added(
                client
                    .add(
                        write.key.as_bytes(),
                        write.bytes.as_ref(),
                        Some(write.ttl),
                        Some(write.flags),
                    )
                    .await,
            )
        })
        .await
    }

    /// [`PutIf::Newer`] by compare-and-swap (meta protocol): the item read with its CAS
    /// value, its `stored_at` compared, and the new entry set only with that CAS (or added,
    /// when there was none); read again while other writers come between. Atomic whichever
    /// instance writes: an older entry never replaces a newer one.
    async fn put_newer(
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
                        let added = added(
                            client
                                .add(
                                    write.key.as_bytes(),
                                    write.bytes.as_ref(),
                                    Some(write.ttl),
                                    Some(write.flags),
                                )
                                .await,
                        )?;
                        if added {
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
    fn holds_newer(&self, data: &[u8], flags: u32, entry: &CachedResponse) -> bool {
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
    async fn record_key_purges(&self, keys: &[String]) -> Result<(), StoreError> {
        let number = self.next_purge().await?;
        let recorded = keys.iter().filter(|key| {
            let base = CacheKey::without_slot(key);
            base == key.as_str() || !keys.iter().any(|other| other == base)
        });
        let ttl = protocol_ttl(TOMBSTONE_TTL);
        for key in recorded {
            let tombstone = self.key_aside("purged", key);
            self.command(&tombstone, async |client: &mut Client| {
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

    /// Whether `key` (or the URL whose variant slot it is) was purged after `mark`, by its
    /// tombstone.
    async fn key_purged_since(&self, mark: u64, key: &str) -> Result<bool, StoreError> {
        let base = CacheKey::without_slot(key);
        let mut tombstones = vec![self.key_aside("purged", key)];
        if base != key {
            tombstones.push(self.key_aside("purged", base));
        }
        let read = self.read_items(&tombstones, 0..tombstones.len()).await?;
        Ok(read.iter().any(|(_, item)| {
            item.data
                .as_deref()
                .and_then(parse_number)
                .is_some_and(|number| number > mark)
        }))
    }

    /// `delete`; whether there was an item.
    async fn remove_key(&self, key: &str) -> Result<bool, StoreError> {
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
    async fn clear_generation(&self) -> Result<(), StoreError> {
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
struct Write {
    /// The memcached key.
    key: String,
    bytes: Bytes,
    /// [`MARKED`] or 0.
    flags: u32,
    /// As the protocol takes it.
    ttl: i64,
}

/// The item flag of an entry stored with its purge mark in front.
const MARKED: u32 = 1;
/// The bytes of a purge mark (big-endian `u64`).
const MARK_LEN: usize = 8;

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

/// Rewrites the item under `key` by compare-and-swap (meta protocol): `change` gets its
/// bytes (`None` when there is none) and returns what to write, or `None` to leave it as
/// it is. Read again while other writers come between, 16 times at most: `Ok(false)` when
/// they always did.
async fn compare_and_swap(
    client: &mut Client,
    key: &str,
    ttl: Option<i64>,
    mut change: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
) -> Result<bool, async_memcached::Error> {
    let ttl_flag = ttl.map(|ttl| format!("T{ttl}"));
    for _ in 0..16 {
        let current = client
            .meta_get(key.as_bytes(), false, None, Some(&["v", "c"]))
            .await?;
        let Some(bytes) = change(current.as_ref().and_then(|item| item.data.as_deref())) else {
            return Ok(true);
        };
        let Some(current) = current else {
            if added(
                client
                    .add(key.as_bytes(), bytes.as_slice(), ttl, None)
                    .await,
            )? {
                return Ok(true);
            }
            continue;
        };
        let cas = format!("C{}", current.cas.unwrap_or_default());
        let flags: Vec<&str> = std::iter::once(cas.as_str())
            .chain(ttl_flag.as_deref())
            .collect();
        match client
            .meta_set(key.as_bytes(), bytes.as_slice(), false, None, Some(&flags))
            .await
        {
            Ok(_) => return Ok(true),
            // Changed or removed since it was read: read again.
            Err(async_memcached::Error::Protocol(
                async_memcached::Status::Exists | async_memcached::Status::NotFound,
            )) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(false)
}

/// The items found under `keys` (the client reports none found as an error).
async fn get_multi(
    client: &mut Client,
    keys: &[&str],
) -> Result<Vec<Value>, async_memcached::Error> {
    match client.get_multi(keys).await {
        Err(async_memcached::Error::Protocol(async_memcached::Status::NotFound)) => Ok(Vec::new()),
        found => found,
    }
}

/// Whether memcached takes `key` as it is.
fn valid_key(key: &str) -> bool {
    key.len() <= MAX_KEY && key.bytes().all(|b| b > b' ' && b != 0x7f)
}

/// Now, in microseconds since the Unix epoch: where control values start.
fn micros_now() -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.as_micros()).unwrap_or(u64::MAX)
}

/// A whole number memcached keeps as text.
fn parse_number(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// `Ok(true)` when stored, `Ok(false)` for memcached's `NOT_STORED` (`add` of a key
/// present).
fn added(result: Result<(), async_memcached::Error>) -> Result<bool, async_memcached::Error> {
    match result {
        Ok(()) => Ok(true),
        Err(async_memcached::Error::Protocol(async_memcached::Status::NotStored)) => Ok(false),
        Err(error) => Err(error),
    }
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
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            touch: true,
            prefix_purges: true,
            tag_purges: true,
            soft_purges: true,
            fill_locks: true,
            ..Capabilities::new("memcached")
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

    fn gauges(&self) -> StoreGauges {
        StoreGauges {
            open_breakers: Some(self.open_circuits() as u64),
            ..StoreGauges::default()
        }
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<CachedResponse>>> {
        Box::pin(async move {
            let generation = self.generation().await?;
            let key_in = self.key_in(generation, key);
            let found = self
                .command(&key_in, async |client: &mut Client| {
                    client.get(key_in.as_bytes()).await
                })
                .await?;
            match found {
                Some(Value {
                    data: Some(data),
                    flags,
                    ..
                }) => {
                    self.entry_of(generation, key, Bytes::from(data), flags.unwrap_or(0))
                        .await
                }
                _ => Ok(None),
            }
        })
    }

    /// `set` for [`PutIf::Always`], `add` for [`PutIf::Absent`], compare-and-swap for
    /// [`PutIf::Newer`]: atomic across instances.
    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
        condition: PutIf,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            match condition {
                PutIf::Always => self.put_always(key, entry, ttl).await.map(|()| true),
                PutIf::Absent => self.put_absent(key, entry, ttl).await,
                PutIf::Newer => self.put_newer(key, entry, ttl).await,
            }
        })
    }

    /// Meta get with a new TTL (`mg <key> T<ttl> t`): the entry's life from now, without
    /// reading it; a missing one is not revived.
    fn touch<'a>(
        &'a self,
        key: &'a str,
        tags: &'a [String],
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        let _ = tags;
        Box::pin(async move {
            let key = self.memcached_key(key).await?;
            let ttl = format!("T{}", protocol_ttl(ttl));
            self.command(&key, async |client: &mut Client| {
                // `t` asks for the TTL back, so that a hit answers with a value.
                let found = client
                    .meta_get(key.as_bytes(), false, None, Some(&[ttl.as_str(), "t"]))
                    .await?;
                Ok(found.is_some())
            })
            .await
        })
    }

    /// Keys (hard: removed; soft: made stale in place, by compare-and-swap), tags (a
    /// numbered purge in the tag's record, applied as entries are read: hard or soft) and
    /// prefixes (the same, in the record every entry is checked against: a miss from then
    /// on here, within `version_ttl` on other instances). Memcached cannot list its keys,
    /// so a tag or prefix purge cannot count what it takes: it returns 0. Everything: a new
    /// namespace generation, numbered by a purge (hard only). A prefix purge with a filter
    /// (a purge of the URLs under a path) is [`StoreErrorKind::Unsupported`]: a filter
    /// cannot be kept in a record.
    fn purge<'a>(&'a self, target: PurgeTarget<'a>, mode: PurgeMode) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            match (target, mode) {
                (PurgeTarget::Keys(keys), PurgeMode::Hard) => {
                    self.record_key_purges(keys).await?;
                    let mut removed = 0;
                    for key in keys {
                        removed += u64::from(self.remove_key(key).await?);
                    }
                    Ok(removed)
                }
                (PurgeTarget::Keys(keys), PurgeMode::Soft) => {
                    self.record_key_purges(keys).await?;
                    let mut softened = 0;
                    for key in keys {
                        softened += u64::from(self.soften_key(key).await?);
                    }
                    Ok(softened)
                }
                (PurgeTarget::Tag { tag, within }, mode) => {
                    self.purge_record(Some(tag), within, mode).await?;
                    Ok(0)
                }
                (
                    PurgeTarget::Prefix {
                        prefix,
                        filter: None,
                    },
                    mode,
                ) => {
                    self.purge_record(None, prefix, mode).await?;
                    Ok(0)
                }
                (PurgeTarget::Prefix { .. }, _) => Err(StoreError::unsupported(
                    "filtered prefix purges (memcached cannot list its keys)",
                )),
                (PurgeTarget::All, PurgeMode::Hard) => {
                    self.clear_generation().await?;
                    Ok(0)
                }
                (PurgeTarget::All, PurgeMode::Soft) => {
                    Err(StoreError::unsupported("soft purges of everything"))
                }
            }
        })
    }
}

impl SharedStore for MemcachedStore {
    /// [`MemcachedConfig::version_ttl`].
    fn purge_lag(&self) -> Duration {
        self.inner.control.ttl
    }

    /// The purge counter as last read here (`None` before it was ever read).
    fn purge_mark(&self) -> Option<u64> {
        let control = &self.inner.control;
        (control.read_ms.load(Ordering::Acquire) != 0).then(|| control.last().1)
    }

    /// Read from memcached, not from this instance's copies: a clear (a generation
    /// numbered above `mark`), or a purge above `mark` in the prefix purges' record, in the
    /// key's tombstone (purges of keys, kept an hour) or in the record of one of `tags`.
    fn purged_since<'a>(
        &'a self,
        mark: u64,
        key: &'a str,
        tags: &'a [String],
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let (generation, _) = self.control(true).await?;
            if generation > mark {
                return Ok(true);
            }
            let control = &self.inner.control;
            if control.with_prefixes(|record| record.purged_since(key, mark)) {
                return Ok(true);
            }
            if self.key_purged_since(mark, key).await? {
                return Ok(true);
            }
            let records = self.tag_records(generation, tags, false).await?;
            // A record missing holds no purge: a purge makes the record it finds missing
            // (and reads that find none take the entry as purged).
            Ok(records.iter().any(|record| {
                record
                    .as_deref()
                    .is_some_and(|record| record.purged_since(key, mark))
            }))
        })
    }

    /// `add` of the key's lock, with the lock's TTL: taken by one instance at a time. The
    /// lock is outside the namespace generations, so that instances whose copies of the
    /// generation differ for a while (after a clear) still share it.
    fn lock_fill<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Option<FillLock>> {
        Box::pin(async move {
            let lock = self.key_aside("lock", key);
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
            let lock_key = self.key_aside("lock", key);
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
}

impl Counters for MemcachedStore {
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
}

impl Batches for MemcachedStore {
    /// One `get` of many keys per server; an entry the codec cannot read is `None`, as a
    /// miss.
    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> StoreFuture<'a, Vec<Option<Arc<CachedResponse>>>> {
        Box::pin(async move {
            let generation = self.generation().await?;
            let keys_in: Vec<String> = keys
                .iter()
                .map(|key| self.key_in(generation, key))
                .collect();
            let mut found: Vec<Option<Arc<CachedResponse>>> = vec![None; keys.len()];
            for (i, item) in self.read_items(&keys_in, 0..keys.len()).await? {
                let (Some(data), flags) = (item.data, item.flags.unwrap_or(0)) else {
                    continue;
                };
                found[i] = match self
                    .entry_of(generation, &keys[i], Bytes::from(data), flags)
                    .await
                {
                    Err(error) if error.kind() == StoreErrorKind::Decode => None,
                    result => result?,
                };
            }
            Ok(found)
        })
    }

    /// One write after another (memcached has no multi-set).
    fn put_many<'a>(
        &'a self,
        entries: &'a [(String, Arc<CachedResponse>, Duration)],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            for (key, entry, ttl) in entries {
                self.put_always(key, Arc::clone(entry), *ttl).await?;
            }
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
