//! Integration tests: an axum `Router` (or a plain tower service) behind a `CacheLayer` on
//! the memory store, driven with `oneshot`; every test counts how often the inner service
//! ran and checks what came back and what the store holds.

#![allow(clippy::unwrap_used)]
#[path = "../common/client.rs"]
mod client;

mod accounting;
mod bypass;
mod coalescing;
mod consistency;
mod harness;
mod hostile_input;
mod invalidation;
mod keys_and_routes;
mod lookup;
#[cfg(feature = "metrics")]
mod metrics;
mod observers;
mod outcome;
mod over_http1;
mod purge_http;
mod ranges;
mod revalidation;
mod rfc9111;
mod security;
mod services;
mod storing;
mod streaming;
mod values;
mod variants;
