//! HTTP caching semantics beyond storing: conditional requests answered from the cache
//! (RFC 9110 §13), invalidation after unsafe methods (RFC 9111 §4.4).

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use http::{Method, Request, StatusCode};

use crate::harness::{Calls, Reply, fetch, get_with, layer, send};

fn app(calls: &Calls) -> Router {
    let page = |State(calls): State<Calls>| async move {
        (
            [
                ("etag", "W/\"v1\""),
                ("last-modified", "Sat, 01 Jan 2000 00:00:00 GMT"),
                ("cache-control", "max-age=60"),
                ("content-type", "text/plain"),
            ],
            format!("page #{}", calls.hit()),
        )
    };
    let (cache, _store) = layer();
    Router::new()
        .route(
            "/items/{id}",
            get(page).post(|| async { "updated" }).delete(
                |State(calls): State<Calls>| async move {
                    calls.hit();
                    (
                        [
                            ("location", "/items"),
                            ("content-location", "http://other.example/items/9"),
                        ],
                        "deleted",
                    )
                },
            ),
        )
        .route(
            "/items",
            get(page).put(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "failed") }),
        )
        .route(
            "/items/{id}/archive",
            axum::routing::post(|| async {
                (
                    StatusCode::SEE_OTHER,
                    [("location", "http://shop.example/items/7")],
                    "",
                )
            }),
        )
        .with_state(calls.clone())
        .layer(cache)
}

async fn request(app: &Router, method: Method, uri: &str) -> Reply {
    send(
        app,
        Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "shop.example")
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn a_matching_if_none_match_gets_a_304_from_the_cache() {
    let calls = Calls::default();
    let app = app(&calls);
    fetch(&app, "/items/1").await;
    // RFC 9110 §13.1.2 (weak comparison) and §15.4.5 (the 304's headers).
    let reply = get_with(&app, "/items/1", &[("if-none-match", "\"other\", \"v1\"")]).await;
    assert_eq!(reply.status, StatusCode::NOT_MODIFIED);
    assert!(reply.body.is_empty());
    assert_eq!(reply.header("etag"), Some("W/\"v1\""));
    assert_eq!(reply.header("cache-control"), Some("max-age=60"));
    assert_eq!(
        reply.header("content-type"),
        None,
        "no representation metadata"
    );
    assert_eq!(reply.header("x-cache"), Some("HIT"));
    assert!(reply.header("age").is_some());

    let other = get_with(&app, "/items/1", &[("if-none-match", "\"v2\"")]).await;
    assert_eq!(
        (other.status, other.text().as_str()),
        (StatusCode::OK, "page #1")
    );
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn if_modified_since_is_answered_when_there_is_no_if_none_match() {
    let calls = Calls::default();
    let app = app(&calls);
    fetch(&app, "/items/2").await;
    // RFC 9110 §13.1.3.
    let later = ("if-modified-since", "Sun, 02 Jan 2000 00:00:00 GMT");
    assert_eq!(
        get_with(&app, "/items/2", &[later]).await.status,
        StatusCode::NOT_MODIFIED
    );
    let earlier = ("if-modified-since", "Fri, 31 Dec 1999 00:00:00 GMT");
    assert_eq!(
        get_with(&app, "/items/2", &[earlier]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_with(&app, "/items/2", &[later, ("if-none-match", "\"nope\"")])
            .await
            .status,
        StatusCode::OK,
        "If-None-Match takes precedence"
    );
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn a_successful_unsafe_request_invalidates_its_target() {
    let calls = Calls::default();
    let app = app(&calls);
    fetch(&app, "/items/3").await;
    fetch(&app, "/items/4").await;
    // RFC 9111 §4.4.
    assert_eq!(
        request(&app, Method::POST, "/items/3").await.text(),
        "updated"
    );
    let after = fetch(&app, "/items/3").await;
    assert_eq!(
        (after.header("x-cache"), after.text().as_str()),
        (Some("MISS"), "page #3")
    );
    assert_eq!(
        fetch(&app, "/items/4").await.header("x-cache"),
        Some("HIT"),
        "other URIs stay"
    );
}

#[tokio::test]
async fn a_failed_unsafe_request_invalidates_nothing() {
    let calls = Calls::default();
    let app = app(&calls);
    fetch(&app, "/items").await;
    assert_eq!(
        request(&app, Method::PUT, "/items").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(fetch(&app, "/items").await.header("x-cache"), Some("HIT"));
}

#[tokio::test]
async fn same_origin_location_and_content_location_are_invalidated_too() {
    let calls = Calls::default();
    let app = app(&calls);
    fetch(&app, "/items").await;
    fetch(&app, "/items/5").await;
    fetch(&app, "/items/7").await;
    fetch(&app, "/items/9").await;
    request(&app, Method::DELETE, "/items/5").await;
    assert_eq!(
        fetch(&app, "/items/5").await.header("x-cache"),
        Some("MISS"),
        "the target"
    );
    assert_eq!(
        fetch(&app, "/items").await.header("x-cache"),
        Some("MISS"),
        "its Location"
    );
    assert_eq!(
        fetch(&app, "/items/9").await.header("x-cache"),
        Some("HIT"),
        "a Content-Location on another origin is left alone"
    );
    // An absolute Location on the request's own origin (Host) counts.
    let archived = request(&app, Method::POST, "/items/7/archive").await;
    assert_eq!(archived.status, StatusCode::SEE_OTHER);
    assert_eq!(
        fetch(&app, "/items/7").await.header("x-cache"),
        Some("MISS")
    );
}

#[tokio::test]
async fn safe_methods_invalidate_nothing() {
    let calls = Calls::default();
    let app = app(&calls);
    fetch(&app, "/items/6").await;
    request(&app, Method::OPTIONS, "/items/6").await;
    assert_eq!(fetch(&app, "/items/6").await.header("x-cache"), Some("HIT"));
}

#[tokio::test]
async fn a_conditional_miss_fills_the_cache_with_the_full_response() {
    let calls = Calls::default();
    let app = app(&calls);
    // The fill asks the origin for the whole response, not the client's 304.
    let first = get_with(&app, "/items/8", &[("if-none-match", "W/\"v1\"")]).await;
    assert_eq!(
        (first.status, first.header("x-cache")),
        (StatusCode::OK, Some("MISS"))
    );
    assert_eq!(fetch(&app, "/items/8").await.header("x-cache"), Some("HIT"));
    let again = get_with(&app, "/items/8", &[("if-none-match", "W/\"v1\"")]).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(calls.get(), 1);
}
