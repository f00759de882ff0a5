//! Whether L1 may be used ([`Health`]): doubt on a lost or lagging channel, a missed
//! heartbeat or a lost generation marker; and the epochs that keep a read that a purge
//! overtook out of L1.

use super::*;

/// Stripes of keys with an invalidation count each.
pub(super) const STRIPES: usize = 1024;

/// Whether L1 may be used, and what invalidated it.
pub(super) struct Health {
    pub(super) start: Instant,
    pub(super) max_staleness_ms: u64,
    /// Milliseconds after `start` when this instance's last confirmed heartbeat came back
    /// (0: never).
    pub(super) confirmed_ms: AtomicU64,
    /// Cleared when the channel is in doubt; set again by a heartbeat sent after.
    pub(super) trusted: AtomicBool,
    /// The heartbeat number before which none confirms the channel (those sent before the
    /// doubt began).
    pub(super) doubt_from: AtomicU64,
    /// The heartbeats sent so far.
    pub(super) sent: AtomicU64,
    /// Advanced by every invalidation that may concern any key (a prefix, a tag, a clear,
    /// a doubt): a copy read from L2 before it is not put into L1.
    pub(super) epoch: AtomicU64,
    /// The same per stripe of keys, advanced by an invalidation of one key: a write of one
    /// key does not keep every other key's reads out of L1.
    pub(super) stripes: Box<[AtomicU64]>,
    pub(super) flushes: FlushCounters,
    /// How long L2 may still answer as before another instance's purge
    /// ([`SharedStore::purge_lag`]).
    pub(super) l2_lag_ms: u64,
    /// When the last purge of another instance that may concern any key arrived
    /// (milliseconds after `start`; 0: none).
    pub(super) remote_purge_ms: AtomicU64,
    /// Told of each flush ([`StoreListener::Flushes`]).
    pub(super) listeners: Listeners<FlushListener>,
    pub(super) l1: MemoryStore,
}

#[derive(Default)]
pub(super) struct FlushCounters {
    pub(super) reconnected: AtomicU64,
    pub(super) heartbeat: AtomicU64,
    pub(super) lagged: AtomicU64,
    pub(super) flushed: AtomicU64,
    pub(super) cleared: AtomicU64,
}

impl Health {
    /// Nothing confirmed yet: L1 unused until the first heartbeat comes back.
    pub(super) fn new(l1: MemoryStore, max_staleness: Duration, l2_lag: Duration) -> Self {
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

    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Whether L1 may answer now: trusted, and a heartbeat came back recently.
    pub(super) fn usable(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
            && self
                .now_ms()
                .saturating_sub(self.confirmed_ms.load(Ordering::Acquire))
                <= self.max_staleness_ms
    }

    /// The channel is in doubt: L1 is emptied, and not used until a heartbeat sent from now
    /// on comes back.
    pub(super) fn doubt(&self, why: FlushReason) {
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
    pub(super) fn cleared(&self) {
        self.l1.clear_now();
        self.flushes.cleared.fetch_add(1, Ordering::Relaxed);
        self.tell(FlushReason::Cleared);
    }

    /// Tells the listeners of a flush.
    pub(super) fn tell(&self, reason: FlushReason) {
        self.listeners.tell(|listener| listener(reason));
    }

    /// Heartbeat `number` of this instance came back: the channel delivered everything
    /// published before it.
    pub(super) fn confirmed(&self, number: u64) {
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
    pub(super) fn invalidated(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Another instance's purge of a tag or a prefix, or its clear, arrived: L2 may answer
    /// as before it for [`SharedStore::purge_lag`].
    pub(super) fn purged_elsewhere(&self) {
        self.remote_purge_ms.store(self.now_ms(), Ordering::Release);
    }

    /// Whether L2 may still answer as before another instance's purge: what it answers is
    /// not copied into L1 meanwhile.
    pub(super) fn l2_lags(&self) -> bool {
        let at = self.remote_purge_ms.load(Ordering::Acquire);
        at != 0 && self.now_ms().saturating_sub(at) < self.l2_lag_ms
    }

    pub(super) fn stripe(&self, key: &str) -> &AtomicU64 {
        let hash = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
        &self.stripes[(hash % self.stripes.len() as u64) as usize]
    }

    /// An invalidation of `key` is under way or arrived.
    pub(super) fn invalidated_key(&self, key: &str) {
        self.stripe(key).fetch_add(1, Ordering::AcqRel);
    }

    /// Where invalidations of `key` stand: taken before reading it from L2.
    pub(super) fn epoch_of(&self, key: &str) -> Epoch {
        Epoch {
            all: self.epoch.load(Ordering::Acquire),
            key: self.stripe(key).load(Ordering::Acquire),
        }
    }

    /// Puts `entry`, read from L2 when invalidations stood at `epoch`, into L1 for at most
    /// `min(its remaining life, max_ttl)` unless L1 holds a newer one — and unless an invalidation of it began since, or L1
    /// is not in use. Checked again after the write, which is undone if one began meanwhile.
    pub(super) async fn fill(
        &self,
        key: &str,
        entry: &Arc<CachedResponse>,
        epoch: Epoch,
        max_ttl: Duration,
    ) {
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
pub(super) struct Epoch {
    pub(super) all: u64,
    pub(super) key: u64,
}
