//! Response storability and TTL.
//!
//! By default the cache stores a response only when all of these hold (the first that fails
//! is the [`NotStoredReason`]):
//!
//! - the request was a GET (a HEAD response has no body to give a later GET);
//! - the status is in the [`StatusSet`] (200, 203, 204, 300, 301, 308, 404, 405, 410, 414,
//!   501: the statuses RFC 9110 §15.1 calls heuristically cacheable) — or it is any other
//!   final status (200–599, a `302`, `503` or an unknown `299` alike; not `206` or `304`)
//!   and the origin gave it explicit freshness (`max-age`, `s-maxage`, `Expires`) on a
//!   route that honours it: it is then stored for that freshness only (RFC 9111 §3);
//! - with `must-understand`, the status is one RFC 9110 defines (RFC 9111 §5.2.2.3); it
//!   then overrides `no-store`;
//! - no `no-store` or `private` in the response's `Cache-Control`, and no `no-cache` unless
//!   the layer keeps entries for revalidation ([`CacheLayer::keep`](crate::CacheLayer::keep))
//!   and the response has a validator (it is then revalidated before every use);
//! - no `Vary: *`;
//! - the request had no `Authorization`, unless the response says `public`, `s-maxage` or
//!   `must-revalidate` (RFC 9111 §3.5) or you allowed it;
//! - the request had no `Cookie`, unless the response says `public` or `s-maxage`, or the
//!   route declares that its responses do not depend on cookies ([`RequestCookies`]);
//! - no `Set-Cookie`, unless a [`SetCookiePolicy`] says otherwise, or a qualified
//!   `no-cache="Set-Cookie"` / `private="Set-Cookie"` lists it. A qualified `no-cache` or
//!   `private` (RFC 9111 §5.2.2.4, §5.2.2.7) restricts only the fields it lists: the
//!   response is stored without them;
//! - a `Content-Length`, if any, that is one whole number; no trailers; a body within the
//!   layer's `max_body_size`, as long as declared;
//! - a TTL above zero, from the first of: [`CacheTtl`] set by the handler, the layer's
//!   `ttl_fn`, the origin's `s-maxage` / `max-age` / `Expires` (less the response's age),
//!   the route's TTL, the layer's default TTL — or, with `keep` above zero, a validator
//!   (`ETag` / `Last-Modified`) to revalidate it with. For a negative status (404, 410 and
//!   every other 4xx or 5xx the status set admits) the route's and the default TTL do not
//!   count: the route's or the layer's `negative_ttl` does, and there is none by default
//!   (as nginx stores only 200, 301 and 302 when no status is named).

// Past 600 lines on purpose: the storability and freshness rules, one subject, a third of
// it the RFC references each rule cites.

// Over 600 lines: about 450 of rules, then the fixture tests that pin each of them.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode, header};

use super::cache_control::{CacheControl, parse_delta_seconds, qualified_field};

/// A TTL chosen by the handler, set as a response extension; it takes precedence over every
/// other TTL source. `CacheTtl(Duration::ZERO)` keeps the response out of the cache.
///
/// ```
/// use std::time::Duration;
/// use axum::{Extension, routing::get, Router};
/// use tower_response_cache::CacheTtl;
///
/// let app: Router = Router::new().route(
///     "/prices",
///     get(|| async { (Extension(CacheTtl(Duration::from_secs(5))), "42.00") }),
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheTtl(pub Duration);

/// Why a response was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum NotStoredReason {
    /// The request was a HEAD: its response has no body to serve a later GET.
    Head,
    /// The status is not in the cacheable set.
    Status,
    /// The response said `Cache-Control: no-store`.
    NoStore,
    /// The response said `Cache-Control: private`.
    Private,
    /// The response said `Cache-Control: no-cache` (it may not be reused without
    /// revalidation), and the layer does not keep entries for revalidation or the response
    /// has no validator.
    NoCache,
    /// The response said `Vary: *`.
    VaryStar,
    /// The request carried `Authorization` and the response did not allow sharing it.
    Authorization,
    /// The request carried `Cookie` and the response did not say `public` or `s-maxage`
    /// ([`RequestCookies`]).
    Cookie,
    /// The response set a cookie.
    SetCookie,
    /// The body was larger than `max_body_size`.
    TooLarge,
    /// No TTL source gave the response a freshness above zero (for a 4xx or 5xx, the
    /// route's and the default TTL do not count: only a `negative_ttl`).
    NoFreshness,
    /// The body had trailers, which the cache does not replay.
    Trailers,
    /// The body failed, or the client went away, before it was complete.
    Incomplete,
    /// The key was invalidated (an unsafe request for its URL) while the response was being
    /// fetched: it may predate the change.
    Invalidated,
    /// A newer response for the key was stored while this one was on its way to the store
    /// (a refresh overtook a slow write): an older response never replaces a newer one.
    Superseded,
    /// The response's framing cannot be trusted: a `Content-Length` that is not one whole
    /// number (RFC 9112 §6.3), which a replay would repeat.
    Malformed,
}

impl NotStoredReason {
    /// Every reason, in a stable order.
    pub const ALL: [Self; 16] = [
        Self::Head,
        Self::Status,
        Self::NoStore,
        Self::Private,
        Self::NoCache,
        Self::VaryStar,
        Self::Authorization,
        Self::Cookie,
        Self::SetCookie,
        Self::TooLarge,
        Self::NoFreshness,
        Self::Trailers,
        Self::Incomplete,
        Self::Invalidated,
        Self::Superseded,
        Self::Malformed,
    ];

    /// A short, stable label (used in `Cache-Status` and stats).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Head => "head",
            Self::Status => "status",
            Self::NoStore => "no-store",
            Self::Private => "private",
            Self::NoCache => "no-cache",
            Self::VaryStar => "vary-star",
            Self::Authorization => "authorization",
            Self::Cookie => "cookie",
            Self::SetCookie => "set-cookie",
            Self::TooLarge => "too-large",
            Self::NoFreshness => "no-freshness",
            Self::Trailers => "trailers",
            Self::Incomplete => "incomplete",
            Self::Invalidated => "invalidated",
            Self::Superseded => "superseded",
            Self::Malformed => "malformed",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// What to do with responses that set cookies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetCookiePolicy {
    /// Don't store them: one user's cookie is never served to another. The default.
    #[default]
    Skip,
    /// Store them without their `Set-Cookie` headers (the client that caused the miss still
    /// receives its cookies).
    Strip,
    /// Store them as they are. Only for cookies that are the same for every user.
    Store,
}

/// How requests that carry a `Cookie` header use the cache.
///
/// Most applications that read cookies render per-user pages, and a cache that stores one
/// user's page and serves it to the next leaks it; a response built for a logged-in user
/// may also differ from the anonymous one under the same URL. So, by default, a request
/// with cookies is answered only from entries whose response said `Cache-Control: public`
/// or `s-maxage`, and its own response is stored only if it says so: the origin, not a
/// default TTL, declares the response the same for everyone. Varnish's built-in logic goes
/// further and never caches requests with cookies.
///
/// ```
/// use tower_response_cache::{CacheLayer, MemoryStore, RoutePolicy};
/// use tower_response_cache::policy::RequestCookies;
///
/// // Static assets never depend on the session cookie a browser sends along.
/// let layer = CacheLayer::new(MemoryStore::new(64 << 20))
///     .route_prefix("/assets/", RoutePolicy::new().request_cookies(RequestCookies::Ignore));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestCookies {
    /// A request with `Cookie` reads only entries the origin marked shared (`public` or
    /// `s-maxage`), and its response is stored only when it is marked so (otherwise it is
    /// not stored: [`NotStoredReason::Cookie`]). The default.
    #[default]
    RequireShared,
    /// The responses do not depend on the request's cookies: requests with and without
    /// them share entries under the usual rules.
    Ignore,
}

/// Whether a status says the resource is not there or not to be had (every 4xx and 5xx):
/// such a response takes its TTL from `negative_ttl`, not from the route's or the default
/// TTL.
pub(crate) fn is_negative(status: StatusCode) -> bool {
    status.is_client_error() || status.is_server_error()
}

/// Whether the origin marked a response as the same for every user of a shared cache:
/// `public`, or `s-maxage` (RFC 9111 §5.2.2.9, §5.2.2.10).
pub(crate) fn explicitly_shared(cc: &CacheControl) -> bool {
    cc.public || cc.s_maxage.is_some()
}

/// Heuristic freshness (RFC 9111 §4.2.2), for a response the origin gave no explicit
/// freshness: a fraction of the time since its `Last-Modified` (as of its `Date`), capped.
/// Off by default; [`CacheLayer::heuristic_freshness`](crate::CacheLayer::heuristic_freshness)
/// turns it on, as Squid, Apache httpd and Traffic Server have it on.
///
/// It applies only where the RFC lets a cache guess:
/// - no `max-age`, `s-maxage` or `Expires` (§4.2.2: never over explicit freshness);
/// - a heuristically cacheable status (RFC 9110 §15.1: 200, 203, 204, 300, 301, 308,
///   404, 405, 410, 414, 501) — or any status the layer stores with `public`;
/// - nothing that asks for revalidation: no `no-cache`, `must-revalidate`,
///   `proxy-revalidate`, or `Pragma: no-cache`;
/// - a `Last-Modified` in the past of its `Date` (or of now).
///
/// It ranks after the handler's TTL and the origin's explicit freshness, and before the
/// route's and the default TTL; a route that does not honour the origin's freshness
/// ([`RoutePolicy::honor_origin_ttl`](crate::RoutePolicy::honor_origin_ttl)) guesses
/// nothing either.
///
/// ```
/// use std::time::Duration;
/// use tower_response_cache::policy::HeuristicFreshness;
/// use tower_response_cache::{CacheLayer, MemoryStore};
///
/// // A page last changed 10 days ago is fresh for a day (10%), at most 12 hours here.
/// let layer = CacheLayer::new(MemoryStore::new(64 << 20))
///     .heuristic_freshness(HeuristicFreshness::new().max(Duration::from_secs(12 * 3600)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeuristicFreshness {
    fraction: f64,
    max: Duration,
}

impl Default for HeuristicFreshness {
    /// 10% of the time since `Last-Modified` (the RFC's "typical setting"), at most 24
    /// hours (beyond which RFC 7234 asked for a warning on every reuse).
    fn default() -> Self {
        Self {
            fraction: 0.1,
            max: Duration::from_secs(24 * 3600),
        }
    }
}

impl HeuristicFreshness {
    /// The defaults: 10%, at most 24 hours.
    pub fn new() -> Self {
        Self::default()
    }

    /// The fraction of the time since `Last-Modified`, from 0 to 1 (a value outside is
    /// brought within; not a number is 0).
    #[must_use]
    pub fn fraction(mut self, fraction: f64) -> Self {
        self.fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self
    }

    /// The longest lifetime a guess gives.
    #[must_use]
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// The guessed lifetime of a response, counted from its `Date`; `None` where the rules
    /// above do not allow a guess.
    pub(crate) fn lifetime(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        cc: &CacheControl,
        now: SystemTime,
    ) -> Option<Duration> {
        let pragma_no_cache = headers.get_all(header::PRAGMA).iter().any(|value| {
            value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|directive| directive.trim_ascii().eq_ignore_ascii_case(b"no-cache"))
        });
        if explicitly_fresh(headers, cc)
            || cc.no_cache
            || cc.must_revalidate
            || cc.proxy_revalidate
            || pragma_no_cache
            || !(StatusSet::default().contains(status) || cc.public)
        {
            return None;
        }
        let modified = http_date(headers, header::LAST_MODIFIED)?;
        let date = http_date(headers, header::DATE).unwrap_or(now);
        let since = date.duration_since(modified).ok()?;
        let guess = since.mul_f64(self.fraction).min(self.max);
        // Whole seconds, as every other lifetime.
        let guess = Duration::from_secs(guess.as_secs());
        (!guess.is_zero()).then_some(guess)
    }
}

/// The set of statuses that may be stored.
///
/// ```
/// use http::StatusCode;
/// use tower_response_cache::policy::StatusSet;
///
/// let set = StatusSet::default().with(StatusCode::FOUND).without(StatusCode::NOT_FOUND);
/// assert!(set.contains(StatusCode::FOUND));
/// assert!(!set.contains(StatusCode::NOT_FOUND));
/// assert!(set.contains(StatusCode::OK));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StatusSet {
    // One bit per status code 0..1024.
    bits: [u64; 16],
}

impl StatusSet {
    /// No status at all.
    pub const fn empty() -> Self {
        Self { bits: [0; 16] }
    }

    /// The set plus `status`.
    #[must_use]
    pub fn with(mut self, status: StatusCode) -> Self {
        let code = usize::from(status.as_u16());
        self.bits[code / 64] |= 1 << (code % 64);
        self
    }

    /// The set without `status`.
    #[must_use]
    pub fn without(mut self, status: StatusCode) -> Self {
        let code = usize::from(status.as_u16());
        self.bits[code / 64] &= !(1 << (code % 64));
        self
    }

    /// Whether `status` is in the set.
    pub fn contains(&self, status: StatusCode) -> bool {
        let code = usize::from(status.as_u16());
        self.bits[code / 64] & (1 << (code % 64)) != 0
    }
}

impl Default for StatusSet {
    /// 200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501.
    fn default() -> Self {
        [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]
            .into_iter()
            .filter_map(|code| StatusCode::from_u16(code).ok())
            .collect()
    }
}

impl FromIterator<StatusCode> for StatusSet {
    fn from_iter<I: IntoIterator<Item = StatusCode>>(iter: I) -> Self {
        iter.into_iter().fold(Self::empty(), Self::with)
    }
}

impl std::fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries((0..1024u16).filter(|code| {
                StatusCode::from_u16(*code).is_ok_and(|status| self.contains(status))
            }))
            .finish()
    }
}

/// The layer's storage rules, as the response check needs them.
#[derive(Clone, Debug)]
pub(crate) struct StorageRules {
    pub(crate) statuses: StatusSet,
    pub(crate) set_cookie: SetCookiePolicy,
    pub(crate) allow_authorized: bool,
    pub(crate) max_body_size: usize,
    /// How long stale entries with a validator are kept for revalidation; above zero,
    /// `no-cache` responses with a validator are stored (to be revalidated on every use).
    pub(crate) keep: Duration,
}

impl Default for StorageRules {
    /// The layer's defaults: [`StatusSet::default`], no `Set-Cookie` responses, no
    /// responses to authorized requests (RFC 9111 §3.5 aside), bodies up to 1 MiB, nothing
    /// kept past its freshness.
    fn default() -> Self {
        Self {
            statuses: StatusSet::default(),
            set_cookie: SetCookiePolicy::Skip,
            allow_authorized: false,
            max_body_size: 1024 * 1024,
            keep: Duration::ZERO,
        }
    }
}

/// What the response check needs to know of the request.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RequestFacts {
    pub(crate) head: bool,
    pub(crate) authorization: bool,
    /// The request carried cookies its route does not declare irrelevant.
    pub(crate) cookie: bool,
}

/// On what grounds a response's status lets it be stored ([`check_storable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The status is in the layer's [`StatusSet`]: every TTL source counts.
    Listed,
    /// Not in the set, but a final status with explicit freshness from the origin (RFC 9111
    /// §3): only that freshness (or the handler's own TTL) counts, never a route's or the
    /// default TTL, and nothing is kept past it.
    ExplicitOnly,
}

/// Whether a response may be stored, judged on its head alone (the body is checked as it
/// streams), and on what grounds. `origin_freshness`: whether the route honours the
/// origin's freshness.
pub(crate) fn check_storable(
    status: StatusCode,
    headers: &HeaderMap,
    cc: &CacheControl,
    request: RequestFacts,
    rules: &StorageRules,
    origin_freshness: bool,
) -> Result<Admission, NotStoredReason> {
    if request.head {
        return Err(NotStoredReason::Head);
    }
    // RFC 9110 §15.2: an interim response (`103 Early Hints`, `102`, …) is not a response
    // to store or replay, whatever the status set says.
    if status.is_informational() {
        return Err(NotStoredReason::Status);
    }
    // RFC 9111 §5.2.2.3: with `must-understand`, a response whose status the cache does not
    // understand is not stored; one whose status it does understands overrides `no-store`.
    if cc.must_understand && !understood(status) {
        return Err(NotStoredReason::Status);
    }
    let admission = if rules.statuses.contains(status) {
        Admission::Listed
    } else if origin_freshness && final_status(status) && explicitly_fresh(headers, cc) {
        // RFC 9111 §3, §4.2: any final status may be stored with explicit freshness.
        Admission::ExplicitOnly
    } else {
        return Err(NotStoredReason::Status);
    };
    if cc.no_store && !cc.must_understand {
        return Err(NotStoredReason::NoStore);
    }
    if cc.private {
        return Err(NotStoredReason::Private);
    }
    // RFC 9111 §5.2.2.4: a `no-cache` response may be stored, but not reused without
    // revalidation; worth storing only when it can be revalidated and is kept for it.
    if cc.no_cache && (rules.keep.is_zero() || !has_validator(headers)) {
        return Err(NotStoredReason::NoCache);
    }
    if vary_star(headers) {
        return Err(NotStoredReason::VaryStar);
    }
    // RFC 9111 §3.5: a shared cache stores a response to an authorized request only when the
    // response explicitly allows it.
    if request.authorization
        && !rules.allow_authorized
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Err(NotStoredReason::Authorization);
    }
    if request.cookie && !explicitly_shared(cc) {
        return Err(NotStoredReason::Cookie);
    }
    // A `Set-Cookie` a qualified `no-cache` or `private` lists is not stored: no reason to
    // keep the rest out (RFC 9111 §5.2.2.4, §5.2.2.7).
    if rules.set_cookie == SetCookiePolicy::Skip
        && headers.contains_key(header::SET_COOKIE)
        && !(cc.qualified && qualified_field(headers, b"set-cookie"))
    {
        return Err(NotStoredReason::SetCookie);
    }
    let declared = content_length(headers);
    if declared.is_none() && headers.contains_key(header::CONTENT_LENGTH) {
        return Err(NotStoredReason::Malformed);
    }
    if declared.is_some_and(|len| len > rules.max_body_size as u64) {
        return Err(NotStoredReason::TooLarge);
    }
    Ok(admission)
}

/// A final status a response may be stored under with explicit freshness: 200–599 (known
/// or not), but not `206` (partial content is stored only whole) or `304` (an answer to a
/// conditional request, which the cache asks itself).
fn final_status(status: StatusCode) -> bool {
    (200..600).contains(&status.as_u16())
        && status != StatusCode::PARTIAL_CONTENT
        && status != StatusCode::NOT_MODIFIED
}

/// The final statuses RFC 9110 §15 defines, whose caching requirements the cache follows
/// (`must-understand`, RFC 9111 §5.2.2.3) — less `206` and `304`, which it does not store.
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=205 | 300..=303 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// Whether the origin gave the response an explicit freshness lifetime: `max-age`,
/// `s-maxage` or `Expires` (RFC 9111 §4.2.1; an invalid `Expires` is one too, of zero).
pub(crate) fn explicitly_fresh(headers: &HeaderMap, cc: &CacheControl) -> bool {
    cc.max_age.is_some()
        || cc.s_maxage.is_some()
        || (!cc.targeted && headers.contains_key(header::EXPIRES))
}

pub(crate) use crate::entry::has_validator;

fn vary_star(headers: &HeaderMap) -> bool {
    headers.get_all(header::VARY).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|name| name.trim_ascii() == b"*")
    })
}

/// The `Content-Length` of a response, when it has exactly one valid value.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()?.trim().parse().ok()
}

/// The `Age` a response carries (RFC 9111 §5.1). Of a list (`Age: 10, 20`, or several
/// lines) the first value counts, as for any singleton field a sender wrongly repeated;
/// one that is no number counts as none. A value too large to represent is 2^31 (§1.2.2),
/// not unreadable: an `Age` of 10^20 says the response is very old, not new.
pub(crate) fn age(headers: &HeaderMap) -> Option<Duration> {
    let line = headers.get(header::AGE)?.as_bytes();
    let first = line.split(|&b| b == b',').next()?.trim_ascii();
    (!first.is_empty() && first.iter().all(u8::is_ascii_digit))
        .then(|| Duration::from_secs(parse_delta_seconds(first)))
}

/// The response's age on arrival: the larger of its `Age` header and the time since its
/// `Date` (RFC 9111 §4.2.3, without the request delay the cache cannot see). A `Date` names
/// a whole second, so the time since it counts in whole seconds: a response dated in the
/// current second is not aged by the fraction of it that has passed (which would take up to
/// a second off every freshness lifetime, all of `max-age=1`).
pub(crate) fn initial_age(headers: &HeaderMap, now: SystemTime) -> Duration {
    let age_value = age(headers).unwrap_or_default();
    let apparent_age = http_date(headers, header::DATE)
        .and_then(|date| now.duration_since(date).ok())
        .map(|since| Duration::from_secs(since.as_secs()))
        .unwrap_or_default();
    age_value.max(apparent_age)
}

/// A date field's time, in any of the three formats ([`super::date`]); the first line of
/// several.
fn http_date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    super::date::parse_http_date(headers.get(name)?.as_bytes())
}

/// The origin's freshness lifetime (RFC 9111 §4.2.1): `s-maxage`, else `max-age`, else
/// `Expires` minus `Date` (an invalid `Expires` means already expired). `None` when the
/// origin said nothing.
pub(crate) fn origin_lifetime(
    headers: &HeaderMap,
    cc: &CacheControl,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(secs) = cc.s_maxage.or(cc.max_age) {
        return Some(Duration::from_secs(secs));
    }
    // A targeted field (RFC 9213 §2.1) replaces `Expires` as well.
    if cc.targeted || !headers.contains_key(header::EXPIRES) {
        return None;
    }
    let Some(expires) = http_date(headers, header::EXPIRES) else {
        return Some(Duration::ZERO);
    };
    let date = http_date(headers, header::DATE).unwrap_or(now);
    Some(expires.duration_since(date).unwrap_or_default())
}

/// The TTL sources, most specific first; `ttl_from_sources` takes the first that is set.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TtlSources {
    /// [`CacheTtl`] from the handler, or the layer's `ttl_fn`.
    pub(crate) explicit: Option<Duration>,
    /// The origin's freshness lifetime, when the route honours it.
    pub(crate) origin: Option<Duration>,
    /// The route's TTL, else the layer's default.
    pub(crate) configured: Option<Duration>,
}

/// The entry's TTL counted from now, or why there is none. An origin lifetime counts from
/// when the origin produced the response, so its `initial_age` is taken off.
pub(crate) fn ttl_from_sources(
    sources: TtlSources,
    initial_age: Duration,
) -> Result<Duration, NotStoredReason> {
    let ttl = match (sources.explicit, sources.origin, sources.configured) {
        (Some(explicit), _, _) => explicit,
        (None, Some(origin), _) => origin.saturating_sub(initial_age),
        (None, None, Some(configured)) => configured,
        (None, None, None) => Duration::ZERO,
    };
    if ttl.is_zero() {
        Err(NotStoredReason::NoFreshness)
    } else {
        Ok(ttl)
    }
}

#[cfg(test)]
mod tests;
