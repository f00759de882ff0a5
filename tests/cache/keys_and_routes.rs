//! Keys, namespaces and per-route rules as a client sees them.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use http::request::Parts;
use tower_response_cache::key::DefaultKeyBuilder;
use tower_response_cache::{CacheKey, RoutePolicy};

use crate::harness::{Calls, entry_count, fetch, get_with, layer, snapshot, stored};

fn routes(calls: &Calls) -> Router<()> {
    let handler = |name: &'static str| {
        move |State(calls): State<Calls>| async move { format!("{name}{}", calls.hit()) }
    };
    Router::new()
        .route("/users/{id}", get(handler("user")))
        .route("/static/{*file}", get(handler("static")))
        .route("/assets/{*file}", get(handler("asset")))
        .route("/health", get(handler("health")))
        .route("/search", get(handler("search")))
        .with_state(calls.clone())
}

#[tokio::test]
async fn sorted_queries_share_an_entry_and_dropped_params_are_ignored() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let cache = cache.key_builder(DefaultKeyBuilder::new().drop_query_param("utm_*"));
    let app = routes(&calls).layer(cache);
    fetch(&app, "/search?q=rust&page=2").await;
    assert!(stored(&store, "t:GET:/search?page=2&q=rust").await);
    let hit = fetch(&app, "/search?page=2&utm_source=mail&q=rust").await;
    assert_eq!((hit.x_cache(), hit.text().as_str()), ("HIT", "search1"));
    assert_eq!(fetch(&app, "/search?q=rust&page=3").await.x_cache(), "MISS");
}

#[tokio::test]
async fn headers_in_the_key_separate_entries() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let cache = cache.key_builder(DefaultKeyBuilder::new().header(http::header::HOST));
    let app = routes(&calls).layer(cache);
    let a = get_with(&app, "/search", &[("host", "a.example")]).await;
    let b = get_with(&app, "/search", &[("host", "b.example")]).await;
    assert_ne!(a.text(), b.text());
    let again = get_with(&app, "/search", &[("host", "A.EXAMPLE")]).await;
    assert_eq!((again.x_cache(), again.text()), ("HIT", a.text()));
}

#[tokio::test]
async fn a_key_builder_returning_none_bypasses() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let cache = cache.key_builder(|parts: &Parts| {
        (parts.uri.path() != "/health").then(|| CacheKey::new(parts.uri.path()))
    });
    let app = routes(&calls).layer(cache.clone());
    let health = fetch(&app, "/health").await;
    assert_eq!(health.x_cache(), "BYPASS");
    assert_eq!(
        health.header("cache-status"),
        Some("tower-response-cache; fwd=bypass; detail=no-key")
    );
    assert_eq!(fetch(&app, "/health").await.text(), "health2");
    fetch(&app, "/users/1").await;
    assert!(
        stored(&store, "t:/users/1").await,
        "custom keys get the namespace too"
    );
    assert_eq!(snapshot(&cache).total.bypasses, 2);
}

#[tokio::test]
async fn disabled_routes_pass_through_untouched() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let cache = cache.route("/health", RoutePolicy::disabled());
    let app = routes(&calls).layer(cache.clone());
    for expected in ["health1", "health2"] {
        let reply = fetch(&app, "/health").await;
        assert_eq!(reply.text(), expected);
        assert_eq!(reply.header("x-cache"), None);
        assert_eq!(reply.header("cache-status"), None);
    }
    assert_eq!(entry_count(&store).await, 0);
    assert_eq!(snapshot(&cache).routes["/health"].passes, 2);
}

#[tokio::test]
async fn route_patterns_match_axum_routes_and_prefixes_match_paths() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let cache = cache
        .route(
            "/users/{id}",
            RoutePolicy::new().ttl(Duration::from_secs(7)),
        )
        .route_prefix(
            "/static/",
            RoutePolicy::new().ttl(Duration::from_secs(3600)),
        )
        .route_prefix("/static/private/", RoutePolicy::disabled());
    let app = routes(&calls).layer(cache.clone());
    fetch(&app, "/users/1").await;
    fetch(&app, "/users/2").await;
    assert_eq!(
        fetch(&app, "/users/2").await.header("cache-status"),
        Some("tower-response-cache; hit; ttl=6")
    );
    fetch(&app, "/static/app.js").await;
    assert_eq!(
        fetch(&app, "/static/app.js").await.header("cache-status"),
        Some("tower-response-cache; hit; ttl=3599")
    );
    assert_eq!(
        fetch(&app, "/static/private/x").await.header("x-cache"),
        None,
        "the longest prefix wins"
    );

    let stats = snapshot(&cache);
    let users = &stats.routes["/users/{id}"];
    assert_eq!((users.hits, users.misses), (1, 2));
    assert_eq!(stats.routes["/static/*"].hits, 1);
    assert_eq!(stats.routes["/static/private/*"].passes, 1);
}

#[tokio::test]
async fn routes_share_entries_only_through_a_namespace() {
    let calls = Calls::default();
    let (cache, store) = layer();
    // A key builder that ignores the path's first segment: `/static/x` and `/assets/x`
    // build the same key; only their namespaces decide whether they share.
    let key = |parts: &Parts| {
        let file = parts
            .uri
            .path()
            .splitn(3, '/')
            .nth(2)
            .unwrap_or_default()
            .to_owned();
        Some(CacheKey::new(file))
    };
    let shared = cache
        .key_builder(key)
        .route_prefix("/static/", RoutePolicy::new().namespace("files"))
        .route_prefix("/assets/", RoutePolicy::new().namespace("files"))
        .route("/users/{id}", RoutePolicy::new().namespace("users"));
    let app = routes(&calls).layer(shared);
    assert_eq!(fetch(&app, "/static/app.js").await.text(), "static1");
    let shared_hit = fetch(&app, "/assets/app.js").await;
    assert_eq!(
        (shared_hit.x_cache(), shared_hit.text().as_str()),
        ("HIT", "static1")
    );
    assert!(stored(&store, "files:app.js").await);
    fetch(&app, "/users/app.js").await;
    assert!(
        stored(&store, "users:app.js").await,
        "its own namespace, its own entry"
    );
    assert_eq!(calls.get(), 2);
}

#[tokio::test]
async fn route_layer_caches_only_matched_routes() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let app = routes(&calls).route_layer(cache);
    fetch(&app, "/users/1").await;
    assert_eq!(fetch(&app, "/users/1").await.x_cache(), "HIT");
    let missing = fetch(&app, "/nowhere").await;
    assert_eq!(missing.status, http::StatusCode::NOT_FOUND);
    assert_eq!(
        missing.header("x-cache"),
        None,
        "a 404 from the router never reaches the cache"
    );
    assert_eq!(entry_count(&store).await, 1);
}

#[tokio::test]
async fn long_keys_are_hashed() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let app = routes(&calls).layer(cache);
    let long = format!("/search?q={}", "x".repeat(1000));
    fetch(&app, &long).await;
    assert_eq!(fetch(&app, &long).await.x_cache(), "HIT");
    assert_eq!(entry_count(&store).await, 1);
    let other = format!("/search?q={}y", "x".repeat(999));
    assert_eq!(
        fetch(&app, &other).await.x_cache(),
        "MISS",
        "same prefix, another hash"
    );
}

#[tokio::test]
async fn status_headers_can_be_turned_off() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let app = routes(&calls).layer(cache.status_header(None).cache_status_name(None));
    fetch(&app, "/search").await;
    let hit = fetch(&app, "/search").await;
    assert_eq!(hit.text(), "search1", "still a hit");
    assert_eq!(
        (hit.header("x-cache"), hit.header("cache-status")),
        (None, None)
    );
    assert_eq!(hit.header("age"), Some("0"));
}

#[tokio::test]
async fn status_header_and_cache_name_are_configurable() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let cache = cache
        .status_header(http::HeaderName::from_static("x-edge"))
        .cache_status_name(Some("edge 1"));
    let app = routes(&calls).layer(cache);
    let miss = fetch(&app, "/search").await;
    assert_eq!(miss.header("x-edge"), Some("MISS"));
    assert_eq!(
        miss.header("cache-status"),
        Some("\"edge 1\"; fwd=miss; stored")
    );
}

#[tokio::test]
async fn the_stats_route_serves_json() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let app = routes(&calls).layer(cache.clone()).route(
        "/stats",
        tower_response_cache::axum::stats_route(cache.stats()),
    );
    fetch(&app, "/users/1").await;
    fetch(&app, "/users/1").await;
    let stats = fetch(&app, "/stats").await;
    assert_eq!(stats.header("content-type"), Some("application/json"));
    assert_eq!(stats.header("cache-control"), Some("no-store"));
    let json: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
    assert_eq!(
        (json["hits"].as_u64(), json["misses"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(json["hit_ratio"].as_f64(), Some(0.5));
    assert_eq!(json["routes"]["/users/{id}"]["hits"].as_u64(), Some(1));
}
