//! A circuit breaker for remote stores: after consecutive failures the store is skipped
//! for a cool-down, so that a dead backend adds no latency; then one request probes it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Closed (calls go through), open (calls are skipped until the cool-down ends), or
/// half-open (one probe goes through; its result closes or re-opens the circuit).
#[derive(Debug)]
pub(crate) struct Breaker {
    start: Instant,
    threshold: u32,
    cooldown: Duration,
    consecutive_failures: AtomicU32,
    /// Milliseconds after `start` until which the circuit is open; 0 when closed.
    open_until_ms: AtomicU64,
    probing: AtomicBool,
    /// When the current probe began: a probe whose caller was cancelled never reports back,
    /// so after a cool-down another probe may go.
    probe_started_ms: AtomicU64,
    /// How often the circuit opened, and closed again.
    opened: AtomicU64,
    closed: AtomicU64,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures (0 disables the breaker), for `cooldown`.
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            start: Instant::now(),
            threshold,
            cooldown,
            consecutive_failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            probe_started_ms: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        }
    }

    /// How often the circuit opened and closed so far.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn transitions(&self) -> (u64, u64) {
        (
            self.opened.load(Ordering::Relaxed),
            self.closed.load(Ordering::Relaxed),
        )
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a call may go to the backend now.
    pub(crate) fn allow(&self) -> bool {
        let open_until = self.open_until_ms.load(Ordering::Acquire);
        if open_until == 0 {
            return true;
        }
        let now = self.now_ms();
        if now < open_until {
            return false;
        }
        // Cool-down over: exactly one caller probes — or another, if the last probe has not
        // reported back within a cool-down (its caller was cancelled).
        let cooldown = u64::try_from(self.cooldown.as_millis()).unwrap_or(u64::MAX);
        let abandoned = self.probing.load(Ordering::Acquire)
            && now.saturating_sub(self.probe_started_ms.load(Ordering::Acquire)) >= cooldown;
        let take = if abandoned {
            true
        } else {
            self.probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        };
        if take {
            self.probe_started_ms.store(now, Ordering::Release);
        }
        take
    }

    /// Whether calls are being skipped.
    pub(crate) fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) != 0
    }

    pub(crate) fn on_success(&self) {
        self.consecutive_failures.store(0, Ordering::Release);
        if self.open_until_ms.swap(0, Ordering::AcqRel) != 0 {
            self.closed.fetch_add(1, Ordering::Relaxed);
            tracing::info!("cache store answered again; circuit closed");
        }
        self.probing.store(false, Ordering::Release);
    }

    pub(crate) fn on_failure(&self) {
        if self.threshold == 0 {
            return;
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        let probe_failed = self.probing.swap(false, Ordering::AcqRel);
        if failures >= self.threshold || probe_failed {
            let until = self
                .now_ms()
                .saturating_add(u64::try_from(self.cooldown.as_millis()).unwrap_or(u64::MAX))
                .max(1);
            if self.open_until_ms.swap(until, Ordering::AcqRel) == 0 {
                self.opened.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    failures,
                    cooldown_ms = self.cooldown.as_millis() as u64,
                    "cache store failing; skipping it for the cool-down"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_probes_once_after_the_cooldown() {
        let breaker = Breaker::new(3, Duration::from_millis(200));
        for _ in 0..2 {
            assert!(breaker.allow());
            breaker.on_failure();
        }
        assert!(breaker.allow(), "two failures: still closed");
        breaker.on_failure();
        assert!(breaker.is_open());
        assert!(!breaker.allow(), "open: skipped");
        std::thread::sleep(Duration::from_millis(250));
        assert!(breaker.allow(), "the probe");
        assert!(!breaker.allow(), "only one probe at a time");
        breaker.on_failure();
        assert!(!breaker.allow(), "a failed probe re-opens");
        std::thread::sleep(Duration::from_millis(250));
        assert!(breaker.allow());
        breaker.on_success();
        assert!(!breaker.is_open());
        assert!(breaker.allow() && breaker.allow(), "closed again");
        // A failed probe re-opens an open circuit: one opening, one closing.
        assert_eq!(breaker.transitions(), (1, 1));
    }

    #[test]
    fn a_probe_that_never_reports_back_does_not_keep_the_circuit_open() {
        let breaker = Breaker::new(1, Duration::from_millis(100));
        breaker.on_failure();
        std::thread::sleep(Duration::from_millis(150));
        assert!(
            breaker.allow(),
            "the probe (whose caller is then cancelled)"
        );
        assert!(!breaker.allow());
        std::thread::sleep(Duration::from_millis(150));
        assert!(breaker.allow(), "another probe after a cool-down");
        breaker.on_success();
        assert!(!breaker.is_open());
    }

    #[test]
    fn success_resets_the_count_and_zero_disables() {
        let breaker = Breaker::new(2, Duration::from_secs(60));
        breaker.on_failure();
        breaker.on_success();
        breaker.on_failure();
        assert!(breaker.allow());
        let disabled = Breaker::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            disabled.on_failure();
        }
        assert!(disabled.allow());
    }
}
