//! The test vectors in `format-spec/vectors/`: proof that `format-spec/README.md` and the code
//! describe the same bytes.
//!
//! Four independent checks, so that no single mistake can hide another:
//! - the committed files are exactly what the generator below makes (a silent change to any
//!   encoding, key derivation or sealing step changes a byte and fails here);
//! - the library opens every committed file with the documented secrets, decodes the documented
//!   values, and re-seals them with the file's own nonce to the same bytes;
//! - a small reader written here from the spec alone (raw BLAKE3, XChaCha20-Poly1305, Argon2id,
//!   zstd and a hand-written postcard decoder — no blockvault code) opens and decodes them too;
//! - a few bytes (magic, version, kind, cipher, codec) are compared with literal values.
//!
//! Regenerate the vectors after a deliberate format change (and bump the format version):
//!
//! ```text
//! BLOCKVAULT_WRITE_VECTORS=1 cargo test --test tests format_vectors::regenerate -- --ignored
//! ```

use blockvault::chunk_id::ChunkId;
use blockvault::chunker::{CdcChunker, Chunking};
use blockvault::format::config::{ChunkerDefaults, Config, Encryption};
use blockvault::format::envelope::{HEADER_LEN, NONCE_LEN};
use blockvault::format::key::{Kdf, KeyObject};
use blockvault::format::lock::{LockInfo, LockMode};
use blockvault::format::pointer::CurrentPointer;
use blockvault::format::{
    Cipher, Codec, FORMAT_VERSION, Header, Kind, MAGIC, decode_exact, encode,
};
use blockvault::keys::{self, Keys, Secret};
use blockvault::layout;
use blockvault::manifest::{BackupStats, ChunkRef, Manifest, SourceInfo, SourceKind};
use blockvault::repo::Repo;
use blockvault::seal::{self, MAX_CHUNK_LEN, MAX_METADATA_LEN};
use blockvault::store::LocalDir;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

// ---------------------------------------------------------------------------------------------
// The fixed inputs. Everything the README in format-spec/vectors/ lists comes from here.

/// `n` bytes counting up from `start` (wrapping): easy to recognise in a hex dump.
fn counting<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn master_key() -> [u8; 32] {
    counting(0x00)
}
fn repo_id_a() -> [u8; 32] {
    counting(0x80)
}
fn repo_id_b() -> [u8; 32] {
    counting(0x40)
}

const PASSPHRASE: &str = "correct horse battery staple";
const ARGON2_MEMORY_KIB: u32 = 256;
const ARGON2_PASSES: u32 = 1;
const ARGON2_LANES: u32 = 1;
fn passphrase_salt() -> [u8; 16] {
    counting(0x20)
}
fn passphrase_wrap_nonce() -> [u8; 24] {
    counting(0x30)
}
fn key_file_secret() -> [u8; 32] {
    counting(0xe0)
}
fn key_file_salt() -> [u8; 16] {
    counting(0x50)
}
fn key_file_wrap_nonce() -> [u8; 24] {
    counting(0x60)
}
fn chunk_zstd_nonce() -> [u8; 24] {
    counting(0xa0)
}
fn chunk_stored_nonce() -> [u8; 24] {
    counting(0xb8)
}
fn manifest_nonce() -> [u8; 24] {
    counting(0xc0)
}
fn current_nonce() -> [u8; 24] {
    counting(0xd8)
}
fn lock_nonce() -> [u8; 24] {
    counting(0xf0)
}

const PASSPHRASE_KEY_ID: &str = "00112233445566778899aabbccddeeff";
const KEY_FILE_KEY_ID: &str = "ffeeddccbbaa99887766554433221100";
const LOCK_ID: &str = "0123456789abcdef0123456789abcdef";
const HOST: &str = "vector-host";
/// 2026-11-22T13:05:07Z
const TIME: i64 = 1_795_352_707;
const ZSTD_LEVEL: i32 = 3;

const SERIES_A: &str = "tank/vm-101";
const VERSION_A: &str = "2026-11-22T130507Z";
const PARENT_A: &str = "2026-11-21T130507Z";
const SERIES_B: &str = ".pg dump";
const VERSION_B: &str = "2026-11-22T130507Z-2";

const RAW_CHUNK_LEN: usize = 1024;
const FIXED_SIZE: u32 = 65536;
const CDC: (u32, u32, u32) = (4096, 16384, 65536);
const CDC_INPUT_LEN: usize = 256 << 10;

/// BLAKE3 derive_key contexts, copied from src/keys.rs on purpose: if one changes there, every
/// repository's ids and keys change, and this copy makes that fail loudly.
const CTX_ID: &str = "blockvault 2026-11-22 chunk id";
const CTX_SEAL: &str = "blockvault 2026-11-22 object sealing";
const CTX_GEAR: &str = "blockvault 2026-11-22 content-defined chunking seed";
const CTX_UNENCRYPTED_ID: &str = "blockvault 2026-11-22 unencrypted repository chunk id";
const CTX_KEY_FILE: &str = "blockvault 2026-11-22 key file wrapping";

fn key_file_contents() -> String {
    format!(
        "{}{}\n",
        keys::KEY_FILE_PREFIX,
        hex::encode(key_file_secret())
    )
}

/// 64 KiB of text: `line 00000 of the compressible test chunk\n`, `line 00001 ...`, cut at
/// 65536 bytes.
fn compressible_plaintext() -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < FIXED_SIZE as usize {
        out.extend_from_slice(format!("line {i:05} of the compressible test chunk\n").as_bytes());
        i += 1;
    }
    out.truncate(FIXED_SIZE as usize);
    out
}

fn xof(label: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(label.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

const RAW_LABEL: &str = "blockvault format test vector: raw chunk";
const CDC_LABEL: &str = "blockvault format test vector: cdc input";
const PLAIN_CHUNK: &[u8] = b"blockvault format test vector: an unencrypted chunk\n";

fn raw_plaintext() -> Vec<u8> {
    xof(RAW_LABEL, RAW_CHUNK_LEN)
}

fn options_a() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn options_b() -> BTreeMap<String, String> {
    BTreeMap::from([("note".to_string(), "test vector".to_string())])
}

fn chunker_defaults() -> ChunkerDefaults {
    ChunkerDefaults {
        fixed_size: FIXED_SIZE,
        cdc_min: CDC.0,
        cdc_avg: CDC.1,
        cdc_max: CDC.2,
    }
}

fn config_a() -> Config {
    Config {
        repo_id: repo_id_a(),
        created: TIME - 86_400,
        encryption: Encryption::XChaCha20Poly1305,
        chunker: chunker_defaults(),
        zstd_level: ZSTD_LEVEL,
        options: options_a(),
    }
}

fn config_b() -> Config {
    Config {
        repo_id: repo_id_b(),
        created: TIME - 86_400,
        encryption: Encryption::None,
        chunker: chunker_defaults(),
        zstd_level: ZSTD_LEVEL,
        options: options_b(),
    }
}

fn key_object_passphrase() -> KeyObject {
    let kdf = Kdf::Argon2id {
        memory_kib: ARGON2_MEMORY_KIB,
        passes: ARGON2_PASSES,
        lanes: ARGON2_LANES,
        salt: passphrase_salt(),
    };
    let kek = spec::kek_argon2id(
        PASSPHRASE.as_bytes(),
        ARGON2_MEMORY_KIB,
        ARGON2_PASSES,
        ARGON2_LANES,
        &passphrase_salt(),
    );
    KeyObject {
        kdf,
        created: TIME - 86_400,
        host: HOST.into(),
        nonce: passphrase_wrap_nonce(),
        sealed: spec::wrap_master(
            &kek,
            &passphrase_wrap_nonce(),
            &layout::key(PASSPHRASE_KEY_ID),
            &repo_id_a(),
            &master_key(),
        ),
    }
}

fn key_object_key_file() -> KeyObject {
    let kek = spec::kek_key_file(&key_file_secret(), &key_file_salt());
    KeyObject {
        kdf: Kdf::KeyFile {
            salt: key_file_salt(),
        },
        created: TIME - 3_600,
        host: HOST.into(),
        nonce: key_file_wrap_nonce(),
        sealed: spec::wrap_master(
            &kek,
            &key_file_wrap_nonce(),
            &layout::key(KEY_FILE_KEY_ID),
            &repo_id_a(),
            &master_key(),
        ),
    }
}

fn passphrase() -> Secret {
    Secret::Passphrase(Zeroizing::new(PASSPHRASE.to_string()))
}

/// The working keys of repository A, obtained the only way outside the crate can: by
/// unwrapping the master key from the passphrase key object.
fn keys_a() -> Keys {
    let master = keys::unwrap(
        &key_object_passphrase(),
        &passphrase(),
        &layout::key(PASSPHRASE_KEY_ID),
        &repo_id_a(),
    )
    .expect("the passphrase key object opens");
    Keys::from_master(&master)
}

fn keys_b() -> Keys {
    Keys::unencrypted(&repo_id_b())
}

fn manifest_a(id_zstd: ChunkId, id_stored: ChunkId, bytes_new_stored: u64) -> Manifest {
    Manifest {
        series: SERIES_A.into(),
        version: VERSION_A.into(),
        time: TIME,
        host: HOST.into(),
        source: SourceInfo {
            kind: SourceKind::BlockDevice,
            description: "/dev/zvol/tank/vm-101".into(),
        },
        size: 2 * u64::from(FIXED_SIZE) + RAW_CHUNK_LEN as u64,
        chunking: Chunking::Fixed { size: FIXED_SIZE },
        chunks: vec![
            ChunkRef::Data {
                id: id_zstd,
                len: FIXED_SIZE,
            },
            ChunkRef::Zero { len: FIXED_SIZE },
            ChunkRef::Data {
                id: id_stored,
                len: RAW_CHUNK_LEN as u32,
            },
        ],
        parent: Some(PARENT_A.into()),
        stats: BackupStats {
            chunks_new: 2,
            chunks_reused: 0,
            chunks_zero: 1,
            bytes_new: u64::from(FIXED_SIZE) + RAW_CHUNK_LEN as u64,
            bytes_new_stored,
            duration_ms: 1234,
        },
        extra: BTreeMap::from([("comment".into(), "format-spec test vector".into())]),
    }
}

fn manifest_b(id: ChunkId) -> Manifest {
    Manifest {
        series: SERIES_B.into(),
        version: VERSION_B.into(),
        time: TIME,
        host: HOST.into(),
        source: SourceInfo {
            kind: SourceKind::Stdin,
            description: "-".into(),
        },
        size: PLAIN_CHUNK.len() as u64,
        chunking: Chunking::Cdc {
            min: CDC.0,
            avg: CDC.1,
            max: CDC.2,
        },
        chunks: vec![ChunkRef::Data {
            id,
            len: PLAIN_CHUNK.len() as u32,
        }],
        parent: None,
        stats: BackupStats::default(),
        extra: BTreeMap::new(),
    }
}

fn current_a(manifest_digest: [u8; 32]) -> CurrentPointer {
    CurrentPointer {
        series: SERIES_A.into(),
        version: VERSION_A.into(),
        manifest_digest,
        written: TIME + 3,
    }
}

fn lock_a() -> LockInfo {
    LockInfo {
        mode: LockMode::Shared,
        host: HOST.into(),
        pid: 4242,
        purpose: format!("backup of {SERIES_A}"),
        created: TIME - 7,
        heartbeat: TIME + 113,
    }
}

// ---------------------------------------------------------------------------------------------
// The generator: every vector file, in memory.

struct Vectors {
    files: BTreeMap<String, Vec<u8>>,
    id_zstd: ChunkId,
    id_stored: ChunkId,
    id_plain: ChunkId,
    manifest_digest: [u8; 32],
    cdc_lengths: Vec<usize>,
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("format-spec/vectors")
}

fn build() -> Vectors {
    let ka = keys_a();
    let kb = keys_b();
    let sk = ka.seal.as_ref();
    let mut files = BTreeMap::new();
    let mut put = |path: String, bytes: Vec<u8>| {
        assert!(files.insert(path, bytes).is_none());
    };

    let cfg = layout::CONFIG;
    put(
        format!("repo-a/{cfg}"),
        seal::seal(Kind::Config, None, cfg, &encode(&config_a()), None),
    );
    put(
        format!("repo-b/{cfg}"),
        seal::seal(Kind::Config, None, cfg, &encode(&config_b()), None),
    );
    for (id, obj) in [
        (PASSPHRASE_KEY_ID, key_object_passphrase()),
        (KEY_FILE_KEY_ID, key_object_key_file()),
    ] {
        let name = layout::key(id);
        put(
            format!("repo-a/{name}"),
            seal::seal(Kind::Key, None, &name, &encode(&obj), None),
        );
    }
    put("repo-a.key".into(), key_file_contents().into_bytes());
    // The files are compared byte for byte: git must not convert line endings.
    put(
        ".gitattributes".into(),
        b"# Generated by tests/format_vectors.rs: no line-ending conversion.\n* -text\n".to_vec(),
    );

    let zstd_plain = compressible_plaintext();
    let id_zstd = ka.id.id_of(&zstd_plain);
    let name = layout::chunk(&id_zstd);
    let zstd_obj = seal::seal_with_nonce(
        Kind::Chunk,
        sk,
        &name,
        &zstd_plain,
        Some(ZSTD_LEVEL),
        &chunk_zstd_nonce(),
    );
    let stored_plain = raw_plaintext();
    let id_stored = ka.id.id_of(&stored_plain);
    let stored_name = layout::chunk(&id_stored);
    let stored_obj = seal::seal_with_nonce(
        Kind::Chunk,
        sk,
        &stored_name,
        &stored_plain,
        Some(ZSTD_LEVEL),
        &chunk_stored_nonce(),
    );
    let bytes_new_stored = (zstd_obj.len() + stored_obj.len()) as u64;
    put(format!("repo-a/{name}"), zstd_obj);
    put(format!("repo-a/{stored_name}"), stored_obj);

    let m = manifest_a(id_zstd, id_stored, bytes_new_stored);
    let name = layout::manifest(SERIES_A, VERSION_A);
    let manifest_obj = seal::seal_with_nonce(
        Kind::Manifest,
        sk,
        &name,
        &m.encode(),
        Some(ZSTD_LEVEL),
        &manifest_nonce(),
    );
    let manifest_digest = *blake3::hash(&manifest_obj).as_bytes();
    put(format!("repo-a/{name}"), manifest_obj);

    let name = layout::current(SERIES_A);
    put(
        format!("repo-a/{name}"),
        seal::seal_with_nonce(
            Kind::Current,
            sk,
            &name,
            &encode(&current_a(manifest_digest)),
            None,
            &current_nonce(),
        ),
    );
    let name = layout::lock(LOCK_ID);
    put(
        format!("repo-a/{name}"),
        seal::seal_with_nonce(
            Kind::Lock,
            sk,
            &name,
            &encode(&lock_a()),
            None,
            &lock_nonce(),
        ),
    );

    let id_plain = kb.id.id_of(PLAIN_CHUNK);
    let name = layout::chunk(&id_plain);
    put(
        format!("repo-b/{name}"),
        seal::seal(Kind::Chunk, None, &name, PLAIN_CHUNK, Some(ZSTD_LEVEL)),
    );
    let name = layout::manifest(SERIES_B, VERSION_B);
    put(
        format!("repo-b/{name}"),
        seal::seal(
            Kind::Manifest,
            None,
            &name,
            &manifest_b(id_plain).encode(),
            Some(ZSTD_LEVEL),
        ),
    );

    let gear = fastcdc::v2020::get_gear_with_seed(0).0;
    let gear_text: String = gear.iter().map(|g| format!("{g:016x}\n")).collect();
    put("fastcdc-gear.txt".into(), gear_text.into_bytes());

    let cdc_input = xof(CDC_LABEL, CDC_INPUT_LEN);
    let cdc_lengths: Vec<usize> =
        CdcChunker::new(&cdc_input[..], CDC.0, CDC.1, CDC.2, ka.gear_seed)
            .map(|c| c.expect("reading a slice cannot fail").data.len())
            .collect();
    let mut cdc_text = format!(
        "# FastCDC cut vector (see README.md): chunk lengths, one per line.\n\
         # input: first {CDC_INPUT_LEN} bytes of the BLAKE3 XOF of {CDC_LABEL:?}\n\
         # min {} avg {} max {}, gear seed 0x{:016x} (repository A)\n",
        CDC.0, CDC.1, CDC.2, ka.gear_seed
    );
    for l in &cdc_lengths {
        cdc_text.push_str(&format!("{l}\n"));
    }
    put("cdc-cuts.txt".into(), cdc_text.into_bytes());

    let mut v = Vectors {
        files,
        id_zstd,
        id_stored,
        id_plain,
        manifest_digest,
        cdc_lengths,
    };
    let readme = readme(&v);
    v.files.insert("README.md".into(), readme.into_bytes());
    v
}

fn hex_of(b: &[u8]) -> String {
    hex::encode(b)
}

/// The README of the vectors directory: generated, so it cannot drift from the files.
fn readme(v: &Vectors) -> String {
    let m = master_key();
    let id_key = blake3::derive_key(CTX_ID, &m);
    let seal_key = blake3::derive_key(CTX_SEAL, &m);
    let gear_a = blake3::derive_key(CTX_GEAR, &m);
    let id_key_b = blake3::derive_key(CTX_UNENCRYPTED_ID, &repo_id_b());
    let gear_b = blake3::derive_key(CTX_GEAR, &repo_id_b());
    let pass_kek = spec::kek_argon2id(
        PASSPHRASE.as_bytes(),
        ARGON2_MEMORY_KIB,
        ARGON2_PASSES,
        ARGON2_LANES,
        &passphrase_salt(),
    );
    let file_kek = spec::kek_key_file(&key_file_secret(), &key_file_salt());
    let codec = |path: &str| match v.files[path][7] {
        0 => "stored",
        1 => "zstd",
        _ => "?",
    };
    let row = |path: String, what: &str| {
        let kind = match v.files[&path][5] {
            1 => "config",
            2 => "key",
            3 => "chunk",
            4 => "manifest",
            5 => "current",
            6 => "lock",
            _ => "?",
        };
        let cipher = if v.files[&path][6] == 1 {
            "XChaCha20-Poly1305"
        } else {
            "none (BLAKE3)"
        };
        let name = path.split_once('/').map(|(_, n)| n).unwrap_or(&path);
        format!(
            "| `{path}` | `{name}` | {kind} ({}) | {cipher} | {} | {} | {what} |\n",
            v.files[&path][5],
            codec(&path),
            v.files[&path].len()
        )
    };
    let ch = |id: &ChunkId| layout::chunk(id);
    let mut table = String::new();
    table += &row("repo-a/config".into(), "config of repository A (encrypted)");
    table += &row(
        format!("repo-a/keys/{PASSPHRASE_KEY_ID}"),
        "master key under the passphrase (Argon2id)",
    );
    table += &row(
        format!("repo-a/keys/{KEY_FILE_KEY_ID}"),
        "master key under the key file `repo-a.key`",
    );
    table += &row(
        format!("repo-a/{}", ch(&v.id_zstd)),
        "compressible chunk: zstd, then sealed",
    );
    table += &row(
        format!("repo-a/{}", ch(&v.id_stored)),
        "incompressible chunk: stored raw, then sealed",
    );
    table += &row(
        format!("repo-a/{}", layout::manifest(SERIES_A, VERSION_A)),
        "manifest of a block device version",
    );
    table += &row(
        format!("repo-a/{}", layout::current(SERIES_A)),
        "current pointer to that manifest",
    );
    table += &row(format!("repo-a/{}", layout::lock(LOCK_ID)), "a shared lock");
    table += &row(
        "repo-b/config".into(),
        "config of repository B (unencrypted)",
    );
    table += &row(
        format!("repo-b/{}", ch(&v.id_plain)),
        "chunk of an unencrypted repository",
    );
    table += &row(
        format!("repo-b/{}", layout::manifest(SERIES_B, VERSION_B)),
        "manifest of a stream version (FastCDC)",
    );

    format!(
        r#"# blockvault format test vectors

Generated by `tests/format_vectors.rs`; do not edit by hand. Every file here is checked by
`cargo test --test tests format_vectors`: the library opens it with the secrets below, an
independent reader written from `../README.md` opens it too, and re-sealing with the same
nonce reproduces it byte for byte. After a deliberate format change, regenerate with

```
BLOCKVAULT_WRITE_VECTORS=1 cargo test --test tests format_vectors::regenerate -- --ignored
```

`repo-a/` and `repo-b/` are laid out exactly like repositories in a local directory, so the
object name of each file is its path below `repo-a/` or `repo-b/`. Read-only commands open
them: `blockvault --repo format-spec/vectors/repo-a list` (with the passphrase below in
`BLOCKVAULT_PASSWORD`, or `--key-file format-spec/vectors/repo-a.key`). `backup` and `restore`
take a lock, which writes into the directory: use a copy for those. Byte strings are in hex.

## Repository A (encrypted)

| input | value |
|---|---|
| repository id | `{repo_a}` |
| master key | `{master}` |
| chunk id key = derive_key("{CTX_ID}", master) | `{id_key}` |
| sealing key = derive_key("{CTX_SEAL}", master) | `{seal_key}` |
| gear seed = first 8 bytes, little-endian, of derive_key("{CTX_GEAR}", master) | `{gear_a_full}` → `0x{gear_a:016x}` |
| passphrase (UTF-8, no newline) | `{PASSPHRASE}` |
| Argon2id memory / passes / lanes | {ARGON2_MEMORY_KIB} KiB / {ARGON2_PASSES} / {ARGON2_LANES} |
| Argon2id salt | `{pass_salt}` |
| key-encryption key from the passphrase | `{pass_kek}` |
| nonce wrapping the master key (passphrase) | `{pass_nonce}` |
| key file `repo-a.key` (one line) | `{key_file}` |
| key file secret (the 32 bytes after the prefix) | `{kf_secret}` |
| key file salt | `{kf_salt}` |
| key-encryption key from the key file | `{file_kek}` |
| nonce wrapping the master key (key file) | `{kf_nonce}` |
| nonce of the zstd chunk | `{n_zstd}` |
| nonce of the stored chunk | `{n_stored}` |
| nonce of the manifest | `{n_manifest}` |
| nonce of the current pointer | `{n_current}` |
| nonce of the lock | `{n_lock}` |
| BLAKE3 of the manifest object (`manifest_digest`) | `{digest}` |

## Repository B (unencrypted)

| input | value |
|---|---|
| repository id | `{repo_b}` |
| chunk id key = derive_key("{CTX_UNENCRYPTED_ID}", repository id) | `{id_key_b}` |
| gear seed = first 8 bytes, little-endian, of derive_key("{CTX_GEAR}", repository id) | `{gear_b_full}` → `0x{gear_b:016x}` |

Nothing secret is needed: every object is checked with its BLAKE3 checksum only.

## Files

| file | object name | kind (header byte 5) | cipher | codec | bytes | what |
|---|---|---|---|---|---|---|
{table}
Chunk plaintexts:
- zstd chunk (65536 bytes): the lines `line 00000 of the compressible test chunk\n`,
  `line 00001 of the compressible test chunk\n`, ... concatenated and cut at 65536 bytes.
- stored chunk ({RAW_CHUNK_LEN} bytes): the first {RAW_CHUNK_LEN} bytes of the BLAKE3 XOF output
  of the ASCII string `{RAW_LABEL}`.
- repository B chunk ({plain_len} bytes): the ASCII text `blockvault format test vector: an
  unencrypted chunk` followed by one newline.

Decoded values (all times are Unix seconds; {TIME} is 2026-11-22T13:05:07Z):
- configs: repository id as above, `created` {cfg_created}, chunker defaults fixed {FIXED_SIZE},
  FastCDC {cdc_min}/{cdc_avg}/{cdc_max}, zstd level {ZSTD_LEVEL}; A is `XChaCha20Poly1305` with no
  options, B is `None` with the option `note` = `test vector`.
- key objects: host `{HOST}`, created {kp_created} (passphrase) and {kf_created} (key file).
- manifest A: series `{SERIES_A}`, version `{VERSION_A}`, time {TIME}, host `{HOST}`, source
  BlockDevice `/dev/zvol/tank/vm-101`, size {size_a}, Fixed {FIXED_SIZE}, chunks: Data (zstd chunk,
  65536), Zero 65536, Data (stored chunk, {RAW_CHUNK_LEN}); parent `{PARENT_A}`; stats 2 new, 0
  reused, 1 zero, {bytes_new} bytes new, {bytes_new_stored} bytes stored, 1234 ms; extra `comment` =
  `format-spec test vector`.
- manifest B: series `{SERIES_B}` (escaped `{esc_b}`), version `{VERSION_B}`, time {TIME}, host
  `{HOST}`, source Stdin `-`, size {plain_len}, Cdc {cdc_min}/{cdc_avg}/{cdc_max}, one Data chunk, no
  parent, all stats 0, no extra.
- current pointer: series `{SERIES_A}`, version `{VERSION_A}`, manifest digest as above, written
  {written}.
- lock: Shared, host `{HOST}`, pid 4242, purpose `backup of {SERIES_A}`, created {lock_created},
  heartbeat {lock_heartbeat}.

## Chunking vectors

- `fastcdc-gear.txt`: the 256 base gear values (FastCDC 2020), one 64-bit value per line in hex,
  for byte values 0 to 255 in order.
- `cdc-cuts.txt`: the chunk lengths FastCDC (min {cdc_min}, avg {cdc_avg}, max {cdc_max},
  normalisation level 1) produces from the first {CDC_INPUT_LEN} bytes of the BLAKE3 XOF of the
  ASCII string `{CDC_LABEL}`, with repository A's gear seed: {n_cuts} chunks.
"#,
        repo_a = hex_of(&repo_id_a()),
        master = hex_of(&m),
        id_key = hex_of(&id_key),
        seal_key = hex_of(&seal_key),
        gear_a_full = hex_of(&gear_a),
        gear_a = u64::from_le_bytes(gear_a[..8].try_into().unwrap()),
        pass_salt = hex_of(&passphrase_salt()),
        pass_kek = hex_of(&pass_kek),
        pass_nonce = hex_of(&passphrase_wrap_nonce()),
        key_file = key_file_contents().trim_end(),
        kf_secret = hex_of(&key_file_secret()),
        kf_salt = hex_of(&key_file_salt()),
        file_kek = hex_of(&file_kek),
        kf_nonce = hex_of(&key_file_wrap_nonce()),
        n_zstd = hex_of(&chunk_zstd_nonce()),
        n_stored = hex_of(&chunk_stored_nonce()),
        n_manifest = hex_of(&manifest_nonce()),
        n_current = hex_of(&current_nonce()),
        n_lock = hex_of(&lock_nonce()),
        digest = hex_of(&v.manifest_digest),
        repo_b = hex_of(&repo_id_b()),
        id_key_b = hex_of(&id_key_b),
        gear_b_full = hex_of(&gear_b),
        gear_b = u64::from_le_bytes(gear_b[..8].try_into().unwrap()),
        plain_len = PLAIN_CHUNK.len(),
        cfg_created = config_a().created,
        cdc_min = CDC.0,
        cdc_avg = CDC.1,
        cdc_max = CDC.2,
        kp_created = key_object_passphrase().created,
        kf_created = key_object_key_file().created,
        size_a = manifest_a(v.id_zstd, v.id_stored, 0).size,
        bytes_new = manifest_a(v.id_zstd, v.id_stored, 0).stats.bytes_new,
        bytes_new_stored = stored_total(v),
        esc_b = layout::escape_series(SERIES_B),
        written = current_a(v.manifest_digest).written,
        lock_created = lock_a().created,
        lock_heartbeat = lock_a().heartbeat,
        n_cuts = v.cdc_lengths.len(),
    )
}

fn stored_total(v: &Vectors) -> u64 {
    (v.files[&format!("repo-a/{}", layout::chunk(&v.id_zstd))].len()
        + v.files[&format!("repo-a/{}", layout::chunk(&v.id_stored))].len()) as u64
}

/// Every file under `dir`, by path relative to it.
fn committed_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn committed(path: &str) -> Vec<u8> {
    let p = vectors_dir().join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The nonce of a committed encrypted object, read back from it.
fn nonce_of(bytes: &[u8]) -> [u8; NONCE_LEN] {
    bytes[HEADER_LEN..HEADER_LEN + NONCE_LEN]
        .try_into()
        .unwrap()
}

const REGENERATE: &str =
    "BLOCKVAULT_WRITE_VECTORS=1 cargo test --test tests format_vectors::regenerate -- --ignored";

#[test]
#[ignore = "writes format-spec/vectors/; run with BLOCKVAULT_WRITE_VECTORS=1"]
fn regenerate() {
    if std::env::var_os("BLOCKVAULT_WRITE_VECTORS").is_none() {
        eprintln!("set BLOCKVAULT_WRITE_VECTORS=1 to rewrite format-spec/vectors/");
        return;
    }
    let dir = vectors_dir();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    for (path, bytes) in build().files {
        let p = dir.join(&path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Checks.

#[test]
fn committed_vectors_are_exactly_what_the_generator_makes() {
    let made = build().files;
    let found = committed_files(&vectors_dir());
    let made_names: BTreeSet<&String> = made.keys().collect();
    let found_names: BTreeSet<&String> = found.keys().collect();
    assert_eq!(
        found_names, made_names,
        "the set of vector files changed; if deliberate, run {REGENERATE}"
    );
    for (path, bytes) in &made {
        assert!(
            found[path] == *bytes,
            "format-spec/vectors/{path} differs from what the code writes today. Either the \
             stored format changed (bump FORMAT_VERSION, update format-spec/README.md, then run \
             {REGENERATE}), or only the zstd library's output changed (check that the old \
             vector still opens, then regenerate)"
        );
    }
}

#[test]
fn header_bytes_are_the_ones_the_spec_lists() {
    assert_eq!(&MAGIC, b"BVLT");
    assert_eq!(MAGIC, [0x42, 0x56, 0x4c, 0x54]);
    assert_eq!(FORMAT_VERSION, 1);
    assert_eq!(HEADER_LEN, 8);
    assert_eq!(NONCE_LEN, 24);
    for (kind, byte) in [
        (Kind::Config, 1u8),
        (Kind::Key, 2),
        (Kind::Chunk, 3),
        (Kind::Manifest, 4),
        (Kind::Current, 5),
        (Kind::Lock, 6),
    ] {
        assert_eq!(kind as u8, byte);
        assert_eq!(Kind::from_u8(byte), Some(kind));
    }
    assert_eq!(Kind::from_u8(0), None);
    assert_eq!(Kind::from_u8(7), None);
    assert_eq!(Cipher::None as u8, 0);
    assert_eq!(Cipher::XChaCha20Poly1305 as u8, 1);
    assert_eq!(Codec::Stored as u8, 0);
    assert_eq!(Codec::Zstd as u8, 1);

    let v = build();
    let a = |n: String| format!("repo-a/{n}");
    let b = |n: String| format!("repo-b/{n}");
    // (file, kind, cipher, codec): the codec of the manifests is whatever zstd achieved, so
    // it is checked against the stored size instead.
    let expected: Vec<(String, u8, u8, Option<u8>)> = vec![
        (a("config".into()), 1, 0, Some(0)),
        (a(layout::key(PASSPHRASE_KEY_ID)), 2, 0, Some(0)),
        (a(layout::key(KEY_FILE_KEY_ID)), 2, 0, Some(0)),
        (a(layout::chunk(&v.id_zstd)), 3, 1, Some(1)),
        (a(layout::chunk(&v.id_stored)), 3, 1, Some(0)),
        (a(layout::manifest(SERIES_A, VERSION_A)), 4, 1, None),
        (a(layout::current(SERIES_A)), 5, 1, Some(0)),
        (a(layout::lock(LOCK_ID)), 6, 1, Some(0)),
        (b("config".into()), 1, 0, Some(0)),
        (b(layout::chunk(&v.id_plain)), 3, 0, Some(0)),
        (b(layout::manifest(SERIES_B, VERSION_B)), 4, 0, None),
    ];
    for (path, kind, cipher, codec) in expected {
        let bytes = committed(&path);
        assert_eq!(&bytes[..5], b"BVLT\x01", "{path}");
        assert_eq!(bytes[5], kind, "{path}: kind");
        assert_eq!(bytes[6], cipher, "{path}: cipher");
        if let Some(codec) = codec {
            assert_eq!(bytes[7], codec, "{path}: codec");
        }
        let expected_kind = Kind::from_u8(kind).unwrap();
        let h = Header::parse(&bytes, expected_kind).unwrap();
        assert_eq!(h.kind as u8, kind);
        assert_eq!(h.cipher as u8, cipher);
        assert_eq!(h.codec as u8, bytes[7]);
    }
    // Object names as the spec spells them.
    assert_eq!(layout::current(SERIES_A), "current/tank%2Fvm-101");
    assert_eq!(
        layout::manifest(SERIES_B, VERSION_B),
        "manifests/%2Epg%20dump/2026-11-22T130507Z-2"
    );
    assert_eq!(
        blockvault::backup::version_name(jiff::Timestamp::from_second(TIME).unwrap()),
        VERSION_A
    );
    let id = v.id_zstd.to_hex();
    assert_eq!(
        layout::chunk(&v.id_zstd),
        format!("chunks/{}/{id}", &id[..2])
    );
}

#[test]
fn the_library_opens_every_vector_and_reseals_it_byte_for_byte() {
    let v = build();
    let ka = keys_a();
    let kb = keys_b();
    let sk = ka.seal.as_ref();

    // Configs: unencrypted envelope in both repositories.
    for (repo, expected) in [("repo-a", config_a()), ("repo-b", config_b())] {
        let bytes = committed(&format!("{repo}/config"));
        let plain = seal::open(Kind::Config, None, "config", &bytes, MAX_METADATA_LEN).unwrap();
        let cfg: Config = decode_exact(&plain).unwrap();
        assert_eq!(cfg, expected);
        assert_eq!(
            seal::seal(Kind::Config, None, "config", &encode(&cfg), None),
            bytes
        );
        // A config is never sealed with a key, even in an encrypted repository.
        assert!(seal::open(Kind::Config, sk, "config", &bytes, MAX_METADATA_LEN).is_err());
    }

    // Key objects: unencrypted envelope; the master key inside opens with the documented
    // secrets, and a key object renamed or moved to another repository does not.
    let key_file = keys::parse_key_file(&committed("repo-a.key")).expect("a valid key file");
    assert_eq!(&key_file[..], &key_file_secret());
    for (id, secret, expected) in [
        (PASSPHRASE_KEY_ID, passphrase(), key_object_passphrase()),
        (
            KEY_FILE_KEY_ID,
            Secret::KeyFile(key_file.clone()),
            key_object_key_file(),
        ),
    ] {
        let name = layout::key(id);
        let bytes = committed(&format!("repo-a/{name}"));
        let plain = seal::open(Kind::Key, None, &name, &bytes, 1 << 20).unwrap();
        let obj: KeyObject = decode_exact(&plain).unwrap();
        assert_eq!(obj, expected);
        assert_eq!(
            seal::seal(Kind::Key, None, &name, &encode(&obj), None),
            bytes
        );
        let master = keys::unwrap(&obj, &secret, &name, &repo_id_a()).unwrap();
        // The master key is not readable from outside the crate: compare what it derives.
        let k = Keys::from_master(&master);
        assert_eq!(k.id.id_of(b"x"), ka.id.id_of(b"x"));
        assert_eq!(k.gear_seed, ka.gear_seed);
        assert!(keys::unwrap(&obj, &secret, "keys/other", &repo_id_a()).is_err());
        assert!(keys::unwrap(&obj, &secret, &name, &repo_id_b()).is_err());
    }

    // Chunks: the plaintext re-hashes to the id in the name.
    for (id, plain, keys, repo) in [
        (v.id_zstd, compressible_plaintext(), &ka, "repo-a"),
        (v.id_stored, raw_plaintext(), &ka, "repo-a"),
        (v.id_plain, PLAIN_CHUNK.to_vec(), &kb, "repo-b"),
    ] {
        let name = layout::chunk(&id);
        let bytes = committed(&format!("{repo}/{name}"));
        let opened = seal::open_chunk(keys, &id, &name, &bytes).unwrap();
        assert_eq!(opened, plain);
        assert_eq!(keys.id.id_of(&opened), id);
        let resealed = seal::seal_with_nonce(
            Kind::Chunk,
            keys.seal.as_ref(),
            &name,
            &opened,
            Some(ZSTD_LEVEL),
            &nonce_of(&bytes),
        );
        assert_eq!(resealed, bytes, "{name}");
        // Under another chunk's name it does not open.
        let other = layout::chunk(&keys.id.id_of(b"other"));
        assert!(
            seal::open(
                Kind::Chunk,
                keys.seal.as_ref(),
                &other,
                &bytes,
                MAX_CHUNK_LEN
            )
            .is_err()
        );
    }

    // Manifests.
    let name = layout::manifest(SERIES_A, VERSION_A);
    let bytes = committed(&format!("repo-a/{name}"));
    let plain = seal::open(Kind::Manifest, sk, &name, &bytes, MAX_METADATA_LEN).unwrap();
    let m = Manifest::decode(&plain).unwrap();
    assert_eq!(m, manifest_a(v.id_zstd, v.id_stored, stored_total(&v)));
    let offsets: Vec<u64> = m.offsets().map(|(o, _)| o).collect();
    assert_eq!(offsets, vec![0, 65536, 131072]);
    let resealed = seal::seal_with_nonce(
        Kind::Manifest,
        sk,
        &name,
        &m.encode(),
        Some(ZSTD_LEVEL),
        &nonce_of(&bytes),
    );
    assert_eq!(resealed, bytes);
    let digest = *blake3::hash(&bytes).as_bytes();
    assert_eq!(digest, v.manifest_digest);

    let name_b = layout::manifest(SERIES_B, VERSION_B);
    let bytes_b = committed(&format!("repo-b/{name_b}"));
    let plain = seal::open(Kind::Manifest, None, &name_b, &bytes_b, MAX_METADATA_LEN).unwrap();
    let mb = Manifest::decode(&plain).unwrap();
    assert_eq!(mb, manifest_b(v.id_plain));
    assert_eq!(
        seal::seal(
            Kind::Manifest,
            None,
            &name_b,
            &mb.encode(),
            Some(ZSTD_LEVEL)
        ),
        bytes_b
    );

    // Current pointer.
    let name = layout::current(SERIES_A);
    let bytes = committed(&format!("repo-a/{name}"));
    let plain = seal::open(Kind::Current, sk, &name, &bytes, MAX_METADATA_LEN).unwrap();
    let p: CurrentPointer = decode_exact(&plain).unwrap();
    assert_eq!(p, current_a(digest));
    assert_eq!(
        seal::seal_with_nonce(
            Kind::Current,
            sk,
            &name,
            &encode(&p),
            None,
            &nonce_of(&bytes)
        ),
        bytes
    );

    // Lock.
    let name = layout::lock(LOCK_ID);
    let bytes = committed(&format!("repo-a/{name}"));
    let plain = seal::open(Kind::Lock, sk, &name, &bytes, 1 << 16).unwrap();
    let l: LockInfo = decode_exact(&plain).unwrap();
    assert_eq!(l, lock_a());
    assert_eq!(
        seal::seal_with_nonce(Kind::Lock, sk, &name, &encode(&l), None, &nonce_of(&bytes)),
        bytes
    );
}

#[tokio::test]
async fn the_vector_directories_open_as_repositories() {
    let v = build();
    let a = Repo::open(
        Arc::new(LocalDir::new(vectors_dir().join("repo-a"))),
        || Ok(passphrase()),
    )
    .await
    .unwrap();
    assert_eq!(a.config, config_a());
    let p = a.current(SERIES_A).await.unwrap().unwrap();
    let (m, digest) = a.load_manifest(SERIES_A, &p.version).await.unwrap();
    assert_eq!(digest, p.manifest_digest);
    assert_eq!(a.list_versions(SERIES_A).await.unwrap(), vec![VERSION_A]);
    for c in &m.chunks {
        if let ChunkRef::Data { id, len } = c {
            let bytes = a.store().get(&layout::chunk(id)).await.unwrap();
            assert_eq!(a.open_chunk(id, &bytes).unwrap().len(), *len as usize);
        }
    }
    let b = Repo::open(
        Arc::new(LocalDir::new(vectors_dir().join("repo-b"))),
        || panic!("an unencrypted repository asks for no secret"),
    )
    .await
    .unwrap();
    assert_eq!(b.list_series().await.unwrap(), vec![SERIES_B]);
    let (mb, _) = b.load_manifest(SERIES_B, VERSION_B).await.unwrap();
    assert_eq!(mb.chunks, manifest_b(v.id_plain).chunks);
}

#[test]
fn an_independent_reader_following_the_spec_opens_every_vector() {
    let v = build();
    let master = master_key();
    let seal_key = blake3::derive_key(CTX_SEAL, &master);
    let id_key = blake3::derive_key(CTX_ID, &master);

    // Config A, with the postcard layout of the spec's table.
    let plain = spec::open("config", None, &committed("repo-a/config"), 1);
    let mut r = spec::Postcard::new(&plain);
    assert_eq!(r.array::<32>(), repo_id_a());
    assert_eq!(r.i64(), TIME - 86_400);
    assert_eq!(r.varint(), 1, "encryption: XChaCha20Poly1305");
    assert_eq!(r.u32(), FIXED_SIZE);
    assert_eq!((r.u32(), r.u32(), r.u32()), CDC);
    assert_eq!(r.i32(), ZSTD_LEVEL);
    assert_eq!(r.map(), BTreeMap::new());
    r.end();

    let plain = spec::open("config", None, &committed("repo-b/config"), 1);
    let mut r = spec::Postcard::new(&plain);
    assert_eq!(r.array::<32>(), repo_id_b());
    assert_eq!(r.i64(), TIME - 86_400);
    assert_eq!(r.varint(), 0, "encryption: None");
    assert_eq!(r.u32(), FIXED_SIZE);
    assert_eq!((r.u32(), r.u32(), r.u32()), CDC);
    assert_eq!(r.i32(), ZSTD_LEVEL);
    assert_eq!(r.map(), options_b());
    r.end();

    // Key objects: derive the key-encryption key, unwrap the master key.
    let key_file = std::str::from_utf8(&committed("repo-a.key"))
        .unwrap()
        .trim()
        .strip_prefix("blockvault-key-file-v1:")
        .map(|h| hex::decode(h).unwrap())
        .unwrap();
    for id in [PASSPHRASE_KEY_ID, KEY_FILE_KEY_ID] {
        let name = format!("keys/{id}");
        let plain = spec::open(&name, None, &committed(&format!("repo-a/{name}")), 2);
        let mut r = spec::Postcard::new(&plain);
        let kek = match r.varint() {
            0 => {
                let (m, t, p) = (r.u32(), r.u32(), r.u32());
                let salt = r.array::<16>();
                assert_eq!((m, t, p), (ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES));
                spec::kek_argon2id(PASSPHRASE.as_bytes(), m, t, p, &salt)
            }
            1 => spec::kek_key_file(&key_file, &r.array::<16>()),
            other => panic!("unknown KDF {other}"),
        };
        let _created = r.i64();
        assert_eq!(r.string(), HOST);
        let nonce = r.array::<24>();
        let sealed_len = r.varint() as usize;
        assert_eq!(sealed_len, 48);
        let sealed = r.take(sealed_len).to_vec();
        r.end();
        let mut aad = name.as_bytes().to_vec();
        aad.extend_from_slice(&repo_id_a());
        let got = XChaCha20Poly1305::new((&kek).into())
            .decrypt(
                (&nonce).into(),
                Payload {
                    msg: &sealed,
                    aad: &aad,
                },
            )
            .expect("the master key unwraps");
        assert_eq!(got, master);
    }

    // Chunks: open, re-hash.
    for id in [v.id_zstd, v.id_stored] {
        let hexid = hex::encode(id.0);
        let name = format!("chunks/{}/{hexid}", &hexid[..2]);
        let plain = spec::open(
            &name,
            Some(&seal_key),
            &committed(&format!("repo-a/{name}")),
            3,
        );
        assert_eq!(blake3::keyed_hash(&id_key, &plain).as_bytes(), &id.0);
    }
    let id_key_b = blake3::derive_key(CTX_UNENCRYPTED_ID, &repo_id_b());
    let hexid = hex::encode(v.id_plain.0);
    let name = format!("chunks/{}/{hexid}", &hexid[..2]);
    let plain = spec::open(&name, None, &committed(&format!("repo-b/{name}")), 3);
    assert_eq!(plain, PLAIN_CHUNK);
    assert_eq!(
        blake3::keyed_hash(&id_key_b, &plain).as_bytes(),
        &v.id_plain.0
    );

    // Manifest A.
    let name = "manifests/tank%2Fvm-101/2026-11-22T130507Z";
    let stored = committed(&format!("repo-a/{name}"));
    let plain = spec::open(name, Some(&seal_key), &stored, 4);
    let mut r = spec::Postcard::new(&plain);
    assert_eq!(r.string(), SERIES_A);
    assert_eq!(r.string(), VERSION_A);
    assert_eq!(r.i64(), TIME);
    assert_eq!(r.string(), HOST);
    assert_eq!(r.varint(), 1, "SourceKind::BlockDevice");
    assert_eq!(r.string(), "/dev/zvol/tank/vm-101");
    assert_eq!(r.varint(), 2 * 65536 + 1024, "size");
    assert_eq!(r.varint(), 0, "Chunking::Fixed");
    assert_eq!(r.u32(), FIXED_SIZE);
    assert_eq!(r.varint(), 3, "three chunks");
    assert_eq!(r.varint(), 0, "ChunkRef::Data");
    assert_eq!(r.array::<32>(), v.id_zstd.0);
    assert_eq!(r.u32(), 65536);
    assert_eq!(r.varint(), 1, "ChunkRef::Zero");
    assert_eq!(r.u32(), 65536);
    assert_eq!(r.varint(), 0, "ChunkRef::Data");
    assert_eq!(r.array::<32>(), v.id_stored.0);
    assert_eq!(r.u32(), 1024);
    assert_eq!(r.byte(), 1, "parent: Some");
    assert_eq!(r.string(), PARENT_A);
    let stats: Vec<u64> = (0..6).map(|_| r.varint()).collect();
    assert_eq!(stats, vec![2, 0, 1, 65536 + 1024, stored_total(&v), 1234]);
    assert_eq!(
        r.map(),
        BTreeMap::from([("comment".into(), "format-spec test vector".into())])
    );
    r.end();

    // Manifest B: Cdc chunking, no parent, in an unencrypted repository.
    let name = "manifests/%2Epg%20dump/2026-11-22T130507Z-2";
    let plain = spec::open(name, None, &committed(&format!("repo-b/{name}")), 4);
    let mut r = spec::Postcard::new(&plain);
    assert_eq!(r.string(), SERIES_B);
    assert_eq!(r.string(), VERSION_B);
    assert_eq!(r.i64(), TIME);
    assert_eq!(r.string(), HOST);
    assert_eq!(r.varint(), 2, "SourceKind::Stdin");
    assert_eq!(r.string(), "-");
    assert_eq!(r.varint(), PLAIN_CHUNK.len() as u64);
    assert_eq!(r.varint(), 1, "Chunking::Cdc");
    assert_eq!((r.u32(), r.u32(), r.u32()), CDC);
    assert_eq!(r.varint(), 1);
    assert_eq!(r.varint(), 0, "ChunkRef::Data");
    assert_eq!(r.array::<32>(), v.id_plain.0);
    assert_eq!(r.u32() as usize, PLAIN_CHUNK.len());
    assert_eq!(r.byte(), 0, "parent: None");
    assert!((0..6).all(|_| r.varint() == 0));
    assert_eq!(r.map(), BTreeMap::new());
    r.end();

    // Current pointer: its digest is BLAKE3 of the stored manifest object.
    let name = "current/tank%2Fvm-101";
    let plain = spec::open(
        name,
        Some(&seal_key),
        &committed(&format!("repo-a/{name}")),
        5,
    );
    let mut r = spec::Postcard::new(&plain);
    assert_eq!(r.string(), SERIES_A);
    assert_eq!(r.string(), VERSION_A);
    assert_eq!(&r.array::<32>(), blake3::hash(&stored).as_bytes());
    assert_eq!(r.i64(), TIME + 3);
    r.end();

    // Lock.
    let name = format!("locks/{LOCK_ID}");
    let plain = spec::open(
        &name,
        Some(&seal_key),
        &committed(&format!("repo-a/{name}")),
        6,
    );
    let mut r = spec::Postcard::new(&plain);
    assert_eq!(r.varint(), 0, "LockMode::Shared");
    assert_eq!(r.string(), HOST);
    assert_eq!(r.u32(), 4242);
    assert_eq!(r.string(), format!("backup of {SERIES_A}"));
    assert_eq!(r.i64(), TIME - 7);
    assert_eq!(r.i64(), TIME + 113);
    r.end();
}

#[test]
fn fastcdc_cuts_follow_the_spec() {
    let v = build();
    // The gear table and masks the spec reproduces are the fastcdc crate's.
    let gear: Vec<u64> = String::from_utf8(committed("fastcdc-gear.txt"))
        .unwrap()
        .lines()
        .map(|l| u64::from_str_radix(l, 16).unwrap())
        .collect();
    assert_eq!(gear.len(), 256);
    assert_eq!(gear[..], fastcdc::v2020::get_gear_with_seed(0).0[..]);
    assert_eq!(spec::MASKS[..], fastcdc::v2020::MASKS[..]);

    let seed = keys_a().gear_seed;
    let gear_key = blake3::derive_key(CTX_GEAR, &master_key());
    assert_eq!(seed, u64::from_le_bytes(gear_key[..8].try_into().unwrap()));
    let gear_key_b = blake3::derive_key(CTX_GEAR, &repo_id_b());
    assert_eq!(
        keys_b().gear_seed,
        u64::from_le_bytes(gear_key_b[..8].try_into().unwrap())
    );

    let committed_lengths: Vec<usize> = String::from_utf8(committed("cdc-cuts.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(committed_lengths, v.cdc_lengths);
    let input = xof(CDC_LABEL, CDC_INPUT_LEN);
    let gear: [u64; 256] = gear.try_into().unwrap();
    assert_eq!(
        spec::cdc_lengths(&input, CDC.0, CDC.1, CDC.2, &gear, seed),
        committed_lengths
    );
    assert_eq!(committed_lengths.iter().sum::<usize>(), CDC_INPUT_LEN);
    assert!(committed_lengths.len() > 4);
}

/// A reader written from `format-spec/README.md` with no blockvault code.
mod spec {
    use chacha20poly1305::XChaCha20Poly1305;
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use std::collections::BTreeMap;

    pub fn kek_argon2id(pass: &[u8], m: u32, t: u32, p: u32, salt: &[u8; 16]) -> [u8; 32] {
        let params = argon2::Params::new(m, t, p, Some(32)).unwrap();
        let mut out = [0u8; 32];
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password_into(pass, salt, &mut out)
            .unwrap();
        out
    }

    pub fn kek_key_file(secret: &[u8], salt: &[u8; 16]) -> [u8; 32] {
        let mut material = secret.to_vec();
        material.extend_from_slice(salt);
        blake3::derive_key(super::CTX_KEY_FILE, &material)
    }

    /// The master key sealed under a key-encryption key: ciphertext (32) || tag (16).
    pub fn wrap_master(
        kek: &[u8; 32],
        nonce: &[u8; 24],
        name: &str,
        repo_id: &[u8; 32],
        master: &[u8; 32],
    ) -> Vec<u8> {
        let mut aad = name.as_bytes().to_vec();
        aad.extend_from_slice(repo_id);
        XChaCha20Poly1305::new(kek.into())
            .encrypt(
                nonce.into(),
                Payload {
                    msg: master,
                    aad: &aad,
                },
            )
            .unwrap()
    }

    /// Checks the header and opens the body of object `name`: returns the payload.
    pub fn open(name: &str, key: Option<&[u8; 32]>, bytes: &[u8], kind: u8) -> Vec<u8> {
        assert!(bytes.len() >= 8);
        let header = &bytes[..8];
        assert_eq!(&header[..4], b"BVLT");
        assert_eq!(header[4], 1, "version");
        assert_eq!(header[5], kind, "kind");
        let body = match (header[6], key) {
            (1, Some(key)) => {
                let nonce: [u8; 24] = bytes[8..32].try_into().unwrap();
                let mut aad = header.to_vec();
                aad.extend_from_slice(name.as_bytes());
                XChaCha20Poly1305::new(key.into())
                    .decrypt(
                        (&nonce).into(),
                        Payload {
                            msg: &bytes[32..],
                            aad: &aad,
                        },
                    )
                    .unwrap_or_else(|_| panic!("{name}: authentication failed"))
            }
            (0, None) => {
                let (body, sum) = bytes[8..].split_at(bytes.len() - 8 - 32);
                let mut h = blake3::Hasher::new();
                h.update(header);
                h.update(&(name.len() as u32).to_le_bytes());
                h.update(name.as_bytes());
                h.update(body);
                assert_eq!(h.finalize().as_bytes(), sum, "{name}: checksum");
                body.to_vec()
            }
            (c, k) => panic!("{name}: cipher {c} with key present = {}", k.is_some()),
        };
        match header[7] {
            0 => body,
            1 => zstd::stream::decode_all(&body[..]).unwrap(),
            c => panic!("{name}: codec {c}"),
        }
    }

    /// The postcard wire format, as far as blockvault uses it.
    pub struct Postcard<'a>(&'a [u8]);

    impl<'a> Postcard<'a> {
        pub fn new(b: &'a [u8]) -> Self {
            Postcard(b)
        }
        pub fn take(&mut self, n: usize) -> &'a [u8] {
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            head
        }
        pub fn byte(&mut self) -> u8 {
            self.take(1)[0]
        }
        pub fn array<const N: usize>(&mut self) -> [u8; N] {
            self.take(N).try_into().unwrap()
        }
        /// LEB128: 7 bits per byte, least significant first, high bit = more.
        pub fn varint(&mut self) -> u64 {
            let mut v = 0u64;
            for i in 0..10 {
                let b = self.byte();
                v |= u64::from(b & 0x7f) << (7 * i);
                if b & 0x80 == 0 {
                    return v;
                }
            }
            panic!("varint longer than 10 bytes")
        }
        pub fn u32(&mut self) -> u32 {
            u32::try_from(self.varint()).unwrap()
        }
        pub fn i64(&mut self) -> i64 {
            let z = self.varint();
            ((z >> 1) as i64) ^ -((z & 1) as i64)
        }
        pub fn i32(&mut self) -> i32 {
            i32::try_from(self.i64()).unwrap()
        }
        pub fn string(&mut self) -> String {
            let n = self.varint() as usize;
            String::from_utf8(self.take(n).to_vec()).unwrap()
        }
        pub fn map(&mut self) -> BTreeMap<String, String> {
            let n = self.varint();
            (0..n).map(|_| (self.string(), self.string())).collect()
        }
        pub fn end(self) {
            assert!(self.0.is_empty(), "{} trailing bytes", self.0.len());
        }
    }

    /// fastcdc v2020 masks, indexed by number of bits (see the spec's FastCDC section).
    pub const MASKS: [u64; 26] = [
        0,
        0,
        0,
        0,
        0,
        0x0000000001804110,
        0x0000000001803110,
        0x0000000018035100,
        0x0000001800035300,
        0x0000019000353000,
        0x0000590003530000,
        0x0000d90003530000,
        0x0000d90103530000,
        0x0000d90303530000,
        0x0000d90313530000,
        0x0000d90f03530000,
        0x0000d90303537000,
        0x0000d90703537000,
        0x0000d90707537000,
        0x0000d91707537000,
        0x0000d91747537000,
        0x0000d91767537000,
        0x0000d93767537000,
        0x0000d93777537000,
        0x0000d93777577000,
        0x0000db3777577000,
    ];

    /// The spec's cut-point pseudocode, applied until the input is used up.
    pub fn cdc_lengths(
        data: &[u8],
        min: u32,
        avg: u32,
        max: u32,
        base_gear: &[u64; 256],
        seed: u64,
    ) -> Vec<usize> {
        let bits = (f64::from(avg)).log2().round() as usize;
        let (mask_s, mask_l) = (MASKS[bits + 1], MASKS[bits - 1]);
        let (mask_s_ls, mask_l_ls) = (mask_s << 1, mask_l << 1);
        let gear: [u64; 256] = base_gear.map(|g| g ^ seed);
        let gear_ls: [u64; 256] = gear.map(|g| g << 1);
        let (min, avg, max) = (min as usize, avg as usize, max as usize);
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let cut = 'cut: {
                let mut remaining = rest.len();
                if remaining <= min {
                    break 'cut remaining;
                }
                let mut center = avg;
                if remaining > max {
                    remaining = max;
                } else if remaining < center {
                    center = remaining;
                }
                let mut i = min / 2;
                let mut hash = 0u64;
                while i < center / 2 {
                    let a = 2 * i;
                    hash = (hash << 2).wrapping_add(gear_ls[rest[a] as usize]);
                    if hash & mask_s_ls == 0 {
                        break 'cut a;
                    }
                    hash = hash.wrapping_add(gear[rest[a + 1] as usize]);
                    if hash & mask_s == 0 {
                        break 'cut a + 1;
                    }
                    i += 1;
                }
                while i < remaining / 2 {
                    let a = 2 * i;
                    hash = (hash << 2).wrapping_add(gear_ls[rest[a] as usize]);
                    if hash & mask_l_ls == 0 {
                        break 'cut a;
                    }
                    hash = hash.wrapping_add(gear[rest[a + 1] as usize]);
                    if hash & mask_l == 0 {
                        break 'cut a + 1;
                    }
                    i += 1;
                }
                remaining
            };
            out.push(cut);
            rest = &rest[cut..];
        }
        out
    }
}
