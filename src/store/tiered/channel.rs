//! The invalidation channel over Redis pub/sub: its messages, the subscriber that applies
//! other instances' evictions, and the heartbeat that confirms the channel works.

use super::*;

/// The invalidation channel: its name, and whether it is sharded.
#[derive(Debug)]
pub(super) struct Channel {
    pub(super) name: String,
    /// Cleared when [`ChannelMode::Auto`] finds that the cluster has no sharded pub/sub.
    pub(super) sharded: AtomicBool,
}

impl Channel {
    pub(super) fn sharded(&self) -> bool {
        self.sharded.load(Ordering::Relaxed)
    }

    pub(super) async fn publish<C: PubsubInterface + Sync>(
        &self,
        client: &C,
        message: String,
    ) -> Result<i64, fred::error::Error> {
        if self.sharded() {
            client.spublish(self.name.as_str(), message).await
        } else {
            client.publish(self.name.as_str(), message).await
        }
    }

    /// Subscribes `subscriber` (again: it is harmless when subscribed already).
    pub(super) async fn subscribe(
        &self,
        subscriber: &fred::clients::Client,
    ) -> Result<(), fred::error::Error> {
        if self.sharded() {
            subscriber.ssubscribe(self.name.as_str()).await
        } else {
            subscriber.subscribe(self.name.as_str()).await
        }
    }
}

/// Whether `error` is Redis not knowing a command.
pub(super) fn unknown_command(error: &fred::error::Error) -> bool {
    error
        .details()
        .to_ascii_lowercase()
        .contains("unknown command")
}

/// What a message asks the other instances to evict from L1.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Evict<'a> {
    Key(&'a str),
    Prefix(&'a str),
    Tag(&'a str),
    All,
    /// Not an eviction: instance `from`'s heartbeat `number`.
    Heartbeat(u64),
}

impl Evict<'_> {
    pub(super) fn encode(&self, from: u64) -> String {
        match self {
            Self::Key(key) => format!("{from:016x} k {key}"),
            Self::Prefix(prefix) => format!("{from:016x} p {prefix}"),
            Self::Tag(tag) => format!("{from:016x} t {tag}"),
            Self::All => format!("{from:016x} c"),
            Self::Heartbeat(number) => format!("{from:016x} h {number}"),
        }
    }
}

/// A message: who sent it, and what it asks. `None` for one this version cannot read.
pub(super) fn decode(message: &str) -> Option<(u64, Evict<'_>)> {
    let (from, rest) = message.split_once(' ')?;
    let from = u64::from_str_radix(from, 16).ok()?;
    let (op, arg) = rest.split_once(' ').unwrap_or((rest, ""));
    let evict = match op {
        "k" => Evict::Key(arg),
        "p" => Evict::Prefix(arg),
        "t" => Evict::Tag(arg),
        "c" => Evict::All,
        "h" => Evict::Heartbeat(arg.parse().ok()?),
        _ => return None,
    };
    Some((from, evict))
}

/// Receives the channel's messages: applies the others' evictions, confirms this
/// instance's heartbeats, and doubts on reconnection or lag.
pub(super) async fn listen(
    subscriber: fred::clients::Client,
    channel: Arc<Channel>,
    id: u64,
    health: Weak<Health>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    loop {
        tokio::select! {
            message = messages.recv() => {
                let Some(health) = health.upgrade() else { return };
                match message {
                    Ok(message) => {
                        let text = match &message.value {
                            Value::String(text) => text.to_string(),
                            Value::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                            _ => continue,
                        };
                        apply(&health, id, &text).await;
                    }
                    Err(RecvError::Lagged(_)) => health.doubt(FlushReason::Lagged),
                    Err(RecvError::Closed) => {
                        health.doubt(FlushReason::Reconnected);
                        return;
                    }
                }
            }
            reconnect = reconnects.recv() => {
                let Some(health) = health.upgrade() else { return };
                // Messages may have been lost while disconnected; the subscription is
                // the connection's, so it is made again.
                health.doubt(FlushReason::Reconnected);
                if matches!(reconnect, Err(RecvError::Closed)) {
                    return;
                }
                let _ = channel.subscribe(&subscriber).await;
            }
        }
    }
}

/// Applies one message.
pub(super) async fn apply(health: &Health, id: u64, text: &str) {
    let Some((from, evict)) = decode(text) else {
        return;
    };
    if let Evict::Heartbeat(number) = evict {
        if from == id {
            health.confirmed(number);
        }
        return;
    }
    if from == id {
        // Evicted here already, when it was published.
        return;
    }
    match evict {
        Evict::Key(key) => health.invalidated_key(key),
        _ => {
            health.invalidated();
            health.purged_elsewhere();
        }
    }
    let l1 = &health.l1;
    match evict {
        Evict::Key(key) => {
            let _ = l1.remove(key).await;
        }
        Evict::Prefix(prefix) => {
            let _ = l1.remove_prefix(prefix).await;
        }
        Evict::Tag(tag) => {
            let _ = l1
                .purge(PurgeTarget::Tag { tag, within: "" }, PurgeMode::Hard)
                .await;
        }
        Evict::All => health.cleared(),
        Evict::Heartbeat(_) => {}
    }
}

/// Publishes this instance's heartbeats, doubts when they stop coming back, and watches
/// the generation marker that a flush or an empty restart of Redis loses.
pub(super) async fn heartbeat(
    redis: RedisStore,
    subscriber: fred::clients::Client,
    channel: Arc<Channel>,
    marker: String,
    id: u64,
    every: Duration,
    health: Weak<Health>,
) {
    let mut generation: Option<String> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // No command may hold the heartbeat up: a dead Redis must not keep L1 trusted.
    let limit = every.max(Duration::from_millis(50));
    let resubscribe_every =
        Duration::from_millis(health.upgrade().map_or(500, |h| h.max_staleness_ms));
    let mut last_subscribed = Instant::now();
    loop {
        tick.tick().await;
        let Some(health) = health.upgrade() else {
            return;
        };
        let stale = health
            .now_ms()
            .saturating_sub(health.confirmed_ms.load(Ordering::Acquire))
            > health.max_staleness_ms;
        if stale && health.trusted.load(Ordering::Acquire) {
            health.doubt(FlushReason::Heartbeat);
        }
        if stale && last_subscribed.elapsed() >= resubscribe_every {
            // Heartbeats that do not come back may mean a subscription the server ended
            // without the connection dropping (a sharded channel's slot moved, its shard
            // failed over): made again, on its own task, so that the beat goes on.
            last_subscribed = Instant::now();
            let (subscriber, channel) = (subscriber.clone(), Arc::clone(&channel));
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(resubscribe_every, channel.subscribe(&subscriber)).await;
            });
        }
        let client = redis
            .pool()
            .next()
            .with_options(&fred::types::config::Options {
                timeout: Some(limit),
                fail_fast: true,
                max_attempts: Some(1),
                ..fred::types::config::Options::default()
            });
        // The generation marker: set once by whichever instance comes first; a changed or
        // missing one means Redis lost its data (and so, possibly, invalidations).
        let current: Result<Option<String>, _> = client.get(marker.as_str()).await;
        match current {
            Ok(Some(current)) if generation.as_deref() == Some(current.as_str()) => {}
            Ok(current) => {
                if generation.is_some() {
                    health.doubt(FlushReason::Flushed);
                }
                let fresh = format!("{:016x}", random_id());
                let set: Result<Option<String>, _> = client
                    .set(
                        marker.as_str(),
                        fresh.as_str(),
                        None::<Expiration>,
                        Some(SetOptions::NX),
                        false,
                    )
                    .await;
                generation = match (current, set) {
                    (Some(current), _) => Some(current),
                    (None, Ok(_)) => client.get(marker.as_str()).await.ok().flatten(),
                    (None, Err(_)) => None,
                };
            }
            // Unreachable: the heartbeats below fail too, and staleness decides.
            Err(_) => continue,
        }
        let number = health.sent.fetch_add(1, Ordering::AcqRel) + 1;
        let beat = Evict::Heartbeat(number).encode(id);
        let published = channel.publish(&client, beat).await;
        if published.is_err() && health.trusted.load(Ordering::Acquire) {
            health.doubt(FlushReason::Heartbeat);
        }
    }
}
