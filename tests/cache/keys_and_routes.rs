//! Keys, namespaces and per-route rules as a client sees them.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use http::request::Parts;
use tower_response_cache::key::DefaultKeyBuilder;
use tower_response_cache::{RoutePolicy, key::CacheKey};

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
    assert!(stored(&store, "t:files:app.js").await);
    fetch(&app, "/users/app.js").await;
    assert!(
        stored(&store, "t:users:app.js").await,
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

/// The warnings the layer logs while `run` runs on this thread.
async fn warnings_of<F: std::future::Future<Output = ()>>(run: F) -> String {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let one = crate::harness::one_subscriber_at_a_time().await;
    let guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    run.await;
    drop(guard);
    drop(one);
    String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
}

fn nested_users(calls: &Calls, users: axum::routing::MethodRouter<Calls>) -> Router<()> {
    let api = Router::new().route("/users/{id}", users);
    Router::new()
        .nest("/api", api)
        .route(
            "/home",
            get(|State(calls): State<Calls>| async move { format!("home{}", calls.hit()) }),
        )
        .with_state(calls.clone())
}

/// The remaining TTL a hit's `Cache-Status` gives.
fn ttl_of(reply: &crate::harness::Reply) -> u64 {
    let status = reply.header("cache-status").unwrap_or_default();
    let ttl = status.split("ttl=").nth(1).expect("a hit's ttl");
    ttl.parse().unwrap()
}

async fn user(State(calls): State<Calls>) -> String {
    format!("user{}", calls.hit())
}

#[tokio::test]
async fn a_policy_attached_to_a_route_holds_under_nest() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let users = get(user).layer(
        cache.for_route(
            RoutePolicy::new()
                .ttl(Duration::from_secs(5))
                .namespace("users"),
        ),
    );
    let app = nested_users(&calls, users).layer(cache.clone());
    let miss = fetch(&app, "/api/users/1").await;
    assert_eq!((miss.x_cache(), miss.text().as_str()), ("MISS", "user1"));
    // One cache answered: one status header value, one `Cache-Status` member.
    assert_eq!(miss.headers.get_all("x-cache").iter().count(), 1);
    assert_eq!(
        miss.header("cache-status"),
        Some("tower-response-cache; fwd=miss; stored")
    );
    let hit = fetch(&app, "/api/users/1").await;
    assert_eq!((hit.x_cache(), hit.text().as_str()), ("HIT", "user1"));
    assert!(
        ttl_of(&hit) <= 5,
        "the route's TTL, not the layer's 60 s: {:?}",
        hit.header("cache-status")
    );
    assert_eq!(
        store.keys(),
        ["t:users:GET:/api/users/1"],
        "the whole path in the key; the router's layer stored nothing for the route"
    );
    // The rest of the app keeps the layer's settings.
    fetch(&app, "/home").await;
    let home = fetch(&app, "/home").await;
    assert!(ttl_of(&home) > 50, "{:?}", home.header("cache-status"));
    assert_eq!(calls.get(), 2);
    // Counted once, under the route's whole pattern.
    let stats = snapshot(&cache);
    assert_eq!((stats.total.hits, stats.total.misses), (2, 2));
    assert_eq!(stats.total.stores, 2);
    let route = &stats.routes["/api/users/{id}"];
    assert_eq!((route.hits, route.misses), (1, 1));
}

#[tokio::test]
async fn a_router_mounted_twice_keeps_its_mounts_apart() {
    // Inside a nested router the request's URI has lost the prefix; keys are built from
    // the URI the client sent.
    let calls = Calls::default();
    let (cache, store) = layer();
    let users = get(user).layer(cache.for_route(RoutePolicy::new()));
    let api: Router<Calls> = Router::new().route("/users/{id}", users);
    let twice = Router::new()
        .nest("/v1", api.clone())
        .nest("/v2", api)
        .with_state(calls.clone())
        .layer(cache.clone());
    assert_eq!(fetch(&twice, "/v1/users/1").await.text(), "user1");
    assert_eq!(fetch(&twice, "/v2/users/1").await.text(), "user2");
    let mut keys = store.keys();
    keys.sort();
    assert_eq!(keys, ["t:GET:/v1/users/1", "t:GET:/v2/users/1"]);
    // The route's layer builds the same key as the router's, which leads the flight for
    // the first request: the inner one does not wait for it (it would wait for itself).
    assert_eq!(snapshot(&cache).total.coalesce_timeouts, 0);
}

#[tokio::test]
async fn a_disabled_route_stays_uncached_under_nest_and_its_writes_invalidate() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let users = get(user).layer(cache.for_route(RoutePolicy::disabled()));
    let app = nested_users(&calls, users).layer(cache.clone());
    for n in 1..=3 {
        let reply = fetch(&app, "/api/users/1").await;
        assert_eq!(reply.text(), format!("user{n}"));
        assert_eq!(
            reply.header("x-cache"),
            None,
            "passed through by both layers"
        );
    }
    assert_eq!(entry_count(&store).await, 0);

    // An unsafe method the attached layer does not wrap (`.post` after `.layer`): the
    // router's layer invalidates, with the route's namespace.
    let calls = Calls::default();
    let (cache, store) = layer();
    let users = get(user)
        .layer(cache.for_route(RoutePolicy::new().namespace("users")))
        .post(|| async { "updated" });
    let app = nested_users(&calls, users).layer(cache.clone());
    fetch(&app, "/api/users/1").await;
    assert!(stored(&store, "t:users:GET:/api/users/1").await);
    assert_eq!(
        crate::harness::post(&app, "/api/users/1").await.text(),
        "updated"
    );
    assert!(!stored(&store, "t:users:GET:/api/users/1").await);
    assert_eq!(fetch(&app, "/api/users/1").await.text(), "user2");
}

#[tokio::test(flavor = "current_thread")]
async fn a_rule_that_only_ever_misses_its_nested_route_is_warned_about_once() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let cache = cache.route(
        "/users/{id}",
        RoutePolicy::new().ttl(Duration::from_secs(5)),
    );
    let app = nested_users(&calls, get(user)).layer(cache.clone());
    let warnings = warnings_of(async {
        for _ in 0..3 {
            fetch(&app, "/api/users/1").await;
            fetch(&app, "/api/users/2").await;
        }
    })
    .await;
    assert_eq!(
        warnings.matches("has matched no request").count(),
        1,
        "{warnings}"
    );
    assert!(warnings.contains("\"/users/{id}\""), "{warnings}");
    assert!(warnings.contains("\"/api/users/{id}\""), "{warnings}");
    assert!(warnings.contains("for_route"), "{warnings}");
    // The rule is listed (it exists, unmatched); the route with traffic too; nothing else.
    let stats = snapshot(&cache);
    let labels: Vec<&str> = stats.routes.keys().map(String::as_str).collect();
    assert_eq!(labels, ["/api/users/{id}", "/users/{id}"]);
    assert_eq!(
        stats.routes["/users/{id}"].hits + stats.routes["/users/{id}"].misses,
        0
    );

    // A rule that does match is not warned about.
    let calls = Calls::default();
    let (cache, _store) = layer();
    let cache = cache.route("/api/users/{id}", RoutePolicy::new());
    let app = nested_users(&calls, get(user)).layer(cache);
    let warnings = warnings_of(async {
        fetch(&app, "/api/users/1").await;
    })
    .await;
    assert_eq!(warnings, "");
}

#[tokio::test]
async fn stats_list_rules_and_routes_with_cached_traffic_not_every_route() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let cache = cache.route("/health", RoutePolicy::disabled());
    let app = routes(&calls).layer(cache.clone());
    fetch(&app, "/health").await;
    crate::harness::post(&app, "/search").await;
    let stats = snapshot(&cache);
    let labels: Vec<&str> = stats.routes.keys().map(String::as_str).collect();
    assert_eq!(
        labels,
        ["/health"],
        "no all-zero (other), no route with passes only"
    );
    assert_eq!(stats.total.passes, 2);
    let json = serde_json::to_string(&stats).unwrap();
    assert!(!json.contains("(other)"), "{json}");
}

#[tokio::test]
async fn every_key_of_a_layer_is_under_its_namespace() {
    // One model: the layer's namespace, then a route's own, then the request's key. A
    // layer's entries are the keys under `app:`; a route's under `app:users:`.
    let calls = Calls::default();
    let store = tower_response_cache::MemoryStore::new(1 << 20);
    let cache = tower_response_cache::CacheLayer::new(store.clone())
        .namespace("app")
        .write_mode(tower_response_cache::WriteMode::Inline)
        .route("/users/{id}", RoutePolicy::new().namespace("users"))
        .route_prefix("/static/", RoutePolicy::new().namespace("files"))
        .max_key_len(128);
    let nested = get(user).layer(cache.for_route(RoutePolicy::new().namespace("nested")));
    let app = routes(&calls)
        .nest(
            "/api",
            Router::new()
                .route("/users/{id}", nested)
                .with_state(calls.clone()),
        )
        .layer(cache);
    let long = format!("/search?q={}", "x".repeat(200));
    for path in [
        "/users/1",
        "/static/app.js",
        "/search?q=a",
        &long,
        "/api/users/1",
    ] {
        fetch(&app, path).await;
    }
    let mut keys = store.keys();
    keys.sort();
    assert_eq!(keys.len(), 5, "{keys:?}");
    assert_eq!(keys[0], "app:GET:/search?q=a");
    assert!(keys[1].starts_with("app:GET:/search?q=xxx") && keys[1].contains('#'));
    assert_eq!(
        keys[2..],
        [
            "app:files:GET:/static/app.js",
            "app:nested:GET:/api/users/1",
            "app:users:GET:/users/1",
        ]
    );
}

/// The layer's type does not depend on its key builder: helpers return `CacheLayer`.
fn cache_for(
    store: &tower_response_cache::MemoryStore,
    per_path: bool,
) -> tower_response_cache::CacheLayer {
    let layer = tower_response_cache::CacheLayer::new(store.clone())
        .write_mode(tower_response_cache::WriteMode::Inline);
    if per_path {
        // `key_fn` infers the closure's argument type.
        layer.key_fn(|parts| Some(CacheKey::new(parts.uri.path())))
    } else {
        layer
    }
}

#[tokio::test]
async fn one_layer_type_whatever_builds_the_keys() {
    for (per_path, key) in [(true, "cache:/search"), (false, "cache:GET:/search?q=a")] {
        let calls = Calls::default();
        let store = tower_response_cache::MemoryStore::new(1 << 20);
        let app = routes(&calls).layer(cache_for(&store, per_path));
        fetch(&app, "/search?q=a").await;
        assert_eq!(store.keys(), [key]);
    }
}
