//! The one door for removing entries ahead of their time: the [`Invalidator`] fences a
//! key (a fetch that started before may not write it back), forgets the in-flight fetch of
//! it (later requests do not join a flight that predates the change), and removes it from
//! the store. Unsafe requests go through it today; the invalidation API, tag and remote
//! purges will.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::coalesce::Coalescer;
use crate::observe::{self, StoreOp};
use crate::stats::CacheStats;
use crate::store::Store;

/// Recent invalidations, so that a fetch that started before one does not store its
/// response after it (the response may predate the change).
///
/// A global epoch counts invalidations; each fetch notes the epoch when it starts, and its
/// write goes ahead only if its key was not invalidated since. Invalidations are remembered
/// for [`REMEMBERED`] (a fetch older than that is not protected) and at most
/// [`MAX_REMEMBERED`] keys; past that the oldest are forgotten and every fetch that started
/// before them is treated as invalidated (its response is served, not stored).
#[derive(Debug, Default)]
pub(crate) struct Invalidations {
    epoch: AtomicU64,
    state: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    /// Fetches that started before this epoch may not write at all.
    floor: u64,
    keys: HashMap<String, (u64, Instant)>,
}

/// How long an invalidation is remembered.
const REMEMBERED: Duration = Duration::from_secs(60);
/// How many invalidated keys are remembered at most.
const MAX_REMEMBERED: usize = 10_000;

impl Invalidations {
    /// The epoch to note when a fetch starts.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Records that `key` was invalidated now.
    pub(crate) fn invalidate(&self, key: &str) {
        let mut state = self.lock();
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        let now = Instant::now();
        if state.keys.len() >= MAX_REMEMBERED {
            state
                .keys
                .retain(|_, (_, at)| now.duration_since(*at) < REMEMBERED);
            if state.keys.len() >= MAX_REMEMBERED {
                // Too many to remember: no fetch that started before now may write.
                state.keys.clear();
                state.floor = epoch;
            }
        }
        state.keys.insert(key.to_owned(), (epoch, now));
    }

    /// Whether a fetch that started at `epoch` may store its response under `key`.
    pub(crate) fn allows(&self, key: &str, epoch: u64) -> bool {
        // Nothing was invalidated since the fetch started: the common case, without a lock.
        if self.epoch() == epoch {
            return true;
        }
        let state = self.lock();
        epoch >= state.floor
            && state
                .keys
                .get(key)
                .is_none_or(|(invalidated, at)| *invalidated <= epoch || at.elapsed() >= REMEMBERED)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Remembered> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// What an invalidation needs of a layer: its fence, its in-flight map (when coalescing is
/// on), its store and its stats (for the store's failures).
pub(crate) struct Invalidator<'a> {
    pub(crate) fence: &'a Invalidations,
    pub(crate) coalescer: Option<&'a Coalescer>,
    pub(crate) store: &'a dyn Store,
    pub(crate) stats: &'a CacheStats,
}

impl Invalidator<'_> {
    /// Invalidates `keys`: fenced and forgotten at once, then removed from the store. A
    /// store failure is counted (in the total and under `(other)`: no route's lookup) and
    /// logged; the fence holds either way.
    pub(crate) async fn invalidate(&self, keys: &[String]) {
        for key in keys {
            self.fence.invalidate(key);
            if let Some(coalescer) = self.coalescer {
                coalescer.forget(key);
            }
        }
        if let Err(error) = self.store.remove_many(keys).await {
            let key = keys.last().map_or("", String::as_str);
            observe::store_failed(
                self.stats,
                &self.stats.other(),
                StoreOp::Remove,
                key,
                &error,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_may_write_unless_its_key_was_invalidated_since_it_started() {
        let invalidations = Invalidations::default();
        let before = invalidations.epoch();
        invalidations.invalidate("a");
        let after = invalidations.epoch();
        assert!(!invalidations.allows("a", before), "invalidated since");
        assert!(invalidations.allows("b", before), "another key");
        assert!(
            invalidations.allows("a", after),
            "started after the invalidation"
        );
    }

    #[test]
    fn too_many_invalidations_make_older_fetches_not_write() {
        let invalidations = Invalidations::default();
        let before = invalidations.epoch();
        for i in 0..=MAX_REMEMBERED {
            invalidations.invalidate(&format!("k{i}"));
        }
        let after = invalidations.epoch();
        assert!(!invalidations.allows("never-invalidated", before));
        assert!(invalidations.allows("never-invalidated", after));
        assert!(invalidations.lock().keys.len() <= MAX_REMEMBERED);
    }
}
