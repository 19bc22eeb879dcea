//! `config`: what every client must know before reading anything else.
//!
//! Stored unencrypted (a client reads it before it has a key) and checksummed. Its fields can
//! only make a client less efficient, never less safe: every manifest records the chunking it
//! was made with, and a downgrade to `encryption: None` is refused while `keys/` holds keys.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encryption {
    None,
    XChaCha20Poly1305,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerDefaults {
    /// Fixed-size chunks for files and block devices.
    pub fixed_size: u32,
    /// FastCDC bounds for streams.
    pub cdc_min: u32,
    pub cdc_avg: u32,
    pub cdc_max: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub repo_id: [u8; 32],
    /// Unix seconds.
    pub created: i64,
    pub encryption: Encryption,
    pub chunker: ChunkerDefaults,
    pub zstd_level: i32,
    /// Later, optional settings (a default storage class, ...) that older readers may ignore.
    #[serde(deserialize_with = "crate::format::ascending_map")]
    pub options: BTreeMap<String, String>,
}
