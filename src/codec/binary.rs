//! [`BinaryCodec`]: the versioned binary format, written in one pass (its size counted
//! first) and read without copying the body.

use super::*;

pub(super) const MAGIC: &[u8; 3] = b"TRC";
pub(super) const BINARY_VERSION: u8 = 1;

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
pub(super) const MIN_HEADER_LEN: usize = 2 + 4;
/// The fewest bytes a vary entry takes: an empty name and an absent value.
pub(super) const MIN_VARY_LEN: usize = 2 + 1;
/// The fewest bytes a tag takes: an empty string.
pub(super) const MIN_TAG_LEN: usize = 4;

/// Where [`write_binary`] puts bytes. It runs twice: into a counter to learn the exact size,
/// then into a `BytesMut` of that size, so encoding allocates once and the size computation
/// cannot drift from the writer.
pub(super) trait Sink {
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
pub(super) fn put_u16_bytes(out: &mut impl Sink, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.put(&len.to_be_bytes());
    out.put(bytes.get(..usize::from(len)).unwrap_or(bytes));
}

/// Writes `bytes` behind a `u32` length. Header values and tags of 4 GiB cannot come from a
/// real response; cutting only keeps `encode` total and the output consistent.
pub(super) fn put_u32_bytes(out: &mut impl Sink, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.put(&len.to_be_bytes());
    out.put(
        bytes
            .get(..usize::try_from(len).unwrap_or(usize::MAX))
            .unwrap_or(bytes),
    );
}

/// Writes a collection's `u32` count and returns how many items to write after it.
pub(super) fn put_count(out: &mut impl Sink, len: usize) -> usize {
    let count = u32::try_from(len).unwrap_or(u32::MAX);
    out.put(&count.to_be_bytes());
    usize::try_from(count).unwrap_or(usize::MAX)
}

pub(super) fn write_binary(out: &mut impl Sink, entry: &CachedResponse) {
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

pub(super) fn encode_binary(entry: &CachedResponse) -> Bytes {
    let mut len = 0;
    write_binary(&mut len, entry);
    let mut buf = BytesMut::with_capacity(len);
    write_binary(&mut buf, entry);
    buf.freeze()
}

/// A bounds-checked big-endian cursor over untrusted input: every read either succeeds or
/// returns `Truncated`, never indexes out of range.
#[derive(Debug)]
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self
            .rest
            .split_at_checked(len)
            .ok_or_else(DecodeError::truncated)?;
        self.rest = tail;
        Ok(head)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(DecodeError::truncated)?;
        self.rest = tail;
        Ok(*head)
    }

    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.array().map(u8::from_be_bytes)
    }

    pub(super) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }

    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    pub(super) fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_be_bytes)
    }

    pub(super) fn u16_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    pub(super) fn u32_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()?;
        // A length that does not fit in `usize` cannot fit in the input either.
        self.take(usize::try_from(len).map_err(|_| DecodeError::truncated())?)
    }

    /// A count, and how many items to reserve room for: no more than the remaining bytes
    /// could hold, so a forged count cannot make us allocate more than the input's size.
    pub(super) fn count(&mut self, min_item_len: usize) -> Result<(usize, usize), DecodeError> {
        let count = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
        Ok((count, count.min(self.rest.len() / min_item_len)))
    }
}

pub(super) fn decode_binary(bytes: &[u8]) -> Result<CachedResponse, DecodeError> {
    decode_binary_with(bytes, Bytes::copy_from_slice)
}

/// Decodes, making the body with `body` from its slice of the input (a copy, or a shared
/// slice of the caller's `Bytes`).
pub(super) fn decode_binary_with(
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
