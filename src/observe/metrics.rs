//! [`CacheMetrics`]: the layer's events as counters, gauges and histograms through the
//! [`metrics`](https://docs.rs/metrics) facade.

use std::sync::{Arc, Once};

use metrics::{Label, SharedString, Unit};

use super::event::{CacheEvent, EventKind, StaleWindow};
use super::observer::CacheObserver;
use crate::coalesce::Coalescer;
use crate::store::Store;

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
/// | `http_cache_inflight_fetches` | gauge | | |
/// | `http_cache_lookup_duration_seconds` | histogram | `route` | |
/// | `http_cache_origin_duration_seconds` | histogram | `route` | |
/// | `http_cache_store_write_duration_seconds` | histogram | `route` | |
/// | `http_cache_coalesce_wait_seconds` | histogram | `route` | |
///
/// Gauges are set as events pass — the store's on stores, removals and purges (where the
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
                inflight: name("inflight_fetches"),
                lookup: name("lookup_duration_seconds"),
                origin: name("origin_duration_seconds"),
                store_write: name("store_write_duration_seconds"),
                coalesce_wait: name("coalesce_wait_seconds"),
            },
            labels: self.labels,
            store_name: store.name(),
            store,
            coalescer,
            described: Once::new(),
        }
    }
}

struct Names {
    requests: SharedString,
    coalesced: SharedString,
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

    fn seconds(&self, name: &SharedString, route: &str, took: std::time::Duration) {
        let labels = self.labels([("route", SharedString::from(route.to_owned()))]);
        metrics::histogram!(name.clone(), labels).record(took.as_secs_f64());
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
    }

    fn inflight(&self) {
        let labels = self.labels([]);
        metrics::gauge!(self.names.inflight.clone(), labels).set(self.coalescer.in_flight() as f64);
    }
}

/// The `outcome` label of a request's event: the stats field it counts in, singular.
fn outcome(kind: &EventKind) -> Option<&'static str> {
    Some(match kind {
        EventKind::Hit { .. } | EventKind::Coalesced { .. } => "hit",
        EventKind::Miss | EventKind::OnlyIfCachedMiss => "miss",
        EventKind::Stale {
            window: StaleWindow::IfError,
            ..
        } => "stale_if_error",
        EventKind::Stale {
            window: StaleWindow::WhileRevalidate,
            ..
        } => "stale_while_revalidate",
        EventKind::Revalidated => "revalidated",
        EventKind::Refresh { .. } => "refresh",
        EventKind::Bypass { .. } => "bypass",
        EventKind::Pass => "pass",
        _ => return None,
    })
}

fn method_label(method: Option<&http::Method>) -> SharedString {
    match method {
        Some(method) if *method == http::Method::GET => SharedString::const_str("GET"),
        Some(method) if *method == http::Method::HEAD => SharedString::const_str("HEAD"),
        Some(method) if *method == http::Method::POST => SharedString::const_str("POST"),
        Some(method) if *method == http::Method::PUT => SharedString::const_str("PUT"),
        Some(method) if *method == http::Method::PATCH => SharedString::const_str("PATCH"),
        Some(method) if *method == http::Method::DELETE => SharedString::const_str("DELETE"),
        Some(method) if *method == http::Method::OPTIONS => SharedString::const_str("OPTIONS"),
        // Methods are the client's to invent: the rest share one label.
        Some(_) => SharedString::const_str("other"),
        None => SharedString::const_str(""),
    }
}

impl CacheObserver for Recorder {
    fn on_event(&self, event: &CacheEvent<'_>) {
        self.described.call_once(|| self.describe());
        let n = &self.names;
        let route = || SharedString::from(event.route.unwrap_or("").to_owned());
        let kind = &event.kind;
        if let Some(outcome) = outcome(kind) {
            let method = method_label(event.method);
            let labels = self.labels([
                ("route", route()),
                ("method", method.clone()),
                ("outcome", SharedString::const_str(outcome)),
            ]);
            self.count(&n.requests, labels, 1);
            if let EventKind::Coalesced { waited } = kind {
                self.count(
                    &n.coalesced,
                    self.labels([("route", route()), ("method", method)]),
                    1,
                );
                self.seconds(&n.coalesce_wait, event.route.unwrap_or(""), *waited);
            }
            if !matches!(kind, EventKind::Hit { .. } | EventKind::Pass) {
                self.inflight();
            }
        }
        if let Some(route) = event.route {
            let timings = event.timings;
            if let Some(took) = timings.lookup {
                self.seconds(&n.lookup, route, took);
            }
            if let Some(took) = timings.origin {
                self.seconds(&n.origin, route, took);
            }
            if let Some(took) = timings.store_write {
                self.seconds(&n.store_write, route, took);
            }
        }
        match *kind {
            EventKind::CoalesceTimeout => {
                self.count(&n.coalesce_timeouts, self.labels([("route", route())]), 1);
            }
            EventKind::Stored { .. } => {
                self.count(&n.stores, self.labels([("route", route())]), 1);
                self.store_gauges();
                self.inflight();
            }
            EventKind::NotStored { reason } => {
                let labels = self.labels([
                    ("route", route()),
                    ("reason", SharedString::const_str(reason.as_str())),
                ]);
                self.count(&n.not_stored, labels, 1);
                self.inflight();
            }
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
            _ => {}
        }
    }
}
