//! `RedisStore` against real `redis-server` processes: a standalone server and a local
//! 3-primary Redis Cluster, both started by the tests on free loopback ports.

#![allow(clippy::unwrap_used)]

// Shared with the cache tests, which use all of it.
#[allow(dead_code)]
#[path = "../common/client.rs"]
mod client;
mod config;
#[allow(dead_code)]
mod faults;
#[path = "../common/installed.rs"]
mod installed;
mod invalidation;
mod load;
mod observe;
mod proxy;
mod purge_load;
mod rfc9111;
mod security;
mod servers;
mod shared;
mod tiered;
mod values;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
pub(crate) use client::{Calls, fetch};
use servers::{Cluster, RedisServer};
use tower_response_cache::{CacheLayer, WriteMode};
use tower_response_cache::{RedisConfig, RedisStore};

/// Where the tests' Redis runs.
pub(crate) enum Topology {
    Standalone(RedisServer),
    Cluster(Cluster),
}

impl Topology {
    pub(crate) fn url(&self) -> String {
        match self {
            Self::Standalone(server) => server.url(),
            Self::Cluster(cluster) => cluster.url(),
        }
    }

    pub(crate) fn servers(&mut self) -> Vec<&mut RedisServer> {
        match self {
            Self::Standalone(server) => vec![server],
            Self::Cluster(cluster) => cluster.nodes.iter_mut().collect(),
        }
    }

    /// Kills every server process.
    pub(crate) fn kill(&mut self) {
        self.servers().into_iter().for_each(RedisServer::kill);
    }

    /// Starts every server again on its port (a cluster re-forms from its nodes.conf).
    pub(crate) fn restart(&mut self) {
        self.servers().into_iter().for_each(RedisServer::restart);
        if let Self::Cluster(cluster) = self {
            cluster.wait_until_ok();
        }
    }

    /// Stops answering commands on every server, connections left open.
    pub(crate) fn pause(&mut self, millis: u64) {
        for server in self.servers() {
            server.cli(&["CLIENT", "PAUSE", &millis.to_string(), "ALL"]);
        }
    }
}

/// Writes each test once and runs it against a standalone server and a cluster.
macro_rules! on_both_topologies {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn standalone() {
                if !crate::servers::available() {
                    return;
                }
                #[allow(unused_mut)]
                let mut topology = crate::Topology::Standalone(crate::servers::RedisServer::start(&[]));
                super::$name(&mut topology).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                if !crate::servers::available() {
                    return;
                }
                #[allow(unused_mut)]
                let mut topology = crate::Topology::Cluster(crate::servers::Cluster::start());
                super::$name(&mut topology).await;
            }
        }
    )*};
}
pub(crate) use on_both_topologies;

/// A store on `url` in `namespace`, with the other settings at their defaults.
pub(crate) async fn store(url: &str, namespace: &str) -> RedisStore {
    // Generous timeouts: a loaded machine must not turn an expected hit into a miss. The
    // fault tests set their own.
    let config = RedisConfig {
        namespace: namespace.to_owned(),
        command_timeout: std::time::Duration::from_secs(2),
        connect_timeout: std::time::Duration::from_secs(5),
        ..RedisConfig::from_url(url).unwrap()
    };
    RedisStore::connect(config).await.unwrap()
}

/// An app whose every path answers `<path> #<call>`, cached on `store` with inline writes.
pub(crate) fn app(store: RedisStore, calls: &Calls) -> (Router, CacheLayer) {
    slow_app(store, calls, std::time::Duration::ZERO)
}

/// [`app`] with a handler that takes `delay`.
pub(crate) fn slow_app(
    store: RedisStore,
    calls: &Calls,
    delay: std::time::Duration,
) -> (Router, CacheLayer) {
    let layer = CacheLayer::new(store)
        .namespace("app")
        .write_mode(WriteMode::Inline);
    let router = Router::new()
        .route(
            "/{*path}",
            get(
                move |State(calls): State<Calls>, uri: http::Uri| async move {
                    let n = calls.hit();
                    tokio::time::sleep(delay).await;
                    format!("{} #{n}", uri.path())
                },
            ),
        )
        .with_state(calls.clone())
        .layer(layer.clone());
    (router, layer)
}
