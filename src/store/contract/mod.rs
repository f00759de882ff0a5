//! The store contract as a test kit (feature `contract`): every promise of [`Store`] and
//! [`SharedStore`], checked against a store in one call.
//!
//! A store written outside this crate runs the same checks as the stores this crate ships
//! (memory, Redis standalone and cluster, tiered, memcached):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use tower_response_cache::MemoryStore;
//! use tower_response_cache::store::contract::run_contract;
//!
//! let report = run_contract(&MemoryStore::new(16 << 20)).await;
//! println!("{report}");
//! assert!(report.unsupported().is_empty());
//! # }
//! ```
//!
//! What the store's [`capabilities`](Store::capabilities) claim is checked to work, and
//! what they do not claim to be refused with [`StoreErrorKind::Unsupported`] (not silently
//! ignored). The first broken promise panics, naming it: call it from a `#[tokio::test]`.
//! [`run_shared_contract`] checks the protocol between processes with two handles on one
//! shared store, as two instances would hold.
//!
//! The checks write keys under `contract:` and clear the store at the end: run them on a
//! store (or a namespace) of their own. They take about three seconds, most of it waiting
//! for entries to expire (a store may count in whole seconds, as memcached does).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};

use super::{
    Fill, Filled, Lookup, PurgeMode, PurgeTarget, PutIf, SharedStore, Store, StoreError,
    StoreErrorKind, StoreExt,
};
use crate::entry::CachedResponse;

const MINUTE: Duration = Duration::from_secs(60);

/// What a contract run checked, and what the store said it does not do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContractReport {
    store: &'static str,
    checked: Vec<&'static str>,
    unsupported: Vec<&'static str>,
}

impl ContractReport {
    /// The promises checked and kept.
    pub fn checked(&self) -> &[&'static str] {
        &self.checked
    }

    /// What the store does not do (as its capabilities say, and as it answered): each
    /// checked to be refused with [`StoreErrorKind::Unsupported`].
    pub fn unsupported(&self) -> &[&'static str] {
        &self.unsupported
    }

    fn kept(&mut self, promise: &'static str) {
        self.checked.push(promise);
    }

    fn lacks(&mut self, what: &'static str) {
        self.unsupported.push(what);
    }
}

impl fmt::Display for ContractReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "store `{}` keeps the contract: {} promises checked",
            self.store,
            self.checked.len()
        )?;
        for promise in &self.checked {
            writeln!(f, "  kept: {promise}")?;
        }
        for what in &self.unsupported {
            writeln!(f, "  unsupported (and refused as such): {what}")?;
        }
        Ok(())
    }
}

/// Panics naming the broken promise.
macro_rules! ensure {
    (@detail) => { String::new() };
    (@detail $($detail:tt)+) => { format!(": {}", format_args!($($detail)+)) };
    ($store:expr, $promise:expr, $cond:expr $(, $($detail:tt)+)?) => {
        if !$cond {
            panic!(
                "store `{}` breaks the store contract: {}{}",
                $store,
                $promise,
                ensure!(@detail $($($detail)+)?)
            );
        }
    };
}

/// The result of an operation the contract needs; a store error panics, naming it.
fn ok<T>(name: &str, promise: &str, result: Result<T, StoreError>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("store `{name}` breaks the store contract: {promise}: {error}"),
    }
}

/// Whether `result` is the honest "unsupported" of what the capabilities do not claim.
fn refused<T: fmt::Debug>(name: &str, what: &str, result: Result<T, StoreError>) {
    match result {
        Err(error) if error.kind() == StoreErrorKind::Unsupported => {}
        other => panic!(
            "store `{name}` breaks the store contract: its capabilities say it does not do \
             {what}, so it must answer `Unsupported`, not {other:?}"
        ),
    }
}

fn entry(body: &'static str, tags: &[&str]) -> Arc<CachedResponse> {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    headers.append("link", HeaderValue::from_static("</a>"));
    headers.append("link", HeaderValue::from_static("</b>"));
    let mut entry = CachedResponse::new(StatusCode::OK, headers, Bytes::from(body));
    entry.ttl = MINUTE;
    entry.tags = tags.iter().map(|tag| (*tag).to_owned()).collect();
    Arc::new(entry)
}

fn aged(body: &'static str, seconds_ago: u64) -> Arc<CachedResponse> {
    let mut aged = CachedResponse::clone(&entry(body, &[]));
    aged.stored_at = SystemTime::now() - Duration::from_secs(seconds_ago);
    Arc::new(aged)
}

/// Stores `entry` under `key` whatever the key holds; a store error panics, naming it.
async fn put(store: &dyn Store, key: &str, entry: Arc<CachedResponse>, ttl: Duration) {
    let name = store.capabilities().name;
    ok(name, "put", store.put(key, entry, ttl, PutIf::Always).await);
}

/// The entry under `key`; a store error panics, naming it.
async fn get(store: &dyn Store, key: &str) -> Option<Arc<CachedResponse>> {
    let name = store.capabilities().name;
    ok(name, "get", store.get(key).await)
}

fn body(entry: &Option<Arc<CachedResponse>>) -> Option<&[u8]> {
    entry.as_deref().map(|entry| &entry.body[..])
}

mod checks;

use checks::{
    counters, expiry_and_touch, fill_locks, ordered_writes_race, prefixes, put_filled, tags,
};

/// Runs every check of the store contract on `store`, as its
/// [`capabilities`](Store::capabilities) describe it, and returns what was checked.
///
/// # Panics
///
/// At the first promise the store breaks, naming it.
pub async fn run_contract(store: &dyn Store) -> ContractReport {
    let can = store.capabilities();
    let name = can.name;
    let mut report = ContractReport {
        store: name,
        ..ContractReport::default()
    };
    let get = async |key: &str| ok(name, "get", store.get(key).await);
    let put = async |key: &str, entry: Arc<CachedResponse>, ttl: Duration, condition: PutIf| {
        ok(name, "put", store.put(key, entry, ttl, condition).await)
    };

    // Absent, then present with everything it was stored with.
    ensure!(
        name,
        "get of an absent key",
        get("contract:a").await.is_none()
    );
    let stored = entry("alpha", &["t1"]);
    ensure!(
        name,
        "an unconditional put stores",
        put("contract:a", Arc::clone(&stored), MINUTE, PutIf::Always).await
    );
    let found = get("contract:a").await;
    let found = found.as_deref();
    ensure!(name, "get finds what put stored", found.is_some());
    let found = found.expect("checked");
    ensure!(
        name,
        "the status round-trips",
        found.status == stored.status
    );
    ensure!(name, "the body round-trips", found.body == stored.body);
    ensure!(name, "the ttl round-trips", found.ttl == stored.ttl);
    ensure!(name, "the tags round-trip", found.tags == stored.tags);
    ensure!(
        name,
        "every header line round-trips, in order",
        found.headers.get_all("link").iter().collect::<Vec<_>>() == ["</a>", "</b>"]
    );
    put("contract:a", entry("beta", &[]), MINUTE, PutIf::Always).await;
    ensure!(
        name,
        "a put replaces what the key holds",
        body(&get("contract:a").await) == Some(b"beta")
    );
    report.kept("get and put, every field and header line round-trips");

    // Conditions.
    ensure!(
        name,
        "PutIf::Newer refuses an entry older than the one stored",
        !put("contract:a", aged("older", 30), MINUTE, PutIf::Newer).await
    );
    ensure!(
        name,
        "a refused PutIf::Newer leaves the entry",
        body(&get("contract:a").await) == Some(b"beta")
    );
    ensure!(
        name,
        "PutIf::Newer stores a newer entry",
        put("contract:a", entry("newer", &[]), MINUTE, PutIf::Newer).await
    );
    ensure!(
        name,
        "PutIf::Newer stores on an absent key",
        put("contract:n", aged("first", 5), MINUTE, PutIf::Newer).await
    );
    ensure!(
        name,
        "PutIf::Absent refuses a key that holds an entry",
        !put("contract:a", entry("no", &[]), MINUTE, PutIf::Absent).await
    );
    ensure!(
        name,
        "PutIf::Absent stores on an absent key",
        put("contract:b", entry("bee", &[]), MINUTE, PutIf::Absent).await
    );
    ensure!(
        name,
        "what PutIf::Absent stored is found",
        body(&get("contract:b").await) == Some(b"bee")
    );
    report.kept("PutIf::Newer and PutIf::Absent");
    ordered_writes_race(store, &mut report).await;

    // Many at once, in order, through the store's batches or one by one.
    let many = [
        ("contract:m1".to_owned(), entry("m1", &[]), MINUTE),
        ("contract:m2".to_owned(), entry("m2", &[]), MINUTE),
    ];
    ok(name, "put_many", store.put_many(&many).await);
    let keys = [
        "contract:m2".to_owned(),
        "contract:absent".to_owned(),
        "contract:m1".to_owned(),
    ];
    let found = ok(name, "get_many", store.get_many(&keys).await);
    ensure!(
        name,
        "get_many answers every key, in order",
        found.iter().map(body).collect::<Vec<_>>() == [Some(&b"m2"[..]), None, Some(&b"m1"[..])]
    );
    report.kept(if store.batches().is_some() {
        "many at once (the store's batches)"
    } else {
        "many at once (one by one)"
    });

    // Removed once; a purge of keys counts what was there.
    ensure!(
        name,
        "a hard purge of a key reports it",
        ok(name, "remove", store.remove("contract:b").await)
    );
    ensure!(
        name,
        "a purge of an absent key reports none",
        !ok(name, "remove", store.remove("contract:b").await)
    );
    ensure!(
        name,
        "a removed entry is gone",
        get("contract:b").await.is_none()
    );
    let removed = ok(
        name,
        "remove_many",
        store
            .remove_many(&[
                "contract:m1".to_owned(),
                "contract:m2".to_owned(),
                "contract:none".to_owned(),
            ])
            .await,
    );
    ensure!(
        name,
        "a purge of keys counts the ones present",
        removed == 2,
        "{removed} of 2"
    );
    report.kept("purges of keys, counted");

    expiry_and_touch(store, &mut report).await;
    prefixes(store, &mut report).await;
    tags(store, &mut report).await;

    // A soft purge of keys: still there, stale from now on; its life not extended.
    if can.soft_purges {
        put("contract:k", entry("k", &[]), MINUTE, PutIf::Always).await;
        let keys = ["contract:k".to_owned(), "contract:absent".to_owned()];
        let softened = ok(
            name,
            "soft purge of keys",
            store.purge(PurgeTarget::Keys(&keys), PurgeMode::Soft).await,
        );
        ensure!(
            name,
            "a soft purge of keys counts the ones present",
            softened == 1
        );
        let soft = get("contract:k").await;
        ensure!(
            name,
            "a soft purge keeps the entry, stale",
            soft.as_ref()
                .is_some_and(|soft| soft.body == "k" && !soft.is_fresh(SystemTime::now()))
        );
        ensure!(
            name,
            "a soft purge makes no entry",
            get("contract:absent").await.is_none()
        );
        report.kept("soft purges of keys");
    } else {
        let keys = ["contract:k".to_owned()];
        refused(
            name,
            "soft purges",
            store.purge(PurgeTarget::Keys(&keys), PurgeMode::Soft).await,
        );
        report.lacks("soft purges");
    }

    counters(store, &mut report).await;

    // Clear: nothing left.
    put("contract:last", entry("last", &[]), MINUTE, PutIf::Always).await;
    ok(name, "clear", store.clear().await);
    ensure!(
        name,
        "clear removes every entry",
        get("contract:last").await.is_none() && get("contract:a").await.is_none()
    );
    report.kept("clear");

    if let Some(shared) = store.shared() {
        fill_locks(shared, shared, &mut report).await;
    }
    report
}

/// Checks the protocol between processes that share a store, with `a` and `b` as two
/// processes' handles on it (two stores built on the same backend), then
/// [`run_contract`] on `a`.
///
/// # Panics
///
/// At the first promise the store breaks, naming it; also if either handle is not a
/// [`SharedStore`].
pub async fn run_shared_contract(a: &dyn Store, b: &dyn Store) -> ContractReport {
    let name = a.capabilities().name;
    let (Some(shared_a), Some(shared_b)) = (a.shared(), b.shared()) else {
        panic!("store `{name}`: run_shared_contract needs two handles on a shared store");
    };
    let mut report = ContractReport {
        store: name,
        ..ContractReport::default()
    };
    let put = async |store: &dyn Store, key: &str, tags: &[&str]| {
        ok(
            name,
            "put",
            store
                .put(key, entry("shared", tags), MINUTE, PutIf::Always)
                .await,
        )
    };
    put(a, "contract:s", &["ts"]).await;
    ensure!(
        name,
        "what one handle stores, the other finds",
        ok(name, "get", b.get("contract:s").await).is_some()
    );
    report.kept("entries are shared between handles");

    // A purge by one handle is caught by the other's check of a fetch that started before
    // it, by key and by tag.
    let mark = match shared_a.purge_mark() {
        Some(mark) => Some(mark),
        // A store that learns the mark as it reads: read once.
        None => {
            ok(name, "get", a.get("contract:s").await);
            shared_a.purge_mark()
        }
    };
    match mark {
        Some(mark) => {
            ok(name, "remove", b.remove("contract:s").await);
            ensure!(
                name,
                "purged_since sees another handle's purge of the key",
                ok(
                    name,
                    "purged_since",
                    shared_a.purged_since(mark, "contract:s", &[]).await
                )
            );
            let mark = shared_a.purge_mark().unwrap_or(mark);
            put(a, "contract:s", &["ts"]).await;
            let target = PurgeTarget::Tag {
                tag: "ts",
                within: "contract:",
            };
            match b.purge(target, PurgeMode::Hard).await {
                Ok(_) => ensure!(
                    name,
                    "purged_since sees another handle's purge of a tag",
                    ok(
                        name,
                        "purged_since",
                        shared_a
                            .purged_since(mark, "contract:s", &["ts".to_owned()])
                            .await
                    )
                ),
                Err(error) if error.kind() == StoreErrorKind::Unsupported => {}
                Err(error) => {
                    panic!("store `{name}` breaks the store contract: tag purge: {error}")
                }
            }
            report.kept("purge marks: another handle's purges are seen by purged_since");
        }
        None => report.lacks("purge marks (fetches under way during a purge are not caught)"),
    }
    ok(name, "clear", a.clear().await);

    fill_locks(shared_a, shared_b, &mut report).await;
    put_filled(a, shared_a, shared_b, &mut report).await;
    ok(name, "clear", a.clear().await);
    let single = run_contract(a).await;
    report.checked.extend(single.checked);
    report.unsupported.extend(single.unsupported);
    report.unsupported.dedup();
    report
}
