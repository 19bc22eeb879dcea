//! `current/<series>`: the newest version of a series.
//!
//! Sealed like every other object; `manifest_digest` (BLAKE3 of the stored manifest object)
//! ties the pointer to one exact manifest, so a swapped manifest is caught even before it is
//! opened.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentPointer {
    pub series: String,
    pub version: String,
    pub manifest_digest: [u8; 32],
    /// Unix seconds when the pointer was written.
    pub written: i64,
}
