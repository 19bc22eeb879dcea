//! Parsing and validating ZFS send streams (`zfs send` output) while they flow past.
//!
//! Owns the record structure of OpenZFS and zfs-fuse send streams, their Fletcher-4
//! checksums, and the compound (`zfs send -R`, `-I`) layout. Leaves reading, storing and
//! `zfs receive` to its callers: [`StreamParser`] only sees the byte slices it is fed.
//!
//! Invariants:
//! - Pure and bounded: no I/O, no threads, and no allocation that grows with a length field or
//!   with the stream, apart from one [`Substream`] entry per substream (each at least two
//!   312-byte records of input). Only a record header is ever buffered; payloads are
//!   checksummed as they pass and then forgotten.
//! - The outcome does not depend on how the input is split across [`StreamParser::feed`]
//!   calls (the one exception is the "at least N bytes" count of trailing data).
//! - Errors are sticky, and no input panics (`fuzz/fuzz_targets/zfs_stream.rs`).
//! - A stream is accepted only if every byte is covered by a check: the running checksum
//!   (per record in newer streams, at each END in all of them), the END record's own fields,
//!   and the all-zero final END of a compound stream. OpenZFS checksums each payload in one
//!   call that ignores its last 1–3 bytes when its length is not a multiple of 4; we do the
//!   same, so such bytes are unchecked, as they are for `zfs receive` (no real stream we have
//!   seen has such a payload: every size is a multiple of 8 or of 512).
//!
//! A record header (`dmu_replay_record_t`, 312 bytes), in the byte order of the BEGIN record
//! that opened its substream:
//!
//! | offset | size | field                                                             |
//! |-------:|-----:|-------------------------------------------------------------------|
//! |      0 |    4 | `drr_type`: 0 BEGIN … 10 REDACT                                   |
//! |      4 |    4 | `drr_payloadlen`: payload after a BEGIN; unused by other types    |
//! |      8 |  272 | the type's fields (below)                                         |
//! |    280 |   32 | per-record checksum: Fletcher-4 up to here, or zero (older ZFS)   |
//!
//! BEGIN: `drr_magic` u64 at 8 (0x2F5BACBAC; byte-swapped in a foreign-endian stream),
//! versioninfo u64 at 16 (bits 0–1 header type: 1 single, 2 compound; bits 2–31 features),
//! creation time u64 at 24, objset type u32 at 32, flags u32 at 36, toguid u64 at 40,
//! fromguid u64 at 48, toname 256 bytes at 56 (so BEGIN has no per-record checksum).
//! END: checksum (4 × u64) at 8 of everything since the BEGIN, excluding the END itself;
//! toguid u64 at 40; all else zero. Payload sizes of the other types: see `payload_len`.
//!
//! A single stream is BEGIN(1) … END. A compound stream is BEGIN(2) + nvlist payload, an END
//! closing that header, any number of single streams, and a final END that is all zeros but
//! its type. The checksum restarts at every BEGIN.

use std::fmt::Write as _;

pub const DRR_HEADER_LEN: usize = 312;
pub const BACKUP_MAGIC: u64 = 0x2F5B_ACBAC;

/// Where the per-record checksum field starts in every non-BEGIN header.
const CHECKSUM_AT: usize = 280;

/// `drr_type` and `drr_magic`: enough to tell a ZFS stream from anything else.
const SNIFF_LEN: usize = 16;

/// The largest payload accepted for a record other than BEGIN. OpenZFS blocks are at most
/// 16 MiB (SPA_MAXBLOCKSIZE; the long-payload test streams carry exactly that), bonus buffers
/// at most a few KiB and embedded blocks 112 bytes. Payloads are never buffered, so this is no
/// memory bound: it turns a corrupted length into an error at its record instead of after
/// reading up to 16 EiB. Four times the largest block leaves room for a future limit.
pub const MAX_RECORD_PAYLOAD: u64 = 64 << 20;

const DRR_BEGIN: u32 = 0;
const DRR_OBJECT: u32 = 1;
const DRR_WRITE: u32 = 3;
const DRR_END: u32 = 5;
const DRR_SPILL: u32 = 7;
const DRR_WRITE_EMBEDDED: u32 = 8;

const RECORD_NAMES: [&str; 11] = [
    "BEGIN",
    "OBJECT",
    "FREEOBJECTS",
    "WRITE",
    "FREE",
    "END",
    "WRITE_BYREF",
    "SPILL",
    "WRITE_EMBEDDED",
    "OBJECT_RANGE",
    "REDACT",
];

const HDRTYPE_SINGLE: u64 = 1;
const HDRTYPE_COMPOUND: u64 = 2;

/// What a complete, valid stream contained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// A compound stream (`zfs send -R`, `-I`, hdrtype 2) rather than a single one (hdrtype 1).
    pub compound: bool,
    /// toname of the first BEGIN (the outer BEGIN of a compound stream: "pool/fs@snap").
    pub toname: String,
    /// Byte order of the first BEGIN.
    pub big_endian: bool,
    /// Every single (hdrtype 1) stream in order: for a single stream, exactly one.
    pub substreams: Vec<Substream>,
    /// Total bytes.
    pub length: u64,
    /// Total records, including a compound stream's header BEGIN and END and its final END.
    pub records: u64,
}

/// One single (hdrtype 1) stream: the whole of a plain `zfs send`, or one snapshot of a
/// compound stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substream {
    /// "pool/fs@snap" (NUL-terminated in the record; decoded as lossy UTF-8).
    pub toname: String,
    pub toguid: u64,
    /// 0 for a full stream.
    pub fromguid: u64,
    pub creation_time: u64,
    /// `drr_type` inside BEGIN: the objset type (2 for a filesystem, 3 for a volume).
    pub objset_type: u32,
    pub flags: u32,
    /// `DMU_GET_FEATUREFLAGS(versioninfo)`.
    pub features: u64,
    pub big_endian: bool,
    /// Byte offset of its BEGIN record in the stream.
    pub offset: u64,
    /// Records in it, BEGIN and END included.
    pub records: u64,
    /// Whether any non-BEGIN record carried a checksum of its own (OpenZFS since 0.7); older
    /// streams are only checked at their END.
    pub per_record_checksums: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ZFS send stream invalid at byte {offset}: {what}")]
pub struct StreamError {
    pub offset: u64,
    pub what: String,
}

/// Fletcher-4 over 32-bit words as OpenZFS computes it for send streams, fed in pieces of
/// any size: a word split across two `update` calls is completed by the second.
///
/// OpenZFS checksums each header part and each payload in one call that ignores a trailing
/// partial word, so a stream reader calls [`Fletcher4::end_unit`] where such a call ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fletcher4 {
    state: [u64; 4],
    big_endian: bool,
    pending: [u8; 4],
    pending_len: u8,
}

impl Fletcher4 {
    /// `big_endian`: how the 32-bit words are read, which is the stream's byte order
    /// (OpenZFS's receiver uses `fletcher_4_incremental_byteswap` for a foreign stream).
    pub fn new(big_endian: bool) -> Fletcher4 {
        Fletcher4 {
            big_endian,
            ..Fletcher4::default()
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        let mut bytes = bytes;
        if self.pending_len > 0 {
            let have = usize::from(self.pending_len);
            let take = (4 - have).min(bytes.len());
            let (head, tail) = bytes.split_at(take);
            if let Some(dst) = self.pending.get_mut(have..have + take) {
                dst.copy_from_slice(head);
            }
            self.pending_len = (have + take) as u8;
            bytes = tail;
            if self.pending_len < 4 {
                return;
            }
            fletcher4(&mut self.state, self.big_endian, &self.pending);
            self.pending_len = 0;
        }
        let (words, rest) = bytes.as_chunks::<4>();
        fletcher4_words(&mut self.state, self.big_endian, words);
        if let Some(dst) = self.pending.get_mut(..rest.len()) {
            dst.copy_from_slice(rest);
            self.pending_len = rest.len() as u8;
        }
    }

    /// Drops a trailing partial word, as OpenZFS does at the end of each checksummed unit.
    pub fn end_unit(&mut self) {
        self.pending_len = 0;
    }

    /// The checksum of the whole words so far: (a, b, c, d).
    pub fn value(&self) -> [u64; 4] {
        self.state
    }
}

/// One OpenZFS `fletcher_4_incremental_*` call: adds the whole 32-bit words of `bytes` to
/// `state` and ignores the 0–3 bytes after the last whole word, exactly as OpenZFS does.
pub fn fletcher4(state: &mut [u64; 4], words_big_endian: bool, bytes: &[u8]) {
    fletcher4_words(state, words_big_endian, bytes.as_chunks::<4>().0);
}

fn fletcher4_words(state: &mut [u64; 4], big_endian: bool, words: &[[u8; 4]]) {
    // Two monomorphic loops, so the byte order is not decided per word.
    #[inline(always)]
    fn run(state: &mut [u64; 4], words: &[[u8; 4]], word: impl Fn([u8; 4]) -> u32) {
        let [mut a, mut b, mut c, mut d] = *state;
        for w in words {
            a = a.wrapping_add(u64::from(word(*w)));
            b = b.wrapping_add(a);
            c = c.wrapping_add(b);
            d = d.wrapping_add(c);
        }
        *state = [a, b, c, d];
    }
    if big_endian {
        run(state, words, u32::from_be_bytes);
    } else {
        run(state, words, u32::from_le_bytes);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Collecting a record header (the first one is also sniffed).
    Header,
    /// Checksumming a payload.
    Payload,
    /// The final END has been seen.
    Complete,
    /// The input is not a ZFS stream and was not required to be: count bytes, nothing else.
    Ignoring,
}

/// Where in the stream's structure the next record falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Before the first BEGIN.
    Start,
    /// After a compound BEGIN and its nvlist, before the END closing them.
    CompoundHeader,
    /// Between the BEGIN and END of a single stream or substream.
    Substream,
    /// Compound streams only: after an END, before the next BEGIN or the final END.
    Between,
}

/// A validating ZFS send-stream parser: feed bytes as they flow, call
/// [`finish`](StreamParser::finish) at end of input.
#[derive(Debug, Clone)]
pub struct StreamParser {
    require: bool,
    zfs: Option<bool>,
    phase: Phase,
    place: Place,
    error: Option<StreamError>,
    offset: u64,
    header: [u8; DRR_HEADER_LEN],
    filled: usize,
    /// The record whose payload is passing, for error messages.
    record_type: u32,
    record_offset: u64,
    payload_left: u64,
    cksum: Fletcher4,
    /// Byte order of the BEGIN that opened the current substream or compound header.
    big_endian: bool,
    /// toguid of that BEGIN, which its END must repeat.
    begin_toguid: u64,
    /// The substream being read, pushed to `substreams` at its END.
    current: Option<Substream>,
    compound: bool,
    toname: String,
    first_big_endian: bool,
    substreams: Vec<Substream>,
    records: u64,
}

impl StreamParser {
    /// `require`: the input must be a ZFS stream. Otherwise the first 16 bytes decide: unless
    /// they start a BEGIN record (type 0 and the magic, in either byte order), the rest is
    /// ignored and [`finish`](StreamParser::finish) returns `Ok(None)`; so does input shorter
    /// than 16 bytes.
    pub fn new(require: bool) -> StreamParser {
        StreamParser {
            require,
            zfs: None,
            phase: Phase::Header,
            place: Place::Start,
            error: None,
            offset: 0,
            header: [0; DRR_HEADER_LEN],
            filled: 0,
            record_type: 0,
            record_offset: 0,
            payload_left: 0,
            cksum: Fletcher4::default(),
            big_endian: false,
            begin_toguid: 0,
            current: None,
            compound: false,
            toname: String::new(),
            first_big_endian: false,
            substreams: Vec::new(),
            records: 0,
        }
    }

    /// Errors are sticky: after one, every later call returns it again.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.phase {
                Phase::Ignoring => {
                    self.advance(rest.len());
                    return Ok(());
                }
                Phase::Complete => {
                    return Err(self.fail(
                        self.offset,
                        format!("at least {} bytes follow the final END record", rest.len()),
                    ));
                }
                Phase::Header => {
                    let take = (DRR_HEADER_LEN - self.filled).min(rest.len());
                    let (head, tail) = rest.split_at(take);
                    if let Some(dst) = self.header.get_mut(self.filled..self.filled + take) {
                        dst.copy_from_slice(head);
                    }
                    self.filled += take;
                    self.advance(take);
                    rest = tail;
                    if self.zfs.is_none() && self.filled >= SNIFF_LEN {
                        self.sniff()?;
                    }
                    if self.filled == DRR_HEADER_LEN && self.phase == Phase::Header {
                        self.filled = 0;
                        self.record()?;
                    }
                }
                Phase::Payload => {
                    let left = usize::try_from(self.payload_left).unwrap_or(usize::MAX);
                    let (head, tail) = rest.split_at(left.min(rest.len()));
                    self.cksum.update(head);
                    self.payload_left -= head.len() as u64;
                    self.advance(head.len());
                    rest = tail;
                    if self.payload_left == 0 {
                        self.cksum.end_unit();
                        self.phase = Phase::Header;
                    }
                }
            }
        }
        Ok(())
    }

    /// End of input: `Ok(Some)` for a complete, valid ZFS stream, `Ok(None)` for input that
    /// is not ZFS (only when not required), `Err` for a truncated or invalid stream.
    pub fn finish(&mut self) -> Result<Option<StreamInfo>, StreamError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let end = self.offset;
        let what = match self.phase {
            Phase::Ignoring => return Ok(None),
            Phase::Complete => {
                return Ok(Some(StreamInfo {
                    compound: self.compound,
                    toname: self.toname.clone(),
                    big_endian: self.first_big_endian,
                    substreams: self.substreams.clone(),
                    length: self.offset,
                    records: self.records,
                }));
            }
            Phase::Header if self.zfs.is_none() => {
                if !self.require {
                    self.zfs = Some(false);
                    self.phase = Phase::Ignoring;
                    return Ok(None);
                }
                if end == 0 {
                    "the stream is empty".to_string()
                } else {
                    format!("stream ends after {end} bytes, inside its first record")
                }
            }
            Phase::Header if self.filled > 0 => format!(
                "stream ends inside a record header ({} of {DRR_HEADER_LEN} bytes)",
                self.filled
            ),
            Phase::Header => match (&self.current, self.place) {
                (Some(sub), _) if self.compound => format!(
                    "stream ends inside the substream {} that began at byte {}, before its END record",
                    sub.toname, sub.offset
                ),
                (_, Place::CompoundHeader) => {
                    "stream ends before the END record that closes its compound header".to_string()
                }
                _ => "stream ends before its final END record".to_string(),
            },
            Phase::Payload => format!(
                "stream ends inside the payload of the {} record at byte {} (needed {} more bytes)",
                record_name(self.record_type),
                self.record_offset,
                self.payload_left
            ),
        };
        Err(self.fail(end, what))
    }

    /// Bytes consumed so far. An error stops the count: a bad header counts as consumed, bytes
    /// after the final END do not.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// `Some(true)` once known to be ZFS, `Some(false)` once known not to be.
    pub fn is_zfs(&self) -> Option<bool> {
        self.zfs
    }

    /// True once the final END record has been seen; anything after it is an error.
    pub fn is_complete(&self) -> bool {
        self.phase == Phase::Complete
    }

    fn advance(&mut self, n: usize) {
        self.offset = self.offset.saturating_add(n as u64);
    }

    fn fail(&mut self, offset: u64, what: String) -> StreamError {
        let e = StreamError { offset, what };
        self.error = Some(e.clone());
        e
    }

    /// Decides from the first 16 bytes whether this is a ZFS stream.
    fn sniff(&mut self) -> Result<(), StreamError> {
        if begin_order(&self.header).is_some() {
            self.zfs = Some(true);
            return Ok(());
        }
        self.zfs = Some(false);
        if self.require {
            return Err(self.fail(
                0,
                format!(
                    "not a ZFS send stream: it does not start with a BEGIN record with magic {BACKUP_MAGIC:#x}"
                ),
            ));
        }
        self.phase = Phase::Ignoring;
        Ok(())
    }

    /// A complete header is in `self.header`, ending at `self.offset`.
    fn record(&mut self) -> Result<(), StreamError> {
        let at = self.offset - DRR_HEADER_LEN as u64;
        self.records += 1;
        match self.place {
            Place::Substream | Place::CompoundHeader => self.inner_record(at),
            Place::Start | Place::Between => {
                if let Some(big_endian) = begin_order(&self.header) {
                    return self.begin(at, big_endian);
                }
                let h = Header::new(&self.header, self.big_endian);
                let kind = h.u32(0);
                if self.place == Place::Start {
                    // The sniff has seen these bytes already; kept for a parser fed oddly.
                    return Err(self.fail(at, "the first record is not a BEGIN record".into()));
                }
                if kind == DRR_BEGIN {
                    let magic = h.u64(8);
                    return Err(self.fail(
                        at,
                        format!(
                            "BEGIN record has bad magic {magic:#x} (expected {BACKUP_MAGIC:#x})"
                        ),
                    ));
                }
                // `zfs receive` takes the final END in either byte order; so do we.
                if kind == DRR_END || kind.swap_bytes() == DRR_END {
                    // Nothing checksums this record: any non-zero byte is damage.
                    if let Some(i) = self.header.iter().skip(4).position(|&b| b != 0) {
                        return Err(self.fail(
                            at,
                            format!(
                                "the final END record has a non-zero byte at offset {} (only its type may be set)",
                                i + 4
                            ),
                        ));
                    }
                    self.phase = Phase::Complete;
                    return Ok(());
                }
                Err(self.fail(
                    at,
                    format!(
                        "expected a BEGIN record or the final END record after a substream, found {}",
                        record_name(kind)
                    ),
                ))
            }
        }
    }

    fn begin(&mut self, at: u64, big_endian: bool) -> Result<(), StreamError> {
        let h = Header::new(&self.header, big_endian);
        let versioninfo = h.u64(16);
        let hdrtype = versioninfo & 3;
        let toname = h.name();
        let toguid = h.u64(40);
        let payload = u64::from(h.u32(4));
        match (self.place, hdrtype) {
            (Place::Start, HDRTYPE_COMPOUND) => {
                self.compound = true;
                self.place = Place::CompoundHeader;
            }
            (Place::Start | Place::Between, HDRTYPE_SINGLE) => {
                self.current = Some(Substream {
                    toname: toname.clone(),
                    toguid,
                    fromguid: h.u64(48),
                    creation_time: h.u64(24),
                    objset_type: h.u32(32),
                    flags: h.u32(36),
                    features: (versioninfo >> 2) & 0x3fff_ffff,
                    big_endian,
                    offset: at,
                    records: 1,
                    per_record_checksums: false,
                });
                self.place = Place::Substream;
            }
            (Place::Between, HDRTYPE_COMPOUND) => {
                return Err(self.fail(
                    at,
                    "a compound stream cannot contain another compound BEGIN (header type 2)"
                        .into(),
                ));
            }
            (_, other) => {
                return Err(self.fail(at, format!("BEGIN record has unknown header type {other}")));
            }
        }
        if self.records == 1 {
            self.toname = toname;
            self.first_big_endian = big_endian;
        }
        self.big_endian = big_endian;
        self.begin_toguid = toguid;
        self.cksum = Fletcher4::new(big_endian);
        // BEGIN's last 32 bytes are toname, not a checksum: the whole header counts.
        self.cksum.update(&self.header);
        self.start_payload(DRR_BEGIN, at, payload);
        Ok(())
    }

    /// A record inside a substream or closing a compound header.
    fn inner_record(&mut self, at: u64) -> Result<(), StreamError> {
        let h = Header::new(&self.header, self.big_endian);
        let kind = h.u32(0);
        let name = record_name(kind);
        if kind >= RECORD_NAMES.len() as u32 {
            return Err(self.fail(at, format!("unknown record type {kind}")));
        }
        if kind == DRR_BEGIN {
            let what = match &self.current {
                Some(sub) => format!(
                    "BEGIN record inside the substream that began at byte {} (its END record is missing)",
                    sub.offset
                ),
                None => "BEGIN record inside a compound header (its END record is missing)".into(),
            };
            return Err(self.fail(at, what));
        }
        if self.place == Place::CompoundHeader && kind != DRR_END {
            return Err(self.fail(
                at,
                format!("expected the END record that closes the compound header, found {name}"),
            ));
        }
        let before = self.cksum.value();
        let (fields, stored) = self.header.split_at(CHECKSUM_AT);
        self.cksum.update(fields);
        let claimed = h.checksum(CHECKSUM_AT);
        if claimed != [0; 4] {
            let computed = self.cksum.value();
            if claimed != computed {
                return Err(self.fail(
                    at,
                    format!(
                        "checksum of {name} record does not match (stream says {}, computed {})",
                        hex(claimed),
                        hex(computed)
                    ),
                ));
            }
            if let Some(sub) = &mut self.current {
                sub.per_record_checksums = true;
            }
        }
        self.cksum.update(stored);
        if let Some(sub) = &mut self.current {
            sub.records += 1;
        }
        if kind == DRR_END {
            return self.end(at, before);
        }
        let len = payload_len(kind, &h);
        if len > MAX_RECORD_PAYLOAD {
            return Err(self.fail(
                at,
                format!(
                    "{name} record claims a payload of {len} bytes; more than {MAX_RECORD_PAYLOAD} is not a real ZFS block"
                ),
            ));
        }
        self.start_payload(kind, at, len);
        Ok(())
    }

    /// `before`: the checksum before this END's header, which it must carry.
    fn end(&mut self, at: u64, before: [u64; 4]) -> Result<(), StreamError> {
        let h = Header::new(&self.header, self.big_endian);
        let claimed = h.checksum(8);
        if claimed != before {
            return Err(self.fail(
                at,
                format!(
                    "checksum in END record does not match (stream says {}, computed {})",
                    hex(claimed),
                    hex(before)
                ),
            ));
        }
        let toguid = h.u64(40);
        if toguid != 0 && toguid != self.begin_toguid {
            return Err(self.fail(
                at,
                format!(
                    "END record is for toguid {toguid:016x}, but its BEGIN sent {:016x}",
                    self.begin_toguid
                ),
            ));
        }
        // OpenZFS zeroes a record before filling it. In streams without per-record checksums
        // nothing else covers these bytes, so a flipped bit there would go unnoticed.
        let unused = self
            .header
            .get(4..8)
            .into_iter()
            .chain(self.header.get(48..CHECKSUM_AT));
        if unused.flatten().any(|&b| b != 0) {
            return Err(self.fail(
                at,
                "END record has non-zero bytes in its unused fields".into(),
            ));
        }
        match self.current.take() {
            Some(sub) => {
                self.substreams.push(sub);
                if self.compound {
                    self.place = Place::Between;
                } else {
                    self.phase = Phase::Complete;
                }
            }
            None => self.place = Place::Between,
        }
        Ok(())
    }

    fn start_payload(&mut self, kind: u32, at: u64, len: u64) {
        if len > 0 {
            self.record_type = kind;
            self.record_offset = at;
            self.payload_left = len;
            self.phase = Phase::Payload;
        }
    }
}

/// The payload after a non-BEGIN header, as OpenZFS's `DRR_*_PAYLOAD_SIZE` macros compute it.
fn payload_len(kind: u32, h: &Header) -> u64 {
    let round8 = |n: u64| n.div_ceil(8) * 8;
    match kind {
        DRR_OBJECT => match h.u32(36) {
            // raw_bonuslen: an encrypted bonus buffer is sent as it is stored.
            0 => round8(u64::from(h.u32(28))),
            raw => u64::from(raw),
        },
        // Compressed (or raw) writes send compressed_size bytes, others logical_size.
        DRR_WRITE if h.u8(50) != 0 => h.u64(96),
        DRR_WRITE => h.u64(32),
        DRR_SPILL => match h.u64(40) {
            0 => h.u64(16),
            compressed => compressed,
        },
        DRR_WRITE_EMBEDDED => round8(u64::from(h.u32(52))),
        _ => 0,
    }
}

/// Whether `head` (a source's first 16 bytes) is the BEGIN record of a ZFS send stream, in
/// either byte order.
pub fn starts_like_stream(head: &[u8]) -> bool {
    begin_order(head).is_some()
}

/// The byte order of a header that starts a BEGIN record (type 0 and the magic), if it does.
fn begin_order(header: &[u8]) -> Option<bool> {
    let kind = header.get(0..4)?;
    let magic: [u8; 8] = header.get(8..16)?.try_into().ok()?;
    if kind != [0; 4] {
        None
    } else if u64::from_le_bytes(magic) == BACKUP_MAGIC {
        Some(false)
    } else if u64::from_be_bytes(magic) == BACKUP_MAGIC {
        Some(true)
    } else {
        None
    }
}

fn record_name(kind: u32) -> String {
    match usize::try_from(kind).ok().and_then(|k| RECORD_NAMES.get(k)) {
        Some(name) => (*name).to_string(),
        None => format!("record of unknown type {kind}"),
    }
}

/// zstreamdump's notation, so a user can compare.
fn hex(c: [u64; 4]) -> String {
    let mut s = String::new();
    for (i, w) in c.iter().enumerate() {
        let _ = write!(s, "{}{w:x}", if i == 0 { "" } else { "/" });
    }
    s
}

/// Field access in a substream's byte order; fixed offsets within the 312 bytes.
struct Header<'a> {
    bytes: &'a [u8; DRR_HEADER_LEN],
    big_endian: bool,
}

impl<'a> Header<'a> {
    fn new(bytes: &'a [u8; DRR_HEADER_LEN], big_endian: bool) -> Header<'a> {
        Header { bytes, big_endian }
    }

    fn array<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut out = [0; N];
        if let Some(src) = self.bytes.get(at..at + N) {
            out.copy_from_slice(src);
        }
        out
    }

    fn u8(&self, at: usize) -> u8 {
        self.bytes.get(at).copied().unwrap_or(0)
    }

    fn u32(&self, at: usize) -> u32 {
        let b = self.array(at);
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    fn u64(&self, at: usize) -> u64 {
        let b = self.array(at);
        if self.big_endian {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        }
    }

    fn checksum(&self, at: usize) -> [u64; 4] {
        [
            self.u64(at),
            self.u64(at + 8),
            self.u64(at + 16),
            self.u64(at + 24),
        ]
    }

    /// BEGIN's toname: 256 bytes at 56, up to the first NUL.
    fn name(&self) -> String {
        let field = self.bytes.get(56..).unwrap_or_default();
        let len = field.iter().position(|&b| b == 0).unwrap_or(field.len());
        String::from_utf8_lossy(field.get(..len).unwrap_or_default()).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- Fletcher-4 ----

    /// (i * 7 + 3) mod 256 for i in 0..1000; the expected sums below were computed by a
    /// separate Python implementation, not by this code.
    fn ramp() -> Vec<u8> {
        (0..1000u32).map(|i| (i * 7 + 3) as u8).collect()
    }

    fn fletcher_of(big_endian: bool, bytes: &[u8]) -> [u64; 4] {
        let mut state = [0; 4];
        fletcher4(&mut state, big_endian, bytes);
        state
    }

    #[test]
    fn fletcher4_two_words_by_hand() {
        // Words 1 then 2: a = 1, 3; b = 1, 4; c = 1, 5; d = 1, 6.
        assert_eq!(fletcher_of(false, &[1, 0, 0, 0, 2, 0, 0, 0]), [3, 4, 5, 6]);
        assert_eq!(fletcher_of(true, &[0, 0, 0, 1, 0, 0, 0, 2]), [3, 4, 5, 6]);
    }

    #[test]
    fn fletcher4_known_vectors() {
        assert_eq!(
            fletcher_of(false, &ramp()),
            [
                0x7a37628d3a,
                0x3c2aa93b1ed9,
                0x13ae94bfd8c998,
                0x4d92c48b3b94921
            ]
        );
        assert_eq!(
            fletcher_of(true, &ramp()),
            [
                0x7db68b5fbc,
                0x3d9967d69994,
                0x14227273bd82f4,
                0x4f4a29f3c7e181c
            ]
        );
        // 4096 words of 0xffffffff: c and d wrap around 2^64.
        assert_eq!(
            fletcher_of(false, &[0xff; 16384]),
            [
                0xffffffff000,
                0x8007ffff7ff800,
                0xab2aaffd54d55000,
                0xab1ff95154dffc00
            ]
        );
    }

    /// The END checksum that zfs-fuse wrote (and its zstreamdump printed) for a real stream:
    /// the Fletcher-4 of every byte before that END record.
    #[test]
    fn fletcher4_matches_a_real_zfs_fuse_stream() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/zfs-streams/zfs-fuse-full-s1.zsend.bz2"
        );
        let out = std::process::Command::new("bzip2")
            .args(["-dc", path])
            .output()
            .unwrap_or_else(|e| panic!("cannot run bzip2 (install it): {e}"));
        assert!(out.status.success(), "bzip2 -dc {path} failed");
        let stream = out.stdout;
        assert_eq!(stream.len(), 20632);
        let before_end = &stream[..20320];
        let expected = [
            0x14862617358,
            0x7ebfd272d834a,
            0x294ab4b8c919230f,
            0x9751ee5ec569a859,
        ];
        assert_eq!(fletcher_of(false, before_end), expected);
        // And fed through the streaming type in awkward pieces.
        let mut f = Fletcher4::new(false);
        for piece in before_end.chunks(313) {
            f.update(piece);
        }
        assert_eq!(f.value(), expected);
    }

    #[test]
    fn fletcher4_carries_partial_words_across_updates() {
        let data = &ramp()[..64];
        for big_endian in [false, true] {
            let whole = fletcher_of(big_endian, data);
            for i in 0..=data.len() {
                for j in i..=data.len() {
                    let mut f = Fletcher4::new(big_endian);
                    f.update(&data[..i]);
                    f.update(&data[i..j]);
                    f.update(&data[j..]);
                    assert_eq!(f.value(), whole, "split at {i}, {j}");
                }
            }
        }
        let data = ramp();
        let mut f = Fletcher4::new(false);
        let mut rest = &data[..];
        for size in [1, 2, 3, 5, 7, 11, 13].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (a, b) = rest.split_at((*size).min(rest.len()));
            f.update(a);
            rest = b;
        }
        assert_eq!(f.value(), fletcher_of(false, &data));
    }

    #[test]
    fn fletcher4_end_unit_drops_a_trailing_partial_word_like_openzfs() {
        // OpenZFS ignores the bytes after the last whole word of each call.
        let mut f = Fletcher4::new(false);
        f.update(&[1, 0, 0, 0, 9, 9]);
        f.end_unit();
        f.update(&[2, 0, 0, 0]);
        assert_eq!(f.value(), fletcher_of(false, &[1, 0, 0, 0, 2, 0, 0, 0]));
        assert_eq!(fletcher_of(false, &[1, 0, 0, 0, 9, 9, 9]), [1, 1, 1, 1]);
    }

    // ---- synthetic streams ----

    /// Builds valid records with correct checksums, in either byte order, with or without
    /// per-record checksums.
    struct Builder {
        out: Vec<u8>,
        cksum: Fletcher4,
        big_endian: bool,
        per_record: bool,
    }

    type Rec = [u8; DRR_HEADER_LEN];

    impl Builder {
        fn new(big_endian: bool, per_record: bool) -> Builder {
            Builder {
                out: Vec::new(),
                cksum: Fletcher4::new(big_endian),
                big_endian,
                per_record,
            }
        }

        fn put32(&self, r: &mut Rec, at: usize, v: u32) {
            let b = if self.big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            r[at..at + 4].copy_from_slice(&b);
        }

        fn put64(&self, r: &mut Rec, at: usize, v: u64) {
            let b = if self.big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            r[at..at + 8].copy_from_slice(&b);
        }

        fn record(&self, kind: u32) -> Rec {
            let mut r = [0; DRR_HEADER_LEN];
            self.put32(&mut r, 0, kind);
            r
        }

        /// Returns the BEGIN's offset.
        fn begin(
            &mut self,
            hdrtype: u64,
            toguid: u64,
            fromguid: u64,
            name: &str,
            payload: &[u8],
        ) -> u64 {
            let at = self.out.len() as u64;
            let mut r = self.record(DRR_BEGIN);
            self.put32(&mut r, 4, payload.len() as u32);
            self.put64(&mut r, 8, BACKUP_MAGIC);
            self.put64(&mut r, 16, hdrtype | (0x30004 << 2));
            self.put64(&mut r, 24, 0x6b0b_ce1b);
            self.put32(&mut r, 32, 2);
            self.put32(&mut r, 36, 0xc);
            self.put64(&mut r, 40, toguid);
            self.put64(&mut r, 48, fromguid);
            r[56..56 + name.len()].copy_from_slice(name.as_bytes());
            self.cksum = Fletcher4::new(self.big_endian);
            self.cksum.update(&r);
            self.out.extend_from_slice(&r);
            self.payload(payload);
            at
        }

        fn payload(&mut self, payload: &[u8]) {
            self.cksum.update(payload);
            self.cksum.end_unit();
            self.out.extend_from_slice(payload);
        }

        /// Appends a non-BEGIN header (with its per-record checksum if enabled) and payload.
        fn emit(&mut self, mut r: Rec, payload: &[u8]) -> u64 {
            let at = self.out.len() as u64;
            self.cksum.update(&r[..CHECKSUM_AT]);
            if self.per_record {
                let c = self.cksum.value();
                for (i, w) in c.iter().enumerate() {
                    self.put64(&mut r, CHECKSUM_AT + 8 * i, *w);
                }
            }
            self.cksum.update(&r[CHECKSUM_AT..]);
            self.out.extend_from_slice(&r);
            self.payload(payload);
            at
        }

        fn write(&mut self, data: &[u8]) -> u64 {
            let mut r = self.record(DRR_WRITE);
            self.put64(&mut r, 8, 1);
            self.put64(&mut r, 32, data.len() as u64);
            self.emit(r, data)
        }

        fn free(&mut self) -> u64 {
            let mut r = self.record(4);
            self.put64(&mut r, 8, 1);
            self.put64(&mut r, 32, u64::MAX);
            self.emit(r, &[])
        }

        fn end(&mut self, toguid: u64) -> u64 {
            let before = self.cksum.value();
            let mut r = self.record(DRR_END);
            for (i, w) in before.iter().enumerate() {
                self.put64(&mut r, 8 + 8 * i, *w);
            }
            self.put64(&mut r, 40, toguid);
            self.emit(r, &[])
        }

        fn final_end(&mut self) -> u64 {
            let at = self.out.len() as u64;
            let r = self.record(DRR_END);
            self.out.extend_from_slice(&r);
            at
        }

        /// A complete single stream: BEGIN, FREE, WRITE, END.
        fn single(&mut self, toguid: u64, fromguid: u64, name: &str) {
            self.begin(HDRTYPE_SINGLE, toguid, fromguid, name, &[]);
            self.free();
            self.write(&ramp()[..512]);
            self.end(toguid);
        }
    }

    fn parse(bytes: &[u8], require: bool) -> Result<Option<StreamInfo>, StreamError> {
        let mut p = StreamParser::new(require);
        p.feed(bytes)?;
        p.finish()
    }

    fn parse_err(bytes: &[u8]) -> StreamError {
        match parse(bytes, true) {
            Err(e) => e,
            Ok(info) => panic!("accepted: {info:?}"),
        }
    }

    fn single_stream(big_endian: bool, per_record: bool) -> Vec<u8> {
        let mut b = Builder::new(big_endian, per_record);
        b.single(0x1111, 0x2222, "pool/fs@b");
        b.out
    }

    #[test]
    fn synthetic_single_streams_in_both_byte_orders() {
        for big_endian in [false, true] {
            for per_record in [false, true] {
                let s = single_stream(big_endian, per_record);
                let info = parse(&s, true).unwrap().unwrap();
                assert!(!info.compound);
                assert_eq!(info.toname, "pool/fs@b");
                assert_eq!(info.big_endian, big_endian);
                assert_eq!(info.length, s.len() as u64);
                assert_eq!(info.records, 4);
                assert_eq!(
                    info.substreams,
                    [Substream {
                        toname: "pool/fs@b".into(),
                        toguid: 0x1111,
                        fromguid: 0x2222,
                        creation_time: 0x6b0b_ce1b,
                        objset_type: 2,
                        flags: 0xc,
                        features: 0x30004,
                        big_endian,
                        offset: 0,
                        records: 4,
                        per_record_checksums: per_record,
                    }]
                );
                assert_eq!(parse(&s, false).unwrap(), Some(info));
            }
        }
    }

    #[test]
    fn foreign_byte_order_checksums_words_in_the_stream_order() {
        // A big-endian stream whose END carries the checksum of the words read little-endian,
        // as a parser that ignored the byte order would compute it.
        let mut b = Builder::new(true, false);
        b.begin(HDRTYPE_SINGLE, 7, 0, "p/f@s", &[]);
        b.write(&ramp()[..512]);
        let mut wrong = [0; 4];
        fletcher4(&mut wrong, false, &b.out);
        let at = b.end(7) as usize;
        for (i, w) in wrong.iter().enumerate() {
            b.out[at + 8 + 8 * i..at + 16 + 8 * i].copy_from_slice(&w.to_be_bytes());
        }
        let e = parse_err(&b.out);
        assert_eq!(e.offset, at as u64);
        assert!(
            e.what.contains("checksum in END record does not match"),
            "{e}"
        );
    }

    #[test]
    fn unknown_record_type_is_rejected_at_its_offset() {
        let mut b = Builder::new(false, true);
        b.begin(HDRTYPE_SINGLE, 7, 0, "p/f@s", &[]);
        let at = b.emit(b.record(77), &[]);
        b.end(7);
        let e = parse_err(&b.out);
        assert_eq!(
            e,
            StreamError {
                offset: at,
                what: "unknown record type 77".into()
            }
        );
    }

    #[test]
    fn begin_inside_a_substream_is_rejected() {
        let mut b = Builder::new(false, true);
        b.begin(HDRTYPE_SINGLE, 7, 0, "p/f@s", &[]);
        b.free();
        let inner = b.out.len() as u64;
        b.single(8, 0, "p/f@t");
        let e = parse_err(&b.out);
        assert_eq!(e.offset, inner);
        assert!(
            e.what
                .contains("BEGIN record inside the substream that began at byte 0"),
            "{e}"
        );
    }

    #[test]
    fn end_toguid_must_match_its_begin() {
        let mut b = Builder::new(false, false);
        b.begin(HDRTYPE_SINGLE, 7, 0, "p/f@s", &[]);
        b.free();
        let at = b.end(8);
        let e = parse_err(&b.out);
        assert_eq!(e.offset, at);
        assert!(e.what.contains("toguid 0000000000000008"), "{e}");
        // Older streams leave END's toguid zero.
        let mut b = Builder::new(false, false);
        b.begin(HDRTYPE_SINGLE, 7, 0, "p/f@s", &[]);
        b.end(0);
        assert!(parse(&b.out, true).unwrap().is_some());
    }

    #[test]
    fn absurd_payload_lengths_are_rejected_before_reading_them() {
        // (type, field offset, 32- or 64-bit, value)
        let cases: [(u32, usize, bool, u64); 5] = [
            (DRR_WRITE, 32, true, 1 << 40),
            (DRR_WRITE, 32, true, MAX_RECORD_PAYLOAD + 1),
            (DRR_OBJECT, 36, false, u64::from(u32::MAX)),
            (DRR_SPILL, 16, true, u64::MAX),
            (DRR_WRITE_EMBEDDED, 52, false, u64::from(u32::MAX)),
        ];
        for (kind, field, wide, value) in cases {
            let mut b = Builder::new(false, true);
            b.begin(HDRTYPE_SINGLE, 7, 0, "p/f@s", &[]);
            let mut r = b.record(kind);
            if wide {
                b.put64(&mut r, field, value);
            } else {
                b.put32(&mut r, field, value as u32);
            }
            let at = b.emit(r, &[]);
            // The header alone is enough: the error comes from feed, not from finish.
            let mut p = StreamParser::new(true);
            let e = p.feed(&b.out).unwrap_err();
            assert_eq!(e.offset, at);
            assert!(e.what.contains("claims a payload of"), "{e}");
            assert_eq!(p.finish(), Err(e));
        }
        // The largest real block is fine.
        let mut b = Builder::new(false, true);
        b.begin(HDRTYPE_SINGLE, 7, 0, "p/f@s", &[]);
        b.write(&vec![0x5a; 16 << 20]);
        b.end(7);
        assert!(parse(&b.out, true).unwrap().is_some());
    }

    /// Every record type, each payload-size rule, in both byte orders: a wrong size would
    /// misalign the next header and fail its checksum.
    #[test]
    fn every_record_type_with_its_payload_size() {
        for big_endian in [false, true] {
            let mut b = Builder::new(big_endian, true);
            b.begin(HDRTYPE_SINGLE, 7, 0, "p/f@s", &[0xbe; 24]);
            let mut r = b.record(DRR_OBJECT);
            b.put32(&mut r, 28, 13); // bonuslen, rounded up to 16
            b.emit(r, &[1; 16]);
            let mut r = b.record(DRR_OBJECT);
            b.put32(&mut r, 28, 13);
            b.put32(&mut r, 36, 20); // raw_bonuslen wins
            b.emit(r, &[2; 20]);
            b.emit(b.record(2), &[]); // FREEOBJECTS
            let mut r = b.record(DRR_WRITE);
            b.put64(&mut r, 32, 4096);
            r[50] = 15; // compressed: compressed_size counts
            b.put64(&mut r, 96, 1000);
            b.emit(r, &[3; 1000]);
            b.free();
            b.emit(b.record(6), &[]); // WRITE_BYREF
            let mut r = b.record(DRR_SPILL);
            b.put64(&mut r, 16, 512);
            b.emit(r, &[4; 512]);
            let mut r = b.record(DRR_SPILL);
            b.put64(&mut r, 16, 512);
            b.put64(&mut r, 40, 128); // compressed_size wins
            b.emit(r, &[5; 128]);
            let mut r = b.record(DRR_WRITE_EMBEDDED);
            b.put32(&mut r, 48, 512);
            b.put32(&mut r, 52, 100); // psize, rounded up to 104
            b.emit(r, &[6; 104]);
            b.emit(b.record(9), &[]); // OBJECT_RANGE
            b.emit(b.record(10), &[]); // REDACT
            b.end(7);
            let info = parse(&b.out, true).unwrap().unwrap();
            assert_eq!(info.records, 13);
            assert_eq!(info.length, b.out.len() as u64);
            assert_eq!(info.big_endian, big_endian);
        }
    }

    #[test]
    fn per_record_checksum_mismatch_names_both_values() {
        let mut s = single_stream(false, true);
        // The FREE record's per-record checksum, first word.
        s[312 + CHECKSUM_AT] ^= 1;
        let e = parse_err(&s);
        assert_eq!(e.offset, 312);
        assert!(
            e.what
                .starts_with("checksum of FREE record does not match (stream says "),
            "{e}"
        );
        assert!(e.what.contains(", computed "), "{e}");
    }

    #[test]
    fn payload_whose_length_is_not_a_multiple_of_4_and_any_split() {
        // A WRITE_EMBEDDED of psize 5 carries 8 bytes; a WRITE of 5 bytes leaves a partial
        // word that OpenZFS does not checksum.
        let mut b = Builder::new(false, true);
        b.begin(HDRTYPE_SINGLE, 7, 0, "p/f@s", &[1, 2, 3, 4, 5, 6, 7]);
        let mut r = b.record(DRR_WRITE_EMBEDDED);
        b.put32(&mut r, 52, 5);
        b.emit(r, &[9; 8]);
        b.write(&[1, 2, 3, 4, 5]);
        b.write(&[6, 7, 8]);
        b.end(7);
        let whole = parse(&b.out, true).unwrap().unwrap();
        for i in 0..=b.out.len() {
            let mut p = StreamParser::new(true);
            p.feed(&b.out[..i]).unwrap();
            p.feed(&b.out[i..]).unwrap();
            assert_eq!(p.finish().unwrap().as_ref(), Some(&whole), "split at {i}");
        }
    }

    fn compound(big_endian: bool) -> (Builder, Vec<u64>) {
        let mut b = Builder::new(big_endian, false);
        let mut offsets = vec![b.begin(HDRTYPE_COMPOUND, 0, 0, "pool/fs@c", b"nvlist bytes....")];
        offsets.push(b.end(0));
        offsets.push(b.out.len() as u64);
        b.single(0xa, 0, "pool/fs@a");
        offsets.push(b.out.len() as u64);
        b.single(0xc, 0xa, "pool/fs@c");
        (b, offsets)
    }

    #[test]
    fn synthetic_compound_streams() {
        for big_endian in [false, true] {
            let (mut b, offsets) = compound(big_endian);
            let before_final = b.out.clone();
            b.final_end();
            let info = parse(&b.out, true).unwrap().unwrap();
            assert!(info.compound);
            assert_eq!(info.toname, "pool/fs@c");
            assert_eq!(info.big_endian, big_endian);
            assert_eq!(info.records, 2 + 4 + 4 + 1);
            let subs: Vec<_> = info
                .substreams
                .iter()
                .map(|s| (s.toname.as_str(), s.toguid, s.fromguid, s.offset))
                .collect();
            assert_eq!(
                subs,
                [
                    ("pool/fs@a", 0xa, 0, offsets[2]),
                    ("pool/fs@c", 0xc, 0xa, offsets[3])
                ]
            );

            let e = parse_err(&before_final);
            assert_eq!(e.what, "stream ends before its final END record");
            // The final END in the other byte order is accepted, as zfs receive does.
            let mut swapped = before_final.clone();
            swapped.extend_from_slice(&Builder::new(!big_endian, false).record(DRR_END));
            assert!(parse(&swapped, true).unwrap().is_some());
        }
    }

    #[test]
    fn compound_with_no_substreams() {
        let mut b = Builder::new(false, true);
        b.begin(HDRTYPE_COMPOUND, 0, 0, "pool/fs@c", b"nvlist..");
        b.end(0);
        b.final_end();
        let info = parse(&b.out, true).unwrap().unwrap();
        assert!(info.compound && info.substreams.is_empty());
    }

    #[test]
    fn compound_structure_violations() {
        // A non-zero byte in the final END.
        let (mut b, _) = compound(false);
        let at = b.final_end();
        b.out[at as usize + 40] = 1;
        let e = parse_err(&b.out);
        assert_eq!(e.offset, at);
        assert!(
            e.what
                .contains("final END record has a non-zero byte at offset 40"),
            "{e}"
        );

        // A compound BEGIN where a substream should start.
        let (mut b, _) = compound(false);
        let at = b.begin(HDRTYPE_COMPOUND, 0, 0, "x@y", &[]);
        b.end(0);
        b.final_end();
        let e = parse_err(&b.out);
        assert_eq!(e.offset, at);
        assert!(
            e.what.contains("cannot contain another compound BEGIN"),
            "{e}"
        );

        // A record between substreams.
        let (mut b, _) = compound(false);
        let at = b.free();
        b.final_end();
        let e = parse_err(&b.out);
        assert_eq!(e.offset, at);
        assert!(e.what.contains("found FREE"), "{e}");

        // Something other than END after the compound BEGIN.
        let mut b = Builder::new(false, false);
        b.begin(HDRTYPE_COMPOUND, 0, 0, "pool/fs@c", &[]);
        let at = b.free();
        let e = parse_err(&b.out);
        assert_eq!(e.offset, at);
        assert!(
            e.what
                .contains("expected the END record that closes the compound header"),
            "{e}"
        );

        // An unknown header type.
        let mut b = Builder::new(false, false);
        b.begin(3, 0, 0, "pool/fs@c", &[]);
        let e = parse_err(&b.out);
        assert_eq!(
            e,
            StreamError {
                offset: 0,
                what: "BEGIN record has unknown header type 3".into()
            }
        );
    }

    #[test]
    fn trailing_bytes_and_sticky_errors() {
        let s = single_stream(false, true);
        let mut p = StreamParser::new(true);
        p.feed(&s).unwrap();
        assert!(p.is_complete());
        p.feed(&[]).unwrap();
        let e = p.feed(&[0; 12]).unwrap_err();
        assert_eq!(
            e,
            StreamError {
                offset: s.len() as u64,
                what: "at least 12 bytes follow the final END record".into()
            }
        );
        assert_eq!(p.feed(&[]), Err(e.clone()));
        assert_eq!(p.feed(&s), Err(e.clone()));
        assert_eq!(p.finish(), Err(e.clone()));
        assert_eq!(p.finish(), Err(e));

        let mut joined = s.clone();
        joined.push(0);
        assert_eq!(parse_err(&joined).offset, s.len() as u64);
    }

    #[test]
    fn truncation_reports_what_was_missing() {
        let s = single_stream(false, true);
        let write_at = 2 * 312;
        let e = parse_err(&s[..write_at + 312 + 100]);
        assert_eq!(
            e.what,
            format!(
                "stream ends inside the payload of the WRITE record at byte {write_at} (needed 412 more bytes)"
            )
        );
        assert_eq!(e.offset, write_at as u64 + 412);
        let e = parse_err(&s[..s.len() - 1]);
        assert_eq!(
            e.what,
            "stream ends inside a record header (311 of 312 bytes)"
        );
        let e = parse_err(&s[..s.len() - 312]);
        assert_eq!(e.what, "stream ends before its final END record");
        for n in 1..16 {
            assert_eq!(
                parse_err(&s[..n]).what,
                format!("stream ends after {n} bytes, inside its first record")
            );
            assert_eq!(parse(&s[..n], false), Ok(None));
        }
    }

    #[test]
    fn non_zfs_input_is_ignored_unless_required() {
        let text = b"This is not a ZFS send stream, just some text that is long enough.\n";
        for input in [
            &text[..],
            &[][..],
            &[0u8; 16][..],
            &[0u8; 400][..],
            &ramp()[..],
        ] {
            let mut p = StreamParser::new(false);
            p.feed(input).unwrap();
            assert_eq!(p.finish(), Ok(None));
            assert_eq!(p.is_zfs(), Some(false));
            assert_eq!(p.offset(), input.len() as u64);
            assert!(parse(input, true).is_err());
        }
        assert_eq!(parse_err(&[]).what, "the stream is empty");
        let e = parse_err(text);
        assert_eq!(e.offset, 0);
        assert!(e.what.starts_with("not a ZFS send stream"), "{e}");

        // Undecided until 16 bytes, then decided by them.
        let s = single_stream(true, true);
        let mut p = StreamParser::new(false);
        p.feed(&s[..15]).unwrap();
        assert_eq!(p.is_zfs(), None);
        p.feed(&s[15..16]).unwrap();
        assert_eq!(p.is_zfs(), Some(true));
    }

    #[test]
    fn bad_begin_magic_between_substreams() {
        let (mut b, _) = compound(false);
        let at = b.out.len();
        b.single(0xd, 0xc, "pool/fs@d");
        b.final_end();
        b.out[at + 8] ^= 0x80;
        let e = parse_err(&b.out);
        assert_eq!(e.offset, at as u64);
        assert!(e.what.contains("bad magic"), "{e}");
    }

    #[test]
    fn end_with_non_zero_unused_bytes_is_rejected() {
        for at in [4, 48, 100, 279] {
            let mut b = Builder::new(false, false);
            b.begin(HDRTYPE_SINGLE, 7, 0, "p/f@s", &[]);
            let end = b.end(7) as usize;
            b.out[end + at] = 1;
            let e = parse_err(&b.out);
            assert_eq!(e.offset, end as u64);
            assert!(e.what.contains("unused fields"), "{e}");
        }
    }
}
