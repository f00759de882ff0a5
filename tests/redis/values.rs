//! `ValueCache` on Redis, standalone and the 3-primary cluster: each operation, loads
//! coalesced across two instances, multi operations across slots, a killed server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fred::interfaces::KeysInterface;
use tower_response_cache::RedisStore;
use tower_response_cache::value::{ValueCache, ValueError};

use crate::client::{User, alice};
use crate::{Calls, Topology, app, fetch, on_both_topologies, store};

on_both_topologies!(
    each_operation_works_on_redis,
    add_is_atomic_across_instances,
    a_thousand_concurrent_loads_on_two_instances_call_the_loader_once,
    multi_operations_span_hash_slots,
    clear_leaves_responses_and_other_namespaces_alone,
    a_killed_server_makes_loads_run_and_reads_report,
    counters_are_shared_and_atomic_across_instances,
    multi_get_is_one_round_trip_per_hash_slot,
);

const MINUTE: Duration = Duration::from_secs(60);

async fn values(topology: &Topology) -> (ValueCache, RedisStore) {
    let store = store(&topology.url(), "trc").await;
    (ValueCache::new(store.clone()), store)
}

async fn each_operation_works_on_redis(topology: &Topology) {
    let (values, store) = values(topology).await;
    values
        .set_tagged("user:42", &alice(), MINUTE, ["user:42"])
        .await
        .unwrap();
    assert_eq!(values.get::<User>("user:42").await.unwrap(), Some(alice()));
    // The JSON is there to read in Redis, under the key the docs name.
    assert_eq!(
        store.redis_key(&values.store_key("user:42")),
        "trc:values:user:42"
    );
    let raw: Option<Vec<u8>> = store.pool().get("trc:values:user:42").await.unwrap();
    let raw = String::from_utf8_lossy(&raw.expect("stored")).into_owned();
    assert!(raw.contains(r#"{"id":42,"name":"alice"}"#), "{raw}");
    // Another type: a miss.
    assert_eq!(values.get::<Vec<u8>>("user:42").await.unwrap(), None);
    assert!(values.exists("user:42").await.unwrap());
    assert!(
        values
            .expire("user:42", Duration::from_secs(600))
            .await
            .unwrap()
    );
    let ttl: i64 = store
        .pool()
        .pttl(store.redis_key("values:user:42"))
        .await
        .unwrap();
    assert!(ttl > 590_000, "{ttl}");
    // Tags reach the value.
    assert_eq!(values.invalidate_tag("user:42").await.unwrap(), 1);
    assert!(!values.exists("user:42").await.unwrap());
    values.set("n", &7u32, MINUTE).await.unwrap();
    assert!(values.delete("n").await.unwrap());
    assert!(!values.delete("n").await.unwrap());
    values
        .set_bytes("blob", &b"\x00\xff"[..], MINUTE)
        .await
        .unwrap();
    assert_eq!(
        values.get_bytes("blob").await.unwrap().as_deref(),
        Some(&b"\x00\xff"[..])
    );
    let stats = values.stats();
    assert_eq!((stats.mismatches, stats.deletes), (1, 1));
}

async fn add_is_atomic_across_instances(topology: &Topology) {
    let (a, _) = values(topology).await;
    let (b, _) = values(topology).await;
    let tasks: Vec<_> = (0..32u32)
        .map(|i| {
            let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { cache.add("once", &i, MINUTE).await.unwrap() })
        })
        .collect();
    let mut added = 0;
    for task in tasks {
        added += usize::from(task.await.unwrap());
    }
    assert_eq!(added, 1);
    assert!(a.get::<u32>("once").await.unwrap().is_some());
}

async fn a_thousand_concurrent_loads_on_two_instances_call_the_loader_once(topology: &Topology) {
    let (a, _) = values(topology).await;
    let (b, _) = values(topology).await;
    let calls = crate::client::concurrent_loads(&[a, b], 1000, Duration::from_millis(200)).await;
    assert_eq!(calls, 1, "one loader call for both instances");
}

async fn multi_operations_span_hash_slots(topology: &Topology) {
    let (values, _) = values(topology).await;
    // Keys that land on different slots (and so, on a cluster, different nodes).
    let keys: Vec<String> = (0..20).map(|i| format!("key-{i}")).collect();
    let numbers: Vec<u32> = (0..20).collect();
    values
        .multi_set(keys.iter().zip(numbers.iter()), MINUTE)
        .await
        .unwrap();
    let got = values.multi_get::<u32, _>(&keys).await.unwrap();
    assert_eq!(got, numbers.iter().copied().map(Some).collect::<Vec<_>>());
}

async fn clear_leaves_responses_and_other_namespaces_alone(topology: &Topology) {
    let (values, store) = values(topology).await;
    let others = ValueCache::new(store.clone()).namespace("others");
    let calls = Calls::default();
    let (app, _layer) = app(store.clone(), &calls);
    fetch(&app, "/page").await;
    values.set("a", &1u8, MINUTE).await.unwrap();
    values.set("b", &2u8, MINUTE).await.unwrap();
    others.set("a", &3u8, MINUTE).await.unwrap();
    assert_eq!(values.clear().await.unwrap(), 2);
    assert_eq!(values.get::<u8>("a").await.unwrap(), None);
    assert_eq!(others.get::<u8>("a").await.unwrap(), Some(3));
    assert_eq!(fetch(&app, "/page").await.x_cache(), "HIT");
}

async fn a_killed_server_makes_loads_run_and_reads_report(topology: &mut Topology) {
    let store = tower_response_cache::RedisStore::connect(tower_response_cache::RedisConfig {
        command_timeout: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(5),
        ..tower_response_cache::RedisConfig::from_url(&topology.url()).unwrap()
    })
    .await
    .unwrap();
    let values = ValueCache::new(store);
    values.set("k", &1u8, MINUTE).await.unwrap();
    topology.kill();
    let calls = AtomicUsize::new(0);
    for _ in 0..5 {
        let got = values
            .get_or_insert_with("k", MINUTE, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ()>(9u8)
            })
            .await;
        assert_eq!(got, Ok(9), "no error surfaces");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert!(matches!(
        values.get::<u8>("k").await,
        Err(ValueError::Store(_))
    ));
    assert!(values.stats().store_errors >= 5);
}

async fn counters_are_shared_and_atomic_across_instances(topology: &Topology) {
    let (a, store) = values(topology).await;
    let (b, _) = values(topology).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { cache.increment("visits", 1).await.unwrap() })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(a.counter("visits").await.unwrap(), Some(200));
    assert_eq!(b.increment("visits", -50).await.unwrap(), 150);
    // A plain integer in Redis, with the default TTL from its creation.
    let ttl: i64 = store
        .pool()
        .pttl(store.redis_key("values:visits"))
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 300_000, "{ttl}");
    // A counter is no value.
    assert_eq!(a.get::<i64>("visits").await.unwrap(), None);
}

/// How often `command` ran, summed over the servers (`INFO commandstats`).
fn calls(topology: &mut Topology, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    topology
        .servers()
        .into_iter()
        .map(|server| {
            server
                .cli(&["INFO", "commandstats"])
                .lines()
                .find_map(|line| {
                    line.trim()
                        .strip_prefix(&prefix)?
                        .split(',')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or(0)
        })
        .sum()
}

async fn multi_get_is_one_round_trip_per_hash_slot(topology: &mut Topology) {
    let (values, _) = values(topology).await;
    // One hash slot for all (the `{user}` hash tag), so one `MGET` even on a cluster.
    let keys: Vec<String> = (0..10).map(|i| format!("{{user}}:{i}")).collect();
    let numbers: Vec<u32> = (0..10).collect();
    values
        .multi_set(keys.iter().zip(numbers.iter()), MINUTE)
        .await
        .unwrap();
    let (mgets, gets) = (calls(topology, "mget"), calls(topology, "get"));
    let mut asked = keys.clone();
    asked.push("{user}:absent".to_owned());
    let got = values.multi_get::<u32, _>(&asked).await.unwrap();
    let mut expected: Vec<Option<u32>> = numbers.iter().copied().map(Some).collect();
    expected.push(None);
    assert_eq!(got, expected);
    assert_eq!(calls(topology, "mget") - mgets, 1, "one MGET");
    assert_eq!(calls(topology, "get") - gets, 0, "no GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_on_a_tiered_store_are_coherent_across_instances() {
    use tower_response_cache::{TieredConfig, TieredStore};
    if !crate::servers::available() {
        return;
    }
    let server = crate::servers::RedisServer::start(&[]);
    let tiered = |_: ()| async {
        let config = TieredConfig {
            heartbeat: Duration::from_millis(50),
            ..TieredConfig::default()
        };
        TieredStore::connect(store(&server.url(), "trc").await, config)
            .await
            .unwrap()
    };
    let (store_a, store_b) = (tiered(()).await, tiered(()).await);
    for store in [&store_a, &store_b] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !store.l1_in_use() {
            assert!(std::time::Instant::now() < deadline, "L1 in use");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let (a, b) = (
        ValueCache::new(store_a.clone()),
        ValueCache::new(store_b.clone()),
    );
    a.set("user:42", &alice(), MINUTE).await.unwrap();
    // Read on B: from Redis, then from B's own memory. (A read that races the arrival of
    // A's write on the channel does not fill B's memory: read again until one has.)
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        assert_eq!(b.get::<User>("user:42").await.unwrap(), Some(alice()));
        if store_b
            .l1()
            .keys()
            .iter()
            .any(|key| key == "values:user:42")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B's memory tier holds it"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A delete on A reaches B's memory copy.
    assert!(a.delete("user:42").await.unwrap());
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    while store_b
        .l1()
        .keys()
        .iter()
        .any(|key| key == "values:user:42")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the delete reached B's L1"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(b.get::<User>("user:42").await.unwrap(), None);
    // Counters live in Redis alone.
    assert_eq!(a.increment("n", 2).await.unwrap(), 2);
    assert_eq!(b.increment("n", 3).await.unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_values_are_read_and_written_in_one_round_trip() {
    use crate::proxy::{Fault, Proxy};
    if !crate::servers::available() {
        return;
    }
    let server = crate::servers::RedisServer::start(&[]);
    let proxy = Proxy::start(server.port).await;
    let store = tower_response_cache::RedisStore::connect(tower_response_cache::RedisConfig {
        command_timeout: Duration::from_secs(5),
        ..tower_response_cache::RedisConfig::from_url(&proxy.url()).unwrap()
    })
    .await
    .unwrap();
    let values = ValueCache::new(store);
    let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    let numbers: Vec<u32> = (0..10).collect();
    values.set("warm", &0u32, MINUTE).await.unwrap();
    // 100 ms each way: a round trip is 200 ms, ten of them two seconds.
    proxy.set(Fault::Delay(Duration::from_millis(100)));
    let started = std::time::Instant::now();
    values
        .multi_set(keys.iter().zip(numbers.iter()), MINUTE)
        .await
        .unwrap();
    let wrote = started.elapsed();
    let started = std::time::Instant::now();
    let got = values.multi_get::<u32, _>(&keys).await.unwrap();
    let read = started.elapsed();
    proxy.set(Fault::Pass);
    println!("ten values written in {wrote:?}, read in {read:?} (one round trip: ~200 ms)");
    assert_eq!(got, numbers.iter().copied().map(Some).collect::<Vec<_>>());
    assert!(
        wrote < Duration::from_millis(1000),
        "one round trip, not ten: {wrote:?}"
    );
    assert!(
        read < Duration::from_millis(1000),
        "one round trip, not ten: {read:?}"
    );
}
