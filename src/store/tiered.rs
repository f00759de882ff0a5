//! [`TieredStore`]: a per-instance [`MemoryStore`] (L1) in front of a shared store (L2),
//! kept coherent across instances through a Redis pub/sub channel.
//!
//! Every change an instance makes — a write, a removal, a purge of keys, a prefix or a tag,
//! a clear — evicts its own L1 copies at once and is published on the channel; the other
//! instances evict theirs as the message arrives. An instance publishes a heartbeat on the
//! same channel and listens for its own: while its heartbeats come back, every message
//! published before them has arrived too (Redis delivers a channel's messages in order on
//! a connection). When they stop coming back — the subscriber disconnected, the channel
//! lags, Redis restarted or was flushed — L1 is emptied and bypassed until a heartbeat sent
//! after the doubt began comes back: doubt costs speed, never correctness.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use fred::interfaces::{ClientLike, EventInterface, KeysInterface, PubsubInterface};
use fred::types::{Expiration, SetOptions, Value};

use super::memory::MemoryStore;
use super::purge::{PurgeMode, PurgeTarget};
use super::redis::RedisStore;
use super::{
    Batches, Capabilities, Counters, FillLock, FlushListener, FlushReason, L1Flushes, Listeners,
    Lookup, PutIf, SharedStore, Store, StoreError, StoreErrorKind, StoreExt, StoreFuture,
    StoreGauges, StoreListener, random_id,
};
use crate::entry::CachedResponse;

/// The settings of a [`TieredStore`]; build one with struct-update syntax over
/// [`TieredConfig::default`].
#[derive(Clone, Debug)]
pub struct TieredConfig {
    /// The bytes each instance's L1 holds at most. Default: 64 MiB.
    pub l1_capacity: u64,
    /// The longest an entry stays in L1 (and never longer than it stays in L2): the bound
    /// on an L1 copy's life whatever the channel does. Default: 60 s.
    pub l1_max_ttl: Duration,
    /// How often an instance publishes its heartbeat (and checks that Redis was not
    /// flushed). Default: 100 ms.
    pub heartbeat: Duration,
    /// How long after its last heartbeat came back an instance still answers from L1:
    /// past it, L1 is emptied and bypassed until the channel is confirmed again. The worst
    /// case for an invalidation the channel lost is an L1 copy served this long after it
    /// (plus the heartbeat's own round trip). Default: 500 ms.
    pub max_staleness: Duration,
    /// How the channel is carried. Default: [`ChannelMode::Auto`] — sharded on a cluster.
    pub channel: ChannelMode,
}

/// How a [`TieredStore`]'s invalidation channel is carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelMode {
    /// Sharded on a Redis Cluster, classic on a single server (where both are the same).
    /// A cluster that does not know sharded pub/sub (before Redis 7) gets classic, with a
    /// warning.
    #[default]
    Auto,
    /// `PUBLISH` / `SUBSCRIBE`. On a cluster, every message is sent to every node over the
    /// cluster bus, whichever node the instances use.
    Classic,
    /// `SPUBLISH` / `SSUBSCRIBE` (Redis 7): messages stay in the shard that owns the
    /// channel's slot (its primary and replicas). Every instance's subscriber connects to
    /// that shard; a failover or a slot move ends the subscriptions, which are made again
    /// (L1 is bypassed meanwhile, as for any doubt).
    Sharded,
}

impl Default for TieredConfig {
    fn default() -> Self {
        Self {
            l1_capacity: 64 << 20,
            l1_max_ttl: Duration::from_secs(60),
            heartbeat: Duration::from_millis(100),
            max_staleness: Duration::from_millis(500),
            channel: ChannelMode::Auto,
        }
    }
}

/// A per-instance [`MemoryStore`] (L1) in front of a shared store (L2: a [`RedisStore`],
/// or with [`with_channel`](Self::with_channel) another, such as a
/// [`MemcachedStore`](crate::MemcachedStore), with the channel on a Redis), coherent
/// across every instance that shares the L2 and its namespace.
///
/// - An L1 hit is answered in place, as a memory hit: no network, no decoding.
/// - A miss in L1 reads L2; what it finds is copied into L1 for at most
///   `min(its remaining life, l1_max_ttl)` — unless an invalidation arrived meanwhile, so
///   that a read racing a purge never puts the older entry into L1.
/// - Writes go to L2, then to this instance's L1; removals and purges (keys, prefixes,
///   tags, clear; hard or soft — L1 copies are dropped either way) go to L2 and evict from
///   L1. Each is published so that every other instance evicts its copies too, within the
///   channel's latency.
/// - While the channel is in doubt — the subscriber reconnected or lags, this instance's
///   heartbeats do not come back within `max_staleness`, Redis lost its data (flushed,
///   restarted empty) — L1 is empty and bypassed: requests read L2, until a heartbeat sent
///   after the doubt began comes back. [`TieredConfig::max_staleness`] bounds how long an L1 copy can be
///   served after an invalidation the channel lost.
///
/// Fill locks, the purge log and store errors are L2's. An L2 that may answer as before
/// another instance's purge for a while ([`SharedStore::purge_lag`]: memcached's copies of its
/// tag records) is not copied into L1 for that long after such a purge arrives. Needs the
/// `redis` feature.
///
/// ```no_run
/// use tower_response_cache::{RedisStore, TieredConfig, TieredStore};
/// use tower_response_cache::CacheLayer;
///
/// # async fn run() -> Result<(), tower_response_cache::store::StoreError> {
/// let redis = RedisStore::connect_url("redis://127.0.0.1:6379").await?;
/// let store = TieredStore::connect(redis, TieredConfig::default()).await?;
/// let cache = CacheLayer::new(store);
/// # Ok(()) }
/// ```
///
/// When to choose it over the other stores, and what it costs, is in the
/// [`store`](crate::store#choosing-a-store) docs.
///
/// # How it stays coherent
///
/// - Every write, removal and purge (key, prefix, tag, clear; hard or soft) evicts this
///   instance's L1 copies before the call returns. It is then published on a channel per
///   namespace (`<namespace>:#l1`); every other instance evicts its copies as the message
///   arrives (3–9 ms in the tests, standalone and cluster).
/// - A read from L2 does not fill L1 when an invalidation arrived while the read was under
///   way. L1 keeps an entry at most `min(its remaining life, l1_max_ttl)` (60 s).
/// - Each instance publishes a heartbeat every 100 ms ([`TieredConfig::heartbeat`]) and
///   listens for its own. The channel is in doubt when the subscriber reconnects (messages
///   may have been lost), when it lags, when a heartbeat has not come back for
///   `max_staleness` (500 ms), or when the generation marker in Redis is gone (`FLUSHALL`,
///   a restart without data). While the channel is in doubt, L1 is emptied and bypassed,
///   and requests read Redis. L1 is used again once a heartbeat sent after the doubt comes
///   back.
/// - **The bound**: an L1 copy is never served more than `max_staleness` after the last
///   heartbeat that proved the channel delivered everything before it. So an invalidation
///   the channel loses is honoured within `max_staleness` plus one heartbeat round trip.
///   Doubt costs speed, never correctness. [`flushes()`](Self::flushes) (and the metric
///   `http_cache_l1_flushes_total`) count the emptyings by reason. The stats count
///   `l1_hits` and `l2_hits`.
///
/// # Redis Cluster
///
/// The channel is sharded pub/sub (`SPUBLISH` / `SSUBSCRIBE`, Redis 7) by default
/// ([`TieredConfig::channel`], [`ChannelMode::Auto`]). Its messages stay in the shard that
/// owns the channel's slot: in the tests' 3-primary cluster, 50 invalidations and their
/// heartbeats sent 0 messages over the cluster bus, against 326 with classic pub/sub, which
/// every node relays to every other. Both delivered each invalidation to the other
/// instance's L1 in about the same time (50 round trips of fill, L1 hit, purge and arrival:
/// 1.67 s sharded, 1.54 s classic). Every instance's subscriber connects to that one shard.
/// When its primary fails over, the subscriptions end with the connections: L1 is emptied
/// and bypassed, and the channel is subscribed again on the promoted replica. The test
/// kills that primary and checks the L1 comes back coherent. [`ChannelMode::Classic`]
/// spreads subscribers over the nodes instead, at one bus message per node per
/// invalidation and heartbeat. A cluster before Redis 7 falls back to classic, with a
/// warning. Every other command is cluster-safe (single-key, or `SCAN` per primary).
///
/// # Memcached as L2
///
/// [`TieredStore::with_channel(memcached, redis, config)`](Self::with_channel) keeps the
/// entries, purges and fill locks in memcached and carries only the channel and its
/// heartbeats through Redis (memcached has no pub/sub), with the same doubt and the same
/// bound. A memcached store may read its copy of a tag record or generation for
/// `version_ttl` after another instance's purge. For that long after a purge arrives on the
/// channel, what L2 answers is not copied into L1 ([`SharedStore::purge_lag`]), so an entry
/// purged elsewhere is never pinned in L1 by a lagging read.
///
/// # Tested
///
/// Three instances per test, on a standalone server and on the 3-primary cluster: purges,
/// overwrites, tags, clear, a cut subscriber, `FLUSHALL`, Redis killed under load; on the
/// cluster, a sharded channel that crosses no bus and survives its primary's failover.
#[derive(Clone)]
pub struct TieredStore {
    inner: Arc<Tiered>,
}

struct Tiered {
    l1: MemoryStore,
    /// The shared store: a `RedisStore`, or another ([`TieredStore::with_channel`]).
    l2: Arc<dyn Store>,
    /// The Redis that carries the channel (L2 itself for [`TieredStore::connect`]).
    redis: RedisStore,
    l1_max_ttl: Duration,
    channel: Arc<Channel>,
    health: Arc<Health>,
    /// This instance's id in messages: its own are not applied twice.
    id: u64,
    /// The subscriber (its own connection) and the background tasks: ended with the last
    /// handle.
    subscriber: fred::clients::Client,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Tiered {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let subscriber = self.subscriber.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = subscriber.quit().await;
            });
        }
    }
}

impl fmt::Debug for TieredStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TieredStore")
            .field("l1", &self.inner.l1)
            .field("l2", &self.inner.l2)
            .field("channel", &self.inner.channel.name)
            .field("sharded", &self.inner.channel.sharded())
            .field("l1_in_use", &self.inner.health.usable())
            .finish_non_exhaustive()
    }
}

/// Whether L1 may be used, and what invalidated it.
struct Health {
    start: Instant,
    max_staleness_ms: u64,
    /// Milliseconds after `start` when this instance's last confirmed heartbeat came back
    /// (0: never).
    confirmed_ms: AtomicU64,
    /// Cleared when the channel is in doubt; set again by a heartbeat sent after.
    trusted: AtomicBool,
    /// The heartbeat number before which none confirms the channel (those sent before the
    /// doubt began).
    doubt_from: AtomicU64,
    /// The heartbeats sent so far.
    sent: AtomicU64,
    /// Advanced by every invalidation that may concern any key (a prefix, a tag, a clear,
    /// a doubt): a copy read from L2 before it is not put into L1.
    epoch: AtomicU64,
    /// The same per stripe of keys, advanced by an invalidation of one key: a write of one
    /// key does not keep every other key's reads out of L1.
    stripes: Box<[AtomicU64]>,
    flushes: FlushCounters,
    /// How long L2 may still answer as before another instance's purge
    /// ([`SharedStore::purge_lag`]).
    l2_lag_ms: u64,
    /// When the last purge of another instance that may concern any key arrived
    /// (milliseconds after `start`; 0: none).
    remote_purge_ms: AtomicU64,
    /// Told of each flush ([`StoreListener::Flushes`]).
    listeners: Listeners<FlushListener>,
    l1: MemoryStore,
}

#[derive(Default)]
struct FlushCounters {
    reconnected: AtomicU64,
    heartbeat: AtomicU64,
    lagged: AtomicU64,
    flushed: AtomicU64,
    cleared: AtomicU64,
}

impl Health {
    /// Nothing confirmed yet: L1 unused until the first heartbeat comes back.
    fn new(l1: MemoryStore, max_staleness: Duration, l2_lag: Duration) -> Self {
        Self {
            l2_lag_ms: u64::try_from(l2_lag.as_millis()).unwrap_or(u64::MAX),
            remote_purge_ms: AtomicU64::new(0),
            start: Instant::now(),
            max_staleness_ms: u64::try_from(max_staleness.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            confirmed_ms: AtomicU64::new(0),
            trusted: AtomicBool::new(false),
            doubt_from: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            flushes: FlushCounters::default(),
            listeners: Listeners::default(),
            l1,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Whether L1 may answer now: trusted, and a heartbeat came back recently.
    fn usable(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
            && self
                .now_ms()
                .saturating_sub(self.confirmed_ms.load(Ordering::Acquire))
                <= self.max_staleness_ms
    }

    /// The channel is in doubt: L1 is emptied, and not used until a heartbeat sent from now
    /// on comes back.
    fn doubt(&self, why: FlushReason) {
        let counter = match why {
            FlushReason::Reconnected => &self.flushes.reconnected,
            FlushReason::Heartbeat => &self.flushes.heartbeat,
            FlushReason::Lagged => &self.flushes.lagged,
            FlushReason::Flushed => &self.flushes.flushed,
            FlushReason::Cleared => &self.flushes.cleared,
        };
        self.doubt_from
            .store(self.sent.load(Ordering::Acquire), Ordering::Release);
        let was_trusted = self.trusted.swap(false, Ordering::AcqRel);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.l1.clear_now();
        if was_trusted {
            counter.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                reason = why.as_str(),
                "tiered cache: the invalidation channel is in doubt; the memory tier is emptied and bypassed until it is confirmed"
            );
            self.tell(why);
        }
    }

    /// Another instance cleared the cache: L1 is emptied.
    fn cleared(&self) {
        self.l1.clear_now();
        self.flushes.cleared.fetch_add(1, Ordering::Relaxed);
        self.tell(FlushReason::Cleared);
    }

    /// Tells the listeners of a flush.
    fn tell(&self, reason: FlushReason) {
        self.listeners.tell(|listener| listener(reason));
    }

    /// Heartbeat `number` of this instance came back: the channel delivered everything
    /// published before it.
    fn confirmed(&self, number: u64) {
        if number <= self.doubt_from.load(Ordering::Acquire) {
            // Sent before the doubt began: it proves nothing about the channel since.
            return;
        }
        let now = self.now_ms();
        let previous = self.confirmed_ms.swap(now, Ordering::AcqRel);
        if self.trusted.load(Ordering::Acquire)
            && now.saturating_sub(previous) > self.max_staleness_ms
        {
            // A gap no doubt covered (the heartbeat task itself ran late): L1 was not used
            // during it, and what it holds may have missed an invalidation.
            self.doubt(FlushReason::Heartbeat);
            self.doubt_from.store(number - 1, Ordering::Release);
            self.confirmed_ms.store(now, Ordering::Release);
        }
        if !self.trusted.load(Ordering::Acquire) {
            self.trusted.store(true, Ordering::Release);
        }
    }

    /// An invalidation that may concern any key is under way or arrived.
    fn invalidated(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Another instance's purge of a tag or a prefix, or its clear, arrived: L2 may answer
    /// as before it for [`SharedStore::purge_lag`].
    fn purged_elsewhere(&self) {
        self.remote_purge_ms.store(self.now_ms(), Ordering::Release);
    }

    /// Whether L2 may still answer as before another instance's purge: what it answers is
    /// not copied into L1 meanwhile.
    fn l2_lags(&self) -> bool {
        let at = self.remote_purge_ms.load(Ordering::Acquire);
        at != 0 && self.now_ms().saturating_sub(at) < self.l2_lag_ms
    }

    fn stripe(&self, key: &str) -> &AtomicU64 {
        let hash = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
        &self.stripes[(hash % self.stripes.len() as u64) as usize]
    }

    /// An invalidation of `key` is under way or arrived.
    fn invalidated_key(&self, key: &str) {
        self.stripe(key).fetch_add(1, Ordering::AcqRel);
    }

    /// Where invalidations of `key` stand: taken before reading it from L2.
    fn epoch_of(&self, key: &str) -> Epoch {
        Epoch {
            all: self.epoch.load(Ordering::Acquire),
            key: self.stripe(key).load(Ordering::Acquire),
        }
    }

    /// Puts `entry`, read from L2 when invalidations stood at `epoch`, into L1 for at most
    /// `min(its remaining life, max_ttl)` unless L1 holds a newer one — and unless an invalidation of it began since, or L1
    /// is not in use. Checked again after the write, which is undone if one began meanwhile.
    async fn fill(&self, key: &str, entry: &Arc<CachedResponse>, epoch: Epoch, max_ttl: Duration) {
        let unchanged = || self.epoch_of(key) == epoch && self.usable() && !self.l2_lags();
        if !unchanged() {
            return;
        }
        let lived = SystemTime::now()
            .duration_since(entry.stored_at)
            .unwrap_or_default();
        let ttl = entry.storage_ttl().saturating_sub(lived).min(max_ttl);
        if ttl.is_zero() {
            return;
        }
        // Never over a newer copy: two writes of the key on this instance may fill L1 in
        // the other order than they reached L2.
        let _ = self.l1.put(key, Arc::clone(entry), ttl, PutIf::Newer).await;
        if !unchanged() {
            let _ = self.l1.remove(key).await;
        }
    }
}

/// Where invalidations stood ([`Health::epoch_of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Epoch {
    all: u64,
    key: u64,
}

/// The invalidation channel: its name, and whether it is sharded.
#[derive(Debug)]
struct Channel {
    name: String,
    /// Cleared when [`ChannelMode::Auto`] finds that the cluster has no sharded pub/sub.
    sharded: AtomicBool,
}

impl Channel {
    fn sharded(&self) -> bool {
        self.sharded.load(Ordering::Relaxed)
    }

    async fn publish<C: PubsubInterface + Sync>(
        &self,
        client: &C,
        message: String,
    ) -> Result<i64, fred::error::Error> {
        if self.sharded() {
            client.spublish(self.name.as_str(), message).await
        } else {
            client.publish(self.name.as_str(), message).await
        }
    }

    /// Subscribes `subscriber` (again: it is harmless when subscribed already).
    async fn subscribe(
        &self,
        subscriber: &fred::clients::Client,
    ) -> Result<(), fred::error::Error> {
        if self.sharded() {
            subscriber.ssubscribe(self.name.as_str()).await
        } else {
            subscriber.subscribe(self.name.as_str()).await
        }
    }
}

/// Whether `error` is Redis not knowing a command.
fn unknown_command(error: &fred::error::Error) -> bool {
    error
        .details()
        .to_ascii_lowercase()
        .contains("unknown command")
}

/// Stripes of keys with an invalidation count each.
const STRIPES: usize = 1024;

/// What a message asks the other instances to evict from L1.
#[derive(Debug, PartialEq, Eq)]
enum Evict<'a> {
    Key(&'a str),
    Prefix(&'a str),
    Tag(&'a str),
    All,
    /// Not an eviction: instance `from`'s heartbeat `number`.
    Heartbeat(u64),
}

impl Evict<'_> {
    fn encode(&self, from: u64) -> String {
        match self {
            Self::Key(key) => format!("{from:016x} k {key}"),
            Self::Prefix(prefix) => format!("{from:016x} p {prefix}"),
            Self::Tag(tag) => format!("{from:016x} t {tag}"),
            Self::All => format!("{from:016x} c"),
            Self::Heartbeat(number) => format!("{from:016x} h {number}"),
        }
    }
}

/// A message: who sent it, and what it asks. `None` for one this version cannot read.
fn decode(message: &str) -> Option<(u64, Evict<'_>)> {
    let (from, rest) = message.split_once(' ')?;
    let from = u64::from_str_radix(from, 16).ok()?;
    let (op, arg) = rest.split_once(' ').unwrap_or((rest, ""));
    let evict = match op {
        "k" => Evict::Key(arg),
        "p" => Evict::Prefix(arg),
        "t" => Evict::Tag(arg),
        "c" => Evict::All,
        "h" => Evict::Heartbeat(arg.parse().ok()?),
        _ => return None,
    };
    Some((from, evict))
}

impl TieredStore {
    /// An L1 of `config.l1_capacity` bytes in front of `l2`, coherent through a channel on
    /// `l2`'s Redis (named after its namespace: `<namespace>:#l1`). Returns once subscribed
    /// (or after the connect timeout, with L1 unused until the channel is confirmed); must
    /// be called within a Tokio runtime.
    pub async fn connect(l2: RedisStore, config: TieredConfig) -> Result<Self, StoreError> {
        Self::with_channel(l2.clone(), l2, config).await
    }

    /// An L1 in front of another shared store — a
    /// [`MemcachedStore`](crate::MemcachedStore), which has no channel of its own — kept
    /// coherent through a channel on `channel`'s Redis, named after its namespace (give
    /// every instance that shares `l2` the same). Everything else is as
    /// [`connect`](Self::connect): entries, purges, fill locks and the purge log are
    /// `l2`'s; only the channel's messages and heartbeats go through Redis. Redis down puts
    /// L1 in doubt (bypassed) as with a Redis L2, while `l2` keeps answering.
    ///
    /// ```no_run
    /// # #[cfg(feature = "memcached")]
    /// # async fn run() -> Result<(), tower_response_cache::store::StoreError> {
    /// use tower_response_cache::{MemcachedConfig, MemcachedStore, RedisStore, TieredConfig, TieredStore};
    ///
    /// let memcached = MemcachedStore::new(MemcachedConfig::new(["127.0.0.1:11211"]))?;
    /// let channel = RedisStore::connect_url("redis://127.0.0.1:6379").await?;
    /// let store = TieredStore::with_channel(memcached, channel, TieredConfig::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn with_channel<S: Store>(
        l2: S,
        channel: RedisStore,
        config: TieredConfig,
    ) -> Result<Self, StoreError> {
        let l2: Arc<dyn Store> = Arc::new(l2);
        let redis = channel;
        let l1 = MemoryStore::new(config.l1_capacity);
        let marker = format!("{}#l1:generation", redis.prefix());
        let health = Arc::new(Health::new(
            l1.clone(),
            config.max_staleness,
            l2.shared().map_or(Duration::ZERO, SharedStore::purge_lag),
        ));
        let id = random_id();
        let subscriber = redis.pool().next().clone_new();
        let sharded = match config.channel {
            ChannelMode::Auto => subscriber.is_clustered(),
            ChannelMode::Classic => false,
            ChannelMode::Sharded => true,
        };
        let channel = Arc::new(Channel {
            name: format!("{}#l1", redis.prefix()),
            sharded: AtomicBool::new(sharded),
        });
        subscriber.connect();
        let connect_timeout = Duration::from_secs(5);
        let _ = tokio::time::timeout(connect_timeout, subscriber.wait_for_connect()).await;
        let listen = tokio::spawn(listen(
            subscriber.clone(),
            Arc::clone(&channel),
            id,
            Arc::downgrade(&health),
        ));
        // Subscribed before the first heartbeat, so that it can come back.
        let subscribed =
            tokio::time::timeout(connect_timeout, channel.subscribe(&subscriber)).await;
        if let Ok(Err(error)) = subscribed
            && channel.sharded()
            && unknown_command(&error)
        {
            if config.channel == ChannelMode::Sharded {
                listen.abort();
                let _ = subscriber.quit().await;
                return Err(StoreError::new(
                    StoreErrorKind::Unsupported,
                    format!("sharded pub/sub (Redis 7) is not available: {error}"),
                ));
            }
            tracing::warn!(
                %error,
                "tiered cache: the cluster has no sharded pub/sub; the channel is classic (every message goes to every node)"
            );
            channel.sharded.store(false, Ordering::Relaxed);
            let _ = tokio::time::timeout(connect_timeout, channel.subscribe(&subscriber)).await;
        }
        let beat = tokio::spawn(heartbeat(
            redis.clone(),
            subscriber.clone(),
            Arc::clone(&channel),
            marker,
            id,
            config.heartbeat,
            Arc::downgrade(&health),
        ));
        Ok(Self {
            inner: Arc::new(Tiered {
                l1,
                l2,
                redis,
                l1_max_ttl: config.l1_max_ttl,
                channel,
                health,
                id,
                subscriber,
                tasks: vec![listen, beat],
            }),
        })
    }

    /// Whether the channel is sharded ([`ChannelMode`]).
    pub fn sharded_channel(&self) -> bool {
        self.inner.channel.sharded()
    }

    /// This instance's L1.
    pub fn l1(&self) -> &MemoryStore {
        &self.inner.l1
    }

    /// The shared L2.
    pub fn l2(&self) -> &dyn Store {
        &*self.inner.l2
    }

    /// Whether L1 answers now (the channel is confirmed).
    pub fn l1_in_use(&self) -> bool {
        self.inner.health.usable()
    }

    /// How often L1 was emptied, by reason.
    pub fn flushes(&self) -> L1Flushes {
        let flushes = &self.inner.health.flushes;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        L1Flushes {
            reconnected: load(&flushes.reconnected),
            heartbeat: load(&flushes.heartbeat),
            lagged: load(&flushes.lagged),
            flushed: load(&flushes.flushed),
            cleared: load(&flushes.cleared),
        }
    }

    /// Tells the other instances to evict `evict`. A failure is logged: their heartbeats
    /// fail as well while Redis cannot take a publish, which puts their L1 in doubt.
    async fn publish(&self, evict: Evict<'_>) {
        let message = evict.encode(self.inner.id);
        let client = self.inner.redis.pool().next();
        let published = self.inner.channel.publish(client, message).await;
        if let Err(error) = published {
            tracing::debug!(%error, "tiered cache: an invalidation could not be published");
        }
    }

    /// An entry read from L2 goes into L1 — unless an invalidation began since `epoch`, or
    /// L1 is not in use. Checked again after the write, which is undone if one began
    /// meanwhile.
    async fn fill_l1(&self, key: &str, entry: &Arc<CachedResponse>, epoch: Epoch) {
        self.inner
            .health
            .fill(key, entry, epoch, self.inner.l1_max_ttl)
            .await;
    }

    /// An entry this instance just wrote to L2 for `ttl` goes into L1 as well, never for
    /// longer than L2 keeps it.
    async fn fill_l1_written(&self, key: &str, entry: &Arc<CachedResponse>, ttl: Duration) {
        let epoch = self.inner.health.epoch_of(key);
        self.inner
            .health
            .fill(key, entry, epoch, self.inner.l1_max_ttl.min(ttl))
            .await;
    }

    /// L2's side of the protocol between instances, when L2 is shared.
    fn l2_shared(&self) -> Option<&dyn SharedStore> {
        self.inner.l2.shared()
    }

    /// The entry L1 holds under `key`, when L1 is in use.
    fn l1_hit(&self, key: &str) -> Option<Arc<CachedResponse>> {
        if !self.inner.health.usable() {
            return None;
        }
        match self.inner.l1.get_now(key) {
            Some(Ok(entry)) => entry,
            _ => None,
        }
    }

    /// Evicts `keys` from L1 here, and from every other instance's.
    async fn evict_keys(&self, keys: &[String]) {
        for key in keys {
            self.inner.health.invalidated_key(key);
        }
        for key in keys {
            let _ = self.inner.l1.remove(key).await;
        }
        for key in keys {
            self.publish(Evict::Key(key)).await;
        }
    }
}

/// Receives the channel's messages: applies the others' evictions, confirms this
/// instance's heartbeats, and doubts on reconnection or lag.
async fn listen(
    subscriber: fred::clients::Client,
    channel: Arc<Channel>,
    id: u64,
    health: Weak<Health>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    loop {
        tokio::select! {
            message = messages.recv() => {
                let Some(health) = health.upgrade() else { return };
                match message {
                    Ok(message) => {
                        let text = match &message.value {
                            Value::String(text) => text.to_string(),
                            Value::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                            _ => continue,
                        };
                        apply(&health, id, &text).await;
                    }
                    Err(RecvError::Lagged(_)) => health.doubt(FlushReason::Lagged),
                    Err(RecvError::Closed) => {
                        health.doubt(FlushReason::Reconnected);
                        return;
                    }
                }
            }
            reconnect = reconnects.recv() => {
                let Some(health) = health.upgrade() else { return };
                // Messages may have been lost while disconnected; the subscription is
                // the connection's, so it is made again.
                health.doubt(FlushReason::Reconnected);
                if matches!(reconnect, Err(RecvError::Closed)) {
                    return;
                }
                let _ = channel.subscribe(&subscriber).await;
            }
        }
    }
}

/// Applies one message.
async fn apply(health: &Health, id: u64, text: &str) {
    let Some((from, evict)) = decode(text) else {
        return;
    };
    if let Evict::Heartbeat(number) = evict {
        if from == id {
            health.confirmed(number);
        }
        return;
    }
    if from == id {
        // Evicted here already, when it was published.
        return;
    }
    match evict {
        Evict::Key(key) => health.invalidated_key(key),
        _ => {
            health.invalidated();
            health.purged_elsewhere();
        }
    }
    let l1 = &health.l1;
    match evict {
        Evict::Key(key) => {
            let _ = l1.remove(key).await;
        }
        Evict::Prefix(prefix) => {
            let _ = l1.remove_prefix(prefix).await;
        }
        Evict::Tag(tag) => {
            let _ = l1
                .purge(PurgeTarget::Tag { tag, within: "" }, PurgeMode::Hard)
                .await;
        }
        Evict::All => health.cleared(),
        Evict::Heartbeat(_) => {}
    }
}

/// Publishes this instance's heartbeats, doubts when they stop coming back, and watches
/// the generation marker that a flush or an empty restart of Redis loses.
async fn heartbeat(
    redis: RedisStore,
    subscriber: fred::clients::Client,
    channel: Arc<Channel>,
    marker: String,
    id: u64,
    every: Duration,
    health: Weak<Health>,
) {
    let mut generation: Option<String> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // No command may hold the heartbeat up: a dead Redis must not keep L1 trusted.
    let limit = every.max(Duration::from_millis(50));
    let resubscribe_every =
        Duration::from_millis(health.upgrade().map_or(500, |h| h.max_staleness_ms));
    let mut last_subscribed = Instant::now();
    loop {
        tick.tick().await;
        let Some(health) = health.upgrade() else {
            return;
        };
        let stale = health
            .now_ms()
            .saturating_sub(health.confirmed_ms.load(Ordering::Acquire))
            > health.max_staleness_ms;
        if stale && health.trusted.load(Ordering::Acquire) {
            health.doubt(FlushReason::Heartbeat);
        }
        if stale && last_subscribed.elapsed() >= resubscribe_every {
            // Heartbeats that do not come back may mean a subscription the server ended
            // without the connection dropping (a sharded channel's slot moved, its shard
            // failed over): made again, on its own task, so that the beat goes on.
            last_subscribed = Instant::now();
            let (subscriber, channel) = (subscriber.clone(), Arc::clone(&channel));
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(resubscribe_every, channel.subscribe(&subscriber)).await;
            });
        }
        let client = redis
            .pool()
            .next()
            .with_options(&fred::types::config::Options {
                timeout: Some(limit),
                fail_fast: true,
                max_attempts: Some(1),
                ..fred::types::config::Options::default()
            });
        // The generation marker: set once by whichever instance comes first; a changed or
        // missing one means Redis lost its data (and so, possibly, invalidations).
        let current: Result<Option<String>, _> = client.get(marker.as_str()).await;
        match current {
            Ok(Some(current)) if generation.as_deref() == Some(current.as_str()) => {}
            Ok(current) => {
                if generation.is_some() {
                    health.doubt(FlushReason::Flushed);
                }
                let fresh = format!("{:016x}", random_id());
                let set: Result<Option<String>, _> = client
                    .set(
                        marker.as_str(),
                        fresh.as_str(),
                        None::<Expiration>,
                        Some(SetOptions::NX),
                        false,
                    )
                    .await;
                generation = match (current, set) {
                    (Some(current), _) => Some(current),
                    (None, Ok(_)) => client.get(marker.as_str()).await.ok().flatten(),
                    (None, Err(_)) => None,
                };
            }
            // Unreachable: the heartbeats below fail too, and staleness decides.
            Err(_) => continue,
        }
        let number = health.sent.fetch_add(1, Ordering::AcqRel) + 1;
        let beat = Evict::Heartbeat(number).encode(id);
        let published = channel.publish(&client, beat).await;
        if published.is_err() && health.trusted.load(Ordering::Acquire) {
            health.doubt(FlushReason::Heartbeat);
        }
    }
}

/// Every method written out (clippy's `missing_trait_methods`): a decorator that forgot one
/// would answer with the trait's default instead of its tiers'.
#[deny(clippy::missing_trait_methods)]
impl Store for TieredStore {
    /// L1 reads in place; the rest is L2's, but for counting purges (L2's count, when it
    /// keeps one).
    fn capabilities(&self) -> Capabilities {
        let l2 = self.inner.l2.capabilities();
        Capabilities {
            name: "tiered",
            reads_in_place: true,
            writes_in_place: false,
            tiered: true,
            ..l2
        }
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<CachedResponse>>> {
        Box::pin(async move {
            if let Some(entry) = self.l1_hit(key) {
                return Ok(Some(entry));
            }
            let epoch = self.inner.health.epoch_of(key);
            let found = self.inner.l2.get(key).await?;
            if let Some(entry) = &found {
                self.fill_l1(key, entry, epoch).await;
            }
            Ok(found)
        })
    }

    /// An L1 hit, in place; anything else (an L1 miss, L1 not in use) is for
    /// [`get`](Store::get) to answer from L2.
    fn get_now(&self, key: &str) -> Option<Result<Option<Arc<CachedResponse>>, StoreError>> {
        self.l1_hit(key).map(|entry| Ok(Some(entry)))
    }

    /// Written to L2 under `condition`; when written, every instance's L1 copy is evicted
    /// (this one's first) and this instance keeps the new entry in L1.
    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
        condition: PutIf,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            if condition == PutIf::Absent {
                let written = self
                    .inner
                    .l2
                    .put(key, Arc::clone(&entry), ttl, condition)
                    .await?;
                if written {
                    // What L1 held under the key was stale or gone in L2: evicted everywhere.
                    self.evict_keys(&[key.to_owned()]).await;
                }
                return Ok(written);
            }
            self.inner.health.invalidated_key(key);
            let _ = self.inner.l1.remove(key).await;
            let written = self
                .inner
                .l2
                .put(key, Arc::clone(&entry), ttl, condition)
                .await?;
            if written {
                self.publish(Evict::Key(key)).await;
                self.fill_l1_written(key, &entry, ttl).await;
            }
            Ok(written)
        })
    }

    /// L2's (the entry is the same: L1 keeps its copy, and its own, shorter, life).
    fn touch<'a>(
        &'a self,
        key: &'a str,
        tags: &'a [String],
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        self.inner.l2.touch(key, tags, ttl)
    }

    /// L2's purge; then every instance's L1 copies of what it covers go, whatever the mode
    /// (a soft purge's stale entry is read from L2).
    fn purge<'a>(&'a self, target: PurgeTarget<'a>, mode: PurgeMode) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let purged = self.inner.l2.purge(target, mode).await;
            if !matches!(target, PurgeTarget::Keys(_)) {
                self.inner.health.invalidated();
            }
            match target {
                PurgeTarget::Keys(keys) => self.evict_keys(keys).await,
                PurgeTarget::Prefix { prefix, .. } => {
                    // Every key under the prefix, the filter aside: more than the purge,
                    // never less.
                    let _ = self.inner.l1.remove_prefix(prefix).await;
                    self.publish(Evict::Prefix(prefix)).await;
                }
                PurgeTarget::Tag { tag, within } => {
                    let _ = self
                        .inner
                        .l1
                        .purge(PurgeTarget::Tag { tag, within }, PurgeMode::Hard)
                        .await;
                    self.publish(Evict::Tag(tag)).await;
                }
                PurgeTarget::All => {
                    self.inner.l1.clear_now();
                    self.publish(Evict::All).await;
                }
            }
            purged
        })
    }

    fn shared(&self) -> Option<&dyn SharedStore> {
        self.inner.l2.shared().map(|_| self as &dyn SharedStore)
    }

    /// L2's counters (L1 holds none: every increment is shared).
    fn counters(&self) -> Option<&dyn Counters> {
        self.inner.l2.counters()
    }

    fn batches(&self) -> Option<&dyn Batches> {
        Some(self)
    }

    fn listen(&self, listener: StoreListener) -> bool {
        match listener {
            StoreListener::Flushes(listener) => {
                self.inner.health.listeners.add(listener);
                true
            }
            removals => self.inner.l1.listen(removals),
        }
    }

    /// L1's entries, bytes and capacity; L2's breaker; L1's flushes.
    fn gauges(&self) -> StoreGauges {
        StoreGauges {
            open_breakers: self.inner.l2.gauges().open_breakers,
            l1_flushes: Some(self.flushes()),
            ..self.inner.l1.gauges()
        }
    }
}

impl Batches for TieredStore {
    /// L1's entries where it has them, the rest in one read of many from L2 (which fill
    /// L1).
    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> StoreFuture<'a, Vec<Option<Arc<CachedResponse>>>> {
        Box::pin(async move {
            let mut found: Vec<Option<Arc<CachedResponse>>> =
                keys.iter().map(|key| self.l1_hit(key)).collect();
            let missing: Vec<usize> = (0..keys.len()).filter(|&i| found[i].is_none()).collect();
            if missing.is_empty() {
                return Ok(found);
            }
            let epochs: Vec<Epoch> = missing
                .iter()
                .map(|&i| self.inner.health.epoch_of(&keys[i]))
                .collect();
            let wanted: Vec<String> = missing.iter().map(|&i| keys[i].clone()).collect();
            let read = self.inner.l2.get_many(&wanted).await?;
            for ((&i, epoch), entry) in missing.iter().zip(epochs).zip(read) {
                if let Some(entry) = &entry {
                    self.fill_l1(&keys[i], entry, epoch).await;
                }
                found[i] = entry;
            }
            Ok(found)
        })
    }

    /// One after another, each evicting every instance's L1 copy.
    fn put_many<'a>(
        &'a self,
        entries: &'a [(String, Arc<CachedResponse>, Duration)],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            for (key, entry, ttl) in entries {
                self.put(key, Arc::clone(entry), *ttl, PutIf::Always)
                    .await?;
            }
            Ok(())
        })
    }
}

/// L2's protocol; a lookup reads L1 first.
#[deny(clippy::missing_trait_methods)]
impl SharedStore for TieredStore {
    fn purge_mark(&self) -> Option<u64> {
        self.l2_shared()?.purge_mark()
    }

    fn purged_since<'a>(
        &'a self,
        mark: u64,
        key: &'a str,
        tags: &'a [String],
    ) -> StoreFuture<'a, bool> {
        match self.l2_shared() {
            Some(l2) => l2.purged_since(mark, key, tags),
            None => Box::pin(async { Ok(false) }),
        }
    }

    fn purge_lag(&self) -> Duration {
        self.l2_shared()
            .map_or(Duration::ZERO, SharedStore::purge_lag)
    }

    fn lock_fill<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Option<FillLock>> {
        match self.l2_shared() {
            Some(l2) => l2.lock_fill(key, ttl),
            None => Box::pin(async { Err(StoreError::unsupported("fill locks")) }),
        }
    }

    fn unlock_fill<'a>(&'a self, key: &'a str, lock: FillLock) -> StoreFuture<'a, ()> {
        match self.l2_shared() {
            Some(l2) => l2.unlock_fill(key, lock),
            None => Box::pin(async { Ok(()) }),
        }
    }

    /// L1 first (when in use); then L2's lookup-or-lock, whose entry fills L1.
    fn get_or_lock_fill<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Lookup> {
        Box::pin(async move {
            if let Some(entry) = self.l1_hit(key) {
                return Ok(Lookup::Found(entry));
            }
            let Some(l2) = self.l2_shared() else {
                return Err(StoreError::unsupported("fill locks"));
            };
            let epoch = self.inner.health.epoch_of(key);
            let found = l2.get_or_lock_fill(key, ttl).await?;
            if let Lookup::Found(entry) = &found {
                self.fill_l1(key, entry, epoch).await;
            }
            Ok(found)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for evict in [
            Evict::Key("app:GET:/a b"),
            Evict::Prefix("app:GET:/users/"),
            Evict::Tag("team 7"),
            Evict::All,
            Evict::Heartbeat(42),
        ] {
            let text = evict.encode(0xabc);
            assert_eq!(decode(&text), Some((0xabc, evict)), "{text}");
        }
        assert_eq!(decode("zz k key"), None);
        assert_eq!(decode("00000000000000ab x key"), None);
        assert_eq!(decode("00000000000000ab h notanumber"), None);
        assert_eq!(decode(""), None);
    }

    fn health() -> Health {
        Health::new(
            MemoryStore::new(1 << 20),
            Duration::from_millis(500),
            Duration::ZERO,
        )
    }

    fn entry() -> Arc<CachedResponse> {
        let mut entry = CachedResponse::new(
            http::StatusCode::OK,
            http::HeaderMap::new(),
            bytes::Bytes::from_static(b"body"),
        );
        entry.ttl = Duration::from_secs(60);
        Arc::new(entry)
    }

    #[tokio::test]
    async fn l1_is_used_only_once_a_heartbeat_sent_after_the_doubt_comes_back() {
        let health = health();
        assert!(!health.usable(), "not before the first heartbeat");
        health.sent.store(1, Ordering::Release);
        health.confirmed(1);
        assert!(health.usable());
        let epoch = health.epoch_of("k");
        health
            .fill("k", &entry(), epoch, Duration::from_secs(60))
            .await;
        assert!(health.l1.get_now("k").unwrap().unwrap().is_some());

        health.sent.store(2, Ordering::Release);
        health.doubt(FlushReason::Lagged);
        assert!(!health.usable());
        assert!(
            health.l1.get_now("k").unwrap().unwrap().is_none(),
            "emptied"
        );
        assert_eq!(health.flushes.lagged.load(Ordering::Relaxed), 1);
        // Heartbeats 1 and 2 were sent before the doubt: they prove nothing.
        health.confirmed(2);
        assert!(!health.usable());
        health.confirmed(3);
        assert!(health.usable());
    }

    #[tokio::test]
    async fn a_read_that_raced_an_invalidation_does_not_fill_l1() {
        let health = health();
        health.sent.store(1, Ordering::Release);
        health.confirmed(1);
        // Read from L2 at this epoch; an invalidation arrives before the copy goes to L1.
        let epoch = health.epoch_of("k");
        health.invalidated();
        health
            .fill("k", &entry(), epoch, Duration::from_secs(60))
            .await;
        assert!(health.l1.get_now("k").unwrap().unwrap().is_none());
        // An invalidation of another key does not keep this one out.
        let epoch = health.epoch_of("k");
        health.invalidated_key("another key");
        health
            .fill("k", &entry(), epoch, Duration::from_secs(60))
            .await;
        assert!(health.l1.get_now("k").unwrap().unwrap().is_some());
        let _ = health.l1.remove("k").await;
        // One of this key does.
        let epoch = health.epoch_of("k");
        health.invalidated_key("k");
        health
            .fill("k", &entry(), epoch, Duration::from_secs(60))
            .await;
        assert!(health.l1.get_now("k").unwrap().unwrap().is_none());
        // Read after it: filled, for no longer than the L1 limit.
        let epoch = health.epoch_of("k");
        health
            .fill("k", &entry(), epoch, Duration::from_secs(60))
            .await;
        assert!(health.l1.get_now("k").unwrap().unwrap().is_some());
        // An entry past its life is not filled at all.
        let mut old = CachedResponse::new(
            http::StatusCode::OK,
            http::HeaderMap::new(),
            bytes::Bytes::new(),
        );
        old.stored_at = SystemTime::now() - Duration::from_secs(120);
        old.ttl = Duration::from_secs(60);
        health
            .fill("old", &Arc::new(old), epoch, Duration::from_secs(60))
            .await;
        assert!(health.l1.get_now("old").unwrap().unwrap().is_none());
    }

    #[test]
    fn instance_ids_differ() {
        assert_ne!(random_id(), random_id());
    }
}
