//! Purging over HTTP: the admin router behind its bearer token, the opt-in `PURGE` method,
//! and warming through the handle.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use http::{Method, Request, StatusCode, header};
use tower_response_cache::axum::admin_router;
use tower_response_cache::{CacheLayer, ClientControl};

use crate::harness::{Calls, fetch, layer, send, snapshot};

fn site(calls: &Calls, cache: CacheLayer) -> Router {
    Router::new()
        .route(
            "/users/{id}",
            get(|State(calls): State<Calls>| async move {
                let n = calls.hit();
                ([("surrogate-key", "users")], format!("#{n}"))
            }),
        )
        .with_state(calls.clone())
        .layer(cache)
}

fn admin_request(method: Method, uri: &str, token: Option<&str>, body: &str) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    request.body(Body::from(body.to_owned())).unwrap()
}

#[tokio::test]
async fn the_admin_router_wants_the_token_and_then_purges() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let app = site(&calls, cache.clone()).nest("/_cache", admin_router(cache.handle(), "s3cret"));
    fetch(&app, "/users/1").await;
    fetch(&app, "/users/2").await;
    let purge = r#"{"tags": ["users"]}"#;

    for token in [
        None,
        Some(""),
        Some("wrong"),
        Some("s3cre"),
        Some("s3cret2"),
    ] {
        let reply = send(
            &app,
            admin_request(Method::POST, "/_cache/purge", token, purge),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    }
    let mut basic = admin_request(Method::POST, "/_cache/purge", None, purge);
    basic
        .headers_mut()
        .insert(header::AUTHORIZATION, "Basic s3cret".parse().unwrap());
    assert_eq!(send(&app, basic).await.status, StatusCode::UNAUTHORIZED);
    let stats = send(
        &app,
        admin_request(Method::GET, "/_cache/stats", Some("nope"), ""),
    )
    .await;
    assert_eq!(stats.status, StatusCode::UNAUTHORIZED);
    assert_eq!(store.keys().len(), 2, "nothing purged without the token");

    let reply = send(
        &app,
        admin_request(Method::POST, "/_cache/purge", Some("s3cret"), purge),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), r#"{"purged":2}"#);
    assert!(store.keys().is_empty());

    fetch(&app, "/users/3").await;
    let soft = r#"{"urls": ["/users/3"], "soft": true}"#;
    let reply = send(
        &app,
        admin_request(Method::POST, "/_cache/purge", Some("s3cret"), soft),
    )
    .await;
    assert_eq!(reply.text(), r#"{"purged":1}"#);
    assert_eq!(snapshot(&cache).purges.soft["url"], 1);

    let reply = send(
        &app,
        admin_request(Method::POST, "/_cache/clear", Some("s3cret"), ""),
    )
    .await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, r#"{"purged":1}"#)
    );

    let stats = send(
        &app,
        admin_request(Method::GET, "/_cache/stats", Some("s3cret"), ""),
    )
    .await;
    assert_eq!(stats.status, StatusCode::OK);
    assert!(stats.text().contains(r#""clear":1"#), "{}", stats.text());
}

#[tokio::test]
async fn the_admin_router_refuses_what_it_cannot_read_or_is_too_much() {
    let (cache, _) = layer();
    let app: Router = admin_router(cache.handle(), "t");
    for body in ["not json", r#"{"tags": "users"}"#, r#"{"unknown": []}"#] {
        let reply = send(&app, admin_request(Method::POST, "/purge", Some("t"), body)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
    }
    let many: Vec<String> = (0..1001).map(|i| format!("\"t{i}\"")).collect();
    let body = format!(r#"{{"tags": [{}]}}"#, many.join(","));
    let reply = send(
        &app,
        admin_request(Method::POST, "/purge", Some("t"), &body),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let bad_url = r#"{"urls": ["not a url"]}"#;
    let reply = send(
        &app,
        admin_request(Method::POST, "/purge", Some("t"), bad_url),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.text().contains("not a URL"), "{}", reply.text());
}

#[tokio::test]
async fn an_admin_token_read_with_a_newline_still_matches() {
    let (cache, _) = layer();
    let app: Router = admin_router(cache.handle(), "tok\n");
    let reply = send(&app, admin_request(Method::POST, "/clear", Some("tok"), "")).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[test]
#[should_panic(expected = "non-empty token")]
fn an_empty_admin_token_is_refused_at_startup() {
    let (cache, _) = layer();
    let _: Router = admin_router(cache.handle(), "");
}

fn purge(uri: &str, secret: Option<&str>) -> Request<Body> {
    let mut request = Request::builder()
        .method(Method::from_bytes(b"PURGE").unwrap())
        .uri(uri)
        .header("host", "shop.example");
    if let Some(secret) = secret {
        request = request.header("x-purge", secret);
    }
    request.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn purge_requests_are_refused_unless_the_predicate_allows_them() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let cache = cache.purge_method(|parts| parts.headers.get("x-purge").is_some_and(|v| v == "ok"));
    let app = site(&calls, cache.clone());
    let get = |uri: &str| {
        Request::get(uri)
            .header("host", "shop.example")
            .body(Body::empty())
            .unwrap()
    };
    send(&app, get("/users/1")).await;
    assert_eq!(send(&app, get("/users/1")).await.x_cache(), "HIT");

    for secret in [None, Some("no")] {
        let reply = send(&app, purge("/users/1", secret)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{secret:?}");
    }
    assert_eq!(send(&app, get("/users/1")).await.x_cache(), "HIT");
    assert_eq!(calls.get(), 1, "the app never saw a PURGE");

    let reply = send(&app, purge("/users/1", Some("ok"))).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, r#"{"purged":1}"#)
    );
    assert!(store.keys().is_empty());
    assert_eq!(send(&app, get("/users/1")).await.x_cache(), "MISS");
    assert_eq!(snapshot(&cache).purges.hard["purge-method"], 1);
}

#[tokio::test]
async fn a_refresh_through_the_handle_fetches_and_stores_whatever_clients_may_do() {
    let calls = Calls::default();
    let (cache, _) = layer();
    let cache = cache.client_control(ClientControl::Deny);
    let handle = cache.handle();
    let app = site(&calls, cache);
    assert_eq!(fetch(&app, "/users/1").await.text(), "#1");
    assert_eq!(fetch(&app, "/users/1").await.x_cache(), "HIT");
    // Clients may not refresh on this layer…
    let denied = send(
        &app,
        Request::get("/users/1")
            .header("x-cache-bypass", "1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(denied.x_cache(), "HIT");
    // …the application may.
    let warmed = handle
        .refresh(
            app.clone(),
            Request::get("/users/1").body(Body::empty()).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(warmed.headers()["x-cache"], "REFRESH");
    assert_eq!(warmed.body().as_ref(), b"#2");
    let after = fetch(&app, "/users/1").await;
    assert_eq!((after.x_cache(), after.text().as_str()), ("HIT", "#2"));
}
