//! Compress-then-encrypt, and its inverse with verification.
//!
//! `seal` turns a payload into the bytes stored under an object name; `open` turns them back,
//! refusing anything whose header, authentication tag (or checksum, unencrypted) or length
//! does not check out. The object name is part of what is authenticated, so an object copied
//! or swapped under another name does not open. Pure functions: no I/O.

use crate::chunk_id::ChunkId;
use crate::format::envelope::{CHECKSUM_LEN, HEADER_LEN, NONCE_LEN, TAG_LEN};
use crate::format::{Cipher, Codec, FormatError, Header, Kind};
use crate::keys::{Keys, SealKey};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use std::io::Read;

/// The largest chunk plaintext `open` accepts: FastCDC's ceiling is 16 MiB and fixed chunks
/// are at most 64 MiB (`init --chunk-size` refuses more).
pub const MAX_CHUNK_LEN: usize = 64 << 20;
/// Manifests grow with the source (about 40 bytes per chunk): 1 GiB covers a 100 TiB device
/// at 4 MiB chunks.
pub const MAX_METADATA_LEN: usize = 1 << 30;

/// Seals `payload` as object `name` of `kind`. With `zstd_level`, the payload is compressed
/// when that makes it smaller; data that does not shrink is stored as it is.
pub fn seal(
    kind: Kind,
    key: Option<&SealKey>,
    name: &str,
    payload: &[u8],
    zstd_level: Option<i32>,
) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    if key.is_some() {
        rand::rng().fill_bytes(&mut nonce);
    }
    seal_with_nonce(kind, key, name, payload, zstd_level, &nonce)
}

/// [`seal`] with the nonce given, so the test vectors in `format-spec/vectors/` can be
/// reproduced byte for byte. Never call it with a nonce that is not fresh and random: reusing
/// a nonce under one key breaks XChaCha20-Poly1305. The nonce is ignored without a key.
#[doc(hidden)]
pub fn seal_with_nonce(
    kind: Kind,
    key: Option<&SealKey>,
    name: &str,
    payload: &[u8],
    zstd_level: Option<i32>,
    nonce: &[u8; NONCE_LEN],
) -> Vec<u8> {
    let compressed = zstd_level
        .and_then(|level| zstd::bulk::compress(payload, level).ok())
        .filter(|c| c.len() < payload.len());
    match &compressed {
        Some(c) => frame(kind, key, name, Codec::Zstd, c, nonce),
        None => frame(kind, key, name, Codec::Stored, payload, nonce),
    }
}

/// Header, then the body encrypted or checksummed: what [`seal`] does after compressing.
/// Public for the tests and fuzz targets that need objects no writer makes, such as a hostile
/// zstd frame under a valid checksum (which anyone can compute: it is not keyed). The nonce
/// rule of [`seal_with_nonce`] holds here too.
#[doc(hidden)]
pub fn frame(
    kind: Kind,
    key: Option<&SealKey>,
    name: &str,
    codec: Codec,
    body: &[u8],
    nonce: &[u8; NONCE_LEN],
) -> Vec<u8> {
    let cipher = if key.is_some() {
        Cipher::XChaCha20Poly1305
    } else {
        Cipher::None
    };
    let header = Header {
        kind,
        cipher,
        codec,
    }
    .to_bytes();
    let mut out =
        Vec::with_capacity(HEADER_LEN + NONCE_LEN + body.len() + TAG_LEN.max(CHECKSUM_LEN));
    out.extend_from_slice(&header);
    match key {
        Some(key) => {
            out.extend_from_slice(nonce);
            out.extend_from_slice(body);
            let aead = XChaCha20Poly1305::new((&key.0).into());
            let start = HEADER_LEN + NONCE_LEN;
            // Encryption in place cannot fail for inputs below the cipher's 256 GiB limit.
            let tag = aead
                .encrypt_in_place_detached(
                    XNonce::from_slice(nonce),
                    &aad(&header, name),
                    &mut out[start..],
                )
                .unwrap_or_else(|_| {
                    unreachable!("XChaCha20-Poly1305 refused a {}-byte payload", body.len())
                });
            out.extend_from_slice(&tag);
        }
        None => {
            out.extend_from_slice(body);
            let sum = checksum(&header, name, body);
            out.extend_from_slice(&sum);
        }
    }
    out
}

/// Opens an object sealed by [`seal`]. `key` is the repository's sealing key, or None for an
/// unencrypted repository; an object whose cipher does not match the repository is refused,
/// so nobody can slip an unencrypted forgery into an encrypted repository.
pub fn open(
    kind: Kind,
    key: Option<&SealKey>,
    name: &str,
    bytes: &[u8],
    max_len: usize,
) -> Result<Vec<u8>, FormatError> {
    let header = Header::parse(bytes, kind)?;
    let header_bytes = &bytes[..HEADER_LEN];
    let body = match (header.cipher, key) {
        (Cipher::XChaCha20Poly1305, Some(key)) => {
            if bytes.len() < HEADER_LEN + NONCE_LEN + TAG_LEN {
                return Err(FormatError::Truncated("shorter than header, nonce and tag"));
            }
            let nonce = XNonce::from_slice(&bytes[HEADER_LEN..HEADER_LEN + NONCE_LEN]);
            let tag_at = bytes.len() - TAG_LEN;
            let mut buf = bytes[HEADER_LEN + NONCE_LEN..tag_at].to_vec();
            XChaCha20Poly1305::new((&key.0).into())
                .decrypt_in_place_detached(
                    nonce,
                    &aad(header_bytes, name),
                    &mut buf,
                    Tag::from_slice(&bytes[tag_at..]),
                )
                .map_err(|_| FormatError::Authentication)?;
            buf
        }
        (Cipher::None, None) => {
            if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
                return Err(FormatError::Truncated("shorter than header and checksum"));
            }
            let sum_at = bytes.len() - CHECKSUM_LEN;
            let body = &bytes[HEADER_LEN..sum_at];
            if checksum(header_bytes, name, body)[..] != bytes[sum_at..] {
                return Err(FormatError::Checksum);
            }
            body.to_vec()
        }
        // A cipher that does not match the repository's encryption is a forgery or a mix-up.
        (Cipher::None, Some(_)) | (Cipher::XChaCha20Poly1305, None) => {
            return Err(FormatError::Authentication);
        }
    };
    match header.codec {
        Codec::Stored if body.len() > max_len => Err(FormatError::TooLarge(max_len)),
        Codec::Stored => Ok(body),
        Codec::Zstd => decompress(&body, max_len),
    }
}

/// Opens a chunk object and checks that its plaintext hashes to `id`.
pub fn open_chunk(
    keys: &Keys,
    id: &ChunkId,
    name: &str,
    bytes: &[u8],
) -> Result<Vec<u8>, FormatError> {
    let plain = open(Kind::Chunk, keys.seal.as_ref(), name, bytes, MAX_CHUNK_LEN)?;
    if keys.id.id_of(&plain) != *id {
        return Err(FormatError::IdMismatch);
    }
    Ok(plain)
}

fn aad(header: &[u8], name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + name.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(name.as_bytes());
    aad
}

fn checksum(header: &[u8], name: &str, body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut h = blake3::Hasher::new();
    h.update(header);
    h.update(&(name.len() as u32).to_le_bytes());
    h.update(name.as_bytes());
    h.update(body);
    *h.finalize().as_bytes()
}

/// Decompresses without trusting the frame: the output is capped at `max_len` whatever the
/// frame header claims, so a hostile object cannot make us allocate without bound.
fn decompress(body: &[u8], max_len: usize) -> Result<Vec<u8>, FormatError> {
    let bad = |e: std::io::Error| FormatError::Payload(format!("zstd: {e}"));
    if let Ok(Some(n)) = zstd::zstd_safe::get_frame_content_size(body) {
        if n > max_len as u64 {
            return Err(FormatError::TooLarge(max_len));
        }
        let out = zstd::bulk::decompress(body, n as usize).map_err(bad)?;
        if out.len() as u64 != n {
            return Err(FormatError::Payload(
                "zstd frame shorter than its declared size".into(),
            ));
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(body)
        .map_err(bad)?
        .take(max_len as u64 + 1)
        .read_to_end(&mut out)
        .map_err(bad)?;
    if out.len() > max_len {
        return Err(FormatError::TooLarge(max_len));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::MasterKey;
    use proptest::prelude::*;
    use rand::RngCore;

    fn keys() -> Keys {
        Keys::from_master(&MasterKey([3; 32]))
    }

    #[test]
    fn an_object_does_not_open_under_another_name_or_kind() {
        let k = keys();
        let sealed = seal(
            Kind::Manifest,
            k.seal.as_ref(),
            "manifests/a/1",
            b"payload",
            Some(3),
        );
        assert_eq!(
            open(
                Kind::Manifest,
                k.seal.as_ref(),
                "manifests/a/1",
                &sealed,
                100
            )
            .unwrap(),
            b"payload"
        );
        assert_eq!(
            open(
                Kind::Manifest,
                k.seal.as_ref(),
                "manifests/a/2",
                &sealed,
                100
            ),
            Err(FormatError::Authentication)
        );
        assert!(matches!(
            open(Kind::Chunk, k.seal.as_ref(), "manifests/a/1", &sealed, 100),
            Err(FormatError::WrongKind { .. })
        ));
        // An unencrypted object is refused by an encrypted repository, and the reverse.
        let plain = seal(Kind::Manifest, None, "manifests/a/1", b"payload", None);
        assert_eq!(
            open(
                Kind::Manifest,
                k.seal.as_ref(),
                "manifests/a/1",
                &plain,
                100
            ),
            Err(FormatError::Authentication)
        );
        assert_eq!(
            open(Kind::Manifest, None, "manifests/a/1", &sealed, 100),
            Err(FormatError::Authentication)
        );
    }

    #[test]
    fn compressible_data_is_compressed_and_random_data_is_not() {
        let k = keys();
        let zeros = vec![0u8; 100_000];
        let s = seal(Kind::Chunk, k.seal.as_ref(), "c", &zeros, Some(3));
        assert!(s.len() < 1000);
        let mut random = vec![0u8; 100_000];
        rand::rng().fill_bytes(&mut random);
        let s = seal(Kind::Chunk, k.seal.as_ref(), "c", &random, Some(3));
        assert_eq!(s[7], Codec::Stored as u8);
        assert_eq!(s.len(), random.len() + HEADER_LEN + NONCE_LEN + TAG_LEN);
    }

    #[test]
    fn size_limits_hold_against_frames_that_lie() {
        let big = vec![1u8; 10_000];
        let s = seal(Kind::Chunk, None, "c", &big, Some(1));
        assert_eq!(
            open(Kind::Chunk, None, "c", &s, 9_999),
            Err(FormatError::TooLarge(9_999))
        );
        assert_eq!(open(Kind::Chunk, None, "c", &s, 10_000).unwrap(), big);
    }

    #[test]
    fn chunk_content_must_match_its_id() {
        let k = keys();
        let data = b"chunk data".to_vec();
        let id = k.id.id_of(&data);
        let name = format!("chunks/{id}");
        let s = seal(Kind::Chunk, k.seal.as_ref(), &name, &data, Some(3));
        assert_eq!(open_chunk(&k, &id, &name, &s).unwrap(), data);
        let other = k.id.id_of(b"other");
        assert_eq!(
            open_chunk(&k, &other, &name, &s),
            Err(FormatError::IdMismatch)
        );
    }

    proptest! {
        #[test]
        fn open_of_seal_is_identity(data in proptest::collection::vec(any::<u8>(), 0..5000), encrypted: bool, compress: bool) {
            let k = keys();
            let key = if encrypted { k.seal.as_ref() } else { None };
            let s = seal(Kind::Chunk, key, "chunks/x", &data, compress.then_some(3));
            prop_assert_eq!(open(Kind::Chunk, key, "chunks/x", &s, MAX_CHUNK_LEN).unwrap(), data);
        }

        #[test]
        fn any_flipped_bit_is_detected(data in proptest::collection::vec(any::<u8>(), 0..2000), encrypted: bool, bit in any::<proptest::sample::Index>()) {
            let k = keys();
            let key = if encrypted { k.seal.as_ref() } else { None };
            let mut s = seal(Kind::Chunk, key, "chunks/x", &data, Some(3));
            let i = bit.index(s.len() * 8);
            s[i / 8] ^= 1 << (i % 8);
            prop_assert!(open(Kind::Chunk, key, "chunks/x", &s, MAX_CHUNK_LEN).is_err());
        }

        #[test]
        fn any_truncation_is_detected(data in proptest::collection::vec(any::<u8>(), 1..2000), encrypted: bool, cut in any::<proptest::sample::Index>()) {
            let k = keys();
            let key = if encrypted { k.seal.as_ref() } else { None };
            let s = seal(Kind::Chunk, key, "chunks/x", &data, Some(3));
            let n = cut.index(s.len());
            prop_assert!(open(Kind::Chunk, key, "chunks/x", &s[..n], MAX_CHUNK_LEN).is_err());
        }
    }
}
