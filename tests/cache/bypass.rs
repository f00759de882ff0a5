//! Request directives, the bypass header, and the client-control policies.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use http::{HeaderName, HeaderValue, StatusCode};
use tower_response_cache::{CacheLayer, ClientControl, RoutePolicy};

use crate::harness::{Calls, entry_count, fetch, get_with, layer, snapshot, stored};

fn app(calls: &Calls, cache: CacheLayer) -> Router {
    Router::new()
        .route(
            "/a",
            get(|State(calls): State<Calls>| async move { format!("a{}", calls.hit()) }),
        )
        .with_state(calls.clone())
        .layer(cache)
}

#[tokio::test(start_paused = true)]
async fn no_store_neither_reads_nor_writes() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let app = app(&calls, cache.clone());

    let bypass = get_with(&app, "/a", &[("cache-control", "no-store")]).await;
    assert_eq!(bypass.x_cache(), "BYPASS");
    assert_eq!(
        bypass.header("cache-status"),
        Some("tower-response-cache; fwd=bypass; detail=no-store")
    );
    assert_eq!(entry_count(&store).await, 0, "no-store wrote nothing");

    fetch(&app, "/a").await;
    let again = get_with(&app, "/a", &[("cache-control", "no-store")]).await;
    assert_eq!(again.text(), "a3", "no-store did not read the stored a2");
    assert_eq!(
        fetch(&app, "/a").await.text(),
        "a2",
        "and did not overwrite it"
    );
    assert_eq!(snapshot(&cache).total.bypasses, 2);
}

#[tokio::test(start_paused = true)]
async fn refresh_directives_fetch_and_store() {
    for headers in [
        &[("cache-control", "no-cache")][..],
        &[("cache-control", "max-age=0")],
        &[("pragma", "no-cache")],
        &[("x-cache-bypass", "1")],
    ] {
        let calls = Calls::default();
        let (cache, _store) = layer();
        let app = app(&calls, cache.clone());
        assert_eq!(fetch(&app, "/a").await.text(), "a1");
        let refreshed = get_with(&app, "/a", headers).await;
        assert_eq!(refreshed.x_cache(), "REFRESH", "{headers:?}");
        assert_eq!(refreshed.text(), "a2", "{headers:?}");
        assert_eq!(
            refreshed.header("cache-status"),
            Some("tower-response-cache; fwd=request; stored")
        );
        let after = fetch(&app, "/a").await;
        assert_eq!(
            (after.x_cache(), after.text().as_str()),
            ("HIT", "a2"),
            "{headers:?}"
        );
        assert_eq!(snapshot(&cache).total.refreshes, 1);
    }
}

#[tokio::test(start_paused = true)]
async fn request_max_age_refreshes_older_entries() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let app = app(&calls, cache);
    fetch(&app, "/a").await;
    assert_eq!(
        get_with(&app, "/a", &[("cache-control", "max-age=5")])
            .await
            .x_cache(),
        "HIT"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let refreshed = get_with(&app, "/a", &[("cache-control", "max-age=0")]).await;
    assert_eq!(
        (refreshed.x_cache(), refreshed.text().as_str()),
        ("REFRESH", "a2")
    );
    // Seconds granularity: the refreshed entry is 0 s old, young enough for `max-age=1`.
    assert_eq!(
        get_with(&app, "/a", &[("cache-control", "max-age=1")])
            .await
            .x_cache(),
        "HIT"
    );
    assert_eq!(calls.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn only_if_cached_never_reaches_the_service() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let app = app(&calls, cache);
    fetch(&app, "/a").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // RFC 9111 §5.2.1.7: whatever else the request asks for, the origin is not contacted.
    for directives in [
        "only-if-cached, max-age=0",
        "only-if-cached, no-cache",
        "only-if-cached, no-store",
    ] {
        let reply = get_with(&app, "/a", &[("cache-control", directives)]).await;
        let expected = if directives.ends_with("no-store") {
            StatusCode::OK
        } else {
            StatusCode::GATEWAY_TIMEOUT
        };
        assert_eq!(reply.status, expected, "{directives}");
    }
    assert_eq!(
        get_with(
            &app,
            "/a",
            &[("cache-control", "only-if-cached"), ("x-cache-bypass", "1")]
        )
        .await
        .status,
        StatusCode::GATEWAY_TIMEOUT
    );
    assert_eq!(calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn only_if_cached_is_a_504_on_a_miss_and_a_hit_otherwise() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let app = app(&calls, cache);
    let miss = get_with(&app, "/a", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(miss.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        miss.header("cache-status"),
        Some("tower-response-cache; detail=only-if-cached")
    );
    assert_eq!(calls.get(), 0, "the service was not called");
    fetch(&app, "/a").await;
    let hit = get_with(&app, "/a", &[("cache-control", "only-if-cached")]).await;
    assert_eq!((hit.status, hit.x_cache()), (StatusCode::OK, "HIT"));
}

#[tokio::test(start_paused = true)]
async fn deny_policy_ignores_request_directives() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let app = app(&calls, cache.client_control(ClientControl::Deny));
    fetch(&app, "/a").await;
    for headers in [
        &[("cache-control", "no-store")][..],
        &[("cache-control", "no-cache")],
        &[("pragma", "no-cache")],
        &[("x-cache-bypass", "1")],
    ] {
        let reply = get_with(&app, "/a", headers).await;
        assert_eq!(
            (reply.x_cache(), reply.text().as_str()),
            ("HIT", "a1"),
            "{headers:?}"
        );
    }
    assert_eq!(calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn secret_policy_needs_the_value_in_the_bypass_header() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let cache = cache
        .bypass_header(HeaderName::from_static("x-purge"))
        .client_control(ClientControl::Secret(HeaderValue::from_static("hunter2")));
    let app = app(&calls, cache);
    fetch(&app, "/a").await;
    assert_eq!(
        get_with(&app, "/a", &[("x-purge", "guess")])
            .await
            .x_cache(),
        "HIT"
    );
    assert_eq!(
        get_with(&app, "/a", &[("cache-control", "no-cache")])
            .await
            .x_cache(),
        "HIT"
    );
    assert_eq!(
        get_with(&app, "/a", &[("x-cache-bypass", "hunter2")])
            .await
            .x_cache(),
        "HIT"
    );
    let refreshed = get_with(&app, "/a", &[("x-purge", "hunter2")]).await;
    assert_eq!(
        (refreshed.x_cache(), refreshed.text().as_str()),
        ("REFRESH", "a2")
    );
    assert_eq!(calls.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn routes_can_set_their_own_client_control() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let cache = cache.route("/a", RoutePolicy::new().client_control(ClientControl::Deny));
    let app = app(&calls, cache);
    fetch(&app, "/a").await;
    assert_eq!(
        get_with(&app, "/a", &[("x-cache-bypass", "1")])
            .await
            .x_cache(),
        "HIT"
    );
    assert!(stored(&store, "t:GET:/a").await);
    assert_eq!(calls.get(), 1);
}
