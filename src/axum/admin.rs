//! The admin router: purges and stats over HTTP, for operators, behind a bearer token.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::invalidate::CacheHandle;
use crate::key::CacheKey;

/// The most URLs, keys, prefixes and tags one purge request may name.
pub const MAX_PURGE_ITEMS: usize = 1_000;

/// A purge request to the [`admin_router`]: what to purge, and how.
///
/// ```json
/// { "urls": ["/users/42", "https://shop.example/users/42?tab=posts"],
///   "keys": ["GET:/custom"], "prefixes": ["/users/42/"], "tags": ["user:42"],
///   "soft": false }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PurgeRequest {
    /// URLs, each with every variant ([`CacheHandle::invalidate`]).
    pub urls: Vec<String>,
    /// Keys as the key builder gives them ([`CacheHandle::invalidate_key`]).
    pub keys: Vec<String>,
    /// Path prefixes ([`CacheHandle::invalidate_prefix`]).
    pub prefixes: Vec<String>,
    /// Tags ([`CacheHandle::invalidate_tag`]).
    pub tags: Vec<String>,
    /// Soft purges ([`CacheHandle::soft`]) rather than hard ones.
    pub soft: bool,
}

/// What a purge request did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PurgeReply {
    /// Entries purged, as the store counted them.
    pub purged: u64,
    /// The purges that failed (the store's error for each); the others were carried out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<PurgeFailure>,
}

/// A purge of a [`PurgeRequest`] that failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PurgeFailure {
    /// `url`, `key`, `prefix` or `tag`.
    pub kind: String,
    /// What it named.
    pub value: String,
    /// The store's error.
    pub error: String,
}

/// A router for operators, to mount under a path of your choice: `POST /purge` (a
/// [`PurgeRequest`] as JSON; answers a [`PurgeReply`], `200`, or `503` when a purge
/// failed), `POST /clear` (the layer's namespace) and `GET /stats` (the
/// [`StatsSnapshot`](crate::stats::StatsSnapshot)).
///
/// Every request must carry `Authorization: Bearer <token>`; the token is compared in
/// constant time, and a missing or wrong one gets `401` before anything else is read. A
/// request naming more than [`MAX_PURGE_ITEMS`] things, or a body that is not a
/// `PurgeRequest`, gets `400`. Nothing is mounted unless you mount it; serve it only where
/// operators reach it (another port, an internal network), over TLS.
///
/// # Panics
///
/// If `token` is empty (once trimmed): that would be no protection.
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_response_cache::{CacheLayer, MemoryStore};
/// use tower_response_cache::axum::admin_router;
///
/// let cache = CacheLayer::new(MemoryStore::new(64 << 20));
/// let token = std::env::var("CACHE_ADMIN_TOKEN").unwrap_or_else(|_| "change me".into());
/// let app: Router = Router::new()
///     .route("/", get(|| async { "home" }))
///     .layer(cache.clone())
///     .nest("/_cache", admin_router(cache.handle(), &token));
/// ```
pub fn admin_router<S>(handle: CacheHandle, token: &str) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    // A token read from a file or the environment may end with a newline; the one a client
    // presents is trimmed as well.
    let token = token.trim();
    assert!(
        !token.is_empty(),
        "the admin router needs a non-empty token"
    );
    let admin = Admin {
        handle,
        token: Arc::new(Sha256::digest(token.as_bytes()).into()),
    };
    Router::new()
        .route("/purge", post(purge))
        .route("/clear", post(clear))
        .route("/stats", get(stats))
        .with_state(admin)
}

#[derive(Clone)]
struct Admin {
    handle: CacheHandle,
    /// The token's SHA-256: compared in constant time with the presented token's.
    token: Arc<[u8; 32]>,
}

/// Proof that the request carried the right bearer token.
struct Authorized;

impl FromRequestParts<Admin> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, admin: &Admin) -> Result<Self, Response> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            })
            .unwrap_or_default();
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if bool::from(digest.ct_eq(&*admin.token)) && !presented.is_empty() {
            return Ok(Self);
        }
        Err((
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a valid bearer token is required",
        )
            .into_response())
    }
}

async fn purge(
    _: Authorized,
    State(admin): State<Admin>,
    request: Result<Json<PurgeRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match request {
        Ok(request) => request,
        Err(rejection) => return (StatusCode::BAD_REQUEST, rejection.body_text()).into_response(),
    };
    let items =
        request.urls.len() + request.keys.len() + request.prefixes.len() + request.tags.len();
    if items > MAX_PURGE_ITEMS {
        return (
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_PURGE_ITEMS} things to purge per request, not {items}"),
        )
            .into_response();
    }
    let handle = if request.soft {
        admin.handle.soft()
    } else {
        admin.handle
    };
    let mut reply = PurgeReply::default();
    let mut note =
        |kind: &str, value: &str, result: Result<u64, crate::store::StoreError>| match result {
            Ok(purged) => reply.purged += purged,
            Err(error) => reply.failed.push(PurgeFailure {
                kind: kind.to_owned(),
                value: value.to_owned(),
                error: error.to_string(),
            }),
        };
    for url in &request.urls {
        note("url", url, handle.invalidate(url).await);
    }
    for key in &request.keys {
        note(
            "key",
            key,
            handle.invalidate_key(&CacheKey::new(key.as_str())).await,
        );
    }
    for prefix in &request.prefixes {
        note("prefix", prefix, handle.invalidate_prefix(prefix).await);
    }
    for tag in &request.tags {
        note("tag", tag, handle.invalidate_tag(tag).await);
    }
    let status = if reply.failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, [(header::CACHE_CONTROL, "no-store")], Json(reply)).into_response()
}

async fn clear(_: Authorized, State(admin): State<Admin>) -> Response {
    let mut reply = PurgeReply::default();
    let status = match admin.handle.clear().await {
        Ok(purged) => {
            reply.purged = purged;
            StatusCode::OK
        }
        Err(error) => {
            reply.failed.push(PurgeFailure {
                kind: "clear".to_owned(),
                value: String::new(),
                error: error.to_string(),
            });
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    (status, [(header::CACHE_CONTROL, "no-store")], Json(reply)).into_response()
}

async fn stats(_: Authorized, State(admin): State<Admin>) -> Response {
    admin.handle.stats().snapshot().into_response()
}
