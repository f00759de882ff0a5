//! The layer over plain tower services: any body type, the inner error type, and a store
//! that fails.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_response_cache::store::{
    Capabilities, PurgeMode, PurgeTarget, PutIf, StoreErrorKind, StoreFuture,
};
use tower_response_cache::{
    CacheLayer, CacheService, CachedResponse, MemoryStore, WriteMode,
    store::{Store, StoreError},
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

#[tokio::test(start_paused = true)]
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
pub(crate) struct BrokenStore;

impl Store for BrokenStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new("broken")
    }

    fn get<'a>(&'a self, _: &'a str) -> StoreFuture<'a, Option<Arc<CachedResponse>>> {
        Box::pin(async {
            Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "connection refused",
            ))
        })
    }

    fn put<'a>(
        &'a self,
        _: &'a str,
        _: Arc<CachedResponse>,
        _: Duration,
        _: PutIf,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async { Err(StoreError::new(StoreErrorKind::Timeout, "timed out")) })
    }

    fn purge<'a>(&'a self, _: PurgeTarget<'a>, _: PurgeMode) -> StoreFuture<'a, u64> {
        Box::pin(async {
            Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "connection refused",
            ))
        })
    }
}

#[tokio::test(start_paused = true)]
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
    // Each by its own kind: the reads' and the writes' (a conditional write is the
    // store's own, one operation).
    assert_eq!(snapshot.total.store_errors_by_kind["unavailable"], 3);
    assert_eq!(snapshot.total.store_errors_by_kind["timeout"], 3);
    assert_eq!(snapshot.total.stores, 0);
}

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
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
    fn capabilities(&self) -> Capabilities {
        Capabilities::new("basic")
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<CachedResponse>>> {
        self.0.get(key)
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
        condition: PutIf,
    ) -> StoreFuture<'a, bool> {
        self.0.put(key, entry, ttl, condition)
    }

    fn purge<'a>(&'a self, target: PurgeTarget<'a>, mode: PurgeMode) -> StoreFuture<'a, u64> {
        self.0.purge(target, mode)
    }
}

#[tokio::test(start_paused = true)]
async fn a_sliding_route_on_a_store_without_touch_hits_without_asking_for_one() {
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
    assert_eq!(snapshot.total.hits, 2);
    assert_eq!(
        snapshot.total.store_errors, 0,
        "no touch is asked of a store that says it has none: {:?}",
        snapshot.total.store_errors_by_kind
    );
}

/// A store whose reads the test can hold: a read started while `held` is set returns what
/// the store held then (a miss, or an entry since replaced) once the test lets it go, as a
/// read that was answered before a write would.
#[derive(Debug)]
struct HeldReads {
    inner: MemoryStore,
    held: std::sync::atomic::AtomicBool,
    release: tokio::sync::Notify,
}

impl HeldReads {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::new(1 << 20),
            held: std::sync::atomic::AtomicBool::new(false),
            release: tokio::sync::Notify::new(),
        })
    }

    /// Holds the next read.
    fn hold(&self) {
        self.held.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Returns once the read to hold has started (and is held).
    async fn until_held(&self) {
        while self.held.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
    }
}

impl Store for HeldReads {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<CachedResponse>>> {
        Box::pin(async move {
            let read = self.inner.get(key).await;
            if self.held.swap(false, std::sync::atomic::Ordering::SeqCst) {
                self.release.notified().await;
            }
            read
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<CachedResponse>,
        ttl: Duration,
        condition: PutIf,
    ) -> StoreFuture<'a, bool> {
        self.inner.put(key, entry, ttl, condition)
    }

    fn purge<'a>(&'a self, target: PurgeTarget<'a>, mode: PurgeMode) -> StoreFuture<'a, u64> {
        self.inner.purge(target, mode)
    }
}

#[tokio::test(start_paused = true)]
async fn a_miss_that_finds_its_flight_ended_looks_again_before_fetching() {
    // A request misses in the store, and before it can join the fetch of its key, that
    // fetch ends (its entry written, its flight gone). It must find the entry, not fetch
    // again.
    let store = HeldReads::new();
    let calls = Calls::default();
    let counter = calls.clone();
    let origin_gate = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::clone(&origin_gate);
    let cache = CacheLayer::new(Arc::clone(&store)).write_mode(WriteMode::Inline);
    let stats = cache.stats();
    let service = ServiceBuilder::new()
        .layer(cache)
        .service_fn(move |_: Request<()>| {
            let n = counter.hit();
            let gate = Arc::clone(&gate);
            async move {
                if n == 1 {
                    gate.notified().await;
                }
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(format!(
                    "origin{n}"
                )))))
            }
        });
    let get = |service: &_| {
        let service: &tower::util::BoxCloneSyncService<_, _, _> = service;
        service
            .clone()
            .oneshot(Request::get("/x").body(()).unwrap())
    };
    let service = tower::util::BoxCloneSyncService::new(service);
    // The first request leads the fetch; the origin waits.
    let first = tokio::spawn(get(&service));
    while calls.get() == 0 {
        tokio::task::yield_now().await;
    }
    // The second reads the store and is held there, with its miss.
    store.hold();
    let second = tokio::spawn(get(&service));
    store.until_held().await;
    // The fetch ends: stored, the flight gone. Then the held read answers its miss.
    origin_gate.notify_one();
    let first = first.await.unwrap().unwrap();
    assert_eq!(
        first.into_body().collect().await.unwrap().to_bytes(),
        "origin1"
    );
    store.release.notify_one();
    let second = second.await.unwrap().unwrap();
    assert_eq!(second.headers()["x-cache"], "HIT");
    assert_eq!(
        second.into_body().collect().await.unwrap().to_bytes(),
        "origin1"
    );
    assert_eq!(calls.get(), 1, "one origin call");
    let snapshot = stats.snapshot();
    assert_eq!((snapshot.total.hits, snapshot.total.misses), (1, 1));
}

/// A response's `x-cache` and body.
async fn body<B>(response: Response<B>) -> (String, Bytes)
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let x_cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
    (
        x_cache,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test(start_paused = true)]
async fn a_stale_read_that_finds_its_refresh_ended_starts_no_other() {
    // A request reads a stale entry while another request's background refresh of it is
    // under way, and before it can join that refresh, the refresh ends (the fresh entry
    // written, its flight gone). Answered with the stale entry it read, it must not start a
    // second refresh: one origin call refreshes the entry.
    let store = HeldReads::new();
    let calls = Calls::default();
    let counter = calls.clone();
    let origin_gate = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::clone(&origin_gate);
    let cache = CacheLayer::new(Arc::clone(&store))
        .write_mode(WriteMode::Inline)
        .clock(tower_response_cache::clock::TokioClock::new());
    let service = ServiceBuilder::new()
        .layer(cache)
        .service_fn(move |_: Request<()>| {
            let n = counter.hit();
            let gate = Arc::clone(&gate);
            async move {
                // The refresh waits for the test.
                if n == 2 {
                    gate.notified().await;
                }
                let mut response = Response::new(Full::new(Bytes::from(format!("origin{n}"))));
                response.headers_mut().insert(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static("max-age=1, stale-while-revalidate=60"),
                );
                Ok::<_, std::convert::Infallible>(response)
            }
        });
    let service = tower::util::BoxCloneSyncService::new(service);
    let get = |service: &tower::util::BoxCloneSyncService<_, _, _>| {
        service
            .clone()
            .oneshot(Request::get("/x").body(()).unwrap())
    };
    assert_eq!(body(get(&service).await.unwrap()).await.1, "origin1");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Stale: answered, and refreshed in the background (the origin waits).
    assert_eq!(
        body(get(&service).await.unwrap()).await,
        ("STALE".to_owned(), Bytes::from("origin1"))
    );
    while calls.get() < 2 {
        tokio::task::yield_now().await;
    }
    // The next request reads the stale entry and is held there.
    store.hold();
    let held = tokio::spawn(get(&service));
    store.until_held().await;
    // The refresh ends: the fresh entry stored, its flight gone.
    origin_gate.notify_one();
    loop {
        let stored = store.inner.get("cache:GET:/x").await.unwrap();
        if stored.is_some_and(|entry| entry.body == "origin2") {
            break;
        }
        tokio::task::yield_now().await;
    }
    // The held read answers with the stale entry it read.
    store.release.notify_one();
    assert_eq!(
        body(held.await.unwrap().unwrap()).await,
        ("STALE".to_owned(), Bytes::from("origin1"))
    );
    // Background work, if any was started, runs to its end.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(calls.get(), 2, "one refresh");
    assert_eq!(
        body(get(&service).await.unwrap()).await,
        ("HIT".to_owned(), Bytes::from("origin2"))
    );
}
