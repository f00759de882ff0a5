//! [`CacheMetrics`]: the layer's events as counters, gauges and histograms through the
//! [`metrics`](https://docs.rs/metrics) facade.

use std::collections::HashMap;
use std::sync::{Arc, Once, OnceLock, RwLock};

use metrics::{Counter, Histogram, Label, SharedString, Unit};
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

use super::event::{CacheEvent, EventKind, StaleWindow};
use super::observer::CacheObserver;
use crate::coalesce::Coalescer;
use crate::policy::NotStoredReason;
use crate::store::{Store, Tier};

/// The layer's metrics through the [`metrics`](https://docs.rs/metrics) facade, to whatever
/// recorder the application installed (`metrics-exporter-prometheus` for Prometheus);
/// attached with [`CacheLayer::metrics`](crate::CacheLayer::metrics). The stats stay the
/// source of truth: each counter equals the stats field named here, and the recorder is one
/// more observer. Names follow Prometheus conventions, under a prefix (`http_cache` by
/// default); labels are bounded (route labels, methods, reasons — never a key or a path).
///
/// | metric | type | labels | stats |
/// |---|---|---|---|
/// | `http_cache_requests_total` | counter | `route`, `method`, `outcome` | `hits` (coalesced included), `misses`, `bypasses`, `refreshes`, `passes`, `revalidated`, `stale_if_error`, `stale_while_revalidate`: the outcome label is the field's name, singular (`hit`, `miss`, `bypass`, `refresh`, `pass`, `revalidated`, `stale_if_error`, `stale_while_revalidate`) |
/// | `http_cache_tier_hits_total` | counter | `route`, `tier` (`l1`, `l2`) | `l1_hits`, `l2_hits` ([`TieredStore`](crate::TieredStore)) |
/// | `http_cache_coalesced_total` | counter | `route`, `method` | `coalesced` |
/// | `http_cache_coalesce_timeouts_total` | counter | `route` | `coalesce_timeouts` |
/// | `http_cache_stores_total` | counter | `route` | `stores` |
/// | `http_cache_not_stored_total` | counter | `route`, `reason` | `not_stored` |
/// | `http_cache_store_errors_total` | counter | `store`, `operation`, `kind` | `store_errors` |
/// | `http_cache_purges_total` | counter | `kind`, `mode` | `purges.hard`, `purges.soft` |
/// | `http_cache_purged_entries_total` | counter | | `purges.entries` |
/// | `http_cache_purge_failures_total` | counter | | `purges.failed` |
/// | `http_cache_tags_ignored_total` | counter | | `purges.tags_ignored` |
/// | `http_cache_evictions_total` | counter | `store`, `cause` (`expired`, `evicted`, `replaced`, `removed`) | [`MemoryStore::removals`](crate::MemoryStore::removals) |
/// | `http_cache_entries` | gauge | `store` | |
/// | `http_cache_stored_bytes` | gauge | `store` | |
/// | `http_cache_capacity_bytes` | gauge | `store` | |
/// | `http_cache_open_circuit_breakers` | gauge | `store` | |
/// | `http_cache_l1_flushes_total` | counter | `store`, `reason` (`reconnected`, `heartbeat`, `lagged`, `flushed`, `cleared`) | [`TieredStore::flushes`](crate::TieredStore::flushes) |
/// | `http_cache_inflight_fetches` | gauge | | |
/// | `http_cache_lookup_duration_seconds` | histogram | `route` | |
/// | `http_cache_origin_duration_seconds` | histogram | `route` | |
/// | `http_cache_store_write_duration_seconds` | histogram | `route` | |
/// | `http_cache_coalesce_wait_seconds` | histogram | `route` | |
///
/// A route's handles are registered with the recorder on its first event and kept: install
/// the recorder before the layer serves. Gauges are set as events pass — the store's on stores, removals and purges (where the
/// store knows them: [`Store::gauges`]), the fetches in flight on every request that does
/// not hit — so they are as fresh as the traffic. Every metric also carries the labels
/// given to [`label`](Self::label), to tell several layers apart.
///
/// ```
/// use tower_response_cache::observe::CacheMetrics;
/// use tower_response_cache::{CacheLayer, MemoryStore};
///
/// // With a recorder installed (metrics_exporter_prometheus::PrometheusBuilder and so on):
/// let cache = CacheLayer::new(MemoryStore::new(64 << 20))
///     .metrics(CacheMetrics::new().prefix("api_cache").label("layer", "api"));
/// ```
#[derive(Clone, Debug)]
pub struct CacheMetrics {
    prefix: String,
    labels: Vec<Label>,
}

impl Default for CacheMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CacheMetrics {
    /// The metrics as listed, prefixed `http_cache`.
    pub fn new() -> Self {
        Self {
            prefix: "http_cache".to_owned(),
            labels: Vec::new(),
        }
    }

    /// The metric names' prefix (`http_cache` by default): `{prefix}_requests_total` and so
    /// on.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// A label every metric carries (say `layer="api"`, to tell two layers apart).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push(Label::new(key.into(), value.into()));
        self
    }

    /// The observer that records them for a layer on `store`.
    pub(crate) fn observer(self, store: Arc<dyn Store>, coalescer: Arc<Coalescer>) -> Recorder {
        let name = |suffix: &str| {
            SharedString::from(Arc::<str>::from(format!("{}_{suffix}", self.prefix)))
        };
        Recorder {
            names: Names {
                requests: name("requests_total"),
                coalesced: name("coalesced_total"),
                tier_hits: name("tier_hits_total"),
                coalesce_timeouts: name("coalesce_timeouts_total"),
                stores: name("stores_total"),
                not_stored: name("not_stored_total"),
                store_errors: name("store_errors_total"),
                purges: name("purges_total"),
                purged_entries: name("purged_entries_total"),
                purge_failures: name("purge_failures_total"),
                tags_ignored: name("tags_ignored_total"),
                evictions: name("evictions_total"),
                entries: name("entries"),
                stored_bytes: name("stored_bytes"),
                capacity: name("capacity_bytes"),
                open_breakers: name("open_circuit_breakers"),
                l1_flushes: name("l1_flushes_total"),
                inflight: name("inflight_fetches"),
                lookup: name("lookup_duration_seconds"),
                origin: name("origin_duration_seconds"),
                store_write: name("store_write_duration_seconds"),
                coalesce_wait: name("coalesce_wait_seconds"),
            },
            labels: self.labels,
            store_name: store.capabilities().name,
            store,
            coalescer,
            described: Once::new(),
            routes: RwLock::default(),
        }
    }
}

struct Names {
    requests: SharedString,
    coalesced: SharedString,
    tier_hits: SharedString,
    coalesce_timeouts: SharedString,
    stores: SharedString,
    not_stored: SharedString,
    store_errors: SharedString,
    purges: SharedString,
    purged_entries: SharedString,
    purge_failures: SharedString,
    tags_ignored: SharedString,
    evictions: SharedString,
    entries: SharedString,
    stored_bytes: SharedString,
    capacity: SharedString,
    open_breakers: SharedString,
    l1_flushes: SharedString,
    inflight: SharedString,
    lookup: SharedString,
    origin: SharedString,
    store_write: SharedString,
    coalesce_wait: SharedString,
}

/// [`CacheMetrics`] attached to a layer: an observer.
pub(crate) struct Recorder {
    names: Names,
    labels: Vec<Label>,
    store: Arc<dyn Store>,
    store_name: &'static str,
    coalescer: Arc<Coalescer>,
    described: Once,
    /// Each route's metric handles, registered on first use: a hit then costs a map lookup
    /// and two atomic updates, not a registration.
    routes: RwLock<HashMap<Box<str>, Arc<RouteHandles>, Xxh3DefaultBuilder>>,
}

/// The methods with a label of their own, then `other` and none.
const METHODS: usize = 9;
/// The `outcome` labels ([`outcome`]).
const OUTCOMES: [&str; 8] = [
    "hit",
    "miss",
    "stale_if_error",
    "stale_while_revalidate",
    "revalidated",
    "refresh",
    "bypass",
    "pass",
];

/// One route's metric handles.
#[derive(Default)]
struct RouteHandles {
    requests: [[OnceLock<Counter>; OUTCOMES.len()]; METHODS],
    coalesced: [OnceLock<Counter>; METHODS],
    tier_hits: [OnceLock<Counter>; 2],
    coalesce_timeouts: OnceLock<Counter>,
    stores: OnceLock<Counter>,
    not_stored: [OnceLock<Counter>; NotStoredReason::ALL.len()],
    lookup: OnceLock<Histogram>,
    origin: OnceLock<Histogram>,
    store_write: OnceLock<Histogram>,
    coalesce_wait: OnceLock<Histogram>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheMetrics")
            .field("prefix", &self.names.requests)
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// The constant labels and `extra`.
    fn labels(&self, extra: impl IntoIterator<Item = (&'static str, SharedString)>) -> Vec<Label> {
        let mut labels = self.labels.clone();
        labels.extend(extra.into_iter().map(|(key, value)| Label::new(key, value)));
        labels
    }

    fn count(&self, name: &SharedString, labels: Vec<Label>, n: u64) {
        metrics::counter!(name.clone(), labels).increment(n);
    }

    fn describe(&self) {
        let n = &self.names;
        metrics::describe_counter!(
            n.requests.clone(),
            Unit::Count,
            "Requests by route, method and cache outcome."
        );
        metrics::describe_counter!(
            n.coalesced.clone(),
            Unit::Count,
            "Requests answered by another request's fetch."
        );
        metrics::describe_counter!(
            n.tier_hits.clone(),
            Unit::Count,
            "Hits of a tiered store, by tier."
        );
        metrics::describe_counter!(
            n.coalesce_timeouts.clone(),
            Unit::Count,
            "Waits for another request's fetch that timed out."
        );
        metrics::describe_counter!(n.stores.clone(), Unit::Count, "Responses stored.");
        metrics::describe_counter!(
            n.not_stored.clone(),
            Unit::Count,
            "Responses not stored, by reason."
        );
        metrics::describe_counter!(
            n.store_errors.clone(),
            Unit::Count,
            "Failed store operations, by store, operation and kind."
        );
        metrics::describe_counter!(n.purges.clone(), Unit::Count, "Purges, by kind and mode.");
        metrics::describe_counter!(n.purged_entries.clone(), Unit::Count, "Entries purged.");
        metrics::describe_counter!(
            n.purge_failures.clone(),
            Unit::Count,
            "Purges the store failed."
        );
        metrics::describe_counter!(
            n.tags_ignored.clone(),
            Unit::Count,
            "Tags ignored past a limit."
        );
        metrics::describe_counter!(
            n.evictions.clone(),
            Unit::Count,
            "Entries that left the store, by cause."
        );
        metrics::describe_gauge!(n.entries.clone(), Unit::Count, "Entries in the store.");
        metrics::describe_gauge!(
            n.stored_bytes.clone(),
            Unit::Bytes,
            "Bytes the store's entries take."
        );
        metrics::describe_gauge!(n.capacity.clone(), Unit::Bytes, "The store's capacity.");
        metrics::describe_gauge!(
            n.open_breakers.clone(),
            Unit::Count,
            "Open circuit breakers of the store."
        );
        metrics::describe_gauge!(
            n.inflight.clone(),
            Unit::Count,
            "Fetches in flight that other requests may join."
        );
        metrics::describe_histogram!(
            n.lookup.clone(),
            Unit::Seconds,
            "Time to the lookup's answer."
        );
        metrics::describe_histogram!(
            n.origin.clone(),
            Unit::Seconds,
            "The origin's time to response headers."
        );
        metrics::describe_histogram!(
            n.store_write.clone(),
            Unit::Seconds,
            "Store writes of stored responses."
        );
        metrics::describe_histogram!(
            n.coalesce_wait.clone(),
            Unit::Seconds,
            "Waits for another request's fetch."
        );
    }

    fn store_gauges(&self) {
        let gauges = self.store.gauges();
        let labels = || self.labels([("store", SharedString::const_str(self.store_name))]);
        let n = &self.names;
        for (name, value) in [
            (&n.entries, gauges.entries),
            (&n.stored_bytes, gauges.bytes),
            (&n.capacity, gauges.capacity),
            (&n.open_breakers, gauges.open_breakers),
        ] {
            if let Some(value) = value {
                metrics::gauge!(name.clone(), labels()).set(value as f64);
            }
        }
        if let Some(flushes) = gauges.l1_flushes {
            for (reason, count) in [
                ("reconnected", flushes.reconnected),
                ("heartbeat", flushes.heartbeat),
                ("lagged", flushes.lagged),
                ("flushed", flushes.flushed),
                ("cleared", flushes.cleared),
            ] {
                let mut labels = labels();
                labels.push(Label::new("reason", reason));
                metrics::counter!(n.l1_flushes.clone(), labels).absolute(count);
            }
        }
    }

    fn inflight(&self) {
        let labels = self.labels([]);
        metrics::gauge!(self.names.inflight.clone(), labels).set(self.coalescer.in_flight() as f64);
    }
}

/// The `outcome` label of a request's event — the stats field it counts in, singular — as
/// an index into [`OUTCOMES`].
fn outcome(kind: &EventKind) -> Option<usize> {
    Some(match kind {
        EventKind::Hit { .. } | EventKind::Coalesced { .. } => 0,
        EventKind::Miss | EventKind::OnlyIfCachedMiss => 1,
        EventKind::Stale {
            window: StaleWindow::IfError,
            ..
        } => 2,
        EventKind::Stale {
            window: StaleWindow::WhileRevalidate,
            ..
        } => 3,
        EventKind::Revalidated => 4,
        EventKind::Refresh { .. } => 5,
        EventKind::Bypass { .. } => 6,
        EventKind::Pass => 7,
        _ => return None,
    })
}

/// The `method` label's index and value. Methods are the client's to invent: those without
/// a label of their own share `other`.
fn method_label(method: Option<&http::Method>) -> (usize, &'static str) {
    use http::Method;
    match method {
        Some(method) if *method == Method::GET => (0, "GET"),
        Some(method) if *method == Method::HEAD => (1, "HEAD"),
        Some(method) if *method == Method::POST => (2, "POST"),
        Some(method) if *method == Method::PUT => (3, "PUT"),
        Some(method) if *method == Method::PATCH => (4, "PATCH"),
        Some(method) if *method == Method::DELETE => (5, "DELETE"),
        Some(method) if *method == Method::OPTIONS => (6, "OPTIONS"),
        Some(_) => (7, "other"),
        None => (8, ""),
    }
}

impl Recorder {
    /// The handles of the route labelled `route`.
    fn route(&self, route: &str) -> Arc<RouteHandles> {
        if let Ok(routes) = self.routes.read()
            && let Some(handles) = routes.get(route)
        {
            return Arc::clone(handles);
        }
        let mut routes = match self.routes.write() {
            Ok(routes) => routes,
            Err(poisoned) => poisoned.into_inner(),
        };
        Arc::clone(routes.entry(route.into()).or_default())
    }

    fn route_labels(&self, route: &str, extra: &[(&'static str, &'static str)]) -> Vec<Label> {
        let mut labels = self.labels([("route", SharedString::from(route.to_owned()))]);
        labels.extend(
            extra
                .iter()
                .map(|(key, value)| Label::new(*key, SharedString::const_str(value))),
        );
        labels
    }

    fn histogram<'a>(
        &self,
        slot: &'a OnceLock<Histogram>,
        name: &SharedString,
        route: &str,
    ) -> &'a Histogram {
        slot.get_or_init(|| metrics::histogram!(name.clone(), self.route_labels(route, &[])))
    }

    /// A request's outcome, its timings, and what became of its response.
    fn route_event(&self, route: &str, event: &CacheEvent<'_>) {
        let n = &self.names;
        let handles = self.route(route);
        let kind = &event.kind;
        if let Some(outcome) = outcome(kind) {
            let (method, method_name) = method_label(event.method);
            handles.requests[method][outcome]
                .get_or_init(|| {
                    let labels = self.route_labels(
                        route,
                        &[("method", method_name), ("outcome", OUTCOMES[outcome])],
                    );
                    metrics::counter!(n.requests.clone(), labels)
                })
                .increment(1);
            if let EventKind::Hit {
                tier: Some(tier), ..
            } = kind
            {
                let slot = &handles.tier_hits[usize::from(*tier == Tier::L2)];
                slot.get_or_init(|| {
                    let labels = self.route_labels(route, &[("tier", tier.as_str())]);
                    metrics::counter!(n.tier_hits.clone(), labels)
                })
                .increment(1);
            }
            if let EventKind::Coalesced { waited } = kind {
                handles.coalesced[method]
                    .get_or_init(|| {
                        let labels = self.route_labels(route, &[("method", method_name)]);
                        metrics::counter!(n.coalesced.clone(), labels)
                    })
                    .increment(1);
                self.histogram(&handles.coalesce_wait, &n.coalesce_wait, route)
                    .record(waited.as_secs_f64());
            }
            if !matches!(kind, EventKind::Hit { .. } | EventKind::Pass) {
                self.inflight();
            }
        }
        let timings = event.timings;
        for (took, slot, name) in [
            (timings.lookup, &handles.lookup, &n.lookup),
            (timings.origin, &handles.origin, &n.origin),
            (timings.store_write, &handles.store_write, &n.store_write),
        ] {
            if let Some(took) = took {
                self.histogram(slot, name, route).record(took.as_secs_f64());
            }
        }
        let counter = |slot: &OnceLock<Counter>,
                       name: &SharedString,
                       extra: &[(&'static str, &'static str)]| {
            slot.get_or_init(|| metrics::counter!(name.clone(), self.route_labels(route, extra)))
                .increment(1);
        };
        match *kind {
            EventKind::CoalesceTimeout => {
                counter(&handles.coalesce_timeouts, &n.coalesce_timeouts, &[])
            }
            EventKind::Stored { .. } => {
                counter(&handles.stores, &n.stores, &[]);
                self.store_gauges();
                self.inflight();
            }
            EventKind::NotStored { reason } => {
                let slot = &handles.not_stored[reason.index()];
                counter(slot, &n.not_stored, &[("reason", reason.as_str())]);
                self.inflight();
            }
            _ => {}
        }
    }
}

impl CacheObserver for Recorder {
    fn on_event(&self, event: &CacheEvent<'_>) {
        self.described.call_once(|| self.describe());
        let n = &self.names;
        let kind = &event.kind;
        if let Some(route) = event.route {
            self.route_event(route, event);
        }
        match *kind {
            EventKind::StoreError { operation, kind } => {
                let labels = self.labels([
                    ("store", SharedString::const_str(self.store_name)),
                    ("operation", SharedString::const_str(operation.as_str())),
                    ("kind", SharedString::const_str(kind.as_str())),
                ]);
                self.count(&n.store_errors, labels, 1);
                self.store_gauges();
            }
            EventKind::Purged {
                kind,
                mode,
                entries,
            } => {
                let labels = self.labels([
                    ("kind", SharedString::const_str(kind.as_str())),
                    ("mode", SharedString::const_str(mode.as_str())),
                ]);
                self.count(&n.purges, labels, 1);
                match entries {
                    Some(entries) => self.count(&n.purged_entries, self.labels([]), entries),
                    None => self.count(&n.purge_failures, self.labels([]), 1),
                }
                self.store_gauges();
            }
            EventKind::TagsIgnored { count } => {
                self.count(&n.tags_ignored, self.labels([]), count);
            }
            EventKind::Removed { cause } => {
                let labels = self.labels([
                    ("store", SharedString::const_str(self.store_name)),
                    ("cause", SharedString::const_str(cause.as_str())),
                ]);
                self.count(&n.evictions, labels, 1);
                self.store_gauges();
            }
            // Counted by the store: its counts are read as they change.
            EventKind::L1Flushed { .. } => self.store_gauges(),
            _ => {}
        }
    }
}
