//! [`CacheLayer`]: the configuration, and the [`Layer`] that wraps services.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use http::response::Parts;
use tower_layer::Layer;

use crate::clock::Clock;
use crate::coalesce::Coalescer;
use crate::config::WriteMode;
use crate::config::{Config, PurgeGate, TtlFn};
use crate::invalidate::CacheHandle;
use crate::key::{CacheKey, DefaultKeyBuilder, KeyBuilder, Keys};
use crate::observe::{CacheObserver, Observers, TraceKeys};
use crate::outcome::CacheStatus;
use crate::policy::{
    ClientControl, RequestCookies, RoutePolicy, SetCookiePolicy, StatusSet, TagLimits, TagSeparator,
};
use crate::service::CacheService;
use crate::stats::CacheStats;
use crate::store::Store;

mod settings;

/// A [`Layer`] that caches responses; also the builder of its configuration.
///
/// ```
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use tower_response_cache::{CacheLayer, MemoryStore, RoutePolicy};
///
/// let cache = CacheLayer::new(MemoryStore::new(64 * 1024 * 1024))
///     .namespace("app")
///     .default_ttl(Duration::from_secs(30))
///     .route("/users/{id}", RoutePolicy::new().ttl(Duration::from_secs(300)));
/// let stats = cache.stats();
///
/// let app: Router = Router::new()
///     .route("/users/{id}", get(|| async { "user" }))
///     .layer(cache);
/// ```
///
/// Defaults: namespace `cache`, default TTL 60 s, the origin's freshness honoured, clients
/// allowed to bypass ([`ClientControl::Allow`]) with `Cache-Control` or `x-cache-bypass`,
/// `x-cache` and `Cache-Status` response headers, bodies up to 1 MiB, the statuses of
/// [`StatusSet::default`] (4xx and 5xx only with a TTL from the origin, the handler or
/// [`negative_ttl`](Self::negative_ttl)), no `Set-Cookie` responses, no responses to
/// authorized requests (RFC 9111 §3.5 aside), requests with cookies served and stored only
/// for responses the origin marks `public` or `s-maxage` ([`RequestCookies`]), the host in
/// the key, writes inline on the memory store and in the background on Redis
/// ([`WriteMode::Auto`]), concurrent misses of a key coalesced (waits up to 5 s).
#[must_use]
#[derive(Clone)]
pub struct CacheLayer {
    config: Arc<Config>,
    key_builder: Keys,
}

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("config", &self.config)
            .field("key_builder", &self.key_builder)
            .finish()
    }
}

impl CacheLayer {
    /// A layer that keeps responses in `store`, with [`DefaultKeyBuilder`] and the defaults
    /// listed above.
    pub fn new(store: impl Store) -> Self {
        Self {
            key_builder: Keys::new(DefaultKeyBuilder::new()),
            config: Arc::new(Config::new(Arc::new(store))),
        }
    }
}

impl CacheLayer {
    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService::new(inner, Arc::clone(&self.config), self.key_builder.clone())
    }
}
