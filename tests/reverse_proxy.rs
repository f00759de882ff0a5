//! `examples/reverse_proxy.rs` against a real origin: both listen on 127.0.0.1, and a real
//! HTTP/1 client talks to the proxy. Each test cites the rule it checks (RFC 9110 for the
//! proxying, RFC 9111 for the caching).

#![allow(clippy::unwrap_used)]

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/reverse_proxy.rs"]
mod reverse_proxy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use reverse_proxy::{Settings, Upstream};
use tokio::net::TcpListener;

/// Requests the origin received, by path.
#[derive(Clone, Default)]
struct Hits(Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>);

impl Hits {
    fn count(&self, path: &str) -> usize {
        self.0.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn next(&self, path: &str) -> usize {
        let mut hits = self.0.lock().unwrap();
        let n = hits.entry(path.to_owned()).or_default();
        *n += 1;
        *n
    }
}

async fn page(State(hits): State<Hits>, request: Request) -> Response {
    let n = hits.next(request.uri().path());
    let mut response = (
        [("cache-control", "max-age=60"), ("x-multi", "a")],
        format!("page {} #{n}", request.uri()),
    )
        .into_response();
    response
        .headers_mut()
        .append("x-multi", "b".parse().unwrap());
    response
}

/// Echoes what arrived: method, selected headers, body.
async fn echo(State(hits): State<Hits>, request: Request) -> Response {
    hits.next("/echo");
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let header = |name: &str| {
        parts
            .headers
            .get_all(name)
            .iter()
            .map(|value| value.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let text = format!(
        "method={}\nbody={}\nhost={}\nx-custom={}\nx-hop={}\nvia={}\nx-forwarded-for={}\nx-forwarded-host={}\nquery={}\n",
        parts.method,
        String::from_utf8_lossy(&body),
        header("host"),
        header("x-custom"),
        header("x-hop"),
        header("via"),
        header("x-forwarded-for"),
        header("x-forwarded-host"),
        parts.uri.query().unwrap_or(""),
    );
    let mut response = (
        StatusCode::CREATED,
        [
            ("x-multi", "one"),
            ("connection", "x-secret"),
            ("x-secret", "hop-by-hop"),
        ],
        text,
    )
        .into_response();
    response
        .headers_mut()
        .append("x-multi", "two".parse().unwrap());
    response
}

/// A page rendered from every request header that frameworks read to learn their public
/// host, scheme, URL or method — as an origin behind a proxy does — and marked shared:
/// whatever of these reaches it unkeyed poisons the cache.
async fn rendered(State(hits): State<Hits>, request: Request) -> Response {
    let n = hits.next("/render");
    let headers = request.headers();
    let header = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .map(|value| value.to_str().unwrap_or("?").to_owned())
            .collect::<Vec<_>>()
            .join(",")
    };
    let or = |value: String, default: &str| {
        if value.is_empty() {
            default.to_owned()
        } else {
            value
        }
    };
    let url = or(
        or(header("x-original-url"), &header("x-rewrite-url")),
        request.uri().path(),
    );
    let method = or(
        or(
            header("x-http-method-override"),
            &or(header("x-http-method"), &header("x-method-override")),
        ),
        request.method().as_str(),
    );
    let text = format!(
        "<a href=\"{}://{}{url}\">{method}</a> forwarded=[{}] server=[{}{}{}{}{}] #{n}",
        or(header("x-forwarded-proto"), "http"),
        or(header("x-forwarded-host"), "origin"),
        header("forwarded"),
        header("x-forwarded-scheme"),
        header("x-forwarded-port"),
        header("x-forwarded-prefix"),
        header("x-forwarded-server"),
        header("x-original-host") + &header("x-host"),
    );
    ([("cache-control", "public, max-age=60")], text).into_response()
}

/// `no-cache` with an `ETag`, honouring `If-None-Match`.
async fn validated(State(hits): State<Hits>, headers: HeaderMap) -> Response {
    let n = hits.next("/validated");
    if headers
        .get("if-none-match")
        .is_some_and(|value| value == "\"r1\"")
    {
        return (
            StatusCode::NOT_MODIFIED,
            [("etag", "\"r1\""), ("cache-control", "no-cache")],
        )
            .into_response();
    }
    (
        [("etag", "\"r1\""), ("cache-control", "no-cache")],
        format!("validated #{n}"),
    )
        .into_response()
}

fn origin(hits: &Hits) -> Router {
    let counted = |path: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let hits = hits.clone();
        get(move || {
            let hits = hits.clone();
            async move {
                let n = hits.next(path);
                let mut response = format!("{path} #{n}").into_response();
                for (name, value) in headers {
                    response.headers_mut().append(*name, value.parse().unwrap());
                }
                response
            }
        })
    };
    Router::new()
        .route("/page", get(page))
        .route(
            "/items/{id}",
            get(page)
                .delete(|| async { "deleted" })
                .put(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "failed") }),
        )
        .route("/echo", axum::routing::any(echo))
        .route("/render", get(rendered))
        .route("/validated", get(validated))
        .route("/plain", counted("/plain", &[]))
        .route(
            "/aged",
            counted("/aged", &[("cache-control", "max-age=60"), ("age", "50, 5")]),
        )
        .route(
            "/understood",
            counted(
                "/understood",
                &[("cache-control", "must-understand, no-store, max-age=60")],
            ),
        )
        .route(
            "/described",
            get(|State(hits): State<Hits>| async move {
                let n = hits.next("/described");
                (
                    [
                        ("cache-control", "max-age=60".to_owned()),
                        ("etag", "\"v1\"".to_owned()),
                        ("x-n", n.to_string()),
                    ],
                    "the body of v1",
                )
            }),
        )
        .route(
            "/negotiated",
            counted(
                "/negotiated",
                &[("cache-control", "max-age=60"), ("vary", "Accept-Encoding")],
            ),
        )
        .route(
            "/cdn",
            counted(
                "/cdn",
                &[
                    ("cache-control", "no-store"),
                    ("cdn-cache-control", "max-age=600"),
                ],
            ),
        )
        .route(
            "/qualified",
            counted(
                "/qualified",
                &[
                    (
                        "cache-control",
                        r#"max-age=60, no-cache="set-cookie", private="x-user""#,
                    ),
                    ("set-cookie", "id=1"),
                    ("x-user", "alice"),
                ],
            ),
        )
        .route(
            "/modified",
            counted(
                "/modified",
                &[("last-modified", "Sat, 01 Jan 2000 00:00:00 GMT")],
            ),
        )
        .route(
            "/status/{code}",
            get(
                |State(hits): State<Hits>,
                 axum::extract::Path(code): axum::extract::Path<u16>| async move {
                    let n = hits.next(&format!("/status/{code}"));
                    (
                        StatusCode::from_u16(code).unwrap(),
                        [("cache-control", "max-age=60"), ("location", "/elsewhere")],
                        format!("{code} #{n}"),
                    )
                },
            ),
        )
        .route(
            "/dated",
            get(|State(hits): State<Hits>| async move {
                let n = hits.next("/dated");
                let now = std::time::SystemTime::now();
                // RFC 850 `Expires` and asctime `Date`, both obsolete, both valid.
                let rfc850 = |time| {
                    let imf = httpdate::fmt_http_date(time);
                    let parts: Vec<&str> = imf.split_ascii_whitespace().collect();
                    let weekday = [
                        "Monday",
                        "Tuesday",
                        "Wednesday",
                        "Thursday",
                        "Friday",
                        "Saturday",
                        "Sunday",
                    ]
                    .into_iter()
                    .find(|day| day.starts_with(&parts[0][..3]))
                    .unwrap();
                    format!(
                        "{weekday}, {}-{}-{} {} GMT",
                        parts[1],
                        parts[2],
                        &parts[3][2..],
                        parts[4]
                    )
                };
                (
                    [
                        ("expires", rfc850(now + Duration::from_secs(60))),
                        ("date", rfc850(now).to_ascii_uppercase()),
                    ],
                    format!("dated #{n}"),
                )
            }),
        )
        .route(
            "/private",
            counted("/private", &[("cache-control", "private, max-age=60")]),
        )
        .route(
            "/cookie",
            counted(
                "/cookie",
                &[("cache-control", "max-age=60"), ("set-cookie", "id=1")],
            ),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "slow"
            }),
        )
        .route(
            "/cut",
            get(|State(hits): State<Hits>| async move {
                hits.next("/cut");
                // Half the declared body, a pause (the head and the half reach the proxy),
                // then the connection goes.
                let chunks = futures_util::stream::unfold(0, |step| async move {
                    match step {
                        0 => Some((Ok(Bytes::from_static(b"half")), 1)),
                        1 => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            Some((Err(std::io::Error::other("origin crashed")), 2))
                        }
                        _ => None,
                    }
                });
                (
                    [("cache-control", "max-age=60"), ("content-length", "8")],
                    Body::from_stream(chunks),
                )
            }),
        )
        .with_state(hits.clone())
}

async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn settings(upstream: &str) -> Settings {
    Settings {
        upstream: Upstream::parse(upstream).unwrap(),
        cache_bytes: 16 << 20,
        timeout: Duration::from_secs(1),
        keep: Duration::from_secs(60),
        stats_path: Some("/__stats".to_owned()),
        heuristic: Some(tower_response_cache::policy::HeuristicFreshness::new()),
        stale_if_error: Duration::from_secs(300),
        public_host: None,
    }
}

/// An origin and the proxy in front of it; returns the proxy's address.
async fn setup(hits: &Hits) -> SocketAddr {
    let (origin_listener, origin_addr) = listen().await;
    let app = origin(hits);
    tokio::spawn(async move { axum::serve(origin_listener, app).await });
    proxy_to(&format!("http://{origin_addr}")).await
}

async fn proxy_to(upstream: &str) -> SocketAddr {
    proxy_with(settings(upstream)).await
}

async fn proxy_with(settings: Settings) -> SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(
        async move { reverse_proxy::serve(listener, &settings, std::future::pending()).await },
    );
    addr
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Result<Bytes, String>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .map(|value| value.to_str().unwrap())
            .collect()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(self.body.as_ref().unwrap()).into_owned()
    }
}

async fn send(
    proxy: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Reply {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{proxy}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from_static(body.as_bytes())));
    let response = client.request(request.unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|error| error.to_string());
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

async fn get_path(proxy: SocketAddr, path: &str) -> Reply {
    send(proxy, Method::GET, path, &[], "").await
}

#[tokio::test]
async fn cacheable_responses_are_served_from_the_cache_unchanged() {
    let hits = Hits::default();
    let proxy = setup(&hits).await;
    let first = get_path(proxy, "/page?x=1").await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let second = get_path(proxy, "/page?x=1").await;
    assert_eq!(second.header("x-cache"), Some("HIT"));
    // RFC 9111 §3.1 / §4: the stored response replayed, multi-valued fields in order.
    for reply in [&first, &second] {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "page /page?x=1 #1");
        assert_eq!(reply.all("x-multi"), ["a", "b"]);
        assert_eq!(reply.header("cache-control"), Some("max-age=60"));
    }
    assert!(second.header("age").is_some(), "RFC 9111 §5.1");
    assert_eq!(hits.count("/page"), 1);
    assert_eq!(
        get_path(proxy, "/page?x=2").await.text(),
        "page /page?x=2 #2"
    );
}

#[tokio::test]
async fn every_method_and_body_and_end_to_end_header_is_forwarded() {
    let hits = Hits::default();
    let proxy = setup(&hits).await;
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let reply = send(
            proxy,
            method.clone(),
            "/echo?q=1",
            &[
                ("x-custom", "yes"),
                ("connection", "x-hop"),
                ("x-hop", "must not pass"),
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-for", "198.51.100.7"),
            ],
            "the request body",
        )
        .await;
        // RFC 9110 §15.3.2: the origin's status, headers and body, unchanged.
        assert_eq!(reply.status, StatusCode::CREATED, "{method}");
        assert_eq!(reply.all("x-multi"), ["one", "two"]);
        // RFC 9110 §7.6.1: hop-by-hop fields go no further, in either direction.
        assert_eq!(reply.header("x-secret"), None);
        let text = reply.text();
        for line in [
            format!("method={method}"),
            "body=the request body".to_owned(),
            "x-custom=yes".to_owned(),
            "x-hop=".to_owned(),
            "query=q=1".to_owned(),
            // RFC 9110 §7.6.3.
            "via=1.1 tower-response-cache".to_owned(),
            "x-forwarded-for=203.0.113.9, 198.51.100.7, 127.0.0.1".to_owned(),
            format!("x-forwarded-host={proxy}"),
        ] {
            assert!(text.lines().any(|seen| seen == line), "{line:?} in\n{text}");
        }
        let host = format!("host={proxy}");
        assert!(
            !text.lines().any(|seen| seen == host),
            "origin's own Host:\n{text}"
        );
    }
    // GET and HEAD too.
    let reply = send(proxy, Method::GET, "/echo", &[], "").await;
    assert!(reply.text().starts_with("method=GET"));
    let head = send(proxy, Method::HEAD, "/echo", &[], "").await;
    assert_eq!(
        (head.status, head.text().as_str()),
        (StatusCode::CREATED, "")
    );
}

/// `GET /render` with `Host: host`.
async fn render_for(proxy: SocketAddr, host: &str) -> Reply {
    send(proxy, Method::GET, "/render", &[("host", host)], "").await
}

/// What a client sees of `/render?case=…` before anyone poisons it: the host it asked for.
fn clean_render(host: &str, n: usize) -> String {
    format!("<a href=\"http://{host}/render\">GET</a> forwarded=[] server=[] #{n}")
}

#[tokio::test]
async fn a_client_host_is_keyed_so_it_cannot_poison_another_hosts_page() {
    // "Practical Web Cache Poisoning": the origin renders links from X-Forwarded-Host,
    // which the proxy sets from the client's Host.
    let hits = Hits::default();
    let proxy = setup(&hits).await;
    let evil = render_for(proxy, "evil.example").await;
    assert_eq!(evil.text(), clean_render("evil.example", 1));
    let real = render_for(proxy, "www.example.com").await;
    assert_eq!(
        (real.header("x-cache"), real.text()),
        (Some("MISS"), clean_render("www.example.com", 2)),
        "another host's entry is not this one's"
    );
    let again = render_for(proxy, "WWW.example.com").await;
    assert_eq!(
        (again.header("x-cache"), again.text()),
        (Some("HIT"), clean_render("www.example.com", 2)),
        "hosts compare case-insensitively"
    );
}

#[tokio::test]
async fn no_client_header_outside_the_key_reaches_the_origin_or_the_cache() {
    let hits = Hits::default();
    let proxy = setup(&hits).await;
    let probes = [
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "javascript"),
        ("x-forwarded-scheme", "evil"),
        ("x-forwarded-port", "6666"),
        ("x-forwarded-prefix", "/evil"),
        ("x-forwarded-server", "evil.example"),
        ("forwarded", "host=evil.example;proto=https"),
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("x-original-host", "evil.example"),
        ("x-host", "evil.example"),
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "DELETE"),
        ("x-method-override", "DELETE"),
    ];
    let host = "www.example.com";
    for (i, (name, value)) in probes.into_iter().enumerate() {
        let path = format!("/render?case={i}");
        let clean = format!("<a href=\"http://{host}/render\">GET</a> forwarded=[] server=[] #");
        let attack = send(
            proxy,
            Method::GET,
            &path,
            &[("host", host), (name, value)],
            "",
        )
        .await;
        assert!(
            attack.text().starts_with(&clean),
            "{name} reached the origin: {}",
            attack.text()
        );
        let victim = send(proxy, Method::GET, &path, &[("host", host)], "").await;
        assert_eq!(
            (victim.header("x-cache"), victim.text()),
            (Some("HIT"), attack.text()),
            "{name}: the victim gets the page as the origin renders it for the real host"
        );
    }
}

#[tokio::test]
async fn a_public_host_is_what_the_origin_sees_and_the_key_leaves_the_host_out() {
    let hits = Hits::default();
    let (origin_listener, origin_addr) = listen().await;
    let app = origin(&hits);
    tokio::spawn(async move { axum::serve(origin_listener, app).await });
    let proxy = proxy_with(Settings {
        public_host: Some(http::HeaderValue::from_static("www.example.com")),
        ..settings(&format!("http://{origin_addr}"))
    })
    .await;
    let evil = render_for(proxy, "evil.example").await;
    assert_eq!(evil.text(), clean_render("www.example.com", 1));
    let other = render_for(proxy, "other.example").await;
    assert_eq!(
        (other.header("x-cache"), other.text()),
        (Some("HIT"), clean_render("www.example.com", 1)),
        "nothing of the client's Host reaches the origin: one entry for all"
    );
}

#[tokio::test]
async fn only_what_the_origin_allows_is_stored() {
    let hits = Hits::default();
    let proxy = setup(&hits).await;
    // No freshness from the origin and no default TTL: not stored (RFC 9111 §4.2: no
    // heuristic freshness).
    for path in ["/plain", "/private", "/cookie"] {
        let first = get_path(proxy, path).await;
        let second = get_path(proxy, path).await;
        assert_eq!(second.header("x-cache"), Some("UNCACHEABLE"), "{path}");
        assert_eq!(second.text(), format!("{path} #2"));
        assert_eq!(first.status, StatusCode::OK);
    }
    assert_eq!(
        get_path(proxy, "/cookie").await.header("set-cookie"),
        Some("id=1"),
        "the client still gets its cookie"
    );
    // An authorized request is not answered from, nor stored into, the shared cache
    // (RFC 9111 §3.5).
    let authorized = send(
        proxy,
        Method::GET,
        "/items/9",
        &[("authorization", "Bearer a")],
        "",
    )
    .await;
    assert_eq!(authorized.header("x-cache"), Some("UNCACHEABLE"));
    assert_eq!(
        get_path(proxy, "/items/9").await.header("x-cache"),
        Some("MISS")
    );
}

#[tokio::test]
async fn no_cache_responses_are_revalidated_through_the_proxy() {
    let hits = Hits::default();
    let proxy = setup(&hits).await;
    assert_eq!(
        get_path(proxy, "/validated").await.header("x-cache"),
        Some("MISS")
    );
    // RFC 9111 §4.3: the origin gets `If-None-Match` and answers 304; the body comes from
    // the cache.
    let revalidated = get_path(proxy, "/validated").await;
    assert_eq!(revalidated.header("x-cache"), Some("REVALIDATED"));
    assert_eq!(
        (revalidated.status, revalidated.text().as_str()),
        (StatusCode::OK, "validated #1")
    );
    let conditional = send(
        proxy,
        Method::GET,
        "/validated",
        &[("if-none-match", "\"r1\"")],
        "",
    )
    .await;
    assert_eq!(conditional.status, StatusCode::NOT_MODIFIED);
    assert_eq!(hits.count("/validated"), 3, "one full response, two 304s");
}

#[tokio::test]
async fn unsafe_methods_invalidate_through_the_proxy() {
    let hits = Hits::default();
    let proxy = setup(&hits).await;
    get_path(proxy, "/items/1").await;
    assert_eq!(
        get_path(proxy, "/items/1").await.header("x-cache"),
        Some("HIT")
    );
    // RFC 9111 §4.4: a failed unsafe request leaves the entry, a successful one removes it.
    let failed = send(proxy, Method::PUT, "/items/1", &[], "x").await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        get_path(proxy, "/items/1").await.header("x-cache"),
        Some("HIT")
    );
    let deleted = send(proxy, Method::DELETE, "/items/1", &[], "").await;
    assert_eq!(deleted.text(), "deleted");
    assert_eq!(
        get_path(proxy, "/items/1").await.header("x-cache"),
        Some("MISS")
    );
}

#[tokio::test]
async fn an_unreachable_origin_is_a_502() {
    // A port nothing listens on.
    let (listener, addr) = listen().await;
    drop(listener);
    let proxy = proxy_to(&format!("http://{addr}")).await;
    let reply = get_path(proxy, "/page").await;
    // RFC 9110 §15.6.3.
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("x-cache"), Some("UNCACHEABLE"));
}

#[tokio::test]
async fn an_origin_that_drops_the_connection_is_a_502() {
    let (listener, addr) = listen().await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            // Read the request, then close without a response.
            let mut buffer = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buffer).await;
            drop(socket);
        }
    });
    let proxy = proxy_to(&format!("http://{addr}")).await;
    for method in [Method::GET, Method::POST] {
        let reply = send(proxy, method, "/page", &[], "body").await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    }
    assert!(accepted.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn a_slow_origin_is_a_504() {
    let hits = Hits::default();
    let proxy = setup(&hits).await;
    // RFC 9110 §15.6.5: the proxy waited `UPSTREAM_TIMEOUT_SECS` (1 s here).
    assert_eq!(
        get_path(proxy, "/slow").await.status,
        StatusCode::GATEWAY_TIMEOUT
    );
}

#[tokio::test]
async fn a_body_cut_short_is_cut_short_for_the_client_and_not_stored() {
    let hits = Hits::default();
    let proxy = setup(&hits).await;
    let reply = get_path(proxy, "/cut").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.is_err(), "the client sees the failure");
    // RFC 9111 §3.3: an incomplete response is not stored as complete.
    let again = get_path(proxy, "/cut").await;
    assert!(again.body.is_err());
    assert_eq!(again.header("x-cache"), Some("MISS"));
    assert_eq!(hits.count("/cut"), 2);
}

#[tokio::test]
async fn the_stats_path_is_answered_by_the_proxy() {
    let hits = Hits::default();
    let proxy = setup(&hits).await;
    get_path(proxy, "/page").await;
    get_path(proxy, "/page").await;
    let stats = get_path(proxy, "/__stats").await;
    let json: serde_json::Value = serde_json::from_str(&stats.text()).unwrap();
    assert_eq!(
        (json["hits"].as_u64(), json["misses"].as_u64()),
        (Some(1), Some(1))
    );
}

#[test]
fn upstream_urls_are_checked() {
    assert!(Upstream::parse("http://127.0.0.1:8080").is_ok());
    assert!(Upstream::parse("http://127.0.0.1:8080/base/").is_ok());
    for bad in [
        "https://example.com",
        "127.0.0.1:8080",
        "http://x/?q=1",
        "not a url",
    ] {
        let error = Upstream::parse(bad).unwrap_err();
        assert!(error.starts_with("UPSTREAM"), "{bad}: {error}");
    }
}

#[tokio::test]
async fn any_final_status_with_explicit_freshness_is_cached_through_the_proxy_rfc9111_3() {
    let hits = Hits::default();
    let proxy = setup(&hits).await;
    for code in [302, 307, 404, 500, 503, 299] {
        let path = format!("/status/{code}");
        let first = get_path(proxy, &path).await;
        let second = get_path(proxy, &path).await;
        assert_eq!(first.status.as_u16(), code);
        assert_eq!(
            (
                second.status.as_u16(),
                second.header("x-cache"),
                second.text()
            ),
            (code, Some("HIT"), format!("{code} #1")),
            "{code} with max-age=60"
        );
        assert_eq!(second.header("location"), Some("/elsewhere"));
        assert_eq!(hits.count(&path), 1);
    }
}

#[tokio::test]
async fn obsolete_date_formats_give_the_freshness_through_the_proxy_rfc9110_5_6_7() {
    let hits = Hits::default();
    let proxy = setup(&hits).await;
    get_path(proxy, "/dated").await;
    let second = get_path(proxy, "/dated").await;
    assert_eq!(
        (second.header("x-cache"), second.text()),
        (Some("HIT"), "dated #1".to_owned()),
        "RFC 850 `Expires` minus an upper-case RFC 850 `Date`: 60 s (RFC 9111 §4.2.1)"
    );
}

#[tokio::test]
async fn heuristic_freshness_is_on_in_the_proxy_and_can_be_turned_off_rfc9111_4_2_2() {
    let hits = Hits::default();
    let proxy = setup(&hits).await;
    // Last modified in 2000: fresh for a day (10% of the time since, capped).
    get_path(proxy, "/modified").await;
    let second = get_path(proxy, "/modified").await;
    assert_eq!(
        (second.header("x-cache"), second.text()),
        (Some("HIT"), "/modified #1".to_owned())
    );
    // `HEURISTIC_FRESHNESS=off`: only explicit freshness makes a response fresh.
    let hits = Hits::default();
    let (listener, addr) = listen().await;
    let app = origin(&hits);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let proxy = proxy_with(Settings {
        heuristic: None,
        ..settings(&format!("http://{addr}"))
    })
    .await;
    get_path(proxy, "/modified").await;
    let second = get_path(proxy, "/modified").await;
    // Kept only to be revalidated (it has a validator): never fresh, so the origin answers.
    assert_ne!(second.header("x-cache"), Some("HIT"));
    assert_eq!(second.text(), "/modified #2");
    assert_eq!(hits.count("/modified"), 2);
}

#[tokio::test]
async fn qualified_directives_keep_their_fields_out_of_the_cache_rfc9111_5_2_2_4_and_5_2_2_7() {
    let hits = Hits::default();
    let proxy = setup(&hits).await;
    let first = get_path(proxy, "/qualified").await;
    assert_eq!(
        (first.header("set-cookie"), first.header("x-user")),
        (Some("id=1"), Some("alice"))
    );
    let second = get_path(proxy, "/qualified").await;
    assert_eq!(
        (second.header("x-cache"), second.text()),
        (Some("HIT"), "/qualified #1".to_owned())
    );
    assert_eq!(
        (second.header("set-cookie"), second.header("x-user")),
        (None, None)
    );
}

#[tokio::test]
async fn cdn_cache_control_decides_for_the_proxy_and_is_forwarded_rfc9213_2_1() {
    let hits = Hits::default();
    let proxy = setup(&hits).await;
    get_path(proxy, "/cdn").await;
    let second = get_path(proxy, "/cdn").await;
    assert_eq!(
        (second.header("x-cache"), second.text()),
        (Some("HIT"), "/cdn #1".to_owned())
    );
    assert_eq!(
        (
            second.header("cache-control"),
            second.header("cdn-cache-control")
        ),
        (Some("no-store"), Some("max-age=600"))
    );
}

#[tokio::test]
async fn equivalent_accept_encoding_values_share_a_variant_through_the_proxy_rfc9111_4_1() {
    let hits = Hits::default();
    let proxy = setup(&hits).await;
    let get = |encoding: &'static str| async move {
        send(
            proxy,
            Method::GET,
            "/negotiated",
            &[("accept-encoding", encoding)],
            "",
        )
        .await
    };
    assert_eq!(get("gzip, br").await.header("x-cache"), Some("MISS"));
    let same = get("BR,gzip;q=1.0").await;
    assert_eq!(
        (same.header("x-cache"), same.text()),
        (Some("HIT"), "/negotiated #1".to_owned())
    );
    assert_eq!(get("gzip;q=0.5, br").await.header("x-cache"), Some("MISS"));
    assert_eq!(hits.count("/negotiated"), 2);
}

#[tokio::test]
async fn a_200_to_a_head_updates_the_stored_get_through_the_proxy_rfc9111_4_3_5() {
    let hits = Hits::default();
    let proxy = setup(&hits).await;
    assert_eq!(get_path(proxy, "/described").await.header("x-n"), Some("1"));
    // A HEAD the client wants validated: the origin answers it with a 200 that describes
    // the stored response, whose fields it updates.
    let head = send(
        proxy,
        Method::HEAD,
        "/described",
        &[("cache-control", "no-cache")],
        "",
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    let hit = get_path(proxy, "/described").await;
    assert_eq!(
        (hit.header("x-cache"), hit.header("x-n"), hit.text()),
        (Some("HIT"), Some("2"), "the body of v1".to_owned())
    );
    assert_eq!(hits.count("/described"), 2);
}

#[tokio::test]
async fn interim_responses_from_the_origin_are_neither_stored_nor_replayed_rfc9110_15_2() {
    // An origin that sends `103 Early Hints` before each final response.
    let (listener, addr) = listen().await;
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&answered);
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                loop {
                    let Ok(read) = socket.read(&mut buffer).await else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..read]);
                    while let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        request.drain(..end + 4);
                        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                        let body = format!("final #{n}");
                        let reply = format!(
                            "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
                             HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if socket.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let proxy = proxy_to(&format!("http://{addr}")).await;
    let first = get_path(proxy, "/hinted").await;
    assert_eq!(
        (first.status, first.header("x-cache"), first.text()),
        (StatusCode::OK, Some("MISS"), "final #1".to_owned())
    );
    let second = get_path(proxy, "/hinted").await;
    assert_eq!(
        (second.status, second.header("x-cache"), second.text()),
        (StatusCode::OK, Some("HIT"), "final #1".to_owned())
    );
    // The hint's fields belong to the interim response alone.
    assert_eq!(second.header("link"), None);
    assert_eq!(answered.load(Ordering::SeqCst), 1);
}

/// An origin on a raw socket that answers each request with `cache-control: {cc}` and
/// closes the connection, until `gone` is set: then it closes every connection unanswered.
async fn fragile_origin(cc: &'static str, gone: Arc<std::sync::atomic::AtomicBool>) -> SocketAddr {
    let (listener, addr) = listen().await;
    let answered = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let (gone, answered) = (Arc::clone(&gone), Arc::clone(&answered));
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                if gone.load(Ordering::SeqCst) {
                    return;
                }
                let n = answered.fetch_add(1, Ordering::SeqCst) + 1;
                let body = format!("answer #{n}");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncache-control: {cc}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_stale_entry_answers_when_the_origin_is_gone_rfc9111_4_2_4() {
    for (cc, stale_allowed) in [
        ("max-age=1", true),
        ("max-age=1, must-revalidate", false),
        ("max-age=1, proxy-revalidate", false),
        ("s-maxage=1", false),
    ] {
        let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let origin = fragile_origin(cc, Arc::clone(&gone)).await;
        let proxy = proxy_to(&format!("http://{origin}")).await;
        assert_eq!(get_path(proxy, "/fragile").await.text(), "answer #1");
        gone.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let reply = get_path(proxy, "/fragile").await;
        if stale_allowed {
            assert_eq!(
                (reply.status, reply.header("x-cache"), reply.text()),
                (StatusCode::OK, Some("STALE"), "answer #1".to_owned()),
                "{cc}: the stale entry stands in for the dropped connection"
            );
        } else {
            assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{cc}: never stale");
        }
    }
    // Turned off: the failure goes through.
    let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let origin = fragile_origin("max-age=1", Arc::clone(&gone)).await;
    let proxy = proxy_with(Settings {
        stale_if_error: Duration::ZERO,
        ..settings(&format!("http://{origin}"))
    })
    .await;
    get_path(proxy, "/fragile").await;
    gone.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        get_path(proxy, "/fragile").await.status,
        StatusCode::BAD_GATEWAY
    );
}

#[tokio::test]
async fn a_stale_entry_answers_when_the_origin_times_out_rfc9111_4_2_4() {
    let hits = Hits::default();
    let (listener, addr) = listen().await;
    let slow = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let app = Router::new().route(
        "/sometimes-slow",
        get({
            let slow = Arc::clone(&slow);
            let hits = hits.clone();
            move || {
                let slow = slow.load(Ordering::SeqCst);
                let n = hits.next("/sometimes-slow");
                async move {
                    if slow {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                    }
                    ([("cache-control", "max-age=1")], format!("timely #{n}"))
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let proxy = proxy_to(&format!("http://{addr}")).await;
    get_path(proxy, "/sometimes-slow").await;
    slow.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The proxy gives the origin 1 s, then the stale entry answers.
    let reply = get_path(proxy, "/sometimes-slow").await;
    assert_eq!(
        (reply.status, reply.header("x-cache"), reply.text()),
        (StatusCode::OK, Some("STALE"), "timely #1".to_owned())
    );
}

#[tokio::test]
async fn ranges_are_answered_from_the_cache_through_the_proxy_rfc9110_14() {
    let hits = Hits::default();
    let proxy = setup(&hits).await;
    let whole = get_path(proxy, "/page").await;
    let text = whole.text();
    let partial = send(proxy, Method::GET, "/page", &[("range", "bytes=0-3")], "").await;
    assert_eq!(partial.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(partial.header("x-cache"), Some("HIT"));
    assert_eq!(
        partial.header("content-range"),
        Some(format!("bytes 0-3/{}", text.len()).as_str())
    );
    assert_eq!(partial.text(), text[..4]);
    let beyond = send(
        proxy,
        Method::GET,
        "/page",
        &[("range", "bytes=100000-")],
        "",
    )
    .await;
    assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(hits.count("/page"), 1);
}

#[tokio::test]
async fn the_first_age_and_must_understand_hold_through_the_proxy_rfc9111_5_1_and_5_2_2_3() {
    let hits = Hits::default();
    let proxy = setup(&hits).await;
    // Fresh for 60 - 50 = 10 s: a hit, and its `Age` counts on from 50.
    get_path(proxy, "/aged").await;
    let aged = get_path(proxy, "/aged").await;
    assert_eq!(aged.header("x-cache"), Some("HIT"));
    let age: u64 = aged.header("age").unwrap().parse().unwrap();
    assert!((50..60).contains(&age), "{age}");
    // `must-understand` with a status the cache knows overrides `no-store`.
    get_path(proxy, "/understood").await;
    assert_eq!(
        get_path(proxy, "/understood").await.header("x-cache"),
        Some("HIT")
    );
}
