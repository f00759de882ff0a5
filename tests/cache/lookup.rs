//! Hits, misses, expiry and every TTL source.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Router};
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_response_cache::store::PutIf;
use tower_response_cache::{CacheTtl, RoutePolicy, store::Store};

use crate::harness::{self, Calls, fetch, get_with, layer, snapshot, stored};

fn counting(calls: &Calls) -> Router<()> {
    Router::new()
        .route(
            "/a",
            get(|State(calls): State<Calls>| async move { format!("a{}", calls.hit()) }),
        )
        .route(
            "/b",
            get(|State(calls): State<Calls>| async move { format!("b{}", calls.hit()) }),
        )
        .with_state(calls.clone())
}

#[tokio::test(start_paused = true)]
async fn second_request_is_a_hit_and_the_service_runs_once() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let app = counting(&calls).layer(cache.clone());

    let first = fetch(&app, "/a").await;
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(
        first.header("cache-status"),
        Some("tower-response-cache; fwd=miss; stored")
    );
    assert!(stored(&store, "t:GET:/a").await);

    let second = fetch(&app, "/a").await;
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("age"), Some("0"));
    assert_eq!(
        second.header("cache-status"),
        Some("tower-response-cache; hit; ttl=60")
    );
    assert_eq!(second.header("content-type"), first.header("content-type"));
    assert_eq!(calls.get(), 1);

    let stats = snapshot(&cache);
    assert_eq!(
        (stats.total.hits, stats.total.misses, stats.total.stores),
        (1, 1, 1)
    );
    assert_eq!(stats.hit_ratio(), 0.5);
}

#[tokio::test(start_paused = true)]
async fn distinct_paths_and_queries_do_not_share_entries() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let app = counting(&calls).layer(cache);
    assert_eq!(fetch(&app, "/a?x=1").await.text(), "a1");
    assert_eq!(fetch(&app, "/a?x=2").await.text(), "a2");
    assert_eq!(fetch(&app, "/b?x=1").await.text(), "b3");
    assert_eq!(fetch(&app, "/a?x=1").await.text(), "a1");
    assert_eq!(calls.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_the_ttl() {
    // RFC 9111 §4.2: a stale entry is not served as a hit.
    let calls = Calls::default();
    let (cache, _store) = layer();
    let app = counting(&calls).layer(cache.default_ttl(Duration::from_millis(400)));
    assert_eq!(fetch(&app, "/a").await.x_cache(), "MISS");
    assert_eq!(fetch(&app, "/a").await.x_cache(), "HIT");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = fetch(&app, "/a").await;
    assert_eq!(after.x_cache(), "MISS");
    assert_eq!(after.text(), "a2");
}

#[tokio::test(start_paused = true)]
async fn route_ttl_overrides_the_default() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let cache = cache.route("/a", RoutePolicy::new().ttl(Duration::from_millis(400)));
    let app = counting(&calls).layer(cache);
    fetch(&app, "/a").await;
    fetch(&app, "/b").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        fetch(&app, "/a").await.x_cache(),
        "MISS",
        "the route's short TTL ran out"
    );
    assert_eq!(
        fetch(&app, "/b").await.x_cache(),
        "HIT",
        "the default TTL did not"
    );
    assert_eq!(calls.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn handler_ttl_wins_over_every_other_source() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let app = Router::new()
        .route(
            "/quote",
            get(|State(calls): State<Calls>| async move {
                (
                    Extension(CacheTtl(Duration::from_millis(400))),
                    [("cache-control", "max-age=600")],
                    format!("q{}", calls.hit()),
                )
            }),
        )
        .route(
            "/never",
            get(|State(calls): State<Calls>| async move {
                (
                    Extension(CacheTtl(Duration::ZERO)),
                    format!("n{}", calls.hit()),
                )
            }),
        )
        .with_state(calls.clone())
        .layer(cache.clone().ttl_fn(|_| Some(Duration::from_secs(600))));
    assert_eq!(fetch(&app, "/quote").await.x_cache(), "MISS");
    assert_eq!(fetch(&app, "/quote").await.x_cache(), "HIT");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(fetch(&app, "/quote").await.x_cache(), "MISS");

    let never = fetch(&app, "/never").await;
    assert_eq!(never.x_cache(), "UNCACHEABLE");
    assert_eq!(
        never.header("cache-status"),
        Some("tower-response-cache; fwd=miss; detail=no-freshness")
    );
    assert_eq!(snapshot(&cache).total.not_stored["no-freshness"], 1);
}

#[tokio::test(start_paused = true)]
async fn ttl_fn_computes_the_ttl_from_the_response() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let cache = cache.ttl_fn(|parts| match parts.headers.get("x-tier") {
        Some(tier) if tier == "premium" => Some(Duration::from_secs(600)),
        Some(_) => Some(Duration::from_millis(400)),
        None => None,
    });
    let app = Router::new()
        .route(
            "/premium",
            get(|State(calls): State<Calls>| async move {
                ([("x-tier", "premium")], format!("p{}", calls.hit()))
            }),
        )
        .route(
            "/basic",
            get(|State(calls): State<Calls>| async move {
                ([("x-tier", "basic")], format!("b{}", calls.hit()))
            }),
        )
        .with_state(calls.clone())
        .layer(cache);
    let premium = fetch(&app, "/premium").await;
    fetch(&app, "/basic").await;
    let hit = fetch(&app, "/premium").await;
    assert_eq!(
        hit.header("cache-status"),
        Some("tower-response-cache; hit; ttl=600")
    );
    assert_eq!(hit.body, premium.body);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(fetch(&app, "/basic").await.x_cache(), "MISS");
    assert_eq!(fetch(&app, "/premium").await.x_cache(), "HIT");
    assert_eq!(calls.get(), 3);
}

async fn with_cache_control(value: &'static str) -> impl IntoResponse {
    ([("cache-control", value)], "body")
}

#[tokio::test(start_paused = true)]
async fn origin_freshness_beats_the_route_ttl_unless_the_route_ignores_it() {
    let (cache, _store) = layer();
    let app = Router::new()
        .route(
            "/origin",
            get(|| with_cache_control("public, max-age=1000, s-maxage=2000")),
        )
        .route("/ignored", get(|| with_cache_control("max-age=1000")))
        .route("/expired", get(|| with_cache_control("max-age=0")))
        .layer(
            cache
                .route("/origin", RoutePolicy::new().ttl(Duration::from_secs(5)))
                .route(
                    "/ignored",
                    RoutePolicy::new()
                        .ttl(Duration::from_secs(5))
                        .honor_origin_ttl(false),
                ),
        );
    fetch(&app, "/origin").await;
    let origin = fetch(&app, "/origin").await;
    // s-maxage wins over max-age for a shared cache (RFC 9111 §5.2.2.10).
    assert_eq!(
        origin.header("cache-status"),
        Some("tower-response-cache; hit; ttl=2000")
    );
    fetch(&app, "/ignored").await;
    assert_eq!(
        fetch(&app, "/ignored").await.header("cache-status"),
        Some("tower-response-cache; hit; ttl=5")
    );
    let expired = fetch(&app, "/expired").await;
    assert_eq!(expired.x_cache(), "UNCACHEABLE");
    assert_eq!(fetch(&app, "/expired").await.x_cache(), "UNCACHEABLE");
}

#[tokio::test(start_paused = true)]
async fn origin_age_counts_against_freshness_and_in_the_age_header() {
    // RFC 9111 §4.2.3 (age calculation) and §5.1 (`Age` on hits).
    let (cache, _store) = layer();
    let app = Router::new()
        .route(
            "/aged",
            get(|| async { ([("cache-control", "max-age=100"), ("age", "40")], "x") }),
        )
        .layer(cache);
    fetch(&app, "/aged").await;
    let hit = fetch(&app, "/aged").await;
    assert_eq!(hit.header("age"), Some("40"));
    assert_eq!(
        hit.header("cache-status"),
        Some("tower-response-cache; hit; ttl=60")
    );
    assert_eq!(hit.headers.get_all("age").iter().count(), 1);
}

#[tokio::test(start_paused = true)]
async fn sliding_ttl_keeps_read_entries_alive() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let cache = cache
        .route(
            "/a",
            RoutePolicy::new()
                .ttl(Duration::from_millis(600))
                .sliding(true),
        )
        .route("/b", RoutePolicy::new().ttl(Duration::from_millis(600)));
    let app = counting(&calls).layer(cache);
    fetch(&app, "/a").await;
    fetch(&app, "/b").await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(fetch(&app, "/a").await.x_cache(), "HIT");
    }
    // 800 ms after it was stored: the sliding entry lives on, the fixed one has expired.
    assert_eq!(fetch(&app, "/b").await.x_cache(), "MISS");
    assert_eq!(calls.get(), 3);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        fetch(&app, "/a").await.x_cache(),
        "MISS",
        "unread, it expires"
    );
}

#[tokio::test(start_paused = true)]
async fn sliding_keeps_the_entry_s_own_ttl() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    // The route says 600 s, the handler says 500 ms: each hit slides by the handler's TTL.
    let cache = cache.route(
        "/short",
        RoutePolicy::new()
            .ttl(Duration::from_secs(600))
            .sliding(true),
    );
    let app = Router::new()
        .route(
            "/short",
            get(|State(calls): State<Calls>| async move {
                (
                    Extension(CacheTtl(Duration::from_millis(500))),
                    format!("s{}", calls.hit()),
                )
            }),
        )
        .with_state(calls.clone())
        .layer(cache);
    fetch(&app, "/short").await;
    let hit = fetch(&app, "/short").await;
    assert_eq!(
        hit.header("cache-status"),
        Some("tower-response-cache; hit; ttl=0")
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        fetch(&app, "/short").await.x_cache(),
        "MISS",
        "not kept for the route's 600 s"
    );
    assert_eq!(calls.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_memory_hit_shares_the_stored_bytes() {
    let (cache, store) = layer();
    let app = Router::new()
        .route("/big", get(|| async { vec![7u8; 64 * 1024] }))
        .layer(cache);
    fetch(&app, "/big").await;
    let entry = store.get("t:GET:/big").await.unwrap().unwrap();
    let response = app
        .clone()
        .oneshot(Request::get("/big").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let frame = response.into_body().frame().await.unwrap().unwrap();
    let data = frame.into_data().unwrap();
    assert_eq!(data.len(), 64 * 1024);
    assert_eq!(
        data.as_ptr(),
        entry.body.as_ptr(),
        "the hit's body is the stored allocation"
    );
}

#[tokio::test(start_paused = true)]
async fn vary_selects_only_the_matching_variant() {
    // RFC 9111 §4.1: a stored response is selected only by requests with the same values of the
    // varied headers.
    let calls = Calls::default();
    let (cache, _store) = layer();
    let app = Router::new()
        .route(
            "/greeting",
            get(
                |State(calls): State<Calls>, headers: http::HeaderMap| async move {
                    let lang = headers
                        .get("accept-language")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_owned();
                    calls.hit();
                    ([("vary", "Accept-Language")], format!("greeting in {lang}"))
                },
            ),
        )
        .with_state(calls.clone())
        .layer(cache);
    let en = get_with(&app, "/greeting", &[("accept-language", "en")]).await;
    assert_eq!(en.text(), "greeting in en");
    let hit = get_with(&app, "/greeting", &[("accept-language", "en")]).await;
    assert_eq!(
        (hit.x_cache(), hit.text().as_str()),
        ("HIT", "greeting in en")
    );
    let fr = get_with(&app, "/greeting", &[("accept-language", "fr")]).await;
    assert_eq!(
        (fr.x_cache(), fr.text().as_str()),
        ("MISS", "greeting in fr")
    );
    let none = harness::fetch(&app, "/greeting").await;
    assert_eq!(
        (none.x_cache(), none.text().as_str()),
        ("MISS", "greeting in none")
    );
    assert_eq!(calls.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_entry_with_more_header_values_than_a_map_sizes_for_is_served() {
    // A store may hand back any entry (another writer, a codec reading what a newer version
    // wrote): one with tens of thousands of values of a header is still answered, not a panic.
    let (cache, store) = layer();
    let calls = Calls::default();
    let app = Router::new()
        .route(
            "/r",
            get(|State(calls): State<Calls>| async move { format!("r{}", calls.hit()) }),
        )
        .with_state(calls.clone())
        .layer(cache);
    let mut headers = http::HeaderMap::new();
    for i in 0..30_000 {
        headers.append("x-many", i.to_string().parse().unwrap());
    }
    headers.insert("content-type", "text/plain".parse().unwrap());
    let mut entry = tower_response_cache::CachedResponse::new(
        http::StatusCode::OK,
        headers,
        bytes::Bytes::from_static(b"stored"),
    );
    entry.ttl = Duration::from_secs(60);
    store
        .put(
            "t:GET:/r",
            std::sync::Arc::new(entry),
            Duration::from_secs(60),
            PutIf::Always,
        )
        .await
        .unwrap();

    let hit = fetch(&app, "/r").await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.text(), "stored");
    assert_eq!(hit.headers.get_all("x-many").iter().count(), 30_000);
    assert_eq!(hit.header("content-type"), Some("text/plain"));
    assert_eq!(calls.get(), 0);
}
