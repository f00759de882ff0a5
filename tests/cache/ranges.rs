//! Range requests answered from stored complete responses (RFC 9110 §14): `206` with one
//! range or `multipart/byteranges`, `416`, `If-Range`; and a `206` from the origin never
//! replaces a stored whole.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use http::{HeaderMap, StatusCode};

use crate::harness::{Calls, fetch, get_with, layer};

/// `/doc`: 100 bytes (`0123456789` ten times), with an `ETag` and dates; the origin answers
/// a `Range` itself with a `206` of the first byte when `partial` is in the path.
fn app(calls: &Calls) -> Router {
    let (cache, _store) = layer();
    Router::new()
        .route(
            "/doc",
            get(
                |State(calls): State<Calls>, headers: HeaderMap| async move {
                    let n = calls.hit();
                    let body = "0123456789".repeat(10);
                    let fields = [
                        ("cache-control", "max-age=60".to_owned()),
                        ("content-type", "text/plain".to_owned()),
                        ("etag", "\"v1\"".to_owned()),
                        ("last-modified", "Sat, 01 Jan 2000 00:00:00 GMT".to_owned()),
                        ("x-n", n.to_string()),
                    ];
                    if headers.contains_key("range") && headers.contains_key("x-origin-ranges") {
                        return (
                            StatusCode::PARTIAL_CONTENT,
                            [("content-range", "bytes 0-0/100".to_owned())],
                            fields,
                            "0".to_owned(),
                        );
                    }
                    (StatusCode::OK, [("x-full", "yes".to_owned())], fields, body)
                },
            ),
        )
        .with_state(calls.clone())
        .layer(cache)
}

/// The app, with `/doc` stored.
async fn stored() -> (Calls, Router) {
    let calls = Calls::default();
    let app = app(&calls);
    fetch(&app, "/doc").await;
    (calls, app)
}

#[tokio::test]
async fn a_stored_response_answers_ranges_with_206_rfc9110_14_2_and_15_3_7() {
    let (calls, app) = stored().await;
    for (range, content_range, body) in [
        ("bytes=0-9", "bytes 0-9/100", "0123456789"),
        ("bytes=95-", "bytes 95-99/100", "56789"),
        ("bytes=-3", "bytes 97-99/100", "789"),
        ("bytes=98-1000", "bytes 98-99/100", "89"),
    ] {
        let reply = get_with(&app, "/doc", &[("range", range)]).await;
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(reply.x_cache(), "HIT");
        assert_eq!(reply.header("content-range"), Some(content_range));
        assert_eq!(
            reply.header("content-length"),
            Some(body.len().to_string().as_str())
        );
        assert_eq!(reply.text(), body);
        assert_eq!(reply.header("etag"), Some("\"v1\""));
    }
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn several_ranges_are_a_multipart_byteranges_body_rfc9110_14_6() {
    let (calls, app) = stored().await;
    let reply = get_with(&app, "/doc", &[("range", "bytes=0-1, 50-52")]).await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    let content_type = reply.header("content-type").unwrap();
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .expect("multipart");
    assert_eq!(
        reply.text(),
        format!(
            "\r\n--{boundary}\r\ncontent-type: text/plain\r\ncontent-range: bytes 0-1/100\r\n\r\n01\
             \r\n--{boundary}\r\ncontent-type: text/plain\r\ncontent-range: bytes 50-52/100\r\n\r\n012\
             \r\n--{boundary}--\r\n"
        )
    );
    assert_eq!(
        reply.header("content-length"),
        Some(reply.body.len().to_string().as_str())
    );
    assert_eq!(calls.get(), 1, "all answered from the cache");
}

#[tokio::test]
async fn an_unsatisfiable_range_is_a_416_and_an_invalid_one_the_whole_response_rfc9110_15_5_17() {
    let (calls, app) = stored().await;
    let reply = get_with(&app, "/doc", &[("range", "bytes=100-")]).await;
    assert_eq!(reply.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(reply.header("content-range"), Some("bytes */100"));
    assert!(reply.body.is_empty());
    for ignored in ["bytes=9-0", "lines=1-2", "bytes=x"] {
        let reply = get_with(&app, "/doc", &[("range", ignored)]).await;
        assert_eq!(
            (reply.status, reply.body.len()),
            (StatusCode::OK, 100),
            "{ignored}"
        );
    }
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn if_range_applies_the_range_only_to_the_same_representation_rfc9110_13_1_5() {
    let (calls, app) = stored().await;
    let partial = get_with(
        &app,
        "/doc",
        &[("range", "bytes=0-0"), ("if-range", "\"v1\"")],
    )
    .await;
    assert_eq!(
        (partial.status, partial.text()),
        (StatusCode::PARTIAL_CONTENT, "0".to_owned())
    );
    for stale in ["\"v0\"", "W/\"v1\"", "Fri, 31 Dec 1999 00:00:00 GMT"] {
        let whole = get_with(&app, "/doc", &[("range", "bytes=0-0"), ("if-range", stale)]).await;
        assert_eq!(
            (whole.status, whole.body.len()),
            (StatusCode::OK, 100),
            "{stale}: the whole response"
        );
    }
    assert_eq!(calls.get(), 1, "all answered from the cache");
}

#[tokio::test]
async fn a_head_or_a_conditional_match_wins_over_the_range() {
    let (calls, app) = stored().await;
    // RFC 9110 §13.2.2: preconditions first.
    let reply = get_with(
        &app,
        "/doc",
        &[("range", "bytes=0-0"), ("if-none-match", "\"v1\"")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_MODIFIED);
    // §14.2: Range is for GET only.
    let head = crate::harness::send(
        &app,
        http::Request::head("/doc")
            .header("range", "bytes=0-0")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(calls.get(), 1, "all answered from the cache");
}

#[tokio::test]
async fn a_206_from_the_origin_never_replaces_the_stored_whole_rfc9111_3_4() {
    let (calls, app) = stored().await;
    // A refresh with a range the origin answers itself.
    let partial = get_with(
        &app,
        "/doc",
        &[
            ("cache-control", "no-cache"),
            ("range", "bytes=0-0"),
            ("x-origin-ranges", "1"),
        ],
    )
    .await;
    assert_eq!(partial.status, StatusCode::PARTIAL_CONTENT);
    let whole = fetch(&app, "/doc").await;
    assert_eq!(
        (
            whole.status,
            whole.x_cache(),
            whole.body.len(),
            whole.header("x-n")
        ),
        (StatusCode::OK, "HIT", 100, Some("1"))
    );
    assert_eq!(calls.get(), 2, "the whole, then the refresh's part");
}
