//! Revalidation: a `304 Not Modified` merged into the stored entry and stored again (RFC
//! 9111 §3.2, §4.3.3, §4.3.4), and the background refresh of a stale-while-revalidate hit.

use super::*;

impl Ctx {
    /// The origin answered `304 Not Modified` to the revalidation of `entry`: the entry,
    /// with its header fields updated from the 304 and its freshness computed from them,
    /// is stored again and answers the request (RFC 9111 §3.2, §4.3.3, §4.3.4).
    pub(super) async fn revalidated<B: Body>(
        &self,
        entry: &CachedResponse,
        mut head: http::response::Parts,
        fill: Fill,
        request_headers: &HeaderMap,
        facts: RequestFacts,
    ) -> Response<CacheBody<B>> {
        let Fill {
            key,
            flight,
            started,
        } = fill;
        let now = self.config.now();
        let not_modified = std::mem::take(&mut head.headers);
        head.status = entry.status;
        head.headers = updated_headers(&entry.headers, &not_modified, self.config.rules.set_cookie);
        // The 304's age is the entry's now (RFC 9111 §4.2.3): its `Age`, and its `Date` or,
        // without one, the time it arrived (RFC 9110 §6.6.1). `Age` is read, not stored.
        if let Some(age) = not_modified.get(header::AGE) {
            head.headers.insert(header::AGE, age.clone());
        }
        if !not_modified.contains_key(header::DATE)
            && let Ok(date) = HeaderValue::try_from(httpdate::fmt_http_date(now))
        {
            head.headers.insert(header::DATE, date);
        }
        // The body is the stored one: a HEAD revalidates the entry as well as a GET.
        let storing = RequestFacts {
            head: false,
            ..facts
        };
        let (updated, stored) = match self.storable_entry(&head, storing, request_headers, now) {
            Ok(mut updated) => {
                updated.body = entry.body.clone();
                // A 304 that names no tags keeps the entry's.
                if updated.tags.is_empty() {
                    updated.tags.clone_from(&entry.tags);
                }
                updated.compact();
                let updated = Arc::new(updated);
                let (landed, lease) = match flight {
                    Some(lead) => {
                        let (landed, lease) = lead.ready(Arc::clone(&updated));
                        (Some(landed), lease)
                    }
                    None => (None, None),
                };
                let write = self.sink(started).write(
                    key.into_string(),
                    Arc::clone(&updated),
                    (landed, lease),
                );
                let stored = match write {
                    Some(write) => PendingWrite::new(write).run().await,
                    None => Storing::Pending,
                };
                (updated, stored)
            }
            // Updated to something the cache may not keep (say, `no-store`): this request
            // still gets it, nobody else, and the old entry goes.
            Err(reason) => {
                self.record(EventKind::NotStored { reason });
                if let Some(lead) = flight {
                    lead.fallback(!matches!(
                        reason,
                        NotStoredReason::Authorization | NotStoredReason::Cookie
                    ));
                }
                self.withdraw(&key, reason).await;
                head.headers.remove(header::AGE);
                self.config.strip_own_fields(&mut head.headers);
                let mut served =
                    CachedResponse::new(entry.status, head.headers, entry.body.clone());
                served.stored_at = now;
                served.initial_age = initial_age(&not_modified, now);
                (Arc::new(served), Storing::No(reason))
            }
        };
        let response = self.response_from(&updated, request_headers, facts.head, now);
        self.finish(response, Outcome::Revalidated { stored })
    }
}

impl<S> Call<S> {
    /// Fetches `key` again on a spawned task with this request (its body is the request's,
    /// usually empty for a GET), unless a fetch of it is already in flight, or one ended
    /// since this request's lookup (counted `ended` then): it may have stored the fresh
    /// entry already. The fresh response replaces the stale entry. Without a Tokio runtime
    /// nothing is spawned.
    pub(super) fn revalidate_in_background<ReqB, ResB>(
        self,
        parts: Parts,
        body: ReqB,
        (key, ended): (CacheKey, u64),
        entry: Arc<CachedResponse>,
    ) where
        S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
        S::Future: Send,
        S::Error: Send,
        ReqB: Send + 'static,
        ResB: Body + Send + 'static,
        ResB::Data: Buf + Send,
        ResB::Error: Send,
    {
        let flight = match self.ctx.config.coalescer() {
            // Once is enough: the refresh that ended may be the one this request would start.
            Some(coalescer) if coalescer.ended(key.as_str()) != ended => return,
            Some(coalescer) => match coalescer.join(key.as_str()) {
                Join::Leader(guard) => Some(Lead::new(guard, None)),
                // Already being refreshed (or not to be serialized): once is enough.
                Join::Waiter(_) | Join::Alone => return,
            },
            None => None,
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // A HEAD found it stale: the refresh is a GET all the same, whose response can be
        // stored.
        let mut parts = parts;
        parts.method = Method::GET;
        let this = Call {
            inner: self.inner,
            ctx: self.ctx.background_refresh(),
        };
        runtime.spawn(async move {
            let refresh = Some(RefreshReason::StaleWhileRevalidate);
            let stored = Stored {
                entry: Some(entry),
                stands_in: false,
            };
            if let Ok(response) = this.fetch(parts, body, key, refresh, flight, stored).await {
                // Nobody reads this response: drain it, so that the capture completes and
                // stores the entry.
                let mut body = std::pin::pin!(response.into_body());
                while let Some(frame) =
                    std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await
                {
                    if frame.is_err() {
                        break;
                    }
                }
            }
        });
    }
}

/// Whether a 304 is about the stored representation: an `ETag` it carries matches the
/// stored one by weak comparison (RFC 9110 §8.8.3.2); without one, the request's validators
/// were the stored ones, so it is.
/// Whether a `200` to a `HEAD` describes the stored response (RFC 9111 §4.3.5): every
/// validator it carries (`ETag`, `Last-Modified`; at least one) matches the stored one, and
/// its `Content-Length`, if any, is the stored body's length.
pub(super) fn head_describes(entry: &CachedResponse, head: &HeaderMap) -> bool {
    let matches = |name: header::HeaderName, stored: Option<&HeaderValue>| {
        head.get(&name).map(|received| {
            stored.is_some_and(|stored| {
                stored.as_bytes().trim_ascii() == received.as_bytes().trim_ascii()
            })
        })
    };
    let etag = matches(header::ETAG, entry.etag());
    let modified = matches(header::LAST_MODIFIED, entry.last_modified());
    let validated = match (etag, modified) {
        (None, None) => false,
        (etag, modified) => etag.unwrap_or(true) && modified.unwrap_or(true),
    };
    validated
        && content_length(head).is_none_or(|length| length == entry.body.len() as u64)
        && !(head.contains_key(header::CONTENT_LENGTH) && content_length(head).is_none())
}

pub(super) fn same_representation(entry: &CachedResponse, not_modified: &HeaderMap) -> bool {
    pub(super) fn opaque(value: &HeaderValue) -> &[u8] {
        let value = value.as_bytes().trim_ascii();
        value.strip_prefix(b"W/").unwrap_or(value)
    }
    match (entry.etag(), not_modified.get(header::ETAG)) {
        (Some(stored), Some(fresh)) => opaque(stored) == opaque(fresh),
        _ => true,
    }
}
