//! A caching reverse proxy: every request goes to `UPSTREAM` through a [`CacheLayer`] that
//! stores only what the origin's headers allow (no default TTL), revalidates stale entries
//! with conditional requests, and passes everything else through unchanged.
//!
//! ```text
//! UPSTREAM=http://127.0.0.1:8080 LISTEN=0.0.0.0:3000 cargo run --release --example reverse_proxy
//! curl -i localhost:3000/some/page        # x-cache: MISS, then HIT while fresh
//! ```
//!
//! Settings (environment):
//!
//! - `UPSTREAM` (required): the origin, `http://host:port` with an optional base path
//!   (`http://10.0.0.5:8080/app` sends `/x` to `/app/x`). Plain HTTP: terminate TLS in
//!   front of the proxy, and keep the origin on a private network.
//! - `LISTEN`: the address to listen on. Default `127.0.0.1:3000`.
//! - `CACHE_MIB`: the memory store's size in MiB. Default 256.
//! - `UPSTREAM_TIMEOUT_SECS`: how long to wait for the origin's response head before
//!   answering 504. Default 30.
//! - `KEEP_SECS`: how long stale entries with a validator stay to be revalidated (and how
//!   long `no-cache` responses with one are kept). Default 600.
//! - `STATS_PATH`: if set (say `/__cache/stats`), the cache's counters as JSON there (that
//!   path is then not forwarded).
//! - `STALE_IF_ERROR_SECS`: how long past its freshness an entry still answers when the
//!   origin refuses or drops the connection, times out, or answers 500, 502, 503 or 504
//!   (RFC 9111 §4.2.4, RFC 5861 §4; nginx's `proxy_cache_use_stale error timeout`) — never
//!   one the origin marked `must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache`.
//!   Default 300; 0 turns it off.
//! - `HEURISTIC_FRESHNESS`: `off` stores only what has explicit freshness. Default on: a
//!   response without `max-age`, `s-maxage` or `Expires` but with a `Last-Modified` is fresh
//!   for 10% of the time since then, at most a day (RFC 9111 §4.2.2), as Squid, Apache
//!   httpd and Traffic Server do.
//! - `PUBLIC_HOST`: if set (say `www.example.com`), the host the origin is told it serves
//!   (`X-Forwarded-Host`), whatever `Host` the client sent; the cache's keys then leave the
//!   host out. Unset, the client's `Host` is forwarded and is part of every key.
//!
//! What it does:
//!
//! - Forwards every method, with its body streamed, and every end-to-end header; removes
//!   hop-by-hop headers (`Connection` and those it names, `Keep-Alive`, `TE`, `Trailer`,
//!   `Transfer-Encoding`, `Upgrade`, `Proxy-*`) both ways; adds `Via`, `X-Forwarded-For`,
//!   `X-Forwarded-Host` and `X-Forwarded-Proto` to requests (RFC 9110 §7.6.3). The origin
//!   sees its own host in `Host`, as behind nginx's default `proxy_set_header`.
//! - Never forwards a request header that could change the response without being in the
//!   cache key (cache poisoning): the client's `Forwarded`, `X-Forwarded-Host`,
//!   `X-Forwarded-Proto` and the other `X-Forwarded-*` fields but `X-Forwarded-For`, URL
//!   rewrites (`X-Original-URL`, `X-Rewrite-URL`) and method overrides
//!   (`X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`) are dropped. The
//!   host it forwards is either the one in the key or the fixed `PUBLIC_HOST`.
//!   `X-Forwarded-For` keeps the earlier hops (a TLS terminator in front adds the
//!   client's address): an origin must not render a cacheable page from it.
//! - Returns the origin's status, headers (multi-valued ones intact, in order) and body,
//!   plus `x-cache` and `Cache-Status`.
//! - Answers `502 Bad Gateway` when the origin cannot be reached or closes the connection
//!   before its response head, `504 Gateway Timeout` after `UPSTREAM_TIMEOUT_SECS`. A body
//!   cut short by the origin is cut short to the client too (and not stored).
//! - Caches by RFC 9111: the origin's `s-maxage` / `max-age` / `Expires` (in any of RFC
//!   9110's three date formats) for any final status, heuristic freshness from
//!   `Last-Modified`, `CDN-Cache-Control` over `Cache-Control` and `Expires` when the origin
//!   sends it (RFC 9213; forwarded to the client), `Age`, `Vary`,
//!   `no-cache` / `must-revalidate`, `stale-while-revalidate` / `stale-if-error`, conditional
//!   requests from clients answered from the cache, revalidation with `If-None-Match` /
//!   `If-Modified-Since`, invalidation after unsafe methods. Responses to requests with
//!   `Authorization` are not stored unless the origin says `public`, `s-maxage` or
//!   `must-revalidate` (RFC 9111 §3.5); responses that set cookies are never stored, unless
//!   a qualified `no-cache="Set-Cookie"` or `private="Set-Cookie"` says to store the rest
//!   (the fields such a directive lists are never stored).
//!
//! Not supported: protocol upgrades (WebSocket), HTTPS to the origin, HTTP/2 to clients, and
//! relaying interim responses: an origin's `103 Early Hints` or `102` is read and dropped
//! by the hyper client (never stored, never replayed), because hyper's server has no way to
//! send a `1xx` before the final response (RFC 9110 §15.2 lets a proxy drop them for a
//! client it cannot send them to).

use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower_response_cache::policy::CDN_CACHE_CONTROL;
use tower_response_cache::policy::HeuristicFreshness;
use tower_response_cache::{CacheLayer, MemoryStore, key::DefaultKeyBuilder};

/// The origin requests are forwarded to.
#[derive(Clone, Debug)]
pub struct Upstream {
    authority: Authority,
    /// A base path without its trailing `/` (empty for none).
    base: String,
}

impl Upstream {
    /// Parses `http://host:port[/base]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|error| format!("UPSTREAM {url:?} is not a URL: {error}"))?;
        match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTP => {}
            Some(scheme) => {
                return Err(format!(
                    "UPSTREAM {url:?}: only http:// origins are supported, not {scheme}://"
                ));
            }
            None => return Err(format!("UPSTREAM {url:?} needs a scheme: http://host:port")),
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("UPSTREAM {url:?} has no host"))?;
        if uri.query().is_some() {
            return Err(format!("UPSTREAM {url:?} may not have a query"));
        }
        Ok(Self {
            authority,
            base: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The origin's URI for a request's path and query.
    fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let path: PathAndQuery = format!("{}{path_and_query}", self.base).parse()?;
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
    }
}

/// How the proxy runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where requests go.
    pub upstream: Upstream,
    /// The memory store's size in bytes.
    pub cache_bytes: u64,
    /// How long to wait for the origin's response head.
    pub timeout: Duration,
    /// How long stale entries with a validator are kept for revalidation.
    pub keep: Duration,
    /// Where to answer with the cache's counters, if anywhere.
    pub stats_path: Option<String>,
    /// How long past freshness an entry answers when the origin fails.
    pub stale_if_error: Duration,
    /// Heuristic freshness for responses without explicit freshness; `None` for off.
    pub heuristic: Option<HeuristicFreshness>,
    /// The host the origin is told it serves, whatever the client's `Host`; `None` to
    /// forward the client's (which the cache then keys on).
    pub public_host: Option<HeaderValue>,
}

impl Settings {
    /// The settings from the environment (see the module docs).
    pub fn from_env() -> Result<Self, String> {
        let upstream = std::env::var("UPSTREAM")
            .map_err(|_| "set UPSTREAM to the origin, e.g. UPSTREAM=http://127.0.0.1:8080")?;
        let number = |name: &str, default: u64| -> Result<u64, String> {
            match std::env::var(name) {
                Ok(value) => value
                    .trim()
                    .parse()
                    .map_err(|_| format!("{name}={value:?} is not a whole number")),
                Err(_) => Ok(default),
            }
        };
        Ok(Self {
            upstream: Upstream::parse(&upstream)?,
            cache_bytes: number("CACHE_MIB", 256)?.saturating_mul(1 << 20),
            timeout: Duration::from_secs(number("UPSTREAM_TIMEOUT_SECS", 30)?),
            keep: Duration::from_secs(number("KEEP_SECS", 600)?),
            stats_path: std::env::var("STATS_PATH")
                .ok()
                .filter(|path| path.starts_with('/')),
            stale_if_error: Duration::from_secs(number("STALE_IF_ERROR_SECS", 300)?),
            heuristic: match std::env::var("HEURISTIC_FRESHNESS").as_deref() {
                Ok("off") => None,
                Ok("on") | Err(_) => Some(HeuristicFreshness::new()),
                Ok(other) => return Err(format!("HEURISTIC_FRESHNESS={other:?} is not on or off")),
            },
            public_host: match std::env::var("PUBLIC_HOST") {
                Ok(host) => Some(
                    host.parse::<Authority>()
                        .ok()
                        .filter(|authority| !authority.as_str().contains('@'))
                        .and_then(|authority| HeaderValue::try_from(authority.as_str()).ok())
                        .ok_or_else(|| format!("PUBLIC_HOST={host:?} is not a host[:port]"))?,
                ),
                Err(_) => None,
            },
        })
    }
}

/// The proxy as an axum `Router` (serve it with connect info for `X-Forwarded-For`), and
/// its cache layer (for its stats and store).
pub fn proxy(settings: &Settings) -> (Router, CacheLayer) {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Body> =
        Client::builder(TokioExecutor::new()).build(connector);
    let upstream = settings.upstream.clone();
    let timeout = settings.timeout;
    let public_host = settings.public_host.clone();
    let forward = tower::service_fn(move |request: Request| {
        let client = client.clone();
        let upstream = upstream.clone();
        let public_host = public_host.clone();
        async move {
            let response = forward(&client, &upstream, timeout, public_host, request).await;
            Ok::<_, Infallible>(response)
        }
    });
    // The client's `Host` reaches the origin (as `X-Forwarded-Host`) only when it is in the
    // key; with a fixed public host nothing of it does, and the key leaves it out.
    let keys = match settings.public_host {
        Some(_) => DefaultKeyBuilder::new().ignore_host(),
        None => DefaultKeyBuilder::new(),
    };
    let cache = CacheLayer::new(MemoryStore::new(settings.cache_bytes))
        .key_builder(keys)
        .namespace("proxy")
        // Only what the origin's headers allow.
        .no_default_ttl()
        .keep(settings.keep);
    // RFC 9213: a CDN-targeted field, when the origin sends one, decides over
    // `Cache-Control` for this cache (and is forwarded for the caches after it).
    let cache = cache.targeted_cache_control([CDN_CACHE_CONTROL]);
    // The origin refused, dropped the connection or timed out (the 502 and 504 below), or
    // failed: a stale entry within the window answers instead (RFC 9111 §4.2.4).
    let cache = if settings.stale_if_error.is_zero() {
        cache
    } else {
        cache.stale_if_error(settings.stale_if_error)
    };
    let cache = match settings.heuristic {
        Some(heuristic) => cache.heuristic_freshness(heuristic),
        None => cache,
    };
    let mut app = Router::new().fallback_service(forward).layer(cache.clone());
    if let Some(path) = &settings.stats_path {
        app = app.route(path, tower_response_cache::axum::stats_route(cache.stats()));
    }
    (app, cache)
}

/// Sends `request` to the origin and returns its response, or a 502 / 504.
async fn forward(
    client: &Client<HttpConnector, Body>,
    upstream: &Upstream,
    timeout: Duration,
    public_host: Option<HeaderValue>,
    request: Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let Ok(uri) = upstream.uri_for(path_and_query) else {
        return status(StatusCode::BAD_REQUEST, "bad request target");
    };
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    strip_hop_by_hop(&mut parts.headers);
    strip_unkeyed(&mut parts.headers);
    forwarded_headers(&mut parts.headers, peer, public_host);
    // The client sets `Host` from the URI: the origin's own.
    parts.headers.remove(header::HOST);
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let response = tokio::time::timeout(timeout, client.request(Request::from_parts(parts, body)));
    match response.await {
        Ok(Ok(response)) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(error)) => {
            match error.source() {
                Some(source) => eprintln!("upstream request failed: {error}: {source}"),
                None => eprintln!("upstream request failed: {error}"),
            }
            status(StatusCode::BAD_GATEWAY, "bad gateway: the origin failed")
        }
        Err(_) => status(
            StatusCode::GATEWAY_TIMEOUT,
            "gateway timeout: the origin did not answer in time",
        ),
    }
}

fn status(status: StatusCode, text: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): the fixed ones and those `Connection`
/// names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// Request headers that frameworks read to rewrite the URL, the method, the host or the
/// scheme: from a client, each would change the response without being in the key.
const UNKEYED: [&str; 14] = [
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-scheme",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-original-url",
    "x-rewrite-url",
    "x-original-host",
    "x-host",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Drops the client's [`UNKEYED`] headers; the proxy sets its own `X-Forwarded-Host` and
/// `X-Forwarded-Proto`.
fn strip_unkeyed(headers: &mut HeaderMap) {
    for name in UNKEYED {
        headers.remove(name);
    }
}

/// `Via` (RFC 9110 §7.6.3) and the de facto `X-Forwarded-*` headers.
fn forwarded_headers(
    headers: &mut HeaderMap,
    peer: Option<std::net::IpAddr>,
    public_host: Option<HeaderValue>,
) {
    headers.append(
        header::VIA,
        HeaderValue::from_static("1.1 tower-response-cache"),
    );
    if let Some(host) = public_host.or_else(|| headers.get(header::HOST).cloned()) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    if let Some(peer) = peer {
        let name = HeaderName::from_static("x-forwarded-for");
        // Every earlier hop, on however many lines they came, then this one.
        let mut hops: Vec<String> = headers
            .get_all(&name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .map(str::to_owned)
            .collect();
        hops.push(peer.to_string());
        let value = hops.join(", ");
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    }
}

/// Serves the proxy on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    settings: &Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (app, _cache) = proxy(settings);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let settings = Settings::from_env()?;
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|error| format!("cannot listen on {listen}: {error}"))?;
    println!(
        "caching reverse proxy on http://{} for {}",
        listener.local_addr()?,
        std::env::var("UPSTREAM").unwrap_or_default()
    );
    serve(listener, &settings, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
