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
    Lookup, PurgeMode, PurgeTarget, PutIf, SharedStore, Store, StoreError, StoreErrorKind, StoreExt,
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

fn body(entry: &Option<Arc<CachedResponse>>) -> Option<&[u8]> {
    entry.as_deref().map(|entry| &entry.body[..])
}

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

/// Many writers of one key at once, each with its own `stored_at`, all `PutIf::Newer`: the
/// newest is what the key holds, whatever the order they reach the store in.
async fn ordered_writes_race(store: &dyn Store, report: &mut ContractReport) {
    let name = store.capabilities().name;
    for round in 0..20 {
        let key = format!("contract:race{round}");
        let writes = (0..8u64).map(|i| {
            // Interleaved ages: the newest (1 s ago) is neither first nor last.
            let age = [6, 3, 8, 1, 5, 7, 2, 4][i as usize];
            let mut written = CachedResponse::clone(&entry("racer", &[]));
            written.stored_at = SystemTime::now() - Duration::from_secs(age);
            written.body = Bytes::from(format!("{age}"));
            let key = key.clone();
            async move {
                store
                    .put(&key, Arc::new(written), MINUTE, PutIf::Newer)
                    .await
            }
        });
        for result in futures_util::future::join_all(writes).await {
            ok(name, "PutIf::Newer under contention", result);
        }
        let held = ok(name, "get", store.get(&key).await);
        ensure!(
            name,
            "of concurrent PutIf::Newer writes the newest stands",
            body(&held) == Some(b"1"),
            "round {round} holds {:?}",
            held.map(|held| held.body.clone())
        );
        ok(name, "remove", store.remove(&key).await);
    }
    report.kept("PutIf::Newer is atomic: of concurrent writes the newest stands");
}

async fn expiry_and_touch(store: &dyn Store, report: &mut ContractReport) {
    let can = store.capabilities();
    let name = can.name;
    let second = Duration::from_secs(1);
    ok(
        name,
        "put",
        store
            .put("contract:short", entry("short", &[]), second, PutIf::Always)
            .await,
    );
    ensure!(
        name,
        "an entry is found within its ttl",
        ok(name, "get", store.get("contract:short").await).is_some()
    );
    if can.touch {
        ok(
            name,
            "put",
            store
                .put(
                    "contract:touch",
                    entry("touch", &["t5"]),
                    second,
                    PutIf::Always,
                )
                .await,
        );
        let tags = ["t5".to_owned()];
        ensure!(
            name,
            "touch reports an entry it extended",
            ok(
                name,
                "touch",
                store.touch("contract:touch", &tags, MINUTE).await
            )
        );
        ensure!(
            name,
            "touch reports a missing entry as missing",
            !ok(
                name,
                "touch",
                store.touch("contract:untouched", &[], MINUTE).await
            )
        );
        ensure!(
            name,
            "touch makes no entry",
            ok(name, "get", store.get("contract:untouched").await).is_none()
        );
    } else {
        refused(
            name,
            "touch",
            store.touch("contract:short", &[], MINUTE).await,
        );
        report.lacks("touch");
    }
    // Past the ttl given to `put`, whatever the entry's own (a second and a half: a store
    // may count in whole seconds, and keep an item up to a second past its time).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ensure!(
        name,
        "an entry expires after the ttl it was put with",
        ok(name, "get", store.get("contract:short").await).is_none()
    );
    report.kept("entries expire after the ttl they were put with");
    if can.touch {
        ensure!(
            name,
            "a touched entry lives on",
            ok(name, "get", store.get("contract:touch").await).is_some()
        );
        if can.tag_purges {
            let target = PurgeTarget::Tag {
                tag: "t5",
                within: "contract:",
            };
            ok(
                name,
                "tag purge",
                store.purge(target, PurgeMode::Hard).await,
            );
            ensure!(
                name,
                "a touched entry's tags still find it",
                ok(name, "get", store.get("contract:touch").await).is_none()
            );
        }
        report.kept("touch extends an entry's life, tags included, and revives none");
    }
}

async fn prefixes(store: &dyn Store, report: &mut ContractReport) {
    let can = store.capabilities();
    let name = can.name;
    for (key, tags) in [
        ("contract:p:1", &[][..]),
        ("contract:p:2", &["t9"][..]),
        ("contract:q:1", &[][..]),
    ] {
        ok(
            name,
            "put",
            store
                .put(key, entry("p", tags), MINUTE, PutIf::Always)
                .await,
        );
    }
    if !can.prefix_purges {
        refused(
            name,
            "prefix purges",
            store.remove_prefix("contract:p:").await,
        );
        report.lacks("prefix purges");
        return;
    }
    let removed = ok(
        name,
        "prefix purge",
        store.remove_prefix("contract:p:").await,
    );
    ensure!(
        name,
        "a prefix purge counts what it took (or 0 where the store cannot count)",
        removed == if can.counts_purges { 2 } else { 0 },
        "{removed}"
    );
    let gone = |key| async move { ok(name, "get", store.get(key).await).is_none() };
    ensure!(
        name,
        "a prefix purge takes every key under it, tagged ones too",
        gone("contract:p:1").await && gone("contract:p:2").await
    );
    ensure!(
        name,
        "a prefix purge leaves other prefixes",
        !gone("contract:q:1").await
    );
    ok(
        name,
        "put",
        store
            .put("contract:p:1", entry("again", &[]), MINUTE, PutIf::Always)
            .await,
    );
    ensure!(
        name,
        "what is stored after a prefix purge stays",
        body(&ok(name, "get", store.get("contract:p:1").await)) == Some(b"again")
    );
    report.kept("prefix purges");

    let filter: &super::KeyFilter = &|key: &str| key.ends_with(":1");
    let filtered = PurgeTarget::Prefix {
        prefix: "contract:",
        filter: Some(filter),
    };
    if can.filtered_prefix_purges {
        ok(
            name,
            "put",
            store
                .put("contract:p:3", entry("p3", &[]), MINUTE, PutIf::Always)
                .await,
        );
        ok(
            name,
            "filtered prefix purge",
            store.purge(filtered, PurgeMode::Hard).await,
        );
        ensure!(
            name,
            "a filtered prefix purge takes what the filter accepts",
            gone("contract:p:1").await && gone("contract:q:1").await
        );
        ensure!(
            name,
            "a filtered prefix purge leaves what the filter refuses",
            !gone("contract:p:3").await
        );
        report.kept("prefix purges with a filter");
    } else {
        refused(
            name,
            "prefix purges with a filter",
            store.purge(filtered, PurgeMode::Hard).await,
        );
        report.lacks("prefix purges with a filter");
    }

    let soft = PurgeTarget::Prefix {
        prefix: "contract:p:",
        filter: None,
    };
    ok(
        name,
        "put",
        store
            .put("contract:p:4", entry("p4", &[]), MINUTE, PutIf::Always)
            .await,
    );
    if can.soft_purges {
        ok(
            name,
            "soft prefix purge",
            store.purge(soft, PurgeMode::Soft).await,
        );
        let kept = ok(name, "get", store.get("contract:p:4").await);
        ensure!(
            name,
            "a soft prefix purge keeps its entries, stale",
            kept.is_some_and(|kept| !kept.is_fresh(SystemTime::now()))
        );
    } else {
        refused(
            name,
            "soft purges",
            store.purge(soft, PurgeMode::Soft).await,
        );
    }
}

async fn tags(store: &dyn Store, report: &mut ContractReport) {
    let can = store.capabilities();
    let name = can.name;
    let put = async |key: &str, entry: Arc<CachedResponse>| {
        ok(
            name,
            "put",
            store.put(key, entry, MINUTE, PutIf::Always).await,
        )
    };
    let get = async |key: &str| ok(name, "get", store.get(key).await);
    put("contract:t", entry("tagged", &["t2"])).await;
    let target = PurgeTarget::Tag {
        tag: "t2",
        within: "contract:",
    };
    if !can.tag_purges {
        refused(
            name,
            "tag purges",
            store.purge(target, PurgeMode::Hard).await,
        );
        report.lacks("tag purges");
        return;
    }
    let purged = ok(
        name,
        "tag purge",
        store.purge(target, PurgeMode::Hard).await,
    );
    ensure!(
        name,
        "a tag purge counts what it took (or 0 where the store cannot count)",
        purged == u64::from(can.counts_purges),
        "{purged}"
    );
    ensure!(
        name,
        "a tag purge takes the tagged entry",
        get("contract:t").await.is_none()
    );
    put("contract:t", entry("again", &["t2"])).await;
    ensure!(
        name,
        "what is stored after a tag purge stays",
        body(&get("contract:t").await) == Some(b"again")
    );
    put("other:t", entry("elsewhere", &["t2"])).await;
    ok(
        name,
        "tag purge",
        store.purge(target, PurgeMode::Hard).await,
    );
    ensure!(
        name,
        "a tag purge takes the tagged entries within its prefix",
        get("contract:t").await.is_none()
    );
    ensure!(
        name,
        "a tag purge leaves the tagged entries outside its prefix",
        body(&get("other:t").await) == Some(b"elsewhere")
    );
    ok(name, "remove", store.remove("other:t").await);
    report.kept("tag purges, within a prefix");
    if can.soft_purges {
        put("contract:soft", entry("soft", &["t3"])).await;
        let target = PurgeTarget::Tag {
            tag: "t3",
            within: "contract:",
        };
        ok(
            name,
            "soft tag purge",
            store.purge(target, PurgeMode::Soft).await,
        );
        let soft = get("contract:soft").await;
        ensure!(
            name,
            "a soft tag purge keeps the entry, stale",
            soft.is_some_and(|soft| soft.body == "soft" && !soft.is_fresh(SystemTime::now()))
        );
        report.kept("soft purges of tags and prefixes");
    }
}

async fn counters(store: &dyn Store, report: &mut ContractReport) {
    let name = store.capabilities().name;
    let Some(counters) = store.counters() else {
        refused(
            name,
            "counters",
            store.increment("contract:counter", 2, MINUTE).await,
        );
        report.lacks("counters");
        return;
    };
    let add = async |delta| {
        ok(
            name,
            "increment",
            counters.increment("contract:counter", delta, MINUTE).await,
        )
    };
    ensure!(name, "a counter starts at 0", add(2).await == 2);
    let concurrent = (0..8).map(|_| counters.increment("contract:counter", 1, MINUTE));
    for result in futures_util::future::join_all(concurrent).await {
        ok(name, "increment under contention", result);
    }
    ensure!(
        name,
        "concurrent increments are never lost",
        add(3).await == 13
    );
    ensure!(
        name,
        "counter reads the counter",
        ok(name, "counter", counters.counter("contract:counter").await) == Some(13)
    );
    ensure!(
        name,
        "a counter is no entry",
        ok(name, "get", store.get("contract:absent-counter").await).is_none()
            && ok(
                name,
                "counter",
                counters.counter("contract:absent-counter").await
            )
            .is_none()
    );
    report.kept("counters, atomic under contention");
}

/// The fill locks of the protocol, with `a` and `b` as two processes' handles.
async fn fill_locks(a: &dyn SharedStore, b: &dyn SharedStore, report: &mut ContractReport) {
    let name = a.capabilities().name;
    if !a.capabilities().fill_locks {
        report.lacks("fill locks");
        return;
    }
    let second = Duration::from_secs(1);
    let lock = ok(name, "lock_fill", a.lock_fill("contract:l", MINUTE).await);
    ensure!(name, "a free fill lock is taken", lock.is_some());
    ensure!(
        name,
        "a held fill lock is not taken again",
        ok(name, "lock_fill", b.lock_fill("contract:l", MINUTE).await).is_none()
    );
    ensure!(
        name,
        "get_or_lock_fill reports a lock another holds",
        matches!(
            ok(
                name,
                "get_or_lock_fill",
                b.get_or_lock_fill("contract:l", MINUTE).await
            ),
            Lookup::Held
        )
    );
    // Released only by its holder.
    let stranger = super::FillLock::unique();
    ok(
        name,
        "unlock_fill",
        b.unlock_fill("contract:l", stranger).await,
    );
    ensure!(
        name,
        "a fill lock is released only by its holder's token",
        ok(name, "lock_fill", b.lock_fill("contract:l", MINUTE).await).is_none()
    );
    ok(
        name,
        "unlock_fill",
        a.unlock_fill("contract:l", lock.expect("checked")).await,
    );
    let relocked = ok(
        name,
        "get_or_lock_fill",
        b.get_or_lock_fill("contract:l", second).await,
    );
    ensure!(
        name,
        "a released fill lock is taken again (get_or_lock_fill takes it on a miss)",
        matches!(relocked, Lookup::Locked(_))
    );
    // It expires by itself.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = ok(name, "lock_fill", a.lock_fill("contract:l", MINUTE).await);
    ensure!(name, "a fill lock expires after its ttl", after.is_some());
    ok(
        name,
        "unlock_fill",
        a.unlock_fill("contract:l", after.expect("checked")).await,
    );
    ok(
        name,
        "put",
        a.put("contract:l", entry("l", &[]), MINUTE, PutIf::Always)
            .await,
    );
    ensure!(
        name,
        "get_or_lock_fill finds an entry",
        matches!(
            ok(
                name,
                "get_or_lock_fill",
                b.get_or_lock_fill("contract:l", MINUTE).await
            ),
            Lookup::Found(_)
        )
    );
    ok(name, "clear", a.clear().await);
    report.kept("fill locks: one holder, released by its token, expiring by themselves");
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
    let single = run_contract(a).await;
    report.checked.extend(single.checked);
    report.unsupported.extend(single.unsupported);
    report.unsupported.dedup();
    report
}
