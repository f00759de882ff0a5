//! The request span ([`CacheLayer::trace_level`](crate::CacheLayer::trace_level)): its
//! settings, its creation, and the fields recorded as the request goes.

use std::fmt;

use http::Method;
use tracing::level_filters::LevelFilter;
use tracing::{Level, Span, field::Empty};

use crate::key::CacheKey;

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

/// The key as the span shows it: formatted (hashed, when so) only if a subscriber records
/// the span.
struct TracedKey<'a>(&'a CacheKey, TraceKeys);

impl fmt::Display for TracedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            TraceKeys::Full => f.write_str(self.0.as_str()),
            _ => write!(
                f,
                "{:016x}",
                xxhash_rust::xxh3::xxh3_64(self.0.as_str().as_bytes())
            ),
        }
    }
}

/// The span of a request the cache looks up, if a subscriber wants it (none of its fields
/// is computed otherwise).
#[inline]
pub(crate) fn request_span(
    settings: TraceSettings,
    route: &str,
    method: &Method,
    store: &'static str,
    key: Option<&CacheKey>,
) -> Option<Span> {
    // No subscriber wants spans this verbose: the usual case, settled with one load.
    if settings.level > LevelFilter::current() {
        return None;
    }
    Some(new_span(settings, route, method, store, key)).filter(|span| !span.is_disabled())
}

#[inline(never)]
fn new_span(
    settings: TraceSettings,
    route: &str,
    method: &Method,
    store: &'static str,
    key: Option<&CacheKey>,
) -> Span {
    let key = key
        .filter(|_| settings.keys != TraceKeys::Omit)
        .map(|key| tracing::field::display(TracedKey(key, settings.keys)));
    cache_span!(
        settings.level,
        "cache",
        route,
        method = method.as_str(),
        store,
        key,
        outcome = Empty,
        detail = Empty,
        ttl = Empty,
        age = Empty,
        collapsed = Empty,
        stored = Empty,
    )
}
