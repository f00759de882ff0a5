//! Targeted cache-control fields (RFC 9213): `CDN-Cache-Control` and fields like it, which
//! address caches of one kind — or one cache — and replace `Cache-Control` for them.
//!
//! A layer configured with an ordered list of field names takes, from each response, the
//! first of them with a valid, non-empty value — a Structured Field dictionary (RFC 9651),
//! whose directives are those of `Cache-Control` with integer values and boolean flags —
//! and decides storing and freshness by it alone, ignoring `Cache-Control` and `Expires`
//! (§2.1). `Age` still counts. An invalid field is ignored as a whole, as if absent; with
//! none valid, `Cache-Control` and `Expires` decide as usual. The response's own fields go
//! to the client unchanged.

use http::{HeaderMap, HeaderName};
use sfv::{Dictionary, ListEntry, Parser};

use super::cache_control::{CacheControl, MAX_DELTA_SECONDS};

/// `CDN-Cache-Control` (RFC 9213 §3): the field that targets every CDN cache.
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// The caching directives of a response for this cache: those of the first of `targeted`
/// with a valid, non-empty value, else its `Cache-Control`.
pub(crate) fn response_directives(headers: &HeaderMap, targeted: &[HeaderName]) -> CacheControl {
    targeted
        .iter()
        .find_map(|name| parse_targeted(headers, name))
        .unwrap_or_else(|| CacheControl::from_headers(headers))
}

/// The directives of the targeted field `name`, when it is there, a valid dictionary (its
/// lines joined, RFC 9651 §4.2) and not empty.
fn parse_targeted(headers: &HeaderMap, name: &HeaderName) -> Option<CacheControl> {
    let mut lines = headers.get_all(name).iter();
    let mut dictionary: Dictionary = Parser::new(lines.next()?.as_bytes()).parse().ok()?;
    for line in lines {
        dictionary = Parser::new(line.as_bytes())
            .parse_dictionary_with_visitor(dictionary)
            .ok()?;
    }
    if dictionary.is_empty() {
        return None;
    }
    let mut cc = CacheControl {
        targeted: true,
        ..CacheControl::default()
    };
    for (key, entry) in &dictionary {
        let value = match entry {
            ListEntry::Item(item) => &item.bare_item,
            // A list of field names (the qualified `private` or `no-cache`): the cache
            // does not store partial field sets from a targeted field, so the directive
            // counts whole, which errs on the side of not storing.
            ListEntry::InnerList(_) => &sfv::BareItem::Boolean(true),
        };
        let number = |field: &mut Option<u64>| {
            // A value of the wrong type, or negative, is no directive.
            if let Some(seconds) = value
                .as_integer()
                .and_then(|integer| u64::try_from(i64::from(integer)).ok())
            {
                *field = Some(seconds.min(MAX_DELTA_SECONDS));
            }
        };
        let set = value.as_boolean() == Some(true);
        match key.as_str() {
            "max-age" => number(&mut cc.max_age),
            "s-maxage" => number(&mut cc.s_maxage),
            "stale-while-revalidate" => number(&mut cc.stale_while_revalidate),
            "stale-if-error" => number(&mut cc.stale_if_error),
            "no-store" => cc.no_store |= set,
            "no-cache" => cc.no_cache |= set,
            "private" => cc.private |= set,
            "public" => cc.public |= set,
            "must-revalidate" => cc.must_revalidate |= set,
            "proxy-revalidate" => cc.proxy_revalidate |= set,
            "must-understand" => cc.must_understand |= set,
            _ => {}
        }
    }
    Some(cc)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    const MINE: HeaderName = HeaderName::from_static("myapp-cache-control");

    fn directives(pairs: &[(&'static str, &'static str)]) -> CacheControl {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        response_directives(&headers, &[MINE, CDN_CACHE_CONTROL])
    }

    #[test]
    fn the_first_valid_targeted_field_replaces_cache_control_rfc9213_2_1() {
        let cc = directives(&[
            ("cache-control", "no-store"),
            (
                "cdn-cache-control",
                "max-age=600, stale-while-revalidate=30",
            ),
        ]);
        assert_eq!(
            cc,
            CacheControl {
                max_age: Some(600),
                stale_while_revalidate: Some(30),
                targeted: true,
                ..CacheControl::default()
            }
        );
        // The list's order decides, not the response's.
        let cc = directives(&[
            ("cdn-cache-control", "max-age=600"),
            ("myapp-cache-control", "max-age=5, must-revalidate"),
        ]);
        assert_eq!((cc.max_age, cc.must_revalidate), (Some(5), true));
        // Lines of one field make one dictionary.
        let cc = directives(&[
            ("cdn-cache-control", "max-age=60"),
            ("cdn-cache-control", "private"),
        ]);
        assert!(cc.private && cc.max_age == Some(60));
    }

    #[test]
    fn an_invalid_or_empty_targeted_field_is_ignored_as_a_whole() {
        for invalid in [
            "max-age=60, ",
            "MAX-AGE=60",
            "max-age=\"60",
            "max-age=60;;",
            "",
            " ",
        ] {
            let cc = directives(&[
                ("cache-control", "max-age=7"),
                ("cdn-cache-control", invalid),
            ]);
            assert_eq!(
                (cc.max_age, cc.targeted),
                (Some(7), false),
                "{invalid:?}: Cache-Control decides"
            );
        }
        // An invalid first field lets the next one decide.
        let cc = directives(&[
            ("myapp-cache-control", "max-age=(("),
            ("cdn-cache-control", "max-age=9"),
        ]);
        assert_eq!(cc.max_age, Some(9));
    }

    #[test]
    fn values_of_the_wrong_type_are_no_directive() {
        let cc = directives(&[(
            "cdn-cache-control",
            "max-age=\"60\", s-maxage=-1, stale-if-error=1.5, no-store=?0, private=7, public",
        )]);
        assert_eq!(
            cc,
            CacheControl {
                public: true,
                targeted: true,
                ..CacheControl::default()
            }
        );
        // Flags with parameters still count; numbers saturate at 2^31.
        let cc = directives(&[(
            "cdn-cache-control",
            "no-store;reason=x, max-age=999999999999999",
        )]);
        assert!(cc.no_store);
        assert_eq!(cc.max_age, Some(MAX_DELTA_SECONDS));
        // A list of field names is the directive whole.
        assert!(directives(&[("cdn-cache-control", "private=(x-user)")]).private);
    }

    #[test]
    fn without_a_targeted_field_cache_control_decides() {
        let cc = directives(&[("cache-control", "max-age=3, no-cache")]);
        assert_eq!(
            (cc.max_age, cc.no_cache, cc.targeted),
            (Some(3), true, false)
        );
    }

    proptest! {
        #[test]
        fn any_bytes_are_directives_or_ignored_without_panicking(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                let mut headers = HeaderMap::new();
                headers.insert(CDN_CACHE_CONTROL, value);
                let _ = response_directives(&headers, &[CDN_CACHE_CONTROL]);
            }
        }
    }
}
