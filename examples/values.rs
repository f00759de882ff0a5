//! Caching values, as aiocache's `@cached` does: a slow lookup cached with a TTL computed
//! from its result, a call that bypasses the cache, a forced refresh, an invalidation by
//! tag, and the stats.
//!
//! ```text
//! cargo run --example values
//! ```
//!
//! On the memory store; a `RedisStore` or `TieredStore` in `ValueCache::new` shares the
//! values between instances, with one lookup per key at a time across all of them.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tower_response_cache::value::{ValueCache, ValueKey};
use tower_response_cache::{CacheLayer, MemoryStore};

/// What the slow service answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Weather {
    city: String,
    celsius: f32,
    /// How settled the forecast is: the more, the longer it may be kept.
    confidence: u8,
}

static LOOKUPS: AtomicU32 = AtomicU32::new(0);

/// A slow upstream call (half a second).
async fn fetch_weather(city: &str) -> Result<Weather, String> {
    LOOKUPS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(Weather {
        city: city.to_owned(),
        celsius: 21.5,
        confidence: 80,
    })
}

/// The cached lookup: one upstream call per city at a time, kept for a minute per ten
/// points of confidence, tagged with the city.
async fn weather(
    values: &ValueCache,
    city: &str,
    bypass: bool,
    refresh: bool,
) -> Result<Weather, String> {
    values
        .cached(ValueKey::new("weather").arg(city))
        .ttl_fn(|weather: &Weather| Duration::from_secs(6 * u64::from(weather.confidence)))
        .tags([format!("city:{city}")])
        .bypass(bypass)
        .refresh(refresh)
        .load(|| fetch_weather(city))
        .await
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    // The response cache's layer, and a value cache beside it in the same store.
    let layer = CacheLayer::new(MemoryStore::new(64 << 20));
    let values = layer.values("values");

    let timed = |label: &'static str, started: Instant, weather: &Weather| {
        println!(
            "{label:<28} {:>5.0?}  {} {}°C  (upstream calls: {})",
            started.elapsed(),
            weather.city,
            weather.celsius,
            LOOKUPS.load(Ordering::SeqCst)
        );
    };
    let started = Instant::now();
    let first = weather(&values, "Lyon", false, false).await?;
    timed("first call (miss)", started, &first);
    let started = Instant::now();
    let second = weather(&values, "Lyon", false, false).await?;
    timed("second call (hit)", started, &second);
    let started = Instant::now();
    let bypassed = weather(&values, "Lyon", true, false).await?;
    timed("bypass (not read, not kept)", started, &bypassed);
    let started = Instant::now();
    let refreshed = weather(&values, "Lyon", false, true).await?;
    timed("forced refresh", started, &refreshed);
    let purged = layer
        .handle()
        .invalidate_tag("city:Lyon")
        .await
        .map_err(|error| error.to_string())?;
    println!("invalidated the tag city:Lyon: {purged} value(s)");
    let started = Instant::now();
    let after = weather(&values, "Lyon", false, false).await?;
    timed("after the invalidation", started, &after);

    let stats = values.stats();
    println!(
        "hits {}, misses {}, loads {}, sets {}, hit ratio {:.2}",
        stats.hits,
        stats.misses,
        stats.loads,
        stats.sets,
        stats.hit_ratio()
    );
    Ok(())
}
