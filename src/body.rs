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

use crate::entry::CachedResponse;
use crate::observe::StoreOp;
use crate::policy::NotStoredReason;
use crate::stats::{CacheStats, Counters, Event};
use crate::store::Store;

pin_project! {
    /// The response body of a [`CacheService`](crate::CacheService).
    ///
    /// On a hit it yields the stored bytes (a reference-counted `Bytes`, not a copy); on a
    /// miss it streams the inner service's body frame by frame as it is produced.
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Stored { data: Option<Bytes> },
        Inner {
            #[pin]
            body: B,
            capture: Option<Box<Capture>>,
            write: Option<WriteFuture>,
        },
    }
}

type WriteFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

impl<B> CacheBody<B> {
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
            kind: Kind::Inner {
                body,
                capture: None,
                write: None,
            },
        }
    }

    /// The inner body, copied into `capture` as it streams; stored when it completes.
    pub(crate) fn capturing(body: B, capture: Capture) -> Self {
        Self {
            kind: Kind::Inner {
                body,
                capture: Some(Box::new(capture)),
                write: None,
            },
        }
    }
}

impl<B> fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Stored { .. } => "stored",
            Kind::Inner { capture: None, .. } => "passthrough",
            Kind::Inner { .. } => "capturing",
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
        match self.project().kind.project() {
            KindProj::Stored { data } => Poll::Ready(data.take().map(|data| Ok(Frame::data(data)))),
            KindProj::Inner {
                mut body,
                capture,
                write,
            } => {
                if let Some(pending) = write {
                    ready!(pending.as_mut().poll(cx));
                    *write = None;
                    return Poll::Ready(None);
                }
                // A body may be complete before its first poll (an empty body): then the
                // capture is finished without polling the inner body again.
                if capture.is_some() && body.is_end_stream() {
                    return finish_and_end(capture, write, cx);
                }
                let frame = match ready!(body.as_mut().poll_frame(cx)) {
                    None => return finish_and_end(capture, write, cx),
                    Some(Err(error)) => {
                        if let Some(capture) = capture.take() {
                            capture.abandon(NotStoredReason::Incomplete);
                        }
                        return Poll::Ready(Some(Err(error)));
                    }
                    Some(Ok(frame)) => frame,
                };
                let frame = frame.map_data(|mut data| data.copy_to_bytes(data.remaining()));
                if let Some(active) = capture.as_mut() {
                    let overflow = match frame.data_ref() {
                        Some(data) => !active.push(data),
                        None => {
                            // Trailers are not replayed, so the response cannot be stored.
                            if let Some(capture) = capture.take() {
                                capture.abandon(NotStoredReason::Trailers);
                            }
                            false
                        }
                    };
                    if overflow {
                        if let Some(capture) = capture.take() {
                            capture.abandon(NotStoredReason::TooLarge);
                        }
                    } else if body.is_end_stream() {
                        // The stream is complete after this frame; a client may not poll
                        // again, so the entry is handed over now (inline writes finish on
                        // the next poll, which `is_end_stream` asks for).
                        if let Some(capture) = capture.take() {
                            *write = capture.finish();
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Stored { data } => data.is_none(),
            Kind::Inner {
                body,
                capture,
                write,
            } => capture.is_none() && write.is_none() && body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Stored { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |data| data.len() as u64))
            }
            Kind::Inner { body, .. } => body.size_hint(),
        }
    }
}

/// Completes the capture at the end of the inner body, then ends, after an inline write.
fn finish_and_end<E>(
    capture: &mut Option<Box<Capture>>,
    write: &mut Option<WriteFuture>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, E>>> {
    if let Some(capture) = capture.take() {
        *write = capture.finish();
    }
    if let Some(pending) = write {
        ready!(pending.as_mut().poll(cx));
        *write = None;
    }
    Poll::Ready(None)
}

/// A storable response on its way to the client: the entry without its body, and the body
/// received so far.
pub(crate) struct Capture {
    pub(crate) key: String,
    pub(crate) entry: CachedResponse,
    pub(crate) max_body_size: usize,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) stats: CacheStats,
    pub(crate) counters: Arc<Counters>,
    pub(crate) inline: bool,
    chunks: Vec<Bytes>,
    len: usize,
    done: bool,
}

impl Capture {
    pub(crate) fn new(
        key: String,
        entry: CachedResponse,
        max_body_size: usize,
        store: Arc<dyn Store>,
        stats: CacheStats,
        counters: Arc<Counters>,
        inline: bool,
    ) -> Self {
        Self {
            key,
            entry,
            max_body_size,
            store,
            stats,
            counters,
            inline,
            chunks: Vec::new(),
            len: 0,
            done: false,
        }
    }

    /// Keeps a reference to `data`; `false` once the body is over the limit.
    fn push(&mut self, data: &Bytes) -> bool {
        self.len = self.len.saturating_add(data.len());
        if self.len > self.max_body_size {
            return false;
        }
        if !data.is_empty() {
            self.chunks.push(data.clone());
        }
        true
    }

    fn abandon(mut self: Box<Self>, reason: NotStoredReason) {
        self.done = true;
        self.stats.record(&self.counters, Event::NotStored(reason));
    }

    /// Hands the complete entry to the store: spawned in the background, or returned to be
    /// awaited before the body ends (inline writes, or no runtime to spawn on).
    fn finish(mut self: Box<Self>) -> Option<WriteFuture> {
        self.done = true;
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.pop().unwrap_or_default(),
            _ => {
                let mut body = BytesMut::with_capacity(self.len);
                for chunk in self.chunks.drain(..) {
                    body.extend_from_slice(&chunk);
                }
                body.freeze()
            }
        };
        let mut entry = std::mem::replace(
            &mut self.entry,
            CachedResponse::new(http::StatusCode::OK, http::HeaderMap::new(), Bytes::new()),
        );
        entry.body = body;
        let write = write_entry(
            Arc::clone(&self.store),
            std::mem::take(&mut self.key),
            Arc::new(entry),
            self.stats.clone(),
            Arc::clone(&self.counters),
        );
        if !self.inline {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(write);
                return None;
            }
        }
        Some(Box::pin(write))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Dropped before the end: the client went away, or the response was discarded.
        if !self.done {
            self.stats.record(
                &self.counters,
                Event::NotStored(NotStoredReason::Incomplete),
            );
        }
    }
}

async fn write_entry(
    store: Arc<dyn Store>,
    key: String,
    entry: Arc<CachedResponse>,
    stats: CacheStats,
    counters: Arc<Counters>,
) {
    let ttl: Duration = entry.storage_ttl();
    match store.put(&key, entry, ttl).await {
        Ok(()) => stats.record(&counters, Event::Stored),
        Err(error) => {
            stats.record(&counters, Event::StoreError(error.kind()));
            crate::observe::store_error(StoreOp::Write, &key, &error);
        }
    }
}
