//! What may be looked up, what may be stored, and for how long — as pure functions over
//! headers, so that every rule can be tested against fixtures.
//!
//! - [`request`]: the client's `Cache-Control`, `Pragma` and bypass header, filtered by a
//!   [`ClientControl`] policy.
//! - [`response`]: whether a response may be stored ([`NotStoredReason`]), and its TTL.
//! - [`route`]: per-route rules ([`RoutePolicy`]).

pub(crate) mod cache_control;
pub(crate) mod conditional;
pub mod request;
pub mod response;
pub mod route;

pub use request::{BypassReason, ClientControl, RefreshReason};
pub use response::{CacheTtl, NotStoredReason, RequestCookies, SetCookiePolicy, StatusSet};
pub use route::RoutePolicy;
