//! The responses the cache builds from entries (hits, stale answers), and the one place a
//! response is finished: its headers set and its outcome counted.

use super::*;

impl Ctx {
    /// The answer to an `only-if-cached` request nothing stored may answer: `504` (RFC
    /// 9111 §5.2.1.7).
    pub(super) fn only_if_cached_miss<B: Body>(&self) -> Response<CacheBody<B>> {
        let mut response = Response::new(CacheBody::stored(Bytes::new()));
        *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
        self.finish(response, Outcome::MissOnlyIfCached)
    }

    /// Every response the cache answers with ends here: the outcome is counted (once per
    /// request) and said in the response's headers.
    pub(super) fn finish<B>(&self, mut response: Response<B>, outcome: Outcome) -> Response<B> {
        self.finish_head(response.headers_mut(), outcome);
        self.attach_outcome(response.extensions_mut(), outcome);
        response
    }

    /// [`finish`](Self::finish) for a response head's headers (its extensions:
    /// [`attach_outcome`](Self::attach_outcome)).
    pub(super) fn finish_head(&self, headers: &mut HeaderMap, outcome: Outcome) {
        self.count(outcome);
        if let Some(span) = self.span() {
            outcome.record(span, headers);
        }
        outcome.write_headers(
            headers,
            self.config.status_header.as_ref(),
            self.config.cache_status.as_deref(),
        );
    }

    /// Puts the outcome in the response's extensions, when the layer does.
    pub(super) fn attach_outcome(&self, extensions: &mut http::Extensions, outcome: Outcome) {
        if self.config.outcome_extension {
            extensions.insert(outcome.public());
        }
    }

    /// Counts a client request's outcome (the event funnel); a background
    /// refresh counts only what it stores.
    pub(super) fn count(&self, outcome: Outcome) {
        if self.counted {
            let clock = self.clock();
            let waited = clock.map_or(Duration::ZERO, Stopwatch::waited);
            self.config
                .funnel
                .request_ended(self.scope(), outcome.event(waited), clock);
        }
    }

    pub(super) fn sliding(&self) -> bool {
        self.settings().sliding()
    }

    /// A stale entry answering: while it is refreshed (RFC 5861 §3), or for an origin that
    /// failed (§4).
    pub(super) fn serve_stale<B: Body>(
        &self,
        entry: &CachedResponse,
        request: &HeaderMap,
        head: bool,
        revalidating: bool,
    ) -> Response<CacheBody<B>> {
        let now = self.config.now();
        let response = self.response_from(entry, request, head, now);
        let stale_for = entry.resident_time(now).saturating_sub(entry.ttl);
        let outcome = if revalidating {
            Outcome::StaleWhileRevalidate { stale_for }
        } else {
            Outcome::StaleIfError { stale_for }
        };
        self.finish(response, outcome)
    }

    /// A response from a stored entry: its status and headers, `Age`, the body unless HEAD
    /// — or `304 Not Modified` when the request's preconditions say the client has it
    /// (RFC 9110 §13.1.2, §13.1.3, §15.4.5).
    pub(super) fn response_from<B: Body>(
        &self,
        entry: &CachedResponse,
        request: &HeaderMap,
        head: bool,
        now: SystemTime,
    ) -> Response<CacheBody<B>> {
        let preconditions = self.preconditions;
        let conditional = preconditions
            && (request.contains_key(header::IF_NONE_MATCH)
                || request.contains_key(header::IF_MODIFIED_SINCE));
        let mut response = if conditional && not_modified(entry.status, &entry.headers, request) {
            let mut response = Response::new(CacheBody::stored(Bytes::new()));
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            *response.headers_mut() = not_modified_headers(&entry.headers);
            response
        } else if preconditions
            && !head
            && entry.status == StatusCode::OK
            && request.contains_key(header::RANGE)
        {
            ranged(entry, request)
        } else {
            let body = if head {
                Bytes::new()
            } else {
                entry.body.clone()
            };
            let mut response = Response::new(CacheBody::stored(body));
            *response.status_mut() = entry.status;
            *response.headers_mut() = replayed_headers(&entry.headers);
            response
        };
        let _ = response
            .headers_mut()
            .try_insert(header::AGE, outcome::age_value(entry.age(now)));
        response
    }

    pub(super) async fn hit<B: Body>(
        &self,
        entry: &CachedResponse,
        key: CacheKey,
        request: &HeaderMap,
        (head, tier): (bool, Option<Tier>),
        now: SystemTime,
    ) -> Response<CacheBody<B>> {
        let response = self.response_from(entry, request, head, now);
        let ttl = if self.sliding() {
            // Another full lifetime, the entry's own (whatever set it: handler, origin,
            // route or default).
            self.touch(key, &entry.tags, entry.storage_ttl()).await;
            entry.ttl
        } else {
            entry.remaining_ttl(now)
        };
        self.finish(response, Outcome::Hit { ttl, tier })
    }

    /// Moves the entry's expiry a full TTL ahead (sliding routes), its tags' index with it.
    pub(super) async fn touch(&self, key: CacheKey, tags: &[String], ttl: Duration) {
        let store = Arc::clone(&self.config.store);
        let funnel = self.config.funnel.clone();
        let counters = Arc::clone(&self.route.counters);
        let method = self.method;
        let tags = tags.to_vec();
        let touch = async move {
            if let Err(error) = store.touch(key.as_str(), &tags, ttl).await {
                let scope = Scope::request(&counters, method);
                funnel.store_failed(scope, StoreOperation::Touch, key.as_str(), &error);
            }
        };
        let inline = self.config.write_mode.inline_for(&self.config.capabilities);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if !inline => drop(runtime.spawn(touch)),
            _ => touch.await,
        }
    }
}

/// A stored 200 answering a GET with `Range` (RFC 9110 §14): a `206` with the bytes asked
/// for (one range, or `multipart/byteranges`), a `416` when none is in the body, or the
/// whole response when the ranges do not apply ([`range_answer`]).
fn ranged<B: Body>(entry: &CachedResponse, request: &HeaderMap) -> Response<CacheBody<B>> {
    let length = entry.body.len() as u64;
    let mut headers = replayed_headers(&entry.headers);
    let (status, body) = match range_answer(request, &entry.headers, length) {
        RangeAnswer::Full => (entry.status, entry.body.clone()),
        RangeAnswer::Single(range) => {
            headers.insert(header::CONTENT_RANGE, content_range(&range, length));
            (StatusCode::PARTIAL_CONTENT, slice(&entry.body, &range))
        }
        RangeAnswer::Multi(ranges) => {
            let (body, content_type) = multipart(
                &entry.body,
                &ranges,
                entry.headers.get(header::CONTENT_TYPE),
            );
            headers.insert(header::CONTENT_TYPE, content_type);
            (StatusCode::PARTIAL_CONTENT, body)
        }
        RangeAnswer::Unsatisfiable => {
            headers.insert(header::CONTENT_RANGE, unsatisfied_range(length));
            headers.remove(header::CONTENT_TYPE);
            (StatusCode::RANGE_NOT_SATISFIABLE, Bytes::new())
        }
    };
    if (status != entry.status || headers.contains_key(header::CONTENT_LENGTH))
        && let Ok(value) = HeaderValue::try_from(body.len().to_string())
    {
        headers.insert(header::CONTENT_LENGTH, value);
    }
    let mut response = Response::new(CacheBody::stored(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// A hit's copy of the stored headers, with room for those it adds (`Age`, the status
/// header, `Cache-Status`): a `clone` has no spare slot, and its first insert would move
/// every entry to a larger allocation.
pub(super) fn replayed_headers(stored: &HeaderMap) -> HeaderMap {
    let mut headers = header_map_with_room(stored.keys_len() + HIT_HEADERS);
    for (name, value) in stored {
        let _ = headers.try_append(name.clone(), value.clone());
    }
    headers
}

/// How many headers a hit adds to the stored ones.
pub(super) const HIT_HEADERS: usize = 3;
