//! What every `Store` promises, written once and run on each store (memory, Redis standalone
//! and cluster, tiered, memcached). Included with `#[path]` by each test crate; a store
//! says which optional operations it has.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use tower_response_cache::store::{PurgeMode, PurgeTarget, StoreErrorKind};
use tower_response_cache::store::{PutIf, StoreExt};
use tower_response_cache::{CachedResponse, store::Store};

/// The optional operations a store has.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Capabilities {
    /// `remove_prefix` and prefix purges.
    pub(crate) prefixes: bool,
    /// Tag purges (hard and soft).
    pub(crate) tags: bool,
    /// Whether a tag or prefix purge counts what it took (a store that cannot list keys
    /// returns 0).
    pub(crate) counts_purges: bool,
    /// `increment` / `counter`.
    pub(crate) counters: bool,
}

const MINUTE: Duration = Duration::from_secs(60);

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

fn body(entry: &Option<Arc<CachedResponse>>) -> Option<&[u8]> {
    entry.as_deref().map(|entry| &entry.body[..])
}

/// Runs the contract on `store` (empty, or at least without keys under `c:`).
pub(crate) async fn store_contract(store: &dyn Store, can: Capabilities) {
    // Absent, then present with everything it was stored with.
    assert!(store.get("c:a").await.unwrap().is_none(), "absent");
    let stored = entry("alpha", &["t1"]);
    store
        .put("c:a", Arc::clone(&stored), MINUTE, PutIf::Always)
        .await
        .unwrap();
    let found = store.get("c:a").await.unwrap().expect("stored");
    assert_eq!(found.status, stored.status);
    assert_eq!(found.body, stored.body);
    assert_eq!(found.ttl, stored.ttl);
    assert_eq!(found.tags, stored.tags);
    assert_eq!(
        found.headers.get_all("link").iter().collect::<Vec<_>>(),
        ["</a>", "</b>"],
        "every header line, in order"
    );
    // Overwritten.
    store
        .put("c:a", entry("beta", &[]), MINUTE, PutIf::Always)
        .await
        .unwrap();
    assert_eq!(body(&store.get("c:a").await.unwrap()), Some(&b"beta"[..]));

    // An older entry never replaces a newer one.
    let mut older = CachedResponse::clone(&entry("older", &[]));
    older.stored_at = SystemTime::now() - Duration::from_secs(30);
    assert!(
        !store
            .put("c:a", Arc::new(older), MINUTE, PutIf::Newer)
            .await
            .unwrap()
    );
    assert_eq!(body(&store.get("c:a").await.unwrap()), Some(&b"beta"[..]));
    assert!(
        store
            .put("c:a", entry("newer", &[]), MINUTE, PutIf::Newer)
            .await
            .unwrap()
    );
    assert_eq!(body(&store.get("c:a").await.unwrap()), Some(&b"newer"[..]));

    // Only if absent.
    assert!(
        !store
            .put("c:a", entry("no", &[]), MINUTE, PutIf::Absent)
            .await
            .unwrap()
    );
    assert!(
        store
            .put("c:b", entry("bee", &[]), MINUTE, PutIf::Absent)
            .await
            .unwrap()
    );
    assert_eq!(body(&store.get("c:b").await.unwrap()), Some(&b"bee"[..]));

    // Many at once, in order.
    let many = [
        ("c:m1".to_owned(), entry("m1", &[]), MINUTE),
        ("c:m2".to_owned(), entry("m2", &[]), MINUTE),
    ];
    store.put_many(&many).await.unwrap();
    let keys = ["c:m2".to_owned(), "c:absent".to_owned(), "c:m1".to_owned()];
    let found = store.get_many(&keys).await.unwrap();
    assert_eq!(
        found.iter().map(body).collect::<Vec<_>>(),
        [Some(&b"m2"[..]), None, Some(&b"m1"[..])]
    );

    // Removed once.
    assert!(store.remove("c:b").await.unwrap());
    assert!(!store.remove("c:b").await.unwrap());
    assert!(store.get("c:b").await.unwrap().is_none());
    let removed = store
        .remove_many(&["c:m1".to_owned(), "c:m2".to_owned(), "c:none".to_owned()])
        .await
        .unwrap();
    assert_eq!(removed, 2);

    // Expiry: after the TTL given to `put`, whatever the entry's own (a tiered store's
    // memory tier included).
    // (One second: memcached counts in whole seconds, and may keep an item up to a second
    // past its time.)
    store
        .put(
            "c:short",
            entry("short", &[]),
            Duration::from_secs(1),
            PutIf::Always,
        )
        .await
        .unwrap();
    assert!(store.get("c:short").await.unwrap().is_some());
    // Touch (sliding expiry): the touched entry outlives its first TTL; a missing one is
    // not made.
    store
        .put(
            "c:touch",
            entry("touch", &[]),
            Duration::from_secs(1),
            PutIf::Always,
        )
        .await
        .unwrap();
    assert!(store.touch("c:touch", &[], MINUTE).await.unwrap());
    assert!(!store.touch("c:untouched", &[], MINUTE).await.unwrap());
    assert!(store.get("c:untouched").await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(store.get("c:short").await.unwrap().is_none(), "expired");
    assert!(
        store.get("c:touch").await.unwrap().is_some(),
        "touched: lives on"
    );

    // Prefixes, or an honest "unsupported".
    store
        .put("c:p:1", entry("p", &[]), MINUTE, PutIf::Always)
        .await
        .unwrap();
    store
        .put("c:p:2", entry("p", &["t9"]), MINUTE, PutIf::Always)
        .await
        .unwrap();
    store
        .put("c:q:1", entry("q", &[]), MINUTE, PutIf::Always)
        .await
        .unwrap();
    match store.remove_prefix("c:p:").await {
        Ok(removed) => {
            assert!(can.prefixes, "removes prefixes");
            assert_eq!(removed, if can.counts_purges { 2 } else { 0 });
            assert!(store.get("c:p:1").await.unwrap().is_none());
            assert!(store.get("c:p:2").await.unwrap().is_none(), "tagged too");
            assert!(
                store.get("c:q:1").await.unwrap().is_some(),
                "another prefix"
            );
            // What is stored after the purge stays.
            store
                .put("c:p:1", entry("again", &[]), MINUTE, PutIf::Always)
                .await
                .unwrap();
            assert_eq!(
                body(&store.get("c:p:1").await.unwrap()),
                Some(&b"again"[..])
            );
            // Soft: stale, not gone.
            match store
                .purge(
                    PurgeTarget::Prefix {
                        prefix: "c:p:",
                        filter: None,
                    },
                    PurgeMode::Soft,
                )
                .await
            {
                Ok(_) => {
                    let found = store.get("c:p:1").await.unwrap().expect("kept, stale");
                    assert!(
                        !found.is_fresh(SystemTime::now()),
                        "stale after a soft purge"
                    );
                }
                Err(error) => assert_eq!(error.kind(), StoreErrorKind::Unsupported),
            }
        }
        Err(error) => {
            assert!(!can.prefixes, "{error}");
            assert_eq!(error.kind(), StoreErrorKind::Unsupported);
        }
    }

    // Tags, or an honest "unsupported".
    store
        .put("c:t", entry("tagged", &["t2"]), MINUTE, PutIf::Always)
        .await
        .unwrap();
    let target = PurgeTarget::Tag {
        tag: "t2",
        within: "c:",
    };
    match store.purge(target, PurgeMode::Hard).await {
        Ok(purged) => {
            assert!(can.tags, "purges tags");
            assert_eq!(purged, u64::from(can.counts_purges));
            assert!(store.get("c:t").await.unwrap().is_none());
            // Stored again after the purge: kept.
            store
                .put("c:t", entry("again", &["t2"]), MINUTE, PutIf::Always)
                .await
                .unwrap();
            assert_eq!(body(&store.get("c:t").await.unwrap()), Some(&b"again"[..]));
            // Only within its namespace.
            store
                .put("d:t", entry("elsewhere", &["t2"]), MINUTE, PutIf::Always)
                .await
                .unwrap();
            let target = PurgeTarget::Tag {
                tag: "t2",
                within: "c:",
            };
            store.purge(target, PurgeMode::Hard).await.unwrap();
            assert!(store.get("c:t").await.unwrap().is_none());
            assert_eq!(
                body(&store.get("d:t").await.unwrap()),
                Some(&b"elsewhere"[..])
            );
            store.remove("d:t").await.unwrap();
            // Soft: still there, stale from now on.
            store
                .put("c:soft", entry("soft", &["t3"]), MINUTE, PutIf::Always)
                .await
                .unwrap();
            let target = PurgeTarget::Tag {
                tag: "t3",
                within: "c:",
            };
            store.purge(target, PurgeMode::Soft).await.unwrap();
            let soft = store.get("c:soft").await.unwrap().expect("kept, stale");
            assert_eq!(&soft.body[..], b"soft");
            assert!(
                !soft.is_fresh(SystemTime::now()),
                "stale after a soft purge"
            );
        }
        Err(error) => {
            assert!(!can.tags, "{error}");
            assert_eq!(error.kind(), StoreErrorKind::Unsupported);
        }
    }

    // A soft purge of keys: still there, stale from now on; its life not extended.
    store
        .put("c:k", entry("k", &[]), MINUTE, PutIf::Always)
        .await
        .unwrap();
    let keys = ["c:k".to_owned(), "c:absent".to_owned()];
    let softened = store
        .purge(PurgeTarget::Keys(&keys), PurgeMode::Soft)
        .await
        .unwrap();
    assert_eq!(softened, 1, "the one present");
    let soft = store.get("c:k").await.unwrap().expect("kept, stale");
    assert_eq!(&soft.body[..], b"k");
    assert!(
        !soft.is_fresh(SystemTime::now()),
        "stale after a soft purge"
    );
    assert!(store.get("c:absent").await.unwrap().is_none(), "not made");

    // Counters, or an honest "unsupported".
    match store.increment("c:n", 2, MINUTE).await {
        Ok(value) => {
            assert!(can.counters, "counts");
            assert_eq!(value, 2);
            assert_eq!(store.increment("c:n", 3, MINUTE).await.unwrap(), 5);
            assert_eq!(store.counter("c:n").await.unwrap(), Some(5));
        }
        Err(error) => {
            assert!(!can.counters, "{error}");
            assert_eq!(error.kind(), StoreErrorKind::Unsupported);
        }
    }

    // Clear: nothing left.
    store
        .put("c:last", entry("last", &[]), MINUTE, PutIf::Always)
        .await
        .unwrap();
    store.clear().await.unwrap();
    assert!(store.get("c:last").await.unwrap().is_none());
    assert!(store.get("c:a").await.unwrap().is_none());
}
