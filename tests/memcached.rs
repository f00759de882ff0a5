//! `MemcachedStore` against real `memcached` processes on free loopback ports, started by
//! the tests. Without `memcached` the tests are skipped with a message — except under
//! `CI=true`, where that is a failure (`scripts/test.sh` installs it).

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "common/client.rs"]
mod client;
#[path = "common/installed.rs"]
mod installed;
#[path = "common/memcached_server.rs"]
mod memcached_server;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{Calls, User, alice, fetch};
use http::{HeaderMap, StatusCode};
use memcached_server::{Memcached, available};
use tower_response_cache::store::SharedStore;
use tower_response_cache::store::contract::run_shared_contract;
use tower_response_cache::store::{PutIf, StoreExt};
use tower_response_cache::value::ValueCache;
use tower_response_cache::{CacheLayer, CachedResponse, WriteMode, store::Store};
use tower_response_cache::{
    MemcachedConfig, MemcachedStore,
    store::{PurgeMode, PurgeTarget, StoreErrorKind},
};

const MINUTE: Duration = Duration::from_secs(60);

fn store_on(servers: &[&Memcached], namespace: &str) -> MemcachedStore {
    MemcachedStore::new(MemcachedConfig {
        namespace: namespace.to_owned(),
        command_timeout: Duration::from_secs(1),
        ..MemcachedConfig::new(servers.iter().map(|server| server.address()))
    })
    .unwrap()
}

/// A router whose `route` answers `page #<call number>`, behind `layer`; and its calls.
fn counting_app(route: &str, layer: CacheLayer) -> (axum::Router, Calls) {
    let calls = Calls::default();
    let app = axum::Router::new()
        .route(
            route,
            axum::routing::get(
                |axum::extract::State(calls): axum::extract::State<Calls>| async move {
                    format!("page #{}", calls.hit())
                },
            ),
        )
        .with_state(calls.clone())
        .layer(layer);
    (app, calls)
}

fn entry(body: &'static str) -> Arc<CachedResponse> {
    tagged(body, &[])
}

#[tokio::test]
async fn entries_round_trip_and_are_removed() {
    if !available() {
        return;
    }
    let server = Memcached::start(&[]);
    let store = store_on(&[&server], "trc");
    assert!(store.get("k").await.unwrap().is_none());
    store
        .put("k", entry("hello"), MINUTE, PutIf::Always)
        .await
        .unwrap();
    let found = store.get("k").await.unwrap().unwrap();
    assert_eq!(&found.body[..], b"hello");
    assert!(store.remove("k").await.unwrap());
    assert!(!store.remove("k").await.unwrap());
    assert!(store.get("k").await.unwrap().is_none());
    // Keys memcached cannot take as they are: hashed, and kept apart.
    for key in ["a b", "a_b", &"x".repeat(400), "tab\there"] {
        store
            .put(key, entry("odd"), MINUTE, PutIf::Always)
            .await
            .unwrap();
    }
    store
        .put("a b", entry("spaced"), MINUTE, PutIf::Always)
        .await
        .unwrap();
    assert_eq!(
        &store.get("a b").await.unwrap().unwrap().body[..],
        b"spaced"
    );
    assert_eq!(&store.get("a_b").await.unwrap().unwrap().body[..], b"odd");
}

#[tokio::test]
async fn the_layer_caches_on_memcached() {
    if !available() {
        return;
    }
    let server = Memcached::start(&[]);
    let (app, calls) = counting_app(
        "/page",
        CacheLayer::new(store_on(&[&server], "trc")).write_mode(WriteMode::Inline),
    );
    assert_eq!(fetch(&app, "/page").await.x_cache(), "MISS");
    let hit = fetch(&app, "/page").await;
    assert_eq!((hit.x_cache(), hit.text()), ("HIT", "page #1".to_owned()));
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn clear_starts_a_new_generation_that_other_instances_see() {
    if !available() {
        return;
    }
    let server = Memcached::start(&[]);
    let a = store_on(&[&server], "trc");
    let b = MemcachedStore::new(MemcachedConfig {
        version_ttl: Duration::from_millis(100),
        ..MemcachedConfig::new([server.address()])
    })
    .unwrap();
    let other = store_on(&[&server], "other");
    a.put("k", entry("a"), MINUTE, PutIf::Always).await.unwrap();
    other
        .put("k", entry("other"), MINUTE, PutIf::Always)
        .await
        .unwrap();
    assert!(b.get("k").await.unwrap().is_some());
    let before = a.memcached_key("k").await.unwrap();
    a.clear().await.unwrap();
    assert_ne!(a.memcached_key("k").await.unwrap(), before);
    assert!(a.get("k").await.unwrap().is_none());
    // B reads the generation again within its version TTL.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(b.get("k").await.unwrap().is_none());
    // Another namespace is not touched: no flush_all.
    assert_eq!(&other.get("k").await.unwrap().unwrap().body[..], b"other");
}

#[tokio::test]
async fn an_entry_over_the_item_size_is_not_stored_and_counted_so() {
    if !available() {
        return;
    }
    // memcached's default item size: 1 MiB.
    let server = Memcached::start(&[]);
    let store = store_on(&[&server], "trc");
    let big = CachedResponse::new(
        StatusCode::OK,
        HeaderMap::new(),
        Bytes::from(vec![b'x'; 3 << 19]),
    );
    let error = store
        .put("big", Arc::new(big), MINUTE, PutIf::Always)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), StoreErrorKind::TooLarge);
    // Through the layer: "not stored: too large", not a store error.
    let cache = CacheLayer::new(store.clone())
        .write_mode(WriteMode::Inline)
        .max_body_size(4 << 20);
    let stats = cache.stats();
    let app = axum::Router::new()
        .route("/big", axum::routing::get(|| async { vec![b'y'; 3 << 19] }))
        .layer(cache);
    fetch(&app, "/big").await;
    let reply = fetch(&app, "/big").await;
    assert_eq!(reply.x_cache(), "UNCACHEABLE");
    assert!(
        reply
            .header("cache-status")
            .is_some_and(|status| status.contains("detail=too-large")),
        "{:?}",
        reply.header("cache-status")
    );
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.total.not_stored["too-large"], 2);
    assert_eq!(snapshot.total.store_errors, 0);
}

#[tokio::test]
async fn garbage_at_a_key_is_a_miss_then_overwritten() {
    if !available() {
        return;
    }
    let server = Memcached::start(&[]);
    let store = store_on(&[&server], "trc");
    // Garbage written by someone else under the key's memcached name.
    let key = store.memcached_key("GET:/g").await.unwrap();
    {
        use std::io::{BufRead, BufReader, Write};
        let mut socket = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        write!(socket, "set {key} 0 60 7\r\ngarbage\r\n").unwrap();
        let mut reply = String::new();
        BufReader::new(&socket).read_line(&mut reply).unwrap();
        assert_eq!(reply.trim(), "STORED");
    }
    let error = store.get("GET:/g").await.unwrap_err();
    assert_eq!(error.kind(), StoreErrorKind::Decode);
    store
        .put("GET:/g", entry("good"), MINUTE, PutIf::Always)
        .await
        .unwrap();
    assert_eq!(
        &store.get("GET:/g").await.unwrap().unwrap().body[..],
        b"good"
    );
}

#[tokio::test]
async fn with_one_of_two_servers_down_its_keys_miss_and_the_others_hit() {
    if !available() {
        return;
    }
    let first = Memcached::start(&[]);
    let mut second = Memcached::start(&[]);
    // Each server has its own breaker: the one down opens, the other's keys go on.
    let store = MemcachedStore::new(MemcachedConfig {
        command_timeout: Duration::from_millis(200),
        breaker_threshold: 2,
        breaker_cooldown: Duration::from_millis(300),
        ..MemcachedConfig::new([first.address(), second.address()])
    })
    .unwrap();
    let keys: Vec<String> = (0..40).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        store
            .put(key, entry("v"), MINUTE, PutIf::Always)
            .await
            .unwrap();
    }
    second.kill();
    let (mut hits, mut failures) = (0, 0);
    for key in &keys {
        // A key of the server down fails every time; one of the server up may time out
        // once on a loaded machine, not three times.
        let mut result = store.get(key).await;
        for _ in 0..2 {
            if result.is_ok() {
                break;
            }
            result = store.get(key).await;
        }
        match result {
            Ok(Some(_)) => hits += 1,
            Ok(None) => panic!("{key}: a server up keeps its keys"),
            Err(_) => failures += 1,
        }
    }
    assert!(hits > 5 && failures > 5, "hits {hits}, failures {failures}");
    assert_eq!(store.open_circuits(), 1, "the server down, not both");
    // Back, empty: its keys miss, the others still hit.
    second.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut misses = 0;
        let mut errors = 0;
        for key in &keys {
            match store.get(key).await {
                Ok(None) => misses += 1,
                Err(_) => errors += 1,
                Ok(Some(_)) => {}
            }
        }
        if errors == 0 {
            // Its keys are gone with it; the others' still hit — unless the namespace
            // generation lived on it too: a server back empty without it is a clear.
            assert!(
                misses == failures || misses == keys.len(),
                "misses {misses}, keys lost {failures}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reconnected to the restarted server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn values_live_on_memcached_too() {
    if !available() {
        return;
    }
    let server = Memcached::start(&[]);
    let values = ValueCache::new(store_on(&[&server], "trc"));
    values.set("user:42", &alice(), MINUTE).await.unwrap();
    assert_eq!(values.get::<User>("user:42").await.unwrap(), Some(alice()));
    let loaded: User = values
        .get_or_insert_with("user:7", MINUTE, || async {
            Ok::<_, ()>(User {
                id: 7,
                name: "bob".into(),
            })
        })
        .await
        .unwrap();
    assert_eq!(loaded.id, 7);
    assert_eq!(values.get::<User>("user:7").await.unwrap(), Some(loaded));
}

#[tokio::test]
async fn a_value_cache_clear_empties_its_namespace_on_every_instance() {
    if !available() {
        return;
    }
    let server = Memcached::start(&[]);
    let a = instance(&server, Duration::from_millis(200));
    let b = instance(&server, Duration::ZERO);
    let values = ValueCache::new(a.clone());
    let users = ValueCache::new(a.clone()).namespace("users");
    let on_b = ValueCache::new(b.clone());
    values.set("user:42", &alice(), MINUTE).await.unwrap();
    users.set("42", &alice(), MINUTE).await.unwrap();
    let response = tagged("a response", &[]);
    a.put("app:GET:/users/42", response, MINUTE, PutIf::Always)
        .await
        .unwrap();
    assert_eq!(on_b.get::<User>("user:42").await.unwrap(), Some(alice()));

    // Memcached cannot count what a clear takes.
    assert_eq!(on_b.clear().await.unwrap(), 0);
    assert_eq!(on_b.get::<User>("user:42").await.unwrap(), None, "here");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        values.get::<User>("user:42").await.unwrap(),
        None,
        "there, after its version TTL"
    );
    // Another namespace and the responses stay.
    assert_eq!(users.get::<User>("42").await.unwrap(), Some(alice()));
    assert!(a.get("app:GET:/users/42").await.unwrap().is_some());
    // Set again after the clear: there on both.
    values.set("user:42", &alice(), MINUTE).await.unwrap();
    assert_eq!(on_b.get::<User>("user:42").await.unwrap(), Some(alice()));
}

#[tokio::test]
async fn a_prefix_purge_on_one_instance_reaches_the_others_within_their_version_ttl() {
    if !available() {
        return;
    }
    let server = Memcached::start(&[]);
    let a = instance(&server, MINUTE);
    let b = instance(&server, Duration::from_millis(200));
    for key in ["p:1", "p:2", "q:1"] {
        a.put(key, tagged(key, &[]), MINUTE, PutIf::Always)
            .await
            .unwrap();
        assert!(b.get(key).await.unwrap().is_some(), "read, record seen");
    }
    a.remove_prefix("p:").await.unwrap();
    assert!(
        a.get("p:1").await.unwrap().is_none(),
        "the purging instance"
    );
    assert!(
        b.get("p:1").await.unwrap().is_some(),
        "within B's version TTL"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        b.get("p:2").await.unwrap().is_none(),
        "after B's version TTL"
    );
    assert!(b.get("q:1").await.unwrap().is_some(), "another prefix");
}

#[tokio::test]
async fn the_store_contract_holds_on_two_servers() {
    if !available() {
        return;
    }
    let (first, second) = (Memcached::start(&[]), Memcached::start(&[]));
    // Two instances' handles. Memcached cannot list its keys: prefix and tag purges
    // without a count, and none with a filter.
    let (a, b) = (
        store_on(&[&first, &second], "contract"),
        store_on(&[&first, &second], "contract"),
    );
    assert!(!a.capabilities().counts_purges);
    let report = run_shared_contract(&a, &b).await;
    println!("{report}");
    assert_eq!(report.unsupported(), ["prefix purges with a filter"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_make_one_origin_call_for_a_cold_key() {
    if !available() {
        return;
    }
    let server = Memcached::start(&[]);
    let calls = Calls::default();
    let instance = || {
        axum::Router::new()
            .route(
                "/cold",
                axum::routing::get(
                    |axum::extract::State(calls): axum::extract::State<Calls>| async move {
                        let n = calls.hit();
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        format!("cold #{n}")
                    },
                ),
            )
            .with_state(calls.clone())
            .layer(CacheLayer::new(store_on(&[&server], "trc")).write_mode(WriteMode::Inline))
    };
    let (a, b) = (instance(), instance());
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let app = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { fetch(&app, "/cold").await.text() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), "cold #1");
    }
    assert_eq!(calls.get(), 1, "one origin call for both instances");
    // The fill lock was let go once the entry was written.
    let store = store_on(&[&server], "trc");
    assert!(
        store.get("cache:GET:/cold").await.unwrap().is_some(),
        "the entry's key, whose lock is looked at"
    );
    let lock = store.memcached_key("cache:GET:/cold#lock").await.unwrap();
    let mut socket = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    use std::io::{BufRead, BufReader, Write};
    write!(socket, "get {lock}\r\n").unwrap();
    let mut reply = String::new();
    BufReader::new(&socket).read_line(&mut reply).unwrap();
    assert_eq!(reply.trim(), "END", "no lock left");
}

fn tagged(body: &'static str, tags: &[&str]) -> Arc<CachedResponse> {
    let mut entry = CachedResponse::new(StatusCode::OK, HeaderMap::new(), Bytes::from(body));
    entry.ttl = MINUTE;
    entry.tags = tags.iter().map(|tag| (*tag).to_owned()).collect();
    Arc::new(entry)
}

fn instance(server: &Memcached, version_ttl: Duration) -> MemcachedStore {
    MemcachedStore::new(MemcachedConfig {
        command_timeout: Duration::from_secs(1),
        version_ttl,
        ..MemcachedConfig::new([server.address()])
    })
    .unwrap()
}

fn tag(tag: &'static str) -> PurgeTarget<'static> {
    PurgeTarget::Tag { tag, within: "t:" }
}

#[tokio::test]
async fn a_tag_purge_on_one_instance_reaches_the_others_within_their_version_ttl() {
    if !available() {
        return;
    }
    let server = Memcached::start(&[]);
    let a = instance(&server, MINUTE);
    let b = instance(&server, Duration::from_millis(200));
    let c = instance(&server, Duration::ZERO);
    a.put(
        "t:1",
        tagged("one", &["user:1", "team:9"]),
        MINUTE,
        PutIf::Always,
    )
    .await
    .unwrap();
    a.put("t:2", tagged("two", &["user:2"]), MINUTE, PutIf::Always)
        .await
        .unwrap();
    for store in [&a, &b, &c] {
        assert!(store.get("t:1").await.unwrap().is_some(), "read, tags seen");
    }
    b.purge(tag("team:9"), PurgeMode::Hard).await.unwrap();
    // B at once, C (which keeps no copies) at once, A after its copies age: a minute.
    assert!(
        b.get("t:1").await.unwrap().is_none(),
        "the purging instance"
    );
    assert!(
        c.get("t:1").await.unwrap().is_none(),
        "an instance without copies"
    );
    assert!(
        a.get("t:1").await.unwrap().is_some(),
        "within A's version TTL"
    );
    assert_eq!(
        &c.get("t:2").await.unwrap().unwrap().body[..],
        b"two",
        "other tags' entries stay"
    );
    // A tag matches as a whole.
    c.purge(tag("user:"), PurgeMode::Hard).await.unwrap();
    assert!(c.get("t:2").await.unwrap().is_some());
    // Stored again after the purge: a hit everywhere.
    b.put(
        "t:1",
        tagged("one again", &["user:1", "team:9"]),
        MINUTE,
        PutIf::Always,
    )
    .await
    .unwrap();
    assert_eq!(&c.get("t:1").await.unwrap().unwrap().body[..], b"one again");
}

#[tokio::test]
async fn a_fill_under_way_during_another_instances_tag_purge_is_caught() {
    if !available() {
        return;
    }
    let server = Memcached::start(&[]);
    let a = instance(&server, Duration::ZERO);
    let b = instance(&server, Duration::ZERO);
    a.put(
        "t:other",
        tagged("other", &["user:2"]),
        MINUTE,
        PutIf::Always,
    )
    .await
    .unwrap();
    let started = a.purge_mark().expect("a mark once the counter was read");
    // B purges while A's fetch is under way; A then writes what it fetched before.
    b.purge(tag("user:1"), PurgeMode::Hard).await.unwrap();
    a.put("t:1", tagged("old", &["user:1"]), MINUTE, PutIf::Always)
        .await
        .unwrap();
    let tags = ["user:1".to_owned()];
    assert!(a.purged_since(started, "t:1", &tags).await.unwrap());
    assert!(
        !a.purged_since(started, "t:other", &["user:2".to_owned()])
            .await
            .unwrap(),
        "another tag"
    );
    let later = a.purge_mark().unwrap();
    assert!(!a.purged_since(later, "t:1", &tags).await.unwrap());
    // A clear is a purge of everything for fetches that started before it.
    b.clear().await.unwrap();
    assert!(a.purged_since(later, "t:3", &[]).await.unwrap());
}

#[tokio::test]
async fn an_entry_whose_tag_record_memcached_lost_is_a_miss() {
    if !available() {
        return;
    }
    let server = Memcached::start(&[]);
    let store = instance(&server, Duration::ZERO);
    store
        .put("t:1", tagged("one", &["user:1"]), MINUTE, PutIf::Always)
        .await
        .unwrap();
    assert!(store.get("t:1").await.unwrap().is_some());
    // The record lives beside the entries, in the same generation.
    let entry_key = store.memcached_key("t:1").await.unwrap();
    let generation = entry_key.split(':').nth(1).unwrap();
    use async_memcached::AsciiProtocol;
    let mut raw = async_memcached::Client::new(format!("tcp://{}", server.address()))
        .await
        .unwrap();
    raw.delete(format!("trc:{generation}#tag:user:1"))
        .await
        .unwrap();
    assert!(
        store.get("t:1").await.unwrap().is_none(),
        "whether a purge took it cannot be told: a miss"
    );
    // Stored again, its record is made again.
    store
        .put(
            "t:1",
            tagged("one again", &["user:1"]),
            MINUTE,
            PutIf::Always,
        )
        .await
        .unwrap();
    assert!(store.get("t:1").await.unwrap().is_some());
    // Garbage in place of a record: the same.
    raw.set(format!("trc:{generation}#tag:user:1"), "{", None, None)
        .await
        .unwrap();
    assert!(store.get("t:1").await.unwrap().is_none());
    store
        .purge(tag("user:1"), PurgeMode::Hard)
        .await
        .expect("a purge replaces a garbage record");
}

#[tokio::test]
async fn the_layer_purges_tags_on_memcached() {
    if !available() {
        return;
    }
    let server = Memcached::start(&[]);
    let calls = Calls::default();
    let layer = CacheLayer::new(instance(&server, Duration::from_millis(100)))
        .write_mode(WriteMode::Inline);
    let handle = layer.handle();
    let app = axum::Router::new()
        .route(
            "/teams/{id}",
            axum::routing::get(
                |axum::extract::State(calls): axum::extract::State<Calls>| async move {
                    (
                        [("surrogate-key", "team:9 user:42")],
                        format!("team #{}", calls.hit()),
                    )
                },
            ),
        )
        .with_state(calls.clone())
        .layer(layer);
    fetch(&app, "/teams/9").await;
    assert_eq!(fetch(&app, "/teams/9").await.x_cache(), "HIT");
    handle.invalidate_tag("user:42").await.unwrap();
    let reply = fetch(&app, "/teams/9").await;
    assert_eq!(
        (reply.x_cache(), reply.text()),
        ("MISS", "team #2".to_owned())
    );
    assert_eq!(fetch(&app, "/teams/9").await.x_cache(), "HIT");
    // Soft: served stale while it is fetched again.
    handle.soft().invalidate_tag("team:9").await.unwrap();
    let reply = fetch(&app, "/teams/9").await;
    assert_ne!(reply.x_cache(), "HIT", "stale after a soft purge");
    assert_eq!(calls.get(), 3);
    // The URLs under a path: a filter memcached cannot keep.
    let error = handle.invalidate_prefix("/teams/").await.unwrap_err();
    assert_eq!(error.kind(), StoreErrorKind::Unsupported);
    // The layer's whole namespace: a prefix purge.
    fetch(&app, "/teams/9").await;
    assert_eq!(fetch(&app, "/teams/9").await.x_cache(), "HIT");
    handle.clear().await.unwrap();
    assert_eq!(fetch(&app, "/teams/9").await.x_cache(), "MISS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_and_restarted_under_concurrent_traffic_fails_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    if !available() {
        return;
    }
    let mut server = Memcached::start(&[]);
    let store = MemcachedStore::new(MemcachedConfig {
        command_timeout: Duration::from_millis(200),
        breaker_cooldown: Duration::from_millis(300),
        ..MemcachedConfig::new([server.address()])
    })
    .unwrap();
    let (app, _calls) = counting_app("/{n}", CacheLayer::new(store));
    // Per phase (0: up, 1: killed, 2: restarted): requests served, and hits among them.
    #[derive(Default)]
    struct Tally {
        phase: AtomicUsize,
        served: [AtomicUsize; 3],
        hits: [AtomicUsize; 3],
        failed: AtomicUsize,
        stop: AtomicBool,
    }
    let tally = Arc::new(Tally::default());
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let (app, tally) = (app.clone(), Arc::clone(&tally));
            tokio::spawn(async move {
                // Bounded in count as well as by the stop flag.
                for i in 0..50_000 {
                    if tally.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let reply = fetch(&app, &format!("/{}", (worker + i) % 16)).await;
                    let phase = tally.phase.load(Ordering::Relaxed);
                    if reply.status != StatusCode::OK {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    tally.served[phase].fetch_add(1, Ordering::Relaxed);
                    if reply.x_cache() == "HIT" {
                        tally.hits[phase].fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let wait_for = async |what: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !what() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    wait_for(&|| tally.hits[0].load(Ordering::Relaxed) > 200).await;
    server.kill();
    tally.phase.store(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    tally.phase.store(2, Ordering::Relaxed);
    wait_for(&|| tally.hits[2].load(Ordering::Relaxed) > 200).await;
    tally.stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    drop(server);
    let load = |counter: &AtomicUsize| counter.load(Ordering::Relaxed);
    assert_eq!(load(&tally.failed), 0, "no request fails");
    assert!(load(&tally.hits[0]) > 200, "hits while up");
    assert!(load(&tally.served[1]) > 0, "served while memcached is down");
    assert!(
        load(&tally.hits[2]) > 200,
        "hits resume after the restart: {} of {}",
        load(&tally.hits[2]),
        load(&tally.served[2])
    );
}

/// A `redis-server` on a free loopback port for the tiered store's channel; killed on drop.
#[cfg(feature = "redis")]
struct RedisServer {
    port: u16,
    child: Child,
}

#[cfg(feature = "redis")]
impl RedisServer {
    /// `None` where redis-server is missing (a failure under `CI=true`).
    fn start() -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "redis-server is not installed, and CI=true makes that a failure"
            );
            eprintln!("skipped: redis-server is not installed (scripts/test.sh installs it)");
            return None;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server accepts connections"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self { port, child })
    }

    async fn store(&self) -> tower_response_cache::RedisStore {
        tower_response_cache::RedisStore::connect_url(&format!("redis://127.0.0.1:{}", self.port))
            .await
            .unwrap()
    }
}

#[cfg(feature = "redis")]
impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(feature = "redis")]
async fn tiered_on(
    memcached: &Memcached,
    redis: &RedisServer,
    version_ttl: Duration,
) -> tower_response_cache::TieredStore {
    use tower_response_cache::{TieredConfig, TieredStore};
    let store = TieredStore::with_channel(
        instance(memcached, version_ttl),
        redis.store().await,
        TieredConfig::default(),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.l1_in_use() {
        assert!(Instant::now() < deadline, "the channel is confirmed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_tiered_store_over_memcached_keeps_the_store_contract() {
    if !available() {
        return;
    }
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (first, second) = (Memcached::start(&[]), Memcached::start(&[]));
    let tiered = async || {
        use tower_response_cache::{TieredConfig, TieredStore};
        TieredStore::with_channel(
            store_on(&[&first, &second], "contract"),
            redis.store().await,
            TieredConfig::default(),
        )
        .await
        .unwrap()
    };
    let (a, b) = (tiered().await, tiered().await);
    let report = run_shared_contract(&a, &b).await;
    println!("{report}");
    assert_eq!(report.unsupported(), ["prefix purges with a filter"]);
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_tiered_store_over_memcached_evicts_l1_copies_on_other_instances() {
    if !available() {
        return;
    }
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let memcached = Memcached::start(&[]);
    let lag = Duration::from_millis(500);
    let a = tiered_on(&memcached, &redis, lag).await;
    let b = tiered_on(&memcached, &redis, lag).await;
    a.put("t:1", tagged("one", &["user:1"]), MINUTE, PutIf::Always)
        .await
        .unwrap();
    // Read from memcached, then from B's memory tier (once A's message about its write
    // has arrived: a read it overtakes is not copied into L1).
    let in_l1 = async |store: &tower_response_cache::TieredStore| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(store.get("t:1").await.unwrap().is_some(), "from memcached");
            if store.get_now("t:1").is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "copied into the memory tier");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    in_l1(&b).await;
    a.purge(tag("user:1"), PurgeMode::Hard).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.get_now("t:1").is_some() {
        assert!(Instant::now() < deadline, "the channel evicts B's copy");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // B's memcached store may still read its copy of the tag's record for its version
    // TTL; what it reads meanwhile is not put into B's memory tier.
    let _ = b.get("t:1").await.unwrap();
    assert!(
        b.get_now("t:1").is_none(),
        "nothing copied into L1 while memcached may lag"
    );
    tokio::time::sleep(lag + Duration::from_millis(100)).await;
    assert!(b.get("t:1").await.unwrap().is_none(), "purged, seen by B");
    // Stored again: copied into L1 once more.
    a.put("t:1", tagged("again", &["user:1"]), MINUTE, PutIf::Always)
        .await
        .unwrap();
    in_l1(&b).await;
}

#[tokio::test]
async fn a_layer_on_two_servers_keeps_caching_with_either_one_down() {
    if !available() {
        return;
    }
    // One of the two holds the namespace's generation and purge counter (a clear needs
    // it): whichever goes down, the other's keys keep being stored and hit. Server 0 goes
    // down, on new ports each round, until both cases have been seen.
    let mut seen = [false; 2];
    for _ in 0..12 {
        let (mut servers, store) = two_servers(Duration::from_secs(1));
        let (app, _calls) = counting_app(
            "/{n}",
            CacheLayer::new(store.clone()).write_mode(WriteMode::Inline),
        );
        assert_eq!(fetch(&app, "/warm").await.status, StatusCode::OK);
        servers[0].kill();
        let control_down = store.clear().await.is_err();
        let mut hits = 0;
        for n in 0..40 {
            let path = format!("/{n}");
            assert_eq!(fetch(&app, &path).await.status, StatusCode::OK);
            let second = fetch(&app, &path).await;
            assert_eq!(second.status, StatusCode::OK, "no request fails");
            hits += usize::from(second.x_cache() == "HIT");
        }
        assert!(
            (5..40).contains(&hits),
            "the control values' server down: {control_down}; the other's keys hit, its own \
             do not ({hits} of 40)"
        );
        seen[usize::from(control_down)] = true;
        if seen == [true, true] {
            return;
        }
    }
    panic!("both cases seen: {seen:?}");
}

/// Two instances write the same key at once, one an older entry, one a newer: however the
/// two interleave, the newer entry is what memcached holds (compare-and-swap), never the
/// older one written over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_write_racing_a_newer_one_never_wins() {
    if !available() {
        return;
    }
    let server = Memcached::start(&[]);
    let (a, b) = (store_on(&[&server], "race"), store_on(&[&server], "race"));
    let now = std::time::SystemTime::now();
    let aged = |body: &'static str, seconds_ago: u64| {
        let mut entry = CachedResponse::clone(&entry(body));
        entry.stored_at = now - Duration::from_secs(seconds_ago);
        Arc::new(entry)
    };
    let mut older_first = 0;
    for round in 0..200 {
        let key = format!("k{round}");
        // Something older than both already there: each write must read and compare.
        a.put(&key, aged("oldest", 30), MINUTE, PutIf::Always)
            .await
            .unwrap();
        let (older, newer) = tokio::join!(
            a.put(&key, aged("older", 20), MINUTE, PutIf::Newer),
            b.put(&key, aged("newer", 10), MINUTE, PutIf::Newer),
        );
        assert!(newer.unwrap(), "round {round}: the newer entry is stored");
        older_first += usize::from(older.unwrap());
        let held = a.get(&key).await.unwrap().expect("stored");
        assert_eq!(&held.body[..], b"newer", "round {round}");
    }
    // The older write is refused whenever the newer one landed first: both orders happened.
    assert!(older_first < 200, "the newer write never landed first");
}

/// With the server of the namespace's control values down, a purge of a key cannot be
/// numbered for other instances' fetches (none of which can store then): the entry is
/// removed all the same, and the failure reported.
#[tokio::test]
async fn a_key_purge_removes_the_entry_even_when_it_cannot_be_recorded() {
    if !available() {
        return;
    }
    for _ in 0..12 {
        let (mut servers, store) = two_servers(Duration::from_secs(30));
        let keys: Vec<String> = (0..8).map(|n| format!("k{n}")).collect();
        for key in &keys {
            store
                .put(key, entry("v"), MINUTE, PutIf::Always)
                .await
                .unwrap();
        }
        servers[0].kill();
        // The control values on the survivor: not the case this test is about.
        if store.clear().await.is_ok() {
            continue;
        }
        let mut survivors = 0;
        for key in &keys {
            if !matches!(store.get(key).await, Ok(Some(_))) {
                continue;
            }
            survivors += 1;
            assert!(store.remove(key).await.is_err(), "{key}: reported");
            assert!(
                store.get(key).await.unwrap().is_none(),
                "{key}: removed all the same"
            );
        }
        if survivors > 0 {
            return;
        }
    }
    panic!("the control values' server was never the one down with keys on the other");
}

/// Two fresh servers and a store on both that gives up on one quickly (a short command
/// timeout, a breaker that opens after two failures and stays open), using the namespace's
/// control values for `version_ttl` between reads.
fn two_servers(version_ttl: Duration) -> ([Memcached; 2], MemcachedStore) {
    let servers = [Memcached::start(&[]), Memcached::start(&[])];
    let store = MemcachedStore::new(MemcachedConfig {
        command_timeout: Duration::from_millis(200),
        breaker_threshold: 2,
        breaker_cooldown: Duration::from_secs(60),
        version_ttl,
        ..MemcachedConfig::new(servers.iter().map(Memcached::address))
    })
    .unwrap();
    (servers, store)
}
