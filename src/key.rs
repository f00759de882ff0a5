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
        match key.rfind("#v") {
            Some(at)
                if key.len() > at + 2
                    && key[at + 2..].bytes().all(|byte| byte.is_ascii_digit()) =>
            {
                &key[..at]
            }
            _ => key,
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

/// The host a request is for: the URI's authority, else its `Host` header.
struct RequestHost<'a> {
    /// Checked: `reg-name`, or an IP literal in brackets.
    host: &'a str,
    /// The port, unless it is the default of the URI's scheme.
    port: Option<u16>,
    /// The port's digits as sent, when they are its canonical form (no leading zeros).
    port_text: Option<&'a str>,
}

impl<'a> RequestHost<'a> {
    /// `Ok(None)` without any host; `None` when it is ambiguous: several `Host` headers, a
    /// `Host` that is no valid `host[:port]`, or one that names another host than the URI.
    fn of(parts: &'a Parts) -> Option<Option<Self>> {
        let mut values = parts.headers.get_all(header::HOST).iter();
        let header = values.next();
        if values.next().is_some() {
            return None;
        }
        let scheme = parts.uri.scheme();
        let from_header = match header {
            // `to_str` is a cheap check (visible ASCII) that gives the `&str` the key is
            // built from; what else a host may not hold, `parse` checks.
            Some(value) => Some(Self::parse(value.to_str().ok()?.trim_ascii(), scheme)?),
            None => None,
        };
        let from_uri = parts
            .uri
            .authority()
            .map(|authority| Self::from_authority(authority, scheme));
        match (from_uri, from_header) {
            (Some(uri), Some(header)) if !uri.same_as(&header) => None,
            (Some(host), _) | (None, Some(host)) => Some(Some(host)),
            (None, None) => Some(None),
        }
    }

    /// A `Host` value: `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2) — a
    /// reg-name or IPv4 address (unreserved, sub-delims, `%`), or an IP literal in brackets,
    /// and a port of up to five digits; no user information. Checked with byte tables
    /// rather than `Authority::try_from`, which copies the value and looks for what a `Host`
    /// may not hold: this runs for every request, hits included.
    fn parse(text: &'a str, scheme: Option<&Scheme>) -> Option<Self> {
        let value = text.as_bytes();
        let (host_len, rest) = if value.first() == Some(&b'[') {
            let end = value.iter().position(|&b| b == b']')?;
            let inside = &value[1..end];
            if inside.is_empty() || !inside.iter().all(|&b| IP_LITERAL[usize::from(b)]) {
                return None;
            }
            (end + 1, &value[end + 1..])
        } else {
            let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
            let host = &value[..end];
            if host.is_empty() || !host.iter().all(|&b| REG_NAME[usize::from(b)]) {
                return None;
            }
            (end, &value[end..])
        };
        let (port, digits) = match rest {
            [] => (None, &[][..]),
            [b':', digits @ ..] => (parse_port(digits)?, digits),
            _ => return None,
        };
        // Every byte up to here is ASCII: the slices fall on character boundaries.
        Some(Self {
            host: text.get(..host_len)?,
            port: port.filter(|&port| Some(port) != default_port(scheme)),
            port_text: (digits.first() != Some(&b'0') || digits.len() == 1)
                .then(|| text.get(text.len() - digits.len()..))
                .flatten(),
        })
    }

    fn from_authority(authority: &'a Authority, scheme: Option<&Scheme>) -> Self {
        Self {
            host: authority.host(),
            port: authority
                .port_u16()
                .filter(|&port| Some(port) != default_port(scheme)),
            port_text: None,
        }
    }

    fn same_as(&self, other: &Self) -> bool {
        self.host.eq_ignore_ascii_case(other.host) && self.port == other.port
    }

    /// The host in lower case with its bytes escaped as the rest of the key, and `:port`.
    fn push_to(&self, out: &mut String) {
        if self.host.bytes().all(|byte| HOST_NORMAL[usize::from(byte)]) {
            out.push_str(self.host);
        } else {
            for byte in self.host.bytes() {
                if HOST_LITERAL[usize::from(byte)] {
                    out.push(char::from(byte.to_ascii_lowercase()));
                } else {
                    push_escaped(out, byte);
                }
            }
        }
        let Some(port) = self.port else {
            return;
        };
        out.push(':');
        if let Some(text) = self.port_text {
            out.push_str(text);
        } else {
            let mut digits = [0u8; 5];
            let mut start = digits.len();
            let mut rest = port;
            loop {
                start -= 1;
                digits[start] = b'0' + (rest % 10) as u8;
                rest /= 10;
                if rest == 0 {
                    break;
                }
            }
            for &digit in &digits[start..] {
                out.push(char::from(digit));
            }
        }
    }
}

/// A port: up to five digits, at most 65 535; empty is no port (RFC 3986 §3.2.3). `None`
/// when it is no port at all.
fn parse_port(digits: &[u8]) -> Option<Option<u16>> {
    if digits.is_empty() {
        return Some(None);
    }
    if digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0u32, |value, digit| value * 10 + u32::from(digit - b'0'));
    u16::try_from(value).ok().map(Some)
}

fn default_port(scheme: Option<&Scheme>) -> Option<u16> {
    match scheme? {
        scheme if *scheme == Scheme::HTTP => Some(80),
        scheme if *scheme == Scheme::HTTPS => Some(443),
        _ => None,
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

/// Whether a byte may stand for itself in a normalized path or query: RFC 3986 unreserved,
/// sub-delims, `:`, `@`, `/` and `?`. `%` is handled separately.
fn is_literal(byte: u8) -> bool {
    LITERAL[usize::from(byte)]
}

fn is_unreserved(byte: u8) -> bool {
    UNRESERVED[usize::from(byte)]
}

/// The byte classes as tables: every byte of every key is classified, and a table is one
/// load where a search of the set is a loop.
const LITERAL: [bool; 256] = byte_class(b"-._~!$&'()*+,;=:@/?");
const UNRESERVED: [bool; 256] = byte_class(b"-._~");
/// A host's bytes that stand for themselves: RFC 3986 `reg-name` without `%` (escaped, so
/// that `%41` and `A` stay apart), and the brackets and colons of an IP literal.
const HOST_LITERAL: [bool; 256] = byte_class(b"-._~!$&'()*+,;=:[]");
/// [`HOST_LITERAL`] without upper-case letters: a host of these goes into the key as it is.
const HOST_NORMAL: [bool; 256] = without_upper_case(HOST_LITERAL);
/// What a `Host` may hold outside brackets: `reg-name` (unreserved, sub-delims and the `%`
/// of percent-encoding), which covers IPv4 addresses.
const REG_NAME: [bool; 256] = byte_class(b"-._~!$&'()*+,;=%");
/// What an IP literal may hold between its brackets: IPv6 (hex digits, `:`, `.`) and
/// IPvFuture (`v`, hex, `.`, unreserved, sub-delims, `:`).
const IP_LITERAL: [bool; 256] = byte_class(b"-._~!$&'()*+,;=:");

const fn without_upper_case(mut class: [bool; 256]) -> [bool; 256] {
    let mut byte = b'A';
    while byte <= b'Z' {
        class[byte as usize] = false;
        byte += 1;
    }
    class
}

/// ASCII letters and digits, and `extra`.
const fn byte_class(extra: &[u8]) -> [bool; 256] {
    let mut class = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        class[byte] = (byte as u8).is_ascii_alphanumeric();
        byte += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        class[extra[i] as usize] = true;
        i += 1;
    }
    class
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn push_escaped(out: &mut String, byte: u8) {
    out.push('%');
    out.push(char::from(HEX_UPPER[usize::from(byte >> 4)]));
    out.push(char::from(HEX_UPPER[usize::from(byte & 0xf)]));
}

/// The escape at `bytes[i]` (a `%`), decoded, if two hex digits follow.
fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
    let high = hex_value(*bytes.get(i + 1)?)?;
    let low = hex_value(*bytes.get(i + 2)?)?;
    Some(high << 4 | low)
}

/// Whether a component is already in normal form, so that it can be borrowed.
fn is_normal(component: &str) -> bool {
    let bytes = component.as_bytes();
    bytes.iter().enumerate().all(|(i, &byte)| match byte {
        b'%' => escape_at(bytes, i).is_some_and(|decoded| {
            !is_unreserved(decoded)
                && !bytes[i + 1].is_ascii_lowercase()
                && !bytes[i + 2].is_ascii_lowercase()
        }),
        _ => is_literal(byte),
    })
}

/// RFC 3986 §6.2.2 normalization of a path or a query parameter (see the module docs).
fn normalize_component(component: &str) -> Cow<'_, str> {
    if is_normal(component) {
        return Cow::Borrowed(component);
    }
    let bytes = component.as_bytes();
    let mut out = String::with_capacity(component.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            match escape_at(bytes, i) {
                Some(decoded) if is_unreserved(decoded) => out.push(char::from(decoded)),
                Some(decoded) => push_escaped(&mut out, decoded),
                // A lone `%` is a literal percent sign.
                None => {
                    push_escaped(&mut out, b'%');
                    i += 1;
                    continue;
                }
            }
            i += 3;
        } else {
            if is_literal(byte) {
                out.push(char::from(byte));
            } else {
                push_escaped(&mut out, byte);
            }
            i += 1;
        }
    }
    Cow::Owned(out)
}

/// Header values: visible ASCII stands for itself but for the key's separators and `%`;
/// space and every other byte is escaped.
fn push_header_value(out: &mut String, value: &[u8]) {
    for &byte in value {
        match byte {
            b'%' | b'|' | b'#' => push_escaped(out, byte),
            b'!'..=b'~' => out.push(char::from(byte)),
            _ => push_escaped(out, byte),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use proptest::prelude::*;

    fn key(builder: &DefaultKeyBuilder, uri: &str) -> String {
        let (parts, ()) = Request::get(uri).body(()).unwrap().into_parts();
        builder.build_key(&parts).unwrap().into_string()
    }

    #[test]
    fn byte_classes_are_rfc_3986_sets() {
        for byte in 0..=u8::MAX {
            let unreserved = byte.is_ascii_alphanumeric() || b"-._~".contains(&byte);
            let sub_delims = b"!$&'()*+,;=".contains(&byte);
            assert_eq!(is_unreserved(byte), unreserved, "{byte:#04x}");
            assert_eq!(
                is_literal(byte),
                unreserved || sub_delims || b":@/?".contains(&byte),
                "{byte:#04x}"
            );
        }
    }

    #[test]
    fn default_key_is_readable() {
        let builder = DefaultKeyBuilder::new();
        assert_eq!(key(&builder, "/users/42?b=2&a=1"), "GET:/users/42?a=1&b=2");
        assert_eq!(key(&builder, "/users/42"), "GET:/users/42");
        assert_eq!(key(&builder, "/users/42?"), "GET:/users/42");
    }

    #[test]
    fn head_shares_get_but_other_methods_do_not() {
        let builder = DefaultKeyBuilder::new();
        let head = Request::head("/a").body(()).unwrap().into_parts().0;
        let post = Request::post("/a").body(()).unwrap().into_parts().0;
        assert_eq!(builder.build_key(&head).unwrap().as_str(), "GET:/a");
        assert_eq!(builder.build_key(&post).unwrap().as_str(), "POST:/a");
    }

    #[test]
    fn percent_encoding_is_normalized() {
        let builder = DefaultKeyBuilder::new();
        assert_eq!(
            key(&builder, "/%7euser/%2f?q=%41%2c"),
            "GET:/~user/%2F?q=A%2C"
        );
        assert_eq!(key(&builder, "/a?q=%zz"), "GET:/a?q=%25zz");
        assert_ne!(key(&builder, "/a?x=%26"), key(&builder, "/a?x=&"));
    }

    #[test]
    fn dropped_params_and_modes() {
        let builder = DefaultKeyBuilder::new()
            .drop_query_param("utm_*")
            .drop_query_param("fbclid");
        assert_eq!(
            key(&builder, "/p?utm_source=a&id=1&fbclid=z&utm_medium=b"),
            "GET:/p?id=1"
        );
        assert_eq!(key(&builder, "/p?utm_source=a"), "GET:/p");
        let ordered = DefaultKeyBuilder::new().query(QueryMode::Ordered);
        assert_eq!(key(&ordered, "/p?b=1&a=2"), "GET:/p?b=1&a=2");
        let ignore = DefaultKeyBuilder::new().query(QueryMode::Ignore);
        assert_eq!(key(&ignore, "/p?b=1&a=2"), "GET:/p");
    }

    #[test]
    fn header_values_are_escaped_and_absent_headers_marked() {
        let builder = DefaultKeyBuilder::new().header(HeaderName::from_static("x-tenant"));
        let with = |value: &str| {
            let (parts, ()) = Request::get("/")
                .header("x-tenant", value)
                .body(())
                .unwrap()
                .into_parts();
            builder.build_key(&parts).unwrap().into_string()
        };
        assert_eq!(with("a|b"), "GET:/|x-tenant=a%7Cb");
        assert_eq!(with(""), "GET:/|x-tenant=");
        assert_eq!(key(&builder, "/"), "GET:/|x-tenant");
    }

    type Headers<'a> = &'a [(&'a str, &'a [u8])];

    fn parts(uri: &str, headers: Headers<'_>) -> Parts {
        let mut request = Request::get(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    fn built(builder: &DefaultKeyBuilder, uri: &str, headers: Headers<'_>) -> Option<String> {
        builder
            .build_key(&parts(uri, headers))
            .map(CacheKey::into_string)
    }

    #[test]
    fn the_host_is_in_the_key_lower_cased_and_without_a_default_port() {
        let builder = DefaultKeyBuilder::new();
        let host = |value: &str| built(&builder, "/p?a=1", &[("host", value.as_bytes())]);
        assert_eq!(
            host("Shop.Example").as_deref(),
            Some("GET:shop.example/p?a=1")
        );
        assert_eq!(
            host("shop.example:8080").as_deref(),
            Some("GET:shop.example:8080/p?a=1")
        );
        assert_eq!(host("[::1]:3000").as_deref(), Some("GET:[::1]:3000/p?a=1"));
        assert_eq!(host("[::1]").as_deref(), Some("GET:[::1]/p?a=1"));
        assert_eq!(
            host("shop.example:").as_deref(),
            Some("GET:shop.example/p?a=1")
        );
        assert_eq!(
            host("shop.example:0080").as_deref(),
            Some("GET:shop.example:80/p?a=1")
        );
        assert_eq!(
            host("10.0.0.1:65535").as_deref(),
            Some("GET:10.0.0.1:65535/p?a=1")
        );
        // A percent sign is escaped: `a%41` and `aA` stay apart.
        assert_eq!(
            host("a%41.example").as_deref(),
            Some("GET:a%2541.example/p?a=1")
        );
        assert_ne!(host("evil.example"), host("shop.example"));
        // No scheme to know the default port by: the port stays as the application sees it.
        assert_eq!(
            host("shop.example:80").as_deref(),
            Some("GET:shop.example:80/p?a=1")
        );
        // The URI's authority (HTTP/2, absolute-form), with its scheme's default port
        // dropped and its user information left out.
        assert_eq!(
            built(&builder, "https://Shop.example:443/p", &[]).as_deref(),
            Some("GET:shop.example/p")
        );
        assert_eq!(
            built(&builder, "http://user:secret@shop.example:8080/p", &[]).as_deref(),
            Some("GET:shop.example:8080/p")
        );
        assert_eq!(
            built(
                &builder,
                "http://shop.example/p",
                &[("host", b"SHOP.example:80")]
            )
            .as_deref(),
            Some("GET:shop.example/p")
        );
        // No host at all (an in-process request): keyed without one.
        assert_eq!(built(&builder, "/p", &[]).as_deref(), Some("GET:/p"));
    }

    #[test]
    fn an_ambiguous_host_is_not_cached() {
        let builder = DefaultKeyBuilder::new();
        let cases: [(&str, Headers<'_>); 15] = [
            ("/p", &[("host", b"a.example"), ("host", b"b.example")]),
            ("/p", &[("host", b"a.example:65536")]),
            ("/p", &[("host", b"a.example:123456")]),
            ("/p", &[("host", b"a.example:8x")]),
            ("/p", &[("host", b"a:b:c")]),
            ("/p", &[("host", b"[")]),
            ("/p", &[("host", b"[]")]),
            ("/p", &[("host", b"[::1]x")]),
            ("/p", &[("host", b":80")]),
            ("/p", &[("host", b"a.example/evil")]),
            ("/p", &[("host", b"user@a.example")]),
            ("/p", &[("host", b"a example")]),
            ("/p", &[("host", b"")]),
            ("/p", &[("host", b"\xff.example")]),
            ("http://a.example/p", &[("host", b"b.example")]),
        ];
        for (uri, headers) in cases {
            assert_eq!(built(&builder, uri, headers), None, "{uri} {headers:?}");
        }
        // Without the host in the key, the host is not looked at.
        let single = DefaultKeyBuilder::new().ignore_host();
        assert_eq!(
            built(
                &single,
                "/p",
                &[("host", b"a.example"), ("host", b"b.example")]
            )
            .as_deref(),
            Some("GET:/p")
        );
    }

    #[test]
    fn hosts_and_paths_never_run_into_each_other() {
        let builder = DefaultKeyBuilder::new();
        // `Host: a.example` with `/b/c` against a path-less host: the host holds no `/`.
        let with_host = built(&builder, "/b/c", &[("host", b"a.example")]);
        let no_host = built(&builder, "/a.example/b/c", &[]);
        assert_ne!(with_host, no_host);
        // A percent-encoded `/` in the host stays encoded (its `%` escaped): no second path.
        let escaped = built(&builder, "/p", &[("host", b"a%2fb.example")]);
        assert_eq!(escaped.as_deref(), Some("GET:a%252fb.example/p"));
    }

    #[test]
    fn credentials_in_keys_are_hashed_not_written() {
        let builder = DefaultKeyBuilder::new()
            .header(header::AUTHORIZATION)
            .header(header::COOKIE)
            .hashed_header(HeaderName::from_static("x-api-key"));
        let key = |auth: &[u8], cookie: &[u8], api: &[u8]| {
            built(
                &builder,
                "/me",
                &[
                    ("authorization", auth),
                    ("cookie", cookie),
                    ("x-api-key", api),
                ],
            )
            .unwrap()
        };
        let alice = key(b"Bearer s3cr3t", b"session=abc123", b"k-42");
        for secret in ["s3cr3t", "Bearer", "abc123", "session", "k-42", " "] {
            assert!(!alice.contains(secret), "{secret} in {alice}");
        }
        assert_eq!(
            alice,
            format!(
                "GET:/me|authorization={}|cookie={}|x-api-key={}",
                credential_hash(b"Bearer s3cr3t"),
                credential_hash(b"session=abc123"),
                credential_hash(b"k-42")
            )
        );
        // Stable, and different per user.
        assert_eq!(alice, key(b"Bearer s3cr3t", b"session=abc123", b"k-42"));
        assert_ne!(alice, key(b"Bearer other", b"session=abc123", b"k-42"));
        assert_ne!(alice, key(b"Bearer s3cr3t", b"session=abc124", b"k-42"));
        // SHA-256("abc"), the FIPS 180-2 test vector, first 128 bits.
        assert_eq!(credential_hash(b"abc"), "ba7816bf8f01cfea414140de5dae2223");
    }

    #[test]
    fn spaces_in_header_values_are_escaped() {
        let builder = DefaultKeyBuilder::new().header(header::ACCEPT_LANGUAGE);
        assert_eq!(
            built(&builder, "/", &[("accept-language", b"de, en")]).as_deref(),
            Some("GET:/|accept-language=de,%20en")
        );
    }

    #[test]
    fn a_path_that_is_not_absolute_has_no_key_with_a_host() {
        let builder = DefaultKeyBuilder::new();
        let (parts, ()) = Request::options("*")
            .header("host", "a.example")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(builder.build_key(&parts), None);
    }

    #[test]
    fn namespaces_nest_and_stay_readable_in_hashed_keys() {
        let key = CacheKey::new("GET:/a").namespaced("app", Some("users"), 250);
        assert_eq!(key.as_str(), "app:users:GET:/a");
        let long = CacheKey::new(format!("GET:/{}", "a".repeat(500)));
        let hashed = long.clone().namespaced("app", Some("users"), 250);
        assert!(
            hashed.as_str().starts_with("app:users:GET:/aaa"),
            "{hashed}"
        );
        assert_ne!(
            hashed,
            long.namespaced("app", None, 250),
            "a route's namespace is its own"
        );
    }

    #[test]
    fn long_keys_are_hashed_stably() {
        let long = CacheKey::new(format!("GET:/{}", "a".repeat(500)));
        let hashed = long.clone().namespaced("app", None, 250);
        assert!(hashed.as_str().len() < 150, "{hashed}");
        assert!(hashed.as_str().starts_with("app:GET:/aaa"));
        assert!(hashed.as_str().contains('#'));
        // Stable across runs and machines: XXH3-128 of the key.
        assert_eq!(hashed, long.namespaced("app", None, 250));
        let short = CacheKey::new("GET:/a").namespaced("app", None, 250);
        assert_eq!(short.as_str(), "app:GET:/a");
    }

    /// An independent model of RFC 3986 equivalence: each position is an unreserved
    /// character (however written), a literal reserved character, or an escaped byte.
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum Unit {
        Char(u8),
        Literal(u8),
        Escaped(u8),
    }

    fn model(component: &str) -> Vec<Unit> {
        let bytes = component.as_bytes();
        let mut units = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let byte = bytes[i];
            if byte == b'%' {
                if let Some(decoded) = escape_at(bytes, i) {
                    units.push(if is_unreserved(decoded) {
                        Unit::Char(decoded)
                    } else {
                        Unit::Escaped(decoded)
                    });
                    i += 3;
                    continue;
                }
                units.push(Unit::Escaped(b'%'));
            } else if is_unreserved(byte) {
                units.push(Unit::Char(byte));
            } else if is_literal(byte) {
                units.push(Unit::Literal(byte));
            } else {
                units.push(Unit::Escaped(byte));
            }
            i += 1;
        }
        units
    }

    fn query_model(query: &str) -> Vec<Vec<Unit>> {
        let mut params: Vec<_> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(model)
            .collect();
        params.sort();
        params
    }

    fn uri_part() -> impl Strategy<Value = String> {
        // A small alphabet so that equivalent spellings come up often.
        proptest::collection::vec(
            prop_oneof![
                Just("a"),
                Just("A"),
                Just("%41"),
                Just("%61"),
                Just("%2f"),
                Just("%2F"),
                Just("/"),
                Just("%"),
                Just("%25"),
                Just("="),
                Just("%3D"),
                Just("|"),
                Just("%7C"),
                Just("~"),
                Just("%7e"),
                Just(":"),
                Just("b"),
            ],
            0..8,
        )
        .prop_map(|parts| parts.concat())
    }

    fn query() -> impl Strategy<Value = String> {
        proptest::collection::vec(uri_part(), 0..4).prop_map(|params| params.join("&"))
    }

    fn parts_for(path: &str, query: &str) -> Option<Parts> {
        let uri = format!("/{path}?{query}");
        Request::get(uri).body(()).ok().map(|r| r.into_parts().0)
    }

    proptest! {
        #[test]
        fn keys_differ_exactly_when_requests_differ(
            (p1, q1, p2, q2) in (uri_part(), query(), uri_part(), query())
        ) {
            let builder = DefaultKeyBuilder::new();
            let (Some(a), Some(b)) = (parts_for(&p1, &q1), parts_for(&p2, &q2)) else {
                return Ok(());
            };
            let same = model(a.uri.path()) == model(b.uri.path())
                && query_model(a.uri.query().unwrap_or("")) == query_model(b.uri.query().unwrap_or(""));
            let ka = builder.build_key(&a).unwrap();
            let kb = builder.build_key(&b).unwrap();
            prop_assert_eq!(same, ka == kb, "{} vs {}", ka, kb);
        }

        #[test]
        fn permuted_query_gives_the_same_key(
            params in proptest::collection::vec(uri_part(), 0..6),
            seed in any::<u64>(),
        ) {
            let builder = DefaultKeyBuilder::new();
            let mut shuffled = params.clone();
            // A deterministic permutation derived from the seed.
            let len = shuffled.len();
            for i in (1..len).rev() {
                let j = (seed.rotate_left(i as u32) as usize) % (i + 1);
                shuffled.swap(i, j);
            }
            let (Some(a), Some(b)) = (parts_for("x", &params.join("&")), parts_for("x", &shuffled.join("&"))) else {
                return Ok(());
            };
            prop_assert_eq!(builder.build_key(&a), builder.build_key(&b));
        }

        #[test]
        fn header_values_never_collide(v1 in "[ -~]{0,6}", v2 in "[ -~]{0,6}") {
            let builder = DefaultKeyBuilder::new()
                .header(HeaderName::from_static("x-a"))
                .header(HeaderName::from_static("x-b"));
            let build = |a: &str, b: &str| {
                let (parts, ()) = Request::get("/").header("x-a", a).header("x-b", b).body(()).unwrap().into_parts();
                builder.build_key(&parts).unwrap()
            };
            // Shifting text between the two headers must change the key.
            let joined = format!("{v1}{v2}");
            if !v1.is_empty() && v1.trim() == v1 && v2.trim() == v2 && joined.trim() == joined {
                prop_assert_ne!(build(&v1, &v2), build("", &joined));
            }
            prop_assert_eq!(v1.trim() == v2.trim(), build(&v1, "") == build(&v2, ""));
        }

        #[test]
        fn different_hosts_never_share_a_key(
            a in "[a-zA-Z0-9.:%-]{0,12}",
            b in "[a-zA-Z0-9.:%-]{0,12}",
            path in uri_part(),
        ) {
            let builder = DefaultKeyBuilder::new();
            let uri = format!("/{path}");
            let key = |host: &str| built(&builder, &uri, &[("host", host.as_bytes())]);
            if let (Some(ka), Some(kb)) = (key(&a), key(&b)) {
                // An independent model: the host before the first `:`, in lower case, and
                // the port as a number (none when empty).
                let host_of = |host: &str| {
                    let (name, port) = host.split_once(':').unwrap_or((host, ""));
                    (name.to_ascii_lowercase(), port.parse::<u16>().ok())
                };
                prop_assert_eq!(host_of(&a) == host_of(&b), ka == kb, "{} vs {}", ka, kb);
            }
        }

        #[test]
        fn hashed_keys_never_equal_plain_keys(len in 0usize..400) {
            let body = format!("GET:/{}", "x".repeat(len));
            let key = CacheKey::new(body).namespaced("ns", None, 250);
            prop_assert!(key.as_str().len() <= 250);
            prop_assert_eq!(key.as_str().contains('#'), len + 8 > 250);
        }
    }
}
