//! A version: where it came from, how it was cut, and the ordered list of its chunks.
//!
//! A manifest is a full map of its version (never a delta against a parent), so any block
//! image version can be restored or removed on its own. Decoding validates the structure, so
//! a restore never trusts a length it has not checked.

use crate::chunk_id::ChunkId;
use crate::chunker::Chunking;
use crate::format::{FormatError, decode_exact, encode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkRef {
    Data {
        id: ChunkId,
        len: u32,
    },
    /// All zero bytes: nothing is stored, restore leaves a hole.
    Zero {
        len: u32,
    },
}

impl ChunkRef {
    pub fn len(&self) -> u32 {
        match *self {
            ChunkRef::Data { len, .. } | ChunkRef::Zero { len } => len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceKind {
    File,
    BlockDevice,
    Stdin,
    Command,
    /// A pipe, FIFO or character device named by path: read as a stream.
    Stream,
}

impl SourceKind {
    /// Read to its end with no size known in advance (content-defined chunking).
    pub fn is_stream(&self) -> bool {
        matches!(
            self,
            SourceKind::Stdin | SourceKind::Command | SourceKind::Stream
        )
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::BlockDevice => "block-device",
            SourceKind::Stdin => "stdin",
            SourceKind::Command => "command",
            SourceKind::Stream => "stream",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub kind: SourceKind,
    /// The path (absolute) or command line.
    pub description: String,
}

impl SourceInfo {
    /// The source in a sentence: "command `pg_dump db`", "standard input", or its path.
    pub fn in_words(&self) -> String {
        match self.kind {
            SourceKind::Command => format!("command `{}`", self.description),
            SourceKind::Stdin => "standard input".to_string(),
            _ => self.description.clone(),
        }
    }
}

/// What the backup that made this version did, for `show` and for cost reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStats {
    pub chunks_new: u64,
    pub chunks_reused: u64,
    pub chunks_zero: u64,
    /// Plaintext bytes of the chunks this run stored.
    pub bytes_new: u64,
    /// Stored (compressed, sealed) bytes of those chunks.
    pub bytes_new_stored: u64,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub series: String,
    pub version: String,
    /// Unix seconds: when the backup was made (or the time given with `--time`).
    pub time: i64,
    pub host: String,
    pub source: SourceInfo,
    pub size: u64,
    pub chunking: Chunking,
    pub chunks: Vec<ChunkRef>,
    /// The version whose chunks this backup compared against, if any.
    pub parent: Option<String>,
    pub stats: BackupStats,
    /// Later, optional facts about the source that older readers may ignore.
    #[serde(deserialize_with = "crate::format::ascending_map")]
    pub extra: BTreeMap<String, String>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, FormatError> {
        let m: Manifest = decode_exact(bytes)?;
        m.validate()?;
        Ok(m)
    }

    /// The structural rules a reader relies on: the chunks add up to the size, no chunk is
    /// larger than the chunking allows, and fixed chunks are all full-size but the last.
    pub fn validate(&self) -> Result<(), FormatError> {
        let bad = |msg: String| Err(FormatError::Payload(msg));
        if let Err(e) = self.chunking.validate() {
            return bad(e);
        }
        let max = self.chunking.max_chunk() as u64;
        let mut total: u64 = 0;
        for (i, c) in self.chunks.iter().enumerate() {
            let len = u64::from(c.len());
            if len == 0 || len > max {
                return bad(format!("chunk {i} has length {len}, outside 1..={max}"));
            }
            if let Chunking::Fixed { size } = self.chunking
                && i + 1 < self.chunks.len()
                && len != u64::from(size)
            {
                return bad(format!("fixed chunk {i} has length {len}, expected {size}"));
            }
            total = total.saturating_add(len);
        }
        if total != self.size {
            return bad(format!(
                "chunks add up to {total} bytes but the version size is {}",
                self.size
            ));
        }
        Ok(())
    }

    /// Each chunk with its byte offset in the version.
    pub fn offsets(&self) -> impl Iterator<Item = (u64, &ChunkRef)> {
        self.chunks.iter().scan(0u64, |off, c| {
            let at = *off;
            *off += u64::from(c.len());
            Some((at, c))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            series: "vm101".into(),
            version: "2026-11-22T130507Z".into(),
            time: 1_795_352_707,
            host: "host".into(),
            source: SourceInfo {
                kind: SourceKind::File,
                description: "/img".into(),
            },
            size: (4 << 20) + 10,
            chunking: Chunking::Fixed { size: 4 << 20 },
            chunks: vec![
                ChunkRef::Zero { len: 4 << 20 },
                ChunkRef::Data {
                    id: ChunkId([1; 32]),
                    len: 10,
                },
            ],
            parent: None,
            stats: BackupStats::default(),
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn round_trip_and_offsets() {
        let m = sample();
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        let offs: Vec<u64> = m.offsets().map(|(o, _)| o).collect();
        assert_eq!(offs, vec![0, 4 << 20]);
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let mut m = sample();
        m.size += 1;
        assert!(Manifest::decode(&m.encode()).is_err());
        let mut m = sample();
        m.chunks.swap(0, 1);
        assert!(Manifest::decode(&m.encode()).is_err());
        let mut bytes = sample().encode();
        bytes.push(0);
        assert!(Manifest::decode(&bytes).is_err());
    }
}
