//! What a looked-up entry means for a request: a pure decision over the entry, whether it
//! may answer as it is, the request's `max-age` / `only-if-cached`, and the time.

use std::sync::Arc;
use std::time::SystemTime;

use crate::entry::CachedResponse;
use crate::policy::RefreshReason;

/// The request's lookup directives (RFC 9111 §5.2.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Directives {
    /// `max-age=N`: no entry older than N seconds answers.
    pub(super) max_age: Option<u64>,
    /// `only-if-cached`: never go to the origin.
    pub(super) only_if_cached: bool,
}

/// Whether `entry` is within the age a request's `max-age` accepts (RFC 9111 §5.2.1.1: not
/// older than N seconds): the one age check, for lookups, coalesced answers and re-reads.
pub(super) fn within_max_age(
    entry: &CachedResponse,
    max_age: Option<u64>,
    now: SystemTime,
) -> bool {
    max_age.is_none_or(|max| entry.age(now).as_secs() <= max)
}

/// What to do with a lookup's entry.
#[derive(Clone, Debug)]
pub(super) enum Decision {
    /// Answer from the entry.
    Hit(Arc<CachedResponse>),
    /// Answer with the stale entry now, and refresh it once in the background (RFC 5861
    /// §3: within its `stale-while-revalidate` window).
    ServeStale(Arc<CachedResponse>),
    /// Nothing may answer, and the request may not go to the origin: `504` (RFC 9111
    /// §5.2.1.7).
    OnlyIfCachedMiss,
    /// Go to the origin; the entry, if any, may be revalidated and, when `stands_in`,
    /// answer if the origin fails within its stale-if-error window (RFC 5861 §4).
    /// `MaxAge` when the entry was usable but older than the request allows (§5.2.1.1).
    Fetch {
        refresh: Option<RefreshReason>,
        entry: Option<Arc<CachedResponse>>,
        stands_in: bool,
    },
}

/// The decision for a lookup that found `entry` (of the request's variant, whatever its
/// freshness); `usable` says whether it may answer as it is (fresh, or on a sliding route,
/// and of the request's variant).
pub(super) fn decide(
    entry: Option<Arc<CachedResponse>>,
    usable: bool,
    directives: Directives,
    now: SystemTime,
) -> Decision {
    let Directives {
        max_age,
        only_if_cached,
    } = directives;
    let Some(entry) = entry else {
        return if only_if_cached {
            Decision::OnlyIfCachedMiss
        } else {
            Decision::Fetch {
                refresh: None,
                entry: None,
                stands_in: true,
            }
        };
    };
    let refresh = if !usable {
        // A request that limits the age it accepts takes no stale answer.
        if max_age.is_none() && !only_if_cached && entry.may_serve_while_revalidating(now) {
            return Decision::ServeStale(entry);
        }
        None
    } else if !within_max_age(&entry, max_age, now) {
        Some(RefreshReason::MaxAge)
    } else {
        return Decision::Hit(entry);
    };
    if only_if_cached {
        Decision::OnlyIfCachedMiss
    } else {
        Decision::Fetch {
            refresh,
            entry: Some(entry),
            stands_in: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    use super::*;

    /// An entry stored `age` seconds ago, fresh for `ttl` seconds, with a
    /// stale-while-revalidate window of `swr` seconds.
    fn entry(now: SystemTime, age: u64, ttl: u64, swr: u64) -> CachedResponse {
        let mut entry = CachedResponse::new(StatusCode::OK, HeaderMap::new(), Bytes::new());
        entry.stored_at = now - Duration::from_secs(age);
        entry.ttl = Duration::from_secs(ttl);
        entry.stale_while_revalidate = Duration::from_secs(swr);
        entry
    }

    /// The decision's name, and its refresh reason.
    fn kind(decision: Decision) -> (&'static str, Option<RefreshReason>) {
        match decision {
            Decision::Hit(_) => ("hit", None),
            Decision::ServeStale(_) => ("stale", None),
            Decision::OnlyIfCachedMiss => ("504", None),
            Decision::Fetch { refresh, .. } => ("fetch", refresh),
        }
    }

    fn at(
        entry: &CachedResponse,
        usable: bool,
        directives: Directives,
        now: SystemTime,
    ) -> (&'static str, Option<RefreshReason>) {
        kind(decide(
            Some(Arc::new(entry.clone())),
            usable,
            directives,
            now,
        ))
    }

    const PLAIN: Directives = Directives {
        max_age: None,
        only_if_cached: false,
    };

    #[test]
    fn a_usable_entry_is_a_hit_and_no_entry_a_fetch() {
        let now = SystemTime::now();
        let fresh = entry(now, 10, 60, 0);
        assert_eq!(at(&fresh, true, PLAIN, now), ("hit", None));
        assert_eq!(kind(decide(None, false, PLAIN, now)), ("fetch", None));
    }

    #[test]
    fn a_stale_entry_is_served_within_its_stale_while_revalidate_window_only() {
        let now = SystemTime::now();
        let within = entry(now, 70, 60, 30);
        assert_eq!(at(&within, false, PLAIN, now), ("stale", None));
        let past = entry(now, 100, 60, 30);
        assert_eq!(at(&past, false, PLAIN, now), ("fetch", None));
        let without = entry(now, 70, 60, 0);
        assert_eq!(at(&without, false, PLAIN, now), ("fetch", None));
    }

    #[test]
    fn a_request_max_age_refuses_older_entries_and_stale_answers() {
        let now = SystemTime::now();
        let max_age = |max| Directives {
            max_age: Some(max),
            only_if_cached: false,
        };
        let fresh = entry(now, 30, 60, 0);
        assert_eq!(at(&fresh, true, max_age(40), now), ("hit", None));
        assert_eq!(
            at(&fresh, true, max_age(20), now),
            ("fetch", Some(RefreshReason::MaxAge))
        );
        // Exactly as old as allowed still answers (§5.2.1.1: "not older than").
        assert_eq!(at(&fresh, true, max_age(30), now), ("hit", None));
        let stale = entry(now, 70, 60, 30);
        assert_eq!(
            at(&stale, false, max_age(100), now),
            ("fetch", None),
            "no stale-while-revalidate answer under max-age"
        );
    }

    #[test]
    fn only_if_cached_never_fetches() {
        let now = SystemTime::now();
        let only = Directives {
            max_age: None,
            only_if_cached: true,
        };
        assert_eq!(kind(decide(None, false, only, now)), ("504", None));
        let stale = entry(now, 70, 60, 30);
        assert_eq!(
            at(&stale, false, only, now),
            ("504", None),
            "nor answers stale while revalidating (the refresh would go to the origin)"
        );
        let fresh = entry(now, 10, 60, 0);
        assert_eq!(at(&fresh, true, only, now), ("hit", None));
        let too_old = Directives {
            max_age: Some(5),
            only_if_cached: true,
        };
        assert_eq!(at(&fresh, true, too_old, now), ("504", None));
    }
}
