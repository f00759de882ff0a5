//! HTTP caching semantics beyond storing: conditional requests answered from the cache
//! (RFC 9110 §13), invalidation after unsafe methods (RFC 9111 §4.4).

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use http::{Method, Request, StatusCode};

use crate::harness::{self, Calls, Reply, layer, send};
use tower_response_cache::store::Store;

fn app(calls: &Calls) -> Router {
    let page = |State(calls): State<Calls>| async move {
        (
            [
                ("etag", "W/\"v1\""),
                ("last-modified", "Sat, 01 Jan 2000 00:00:00 GMT"),
                ("cache-control", "max-age=60"),
                ("content-type", "text/plain"),
            ],
            format!("page #{}", calls.hit()),
        )
    };
    let (cache, _store) = layer();
    Router::new()
        .route(
            "/items/{id}",
            get(page).post(|| async { "updated" }).delete(
                |State(calls): State<Calls>| async move {
                    calls.hit();
                    (
                        [
                            ("location", "/items"),
                            ("content-location", "http://other.example/items/9"),
                        ],
                        "deleted",
                    )
                },
            ),
        )
        .route(
            "/items",
            get(page).put(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "failed") }),
        )
        .route(
            "/items/{id}/archive",
            axum::routing::post(|| async {
                (
                    StatusCode::SEE_OTHER,
                    [("location", "http://shop.example/items/7")],
                    "",
                )
            }),
        )
        .with_state(calls.clone())
        .layer(cache)
}

/// The host every request of these tests is for, as a browser's would be: an unsafe
/// request invalidates the entries of its own host.
const HOST: (&str, &str) = ("host", "shop.example");

async fn fetch(app: &Router, uri: &str) -> Reply {
    get_with(app, uri, &[]).await
}

async fn get_with(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![HOST];
    all.extend_from_slice(headers);
    harness::get_with(app, uri, &all).await
}

async fn request(app: &Router, method: Method, uri: &str) -> Reply {
    send(
        app,
        Request::builder()
            .method(method)
            .uri(uri)
            .header(HOST.0, HOST.1)
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn a_matching_if_none_match_gets_a_304_from_the_cache() {
    let calls = Calls::default();
    let app = app(&calls);
    fetch(&app, "/items/1").await;
    // RFC 9110 §13.1.2 (weak comparison) and §15.4.5 (the 304's headers).
    let reply = get_with(&app, "/items/1", &[("if-none-match", "\"other\", \"v1\"")]).await;
    assert_eq!(reply.status, StatusCode::NOT_MODIFIED);
    assert!(reply.body.is_empty());
    assert_eq!(reply.header("etag"), Some("W/\"v1\""));
    assert_eq!(reply.header("cache-control"), Some("max-age=60"));
    assert_eq!(
        reply.header("content-type"),
        None,
        "no representation metadata"
    );
    assert_eq!(reply.header("x-cache"), Some("HIT"));
    assert!(reply.header("age").is_some());

    let other = get_with(&app, "/items/1", &[("if-none-match", "\"v2\"")]).await;
    assert_eq!(
        (other.status, other.text().as_str()),
        (StatusCode::OK, "page #1")
    );
    assert_eq!(calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn if_modified_since_is_answered_when_there_is_no_if_none_match() {
    let calls = Calls::default();
    let app = app(&calls);
    fetch(&app, "/items/2").await;
    // RFC 9110 §13.1.3.
    let later = ("if-modified-since", "Sun, 02 Jan 2000 00:00:00 GMT");
    assert_eq!(
        get_with(&app, "/items/2", &[later]).await.status,
        StatusCode::NOT_MODIFIED
    );
    let earlier = ("if-modified-since", "Fri, 31 Dec 1999 00:00:00 GMT");
    assert_eq!(
        get_with(&app, "/items/2", &[earlier]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_with(&app, "/items/2", &[later, ("if-none-match", "\"nope\"")])
            .await
            .status,
        StatusCode::OK,
        "If-None-Match takes precedence"
    );
    assert_eq!(calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_successful_unsafe_request_invalidates_its_target() {
    let calls = Calls::default();
    let app = app(&calls);
    fetch(&app, "/items/3").await;
    fetch(&app, "/items/4").await;
    // RFC 9111 §4.4.
    assert_eq!(
        request(&app, Method::POST, "/items/3").await.text(),
        "updated"
    );
    let after = fetch(&app, "/items/3").await;
    assert_eq!(
        (after.header("x-cache"), after.text().as_str()),
        (Some("MISS"), "page #3")
    );
    assert_eq!(
        fetch(&app, "/items/4").await.header("x-cache"),
        Some("HIT"),
        "other URIs stay"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_unsafe_request_invalidates_nothing() {
    // RFC 9111 §4.4: only a non-error response invalidates.
    let calls = Calls::default();
    let app = app(&calls);
    fetch(&app, "/items").await;
    assert_eq!(
        request(&app, Method::PUT, "/items").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(fetch(&app, "/items").await.header("x-cache"), Some("HIT"));
}

#[tokio::test(start_paused = true)]
async fn same_origin_location_and_content_location_are_invalidated_too() {
    // RFC 9111 §4.4: `Location` and `Content-Location` on the same origin are invalidated too;
    // other origins are not (a denial-of-service guard).
    let calls = Calls::default();
    let app = app(&calls);
    fetch(&app, "/items").await;
    fetch(&app, "/items/5").await;
    fetch(&app, "/items/7").await;
    fetch(&app, "/items/9").await;
    request(&app, Method::DELETE, "/items/5").await;
    assert_eq!(
        fetch(&app, "/items/5").await.header("x-cache"),
        Some("MISS"),
        "the target"
    );
    assert_eq!(
        fetch(&app, "/items").await.header("x-cache"),
        Some("MISS"),
        "its Location"
    );
    assert_eq!(
        fetch(&app, "/items/9").await.header("x-cache"),
        Some("HIT"),
        "a Content-Location on another origin is left alone"
    );
    // An absolute Location on the request's own origin (Host) counts.
    let archived = request(&app, Method::POST, "/items/7/archive").await;
    assert_eq!(archived.status, StatusCode::SEE_OTHER);
    assert_eq!(
        fetch(&app, "/items/7").await.header("x-cache"),
        Some("MISS")
    );
}

#[tokio::test(start_paused = true)]
async fn safe_methods_invalidate_nothing() {
    // RFC 9111 §4.4 applies to unsafe methods only (RFC 9110 §9.2.1).
    let calls = Calls::default();
    let app = app(&calls);
    fetch(&app, "/items/6").await;
    request(&app, Method::OPTIONS, "/items/6").await;
    assert_eq!(fetch(&app, "/items/6").await.header("x-cache"), Some("HIT"));
}

#[tokio::test(start_paused = true)]
async fn a_conditional_miss_fills_the_cache_with_the_full_response() {
    // RFC 9111 §4.3.2: the cache may forward a conditional request without the client's
    // validators, to fill itself with the full response.
    let calls = Calls::default();
    let app = app(&calls);
    // The fill asks the origin for the whole response, not the client's 304.
    let first = get_with(&app, "/items/8", &[("if-none-match", "W/\"v1\"")]).await;
    assert_eq!(
        (first.status, first.header("x-cache")),
        (StatusCode::OK, Some("MISS"))
    );
    assert_eq!(fetch(&app, "/items/8").await.header("x-cache"), Some("HIT"));
    let again = get_with(&app, "/items/8", &[("if-none-match", "W/\"v1\"")]).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(calls.get(), 1);
}

/// An origin that answers `cache-control` and the body, or 503 once told to fail.
fn failing_app(
    calls: &Calls,
    failing: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    cache_control: &'static str,
    cache: tower_response_cache::CacheLayer,
) -> Router {
    let failing = std::sync::Arc::clone(failing);
    Router::new()
        .route(
            "/flaky",
            get(move |State(calls): State<Calls>| {
                let failing = failing.load(std::sync::atomic::Ordering::SeqCst);
                async move {
                    let n = calls.hit();
                    // Slow enough that concurrent requests overlap the fetch.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    if failing {
                        return (
                            StatusCode::SERVICE_UNAVAILABLE,
                            [("cache-control", "no-store")],
                            format!("down #{n}"),
                        );
                    }
                    (
                        StatusCode::OK,
                        [("cache-control", cache_control)],
                        format!("up #{n}"),
                    )
                }
            }),
        )
        .with_state(calls.clone())
        .layer(cache)
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_serves_the_stale_entry_when_the_origin_fails() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let calls = Calls::default();
    let failing = std::sync::Arc::new(AtomicBool::new(false));
    let (cache, _store) = layer();
    let app = failing_app(
        &calls,
        &failing,
        "max-age=1, stale-if-error=60",
        cache.clone(),
    );
    fetch(&app, "/flaky").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    failing.store(true, Ordering::SeqCst);
    // RFC 5861 §4: a 503 from the origin, the stale entry answers.
    let stale = fetch(&app, "/flaky").await;
    assert_eq!(
        (stale.status, stale.text().as_str()),
        (StatusCode::OK, "up #1")
    );
    assert_eq!(stale.header("x-cache"), Some("STALE"));
    // RFC 9111 §5.1: a stale response carries its age too.
    assert!(stale.header("age").unwrap().parse::<u64>().unwrap() >= 2);
    let status = stale.header("cache-status").unwrap();
    assert!(
        status.starts_with("tower-response-cache; hit; ttl=-")
            && status.ends_with("detail=stale-if-error"),
        "{status}"
    );
    assert_eq!(calls.get(), 2, "the origin was asked first");
    assert_eq!(cache.stats().snapshot().total.stale_if_error, 1);
    // Once the origin is back, a fresh response replaces it.
    failing.store(false, Ordering::SeqCst);
    assert_eq!(fetch(&app, "/flaky").await.text(), "up #3");
}

#[tokio::test(start_paused = true)]
async fn without_stale_if_error_the_failure_goes_through() {
    // RFC 9111 §4.2.4: no stale response unless a directive or configuration allows it.
    use std::sync::atomic::{AtomicBool, Ordering};
    let calls = Calls::default();
    let failing = std::sync::Arc::new(AtomicBool::new(false));
    let (cache, _store) = layer();
    let app = failing_app(&calls, &failing, "max-age=1", cache);
    fetch(&app, "/flaky").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    failing.store(true, Ordering::SeqCst);
    assert_eq!(
        fetch(&app, "/flaky").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(start_paused = true)]
async fn the_layer_setting_covers_service_errors_within_its_window() {
    // RFC 5861 §4 as a configured setting (RFC 9111 §4.2.4 allows configured stale serving).
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::{ServiceBuilder, ServiceExt};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&calls);
    let (cache, _store) = layer();
    let cache = cache
        .default_ttl(std::time::Duration::from_millis(300))
        .stale_if_error(std::time::Duration::from_millis(1500));
    let service = ServiceBuilder::new()
        .layer(cache)
        .service_fn(move |_: Request<()>| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n == 1 {
                    Ok(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from("first"),
                    )))
                } else {
                    Err(std::io::Error::other("origin down"))
                }
            }
        });
    let get = || {
        service
            .clone()
            .oneshot(Request::get("/e").body(()).unwrap())
    };
    let body = |response: http::Response<_>| async move {
        use http_body_util::BodyExt;
        tower_response_cache::CacheBody::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes()
    };
    assert_eq!(body(get().await.unwrap()).await, "first");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let stale = get().await.expect("the stale entry, not the error");
    assert_eq!(stale.headers()["x-cache"], "STALE");
    assert_eq!(body(stale).await, "first");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        get().await.is_err(),
        "past the window the error goes through"
    );
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once_in_the_background() {
    use std::sync::atomic::AtomicBool;
    let calls = Calls::default();
    let failing = std::sync::Arc::new(AtomicBool::new(false));
    let (cache, store) = layer();
    let app = failing_app(
        &calls,
        &failing,
        "max-age=1, stale-while-revalidate=60",
        cache.clone(),
    );
    fetch(&app, "/flaky").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;

    // RFC 5861 §3: twenty requests for the stale entry are answered with it at once; one
    // background fetch refreshes it.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move { fetch(&app, "/flaky").await }));
    }
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (StatusCode::OK, "up #1")
        );
        assert_eq!(reply.header("x-cache"), Some("STALE"));
        let status = reply.header("cache-status").unwrap();
        assert!(
            status.ends_with("detail=stale-while-revalidate"),
            "{status}"
        );
    }
    // The refresh lands in the store (bounded wait: it runs on its own task).
    let mut refreshed = false;
    for _ in 0..200 {
        if store
            .get("t:GET:shop.example/flaky")
            .await
            .unwrap()
            .is_some_and(|entry| entry.body == "up #2")
        {
            refreshed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(refreshed, "the background fetch stored the fresh response");
    assert_eq!(calls.get(), 2, "one refresh for twenty stale answers");
    let fresh = fetch(&app, "/flaky").await;
    assert_eq!(
        (fresh.header("x-cache"), fresh.text().as_str()),
        (Some("HIT"), "up #2")
    );
    assert_eq!(cache.stats().snapshot().total.stale_while_revalidate, 20);
    // The refresh's task lets its flight go right after the write the store shows: a
    // moment later (bounded).
    for _ in 0..200 {
        if cache.in_flight() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(cache.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_fetch_under_way_when_its_url_is_invalidated_is_not_stored() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let version = Arc::new(AtomicUsize::new(1));
    let (cache, store) = layer();
    let read = Arc::clone(&version);
    let write = Arc::clone(&version);
    let app = Router::new()
        .route(
            "/profile",
            get(move || {
                // The origin reads its state, then takes its time to answer.
                let seen = read.load(Ordering::SeqCst);
                async move {
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    ([("cache-control", "max-age=60")], format!("version {seen}"))
                }
            })
            .put(move || {
                write.fetch_add(1, Ordering::SeqCst);
                async { "updated" }
            }),
        )
        .layer(cache.clone());
    let slow = tokio::spawn({
        let app = app.clone();
        async move { fetch(&app, "/profile").await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        request(&app, Method::PUT, "/profile").await.text(),
        "updated"
    );
    // The GET that began before the PUT answers its own client…
    assert_eq!(slow.await.unwrap().text(), "version 1");
    // …but does not put the old version back into the cache (RFC 9111 §4.4: after the
    // invalidation, the stored response must not be reused).
    assert!(
        store
            .get("t:GET:shop.example/profile")
            .await
            .unwrap()
            .is_none()
    );
    let after = fetch(&app, "/profile").await;
    assert_eq!(
        (after.x_cache(), after.text().as_str()),
        ("MISS", "version 2")
    );
    assert_eq!(cache.stats().snapshot().total.not_stored["invalidated"], 1);
}

#[tokio::test(start_paused = true)]
async fn expires_and_date_give_the_freshness_and_an_invalid_expires_none() {
    let now = std::time::SystemTime::now();
    let date = httpdate::fmt_http_date(now);
    let expires = httpdate::fmt_http_date(now + std::time::Duration::from_secs(120));
    let (cache, store) = layer();
    let app = Router::new()
        .route(
            "/expires",
            get(move || {
                let (date, expires) = (date.clone(), expires.clone());
                async move { ([("date", date), ("expires", expires)], "expires") }
            }),
        )
        .route(
            "/invalid",
            get(|| async { ([("expires", "0")], "invalid") }),
        )
        .layer(cache.default_ttl(std::time::Duration::from_secs(60)));
    // RFC 9111 §4.2.1: `Expires` minus `Date` is the freshness lifetime.
    fetch(&app, "/expires").await;
    let hit = fetch(&app, "/expires").await;
    assert_eq!(hit.x_cache(), "HIT");
    let entry = store
        .get("t:GET:shop.example/expires")
        .await
        .unwrap()
        .unwrap();
    assert!(
        (118..=120).contains(&entry.ttl.as_secs()),
        "{:?}",
        entry.ttl
    );
    // §5.3: an invalid `Expires` means already expired, whatever the default TTL.
    assert_eq!(fetch(&app, "/invalid").await.x_cache(), "UNCACHEABLE");
    assert!(
        store
            .get("t:GET:shop.example/invalid")
            .await
            .unwrap()
            .is_none()
    );
}

/// `time` in RFC 9110 §5.6.7's three formats: the IMF-fixdate (in lower case, which the
/// section's grammar does not allow but recipients tolerate), the obsolete RFC 850 date and
/// asctime.
fn date_formats(time: std::time::SystemTime) -> [String; 3] {
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let imf = httpdate::fmt_http_date(time);
    let parts: Vec<&str> = imf.split_ascii_whitespace().collect();
    let (weekday, day, month, year, clock) =
        (&parts[0][..3], parts[1], parts[2], parts[3], parts[4]);
    let full = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ]
    .into_iter()
    .find(|name| name.starts_with(weekday))
    .unwrap();
    [
        imf.to_ascii_lowercase(),
        format!("{full}, {day}-{month}-{} {clock} GMT", &year[2..]),
        format!(
            "{weekday} {month} {:>2} {clock} {year}",
            day.trim_start_matches('0')
        ),
    ]
}

#[tokio::test(start_paused = true)]
async fn dates_in_the_obsolete_formats_and_any_case_are_read_rfc9110_5_6_7() {
    let now = std::time::SystemTime::now();
    for (i, (date, expires)) in date_formats(now)
        .into_iter()
        .zip(date_formats(now + std::time::Duration::from_secs(120)))
        .enumerate()
    {
        let (cache, store) = layer();
        let calls = Calls::default();
        let app = Router::new()
            .route(
                "/dated",
                get(move |State(calls): State<Calls>| {
                    let (date, expires) = (date.clone(), expires.clone());
                    async move {
                        calls.hit();
                        (
                            [
                                ("date", date),
                                ("expires", expires),
                                ("last-modified", "saturday, 01-jan-00 00:00:00 gmt".into()),
                            ],
                            "dated",
                        )
                    }
                }),
            )
            .with_state(calls.clone())
            .layer(cache);
        // RFC 9111 §4.2.1: `Expires` minus `Date`, in whichever format, is the lifetime.
        fetch(&app, "/dated").await;
        assert_eq!(fetch(&app, "/dated").await.x_cache(), "HIT", "format {i}");
        let entry = store
            .get("t:GET:shop.example/dated")
            .await
            .unwrap()
            .unwrap();
        assert!(
            (118..=120).contains(&entry.ttl.as_secs()),
            "format {i}: {:?}",
            entry.ttl
        );
        // RFC 9110 §13.1.3: an `If-Modified-Since` in asctime, against a `Last-Modified`
        // in the RFC 850 format, both of 2000-01-01.
        let reply = get_with(
            &app,
            "/dated",
            &[("if-modified-since", "Sat Jan  1 00:00:00 2000")],
        )
        .await;
        assert_eq!(reply.status, StatusCode::NOT_MODIFIED, "format {i}");
        assert_eq!(calls.get(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn of_an_age_list_or_several_age_lines_the_first_value_counts_rfc9111_5_1() {
    let (cache, store) = layer();
    let app = Router::new()
        .route(
            "/list",
            get(|| async { ([("cache-control", "max-age=60"), ("age", "50, 10")], "list") }),
        )
        .route(
            "/lines",
            get(|| async {
                let mut response = axum::response::IntoResponse::into_response("lines");
                let headers = response.headers_mut();
                headers.insert("cache-control", "max-age=60".parse().unwrap());
                headers.append("age", "40".parse().unwrap());
                headers.append("age", "5".parse().unwrap());
                response
            }),
        )
        .route(
            "/invalid",
            get(|| async {
                (
                    [("cache-control", "max-age=60"), ("age", "soon, 10")],
                    "invalid",
                )
            }),
        )
        .layer(cache);
    for (path, ttl) in [("/list", 10), ("/lines", 20), ("/invalid", 60)] {
        fetch(&app, path).await;
        let entry = store
            .get(&format!("t:GET:shop.example{path}"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{path} stored"));
        assert!(
            (ttl - 1..=ttl).contains(&entry.ttl.as_secs()),
            "{path}: {:?}",
            entry.ttl
        );
    }
}

/// Answers `/status/{code}` with that status and `cache-control: {cc}` (none when `cc` is
/// `-`), counting calls.
fn status_app(calls: &Calls) -> (Router, tower_response_cache::MemoryStore) {
    let (cache, store) = layer();
    let app = Router::new()
        .route(
            "/status/{code}/{cc}",
            get(
                |State(calls): State<Calls>,
                 axum::extract::Path((code, cc)): axum::extract::Path<(u16, String)>| async move {
                    let n = calls.hit();
                    let mut response =
                        axum::response::IntoResponse::into_response(format!("{code} #{n}"));
                    *response.status_mut() = StatusCode::from_u16(code).unwrap();
                    if cc != "-" {
                        response
                            .headers_mut()
                            .insert("cache-control", cc.parse().unwrap());
                    }
                    response
                },
            ),
        )
        .with_state(calls.clone())
        .layer(cache.default_ttl(std::time::Duration::from_secs(60)));
    (app, store)
}

#[tokio::test(start_paused = true)]
async fn any_final_status_with_explicit_freshness_is_reused_while_fresh_rfc9111_3_and_4_2() {
    let calls = Calls::default();
    let (app, _store) = status_app(&calls);
    for code in [302, 303, 307, 400, 500, 502, 503, 504, 299, 599] {
        let uri = format!("/status/{code}/max-age=60");
        let first = fetch(&app, &uri).await;
        assert_eq!((first.status.as_u16(), first.x_cache()), (code, "MISS"));
        let second = fetch(&app, &uri).await;
        assert_eq!(
            (second.status.as_u16(), second.x_cache(), second.text()),
            (code, "HIT", first.text()),
            "{code} with max-age is reused"
        );
        // Without explicit freshness, the status set (and so the default TTL) decides.
        let uri = format!("/status/{code}/-");
        assert_eq!(fetch(&app, &uri).await.x_cache(), "UNCACHEABLE", "{code}");
        assert_eq!(fetch(&app, &uri).await.x_cache(), "UNCACHEABLE", "{code}");
    }
    // Never an interim response's status, nor a 206 or a 304 of the origin's own.
    for code in [206, 304] {
        let uri = format!("/status/{code}/max-age=60");
        fetch(&app, &uri).await;
        assert_ne!(fetch(&app, &uri).await.x_cache(), "HIT", "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_status_outside_the_set_is_not_reused_after_its_explicit_freshness() {
    let calls = Calls::default();
    let (app, store) = status_app(&calls);
    fetch(&app, "/status/503/max-age=1").await;
    assert_eq!(fetch(&app, "/status/503/max-age=1").await.x_cache(), "HIT");
    // Its entry lives as long as its freshness, not the default TTL's 60 s.
    let entry = store
        .get("t:GET:shop.example/status/503/max-age=1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.ttl, std::time::Duration::from_secs(1));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let after = fetch(&app, "/status/503/max-age=1").await;
    assert_eq!(after.x_cache(), "MISS");
    assert_eq!(calls.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn must_understand_overrides_no_store_only_for_statuses_the_cache_knows_rfc9111_5_2_2_3() {
    let calls = Calls::default();
    let (app, _store) = status_app(&calls);
    let known = "/status/200/must-understand,no-store,max-age=60";
    fetch(&app, known).await;
    assert_eq!(fetch(&app, known).await.x_cache(), "HIT");
    let unknown = "/status/299/must-understand,no-store,max-age=60";
    assert_eq!(fetch(&app, unknown).await.x_cache(), "UNCACHEABLE");
    assert_eq!(fetch(&app, unknown).await.x_cache(), "UNCACHEABLE");
    let plain = "/status/200/no-store,max-age=60";
    fetch(&app, plain).await;
    assert_eq!(fetch(&app, plain).await.x_cache(), "UNCACHEABLE");
}

#[tokio::test(start_paused = true)]
async fn heuristic_freshness_when_on_guesses_from_last_modified_rfc9111_4_2_2() {
    let ten_days_ago = httpdate::fmt_http_date(
        std::time::SystemTime::now() - std::time::Duration::from_secs(10 * 86_400),
    );
    for on in [true, false] {
        let (cache, store) = layer();
        let cache = cache.no_default_ttl();
        let cache = if on {
            cache.heuristic_freshness(tower_response_cache::policy::HeuristicFreshness::new())
        } else {
            cache
        };
        let modified = ten_days_ago.clone();
        let app = Router::new()
            .route(
                "/guessed",
                get(move || {
                    let modified = modified.clone();
                    async move { ([("last-modified", modified)], "guessed") }
                }),
            )
            .layer(cache);
        fetch(&app, "/guessed").await;
        let second = fetch(&app, "/guessed").await;
        let entry = store.get("t:GET:shop.example/guessed").await.unwrap();
        if on {
            assert_eq!(second.x_cache(), "HIT");
            // 10% of ten days: one day.
            let ttl = entry.expect("stored").ttl.as_secs();
            assert!((86_399..=86_400).contains(&ttl), "{ttl}");
        } else {
            assert_eq!(second.x_cache(), "UNCACHEABLE");
            assert!(entry.is_none());
        }
    }
}

#[tokio::test(start_paused = true)]
async fn qualified_no_cache_and_private_store_the_response_without_the_listed_fields_rfc9111_5_2_2_4_and_5_2_2_7()
 {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let app = Router::new()
        .route(
            "/qualified",
            get(|State(calls): State<Calls>| async move {
                (
                    [
                        (
                            "cache-control",
                            r#"max-age=60, no-cache="Set-Cookie", private="X-User""#,
                        ),
                        ("set-cookie", "session=alice"),
                        ("x-user", "alice"),
                        ("x-shared", "yes"),
                    ],
                    format!("page #{}", calls.hit()),
                )
            }),
        )
        .with_state(calls.clone())
        .layer(cache);
    let first = fetch(&app, "/qualified").await;
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(first.header("set-cookie"), Some("session=alice"));
    assert_eq!(first.header("x-user"), Some("alice"));
    let second = fetch(&app, "/qualified").await;
    assert_eq!(
        (second.x_cache(), second.text()),
        ("HIT", "page #1".to_owned())
    );
    assert_eq!(second.header("set-cookie"), None, "never replayed");
    assert_eq!(second.header("x-user"), None, "never replayed");
    assert_eq!(second.header("x-shared"), Some("yes"));
    assert_eq!(calls.get(), 1);
}

/// An app whose `/t/{cdn}/{cc}` answers with `CDN-Cache-Control: {cdn}` and
/// `Cache-Control: {cc}` (`-`: none), behind a layer that reads `CDN-Cache-Control`.
fn targeted_app(calls: &Calls, strip: bool) -> (Router, tower_response_cache::MemoryStore) {
    let (cache, store) = layer();
    let cache = cache
        .no_default_ttl()
        .targeted_cache_control([tower_response_cache::policy::CDN_CACHE_CONTROL])
        .strip_targeted_cache_control(strip);
    let app = Router::new()
        .route(
            "/t/{cdn}/{cc}",
            get(
                |State(calls): State<Calls>,
                 axum::extract::Path((cdn, cc)): axum::extract::Path<(String, String)>| async move {
                    let n = calls.hit();
                    let mut response = axum::response::IntoResponse::into_response(format!("t #{n}"));
                    let headers = response.headers_mut();
                    if cdn != "-" {
                        headers.insert("cdn-cache-control", cdn.parse().unwrap());
                    }
                    if cc != "-" {
                        headers.insert("cache-control", cc.parse().unwrap());
                    }
                    response
                },
            ),
        )
        .with_state(calls.clone())
        .layer(cache);
    (app, store)
}

#[tokio::test(start_paused = true)]
async fn cdn_cache_control_replaces_cache_control_for_this_cache_rfc9213_2_1() {
    let calls = Calls::default();
    let (app, store) = targeted_app(&calls, false);
    // `no-store` for browsers, ten minutes for this cache.
    let uri = "/t/max-age=600/no-store";
    let first = fetch(&app, uri).await;
    assert_eq!(first.x_cache(), "MISS");
    let second = fetch(&app, uri).await;
    assert_eq!(
        (second.x_cache(), second.text()),
        ("HIT", "t #1".to_owned())
    );
    // Both fields reach the client unchanged (§2.1: forwarded by default).
    assert_eq!(second.header("cache-control"), Some("no-store"));
    assert_eq!(second.header("cdn-cache-control"), Some("max-age=600"));
    let entry = store
        .get(&format!("t:GET:shop.example{uri}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.ttl.as_secs(), 600);
    // The other way round: the origin lets browsers keep it, not this cache.
    let uri = "/t/no-store/max-age=600";
    fetch(&app, uri).await;
    assert_eq!(fetch(&app, uri).await.x_cache(), "UNCACHEABLE");
    // An invalid field is ignored as a whole: `Cache-Control` decides.
    let uri = "/t/max-age=%2260/max-age=30";
    fetch(&app, uri).await;
    assert_eq!(fetch(&app, uri).await.x_cache(), "HIT");
    let entry = store
        .get("t:GET:shop.example/t/max-age=%2260/max-age=30")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.ttl.as_secs(), 30);
}

#[tokio::test(start_paused = true)]
async fn targeted_fields_can_be_stripped_from_what_clients_get() {
    let calls = Calls::default();
    let (app, _store) = targeted_app(&calls, true);
    let uri = "/t/max-age=600/no-store";
    let first = fetch(&app, uri).await;
    let second = fetch(&app, uri).await;
    assert_eq!(second.x_cache(), "HIT");
    for reply in [first, second] {
        assert_eq!(reply.header("cdn-cache-control"), None);
        assert_eq!(reply.header("cache-control"), Some("no-store"));
    }
}

#[tokio::test(start_paused = true)]
async fn a_200_to_a_head_updates_or_outdates_the_stored_get_rfc9111_4_3_5() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // The origin ignores conditional requests: every answer is a 200. Its ETag is the
    // version; `x-served` counts its answers.
    let version = Arc::new(AtomicUsize::new(1));
    let calls = Calls::default();
    let (cache, store) = layer();
    let cache = cache.keep(std::time::Duration::from_secs(60));
    let app = Router::new()
        .route(
            "/doc",
            get({
                let version = Arc::clone(&version);
                move |State(calls): State<Calls>| {
                    let version = version.load(Ordering::SeqCst);
                    async move {
                        let n = calls.hit();
                        (
                            [
                                // Stale at once: every request goes to the origin.
                                ("cache-control", "max-age=0".to_owned()),
                                ("etag", format!("\"v{version}\"")),
                                ("x-served", n.to_string()),
                            ],
                            format!("version {version}"),
                        )
                    }
                }
            }),
        )
        .with_state(calls.clone())
        .layer(cache);
    let key = "t:GET:shop.example/doc";
    fetch(&app, "/doc").await;
    assert_eq!(
        store.get(key).await.unwrap().unwrap().headers["x-served"],
        "1"
    );
    // The same representation: the stored response takes the HEAD's fields.
    let head = request(&app, Method::HEAD, "/doc").await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    let entry = store.get(key).await.unwrap().expect("still stored");
    assert_eq!(entry.headers["x-served"], "2");
    assert_eq!(&entry.body[..], b"version 1");
    // Another representation: the stored one is outdated, and goes.
    version.store(2, Ordering::SeqCst);
    request(&app, Method::HEAD, "/doc").await;
    assert!(store.get(key).await.unwrap().is_none());
    let get = fetch(&app, "/doc").await;
    assert_eq!(get.text(), "version 2");
    assert_eq!(calls.get(), 4);
}

#[tokio::test(start_paused = true)]
async fn an_interim_response_is_never_stored_or_replayed_rfc9110_15_2() {
    let calls = Calls::default();
    let (app, store) = status_app(&calls);
    // A service that (wrongly) returns a 103 or 102 as its response: passed through,
    // never stored, even with explicit freshness.
    for code in [102, 103] {
        let uri = format!("/status/{code}/max-age=60");
        for _ in 0..2 {
            let reply = fetch(&app, &uri).await;
            assert_eq!(reply.status.as_u16(), code);
            assert_eq!(reply.x_cache(), "UNCACHEABLE");
        }
        assert!(
            store
                .get(&format!("t:GET:shop.example{uri}"))
                .await
                .unwrap()
                .is_none()
        );
    }
    assert_eq!(calls.get(), 4);
}
