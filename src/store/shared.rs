//! The protocol between processes that share a store: purge marks and fill locks
//! ([`SharedStore`]).

use std::sync::Arc;
use std::time::Duration;

use super::{Store, StoreFuture};
use crate::entry::CachedResponse;

/// A store that several processes share, and the protocol that keeps them correct together.
///
/// A store that other processes write and purge (Redis, memcached, a database) implements
/// this as a whole and returns itself from [`Store::shared`]; a process-local store does
/// not. Without it, each layer coalesces its own fetches and trusts its own purges, which is
/// right only when nobody else writes the store.
///
/// # The invariant
///
/// **A purge is complete across processes: once a purge has returned, no process serves
/// or stores what it took.** Two things can break it, and the protocol closes both:
///
/// 1. *A fetch under way during another process's purge writes back what the purge took.*
///    Process A starts fetching `/a`; process B purges tag `t`; A's response, tagged `t`,
///    arrives and is stored after the purge. So the store numbers its purges: before a
///    fetch the layer reads [`purge_mark`](Self::purge_mark) (without waiting), and after
///    storing the entry it asks [`purged_since`](Self::purged_since) whether a purge
///    recorded since that mark may cover the key or one of its tags; if so the layer
///    removes the entry again. The store must **record every purge before carrying it
///    out**: then either the purge finds the entry, or the check finds the purge. Records
///    the store no longer holds count as covering (a false "yes" costs a fetch, a false
///    "no" serves a purged entry).
/// 2. *Every process fetches a missing entry at once* (a stampede on the origin). So a
///    store that says [`Capabilities::fill_locks`](super::Capabilities::fill_locks) hands
///    out a short-lived lock per key ([`lock_fill`](Self::lock_fill)): one process fetches,
///    the others wait for the entry to appear and read it. A lock expires by itself after
///    its TTL, so a process that dies holding it delays the others, never blocks them;
///    [`unlock_fill`](Self::unlock_fill) releases it only while it is still the holder's
///    (compare its token).
///
/// A store that keeps copies of shared state (the generation and tag records a
/// `MemcachedStore` caches for a while) says for how long in
/// [`purge_lag`](Self::purge_lag): a tiered store does not trust what it reads for that
/// long after a purge.
///
/// The contract kit (`store::contract`, feature `contract`) checks the protocol with two
/// handles on one store, as two processes would be.
pub trait SharedStore: Store {
    /// A mark of the purges recorded in this store so far, by every process that shares
    /// it, for a fetch that is starting; `None` while no mark is known (the fetch is then
    /// not checked). It is read on every miss, so it must not wait: a store keeps the
    /// latest mark it has seen, which may lag behind (a lower mark only makes
    /// [`purged_since`](Self::purged_since) look further back).
    fn purge_mark(&self) -> Option<u64>;

    /// Whether a purge recorded since `mark` (by any process) may cover an entry that was
    /// just stored under `key` with `tags` (see the invariant above).
    fn purged_since<'a>(
        &'a self,
        mark: u64,
        key: &'a str,
        tags: &'a [String],
    ) -> StoreFuture<'a, bool>;

    /// How long after another process's purge or clear this store may still answer as
    /// before it (copies of shared state it keeps for a while). Default: zero.
    fn purge_lag(&self) -> Duration {
        Duration::ZERO
    }

    /// Tries to take the short-lived lock that makes this process the one to fetch `key`:
    /// `Some` when taken (it expires by itself after `ttl`), `None` when another process
    /// holds it. Called only when [`Capabilities::fill_locks`](super::Capabilities::fill_locks)
    /// says the store has them.
    fn lock_fill<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Option<FillLock>>;

    /// Releases a lock taken with [`lock_fill`](Self::lock_fill), if this process still
    /// holds it (another may have it now that it expired).
    fn unlock_fill<'a>(&'a self, key: &'a str, lock: FillLock) -> StoreFuture<'a, ()>;

    /// The write that ends a fetch, in one step when the store can make it atomic: if no
    /// purge was recorded since `fill.mark`, write the entry as
    /// [`PutIf::Newer`](super::PutIf::Newer) does (indexing its tags), and release the fill
    /// lock — all at once for every other process, so that a purge recorded later (and
    /// carried out after, by the invariant) finds the entry.
    ///
    /// The layer's long way is three calls and a release: [`purged_since`](Self::purged_since),
    /// the write, `purged_since` again (a purge may have come between), and
    /// [`unlock_fill`](Self::unlock_fill). `None` (the default) is a store without the one
    /// step; a store that has it for some writes only (a Redis cluster, whose purge log
    /// lives on another node than the entry) answers `None` for the others. A store whose
    /// step finds a purge since the mark answers [`Filled::Unchecked`], having done nothing.
    fn put_filled<'a>(&'a self, fill: Fill<'a>) -> Option<StoreFuture<'a, Filled>> {
        let _ = fill;
        None
    }

    /// A lookup that, when `key` holds nothing, also tries to take its fill lock — in one
    /// round trip on a store that can (`RedisStore`: one script), so that a miss reaches
    /// the origin after one round trip instead of two. The default is
    /// [`get`](Store::get), then [`lock_fill`](Self::lock_fill) on a miss.
    fn get_or_lock_fill<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Lookup> {
        Box::pin(async move {
            if let Some(entry) = self.get(key).await? {
                return Ok(Lookup::Found(entry));
            }
            Ok(match self.lock_fill(key, ttl).await? {
                Some(lock) => Lookup::Locked(lock),
                None => Lookup::Held,
            })
        })
    }
}

/// A fetched entry to store in the one step of [`SharedStore::put_filled`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Fill<'a> {
    /// Where the entry goes.
    pub key: &'a str,
    /// The entry.
    pub entry: Arc<CachedResponse>,
    /// How long the store keeps it.
    pub ttl: Duration,
    /// The [`purge_mark`](SharedStore::purge_mark) read when the fetch started.
    pub mark: u64,
    /// The fill lock the fetch holds, and the key it was taken for (a variant's entry may
    /// be stored under another key than the one locked).
    pub lock: Option<(&'a str, &'a FillLock)>,
}

impl<'a> Fill<'a> {
    /// The write of `entry` under `key` for `ttl`, by a fetch that started at `mark`,
    /// holding no lock.
    pub fn new(key: &'a str, entry: Arc<CachedResponse>, ttl: Duration, mark: u64) -> Self {
        Self {
            key,
            entry,
            ttl,
            mark,
            lock: None,
        }
    }

    /// The fetch holds `lock`, taken for `key`.
    #[must_use]
    pub fn lock(mut self, key: &'a str, lock: &'a FillLock) -> Self {
        self.lock = Some((key, lock));
        self
    }
}

/// What [`SharedStore::put_filled`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Filled {
    /// Written, as [`PutIf::Newer`](super::PutIf::Newer) writes, with no purge recorded
    /// since the mark when it was; the lock released.
    Stored,
    /// Not written: the key holds a newer entry. The lock released.
    Superseded,
    /// Nothing done, the lock still held: a purge was recorded since the mark (which may or
    /// may not cover the entry). The layer then takes the long way.
    Unchecked,
}

/// What [`SharedStore::get_or_lock_fill`] found.
#[derive(Debug)]
#[non_exhaustive]
pub enum Lookup {
    /// The entry under the key.
    Found(Arc<CachedResponse>),
    /// Nothing under the key, and this process now holds its fill lock.
    Locked(FillLock),
    /// Nothing under the key, and another process holds its fill lock.
    Held,
}

/// Proof of a fill lock taken with [`SharedStore::lock_fill`]: the token the store
/// releases it by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FillLock {
    token: String,
}

impl FillLock {
    /// A lock identified by `token` (unique to the taker: [`FillLock::unique`]).
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
        }
    }

    /// A lock with a token no other holder has: this process, a counter and the time.
    pub fn unique() -> Self {
        Self::new(lock_token())
    }

    /// The token.
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// A token no other lock holder has: this process, a counter, and the time.
pub(crate) fn lock_token() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    // The process and the time it first took a lock: unique to this process, read once.
    static PROCESS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let process = PROCESS.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        format!("{}-{nanos}", std::process::id())
    });
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{process}-{count}")
}
