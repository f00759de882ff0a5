//! What may be looked up, what may be stored, and for how long — as pure functions over
//! headers, so that every rule can be tested against fixtures.
//!
//! - Requests: the client's `Cache-Control`, `Pragma` and bypass header, filtered by a
//!   [`ClientControl`] policy ([`BypassReason`], [`RefreshReason`]).
//! - Responses: whether a response may be stored ([`NotStoredReason`]), and its TTL
//!   ([`CacheTtl`], [`HeuristicFreshness`]).
//! - Routes: per-route rules ([`RoutePolicy`]).
//! - Tags: the tags (surrogate keys) an entry can be purged by
//!   ([`CacheTags`], [`TagLimits`]).
//! - Targeted cache-control fields such as [`CDN_CACHE_CONTROL`] (RFC 9213).
//! - `vary` and `headers`: how a stored variant is selected (RFC 9111 §4.1), and which
//!   header fields an entry keeps and how a `304` updates them (RFC 9111 §3.2).
//!
//! The HTTP conformance rules below beyond the basics — any final status with explicit
//! freshness, `must-understand`, targeted fields, the three date formats, heuristic
//! freshness, ranges, qualified `no-cache` / `private`, normalized variants, `HEAD` updates,
//! interim responses — are each tested through the layer and through the caching reverse
//! proxy (`examples/reverse_proxy.rs`, see the [crate docs](crate#a-caching-reverse-proxy)).
//!
//! # How it decides
//!
//! ## Requests
//!
//! Under the route's [`ClientControl`] (default [`Allow`](ClientControl::Allow)):
//!
//! | request (`Cache-Control`, or the header named) | outcome | `x-cache` |
//! |---|---|---|
//! | plain GET/HEAD | lookup; fresh entry → hit | `HIT` / `MISS` |
//! | `no-store` | don't read, don't write | `BYPASS` |
//! | `no-cache`, `max-age=0`, `Pragma: no-cache` | validated (below) | `REVALIDATED` / `REFRESH` |
//! | `x-cache-bypass: …` | don't read; fetch and store | `REFRESH` |
//! | `max-age=N` | an entry older than N s is refreshed | `REFRESH` |
//! | `only-if-cached` | `504` on a miss | `MISS` |
//! | `Range: bytes=…` (GET), `If-Range` | see [Ranges](#ranges) | `HIT` / `MISS` |
//! | other methods, disabled routes | untouched | — |
//!
//! Validated means: sent to the origin as a conditional request when the entry has a
//! validator (a `304` answers `REVALIDATED`), else fetched and stored (`REFRESH`).
//! [`ClientControl::Deny`] ignores all of the above (as nginx and Varnish do);
//! [`ClientControl::Secret`] honours them only on requests whose bypass header
//! ([`CacheLayer::bypass_header`](crate::CacheLayer::bypass_header)) carries the secret.
//!
//! ## Responses
//!
//! A response is stored when all of these hold:
//!
//! - the request was a GET (a `HEAD` that misses is answered, and stores nothing);
//! - the status is one of 200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501
//!   ([`StatusSet::default`];
//!   [`CacheLayer::cacheable_statuses`](crate::CacheLayer::cacheable_statuses) changes it),
//!   or explicit freshness allows another (below);
//! - the response has no `no-store`, `private`, `no-cache` or `Vary: *`;
//! - it has no `Set-Cookie` ([`SetCookiePolicy`]: skip by default, or strip or store);
//! - the request had no `Authorization`, unless the response says `public`, `s-maxage` or
//!   `must-revalidate` (RFC 9111 §3.5), or you opt in
//!   ([`CacheLayer::allow_authorized`](crate::CacheLayer::allow_authorized));
//! - the request had no `Cookie`, unless the response says `public` or `s-maxage`, or the
//!   route declares [`RequestCookies::Ignore`] (see [Cookies](#cookies));
//! - the body fits [`max_body_size`](crate::CacheLayer::max_body_size) (1 MiB), and its
//!   framing is sound (a malformed response is not stored);
//! - some TTL source gives it a freshness above zero ([Freshness](#freshness)).
//!
//! Otherwise the response says `x-cache: UNCACHEABLE` and `Cache-Status: …; detail=<reason>`,
//! and the reason is counted ([`NotStoredReason`]). With
//! [`keep(…)`](crate::CacheLayer::keep) above zero, a response with an `ETag` or
//! `Last-Modified` is also stored when it is `no-cache` or has no freshness: it is then
//! revalidated with the origin before each use. Hop-by-hop header fields are never stored.
//!
//! A negative status (404, 410, any 4xx or 5xx in the set) takes no route or default TTL:
//! only the origin's freshness, the handler's [`CacheTtl`], `ttl_fn` or a `negative_ttl`
//! ([layer](crate::CacheLayer::negative_ttl) or [route](RoutePolicy::negative_ttl); none by
//! default, as nginx caches only 200, 301 and 302 unless told), so that a page created
//! after a 404 is found at once.
//!
//! Any other final status — a `302`, `303`, `307`, `500`, `503`, an unknown `299` or `599`;
//! never a `1xx`, `206` or `304` — is stored when the origin gives it explicit freshness
//! (`max-age`, `s-maxage`, `Expires`) and reused for exactly that long (RFC 9111 §3, §4.2):
//! the status set only decides what a route or default TTL may store. With
//! `must-understand` (§5.2.2.3) a status RFC 9110 defines is stored despite `no-store`, and
//! one it does not define is never stored. An interim response (`103 Early Hints`, `102`;
//! RFC 9110 §15.2) is never stored or replayed, even when the status set names it.
//!
//! A qualified `no-cache="Set-Cookie"` or `private="X-User"` (§5.2.2.4, §5.2.2.7)
//! restricts only the fields it lists: the response is stored without them, so they are
//! never replayed (the client of the miss still gets them).
//!
//! ## Freshness
//!
//! The TTL comes from the first of these that gives one:
//!
//! 1. the handler's [`CacheTtl`] response extension;
//! 2. the layer's [`ttl_fn`](crate::CacheLayer::ttl_fn), over the response's head;
//! 3. the origin's `s-maxage`, `max-age` or `Expires`, less its `Age`
//!    ([`honor_origin_ttl`](crate::CacheLayer::honor_origin_ttl), per route too);
//! 4. heuristic freshness, when it is on (below);
//! 5. the route's TTL ([`RoutePolicy::ttl`]);
//! 6. the layer's [`default_ttl`](crate::CacheLayer::default_ttl).
//!
//! A route can make its expiry sliding ([`RoutePolicy::sliding`]).
//! [`CacheLayer::heuristic_freshness`](crate::CacheLayer::heuristic_freshness) with
//! [`HeuristicFreshness::new()`](HeuristicFreshness::new) (off by default; on in the reverse
//! proxy) gives a response without explicit freshness 10% of the time since its
//! `Last-Modified`, at most a day (RFC 9111 §4.2.2): only for the statuses RFC 9110 §15.1
//! calls heuristically cacheable (or with `public`), never with `no-cache`,
//! `must-revalidate`, `proxy-revalidate` or `Pragma: no-cache`.
//!
//! Dates (`Expires`, `Date`, `Last-Modified`, `If-Modified-Since`) are read in all three
//! formats of RFC 9110 §5.6.7 — IMF-fixdate, RFC 850 (two-digit years within 50 years
//! ahead) and asctime — with names in any case; an invalid `Expires` means already expired.
//! Of an `Age` list or several `Age` lines, the first value counts (RFC 9111 §5.1).
//!
//! [`CacheLayer::targeted_cache_control`](crate::CacheLayer::targeted_cache_control) names
//! targeted fields (RFC 9213), in order — say `MyApp-Cache-Control`, then
//! [`CDN-Cache-Control`](CDN_CACHE_CONTROL): the first with a valid Structured Field
//! dictionary replaces `Cache-Control` and `Expires` for this cache's decisions (`Age` still
//! counts; an invalid one is ignored as a whole), so an origin can say `no-store` to
//! browsers and `max-age=600` to this cache. The fields reach the client unless
//! `strip_targeted_cache_control(true)`. None by default; the reverse proxy reads
//! `CDN-Cache-Control`.
//!
//! ## Vary: one entry per variant
//!
//! A response with `Vary` (RFC 9111 §4.1) is stored as one entry per variant, selected by
//! the normalized values of the varied request headers, at most
//! [`max_variants`](crate::CacheLayer::max_variants) per URL (8) in hashed slots; `Vary: *`
//! is never stored. Normalizing removes list whitespace for every field, and for
//! `Accept-Encoding` and `Accept-Language` also case, order and the spelling of weights
//! (`en-US,en;q=0.9` and `en;q=0.90, EN-us` share a variant). The values of
//! `Authorization`, `Proxy-Authorization` and `Cookie` in a variant are stored as a hash
//! (128 bits of SHA-256), never as written, as they are in keys.
//!
//! ## Conditional requests
//!
//! A request with `If-None-Match` (weak comparison, lists, `*`), or else with
//! `If-Modified-Since`, is answered from a stored entry with a `304` carrying the headers
//! RFC 9110 §15.4.5 lists.
//!
//! ## Ranges
//!
//! A `GET` with `Range: bytes=…` (RFC 9110 §14) is answered from a stored complete `200` —
//! one range as `206` with `Content-Range` (`0-9`, `95-`, `-3`), several as
//! `multipart/byteranges`, none within the body as `416` with
//! `Content-Range: bytes */length`. `If-Range` applies the range only when its strong
//! `ETag` or date matches the stored response; otherwise, and for a header that does not
//! parse or asks too much (over 100 ranges, overlaps), the whole response answers. A miss
//! with `Range` goes to the origin as it is, and a `206` from the origin is never stored
//! and never replaces a stored whole.
//!
//! ## Stale entries
//!
//! A stale entry with a validator is revalidated with the origin (RFC 9111 §4.3): fetched
//! with `If-None-Match` / `If-Modified-Since`, once for all the requests that find it stale
//! (coalesced); a `304` updates its headers and freshness (its `Date`, or its arrival time
//! without one) and the stored body answers (`x-cache: REVALIDATED`). The same happens for a
//! request's `no-cache` / `max-age=0`. A `304` or full response that no longer allows
//! storing removes the entry; a `304` for another representation than the stored one
//! removes it and answers `502`. A `200` to a `HEAD` the cache forwarded (RFC 9111 §4.3.5)
//! updates the stored response's fields as a `304` would when it describes it (its `ETag` /
//! `Last-Modified` match, and its `Content-Length` if it has one), and removes it when it
//! does not.
//!
//! Within its `stale-while-revalidate` window (RFC 5861 §3: the response's directive, or
//! the layer's or route's setting) a stale entry answers at once while one background
//! request (coalesced) revalidates or refreshes it. Within its `stale-if-error` window
//! (RFC 5861 §4, the same way) it answers (`x-cache: STALE`) when the origin fails: an error,
//! or a 500, 502, 503 or 504. With [`keep`](crate::CacheLayer::keep), stale entries with a
//! validator stay that long for revalidation (off by default, as in nginx and Varnish).
//!
//! The layer's and routes' stale windows do not apply to responses that say
//! `must-revalidate`, `proxy-revalidate` or `s-maxage`, and nothing serves a `no-cache`
//! response stale. A stale window in the response itself (`s-maxage=1,
//! stale-while-revalidate=59`, the CDN idiom) is honoured even with `s-maxage`: the origin
//! granted it.
//!
//! ## Keys
//!
//! `namespace:METHOD:host/path?sorted-query`, plus the request headers you name: the
//! [`key`](crate::key) module has the rules (the host, credentials hashed, normalization),
//! and [`CacheLayer::namespace`](crate::CacheLayer::namespace) how namespaces nest. **The rule
//! for your own headers:** a request header that changes the response must be in the key
//! ([`DefaultKeyBuilder::header`](crate::key::DefaultKeyBuilder::header)) or named by the
//! response's `Vary`; otherwise the first client to send it decides what everyone gets
//! (cache poisoning). Strip such headers in front of the cache if the application should
//! not see them.
//!
//! ## Routes
//!
//! [`CacheLayer::route("/users/{id}", …)`](crate::CacheLayer::route) matches axum's
//! `MatchedPath`, which is the whole pattern: under `Router::nest("/api", …)` it is
//! `/api/users/{id}`, and a rule written as `/users/{id}` never matches (the layer logs a
//! warning, once, when it sees a route that ends with a rule that never matched). To keep a
//! policy with the route wherever it is mounted, attach it:
//! `get(handler).layer(cache.for_route(RoutePolicy::new()…))`
//! ([`CacheLayer::for_route`](crate::CacheLayer::for_route)). That layer shares the store,
//! stats and coalescing of `cache`, and `cache` on the router passes the route on to it.
//! Rules can also match a path prefix
//! ([`route_prefix`](crate::CacheLayer::route_prefix)). A rule sets the route's TTL, turns
//! caching off, makes expiry sliding, sets client control, a namespace, whether the origin's
//! TTL counts, stale windows and cookie handling ([`RoutePolicy`]). Keys hold the path the
//! client sent (axum's `OriginalUri`), nest prefix included. The stats list the routes with
//! rules and those that saw cached traffic.
//!
//! ## Cookies
//!
//! A request with a `Cookie` header is answered only from entries whose response said
//! `public` or `s-maxage`, and its own response is stored only if it says so: a page
//! rendered for a logged-in user under a default TTL is never stored, whatever its path
//! looks like (`/account/profile.css` included: nothing is decided by extension). Its
//! response then says `x-cache: UNCACHEABLE`, `Cache-Status: …; detail=cookie`. Routes whose
//! responses do not depend on cookies (static assets, public pages behind analytics
//! cookies) say `RoutePolicy::new().request_cookies(RequestCookies::Ignore)` (or the layer
//! does).
//!
//! ## Invalidation by unsafe requests
//!
//! A successful POST, PUT, PATCH, DELETE or unknown method (RFC 9111 §4.4; unknown methods
//! switchable with
//! [`invalidate_unknown_methods`](crate::CacheLayer::invalidate_unknown_methods)) removes
//! the entries of its target URI and of a same-origin `Location` / `Content-Location`, with
//! all their variants, and a fetch of such a URL that was under way does not store its
//! (possibly older) response afterwards: in this process through the layer's own record, and
//! in other instances sharing a Redis store through its purge log
//! ([`RedisConfig::purge_log`](crate::RedisConfig::purge_log)), as for every purge. Keys
//! built from request headers are invalidated for the unsafe request's own header values
//! only. Purges from application code are [`CacheHandle`](crate::CacheHandle)'s.

pub(crate) mod cache_control;
pub(crate) mod conditional;
pub(crate) mod date;
pub(crate) mod freshness;
pub(crate) mod headers;
pub(crate) mod range;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod route;
pub(crate) mod tags;
pub(crate) mod targeted;
pub(crate) mod vary;

pub use request::{BypassReason, RefreshReason};
pub use response::{
    HeuristicFreshness, NotStoredReason, RequestCookies, SetCookiePolicy, StatusSet,
};
pub use tags::{TagLimits, TagSeparator};
pub use targeted::CDN_CACHE_CONTROL;

// At the crate root; named here for the crate's own paths.
pub(crate) use request::ClientControl;
pub(crate) use response::CacheTtl;
pub(crate) use route::RoutePolicy;
pub(crate) use tags::CacheTags;
