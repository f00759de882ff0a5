//! The hit path in process: a memory hit through the service (1 KiB and 64 KiB bodies)
//! next to the same service without the cache, and key building.
//!
//! `cargo bench --bench hit` prints criterion's timings and, first, the heap allocations
//! one hit makes (counted by a wrapping global allocator).

// criterion's macros generate undocumented items.
#![allow(missing_docs)]
// A benchmark's setup may panic: it is not a request path.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_response_cache::key::{DefaultKeyBuilder, KeyBuilder};
use tower_response_cache::{CacheLayer, MemoryStore, WriteMode};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

fn origin(
    size: usize,
) -> impl Service<Request<()>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    let body = Bytes::from(vec![b'x'; size]);
    service_fn(move |_: Request<()>| {
        let body = body.clone();
        async move {
            let mut response = Response::new(Full::new(body));
            response
                .headers_mut()
                .insert("cache-control", "public, max-age=60".parse().unwrap());
            response
                .headers_mut()
                .insert("content-type", "application/octet-stream".parse().unwrap());
            Ok::<_, Infallible>(response)
        }
    })
}

fn request() -> Request<()> {
    Request::get("/hello?b=2&a=1").body(()).unwrap()
}

async fn round_trip<S, B>(service: &S) -> usize
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible> + Clone,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    drain(service.clone().oneshot(request()).await.unwrap()).await
}

fn hits(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for size in [1024, 64 * 1024] {
        let floor = origin(size);
        let cached = ServiceBuilder::new()
            .layer(CacheLayer::new(MemoryStore::new(64 << 20)).write_mode(WriteMode::Inline))
            .service(origin(size));
        // Warm: the first request stores the entry.
        runtime.block_on(round_trip(&cached));

        let region = Region::new(GLOBAL);
        const N: usize = 10_000;
        runtime.block_on(async {
            for _ in 0..N {
                black_box(round_trip(&cached).await);
            }
        });
        let stats = region.change();
        println!(
            "memory hit, {size} B body: {:.1} allocations and {:.0} bytes allocated per hit",
            stats.allocations as f64 / N as f64,
            stats.bytes_allocated as f64 / N as f64,
        );
        let region = Region::new(GLOBAL);
        runtime.block_on(async {
            for _ in 0..N {
                black_box(round_trip(&floor).await);
            }
        });
        let stats = region.change();
        println!(
            "no cache, {size} B body: {:.1} allocations per request",
            stats.allocations as f64 / N as f64,
        );

        let mut group = c.benchmark_group(format!("service_{}k", size / 1024));
        group.bench_function("no_cache", |b| {
            b.to_async(&runtime).iter(|| round_trip(&floor))
        });
        group.bench_function("memory_hit", |b| {
            b.to_async(&runtime).iter(|| round_trip(&cached))
        });
        group.finish();
    }
}

/// A miss through the service next to the same request without the cache: every request
/// has a new key, so the layer builds it, looks it up, joins and lands a flight, decides
/// the response is storable, copies the body and writes the entry (inline or on a spawned
/// task).
fn misses(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let unique = || {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Request::get(format!("/items/{n}")).body(()).unwrap()
    };
    let floor = origin(1024);
    let mut group = c.benchmark_group("miss_1k");
    group.bench_function("no_cache", |b| {
        b.to_async(&runtime).iter(|| {
            let request = unique();
            let floor = floor.clone();
            async move { drain(floor.oneshot(request).await.unwrap()).await }
        })
    });
    for (name, mode) in [
        ("memory_miss_inline", WriteMode::Inline),
        ("memory_miss_background", WriteMode::Background),
    ] {
        // A store that fills up and then evicts: the steady state of a busy cache.
        let cached = ServiceBuilder::new()
            .layer(CacheLayer::new(MemoryStore::new(64 << 20)).write_mode(mode))
            .service(origin(1024));
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| {
                let request = unique();
                let cached = cached.clone();
                async move { drain(cached.oneshot(request).await.unwrap()).await }
            })
        });
    }
    group.finish();
}

async fn drain<B>(response: Response<B>) -> usize
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .len()
}

/// The policy decisions on every request: request directives, the response's storability
/// and TTL, a conditional request against a stored response.
fn policy(c: &mut Criterion) {
    use tower_response_cache::__bench;
    let headers = |pairs: &[(&'static str, &'static str)]| {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, http::HeaderValue::from_static(value));
        }
        map
    };
    let plain = headers(&[("accept", "*/*"), ("user-agent", "bench")]);
    let directives = headers(&[
        ("cache-control", "max-age=30, no-transform"),
        ("pragma", "x"),
    ]);
    let response = headers(&[
        (
            "cache-control",
            "public, max-age=60, stale-while-revalidate=30",
        ),
        ("content-type", "application/json"),
        ("etag", "\"5f3a-1b2c\""),
        ("date", "Sat, 01 Jan 2000 00:00:00 GMT"),
        ("expires", "Sat, 01 Jan 2000 00:01:00 GMT"),
    ]);
    let conditional = headers(&[("if-none-match", "\"a\", W/\"5f3a-1b2c\"")]);
    let now = std::time::SystemTime::now();
    let mut group = c.benchmark_group("policy");
    group.bench_function("request_plain", |b| {
        b.iter(|| __bench::request_policy(black_box(&plain)))
    });
    group.bench_function("request_directives", |b| {
        b.iter(|| __bench::request_policy(black_box(&directives)))
    });
    group.bench_function("response_storable_ttl", |b| {
        b.iter(|| __bench::response_policy(http::StatusCode::OK, black_box(&response), now))
    });
    group.bench_function("if_none_match", |b| {
        b.iter(|| __bench::not_modified(black_box(&response), black_box(&conditional)))
    });
    group.finish();
}

fn keys(c: &mut Criterion) {
    let builder = DefaultKeyBuilder::new().drop_query_param("utm_*");
    let (plain, ()) = Request::get("/users/42").body(()).unwrap().into_parts();
    let (query, ()) = Request::get("/search?q=tower&page=2&utm_source=x&lang=en")
        .body(())
        .unwrap()
        .into_parts();
    let (escaped, ()) = Request::get("/files/%7euser/a%2fb?name=%41%42c&x=%zz")
        .body(())
        .unwrap()
        .into_parts();
    let mut group = c.benchmark_group("key");
    group.bench_function("path_only", |b| {
        b.iter(|| builder.build_key(black_box(&plain)))
    });
    group.bench_function("sorted_query", |b| {
        b.iter(|| builder.build_key(black_box(&query)))
    });
    group.bench_function("normalized_escapes", |b| {
        b.iter(|| builder.build_key(black_box(&escaped)))
    });
    group.finish();
}

fn sample_entry(body: usize) -> tower_response_cache::CachedResponse {
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    headers.insert("cache-control", "public, max-age=60".parse().unwrap());
    headers.insert("etag", "\"5f3a-1b2c\"".parse().unwrap());
    let mut entry = tower_response_cache::CachedResponse::new(
        http::StatusCode::OK,
        headers,
        Bytes::from(vec![b'x'; body]),
    );
    entry.ttl = std::time::Duration::from_secs(60);
    entry
}

fn codecs(c: &mut Criterion) {
    use tower_response_cache::codec::{BinaryCodec, Codec, JsonCodec};
    let entry = sample_entry(1024);
    let mut group = c.benchmark_group("codec_1k");
    for (name, codec) in [("binary", &BinaryCodec as &dyn Codec), ("json", &JsonCodec)] {
        let encoded = codec.encode(&entry);
        group.bench_function(format!("{name}_encode"), |b| {
            b.iter(|| codec.encode(black_box(&entry)))
        });
        group.bench_function(format!("{name}_decode"), |b| {
            b.iter(|| codec.decode_shared(black_box(&encoded)).unwrap())
        });
    }
    group.finish();
}

/// Heap bytes a `MemoryStore` entry costs beyond its key, header names and values, and body,
/// for entries stored through the service (their real stored form), next to what moka alone
/// costs per entry for the same keys.
fn memory_overhead(_: &mut Criterion) {
    // Not a criterion benchmark, so criterion's filter does not skip it: this does.
    let filter = std::env::args().skip(1).find(|arg| !arg.starts_with('-'));
    if filter.is_some_and(|filter| !"memory_overhead".contains(filter.as_str())) {
        return;
    }
    let moka = moka_bytes_per_entry();
    println!(
        "moka alone (String key, small value, weigher, per-entry expiry): {moka:.0} bytes per entry beyond the key"
    );
    for headers in [&[][..], &TYPICAL_HEADERS[..]] {
        let (per_entry, payload, stored_headers) = bytes_per_entry(headers);
        println!(
            "memory store, {stored_headers} stored headers: {per_entry:.0} heap bytes per entry, of which {payload:.0} are key + headers + body: overhead {:.0} bytes per entry ({:.0} beyond moka's own)",
            per_entry - payload,
            per_entry - payload - moka,
        );
    }
}

const TYPICAL_HEADERS: [(&str, &str); 4] = [
    ("content-type", "application/json"),
    ("etag", "\"5f3a-1b2c\""),
    ("last-modified", "Sat, 01 Jan 2000 00:00:00 GMT"),
    ("x-request-id", "0b5c1a4e-6f5d-4d1e-9d39-0e8f0f1c2a3b"),
];

const ENTRIES: usize = 20_000;

/// Stores `ENTRIES` responses (1 KiB body, `cache-control` plus `headers`) through the
/// service; returns heap bytes per entry, payload bytes per entry (key, header names and
/// values, body, as stored), and the number of stored headers.
fn bytes_per_entry(headers: &'static [(&'static str, &'static str)]) -> (f64, f64, usize) {
    use tower_response_cache::store::Store;
    let store = MemoryStore::new(1 << 30);
    let body = Bytes::from(vec![b'x'; 1024]);
    let origin = service_fn(move |_: Request<()>| {
        let mut response = Response::new(Full::new(body.clone()));
        response
            .headers_mut()
            .insert("cache-control", "public, max-age=600".parse().unwrap());
        for (name, value) in headers {
            response.headers_mut().insert(*name, value.parse().unwrap());
        }
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let service = ServiceBuilder::new()
        .layer(CacheLayer::new(store.clone()).write_mode(WriteMode::Inline))
        .service(origin);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let uri = |i: usize| format!("/items/{i:08}");
    // Warm the layer's lazily built parts (stats, rendered headers) first.
    runtime.block_on(async {
        let response = service
            .clone()
            .oneshot(Request::get("/warm").body(()).unwrap());
        let _ = response.await.unwrap().into_body().collect().await;
    });
    let region = Region::new(GLOBAL);
    runtime.block_on(async {
        for i in 0..ENTRIES {
            let request = Request::get(uri(i)).body(()).unwrap();
            let response = service.clone().oneshot(request).await.unwrap();
            let _ = response.into_body().collect().await.unwrap();
        }
    });
    store.run_pending_tasks();
    let stats = region.change();
    // A reallocation is counted in both totals already (its growth or its shrinking).
    let net = stats.bytes_allocated as f64 - stats.bytes_deallocated as f64;
    let (payload, stored_headers) = runtime.block_on(async {
        let mut payload = 0;
        let mut stored_headers = 0;
        for i in 0..ENTRIES {
            let key = format!("cache:GET:{}", uri(i));
            let entry = store.get(&key).await.unwrap().expect("stored");
            stored_headers = entry.headers.len();
            payload += key.len()
                + entry.body.len()
                + entry
                    .headers
                    .iter()
                    .map(|(name, value)| name.as_str().len() + value.len())
                    .sum::<usize>();
        }
        (payload, stored_headers)
    });
    // The store's own account of its size (the weigher's estimates) against the heap.
    println!(
        "memory store weighs {:.0} bytes per entry (heap: {:.0})",
        store.weighted_size() as f64 / ENTRIES as f64,
        net / ENTRIES as f64
    );
    (
        net / ENTRIES as f64,
        payload as f64 / ENTRIES as f64,
        stored_headers,
    )
}

/// moka's own cost per entry: the same keys, a value the size of the store's slot, the same
/// builder settings.
fn moka_bytes_per_entry() -> f64 {
    #[derive(Clone)]
    // The store's slot: an `Arc` and a `Duration`.
    #[allow(dead_code)]
    struct Slot(std::sync::Arc<()>, std::time::Duration);
    struct Expiry;
    impl moka::Expiry<String, Slot> for Expiry {
        fn expire_after_create(
            &self,
            _: &String,
            slot: &Slot,
            _: std::time::Instant,
        ) -> Option<std::time::Duration> {
            Some(slot.1)
        }
    }
    let cache: moka::sync::Cache<String, Slot> = moka::sync::Cache::builder()
        .max_capacity(1 << 30)
        .weigher(|key: &String, _: &Slot| key.len() as u32 + 1024)
        .expire_after(Expiry)
        .build();
    let unit = std::sync::Arc::new(());
    let mut keys = 0;
    let region = Region::new(GLOBAL);
    for i in 0..ENTRIES {
        let key = format!("cache:GET:/items/{i:08}");
        keys += key.len();
        cache.insert(
            key,
            Slot(
                std::sync::Arc::clone(&unit),
                std::time::Duration::from_secs(600),
            ),
        );
    }
    cache.run_pending_tasks();
    let stats = region.change();
    // A reallocation is counted in both totals already (its growth or its shrinking).
    let net = stats.bytes_allocated as f64 - stats.bytes_deallocated as f64;
    (net - keys as f64) / ENTRIES as f64
}

criterion_group!(benches, hits, misses, policy, keys, codecs, memory_overhead);
criterion_main!(benches);
