//! The checks of one capability each, as [`run_contract`](super::run_contract) and
//! [`run_shared_contract`](super::run_shared_contract) call them.

use super::*;

/// Many writers of one key at once, each with its own `stored_at`, all `PutIf::Newer`: the
/// newest is what the key holds, whatever the order they reach the store in.
pub(super) async fn ordered_writes_race(store: &dyn Store, report: &mut ContractReport) {
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
        let held = get(store, &key).await;
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

pub(super) async fn expiry_and_touch(store: &dyn Store, report: &mut ContractReport) {
    let can = store.capabilities();
    let name = can.name;
    let second = Duration::from_secs(1);
    put(store, "contract:short", entry("short", &[]), second).await;
    ensure!(
        name,
        "an entry is found within its ttl",
        get(store, "contract:short").await.is_some()
    );
    if can.touch {
        put(store, "contract:touch", entry("touch", &["t5"]), second).await;
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
            get(store, "contract:untouched").await.is_none()
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
        get(store, "contract:short").await.is_none()
    );
    report.kept("entries expire after the ttl they were put with");
    if can.touch {
        ensure!(
            name,
            "a touched entry lives on",
            get(store, "contract:touch").await.is_some()
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
                get(store, "contract:touch").await.is_none()
            );
        }
        report.kept("touch extends an entry's life, tags included, and revives none");
    }
}

pub(super) async fn prefixes(store: &dyn Store, report: &mut ContractReport) {
    let can = store.capabilities();
    let name = can.name;
    for (key, tags) in [
        ("contract:p:1", &[][..]),
        ("contract:p:2", &["t9"][..]),
        ("contract:q:1", &[][..]),
    ] {
        put(store, key, entry("p", tags), MINUTE).await;
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
    let gone = |key| async move { get(store, key).await.is_none() };
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
    put(store, "contract:p:1", entry("again", &[]), MINUTE).await;
    ensure!(
        name,
        "what is stored after a prefix purge stays",
        body(&get(store, "contract:p:1").await) == Some(b"again")
    );
    report.kept("prefix purges");

    let filter: &crate::store::KeyFilter = &|key: &str| key.ends_with(":1");
    let filtered = PurgeTarget::Prefix {
        prefix: "contract:",
        filter: Some(filter),
    };
    if can.filtered_prefix_purges {
        put(store, "contract:p:3", entry("p3", &[]), MINUTE).await;
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
    put(store, "contract:p:4", entry("p4", &[]), MINUTE).await;
    if can.soft_purges {
        ok(
            name,
            "soft prefix purge",
            store.purge(soft, PurgeMode::Soft).await,
        );
        let kept = get(store, "contract:p:4").await;
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

pub(super) async fn tags(store: &dyn Store, report: &mut ContractReport) {
    let can = store.capabilities();
    let name = can.name;
    let put = async |key: &str, entry: Arc<CachedResponse>| put(store, key, entry, MINUTE).await;
    let get = async |key: &str| get(store, key).await;
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

pub(super) async fn counters(store: &dyn Store, report: &mut ContractReport) {
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
        get(store, "contract:absent-counter").await.is_none()
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
pub(super) async fn fill_locks(
    a: &dyn SharedStore,
    b: &dyn SharedStore,
    report: &mut ContractReport,
) {
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
    let stranger = crate::store::FillLock::unique();
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

/// The one step that ends a fill ([`SharedStore::put_filled`]), when the store offers it:
/// it writes and releases the lock when no purge was recorded since the mark, keeps a
/// newer entry, indexes the entry's tags for a later purge, and does nothing once another
/// handle has purged since the mark.
pub(super) async fn put_filled(
    store_a: &dyn Store,
    a: &dyn SharedStore,
    b: &dyn SharedStore,
    report: &mut ContractReport,
) {
    let name = a.capabilities().name;
    let locks = a.capabilities().fill_locks;
    // A store that learns the mark as it reads: read once.
    ok(name, "get", store_a.get("contract:f").await);
    let Some(mark) = a.purge_mark() else {
        return;
    };
    let probe = Fill::new("contract:f", entry("f", &[]), MINUTE, mark);
    if a.put_filled(probe).is_none() {
        // Not offered: fills take the long way, which the other checks hold to the
        // contract. (No capability is missing: nothing is refused.)
        return;
    }
    let (filled, _) = fill_under_lock(a, "contract:f", entry("filled", &["tf"]), mark).await;
    ensure!(
        name,
        "put_filled stores when no purge was recorded since the mark",
        filled == Filled::Stored,
        "{filled:?}"
    );
    ensure!(
        name,
        "what put_filled stores, another handle finds",
        get(b, "contract:f")
            .await
            .is_some_and(|got| got.body == "filled")
    );
    if let Some(lock) = ok(name, "lock_fill", b.lock_fill("contract:f", MINUTE).await) {
        ok(name, "unlock_fill", b.unlock_fill("contract:f", lock).await);
    } else {
        ensure!(name, "put_filled releases the fill lock", !locks);
    }
    // An older write does not replace the newer entry.
    let older = Fill::new("contract:f", aged("older", 30), MINUTE, mark);
    let filled = ok(
        name,
        "put_filled",
        a.put_filled(older).expect("offered").await,
    );
    ensure!(
        name,
        "put_filled keeps a newer entry",
        filled == Filled::Superseded
            && get(b, "contract:f")
                .await
                .is_some_and(|got| got.body == "filled"),
        "{filled:?}"
    );
    // The tag was indexed: a tag purge by the other handle takes the entry.
    if a.capabilities().tag_purges {
        let target = PurgeTarget::Tag {
            tag: "tf",
            within: "contract:",
        };
        ok(name, "tag purge", b.purge(target, PurgeMode::Hard).await);
        ensure!(
            name,
            "a tag purge takes what put_filled stored with the tag",
            get(b, "contract:f").await.is_none()
        );
    } else {
        ok(name, "remove", b.remove("contract:f").await);
    }
    // A purge since the mark: nothing is done, and the lock stays held.
    let (filled, lock) = fill_under_lock(a, "contract:g", entry("late", &[]), mark).await;
    ensure!(
        name,
        "put_filled does nothing after a purge since the mark",
        filled == Filled::Unchecked && get(b, "contract:g").await.is_none(),
        "{filled:?}"
    );
    if let Some(lock) = lock {
        ensure!(
            name,
            "put_filled that did nothing keeps the fill lock",
            ok(name, "lock_fill", b.lock_fill("contract:g", MINUTE).await).is_none()
        );
        ok(name, "unlock_fill", a.unlock_fill("contract:g", lock).await);
    }
    report.kept("one-step fills: checked, written with their tags and unlocked at once");
}

/// Takes `key`'s fill lock (when the store has fill locks) and ends a fill of `entry` under
/// it with `put_filled`: what that did, and the lock.
async fn fill_under_lock(
    a: &dyn SharedStore,
    key: &str,
    entry: Arc<CachedResponse>,
    mark: u64,
) -> (Filled, Option<crate::store::FillLock>) {
    let name = a.capabilities().name;
    let lock = if a.capabilities().fill_locks {
        ok(name, "lock_fill", a.lock_fill(key, MINUTE).await)
    } else {
        None
    };
    let mut fill = Fill::new(key, entry, MINUTE, mark);
    if let Some(lock) = &lock {
        fill = fill.lock(key, lock);
    }
    let filled = ok(
        name,
        "put_filled",
        a.put_filled(fill).expect("offered").await,
    );
    (filled, lock)
}
