//! Redis hits through the layer on loopback, next to `redis-benchmark -t get` against the
//! same server in the same run.
//!
//! `cargo bench --features redis --bench redis_hit` starts its own `redis-server` on a free
//! loopback port (or uses `REDIS_URL`), stores one 1 KiB entry, then for each concurrency
//! runs a fixed number of hits through `CacheLayer<RedisStore>` (no HTTP in between) and
//! prints hits/s, p50 and p99, then the same for `redis-benchmark -t get -d 1024`.

#![allow(missing_docs)]
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_response_cache::{CacheLayer, RedisConfig, RedisStore, WriteMode};

const HITS_PER_RUN: usize = 100_000;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> (Option<Server>, String, u16) {
    if let Ok(url) = std::env::var("REDIS_URL") {
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(6379);
        return (None, url, port);
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (
        Some(Server(child)),
        format!("redis://127.0.0.1:{port}"),
        port,
    )
}

/// One request; its latency and whether it was a hit.
async fn hit<S, B>(service: &S) -> (Duration, bool)
where
    S: tower::Service<Request<()>, Response = Response<B>, Error = Infallible> + Clone,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let start = Instant::now();
    let response = service
        .clone()
        .oneshot(Request::get("/hello").body(()).unwrap())
        .await
        .unwrap();
    let cached = response.headers()["x-cache"] == "HIT";
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 1024);
    (start.elapsed(), cached)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let (_server, url, port) = start_redis();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    println!(
        "{:<44} {:>12} {:>10} {:>10}",
        "", "requests/s", "p50", "p99"
    );
    runtime.block_on(async {
        let config = RedisConfig {
            pool_size: 8,
            command_timeout: Duration::from_secs(1),
            ..RedisConfig::from_url(&url).unwrap()
        };
        let store = RedisStore::connect(config).await.unwrap();
        let counter = Arc::clone(&calls);
        let service = ServiceBuilder::new()
            .layer(CacheLayer::new(store).write_mode(WriteMode::Inline))
            .service(service_fn(move |_: Request<()>| {
                counter.fetch_add(1, Ordering::Relaxed);
                async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(vec![b'x'; 1024]))))
                }
            }));
        hit(&service).await; // stores the entry
        for concurrency in [1usize, 64] {
            let per_task = HITS_PER_RUN / concurrency;
            let started = Instant::now();
            let tasks: Vec<_> = (0..concurrency)
                .map(|_| {
                    let service = service.clone();
                    tokio::spawn(async move {
                        let mut latencies = Vec::with_capacity(per_task);
                        for _ in 0..per_task {
                            let (latency, cached) = hit(&service).await;
                            assert!(cached, "every measured request is a hit");
                            latencies.push(latency);
                        }
                        latencies
                    })
                })
                .collect();
            let mut latencies = Vec::with_capacity(HITS_PER_RUN);
            for task in tasks {
                latencies.extend(task.await.unwrap());
            }
            let elapsed = started.elapsed();
            latencies.sort();
            println!(
                "{:<44} {:>12.0} {:>10.1?} {:>10.1?}",
                format!("layer hit via RedisStore, 1 KiB, c={concurrency}"),
                latencies.len() as f64 / elapsed.as_secs_f64(),
                percentile(&latencies, 0.50),
                percentile(&latencies, 0.99),
            );
        }
    });
    assert_eq!(
        calls.load(Ordering::Relaxed),
        1,
        "the origin ran once: all else were hits"
    );

    for concurrency in [1, 64] {
        let output = Command::new("redis-benchmark")
            .args([
                "-p",
                &port.to_string(),
                "-t",
                "get",
                "-d",
                "1024",
                "-q",
                "--precision",
                "3",
            ])
            .args([
                "-n",
                &HITS_PER_RUN.to_string(),
                "-c",
                &concurrency.to_string(),
            ])
            .output();
        match output {
            Ok(output) => println!(
                "{:<44} {}",
                format!("redis-benchmark -t get -d 1024 -c {concurrency}"),
                String::from_utf8_lossy(&output.stdout)
                    .trim()
                    .replace('\r', " ")
                    .split("GET: ")
                    .last()
                    .unwrap_or_default()
            ),
            Err(error) => println!("redis-benchmark not run: {error}"),
        }
    }
}
