//! What observers are told: [`CacheEvent`], its [`EventKind`], and the timings it carries.

use std::fmt;
use std::time::Duration;

use http::Method;

use crate::policy::{BypassReason, NotStoredReason, RefreshReason};
use crate::stats::PurgeKind;
use crate::store::{FlushReason, PurgeMode, RemovalCause, StoreErrorKind, Tier};

/// One thing the cache did, as an [observer](super::CacheObserver) sees it.
///
/// A request's outcome ([`EventKind::Hit`] … [`EventKind::Pass`]) comes once per request, as
/// its response head leaves the layer; what became of the response it meant to store
/// ([`Stored`](EventKind::Stored), [`NotStored`](EventKind::NotStored)) comes when that is
/// known — before the outcome when the write was awaited, after it when the body streams on
/// or the write runs in the background. Purges and removals from the store are not a
/// request's: they carry no route or method.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct CacheEvent<'a> {
    /// What happened.
    pub kind: EventKind,
    /// The request's route label, as the stats count it: the axum route pattern
    /// (`/users/{id}`), the rule's pattern, `(other)` — never the raw path. `None` for
    /// events that are not a request's (purges, removals).
    pub route: Option<&'a str>,
    /// The request's method, for events that are a request's.
    pub method: Option<&'a Method>,
    /// How long the steps before the event took, where they ran.
    pub timings: Timings,
}

/// How long a request's steps took, where the event has them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timings {
    /// From the request reaching the layer to the lookup's answer (a hit's whole time in
    /// the cache; a miss's time before it went to the origin).
    pub lookup: Option<Duration>,
    /// The origin's time to response headers (the inner service's future).
    pub origin: Option<Duration>,
    /// The store write of a [`Stored`](EventKind::Stored) response (the purge checks around
    /// it included).
    pub store_write: Option<Duration>,
}

/// Which stale window let a stale entry answer (RFC 5861).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StaleWindow {
    /// `stale-while-revalidate`: answered while it is refreshed in the background.
    WhileRevalidate,
    /// `stale-if-error`: the origin failed.
    IfError,
}

impl StaleWindow {
    /// `stale-while-revalidate` or `stale-if-error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WhileRevalidate => "stale-while-revalidate",
            Self::IfError => "stale-if-error",
        }
    }
}

/// A store operation, as store errors are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreOperation {
    /// A lookup, or a check of the store's purge log.
    Read,
    /// Writing a response.
    Write,
    /// Moving an entry's expiry (sliding routes).
    Touch,
    /// Taking the shared store's fill lock.
    Lock,
    /// Removing an entry.
    Remove,
    /// A purge (by URL, key, prefix, tag, or a clear).
    Purge,
}

impl StoreOperation {
    /// A short, stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Touch => "touch",
            Self::Lock => "lock",
            Self::Remove => "remove",
            Self::Purge => "purge",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) const COUNT: usize = 6;
}

/// What happened ([`CacheEvent::kind`]).
///
/// The request outcomes match the stats one to one: each is counted in the
/// [`Counts`](crate::stats::Counts) field named in its documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// Answered from a fresh entry with `ttl` of freshness left (`hits`; on a tiered
    /// store, `l1_hits` or `l2_hits` as well).
    Hit {
        /// The freshness the entry had left.
        ttl: Duration,
        /// The tier that answered, on a [`TieredStore`](crate::TieredStore).
        tier: Option<Tier>,
    },
    /// Waited `waited` for another request's fetch of the key and was answered with its
    /// response (`hits` and `coalesced`).
    Coalesced {
        /// How long the request waited.
        waited: Duration,
    },
    /// A stale entry answered (`stale_while_revalidate` or `stale_if_error`).
    Stale {
        /// Which window allowed it.
        window: StaleWindow,
        /// How long past its freshness the entry was.
        stale_for: Duration,
    },
    /// A stale entry the origin confirmed with `304 Not Modified` answered (`revalidated`).
    Revalidated,
    /// No usable entry: the request went to the origin (`misses`). Whether the response was
    /// stored follows as [`Stored`](Self::Stored) or [`NotStored`](Self::NotStored).
    Miss,
    /// No usable entry, and the request said `only-if-cached`: answered `504` (`misses`).
    OnlyIfCachedMiss,
    /// The request asked for a fresh response and refreshed the entry (`refreshes`).
    Refresh {
        /// What asked for it.
        reason: RefreshReason,
    },
    /// The request neither read nor wrote the cache (`bypasses`).
    Bypass {
        /// Why.
        reason: BypassReason,
    },
    /// A request the cache does not apply to: a method other than GET and HEAD, a disabled
    /// route (`passes`). No lookup, no timings.
    Pass,
    /// A wait for another request's fetch timed out; the request fetches itself
    /// (`coalesce_timeouts`).
    CoalesceTimeout,
    /// A response was written to the store (`stores`).
    Stored {
        /// The body's size.
        bytes: usize,
        /// Its freshness lifetime.
        ttl: Duration,
        /// How many tags it carries.
        tags: usize,
    },
    /// A response the request meant to store was not (`not_stored`, by reason).
    NotStored {
        /// Why.
        reason: NotStoredReason,
    },
    /// A store operation failed; the request was served without it (`store_errors`).
    StoreError {
        /// What the layer asked of the store.
        operation: StoreOperation,
        /// How it failed.
        kind: StoreErrorKind,
    },
    /// A purge ended (`purges`).
    Purged {
        /// What it was for.
        kind: PurgeKind,
        /// Hard or soft.
        mode: PurgeMode,
        /// The entries it purged; `None` when the store failed it.
        entries: Option<u64>,
    },
    /// Tags over a limit were ignored as a response was stored (`purges.tags_ignored`).
    TagsIgnored {
        /// How many.
        count: u64,
    },
    /// An entry left the store (stores that report it: [`MemoryStore`](crate::MemoryStore)).
    Removed {
        /// Why it left.
        cause: RemovalCause,
    },
    /// A tiered store emptied this instance's memory tier (stores that report it:
    /// [`TieredStore`](crate::TieredStore)); [`L1Flushes`](crate::store::L1Flushes) counts
    /// them.
    L1Flushed {
        /// Why.
        reason: FlushReason,
    },
}

impl EventKind {
    /// A short, stable label: `hit`, `coalesced`, `stale`, `revalidated`, `miss`,
    /// `only-if-cached-miss`, `refresh`, `bypass`, `pass`, `coalesce-timeout`, `stored`,
    /// `not-stored`, `store-error`, `purged`, `tags-ignored`, `removed`, `l1-flushed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Hit { .. } => "hit",
            Self::Coalesced { .. } => "coalesced",
            Self::Stale { .. } => "stale",
            Self::Revalidated => "revalidated",
            Self::Miss => "miss",
            Self::OnlyIfCachedMiss => "only-if-cached-miss",
            Self::Refresh { .. } => "refresh",
            Self::Bypass { .. } => "bypass",
            Self::Pass => "pass",
            Self::CoalesceTimeout => "coalesce-timeout",
            Self::Stored { .. } => "stored",
            Self::NotStored { .. } => "not-stored",
            Self::StoreError { .. } => "store-error",
            Self::Purged { .. } => "purged",
            Self::TagsIgnored { .. } => "tags-ignored",
            Self::Removed { .. } => "removed",
            Self::L1Flushed { .. } => "l1-flushed",
        }
    }

    /// Whether this is a request's outcome (one per request): a lookup answered or
    /// forwarded, a bypass, a pass.
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Self::Hit { .. }
                | Self::Coalesced { .. }
                | Self::Stale { .. }
                | Self::Revalidated
                | Self::Miss
                | Self::OnlyIfCachedMiss
                | Self::Refresh { .. }
                | Self::Bypass { .. }
                | Self::Pass
        )
    }

    /// For the outcomes the stats' hit ratio counts: `Some(true)` for a hit (a coalesced
    /// wait included), `Some(false)` for a miss (`only-if-cached` included); `None` for
    /// everything else.
    pub fn lookup_hit(&self) -> Option<bool> {
        match self {
            Self::Hit { .. } | Self::Coalesced { .. } => Some(true),
            Self::Miss | Self::OnlyIfCachedMiss => Some(false),
            _ => None,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        match self {
            Self::Hit { ttl, tier } => {
                write!(f, " ttl={}s", ttl.as_secs())?;
                match tier {
                    Some(tier) => write!(f, " {}", tier.as_str()),
                    None => Ok(()),
                }
            }
            Self::Coalesced { waited } => write!(f, " waited={waited:?}"),
            Self::Stale { window, stale_for } => {
                write!(f, " {} stale_for={}s", window.as_str(), stale_for.as_secs())
            }
            Self::Refresh { reason } => write!(f, " {}", reason.as_str()),
            Self::Bypass { reason } => write!(f, " {}", reason.as_str()),
            Self::Stored { bytes, ttl, tags } => {
                write!(f, " bytes={bytes} ttl={}s tags={tags}", ttl.as_secs())
            }
            Self::NotStored { reason } => write!(f, " {}", reason.as_str()),
            Self::StoreError { operation, kind } => {
                write!(f, " {} {}", operation.as_str(), kind.as_str())
            }
            Self::Purged {
                kind,
                mode,
                entries,
            } => match entries {
                Some(entries) => {
                    write!(f, " {} {} entries={entries}", kind.as_str(), mode.as_str())
                }
                None => write!(f, " {} {} failed", kind.as_str(), mode.as_str()),
            },
            Self::TagsIgnored { count } => write!(f, " {count}"),
            Self::Removed { cause } => write!(f, " {}", cause.as_str()),
            Self::L1Flushed { reason } => write!(f, " {}", reason.as_str()),
            Self::Revalidated
            | Self::Miss
            | Self::OnlyIfCachedMiss
            | Self::Pass
            | Self::CoalesceTimeout => Ok(()),
        }
    }
}
