//! Variants, revalidation and invalidation on Redis (standalone and cluster): variant slots
//! hash to different cluster slots, and invalidation must reach all of them.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use fred::interfaces::KeysInterface;
use http::{HeaderMap, StatusCode};
use tower_response_cache::store::{PutIf, StoreExt};
use tower_response_cache::{CacheLayer, CachedResponse, WriteMode, store::Store};

use crate::client::{get_with, post};
use crate::{Calls, Topology, on_both_topologies, store};

on_both_topologies!(
    variants_live_side_by_side_and_are_invalidated_together,
    a_304_refreshes_the_entry_in_redis,
    remove_many_removes_keys_across_slots,
);

fn app(store: tower_response_cache::RedisStore, calls: &Calls) -> (Router, CacheLayer) {
    let layer = CacheLayer::new(store)
        .namespace("rfc")
        .write_mode(WriteMode::Inline)
        .keep(Duration::from_secs(30));
    let router = Router::new()
        .route(
            "/greeting",
            get(
                |State(calls): State<Calls>, headers: HeaderMap| async move {
                    let lang = headers
                        .get("accept-language")
                        .map(|value| value.to_str().unwrap().to_owned())
                        .unwrap_or_default();
                    let n = calls.hit();
                    (
                        [("vary", "accept-language"), ("cache-control", "max-age=60")],
                        format!("{lang} #{n}"),
                    )
                },
            )
            .post(|| async { "posted" }),
        )
        .route(
            "/doc",
            get(
                |State(calls): State<Calls>, headers: HeaderMap| async move {
                    if headers
                        .get("if-none-match")
                        .is_some_and(|tag| tag == "\"d1\"")
                    {
                        return (
                            StatusCode::NOT_MODIFIED,
                            [("etag", "\"d1\""), ("cache-control", "no-cache")],
                        )
                            .into_response();
                    }
                    let n = calls.hit();
                    (
                        [("etag", "\"d1\""), ("cache-control", "no-cache")],
                        format!("doc #{n}"),
                    )
                        .into_response()
                },
            ),
        )
        .with_state(calls.clone())
        .layer(layer.clone());
    (router, layer)
}

async fn variants_live_side_by_side_and_are_invalidated_together(topology: &Topology) {
    let redis = store(&topology.url(), "rfc-vary").await;
    let calls = Calls::default();
    let (app, _layer) = app(redis.clone(), &calls);
    let langs = ["en", "fr", "de", "it"];
    for lang in langs {
        get_with(&app, "/greeting", &[("accept-language", lang)]).await;
    }
    // RFC 9111 §4.1: each variant answers its own requests.
    for (n, lang) in langs.iter().enumerate() {
        let reply = get_with(&app, "/greeting", &[("accept-language", lang)]).await;
        assert_eq!(
            (reply.x_cache(), reply.text()),
            ("HIT", format!("{lang} #{}", n + 1))
        );
    }
    assert_eq!(calls.get(), 4);
    // RFC 9111 §4.4: a POST removes every variant, wherever its slot lives.
    let posted = post(&app, "/greeting").await;
    assert_eq!(posted.text(), "posted");
    for lang in langs {
        let reply = get_with(&app, "/greeting", &[("accept-language", lang)]).await;
        assert_eq!(reply.x_cache(), "MISS", "{lang}");
    }
    assert_eq!(calls.get(), 8);
}

async fn a_304_refreshes_the_entry_in_redis(topology: &Topology) {
    let redis = store(&topology.url(), "rfc-304").await;
    let calls = Calls::default();
    let (app, _layer) = app(redis.clone(), &calls);
    assert_eq!(get_with(&app, "/doc", &[]).await.x_cache(), "MISS");
    let before = redis.get("rfc:GET:/doc").await.unwrap().unwrap();
    // Stored for revalidation (RFC 9111 §5.2.2.4): kept `keep` (30 s) in Redis.
    let pttl: i64 = redis
        .pool()
        .pttl(redis.redis_key("rfc:GET:/doc"))
        .await
        .unwrap();
    assert!((25_000..=30_000).contains(&pttl), "{pttl}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    // RFC 9111 §4.3.3, §4.3.4: the 304 freshens the stored entry; the body is the stored one.
    let reply = get_with(&app, "/doc", &[]).await;
    assert_eq!(
        (reply.x_cache(), reply.text().as_str()),
        ("REVALIDATED", "doc #1")
    );
    let after = redis.get("rfc:GET:/doc").await.unwrap().unwrap();
    assert!(after.stored_at > before.stored_at, "written again");
    assert_eq!(after.body, before.body);
    assert_eq!(calls.get(), 1, "the body was sent once");
}

async fn remove_many_removes_keys_across_slots(topology: &Topology) {
    let redis = store(&topology.url(), "rfc-many").await;
    let keys: Vec<String> = (0..20).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        let entry = CachedResponse::new(StatusCode::OK, HeaderMap::new(), "x".into());
        redis
            .put(key, Arc::new(entry), Duration::from_secs(60), PutIf::Always)
            .await
            .unwrap();
    }
    let mut asked = keys.clone();
    asked.push("never-stored".to_owned());
    assert_eq!(redis.remove_many(&asked).await.unwrap(), 20);
    for key in &keys {
        assert!(redis.get(key).await.unwrap().is_none(), "{key}");
    }
    assert_eq!(redis.remove_many(&[]).await.unwrap(), 0);
}
