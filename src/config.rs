//! [`Config`]: the runtime state and settings a layer's services share, and their defaults.
//!
//! The builder ([`CacheLayer`](crate::CacheLayer)) writes it; everything stateful reads it
//! from here, not from the builder's file.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use http::response::Parts;
use http::{HeaderMap, HeaderName};

use crate::clock::Clock;
use crate::coalesce::Coalescer;
use crate::fence::{Invalidations, Invalidator, Started};
use crate::observe::Funnel;
use crate::observe::trace::TraceSettings;
use crate::outcome::CacheStatus;
use crate::policy::RoutePolicy;
use crate::policy::cache_control::CacheControl;
use crate::policy::freshness::FreshnessSettings;
use crate::policy::response::StorageRules;
use crate::policy::tags::TagRules;
use crate::policy::targeted::response_directives;
use crate::policy::{ClientControl, HeuristicFreshness, RequestCookies};
use crate::routes::{Route, RouteTable};
use crate::store::{Capabilities, SharedStore, Store};

/// How long a request waits for another's fetch.
const DEFAULT_COALESCE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an uncacheable key's requests are not serialized.
const DEFAULT_HIT_FOR_MISS: Duration = Duration::from_secs(10);

/// Variants per key, by default ([`CacheLayer::max_variants`](crate::CacheLayer::max_variants)).
const DEFAULT_MAX_VARIANTS: usize = 8;

/// The default name of the header that forces a refresh.
pub const DEFAULT_BYPASS_HEADER: HeaderName = HeaderName::from_static("x-cache-bypass");

/// The default name of the header that reports what the cache did.
pub const DEFAULT_STATUS_HEADER: HeaderName = HeaderName::from_static("x-cache");

/// When a response is written to the store.
///
/// Whatever the mode, reads follow writes: the request after a delivered response is a hit
/// (on a background write, a request that arrives while the write is under way is answered
/// with the entry all the same), and no request gets an older response once a newer one
/// was delivered — an older write never replaces a newer entry
/// ([`PutIf::Newer`](crate::store::PutIf::Newer)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteMode {
    /// Inline on a store whose writes complete at once ([`Capabilities::writes_in_place`](crate::store::Capabilities::writes_in_place):
    /// [`MemoryStore`](crate::MemoryStore)), in the background on the others (Redis): the
    /// next request finds the entry as soon as a response's body has been delivered, and no
    /// client waits for a network store. The default.
    #[default]
    Auto,
    /// In a background task once the body is complete: the client never waits for the
    /// store. (Without a Tokio runtime the write happens inline.) Requests for the key
    /// that arrive while the write is under way are answered with the entry all the same.
    Background,
    /// Before the body reports its end: once a client has read the whole body, the entry is
    /// in the store. Bounds the number of writes in flight.
    Inline,
}

impl WriteMode {
    /// Whether writes to `store` wait for the store before the body ends.
    pub(crate) fn inline_for(self, store: &Capabilities) -> bool {
        match self {
            Self::Auto => store.writes_in_place,
            Self::Background => false,
            Self::Inline => true,
        }
    }
}

/// A `ttl_fn`, printed as `<fn>`.
#[derive(Clone)]
pub(crate) struct TtlFn(Arc<DynTtlFn>);

type DynTtlFn = dyn Fn(&Parts) -> Option<Duration> + Send + Sync;

impl TtlFn {
    pub(crate) fn new(f: impl Fn(&Parts) -> Option<Duration> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub(crate) fn call(&self, parts: &Parts) -> Option<Duration> {
        (self.0)(parts)
    }
}

impl fmt::Debug for TtlFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<fn>")
    }
}

/// The predicate that allows `PURGE` requests, printed as `<fn>`.
#[derive(Clone)]
pub(crate) struct PurgeGate(Arc<DynPurgeGate>);

type DynPurgeGate = dyn Fn(&http::request::Parts) -> bool + Send + Sync;

impl PurgeGate {
    pub(crate) fn new(f: impl Fn(&http::request::Parts) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub(crate) fn call(&self, parts: &http::request::Parts) -> bool {
        (self.0)(parts)
    }
}

impl fmt::Debug for PurgeGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<fn>")
    }
}

/// Everything but the key builder that a [`CacheService`](crate::CacheService) needs, shared
/// by all its clones: the layer's settings and its runtime state (store, stats, in-flight
/// fetches, invalidations).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) store: Arc<dyn Store>,
    /// What the store can do, read once.
    pub(crate) capabilities: Capabilities,
    /// Where the time is read ([`CacheLayer::clock`](crate::CacheLayer::clock)); `None`:
    /// the system's.
    pub(crate) clock: Option<Arc<dyn Clock>>,
    /// The stats and observers every event goes to.
    pub(crate) funnel: Funnel,
    /// The request span's level and key.
    pub(crate) trace: TraceSettings,
    pub(crate) namespace: Arc<str>,
    pub(crate) max_key_len: usize,
    /// What a route gets unless its rule says otherwise ([`Config::settings`]).
    pub(crate) defaults: RouteDefaults,
    pub(crate) ttl_fn: Option<TtlFn>,
    pub(crate) heuristic: Option<HeuristicFreshness>,
    pub(crate) invalidate_unknown_methods: bool,
    pub(crate) bypass_header: HeaderName,
    pub(crate) status_header: Option<HeaderName>,
    pub(crate) cache_status: Option<Arc<CacheStatus>>,
    pub(crate) rules: StorageRules,
    pub(crate) write_mode: WriteMode,
    pub(crate) routes: RouteTable,
    pub(crate) coalescing: Coalescing,
    /// Variants stored per key at most (the key's own entry and `max_variants - 1` slots).
    pub(crate) max_variants: usize,
    /// Recent invalidations, which fetches that started before them may not overwrite.
    pub(crate) invalidations: Arc<Invalidations>,
    /// Where tags come from, their limits, and whether the tag headers are stripped.
    pub(crate) tags: TagRules,
    /// Targeted cache-control fields (RFC 9213), in order, and whether they are removed
    /// from responses.
    pub(crate) targeted: Arc<[HeaderName]>,
    pub(crate) strip_targeted: bool,
    /// The key prefixes of the value caches made from this layer
    /// ([`CacheLayer::values`](crate::CacheLayer::values)): its tag purges reach them too.
    pub(crate) value_prefixes: Arc<std::sync::RwLock<Vec<String>>>,
    /// Whether responses carry their [`CacheOutcome`](crate::outcome::CacheOutcome) as an extension.
    pub(crate) outcome_extension: bool,
    /// Whether the layer answers `PURGE` requests itself, and which it allows.
    pub(crate) purge_method: Option<PurgeGate>,
    /// Whether a handle ever sent a warming refresh ([`CacheHandle::refresh`](crate::CacheHandle::refresh)):
    /// until then, requests are not looked at for its mark.
    pub(crate) warming: Arc<AtomicBool>,
}

/// Concurrent misses of a key share one fetch when `on`; the in-flight map holds the
/// coalescing settings (timeout, hit-for-miss), once.
#[derive(Clone, Debug)]
pub(crate) struct Coalescing {
    pub(crate) coalescer: Arc<Coalescer>,
    pub(crate) on: bool,
}

impl Config {
    /// Removes from a response's head the fields meant for this cache alone: the tag
    /// headers and the targeted cache-control fields, when the layer strips them.
    pub(crate) fn strip_own_fields(&self, headers: &mut HeaderMap) {
        self.tags.strip(headers);
        if self.strip_targeted {
            for name in self.targeted.iter() {
                headers.remove(name);
            }
        }
    }

    /// The caching directives of a response for this cache ([`response_directives`]).
    pub(crate) fn response_directives(&self, headers: &HeaderMap) -> CacheControl {
        response_directives(headers, &self.targeted)
    }

    /// The defaults listed at [`CacheLayer`](crate::CacheLayer), on `store`.
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        let funnel = Funnel::default();
        funnel.stats.watch_store(Arc::clone(&store));
        Self {
            capabilities: store.capabilities(),
            clock: None,
            store,
            funnel,
            trace: TraceSettings::default(),
            namespace: Arc::from("cache"),
            max_key_len: 250,
            defaults: RouteDefaults {
                ttl: Some(Duration::from_secs(60)),
                negative_ttl: None,
                honor_origin: true,
                client_control: ClientControl::Allow,
                request_cookies: RequestCookies::RequireShared,
                stale_if_error: None,
                stale_while_revalidate: None,
            },
            ttl_fn: None,
            heuristic: None,
            invalidate_unknown_methods: true,
            bypass_header: DEFAULT_BYPASS_HEADER,
            status_header: Some(DEFAULT_STATUS_HEADER),
            cache_status: Some(Arc::new(CacheStatus::new("tower-response-cache"))),
            rules: StorageRules::default(),
            write_mode: WriteMode::Auto,
            routes: RouteTable::default(),
            coalescing: Coalescing {
                coalescer: Arc::new(Coalescer::new(
                    DEFAULT_HIT_FOR_MISS,
                    DEFAULT_COALESCE_TIMEOUT,
                )),
                on: true,
            },
            max_variants: DEFAULT_MAX_VARIANTS,
            invalidations: Arc::default(),
            tags: TagRules::default(),
            targeted: Arc::from([]),
            strip_targeted: false,
            value_prefixes: Arc::default(),
            outcome_extension: false,
            purge_method: None,
            warming: Arc::default(),
        }
    }

    /// A request's settings: its route's rule over the layer's defaults.
    pub(crate) fn settings<'a>(&'a self, route: &'a Route) -> Settings<'a> {
        Settings {
            rule: route.policy.as_deref(),
            config: self,
        }
    }

    /// The store's side of the protocol between processes, when it coordinates their fetches
    /// with fill locks.
    pub(crate) fn fill_locks(&self) -> Option<&dyn SharedStore> {
        if !self.capabilities.fill_locks {
            return None;
        }
        self.store.shared()
    }

    /// The time now, by the layer's clock.
    pub(crate) fn now(&self) -> SystemTime {
        match &self.clock {
            None => SystemTime::now(),
            Some(clock) => clock.now(),
        }
    }

    /// The in-flight map, when coalescing is on.
    pub(crate) fn coalescer(&self) -> Option<&Arc<Coalescer>> {
        self.coalescing.on.then_some(&self.coalescing.coalescer)
    }

    /// The one door for removing entries ahead of their time.
    pub(crate) fn invalidator(&self) -> Invalidator<'_> {
        Invalidator {
            fence: &self.invalidations,
            coalescer: self.coalescer().map(|coalescer| &**coalescer),
            store: &*self.store,
            funnel: &self.funnel,
        }
    }

    /// Where purges stand as a fetch starts: this process's and the store's (for stores
    /// other processes purge). Read without waiting.
    pub(crate) fn fetch_started(&self) -> Started {
        Started {
            epoch: self.invalidations.epoch(),
            mark: self.store.shared().and_then(SharedStore::purge_mark),
        }
    }

    /// How long a request waits for another's fetch.
    pub(crate) fn coalesce_timeout(&self) -> Duration {
        self.coalescing.coalescer.timeout()
    }
}

/// The layer's values for what a route rule ([`RoutePolicy`]) may override.
#[derive(Clone, Debug)]
pub(crate) struct RouteDefaults {
    pub(crate) ttl: Option<Duration>,
    pub(crate) negative_ttl: Option<Duration>,
    pub(crate) honor_origin: bool,
    pub(crate) client_control: ClientControl,
    pub(crate) request_cookies: RequestCookies,
    pub(crate) stale_if_error: Option<Duration>,
    pub(crate) stale_while_revalidate: Option<Duration>,
}

/// A request's settings: its route's rule, where it says something, over the layer's
/// defaults. Every override is resolved here and nowhere else; each setting is read when a
/// phase needs it, so a hit does not resolve the freshness settings only a fetch uses.
#[derive(Clone, Copy)]
pub(crate) struct Settings<'a> {
    rule: Option<&'a RoutePolicy>,
    config: &'a Config,
}

impl<'a> Settings<'a> {
    fn defaults(&self) -> &'a RouteDefaults {
        &self.config.defaults
    }

    /// Whether the route is cached at all.
    pub(crate) fn enabled(&self) -> bool {
        self.rule.is_none_or(|rule| rule.enabled)
    }

    /// Sliding expiry: a read renews the entry's TTL; presence is freshness. A store that
    /// cannot renew entries ([`Capabilities::touch`]) keeps them for their TTL, as on any
    /// other route (the layer warned when the rule was added).
    pub(crate) fn sliding(&self) -> bool {
        self.rule.is_some_and(|rule| rule.sliding) && self.config.capabilities.touch
    }

    /// The route's namespace inside the layer's, if it has one.
    pub(crate) fn namespace(&self) -> Option<&'a Arc<str>> {
        self.rule.and_then(|rule| rule.namespace.as_ref())
    }

    /// How far the request's own `Cache-Control` is followed.
    pub(crate) fn client_control(&self) -> &'a ClientControl {
        self.rule
            .and_then(|rule| rule.client_control.as_ref())
            .unwrap_or(&self.defaults().client_control)
    }

    /// Whether a request with cookies may share an entry.
    pub(crate) fn request_cookies(&self) -> RequestCookies {
        self.rule
            .and_then(|rule| rule.request_cookies)
            .unwrap_or(self.defaults().request_cookies)
    }

    /// Where a stored response's freshness comes from.
    pub(crate) fn freshness(&self) -> FreshnessSettings {
        let defaults = self.defaults();
        let rule = |field: fn(&RoutePolicy) -> Option<Duration>| self.rule.and_then(field);
        FreshnessSettings {
            honor_origin: self
                .rule
                .and_then(|rule| rule.honor_origin)
                .unwrap_or(defaults.honor_origin),
            heuristic: self.config.heuristic,
            ttl: rule(|rule| rule.ttl).or(defaults.ttl),
            negative_ttl: rule(|rule| rule.negative_ttl).or(defaults.negative_ttl),
            stale_while_revalidate: rule(|rule| rule.stale_while_revalidate)
                .or(defaults.stale_while_revalidate),
            stale_if_error: rule(|rule| rule.stale_if_error).or(defaults.stale_if_error),
            keep: self.config.rules.keep,
            sliding: self.sliding(),
        }
    }
}
