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
//! Where to read on: [`policy`] says how each request and response is decided,
//! [`CacheHandle`] how entries are purged, [`store`] which store to choose, [`observe`] what
//! the cache reports, and [`value`] how to cache what handlers compute.
//!
//! # Testing an app that uses the cache
//!
//! The defaults make tests deterministic: on a [`MemoryStore`] the entry is written before
//! the response's body ends ([`WriteMode::Auto`]), so the next request is a hit, on a
//! current-thread `#[tokio::test]` as on a multi-thread runtime. Assert what a user would
//! notice: the `x-cache` header, how many times the handler ran, what the store holds, and
//! the stats.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use axum::{body::Body, routing::get, Router};
//! use http::Request;
//! use http_body_util::BodyExt;
//! use tower::ServiceExt; // `oneshot`
//! use tower_response_cache::{CacheLayer, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = MemoryStore::new(1 << 20);
//! let cache = CacheLayer::new(store.clone()).namespace("test");
//! let stats = cache.stats();
//! let calls = Arc::new(AtomicUsize::new(0));
//! let counter = Arc::clone(&calls);
//! let app = Router::new()
//!     .route("/page", get(move || async move {
//!         format!("page #{}", counter.fetch_add(1, Ordering::SeqCst) + 1)
//!     }))
//!     .layer(cache);
//!
//! for expected in ["MISS", "HIT"] {
//!     let response = app.clone()
//!         .oneshot(Request::get("/page").body(Body::empty()).unwrap())
//!         .await
//!         .unwrap();
//!     assert_eq!(response.headers()["x-cache"], expected);
//!     // Read the body: a streamed miss is stored once its body has been delivered.
//!     let body = response.into_body().collect().await.unwrap().to_bytes();
//!     assert_eq!(body, "page #1");
//! }
//! assert_eq!(calls.load(Ordering::SeqCst), 1, "the handler ran once");
//! assert_eq!(store.keys(), ["test:GET:/page"]);
//! let snapshot = stats.snapshot();
//! assert_eq!((snapshot.total.hits, snapshot.total.misses, snapshot.total.stores), (1, 1, 1));
//! # }
//! ```
//!
//! - **Keys** in tests have no host (a `oneshot` request has none); over a real server they
//!   do: `test:GET:127.0.0.1:PORT/page`. Assert with `store.keys()` rather than a guessed
//!   key.
//! - **A real server** (`axum::serve` on `127.0.0.1:0`, any HTTP client): the same
//!   assertions hold; the client must read the whole body, as above, before the entry is
//!   there.
//! - **Each test its own layer and store**: entries, stats and coalescing are per layer.
//! - **Redis**: writes run in the background by default; a request that arrives while one
//!   is under way is answered with the entry all the same. [`WriteMode::Inline`] makes "the
//!   client has read the body" mean "Redis has the entry" for tests that read Redis
//!   directly.
//! - **Time**: TTLs are wall-clock; test expiry with short TTLs (`default_ttl(1 s)`) and a
//!   bounded wait, or assert `Cache-Status: …; ttl=N` instead of sleeping.
//! - **What was decided**: `Cache-Status` says why a response was not stored
//!   (`detail=private`, `detail=no-freshness`…); the stats count the same reasons.
//!
//! # A caching reverse proxy
//!
//! `examples/reverse_proxy.rs` puts the cache in front of any HTTP origin:
//!
//! ```sh
//! UPSTREAM=http://127.0.0.1:8080 LISTEN=0.0.0.0:3000 cargo run --release --example reverse_proxy
//! ```
//!
//! It forwards every method with its body and end-to-end headers (adding `Via` and
//! `X-Forwarded-*`, dropping hop-by-hop headers), returns the origin's status, headers and
//! body unchanged, answers `502` when the origin is unreachable or closes the connection and
//! `504` after `UPSTREAM_TIMEOUT_SECS` (30), and caches only what the origin's headers
//! allow:
//!
//! - no default TTL; any final status with explicit freshness (RFC 9111 §3);
//! - heuristic freshness from `Last-Modified` on, as in Squid, Apache httpd and Traffic
//!   Server (10%, at most a day; `HEURISTIC_FRESHNESS=off` turns it off);
//! - `CDN-Cache-Control` over `Cache-Control` when the origin sends one (RFC 9213,
//!   forwarded to the client);
//! - a stale entry answering for `STALE_IF_ERROR_SECS` (300; 0 is off) past its freshness
//!   when the origin refuses or drops the connection, times out or fails with a 5xx — never
//!   one marked `must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache` (RFC 9111
//!   §4.2.4, like nginx's `proxy_cache_use_stale error timeout`);
//! - `Authorization`, `Cookie` and `Set-Cookie` kept out unless the origin marks the
//!   response shared;
//! - the client's `Host` in the key (or a fixed `PUBLIC_HOST` forwarded instead), and the
//!   client's `Forwarded` / `X-Forwarded-Host` / `X-Forwarded-Proto` / `X-Original-URL` /
//!   `X-Rewrite-URL` / method-override headers dropped before the origin sees them;
//! - stale entries revalidated with conditional requests (`KEEP_SECS`, 600), unsafe methods
//!   invalidating.
//!
//! `CACHE_MIB` (256) sizes the memory store; `STATS_PATH=/__cache/stats` exposes the
//! counters. To put it in front of a real origin: run it next to the origin on a private
//! network (plain HTTP to `UPSTREAM`), terminate TLS in front of it, make sure the origin
//! sends `Cache-Control` for what may be shared (`public, max-age=…` or `s-maxage=…`) and
//! `private` or `no-store` for per-user pages, and watch `hit_ratio` and `not_stored` in the
//! stats. WebSocket upgrades are not proxied, and an origin's `103 Early Hints` is dropped,
//! not relayed: hyper's server cannot send a `1xx` before the final response. It is tested
//! against a real local origin (`tests/reverse_proxy.rs`).
//!
//! # Performance
//!
//! `scripts/bench.sh` measures the server over HTTP on loopback (no cache, `MemoryStore`,
//! `RedisStore`; wrk and the server on separate cores) and writes `BENCHMARKS.md` (in the
//! repository) with the machine, the commands, ratios against the no-cache floor of the
//! same run, the spread of those ratios round by round, and CPU time split into user and
//! kernel. CPU time on a shared VM moves by more than a hit costs, so the script also
//! counts the server's user-space instructions per request under callgrind, which are the
//! same from run to run, and keeps the profiles (`target/callgrind.*.out`, for
//! `callgrind_annotate --inclusive=yes`).
//!
//! A memory hit is answered in place: no future, no copy of the body, no decoding, as many
//! heap allocations as the uncached request. Four full runs (`REPEAT=3 scripts/bench.sh`,
//! 2-core AMD EPYC VM, one day; `BENCHMARKS.md` is the fourth):
//!
//! | memory hit against the floor, per request | `/hello` 1 KiB | `/big` 64 KiB |
//! |---|---|---|
//! | user-space instructions, floor | 14 560–14 613 | 14 542–14 591 |
//! | user-space instructions, hit | 18 191–18 253 (1.25×) | 18 133–18 162 (1.24–1.25×) |
//! | system calls, floor → hit (run 4) | 2.06 → 2.05 | 2.16 → 2.16 |
//! | the floor's CPU spent in the kernel | 71–76% | 80–82% |
//! | CPU, from the instructions (1) | 1.06–1.07× | 1.04–1.05× |
//! | CPU, from the user time (2) | 1.02–1.10× | 1.03–1.07× |
//! | CPU, measured (3) | 1.05×, 1.14×, 1.26×, 1.05× | 0.97×, 1.07×, 1.05×, 0.94× |
//! | requests/s, measured (3) | 0.96×, 0.89×, 0.75×, 0.96× | 1.12×, 0.93×, 0.95×, 1.22× |
//!
//! 1. The hit's instructions at the floor's user-space rate.
//! 2. The floor's CPU per request plus the measured user-time difference.
//! 3. Ratio of medians, runs 1–4.
//!
//! The hit makes the same system calls as the floor and adds 3 600–3 700 user-space
//! instructions. What moves from run to run is mostly the kernel's time for the same calls,
//! which on this VM varies by more than the hit costs: the CPU ratio of single rounds
//! ranged from 0.79× to 1.36× across these runs.
//!
//! Where a memory hit's instructions go (callgrind, per request): the moka lookup about
//! 1 330 (SipHash of the key 200, moka's read bookkeeping 350, its expiry clock 230), the
//! response's headers about 1 700 (the stored ones copied into a map with room for `Age`,
//! `x-cache` and `Cache-Status`, then those three), the key about 530, the request's
//! directives 365, the route and its counters 305. The rest, about 1 300, is spread thin:
//! freshness arithmetic, encoding and freeing the three added headers, the body and future
//! wrappers, freeing the key. A hit skips the handler's own work (about 1 900 in the floor).
//! Copying the stored map and growing it for `Age` cost 480 more, now gone.
//!
//! Those figures predate the host in the key, the cookie rule, route resolution and the
//! event funnel, which took a hit to about 5 100 instructions over the floor. In the run
//! `BENCHMARKS.md` holds (2-core Xeon VM), a hit adds 4 511 to a floor of 15 164: one pass
//! over the request's header names for the six the cache reads (a probe each before) and a
//! one-pass read of a plain `Host` took back about 800. The same run has nginx's
//! `proxy_cache` on the same core: a memory hit serves 0.95× its requests per second
//! (median; 0.76×–1.21× round by round).
//!
//! A Redis hit takes 54 000 instructions per request (3.7× the floor), most of them in
//! fred's command path (16 000 are copies of about 9 KB per wake-up of fred's connection
//! task, which callgrind counts byte by byte: they weigh less in time), and 1.3 more system
//! calls: 32–38 µs of server CPU per request against the floor's 9.7–11.8 µs. Over HTTP it
//! reaches 0.28–0.41× of `redis-benchmark -t get -c 64`, whose own rate is 0.6–0.85× of the
//! HTTP floor's on these two cores; in process, without HTTP, the layer's Redis hits outrun
//! it (below).
//!
//! A memory-store miss adds about 33 000 instructions to the floor's 18 300 per request,
//! most of it storing the entry (moka's insert, one copy of the body and of the header
//! values, the policy). It costs more CPU than that count suggests (+26 to +47 µs per miss
//! measured, 0.5 more system calls): each miss writes a new 2 KiB entry into a growing
//! store, on fresh memory. Its p50 over `/slow` (50 ms) moved by +20 to +380 µs, within the
//! floor's own spread between rounds (up to 1.1 ms). On Redis a miss waited for two round
//! trips before the origin (the lookup and the fill lock): +3.8 to +5.8 ms p50 at 1 200
//! misses/s on this VM in those runs, where fred's round trips take 1–2 ms under that load.
//! The lookup now takes the lock along in one script, so a miss waits for one round trip,
//! as with `fill_locks: false`. In a later run: +0.55 ms against +0.76 ms without locks
//! (the [`store`](crate::store#measured) docs have that run, with the tiered store's
//! figures).
//!
//! In process (`cargo bench --bench hit`, criterion, no network, same VM):
//!
//! | | time per request | heap allocations per request |
//! |---|---|---|
//! | service without the cache (floor), 1 KiB | 0.57 µs | 6 |
//! | memory hit, 1 KiB / 64 KiB (query string sorted into the key) | 1.23 / 1.25 µs | 6 |
//! | memory miss, store full and evicting (inline / background write) | 11.0 / 13.7 µs | |
//! | key building: path / sorted query / escapes | 60 ns / 250 ns / 310 ns | |
//! | policy: request directives / storability, TTL / `If-None-Match` | 27–68 / 420 / 48 ns | |
//! | binary codec, 1 KiB entry: encode / decode | 250 ns / 380 ns | |
//!
//! Memory per entry (`cargo bench --bench hit -- memory_overhead`, entries stored through
//! the service, 1 KiB bodies): 774 bytes beyond key, header names and values and body with
//! 2 stored headers, 1 209 with 6; moka itself takes 303 of them (254 without per-entry
//! expiry), each stored header about 109 (a `HeaderMap` slot is 104 bytes; the values of an
//! entry share one buffer). The store's weigher counts all of it, so
//! [`MemoryStore::new(bytes)`](MemoryStore::new) bounds the real heap (it counts 3–4% more
//! than the heap measured). Header values that hyper parsed in place are copied when
//! stored, so an entry never keeps a connection's read buffer alive.
//!
//! `cargo bench --features redis --bench redis_hit` (Redis hits through the layer, no HTTP,
//! 100 000 requests, `redis-benchmark` on the same server in the same run, same VM):
//!
//! | | requests/s | p50 | p99 |
//! |---|---|---|---|
//! | layer hit via `RedisStore`, 1 KiB, concurrency 1 | 7 560 | 105 µs | 532 µs |
//! | layer hit via `RedisStore`, 1 KiB, concurrency 64 | 83 823 | 583 µs | 4.1 ms |
//! | `redis-benchmark -t get -d 1024 -c 1` | 12 076 | 71 µs | |
//! | `redis-benchmark -t get -d 1024 -c 64` | 73 421 | 447 µs | |
//!
//! [tower]: https://docs.rs/tower

// On docs.rs: every gated item labelled with the feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
pub mod clock;
mod coalesce;
pub mod codec;
mod config;
mod entry;
mod fence;
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
        use crate::policy::request::{Present, request_mode};
        let present = Present::of(headers, &DEFAULT_BYPASS_HEADER);
        let mode = request_mode(
            headers,
            present,
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
