//! `CacheMetrics` through the `metrics` facade: after a mixed workload every counter equals
//! the stats, with bounded labels; gauges and histograms are there.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower_response_cache::observe::CacheMetrics;
use tower_response_cache::store::StoreExt;
use tower_response_cache::{CacheLayer, CacheTags, MemoryStore, WriteMode};

use crate::harness::{fetch, get_with, post};

fn app(cache: CacheLayer) -> Router {
    Router::new()
        .route(
            "/items/{id}",
            get(|Path(id): Path<u32>| async move {
                let mut response = format!("item {id}").into_response();
                response
                    .extensions_mut()
                    .insert(CacheTags::new([format!("item-{id}"), "items".to_owned()]));
                response
            }),
        )
        .route(
            "/private",
            get(|| async { ([("cache-control", "private")], "mine") }),
        )
        .route(
            "/etag",
            get(|| async {
                (
                    [
                        ("etag", "\"v1\""),
                        ("cache-control", "max-age=60, stale-while-revalidate=30"),
                    ],
                    "body",
                )
            }),
        )
        .layer(cache)
}

type Metrics = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// Counter values by name and sorted labels (`key=value,…`, without the constant label).
fn counters(all: &Metrics) -> BTreeMap<(String, String), u64> {
    let mut counters = BTreeMap::new();
    for (key, _, _, value) in all {
        let DebugValue::Counter(value) = *value else {
            continue;
        };
        assert_eq!(key.kind(), MetricKind::Counter);
        let key = key.key();
        let mut labels: Vec<String> = key
            .labels()
            .filter(|label| label.key() != "layer")
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        labels.sort();
        counters.insert((key.name().to_owned(), labels.join(",")), value);
    }
    counters
}

#[tokio::test(start_paused = true)]
async fn every_counter_equals_the_stats_after_a_mixed_workload() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // This test's thread (a current-thread runtime: every task runs here) records to it.
    let _guard = metrics::set_default_local_recorder(&recorder);
    let store = MemoryStore::new(16 << 20);
    let cache = CacheLayer::new(store.clone())
        .write_mode(WriteMode::Inline)
        .metrics(CacheMetrics::new().label("layer", "test"));
    let stats = cache.stats();
    let handle = cache.handle();
    let app = app(cache);

    for id in 0..5 {
        fetch(&app, &format!("/items/{id}")).await;
        fetch(&app, &format!("/items/{id}")).await;
    }
    fetch(&app, "/items/1").await;
    get_with(&app, "/items/2", &[("cache-control", "no-store")]).await;
    get_with(&app, "/items/3", &[("x-cache-bypass", "1")]).await;
    get_with(&app, "/nowhere", &[("cache-control", "only-if-cached")]).await;
    fetch(&app, "/private").await;
    fetch(&app, "/private").await;
    post(&app, "/items/1").await;
    fetch(&app, "/etag").await;
    handle.soft().invalidate("/etag").await.unwrap();
    fetch(&app, "/etag").await;
    handle.invalidate_tag("item-4").await.unwrap();
    handle.invalidate_tag("nothing").await.unwrap();
    handle.invalidate_prefix("/items").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.run_pending_tasks();

    let snapshot = stats.snapshot();
    // One snapshot: taking one drains the histograms.
    let all: Metrics = snapshotter.snapshot().into_vec();
    let counters = counters(&all);
    let counter = |name: &str, labels: &str| {
        counters
            .get(&(name.to_owned(), labels.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    let sum = |name: &str, label: &str| -> u64 {
        counters
            .iter()
            .filter(|((metric, labels), _)| metric == name && labels.contains(label))
            .map(|(_, value)| value)
            .sum()
    };
    let total = &snapshot.total;
    for (outcome, expected) in [
        ("hit", total.hits),
        ("miss", total.misses),
        ("bypass", total.bypasses),
        ("refresh", total.refreshes),
        ("pass", total.passes),
        ("revalidated", total.revalidated),
        ("stale_if_error", total.stale_if_error),
        ("stale_while_revalidate", total.stale_while_revalidate),
    ] {
        assert_eq!(
            sum("http_cache_requests_total", &format!("outcome={outcome}")),
            expected,
            "{outcome}: {counters:#?}"
        );
    }
    assert!(total.hits >= 5 && total.misses >= 7 && total.stale_while_revalidate == 1);
    assert_eq!(
        counter(
            "http_cache_requests_total",
            "method=GET,outcome=hit,route=/items/{id}"
        ),
        snapshot.routes["/items/{id}"].hits
    );
    assert_eq!(
        counter(
            "http_cache_requests_total",
            "method=POST,outcome=pass,route=/items/{id}"
        ),
        1
    );
    assert_eq!(sum("http_cache_stores_total", ""), total.stores);
    for (reason, expected) in &total.not_stored {
        assert_eq!(
            sum("http_cache_not_stored_total", &format!("reason={reason}")),
            *expected
        );
    }
    assert_eq!(total.not_stored["private"], 2);
    assert_eq!(sum("http_cache_store_errors_total", ""), total.store_errors);
    let purges = &snapshot.purges;
    for (kind, expected) in &purges.hard {
        assert_eq!(
            counter("http_cache_purges_total", &format!("kind={kind},mode=hard")),
            *expected
        );
    }
    assert_eq!(counter("http_cache_purges_total", "kind=url,mode=soft"), 1);
    assert_eq!(counter("http_cache_purges_total", "kind=tag,mode=hard"), 2);
    assert_eq!(
        counter("http_cache_purged_entries_total", ""),
        purges.entries
    );
    assert_eq!(
        counter("http_cache_purge_failures_total", ""),
        purges.failed
    );
    let removals = store.removals();
    for (cause, expected) in [
        ("expired", removals.expired),
        ("evicted", removals.evicted),
        ("replaced", removals.replaced),
        ("removed", removals.removed),
    ] {
        assert_eq!(
            counter(
                "http_cache_evictions_total",
                &format!("cause={cause},store=memory")
            ),
            expected,
            "{cause}"
        );
    }
    assert!(removals.removed >= 5, "{removals:?}");

    // Every metric carries the layer's label; no label holds a path or a key.
    for (key, _, _, value) in &all {
        let key = key.key();
        assert!(
            key.labels()
                .any(|label| label.key() == "layer" && label.value() == "test"),
            "{key:?}"
        );
        assert!(
            key.labels()
                .all(|label| !label.value().contains("/items/1") && !label.value().contains(':')),
            "{key:?}"
        );
        if let DebugValue::Histogram(values) = value {
            assert!(!values.is_empty());
        }
    }
    let named = |name: &str| {
        all.iter()
            .filter(|(key, _, _, _)| key.key().name() == name)
            .map(|(_, _, _, value)| value)
            .collect::<Vec<_>>()
    };
    let capacity: Vec<f64> = named("http_cache_capacity_bytes")
        .into_iter()
        .filter_map(|value| match value {
            DebugValue::Gauge(value) => Some(value.into_inner()),
            _ => None,
        })
        .collect();
    assert_eq!(capacity, [(16u64 << 20) as f64]);
    assert_eq!(named("http_cache_entries").len(), 1);
    assert!(!named("http_cache_lookup_duration_seconds").is_empty());
    assert!(!named("http_cache_origin_duration_seconds").is_empty());
    assert!(!named("http_cache_store_write_duration_seconds").is_empty());
    let _ = store.clear().await;
}
