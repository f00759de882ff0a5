//! The stored form of a response: [`CachedResponse`].

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// A response as the cache stores it.
///
/// A [`CachedResponse`] is what a [`Store`](crate::store::Store) keeps: status, the headers
/// that may be replayed, the whole body as [`Bytes`], and the timing the cache needs to
/// compute `Age` and freshness on every hit. Stores that keep entries in process (such as
/// [`MemoryStore`](crate::MemoryStore)) hold them behind an [`Arc`](std::sync::Arc) so
/// that a hit clones a pointer, never the body; stores that serialize them use a
/// [`Codec`](crate::codec::Codec).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use bytes::Bytes;
/// use http::{HeaderMap, StatusCode};
/// use tower_response_cache::CachedResponse;
///
/// let mut entry = CachedResponse::new(StatusCode::OK, HeaderMap::new(), Bytes::from_static(b"hi"));
/// entry.ttl = Duration::from_secs(60);
/// let now = entry.stored_at + Duration::from_secs(10);
/// assert!(entry.is_fresh(now));
/// assert_eq!(entry.age(now), Duration::from_secs(10));
/// assert_eq!(entry.remaining_ttl(now), Duration::from_secs(50));
/// ```
///
/// Fields are public so that custom stores and codecs can read them; the struct is
/// `#[non_exhaustive]`, so build one with [`CachedResponse::new`] and set fields afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CachedResponse {
    /// The response status.
    pub status: StatusCode,
    /// The end-to-end headers replayed on a hit, in their original order (hop-by-hop headers
    /// are never stored).
    pub headers: HeaderMap,
    /// The complete response body.
    pub body: Bytes,
    /// When the cache received the response.
    pub stored_at: SystemTime,
    /// The response's age when it was stored (the origin's `Age` header, RFC 9111 §4.2.3).
    pub initial_age: Duration,
    /// How long after `stored_at` the entry is fresh.
    pub ttl: Duration,
    /// How long past freshness the entry may be served while it is refreshed (RFC 5861).
    pub stale_while_revalidate: Duration,
    /// How long past freshness the entry may be served when the origin fails (RFC 5861).
    pub stale_if_error: Duration,
    /// The request header values this response was selected by (the response's `Vary`
    /// header names, each with the request's value or `None` when the request lacked it).
    pub vary: Vec<(HeaderName, Option<HeaderValue>)>,
    /// Surrogate keys (tags) the entry can be purged by.
    pub tags: Vec<String>,
}

impl CachedResponse {
    /// An entry stored now, with no freshness (`ttl` zero), no stale windows, no variants and
    /// no tags.
    pub fn new(status: StatusCode, headers: HeaderMap, body: Bytes) -> Self {
        Self {
            status,
            headers,
            body,
            stored_at: SystemTime::now(),
            initial_age: Duration::ZERO,
            ttl: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            vary: Vec::new(),
            tags: Vec::new(),
        }
    }

    /// Time the entry has spent in the cache at `now` (zero if the clock went backwards).
    pub fn resident_time(&self, now: SystemTime) -> Duration {
        now.duration_since(self.stored_at).unwrap_or_default()
    }

    /// The response's current age at `now`: its age when stored plus its time in the cache
    /// (RFC 9111 §4.2.3). This is the value of the `Age` header on a hit.
    pub fn age(&self, now: SystemTime) -> Duration {
        self.initial_age.saturating_add(self.resident_time(now))
    }

    /// Whether the entry is still fresh at `now`.
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.resident_time(now) < self.ttl
    }

    /// How much longer the entry stays fresh after `now` (zero once stale).
    pub fn remaining_ttl(&self, now: SystemTime) -> Duration {
        self.ttl.saturating_sub(self.resident_time(now))
    }

    /// Whether the entry, fresh or stale, may still stand in for an origin that fails: it
    /// is within its freshness plus `stale_if_error` (RFC 5861 §4).
    pub fn may_serve_if_error(&self, now: SystemTime) -> bool {
        self.resident_time(now) < self.ttl.saturating_add(self.stale_if_error)
    }

    /// Whether the entry is stale but within its `stale_while_revalidate` window: it may
    /// answer while it is refreshed (RFC 5861 §3).
    pub fn may_serve_while_revalidating(&self, now: SystemTime) -> bool {
        let resident = self.resident_time(now);
        resident >= self.ttl && resident < self.ttl.saturating_add(self.stale_while_revalidate)
    }

    /// How long a store should keep the entry: its freshness plus the longest stale window.
    pub fn storage_ttl(&self) -> Duration {
        self.ttl
            .saturating_add(self.stale_while_revalidate.max(self.stale_if_error))
    }

    /// The stored `ETag`, if any.
    pub fn etag(&self) -> Option<&HeaderValue> {
        self.headers.get(http::header::ETAG)
    }

    /// The stored `Last-Modified`, if any.
    pub fn last_modified(&self) -> Option<&HeaderValue> {
        self.headers.get(http::header::LAST_MODIFIED)
    }

    /// Whether the entry has a validator (`ETag` or `Last-Modified`): once stale, it can be
    /// revalidated with a conditional request instead of fetched again (RFC 9111 §4.3).
    pub fn has_validator(&self) -> bool {
        has_validator(&self.headers)
    }

    /// How long a store keeps the entry when stale entries with a validator are kept `keep`
    /// longer for revalidation: [`storage_ttl`](Self::storage_ttl), plus `keep` if the entry
    /// has a validator.
    pub(crate) fn retention(&self, keep: Duration) -> Duration {
        if self.has_validator() {
            self.storage_ttl().saturating_add(keep)
        } else {
            self.storage_ttl()
        }
    }

    /// Rebuilds the headers and variant values for their life in the store.
    ///
    /// - Their bytes are copied into one allocation of exactly their size. A value may be a
    ///   slice of a larger buffer (a connection's read buffer: hyper's client and server
    ///   parse header values in place), which would stay allocated as long as the entry,
    ///   unseen by the store's byte accounting.
    /// - The header map keeps no spare entry slots (about 100 bytes each). A hit builds its
    ///   own map, with room for the headers it adds.
    pub(crate) fn compact(&mut self) {
        let vary_values = || self.vary.iter().filter_map(|(_, value)| value.as_ref());
        let len = self
            .headers
            .values()
            .chain(vary_values())
            .map(HeaderValue::len)
            .sum();
        let mut bytes = BytesMut::with_capacity(len);
        for value in self.headers.values().chain(vary_values()) {
            bytes.extend_from_slice(value.as_bytes());
        }
        let bytes = bytes.freeze();
        let mut offset = 0;
        let mut rehome = |value: &HeaderValue| {
            let end = offset + value.len();
            let slice = bytes.slice(offset..end);
            offset = end;
            // The buffer was filled in the order the values are visited here.
            debug_assert_eq!(slice, value.as_bytes());
            match HeaderValue::from_maybe_shared(slice) {
                Ok(mut copy) => {
                    copy.set_sensitive(value.is_sensitive());
                    copy
                }
                // Not reached: the bytes are those of a valid value.
                Err(_) => value.clone(),
            }
        };
        let vary_slots = self.vary.iter_mut().filter_map(|(_, value)| value.as_mut());
        for value in self.headers.values_mut().chain(vary_slots) {
            *value = rehome(value);
        }
        // A clone keeps the index table and allocates exactly the entries the map has.
        self.headers = self.headers.clone();
    }

    /// An estimate of the heap bytes the entry occupies behind an `Arc`: body, header names
    /// and values with the header map's bookkeeping, variant values, tags and the struct
    /// itself (measured by `cargo bench --bench hit`, "memory store" lines).
    pub fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + HEADER_OVERHEAD)
            .sum();
        let vary: usize = self
            .vary
            .iter()
            .map(|(name, value)| {
                name.as_str().len() + value.as_ref().map_or(0, HeaderValue::len) + HEADER_OVERHEAD
            })
            .sum();
        let tags: usize = self.tags.iter().map(|tag| tag.len() + 24).sum();
        std::mem::size_of::<Self>() + ENTRY_OVERHEAD + self.body.len() + headers + vary + tags
    }
}

/// An empty header map with room for `names` distinct names without growing, or, when that
/// is more than a map holds, one that grows as needed: a large count (of values from a
/// store, say) must not panic. Appends to it are `try_append`s for the same reason.
pub(crate) fn header_map_with_room(names: usize) -> HeaderMap {
    HeaderMap::try_with_capacity(names).unwrap_or_default()
}

/// Per-header bookkeeping: a `HeaderMap` bucket (104 bytes) and its share of the index
/// table (the values' bytes share one buffer, [`CachedResponse::compact`]).
const HEADER_OVERHEAD: usize = 110;

/// Per-entry bookkeeping besides the struct: the `Arc`'s counts (16 bytes) and the
/// shared-buffer records of the body and of the header values (24 each).
const ENTRY_OVERHEAD: usize = 64;

/// Whether a response has a validator (`ETag` or `Last-Modified`) a conditional request can
/// use (RFC 9110 §8.8).
pub(crate) fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::ETAG) || headers.contains_key(http::header::LAST_MODIFIED)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header value that is a slice of `buffer`, as hyper parses them.
    fn slice_of(buffer: &Bytes, range: std::ops::Range<usize>) -> HeaderValue {
        HeaderValue::from_maybe_shared(buffer.slice(range)).unwrap()
    }

    type Fields = Vec<(String, Vec<u8>, bool)>;

    /// Names, value bytes and sensitivity, in order, owned.
    fn fields(entry: &CachedResponse) -> (Fields, Fields) {
        let headers = entry
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.to_string(),
                    value.as_bytes().to_vec(),
                    value.is_sensitive(),
                )
            })
            .collect();
        let vary = entry
            .vary
            .iter()
            .map(|(name, value)| {
                let bytes = value.as_ref().map(|value| value.as_bytes().to_vec());
                (name.to_string(), bytes.unwrap_or_default(), value.is_some())
            })
            .collect();
        (headers, vary)
    }

    #[test]
    fn compacted_values_keep_no_foreign_buffer() {
        let buffer = Bytes::from(b"text/plain; charset=utf-8|max-age=60|gzip|".repeat(200));
        let mut headers = HeaderMap::new();
        headers.append(http::header::CONTENT_TYPE, slice_of(&buffer, 0..25));
        headers.append(http::header::CACHE_CONTROL, slice_of(&buffer, 26..36));
        let mut secret = slice_of(&buffer, 37..41);
        secret.set_sensitive(true);
        headers.append(HeaderName::from_static("x-secret"), secret);
        headers.append(http::header::CACHE_CONTROL, slice_of(&buffer, 26..33));
        headers.append(
            http::header::VARY,
            HeaderValue::from_static("accept-encoding"),
        );
        let mut entry = CachedResponse::new(StatusCode::OK, headers, Bytes::from_static(b"hi"));
        entry.vary = vec![
            (
                http::header::ACCEPT_ENCODING,
                Some(slice_of(&buffer, 37..41)),
            ),
            (http::header::ACCEPT_LANGUAGE, None),
        ];
        let before = fields(&entry);
        assert!(!buffer.is_unique());

        entry.compact();

        assert!(
            buffer.is_unique(),
            "the entry still refers to the buffer its values were parsed from"
        );
        assert_eq!(
            fields(&entry),
            before,
            "names, values, order and sensitivity are kept"
        );
        assert_eq!(
            entry
                .headers
                .get_all(http::header::CACHE_CONTROL)
                .iter()
                .count(),
            2
        );
    }
}
