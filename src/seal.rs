//! Compress-then-encrypt, and its inverse with verification.
//!
//! `seal` turns a payload into the bytes stored under an object name; `open` turns them back,
//! refusing anything whose header, authentication tag (or checksum, unencrypted) or length
//! does not check out. The object name is part of what is authenticated, so an object copied
//! or swapped under another name does not open. Pure functions: no I/O.

use crate::chunk_id::ChunkId;
use crate::format::envelope::{CHECKSUM_LEN, HEADER_LEN, NONCE_LEN, TAG_LEN};
use crate::format::{Cipher, Codec, FormatError, Header, Kind};
use crate::keys::{Keys, SealKey};
use rand::RngCore;
use std::cell::RefCell;
use std::io::Read;
use std::ops::Range;

/// The largest chunk plaintext `open` accepts: FastCDC's ceiling is 16 MiB and fixed chunks
/// are at most 64 MiB (`init --chunk-size` refuses more).
pub const MAX_CHUNK_LEN: usize = 64 << 20;
/// Manifests grow with the source (about 40 bytes per chunk): 1 GiB covers a 100 TiB device
/// at 4 MiB chunks.
pub const MAX_METADATA_LEN: usize = 1 << 30;

/// Bytes a buffer keeps in front of its payload for [`seal_in_place`]: room for the header and
/// nonce, so a chunk read into such a buffer and stored as it is (it does not compress) is
/// sealed without another copy of it. A chunk that compresses goes into a buffer of its own
/// ([`seal_compressed`]).
pub const HEADROOM: usize = HEADER_LEN + NONCE_LEN;
/// Bytes sealing appends (the tag, or the checksum unencrypted): a buffer with this much
/// spare capacity after its payload is sealed in place without growing.
pub const TAILROOM: usize = if TAG_LEN > CHECKSUM_LEN {
    TAG_LEN
} else {
    CHECKSUM_LEN
};

/// Payloads at least this long are probed before they are compressed: [`PROBE_SAMPLES`]
/// slices of [`PROBE_SAMPLE_LEN`] bytes, evenly spread, are compressed one by one at
/// [`PROBE_LEVEL`], and the payload is compressed as soon as one of them shrinks by
/// 1/[`PROBE_MIN_GAIN`]; when none does, it is stored as it is. On incompressible data (media,
/// archives, encrypted volumes) zstd -3 runs at ~1.7 GB/s here and fails; the probe costs a
/// tenth of that, and a chunk costs little more than hashing and encryption.
///
/// Measured with the inputs of scripts/bench-peers.sh, against compressing every chunk at
/// level 3: on the ext4 image, no chunk was stored uncompressed that would have shrunk, and
/// probing cost 0.08% of the compression time; on the tar of /usr/share (1 MiB content-defined
/// chunks), 3 of 434 chunks were stored uncompressed, 33 KB (0.02%) larger than compressed,
/// for 0.4% of the compression time. Four 16 KiB samples whose sum had to shrink, the first
/// try, lost 0.7% and 2% of the compressed size: one compressible region is enough to compress.
const PROBE_MIN: usize = 256 << 10;
const PROBE_SAMPLES: usize = 32;
const PROBE_SAMPLE_LEN: usize = 2 << 10;
const PROBE_MIN_GAIN: usize = 32;
const PROBE_LEVEL: i32 = 1;

thread_local! {
    // Compression contexts and the compressed copy of a manifest or other metadata are kept
    // per thread rather than made per object: a fresh zstd -3 context allocates and faults in
    // megabytes of tables, which for 4 MiB chunks cost as much as a tenth of the compression
    // itself. (A backup's chunks are compressed into buffers of their own.)
    static COMPRESSOR: RefCell<Option<Compressors>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Seals `payload` as object `name` of `kind`. With `zstd_level`, the payload is compressed
/// when that makes it smaller; data that does not shrink is stored as it is.
pub fn seal(
    kind: Kind,
    key: Option<&SealKey>,
    name: &str,
    payload: &[u8],
    zstd_level: Option<i32>,
) -> Vec<u8> {
    seal_with_nonce(kind, key, name, payload, zstd_level, &fresh_nonce(key))
}

/// [`seal`] with the nonce given, so the test vectors in `format-spec/vectors/` can be
/// reproduced byte for byte. Never call it with a nonce that is not fresh and random: reusing
/// a nonce under one key breaks XChaCha20-Poly1305. The nonce is ignored without a key.
#[doc(hidden)]
pub fn seal_with_nonce(
    kind: Kind,
    key: Option<&SealKey>,
    name: &str,
    payload: &[u8],
    zstd_level: Option<i32>,
    nonce: &[u8; NONCE_LEN],
) -> Vec<u8> {
    with_scratch(|scratch| {
        let compressed = zstd_level.is_some_and(|level| compress(payload, level, scratch));
        let (codec, body) = if compressed {
            (Codec::Zstd, scratch.as_slice())
        } else {
            (Codec::Stored, payload)
        };
        let mut buf = Vec::with_capacity(HEADROOM + body.len() + TAILROOM);
        buf.resize(HEADROOM, 0);
        buf.extend_from_slice(body);
        close(kind, key, name, codec, &mut buf, nonce);
        buf
    })
}

/// [`seal`] without compression of the payload that `buf` holds after its first
/// [`HEADROOM`] bytes, turning `buf` itself into the sealed object, encrypted where it lies:
/// for a chunk that does not compress ([`seal_compressed`] said so).
pub fn seal_in_place(kind: Kind, key: Option<&SealKey>, name: &str, buf: &mut Vec<u8>) {
    seal_in_place_with_nonce(kind, key, name, buf, &fresh_nonce(key));
}

fn seal_in_place_with_nonce(
    kind: Kind,
    key: Option<&SealKey>,
    name: &str,
    buf: &mut Vec<u8>,
    nonce: &[u8; NONCE_LEN],
) {
    if buf.len() < HEADROOM {
        buf.resize(HEADROOM, 0);
    }
    buf.reserve(TAILROOM);
    close(kind, key, name, Codec::Stored, buf, nonce);
}

/// [`seal`] with compression of a payload that is worth compressing, into `out`, whose
/// contents do not matter: the object is `out[start..]`, `start` being returned, at the first
/// address in `out` that is a multiple of `align` (a power of two). Where direct I/O writes
/// the object, that spares a copy into aligned memory, and the payload's own buffer is free
/// again at once. `None` when compressing does not shrink the payload: the caller stores it
/// as it is ([`seal_in_place`]).
pub fn seal_compressed(
    kind: Kind,
    key: Option<&SealKey>,
    name: &str,
    payload: &[u8],
    zstd_level: i32,
    align: usize,
    out: &mut Vec<u8>,
) -> Option<usize> {
    let nonce = fresh_nonce(key);
    seal_compressed_with_nonce(kind, key, name, payload, zstd_level, align, out, &nonce)
}

#[allow(clippy::too_many_arguments)]
fn seal_compressed_with_nonce(
    kind: Kind,
    key: Option<&SealKey>,
    name: &str,
    payload: &[u8],
    zstd_level: i32,
    align: usize,
    out: &mut Vec<u8>,
    nonce: &[u8; NONCE_LEN],
) -> Option<usize> {
    let start = with_compressors(zstd_level, |zstd| {
        if !with_scratch(|scratch| zstd.worth_trying(payload, scratch)) {
            return None;
        }
        // All the room first: the object must not move once its start is chosen.
        out.clear();
        out.reserve(align + sealed_capacity(payload.len()));
        // Any start works; an aligned one is only faster to write.
        let start = Some(out.as_ptr().align_offset(align))
            .filter(|&s| s < align)
            .unwrap_or(0);
        zstd.compress_at(payload, out, start + HEADROOM)
            .then_some(start)
    })??;
    close_at(kind, key, name, Codec::Zstd, out, start, nonce);
    Some(start)
}

fn fresh_nonce(key: Option<&SealKey>) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    if key.is_some() {
        rand::rng().fill_bytes(&mut nonce);
    }
    nonce
}

/// Header, then the body encrypted or checksummed: what [`seal`] does after compressing.
/// Public for the tests and fuzz targets that need objects no writer makes, such as a hostile
/// zstd frame under a valid checksum (which anyone can compute: it is not keyed). The nonce
/// rule of [`seal_with_nonce`] holds here too.
#[doc(hidden)]
pub fn frame(
    kind: Kind,
    key: Option<&SealKey>,
    name: &str,
    codec: Codec,
    body: &[u8],
    nonce: &[u8; NONCE_LEN],
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADROOM + body.len() + TAILROOM);
    buf.resize(HEADROOM, 0);
    buf.extend_from_slice(body);
    close(kind, key, name, codec, &mut buf, nonce);
    buf
}

/// Turns `buf` = [`HEADROOM`] bytes of room, then the body, into the stored object: header,
/// nonce, ciphertext and tag; or, unencrypted, header, body and checksum.
fn close(
    kind: Kind,
    key: Option<&SealKey>,
    name: &str,
    codec: Codec,
    buf: &mut Vec<u8>,
    nonce: &[u8; NONCE_LEN],
) {
    close_at(kind, key, name, codec, buf, 0, nonce);
}

/// [`close`] of the object that starts at `start` of `buf`; what lies before it is not touched.
fn close_at(
    kind: Kind,
    key: Option<&SealKey>,
    name: &str,
    codec: Codec,
    buf: &mut Vec<u8>,
    start: usize,
    nonce: &[u8; NONCE_LEN],
) {
    let cipher = if key.is_some() {
        Cipher::XChaCha20Poly1305
    } else {
        Cipher::None
    };
    let header = Header {
        kind,
        cipher,
        codec,
    }
    .to_bytes();
    let (head, body) = (start + HEADER_LEN, start + HEADROOM);
    buf[start..head].copy_from_slice(&header);
    match key {
        Some(key) => {
            buf[head..body].copy_from_slice(nonce);
            let tag = crate::aead::seal(&key.0, nonce, &aad(&header, name), &mut buf[body..]);
            buf.extend_from_slice(&tag);
        }
        None => {
            // No nonce: the body moves up to follow the header.
            buf.copy_within(body.., head);
            buf.truncate(buf.len() - NONCE_LEN);
            let sum = checksum(&header, name, &buf[head..]);
            buf.extend_from_slice(&sum);
        }
    }
}

/// Runs `f` with this thread's scratch buffer (a fresh one if it is in use already).
fn with_scratch<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Vec::new()),
    })
}

/// A thread's zstd contexts: one at the repository's level, one at the probe's.
struct Compressors {
    level: i32,
    full: zstd::bulk::Compressor<'static>,
    probe: zstd::bulk::Compressor<'static>,
}

/// Runs `f` with this thread's zstd contexts for `level`; `None` when zstd cannot make them
/// (the payload is then stored as it is).
fn with_compressors<T>(level: i32, f: impl FnOnce(&mut Compressors) -> T) -> Option<T> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.try_borrow_mut().ok()?;
        if slot.as_ref().is_none_or(|c| c.level != level) {
            let full = zstd::bulk::Compressor::new(level).ok()?;
            let probe = zstd::bulk::Compressor::new(PROBE_LEVEL).ok()?;
            *slot = Some(Compressors { level, full, probe });
        }
        slot.as_mut().map(f)
    })
}

impl Compressors {
    /// Whether `payload` is worth compressing in full: short ones always are, longer ones
    /// when [`probe`] finds a sample that shrinks. `scratch` takes the samples' output.
    fn worth_trying(&mut self, payload: &[u8], scratch: &mut Vec<u8>) -> bool {
        payload.len() < PROBE_MIN || probe(&mut self.probe, payload, scratch)
    }

    /// Compresses `payload` into `out` from index `at` on (what lies before is kept, or
    /// zeroed where `out` was shorter); true when the result is smaller than the payload.
    /// Room is reserved only if `out` lacks it, so a buffer made with
    /// [`sealed_capacity`] to spare never moves.
    fn compress_at(&mut self, payload: &[u8], out: &mut Vec<u8>, at: usize) -> bool {
        out.resize(at, 0);
        out.reserve(zstd::zstd_safe::compress_bound(payload.len()));
        let mut cursor = std::io::Cursor::new(&mut *out);
        cursor.set_position(at as u64);
        matches!(self.full.compress_to_buffer(payload, &mut cursor), Ok(n) if n < payload.len())
    }
}

/// Compresses `payload` into `out` with this thread's zstd context; true when that is worth
/// storing (smaller than the payload). False, and `out` unspecified, when it is not, when the
/// probe says it would not be, or when zstd fails (the payload is then stored as it is).
fn compress(payload: &[u8], level: i32, out: &mut Vec<u8>) -> bool {
    with_compressors(level, |zstd| {
        zstd.worth_trying(payload, out) && zstd.compress_at(payload, out, 0)
    })
    .unwrap_or(false)
}

/// The most bytes sealing a payload of `len` bytes compressed can take: a buffer with this
/// much room after the object's start never grows while it is sealed.
fn sealed_capacity(len: usize) -> usize {
    HEADROOM + zstd::zstd_safe::compress_bound(len) + TAILROOM
}

/// Whether any of the samples spread over `payload` compresses (see [`PROBE_MIN`]).
fn probe(zstd: &mut zstd::bulk::Compressor<'static>, payload: &[u8], out: &mut Vec<u8>) -> bool {
    let step = payload.len() / PROBE_SAMPLES;
    (0..PROBE_SAMPLES).any(|i| {
        let sample = &payload[i * step..i * step + PROBE_SAMPLE_LEN.min(step)];
        out.clear();
        out.reserve(zstd::zstd_safe::compress_bound(sample.len()));
        match zstd.compress_to_buffer(sample, out) {
            Ok(n) => n + sample.len() / PROBE_MIN_GAIN <= sample.len(),
            // Not worth a guess: let the full compression decide.
            Err(_) => true,
        }
    })
}

/// Opens an object sealed by [`seal`]. `key` is the repository's sealing key, or None for an
/// unencrypted repository; an object whose cipher does not match the repository is refused,
/// so nobody can slip an unencrypted forgery into an encrypted repository.
pub fn open(
    kind: Kind,
    key: Option<&SealKey>,
    name: &str,
    bytes: &[u8],
    max_len: usize,
) -> Result<Vec<u8>, FormatError> {
    open_owned(kind, key, name, bytes.to_vec(), max_len)
}

/// [`open`] of an object already in a buffer of its own: decrypts where the ciphertext lies,
/// so a stored (uncompressed) payload comes back in the same buffer.
pub fn open_owned(
    kind: Kind,
    key: Option<&SealKey>,
    name: &str,
    mut bytes: Vec<u8>,
    max_len: usize,
) -> Result<Vec<u8>, FormatError> {
    let (codec, start, end) = unseal(kind, key, name, &mut bytes)?;
    match codec {
        Codec::Stored if end - start > max_len => Err(FormatError::TooLarge(max_len)),
        Codec::Stored => {
            bytes.truncate(end);
            bytes.drain(..start);
            Ok(bytes)
        }
        Codec::Zstd => {
            let mut out = Vec::new();
            decompress_into(&bytes[start..end], max_len, &mut out, 1)?;
            Ok(out)
        }
    }
}

/// Checks the header and authenticates (decrypting in place) an object; its codec and where
/// its body lies in `bytes`.
fn unseal(
    kind: Kind,
    key: Option<&SealKey>,
    name: &str,
    bytes: &mut [u8],
) -> Result<(Codec, usize, usize), FormatError> {
    let header = Header::parse(bytes, kind)?;
    let (start, end) = match (header.cipher, key) {
        (Cipher::XChaCha20Poly1305, Some(key)) => {
            if bytes.len() < HEADROOM + TAG_LEN {
                return Err(FormatError::Truncated("shorter than header, nonce and tag"));
            }
            let tag_at = bytes.len() - TAG_LEN;
            let (front, sealed) = bytes.split_at_mut(HEADROOM);
            // The length follows from the split above; a mismatch could only be ours.
            let nonce: &[u8; NONCE_LEN] = front[HEADER_LEN..]
                .try_into()
                .map_err(|_| FormatError::Truncated("nonce"))?;
            crate::aead::open(&key.0, nonce, &aad(&front[..HEADER_LEN], name), sealed)
                .map_err(|_| FormatError::Authentication)?;
            (HEADROOM, tag_at)
        }
        (Cipher::None, None) => {
            if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
                return Err(FormatError::Truncated("shorter than header and checksum"));
            }
            let sum_at = bytes.len() - CHECKSUM_LEN;
            let body = &bytes[HEADER_LEN..sum_at];
            if checksum(&bytes[..HEADER_LEN], name, body)[..] != bytes[sum_at..] {
                return Err(FormatError::Checksum);
            }
            (HEADER_LEN, sum_at)
        }
        // A cipher that does not match the repository's encryption is a forgery or a mix-up.
        (Cipher::None, Some(_)) | (Cipher::XChaCha20Poly1305, None) => {
            return Err(FormatError::Authentication);
        }
    };
    Ok((header.codec, start, end))
}

/// Opens a chunk object and checks that its plaintext hashes to `id`.
pub fn open_chunk(
    keys: &Keys,
    id: &ChunkId,
    name: &str,
    bytes: &[u8],
) -> Result<Vec<u8>, FormatError> {
    open_chunk_owned(keys, id, name, bytes.to_vec())
}

/// [`open_chunk`] of an object in a buffer of its own (see [`open_owned`]).
pub fn open_chunk_owned(
    keys: &Keys,
    id: &ChunkId,
    name: &str,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, FormatError> {
    let plain = open_owned(Kind::Chunk, keys.seal.as_ref(), name, bytes, MAX_CHUNK_LEN)?;
    if keys.id.id_of(&plain) != *id {
        return Err(FormatError::IdMismatch);
    }
    Ok(plain)
}

/// Where [`open_chunk_reusing`] puts a decompressed plaintext: at an address that is a
/// multiple of this, so a restore writes it around the page cache (`O_DIRECT`, which wants
/// aligned memory) without copying it first. The largest logical block size of any disk.
pub const PLAIN_ALIGN: usize = 4096;

/// A chunk's plaintext where it lies in a reusable buffer: `buffer[start..]`. Decompressed
/// plaintext starts at a [`PLAIN_ALIGN`]ed address; a stored chunk's starts after its
/// object's header, where decryption left it (moving it down would copy the whole chunk).
#[derive(Debug, Default)]
pub struct Plain {
    buffer: Vec<u8>,
    start: usize,
}

impl Plain {
    /// All of `buffer`.
    pub fn whole(buffer: Vec<u8>) -> Plain {
        Plain { buffer, start: 0 }
    }

    /// The buffer, for reuse.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buffer
    }
}

impl std::ops::Deref for Plain {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buffer[self.start..]
    }
}

/// [`open_chunk_owned`] of the object that is `object` of `bytes` (where a reused buffer's
/// read put it), which decompresses into `spare`, a buffer for reuse, and leaves the
/// object's own buffer there instead; a stored (uncompressed) chunk's plaintext is the
/// object's buffer, and `spare` stays as it was. Restores pass chunk-sized buffers round
/// this way instead of allocating one per chunk; one with [`PLAIN_ALIGN`] bytes more than
/// the chunk holds its plaintext without growing.
pub fn open_chunk_reusing(
    keys: &Keys,
    id: &ChunkId,
    name: &str,
    (mut bytes, object): (Vec<u8>, Range<usize>),
    spare: &mut Vec<u8>,
) -> Result<Plain, FormatError> {
    let sealed = bytes
        .get_mut(object.clone())
        .ok_or(FormatError::Truncated("object outside its buffer"))?;
    let (codec, start, end) = unseal(Kind::Chunk, keys.seal.as_ref(), name, sealed)?;
    let (start, end) = (object.start + start, object.start + end);
    let plain = match codec {
        Codec::Stored if end - start > MAX_CHUNK_LEN => {
            return Err(FormatError::TooLarge(MAX_CHUNK_LEN));
        }
        Codec::Stored => {
            bytes.truncate(end);
            Plain {
                buffer: bytes,
                start,
            }
        }
        Codec::Zstd => {
            let mut out = std::mem::take(spare);
            let decompressed =
                decompress_into(&bytes[start..end], MAX_CHUNK_LEN, &mut out, PLAIN_ALIGN);
            *spare = bytes;
            Plain {
                start: decompressed?,
                buffer: out,
            }
        }
    };
    if keys.id.id_of(&plain) != *id {
        return Err(FormatError::IdMismatch);
    }
    Ok(plain)
}

/// What [`open_chunk_owned`] checks, without keeping the plaintext: the length of a chunk
/// that authenticates and hashes to `id`. The object is decrypted where it lies in `bytes`,
/// and a compressed chunk is decompressed into a buffer of this thread's, so verifying
/// (`check --read-data`) allocates nothing per chunk.
pub fn verify_chunk(
    keys: &Keys,
    id: &ChunkId,
    name: &str,
    bytes: &mut [u8],
) -> Result<usize, FormatError> {
    let (codec, start, end) = unseal(Kind::Chunk, keys.seal.as_ref(), name, bytes)?;
    let hashed = |plain: &[u8]| {
        if keys.id.id_of(plain) == *id {
            Ok(plain.len())
        } else {
            Err(FormatError::IdMismatch)
        }
    };
    match codec {
        Codec::Stored if end - start > MAX_CHUNK_LEN => Err(FormatError::TooLarge(MAX_CHUNK_LEN)),
        Codec::Stored => hashed(&bytes[start..end]),
        Codec::Zstd => with_scratch(|out| {
            let at = decompress_into(&bytes[start..end], MAX_CHUNK_LEN, out, 1)?;
            hashed(&out[at..])
        }),
    }
}

fn aad(header: &[u8], name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + name.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(name.as_bytes());
    aad
}

fn checksum(header: &[u8], name: &str, body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut h = blake3::Hasher::new();
    h.update(header);
    h.update(&(name.len() as u32).to_le_bytes());
    h.update(name.as_bytes());
    h.update(body);
    *h.finalize().as_bytes()
}

/// The magic number a Zstandard frame begins with, 0xFD2FB528 little-endian (RFC 8878).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Decompresses into `out` (replacing what it held) without trusting the frame: the output
/// is capped at `max_len` whatever the frame header claims, so a hostile object cannot make
/// us allocate without bound. The output is `out[start..]`, and `start` is returned: it puts
/// the output at an address that is a multiple of `align` (a power of two) when the frame
/// declares its size, as ours all do; otherwise 0.
fn decompress_into(
    body: &[u8],
    max_len: usize,
    out: &mut Vec<u8>,
    align: usize,
) -> Result<usize, FormatError> {
    let bad = |e: std::io::Error| FormatError::Payload(format!("zstd: {e}"));
    out.clear();
    // A Zstandard frame (RFC 8878), not a skippable or legacy one (format-spec 4.5): a lone
    // skippable frame would otherwise open as an empty payload.
    if !body.starts_with(&ZSTD_MAGIC) {
        return Err(FormatError::Payload(
            "the body does not begin with a zstd frame".into(),
        ));
    }
    // One frame and nothing after it (format-spec 4.5): the decoder would go on into a
    // second frame, and readers that stop after the first would see another payload.
    match zstd::zstd_safe::find_frame_compressed_size(body) {
        Ok(n) if n == body.len() => {}
        Ok(n) => {
            return Err(FormatError::Payload(format!(
                "{} bytes after the zstd frame",
                body.len() - n
            )));
        }
        Err(code) => {
            return Err(FormatError::Payload(format!(
                "zstd: {}",
                zstd::zstd_safe::get_error_name(code)
            )));
        }
    }
    if let Ok(Some(n)) = zstd::zstd_safe::get_frame_content_size(body) {
        if n > max_len as u64 {
            return Err(FormatError::TooLarge(max_len));
        }
        // Reserved first: the address, and so the padding in front, stays put after it.
        out.reserve(n as usize + align - 1);
        let start = out.as_ptr().align_offset(align);
        let mut at = std::io::Cursor::new(&mut *out);
        at.set_position(start as u64);
        DECOMPRESSOR
            .with(|cell| {
                let mut fresh = None;
                let mut slot = cell.try_borrow_mut();
                let slot = match slot.as_deref_mut() {
                    Ok(slot) => slot,
                    Err(_) => &mut fresh,
                };
                let zstd = match slot {
                    Some(d) => d,
                    None => slot.insert(zstd::bulk::Decompressor::new()?),
                };
                zstd.decompress_to_buffer(body, &mut at)
            })
            .map_err(bad)?;
        if (out.len() - start) as u64 != n {
            return Err(FormatError::Payload(
                "zstd frame shorter than its declared size".into(),
            ));
        }
        return Ok(start);
    }
    zstd::stream::read::Decoder::new(body)
        .map_err(bad)?
        .take(max_len as u64 + 1)
        .read_to_end(out)
        .map_err(bad)?;
    if out.len() > max_len {
        return Err(FormatError::TooLarge(max_len));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::MasterKey;
    use proptest::prelude::*;
    use rand::RngCore;

    fn keys() -> Keys {
        Keys::from_master(&MasterKey([3; 32]))
    }

    #[test]
    fn an_object_does_not_open_under_another_name_or_kind() {
        let k = keys();
        let sealed = seal(
            Kind::Manifest,
            k.seal.as_ref(),
            "manifests/a/1",
            b"payload",
            Some(3),
        );
        assert_eq!(
            open(
                Kind::Manifest,
                k.seal.as_ref(),
                "manifests/a/1",
                &sealed,
                100
            )
            .unwrap(),
            b"payload"
        );
        assert_eq!(
            open(
                Kind::Manifest,
                k.seal.as_ref(),
                "manifests/a/2",
                &sealed,
                100
            ),
            Err(FormatError::Authentication)
        );
        assert!(matches!(
            open(Kind::Chunk, k.seal.as_ref(), "manifests/a/1", &sealed, 100),
            Err(FormatError::WrongKind { .. })
        ));
        // An unencrypted object is refused by an encrypted repository, and the reverse.
        let plain = seal(Kind::Manifest, None, "manifests/a/1", b"payload", None);
        assert_eq!(
            open(
                Kind::Manifest,
                k.seal.as_ref(),
                "manifests/a/1",
                &plain,
                100
            ),
            Err(FormatError::Authentication)
        );
        assert_eq!(
            open(Kind::Manifest, None, "manifests/a/1", &sealed, 100),
            Err(FormatError::Authentication)
        );
    }

    #[test]
    fn compressible_data_is_compressed_and_random_data_is_not() {
        let k = keys();
        let zeros = vec![0u8; 100_000];
        let s = seal(Kind::Chunk, k.seal.as_ref(), "c", &zeros, Some(3));
        assert!(s.len() < 1000);
        let mut random = vec![0u8; 100_000];
        rand::rng().fill_bytes(&mut random);
        let s = seal(Kind::Chunk, k.seal.as_ref(), "c", &random, Some(3));
        assert_eq!(s[7], Codec::Stored as u8);
        assert_eq!(s.len(), random.len() + HEADER_LEN + NONCE_LEN + TAG_LEN);
    }

    #[test]
    fn size_limits_hold_against_frames_that_lie() {
        let big = vec![1u8; 10_000];
        let s = seal(Kind::Chunk, None, "c", &big, Some(1));
        assert_eq!(
            open(Kind::Chunk, None, "c", &s, 9_999),
            Err(FormatError::TooLarge(9_999))
        );
        assert_eq!(open(Kind::Chunk, None, "c", &s, 10_000).unwrap(), big);
    }

    #[test]
    fn a_body_of_more_than_one_frame_is_refused() {
        let data = vec![1u8; 10_000];
        let sealed = seal(Kind::Chunk, None, "c", &data, Some(1));
        let (header, rest) = sealed.split_at(HEADER_LEN);
        let mut body = rest[..rest.len() - CHECKSUM_LEN].to_vec();
        body.extend(zstd::bulk::compress(b"more", 1).unwrap());
        let mut forged = header.to_vec();
        forged.extend_from_slice(&body);
        forged.extend_from_slice(&checksum(header, "c", &body));
        assert_eq!(
            open(Kind::Chunk, None, "c", &forged, 20_000),
            Err(FormatError::Payload("13 bytes after the zstd frame".into()))
        );
    }

    #[test]
    fn a_body_that_is_not_a_zstd_frame_is_refused() {
        // A skippable frame alone decoded to an empty payload, and so opened as the chunk
        // whose plaintext is empty.
        let k = Keys::unencrypted(&[9; 32]);
        let id = k.id.id_of(b"");
        let skippable = [0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, b'B', b'V', b'L', b'T'];
        let name = crate::layout::chunk(&id);
        let forged = frame(Kind::Chunk, None, &name, Codec::Zstd, &skippable, &[0; 24]);
        let refused = Err(FormatError::Payload(
            "the body does not begin with a zstd frame".into(),
        ));
        assert_eq!(open_chunk(&k, &id, &name, &forged), refused);
        assert_eq!(open(Kind::Chunk, None, &name, &forged, 100), refused);
        // The same payload in a Zstandard frame opens.
        let empty = zstd::bulk::compress(b"", 3).unwrap();
        let fine = frame(Kind::Chunk, None, &name, Codec::Zstd, &empty, &[0; 24]);
        assert_eq!(open_chunk(&k, &id, &name, &fine), Ok(Vec::new()));
    }

    #[test]
    fn chunk_content_must_match_its_id() {
        let k = keys();
        let data = b"chunk data".to_vec();
        let id = k.id.id_of(&data);
        let name = format!("chunks/{id}");
        let s = seal(Kind::Chunk, k.seal.as_ref(), &name, &data, Some(3));
        assert_eq!(open_chunk(&k, &id, &name, &s).unwrap(), data);
        let other = k.id.id_of(b"other");
        assert_eq!(
            open_chunk(&k, &other, &name, &s),
            Err(FormatError::IdMismatch)
        );
    }

    #[test]
    fn verify_chunk_agrees_with_open_chunk() {
        let k = keys();
        for data in [b"chunk data".repeat(10_000), vec![0x5a; 3], Vec::new()] {
            let id = k.id.id_of(&data);
            for level in [Some(3), None] {
                let s = seal(Kind::Chunk, k.seal.as_ref(), "chunks/x", &data, level);
                assert_eq!(
                    open_chunk(&k, &id, "chunks/x", &s).unwrap().len(),
                    data.len()
                );
                let mut spare = b"spare".to_vec();
                let whole = (s.clone(), 0..s.len());
                let plain = open_chunk_reusing(&k, &id, "chunks/x", whole, &mut spare);
                let plain = plain.unwrap();
                assert_eq!(*plain, data[..]);
                // Decompressed plaintext lies where a direct write takes it without a copy.
                if s[7] == Codec::Zstd as u8 {
                    assert!(plain.as_ptr().addr().is_multiple_of(PLAIN_ALIGN));
                }
                // A compressed chunk leaves its object's buffer; a stored one the spare.
                assert_eq!(spare == b"spare", s[7] == Codec::Stored as u8);
                // An object where a direct read leaves it: after padding, before more.
                let mut padded = vec![0xee; 100];
                padded.extend_from_slice(&s);
                padded.extend_from_slice(&[0xee; 9]);
                let object = (padded, 100..100 + s.len());
                let plain = open_chunk_reusing(&k, &id, "chunks/x", object, &mut spare);
                assert_eq!(*plain.unwrap(), data[..]);
                let beyond = (s.clone(), 1..s.len() + 1);
                assert!(open_chunk_reusing(&k, &id, "chunks/x", beyond, &mut spare).is_err());
                assert_eq!(
                    verify_chunk(&k, &id, "chunks/x", &mut s.clone()),
                    Ok(data.len())
                );
                let other = k.id.id_of(b"other");
                assert_eq!(
                    verify_chunk(&k, &other, "chunks/x", &mut s.clone()),
                    Err(FormatError::IdMismatch)
                );
                assert_eq!(
                    verify_chunk(&k, &id, "chunks/y", &mut s.clone()),
                    Err(FormatError::Authentication)
                );
            }
        }
    }

    #[test]
    fn the_probe_skips_incompressible_data_but_not_mixed_data() {
        let k = keys();
        let mut random = vec![0u8; 1 << 20];
        rand::rng().fill_bytes(&mut random);
        let s = seal(Kind::Chunk, k.seal.as_ref(), "c", &random, Some(3));
        assert_eq!(s[7], Codec::Stored as u8);
        // Random except for one compressible quarter, which one of the samples lands in.
        let mut mixed = random.clone();
        mixed[256 << 10..512 << 10].fill(b'x');
        let s = seal(Kind::Chunk, k.seal.as_ref(), "c", &mixed, Some(3));
        assert_eq!(s[7], Codec::Zstd as u8);
        assert!(s.len() < 800 << 10);
        let plain = open(Kind::Chunk, k.seal.as_ref(), "c", &s, MAX_CHUNK_LEN).unwrap();
        assert_eq!(plain, mixed);
    }

    proptest! {
        #[test]
        fn open_of_seal_is_identity(data in proptest::collection::vec(any::<u8>(), 0..5000), encrypted: bool, compress: bool) {
            let k = keys();
            let key = if encrypted { k.seal.as_ref() } else { None };
            let s = seal(Kind::Chunk, key, "chunks/x", &data, compress.then_some(3));
            prop_assert_eq!(open(Kind::Chunk, key, "chunks/x", &s, MAX_CHUNK_LEN).unwrap(), data);
        }

        #[test]
        fn seal_in_place_equals_seal(data in proptest::collection::vec(any::<u8>(), 0..5000), repeat in 0usize..300, encrypted: bool, nonce: [u8; NONCE_LEN]) {
            let k = keys();
            let key = if encrypted { k.seal.as_ref() } else { None };
            let data = data.repeat(repeat.max(1));
            let expected = seal_with_nonce(Kind::Chunk, key, "chunks/x", &data, None, &nonce);
            let mut buf = vec![7u8; HEADROOM];
            buf.extend_from_slice(&data);
            seal_in_place_with_nonce(Kind::Chunk, key, "chunks/x", &mut buf, &nonce);
            prop_assert_eq!(&buf, &expected);
            prop_assert_eq!(open_owned(Kind::Chunk, key, "chunks/x", buf, MAX_CHUNK_LEN).unwrap(), data);
        }

        #[test]
        fn seal_compressed_equals_seal_and_starts_aligned(data in proptest::collection::vec(any::<u8>(), 0..5000), repeat in 0usize..300, encrypted: bool, nonce: [u8; NONCE_LEN]) {
            let k = keys();
            let key = if encrypted { k.seal.as_ref() } else { None };
            let data = data.repeat(repeat.max(1));
            let expected = seal_with_nonce(Kind::Chunk, key, "chunks/x", &data, Some(3), &nonce);
            let compressed = Header::parse(&expected, Kind::Chunk).unwrap().codec == Codec::Zstd;
            // A buffer with room and old contents, which must not matter, in front of the
            // object as after it.
            let mut buf = vec![0xa5u8; sealed_capacity(data.len()) + 8192];
            match seal_compressed_with_nonce(Kind::Chunk, key, "chunks/x", &data, 3, 4096, &mut buf, &nonce) {
                Some(start) => {
                    prop_assert!(compressed, "compressed what seal stores as it is");
                    prop_assert_eq!(buf[start..].as_ptr().addr() % 4096, 0);
                    prop_assert_eq!(&buf[start..], &expected[..]);
                }
                None => prop_assert!(!compressed, "stored as it is what seal compresses"),
            }
        }

        #[test]
        fn any_flipped_bit_is_detected(data in proptest::collection::vec(any::<u8>(), 0..2000), encrypted: bool, bit in any::<proptest::sample::Index>()) {
            let k = keys();
            let key = if encrypted { k.seal.as_ref() } else { None };
            let mut s = seal(Kind::Chunk, key, "chunks/x", &data, Some(3));
            let i = bit.index(s.len() * 8);
            s[i / 8] ^= 1 << (i % 8);
            prop_assert!(open(Kind::Chunk, key, "chunks/x", &s, MAX_CHUNK_LEN).is_err());
        }

        #[test]
        fn any_truncation_is_detected(data in proptest::collection::vec(any::<u8>(), 1..2000), encrypted: bool, cut in any::<proptest::sample::Index>()) {
            let k = keys();
            let key = if encrypted { k.seal.as_ref() } else { None };
            let s = seal(Kind::Chunk, key, "chunks/x", &data, Some(3));
            let n = cut.index(s.len());
            prop_assert!(open(Kind::Chunk, key, "chunks/x", &s[..n], MAX_CHUNK_LEN).is_err());
        }
    }
}
