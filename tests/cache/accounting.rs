//! Stats that agree with the headers: every request moves exactly one outcome counter, the
//! one its `x-cache` value (and, for `STALE`, its `Cache-Status` detail) maps to. One test
//! drives every path the layer has.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{HeaderMap, Request, StatusCode};
use tower_response_cache::stats::Counts;
use tower_response_cache::{CacheLayer, MemoryStore, WriteMode};

use crate::harness::{Reply, get_with, send};

/// The outcome counters, by name.
fn outcomes(counts: &Counts) -> [(&'static str, u64); 8] {
    [
        ("hits", counts.hits),
        ("misses", counts.misses),
        ("refreshes", counts.refreshes),
        ("bypasses", counts.bypasses),
        ("passes", counts.passes),
        ("stale_if_error", counts.stale_if_error),
        ("stale_while_revalidate", counts.stale_while_revalidate),
        ("revalidated", counts.revalidated),
    ]
}

/// The counter a response's headers say it moved.
fn counter_for(reply: &Reply) -> &'static str {
    let status = reply.header("cache-status").unwrap_or_default();
    match reply.header("x-cache") {
        Some("HIT") => "hits",
        Some("MISS" | "UNCACHEABLE") => "misses",
        Some("REFRESH") => "refreshes",
        Some("BYPASS") => "bypasses",
        Some("REVALIDATED") => "revalidated",
        Some("STALE") if status.ends_with("detail=stale-if-error") => "stale_if_error",
        Some("STALE") if status.ends_with("detail=stale-while-revalidate") => {
            "stale_while_revalidate"
        }
        None => "passes",
        other => panic!("an x-cache value without a counter: {other:?}"),
    }
}

struct Fixture {
    app: Router,
    cache: CacheLayer,
    failing: Arc<AtomicBool>,
}

fn fixture() -> Fixture {
    let failing = Arc::new(AtomicBool::new(false));
    let cache = CacheLayer::new(MemoryStore::new(1 << 20))
        .namespace("t")
        .write_mode(WriteMode::Inline)
        .clock(tower_response_cache::clock::TokioClock::new());
    let down = Arc::clone(&failing);
    let app = Router::new()
        .route(
            "/fresh",
            get(|| async { ([("cache-control", "max-age=60")], "fresh") })
                .post(|| async { "posted" }),
        )
        .route(
            "/private",
            get(|| async { ([("cache-control", "private")], "mine") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                ([("cache-control", "max-age=60")], "slow")
            }),
        )
        .route(
            "/flaky",
            get(move || {
                let down = down.load(Ordering::SeqCst);
                async move {
                    if down {
                        return (
                            StatusCode::SERVICE_UNAVAILABLE,
                            [("cache-control", "no-store")],
                            "down",
                        );
                    }
                    (
                        StatusCode::OK,
                        [("cache-control", "max-age=1, stale-if-error=60")],
                        "up",
                    )
                }
            }),
        )
        .route(
            "/swr",
            get(|| async {
                (
                    [("cache-control", "max-age=1, stale-while-revalidate=60")],
                    "swr",
                )
            }),
        )
        .route(
            "/validated",
            get(|headers: HeaderMap| async move {
                if headers
                    .get("if-none-match")
                    .is_some_and(|tag| tag == "\"v1\"")
                {
                    return (
                        StatusCode::NOT_MODIFIED,
                        [("etag", "\"v1\""), ("cache-control", "max-age=60")],
                        "",
                    );
                }
                (
                    StatusCode::OK,
                    [("etag", "\"v1\""), ("cache-control", "max-age=60")],
                    "validated",
                )
            }),
        )
        .layer(cache.clone());
    Fixture {
        app,
        cache,
        failing,
    }
}

impl Fixture {
    /// Sends the request and checks that exactly the counter its headers name moved, by
    /// one; returns the reply.
    async fn check(&self, request: Request<Body>, label: &str) -> Reply {
        let before = self.cache.stats().snapshot().total;
        let reply = send(&self.app, request).await;
        self.moved_by_one(&before, counter_for(&reply), label);
        reply
    }

    fn moved_by_one(&self, before: &Counts, expected: &str, label: &str) {
        let after = self.cache.stats().snapshot().total;
        for ((name, was), (_, now)) in outcomes(before).iter().zip(outcomes(&after)) {
            let moved = now - was;
            let want = u64::from(*name == expected);
            assert_eq!(moved, want, "{label}: {name} moved by {moved}");
        }
    }
}

fn request(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::empty()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn every_path_moves_the_one_counter_its_headers_name() {
    let f = fixture();
    let miss = f.check(request("/fresh", &[]), "miss").await;
    assert_eq!(miss.x_cache(), "MISS");
    let hit = f.check(request("/fresh", &[]), "hit").await;
    assert_eq!(hit.x_cache(), "HIT");
    let head = f
        .check(
            Request::head("/fresh").body(Body::empty()).unwrap(),
            "head hit",
        )
        .await;
    assert_eq!(head.x_cache(), "HIT");
    let conditional = f
        .check(request("/validated", &[]), "miss with a validator")
        .await;
    assert_eq!(conditional.x_cache(), "MISS");
    let not_modified = f
        .check(
            request("/validated", &[("if-none-match", "\"v1\"")]),
            "304 hit",
        )
        .await;
    assert_eq!(
        (not_modified.status, not_modified.x_cache()),
        (StatusCode::NOT_MODIFIED, "HIT")
    );
    let revalidated = f
        .check(
            request("/validated", &[("cache-control", "no-cache")]),
            "revalidated",
        )
        .await;
    assert_eq!(revalidated.x_cache(), "REVALIDATED");
    let uncacheable = f.check(request("/private", &[]), "uncacheable").await;
    assert_eq!(uncacheable.x_cache(), "UNCACHEABLE");
    let only_if_cached = f
        .check(
            request("/nothing", &[("cache-control", "only-if-cached")]),
            "only-if-cached",
        )
        .await;
    assert_eq!(
        (only_if_cached.status, only_if_cached.x_cache()),
        (StatusCode::GATEWAY_TIMEOUT, "MISS")
    );
    let refresh = f
        .check(request("/fresh", &[("x-cache-bypass", "1")]), "refresh")
        .await;
    assert_eq!(refresh.x_cache(), "REFRESH");
    let bypass = f
        .check(
            request("/fresh", &[("cache-control", "no-store")]),
            "bypass",
        )
        .await;
    assert_eq!(bypass.x_cache(), "BYPASS");
    let pass = f
        .check(Request::post("/fresh").body(Body::empty()).unwrap(), "pass")
        .await;
    assert_eq!(pass.header("x-cache"), None);

    // Coalesced: ten at once, one fetch; every answer from the cache is a hit, and those
    // that waited for the fetch are counted as coalesced too.
    let before = f.cache.stats().snapshot().total;
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let app = f.app.clone();
            tokio::spawn(async move { get_with(&app, "/slow", &[]).await })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    let after = f.cache.stats().snapshot().total;
    let by = |counter: &str| {
        replies
            .iter()
            .filter(|reply| counter_for(reply) == counter)
            .count() as u64
    };
    assert_eq!((by("misses"), by("hits")), (1, 9));
    assert_eq!(after.misses - before.misses, 1);
    assert_eq!(after.hits - before.hits, 9);
    let collapsed = replies
        .iter()
        .filter(|reply| {
            reply
                .header("cache-status")
                .is_some_and(|s| s.ends_with("collapsed"))
        })
        .count() as u64;
    assert_eq!(after.coalesced - before.coalesced, collapsed);
    assert!(collapsed > 0, "some waited for the fetch");

    // Stale: past `max-age=1`, the origin down (stale-if-error), or refreshed in the
    // background (stale-while-revalidate).
    f.check(request("/flaky", &[]), "flaky miss").await;
    f.check(request("/swr", &[]), "swr miss").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    f.failing.store(true, Ordering::SeqCst);
    let stale = f.check(request("/flaky", &[]), "stale-if-error").await;
    assert_eq!((stale.x_cache(), stale.text().as_str()), ("STALE", "up"));
    let swr = f
        .check(request("/swr", &[]), "stale-while-revalidate")
        .await;
    assert_eq!(swr.x_cache(), "STALE");
    // The background refresh counts no request of its own.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = f.cache.stats().snapshot().total;
    let refreshed = f
        .check(request("/swr", &[]), "after the background refresh")
        .await;
    assert_eq!(refreshed.x_cache(), "HIT");
    f.moved_by_one(&before, "hits", "nothing but the hit");

    // Every request so far is one outcome.
    let total = f.cache.stats().snapshot().total;
    let sum: u64 = outcomes(&total).iter().map(|(_, count)| count).sum();
    assert_eq!(sum, 26, "{total:?}");
}
