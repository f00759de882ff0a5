//! What a store tells the layer besides entries: why entries leave it, when it empties a
//! memory tier ([`Store::listen`](super::Store::listen)), and its gauges.

use std::sync::Weak;

/// Why an entry left a store that reports it ([`MemoryStore`](crate::MemoryStore)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemovalCause {
    /// Its time was up.
    Expired,
    /// Evicted to keep the store within its capacity (or too large to admit).
    Evicted,
    /// Replaced by a newer write of its key.
    Replaced,
    /// Removed on purpose: an invalidation, a purge, a clear.
    Removed,
}

impl RemovalCause {
    /// Every cause, in a stable order.
    pub const ALL: [Self; 4] = [Self::Expired, Self::Evicted, Self::Replaced, Self::Removed];

    /// `expired`, `evicted`, `replaced` or `removed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Evicted => "evicted",
            Self::Replaced => "replaced",
            Self::Removed => "removed",
        }
    }
}

/// Which tier of a tiered store (`TieredStore`, feature `redis`) answered a hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Tier {
    /// The instance's own memory tier, in place.
    L1,
    /// The shared tier (Redis).
    L2,
}

impl Tier {
    /// `l1` or `l2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::L1 => "l1",
            Self::L2 => "l2",
        }
    }
}

/// The listeners of one kind of a store's events, as [`Store::listen`](super::Store::listen)
/// gives them, held weakly: a dropped layer's are forgotten. A store that reports removals
/// keeps a `Listeners<RemovalListener>` and [tells](Self::tell) it.
pub struct Listeners<L: ?Sized> {
    list: std::sync::RwLock<Vec<Weak<L>>>,
    /// Whether one was ever added: until then, telling costs one load.
    any: std::sync::atomic::AtomicBool,
}

impl<L: ?Sized> std::fmt::Debug for Listeners<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners").finish_non_exhaustive()
    }
}

impl<L: ?Sized> Default for Listeners<L> {
    fn default() -> Self {
        Self {
            list: std::sync::RwLock::new(Vec::new()),
            any: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl<L: ?Sized> Listeners<L> {
    /// Adds `listener`, forgetting those whose layers are gone.
    pub fn add(&self, listener: Weak<L>) {
        let mut list = match self.list.write() {
            Ok(list) => list,
            Err(poisoned) => poisoned.into_inner(),
        };
        list.retain(|listener| listener.strong_count() > 0);
        list.push(listener);
        self.any.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Calls `tell` with each listener still alive.
    pub fn tell(&self, mut tell: impl FnMut(&L)) {
        if !self.any.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let list = match self.list.read() {
            Ok(list) => list,
            Err(poisoned) => poisoned.into_inner(),
        };
        for listener in list.iter().filter_map(Weak::upgrade) {
            tell(&listener);
        }
    }
}

/// What a store calls as entries leave it ([`StoreListener::Removals`]).
pub type RemovalListener = dyn Fn(RemovalCause) + Send + Sync;

/// What a store calls as it empties a memory tier ([`StoreListener::Flushes`]).
pub type FlushListener = dyn Fn(FlushReason) + Send + Sync;

/// Why a tiered store emptied its memory tier ([`L1Flushes`] counts each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlushReason {
    /// The subscriber's connection dropped and reconnected.
    Reconnected,
    /// Its heartbeat did not come back within `max_staleness` (or could not be sent).
    Heartbeat,
    /// The subscriber fell behind the channel and lost messages.
    Lagged,
    /// Redis lost the generation marker: flushed, or restarted empty.
    Flushed,
    /// A store-wide clear ([`PurgeTarget::All`](super::PurgeTarget::All)) from another instance (the layer's
    /// [`CacheHandle::clear`](crate::CacheHandle::clear) is a purge of its namespace, not
    /// a flush).
    Cleared,
}

impl FlushReason {
    /// `reconnected`, `heartbeat`, `lagged`, `flushed` or `cleared`: the label of
    /// `http_cache_l1_flushes_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reconnected => "reconnected",
            Self::Heartbeat => "heartbeat",
            Self::Lagged => "lagged",
            Self::Flushed => "flushed",
            Self::Cleared => "cleared",
        }
    }
}

/// How often a tiered store emptied its memory tier, by reason
/// ([`TieredStore::flushes`](crate::TieredStore::flushes), [`StoreGauges::l1_flushes`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct L1Flushes {
    /// The subscriber's connection dropped and reconnected.
    pub reconnected: u64,
    /// Its heartbeat did not come back within `max_staleness` (or could not be sent).
    pub heartbeat: u64,
    /// The subscriber fell behind the channel and lost messages.
    pub lagged: u64,
    /// Redis lost the generation marker: flushed, or restarted empty.
    pub flushed: u64,
    /// A store-wide clear ([`PurgeTarget::All`](super::PurgeTarget::All)) from another instance.
    pub cleared: u64,
}

/// A store's size and health as it knows them now ([`Store::gauges`](super::Store::gauges)); `None` where it does
/// not know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreGauges {
    /// Entries held.
    pub entries: Option<u64>,
    /// Bytes the entries take, as the store weighs them.
    pub bytes: Option<u64>,
    /// The most bytes the store holds.
    pub capacity: Option<u64>,
    /// Circuit breakers open now (the store is skipped while one is).
    pub open_breakers: Option<u64>,
    /// A tiered store's memory-tier flushes so far, by reason.
    pub l1_flushes: Option<L1Flushes>,
}

/// A listener given to [`Store::listen`](super::Store::listen), held weakly: the store
/// calls it for as long as it lives.
#[derive(Clone)]
#[non_exhaustive]
pub enum StoreListener {
    /// Called with the cause of every entry that leaves the store: what feeds observers'
    /// [`Removed`](crate::observe::EventKind::Removed) events.
    Removals(Weak<RemovalListener>),
    /// Called each time the store empties a memory tier of its own accord (a tiered store
    /// whose invalidation channel is in doubt, or a clear from another instance): what
    /// feeds observers' [`L1Flushed`](crate::observe::EventKind::L1Flushed) events.
    Flushes(Weak<FlushListener>),
}

impl std::fmt::Debug for StoreListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Removals(_) => "Removals(<fn>)",
            Self::Flushes(_) => "Flushes(<fn>)",
        })
    }
}
