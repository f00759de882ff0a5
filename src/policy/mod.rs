//! What may be looked up, what may be stored, and for how long — as pure functions over
//! headers, so that every rule can be tested against fixtures.
//!
//! - [`request`]: the client's `Cache-Control`, `Pragma` and bypass header, filtered by a
//!   [`ClientControl`] policy.
//! - [`response`]: whether a response may be stored ([`NotStoredReason`]), and its TTL.
//! - [`route`]: per-route rules ([`RoutePolicy`]).
//! - [`tags`]: the tags (surrogate keys) an entry can be purged by ([`CacheTags`]).
//! - [`targeted`]: targeted cache-control fields such as `CDN-Cache-Control` (RFC 9213).
//! - `vary` and `headers`: how a stored variant is selected (RFC 9111 §4.1), and which
//!   header fields an entry keeps and how a `304` updates them (RFC 9111 §3.2).

pub(crate) mod cache_control;
pub(crate) mod conditional;
pub(crate) mod date;
pub(crate) mod freshness;
pub(crate) mod headers;
pub(crate) mod range;
pub mod request;
pub mod response;
pub mod route;
pub mod tags;
pub mod targeted;
pub(crate) mod vary;

pub use request::{BypassReason, ClientControl, RefreshReason};
pub use response::{
    CacheTtl, HeuristicFreshness, NotStoredReason, RequestCookies, SetCookiePolicy, StatusSet,
};
pub use route::RoutePolicy;
pub use tags::{CacheTags, TagLimits, TagSeparator};
