//! Stored objects from the bytes a store returned: each kind opened within its size limit
//! (format-spec 4.6), decoded, and checked as far as the bytes alone allow.
//!
//! Pure, no I/O: `repo` and `lock` fetch the bytes and call these, and the fuzz targets call
//! the very same functions, so what is fuzzed is what a reader runs. Checks that need more
//! than the object (a manifest's series against the name it was asked for, a pointer's
//! series) stay with the callers.

use crate::chunker::Chunking;
use crate::format::config::Config;
use crate::format::key::KeyObject;
use crate::format::lock::LockInfo;
use crate::format::pointer::CurrentPointer;
use crate::format::{FormatError, Kind, decode_exact};
use crate::keys::SealKey;
use crate::layout;
use crate::manifest::Manifest;
use crate::seal::{self, MAX_CHUNK_LEN, MAX_METADATA_LEN};

/// Config, key, current-pointer and lock payloads are a few hundred bytes. A megabyte is a
/// generous bound, and it matters for the config and key objects above all: they are read
/// before any key is known, so anyone who can write to the store can present one.
pub const MAX_SMALL_LEN: usize = 1 << 20;
/// Locks are read by every command of every client, before it does anything else.
pub const MAX_LOCK_LEN: usize = 1 << 16;

/// The largest payload (after decompression) a reader accepts for `kind`.
pub fn max_len(kind: Kind) -> usize {
    match kind {
        Kind::Chunk => MAX_CHUNK_LEN,
        Kind::Manifest => MAX_METADATA_LEN,
        Kind::Config | Kind::Key | Kind::Current => MAX_SMALL_LEN,
        Kind::Lock => MAX_LOCK_LEN,
    }
}

fn open_as<T: serde::de::DeserializeOwned>(
    kind: Kind,
    key: Option<&SealKey>,
    name: &str,
    bytes: &[u8],
) -> Result<T, FormatError> {
    let plain = seal::open(kind, key, name, bytes, max_len(kind))?;
    decode_exact(&plain)
}

/// `config`: unencrypted whatever the repository, since it is read before any key.
pub fn config(bytes: &[u8]) -> Result<Config, FormatError> {
    let c: Config = open_as(Kind::Config, None, layout::CONFIG, bytes)?;
    validate_config(&c).map_err(FormatError::Payload)?;
    Ok(c)
}

/// What a client checks before trusting a config's settings (format-spec 10.6).
fn validate_config(c: &Config) -> Result<(), String> {
    Chunking::Fixed {
        size: c.chunker.fixed_size,
    }
    .validate()?;
    Chunking::Cdc {
        min: c.chunker.cdc_min,
        avg: c.chunker.cdc_avg,
        max: c.chunker.cdc_max,
    }
    .validate()?;
    if !(1..=19).contains(&c.zstd_level) {
        return Err(format!("zstd level {} is outside 1..=19", c.zstd_level));
    }
    Ok(())
}

/// `keys/<id>`: unencrypted (its KDF parameters are needed to find the key that opens the
/// rest); the master key inside is sealed, and `keys::unwrap` checks the parameters' bounds.
pub fn key(name: &str, bytes: &[u8]) -> Result<KeyObject, FormatError> {
    open_as(Kind::Key, None, name, bytes)
}

/// `manifests/<series>/<version>`, structurally valid (format-spec 10.4, rules 2 to 5).
pub fn manifest(key: Option<&SealKey>, name: &str, bytes: &[u8]) -> Result<Manifest, FormatError> {
    let plain = seal::open(Kind::Manifest, key, name, bytes, max_len(Kind::Manifest))?;
    Manifest::decode(&plain)
}

/// `current/<series>`.
pub fn pointer(
    key: Option<&SealKey>,
    name: &str,
    bytes: &[u8],
) -> Result<CurrentPointer, FormatError> {
    open_as(Kind::Current, key, name, bytes)
}

/// `locks/<id>`.
pub fn lock(key: Option<&SealKey>, name: &str, bytes: &[u8]) -> Result<LockInfo, FormatError> {
    open_as(Kind::Lock, key, name, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Codec;

    /// A config is read before any key, and its checksum is not keyed, so anyone who can
    /// write to the store can present one claiming any decompressed size: a zstd frame of a
    /// few bytes that expands to 2 MiB is refused by its declared size, before anything that
    /// large is allocated. (The bound used to be the manifests' 1 GiB.)
    #[test]
    fn small_objects_that_expand_beyond_a_megabyte_are_refused() {
        let big = zstd::bulk::compress(&vec![0u8; 2 << 20], 19).unwrap();
        assert!(big.len() < 1024, "{} bytes", big.len());
        let hostile = |kind| seal::frame(kind, None, "x", Codec::Zstd, &big, &[0; 24]);
        assert_eq!(
            config(&seal::frame(
                Kind::Config,
                None,
                layout::CONFIG,
                Codec::Zstd,
                &big,
                &[0; 24]
            )),
            Err(FormatError::TooLarge(MAX_SMALL_LEN))
        );
        assert_eq!(
            key("x", &hostile(Kind::Key)).err(),
            Some(FormatError::TooLarge(MAX_SMALL_LEN))
        );
        assert_eq!(
            pointer(None, "x", &hostile(Kind::Current)).err(),
            Some(FormatError::TooLarge(MAX_SMALL_LEN))
        );
        assert_eq!(
            lock(None, "x", &hostile(Kind::Lock)).err(),
            Some(FormatError::TooLarge(MAX_LOCK_LEN))
        );
    }
}
