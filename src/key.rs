//! Cache keys: what makes two requests share an entry.
//!
//! A [`KeyBuilder`] turns a request's [`Parts`] into a [`CacheKey`], or `None` to bypass the
//! cache for that request. Closures `Fn(&Parts) -> Option<CacheKey>` are key builders, and
//! [`DefaultKeyBuilder`] covers the common case: method class (HEAD shares GET), path and
//! normalized query, plus any request headers you name.
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
//! let (parts, ()) = Request::get("/users/42?b=2&utm_source=x&a=1").body(()).unwrap().into_parts();
//! let key = builder.build_key(&parts).unwrap();
//! assert_eq!(key.as_str(), "GET:/users/42?a=1&b=2");
//! ```
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
//! `?`, so the parts of a key can be told apart: `METHOD:path?query|header=value|…`. Header
//! values are escaped the same way (`%`, `|`, `#` and non-visible bytes become `%XX`). A
//! hashed key is the only kind that contains a literal `#`. Two requests that differ after
//! normalization therefore never share a key.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::HeaderName;
use http::request::Parts;

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

    /// `namespace:key`, or a hashed form when that is longer than `max_len` bytes: the
    /// namespace, the first bytes of the key, `#` and the hex XXH3-128 of the whole key.
    pub(crate) fn namespaced(self, namespace: &str, max_len: usize) -> Self {
        let mut key = self.0;
        let full_len = namespace.len() + 1 + key.len();
        if full_len <= max_len {
            key.reserve(namespace.len() + 1);
            key.insert(0, ':');
            key.insert_str(0, namespace);
            return Self(key);
        }
        let hash = xxhash_rust::xxh3::xxh3_128(key.as_bytes());
        let mut keep = HASHED_PREFIX_LEN.min(key.len());
        while !key.is_char_boundary(keep) {
            keep -= 1;
        }
        Self(format!("{namespace}:{}#{hash:032x}", &key[..keep]))
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
/// Closures implement it:
///
/// ```
/// use http::request::Parts;
/// use tower_response_cache::{CacheLayer, CacheKey, MemoryStore};
///
/// // One entry per path, whatever the query; never cache `/admin`.
/// let layer = CacheLayer::new(MemoryStore::new(1 << 20)).key_builder(|parts: &Parts| {
///     let path = parts.uri.path();
///     (!path.starts_with("/admin")).then(|| CacheKey::new(path))
/// });
/// ```
pub trait KeyBuilder: Send + Sync + 'static {
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

/// The key builder used unless you set another: `METHOD:path?query`, plus named headers.
///
/// - HEAD shares GET's key (a HEAD hit is answered from the GET entry).
/// - The query is normalized and sorted ([`QueryMode`]); parameters you name are dropped
///   ([`drop_query_param`](Self::drop_query_param), with a trailing `*` for a prefix).
/// - Request headers you name ([`header`](Self::header)) are appended as `|name=value`
///   (`|name` when absent). `Host` is taken from the URI authority when there is one, lower
///   case.
///
/// ```
/// use http::{header, Request};
/// use tower_response_cache::key::{DefaultKeyBuilder, KeyBuilder, QueryMode};
///
/// let builder = DefaultKeyBuilder::new()
///     .query(QueryMode::Ordered)
///     .header(header::HOST)
///     .header(header::ACCEPT_LANGUAGE);
/// let (parts, ()) = Request::head("/a?z=1&y=2")
///     .header("host", "Example.com")
///     .body(())
///     .unwrap()
///     .into_parts();
/// assert_eq!(
///     builder.build_key(&parts).unwrap().as_str(),
///     "GET:/a?z=1&y=2|host=example.com|accept-language"
/// );
/// ```
#[derive(Clone, Debug, Default)]
pub struct DefaultKeyBuilder {
    query: QueryMode,
    dropped: Arc<[DroppedParam]>,
    headers: Arc<[HeaderName]>,
}

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

    /// Adds a request header's value to the key (e.g. `Host` for a multi-tenant service,
    /// `Accept-Language` for localized pages).
    #[must_use]
    pub fn header(mut self, name: HeaderName) -> Self {
        let mut headers = self.headers.to_vec();
        headers.push(name);
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

    fn push_header(&self, out: &mut String, parts: &Parts, name: &HeaderName) {
        out.push('|');
        out.push_str(name.as_str());
        if name == http::header::HOST {
            let host = match parts.uri.authority() {
                Some(authority) => Some(authority.as_str().as_bytes()),
                None => parts.headers.get(name).map(|value| value.as_bytes()),
            };
            if let Some(host) = host {
                out.push('=');
                push_header_value(out, host.trim_ascii(), true);
            }
            return;
        }
        let mut values = parts.headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            return;
        }
        out.push('=');
        for (i, value) in values.enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_header_value(out, value.as_bytes().trim_ascii(), false);
        }
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
        let mut out = String::with_capacity(method.len() + path.len() + query.len() + 48);
        out.push_str(method);
        out.push(':');
        out.push_str(&normalize_component(path));
        if self.query != QueryMode::Ignore {
            self.push_query(&mut out, query);
        }
        for name in self.headers.iter() {
            self.push_header(&mut out, parts, name);
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

/// Header values: visible ASCII stands for itself but for the key's separators and `%`.
fn push_header_value(out: &mut String, value: &[u8], lowercase: bool) {
    for &byte in value {
        match byte {
            b'%' | b'|' | b'#' => push_escaped(out, byte),
            b' '..=b'~' if lowercase => out.push(char::from(byte.to_ascii_lowercase())),
            b' '..=b'~' => out.push(char::from(byte)),
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

    #[test]
    fn long_keys_are_hashed_stably() {
        let long = CacheKey::new(format!("GET:/{}", "a".repeat(500)));
        let hashed = long.clone().namespaced("app", 250);
        assert!(hashed.as_str().len() < 150, "{hashed}");
        assert!(hashed.as_str().starts_with("app:GET:/aaa"));
        assert!(hashed.as_str().contains('#'));
        // Stable across runs and machines: XXH3-128 of the key.
        assert_eq!(hashed, long.namespaced("app", 250));
        let short = CacheKey::new("GET:/a").namespaced("app", 250);
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
        fn hashed_keys_never_equal_plain_keys(len in 0usize..400) {
            let body = format!("GET:/{}", "x".repeat(len));
            let key = CacheKey::new(body).namespaced("ns", 250);
            prop_assert!(key.as_str().len() <= 250);
            prop_assert_eq!(key.as_str().contains('#'), len + 8 > 250);
        }
    }
}
