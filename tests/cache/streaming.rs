//! Streaming misses: bytes reach the client as they are produced; the copy is capped, and
//! only a complete body is stored.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_response_cache::{CacheBody, CacheLayer, MemoryStore, store::Store};

use crate::harness::{Calls, entry_count, fetch, layer, snapshot, stored};

/// A body fed by the test, frame by frame.
struct ChannelBody(mpsc::UnboundedReceiver<Result<Frame<Bytes>, io::Error>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0.poll_recv(cx)
    }
}

type Sender = mpsc::UnboundedSender<Result<Frame<Bytes>, io::Error>>;

/// A plain tower service (no axum) whose responses stream what the test sends; each call
/// takes the next prepared body, with optional response headers.
#[derive(Clone, Default)]
struct Streaming {
    bodies: Arc<Mutex<VecDeque<(ChannelBody, HeaderMap)>>>,
    calls: Calls,
}

impl Streaming {
    fn prepare(&self, headers: &[(&'static str, &'static str)]) -> Sender {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_static(value));
        }
        self.bodies
            .lock()
            .unwrap()
            .push_back((ChannelBody(rx), map));
        tx
    }

    fn service(
        &self,
        cache: CacheLayer,
    ) -> impl Service<
        Request<()>,
        Response = Response<CacheBody<ChannelBody>>,
        Error = Infallible,
        Future: Send,
    > + Clone
    + use<> {
        let this = self.clone();
        ServiceBuilder::new()
            .layer(cache)
            .service_fn(move |_req: Request<()>| {
                let this = this.clone();
                async move {
                    this.calls.hit();
                    let (body, headers) = this
                        .bodies
                        .lock()
                        .unwrap()
                        .pop_front()
                        .expect("a prepared body");
                    let mut response = Response::new(body);
                    *response.headers_mut() = headers;
                    Ok::<_, Infallible>(response)
                }
            })
    }
}

fn data(bytes: &'static [u8]) -> Result<Frame<Bytes>, io::Error> {
    Ok(Frame::data(Bytes::from_static(bytes)))
}

async fn call<S>(service: &S, method: Method) -> Response<CacheBody<ChannelBody>>
where
    S: Service<Request<()>, Response = Response<CacheBody<ChannelBody>>, Error = Infallible>
        + Clone,
{
    let request = Request::builder()
        .method(method)
        .uri("/s")
        .body(())
        .unwrap();
    service.clone().oneshot(request).await.unwrap()
}

async fn next_data(body: &mut CacheBody<ChannelBody>) -> Bytes {
    body.frame().await.unwrap().unwrap().into_data().unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_client_receives_bytes_before_the_body_completes() {
    let origin = Streaming::default();
    let (cache, store) = layer();
    let service = origin.service(cache.clone());
    let tx = origin.prepare(&[]);
    tx.send(data(b"first ")).unwrap();
    let response = call(&service, Method::GET).await;
    assert_eq!(response.headers()["x-cache"], "MISS");
    let mut body = response.into_body();
    // The second chunk does not exist yet: what arrives was streamed, not buffered.
    assert_eq!(next_data(&mut body).await, "first ");
    assert!(
        !stored(&store, "t:GET:/s").await,
        "nothing is stored before the end"
    );
    tx.send(data(b"second")).unwrap();
    drop(tx);
    assert_eq!(next_data(&mut body).await, "second");
    assert!(body.frame().await.is_none());

    let entry = store
        .get("t:GET:/s")
        .await
        .unwrap()
        .expect("stored once complete");
    assert_eq!(entry.body, "first second");
    let hit = call(&service, Method::GET).await;
    assert_eq!(hit.headers()["x-cache"], "HIT");
    assert_eq!(
        hit.into_body().collect().await.unwrap().to_bytes(),
        "first second"
    );
    assert_eq!(origin.calls.get(), 1);
    assert_eq!(snapshot(&cache).total.stores, 1);
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_cap_streams_whole_and_is_not_stored() {
    let origin = Streaming::default();
    let (cache, store) = layer();
    let cache = cache.max_body_size(10);
    let service = origin.service(cache.clone());
    let tx = origin.prepare(&[]);
    for chunk in [b"12345678", b"abcdefgh", b"ABCDEFGH"] {
        tx.send(data(chunk)).unwrap();
    }
    drop(tx);
    let body = call(&service, Method::GET)
        .await
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, "12345678abcdefghABCDEFGH");
    assert_eq!(entry_count(&store).await, 0);
    assert_eq!(snapshot(&cache).total.not_stored["too-large"], 1);
}

#[tokio::test(start_paused = true)]
async fn a_body_still_streaming_as_the_head_leaves_is_not_announced_as_stored() {
    // RFC 9211 §2.6: `stored` only when true. The body's end is not known as the head
    // leaves; here it then grows past the cap and is not stored.
    let origin = Streaming::default();
    let (cache, store) = layer();
    let cache = cache.max_body_size(10);
    let service = origin.service(cache.clone());
    let tx = origin.prepare(&[]);
    let response = call(&service, Method::GET).await;
    assert_eq!(response.headers()["x-cache"], "MISS");
    assert_eq!(
        response.headers()["cache-status"],
        "tower-response-cache; fwd=miss"
    );
    for chunk in [b"12345678", b"abcdefgh"] {
        tx.send(data(chunk)).unwrap();
    }
    drop(tx);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "12345678abcdefgh");
    assert_eq!(entry_count(&store).await, 0);
    assert_eq!(snapshot(&cache).total.not_stored["too-large"], 1);
    assert_eq!(snapshot(&cache).total.stores, 0);
}

#[tokio::test(start_paused = true)]
async fn a_body_complete_as_the_head_leaves_is_stored_by_then() {
    // The whole body was there at once (one frame, then the end): it is written before
    // the head leaves, so the head can say `stored` and the store holds it already.
    let origin = Streaming::default();
    let (cache, store) = layer();
    let service = origin.service(cache.clone());
    let tx = origin.prepare(&[("content-length", "5")]);
    tx.send(data(b"whole")).unwrap();
    drop(tx);
    let response = call(&service, Method::GET).await;
    assert_eq!(
        response.headers()["cache-status"],
        "tower-response-cache; fwd=miss; stored"
    );
    assert!(
        stored(&store, "t:GET:/s").await,
        "stored before a byte of the body was read"
    );
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "whole"
    );
    // The frames after the first are passed on as they come: a second one here.
    let tx = origin.prepare(&[]);
    tx.send(data(b"part one, ")).unwrap();
    let request = Request::get("/s")
        .header("x-cache-bypass", "1")
        .body(())
        .unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.headers()["x-cache"], "REFRESH");
    assert_eq!(
        response.headers()["cache-status"],
        "tower-response-cache; fwd=request"
    );
    tx.send(data(b"part two")).unwrap();
    drop(tx);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "part one, part two"
    );
    assert_eq!(
        store.get("t:GET:/s").await.unwrap().unwrap().body,
        "part one, part two"
    );
    assert_eq!(snapshot(&cache).total.stores, 2);
}

#[tokio::test(start_paused = true)]
async fn a_declared_length_over_the_cap_is_not_copied() {
    let origin = Streaming::default();
    let (cache, store) = layer();
    let service = origin.service(cache.clone().max_body_size(4));
    let tx = origin.prepare(&[("content-length", "8")]);
    tx.send(data(b"12345678")).unwrap();
    drop(tx);
    let response = call(&service, Method::GET).await;
    assert_eq!(response.headers()["x-cache"], "UNCACHEABLE");
    assert_eq!(
        response.headers()["cache-status"],
        "tower-response-cache; fwd=miss; detail=too-large"
    );
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "12345678"
    );
    assert_eq!(entry_count(&store).await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_disconnects_mid_body_stores_nothing() {
    let origin = Streaming::default();
    let (cache, store) = layer();
    let service = origin.service(cache.clone());
    let tx = origin.prepare(&[]);
    tx.send(data(b"partial")).unwrap();
    let mut body = call(&service, Method::GET).await.into_body();
    assert_eq!(next_data(&mut body).await, "partial");
    drop(body);
    tx.send(data(b"rest")).ok();
    drop(tx);
    assert_eq!(entry_count(&store).await, 0);
    assert_eq!(snapshot(&cache).total.not_stored["incomplete"], 1);

    let tx = origin.prepare(&[]);
    tx.send(data(b"whole")).unwrap();
    drop(tx);
    let next = call(&service, Method::GET).await;
    assert_eq!(
        next.headers()["x-cache"],
        "MISS",
        "the next request goes to the service"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_error_reaches_the_client_and_stores_nothing() {
    let origin = Streaming::default();
    let (cache, store) = layer();
    let service = origin.service(cache.clone());
    let tx = origin.prepare(&[]);
    tx.send(data(b"partial")).unwrap();
    tx.send(Err(io::Error::other("origin failed"))).unwrap();
    let result = call(&service, Method::GET)
        .await
        .into_body()
        .collect()
        .await;
    assert_eq!(
        result.err().map(|error| error.to_string()),
        Some("origin failed".to_owned())
    );
    assert_eq!(entry_count(&store).await, 0);
    assert_eq!(snapshot(&cache).total.not_stored["incomplete"], 1);
}

#[tokio::test(start_paused = true)]
async fn trailers_are_passed_on_and_the_response_is_not_stored() {
    let origin = Streaming::default();
    let (cache, store) = layer();
    let service = origin.service(cache.clone());
    let tx = origin.prepare(&[]);
    tx.send(data(b"body")).unwrap();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    tx.send(Ok(Frame::trailers(trailers))).unwrap();
    drop(tx);
    let collected = call(&service, Method::GET)
        .await
        .into_body()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        collected.trailers().map(|t| t["x-checksum"].clone()),
        Some(HeaderValue::from_static("abc"))
    );
    assert_eq!(entry_count(&store).await, 0);
    assert_eq!(snapshot(&cache).total.not_stored["trailers"], 1);
}

#[tokio::test(start_paused = true)]
async fn an_empty_body_is_stored_and_replayed() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let counter = calls.clone();
    let app = Router::new()
        .route(
            "/empty",
            get(move || {
                counter.hit();
                async { StatusCode::NO_CONTENT }
            }),
        )
        .layer(cache);
    assert_eq!(fetch(&app, "/empty").await.x_cache(), "MISS");
    assert!(stored(&store, "t:GET:/empty").await);
    let hit = fetch(&app, "/empty").await;
    assert_eq!(
        (hit.status, hit.x_cache(), hit.body.len()),
        (StatusCode::NO_CONTENT, "HIT", 0)
    );
    assert_eq!(calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn head_miss_stores_nothing_and_head_hit_has_no_body() {
    let origin = Streaming::default();
    let (cache, store) = layer();
    let service = origin.service(cache.clone());

    // A HEAD miss: the service answers without a body; storing it would hand an empty body
    // to the next GET.
    drop(origin.prepare(&[("content-length", "5")]));
    let head = call(&service, Method::HEAD).await;
    assert_eq!(
        head.headers()["cache-status"],
        "tower-response-cache; fwd=miss; detail=head"
    );
    assert!(
        head.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
    assert_eq!(entry_count(&store).await, 0);

    let tx = origin.prepare(&[("content-length", "5")]);
    tx.send(data(b"hello")).unwrap();
    drop(tx);
    let get = call(&service, Method::GET).await;
    assert_eq!(get.into_body().collect().await.unwrap().to_bytes(), "hello");

    let head = call(&service, Method::HEAD).await;
    assert_eq!(head.headers()["x-cache"], "HIT");
    assert_eq!(
        head.headers()["content-length"],
        "5",
        "HEAD keeps GET's headers"
    );
    assert!(
        head.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
    let get = call(&service, Method::GET).await;
    assert_eq!(get.into_body().collect().await.unwrap().to_bytes(), "hello");
    assert_eq!(origin.calls.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn background_writes_land_in_the_store() {
    let origin = Streaming::default();
    let store = MemoryStore::new(1 << 20);
    let cache = CacheLayer::new(store.clone()).namespace("t");
    let service = origin.service(cache);
    let tx = origin.prepare(&[]);
    tx.send(data(b"later")).unwrap();
    drop(tx);
    let body = call(&service, Method::GET)
        .await
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, "later");
    // The write runs on a spawned task; give it a bounded number of turns.
    let mut found = false;
    for _ in 0..100 {
        if stored(&store, "t:GET:/s").await {
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(found, "the background write stored the entry");
}

#[tokio::test(start_paused = true)]
async fn waiters_never_see_a_leader_body_that_was_cut_off() {
    let origin = Streaming::default();
    let (cache, store) = layer();
    let service = origin.service(cache.clone());
    let first = origin.prepare(&[]);
    first.send(data(b"partial ")).unwrap();
    let mut leader = call(&service, Method::GET).await.into_body();
    assert_eq!(next_data(&mut leader).await, "partial ");

    // Requests arriving now wait for the leader's fetch.
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                let response = call(&service, Method::GET).await;
                response.into_body().collect().await.unwrap().to_bytes()
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let second = origin.prepare(&[]);
    second.send(data(b"the whole body")).unwrap();
    drop(second);

    // The leader's client goes away mid-body: its waiters elect a new leader.
    drop(leader);
    drop(first);
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap(), "the whole body");
    }
    assert_eq!(origin.calls.get(), 2);
    assert_eq!(cache.in_flight(), 0);
    assert_eq!(
        store.get("t:GET:/s").await.unwrap().unwrap().body,
        "the whole body"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_shorter_than_its_content_length_is_not_stored() {
    let origin = Streaming::default();
    let (cache, store) = layer();
    let service = origin.service(cache.clone());
    let tx = origin.prepare(&[("content-length", "10")]);
    tx.send(data(b"short")).unwrap();
    drop(tx);
    let body = call(&service, Method::GET)
        .await
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    // The client gets what the origin sent (a server in front then cuts the connection).
    assert_eq!(body, "short");
    assert_eq!(entry_count(&store).await, 0);
    assert_eq!(snapshot(&cache).total.not_stored["incomplete"], 1);
}

#[tokio::test(start_paused = true)]
async fn a_body_longer_than_its_content_length_is_never_stored_as_sent() {
    // In one frame: more than declared arrives at once, and nothing is stored.
    let origin = Streaming::default();
    let (cache, store) = layer();
    let service = origin.service(cache.clone());
    let tx = origin.prepare(&[("content-length", "4")]);
    tx.send(data(b"0123456789")).unwrap();
    drop(tx);
    call(&service, Method::GET)
        .await
        .into_body()
        .collect()
        .await
        .unwrap();
    assert_eq!(entry_count(&store).await, 0);
    assert_eq!(snapshot(&cache).total.not_stored["incomplete"], 1);

    // In frames: the entry is complete at the declared length, which is all an HTTP/1
    // server sends (it stops polling the body there); what follows is never stored.
    let tx = origin.prepare(&[("content-length", "4")]);
    tx.send(data(b"0123")).unwrap();
    tx.send(data(b"456789")).unwrap();
    drop(tx);
    call(&service, Method::GET)
        .await
        .into_body()
        .collect()
        .await
        .unwrap();
    let entry = store.get("t:GET:/s").await.unwrap().unwrap();
    assert_eq!(entry.body, "0123");
    assert_eq!(entry.headers["content-length"], "4");
}

#[tokio::test(start_paused = true)]
async fn a_content_length_that_is_not_a_number_is_passed_on_and_not_stored() {
    let origin = Streaming::default();
    let (cache, store) = layer();
    let service = origin.service(cache.clone());
    for value in ["abc", "-1"] {
        let tx = origin.prepare(&[("content-length", value)]);
        tx.send(data(b"body")).unwrap();
        drop(tx);
        let response = call(&service, Method::GET).await;
        assert_eq!(
            response.headers()["cache-status"],
            "tower-response-cache; fwd=miss; detail=malformed"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "body");
    }
    assert_eq!(entry_count(&store).await, 0);
    assert_eq!(snapshot(&cache).total.not_stored["malformed"], 2);
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stalls_holds_up_no_other_request_past_the_coalescing_timeout() {
    let origin = Streaming::default();
    let (cache, store) = layer();
    let cache = cache.coalesce_timeout(std::time::Duration::from_millis(200));
    let service = origin.service(cache.clone());
    let stalled = origin.prepare(&[]);
    stalled.send(data(b"never ")).unwrap();
    let mut leader = call(&service, Method::GET).await.into_body();
    assert_eq!(next_data(&mut leader).await, "never ");

    // The leader's body never goes on: a request arriving now waits at most the coalescing
    // timeout, then goes to the origin itself.
    let second = origin.prepare(&[]);
    second.send(data(b"complete")).unwrap();
    drop(second);
    let started = tokio::time::Instant::now();
    let response = call(&service, Method::GET).await;
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "complete"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
    assert_eq!(origin.calls.get(), 2);
    assert_eq!(snapshot(&cache).total.coalesce_timeouts, 1);
    // The stalled body is not stored when its client gives up; the complete one is.
    drop(leader);
    drop(stalled);
    assert_eq!(
        store.get("t:GET:/s").await.unwrap().unwrap().body,
        "complete"
    );
}
