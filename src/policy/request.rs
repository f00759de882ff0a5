//! Request directives: may this request read the cache, and may its response be stored?
//!
//! | request | outcome |
//! |---|---|
//! | `Cache-Control: no-store` | bypass: don't read, don't write |
//! | `Cache-Control: no-cache`, `max-age=0`, `Pragma: no-cache`, the bypass header | refresh: don't read, fetch, store |
//! | `Cache-Control: max-age=N` | an entry older than `N` seconds is refreshed |
//! | `Cache-Control: only-if-cached` | `504 Gateway Timeout` on a miss; never the origin, whatever else the request says |
//!
//! `Pragma` counts only when the request has no `Cache-Control` (RFC 9111 §5.4). Whether
//! clients may do any of this is a [`ClientControl`] policy.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::cache_control::CacheControl;

/// Whether clients may steer the cache with request headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientControl {
    /// Request `Cache-Control`, `Pragma` and the bypass header are honoured. The default.
    #[default]
    Allow,
    /// Request directives and the bypass header are ignored, as nginx and Varnish do by
    /// default: clients cannot force origin traffic.
    Deny,
    /// Request directives are honoured only on requests whose bypass header carries this
    /// value (compared in constant time); such a request is always refreshed. Use it to let
    /// your own tooling refresh entries without letting clients do so.
    Secret(HeaderValue),
}

/// Why a request neither read nor wrote the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BypassReason {
    /// The request said `Cache-Control: no-store`.
    NoStore,
    /// The key builder returned `None`.
    NoKey,
}

impl BypassReason {
    /// A short, stable label (used in `Cache-Status` and stats).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoStore => "no-store",
            Self::NoKey => "no-key",
        }
    }
}

/// Why a request skipped the stored entry and refreshed it from the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefreshReason {
    /// `Cache-Control: no-cache`.
    NoCache,
    /// `Cache-Control: max-age=0`, or a `max-age` the stored entry is older than.
    MaxAge,
    /// `Pragma: no-cache` on a request without `Cache-Control`.
    Pragma,
    /// The bypass header (default `x-cache-bypass`).
    BypassHeader,
    /// A stale entry was served and is refreshed in the background
    /// (`stale-while-revalidate`).
    StaleWhileRevalidate,
    /// The application warmed the cache ([`CacheHandle::refresh`](crate::CacheHandle::refresh)).
    Warm,
}

impl RefreshReason {
    /// A short, stable label (used in `Cache-Status` and stats).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoCache => "no-cache",
            Self::MaxAge => "max-age",
            Self::Pragma => "pragma",
            Self::BypassHeader => "bypass-header",
            Self::StaleWhileRevalidate => "stale-while-revalidate",
            Self::Warm => "warm",
        }
    }
}

/// What the request's headers allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestMode {
    /// Read the cache; an entry older than `max_age` seconds is refreshed; a miss is a 504
    /// when `only_if_cached`.
    Lookup {
        max_age: Option<u64>,
        only_if_cached: bool,
    },
    /// Don't read, don't write.
    Bypass(BypassReason),
    /// Don't read; fetch and store.
    Refresh(RefreshReason),
}

impl RequestMode {
    pub(crate) const LOOKUP: Self = Self::Lookup {
        max_age: None,
        only_if_cached: false,
    };
}

/// Which of the headers the cache reads a request carries. A hit asks about six of them and
/// most requests carry none, so one pass over a request's few names costs less than a hash
/// probe per header; a request with many names is probed instead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Present {
    pub(crate) cache_control: bool,
    pub(crate) pragma: bool,
    /// The layer's bypass header.
    pub(crate) bypass: bool,
    pub(crate) cookie: bool,
    /// `If-None-Match`, `If-Modified-Since` or `Range`: a hit may answer `304` or `206`.
    pub(crate) preconditions: bool,
}

/// Past this many names, a request's headers are probed rather than scanned.
const SCANNED_NAMES: usize = 12;

impl Present {
    pub(crate) fn of(headers: &HeaderMap, bypass_header: &HeaderName) -> Self {
        use http::header::{
            CACHE_CONTROL, COOKIE, IF_MODIFIED_SINCE, IF_NONE_MATCH, PRAGMA, RANGE,
        };
        if headers.keys_len() > SCANNED_NAMES {
            return Self::probed(headers, bypass_header);
        }
        let mut present = Self::default();
        for name in headers.keys() {
            if name == CACHE_CONTROL {
                present.cache_control = true;
            } else if name == PRAGMA {
                present.pragma = true;
            } else if name == COOKIE {
                present.cookie = true;
            } else if name == IF_NONE_MATCH || name == IF_MODIFIED_SINCE || name == RANGE {
                present.preconditions = true;
            } else if name == bypass_header {
                present.bypass = true;
            }
        }
        present
    }

    /// The same answers, by one probe per header.
    pub(crate) fn probed(headers: &HeaderMap, bypass_header: &HeaderName) -> Self {
        use http::header::{
            CACHE_CONTROL, COOKIE, IF_MODIFIED_SINCE, IF_NONE_MATCH, PRAGMA, RANGE,
        };
        Self {
            cache_control: headers.contains_key(CACHE_CONTROL),
            pragma: headers.contains_key(PRAGMA),
            bypass: headers.contains_key(bypass_header),
            cookie: headers.contains_key(COOKIE),
            preconditions: headers.contains_key(IF_NONE_MATCH)
                || headers.contains_key(IF_MODIFIED_SINCE)
                || headers.contains_key(RANGE),
        }
    }
}

/// Reads the request's directives under `control`; `present` says which of the headers it
/// reads the request carries ([`Present::of`]).
pub(crate) fn request_mode(
    headers: &HeaderMap,
    present: Present,
    control: &ClientControl,
    bypass_header: &HeaderName,
) -> RequestMode {
    let bypass = if present.bypass {
        headers.get(bypass_header)
    } else {
        None
    };
    let forced = match control {
        ClientControl::Deny => return RequestMode::LOOKUP,
        ClientControl::Allow => bypass.is_some(),
        ClientControl::Secret(secret) => match bypass {
            Some(value) if constant_time_eq(value.as_bytes(), secret.as_bytes()) => true,
            _ => return RequestMode::LOOKUP,
        },
    };
    let has_cache_control = present.cache_control;
    if !has_cache_control && !forced && !present.pragma {
        return RequestMode::LOOKUP;
    }
    let cc = CacheControl::from_headers(headers);
    let refresh = if cc.no_cache {
        Some(RefreshReason::NoCache)
    } else if cc.max_age == Some(0) {
        Some(RefreshReason::MaxAge)
    } else if !has_cache_control && pragma_no_cache(headers) {
        Some(RefreshReason::Pragma)
    } else if forced {
        Some(RefreshReason::BypassHeader)
    } else {
        None
    };
    if cc.only_if_cached {
        // RFC 9111 §5.2.1.7: never contact the origin. A demand to refresh can then only be
        // met by an entry that is as good as new.
        return RequestMode::Lookup {
            max_age: if refresh.is_some() {
                Some(0)
            } else {
                cc.max_age
            },
            only_if_cached: true,
        };
    }
    if cc.no_store {
        return RequestMode::Bypass(BypassReason::NoStore);
    }
    if let Some(reason) = refresh {
        return RequestMode::Refresh(reason);
    }
    RequestMode::Lookup {
        max_age: cc.max_age,
        only_if_cached: false,
    }
}

fn pragma_no_cache(headers: &HeaderMap) -> bool {
    headers.get_all(http::header::PRAGMA).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"no-cache"))
    })
}

/// Compares in constant time (`subtle`, which keeps the optimizer from adding an early
/// exit), so that timing does not reveal how much of a guessed secret was right; only the
/// length may show.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BYPASS: HeaderName = HeaderName::from_static("x-cache-bypass");

    fn mode(pairs: &[(&str, &str)], control: &ClientControl) -> RequestMode {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let present = Present::of(&headers, &BYPASS);
        request_mode(&headers, present, control, &BYPASS)
    }

    fn allow(pairs: &[(&str, &str)]) -> RequestMode {
        mode(pairs, &ClientControl::Allow)
    }

    #[test]
    fn plain_requests_look_up() {
        assert_eq!(allow(&[]), RequestMode::LOOKUP);
        assert_eq!(allow(&[("accept", "*/*")]), RequestMode::LOOKUP);
    }

    #[test]
    fn no_store_bypasses_and_wins_over_refresh() {
        assert_eq!(
            allow(&[
                ("cache-control", "no-cache, no-store"),
                ("x-cache-bypass", "1")
            ]),
            RequestMode::Bypass(BypassReason::NoStore)
        );
    }

    #[test]
    fn refresh_directives() {
        assert_eq!(
            allow(&[("cache-control", "no-cache")]),
            RequestMode::Refresh(RefreshReason::NoCache)
        );
        assert_eq!(
            allow(&[("cache-control", "max-age=0")]),
            RequestMode::Refresh(RefreshReason::MaxAge)
        );
        assert_eq!(
            allow(&[("pragma", "no-cache")]),
            RequestMode::Refresh(RefreshReason::Pragma)
        );
        assert_eq!(
            allow(&[("x-cache-bypass", "yes")]),
            RequestMode::Refresh(RefreshReason::BypassHeader)
        );
    }

    #[test]
    fn pragma_is_ignored_when_cache_control_is_present() {
        // RFC 9111 §5.4.
        assert_eq!(
            allow(&[("pragma", "no-cache"), ("cache-control", "max-age=30")]),
            RequestMode::Lookup {
                max_age: Some(30),
                only_if_cached: false
            }
        );
    }

    #[test]
    fn only_if_cached_and_max_age_are_kept_for_the_lookup() {
        assert_eq!(
            allow(&[("cache-control", "only-if-cached, max-age=5")]),
            RequestMode::Lookup {
                max_age: Some(5),
                only_if_cached: true
            }
        );
    }

    #[test]
    fn only_if_cached_never_becomes_a_fetch() {
        for refresh in ["no-cache", "max-age=0"] {
            assert_eq!(
                allow(&[("cache-control", &format!("only-if-cached, {refresh}"))]),
                RequestMode::Lookup {
                    max_age: Some(0),
                    only_if_cached: true
                },
                "{refresh}"
            );
        }
        assert_eq!(
            allow(&[("cache-control", "only-if-cached, no-store")]),
            RequestMode::Lookup {
                max_age: None,
                only_if_cached: true
            }
        );
    }

    #[test]
    fn deny_ignores_everything() {
        let deny = ClientControl::Deny;
        for pairs in [
            &[("cache-control", "no-store")][..],
            &[("cache-control", "no-cache")],
            &[("pragma", "no-cache")],
            &[("x-cache-bypass", "1")],
            &[("cache-control", "only-if-cached")],
        ] {
            assert_eq!(mode(pairs, &deny), RequestMode::LOOKUP, "{pairs:?}");
        }
    }

    #[test]
    fn secret_requires_the_exact_value() {
        let secret = ClientControl::Secret(HeaderValue::from_static("s3cret"));
        assert_eq!(
            mode(&[("x-cache-bypass", "nope")], &secret),
            RequestMode::LOOKUP
        );
        assert_eq!(
            mode(&[("cache-control", "no-cache")], &secret),
            RequestMode::LOOKUP
        );
        assert_eq!(
            mode(&[("x-cache-bypass", "s3cret")], &secret),
            RequestMode::Refresh(RefreshReason::BypassHeader)
        );
        assert_eq!(
            mode(
                &[("x-cache-bypass", "s3cret"), ("cache-control", "no-store")],
                &secret
            ),
            RequestMode::Bypass(BypassReason::NoStore)
        );
    }

    #[test]
    fn constant_time_eq_compares_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    /// Names a request may carry: each header the cache looks for (`BYPASS` among them),
    /// and others.
    const NAMES: [&str; 14] = [
        "cache-control",
        "pragma",
        "cookie",
        "if-none-match",
        "if-modified-since",
        "range",
        "x-cache-bypass",
        "host",
        "accept",
        "user-agent",
        "x-forwarded-for",
        "x-cache-bypass-not",
        "authorization",
        "accept-encoding",
    ];

    proptest::proptest! {
        /// The scan of a request's names finds what a probe per header finds, for requests
        /// with few names (scanned) and many (probed), repeated names included.
        #[test]
        fn a_scan_finds_what_probes_find(
            names in proptest::collection::vec(0..NAMES.len(), 0..20),
            extra in proptest::collection::vec("x-[a-z]{1,8}", 0..10),
        ) {
            let mut headers = HeaderMap::new();
            for index in names {
                headers.append(NAMES[index], HeaderValue::from_static("1"));
            }
            for name in &extra {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_static("1"),
                );
            }
            let scanned = Present::of(&headers, &BYPASS);
            proptest::prop_assert_eq!(scanned, Present::probed(&headers, &BYPASS));
        }
    }
}
