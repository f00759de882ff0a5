use super::*;
use http::HeaderValue;

fn rules() -> StorageRules {
    StorageRules {
        statuses: StatusSet::default(),
        set_cookie: SetCookiePolicy::Skip,
        allow_authorized: false,
        max_body_size: 1024,
        keep: Duration::ZERO,
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn check(
    status: u16,
    pairs: &[(&str, &str)],
    request: RequestFacts,
) -> Result<(), NotStoredReason> {
    admission(status, pairs, request, true).map(|_| ())
}

fn admission(
    status: u16,
    pairs: &[(&str, &str)],
    request: RequestFacts,
    origin_freshness: bool,
) -> Result<Admission, NotStoredReason> {
    let map = headers(pairs);
    let cc = CacheControl::from_headers(&map);
    check_storable(
        StatusCode::from_u16(status).unwrap(),
        &map,
        &cc,
        request,
        &rules(),
        origin_freshness,
    )
}

#[test]
fn any_final_status_with_explicit_freshness_is_admitted_rfc9111_3() {
    for status in [201, 302, 303, 307, 400, 403, 500, 502, 503, 504, 299, 599] {
        for freshness in [
            ("cache-control", "max-age=30"),
            ("cache-control", "s-maxage=30"),
            ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
        ] {
            assert_eq!(
                admission(status, &[freshness], GET, true),
                Ok(Admission::ExplicitOnly),
                "{status} {freshness:?}"
            );
        }
        assert_eq!(
            admission(status, &[], GET, true),
            Err(NotStoredReason::Status),
            "{status} without explicit freshness: the status set decides"
        );
        assert_eq!(
            admission(status, &[("cache-control", "max-age=30")], GET, false),
            Err(NotStoredReason::Status),
            "{status} on a route that ignores the origin's freshness"
        );
    }
    // Listed statuses stay listed, with or without.
    assert_eq!(admission(200, &[], GET, true), Ok(Admission::Listed));
    assert_eq!(
        admission(404, &[("cache-control", "max-age=5")], GET, true),
        Ok(Admission::Listed)
    );
    // An interim response even when the status set names it (RFC 9110 §15.2).
    let mut with_hints = rules();
    with_hints.statuses = with_hints.statuses.with(StatusCode::from_u16(103).unwrap());
    let map = headers(&[("cache-control", "max-age=30")]);
    assert_eq!(
        check_storable(
            StatusCode::from_u16(103).unwrap(),
            &map,
            &CacheControl::from_headers(&map),
            GET,
            &with_hints,
            true
        ),
        Err(NotStoredReason::Status)
    );
    // Never: interim responses, partial content, 304, and what is no HTTP status.
    for status in [100, 103, 199, 206, 304, 600, 999] {
        assert_eq!(
            admission(status, &[("cache-control", "max-age=30")], GET, true),
            Err(NotStoredReason::Status),
            "{status}"
        );
    }
    // The other rules still hold.
    assert_eq!(
        admission(302, &[("cache-control", "max-age=30, private")], GET, true),
        Err(NotStoredReason::Private)
    );
}

#[test]
fn must_understand_overrides_no_store_for_understood_statuses_only_rfc9111_5_2_2_3() {
    let both = ("cache-control", "must-understand, no-store, max-age=30");
    assert_eq!(admission(200, &[both], GET, true), Ok(Admission::Listed));
    assert_eq!(
        admission(302, &[both], GET, true),
        Ok(Admission::ExplicitOnly)
    );
    assert_eq!(
        admission(299, &[both], GET, true),
        Err(NotStoredReason::Status),
        "a status the cache does not understand"
    );
    assert_eq!(
        admission(
            299,
            &[("cache-control", "must-understand, max-age=30")],
            GET,
            true
        ),
        Err(NotStoredReason::Status),
        "not stored even without no-store"
    );
    assert_eq!(
        admission(200, &[("cache-control", "no-store, max-age=30")], GET, true),
        Err(NotStoredReason::NoStore),
        "no-store alone"
    );
}

const GET: RequestFacts = RequestFacts {
    head: false,
    authorization: false,
    cookie: false,
};
const AUTHORIZED: RequestFacts = RequestFacts {
    head: false,
    authorization: true,
    cookie: false,
};
const WITH_COOKIE: RequestFacts = RequestFacts {
    head: false,
    authorization: false,
    cookie: true,
};

#[test]
fn default_statuses_are_the_heuristically_cacheable_ones() {
    for code in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
        assert_eq!(check(code, &[], GET), Ok(()), "{code}");
    }
    for code in [201, 206, 302, 304, 307, 400, 401, 403, 500, 502, 503] {
        assert_eq!(
            check(code, &[], GET),
            Err(NotStoredReason::Status),
            "{code}"
        );
    }
}

#[test]
fn response_directives_prevent_storing() {
    assert_eq!(
        check(200, &[("cache-control", "no-store")], GET),
        Err(NotStoredReason::NoStore)
    );
    assert_eq!(
        check(200, &[("cache-control", "Private")], GET),
        Err(NotStoredReason::Private)
    );
    assert_eq!(
        check(200, &[("cache-control", "no-cache")], GET),
        Err(NotStoredReason::NoCache)
    );
    assert_eq!(
        check(200, &[("vary", "accept, *")], GET),
        Err(NotStoredReason::VaryStar)
    );
    assert_eq!(check(200, &[("vary", "accept")], GET), Ok(()));
}

#[test]
fn head_requests_are_never_stored() {
    let head = RequestFacts { head: true, ..GET };
    assert_eq!(check(200, &[], head), Err(NotStoredReason::Head));
}

#[test]
fn authorization_needs_an_explicit_permission() {
    assert_eq!(
        check(200, &[], AUTHORIZED),
        Err(NotStoredReason::Authorization)
    );
    // RFC 9111 §3.5.
    for cc in ["public", "s-maxage=10", "must-revalidate"] {
        assert_eq!(
            check(200, &[("cache-control", cc)], AUTHORIZED),
            Ok(()),
            "{cc}"
        );
    }
    let map = HeaderMap::new();
    let allowed = StorageRules {
        allow_authorized: true,
        ..rules()
    };
    let cc = CacheControl::default();
    assert_eq!(
        check_storable(StatusCode::OK, &map, &cc, AUTHORIZED, &allowed, true).map(|_| ()),
        Ok(())
    );
}

#[test]
fn a_request_with_cookies_needs_a_response_marked_shared() {
    assert_eq!(check(200, &[], WITH_COOKIE), Err(NotStoredReason::Cookie));
    // A browser-cache lifetime is not a declaration that the page is the same for
    // everyone; nor is `must-revalidate`.
    for cc in ["max-age=60", "must-revalidate, max-age=60"] {
        assert_eq!(
            check(200, &[("cache-control", cc)], WITH_COOKIE),
            Err(NotStoredReason::Cookie),
            "{cc}"
        );
    }
    for cc in ["public", "public, max-age=60", "s-maxage=10"] {
        assert_eq!(
            check(200, &[("cache-control", cc)], WITH_COOKIE),
            Ok(()),
            "{cc}"
        );
    }
    // `private` wins over everything.
    assert_eq!(
        check(200, &[("cache-control", "public, private")], WITH_COOKIE),
        Err(NotStoredReason::Private)
    );
}

#[test]
fn a_content_length_that_is_not_one_number_is_not_stored() {
    for value in ["abc", "-1", "1.5", "99999999999999999999999", "", "5, 5"] {
        assert_eq!(
            check(200, &[("content-length", value)], GET),
            Err(NotStoredReason::Malformed),
            "{value:?}"
        );
    }
    assert_eq!(
        check(
            200,
            &[("content-length", "5"), ("content-length", "5")],
            GET
        ),
        Err(NotStoredReason::Malformed),
        "two field lines"
    );
    assert_eq!(check(200, &[("content-length", " 5 ")], GET), Ok(()));
}

#[test]
fn set_cookie_depends_on_the_policy() {
    let map = headers(&[("set-cookie", "a=b")]);
    let cc = CacheControl::default();
    assert_eq!(
        check_storable(StatusCode::OK, &map, &cc, GET, &rules(), true).map(|_| ()),
        Err(NotStoredReason::SetCookie)
    );
    for policy in [SetCookiePolicy::Strip, SetCookiePolicy::Store] {
        let rules = StorageRules {
            set_cookie: policy,
            ..rules()
        };
        assert_eq!(
            check_storable(StatusCode::OK, &map, &cc, GET, &rules, true).map(|_| ()),
            Ok(())
        );
    }
}

#[test]
fn declared_length_over_the_cap_is_too_large() {
    assert_eq!(
        check(200, &[("content-length", "1025")], GET),
        Err(NotStoredReason::TooLarge)
    );
    assert_eq!(check(200, &[("content-length", "1024")], GET), Ok(()));
}

#[test]
fn origin_lifetime_prefers_s_maxage_then_max_age_then_expires() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let lifetime = |pairs: &[(&str, &str)]| {
        let map = headers(pairs);
        origin_lifetime(&map, &CacheControl::from_headers(&map), now)
    };
    assert_eq!(lifetime(&[]), None);
    assert_eq!(
        lifetime(&[("cache-control", "max-age=10, s-maxage=20")]),
        Some(Duration::from_secs(20))
    );
    assert_eq!(
        lifetime(&[
            ("cache-control", "max-age=10"),
            ("expires", "Thu, 01 Jan 2099 00:00:00 GMT")
        ]),
        Some(Duration::from_secs(10))
    );
    let date = httpdate::fmt_http_date(now);
    let expires = httpdate::fmt_http_date(now + Duration::from_secs(300));
    assert_eq!(
        lifetime(&[("date", &date), ("expires", &expires)]),
        Some(Duration::from_secs(300))
    );
    assert_eq!(lifetime(&[("expires", "0")]), Some(Duration::ZERO));
}

#[test]
fn initial_age_takes_the_larger_of_age_and_date() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let date = httpdate::fmt_http_date(now - Duration::from_secs(7));
    assert_eq!(
        initial_age(&headers(&[("age", "3")]), now),
        Duration::from_secs(3)
    );
    assert_eq!(
        initial_age(&headers(&[("age", "3"), ("date", &date)]), now),
        Duration::from_secs(7)
    );
    assert_eq!(initial_age(&headers(&[("age", "x")]), now), Duration::ZERO);
    // Dated this second, 999 ms in: no age yet.
    let late = now + Duration::from_millis(999);
    let this_second = httpdate::fmt_http_date(now);
    assert_eq!(
        initial_age(&headers(&[("date", &this_second)]), late),
        Duration::ZERO
    );
}

#[test]
fn ttl_sources_in_order_of_precedence() {
    let s = Duration::from_secs;
    let all = TtlSources {
        explicit: Some(s(1)),
        origin: Some(s(20)),
        configured: Some(s(300)),
    };
    assert_eq!(ttl_from_sources(all, s(5)), Ok(s(1)));
    let origin = TtlSources {
        explicit: None,
        ..all
    };
    assert_eq!(ttl_from_sources(origin, s(5)), Ok(s(15)));
    let configured = TtlSources {
        origin: None,
        ..origin
    };
    assert_eq!(ttl_from_sources(configured, s(5)), Ok(s(300)));
    assert_eq!(
        ttl_from_sources(TtlSources::default(), s(0)),
        Err(NotStoredReason::NoFreshness)
    );
    let too_old = TtlSources {
        origin: Some(s(5)),
        ..configured
    };
    assert_eq!(
        ttl_from_sources(too_old, s(5)),
        Err(NotStoredReason::NoFreshness)
    );
}
