use super::*;
use crate::store::StoreExt;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};

fn entry(body: &'static [u8]) -> Arc<CachedResponse> {
    Arc::new(CachedResponse::new(
        StatusCode::OK,
        HeaderMap::new(),
        Bytes::from_static(body),
    ))
}

#[tokio::test]
async fn get_returns_the_same_allocation() {
    let store = MemoryStore::new(1 << 20);
    let stored = entry(b"hello");
    store
        .put(
            "k",
            Arc::clone(&stored),
            Duration::from_secs(60),
            PutIf::Always,
        )
        .await
        .unwrap();
    let got = store.get("k").await.unwrap().unwrap();
    assert!(Arc::ptr_eq(&got, &stored));
    assert_eq!(got.body.as_ptr(), stored.body.as_ptr());
}

#[tokio::test]
async fn entries_expire_after_their_own_ttl() {
    let store = MemoryStore::new(1 << 20);
    store
        .put(
            "short",
            entry(b"a"),
            Duration::from_millis(50),
            PutIf::Always,
        )
        .await
        .unwrap();
    store
        .put("long", entry(b"b"), Duration::from_secs(60), PutIf::Always)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(store.get("short").await.unwrap().is_none());
    assert!(store.get("long").await.unwrap().is_some());
}

/// A store on Tokio's paused clock: everything that reads an entry sees it gone once the
/// advanced time reaches its TTL, though no real time passed and moka's timer never ran.
#[tokio::test(start_paused = true)]
async fn a_store_with_a_clock_expires_entries_by_it() {
    use crate::clock::TokioClock;
    use crate::store::PurgeMode;
    let store = MemoryStore::with_clock(1 << 20, TokioClock::new());
    let ttl = Duration::from_secs(10);
    for key in ["a", "b", "c", "d"] {
        store
            .put(key, entry(b"x"), ttl, PutIf::Always)
            .await
            .unwrap();
    }
    StoreExt::increment(&store, "n", 5, ttl).await.unwrap();
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(store.get("a").await.unwrap().is_some(), "not yet");
    assert!(
        store.touch("b", &[], ttl).await.unwrap(),
        "b renewed for 10 s more"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Reads.
    assert!(store.get("a").await.unwrap().is_none());
    assert!(store.get_now("a").unwrap().unwrap().is_none());
    assert!(store.get("b").await.unwrap().is_some(), "touched");
    assert_eq!(store.keys(), ["b"]);
    assert_eq!(StoreExt::counter(&store, "n").await.unwrap(), None);
    // Writes: an expired entry is absent, not revived, and a counter starts again.
    assert!(!store.touch("c", &[], ttl).await.unwrap());
    assert!(store.get("c").await.unwrap().is_none());
    assert!(
        store
            .put("d", entry(b"new"), ttl, PutIf::Absent)
            .await
            .unwrap()
    );
    assert_eq!(store.get("d").await.unwrap().unwrap().body, "new");
    assert_eq!(StoreExt::increment(&store, "n", 1, ttl).await.unwrap(), 1);
    // Purges do not count what had expired.
    let purged = store
        .purge(
            PurgeTarget::Keys(&["a".to_owned(), "c".to_owned()]),
            PurgeMode::Hard,
        )
        .await
        .unwrap();
    assert_eq!(purged, 0);
    store.run_pending_tasks();
    assert!(
        store.removals().expired >= 2,
        "the dropped entries count as expired: {:?}",
        store.removals()
    );
}

#[tokio::test]
async fn an_older_entry_never_replaces_a_newer_one() {
    let store = MemoryStore::new(1 << 20);
    let aged = |body: &'static [u8], seconds_ago: u64| {
        let mut entry = (*entry(body)).clone();
        entry.stored_at = std::time::SystemTime::now() - Duration::from_secs(seconds_ago);
        Arc::new(entry)
    };
    let ttl = Duration::from_secs(60);
    assert!(
        store
            .put("k", aged(b"old", 10), ttl, PutIf::Newer)
            .await
            .unwrap()
    );
    assert!(
        store
            .put("k", aged(b"new", 1), ttl, PutIf::Newer)
            .await
            .unwrap()
    );
    assert!(
        !store
            .put("k", aged(b"older", 5), ttl, PutIf::Newer)
            .await
            .unwrap()
    );
    assert_eq!(store.get("k").await.unwrap().unwrap().body, "new");
}

#[tokio::test]
async fn touch_extends_and_does_not_revive() {
    let store = MemoryStore::new(1 << 20);
    store
        .put("k", entry(b"a"), Duration::from_millis(80), PutIf::Always)
        .await
        .unwrap();
    assert!(
        store
            .touch("k", &[], Duration::from_secs(60))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(store.get("k").await.unwrap().is_some());
    assert!(
        !store
            .touch("missing", &[], Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(store.get("missing").await.unwrap().is_none());
}

#[tokio::test]
async fn remove_prefix_and_clear() {
    let store = MemoryStore::new(1 << 20);
    for key in ["a:1", "a:2", "b:1"] {
        store
            .put(key, entry(b"x"), Duration::from_secs(60), PutIf::Always)
            .await
            .unwrap();
    }
    assert_eq!(store.remove_prefix("a:").await.unwrap(), 2);
    assert!(store.get("b:1").await.unwrap().is_some());
    assert!(store.remove("b:1").await.unwrap());
    store
        .put("c", entry(b"x"), Duration::from_secs(60), PutIf::Always)
        .await
        .unwrap();
    store.clear().await.unwrap();
    assert!(store.get("c").await.unwrap().is_none());
}

fn tagged(body: &'static [u8], tags: &[&str]) -> Arc<CachedResponse> {
    let mut entry = (*entry(body)).clone();
    entry.ttl = Duration::from_secs(60);
    entry.tags = tags.iter().map(|tag| (*tag).to_owned()).collect();
    Arc::new(entry)
}

#[tokio::test]
async fn a_tag_purge_takes_its_entries_within_the_scope_only() {
    let store = MemoryStore::new(1 << 20);
    let ttl = Duration::from_secs(60);
    store
        .put("a:1", tagged(b"1", &["user:4"]), ttl, PutIf::Always)
        .await
        .unwrap();
    store
        .put(
            "a:2",
            tagged(b"2", &["user:42", "users"]),
            ttl,
            PutIf::Always,
        )
        .await
        .unwrap();
    store
        .put(
            "a:3",
            tagged(b"3", &["user:4", "users"]),
            ttl,
            PutIf::Always,
        )
        .await
        .unwrap();
    store
        .put("b:1", tagged(b"4", &["user:4"]), ttl, PutIf::Always)
        .await
        .unwrap();
    let purge = |tag| PurgeTarget::Tag { tag, within: "a:" };
    assert_eq!(
        store.purge(purge("user:4"), PurgeMode::Hard).await.unwrap(),
        2
    );
    let mut keys = store.keys();
    keys.sort();
    assert_eq!(keys, ["a:2", "b:1"], "user:42 and the other namespace stay");
    assert_eq!(
        store.purge(purge("user:4"), PurgeMode::Hard).await.unwrap(),
        0
    );
    assert_eq!(
        store.purge(purge("users"), PurgeMode::Hard).await.unwrap(),
        1
    );
}

#[tokio::test]
async fn the_tag_index_follows_entries_out_of_the_store() {
    let store = MemoryStore::new(1 << 20);
    let ttl = Duration::from_secs(60);
    store
        .put("k", tagged(b"1", &["a", "b"]), ttl, PutIf::Always)
        .await
        .unwrap();
    assert_eq!(store.tag_index_len(), (2, 1));
    // Replaced by an entry with other tags: the old ones leave.
    store
        .put("k", tagged(b"2", &["b", "c"]), ttl, PutIf::Always)
        .await
        .unwrap();
    store.run_pending_tasks();
    assert_eq!(store.tag_index_len(), (2, 1));
    let purge = |tag| PurgeTarget::Tag { tag, within: "" };
    assert_eq!(store.purge(purge("a"), PurgeMode::Hard).await.unwrap(), 0);
    // Replaced by an untagged entry: nothing left.
    store
        .put("k", entry(b"3"), ttl, PutIf::Always)
        .await
        .unwrap();
    store.run_pending_tasks();
    assert_eq!(store.tag_index_len(), (0, 0));
    // Removed, expired, cleared.
    store
        .put("r", tagged(b"4", &["r"]), ttl, PutIf::Always)
        .await
        .unwrap();
    store.remove("r").await.unwrap();
    store
        .put(
            "e",
            tagged(b"5", &["e"]),
            Duration::from_millis(20),
            PutIf::Always,
        )
        .await
        .unwrap();
    store
        .put("c", tagged(b"6", &["c"]), ttl, PutIf::Always)
        .await
        .unwrap();
    // moka's timer wheel hands expired entries over within about a second.
    for _ in 0..40 {
        store.run_pending_tasks();
        if store.tag_index_len() == (1, 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.tag_index_len(), (1, 1), "only c is left");
    store.clear().await.unwrap();
    store.run_pending_tasks();
    assert_eq!(store.tag_index_len(), (0, 0));
}

#[tokio::test]
async fn the_tag_index_stays_bounded_under_churn() {
    let store = MemoryStore::new(256 * 1024);
    for i in 0..20_000 {
        let ttl = if i % 2 == 0 {
            Duration::from_millis(1)
        } else {
            Duration::from_secs(60)
        };
        let tags = [format!("t{}", i % 1000), "all".to_owned()];
        let mut entry = (*entry(b"x")).clone();
        entry.tags = tags.to_vec();
        store
            .put(&format!("k{i}"), Arc::new(entry), ttl, PutIf::Always)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    store.run_pending_tasks();
    let (tags, keys) = store.tag_index_len();
    assert_eq!(
        keys as u64,
        store.entry_count(),
        "one record per tagged entry held"
    );
    assert!(tags <= 1001, "{tags}");
}

#[tokio::test]
async fn a_soft_purge_makes_entries_stale_without_reviving_or_extending_them() {
    let store = MemoryStore::new(1 << 20);
    let mut fresh = (*tagged(b"1", &["t"])).clone();
    fresh.stale_while_revalidate = Duration::from_secs(30);
    store
        .put(
            "k",
            Arc::new(fresh),
            Duration::from_millis(300),
            PutIf::Always,
        )
        .await
        .unwrap();
    let soft = PurgeTarget::Tag {
        tag: "t",
        within: "",
    };
    assert_eq!(store.purge(soft, PurgeMode::Soft).await.unwrap(), 1);
    let got = store.get("k").await.unwrap().unwrap();
    assert!(!got.is_fresh(SystemTime::now()));
    assert!(got.may_serve_while_revalidating(SystemTime::now()));
    assert_eq!(got.tags, ["t"], "still found by its tag");
    assert_eq!(
        store.purge(soft, PurgeMode::Soft).await.unwrap(),
        0,
        "stale already"
    );
    // Its life in the store is what it was: 300 ms, not the stale window.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store.get("k").await.unwrap().is_none());
    // A soft purge of a key that is gone revives nothing.
    let keys = ["k".to_owned()];
    assert_eq!(
        store
            .purge(PurgeTarget::Keys(&keys), PurgeMode::Soft)
            .await
            .unwrap(),
        0
    );
    assert!(store.get("k").await.unwrap().is_none());
}

#[tokio::test]
async fn a_filtered_prefix_purge_takes_what_the_filter_accepts() {
    let store = MemoryStore::new(1 << 20);
    for key in ["a:1", "a:2", "a:22", "b:2"] {
        store
            .put(
                key,
                tagged(b"x", &[]),
                Duration::from_secs(60),
                PutIf::Always,
            )
            .await
            .unwrap();
    }
    let filter = |key: &str| key.ends_with('2');
    let target = PurgeTarget::Prefix {
        prefix: "a:",
        filter: Some(&filter),
    };
    assert_eq!(store.purge(target, PurgeMode::Hard).await.unwrap(), 2);
    let mut keys = store.keys();
    keys.sort();
    assert_eq!(keys, ["a:1", "b:2"]);
}

#[tokio::test]
async fn removals_are_counted_by_cause() {
    let store = MemoryStore::new(1 << 20);
    let ttl = Duration::from_secs(60);
    store
        .put("a", entry(b"1"), ttl, PutIf::Always)
        .await
        .unwrap();
    store
        .put("a", entry(b"2"), ttl, PutIf::Always)
        .await
        .unwrap();
    store.remove("a").await.unwrap();
    store
        .put(
            "short",
            entry(b"3"),
            Duration::from_millis(10),
            PutIf::Always,
        )
        .await
        .unwrap();
    // moka's timer wheel hands expired entries over within about a second.
    for _ in 0..40 {
        store.run_pending_tasks();
        if store.removals().expired == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let removals = store.removals();
    assert_eq!(
        (
            removals.replaced,
            removals.removed,
            removals.expired,
            removals.evicted
        ),
        (1, 1, 1, 0)
    );

    let small = MemoryStore::new(64 * 1024);
    let body: &'static [u8] = Box::leak(vec![0u8; 4096].into_boxed_slice());
    for i in 0..64 {
        small
            .put(&format!("big{i}"), entry(body), ttl, PutIf::Always)
            .await
            .unwrap();
    }
    small.run_pending_tasks();
    let removals = small.removals();
    assert_eq!(
        removals.evicted + small.entry_count(),
        64,
        "every entry is held or counted as evicted: {removals:?}"
    );
    assert!(removals.evicted > 40, "{removals:?}");
}

#[tokio::test]
async fn capacity_is_counted_in_bytes() {
    let store = MemoryStore::new(64 * 1024);
    let body: &'static [u8] = Box::leak(vec![0u8; 4096].into_boxed_slice());
    for i in 0..64 {
        store
            .put(
                &format!("k{i}"),
                entry(body),
                Duration::from_secs(60),
                PutIf::Always,
            )
            .await
            .unwrap();
    }
    store.run_pending_tasks();
    assert!(
        store.weighted_size() <= 64 * 1024,
        "{}",
        store.weighted_size()
    );
    assert!(store.entry_count() < 16, "{}", store.entry_count());
}
