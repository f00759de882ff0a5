//! The `cache` span: one per looked-up request, inside the request's span, with what the
//! cache did; the key hashed unless configured otherwise; the level configurable.
//!
//! A test binary of its own: tracing keeps one maximum level and one interest per call site
//! for the whole process, which the subscribers (and the spans) of other tests running at
//! the same time would change.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::Request;
use tower::ServiceExt;
use tower_response_cache::observe::TraceKeys;
use tower_response_cache::{CacheLayer, MemoryStore, WriteMode};
use tracing::Instrument;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, registry};

/// The fields of every `cache` span, in the order the spans were created, with the name of
/// the span each was inside.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<(u64, SpanFields)>>>);

/// A span's fields by name.
type SpanFields = HashMap<String, String>;

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "cache" {
            return;
        }
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent().map(|parent| parent.name().to_owned()));
        fields.insert("(parent)".to_owned(), parent.unwrap_or_default());
        self.0.lock().unwrap().push((id.into_u64(), fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some((_, fields)) = spans.iter_mut().find(|(span, _)| *span == id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
}

impl Spans {
    fn take(&self) -> Vec<HashMap<String, String>> {
        std::mem::take(&mut *self.0.lock().unwrap())
            .into_iter()
            .map(|(_, fields)| fields)
            .collect()
    }
}

fn app(cache: CacheLayer) -> Router {
    Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route(
            "/private",
            get(|| async { ([("cache-control", "private")], "mine") }),
        )
        .layer(cache)
}

/// Sends a GET inside a `request` span, as tower-http's `TraceLayer` would wrap it.
async fn request(app: &Router, uri: &str) -> String {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let response = app
        .clone()
        .oneshot(request)
        .instrument(tracing::info_span!("request"))
        .await
        .unwrap();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// This file's tests one at a time, each rebuilding the interest cache after setting its
/// subscriber.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ONE.lock().await
}

fn cache() -> CacheLayer {
    CacheLayer::new(MemoryStore::new(1 << 20))
        .namespace("t")
        .write_mode(WriteMode::Inline)
}

#[tokio::test]
async fn each_looked_up_request_gets_a_cache_span_with_what_the_cache_did() {
    let spans = Spans::default();
    let _one = one_at_a_time().await;
    let _guard = tracing::subscriber::set_default(registry().with(spans.clone()));
    tracing::callsite::rebuild_interest_cache();
    let app = app(cache());
    request(&app, "/users/7").await;
    request(&app, "/users/7").await;
    request(&app, "/private").await;
    let spans = spans.take();
    assert_eq!(spans.len(), 3);
    let (miss, hit, private) = (&spans[0], &spans[1], &spans[2]);
    for span in &spans {
        assert_eq!(span["(parent)"], "request", "inside the request's span");
        assert_eq!(span["method"], "GET");
        assert_eq!(span["store"], "memory");
        assert_eq!(span["collapsed"], "false");
    }
    assert_eq!(miss["route"], "/users/{id}");
    assert_eq!(miss["outcome"], "miss");
    assert_eq!(miss["stored"], "true");
    assert!(!miss.contains_key("ttl"));
    assert_eq!(hit["outcome"], "hit");
    assert_eq!(hit["age"], "0");
    assert!(matches!(hit["ttl"].as_str(), "59" | "60"), "{hit:?}");
    // The key, hashed: 16 hex digits, the same for the same key, and no trace of the path.
    assert_eq!(miss["key"].len(), 16);
    assert!(miss["key"].chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(miss["key"], hit["key"]);
    assert_eq!(private["outcome"], "uncacheable");
    assert_eq!(private["detail"], "private");
    assert_eq!(private["stored"], "false");
    assert_ne!(private["key"], miss["key"]);
}

#[tokio::test]
async fn the_key_can_be_shown_in_full_or_not_at_all() {
    let spans = Spans::default();
    let _one = one_at_a_time().await;
    let _guard = tracing::subscriber::set_default(registry().with(spans.clone()));
    tracing::callsite::rebuild_interest_cache();
    request(&app(cache().trace_keys(TraceKeys::Full)), "/users/7").await;
    request(&app(cache().trace_keys(TraceKeys::Omit)), "/users/7").await;
    let spans = spans.take();
    assert!(spans[0]["key"].contains("/users/7"), "{:?}", spans[0]);
    assert!(!spans[1].contains_key("key"));
}

#[tokio::test]
async fn the_span_s_level_decides_whether_a_subscriber_sees_it() {
    let spans = Spans::default();
    let subscriber = registry().with(spans.clone().with_filter(LevelFilter::INFO));
    let _one = one_at_a_time().await;
    let _guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    // DEBUG by default: not wanted at INFO.
    request(&app(cache()), "/users/7").await;
    assert!(spans.take().is_empty());
    request(&app(cache().trace_level(tracing::Level::INFO)), "/users/7").await;
    let spans = spans.take();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0]["outcome"], "miss");
}
