//! The master key, the subkeys derived from it, and the wrapping of the master key under a
//! passphrase (Argon2id) or a key file.
//!
//! Every secret here is zeroed when dropped. Subkeys come from BLAKE3 `derive_key` with fixed
//! context strings, so one master key never serves two purposes.
//!
//! Also the paper key: the master key as a few lines of text for disaster recovery
//! ([`paper_encode`], [`paper_decode`]), with a check on every line so a mistyped digit is
//! found and named, and a check of the whole key bound to the repository id. Storing and
//! removing key objects is `repo`'s business; this module does no I/O.

use crate::chunk_id::IdKey;
use crate::format::FormatError;
use crate::format::key::{Kdf, KeyObject};
use rand::RngCore;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

// Context strings for BLAKE3 derive_key. Do not modify: changing one changes every id or key
// of every existing repository.
const CTX_ID: &str = "blockvault 2026-11-22 chunk id";
const CTX_SEAL: &str = "blockvault 2026-11-22 object sealing";
const CTX_GEAR: &str = "blockvault 2026-11-22 content-defined chunking seed";
const CTX_UNENCRYPTED_ID: &str = "blockvault 2026-11-22 unencrypted repository chunk id";
const CTX_KEY_FILE: &str = "blockvault 2026-11-22 key file wrapping";
/// The whole-key check of a paper key (not a key: a checksum that also binds the repository id).
const CTX_PAPER_CHECK: &str = "blockvault 2026-11-22 paper key check";

/// Argon2id cost for new passphrases: 64 MiB, 3 passes and 4 lanes, the RFC 9106 "second
/// recommended" option. The lanes are computed in parallel: 72 ms on the 2-core machines this
/// was measured on, against 142 ms for one lane of the same memory and passes (the attacker's
/// cost is the memory and passes, not our wall time).
pub const DEFAULT_ARGON2_MEMORY_KIB: u32 = 64 * 1024;
pub const DEFAULT_ARGON2_PASSES: u32 = 3;
pub const DEFAULT_ARGON2_LANES: u32 = 4;
/// Upper bounds accepted from a stored key object, so a hostile one cannot make us allocate
/// terabytes or spin forever.
const MAX_ARGON2_MEMORY_KIB: u32 = 4 * 1024 * 1024;
const MAX_ARGON2_PASSES: u32 = 64;
const MAX_ARGON2_LANES: u32 = 16;

#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey(pub(crate) [u8; 32]);

impl MasterKey {
    pub fn random() -> MasterKey {
        let mut k = [0u8; 32];
        rand::rng().fill_bytes(&mut k);
        MasterKey(k)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// What a user presents to open an encrypted repository.
#[derive(Clone)]
pub enum Secret {
    Passphrase(Zeroizing<String>),
    KeyFile(Zeroizing<Vec<u8>>),
}

impl Secret {
    /// "passphrase" or "key file", for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Secret::Passphrase(_) => "passphrase",
            Secret::KeyFile(_) => "key file",
        }
    }

    /// The same kind and the same bytes (so it opens the same key objects).
    pub fn same_as(&self, other: &Secret) -> bool {
        match (self, other) {
            (Secret::Passphrase(a), Secret::Passphrase(b)) => a.as_bytes() == b.as_bytes(),
            (Secret::KeyFile(a), Secret::KeyFile(b)) => a[..] == b[..],
            _ => false,
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}, ..)", self.kind())
    }
}

/// The working keys of an open repository.
#[derive(Clone)]
pub struct Keys {
    pub id: IdKey,
    /// None for a repository created with `--encryption none`.
    pub seal: Option<SealKey>,
    /// Seeds the FastCDC gear table so chunk boundaries do not leak content either.
    pub gear_seed: u64,
}

#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SealKey(pub(crate) [u8; 32]);

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    pub fn from_master(master: &MasterKey) -> Keys {
        let gear = blake3::derive_key(CTX_GEAR, &master.0);
        Keys {
            id: IdKey(blake3::derive_key(CTX_ID, &master.0)),
            seal: Some(SealKey(blake3::derive_key(CTX_SEAL, &master.0))),
            gear_seed: u64::from_le_bytes(gear[..8].try_into().unwrap_or_default()),
        }
    }

    /// Keys of an unencrypted repository: ids are still keyed (by the public repository id),
    /// which only keeps ids distinct between repositories; it hides nothing.
    pub fn unencrypted(repo_id: &[u8; 32]) -> Keys {
        let gear = blake3::derive_key(CTX_GEAR, repo_id);
        Keys {
            id: IdKey(blake3::derive_key(CTX_UNENCRYPTED_ID, repo_id)),
            seal: None,
            gear_seed: u64::from_le_bytes(gear[..8].try_into().unwrap_or_default()),
        }
    }
}

/// Parameters for wrapping a new key.
#[derive(Debug, Clone, Copy)]
pub struct Argon2Cost {
    pub memory_kib: u32,
    pub passes: u32,
}

impl Default for Argon2Cost {
    fn default() -> Self {
        Argon2Cost {
            memory_kib: DEFAULT_ARGON2_MEMORY_KIB,
            passes: DEFAULT_ARGON2_PASSES,
        }
    }
}

/// Whether a key object's Argon2id cost is within what a reader accepts (format-spec 7.2);
/// one beyond is refused before any work.
pub fn argon2_within_caps(kdf: &Kdf) -> bool {
    match kdf {
        Kdf::Argon2id {
            memory_kib,
            passes,
            lanes,
            ..
        } => {
            *memory_kib <= MAX_ARGON2_MEMORY_KIB
                && *passes <= MAX_ARGON2_PASSES
                && *lanes <= MAX_ARGON2_LANES
        }
        Kdf::KeyFile { .. } => true,
    }
}

fn kek(secret: &Secret, kdf: &Kdf) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let mut out = Zeroizing::new([0u8; 32]);
    match (secret, kdf) {
        (
            Secret::Passphrase(p),
            Kdf::Argon2id {
                memory_kib,
                passes,
                lanes,
                salt,
            },
        ) => {
            if !argon2_within_caps(kdf) {
                return Err(KeyError::Format(FormatError::Payload(format!(
                    "Argon2id cost out of range (m={memory_kib} KiB, t={passes}, p={lanes})"
                ))));
            }
            let params =
                argon2::Params::new(*memory_kib, *passes, *lanes, Some(32)).map_err(|e| {
                    KeyError::Format(FormatError::Payload(format!("Argon2id parameters: {e}")))
                })?;
            // Our own memory blocks rather than `hash_password_into`'s: mapped, so that the
            // kernel zeroes them on the lanes' threads (`crate::sys::KdfMemory`), or else
            // allocated here, so they can be wiped: they are derived from the passphrase (the
            // argon2 crate zeroes only with its `zeroize` feature, which is off).
            let mut mapped = crate::sys::KdfMemory::new(params.block_count());
            let mut allocated = Vec::new();
            let memory = match mapped.as_mut() {
                Some(m) => m.blocks(),
                None => {
                    allocated = vec![argon2::Block::new(); params.block_count()];
                    &mut allocated[..]
                }
            };
            let hashed =
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                    .hash_password_into_with_memory(p.as_bytes(), salt, out.as_mut(), memory);
            for block in &mut allocated {
                block.as_mut().zeroize();
            }
            hashed.map_err(|e| KeyError::Format(FormatError::Payload(format!("Argon2id: {e}"))))?;
        }
        (Secret::KeyFile(s), Kdf::KeyFile { salt }) => {
            let mut h = blake3::Hasher::new_derive_key(CTX_KEY_FILE);
            h.update(s);
            h.update(salt);
            out.copy_from_slice(h.finalize().as_bytes());
        }
        _ => return Err(KeyError::WrongKind),
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("wrong passphrase or key file")]
    Wrong,
    /// The secret is a passphrase and the key object wants a key file, or the other way round.
    #[error("this key is for a different kind of secret")]
    WrongKind,
    #[error(transparent)]
    Format(#[from] FormatError),
}

fn key_aad(object_name: &str, repo_id: &[u8; 32]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(object_name.len() + 32);
    aad.extend_from_slice(object_name.as_bytes());
    aad.extend_from_slice(repo_id);
    aad
}

/// Seals `master` under `secret`, for storage as `object_name` (e.g. `keys/<id>`) in the
/// repository `repo_id`: the name and repository are authenticated, so a key object copied
/// from elsewhere does not open.
pub fn wrap(
    master: &MasterKey,
    secret: &Secret,
    cost: Argon2Cost,
    object_name: &str,
    repo_id: &[u8; 32],
    host: &str,
    created: i64,
) -> Result<KeyObject, KeyError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let kdf = match secret {
        Secret::Passphrase(_) => Kdf::Argon2id {
            memory_kib: cost.memory_kib,
            passes: cost.passes,
            lanes: DEFAULT_ARGON2_LANES,
            salt,
        },
        Secret::KeyFile(_) => Kdf::KeyFile { salt },
    };
    let kek = kek(secret, &kdf)?;
    let mut nonce = [0u8; 24];
    rand::rng().fill_bytes(&mut nonce);
    let mut buf = master.0.to_vec();
    let tag = crate::aead::seal(&kek, &nonce, &key_aad(object_name, repo_id), &mut buf);
    buf.extend_from_slice(&tag);
    Ok(KeyObject {
        kdf,
        created,
        host: host.to_string(),
        nonce,
        sealed: buf,
    })
}

pub fn unwrap(
    obj: &KeyObject,
    secret: &Secret,
    object_name: &str,
    repo_id: &[u8; 32],
) -> Result<MasterKey, KeyError> {
    let kek = kek(secret, &obj.kdf)?;
    if obj.sealed.len() != 32 + 16 {
        return Err(KeyError::Format(FormatError::Payload(format!(
            "sealed master key is {} bytes, expected 48",
            obj.sealed.len()
        ))));
    }
    let mut buf = Zeroizing::new(obj.sealed.clone());
    crate::aead::open(&kek, &obj.nonce, &key_aad(object_name, repo_id), &mut buf)
        .map_err(|_| KeyError::Wrong)?;
    let mut master = MasterKey([0u8; 32]);
    master.0.copy_from_slice(&buf[..32]);
    Ok(master)
}

/// Reads a key file: 32 or more bytes of secret, as written by `init --key-file`. Any file of
/// at least 32 bytes works, so users may bring their own random file.
pub fn parse_key_file(bytes: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let text = std::str::from_utf8(bytes).ok().map(str::trim);
    if let Some(t) = text.and_then(|t| t.strip_prefix(KEY_FILE_PREFIX)) {
        return hex::decode(t.trim())
            .ok()
            .filter(|k| k.len() == 32)
            .map(Zeroizing::new);
    }
    (bytes.len() >= 32).then(|| Zeroizing::new(bytes.to_vec()))
}

pub const KEY_FILE_PREFIX: &str = "blockvault-key-file-v1:";
/// The largest key file read. Ours are 88 bytes; a file of the user's own random bytes may be
/// larger, but a key file of megabytes is a mistyped path (a disk, `/dev/zero`).
pub const MAX_KEY_FILE_LEN: u64 = 1 << 20;
/// The largest password file read: only its first line is used.
pub const MAX_PASSWORD_FILE_LEN: u64 = 64 * 1024;

/// A new key file's contents: a 256-bit random secret in hex, one line.
pub fn new_key_file() -> Zeroizing<String> {
    let mut k = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(k.as_mut());
    let hex = Zeroizing::new(hex::encode(k.as_ref()));
    // Sized exactly: a growing string would leave copies of the secret behind.
    let mut out = Zeroizing::new(String::with_capacity(KEY_FILE_PREFIX.len() + hex.len() + 1));
    out.push_str(KEY_FILE_PREFIX);
    out.push_str(&hex);
    out.push('\n');
    out
}

/// First word of a paper key. The version is in it so a later layout can be told apart.
pub const PAPER_MAGIC: &str = "blockvault-paper-key-v1";
/// Key lines on a paper key: 16 bytes (32 hex digits, 8 groups of 4) each.
const PAPER_LINES: usize = 2;
const PAPER_LINE_BYTES: usize = 32 / PAPER_LINES;
/// Bytes of the whole-key check.
const PAPER_CHECK_BYTES: usize = 8;

/// The master key of one repository, as read back from a paper key.
pub struct PaperKey {
    pub repo_id: [u8; 32],
    pub master: MasterKey,
}

/// Why a paper key was refused. Lines are counted from 1 in the text as given (comments and
/// blank lines included); key lines by the number written at their start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PaperError {
    #[error("it is not a blockvault paper key (line {line} should start with `{PAPER_MAGIC}`)")]
    NotPaper { line: usize },
    #[error(
        "line {line}: it is a paper key of a later format ({found}); this blockvault reads {PAPER_MAGIC}: upgrade blockvault"
    )]
    NewerVersion { line: usize, found: String },
    #[error("line {line}: character {column} is not a hex digit (0-9, a-f)")]
    NotHex { line: usize, column: usize },
    #[error("line {line}: the repository id should be 64 hex digits, found {found}")]
    RepoIdLength { line: usize, found: usize },
    #[error(
        "key line {key_line} (line {line}) should hold 32 hex digits and a 4-digit check, found {found} digits: a digit is missing or extra"
    )]
    KeyLineLength {
        key_line: usize,
        line: usize,
        found: usize,
    },
    #[error(
        "key line {key_line} (line {line}) does not match its check: a digit on that line, or in its check, is mistyped"
    )]
    KeyLineCheck { key_line: usize, line: usize },
    #[error("line {line}: the check should be {} hex digits, found {found}", PAPER_CHECK_BYTES * 2)]
    CheckLength { line: usize, found: usize },
    #[error(
        "the check line does not match the key lines and the repository id: the repository line or the check line is mistyped"
    )]
    WholeCheck,
    #[error("line {line}: unexpected text after the check line")]
    Trailing { line: usize },
    #[error("line {line}: expected {expected}")]
    Unexpected { line: usize, expected: String },
    #[error("{0} is missing")]
    Missing(String),
}

/// CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xffff, no reflection). A line's check
/// is a CRC rather than a truncated hash because a CRC of degree 16 detects every error within
/// 16 consecutive bits for certain: every single mistyped hex digit, and every swap of two
/// neighbouring digits, is caught, not just all but one in 65536 of them.
fn crc16(parts: &[&[u8]]) -> u16 {
    let mut crc: u16 = 0xffff;
    for b in parts.iter().flat_map(|p| p.iter()) {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The check of key line `n` (1-based): the line number is included, so lines written in the
/// wrong order are refused too.
fn paper_line_check(n: usize, bytes: &[u8]) -> u16 {
    crc16(&[&[n as u8], bytes])
}

fn paper_whole_check(repo_id: &[u8; 32], master: &MasterKey) -> [u8; PAPER_CHECK_BYTES] {
    let mut h = blake3::Hasher::new_derive_key(CTX_PAPER_CHECK);
    h.update(repo_id);
    h.update(&master.0);
    let mut out = [0u8; PAPER_CHECK_BYTES];
    out.copy_from_slice(&h.finalize().as_bytes()[..PAPER_CHECK_BYTES]);
    out
}

/// Writes `bytes` as hex in groups of 4 digits separated by single spaces.
fn write_groups(out: &mut String, bytes: &[u8]) {
    use std::fmt::Write;
    for (i, pair) in bytes.chunks(2).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        for b in pair {
            // Formatting a byte goes through a stack buffer, so no heap copy of the key is left.
            let _ = write!(out, "{b:02x}");
        }
    }
}

/// The paper key of `master` in the repository `repo_id`:
///
/// ```text
/// blockvault-paper-key-v1 repository 8081828384858687…9e9f
/// 1: 3f2a 9bc1 0d4e 77aa 12ab 34cd 56ef 7890 (5c1e)
/// 2: 0a1b 2c3d 4e5f 6071 8293 a4b5 c6d7 e8f9 (b02d)
/// check: 9d41 7be2 03c5 aa18
/// ```
///
/// Line `n:` holds bytes 16(n-1)..16n of the master key and, in brackets, its CRC-16 over the
/// byte `n` followed by those 16 bytes. The check is the first 8 bytes of BLAKE3
/// `derive_key("blockvault 2026-11-22 paper key check", repo_id || master key)`.
pub fn paper_encode(master: &MasterKey, repo_id: &[u8; 32]) -> Zeroizing<String> {
    // Reserved up front so the string never reallocates and leaves a copy behind.
    let mut out = Zeroizing::new(String::with_capacity(512));
    out.push_str(PAPER_MAGIC);
    out.push_str(" repository ");
    out.push_str(&hex::encode(repo_id));
    out.push('\n');
    for (i, line) in master.0.chunks(PAPER_LINE_BYTES).enumerate() {
        let n = i + 1;
        out.push_str(&format!("{n}: "));
        write_groups(&mut out, line);
        out.push_str(&format!(" ({:04x})\n", paper_line_check(n, line)));
    }
    out.push_str("check: ");
    write_groups(&mut out, &paper_whole_check(repo_id, master));
    out.push('\n');
    out
}

/// The hex digits of `text` as nibbles, ignoring spaces and the brackets around a check.
/// How many characters of `whole` come before `suffix`, which ends it.
fn chars_before(whole: &str, suffix: &str) -> usize {
    whole[..whole.len() - suffix.len()].chars().count()
}

fn nibbles(text: &str, line: usize, column0: usize) -> Result<Zeroizing<Vec<u8>>, PaperError> {
    let mut out = Zeroizing::new(Vec::with_capacity(text.len()));
    for (i, c) in text.chars().enumerate() {
        if c.is_whitespace() || c == '(' || c == ')' {
            continue;
        }
        let v = c.to_digit(16).ok_or(PaperError::NotHex {
            line,
            column: column0 + i + 1,
        })?;
        out.push(v as u8);
    }
    Ok(out)
}

fn nibbles_to_bytes(n: &[u8], out: &mut [u8]) {
    for (o, pair) in out.iter_mut().zip(n.chunks(2)) {
        *o = (pair[0] << 4) | pair[1];
    }
}

/// Reads a paper key as [`paper_encode`] writes it, typed back by hand or scanned: hex in
/// either case, spaces anywhere, blank lines and lines starting with `#` ignored. Every key
/// line's check and the whole-key check must match.
pub fn paper_decode(text: &str) -> Result<PaperKey, PaperError> {
    let mut repo_id: Option<[u8; 32]> = None;
    let mut master = MasterKey([0u8; 32]);
    let mut next_line = 1;
    let mut checked = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        // Columns count characters, not bytes: a line pasted from a web page or a PDF can
        // start with a no-break space (two bytes in UTF-8).
        let column0 = chars_before(raw, raw.trim_start());
        if repo_id.is_none() {
            let first = t.split_whitespace().next().unwrap_or_default();
            if first != PAPER_MAGIC {
                return Err(match first.strip_prefix("blockvault-paper-key-v") {
                    Some(v) if v.parse::<u32>().is_ok_and(|v| v > 1) => PaperError::NewerVersion {
                        line,
                        found: first.to_string(),
                    },
                    _ => PaperError::NotPaper { line },
                });
            }
            let rest = t[first.len()..].trim_start();
            let rest = rest.strip_prefix("repository").unwrap_or(rest);
            let digits = nibbles(rest, line, column0 + chars_before(t, rest))?;
            if digits.len() != 64 {
                return Err(PaperError::RepoIdLength {
                    line,
                    found: digits.len(),
                });
            }
            let mut id = [0u8; 32];
            nibbles_to_bytes(&digits, &mut id);
            repo_id = Some(id);
            continue;
        }
        if checked {
            return Err(PaperError::Trailing { line });
        }
        let expected = || {
            if next_line <= PAPER_LINES {
                format!("key line {next_line} (`{next_line}: ` and 8 groups of hex digits)")
            } else {
                "the check line (`check: ` and 4 groups of hex digits)".to_string()
            }
        };
        if let Some(rest) = t.strip_prefix("check:") {
            if next_line <= PAPER_LINES {
                return Err(PaperError::Unexpected {
                    line,
                    expected: expected(),
                });
            }
            let digits = nibbles(rest, line, column0 + chars_before(t, rest))?;
            if digits.len() != PAPER_CHECK_BYTES * 2 {
                return Err(PaperError::CheckLength {
                    line,
                    found: digits.len(),
                });
            }
            let mut check = [0u8; PAPER_CHECK_BYTES];
            nibbles_to_bytes(&digits, &mut check);
            let id = repo_id.unwrap_or_default();
            if paper_whole_check(&id, &master) != check {
                return Err(PaperError::WholeCheck);
            }
            checked = true;
            continue;
        }
        let rest = match t.split_once(':') {
            Some((label, rest))
                if next_line <= PAPER_LINES && label.trim().parse() == Ok(next_line) =>
            {
                rest
            }
            _ => {
                return Err(PaperError::Unexpected {
                    line,
                    expected: expected(),
                });
            }
        };
        let digits = nibbles(rest, line, column0 + chars_before(t, rest))?;
        if digits.len() != PAPER_LINE_BYTES * 2 + 4 {
            return Err(PaperError::KeyLineLength {
                key_line: next_line,
                line,
                found: digits.len(),
            });
        }
        let (data, check) = digits.split_at(PAPER_LINE_BYTES * 2);
        let at = (next_line - 1) * PAPER_LINE_BYTES;
        let part = &mut master.0[at..at + PAPER_LINE_BYTES];
        nibbles_to_bytes(data, part);
        let mut written = [0u8; 2];
        nibbles_to_bytes(check, &mut written);
        if paper_line_check(next_line, part) != u16::from_be_bytes(written) {
            return Err(PaperError::KeyLineCheck {
                key_line: next_line,
                line,
            });
        }
        next_line += 1;
    }
    let Some(repo_id) = repo_id else {
        return Err(PaperError::Missing(format!(
            "the first line (`{PAPER_MAGIC} repository ...`)"
        )));
    };
    if next_line <= PAPER_LINES {
        return Err(PaperError::Missing(format!("key line {next_line}")));
    }
    if !checked {
        return Err(PaperError::Missing("the check line".into()));
    }
    Ok(PaperKey { repo_id, master })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Argon2Cost {
        Argon2Cost {
            memory_kib: 256,
            passes: 1,
        }
    }

    #[test]
    fn wrap_unwrap_with_passphrase_and_key_file() {
        let m = MasterKey::random();
        let repo = [9u8; 32];
        let p = Secret::Passphrase(Zeroizing::new("correct horse".into()));
        let obj = wrap(&m, &p, cheap(), "keys/a", &repo, "h", 0).unwrap();
        assert_eq!(unwrap(&obj, &p, "keys/a", &repo).unwrap().0, m.0);
        let wrong = Secret::Passphrase(Zeroizing::new("battery staple".into()));
        assert!(matches!(
            unwrap(&obj, &wrong, "keys/a", &repo),
            Err(KeyError::Wrong)
        ));
        // Renamed or moved to another repository: refused.
        assert!(matches!(
            unwrap(&obj, &p, "keys/b", &repo),
            Err(KeyError::Wrong)
        ));
        assert!(matches!(
            unwrap(&obj, &p, "keys/a", &[8u8; 32]),
            Err(KeyError::Wrong)
        ));

        let file = new_key_file();
        let kf = Secret::KeyFile(parse_key_file(file.as_bytes()).unwrap());
        let obj = wrap(&m, &kf, cheap(), "keys/k", &repo, "h", 0).unwrap();
        assert_eq!(unwrap(&obj, &kf, "keys/k", &repo).unwrap().0, m.0);
        assert!(matches!(
            unwrap(&obj, &p, "keys/k", &repo),
            Err(KeyError::WrongKind)
        ));
    }

    fn sample() -> (MasterKey, [u8; 32]) {
        let mut m = MasterKey([0; 32]);
        for (i, b) in m.0.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        (m, [0x80; 32])
    }

    #[test]
    fn crc16_is_ccitt_false() {
        // The catalogued check value of CRC-16/CCITT-FALSE.
        assert_eq!(crc16(&[b"123456789"]), 0x29b1);
    }

    #[test]
    fn paper_key_round_trips_and_has_the_documented_shape() {
        let (m, repo) = sample();
        let paper = paper_encode(&m, &repo);
        let lines: Vec<&str> = paper.lines().collect();
        assert_eq!(lines.len(), 4, "{}", *paper);
        assert_eq!(
            lines[0],
            format!("{PAPER_MAGIC} repository {}", hex::encode(repo))
        );
        for (i, l) in lines[1..3].iter().enumerate() {
            assert!(l.starts_with(&format!("{}: ", i + 1)), "{l}");
            // "1: " + 8 groups of 4 + " (cccc)"
            assert_eq!(l.split_whitespace().count(), 1 + 8 + 1, "{l}");
        }
        assert!(lines[3].starts_with("check: ") && lines[3].split_whitespace().count() == 5);
        let back = paper_decode(&paper).unwrap();
        assert_eq!(back.master.0, m.0);
        assert_eq!(back.repo_id, repo);

        // Typed back by hand: upper-case hex, other spacing, comments, CRLF line ends.
        let mut loose = String::from("# written down 2026-11-22\r\n\r\n");
        for (i, l) in lines.iter().enumerate() {
            let (head, digits) = match i {
                0 => l.split_at(PAPER_MAGIC.len() + " repository ".len()),
                3 => l.split_at("check: ".len()),
                _ => l.split_at(3),
            };
            loose.push_str(&format!(
                "  {head} {}  \r\n",
                digits.to_uppercase().replace(' ', "  ")
            ));
        }
        let back = paper_decode(&loose).unwrap();
        assert_eq!(back.master.0, m.0);
    }

    /// Every single mistyped digit of a key line is caught and names that line: guaranteed by
    /// the CRC, so this holds for every key, not just this one.
    #[test]
    fn every_mistyped_key_digit_names_its_line() {
        let (m, repo) = sample();
        let paper = paper_encode(&m, &repo);
        let lines: Vec<&str> = paper.lines().collect();
        for key_line in 1..=PAPER_LINES {
            let l = lines[key_line];
            for (at, c) in l.char_indices().skip(3) {
                let Some(v) = c.to_digit(16) else { continue };
                for other in (0..16).filter(|o| *o != v) {
                    let mut changed: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
                    let d = char::from_digit(other, 16).unwrap();
                    changed[key_line].replace_range(at..at + 1, &d.to_string());
                    let err = paper_decode(&changed.join("\n")).err();
                    assert_eq!(
                        err,
                        Some(PaperError::KeyLineCheck {
                            key_line,
                            line: key_line + 1
                        }),
                        "{}",
                        changed[key_line]
                    );
                }
            }
        }
    }

    #[test]
    fn swapped_neighbours_and_swapped_lines_are_caught() {
        let (m, repo) = sample();
        let paper = paper_encode(&m, &repo);
        let lines: Vec<String> = paper.lines().map(str::to_string).collect();
        let digits: Vec<usize> = lines[1]
            .char_indices()
            .skip(3)
            .filter(|(_, c)| c.is_ascii_hexdigit())
            .map(|(i, _)| i)
            .collect();
        for w in digits.windows(2) {
            let mut l = lines[1].clone().into_bytes();
            if l[w[0]] == l[w[1]] {
                continue;
            }
            l.swap(w[0], w[1]);
            let mut changed = lines.clone();
            changed[1] = String::from_utf8(l).unwrap();
            assert!(matches!(
                paper_decode(&changed.join("\n")),
                Err(PaperError::KeyLineCheck { key_line: 1, .. })
            ));
        }
        // The two key lines exchanged, numbers and all: refused (the number is in the check).
        let mut changed = lines.clone();
        let (one, two) = (lines[1][3..].to_string(), lines[2][3..].to_string());
        changed[1] = format!("1: {two}");
        changed[2] = format!("2: {one}");
        assert!(matches!(
            paper_decode(&changed.join("\n")),
            Err(PaperError::KeyLineCheck { key_line: 1, .. })
        ));
    }

    #[test]
    fn damaged_paper_keys_are_refused_with_a_reason() {
        let (m, repo) = sample();
        let paper = paper_encode(&m, &repo);
        let lines: Vec<String> = paper.lines().map(str::to_string).collect();
        let with = |i: usize, new: &str| {
            let mut l = lines.clone();
            l[i] = new.to_string();
            paper_decode(&l.join("\n")).err()
        };
        // A typo in the repository id or in the check line: the whole-key check fails.
        let typo = |l: &str| {
            let mut l = l.to_string();
            let last = l.pop().unwrap();
            l.push(if last == '0' { '1' } else { '0' });
            l
        };
        assert_eq!(with(0, &typo(&lines[0])), Some(PaperError::WholeCheck));
        assert_eq!(with(3, &typo(&lines[3])), Some(PaperError::WholeCheck));
        // A digit left out.
        let mut short = lines[2].clone();
        short.remove(3);
        assert_eq!(
            with(2, &short),
            Some(PaperError::KeyLineLength {
                key_line: 2,
                line: 3,
                found: 35
            })
        );
        // A letter that is not hex, with its column.
        let mut o = lines[1].clone();
        o.replace_range(3..4, "O");
        assert_eq!(with(1, &o), Some(PaperError::NotHex { line: 2, column: 4 }));
        // Not a paper key, a later version, lines missing or extra.
        assert_eq!(
            paper_decode("hello\n").err(),
            Some(PaperError::NotPaper { line: 1 })
        );
        assert!(matches!(
            with(0, &lines[0].replace("-v1", "-v2")),
            Some(PaperError::NewerVersion { line: 1, .. })
        ));
        assert!(matches!(
            paper_decode(
                &[&lines[0], &lines[1], &lines[3]]
                    .map(String::as_str)
                    .join("\n")
            ),
            Err(PaperError::Unexpected { line: 3, .. })
        ));
        assert_eq!(
            paper_decode(&lines[..3].join("\n")).err(),
            Some(PaperError::Missing("the check line".into()))
        );
        assert_eq!(
            paper_decode(&format!("{}\nmore", lines.join("\n"))).err(),
            Some(PaperError::Trailing { line: 5 })
        );
        assert!(matches!(
            paper_decode("").err(),
            Some(PaperError::Missing(_))
        ));
    }

    /// Found by the paper_key fuzz target: a line starting with a no-break space (as pasted
    /// from a web page) put the column of a wrong character one too far right, onto a valid
    /// digit, because the indent was counted in bytes.
    #[test]
    fn a_non_hex_character_is_named_by_its_column_after_a_no_break_space() {
        let (m, repo) = sample();
        let paper = paper_encode(&m, &repo);
        let mut lines: Vec<String> = paper.lines().map(str::to_string).collect();
        lines[1] = format!("\u{a0}\u{a0}1: x{}", &lines[1][4..]);
        let err = paper_decode(&lines.join("\n")).err();
        assert_eq!(err, Some(PaperError::NotHex { line: 2, column: 6 }));
        assert_eq!(lines[1].chars().nth(5), Some('x'));
        // And in the first line, after the magic word.
        let first = format!(
            "\u{a0}{PAPER_MAGIC} repository \u{e9}{}",
            &lines[0][PAPER_MAGIC.len() + 12..]
        );
        let err = paper_decode(&[first.clone(), lines[1].clone()].join("\n")).err();
        let Some(PaperError::NotHex { line: 1, column }) = err else {
            panic!("{err:?}");
        };
        assert_eq!(first.chars().nth(column - 1), Some('\u{e9}'));
    }

    /// The paper key of the format-spec's test repository A: pins the layout and both checks,
    /// so a change to either is a deliberate one.
    #[test]
    fn paper_key_of_a_known_master_key() {
        let m = MasterKey(std::array::from_fn(|i| i as u8));
        let repo: [u8; 32] = std::array::from_fn(|i| 0x80 + i as u8);
        let paper = paper_encode(&m, &repo);
        assert_eq!(paper_decode(&paper).unwrap().master.0, m.0);
        let expected = "\
blockvault-paper-key-v1 repository 808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f
1: 0001 0203 0405 0607 0809 0a0b 0c0d 0e0f (8633)
2: 1011 1213 1415 1617 1819 1a1b 1c1d 1e1f (f244)
check: 9fd8 338b a990 1864
";
        assert_eq!(*paper, expected, "got:\n{}", *paper);
    }

    #[test]
    fn hostile_argon2_cost_is_refused_before_allocating() {
        let obj = KeyObject {
            kdf: Kdf::Argon2id {
                memory_kib: u32::MAX,
                passes: 1,
                lanes: 1,
                salt: [0; 16],
            },
            created: 0,
            host: String::new(),
            nonce: [0; 24],
            sealed: vec![0; 48],
        };
        let p = Secret::Passphrase(Zeroizing::new("x".into()));
        assert!(matches!(
            unwrap(&obj, &p, "keys/a", &[0; 32]),
            Err(KeyError::Format(_))
        ));
    }
}
