//! Observers on a real Redis: the events of hits and misses, then a killed server's store
//! errors (operation and kind) and its open circuit breaker in the store's gauges — while
//! every request is still answered.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use tower_response_cache::RedisConfig;
use tower_response_cache::observe::{CacheEvent, EventKind, StoreOperation};
use tower_response_cache::{CacheLayer, RedisStore, WriteMode, store::Store};

use crate::servers::RedisServer;
use crate::{Calls, fetch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observers_see_redis_hits_misses_and_a_dead_server_s_errors() {
    if !crate::servers::available() {
        return;
    }
    let mut server = RedisServer::start(&[]);
    let store = RedisStore::connect(RedisConfig {
        namespace: "observe".into(),
        command_timeout: Duration::from_millis(500),
        breaker_threshold: 3,
        breaker_cooldown: Duration::from_secs(30),
        ..RedisConfig::from_url(&server.url()).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(store.capabilities().name, "redis");
    assert_eq!(store.gauges().open_breakers, Some(0));
    let events: Arc<Mutex<Vec<EventKind>>> = Arc::default();
    let seen = Arc::clone(&events);
    let calls = Calls::default();
    let layer = CacheLayer::new(store.clone())
        .write_mode(WriteMode::Inline)
        .observer(move |event: &CacheEvent<'_>| {
            assert_eq!(event.route, Some("/{*path}"));
            seen.lock().unwrap().push(event.kind);
        });
    let stats = layer.stats();
    let app = Router::new()
        .route(
            "/{*path}",
            get(|State(calls): State<Calls>| async move { format!("#{}", calls.hit()) }),
        )
        .with_state(calls.clone())
        .layer(layer);
    let take = || std::mem::take(&mut *events.lock().unwrap());

    fetch(&app, "/a").await;
    let kinds: Vec<&str> = take().iter().map(EventKind::as_str).collect();
    assert_eq!(kinds, ["stored", "miss"]);
    assert_eq!(fetch(&app, "/a").await.x_cache(), "HIT");
    assert!(matches!(take()[..], [EventKind::Hit { .. }]));

    server.kill();
    let start = Instant::now();
    // Requests go on; the store's failures are told, then the breaker opens.
    while store.gauges().open_breakers != Some(1) {
        let reply = fetch(&app, "/b").await;
        assert_eq!(reply.status, http::StatusCode::OK);
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the breaker opened"
        );
    }
    let errors: Vec<(StoreOperation, &str)> = take()
        .into_iter()
        .filter_map(|kind| match kind {
            EventKind::StoreError { operation, kind } => Some((operation, kind.as_str())),
            _ => None,
        })
        .collect();
    assert!(!errors.is_empty());
    assert_eq!(errors[0].0, StoreOperation::Read, "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|(_, kind)| ["unavailable", "timeout"].contains(kind)),
        "{errors:?}"
    );
    assert_eq!(
        errors.len() as u64,
        stats.snapshot().total.store_errors,
        "every store error the stats counted was told"
    );
}
