//! Where the cache reads the time: freshness, ages, stale windows and the times entries
//! are stored at all come from one [`Clock`].
//!
//! The system clock is the default. A test that is about time gives the layer (or the
//! value cache) a [`TokioClock`], which follows Tokio's clock — paused and advanced at will
//! under `#[tokio::test(start_paused = true)]` — so that "an entry fresh for one second is
//! stale after it" takes no second at all:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use std::time::Duration;
//! use tower_response_cache::clock::{Clock, TokioClock};
//!
//! let clock = TokioClock::new();
//! let before = clock.now();
//! tokio::time::sleep(Duration::from_secs(3600)).await; // paused: returns at once
//! assert_eq!(clock.now().duration_since(before).unwrap(), Duration::from_secs(3600));
//! # }
//! ```
//!
//! The stores keep their own time for what they expire (a `MemoryStore` drops an entry
//! after its TTL by the system's clock, Redis and Memcached by their own): under a clock
//! that runs ahead of the system's, an entry is stale by the cache's clock before it leaves
//! its store. A [`MemoryStore::with_clock`](crate::MemoryStore::with_clock) expires entries
//! by the clock it is given: with the layer's, a test on paused time sees entries leave
//! the store as its TTL passes, too.

use std::fmt;
use std::time::SystemTime;

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The time now.
    fn now(&self) -> SystemTime;
}

/// The system's clock ([`SystemTime::now`]): the default.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The time as Tokio's clock tells it: the system's time when the clock was made, plus
/// what Tokio's clock has advanced since — which a paused runtime advances only when told
/// (`tokio::time::advance`) or when every task waits on a timer (auto-advance). Outside a
/// paused runtime it runs with the system's clock.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    system: SystemTime,
    tokio: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads the system's time now, and Tokio's from then on.
    pub fn new() -> Self {
        Self {
            system: SystemTime::now(),
            tokio: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.system + self.tokio.elapsed()
    }
}
