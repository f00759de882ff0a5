//! [`CacheLayer`]'s settings, in groups that rustdoc shows as a guide.

// Past 600 lines on purpose: one subject, the builder's settings, each documented with an
// example; more than half of the file is their docs.

use super::*;

/// # Keys: what makes two requests share an entry
impl CacheLayer {
    /// Derives keys with `key_builder` instead of the [`DefaultKeyBuilder`]: a
    /// [`DefaultKeyBuilder`] configured otherwise, or your own [`KeyBuilder`]. The layer's
    /// type stays `CacheLayer` whatever builds its keys. For a closure, [`key_fn`](Self::key_fn)
    /// infers its argument's type.
    pub fn key_builder(mut self, key_builder: impl KeyBuilder) -> Self {
        self.key_builder = Keys::new(key_builder);
        self
    }

    /// Derives keys with a closure over the request head; `None` bypasses the cache for
    /// the request. The argument's type is inferred (`|parts| …`), as it is not for a
    /// closure given to [`key_builder`](Self::key_builder).
    ///
    /// ```
    /// use tower_response_cache::{CacheLayer, MemoryStore, key::CacheKey};
    ///
    /// // One entry per path, whatever the query; never cache `/admin`.
    /// let layer = CacheLayer::new(MemoryStore::new(1 << 20)).key_fn(|parts| {
    ///     let path = parts.uri.path();
    ///     (!path.starts_with("/admin")).then(|| CacheKey::new(path))
    /// });
    /// ```
    pub fn key_fn<F>(self, key_fn: F) -> Self
    where
        F: Fn(&http::request::Parts) -> Option<CacheKey> + Send + Sync + 'static,
    {
        self.key_builder(key_fn)
    }

    /// The layer's namespace: the first segment of every key it reads or writes. Default:
    /// `cache`.
    ///
    /// Namespaces nest, outermost first, and each level owns every key under its prefix:
    ///
    /// | level | set by | a key |
    /// |---|---|---|
    /// | store | the store ([`RedisConfig::namespace`](crate::RedisConfig::namespace), default `trc`; a [`MemoryStore`](crate::MemoryStore) has none: it is the process's) | `trc:` … |
    /// | layer | this method | `trc:cache:` … |
    /// | route | [`RoutePolicy::namespace`](crate::RoutePolicy::namespace), within the layer's | `trc:cache:users:` … |
    /// | request | the [`KeyBuilder`] | `trc:cache:users:GET:example.com/users/1` |
    ///
    /// So the entries of one layer are the keys that start with its namespace (`cache:`),
    /// and those of one route the keys that start with both (`cache:users:`), whatever the
    /// store: clearing a layer or a route removes exactly those. Routes of one layer share
    /// entries only when they share a route namespace; layers share entries only when they
    /// share a namespace. A namespace that is a prefix of another layer's at a `:` (`shop`
    /// and `shop:eu`) contains it: give layers that share a store namespaces that are not.
    /// Keys longer than [`max_key_len`](Self::max_key_len) are hashed after the namespaces,
    /// which stay as they are. A leading `#` is written `%23`: names starting with `#` are
    /// the store's own records (a tag's index, `trc:#tag:…`).
    pub fn namespace(mut self, namespace: impl AsRef<str>) -> Self {
        let namespace = namespace.as_ref();
        self.config().namespace = match namespace.strip_prefix('#') {
            Some(rest) => Arc::from(format!("%23{rest}")),
            None => Arc::from(namespace),
        };
        self
    }

    /// Keys longer than this many bytes (namespace included) are replaced by a readable
    /// prefix and a stable hash. Default: 250.
    pub fn max_key_len(mut self, max_key_len: usize) -> Self {
        // A hashed key is about 100 bytes long; a smaller limit would not be honoured.
        self.config().max_key_len = max_key_len.max(128);
        self
    }
}

/// # Freshness: how long entries answer, and stale ones after
impl CacheLayer {
    /// The TTL of responses that no other source gives one (the last in the order of
    /// precedence). Default: 60 s.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.config().defaults.ttl = Some(ttl);
        self
    }

    /// Stores only responses that some source gives a TTL: the handler, `ttl_fn`, the
    /// origin's headers or the route's rule. For a cache in front of an origin that states
    /// its own freshness.
    pub fn no_default_ttl(mut self) -> Self {
        self.config().defaults.ttl = None;
        self
    }

    /// The TTL of negative responses — 404, 410 and every other 4xx or 5xx the status set
    /// admits — when neither the handler, `ttl_fn` nor the origin gives one; the route's TTL
    /// and the default TTL never apply to them. Routes can override it. Default: none, so a
    /// "not found" is stored only when the origin says for how long (as nginx caches only
    /// 200, 301 and 302 when no status is named), and a resource created after a 404 is
    /// found at once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_response_cache::{CacheLayer, MemoryStore};
    ///
    /// // Shield the origin from floods of lookups for missing pages, for a few seconds.
    /// let cache = CacheLayer::new(MemoryStore::new(64 << 20)).negative_ttl(Duration::from_secs(5));
    /// ```
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.config().defaults.negative_ttl = Some(ttl);
        self
    }

    /// Computes a TTL from each response's head (status, headers, extensions). `Some` wins
    /// over every source but a [`CacheTtl`](crate::CacheTtl) the handler set; `None` falls
    /// through to the origin's headers, the route and the default. `Some(Duration::ZERO)`
    /// keeps the response out of the cache.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_response_cache::{CacheLayer, MemoryStore};
    ///
    /// // Premium payloads for longer; large ones for less.
    /// let layer = CacheLayer::new(MemoryStore::new(64 << 20)).ttl_fn(|parts| {
    ///     if parts.headers.get("x-tier").is_some_and(|tier| tier == "premium") {
    ///         return Some(Duration::from_secs(600));
    ///     }
    ///     let len: u64 = parts.headers.get("content-length")?.to_str().ok()?.parse().ok()?;
    ///     (len > 100_000).then(|| Duration::from_secs(10))
    /// });
    /// ```
    pub fn ttl_fn<F>(mut self, ttl_fn: F) -> Self
    where
        F: Fn(&Parts) -> Option<Duration> + Send + Sync + 'static,
    {
        self.config().ttl_fn = Some(TtlFn::new(ttl_fn));
        self
    }

    /// Whether the origin's `s-maxage` / `max-age` / `Expires` set the TTL (before the route
    /// and default TTLs). Routes can override it. Default: `true`.
    pub fn honor_origin_ttl(mut self, honor: bool) -> Self {
        self.config().defaults.honor_origin = honor;
        self
    }

    /// Turns on heuristic freshness (RFC 9111 §4.2.2): a response without explicit freshness
    /// is fresh for a fraction of the time since its `Last-Modified`, capped — ranked after
    /// the handler's TTL and the origin's freshness, before the route's and the default TTL.
    /// [`HeuristicFreshness`](crate::policy::HeuristicFreshness) says when it applies.
    /// Default: off.
    pub fn heuristic_freshness(mut self, heuristic: crate::policy::HeuristicFreshness) -> Self {
        self.config().heuristic = Some(heuristic);
        self
    }

    /// Targeted cache-control fields (RFC 9213), in order of preference: the first of them
    /// with a valid, non-empty value in a response replaces its `Cache-Control` and
    /// `Expires` for this cache's storing and freshness decisions (`Age` still counts). Each
    /// is a Structured Field dictionary (RFC 9651) of `Cache-Control`'s directives; an
    /// invalid one is ignored as a whole. The fields themselves reach the client unless
    /// [`strip_targeted_cache_control`](Self::strip_targeted_cache_control) says otherwise.
    /// Default: none.
    ///
    /// ```
    /// use http::HeaderName;
    /// use tower_response_cache::policy::CDN_CACHE_CONTROL;
    /// use tower_response_cache::{CacheLayer, MemoryStore};
    ///
    /// // This cache's own field first, then the one for every CDN.
    /// let layer = CacheLayer::new(MemoryStore::new(64 << 20)).targeted_cache_control([
    ///     HeaderName::from_static("myapp-cache-control"),
    ///     CDN_CACHE_CONTROL,
    /// ]);
    /// ```
    pub fn targeted_cache_control<I>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        self.config().targeted = names.into_iter().collect();
        self
    }

    /// Whether the targeted cache-control fields are removed from the responses this layer
    /// sends (a cache they were meant for alone). Default: `false` — forwarded, as RFC 9213
    /// §2.1 asks, for caches downstream that they target too.
    pub fn strip_targeted_cache_control(mut self, strip: bool) -> Self {
        self.config().strip_targeted = strip;
        self
    }

    /// How long past freshness an entry may answer when the origin fails (an error, or
    /// 500/502/503/504; RFC 5861 §4), unless the response's own `stale-if-error` directive
    /// says otherwise. Entries are kept that much longer. Routes can override it. Default:
    /// none (only the directive counts).
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.config().defaults.stale_if_error = Some(window);
        self
    }

    /// How long past freshness an entry is answered at once while one background fetch
    /// refreshes it (RFC 5861 §3), unless the response's own `stale-while-revalidate`
    /// directive says otherwise. Entries are kept that much longer. Routes can override it.
    /// Default: none (only the directive counts).
    ///
    /// The refresh runs on a spawned Tokio task with the request that found the entry
    /// stale.
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.config().defaults.stale_while_revalidate = Some(window);
        self
    }

    /// How long past its freshness (and stale windows) an entry that has a validator
    /// (`ETag` or `Last-Modified`) stays in the store, so that a request finding it stale
    /// sends the origin a conditional request (`If-None-Match` / `If-Modified-Since`) and a
    /// `304 Not Modified` refreshes it without its body being sent again (RFC 9111 §4.3).
    ///
    /// Above zero, responses with a validator are also stored when they have no freshness
    /// at all (`no-cache`, `max-age=0`, or no TTL from any source): every reuse is then
    /// revalidated with the origin first (RFC 9111 §5.2.2.4). Default: zero, as in nginx
    /// and Varnish: `no-cache` responses are not stored and entries leave the store once
    /// their freshness and stale windows are over; stale entries still within a stale
    /// window are revalidated conditionally all the same.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_response_cache::{CacheLayer, MemoryStore};
    ///
    /// let cache = CacheLayer::new(MemoryStore::new(64 << 20)).keep(Duration::from_secs(600));
    /// ```
    pub fn keep(mut self, keep: Duration) -> Self {
        self.config().rules.keep = keep;
        self
    }

    /// Reads the time from `clock` instead of the system's: freshness, ages, stale windows
    /// and the times entries are stored at. For tests about time, a
    /// [`TokioClock`](crate::clock::TokioClock) follows Tokio's paused clock, so that an
    /// entry's expiry takes no real time. The [`values`](Self::values) of the layer read it
    /// too.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use tower::{ServiceBuilder, ServiceExt};
    /// use tower_response_cache::clock::TokioClock;
    /// use tower_response_cache::{CacheLayer, MemoryStore};
    ///
    /// let cache = CacheLayer::new(MemoryStore::new(1 << 20))
    ///     .default_ttl(Duration::from_secs(60))
    ///     .clock(TokioClock::new());
    /// let service = ServiceBuilder::new().layer(cache).service_fn(|_| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hello")))
    /// });
    /// let get = || http::Request::get("/").body(()).unwrap();
    /// service.clone().oneshot(get()).await.unwrap();
    /// tokio::time::sleep(Duration::from_secs(61)).await; // paused: no time passes
    /// let again = service.oneshot(get()).await.unwrap();
    /// assert_eq!(again.headers()["x-cache"], "MISS"); // stale after 60 s by the clock
    /// # }
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.config().clock = Some(Arc::new(clock));
        self
    }
}

/// # Storing: what the cache keeps, and how it writes
impl CacheLayer {
    /// The statuses that may be stored. Default: [`StatusSet::default`].
    pub fn cacheable_statuses(mut self, statuses: StatusSet) -> Self {
        self.config().rules.statuses = statuses;
        self
    }

    /// What to do with responses that set cookies. Default: [`SetCookiePolicy::Skip`].
    pub fn set_cookie(mut self, policy: SetCookiePolicy) -> Self {
        self.config().rules.set_cookie = policy;
        self
    }

    /// Stores responses to requests with `Authorization` even when the response does not
    /// say `public`, `s-maxage` or `must-revalidate`. Only for responses that are the same
    /// for every user (the key does not include the credentials). Default: `false`.
    pub fn allow_authorized(mut self, allow: bool) -> Self {
        self.config().rules.allow_authorized = allow;
        self
    }

    /// The largest body stored, in bytes; larger bodies stream to the client and are not
    /// stored. Default: 1 MiB.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.config().rules.max_body_size = bytes;
        self
    }

    /// How many variants of one URL (responses with `Vary`, one per combination of the
    /// listed request headers; RFC 9111 §4.1) are stored at most. The first variant takes
    /// the key itself; the others go to `max_variants - 1` slots chosen by a hash of the
    /// varying request headers, so that two variants sharing a slot replace each other and
    /// a `Vary: User-Agent` cannot fill the store with one URL. `1` keeps one variant at a
    /// time. Default: 8. Values below 1 are taken as 1.
    pub fn max_variants(mut self, max: usize) -> Self {
        self.config().max_variants = max.max(1);
        self
    }

    /// When entries are written. Default: [`WriteMode::Auto`] (inline on the memory store,
    /// in the background on Redis).
    pub fn write_mode(mut self, mode: WriteMode) -> Self {
        self.config().write_mode = mode;
        self
    }
}

/// # Clients: what a request may ask of the cache
impl CacheLayer {
    /// Whether clients may bypass or refresh the cache. Routes can override it. Default:
    /// [`ClientControl::Allow`].
    pub fn client_control(mut self, control: ClientControl) -> Self {
        self.config().defaults.client_control = control;
        self
    }

    /// The request header that forces a refresh. Default: `x-cache-bypass`.
    pub fn bypass_header(mut self, name: HeaderName) -> Self {
        self.config().bypass_header = name;
        self
    }

    /// How requests with a `Cookie` header use the cache. Routes can override it. Default:
    /// [`RequestCookies::RequireShared`]: they read and store only responses the origin
    /// marks `public` or `s-maxage`.
    pub fn request_cookies(mut self, cookies: RequestCookies) -> Self {
        self.config().defaults.request_cookies = cookies;
        self
    }
}

/// # Routes: settings of their own for some routes
impl CacheLayer {
    /// A rule for the route `pattern`: axum's route pattern (`/users/{id}`, matched against
    /// `MatchedPath`), or a literal path. A later rule for the same pattern replaces the
    /// earlier one.
    pub fn route(mut self, pattern: impl AsRef<str>, policy: RoutePolicy) -> Self {
        let config = self.config();
        warn_unslidable(config, pattern.as_ref(), &policy);
        config
            .routes
            .insert_exact(pattern.as_ref(), policy, &config.funnel.stats);
        self
    }

    /// A layer for one route, to attach to the route itself (its axum `MethodRouter`, or
    /// any service): it caches every request it sees under `policy` — its settings over
    /// this layer's — and shares this layer's store, stats, coalescing and invalidations.
    ///
    /// The policy holds wherever the route ends up: under [`Router::nest`], merged, or
    /// renamed, where a [`route`](Self::route) rule written without the nest prefix would
    /// never match (`MatchedPath` is the whole pattern, `/api/users/{id}`). This layer,
    /// mounted on the router as well, passes such routes on to the attached layer: from
    /// the route's first request on, it neither looks them up, stores, nor counts them.
    /// (On that first request it has looked the key up already: with a shared store, an
    /// entry the route's layer stored under the same key in another process may answer
    /// it, as this layer's settings allow.)
    ///
    /// [`Router::nest`]: https://docs.rs/axum/0.8/axum/struct.Router.html#method.nest
    ///
    /// ```
    /// use std::time::Duration;
    /// use axum::{routing::get, Router};
    /// use tower_response_cache::{CacheLayer, MemoryStore, RoutePolicy};
    ///
    /// let cache = CacheLayer::new(MemoryStore::new(64 << 20));
    /// let users = get(|| async { "a user" })
    ///     .layer(cache.for_route(RoutePolicy::new().ttl(Duration::from_secs(5))));
    /// let api: Router = Router::new().route("/users/{id}", users);
    /// // `/api/users/{id}` is cached for 5 s; the rest of the app with the layer's settings.
    /// let app: Router = Router::new()
    ///     .nest("/api", api)
    ///     .route("/", get(|| async { "home" }))
    ///     .layer(cache);
    /// ```
    pub fn for_route(&self, policy: RoutePolicy) -> Self {
        let mut layer = self.clone();
        warn_unslidable(layer.config(), "(attached)", &policy);
        layer.config().routes.attach(policy);
        layer
    }

    /// A rule for every path that starts with `prefix` and matches no pattern rule; the
    /// longest prefix wins.
    pub fn route_prefix(mut self, prefix: impl AsRef<str>, policy: RoutePolicy) -> Self {
        let config = self.config();
        warn_unslidable(config, prefix.as_ref(), &policy);
        config
            .routes
            .insert_prefix(prefix.as_ref(), policy, &config.funnel.stats);
        self
    }
}

/// A sliding rule on a store that cannot renew entries: its entries keep their TTL.
fn warn_unslidable(config: &Config, route: &str, policy: &RoutePolicy) {
    if policy.sliding && !config.capabilities.touch {
        tracing::warn!(
            route,
            store = config.capabilities.name,
            "sliding expiry asked of a store that cannot renew entries (no touch): the \
             route's entries keep their TTL"
        );
    }
}

/// # Coalescing: one origin call per key at a time
///
/// Concurrent misses of one key make one call to your service: the first request
/// fetches, the others wait (at most [`coalesce_timeout`](Self::coalesce_timeout), 5 s
/// by default, as nginx's `proxy_cache_lock`) and are answered with its complete
/// response (`x-cache: HIT`, `Cache-Status: …; fwd=miss; collapsed`). Refreshes
/// (`no-cache`, the bypass header) are coalesced too, so a flood of them makes one
/// origin call at a time. A response that cannot be stored sends the waiters to the
/// service themselves, and for [`hit_for_miss`](Self::hit_for_miss) (10 s) the key's
/// requests are not queued behind each other (Varnish's hit-for-miss). A waiter never
/// sees a partial body: if the fetching client goes away mid-body, the waiters elect a
/// new leader.
impl CacheLayer {
    /// Whether concurrent misses (and refreshes) of one key share one call to the service:
    /// the first request fetches, the others wait for its complete response. Default: on.
    ///
    /// Waiting uses Tokio's timer (a runtime with `enable_time`, as `#[tokio::main]` has).
    ///
    /// On a [`RedisStore`](crate::RedisStore) the instances coordinate too: the first to
    /// miss takes a short lock (`SET {<key>}#lock <token> NX PX`, in the entry's hash slot),
    /// the others wait for the entry to appear in Redis. The lookup takes the lock along, in
    /// one script, so a miss reaches your service after one round trip, as it would without
    /// the lock. A request that took the lock and then waits for another request's fetch in
    /// its own process hands the lock to that fetch. Without Redis the coalescing stays
    /// within each process; it never turns into errors.
    /// [`RedisConfig { fill_locks: false, .. }`](crate::RedisConfig::fill_locks) keeps
    /// coalescing within each process only, and `coalesce(false)` turns it off.
    pub fn coalesce(mut self, on: bool) -> Self {
        self.config().coalescing.on = on;
        self
    }

    /// How long a request waits for another's fetch before calling the service itself.
    /// Default: 5 s (as nginx's `proxy_cache_lock_timeout`).
    pub fn coalesce_timeout(mut self, timeout: Duration) -> Self {
        let coalescing = &mut self.config().coalescing;
        coalescing.coalescer =
            Arc::new(Coalescer::new(coalescing.coalescer.hit_for_miss(), timeout));
        self
    }

    /// How long after a fetch whose response could not be stored the requests for its key
    /// are not serialized behind each other (Varnish's hit-for-miss); zero to always
    /// serialize. Default: 10 s.
    pub fn hit_for_miss(mut self, duration: Duration) -> Self {
        let coalescing = &mut self.config().coalescing;
        coalescing.coalescer = Arc::new(Coalescer::new(duration, coalescing.coalescer.timeout()));
        self
    }

    /// How many keys are being fetched right now by requests that others wait for (zero
    /// when idle: flights are removed when they end, however they end).
    pub fn in_flight(&self) -> usize {
        self.config
            .coalescer()
            .map_or(0, |coalescer| coalescer.in_flight())
    }
}

/// # Invalidation: unsafe requests, tags, purges
impl CacheLayer {
    /// Whether a successful (2xx or 3xx) response to a method the cache does not know
    /// (`PURGE`, `BAN`, WebDAV's `MKCOL`, …) invalidates the target URI's entries, as
    /// RFC 9111 §4.4 requires of methods whose safety is unknown. POST, PUT, PATCH and
    /// DELETE always do. Turn it off when a catch-all handler (a fallback, a proxied origin)
    /// answers any method with a 2xx: then anyone can evict any entry with `PURGE /page`.
    /// Default: `true`.
    pub fn invalidate_unknown_methods(mut self, invalidate: bool) -> Self {
        self.config().invalidate_unknown_methods = invalidate;
        self
    }

    /// Reads tags (surrogate keys) from the response header `name` as well, its tags
    /// separated as `separator` says. `Surrogate-Key` (space-separated) and `Cache-Tag`
    /// (comma-separated) are read by default; a header named again takes the new
    /// separator.
    pub fn tag_header(mut self, name: HeaderName, separator: TagSeparator) -> Self {
        let headers = &mut self.config().tags.headers;
        headers.retain(|(existing, _)| *existing != name);
        headers.push((name, separator));
        self
    }

    /// Reads tags from no response header: only from [`CacheTags`](crate::CacheTags)
    /// extensions (and the headers named by [`tag_header`](Self::tag_header) after this).
    pub fn no_tag_headers(mut self) -> Self {
        self.config().tags.headers.clear();
        self
    }

    /// Whether the tag headers are removed from the responses to the GET and HEAD requests
    /// the cache takes and from stored entries, so that clients do not see how pages are
    /// tagged. Responses the cache passes on untouched (other methods, disabled routes) keep
    /// them. Default: `true`.
    pub fn strip_tag_headers(mut self, strip: bool) -> Self {
        self.config().tags.strip = strip;
        self
    }

    /// How many tags, and how large, an entry keeps. Default: [`TagLimits::default`] (a tag
    /// of 1024 bytes, 16 KiB of tags, 64 tags).
    pub fn tag_limits(mut self, limits: TagLimits) -> Self {
        self.config().tags.limits = limits;
        self
    }

    /// Answers `PURGE` requests (as Varnish and nginx users send them) in the layer itself:
    /// when `allow` accepts the request, every stored variant of its URL on its host is
    /// purged and the answer is `200` with `{"purged": <entries>}`; otherwise `403`. The
    /// inner service never sees a `PURGE` then. Default: off — `PURGE` goes to the inner
    /// service like any unknown method (see
    /// [`invalidate_unknown_methods`](Self::invalidate_unknown_methods)).
    ///
    /// Decide on something a client cannot forge: the peer address (axum's
    /// `ConnectInfo`), a secret header, a mutual-TLS identity a proxy in front vouches for.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use axum::extract::ConnectInfo;
    /// use tower_response_cache::{CacheLayer, MemoryStore};
    ///
    /// // Purges from this machine only (serve the app with
    /// // `into_make_service_with_connect_info::<SocketAddr>()`).
    /// let cache = CacheLayer::new(MemoryStore::new(64 << 20)).purge_method(|parts| {
    ///     parts
    ///         .extensions
    ///         .get::<ConnectInfo<SocketAddr>>()
    ///         .is_some_and(|ConnectInfo(peer)| peer.ip().is_loopback())
    /// });
    /// ```
    pub fn purge_method<F>(mut self, allow: F) -> Self
    where
        F: Fn(&http::request::Parts) -> bool + Send + Sync + 'static,
    {
        self.config().purge_method = Some(PurgeGate::new(allow));
        self
    }

    /// A handle that purges this layer's entries from application code — by URL, key,
    /// path prefix or tag, hard or soft — as completely as unsafe requests invalidate:
    /// every variant, and no fetch under way writes a purged entry back. Take it once the
    /// layer is configured (a later namespace change is not the handle's).
    ///
    /// ```
    /// use tower_response_cache::{CacheLayer, MemoryStore};
    ///
    /// let cache = CacheLayer::new(MemoryStore::new(64 << 20)).namespace("app");
    /// let handle = cache.handle(); // for axum `State`, `Extension`, a background task…
    /// ```
    pub fn handle(&self) -> CacheHandle {
        CacheHandle::new(Arc::clone(&self.config), self.key_builder.clone())
    }
}

/// # Reporting: what the cache did, to clients and to you
impl CacheLayer {
    /// The response header that says `HIT`, `MISS`, `BYPASS`, `REFRESH` or `UNCACHEABLE`;
    /// `None` to leave it out. Default: `x-cache`.
    pub fn status_header(mut self, name: impl Into<Option<HeaderName>>) -> Self {
        self.config().status_header = name.into();
        self
    }

    /// The cache's name in the RFC 9211 `Cache-Status` header; `None` to leave the header
    /// out. A name that is not a structured-field token is written as a quoted string.
    /// Default: `tower-response-cache`.
    pub fn cache_status_name(mut self, name: Option<&str>) -> Self {
        self.config().cache_status = name.map(|name| Arc::new(CacheStatus::new(name)));
        self
    }

    /// Sends neither the status header (`x-cache`) nor `Cache-Status`: the same as
    /// `status_header(None)` and `cache_status_name(None)`. What the cache did is still
    /// counted, and can still be put on the response as a
    /// [`CacheOutcome`](crate::outcome::CacheOutcome) ([`outcome_extension`](Self::outcome_extension)).
    pub fn no_status_headers(mut self) -> Self {
        let config = self.config();
        config.status_header = None;
        config.cache_status = None;
        self
    }

    /// Whether each response the cache answers (GET and HEAD) carries what the cache did
    /// as a [`CacheOutcome`](crate::outcome::CacheOutcome) extension, for middleware and handlers
    /// around the layer to read. It costs a hit an allocation or two (the extension map),
    /// hence off by default. Default: `false`.
    pub fn outcome_extension(mut self, on: bool) -> Self {
        self.config().outcome_extension = on;
        self
    }

    /// Attaches an [observer](CacheObserver): told of every event of this layer (hits,
    /// misses, stale answers, stores, store errors, purges, removals from the store), with
    /// the route label, the method and timings. Several can be attached; they are called in
    /// order. With none, the request path reads no clock and builds no event value. See
    /// [`CacheObserver`] for what an observer may do, and what happens when one panics.
    ///
    /// ```
    /// use tower_response_cache::observe::{CacheEvent, HitMissRatio, TimingObserver};
    /// use tower_response_cache::{CacheLayer, MemoryStore};
    ///
    /// let ratio = HitMissRatio::new();
    /// let timings = TimingObserver::new();
    /// let cache = CacheLayer::new(MemoryStore::new(64 << 20))
    ///     .observer(ratio.clone())
    ///     .observer(timings.clone())
    ///     .observer(|event: &CacheEvent<'_>| {
    ///         if let (Some(route), Some(lookup)) = (event.route, event.timings.lookup) {
    ///             println!("{route}: {} in {lookup:?}", event.kind);
    ///         }
    ///     });
    /// ```
    pub fn observer(mut self, observer: impl CacheObserver) -> Self {
        let config = self.config();
        let mut list: Vec<Arc<dyn CacheObserver>> = config
            .funnel
            .observers
            .as_ref()
            .map(|observers| observers.list().to_vec())
            .unwrap_or_default();
        list.push(Arc::new(observer));
        let observers = Observers::new(list, config.funnel.stats.clone(), &*config.store);
        config.funnel.observers = Some(observers);
        self
    }

    /// Records the layer's counters, gauges and histograms through the
    /// [`metrics`](https://docs.rs/metrics) facade, to the recorder the application
    /// installed (for Prometheus: `metrics-exporter-prometheus`); the names and labels are
    /// listed at [`CacheMetrics`](crate::observe::CacheMetrics). One more observer ([`observer`](Self::observer)).
    ///
    /// ```
    /// use tower_response_cache::observe::CacheMetrics;
    /// use tower_response_cache::{CacheLayer, MemoryStore};
    ///
    /// let cache = CacheLayer::new(MemoryStore::new(64 << 20)).metrics(CacheMetrics::new());
    /// ```
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, metrics: crate::observe::CacheMetrics) -> Self {
        let config = self.config();
        let recorder = metrics.observer(
            Arc::clone(&config.store),
            Arc::clone(&config.coalescing.coalescer),
        );
        self.observer(recorder)
    }

    /// The level of the `cache` span each looked-up request gets, inside the span it is in
    /// (tower-http's `TraceLayer` request span): with the route, method, store, key (see
    /// [`trace_keys`](Self::trace_keys)), outcome, detail, ttl, age, whether it waited for
    /// another's fetch, and whether its response was stored (fields listed at
    /// [`observe`](crate::observe)). A span no subscriber wants costs a request a level
    /// check. Default: `DEBUG`, as tower-http's request spans.
    pub fn trace_level(mut self, level: tracing::Level) -> Self {
        self.config().trace.level = level;
        self
    }

    /// How the `cache` span shows the key: hashed by default, since keys can carry user
    /// ids ([`TraceKeys`]).
    pub fn trace_keys(mut self, keys: TraceKeys) -> Self {
        self.config().trace.keys = keys;
        self
    }

    /// The layer's counters. Every service made by this layer (and its clones) counts into
    /// them.
    pub fn stats(&self) -> CacheStats {
        self.config.funnel.stats.clone()
    }
}

/// # Beside the responses: values and the store
impl CacheLayer {
    /// A [`ValueCache`](crate::value::ValueCache) on this layer's store, under `namespace`
    /// (beside the layer's own): for what handlers compute. The layer's tag purges
    /// ([`CacheHandle::invalidate_tag`]) reach its values too, so that one purge drops the
    /// pages and the values of one thing; and the layer's observers (those attached before
    /// this call) are told of its events — hits, misses, coalesced waits, stores, store
    /// errors — with `namespace:` as their route.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_response_cache::{CacheLayer, MemoryStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let layer = CacheLayer::new(MemoryStore::new(64 << 20));
    /// let values = layer.values("values");
    /// values
    ///     .set_tagged("user:42", &"alice", Duration::from_secs(60), ["user:42"])
    ///     .await
    ///     .unwrap();
    /// layer.handle().invalidate_tag("user:42").await.unwrap();
    /// assert_eq!(values.get::<String>("user:42").await.unwrap(), None);
    /// # }
    /// ```
    pub fn values(&self, namespace: impl Into<String>) -> crate::value::ValueCache {
        let mut values = crate::value::ValueCache::on(Arc::clone(&self.config.store))
            .namespace(namespace)
            .observed(self.config.funnel.observers.clone());
        if let Some(clock) = &self.config.clock {
            values = values.clock_arc(Arc::clone(clock));
        }
        let prefix = values.prefix().to_owned();
        let mut prefixes = match self.config.value_prefixes.write() {
            Ok(prefixes) => prefixes,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !prefixes.contains(&prefix) {
            prefixes.push(prefix);
        }
        values
    }

    /// The layer's store, for inspection (what it holds, in tests and tools).
    ///
    /// Removing entries through it bypasses the layer: a fetch of the key already under way
    /// may write its (older) response back afterwards, and requests waiting for that fetch
    /// still get it. Purges through [`handle`](Self::handle), and unsafe requests (`POST`,
    /// `PUT`, …) through the layer, have no such race.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.config.store)
    }
}
