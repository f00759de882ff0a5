//! Observability: the event funnel every event passes — a request's one outcome, what
//! became of the responses it meant to store, purges, store failures, removals from the
//! store — on its way to the stats, the [observers](CacheObserver) (the built-in
//! [`HitMissRatio`] and [`TimingObserver`], [`CacheMetrics`] for the `metrics` facade, your
//! own), and the request's tracing span.
//!
//! Store failures are also logged without flooding: a store that is down fails every
//! request, and one warning per failure would bury everything else in the logs.
//!
//! With no observer attached, none of this costs a request more than the stats' counters:
//! no clock is read and no event value is built.
//!
//! # What you can attach
//!
//! - **Observers** ([`CacheLayer::observer`](crate::CacheLayer::observer); closures are
//!   observers): told of every hit, coalesced wait (with how long), stale answer (which
//!   window), revalidation, miss, `only-if-cached` miss, refresh and bypass (with the
//!   reason), pass, store (bytes, TTL, tags), not-stored (reason), store error (operation,
//!   kind), purge (kind, mode, entries) and removal from the memory store (expired, evicted,
//!   replaced, removed). Each carries the route label (the axum pattern or the rule, never
//!   the path), the method, and the timings that exist: lookup, origin time to headers,
//!   store write. Several can be attached; one that panics is caught, counted
//!   (`observer_panics` in the stats) and logged, and the request goes on. Built in:
//!   [`HitMissRatio`] (in all and per route) and [`TimingObserver`] (count, total, min, max
//!   and average per operation), as aiocache's plugins.
//! - **Metrics** (feature `metrics`): `CacheLayer::metrics(CacheMetrics::new())` records
//!   through the `metrics` facade — requests by route, method and outcome, stores and
//!   not-stored by reason, purges, evictions by cause, store errors by store, operation and
//!   kind; gauges for entries, bytes, capacity, open circuit breakers and fetches in flight;
//!   histograms of lookup, origin, store-write and coalesced-wait seconds. Each counter
//!   equals the stats field it names. `examples/prometheus.rs` serves them at `/metrics`
//!   with `metrics-exporter-prometheus`:
//!
//!   ```text
//!   cargo run --example prometheus --features metrics
//!   curl -s localhost:3000/users/42 >/dev/null; curl -s localhost:3000/users/42 >/dev/null
//!   curl -s localhost:3000/metrics | grep requests_total
//!   http_cache_requests_total{route="/users/{id}",method="GET",outcome="miss"} 1
//!   http_cache_requests_total{route="/users/{id}",method="GET",outcome="hit"} 1
//!   ```
//!
//! - **Tracing**: each looked-up request gets a [`cache` span](#the-cache-span), with the
//!   key recorded hashed (keys can carry user ids);
//!   [`trace_keys(TraceKeys::Full)`](crate::CacheLayer::trace_keys) records it whole.
//! - **The outcome on the response**:
//!   [`outcome_extension(true)`](crate::CacheLayer::outcome_extension) puts a
//!   [`CacheOutcome`](crate::outcome::CacheOutcome) in the response's extensions for
//!   middleware and handlers to read;
//!   [`no_status_headers()`](crate::CacheLayer::no_status_headers) sends neither `x-cache`
//!   nor `Cache-Status`.
//!
//! ```
//! use tower_response_cache::observe::{CacheEvent, EventKind, HitMissRatio};
//! use tower_response_cache::{CacheLayer, MemoryStore};
//!
//! let ratio = HitMissRatio::new();
//! let cache = CacheLayer::new(MemoryStore::new(64 << 20))
//!     .observer(ratio.clone())
//!     .observer(|event: &CacheEvent<'_>| {
//!         if let EventKind::NotStored { reason } = event.kind {
//!             eprintln!("{:?} not stored: {}", event.route, reason.as_str());
//!         }
//!     });
//! // Later: ratio.total().ratio, ratio.routes()["/users/{id}"].hits
//! ```
//!
//! # The `cache` span
//!
//! Each request the cache looks up (GET and HEAD) gets a `cache` span inside whatever span
//! it is in (tower-http's `TraceLayer` request span), at `DEBUG` unless
//! [`CacheLayer::trace_level`](crate::CacheLayer::trace_level) says otherwise. A span no
//! subscriber wants costs a request a level check. Its fields:
//!
//! | field | value |
//! |---|---|
//! | `route` | the route label (the axum pattern, the rule, `(other)`) |
//! | `method` | `GET` or `HEAD` |
//! | `store` | the store's [`name`](crate::store::Capabilities::name) (`memory`, `redis`) |
//! | `key` | the key, hashed (xxh3, 16 hex digits) by default: keys can carry user ids ([`TraceKeys`]) |
//! | `outcome` | the `x-cache` status, lower case (`hit`, `miss`, `stale`, …) |
//! | `detail` | the `Cache-Status` detail, when there is one (`stale-if-error`, `private`, …) |
//! | `ttl` | seconds of freshness left (negative: stale), for answers from an entry |
//! | `age` | the `Age` sent, for answers from an entry |
//! | `collapsed` | `true` when the request waited for another's fetch |
//! | `stored` | whether the response was stored, once that is known (the span lasts until then) |
//!
//! Store failures are logged at `WARN`, at most once per 10 seconds per operation.
//!
//! # What it costs
//!
//! What each costs a memory hit (callgrind, user-space instructions per request over HTTP,
//! `/hello` 1 KiB, three runs each: `examples/bench_server memory` with `OBSERVE=observer`,
//! `metrics`, `tracing` or `span`, measured as `scripts/bench.sh` measures):
//!
//! | memory hit, `/hello` | instructions per request | against no observability |
//! |---|---|---|
//! | the commit before this work (87f6072), two sets of runs | 20 041–20 153 | |
//! | no observer, no subscriber (the default) | 20 070–20 109 | within that spread |
//! | a subscriber at `INFO` (1) | 20 072–20 089 | the same |
//! | one observer that does nothing (2) | 20 493–20 565 | +2% |
//! | [`CacheMetrics`] to the Prometheus recorder (3) | 21 055–21 073 | +5% |
//! | the `cache` span at `INFO` to `tracing-subscriber`'s `fmt` | 30 887–31 081 | +54% |
//!
//! 1. The `cache` span, at `DEBUG`, not wanted.
//! 2. The clock read three times, the event values built.
//! 3. A counter and a histogram per hit.
//!
//! The span's cost is the subscriber's (a registry slot and the fields formatted per span):
//! keep it at `DEBUG` in production unless you want it. Heap allocations of a hit without
//! observers are unchanged (6 per request, `cargo bench --bench hit`).

mod builtin;
mod event;
#[cfg(feature = "metrics")]
mod metrics;
mod observer;
pub(crate) mod trace;

pub use trace::TraceKeys;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use http::Method;

pub use builtin::{HitMissCounts, HitMissRatio, OperationTimes, TimingObserver};
pub use event::{CacheEvent, EventKind, StaleWindow, StoreOperation, Timings};
#[cfg(feature = "metrics")]
pub use metrics::CacheMetrics;
pub use observer::CacheObserver;
pub(crate) use observer::Observers;

use crate::stats::{CacheStats, Counter, Counters};
use crate::store::StoreError;
/// At most one message per interval; the ones in between are counted and reported with the
/// next.
#[derive(Debug)]
pub(crate) struct Throttle {
    start: Instant,
    interval: Duration,
    /// Milliseconds after `start` when the next message may be logged.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            start: Instant::now(),
            interval,
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed)` when a message may be logged now (with how many were held back
    /// since the last one); `None` when it is to be held back.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        let interval = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(interval),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

static THROTTLES: LazyLock<[Throttle; StoreOperation::COUNT]> =
    LazyLock::new(|| std::array::from_fn(|_| Throttle::new(Duration::from_secs(10))));

/// Where a layer's events go: its stats, and its observers when it has any.
#[derive(Clone, Debug, Default)]
pub(crate) struct Funnel {
    pub(crate) stats: CacheStats,
    pub(crate) observers: Option<Arc<Observers>>,
}

/// Whose event it is: a request's (its route's counters and its method), or the layer's
/// (purges, removals; counted under `(other)` where a route's counters are needed).
#[derive(Clone, Copy)]
pub(crate) struct Scope<'a> {
    pub(crate) route: Option<&'a Counters>,
    pub(crate) method: Option<&'a Method>,
}

impl<'a> Scope<'a> {
    /// A request's scope.
    pub(crate) fn request(route: &'a Counters, method: &'a Method) -> Self {
        Self {
            route: Some(route),
            method: Some(method),
        }
    }

    /// The layer's own scope: not a request's.
    pub(crate) const LAYER: Scope<'static> = Scope {
        route: None,
        method: None,
    };
}

impl Funnel {
    /// Whether observers are attached: what only they need is skipped otherwise.
    pub(crate) fn observed(&self) -> bool {
        self.observers.is_some()
    }

    /// A request's clock, when someone will read it.
    pub(crate) fn clock(&self) -> Option<Stopwatch> {
        self.observed().then(Stopwatch::start)
    }

    /// The one door: counts `kind` (for the total and the scope's route) and tells the
    /// observers.
    pub(crate) fn record(&self, scope: Scope<'_>, kind: EventKind, timings: Timings) {
        self.count(scope, kind);
        if let Some(observers) = &self.observers {
            observers.emit(&CacheEvent {
                kind,
                route: scope.route.map(Counters::label),
                method: scope.method,
                timings,
            });
        }
    }

    #[inline]
    fn count(&self, scope: Scope<'_>, kind: EventKind) {
        let stats = &self.stats;
        match kind {
            EventKind::Purged {
                kind,
                mode,
                entries,
            } => stats.record_purge(kind, mode, entries),
            EventKind::TagsIgnored { count } => stats.record_tags_ignored(count),
            kind => {
                let other;
                let route = match scope.route {
                    Some(route) => route,
                    None => {
                        other = stats.other();
                        &other
                    }
                };
                for counter in counters(kind).into_iter().flatten() {
                    stats.record(route, counter);
                }
            }
        }
    }

    /// A request's one outcome event ([`Outcome::event`](crate::outcome::Outcome)), or
    /// [`EventKind::Pass`]: every request ends once, here.
    pub(crate) fn request_ended(
        &self,
        scope: Scope<'_>,
        kind: EventKind,
        clock: Option<&Stopwatch>,
    ) {
        if self.observers.is_none() {
            // The hit path's case: the counters alone, without building the event.
            self.count(scope, kind);
            return;
        }
        let timings = match clock {
            Some(clock) if self.observed() => clock.timings(),
            _ => Timings::default(),
        };
        self.record(scope, kind, timings);
    }

    /// Tags past a limit were ignored when a response was stored.
    pub(crate) fn tags_ignored(&self, ignored: u64) {
        if ignored > 0 {
            self.record(
                Scope::LAYER,
                EventKind::TagsIgnored { count: ignored },
                Timings::default(),
            );
        }
    }

    /// A failed store operation: counted (in the total and in the scope's route), told and
    /// logged.
    pub(crate) fn store_failed(
        &self,
        scope: Scope<'_>,
        operation: StoreOperation,
        key: &str,
        error: &StoreError,
    ) {
        let kind = EventKind::StoreError {
            operation,
            kind: error.kind(),
        };
        self.record(scope, kind, Timings::default());
        store_error(operation, key, error);
    }
}

/// The counters an event moves: the one table from what happened to the counts (a coalesced
/// answer is a hit as well, a tiered hit names its tier; events that are no route's —
/// removals, flushes — move none, purges are counted apart).
#[inline]
fn counters(kind: EventKind) -> [Option<Counter>; 2] {
    match kind {
        EventKind::Hit { tier, .. } => [Some(Counter::Hit), tier.map(Counter::TierHit)],
        EventKind::Coalesced { .. } => [Some(Counter::Hit), Some(Counter::Coalesced)],
        EventKind::Stale { window, .. } => [
            Some(match window {
                StaleWindow::WhileRevalidate => Counter::StaleWhileRevalidate,
                StaleWindow::IfError => Counter::StaleIfError,
            }),
            None,
        ],
        EventKind::Revalidated => [Some(Counter::Revalidated), None],
        EventKind::Miss | EventKind::OnlyIfCachedMiss => [Some(Counter::Miss), None],
        EventKind::Refresh { .. } => [Some(Counter::Refresh), None],
        EventKind::Bypass { .. } => [Some(Counter::Bypass), None],
        EventKind::Pass => [Some(Counter::Pass), None],
        EventKind::CoalesceTimeout => [Some(Counter::CoalesceTimeout), None],
        EventKind::Stored { .. } => [Some(Counter::Stored), None],
        EventKind::NotStored { reason } => [Some(Counter::NotStored(reason)), None],
        EventKind::StoreError { kind, .. } => [Some(Counter::StoreError(kind)), None],
        EventKind::Purged { .. }
        | EventKind::TagsIgnored { .. }
        | EventKind::Removed { .. }
        | EventKind::L1Flushed { .. } => [None, None],
    }
}

/// When a request's steps began and ended, for the timings of its events: read only when
/// observers are attached. Nanoseconds after `start`, plus one (0: not yet).
#[derive(Debug)]
pub(crate) struct Stopwatch {
    /// Tokio's clock: a test on paused time sees the durations it advanced.
    start: tokio::time::Instant,
    lookup: AtomicU64,
    origin_from: AtomicU64,
    origin: AtomicU64,
    waited: AtomicU64,
}

impl Stopwatch {
    fn start() -> Self {
        Self {
            start: tokio::time::Instant::now(),
            lookup: AtomicU64::new(0),
            origin_from: AtomicU64::new(0),
            origin: AtomicU64::new(0),
            waited: AtomicU64::new(0),
        }
    }

    fn elapsed(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn read(cell: &AtomicU64) -> Option<Duration> {
        match cell.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos - 1)),
        }
    }

    /// The lookup answered (the first answer counts).
    pub(crate) fn lookup_done(&self) {
        let _ =
            self.lookup
                .compare_exchange(0, self.elapsed(), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The request goes to the origin now.
    pub(crate) fn origin_started(&self) {
        self.origin_from.store(self.elapsed(), Ordering::Relaxed);
    }

    /// The origin's response head (or error) arrived.
    pub(crate) fn origin_done(&self) {
        let from = self.origin_from.load(Ordering::Relaxed);
        if from > 0 {
            let took = self.elapsed().saturating_sub(from);
            self.origin.store(took.saturating_add(1), Ordering::Relaxed);
        }
    }

    /// The request waited `waited` for another's fetch.
    pub(crate) fn set_waited(&self, waited: Duration) {
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX - 1);
        self.waited
            .store(nanos.saturating_add(1), Ordering::Relaxed);
    }

    pub(crate) fn waited(&self) -> Duration {
        Self::read(&self.waited).unwrap_or_default()
    }

    /// The timings so far.
    pub(crate) fn timings(&self) -> Timings {
        Timings {
            lookup: Self::read(&self.lookup),
            origin: Self::read(&self.origin),
            store_write: None,
        }
    }
}

/// Warns of a failed store operation, at most once per 10 s per operation.
fn store_error(operation: StoreOperation, key: &str, error: &StoreError) {
    let Some(suppressed) = THROTTLES[operation.index()].allow() else {
        return;
    };
    let operation = match operation {
        StoreOperation::Lock => "fill lock",
        other => other.as_str(),
    };
    // The key's length, not the key: a URL may carry tokens that do not belong in logs.
    tracing::warn!(
        %error,
        key_len = key.len(),
        operation,
        suppressed,
        "cache store {operation} failed; the request is served without the cache ({suppressed} similar failures not logged)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_one_through_per_interval_and_counts_the_rest() {
        let throttle = Throttle::new(Duration::from_millis(300));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(throttle.allow(), Some(2));
    }
}
