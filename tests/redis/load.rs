//! Faults under sustained load, all on loopback, bounded in time and stopping by
//! themselves: Redis killed and restarted; Redis slow, a black hole and cut mid-reply by a
//! TCP proxy of the test's own; a cluster primary killed and replaced by its replica. No
//! request may fail. Each prints what it measured (run with `--nocapture`, as
//! `scripts/test.sh` does): requests sent, failed, hits, p50 / p99 / max latency, and the
//! circuit breaker's transitions.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use tower_response_cache::RedisStore;
use tower_response_cache::{RedisConfig, store::CircuitStats};

use crate::proxy::{Fault, Proxy};
use crate::servers::{Cluster, RedisServer};
use crate::{Calls, fetch};

/// One request of a load run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// When it was sent, from the start of the run.
    at: Duration,
    latency: Duration,
    ok: bool,
    hit: bool,
}

/// Requests from `concurrency` tasks over `keys` keys, until `duration` has passed (and at
/// most `limit` requests): every sample.
async fn drive(
    app: &Router,
    duration: Duration,
    concurrency: usize,
    keys: usize,
    limit: usize,
) -> Vec<Sample> {
    let start = Instant::now();
    let samples = Arc::new(Mutex::new(Vec::with_capacity(limit)));
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let app = app.clone();
            let samples = Arc::clone(&samples);
            tokio::spawn(async move {
                let mut i = task;
                while start.elapsed() < duration {
                    let path = format!("/load/{}", i % keys);
                    i += concurrency;
                    let sent = Instant::now();
                    let reply = fetch(&app, &path).await;
                    let sample = Sample {
                        at: sent - start,
                        latency: sent.elapsed(),
                        ok: reply.status == http::StatusCode::OK && reply.text().starts_with(&path),
                        hit: reply.x_cache() == "HIT",
                    };
                    let mut samples = samples.lock().unwrap();
                    samples.push(sample);
                    if samples.len() >= limit {
                        return;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let mut samples = std::mem::take(&mut *samples.lock().unwrap());
    samples.sort_by_key(|sample| sample.at);
    samples
}

/// The figures of the samples sent within `from..to`.
struct Summary {
    sent: usize,
    failed: usize,
    hits: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn summarize(samples: &[Sample], from: Duration, to: Duration) -> Summary {
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|sample| sample.at >= from && sample.at < to)
        .collect();
    let mut latencies: Vec<Duration> = window.iter().map(|sample| sample.latency).collect();
    latencies.sort();
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Summary {
        sent: window.len(),
        failed: window.iter().filter(|sample| !sample.ok).count(),
        hits: window.iter().filter(|sample| sample.hit).count(),
        p50: quantile(0.5),
        p99: quantile(0.99),
        max: latencies.last().copied().unwrap_or_default(),
    }
}

/// The circuit breaker's counts over a run, every 10 ms.
#[derive(Clone, Default)]
struct Circuit(Arc<Mutex<Vec<(Duration, CircuitStats)>>>);

impl Circuit {
    /// Records `store`'s circuit from now until `until` has passed.
    fn watch(store: &RedisStore, until: Duration) -> Self {
        let circuit = Self::default();
        let samples = Arc::clone(&circuit.0);
        let store = store.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            while start.elapsed() < until + Duration::from_secs(1) {
                samples
                    .lock()
                    .unwrap()
                    .push((start.elapsed(), store.circuit_stats()));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        circuit
    }

    /// Openings and closings within `from..to`, and whether it was open at the end.
    fn within(&self, from: Duration, to: Duration) -> (u64, u64, bool) {
        let samples = self.0.lock().unwrap();
        let at = |time: Duration| {
            samples
                .iter()
                .rev()
                .find(|(at, _)| *at <= time)
                .or(samples.first())
                .map(|(_, stats)| *stats)
                .unwrap_or_default()
        };
        let (start, end) = (at(from), at(to));
        (
            end.opened - start.opened,
            end.closed - start.closed,
            end.open,
        )
    }
}

fn report(test: &str, phase: &str, summary: &Summary, circuit: (u64, u64, bool)) {
    println!(
        "[load] {test} | {phase:<28} | sent {:>6} | failed {} | hits {:>6} | p50 {:>8.2?} | p99 {:>8.2?} | max {:>8.2?} | circuit: opened {} closed {}{}",
        summary.sent,
        summary.failed,
        summary.hits,
        summary.p50,
        summary.p99,
        summary.max,
        circuit.0,
        circuit.1,
        if circuit.2 { ", open at the end" } else { "" },
    );
}

/// Tight timeouts, so that a fault costs little, and a short cool-down.
fn config(url: &str) -> RedisConfig {
    RedisConfig {
        namespace: "load".into(),
        command_timeout: Duration::from_millis(100),
        breaker_threshold: 5,
        breaker_cooldown: Duration::from_millis(250),
        ..RedisConfig::from_url(url).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_redis_killed_and_restarted_under_sustained_load() {
    if !crate::servers::available() {
        return;
    }
    let mut server = RedisServer::start(&[]);
    let store = RedisStore::connect(config(&server.url())).await.unwrap();
    let calls = Calls::default();
    let (app, _layer) = crate::slow_app(store.clone(), &calls, Duration::from_millis(2));
    let run = Duration::from_secs(7);
    let circuit = Circuit::watch(&store, run);
    let load = tokio::spawn({
        let app = app.clone();
        async move { drive(&app, run, 32, 64, 400_000).await }
    });
    let start = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill();
    let killed = start.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Spawning waits for PING: off the runtime's threads.
    let _server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    let restarted = start.elapsed();
    let samples = load.await.unwrap();
    let test = "kill-restart";
    let phases = [
        ("before the kill", Duration::ZERO, killed),
        ("Redis down", killed, restarted),
        ("after the restart", restarted, run),
        ("the last 2 s", run - Duration::from_secs(2), run),
    ];
    for (phase, from, to) in phases {
        report(
            test,
            phase,
            &summarize(&samples, from, to),
            circuit.within(from, to),
        );
    }
    let all = summarize(&samples, Duration::ZERO, run);
    assert_eq!(all.failed, 0, "no request failed");
    assert!(
        summarize(&samples, Duration::ZERO, killed).hits > 0,
        "hits before"
    );
    assert!(
        summarize(&samples, run - Duration::from_secs(2), run).hits > 0,
        "hits resumed after the restart"
    );
    assert!(
        circuit.within(killed, restarted).0 >= 1,
        "the breaker opened while Redis was down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_redis_slow_stalled_and_cut_through_a_proxy() {
    if !crate::servers::available() {
        return;
    }
    let server = RedisServer::start(&[]);
    let proxy = Proxy::start(server.port).await;
    let store = RedisStore::connect(config(&proxy.url())).await.unwrap();
    let calls = Calls::default();
    let (app, _layer) = crate::slow_app(store.clone(), &calls, Duration::from_millis(2));
    let test = "proxy";
    // Each fault begins with the store healthy (the breaker closed): a recovery between.
    let phases = [
        ("pass", Fault::Pass),
        ("20 ms latency", Fault::Delay(Duration::from_millis(20))),
        (
            "300 ms latency (> timeout)",
            Fault::Delay(Duration::from_millis(300)),
        ),
        ("recovered", Fault::Pass),
        ("black hole", Fault::BlackHole),
        ("recovered", Fault::Pass),
        ("reset mid-reply", Fault::Reset),
        ("recovered", Fault::Pass),
    ];
    let mut worst = Duration::ZERO;
    for (phase, fault) in phases {
        proxy.set(fault);
        let phase_length = Duration::from_millis(1500);
        let circuit = Circuit::watch(&store, phase_length);
        let samples = drive(&app, phase_length, 16, 32, 200_000).await;
        let summary = summarize(&samples, Duration::ZERO, phase_length);
        let transitions = circuit.within(Duration::ZERO, phase_length);
        report(test, phase, &summary, transitions);
        assert_eq!(summary.failed, 0, "{phase}: no request failed");
        worst = worst.max(summary.max);
        match fault {
            Fault::Pass => {
                assert!(summary.hits > 0, "{phase}: hits");
                assert!(!transitions.2, "{phase}: the circuit closed again");
            }
            // Faults the command timeout sees open the circuit.
            Fault::Delay(delay) if delay > Duration::from_millis(100) => {
                assert!(transitions.0 >= 1, "{phase}: the circuit opened");
            }
            Fault::BlackHole | Fault::Reset => {
                assert!(transitions.0 >= 1, "{phase}: the circuit opened");
            }
            Fault::Delay(_) => assert!(summary.hits > 0, "{phase}: slower hits"),
        }
    }
    // A stalled store costs a request at most its command timeouts (a read, a fill lock, an
    // inline write: 100 ms each), not the stall; a wide margin for a loaded machine.
    assert!(worst < Duration::from_secs(3), "worst latency {worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_a_cluster_primary_killed_under_load_fails_over_to_its_replica() {
    if !crate::servers::available() {
        return;
    }
    let mut cluster = tokio::task::spawn_blocking(|| Cluster::start_with(1))
        .await
        .unwrap();
    let store = RedisStore::connect(RedisConfig {
        // Cluster commands may be redirected once after a failover.
        command_timeout: Duration::from_millis(250),
        ..config(&cluster.url())
    })
    .await
    .unwrap();
    let calls = Calls::default();
    let (app, _layer) = crate::slow_app(store.clone(), &calls, Duration::from_millis(2));
    let run = Duration::from_secs(14);
    let circuit = Circuit::watch(&store, run);
    let load = tokio::spawn({
        let app = app.clone();
        async move { drive(&app, run, 16, 64, 400_000).await }
    });
    let start = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let victim = cluster.primaries()[0];
    cluster.nodes[victim].kill();
    let killed = start.elapsed();
    // The replica takes over once the others mark the primary failed (node timeout 2 s).
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_for_failover(victim);
        cluster
    })
    .await
    .unwrap();
    let failed_over = start.elapsed();
    let samples = load.await.unwrap();
    let test = "cluster-failover";
    let end = run.max(failed_over);
    for (phase, from, to) in [
        ("before the kill", Duration::ZERO, killed),
        ("primary down", killed, failed_over),
        ("after the failover", failed_over, end),
    ] {
        report(
            test,
            phase,
            &summarize(&samples, from, to),
            circuit.within(from, to),
        );
    }
    let all = summarize(&samples, Duration::ZERO, end);
    assert_eq!(all.failed, 0, "no request failed");
    println!("[load] {test} | failover took {:.2?}", failed_over - killed);

    // Hits resume on every key, those of the failed primary's slots included.
    let deadline = Instant::now() + Duration::from_secs(20);
    for key in 0..64 {
        let path = format!("/after/{key}");
        loop {
            let reply = fetch(&app, &path).await;
            assert_eq!(reply.status, http::StatusCode::OK);
            if reply.x_cache() == "HIT" {
                break;
            }
            assert!(Instant::now() < deadline, "{path} hits after the failover");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(cluster);
}
