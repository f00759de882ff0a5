//! The layer behind a real HTTP/1 server (hyper, over an in-memory pipe). A server stops
//! polling a body once the declared length is written, and never polls an empty one: the
//! cache must store such responses all the same.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::Redirect;
use axum::routing::get;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tower_response_cache::{CacheLayer, MemoryStore, WriteMode, store::Store};

use crate::harness::Reply;

/// Sends `request` to `app` through hyper's HTTP/1 server and client.
async fn over_http1(app: &Router, method: Method, uri: &str) -> Reply {
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let service = TowerToHyperService::new(app.clone());
    tokio::spawn(async move {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(server_io), service)
            .await;
    });
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client_io))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// Waits (bounded) until the store holds `key`: background writes land on another task.
async fn eventually_stored(store: &MemoryStore, key: &str) -> bool {
    for _ in 0..200 {
        if store.get(key).await.unwrap().is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

fn app(mode: WriteMode) -> (Router, MemoryStore, CacheLayer) {
    let store = MemoryStore::new(1 << 20);
    let cache = CacheLayer::new(store.clone())
        .namespace("h")
        .write_mode(mode);
    let streamed = || async {
        let chunks = ["stream", "ed ", "body"]
            .map(|chunk| Ok::<_, Infallible>(Frame::data(Bytes::from(chunk))));
        let body = Body::new(StreamBody::new(futures_util::stream::iter(chunks)));
        ([("content-length", "13")], body)
    };
    let router = Router::new()
        .route("/text", get(|| async { "hello over http/1" }))
        .route("/empty", get(|| async { StatusCode::NO_CONTENT }))
        .route("/moved", get(|| async { Redirect::permanent("/text") }))
        .route("/streamed", get(streamed))
        .layer(cache.clone());
    (router, store, cache)
}

#[tokio::test]
async fn every_body_shape_is_stored_behind_a_real_server() {
    for mode in [WriteMode::Inline, WriteMode::Background] {
        let (app, store, cache) = app(mode);
        for (path, status, body) in [
            ("/text", StatusCode::OK, "hello over http/1"),
            ("/empty", StatusCode::NO_CONTENT, ""),
            ("/moved", StatusCode::PERMANENT_REDIRECT, ""),
            ("/streamed", StatusCode::OK, "streamed body"),
        ] {
            let miss = over_http1(&app, Method::GET, path).await;
            assert_eq!(
                (miss.status, miss.x_cache()),
                (status, "MISS"),
                "{mode:?} {path}"
            );
            // The client sends `Host: test`: the key holds it.
            let key = format!("h:GET:test{path}");
            assert!(
                eventually_stored(&store, &key).await,
                "{mode:?} {path} stored"
            );
            let hit = over_http1(&app, Method::GET, path).await;
            assert_eq!(
                (hit.status, hit.x_cache()),
                (status, "HIT"),
                "{mode:?} {path}"
            );
            assert_eq!(hit.text(), body, "{mode:?} {path}");
        }
        let stats = cache.stats().snapshot();
        assert_eq!(stats.total.stores, 4, "{mode:?}: {stats:?}");
        assert_eq!(stats.total.not_stored_total(), 0, "{mode:?}: {stats:?}");
    }
}

#[tokio::test]
async fn a_head_hit_announces_the_get_length() {
    let (app, _store, _cache) = app(WriteMode::Inline);
    let get = over_http1(&app, Method::GET, "/text").await;
    let length = get.header("content-length").map(str::to_owned);
    assert_eq!(length.as_deref(), Some("17"));
    let head = over_http1(&app, Method::HEAD, "/text").await;
    assert_eq!(head.x_cache(), "HIT");
    assert_eq!(
        head.header("content-length"),
        length.as_deref(),
        "RFC 9110 §8.6"
    );
    assert!(head.body.is_empty());
}
