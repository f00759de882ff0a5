//! Built-in observers: [`HitMissRatio`] and [`TimingObserver`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::event::{CacheEvent, EventKind};
use super::observer::CacheObserver;

/// Hits and misses, in all and per route: aiocache's hit/miss-ratio plugin as an observer.
/// Counted as the stats' hit ratio counts them ([`EventKind::lookup_hit`]): hits (coalesced
/// waits included) over hits and misses. Cheap to clone; the clones share the counts, so
/// attach one and read another.
///
/// ```
/// use tower_response_cache::observe::HitMissRatio;
/// use tower_response_cache::{CacheLayer, MemoryStore};
///
/// let ratio = HitMissRatio::new();
/// let cache = CacheLayer::new(MemoryStore::new(64 << 20)).observer(ratio.clone());
/// // … serve traffic …
/// let total = ratio.total();
/// assert_eq!((total.hits, total.misses, total.ratio), (0, 0, 0.0));
/// ```
#[derive(Clone, Debug, Default)]
pub struct HitMissRatio {
    inner: Arc<RatioInner>,
}

#[derive(Debug, Default)]
struct RatioInner {
    total: Pair,
    // Route labels are bounded (route patterns, rules, `(other)`): the map is too.
    routes: RwLock<HashMap<Arc<str>, Arc<Pair>>>,
}

#[derive(Debug, Default)]
struct Pair {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Pair {
    fn add(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn counts(&self) -> HitMissCounts {
        let hits = self.hits.load(Ordering::Relaxed);
        let misses = self.misses.load(Ordering::Relaxed);
        let lookups = hits + misses;
        HitMissCounts {
            hits,
            misses,
            ratio: if lookups == 0 {
                0.0
            } else {
                hits as f64 / lookups as f64
            },
        }
    }
}

/// Hits, misses and their ratio ([`HitMissRatio`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct HitMissCounts {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that found nothing usable.
    pub misses: u64,
    /// `hits / (hits + misses)`; zero before the first lookup.
    pub ratio: f64,
}

impl HitMissRatio {
    /// Counts from zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// All routes together.
    pub fn total(&self) -> HitMissCounts {
        self.inner.total.counts()
    }

    /// Per route label, the routes that saw a lookup.
    pub fn routes(&self) -> BTreeMap<String, HitMissCounts> {
        let routes = match self.inner.routes.read() {
            Ok(routes) => routes,
            Err(poisoned) => poisoned.into_inner(),
        };
        routes
            .iter()
            .map(|(route, pair)| (route.to_string(), pair.counts()))
            .collect()
    }

    fn route(&self, label: &str) -> Arc<Pair> {
        if let Ok(routes) = self.inner.routes.read()
            && let Some(pair) = routes.get(label)
        {
            return Arc::clone(pair);
        }
        let mut routes = match self.inner.routes.write() {
            Ok(routes) => routes,
            Err(poisoned) => poisoned.into_inner(),
        };
        Arc::clone(routes.entry(Arc::from(label)).or_default())
    }
}

impl CacheObserver for HitMissRatio {
    fn on_event(&self, event: &CacheEvent<'_>) {
        let Some(hit) = event.kind.lookup_hit() else {
            return;
        };
        self.inner.total.add(hit);
        if let Some(route) = event.route {
            self.route(route).add(hit);
        }
    }
}

/// How long the cache's operations take — count, total, min, max, average per operation —
/// as aiocache's timing plugin: `lookup`, `origin` (time to response headers),
/// `store_write` and `coalesce_wait`. Cheap to clone; the clones share the figures.
///
/// ```
/// use tower_response_cache::observe::TimingObserver;
/// use tower_response_cache::{CacheLayer, MemoryStore};
///
/// let timings = TimingObserver::new();
/// let cache = CacheLayer::new(MemoryStore::new(64 << 20)).observer(timings.clone());
/// // … serve traffic …
/// let lookup = timings.lookup();
/// assert_eq!(lookup.count, 0);
/// assert_eq!(lookup.average(), None);
/// ```
#[derive(Clone, Debug, Default)]
pub struct TimingObserver {
    inner: Arc<[Times; 4]>,
}

#[derive(Debug)]
struct Times {
    count: AtomicU64,
    total_ns: AtomicU64,
    min_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Default for Times {
    fn default() -> Self {
        Self {
            count: AtomicU64::new(0),
            total_ns: AtomicU64::new(0),
            min_ns: AtomicU64::new(u64::MAX),
            max_ns: AtomicU64::new(0),
        }
    }
}

impl Times {
    fn add(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.total_ns.fetch_add(nanos, Ordering::Relaxed);
        self.min_ns.fetch_min(nanos, Ordering::Relaxed);
        self.max_ns.fetch_max(nanos, Ordering::Relaxed);
    }

    fn read(&self) -> OperationTimes {
        let count = self.count.load(Ordering::Relaxed);
        OperationTimes {
            count,
            total: Duration::from_nanos(self.total_ns.load(Ordering::Relaxed)),
            min: (count > 0).then(|| Duration::from_nanos(self.min_ns.load(Ordering::Relaxed))),
            max: (count > 0).then(|| Duration::from_nanos(self.max_ns.load(Ordering::Relaxed))),
        }
    }
}

/// One operation's times ([`TimingObserver`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperationTimes {
    /// How many were timed.
    pub count: u64,
    /// Their total.
    pub total: Duration,
    /// The shortest, once there is one.
    pub min: Option<Duration>,
    /// The longest, once there is one.
    pub max: Option<Duration>,
}

impl OperationTimes {
    /// The mean, once there is one.
    pub fn average(&self) -> Option<Duration> {
        let count = u32::try_from(self.count).ok().filter(|count| *count > 0)?;
        Some(self.total / count)
    }
}

const LOOKUP: usize = 0;
const ORIGIN: usize = 1;
const STORE_WRITE: usize = 2;
const COALESCE_WAIT: usize = 3;

impl TimingObserver {
    /// Times from zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lookups: a request's time in the cache before it was answered or went to the origin.
    pub fn lookup(&self) -> OperationTimes {
        self.inner[LOOKUP].read()
    }

    /// The origin's time to response headers.
    pub fn origin(&self) -> OperationTimes {
        self.inner[ORIGIN].read()
    }

    /// Store writes of stored responses.
    pub fn store_write(&self) -> OperationTimes {
        self.inner[STORE_WRITE].read()
    }

    /// Waits for another request's fetch that it answered.
    pub fn coalesce_wait(&self) -> OperationTimes {
        self.inner[COALESCE_WAIT].read()
    }

    /// Every operation by name (`lookup`, `origin`, `store_write`, `coalesce_wait`).
    pub fn snapshot(&self) -> BTreeMap<&'static str, OperationTimes> {
        BTreeMap::from([
            ("lookup", self.lookup()),
            ("origin", self.origin()),
            ("store_write", self.store_write()),
            ("coalesce_wait", self.coalesce_wait()),
        ])
    }
}

impl CacheObserver for TimingObserver {
    fn on_event(&self, event: &CacheEvent<'_>) {
        let timings = event.timings;
        if let Some(took) = timings.lookup {
            self.inner[LOOKUP].add(took);
        }
        if let Some(took) = timings.origin {
            self.inner[ORIGIN].add(took);
        }
        if let Some(took) = timings.store_write {
            self.inner[STORE_WRITE].add(took);
        }
        if let EventKind::Coalesced { waited } = event.kind {
            self.inner[COALESCE_WAIT].add(waited);
        }
    }
}
