//! What one client sends never changes what another receives: the host is keyed, requests
//! with cookies use only entries the origin marked shared (no cache deception), and the
//! credentials that per-user keys or `Vary` depend on are never written into the store.

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::{HeaderMap, HeaderName, header};
use tower_response_cache::policy::RequestCookies;
use tower_response_cache::{CacheLayer, RoutePolicy, key::DefaultKeyBuilder, store::Store};

use crate::harness::{Calls, entry_count, get_with, layer, snapshot};

/// A page rendered from the request's `Host`, `Cookie` and `Authorization`, with the
/// response headers `cache_control` (none when empty) and `Vary: vary` (likewise).
fn page(
    calls: &Calls,
    cache: CacheLayer,
    cache_control: &'static str,
    vary: &'static str,
) -> Router {
    let handler = move |State(calls): State<Calls>, headers: HeaderMap| async move {
        let value = |name: HeaderName| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        let text = format!(
            "host={} cookie={} auth={} #{}",
            value(header::HOST),
            value(header::COOKIE),
            value(header::AUTHORIZATION),
            calls.hit()
        );
        let mut response = text.into_response();
        if !cache_control.is_empty() {
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, cache_control.parse().unwrap());
        }
        if !vary.is_empty() {
            response
                .headers_mut()
                .insert(header::VARY, vary.parse().unwrap());
        }
        response
    };
    Router::new()
        .route("/page", get(handler))
        .route("/account/profile", get(handler))
        .route("/account/profile.css", get(handler))
        .route("/assets/app.js", get(handler))
        .with_state(calls.clone())
        .layer(cache)
}

#[tokio::test]
async fn a_page_rendered_for_another_host_is_never_served_to_this_one() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let app = page(&calls, cache, "public, max-age=60", "");
    let evil = get_with(&app, "/page", &[("host", "evil.example")]).await;
    assert_eq!(evil.text(), "host=evil.example cookie=- auth=- #1");
    let real = get_with(&app, "/page", &[("host", "www.example.com")]).await;
    assert_eq!(
        (real.x_cache(), real.text().as_str()),
        ("MISS", "host=www.example.com cookie=- auth=- #2")
    );
    let again = get_with(&app, "/page", &[("host", "www.example.com")]).await;
    assert_eq!(
        (again.x_cache(), again.text().as_str()),
        ("HIT", "host=www.example.com cookie=- auth=- #2")
    );
}

#[tokio::test]
async fn a_request_with_an_ambiguous_host_is_passed_to_the_service() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let app = page(&calls, cache.clone(), "public, max-age=60", "");
    for _ in 0..2 {
        let reply = get_with(
            &app,
            "/page",
            &[("host", "www.example.com"), ("host", "evil.example")],
        )
        .await;
        assert_eq!(reply.x_cache(), "BYPASS");
    }
    assert_eq!(calls.get(), 2);
    assert_eq!(entry_count(&store).await, 0);
    assert_eq!(snapshot(&cache).total.bypasses, 2);
}

#[tokio::test]
async fn a_request_with_cookies_is_not_stored_under_a_default_ttl() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let app = page(&calls, cache.clone(), "", "");
    let alice = get_with(&app, "/page", &[("cookie", "session=alice")]).await;
    assert_eq!(
        (alice.x_cache(), alice.header("cache-status")),
        (
            "UNCACHEABLE",
            Some("tower-response-cache; fwd=miss; detail=cookie")
        )
    );
    assert_eq!(entry_count(&store).await, 0, "alice's page is not stored");
    let anonymous = get_with(&app, "/page", &[]).await;
    assert_eq!(
        (anonymous.x_cache(), anonymous.text().as_str()),
        ("MISS", "host=- cookie=- auth=- #2")
    );
    // Bob does not get the anonymous page either: his response may differ.
    let bob = get_with(&app, "/page", &[("cookie", "session=bob")]).await;
    assert_eq!(bob.text(), "host=- cookie=session=bob auth=- #3");
    assert_eq!(bob.x_cache(), "UNCACHEABLE");
    // And his request took nothing away from the anonymous entry.
    let anonymous = get_with(&app, "/page", &[]).await;
    assert_eq!(
        (anonymous.x_cache(), anonymous.text().as_str()),
        ("HIT", "host=- cookie=- auth=- #2")
    );
    let stats = snapshot(&cache);
    assert_eq!(stats.total.not_stored.get("cookie"), Some(&2));
}

#[tokio::test]
async fn a_request_with_cookies_uses_entries_the_origin_marks_shared() {
    for cache_control in ["public, max-age=60", "s-maxage=60"] {
        let calls = Calls::default();
        let (cache, _store) = layer();
        let app = page(&calls, cache, cache_control, "");
        let alice = get_with(&app, "/page", &[("cookie", "session=alice")]).await;
        assert_eq!(alice.x_cache(), "MISS", "{cache_control}");
        // The origin said the response is the same for everyone.
        for cookie in [None, Some("session=bob")] {
            let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
            let reply = get_with(&app, "/page", &headers).await;
            assert_eq!(
                (reply.x_cache(), reply.text().as_str()),
                ("HIT", "host=- cookie=session=alice auth=- #1"),
                "{cache_control} {cookie:?}"
            );
        }
    }
    // A browser lifetime alone is no such declaration.
    let calls = Calls::default();
    let (cache, store) = layer();
    let app = page(&calls, cache, "max-age=60", "");
    get_with(&app, "/page", &[("cookie", "session=alice")]).await;
    assert_eq!(entry_count(&store).await, 0);
}

#[tokio::test]
async fn a_route_that_ignores_cookies_caches_requests_that_carry_them() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let cache = cache.route(
        "/assets/app.js",
        RoutePolicy::new().request_cookies(RequestCookies::Ignore),
    );
    let app = page(&calls, cache, "", "");
    get_with(&app, "/assets/app.js", &[("cookie", "_ga=1")]).await;
    let reply = get_with(&app, "/assets/app.js", &[("cookie", "_ga=2")]).await;
    assert_eq!(reply.x_cache(), "HIT");
    // Other routes keep the default.
    get_with(&app, "/page", &[("cookie", "_ga=1")]).await;
    let reply = get_with(&app, "/page", &[("cookie", "_ga=1")]).await;
    assert_eq!(reply.x_cache(), "UNCACHEABLE");

    // The layer-wide setting.
    let calls = Calls::default();
    let (cache, _store) = layer();
    let app = page(
        &calls,
        cache.request_cookies(RequestCookies::Ignore),
        "",
        "",
    );
    get_with(&app, "/page", &[("cookie", "_ga=1")]).await;
    assert_eq!(
        get_with(&app, "/page", &[("cookie", "_ga=2")])
            .await
            .x_cache(),
        "HIT"
    );
}

#[tokio::test]
async fn a_dynamic_page_under_a_static_looking_path_is_not_stored_for_its_user() {
    // Web cache deception: the victim is lured to `/account/profile.css`, which the
    // application answers with the victim's profile; the attacker then fetches the same URL
    // hoping for the stored copy. The extension decides nothing: the victim's cookie does.
    for path in ["/account/profile.css", "/account/profile"] {
        let calls = Calls::default();
        let (cache, store) = layer();
        let app = page(&calls, cache, "", "");
        let victim = get_with(&app, path, &[("cookie", "session=victim")]).await;
        assert_eq!(victim.text(), "host=- cookie=session=victim auth=- #1");
        assert_eq!(victim.x_cache(), "UNCACHEABLE", "{path}");
        assert_eq!(entry_count(&store).await, 0, "{path}");
        let attacker = get_with(&app, path, &[]).await;
        assert_eq!(
            attacker.text(),
            "host=- cookie=- auth=- #2",
            "{path}: the attacker gets only their own page"
        );
    }
}

#[tokio::test]
async fn credentials_never_appear_in_keys_or_stored_entries() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let cache = cache
        .key_builder(DefaultKeyBuilder::new().header(header::AUTHORIZATION))
        .allow_authorized(true);
    let app = page(&calls, cache, "public, max-age=60", "Cookie");
    let alice = [
        ("authorization", "Bearer s3cr3t"),
        ("cookie", "session=alice-secret"),
    ];
    get_with(&app, "/page", &alice).await;
    let hit = get_with(&app, "/page", &alice).await;
    assert_eq!(hit.x_cache(), "HIT");
    // Another user's token is another key; another cookie another variant.
    let bob = get_with(
        &app,
        "/page",
        &[
            ("authorization", "Bearer other"),
            ("cookie", "session=alice-secret"),
        ],
    )
    .await;
    assert_eq!(bob.x_cache(), "MISS");
    let eve = get_with(
        &app,
        "/page",
        &[
            ("authorization", "Bearer s3cr3t"),
            ("cookie", "session=eve"),
        ],
    )
    .await;
    assert_eq!(eve.x_cache(), "MISS");

    store.run_pending_tasks();
    let keys: Vec<String> = store.keys();
    assert!(!keys.is_empty());
    for key in &keys {
        assert!(
            !key.contains("s3cr3t") && !key.contains("Bearer") && !key.contains(' '),
            "{key}"
        );
        let entry = store.get(key).await.unwrap().unwrap();
        for (name, value) in &entry.vary {
            let value = value.as_ref().unwrap().to_str().unwrap();
            assert_eq!(name, header::COOKIE);
            assert!(
                !value.contains("secret") && !value.contains("session"),
                "{value}"
            );
        }
    }
}

#[tokio::test]
async fn unknown_methods_invalidate_unless_turned_off() {
    // A catch-all handler answers any method with a 200, `PURGE` included.
    for (invalidate, expected) in [(true, "MISS"), (false, "HIT")] {
        let calls = Calls::default();
        let (cache, _store) = layer();
        let cache = cache.invalidate_unknown_methods(invalidate);
        let counted = calls.clone();
        let app = Router::new()
            .fallback(move || {
                let n = counted.hit();
                async move { format!("anything #{n}") }
            })
            .layer(cache);
        get_with(&app, "/page", &[]).await;
        let purge = http::Request::builder()
            .method("PURGE")
            .uri("/page")
            .body(axum::body::Body::empty())
            .unwrap();
        crate::harness::send(&app, purge).await;
        let after = get_with(&app, "/page", &[]).await;
        assert_eq!(
            after.x_cache(),
            expected,
            "invalidate_unknown_methods({invalidate})"
        );
        // POST, PUT, PATCH and DELETE invalidate either way.
        let post = http::Request::post("/page")
            .body(axum::body::Body::empty())
            .unwrap();
        crate::harness::send(&app, post).await;
        assert_eq!(get_with(&app, "/page", &[]).await.x_cache(), "MISS");
    }
}
