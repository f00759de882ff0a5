//! Hit, miss and storage counters, globally and per route.
//!
//! [`CacheLayer::stats`](crate::CacheLayer::stats) returns a [`CacheStats`] handle: cheap to
//! clone, counting with relaxed atomics, and read with [`CacheStats::snapshot`]. Every
//! request that reaches the layer increments exactly one outcome counter, the one its
//! `x-cache` value maps to (`HIT` → hits, coalesced requests included; `MISS` and
//! `UNCACHEABLE` → misses; `REFRESH`, `REVALIDATED`, `STALE`, `BYPASS`; no `x-cache` →
//! passes); every response the cache meant to store later counts as stored, not stored
//! (by reason), or as a store error when the write fails. The JSON form is described at
//! [`StatsSnapshot`].
//!
//! ```
//! use tower_response_cache::{CacheLayer, MemoryStore};
//!
//! let layer = CacheLayer::new(MemoryStore::new(64 << 20));
//! let stats = layer.stats();
//! let snapshot = stats.snapshot();
//! assert_eq!(snapshot.total.hits, 0);
//! assert_eq!(snapshot.hit_ratio(), 0.0);
//! println!("{}", serde_json::to_string(&snapshot).unwrap());
//! ```

// Past 600 lines on purpose: one subject, the counters and their snapshot, a third of it
// docs.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

use crate::policy::NotStoredReason;
use crate::store::{L1Flushes, PurgeMode, Store, StoreErrorKind, Tier};

/// Routes tracked separately at most (besides `(other)`); further routes share the
/// `(other)` counters so that the map stays bounded whatever the traffic.
const MAX_ROUTES: usize = 256;

/// The label of requests that match no route.
pub(crate) const OTHER_ROUTE: &str = "(other)";

/// One set of counters (the total, or one route's).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    /// Of the hits, those a tiered store answered from each tier.
    tier_hits: [AtomicU64; 2],
    misses: AtomicU64,
    bypasses: AtomicU64,
    refreshes: AtomicU64,
    passes: AtomicU64,
    coalesced: AtomicU64,
    coalesce_timeouts: AtomicU64,
    stale_if_error: AtomicU64,
    stale_while_revalidate: AtomicU64,
    revalidated: AtomicU64,
    stores: AtomicU64,
    not_stored: [AtomicU64; NotStoredReason::ALL.len()],
    store_errors: [AtomicU64; StoreErrorKind::ALL.len()],
    /// A configured rule's counters: listed in snapshots before any traffic.
    rule: AtomicBool,
    /// The route label the counters are listed under (events carry it).
    label: Arc<str>,
}

/// Which counter to move: the counters' own names, each one field of [`Counts`]. What
/// happened is an [`EventKind`](crate::observe::EventKind); the funnel maps it to these in
/// one place.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Counter {
    Hit,
    /// A hit a tiered store answered from this tier (counted as a hit as well).
    TierHit(Tier),
    Miss,
    Bypass,
    Refresh,
    Pass,
    Coalesced,
    CoalesceTimeout,
    StaleIfError,
    StaleWhileRevalidate,
    Revalidated,
    Stored,
    NotStored(NotStoredReason),
    StoreError(StoreErrorKind),
}

impl Counters {
    /// Counters for the route labelled `label`.
    pub(crate) fn labelled(label: Arc<str>) -> Self {
        Self {
            label,
            ..Self::default()
        }
    }

    /// The route label: the axum route pattern, the rule, `(other)`.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    fn counter(&self, counter: Counter) -> &AtomicU64 {
        match counter {
            Counter::Hit => &self.hits,
            Counter::TierHit(tier) => &self.tier_hits[tier as usize],
            Counter::Miss => &self.misses,
            Counter::Bypass => &self.bypasses,
            Counter::Refresh => &self.refreshes,
            Counter::Pass => &self.passes,
            Counter::Coalesced => &self.coalesced,
            Counter::CoalesceTimeout => &self.coalesce_timeouts,
            Counter::StaleIfError => &self.stale_if_error,
            Counter::StaleWhileRevalidate => &self.stale_while_revalidate,
            Counter::Revalidated => &self.revalidated,
            Counter::Stored => &self.stores,
            Counter::NotStored(reason) => &self.not_stored[reason.index()],
            Counter::StoreError(kind) => &self.store_errors[kind.index()],
        }
    }

    fn snapshot(&self) -> Counts {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let hits = load(&self.hits);
        let misses = load(&self.misses);
        let coalesced = load(&self.coalesced);
        Counts {
            hits,
            l1_hits: load(&self.tier_hits[Tier::L1 as usize]),
            l2_hits: load(&self.tier_hits[Tier::L2 as usize]),
            misses,
            coalesced,
            coalesce_timeouts: load(&self.coalesce_timeouts),
            stale_if_error: load(&self.stale_if_error),
            stale_while_revalidate: load(&self.stale_while_revalidate),
            bypasses: load(&self.bypasses),
            refreshes: load(&self.refreshes),
            passes: load(&self.passes),
            revalidated: load(&self.revalidated),
            stores: load(&self.stores),
            not_stored: NotStoredReason::ALL
                .iter()
                .map(|reason| {
                    (
                        reason.as_str().to_owned(),
                        load(&self.not_stored[reason.index()]),
                    )
                })
                .filter(|(_, count)| *count > 0)
                .collect(),
            store_errors: self.store_errors.iter().map(load).sum(),
            store_errors_by_kind: StoreErrorKind::ALL
                .iter()
                .map(|kind| {
                    (
                        kind.as_str().to_owned(),
                        load(&self.store_errors[kind.index()]),
                    )
                })
                .filter(|(_, count)| *count > 0)
                .collect(),
            hit_ratio: ratio(hits, misses),
        }
    }
}

fn ratio(hits: u64, misses: u64) -> f64 {
    let lookups = hits.saturating_add(misses);
    if lookups == 0 {
        0.0
    } else {
        hits as f64 / lookups as f64
    }
}

/// A cheap-to-clone handle on a layer's counters.
#[derive(Clone, Debug, Default)]
pub struct CacheStats {
    inner: Arc<StatsInner>,
}

#[derive(Debug)]
struct StatsInner {
    total: Counters,
    // Keys are route patterns from the configuration and axum, not request data: a fast
    // hasher is safe.
    routes: RwLock<HashMap<Arc<str>, Arc<Counters>, Xxh3DefaultBuilder>>,
    other: Arc<Counters>,
    purges: PurgeCounters,
    observer_panics: AtomicU64,
    /// The layer's store, for what it counts itself (a tiered store's L1 flushes).
    store: OnceLock<Arc<dyn Store>>,
}

/// The layer's purge counters.
#[derive(Debug, Default)]
struct PurgeCounters {
    /// By kind, hard then soft.
    by_kind: [[AtomicU64; 2]; PurgeKind::ALL.len()],
    entries: AtomicU64,
    failed: AtomicU64,
    tags_ignored: AtomicU64,
}

/// What a purge was for, as counted: a stats label each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PurgeKind {
    /// A URL ([`CacheHandle::invalidate`](crate::CacheHandle::invalidate)).
    Url,
    /// A key ([`CacheHandle::invalidate_key`](crate::CacheHandle::invalidate_key)).
    Key,
    /// A path prefix ([`CacheHandle::invalidate_prefix`](crate::CacheHandle::invalidate_prefix)).
    Prefix,
    /// A tag ([`CacheHandle::invalidate_tag`](crate::CacheHandle::invalidate_tag)).
    Tag,
    /// The layer's whole namespace ([`CacheHandle::clear`](crate::CacheHandle::clear)).
    Clear,
    /// The target of a successful unsafe request (RFC 9111 §4.4).
    UnsafeMethod,
    /// A `PURGE` request ([`CacheLayer::purge_method`](crate::CacheLayer::purge_method)).
    PurgeMethod,
}

impl PurgeKind {
    /// Every kind, in a stable order.
    pub const ALL: [Self; 7] = [
        Self::Url,
        Self::Key,
        Self::Prefix,
        Self::Tag,
        Self::Clear,
        Self::UnsafeMethod,
        Self::PurgeMethod,
    ];

    /// A short, stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Url => "url",
            Self::Key => "key",
            Self::Prefix => "prefix",
            Self::Tag => "tag",
            Self::Clear => "clear",
            Self::UnsafeMethod => "unsafe-method",
            Self::PurgeMethod => "purge-method",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl PurgeCounters {
    fn snapshot(&self) -> PurgeCounts {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let by_mode = |mode: usize| -> BTreeMap<String, u64> {
            PurgeKind::ALL
                .iter()
                .map(|kind| {
                    (
                        kind.as_str().to_owned(),
                        load(&self.by_kind[kind.index()][mode]),
                    )
                })
                .filter(|(_, count)| *count > 0)
                .collect()
        };
        PurgeCounts {
            hard: by_mode(0),
            soft: by_mode(1),
            entries: load(&self.entries),
            failed: load(&self.failed),
            tags_ignored: load(&self.tags_ignored),
        }
    }
}

/// What the layer purged: counted for the whole layer, not per route (a purge by tag or
/// prefix spans routes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PurgeCounts {
    /// Hard purges by [`PurgeKind::as_str`] (`url`, `key`, `prefix`, `tag`, `clear`,
    /// `unsafe-method`, `purge-method`; kinds with a zero count are left out), failed ones
    /// included.
    pub hard: BTreeMap<String, u64>,
    /// Soft purges by kind, as `hard`.
    pub soft: BTreeMap<String, u64>,
    /// Entries the purges removed (or, soft, made stale), as the stores reported them.
    pub entries: u64,
    /// Purges whose store operation failed (each is a store error too).
    pub failed: u64,
    /// Tags ignored when responses were stored: past a [`TagLimits`](crate::policy::TagLimits)
    /// limit, holding a control character, or not UTF-8.
    pub tags_ignored: u64,
}

impl Default for StatsInner {
    fn default() -> Self {
        let label: Arc<str> = Arc::from(OTHER_ROUTE);
        let other = Arc::new(Counters::labelled(Arc::clone(&label)));
        let mut routes = HashMap::with_hasher(Xxh3DefaultBuilder);
        routes.insert(label, Arc::clone(&other));
        Self {
            total: Counters::labelled(Arc::from("(total)")),
            routes: RwLock::new(routes),
            other,
            purges: PurgeCounters::default(),
            observer_panics: AtomicU64::new(0),
            store: OnceLock::new(),
        }
    }
}

impl CacheStats {
    /// Fresh counters, all zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters as they are now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let routes = match self.inner.routes.read() {
            Ok(routes) => routes,
            Err(poisoned) => poisoned.into_inner(),
        };
        StatsSnapshot {
            total: self.inner.total.snapshot(),
            // The routes with a rule, and those that saw cached traffic: not every route
            // the router has, nor an all-zero `(other)`.
            routes: routes
                .iter()
                .map(|(label, counters)| (label, counters, counters.snapshot()))
                .filter(|(_, counters, counts)| {
                    counters.rule.load(Ordering::Relaxed) || counts.saw_cached_traffic()
                })
                .map(|(label, _, counts)| (label.to_string(), counts))
                .collect(),
            purges: self.inner.purges.snapshot(),
            observer_panics: self.inner.observer_panics.load(Ordering::Relaxed),
            l1_flushes: self
                .inner
                .store
                .get()
                .and_then(|store| store.gauges().l1_flushes),
        }
    }

    /// Reports, with the counters, what `store` counts itself.
    pub(crate) fn watch_store(&self, store: Arc<dyn Store>) {
        let _ = self.inner.store.set(store);
    }

    /// Counts an observer's panic.
    pub(crate) fn record_observer_panic(&self) {
        self.inner.observer_panics.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a purge of `kind` in `mode`: the entries it purged, or a failure (`None`).
    pub(crate) fn record_purge(&self, kind: PurgeKind, mode: PurgeMode, purged: Option<u64>) {
        let purges = &self.inner.purges;
        let mode = match mode {
            PurgeMode::Soft => 1,
            _ => 0,
        };
        purges.by_kind[kind.index()][mode].fetch_add(1, Ordering::Relaxed);
        match purged {
            Some(entries) => purges.entries.fetch_add(entries, Ordering::Relaxed),
            None => purges.failed.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Counts tags ignored past a limit.
    pub(crate) fn record_tags_ignored(&self, ignored: u64) {
        self.inner
            .purges
            .tags_ignored
            .fetch_add(ignored, Ordering::Relaxed);
    }

    /// Moves `counter` for the total and for `route`.
    pub(crate) fn record(&self, route: &Counters, counter: Counter) {
        self.inner
            .total
            .counter(counter)
            .fetch_add(1, Ordering::Relaxed);
        route.counter(counter).fetch_add(1, Ordering::Relaxed);
    }

    /// The counters of requests that match no route.
    pub(crate) fn other(&self) -> Arc<Counters> {
        Arc::clone(&self.inner.other)
    }

    /// The counters of a configured rule, listed in snapshots from the start.
    pub(crate) fn rule_route(&self, label: &str) -> Arc<Counters> {
        let counters = self.route(label);
        if !counters.rule.load(Ordering::Relaxed) {
            counters.rule.store(true, Ordering::Relaxed);
        }
        counters
    }

    /// The counters of the route labelled `label`, created on first use; past
    /// [`MAX_ROUTES`] routes, the shared `(other)` counters.
    pub(crate) fn route(&self, label: &str) -> Arc<Counters> {
        self.route_with(label, || {})
    }

    /// [`route`](Self::route), calling `first_seen` when `label` gets its counters.
    pub(crate) fn route_with(&self, label: &str, first_seen: impl FnOnce()) -> Arc<Counters> {
        if let Ok(routes) = self.inner.routes.read() {
            if let Some(counters) = routes.get(label) {
                return Arc::clone(counters);
            }
            if routes.len() > MAX_ROUTES {
                return Arc::clone(&self.inner.other);
            }
        }
        let mut routes = match self.inner.routes.write() {
            Ok(routes) => routes,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(counters) = routes.get(label) {
            return Arc::clone(counters);
        }
        if routes.len() > MAX_ROUTES {
            return Arc::clone(&self.inner.other);
        }
        let label: Arc<str> = Arc::from(label);
        let counters = Arc::new(Counters::labelled(Arc::clone(&label)));
        routes.insert(label, Arc::clone(&counters));
        drop(routes);
        first_seen();
        counters
    }
}

/// Counter values at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Counts {
    /// Requests answered from a fresh entry (`x-cache: HIT`), those that waited for another
    /// request's fetch included (see `coalesced`).
    pub hits: u64,
    /// Of the `hits`, those a [`TieredStore`](crate::TieredStore) answered from the
    /// instance's memory tier.
    #[serde(default)]
    pub l1_hits: u64,
    /// Of the `hits`, those a [`TieredStore`](crate::TieredStore) answered from the shared
    /// tier (Redis).
    #[serde(default)]
    pub l2_hits: u64,
    /// Lookups that found no usable entry and went to the service (`x-cache: MISS`, or
    /// `UNCACHEABLE` when the response could not be stored), or answered 504 to an
    /// `only-if-cached` request.
    pub misses: u64,
    /// Requests that neither read nor wrote the cache (`x-cache: BYPASS`:
    /// `Cache-Control: no-store`, no key).
    pub bypasses: u64,
    /// Requests that skipped the stored entry and refreshed it (`x-cache: REFRESH`:
    /// `no-cache`, bypass header).
    pub refreshes: u64,
    /// Requests the cache does not apply to (no `x-cache`: other methods, disabled routes).
    pub passes: u64,
    /// Of the `hits`, those that waited for a fetch of the key in progress and were
    /// answered with its response (`Cache-Status: …; fwd=miss; collapsed`).
    pub coalesced: u64,
    /// Waits for another request's fetch that timed out (the request then called the
    /// service itself, and is counted as a miss or refresh).
    pub coalesce_timeouts: u64,
    /// Requests whose origin failed (an error, or 500/502/503/504) and that were answered
    /// with a stale entry instead (`x-cache: STALE`, `…; detail=stale-if-error`; RFC 5861).
    pub stale_if_error: u64,
    /// Requests answered with a stale entry while it was refreshed in the background
    /// (`x-cache: STALE`, `…; detail=stale-while-revalidate`; RFC 5861). The background
    /// refresh itself counts only in `stores` / `not_stored`.
    pub stale_while_revalidate: u64,
    /// Requests answered with a stale entry the origin confirmed with `304 Not Modified`
    /// (`x-cache: REVALIDATED`; RFC 9111 §4.3): refreshed without its body being sent again.
    #[serde(default)]
    pub revalidated: u64,
    /// Responses stored.
    pub stores: u64,
    /// Responses not stored, by [`NotStoredReason::as_str`] (reasons with a zero count are
    /// left out).
    pub not_stored: BTreeMap<String, u64>,
    /// Store operations that failed (the request was served by the service instead).
    pub store_errors: u64,
    /// Failed store operations by [`StoreErrorKind::as_str`] (`timeout`, `unavailable`,
    /// `decode`, …; kinds with a zero count are left out).
    pub store_errors_by_kind: BTreeMap<String, u64>,
    /// `hits / (hits + misses)`: the share of lookups answered without a call to the
    /// service; zero before the first lookup.
    pub hit_ratio: f64,
}

impl Counts {
    /// Whether any request used the cache: anything counted but `passes`.
    fn saw_cached_traffic(&self) -> bool {
        let Self {
            hits,
            l1_hits: _,
            l2_hits: _,
            misses,
            bypasses,
            refreshes,
            passes: _,
            coalesced,
            coalesce_timeouts,
            stale_if_error,
            stale_while_revalidate,
            revalidated,
            stores,
            not_stored,
            store_errors,
            store_errors_by_kind: _,
            hit_ratio: _,
        } = self;
        hits + misses
            + bypasses
            + refreshes
            + coalesced
            + coalesce_timeouts
            + stale_if_error
            + stale_while_revalidate
            + revalidated
            + stores
            + store_errors
            > 0
            || !not_stored.is_empty()
    }

    /// Responses not stored, all reasons together.
    pub fn not_stored_total(&self) -> u64 {
        self.not_stored.values().sum()
    }
}

/// The counters of a layer at one moment: the total, and each route's.
///
/// # JSON
///
/// Serialized (serde; [`stats_route`](crate::axum::stats_route) serves it), the total is
/// **flat** — its fields are the object's own, not under a `total` key as in the struct —
/// and `routes` maps each route to the same fields:
///
/// ```json
/// {
///   "hits": 1, "misses": 1, "bypasses": 0, "refreshes": 0, "passes": 0,
///   "coalesced": 0, "coalesce_timeouts": 0, "stale_if_error": 0,
///   "stale_while_revalidate": 0, "revalidated": 0, "stores": 1,
///   "not_stored": {}, "store_errors": 0, "store_errors_by_kind": {}, "hit_ratio": 0.5,
///   "routes": {
///     "/users/{id}": { "hits": 1, "misses": 1, "...": "the same fields" }
///   },
///   "purges": {
///     "hard": { "tag": 2, "unsafe-method": 1 }, "soft": { "prefix": 1 },
///     "entries": 14, "failed": 0, "tags_ignored": 0
///   }
/// }
/// ```
///
/// `purges` ([`PurgeCounts`]) counts the layer's purges by kind and mode; its labels are
/// those of [`PurgeKind::as_str`].
///
/// Each field is documented at [`Counts`]. `not_stored` and `store_errors_by_kind` list
/// only the labels with a count above zero; the labels are:
///
/// | `not_stored` label | why the response was not stored ([`NotStoredReason`]) |
/// |---|---|
/// | `head` | the request was a HEAD |
/// | `status` | the status is not in the cacheable set |
/// | `no-store` | the response said `no-store` |
/// | `private` | the response said `private` |
/// | `no-cache` | the response said `no-cache` and cannot be kept for revalidation |
/// | `vary-star` | the response said `Vary: *` |
/// | `authorization` | the request had `Authorization`; the response did not allow sharing |
/// | `cookie` | the request had `Cookie`; the response did not say `public` / `s-maxage` |
/// | `set-cookie` | the response set a cookie |
/// | `too-large` | the body was over `max_body_size` |
/// | `no-freshness` | no TTL source gave it a freshness above zero |
/// | `trailers` | the body had trailers |
/// | `incomplete` | the body failed, was cut short, or the client went away |
/// | `invalidated` | the key was invalidated while the response was fetched |
/// | `superseded` | a newer response for the key was stored first |
/// | `malformed` | its `Content-Length` was not one number |
///
/// `store_errors_by_kind` labels: `unavailable`, `timeout`, `decode`, `unsupported`,
/// `other` ([`StoreErrorKind`]).
///
/// `routes` holds the routes that have a rule ([`CacheLayer::route`](crate::CacheLayer::route),
/// `route_prefix` as `/prefix*`, or a [`for_route`](crate::CacheLayer::for_route) layer's
/// route), and the axum route patterns that saw cached traffic (passes alone do not list a
/// route); requests with no route pattern and no rule count under `(other)`, listed once it
/// has counts. Past 256 routes, further ones count under `(other)`.
///
/// ```
/// use tower_response_cache::policy::NotStoredReason;
///
/// // The table above lists every label, in this order.
/// let labels = NotStoredReason::ALL.map(NotStoredReason::as_str);
/// assert_eq!(labels, [
///     "head", "status", "no-store", "private", "no-cache", "vary-star", "authorization",
///     "cookie", "set-cookie", "too-large", "no-freshness", "trailers", "incomplete",
///     "invalidated", "superseded", "malformed",
/// ]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// All requests together: in JSON, the object's own fields (flattened).
    #[serde(flatten)]
    pub total: Counts,
    /// Per route: by route pattern (`/users/{id}`), rule (`/static/*` for a prefix rule) or
    /// `(other)`; only routes with a rule or with cached traffic.
    pub routes: BTreeMap<String, Counts>,
    /// The layer's purges.
    #[serde(default)]
    pub purges: PurgeCounts,
    /// Panics of [observers](crate::observe::CacheObserver), caught (the requests went on).
    #[serde(default)]
    pub observer_panics: u64,
    /// On a [`TieredStore`](crate::TieredStore): how often its memory tier was emptied,
    /// by reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l1_flushes: Option<L1Flushes>,
}

impl StatsSnapshot {
    /// `hits / (hits + misses)` over all requests.
    pub fn hit_ratio(&self) -> f64 {
        self.total.hit_ratio
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_count_for_total_and_route() {
        let stats = CacheStats::new();
        let users = stats.route("/users/{id}");
        stats.record(&users, Counter::Hit);
        stats.record(&users, Counter::Hit);
        stats.record(&users, Counter::Miss);
        stats.record(&users, Counter::NotStored(NotStoredReason::Private));
        let other = stats.route(OTHER_ROUTE);
        stats.record(&other, Counter::Miss);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.total.hits, 2);
        assert_eq!(snapshot.total.misses, 2);
        assert_eq!(snapshot.hit_ratio(), 0.5);
        let route = &snapshot.routes["/users/{id}"];
        assert_eq!((route.hits, route.misses), (2, 1));
        assert_eq!(route.not_stored["private"], 1);
        assert_eq!(route.not_stored_total(), 1);
    }

    #[test]
    fn route_map_is_bounded() {
        let stats = CacheStats::new();
        for i in 0..MAX_ROUTES + 50 {
            let counters = stats.route(&format!("/r{i}"));
            stats.record(&counters, Counter::Hit);
        }
        let snapshot = stats.snapshot();
        assert!(snapshot.routes.len() <= MAX_ROUTES + 1);
        assert_eq!(snapshot.total.hits, (MAX_ROUTES + 50) as u64);
        assert!(snapshot.routes[OTHER_ROUTE].hits >= 50);
    }

    #[test]
    fn snapshots_list_rules_and_routes_with_cached_traffic_only() {
        let stats = CacheStats::new();
        stats.rule_route("/configured");
        let passed = stats.route("/passed-only");
        stats.record(&passed, Counter::Pass);
        let used = stats.route("/used");
        stats.record(&used, Counter::Miss);
        let snapshot = stats.snapshot();
        let labels: Vec<&str> = snapshot.routes.keys().map(String::as_str).collect();
        assert_eq!(labels, ["/configured", "/used"], "no all-zero (other)");
        assert_eq!(snapshot.total.passes, 1, "passes still count in the total");
    }

    #[test]
    fn snapshot_round_trips_through_json() {
        let stats = CacheStats::new();
        let route = stats.route("/a");
        stats.record(&route, Counter::Stored);
        let snapshot = stats.snapshot();
        let json = serde_json::to_string(&snapshot).unwrap();
        assert!(json.contains("\"stores\":1"), "{json}");
        let back: StatsSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snapshot);
    }
}
