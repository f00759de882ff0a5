//! An HTTP response cache as one [tower] layer.
//!
//! [`CacheLayer`] wraps any `Service<http::Request<B>>` that returns `http::Response`s —
//! an axum `Router`, a hyper service, a reverse proxy — and answers repeated requests from a
//! [`Store`](store::Store) without running the service. It keeps the inner service's error
//! type, streams bodies, and is `Clone + Send + Sync`.
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower_response_cache::{CacheLayer, MemoryStore, RoutePolicy};
//!
//! let cache = CacheLayer::new(MemoryStore::new(64 * 1024 * 1024))
//!     .namespace("app")
//!     .default_ttl(Duration::from_secs(60))
//!     .route("/users/{id}", RoutePolicy::new().ttl(Duration::from_secs(5)));
//! let stats = cache.stats();
//!
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(|| async { "a user" }))
//!     .layer(cache);
//! # let _ = (app, stats);
//! ```
//!
//! What it does, in order ([`CacheService`] has the details):
//!
//! - **Keys** from method class (HEAD shares GET), path and normalized query through a
//!   [`KeyBuilder`](key::KeyBuilder), under a namespace.
//! - **Client control**: `Cache-Control: no-store` bypasses, `no-cache` / `max-age=0` /
//!   `Pragma: no-cache` revalidate with the origin, `x-cache-bypass` refreshes,
//!   `only-if-cached` answers 504 on a miss — unless a [`ClientControl`] policy says
//!   otherwise.
//! - **Variants** (RFC 9111 §4.1): responses with `Vary` are stored side by side, at most
//!   [`max_variants`](CacheLayer::max_variants) per URL.
//! - **Revalidation** (RFC 9111 §4.3): a stale entry with a validator is fetched
//!   conditionally and a `304` refreshes it without its body; `stale-while-revalidate` and
//!   `stale-if-error` (RFC 5861); unsafe methods invalidate (§4.4).
//! - **Safe storing** by default ([`policy`]): GET only, cacheable statuses, no
//!   `no-store` / `private` / `no-cache`, no `Vary: *`, no `Set-Cookie`, no `Authorization`
//!   (RFC 9111 §3.5 aside), bodies up to 1 MiB.
//! - **TTL** from the handler ([`CacheTtl`]), a `ttl_fn`, the origin's `Cache-Control` /
//!   `Expires`, the route ([`RoutePolicy`]) or the layer default; sliding per route.
//! - **Streaming**: a miss streams to the client while a capped copy is kept and stored when
//!   the body completes (in the background by default).
//! - **Hits** carry `Age`, `x-cache: HIT` and an RFC 9211 `Cache-Status`; a memory hit
//!   shares the stored bytes, it does not copy them.
//! - **Invalidation** from application code ([`CacheHandle`]): by URL, key, path prefix or
//!   tag ([`CacheTags`], `Surrogate-Key`, `Cache-Tag`), hard or soft, complete (every
//!   variant, no fetch under way writes back).
//! - **Stats** per layer and per route ([`CacheStats`](stats::CacheStats)).
//!
//! A store failure never fails a request: it is counted and the service answers.
//!
//! [tower]: https://docs.rs/tower

mod body;
mod coalesce;
pub mod codec;
mod config;
mod entry;
mod fill;
mod future;
mod invalidate;
pub mod key;
mod layer;
pub mod observe;
pub mod outcome;
pub mod policy;
mod routes;
mod service;
pub mod stats;
pub mod store;
pub mod value;

#[cfg(feature = "axum")]
pub mod axum;

// Every public item has one path: the layer and what a user names in the first hour here,
// the vocabulary of each part of the crate in that part's module.
pub use body::CacheBody;
pub use config::{DEFAULT_BYPASS_HEADER, DEFAULT_STATUS_HEADER, WriteMode};
pub use entry::CachedResponse;
pub use future::ResponseFuture;
pub use invalidate::CacheHandle;
pub use layer::CacheLayer;
pub use policy::request::ClientControl;
pub use policy::response::CacheTtl;
pub use policy::route::RoutePolicy;
pub use policy::tags::CacheTags;
pub use service::CacheService;
#[cfg(feature = "memcached")]
pub use store::memcached::{MemcachedConfig, MemcachedStore};
pub use store::memory::MemoryStore;
#[cfg(feature = "redis")]
pub use store::redis::{RedisConfig, RedisStore};
#[cfg(feature = "redis")]
pub use store::tiered::{TieredConfig, TieredStore};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The fuzz targets' bodies (`fuzz/`), for the fuzzer and for the stable replay of its
/// corpus (`tests/fuzz_corpus.rs`). Not part of the API.
#[cfg(feature = "__fuzz")]
#[doc(hidden)]
#[path = "fuzzing.rs"]
pub mod __fuzz;

/// Entry points for the crate's own benchmarks (`benches/hit.rs`): the policy decisions the
/// layer makes on every request, callable without a service around them. Not part of the
/// API: they may change in any release.
#[doc(hidden)]
pub mod __bench {
    use std::time::{Duration, SystemTime};

    use http::{HeaderMap, StatusCode};

    use crate::DEFAULT_BYPASS_HEADER;
    use crate::policy::cache_control::CacheControl;
    use crate::policy::response::{
        RequestFacts, StorageRules, TtlSources, check_storable, initial_age, origin_lifetime,
        ttl_from_sources,
    };
    use crate::policy::{ClientControl, NotStoredReason};

    /// What the layer reads of a request's headers: its directives and bypass header
    /// under [`ClientControl::Allow`] (the decision goes through `black_box`, so that it is
    /// not optimized away).
    pub fn request_policy(headers: &HeaderMap) {
        let mode = crate::policy::request::request_mode(
            headers,
            &ClientControl::Allow,
            &DEFAULT_BYPASS_HEADER,
        );
        std::hint::black_box(mode);
    }

    /// What the layer decides for a response to a GET: stored or not, and for how long
    /// (with the layer's defaults: honour the origin, 60 s default TTL).
    pub fn response_policy(
        status: StatusCode,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Result<Duration, NotStoredReason> {
        let cc = CacheControl::from_headers(headers);
        check_storable(
            status,
            headers,
            &cc,
            RequestFacts::default(),
            &StorageRules::default(),
            true,
        )?;
        let sources = TtlSources {
            explicit: None,
            origin: origin_lifetime(headers, &cc, now),
            configured: Some(Duration::from_secs(60)),
        };
        ttl_from_sources(sources, initial_age(headers, now))
    }

    /// Whether a stored 200 with `stored` headers answers a request with `request` headers
    /// with a 304 (RFC 9110 §13.1).
    pub fn not_modified(stored: &HeaderMap, request: &HeaderMap) -> bool {
        crate::policy::conditional::not_modified(StatusCode::OK, stored, request)
    }
}
