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
    let response = service.clone().oneshot(request()).await.unwrap();
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .len()
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

/// Heap bytes a `MemoryStore` entry costs beyond its key, header names and values, and body.
fn memory_overhead(_: &mut Criterion) {
    for headers in [true, false] {
        let (per_entry, payload) = bytes_per_entry(headers);
        println!(
            "memory store, {} headers: {per_entry:.0} heap bytes per entry, of which {payload:.0} are key + headers + body: overhead {:.0} bytes per entry",
            if headers { 3 } else { 0 },
            per_entry - payload,
        );
    }
}

fn bytes_per_entry(with_headers: bool) -> (f64, f64) {
    use std::sync::Arc;
    use tower_response_cache::Store;
    const N: usize = 20_000;
    let store = MemoryStore::new(1 << 30);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let make = || {
        let mut entry = sample_entry(1024);
        if !with_headers {
            entry.headers = http::HeaderMap::new();
        }
        entry
    };
    let sample = make();
    let header_bytes: usize = sample
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    let mut payload = 0;
    let region = Region::new(GLOBAL);
    runtime.block_on(async {
        for i in 0..N {
            let key = format!("app:GET:/items/{i:08}");
            payload += key.len() + sample.body.len() + header_bytes;
            store
                .put(&key, Arc::new(make()), std::time::Duration::from_secs(600))
                .await
                .unwrap();
        }
    });
    store.run_pending_tasks();
    let stats = region.change();
    let net = stats.bytes_allocated as f64 - stats.bytes_deallocated as f64
        + stats.bytes_reallocated as f64;
    (net / N as f64, payload as f64 / N as f64)
}

criterion_group!(benches, hits, keys, codecs, memory_overhead);
criterion_main!(benches);
