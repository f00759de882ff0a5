//! Faults: Redis killed mid-burst and restarted, a server that never answers. The layer
//! must never fail a request because of its store.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use tower_response_cache::RedisConfig;
use tower_response_cache::RedisStore;

use crate::servers::{self, RedisServer};
use crate::{Calls, Topology, app, fetch};

fn config(url: &str) -> RedisConfig {
    RedisConfig {
        namespace: "faults".into(),
        breaker_cooldown: Duration::from_millis(200),
        ..RedisConfig::from_url(url).unwrap()
    }
}

crate::on_both_topologies!(
    killing_redis_mid_burst_fails_no_request_and_hits_resume_after_restart,
    a_server_that_stops_answering_costs_at_most_the_timeout_then_nothing,
);

async fn killing_redis_mid_burst_fails_no_request_and_hits_resume_after_restart(
    topology: &mut Topology,
) {
    let store = RedisStore::connect(config(&topology.url())).await.unwrap();
    let calls = Calls::default();
    let (app, layer) = crate::slow_app(store, &calls, Duration::from_millis(5));

    // 600 requests over 20 keys, 50 at a time; Redis is killed while they are in flight.
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(50));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..600)
        .map(|i| {
            let app = app.clone();
            let limit = std::sync::Arc::clone(&limit);
            let done = std::sync::Arc::clone(&done);
            tokio::spawn(async move {
                let _permit = limit.acquire().await.unwrap();
                let reply = fetch(&app, &format!("/k{}", i % 20)).await;
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                reply
            })
        })
        .collect();
    // Killed once a sixth of the burst is answered (hits by then), whatever the machine's
    // speed: most of the burst meets a dead Redis.
    let start = Instant::now();
    while done.load(std::sync::atomic::Ordering::SeqCst) < 100 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the burst started"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    topology.kill();
    let mut failures = 0;
    let (mut claimed_stored, mut claimed_failed) = (0, 0);
    for task in tasks {
        let reply = task.await.unwrap();
        if reply.status != http::StatusCode::OK || !reply.text().starts_with("/k") {
            failures += 1;
        }
        // Inline writes: a miss's head leaves once its write is done, and says how it went.
        let status = reply.header("cache-status").unwrap_or_default();
        claimed_stored += u64::from(status.ends_with("; stored"));
        claimed_failed += u64::from(status.ends_with("; detail=store-error"));
    }
    assert_eq!(failures, 0, "no request failed while Redis died");
    let stats = layer.stats().snapshot();
    assert!(
        claimed_stored <= stats.total.stores,
        "`stored` said {claimed_stored} times, {} stored",
        stats.total.stores
    );
    assert!(
        claimed_failed > 0,
        "misses after the kill say their write failed"
    );
    assert!(stats.total.hits > 0, "hits before the kill");
    assert!(stats.total.store_errors > 0, "errors counted after it");

    topology.restart();
    // The pool reconnects in the background; within a bounded time a key is stored and
    // then served from Redis again.
    let start = Instant::now();
    loop {
        let reply = fetch(&app, "/after-restart").await;
        assert_eq!(reply.status, http::StatusCode::OK);
        if reply.x_cache() == "HIT" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "hits resumed after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_server_that_stops_answering_costs_at_most_the_timeout_then_nothing(
    topology: &mut Topology,
) {
    let config = RedisConfig {
        command_timeout: Duration::from_millis(100),
        breaker_threshold: 3,
        breaker_cooldown: Duration::from_secs(30),
        ..config(&topology.url())
    };
    let store = RedisStore::connect(config).await.unwrap();
    let calls = Calls::default();
    let (app, layer) = app(store.clone(), &calls);
    fetch(&app, "/paused").await;
    assert_eq!(
        fetch(&app, "/paused").await.x_cache(),
        "HIT",
        "connected and working"
    );

    // Connections stay open, commands are never answered.
    topology.pause(20_000);
    for n in 2..=11 {
        let start = Instant::now();
        let reply = fetch(&app, &format!("/paused/{n}")).await;
        let elapsed = start.elapsed();
        assert_eq!(reply.status, http::StatusCode::OK);
        // At most a read and an inline write, each bounded by the 100 ms command timeout;
        // a wide margin for a loaded machine.
        assert!(
            elapsed < Duration::from_millis(1500),
            "request {n} took {elapsed:?}"
        );
    }
    assert!(
        store.circuit_open(),
        "consecutive timeouts opened the circuit"
    );
    let stats = layer.stats().snapshot();
    // The breaker opened after 3 consecutive failures, each a request's, each counted.
    // (The release of a fill lock a timed-out lookup may have taken is a follow-up of a
    // failure already counted: it counts toward neither.)
    let timeouts = stats.total.store_errors_by_kind.get("timeout").copied();
    assert_eq!(timeouts, Some(3), "{:?}", stats.total.store_errors_by_kind);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_never_speaks_redis_fails_open() {
    // Accepts connections and never writes a byte.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut sockets = Vec::new();
        for socket in listener.incoming().take(64).flatten() {
            sockets.push(socket);
        }
        sockets
    });
    let config = RedisConfig {
        command_timeout: Duration::from_millis(100),
        connect_timeout: Duration::from_millis(300),
        breaker_threshold: 3,
        breaker_cooldown: Duration::from_secs(30),
        ..config(&format!("redis://127.0.0.1:{port}"))
    };
    let store = RedisStore::connect(config).await.unwrap();
    let calls = Calls::default();
    let (app, layer) = app(store.clone(), &calls);

    for n in 1..=10 {
        let start = Instant::now();
        let reply = fetch(&app, "/slow-store").await;
        let elapsed = start.elapsed();
        assert_eq!(reply.text(), format!("/slow-store #{n}"));
        // One read and one inline write, each bounded by the command timeout; a generous
        // margin for a loaded machine.
        assert!(
            elapsed < Duration::from_millis(1500),
            "request {n} took {elapsed:?}"
        );
    }
    assert!(
        store.circuit_open(),
        "consecutive timeouts opened the circuit"
    );
    let stats = layer.stats().snapshot();
    assert_eq!(stats.total.misses, 10);
    assert!(stats.total.store_errors >= 3);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_coalescing_stays_within_each_instance() {
    if !servers::available() {
        return;
    }
    let mut server = RedisServer::start(&[]);
    let calls = Calls::default();
    let (app_a, _) = crate::slow_app(
        RedisStore::connect(config(&server.url())).await.unwrap(),
        &calls,
        Duration::from_millis(200),
    );
    let (app_b, layer_b) = crate::slow_app(
        RedisStore::connect(config(&server.url())).await.unwrap(),
        &calls,
        Duration::from_millis(200),
    );
    server.kill();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let app = if i % 2 == 0 {
                app_a.clone()
            } else {
                app_b.clone()
            };
            tokio::spawn(async move { fetch(&app, "/no-redis").await })
        })
        .collect();
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, http::StatusCode::OK);
        assert!(reply.text().starts_with("/no-redis #"));
    }
    assert_eq!(calls.get(), 2, "one origin call per instance");
    assert!(layer_b.stats().snapshot().total.store_errors > 0);
}
