//! One entry per variant (RFC 9111 §4.1): responses with `Vary` are stored side by side,
//! selected by the request's normalized header values, bounded per URL.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use http::HeaderMap;

use crate::client::post;
use crate::harness::{Calls, entry_count, fetch, get_with, layer};
use tower_response_cache::CacheLayer;

fn greeting(calls: &Calls, cache: CacheLayer) -> Router {
    Router::new()
        .route(
            "/greeting",
            get(
                |State(calls): State<Calls>, headers: HeaderMap| async move {
                    let lang = headers
                        .get("accept-language")
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or("none")
                        .to_owned();
                    let n = calls.hit();
                    (
                        [("vary", "Accept-Language"), ("cache-control", "max-age=60")],
                        format!("greeting in {lang} #{n}"),
                    )
                },
            )
            .post(|| async { "posted" }),
        )
        .with_state(calls.clone())
        .layer(cache)
}

async fn in_language(app: &Router, lang: &str) -> (String, String) {
    let reply = get_with(app, "/greeting", &[("accept-language", lang)]).await;
    (reply.x_cache().to_owned(), reply.text())
}

#[tokio::test]
async fn each_variant_is_stored_and_selected() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let app = greeting(&calls, cache);
    for lang in ["en", "fr", "de"] {
        assert_eq!(in_language(&app, lang).await.0, "MISS", "{lang}");
    }
    // RFC 9111 §4.1: every variant answers its own requests; none replaced another.
    assert_eq!(
        in_language(&app, "en").await,
        ("HIT".to_owned(), "greeting in en #1".to_owned())
    );
    assert_eq!(
        in_language(&app, "fr").await,
        ("HIT".to_owned(), "greeting in fr #2".to_owned())
    );
    assert_eq!(
        in_language(&app, "de").await,
        ("HIT".to_owned(), "greeting in de #3".to_owned())
    );
    let none = fetch(&app, "/greeting").await;
    assert_eq!(
        (none.x_cache(), none.text().as_str()),
        ("MISS", "greeting in none #4")
    );
    assert_eq!(fetch(&app, "/greeting").await.x_cache(), "HIT");
    assert_eq!(calls.get(), 4);
}

#[tokio::test]
async fn values_are_compared_after_normalizing_whitespace() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let app = greeting(&calls, cache);
    in_language(&app, "en").await;
    in_language(&app, "fr, en;q=0.5").await;
    // RFC 9111 §4.1: values may be normalized by the field's syntax; list whitespace is.
    assert_eq!(in_language(&app, " en ").await.0, "HIT");
    assert_eq!(in_language(&app, "fr,en;q=0.5").await.0, "HIT");
    assert_eq!(in_language(&app, "fr , en;q=0.5").await.0, "HIT");
    assert_eq!(in_language(&app, "en, fr").await.0, "MISS", "other weights");
    assert_eq!(calls.get(), 3);
}

#[tokio::test]
async fn variants_per_url_are_bounded_and_never_mixed_up() {
    // RFC 9111 §4.1, with the number of variants stored per URL bounded.
    let calls = Calls::default();
    let (cache, store) = layer();
    let app = greeting(&calls, cache.max_variants(3));
    let langs: Vec<String> = (0..40).map(|i| format!("lang-{i}")).collect();
    for lang in &langs {
        in_language(&app, lang).await;
    }
    // One key and two slots, however many variants the URL has.
    assert!(
        entry_count(&store).await <= 3,
        "{}",
        entry_count(&store).await
    );
    // Whatever is served, from the cache or not, is the requested variant.
    for lang in &langs {
        let (_, text) = in_language(&app, lang).await;
        assert!(text.starts_with(&format!("greeting in {lang} #")), "{text}");
    }
    assert!(entry_count(&store).await <= 3);
}

#[tokio::test]
async fn one_variant_at_a_time_when_bounded_to_one() {
    // RFC 9111 §4.1 with `max_variants(1)`: a new variant replaces the stored one.
    let calls = Calls::default();
    let (cache, _store) = layer();
    let app = greeting(&calls, cache.max_variants(1));
    in_language(&app, "en").await;
    in_language(&app, "fr").await;
    assert_eq!(in_language(&app, "fr").await.0, "HIT");
    assert_eq!(in_language(&app, "en").await.0, "MISS", "replaced by fr");
}

#[tokio::test]
async fn an_unsafe_method_invalidates_every_variant() {
    let calls = Calls::default();
    let (cache, store) = layer();
    let app = greeting(&calls, cache);
    for lang in ["en", "fr", "de", "it"] {
        in_language(&app, lang).await;
    }
    assert_eq!(entry_count(&store).await, 4);
    // RFC 9111 §4.4: the stored responses for the target URI, all of its variants.
    let posted = post(&app, "/greeting").await;
    assert_eq!(posted.text(), "posted");
    assert_eq!(entry_count(&store).await, 0);
    for lang in ["en", "fr", "de", "it"] {
        assert_eq!(in_language(&app, lang).await.0, "MISS", "{lang}");
    }
    assert_eq!(calls.get(), 8);
}

#[tokio::test]
async fn equivalent_accept_language_values_share_a_variant_rfc9111_4_1() {
    let calls = Calls::default();
    let (cache, _store) = layer();
    let app = greeting(&calls, cache);
    let first = in_language(&app, "en-US,en;q=0.9,fr;q=0.8").await;
    assert_eq!(first.0, "MISS");
    // Case, order, whitespace and the spelling of weights do not make another variant.
    for equivalent in [
        "fr;q=0.80, EN;q=0.9, en-us",
        "en-us;q=1.0 ,  en;q=0.900,fr;q=0.8",
    ] {
        assert_eq!(
            in_language(&app, equivalent).await,
            ("HIT".to_owned(), first.1.clone()),
            "{equivalent}"
        );
    }
    // Other weights are another preference, and another variant.
    assert_eq!(in_language(&app, "en;q=0.9, en-US;q=0.8").await.0, "MISS");
    assert_eq!(calls.get(), 2);
}
