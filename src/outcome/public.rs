//! [`CacheOutcome`]: what the cache did with a request, as a value — in the response's
//! extensions when the layer puts it there
//! ([`CacheLayer::outcome_extension`](crate::CacheLayer::outcome_extension)), one-to-one with
//! the `x-cache` value and the RFC 9211 `Cache-Status` parameters the layer writes.

use std::fmt;

use crate::policy::{BypassReason, NotStoredReason};

/// What the cache did with a request: the response's `x-cache` value
/// ([`status`](Self::status)) and its RFC 9211 `Cache-Status` parameters (the other
/// fields; [`Display`](fmt::Display) writes them as the header does, after the cache's
/// name).
///
/// ```
/// use axum::{body::Body, routing::get, Router};
/// use http::Request;
/// use tower::ServiceExt;
/// use tower_response_cache::{CacheLayer, MemoryStore, outcome::{CacheOutcome, OutcomeStatus}};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = CacheLayer::new(MemoryStore::new(1 << 20)).outcome_extension(true);
/// let app: Router = Router::new().route("/", get(|| async { "hi" })).layer(cache);
/// let get = || Request::get("/").body(Body::empty()).unwrap();
/// app.clone().oneshot(get()).await.unwrap();
/// let hit = app.oneshot(get()).await.unwrap();
/// let outcome = hit.extensions().get::<CacheOutcome>().unwrap();
/// assert_eq!(outcome.status, OutcomeStatus::Hit);
/// assert!(outcome.hit);
/// assert_eq!(outcome.to_string(), "hit; ttl=59");
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct CacheOutcome {
    /// The outcome in one word: the `x-cache` value, and the stats counter it counts in.
    pub status: OutcomeStatus,
    /// `hit`: answered from the cache, without going to the origin.
    pub hit: bool,
    /// `fwd`: why the request went to the origin, when it did.
    pub forward: Option<Forward>,
    /// `fwd-status`: the origin's status when it is not the response's (`304` for a
    /// revalidated entry).
    pub forward_status: Option<u16>,
    /// `ttl`: the seconds of freshness the answering entry had left; negative when it was
    /// stale.
    pub ttl: Option<i64>,
    /// `stored`: the response was written to the store before its head left.
    pub stored: bool,
    /// `collapsed`: the request waited for another's fetch and was answered with it.
    pub collapsed: bool,
    /// `detail`: why it was not stored, or what answered.
    pub detail: Option<Detail>,
}

/// The outcome in one word ([`CacheOutcome::status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OutcomeStatus {
    /// Answered from the cache (or by another request's fetch).
    Hit,
    /// Went to the origin; the response may be stored.
    Miss,
    /// Went to the origin; the response could not be stored (see the detail).
    Uncacheable,
    /// The request asked for a fresh response (`no-cache`, the bypass header, a warming).
    Refresh,
    /// A stale entry confirmed by the origin's `304`.
    Revalidated,
    /// A stale entry answered (`stale-while-revalidate`, `stale-if-error`).
    Stale,
    /// The request neither read nor wrote the cache.
    Bypass,
}

impl OutcomeStatus {
    /// A short, stable, lower-case label (`hit`, `miss`, `uncacheable`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Uncacheable => "uncacheable",
            Self::Refresh => "refresh",
            Self::Revalidated => "revalidated",
            Self::Stale => "stale",
            Self::Bypass => "bypass",
        }
    }

    /// The `x-cache` header value (`HIT`, `MISS`, …).
    pub fn x_cache(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Uncacheable => "UNCACHEABLE",
            Self::Refresh => "REFRESH",
            Self::Revalidated => "REVALIDATED",
            Self::Stale => "STALE",
            Self::Bypass => "BYPASS",
        }
    }
}

/// Why a request went to the origin (RFC 9211 `fwd`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Forward {
    /// No usable entry.
    Miss,
    /// The request asked for a fresh response.
    Request,
    /// The entry was stale and was revalidated.
    Stale,
    /// The cache was bypassed.
    Bypass,
}

impl Forward {
    /// The RFC 9211 value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Miss => "miss",
            Self::Request => "request",
            Self::Stale => "stale",
            Self::Bypass => "bypass",
        }
    }
}

/// Why a response was not stored, or what answered (RFC 9211 `detail`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Detail {
    /// The response was not stored, for this reason.
    NotStored(NotStoredReason),
    /// The store failed the write.
    StoreError,
    /// A miss under `only-if-cached`: answered `504` without going to the origin.
    OnlyIfCached,
    /// The origin failed; a stale entry answered (RFC 5861 §4).
    StaleIfError,
    /// A stale entry answered while it is refreshed (RFC 5861 §3).
    StaleWhileRevalidate,
    /// The request bypassed the cache, for this reason.
    Bypass(BypassReason),
}

impl Detail {
    /// The RFC 9211 value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotStored(reason) => reason.as_str(),
            Self::StoreError => "store-error",
            Self::OnlyIfCached => "only-if-cached",
            Self::StaleIfError => "stale-if-error",
            Self::StaleWhileRevalidate => "stale-while-revalidate",
            Self::Bypass(reason) => reason.as_str(),
        }
    }
}

impl fmt::Display for CacheOutcome {
    /// The `Cache-Status` parameters, in the order the layer writes them (`hit; ttl=42`,
    /// `fwd=miss; stored`, …), without the cache's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut separator = "";
        let mut param = |f: &mut fmt::Formatter<'_>, param: fmt::Arguments<'_>| {
            let result = write!(f, "{separator}{param}");
            separator = "; ";
            result
        };
        if self.hit {
            param(f, format_args!("hit"))?;
        }
        if let Some(forward) = self.forward {
            param(f, format_args!("fwd={}", forward.as_str()))?;
        }
        if let Some(status) = self.forward_status {
            param(f, format_args!("fwd-status={status}"))?;
        }
        if let Some(ttl) = self.ttl {
            param(f, format_args!("ttl={ttl}"))?;
        }
        if self.stored {
            param(f, format_args!("stored"))?;
        }
        if self.collapsed {
            param(f, format_args!("collapsed"))?;
        }
        if let Some(detail) = self.detail {
            param(f, format_args!("detail={}", detail.as_str()))?;
        }
        Ok(())
    }
}
