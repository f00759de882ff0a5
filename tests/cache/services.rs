//! The layer over plain tower services: any body type, the inner error type, and a store
//! that fails.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_response_cache::store::{StoreErrorKind, StoreFuture};
use tower_response_cache::{
    CacheLayer, CacheService, CachedResponse, MemoryStore, Store, StoreError, WriteMode,
};

use crate::harness::Calls;

fn assert_send_sync_clone<T: Send + Sync + Clone>() {}

#[test]
fn layer_and_service_are_send_sync_and_clone() {
    assert_send_sync_clone::<CacheLayer>();
    assert_send_sync_clone::<CacheService<axum::Router>>();
}

#[derive(Debug, PartialEq)]
struct OriginError(&'static str);

#[tokio::test]
async fn works_over_any_service_and_keeps_its_error_type() {
    let calls = Calls::default();
    let counter = calls.clone();
    let mut service = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryStore::new(1 << 20)).write_mode(WriteMode::Inline))
        .service_fn(move |request: Request<Full<Bytes>>| {
            let n = counter.hit();
            async move {
                if request.uri().path() == "/fail" {
                    return Err(OriginError("down"));
                }
                Ok(Response::new(Full::new(Bytes::from(format!("full{n}")))))
            }
        });
    let mut send = async |path: &str| {
        let request = Request::get(path).body(Full::new(Bytes::new())).unwrap();
        service.ready().await?.call(request).await
    };
    let first = send("/ok").await.unwrap();
    assert_eq!(
        first.into_body().collect().await.unwrap().to_bytes(),
        "full1"
    );
    let hit = send("/ok").await.unwrap();
    assert_eq!(hit.headers()["x-cache"], "HIT");
    assert_eq!(hit.into_body().collect().await.unwrap().to_bytes(), "full1");
    assert_eq!(send("/fail").await.err(), Some(OriginError("down")));
    assert_eq!(calls.get(), 2);
}

/// A store that fails every operation, as a dead backend would.
#[derive(Debug)]
struct BrokenStore;

impl Store for BrokenStore {
    fn get<'a>(&'a self, _: &'a str) -> StoreFuture<'a, Option<Arc<CachedResponse>>> {
        Box::pin(async {
            Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "connection refused",
            ))
        })
    }

    fn put<'a>(&'a self, _: &'a str, _: Arc<CachedResponse>, _: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async { Err(StoreError::new(StoreErrorKind::Timeout, "timed out")) })
    }

    fn remove<'a>(&'a self, _: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async {
            Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "connection refused",
            ))
        })
    }

    fn clear(&self) -> StoreFuture<'_, ()> {
        Box::pin(async {
            Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "connection refused",
            ))
        })
    }
}

#[tokio::test]
async fn a_failing_store_never_fails_a_request() {
    let calls = Calls::default();
    let counter = calls.clone();
    let cache = CacheLayer::new(BrokenStore)
        .write_mode(WriteMode::Inline)
        .route(
            "/sliding",
            tower_response_cache::RoutePolicy::new().sliding(true),
        );
    let stats = cache.stats();
    let service = ServiceBuilder::new()
        .layer(cache)
        .service_fn(move |_: Request<()>| {
            let n = counter.hit();
            async move {
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(format!(
                    "origin{n}"
                )))))
            }
        });
    for n in 1..=3 {
        let response = service
            .clone()
            .oneshot(Request::get("/x").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // The write was awaited before the head left, and failed: the head says so,
        // and does not claim `stored` (RFC 9211 §2.6).
        assert_eq!(response.headers()["x-cache"], "MISS");
        assert_eq!(
            response.headers()["cache-status"],
            "tower-response-cache; fwd=miss; detail=store-error"
        );
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            format!("origin{n}")
        );
    }
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.total.misses, 3);
    assert_eq!(
        snapshot.total.store_errors, 6,
        "three failed reads, three failed writes"
    );
    // A write reads first (`Store::put_newer`'s default compares with the stored entry),
    // and that read fails too.
    assert_eq!(snapshot.total.store_errors_by_kind["unavailable"], 6);
    assert_eq!(snapshot.total.stores, 0);
}

#[tokio::test]
async fn a_write_on_a_background_task_is_not_announced_as_stored() {
    // The head leaves before a background write is done: whether the store took the
    // entry is not known, so nothing is said (a dead Redis behind the default write mode).
    let cache = CacheLayer::new(BrokenStore).write_mode(WriteMode::Background);
    let stats = cache.stats();
    let service = ServiceBuilder::new()
        .layer(cache)
        .service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("origin"))))
        });
    let response = service
        .oneshot(Request::get("/x").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.headers()["x-cache"], "MISS");
    assert_eq!(
        response.headers()["cache-status"],
        "tower-response-cache; fwd=miss"
    );
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "origin"
    );
    for _ in 0..100 {
        if stats.snapshot().total.store_errors >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.total.stores, 0);
    assert_eq!(
        snapshot.total.store_errors, 2,
        "the failed read, the failed write"
    );
}

#[tokio::test]
async fn the_inner_service_is_driven_to_readiness() {
    // A concurrency limit is not ready while a call is in flight; the cache forwards
    // readiness, so the limit holds.
    let calls = Calls::default();
    let counter = calls.clone();
    let service = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryStore::new(1 << 20)).write_mode(WriteMode::Inline))
        .concurrency_limit(1)
        .service_fn(move |_: Request<()>| {
            let n = counter.hit();
            async move {
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(format!(
                    "r{n}"
                )))))
            }
        });
    let mut handles = Vec::new();
    for i in 0..8 {
        let service = service.clone();
        handles.push(tokio::spawn(async move {
            let request = Request::get(format!("/k{i}")).body(()).unwrap();
            let response = service.oneshot(request).await.unwrap();
            response.into_body().collect().await.unwrap().to_bytes()
        }));
    }
    for handle in handles {
        assert!(handle.await.unwrap().starts_with(b"r"));
    }
    assert_eq!(calls.get(), 8);
}

/// A store of its own that supports only the required operations (no `touch`).
#[derive(Debug, Clone)]
struct BasicStore(MemoryStore);

impl Store for BasicStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<CachedResponse>>> {
        self.0.get(key)
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        self.0.put(key, entry, ttl)
    }

    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        self.0.remove(key)
    }

    fn clear(&self) -> StoreFuture<'_, ()> {
        self.0.clear()
    }
}

#[tokio::test]
async fn a_sliding_route_on_a_store_without_touch_still_hits() {
    let cache = CacheLayer::new(BasicStore(MemoryStore::new(1 << 20)))
        .write_mode(WriteMode::Inline)
        .route("/s", tower_response_cache::RoutePolicy::new().sliding(true));
    let stats = cache.stats();
    let service = ServiceBuilder::new()
        .layer(cache)
        .service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                b"slide",
            ))))
        });
    for expected in ["MISS", "HIT", "HIT"] {
        let response = service
            .clone()
            .oneshot(Request::get("/s").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.headers()["x-cache"], expected);
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            "slide"
        );
    }
    let snapshot = stats.snapshot();
    assert_eq!(
        snapshot.total.store_errors_by_kind["unsupported"], 2,
        "each failed touch is counted"
    );
}
