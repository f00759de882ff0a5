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
    Batches, Capabilities, Counters, Fill, FillLock, Filled, FlushListener, FlushReason, L1Flushes,
    Listeners, Lookup, PutIf, SharedStore, Store, StoreError, StoreErrorKind, StoreExt,
    StoreFuture, StoreGauges, StoreListener, random_id,
};
use crate::entry::CachedResponse;

mod channel;
mod health;
mod ops;

use channel::{Channel, Evict, heartbeat, listen, unknown_command};
use health::{Epoch, Health};

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

#[cfg(test)]
mod tests {
    use super::channel::decode;
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
