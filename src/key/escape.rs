//! Bytes as a key holds them: RFC 3986 character classes, percent-encoding normalized
//! (§6.2.2), and everything else escaped, so that two different requests never make the
//! same key.

use super::*;

/// Whether a byte may stand for itself in a normalized path or query: RFC 3986 unreserved,
/// sub-delims, `:`, `@`, `/` and `?`. `%` is handled separately.
pub(super) fn is_literal(byte: u8) -> bool {
    LITERAL[usize::from(byte)]
}

pub(super) fn is_unreserved(byte: u8) -> bool {
    UNRESERVED[usize::from(byte)]
}

/// The byte classes as tables: every byte of every key is classified, and a table is one
/// load where a search of the set is a loop.
pub(super) const LITERAL: [bool; 256] = byte_class(b"-._~!$&'()*+,;=:@/?");
pub(super) const UNRESERVED: [bool; 256] = byte_class(b"-._~");
/// A host's bytes that stand for themselves: RFC 3986 `reg-name` without `%` (escaped, so
/// that `%41` and `A` stay apart), and the brackets and colons of an IP literal.
pub(super) const HOST_LITERAL: [bool; 256] = byte_class(b"-._~!$&'()*+,;=:[]");
/// [`HOST_LITERAL`] without upper-case letters: a host of these goes into the key as it is.
pub(super) const HOST_NORMAL: [bool; 256] = without_upper_case(HOST_LITERAL);
/// What a `Host` may hold outside brackets: `reg-name` (unreserved, sub-delims and the `%`
/// of percent-encoding), which covers IPv4 addresses.
pub(super) const REG_NAME: [bool; 256] = byte_class(b"-._~!$&'()*+,;=%");
/// What a `Host` that goes into the key as it is holds: [`REG_NAME`] without upper-case
/// letters and `%`, which are [`HOST_NORMAL`] too.
pub(super) const HOST_PLAIN: [bool; 256] = without_upper_case(byte_class(b"-._~!$&'()*+,;="));
/// What an IP literal may hold between its brackets: IPv6 (hex digits, `:`, `.`) and
/// IPvFuture (`v`, hex, `.`, unreserved, sub-delims, `:`).
pub(super) const IP_LITERAL: [bool; 256] = byte_class(b"-._~!$&'()*+,;=:");

pub(super) const fn without_upper_case(mut class: [bool; 256]) -> [bool; 256] {
    let mut byte = b'A';
    while byte <= b'Z' {
        class[byte as usize] = false;
        byte += 1;
    }
    class
}

/// ASCII letters and digits, and `extra`.
pub(super) const fn byte_class(extra: &[u8]) -> [bool; 256] {
    let mut class = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        class[byte] = (byte as u8).is_ascii_alphanumeric();
        byte += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        class[extra[i] as usize] = true;
        i += 1;
    }
    class
}

pub(super) fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

pub(super) const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

pub(super) fn push_escaped(out: &mut String, byte: u8) {
    out.push('%');
    out.push(char::from(HEX_UPPER[usize::from(byte >> 4)]));
    out.push(char::from(HEX_UPPER[usize::from(byte & 0xf)]));
}

/// The escape at `bytes[i]` (a `%`), decoded, if two hex digits follow.
pub(super) fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
    let high = hex_value(*bytes.get(i + 1)?)?;
    let low = hex_value(*bytes.get(i + 2)?)?;
    Some(high << 4 | low)
}

/// Whether a component is already in normal form, so that it can be borrowed.
pub(super) fn is_normal(component: &str) -> bool {
    let bytes = component.as_bytes();
    bytes.iter().enumerate().all(|(i, &byte)| match byte {
        b'%' => escape_at(bytes, i).is_some_and(|decoded| {
            !is_unreserved(decoded)
                && !bytes[i + 1].is_ascii_lowercase()
                && !bytes[i + 2].is_ascii_lowercase()
        }),
        _ => is_literal(byte),
    })
}

/// RFC 3986 §6.2.2 normalization of a path or a query parameter (see the module docs).
pub(super) fn normalize_component(component: &str) -> Cow<'_, str> {
    if is_normal(component) {
        return Cow::Borrowed(component);
    }
    let bytes = component.as_bytes();
    let mut out = String::with_capacity(component.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            match escape_at(bytes, i) {
                Some(decoded) if is_unreserved(decoded) => out.push(char::from(decoded)),
                Some(decoded) => push_escaped(&mut out, decoded),
                // A lone `%` is a literal percent sign.
                None => {
                    push_escaped(&mut out, b'%');
                    i += 1;
                    continue;
                }
            }
            i += 3;
        } else {
            if is_literal(byte) {
                out.push(char::from(byte));
            } else {
                push_escaped(&mut out, byte);
            }
            i += 1;
        }
    }
    Cow::Owned(out)
}

/// Header values: visible ASCII stands for itself but for the key's separators and `%`;
/// space and every other byte is escaped.
pub(super) fn push_header_value(out: &mut String, value: &[u8]) {
    for &byte in value {
        match byte {
            b'%' | b'|' | b'#' => push_escaped(out, byte),
            b'!'..=b'~' => out.push(char::from(byte)),
            _ => push_escaped(out, byte),
        }
    }
}
