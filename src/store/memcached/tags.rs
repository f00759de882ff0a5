//! Tag purges where keys cannot be listed: numbered purges, recorded per tag, checked
//! as entries are read.
//!
//! Every purge takes a number from the namespace's purge counter (memcached's `incr`:
//! higher than any number read before it). A tagged entry is stored with the counter's
//! value as read just before (its *mark*), and each of its tags has a record of the purges
//! made of it. Read back, the entry is purged when a purge of one of its tags, in a
//! namespace its key is in, has a number above its mark — or softened (stale from the
//! purge on) for a soft purge. A tag's record is made before any entry with the tag is
//! stored, and numbered too: an entry older than its tag's record (whose previous record
//! memcached evicted, taking the purges it held) counts as purged.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::entry::CachedResponse;
use crate::store::purge::{PurgeMode, softened};

/// The namespaces (`within`) a tag's record keeps apart; past it, the oldest two are
/// merged into their common prefix, which purges more, never less.
const WITHINS_KEPT: usize = 16;

/// What memcached holds for a tag (JSON, a few dozen bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct TagRecord {
    /// The purge counter when the record was made.
    #[serde(rename = "c")]
    pub(super) created: u64,
    /// The latest purges of the tag, per namespace.
    #[serde(rename = "p", default)]
    pub(super) purges: Vec<TagPurge>,
}

/// The latest purges of a tag within one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct TagPurge {
    /// What the keys start with.
    #[serde(rename = "w")]
    pub(super) within: String,
    /// The number of the latest hard purge (0: none).
    #[serde(rename = "h", default)]
    pub(super) hard: u64,
    /// The number of the latest soft purge (0: none).
    #[serde(rename = "s", default)]
    pub(super) soft: u64,
    /// When the latest soft purge was made, in milliseconds since the Unix epoch.
    #[serde(rename = "t", default)]
    pub(super) soft_at_ms: u64,
}

/// What the records of an entry's tags make of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Untouched by any purge since it was stored.
    Kept,
    /// Purged (or its tag's record lost): a miss.
    Purged,
    /// Soft-purged at this time (milliseconds since the Unix epoch): stale from then on.
    SoftPurged(u64),
}

impl TagRecord {
    pub(super) fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    pub(super) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a tag record serializes")
    }

    /// The highest number the record holds: of two copies of a record, the one with the
    /// higher is the later.
    pub(super) fn latest(&self) -> u64 {
        self.purges
            .iter()
            .map(|purge| purge.hard.max(purge.soft))
            .fold(self.created, u64::max)
    }

    /// Records purge number `number` of the tag within `within`, made at `at_ms`.
    pub(super) fn record(&mut self, within: &str, mode: PurgeMode, number: u64, at_ms: u64) {
        let index = match self.purges.iter().position(|purge| purge.within == within) {
            Some(index) => index,
            None => {
                self.purges.push(TagPurge {
                    within: within.to_owned(),
                    ..TagPurge::default()
                });
                self.purges.len() - 1
            }
        };
        let purge = &mut self.purges[index];
        match mode {
            PurgeMode::Hard => purge.hard = purge.hard.max(number),
            PurgeMode::Soft => {
                if number > purge.soft {
                    purge.soft = number;
                    purge.soft_at_ms = at_ms;
                }
            }
        }
        while self.purges.len() > WITHINS_KEPT {
            self.merge_oldest();
        }
    }

    /// Merges the two namespaces purged least recently into their common prefix.
    fn merge_oldest(&mut self) {
        self.purges
            .sort_by_key(|purge| std::cmp::Reverse(purge.hard.max(purge.soft)));
        let (Some(last), Some(before)) = (self.purges.pop(), self.purges.pop()) else {
            return;
        };
        let common = last
            .within
            .char_indices()
            .zip(before.within.chars())
            .find(|((_, a), b)| a != b)
            .map_or_else(
                || {
                    let shorter = last.within.len().min(before.within.len());
                    &last.within[..shorter]
                },
                |((at, _), _)| &last.within[..at],
            )
            .to_owned();
        let (soft, soft_at_ms) = if last.soft >= before.soft {
            (last.soft, last.soft_at_ms)
        } else {
            (before.soft, before.soft_at_ms)
        };
        self.purges.push(TagPurge {
            within: common,
            hard: last.hard.max(before.hard),
            soft,
            soft_at_ms,
        });
    }

    /// What the record makes of the entry under `key` stored with `mark`.
    pub(super) fn verdict(&self, key: &str, mark: u64) -> Verdict {
        if mark < self.created {
            return Verdict::Purged;
        }
        let mut soft: Option<u64> = None;
        for purge in self
            .purges
            .iter()
            .filter(|purge| key.starts_with(&purge.within))
        {
            if mark < purge.hard {
                return Verdict::Purged;
            }
            if mark < purge.soft {
                soft = Some(soft.map_or(purge.soft_at_ms, |at| at.min(purge.soft_at_ms)));
            }
        }
        soft.map_or(Verdict::Kept, Verdict::SoftPurged)
    }

    /// Whether a purge numbered above `mark` may cover the entry under `key`.
    pub(super) fn purged_since(&self, key: &str, mark: u64) -> bool {
        self.purges
            .iter()
            .filter(|purge| key.starts_with(&purge.within))
            .any(|purge| purge.hard > mark || purge.soft > mark)
    }
}

/// The verdicts of an entry's tags, taken together: purged by any, else soft-purged at the
/// earliest.
pub(super) fn combine(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
    let mut soft: Option<u64> = None;
    for verdict in verdicts {
        match verdict {
            Verdict::Purged => return Verdict::Purged,
            Verdict::SoftPurged(at) => soft = Some(soft.map_or(at, |before| before.min(at))),
            Verdict::Kept => {}
        }
    }
    soft.map_or(Verdict::Kept, Verdict::SoftPurged)
}

/// The entry a soft purge at `at_ms` leaves: stale from then on (unchanged when it was
/// stale already then).
pub(super) fn soften(entry: CachedResponse, at_ms: u64) -> CachedResponse {
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms);
    softened(&entry, at).unwrap_or(entry)
}

/// Now, in milliseconds since the Unix epoch.
pub(super) fn millis_now() -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> TagRecord {
        TagRecord {
            created: 10,
            purges: Vec::new(),
        }
    }

    #[test]
    fn a_purge_takes_what_was_stored_before_it_within_its_namespace() {
        let mut record = record();
        assert_eq!(record.verdict("cache:/a", 10), Verdict::Kept);
        record.record("cache:", PurgeMode::Hard, 12, 0);
        assert_eq!(record.verdict("cache:/a", 11), Verdict::Purged);
        assert_eq!(
            record.verdict("cache:/a", 12),
            Verdict::Kept,
            "stored after"
        );
        assert_eq!(
            record.verdict("other:/a", 11),
            Verdict::Kept,
            "another namespace keeps its entries"
        );
        assert!(record.purged_since("cache:/a", 11));
        assert!(!record.purged_since("cache:/a", 12));
        assert!(!record.purged_since("other:/a", 0));
    }

    #[test]
    fn an_entry_older_than_its_tags_record_counts_as_purged() {
        assert_eq!(record().verdict("cache:/a", 9), Verdict::Purged);
    }

    #[test]
    fn a_soft_purge_dates_the_entry_and_a_hard_one_wins() {
        let mut record = record();
        record.record("cache:", PurgeMode::Soft, 12, 5_000);
        assert_eq!(record.verdict("cache:/a", 11), Verdict::SoftPurged(5_000));
        record.record("cache:", PurgeMode::Soft, 11, 9_000);
        assert_eq!(
            record.purges[0].soft_at_ms, 5_000,
            "an older number changes nothing"
        );
        record.record("cache:", PurgeMode::Hard, 13, 0);
        assert_eq!(record.verdict("cache:/a", 11), Verdict::Purged);
        assert_eq!(
            combine([
                Verdict::Kept,
                Verdict::SoftPurged(7),
                Verdict::SoftPurged(3)
            ]),
            Verdict::SoftPurged(3)
        );
        assert_eq!(
            combine([Verdict::SoftPurged(7), Verdict::Purged]),
            Verdict::Purged
        );
    }

    #[test]
    fn a_soft_purged_entry_is_stale_from_the_purge_on() {
        let mut entry = CachedResponse::new(
            http::StatusCode::OK,
            http::HeaderMap::new(),
            bytes::Bytes::new(),
        );
        entry.ttl = Duration::from_secs(600);
        entry.stale_while_revalidate = Duration::from_secs(60);
        let stored_ms = millis_now();
        entry.stored_at = SystemTime::UNIX_EPOCH + Duration::from_millis(stored_ms);
        let soft = soften(entry.clone(), stored_ms + 2_000);
        assert_eq!(soft.ttl, Duration::from_secs(2));
        assert_eq!(soft.stale_while_revalidate, Duration::from_secs(60));
        assert!(!soft.is_fresh(SystemTime::now() + Duration::from_secs(3)));
        let later = soften(entry.clone(), stored_ms + 700_000);
        assert_eq!(later.ttl, entry.ttl, "stale already then: unchanged");
    }

    #[test]
    fn records_survive_their_bytes_and_garbage_is_none() {
        let mut record = record();
        record.record("cache:", PurgeMode::Soft, 12, 5_000);
        assert_eq!(TagRecord::parse(&record.to_bytes()), Some(record));
        assert_eq!(TagRecord::parse(b"\xff garbage"), None);
    }

    proptest! {
        /// However many namespaces purge a tag, the record stays bounded and never lets an
        /// entry a purge covered come back.
        #[test]
        fn merging_keeps_records_bounded_and_purges_more_never_less(
            purges in proptest::collection::vec(("[a-c]{0,3}:", 1u64..1000, any::<bool>()), 1..60),
            key in "[a-c]{0,3}:/x",
        ) {
            let mut record = TagRecord::default();
            let mut reference: Vec<(String, u64, bool)> = Vec::new();
            for (within, number, hard) in purges {
                let mode = if hard { PurgeMode::Hard } else { PurgeMode::Soft };
                record.record(&within, mode, number, number);
                reference.push((within, number, hard));
            }
            prop_assert!(record.purges.len() <= WITHINS_KEPT);
            for mark in [0, 250, 500, 750, 999] {
                let covered_hard = reference.iter().any(|(within, number, hard)| {
                    *hard && key.starts_with(within.as_str()) && mark < *number
                });
                let covered = reference.iter().any(|(within, number, _)| {
                    key.starts_with(within.as_str()) && mark < *number
                });
                let verdict = record.verdict(&key, mark);
                if covered_hard {
                    prop_assert_eq!(verdict, Verdict::Purged);
                }
                if covered {
                    prop_assert_ne!(verdict, Verdict::Kept);
                    prop_assert!(record.purged_since(&key, mark));
                }
            }
        }
    }
}
