//! Waiting for a shared store's fill lock: one engine for the fetches of responses and the
//! loads of values. The process that takes the lock fetches for every process sharing the
//! store; the others back off (5 ms, doubling to 100 ms) and read again until the entry
//! appears, the lock is theirs, or half the coalescing timeout has passed — waking at once
//! when a waiter of the same flight hands a lock it took to the flight's leader.

use std::time::Duration;

use super::{FillLease, FlightGuard};

/// What the engine asks of the fetch it serves.
pub(crate) trait LockWait {
    /// What a read finds: the entry (or value) another process stored.
    type Found;

    /// Tries the lock once: `Ok(Some)` when taken, `Ok(None)` when another process holds
    /// it, `Err(())` when the store failed (reported by the caller): the fetch then goes on
    /// without the lock.
    async fn attempt(&mut self) -> Result<Option<FillLease>, ()>;

    /// Reads again what another process's fetch may have stored meanwhile.
    async fn reread(&mut self) -> Option<Self::Found>;
}

/// How the wait ended.
pub(crate) enum Locked<F> {
    /// This process holds the lock (taken, or handed over by a waiter of its flight).
    Taken(FillLease),
    /// Another process's fetch stored what this one needs.
    Found(F),
    /// The store failed: fetch without the lock.
    Without,
    /// Half the coalescing timeout passed: fetch without the lock, and say so.
    TimedOut,
}

/// Takes the fill lock for the flight `guard` leads, or finds what another process
/// fetched, within `timeout`.
pub(crate) async fn take_fill_lock<W: LockWait>(
    wait: &mut W,
    guard: &FlightGuard,
    timeout: Duration,
) -> Locked<W::Found> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(5);
    let mut waited = false;
    // Made at the first back-off only: most fetches take the lock at once.
    let mut wake = None;
    loop {
        if let Some(lease) = guard.take_handoff() {
            // A waiter's lookup missed and took the lock a moment ago: no second read.
            return Locked::Taken(lease);
        }
        match wait.attempt().await {
            Ok(Some(lease)) => {
                // After waiting, the holder before may have just written the entry and let
                // go. (On the first try the miss was a moment ago: no second read.)
                if waited && let Some(found) = wait.reread().await {
                    drop(lease);
                    return Locked::Found(found);
                }
                return Locked::Taken(lease);
            }
            Ok(None) => {}
            Err(()) => return Locked::Without,
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Locked::TimedOut;
        }
        // A lock a waiter of this flight takes meanwhile wakes the sleep.
        let pause = delay.min(deadline - now);
        let wake = wake.get_or_insert_with(|| guard.handoff_wake());
        if let Some(wake) = wake.as_deref() {
            if tokio::time::timeout(pause, wake.notified()).await.is_ok() {
                continue;
            }
        } else {
            tokio::time::sleep(pause).await;
        }
        delay = (delay * 2).min(Duration::from_millis(100));
        waited = true;
        if let Some(found) = wait.reread().await {
            return Locked::Found(found);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;

    use super::*;
    use crate::MemoryStore;
    use crate::coalesce::{Coalescer, Join};
    use crate::store::{FillLock, Store};

    /// A fetch whose lock attempts and reads answer as scripted, counting them.
    struct Scripted {
        attempts: VecDeque<Result<bool, ()>>,
        reads: VecDeque<Option<&'static str>>,
        store: Arc<dyn Store>,
        tried: usize,
        read: usize,
    }

    impl Scripted {
        fn new(attempts: &[Result<bool, ()>], reads: &[Option<&'static str>]) -> Self {
            Self {
                attempts: attempts.iter().copied().collect(),
                reads: reads.iter().copied().collect(),
                store: Arc::new(MemoryStore::new(1 << 20)),
                tried: 0,
                read: 0,
            }
        }
    }

    impl LockWait for Scripted {
        type Found = &'static str;

        async fn attempt(&mut self) -> Result<Option<FillLease>, ()> {
            self.tried += 1;
            let taken = self.attempts.pop_front().unwrap_or(Ok(false))?;
            let lease = FillLease::new(Arc::clone(&self.store), "k", FillLock::new("t"));
            Ok(taken.then_some(lease))
        }

        async fn reread(&mut self) -> Option<&'static str> {
            self.read += 1;
            self.reads.pop_front().flatten()
        }
    }

    fn leader(coalescer: &Arc<Coalescer>) -> FlightGuard {
        match coalescer.join("k") {
            Join::Leader(guard) => guard,
            _ => panic!("the first to join leads"),
        }
    }

    fn coalescer() -> Arc<Coalescer> {
        Arc::new(Coalescer::new(
            Duration::from_secs(10),
            Duration::from_secs(5),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn a_free_lock_is_taken_at_once_without_a_read() {
        let coalescer = coalescer();
        let guard = leader(&coalescer);
        let mut wait = Scripted::new(&[Ok(true)], &[]);
        let locked = take_fill_lock(&mut wait, &guard, Duration::from_secs(1)).await;
        assert!(matches!(locked, Locked::Taken(_)));
        assert_eq!((wait.tried, wait.read), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_lock_is_waited_out_until_the_entry_appears() {
        let coalescer = coalescer();
        let guard = leader(&coalescer);
        let mut wait = Scripted::new(&[Ok(false), Ok(false)], &[None, Some("theirs")]);
        let start = tokio::time::Instant::now();
        let locked = take_fill_lock(&mut wait, &guard, Duration::from_secs(1)).await;
        assert!(matches!(locked, Locked::Found("theirs")));
        assert_eq!((wait.tried, wait.read), (2, 2));
        // Backing off 5 ms, then 10 ms.
        assert_eq!(start.elapsed(), Duration::from_millis(15));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lock_taken_after_waiting_reads_once_more_before_fetching() {
        let coalescer = coalescer();
        let guard = leader(&coalescer);
        let mut wait = Scripted::new(&[Ok(false), Ok(true)], &[None, Some("just stored")]);
        let locked = take_fill_lock(&mut wait, &guard, Duration::from_secs(1)).await;
        assert!(matches!(locked, Locked::Found("just stored")));
        let mut wait = Scripted::new(&[Ok(false), Ok(true)], &[None, None]);
        let locked = take_fill_lock(&mut wait, &guard, Duration::from_secs(1)).await;
        assert!(matches!(locked, Locked::Taken(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_store_or_a_long_wait_fetches_without_the_lock() {
        let coalescer = coalescer();
        let guard = leader(&coalescer);
        let mut failing = Scripted::new(&[Err(())], &[]);
        let locked = take_fill_lock(&mut failing, &guard, Duration::from_secs(1)).await;
        assert!(matches!(locked, Locked::Without));
        let mut held = Scripted::new(&[], &[]);
        let start = tokio::time::Instant::now();
        let locked = take_fill_lock(&mut held, &guard, Duration::from_secs(1)).await;
        assert!(matches!(locked, Locked::TimedOut));
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        // 5, 10, 20, 40, 80 ms, then every 100 ms: a bounded number of attempts.
        assert!(held.tried <= 16, "{} attempts", held.tried);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lock_handed_over_by_a_waiter_ends_the_wait_at_once() {
        let coalescer = coalescer();
        let guard = leader(&coalescer);
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(1 << 20));
        let handing = Arc::clone(&coalescer);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(7)).await;
            let lease = FillLease::new(store, "k", FillLock::new("waiter's"));
            assert!(
                handing.hand_off("k", lease).is_none(),
                "taken by the leader"
            );
        });
        let mut wait = Scripted::new(&[], &[]);
        let start = tokio::time::Instant::now();
        let locked = take_fill_lock(&mut wait, &guard, Duration::from_secs(1)).await;
        assert!(matches!(locked, Locked::Taken(_)));
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(7),
            "woken, not polled"
        );
    }
}
