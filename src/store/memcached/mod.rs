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

mod control;
mod io;
mod ops;
mod store;
mod tags;

use self::io::{
    added, compare_and_swap, get_multi, micros_now, parse_number, protocol_ttl, valid_key,
};

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
/// - **Purges of keys**: the entry is deleted (or, soft, rewritten stale in place by
///   compare-and-swap, with the life it had left), after a tombstone numbered by the purge
///   counter is left under the key for an hour: another instance's fetch of the key that
///   was under way checks it before its write stands.
/// - **Ordered writes**: a fetched response is written only over an older entry
///   ([`PutIf::Newer`]), by compare-and-swap: the item read with its CAS value, its
///   `stored_at` compared, the new one set with that CAS.
/// - **Fill locks**: `add` of a lock key outside the namespace generations, released by
///   compare-and-swap only while it is still the holder's.
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
/// - **Atomic operations**: [`PutIf::Absent`] is memcached's `add`, [`PutIf::Newer`] a
///   compare-and-swap, and counters are `incr` / `decr`. Memcached counters are unsigned, so one taken below
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
