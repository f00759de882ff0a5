//! `TieredStore`: three app instances in one process, each with its own layer, L1 and Redis
//! clients, sharing one Redis (standalone and the 3-primary cluster). A miss on one is a hit
//! on the others; a purge or overwrite on one evicts the others' L1 copies within a bound;
//! a cut subscriber, a flushed Redis and a restarted one empty L1 and bypass it until the
//! channel is confirmed again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use tower_response_cache::store::ChannelMode;
use tower_response_cache::{
    CacheHandle, CacheLayer, TieredConfig, TieredStore, WriteMode, stats::CacheStats,
};
use tower_response_cache::{
    observe::{CacheEvent, EventKind},
    store::FlushReason,
};

use crate::servers::Cluster;
use crate::{Calls, Topology, fetch, on_both_topologies, store};

on_both_topologies!(
    a_miss_on_one_instance_is_an_l1_hit_on_the_others_after_one_l2_read,
    a_purge_or_overwrite_on_one_instance_evicts_every_other_l1_copy,
    a_cut_subscriber_empties_and_bypasses_l1_until_the_channel_is_back,
    flushing_redis_empties_every_l1,
    killing_redis_under_load_fails_nothing_and_serves_nothing_stale_after,
    under_concurrent_overwrites_no_instance_serves_an_older_version_past_the_bound,
);

/// The staleness bound the tests configure.
const MAX_STALENESS: Duration = Duration::from_millis(400);

struct Instance {
    app: Router,
    store: TieredStore,
    handle: CacheHandle,
    stats: CacheStats,
    /// The `L1Flushed` events its layer's observer saw, in order.
    flushes: Arc<Mutex<Vec<FlushReason>>>,
}

impl Instance {
    fn flush_events(&self) -> Vec<FlushReason> {
        self.flushes.lock().unwrap().clone()
    }
}

/// `count` instances on `topology`, sharing `calls` (the origin they all front).
async fn instances(topology: &Topology, calls: &Calls, count: usize) -> Vec<Instance> {
    instances_on(&topology.url(), ChannelMode::Auto, calls, count).await
}

/// `count` instances on the Redis at `url`, their channel carried as `mode` says.
async fn instances_on(url: &str, mode: ChannelMode, calls: &Calls, count: usize) -> Vec<Instance> {
    let mut instances = Vec::new();
    for _ in 0..count {
        let config = TieredConfig {
            heartbeat: Duration::from_millis(50),
            max_staleness: MAX_STALENESS,
            channel: mode,
            ..TieredConfig::default()
        };
        let store = TieredStore::connect(store(url, "tiered").await, config)
            .await
            .unwrap();
        let flushes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&flushes);
        let layer = CacheLayer::new(store.clone())
            .namespace("app")
            .write_mode(WriteMode::Inline)
            .observer(move |event: &CacheEvent<'_>| {
                if let EventKind::L1Flushed { reason } = event.kind {
                    seen.lock().unwrap().push(reason);
                }
            });
        let handle = layer.handle();
        let stats = layer.stats();
        let app = Router::new()
            .route(
                "/p/{page}",
                get(
                    |State(calls): State<Calls>, Path(page): Path<String>| async move {
                        (
                            [("surrogate-key", "pages")],
                            format!("{page} #{}", calls.hit()),
                        )
                    },
                ),
            )
            .with_state(calls.clone())
            .layer(layer);
        instances.push(Instance {
            app,
            store,
            handle,
            stats,
            flushes,
        });
    }
    // Each instance's channel is confirmed before the test relies on L1.
    for instance in &instances {
        wait_for(Duration::from_secs(10), "L1 in use", || {
            instance.store.l1_in_use()
        })
        .await;
    }
    instances
}

async fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

/// Whether `instance`'s L1 holds the entry of `/p/{page}`.
fn in_l1(instance: &Instance, page: &str) -> bool {
    instance
        .store
        .l1()
        .keys()
        .iter()
        .any(|key| key.contains(&format!("/p/{page}")))
}

async fn a_miss_on_one_instance_is_an_l1_hit_on_the_others_after_one_l2_read(
    topology: &mut Topology,
) {
    let calls = Calls::default();
    let nodes = instances(topology, &calls, 3).await;
    let first = fetch(&nodes[0].app, "/p/a").await;
    assert_eq!(first.x_cache(), "MISS");
    assert!(in_l1(&nodes[0], "a"), "the writer keeps a copy");
    // The write's eviction message reaches the others within milliseconds; a read racing it
    // would (rightly) not fill L1. Let it arrive.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for node in &nodes[1..] {
        assert!(!in_l1(node, "a"));
        let reply = fetch(&node.app, "/p/a").await;
        assert_eq!((reply.x_cache(), reply.text()), ("HIT", first.text()));
        assert!(in_l1(node, "a"), "an L2 hit fills L1");
        let again = fetch(&node.app, "/p/a").await;
        assert_eq!((again.x_cache(), again.text()), ("HIT", first.text()));
        // The stats name the tiers: the first hit read Redis, the second L1.
        let total = node.stats.snapshot().total;
        assert_eq!((total.hits, total.l2_hits, total.l1_hits), (2, 1, 1));
    }
    assert_eq!(calls.get(), 1);
}

async fn a_purge_or_overwrite_on_one_instance_evicts_every_other_l1_copy(topology: &mut Topology) {
    let calls = Calls::default();
    let nodes = instances(topology, &calls, 3).await;
    // An overwrite on C (a refresh): the others' older copies go, and they read C's.
    for node in &nodes {
        fetch(&node.app, "/p/g").await;
        assert!(in_l1(node, "g"));
    }
    let refresh = http::Request::get("/p/g")
        .header("x-cache-bypass", "1")
        .body(axum::body::Body::empty())
        .unwrap();
    let newer = crate::client::send(&nodes[2].app, refresh).await;
    assert_eq!(newer.x_cache(), "REFRESH");
    for node in [&nodes[0], &nodes[1]] {
        wait_for(
            Duration::from_millis(250),
            "the overwrite reached L1",
            || !in_l1(node, "g"),
        )
        .await;
        let reply = fetch(&node.app, "/p/g").await;
        assert_eq!((reply.x_cache(), reply.text()), ("HIT", newer.text()));
    }

    // A purge on B: gone from B's L1 when the call returns, from the others' within the
    // channel's latency.
    for node in &nodes {
        fetch(&node.app, "/p/b").await;
        assert!(in_l1(node, "b"));
    }
    assert_eq!(nodes[1].handle.invalidate("/p/b").await.unwrap(), 1);
    assert!(!in_l1(&nodes[1], "b"));
    let mut slowest = Duration::ZERO;
    for node in [&nodes[0], &nodes[2]] {
        let took = wait_for(Duration::from_millis(250), "the purge reached L1", || {
            !in_l1(node, "b")
        })
        .await;
        slowest = slowest.max(took);
    }
    println!("purge reached every L1 in {slowest:?}");
    assert_eq!(fetch(&nodes[0].app, "/p/b").await.x_cache(), "MISS");

    // A tag purge and a clear reach every L1 too.
    for node in &nodes {
        fetch(&node.app, "/p/c").await;
    }
    nodes[0].handle.invalidate_tag("pages").await.unwrap();
    for node in &nodes {
        wait_for(
            Duration::from_millis(250),
            "the tag purge reached L1",
            || !in_l1(node, "c") && !in_l1(node, "g"),
        )
        .await;
    }
    for node in &nodes {
        for _ in 0..3 {
            if fetch(&node.app, "/p/h").await.x_cache() == "HIT" {
                break;
            }
        }
    }
    assert!(nodes.iter().any(|node| in_l1(node, "h")));
    nodes[0].handle.clear().await.unwrap();
    for node in &nodes {
        wait_for(Duration::from_millis(250), "the clear reached L1", || {
            node.store.l1().keys().is_empty()
        })
        .await;
    }
    // The layer's clear is a purge of its namespace, not a flush; the store's own clear
    // (everything under its prefix) is one for the other instances, whose observers are
    // told. The instance that cleared does not count its own. (A loaded machine may add a
    // heartbeat's flush anywhere: only clears are looked at.)
    let cleared = |node: &Instance| {
        node.flush_events()
            .iter()
            .filter(|reason| **reason == FlushReason::Cleared)
            .count()
    };
    assert!(nodes.iter().all(|node| cleared(node) == 0));
    fetch(&nodes[1].app, "/p/h").await;
    fetch(&nodes[1].app, "/p/h").await;
    assert!(in_l1(&nodes[1], "h"));
    tower_response_cache::store::StoreExt::clear(&nodes[0].store)
        .await
        .unwrap();
    for node in &nodes[1..] {
        wait_for(
            Duration::from_millis(250),
            "the store's clear reached L1",
            || cleared(node) == 1 && node.store.l1().keys().is_empty(),
        )
        .await;
        assert_eq!(node.store.flushes().cleared, 1);
    }
    assert_eq!(cleared(&nodes[0]), 0);
    assert_eq!(nodes[0].store.flushes().cleared, 0);
}

async fn a_cut_subscriber_empties_and_bypasses_l1_until_the_channel_is_back(
    topology: &mut Topology,
) {
    let calls = Calls::default();
    let nodes = instances(topology, &calls, 2).await;
    fetch(&nodes[0].app, "/p/d").await;
    fetch(&nodes[1].app, "/p/d").await;
    assert!(in_l1(&nodes[1], "d"));
    for server in topology.servers() {
        server.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    }
    // The subscriber's reconnection (or, at worst, the missing heartbeats) puts the
    // channel in doubt within the staleness bound: L1 emptied, and observers told why.
    // (Bypassed until a heartbeat comes back — which, on a fast reconnection, may be a
    // few milliseconds later: the unit tests pin the bypass down.)
    let doubted = || {
        nodes[1]
            .flush_events()
            .iter()
            .any(|reason| matches!(reason, FlushReason::Reconnected | FlushReason::Heartbeat))
    };
    let took = wait_for(MAX_STALENESS * 3, "L1 flushed", || {
        doubted() && !in_l1(&nodes[1], "d")
    })
    .await;
    println!("L1 flushed {took:?} after the subscriber was cut");
    let flushes = nodes[1].store.flushes();
    assert!(flushes.reconnected + flushes.heartbeat >= 1, "{flushes:?}");
    // Answered from L2 meanwhile; then the channel is back, and L1 with it.
    assert_eq!(fetch(&nodes[1].app, "/p/d").await.x_cache(), "HIT");
    wait_for(Duration::from_secs(10), "L1 back in use", || {
        nodes[1].store.l1_in_use()
    })
    .await;
    fetch(&nodes[1].app, "/p/d").await;
    assert!(in_l1(&nodes[1], "d"));
    // And it is coherent again: a purge on the other instance reaches it.
    nodes[0].handle.invalidate("/p/d").await.unwrap();
    wait_for(Duration::from_millis(250), "the purge reached L1", || {
        !in_l1(&nodes[1], "d")
    })
    .await;
    assert_eq!(calls.get(), 1);
}

async fn flushing_redis_empties_every_l1(topology: &mut Topology) {
    let calls = Calls::default();
    let nodes = instances(topology, &calls, 2).await;
    for node in &nodes {
        fetch(&node.app, "/p/e").await;
        assert!(in_l1(node, "e"));
    }
    for server in topology.servers() {
        // Replicas refuse (read-only): their primaries' flush reaches them.
        server.cli(&["FLUSHALL"]);
    }
    for node in &nodes {
        wait_for(MAX_STALENESS * 3, "L1 emptied after the flush", || {
            !in_l1(node, "e")
        })
        .await;
        assert!(
            node.store.flushes().flushed >= 1,
            "{:?}",
            node.store.flushes()
        );
        // The layer's stats say so too.
        let flushes = node
            .stats
            .snapshot()
            .l1_flushes
            .expect("a tiered store's flushes");
        assert!(flushes.flushed >= 1);
        // And its observers were told.
        assert!(
            node.flush_events().contains(&FlushReason::Flushed),
            "{:?}",
            node.flush_events()
        );
    }
    // The entry is gone from Redis as well: the next request goes to the origin.
    assert_eq!(fetch(&nodes[0].app, "/p/e").await.x_cache(), "MISS");
    assert_eq!(calls.get(), 2);
}

async fn killing_redis_under_load_fails_nothing_and_serves_nothing_stale_after(
    topology: &mut Topology,
) {
    let calls = Calls::default();
    let nodes = instances(topology, &calls, 2).await;
    for node in &nodes {
        fetch(&node.app, "/p/f").await;
    }
    let before = fetch(&nodes[0].app, "/p/f").await.text();
    let load = {
        let app = nodes[1].app.clone();
        tokio::spawn(async move {
            let mut failed = 0;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(3) {
                let reply = fetch(&app, "/p/f").await;
                if reply.status != http::StatusCode::OK || !reply.text().starts_with("f #") {
                    failed += 1;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            failed
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    topology.kill();
    wait_for(
        MAX_STALENESS * 3,
        "L1 emptied and bypassed while Redis is down",
        || !nodes[1].store.l1_in_use() && !in_l1(&nodes[1], "f"),
    )
    .await;
    topology.restart();
    assert_eq!(load.await.unwrap(), 0, "no request failed");
    // Redis came back empty: neither instance answers with the entry of before the kill
    // (one the load wrote since may answer).
    wait_for(Duration::from_secs(15), "L1 back in use", || {
        nodes.iter().all(|node| node.store.l1_in_use())
    })
    .await;
    for node in &nodes {
        let after = fetch(&node.app, "/p/f").await;
        assert_eq!(after.status, http::StatusCode::OK);
        assert_ne!(
            after.text(),
            before,
            "nothing of before the restart was served"
        );
    }
}

async fn under_concurrent_overwrites_no_instance_serves_an_older_version_past_the_bound(
    topology: &mut Topology,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    // The origin answers the version the writer set last.
    let version = Arc::new(AtomicU64::new(0));
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let store = TieredStore::connect(
            store(&topology.url(), "tiered-versions").await,
            TieredConfig {
                heartbeat: Duration::from_millis(50),
                max_staleness: MAX_STALENESS,
                ..TieredConfig::default()
            },
        )
        .await
        .unwrap();
        let served = Arc::clone(&version);
        let app = Router::new()
            .route(
                "/v",
                get(move || {
                    let served = Arc::clone(&served);
                    async move { format!("{}", served.load(Ordering::SeqCst)) }
                }),
            )
            .layer(
                CacheLayer::new(store.clone())
                    .namespace("app")
                    .write_mode(WriteMode::Inline),
            );
        nodes.push((app, store));
    }
    for (_, store) in &nodes {
        wait_for(Duration::from_secs(10), "L1 in use", || store.l1_in_use()).await;
    }
    let start = Instant::now();
    let run = Duration::from_secs(2);
    // Readers on every instance: (when the response arrived, the version it carried).
    let readers: Vec<_> = nodes
        .iter()
        .map(|(app, _)| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while start.elapsed() < run {
                    let reply = fetch(&app, "/v").await;
                    assert_eq!(reply.status, http::StatusCode::OK);
                    seen.push((start.elapsed(), reply.text().parse::<u64>().unwrap()));
                    // An L1 hit completes without yielding: let the writer run.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                seen
            })
        })
        .collect();
    // The writer: a new version, stored by a refresh on one instance after another; a
    // version counts as written once its refresh says it was stored.
    let mut written: Vec<(Duration, u64)> = Vec::new();
    let mut n = 0;
    while start.elapsed() < run - Duration::from_millis(300) {
        n += 1;
        version.store(n, Ordering::SeqCst);
        let (app, _) = &nodes[(n % 3) as usize];
        let request = http::Request::get("/v")
            .header("x-cache-bypass", "1")
            .body(axum::body::Body::empty())
            .unwrap();
        let reply = crate::client::send(app, request).await;
        if reply
            .header("cache-status")
            .is_some_and(|status| status.contains("stored"))
        {
            written.push((start.elapsed(), n));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(written.len() > 10, "{} versions written", written.len());
    let bound = Duration::from_millis(250);
    let (mut reads, mut worst) = (0, Duration::ZERO);
    for reader in readers {
        for (at, seen) in reader.await.unwrap() {
            reads += 1;
            // How long ago a newer version than the one read was stored, if one was.
            if let Some((newer_at, _)) = written
                .iter()
                .find(|(written_at, version)| *version > seen && *written_at <= at)
            {
                worst = worst.max(at - *newer_at);
            }
            // Every version written more than `bound` before this read is superseded in
            // what the read may return.
            let floor = written
                .iter()
                .filter(|(written_at, _)| *written_at + bound <= at)
                .map(|(_, version)| *version)
                .max()
                .unwrap_or(0);
            assert!(
                seen >= floor,
                "a read at {at:?} returned version {seen}, though version {floor} was stored by then"
            );
        }
    }
    println!(
        "{reads} reads, {} versions written: the stalest read came {worst:?} after a newer \
         version was stored (bound {bound:?})",
        written.len()
    );
}

/// The sum over `cluster`'s nodes of a `CLUSTER INFO` counter (absent: 0).
fn cluster_counter(cluster: &Cluster, name: &str) -> u64 {
    cluster
        .nodes
        .iter()
        .filter(|node| node.child_running())
        .map(|node| {
            node.cli(&["cluster", "info"])
                .lines()
                .find_map(|line| {
                    line.trim()
                        .strip_prefix(name)?
                        .strip_prefix(':')?
                        .parse()
                        .ok()
                })
                .unwrap_or(0)
        })
        .sum()
}

/// Invalidates `/p/{n}` on `nodes[0]` for `count` pages each in `nodes[1]`'s L1, and
/// waits until every one is evicted there.
async fn invalidate_across(nodes: &[Instance], count: usize) {
    for n in 0..count {
        let page = format!("c{n}");
        fetch(&nodes[1].app, &format!("/p/{page}")).await;
        fetch(&nodes[1].app, &format!("/p/{page}")).await;
        assert!(in_l1(&nodes[1], &page), "{page} in L1");
        nodes[0]
            .handle
            .invalidate(&format!("/p/{page}"))
            .await
            .unwrap();
        wait_for(Duration::from_millis(500), "the purge reached L1", || {
            !in_l1(&nodes[1], &page)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_sharded_channel_stays_in_its_shard_where_the_classic_one_reaches_every_node()
 {
    if !crate::servers::available() {
        return;
    }
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let calls = Calls::default();
    // The default on a cluster is sharded.
    let nodes = instances_on(&cluster.url(), ChannelMode::Auto, &calls, 2).await;
    assert!(nodes.iter().all(|node| node.store.sharded_channel()));
    drop(nodes);
    let mut sent = Vec::new();
    for mode in [ChannelMode::Sharded, ChannelMode::Classic] {
        let nodes = instances_on(&cluster.url(), mode, &calls, 2).await;
        let before = (
            cluster_counter(&cluster, "cluster_stats_messages_publish_sent"),
            cluster_counter(&cluster, "cluster_stats_messages_publishshard_sent"),
        );
        let start = Instant::now();
        invalidate_across(&nodes, 50).await;
        let took = start.elapsed();
        let after = (
            cluster_counter(&cluster, "cluster_stats_messages_publish_sent"),
            cluster_counter(&cluster, "cluster_stats_messages_publishshard_sent"),
        );
        let bus = (after.0 - before.0, after.1 - before.1);
        println!(
            "{mode:?}: 50 invalidations (each a fill, an L1 hit, a purge and its arrival) in {took:?}; cluster bus messages: {} publish, {} publish-shard",
            bus.0, bus.1
        );
        sent.push(bus);
        drop(nodes);
    }
    // Sharded: nothing crosses the bus (the shard has no replicas to tell). Classic: each
    // of the 50 invalidations (and every heartbeat) goes from its node to the 2 others.
    assert_eq!(sent[0], (0, 0), "sharded messages stay on their node");
    assert!(
        sent[1].0 >= 100,
        "classic messages reach every node: {:?}",
        sent[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_of_the_sharded_channels_primary_empties_l1_then_brings_it_back_coherent() {
    if !crate::servers::available() {
        return;
    }
    let mut cluster = tokio::task::spawn_blocking(|| Cluster::start_with(1))
        .await
        .unwrap();
    let calls = Calls::default();
    let nodes = instances_on(&cluster.url(), ChannelMode::Sharded, &calls, 2).await;
    fetch(&nodes[0].app, "/p/f").await;
    fetch(&nodes[1].app, "/p/f").await;
    assert!(in_l1(&nodes[1], "f"));
    // The primary that holds the channel's subscribers.
    let channel = "tiered:#l1";
    let victim = cluster
        .primaries()
        .into_iter()
        .find(|&i| {
            cluster.nodes[i]
                .cli(&["pubsub", "shardnumsub", channel])
                .lines()
                .nth(1)
                .is_some_and(|count| count.trim() == "2")
        })
        .expect("a primary with both instances' subscribers");
    cluster.nodes[victim].kill();
    // Doubt, from the dropped connection or the missing heartbeats: L1 emptied.
    for node in &nodes {
        wait_for(MAX_STALENESS * 3, "L1 flushed after the kill", || {
            !node.flush_events().is_empty() && !in_l1(node, "f")
        })
        .await;
    }
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_for_failover(victim);
        cluster
    })
    .await
    .unwrap();
    // The subscriptions are made again on the new primary, and L1 with them.
    for node in &nodes {
        wait_for(
            Duration::from_secs(20),
            "L1 back in use after the failover",
            || node.store.l1_in_use(),
        )
        .await;
    }
    let promoted = cluster.primaries().into_iter().find(|&i| {
        cluster.nodes[i]
            .cli(&["pubsub", "shardnumsub", channel])
            .lines()
            .nth(1)
            .is_some_and(|count| count.trim() == "2")
    });
    assert!(
        promoted.is_some(),
        "both subscribed on the promoted primary"
    );
    // And coherent: an invalidation on one reaches the other's L1.
    invalidate_across(&nodes, 5).await;
}
