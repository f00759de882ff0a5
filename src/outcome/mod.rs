//! What the cache did with a request ([`CacheOutcome`]), and the response headers that say
//! so.
//!
//! | outcome | `x-cache` | `Cache-Status` (RFC 9211) |
//! |---|---|---|
//! | served from the cache | `HIT` | `name; hit; ttl=42` |
//! | miss, response stored before its head left | `MISS` | `name; fwd=miss; stored` |
//! | miss, storing not known as the head leaves | `MISS` | `name; fwd=miss` |
//! | miss, response not storable | `UNCACHEABLE` | `name; fwd=miss; detail=private` |
//! | miss, the store did not take it (`superseded`, `invalidated`) | `MISS` | `name; fwd=miss; detail=superseded` |
//! | miss, the store failed the write | `MISS` | `name; fwd=miss; detail=store-error` |
//! | miss under `only-if-cached` (a 504) | `MISS` | `name; detail=only-if-cached` |
//! | request refreshed the entry | `REFRESH` | `name; fwd=request; stored` |
//! | request bypassed the cache | `BYPASS` | `name; fwd=bypass; detail=no-store` |
//! | answered by another request's fetch (coalesced) | `HIT` | `name; fwd=miss; collapsed` |
//! | origin failed, stale entry served (`stale-if-error`) | `STALE` | `name; hit; ttl=-12; detail=stale-if-error` |
//! | stale entry confirmed by the origin's `304` (RFC 9111 §4.3) | `REVALIDATED` | `name; fwd=stale; fwd-status=304; stored` |
//!
//! `stored` is said only when it is true as the head leaves (RFC 9211 §2.6): the body was
//! complete by then (its first frame, read without waiting, was all of it) and the write
//! was awaited (inline writes: [`WriteMode`](crate::WriteMode)). A body that streams on, or
//! a write on a background task (Redis by default), leaves `stored` out; the stats count
//! what became of it. `REFRESH` and `REVALIDATED` follow the same rule.
//!
//! # What a miss's headers say about storing
//!
//! The head of a miss leaves before its body has been read, so:
//!
//! | the miss's body | write | `x-cache` | `Cache-Status` |
//! |---|---|---|---|
//! | complete at once (1) | inline (memory store) | `MISS` | `…; fwd=miss; stored` (2) |
//! | complete at once | background (Redis by default) | `MISS` | `…; fwd=miss` (3) |
//! | streamed (more frames to come) | either | `MISS` | `…; fwd=miss` (4) |
//! | declared too large, or refused (5) | — | `UNCACHEABLE` | `…; fwd=miss; detail=<reason>` |
//! | complete at once, overtaken (6) | inline | `MISS` | `…; detail=superseded` / `invalidated` |
//! | complete at once, the write failed | inline | `MISS` | `…; detail=store-error` |
//!
//! 1. Its first frame, read without waiting, is all of it: most handlers' bodies, `Full`,
//!    `String`.
//! 2. The store holds it before the client reads a byte.
//! 3. Nothing is said: the write ([`WriteMode::Background`](crate::WriteMode::Background))
//!    is under way.
//! 4. It is stored if it ends complete, within `max_body_size`, without trailers.
//! 5. A `Content-Length` above [`max_body_size`](crate::CacheLayer::max_body_size), or a
//!    response the [storing rules](crate::policy#responses) refuse.
//! 6. A newer entry was stored meanwhile (`superseded`), or the key was invalidated
//!    (`invalidated`).
//!
//! Writes are inline on the memory store and in the background on Redis by default
//! ([`WriteMode::Auto`](crate::WriteMode::Auto)). `REFRESH` and `REVALIDATED` say `stored`
//! by the same rule. What became of every response that was not known as its head left is
//! counted in the stats (`stores`, `not_stored`, `store_errors`).
//!
//! The same outcome can reach code as a value: with
//! [`outcome_extension(true)`](crate::CacheLayer::outcome_extension) a [`CacheOutcome`] is
//! put in each response's extensions, one to one with the headers, for middleware and
//! handlers around the layer; [`no_status_headers()`](crate::CacheLayer::no_status_headers)
//! sends neither header.

use std::sync::OnceLock;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, header};
use tracing::Span;

mod public;

pub use public::{CacheOutcome, Detail, Forward, OutcomeStatus};

use crate::observe::{EventKind, StaleWindow};
use crate::policy::{BypassReason, NotStoredReason, RefreshReason};
use crate::store::Tier;

/// What became of a response the cache meant to store, as far as is known when its head
/// leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Storing {
    /// Written to the store: `Cache-Status` says `stored`.
    Stored,
    /// Not known yet — the body streams on, or the write runs in the background: nothing
    /// is said (RFC 9211 §2.6 lets a cache leave `stored` out).
    Pending,
    /// Not stored, and why: `detail=` the reason.
    No(NotStoredReason),
    /// The store failed the write: `detail=store-error`.
    Failed,
}

impl Storing {
    /// Records on the request's span what became of the response it meant to store.
    pub(crate) fn record(self, span: Option<&Span>) {
        let Some(span) = span else {
            return;
        };
        match self {
            Self::Stored => span.record("stored", true),
            Self::Pending => return,
            Self::No(_) | Self::Failed => span.record("stored", false),
        };
    }
}

/// What the cache did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Hit {
        ttl: Duration,
        /// The tier that answered, on a tiered store.
        tier: Option<Tier>,
    },
    Miss {
        stored: Storing,
    },
    /// A miss that the request would not let go to the origin (`only-if-cached`).
    MissOnlyIfCached,
    /// Answered with the response another request for the same key fetched.
    Coalesced,
    /// The origin failed; a stale entry answered instead (RFC 5861 §4).
    StaleIfError {
        stale_for: Duration,
    },
    /// A stale entry answered while it is refreshed in the background (RFC 5861 §3).
    StaleWhileRevalidate {
        stale_for: Duration,
    },
    Refresh {
        reason: RefreshReason,
        stored: Storing,
    },
    /// A stale entry the origin answered `304 Not Modified` for (RFC 9111 §4.3.3): served
    /// with its headers updated.
    Revalidated {
        stored: Storing,
    },
    Bypass {
        reason: BypassReason,
    },
}

/// A request's outcome is derived from here, each form in one place:
///
/// | form | method |
/// |---|---|
/// | `x-cache` and `Cache-Status` | [`write_headers`](Self::write_headers) |
/// | the response extension ([`CacheOutcome`]) | [`public`](Self::public) |
/// | the event, and through it the counters | [`event`](Self::event) |
/// | the request span's fields | [`record`](Self::record) |
///
/// Its label is its event's ([`EventKind::as_str`]).
impl Outcome {
    /// The outcome as an event (a coalesced request waited `waited`): the one table from
    /// outcomes to events, and through the events' own table, to the counters.
    #[inline]
    pub(crate) fn event(self, waited: Duration) -> EventKind {
        match self {
            Self::Hit { ttl, tier } => EventKind::Hit { ttl, tier },
            Self::Coalesced => EventKind::Coalesced { waited },
            Self::Miss { .. } => EventKind::Miss,
            Self::MissOnlyIfCached => EventKind::OnlyIfCachedMiss,
            Self::Refresh { reason, .. } => EventKind::Refresh { reason },
            Self::Revalidated { .. } => EventKind::Revalidated,
            Self::StaleIfError { stale_for } => EventKind::Stale {
                window: StaleWindow::IfError,
                stale_for,
            },
            Self::StaleWhileRevalidate { stale_for } => EventKind::Stale {
                window: StaleWindow::WhileRevalidate,
                stale_for,
            },
            Self::Bypass { reason } => EventKind::Bypass { reason },
        }
    }

    /// Records the outcome on the request's span, from the response head it leaves with.
    pub(crate) fn record(self, span: &Span, headers: &HeaderMap) {
        if span.is_disabled() {
            return;
        }
        let public = self.public();
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

    /// The outcome in one word: the `x-cache` value.
    fn status(self) -> OutcomeStatus {
        match self {
            Self::Hit { .. } | Self::Coalesced => OutcomeStatus::Hit,
            // Not stored because of the response (or request) itself; a response the store
            // did not take (a newer one is there, the key was invalidated, the store failed)
            // was cacheable all the same.
            Self::Miss {
                stored: Storing::No(reason),
            } if !matches!(
                reason,
                NotStoredReason::Superseded | NotStoredReason::Invalidated
            ) =>
            {
                OutcomeStatus::Uncacheable
            }
            Self::Miss { .. } | Self::MissOnlyIfCached => OutcomeStatus::Miss,
            Self::Refresh { .. } => OutcomeStatus::Refresh,
            Self::Revalidated { .. } => OutcomeStatus::Revalidated,
            Self::StaleIfError { .. } | Self::StaleWhileRevalidate { .. } => OutcomeStatus::Stale,
            Self::Bypass { .. } => OutcomeStatus::Bypass,
        }
    }

    /// The `Cache-Status` member: the cache's name and the outcome's parameters.
    fn cache_status(self, name: &str) -> Option<HeaderValue> {
        use std::fmt::Write;
        // One allocation, which the header value then owns.
        let mut value = String::with_capacity(name.len() + 40);
        let _ = write!(value, "{name}; {}", self.public());
        HeaderValue::try_from(value).ok()
    }

    /// The outcome as the public [`CacheOutcome`]: the `x-cache` status and the RFC 9211
    /// parameters.
    pub(crate) fn public(self) -> CacheOutcome {
        let mut outcome = CacheOutcome {
            status: self.status(),
            hit: false,
            forward: None,
            forward_status: None,
            ttl: None,
            stored: false,
            collapsed: false,
            detail: None,
        };
        let stored = |outcome: &mut CacheOutcome, stored: Storing| match stored {
            Storing::Stored => outcome.stored = true,
            Storing::Pending => {}
            Storing::No(reason) => outcome.detail = Some(Detail::NotStored(reason)),
            Storing::Failed => outcome.detail = Some(Detail::StoreError),
        };
        match self {
            Self::Hit { ttl, .. } => {
                outcome.hit = true;
                outcome.ttl = Some(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
            }
            Self::Miss { stored: result } => {
                outcome.forward = Some(Forward::Miss);
                stored(&mut outcome, result);
            }
            Self::Coalesced => {
                outcome.forward = Some(Forward::Miss);
                outcome.collapsed = true;
            }
            // RFC 9211 §2.4: a negative ttl says how stale the hit is.
            Self::StaleWhileRevalidate { stale_for } => {
                outcome.hit = true;
                outcome.ttl = Some(stale_ttl(stale_for));
                outcome.detail = Some(Detail::StaleWhileRevalidate);
            }
            Self::StaleIfError { stale_for } => {
                outcome.hit = true;
                outcome.ttl = Some(stale_ttl(stale_for));
                outcome.detail = Some(Detail::StaleIfError);
            }
            // Not forwarded, so no `fwd` (RFC 9211 §2.2).
            Self::MissOnlyIfCached => outcome.detail = Some(Detail::OnlyIfCached),
            Self::Refresh { stored: result, .. } => {
                outcome.forward = Some(Forward::Request);
                stored(&mut outcome, result);
            }
            // RFC 9211 §2.2, §2.3: forwarded because stale; the origin said 304.
            Self::Revalidated { stored: result } => {
                outcome.forward = Some(Forward::Stale);
                outcome.forward_status = Some(304);
                stored(&mut outcome, result);
            }
            Self::Bypass { reason } => {
                outcome.forward = Some(Forward::Bypass);
                outcome.detail = Some(Detail::Bypass(reason));
            }
        }
        outcome
    }

    /// Adds the status header and appends to `Cache-Status` (RFC 9211 §2: caches closer to
    /// the client add their member after those of caches closer to the origin).
    pub(crate) fn write_headers(
        self,
        headers: &mut HeaderMap,
        status_header: Option<&http::HeaderName>,
        cache_status: Option<&CacheStatus>,
    ) {
        if let Some(name) = status_header {
            let value = HeaderValue::from_static(self.status().x_cache());
            let _ = headers.try_insert(name.clone(), value);
        }
        let value = match (cache_status, self) {
            (Some(cache_status), Self::Hit { ttl, .. }) => cache_status.hit(ttl),
            (Some(cache_status), _) => self.cache_status(&cache_status.name),
            (None, _) => None,
        };
        if let Some(value) = value {
            const CACHE_STATUS: http::HeaderName = http::HeaderName::from_static("cache-status");
            let _ = headers.try_append(CACHE_STATUS, value);
        }
    }
}

/// How stale an entry is, as a negative `ttl` (RFC 9211 §2.4): whole seconds, at least
/// one.
fn stale_ttl(stale_for: Duration) -> i64 {
    -i64::try_from(stale_for.as_secs().max(1)).unwrap_or(i64::MAX)
}

/// Hits with a remaining TTL up to this many seconds reuse a rendered `Cache-Status`.
const RENDERED_HIT_TTLS: usize = 3601;

/// The layer's `Cache-Status` identifier, and the hit values rendered once per TTL second:
/// a hit clones a shared value instead of formatting one.
#[derive(Debug)]
pub(crate) struct CacheStatus {
    name: Box<str>,
    hits: Box<[OnceLock<HeaderValue>]>,
}

impl CacheStatus {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: cache_status_identifier(name),
            hits: (0..RENDERED_HIT_TTLS).map(|_| OnceLock::new()).collect(),
        }
    }

    fn hit(&self, ttl: Duration) -> Option<HeaderValue> {
        let outcome = Outcome::Hit { ttl, tier: None };
        let Some(slot) = usize::try_from(ttl.as_secs())
            .ok()
            .and_then(|secs| self.hits.get(secs))
        else {
            return outcome.cache_status(&self.name);
        };
        if let Some(value) = slot.get() {
            return Some(value.clone());
        }
        let value = outcome.cache_status(&self.name)?;
        Some(slot.get_or_init(|| value).clone())
    }
}

/// `Age` values for the first hour, rendered once: a hit clones a shared value.
pub(crate) fn age_value(age: Duration) -> HeaderValue {
    static AGES: [OnceLock<HeaderValue>; RENDERED_HIT_TTLS] =
        [const { OnceLock::new() }; RENDERED_HIT_TTLS];
    let secs = age.as_secs();
    match usize::try_from(secs).ok().and_then(|secs| AGES.get(secs)) {
        Some(slot) => slot.get_or_init(|| HeaderValue::from(secs)).clone(),
        None => HeaderValue::from(secs),
    }
}

/// The cache's identifier as RFC 9211 wants it: an sf-token when the name is one, else an
/// sf-string (printable ASCII, with `"` and `\` escaped; other characters dropped).
fn cache_status_identifier(name: &str) -> Box<str> {
    let bytes = name.as_bytes();
    let is_token = bytes
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'*')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(b));
    if is_token {
        return name.into();
    }
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(outcome: Outcome) -> (String, String) {
        let mut map = HeaderMap::new();
        map.append("cache-status", HeaderValue::from_static("upstream; hit"));
        outcome.write_headers(
            &mut map,
            Some(&http::HeaderName::from_static("x-cache")),
            Some(&CacheStatus::new("c")),
        );
        let statuses: Vec<_> = map
            .get_all("cache-status")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            statuses[0], "upstream; hit",
            "existing members are kept first"
        );
        (
            map["x-cache"].to_str().unwrap().to_owned(),
            statuses[1].clone(),
        )
    }

    #[test]
    fn every_outcome_has_its_headers() {
        let cases = [
            (
                Outcome::Hit {
                    ttl: Duration::from_millis(42_900),
                    tier: None,
                },
                "HIT",
                "c; hit; ttl=42",
            ),
            (
                Outcome::Miss {
                    stored: Storing::Stored,
                },
                "MISS",
                "c; fwd=miss; stored",
            ),
            (
                Outcome::Miss {
                    stored: Storing::No(NotStoredReason::Private),
                },
                "UNCACHEABLE",
                "c; fwd=miss; detail=private",
            ),
            (
                Outcome::Miss {
                    stored: Storing::Pending,
                },
                "MISS",
                "c; fwd=miss",
            ),
            (
                Outcome::Miss {
                    stored: Storing::No(NotStoredReason::Superseded),
                },
                "MISS",
                "c; fwd=miss; detail=superseded",
            ),
            (
                Outcome::Miss {
                    stored: Storing::Failed,
                },
                "MISS",
                "c; fwd=miss; detail=store-error",
            ),
            (
                Outcome::Revalidated {
                    stored: Storing::Pending,
                },
                "REVALIDATED",
                "c; fwd=stale; fwd-status=304",
            ),
            (Outcome::Coalesced, "HIT", "c; fwd=miss; collapsed"),
            (
                Outcome::StaleIfError {
                    stale_for: Duration::from_millis(12_400),
                },
                "STALE",
                "c; hit; ttl=-12; detail=stale-if-error",
            ),
            (
                Outcome::StaleWhileRevalidate {
                    stale_for: Duration::from_millis(300),
                },
                "STALE",
                "c; hit; ttl=-1; detail=stale-while-revalidate",
            ),
            (
                Outcome::MissOnlyIfCached,
                "MISS",
                "c; detail=only-if-cached",
            ),
            (
                Outcome::Refresh {
                    reason: RefreshReason::NoCache,
                    stored: Storing::Stored,
                },
                "REFRESH",
                "c; fwd=request; stored",
            ),
            (
                Outcome::Bypass {
                    reason: BypassReason::NoStore,
                },
                "BYPASS",
                "c; fwd=bypass; detail=no-store",
            ),
        ];
        for (outcome, x_cache, cache_status) in cases {
            assert_eq!(
                headers(outcome),
                (x_cache.to_owned(), cache_status.to_owned())
            );
            // The public outcome says the same, one to one.
            let public = outcome.public();
            assert_eq!(public.status.x_cache(), x_cache);
            assert_eq!(format!("c; {public}"), cache_status);
        }
    }

    /// The event and the counters each outcome is derived into, against the `x-cache`
    /// value its headers say: a hit counts as a hit, a stale answer as stale, and so on.
    #[test]
    fn every_outcome_counts_as_its_headers_say() {
        use crate::observe::{Funnel, Scope};
        use crate::stats::Counts;
        let hit = Outcome::Hit {
            ttl: Duration::from_secs(5),
            tier: Some(Tier::L2),
        };
        let miss = Outcome::Miss {
            stored: Storing::Pending,
        };
        let uncacheable = Outcome::Miss {
            stored: Storing::No(NotStoredReason::Private),
        };
        let refresh = Outcome::Refresh {
            reason: RefreshReason::NoCache,
            stored: Storing::Stored,
        };
        let revalidated = Outcome::Revalidated {
            stored: Storing::Stored,
        };
        let swr = Outcome::StaleWhileRevalidate {
            stale_for: Duration::from_secs(1),
        };
        let sie = Outcome::StaleIfError {
            stale_for: Duration::from_secs(1),
        };
        let bypass = Outcome::Bypass {
            reason: BypassReason::NoStore,
        };
        type Counted = fn(&Counts) -> [u64; 2];
        let cases: [(Outcome, &str, &str, Counted); 10] = [
            (hit, "HIT", "hit", |c| [c.hits, c.l2_hits]),
            (Outcome::Coalesced, "HIT", "coalesced", |c| {
                [c.hits, c.coalesced]
            }),
            (miss, "MISS", "miss", |c| [c.misses, 1]),
            (uncacheable, "UNCACHEABLE", "miss", |c| [c.misses, 1]),
            (
                Outcome::MissOnlyIfCached,
                "MISS",
                "only-if-cached-miss",
                |c| [c.misses, 1],
            ),
            (refresh, "REFRESH", "refresh", |c| [c.refreshes, 1]),
            (revalidated, "REVALIDATED", "revalidated", |c| {
                [c.revalidated, 1]
            }),
            (swr, "STALE", "stale", |c| [c.stale_while_revalidate, 1]),
            (sie, "STALE", "stale", |c| [c.stale_if_error, 1]),
            (bypass, "BYPASS", "bypass", |c| [c.bypasses, 1]),
        ];
        for (outcome, x_cache, label, counted) in cases {
            let event = outcome.event(Duration::ZERO);
            assert_eq!(event.as_str(), label, "{outcome:?}");
            assert!(event.is_request(), "{outcome:?}");
            assert_eq!(outcome.public().status.x_cache(), x_cache, "{outcome:?}");
            let funnel = Funnel::default();
            let route = funnel.stats.other();
            funnel.request_ended(Scope::request(&route, &http::Method::GET), event, None);
            let counts = funnel.stats.snapshot().total;
            assert_eq!(counted(&counts), [1, 1], "{outcome:?}: {counts:?}");
            let all = counts.hits
                + counts.misses
                + counts.refreshes
                + counts.revalidated
                + counts.stale_while_revalidate
                + counts.stale_if_error
                + counts.bypasses
                + counts.passes;
            assert_eq!(all, 1, "one request, one outcome: {counts:?}");
        }
    }

    #[test]
    fn rendered_hit_values_match_formatted_ones() {
        let status = CacheStatus::new("c");
        for secs in [0, 1, 59, 3600, 3601, 1 << 40] {
            let ttl = Duration::from_secs(secs);
            let expected = format!("c; hit; ttl={secs}");
            assert_eq!(status.hit(ttl).unwrap(), expected.as_str());
            assert_eq!(
                status.hit(ttl).unwrap(),
                expected.as_str(),
                "again, from the table"
            );
        }
        for secs in [0, 7, 3600, 99_999] {
            assert_eq!(
                age_value(Duration::from_secs(secs)),
                secs.to_string().as_str()
            );
        }
    }

    #[test]
    fn identifiers_are_tokens_or_quoted_strings() {
        assert_eq!(&*cache_status_identifier("edge-1"), "edge-1");
        assert_eq!(&*cache_status_identifier("my cache"), "\"my cache\"");
        assert_eq!(&*cache_status_identifier("a\"b\u{7}"), "\"a\\\"b\"");
    }
}
