//! What the cache did, on the response: the `CacheOutcome` extension says what the headers
//! say, one to one; and the headers can be left out altogether.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use http::Request;
use tower::ServiceExt;
use tower_response_cache::outcome::{Detail, Forward};
use tower_response_cache::policy::NotStoredReason;
use tower_response_cache::{
    CacheLayer,
    outcome::{CacheOutcome, OutcomeStatus},
};

use crate::harness::{Calls, fetch, layer, snapshot};

fn app(calls: &Calls, cache: CacheLayer) -> Router {
    Router::new()
        .route(
            "/page",
            get(|State(calls): State<Calls>| async move { format!("#{}", calls.hit()) }),
        )
        .route(
            "/private",
            get(|| async { ([("cache-control", "private")], "mine") }),
        )
        .with_state(calls.clone())
        .layer(cache)
}

/// The outcome extension and the headers of a response to `request`.
async fn outcome(app: &Router, request: Request<Body>) -> (CacheOutcome, String, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (x_cache, cache_status) = (header("x-cache"), header("cache-status"));
    let outcome = *response
        .extensions()
        .get::<CacheOutcome>()
        .expect("the extension");
    (outcome, x_cache, cache_status)
}

fn get_with(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn the_outcome_extension_says_what_the_headers_say() {
    let calls = Calls::default();
    let (cache, _) = layer();
    let cache = cache
        .outcome_extension(true)
        .stale_while_revalidate(Duration::from_secs(30));
    let app = app(&calls, cache.clone());
    let cases: [(Request<Body>, OutcomeStatus); 5] = [
        (get_with("/page", &[]), OutcomeStatus::Miss),
        (get_with("/page", &[]), OutcomeStatus::Hit),
        (
            get_with("/page", &[("cache-control", "no-store")]),
            OutcomeStatus::Bypass,
        ),
        (
            get_with("/page", &[("x-cache-bypass", "1")]),
            OutcomeStatus::Refresh,
        ),
        (get_with("/private", &[]), OutcomeStatus::Uncacheable),
    ];
    for (request, expected) in cases {
        let (outcome, x_cache, cache_status) = outcome(&app, request).await;
        assert_eq!(outcome.status, expected);
        assert_eq!(outcome.status.x_cache(), x_cache);
        assert_eq!(format!("tower-response-cache; {outcome}"), cache_status);
    }
    let (miss, _, _) = outcome(&app, get_with("/page?new", &[])).await;
    assert_eq!(
        (miss.forward, miss.stored, miss.hit),
        (Some(Forward::Miss), true, false)
    );
    let (private, _, _) = outcome(&app, get_with("/private", &[])).await;
    assert_eq!(
        private.detail,
        Some(Detail::NotStored(NotStoredReason::Private))
    );
    // Stale within its window: a stale hit with a negative ttl.
    cache.handle().soft().invalidate("/page").await.unwrap();
    let (stale, x_cache, cache_status) = outcome(&app, get_with("/page", &[])).await;
    assert_eq!(stale.status, OutcomeStatus::Stale);
    assert!(stale.hit && stale.ttl.is_some_and(|ttl| ttl < 0));
    assert_eq!(stale.detail, Some(Detail::StaleWhileRevalidate));
    assert_eq!(
        (x_cache.as_str(), format!("tower-response-cache; {stale}")),
        ("STALE", cache_status)
    );
}

#[tokio::test]
async fn without_asking_there_is_no_extension() {
    let calls = Calls::default();
    let (cache, _) = layer();
    let app = app(&calls, cache);
    let response = app.oneshot(get_with("/page", &[])).await.unwrap();
    assert!(response.extensions().get::<CacheOutcome>().is_none());
}

#[tokio::test]
async fn the_status_headers_can_be_left_out_and_the_outcome_still_counted() {
    let calls = Calls::default();
    let (cache, _) = layer();
    let cache = cache.no_status_headers().outcome_extension(true);
    let app = app(&calls, cache.clone());
    fetch(&app, "/page").await;
    let (outcome, x_cache, cache_status) = outcome(&app, get_with("/page", &[])).await;
    assert_eq!(outcome.status, OutcomeStatus::Hit);
    assert_eq!((x_cache.as_str(), cache_status.as_str()), ("", ""));
    let stats = snapshot(&cache).total;
    assert_eq!((stats.misses, stats.hits), (1, 1));
}
