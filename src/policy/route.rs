//! Per-route rules.
//!
//! A [`RoutePolicy`] overrides the layer's settings for the requests of one route. Rules are
//! registered on the layer by route pattern ([`CacheLayer::route`](crate::CacheLayer::route),
//! matched against axum's `MatchedPath`, e.g. `/users/{id}`, or against the literal path
//! outside axum) or by path prefix ([`CacheLayer::route_prefix`](crate::CacheLayer::route_prefix),
//! the longest prefix wins). A pattern rule wins over a prefix rule.
//!
//! ```
//! use std::time::Duration;
//! use tower_response_cache::{CacheLayer, ClientControl, MemoryStore, RoutePolicy};
//!
//! let layer = CacheLayer::new(MemoryStore::new(64 << 20))
//!     .route("/users/{id}", RoutePolicy::new().ttl(Duration::from_secs(30)).sliding(true))
//!     .route("/health", RoutePolicy::disabled())
//!     .route_prefix("/static/", RoutePolicy::new()
//!         .ttl(Duration::from_secs(3600))
//!         .client_control(ClientControl::Deny)
//!         .namespace("assets"));
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::request::ClientControl;
use super::response::RequestCookies;
use crate::stats::{CacheStats, Counters};

/// Settings for one route; every setting left unset falls back to the layer's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePolicy {
    pub(crate) enabled: bool,
    pub(crate) ttl: Option<Duration>,
    pub(crate) sliding: bool,
    pub(crate) client_control: Option<ClientControl>,
    pub(crate) namespace: Option<Arc<str>>,
    pub(crate) honor_origin: Option<bool>,
    pub(crate) stale_if_error: Option<Duration>,
    pub(crate) stale_while_revalidate: Option<Duration>,
    pub(crate) request_cookies: Option<RequestCookies>,
    pub(crate) negative_ttl: Option<Duration>,
}

impl Default for RoutePolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: None,
            sliding: false,
            client_control: None,
            namespace: None,
            honor_origin: None,
            stale_if_error: None,
            stale_while_revalidate: None,
            request_cookies: None,
            negative_ttl: None,
        }
    }
}

impl RoutePolicy {
    /// A rule that caches with the layer's settings until you change some.
    pub fn new() -> Self {
        Self::default()
    }

    /// A rule that keeps the route out of the cache: its requests pass through untouched.
    pub fn disabled() -> Self {
        Self::new().enabled(false)
    }

    /// Whether the route is cached. Default: `true`.
    #[must_use]
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// The route's TTL, used when neither the handler, the layer's `ttl_fn` nor the origin's
    /// headers give one. Default: the layer's default TTL.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The TTL of this route's negative responses (404, 410, every other 4xx or 5xx the
    /// status set admits) when neither the handler, `ttl_fn` nor the origin gives one.
    /// Default: the layer's (none: such responses are not stored on a configured TTL).
    #[must_use]
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    /// Sliding expiry: every hit keeps the entry for another full TTL. Default: `false`.
    ///
    /// The entry's `Age` still grows from when it was stored; only its expiry moves.
    #[must_use]
    pub fn sliding(mut self, sliding: bool) -> Self {
        self.sliding = sliding;
        self
    }

    /// Whether clients of this route may bypass or refresh the cache. Default: the layer's.
    #[must_use]
    pub fn client_control(mut self, control: ClientControl) -> Self {
        self.client_control = Some(control);
        self
    }

    /// The route's own key namespace, within the layer's (`cache:users:GET:…`; see
    /// [`CacheLayer::namespace`](crate::CacheLayer::namespace)). Routes with the same
    /// namespace share entries for the same keys; a route with its own namespace shares
    /// with none. Default: none (the route's keys are the layer's: `cache:GET:…`).
    #[must_use]
    pub fn namespace(mut self, namespace: impl AsRef<str>) -> Self {
        self.namespace = Some(Arc::from(namespace.as_ref()));
        self
    }

    /// How long past freshness an entry of this route may answer when the origin fails (an
    /// error, or 500/502/503/504), unless the response's own `stale-if-error` says
    /// otherwise. Default: the layer's (none).
    #[must_use]
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = Some(window);
        self
    }

    /// How long past freshness an entry of this route is answered at once while a
    /// background fetch refreshes it, unless the response's own `stale-while-revalidate`
    /// says otherwise. Default: the layer's (none).
    #[must_use]
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = Some(window);
        self
    }

    /// How requests with a `Cookie` header use the cache on this route: set
    /// [`RequestCookies::Ignore`] when the route's responses never depend on cookies.
    /// Default: the layer's ([`RequestCookies::RequireShared`]).
    #[must_use]
    pub fn request_cookies(mut self, cookies: RequestCookies) -> Self {
        self.request_cookies = Some(cookies);
        self
    }

    /// Whether the origin's `s-maxage` / `max-age` / `Expires` set the TTL on this route.
    /// With `false` the route's TTL applies whatever the origin says (the origin's
    /// `no-store`, `private` and the other storability rules still apply). Default: the
    /// layer's (`true`).
    #[must_use]
    pub fn honor_origin_ttl(mut self, honor: bool) -> Self {
        self.honor_origin = Some(honor);
        self
    }
}

#[derive(Clone, Debug)]
struct Rule {
    policy: Arc<RoutePolicy>,
    counters: Arc<Counters>,
    /// Whether a request matched the rule; and whether a warning that it looks like it
    /// was meant for a route it never matched was given.
    seen: Arc<RuleFlags>,
}

#[derive(Debug, Default)]
struct RuleFlags {
    matched: AtomicBool,
    warned: AtomicBool,
}

impl Rule {
    fn new(policy: RoutePolicy, counters: Arc<Counters>) -> Self {
        Self {
            policy: Arc::new(policy),
            counters,
            seen: Arc::default(),
        }
    }

    fn route(&self) -> Route {
        if !self.seen.matched.load(Ordering::Relaxed) {
            self.seen.matched.store(true, Ordering::Relaxed);
        }
        Route {
            policy: Some(Arc::clone(&self.policy)),
            counters: Arc::clone(&self.counters),
        }
    }
}

/// A request's route: its rule, if any, and its counters.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub(crate) policy: Option<Arc<RoutePolicy>>,
    pub(crate) counters: Arc<Counters>,
}

/// What the layer does with a request's route.
#[derive(Debug)]
pub(crate) enum Resolved {
    /// Cache it under this route's rule (if any) and counters.
    Route(Route),
    /// Pass it on untouched: a layer attached to the route itself
    /// ([`CacheLayer::for_route`](crate::CacheLayer::for_route)) caches it under this
    /// policy.
    Attached(Arc<RoutePolicy>),
}

/// The route patterns that layers attached to routes cache, shared by a layer and the
/// layers derived from it with [`CacheLayer::for_route`](crate::CacheLayer::for_route).
#[derive(Debug, Default)]
pub(crate) struct AttachedRoutes {
    any: AtomicBool,
    patterns: RwLock<HashMap<Box<str>, Arc<RoutePolicy>>>,
}

/// Route patterns come from axum's router, not from requests; the set is bounded all the
/// same.
const MAX_ATTACHED: usize = 1024;

impl AttachedRoutes {
    fn claim(&self, pattern: &str, policy: &Arc<RoutePolicy>) {
        if self.get(pattern).is_some() {
            return;
        }
        let mut patterns = match self.patterns.write() {
            Ok(patterns) => patterns,
            Err(poisoned) => poisoned.into_inner(),
        };
        if patterns.len() < MAX_ATTACHED {
            patterns.insert(pattern.into(), Arc::clone(policy));
            self.any.store(true, Ordering::Release);
        }
    }

    /// Whether any route has an attached layer.
    pub(crate) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// The policy of the layer attached to the route `pattern`, if one is.
    pub(crate) fn get(&self, pattern: &str) -> Option<Arc<RoutePolicy>> {
        if !self.any() {
            return None;
        }
        match self.patterns.read() {
            Ok(patterns) => patterns.get(pattern).cloned(),
            Err(poisoned) => poisoned.into_inner().get(pattern).cloned(),
        }
    }
}

/// The layer's rules, resolved per request.
#[derive(Clone, Debug, Default)]
pub(crate) struct RouteTable {
    exact: HashMap<Box<str>, Rule>,
    /// Longest prefix first.
    prefixes: Vec<(Box<str>, Rule)>,
    /// The rule of a layer attached to a route: it applies to every request the layer sees.
    attached: Option<Rule>,
    /// The routes attached layers cache, which a layer they were derived from passes on.
    pub(crate) attached_routes: Arc<AttachedRoutes>,
}

impl RouteTable {
    pub(crate) fn insert_exact(&mut self, pattern: &str, policy: RoutePolicy, stats: &CacheStats) {
        let rule = Rule::new(policy, stats.rule_route(pattern));
        self.exact.insert(pattern.into(), rule);
    }

    pub(crate) fn insert_prefix(&mut self, prefix: &str, policy: RoutePolicy, stats: &CacheStats) {
        let rule = Rule::new(policy, stats.rule_route(&format!("{prefix}*")));
        self.prefixes
            .retain(|(existing, _)| existing.as_ref() != prefix);
        self.prefixes.push((prefix.into(), rule));
        self.prefixes
            .sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    }

    /// Makes this the table of a layer attached to one route: `policy` applies to all its
    /// requests, counted under the route's pattern.
    pub(crate) fn attach(&mut self, policy: RoutePolicy) {
        self.attached = Some(Rule::new(policy, Arc::default()));
    }

    /// The route of a request, given axum's matched pattern (if any) and the path.
    pub(crate) fn resolve(
        &self,
        matched: Option<&str>,
        path: &str,
        stats: &CacheStats,
    ) -> Resolved {
        if let Some(rule) = &self.attached {
            if let Some(pattern) = matched {
                self.attached_routes.claim(pattern, &rule.policy);
            }
            let counters = stats.rule_route(matched.unwrap_or(ATTACHED_ROUTE));
            return Resolved::Route(Route {
                policy: Some(Arc::clone(&rule.policy)),
                counters,
            });
        }
        if let Some(policy) = matched.and_then(|pattern| self.attached_routes.get(pattern)) {
            return Resolved::Attached(policy);
        }
        let rule = self.exact.get(matched.unwrap_or(path)).or_else(|| {
            self.prefixes
                .iter()
                .find(|(prefix, _)| path.starts_with(prefix.as_ref()))
                .map(|(_, rule)| rule)
        });
        Resolved::Route(match rule {
            Some(rule) => rule.route(),
            None => Route {
                policy: None,
                counters: match matched {
                    Some(pattern) => stats.route_with(pattern, || self.warn_unmatched(pattern)),
                    None => stats.other(),
                },
            },
        })
    }

    /// The rule for a path outside a request (the target of a `Location`): pattern rules
    /// by the literal path, then prefix rules.
    pub(crate) fn policy_for_path(&self, path: &str) -> Option<Arc<RoutePolicy>> {
        self.exact
            .get(path)
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(prefix, _)| path.starts_with(prefix.as_ref()))
                    .map(|(_, rule)| rule)
            })
            .map(|rule| Arc::clone(&rule.policy))
    }

    /// Whether this is the table of a layer attached to a route.
    pub(crate) fn is_attached(&self) -> bool {
        self.attached.is_some()
    }

    /// A route pattern seen for the first time matched no rule: a rule that it ends with
    /// and that has never matched was most likely written for it without the prefix the
    /// router was nested under (`/users/{id}` for `/api/users/{id}`). Said once per rule.
    fn warn_unmatched(&self, pattern: &str) {
        for (rule_pattern, rule) in &self.exact {
            let suffix = rule_pattern.starts_with('/')
                && pattern.len() > rule_pattern.len()
                && pattern.ends_with(rule_pattern.as_ref());
            if suffix
                && !rule.seen.matched.load(Ordering::Relaxed)
                && !rule.seen.warned.swap(true, Ordering::Relaxed)
            {
                tracing::warn!(
                    rule = rule_pattern.as_ref(),
                    route = pattern,
                    "the cache rule {rule_pattern:?} has matched no request, and requests \
                     match the route {pattern:?}, which ends with it: rules match the whole \
                     route pattern, the prefix of a nested router included. Write the rule \
                     as {pattern:?}, or attach the policy to the route with \
                     `CacheLayer::for_route`"
                );
            }
        }
    }
}

/// The stats label of requests a layer attached to a route sees outside axum.
pub(crate) const ATTACHED_ROUTE: &str = "(attached)";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::OTHER_ROUTE;

    #[test]
    fn exact_beats_prefix_and_longest_prefix_wins() {
        let stats = CacheStats::new();
        let mut table = RouteTable::default();
        table.insert_prefix(
            "/a/",
            RoutePolicy::new().ttl(Duration::from_secs(1)),
            &stats,
        );
        table.insert_prefix(
            "/a/b/",
            RoutePolicy::new().ttl(Duration::from_secs(2)),
            &stats,
        );
        table.insert_exact(
            "/a/{id}",
            RoutePolicy::new().ttl(Duration::from_secs(3)),
            &stats,
        );
        let ttl = |matched: Option<&str>, path: &str| match table.resolve(matched, path, &stats) {
            Resolved::Route(route) => route
                .policy
                .and_then(|policy| policy.ttl)
                .map(|ttl| ttl.as_secs()),
            Resolved::Attached(_) => panic!("no attached layer"),
        };
        assert_eq!(ttl(None, "/a/x"), Some(1));
        assert_eq!(ttl(None, "/a/b/c"), Some(2));
        assert_eq!(ttl(Some("/a/{id}"), "/a/x"), Some(3));
        assert_eq!(ttl(None, "/elsewhere"), None);
    }

    #[test]
    fn unmatched_routes_count_under_their_pattern_or_other() {
        let stats = CacheStats::new();
        let table = RouteTable::default();
        let counters = |matched, path| match table.resolve(matched, path, &stats) {
            Resolved::Route(route) => route.counters,
            Resolved::Attached(_) => panic!("no attached layer"),
        };
        stats.record(
            &counters(Some("/users/{id}"), "/users/1"),
            crate::stats::Event::Hit,
        );
        stats.record(&counters(None, "/x"), crate::stats::Event::Hit);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.routes["/users/{id}"].hits, 1);
        assert_eq!(snapshot.routes[OTHER_ROUTE].hits, 1);
    }
}
