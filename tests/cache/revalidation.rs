//! Revalidation with the origin (RFC 9111 §4.3), responses that must be revalidated
//! (`no-cache`, `must-revalidate`, `proxy-revalidate`, `s-maxage`: §5.2.2), and a request's
//! own `no-cache` (§5.2.1.4). The origin here honours conditional requests and counts full
//! and `304` answers apart.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, StatusCode};

use crate::harness::{fetch, get_with, layer, snapshot};
use tower_response_cache::{CacheLayer, MemoryStore, store::Store};

/// An origin whose representation is `body` with `etag` / `last_modified`; it answers a
/// matching `If-None-Match` (or, without one, a matching `If-Modified-Since`) with a 304.
#[derive(Clone, Default)]
struct Origin {
    inner: Arc<OriginState>,
}

#[derive(Default)]
struct OriginState {
    full: AtomicUsize,
    not_modified: AtomicUsize,
    failing: AtomicBool,
    state: Mutex<Representation>,
    /// The validators of the last request: (`If-None-Match`, `If-Modified-Since`).
    seen: Mutex<Vec<(Option<String>, Option<String>)>>,
}

#[derive(Clone, Default)]
struct Representation {
    body: String,
    etag: Option<&'static str>,
    last_modified: Option<&'static str>,
    cache_control: &'static str,
    /// `Cache-Control` of a 304, when it differs.
    cache_control_304: Option<&'static str>,
    /// An extra header of a 304 (`x-revision: 2`): the update the cache must apply.
    header_304: Option<(&'static str, &'static str)>,
    /// The `ETag` of a 304, when it differs (an origin that contradicts itself).
    etag_304: Option<&'static str>,
    /// A `Date` for full responses.
    date: Option<String>,
}

impl Origin {
    fn new(representation: Representation) -> Self {
        let origin = Self::default();
        *origin.inner.state.lock().unwrap() = representation;
        origin
    }

    fn set(&self, change: impl FnOnce(&mut Representation)) {
        change(&mut self.inner.state.lock().unwrap());
    }

    fn full(&self) -> usize {
        self.inner.full.load(Ordering::SeqCst)
    }

    fn not_modified(&self) -> usize {
        self.inner.not_modified.load(Ordering::SeqCst)
    }

    fn last_seen(&self) -> (Option<String>, Option<String>) {
        self.inner.seen.lock().unwrap().last().cloned().unwrap()
    }

    fn app(&self, cache: CacheLayer) -> Router {
        Router::new()
            .route("/doc", get(serve))
            .with_state(self.clone())
            .layer(cache)
    }
}

async fn serve(State(origin): State<Origin>, headers: HeaderMap) -> Response {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let (inm, ims) = (text("if-none-match"), text("if-modified-since"));
    origin
        .inner
        .seen
        .lock()
        .unwrap()
        .push((inm.clone(), ims.clone()));
    // Slow enough for concurrent requests to overlap.
    tokio::time::sleep(Duration::from_millis(50)).await;
    if origin.inner.failing.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    let state = origin.inner.state.lock().unwrap().clone();
    let mut validators = HeaderMap::new();
    if let Some(etag) = state.etag {
        validators.insert("etag", etag.parse().unwrap());
    }
    if let Some(date) = state.last_modified {
        validators.insert("last-modified", date.parse().unwrap());
    }
    let unchanged = match (inm, ims) {
        (Some(inm), _) => state.etag.is_some_and(|etag| etag == inm),
        (None, Some(ims)) => state.last_modified.is_some_and(|date| date == ims),
        (None, None) => false,
    };
    if unchanged {
        origin.inner.not_modified.fetch_add(1, Ordering::SeqCst);
        if let Some(etag) = state.etag_304 {
            validators.insert("etag", etag.parse().unwrap());
        }
        let mut response = (
            StatusCode::NOT_MODIFIED,
            [(
                "cache-control",
                state.cache_control_304.unwrap_or(state.cache_control),
            )],
            validators,
        )
            .into_response();
        if let Some((name, value)) = state.header_304 {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        return response;
    }
    origin.inner.full.fetch_add(1, Ordering::SeqCst);
    if let Some(date) = &state.date {
        validators.insert("date", date.parse().unwrap());
    }
    (
        [
            ("cache-control", state.cache_control),
            ("content-type", "text/plain"),
            ("x-revision", "1"),
        ],
        validators,
        state.body,
    )
        .into_response()
}

/// The origin serving `representation` behind `cache`, after a first request has filled
/// the cache.
async fn filled(
    representation: Representation,
    (cache, store): (CacheLayer, MemoryStore),
) -> (Origin, Router, MemoryStore) {
    let origin = Origin::new(representation);
    let app = origin.app(cache);
    fetch(&app, "/doc").await;
    (origin, app, store)
}

fn keeping() -> (CacheLayer, MemoryStore) {
    let (cache, store) = layer();
    (cache.keep(Duration::from_secs(60)), store)
}

fn doc(cache_control: &'static str) -> Representation {
    Representation {
        body: "version 1".to_owned(),
        etag: Some("\"v1\""),
        last_modified: None,
        cache_control,
        ..Representation::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_no_cache_response_is_stored_and_revalidated_before_every_reuse() {
    let origin = Origin::new(Representation {
        header_304: Some(("x-revision", "2")),
        ..doc("no-cache")
    });
    let (cache, store) = keeping();
    let app = origin.app(cache.clone());

    // RFC 9111 §5.2.2.4: stored, but never reused without validation.
    let first = fetch(&app, "/doc").await;
    assert_eq!(first.x_cache(), "MISS");
    assert!(store.get("t:GET:/doc").await.unwrap().is_some());

    // §4.3.1: the cache validates with the stored ETag; §4.3.3 / §4.3.4: the 304 is
    // answered with the stored body and the updated headers.
    let second = fetch(&app, "/doc").await;
    assert_eq!(origin.last_seen(), (Some("\"v1\"".to_owned()), None));
    assert_eq!(
        (second.status, second.text().as_str(), second.x_cache()),
        (StatusCode::OK, "version 1", "REVALIDATED")
    );
    assert_eq!(
        second.header("x-revision"),
        Some("2"),
        "updated from the 304"
    );
    assert_eq!(second.header("content-type"), Some("text/plain"));
    assert_eq!(second.header("content-length"), Some("9"));
    assert_eq!(
        second.header("cache-status"),
        Some("tower-response-cache; fwd=stale; fwd-status=304; stored")
    );
    let stored = store.get("t:GET:/doc").await.unwrap().unwrap();
    assert_eq!(
        stored.headers["x-revision"], "2",
        "the store has the update"
    );
    assert_eq!(stored.body, "version 1");

    fetch(&app, "/doc").await;
    assert_eq!((origin.full(), origin.not_modified()), (1, 2));
    let stats = snapshot(&cache).total;
    assert_eq!((stats.revalidated, stats.hits), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn without_keep_a_no_cache_response_is_not_stored() {
    let origin = Origin::new(doc("no-cache"));
    let (cache, store) = layer();
    let app = origin.app(cache.clone());
    // RFC 9111 §5.2.2.4 allows storing; like nginx and Varnish, the default does not.
    assert_eq!(fetch(&app, "/doc").await.x_cache(), "UNCACHEABLE");
    assert_eq!(fetch(&app, "/doc").await.x_cache(), "UNCACHEABLE");
    assert_eq!(origin.last_seen(), (None, None), "nothing to validate");
    assert_eq!(origin.full(), 2);
    assert!(store.get("t:GET:/doc").await.unwrap().is_none());
    assert_eq!(snapshot(&cache).total.not_stored["no-cache"], 2);
}

#[tokio::test(start_paused = true)]
async fn a_no_cache_response_without_a_validator_is_not_stored() {
    let origin = Origin::new(Representation {
        etag: None,
        ..doc("no-cache")
    });
    let (cache, store) = keeping();
    let app = origin.app(cache);
    // Nothing to revalidate it with: it could only ever be fetched again (RFC 9111 §4.3.1).
    fetch(&app, "/doc").await;
    assert!(store.get("t:GET:/doc").await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_304_updates_freshness_so_the_entry_is_fresh_again() {
    let (origin, app, _store) = filled(
        Representation {
            etag: None,
            last_modified: Some("Sat, 01 Jan 2000 00:00:00 GMT"),
            cache_control_304: Some("max-age=60"),
            ..doc("max-age=1")
        },
        keeping(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // RFC 9111 §4.3.1: with only a modification date, `If-Modified-Since`.
    let revalidated = fetch(&app, "/doc").await;
    assert_eq!(revalidated.x_cache(), "REVALIDATED");
    assert_eq!(
        origin.last_seen(),
        (None, Some("Sat, 01 Jan 2000 00:00:00 GMT".to_owned()))
    );
    // §4.3.4: the 304's `max-age=60` is the entry's freshness now.
    let hit = fetch(&app, "/doc").await;
    assert_eq!((hit.x_cache(), hit.text().as_str()), ("HIT", "version 1"));
    assert_eq!(hit.header("cache-control"), Some("max-age=60"));
    assert_eq!((origin.full(), origin.not_modified()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_changed_representation_replaces_the_entry() {
    let (origin, app, store) = filled(doc("no-cache"), keeping()).await;
    origin.set(|doc| {
        doc.body = "version 2".to_owned();
        doc.etag = Some("\"v2\"");
    });
    // RFC 9111 §4.3.3: a full response to the conditional request replaces the entry.
    let changed = fetch(&app, "/doc").await;
    assert_eq!(
        (changed.x_cache(), changed.text().as_str()),
        ("MISS", "version 2")
    );
    assert_eq!(origin.last_seen().0.as_deref(), Some("\"v1\""));
    let stored = store.get("t:GET:/doc").await.unwrap().unwrap();
    assert_eq!(stored.etag().unwrap(), "\"v2\"");
    assert_eq!(stored.body, "version 2");
    fetch(&app, "/doc").await;
    assert_eq!(origin.last_seen().0.as_deref(), Some("\"v2\""));
    assert_eq!((origin.full(), origin.not_modified()), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn the_clients_own_validators_get_a_304_after_revalidation() {
    let (origin, app, _store) = filled(doc("no-cache"), keeping()).await;
    // The cache revalidates with its own validator, then answers the client's
    // (RFC 9111 §4.3.2 with RFC 9110 §13.1.2).
    let reply = get_with(&app, "/doc", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(reply.status, StatusCode::NOT_MODIFIED);
    assert!(reply.body.is_empty());
    assert_eq!(reply.header("etag"), Some("\"v1\""));
    let other = get_with(&app, "/doc", &[("if-none-match", "\"v0\"")]).await;
    assert_eq!(
        (other.status, other.text().as_str()),
        (StatusCode::OK, "version 1")
    );
    assert_eq!(
        origin.last_seen().0.as_deref(),
        Some("\"v1\""),
        "the cache's validator"
    );
    assert_eq!(origin.full(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_no_cache_revalidates_a_fresh_entry() {
    let (origin, app, _store) = filled(doc("max-age=60"), layer()).await;
    assert_eq!(fetch(&app, "/doc").await.x_cache(), "HIT");
    // RFC 9111 §5.2.1.4: validated with the origin, which need not send the body again.
    let reply = get_with(&app, "/doc", &[("cache-control", "no-cache")]).await;
    assert_eq!(
        (reply.x_cache(), reply.text().as_str()),
        ("REVALIDATED", "version 1")
    );
    assert_eq!((origin.full(), origin.not_modified()), (1, 1));
    // The bypass header forces a full fetch.
    let forced = get_with(&app, "/doc", &[("x-cache-bypass", "1")]).await;
    assert_eq!(forced.x_cache(), "REFRESH");
    assert_eq!(origin.last_seen(), (None, None));
    assert_eq!(origin.full(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_revalidation() {
    let origin = Origin::new(doc("no-cache"));
    let (cache, _store) = keeping();
    let app = origin.app(cache.clone());
    fetch(&app, "/doc").await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move { fetch(&app, "/doc").await }));
    }
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (StatusCode::OK, "version 1")
        );
    }
    // One conditional request; the others were answered by it (RFC 9111 §4 allows a
    // response validated for one request to satisfy concurrent ones).
    assert_eq!((origin.full(), origin.not_modified()), (1, 1));
    assert_eq!(cache.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_refreshes_with_a_conditional_request() {
    let (origin, app, store) = filled(
        Representation {
            header_304: Some(("x-revision", "2")),
            ..doc("max-age=1, stale-while-revalidate=60")
        },
        layer(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(fetch(&app, "/doc").await.x_cache(), "STALE");
    // The background refresh is a revalidation (RFC 5861 §3 with RFC 9111 §4.3).
    let mut refreshed = false;
    for _ in 0..200 {
        let entry = store.get("t:GET:/doc").await.unwrap().unwrap();
        if entry.headers["x-revision"] == "2" {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refreshed);
    assert_eq!((origin.full(), origin.not_modified()), (1, 1));
    let hit = fetch(&app, "/doc").await;
    assert_eq!((hit.x_cache(), hit.text().as_str()), ("HIT", "version 1"));
}

/// RFC 9111 §5.2.2.2, §5.2.2.8, §5.2.2.10: once stale, a response that says
/// `must-revalidate`, `proxy-revalidate` or `s-maxage` is not served without revalidation,
/// whatever the layer's stale windows; a stale directive in the response itself still counts.
#[tokio::test(start_paused = true)]
async fn revalidation_directives_forbid_configured_stale_serving() {
    // RFC 9111 §5.2.2.2, §5.2.2.8, §5.2.2.10 (see above).
    let cases = [
        ("max-age=1", "STALE"),
        ("max-age=1, must-revalidate", "UNCACHEABLE"),
        ("max-age=1, proxy-revalidate", "UNCACHEABLE"),
        ("s-maxage=1", "UNCACHEABLE"),
        ("s-maxage=1, stale-if-error=60", "STALE"),
    ];
    let mut apps = Vec::new();
    for (cache_control, _) in cases {
        let origin = Origin::new(Representation {
            etag: None,
            ..doc(cache_control)
        });
        let (cache, _store) = layer();
        let app = origin.app(cache.stale_if_error(Duration::from_secs(60)));
        fetch(&app, "/doc").await;
        apps.push((origin, app));
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for ((cache_control, expected), (origin, app)) in cases.iter().zip(&apps) {
        origin.inner.failing.store(true, Ordering::SeqCst);
        let reply = fetch(app, "/doc").await;
        assert_eq!(reply.x_cache(), *expected, "{cache_control}");
        let status = if *expected == "STALE" {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        assert_eq!(reply.status, status, "{cache_control}");
    }
}

#[tokio::test(start_paused = true)]
async fn s_maxage_with_stale_while_revalidate_is_served_stale() {
    // The CDN idiom `s-maxage=1, stale-while-revalidate=60`: the response grants the window
    // (RFC 5861 §3) that `s-maxage` alone would deny (RFC 9111 §5.2.2.10).
    let origin = Origin::new(doc("s-maxage=1, stale-while-revalidate=60"));
    let (cache, _store) = layer();
    let app = origin.app(cache.stale_while_revalidate(Duration::from_secs(60)));
    fetch(&app, "/doc").await;
    let denied = Origin::new(doc("s-maxage=1"));
    let (cache, _store) = keeping();
    let denied_app = denied.app(cache.stale_while_revalidate(Duration::from_secs(60)));
    fetch(&denied_app, "/doc").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(fetch(&app, "/doc").await.x_cache(), "STALE");
    let reply = fetch(&denied_app, "/doc").await;
    assert_eq!(
        reply.x_cache(),
        "REVALIDATED",
        "validated before use, not served stale"
    );
}

#[tokio::test(start_paused = true)]
async fn a_no_cache_entry_is_never_served_stale_on_error() {
    let origin = Origin::new(doc("no-cache"));
    let (cache, _store) = keeping();
    let app = origin.app(cache.stale_if_error(Duration::from_secs(60)));
    fetch(&app, "/doc").await;
    origin.inner.failing.store(true, Ordering::SeqCst);
    // RFC 9111 §5.2.2.4 / §4.2.4: no stale reuse of a `no-cache` response.
    assert_eq!(
        fetch(&app, "/doc").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(start_paused = true)]
async fn a_304_for_another_representation_is_not_passed_off_as_the_entry() {
    let (origin, app, store) = filled(
        Representation {
            etag_304: Some("\"v9\""),
            ..doc("no-cache")
        },
        keeping(),
    )
    .await;
    // RFC 9111 §4.3.4: a 304 whose validator is not the stored one updates nothing; a client
    // that sent no condition cannot be given a 304 either.
    let reply = fetch(&app, "/doc").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(
        store.get("t:GET:/doc").await.unwrap().is_none(),
        "the entry is outdated"
    );
    let again = fetch(&app, "/doc").await;
    assert_eq!((again.status, again.x_cache()), (StatusCode::OK, "MISS"));
    assert_eq!(origin.last_seen(), (None, None), "a full fetch");
}

#[tokio::test(start_paused = true)]
async fn a_head_revalidates_the_entry_and_gets_no_body() {
    use tower::ServiceExt;
    let (_origin, app, store) = filled(
        Representation {
            header_304: Some(("x-revision", "2")),
            ..doc("no-cache")
        },
        keeping(),
    )
    .await;
    let response = app
        .clone()
        .oneshot(
            http::Request::head("/doc")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.headers()["x-cache"], "REVALIDATED");
    assert_eq!(response.headers()["content-length"], "9");
    // RFC 9110 §9.3.2: a HEAD response has no content.
    use http_body_util::BodyExt;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.is_empty());
    // RFC 9111 §4.3.5 / §4.3.4: the stored entry was updated by the HEAD's validation.
    let entry = store.get("t:GET:/doc").await.unwrap().unwrap();
    assert_eq!(entry.headers["x-revision"], "2");
    assert_eq!(entry.body, "version 1");
}

#[tokio::test(start_paused = true)]
async fn a_304_without_a_date_freshens_from_when_it_arrived() {
    // The stored response is 100 s old by its `Date`: stale from the start.
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(100));
    let (origin, app, _store) = filled(
        Representation {
            date: Some(date),
            cache_control_304: Some("max-age=60"),
            ..doc("max-age=60")
        },
        keeping(),
    )
    .await;
    assert_eq!(fetch(&app, "/doc").await.x_cache(), "REVALIDATED");
    // RFC 9111 §4.2.3 with RFC 9110 §6.6.1: without a `Date`, the 304 is as old as the time
    // it arrived; its `max-age=60` makes the entry fresh again.
    let hit = fetch(&app, "/doc").await;
    assert_eq!(hit.x_cache(), "HIT");
    assert!(hit.header("age").unwrap().parse::<u64>().unwrap() < 5);
    assert_eq!(origin.not_modified(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_304_that_withdraws_permission_removes_the_entry() {
    let (_origin, app, store) = filled(
        Representation {
            cache_control_304: Some("no-store"),
            ..doc("no-cache")
        },
        keeping(),
    )
    .await;
    // RFC 9111 §4.3.4 updates the entry with `no-store` (§5.2.2.5): it may not be kept.
    let reply = fetch(&app, "/doc").await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, "version 1")
    );
    assert_eq!(
        reply.header("cache-status"),
        Some("tower-response-cache; fwd=stale; fwd-status=304; detail=no-store")
    );
    assert!(store.get("t:GET:/doc").await.unwrap().is_none());
    assert_eq!(fetch(&app, "/doc").await.x_cache(), "MISS");
}

#[tokio::test(start_paused = true)]
async fn a_zero_ttl_from_the_handler_keeps_a_response_with_a_validator_out() {
    let (cache, store) = keeping();
    let app = Router::new()
        .route(
            "/zero",
            get(|| async {
                (
                    axum::Extension(tower_response_cache::CacheTtl(Duration::ZERO)),
                    [("etag", "\"z\"")],
                    "zero",
                )
            }),
        )
        .layer(cache);
    // `CacheTtl(0)` means "do not store", `keep` notwithstanding.
    assert_eq!(fetch(&app, "/zero").await.x_cache(), "UNCACHEABLE");
    assert!(store.get("t:GET:/zero").await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_sliding_route_does_not_serve_what_is_kept_for_revalidation() {
    let origin = Origin::new(doc("public"));
    let (cache, _store) = keeping();
    let cache = cache.no_default_ttl().route(
        "/doc",
        tower_response_cache::RoutePolicy::new()
            .ttl(Duration::from_millis(300))
            .sliding(true),
    );
    let app = origin.app(cache);
    fetch(&app, "/doc").await;
    assert_eq!(fetch(&app, "/doc").await.x_cache(), "HIT");
    tokio::time::sleep(Duration::from_millis(600)).await;
    // RFC 9111 §4.2.4: past its (sliding) lifetime the entry is not a hit, although `keep`
    // would have kept a non-sliding entry for revalidation.
    assert_ne!(fetch(&app, "/doc").await.x_cache(), "HIT");
}

#[tokio::test(start_paused = true)]
async fn a_head_that_finds_the_entry_stale_refreshes_it_with_a_get() {
    use tower::ServiceExt;
    let (origin, app, store) = filled(
        Representation {
            etag: None,
            ..doc("max-age=1, stale-while-revalidate=60")
        },
        layer(),
    )
    .await;
    origin.set(|doc| doc.body = "version 2".to_owned());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let head = app
        .clone()
        .oneshot(
            http::Request::head("/doc")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(head.headers()["x-cache"], "STALE");
    // RFC 5861 §3: the background refresh stores the new response (a HEAD response could
    // not have been stored).
    let mut refreshed = false;
    for _ in 0..200 {
        let entry = store.get("t:GET:/doc").await.unwrap().unwrap();
        if entry.body == "version 2" {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refreshed);
}

#[tokio::test(start_paused = true)]
async fn a_server_error_during_revalidation_keeps_the_entry_for_later() {
    let (origin, app, store) = filled(doc("no-cache"), keeping()).await;
    origin.inner.failing.store(true, Ordering::SeqCst);
    // The 503 goes to the client (no stale window for a `no-cache` response, RFC 9111
    // §5.2.2.4), but says nothing about the stored representation: it stays, and is
    // revalidated once the origin is back (§4.3).
    assert_eq!(
        fetch(&app, "/doc").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(store.get("t:GET:/doc").await.unwrap().is_some());
    origin.inner.failing.store(false, Ordering::SeqCst);
    assert_eq!(fetch(&app, "/doc").await.x_cache(), "REVALIDATED");
    assert_eq!((origin.full(), origin.not_modified()), (1, 1));
}
