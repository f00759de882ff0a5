//! What a client reads after a write: once a response's body has been delivered, the next
//! request is answered from it; once a newer response was delivered for a key, no later
//! request gets an older one — not from a flight, not from a pending write, not from the
//! store. On current-thread and multi-thread runtimes, with inline and background writes.

use std::future::Future;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use tower_response_cache::{CacheLayer, MemoryStore, WriteMode, store::Store};

use crate::harness::{Calls, fetch, get_with, snapshot};

fn page(calls: &Calls, cache: CacheLayer) -> Router {
    Router::new()
        .route(
            "/page",
            get(|State(calls): State<Calls>| async move { format!("page #{}", calls.hit()) }),
        )
        .with_state(calls.clone())
        .layer(cache)
}

/// Runs `test` with each write mode on a current-thread and a multi-thread runtime.
fn on_every_runtime<F, Fut>(test: F)
where
    F: Fn(WriteMode) -> Fut,
    Fut: Future<Output = ()>,
{
    for mode in [WriteMode::Auto, WriteMode::Background, WriteMode::Inline] {
        for threads in [None, Some(2)] {
            let runtime = match threads {
                None => tokio::runtime::Builder::new_current_thread(),
                Some(threads) => {
                    let mut builder = tokio::runtime::Builder::new_multi_thread();
                    builder.worker_threads(threads);
                    builder
                }
            }
            .enable_all()
            .build()
            .unwrap();
            runtime.block_on(test(mode));
        }
    }
}

#[test]
fn the_next_request_is_answered_from_the_response_just_delivered() {
    on_every_runtime(|mode| async move {
        let calls = Calls::default();
        let store = MemoryStore::new(1 << 20);
        let cache = CacheLayer::new(store.clone()).write_mode(mode);
        let app = page(&calls, cache.clone());
        let replies = [
            fetch(&app, "/page").await,
            fetch(&app, "/page").await,
            fetch(&app, "/page").await,
        ];
        let seen: Vec<(&str, String)> = replies
            .iter()
            .map(|reply| (reply.x_cache(), reply.text()))
            .collect();
        assert_eq!(
            seen,
            [
                ("MISS", "page #1".to_owned()),
                ("HIT", "page #1".to_owned()),
                ("HIT", "page #1".to_owned())
            ],
            "{mode:?}"
        );
        let stats = snapshot(&cache).total;
        assert_eq!(
            (stats.misses, stats.hits, stats.coalesced),
            (1, 2, 0),
            "{mode:?}: a request answered from an entry is a hit"
        );
        if mode != WriteMode::Background {
            assert!(
                store.get("cache:GET:/page").await.unwrap().is_some(),
                "{mode:?}: in the store once the body is delivered"
            );
        }
    });
}

#[test]
fn after_a_refresh_no_request_gets_the_older_body() {
    on_every_runtime(|mode| async move {
        let calls = Calls::default();
        let store = MemoryStore::new(1 << 20);
        let cache = CacheLayer::new(store.clone()).write_mode(mode);
        let app = page(&calls, cache.clone());
        let first = fetch(&app, "/page").await;
        assert_eq!(
            (first.x_cache(), first.text().as_str()),
            ("MISS", "page #1")
        );
        let refresh = get_with(&app, "/page", &[("x-cache-bypass", "1")]).await;
        assert_eq!(
            (refresh.x_cache(), refresh.text().as_str()),
            ("REFRESH", "page #2"),
            "{mode:?}"
        );
        for _ in 0..3 {
            let read = fetch(&app, "/page").await;
            assert_eq!(
                (read.x_cache(), read.text().as_str()),
                ("HIT", "page #2"),
                "{mode:?}: the newer response, whatever write lands when"
            );
            tokio::task::yield_now().await;
        }
        // The store comes to hold the newer entry (a background write lands when its task
        // runs: bounded wait), and keeps it once every write has landed.
        let newer = |store: MemoryStore| async move {
            store
                .get("cache:GET:/page")
                .await
                .unwrap()
                .is_some_and(|entry| entry.body == "page #2")
        };
        for _ in 0..400 {
            if cache.in_flight() == 0 && newer(store.clone()).await {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let stored = store.get("cache:GET:/page").await.unwrap().unwrap();
        assert_eq!(stored.body, "page #2", "{mode:?}");
        assert_eq!(calls.get(), 2, "{mode:?}");
    });
}
