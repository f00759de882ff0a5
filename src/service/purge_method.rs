//! The `PURGE` method that Varnish and nginx users send, opt-in
//! ([`CacheLayer::purge_method`](crate::CacheLayer::purge_method)): the layer answers it
//! itself — never the inner service — purging every stored variant of the request's URL on
//! its host when the user's predicate allows the request, and `403 Forbidden` otherwise.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode, Uri};
use http_body::Body;

use crate::body::CacheBody;
use crate::config::Config;
use crate::invalidate::urls::{UrlPurge, url_scope};
use crate::key::Keys;
use crate::stats::PurgeKind;
use crate::store::PurgeMode;

/// Whether `method` is `PURGE`.
pub(super) fn is_purge(method: &Method) -> bool {
    method.as_str() == "PURGE"
}

/// A `PURGE` request the layer answers.
pub(crate) struct PurgeMethod {
    pub(crate) config: Arc<Config>,
    pub(crate) key_builder: Keys,
    /// The URL to purge, with the request's host when it has one.
    pub(crate) uri: Uri,
    /// Whether the predicate allowed it.
    pub(crate) allowed: bool,
}

impl PurgeMethod {
    /// The purge for the request `parts` (whose URI is the one the client sent).
    pub(crate) fn new(config: &Arc<Config>, key_builder: &Keys, uri: &Uri, parts: &Parts) -> Self {
        let allowed = config
            .purge_method
            .as_ref()
            .is_some_and(|allows| allows.call(parts));
        Self {
            config: Arc::clone(config),
            key_builder: key_builder.clone(),
            uri: with_host(uri, parts),
            allowed,
        }
    }

    pub(crate) async fn run<B: Body>(self) -> Response<CacheBody<B>> {
        if !self.allowed {
            return reply(
                StatusCode::FORBIDDEN,
                r#"{"error":"purge not allowed"}"#.to_owned(),
            );
        }
        let scope = match url_scope(&self.config, &self.key_builder, &self.uri, UrlPurge::Exact) {
            Ok(scope) => scope,
            Err(error) => return reply(StatusCode::BAD_REQUEST, error_json(&error)),
        };
        let purged = self
            .config
            .invalidator()
            .purge(&scope, PurgeMode::Hard, PurgeKind::PurgeMethod)
            .await;
        match purged {
            Ok(purged) => reply(StatusCode::OK, format!(r#"{{"purged":{purged}}}"#)),
            Err(error) => reply(StatusCode::SERVICE_UNAVAILABLE, error_json(&error)),
        }
    }
}

/// The request's URL with its `Host` as authority, when the URI has none (HTTP/1).
fn with_host(uri: &Uri, parts: &Parts) -> Uri {
    if uri.authority().is_some() {
        return uri.clone();
    }
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok());
    let path = uri.path_and_query().map_or("/", |path| path.as_str());
    host.and_then(|host| format!("http://{host}{path}").parse().ok())
        .unwrap_or_else(|| uri.clone())
}

fn error_json(error: &crate::store::StoreError) -> String {
    serde_json::json!({ "error": error.to_string() }).to_string()
}

fn reply<B: Body>(status: StatusCode, json: String) -> Response<CacheBody<B>> {
    let mut response = Response::new(CacheBody::stored(Bytes::from(json)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
