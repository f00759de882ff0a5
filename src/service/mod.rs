//! [`CacheService`]: the request flow.
//!
//! 1. Route rule (axum's `MatchedPath`, or the path); a disabled route, or a method other
//!    than GET and HEAD, passes through untouched.
//! 2. Request directives under the route's [`ClientControl`](crate::ClientControl).
//! 3. Key (`namespace:`, the route's own `namespace:` if it has one, the [`KeyBuilder`]'s key).
//! 4. Lookup: the entry under the key, or, when it is another variant (RFC 9111 §4.1),
//!    the one in the request's variant slot; a fresh one is a hit. A stale one within its
//!    `stale-while-revalidate` window answers at once and is revalidated in the background.
//! 5. Miss, stale entry or refresh: the inner service runs (one request per key at a time,
//!    the others wait for its response); a stale entry with a validator is revalidated with
//!    `If-None-Match` / `If-Modified-Since`, and a `304` updates it (§4.3). A storable
//!    response streams to the client through a [`CacheBody`] that copies it and stores it
//!    when complete. An origin failure is answered with a stale entry within its
//!    `stale-if-error` window.

mod unsafe_method;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use tower_service::Service;

use crate::body::CacheBody;
use crate::coalesce::{self, Coalescer, FillLease, FlightGuard, Join, Landing};
use crate::config::Config;
use crate::entry::{CachedResponse, header_map_with_room};
use crate::fill::{Capture, PendingWrite, Sink};
use crate::future::ResponseFuture;
use crate::key::{CacheKey, KeyBuilder, Keys, credential_hash, is_credential};
use crate::observe::{self, StoreOp};
use crate::outcome::Storing;
use crate::outcome::{self, Outcome};
use crate::policy::cache_control::CacheControl;
use crate::policy::conditional::{not_modified, not_modified_headers};
use crate::policy::request::{RequestMode, request_mode};
use crate::policy::response::{
    RequestFacts, TtlSources, check_storable, content_length, has_validator, initial_age,
    origin_lifetime, ttl_from_sources,
};
use crate::policy::response::{explicitly_shared, is_negative};
use crate::policy::{
    BypassReason, CacheTtl, NotStoredReason, RefreshReason, RequestCookies, SetCookiePolicy,
};
use crate::routes::{Resolved, Route};
use crate::stats::Event;
use unsafe_method::{Invalidation, invalidates};

/// A [`Service`] that answers from the cache when it can and stores what it may; made by
/// [`CacheLayer`](crate::CacheLayer).
pub struct CacheService<S> {
    inner: S,
    config: Arc<Config>,
    key_builder: Keys,
}

impl<S> CacheService<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>, key_builder: Keys) -> Self {
        Self {
            inner,
            config,
            key_builder,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, consuming `self`.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for CacheService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
            key_builder: self.key_builder.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for CacheService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheService")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .field("key_builder", &self.key_builder)
            .finish()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for CacheService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Buf + Send,
    ResB::Error: Send,
{
    type Response = Response<CacheBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let config = &self.config;
        let (route, attached) =
            match config
                .routes
                .resolve(matched_path(&request), request.uri().path(), &config.stats)
            {
                Resolved::Route(route) => (route, false),
                // A layer on the route itself caches it (and counts it): this one passes
                // it on, and invalidates with the route's namespace the unsafe requests
                // that layer may not see.
                Resolved::Attached(policy) => (
                    Route {
                        policy: Some(policy),
                        counters: config.stats.other(),
                    },
                    true,
                ),
            };
        let policy = route.policy.as_deref();
        let cacheable_method = request.method() == Method::GET || request.method() == Method::HEAD;
        let disabled = policy.is_some_and(|policy| !policy.enabled);
        if !cacheable_method || disabled || attached {
            if !attached {
                config.stats.record(&route.counters, Event::Pass);
            }
            if !disabled && invalidates(request.method(), config.invalidate_unknown_methods) {
                let invalidation = Invalidation {
                    config: Arc::clone(config),
                    key_builder: self.key_builder.clone(),
                    uri: public_uri(request.uri(), request.extensions()).clone(),
                    headers: request.headers().clone(),
                    route_namespace: policy.and_then(|policy| policy.namespace.clone()),
                };
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                return ResponseFuture::cached(Box::pin(invalidation.run(inner, request)));
            }
            return ResponseFuture::pass(self.inner.call(request));
        }
        let control = policy
            .and_then(|policy| policy.client_control.as_ref())
            .unwrap_or(&config.client_control);
        let mode = request_mode(request.headers(), control, &config.bypass_header);
        let (mut parts, body) = request.into_parts();
        let key = match mode {
            RequestMode::Bypass(_) => None,
            _ => build_key(self.key_builder.builder(), &mut parts).map(|key| {
                let route = policy.and_then(|policy| policy.namespace.as_deref());
                key.namespaced(&config.namespace, route, config.max_key_len)
            }),
        };
        let cookies = policy
            .and_then(|policy| policy.request_cookies)
            .unwrap_or(config.request_cookies);
        let ctx = Ctx {
            config: Arc::clone(config),
            route,
            cookie: cookies == RequestCookies::RequireShared
                && parts.headers.contains_key(header::COOKIE),
            counted: true,
        };
        let missed = match ctx.in_place(mode, key.as_ref(), &parts) {
            InPlace::Hit(response) => return ResponseFuture::ready(response),
            InPlace::Miss => true,
            InPlace::Unknown => false,
        };
        // The inner service was driven to readiness; the clone left behind is not (tower's
        // usual swap, so that the ready one is the one called).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let call = Call { inner, ctx };
        ResponseFuture::cached(Box::pin(call.run(parts, body, key, mode, missed)))
    }
}

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
fn build_key<K: KeyBuilder + ?Sized>(key_builder: &K, parts: &mut Parts) -> Option<CacheKey> {
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
fn watched_pattern(config: &Config, parts: &Parts) -> Option<axum::extract::MatchedPath> {
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
fn claimed_on_the_way(config: &Config, watched: Option<&axum::extract::MatchedPath>) -> bool {
    watched.is_some_and(|pattern| {
        config
            .routes
            .attached_routes
            .get(pattern.as_str())
            .is_some()
    })
}

#[cfg(not(feature = "axum"))]
fn watched_pattern(_: &Config, _: &Parts) -> Option<std::convert::Infallible> {
    None
}

#[cfg(not(feature = "axum"))]
fn claimed_on_the_way(_: &Config, _: Option<&std::convert::Infallible>) -> bool {
    false
}

#[cfg(feature = "axum")]
fn matched_path<B>(request: &Request<B>) -> Option<&str> {
    request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(axum::extract::MatchedPath::as_str)
}

#[cfg(not(feature = "axum"))]
fn matched_path<B>(_: &Request<B>) -> Option<&str> {
    None
}

/// The key (hashed) whose flight the cache layer that passed a request on leads for it:
/// a request extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FlightOf(u64);

/// What a store that answers in place said about a request.
// Returned once per request and matched at once: boxing the response would add the
// allocation the in-place hit exists to avoid.
#[allow(clippy::large_enum_variant)]
enum InPlace<B: Body> {
    /// A usable entry: the response.
    Hit(Response<CacheBody<B>>),
    /// No entry: the slower path need not look again.
    Miss,
    /// No answer in place (a remote store), or an entry the slower path must judge.
    Unknown,
}

/// Which stored entries may answer a request that missed or refreshes.
#[derive(Clone, Copy, Debug, Default)]
struct Accept {
    /// The request's `max-age`.
    max_age: Option<u64>,
    /// For a refresh: only an entry stored after the request arrived.
    stored_after: Option<SystemTime>,
}

/// The stored entry of the request's variant that may not answer it as it is, for the
/// fetch that replaces it: revalidated with a conditional request if it has a validator
/// (RFC 9111 §4.3) and, when `stands_in`, answering if the origin fails within its
/// stale-if-error window (RFC 5861 §4).
#[derive(Default)]
struct Stored {
    entry: Option<Arc<CachedResponse>>,
    stands_in: bool,
}

impl Accept {
    /// Whether the response another request fetched may answer this one, which joined its
    /// flight at `joined`: fresh, or obtained from the origin after this request arrived
    /// (as good as forwarding it: a `no-cache` response validated then, RFC 9111
    /// §5.2.2.4), and within what the request accepts.
    fn shared(&self, entry: &CachedResponse, joined: SystemTime) -> bool {
        let now = SystemTime::now();
        (entry.is_fresh(now) || entry.stored_at >= joined)
            && self
                .max_age
                .is_none_or(|max| entry.age(now).as_secs() <= max)
            && self
                .stored_after
                .is_none_or(|start| entry.stored_at >= start)
    }
}

/// A fetch that may write the entry: the key it writes, the flight it leads, and the
/// invalidation epoch when it started.
struct Fill {
    key: CacheKey,
    flight: Option<(FlightGuard, Option<FillLease>)>,
    epoch: u64,
}

/// What coalescing decided for a request.
enum Coalesced {
    /// Answered by another request's fetch: one this request waited for (`waited`), or one
    /// that had delivered its entry already and is writing it (as good as a hit).
    Served {
        entry: Arc<CachedResponse>,
        waited: bool,
    },
    /// Fetch for the flight, holding the shared store's fill lock if there is one.
    Lead(FlightGuard, Option<FillLease>),
    Alone,
}

/// One request through the cache: the inner service, and what the cache knows of the
/// request. They are apart so that borrowing the context across an await does not need the
/// inner service to be `Sync`.
struct Call<S> {
    inner: S,
    ctx: Ctx,
}

struct Ctx {
    config: Arc<Config>,
    route: Route,
    /// The request carries cookies its route does not declare irrelevant: only entries the
    /// origin marked shared may answer it ([`RequestCookies`]).
    cookie: bool,
    /// Whether this is a client's request, whose outcome is counted (a background refresh
    /// counts only what it stores).
    counted: bool,
}

impl Ctx {
    /// A failed store operation: counted under the request's route, and logged.
    fn store_failed(&self, op: StoreOp, key: &str, error: &crate::store::StoreError) {
        observe::store_failed(&self.config.stats, &self.route.counters, op, key, error);
    }

    fn record(&self, event: Event) {
        self.config.stats.record(&self.route.counters, event);
    }

    /// Every response the cache answers with ends here: the outcome is counted (once per
    /// request) and said in the response's headers.
    fn finish<B>(&self, mut response: Response<B>, outcome: Outcome) -> Response<B> {
        self.finish_head(response.headers_mut(), outcome);
        response
    }

    /// [`finish`](Self::finish) for a response head.
    fn finish_head(&self, headers: &mut HeaderMap, outcome: Outcome) {
        self.count(outcome);
        outcome.write_headers(
            headers,
            self.config.status_header.as_ref(),
            self.config.cache_status.as_deref(),
        );
    }

    /// Counts a request's outcome: one outcome counter, the one its `x-cache` value maps to,
    /// and for a request that waited for another's fetch, `coalesced` as well.
    fn count(&self, outcome: Outcome) {
        if !self.counted {
            return;
        }
        self.record(outcome.event());
        if outcome == Outcome::Coalesced {
            self.record(Event::Coalesced);
        }
    }

    fn sliding(&self) -> bool {
        self.route
            .policy
            .as_deref()
            .is_some_and(|policy| policy.sliding)
    }

    /// A stale entry answering: while it is refreshed (RFC 5861 §3), or for an origin that
    /// failed (§4).
    fn serve_stale<B: Body>(
        &self,
        entry: &CachedResponse,
        request: &HeaderMap,
        head: bool,
        revalidating: bool,
    ) -> Response<CacheBody<B>> {
        let now = SystemTime::now();
        let response = self.response_from(entry, request, head, now);
        let stale_for = entry.resident_time(now).saturating_sub(entry.ttl);
        let outcome = if revalidating {
            Outcome::StaleWhileRevalidate { stale_for }
        } else {
            Outcome::StaleIfError { stale_for }
        };
        self.finish(response, outcome)
    }

    /// A hit answered without a future, on a store that answers in place (`get_now`): no
    /// allocation for the lookup, no boxed future for the request.
    fn in_place<B: Body>(
        &self,
        mode: RequestMode,
        key: Option<&CacheKey>,
        parts: &Parts,
    ) -> InPlace<B> {
        let (RequestMode::Lookup { max_age, .. }, Some(key)) = (mode, key) else {
            return InPlace::Unknown;
        };
        let entry = match self.config.store.get_now(key.as_str()) {
            Some(Ok(Some(entry))) => self.newest(key, entry),
            Some(Ok(None)) => return InPlace::Miss,
            Some(Err(_)) | None => return InPlace::Unknown,
        };
        let now = SystemTime::now();
        // Sliding routes touch the entry on a hit: the async path does that.
        if self.sliding()
            || !self.usable(&entry, &parts.headers, now, max_age)
            || !self.admits(&entry)
        {
            return InPlace::Unknown;
        }
        let head = parts.method == Method::HEAD;
        let response = self.response_from(&entry, &parts.headers, head, now);
        let ttl = entry.remaining_ttl(now);
        InPlace::Hit(self.finish(response, Outcome::Hit { ttl }))
    }

    /// A usable entry for the request: present, fresh (or on a sliding route, not expired),
    /// and of the variant the request selects.
    async fn lookup(
        &self,
        key: &CacheKey,
        request_headers: &HeaderMap,
        now: SystemTime,
    ) -> Option<Arc<CachedResponse>> {
        let entry = self.stored_variant(key, request_headers).await.0?;
        self.usable(&entry, request_headers, now, None)
            .then_some(entry)
    }

    /// The stored entry of the request's variant (RFC 9111 §4.1), whatever its freshness,
    /// and the slot that variant is (or is to be) stored in when it is not `key` itself.
    ///
    /// The first variant of a URL is stored under its key; a request that the entry there
    /// does not match looks in one of `max_variants - 1` slots, chosen by a hash of its
    /// values of the headers that entry varies on.
    async fn stored_variant(
        &self,
        key: &CacheKey,
        request_headers: &HeaderMap,
    ) -> (Option<Arc<CachedResponse>>, Option<CacheKey>) {
        let Some(entry) = self.stored(key).await else {
            return (None, None);
        };
        if variant_matches(&entry, request_headers) {
            return (Some(entry).filter(|entry| self.admits(entry)), None);
        }
        let slots = self.config.max_variants as u64 - 1;
        if slots == 0 {
            return (None, None);
        }
        let slot = key.variant(variant_hash(&entry.vary, request_headers) % slots);
        let found = self
            .stored(&slot)
            .await
            .filter(|entry| variant_matches(entry, request_headers) && self.admits(entry));
        (found, Some(slot))
    }

    /// Whether this request may take `entry` at all (fresh, stale or to revalidate): a
    /// request with cookies only one the origin marked shared.
    fn admits(&self, entry: &CachedResponse) -> bool {
        !self.cookie || explicitly_shared(&CacheControl::from_headers(&entry.headers))
    }

    /// The entry under `key`, whatever its freshness; a store error counts and is a miss.
    async fn stored(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        let store = &self.config.store;
        let found = match store.get_now(key.as_str()) {
            Some(found) => found,
            None => store.get(key.as_str()).await,
        };
        match found {
            Ok(entry) => entry.map(|entry| self.newest(key, entry)),
            Err(error) => {
                self.store_failed(StoreOp::Read, key.as_str(), &error);
                None
            }
        }
    }

    /// `entry` as the store returned it — or the newer entry a fetch of `key` has just
    /// delivered and is writing: once a newer response was delivered, no request is
    /// answered with an older one.
    fn newest(&self, key: &CacheKey, entry: Arc<CachedResponse>) -> Arc<CachedResponse> {
        self.config
            .coalescer()
            .and_then(|coalescer| coalescer.newer_landed(key.as_str(), &entry))
            .unwrap_or(entry)
    }

    /// Whether `entry` may answer the request: fresh (on a sliding route, present is
    /// enough: the store's expiry, moved on every hit, is the only clock), of the request's
    /// variant, and no older than the request's `max-age`.
    fn usable(
        &self,
        entry: &CachedResponse,
        request_headers: &HeaderMap,
        now: SystemTime,
        max_age: Option<u64>,
    ) -> bool {
        (self.sliding() || entry.is_fresh(now))
            && max_age.is_none_or(|max| entry.age(now).as_secs() <= max)
            && variant_matches(entry, request_headers)
    }

    /// A response from a stored entry: its status and headers, `Age`, the body unless HEAD
    /// — or `304 Not Modified` when the request's preconditions say the client has it
    /// (RFC 9110 §13.1.2, §13.1.3, §15.4.5).
    fn response_from<B: Body>(
        &self,
        entry: &CachedResponse,
        request: &HeaderMap,
        head: bool,
        now: SystemTime,
    ) -> Response<CacheBody<B>> {
        let conditional = request.contains_key(header::IF_NONE_MATCH)
            || request.contains_key(header::IF_MODIFIED_SINCE);
        let mut response = if conditional && not_modified(entry.status, &entry.headers, request) {
            let mut response = Response::new(CacheBody::stored(Bytes::new()));
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            *response.headers_mut() = not_modified_headers(&entry.headers);
            response
        } else {
            let body = if head {
                Bytes::new()
            } else {
                entry.body.clone()
            };
            let mut response = Response::new(CacheBody::stored(body));
            *response.status_mut() = entry.status;
            *response.headers_mut() = replayed_headers(&entry.headers);
            response
        };
        let _ = response
            .headers_mut()
            .try_insert(header::AGE, outcome::age_value(entry.age(now)));
        response
    }

    async fn hit<B: Body>(
        &self,
        entry: &CachedResponse,
        key: CacheKey,
        request: &HeaderMap,
        head: bool,
        now: SystemTime,
    ) -> Response<CacheBody<B>> {
        let response = self.response_from(entry, request, head, now);
        let ttl = if self.sliding() {
            // Another full lifetime, the entry's own (whatever set it: handler, origin,
            // route or default).
            self.touch(key, entry.storage_ttl()).await;
            entry.ttl
        } else {
            entry.remaining_ttl(now)
        };
        self.finish(response, Outcome::Hit { ttl })
    }

    /// Joins the flight for `key`: served by another request's fetch, leading a fetch, or
    /// fetching alone. A flight that ends with nothing to share is joined again (its waiters
    /// elect a new leader), until the coalescing timeout.
    async fn coalesce(
        &self,
        coalescer: &Arc<Coalescer>,
        key: &CacheKey,
        target: &CacheKey,
        headers: &HeaderMap,
        accept: Accept,
    ) -> Coalesced {
        let deadline = tokio::time::Instant::now() + self.config.coalesce_timeout();
        let joined = SystemTime::now();
        let mut rejoined = false;
        let mut rejected: Option<Arc<CachedResponse>> = None;
        loop {
            let join = match &rejected {
                Some(entry) => coalescer.join_past(target.as_str(), entry),
                None => coalescer.join(target.as_str()),
            };
            let rx = match join {
                // After a flight ended, another may have filled the entry meanwhile: look
                // again before fetching once more.
                Join::Leader(guard) if rejoined => {
                    return match self.lookup_accepting(key, headers, accept).await {
                        Some(entry) => {
                            drop(guard.ready(Arc::clone(&entry)));
                            Coalesced::Served {
                                entry,
                                waited: true,
                            }
                        }
                        None => self.lead(guard, key, target, headers, accept).await,
                    };
                }
                Join::Leader(guard) => {
                    return self.lead(guard, key, target, headers, accept).await;
                }
                Join::Alone => return Coalesced::Alone,
                Join::Waiter(rx) => rx,
            };
            // A flight that has landed is answered at once, from its complete entry.
            let landed = matches!(*rx.borrow(), Landing::Ready(_));
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match coalesce::wait(rx, left).await {
                Some(Landing::Ready(entry))
                    if variant_matches(&entry, headers)
                        && accept.shared(&entry, joined)
                        && self.admits(&entry) =>
                {
                    return Coalesced::Served {
                        entry,
                        waited: !landed || rejoined,
                    };
                }
                // Another variant, or not one this request may take (a refresh that came
                // after it was fetched): the next flight, which this request may lead.
                Some(Landing::Ready(entry)) => {
                    rejected = Some(entry);
                    rejoined = true;
                }
                // The leader was cancelled: elect a new one among the waiters.
                Some(Landing::Fallback { retry: true } | Landing::Pending) => rejoined = true,
                // Nothing to share (not storable, or the fetch failed): each fetches alone.
                Some(Landing::Fallback { retry: false }) => return Coalesced::Alone,
                None => {
                    self.record(Event::CoalesceTimeout);
                    return Coalesced::Alone;
                }
            }
        }
    }

    /// This process fetches `key` — unless the store is shared and another process is
    /// fetching it already: then wait for its entry to appear, for at most half the
    /// coalescing timeout (this request's own waiters must not time out meanwhile).
    async fn lead(
        &self,
        guard: FlightGuard,
        key: &CacheKey,
        target: &CacheKey,
        headers: &HeaderMap,
        accept: Accept,
    ) -> Coalesced {
        let store = &self.config.store;
        if !store.coordinates_fills() {
            return Coalesced::Lead(guard, None);
        }
        let deadline = tokio::time::Instant::now() + self.config.coalesce_timeout() / 2;
        let mut delay = Duration::from_millis(5);
        let mut waited = false;
        loop {
            match store
                .lock_fill(target.as_str(), self.config.coalesce_timeout())
                .await
            {
                Ok(Some(lock)) => {
                    let lease = FillLease::new(Arc::clone(store), target.as_str(), lock);
                    // After waiting, the holder before may have just written the entry and
                    // let go. (On the first try the miss was a moment ago: no second read.)
                    if waited {
                        if let Some(entry) = self.lookup_accepting(key, headers, accept).await {
                            drop(guard.ready(Arc::clone(&entry)));
                            return Coalesced::Served {
                                entry,
                                waited: true,
                            };
                        }
                    }
                    return Coalesced::Lead(guard, Some(lease));
                }
                Ok(None) => {}
                // Without the lock service, coalescing stays within this process.
                Err(error) => {
                    self.store_failed(StoreOp::Lock, target.as_str(), &error);
                    return Coalesced::Lead(guard, None);
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                self.record(Event::CoalesceTimeout);
                return Coalesced::Lead(guard, None);
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(Duration::from_millis(100));
            waited = true;
            if let Some(entry) = self.lookup_accepting(key, headers, accept).await {
                drop(guard.ready(Arc::clone(&entry)));
                return Coalesced::Served {
                    entry,
                    waited: true,
                };
            }
        }
    }

    /// An entry that answers the request: [`lookup`](Self::lookup), no older than the
    /// request allows and, for a refresh, stored after the request arrived.
    async fn lookup_accepting(
        &self,
        key: &CacheKey,
        headers: &HeaderMap,
        accept: Accept,
    ) -> Option<Arc<CachedResponse>> {
        let now = SystemTime::now();
        let entry = self.lookup(key, headers, now).await?;
        let young_enough = accept
            .max_age
            .is_none_or(|max| entry.age(now).as_secs() <= max);
        let new_enough = accept
            .stored_after
            .is_none_or(|start| entry.stored_at >= start);
        (young_enough && new_enough).then_some(entry)
    }

    /// Moves the entry's expiry a full TTL ahead (sliding routes).
    async fn touch(&self, key: CacheKey, ttl: Duration) {
        let store = Arc::clone(&self.config.store);
        let stats = self.config.stats.clone();
        let counters = Arc::clone(&self.route.counters);
        let touch = async move {
            if let Err(error) = store.touch(key.as_str(), ttl).await {
                observe::store_failed(&stats, &counters, StoreOp::Touch, key.as_str(), &error);
            }
        };
        let inline = self.config.write_mode.inline_for(&*self.config.store);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if !inline => drop(runtime.spawn(touch)),
            _ => touch.await,
        }
    }

    /// Where entries go, with the layer's limits, for a fetch that started at `epoch`.
    fn sink(&self, epoch: u64) -> Sink {
        Sink {
            store: Arc::clone(&self.config.store),
            stats: self.config.stats.clone(),
            counters: Arc::clone(&self.route.counters),
            max_body_size: self.config.rules.max_body_size,
            inline: self.config.write_mode.inline_for(&*self.config.store),
            // On a sliding route presence is freshness: nothing stays past it.
            keep: if self.sliding() {
                Duration::ZERO
            } else {
                self.config.rules.keep
            },
            invalidations: Arc::clone(&self.config.invalidations),
            epoch,
        }
    }

    /// The origin answered `304 Not Modified` to the revalidation of `entry`: the entry,
    /// with its header fields updated from the 304 and its freshness computed from them,
    /// is stored again and answers the request (RFC 9111 §3.2, §4.3.3, §4.3.4).
    async fn revalidated<B: Body>(
        &self,
        entry: &CachedResponse,
        mut head: http::response::Parts,
        fill: Fill,
        request_headers: &HeaderMap,
        facts: RequestFacts,
    ) -> Response<CacheBody<B>> {
        let Fill { key, flight, epoch } = fill;
        let now = SystemTime::now();
        let not_modified = std::mem::take(&mut head.headers);
        head.status = entry.status;
        head.headers = updated_headers(&entry.headers, &not_modified, self.config.rules.set_cookie);
        // The 304's age is the entry's now (RFC 9111 §4.2.3): its `Age`, and its `Date` or,
        // without one, the time it arrived (RFC 9110 §6.6.1). `Age` is read, not stored.
        if let Some(age) = not_modified.get(header::AGE) {
            head.headers.insert(header::AGE, age.clone());
        }
        if !not_modified.contains_key(header::DATE) {
            if let Ok(date) = HeaderValue::try_from(httpdate::fmt_http_date(now)) {
                head.headers.insert(header::DATE, date);
            }
        }
        // The body is the stored one: a HEAD revalidates the entry as well as a GET.
        let storing = RequestFacts {
            head: false,
            ..facts
        };
        let (updated, stored) = match self.storable_entry(&head, storing, request_headers, now) {
            Ok(mut updated) => {
                updated.body = entry.body.clone();
                updated.compact();
                let updated = Arc::new(updated);
                let (landed, lease) = match flight {
                    Some((guard, lease)) => (Some(guard.ready(Arc::clone(&updated))), lease),
                    None => (None, None),
                };
                let write = self.sink(epoch).write(
                    key.into_string(),
                    Arc::clone(&updated),
                    (landed, lease),
                );
                let stored = match write {
                    Some(write) => PendingWrite::new(write).run().await,
                    None => Storing::Pending,
                };
                (updated, stored)
            }
            // Updated to something the cache may not keep (say, `no-store`): this request
            // still gets it, nobody else, and the old entry goes.
            Err(reason) => {
                self.record(Event::NotStored(reason));
                if let Some((guard, _lease)) = flight {
                    guard.fallback(!matches!(
                        reason,
                        NotStoredReason::Authorization | NotStoredReason::Cookie
                    ));
                }
                self.withdraw(&key, reason).await;
                head.headers.remove(header::AGE);
                let mut served =
                    CachedResponse::new(entry.status, head.headers, entry.body.clone());
                served.stored_at = now;
                served.initial_age = initial_age(&not_modified, now);
                (Arc::new(served), Storing::No(reason))
            }
        };
        let response = self.response_from(&updated, request_headers, facts.head, now);
        self.finish(response, Outcome::Revalidated { stored })
    }

    /// The origin answered a request for a stored entry with a response the cache may not
    /// keep: unless that was down to this request (its credentials, its method), the entry
    /// goes, so that it is not served stale against the origin's latest word.
    async fn withdraw(&self, key: &CacheKey, reason: NotStoredReason) {
        if !matches!(
            reason,
            NotStoredReason::Authorization
                | NotStoredReason::Cookie
                | NotStoredReason::Head
                | NotStoredReason::Incomplete
                | NotStoredReason::Malformed
        ) {
            self.remove(key).await;
        }
    }

    /// Removes the entry under `key`; a store error is counted.
    async fn remove(&self, key: &CacheKey) {
        if let Err(error) = self.config.store.remove(key.as_str()).await {
            self.store_failed(StoreOp::Remove, key.as_str(), &error);
        }
    }

    /// The entry to store for a response (without its body), or why there is none.
    fn storable_entry(
        &self,
        head: &http::response::Parts,
        request: RequestFacts,
        request_headers: &HeaderMap,
        now: SystemTime,
    ) -> Result<CachedResponse, NotStoredReason> {
        let cc = CacheControl::from_headers(&head.headers);
        check_storable(head.status, &head.headers, &cc, request, &self.config.rules)?;
        let policy = self.route.policy.as_deref();
        let honor_origin = policy
            .and_then(|policy| policy.honor_origin)
            .unwrap_or(self.config.honor_origin);
        let explicit = head
            .extensions
            .get::<CacheTtl>()
            .map(|ttl| ttl.0)
            .or_else(|| {
                self.config
                    .ttl_fn
                    .as_ref()
                    .and_then(|ttl_fn| ttl_fn.call(head))
            });
        let sources = TtlSources {
            explicit,
            origin: honor_origin
                .then(|| origin_lifetime(&head.headers, &cc, now))
                .flatten(),
            // An error ("not there", "not allowed") gets no default lifetime of its own: a
            // 404 for a page about to be created must not outlive it by a whole TTL. Only
            // `negative_ttl`, or the origin, the handler or `ttl_fn`, store one.
            configured: if is_negative(head.status) {
                policy
                    .and_then(|policy| policy.negative_ttl)
                    .or(self.config.negative_ttl)
            } else {
                policy
                    .and_then(|policy| policy.ttl)
                    .or(self.config.default_ttl)
            },
        };
        let initial_age = initial_age(&head.headers, now);
        let keep = self.config.rules.keep;
        let sliding = self.sliding();
        let ttl = match ttl_from_sources(sources, initial_age) {
            // RFC 9111 §5.2.2.4: a `no-cache` response is never fresh: every reuse is
            // revalidated first.
            Ok(ttl) if !cc.no_cache => ttl,
            // Kept out by the handler or `ttl_fn`; and on a sliding route, presence in the
            // store is freshness: nothing is kept only to be revalidated.
            _ if explicit.is_some_and(|ttl| ttl.is_zero()) || sliding => {
                return Err(if cc.no_cache {
                    NotStoredReason::NoCache
                } else {
                    NotStoredReason::NoFreshness
                });
            }
            // Stale from the start, but worth keeping to revalidate (check_storable let a
            // `no-cache` response through only for that).
            _ if !keep.is_zero() && has_validator(&head.headers) => Duration::ZERO,
            Ok(_) => return Err(NotStoredReason::NoCache),
            Err(reason) => return Err(reason),
        };
        let mut entry = CachedResponse::new(
            head.status,
            stored_headers(&head.headers, self.config.rules.set_cookie),
            Bytes::new(),
        );
        entry.stored_at = now;
        entry.initial_age = initial_age;
        entry.ttl = ttl;
        entry.vary = vary_values(&head.headers, request_headers);
        // Each stale window: the response's directive, else the route's, else the layer's.
        // A stale `no-cache` response is never served without revalidation; nor, unless the
        // response itself grants a stale window, one that says `must-revalidate`,
        // `proxy-revalidate` or `s-maxage` (which implies `proxy-revalidate`): RFC 9111
        // §4.2.4, §5.2.2.2, §5.2.2.8, §5.2.2.10.
        let origin_only = cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some();
        let window = |directive: Option<u64>, route: Option<Duration>, layer: Option<Duration>| {
            // On a sliding route an entry is served while it is in the store: no stale
            // window may keep it there.
            if cc.no_cache || sliding {
                return Duration::ZERO;
            }
            let directive = directive.map(Duration::from_secs);
            if origin_only {
                return directive.unwrap_or_default();
            }
            directive.or(route).or(layer).unwrap_or_default()
        };
        entry.stale_while_revalidate = window(
            cc.stale_while_revalidate,
            policy.and_then(|policy| policy.stale_while_revalidate),
            self.config.stale_while_revalidate,
        );
        entry.stale_if_error = window(
            cc.stale_if_error,
            policy.and_then(|policy| policy.stale_if_error),
            self.config.stale_if_error,
        );
        Ok(entry)
    }
}

impl<S> Call<S> {
    async fn run<ReqB, ResB>(
        self,
        mut parts: Parts,
        body: ReqB,
        key: Option<CacheKey>,
        mode: RequestMode,
        missed: bool,
    ) -> Result<Response<CacheBody<ResB>>, S::Error>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
        S::Future: Send,
        S::Error: Send,
        ReqB: Send + 'static,
        ResB: Body + Send + 'static,
        ResB::Data: Buf + Send,
        ResB::Error: Send,
    {
        let arrived = SystemTime::now();
        let key = match (mode, key) {
            (RequestMode::Bypass(reason), _) => return self.bypass(parts, body, reason).await,
            (_, None) => return self.bypass(parts, body, BypassReason::NoKey).await,
            (_, Some(key)) => key,
        };
        let mut refresh = match mode {
            RequestMode::Refresh(reason) => Some(reason),
            _ => None,
        };
        let mut stored = Stored::default();
        // The variant slot this request's response goes to, when not the key itself.
        let mut slot = None;

        match mode {
            RequestMode::Lookup {
                max_age,
                only_if_cached,
            } => {
                let now = SystemTime::now();
                let entry = if missed {
                    None
                } else {
                    let (entry, variant_slot) = self.ctx.stored_variant(&key, &parts.headers).await;
                    slot = variant_slot;
                    entry
                };
                stored.stands_in = true;
                let found = match entry {
                    Some(entry) if self.ctx.usable(&entry, &parts.headers, now, None) => {
                        Some(entry)
                    }
                    stale => {
                        stored.entry = stale;
                        None
                    }
                };
                // Stale within its stale-while-revalidate window (RFC 5861 §3): answered
                // now, refreshed once in the background.
                if let (None, Some(entry)) = (&found, &stored.entry) {
                    if max_age.is_none()
                        && !only_if_cached
                        && entry.may_serve_while_revalidating(now)
                    {
                        let entry = Arc::clone(entry);
                        let head = parts.method == Method::HEAD;
                        let response = self.ctx.serve_stale(&entry, &parts.headers, head, true);
                        let target = slot.unwrap_or(key);
                        self.revalidate_in_background(parts, body, target, entry);
                        return Ok(response);
                    }
                }
                let too_old = |entry: &CachedResponse| {
                    max_age.is_some_and(|max| entry.age(now).as_secs() > max)
                };
                match found {
                    Some(entry) if !too_old(&entry) => {
                        let head = parts.method == Method::HEAD;
                        let target = slot.unwrap_or(key);
                        return Ok(self
                            .ctx
                            .hit(&entry, target, &parts.headers, head, now)
                            .await);
                    }
                    _ if only_if_cached => {
                        // RFC 9111 §5.2.1.7.
                        let mut response = Response::new(CacheBody::stored(Bytes::new()));
                        *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
                        return Ok(self.ctx.finish(response, Outcome::MissOnlyIfCached));
                    }
                    // Older than the request allows (RFC 9111 §5.2.1.1): validated first.
                    Some(entry) => {
                        refresh = Some(RefreshReason::MaxAge);
                        stored.entry = Some(entry);
                    }
                    None => {}
                }
            }
            // A request's `no-cache` (or `max-age=0`) asks for the stored response to be
            // validated with the origin before use (RFC 9111 §5.2.1.4): a conditional
            // request when the entry has a validator; it may not stand in for a failure.
            // The bypass header forces a full fetch: its lookup only finds the variant's slot.
            RequestMode::Refresh(reason) => {
                let (entry, variant_slot) = self.ctx.stored_variant(&key, &parts.headers).await;
                slot = variant_slot;
                if reason != RefreshReason::BypassHeader {
                    stored.entry = entry;
                }
            }
            _ => {}
        }
        let target = slot.unwrap_or_else(|| key.clone());
        // A cache layer around this one leads the flight of this very key for this very
        // request (the same layer mounted twice, or a route's own layer under the
        // router's on the route's first request): joining it would wait for itself.
        let flight_id = FlightOf(xxhash_rust::xxh3::xxh3_64(target.as_str().as_bytes()));
        let enclosed = parts.extensions.get::<FlightOf>() == Some(&flight_id);
        let flight = match self.ctx.config.coalescer() {
            Some(coalescer) if parts.method == Method::GET && !enclosed => {
                let accept = Accept {
                    max_age: match mode {
                        RequestMode::Lookup { max_age, .. } => max_age,
                        _ => None,
                    },
                    stored_after: refresh.map(|_| arrived),
                };
                match self
                    .ctx
                    .coalesce(coalescer, &key, &target, &parts.headers, accept)
                    .await
                {
                    Coalesced::Served { entry, waited } => {
                        let now = SystemTime::now();
                        let response = self.ctx.response_from(&entry, &parts.headers, false, now);
                        // Answered from an entry the fetch had delivered already: a hit.
                        // Waiting for a fetch under way: coalesced.
                        let outcome = if waited {
                            Outcome::Coalesced
                        } else {
                            Outcome::Hit {
                                ttl: entry.remaining_ttl(now),
                            }
                        };
                        return Ok(self.ctx.finish(response, outcome));
                    }
                    Coalesced::Lead(guard, lease) => Some((guard, lease)),
                    Coalesced::Alone => None,
                }
            }
            _ => None,
        };
        if flight.is_some() {
            parts.extensions.insert(flight_id);
        }
        self.fetch(parts, body, target, refresh, flight, stored)
            .await
    }

    /// Fetches `key` again on a spawned task with this request (its body is the request's,
    /// usually empty for a GET), unless a fetch of it is already in flight: the fresh
    /// response replaces the stale entry. Without a Tokio runtime nothing is spawned.
    fn revalidate_in_background<ReqB, ResB>(
        self,
        parts: Parts,
        body: ReqB,
        key: CacheKey,
        entry: Arc<CachedResponse>,
    ) where
        S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
        S::Future: Send,
        S::Error: Send,
        ReqB: Send + 'static,
        ResB: Body + Send + 'static,
        ResB::Data: Buf + Send,
        ResB::Error: Send,
    {
        let flight = match self.ctx.config.coalescer() {
            Some(coalescer) => match coalescer.join(key.as_str()) {
                Join::Leader(guard) => Some((guard, None)),
                // Already being refreshed (or not to be serialized): once is enough.
                Join::Waiter(_) | Join::Alone => return,
            },
            None => None,
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // A HEAD found it stale: the refresh is a GET all the same, whose response can be
        // stored.
        let mut parts = parts;
        parts.method = Method::GET;
        // The client was answered (with the stale entry, counted): the refresh is counted
        // only by what it stores.
        let mut this = self;
        this.ctx.counted = false;
        runtime.spawn(async move {
            let this = this;
            let refresh = Some(RefreshReason::StaleWhileRevalidate);
            let stored = Stored {
                entry: Some(entry),
                stands_in: false,
            };
            if let Ok(response) = this.fetch(parts, body, key, refresh, flight, stored).await {
                // Nobody reads this response: drain it, so that the capture completes and
                // stores the entry.
                let mut body = std::pin::pin!(response.into_body());
                while let Some(frame) =
                    std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await
                {
                    if frame.is_err() {
                        break;
                    }
                }
            }
        });
    }

    async fn bypass<ReqB, ResB>(
        mut self,
        parts: Parts,
        body: ReqB,
        reason: BypassReason,
    ) -> Result<Response<CacheBody<ResB>>, S::Error>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
        ResB: Body,
    {
        let outcome = Outcome::Bypass { reason };
        let watched = watched_pattern(&self.ctx.config, &parts);
        let result = self.inner.call(Request::from_parts(parts, body)).await;
        if claimed_on_the_way(&self.ctx.config, watched.as_ref()) {
            return result.map(|response| response.map(CacheBody::passthrough));
        }
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                self.ctx.count(outcome);
                return Err(error);
            }
        };
        Ok(self
            .ctx
            .finish(response.map(CacheBody::passthrough), outcome))
    }

    async fn fetch<ReqB, ResB>(
        mut self,
        parts: Parts,
        body: ReqB,
        key: CacheKey,
        refresh: Option<RefreshReason>,
        mut flight: Option<(FlightGuard, Option<FillLease>)>,
        stored: Stored,
    ) -> Result<Response<CacheBody<ResB>>, S::Error>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
        ResB: Body,
    {
        // Only an entry within its stale-if-error window may stand in for a failure, and
        // only one with a validator can be revalidated.
        let had_entry = stored.entry.is_some();
        let stale = stored
            .entry
            .clone()
            .filter(|entry| stored.stands_in && entry.may_serve_if_error(SystemTime::now()));
        let revalidate = stored.entry.filter(|entry| entry.has_validator());
        let facts = RequestFacts {
            head: parts.method == Method::HEAD,
            authorization: parts.headers.contains_key(header::AUTHORIZATION),
            cookie: self.ctx.cookie,
        };
        // The response's `Vary` names the request headers it depends on; they are only known
        // once it arrives, so the request's headers are kept until then.
        let request_headers = parts.headers.clone();
        let mut parts = parts;
        // A GET fill asks for the whole response, as nginx does: a client's own validators
        // would get a 304, which cannot be stored (nor shared with waiters). The client
        // receives the full response. A HEAD is never stored: its validators go as they are.
        let client_conditional = request_headers.contains_key(header::IF_NONE_MATCH)
            || request_headers.contains_key(header::IF_MODIFIED_SINCE);
        if !facts.head || revalidate.is_some() {
            parts.headers.remove(header::IF_NONE_MATCH);
            parts.headers.remove(header::IF_MODIFIED_SINCE);
        }
        // Revalidating, the cache sends its own validators (RFC 9111 §4.3.1): the entity
        // tag, and the modification date as well for origins that only know dates.
        if let Some(entry) = &revalidate {
            if let Some(etag) = entry.etag() {
                parts.headers.insert(header::IF_NONE_MATCH, etag.clone());
            }
            if let Some(date) = entry.last_modified() {
                parts
                    .headers
                    .insert(header::IF_MODIFIED_SINCE, date.clone());
            }
        }
        // An invalidation from now on means the response may predate a change.
        let epoch = self.ctx.config.invalidations.epoch();
        let watched = watched_pattern(&self.ctx.config, &parts);
        let result = self.inner.call(Request::from_parts(parts, body)).await;
        if claimed_on_the_way(&self.ctx.config, watched.as_ref()) {
            if let Some((flight, _lease)) = flight {
                // The waiters go on to the route's own layer.
                flight.fallback(false);
            }
            return result.map(|response| response.map(CacheBody::passthrough));
        }
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                // The waiters try for themselves rather than queue behind another attempt.
                if let Some((flight, _lease)) = flight {
                    flight.fallback(false);
                }
                return match stale {
                    Some(stale) => {
                        Ok(self
                            .ctx
                            .serve_stale(&stale, &request_headers, facts.head, false))
                    }
                    None => {
                        // No response, but the request was a miss (or refresh) all the same.
                        self.ctx.count(match refresh {
                            Some(reason) => Outcome::Refresh {
                                reason,
                                stored: Storing::No(NotStoredReason::Incomplete),
                            },
                            None => Outcome::Miss {
                                stored: Storing::No(NotStoredReason::Incomplete),
                            },
                        });
                        Err(error)
                    }
                };
            }
        };
        // RFC 5861 §4: a 500, 502, 503 or 504 is an error the stale entry stands in for.
        if let Some(stale) = &stale {
            if matches!(response.status().as_u16(), 500 | 502 | 503 | 504) {
                if let Some((flight, _lease)) = flight {
                    flight.fallback(false);
                }
                return Ok(self
                    .ctx
                    .serve_stale(stale, &request_headers, facts.head, false));
            }
        }
        // RFC 9111 §4.3.3, §4.3.4: a 304 for the stored representation freshens it; the
        // body stays the stored one.
        if let Some(entry) = &revalidate {
            if response.status() == StatusCode::NOT_MODIFIED {
                if same_representation(entry, response.headers()) {
                    let (head, _) = response.into_parts();
                    return Ok(self
                        .ctx
                        .revalidated(
                            entry,
                            head,
                            Fill { key, flight, epoch },
                            &request_headers,
                            facts,
                        )
                        .await);
                }
                // A 304 about another representation than the stored one (an origin that
                // contradicts itself): it updates nothing (§4.3.4), the entry is outdated,
                // and a client that did not ask conditionally cannot take a 304.
                self.ctx.remove(&key).await;
                if let Some((flight, _lease)) = flight.take() {
                    flight.fallback(false);
                }
                if !client_conditional {
                    let mut bad = Response::new(CacheBody::stored(Bytes::from_static(
                        b"bad gateway: the origin answered 304 for another representation",
                    )));
                    *bad.status_mut() = StatusCode::BAD_GATEWAY;
                    let stored = Storing::No(NotStoredReason::Status);
                    let outcome = match refresh {
                        Some(reason) => Outcome::Refresh { reason, stored },
                        None => Outcome::Miss { stored },
                    };
                    return Ok(self.ctx.finish(bad, outcome));
                }
            }
        }
        let (mut head, body) = response.into_parts();
        let now = SystemTime::now();
        let expected = if head.status == StatusCode::NO_CONTENT {
            Some(0)
        } else {
            content_length(&head.headers).or(body.size_hint().exact())
        };
        // A declared length over the limit is known to be too large before any byte.
        let decision = self
            .ctx
            .storable_entry(&head, facts, &request_headers, now)
            .and_then(|entry| {
                if expected.is_some_and(|len| len > self.ctx.config.rules.max_body_size as u64) {
                    Err(NotStoredReason::TooLarge)
                } else {
                    Ok(entry)
                }
            });
        let (body, stored) = match decision {
            Ok(entry) => {
                let capture = Capture::new(
                    key.into_string(),
                    entry,
                    expected,
                    flight,
                    self.ctx.sink(epoch),
                );
                CacheBody::capture(body, capture).await
            }
            Err(reason) => {
                self.ctx.record(Event::NotStored(reason));
                if let Some((flight, _lease)) = flight {
                    // Waiters fetch for themselves, and for a while the key's requests are
                    // not serialized (hit-for-miss) — unless it was this request (its
                    // credentials, its method), not the response, that kept it out.
                    flight.fallback(!matches!(
                        reason,
                        NotStoredReason::Authorization
                            | NotStoredReason::Cookie
                            | NotStoredReason::Head
                    ));
                }
                // The origin's latest answer for a stored entry may not be kept: nor may
                // the entry — unless that answer is a server error, which says nothing
                // about the entry (it may still be revalidated once the origin recovers).
                if had_entry && !head.status.is_server_error() {
                    self.ctx.withdraw(&key, reason).await;
                }
                (CacheBody::passthrough(body), Storing::No(reason))
            }
        };
        let outcome = match refresh {
            Some(reason) => Outcome::Refresh { reason, stored },
            None => Outcome::Miss { stored },
        };
        self.ctx.finish_head(&mut head.headers, outcome);
        Ok(Response::from_parts(head, body))
    }
}

/// A hit's copy of the stored headers, with room for those it adds (`Age`, the status
/// header, `Cache-Status`): a `clone` has no spare slot, and its first insert would move
/// every entry to a larger allocation.
fn replayed_headers(stored: &HeaderMap) -> HeaderMap {
    let mut headers = header_map_with_room(stored.keys_len() + HIT_HEADERS);
    for (name, value) in stored {
        let _ = headers.try_append(name.clone(), value.clone());
    }
    headers
}

/// How many headers a hit adds to the stored ones.
const HIT_HEADERS: usize = 3;

/// The response headers worth replaying: all but hop-by-hop ones (RFC 9110 §7.6.1), those
/// named by `Connection`, `Age` (recomputed on every hit) and, under
/// [`SetCookiePolicy::Strip`], `Set-Cookie`.
fn stored_headers(headers: &HeaderMap, set_cookie: SetCookiePolicy) -> HeaderMap {
    const HOP_BY_HOP: [HeaderName; 8] = [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ];
    let connection_names: Vec<&[u8]> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    // Room for a `Content-Length` the capture may add; the entry's map is compacted once
    // it is complete (`CachedResponse::compact`).
    let mut stored = header_map_with_room(headers.keys_len() + 1);
    for (name, value) in headers {
        let skip = HOP_BY_HOP.contains(name)
            || *name == header::AGE
            || (*name == header::SET_COOKIE && set_cookie == SetCookiePolicy::Strip)
            || connection_names
                .iter()
                .any(|listed| listed.eq_ignore_ascii_case(name.as_str().as_bytes()));
        if !skip {
            let _ = stored.try_append(name.clone(), value.clone());
        }
    }
    stored
}

/// The stored header fields updated from a `304 Not Modified` (RFC 9111 §3.2): each field
/// the 304 carries replaces the stored one, except those the stored body depends on
/// (`Content-Length`, `Content-Encoding`, `Content-Range`, `Content-Type`); fields that are
/// never stored (hop-by-hop, `Age`) are not taken from it either.
fn updated_headers(
    stored: &HeaderMap,
    not_modified: &HeaderMap,
    set_cookie: SetCookiePolicy,
) -> HeaderMap {
    const KEPT: [HeaderName; 4] = [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::CONTENT_RANGE,
        header::CONTENT_TYPE,
    ];
    let incoming = stored_headers(not_modified, set_cookie);
    let replaced = |name: &HeaderName| incoming.contains_key(name) && !KEPT.contains(name);
    // Compacted once it is the entry's (`CachedResponse::compact`).
    let mut merged = header_map_with_room(stored.keys_len() + incoming.keys_len());
    for (name, value) in stored {
        if !replaced(name) {
            let _ = merged.try_append(name.clone(), value.clone());
        }
    }
    for (name, value) in &incoming {
        if !KEPT.contains(name) {
            let _ = merged.try_append(name.clone(), value.clone());
        }
    }
    merged
}

/// Whether a 304 is about the stored representation: an `ETag` it carries matches the
/// stored one by weak comparison (RFC 9110 §8.8.3.2); without one, the request's validators
/// were the stored ones, so it is.
fn same_representation(entry: &CachedResponse, not_modified: &HeaderMap) -> bool {
    fn opaque(value: &HeaderValue) -> &[u8] {
        let value = value.as_bytes().trim_ascii();
        value.strip_prefix(b"W/").unwrap_or(value)
    }
    match (entry.etag(), not_modified.get(header::ETAG)) {
        (Some(stored), Some(fresh)) => opaque(stored) == opaque(fresh),
        _ => true,
    }
}

/// A hash of the request's values of the headers `vary` lists, normalized as
/// [`variant_matches`] compares them: requests of one variant hash alike.
fn variant_hash(vary: &[(HeaderName, Option<HeaderValue>)], request_headers: &HeaderMap) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (name, _) in vary {
        hasher.update(name.as_str().as_bytes());
        match combined_value(request_headers, name) {
            Some(value) => {
                hasher.update(b"=");
                for item in value.as_bytes().split(|&b| b == b',') {
                    hasher.update(item.trim_ascii());
                    hasher.update(b",");
                }
            }
            None => hasher.update(b"!"),
        }
        hasher.update(b"\n");
    }
    hasher.digest()
}

/// The request's values of the headers the response varies on (RFC 9111 §4.1).
fn vary_values(
    response_headers: &HeaderMap,
    request_headers: &HeaderMap,
) -> Vec<(HeaderName, Option<HeaderValue>)> {
    vary_names(response_headers)
        .map(|name| {
            let value = vary_value(request_headers, &name);
            (name, value)
        })
        .collect()
}

/// The request's value of a varied header as the entry keeps it: all its field lines as one
/// list, and for a credential (`Vary: Cookie`, `Vary: Authorization`) a hash of its
/// normalized items instead, so that no stored entry holds a user's credentials.
fn vary_value(request_headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let value = combined_value(request_headers, name)?;
    if !is_credential(name) {
        return Some(value);
    }
    let mut normalized = Vec::with_capacity(value.len());
    for (i, item) in value.as_bytes().split(|&b| b == b',').enumerate() {
        if i > 0 {
            normalized.push(b',');
        }
        normalized.extend_from_slice(item.trim_ascii());
    }
    HeaderValue::try_from(credential_hash(&normalized)).ok()
}

fn vary_names(headers: &HeaderMap) -> impl Iterator<Item = HeaderName> + '_ {
    headers
        .get_all(header::VARY)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
}

/// All field lines of `name`, joined as one list value (RFC 9110 §5.3).
fn combined_value(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let rest: Vec<&HeaderValue> = values.collect();
    if rest.is_empty() {
        return Some(first.clone());
    }
    let mut joined = first.as_bytes().to_vec();
    for value in rest {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(value.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// Whether the request selects the stored variant: each varied header has the same value,
/// after trimming and, for list separators, ignoring whitespace.
fn variant_matches(entry: &CachedResponse, request_headers: &HeaderMap) -> bool {
    entry.vary.iter().all(|(name, stored)| {
        let current = vary_value(request_headers, name);
        match (stored, current) {
            (None, None) => true,
            (Some(stored), Some(current)) => normalized_eq(stored.as_bytes(), current.as_bytes()),
            _ => false,
        }
    })
}

/// Compares two field values ignoring whitespace around list commas (RFC 9111 §4.1 allows
/// normalizing by the header's syntax; whitespace is the safe part of that for any header).
fn normalized_eq(a: &[u8], b: &[u8]) -> bool {
    let mut left = a.split(|&b| b == b',').map(<[u8]>::trim_ascii);
    let mut right = b.split(|&b| b == b',').map(<[u8]>::trim_ascii);
    loop {
        match (left.next(), right.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
    }
}
