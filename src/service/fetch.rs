//! The fetch: the origin call for a miss, refresh or revalidation, stale-if-error, the
//! storability decision, and the hand-off of a storable response to the fill.

use super::answer::{Answer, Fetched, NotKept, answer, not_kept, origin_validators, withdraws};
use super::*;
use crate::policy::freshness::freshness;

impl Ctx {
    /// Where entries go, with the layer's limits, for a fetch that started when purges
    /// stood at `started`.
    pub(super) fn sink(&self, started: Started) -> Sink {
        Sink {
            store: Arc::clone(&self.config.store),
            funnel: self.config.funnel.clone(),
            counters: Arc::clone(&self.route.counters),
            method: self.method,
            span: self.span().cloned(),
            max_body_size: self.config.rules.max_body_size,
            inline: self.config.write_mode.inline_for(&self.config.capabilities),
            // On a sliding route presence is freshness: nothing stays past it.
            keep: if self.sliding() {
                Duration::ZERO
            } else {
                self.config.rules.keep
            },
            invalidations: Arc::clone(&self.config.invalidations),
            started,
        }
    }

    /// The entry to store for a response (without its body), or why there is none.
    pub(super) fn storable_entry(
        &self,
        head: &http::response::Parts,
        request: RequestFacts,
        request_headers: &HeaderMap,
        now: SystemTime,
    ) -> Result<CachedResponse, NotStoredReason> {
        let cc = self.config.response_directives(&head.headers);
        let mut settings = self.settings().freshness();
        let admission = check_storable(
            head.status,
            &head.headers,
            &cc,
            request,
            &self.config.rules,
            settings.honor_origin,
        )?;
        if admission == Admission::ExplicitOnly {
            // The status set governs the route's and the default TTL: a status outside it
            // lives only as long as its explicit freshness.
            settings.ttl = None;
            settings.negative_ttl = None;
            settings.keep = Duration::ZERO;
        }
        let explicit = head
            .extensions
            .get::<CacheTtl>()
            .map(|ttl| ttl.0)
            .or_else(|| {
                self.config
                    .ttl_fn
                    .as_ref()
                    .and_then(|ttl_fn| ttl_fn.call(head))
            });
        let freshness = freshness(head.status, &head.headers, &cc, explicit, &settings, now)?;
        let mut headers = stored_headers(&head.headers, self.config.rules.set_cookie);
        self.config.strip_own_fields(&mut headers);
        let tags = self
            .config
            .tags
            .extract(&head.headers, head.extensions.get::<CacheTags>());
        self.config.funnel.tags_ignored(tags.ignored);
        let mut entry = CachedResponse::new(head.status, headers, Bytes::new());
        entry.tags = tags.tags;
        entry.stored_at = now;
        entry.initial_age = freshness.initial_age;
        entry.ttl = freshness.ttl;
        entry.stale_while_revalidate = freshness.stale_while_revalidate;
        entry.stale_if_error = freshness.stale_if_error;
        entry.vary = vary_values(&head.headers, request_headers);
        Ok(entry)
    }

    /// The origin answered a request for a stored entry with a response the cache may not
    /// keep: unless that was down to this request (its credentials, its method), the entry
    /// goes, so that it is not served stale against the origin's latest word.
    pub(super) async fn withdraw(&self, key: &CacheKey, reason: NotStoredReason) {
        if withdraws(reason) {
            self.remove(key).await;
        }
    }

    /// The origin's future, its time on the request's clock.
    pub(super) async fn origin<F: std::future::Future>(&self, future: F) -> F::Output {
        let Some(clock) = self.clock() else {
            return future.await;
        };
        clock.origin_started();
        let output = future.await;
        clock.origin_done();
        output
    }

    /// Removes the entry under `key`; a store error is counted.
    pub(super) async fn remove(&self, key: &CacheKey) {
        if let Err(error) = self.config.store.remove(key.as_str()).await {
            self.store_failed(StoreOperation::Remove, key.as_str(), &error);
        }
    }
}

impl<S> Call<S> {
    pub(super) async fn bypass<ReqB, ResB>(
        mut self,
        parts: Parts,
        body: ReqB,
        reason: BypassReason,
    ) -> Result<Response<CacheBody<ResB>>, S::Error>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
        ResB: Body,
    {
        let outcome = Outcome::Bypass { reason };
        let watched = watched_pattern(&self.ctx.config, &parts);
        let result = self
            .ctx
            .origin(self.inner.call(Request::from_parts(parts, body)))
            .await;
        if claimed_on_the_way(&self.ctx.config, watched.as_ref()) {
            return result.map(|response| response.map(CacheBody::passthrough));
        }
        let mut response = match result {
            Ok(response) => response,
            Err(error) => {
                self.ctx.count(outcome);
                return Err(error);
            }
        };
        self.ctx.config.strip_own_fields(response.headers_mut());
        Ok(self
            .ctx
            .finish(response.map(CacheBody::passthrough), outcome))
    }

    /// The fetch phase: the origin call for a miss, refresh or revalidation, and what its
    /// answer decides ([`answer`], [`not_kept`]) carried out.
    pub(super) async fn fetch<ReqB, ResB>(
        mut self,
        mut parts: Parts,
        body: ReqB,
        key: CacheKey,
        refresh: Option<RefreshReason>,
        mut flight: Option<Lead>,
        stored: Stored,
    ) -> Result<Response<CacheBody<ResB>>, S::Error>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
        ResB: Body,
    {
        // Only an entry within its stale-if-error window may stand in for a failure, and
        // only one with a validator can be revalidated.
        let had_entry = stored.entry.is_some();
        let stale = stored
            .entry
            .clone()
            .filter(|entry| stored.stands_in && entry.may_serve_if_error(self.ctx.config.now()));
        let revalidate = stored.entry.filter(|entry| entry.has_validator());
        let facts = RequestFacts {
            head: parts.method == Method::HEAD,
            authorization: parts.headers.contains_key(header::AUTHORIZATION),
            cookie: self.ctx.cookie,
        };
        // The response's `Vary` names the request headers it depends on; they are only known
        // once it arrives, so the request's headers are kept until then.
        let request_headers = parts.headers.clone();
        let client_conditional = request_headers.contains_key(header::IF_NONE_MATCH)
            || request_headers.contains_key(header::IF_MODIFIED_SINCE);
        origin_validators(&mut parts.headers, revalidate.as_deref(), facts.head);
        // An invalidation from now on means the response may predate a change.
        let started = self.ctx.config.fetch_started();
        let watched = watched_pattern(&self.ctx.config, &parts);
        let result = self
            .ctx
            .origin(self.inner.call(Request::from_parts(parts, body)))
            .await;
        let fallback = |flight: Option<Lead>, retry: bool| {
            if let Some(lead) = flight {
                lead.fallback(retry);
            }
        };
        if claimed_on_the_way(&self.ctx.config, watched.as_ref()) {
            // The waiters go on to the route's own layer.
            fallback(flight, false);
            return result.map(|response| response.map(CacheBody::passthrough));
        }
        let outcome = |stored| match refresh {
            Some(reason) => Outcome::Refresh { reason, stored },
            None => Outcome::Miss { stored },
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                // The waiters try for themselves rather than queue behind another attempt.
                fallback(flight, false);
                let Some(stale) = stale else {
                    // No response, but the request was a miss (or refresh) all the same.
                    self.ctx
                        .count(outcome(Storing::No(NotStoredReason::Incomplete)));
                    return Err(error);
                };
                return Ok(self
                    .ctx
                    .serve_stale(&stale, &request_headers, facts.head, false));
            }
        };
        let fetched = Fetched {
            status: response.status(),
            headers: response.headers(),
            revalidating: revalidate.as_deref(),
            stale: stale.is_some(),
            head: facts.head,
            client_conditional,
        };
        match answer(fetched) {
            Answer::StandIn => {
                fallback(flight, false);
                let stale = stale.expect("stands in");
                return Ok(self
                    .ctx
                    .serve_stale(&stale, &request_headers, facts.head, false));
            }
            Answer::Freshen => {
                let entry = revalidate.expect("revalidated");
                let fill = Fill {
                    key,
                    flight,
                    started,
                };
                let (head, _) = response.into_parts();
                let ctx = &self.ctx;
                return Ok(ctx
                    .revalidated(&entry, head, fill, &request_headers, facts)
                    .await);
            }
            Answer::Contradicted => {
                self.ctx.remove(&key).await;
                fallback(flight, false);
                let mut bad = Response::new(CacheBody::stored(Bytes::from_static(
                    b"bad gateway: the origin answered 304 for another representation",
                )));
                *bad.status_mut() = StatusCode::BAD_GATEWAY;
                let outcome = outcome(Storing::No(NotStoredReason::Status));
                return Ok(self.ctx.finish(bad, outcome));
            }
            Answer::Response { outdates, alone } => {
                if outdates {
                    self.ctx.remove(&key).await;
                }
                if alone {
                    fallback(flight.take(), false);
                }
            }
        }
        let (mut head, body) = response.into_parts();
        let now = self.ctx.config.now();
        let expected = if head.status == StatusCode::NO_CONTENT {
            Some(0)
        } else {
            content_length(&head.headers).or(body.size_hint().exact())
        };
        // A declared length over the limit is known to be too large before any byte.
        let decision = self
            .ctx
            .storable_entry(&head, facts, &request_headers, now)
            .and_then(|entry| {
                if expected.is_some_and(|len| len > self.ctx.config.rules.max_body_size as u64) {
                    Err(NotStoredReason::TooLarge)
                } else {
                    Ok(entry)
                }
            });
        let (body, stored) = match decision {
            Ok(entry) => {
                let sink = self.ctx.sink(started);
                let capture = Capture::new(key.into_string(), entry, expected, flight, sink);
                CacheBody::capture(body, capture).await
            }
            Err(reason) => {
                self.ctx.record(EventKind::NotStored { reason });
                let NotKept {
                    hit_for_miss,
                    withdraw,
                } = not_kept(reason, head.status, had_entry);
                fallback(flight, hit_for_miss);
                if withdraw {
                    self.ctx.remove(&key).await;
                }
                (CacheBody::passthrough(body), Storing::No(reason))
            }
        };
        let outcome = outcome(stored);
        self.ctx.config.strip_own_fields(&mut head.headers);
        self.ctx.finish_head(&mut head.headers, outcome);
        self.ctx.attach_outcome(&mut head.extensions, outcome);
        Ok(Response::from_parts(head, body))
    }
}
