use super::*;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};

fn coalescer() -> Arc<Coalescer> {
    Arc::new(Coalescer::with_capacity(
        4,
        Duration::from_millis(300),
        Duration::from_secs(60),
    ))
}

fn entry() -> Arc<CachedResponse> {
    Arc::new(CachedResponse::new(
        StatusCode::OK,
        HeaderMap::new(),
        Bytes::from_static(b"x"),
    ))
}

#[tokio::test]
async fn waiters_receive_the_leaders_entry_and_the_map_empties() {
    let coalescer = coalescer();
    let Join::Leader(guard) = coalescer.join("k") else {
        panic!("first is the leader")
    };
    let Join::Waiter(rx) = coalescer.join("k") else {
        panic!("second waits")
    };
    let waiting = tokio::spawn(wait(rx, Duration::from_secs(5)));
    let landed = guard.ready(entry());
    assert!(matches!(waiting.await.unwrap(), Some(Landing::Ready(_))));
    let Join::Waiter(late) = coalescer.join("k") else {
        panic!("landed, not yet written: joinable")
    };
    assert!(matches!(
        wait(late, Duration::from_secs(5)).await,
        Some(Landing::Ready(_))
    ));
    drop(landed);
    assert_eq!(coalescer.in_flight(), 0);
}

#[tokio::test]
async fn a_dropped_leader_lets_waiters_fall_back() {
    let coalescer = coalescer();
    let Join::Leader(guard) = coalescer.join("k") else {
        panic!()
    };
    let Join::Waiter(rx) = coalescer.join("k") else {
        panic!()
    };
    drop(guard);
    assert!(matches!(
        wait(rx, Duration::from_secs(5)).await,
        Some(Landing::Fallback { retry: true })
    ));
    assert_eq!(coalescer.in_flight(), 0);
    assert!(
        matches!(coalescer.join("k"), Join::Leader(_)),
        "not marked hit-for-miss"
    );
}

#[tokio::test]
async fn waiting_is_bounded() {
    let coalescer = coalescer();
    let Join::Leader(_guard) = coalescer.join("k") else {
        panic!()
    };
    let Join::Waiter(rx) = coalescer.join("k") else {
        panic!()
    };
    assert!(wait(rx, Duration::from_millis(20)).await.is_none());
}

#[tokio::test]
async fn a_landed_entry_a_request_rejects_gives_way_to_a_new_flight() {
    let coalescer = coalescer();
    let Join::Leader(guard) = coalescer.join("k") else {
        panic!("leader");
    };
    let old = entry();
    let landed = guard.ready(Arc::clone(&old));
    // Joinable until written: a plain join is answered by the landed entry…
    let Join::Waiter(rx) = coalescer.join("k") else {
        panic!("waiter of the landed flight");
    };
    assert!(matches!(
        wait(rx, Duration::from_secs(1)).await,
        Some(Landing::Ready(_))
    ));
    // …but a request that may not take it leads the next fetch…
    let Join::Leader(next) = coalescer.join_past("k", &old) else {
        panic!("leader of the next flight");
    };
    // …which the others then wait for, even once the old entry is written.
    drop(landed);
    let Join::Waiter(rx) = coalescer.join_past("k", &old) else {
        panic!("waiter of the next flight");
    };
    let new = entry();
    drop(next.ready(Arc::clone(&new)));
    let Some(Landing::Ready(got)) = wait(rx, Duration::from_secs(1)).await else {
        panic!("the next flight's entry");
    };
    assert!(Arc::ptr_eq(&got, &new));
    assert_eq!(coalescer.in_flight(), 0);
}

#[test]
fn not_cacheable_keys_are_not_serialized_for_a_while() {
    let coalescer = coalescer();
    let Join::Leader(guard) = coalescer.join("k") else {
        panic!()
    };
    let Join::Waiter(rx) = coalescer.join("k") else {
        panic!()
    };
    guard.fallback(true);
    assert!(
        matches!(rx.borrow().clone(), Landing::Fallback { retry: false }),
        "waiters fetch alone"
    );
    assert!(matches!(coalescer.join("k"), Join::Alone));
    std::thread::sleep(Duration::from_millis(400));
    assert!(matches!(coalescer.join("k"), Join::Leader(_)));
}

#[test]
fn a_stale_flight_is_not_waited_for() {
    let coalescer = Arc::new(Coalescer::with_capacity(
        4,
        Duration::ZERO,
        Duration::from_millis(50),
    ));
    let Join::Leader(stalled) = coalescer.join("k") else {
        panic!()
    };
    std::thread::sleep(Duration::from_millis(80));
    let Join::Leader(fresh) = coalescer.join("k") else {
        panic!("a new flight replaces the stale one")
    };
    drop(stalled);
    assert_eq!(
        coalescer.in_flight(),
        1,
        "the stale leader's landing leaves the new flight alone"
    );
    drop(fresh);
    assert_eq!(coalescer.in_flight(), 0);
}

#[tokio::test]
async fn a_forgotten_flight_sends_its_waiters_to_a_new_leader() {
    let coalescer = coalescer();
    let Join::Leader(old) = coalescer.join("k") else {
        panic!()
    };
    let Join::Waiter(rx) = coalescer.join("k") else {
        panic!()
    };
    coalescer.forget("k");
    assert!(matches!(
        wait(rx, Duration::from_secs(5)).await,
        Some(Landing::Fallback { retry: true })
    ));
    let Join::Leader(new) = coalescer.join("k") else {
        panic!("a new flight")
    };
    drop(old.ready(entry()));
    assert_eq!(
        coalescer.in_flight(),
        1,
        "the old leader's landing leaves the new flight"
    );
    drop(new);
    assert_eq!(coalescer.in_flight(), 0);
}

#[tokio::test]
async fn a_hand_off_wakes_the_leader_whether_it_listened_before_or_after() {
    let coalescer = coalescer();
    let store: Arc<dyn Store> = Arc::new(crate::MemoryStore::new(1 << 20));
    let lease = |key: &str| FillLease::new(Arc::clone(&store), key, FillLock::new("t"));
    let woken = |wake: Arc<Notify>| async move {
        tokio::time::timeout(Duration::from_secs(5), wake.notified())
            .await
            .is_ok()
    };
    // Listening, then handed off.
    let Join::Leader(first) = coalescer.join("a") else {
        panic!()
    };
    let wake = first.handoff_wake().expect("the flight is there");
    assert!(coalescer.hand_off("a", lease("a")).is_none());
    assert!(woken(wake).await);
    assert_eq!(
        first
            .take_handoff()
            .map(|lease| lease.key().to_owned())
            .as_deref(),
        Some("a")
    );
    // Handed off, then listening: the wait ends at once all the same.
    let Join::Leader(second) = coalescer.join("b") else {
        panic!()
    };
    assert!(coalescer.hand_off("b", lease("b")).is_none());
    assert!(woken(second.handoff_wake().unwrap()).await);
    assert!(second.take_handoff().is_some());
    // No flight to take it, or one that has a lock already: given back.
    assert!(coalescer.hand_off("c", lease("c")).is_some());
    assert!(coalescer.hand_off("b", lease("b")).is_none());
    assert!(coalescer.hand_off("b", lease("b")).is_some());
    drop((first, second));
    assert_eq!(coalescer.in_flight(), 0);
}

#[test]
fn the_map_is_bounded() {
    let coalescer = coalescer();
    let guards: Vec<_> = (0..4)
        .map(|i| match coalescer.join(&format!("k{i}")) {
            Join::Leader(guard) => guard,
            _ => panic!("room for four"),
        })
        .collect();
    assert!(matches!(coalescer.join("k5"), Join::Alone));
    drop(guards);
    assert_eq!(coalescer.in_flight(), 0);
}

/// A request notes how many flights of its key's stripe ended before its lookup: the end
/// of its own key's flight (or of a variant's) moves the count, the end of flights of other
/// keys of the route mostly does not, so their misses do not send it to the store again.
#[test]
fn ended_flights_are_counted_by_the_stripe_of_their_key() {
    let coalescer = coalescer();
    let key = "app:GET:example.com/items?page=1";
    let noted = coalescer.ended(key);
    let others: Vec<String> = (2..40)
        .map(|page| format!("app:GET:example.com/items?page={page}"))
        .collect();
    for other in &others {
        let Join::Leader(guard) = coalescer.join(other) else {
            panic!()
        };
        drop(guard);
    }
    let moved = others
        .iter()
        .filter(|other| stripe(other) == stripe(key))
        .count() as u64;
    assert!(moved < 4, "38 other keys, {moved} in the key's stripe");
    assert_eq!(coalescer.ended(key), noted + moved);
    // The key's own flight, and a variant's.
    for flight in [key.to_owned(), format!("{key}#v3")] {
        let before = coalescer.ended(key);
        let Join::Leader(guard) = coalescer.join(&flight) else {
            panic!()
        };
        drop(guard);
        assert_eq!(coalescer.ended(key), before + 1, "{flight}");
    }
}
