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
        match combined_value(request_headers, name) {
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
