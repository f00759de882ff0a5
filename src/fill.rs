//! The fill: a storable miss's copy of its body ([`Capture`]), and its write to the store
//! once complete ([`Sink`], [`PendingWrite`]) — inline or on a spawned task, fenced against
//! invalidations, ending the flight that waiters joined.
//!
//! The response body ([`CacheBody`](crate::CacheBody)) feeds the capture frame by frame and
//! tells it when the body ended; nothing here knows the body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::Method;

use crate::coalesce::{FillLease, Landed, Lead};
use crate::entry::CachedResponse;
use crate::fence::{Invalidations, Started};
use crate::observe::{EventKind, Funnel, Scope, StoreOperation, Timings};
use crate::outcome::Storing;
use crate::policy::NotStoredReason;
use crate::stats::Counters;
use crate::store::{Fill, Filled, PutIf, Store, StoreError, StoreErrorKind, StoreExt};

pub(crate) type WriteFuture = Pin<Box<dyn Future<Output = Storing> + Send>>;

/// A write to the store that is not abandoned: dropped before it completes (the client went
/// away during an inline write of a complete body), it finishes on a spawned task.
pub(crate) struct PendingWrite(Option<WriteFuture>);

impl PendingWrite {
    pub(crate) fn new(write: WriteFuture) -> Self {
        Self(Some(write))
    }

    /// Runs the write to completion — awaited here, or spawned if this is dropped first —
    /// and says what became of the entry.
    pub(crate) async fn run(mut self) -> Storing {
        std::future::poll_fn(|cx| Pin::new(&mut self).poll(cx)).await
    }
}

impl Future for PendingWrite {
    type Output = Storing;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Storing> {
        let Some(write) = self.0.as_mut() else {
            // Polled again after it completed: the result was taken.
            return Poll::Ready(Storing::Pending);
        };
        let storing = ready!(write.as_mut().poll(cx));
        self.0 = None;
        Poll::Ready(storing)
    }
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        if let Some(write) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            drop(runtime.spawn(write));
        }
    }
}

/// How a complete capture was handed to the store.
pub(crate) enum Handoff {
    /// Not at all: the body did not match its declared length.
    Abandoned(NotStoredReason),
    /// To a spawned task.
    Spawned,
    /// As a write to await.
    Inline(WriteFuture),
}

/// What a data frame did to the capture.
pub(crate) enum Progress {
    /// More of the body is to come.
    More,
    /// The body reached its declared length.
    Complete,
    /// The response cannot be stored after all.
    Abandon(NotStoredReason),
}

/// Where a captured entry goes, and the limits and counters that apply.
#[derive(Clone)]
pub(crate) struct Sink {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) funnel: Funnel,
    pub(crate) counters: Arc<Counters>,
    /// The request's method, for events.
    pub(crate) method: &'static Method,
    /// The request's span, told whether the response was stored.
    pub(crate) span: Option<tracing::Span>,
    pub(crate) max_body_size: usize,
    /// Write before the body ends, rather than on a spawned task.
    pub(crate) inline: bool,
    /// How much longer than its stale windows an entry with a validator is kept.
    pub(crate) keep: Duration,
    /// Recent invalidations, and where purges stood when this fetch started: an entry a
    /// purge covered since is not written (or is removed again).
    pub(crate) invalidations: Arc<Invalidations>,
    pub(crate) started: Started,
}

/// A storable response on its way to the client: the entry without its body, and the body
/// received so far.
pub(crate) struct Capture {
    key: String,
    entry: CachedResponse,
    /// The declared length (`Content-Length`, or an exact size hint), if any.
    expected: Option<u64>,
    /// The flight this fetch leads, if any: its waiters get the entry; and the shared
    /// store's fill lock, released once the entry is written.
    flight: Option<Lead>,
    sink: Sink,
    chunks: Vec<Bytes>,
    len: usize,
    done: bool,
}

impl Capture {
    pub(crate) fn new(
        key: String,
        entry: CachedResponse,
        expected: Option<u64>,
        flight: Option<Lead>,
        sink: Sink,
    ) -> Self {
        Self {
            key,
            entry,
            expected,
            flight,
            sink,
            chunks: Vec::new(),
            len: 0,
            done: false,
        }
    }

    /// Whether the body is complete already: declared empty.
    pub(crate) fn is_complete(&self) -> bool {
        self.expected == Some(0)
    }

    /// Keeps a reference to `data` until the body is complete.
    pub(crate) fn push(&mut self, data: &Bytes) -> Progress {
        self.len = self.len.saturating_add(data.len());
        if self.len > self.sink.max_body_size {
            return Progress::Abandon(NotStoredReason::TooLarge);
        }
        if !data.is_empty() {
            self.chunks.push(data.clone());
        }
        match self.expected {
            Some(expected) if self.len as u64 == expected => Progress::Complete,
            // More bytes than declared: a broken response, not one to replay.
            Some(expected) if self.len as u64 > expected => {
                Progress::Abandon(NotStoredReason::Incomplete)
            }
            _ => Progress::More,
        }
    }

    pub(crate) fn abandon(mut self: Box<Self>, reason: NotStoredReason) {
        self.done = true;
        if let Some(lead) = self.flight.take() {
            // A body too large or with trailers will be so next time too: hit-for-miss.
            let not_cacheable = matches!(
                reason,
                NotStoredReason::TooLarge | NotStoredReason::Trailers
            );
            lead.fallback(not_cacheable);
        }
        self.sink
            .record(EventKind::NotStored { reason }, Timings::default());
        Storing::No(reason).record(self.sink.span.as_ref());
    }

    /// Hands the complete entry to the store: spawned in the background, or returned to be
    /// awaited before the body ends (inline writes, or no runtime to spawn on). A body
    /// shorter than declared is not stored.
    pub(crate) fn finish(mut self: Box<Self>) -> Handoff {
        if self
            .expected
            .is_some_and(|expected| expected != self.len as u64)
        {
            self.abandon(NotStoredReason::Incomplete);
            return Handoff::Abandoned(NotStoredReason::Incomplete);
        }
        self.done = true;
        // One copy into an allocation of exactly the body's size: a chunk may be a slice of
        // a larger buffer (a connection's read buffer), which the store's byte accounting
        // would not see.
        let mut body = BytesMut::with_capacity(self.len);
        for chunk in self.chunks.drain(..) {
            body.extend_from_slice(&chunk);
        }
        let mut entry = std::mem::replace(
            &mut self.entry,
            CachedResponse::new(http::StatusCode::OK, http::HeaderMap::new(), Bytes::new()),
        );
        entry.body = body.freeze();
        set_content_length(&mut entry);
        entry.compact();
        let entry = Arc::new(entry);
        // Waiters are answered now; the flight stays joinable until the entry is written.
        let (landed, lease) = match self.flight.take() {
            Some(lead) => {
                let (landed, lease) = lead.ready(Arc::clone(&entry));
                (Some(landed), lease)
            }
            None => (None, None),
        };
        let key = std::mem::take(&mut self.key);
        match self.sink.write(key, entry, (landed, lease)) {
            Some(write) => Handoff::Inline(write),
            None => Handoff::Spawned,
        }
    }
}

/// Gives a stored response its `Content-Length` when it had none (a streamed body), so that
/// a HEAD hit announces the length a GET would get (RFC 9110 §8.6).
fn set_content_length(entry: &mut CachedResponse) {
    let status = entry.status;
    let bodiless = status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED;
    if !bodiless && !entry.headers.contains_key(http::header::CONTENT_LENGTH) {
        entry.headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(entry.body.len() as u64),
        );
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Dropped before the end: the client went away, or the response was discarded.
        if !self.done {
            let reason = NotStoredReason::Incomplete;
            self.sink
                .record(EventKind::NotStored { reason }, Timings::default());
            Storing::No(reason).record(self.sink.span.as_ref());
        }
    }
}

impl Sink {
    /// Counts and tells `kind`, under the request's route and method.
    fn record(&self, kind: EventKind, timings: Timings) {
        let scope = Scope::request(&self.counters, self.method);
        self.funnel.record(scope, kind, timings);
    }

    /// Writes `entry` under `key`, then ends the flight and releases the fill lock: on a
    /// spawned task, or returned to be awaited (inline writes, or no runtime to spawn on).
    pub(crate) fn write(
        &self,
        key: String,
        entry: Arc<CachedResponse>,
        flight: (Option<Landed>, Option<FillLease>),
    ) -> Option<WriteFuture> {
        let write = write_entry(self.clone(), key, entry, flight);
        if !self.inline
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(write);
            return None;
        }
        Some(Box::pin(write))
    }
}

async fn write_entry(
    sink: Sink,
    key: String,
    entry: Arc<CachedResponse>,
    (landed, mut lease): (Option<Landed>, Option<FillLease>),
) -> Storing {
    let ttl: Duration = entry.retention(sink.keep);
    let started = sink.funnel.observed().then(Instant::now);
    let storing = write_fenced(&sink, &key, &entry, ttl, &mut lease).await;
    match storing {
        Storing::Stored => {
            let stored = EventKind::Stored {
                bytes: entry.body.len(),
                ttl: entry.ttl,
                tags: entry.tags.len(),
            };
            let timings = Timings {
                store_write: started.map(|started| started.elapsed()),
                ..Timings::default()
            };
            sink.record(stored, timings);
        }
        Storing::No(reason) => sink.record(EventKind::NotStored { reason }, Timings::default()),
        Storing::Pending | Storing::Failed => {}
    }
    storing.record(sink.span.as_ref());
    // Requests for the key now find the entry in the store: the flight can go, and other
    // processes waiting on the lock can look.
    drop(landed);
    if let Some(lease) = lease {
        lease.release().await;
    }
    storing
}

/// Writes `entry` under `key` unless a purge since the fetch started covers it — in this
/// process (the fence), or in another that shares the store (its purge log, read before the
/// write so that no other process reads what a purge that ended long ago took, and after
/// it for a purge during the write, which undoes the write). A store that cannot say
/// whether a purge covers the entry fails the write (undoing it if it was made).
///
/// A store with the one step ([`SharedStore::put_filled`](crate::store::SharedStore::put_filled))
/// checks, writes and releases the fill lock at once; when it finds a purge since the
/// fetch started, the long way decides.
async fn write_fenced(
    sink: &Sink,
    key: &str,
    entry: &Arc<CachedResponse>,
    ttl: Duration,
    lease: &mut Option<FillLease>,
) -> Storing {
    let store = &*sink.store;
    let (invalidations, started) = (&sink.invalidations, sink.started);
    let failed = |operation: StoreOperation, error: &StoreError| {
        let scope = Scope::request(&sink.counters, sink.method);
        sink.funnel.store_failed(scope, operation, key, error);
    };
    let fenced = || !invalidations.allows(key, &entry.tags, started.epoch);
    let purged_elsewhere = || async {
        match started.mark {
            Some(mark) => match store.shared() {
                Some(shared) => shared.purged_since(mark, key, &entry.tags).await,
                None => Ok(false),
            },
            None => Ok(false),
        }
    };
    if fenced() {
        return Storing::No(NotStoredReason::Invalidated);
    }
    if let (Some(mark), Some(shared)) = (started.mark, store.shared()) {
        let mut fill = Fill::new(key, Arc::clone(entry), ttl, mark);
        if let Some(lease) = lease.as_ref()
            && let Some(lock) = lease.lock()
        {
            fill = fill.lock(lease.key(), lock);
        }
        let filled = match shared.put_filled(fill) {
            Some(put) => Some(put.await),
            None => None,
        };
        if let Some(filled) = filled {
            match filled {
                // A purge since the fetch started: the long way, below, says whether it
                // covers the entry.
                Ok(Filled::Unchecked) => {}
                Ok(done) => {
                    if let Some(lease) = lease.as_mut() {
                        lease.released();
                    }
                    if done == Filled::Superseded {
                        return Storing::No(NotStoredReason::Superseded);
                    }
                    // Stored; a purge in this process may have come meanwhile.
                    if !fenced() {
                        return Storing::Stored;
                    }
                    if let Err(error) = store.remove(key).await {
                        failed(StoreOperation::Remove, &error);
                    }
                    return Storing::No(NotStoredReason::Invalidated);
                }
                Err(error) if error.kind() == StoreErrorKind::TooLarge => {
                    return Storing::No(NotStoredReason::TooLarge);
                }
                Err(error) => {
                    failed(StoreOperation::Write, &error);
                    return Storing::Failed;
                }
            }
        }
    }
    match purged_elsewhere().await {
        Ok(false) => {}
        Ok(true) => return Storing::No(NotStoredReason::Invalidated),
        Err(error) => {
            failed(StoreOperation::Read, &error);
            return Storing::Failed;
        }
    }
    match store.put(key, Arc::clone(entry), ttl, PutIf::Newer).await {
        // Overtaken: a newer response for the key is stored already.
        Ok(false) => Storing::No(NotStoredReason::Superseded),
        // Larger than the store takes: a limit, not a failure.
        Err(error) if error.kind() == StoreErrorKind::TooLarge => {
            Storing::No(NotStoredReason::TooLarge)
        }
        Err(error) => {
            failed(StoreOperation::Write, &error);
            Storing::Failed
        }
        Ok(true) => {
            let after = if fenced() {
                Ok(true)
            } else {
                purged_elsewhere().await
            };
            if let Ok(false) = after {
                return Storing::Stored;
            }
            // Covered by a purge made while the write was under way, or not known whether:
            // the write must not stand.
            if let Err(error) = store.remove(key).await {
                failed(StoreOperation::Remove, &error);
            }
            match after {
                Err(error) => {
                    failed(StoreOperation::Read, &error);
                    Storing::Failed
                }
                _ => Storing::No(NotStoredReason::Invalidated),
            }
        }
    }
}
