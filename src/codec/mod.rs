//! Versioned serialization of [`CachedResponse`] for stores that keep bytes (such as Redis).
//!
//! Two codecs implement [`Codec`]:
//!
//! * [`BinaryCodec`] (the default): compact and fast. The magic `TRC`, a version byte `1`,
//!   then every field in a fixed order with big-endian integers and explicit lengths:
//!   status `u16`; `stored_at` as `u64` nanoseconds since the UNIX epoch; `initial_age`, `ttl`,
//!   `stale_while_revalidate`, `stale_if_error` as `u64` nanoseconds; headers (`u32` count,
//!   then each name as `u16` length + bytes and value as `u32` length + bytes, in order, with
//!   repeated names kept); vary (`u32` count, then each name, a presence byte `0`/`1` and, if
//!   present, the value); tags (`u32` count, then each as `u32` length + UTF-8); the body as
//!   `u64` length + bytes. Nothing may follow the body.
//! * [`JsonCodec`]: readable in `redis-cli`. An object such as
//!   `{"v":1,"status":200,"stored_at_ns":…,"initial_age_ns":…,"ttl_ns":…,"swr_ns":…,"sie_ns":…,
//!   "headers":[["content-type","text/plain"]],"vary":[["accept-language","en"],["x-missing",null]],
//!   "tags":["a"],"body":"hello"}`. A body that is not UTF-8 is written as `"body_b64"` (standard
//!   base64) instead of `"body"`; a header or vary value that is not UTF-8 as `{"b64":"…"}`.
//!
//! Durations and times are saturated to what a `u64` of nanoseconds holds (about 584 years; a
//! `stored_at` before the epoch becomes the epoch); everything else round-trips exactly.
//! Decoding never panics: input that is not an encoding of the codec is a [`DecodeError`].
//! Both round trips are property-tested, and both decoders are fuzzed.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{HeaderMap, HeaderValue, StatusCode, header::CONTENT_TYPE};
//! use tower_response_cache::CachedResponse;
//! use tower_response_cache::codec::{BinaryCodec, Codec, JsonCodec};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
//! let mut entry = CachedResponse::new(StatusCode::OK, headers, Bytes::from_static(b"hello"));
//! entry.ttl = Duration::from_secs(60);
//! entry.tags.push("greeting".to_owned());
//!
//! let codecs: [&dyn Codec; 2] = [&BinaryCodec, &JsonCodec];
//! for codec in codecs {
//!     let bytes = codec.encode(&entry);
//!     assert_eq!(codec.decode(&bytes)?, entry);
//! }
//! let json = JsonCodec.encode(&entry);
//! assert!(std::str::from_utf8(&json)?.contains(r#""body":"hello""#));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Over 600 lines: two codecs and the framing they share (about 650 lines), then their
// round-trip and property tests.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use bytes::{BufMut as _, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::entry::CachedResponse;

mod binary;
mod json;

#[cfg(any(feature = "redis", feature = "memcached"))]
pub(crate) use binary::{BINARY_PREFIX, BINARY_STORED_AT, binary_stored_at};

/// Turns a [`CachedResponse`] into bytes and back.
///
/// Implementations must be able to decode what they encode, and must reject (never panic on)
/// anything else, since the bytes come from an external store that may hold stale formats,
/// other applications' keys or corrupted data.
pub trait Codec: Send + Sync + fmt::Debug + 'static {
    /// Serializes an entry.
    fn encode(&self, entry: &CachedResponse) -> Bytes;
    /// Parses bytes produced by `encode` (of this codec); anything else is an error, never a panic.
    fn decode(&self, bytes: &[u8]) -> Result<CachedResponse, DecodeError>;
    /// Like [`decode`](Self::decode), from bytes the caller owns: a codec may then share
    /// them (the body as a slice of `bytes`) instead of copying. The default copies.
    fn decode_shared(&self, bytes: &Bytes) -> Result<CachedResponse, DecodeError> {
        self.decode(bytes)
    }
    /// A short name for logs (`"binary"`, `"json"`).
    fn name(&self) -> &'static str;
}

/// The compact binary format (magic `TRC`, version 1); the default codec.
#[derive(Clone, Copy, Debug, Default)]
pub struct BinaryCodec;

/// The JSON format (`"v":1`), readable in `redis-cli` at some cost in size and speed.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonCodec;

/// Why bytes could not be decoded into a [`CachedResponse`].
#[derive(Debug)]
pub struct DecodeError {
    kind: DecodeErrorKind,
    what: &'static str,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// The category of a [`DecodeError`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The bytes are not in this codec's format (wrong magic, not a JSON object with `"v"`).
    UnknownFormat,
    /// The bytes are in this codec's format, but of a version this build does not read.
    UnsupportedVersion,
    /// The bytes end before the entry does.
    Truncated,
    /// A field is malformed: bad status, header name or value, UTF-8, base64, JSON shape,
    /// trailing bytes.
    Invalid,
}

impl DecodeError {
    fn new(kind: DecodeErrorKind, what: &'static str) -> Self {
        Self {
            kind,
            what,
            source: None,
        }
    }

    fn invalid(what: &'static str) -> Self {
        Self::new(DecodeErrorKind::Invalid, what)
    }

    fn truncated() -> Self {
        Self::new(DecodeErrorKind::Truncated, "input ends before the entry")
    }

    fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The category of the error.
    pub fn kind(&self) -> DecodeErrorKind {
        self.kind
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot decode cached response: {}", self.what)
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// `u64` nanoseconds since the epoch; saturated, since the format has no room for more.
fn time_to_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, duration_to_nanos)
}

fn duration_to_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn time_from_nanos(nanos: u64) -> Result<SystemTime, DecodeError> {
    // `checked_add` because a platform's `SystemTime` may not reach 584 years past the epoch.
    UNIX_EPOCH
        .checked_add(Duration::from_nanos(nanos))
        .ok_or_else(|| DecodeError::invalid("stored_at out of range"))
}

fn status_from_u16(status: u16) -> Result<StatusCode, DecodeError> {
    StatusCode::from_u16(status).map_err(|e| DecodeError::invalid("bad status").with_source(e))
}

fn header_name(bytes: &[u8]) -> Result<HeaderName, DecodeError> {
    HeaderName::from_bytes(bytes)
        .map_err(|e| DecodeError::invalid("bad header name").with_source(e))
}

fn header_value(bytes: &[u8]) -> Result<HeaderValue, DecodeError> {
    HeaderValue::from_bytes(bytes)
        .map_err(|e| DecodeError::invalid("bad header value").with_source(e))
}

/// The most header slots decoding reserves up front; more are grown on demand. Keeps
/// `try_with_capacity` far below `HeaderMap`'s size limit, which repeated names can exceed
/// in count without exceeding it in distinct entries.
const MAX_HEADER_PREALLOC: usize = 1024;

fn header_map(capacity: usize) -> Result<HeaderMap, DecodeError> {
    HeaderMap::try_with_capacity(capacity.min(MAX_HEADER_PREALLOC))
        .map_err(|e| DecodeError::invalid("too many headers").with_source(e))
}

fn append_header(
    headers: &mut HeaderMap,
    name: HeaderName,
    value: HeaderValue,
) -> Result<(), DecodeError> {
    headers
        .try_append(name, value)
        .map(drop)
        .map_err(|e| DecodeError::invalid("too many headers").with_source(e))
}

// Binary format.

#[cfg(test)]
mod tests;
