//! What both integration test crates need of a client: send a request to a `Router`, read
//! the whole reply, count handler runs. Included with `#[path]` (each test crate is its own).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// Counts handler runs.
#[derive(Clone, Default)]
pub(crate) struct Calls(Arc<AtomicUsize>);

impl Calls {
    pub(crate) fn hit(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A response as the client sees it.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub(crate) fn x_cache(&self) -> &str {
        self.header("x-cache").unwrap_or("<none>")
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub(crate) async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub(crate) async fn fetch(app: &Router, uri: &str) -> Reply {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

pub(crate) async fn get_with(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(app, request.body(Body::empty()).unwrap()).await
}

pub(crate) async fn post(app: &Router, uri: &str) -> Reply {
    send(app, Request::post(uri).body(Body::empty()).unwrap()).await
}

/// `callers` concurrent `get_or_insert_with` of one key, spread over `caches` in turn, each
/// load taking `delay`: checks that every caller got the value, and returns how many
/// times the loader ran.
pub(crate) async fn concurrent_loads(
    caches: &[tower_response_cache::value::ValueCache],
    callers: usize,
    delay: std::time::Duration,
) -> usize {
    let calls = Calls::default();
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let cache = caches[i % caches.len()].clone();
            let calls = calls.clone();
            tokio::spawn(async move {
                cache
                    .get_or_insert_with("hot", std::time::Duration::from_secs(60), || async move {
                        calls.hit();
                        tokio::time::sleep(delay).await;
                        Ok::<_, std::io::Error>("the value".to_owned())
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), "the value");
    }
    calls.get()
}

/// A value to cache in the value-cache tests.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct User {
    pub(crate) id: u64,
    pub(crate) name: String,
}

/// User 42.
pub(crate) fn alice() -> User {
    User {
        id: 42,
        name: "alice".into(),
    }
}
