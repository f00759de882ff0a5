//! `Cache-Control` parsing (RFC 9111 §5.2), tolerant of what real traffic sends.
//!
//! Directive names are case-insensitive, whitespace around commas and `=` is ignored, values
//! may be quoted, unknown directives are skipped, and all field lines are read. For a
//! repeated numeric directive the first occurrence wins (§4.2.1); numbers too large for the
//! cache saturate at 2^31 seconds (§1.2.2); a numeric directive whose value does not parse
//! counts as zero, which errs on the side of not reusing a response.

use http::HeaderMap;
use http::header::CACHE_CONTROL;

/// The largest delta-seconds value the cache represents (RFC 9111 §1.2.2).
pub(crate) const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// The directives the cache acts on, from request or response `Cache-Control`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CacheControl {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) must_understand: bool,
    pub(crate) only_if_cached: bool,
    pub(crate) max_age: Option<u64>,
    pub(crate) s_maxage: Option<u64>,
    pub(crate) stale_while_revalidate: Option<u64>,
    pub(crate) stale_if_error: Option<u64>,
    /// A qualified `no-cache="…"` or `private="…"` was seen: the response may be stored
    /// without the fields it lists ([`qualified_field`]).
    pub(crate) qualified: bool,
    /// Read from a targeted field (RFC 9213), which replaces `Expires` too.
    pub(crate) targeted: bool,
}

impl CacheControl {
    /// Parses every `Cache-Control` field line of `headers`.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        for value in headers.get_all(CACHE_CONTROL) {
            for (name, value) in Directives::new(value.as_bytes()) {
                cc.apply(name, value);
            }
        }
        cc
    }

    fn apply(&mut self, name: &[u8], value: Option<&[u8]>) {
        let flag = |field: &mut bool| *field = true;
        let number = |field: &mut Option<u64>| {
            if field.is_none() {
                *field = Some(value.map_or(0, parse_delta_seconds));
            }
        };
        // Case-insensitive names (§5.2), compared without allocating.
        let is = |directive: &[u8]| name.eq_ignore_ascii_case(directive);
        // A qualified `no-cache` or `private` (RFC 9111 §5.2.2.4, §5.2.2.7) restricts only
        // the fields it lists, which are not stored; an empty list is the unqualified form.
        let qualified = field_list(value).next().is_some();
        if is(b"no-store") {
            flag(&mut self.no_store);
        } else if is(b"no-cache") {
            flag(if qualified {
                &mut self.qualified
            } else {
                &mut self.no_cache
            });
        } else if is(b"private") {
            flag(if qualified {
                &mut self.qualified
            } else {
                &mut self.private
            });
        } else if is(b"public") {
            flag(&mut self.public);
        } else if is(b"must-revalidate") {
            flag(&mut self.must_revalidate);
        } else if is(b"proxy-revalidate") {
            flag(&mut self.proxy_revalidate);
        } else if is(b"must-understand") {
            flag(&mut self.must_understand);
        } else if is(b"only-if-cached") {
            flag(&mut self.only_if_cached);
        } else if is(b"max-age") {
            number(&mut self.max_age);
        } else if is(b"s-maxage") {
            number(&mut self.s_maxage);
        } else if is(b"stale-while-revalidate") {
            number(&mut self.stale_while_revalidate);
        } else if is(b"stale-if-error") {
            number(&mut self.stale_if_error);
        }
    }
}

/// `1*DIGIT`, saturating at [`MAX_DELTA_SECONDS`]; anything else is zero.
pub(crate) fn parse_delta_seconds(value: &[u8]) -> u64 {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    value.iter().fold(0u64, |acc, digit| {
        acc.saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
            .min(MAX_DELTA_SECONDS)
    })
}

/// The field names of a directive's value (`"Set-Cookie, X-User"`), trimmed, empty ones
/// skipped.
fn field_list(value: Option<&[u8]>) -> impl Iterator<Item = &[u8]> {
    value
        .unwrap_or_default()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|name| !name.is_empty())
}

/// Whether `headers`' qualified `no-cache="…"` / `private="…"` directives list `name`
/// (compared without case): such a field is never stored (RFC 9111 §5.2.2.4, §5.2.2.7).
pub(crate) fn qualified_field(headers: &HeaderMap, name: &[u8]) -> bool {
    headers.get_all(CACHE_CONTROL).iter().any(|line| {
        Directives::new(line.as_bytes()).any(|(directive, value)| {
            (directive.eq_ignore_ascii_case(b"no-cache")
                || directive.eq_ignore_ascii_case(b"private"))
                && field_list(value).any(|listed| listed.eq_ignore_ascii_case(name))
        })
    })
}

/// Iterates `name[=value]` pairs of one field line, splitting on commas outside quotes.
struct Directives<'a> {
    rest: &'a [u8],
}

impl<'a> Directives<'a> {
    fn new(line: &'a [u8]) -> Self {
        Self { rest: line }
    }
}

impl<'a> Iterator for Directives<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            // Find the end of this directive: the first comma not inside a quoted string.
            let mut quoted = false;
            let mut escaped = false;
            let mut end = self.rest.len();
            for (i, &byte) in self.rest.iter().enumerate() {
                if escaped {
                    escaped = false;
                } else if quoted && byte == b'\\' {
                    escaped = true;
                } else if byte == b'"' {
                    quoted = !quoted;
                } else if byte == b',' && !quoted {
                    end = i;
                    break;
                }
            }
            let directive = &self.rest[..end];
            self.rest = self.rest.get(end + 1..).unwrap_or_default();
            let directive = directive.trim_ascii();
            if directive.is_empty() {
                continue;
            }
            return Some(match directive.iter().position(|&b| b == b'=') {
                Some(eq) => {
                    let name = directive[..eq].trim_ascii();
                    let value = directive[eq + 1..].trim_ascii();
                    let value = value
                        .strip_prefix(b"\"")
                        .and_then(|v| v.strip_suffix(b"\""))
                        .unwrap_or(value);
                    (name, Some(value))
                }
                None => (directive, None),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parse(lines: &[&str]) -> CacheControl {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(CACHE_CONTROL, HeaderValue::from_str(line).unwrap());
        }
        CacheControl::from_headers(&headers)
    }

    #[test]
    fn directives_are_case_and_space_insensitive() {
        let cc = parse(&["  Public ,MAX-AGE = 60,  No-Cache"]);
        assert!(cc.public && cc.no_cache);
        assert_eq!(cc.max_age, Some(60));
    }

    #[test]
    fn quoted_values_and_commas_inside_quotes() {
        let cc = parse(&[r#"private="set-cookie, x-a", max-age="30""#]);
        assert!(!cc.private && cc.qualified);
        assert_eq!(cc.max_age, Some(30));
        assert!(!cc.no_store);
    }

    #[test]
    fn qualified_no_cache_and_private_list_fields_rfc9111_5_2_2_4_and_5_2_2_7() {
        let cc = parse(&[r#"no-cache="Set-Cookie", max-age=60"#]);
        assert!(!cc.no_cache && cc.qualified);
        let cc = parse(&[r#"no-cache, private="x-user""#]);
        assert!(cc.no_cache && !cc.private && cc.qualified);
        // An empty list is the unqualified form.
        let cc = parse(&[r#"private="", no-cache=" , ""#]);
        assert!(cc.private && cc.no_cache && !cc.qualified);
        let mut headers = HeaderMap::new();
        headers.append(
            CACHE_CONTROL,
            HeaderValue::from_static(r#"max-age=60, no-cache="Set-Cookie, X-Session""#),
        );
        headers.append(CACHE_CONTROL, HeaderValue::from_static("private=x-user"));
        for name in ["set-cookie", "X-SESSION", "x-user"] {
            assert!(qualified_field(&headers, name.as_bytes()), "{name}");
        }
        for name in ["max-age", "x-other", "no-cache", ""] {
            assert!(!qualified_field(&headers, name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn all_field_lines_are_read_and_first_number_wins() {
        let cc = parse(&["max-age=10", "no-store, max-age=99", "s-maxage=5"]);
        assert!(cc.no_store);
        assert_eq!(cc.max_age, Some(10));
        assert_eq!(cc.s_maxage, Some(5));
    }

    #[test]
    fn huge_numbers_saturate_and_garbage_is_zero() {
        let cc = parse(&["max-age=99999999999999999999999999, s-maxage=abc, stale-if-error"]);
        assert_eq!(cc.max_age, Some(MAX_DELTA_SECONDS));
        assert_eq!(cc.s_maxage, Some(0));
        assert_eq!(cc.stale_if_error, Some(0));
    }

    #[test]
    fn empty_members_and_unknown_directives_are_skipped() {
        let cc = parse(&[",, ,immutable, foo=bar,only-if-cached,"]);
        assert!(cc.only_if_cached);
        assert_eq!(
            cc,
            CacheControl {
                only_if_cached: true,
                ..Default::default()
            }
        );
    }
}
