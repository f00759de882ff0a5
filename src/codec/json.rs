//! [`JsonCodec`]: entries as readable JSON documents (the body in base64 when it is not
//! UTF-8).

use super::*;

pub(super) const JSON_VERSION: u64 = 1;

/// The JSON document, used for both directions: `Cow`s borrow from the entry when encoding
/// and own when decoding.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JsonEntry<'a> {
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
pub(super) enum JsonBytes<'a> {
    Text(Cow<'a, str>),
    Base64 { b64: String },
}

impl<'a> JsonBytes<'a> {
    pub(super) fn encode(bytes: &'a [u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::Text(Cow::Borrowed(text)),
            Err(_) => Self::Base64 {
                b64: STANDARD.encode(bytes),
            },
        }
    }

    pub(super) fn header_value(&self) -> Result<HeaderValue, DecodeError> {
        match self {
            Self::Text(text) => header_value(text.as_bytes()),
            Self::Base64 { b64 } => header_value(&base64_decode(b64)?),
        }
    }
}

/// Just the version, to tell "another version" and "not ours" from a malformed v1 document.
#[derive(Deserialize)]
pub(super) struct JsonProbe {
    v: u64,
}

pub(super) fn base64_decode(text: &str) -> Result<Vec<u8>, DecodeError> {
    STANDARD
        .decode(text)
        .map_err(|e| DecodeError::invalid("bad base64").with_source(e))
}

pub(super) fn encode_json(entry: &CachedResponse) -> Bytes {
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

pub(super) fn decode_json(bytes: &[u8]) -> Result<CachedResponse, DecodeError> {
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

pub(super) fn unsupported_json() -> DecodeError {
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
