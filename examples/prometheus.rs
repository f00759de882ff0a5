//! The cache's metrics for Prometheus: an axum app behind a `CacheLayer` that records
//! through the `metrics` facade, and `metrics-exporter-prometheus` rendering them at
//! `/metrics`, with histogram buckets set for the `_seconds` metrics.
//!
//! ```text
//! cargo run --example prometheus --features metrics
//! curl -s localhost:3000/users/42 >/dev/null; curl -s localhost:3000/users/42 >/dev/null
//! curl -s localhost:3000/metrics | grep http_cache_requests_total
//! ```
//!
//! Set `LISTEN` to listen elsewhere (e.g. `LISTEN=127.0.0.1:9000`).

use std::error::Error;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tower_response_cache::observe::CacheMetrics;
use tower_response_cache::{CacheLayer, MemoryStore};

/// Histogram buckets for the cache's timings, in seconds: a memory hit is microseconds, a
/// Redis lookup a millisecond or so, an origin anything up to seconds.
pub const BUCKETS: &[f64] = &[
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// Installs the Prometheus recorder as the process's `metrics` recorder.
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), BUCKETS)?
        .install_recorder()
}

async fn user(Path(id): Path<u64>) -> String {
    format!("user {id}\n")
}

/// The app: `/users/{id}` cached (and measured), `/metrics` for Prometheus (not cached).
pub fn app(handle: PrometheusHandle) -> Router {
    let cache = CacheLayer::new(MemoryStore::new(64 << 20))
        .default_ttl(Duration::from_secs(30))
        .metrics(CacheMetrics::new());
    Router::new()
        .route("/users/{id}", get(user))
        .layer(cache)
        .route("/metrics", get(move || std::future::ready(handle.render())))
}

/// Serves `app` on `listener`, and drains the recorder's histograms every few seconds.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle) -> std::io::Result<()> {
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    axum::serve(listener, app(handle)).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let handle = install_recorder()?;
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    tokio::select! {
        served = serve(listener, handle) => served?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
