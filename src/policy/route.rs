//! Per-route rules.
//!
//! A [`RoutePolicy`] overrides the layer's settings for the requests of one route. Rules are
//! registered on the layer by route pattern ([`CacheLayer::route`](crate::CacheLayer::route),
//! matched against axum's `MatchedPath`, e.g. `/users/{id}`, or against the literal path
//! outside axum) or by path prefix ([`CacheLayer::route_prefix`](crate::CacheLayer::route_prefix),
//! the longest prefix wins). A pattern rule wins over a prefix rule.
//!
//! ```
//! use std::time::Duration;
//! use tower_response_cache::{CacheLayer, ClientControl, MemoryStore, RoutePolicy};
//!
//! let layer = CacheLayer::new(MemoryStore::new(64 << 20))
//!     .route("/users/{id}", RoutePolicy::new().ttl(Duration::from_secs(30)).sliding(true))
//!     .route("/health", RoutePolicy::disabled())
//!     .route_prefix("/static/", RoutePolicy::new()
//!         .ttl(Duration::from_secs(3600))
//!         .client_control(ClientControl::Deny)
//!         .namespace("assets"));
//! ```

use std::sync::Arc;
use std::time::Duration;

use super::request::ClientControl;
use super::response::RequestCookies;

/// Settings for one route; every setting left unset falls back to the layer's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePolicy {
    pub(crate) enabled: bool,
    pub(crate) ttl: Option<Duration>,
    pub(crate) sliding: bool,
    pub(crate) client_control: Option<ClientControl>,
    pub(crate) namespace: Option<Arc<str>>,
    pub(crate) honor_origin: Option<bool>,
    pub(crate) stale_if_error: Option<Duration>,
    pub(crate) stale_while_revalidate: Option<Duration>,
    pub(crate) request_cookies: Option<RequestCookies>,
    pub(crate) negative_ttl: Option<Duration>,
}

impl Default for RoutePolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: None,
            sliding: false,
            client_control: None,
            namespace: None,
            honor_origin: None,
            stale_if_error: None,
            stale_while_revalidate: None,
            request_cookies: None,
            negative_ttl: None,
        }
    }
}

impl RoutePolicy {
    /// A rule that caches with the layer's settings until you change some.
    pub fn new() -> Self {
        Self::default()
    }

    /// A rule that keeps the route out of the cache: its requests pass through untouched.
    pub fn disabled() -> Self {
        Self::new().enabled(false)
    }

    /// Whether the route is cached. Default: `true`.
    #[must_use]
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// The route's TTL, used when neither the handler, the layer's `ttl_fn` nor the origin's
    /// headers give one. Default: the layer's default TTL.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The TTL of this route's negative responses (404, 410, every other 4xx or 5xx the
    /// status set admits) when neither the handler, `ttl_fn` nor the origin gives one.
    /// Default: the layer's (none: such responses are not stored on a configured TTL).
    #[must_use]
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    /// Sliding expiry: every hit keeps the entry for another full TTL. Default: `false`.
    ///
    /// The entry's `Age` still grows from when it was stored; only its expiry moves. A
    /// store that cannot renew entries ([`Capabilities::touch`](crate::store::Capabilities::touch)
    /// false) keeps them for their TTL, as on any other route; the layer warns when the rule
    /// is added.
    #[must_use]
    pub fn sliding(mut self, sliding: bool) -> Self {
        self.sliding = sliding;
        self
    }

    /// Whether clients of this route may bypass or refresh the cache. Default: the layer's.
    #[must_use]
    pub fn client_control(mut self, control: ClientControl) -> Self {
        self.client_control = Some(control);
        self
    }

    /// The route's own key namespace, within the layer's (`cache:users:GET:…`; see
    /// [`CacheLayer::namespace`](crate::CacheLayer::namespace)). Routes with the same
    /// namespace share entries for the same keys; a route with its own namespace shares
    /// with none. Default: none (the route's keys are the layer's: `cache:GET:…`).
    #[must_use]
    pub fn namespace(mut self, namespace: impl AsRef<str>) -> Self {
        self.namespace = Some(Arc::from(namespace.as_ref()));
        self
    }

    /// How long past freshness an entry of this route may answer when the origin fails (an
    /// error, or 500/502/503/504), unless the response's own `stale-if-error` says
    /// otherwise. Default: the layer's (none).
    #[must_use]
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = Some(window);
        self
    }

    /// How long past freshness an entry of this route is answered at once while a
    /// background fetch refreshes it, unless the response's own `stale-while-revalidate`
    /// says otherwise. Default: the layer's (none).
    #[must_use]
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = Some(window);
        self
    }

    /// How requests with a `Cookie` header use the cache on this route: set
    /// [`RequestCookies::Ignore`] when the route's responses never depend on cookies.
    /// Default: the layer's ([`RequestCookies::RequireShared`]).
    #[must_use]
    pub fn request_cookies(mut self, cookies: RequestCookies) -> Self {
        self.request_cookies = Some(cookies);
        self
    }

    /// Whether the origin's `s-maxage` / `max-age` / `Expires` set the TTL on this route.
    /// With `false` the route's TTL applies whatever the origin says (the origin's
    /// `no-store`, `private` and the other storability rules still apply). Default: the
    /// layer's (`true`).
    #[must_use]
    pub fn honor_origin_ttl(mut self, honor: bool) -> Self {
        self.honor_origin = Some(honor);
        self
    }
}
