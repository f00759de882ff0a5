//! `ValueCache` on the memory store: each operation, the `@cached` loader with its options,
//! coalescing, type mismatches, namespaces, and failing open.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tower_response_cache::clock::TokioClock;
use tower_response_cache::store::PutIf;
use tower_response_cache::value::{ValueCache, ValueError, ValueKey};
use tower_response_cache::{MemoryStore, store::Store};

use crate::client::{User, alice};
use crate::harness::{fetch, layer};
use crate::services::BrokenStore;

const MINUTE: Duration = Duration::from_secs(60);

fn values() -> (ValueCache, MemoryStore) {
    let clock = TokioClock::new();
    let store = MemoryStore::with_clock(16 << 20, clock);
    (ValueCache::new(store.clone()).clock(clock), store)
}

#[tokio::test(start_paused = true)]
async fn set_get_exists_delete_and_their_counts() {
    let (values, store) = values();
    assert_eq!(values.get::<User>("user:42").await.unwrap(), None);
    values.set("user:42", &alice(), MINUTE).await.unwrap();
    assert_eq!(values.get::<User>("user:42").await.unwrap(), Some(alice()));
    assert!(values.exists("user:42").await.unwrap());
    // Stored as JSON under the namespace.
    let entry = store.get("values:user:42").await.unwrap().unwrap();
    assert_eq!(&entry.body[..], br#"{"id":42,"name":"alice"}"#);
    assert_eq!(entry.ttl, MINUTE);
    assert!(values.delete("user:42").await.unwrap());
    assert!(!values.delete("user:42").await.unwrap());
    assert!(!values.exists("user:42").await.unwrap());
    let stats = values.stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.sets, stats.deletes),
        (1, 1, 1, 1)
    );
    assert!((stats.hit_ratio() - 0.5).abs() < f64::EPSILON);
}

#[tokio::test(start_paused = true)]
async fn add_stores_only_what_is_absent() {
    let (values, _store) = values();
    assert!(values.add("k", &1u32, MINUTE).await.unwrap());
    assert!(!values.add("k", &2u32, MINUTE).await.unwrap());
    assert_eq!(values.get::<u32>("k").await.unwrap(), Some(1));
    // An expired value is absent.
    values
        .set("short", &1u32, Duration::from_millis(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(values.add("short", &2u32, MINUTE).await.unwrap());
    assert_eq!(values.get::<u32>("short").await.unwrap(), Some(2));
}

#[tokio::test(start_paused = true)]
async fn add_under_contention_stores_once() {
    let (values, _store) = values();
    let tasks: Vec<_> = (0..64u32)
        .map(|i| {
            let values = values.clone();
            tokio::spawn(async move { values.add("once", &i, MINUTE).await.unwrap() })
        })
        .collect();
    let mut added = 0;
    for task in tasks {
        added += usize::from(task.await.unwrap());
    }
    assert_eq!(added, 1);
}

#[tokio::test(start_paused = true)]
async fn expire_gives_a_new_life_and_values_expire() {
    let (values, store) = values();
    values
        .set("k", &"v", Duration::from_millis(100))
        .await
        .unwrap();
    assert!(values.expire("k", MINUTE).await.unwrap());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        values.get::<String>("k").await.unwrap().as_deref(),
        Some("v")
    );
    assert_eq!(store.get("values:k").await.unwrap().unwrap().ttl, MINUTE);
    assert!(!values.expire("absent", MINUTE).await.unwrap());
    values
        .set("gone", &"v", Duration::from_millis(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(values.get::<String>("gone").await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn a_value_of_another_type_is_a_miss_never_a_panic() {
    let (values, store) = values();
    values.set("k", &"not a user", MINUTE).await.unwrap();
    assert_eq!(values.get::<User>("k").await.unwrap(), None);
    assert_eq!(values.get::<u64>("k").await.unwrap(), None);
    // A response entry (no value mark) under a value key is no value either.
    let mut response = tower_response_cache::CachedResponse::new(
        http::StatusCode::OK,
        http::HeaderMap::new(),
        bytes::Bytes::from_static(br#"{"id":1,"name":"x"}"#),
    );
    response.ttl = MINUTE;
    store
        .put("values:raw", Arc::new(response), MINUTE, PutIf::Always)
        .await
        .unwrap();
    assert_eq!(values.get::<User>("raw").await.unwrap(), None);
    let stats = values.stats();
    assert_eq!((stats.misses, stats.mismatches), (3, 3));
}

#[tokio::test(start_paused = true)]
async fn raw_bytes_and_many_at_once() {
    let (values, _store) = values();
    values
        .set_bytes("blob", &b"\x00\x01\xff"[..], MINUTE)
        .await
        .unwrap();
    assert_eq!(
        values.get_bytes("blob").await.unwrap().as_deref(),
        Some(&b"\x00\x01\xff"[..])
    );
    // Raw bytes are not JSON.
    assert_eq!(values.get::<Vec<u8>>("blob").await.unwrap(), None);
    values
        .multi_set([("a", &1u8), ("b", &2u8)], MINUTE)
        .await
        .unwrap();
    assert_eq!(
        values
            .multi_get::<u8, _>(["a", "missing", "b"])
            .await
            .unwrap(),
        [Some(1), None, Some(2)]
    );
}

#[tokio::test(start_paused = true)]
async fn clear_empties_its_namespace_and_nothing_else() {
    let store = MemoryStore::new(16 << 20);
    let values = ValueCache::new(store.clone()).clock(TokioClock::new());
    let others = ValueCache::new(store.clone())
        .clock(TokioClock::new())
        .namespace("other");
    // A response cache on the same store.
    let (cache, _) = layer();
    let cache = cache.clone();
    let app = axum::Router::new()
        .route("/page", axum::routing::get(|| async { "page" }))
        .layer(tower_response_cache::CacheLayer::new(store.clone()).namespace("t"));
    drop(cache);
    fetch(&app, "/page").await;
    values.set("a", &1u8, MINUTE).await.unwrap();
    values.set("b", &2u8, MINUTE).await.unwrap();
    others.set("a", &3u8, MINUTE).await.unwrap();
    assert_eq!(values.clear().await.unwrap(), 2);
    assert_eq!(values.get::<u8>("a").await.unwrap(), None);
    assert_eq!(others.get::<u8>("a").await.unwrap(), Some(3));
    assert_eq!(fetch(&app, "/page").await.x_cache(), "HIT");
}

#[tokio::test(start_paused = true)]
async fn tags_purge_values() {
    let (values, _store) = values();
    values
        .set_tagged("user:42", &alice(), MINUTE, ["user:42"])
        .await
        .unwrap();
    values
        .set_tagged("user:7", &"bob", MINUTE, ["user:7"])
        .await
        .unwrap();
    assert_eq!(values.invalidate_tag("user:42").await.unwrap(), 1);
    assert_eq!(values.get::<User>("user:42").await.unwrap(), None);
    assert!(values.exists("user:7").await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn keys_from_arguments_are_readable_and_long_ones_hashed() {
    let (values, store) = values();
    let key = ValueKey::new("search").arg("a:b").arg(7);
    values.set(&key, &1u8, MINUTE).await.unwrap();
    assert!(store.get("values:search:a\\:b:7").await.unwrap().is_some());
    let long = ValueKey::new("q").arg("x".repeat(400));
    values.set(&long, &2u8, MINUTE).await.unwrap();
    let stored = values.store_key(&long);
    assert!(
        stored.len() <= 250 && stored.starts_with("values:q:x") && stored.contains('#'),
        "{stored}"
    );
    assert_ne!(
        stored,
        values.store_key(ValueKey::new("q").arg("x".repeat(401)))
    );
    assert_eq!(values.get::<u8>(&long).await.unwrap(), Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_thousand_concurrent_loads_of_one_key_call_the_loader_once() {
    let (values, _store) = values();
    let calls = crate::client::concurrent_loads(
        std::slice::from_ref(&values),
        1000,
        Duration::from_millis(50),
    )
    .await;
    assert_eq!(calls, 1);
    let stats = values.stats();
    assert_eq!((stats.loads, stats.sets), (1, 1));
    assert_eq!(stats.hits + stats.misses, 1000);
}

#[tokio::test(start_paused = true)]
async fn the_loader_runs_on_a_miss_only_and_its_errors_pass_through_unstored() {
    let (values, _store) = values();
    let calls = AtomicUsize::new(0);
    let load = |fail: bool| {
        let calls = &calls;
        move || async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if fail {
                Err(format!("failed #{n}"))
            } else {
                Ok(n)
            }
        }
    };
    assert_eq!(
        values.get_or_insert_with("e", MINUTE, load(true)).await,
        Err("failed #1".to_owned())
    );
    assert_eq!(values.get::<usize>("e").await.unwrap(), None, "not cached");
    assert_eq!(
        values.get_or_insert_with("e", MINUTE, load(false)).await,
        Ok(2)
    );
    assert_eq!(
        values.get_or_insert_with("e", MINUTE, load(false)).await,
        Ok(2)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(values.stats().load_errors, 1);
}

#[tokio::test(start_paused = true)]
async fn ttl_from_the_value_skip_bypass_refresh_and_sliding() {
    let (values, store) = values();
    let n = AtomicUsize::new(0);
    let load = || async { Ok::<_, ()>(vec![n.fetch_add(1, Ordering::SeqCst); 3]) };
    // A TTL from the value.
    values
        .cached("ttl")
        .ttl_fn(|rows: &Vec<usize>| Duration::from_secs(10 * rows.len() as u64))
        .load(load)
        .await
        .unwrap();
    assert_eq!(
        store.get("values:ttl").await.unwrap().unwrap().ttl,
        Duration::from_secs(30)
    );
    // Skipped values are returned, not stored.
    let empty = values
        .cached("empty")
        .skip_if(|rows: &Vec<usize>| rows.len() == 3)
        .load(load)
        .await
        .unwrap();
    assert_eq!(empty.len(), 3);
    assert!(!values.exists("empty").await.unwrap());
    // Bypass: the loader answers, nothing read or written.
    values.set("b", &vec![100usize], MINUTE).await.unwrap();
    let bypassed = values.cached("b").bypass(true).load(load).await.unwrap();
    assert_ne!(bypassed, [100]);
    assert_eq!(
        values.get::<Vec<usize>>("b").await.unwrap(),
        Some(vec![100])
    );
    // Refresh: loaded and stored even though a value is fresh.
    let refreshed = values.cached("b").refresh(true).load(load).await.unwrap();
    assert_eq!(
        values.get::<Vec<usize>>("b").await.unwrap(),
        Some(refreshed)
    );
    // Sliding: a hit gives the value a full life again.
    values
        .cached("s")
        .ttl(Duration::from_millis(200))
        .load(load)
        .await
        .unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        values
            .cached("s")
            .ttl(Duration::from_millis(200))
            .sliding(true)
            .load(|| async { Err::<Vec<usize>, ()>(()) })
            .await
            .expect("still stored");
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_makes_loads_run_and_plain_reads_report() {
    let values = ValueCache::new(BrokenStore).clock(TokioClock::new());
    let got = values
        .get_or_insert_with("k", MINUTE, || async { Ok::<_, ()>(7u8) })
        .await;
    assert_eq!(got, Ok(7));
    assert!(matches!(
        values.get::<u8>("k").await,
        Err(ValueError::Store(_))
    ));
    assert!(values.set("k", &1u8, MINUTE).await.is_err());
    assert!(values.stats().store_errors >= 3);
}

#[tokio::test(start_paused = true)]
async fn a_slow_store_is_waited_for_at_most_the_store_timeout() {
    /// Every operation takes a minute.
    #[derive(Debug)]
    struct Stalled;
    impl Store for Stalled {
        fn capabilities(&self) -> tower_response_cache::store::Capabilities {
            tower_response_cache::store::Capabilities::new("stalled")
        }
        fn get<'a>(
            &'a self,
            _: &'a str,
        ) -> tower_response_cache::store::StoreFuture<
            'a,
            Option<Arc<tower_response_cache::CachedResponse>>,
        > {
            Box::pin(async {
                tokio::time::sleep(MINUTE).await;
                Ok(None)
            })
        }
        fn put<'a>(
            &'a self,
            _: &'a str,
            _: Arc<tower_response_cache::CachedResponse>,
            _: Duration,
            _: PutIf,
        ) -> tower_response_cache::store::StoreFuture<'a, bool> {
            Box::pin(async {
                tokio::time::sleep(MINUTE).await;
                Ok(true)
            })
        }
        fn purge<'a>(
            &'a self,
            _: tower_response_cache::store::PurgeTarget<'a>,
            _: tower_response_cache::store::PurgeMode,
        ) -> tower_response_cache::store::StoreFuture<'a, u64> {
            Box::pin(async { Ok(0) })
        }
    }
    let values = ValueCache::new(Stalled)
        .clock(TokioClock::new())
        .store_timeout(Duration::from_millis(50));
    let started = tokio::time::Instant::now();
    let got = values
        .get_or_insert_with("k", MINUTE, || async { Ok::<_, ()>(7u8) })
        .await;
    assert_eq!(got, Ok(7));
    // A read and a write, each given up after 50 ms (a wide margin for a loaded machine).
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(values.stats().store_errors, 2);
}

#[tokio::test(start_paused = true)]
async fn a_layers_tag_purge_drops_its_pages_and_its_values() {
    let store = MemoryStore::new(16 << 20);
    let cache = tower_response_cache::CacheLayer::new(store.clone())
        .namespace("t")
        .write_mode(tower_response_cache::WriteMode::Inline);
    let values = cache.values("values");
    let unrelated = ValueCache::new(store.clone())
        .clock(TokioClock::new())
        .namespace("elsewhere");
    let handle = cache.handle();
    let app = axum::Router::new()
        .route(
            "/users/42",
            axum::routing::get(|| async { ([("surrogate-key", "user:42")], "alice's page") }),
        )
        .layer(cache);
    fetch(&app, "/users/42").await;
    assert_eq!(fetch(&app, "/users/42").await.x_cache(), "HIT");
    values
        .set_tagged("user:42", &alice(), MINUTE, ["user:42"])
        .await
        .unwrap();
    unrelated
        .set_tagged("user:42", &alice(), MINUTE, ["user:42"])
        .await
        .unwrap();
    assert_eq!(handle.invalidate_tag("user:42").await.unwrap(), 2);
    assert_eq!(fetch(&app, "/users/42").await.x_cache(), "MISS");
    assert_eq!(values.get::<User>("user:42").await.unwrap(), None);
    // A value cache not made from the layer is not the layer's to purge.
    assert_eq!(
        unrelated.get::<User>("user:42").await.unwrap(),
        Some(alice())
    );
}

#[cfg(feature = "msgpack")]
#[tokio::test(start_paused = true)]
async fn messagepack_values_round_trip_and_json_ones_are_not_theirs() {
    use tower_response_cache::value::MessagePack;
    let store = MemoryStore::new(16 << 20);
    let json = ValueCache::new(store.clone()).clock(TokioClock::new());
    let packed = ValueCache::new(store.clone())
        .clock(TokioClock::new())
        .serializer(MessagePack);
    packed.set("u", &alice(), MINUTE).await.unwrap();
    assert_eq!(packed.get::<User>("u").await.unwrap(), Some(alice()));
    // One key, two formats: each reads only its own.
    assert_eq!(json.get::<User>("u").await.unwrap(), None);
    assert_eq!(json.stats().mismatches, 1);
}

#[tokio::test(start_paused = true)]
async fn counters_increment_atomically_and_expire() {
    let (values, _store) = values();
    let values = values.default_ttl(Duration::from_millis(300));
    assert_eq!(values.counter("hits").await.unwrap(), None);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let values = values.clone();
            tokio::spawn(async move { values.increment("hits", 1).await.unwrap() })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=100).collect::<Vec<i64>>(),
        "each increment saw its own value"
    );
    assert_eq!(values.increment("hits", -10).await.unwrap(), 90);
    assert_eq!(values.counter("hits").await.unwrap(), Some(90));
    // A counter is no value, and a value no counter.
    assert_eq!(values.get::<i64>("hits").await.unwrap(), None);
    values.set("v", &1i64, MINUTE).await.unwrap();
    assert!(values.increment("v", 1).await.is_err());
    assert_eq!(values.counter("v").await.unwrap(), None);
    // It lives the TTL it was made with, increments or not.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(values.counter("hits").await.unwrap(), None);
    assert_eq!(values.increment("hits", 5).await.unwrap(), 5);
}

#[tokio::test(start_paused = true)]
async fn errors_are_cached_only_when_asked_and_for_their_own_ttl() {
    let (values, _store) = values();
    let calls = AtomicUsize::new(0);
    let failing = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Err::<u32, String>("not found".to_owned())
    };
    let negative = Duration::from_millis(200);
    for _ in 0..3 {
        let got = values
            .cached("missing")
            .load_caching_errors(negative, failing)
            .await;
        assert_eq!(got, Err("not found".to_owned()));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the error answered twice");
    // Not a value: nothing to get, nothing that exists.
    assert_eq!(values.get::<u32>("missing").await.unwrap(), None);
    assert!(!values.exists("missing").await.unwrap());
    // A bypass asks the loader; the error expires; a value replaces it.
    let _ = values
        .cached("missing")
        .bypass(true)
        .load_caching_errors(negative, failing)
        .await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let got = values
        .cached("missing")
        .load_caching_errors(negative, || async { Ok::<u32, String>(5) })
        .await;
    assert_eq!(got, Ok(5));
    assert_eq!(values.get::<u32>("missing").await.unwrap(), Some(5));
    assert_eq!(values.stats().mismatches, 0);
}

#[tokio::test(start_paused = true)]
async fn a_layers_observers_are_told_of_its_values_events() {
    use tower_response_cache::observe::{CacheEvent, EventKind};
    let seen: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let log = Arc::clone(&seen);
    let cache = tower_response_cache::CacheLayer::new(MemoryStore::new(16 << 20)).observer(
        move |event: &CacheEvent<'_>| {
            log.lock().unwrap().push((
                event.route.unwrap_or("-").to_owned(),
                event.kind.as_str().to_owned(),
            ));
        },
    );
    let values = cache.values("values");
    values
        .get_or_insert_with("k", MINUTE, || async { Ok::<_, ()>(1u8) })
        .await
        .unwrap();
    values
        .get_or_insert_with("k", MINUTE, || async { Ok::<_, ()>(2u8) })
        .await
        .unwrap();
    let events: Vec<(String, String)> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(route, _)| route == "values:")
        .cloned()
        .collect();
    let kinds: Vec<&str> = events.iter().map(|(_, kind)| kind.as_str()).collect();
    assert_eq!(kinds, ["miss", "stored", "hit"]);
    // And a store that fails is told as such.
    let failing = tower_response_cache::CacheLayer::new(BrokenStore).observer({
        let seen = Arc::clone(&seen);
        move |event: &CacheEvent<'_>| {
            if let EventKind::StoreError { operation, .. } = event.kind {
                seen.lock()
                    .unwrap()
                    .push(("broken".to_owned(), operation.as_str().to_owned()));
            }
        }
    });
    let broken = failing.values("values");
    let _ = broken
        .get_or_insert_with("k", MINUTE, || async { Ok::<_, ()>(1u8) })
        .await;
    let failures: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(route, _)| route == "broken")
        .map(|(_, operation)| operation.clone())
        .collect();
    assert_eq!(failures, ["read", "write"]);
}

#[tokio::test(start_paused = true)]
async fn handlers_reach_values_through_axum_state() {
    fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
    assert_shareable::<ValueCache>();
    let loads = Arc::new(AtomicUsize::new(0));
    let (values, _store) = values();
    let app = axum::Router::new()
        .route(
            "/users/{id}",
            axum::routing::get(
                |axum::extract::State((values, loads)): axum::extract::State<(
                    ValueCache,
                    Arc<AtomicUsize>,
                )>,
                 axum::extract::Path(id): axum::extract::Path<u64>| async move {
                    let user = values
                        .get_or_insert_with(ValueKey::new("user").arg(id), MINUTE, || async {
                            loads.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, std::io::Error>(User {
                                id,
                                name: format!("user {id}"),
                            })
                        })
                        .await
                        .unwrap();
                    user.name
                },
            ),
        )
        .with_state((values.clone(), Arc::clone(&loads)));
    for _ in 0..3 {
        assert_eq!(fetch(&app, "/users/7").await.text(), "user 7");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(values.stats().hits, 2);
}

#[tokio::test(start_paused = true)]
async fn waiters_share_a_skipped_value_and_run_their_own_loaders_after_a_failure() {
    let (values, _store) = values();
    let loads = Arc::new(AtomicUsize::new(0));
    let run = |fail: bool| {
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (values, loads) = (values.clone(), Arc::clone(&loads));
                tokio::spawn(async move {
                    values
                        .cached::<u32>(if fail { "failing" } else { "skipped" })
                        .skip_if(|_| true)
                        .load(|| async move {
                            loads.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            if fail { Err(()) } else { Ok(7) }
                        })
                        .await
                })
            })
            .collect::<Vec<_>>();
        async move {
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await.unwrap());
            }
            results
        }
    };
    // A skipped value is not stored, but those who waited for it get it.
    let results = run(false).await;
    assert!(results.iter().all(|result| *result == Ok(7)));
    assert_eq!(loads.swap(0, Ordering::SeqCst), 1);
    assert!(!values.exists("skipped").await.unwrap());
    // A failure is not shared: the waiters load for themselves, together, not in turn.
    let started = std::time::Instant::now();
    let results = run(true).await;
    assert!(results.iter().all(Result::is_err));
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "in turn would take 2 s: {took:?}"
    );
    assert!(loads.load(Ordering::SeqCst) > 1);
}
