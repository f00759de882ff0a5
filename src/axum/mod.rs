//! axum integration (feature `axum`, on by default).
//!
//! Route rules match axum's `MatchedPath` (see [`CacheLayer::route`](crate::CacheLayer::route));
//! this module adds a ready handler for the stats, and the [`admin_router`] for operators
//! (purges and stats behind a bearer token).
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_response_cache::{CacheLayer, MemoryStore};
//!
//! let cache = CacheLayer::new(MemoryStore::new(64 << 20));
//! let app: Router = Router::new()
//!     .route("/hello", get(|| async { "hello" }))
//!     .layer(cache.clone())
//!     .route("/stats", tower_response_cache::axum::stats_route(cache.stats()));
//! ```

mod admin;

pub use admin::{MAX_PURGE_ITEMS, PurgeFailure, PurgeReply, PurgeRequest, admin_router};

use axum::Json;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};

use crate::stats::{CacheStats, StatsSnapshot};

/// A `GET` route that answers with the [`StatsSnapshot`] as JSON
/// (`Cache-Control: no-store`).
pub fn stats_route<S>(stats: CacheStats) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    get(move || {
        let stats = stats.clone();
        async move { stats.snapshot() }
    })
}

impl IntoResponse for StatsSnapshot {
    fn into_response(self) -> Response {
        ([(http::header::CACHE_CONTROL, "no-store")], Json(self)).into_response()
    }
}
