//! [`CacheObserver`]: the hook every event reaches, and the layer's list of observers.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use super::Throttle;
use super::event::{CacheEvent, EventKind, Timings};
use crate::stats::CacheStats;
use crate::store::{FlushListener, RemovalListener, Store, StoreListener};

/// Told of every event of a layer ([`CacheLayer::observer`](crate::CacheLayer::observer)):
/// hits, misses, stale answers, stores, store errors, purges, removals — each with its route
/// label, method and timings ([`CacheEvent`]).
///
/// Observers are called on the request path, in the order they were attached, before the
/// response leaves (or on the task that writes the entry, for what became of it); keep them
/// quick, and hand slow work (I/O, locks held long) to a task or a channel. An observer that
/// panics is caught: the request goes on, the panic is counted in the stats
/// ([`StatsSnapshot::observer_panics`](crate::stats::StatsSnapshot::observer_panics)) and logged at
/// most every 10 seconds, and the next observers are called all the same. (A build with
/// `panic = "abort"` cannot catch a panic.)
///
/// A closure taking `&CacheEvent` is an observer:
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use tower_response_cache::observe::{CacheEvent, EventKind};
/// use tower_response_cache::{CacheLayer, MemoryStore};
///
/// let stored_bytes = Arc::new(AtomicU64::new(0));
/// let counted = Arc::clone(&stored_bytes);
/// let cache = CacheLayer::new(MemoryStore::new(64 << 20)).observer(move |event: &CacheEvent<'_>| {
///     if let EventKind::Stored { bytes, .. } = event.kind {
///         counted.fetch_add(bytes as u64, Ordering::Relaxed);
///     }
/// });
/// ```
///
/// Built in: [`HitMissRatio`](super::HitMissRatio), [`TimingObserver`](super::TimingObserver)
/// and, with the `metrics` feature, [`CacheMetrics`](super::CacheMetrics).
pub trait CacheObserver: Send + Sync + 'static {
    /// Called for each event.
    fn on_event(&self, event: &CacheEvent<'_>);
}

impl<F> CacheObserver for F
where
    F: Fn(&CacheEvent<'_>) + Send + Sync + 'static,
{
    fn on_event(&self, event: &CacheEvent<'_>) {
        self(event);
    }
}

impl<O: CacheObserver + ?Sized> CacheObserver for Arc<O> {
    fn on_event(&self, event: &CacheEvent<'_>) {
        (**self).on_event(event);
    }
}

/// A layer's observers. With none attached the layer holds no `Observers` at all, and the
/// request path skips every step that only observers need (clocks, event values).
pub(crate) struct Observers {
    list: Vec<Arc<dyn CacheObserver>>,
    stats: CacheStats,
    /// Kept alive here: the store holds them weakly, so that a dropped layer stops being
    /// told.
    _removals: Arc<RemovalListener>,
    _flushes: Arc<FlushListener>,
}

impl fmt::Debug for Observers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observers")
            .field("len", &self.list.len())
            .finish_non_exhaustive()
    }
}

/// Panics of observers are logged at most this often.
static PANICS: LazyLock<Throttle> = LazyLock::new(|| Throttle::new(Duration::from_secs(10)));

impl Observers {
    /// The observers `list`, their panics counted in `stats`, told of the removals and flushes
    /// of `store` if it reports them.
    pub(crate) fn new(
        list: Vec<Arc<dyn CacheObserver>>,
        stats: CacheStats,
        store: &dyn Store,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me: &Weak<Self>| {
            let told = |me: &Weak<Self>| {
                let me = Weak::clone(me);
                move |kind: EventKind| {
                    if let Some(observers) = me.upgrade() {
                        observers.emit(&CacheEvent {
                            kind,
                            route: None,
                            method: None,
                            timings: Timings::default(),
                        });
                    }
                }
            };
            let tell = told(me);
            let removals: Arc<RemovalListener> =
                Arc::new(move |cause| tell(EventKind::Removed { cause }));
            store.listen(StoreListener::Removals(Arc::downgrade(&removals)));
            let tell = told(me);
            let flushes: Arc<FlushListener> =
                Arc::new(move |reason| tell(EventKind::L1Flushed { reason }));
            store.listen(StoreListener::Flushes(Arc::downgrade(&flushes)));
            Self {
                list,
                stats,
                _removals: removals,
                _flushes: flushes,
            }
        })
    }

    /// The observers, to build a longer list from.
    pub(crate) fn list(&self) -> &[Arc<dyn CacheObserver>] {
        &self.list
    }

    /// Tells every observer, in order; a panic is caught, counted and logged.
    pub(crate) fn emit(&self, event: &CacheEvent<'_>) {
        for observer in &self.list {
            if catch_unwind(AssertUnwindSafe(|| observer.on_event(event))).is_err() {
                self.stats.record_observer_panic();
                if let Some(suppressed) = PANICS.allow() {
                    tracing::warn!(
                        event = event.kind.as_str(),
                        suppressed,
                        "a cache observer panicked; the request goes on ({suppressed} similar panics not logged)"
                    );
                }
            }
        }
    }
}
