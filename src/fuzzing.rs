//! The fuzz targets' bodies (`fuzz/fuzz_targets/*.rs`), here so that the stable test suite
//! replays every corpus file through exactly the code the fuzzer ran
//! (`tests/fuzz_corpus.rs`). Each takes arbitrary bytes, must not panic, and checks what
//! must hold of its input (the asserts are the oracle: a failing one is a finding).
//!
//! Headers are read from the input as lines `name: value` (invalid ones are skipped), so
//! that the fuzzer's dictionary of header names and directives applies.

// Past 600 lines on purpose: one body per fuzz target, kept together so that the corpus
// replay and the fuzzer run the same code.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use tower_layer::Layer;
use tower_service::Service;

use crate::codec::{BinaryCodec, Codec, JsonCodec};
use crate::config::{DEFAULT_BYPASS_HEADER, WriteMode};
use crate::key::{CacheKey, DefaultKeyBuilder, KeyBuilder};
use crate::policy::cache_control::{CacheControl, MAX_DELTA_SECONDS};
use crate::policy::conditional::{not_modified, not_modified_headers};
use crate::policy::request::{Present, RequestMode, request_mode};
use crate::policy::response::{
    RequestFacts, StorageRules, TtlSources, check_storable, initial_age, origin_lifetime,
    ttl_from_sources,
};
use crate::policy::{ClientControl, RequestCookies};
use crate::{CacheLayer, CachedResponse, MemoryStore};

/// Header lines `name: value`, one a line; lines that are no valid header are skipped.
fn headers(text: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in text.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            map.append(name, value);
        }
    }
    map
}

/// The input split in two at the first `\n\n` (the second part empty without one).
fn halves(data: &[u8]) -> (&[u8], &[u8]) {
    match data.windows(2).position(|pair| pair == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[]),
    }
}

/// A codec's decoder on arbitrary bytes: an error or an entry, and an entry it decodes
/// encodes to bytes that decode to the same entry.
fn codec(codec: &dyn Codec, data: &[u8]) {
    let Ok(entry) = codec.decode(data) else {
        return;
    };
    let encoded = codec.encode(&entry);
    let again = codec.decode(&encoded);
    assert_eq!(
        again.as_ref().ok(),
        Some(&entry),
        "{} round trip",
        codec.name()
    );
    let shared = codec.decode_shared(&Bytes::copy_from_slice(data));
    assert_eq!(
        shared.ok().as_ref(),
        Some(&entry),
        "{} decode_shared",
        codec.name()
    );
}

/// [`BinaryCodec`]'s decoder.
pub fn binary_codec(data: &[u8]) {
    codec(&BinaryCodec, data);
}

/// [`JsonCodec`]'s decoder.
pub fn json_codec(data: &[u8]) {
    codec(&JsonCodec, data);
}

/// `Cache-Control`, `Pragma`, `Expires`, `Date` and `Age` as a request's and as a
/// response's headers: the request mode, storability and TTL, the response's age.
pub fn directives(data: &[u8]) {
    let map = headers(data);
    let cc = CacheControl::from_headers(&map);
    for seconds in [
        cc.max_age,
        cc.s_maxage,
        cc.stale_while_revalidate,
        cc.stale_if_error,
    ]
    .into_iter()
    .flatten()
    {
        assert!(seconds <= MAX_DELTA_SECONDS, "{seconds}");
    }
    let present = Present::of(&map, &DEFAULT_BYPASS_HEADER);
    assert_eq!(
        present,
        Present::probed(&map, &DEFAULT_BYPASS_HEADER),
        "a scan finds what probes find"
    );
    for control in [ClientControl::Allow, ClientControl::Deny] {
        let mode = request_mode(&map, present, &control, &DEFAULT_BYPASS_HEADER);
        if control == ClientControl::Deny {
            assert_eq!(mode, RequestMode::LOOKUP);
        }
    }
    let now = SystemTime::now();
    let age = initial_age(&map, now);
    let lifetime = origin_lifetime(&map, &cc, now);
    let rules = StorageRules::default();
    if check_storable(
        StatusCode::OK,
        &map,
        &cc,
        RequestFacts::default(),
        &rules,
        true,
    )
    .is_ok()
    {
        assert!(!cc.no_store && !cc.private, "{cc:?} stored");
        let sources = TtlSources {
            explicit: None,
            origin: lifetime,
            configured: Some(Duration::from_secs(60)),
        };
        if let Ok(ttl) = ttl_from_sources(sources, age) {
            assert!(!ttl.is_zero());
            if let Some(lifetime) = lifetime {
                assert!(ttl <= lifetime, "{ttl:?} > {lifetime:?}");
            }
        }
    }
}

/// A stored response's headers and a request's, split at the first blank line: a `304` only
/// for a conditional request, and its headers taken from the stored ones.
pub fn conditional(data: &[u8]) {
    let (stored, request) = halves(data);
    let (stored, request) = (headers(stored), headers(request));
    for status in [StatusCode::OK, StatusCode::NOT_FOUND] {
        if not_modified(status, &stored, &request) {
            assert!(
                request.contains_key(header::IF_NONE_MATCH)
                    || request.contains_key(header::IF_MODIFIED_SINCE),
                "a 304 for an unconditional request"
            );
            for (name, _) in &not_modified_headers(&stored) {
                assert!(stored.contains_key(name), "{name} invented");
            }
        }
    }
}

/// A request target on the first line, then header lines: the default key builder with a
/// header, a credential and a hashed header; keys are deterministic, bounded once
/// namespaced, and never hold the credential.
pub fn key(data: &[u8]) {
    let (target, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(request) = Request::get(target).body(()) else {
        return;
    };
    let (mut parts, ()) = request.into_parts();
    parts.headers = headers(rest);
    let builders = [
        DefaultKeyBuilder::new(),
        DefaultKeyBuilder::new()
            .ignore_host()
            .header(header::ACCEPT_LANGUAGE)
            .header(header::AUTHORIZATION)
            .hashed_header(HeaderName::from_static("x-api-key")),
    ];
    for builder in &builders {
        let key = builder.build_key(&parts);
        assert_eq!(key, builder.build_key(&parts), "deterministic");
        let Some(key) = key else { continue };
        // A hashed header's part of the key is its name alone (absent), or `=` and 32 hex
        // digits: never the value. (The parts are `|`-separated; nothing else holds a `|`.)
        for part in key.as_str().split('|').skip(1) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            if name == "authorization" || name == "x-api-key" {
                assert!(
                    value.is_empty() && !part.contains('=')
                        || value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{name} not hashed in {key}"
                );
            }
        }
        let namespaced = CacheKey::new(key.as_str()).namespaced("ns", None, 250);
        assert!(namespaced.as_str().len() <= 250, "{namespaced}");
    }
}

/// Calls to the origin of [`layer_request`].
#[derive(Clone)]
struct Origin {
    status: StatusCode,
    headers: HeaderMap,
    frames: Vec<Bytes>,
    fail_after_first: bool,
    calls: Arc<AtomicUsize>,
}

impl Service<Request<()>> for Origin {
    type Response = Response<FuzzBody>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<FuzzBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mut frames: VecDeque<Result<Bytes, Failure>> =
            self.frames.iter().cloned().map(Ok).collect();
        // Every call's body is its own, so that a hit shows which call it came from.
        frames.push_back(Ok(Bytes::from(format!("#{n}"))));
        if self.fail_after_first && frames.len() > 1 {
            frames.truncate(1);
            frames.push_back(Err(Failure));
        }
        let mut response = Response::new(FuzzBody { frames });
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        std::future::ready(Ok(response))
    }
}

/// A body error.
#[derive(Debug)]
struct Failure;

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the origin's body failed")
    }
}

impl std::error::Error for Failure {}

/// The origin's body: its frames, then perhaps an error.
struct FuzzBody {
    frames: VecDeque<Result<Bytes, Failure>>,
}

impl Body for FuzzBody {
    type Data = Bytes;
    type Error = Failure;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Failure>>> {
        Poll::Ready(self.frames.pop_front().map(|frame| frame.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// What a client received.
struct Received {
    status: StatusCode,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
}

async fn receive<B: Body>(response: Response<B>) -> Received {
    let (parts, body) = response.into_parts();
    let mut body = std::pin::pin!(body);
    let mut bytes = Vec::new();
    let mut failed = false;
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        match frame {
            Ok(frame) => {
                if let Ok(mut data) = frame.into_data() {
                    use bytes::Buf;
                    while data.has_remaining() {
                        let chunk = data.chunk();
                        bytes.extend_from_slice(chunk);
                        let len = chunk.len();
                        data.advance(len);
                    }
                }
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    Received {
        status: parts.status,
        headers: parts.headers,
        body: (!failed).then_some(bytes),
    }
}

/// A whole exchange through the layer, twice, over an origin whose response head and body
/// come from the input:
///
/// - byte 0: flags (inline writes; body in two frames; body fails after its first frame;
///   second request conditional; first request a HEAD; a 16-byte body cap; `keep`; cookies
///   ignored);
/// - then, split at blank lines: the request target and method on two lines, then request
///   header lines; the status (three digits) and response header lines; the body.
///
/// The layer may answer from the cache or not, but a client gets either the origin's own
/// response or a stored one that the origin sent whole: a hit is the first call's body,
/// complete, and nothing panics.
pub fn layer_request(data: &[u8]) {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let (request_part, rest) = halves(data);
    let (response_part, body) = halves(rest);
    let mut request_lines = request_part.splitn(3, |&b| b == b'\n');
    let target = request_lines.next().unwrap_or_default();
    let method = request_lines.next().unwrap_or_default();
    let request_headers = headers(request_lines.next().unwrap_or_default());
    let mut response_lines = response_part.splitn(2, |&b| b == b'\n');
    let status = response_lines
        .next()
        .and_then(|line| std::str::from_utf8(line).ok())
        .and_then(|line| line.trim().parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK);
    let response_headers = headers(response_lines.next().unwrap_or_default());
    let Ok(method) = Method::from_bytes(if method.is_empty() { b"GET" } else { method }) else {
        return;
    };
    let build = |method: Method, extra: Option<(HeaderName, HeaderValue)>| {
        let mut request = Request::builder()
            .method(method)
            .uri(target)
            .body(())
            .ok()?;
        *request.headers_mut() = request_headers.clone();
        if let Some((name, value)) = extra {
            request.headers_mut().insert(name, value);
        }
        Some(request)
    };
    let first_method = if flags & 0x10 != 0 {
        Method::HEAD
    } else {
        method.clone()
    };
    let Some(first) = build(first_method.clone(), None) else {
        return;
    };
    let conditional =
        (flags & 0x08 != 0).then(|| (header::IF_NONE_MATCH, HeaderValue::from_static("*")));
    let Some(second) = build(method.clone(), conditional) else {
        return;
    };
    let frames = if flags & 0x02 != 0 && body.len() > 1 {
        let (a, b) = body.split_at(body.len() / 2);
        vec![Bytes::copy_from_slice(a), Bytes::copy_from_slice(b)]
    } else {
        vec![Bytes::copy_from_slice(body)]
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let origin = Origin {
        status,
        headers: response_headers,
        frames,
        fail_after_first: flags & 0x04 != 0,
        calls: Arc::clone(&calls),
    };
    let mut layer = CacheLayer::new(MemoryStore::new(1 << 20))
        .write_mode(if flags & 0x01 != 0 {
            WriteMode::Inline
        } else {
            WriteMode::Background
        })
        .coalesce_timeout(Duration::from_millis(50));
    if flags & 0x20 != 0 {
        layer = layer.max_body_size(16);
    }
    if flags & 0x40 != 0 {
        layer = layer.keep(Duration::from_secs(60));
    }
    if flags & 0x80 != 0 {
        layer = layer.request_cookies(RequestCookies::Ignore);
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return;
    };
    runtime.block_on(async move {
        let mut service = layer.layer(origin);
        let one = receive(call(&mut service, first).await).await;
        // Background writes land on a spawned task.
        tokio::task::yield_now().await;
        let calls_before = calls.load(Ordering::SeqCst);
        let two = receive(call(&mut service, second).await).await;
        let x_cache = |received: &Received| {
            received
                .headers
                .get("x-cache")
                .map(|value| value.as_bytes().to_vec())
        };
        if x_cache(&two).as_deref() == Some(b"HIT") {
            assert_eq!(
                calls.load(Ordering::SeqCst),
                calls_before,
                "a hit called the origin"
            );
            let Some(body) = &two.body else {
                panic!("a stored body failed");
            };
            if two.status != StatusCode::NOT_MODIFIED && method == Method::GET {
                // The stored response is the one the first client received, whole — or, for
                // a body longer than its `Content-Length`, the declared length of it, which
                // is what an HTTP/1 server sends (it stops polling there).
                assert_eq!(first_method, Method::GET, "a HEAD stored an entry");
                // A 204 has no body (RFC 9110 §15.3.5): whatever the origin streamed after
                // its head, the entry is complete, and empty.
                if two.status == StatusCode::NO_CONTENT {
                    assert!(body.is_empty(), "a 204 with a body");
                    return;
                }
                let Some(received) = one.body.as_ref() else {
                    panic!("a body that failed was stored");
                };
                let declared = one
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
                let expected = match declared {
                    Some(declared) if declared < received.len() => &received[..declared],
                    _ => &received[..],
                };
                assert_eq!(body.as_slice(), expected, "a hit's body");
                assert_eq!(two.status, one.status);
                // As a number: `05` is a valid length of five (RFC 9110 §8.6).
                if let Some(length) = two.headers.get(header::CONTENT_LENGTH) {
                    let declared = length
                        .to_str()
                        .ok()
                        .and_then(|l| l.trim().parse::<usize>().ok());
                    assert_eq!(declared, Some(body.len()), "a hit's Content-Length");
                }
            }
        }
    });
}

fn call<S: Service<Request<()>>>(
    service: &mut S,
    request: Request<()>,
) -> impl Future<Output = S::Response> + use<S>
where
    S::Error: std::fmt::Debug,
{
    let future = service.call(request);
    async move {
        match future.await {
            Ok(response) => response,
            Err(error) => panic!("the layer failed a request: {error:?}"),
        }
    }
}

/// The seed inputs of each target, by target and file name: kept in `fuzz/corpus/`, where
/// `tests/fuzz_corpus.rs` checks that they are (and writes them with
/// `WRITE_FUZZ_SEEDS=1`).
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: &str, data: Vec<u8>| {
        seeds.push((target, format!("seed-{name}"), data));
    };
    for (name, entry) in sample_entries() {
        add("binary_codec", name, BinaryCodec.encode(&entry).to_vec());
        add("json_codec", name, JsonCodec.encode(&entry).to_vec());
    }
    add(
        "binary_codec",
        "truncated",
        BinaryCodec.encode(&sample_entries()[1].1)[..20].to_vec(),
    );
    add(
        "json_codec",
        "unknown-version",
        br#"{"v":9,"status":200}"#.to_vec(),
    );
    let directives: [(&str, &[u8]); 8] = [
        ("shared", b"cache-control: public, max-age=60, s-maxage=30\nage: 5\ndate: Sat, 01 Jan 2000 00:00:00 GMT"),
        ("request", b"cache-control: no-cache\npragma: no-cache\nx-cache-bypass: 1"),
        ("only-if-cached", b"cache-control: only-if-cached, max-age=0"),
        ("quoted", b"cache-control: max-age=\"10\", no-cache=\"set-cookie\", stale-while-revalidate=5"),
        ("huge", b"cache-control: max-age=99999999999999999999999\nage: 18446744073709551616"),
        ("duplicated", b"cache-control: max-age=10\ncache-control: max-age=0, private\nexpires: 0"),
        ("expires", b"expires: Thu, 01 Jan 2099 00:00:00 GMT\ndate: Sat, 01 Jan 2000 00:00:00 GMT"),
        ("stale", b"cache-control: max-age=1, stale-if-error=60, must-revalidate, proxy-revalidate"),
    ];
    for (name, data) in directives {
        add("directives", name, data.to_vec());
    }
    let conditional: [(&str, &[u8]); 4] = [
        ("etag", b"etag: W/\"v1\"\n\nif-none-match: \"other\", \"v1\""),
        ("star", b"etag: \"v1\"\n\nif-none-match: *"),
        ("date", b"last-modified: Sat, 01 Jan 2000 00:00:00 GMT\n\nif-modified-since: Sun, 02 Jan 2000 00:00:00 GMT"),
        ("both", b"etag: \"a\"\nlast-modified: Sat, 01 Jan 2000 00:00:00 GMT\n\nif-none-match: \"b\"\nif-modified-since: Sun, 02 Jan 2000 00:00:00 GMT"),
    ];
    for (name, data) in conditional {
        add("conditional", name, data.to_vec());
    }
    let keys: [(&str, &[u8]); 6] = [
        ("query", b"/users/42?b=2&a=1&utm_source=x&&c=%41\nhost: Example.com:8080"),
        ("credentials", b"/me\nauthorization: Bearer s3cr3t-token\nx-api-key: key-1234567\naccept-language: de, en"),
        ("escapes", b"/%7euser/%2f%zz?q=%26&q=&\nhost: [::1]:3000"),
        ("absolute", b"http://user:pw@Shop.example:80/p?x\nhost: shop.example"),
        ("two-hosts", b"/p\nhost: a.example\nhost: b.example"),
        ("asterisk", b"*\nhost: a.example"),
    ];
    for (name, data) in keys {
        add("key", name, data.to_vec());
    }
    let exchanges: [(&str, u8, &[u8]); 8] = [
        ("stored", 0x01, b"/a\nGET\nhost: x\n\n200\ncache-control: max-age=60\n\nhello"),
        ("background", 0x00, b"/a?b=1\nGET\n\n200\ncontent-type: text/plain\n\nhello"),
        ("frames", 0x03, b"/a\nGET\n\n200\ncontent-length: 10\n\n0123456789"),
        ("length-lies", 0x01, b"/a\nGET\n\n200\ncontent-length: 3\n\n0123456789"),
        ("fails", 0x07, b"/a\nGET\n\n200\n\n0123456789"),
        ("conditional", 0x49, b"/a\nGET\n\n200\netag: \"v1\"\ncache-control: no-cache\n\nbody"),
        ("vary", 0x81, b"/a\nGET\ncookie: a=1\naccept: text/html\n\n200\nvary: accept, cookie\ncache-control: public, max-age=5\n\nx"),
        ("head-large", 0x31, b"/a\nGET\n\n404\ncache-control: max-age=60\n\nthis body is longer than sixteen bytes"),
    ];
    for (name, flags, data) in exchanges {
        let mut input = vec![flags];
        input.extend_from_slice(data);
        add("layer_request", name, input);
    }
    seeds
}

fn sample_entries() -> Vec<(&'static str, CachedResponse)> {
    // Fixed times, so that the seeds are the same on every run.
    let stored_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let mut plain =
        CachedResponse::new(StatusCode::OK, HeaderMap::new(), Bytes::from_static(b"hi"));
    plain.stored_at = stored_at;
    let mut full = CachedResponse::new(
        StatusCode::NOT_FOUND,
        headers(b"content-type: text/plain\nset-cookie: a=1\nset-cookie: b=2\netag: W/\"x\""),
        Bytes::from_static(b"\xff\x00 not utf-8"),
    );
    full.stored_at = stored_at;
    full.ttl = Duration::from_secs(60);
    full.stale_if_error = Duration::from_secs(5);
    full.vary = vec![
        (
            header::ACCEPT_LANGUAGE,
            Some(HeaderValue::from_static("de")),
        ),
        (HeaderName::from_static("x-missing"), None),
    ];
    full.tags = vec!["users".to_owned(), "user:1".to_owned()];
    vec![("plain", plain), ("full", full)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_target_runs_a_stored_exchange() {
        // Inline writes, a plain GET, a 200 with a body: the second request is a hit.
        let mut input = vec![0x01];
        input.extend_from_slice(b"/a\nGET\nhost: x\n\n200\ncache-control: max-age=60\n\nhello");
        layer_request(&input);
    }

    #[test]
    fn header_lines_skip_what_is_not_a_header() {
        let map = headers(b"a: 1\nnot a header\nb:2\n: empty\nc: \xff");
        assert_eq!(map.len(), 3);
        assert_eq!(map["b"], "2");
    }

    #[test]
    fn an_entry_decodes_after_its_own_encoding() {
        let mut entry = CachedResponse::new(StatusCode::OK, HeaderMap::new(), Bytes::new());
        entry.ttl = Duration::from_secs(1);
        binary_codec(&BinaryCodec.encode(&entry));
        json_codec(&JsonCodec.encode(&entry));
    }
}
