//! Purges through `CacheHandle` on Redis, standalone and cluster: by tag, URL, prefix and
//! namespace, hard and soft, across two instances sharing the store; the tag index's keys.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use bytes::Bytes;
use fred::interfaces::{KeysInterface, SortedSetsInterface};
use http::{HeaderMap, StatusCode};
use tower_response_cache::store::PutIf;
use tower_response_cache::store::{PurgeMode, PurgeTarget};
use tower_response_cache::{CacheLayer, CachedResponse, RedisStore, WriteMode, store::Store};

use crate::{Calls, Topology, fetch, on_both_topologies, store};

on_both_topologies!(
    a_tag_purged_on_one_instance_is_gone_on_the_other,
    url_and_prefix_purges_take_their_keys_on_every_slot,
    clear_keeps_other_namespaces_and_other_data,
    a_soft_purge_serves_stale_once_and_revalidates_once,
    tags_needing_care_are_stored_and_matched_as_they_are,
    the_index_forgets_expired_entries,
    a_fetch_under_way_on_one_instance_during_a_purge_on_another_stores_nothing,
    a_sliding_entry_stays_indexed_for_its_new_life,
    a_flushed_purge_log_makes_writes_under_way_cautious,
);

/// `/t/{tag}/{page}`: tagged `{tag}` (and `all`) by `Surrogate-Key`, answering
/// `{tag}/{page} #<call>`.
fn tagged_app(store: RedisStore, calls: &Calls) -> (Router, CacheLayer) {
    slow_tagged_app(store, calls, Duration::ZERO)
}

/// [`tagged_app`] whose handler reads its call count, then takes `delay` to answer.
fn slow_tagged_app(store: RedisStore, calls: &Calls, delay: Duration) -> (Router, CacheLayer) {
    let layer = CacheLayer::new(store)
        .namespace("app")
        .write_mode(WriteMode::Inline)
        .stale_while_revalidate(Duration::from_secs(30));
    let router = Router::new()
        .route(
            "/t/{tag}/{page}",
            get(
                move |State(calls): State<Calls>, Path((tag, page)): Path<(String, String)>| async move {
                    let n = calls.hit();
                    tokio::time::sleep(delay).await;
                    (
                        [("surrogate-key", format!("{tag} all"))],
                        format!("{tag}/{page} #{n}"),
                    )
                },
            ),
        )
        .with_state(calls.clone())
        .layer(layer.clone());
    (router, layer)
}

async fn a_tag_purged_on_one_instance_is_gone_on_the_other(topology: &mut Topology) {
    let url = topology.url();
    let (calls_a, calls_b) = (Calls::default(), Calls::default());
    let (app_a, layer_a) = tagged_app(store(&url, "two").await, &calls_a);
    let (app_b, _) = tagged_app(store(&url, "two").await, &calls_b);
    // Enough pages to spread over every primary of a cluster.
    for page in 0..30 {
        fetch(&app_a, &format!("/t/user:42/{page}")).await;
        fetch(&app_a, &format!("/t/user:4/{page}")).await;
    }
    assert_eq!(fetch(&app_b, "/t/user:42/0").await.x_cache(), "HIT");

    assert_eq!(
        layer_a.handle().invalidate_tag("user:42").await.unwrap(),
        30
    );
    for page in 0..30 {
        let reply = fetch(&app_b, &format!("/t/user:42/{page}")).await;
        assert_eq!(reply.x_cache(), "MISS", "page {page} on B");
        let other = fetch(&app_b, &format!("/t/user:4/{page}")).await;
        assert_eq!(other.x_cache(), "HIT", "user:4 is another tag");
    }
    assert_eq!(calls_b.get(), 30);
    assert_eq!(layer_a.stats().snapshot().purges.hard["tag"], 1);
}

async fn url_and_prefix_purges_take_their_keys_on_every_slot(topology: &mut Topology) {
    let url = topology.url();
    let calls = Calls::default();
    let store = store(&url, "urls").await;
    let (app, layer) = tagged_app(store.clone(), &calls);
    let handle = layer.handle();
    for page in 0..40 {
        fetch(&app, &format!("/t/a/{page}")).await;
        fetch(&app, &format!("/t/ab/{page}")).await;
    }
    assert_eq!(handle.invalidate("/t/a/7").await.unwrap(), 1);
    assert_eq!(fetch(&app, "/t/a/7").await.x_cache(), "MISS");
    // `/t/a` covers `/t/a/…`, not `/t/ab/…`.
    assert_eq!(handle.invalidate_prefix("/t/a").await.unwrap(), 40);
    assert!(store.get("app:GET:/t/a/3").await.unwrap().is_none());
    assert!(store.get("app:GET:/t/ab/3").await.unwrap().is_some());
    // Keys that need escaping: `*` and `[` are literals, never patterns.
    fetch(&app, "/t/g*b/1").await;
    fetch(&app, "/t/gXb/1").await;
    fetch(&app, "/t/g%5Bb%5D/1").await;
    assert_eq!(handle.invalidate_prefix("/t/g*b").await.unwrap(), 1);
    assert!(store.get("app:GET:/t/gXb/1").await.unwrap().is_some());
    assert_eq!(handle.invalidate("/t/g%5Bb%5D/1").await.unwrap(), 1);
    assert!(store.get("app:GET:/t/gXb/1").await.unwrap().is_some());
    // By key, as the key builder gives it.
    let key = tower_response_cache::key::CacheKey::new("GET:/t/gXb/1");
    assert_eq!(handle.invalidate_key(&key).await.unwrap(), 1);
    assert!(store.get("app:GET:/t/gXb/1").await.unwrap().is_none());
    // Soft, by prefix: stale, not gone.
    assert_eq!(handle.soft().invalidate_prefix("/t/ab/").await.unwrap(), 40);
    let stale = store.get("app:GET:/t/ab/3").await.unwrap().unwrap();
    assert!(!stale.is_fresh(std::time::SystemTime::now()));
}

async fn clear_keeps_other_namespaces_and_other_data(topology: &mut Topology) {
    let url = topology.url();
    let calls = Calls::default();
    let store_a = store(&url, "clear").await;
    let (app, layer) = tagged_app(store_a.clone(), &calls);
    let other_layer = CacheLayer::new(store_a.clone()).namespace("other");
    let other_app = Router::new()
        .route("/x", get(|| async { "x" }))
        .layer(other_layer);
    for page in 0..30 {
        fetch(&app, &format!("/t/c/{page}")).await;
    }
    fetch(&other_app, "/x").await;
    let () = store_a
        .pool()
        .set("clear:app-but-not-ours", "keep", None, None, false)
        .await
        .unwrap();
    assert_eq!(layer.handle().clear().await.unwrap(), 30);
    assert!(store_a.get("app:GET:/t/c/0").await.unwrap().is_none());
    assert!(store_a.get("other:GET:/x").await.unwrap().is_some());
    let kept: Option<String> = store_a.pool().get("clear:app-but-not-ours").await.unwrap();
    assert_eq!(kept.as_deref(), Some("keep"));
}

async fn a_soft_purge_serves_stale_once_and_revalidates_once(topology: &mut Topology) {
    let url = topology.url();
    let calls = Calls::default();
    let (app, layer) = tagged_app(store(&url, "soft").await, &calls);
    fetch(&app, "/t/s/1").await;
    assert_eq!(layer.handle().soft().invalidate_tag("s").await.unwrap(), 1);
    let stale = fetch(&app, "/t/s/1").await;
    assert_eq!(
        (stale.x_cache(), stale.text().as_str()),
        ("STALE", "s/1 #1")
    );
    let mut fresh = fetch(&app, "/t/s/1").await;
    for _ in 0..200 {
        if fresh.text() == "s/1 #2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        fresh = fetch(&app, "/t/s/1").await;
    }
    assert_eq!((fresh.x_cache(), fresh.text().as_str()), ("HIT", "s/1 #2"));
    assert_eq!(calls.get(), 2, "one revalidation");
    // A hard purge after the soft one is hard.
    layer.handle().soft().invalidate_tag("s").await.unwrap();
    layer.handle().invalidate_tag("s").await.unwrap();
    assert_eq!(fetch(&app, "/t/s/1").await.x_cache(), "MISS");
}

fn tagged(tags: &[&str]) -> Arc<CachedResponse> {
    let mut entry = CachedResponse::new(StatusCode::OK, HeaderMap::new(), Bytes::from("x"));
    entry.ttl = Duration::from_secs(60);
    entry.tags = tags.iter().map(|tag| (*tag).to_owned()).collect();
    Arc::new(entry)
}

async fn tags_needing_care_are_stored_and_matched_as_they_are(topology: &mut Topology) {
    let store = store(&topology.url(), "care").await;
    let ttl = Duration::from_secs(60);
    // A hash tag, glob characters, percent signs, non-ASCII: stored as they are.
    let tags = ["{slot}", "a*", "a?b", "50%25", "café", "x[1]"];
    for (i, tag) in tags.iter().enumerate() {
        store
            .put(&format!("ns:GET:/{i}"), tagged(&[tag]), ttl, PutIf::Always)
            .await
            .unwrap();
    }
    store
        .put("ns:GET:/plain", tagged(&["a"]), ttl, PutIf::Always)
        .await
        .unwrap();
    for (i, tag) in tags.iter().enumerate() {
        let exists: i64 = store
            .pool()
            .exists(store.redis_key(&format!("#tag:{tag}")))
            .await
            .unwrap();
        assert_eq!(exists, 1, "{tag} is stored under its own name");
        let purged = store
            .purge(PurgeTarget::Tag { tag, within: "ns:" }, PurgeMode::Hard)
            .await
            .unwrap();
        assert_eq!(purged, 1, "{tag}");
        assert!(store.get(&format!("ns:GET:/{i}")).await.unwrap().is_none());
    }
    assert!(
        store.get("ns:GET:/plain").await.unwrap().is_some(),
        "`a*` is no pattern"
    );
}

async fn the_index_forgets_expired_entries(topology: &mut Topology) {
    let store = store(&topology.url(), "forget").await;
    for i in 0..50 {
        store
            .put(
                &format!("ns:GET:/{i}"),
                tagged(&["t"]),
                // Long enough that the 50 writes land within it on a loaded machine.
                Duration::from_millis(400),
                PutIf::Always,
            )
            .await
            .unwrap();
    }
    let set = store.redis_key("#tag:t");
    let members: i64 = store.pool().zcard(&set).await.unwrap();
    assert_eq!(members, 50);
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The next add drops the expired members.
    store
        .put(
            "ns:GET:/last",
            tagged(&["t"]),
            Duration::from_secs(60),
            PutIf::Always,
        )
        .await
        .unwrap();
    let members: i64 = store.pool().zcard(&set).await.unwrap();
    assert_eq!(members, 1);
    let ttl: i64 = store.pool().pttl(&set).await.unwrap();
    assert!(
        (59_000..=61_000).contains(&ttl),
        "lives as long as its last member: {ttl}"
    );
}

async fn a_fetch_under_way_on_one_instance_during_a_purge_on_another_stores_nothing(
    topology: &mut Topology,
) {
    let url = topology.url();
    for purge_log in [true, false] {
        let namespace = format!("inflight-{purge_log}");
        let config = |namespace: &str| tower_response_cache::RedisConfig {
            namespace: namespace.to_owned(),
            command_timeout: Duration::from_secs(2),
            purge_log,
            ..tower_response_cache::RedisConfig::from_url(&url).unwrap()
        };
        let store_a = RedisStore::connect(config(&namespace)).await.unwrap();
        let store_b = RedisStore::connect(config(&namespace)).await.unwrap();
        let (calls_a, calls_b) = (Calls::default(), Calls::default());
        let (app_a, layer_a) = tagged_app(store_a, &calls_a);
        let (app_b, _) = slow_tagged_app(store_b.clone(), &calls_b, Duration::from_millis(400));
        // B starts a fetch: its origin answers as things stand now, then takes its time.
        let slow = tokio::spawn({
            let app_b = app_b.clone();
            async move { fetch(&app_b, "/t/v/1").await }
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        // Meanwhile A purges the tag (the page changed).
        layer_a.handle().invalidate_tag("v").await.unwrap();
        assert_eq!(
            slow.await.unwrap().text(),
            "v/1 #1",
            "B's client gets its answer"
        );
        let written_back = store_b.get("app:GET:/t/v/1").await.unwrap().is_some();
        let after = fetch(&app_a, "/t/v/1").await;
        if purge_log {
            assert!(!written_back, "B's pre-purge body is not in the store");
            assert_eq!(
                (after.x_cache(), after.text().as_str()),
                ("MISS", "v/1 #1"),
                "A fetches anew (its own first call)"
            );
        } else {
            // Without the log only B's own purges fence its writes: this is what the log
            // is for.
            assert!(written_back);
            assert_eq!(after.x_cache(), "HIT");
        }
    }
}

async fn a_sliding_entry_stays_indexed_for_its_new_life(topology: &mut Topology) {
    let store = store(&topology.url(), "slide").await;
    let tags = ["t".to_owned()];
    store
        .put(
            "ns:GET:/slides",
            tagged(&["t"]),
            Duration::from_millis(400),
            PutIf::Always,
        )
        .await
        .unwrap();
    // A sliding hit gives it another, longer life.
    assert!(
        store
            .touch("ns:GET:/slides", &tags, Duration::from_secs(60))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The next write of the tag drops the members that have expired by their score.
    store
        .put(
            "ns:GET:/other",
            tagged(&["t"]),
            Duration::from_secs(60),
            PutIf::Always,
        )
        .await
        .unwrap();
    let purged = store
        .purge(
            PurgeTarget::Tag {
                tag: "t",
                within: "ns:",
            },
            PurgeMode::Hard,
        )
        .await
        .unwrap();
    assert_eq!(purged, 2, "the touched entry is still found by its tag");
    assert!(store.get("ns:GET:/slides").await.unwrap().is_none());
}

async fn a_flushed_purge_log_makes_writes_under_way_cautious(topology: &mut Topology) {
    let url = topology.url();
    let (calls_a, calls_b) = (Calls::default(), Calls::default());
    let (app_a, layer_a) = tagged_app(store(&url, "flush").await, &calls_a);
    let store_b = store(&url, "flush").await;
    let (app_b, _) = slow_tagged_app(store_b.clone(), &calls_b, Duration::from_millis(400));
    // A purges a few times; B learns the count with a write of its own.
    for _ in 0..3 {
        layer_a.handle().invalidate_tag("other").await.unwrap();
    }
    fetch(&app_b, "/t/w/0").await;
    // An operator flushes Redis: the log's counter starts again from zero.
    for server in topology.servers() {
        server.cli(&["FLUSHALL"]);
    }
    let slow = tokio::spawn({
        let app_b = app_b.clone();
        async move { fetch(&app_b, "/t/w/1").await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    layer_a.handle().invalidate_tag("w").await.unwrap();
    slow.await.unwrap();
    assert!(
        store_b.get("app:GET:/t/w/1").await.unwrap().is_none(),
        "B did not trust a count that went back"
    );
    assert_eq!(fetch(&app_a, "/t/w/1").await.x_cache(), "MISS");
}
