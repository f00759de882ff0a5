//! From URLs to the keys a layer stores them under, for purges.
//!
//! A URL's entries are its key and the key's variant slots, under the layer's namespace and
//! the namespace of the route the URL belongs to. When the key builder is the
//! [`DefaultKeyBuilder`] its keys' grammar is known (`GET:host/path?query|header=value`,
//! see [`crate::key`]), so that the keys of a URL for every host, for every value of the
//! keyed headers, or of every URL under a path prefix can be picked out of the layer's keys
//! exactly ([`UrlMatcher`]): parsed, never matched by a pattern that could run past a
//! boundary. Keys too long to keep whole (hashed) are matched by the part they keep, and
//! purged when that part could be the URL's: a purge may take such a key too many, never
//! one too few.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Uri};

use crate::config::Config;
use crate::fence::Scope;
use crate::key::{CacheKey, DefaultKeyBuilder, Keys};
use crate::store::{StoreError, StoreErrorKind};

/// The key of a GET of `uri` with `headers`, under the layer's namespace and
/// `route_namespace`, and its variant slots; `None` when the key builder gives no key.
pub(crate) fn exact_keys(
    config: &Config,
    keys: &Keys,
    uri: &Uri,
    headers: &HeaderMap,
    route_namespace: Option<&str>,
) -> Option<Vec<String>> {
    let key = keys.builder().build_key(&get_parts(uri, headers)?)?;
    Some(with_slots(config, key, route_namespace))
}

/// The head of a GET of `uri` with `headers`: what a key builder is given for a request
/// to the URL.
fn get_parts(uri: &Uri, headers: &HeaderMap) -> Option<http::request::Parts> {
    let (mut parts, ()) = Request::get(uri.clone()).body(()).ok()?.into_parts();
    parts.headers = headers.clone();
    Some(parts)
}

/// `key` under the layer's namespace (and `route_namespace`), and its variant slots (RFC
/// 9111 §4.4 invalidates every stored response for the URI).
pub(crate) fn with_slots(
    config: &Config,
    key: CacheKey,
    route_namespace: Option<&str>,
) -> Vec<String> {
    let key = key.namespaced(&config.namespace, route_namespace, config.max_key_len);
    let slots = config.max_variants as u64 - 1;
    let mut keys = Vec::with_capacity(1 + slots as usize);
    keys.extend((0..slots).map(|slot| key.variant(slot).into_string()));
    keys.push(key.into_string());
    keys
}

/// What a URL purge covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UrlPurge {
    /// The URL itself (path and query).
    Exact,
    /// Every URL whose path is the given one or goes on below it (`/users/42` covers
    /// `/users/42`, `/users/42?tab=2` and `/users/42/posts`, not `/users/420`; a prefix
    /// that ends with `/` covers whatever follows it).
    Under,
}

/// Where the entries of `uri` (or of the URLs under its path) are: the exact keys when the
/// key builder can name them, or the layer's keys that a [`UrlMatcher`] accepts.
///
/// A URL without a host, on a layer whose [`DefaultKeyBuilder`] keys the host, covers every
/// host (a scan of the layer's keys); a URL with one covers that host only. Keys built by
/// another key builder are found for [`UrlPurge::Exact`] only, by building the key of a GET
/// of the URL (with its host as `Host`).
pub(crate) fn url_scope(
    config: &Config,
    keys: &Keys,
    uri: &Uri,
    purge: UrlPurge,
) -> Result<Scope, StoreError> {
    let mut headers = HeaderMap::new();
    if let Some(authority) = uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, host);
    }
    let no_key = || {
        StoreError::new(
            StoreErrorKind::Other,
            "the key builder gives no key for this URL",
        )
    };
    let Some(default) = keys.default_builder() else {
        if purge == UrlPurge::Under {
            return Err(StoreError::new(
                StoreErrorKind::Unsupported,
                "purging by path prefix needs the DefaultKeyBuilder: the keys of another \
                 key builder cannot be told by path (tag the entries instead)",
            ));
        }
        let route_namespace = route_namespace(config, uri.path());
        return exact_keys(config, keys, uri, &headers, route_namespace.as_deref())
            .map(Scope::Keys)
            .ok_or_else(no_key);
    };
    let host_known = uri.authority().is_some() || !default.keys_request_host();
    if purge == UrlPurge::Exact && host_known && !default.keys_headers() {
        let route_namespace = route_namespace(config, uri.path());
        return exact_keys(config, keys, uri, &headers, route_namespace.as_deref())
            .map(Scope::Keys)
            .ok_or_else(no_key);
    }
    let matcher = UrlMatcher::new(config, default, uri, &headers, purge).ok_or_else(no_key)?;
    Ok(Scope::Prefix {
        prefix: matcher.layer.clone(),
        filter: Some(Arc::new(move |key: &str| matcher.matches(key))),
    })
}

/// The namespace of the route `path` belongs to, if it has one.
fn route_namespace(config: &Config, path: &str) -> Option<Arc<str>> {
    config
        .routes
        .policy_for_path(path)
        .and_then(|policy| policy.namespace.clone())
}

/// Picks the keys of a URL, or of the URLs under a path, out of a layer's keys
/// (`layer:[route:]GET:host/path?query|headers[#v<slot>]`, or the hashed form).
#[derive(Debug)]
pub(crate) struct UrlMatcher {
    /// `namespace:`
    layer: String,
    /// `route:` for each route namespace of the layer.
    routes: Vec<String>,
    /// The host as keys hold it; `None` for any.
    host: Option<String>,
    /// The normalized path and query (exact), or path (under).
    target: String,
    purge: UrlPurge,
}

impl UrlMatcher {
    fn new(
        config: &Config,
        builder: &DefaultKeyBuilder,
        uri: &Uri,
        headers: &HeaderMap,
        purge: UrlPurge,
    ) -> Option<Self> {
        use crate::key::KeyBuilder;
        let built = builder.build_key(&get_parts(uri, headers)?)?.into_string();
        let url = built.strip_prefix("GET:")?;
        let url = url.split('|').next().unwrap_or_default();
        let slash = url.find('/')?;
        let (host, mut target) = url.split_at(slash);
        if purge == UrlPurge::Under {
            target = target.split('?').next().unwrap_or_default();
        }
        let host =
            (uri.authority().is_some() && builder.keys_request_host()).then(|| host.to_owned());
        Some(Self {
            layer: format!("{}:", config.namespace),
            routes: config
                .routes
                .namespaces()
                .iter()
                .map(|route| format!("{route}:"))
                .collect(),
            host,
            target: target.to_owned(),
            purge,
        })
    }

    /// Whether `key` is one of the URL's (or one under the path).
    pub(crate) fn matches(&self, key: &str) -> bool {
        let Some(rest) = key.strip_prefix(self.layer.as_str()) else {
            return false;
        };
        let built = rest.strip_prefix("GET:").or_else(|| {
            self.routes.iter().find_map(|route| {
                rest.strip_prefix(route.as_str())
                    .and_then(|rest| rest.strip_prefix("GET:"))
            })
        });
        let Some(built) = built else {
            return false;
        };
        let built = CacheKey::without_slot(built);
        // Default keys escape `#`: one left is a hashed key's, after the part it keeps.
        let (readable, hashed) = match built.find('#') {
            Some(hash) => (&built[..hash], true),
            None => (built, false),
        };
        let Some(slash) = readable.find('/') else {
            // A hashed key cut within its host.
            return hashed
                && self
                    .host
                    .as_deref()
                    .is_none_or(|host| host.starts_with(readable));
        };
        let (host, rest) = readable.split_at(slash);
        if self.host.as_deref().is_some_and(|wanted| wanted != host) {
            return false;
        }
        // After normalization a path and a query hold no `|`: the first starts the headers.
        let headers_at = rest.find('|');
        let url = &rest[..headers_at.unwrap_or(rest.len())];
        // A hashed key that keeps no header part may have been cut within the URL.
        let cut = hashed && headers_at.is_none();
        if cut && self.target.starts_with(url) {
            return true;
        }
        match self.purge {
            UrlPurge::Exact => url == self.target,
            UrlPurge::Under => url.strip_prefix(self.target.as_str()).is_some_and(|after| {
                self.target.ends_with('/')
                    || after.is_empty()
                    || after.starts_with('/')
                    || after.starts_with('?')
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use crate::policy::RoutePolicy;

    fn config() -> Config {
        let mut config = Config::new(Arc::new(MemoryStore::new(1 << 20)));
        config.namespace = Arc::from("ns");
        let stats = config.funnel.stats.clone();
        config
            .routes
            .insert_exact("/users/{id}", RoutePolicy::new().namespace("users"), &stats);
        config
    }

    fn matcher(uri: &str, purge: UrlPurge, builder: DefaultKeyBuilder) -> UrlMatcher {
        let uri: Uri = uri.parse().unwrap();
        let mut headers = HeaderMap::new();
        if let Some(authority) = uri.authority() {
            headers.insert(header::HOST, authority.as_str().parse().unwrap());
        }
        UrlMatcher::new(&config(), &builder, &uri, &headers, purge).unwrap()
    }

    #[test]
    fn a_url_without_a_host_matches_it_on_every_host_and_nothing_else() {
        let m = matcher(
            "/users/42?b=2&a=1",
            UrlPurge::Exact,
            DefaultKeyBuilder::new(),
        );
        assert!(m.matches("ns:GET:a.example/users/42?a=1&b=2"));
        assert!(m.matches("ns:users:GET:b.example:8080/users/42?a=1&b=2#v3"));
        assert!(!m.matches("ns:GET:a.example/users/42"));
        assert!(!m.matches("ns:GET:a.example/users/42?a=1&b=2&c=3"));
        assert!(!m.matches("other:GET:a.example/users/42?a=1&b=2"));
        assert!(!m.matches("nsx:GET:a.example/users/42?a=1&b=2"));
        assert!(!m.matches("ns:unknown:GET:a.example/users/42?a=1&b=2"));
    }

    #[test]
    fn a_url_with_a_host_matches_that_host_and_every_header_value() {
        let builder = DefaultKeyBuilder::new().header(header::ACCEPT_LANGUAGE);
        let m = matcher("http://A.example/x", UrlPurge::Exact, builder);
        assert!(m.matches("ns:GET:a.example/x|accept-language=de"));
        assert!(m.matches("ns:GET:a.example/x|accept-language"));
        assert!(!m.matches("ns:GET:b.example/x|accept-language=de"));
        assert!(!m.matches("ns:GET:a.example/x/y|accept-language=de"));
    }

    #[test]
    fn a_prefix_stops_at_segment_boundaries() {
        let m = matcher("/users/42", UrlPurge::Under, DefaultKeyBuilder::new());
        assert!(m.matches("ns:GET:h/users/42"));
        assert!(m.matches("ns:GET:h/users/42?tab=2"));
        assert!(m.matches("ns:GET:h/users/42/posts#v1"));
        assert!(!m.matches("ns:GET:h/users/420"));
        assert!(!m.matches("ns:GET:h/users/4"));
        let slash = matcher("/users/4/", UrlPurge::Under, DefaultKeyBuilder::new());
        assert!(slash.matches("ns:GET:h/users/4/x"));
        assert!(!slash.matches("ns:GET:h/users/4"));
    }

    #[test]
    fn escaped_characters_are_compared_normalized() {
        let m = matcher(
            "/caf%c3%a9/%7Euser",
            UrlPurge::Exact,
            DefaultKeyBuilder::new(),
        );
        assert!(m.matches("ns:GET:h/caf%C3%A9/~user"));
        let star = matcher("/a*b?[x]", UrlPurge::Exact, DefaultKeyBuilder::new());
        assert!(!star.matches("ns:GET:h/aXb?[x]"));
    }

    #[test]
    fn hashed_keys_are_matched_by_what_they_keep() {
        let config = config();
        let long = format!("/users/42/{}", "x".repeat(300));
        let key = CacheKey::new(format!("GET:h{long}")).namespaced("ns", None, 250);
        assert!(key.as_str().contains('#'));
        let m = matcher(&long, UrlPurge::Exact, DefaultKeyBuilder::new());
        assert!(m.matches(key.as_str()));
        assert!(m.matches(key.variant(2).as_str()));
        let under = matcher("/users/42", UrlPurge::Under, DefaultKeyBuilder::new());
        assert!(under.matches(key.as_str()));
        let other = matcher("/teams/1", UrlPurge::Under, DefaultKeyBuilder::new());
        assert!(!other.matches(key.as_str()));
        drop(config);
    }

    fn segment() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        proptest::collection::vec(
            prop_oneof![
                Just("a"),
                Just("%41"),
                Just("%2F"),
                Just("%7c"),
                Just("~"),
                Just("*"),
                Just("["),
                Just("%23"),
                Just("b"),
                Just("é"),
            ],
            1..6,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest::proptest! {
        /// The key a request stores under is found by a purge of its URL (with or without
        /// the host), and of every path prefix of it at a segment boundary — whatever the
        /// escaping, the variant slot, or the hashing of a long key; and not by a purge of
        /// a sibling path.
        #[test]
        fn a_stored_key_is_found_by_its_url_and_its_prefixes(
            segments in proptest::collection::vec(segment(), 1..6),
            query in proptest::option::of(segment()),
            slot in proptest::option::of(0u64..7),
            long in proptest::bool::ANY,
        ) {
            use crate::key::KeyBuilder;
            let mut path = format!("/{}", segments.join("/"));
            if long {
                path.push_str(&"/x".repeat(150));
            }
            let url = match &query {
                Some(query) => format!("{path}?q={query}"),
                None => path.clone(),
            };
            let Ok(uri) = format!("http://shop.example{url}").parse::<Uri>() else {
                return Ok(());
            };
            let (parts, ()) = Request::get(uri).body(()).unwrap().into_parts();
            let built = DefaultKeyBuilder::new().build_key(&parts).unwrap();
            let stored = built.namespaced("ns", None, 250);
            let stored = match slot {
                Some(slot) => stored.variant(slot),
                None => stored,
            };
            let key = stored.as_str();
            let with_host = format!("http://shop.example{url}");
            proptest::prop_assert!(matcher(&url, UrlPurge::Exact, DefaultKeyBuilder::new()).matches(key), "{} by {}", key, url);
            proptest::prop_assert!(matcher(&with_host, UrlPurge::Exact, DefaultKeyBuilder::new()).matches(key), "{} by {}", key, with_host);
            let other_host = format!("http://other.example{url}");
            proptest::prop_assert!(!matcher(&other_host, UrlPurge::Exact, DefaultKeyBuilder::new()).matches(key));
            for end in 1..=segments.len() {
                let prefix = format!("/{}", segments[..end].join("/"));
                proptest::prop_assert!(matcher(&prefix, UrlPurge::Under, DefaultKeyBuilder::new()).matches(key), "{} under {}", key, prefix);
            }
            let sibling = format!("/{}z", segments[0]);
            if !CacheKey::without_slot(key).contains('#') {
                proptest::prop_assert!(!matcher(&sibling, UrlPurge::Under, DefaultKeyBuilder::new()).matches(key), "{} under {}", key, sibling);
            }
        }
    }

    #[test]
    fn slots_are_stripped_only_when_they_are_slots() {
        assert_eq!(CacheKey::without_slot("GET:h/a#v12"), "GET:h/a");
        assert_eq!(CacheKey::without_slot("GET:h/a#v"), "GET:h/a#v");
        assert_eq!(CacheKey::without_slot("GET:h/a#0123abc"), "GET:h/a#0123abc");
    }
}
