//! The header fields an entry keeps (RFC 9110 §7.6.1 hop-by-hop fields and `Age` left out)
//! and their update from a `304 Not Modified` (RFC 9111 §3.2).

use http::header::{self, HeaderMap, HeaderName};

use super::SetCookiePolicy;
use super::cache_control::{CacheControl, qualified_field};
use crate::entry::header_map_with_room;

/// The response headers worth replaying: all but hop-by-hop ones (RFC 9110 §7.6.1), those
/// named by `Connection`, `Age` (recomputed on every hit), those a qualified `no-cache="…"`
/// or `private="…"` lists (RFC 9111 §5.2.2.4, §5.2.2.7) and, under
/// [`SetCookiePolicy::Strip`], `Set-Cookie`.
pub(crate) fn stored_headers(headers: &HeaderMap, set_cookie: SetCookiePolicy) -> HeaderMap {
    const HOP_BY_HOP: [HeaderName; 8] = [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ];
    let connection_names: Vec<&[u8]> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    // Room for a `Content-Length` the capture may add; the entry's map is compacted once
    // it is complete (`CachedResponse::compact`).
    let mut stored = header_map_with_room(headers.keys_len() + 1);
    for (name, value) in headers {
        let skip = HOP_BY_HOP.contains(name)
            || *name == header::AGE
            || (*name == header::SET_COOKIE && set_cookie == SetCookiePolicy::Strip)
            || connection_names
                .iter()
                .any(|listed| listed.eq_ignore_ascii_case(name.as_str().as_bytes()));
        if !skip {
            let _ = stored.try_append(name.clone(), value.clone());
        }
    }
    strip_qualified(&mut stored);
    stored
}

/// Removes the fields `headers`' own qualified `no-cache="…"` / `private="…"` list: they
/// are never stored (RFC 9111 §5.2.2.4, §5.2.2.7).
fn strip_qualified(headers: &mut HeaderMap) {
    if !CacheControl::from_headers(headers).qualified {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| qualified_field(headers, name.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in listed {
        headers.remove(name);
    }
}

/// The stored header fields updated from a `304 Not Modified` (RFC 9111 §3.2): each field
/// the 304 carries replaces the stored one, except those the stored body depends on
/// (`Content-Length`, `Content-Encoding`, `Content-Range`, `Content-Type`); fields that are
/// never stored (hop-by-hop, `Age`) are not taken from it either.
pub(crate) fn updated_headers(
    stored: &HeaderMap,
    not_modified: &HeaderMap,
    set_cookie: SetCookiePolicy,
) -> HeaderMap {
    const KEPT: [HeaderName; 4] = [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::CONTENT_RANGE,
        header::CONTENT_TYPE,
    ];
    let incoming = stored_headers(not_modified, set_cookie);
    let replaced = |name: &HeaderName| incoming.contains_key(name) && !KEPT.contains(name);
    // Compacted once it is the entry's (`CachedResponse::compact`).
    let mut merged = header_map_with_room(stored.keys_len() + incoming.keys_len());
    for (name, value) in stored {
        if !replaced(name) {
            let _ = merged.try_append(name.clone(), value.clone());
        }
    }
    for (name, value) in &incoming {
        if !KEPT.contains(name) {
            let _ = merged.try_append(name.clone(), value.clone());
        }
    }
    // The stored response's qualifiers still hold for fields the 304 brings.
    strip_qualified(&mut merged);
    merged
}
