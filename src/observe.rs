//! The event funnel: every request's one outcome ([`request_ended`]), what became of the
//! responses it meant to store, purges ([`purged`]) and store failures ([`store_failed`])
//! pass here on their way to the stats. Store failures are also logged without flooding: a
//! store that is down fails every request, and one warning per failure would bury
//! everything else in the logs.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::outcome::Outcome;
use crate::stats::{CacheStats, Counters, Event, PurgeKind};
use crate::store::{PurgeMode, StoreError};

/// At most one message per interval; the ones in between are counted and reported with the
/// next.
#[derive(Debug)]
pub(crate) struct Throttle {
    start: Instant,
    interval: Duration,
    /// Milliseconds after `start` when the next message may be logged.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            start: Instant::now(),
            interval,
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed)` when a message may be logged now (with how many were held back
    /// since the last one); `None` when it is to be held back.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        let interval = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(interval),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// The store operations the layer logs failures of.
#[derive(Clone, Copy, Debug)]
pub(crate) enum StoreOp {
    Read,
    Write,
    Touch,
    Lock,
    Remove,
}

static THROTTLES: LazyLock<[Throttle; 5]> =
    LazyLock::new(|| std::array::from_fn(|_| Throttle::new(Duration::from_secs(10))));

/// The event funnel: every event the layer counts passes here — a request's one outcome,
/// what became of a response it meant to store, coalescing timeouts, store failures — for
/// the total and the request's route. The stats consume it; observers and metrics hang here.
pub(crate) fn event(stats: &CacheStats, route: &Counters, event: Event) {
    stats.record(route, event);
}

/// How a request ended, as counted: every request ends once, here.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Ended {
    /// Passed on without the cache (a method it does not cache, a disabled route).
    Passed,
    /// Answered by the cache layer: the outcome its headers say.
    Answered(Outcome),
}

/// A request's one outcome event: the one place where "this request ended as X" happens.
/// Its counter is the one the `x-cache` value maps to; a request that waited for another's
/// fetch counts `coalesced` as well.
pub(crate) fn request_ended(stats: &CacheStats, route: &Counters, ended: Ended) {
    match ended {
        Ended::Passed => event(stats, route, Event::Pass),
        Ended::Answered(outcome) => {
            event(stats, route, outcome.event());
            if outcome == Outcome::Coalesced {
                event(stats, route, Event::Coalesced);
            }
        }
    }
}

/// A purge (of `kind`, in `mode`) ended: with how many entries the store purged, or
/// failed (`None`).
pub(crate) fn purged(stats: &CacheStats, kind: PurgeKind, mode: PurgeMode, purged: Option<u64>) {
    stats.record_purge(kind, mode, purged);
}

/// Tags past a limit were ignored when a response was stored.
pub(crate) fn tags_ignored(stats: &CacheStats, ignored: u64) {
    if ignored > 0 {
        stats.record_tags_ignored(ignored);
    }
}

/// A failed store operation: counted (in the total and in `route`) and logged.
pub(crate) fn store_failed(
    stats: &CacheStats,
    route: &Counters,
    op: StoreOp,
    key: &str,
    error: &StoreError,
) {
    event(stats, route, Event::StoreError(error.kind()));
    store_error(op, key, error);
}

/// Warns of a failed store operation, at most once per 10 s per operation.
fn store_error(op: StoreOp, key: &str, error: &StoreError) {
    let Some(suppressed) = THROTTLES[op as usize].allow() else {
        return;
    };
    let operation = match op {
        StoreOp::Read => "read",
        StoreOp::Write => "write",
        StoreOp::Touch => "touch",
        StoreOp::Lock => "fill lock",
        StoreOp::Remove => "remove",
    };
    // The key's length, not the key: a URL may carry tokens that do not belong in logs.
    tracing::warn!(
        %error,
        key_len = key.len(),
        operation,
        suppressed,
        "cache store {operation} failed; the request is served without the cache ({suppressed} similar failures not logged)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_one_through_per_interval_and_counts_the_rest() {
        let throttle = Throttle::new(Duration::from_millis(300));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(throttle.allow(), Some(2));
    }
}
