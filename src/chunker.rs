//! Cutting a byte source into chunks: fixed-size (devices, images) and FastCDC (streams).
//!
//! Both are plain iterators over `Read` with no I/O of their own beyond that reader. Chunk
//! boundaries depend only on the bytes, never on how the reader happens to split them: the
//! CDC chunker only cuts when it holds at least `max` bytes or the source has ended.

use fastcdc::v2020::{self, MASKS};
use serde::{Deserialize, Serialize};
use std::io::{self, Read};

/// How a version was cut; recorded in every manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Chunking {
    Fixed {
        size: u32,
    },
    /// FastCDC 2020, normalisation level 1, gear table seeded from the repository key.
    Cdc {
        min: u32,
        avg: u32,
        max: u32,
    },
}

pub const DEFAULT_FIXED_SIZE: u32 = 4 << 20;
pub const DEFAULT_CDC_MIN: u32 = 256 << 10;
pub const DEFAULT_CDC_AVG: u32 = 1 << 20;
pub const DEFAULT_CDC_MAX: u32 = 4 << 20;
pub const MIN_FIXED_SIZE: u32 = 64 << 10;
pub const MAX_FIXED_SIZE: u32 = 64 << 20;

impl Chunking {
    /// Checks parameters read from a config, a manifest or the command line; the fastcdc crate
    /// asserts on out-of-range values, so nothing unchecked may reach it.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Chunking::Fixed { size } => {
                if !(MIN_FIXED_SIZE..=MAX_FIXED_SIZE).contains(&size) || size % 4096 != 0 {
                    return Err(format!(
                        "fixed chunk size {size} must be a multiple of 4 KiB between {} KiB and {} MiB",
                        MIN_FIXED_SIZE >> 10,
                        MAX_FIXED_SIZE >> 20
                    ));
                }
            }
            Chunking::Cdc { min, avg, max } => {
                let ok = (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&min)
                    && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&avg)
                    && (v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&max)
                    && min <= avg
                    && avg <= max;
                if !ok {
                    return Err(format!(
                        "content-defined chunking bounds min={min} avg={avg} max={max} are out of range"
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn max_chunk(&self) -> usize {
        match *self {
            Chunking::Fixed { size } => size as usize,
            Chunking::Cdc { max, .. } => max as usize,
        }
    }
}

#[derive(Debug)]
pub struct Chunk {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// Reads until `buf` is full or the source ends; returns how much was read.
pub fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

pub struct FixedChunker<R> {
    reader: R,
    size: usize,
    offset: u64,
    done: bool,
}

impl<R: Read> FixedChunker<R> {
    pub fn new(reader: R, size: u32) -> Self {
        FixedChunker {
            reader,
            size: size as usize,
            offset: 0,
            done: false,
        }
    }
}

impl<R: Read> FixedChunker<R> {
    /// The next chunk, written into `out` from index `at` on (`out` ends with it); its offset,
    /// or None at the end. Reusing `out` saves allocating (and the kernel zeroing) a buffer
    /// per chunk: bytes already there are overwritten, not cleared first.
    pub fn next_into(&mut self, out: &mut Vec<u8>, at: usize) -> Option<io::Result<u64>> {
        if self.done {
            return None;
        }
        if out.len() < at + self.size {
            out.resize(at + self.size, 0);
        }
        let n = match read_full(&mut self.reader, &mut out[at..at + self.size]) {
            Ok(n) => n,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        out.truncate(at + n);
        if n < self.size {
            self.done = true;
            if n == 0 {
                return None;
            }
        }
        let offset = self.offset;
        self.offset += n as u64;
        Some(Ok(offset))
    }
}

impl<R: Read> Iterator for FixedChunker<R> {
    type Item = io::Result<Chunk>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut data = Vec::new();
        Some(
            self.next_into(&mut data, 0)?
                .map(|offset| Chunk { offset, data }),
        )
    }
}

pub struct CdcChunker<R> {
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    failed: bool,
    offset: u64,
    min: usize,
    avg: usize,
    max: usize,
    masks: [u64; 4],
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

impl<R: Read> CdcChunker<R> {
    /// `min`, `avg` and `max` must have passed [`Chunking::validate`].
    pub fn new(reader: R, min: u32, avg: u32, max: u32, seed: u64) -> Self {
        let bits = v2020::logarithm2(avg) as usize;
        // Normalisation level 1: a stricter mask before the average size, a looser one after.
        let mask_s = MASKS[bits + 1];
        let mask_l = MASKS[bits - 1];
        let (gear, gear_ls) = v2020::get_gear_with_seed(seed);
        CdcChunker {
            reader,
            // Twice the largest chunk, so refills move at most one chunk's worth of bytes.
            buf: vec![0u8; 2 * max as usize],
            start: 0,
            end: 0,
            eof: false,
            failed: false,
            offset: 0,
            min: min as usize,
            avg: avg as usize,
            max: max as usize,
            masks: [mask_s, mask_l, mask_s << 1, mask_l << 1],
            gear,
            gear_ls,
        }
    }

    fn refill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = read_full(&mut self.reader, &mut self.buf[self.end..])?;
        self.end += n;
        if self.end < self.buf.len() {
            self.eof = true;
        }
        Ok(())
    }
}

impl<R: Read> CdcChunker<R> {
    /// The next chunk, appended to `out` after its first `at` bytes; its offset, or None at
    /// the end.
    pub fn next_into(&mut self, out: &mut Vec<u8>, at: usize) -> Option<io::Result<u64>> {
        if self.failed {
            return None;
        }
        if self.end - self.start < self.max
            && !self.eof
            && let Err(e) = self.refill()
        {
            self.failed = true;
            return Some(Err(e));
        }
        if self.start == self.end {
            return None;
        }
        let [mask_s, mask_l, mask_s_ls, mask_l_ls] = self.masks;
        let (_, count) = v2020::cut_gear(
            &self.buf[self.start..self.end],
            self.min,
            self.avg,
            self.max,
            mask_s,
            mask_l,
            mask_s_ls,
            mask_l_ls,
            &self.gear,
            &self.gear_ls,
        );
        out.resize(at, 0);
        out.extend_from_slice(&self.buf[self.start..self.start + count]);
        self.start += count;
        let offset = self.offset;
        self.offset += count as u64;
        Some(Ok(offset))
    }
}

impl<R: Read> Iterator for CdcChunker<R> {
    type Item = io::Result<Chunk>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut data = Vec::new();
        Some(
            self.next_into(&mut data, 0)?
                .map(|offset| Chunk { offset, data }),
        )
    }
}

/// True when every byte is zero; such chunks are recorded as holes and never stored.
pub fn is_zero(data: &[u8]) -> bool {
    // An OR-fold per 4 KiB block vectorises well and still stops early on real data.
    data.chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A reader that hands out at most `step` bytes per call, to prove boundaries do not depend
    /// on read sizes.
    struct Dribble<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn cdc_lengths(data: &[u8], step: usize) -> Vec<usize> {
        CdcChunker::new(Dribble { data, step }, 1024, 4096, 16384, 42)
            .map(|c| c.unwrap().data.len())
            .collect()
    }

    #[test]
    fn fixed_chunks_cover_the_source_exactly() {
        let data = pseudo_random(10_000, 1);
        let chunks: Vec<Chunk> = FixedChunker::new(&data[..], 4096)
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            chunks.iter().map(|c| c.data.len()).collect::<Vec<_>>(),
            vec![4096, 4096, 1808]
        );
        assert_eq!(chunks[2].offset, 8192);
        assert_eq!(chunks.concat_data(), data);
        assert_eq!(FixedChunker::new(&[][..], 4096).count(), 0);
    }

    #[test]
    fn cdc_cuts_are_local_to_an_insertion() {
        let data = pseudo_random(400_000, 7);
        let mut edited = data.clone();
        edited.splice(200_000..200_000, *b"inserted");
        let a = cdc_lengths(&data, 1 << 20);
        let b = cdc_lengths(&edited, 1 << 20);
        let same_prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        let same_suffix = a
            .iter()
            .rev()
            .zip(b.iter().rev())
            .take_while(|(x, y)| x == y)
            .count();
        assert!(
            a.len() > 40,
            "expected ~100 chunks of ~4 KiB, got {}",
            a.len()
        );
        assert!(
            same_prefix + same_suffix + 3 >= a.len(),
            "an 8-byte insertion changed more than 3 chunks"
        );
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 4099]));
        let mut d = vec![0u8; 4099];
        d[4098] = 1;
        assert!(!is_zero(&d));
        d[4098] = 0;
        d[17] = 1;
        assert!(!is_zero(&d));
        assert!(is_zero(&[]));
    }

    trait Concat {
        fn concat_data(&self) -> Vec<u8>;
    }
    impl Concat for Vec<Chunk> {
        fn concat_data(&self) -> Vec<u8> {
            self.iter().flat_map(|c| c.data.iter().copied()).collect()
        }
    }

    proptest! {
        #[test]
        fn cdc_boundaries_do_not_depend_on_read_sizes(len in 0usize..200_000, seed: u64, step in 1usize..70_000) {
            let data = pseudo_random(len, seed);
            prop_assert_eq!(cdc_lengths(&data, step), cdc_lengths(&data, 1 << 20));
            let total: usize = cdc_lengths(&data, step).iter().sum();
            prop_assert_eq!(total, len);
        }

        #[test]
        fn next_into_a_used_buffer_gives_the_same_chunks(len in 0usize..50_000, step in 1usize..9000, at in 0usize..40) {
            let data = pseudo_random(len, 5);
            let fixed: Vec<Vec<u8>> = data.chunks(4096).map(<[u8]>::to_vec).collect();
            let mut chunker = FixedChunker::new(Dribble { data: &data, step }, 4096);
            let mut buf = vec![9u8; 7000];
            let mut got = Vec::new();
            while let Some(offset) = chunker.next_into(&mut buf, at) {
                prop_assert_eq!(offset.unwrap(), (got.len() * 4096) as u64);
                got.push(buf[at..].to_vec());
            }
            prop_assert_eq!(got, fixed);
            let cdc: Vec<Vec<u8>> = CdcChunker::new(&data[..], 1024, 4096, 16384, 42).map(|c| c.unwrap().data).collect();
            let mut chunker = CdcChunker::new(Dribble { data: &data, step }, 1024, 4096, 16384, 42);
            let mut got = Vec::new();
            while let Some(offset) = chunker.next_into(&mut buf, at) {
                prop_assert_eq!(offset.unwrap(), got.iter().map(Vec::len).sum::<usize>() as u64);
                got.push(buf[at..].to_vec());
            }
            prop_assert_eq!(got, cdc);
        }

        #[test]
        fn fixed_boundaries_do_not_depend_on_read_sizes(len in 0usize..50_000, step in 1usize..9000) {
            let data = pseudo_random(len, 3);
            let a: Vec<Vec<u8>> = FixedChunker::new(Dribble { data: &data, step }, 4096).map(|c| c.unwrap().data).collect();
            let b: Vec<Vec<u8>> = data.chunks(4096).map(<[u8]>::to_vec).collect();
            prop_assert_eq!(a, b);
        }
    }
}
