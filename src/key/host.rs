//! The request's host as a key holds it: from the URI's authority or the `Host` header,
//! checked and normalized (RFC 3986 §3.2.2, §6.2.2), its port kept only when not the
//! scheme's default.

use super::escape::{HOST_LITERAL, HOST_NORMAL, HOST_PLAIN, IP_LITERAL, REG_NAME, push_escaped};
use super::*;

/// The host a request is for: the URI's authority, else its `Host` header.
pub(super) struct RequestHost<'a> {
    /// Checked: `reg-name`, or an IP literal in brackets.
    host: &'a str,
    /// The port, unless it is the default of the URI's scheme.
    port: Option<u16>,
    /// The port's digits as sent, when they are its canonical form (no leading zeros).
    port_text: Option<&'a str>,
    /// The host is known to be [`HOST_NORMAL`]: it goes into the key as it is.
    normal: bool,
}

impl<'a> RequestHost<'a> {
    /// `Ok(None)` without any host; `None` when it is ambiguous: several `Host` headers, a
    /// `Host` that is no valid `host[:port]`, or one that names another host than the URI.
    pub(super) fn of(parts: &'a Parts) -> Option<Option<Self>> {
        let mut values = parts.headers.get_all(header::HOST).iter();
        let header = values.next();
        if values.next().is_some() {
            return None;
        }
        let scheme = parts.uri.scheme();
        let from_header = match header {
            // `to_str` is a cheap check (visible ASCII) that gives the `&str` the key is
            // built from; what else a host may not hold, `parse` checks.
            Some(value) => {
                let text = value.to_str().ok()?;
                Some(match Self::plain(text, scheme) {
                    Some(host) => host,
                    None => Self::parse(text.trim_ascii(), scheme)?,
                })
            }
            None => None,
        };
        let from_uri = parts
            .uri
            .authority()
            .map(|authority| Self::from_authority(authority, scheme));
        match (from_uri, from_header) {
            (Some(uri), Some(header)) if !uri.same_as(&header) => None,
            (Some(host), _) | (None, Some(host)) => Some(Some(host)),
            (None, None) => Some(None),
        }
    }

    /// The common `Host`, read in one pass: a host of [`HOST_PLAIN`] bytes (lower case, no
    /// escapes) and an optional port in canonical digits. `None` for anything else —
    /// upper case, an IP literal, spaces around it, a malformed value — which
    /// [`parse`](Self::parse) reads (or refuses) as it reads every `Host`.
    #[inline]
    fn plain(text: &'a str, scheme: Option<&Scheme>) -> Option<Self> {
        let value = text.as_bytes();
        let mut end = value.len();
        for (at, &byte) in value.iter().enumerate() {
            if byte == b':' {
                end = at;
                break;
            }
            if !HOST_PLAIN[usize::from(byte)] {
                return None;
            }
        }
        // Every byte up to `end` is ASCII: a character boundary.
        let host = text.get(..end)?;
        if host.is_empty() {
            return None;
        }
        let (port, port_text) = match value.get(end + 1..) {
            // No `:`.
            None => (None, None),
            Some(digits) if digits.first().is_some_and(|&first| first != b'0') => {
                let port = parse_port(digits)??;
                (Some(port), text.get(end + 1..))
            }
            // `host:`, or a port with a leading zero.
            Some(_) => return None,
        };
        Some(Self {
            host,
            port: port.filter(|&port| Some(port) != default_port(scheme)),
            port_text,
            normal: true,
        })
    }

    /// A `Host` value: `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2) — a
    /// reg-name or IPv4 address (unreserved, sub-delims, `%`), or an IP literal in brackets,
    /// and a port of up to five digits; no user information. Checked with byte tables
    /// rather than `Authority::try_from`, which copies the value and looks for what a `Host`
    /// may not hold: this runs for every request, hits included.
    pub(super) fn parse(text: &'a str, scheme: Option<&Scheme>) -> Option<Self> {
        let value = text.as_bytes();
        let (host_len, rest) = if value.first() == Some(&b'[') {
            let end = value.iter().position(|&b| b == b']')?;
            let inside = &value[1..end];
            if inside.is_empty() || !inside.iter().all(|&b| IP_LITERAL[usize::from(b)]) {
                return None;
            }
            (end + 1, &value[end + 1..])
        } else {
            let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
            let host = &value[..end];
            if host.is_empty() || !host.iter().all(|&b| REG_NAME[usize::from(b)]) {
                return None;
            }
            (end, &value[end..])
        };
        let (port, digits) = match rest {
            [] => (None, &[][..]),
            [b':', digits @ ..] => (parse_port(digits)?, digits),
            _ => return None,
        };
        // Every byte up to here is ASCII: the slices fall on character boundaries.
        Some(Self {
            host: text.get(..host_len)?,
            port: port.filter(|&port| Some(port) != default_port(scheme)),
            port_text: (digits.first() != Some(&b'0') || digits.len() == 1)
                .then(|| text.get(text.len() - digits.len()..))
                .flatten(),
            normal: false,
        })
    }

    pub(super) fn from_authority(authority: &'a Authority, scheme: Option<&Scheme>) -> Self {
        Self {
            host: authority.host(),
            port: authority
                .port_u16()
                .filter(|&port| Some(port) != default_port(scheme)),
            port_text: None,
            normal: false,
        }
    }

    pub(super) fn same_as(&self, other: &Self) -> bool {
        self.host.eq_ignore_ascii_case(other.host) && self.port == other.port
    }

    /// The host in lower case with its bytes escaped as the rest of the key, and `:port`.
    pub(super) fn push_to(&self, out: &mut String) {
        if self.normal || self.host.bytes().all(|byte| HOST_NORMAL[usize::from(byte)]) {
            out.push_str(self.host);
        } else {
            for byte in self.host.bytes() {
                if HOST_LITERAL[usize::from(byte)] {
                    out.push(char::from(byte.to_ascii_lowercase()));
                } else {
                    push_escaped(out, byte);
                }
            }
        }
        let Some(port) = self.port else {
            return;
        };
        out.push(':');
        if let Some(text) = self.port_text {
            out.push_str(text);
        } else {
            let mut digits = [0u8; 5];
            let mut start = digits.len();
            let mut rest = port;
            loop {
                start -= 1;
                digits[start] = b'0' + (rest % 10) as u8;
                rest /= 10;
                if rest == 0 {
                    break;
                }
            }
            for &digit in &digits[start..] {
                out.push(char::from(digit));
            }
        }
    }
}

/// A port: up to five digits, at most 65 535; empty is no port (RFC 3986 §3.2.3). `None`
/// when it is no port at all.
pub(super) fn parse_port(digits: &[u8]) -> Option<Option<u16>> {
    if digits.is_empty() {
        return Some(None);
    }
    if digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0u32, |value, digit| value * 10 + u32::from(digit - b'0'));
    u16::try_from(value).ok().map(Some)
}

pub(super) fn default_port(scheme: Option<&Scheme>) -> Option<u16> {
    match scheme? {
        scheme if *scheme == Scheme::HTTP => Some(80),
        scheme if *scheme == Scheme::HTTPS => Some(443),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What a host puts in a key.
    fn pushed(host: &RequestHost<'_>) -> String {
        let mut out = String::new();
        host.push_to(&mut out);
        out
    }

    proptest! {
        /// The one-pass read agrees with the full one wherever it answers, and answers for
        /// the common `Host` (`example.com`, `127.0.0.1:8080`).
        #[test]
        fn the_plain_read_agrees_with_the_full_one(
            value in "[a-zA-Z0-9.:%\\[\\] _-]{0,16}",
            https in any::<bool>(),
        ) {
            let scheme = if https { Scheme::HTTPS } else { Scheme::HTTP };
            if let Some(plain) = RequestHost::plain(&value, Some(&scheme)) {
                let full = RequestHost::parse(&value, Some(&scheme));
                prop_assert!(full.is_some(), "{value:?}: plain only");
                let full = full.unwrap();
                prop_assert_eq!(plain.host, full.host);
                prop_assert_eq!(plain.port, full.port);
                prop_assert_eq!(pushed(&plain), pushed(&full));
            }
        }
    }

    #[test]
    fn common_hosts_are_read_in_one_pass() {
        for value in [
            "example.com",
            "127.0.0.1:8080",
            "a-b.example:443",
            "x:65535",
        ] {
            assert!(
                RequestHost::plain(value, Some(&Scheme::HTTPS)).is_some(),
                "{value}"
            );
        }
        for value in [
            "Example.com",
            "[::1]:80",
            " a.b",
            "a:",
            "a:080",
            "a:65536",
            "%41",
        ] {
            assert!(
                RequestHost::plain(value, Some(&Scheme::HTTPS)).is_none(),
                "{value}"
            );
        }
        let host = RequestHost::plain("a.example:443", Some(&Scheme::HTTPS)).unwrap();
        assert_eq!(
            pushed(&host),
            "a.example",
            "the scheme's default port is left out"
        );
    }
}
