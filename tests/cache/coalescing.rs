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

/// A shared store as another process holding a key's fill lock makes it look: the first
/// lookup finds the lock held, the second takes it (the other process let go), and every
/// separate attempt at the lock fails. Logs each operation in order.
#[derive(Debug)]
struct SplitLock {
    inner: tower_response_cache::MemoryStore,
    lookups: AtomicUsize,
    log: std::sync::Mutex<Vec<&'static str>>,
}

impl SplitLock {
    fn note(&self, operation: &'static str) {
        self.log.lock().unwrap().push(operation);
    }

    fn log(&self) -> Vec<&'static str> {
        self.log.lock().unwrap().clone()
    }
}

mod split_lock {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use tower_response_cache::store::{
        Capabilities, FillLock, Lookup, PurgeMode, PurgeTarget, PutIf, SharedStore, StoreFuture,
    };
    use tower_response_cache::{CachedResponse, store::Store};

    impl Store for super::SplitLock {
        fn capabilities(&self) -> Capabilities {
            let mut can = self.inner.capabilities();
            can.fill_locks = true;
            can
        }

        fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<CachedResponse>>> {
            self.note("get");
            self.inner.get(key)
        }

        fn put<'a>(
            &'a self,
            key: &'a str,
            entry: Arc<CachedResponse>,
            ttl: Duration,
            condition: PutIf,
        ) -> StoreFuture<'a, bool> {
            self.note("put");
            self.inner.put(key, entry, ttl, condition)
        }

        fn purge<'a>(&'a self, target: PurgeTarget<'a>, mode: PurgeMode) -> StoreFuture<'a, u64> {
            self.inner.purge(target, mode)
        }

        fn shared(&self) -> Option<&dyn SharedStore> {
            Some(self)
        }
    }

    impl SharedStore for super::SplitLock {
        fn purge_mark(&self) -> Option<u64> {
            None
        }

        fn purged_since<'a>(
            &'a self,
            _mark: u64,
            _key: &'a str,
            _tags: &'a [String],
        ) -> StoreFuture<'a, bool> {
            Box::pin(async { Ok(false) })
        }

        fn lock_fill<'a>(
            &'a self,
            _key: &'a str,
            _ttl: Duration,
        ) -> StoreFuture<'a, Option<FillLock>> {
            self.note("lock");
            Box::pin(async { Ok(None) })
        }

        fn unlock_fill<'a>(&'a self, _key: &'a str, _lock: FillLock) -> StoreFuture<'a, ()> {
            self.note("unlock");
            Box::pin(async { Ok(()) })
        }

        fn get_or_lock_fill<'a>(&'a self, key: &'a str, _ttl: Duration) -> StoreFuture<'a, Lookup> {
            Box::pin(async move {
                match self.lookups.fetch_add(1, Ordering::SeqCst) {
                    0 => {
                        self.note("lookup: held");
                        Ok(Lookup::Held)
                    }
                    1 => {
                        self.note("lookup: locked");
                        Ok(Lookup::Locked(FillLock::new("second")))
                    }
                    _ => {
                        self.note("lookup");
                        Ok(match self.inner.get(key).await? {
                            Some(entry) => Lookup::Found(entry),
                            None => Lookup::Held,
                        })
                    }
                }
            })
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_lock_taken_by_a_waiter_reaches_the_leader_without_waiting_out_its_back_off() {
    // The leader's lookup found another process's lock, so it waits (backing off) for the
    // entry; a second request's lookup then takes the lock, which the other process let
    // go, and joins the leader's flight. The lock is handed to the leader, which goes to
    // the origin at once: no read or lock attempt of its back-off comes between.
    // (Time is paused: a timer fires only once every task is idle.)
    let store = Arc::new(SplitLock {
        inner: tower_response_cache::MemoryStore::new(1 << 20),
        lookups: AtomicUsize::new(0),
        log: std::sync::Mutex::new(Vec::new()),
    });
    let origin = Origin::default();
    let cache = CacheLayer::new(Arc::clone(&store))
        .write_mode(tower_response_cache::WriteMode::Inline)
        .coalesce_timeout(Duration::from_secs(10));
    let app = app(&origin, cache);
    let leader = tokio::spawn({
        let app = app.clone();
        async move { send(&app, Request::get("/slow").body(Body::empty()).unwrap()).await }
    });
    // The leader is in its first back-off.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(store.log(), ["lookup: held"]);
    let waiter = send(&app, Request::get("/slow").body(Body::empty()).unwrap()).await;
    let leader = leader.await.unwrap();
    assert_eq!(origin.calls.get(), 1);
    assert_eq!(leader.x_cache(), "MISS");
    assert_eq!(waiter.x_cache(), "HIT");
    assert_eq!(leader.text(), waiter.text());
    assert_eq!(
        store.log(),
        ["lookup: held", "lookup: locked", "put", "unlock"],
        "the handed-off lock is used at once, and released after the write"
    );
}
