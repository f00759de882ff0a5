//! The one door for removing entries ahead of their time: the [`Invalidator`] fences what
//! it purges (a fetch that started before may not write it back), forgets the in-flight
//! fetches of it (later requests do not join a flight that predates the change), purges the
//! store, and counts. Unsafe requests (RFC 9111 §4.4) and every purge of the public
//! [`CacheHandle`](crate::CacheHandle) go through it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::coalesce::Coalescer;
use crate::observe::{self, EventKind, Funnel, StoreOperation, Timings};
use crate::stats::PurgeKind;
use crate::store::{KeyFilter, PurgeMode, PurgeTarget, Store, StoreError};

/// What a purge is for, owned, so that the fence can remember it.
#[derive(Clone)]
pub(crate) enum Scope {
    /// These keys.
    Keys(Vec<String>),
    /// The keys that start with `prefix` and that `filter` (if any) accepts.
    Prefix {
        prefix: String,
        filter: Option<Arc<KeyFilter>>,
    },
    /// The entries tagged `tag` whose keys start with `within`.
    Tag { tag: String, within: String },
}

impl Scope {
    /// The store's view of it.
    pub(crate) fn target(&self) -> PurgeTarget<'_> {
        match self {
            Self::Keys(keys) => PurgeTarget::Keys(keys),
            Self::Prefix { prefix, filter } => PurgeTarget::Prefix {
                prefix,
                filter: filter.as_deref(),
            },
            Self::Tag { tag, within } => PurgeTarget::Tag { tag, within },
        }
    }

    /// Whether a response stored under `key` with `tags` is one the purge is for.
    fn covers(&self, key: &str, tags: &[String]) -> bool {
        match self {
            Self::Keys(keys) => keys.iter().any(|purged| purged == key),
            Self::Prefix { prefix, filter } => {
                PurgeTarget::prefix_matches(prefix, filter.as_deref(), key)
            }
            Self::Tag { tag, within } => {
                key.starts_with(within.as_str()) && tags.iter().any(|has| has == tag)
            }
        }
    }

    /// Whether a flight for `key` may be fetching something the purge is for (the tags of
    /// its response are not known yet).
    fn may_cover_flight(&self, key: &str) -> bool {
        match self {
            Self::Tag { within, .. } => key.starts_with(within.as_str()),
            scope => scope.covers(key, &[]),
        }
    }
}

/// Where purges stood when a fetch started: this process's epoch, and the store's mark of
/// the purges of every process sharing it ([`SharedStore::purge_mark`](crate::store::SharedStore::purge_mark)).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Started {
    pub(crate) epoch: u64,
    pub(crate) mark: Option<u64>,
}

/// Recent invalidations, so that a fetch that started before one does not store its
/// response after it (the response may predate the change).
///
/// A global epoch counts invalidations; each fetch notes the epoch when it starts, and its
/// write goes ahead only if nothing it would write was invalidated since. Invalidations are
/// remembered for [`REMEMBERED`] (a fetch older than that is not protected), at most
/// [`MAX_REMEMBERED`] keys and [`MAX_BROAD`] prefixes or tags; past that the oldest are
/// forgotten and every fetch that started before them is treated as invalidated (its
/// response is served, not stored).
#[derive(Debug, Default)]
pub(crate) struct Invalidations {
    epoch: AtomicU64,
    state: Mutex<Remembered>,
}

#[derive(Default)]
struct Remembered {
    /// Fetches that started before this epoch may not write at all.
    floor: u64,
    keys: HashMap<String, (u64, Instant)>,
    /// Prefix and tag invalidations, oldest first.
    broad: VecDeque<(u64, Instant, Scope)>,
}

impl std::fmt::Debug for Remembered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remembered")
            .field("floor", &self.floor)
            .field("keys", &self.keys.len())
            .field("broad", &self.broad.len())
            .finish()
    }
}

/// How long an invalidation is remembered.
const REMEMBERED: Duration = Duration::from_secs(60);
/// How many invalidated keys are remembered at most.
const MAX_REMEMBERED: usize = 10_000;
/// How many prefix and tag invalidations are remembered at most.
const MAX_BROAD: usize = 1_000;

impl Invalidations {
    /// The epoch to note when a fetch starts.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Records that `scope` was invalidated now.
    pub(crate) fn invalidate(&self, scope: &Scope) {
        let mut state = self.lock();
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        let now = Instant::now();
        match scope {
            Scope::Keys(keys) => {
                if state.keys.len() + keys.len() > MAX_REMEMBERED {
                    state
                        .keys
                        .retain(|_, (_, at)| now.duration_since(*at) < REMEMBERED);
                    if state.keys.len() + keys.len() > MAX_REMEMBERED {
                        // Too many to remember: no fetch that started before now may write.
                        state.keys.clear();
                        state.floor = epoch;
                    }
                }
                for key in keys.iter().take(MAX_REMEMBERED) {
                    state.keys.insert(key.clone(), (epoch, now));
                }
            }
            broad => {
                while state
                    .broad
                    .front()
                    .is_some_and(|(_, at, _)| now.duration_since(*at) >= REMEMBERED)
                {
                    state.broad.pop_front();
                }
                if state.broad.len() >= MAX_BROAD
                    && let Some((forgotten, _, _)) = state.broad.pop_front()
                {
                    state.floor = state.floor.max(forgotten);
                }
                state.broad.push_back((epoch, now, broad.clone()));
            }
        }
    }

    /// Whether a fetch that started at `epoch` may store its response, tagged `tags`,
    /// under `key`.
    pub(crate) fn allows(&self, key: &str, tags: &[String], epoch: u64) -> bool {
        // Nothing was invalidated since the fetch started: the common case, without a lock.
        if self.epoch() == epoch {
            return true;
        }
        let state = self.lock();
        if epoch < state.floor {
            return false;
        }
        let key_invalidated = state
            .keys
            .get(key)
            .is_some_and(|(invalidated, at)| *invalidated > epoch && at.elapsed() < REMEMBERED);
        let broadly_invalidated = state
            .broad
            .iter()
            .rev()
            .take_while(|(invalidated, _, _)| *invalidated > epoch)
            .any(|(_, at, scope)| at.elapsed() < REMEMBERED && scope.covers(key, tags));
        !key_invalidated && !broadly_invalidated
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Remembered> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// What an invalidation needs of a layer: its fence, its in-flight map (when coalescing is
/// on), its store and its stats.
pub(crate) struct Invalidator<'a> {
    pub(crate) fence: &'a Invalidations,
    pub(crate) coalescer: Option<&'a Coalescer>,
    pub(crate) store: &'a dyn Store,
    pub(crate) funnel: &'a Funnel,
}

impl Invalidator<'_> {
    /// Purges `scope`: fenced and its flights forgotten at once, then purged in the store;
    /// counted under `kind`. A store failure is counted (as a store error in the total and
    /// under `(other)`: no route's lookup, and as a failed purge) and logged; the fence
    /// holds either way.
    pub(crate) async fn purge(
        &self,
        scope: &Scope,
        mode: PurgeMode,
        kind: PurgeKind,
    ) -> Result<u64, StoreError> {
        self.fence.invalidate(scope);
        if let Some(coalescer) = self.coalescer {
            match scope {
                Scope::Keys(keys) => keys.iter().for_each(|key| coalescer.forget(key)),
                scope => coalescer.forget_where(|key| scope.may_cover_flight(key)),
            }
        }
        let result = self.store.purge(scope.target(), mode).await;
        if let Err(error) = &result {
            let key = match scope {
                Scope::Keys(keys) => keys.last().map_or("", String::as_str),
                Scope::Prefix { prefix, .. } => prefix,
                Scope::Tag { within, .. } => within,
            };
            self.funnel
                .store_failed(observe::Scope::LAYER, StoreOperation::Purge, key, error);
        }
        let purged = EventKind::Purged {
            kind,
            mode,
            entries: result.as_ref().ok().copied(),
        };
        self.funnel
            .record(observe::Scope::LAYER, purged, Timings::default());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(keys: &[&str]) -> Scope {
        Scope::Keys(keys.iter().map(|key| (*key).to_owned()).collect())
    }

    #[test]
    fn a_fetch_may_write_unless_its_key_was_invalidated_since_it_started() {
        let invalidations = Invalidations::default();
        let before = invalidations.epoch();
        invalidations.invalidate(&keys(&["a"]));
        let after = invalidations.epoch();
        assert!(!invalidations.allows("a", &[], before), "invalidated since");
        assert!(invalidations.allows("b", &[], before), "another key");
        assert!(
            invalidations.allows("a", &[], after),
            "started after the invalidation"
        );
    }

    #[test]
    fn prefixes_and_tags_fence_what_they_cover() {
        let invalidations = Invalidations::default();
        let before = invalidations.epoch();
        invalidations.invalidate(&Scope::Prefix {
            prefix: "ns:GET:/users/".to_owned(),
            filter: Some(Arc::new(|key: &str| !key.ends_with("/keep"))),
        });
        invalidations.invalidate(&Scope::Tag {
            tag: "team:7".to_owned(),
            within: "ns:".to_owned(),
        });
        let tagged = ["team:7".to_owned()];
        assert!(!invalidations.allows("ns:GET:/users/1", &[], before));
        assert!(invalidations.allows("ns:GET:/users/keep", &[], before));
        assert!(!invalidations.allows("ns:GET:/teams", &tagged, before));
        assert!(invalidations.allows("ns:GET:/teams", &["team:70".to_owned()], before));
        assert!(invalidations.allows("other:GET:/teams", &tagged, before));
        let after = invalidations.epoch();
        assert!(invalidations.allows("ns:GET:/users/1", &tagged, after));
    }

    #[test]
    fn too_many_invalidations_make_older_fetches_not_write() {
        let invalidations = Invalidations::default();
        let before = invalidations.epoch();
        for i in 0..=MAX_REMEMBERED {
            invalidations.invalidate(&keys(&[&format!("k{i}")]));
        }
        let after = invalidations.epoch();
        assert!(!invalidations.allows("never-invalidated", &[], before));
        assert!(invalidations.allows("never-invalidated", &[], after));
        assert!(invalidations.lock().keys.len() <= MAX_REMEMBERED);

        let invalidations = Invalidations::default();
        let before = invalidations.epoch();
        for i in 0..=MAX_BROAD {
            invalidations.invalidate(&Scope::Tag {
                tag: format!("t{i}"),
                within: String::new(),
            });
        }
        assert!(!invalidations.allows("untagged", &[], before));
        assert!(invalidations.lock().broad.len() <= MAX_BROAD);
    }
}
