//! How long a response stays fresh, and how long it may be served stale: a pure function of
//! the response, the TTL a handler or `ttl_fn` gave it, and the route's settings resolved
//! over the layer's (RFC 9111 §4.2, §5.2.2; RFC 5861).

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};

use super::NotStoredReason;
use super::cache_control::CacheControl;
use super::response::{
    HeuristicFreshness, TtlSources, has_validator, initial_age, is_negative, origin_lifetime,
    ttl_from_sources,
};

/// A route's freshness settings, each the route's own else the layer's.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FreshnessSettings {
    /// Whether the origin's `s-maxage` / `max-age` / `Expires` set the TTL.
    pub(crate) honor_origin: bool,
    /// Heuristic freshness for responses without explicit freshness, when on (and the
    /// origin is honoured).
    pub(crate) heuristic: Option<HeuristicFreshness>,
    /// The TTL of responses no other source gives one (not for negative statuses).
    pub(crate) ttl: Option<Duration>,
    /// The TTL of negative responses (404, 410, …) no other source gives one.
    pub(crate) negative_ttl: Option<Duration>,
    /// The stale windows when the response names none.
    pub(crate) stale_while_revalidate: Option<Duration>,
    pub(crate) stale_if_error: Option<Duration>,
    /// How long stale entries with a validator are kept for revalidation.
    pub(crate) keep: Duration,
    /// Sliding expiry: presence in the store is freshness, so no stale window and nothing
    /// kept only to be revalidated.
    pub(crate) sliding: bool,
}

/// An entry's freshness as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Freshness {
    /// Fresh this long after it is stored.
    pub(crate) ttl: Duration,
    /// Its age when it arrived (RFC 9111 §4.2.3).
    pub(crate) initial_age: Duration,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
}

/// The freshness of a storable response (its head already passed the storability rules),
/// or why it has none worth storing. `explicit` is the handler's [`CacheTtl`](crate::CacheTtl)
/// or the layer's `ttl_fn`.
pub(crate) fn freshness(
    status: StatusCode,
    headers: &HeaderMap,
    cc: &CacheControl,
    explicit: Option<Duration>,
    settings: &FreshnessSettings,
    now: SystemTime,
) -> Result<Freshness, NotStoredReason> {
    let sources = TtlSources {
        explicit,
        // The origin's explicit freshness, else (when on) a guess from its `Last-Modified`
        // (RFC 9111 §4.2.2), which likewise counts from when the origin answered.
        origin: settings
            .honor_origin
            .then(|| {
                origin_lifetime(headers, cc, now).or_else(|| {
                    settings
                        .heuristic
                        .and_then(|heuristic| heuristic.lifetime(status, headers, cc, now))
                })
            })
            .flatten(),
        // An error ("not there", "not allowed") gets no default lifetime of its own: a 404
        // for a page about to be created must not outlive it by a whole TTL. Only
        // `negative_ttl`, or the origin, the handler or `ttl_fn`, store one.
        configured: if is_negative(status) {
            settings.negative_ttl
        } else {
            settings.ttl
        },
    };
    let initial_age = initial_age(headers, now);
    let ttl = match ttl_from_sources(sources, initial_age) {
        // RFC 9111 §5.2.2.4: a `no-cache` response is never fresh: every reuse is
        // revalidated first.
        Ok(ttl) if !cc.no_cache => ttl,
        // Kept out by the handler or `ttl_fn`; and on a sliding route, presence in the store
        // is freshness: nothing is kept only to be revalidated.
        _ if explicit.is_some_and(|ttl| ttl.is_zero()) || settings.sliding => {
            return Err(if cc.no_cache {
                NotStoredReason::NoCache
            } else {
                NotStoredReason::NoFreshness
            });
        }
        // Stale from the start, but worth keeping to revalidate (the storability rules let
        // a `no-cache` response through only for that).
        _ if !settings.keep.is_zero() && has_validator(headers) => Duration::ZERO,
        Ok(_) => return Err(NotStoredReason::NoCache),
        Err(reason) => return Err(reason),
    };
    // Each stale window: the response's directive, else the route's (or layer's). A stale
    // `no-cache` response is never served without revalidation; nor, unless the response
    // itself grants a stale window, one that says `must-revalidate`, `proxy-revalidate` or
    // `s-maxage` (which implies `proxy-revalidate`): RFC 9111 §4.2.4, §5.2.2.2, §5.2.2.8,
    // §5.2.2.10.
    let origin_only = cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some();
    let window = |directive: Option<u64>, configured: Option<Duration>| {
        // On a sliding route an entry is served while it is in the store: no stale window
        // may keep it there.
        if cc.no_cache || settings.sliding {
            return Duration::ZERO;
        }
        let directive = directive.map(Duration::from_secs);
        if origin_only {
            return directive.unwrap_or_default();
        }
        directive.or(configured).unwrap_or_default()
    };
    Ok(Freshness {
        ttl,
        initial_age,
        stale_while_revalidate: window(cc.stale_while_revalidate, settings.stale_while_revalidate),
        stale_if_error: window(cc.stale_if_error, settings.stale_if_error),
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn settings() -> FreshnessSettings {
        FreshnessSettings {
            honor_origin: true,
            ttl: Some(MINUTE),
            ..FreshnessSettings::default()
        }
    }

    fn of(
        status: u16,
        headers: &[(&'static str, &'static str)],
        explicit: Option<Duration>,
        settings: &FreshnessSettings,
    ) -> Result<Freshness, NotStoredReason> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_static(value));
        }
        let cc = CacheControl::from_headers(&map);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        freshness(status, &map, &cc, explicit, settings, SystemTime::now())
    }

    fn ttl(result: Result<Freshness, NotStoredReason>) -> Result<u64, NotStoredReason> {
        result.map(|freshness| freshness.ttl.as_secs())
    }

    #[test]
    fn the_origin_the_handler_and_the_route_in_that_order() {
        let s = settings();
        assert_eq!(ttl(of(200, &[], None, &s)), Ok(60), "the configured TTL");
        assert_eq!(
            ttl(of(200, &[("cache-control", "max-age=5")], None, &s)),
            Ok(5)
        );
        assert_eq!(
            ttl(of(
                200,
                &[("cache-control", "max-age=5")],
                Some(MINUTE * 2),
                &s
            )),
            Ok(120),
            "the handler's over the origin's"
        );
        let ignore = FreshnessSettings {
            honor_origin: false,
            ..s
        };
        assert_eq!(
            ttl(of(200, &[("cache-control", "max-age=5")], None, &ignore)),
            Ok(60)
        );
        // The origin's lifetime counts from when it produced the response.
        assert_eq!(
            ttl(of(
                200,
                &[("cache-control", "max-age=50"), ("age", "20")],
                None,
                &s
            )),
            Ok(30)
        );
        assert_eq!(
            ttl(of(200, &[], Some(Duration::ZERO), &s)),
            Err(NotStoredReason::NoFreshness),
            "a zero TTL from the handler keeps it out"
        );
    }

    #[test]
    fn heuristic_freshness_is_a_capped_fraction_of_the_time_since_last_modified_rfc9111_4_2_2() {
        // Whole seconds, as dates have: the response is no age at all.
        let since_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs());
        let date = httpdate::fmt_http_date(now);
        let days_ago =
            |days: u64| httpdate::fmt_http_date(now - Duration::from_secs(days * 86_400));
        let on = FreshnessSettings {
            heuristic: Some(HeuristicFreshness::new()),
            ..settings()
        };
        let guess = |status: u16, extra: &[(&'static str, &str)], settings: &FreshnessSettings| {
            let mut map = HeaderMap::new();
            map.insert("date", date.parse().unwrap());
            for (name, value) in extra {
                map.append(*name, value.parse().unwrap());
            }
            let cc = CacheControl::from_headers(&map);
            let status = StatusCode::from_u16(status).unwrap();
            freshness(status, &map, &cc, None, settings, now).map(|f| f.ttl.as_secs())
        };
        let ten_days = days_ago(10);
        let modified = [("last-modified", ten_days.as_str())];
        // 10% of ten days: one day (86 400 s), which is the default cap too.
        assert_eq!(guess(200, &modified, &on), Ok(86_400));
        let two_days = days_ago(2);
        assert_eq!(
            guess(200, &[("last-modified", two_days.as_str())], &on),
            Ok(17_280)
        );
        let capped = FreshnessSettings {
            heuristic: Some(
                HeuristicFreshness::new()
                    .fraction(0.5)
                    .max(Duration::from_secs(3600)),
            ),
            ..settings()
        };
        assert_eq!(guess(200, &modified, &capped), Ok(3600));
        // Off: the configured TTL, as before.
        assert_eq!(guess(200, &modified, &settings()), Ok(60));
        // Never over explicit freshness.
        assert_eq!(
            guess(200, &[modified[0], ("cache-control", "max-age=7")], &on),
            Ok(7)
        );
        // Never with what asks for revalidation: the configured TTL applies instead (or
        // none, for no-cache).
        for directive in ["must-revalidate", "proxy-revalidate"] {
            assert_eq!(
                guess(200, &[modified[0], ("cache-control", directive)], &on),
                Ok(60),
                "{directive}"
            );
        }
        assert_eq!(
            guess(200, &[modified[0], ("pragma", "no-cache")], &on),
            Ok(60)
        );
        assert_eq!(
            guess(200, &[modified[0], ("cache-control", "no-cache")], &on),
            Err(NotStoredReason::NoCache)
        );
        // Only for heuristically cacheable statuses (RFC 9110 §15.1), or with `public`.
        assert_eq!(guess(404, &modified, &on), Ok(86_400));
        assert_eq!(guess(302, &modified, &on), Ok(60), "the configured TTL");
        assert_eq!(
            guess(302, &[modified[0], ("cache-control", "public")], &on),
            Ok(86_400)
        );
        // Without a `Last-Modified`, or one after the `Date`, nothing to guess from.
        assert_eq!(guess(200, &[], &on), Ok(60));
        let future = httpdate::fmt_http_date(now + Duration::from_secs(600));
        assert_eq!(
            guess(200, &[("last-modified", future.as_str())], &on),
            Ok(60)
        );
        // A route that ignores the origin guesses nothing.
        let ignore = FreshnessSettings {
            honor_origin: false,
            ..on
        };
        assert_eq!(guess(200, &modified, &ignore), Ok(60));
        // The guess counts from the response's date: its age is taken off.
        assert_eq!(guess(200, &[modified[0], ("age", "400")], &on), Ok(86_000));
    }

    #[test]
    fn heuristic_fractions_are_kept_within_zero_and_one() {
        let now = SystemTime::now();
        let mut map = HeaderMap::new();
        let modified = httpdate::fmt_http_date(now - Duration::from_secs(1000));
        map.insert("last-modified", modified.parse().unwrap());
        let cc = CacheControl::from_headers(&map);
        let lifetime =
            |heuristic: HeuristicFreshness| heuristic.lifetime(StatusCode::OK, &map, &cc, now);
        let long = HeuristicFreshness::new().max(Duration::from_secs(1 << 20));
        assert_eq!(
            lifetime(long.fraction(2.0)),
            Some(Duration::from_secs(1000))
        );
        assert_eq!(lifetime(long.fraction(-1.0)), None);
        assert_eq!(lifetime(long.fraction(f64::NAN)), None);
        assert_eq!(lifetime(long.fraction(0.5)), Some(Duration::from_secs(500)));
    }

    #[test]
    fn negative_statuses_take_only_a_negative_ttl_from_the_configuration() {
        let s = settings();
        assert_eq!(
            ttl(of(404, &[], None, &s)),
            Err(NotStoredReason::NoFreshness)
        );
        let negative = FreshnessSettings {
            negative_ttl: Some(Duration::from_secs(5)),
            ..s
        };
        assert_eq!(ttl(of(404, &[], None, &negative)), Ok(5));
        assert_eq!(
            ttl(of(404, &[("cache-control", "max-age=30")], None, &s)),
            Ok(30),
            "the origin may give one"
        );
    }

    #[test]
    fn no_cache_is_kept_stale_only_to_be_revalidated() {
        let s = settings();
        let no_cache = [("cache-control", "no-cache"), ("etag", "\"v1\"")];
        assert_eq!(
            ttl(of(200, &no_cache, None, &s)),
            Err(NotStoredReason::NoCache)
        );
        let keep = FreshnessSettings { keep: MINUTE, ..s };
        let kept = of(200, &no_cache, None, &keep).unwrap();
        assert_eq!(kept.ttl, Duration::ZERO);
        assert_eq!(
            kept.stale_while_revalidate,
            Duration::ZERO,
            "never served stale"
        );
        assert_eq!(
            ttl(of(200, &[("cache-control", "no-cache")], None, &keep)),
            Err(NotStoredReason::NoCache),
            "without a validator there is nothing to revalidate with"
        );
    }

    #[test]
    fn stale_windows_come_from_the_response_else_the_route_unless_the_origin_forbids() {
        let s = FreshnessSettings {
            stale_while_revalidate: Some(Duration::from_secs(30)),
            stale_if_error: Some(Duration::from_secs(300)),
            ..settings()
        };
        let plain = of(200, &[], None, &s).unwrap();
        assert_eq!(
            (
                plain.stale_while_revalidate.as_secs(),
                plain.stale_if_error.as_secs()
            ),
            (30, 300)
        );
        let own = of(
            200,
            &[("cache-control", "max-age=5, stale-while-revalidate=7")],
            None,
            &s,
        )
        .unwrap();
        assert_eq!(own.stale_while_revalidate.as_secs(), 7);
        let strict = of(
            200,
            &[("cache-control", "max-age=5, must-revalidate")],
            None,
            &s,
        )
        .unwrap();
        assert_eq!(
            (strict.stale_while_revalidate, strict.stale_if_error),
            (Duration::ZERO, Duration::ZERO)
        );
        // The CDN idiom: `s-maxage` with the response's own window.
        let cdn = of(
            200,
            &[("cache-control", "s-maxage=1, stale-while-revalidate=59")],
            None,
            &s,
        )
        .unwrap();
        assert_eq!(
            (
                cdn.stale_while_revalidate.as_secs(),
                cdn.stale_if_error.as_secs()
            ),
            (59, 0)
        );
    }

    #[test]
    fn a_sliding_route_has_no_stale_window_and_keeps_nothing_to_revalidate() {
        let s = FreshnessSettings {
            sliding: true,
            keep: MINUTE,
            stale_while_revalidate: Some(MINUTE),
            ..settings()
        };
        let entry = of(200, &[], None, &s).unwrap();
        assert_eq!(entry.ttl, MINUTE);
        assert_eq!(entry.stale_while_revalidate, Duration::ZERO);
        assert_eq!(
            ttl(of(
                200,
                &[("cache-control", "no-cache"), ("etag", "\"v\"")],
                None,
                &s
            )),
            Err(NotStoredReason::NoCache)
        );
    }
}
