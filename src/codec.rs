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

const MAGIC: &[u8; 3] = b"TRC";
const BINARY_VERSION: u8 = 1;

/// What a [`BinaryCodec`] encoding starts with: the magic and the version. A store that
/// compares entries by age without decoding them (Redis, in a script) checks it first.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) const BINARY_PREFIX: [u8; 4] = [MAGIC[0], MAGIC[1], MAGIC[2], BINARY_VERSION];

/// Where a [`BinaryCodec`] encoding holds `stored_at`: after the prefix and the status, as
/// big-endian nanoseconds, whose byte order is their numeric order.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) const BINARY_STORED_AT: std::ops::Range<usize> = 6..14;

/// `stored_at` as a [`BinaryCodec`] encoding holds it.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn binary_stored_at(entry: &CachedResponse) -> [u8; 8] {
    time_to_nanos(entry.stored_at).to_be_bytes()
}
/// The fewest bytes a header takes: two empty length-prefixed strings.
const MIN_HEADER_LEN: usize = 2 + 4;
/// The fewest bytes a vary entry takes: an empty name and an absent value.
const MIN_VARY_LEN: usize = 2 + 1;
/// The fewest bytes a tag takes: an empty string.
const MIN_TAG_LEN: usize = 4;

/// Where [`write_binary`] puts bytes. It runs twice: into a counter to learn the exact size,
/// then into a `BytesMut` of that size, so encoding allocates once and the size computation
/// cannot drift from the writer.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for usize {
    fn put(&mut self, bytes: &[u8]) {
        *self = self.saturating_add(bytes.len());
    }
}

impl Sink for BytesMut {
    fn put(&mut self, bytes: &[u8]) {
        self.put_slice(bytes);
    }
}

/// Writes `bytes` behind a `u16` length. Header names always fit (the `http` crate caps them
/// at 64 KiB - 1); cutting anything longer keeps `encode` total and the output consistent.
fn put_u16_bytes(out: &mut impl Sink, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.put(&len.to_be_bytes());
    out.put(bytes.get(..usize::from(len)).unwrap_or(bytes));
}

/// Writes `bytes` behind a `u32` length. Header values and tags of 4 GiB cannot come from a
/// real response; cutting only keeps `encode` total and the output consistent.
fn put_u32_bytes(out: &mut impl Sink, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.put(&len.to_be_bytes());
    out.put(
        bytes
            .get(..usize::try_from(len).unwrap_or(usize::MAX))
            .unwrap_or(bytes),
    );
}

/// Writes a collection's `u32` count and returns how many items to write after it.
fn put_count(out: &mut impl Sink, len: usize) -> usize {
    let count = u32::try_from(len).unwrap_or(u32::MAX);
    out.put(&count.to_be_bytes());
    usize::try_from(count).unwrap_or(usize::MAX)
}

fn write_binary(out: &mut impl Sink, entry: &CachedResponse) {
    out.put(MAGIC);
    out.put(&[BINARY_VERSION]);
    out.put(&entry.status.as_u16().to_be_bytes());
    out.put(&time_to_nanos(entry.stored_at).to_be_bytes());
    for duration in [
        entry.initial_age,
        entry.ttl,
        entry.stale_while_revalidate,
        entry.stale_if_error,
    ] {
        out.put(&duration_to_nanos(duration).to_be_bytes());
    }

    let count = put_count(out, entry.headers.len());
    for (name, value) in entry.headers.iter().take(count) {
        put_u16_bytes(out, name.as_str().as_bytes());
        put_u32_bytes(out, value.as_bytes());
    }

    let count = put_count(out, entry.vary.len());
    for (name, value) in entry.vary.iter().take(count) {
        put_u16_bytes(out, name.as_str().as_bytes());
        match value {
            Some(value) => {
                out.put(&[1]);
                put_u32_bytes(out, value.as_bytes());
            }
            None => out.put(&[0]),
        }
    }

    let count = put_count(out, entry.tags.len());
    for tag in entry.tags.iter().take(count) {
        put_u32_bytes(out, tag.as_bytes());
    }

    // `usize` to `u64` cannot lose bits on any supported target; saturate rather than assume.
    let body_len = u64::try_from(entry.body.len()).unwrap_or(u64::MAX);
    out.put(&body_len.to_be_bytes());
    out.put(&entry.body);
}

fn encode_binary(entry: &CachedResponse) -> Bytes {
    let mut len = 0;
    write_binary(&mut len, entry);
    let mut buf = BytesMut::with_capacity(len);
    write_binary(&mut buf, entry);
    buf.freeze()
}

/// A bounds-checked big-endian cursor over untrusted input: every read either succeeds or
/// returns `Truncated`, never indexes out of range.
#[derive(Debug)]
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self
            .rest
            .split_at_checked(len)
            .ok_or_else(DecodeError::truncated)?;
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(DecodeError::truncated)?;
        self.rest = tail;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.array().map(u8::from_be_bytes)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_be_bytes)
    }

    fn u16_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    fn u32_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()?;
        // A length that does not fit in `usize` cannot fit in the input either.
        self.take(usize::try_from(len).map_err(|_| DecodeError::truncated())?)
    }

    /// A count, and how many items to reserve room for: no more than the remaining bytes
    /// could hold, so a forged count cannot make us allocate more than the input's size.
    fn count(&mut self, min_item_len: usize) -> Result<(usize, usize), DecodeError> {
        let count = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
        Ok((count, count.min(self.rest.len() / min_item_len)))
    }
}

fn decode_binary(bytes: &[u8]) -> Result<CachedResponse, DecodeError> {
    decode_binary_with(bytes, Bytes::copy_from_slice)
}

/// Decodes, making the body with `body` from its slice of the input (a copy, or a shared
/// slice of the caller's `Bytes`).
fn decode_binary_with(
    bytes: &[u8],
    body: impl FnOnce(&[u8]) -> Bytes,
) -> Result<CachedResponse, DecodeError> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| DecodeError::new(DecodeErrorKind::UnknownFormat, "no TRC magic"))?;
    let mut r = Reader { rest };
    if r.u8()? != BINARY_VERSION {
        return Err(DecodeError::new(
            DecodeErrorKind::UnsupportedVersion,
            "unsupported binary version",
        ));
    }
    let status = status_from_u16(r.u16()?)?;
    let stored_at = time_from_nanos(r.u64()?)?;
    let initial_age = Duration::from_nanos(r.u64()?);
    let ttl = Duration::from_nanos(r.u64()?);
    let stale_while_revalidate = Duration::from_nanos(r.u64()?);
    let stale_if_error = Duration::from_nanos(r.u64()?);

    // Each iteration consumes at least one byte or fails, so a forged count ends the loop at
    // the end of the input.
    let (count, capacity) = r.count(MIN_HEADER_LEN)?;
    let mut headers = header_map(capacity)?;
    for _ in 0..count {
        let name = header_name(r.u16_bytes()?)?;
        let value = header_value(r.u32_bytes()?)?;
        append_header(&mut headers, name, value)?;
    }

    let (count, capacity) = r.count(MIN_VARY_LEN)?;
    let mut vary = Vec::with_capacity(capacity);
    for _ in 0..count {
        let name = header_name(r.u16_bytes()?)?;
        let value = match r.u8()? {
            0 => None,
            1 => Some(header_value(r.u32_bytes()?)?),
            _ => return Err(DecodeError::invalid("bad vary presence byte")),
        };
        vary.push((name, value));
    }

    let (count, capacity) = r.count(MIN_TAG_LEN)?;
    let mut tags = Vec::with_capacity(capacity);
    for _ in 0..count {
        let tag = std::str::from_utf8(r.u32_bytes()?)
            .map_err(|e| DecodeError::invalid("tag is not UTF-8").with_source(e))?;
        tags.push(tag.to_owned());
    }

    let body_len = usize::try_from(r.u64()?).map_err(|_| DecodeError::truncated())?;
    let body = body(r.take(body_len)?);
    if !r.rest.is_empty() {
        return Err(DecodeError::invalid("trailing bytes after the body"));
    }

    Ok(CachedResponse {
        status,
        headers,
        body,
        stored_at,
        initial_age,
        ttl,
        stale_while_revalidate,
        stale_if_error,
        vary,
        tags,
    })
}

impl Codec for BinaryCodec {
    fn encode(&self, entry: &CachedResponse) -> Bytes {
        encode_binary(entry)
    }

    fn decode(&self, bytes: &[u8]) -> Result<CachedResponse, DecodeError> {
        decode_binary(bytes)
    }

    fn decode_shared(&self, bytes: &Bytes) -> Result<CachedResponse, DecodeError> {
        decode_binary_with(bytes, |body| bytes.slice_ref(body))
    }

    fn name(&self) -> &'static str {
        "binary"
    }
}

// JSON format.

const JSON_VERSION: u64 = 1;

/// The JSON document, used for both directions: `Cow`s borrow from the entry when encoding
/// and own when decoding.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEntry<'a> {
    v: u64,
    status: u16,
    stored_at_ns: u64,
    initial_age_ns: u64,
    ttl_ns: u64,
    swr_ns: u64,
    sie_ns: u64,
    headers: Vec<(Cow<'a, str>, JsonBytes<'a>)>,
    vary: Vec<(Cow<'a, str>, Option<JsonBytes<'a>>)>,
    tags: Cow<'a, [String]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_b64: Option<String>,
}

/// A header value: a plain string when it is UTF-8 (almost always), else `{"b64": "…"}`.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum JsonBytes<'a> {
    Text(Cow<'a, str>),
    Base64 { b64: String },
}

impl<'a> JsonBytes<'a> {
    fn encode(bytes: &'a [u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::Text(Cow::Borrowed(text)),
            Err(_) => Self::Base64 {
                b64: STANDARD.encode(bytes),
            },
        }
    }

    fn header_value(&self) -> Result<HeaderValue, DecodeError> {
        match self {
            Self::Text(text) => header_value(text.as_bytes()),
            Self::Base64 { b64 } => header_value(&base64_decode(b64)?),
        }
    }
}

/// Just the version, to tell "another version" and "not ours" from a malformed v1 document.
#[derive(Deserialize)]
struct JsonProbe {
    v: u64,
}

fn base64_decode(text: &str) -> Result<Vec<u8>, DecodeError> {
    STANDARD
        .decode(text)
        .map_err(|e| DecodeError::invalid("bad base64").with_source(e))
}

fn encode_json(entry: &CachedResponse) -> Bytes {
    let (body, body_b64) = match std::str::from_utf8(&entry.body) {
        Ok(text) => (Some(Cow::Borrowed(text)), None),
        Err(_) => (None, Some(STANDARD.encode(&entry.body))),
    };
    let doc = JsonEntry {
        v: JSON_VERSION,
        status: entry.status.as_u16(),
        stored_at_ns: time_to_nanos(entry.stored_at),
        initial_age_ns: duration_to_nanos(entry.initial_age),
        ttl_ns: duration_to_nanos(entry.ttl),
        swr_ns: duration_to_nanos(entry.stale_while_revalidate),
        sie_ns: duration_to_nanos(entry.stale_if_error),
        headers: (entry.headers.iter())
            .map(|(name, value)| {
                (
                    Cow::Borrowed(name.as_str()),
                    JsonBytes::encode(value.as_bytes()),
                )
            })
            .collect(),
        vary: (entry.vary.iter())
            .map(|(name, value)| {
                let value = value.as_ref().map(|v| JsonBytes::encode(v.as_bytes()));
                (Cow::Borrowed(name.as_str()), value)
            })
            .collect(),
        tags: Cow::Borrowed(&entry.tags),
        body,
        body_b64,
    };
    // Serializing this document cannot fail (string keys, no fallible `Serialize` impls). Were
    // it to, the empty value decodes as `UnknownFormat`, which a store treats as a miss.
    serde_json::to_vec(&doc).map_or_else(|_| Bytes::new(), Bytes::from)
}

fn decode_json(bytes: &[u8]) -> Result<CachedResponse, DecodeError> {
    let unknown = || DecodeError::new(DecodeErrorKind::UnknownFormat, "not a JSON entry");
    // Cheap first check, so that binary values or other keys' data are `UnknownFormat`.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(unknown());
    }
    let doc = match serde_json::from_slice::<JsonEntry<'_>>(bytes) {
        Ok(doc) => doc,
        Err(e) if e.is_eof() => return Err(DecodeError::truncated().with_source(e)),
        // Parse again only on failure, to classify it: is it a document at all, and of which
        // version? A v2 document may well not fit the v1 shape.
        Err(e) => {
            return Err(match serde_json::from_slice::<JsonProbe>(bytes) {
                Ok(JsonProbe { v }) if v != JSON_VERSION => unsupported_json(),
                Ok(_) => DecodeError::invalid("malformed JSON entry").with_source(e),
                Err(_) => unknown().with_source(e),
            });
        }
    };
    if doc.v != JSON_VERSION {
        return Err(unsupported_json());
    }

    let mut headers = header_map(doc.headers.len())?;
    for (name, value) in &doc.headers {
        append_header(
            &mut headers,
            header_name(name.as_bytes())?,
            value.header_value()?,
        )?;
    }
    let vary = (doc.vary.iter())
        .map(|(name, value)| {
            let value = value.as_ref().map(JsonBytes::header_value).transpose()?;
            Ok((header_name(name.as_bytes())?, value))
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    let body = match (doc.body, doc.body_b64) {
        (Some(text), None) => Bytes::from(text.into_owned()),
        (None, Some(b64)) => Bytes::from(base64_decode(&b64)?),
        _ => return Err(DecodeError::invalid("need exactly one of body, body_b64")),
    };

    Ok(CachedResponse {
        status: status_from_u16(doc.status)?,
        headers,
        body,
        stored_at: time_from_nanos(doc.stored_at_ns)?,
        initial_age: Duration::from_nanos(doc.initial_age_ns),
        ttl: Duration::from_nanos(doc.ttl_ns),
        stale_while_revalidate: Duration::from_nanos(doc.swr_ns),
        stale_if_error: Duration::from_nanos(doc.sie_ns),
        vary,
        tags: doc.tags.into_owned(),
    })
}

fn unsupported_json() -> DecodeError {
    DecodeError::new(
        DecodeErrorKind::UnsupportedVersion,
        "unsupported JSON version",
    )
}

impl Codec for JsonCodec {
    fn encode(&self, entry: &CachedResponse) -> Bytes {
        encode_json(entry)
    }

    fn decode(&self, bytes: &[u8]) -> Result<CachedResponse, DecodeError> {
        decode_json(bytes)
    }

    fn name(&self) -> &'static str {
        "json"
    }
}

#[cfg(test)]
mod shared_decode_tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn shared_decoding_slices_the_body_without_copying() {
        let entry = CachedResponse::new(
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from(vec![7u8; 4096]),
        );
        let encoded = BinaryCodec.encode(&entry);
        let decoded = BinaryCodec.decode_shared(&encoded).unwrap();
        assert_eq!(decoded, entry);
        let start = encoded.as_ptr() as usize;
        let body = decoded.body.as_ptr() as usize;
        assert!(
            body >= start && body < start + encoded.len(),
            "the body points into the input"
        );
        assert_eq!(
            JsonCodec.decode_shared(&JsonCodec.encode(&entry)).unwrap(),
            entry
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn entry(body: &'static [u8]) -> CachedResponse {
        let mut headers = HeaderMap::new();
        headers.append("content-type", HeaderValue::from_static("text/plain"));
        headers.append("set-cookie", HeaderValue::from_static("a=1"));
        headers.append("set-cookie", HeaderValue::from_static("b=2"));
        CachedResponse {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(body),
            stored_at: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            initial_age: Duration::from_secs(3),
            ttl: Duration::from_secs(60),
            stale_while_revalidate: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(600),
            vary: vec![
                (
                    "accept-language".parse().unwrap(),
                    Some(HeaderValue::from_static("en")),
                ),
                ("x-missing".parse().unwrap(), None),
            ],
            tags: vec!["a".to_owned()],
        }
    }

    const CODECS: [&dyn Codec; 2] = [&BinaryCodec, &JsonCodec];

    fn arb_name() -> impl Strategy<Value = HeaderName> {
        const COMMON: &[&str] = &["content-type", "set-cookie", "cache-control", "etag"];
        prop_oneof![
            prop::sample::select(COMMON).prop_map(HeaderName::from_static),
            "[a-z][a-z0-9-]{0,15}".prop_map(|name| HeaderName::try_from(name).unwrap()),
        ]
    }

    fn arb_value() -> impl Strategy<Value = HeaderValue> {
        let byte = prop_oneof![Just(b'\t'), 0x20u8..=0x7e, 0x80u8..=0xff];
        prop_oneof![
            vec(byte, 0..24).prop_map(|v| HeaderValue::from_bytes(&v).unwrap()),
            "[ -~]{0,24}".prop_map(|v| HeaderValue::from_str(&v).unwrap()),
        ]
    }

    fn arb_entry(max_body: usize) -> impl Strategy<Value = CachedResponse> {
        // Year ~2500 in nanoseconds since the epoch, well inside a u64.
        const YEAR_2500_NS: u64 = 16_725_225_600_000_000_000;
        let body = prop_oneof![
            vec(any::<u8>(), 0..max_body).prop_map(Bytes::from),
            ".{0,64}".prop_map(Bytes::from),
        ];
        (
            (100u16..=999, vec((arb_name(), arb_value()), 0..8)),
            vec((arb_name(), proptest::option::of(arb_value())), 0..4),
            vec(".{0,12}", 0..4),
            body,
            (0..=YEAR_2500_NS, any::<[u64; 4]>()),
        )
            .prop_map(|((status, header_list), vary, tags, body, (stored, d))| {
                let mut headers = HeaderMap::new();
                for (name, value) in header_list {
                    headers.append(name, value);
                }
                CachedResponse {
                    status: StatusCode::from_u16(status).unwrap(),
                    headers,
                    body,
                    stored_at: UNIX_EPOCH + Duration::from_nanos(stored),
                    initial_age: Duration::from_nanos(d[0]),
                    ttl: Duration::from_nanos(d[1]),
                    stale_while_revalidate: Duration::from_nanos(d[2]),
                    stale_if_error: Duration::from_nanos(d[3]),
                    vary,
                    tags,
                }
            })
    }

    proptest! {
        #[test]
        fn both_codecs_round_trip_any_entry_exactly(entry in arb_entry(4096)) {
            for codec in CODECS {
                let bytes = codec.encode(&entry);
                prop_assert_eq!(codec.decode(&bytes).unwrap(), entry.clone(), "{}", codec.name());
            }
            let mut len = 0;
            write_binary(&mut len, &entry);
            prop_assert_eq!(encode_binary(&entry).len(), len);
        }

        #[test]
        fn every_truncation_is_an_error_not_a_panic(entry in arb_entry(64)) {
            for codec in CODECS {
                let bytes = codec.encode(&entry);
                for end in 0..bytes.len() {
                    prop_assert!(codec.decode(&bytes[..end]).is_err(), "{} at {end}", codec.name());
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(garbage in vec(any::<u8>(), 0..512)) {
            for codec in CODECS {
                let _ = codec.decode(&garbage);
            }
            // Behind valid magic and version the parser reaches the fields.
            let _ = BinaryCodec.decode(&[b"TRC\x01".as_slice(), &garbage].concat());
        }

        #[test]
        fn corrupting_one_byte_never_panics(
            entry in arb_entry(64), index in any::<prop::sample::Index>(), byte in any::<u8>()
        ) {
            for codec in CODECS {
                let mut bytes = codec.encode(&entry).to_vec();
                let at = index.index(bytes.len());
                bytes[at] = byte;
                let _ = codec.decode(&bytes);
            }
        }

        #[test]
        fn another_version_is_unsupported(
            entry in arb_entry(64), byte in any::<u8>(), version in 2u64..
        ) {
            prop_assume!(byte != BINARY_VERSION);
            let mut binary = BinaryCodec.encode(&entry).to_vec();
            binary[3] = byte;
            let kind = BinaryCodec.decode(&binary).unwrap_err().kind();
            prop_assert_eq!(kind, DecodeErrorKind::UnsupportedVersion);

            let json = String::from_utf8(JsonCodec.encode(&entry).to_vec()).unwrap();
            let json = json.replacen(r#"{"v":1,"#, &format!(r#"{{"v":{version},"#), 1);
            let kind = JsonCodec.decode(json.as_bytes()).unwrap_err().kind();
            prop_assert_eq!(kind, DecodeErrorKind::UnsupportedVersion);
        }

        #[test]
        fn garbage_is_an_unknown_format(garbage in vec(any::<u8>(), 0..256)) {
            prop_assume!(!garbage.starts_with(MAGIC));
            prop_assume!(garbage.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{'));
            for codec in CODECS {
                let kind = codec.decode(&garbage).unwrap_err().kind();
                prop_assert_eq!(kind, DecodeErrorKind::UnknownFormat);
            }
        }
    }

    #[test]
    fn json_of_a_utf8_body_is_readable() {
        let json = JsonCodec.encode(&entry(b"hello"));
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.starts_with(r#"{"v":1,"status":200,"#), "{text}");
        assert!(text.contains(r#""body":"hello""#), "{text}");
        assert!(
            text.contains(r#"["set-cookie","a=1"],["set-cookie","b=2"]"#),
            "{text}"
        );
        assert!(text.contains(r#""vary":[["accept-language","en"],["x-missing",null]]"#));
        assert!(!text.contains("body_b64"), "{text}");
    }

    #[test]
    fn json_of_a_non_utf8_body_uses_body_b64() {
        let entry = entry(b"\xff\x00binary");
        let json = JsonCodec.encode(&entry);
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.contains(r#""body_b64":"/wBiaW5hcnk=""#), "{text}");
        assert!(!text.contains(r#""body":"#), "{text}");
        let binary = BinaryCodec.encode(&entry);
        assert_eq!(
            JsonCodec.decode(&json).unwrap(),
            BinaryCodec.decode(&binary).unwrap()
        );
    }

    #[test]
    fn json_of_a_non_utf8_header_value_uses_b64() {
        let mut entry = entry(b"");
        let value = HeaderValue::from_bytes(b"caf\xe9").unwrap();
        entry.headers.insert("x-obs", value.clone());
        entry.vary.push(("x-obs".parse().unwrap(), Some(value)));
        let json = JsonCodec.encode(&entry);
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.contains(r#"["x-obs",{"b64":"Y2Fm6Q=="}]"#), "{text}");
        assert_eq!(JsonCodec.decode(&json).unwrap(), entry);
    }

    #[test]
    fn binary_rejects_trailing_bytes() {
        let mut bytes = BinaryCodec.encode(&entry(b"hi")).to_vec();
        bytes.push(0);
        let err = BinaryCodec.decode(&bytes).unwrap_err();
        assert_eq!(err.kind(), DecodeErrorKind::Invalid);
        assert_eq!(
            err.to_string(),
            "cannot decode cached response: trailing bytes after the body"
        );
    }

    #[test]
    fn a_forged_header_count_is_truncated_without_a_huge_allocation() {
        let mut bytes = BinaryCodec.encode(&entry(b"")).to_vec();
        let headers_at = MAGIC.len() + 1 + 2 + 5 * 8;
        bytes[headers_at..headers_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        bytes.truncate(headers_at + 4);
        let kind = BinaryCodec.decode(&bytes).unwrap_err().kind();
        assert_eq!(kind, DecodeErrorKind::Truncated);
    }

    #[test]
    fn the_binary_stored_at_is_where_stores_compare_it() {
        let mut entry = CachedResponse::new(StatusCode::OK, HeaderMap::new(), Bytes::new());
        entry.stored_at = UNIX_EPOCH + Duration::from_nanos(0x0102_0304_0506_0708);
        let encoded = BinaryCodec.encode(&entry);
        assert_eq!(encoded[..4], BINARY_PREFIX);
        assert_eq!(encoded[BINARY_STORED_AT], binary_stored_at(&entry));
        assert_eq!(binary_stored_at(&entry), [1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn malformed_json_is_classified() {
        let kind = |text: &str| JsonCodec.decode(text.as_bytes()).unwrap_err().kind();
        assert_eq!(kind(r#"{"status":200}"#), DecodeErrorKind::UnknownFormat);
        assert_eq!(kind("[1]"), DecodeErrorKind::UnknownFormat);
        assert_eq!(kind(r#"{"v":7}"#), DecodeErrorKind::UnsupportedVersion);
        assert_eq!(kind(r#"{"v":1,"status":200}"#), DecodeErrorKind::Invalid);
        assert_eq!(kind(r#"{"v":1,"status":"#), DecodeErrorKind::Truncated);
        let both = String::from_utf8(JsonCodec.encode(&entry(b"x")).to_vec()).unwrap();
        let both = both.replace(r#""body":"x""#, r#""body":"x","body_b64":"eA==""#);
        assert_eq!(kind(&both), DecodeErrorKind::Invalid);
        let bad_status = String::from_utf8(JsonCodec.encode(&entry(b"x")).to_vec()).unwrap();
        assert_eq!(
            kind(&bad_status.replace("200", "1000")),
            DecodeErrorKind::Invalid
        );
    }

    #[test]
    fn times_saturate_instead_of_failing() {
        let mut entry = entry(b"");
        entry.stored_at = UNIX_EPOCH - Duration::from_secs(1);
        entry.ttl = Duration::MAX;
        for codec in CODECS {
            let decoded = codec.decode(&codec.encode(&entry)).unwrap();
            assert_eq!(decoded.stored_at, UNIX_EPOCH);
            assert_eq!(decoded.ttl, Duration::from_nanos(u64::MAX));
        }
    }

    #[test]
    fn codecs_name_themselves_and_do_not_read_each_other() {
        assert_eq!((BinaryCodec.name(), JsonCodec.name()), ("binary", "json"));
        let entry = entry(b"hi");
        let json_as_binary = BinaryCodec.decode(&JsonCodec.encode(&entry)).unwrap_err();
        assert_eq!(json_as_binary.kind(), DecodeErrorKind::UnknownFormat);
        let binary_as_json = JsonCodec.decode(&BinaryCodec.encode(&entry)).unwrap_err();
        assert_eq!(binary_as_json.kind(), DecodeErrorKind::UnknownFormat);
    }
}
