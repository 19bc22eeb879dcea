//! The 8-byte header every stored object starts with, and every magic number of the format.
//!
//! Do not modify any constant here: each is written into repositories that must stay readable.
//! A new meaning gets a new value and a new `FORMAT_VERSION`.

use super::FormatError;

/// "BVLT" — readable in `xxd`, and distinct from every other tool's magic we know of.
pub const MAGIC: [u8; 4] = *b"BVLT";

/// The only format version this build writes, and the newest it reads.
pub const FORMAT_VERSION: u8 = 1;

pub const HEADER_LEN: usize = 8;
/// XChaCha20-Poly1305 nonce length.
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// BLAKE3 checksum that closes an unencrypted object.
pub const CHECKSUM_LEN: usize = 32;

/// What an object is. Checked on every read so an object stored under the wrong kind of name
/// (say, a manifest copied over a chunk) is refused before its payload is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Config = 1,
    Key = 2,
    Chunk = 3,
    Manifest = 4,
    Current = 5,
    Lock = 6,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Config,
            2 => Kind::Key,
            3 => Kind::Chunk,
            4 => Kind::Manifest,
            5 => Kind::Current,
            6 => Kind::Lock,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Config => "config",
            Kind::Key => "key",
            Kind::Chunk => "chunk",
            Kind::Manifest => "manifest",
            Kind::Current => "current-pointer",
            Kind::Lock => "lock",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Cipher {
    /// Payload followed by a BLAKE3 checksum: detects damage, not forgery.
    None = 0,
    /// 24-byte nonce, ciphertext, 16-byte tag; the header and object name are the AAD.
    XChaCha20Poly1305 = 1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    Stored = 0,
    Zstd = 1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub cipher: Cipher,
    pub codec: Codec,
}

impl Header {
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let m = MAGIC;
        [
            m[0],
            m[1],
            m[2],
            m[3],
            FORMAT_VERSION,
            self.kind as u8,
            self.cipher as u8,
            self.codec as u8,
        ]
    }

    /// Parses and checks a header, in the order a reader needs the answers: is this ours, can
    /// we read this version, is it the kind we asked for.
    pub fn parse(bytes: &[u8], expected: Kind) -> Result<Header, FormatError> {
        if bytes.len() < HEADER_LEN {
            return Err(FormatError::Truncated("shorter than the 8-byte header"));
        }
        if bytes[0..4] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        if bytes[4] == 0 {
            // No blockvault ever wrote it: a damaged header, not one from a newer release.
            return Err(FormatError::Payload(
                "format version 0 does not exist".into(),
            ));
        }
        if bytes[4] > FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion {
                found: bytes[4],
                supported: FORMAT_VERSION,
            });
        }
        let kind =
            Kind::from_u8(bytes[5])
                .filter(|k| *k == expected)
                .ok_or(FormatError::WrongKind {
                    expected,
                    found: bytes[5],
                })?;
        let cipher = match bytes[6] {
            0 => Cipher::None,
            1 => Cipher::XChaCha20Poly1305,
            v => {
                return Err(FormatError::UnknownField {
                    field: "cipher",
                    value: v,
                });
            }
        };
        let codec = match bytes[7] {
            0 => Codec::Stored,
            1 => Codec::Zstd,
            v => {
                return Err(FormatError::UnknownField {
                    field: "codec",
                    value: v,
                });
            }
        };
        Ok(Header {
            kind,
            cipher,
            codec,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_refuses_newer_versions() {
        let h = Header {
            kind: Kind::Chunk,
            cipher: Cipher::XChaCha20Poly1305,
            codec: Codec::Zstd,
        };
        let mut b = h.to_bytes();
        assert_eq!(Header::parse(&b, Kind::Chunk), Ok(h));
        assert!(matches!(
            Header::parse(&b, Kind::Manifest),
            Err(FormatError::WrongKind { .. })
        ));
        b[4] = FORMAT_VERSION + 1;
        assert!(matches!(
            Header::parse(&b, Kind::Chunk),
            Err(FormatError::UnsupportedVersion { .. })
        ));
        b[4] = 0;
        assert!(matches!(
            Header::parse(&b, Kind::Chunk),
            Err(FormatError::Payload(_))
        ));
        assert_eq!(
            Header::parse(b"BVL", Kind::Chunk),
            Err(FormatError::Truncated("shorter than the 8-byte header"))
        );
        assert_eq!(
            Header::parse(b"XXXXXXXX", Kind::Chunk),
            Err(FormatError::BadMagic)
        );
    }
}
