//! Request coalescing: one call to the service per key at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{ServiceBuilder, ServiceExt};
use tower_response_cache::CacheLayer;

use crate::harness::{Calls, Reply, layer, send};

/// Counts calls and the most calls in progress at once.
#[derive(Clone, Default)]
struct Origin {
    calls: Calls,
    running: Arc<AtomicUsize>,
    most_at_once: Arc<AtomicUsize>,
}

impl Origin {
    async fn serve(&self, delay: Duration) -> usize {
        let n = self.calls.hit();
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(delay).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        n
    }
}

fn app(origin: &Origin, cache: CacheLayer) -> Router {
    Router::new()
        .route(
            "/slow",
            get(|State(origin): State<Origin>| async move {
                format!("slow #{}", origin.serve(Duration::from_millis(100)).await)
            }),
        )
        .route(
            "/private",
            get(|State(origin): State<Origin>| async move {
                let n = origin.serve(Duration::from_millis(50)).await;
                ([("cache-control", "private")], format!("private #{n}")).into_response()
            }),
        )
        .with_state(origin.clone())
        .layer(cache)
}

async fn burst(
    app: &Router,
    n: usize,
    uri: &'static str,
    headers: &'static [(&'static str, &'static str)],
) -> Vec<Reply> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut request = Request::get(uri);
                for (name, value) in headers {
                    request = request.header(*name, *value);
                }
                send(&app, request.body(Body::empty()).unwrap()).await
            })
        })
        .collect();
    let mut replies = Vec::with_capacity(n);
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_call_the_service_once() {
    let origin = Origin::default();
    let (cache, _store) = layer();
    let app = app(&origin, cache.clone());
    let replies = burst(&app, 1000, "/slow", &[]).await;
    assert_eq!(origin.calls.get(), 1, "one origin call for 1000 requests");
    assert!(
        replies
            .iter()
            .all(|reply| reply.status == StatusCode::OK && reply.text() == "slow #1")
    );
    let collapsed = replies
        .iter()
        .filter(|reply| {
            reply.header("cache-status") == Some("tower-response-cache; fwd=miss; collapsed")
        })
        .count();
    let stats = cache.stats().snapshot();
    assert_eq!(stats.total.misses, 1);
    // Every request answered from the cache is a hit; those that waited for the leader's
    // fetch are counted as coalesced too.
    assert_eq!(stats.total.hits, 999);
    assert_eq!(collapsed as u64, stats.total.coalesced);
    assert_eq!(
        cache.in_flight(),
        0,
        "the in-flight map is empty afterwards"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refreshes_makes_one_origin_call_at_a_time() {
    let origin = Origin::default();
    let (cache, _store) = layer();
    let app = app(&origin, cache.clone());
    let replies = burst(&app, 200, "/slow", &[("x-cache-bypass", "1")]).await;
    assert!(replies.iter().all(|reply| reply.status == StatusCode::OK));
    assert_eq!(
        origin.most_at_once.load(Ordering::SeqCst),
        1,
        "never two origin calls at once"
    );
    assert!(
        origin.calls.get() < 200,
        "refreshes shared fetches: {}",
        origin.calls.get()
    );
    assert_eq!(cache.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncacheable_response_sends_waiters_to_the_origin_and_stops_serializing() {
    let origin = Origin::default();
    let (cache, _store) = layer();
    let app = app(&origin, cache.clone());
    let replies = burst(&app, 50, "/private", &[]).await;
    // Nobody may receive another's private response.
    let mut bodies: Vec<String> = replies.iter().map(Reply::text).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 50, "each request got its own response");
    assert_eq!(origin.calls.get(), 50);

    // Hit-for-miss: the next burst is not serialized behind one leader.
    origin.most_at_once.store(0, Ordering::SeqCst);
    burst(&app, 20, "/private", &[]).await;
    assert!(
        origin.most_at_once.load(Ordering::SeqCst) > 1,
        "requests ran side by side"
    );
    assert_eq!(cache.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_past_the_timeout_go_to_the_origin() {
    let origin = Origin::default();
    let (cache, _store) = layer();
    let cache = cache.coalesce_timeout(Duration::from_millis(20));
    let app = app(&origin, cache.clone());
    let replies = burst(&app, 10, "/slow", &[]).await;
    assert!(replies.iter().all(|reply| reply.status == StatusCode::OK));
    let stats = cache.stats().snapshot();
    assert_eq!(
        stats.total.coalesce_timeouts as usize,
        origin.calls.get() - 1
    );
    assert!(origin.calls.get() > 1);
    assert_eq!(cache.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalescing_can_be_turned_off() {
    let origin = Origin::default();
    let (cache, _store) = layer();
    let app = app(&origin, cache.coalesce(false));
    burst(&app, 10, "/slow", &[]).await;
    assert_eq!(origin.calls.get(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_panics_releases_its_waiters() {
    let calls = Calls::default();
    let counter = calls.clone();
    let (cache, _store) = layer();
    let service = ServiceBuilder::new()
        .layer(cache.clone())
        .service_fn(move |_: Request<()>| {
            let n = counter.hit();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                assert!(n != 1, "the first call panics");
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(format!(
                    "call {n}"
                )))))
            }
        });
    let leader = tokio::spawn(
        service
            .clone()
            .oneshot(Request::get("/p").body(()).unwrap()),
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                let response = service
                    .oneshot(Request::get("/p").body(()).unwrap())
                    .await
                    .unwrap();
                response.into_body().collect().await.unwrap().to_bytes()
            })
        })
        .collect();
    assert!(leader.await.is_err(), "the leader panicked");
    for waiter in waiters {
        assert_eq!(
            waiter.await.unwrap(),
            "call 2",
            "a new leader fetched for the others"
        );
    }
    assert_eq!(calls.get(), 2);
    assert_eq!(cache.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorized_requests_are_not_queued_behind_each_other() {
    let origin = Origin::default();
    let (cache, _store) = layer();
    let app = app(&origin, cache.clone());
    // Not storable for a shared cache (RFC 9111 §3.5): each request needs its own response.
    let replies = burst(&app, 20, "/slow", &[("authorization", "Bearer t")]).await;
    assert!(replies.iter().all(|reply| reply.status == StatusCode::OK));
    assert_eq!(origin.calls.get(), 20);
    assert!(
        origin.most_at_once.load(Ordering::SeqCst) > 1,
        "after the first, side by side"
    );
    assert_eq!(cache.in_flight(), 0);
}
