//! What may be looked up, what may be stored, and for how long — as pure functions over
//! headers, so that every rule can be tested against fixtures.
//!
//! - Requests: the client's `Cache-Control`, `Pragma` and bypass header, filtered by a
//!   [`ClientControl`] policy ([`BypassReason`], [`RefreshReason`]).
//! - Responses: whether a response may be stored ([`NotStoredReason`]), and its TTL
//!   ([`CacheTtl`], [`HeuristicFreshness`]).
//! - Routes: per-route rules ([`RoutePolicy`]).
//! - Tags: the tags (surrogate keys) an entry can be purged by
//!   ([`CacheTags`], [`TagLimits`]).
//! - Targeted cache-control fields such as [`CDN_CACHE_CONTROL`] (RFC 9213).
//! - `vary` and `headers`: how a stored variant is selected (RFC 9111 §4.1), and which
//!   header fields an entry keeps and how a `304` updates them (RFC 9111 §3.2).

pub(crate) mod cache_control;
pub(crate) mod conditional;
pub(crate) mod date;
pub(crate) mod freshness;
pub(crate) mod headers;
pub(crate) mod range;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod route;
pub(crate) mod tags;
pub(crate) mod targeted;
pub(crate) mod vary;

pub use request::{BypassReason, RefreshReason};
pub use response::{
    HeuristicFreshness, NotStoredReason, RequestCookies, SetCookiePolicy, StatusSet,
};
pub use tags::{TagLimits, TagSeparator};
pub use targeted::CDN_CACHE_CONTROL;

// At the crate root; named here for the crate's own paths.
pub(crate) use request::ClientControl;
pub(crate) use response::CacheTtl;
pub(crate) use route::RoutePolicy;
pub(crate) use tags::CacheTags;
