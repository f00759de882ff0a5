//! Commands: the server of a key (rendezvous hashing), a connection of its pool through
//! the breaker and within the timeouts, and the protocol's helpers.

use super::*;

impl MemcachedStore {
    /// The server `key` lives on: rendezvous hashing.
    pub(super) fn server_for(&self, key: &str) -> &Server {
        &self.inner.servers[self.server_index(key)]
    }

    /// The index of the server `key` lives on: the highest `xxh3(server, key)`.
    pub(super) fn server_index(&self, key: &str) -> usize {
        if self.inner.servers.len() == 1 {
            return 0;
        }
        (0..self.inner.servers.len())
            .max_by_key(|&i| {
                let mut hasher = xxhash_rust::xxh3::Xxh3::new();
                hasher.update(self.inner.servers[i].name.as_bytes());
                hasher.update(b"\0");
                hasher.update(key.as_bytes());
                hasher.digest()
            })
            .expect("at least one server")
    }

    /// Runs `run` on a connection of `key`'s server, through the breaker and within the
    /// command timeout. A connection whose command failed or timed out is dropped.
    pub(super) async fn command<T>(
        &self,
        key: &str,
        run: impl AsyncFnOnce(&mut Client) -> Result<T, async_memcached::Error>,
    ) -> Result<T, StoreError> {
        self.command_on(self.server_for(key), run).await
    }

    /// [`command`](Self::command) on `server`.
    pub(super) async fn command_on<T>(
        &self,
        server: &Server,
        run: impl AsyncFnOnce(&mut Client) -> Result<T, async_memcached::Error>,
    ) -> Result<T, StoreError> {
        let inner = &self.inner;
        if !server.breaker.allow() {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "memcached server skipped: circuit open after consecutive failures",
            ));
        }
        // A free connection, waiting (within the command timeout) while all are in use. The
        // permit is released after the connection (declared first, dropped last), so that
        // a permit always finds one unlocked.
        let Ok(permit) = tokio::time::timeout(inner.command_timeout, server.idle.acquire()).await
        else {
            // Congestion here, not a fault of the server: the breaker is left alone.
            return Err(StoreError::new(
                StoreErrorKind::Timeout,
                "no memcached connection free within the command timeout",
            ));
        };
        let _permit = permit.expect("the semaphore is never closed");
        let count = server.connections.len();
        let start = server.next.fetch_add(1, Ordering::Relaxed);
        let free = (0..count).find_map(|i| server.connections[(start + i) % count].try_lock().ok());
        let mut connection = match free {
            Some(connection) => connection,
            None => server.connections[start % count].lock().await,
        };
        let outcome = tokio::time::timeout(inner.command_timeout + inner.connect_timeout, async {
            if connection.as_ref().is_none_or(Client::is_closed) {
                let made = tokio::time::timeout(inner.connect_timeout, Client::new(&server.dsn))
                    .await
                    .map_err(|_| {
                        StoreError::new(StoreErrorKind::Timeout, "memcached connect timed out")
                    })?
                    .map_err(memcached_error)?;
                *connection = Some(made);
            }
            let client = connection.as_mut().expect("connected above");
            tokio::time::timeout(inner.command_timeout, run(client))
                .await
                .map_err(|_| StoreError::new(StoreErrorKind::Timeout, "memcached timed out"))?
                .map_err(memcached_error)
        })
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::new(
                StoreErrorKind::Timeout,
                "memcached timed out",
            ))
        });
        match &outcome {
            Ok(_) => server.breaker.on_success(),
            Err(_) => {
                // Cut short or failed: the connection's state is unknown.
                *connection = None;
                server.breaker.on_failure();
            }
        }
        outcome
    }
}

/// A TTL as memcached's protocol takes it: seconds (rounded up, so that a short TTL does
/// not become 0, "never expires"), or past 30 days an absolute Unix time.
pub(super) fn protocol_ttl(ttl: Duration) -> i64 {
    let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    if seconds <= RELATIVE_TTL_LIMIT {
        return i64::try_from(seconds).unwrap_or(i64::MAX);
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    i64::try_from(now.saturating_add(seconds)).unwrap_or(i64::MAX)
}

/// Rewrites the item under `key` by compare-and-swap (meta protocol): `change` gets its
/// bytes (`None` when there is none) and returns what to write, or `None` to leave it as
/// it is. Read again while other writers come between, 16 times at most: `Ok(false)` when
/// they always did.
pub(super) async fn compare_and_swap(
    client: &mut Client,
    key: &str,
    ttl: Option<i64>,
    mut change: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
) -> Result<bool, async_memcached::Error> {
    let ttl_flag = ttl.map(|ttl| format!("T{ttl}"));
    for _ in 0..16 {
        let current = client
            .meta_get(key.as_bytes(), false, None, Some(&["v", "c"]))
            .await?;
        let Some(bytes) = change(current.as_ref().and_then(|item| item.data.as_deref())) else {
            return Ok(true);
        };
        let Some(current) = current else {
            if added(
                client
                    .add(key.as_bytes(), bytes.as_slice(), ttl, None)
                    .await,
            )? {
                return Ok(true);
            }
            continue;
        };
        let cas = format!("C{}", current.cas.unwrap_or_default());
        let flags: Vec<&str> = std::iter::once(cas.as_str())
            .chain(ttl_flag.as_deref())
            .collect();
        match client
            .meta_set(key.as_bytes(), bytes.as_slice(), false, None, Some(&flags))
            .await
        {
            Ok(_) => return Ok(true),
            // Changed or removed since it was read: read again.
            Err(async_memcached::Error::Protocol(
                async_memcached::Status::Exists | async_memcached::Status::NotFound,
            )) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(false)
}

/// The items found under `keys` (the client reports none found as an error).
pub(super) async fn get_multi(
    client: &mut Client,
    keys: &[&str],
) -> Result<Vec<Value>, async_memcached::Error> {
    match client.get_multi(keys).await {
        Err(async_memcached::Error::Protocol(async_memcached::Status::NotFound)) => Ok(Vec::new()),
        found => found,
    }
}

/// Whether memcached takes `key` as it is.
pub(super) fn valid_key(key: &str) -> bool {
    key.len() <= MAX_KEY && key.bytes().all(|b| b > b' ' && b != 0x7f)
}

/// Now, in microseconds since the Unix epoch: where control values start.
pub(super) fn micros_now() -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.as_micros()).unwrap_or(u64::MAX)
}

/// A whole number memcached keeps as text.
pub(super) fn parse_number(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// `Ok(true)` when stored, `Ok(false)` for memcached's `NOT_STORED` (`add` of a key
/// present).
pub(super) fn added(
    result: Result<(), async_memcached::Error>,
) -> Result<bool, async_memcached::Error> {
    match result {
        Ok(()) => Ok(true),
        Err(async_memcached::Error::Protocol(async_memcached::Status::NotStored)) => Ok(false),
        Err(error) => Err(error),
    }
}

pub(super) fn memcached_error(error: async_memcached::Error) -> StoreError {
    let kind = match &error {
        async_memcached::Error::Connect(_) | async_memcached::Error::ConnectionClosed => {
            StoreErrorKind::Unavailable
        }
        async_memcached::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            StoreErrorKind::Timeout
        }
        async_memcached::Error::Io(_) => StoreErrorKind::Unavailable,
        _ => StoreErrorKind::Other,
    };
    StoreError::new(kind, format!("memcached: {error}"))
}
