//! Purges at scale, on loopback, bounded and stopping by themselves: a tag with 100 000
//! entries purged in bounded batches while Redis keeps answering (standalone and cluster),
//! and the tag index after a churn of 200 000 short-lived tagged entries. Each prints what
//! it measured (run with `--nocapture`, as `scripts/test.sh` does).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::interfaces::{ClientLike, SortedSetsInterface};
use futures_util::StreamExt;
use http::{HeaderMap, StatusCode};
use tower_response_cache::store::{PutIf, StoreExt};
use tower_response_cache::{CachedResponse, RedisStore, store::Store};
use tower_response_cache::{
    RedisConfig,
    store::{PurgeMode, PurgeTarget},
};

use crate::servers::{Cluster, RedisServer};

fn config(url: &str) -> RedisConfig {
    RedisConfig {
        namespace: "bulk".into(),
        command_timeout: Duration::from_secs(2),
        pool_size: 8,
        ..RedisConfig::from_url(url).unwrap()
    }
}

fn tagged(tags: Vec<String>) -> Arc<CachedResponse> {
    let mut entry = CachedResponse::new(StatusCode::OK, HeaderMap::new(), Bytes::from("x"));
    entry.ttl = Duration::from_secs(300);
    entry.tags = tags;
    Arc::new(entry)
}

/// Writes `count` entries `ns:GET:/<name>/<i>` for `ttl`, each tagged by `tags(i)`, 256 at
/// a time.
async fn fill(
    store: &RedisStore,
    name: &str,
    count: usize,
    ttl: Duration,
    tags: impl Fn(usize) -> Vec<String>,
) {
    futures_util::stream::iter(0..count)
        .map(|i| {
            let entry = tagged(tags(i));
            async move {
                store
                    .put(&format!("ns:GET:/{name}/{i}"), entry, ttl, PutIf::Always)
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(256)
        .collect::<()>()
        .await;
}

/// Pings Redis every millisecond until `stop`: the slowest answer.
fn probe(store: &RedisStore, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Duration> {
    let client = store.pool().next().clone();
    tokio::spawn(async move {
        let mut slowest = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            let sent = Instant::now();
            let _: String = client.ping(None).await.unwrap();
            slowest = slowest.max(sent.elapsed());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        slowest
    })
}

async fn a_tag_of_100_000_entries(url: &str, topology: &str) {
    let store = RedisStore::connect(config(url)).await.unwrap();
    let started = Instant::now();
    fill(&store, "big", 100_000, Duration::from_secs(300), |i| {
        vec!["big".to_owned(), format!("item:{i}")]
    })
    .await;
    let written = started.elapsed();
    fill(&store, "small", 1_000, Duration::from_secs(300), |_| {
        vec!["small".to_owned()]
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let slowest = probe(&store, Arc::clone(&stop));
    let started = Instant::now();
    let purged = store
        .purge(
            PurgeTarget::Tag {
                tag: "big",
                within: "ns:",
            },
            PurgeMode::Hard,
        )
        .await
        .unwrap();
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let slowest = slowest.await.unwrap();
    println!(
        "[purge-100k {topology}] wrote 100 000 tagged entries in {written:?} ({:.0}/s); \
         purged {purged} in {took:?} ({:.0} entries/s); slowest PING during the purge {slowest:?}",
        100_000.0 / written.as_secs_f64(),
        purged as f64 / took.as_secs_f64(),
    );
    assert_eq!(purged, 100_000);
    assert!(store.get("ns:GET:/big/77").await.unwrap().is_none());
    assert!(store.get("ns:GET:/small/7").await.unwrap().is_some());
    let members: i64 = store
        .pool()
        .zcard(store.redis_key("#tag:big"))
        .await
        .unwrap();
    assert_eq!(members, 0, "the tag's set is empty");
    let small: u64 = store
        .purge(
            PurgeTarget::Tag {
                tag: "small",
                within: "ns:",
            },
            PurgeMode::Hard,
        )
        .await
        .unwrap();
    assert_eq!(small, 1_000, "the other tag kept all its entries");
    // Each entry also had a tag of its own, whose set lives on until the entry would
    // have expired: a purge by the shared tag leaves them (they only point at gone keys).
    let _ = store.clear().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_a_tag_with_100_000_entries_is_purged_in_bounded_batches() {
    if !crate::servers::available() {
        return;
    }
    let server = RedisServer::start(&[]);
    a_tag_of_100_000_entries(&server.url(), "standalone").await;
    let cluster = Cluster::start();
    a_tag_of_100_000_entries(&cluster.url(), "cluster").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_the_tag_index_stays_bounded_under_a_churn_of_200_000_entries() {
    if !crate::servers::available() {
        return;
    }
    let server = RedisServer::start(&[]);
    let store = RedisStore::connect(config(&server.url())).await.unwrap();
    let used_memory = |server: &RedisServer| -> u64 {
        server
            .cli(&["INFO", "memory"])
            .lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_default()
    };
    let before = used_memory(&server);
    let started = Instant::now();
    // 200 000 entries living 300 ms, in waves: each tagged with one of 100 shared tags and
    // one of its own.
    for wave in 0..20 {
        fill(
            &store,
            &format!("w{wave}"),
            10_000,
            Duration::from_millis(300),
            |i| vec![format!("shared:{}", i % 100), format!("own:{wave}:{i}")],
        )
        .await;
    }
    let churned = started.elapsed();
    // Expired entries and their own tags' sets leave by Redis's expiry; the shared sets are
    // trimmed by the next add. One more write to every shared tag, then wait for expiry.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    fill(&store, "last", 100, Duration::from_secs(60), |i| {
        vec![format!("shared:{i}")]
    })
    .await;
    let mut keys = u64::MAX;
    for _ in 0..100 {
        keys = server.cli(&["DBSIZE"]).trim().parse().unwrap_or(u64::MAX);
        if keys <= 250 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut members = 0;
    for tag in 0..100 {
        let count: i64 = store
            .pool()
            .zcard(store.redis_key(&format!("#tag:shared:{tag}")))
            .await
            .unwrap();
        members += count;
    }
    let after = used_memory(&server);
    println!(
        "[index-churn] 200 000 tagged entries (300 ms each) written in {churned:?}; afterwards \
         {keys} keys in Redis (100 live entries, their 100 tag sets, the purge log), {members} \
         members in the shared tags' sets; used_memory {before} B before, {after} B after"
    );
    assert!(keys <= 250, "{keys} keys left");
    assert_eq!(members, 100, "only the live entries are indexed");
    assert!(
        after < before + 4 * 1024 * 1024,
        "memory back near where it was: {before} -> {after}"
    );
}
