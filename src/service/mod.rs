//! The request flow of [`CacheService`].

mod answer;
mod decide;
mod fetch;
mod lookup;
mod plan;
mod purge_method;
mod respond;
mod revalidate;
mod unsafe_method;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes};
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use tower_service::Service;

use crate::body::CacheBody;
use crate::coalesce::{
    self, Coalescer, FillLease, FlightGuard, Join, Landing, Lead, LockWait, Locked,
};
use crate::config::Config;
use crate::entry::{CachedResponse, header_map_with_room};
use crate::fence::Started;
use crate::fill::{Capture, PendingWrite, Sink};
use crate::future::ResponseFuture;
use crate::key::{CacheKey, KeyBuilder, Keys};
use crate::observe::trace;
use crate::observe::{EventKind, Scope, Stopwatch, StoreOperation, Timings};
use crate::outcome::Storing;
use crate::outcome::{self, Outcome};
use crate::policy::conditional::{not_modified, not_modified_headers};
use crate::policy::headers::{stored_headers, updated_headers};
use crate::policy::range::{
    RangeAnswer, content_range, multipart, range_answer, slice, unsatisfied_range,
};
use crate::policy::request::{Present, RequestMode, request_mode};
use crate::policy::response::explicitly_shared;
use crate::policy::response::{
    Admission, RequestFacts, check_storable, content_length, initial_age,
};
use crate::policy::vary::{variant_hash, variant_matches, vary_values};
use crate::policy::{
    BypassReason, CacheTags, CacheTtl, NotStoredReason, RefreshReason, RequestCookies,
};
use crate::routes::{Resolved, Route};
use crate::store::Tier;
use crate::store::{Lookup, SharedStore, StoreExt};
use decide::{Decision, within_max_age};
use plan::{Plan, claimed_on_the_way, plan, watched_pattern};
use purge_method::{PurgeMethod, is_purge};
use unsafe_method::{Invalidation, invalidates};

/// A [`Service`] that answers from the cache when it can and stores what it may; made by
/// [`CacheLayer`](crate::CacheLayer).
///
/// # The request flow
///
/// 1. Route rule (axum's `MatchedPath`, or the path); a disabled route, or a method other
///    than GET and HEAD, passes through untouched.
/// 2. Request directives under the route's [`ClientControl`](crate::ClientControl).
/// 3. Key (`namespace:`, the route's own `namespace:` if it has one, the
///    [`KeyBuilder`](crate::key::KeyBuilder)'s key).
/// 4. Lookup: the entry under the key, or, when it is another variant (RFC 9111 §4.1),
///    the one in the request's variant slot; a fresh one is a hit. A stale one within its
///    `stale-while-revalidate` window answers at once and is revalidated in the background.
/// 5. Miss, stale entry or refresh: the inner service runs (one request per key at a time,
///    the others wait for its response); a stale entry with a validator is revalidated with
///    `If-None-Match` / `If-Modified-Since`, and a `304` updates it (§4.3). A storable
///    response streams to the client through a [`CacheBody`](crate::CacheBody) that copies
///    it and stores it when complete. An origin failure is answered with a stale entry
///    within its `stale-if-error` window.
///
/// [`policy`](crate::policy) has the rules each step applies.
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
        let (mut parts, body) = request.into_parts();
        let (ctx, mode, key) = match plan(&self.config, &self.key_builder, &mut parts) {
            Plan::Pass => {
                return ResponseFuture::pass(self.inner.call(Request::from_parts(parts, body)));
            }
            Plan::Invalidate(invalidation) => {
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let request = Request::from_parts(parts, body);
                return ResponseFuture::cached(Box::pin(invalidation.run(inner, request)));
            }
            Plan::Purge(purge) => {
                return ResponseFuture::cached(Box::pin(async move { Ok(purge.run().await) }));
            }
            Plan::Cache { ctx, mode, key } => (ctx, mode, key),
        };
        let config = &self.config;
        // Noted before the lookup: a miss that then finds no flight to join looks again if
        // a flight ended meanwhile.
        let ended = match (config.coalescer(), &key) {
            (Some(coalescer), Some(key)) => coalescer.ended(key.as_str()),
            _ => 0,
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
        let span = ctx.span().cloned();
        let call = Call { inner, ctx };
        let run = call.run(parts, body, key, mode, (missed, ended));
        match span {
            None => ResponseFuture::cached(Box::pin(run)),
            Some(span) => {
                ResponseFuture::cached(Box::pin(tracing::Instrument::instrument(run, span)))
            }
        }
    }
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

/// What a read of the store brought for a request: the entry of its variant, the slot that
/// variant is (or is to be) stored in when it is not the key itself, the tier that
/// answered, and the shared store's fill lock the read took or found held.
#[derive(Default)]
struct Read {
    entry: Option<Arc<CachedResponse>>,
    slot: Option<CacheKey>,
    /// On a tiered store: read from the shared tier (its hit is an L2 hit).
    from_l2: bool,
    lock: Option<PreLock>,
}

impl Read {
    /// The tier that answered, on a tiered store.
    fn tier(&self, tiered: bool) -> Option<Tier> {
        tiered.then_some(if self.from_l2 { Tier::L2 } else { Tier::L1 })
    }
}

impl Accept {
    /// Whether the response another request fetched may answer this one, which joined its
    /// flight at `joined`: fresh, or obtained from the origin after this request arrived
    /// (as good as forwarding it: a `no-cache` response validated then, RFC 9111
    /// §5.2.2.4), and within what the request accepts.
    fn shared(&self, entry: &CachedResponse, joined: SystemTime, now: SystemTime) -> bool {
        (entry.is_fresh(now) || entry.stored_at >= joined) && self.admits(entry, now)
    }

    /// Whether `entry` is within what the request accepts: its `max-age`, and for a
    /// refresh, stored after the request arrived.
    fn admits(&self, entry: &CachedResponse, now: SystemTime) -> bool {
        within_max_age(entry, self.max_age, now)
            && self
                .stored_after
                .is_none_or(|start| entry.stored_at >= start)
    }
}

/// A fetch that may write the entry: the key it writes, the flight it leads, and where
/// purges stood when it started.
struct Fill {
    key: CacheKey,
    flight: Option<Lead>,
    started: Started,
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
    Lead(Lead),
    Alone,
}

/// What the lookup phase hands to the next: its decision, the variant slot the entry is
/// (or the response goes) in when it is not the key itself, the tier that answered, and the
/// fill lock the lookup took or found held, for the fetch the request may lead.
struct Found {
    decision: Decision,
    slot: Option<CacheKey>,
    tier: Option<Tier>,
    lock: Option<PreLock>,
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
    /// The request's method (GET or HEAD), for events.
    method: &'static Method,
    /// The request carries cookies its route does not declare irrelevant: only entries the
    /// origin marked shared may answer it ([`RequestCookies`]).
    cookie: bool,
    /// The request has `If-None-Match`, `If-Modified-Since` or `Range`: a response from an
    /// entry checks them.
    preconditions: bool,
    /// Whether this is a client's request, whose outcome is counted (a background refresh
    /// counts only what it stores).
    counted: bool,
    /// The request's clock and span, when observers or a subscriber want them: boxed, so
    /// that a request neither is watched costs one word.
    watch: Option<Box<Watch>>,
}

/// A shared store's fill lock, as the request's lookup left it ([`SharedStore::get_or_lock_fill`](crate::store::SharedStore::get_or_lock_fill)).
enum PreLock {
    /// Taken: this request may fetch for every process sharing the store.
    Taken(FillLease),
    /// Held by another process.
    Held,
}

/// What watches a request: its clock (for observers' timings) and its span.
struct Watch {
    clock: Option<Stopwatch>,
    span: tracing::Span,
}

impl Ctx {
    /// The request's clock, when observers will read it.
    fn clock(&self) -> Option<&Stopwatch> {
        self.watch.as_ref().and_then(|watch| watch.clock.as_ref())
    }

    /// The request's span, when a subscriber wants it.
    fn span(&self) -> Option<&tracing::Span> {
        self.watch
            .as_ref()
            .map(|watch| &watch.span)
            .filter(|span| !span.is_disabled())
    }

    /// The context of the background refresh of this request's stale entry: a GET, counted
    /// only by what it stores (the client was answered with the stale entry, counted), in
    /// no request's span, its clock its own.
    fn background_refresh(&self) -> Ctx {
        Ctx {
            config: Arc::clone(&self.config),
            route: self.route.clone(),
            method: &Method::GET,
            cookie: self.cookie,
            preconditions: false,
            counted: false,
            watch: self.config.funnel.observed().then(|| {
                Box::new(Watch {
                    clock: self.config.funnel.clock(),
                    span: tracing::Span::none(),
                })
            }),
        }
    }

    /// The request's settings: its route's rule over the layer's defaults.
    fn settings(&self) -> crate::config::Settings<'_> {
        self.config.settings(&self.route)
    }

    /// The request's scope, for events.
    fn scope(&self) -> Scope<'_> {
        Scope::request(&self.route.counters, self.method)
    }

    /// A failed store operation: counted under the request's route, told and logged.
    fn store_failed(&self, operation: StoreOperation, key: &str, error: &crate::store::StoreError) {
        self.config
            .funnel
            .store_failed(self.scope(), operation, key, error);
    }

    fn record(&self, kind: EventKind) {
        self.config
            .funnel
            .record(self.scope(), kind, Timings::default());
    }
}

impl<S> Call<S> {
    async fn run<ReqB, ResB>(
        self,
        mut parts: Parts,
        body: ReqB,
        key: Option<CacheKey>,
        mode: RequestMode,
        (missed, ended): (bool, u64),
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
        let arrived = self.ctx.config.now();
        let key = match (mode, key) {
            (RequestMode::Bypass(reason), _) => return self.bypass(parts, body, reason).await,
            (_, None) => return self.bypass(parts, body, BypassReason::NoKey).await,
            (_, Some(key)) => key,
        };
        let head = parts.method == Method::HEAD;
        let now = self.ctx.config.now();
        let found = self.ctx.find(mode, &key, &parts.headers, missed, now).await;
        if let Some(clock) = self.ctx.clock() {
            clock.lookup_done();
        }
        let Found {
            decision,
            slot,
            tier,
            lock,
        } = found;
        let (refresh, stored) = match decision {
            Decision::Hit(entry) => {
                let target = slot.unwrap_or(key);
                return Ok(self
                    .ctx
                    .hit(&entry, target, &parts.headers, (head, tier), now)
                    .await);
            }
            Decision::ServeStale(entry) => {
                let response = self.ctx.serve_stale(&entry, &parts.headers, head, true);
                self.revalidate_in_background(parts, body, (slot.unwrap_or(key), ended), entry);
                return Ok(response);
            }
            Decision::OnlyIfCachedMiss => return Ok(self.ctx.only_if_cached_miss()),
            Decision::Fetch {
                refresh,
                entry,
                stands_in,
            } => (refresh, Stored { entry, stands_in }),
        };
        let target = slot.unwrap_or_else(|| key.clone());
        let accept = Accept {
            max_age: match mode {
                RequestMode::Lookup { max_age, .. } => max_age,
                _ => None,
            },
            stored_after: refresh.map(|_| arrived),
        };
        let flight = match self
            .ctx
            .join_flight(&mut parts, (&key, &target), accept, ended, lock)
            .await
        {
            Ok(flight) => flight,
            Err(response) => return Ok(response),
        };
        self.fetch(parts, body, target, refresh, flight, stored)
            .await
    }
}
