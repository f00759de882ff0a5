//! The request span ([`CacheLayer::trace_level`](crate::CacheLayer::trace_level)): its
//! settings, its creation, and the fields recorded as the request goes.

use http::{HeaderMap, Method, header};
use tracing::{Level, Span, field::Empty};

use crate::key::CacheKey;
use crate::outcome::{Detail, Outcome, Storing};
use crate::store::Store;

/// How the request span shows the key ([`CacheLayer::trace_keys`](crate::CacheLayer::trace_keys)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceKeys {
    /// Its xxh3 hash, 16 hex digits: the same key gives the same hash, and the key's
    /// contents (user ids in paths, query parameters) stay out of the traces. The default.
    #[default]
    Hashed,
    /// The key itself.
    Full,
    /// Not at all.
    Omit,
}

/// The request span's settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TraceSettings {
    pub(crate) level: Level,
    pub(crate) keys: TraceKeys,
}

impl Default for TraceSettings {
    fn default() -> Self {
        Self {
            // As tower-http's `TraceLayer` spans: a request's detail, not its summary.
            level: Level::DEBUG,
            keys: TraceKeys::Hashed,
        }
    }
}

macro_rules! cache_span {
    ($level:expr, $($fields:tt)*) => {
        match $level {
            Level::ERROR => tracing::span!(Level::ERROR, $($fields)*),
            Level::WARN => tracing::span!(Level::WARN, $($fields)*),
            Level::INFO => tracing::span!(Level::INFO, $($fields)*),
            Level::DEBUG => tracing::span!(Level::DEBUG, $($fields)*),
            Level::TRACE => tracing::span!(Level::TRACE, $($fields)*),
        }
    };
}

/// The span of a request the cache looks up: disabled (and nothing computed for it) unless
/// a subscriber wants it.
pub(crate) fn request_span(
    settings: TraceSettings,
    route: &str,
    method: &Method,
    store: &dyn Store,
    key: Option<&CacheKey>,
) -> Span {
    let span = cache_span!(
        settings.level,
        "cache",
        route = Empty,
        method = Empty,
        store = Empty,
        key = Empty,
        outcome = Empty,
        detail = Empty,
        ttl = Empty,
        age = Empty,
        collapsed = Empty,
        stored = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    span.record("route", route);
    span.record("method", method.as_str());
    span.record("store", store.name());
    if let Some(key) = key {
        match settings.keys {
            TraceKeys::Hashed => {
                let hash = xxhash_rust::xxh3::xxh3_64(key.as_str().as_bytes());
                span.record("key", format_args!("{hash:016x}"));
            }
            TraceKeys::Full => {
                span.record("key", key.as_str());
            }
            TraceKeys::Omit => {}
        }
    }
    span
}

/// Records the request's outcome on its span, from the response head it leaves with.
pub(crate) fn record_outcome(span: &Span, outcome: Outcome, headers: &HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let public = outcome.public();
    span.record("outcome", public.status.as_str());
    if let Some(detail) = public.detail {
        span.record("detail", detail.as_str());
    }
    if let Some(ttl) = public.ttl {
        span.record("ttl", ttl);
    }
    if let Some(age) = headers
        .get(header::AGE)
        .and_then(|age| age.to_str().ok())
        .and_then(|age| age.parse::<u64>().ok())
    {
        span.record("age", age);
    }
    span.record("collapsed", public.collapsed);
    if public.stored {
        span.record("stored", true);
    } else if matches!(
        public.detail,
        Some(Detail::NotStored(_) | Detail::StoreError)
    ) {
        span.record("stored", false);
    }
}

/// Records what became of the response the request meant to store.
pub(crate) fn record_stored(span: &Span, storing: Storing) {
    if span.is_disabled() {
        return;
    }
    match storing {
        Storing::Stored => span.record("stored", true),
        Storing::Pending => return,
        Storing::No(_) | Storing::Failed => span.record("stored", false),
    };
}
