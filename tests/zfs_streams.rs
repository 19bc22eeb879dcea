//! Real ZFS send streams (OpenZFS's test streams and streams made with zfs-fuse; provenance in
//! tests/data/zfs-streams/README.md): the parser walks each to its end whatever the read size,
//! reports what it contains, and rejects every flipped bit, truncation and trailing byte.
//!
//! The expected values were read with zfs-fuse's `zstreamdump` and a separate Python reader,
//! not with the parser, and are pinned here as literals.

use crate::util::bunzip;
use blockvault::zfs::stream::{
    BACKUP_MAGIC, DRR_HEADER_LEN, StreamError, StreamInfo, StreamParser,
};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/zfs-streams");

/// The decompressed stream, decompressed once per test binary.
fn stream(name: &str) -> &'static [u8] {
    static CACHE: OnceLock<Mutex<HashMap<String, &'static [u8]>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(s) = cache.lock().unwrap().get(name) {
        return s;
    }
    let bytes = bunzip(&format!("{DIR}/{name}.zsend.bz2"));
    let mut cache = cache.lock().unwrap();
    cache
        .entry(name.to_string())
        .or_insert_with(|| Vec::leak(bytes))
}

struct Expect {
    name: &'static str,
    compound: bool,
    big_endian: bool,
    toname: &'static str,
    length: u64,
    records: u64,
    substreams: &'static [Sub],
}

struct Sub {
    toname: &'static str,
    toguid: u64,
    fromguid: u64,
    offset: u64,
    records: u64,
    features: u64,
}

impl Expect {
    /// OpenZFS has written a checksum into every record since 0.7; zfs-fuse only at END.
    fn per_record_checksums(&self) -> bool {
        !self.name.starts_with("zfs-fuse")
    }
}

// Features (DMU_BACKUP_FEATURE_*): 0x1 DEDUP, 0x2 DEDUPPROPS, 0x4 SA_SPILL, 0x10000 EMBED_DATA,
// 0x20000 LZ4, 0x80000 LARGE_BLOCKS, 0x200000 REDACTED, 0x400000 COMPRESSED, 0x1000000 RAW,
// 0x2000000 ZSTD.
const EXPECTED: &[Expect] = &[
    Expect {
        name: "big-endian-all-drr-types-base-NATIVE",
        compound: false,
        big_endian: true,
        toname: "test/source@baseline",
        length: 68696,
        records: 47,
        substreams: &[Sub {
            toname: "test/source@baseline",
            toguid: 0xa2ae713712d097d7,
            fromguid: 0,
            offset: 0,
            records: 47,
            features: 0x630004,
        }],
    },
    Expect {
        name: "big-endian-all-drr-types-base-XDR",
        compound: false,
        big_endian: true,
        toname: "test/source@baseline",
        length: 68192,
        records: 47,
        substreams: &[Sub {
            toname: "test/source@baseline",
            toguid: 0xf8cd80220b548aa7,
            fromguid: 0,
            offset: 0,
            records: 47,
            features: 0x630004,
        }],
    },
    Expect {
        name: "big-endian-all-drr-types-incr-NATIVE",
        compound: true,
        big_endian: true,
        toname: "test/redacted@clean",
        length: 125584,
        records: 124,
        substreams: &[
            Sub {
                toname: "test/redacted@clean",
                toguid: 0x83307b4241f2026a,
                fromguid: 0xa2ae713712d097d7,
                offset: 1612,
                records: 79,
                features: 0x430004,
            },
            Sub {
                toname: "test/redacted/encrypted@clean",
                toguid: 0x663fe5e93a7c58b8,
                fromguid: 0,
                offset: 84452,
                records: 42,
                features: 0x1420004,
            },
        ],
    },
    Expect {
        name: "big-endian-all-drr-types-incr-XDR",
        compound: true,
        big_endian: true,
        toname: "test/redacted@clean",
        length: 125068,
        records: 124,
        substreams: &[
            Sub {
                toname: "test/redacted@clean",
                toguid: 0x15dedc62a4f8b9b0,
                fromguid: 0xf8cd80220b548aa7,
                offset: 1612,
                records: 79,
                features: 0x430004,
            },
            Sub {
                toname: "test/redacted/encrypted@clean",
                toguid: 0x4c9662b5f0d19d7a,
                fromguid: 0,
                offset: 83428,
                records: 42,
                features: 0x1420004,
            },
        ],
    },
    Expect {
        name: "big-endian-long-payloads",
        compound: false,
        big_endian: true,
        toname: "test@long-payloads",
        length: 42164800,
        records: 39,
        substreams: &[Sub {
            toname: "test@long-payloads",
            toguid: 0x8533d470f979c530,
            fromguid: 0,
            offset: 0,
            records: 39,
            features: 0x80004,
        }],
    },
    Expect {
        name: "decompress-crypt",
        compound: false,
        big_endian: false,
        toname: "test/encrypted@decompression",
        length: 39560,
        records: 39,
        substreams: &[Sub {
            toname: "test/encrypted@decompression",
            toguid: 0x450a5cf06223b0b6,
            fromguid: 0,
            offset: 0,
            records: 39,
            features: 0x1420004,
        }],
    },
    Expect {
        name: "decompress",
        compound: false,
        big_endian: false,
        toname: "test/unencrypted@decompression",
        length: 64792,
        records: 39,
        substreams: &[Sub {
            toname: "test/unencrypted@decompression",
            toguid: 0xd49d6d503880b9b2,
            fromguid: 0,
            offset: 0,
            records: 39,
            features: 0x2430004,
        }],
    },
    Expect {
        name: "little-endian-all-drr-types-base-NATIVE",
        compound: false,
        big_endian: false,
        toname: "test/source@baseline",
        length: 67672,
        records: 47,
        substreams: &[Sub {
            toname: "test/source@baseline",
            toguid: 0x421d0579cc63e574,
            fromguid: 0,
            offset: 0,
            records: 47,
            features: 0x630004,
        }],
    },
    Expect {
        name: "little-endian-all-drr-types-base-XDR",
        compound: false,
        big_endian: false,
        toname: "test/source@baseline",
        length: 68704,
        records: 47,
        substreams: &[Sub {
            toname: "test/source@baseline",
            toguid: 0xf3851fd58c3305c6,
            fromguid: 0,
            offset: 0,
            records: 47,
            features: 0x630004,
        }],
    },
    Expect {
        name: "little-endian-all-drr-types-incr-NATIVE",
        compound: true,
        big_endian: false,
        toname: "test/redacted@clean",
        length: 157352,
        records: 129,
        substreams: &[
            Sub {
                toname: "test/redacted@clean",
                toguid: 0x964950de82b7d299,
                fromguid: 0x421d0579cc63e574,
                offset: 1612,
                records: 82,
                features: 0x430004,
            },
            Sub {
                toname: "test/redacted/encrypted@clean",
                toguid: 0x98249ec8c6dcacdb,
                fromguid: 0,
                offset: 115596,
                records: 44,
                features: 0x1420004,
            },
        ],
    },
    Expect {
        name: "little-endian-all-drr-types-incr-XDR",
        compound: true,
        big_endian: false,
        toname: "test/redacted@clean",
        length: 126628,
        records: 129,
        substreams: &[
            Sub {
                toname: "test/redacted@clean",
                toguid: 0xafd9859f28e384b2,
                fromguid: 0xf3851fd58c3305c6,
                offset: 1612,
                records: 82,
                features: 0x430004,
            },
            Sub {
                toname: "test/redacted/encrypted@clean",
                toguid: 0x6a6f3fe9301b81b4,
                fromguid: 0,
                offset: 84364,
                records: 44,
                features: 0x1420004,
            },
        ],
    },
    Expect {
        name: "little-endian-long-payloads",
        compound: false,
        big_endian: false,
        toname: "test@long-payloads",
        length: 42147392,
        records: 39,
        substreams: &[Sub {
            toname: "test@long-payloads",
            toguid: 0x41657cfc6fa788d0,
            fromguid: 0,
            offset: 0,
            records: 39,
            features: 0x80004,
        }],
    },
    Expect {
        name: "undersized-write-lsize",
        compound: false,
        big_endian: false,
        toname: "testpool/fs@snap0",
        length: 47928,
        records: 31,
        substreams: &[Sub {
            toname: "testpool/fs@snap0",
            toguid: 0x0fb4ba0029287fb3,
            fromguid: 0,
            offset: 0,
            records: 31,
            features: 0x420004,
        }],
    },
    // zfs-fuse: tank1/small with snapshots s1, s2, s3.
    Expect {
        name: "zfs-fuse-full-s1",
        compound: false,
        big_endian: false,
        toname: "tank1/small@s1",
        length: 20632,
        records: 25,
        substreams: &[Sub {
            toname: "tank1/small@s1",
            toguid: 0x4e636d518b530706,
            fromguid: 0,
            offset: 0,
            records: 25,
            features: 0,
        }],
    },
    Expect {
        name: "zfs-fuse-incr-s1-s2",
        compound: false,
        big_endian: false,
        toname: "tank1/small@s2",
        length: 55576,
        records: 27,
        substreams: &[Sub {
            toname: "tank1/small@s2",
            toguid: 0x8f79dcdbd2cbce7f,
            fromguid: 0x4e636d518b530706,
            offset: 0,
            records: 27,
            features: 0,
        }],
    },
    Expect {
        name: "zfs-fuse-R-s3",
        compound: true,
        big_endian: false,
        toname: "tank1/small@s3",
        length: 89028,
        records: 82,
        substreams: &[
            Sub {
                toname: "tank1/small@s1",
                toguid: 0x4e636d518b530706,
                fromguid: 0,
                offset: 1212,
                records: 25,
                features: 0,
            },
            Sub {
                toname: "tank1/small@s2",
                toguid: 0x8f79dcdbd2cbce7f,
                fromguid: 0x4e636d518b530706,
                offset: 21844,
                records: 27,
                features: 0,
            },
            Sub {
                toname: "tank1/small@s3",
                toguid: 0x66cd37d4a295445d,
                fromguid: 0x8f79dcdbd2cbce7f,
                offset: 77420,
                records: 27,
                features: 0,
            },
        ],
    },
    Expect {
        name: "zfs-fuse-R-I-s1-s3",
        compound: true,
        big_endian: false,
        toname: "tank1/small@s3",
        length: 68432,
        records: 57,
        substreams: &[
            Sub {
                toname: "tank1/small@s2",
                toguid: 0x8f79dcdbd2cbce7f,
                fromguid: 0x4e636d518b530706,
                offset: 1248,
                records: 27,
                features: 0,
            },
            Sub {
                toname: "tank1/small@s3",
                toguid: 0x66cd37d4a295445d,
                fromguid: 0x8f79dcdbd2cbce7f,
                offset: 56824,
                records: 27,
                features: 0,
            },
        ],
    },
    Expect {
        name: "zfs-fuse-dedup-s2",
        compound: false,
        big_endian: false,
        toname: "tank1/small@s2",
        length: 67576,
        records: 31,
        substreams: &[Sub {
            toname: "tank1/small@s2",
            toguid: 0x8f79dcdbd2cbce7f,
            fromguid: 0,
            offset: 0,
            records: 31,
            features: 0x3,
        }],
    },
];

/// The streams small enough to be parsed thousands of times.
fn small() -> impl Iterator<Item = &'static Expect> {
    EXPECTED.iter().filter(|e| e.length < 1 << 20)
}

/// Feeds `bytes` in pieces whose sizes cycle through `sizes`.
fn parse_in(
    bytes: &[u8],
    sizes: &[usize],
    require: bool,
) -> Result<Option<StreamInfo>, StreamError> {
    let mut p = StreamParser::new(require);
    let mut rest = bytes;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        p.feed(piece)?;
        rest = tail;
    }
    let result = p.finish();
    if result.is_ok() {
        assert_eq!(p.offset(), bytes.len() as u64);
    }
    result
}

fn parse(bytes: &[u8]) -> Result<Option<StreamInfo>, StreamError> {
    parse_in(bytes, &[usize::MAX], true)
}

/// Parses a stream that must be rejected; also not accepted when ZFS is not required.
#[track_caller]
fn rejected(bytes: &[u8], what: &str) -> StreamError {
    if let Ok(Some(info)) = parse_in(bytes, &[usize::MAX], false) {
        panic!("{what}: accepted when not required: {info:?}");
    }
    match parse(bytes) {
        Err(e) => e,
        Ok(info) => panic!("{what}: accepted: {info:?}"),
    }
}

#[test]
fn every_stream_validates_with_the_pinned_contents() {
    for e in EXPECTED {
        let s = stream(e.name);
        let info = parse(s)
            .unwrap_or_else(|err| panic!("{}: {err}", e.name))
            .unwrap_or_else(|| panic!("{}: not recognised as ZFS", e.name));
        let n = e.name;
        assert_eq!(info.compound, e.compound, "{n}");
        assert_eq!(info.big_endian, e.big_endian, "{n}");
        assert_eq!(info.toname, e.toname, "{n}");
        assert_eq!(info.length, e.length, "{n}");
        assert_eq!(info.records, e.records, "{n}");
        assert_eq!(
            info.substreams.len(),
            e.substreams.len(),
            "{n}: {:?}",
            info.substreams
        );
        for (got, want) in info.substreams.iter().zip(e.substreams) {
            assert_eq!(got.toname, want.toname, "{n}");
            assert_eq!(got.toguid, want.toguid, "{n} {}", want.toname);
            assert_eq!(got.fromguid, want.fromguid, "{n} {}", want.toname);
            assert_eq!(got.offset, want.offset, "{n} {}", want.toname);
            assert_eq!(got.records, want.records, "{n} {}", want.toname);
            assert_eq!(got.features, want.features, "{n} {}", want.toname);
            assert_eq!(got.big_endian, e.big_endian, "{n} {}", want.toname);
            assert_eq!(
                got.per_record_checksums,
                e.per_record_checksums(),
                "{n} {}",
                want.toname
            );
            // Every test stream is of a filesystem (DMU_OST_ZFS).
            assert_eq!(got.objset_type, 2, "{n}");
        }
        assert_eq!(
            parse_in(s, &[usize::MAX], false),
            Ok(Some(info)),
            "{n}: not required"
        );
    }
}

#[test]
fn results_do_not_depend_on_read_sizes() {
    let chunkings: &[&[usize]] = &[&[1, 7, 311, 4096], &[312], &[3], &[65536, 1], &[1 << 20]];
    for e in EXPECTED {
        let s = stream(e.name);
        let whole = parse(s).unwrap();
        assert!(whole.is_some(), "{}", e.name);
        for sizes in chunkings {
            if *sizes == [3] && s.len() > 1 << 20 {
                continue; // 14 million calls on a debug build add nothing the others miss
            }
            assert_eq!(
                parse_in(s, sizes, true),
                Ok(whole.clone()),
                "{} in pieces of {sizes:?}",
                e.name
            );
        }
    }
}

/// A record as a separate, minimal reader sees it: where it starts and how long it is.
#[derive(Debug, Clone, Copy)]
struct Record {
    offset: usize,
    kind: u32,
    /// Header and payload.
    len: usize,
}

fn u32_at(h: &[u8], at: usize, be: bool) -> u32 {
    let b = h[at..at + 4].try_into().unwrap();
    if be {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

fn u64_at(h: &[u8], at: usize, be: bool) -> u64 {
    let b = h[at..at + 8].try_into().unwrap();
    if be {
        u64::from_be_bytes(b)
    } else {
        u64::from_le_bytes(b)
    }
}

/// Walks the records of a valid stream without checking anything.
fn records(s: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    let (mut at, mut be) = (0, false);
    while at < s.len() {
        let h = &s[at..at + DRR_HEADER_LEN];
        if h[..4] == [0; 4] {
            be = u64_at(h, 8, true) == BACKUP_MAGIC;
        }
        let kind = u32_at(h, 0, be);
        let payload = match kind {
            0 => u64::from(u32_at(h, 4, be)),
            1 if u32_at(h, 36, be) != 0 => u64::from(u32_at(h, 36, be)),
            1 => u64::from(u32_at(h, 28, be)).div_ceil(8) * 8,
            3 if h[50] != 0 => u64_at(h, 96, be),
            3 => u64_at(h, 32, be),
            7 if u64_at(h, 40, be) != 0 => u64_at(h, 40, be),
            7 => u64_at(h, 16, be),
            8 => u64::from(u32_at(h, 52, be)).div_ceil(8) * 8,
            _ => 0,
        };
        let len = DRR_HEADER_LEN + payload as usize;
        out.push(Record {
            offset: at,
            kind,
            len,
        });
        at += len;
    }
    assert_eq!(at, s.len());
    out
}

#[test]
fn the_independent_reader_agrees_on_records_and_begins() {
    for e in EXPECTED {
        let s = stream(e.name);
        let recs = records(s);
        assert_eq!(recs.len() as u64, e.records, "{}", e.name);
        let begins: Vec<_> = recs
            .iter()
            .filter(|r| r.kind == 0)
            .map(|r| r.offset as u64)
            .collect();
        let mut want: Vec<_> = e.substreams.iter().map(|s| s.offset).collect();
        if e.compound {
            want.insert(0, 0);
        }
        assert_eq!(begins, want, "{}", e.name);
        // The BEGIN fields as pinned, read directly.
        for sub in e.substreams {
            let h = &s[sub.offset as usize..][..DRR_HEADER_LEN];
            let be = e.big_endian;
            assert_eq!(u64_at(h, 8, be), BACKUP_MAGIC);
            assert_eq!(u64_at(h, 16, be) & 3, 1);
            assert_eq!(u64_at(h, 40, be), sub.toguid);
            assert_eq!(u64_at(h, 48, be), sub.fromguid);
            assert!(h[56..].starts_with(sub.toname.as_bytes()) && h[56 + sub.toname.len()] == 0);
        }
    }
}

/// splitmix64: deterministic positions, the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Flips one bit and checks the stream is rejected at a plausible place: not before the
/// damaged record and, where every record but BEGIN carries a checksum, no later than the next
/// one. (A BEGIN is checked by the record after it; a damaged payload length in it can move
/// that record anywhere.)
fn check_flip(e: &Expect, recs: &[Record], bit: usize) {
    let s = stream(e.name);
    let pos = bit / 8;
    let flipped = [s[pos] ^ (1 << (bit % 8))];
    let pieces = [&s[..pos], &flipped[..], &s[pos + 1..]];
    let what = format!("{} with bit {bit} flipped", e.name);
    // Only the first 16 bytes decide whether the input is ZFS at all.
    if pos < 16 {
        let mut p = StreamParser::new(false);
        let got = pieces
            .iter()
            .try_for_each(|piece| p.feed(piece))
            .and_then(|()| p.finish());
        assert!(
            !matches!(got, Ok(Some(_))),
            "{what}: accepted when not required: {got:?}"
        );
    }
    let mut p = StreamParser::new(true);
    let err = match pieces
        .iter()
        .try_for_each(|piece| p.feed(piece))
        .and_then(|()| p.finish())
    {
        Err(err) => err,
        Ok(info) => panic!("{what}: accepted: {info:?}"),
    };
    let i = recs.partition_point(|r| r.offset <= pos) - 1;
    let start = recs[i].offset as u64;
    assert!(
        err.offset >= start,
        "{what}: in the record at {start}, error before it: {err}"
    );
    let next = start + recs[i].len as u64;
    if e.per_record_checksums() && recs[i].kind != 0 {
        assert!(
            err.offset <= next,
            "{what}: in the record at {start}, error after {next}: {err}"
        );
    } else {
        assert!(err.offset <= e.length, "{what}: {err}");
    }
}

#[test]
fn every_bit_of_a_zfs_fuse_stream_is_protected() {
    // All 165,056 single-bit flips of the smallest stream, old format (END checksum only).
    let e = EXPECTED
        .iter()
        .find(|e| e.name == "zfs-fuse-full-s1")
        .unwrap();
    let recs = records(stream(e.name));
    for bit in 0..e.length as usize * 8 {
        check_flip(e, &recs, bit);
    }
}

#[test]
fn single_bit_flips_are_rejected() {
    let names = [
        "zfs-fuse-R-s3",
        "zfs-fuse-R-I-s1-s3",
        "little-endian-all-drr-types-incr-NATIVE",
        "big-endian-all-drr-types-incr-XDR",
        "big-endian-all-drr-types-base-NATIVE",
        "decompress-crypt",
    ];
    let mut rng = Rng(0x5eed);
    for name in names {
        let e = EXPECTED.iter().find(|e| e.name == name).unwrap();
        let recs = records(stream(name));
        // 256 bits anywhere, then 4 in every header and 2 in every payload.
        for _ in 0..256 {
            check_flip(e, &recs, rng.below(e.length as usize * 8));
        }
        for r in &recs {
            for _ in 0..4 {
                check_flip(e, &recs, r.offset * 8 + rng.below(DRR_HEADER_LEN * 8));
            }
            if r.len > DRR_HEADER_LEN {
                for _ in 0..2 {
                    let payload = (r.len - DRR_HEADER_LEN) * 8;
                    check_flip(
                        e,
                        &recs,
                        (r.offset + DRR_HEADER_LEN) * 8 + rng.below(payload),
                    );
                }
            }
        }
        // Every bit of the first header (a compound BEGIN's included) and of the last.
        for r in [recs[0], recs[recs.len() - 1]] {
            for bit in 0..DRR_HEADER_LEN * 8 {
                check_flip(e, &recs, r.offset * 8 + bit);
            }
        }
    }
}

#[test]
fn flips_inside_16_mib_payloads_are_found_at_the_next_record() {
    for name in ["big-endian-long-payloads", "little-endian-long-payloads"] {
        let s = stream(name);
        let recs = records(s);
        let big = recs
            .iter()
            .position(|r| r.len == DRR_HEADER_LEN + (16 << 20))
            .unwrap();
        let (r, next) = (recs[big], recs[big + 1]);
        for pos in [
            r.offset + DRR_HEADER_LEN,
            r.offset + DRR_HEADER_LEN + (9 << 20) + 3,
            next.offset - 1,
        ] {
            let mut damaged = s.to_vec();
            damaged[pos] ^= 0x10;
            let err = rejected(&damaged, name);
            assert_eq!(err.offset, next.offset as u64, "{name}: byte {pos}: {err}");
            assert!(err.what.contains("does not match"), "{err}");
        }
    }
}

#[track_caller]
fn check_truncated(p: &StreamParser, name: &str, at: usize) {
    let err = match p.clone().finish() {
        Err(err) => err,
        Ok(info) => panic!("{name} cut after {at} bytes: accepted: {info:?}"),
    };
    assert_eq!(err.offset, at as u64, "{name} cut after {at} bytes: {err}");
    let expected = if at == 0 { "empty" } else { "ends" };
    assert!(
        err.what.contains(expected),
        "{name} cut after {at} bytes: {err}"
    );
}

#[test]
fn every_truncation_of_the_small_streams_is_rejected() {
    for e in small() {
        let s = stream(e.name);
        // One parser fed a byte at a time, asked to finish (on a copy) after every byte.
        let mut p = StreamParser::new(true);
        for at in 0..s.len() {
            check_truncated(&p, e.name, at);
            p.feed(&s[at..at + 1]).unwrap();
        }
        assert!(p.finish().unwrap().is_some());
        // Not required: short input is "not ZFS", anything longer an error.
        for at in [0, 1, 15, 16, 311, 312, s.len() / 2, s.len() - 1] {
            let got = parse_in(&s[..at], &[usize::MAX], false);
            if at < 16 {
                assert_eq!(got, Ok(None), "{} cut after {at}", e.name);
            } else {
                assert!(got.is_err(), "{} cut after {at}: {got:?}", e.name);
            }
        }
    }
}

#[test]
fn truncations_of_the_long_streams_are_rejected() {
    for name in ["big-endian-long-payloads", "little-endian-long-payloads"] {
        let s = stream(name);
        let mut cuts: Vec<usize> = Vec::new();
        for r in records(s) {
            for d in [0, 1, 4, 311, 312, 313, r.len / 2, r.len - 1] {
                cuts.push(r.offset + d.min(r.len - 1));
            }
        }
        let mut p = StreamParser::new(true);
        let mut fed = 0;
        cuts.sort();
        cuts.dedup();
        for at in cuts {
            p.feed(&s[fed..at]).unwrap();
            fed = at;
            check_truncated(&p, name, at);
        }
        let e = rejected(&s[..s.len() - 312 + 100], name);
        assert_eq!(
            e.what,
            "stream ends inside a record header (100 of 312 bytes)"
        );
        let big = records(s).into_iter().find(|r| r.len > 1 << 24).unwrap();
        let e = rejected(&s[..big.offset + DRR_HEADER_LEN + 10], name);
        assert_eq!(
            e.what,
            format!(
                "stream ends inside the payload of the WRITE record at byte {} (needed {} more bytes)",
                big.offset,
                (16 << 20) - 10
            )
        );
    }
}

#[test]
fn bytes_after_the_final_end_are_rejected() {
    for e in small() {
        let s = stream(e.name);
        for extra in [
            &[0u8][..],
            &[0xff],
            &[0; 312],
            s,
            stream("zfs-fuse-full-s1"),
        ] {
            let mut joined = s.to_vec();
            joined.extend_from_slice(extra);
            for sizes in [&[usize::MAX][..], &[1, 7, 311, 4096]] {
                let err = match parse_in(&joined, sizes, true) {
                    Err(err) => err,
                    Ok(info) => panic!("{} + {} bytes accepted: {info:?}", e.name, extra.len()),
                };
                assert_eq!(err.offset, e.length, "{}: {err}", e.name);
                assert!(
                    err.what.ends_with("bytes follow the final END record"),
                    "{err}"
                );
            }
        }
        let mut p = StreamParser::new(true);
        p.feed(s).unwrap();
        assert!(p.is_complete());
        let err = p.feed(&[0; 12]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "ZFS send stream invalid at byte {}: at least 12 bytes follow the final END record",
                e.length
            )
        );
    }
}

#[test]
fn input_that_is_not_zfs() {
    let mut rng = Rng(42);
    let random: Vec<u8> = (0..1 << 20).map(|_| rng.next() as u8).collect();
    let text = std::fs::read(format!("{DIR}/README.md")).unwrap();
    let bz2 = std::fs::read(format!("{DIR}/zfs-fuse-full-s1.zsend.bz2")).unwrap();
    // A ZFS stream that starts one byte late.
    let shifted = [&[0u8][..], stream("zfs-fuse-full-s1")].concat();
    for (what, input) in [
        ("random", &random[..]),
        ("text", &text),
        ("bzip2", &bz2),
        ("empty", &[]),
        ("shifted", &shifted),
    ] {
        for sizes in [&[usize::MAX][..], &[1, 7, 311, 4096]] {
            let mut p = StreamParser::new(false);
            let mut rest = input;
            for &size in sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (piece, tail) = rest.split_at(size.min(rest.len()));
                p.feed(piece).unwrap();
                rest = tail;
            }
            assert_eq!(p.finish(), Ok(None), "{what}");
            assert_eq!(p.is_zfs(), Some(false), "{what}");
            assert_eq!(p.offset(), input.len() as u64, "{what}");
        }
        let err = parse(input).unwrap_err();
        assert_eq!(err.offset, 0, "{what}: {err}");
        let expected = if input.is_empty() {
            "the stream is empty"
        } else {
            "not a ZFS send stream"
        };
        assert!(err.what.contains(expected), "{what}: {err}");
    }
}

/// Bytes that start like a ZFS send stream and are not one (here, a stream cut in half, as a
/// damaged copy kept in a file would be) fail a stream backup, which says how to store them
/// anyway: `--raw` stores them as they are, and they restore bit-exact.
#[test]
fn raw_stores_what_starts_like_a_zfs_stream_as_bytes() {
    let whole = stream("big-endian-all-drr-types-base-NATIVE");
    let cut = whole[..whole.len() / 2].to_vec();
    let v = crate::util::Vault::new();
    crate::util::run(
        &mut v.cmd(&["backup", "--name", "blob", "-"]),
        Some(cut.clone()),
    )
    .error(
        1,
        &[
            "starts like a ZFS send stream",
            "add --raw",
            "no version recorded",
        ],
    );
    crate::util::run(
        &mut v.cmd(&["backup", "--name", "blob", "--raw", "-"]),
        Some(cut.clone()),
    )
    .ok();
    let out = v.path("blob.out");
    v.run(&["restore", "--name", "blob", crate::util::s(&out)])
        .ok();
    assert!(std::fs::read(&out).expect("the restored bytes") == cut);
    assert_eq!(
        v.run(&["backup", "--name", "z", "--raw", "--zfs", "tank/x"])
            .code,
        2
    );
}

/// A damaged current pointer stops only what needs it (a restore without --version): a
/// restore that names a snapshot, and `show` of a named version, go on (show warns).
#[test]
fn a_damaged_pointer_does_not_stop_a_restore_by_snapshot() {
    let full = stream("zfs-fuse-full-s1");
    let v = crate::util::Vault::new();
    crate::util::run(
        &mut v.cmd(&["backup", "--name", "tank/vm", "-"]),
        Some(full.to_vec()),
    )
    .ok();
    let version = v.versions("tank/vm").remove(0);
    std::fs::write(v.repo.join("current").join("tank%2Fvm"), b"garbage").expect("damaging");
    v.run(&["restore", "--name", "tank/vm", "-"])
        .error(3, &["current pointer current/tank%2Fvm", "is damaged"]);
    let out = v
        .run(&["restore", "--name", "tank/vm", "--version", "@s1", "-"])
        .ok();
    assert!(out.stdout == full, "the stream restored by its snapshot");
    let shown = v
        .run(&["show", "--name", "tank/vm", "--version", &version])
        .ok();
    assert!(shown.stderr.contains("is damaged"), "{}", shown.stderr);
    assert!(
        shown.stdout_text().contains(&version),
        "{}",
        shown.stdout_text()
    );
}

/// A saved stream given as a file path is backed up as the file's bytes (it restores as
/// them), and the backup says how to record it as a ZFS stream instead.
#[test]
fn a_stream_saved_in_a_file_is_named_as_one() {
    let full = stream("zfs-fuse-full-s1");
    let v = crate::util::Vault::new();
    let saved = v.path("s1.zfs");
    std::fs::write(&saved, full).expect("writing the stream");
    let r = v
        .run(&["backup", "--name", "saved", crate::util::s(&saved)])
        .ok();
    assert!(
        r.stderr.contains("holds a ZFS send stream") && r.stderr.contains("- < "),
        "{}",
        r.stderr
    );
    let plain = v.path("plain");
    std::fs::write(&plain, b"not a stream at all, just bytes").expect("writing");
    let r = v
        .run(&["backup", "--name", "plain", crate::util::s(&plain)])
        .ok();
    assert!(!r.stderr.contains("ZFS"), "{}", r.stderr);
}
