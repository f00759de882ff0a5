//! The plan: what a request is to the cache before anything is looked up — the URI the
//! client sent (nest prefix included), its key, and whether a layer attached to its route
//! takes it over.

use super::*;

/// The request's URI as the client sent it: under a nested axum router the request's own
/// URI has lost the nest prefix (`/users/1` for `/api/users/1`), which would give two
/// mounts of one router the same keys; axum keeps the original (`OriginalUri`).
#[cfg(feature = "axum")]
pub(crate) fn public_uri<'a>(uri: &'a Uri, extensions: &'a http::Extensions) -> &'a Uri {
    match extensions.get::<axum::extract::OriginalUri>() {
        Some(original) => &original.0,
        None => uri,
    }
}

#[cfg(not(feature = "axum"))]
pub(crate) fn public_uri<'a>(uri: &'a Uri, _: &'a http::Extensions) -> &'a Uri {
    uri
}

/// The request's key, built from its [`public_uri`].
pub(super) fn build_key<K: KeyBuilder + ?Sized>(
    key_builder: &K,
    parts: &mut Parts,
) -> Option<CacheKey> {
    let public = public_uri(&parts.uri, &parts.extensions);
    if public.path() == parts.uri.path() {
        return key_builder.build_key(parts);
    }
    let public = public.clone();
    let nested = std::mem::replace(&mut parts.uri, public);
    let key = key_builder.build_key(parts);
    parts.uri = nested;
    key
}

/// The route pattern of a request about to go to the inner service, when a layer attached
/// to that route could claim it on its way (see [`claimed_on_the_way`]): a reference
/// count, not a copy.
#[cfg(feature = "axum")]
pub(super) fn watched_pattern(
    config: &Config,
    parts: &Parts,
) -> Option<axum::extract::MatchedPath> {
    if config.routes.is_attached() {
        return None;
    }
    parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .cloned()
}

/// Whether a layer attached to the request's route (derived from this one with
/// [`CacheLayer::for_route`](crate::CacheLayer::for_route)) cached the request on its way
/// through the inner service: this layer then leaves the response alone — it neither
/// stores nor counts it, nor adds its headers.
#[cfg(feature = "axum")]
pub(super) fn claimed_on_the_way(
    config: &Config,
    watched: Option<&axum::extract::MatchedPath>,
) -> bool {
    watched.is_some_and(|pattern| {
        config
            .routes
            .attached_routes
            .get(pattern.as_str())
            .is_some()
    })
}

#[cfg(not(feature = "axum"))]
pub(super) fn watched_pattern(_: &Config, _: &Parts) -> Option<std::convert::Infallible> {
    None
}

#[cfg(not(feature = "axum"))]
pub(super) fn claimed_on_the_way(_: &Config, _: Option<&std::convert::Infallible>) -> bool {
    false
}

#[cfg(feature = "axum")]
pub(super) fn matched_path(parts: &Parts) -> Option<&str> {
    parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .map(axum::extract::MatchedPath::as_str)
}

#[cfg(not(feature = "axum"))]
pub(super) fn matched_path(_: &Parts) -> Option<&str> {
    None
}

/// What the cache makes of a request before anything is looked up.
pub(super) enum Plan {
    /// Not the cache's (another method, a disabled route, a route whose own layer caches
    /// it): passed on untouched, counted as a pass unless that layer counts it.
    Pass,
    /// An unsafe request: passed on, and its success invalidates its URL's entries.
    Invalidate(Invalidation),
    /// A `PURGE` the layer answers itself.
    Purge(PurgeMethod),
    /// A GET or HEAD the cache may answer: its context, mode and key (`None`: bypassed).
    Cache {
        ctx: Ctx,
        mode: RequestMode,
        key: Option<CacheKey>,
    },
}

/// The plan phase: the request's route (its rule, its counters, an attached layer), method,
/// request directives under the route's client control, and key (the route's namespace
/// inside the layer's, resolved once). The request's head is planned in place: the
/// request is not moved through the plan.
pub(super) fn plan(config: &Arc<Config>, key_builder: &Keys, parts: &mut Parts) -> Plan {
    let (route, attached) =
        match config
            .routes
            .resolve(matched_path(parts), parts.uri.path(), &config.funnel.stats)
        {
            Resolved::Route(route) => (route, false),
            // A layer on the route itself caches it (and counts it): this one passes
            // it on, and invalidates with the route's namespace the unsafe requests
            // that layer may not see.
            Resolved::Attached(policy) => (
                Route {
                    policy: Some(policy),
                    counters: config.funnel.stats.other(),
                },
                true,
            ),
        };
    let settings = config.settings(&route);
    // The route's own namespace, inside the layer's: resolved once, for the key and for
    // the invalidations of unsafe requests.
    let route_namespace = settings.namespace();
    let funnel = &config.funnel;
    if config.purge_method.is_some() && is_purge(&parts.method) {
        let scope = Scope::request(&route.counters, &parts.method);
        funnel.request_ended(scope, EventKind::Pass, None);
        let uri = public_uri(&parts.uri, &parts.extensions);
        return Plan::Purge(PurgeMethod::new(config, key_builder, uri, parts));
    }
    let cacheable_method = parts.method == Method::GET || parts.method == Method::HEAD;
    let disabled = !settings.enabled();
    if !cacheable_method || disabled || attached {
        if !attached {
            let scope = Scope::request(&route.counters, &parts.method);
            funnel.request_ended(scope, EventKind::Pass, None);
        }
        if !disabled && invalidates(&parts.method, config.invalidate_unknown_methods) {
            let invalidation = Invalidation {
                config: Arc::clone(config),
                key_builder: key_builder.clone(),
                uri: public_uri(&parts.uri, &parts.extensions).clone(),
                headers: parts.headers.clone(),
                route_namespace: route_namespace.cloned(),
            };
            return Plan::Invalidate(invalidation);
        }
        return Plan::Pass;
    }
    let control = settings.client_control();
    let present = Present::of(&parts.headers, &config.bypass_header);
    let mode = if is_warming(config, parts) {
        RequestMode::Refresh(RefreshReason::Warm)
    } else {
        request_mode(&parts.headers, present, control, &config.bypass_header)
    };
    let key = match mode {
        RequestMode::Bypass(_) => None,
        _ => build_key(key_builder.builder(), parts).map(|key| {
            key.namespaced(
                &config.namespace,
                route_namespace.map(|namespace| &**namespace),
                config.max_key_len,
            )
        }),
    };
    let cookies = settings.request_cookies();
    let span = trace::request_span(
        config.trace,
        route.counters.label(),
        &parts.method,
        config.capabilities.name,
        key.as_ref(),
    );
    let ctx = Ctx {
        config: Arc::clone(config),
        route,
        // Only GET and HEAD get here.
        method: if parts.method == Method::HEAD {
            &Method::HEAD
        } else {
            &Method::GET
        },
        cookie: cookies == RequestCookies::RequireShared && present.cookie,
        preconditions: present.preconditions,
        counted: true,
        watch: (span.is_some() || funnel.observed()).then(|| {
            Box::new(Watch {
                clock: funnel.clock(),
                span: span.unwrap_or_else(tracing::Span::none),
            })
        }),
    };
    Plan::Cache { ctx, mode, key }
}

/// Whether `parts` is a warming refresh sent through a handle of the layer.
fn is_warming(config: &Config, parts: &Parts) -> bool {
    config.warming.load(std::sync::atomic::Ordering::Relaxed)
        && parts.extensions.get::<crate::invalidate::Warm>().is_some()
}
