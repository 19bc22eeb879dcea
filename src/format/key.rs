//! `keys/<key-id>`: the master key sealed under a passphrase or key file.
//!
//! Stored in an unencrypted envelope (the KDF parameters must be readable before any key is
//! known); the master key inside `sealed` is XChaCha20-Poly1305 under the key-encryption key,
//! with the object name and repository id as AAD (see `keys::wrap`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kdf {
    Argon2id {
        memory_kib: u32,
        passes: u32,
        lanes: u32,
        salt: [u8; 16],
    },
    KeyFile {
        salt: [u8; 16],
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyObject {
    pub kdf: Kdf,
    /// Unix seconds.
    pub created: i64,
    pub host: String,
    pub nonce: [u8; 24],
    /// 32 bytes of ciphertext followed by the 16-byte tag.
    pub sealed: Vec<u8>,
}
