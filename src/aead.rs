//! XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03), the one cipher of the format, in place.
//!
//! The extended nonce is the draft's construction: HChaCha20 of the key and the nonce's first
//! 16 bytes gives a subkey, and the IETF ChaCha20-Poly1305 of RFC 8439 runs under that subkey
//! with the 96-bit nonce `0u32 || nonce[16..24]`. HChaCha20 comes from RustCrypto's `chacha20`;
//! the AEAD from aws-lc-rs, whose assembly (AVX2 and AVX-512, ChaCha20 and Poly1305 stitched
//! in one pass) seals and opens at ~1.8 GB/s a core here against RustCrypto's ~1.0: that is
//! most of the authentication cost of a restore or a `check --read-data`. aws-lc-rs is built
//! anyway, for the S3 client's TLS. RustCrypto's `chacha20poly1305` stays the oracle: the tests
//! require byte-identical output from both on every length, and the format vectors are checked
//! with it.
//!
//! Pure: no I/O.

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use chacha20::{R20, hchacha};
use zeroize::Zeroizing;

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;

/// The authentication failed: wrong key, or the bytes (or what is authenticated with them)
/// are not what was sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

/// The IETF key and nonce that XChaCha20 with `key` and `nonce` amounts to.
fn derive(key: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN]) -> (LessSafeKey, Nonce) {
    let (front, back) = nonce.split_at(16);
    let front: &[u8; 16] = front
        .try_into()
        .unwrap_or_else(|_| unreachable!("16 bytes of a 24-byte nonce"));
    let subkey = Zeroizing::new(hchacha::<R20>(key.into(), front.into()));
    let mut short = [0u8; 12];
    short[4..].copy_from_slice(back);
    let key = UnboundKey::new(&CHACHA20_POLY1305, subkey.as_slice())
        .unwrap_or_else(|_| unreachable!("a ChaCha20 key is 32 bytes"));
    (LessSafeKey::new(key), Nonce::assume_unique_for_key(short))
}

/// Encrypts `data` in place and returns the tag that authenticates it together with `aad`.
pub fn seal(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    data: &mut [u8],
) -> [u8; TAG_LEN] {
    let (key, nonce) = derive(key, nonce);
    let tag = key
        .seal_in_place_separate_tag(nonce, Aad::from(aad), data)
        // Only inputs past the cipher's 256 GiB counter limit are refused.
        .unwrap_or_else(|_| unreachable!("ChaCha20-Poly1305 refused {} bytes", data.len()));
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Authenticates `sealed` (ciphertext then tag) with `aad` and decrypts it in place: the
/// plaintext is `sealed[..sealed.len() - TAG_LEN]`. On failure the bytes are left unusable.
pub fn open(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    sealed: &mut [u8],
) -> Result<(), Refused> {
    if sealed.len() < TAG_LEN {
        return Err(Refused);
    }
    let (key, nonce) = derive(key, nonce);
    key.open_in_place(nonce, Aad::from(aad), sealed)
        .map(|_| ())
        .map_err(|_| Refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::XChaCha20Poly1305;
    use chacha20poly1305::aead::{AeadInOut, KeyInit};
    use proptest::prelude::*;

    fn oracle(key: &[u8; 32], nonce: &[u8; 24], aad: &[u8], data: &[u8]) -> Vec<u8> {
        let mut buf = data.to_vec();
        let tag = XChaCha20Poly1305::new(key.into())
            .encrypt_inout_detached(nonce.into(), aad, buf.as_mut_slice().into())
            .expect("test input below the limit");
        buf.extend_from_slice(&tag);
        buf
    }

    /// The draft's test vector (appendix A.3.1), byte for byte.
    #[test]
    fn draft_vector() {
        let key: [u8; 32] = core::array::from_fn(|i| 0x80 + i as u8);
        let nonce: [u8; 24] = core::array::from_fn(|i| 0x40 + i as u8);
        let aad = hex::decode("50515253c0c1c2c3c4c5c6c7").unwrap();
        let plain = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let mut buf = plain.to_vec();
        let tag = seal(&key, &nonce, &aad, &mut buf);
        assert_eq!(
            hex::encode(&buf[..16]),
            "bd6d179d3e83d43b9576579493c0e939",
            "ciphertext start"
        );
        assert_eq!(hex::encode(tag), "c0875924c1c7987947deafd8780acf49");
        buf.extend_from_slice(&tag);
        open(&key, &nonce, &aad, &mut buf).expect("opens");
        assert_eq!(&buf[..plain.len()], plain);
    }

    proptest! {
        /// Byte-identical to RustCrypto's XChaCha20-Poly1305 on every length, including the
        /// empty one and those around ChaCha's 64-byte blocks and the assembly's wider strides.
        #[test]
        fn matches_rustcrypto(
            key in any::<[u8; 32]>(),
            nonce in any::<[u8; 24]>(),
            aad in proptest::collection::vec(any::<u8>(), 0..80),
            data in proptest::collection::vec(any::<u8>(), 0..1200),
        ) {
            let mut buf = data.clone();
            let tag = seal(&key, &nonce, &aad, &mut buf);
            buf.extend_from_slice(&tag);
            prop_assert_eq!(&buf, &oracle(&key, &nonce, &aad, &data));
            open(&key, &nonce, &aad, &mut buf).expect("opens what it sealed");
            prop_assert_eq!(&buf[..data.len()], &data[..]);
        }

        /// Any flipped bit, in the ciphertext, the tag, the nonce or the associated data, is
        /// refused.
        #[test]
        fn refuses_any_change(
            key in any::<[u8; 32]>(),
            nonce in any::<[u8; 24]>(),
            data in proptest::collection::vec(any::<u8>(), 0..300),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
            target in 0u8..3,
        ) {
            let aad = b"header and name".to_vec();
            let mut sealed = oracle(&key, &nonce, &aad, &data);
            let (mut nonce, mut aad) = (nonce, aad);
            match target {
                0 => { let i = at.index(sealed.len()); sealed[i] ^= 1 << bit; }
                1 => { let i = at.index(nonce.len()); nonce[i] ^= 1 << bit; }
                _ => { let i = at.index(aad.len()); aad[i] ^= 1 << bit; }
            }
            prop_assert_eq!(open(&key, &nonce, &aad, &mut sealed), Err(Refused));
        }
    }

    #[test]
    fn refuses_shorter_than_a_tag() {
        assert_eq!(open(&[0; 32], &[0; 24], b"", &mut [0u8; 15]), Err(Refused));
    }
}
