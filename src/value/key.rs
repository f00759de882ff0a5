//! Keys for values, built from a function's name and arguments without collisions.

use std::fmt;

/// A value's key from a name and arguments, as the `@cached` decorator builds one from a
/// function's: `ValueKey::new("user").arg(42).arg("en")` is `user:42:en`. Each argument is
/// escaped (`\` and `:` get a `\` before them), so no two argument lists make one key:
/// `("a:b", "c")` is `a\:b:c` and `("a", "b:c")` is `a:b\:c`. A key longer than the store
/// allows is hashed by the [`ValueCache`](super::ValueCache); a short one stays readable.
///
/// ```
/// use tower_response_cache::value::ValueKey;
///
/// assert_eq!(ValueKey::new("user").arg(42).arg("en").as_str(), "user:42:en");
/// assert_ne!(
///     ValueKey::new("f").arg("a:b").arg("c"),
///     ValueKey::new("f").arg("a").arg("b:c"),
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ValueKey(String);

impl ValueKey {
    /// A key of `name` alone (escaped like an argument).
    pub fn new(name: impl fmt::Display) -> Self {
        let mut key = String::new();
        escape_into(&mut key, &name.to_string());
        Self(key)
    }

    /// The key with one more argument, written with its `Display`.
    #[must_use]
    pub fn arg(mut self, arg: impl fmt::Display) -> Self {
        self.0.push(':');
        escape_into(&mut self.0, &arg.to_string());
        self
    }

    /// The key as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ValueKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ValueKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn escape_into(out: &mut String, part: &str) {
    for c in part.chars() {
        if c == '\\' || c == ':' {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(parts: &[String]) -> ValueKey {
        parts
            .iter()
            .skip(1)
            .fold(ValueKey::new(&parts[0]), |key, part| key.arg(part))
    }

    #[test]
    fn separators_inside_arguments_never_collide() {
        let key = |parts: &[&str]| {
            key(&parts
                .iter()
                .map(|part| (*part).to_owned())
                .collect::<Vec<_>>())
        };
        assert_ne!(key(&["f", "a:b", "c"]), key(&["f", "a", "b:c"]));
        assert_ne!(key(&["f", "a\\", ":b"]), key(&["f", "a\\:", "b"]));
        assert_ne!(key(&["f", ""]), key(&["f"]));
        assert_eq!(key(&["f", "a:b", "c"]).as_str(), "f:a\\:b:c");
    }

    proptest! {
        #[test]
        fn distinct_argument_lists_make_distinct_keys(
            a in proptest::collection::vec("[a-c:\\\\]{0,3}", 1..4),
            b in proptest::collection::vec("[a-c:\\\\]{0,3}", 1..4),
        ) {
            prop_assert_eq!(key(&a) == key(&b), a == b);
        }
    }
}
