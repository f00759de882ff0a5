//! Invalidation after unsafe requests (RFC 9111 §4.4): a POST, PUT, PATCH, DELETE or unknown
//! method that succeeds (2xx or 3xx) removes the stored entries for its target URI, and for
//! the URIs in its response's `Location` and `Content-Location` when they are on the same
//! origin, through the layer's [`Invalidator`](crate::fence::Invalidator).
//!
//! The key of each URI is what a GET of it would be keyed by: the layer's key builder over a
//! GET request with the unsafe request's headers, under the namespace of the route the URI
//! belongs to. A relative reference other than an absolute path (`../x`) is not resolved, and
//! so not invalidated. A `Location` is matched to route rules by its
//! path as the router would (route patterns, then prefix rules).

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body::Body;
use tower_service::Service;

use crate::body::CacheBody;
use crate::config::Config;
use crate::fence::Scope;
use crate::invalidate::urls::exact_keys;
use crate::key::Keys;
use crate::stats::PurgeKind;
use crate::store::PurgeMode;

/// Whether a successful response to `method` invalidates (RFC 9111 §4.4: methods not known
/// to be safe; CONNECT opens a tunnel and targets no stored response). With
/// `unknown_methods` false, only the unsafe methods RFC 9110 defines (POST, PUT, PATCH,
/// DELETE) do.
pub(crate) fn invalidates(method: &Method, unknown_methods: bool) -> bool {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::CONNECT => false,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE => true,
        _ => unknown_methods,
    }
}

/// What an unsafe request needs to invalidate after its response.
pub(crate) struct Invalidation {
    pub(crate) config: Arc<Config>,
    pub(crate) key_builder: Keys,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    /// The namespace of the request's own route, if it has one.
    pub(crate) route_namespace: Option<Arc<str>>,
}

impl Invalidation {
    /// Calls the service, then removes the entries its success made stale — before the
    /// response goes out, so that the client's next GET does not see them.
    pub(crate) async fn run<S, ReqB, ResB>(
        self,
        mut inner: S,
        request: Request<ReqB>,
    ) -> Result<Response<CacheBody<ResB>>, S::Error>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
        ResB: Body,
    {
        let response = inner.call(request).await?;
        let status = response.status();
        if status.is_success() || status.is_redirection() {
            self.remove(&self.uri, self.route_namespace.as_deref())
                .await;
            for name in [header::LOCATION, header::CONTENT_LOCATION] {
                for value in response.headers().get_all(&name) {
                    if let Some(target) = same_origin(&self.uri, &self.headers, value) {
                        let policy = self.config.routes.policy_for_path(target.path());
                        let route_namespace =
                            policy.as_deref().and_then(|p| p.namespace.as_deref());
                        self.remove(&target, route_namespace).await;
                    }
                }
            }
        }
        Ok(response.map(CacheBody::passthrough))
    }

    async fn remove(&self, target: &Uri, route_namespace: Option<&str>) {
        let Some(keys) = exact_keys(
            &self.config,
            &self.key_builder,
            target,
            &self.headers,
            route_namespace,
        ) else {
            return;
        };
        // A failure is counted and logged; the fence holds either way.
        let _ = self
            .config
            .invalidator()
            .purge(&Scope::Keys(keys), PurgeMode::Hard, PurgeKind::UnsafeMethod)
            .await;
    }
}

/// `value` (a `Location` or `Content-Location`) as a URI on the request's origin, if it is
/// one: an absolute path, or an absolute URI with the request's authority.
fn same_origin(request: &Uri, headers: &HeaderMap, value: &HeaderValue) -> Option<Uri> {
    let target: Uri = value.to_str().ok()?.trim().parse().ok()?;
    match target.authority() {
        // On the request's origin: give it the request's scheme and authority, which a key
        // builder may read (`Host` comes from the authority in HTTP/2).
        None if target.path().starts_with('/') => {
            let mut parts = target.into_parts();
            parts.scheme = request.scheme().cloned();
            parts.authority = request.authority().cloned();
            Uri::from_parts(parts).ok()
        }
        None => None,
        Some(authority) => {
            let origin = request
                .authority()
                .map(|authority| authority.as_str())
                .or_else(|| {
                    headers
                        .get(header::HOST)
                        .and_then(|host| host.to_str().ok())
                })?;
            if !authority.as_str().eq_ignore_ascii_case(origin) {
                return None;
            }
            Some(target)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_methods_invalidate_and_safe_ones_do_not() {
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(invalidates(&method, true), "{method}");
            assert!(invalidates(&method, false), "{method}");
        }
        let purge = Method::from_bytes(b"PURGE").unwrap();
        assert!(invalidates(&purge, true), "unknown methods are unsafe");
        assert!(!invalidates(&purge, false), "unless they are left out");
        for method in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(!invalidates(&method, true), "{method}");
        }
    }

    #[test]
    fn only_same_origin_locations_are_targets() {
        let request: Uri = "/items/1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("shop.example"));
        let target = |value: &'static str| {
            same_origin(&request, &headers, &HeaderValue::from_static(value))
                .map(|uri| uri.to_string())
        };
        assert_eq!(target("/items").as_deref(), Some("/items"));
        assert_eq!(
            target("http://SHOP.example/items?page=2").as_deref(),
            Some("http://SHOP.example/items?page=2")
        );
        // With an absolute request URI (HTTP/2), a path gets the request's origin.
        let absolute: Uri = "https://shop.example/items/1".parse().unwrap();
        let moved = same_origin(
            &absolute,
            &HeaderMap::new(),
            &HeaderValue::from_static("/items"),
        );
        assert_eq!(
            moved.map(|uri| uri.to_string()).as_deref(),
            Some("https://shop.example/items")
        );
        assert_eq!(target("http://other.example/items"), None);
        assert_eq!(target("../items"), None);
    }
}
