//! `MemcachedStore` against real `memcached` processes on free loopback ports, started by
//! the tests. Without `memcached` the tests are skipped with a message — except under
//! `CI=true`, where that is a failure (`scripts/test.sh` installs it).

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "common/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "common/contract.rs"]
mod contract;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{Calls, User, alice, fetch};
use http::{HeaderMap, StatusCode};
use tower_response_cache::store::{MemcachedConfig, MemcachedStore, StoreErrorKind};
use tower_response_cache::value::ValueCache;
use tower_response_cache::{CacheLayer, CachedResponse, Store, WriteMode};

const MINUTE: Duration = Duration::from_secs(60);

/// Whether the tests can run here; panics under `CI=true` when they cannot.
fn available() -> bool {
    let found = Command::new("memcached")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "memcached is not installed, and CI=true makes that a failure (scripts/test.sh installs it)"
        );
        eprintln!("skipped: memcached is not installed (scripts/test.sh installs it)");
    }
    found
}

/// Whether this process runs as root (`id -u` is 0).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// One `memcached` process on a free loopback port; killed on drop.
struct Memcached {
    port: u16,
    child: Option<Child>,
    args: Vec<String>,
}

impl Memcached {
    /// A server with extra arguments (`-I 64k`: the item size).
    fn start(extra: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap();
        let mut args: Vec<String> = [
            "-l",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "0",
            "-m",
            "64",
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
        // memcached refuses to run as root unless told whom to run as.
        if std::env::var("USER").as_deref() == Ok("root") || is_root() {
            args.extend(["-u".to_owned(), "root".to_owned()]);
        }
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let mut server = Self {
            port,
            child: None,
            args,
        };
        server.restart();
        server
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on its port (empty), and waits until it accepts.
    fn restart(&mut self) {
        self.kill();
        let child = Command::new("memcached")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("memcached starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "memcached accepts connections");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        self.kill();
    }
}

fn store_on(servers: &[&Memcached], namespace: &str) -> MemcachedStore {
    MemcachedStore::new(MemcachedConfig {
        namespace: namespace.to_owned(),
        command_timeout: Duration::from_secs(1),
        ..MemcachedConfig::new(servers.iter().map(|server| server.address()))
    })
    .unwrap()
}

fn entry(body: &'static str) -> Arc<CachedResponse> {
    let mut entry = CachedResponse::new(StatusCode::OK, HeaderMap::new(), Bytes::from(body));
    entry.ttl = MINUTE;
    Arc::new(entry)
}

#[tokio::test]
async fn entries_round_trip_and_are_removed() {
    if !available() {
        return;
    }
    let server = Memcached::start(&[]);
    let store = store_on(&[&server], "trc");
    assert!(store.get("k").await.unwrap().is_none());
    store.put("k", entry("hello"), MINUTE).await.unwrap();
    let found = store.get("k").await.unwrap().unwrap();
    assert_eq!(&found.body[..], b"hello");
    assert!(store.remove("k").await.unwrap());
    assert!(!store.remove("k").await.unwrap());
    assert!(store.get("k").await.unwrap().is_none());
    // Keys memcached cannot take as they are: hashed, and kept apart.
    for key in ["a b", "a_b", &"x".repeat(400), "tab\there"] {
        store.put(key, entry("odd"), MINUTE).await.unwrap();
    }
    store.put("a b", entry("spaced"), MINUTE).await.unwrap();
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
    let calls = Calls::default();
    let app = axum::Router::new()
        .route(
            "/page",
            axum::routing::get(
                |axum::extract::State(calls): axum::extract::State<Calls>| async move {
                    format!("page #{}", calls.hit())
                },
            ),
        )
        .with_state(calls.clone())
        .layer(CacheLayer::new(store_on(&[&server], "trc")).write_mode(WriteMode::Inline));
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
        generation_ttl: Duration::from_millis(100),
        ..MemcachedConfig::new([server.address()])
    })
    .unwrap();
    let other = store_on(&[&server], "other");
    a.put("k", entry("a"), MINUTE).await.unwrap();
    other.put("k", entry("other"), MINUTE).await.unwrap();
    assert!(b.get("k").await.unwrap().is_some());
    let before = a.memcached_key("k").await.unwrap();
    a.clear().await.unwrap();
    assert_ne!(a.memcached_key("k").await.unwrap(), before);
    assert!(a.get("k").await.unwrap().is_none());
    // B reads the generation again within its generation TTL.
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
    let error = store.put("big", Arc::new(big), MINUTE).await.unwrap_err();
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
    store.put("GET:/g", entry("good"), MINUTE).await.unwrap();
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
        store.put(key, entry("v"), MINUTE).await.unwrap();
    }
    second.kill();
    let (mut hits, mut failures) = (0, 0);
    for key in &keys {
        match store.get(key).await {
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
async fn a_killed_server_fails_no_request_and_hits_resume_after_restart() {
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
    let calls = Calls::default();
    let app = axum::Router::new()
        .route(
            "/{n}",
            axum::routing::get(
                |axum::extract::State(calls): axum::extract::State<Calls>| async move {
                    format!("#{}", calls.hit())
                },
            ),
        )
        .with_state(calls.clone())
        .layer(CacheLayer::new(store).write_mode(WriteMode::Inline));
    fetch(&app, "/1").await;
    assert_eq!(fetch(&app, "/1").await.x_cache(), "HIT");
    server.kill();
    for n in 2..20 {
        let reply = fetch(&app, &format!("/{n}")).await;
        assert_eq!(reply.status, StatusCode::OK, "no request fails");
    }
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        fetch(&app, "/after").await;
        if fetch(&app, "/after").await.x_cache() == "HIT" {
            break;
        }
        assert!(Instant::now() < deadline, "hits resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
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
async fn the_store_contract_holds_on_two_servers() {
    if !available() {
        return;
    }
    let (first, second) = (Memcached::start(&[]), Memcached::start(&[]));
    let store = store_on(&[&first, &second], "contract");
    // Memcached cannot list its keys: no prefix or tag purges.
    contract::store_contract(
        &store,
        contract::Capabilities {
            prefixes: false,
            tags: false,
            counters: true,
        },
    )
    .await;
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
