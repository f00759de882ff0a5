//! `examples/prometheus.rs` over HTTP: the app on 127.0.0.1, a real HTTP/1 client, and the
//! Prometheus text at `/metrics` scraped as Prometheus would.

#![allow(clippy::unwrap_used)]

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/prometheus.rs"]
mod prometheus;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

#[tokio::test]
async fn the_example_serves_the_cache_metrics_with_their_labels() {
    // The process's recorder: this test binary has no other test.
    let handle = prometheus::install_recorder().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(prometheus::serve(listener, handle));
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get = |path: &str| {
        let uri: http::Uri = format!("http://{addr}{path}").parse().unwrap();
        let client = client.clone();
        async move {
            let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
                .await
                .expect("answered in time")
                .unwrap();
            let status = response.status();
            let x_cache = response
                .headers()
                .get("x-cache")
                .map(|value| value.to_str().unwrap().to_owned());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, x_cache, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    assert_eq!(get("/users/1").await.1.as_deref(), Some("MISS"));
    assert_eq!(get("/users/1").await.1.as_deref(), Some("HIT"));
    assert_eq!(get("/users/1").await.1.as_deref(), Some("HIT"));
    assert_eq!(get("/users/2").await.1.as_deref(), Some("MISS"));

    let (status, x_cache, text) = get("/metrics").await;
    assert!(status.is_success());
    assert_eq!(x_cache, None, "the metrics route is not behind the cache");
    // A sample's value, by its metric name and labels (in any order).
    let sample = |name: &str, labels: &[&str]| -> Option<f64> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find(|line| {
                line.starts_with(&format!("{name}{{"))
                    && labels.iter().all(|label| line.contains(label))
            })
            .and_then(|line| line.rsplit(' ').next())
            .map(|value| value.parse().unwrap())
    };
    let requests = |outcome: &str| {
        sample(
            "http_cache_requests_total",
            &[
                r#"route="/users/{id}""#,
                r#"method="GET""#,
                &format!(r#"outcome="{outcome}""#),
            ],
        )
    };
    assert_eq!(requests("hit"), Some(2.0), "{text}");
    assert_eq!(requests("miss"), Some(2.0), "{text}");
    assert_eq!(
        sample("http_cache_stores_total", &[r#"route="/users/{id}""#]),
        Some(2.0)
    );
    assert_eq!(
        sample("http_cache_capacity_bytes", &[r#"store="memory""#]),
        Some((64u64 << 20) as f64)
    );
    // Described, with their types; the timings are histograms with the buckets set.
    assert!(
        text.contains("# TYPE http_cache_requests_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE http_cache_lookup_duration_seconds histogram"),
        "{text}"
    );
    assert_eq!(
        sample(
            "http_cache_lookup_duration_seconds_count",
            &[r#"route="/users/{id}""#]
        ),
        Some(4.0)
    );
    for bucket in prometheus::BUCKETS {
        assert!(
            sample(
                "http_cache_lookup_duration_seconds_bucket",
                &[&format!(r#"le="{bucket}""#)]
            )
            .is_some(),
            "bucket {bucket}: {text}"
        );
    }
    assert!(!text.contains("/users/1"), "no label holds a path: {text}");
    server.abort();
}
