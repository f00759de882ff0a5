//! What the origin's answer to a fetch means: pure decisions over the request sent, the
//! status and fields that came back, and the stored entry the fetch may revalidate or stand
//! in with. [`fetch`](super::Call::fetch) carries them out.

use http::StatusCode;
use http::header::{self, HeaderMap};

use super::revalidate::{head_describes, same_representation};
use crate::entry::CachedResponse;
use crate::policy::NotStoredReason;

/// The request's validators as the origin gets them. A GET fill asks for the whole
/// response, as nginx does: a client's own validators would get a 304, which cannot be
/// stored (nor shared with waiters); the client receives the full response. A HEAD is never
/// stored: its validators go as they are. Revalidating, the cache sends its own (RFC 9111
/// §4.3.1): the entity tag, and the modification date as well for origins that only know
/// dates.
pub(super) fn origin_validators(
    headers: &mut HeaderMap,
    revalidating: Option<&CachedResponse>,
    head: bool,
) {
    if !head || revalidating.is_some() {
        headers.remove(header::IF_NONE_MATCH);
        headers.remove(header::IF_MODIFIED_SINCE);
    }
    if let Some(entry) = revalidating {
        if let Some(etag) = entry.etag() {
            headers.insert(header::IF_NONE_MATCH, etag.clone());
        }
        if let Some(date) = entry.last_modified() {
            headers.insert(header::IF_MODIFIED_SINCE, date.clone());
        }
    }
}

/// What came back from the origin, and what the fetch had in hand.
#[derive(Clone, Copy)]
pub(super) struct Fetched<'a> {
    pub(super) status: StatusCode,
    pub(super) headers: &'a HeaderMap,
    /// The stored entry the fetch revalidated (it has a validator).
    pub(super) revalidating: Option<&'a CachedResponse>,
    /// A stale entry may stand in for a failure (within its stale-if-error window).
    pub(super) stale: bool,
    /// The request is a HEAD.
    pub(super) head: bool,
    /// The client's request carried validators of its own.
    pub(super) client_conditional: bool,
}

/// What to do with the origin's response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Answer {
    /// An error the stale entry stands in for (RFC 5861 §4: 500, 502, 503, 504): answer
    /// with it.
    StandIn,
    /// About the stored representation — a 304 for it (RFC 9111 §4.3.3, §4.3.4), or a 200
    /// to a HEAD that describes it (§4.3.5): the entry, its fields updated, is stored again
    /// and answers.
    Freshen,
    /// A 304 about another representation than the stored one (an origin that contradicts
    /// itself): it updates nothing (§4.3.4), the entry is outdated and goes, and a client
    /// that did not ask conditionally cannot take a 304: `502`.
    Contradicted,
    /// A response of its own, to store or pass on; `outdates` when the stored entry goes
    /// first (a 200 to a HEAD that does not describe it, a contradicting 304 passed to a
    /// client that asked conditionally), and, for that 304, `alone`: the flight's waiters
    /// fetch for themselves at once.
    Response { outdates: bool, alone: bool },
}

/// The decision on the origin's response.
pub(super) fn answer(fetched: Fetched<'_>) -> Answer {
    let Fetched {
        status,
        headers,
        revalidating,
        stale,
        head,
        client_conditional,
    } = fetched;
    if stale && matches!(status.as_u16(), 500 | 502 | 503 | 504) {
        return Answer::StandIn;
    }
    let Some(entry) = revalidating else {
        return Answer::Response {
            outdates: false,
            alone: false,
        };
    };
    let head_update = head && status == StatusCode::OK;
    let describes = if head_update {
        head_describes(entry, headers)
    } else {
        status == StatusCode::NOT_MODIFIED && same_representation(entry, headers)
    };
    match () {
        () if describes => Answer::Freshen,
        () if status == StatusCode::NOT_MODIFIED && !client_conditional => Answer::Contradicted,
        () => Answer::Response {
            outdates: head_update || status == StatusCode::NOT_MODIFIED,
            alone: status == StatusCode::NOT_MODIFIED,
        },
    }
}

/// What a response the cache may not keep does beyond this request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct NotKept {
    /// For a while the key's requests are not serialized (hit-for-miss), and the flight's
    /// waiters fetch for themselves — unless it was this request (its credentials, its
    /// method), not the response, that kept it out.
    pub(super) hit_for_miss: bool,
    /// The stored entry goes: the origin's latest answer for it may not be kept, nor may
    /// it — unless that was down to this request, or the answer is a server error (which
    /// says nothing about the entry: it may still be revalidated once the origin recovers)
    /// or a 206 (RFC 9111 §3.4: a part never replaces a stored whole).
    pub(super) withdraw: bool,
}

/// What not keeping a response for `reason` does, when the fetch had a stored entry
/// (`had_entry`).
pub(super) fn not_kept(reason: NotStoredReason, status: StatusCode, had_entry: bool) -> NotKept {
    let requests_own = matches!(
        reason,
        NotStoredReason::Authorization | NotStoredReason::Cookie | NotStoredReason::Head
    );
    NotKept {
        hit_for_miss: !requests_own,
        withdraw: had_entry
            && withdraws(reason)
            && !status.is_server_error()
            && status != StatusCode::PARTIAL_CONTENT,
    }
}

/// Whether a response the origin sent for a stored entry, which the cache may not keep for
/// `reason`, takes the entry with it: unless that was down to this request (its
/// credentials, its method) or the response never completed.
pub(super) fn withdraws(reason: NotStoredReason) -> bool {
    !matches!(
        reason,
        NotStoredReason::Authorization
            | NotStoredReason::Cookie
            | NotStoredReason::Head
            | NotStoredReason::Incomplete
            | NotStoredReason::Malformed
    )
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::HeaderValue;

    use super::*;

    fn stored(etag: &'static str) -> CachedResponse {
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, HeaderValue::from_static(etag));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        CachedResponse::new(StatusCode::OK, headers, Bytes::from_static(b"hello"))
    }

    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        fields
            .iter()
            .map(|(name, value)| {
                (
                    header::HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    fn fetched<'a>(
        status: u16,
        headers: &'a HeaderMap,
        revalidating: Option<&'a CachedResponse>,
    ) -> Fetched<'a> {
        Fetched {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            revalidating,
            stale: false,
            head: false,
            client_conditional: false,
        }
    }

    #[test]
    fn a_fill_sends_the_caches_validators_never_the_clients() {
        let entry = stored("\"v1\"");
        let mut sent = headers(&[("if-none-match", "\"client\""), ("if-modified-since", "x")]);
        origin_validators(&mut sent, None, false);
        assert!(sent.is_empty(), "a GET fill asks for the whole response");
        let mut sent = headers(&[("if-none-match", "\"client\"")]);
        origin_validators(&mut sent, None, true);
        assert_eq!(
            sent["if-none-match"], "\"client\"",
            "a HEAD's go as they are"
        );
        let mut sent = headers(&[("if-none-match", "\"client\"")]);
        origin_validators(&mut sent, Some(&entry), false);
        assert_eq!(sent["if-none-match"], "\"v1\"", "revalidating: the entry's");
        assert!(!sent.contains_key("if-modified-since"));
    }

    #[test]
    fn a_server_error_is_stood_in_for_within_stale_if_error_only() {
        let none = HeaderMap::new();
        for status in [500, 502, 503, 504] {
            let with_stale = Fetched {
                stale: true,
                ..fetched(status, &none, None)
            };
            assert_eq!(answer(with_stale), Answer::StandIn, "{status}");
            assert_eq!(
                answer(fetched(status, &none, None)),
                Answer::Response {
                    outdates: false,
                    alone: false
                }
            );
        }
        let not_listed = Fetched {
            stale: true,
            ..fetched(501, &none, None)
        };
        assert_eq!(
            answer(not_listed),
            Answer::Response {
                outdates: false,
                alone: false
            }
        );
    }

    #[test]
    fn a_304_for_the_stored_representation_freshens_it_and_another_contradicts() {
        let entry = stored("\"v1\"");
        let same = headers(&[("etag", "W/\"v1\"")]);
        assert_eq!(answer(fetched(304, &same, Some(&entry))), Answer::Freshen);
        let none = HeaderMap::new();
        assert_eq!(
            answer(fetched(304, &none, Some(&entry))),
            Answer::Freshen,
            "without an ETag, the validators sent were the entry's"
        );
        let other = headers(&[("etag", "\"v2\"")]);
        assert_eq!(
            answer(fetched(304, &other, Some(&entry))),
            Answer::Contradicted
        );
        let conditional = Fetched {
            client_conditional: true,
            ..fetched(304, &other, Some(&entry))
        };
        assert_eq!(
            answer(conditional),
            Answer::Response {
                outdates: true,
                alone: true
            },
            "a client that asked conditionally takes the 304"
        );
        assert_eq!(
            answer(fetched(200, &other, Some(&entry))),
            Answer::Response {
                outdates: false,
                alone: false
            },
            "a full response replaces the entry as any miss's would"
        );
    }

    #[test]
    fn a_200_to_a_head_freshens_what_it_describes_and_outdates_the_rest() {
        let entry = stored("\"v1\"");
        let head = |fields: &'static [(&'static str, &'static str)]| headers(fields);
        let describes = head(&[("etag", "\"v1\""), ("content-length", "5")]);
        let as_head = |headers| Fetched {
            head: true,
            ..fetched(200, headers, Some(&entry))
        };
        assert_eq!(answer(as_head(&describes)), Answer::Freshen);
        let longer = head(&[("etag", "\"v1\""), ("content-length", "6")]);
        assert_eq!(
            answer(as_head(&longer)),
            Answer::Response {
                outdates: true,
                alone: false
            }
        );
        let no_validator = head(&[("content-length", "5")]);
        assert_eq!(
            answer(as_head(&no_validator)),
            Answer::Response {
                outdates: true,
                alone: false
            }
        );
    }

    #[test]
    fn what_a_response_not_kept_does_depends_on_why() {
        let ok = StatusCode::OK;
        assert_eq!(
            not_kept(NotStoredReason::Authorization, ok, true),
            NotKept {
                hit_for_miss: false,
                withdraw: false
            },
            "the request's own credentials: the entry stays, waiters keep waiting"
        );
        let no_store = not_kept(NotStoredReason::NoStore, ok, true);
        assert!(no_store.hit_for_miss && no_store.withdraw);
        assert!(!not_kept(NotStoredReason::NoStore, ok, false).withdraw);
        assert!(
            !not_kept(
                NotStoredReason::Status,
                StatusCode::SERVICE_UNAVAILABLE,
                true
            )
            .withdraw,
            "a server error says nothing of the entry"
        );
        assert!(!not_kept(NotStoredReason::Status, StatusCode::PARTIAL_CONTENT, true).withdraw);
        assert!(!not_kept(NotStoredReason::Incomplete, ok, true).withdraw);
    }
}
