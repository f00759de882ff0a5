//! [`CacheBody`]: a stored body, or the service's body passed through and, on a storable
//! miss, copied into a capped buffer on its way to the client (the copy and its write to
//! the store are the fill's, in `fill.rs`; the body says when it has ended).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::fill::{Capture, Handoff, PendingWrite, Progress};
use crate::outcome::Storing;
use crate::policy::NotStoredReason;

pin_project! {
    /// The response body of a [`CacheService`](crate::CacheService).
    ///
    /// On a hit it yields the stored bytes (a reference-counted `Bytes`, not a copy); on a
    /// miss it streams the inner service's body frame by frame as it is produced.
    ///
    /// On a storable miss it also keeps a copy, capped at
    /// [`max_body_size`](crate::CacheLayer::max_body_size), which is stored once the body
    /// has completed; nothing is stored on a body error, a client disconnect, trailers or
    /// a body past the cap.
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
    let mut pending = PendingWrite::new(pending);
    if Pin::new(&mut pending).poll(cx).is_ready() {
        return Poll::Ready(last.map(Ok));
    }
    *held = Some(Box::new(Held {
        write: pending,
        last,
    }));
    Poll::Pending
}

/// An inline write under way, and the body's last frame, sent once it is done.
struct Held {
    write: PendingWrite,
    last: Option<Frame<Bytes>>,
}
