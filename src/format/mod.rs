//! Byte encodings of every stored object, mirroring `format-spec/`.
//!
//! Every object begins with the same 8-byte header (see [`envelope`]); what follows depends on
//! the header's cipher byte, and the plaintext payload of each kind is a postcard encoding of
//! the struct in the matching file here. Postcard is used because its wire format is specified
//! and frozen; a change to any struct here is a change to stored bytes and so to the format
//! version, the spec and its vectors.

pub mod config;
pub mod envelope;
pub mod key;
pub mod lock;
pub mod pointer;

pub use envelope::{Cipher, Codec, FORMAT_VERSION, Header, Kind, MAGIC};

/// Why a stored object could not be decoded. Callers add which object, series and version.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("not a blockvault object (bad magic)")]
    BadMagic,
    #[error(
        "format version {found} is newer than this blockvault understands (up to {supported}); upgrade blockvault"
    )]
    UnsupportedVersion { found: u8, supported: u8 },
    #[error("expected a {expected} object, found kind {found}")]
    WrongKind { expected: Kind, found: u8 },
    #[error("unknown {field} {value}")]
    UnknownField { field: &'static str, value: u8 },
    #[error("truncated: {0}")]
    Truncated(&'static str),
    #[error("corrupt or tampered with (authentication failed)")]
    Authentication,
    #[error("corrupt (checksum mismatch)")]
    Checksum,
    #[error("content does not match its chunk id")]
    IdMismatch,
    #[error("corrupt payload: {0}")]
    Payload(String),
    #[error("decompressed size exceeds the {0}-byte limit")]
    TooLarge(usize),
}

/// Postcard decoding of a payload that must consume every byte: trailing bytes mean the
/// object is not what its header claims.
pub fn decode_exact<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, FormatError> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| FormatError::Payload(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FormatError::Payload(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}

/// Decodes a map whose keys come in strictly ascending byte-wise order (format-spec 5), as
/// writers emit them: with a duplicated key, readers that keep the first value and readers
/// that keep the last would read different settings or facts.
pub fn ascending_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    struct Ascending;
    impl<'de> serde::de::Visitor<'de> for Ascending {
        type Value = std::collections::BTreeMap<String, String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of strings in ascending order of keys")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = std::collections::BTreeMap::new();
            while let Some((k, v)) = a.next_entry::<String, String>()? {
                if out.last_key_value().is_some_and(|(last, _)| *last >= k) {
                    return Err(serde::de::Error::custom(format!(
                        "map key {k:?} does not come after the key before it"
                    )));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Ascending)
}

pub fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own plain structs into a Vec cannot fail: postcard only errors on
    // unsupported serde features (maps with non-string keys are fine, no `serialize_any`).
    postcard::to_stdvec(value).unwrap_or_else(|e| unreachable!("postcard encoding failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(serde::Deserialize, Debug)]
    struct Settings {
        #[serde(deserialize_with = "ascending_map")]
        map: BTreeMap<String, String>,
    }

    #[test]
    fn maps_decode_only_with_strictly_ascending_keys() {
        // A map is encoded as a sequence of key-value pairs would be.
        let pairs = |p: &[(&str, &str)]| encode(&p.to_vec());
        let good: Settings = decode_exact(&pairs(&[("a", "1"), ("b", "2")])).unwrap();
        assert_eq!(good.map.len(), 2);
        for bad in [
            pairs(&[("b", "1"), ("a", "2")]),
            pairs(&[("a", "1"), ("a", "2")]),
        ] {
            // postcard keeps no custom message: the error says only that decoding failed.
            assert!(matches!(
                decode_exact::<Settings>(&bad),
                Err(FormatError::Payload(_))
            ));
        }
    }
}
