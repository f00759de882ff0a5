//! The quick start on Redis: two or more instances of this app share one cache.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release --features redis --example redis
//! LISTEN=127.0.0.1:3001 REDIS_URL=redis://127.0.0.1:6379 cargo run --release --features redis --example redis
//! curl -i localhost:3000/users/42     # MISS on the first instance
//! curl -i localhost:3001/users/42     # HIT on the second: it never ran its handler
//! ```
//!
//! The host is part of every key (a page built for one `Host` is never served for
//! another), and `localhost:3000` and `localhost:3001` are two hosts. Behind a load
//! balancer every instance sees the one public name; here, each keys its entries under
//! `PUBLIC_HOST` (default `localhost`) whatever host a request names
//! ([`DefaultKeyBuilder::public_host`]), so the two instances share them as they would there.
//!
//! `REDIS_URL` also takes `redis-cluster://host:port?node=host:port…` and
//! `redis-sentinel://host:port/db?sentinelServiceName=name`. If Redis goes away, requests
//! keep being served by the handlers (and counted as store errors in `/stats`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use tower_response_cache::key::DefaultKeyBuilder;
use tower_response_cache::{CacheLayer, RedisConfig, RedisStore, RoutePolicy};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let config = RedisConfig {
        namespace: "example".to_owned(),
        ..RedisConfig::from_url(&url)?
    };
    let store = RedisStore::connect(config).await?;
    let public_host = std::env::var("PUBLIC_HOST").unwrap_or_else(|_| "localhost".to_owned());
    let cache = CacheLayer::new(store)
        .namespace("app")
        .key_builder(DefaultKeyBuilder::new().public_host(public_host.parse()?))
        .default_ttl(Duration::from_secs(60))
        .route(
            "/users/{id}",
            RoutePolicy::new().ttl(Duration::from_secs(30)),
        );
    let stats = cache.stats();

    let calls = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route(
            "/users/{id}",
            get(
                |State(calls): State<Arc<AtomicU64>>, Path(id): Path<u64>| async move {
                    let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
                    format!(
                        "user {id} (handler call #{n} on pid {})\n",
                        std::process::id()
                    )
                },
            ),
        )
        .with_state(calls)
        .layer(cache)
        .route("/stats", tower_response_cache::axum::stats_route(stats));

    let addr = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "redis example on http://{} (cache at {url})",
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
