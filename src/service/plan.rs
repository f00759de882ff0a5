//! The plan: what a request is to the cache before anything is looked up — the URI the
//! client sent (nest prefix included), its key, and whether a layer attached to its route
//! takes it over.

use super::*;

/// The request's URI as the client sent it: under a nested axum router the request's own
/// URI has lost the nest prefix (`/users/1` for `/api/users/1`), which would give two
/// mounts of one router the same keys; axum keeps the original (`OriginalUri`).
#[cfg(feature = "axum")]
pub(crate) fn public_uri<'a>(uri: &'a Uri, extensions: &'a http::Extensions) -> &'a Uri {
    match extensions.get::<axum::extract::OriginalUri>() {
        Some(original) => &original.0,
        None => uri,
    }
}

#[cfg(not(feature = "axum"))]
pub(crate) fn public_uri<'a>(uri: &'a Uri, _: &'a http::Extensions) -> &'a Uri {
    uri
}

/// The request's key, built from its [`public_uri`].
pub(super) fn build_key<K: KeyBuilder + ?Sized>(
    key_builder: &K,
    parts: &mut Parts,
) -> Option<CacheKey> {
    let public = public_uri(&parts.uri, &parts.extensions);
    if public.path() == parts.uri.path() {
        return key_builder.build_key(parts);
    }
    let public = public.clone();
    let nested = std::mem::replace(&mut parts.uri, public);
    let key = key_builder.build_key(parts);
    parts.uri = nested;
    key
}

/// The route pattern of a request about to go to the inner service, when a layer attached
/// to that route could claim it on its way (see [`claimed_on_the_way`]): a reference
/// count, not a copy.
#[cfg(feature = "axum")]
pub(super) fn watched_pattern(
    config: &Config,
    parts: &Parts,
) -> Option<axum::extract::MatchedPath> {
    if config.routes.is_attached() {
        return None;
    }
    parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .cloned()
}

/// Whether a layer attached to the request's route (derived from this one with
/// [`CacheLayer::for_route`](crate::CacheLayer::for_route)) cached the request on its way
/// through the inner service: this layer then leaves the response alone — it neither
/// stores nor counts it, nor adds its headers.
#[cfg(feature = "axum")]
pub(super) fn claimed_on_the_way(
    config: &Config,
    watched: Option<&axum::extract::MatchedPath>,
) -> bool {
    watched.is_some_and(|pattern| {
        config
            .routes
            .attached_routes
            .get(pattern.as_str())
            .is_some()
    })
}

#[cfg(not(feature = "axum"))]
pub(super) fn watched_pattern(_: &Config, _: &Parts) -> Option<std::convert::Infallible> {
    None
}

#[cfg(not(feature = "axum"))]
pub(super) fn claimed_on_the_way(_: &Config, _: Option<&std::convert::Infallible>) -> bool {
    false
}

#[cfg(feature = "axum")]
pub(super) fn matched_path<B>(request: &Request<B>) -> Option<&str> {
    request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(axum::extract::MatchedPath::as_str)
}

#[cfg(not(feature = "axum"))]
pub(super) fn matched_path<B>(_: &Request<B>) -> Option<&str> {
    None
}
