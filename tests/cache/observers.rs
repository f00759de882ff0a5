//! Observers: every path's events, in order, with route labels, methods and timings; a
//! panicking observer; the built-in ratio and timing observers; removals from the store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use tower_response_cache::observe::{CacheEvent, EventKind, HitMissRatio, TimingObserver, Timings};
use tower_response_cache::{CacheLayer, CacheTags, MemoryStore, WriteMode};

use crate::harness::{Calls, fetch, get_with, layer, post};
use crate::services::BrokenStore;

/// Every event an observer was told, as `kind[:detail] @route METHOD`.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(String, Timings)>>>);

impl Log {
    fn observer(&self) -> impl Fn(&CacheEvent<'_>) + Send + Sync + 'static {
        let log = self.clone();
        move |event: &CacheEvent<'_>| {
            let detail = match event.kind {
                EventKind::NotStored { reason } => format!(":{}", reason.as_str()),
                EventKind::Refresh { reason } => format!(":{}", reason.as_str()),
                EventKind::Bypass { reason } => format!(":{}", reason.as_str()),
                EventKind::Stale { window, .. } => format!(":{}", window.as_str()),
                EventKind::Purged {
                    kind,
                    mode,
                    entries,
                } => format!(":{}:{}:{entries:?}", kind.as_str(), mode.as_str()),
                EventKind::StoreError { operation, kind } => {
                    format!(":{}:{}", operation.as_str(), kind.as_str())
                }
                EventKind::Removed { cause } => format!(":{}", cause.as_str()),
                EventKind::Stored { tags, .. } => format!(":tags={tags}"),
                _ => String::new(),
            };
            let scope = match (event.route, event.method) {
                (Some(route), Some(method)) => format!(" @{route} {method}"),
                _ => String::new(),
            };
            let line = format!("{}{detail}{scope}", event.kind.as_str());
            log.0.lock().unwrap().push((line, event.timings));
        }
    }

    /// The events so far (and forgets them).
    fn take(&self) -> Vec<String> {
        self.take_timed()
            .into_iter()
            .map(|(line, _)| line)
            .collect()
    }

    fn take_timed(&self) -> Vec<(String, Timings)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// What the origin does for the routes that can fail.
#[derive(Clone, Default)]
struct Origin {
    calls: Calls,
    failing: Arc<AtomicBool>,
}

fn app(origin: &Origin, cache: CacheLayer) -> Router {
    async fn page(State(origin): State<Origin>) -> String {
        format!("#{}", origin.calls.hit())
    }
    async fn swr(State(origin): State<Origin>) -> impl IntoResponse {
        let n = origin.calls.hit();
        (
            [("cache-control", "max-age=60, stale-while-revalidate=30")],
            format!("swr #{n}"),
        )
    }
    async fn flaky(State(origin): State<Origin>) -> impl IntoResponse {
        origin.calls.hit();
        if origin.failing.load(Ordering::SeqCst) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [("cache-control", "no-store")],
                "down",
            )
                .into_response();
        }
        ([("cache-control", "max-age=60, stale-if-error=60")], "up").into_response()
    }
    async fn etag(State(origin): State<Origin>, headers: HeaderMap) -> impl IntoResponse {
        origin.calls.hit();
        if headers
            .get("if-none-match")
            .is_some_and(|tag| tag == "\"v1\"")
        {
            return (StatusCode::NOT_MODIFIED, [("etag", "\"v1\"")], "").into_response();
        }
        (
            [("etag", "\"v1\""), ("cache-control", "max-age=60")],
            "tagged body",
        )
            .into_response()
    }
    async fn slow(State(origin): State<Origin>) -> impl IntoResponse {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let mut response = format!("slow #{}", origin.calls.hit()).into_response();
        response
            .extensions_mut()
            .insert(CacheTags::new(["slow", "all"]));
        response
    }
    Router::new()
        .route("/page", get(page))
        .route(
            "/private",
            get(|| async { ([("cache-control", "private")], "mine") }),
        )
        .route("/swr", get(swr))
        .route("/flaky", get(flaky))
        .route("/etag", get(etag))
        .route("/slow/{id}", get(slow))
        .route("/item/{id}", get(|| async { "x".repeat(512) }))
        .with_state(origin.clone())
        .layer(cache)
}

#[tokio::test(start_paused = true)]
async fn observers_see_each_path_s_events_in_order() {
    let (cache, _store) = layer();
    let log = Log::default();
    let cache = cache.observer(log.observer());
    let handle = cache.handle();
    let origin = Origin::default();
    let app = app(&origin, cache);

    // A miss whose response is stored before its head leaves (inline write, whole body).
    assert_eq!(fetch(&app, "/page").await.x_cache(), "MISS");
    assert_eq!(log.take(), ["stored:tags=0 @/page GET", "miss @/page GET"]);
    assert_eq!(fetch(&app, "/page").await.x_cache(), "HIT");
    assert_eq!(log.take(), ["hit @/page GET"]);
    // HEAD is answered from the GET entry.
    let head = crate::harness::send(
        &app,
        http::Request::head("/page")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(head.x_cache(), "HIT");
    assert_eq!(log.take(), ["hit @/page HEAD"]);

    // The client's own controls.
    get_with(&app, "/page", &[("cache-control", "no-store")]).await;
    assert_eq!(log.take(), ["bypass:no-store @/page GET"]);
    let refreshed = get_with(&app, "/page", &[("x-cache-bypass", "1")]).await;
    assert_eq!(refreshed.x_cache(), "REFRESH");
    assert_eq!(
        log.take(),
        [
            "removed:replaced",
            "stored:tags=0 @/page GET",
            "refresh:bypass-header @/page GET"
        ]
    );
    get_with(&app, "/nothing", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(log.take(), ["only-if-cached-miss @(other) GET"]);

    // Not storable, and not the cache's at all.
    assert_eq!(fetch(&app, "/private").await.x_cache(), "UNCACHEABLE");
    assert_eq!(
        log.take(),
        ["not-stored:private @/private GET", "miss @/private GET"]
    );
    post(&app, "/page").await;
    assert_eq!(log.take(), ["pass @/page POST"]);

    // A soft purge makes the entry stale: served stale while one background fetch
    // refreshes it.
    let first = fetch(&app, "/swr").await.text();
    let calls = origin.calls.get();
    log.take();
    assert_eq!(handle.soft().invalidate("/swr").await.unwrap(), 1);
    assert_eq!(log.take(), ["removed:replaced", "purged:url:soft:Some(1)"]);
    let stale = fetch(&app, "/swr").await;
    assert_eq!(stale.x_cache(), "STALE");
    assert_eq!(stale.text(), first);
    assert_eq!(log.take(), ["stale:stale-while-revalidate @/swr GET"]);
    for _ in 0..200 {
        if origin.calls.get() == calls + 1 && log.0.lock().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        log.take(),
        ["removed:replaced", "stored:tags=0 @/swr GET"],
        "the background refresh tells only what it stored"
    );

    // Stale if error: the origin fails, the soft-purged entry answers.
    fetch(&app, "/flaky").await;
    handle.soft().invalidate("/flaky").await.unwrap();
    origin.failing.store(true, Ordering::SeqCst);
    log.take();
    let stale = fetch(&app, "/flaky").await;
    assert_eq!((stale.x_cache(), stale.text().as_str()), ("STALE", "up"));
    assert_eq!(log.take(), ["stale:stale-if-error @/flaky GET"]);

    // Revalidated: the soft-purged entry has a validator, and the origin says 304.
    fetch(&app, "/etag").await;
    handle.soft().invalidate("/etag").await.unwrap();
    log.take();
    let revalidated = fetch(&app, "/etag").await;
    assert_eq!(revalidated.x_cache(), "REVALIDATED");
    assert_eq!(revalidated.text(), "tagged body");
    assert_eq!(
        log.take(),
        [
            "removed:replaced",
            "stored:tags=0 @/etag GET",
            "revalidated @/etag GET"
        ]
    );

    // A hard purge by tag.
    fetch(&app, "/slow/1").await;
    log.take();
    assert_eq!(handle.invalidate_tag("slow").await.unwrap(), 1);
    assert_eq!(log.take(), ["removed:removed", "purged:tag:hard:Some(1)"]);

    // The stats counted exactly what the observers saw.
    let stats = snapshot_of(&handle);
    assert_eq!(stats.total.hits, 2);
    assert_eq!(stats.total.stale_if_error, 1);
    assert_eq!(stats.total.stale_while_revalidate, 1);
    assert_eq!(stats.total.revalidated, 1);
    assert_eq!(stats.observer_panics, 0);
}

fn snapshot_of(
    handle: &tower_response_cache::CacheHandle,
) -> tower_response_cache::stats::StatsSnapshot {
    handle.stats().snapshot()
}

#[tokio::test(start_paused = true)]
async fn a_coalesced_wait_is_told_with_how_long_it_waited() {
    let (cache, _store) = layer();
    let log = Log::default();
    let origin = Origin::default();
    let app = app(&origin, cache.observer(log.observer()));
    let (a, b) = tokio::join!(fetch(&app, "/slow/7"), fetch(&app, "/slow/7"));
    assert_eq!(origin.calls.get(), 1);
    let mut outcomes = [a.x_cache().to_owned(), b.x_cache().to_owned()];
    outcomes.sort();
    assert_eq!(outcomes, ["HIT", "MISS"]);
    let events = log.take_timed();
    let lines: Vec<&str> = events.iter().map(|(line, _)| line.as_str()).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines.contains(&"stored:tags=2 @/slow/{id} GET"),
        "{lines:?}"
    );
    assert!(lines.contains(&"miss @/slow/{id} GET"), "{lines:?}");
    assert!(lines.contains(&"coalesced @/slow/{id} GET"), "{lines:?}");
    // The waiter's wait is in the event; the leader's origin time in its miss.
    let miss = &events
        .iter()
        .find(|(line, _)| line.starts_with("miss"))
        .unwrap()
        .1;
    assert!(
        miss.origin.unwrap() >= Duration::from_millis(50),
        "{miss:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn timings_are_where_the_steps_ran() {
    let (cache, _store) = layer();
    let log = Log::default();
    let origin = Origin::default();
    let app = app(&origin, cache.observer(log.observer()));
    fetch(&app, "/slow/1").await;
    fetch(&app, "/slow/1").await;
    get_with(&app, "/slow/1", &[("cache-control", "no-store")]).await;
    let events = log.take_timed();
    let timings = |prefix: &str| {
        events
            .iter()
            .find(|(line, _)| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {events:?}"))
            .1
    };
    let miss = timings("miss");
    assert!(miss.lookup.is_some() && miss.store_write.is_none());
    assert!(miss.origin.unwrap() >= Duration::from_millis(50));
    let stored = timings("stored");
    assert!(stored.store_write.is_some() && stored.origin.is_none());
    let hit = timings("hit");
    assert!(hit.lookup.is_some() && hit.origin.is_none() && hit.store_write.is_none());
    // A bypass looks nothing up.
    let bypass = timings("bypass");
    assert!(bypass.lookup.is_none() && bypass.origin.unwrap() >= Duration::from_millis(50));
}

#[tokio::test(start_paused = true)]
async fn store_errors_are_told_with_operation_and_kind() {
    let log = Log::default();
    let cache = CacheLayer::new(BrokenStore)
        .write_mode(WriteMode::Inline)
        .observer(log.observer());
    let origin = Origin::default();
    let app = app(&origin, cache);
    assert_eq!(fetch(&app, "/page").await.text(), "#1");
    assert_eq!(
        log.take(),
        [
            "store-error:read:unavailable @/page GET",
            "store-error:write:timeout @/page GET",
            "miss @/page GET"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_observer_leaves_responses_intact() {
    let (cache, _store) = layer();
    let log = Log::default();
    let cache = cache
        .observer(|_: &CacheEvent<'_>| panic!("an observer's bug"))
        .observer(log.observer());
    let stats = cache.stats();
    let origin = Origin::default();
    let app = app(&origin, cache);
    let first = fetch(&app, "/page").await;
    assert_eq!(
        (first.status, first.text().as_str()),
        (StatusCode::OK, "#1")
    );
    let hit = fetch(&app, "/page").await;
    assert_eq!((hit.x_cache(), hit.text().as_str()), ("HIT", "#1"));
    // The observer after the panicking one saw everything; every panic was counted.
    assert_eq!(
        log.take(),
        [
            "stored:tags=0 @/page GET",
            "miss @/page GET",
            "hit @/page GET"
        ]
    );
    assert_eq!(stats.snapshot().observer_panics, 3);
    assert_eq!(origin.calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_built_in_ratio_and_timing_observers_add_up() {
    let (cache, _store) = layer();
    let ratio = HitMissRatio::new();
    let timings = TimingObserver::new();
    let cache = cache.observer(ratio.clone()).observer(timings.clone());
    let stats = cache.stats();
    let origin = Origin::default();
    let app = app(&origin, cache);
    fetch(&app, "/slow/1").await;
    for _ in 0..3 {
        fetch(&app, "/slow/1").await;
    }
    fetch(&app, "/page").await;
    get_with(&app, "/page", &[("cache-control", "no-store")]).await;

    let total = ratio.total();
    assert_eq!((total.hits, total.misses), (3, 2));
    assert!((total.ratio - 0.6).abs() < 1e-9);
    assert!((total.ratio - snapshot_stats_ratio(&stats)).abs() < 1e-9);
    let slow = ratio.routes()["/slow/{id}"];
    assert_eq!((slow.hits, slow.misses), (3, 1));
    assert_eq!(ratio.routes()["/page"].misses, 1);

    let lookup = timings.lookup();
    assert_eq!(
        lookup.count, 5,
        "every lookup: 2 misses and 3 hits, not the bypass"
    );
    assert!(lookup.min.unwrap() <= lookup.average().unwrap());
    assert!(lookup.average().unwrap() <= lookup.max.unwrap());
    let origin_times = timings.origin();
    assert_eq!(origin_times.count, 3, "two misses and the bypass");
    assert!(origin_times.max.unwrap() >= Duration::from_millis(50));
    assert_eq!(timings.store_write().count, 2);
    assert_eq!(timings.coalesce_wait().count, 0);
    assert_eq!(timings.snapshot().len(), 4);
}

fn snapshot_stats_ratio(stats: &tower_response_cache::stats::CacheStats) -> f64 {
    stats.snapshot().hit_ratio()
}

#[tokio::test(start_paused = true)]
async fn removals_from_the_memory_store_are_told_by_cause() {
    // Room for a few small entries: more evict the coldest.
    let store = MemoryStore::new(8 * 1024);
    let log = Log::default();
    let cache = CacheLayer::new(store.clone())
        .write_mode(WriteMode::Inline)
        .observer(log.observer());
    let origin = Origin::default();
    let app = app(&origin, cache);
    for id in 0..40 {
        fetch(&app, &format!("/item/{id}")).await;
    }
    store.run_pending_tasks();
    let events = log.take();
    let evicted = events
        .iter()
        .filter(|line| line.as_str() == "removed:evicted")
        .count() as u64;
    assert!(evicted > 0, "{events:?}");
    assert_eq!(evicted, store.removals().evicted);
}

#[tokio::test(start_paused = true)]
async fn an_observer_of_a_dropped_layer_is_not_told_any_more() {
    let store = MemoryStore::new(1 << 20);
    let log = Log::default();
    let cache = CacheLayer::new(store.clone())
        .write_mode(WriteMode::Inline)
        .observer(log.observer());
    let origin = Origin::default();
    let app = app(&origin, cache);
    fetch(&app, "/page").await;
    assert_eq!(log.take().len(), 2);
    drop(app);
    tower_response_cache::store::StoreExt::clear(&store)
        .await
        .unwrap();
    store.run_pending_tasks();
    assert_eq!(store.removals().removed, 1);
    assert_eq!(log.take(), Vec::<String>::new());
}
