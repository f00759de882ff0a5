//! Safe storing: every reason a response is not stored, and the opt-ins.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::{Request, StatusCode};
use tower_response_cache::policy::{SetCookiePolicy, StatusSet};
use tower_response_cache::{CacheLayer, RoutePolicy};

use crate::harness::{Calls, entry_count, fetch, get_with, layer, send, snapshot, stored};

/// A route whose response has `status` and `headers`, counting its calls.
fn app(
    calls: &Calls,
    cache: CacheLayer,
    status: StatusCode,
    headers: &'static [(&'static str, &'static str)],
) -> Router {
    Router::new()
        .route(
            "/r",
            get(move |State(calls): State<Calls>| async move {
                let mut response = format!("r{}", calls.hit()).into_response();
                *response.status_mut() = status;
                for (name, value) in headers {
                    response.headers_mut().append(*name, value.parse().unwrap());
                }
                response
            }),
        )
        .with_state(calls.clone())
        .layer(cache)
}

/// Sends the same request twice and checks that the service ran both times, nothing was
/// stored, and `reason` was counted and reported.
async fn assert_not_stored(
    status: StatusCode,
    headers: &'static [(&'static str, &'static str)],
    request_headers: &[(&str, &str)],
    reason: &str,
) {
    let calls = Calls::default();
    let (cache, store) = layer();
    let app = app(&calls, cache.clone(), status, headers);
    let first = get_with(&app, "/r", request_headers).await;
    assert_eq!(first.x_cache(), "UNCACHEABLE", "{reason}");
    assert_eq!(
        first.header("cache-status"),
        Some(format!("tower-response-cache; fwd=miss; detail={reason}").as_str())
    );
    let second = get_with(&app, "/r", request_headers).await;
    assert_eq!(
        second.text(),
        "r2",
        "{reason}: the second request reached the service"
    );
    assert_eq!(entry_count(&store).await, 0, "{reason}");
    assert_eq!(snapshot(&cache).total.not_stored[reason], 2, "{reason}");
}

#[tokio::test]
async fn uncacheable_statuses_are_not_stored() {
    // RFC 9111 §3: only statuses the cache understands as cacheable (RFC 9110 §15.1 heuristically
    // cacheable ones by default).
    for status in [
        StatusCode::CREATED,
        StatusCode::FOUND,
        StatusCode::INTERNAL_SERVER_ERROR,
    ] {
        assert_not_stored(status, &[], &[], "status").await;
    }
}

#[tokio::test]
async fn response_directives_are_obeyed() {
    // RFC 9111 §5.2.2.5 (`no-store`), §5.2.2.7 (`private`), §5.2.2.4 (`no-cache`), §4.1 (`Vary:
    // *`).
    assert_not_stored(
        StatusCode::OK,
        &[("cache-control", "no-store")],
        &[],
        "no-store",
    )
    .await;
    assert_not_stored(
        StatusCode::OK,
        &[("cache-control", "private, max-age=60")],
        &[],
        "private",
    )
    .await;
    assert_not_stored(
        StatusCode::OK,
        &[("cache-control", "no-cache")],
        &[],
        "no-cache",
    )
    .await;
    assert_not_stored(StatusCode::OK, &[("vary", "*")], &[], "vary-star").await;
    assert_not_stored(
        StatusCode::OK,
        &[("cache-control", "max-age=0")],
        &[],
        "no-freshness",
    )
    .await;
}

#[tokio::test]
async fn set_cookie_responses_are_skipped_by_default() {
    assert_not_stored(
        StatusCode::OK,
        &[("set-cookie", "session=abc")],
        &[],
        "set-cookie",
    )
    .await;
}

#[tokio::test]
async fn set_cookie_can_be_stripped_or_stored() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let app_strip = app(
        &calls,
        cache.set_cookie(SetCookiePolicy::Strip),
        StatusCode::OK,
        &[("set-cookie", "session=abc"), ("x-other", "kept")],
    );
    let miss = fetch(&app_strip, "/r").await;
    assert_eq!(
        miss.header("set-cookie"),
        Some("session=abc"),
        "the client that caused the miss gets its cookie"
    );
    let hit = fetch(&app_strip, "/r").await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.header("set-cookie"), None, "no other client gets it");
    assert_eq!(hit.header("x-other"), Some("kept"));

    let (cache, _store) = layer();
    let app_store = app(
        &calls,
        cache.set_cookie(SetCookiePolicy::Store),
        StatusCode::OK,
        &[("set-cookie", "theme=dark")],
    );
    fetch(&app_store, "/r").await;
    assert_eq!(
        fetch(&app_store, "/r").await.header("set-cookie"),
        Some("theme=dark")
    );
}

#[tokio::test]
async fn authorized_requests_are_not_stored_unless_the_response_allows_it() {
    let auth = [("authorization", "Bearer x")];
    assert_not_stored(StatusCode::OK, &[], &auth, "authorization").await;
    // RFC 9111 §3.5: `public`, `s-maxage` or `must-revalidate` allow it.
    for headers in [
        &[("cache-control", "public")][..],
        &[("cache-control", "s-maxage=60")],
        &[("cache-control", "must-revalidate, max-age=60")],
    ] {
        let calls = Calls::default();
        let (cache, store) = layer();
        let headers: &'static [(&'static str, &'static str)] =
            Box::leak(headers.to_vec().into_boxed_slice());
        let app = app(&calls, cache, StatusCode::OK, headers);
        get_with(&app, "/r", &auth).await;
        assert!(stored(&store, "t:GET:/r").await, "{headers:?}");
    }
    let calls = Calls::default();
    let (cache, store) = layer();
    let app = app(&calls, cache.allow_authorized(true), StatusCode::OK, &[]);
    get_with(&app, "/r", &auth).await;
    assert!(stored(&store, "t:GET:/r").await, "opted in");
}

#[tokio::test]
async fn the_status_set_is_configurable() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let statuses = StatusSet::default()
        .with(StatusCode::FOUND)
        .without(StatusCode::NOT_FOUND);
    let found = app(
        &calls,
        cache.clone().cacheable_statuses(statuses),
        StatusCode::FOUND,
        &[("location", "/x")],
    );
    fetch(&found, "/r").await;
    let hit = fetch(&found, "/r").await;
    assert_eq!(
        (hit.status, hit.x_cache(), hit.header("location")),
        (StatusCode::FOUND, "HIT", Some("/x"))
    );
    assert!(stored(&store, "t:GET:/r").await);

    let (cache, _store) = layer();
    let not_found = app(
        &calls,
        cache.cacheable_statuses(statuses),
        StatusCode::NOT_FOUND,
        &[],
    );
    assert_eq!(fetch(&not_found, "/r").await.x_cache(), "UNCACHEABLE");
}

#[tokio::test]
async fn a_cached_404_is_served_as_a_404() {
    // RFC 9111 §3 with RFC 9110 §15.5.5: a 404 is heuristically cacheable and replayed with its
    // status (here with a negative TTL).
    let calls = Calls::default();
    let (cache, _store) = layer();
    let cache = cache.negative_ttl(std::time::Duration::from_secs(5));
    let app = app(&calls, cache, StatusCode::NOT_FOUND, &[]);
    fetch(&app, "/r").await;
    let hit = fetch(&app, "/r").await;
    assert_eq!(
        (hit.status, hit.x_cache(), hit.text().as_str()),
        (StatusCode::NOT_FOUND, "HIT", "r1")
    );
    assert!(remaining_ttl(&hit) <= 5, "{:?}", hit.header("cache-status"));
}

/// The `ttl` a hit's `Cache-Status` announces.
fn remaining_ttl(reply: &crate::harness::Reply) -> u64 {
    reply
        .header("cache-status")
        .and_then(|status| status.strip_prefix("tower-response-cache; hit; ttl="))
        .and_then(|ttl| ttl.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn negative_responses_get_no_default_ttl() {
    // A user created through another URL must not stay "not found" for a default TTL.
    for status in [
        StatusCode::NOT_FOUND,
        StatusCode::GONE,
        StatusCode::NOT_IMPLEMENTED,
    ] {
        let calls = Calls::default();
        let (cache, store) = layer();
        let app = app(&calls, cache.clone(), status, &[]);
        let first = fetch(&app, "/r").await;
        assert_eq!(
            (first.x_cache(), first.header("cache-status")),
            (
                "UNCACHEABLE",
                Some("tower-response-cache; fwd=miss; detail=no-freshness")
            ),
            "{status}"
        );
        assert_eq!(fetch(&app, "/r").await.text(), "r2", "{status}");
        assert_eq!(entry_count(&store).await, 0, "{status}");
        // A route TTL does not count either.
        let (cache, _store) = layer();
        let routed = cache.route(
            "/r",
            RoutePolicy::new().ttl(std::time::Duration::from_secs(30)),
        );
        let app = self::app(&calls, routed, status, &[]);
        assert_eq!(fetch(&app, "/r").await.x_cache(), "UNCACHEABLE", "{status}");
    }
}

#[tokio::test]
async fn negative_responses_are_stored_when_some_source_says_how_long() {
    let five = std::time::Duration::from_secs(5);
    // The origin's freshness, the layer's or the route's negative TTL, the handler's TTL.
    let calls = Calls::default();
    let (cache, _store) = layer();
    let app = app(
        &calls,
        cache,
        StatusCode::NOT_FOUND,
        &[("cache-control", "max-age=30")],
    );
    fetch(&app, "/r").await;
    assert_eq!(fetch(&app, "/r").await.x_cache(), "HIT", "origin max-age");

    let (cache, _store) = layer();
    let cache = cache.route("/r", RoutePolicy::new().negative_ttl(five));
    let app = self::app(&calls, cache, StatusCode::GONE, &[]);
    fetch(&app, "/r").await;
    let hit = fetch(&app, "/r").await;
    assert_eq!(hit.x_cache(), "HIT", "route negative TTL");
    assert!(
        remaining_ttl(&hit) <= 5,
        "the negative TTL, not the default"
    );

    let (cache, _store) = layer();
    let app = Router::new()
        .route(
            "/r",
            get(move || async move {
                (
                    StatusCode::NOT_FOUND,
                    axum::Extension(tower_response_cache::CacheTtl(five)),
                    "missing",
                )
            }),
        )
        .layer(cache);
    fetch(&app, "/r").await;
    assert_eq!(fetch(&app, "/r").await.x_cache(), "HIT", "handler TTL");
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_replayed_and_others_keep_their_order() {
    // RFC 9111 §3.1 with RFC 9110 §7.6.1: hop-by-hop and `Connection`-named fields are not stored;
    // the others are replayed unchanged, in order.
    let calls = Calls::default();
    let (cache, _store) = layer();
    let app = app(
        &calls,
        cache,
        StatusCode::OK,
        &[
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("link", "</a>; rel=preload"),
            ("x-multi", "one"),
            ("link", "</b>; rel=preload"),
            ("x-multi", "two"),
        ],
    );
    fetch(&app, "/r").await;
    let hit = fetch(&app, "/r").await;
    assert_eq!(hit.x_cache(), "HIT");
    for hop in ["connection", "x-hop", "keep-alive"] {
        assert_eq!(hit.header(hop), None, "{hop}");
    }
    let links: Vec<_> = hit
        .headers
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(links, ["</a>; rel=preload", "</b>; rel=preload"]);
    let multi: Vec<_> = hit
        .headers
        .get_all("x-multi")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(multi, ["one", "two"]);
}

#[tokio::test]
async fn post_passes_through_and_is_never_stored() {
    // RFC 9111 §3: only responses to methods the cache understands as cacheable (GET) are stored.
    let calls = Calls::default();
    let (cache, store) = layer();
    let app = Router::new()
        .route(
            "/r",
            axum::routing::post(
                |State(calls): State<Calls>| async move { format!("p{}", calls.hit()) },
            ),
        )
        .with_state(calls.clone())
        .layer(cache.clone());
    for expected in ["p1", "p2"] {
        let reply = send(&app, Request::post("/r").body(Body::empty()).unwrap()).await;
        assert_eq!(reply.text(), expected);
        assert_eq!(
            reply.header("x-cache"),
            None,
            "the cache stays out of other methods"
        );
    }
    assert_eq!(entry_count(&store).await, 0);
    assert_eq!(snapshot(&cache).total.passes, 2);
}

/// A header value that is a slice of `buffer`, as hyper parses them from a read buffer.
fn slice(buffer: &bytes::Bytes, range: std::ops::Range<usize>) -> http::HeaderValue {
    http::HeaderValue::from_maybe_shared(buffer.slice(range)).unwrap()
}

/// Values for a handler to take once: it holds no copy of them afterwards.
type Once<T> = std::sync::Arc<std::sync::Mutex<Option<T>>>;

fn once<T>(values: T) -> Once<T> {
    std::sync::Arc::new(std::sync::Mutex::new(Some(values)))
}

#[tokio::test]
async fn stored_entries_keep_no_buffer_their_headers_were_parsed_from() {
    // hyper parses header values in place: a response header (a proxied origin's) or a varied
    // request header is a slice of a connection's read buffer. The store keeps copies, so that
    // the buffer is freed and the store's byte accounting is the heap the entry holds.
    let response_buffer = bytes::Bytes::from(b"public, max-age=60|text/plain|".repeat(300));
    let request_buffer = bytes::Bytes::from(b"gzip, br|".repeat(900));
    let headers = once((
        slice(&response_buffer, 0..18),
        slice(&response_buffer, 19..29),
    ));
    let calls = Calls::default();
    let (cache, store) = layer();
    let app = Router::new()
        .route(
            "/r",
            get(move |State(calls): State<Calls>| async move {
                let mut response = format!("r{}", calls.hit()).into_response();
                if let Some((cache_control, content_type)) = headers.lock().unwrap().take() {
                    let headers = response.headers_mut();
                    headers.insert(http::header::CACHE_CONTROL, cache_control);
                    headers.insert(http::header::CONTENT_TYPE, content_type);
                    headers.insert(http::header::VARY, "accept-encoding".parse().unwrap());
                }
                response
            }),
        )
        .with_state(calls.clone())
        .layer(cache);
    let request = Request::get("/r")
        .header(http::header::ACCEPT_ENCODING, slice(&request_buffer, 0..8))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, request).await.x_cache(), "MISS");
    assert!(stored(&store, "t:GET:/r").await);
    assert!(
        response_buffer.is_unique(),
        "the entry keeps the buffer the response headers were parsed from"
    );
    assert!(
        request_buffer.is_unique(),
        "the entry keeps the buffer the varied request header was parsed from"
    );

    let hit = get_with(&app, "/r", &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.text(), "r1");
    assert_eq!(hit.header("cache-control"), Some("public, max-age=60"));
    assert_eq!(hit.header("content-type"), Some("text/plain"));
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn revalidated_entries_keep_no_buffer_the_304_was_parsed_from() {
    // RFC 9111 §4.3.4: a 304 updates the stored headers. Its values, and the varied request
    // header of the request that revalidated, may be slices of read buffers too.
    let response_buffer = bytes::Bytes::from(b"max-age=60|revision-2|".repeat(300));
    let request_buffer = bytes::Bytes::from(b"gzip|".repeat(900));
    let update = once((
        slice(&response_buffer, 0..10),
        slice(&response_buffer, 11..21),
    ));
    let calls = Calls::default();
    let (cache, store) = layer();
    let cache = cache.keep(std::time::Duration::from_secs(60));
    let app = Router::new()
        .route(
            "/r",
            get(
                move |State(calls): State<Calls>, headers: http::HeaderMap| async move {
                    calls.hit();
                    let revalidating = headers
                        .get(http::header::IF_NONE_MATCH)
                        .is_some_and(|tag| tag == "\"v1\"");
                    let mut response = if revalidating {
                        let mut response = StatusCode::NOT_MODIFIED.into_response();
                        if let Some((cache_control, revision)) = update.lock().unwrap().take() {
                            let headers = response.headers_mut();
                            headers.insert(http::header::CACHE_CONTROL, cache_control);
                            headers.insert("x-revision", revision);
                        }
                        response
                    } else {
                        let mut response = "v1 body".into_response();
                        let headers = response.headers_mut();
                        headers.insert(http::header::CACHE_CONTROL, "max-age=0".parse().unwrap());
                        headers.insert("x-revision", "revision-1".parse().unwrap());
                        response
                    };
                    let headers = response.headers_mut();
                    headers.insert(http::header::ETAG, "\"v1\"".parse().unwrap());
                    headers.insert(http::header::VARY, "accept-encoding".parse().unwrap());
                    response
                },
            ),
        )
        .with_state(calls.clone())
        .layer(cache);
    let request = |value: http::HeaderValue| {
        Request::get("/r")
            .header(http::header::ACCEPT_ENCODING, value)
            .body(Body::empty())
            .unwrap()
    };
    let first = send(&app, request(http::HeaderValue::from_static("gzip"))).await;
    assert_eq!(first.x_cache(), "MISS");
    let second = send(&app, request(slice(&request_buffer, 0..4))).await;
    assert_eq!(second.x_cache(), "REVALIDATED");
    assert_eq!(second.text(), "v1 body");
    assert_eq!(calls.get(), 2);
    assert!(stored(&store, "t:GET:/r").await);
    assert!(
        response_buffer.is_unique(),
        "the entry keeps the buffer the 304's headers were parsed from"
    );
    assert!(
        request_buffer.is_unique(),
        "the entry keeps the buffer the revalidating request's varied header was parsed from"
    );

    let hit = get_with(&app, "/r", &[("accept-encoding", "gzip")]).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.header("cache-control"), Some("max-age=60"));
    assert_eq!(hit.header("x-revision"), Some("revision-2"));
    assert_eq!(calls.get(), 2);
}
