//! `Vary` (RFC 9111 §4.1): the request header values a response varies on, how requests
//! are matched to a stored variant, and the hash that picks a variant's slot.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::entry::CachedResponse;
use crate::key::{credential_hash, is_credential};

/// A hash of the request's values of the headers `vary` lists, normalized as
/// [`variant_matches`] compares them: requests of one variant hash alike.
pub(crate) fn variant_hash(
    vary: &[(HeaderName, Option<HeaderValue>)],
    request_headers: &HeaderMap,
) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (name, _) in vary {
        hasher.update(name.as_str().as_bytes());
        let value = combined_value(request_headers, name).map(|value| {
            negotiation_normalized(name, value.as_bytes())
                .and_then(|normalized| HeaderValue::from_bytes(&normalized).ok())
                .unwrap_or(value)
        });
        match value {
            Some(value) => {
                hasher.update(b"=");
                for item in value.as_bytes().split(|&b| b == b',') {
                    hasher.update(item.trim_ascii());
                    hasher.update(b",");
                }
            }
            None => hasher.update(b"!"),
        }
        hasher.update(b"\n");
    }
    hasher.digest()
}

/// The request's values of the headers the response varies on (RFC 9111 §4.1).
pub(crate) fn vary_values(
    response_headers: &HeaderMap,
    request_headers: &HeaderMap,
) -> Vec<(HeaderName, Option<HeaderValue>)> {
    vary_names(response_headers)
        .map(|name| {
            let value = vary_value(request_headers, &name);
            (name, value)
        })
        .collect()
}

/// The request's value of a varied header as the entry keeps it: all its field lines as one
/// list, and for a credential (`Vary: Cookie`, `Vary: Authorization`) a hash of its
/// normalized items instead, so that no stored entry holds a user's credentials.
pub(crate) fn vary_value(request_headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let value = combined_value(request_headers, name)?;
    if let Some(normalized) = negotiation_normalized(name, value.as_bytes()) {
        return HeaderValue::from_bytes(&normalized).ok().or(Some(value));
    }
    if !is_credential(name) {
        return Some(value);
    }
    let mut normalized = Vec::with_capacity(value.len());
    for (i, item) in value.as_bytes().split(|&b| b == b',').enumerate() {
        if i > 0 {
            normalized.push(b',');
        }
        normalized.extend_from_slice(item.trim_ascii());
    }
    HeaderValue::try_from(credential_hash(&normalized)).ok()
}

/// A proactive-negotiation field's value in one canonical form, so that equivalent
/// requests select one variant (RFC 9111 §4.1 lets a cache normalize by the field's syntax):
/// `Accept-Encoding` and `Accept-Language` items lower-cased, ordered by weight and then
/// name, each weight in its shortest form (`q=1`, `q=1.0` and none are alike; `q=0.90` is
/// `q=0.9`), with the whitespace gone. `None` for other fields, and for a value that does not parse (compared
/// as written then).
pub(crate) fn negotiation_normalized(name: &HeaderName, value: &[u8]) -> Option<Vec<u8>> {
    if *name != header::ACCEPT_ENCODING && *name != header::ACCEPT_LANGUAGE {
        return None;
    }
    let mut items: Vec<(u16, Vec<u8>)> = Vec::new();
    for item in value.split(|&b| b == b',') {
        let mut parts = item.split(|&b| b == b';').map(<[u8]>::trim_ascii);
        let token = parts.next()?;
        if token.is_empty() {
            // Empty list members are allowed and mean nothing (RFC 9110 §5.6.1).
            if parts.next().is_some() {
                return None;
            }
            continue;
        }
        if !token.iter().all(|&b| b.is_ascii_graphic()) {
            return None;
        }
        let mut weight = 1000;
        for parameter in parts {
            let eq = parameter.iter().position(|&b| b == b'=')?;
            let (key, value) = (
                parameter[..eq].trim_ascii(),
                parameter[eq + 1..].trim_ascii(),
            );
            if !key.eq_ignore_ascii_case(b"q") {
                return None;
            }
            weight = qvalue(value)?;
        }
        items.push((weight, token.to_ascii_lowercase()));
    }
    items.sort_by(|(wa, a), (wb, b)| wb.cmp(wa).then_with(|| a.cmp(b)));
    items.dedup();
    let mut normalized = Vec::with_capacity(value.len());
    for (i, (weight, token)) in items.iter().enumerate() {
        if i > 0 {
            normalized.push(b',');
        }
        normalized.extend_from_slice(token);
        match weight {
            1000 => {}
            0 => normalized.extend_from_slice(b";q=0"),
            _ => {
                let digits = format!("{weight:03}");
                normalized.extend_from_slice(b";q=0.");
                normalized.extend_from_slice(digits.trim_end_matches('0').as_bytes());
            }
        }
    }
    Some(normalized)
}

/// A weight (RFC 9110 §12.4.2: `0` to `1` with up to three decimals) in thousandths.
fn qvalue(value: &[u8]) -> Option<u16> {
    let (whole, fraction) = match value.iter().position(|&b| b == b'.') {
        Some(dot) => (&value[..dot], &value[dot + 1..]),
        None => (value, &b""[..]),
    };
    if fraction.len() > 3 || !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, &digit) in fraction.iter().enumerate() {
        thousandths += u16::from(digit - b'0') * [100, 10, 1][i];
    }
    match whole {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

pub(crate) fn vary_names(headers: &HeaderMap) -> impl Iterator<Item = HeaderName> + '_ {
    headers
        .get_all(header::VARY)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
}

/// All field lines of `name`, joined as one list value (RFC 9110 §5.3).
pub(crate) fn combined_value(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let rest: Vec<&HeaderValue> = values.collect();
    if rest.is_empty() {
        return Some(first.clone());
    }
    let mut joined = first.as_bytes().to_vec();
    for value in rest {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(value.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// Whether the request selects the stored variant: each varied header has the same value,
/// after trimming and, for list separators, ignoring whitespace.
pub(crate) fn variant_matches(entry: &CachedResponse, request_headers: &HeaderMap) -> bool {
    entry.vary.iter().all(|(name, stored)| {
        let current = vary_value(request_headers, name);
        match (stored, current) {
            (None, None) => true,
            (Some(stored), Some(current)) => normalized_eq(stored.as_bytes(), current.as_bytes()),
            _ => false,
        }
    })
}

/// Compares two field values ignoring whitespace around list commas (RFC 9111 §4.1 allows
/// normalizing by the header's syntax; whitespace is the safe part of that for any header).
pub(crate) fn normalized_eq(a: &[u8], b: &[u8]) -> bool {
    let mut left = a.split(|&b| b == b',').map(<[u8]>::trim_ascii);
    let mut right = b.split(|&b| b == b',').map(<[u8]>::trim_ascii);
    loop {
        match (left.next(), right.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn normal(name: HeaderName, value: &str) -> Option<String> {
        negotiation_normalized(&name, value.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn equivalent_accept_encoding_and_accept_language_values_are_one_rfc9111_4_1() {
        let encoding = |value| normal(header::ACCEPT_ENCODING, value);
        let expected = encoding("br, gzip");
        for value in [
            "gzip, br",
            "GZIP,BR",
            " br ,gzip ",
            "br;q=1, gzip;q=1.000",
            "gzip;Q=1.0, br, ,",
        ] {
            assert_eq!(encoding(value), expected, "{value}");
        }
        assert_ne!(encoding("gzip;q=0.5, br"), expected);
        assert_ne!(encoding("gzip"), expected);
        let language = |value| normal(header::ACCEPT_LANGUAGE, value);
        assert_eq!(
            language("en-US,en;q=0.9,fr;q=0.8"),
            language("fr;q=0.80, EN;q=0.9, en-us")
        );
        assert_eq!(
            language("en-US,en;q=0.9").as_deref(),
            Some("en-us,en;q=0.9")
        );
        assert_ne!(
            language("en;q=0.9, fr;q=0.8"),
            language("en;q=0.8, fr;q=0.9")
        );
    }

    #[test]
    fn values_that_do_not_parse_and_other_fields_are_left_as_written() {
        for value in [
            "gzip;q=2",
            "gzip;q=0.1234",
            "gzip;q=",
            "gzip;level=1",
            "gzip;q=-0",
            ";q=1",
            "gz ip",
        ] {
            assert_eq!(normal(header::ACCEPT_ENCODING, value), None, "{value}");
        }
        assert_eq!(normal(header::ACCEPT, "text/html, */*"), None);
        assert_eq!(normal(header::COOKIE, "a=1"), None);
    }

    #[test]
    fn requests_of_one_variant_hash_alike_and_match() {
        let vary = [(header::ACCEPT_LANGUAGE, None)];
        let request = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static(value));
            headers
        };
        let (a, b) = (request("en-US,en;q=0.9"), request("en;q=0.90, EN-us"));
        assert_eq!(variant_hash(&vary, &a), variant_hash(&vary, &b));
        let mut entry =
            CachedResponse::new(http::StatusCode::OK, HeaderMap::new(), bytes::Bytes::new());
        let mut response = HeaderMap::new();
        response.insert(header::VARY, HeaderValue::from_static("accept-language"));
        entry.vary = vary_values(&response, &a);
        assert!(variant_matches(&entry, &b));
        assert!(!variant_matches(&entry, &request("fr")));
    }

    proptest! {
        #[test]
        fn normalizing_is_idempotent_and_never_panics(value in "[a-zA-Z0-9 ,;=.*-]{0,40}") {
            if let Some(once) = negotiation_normalized(&header::ACCEPT_ENCODING, value.as_bytes()) {
                let twice = negotiation_normalized(&header::ACCEPT_ENCODING, &once);
                prop_assert_eq!(twice, Some(once));
            }
        }
    }
}
