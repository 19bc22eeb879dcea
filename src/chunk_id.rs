//! Chunk ids: the keyed BLAKE3 hash of a chunk's plaintext.
//!
//! Keyed with a subkey of the repository's master key, so the id of a known file's chunk
//! cannot be computed by someone who can list the bucket but lacks the key, while dedup across
//! hosts sharing the repository still works.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use zeroize::{Zeroize, ZeroizeOnDrop};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.to_hex())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a chunk id (64 hex digits): {0:?}")]
pub struct BadChunkId(pub String);

impl FromStr for ChunkId {
    type Err = BadChunkId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        // Lower case only, so one id has exactly one spelling as an object name.
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(BadChunkId(s.to_string()));
        }
        hex::decode_to_slice(s, &mut out).map_err(|_| BadChunkId(s.to_string()))?;
        Ok(ChunkId(out))
    }
}

/// The secret that turns plaintext into ids.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct IdKey(pub(crate) [u8; 32]);

impl IdKey {
    pub fn id_of(&self, data: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.0, data).as_bytes())
    }
}

impl fmt::Debug for IdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_other_spellings() {
        let id = IdKey([7; 32]).id_of(b"hello");
        assert_eq!(id.to_hex().parse::<ChunkId>(), Ok(id));
        assert!(id.to_hex().to_uppercase().parse::<ChunkId>().is_err());
        assert!("abc".parse::<ChunkId>().is_err());
    }

    #[test]
    fn ids_depend_on_the_key() {
        assert_ne!(IdKey([1; 32]).id_of(b"x"), IdKey([2; 32]).id_of(b"x"));
    }
}
