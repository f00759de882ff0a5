//! Conditional requests answered from the cache (RFC 9110 §13): a client that already holds
//! the stored representation gets `304 Not Modified` instead of the body.
//!
//! `If-None-Match` is evaluated first, with the weak comparison (§13.1.2: `W/"a"` matches
//! `"a"`), a list of tags, or `*`; only when it is absent does `If-Modified-Since` count,
//! against the stored `Last-Modified`, else its `Date` (§13.1.3, RFC 9111 §4.3.2). Only a stored `200` is answered with a 304
//! (§13.1.2, §13.2.1 apply to the selected representation).

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};

/// Whether a stored response (`status`, `headers`) lets the cache answer the request
/// (`request`) with 304.
pub(crate) fn not_modified(status: StatusCode, headers: &HeaderMap, request: &HeaderMap) -> bool {
    if status != StatusCode::OK {
        return false;
    }
    let mut if_none_match = request.get_all(header::IF_NONE_MATCH).iter().peekable();
    if if_none_match.peek().is_some() {
        let Some(etag) = headers
            .get(header::ETAG)
            .and_then(|etag| opaque_tag(etag.as_bytes()))
        else {
            // `*` matches any current representation; a stored response without a tag
            // still is one.
            return if_none_match.any(|value| value.as_bytes().trim_ascii() == b"*");
        };
        return if_none_match.any(|value| list_matches(value, etag));
    }
    // A field with more than one member is ignored (RFC 9110 §13.1.3).
    let mut since = request.get_all(header::IF_MODIFIED_SINCE).iter();
    let (Some(since), None) = (since.next(), since.next()) else {
        return false;
    };
    let Some(since) = http_date(Some(since)) else {
        return false;
    };
    // Without Last-Modified, the response's Date stands in (RFC 9111 §4.3.2).
    let modified = headers
        .get(header::LAST_MODIFIED)
        .or_else(|| headers.get(header::DATE));
    http_date(modified).is_some_and(|modified| modified <= since)
}

/// The headers a 304 carries (RFC 9110 §15.4.5): those a 200 would have sent among
/// Cache-Control, Content-Location, Date, ETag, Expires and Vary.
pub(crate) fn not_modified_headers(headers: &HeaderMap) -> HeaderMap {
    const KEPT: [header::HeaderName; 6] = [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
    ];
    let mut kept = HeaderMap::with_capacity(KEPT.len() + 3);
    for name in KEPT {
        for value in headers.get_all(&name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

fn http_date(value: Option<&HeaderValue>) -> Option<std::time::SystemTime> {
    super::date::parse_http_date(value?.as_bytes())
}

/// The quoted opaque tag of an entity tag, without its weakness indicator (`W/"x"` →
/// `"x"`), for the weak comparison.
fn opaque_tag(tag: &[u8]) -> Option<&[u8]> {
    let tag = tag.trim_ascii();
    let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
    (tag.len() >= 2 && tag.starts_with(b"\"") && tag.ends_with(b"\"")).then_some(tag)
}

/// Whether an `If-None-Match` field value (`*`, or a list of entity tags) matches `etag`.
fn list_matches(value: &HeaderValue, etag: &[u8]) -> bool {
    let mut rest = value.as_bytes();
    loop {
        rest = rest.trim_ascii_start();
        if rest.is_empty() {
            return false;
        }
        if let Some(after) = rest.strip_prefix(b"*")
            && after.trim_ascii_start().first().is_none_or(|b| *b == b',')
        {
            return true;
        }
        // One entity tag: [W/] DQUOTE *etagc DQUOTE. Entity tags may hold commas, so the
        // list is split after each closing quote, not at every comma.
        let start = usize::from(rest.starts_with(b"W/")) * 2;
        if rest.get(start) != Some(&b'"') {
            return false;
        }
        let Some(close) = rest[start + 1..].iter().position(|b| *b == b'"') else {
            return false;
        };
        let end = start + 1 + close + 1;
        if opaque_tag(&rest[..end]) == Some(etag) {
            return true;
        }
        rest = rest[end..].trim_ascii_start();
        match rest.strip_prefix(b",") {
            Some(after) => rest = after,
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn check(stored: &[(&str, &str)], request: &[(&str, &str)]) -> bool {
        not_modified(StatusCode::OK, &map(stored), &map(request))
    }

    #[test]
    fn if_none_match_uses_the_weak_comparison() {
        // RFC 9110 §8.8.3.2: W/"1" and "1" match weakly.
        let stored = [("etag", "W/\"1\"")];
        assert!(check(&stored, &[("if-none-match", "\"1\"")]));
        assert!(check(&stored, &[("if-none-match", "W/\"1\"")]));
        assert!(!check(&stored, &[("if-none-match", "\"2\"")]));
        assert!(check(&[("etag", "\"1\"")], &[("if-none-match", "W/\"1\"")]));
    }

    #[test]
    fn if_none_match_takes_lists_star_and_commas_inside_tags() {
        let stored = [("etag", "\"a,b\"")];
        assert!(check(&stored, &[("if-none-match", "\"x\", \"a,b\"")]));
        assert!(check(
            &stored,
            &[("if-none-match", "\"x\""), ("if-none-match", "\"a,b\"")]
        ));
        assert!(!check(&stored, &[("if-none-match", "\"a\", \"b\"")]));
        assert!(check(&stored, &[("if-none-match", "*")]));
        assert!(
            check(&[], &[("if-none-match", "*")]),
            "* matches any stored representation"
        );
        assert!(!check(&[], &[("if-none-match", "\"a\"")]));
        assert!(!check(&stored, &[("if-none-match", "garbage")]));
    }

    #[test]
    fn if_modified_since_counts_only_without_if_none_match() {
        // RFC 9110 §13.1.3.
        let stored = [
            ("etag", "\"1\""),
            ("last-modified", "Sat, 01 Jan 2000 00:00:00 GMT"),
        ];
        let later = ("if-modified-since", "Sun, 02 Jan 2000 00:00:00 GMT");
        let earlier = ("if-modified-since", "Fri, 31 Dec 1999 00:00:00 GMT");
        assert!(check(&stored, &[later]));
        assert!(!check(&stored, &[earlier]));
        assert!(
            !check(&stored, &[later, ("if-none-match", "\"2\"")]),
            "If-None-Match decides"
        );
        assert!(!check(&stored, &[("if-modified-since", "not a date")]));
        assert!(
            !check(&[("etag", "\"1\"")], &[later]),
            "no Last-Modified, no 304"
        );
    }

    #[test]
    fn only_a_stored_200_becomes_a_304() {
        let stored = map(&[("etag", "\"1\"")]);
        let request = map(&[("if-none-match", "\"1\"")]);
        assert!(!not_modified(StatusCode::NOT_FOUND, &stored, &request));
    }

    #[test]
    fn a_304_keeps_only_the_metadata_rfc_9110_lists() {
        let headers = not_modified_headers(&map(&[
            ("etag", "\"1\""),
            ("cache-control", "max-age=60"),
            ("vary", "accept"),
            ("content-type", "text/html"),
            ("content-length", "42"),
            ("x-custom", "1"),
        ]));
        let names: Vec<_> = headers.keys().map(|name| name.as_str()).collect();
        assert_eq!(names, ["cache-control", "etag", "vary"]);
    }
}
