//! What a store can do, as one value ([`Capabilities`]).

/// What a store can do beyond the core of [`Store`](super::Store) — get, put with a
/// condition, purge keys and everything — as one value: the layer reads it once when it is
/// built, the contract kit checks the store against it, and the store table in the
/// documentation is checked against the values of the stores this crate ships.
///
/// What a store offers as a trait of its own ([`SharedStore`](super::SharedStore),
/// [`Counters`](super::Counters), [`Batches`](super::Batches)) is told by the accessor that
/// returns it ([`Store::shared`](super::Store::shared) and the others), not here.
///
/// ```
/// use tower_response_cache::store::Capabilities;
///
/// let mut can = Capabilities::new("dynamo");
/// can.touch = true;
/// can.tag_purges = true;
/// assert!(!can.prefix_purges);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Capabilities {
    /// A short, stable name for metrics and spans (`memory`, `redis`).
    pub name: &'static str,
    /// [`Store::get_now`](super::Store::get_now) answers in place (an in-process map): a hit
    /// costs no future and no allocation for the lookup.
    pub reads_in_place: bool,
    /// A put completes without waiting (an in-process map): the layer's default
    /// [`WriteMode::Auto`](crate::WriteMode::Auto) then writes entries inline, so that the
    /// next request finds the entry as soon as a response's body has been delivered.
    pub writes_in_place: bool,
    /// The store has tiers: [`get_now`](super::Store::get_now) answers from the first
    /// (per-instance memory), [`get`](super::Store::get) from the second (shared). The layer
    /// then names the tier of each hit ([`Tier`](super::Tier)).
    pub tiered: bool,
    /// [`Store::touch`](super::Store::touch) (sliding expiry).
    pub touch: bool,
    /// Hard purges of [`PurgeTarget::Prefix`](super::PurgeTarget::Prefix) without a filter.
    pub prefix_purges: bool,
    /// Prefix purges with a filter (the URLs under a path).
    pub filtered_prefix_purges: bool,
    /// Purges of [`PurgeTarget::Tag`](super::PurgeTarget::Tag).
    pub tag_purges: bool,
    /// [`PurgeMode::Soft`](super::PurgeMode::Soft) for every target the store purges but
    /// [`PurgeTarget::All`](super::PurgeTarget::All).
    pub soft_purges: bool,
    /// A prefix, tag or whole-store purge returns how many entries it took (a store that
    /// cannot list its keys returns 0).
    pub counts_purges: bool,
    /// [`SharedStore::lock_fill`](super::SharedStore::lock_fill): one process fetches a
    /// missing entry while the others sharing the store wait for it.
    pub fill_locks: bool,
}

impl Capabilities {
    /// A store named `name` that can do nothing beyond the core: set the fields of what it
    /// can.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            reads_in_place: false,
            writes_in_place: false,
            tiered: false,
            touch: false,
            prefix_purges: false,
            filtered_prefix_purges: false,
            tag_purges: false,
            soft_purges: false,
            counts_purges: false,
            fill_locks: false,
        }
    }
}

impl Default for Capabilities {
    /// [`Capabilities::new`]`("custom")`.
    fn default() -> Self {
        Self::new("custom")
    }
}
