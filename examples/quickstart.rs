//! The quick start: an axum app on 127.0.0.1:3000 behind a `CacheLayer` on the in-memory
//! store.
//!
//! ```text
//! cargo run --release --example quickstart
//! curl -i localhost:3000/users/42          # x-cache: MISS
//! curl -i localhost:3000/users/42          # x-cache: HIT, Age: 0
//! curl -i -H 'x-cache-bypass: 1' localhost:3000/users/42   # x-cache: REFRESH
//! curl -s localhost:3000/stats
//! ```
//!
//! Set `LISTEN` to listen elsewhere (e.g. `LISTEN=127.0.0.1:8080`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Router};
use tower_response_cache::{CacheLayer, CacheTtl, MemoryStore, RoutePolicy};

/// How many times the handlers ran: a hit does not move it.
#[derive(Clone, Default)]
struct Calls(Arc<AtomicU64>);

impl Calls {
    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis())
        .unwrap_or_default()
}

async fn hello(State(calls): State<Calls>) -> String {
    format!(
        "hello (handler call #{}, at {} ms)\n",
        calls.next(),
        now_millis()
    )
}

async fn user(State(calls): State<Calls>, Path(id): Path<u64>) -> String {
    format!(
        "user {id} (handler call #{}, at {} ms)\n",
        calls.next(),
        now_millis()
    )
}

/// Dynamic TTL from the handler: a quote is good for 5 seconds.
async fn quote(State(calls): State<Calls>) -> impl IntoResponse {
    (
        Extension(CacheTtl(Duration::from_secs(5))),
        format!(
            "quote 42.{:02} (handler call #{})\n",
            now_millis() % 100,
            calls.next()
        ),
    )
}

/// The origin's own `Cache-Control` wins over the route and default TTLs.
async fn news(State(calls): State<Calls>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=120")],
        format!("news (handler call #{})\n", calls.next()),
    )
}

/// Never stored: private to one user.
async fn me(State(calls): State<Calls>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "private")],
        format!("your account (handler call #{})\n", calls.next()),
    )
}

/// Computed TTL: premium payloads are kept longer than the rest.
async fn report(State(calls): State<Calls>, Path(tier): Path<String>) -> impl IntoResponse {
    (
        [("x-tier", tier.clone())],
        format!("{tier} report (handler call #{})\n", calls.next()),
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let cache = CacheLayer::new(MemoryStore::new(64 * 1024 * 1024))
        .namespace("quickstart")
        .default_ttl(Duration::from_secs(60))
        .route(
            "/users/{id}",
            RoutePolicy::new().ttl(Duration::from_secs(30)),
        )
        .route("/health", RoutePolicy::disabled())
        .ttl_fn(|parts| match parts.headers.get("x-tier") {
            Some(tier) if tier == "premium" => Some(Duration::from_secs(600)),
            Some(_) => Some(Duration::from_secs(10)),
            None => None,
        });
    let stats = cache.stats();

    let app = Router::new()
        .route("/", get(hello))
        .route("/users/{id}", get(user))
        .route("/quote", get(quote))
        .route("/news", get(news))
        .route("/me", get(me))
        .route("/reports/{tier}", get(report))
        .route("/health", get(|| async { "ok\n" }))
        .layer(cache)
        .route("/stats", tower_response_cache::axum::stats_route(stats))
        .with_state(Calls::default());

    let addr = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("quickstart listening on http://{}", listener.local_addr()?);
    println!("try: curl -i http://{addr}/users/42   (twice), then with -H 'x-cache-bypass: 1'");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
