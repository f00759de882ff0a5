//! What a reader of Redis sees: no credential in a key name (`redis-cli --scan`) or in a
//! stored value, for per-user keys and `Vary: Cookie` entries alike.

use axum::Router;
use axum::routing::get;
use http::header;
use tower_response_cache::{CacheLayer, WriteMode, key::DefaultKeyBuilder};

use crate::client::{Calls, get_with};
use crate::{Topology, store};

crate::on_both_topologies!(credentials_never_reach_redis);

async fn credentials_never_reach_redis(topology: &mut Topology) {
    let store = store(&topology.url(), "secrets").await;
    let calls = Calls::default();
    let counted = calls.clone();
    let layer = CacheLayer::new(store.clone())
        .namespace("app")
        .write_mode(WriteMode::Inline)
        .key_builder(DefaultKeyBuilder::new().header(header::AUTHORIZATION))
        .allow_authorized(true);
    let app = Router::new()
        .route(
            "/me",
            get(move || {
                let n = counted.hit();
                async move {
                    (
                        [("cache-control", "public, max-age=60"), ("vary", "cookie")],
                        format!("profile #{n}"),
                    )
                }
            }),
        )
        .layer(layer);
    let alice = [
        ("authorization", "Bearer s3cr3t-token"),
        ("cookie", "session=alice-secret"),
    ];
    get_with(&app, "/me", &alice).await;
    assert_eq!(get_with(&app, "/me", &alice).await.x_cache(), "HIT");
    assert_eq!(calls.get(), 1);

    let mut keys = Vec::new();
    for server in topology.servers() {
        let scanned = server.cli(&["--scan", "--pattern", "secrets:*"]);
        keys.extend(scanned.lines().map(str::to_owned));
    }
    assert!(!keys.is_empty(), "entries in Redis");
    for key in &keys {
        for secret in ["s3cr3t", "Bearer", "alice", "session", " "] {
            assert!(!key.contains(secret), "{secret:?} in the key {key:?}");
        }
        let value: Option<bytes::Bytes> = fred::interfaces::KeysInterface::get(store.pool(), key)
            .await
            .unwrap();
        let value = value.unwrap();
        for secret in [&b"s3cr3t"[..], b"alice-secret"] {
            assert!(
                !value.windows(secret.len()).any(|window| window == secret),
                "{} in the value of {key}",
                String::from_utf8_lossy(secret)
            );
        }
    }
}
