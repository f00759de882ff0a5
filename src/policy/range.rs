//! Range requests answered from a stored complete response (RFC 9110 §14): which bytes a
//! `Range: bytes=…` asks for, whether `If-Range` lets it apply, and the `206` or `416` that
//! answers it.
//!
//! - One range: `206 Partial Content` with `Content-Range: bytes first-last/length`.
//! - Several: `206` with a `multipart/byteranges` body, each part with its own
//!   `Content-Type` and `Content-Range` (§14.6).
//! - None satisfiable: `416 Range Not Satisfiable` with `Content-Range: bytes */length`.
//! - Anything else — no `Range`, a unit other than bytes, a header that does not parse or asks
//!   for too much (more than 100 ranges, overlaps), an `If-Range` that does not match, a
//!   `HEAD`, a stored status other than 200 — is answered with the whole response, as §14.2
//!   allows a server to ignore `Range`.

use std::ops::RangeInclusive;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http_range_header::RangeUnsatisfiableError;

/// How a request's `Range` is answered from a stored body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RangeAnswer {
    /// The whole response.
    Full,
    /// `206` with these bytes.
    Single(RangeInclusive<u64>),
    /// `206` with a `multipart/byteranges` body of these ranges, in the request's order.
    Multi(Vec<RangeInclusive<u64>>),
    /// `416`: no range overlaps the body.
    Unsatisfiable,
}

/// How `request` (a GET) asks for the `length` bytes of a stored 200 with `stored` headers.
pub(crate) fn range_answer(request: &HeaderMap, stored: &HeaderMap, length: u64) -> RangeAnswer {
    let Some(range) = request.get(header::RANGE) else {
        return RangeAnswer::Full;
    };
    // Several `Range` lines are no valid request for ranges (the field is a singleton).
    if request.get_all(header::RANGE).iter().nth(1).is_some() {
        return RangeAnswer::Full;
    }
    if let Some(if_range) = request.get(header::IF_RANGE)
        && !if_range_matches(if_range, stored)
    {
        return RangeAnswer::Full;
    }
    let Ok(range) = range.to_str() else {
        return RangeAnswer::Full;
    };
    let parsed = match http_range_header::parse_range_header(range.trim()) {
        Ok(parsed) => parsed,
        Err(_) => return RangeAnswer::Full,
    };
    match parsed.validate(length) {
        Ok(ranges) if ranges.is_empty() => RangeAnswer::Full,
        Ok(mut ranges) if ranges.len() == 1 => RangeAnswer::Single(ranges.remove(0)),
        Ok(ranges) => RangeAnswer::Multi(ranges),
        Err(RangeUnsatisfiableError::Unsatisfiable) => RangeAnswer::Unsatisfiable,
        Err(_) => RangeAnswer::Full,
    }
}

/// `If-Range` (RFC 9110 §13.1.5): the ranges apply only if the stored response is the one
/// the client has — by a strong entity tag that matches the stored strong one, or by a date
/// equal to its `Last-Modified`, which must itself be strong (at least a second before its
/// `Date`).
fn if_range_matches(if_range: &HeaderValue, stored: &HeaderMap) -> bool {
    let value = if_range.as_bytes().trim_ascii();
    if value.starts_with(b"W/") {
        return false;
    }
    if value.starts_with(b"\"") {
        return stored.get(header::ETAG).is_some_and(|etag| {
            let etag = etag.as_bytes().trim_ascii();
            !etag.starts_with(b"W/") && etag == value
        });
    }
    let Some(date) = super::date::parse_http_date(value) else {
        return false;
    };
    let time = |name| {
        stored
            .get(name)
            .and_then(|value: &HeaderValue| super::date::parse_http_date(value.as_bytes()))
    };
    let (Some(modified), Some(sent)) = (time(header::LAST_MODIFIED), time(header::DATE)) else {
        return false;
    };
    modified == date
        && sent
            .duration_since(modified)
            .is_ok_and(|gap| gap.as_secs() >= 1)
}

/// `bytes first-last/length`.
pub(crate) fn content_range(range: &RangeInclusive<u64>, length: u64) -> HeaderValue {
    HeaderValue::try_from(format!("bytes {}-{}/{length}", range.start(), range.end()))
        .unwrap_or_else(|_| HeaderValue::from_static("bytes */0"))
}

/// `bytes */length`, for a `416`.
pub(crate) fn unsatisfied_range(length: u64) -> HeaderValue {
    HeaderValue::try_from(format!("bytes */{length}"))
        .unwrap_or_else(|_| HeaderValue::from_static("bytes */0"))
}

/// The bytes of `body` a range names (validated against its length).
pub(crate) fn slice(body: &Bytes, range: &RangeInclusive<u64>) -> Bytes {
    let start = usize::try_from(*range.start()).unwrap_or(usize::MAX);
    let end = usize::try_from(*range.end()).unwrap_or(usize::MAX);
    if start > end || end >= body.len() {
        return Bytes::new();
    }
    body.slice(start..=end)
}

/// A `multipart/byteranges` body of `ranges` of `body` (RFC 9110 §14.6), and its
/// `Content-Type`. The boundary is one the body does not contain.
pub(crate) fn multipart(
    body: &Bytes,
    ranges: &[RangeInclusive<u64>],
    content_type: Option<&HeaderValue>,
) -> (Bytes, HeaderValue) {
    let boundary = boundary_for(body);
    let length = body.len() as u64;
    let mut out = BytesMut::new();
    for range in ranges {
        out.extend_from_slice(b"\r\n--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(content_type) = content_type {
            out.extend_from_slice(b"content-type: ");
            out.extend_from_slice(content_type.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"content-range: ");
        out.extend_from_slice(content_range(range, length).as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&slice(body, range));
    }
    out.extend_from_slice(b"\r\n--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");
    let content_type = HeaderValue::try_from(format!("multipart/byteranges; boundary={boundary}"))
        .unwrap_or_else(|_| HeaderValue::from_static("multipart/byteranges"));
    (out.freeze(), content_type)
}

/// A boundary (RFC 2046 §5.1.1: at most 70 characters) that does not occur in `body`.
fn boundary_for(body: &Bytes) -> String {
    (0u64..)
        .map(|seed| {
            format!(
                "trc-{:016x}",
                xxhash_rust::xxh3::xxh3_64_with_seed(body, seed)
            )
        })
        .find(|boundary| {
            !body
                .windows(boundary.len())
                .any(|window| window == boundary.as_bytes())
        })
        .unwrap_or_else(|| "trc-boundary".to_owned())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn answer(range: &'static str) -> RangeAnswer {
        range_answer(&headers(&[("range", range)]), &HeaderMap::new(), 100)
    }

    #[test]
    fn byte_ranges_of_every_form_rfc9110_14_1_2() {
        assert_eq!(answer("bytes=0-9"), RangeAnswer::Single(0..=9));
        assert_eq!(answer("bytes=90-"), RangeAnswer::Single(90..=99));
        assert_eq!(answer("bytes=-5"), RangeAnswer::Single(95..=99));
        // A last position past the end is the end; a suffix longer than the body is all
        // of it.
        assert_eq!(answer("bytes=50-1000"), RangeAnswer::Single(50..=99));
        assert_eq!(answer("bytes=-1000"), RangeAnswer::Single(0..=99));
        assert_eq!(answer("BYTES=0-0"), RangeAnswer::Single(0..=0));
        assert_eq!(
            answer("bytes=0-9, 20-29"),
            RangeAnswer::Multi(vec![0..=9, 20..=29])
        );
    }

    #[test]
    fn unsatisfiable_ranges_are_a_416_and_bad_ones_are_ignored_rfc9110_14_2() {
        assert_eq!(answer("bytes=100-"), RangeAnswer::Unsatisfiable);
        assert_eq!(answer("bytes=200-300"), RangeAnswer::Unsatisfiable);
        assert_eq!(answer("bytes=-0"), RangeAnswer::Unsatisfiable);
        for ignored in [
            "items=0-9",
            "bytes=9-0",
            "bytes=a-b",
            "bytes=",
            "bytes=0-9,10-19,5-15,0-99",
            "0-9",
        ] {
            assert_eq!(answer(ignored), RangeAnswer::Full, "{ignored}");
        }
        let two = headers(&[("range", "bytes=0-1"), ("range", "bytes=2-3")]);
        assert_eq!(
            range_answer(&two, &HeaderMap::new(), 100),
            RangeAnswer::Full
        );
        assert_eq!(
            range_answer(&HeaderMap::new(), &HeaderMap::new(), 100),
            RangeAnswer::Full
        );
    }

    #[test]
    fn if_range_applies_the_ranges_only_to_the_same_strong_representation_rfc9110_13_1_5() {
        let stored = headers(&[
            ("etag", "\"v1\""),
            ("last-modified", "Sat, 01 Jan 2000 00:00:00 GMT"),
            ("date", "Sat, 01 Jan 2000 00:00:05 GMT"),
        ]);
        let with = |if_range: &'static str| {
            range_answer(
                &headers(&[("range", "bytes=0-9"), ("if-range", if_range)]),
                &stored,
                100,
            )
        };
        assert_eq!(with("\"v1\""), RangeAnswer::Single(0..=9));
        assert_eq!(with("\"v2\""), RangeAnswer::Full);
        assert_eq!(with("W/\"v1\""), RangeAnswer::Full, "a weak tag never");
        assert_eq!(
            with("Sat, 01 Jan 2000 00:00:00 GMT"),
            RangeAnswer::Single(0..=9)
        );
        assert_eq!(with("Sat, 01 Jan 2000 00:00:01 GMT"), RangeAnswer::Full);
        assert_eq!(with("garbage"), RangeAnswer::Full);
        // A weak stored tag, or a `Last-Modified` as late as the `Date`: not strong.
        let weak = headers(&[
            ("etag", "W/\"v1\""),
            ("last-modified", "Sat, 01 Jan 2000 00:00:05 GMT"),
            ("date", "Sat, 01 Jan 2000 00:00:05 GMT"),
        ]);
        for if_range in ["\"v1\"", "Sat, 01 Jan 2000 00:00:05 GMT"] {
            let request = headers(&[("range", "bytes=0-9"), ("if-range", if_range)]);
            assert_eq!(range_answer(&request, &weak, 100), RangeAnswer::Full);
        }
    }

    #[test]
    fn multipart_bodies_carry_each_range_with_its_type_and_position_rfc9110_14_6() {
        let body = Bytes::from_static(b"0123456789abcdefghij");
        let content_type = HeaderValue::from_static("text/plain");
        let (multi, kind) = multipart(&body, &[0..=2, 10..=12], Some(&content_type));
        let kind = kind.to_str().unwrap();
        let boundary = kind
            .strip_prefix("multipart/byteranges; boundary=")
            .unwrap();
        let expected = format!(
            "\r\n--{boundary}\r\ncontent-type: text/plain\r\ncontent-range: bytes 0-2/20\r\n\r\n012\
             \r\n--{boundary}\r\ncontent-type: text/plain\r\ncontent-range: bytes 10-12/20\r\n\r\nabc\
             \r\n--{boundary}--\r\n"
        );
        assert_eq!(String::from_utf8(multi.to_vec()).unwrap(), expected);
    }

    #[test]
    fn the_boundary_never_occurs_in_the_body() {
        let first = boundary_for(&Bytes::from_static(b"x"));
        let hostile = Bytes::from(format!("..{first}.."));
        let boundary = boundary_for(&hostile);
        assert!(
            !hostile
                .windows(boundary.len())
                .any(|w| w == boundary.as_bytes())
        );
    }

    proptest! {
        #[test]
        fn every_answer_stays_within_the_body(
            range in "[ -~]{0,40}",
            length in 0u64..200,
        ) {
            let mut request = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&range) {
                request.insert(header::RANGE, value);
            }
            match range_answer(&request, &HeaderMap::new(), length) {
                RangeAnswer::Single(range) => prop_assert!(range.end() < &length && range.start() <= range.end()),
                RangeAnswer::Multi(ranges) => {
                    prop_assert!(ranges.len() > 1);
                    for range in ranges {
                        prop_assert!(range.end() < &length && range.start() <= range.end());
                    }
                }
                RangeAnswer::Full | RangeAnswer::Unsatisfiable => {}
            }
        }

        #[test]
        fn single_ranges_slice_exactly_those_bytes(start in 0u64..50, len in 1u64..50) {
            let body = Bytes::from((0u8..100).collect::<Vec<u8>>());
            let end = start + len - 1;
            let value = HeaderValue::from_str(&format!("bytes={start}-{end}")).unwrap();
            let mut request = HeaderMap::new();
            request.insert(header::RANGE, value);
            let RangeAnswer::Single(range) = range_answer(&request, &HeaderMap::new(), 100) else {
                panic!("one range");
            };
            let sliced = slice(&body, &range);
            prop_assert_eq!(&sliced[..], &body[start as usize..=end as usize]);
        }
    }
}
