//! Cache keys: what makes two requests share an entry.
//!
//! A [`KeyBuilder`] turns a request's [`Parts`] into a [`CacheKey`], or `None` to bypass the
//! cache for that request. Closures `Fn(&Parts) -> Option<CacheKey>` are key builders, and
//! [`DefaultKeyBuilder`] covers the common case: method class (HEAD shares GET), the host,
//! path and normalized query, plus any request headers you name.
//!
//! The layer prefixes every key with its namespace (`namespace:`), and replaces keys longer
//! than its limit with a readable prefix and a stable 128-bit hash (XXH3), so keys stay
//! readable in `redis-cli` and bounded in size:
//!
//! ```
//! use http::Request;
//! use tower_response_cache::key::{DefaultKeyBuilder, KeyBuilder};
//!
//! let builder = DefaultKeyBuilder::new().drop_query_param("utm_*");
//! let (parts, ()) = Request::get("/users/42?b=2&utm_source=x&a=1")
//!     .header("host", "Shop.example")
//!     .body(())
//!     .unwrap()
//!     .into_parts();
//! let key = builder.build_key(&parts).unwrap();
//! assert_eq!(key.as_str(), "GET:shop.example/users/42?a=1&b=2");
//! ```
//!
//! # What the key must hold
//!
//! Everything a response depends on must be in the key or named by the response's `Vary`:
//! a request header that changes the response but is in neither is an *unkeyed input*, and
//! whoever sends it first decides what every later client of that key receives (cache
//! poisoning). The default key holds the host for that reason: an application that renders
//! links from `Host` would otherwise store a page built for `Host: evil.example` under the
//! key of the real site. If your application reads other request headers (`X-Forwarded-Host`,
//! `X-Forwarded-Proto`, `X-Original-URL`, a method override, a tenant header), add them with
//! [`DefaultKeyBuilder::header`], have the response say `Vary`, or strip them before the cache
//! (a proxy in front should set them itself and drop the client's).
//!
//! # The host
//!
//! The host is the URI's authority when the request has one (HTTP/2, absolute-form HTTP/1),
//! else the `Host` header: lower-cased, without user information, and without the port when
//! it is the default port of a scheme the URI names (`https://a.example:443/` is
//! `a.example`). Without a scheme (an HTTP/1 `Host` header) the port stays as sent, since
//! the application sees it as sent. A request with more than one `Host` header, a `Host`
//! that is not a valid authority, or a `Host` that disagrees with the URI's authority is
//! not cached (the key builder returns `None`): which of them the application reads is not
//! known. A request with no host at all (a test's `Request::get("/")`) is keyed without one.
//! [`DefaultKeyBuilder::ignore_host`] leaves the host out, for a service that answers one
//! host only (or that is reached only through a proxy that sets `Host` itself).
//!
//! # Credentials in keys
//!
//! Values of `Authorization`, `Proxy-Authorization` and `Cookie` named with
//! [`DefaultKeyBuilder::header`] (per-user caching) never appear in the key: it holds a hash
//! of the value (the first 128 bits of its SHA-256, in hex), so the key names a store shows
//! (`redis-cli --scan`) reveal no credential. [`DefaultKeyBuilder::hashed_header`] does the
//! same for any other header.
//!
//! # Normalization
//!
//! Path and query are normalized as RFC 3986 §6.2.2 allows: percent-encoded unreserved
//! characters are decoded (`%41` is `A`), other escapes get upper-case hex digits (`%2f` is
//! `%2F`), and characters that may not appear in a URI (`|`, `{`, space, non-ASCII, ...) are
//! percent-encoded. Reserved characters keep their form: `a=%26` and `a=&` stay distinct.
//! Query parameters are sorted by default ([`QueryMode`]); empty parameters (`a=1&&b=2`) are
//! dropped.
//!
//! # Why keys never collide
//!
//! After normalization a path and a query contain no `|` and no `#`, and a path contains no
//! `?`, so the parts of a key can be told apart: `METHOD:host/path?query|header=value|…`.
//! The host contains no `/` (it is escaped like the rest), so the first `/` after the
//! method starts the path; a request whose path does not start with `/` (`OPTIONS *`) has
//! no key. Header values are escaped the same way (`%`, `|`, `#`, space and non-visible
//! bytes become `%XX`). A hashed key is the only kind that contains a literal `#`. Two
//! requests that differ after normalization therefore never share a key.

// Past 600 lines on purpose: one subject, the key and its builder, a third of it docs; the
// host and escaping are in `host` and `escape`.

// Over 600 lines: about 790 of code — the key grammar, the `Host` parser (RFC 9110 §7.2,
// RFC 3986 §3.2) and `DefaultKeyBuilder`, which share their escaping rules — then their
// tests. The parser is the next part to move to a file of its own.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::request::Parts;
use http::uri::{Authority, Scheme};
use http::{HeaderName, header};
use sha2::{Digest, Sha256};

mod escape;
mod host;

use escape::{normalize_component, push_header_value};
use host::RequestHost;

/// The key an entry is stored under.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(String);

impl CacheKey {
    /// A key from any string.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as a `String`.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The key of variant slot `slot` of this key: `key#v<slot>`. The default key
    /// builder escapes `#`, so a slot key never equals another URL's key.
    pub(crate) fn variant(&self, slot: u64) -> Self {
        use fmt::Write;
        let mut key = String::with_capacity(self.0.len() + 4);
        key.push_str(&self.0);
        let _ = write!(key, "#v{slot}");
        Self(key)
    }

    /// The key without a variant slot's suffix ([`variant`](Self::variant)).
    pub(crate) fn without_slot(key: &str) -> &str {
        // From the end: the digits, then `#v` before them (no search through the key).
        let bytes = key.as_bytes();
        let digits = bytes
            .iter()
            .rev()
            .take_while(|byte| byte.is_ascii_digit())
            .count();
        let at = bytes.len() - digits;
        if digits > 0 && at >= 2 && &bytes[at - 2..at] == b"#v" {
            // `#` is ASCII: a character boundary.
            &key[..at - 2]
        } else {
            key
        }
    }

    /// `namespace:key` — `namespace:route:key` with a route's own namespace — or a hashed
    /// form when that is longer than `max_len` bytes: the namespaces, the first bytes of the
    /// key, `#` and the hex XXH3-128 of the whole key. Either way the key starts with the
    /// namespaces, so that a prefix finds every key of a layer, or of one of its routes.
    pub(crate) fn namespaced(self, namespace: &str, route: Option<&str>, max_len: usize) -> Self {
        let mut key = self.0;
        let prefix_len = namespace.len() + 1 + route.map_or(0, |route| route.len() + 1);
        if prefix_len + key.len() <= max_len {
            key.reserve(prefix_len);
            if let Some(route) = route {
                key.insert(0, ':');
                key.insert_str(0, route);
            }
            key.insert(0, ':');
            key.insert_str(0, namespace);
            return Self(key);
        }
        let hash = xxhash_rust::xxh3::xxh3_128(key.as_bytes());
        let mut keep = HASHED_PREFIX_LEN.min(key.len());
        while !key.is_char_boundary(keep) {
            keep -= 1;
        }
        match route {
            Some(route) => Self(format!("{namespace}:{route}:{}#{hash:032x}", &key[..keep])),
            None => Self(format!("{namespace}:{}#{hash:032x}", &key[..keep])),
        }
    }
}

/// How many bytes of a hashed key stay readable.
const HASHED_PREFIX_LEN: usize = 64;

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for CacheKey {
    fn from(key: String) -> Self {
        Self(key)
    }
}

impl From<&str> for CacheKey {
    fn from(key: &str) -> Self {
        Self(key.to_owned())
    }
}

impl AsRef<str> for CacheKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Derives the cache key of a request.
///
/// Returning `None` bypasses the cache for the request (it is counted as a bypass). The key
/// must capture everything the response depends on, other than the headers named by the
/// response's `Vary`; the layer adds its namespace in front.
///
/// Closures implement it; [`CacheLayer::key_fn`](crate::CacheLayer::key_fn) takes one and
/// infers its argument's type (given to [`CacheLayer::key_builder`](crate::CacheLayer::key_builder),
/// a closure needs `|parts: &Parts|`):
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
pub trait KeyBuilder: std::any::Any + Send + Sync {
    /// The key for a request, or `None` to bypass the cache.
    fn build_key(&self, parts: &Parts) -> Option<CacheKey>;
}

impl<F> KeyBuilder for F
where
    F: Fn(&Parts) -> Option<CacheKey> + Send + Sync + 'static,
{
    fn build_key(&self, parts: &Parts) -> Option<CacheKey> {
        self(parts)
    }
}

/// A layer's key builder, its type erased: a [`CacheLayer`](crate::CacheLayer) and its
/// services have one type whatever builds their keys.
#[derive(Clone)]
pub(crate) struct Keys {
    builder: Arc<dyn KeyBuilder>,
    /// The builder's type, for `Debug` (closures have no other name).
    name: &'static str,
}

impl Keys {
    pub(crate) fn new<K: KeyBuilder>(builder: K) -> Self {
        Self {
            builder: Arc::new(builder),
            name: std::any::type_name::<K>(),
        }
    }

    pub(crate) fn builder(&self) -> &dyn KeyBuilder {
        &*self.builder
    }

    /// The builder, when it is a [`DefaultKeyBuilder`]: its keys' grammar is known, so that
    /// purges can find the keys of a URL or of a path prefix among a store's.
    pub(crate) fn default_builder(&self) -> Option<&DefaultKeyBuilder> {
        let builder: &dyn std::any::Any = &*self.builder;
        builder.downcast_ref()
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// How [`DefaultKeyBuilder`] treats the query string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryMode {
    /// Sort parameters, so `?b=2&a=1` and `?a=1&b=2` share an entry. The default.
    #[default]
    Sorted,
    /// Keep parameters in the order the client sent them.
    Ordered,
    /// Leave the query out of the key entirely.
    Ignore,
}

/// The key builder used unless you set another: `METHOD:host/path?query`, plus named
/// headers.
///
/// - HEAD shares GET's key (a HEAD hit is answered from the GET entry).
/// - The host as the [module docs](self#the-host) describe; requests whose host is
///   ambiguous are not cached. [`ignore_host`](Self::ignore_host) leaves it out.
/// - The query is normalized and sorted ([`QueryMode`]); parameters you name are dropped
///   ([`drop_query_param`](Self::drop_query_param), with a trailing `*` for a prefix).
/// - Request headers you name ([`header`](Self::header)) are appended as `|name=value`
///   (`|name` when absent); credentials (`Authorization`, `Proxy-Authorization`, `Cookie`)
///   and [`hashed_header`](Self::hashed_header)s as a hash of their value.
///
/// ```
/// use http::{header, Request};
/// use tower_response_cache::key::{DefaultKeyBuilder, KeyBuilder, QueryMode};
///
/// let builder = DefaultKeyBuilder::new()
///     .query(QueryMode::Ordered)
///     .header(header::ACCEPT_LANGUAGE);
/// let (parts, ()) = Request::head("/a?z=1&y=2")
///     .header("host", "Example.com:8080")
///     .header("accept-language", "de, en")
///     .body(())
///     .unwrap()
///     .into_parts();
/// assert_eq!(
///     builder.build_key(&parts).unwrap().as_str(),
///     "GET:example.com:8080/a?z=1&y=2|accept-language=de,%20en"
/// );
///
/// // One host only: leave it out.
/// let single = DefaultKeyBuilder::new().ignore_host();
/// assert_eq!(single.build_key(&parts).unwrap().as_str(), "GET:/a?y=2&z=1");
/// ```
#[derive(Clone, Debug)]
pub struct DefaultKeyBuilder {
    query: QueryMode,
    host: HostInKey,
    dropped: Arc<[DroppedParam]>,
    headers: Arc<[KeyedHeader]>,
}

impl Default for DefaultKeyBuilder {
    fn default() -> Self {
        Self {
            query: QueryMode::default(),
            host: HostInKey::Request,
            dropped: Arc::from([]),
            headers: Arc::from([]),
        }
    }
}

/// Which host a key holds.
#[derive(Clone, Debug)]
enum HostInKey {
    /// The request's own.
    Request,
    /// None.
    Ignored,
    /// This one, as keys hold it, whatever the request's.
    Public(Arc<str>),
}

/// A request header in the key, and whether its value is hashed.
#[derive(Clone, Debug)]
struct KeyedHeader {
    name: HeaderName,
    hashed: bool,
}

/// Headers that carry credentials: their values are hashed wherever the cache keeps them
/// (key names, the request values a `Vary` entry is selected by).
pub(crate) fn is_credential(name: &HeaderName) -> bool {
    *name == header::AUTHORIZATION
        || *name == header::PROXY_AUTHORIZATION
        || *name == header::COOKIE
}

/// The first 128 bits of the SHA-256 of `value`, as 32 lower-case hex digits.
pub(crate) fn credential_hash(value: &[u8]) -> String {
    let digest = Sha256::digest(value);
    let mut hex = String::with_capacity(32);
    for byte in &digest[..16] {
        hex.push(char::from(HEX_LOWER[usize::from(byte >> 4)]));
        hex.push(char::from(HEX_LOWER[usize::from(byte & 0xf)]));
    }
    hex
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

#[derive(Clone, Debug)]
enum DroppedParam {
    Exact(String),
    Prefix(String),
}

impl DroppedParam {
    fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(exact) => name == exact,
            Self::Prefix(prefix) => name.starts_with(prefix.as_str()),
        }
    }
}

impl DefaultKeyBuilder {
    /// Sorted query, no dropped parameters, no headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// How the query string enters the key. Default: [`QueryMode::Sorted`].
    #[must_use]
    pub fn query(mut self, mode: QueryMode) -> Self {
        self.query = mode;
        self
    }

    /// Leaves a query parameter out of the key: an exact name (`"fbclid"`), or a prefix
    /// ending in `*` (`"utm_*"`). Names are compared after normalization.
    #[must_use]
    pub fn drop_query_param(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        let param = match name.strip_suffix('*') {
            Some(prefix) => DroppedParam::Prefix(prefix.to_owned()),
            None => DroppedParam::Exact(name),
        };
        let mut dropped = self.dropped.to_vec();
        dropped.push(param);
        self.dropped = dropped.into();
        self
    }

    /// Leaves the host out of the key: requests for the same path on any host share an
    /// entry. Only for a service that answers one host, or whose responses never depend on
    /// it (see [the module docs](self#what-the-key-must-hold)). Default: the host is in the
    /// key.
    #[must_use]
    pub fn ignore_host(mut self) -> Self {
        self.host = HostInKey::Ignored;
        self
    }

    /// Keys every request under `host`, the name clients reach the service by, whatever
    /// host the request names: for instances that answer one public name but are also
    /// reached by others (`localhost:3000` and `localhost:3001` on a developer's machine,
    /// a pod's address from inside the cluster, a load balancer's health checks), so that
    /// they all share the public name's entries. Keys read as the public URL
    /// (`GET:shop.example/users/42`), and a purge by URL finds them whatever host it names.
    ///
    /// The request's `Host` then changes no key, so, as with
    /// [`ignore_host`](Self::ignore_host), responses must not depend on it (see [the
    /// module docs](self#what-the-key-must-hold)); behind a proxy that sets `Host` itself,
    /// they do not. The host is taken as [the module docs](self#the-host) describe (lower
    /// case; a port stays as given). Default: the request's own host.
    ///
    /// ```
    /// use http::Request;
    /// use tower_response_cache::key::{DefaultKeyBuilder, KeyBuilder};
    ///
    /// let builder = DefaultKeyBuilder::new().public_host("Shop.example".parse().unwrap());
    /// for host in ["localhost:3000", "localhost:3001", "10.0.0.7:8080"] {
    ///     let (parts, ()) = Request::get("/users/42").header("host", host).body(()).unwrap().into_parts();
    ///     assert_eq!(builder.build_key(&parts).unwrap().as_str(), "GET:shop.example/users/42");
    /// }
    /// ```
    #[must_use]
    pub fn public_host(mut self, host: Authority) -> Self {
        let mut keyed = String::with_capacity(host.as_str().len());
        RequestHost::from_authority(&host, None).push_to(&mut keyed);
        self.host = HostInKey::Public(keyed.into());
        self
    }

    /// Adds a request header's value to the key (e.g. a tenant header, `Accept-Language`
    /// for localized pages, `Authorization` for per-user entries). The values of
    /// `Authorization`, `Proxy-Authorization` and `Cookie` are hashed
    /// ([`hashed_header`](Self::hashed_header)).
    #[must_use]
    pub fn header(self, name: HeaderName) -> Self {
        let hashed = is_credential(&name);
        self.with_header(name, hashed)
    }

    /// Adds a request header to the key as a hash of its value (the first 128 bits of its
    /// SHA-256), for headers that carry secrets such as API keys: key names reveal nothing
    /// of the value. Two requests share an entry when their values are equal.
    #[must_use]
    pub fn hashed_header(self, name: HeaderName) -> Self {
        self.with_header(name, true)
    }

    fn with_header(mut self, name: HeaderName, hashed: bool) -> Self {
        let mut headers = self.headers.to_vec();
        headers.push(KeyedHeader { name, hashed });
        self.headers = headers.into();
        self
    }

    fn push_query(&self, out: &mut String, query: &str) {
        let mut params: Vec<Cow<'_, str>> = query
            .split('&')
            .filter(|param| !param.is_empty())
            .map(normalize_component)
            .filter(|param| {
                let name = param.split('=').next().unwrap_or_default();
                !self.dropped.iter().any(|dropped| dropped.matches(name))
            })
            .collect();
        if params.is_empty() {
            return;
        }
        if self.query == QueryMode::Sorted {
            params.sort_unstable();
        }
        out.push('?');
        for (i, param) in params.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.push_str(param);
        }
    }

    /// Appends `|name=value` (or `|name` without the header); `None` when the header is
    /// `Host` and the request's host is ambiguous.
    fn push_header(&self, out: &mut String, parts: &Parts, keyed: &KeyedHeader) -> Option<()> {
        let name = &keyed.name;
        out.push('|');
        out.push_str(name.as_str());
        if name == header::HOST {
            if let Some(host) = RequestHost::of(parts)? {
                out.push('=');
                host.push_to(out);
            }
            return Some(());
        }
        let mut values = parts.headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            return Some(());
        }
        out.push('=');
        if keyed.hashed {
            let mut joined = Vec::new();
            for (i, value) in values.enumerate() {
                if i > 0 {
                    joined.push(b',');
                }
                joined.extend_from_slice(value.as_bytes().trim_ascii());
            }
            out.push_str(&credential_hash(&joined));
            return Some(());
        }
        for (i, value) in values.enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_header_value(out, value.as_bytes().trim_ascii());
        }
        Some(())
    }
}

impl DefaultKeyBuilder {
    /// Whether keys hold the request's host (and so differ by it).
    pub(crate) fn keys_request_host(&self) -> bool {
        matches!(self.host, HostInKey::Request)
    }

    /// Whether keys hold request headers.
    pub(crate) fn keys_headers(&self) -> bool {
        !self.headers.is_empty()
    }
}

impl KeyBuilder for DefaultKeyBuilder {
    fn build_key(&self, parts: &Parts) -> Option<CacheKey> {
        let method = if parts.method == http::Method::HEAD {
            "GET"
        } else {
            parts.method.as_str()
        };
        let path = parts.uri.path();
        let query = parts.uri.query().unwrap_or_default();
        // Room for the namespace the layer puts in front, so that it does not reallocate.
        let mut out = String::with_capacity(method.len() + path.len() + query.len() + 80);
        out.push_str(method);
        out.push(':');
        match &self.host {
            HostInKey::Request => {
                if let Some(host) = RequestHost::of(parts)? {
                    // The host ends where the path begins: a path must start with `/`.
                    if !path.starts_with('/') {
                        return None;
                    }
                    host.push_to(&mut out);
                }
            }
            HostInKey::Public(host) => {
                if !path.starts_with('/') {
                    return None;
                }
                out.push_str(host);
            }
            HostInKey::Ignored => {}
        }
        out.push_str(&normalize_component(path));
        if self.query != QueryMode::Ignore {
            self.push_query(&mut out, query);
        }
        for keyed in self.headers.iter() {
            self.push_header(&mut out, parts, keyed)?;
        }
        Some(CacheKey(out))
    }
}

#[cfg(test)]
mod tests;
