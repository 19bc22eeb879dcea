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

/// A version's chunks in order, with each run of equal-length zero chunks held as one entry.
///
/// A thin 16 TiB zvol is four million zero chunks at the default chunk size: as a plain list
/// that was 160 MB in every command that read its manifest, and twice that in a backup with a
/// parent, where issue 7 asks for a peak under 128 MiB whatever the input's size. Stored one
/// entry per chunk, exactly as a `Vec<ChunkRef>` (format-spec 6.4): only the memory changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunks {
    /// Never two `Zero` runs of the same length in a row, so equal lists compare equal.
    runs: Vec<Run>,
    count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    Data {
        id: ChunkId,
        len: u32,
    },
    /// `count` zero chunks of `len` bytes each.
    Zero {
        len: u32,
        count: u64,
    },
}

impl Run {
    /// The chunk the run repeats, and how many times.
    pub fn parts(self) -> (ChunkRef, u64) {
        match self {
            Run::Data { id, len } => (ChunkRef::Data { id, len }, 1),
            Run::Zero { len, count } => (ChunkRef::Zero { len }, count),
        }
    }

    /// The bytes of the version it covers (saturating: `validate` refuses what overflows).
    pub fn bytes(self) -> u64 {
        let (c, n) = self.parts();
        u64::from(c.len()).saturating_mul(n)
    }
}

impl From<ChunkRef> for Run {
    fn from(c: ChunkRef) -> Run {
        match c {
            ChunkRef::Data { id, len } => Run::Data { id, len },
            ChunkRef::Zero { len } => Run::Zero { len, count: 1 },
        }
    }
}

impl Chunks {
    pub fn new() -> Chunks {
        Chunks::default()
    }

    pub fn push(&mut self, c: ChunkRef) {
        self.push_run(c.into());
    }

    /// Appends `run`, joined to the last run when both are zero chunks of one length.
    pub fn push_run(&mut self, run: Run) {
        let (_, n) = run.parts();
        if n == 0 {
            return;
        }
        match (self.runs.last_mut(), run) {
            (Some(Run::Zero { len: l, count }), Run::Zero { len, .. }) if *l == len => *count += n,
            _ => self.runs.push(run),
        }
        self.count += n;
    }

    /// How many chunks (not runs).
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// Every chunk, one by one.
    pub fn iter(&self) -> impl Iterator<Item = ChunkRef> + '_ {
        self.runs.iter().flat_map(|r| {
            let (c, n) = r.parts();
            // A run longer than memory can count is refused on decode (`validate`).
            std::iter::repeat_n(c, usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    /// The chunks that hold data, with their lengths, in order (repeats included).
    pub fn data(&self) -> impl Iterator<Item = (ChunkId, u32)> + '_ {
        self.runs.iter().filter_map(|r| match *r {
            Run::Data { id, len } => Some((id, len)),
            Run::Zero { .. } => None,
        })
    }

    /// The length of the longest chunk, or 0 for none.
    pub fn longest(&self) -> u32 {
        self.runs
            .iter()
            .map(|r| match *r {
                Run::Data { len, .. } | Run::Zero { len, .. } => len,
            })
            .max()
            .unwrap_or(0)
    }
}

impl FromIterator<ChunkRef> for Chunks {
    fn from_iter<I: IntoIterator<Item = ChunkRef>>(iter: I) -> Chunks {
        let mut chunks = Chunks::new();
        for c in iter {
            chunks.push(c);
        }
        chunks
    }
}

impl From<Vec<ChunkRef>> for Chunks {
    fn from(v: Vec<ChunkRef>) -> Chunks {
        v.into_iter().collect()
    }
}

impl Serialize for Chunks {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let n = usize::try_from(self.count).map_err(|_| S::Error::custom("too many chunks"))?;
        let mut seq = serializer.serialize_seq(Some(n))?;
        for c in self.iter() {
            seq.serialize_element(&c)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Chunks {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Chunks, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Chunks;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence of chunk references")
            }
            // No capacity from the length the object claims: a forged one could ask for any.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Chunks, A::Error> {
                let mut chunks = Chunks::new();
                while let Some(c) = seq.next_element::<ChunkRef>()? {
                    chunks.push(c);
                }
                Ok(chunks)
            }
        }
        deserializer.deserialize_seq(Visitor)
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
    pub chunks: Chunks,
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
        let fixed = match self.chunking {
            Chunking::Fixed { size } => Some(u64::from(size)),
            Chunking::Cdc { .. } => None,
        };
        let mut total: u64 = 0;
        // The index of the run's first chunk, for the messages.
        let mut i: u64 = 0;
        for r in self.chunks.runs() {
            let (c, n) = r.parts();
            let len = u64::from(c.len());
            if len == 0 || len > max {
                return bad(format!("chunk {i} has length {len}, outside 1..={max}"));
            }
            // Every fixed chunk is full-size but the last (so a short run is one chunk, the last).
            if let Some(size) = fixed
                && len != size
                && i + 1 < self.chunks.len()
            {
                return bad(format!("fixed chunk {i} has length {len}, expected {size}"));
            }
            if usize::try_from(n).is_err() {
                return bad(format!("a run of {n} zero chunks at chunk {i}"));
            }
            total = total.saturating_add(r.bytes());
            i += n;
        }
        if total != self.size {
            return bad(format!(
                "chunks add up to {total} bytes but the version size is {}",
                self.size
            ));
        }
        Ok(())
    }

    /// Each run of chunks with the byte offset of its first chunk in the version: a run of
    /// zero chunks is passed over at once where one by one would take seconds (a forged
    /// manifest within the 1 GiB limit can name hundreds of millions).
    pub fn run_offsets(&self) -> impl Iterator<Item = (u64, Run)> + '_ {
        self.chunks.runs().iter().scan(0u64, |off, r| {
            let at = *off;
            *off += r.bytes();
            Some((at, *r))
        })
    }

    /// Each chunk with its byte offset in the version.
    pub fn offsets(&self) -> impl Iterator<Item = (u64, ChunkRef)> + '_ {
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
            ]
            .into(),
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
        let runs: Vec<u64> = m.run_offsets().map(|(o, _)| o).collect();
        assert_eq!(runs, vec![0, 4 << 20]);
    }

    #[test]
    fn zero_runs_are_one_entry_in_memory_and_one_per_chunk_stored() {
        let z = |len| ChunkRef::Zero { len };
        let d = |b, len| ChunkRef::Data {
            id: ChunkId([b; 32]),
            len,
        };
        let list = vec![
            z(8),
            z(8),
            z(8),
            d(1, 8),
            d(1, 8),
            z(8),
            z(8),
            z(3),
            z(3),
            z(8),
        ];
        let chunks = Chunks::from(list.clone());
        assert_eq!(chunks.len(), 10);
        assert_eq!(
            chunks.runs(),
            &[
                Run::Zero { len: 8, count: 3 },
                Run::Data {
                    id: ChunkId([1; 32]),
                    len: 8
                },
                Run::Data {
                    id: ChunkId([1; 32]),
                    len: 8
                },
                Run::Zero { len: 8, count: 2 },
                Run::Zero { len: 3, count: 2 },
                Run::Zero { len: 8, count: 1 },
            ]
        );
        assert_eq!(chunks.iter().collect::<Vec<_>>(), list);
        assert_eq!(chunks.data().count(), 2);
        assert_eq!(chunks.longest(), 8);
        // The stored bytes are those of the plain list: format-spec 6.4 is unchanged.
        assert_eq!(encode(&chunks), encode(&list));
        let back: Chunks = decode_exact(&encode(&list)).unwrap();
        assert_eq!(back, chunks);

        // Four million zero chunks, as a thin 16 TiB device is at 4 MiB: one run.
        let mut m = sample();
        m.chunks = Chunks::new();
        m.chunks.push_run(Run::Zero {
            len: 4 << 20,
            count: 4 << 20,
        });
        m.size = (4u64 << 20) * (4 << 20);
        let decoded = Manifest::decode(&m.encode()).unwrap();
        assert_eq!(decoded.chunks.runs().len(), 1);
        assert_eq!(decoded.chunks.len(), 4 << 20);
        assert_eq!(decoded, m);
    }

    #[test]
    fn a_forged_chunk_count_is_refused() {
        // A list that claims 2^40 chunks and ends after one.
        let mut m = sample();
        m.chunks = Chunks::new();
        m.chunks.push(ChunkRef::Zero { len: 10 });
        m.size = 10;
        let good = m.encode();
        let one = encode(&m.chunks);
        let mut forged_list = postcard::to_stdvec(&(1u64 << 40)).unwrap();
        forged_list.extend_from_slice(&one[1..]);
        let at = good.windows(one.len()).position(|w| w == one).unwrap();
        let mut forged = good[..at].to_vec();
        forged.extend_from_slice(&forged_list);
        forged.extend_from_slice(&good[at + one.len()..]);
        assert!(Manifest::decode(&forged).is_err());
    }

    #[test]
    fn a_short_fixed_chunk_is_refused_anywhere_but_last() {
        let fixed = |chunks: Vec<ChunkRef>| {
            let mut m = sample();
            m.size = chunks.iter().map(|c| u64::from(c.len())).sum();
            m.chunks = chunks.into();
            Manifest::decode(&m.encode())
        };
        let z = |len| ChunkRef::Zero { len };
        let full = 4 << 20;
        assert!(fixed(vec![z(full), z(full), z(10)]).is_ok());
        assert!(fixed(vec![z(full), z(10), z(10)]).is_err());
        assert!(fixed(vec![z(10), z(full)]).is_err());
        assert!(fixed(vec![z(10)]).is_ok());
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let mut m = sample();
        m.size += 1;
        assert!(Manifest::decode(&m.encode()).is_err());
        let mut m = sample();
        let mut swapped: Vec<ChunkRef> = m.chunks.iter().collect();
        swapped.swap(0, 1);
        m.chunks = swapped.into();
        assert!(Manifest::decode(&m.encode()).is_err());
        let mut bytes = sample().encode();
        bytes.push(0);
        assert!(Manifest::decode(&bytes).is_err());
    }
}
