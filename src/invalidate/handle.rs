//! [`CacheHandle`]: purges from application code.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use tower_service::Service;

use super::urls::{UrlPurge, url_scope, with_slots};
use crate::config::Config;
use crate::fence::Scope;
use crate::key::{CacheKey, Keys};
use crate::stats::{CacheStats, PurgeKind};
use crate::store::{PurgeMode, StoreError, StoreErrorKind};

/// Purges a layer's entries from application code: by URL, key, path prefix, tag, or all
/// of them. Made by [`CacheLayer::handle`](crate::CacheLayer::handle); cheap to clone, and
/// `Send + Sync`, so that handlers reach it through axum's `State` or `Extension`.
///
/// An entry leaves the cache by expiry, eviction, an unsafe request to its URL
/// ([policy](crate::policy#invalidation-by-unsafe-requests)) — or a purge through this
/// handle.
///
/// Every purge is **complete**: it takes every variant of a URL (`Vary`) and stale copies;
/// a fetch of a purged entry that was under way stores nothing afterwards — in this process
/// (the layer's own record), and in another instance sharing the Redis store (a short purge
/// log each writer checks after its write:
/// [`RedisConfig::purge_log`](crate::RedisConfig::purge_log)); requests that come after the
/// purge do not wait for a fetch that began before it. It touches the layer's namespace
/// only: other layers sharing the store keep their entries.
///
/// Each method returns how many entries the store purged (for a URL, its key and variant
/// slots that held an entry), or the store's error: the purge then may not have happened,
/// and is worth retrying. Purges are hard by default: [`soft`](Self::soft) gives a handle
/// whose purges make entries stale instead.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_response_cache::store::StoreError> {
/// use axum::{extract::{Path, State}, routing::{get, post}, Extension, Router};
/// use tower_response_cache::{CacheHandle, CacheLayer, CacheTags, MemoryStore};
///
/// let cache = CacheLayer::new(MemoryStore::new(64 << 20));
/// let handle = cache.handle();
///
/// async fn user(Path(id): Path<u32>) -> (Extension<CacheTags>, String) {
///     (Extension(CacheTags::new([format!("user:{id}")])), format!("user {id}"))
/// }
/// async fn update(State(cache): State<CacheHandle>, Path(id): Path<u32>) -> &'static str {
///     // Every page tagged with the user, whatever its URL.
///     let _ = cache.invalidate_tag(&format!("user:{id}")).await;
///     "updated"
/// }
///
/// let app: Router = Router::new()
///     .route("/users/{id}", get(user))
///     .route("/users/{id}/update", post(update))
///     .with_state(handle.clone())
///     .layer(cache);
///
/// handle.invalidate("/users/42").await?;          // one URL, every host and variant
/// handle.invalidate_prefix("/users/42").await?;   // and everything under it
/// handle.soft().invalidate_tag("users").await?;   // stale: revalidated on next use
/// handle.clear().await?;                          // this layer's namespace
/// # let _ = app;
/// # Ok(()) }
/// ```
///
/// # What each purge takes
///
/// - [`invalidate("/users/42?tab=1")`](Self::invalidate): every variant (`Vary`) of that
///   URL, on every host; with a host (`https://shop.example/…`) on that host only; under the
///   namespace of the route it belongs to. Cost: with a host (and no request headers in the
///   key), the URL's keys directly; otherwise a scan of the layer's keys.
/// - [`invalidate_key(&key)`](Self::invalidate_key): the key as the key builder gave it, and
///   its variant slots. Direct.
/// - [`invalidate_prefix("/users/42")`](Self::invalidate_prefix): every URL at or below the
///   path (`/users/42`, `/users/42?x`, `/users/42/posts`; not `/users/420`). A scan of the
///   layer's keys.
/// - [`invalidate_tag("user:42")`](Self::invalidate_tag),
///   [`invalidate_tags(..)`](Self::invalidate_tags): every entry with the tag (whole tags:
///   `user:4` is not `user:42`). The tag's index, in batches.
/// - [`clear()`](Self::clear): every entry of this layer's namespace, nothing of other
///   layers or other data. A scan of the layer's keys.
/// - [`soft()`](Self::soft)`.…`: any of the above, made stale instead of removed: the next
///   request revalidates (once, coalesced) and they may answer within their stale windows
///   meanwhile; never extends a lifetime; a hard purge after it stays hard. Costs as the
///   hard one.
/// - [`refresh(app, request)`](Self::refresh): fetches the request through the app now and
///   stores it (warming), whatever clients may do. One origin call.
///
/// # Tags
///
/// Read from `Surrogate-Key` (space-separated) and `Cache-Tag` (comma-separated) by default
/// ([`tag_header`](crate::CacheLayer::tag_header) adds others,
/// [`no_tag_headers`](crate::CacheLayer::no_tag_headers) reads none) and from a
/// [`CacheTags`](crate::CacheTags) extension. Trimmed, de-duplicated, control characters
/// rejected; past the limits ([`TagLimits`](crate::policy::TagLimits): a tag of 1024 bytes,
/// 16 KiB of tags, 64 tags per entry) the rest are ignored and counted
/// (`purges.tags_ignored`), never a failed request. The tag headers are stripped from the
/// responses to the GET and HEAD requests the cache takes, and from stored entries
/// ([`strip_tag_headers(false)`](crate::CacheLayer::strip_tag_headers) keeps them);
/// responses it passes on untouched (other methods, disabled routes) keep theirs.
///
/// # On each store
///
/// | | `MemoryStore` | `RedisStore` (standalone, Sentinel, Cluster) |
/// |---|---|---|
/// | URL, key | ✅ direct | ✅ `UNLINK` per hash slot |
/// | prefix, clear, URL without host | ✅ visits the entries | ✅ `SCAN` per primary (1) |
/// | tag | ✅ an index (2) | ✅ a sorted set per tag (3) |
/// | soft | ✅ atomic per entry | ✅ compare-and-set with `KEEPTTL` |
/// | across instances | — (one process) | ✅ purge log (4) |
/// | hit path | no index work (5) | no command for an untagged or a tagged entry |
/// | miss path | unchanged | one script per tag, and the purge log (6) |
///
/// 1. With an escaped, anchored pattern; each key found is parsed.
/// 2. The index follows entries out of the store (expiry, eviction, replacement).
/// 3. Scored by expiry, trimmed on every add, purged with `ZSCAN` a page at a time.
/// 4. One more round trip per write, none per lookup.
/// 5. The eviction listener that keeps the index adds moka housekeeping: about 100
///    instructions a hit, measured with callgrind.
/// 6. The write of a tagged entry adds one script per tag, sent with the `SET`; each write
///    checks the purge log before and after it (two round trips, in the background by
///    default).
///
/// The tests cover the memory store and Redis standalone and cluster. What the other
/// stores can purge is in the [`store`](crate::store#what-each-store-does) docs.
///
/// On Redis, run the cache with a `maxmemory-policy` of `volatile-*` or `allkeys-*` only if
/// you accept that Redis may evict a tag's index (a sorted set with a TTL) before the
/// entries it lists: those entries then escape their tag's purges until they expire. The
/// tag index and purge log need Redis 6.2 or later (`SET … KEEPTTL`, `ZADD` scores written
/// by script).
///
/// # Over HTTP
///
/// For operators (feature `axum`, mounted only where you mount it):
/// [`admin_router(handle, token)`](crate::axum::admin_router) serves `POST /purge`
/// (`{"urls": [..], "keys": [..], "prefixes": [..], "tags": [..], "soft": false}`),
/// `POST /clear` and `GET /stats`, each behind `Authorization: Bearer <token>` compared in
/// constant time (401 otherwise). And
/// [`CacheLayer::purge_method(predicate)`](crate::CacheLayer::purge_method) makes the layer
/// answer `PURGE /url` itself when the predicate allows the request (the peer address, a
/// secret header), `403` otherwise.
///
/// `examples/invalidation.rs` (`cargo run --example invalidation`) tags pages by the users
/// they show:
///
/// ```console
/// $ curl -i localhost:3000/users/42
/// HTTP/1.1 200 OK
/// x-cache: MISS
/// cache-status: tower-response-cache; fwd=miss; stored
///
/// user 42
/// $ curl -i localhost:3000/users/42
/// HTTP/1.1 200 OK
/// x-cache: HIT
/// cache-status: tower-response-cache; hit; ttl=59
///
/// user 42
/// $ curl -i localhost:3000/teams/7
/// HTTP/1.1 200 OK
/// x-cache: MISS
///
/// team 7: user 42, user 43
/// $ curl -X POST -d Ada localhost:3000/users/42
/// renamed; purged 2 entries tagged user:42
/// $ curl -i localhost:3000/users/42
/// HTTP/1.1 200 OK
/// x-cache: MISS
///
/// Ada
/// $ curl -i localhost:3000/teams/7
/// HTTP/1.1 200 OK
/// x-cache: MISS
///
/// team 7: Ada, user 43
/// $ curl -s -H 'authorization: Bearer change-me' -H 'content-type: application/json' \
///     -d '{"tags":["team:7"]}' localhost:3000/_cache/purge
/// {"purged":1}
/// ```
///
/// The stats count purges by kind and mode (`purges` in the JSON: `{"hard": {"tag": 2,
/// "unsafe-method": 1}, "soft": {}, "entries": 3, "failed": 0, "tags_ignored": 0}`).
#[derive(Clone)]
pub struct CacheHandle {
    config: Arc<Config>,
    key_builder: Keys,
    mode: PurgeMode,
}

impl fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheHandle")
            .field("namespace", &self.config.namespace)
            .field("store", &self.config.store)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl CacheHandle {
    pub(crate) fn new(config: Arc<Config>, key_builder: Keys) -> Self {
        Self {
            config,
            key_builder,
            mode: PurgeMode::Hard,
        }
    }

    /// The same handle, with purges in `mode`.
    #[must_use]
    pub fn mode(&self, mode: PurgeMode) -> Self {
        Self {
            mode,
            ..self.clone()
        }
    }

    /// The same handle, with soft purges ([`PurgeMode::Soft`]): entries become stale rather
    /// than gone, so that the next request revalidates them with the origin (once, other
    /// requests waiting for it) and they may answer meanwhile within their stale windows
    /// (`stale-while-revalidate`, and `stale-if-error` should the origin fail). A soft
    /// purge never extends an entry's life, and a hard purge after it removes the entry.
    #[must_use]
    pub fn soft(&self) -> Self {
        self.mode(PurgeMode::Soft)
    }

    /// The layer's counters, purges included.
    pub fn stats(&self) -> CacheStats {
        self.config.funnel.stats.clone()
    }

    /// Purges every stored variant of the URL `uri` — an absolute path with its query
    /// (`/users/42?tab=posts`), or an absolute URL — keyed as a GET of it would be, under
    /// the namespace of the route it belongs to (route patterns such as `/users/{id}` are
    /// matched as axum matches them).
    ///
    /// With the [`DefaultKeyBuilder`](crate::key::DefaultKeyBuilder): a URL with a host purges
    /// that host's entries, one without every host's (the default key holds the host);
    /// with headers in the key, every value of them. Both of the latter look through the
    /// layer's keys (a scan on Redis); a URL with its host on a key builder without headers
    /// removes its keys directly. With another key builder, the key it builds for a GET of
    /// the URL (with the URL's host as `Host`).
    pub async fn invalidate(&self, uri: &str) -> Result<u64, StoreError> {
        let uri = parse(uri)?;
        let scope = url_scope(&self.config, &self.key_builder, &uri, UrlPurge::Exact)?;
        self.purge(scope, PurgeKind::Url).await
    }

    /// Purges the entry under `key` — the key as the key builder gives it; the layer's
    /// namespace is put in front — and its variant slots. (The key of a route with its own
    /// namespace is found by [`invalidate`](Self::invalidate).)
    pub async fn invalidate_key(&self, key: &CacheKey) -> Result<u64, StoreError> {
        let keys = with_slots(&self.config, key.clone(), None);
        self.purge(Scope::Keys(keys), PurgeKind::Key).await
    }

    /// Purges every URL whose path is `prefix` or lies below it: `/users/42` takes
    /// `/users/42`, `/users/42?tab=2` and `/users/42/posts`, not `/users/420`; a prefix
    /// that ends with `/` takes whatever follows. An absolute URL limits it to its host.
    /// Looks through the layer's keys (a scan on Redis), so it costs in proportion to the
    /// store's size: tags are the way to purge often. Needs the
    /// [`DefaultKeyBuilder`](crate::key::DefaultKeyBuilder) (other key builders' keys cannot be
    /// told by path: [`StoreErrorKind::Unsupported`]).
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let uri = parse(prefix)?;
        let scope = url_scope(&self.config, &self.key_builder, &uri, UrlPurge::Under)?;
        self.purge(scope, PurgeKind::Prefix).await
    }

    /// Purges every entry tagged `tag` (by a tag header or [`CacheTags`](crate::CacheTags))
    /// in this layer's namespace, and every value so tagged in the value caches made from
    /// it ([`CacheLayer::values`](crate::CacheLayer::values)). A tag matches as a whole:
    /// `user:4` does not take `user:42`'s entries.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<u64, StoreError> {
        let tag = tag.trim_ascii();
        let scope = Scope::Tag {
            tag: tag.to_owned(),
            within: format!("{}:", self.config.namespace),
        };
        let mut purged = self.purge(scope, PurgeKind::Tag).await?;
        // The values of the value caches made from this layer ([`CacheLayer::values`]).
        let prefixes = match self.config.value_prefixes.read() {
            Ok(prefixes) => prefixes.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for within in prefixes {
            let scope = Scope::Tag {
                tag: tag.to_owned(),
                within,
            };
            purged += self.purge(scope, PurgeKind::Tag).await?;
        }
        Ok(purged)
    }

    /// Purges every entry tagged with any of `tags`, one tag after another; stops at the
    /// first store error.
    pub async fn invalidate_tags<I, T>(&self, tags: I) -> Result<u64, StoreError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let mut purged = 0;
        for tag in tags {
            purged += self.invalidate_tag(tag.as_ref()).await?;
        }
        Ok(purged)
    }

    /// Purges every entry of this layer: the keys under its namespace (`cache:`), and
    /// nothing of other layers or other data the store holds.
    pub async fn clear(&self) -> Result<u64, StoreError> {
        let scope = Scope::Prefix {
            prefix: format!("{}:", self.config.namespace),
            filter: None,
        };
        self.purge(scope, PurgeKind::Clear).await
    }

    /// Fetches `request` through `service` now and stores the response (cache warming):
    /// `service` is one with this layer in it — your app's `Router`, say. The layer takes
    /// the request as a refresh whatever its headers say of the cache and whatever it lets
    /// clients do ([`ClientControl`](crate::ClientControl)); the response is stored if it
    /// may be, like any other. The body is read to its end (so that the entry is complete)
    /// and returned with the response's head.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// use axum::{body::Body, routing::get, Router};
    /// use http::Request;
    /// use tower_response_cache::{CacheLayer, MemoryStore};
    ///
    /// let cache = CacheLayer::new(MemoryStore::new(64 << 20));
    /// let handle = cache.handle();
    /// let app: Router = Router::new()
    ///     .route("/home", get(|| async { "home" }))
    ///     .layer(cache);
    /// let warmed = handle.refresh(app.clone(), Request::get("/home").body(Body::empty())?).await?;
    /// assert_eq!(warmed.headers()["x-cache"], "REFRESH");
    /// # Ok(()) }
    /// ```
    pub async fn refresh<S, ReqB, ResB>(
        &self,
        mut service: S,
        mut request: Request<ReqB>,
    ) -> Result<Response<Bytes>, BoxError>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
        S::Error: Into<BoxError>,
        ResB: Body,
        ResB::Error: Into<BoxError>,
    {
        request.extensions_mut().insert(Warm);
        self.config
            .warming
            .store(true, std::sync::atomic::Ordering::Relaxed);
        std::future::poll_fn(|cx| service.poll_ready(cx))
            .await
            .map_err(Into::into)?;
        let response = service.call(request).await.map_err(Into::into)?;
        let (head, body) = response.into_parts();
        let body = body.collect().await.map_err(Into::into)?.to_bytes();
        Ok(Response::from_parts(head, body))
    }

    async fn purge(&self, scope: Scope, kind: PurgeKind) -> Result<u64, StoreError> {
        self.config
            .invalidator()
            .purge(&scope, self.mode, kind)
            .await
    }
}

/// An error of a service or a body, boxed.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Marks a request as a warming refresh ([`CacheHandle::refresh`]): an extension, which no
/// client can set.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Warm;

fn parse(uri: &str) -> Result<Uri, StoreError> {
    let uri: Uri = uri.parse().map_err(|error| {
        StoreError::with_source(StoreErrorKind::Other, "not a URL to purge", error)
    })?;
    if !uri.path().starts_with('/') {
        return Err(StoreError::new(
            StoreErrorKind::Other,
            "not a URL to purge: expected an absolute path or URL",
        ));
    }
    Ok(uri)
}
