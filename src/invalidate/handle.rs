//! [`CacheHandle`]: purges from application code.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use tower_service::Service;

use super::Scope;
use super::urls::{UrlPurge, url_scope, with_slots};
use crate::config::Config;
use crate::key::{CacheKey, Keys};
use crate::stats::{CacheStats, PurgeKind};
use crate::store::{PurgeMode, StoreError, StoreErrorKind};

/// Purges a layer's entries from application code: by URL, key, path prefix, tag, or all
/// of them. Made by [`CacheLayer::handle`](crate::CacheLayer::handle); cheap to clone, and
/// `Send + Sync`, so that handlers reach it through axum's `State` or `Extension`.
///
/// Every purge is **complete**: it takes every variant of a URL (`Vary`) and stale copies;
/// a fetch of a purged entry that was under way in this process stores nothing afterwards,
/// and requests that come after the purge do not wait for it. It touches the layer's
/// namespace only: other layers sharing the store keep their entries.
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
