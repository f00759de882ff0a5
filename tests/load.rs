//! Floods on the memory store, in process and bounded: unique URLs (cache busting) must not
//! grow the process past the store's capacity plus a stated overhead, and a flood of
//! refreshes must not multiply origin calls. Each prints what it measured (run with
//! `--nocapture --test-threads=1`, as `scripts/test.sh` does: the memory figures are the
//! whole process's).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_response_cache::store::PutIf;
use tower_response_cache::{CacheLayer, MemoryStore, WriteMode};

/// The process's resident memory, in bytes (Linux).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

async fn get_body(app: &Router, request: Request<Body>) -> (String, bytes::Bytes) {
    let response = app.clone().oneshot(request).await.unwrap();
    let x_cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (x_cache, body)
}

/// What the process may hold beyond the store's capacity after the flood: the allocator's
/// free lists and fragmentation, the runtime, and the test's own tasks.
const OVERHEAD: u64 = 48 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_a_unique_url_flood_stays_within_the_store_capacity() {
    const CAPACITY: u64 = 32 << 20;
    const REQUESTS: usize = 120_000;
    const BODY: usize = 2048;
    let store = MemoryStore::new(CAPACITY);
    let cache = CacheLayer::new(store.clone()).write_mode(WriteMode::Inline);
    let app = Router::new()
        .route(
            "/bust/{n}",
            get(|Path(n): Path<u64>| async move {
                // Every body its own bytes, as distinct pages are.
                let mut body = vec![b'a' + (n % 26) as u8; BODY];
                body[..8].copy_from_slice(&n.to_be_bytes());
                body
            }),
        )
        .layer(cache);
    let before = rss();
    let mut peak = before;
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let app = app.clone();
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= REQUESTS {
                        return;
                    }
                    let request = Request::get(format!("/bust/{n}?utm={n}"))
                        .body(Body::empty())
                        .unwrap();
                    let (x_cache, body) = get_body(&app, request).await;
                    assert_eq!((x_cache.as_str(), body.len()), ("MISS", BODY));
                }
            })
        })
        .collect();
    while !tasks.iter().all(tokio::task::JoinHandle::is_finished) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        peak = peak.max(rss());
    }
    for task in tasks {
        task.await.unwrap();
    }
    store.run_pending_tasks();
    let after = rss();
    peak = peak.max(after);
    let offered = (REQUESTS * BODY) as u64;
    println!(
        "[load] unique-url flood | {REQUESTS} misses of {BODY} B ({} MiB offered) into a {} MiB store | entries {} weighing {:.1} MiB | RSS before {:.1} MiB, peak {:.1} MiB (+{:.1}), after {:.1} MiB (+{:.1})",
        offered >> 20,
        CAPACITY >> 20,
        store.entry_count(),
        store.weighted_size() as f64 / 1048576.0,
        before as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        peak.saturating_sub(before) as f64 / 1048576.0,
        after as f64 / 1048576.0,
        after.saturating_sub(before) as f64 / 1048576.0,
    );
    assert!(store.weighted_size() <= CAPACITY);
    assert!(
        peak.saturating_sub(before) <= CAPACITY + OVERHEAD,
        "the process grew by {} MiB",
        peak.saturating_sub(before) >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_a_refresh_flood_makes_one_origin_call_per_key_at_a_time() {
    const KEYS: usize = 4;
    const REQUESTS: usize = 1200;
    #[derive(Default)]
    struct Origin {
        in_flight: Mutex<HashMap<String, usize>>,
        most: Mutex<HashMap<String, usize>>,
        calls: AtomicUsize,
    }
    let origin = Arc::new(Origin::default());
    let cache = CacheLayer::new(MemoryStore::new(16 << 20));
    let handler = {
        let origin = Arc::clone(&origin);
        move |Path(key): Path<String>| {
            let origin = Arc::clone(&origin);
            async move {
                origin.calls.fetch_add(1, Ordering::SeqCst);
                {
                    let mut in_flight = origin.in_flight.lock().unwrap();
                    let now = in_flight.entry(key.clone()).or_default();
                    *now += 1;
                    let mut most = origin.most.lock().unwrap();
                    let most = most.entry(key.clone()).or_default();
                    *most = (*most).max(*now);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                *origin.in_flight.lock().unwrap().get_mut(&key).unwrap() -= 1;
                format!("page {key}")
            }
        }
    };
    let app = Router::new()
        .route("/flood/{key}", get(handler))
        .layer(cache);
    let forcing = [
        ("cache-control", "no-cache"),
        ("x-cache-bypass", "1"),
        ("pragma", "no-cache"),
        ("cache-control", "max-age=0"),
    ];
    let limit = Arc::new(tokio::sync::Semaphore::new(200));
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let app = app.clone();
            let limit = Arc::clone(&limit);
            let (name, value) = forcing[i % forcing.len()];
            tokio::spawn(async move {
                let _permit = limit.acquire().await.unwrap();
                let key = i % KEYS;
                let request = Request::get(format!("/flood/{key}"))
                    .header(name, value)
                    .body(Body::empty())
                    .unwrap();
                let (_, body) = get_body(&app, request).await;
                assert_eq!(body, format!("page {key}"));
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let most = origin.most.lock().unwrap().clone();
    let calls = origin.calls.load(Ordering::SeqCst);
    println!(
        "[load] refresh flood | {REQUESTS} refreshes (no-cache, bypass header, Pragma, max-age=0), 200 at a time, over {KEYS} keys | origin calls {calls} | most in flight per key {most:?}"
    );
    assert_eq!(most.len(), KEYS);
    for (key, most) in most {
        assert_eq!(most, 1, "/flood/{key}: one origin call at a time");
    }
    assert!(
        calls < REQUESTS / 2,
        "refreshes shared origin calls: {calls}"
    );
}

/// A tag of 100 000 entries on the memory store, purged through the handle: the purge's
/// rate, the other tag's entries kept, and the tag index emptied of the purged ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_a_tag_of_100_000_entries_is_purged_from_the_memory_store() {
    use std::time::Instant;
    use tower_response_cache::{CachedResponse, store::Store};
    let store = MemoryStore::new(512 * 1024 * 1024);
    let cache = CacheLayer::new(store.clone()).namespace("bulk");
    let handle = cache.handle();
    let started = Instant::now();
    for id in 0..101_000u32 {
        let mut entry =
            CachedResponse::new(http::StatusCode::OK, http::HeaderMap::new(), "page".into());
        entry.ttl = Duration::from_secs(300);
        entry.tags = vec![if id < 100_000 { "big" } else { "small" }.to_owned()];
        let key = format!("bulk:GET:/p/{id}");
        store
            .put(
                &key,
                Arc::new(entry),
                Duration::from_secs(300),
                PutIf::Always,
            )
            .await
            .unwrap();
    }
    let filled = started.elapsed();
    store.run_pending_tasks();
    assert_eq!(store.tag_index_len(), (2, 101_000));

    let started = Instant::now();
    let purged = handle.invalidate_tag("big").await.unwrap();
    let took = started.elapsed();
    println!(
        "[memory purge] 101 000 tagged entries stored in {filled:?}; purged the 100 000 of one \
         tag in {took:?} ({:.0} entries/s)",
        purged as f64 / took.as_secs_f64()
    );
    assert_eq!(purged, 100_000);
    store.run_pending_tasks();
    assert_eq!(store.entry_count(), 1_000);
    assert_eq!(
        store.tag_index_len(),
        (1, 1_000),
        "the purged entries left the index"
    );
    assert!(store.get("bulk:GET:/p/100500").await.unwrap().is_some());
}
