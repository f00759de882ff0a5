//! Purges from application code through `CacheHandle`: by tag, URL, key, prefix and the
//! whole namespace, hard and soft, on the memory store. Each test checks which response a
//! client gets after the purge, how often the handler ran, and what the store holds.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Extension, Router};
use http::header;
use tower_response_cache::{CacheLayer, CacheTags, MemoryStore, key::CacheKey, policy::TagLimits};

use crate::harness::{Calls, fetch, get_with, layer, snapshot};

/// `/users/{id}`, `/users/{id}/posts` (tagged by header) and `/teams/{id}/members` (tagged
/// by extension with its members), each saying how often handlers ran.
fn app(calls: &Calls, cache: CacheLayer) -> Router {
    Router::new()
        .route(
            "/users/{id}",
            get(
                |State(calls): State<Calls>, Path(id): Path<u32>| async move {
                    let n = calls.hit();
                    (
                        [("surrogate-key", format!("user:{id} users"))],
                        format!("user {id} #{n}"),
                    )
                },
            ),
        )
        .route(
            "/users/{id}/posts",
            get(
                |State(calls): State<Calls>, Path(id): Path<u32>| async move {
                    let n = calls.hit();
                    (
                        [("cache-tag", format!("user:{id}, posts"))],
                        format!("posts of {id} #{n}"),
                    )
                },
            ),
        )
        .route(
            "/teams/{id}/members",
            get(|State(calls): State<Calls>| async move {
                let n = calls.hit();
                (
                    Extension(CacheTags::new(["user:42", "user:4", "team:7"])),
                    format!("members #{n}"),
                )
            }),
        )
        .with_state(calls.clone())
        .layer(cache)
}

#[tokio::test(start_paused = true)]
async fn a_tag_purge_takes_every_page_of_the_tag_and_no_other() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let handle = cache.handle();
    let app = app(&calls, cache.clone());
    let pages = [
        "/users/42",
        "/users/42/posts",
        "/teams/7/members",
        "/users/4",
    ];
    for page in pages {
        assert_eq!(fetch(&app, page).await.x_cache(), "MISS", "{page}");
        assert_eq!(fetch(&app, page).await.x_cache(), "HIT", "{page}");
    }
    assert_eq!(calls.get(), 4);

    // `user:4` is a prefix of `user:42`, not the same tag.
    assert_eq!(handle.invalidate_tag("user:42").await.unwrap(), 3);
    let mut after = Vec::new();
    for page in pages {
        after.push(fetch(&app, page).await.x_cache().to_owned());
    }
    assert_eq!(after, ["MISS", "MISS", "MISS", "HIT"]);
    assert_eq!(calls.get(), 7);
    assert_eq!(
        fetch(&app, "/users/42").await.text(),
        "user 42 #5",
        "the fresh copy"
    );

    let purges = snapshot(&cache).purges;
    assert_eq!(purges.hard["tag"], 1);
    assert_eq!(purges.entries, 3);
    store.run_pending_tasks();
    assert_eq!(store.entry_count(), 4);
}

#[tokio::test(start_paused = true)]
async fn tag_headers_are_stripped_unless_asked_to_stay() {
    let calls = Calls::default();
    let (cache, _) = layer();
    let stripped = app(&calls, cache.clone());
    for _ in 0..2 {
        let reply = fetch(&stripped, "/users/1").await;
        assert_eq!(reply.header("surrogate-key"), None, "{}", reply.x_cache());
    }
    let kept = app(&calls, cache.strip_tag_headers(false).namespace("kept"));
    for expected in ["MISS", "HIT"] {
        let reply = fetch(&kept, "/users/1/posts").await;
        assert_eq!(reply.x_cache(), expected);
        assert_eq!(reply.header("cache-tag"), Some("user:1, posts"));
    }
}

#[tokio::test(start_paused = true)]
async fn tags_past_the_limits_are_ignored_and_counted_and_the_page_still_stored() {
    let calls = Calls::default();
    let (cache, _) = layer();
    let cache = cache.tag_limits(TagLimits::new().max_tags(1));
    let handle = cache.handle();
    let app = app(&calls, cache.clone());
    fetch(&app, "/teams/7/members").await;
    assert_eq!(fetch(&app, "/teams/7/members").await.x_cache(), "HIT");
    assert_eq!(snapshot(&cache).purges.tags_ignored, 2);
    assert_eq!(handle.invalidate_tag("team:7").await.unwrap(), 0, "ignored");
    assert_eq!(handle.invalidate_tag("user:42").await.unwrap(), 1, "kept");
}

#[tokio::test(start_paused = true)]
async fn a_url_purge_takes_every_host_and_variant_of_it_and_nothing_else() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let handle = cache.handle();
    let app = Router::new()
        .route(
            "/page",
            get(|State(calls): State<Calls>| async move {
                let n = calls.hit();
                ([(header::VARY, "accept-language")], format!("page #{n}"))
            }),
        )
        .with_state(calls.clone())
        .layer(cache.clone());
    let variants = [
        ("a.example", "de"),
        ("a.example", "en"),
        ("b.example", "de"),
    ];
    for (host, lang) in variants {
        let headers = [("host", host), ("accept-language", lang)];
        get_with(&app, "/page", &headers).await;
        assert_eq!(get_with(&app, "/page", &headers).await.x_cache(), "HIT");
    }
    get_with(&app, "/page?other=1", &[("host", "a.example")]).await;
    assert_eq!(calls.get(), 4);

    // With a host: that host's variants only.
    assert_eq!(handle.invalidate("http://a.example/page").await.unwrap(), 2);
    let de = [("host", "b.example"), ("accept-language", "de")];
    assert_eq!(get_with(&app, "/page", &de).await.x_cache(), "HIT");
    // Without one: every host's.
    assert_eq!(handle.invalidate("/page").await.unwrap(), 1);
    assert_eq!(store.keys(), ["t:GET:a.example/page?other=1"]);
    assert_eq!(get_with(&app, "/page", &de).await.x_cache(), "MISS");
    let other = get_with(&app, "/page?other=1", &[("host", "a.example")]).await;
    assert_eq!(other.x_cache(), "HIT", "another URL");
}

#[tokio::test(start_paused = true)]
async fn a_public_host_keys_every_host_as_one_and_url_purges_find_it() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let public = "Shop.example".parse().unwrap();
    let cache =
        cache.key_builder(tower_response_cache::key::DefaultKeyBuilder::new().public_host(public));
    let handle = cache.handle();
    let app = app(&calls, cache);
    // Two instances' own addresses and an internal one: one entry, one handler call.
    let first = get_with(&app, "/users/42", &[("host", "localhost:3000")]).await;
    assert_eq!(first.x_cache(), "MISS");
    for host in ["localhost:3001", "10.0.0.7:8080", "SHOP.example"] {
        let response = get_with(&app, "/users/42", &[("host", host)]).await;
        assert_eq!(response.x_cache(), "HIT", "{host}");
        assert_eq!(response.text(), "user 42 #1");
    }
    assert_eq!(calls.get(), 1);
    assert_eq!(store.keys(), ["t:GET:shop.example/users/42"]);

    // A purge by URL finds the entry whatever host it names, or none.
    assert_eq!(
        handle
            .invalidate("http://localhost:3001/users/42")
            .await
            .unwrap(),
        1
    );
    assert!(store.keys().is_empty());
    get_with(&app, "/users/42", &[("host", "localhost:3000")]).await;
    assert_eq!(handle.invalidate("/users/42").await.unwrap(), 1);
    get_with(&app, "/users/42/posts", &[("host", "localhost:3000")]).await;
    assert_eq!(
        handle
            .invalidate_prefix("http://other.example/users/")
            .await
            .unwrap(),
        1
    );
    assert!(store.keys().is_empty());
    assert_eq!(calls.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_url_purge_finds_the_namespace_of_its_route() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let cache = cache.route(
        "/users/{id}",
        tower_response_cache::RoutePolicy::new().namespace("people"),
    );
    let handle = cache.handle();
    let app = app(&calls, cache);
    let host = [("host", "h.example")];
    get_with(&app, "/users/9", &host).await;
    assert!(
        store
            .keys()
            .contains(&"t:people:GET:h.example/users/9".to_owned())
    );
    assert_eq!(
        handle.invalidate("http://h.example/users/9").await.unwrap(),
        1
    );
    assert_eq!(get_with(&app, "/users/9", &host).await.x_cache(), "MISS");
    get_with(&app, "/users/9", &host).await;
    assert_eq!(handle.invalidate("/users/9").await.unwrap(), 1, "any host");
}

#[tokio::test(start_paused = true)]
async fn a_prefix_purge_takes_the_urls_below_a_path_and_not_its_neighbours() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let handle = cache.handle();
    let app = app(&calls, cache);
    for page in [
        "/users/42",
        "/users/42?tab=2",
        "/users/42/posts",
        "/users/420",
        "/users/4",
    ] {
        fetch(&app, page).await;
    }
    assert_eq!(handle.invalidate_prefix("/users/42").await.unwrap(), 3);
    let mut left = store.keys();
    left.sort();
    assert_eq!(left, ["t:GET:/users/4", "t:GET:/users/420"]);
    assert_eq!(handle.invalidate_prefix("/users/").await.unwrap(), 2);
    assert!(store.keys().is_empty());
}

#[tokio::test(start_paused = true)]
async fn urls_that_need_escaping_are_purged_by_their_normalized_key() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let handle = cache.handle();
    let app = Router::new()
        .fallback(get(|State(calls): State<Calls>| async move {
            format!("#{}", calls.hit())
        }))
        .with_state(calls.clone())
        .layer(cache);
    fetch(&app, "/caf%C3%A9/a%7Cb?q=%2a&x=1").await;
    fetch(&app, "/a*b").await;
    assert_eq!(store.keys().len(), 2);
    // Another spelling of the same URL: percent-encoding normalized, parameters sorted.
    assert_eq!(
        handle
            .invalidate("/caf%c3%a9/a%7cb?x=1&q=%2A")
            .await
            .unwrap(),
        1
    );
    // `*` is a literal, not a pattern: `/a*b` does not take `/aXb`.
    fetch(&app, "/aXb").await;
    assert_eq!(handle.invalidate_prefix("/a*b").await.unwrap(), 1);
    assert_eq!(store.keys(), ["t:GET:/aXb"]);
}

#[tokio::test(start_paused = true)]
async fn a_key_purge_takes_the_key_a_custom_key_builder_gave() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let cache =
        cache.key_fn(|parts| Some(CacheKey::new(format!("user-{}", parts.uri.path().len()))));
    let handle = cache.handle();
    let app = app(&calls, cache);
    fetch(&app, "/users/1").await;
    assert_eq!(store.keys(), ["t:user-8"]);
    assert_eq!(
        handle
            .invalidate_key(&CacheKey::new("user-8"))
            .await
            .unwrap(),
        1
    );
    assert!(store.keys().is_empty());
    // A URL purge builds the key as a request would; a prefix cannot be told.
    fetch(&app, "/users/2").await;
    assert_eq!(handle.invalidate("/users/2").await.unwrap(), 1);
    let error = handle.invalidate_prefix("/users").await.unwrap_err();
    assert_eq!(
        error.kind(),
        tower_response_cache::store::StoreErrorKind::Unsupported
    );
}

#[tokio::test(start_paused = true)]
async fn clear_takes_this_layers_namespace_only() {
    let calls = Calls::default();
    let store = MemoryStore::new(1 << 20);
    let a = CacheLayer::new(store.clone()).namespace("shop");
    let b = CacheLayer::new(store.clone()).namespace("shop-eu");
    let app_a = app(&calls, a.clone());
    let app_b = app(&calls, b);
    fetch(&app_a, "/users/1").await;
    fetch(&app_a, "/users/2").await;
    fetch(&app_b, "/users/1").await;
    assert_eq!(a.handle().clear().await.unwrap(), 2);
    assert_eq!(store.keys(), ["shop-eu:GET:/users/1"]);
    assert_eq!(fetch(&app_b, "/users/1").await.x_cache(), "HIT");
    assert_eq!(snapshot(&a).purges.hard["clear"], 1);
}

#[tokio::test(start_paused = true)]
async fn a_soft_purge_serves_the_stale_copy_once_while_one_revalidation_runs() {
    let calls = Calls::default();
    let (cache, _) = layer();
    let cache = cache.stale_while_revalidate(Duration::from_secs(30));
    let handle = cache.handle();
    let app = app(&calls, cache.clone());
    fetch(&app, "/users/42").await;
    assert_eq!(fetch(&app, "/users/42").await.x_cache(), "HIT");

    assert_eq!(handle.soft().invalidate_tag("users").await.unwrap(), 1);
    let stale = fetch(&app, "/users/42").await;
    assert_eq!(
        (stale.x_cache(), stale.text().as_str()),
        ("STALE", "user 42 #1")
    );
    // The one background refresh lands; the next requests are hits on it.
    let mut fresh = fetch(&app, "/users/42").await;
    for _ in 0..100 {
        if fresh.text() == "user 42 #2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        fresh = fetch(&app, "/users/42").await;
    }
    assert_eq!(
        (fresh.x_cache(), fresh.text().as_str()),
        ("HIT", "user 42 #2")
    );
    assert_eq!(calls.get(), 2, "one revalidation");
    assert_eq!(snapshot(&cache).purges.soft["tag"], 1);

    // A hard purge after a soft one is hard.
    handle.soft().invalidate("/users/42").await.unwrap();
    handle.invalidate("/users/42").await.unwrap();
    assert_eq!(fetch(&app, "/users/42").await.x_cache(), "MISS");
}

#[tokio::test]
async fn a_soft_purge_without_stale_windows_refetches_on_the_next_request() {
    let calls = Calls::default();
    let (cache, _) = layer();
    let handle = cache.handle();
    let app = app(&calls, cache);
    fetch(&app, "/users/5").await;
    assert_eq!(
        handle.soft().invalidate_prefix("/users/5").await.unwrap(),
        1
    );
    let reply = fetch(&app, "/users/5").await;
    assert_eq!(reply.text(), "user 5 #2");
    assert_eq!(fetch(&app, "/users/5").await.x_cache(), "HIT");
}

#[tokio::test(start_paused = true)]
async fn a_fetch_under_way_when_its_tag_is_purged_stores_nothing() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let handle = cache.handle();
    let app = Router::new()
        .route(
            "/slow",
            get(|State(calls): State<Calls>| async move {
                let n = calls.hit();
                tokio::time::sleep(Duration::from_millis(300)).await;
                ([("surrogate-key", "slow")], format!("slow #{n}"))
            }),
        )
        .with_state(calls.clone())
        .layer(cache.clone());
    let first = tokio::spawn({
        let app = app.clone();
        async move { fetch(&app, "/slow").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    handle.invalidate_tag("slow").await.unwrap();
    // A request after the purge does not wait for the fetch that began before it.
    let second = fetch(&app, "/slow").await;
    assert_eq!(second.text(), "slow #2");
    assert_eq!(first.await.unwrap().text(), "slow #1");
    let stored = store.keys();
    assert_eq!(stored.len(), 1);
    let third = fetch(&app, "/slow").await;
    assert_eq!((third.x_cache(), third.text().as_str()), ("HIT", "slow #2"));
    assert_eq!(snapshot(&cache).total.not_stored["invalidated"], 1);
}

#[tokio::test(start_paused = true)]
async fn bad_urls_are_errors_not_panics() {
    let (cache, _) = layer();
    let handle = cache.handle();
    for bad in ["", "not a url", "users/1", "http://[::1", "/a b"] {
        assert!(handle.invalidate(bad).await.is_err(), "{bad:?}");
        assert!(handle.invalidate_prefix(bad).await.is_err(), "{bad:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_namespace_cannot_pass_for_the_stores_own_records() {
    let calls = Calls::default();
    let store = MemoryStore::new(1 << 20);
    let cache = CacheLayer::new(store.clone()).namespace("#tag");
    let app = app(&calls, cache.clone());
    fetch(&app, "/users/1").await;
    assert_eq!(store.keys(), ["%23tag:GET:/users/1"]);
    assert_eq!(cache.handle().clear().await.unwrap(), 1);
}
