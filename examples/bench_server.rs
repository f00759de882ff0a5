//! The server `scripts/bench.sh` measures: three routes behind an optional cache layer.
//!
//! ```text
//! bench_server none|memory|tiered|redis|redis-nolocks|memcached [LISTEN] [REDIS_URL]
//! ```
//!
//! - `/hello`: 1 KiB, `/big`: 64 KiB, `/slow`: 50 ms then 1 KiB; all
//!   `Cache-Control: public, max-age=60`.
//! - `/calls` (never cached): how many times the origin handlers ran, so that the bench can
//!   check that every measured request was a hit.
//!
//! `tiered` is a `TieredStore`: a 512 MiB memory tier in front of Redis (`L1_BYTES` to
//! change it; `L1_BYTES=0` makes every hit an L2 hit).
//!
//! `redis-nolocks` is `redis` with `RedisConfig::fill_locks` off: a miss goes to the origin
//! without taking the cross-process fill lock first.
//!
//! `memcached` is a `MemcachedStore` on the servers in `MEMCACHED` (comma-separated;
//! default `127.0.0.1:11211`).
//!
//! `TAGS=N` tags every cacheable response with `N` tags (`Surrogate-Key: t1 … tN`), to
//! measure what tags cost a write and a hit; `OUTCOME=1` puts the `CacheOutcome` on every
//! response the cache answers.
//!
//! `OBSERVE` measures what observability costs: `observer` attaches an observer that does
//! nothing (the clocks and event values alone); `metrics` records `CacheMetrics` to an
//! installed Prometheus recorder; `tracing` installs a subscriber at `INFO` (the `cache`
//! span, at `DEBUG`, is not wanted); `span` the same with the `cache` span at `INFO`.
//! Unset: no observer, no subscriber.
//!
//! The runtime has one worker thread (`WORKERS` to change it), so that the server can be
//! pinned to one core and the load generator to another. `REDIS_POOL` sets the Redis pool
//! size (default 8; on the 2-core VM, 1 to 8 connections made no difference beyond noise).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{AppendHeaders, IntoResponse};
use axum::routing::get;
use bytes::Bytes;
use tower_response_cache::observe::{CacheEvent, CacheMetrics};
use tower_response_cache::{
    CacheLayer, MemoryStore, RedisConfig, RedisStore, TieredConfig, TieredStore,
};
use tower_response_cache::{MemcachedConfig, MemcachedStore};

#[derive(Clone)]
struct Origin {
    calls: Arc<AtomicU64>,
    small: Bytes,
    big: Bytes,
    /// The `Surrogate-Key` of every cacheable response (`TAGS`), if any.
    tags: Option<header::HeaderValue>,
}

impl Origin {
    fn tags(&self) -> AppendHeaders<Option<(&'static str, header::HeaderValue)>> {
        AppendHeaders(self.tags.clone().map(|tags| ("surrogate-key", tags)))
    }
}

const CACHEABLE: [(header::HeaderName, &str); 2] = [
    (header::CACHE_CONTROL, "public, max-age=60"),
    (header::CONTENT_TYPE, "application/octet-stream"),
];

async fn hello(State(origin): State<Origin>) -> impl IntoResponse {
    origin.calls.fetch_add(1, Ordering::Relaxed);
    (CACHEABLE, origin.tags(), origin.small.clone())
}

async fn big(State(origin): State<Origin>) -> impl IntoResponse {
    origin.calls.fetch_add(1, Ordering::Relaxed);
    (CACHEABLE, origin.tags(), origin.big.clone())
}

async fn slow(State(origin): State<Origin>) -> impl IntoResponse {
    origin.calls.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    (CACHEABLE, origin.tags(), origin.small.clone())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "memory".to_owned());
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let redis_url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let workers = std::env::var("WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(serve(&mode, &listen, &redis_url))
}

async fn serve(
    mode: &str,
    listen: &str,
    redis_url: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let origin = Origin {
        calls: Arc::new(AtomicU64::new(0)),
        small: Bytes::from(vec![b'x'; 1024]),
        big: Bytes::from(vec![b'y'; 64 * 1024]),
        tags: std::env::var("TAGS")
            .ok()
            .and_then(|count| count.parse::<usize>().ok())
            .filter(|count| *count > 0)
            .map(|count| {
                let tags: Vec<String> = (1..=count).map(|i| format!("t{i}")).collect();
                header::HeaderValue::from_str(&tags.join(" "))
            })
            .transpose()?,
    };
    let routes = Router::new()
        .route("/hello", get(hello))
        .route("/big", get(big))
        .route("/slow", get(slow));
    let outcome = std::env::var("OUTCOME").is_ok_and(|on| on == "1");
    let observe = std::env::var("OBSERVE").unwrap_or_default();
    let configure = |layer: CacheLayer| -> Result<CacheLayer, Box<dyn std::error::Error>> {
        let layer = layer.outcome_extension(outcome);
        Ok(match observe.as_str() {
            "" => layer,
            "observer" => layer.observer(|_: &CacheEvent<'_>| {}),
            "metrics" => {
                metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
                layer.metrics(CacheMetrics::new())
            }
            "tracing" | "span" => {
                let subscriber = tracing_subscriber::fmt()
                    .with_max_level(tracing::Level::INFO)
                    .with_writer(std::io::sink)
                    .finish();
                tracing::subscriber::set_global_default(subscriber)?;
                match observe.as_str() {
                    "span" => layer.trace_level(tracing::Level::INFO),
                    _ => layer,
                }
            }
            other => return Err(format!("unknown OBSERVE {other:?}").into()),
        })
    };
    let routes = match mode {
        "none" => routes,
        "memory" => routes.layer(configure(CacheLayer::new(MemoryStore::new(
            512 * 1024 * 1024,
        )))?),
        "tiered" => {
            let config = RedisConfig {
                namespace: "bench-tiered".to_owned(),
                command_timeout: Duration::from_secs(1),
                ..RedisConfig::from_url(redis_url)?
            };
            let store = TieredStore::connect(
                RedisStore::connect(config).await?,
                TieredConfig {
                    l1_capacity: std::env::var("L1_BYTES")
                        .ok()
                        .and_then(|bytes| bytes.parse().ok())
                        .unwrap_or(512 * 1024 * 1024),
                    ..TieredConfig::default()
                },
            )
            .await?;
            routes.layer(configure(CacheLayer::new(store))?)
        }
        "redis" | "redis-nolocks" => {
            let config = RedisConfig {
                fill_locks: mode == "redis",
                namespace: "bench".to_owned(),
                pool_size: std::env::var("REDIS_POOL")
                    .ok()
                    .and_then(|size| size.parse().ok())
                    .unwrap_or(8),
                command_timeout: Duration::from_secs(1),
                ..RedisConfig::from_url(redis_url)?
            };
            routes.layer(configure(CacheLayer::new(
                RedisStore::connect(config).await?,
            ))?)
        }
        "memcached" => {
            let servers =
                std::env::var("MEMCACHED").unwrap_or_else(|_| "127.0.0.1:11211".to_owned());
            let store = MemcachedStore::new(MemcachedConfig {
                namespace: "bench".to_owned(),
                pool_size: std::env::var("MEMCACHED_POOL")
                    .ok()
                    .and_then(|size| size.parse().ok())
                    .unwrap_or(8),
                command_timeout: Duration::from_secs(1),
                ..MemcachedConfig::new(servers.split(',').map(str::trim))
            })?;
            routes.layer(configure(CacheLayer::new(store))?)
        }
        other => {
            let modes = "none, memory, tiered, redis, redis-nolocks or memcached";
            return Err(format!("unknown mode {other:?}: {modes}").into());
        }
    };
    let calls = Arc::clone(&origin.calls);
    let app = routes
        .route(
            "/calls",
            get(move || async move { calls.load(Ordering::Relaxed).to_string() }),
        )
        .with_state(origin);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("bench_server ({mode}) on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
