//! Behaviour that must hold on a standalone server and on a cluster alike.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::interfaces::KeysInterface;
use http::{HeaderMap, HeaderValue, StatusCode};
use tower_response_cache::RedisConfig;
use tower_response_cache::codec::{BinaryCodec, Codec, JsonCodec};
use tower_response_cache::store::{PutIf, StoreExt};
use tower_response_cache::{CachedResponse, RedisStore, store::Store};

use crate::{Calls, Topology, app, fetch, on_both_topologies, slow_app, store};

on_both_topologies!(
    entries_round_trip_with_their_ttl,
    two_instances_share_entries,
    clear_and_prefix_removal_stay_in_their_namespace,
    garbage_at_a_key_is_a_miss_then_overwritten,
    an_unknown_format_version_is_a_miss,
    json_entries_are_readable_in_redis,
    two_instances_times_two_hundred_requests_make_one_origin_call,
    a_thousand_concurrent_requests_for_a_cold_key_make_one_origin_call,
    glob_characters_in_namespaces_match_only_themselves,
    a_miss_takes_the_fill_lock_unless_fill_locks_are_off,
    an_older_entry_never_replaces_a_newer_one,
    the_store_contract_holds,
);

fn entry(body: &'static str) -> Arc<CachedResponse> {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    headers.append("link", HeaderValue::from_static("</a>"));
    headers.append("link", HeaderValue::from_static("</b>"));
    let mut entry =
        CachedResponse::new(StatusCode::OK, headers, Bytes::from_static(body.as_bytes()));
    entry.ttl = Duration::from_secs(60);
    Arc::new(entry)
}

async fn pttl(store: &RedisStore, key: &str) -> i64 {
    store.pool().pttl(store.redis_key(key)).await.unwrap()
}

async fn entries_round_trip_with_their_ttl(topology: &Topology) {
    let store = store(&topology.url(), "rt").await;
    let stored = entry("hello");
    store
        .put(
            "k",
            Arc::clone(&stored),
            Duration::from_secs(60),
            PutIf::Always,
        )
        .await
        .unwrap();
    let got = store.get("k").await.unwrap().expect("the entry");
    assert_eq!(*got, *stored, "every field survives the trip");
    let ttl = pttl(&store, "k").await;
    assert!(
        (59_000..=60_000).contains(&ttl),
        "SET … PX 60000, got {ttl}"
    );

    assert!(
        store
            .touch("k", &[], Duration::from_secs(120))
            .await
            .unwrap()
    );
    assert!(pttl(&store, "k").await > 60_000);
    assert!(
        !store
            .touch("missing", &[], Duration::from_secs(1))
            .await
            .unwrap()
    );

    assert!(store.remove("k").await.unwrap());
    assert!(store.get("k").await.unwrap().is_none());
    assert!(!store.remove("k").await.unwrap());

    store
        .put(
            "short",
            entry("x"),
            Duration::from_millis(150),
            PutIf::Always,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        store.get("short").await.unwrap().is_none(),
        "Redis expired it"
    );
}

async fn two_instances_share_entries(topology: &Topology) {
    let url = topology.url();
    let (calls_a, calls_b) = (Calls::default(), Calls::default());
    // Two instances: separate connection pools, separate layers, one Redis.
    let (app_a, _) = app(store(&url, "shared").await, &calls_a);
    let (app_b, layer_b) = app(store(&url, "shared").await, &calls_b);

    let miss = fetch(&app_a, "/users/7").await;
    assert_eq!(miss.x_cache(), "MISS");
    let hit = fetch(&app_b, "/users/7").await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.text(), miss.text());
    assert_eq!(
        (calls_a.get(), calls_b.get()),
        (1, 0),
        "instance B never ran its handler"
    );
    assert_eq!(layer_b.stats().snapshot().total.hits, 1);
}

async fn clear_and_prefix_removal_stay_in_their_namespace(topology: &Topology) {
    let url = topology.url();
    let ours = store(&url, "ours").await;
    let theirs = store(&url, "theirs").await;
    // Enough keys to land on every primary of a cluster.
    let keys: Vec<String> = (0..120).map(|i| format!("GET:/p{}/{i}", i % 3)).collect();
    for key in &keys {
        ours.put(key, entry("o"), Duration::from_secs(60), PutIf::Always)
            .await
            .unwrap();
        theirs
            .put(key, entry("t"), Duration::from_secs(60), PutIf::Always)
            .await
            .unwrap();
    }
    let () = ours
        .pool()
        .set("ours-not-namespaced", "keep", None, None, false)
        .await
        .unwrap();
    if let Topology::Cluster(cluster) = topology {
        assert!(
            cluster.keys_per_node().iter().all(|&n| n > 0),
            "keys on every primary"
        );
    }

    let removed = ours.remove_prefix("GET:/p1/").await.unwrap();
    assert_eq!(removed, 40);
    for key in &keys {
        let expected = !key.starts_with("GET:/p1/");
        assert_eq!(ours.get(key).await.unwrap().is_some(), expected, "{key}");
    }

    ours.clear().await.unwrap();
    for key in &keys {
        assert!(ours.get(key).await.unwrap().is_none(), "{key} cleared");
        assert!(
            theirs.get(key).await.unwrap().is_some(),
            "{key} of another namespace kept"
        );
    }
    let kept: Option<String> = ours.pool().get("ours-not-namespaced").await.unwrap();
    assert_eq!(
        kept.as_deref(),
        Some("keep"),
        "a key that merely shares the prefix text is kept"
    );
}

async fn garbage_at_a_key_is_a_miss_then_overwritten(topology: &Topology) {
    let store = store(&topology.url(), "garbage").await;
    let calls = Calls::default();
    let (app, layer) = app(store.clone(), &calls);
    let key = store.redis_key("app:GET:/g");
    let () = store
        .pool()
        .set(&key, "\u{1}not an entry", None, None, false)
        .await
        .unwrap();

    let first = fetch(&app, "/g").await;
    assert_eq!((first.status, first.x_cache()), (StatusCode::OK, "MISS"));
    let stats = layer.stats().snapshot();
    assert_eq!(stats.total.store_errors_by_kind["decode"], 1);

    let value: Bytes = store.pool().get(&key).await.unwrap();
    assert!(
        BinaryCodec.decode(&value).is_ok(),
        "the miss overwrote the garbage"
    );
    let second = fetch(&app, "/g").await;
    assert_eq!((second.x_cache(), second.text()), ("HIT", first.text()));
    assert_eq!(calls.get(), 1);
}

async fn an_unknown_format_version_is_a_miss(topology: &Topology) {
    let store = store(&topology.url(), "version").await;
    let calls = Calls::default();
    let (app, layer) = app(store.clone(), &calls);
    let mut future = BinaryCodec.encode(&entry("from the future")).to_vec();
    future[3] = 99; // the version byte after the magic
    let key = store.redis_key("app:GET:/v");
    let () = store
        .pool()
        .set(&key, future, None, None, false)
        .await
        .unwrap();

    let reply = fetch(&app, "/v").await;
    assert_eq!(reply.x_cache(), "MISS");
    assert_eq!(
        reply.text(),
        "/v #1",
        "served by the service, not the unreadable entry"
    );
    assert_eq!(
        layer.stats().snapshot().total.store_errors_by_kind["decode"],
        1
    );
}

async fn json_entries_are_readable_in_redis(topology: &Topology) {
    let config = RedisConfig {
        namespace: "json".to_owned(),
        ..RedisConfig::from_url(&topology.url()).unwrap()
    }
    .codec(JsonCodec);
    let store = RedisStore::connect(config).await.unwrap();
    let calls = Calls::default();
    let (app, _) = app(store.clone(), &calls);
    fetch(&app, "/readable").await;
    let raw: String = store
        .pool()
        .get(store.redis_key("app:GET:/readable"))
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(json["status"], 200);
    assert_eq!(json["body"], "/readable #1");
    assert_eq!(fetch(&app, "/readable").await.x_cache(), "HIT");
}

async fn two_instances_times_two_hundred_requests_make_one_origin_call(topology: &Topology) {
    let url = topology.url();
    let calls = Calls::default();
    let store_a = store(&url, "fill").await;
    let (app_a, layer_a) = slow_app(store_a.clone(), &calls, Duration::from_millis(200));
    let (app_b, layer_b) = slow_app(
        store(&url, "fill").await,
        &calls,
        Duration::from_millis(200),
    );
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let app = if i % 2 == 0 {
                app_a.clone()
            } else {
                app_b.clone()
            };
            tokio::spawn(async move { fetch(&app, "/cold").await })
        })
        .collect();
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(
            (reply.status, reply.text()),
            (StatusCode::OK, "/cold #1".to_owned())
        );
    }
    assert_eq!(calls.get(), 1, "one origin call across both instances");
    assert_eq!((layer_a.in_flight(), layer_b.in_flight()), (0, 0));
    let lock: i64 = store_a
        .pool()
        .exists(store_a.redis_key("app:GET:/cold#lock"))
        .await
        .unwrap();
    assert_eq!(lock, 0, "the fill lock was released");
    let served =
        layer_a.stats().snapshot().total.coalesced + layer_b.stats().snapshot().total.coalesced;
    assert!(served >= 398, "the others were coalesced: {served}");
}

async fn a_thousand_concurrent_requests_for_a_cold_key_make_one_origin_call(topology: &Topology) {
    let calls = Calls::default();
    let (app, layer) = slow_app(
        store(&topology.url(), "thousand").await,
        &calls,
        Duration::from_millis(100),
    );
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { fetch(&app, "/cold").await })
        })
        .collect();
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(
            (reply.status, reply.text()),
            (StatusCode::OK, "/cold #1".to_owned())
        );
    }
    assert_eq!(calls.get(), 1);
    assert_eq!(layer.in_flight(), 0);
}

async fn glob_characters_in_namespaces_match_only_themselves(topology: &Topology) {
    let url = topology.url();
    for (namespace, decoy) in [("o?rs", "oxrs"), ("a[b]", "ab"), ("s*", "sx")] {
        let ours = store(&url, namespace).await;
        let decoy = store(&url, decoy).await;
        for key in ["GET:/1", "GET:/2"] {
            ours.put(key, entry("o"), Duration::from_secs(60), PutIf::Always)
                .await
                .unwrap();
            decoy
                .put(key, entry("d"), Duration::from_secs(60), PutIf::Always)
                .await
                .unwrap();
        }
        ours.clear().await.unwrap();
        assert!(ours.get("GET:/1").await.unwrap().is_none(), "{namespace}");
        assert!(
            decoy.get("GET:/1").await.unwrap().is_some(),
            "{namespace} left its decoy alone"
        );
        assert_eq!(ours.remove_prefix("GET:").await.unwrap(), 0);
        assert!(decoy.get("GET:/2").await.unwrap().is_some());
    }
    let unnamespaced = RedisStore::connect(RedisConfig {
        namespace: String::new(),
        ..RedisConfig::from_url(&url).unwrap()
    })
    .await
    .unwrap();
    assert!(
        unnamespaced.clear().await.is_err(),
        "never the whole database"
    );
    assert!(unnamespaced.remove_prefix("").await.is_err());
}

async fn a_miss_takes_the_fill_lock_unless_fill_locks_are_off(topology: &Topology) {
    for fill_locks in [true, false] {
        let config = RedisConfig {
            namespace: format!("locks-{fill_locks}"),
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            fill_locks,
            ..RedisConfig::from_url(&topology.url()).unwrap()
        };
        let store = RedisStore::connect(config).await.unwrap();
        // The origin says when it is running and answers when released, so that the lock
        // is looked at while the miss is at the origin.
        let entered = Arc::new(tokio::sync::Notify::new());
        let release = Arc::new(tokio::sync::Notify::new());
        let (origin_entered, origin_release) = (Arc::clone(&entered), Arc::clone(&release));
        let app = axum::Router::new()
            .route(
                "/cold",
                axum::routing::get(move || async move {
                    origin_entered.notify_one();
                    origin_release.notified().await;
                    "cold"
                }),
            )
            .layer(tower_response_cache::CacheLayer::new(store.clone()).namespace("app"));
        let request = tokio::spawn(async move { fetch(&app, "/cold").await });
        tokio::time::timeout(Duration::from_secs(10), entered.notified())
            .await
            .expect("the miss reached the origin");
        let locked: i64 = store
            .pool()
            // The lock shares the entry's hash slot: `{entry key}#lock`.
            .exists(format!("{{{}}}#lock", store.redis_key("app:GET:/cold")))
            .await
            .unwrap();
        assert_eq!(
            locked,
            i64::from(fill_locks),
            "fill_locks: {fill_locks}: a lock while the miss is at the origin"
        );
        release.notify_one();
        let reply = request.await.unwrap();
        assert_eq!((reply.x_cache(), reply.text()), ("MISS", "cold".to_owned()));
    }
}

async fn an_older_entry_never_replaces_a_newer_one(topology: &mut Topology) {
    let aged = |body: &'static str, seconds_ago: u64| {
        let mut entry = (*entry(body)).clone();
        entry.stored_at = std::time::SystemTime::now() - Duration::from_secs(seconds_ago);
        Arc::new(entry)
    };
    for codec in ["binary", "json"] {
        let config = RedisConfig {
            namespace: format!("newer-{codec}"),
            ..RedisConfig::from_url(&topology.url()).unwrap()
        };
        let config = if codec == "json" {
            config.codec(JsonCodec)
        } else {
            config
        };
        let store = RedisStore::connect(config).await.unwrap();
        let ttl = Duration::from_secs(60);
        assert!(
            store
                .put("k", aged("old", 10), ttl, PutIf::Newer)
                .await
                .unwrap(),
            "{codec}: into nothing"
        );
        assert!(
            store
                .put("k", aged("new", 1), ttl, PutIf::Newer)
                .await
                .unwrap(),
            "{codec}: newer"
        );
        assert!(
            !store
                .put("k", aged("older", 5), ttl, PutIf::Newer)
                .await
                .unwrap(),
            "{codec}: an older one is refused"
        );
        assert_eq!(
            store.get("k").await.unwrap().unwrap().body,
            "new",
            "{codec}"
        );
        assert!(pttl(&store, "k").await > 50_000, "{codec}: with its TTL");
        // Whatever is not an entry of this format is replaced.
        let () = store
            .pool()
            .set(store.redis_key("k"), "garbage", None, None, false)
            .await
            .unwrap();
        assert!(
            store
                .put("k", aged("fresh", 1), ttl, PutIf::Newer)
                .await
                .unwrap(),
            "{codec}"
        );
        assert_eq!(
            store.get("k").await.unwrap().unwrap().body,
            "fresh",
            "{codec}"
        );
    }
}

/// A miss reaches the origin after one round trip to Redis: the lookup takes the fill lock
/// along (one script), where it used to wait for a `GET`, then a `SET … NX`. Measured
/// through a proxy that delays every chunk by 100 ms each way: one round trip is 200 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_reaches_the_origin_after_one_round_trip() {
    use crate::proxy::{Fault, Proxy};
    if !crate::servers::available() {
        return;
    }
    let server = crate::servers::RedisServer::start(&[]);
    let proxy = Proxy::start(server.port).await;
    let store = RedisStore::connect(RedisConfig {
        namespace: "one-trip".into(),
        command_timeout: Duration::from_secs(3),
        ..RedisConfig::from_url(&proxy.url()).unwrap()
    })
    .await
    .unwrap();
    let entered = Arc::new(std::sync::Mutex::new(None));
    let seen = Arc::clone(&entered);
    let app = axum::Router::new()
        .route(
            "/cold",
            axum::routing::get(move || {
                let seen = Arc::clone(&seen);
                async move {
                    seen.lock()
                        .unwrap()
                        .get_or_insert(std::time::Instant::now());
                    "cold"
                }
            }),
        )
        .layer(
            tower_response_cache::CacheLayer::new(store.clone())
                .namespace("app")
                .write_mode(tower_response_cache::WriteMode::Background),
        );
    // Warm the connections (and load the script) before the delay.
    fetch(&app, "/warm").await;
    proxy.set(Fault::Delay(Duration::from_millis(100)));
    let start = std::time::Instant::now();
    let reply = fetch(&app, "/cold").await;
    assert_eq!((reply.x_cache(), reply.text()), ("MISS", "cold".to_owned()));
    let to_origin = entered.lock().unwrap().expect("the origin ran") - start;
    println!("a miss reached the origin after {to_origin:?} (one round trip: ~200 ms)");
    assert!(
        to_origin >= Duration::from_millis(190) && to_origin < Duration::from_millis(380),
        "one round trip before the origin, not two: {to_origin:?}"
    );
    proxy.set(Fault::Pass);
}

/// On one server, a miss is two commands: the lookup that takes the fill lock, and the
/// one script that checks the purge log, writes the entry with its tags and releases the
/// lock (it was five: a lookup, a purge-log check, the write, a second check, the
/// release). After another instance's purge, the first fill takes the long way and still
/// stores what the purge did not cover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_on_one_server_is_two_commands() {
    if !crate::servers::available() {
        return;
    }
    let server = crate::servers::RedisServer::start(&[]);
    // Scripts sent (`INFO commandstats` counts the commands a script runs inside it too,
    // so the scripts are what is counted: each step of a miss is one).
    let commands = || -> u64 {
        server
            .cli(&["INFO", "commandstats"])
            .lines()
            .filter_map(|line| {
                let (name, stats) = line.trim().split_once(":calls=")?;
                matches!(name, "cmdstat_evalsha" | "cmdstat_eval")
                    .then(|| stats.split(',').next()?.parse::<u64>().ok())?
            })
            .sum()
    };
    let calls = Calls::default();
    let (app, _) = app(store(&server.url(), "two").await, &calls);
    let other = store(&server.url(), "two").await;
    fetch(&app, "/warm").await;
    let before = commands();
    eprintln!("BEFORE {}", server.cli(&["INFO", "commandstats"]));
    let miss = fetch(&app, "/cold").await;
    eprintln!("AFTER {}", server.cli(&["INFO", "commandstats"]));
    assert_eq!(commands() - before, 2, "the lookup and the fill");
    assert_eq!(miss.x_cache(), "MISS");
    assert_eq!(fetch(&app, "/cold").await.x_cache(), "HIT");
    // Another instance purges a key this one's fills do not cover: this instance's next
    // fill finds the purge log moved, checks it the long way, and stores.
    other.remove("app:GET:/elsewhere").await.unwrap();
    let before = commands();
    assert_eq!(fetch(&app, "/after").await.x_cache(), "MISS");
    assert!(commands() - before > 2, "the long way");
    assert_eq!(fetch(&app, "/after").await.x_cache(), "HIT");
    // And the one after it is two commands again: the instance learned the mark.
    let before = commands();
    fetch(&app, "/later").await;
    assert_eq!(commands() - before, 2);
    assert_eq!(calls.get(), 4);
}

async fn the_store_contract_holds(topology: &Topology) {
    use tower_response_cache::store::contract::run_shared_contract;
    // Two instances' handles on one namespace: Redis does everything.
    let (a, b) = (
        store(&topology.url(), "contract").await,
        store(&topology.url(), "contract").await,
    );
    let report = run_shared_contract(&a, &b).await;
    println!("{report}");
    assert_eq!(report.unsupported(), [""; 0]);
    // And with a memory tier in front, coherent as it is.
    let tiered = async || {
        tower_response_cache::TieredStore::connect(
            store(&topology.url(), "contract-tiered").await,
            tower_response_cache::TieredConfig::default(),
        )
        .await
        .unwrap()
    };
    let (a, b) = (tiered().await, tiered().await);
    let report = run_shared_contract(&a, &b).await;
    assert_eq!(report.unsupported(), [""; 0]);
}
