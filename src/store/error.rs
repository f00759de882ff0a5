//! How a store operation fails ([`StoreError`], [`StoreErrorKind`]).

use std::borrow::Cow;
use std::fmt;

/// What kind of failure a [`StoreError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store could not be reached.
    Unavailable,
    /// The store did not answer in time.
    Timeout,
    /// A stored value could not be decoded (garbage, or an unknown format version).
    Decode,
    /// The store does not support the operation.
    Unsupported,
    /// The entry is larger than the store takes (memcached's item size): not stored, which
    /// the layer counts as not stored (`too-large`), not as a store error.
    TooLarge,
    /// Anything else.
    Other,
}

impl StoreErrorKind {
    /// Every kind, in a stable order.
    pub const ALL: [Self; 6] = [
        Self::Unavailable,
        Self::Timeout,
        Self::Decode,
        Self::Unsupported,
        Self::TooLarge,
        Self::Other,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// A short, stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Decode => "decode",
            Self::Unsupported => "unsupported",
            Self::TooLarge => "too-large",
            Self::Other => "other",
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A failed store operation.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: Cow<'static, str>,
    source: Option<BoxError>,
}

impl StoreError {
    /// An error of `kind` with a message.
    pub fn new(kind: StoreErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `kind` caused by `source`.
    pub fn with_source(
        kind: StoreErrorKind,
        message: impl Into<Cow<'static, str>>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The store does not support `operation`.
    pub fn unsupported(operation: &'static str) -> Self {
        Self::new(
            StoreErrorKind::Unsupported,
            format!("the store does not support {operation}"),
        )
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cache store error ({}): {}",
            self.kind.as_str(),
            self.message
        )
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}
