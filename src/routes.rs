//! A layer's route rules at run time: which [`RoutePolicy`] and counters a request gets
//! (by axum's `MatchedPath` or the path), the routes that layers attached to them cache,
//! and the warning for rules that look like they were written without a nest prefix.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use crate::policy::RoutePolicy;
use crate::stats::{CacheStats, Counters};

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
        if self.any() && self.read().contains_key(pattern) {
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

    /// The patterns, read-locked (a poisoned lock still holds a whole map: inserts are
    /// single calls).
    fn read(&self) -> RwLockReadGuard<'_, HashMap<Box<str>, Arc<RoutePolicy>>> {
        match self.patterns.read() {
            Ok(patterns) => patterns,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The policy of the attached layer whose route pattern matches `path`, as
    /// [`RouteTable::policy_for_path`] matches.
    fn matching(&self, path: &str) -> Option<Arc<RoutePolicy>> {
        if !self.any() {
            return None;
        }
        let patterns = self.read();
        patterns
            .get(path)
            .or_else(|| best_match(patterns.iter(), path))
            .cloned()
    }

    fn namespaces(&self) -> Vec<Arc<str>> {
        if !self.any() {
            return Vec::new();
        }
        self.read()
            .values()
            .filter_map(|policy| policy.namespace.clone())
            .collect()
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
        self.read().get(pattern).cloned()
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

    /// The rule for a path outside a request (the target of a `Location`, a URL purged
    /// through the handle), matched as the router would: a layer attached to a route whose
    /// pattern matches, a pattern rule (a literal path first, then the matching pattern
    /// with the most literal segments), then prefix rules.
    pub(crate) fn policy_for_path(&self, path: &str) -> Option<Arc<RoutePolicy>> {
        if let Some(rule) = &self.attached {
            return Some(Arc::clone(&rule.policy));
        }
        if let Some(policy) = self.attached_routes.matching(path) {
            return Some(policy);
        }
        self.exact
            .get(path)
            .or_else(|| best_match(self.exact.iter(), path))
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(prefix, _)| path.starts_with(prefix.as_ref()))
                    .map(|(_, rule)| rule)
            })
            .map(|rule| Arc::clone(&rule.policy))
    }

    /// Every route namespace a key of this layer may carry: those of its rules and of the
    /// layers attached to its routes.
    pub(crate) fn namespaces(&self) -> Vec<Arc<str>> {
        let mut namespaces: Vec<Arc<str>> = self
            .exact
            .values()
            .chain(self.prefixes.iter().map(|(_, rule)| rule))
            .chain(&self.attached)
            .filter_map(|rule| rule.policy.namespace.clone())
            .chain(self.attached_routes.namespaces())
            .collect();
        namespaces.sort();
        namespaces.dedup();
        namespaces
    }

    /// Whether this is the table of a layer attached to a route.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
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

/// Of `(pattern, value)` pairs, the value of the pattern that matches `path` with the most
/// literal segments (axum prefers a literal segment to a parameter).
fn best_match<'a, V>(
    patterns: impl Iterator<Item = (&'a Box<str>, &'a V)>,
    path: &str,
) -> Option<&'a V> {
    patterns
        .filter_map(|(pattern, value)| pattern_match(pattern, path).map(|literal| (literal, value)))
        .max_by_key(|(literal, _)| *literal)
        .map(|(_, value)| value)
}

/// Whether the axum route pattern `pattern` (`/users/{id}`, `/files/{*rest}`) matches
/// `path`: with how many literal segments, if it does.
fn pattern_match(pattern: &str, path: &str) -> Option<usize> {
    let mut literal = 0;
    let mut segments = path.split('/');
    for part in pattern.split('/') {
        let is_param = part.len() > 2 && part.starts_with('{') && part.ends_with('}');
        if is_param && part.as_bytes()[1] == b'*' {
            // A wildcard takes the rest of the path, at least one character of it.
            return segments
                .next()
                .is_some_and(|segment| !segment.is_empty())
                .then_some(literal);
        }
        let segment = segments.next()?;
        if is_param {
            if segment.is_empty() {
                return None;
            }
        } else if part == segment {
            literal += 1;
        } else {
            return None;
        }
    }
    segments.next().is_none().then_some(literal)
}

/// The stats label of requests a layer attached to a route sees outside axum.
pub(crate) const ATTACHED_ROUTE: &str = "(attached)";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::OTHER_ROUTE;
    use std::time::Duration;

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
    fn paths_find_their_rule_as_the_router_would() {
        let stats = CacheStats::new();
        let mut table = RouteTable::default();
        let named = |ns: &str| RoutePolicy::new().namespace(ns);
        table.insert_exact("/users/{id}", named("user"), &stats);
        table.insert_exact("/users/me", named("me"), &stats);
        table.insert_exact("/files/{*rest}", named("files"), &stats);
        table.insert_prefix("/static/", named("static"), &stats);
        let namespace = |path: &str| {
            table
                .policy_for_path(path)
                .and_then(|policy| policy.namespace.clone())
                .map(|ns| ns.to_string())
        };
        assert_eq!(namespace("/users/42").as_deref(), Some("user"));
        assert_eq!(namespace("/users/me").as_deref(), Some("me"));
        assert_eq!(namespace("/users/42/posts"), None);
        assert_eq!(namespace("/users/"), None);
        assert_eq!(namespace("/files/a/b/c").as_deref(), Some("files"));
        assert_eq!(namespace("/files/"), None);
        assert_eq!(namespace("/static/app.js").as_deref(), Some("static"));
        let mut namespaces: Vec<String> =
            table.namespaces().iter().map(|ns| ns.to_string()).collect();
        namespaces.sort();
        assert_eq!(namespaces, ["files", "me", "static", "user"]);
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
            crate::stats::Counter::Hit,
        );
        stats.record(&counters(None, "/x"), crate::stats::Counter::Hit);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.routes["/users/{id}"].hits, 1);
        assert_eq!(snapshot.routes[OTHER_ROUTE].hits, 1);
    }
}
