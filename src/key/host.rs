//! The request's host as a key holds it: from the URI's authority or the `Host` header,
//! checked and normalized (RFC 3986 §3.2.2, §6.2.2), its port kept only when not the
//! scheme's default.

use super::escape::{HOST_LITERAL, HOST_NORMAL, IP_LITERAL, REG_NAME, push_escaped};
use super::*;

/// The host a request is for: the URI's authority, else its `Host` header.
pub(super) struct RequestHost<'a> {
    /// Checked: `reg-name`, or an IP literal in brackets.
    host: &'a str,
    /// The port, unless it is the default of the URI's scheme.
    port: Option<u16>,
    /// The port's digits as sent, when they are its canonical form (no leading zeros).
    port_text: Option<&'a str>,
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
            Some(value) => Some(Self::parse(value.to_str().ok()?.trim_ascii(), scheme)?),
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
        })
    }

    pub(super) fn from_authority(authority: &'a Authority, scheme: Option<&Scheme>) -> Self {
        Self {
            host: authority.host(),
            port: authority
                .port_u16()
                .filter(|&port| Some(port) != default_port(scheme)),
            port_text: None,
        }
    }

    pub(super) fn same_as(&self, other: &Self) -> bool {
        self.host.eq_ignore_ascii_case(other.host) && self.port == other.port
    }

    /// The host in lower case with its bytes escaped as the rest of the key, and `:port`.
    pub(super) fn push_to(&self, out: &mut String) {
        if self.host.bytes().all(|byte| HOST_NORMAL[usize::from(byte)]) {
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
