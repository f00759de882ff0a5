//! How a [`ValueCache`](super::ValueCache) turns values into stored bytes and back.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Turns values into bytes and back, for a [`ValueCache`](super::ValueCache). [`Json`] is
/// the default; [`MessagePack`] (feature `msgpack`) is smaller. Implement it for a format
/// of your own — only formats that decode into the type asked for, never an arbitrary
/// object (nothing like Python's pickle).
///
/// ```
/// use serde::Serialize;
/// use serde::de::DeserializeOwned;
/// use tower_response_cache::value::{Serializer, ValueError};
///
/// /// Pretty-printed JSON, for a store people read.
/// #[derive(Clone, Copy, Debug, Default)]
/// struct PrettyJson;
///
/// impl Serializer for PrettyJson {
///     fn format(&self) -> &'static str {
///         "application/json"
///     }
///
///     fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, ValueError> {
///         serde_json::to_vec_pretty(value).map_err(ValueError::encode)
///     }
///
///     fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, ValueError> {
///         serde_json::from_slice(bytes).map_err(ValueError::decode)
///     }
/// }
/// ```
pub trait Serializer: Send + Sync + 'static {
    /// The format's media type, stored with each value: a value stored in another format
    /// is a miss, not a decoding attempt.
    fn format(&self) -> &'static str;

    /// The bytes of `value`.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, super::ValueError>;

    /// The value `bytes` hold, as a `T`; an error when they are not one.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, super::ValueError>;
}

/// JSON (`serde_json`): readable wherever the store is (`redis-cli GET …`). The default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Json;

impl Serializer for Json {
    fn format(&self) -> &'static str {
        "application/json"
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, super::ValueError> {
        serde_json::to_vec(value).map_err(super::ValueError::encode)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, super::ValueError> {
        serde_json::from_slice(bytes).map_err(super::ValueError::decode)
    }
}

/// MessagePack (`rmp-serde`, structs as maps so that fields may be added): smaller and
/// faster than JSON. Needs the `msgpack` feature.
#[cfg(feature = "msgpack")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessagePack;

#[cfg(feature = "msgpack")]
impl Serializer for MessagePack {
    fn format(&self) -> &'static str {
        "application/msgpack"
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, super::ValueError> {
        rmp_serde::to_vec_named(value).map_err(super::ValueError::encode)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, super::ValueError> {
        rmp_serde::from_slice(bytes).map_err(super::ValueError::decode)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Row {
        id: u64,
        name: String,
        tags: Vec<String>,
        score: Option<i32>,
        bytes: Vec<u8>,
    }

    fn row() -> impl Strategy<Value = Row> {
        (
            any::<u64>(),
            ".{0,20}",
            proptest::collection::vec(".{0,8}", 0..4),
            any::<Option<i32>>(),
            proptest::collection::vec(any::<u8>(), 0..32),
        )
            .prop_map(|(id, name, tags, score, bytes)| Row {
                id,
                name,
                tags,
                score,
                bytes,
            })
    }

    fn round_trip<S: Serializer>(serializer: &S, row: &Row) -> Result<(), TestCaseError> {
        let bytes = serializer.encode(row).unwrap();
        prop_assert_eq!(&serializer.decode::<Row>(&bytes).unwrap(), row);
        // Another type is an error, never a panic.
        let _ = serializer.decode::<Vec<bool>>(&bytes);
        Ok(())
    }

    proptest! {
        #[test]
        fn json_round_trips(row in row()) {
            round_trip(&Json, &row)?;
        }

        #[cfg(feature = "msgpack")]
        #[test]
        fn msgpack_round_trips(row in row()) {
            round_trip(&MessagePack, &row)?;
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Json.decode::<Row>(&bytes);
            #[cfg(feature = "msgpack")]
            let _ = MessagePack.decode::<Row>(&bytes);
        }
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn msgpack_keeps_field_names_so_fields_can_be_added() {
        #[derive(Serialize)]
        struct Old {
            id: u64,
        }
        #[derive(Debug, PartialEq, Deserialize)]
        struct New {
            id: u64,
            #[serde(default)]
            name: String,
        }
        let bytes = MessagePack.encode(&Old { id: 7 }).unwrap();
        assert_eq!(
            MessagePack.decode::<New>(&bytes).unwrap(),
            New {
                id: 7,
                name: String::new()
            }
        );
    }
}
