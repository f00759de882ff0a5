//! Tags (surrogate keys): the names an entry can be purged by, taken from the response's
//! tag headers (`Surrogate-Key`, space-separated; `Cache-Tag`, comma-separated) and from a
//! [`CacheTags`] extension the handler sets.
//!
//! Each tag is trimmed; empty ones and those holding a control character are dropped;
//! duplicates are kept once. Past a limit ([`TagLimits`]: a tag of 1024 bytes, 16 KiB of
//! tags, 64 tags by default, as CDNs have them) the rest are ignored and counted, and the
//! response is stored with the tags that fit: a tag never fails a request.
//!
//! ```
//! use axum::{Extension, routing::get, Router};
//! use tower_response_cache::CacheTags;
//!
//! // Purged with `handle.invalidate_tag("user:42")` (or "users").
//! let app: Router = Router::new().route(
//!     "/users/42",
//!     get(|| async { (Extension(CacheTags::new(["user:42", "users"])), "Ada") }),
//! );
//! ```

use http::{HeaderMap, HeaderName};

/// Tags for the response's entry, set by the handler as a response extension; they are
/// added to those of the response's tag headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheTags(Vec<String>);

impl CacheTags {
    /// Tags from any list of strings.
    pub fn new<I, T>(tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self(tags.into_iter().map(Into::into).collect())
    }

    /// The tags, as given.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// How a tag header lists its tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TagSeparator {
    /// Separated by spaces (Fastly's `Surrogate-Key`).
    Space,
    /// Separated by commas (Cloudflare's `Cache-Tag`).
    Comma,
}

impl TagSeparator {
    fn splits(self, byte: u8) -> bool {
        match self {
            Self::Space => byte == b' ' || byte == b'\t',
            Self::Comma => byte == b',',
        }
    }
}

/// How many tags, and how large, an entry keeps. Past a limit the remaining tags are
/// ignored (and counted in the stats' `tags_ignored`); the response is stored all the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TagLimits {
    /// The longest tag kept, in bytes; a longer one is ignored. Default: 1024.
    pub max_tag_len: usize,
    /// The most bytes of tags an entry keeps, all together. Default: 16 384.
    pub max_total_len: usize,
    /// The most tags an entry keeps. Default: 64.
    pub max_tags: usize,
}

impl Default for TagLimits {
    fn default() -> Self {
        Self {
            max_tag_len: 1024,
            max_total_len: 16 * 1024,
            max_tags: 64,
        }
    }
}

impl TagLimits {
    /// The defaults: 1024 bytes a tag, 16 KiB of tags, 64 tags.
    pub fn new() -> Self {
        Self::default()
    }

    /// The longest tag kept, in bytes.
    #[must_use]
    pub fn max_tag_len(mut self, bytes: usize) -> Self {
        self.max_tag_len = bytes;
        self
    }

    /// The most bytes of tags an entry keeps.
    #[must_use]
    pub fn max_total_len(mut self, bytes: usize) -> Self {
        self.max_total_len = bytes;
        self
    }

    /// The most tags an entry keeps.
    #[must_use]
    pub fn max_tags(mut self, count: usize) -> Self {
        self.max_tags = count;
        self
    }
}

/// Where a layer reads tags from, and what it does with the headers.
#[derive(Clone, Debug)]
pub(crate) struct TagRules {
    pub(crate) headers: Vec<(HeaderName, TagSeparator)>,
    /// Whether the tag headers are removed from responses (the client's and the stored
    /// entry's).
    pub(crate) strip: bool,
    pub(crate) limits: TagLimits,
}

impl Default for TagRules {
    fn default() -> Self {
        Self {
            headers: vec![
                (
                    HeaderName::from_static("surrogate-key"),
                    TagSeparator::Space,
                ),
                (HeaderName::from_static("cache-tag"), TagSeparator::Comma),
            ],
            strip: true,
            limits: TagLimits::default(),
        }
    }
}

/// The tags of a response, and how many were ignored.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Tags {
    pub(crate) tags: Vec<String>,
    pub(crate) ignored: u64,
}

impl TagRules {
    /// The tags of a response: its tag headers' first, then the handler's.
    pub(crate) fn extract(&self, headers: &HeaderMap, extension: Option<&CacheTags>) -> Tags {
        let mut tags = Tags::default();
        let mut total = 0;
        for (name, separator) in &self.headers {
            for value in headers.get_all(name) {
                for tag in value.as_bytes().split(|&byte| separator.splits(byte)) {
                    self.admit(&mut tags, &mut total, tag);
                }
            }
        }
        for tag in extension.map(CacheTags::as_slice).unwrap_or_default() {
            self.admit(&mut tags, &mut total, tag.as_bytes());
        }
        tags
    }

    fn admit(&self, tags: &mut Tags, total: &mut usize, tag: &[u8]) {
        let tag = tag.trim_ascii();
        if tag.is_empty() {
            return;
        }
        let limits = &self.limits;
        let fits = tag.len() <= limits.max_tag_len
            && tags.tags.len() < limits.max_tags
            && *total + tag.len() <= limits.max_total_len;
        // A header value holds no control character but tab; a handler's string may.
        let Some(tag) = std::str::from_utf8(tag)
            .ok()
            .filter(|tag| !tag.chars().any(char::is_control))
        else {
            tags.ignored += 1;
            return;
        };
        if tags.tags.iter().any(|kept| kept == tag) {
            return;
        }
        if !fits {
            tags.ignored += 1;
            return;
        }
        *total += tag.len();
        tags.tags.push(tag.to_owned());
    }

    /// Removes the tag headers, when the layer strips them.
    pub(crate) fn strip(&self, headers: &mut HeaderMap) {
        if self.strip {
            for (name, _) in &self.headers {
                headers.remove(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn both_headers_and_the_extension_are_read_trimmed_and_deduplicated() {
        let rules = TagRules::default();
        let tags = rules.extract(
            &headers(&[
                ("surrogate-key", "  user:42   users\tpage "),
                ("cache-tag", "users, team:7,,"),
            ]),
            Some(&CacheTags::new(["user:42", " extra "])),
        );
        assert_eq!(tags.tags, ["user:42", "users", "page", "team:7", "extra"]);
        assert_eq!(tags.ignored, 0);
    }

    #[test]
    fn limits_ignore_the_rest_and_count_it() {
        let rules = TagRules {
            limits: TagLimits::new().max_tags(2).max_tag_len(5),
            ..TagRules::default()
        };
        let tags = rules.extract(&headers(&[("surrogate-key", "a toolong b c")]), None);
        assert_eq!(tags.tags, ["a", "b"]);
        assert_eq!(tags.ignored, 2, "the long tag and the third tag");

        let rules = TagRules {
            limits: TagLimits::new().max_total_len(4),
            ..TagRules::default()
        };
        let tags = rules.extract(&headers(&[("cache-tag", "ab,cd,e")]), None);
        assert_eq!(tags.tags, ["ab", "cd"]);
        assert_eq!(tags.ignored, 1);
    }

    #[test]
    fn control_characters_and_non_utf8_are_rejected() {
        let rules = TagRules::default();
        let tags = rules.extract(
            &HeaderMap::new(),
            Some(&CacheTags::new(["ok", "bad\u{7}", "new\nline", "\u{85}x"])),
        );
        assert_eq!(tags.tags, ["ok"]);
        assert_eq!(tags.ignored, 3);
        let mut raw = HeaderMap::new();
        raw.insert(
            "surrogate-key",
            HeaderValue::from_bytes(b"caf\xe9 fine").unwrap(),
        );
        let tags = rules.extract(&raw, None);
        assert_eq!(tags.tags, ["fine"]);
        assert_eq!(tags.ignored, 1);
    }

    #[test]
    fn stripping_removes_only_the_tag_headers() {
        let rules = TagRules::default();
        let mut map = headers(&[
            ("surrogate-key", "a"),
            ("cache-tag", "b"),
            ("content-type", "text/plain"),
        ]);
        rules.strip(&mut map);
        assert_eq!(map.len(), 1);
        let keep = TagRules {
            strip: false,
            ..TagRules::default()
        };
        let mut map = headers(&[("surrogate-key", "a")]);
        keep.strip(&mut map);
        assert_eq!(map.len(), 1);
    }

    proptest! {
        #[test]
        fn extracted_tags_are_within_the_limits(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
            max_tags in 0usize..10,
            max_tag_len in 0usize..50,
            max_total_len in 0usize..200,
        ) {
            let rules = TagRules {
                limits: TagLimits { max_tag_len, max_total_len, max_tags },
                ..TagRules::default()
            };
            let mut map = HeaderMap::new();
            for value in &values {
                if let Ok(value) = HeaderValue::from_bytes(value) {
                    map.append("surrogate-key", value);
                }
            }
            let tags = rules.extract(&map, None);
            prop_assert!(tags.tags.len() <= max_tags);
            prop_assert!(tags.tags.iter().map(String::len).sum::<usize>() <= max_total_len);
            for (i, tag) in tags.tags.iter().enumerate() {
                prop_assert!(!tag.is_empty() && tag.len() <= max_tag_len);
                prop_assert_eq!(tag.trim_ascii(), tag.as_str());
                prop_assert!(!tag.chars().any(char::is_control));
                prop_assert!(!tags.tags[..i].contains(tag), "duplicate {}", tag);
            }
        }
    }
}
