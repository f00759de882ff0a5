//! What a purge is for ([`PurgeTarget`]) and how it treats what it finds ([`PurgeMode`]),
//! as [`Store::purge`](super::Store::purge) takes them.

use std::fmt;
use std::time::SystemTime;

use crate::entry::CachedResponse;

/// How a purge treats the entries it finds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PurgeMode {
    /// They are removed. The default.
    #[default]
    Hard,
    /// They become stale now, as Fastly's soft purge: a request finding one revalidates it
    /// with the origin (once, coalesced), and it may still answer within its stale windows
    /// (`stale-while-revalidate`, `stale-if-error`) meanwhile. Their life in the store is
    /// not extended, and an entry stale already is left as it is.
    Soft,
}

impl PurgeMode {
    /// `hard` or `soft`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hard => "hard",
            Self::Soft => "soft",
        }
    }
}

/// A test of keys, for [`PurgeTarget::Prefix`].
pub type KeyFilter = dyn Fn(&str) -> bool + Send + Sync;

/// The entries a purge is for. Keys are as the layer gives them to
/// [`Store::get`](super::Store::get) (complete, a store's own namespace aside).
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum PurgeTarget<'a> {
    /// The entries under these keys.
    Keys(&'a [String]),
    /// Every entry whose key starts with `prefix` and, with a filter, that the filter
    /// accepts (called with the whole key). An empty prefix is refused by stores that
    /// share their keyspace.
    Prefix {
        /// What the keys start with.
        prefix: &'a str,
        /// A further test of each key that starts with `prefix`.
        filter: Option<&'a KeyFilter>,
    },
    /// Every entry tagged `tag` ([`CachedResponse::tags`]) whose key starts with `within`
    /// (a layer's namespace: entries of other layers that share the store keep theirs).
    Tag {
        /// The tag, as stored.
        tag: &'a str,
        /// What the keys start with.
        within: &'a str,
    },
    /// Every entry of the store: of a store that shares its keyspace, every entry under
    /// its own namespace and nothing else. Hard only (stores answer
    /// [`StoreErrorKind::Unsupported`](super::StoreErrorKind::Unsupported) to a soft one).
    All,
}

impl fmt::Debug for PurgeTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Keys(keys) => f.debug_tuple("Keys").field(keys).finish(),
            Self::Prefix { prefix, filter } => f
                .debug_struct("Prefix")
                .field("prefix", prefix)
                .field("filter", &filter.map(|_| "<fn>"))
                .finish(),
            Self::Tag { tag, within } => f
                .debug_struct("Tag")
                .field("tag", tag)
                .field("within", within)
                .finish(),
            Self::All => f.write_str("All"),
        }
    }
}

impl PurgeTarget<'_> {
    /// Whether the entry under `key` is one of those a prefix target is for.
    pub(crate) fn prefix_matches(prefix: &str, filter: Option<&KeyFilter>, key: &str) -> bool {
        key.starts_with(prefix) && filter.is_none_or(|filter| filter(key))
    }
}

/// The entry a soft purge leaves in place of `entry` at `now`: the same, with its freshness
/// cut to its time in the cache so that it is stale from now on; its stale windows and its
/// life in the store unchanged. `None` when it is stale already (nothing to change).
pub fn softened(entry: &CachedResponse, now: SystemTime) -> Option<CachedResponse> {
    if !entry.is_fresh(now) {
        return None;
    }
    let mut soft = entry.clone();
    soft.ttl = entry.resident_time(now);
    Some(soft)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};
    use std::time::Duration;

    #[test]
    fn a_softened_entry_is_stale_now_and_keeps_its_windows() {
        let mut entry = CachedResponse::new(StatusCode::OK, HeaderMap::new(), Bytes::new());
        entry.ttl = Duration::from_secs(60);
        entry.stale_while_revalidate = Duration::from_secs(30);
        let now = entry.stored_at + Duration::from_secs(10);
        let soft = softened(&entry, now).unwrap();
        assert!(!soft.is_fresh(now));
        assert!(soft.may_serve_while_revalidating(now));
        assert!(soft.storage_ttl() <= entry.storage_ttl(), "never longer");
        assert_eq!(soft.body, entry.body);
        assert!(softened(&soft, now).is_none(), "stale already");
    }
}
