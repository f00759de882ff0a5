//! Bad input, from clients and from origins: malformed, duplicated, numerically huge or
//! non-UTF-8 header values, broken percent-encoding, keys past the length limit, `Vary` over
//! hundreds of headers. Each has a defined outcome — passed to the service, or not stored —
//! never a panic, never a stored entry that differs from what the origin sent.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_response_cache::{CacheBody, CacheLayer, MemoryStore};

use crate::harness::{Calls, entry_count, layer};

/// A service answering every request with `status`, `headers` and a body that names the
/// call (`call #n`), behind `cache`.
fn origin(
    cache: CacheLayer,
    calls: &Calls,
    headers: HeaderMap,
) -> impl Service<Request<()>, Response = Response<CacheBody<Full<Bytes>>>, Error = Infallible> + Clone
{
    let calls = calls.clone();
    let headers = Arc::new(headers);
    ServiceBuilder::new()
        .layer(cache)
        .service_fn(move |_: Request<()>| {
            let n = calls.hit();
            let headers = Arc::clone(&headers);
            async move {
                let mut response = Response::new(Full::new(Bytes::from(format!("call #{n}"))));
                *response.headers_mut() = (*headers).clone();
                Ok::<_, Infallible>(response)
            }
        })
}

struct Answer {
    status: StatusCode,
    x_cache: String,
    body: Bytes,
}

async fn answer<S>(service: &S, request: Request<()>) -> Answer
where
    S: Service<Request<()>, Response = Response<CacheBody<Full<Bytes>>>, Error = Infallible>
        + Clone,
{
    let response = service.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let x_cache = response
        .headers()
        .get("x-cache")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        x_cache,
        body,
    }
}

fn request(uri: &str, headers: &[(&str, &[u8])]) -> Request<()> {
    let mut request = Request::get(uri).body(()).unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    request
}

/// Sends `request` twice: the first reaches the origin, the second is answered from the
/// cache (a 200 with the first call's body, a 304, or a 416 for a range past the body) or
/// by the origin (the second call's).
async fn twice(headers: &[(&str, &[u8])], label: &str) {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let mut stored = HeaderMap::new();
    stored.insert("etag", HeaderValue::from_static("\"v1\""));
    stored.insert(
        "last-modified",
        HeaderValue::from_static("Sat, 01 Jan 2000 00:00:00 GMT"),
    );
    let service = origin(cache, &calls, stored);
    let first = answer(&service, request("/r", headers)).await;
    assert_eq!(first.status, StatusCode::OK, "{label}");
    assert_eq!(first.body, "call #1", "{label}");
    let second = answer(&service, request("/r", headers)).await;
    match (second.status, second.x_cache.as_str()) {
        (StatusCode::OK, "HIT") => assert_eq!(second.body, "call #1", "{label}"),
        (StatusCode::NOT_MODIFIED, "HIT") => assert!(second.body.is_empty(), "{label}"),
        // A range past the stored body (RFC 9110 §15.5.17).
        (StatusCode::RANGE_NOT_SATISFIABLE, "HIT") => assert!(second.body.is_empty(), "{label}"),
        (StatusCode::OK, _) => assert_eq!(second.body, "call #2", "{label}"),
        other => panic!("{label}: {other:?}"),
    }
}

#[tokio::test]
async fn malformed_request_directives_and_preconditions_have_a_defined_outcome() {
    let huge_list = "a, ".repeat(20_000);
    let etags = (0..10_000)
        .map(|i| format!("\"e{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("cache-control", b"max-age=99999999999999999999999".to_vec()),
        ("cache-control", b"max-age=-1".to_vec()),
        ("cache-control", b"max-age=abc, max-age=0".to_vec()),
        ("cache-control", b"no-cache=\"".to_vec()),
        ("cache-control", b",,,=,=,".to_vec()),
        ("cache-control", b"\xff\xfe max-age=\xff".to_vec()),
        ("cache-control", huge_list.clone().into_bytes()),
        ("pragma", b"no-cache, no-cache, \xff".to_vec()),
        ("if-none-match", b"\"unterminated".to_vec()),
        ("if-none-match", b"W/".to_vec()),
        ("if-none-match", b"*, \"v1\", \xff".to_vec()),
        ("if-none-match", etags.clone().into_bytes()),
        ("if-modified-since", b"not a date".to_vec()),
        (
            "if-modified-since",
            b"Sat, 99 Jan 2000 99:99:99 GMT".to_vec(),
        ),
        (
            "if-modified-since",
            b"Fri, 31 Dec 9999 23:59:59 GMT".to_vec(),
        ),
        ("if-modified-since", b"\xff\xff".to_vec()),
        ("range", b"bytes=99999999999999999999999-".to_vec()),
        ("range", b"bytes=-,-,-".to_vec()),
        ("range", b"lines=1-2".to_vec()),
        ("x-cache-bypass", b"\xff".to_vec()),
        ("accept-language", huge_list.into_bytes()),
    ];
    for (name, value) in &cases {
        twice(
            &[(name, value)],
            &format!("{name}: {:.40}", String::from_utf8_lossy(value)),
        )
        .await;
        // Duplicated, as two field lines.
        twice(&[(name, value), (name, value)], &format!("{name} twice")).await;
    }
    // A thousand distinct request headers.
    let many: Vec<(String, Vec<u8>)> = (0..1000)
        .map(|i| (format!("x-h-{i}"), format!("v{i}").into_bytes()))
        .collect();
    let refs: Vec<(&str, &[u8])> = many
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_slice()))
        .collect();
    twice(&refs, "a thousand headers").await;
}

#[tokio::test]
async fn broken_percent_encoding_and_non_utf8_targets_are_keyed_apart() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let service = origin(cache, &calls, HeaderMap::new());
    let targets = [
        "/a%zz%",
        "/a%",
        "/%C3%28",
        "/caf%C3%A9",
        "/caf%c3%a9?q=%ff%fe",
        "/%00%0a?%00=%0d",
        "/a?%zz=%",
    ];
    for (i, target) in targets.iter().enumerate() {
        let uri: Uri = target.parse().unwrap();
        let first = answer(&service, Request::get(uri.clone()).body(()).unwrap()).await;
        assert_eq!(first.body, format!("call #{}", i + 1), "{target}");
        let again = answer(&service, Request::get(uri).body(()).unwrap()).await;
        assert_eq!(
            (again.x_cache.as_str(), again.body.clone()),
            ("HIT", Bytes::from(format!("call #{}", i + 1))),
            "{target}"
        );
    }
    // `%c3%a9` and `%C3%A9` are one target (RFC 3986 §6.2.2.1); the others each their own.
    assert_eq!(calls.get(), targets.len());
    assert_eq!(entry_count(&store).await, targets.len() as u64);
}

#[tokio::test]
async fn keys_past_the_length_limit_are_hashed_and_still_served() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let service = origin(cache, &calls, HeaderMap::new());
    // Near the longest target the `http` crate parses (64 KiB).
    let long = format!("/{}?q={}", "p".repeat(50_000), "v".repeat(10_000));
    let other = format!("/{}?q={}w", "p".repeat(50_000), "v".repeat(10_000));
    for uri in [&long, &long, &other] {
        answer(&service, Request::get(uri.as_str()).body(()).unwrap()).await;
    }
    assert_eq!(calls.get(), 2, "the same long target hits, another misses");
    store.run_pending_tasks();
    for key in store.keys() {
        assert!(key.len() <= 250, "{} bytes", key.len());
    }
}

/// Header fields as name and raw value.
type Fields<'a> = &'a [(&'a str, &'a [u8])];

/// The origin answers with `headers`; two requests go through.
async fn origin_sends(headers: Fields<'_>) -> (Answer, Answer, MemoryStore) {
    let calls = Calls::default();
    let (cache, store) = layer();
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    let service = origin(cache, &calls, map);
    let first = answer(&service, request("/r", &[])).await;
    let second = answer(&service, request("/r", &[])).await;
    (first, second, store)
}

#[tokio::test]
async fn malformed_response_freshness_has_a_defined_outcome() {
    // (headers, stored?) — stored means a hit with the first call's body.
    let cases: [(Fields<'_>, bool); 13] = [
        // Saturates at 2^31 s (RFC 9111 §1.2.2).
        (
            &[("cache-control", b"max-age=99999999999999999999999")],
            true,
        ),
        (
            &[
                ("cache-control", b"max-age=60"),
                ("cache-control", b"no-store"),
            ],
            false,
        ),
        (&[("cache-control", b"max-age=\xff")], false),
        (&[("cache-control", b"s-maxage=60, private")], false),
        // An invalid `Expires` means already expired (RFC 9111 §5.3).
        (&[("expires", b"not a date")], false),
        (&[("expires", b"\xff")], false),
        (
            &[
                ("expires", b"Thu, 01 Jan 2099 00:00:00 GMT"),
                ("date", b"garbage"),
            ],
            true,
        ),
        (&[("date", b"Fri, 31 Dec 9999 23:59:59 GMT")], true),
        // An `Age` past any freshness: already stale.
        (
            &[
                ("cache-control", b"max-age=60"),
                ("age", b"99999999999999999999999"),
            ],
            false,
        ),
        (&[("cache-control", b"max-age=60"), ("age", b"-5")], true),
        (
            &[("etag", b"\"unterminated"), ("last-modified", b"\xff")],
            true,
        ),
        (&[("vary", b"a b, \xff, , ,")], true),
        (&[("content-length", b"7"), ("content-length", b"8")], false),
    ];
    for (headers, expected) in cases {
        let (first, second, store) = origin_sends(headers).await;
        assert_eq!(first.body, "call #1", "{headers:?}");
        assert_eq!(entry_count(&store).await > 0, expected, "{headers:?}");
        let hit = second.x_cache == "HIT";
        assert_eq!(hit, expected, "{headers:?}");
        let body = if hit { "call #1" } else { "call #2" };
        assert_eq!(second.body, body, "{headers:?}");
    }
}

#[tokio::test]
async fn vary_over_hundreds_of_headers_is_stored_and_selected_exactly() {
    let names: Vec<String> = (0..300).map(|i| format!("x-v-{i}")).collect();
    let vary = names.join(", ");
    let calls = Calls::default();
    let (cache, store) = layer();
    let mut headers = HeaderMap::new();
    headers.insert("vary", HeaderValue::from_str(&vary).unwrap());
    let service = origin(cache, &calls, headers);
    let with = |changed: Option<usize>| {
        let mut request = Request::get("/r").body(()).unwrap();
        for (i, name) in names.iter().enumerate() {
            let value = if Some(i) == changed { "other" } else { "same" };
            request.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        request
    };
    answer(&service, with(None)).await;
    assert_eq!(answer(&service, with(None)).await.x_cache, "HIT");
    // One of the 300 values differs: another variant.
    let last = answer(&service, with(Some(299))).await;
    assert_eq!(
        (last.x_cache.as_str(), last.body.clone()),
        ("MISS", Bytes::from("call #2"))
    );
    // Variants stay bounded however many headers vary (`max_variants`, 8).
    for i in 0..50 {
        answer(&service, with(Some(i))).await;
    }
    assert!(entry_count(&store).await <= 8);
}
