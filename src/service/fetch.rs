//! The fetch: the origin call for a miss, refresh or revalidation, stale-if-error, the
//! storability decision, and the hand-off of a storable response to the fill.

use super::*;
use crate::policy::freshness::{FreshnessSettings, freshness};

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
    /// The route's freshness settings over the layer's.
    pub(super) fn freshness_settings(&self) -> FreshnessSettings {
        let policy = self.route.policy.as_deref();
        let config = &self.config;
        FreshnessSettings {
            honor_origin: policy
                .and_then(|policy| policy.honor_origin)
                .unwrap_or(config.honor_origin),
            heuristic: config.heuristic,
            ttl: policy.and_then(|policy| policy.ttl).or(config.default_ttl),
            negative_ttl: policy
                .and_then(|policy| policy.negative_ttl)
                .or(config.negative_ttl),
            stale_while_revalidate: policy
                .and_then(|policy| policy.stale_while_revalidate)
                .or(config.stale_while_revalidate),
            stale_if_error: policy
                .and_then(|policy| policy.stale_if_error)
                .or(config.stale_if_error),
            keep: config.rules.keep,
            sliding: self.sliding(),
        }
    }

    pub(super) fn storable_entry(
        &self,
        head: &http::response::Parts,
        request: RequestFacts,
        request_headers: &HeaderMap,
        now: SystemTime,
    ) -> Result<CachedResponse, NotStoredReason> {
        let cc = self.config.response_directives(&head.headers);
        let mut settings = self.freshness_settings();
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
        if !matches!(
            reason,
            NotStoredReason::Authorization
                | NotStoredReason::Cookie
                | NotStoredReason::Head
                | NotStoredReason::Incomplete
                | NotStoredReason::Malformed
        ) {
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

    pub(super) async fn fetch<ReqB, ResB>(
        mut self,
        parts: Parts,
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
            .filter(|entry| stored.stands_in && entry.may_serve_if_error(SystemTime::now()));
        let revalidate = stored.entry.filter(|entry| entry.has_validator());
        let facts = RequestFacts {
            head: parts.method == Method::HEAD,
            authorization: parts.headers.contains_key(header::AUTHORIZATION),
            cookie: self.ctx.cookie,
        };
        // The response's `Vary` names the request headers it depends on; they are only known
        // once it arrives, so the request's headers are kept until then.
        let request_headers = parts.headers.clone();
        let mut parts = parts;
        // A GET fill asks for the whole response, as nginx does: a client's own validators
        // would get a 304, which cannot be stored (nor shared with waiters). The client
        // receives the full response. A HEAD is never stored: its validators go as they are.
        let client_conditional = request_headers.contains_key(header::IF_NONE_MATCH)
            || request_headers.contains_key(header::IF_MODIFIED_SINCE);
        if !facts.head || revalidate.is_some() {
            parts.headers.remove(header::IF_NONE_MATCH);
            parts.headers.remove(header::IF_MODIFIED_SINCE);
        }
        // Revalidating, the cache sends its own validators (RFC 9111 §4.3.1): the entity
        // tag, and the modification date as well for origins that only know dates.
        if let Some(entry) = &revalidate {
            if let Some(etag) = entry.etag() {
                parts.headers.insert(header::IF_NONE_MATCH, etag.clone());
            }
            if let Some(date) = entry.last_modified() {
                parts
                    .headers
                    .insert(header::IF_MODIFIED_SINCE, date.clone());
            }
        }
        // An invalidation from now on means the response may predate a change.
        let started = self.ctx.config.fetch_started();
        let watched = watched_pattern(&self.ctx.config, &parts);
        let result = self
            .ctx
            .origin(self.inner.call(Request::from_parts(parts, body)))
            .await;
        if claimed_on_the_way(&self.ctx.config, watched.as_ref()) {
            if let Some(lead) = flight {
                // The waiters go on to the route's own layer.
                lead.fallback(false);
            }
            return result.map(|response| response.map(CacheBody::passthrough));
        }
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                // The waiters try for themselves rather than queue behind another attempt.
                if let Some(lead) = flight {
                    lead.fallback(false);
                }
                return match stale {
                    Some(stale) => {
                        Ok(self
                            .ctx
                            .serve_stale(&stale, &request_headers, facts.head, false))
                    }
                    None => {
                        // No response, but the request was a miss (or refresh) all the same.
                        self.ctx.count(match refresh {
                            Some(reason) => Outcome::Refresh {
                                reason,
                                stored: Storing::No(NotStoredReason::Incomplete),
                            },
                            None => Outcome::Miss {
                                stored: Storing::No(NotStoredReason::Incomplete),
                            },
                        });
                        Err(error)
                    }
                };
            }
        };
        // RFC 5861 §4: a 500, 502, 503 or 504 is an error the stale entry stands in for.
        if let Some(stale) = &stale
            && matches!(response.status().as_u16(), 500 | 502 | 503 | 504)
        {
            if let Some(lead) = flight {
                lead.fallback(false);
            }
            return Ok(self
                .ctx
                .serve_stale(stale, &request_headers, facts.head, false));
        }
        // RFC 9111 §4.3.3, §4.3.4: a 304 for the stored representation freshens it; the
        // body stays the stored one. §4.3.5: so does a 200 to a HEAD that describes it,
        // whose fields update the stored ones alike; one that does not outdates it.
        if let Some(entry) = &revalidate {
            let status = response.status();
            let head_update = facts.head && status == StatusCode::OK;
            let describes = if head_update {
                head_describes(entry, response.headers())
            } else {
                status == StatusCode::NOT_MODIFIED && same_representation(entry, response.headers())
            };
            if describes {
                let (head, _) = response.into_parts();
                return Ok(self
                    .ctx
                    .revalidated(
                        entry,
                        head,
                        Fill {
                            key,
                            flight,
                            started,
                        },
                        &request_headers,
                        facts,
                    )
                    .await);
            }
            if head_update {
                self.ctx.remove(&key).await;
            }
            if status == StatusCode::NOT_MODIFIED {
                // A 304 about another representation than the stored one (an origin that
                // contradicts itself): it updates nothing (§4.3.4), the entry is outdated,
                // and a client that did not ask conditionally cannot take a 304.
                self.ctx.remove(&key).await;
                if let Some(lead) = flight.take() {
                    lead.fallback(false);
                }
                if !client_conditional {
                    let mut bad = Response::new(CacheBody::stored(Bytes::from_static(
                        b"bad gateway: the origin answered 304 for another representation",
                    )));
                    *bad.status_mut() = StatusCode::BAD_GATEWAY;
                    let stored = Storing::No(NotStoredReason::Status);
                    let outcome = match refresh {
                        Some(reason) => Outcome::Refresh { reason, stored },
                        None => Outcome::Miss { stored },
                    };
                    return Ok(self.ctx.finish(bad, outcome));
                }
            }
        }
        let (mut head, body) = response.into_parts();
        let now = SystemTime::now();
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
                let capture = Capture::new(
                    key.into_string(),
                    entry,
                    expected,
                    flight,
                    self.ctx.sink(started),
                );
                CacheBody::capture(body, capture).await
            }
            Err(reason) => {
                self.ctx.record(EventKind::NotStored { reason });
                if let Some(lead) = flight {
                    // Waiters fetch for themselves, and for a while the key's requests are
                    // not serialized (hit-for-miss) — unless it was this request (its
                    // credentials, its method), not the response, that kept it out.
                    lead.fallback(!matches!(
                        reason,
                        NotStoredReason::Authorization
                            | NotStoredReason::Cookie
                            | NotStoredReason::Head
                    ));
                }
                // The origin's latest answer for a stored entry may not be kept: nor may
                // the entry — unless that answer is a server error, which says nothing
                // about the entry (it may still be revalidated once the origin recovers).
                // Nor a 206 (RFC 9111 §3.4): a part never replaces a stored whole.
                if had_entry
                    && !head.status.is_server_error()
                    && head.status != StatusCode::PARTIAL_CONTENT
                {
                    self.ctx.withdraw(&key, reason).await;
                }
                (CacheBody::passthrough(body), Storing::No(reason))
            }
        };
        let outcome = match refresh {
            Some(reason) => Outcome::Refresh { reason, stored },
            None => Outcome::Miss { stored },
        };
        self.ctx.config.strip_own_fields(&mut head.headers);
        self.ctx.finish_head(&mut head.headers, outcome);
        self.ctx.attach_outcome(&mut head.extensions, outcome);
        Ok(Response::from_parts(head, body))
    }
}
