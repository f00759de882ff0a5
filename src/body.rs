//! [`CacheBody`]: a stored body, or the service's body passed through and, on a storable
//! miss, copied into a capped buffer on its way to the client.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::coalesce::{FillLease, FlightGuard, Landed};
use crate::entry::CachedResponse;
use crate::invalidate::Invalidations;
use crate::observe::StoreOp;
use crate::outcome::Storing;
use crate::policy::NotStoredReason;
use crate::stats::{CacheStats, Counters, Event};
use crate::store::Store;

pin_project! {
    /// The response body of a [`CacheService`](crate::CacheService).
    ///
    /// On a hit it yields the stored bytes (a reference-counted `Bytes`, not a copy); on a
    /// miss it streams the inner service's body frame by frame as it is produced.
    pub struct CacheBody<B: Body> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B: Body> {
        Stored { data: Option<Bytes> },
        Inner {
            #[pin]
            body: B,
        },
        // A storable miss: the inner body (boxed, so that its first frame could be read
        // before the head left), that first frame if it was, and the copy being made.
        Capturing {
            body: Pin<Box<B>>,
            first: Option<Result<Frame<Bytes>, B::Error>>,
            capture: Option<Box<Capture>>,
            // An inline write in progress, and the frame that completed the body, held back
            // until the write is done: a client (hyper) that knows the length stops polling
            // after the last byte, so the write must finish before that byte goes out.
            // Boxed: rare.
            held: Option<Box<Held>>,
        },
    }
}

impl<B: Body> CacheBody<B> {
    /// A body of stored bytes (empty for HEAD).
    pub(crate) fn stored(data: Bytes) -> Self {
        Self {
            kind: Kind::Stored {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    /// The inner body, untouched.
    pub(crate) fn passthrough(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }
}

impl<B> CacheBody<B>
where
    B: Body,
    B::Data: Buf,
{
    /// The inner body, copied into `capture` as it streams and stored when it completes;
    /// and what is known of that store as the head leaves.
    ///
    /// The body's first frame is read here if it is ready without waiting: a body produced
    /// whole (a buffered response, most handlers' bodies) is then complete before the head
    /// leaves, and is written — inline writes are awaited — so that the head can say
    /// whether it was stored. A body that is not ready is not waited for.
    pub(crate) async fn capture(body: B, capture: Capture) -> (Self, Storing) {
        let mut body = Box::pin(body);
        let mut capture = Box::new(capture);
        let mut first = None;
        if !capture.is_complete() && !body.is_end_stream() {
            let polled = std::future::poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await;
            let progress = match polled {
                // Not ready: the head goes now, and the body streams.
                Poll::Pending => Progress::More,
                Poll::Ready(None) => Progress::Complete,
                Poll::Ready(Some(Err(error))) => {
                    first = Some(Err(error));
                    Progress::Abandon(NotStoredReason::Incomplete)
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let frame = frame.map_data(|mut data| data.copy_to_bytes(data.remaining()));
                    let progress = match frame.data_ref() {
                        Some(data) => capture.push(data),
                        None => Progress::Abandon(NotStoredReason::Trailers),
                    };
                    first = Some(Ok(frame));
                    progress
                }
            };
            let complete = match progress {
                Progress::More => body.is_end_stream(),
                Progress::Complete => true,
                Progress::Abandon(reason) => {
                    capture.abandon(reason);
                    return (Self::capturing(body, first, None), Storing::No(reason));
                }
            };
            if !complete {
                return (
                    Self::capturing(body, first, Some(capture)),
                    Storing::Pending,
                );
            }
        }
        let storing = match capture.finish() {
            Handoff::Abandoned(reason) => Storing::No(reason),
            Handoff::Spawned => Storing::Pending,
            Handoff::Inline(write) => PendingWrite::new(write).run().await,
        };
        (Self::capturing(body, first, None), storing)
    }

    fn capturing(
        body: Pin<Box<B>>,
        first: Option<Result<Frame<Bytes>, B::Error>>,
        capture: Option<Box<Capture>>,
    ) -> Self {
        Self {
            kind: Kind::Capturing {
                body,
                first,
                capture,
                held: None,
            },
        }
    }
}

impl<B: Body> fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Stored { .. } => "stored",
            Kind::Inner { .. } => "passthrough",
            Kind::Capturing {
                capture: None,
                held: None,
                ..
            } => "passthrough",
            Kind::Capturing { .. } => "capturing",
        };
        f.debug_struct("CacheBody").field("kind", &kind).finish()
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body,
    B::Data: Buf,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let (body, capture, held) = match self.project().kind.project() {
            KindProj::Stored { data } => {
                return Poll::Ready(data.take().map(|data| Ok(Frame::data(data))));
            }
            KindProj::Inner { body } => {
                return body.poll_frame(cx).map_ok(|frame| {
                    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
                });
            }
            KindProj::Capturing {
                body,
                first,
                capture,
                held,
            } => {
                if let Some(first) = first.take() {
                    return Poll::Ready(Some(first));
                }
                (body, capture, held)
            }
        };
        if let Some(waiting) = held {
            ready!(Pin::new(&mut waiting.write).poll(cx));
            let last = waiting.last.take();
            *held = None;
            return Poll::Ready(last.map(Ok));
        }
        // A body may be complete before its first poll: finish without polling it again.
        if capture.is_some() && body.is_end_stream() {
            return finish(capture, held, None, cx);
        }
        let frame = match ready!(body.as_mut().poll_frame(cx)) {
            None => return finish(capture, held, None, cx),
            Some(Err(error)) => {
                if let Some(capture) = capture.take() {
                    capture.abandon(NotStoredReason::Incomplete);
                }
                return Poll::Ready(Some(Err(error)));
            }
            Some(Ok(frame)) => frame.map_data(|mut data| data.copy_to_bytes(data.remaining())),
        };
        let Some(active) = capture.as_mut() else {
            return Poll::Ready(Some(Ok(frame)));
        };
        let progress = match frame.data_ref() {
            Some(data) => active.push(data),
            // Trailers are not replayed, so the response cannot be stored.
            None => Progress::Abandon(NotStoredReason::Trailers),
        };
        match progress {
            Progress::More if !body.is_end_stream() => Poll::Ready(Some(Ok(frame))),
            Progress::More | Progress::Complete => finish(capture, held, Some(frame), cx),
            Progress::Abandon(reason) => {
                if let Some(capture) = capture.take() {
                    capture.abandon(reason);
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Stored { data } => data.is_none(),
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Capturing {
                body,
                first,
                capture,
                held,
            } => first.is_none() && capture.is_none() && held.is_none() && body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Stored { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |data| data.len() as u64))
            }
            Kind::Inner { body } => body.size_hint(),
            Kind::Capturing { body, first, .. } => {
                // The first frame, read already, is no longer in the inner body's hint.
                let read = match first {
                    Some(Ok(frame)) => frame.data_ref().map_or(0, |data| data.len() as u64),
                    _ => 0,
                };
                let rest = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(read));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(read));
                }
                hint
            }
        }
    }
}

/// The body is complete (with `last`, its final frame, if it had one): hands the entry to
/// the store, and returns `last` — after the write, when the write is inline.
fn finish<E>(
    capture: &mut Option<Box<Capture>>,
    held: &mut Option<Box<Held>>,
    last: Option<Frame<Bytes>>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, E>>> {
    let Some(Handoff::Inline(pending)) = capture.take().map(|capture| capture.finish()) else {
        return Poll::Ready(last.map(Ok));
    };
    let mut pending = PendingWrite(Some(pending));
    if Pin::new(&mut pending).poll(cx).is_ready() {
        return Poll::Ready(last.map(Ok));
    }
    *held = Some(Box::new(Held {
        write: pending,
        last,
    }));
    Poll::Pending
}

pub(crate) type WriteFuture = Pin<Box<dyn Future<Output = Storing> + Send>>;

/// An inline write under way, and the body's last frame, sent once it is done.
struct Held {
    write: PendingWrite,
    last: Option<Frame<Bytes>>,
}

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
        if let Some(write) = self.0.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                drop(runtime.spawn(write));
            }
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
enum Progress {
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
    pub(crate) stats: CacheStats,
    pub(crate) counters: Arc<Counters>,
    pub(crate) max_body_size: usize,
    /// Write before the body ends, rather than on a spawned task.
    pub(crate) inline: bool,
    /// How much longer than its stale windows an entry with a validator is kept.
    pub(crate) keep: Duration,
    /// Recent invalidations, and the epoch when this fetch started: an entry whose key was
    /// invalidated since is not written.
    pub(crate) invalidations: Arc<Invalidations>,
    pub(crate) epoch: u64,
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
    flight: Option<(FlightGuard, Option<FillLease>)>,
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
        flight: Option<(FlightGuard, Option<FillLease>)>,
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
    fn push(&mut self, data: &Bytes) -> Progress {
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
        if let Some((flight, _lease)) = self.flight.take() {
            // A body too large or with trailers will be so next time too: hit-for-miss.
            let not_cacheable = matches!(
                reason,
                NotStoredReason::TooLarge | NotStoredReason::Trailers
            );
            flight.fallback(not_cacheable);
        }
        self.sink
            .stats
            .record(&self.sink.counters, Event::NotStored(reason));
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
            Some((flight, lease)) => (Some(flight.ready(Arc::clone(&entry))), lease),
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
            self.sink.stats.record(
                &self.sink.counters,
                Event::NotStored(NotStoredReason::Incomplete),
            );
        }
    }
}

impl Sink {
    /// Writes `entry` under `key`, then ends the flight and releases the fill lock: on a
    /// spawned task, or returned to be awaited (inline writes, or no runtime to spawn on).
    pub(crate) fn write(
        &self,
        key: String,
        entry: Arc<CachedResponse>,
        flight: (Option<Landed>, Option<FillLease>),
    ) -> Option<WriteFuture> {
        let write = write_entry(self.clone(), key, entry, flight);
        if !self.inline {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(write);
                return None;
            }
        }
        Some(Box::pin(write))
    }
}

async fn write_entry(
    sink: Sink,
    key: String,
    entry: Arc<CachedResponse>,
    (landed, lease): (Option<Landed>, Option<FillLease>),
) -> Storing {
    let Sink {
        store,
        stats,
        counters,
        keep,
        invalidations,
        epoch,
        ..
    } = sink;
    let ttl: Duration = entry.retention(keep);
    let storing = if !invalidations.allows(&key, epoch) {
        Storing::No(NotStoredReason::Invalidated)
    } else {
        match store.put_newer(&key, entry, ttl).await {
            // An invalidation that removed the key while this write was under way must
            // not be undone by it.
            Ok(true) if !invalidations.allows(&key, epoch) => {
                if let Err(error) = store.remove(&key).await {
                    stats.record(&counters, Event::StoreError(error.kind()));
                    crate::observe::store_error(StoreOp::Write, &key, &error);
                }
                Storing::No(NotStoredReason::Invalidated)
            }
            Ok(true) => Storing::Stored,
            // Overtaken: a newer response for the key is stored already.
            Ok(false) => Storing::No(NotStoredReason::Superseded),
            Err(error) => {
                stats.record(&counters, Event::StoreError(error.kind()));
                crate::observe::store_error(StoreOp::Write, &key, &error);
                Storing::Failed
            }
        }
    };
    match storing {
        Storing::Stored => stats.record(&counters, Event::Stored),
        Storing::No(reason) => stats.record(&counters, Event::NotStored(reason)),
        Storing::Pending | Storing::Failed => {}
    }
    // Requests for the key now find the entry in the store: the flight can go, and other
    // processes waiting on the lock can look.
    drop(landed);
    if let Some(lease) = lease {
        lease.release().await;
    }
    storing
}
