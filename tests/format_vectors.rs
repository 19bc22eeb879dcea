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
//! - a few bytes (magic, version, kind, cipher, codec) are compared with literal values;
//! - both repositories pass blockvault's `check --read-data`, and the spec reader, going
//!   through every object of each, finds every chunk a manifest names and every pointer on
//!   its series' newest version;
//! - each object under `refuse/` (see `refuse.rs`) is refused by the library and by the spec
//!   reader, each for that object's reason, and the same object mended is accepted by both.
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
use blockvault::zfs::facts::ZfsFacts;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

mod refuse;

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
    compressible_text(FIXED_SIZE as usize)
}

/// The lines of [`compressible_plaintext`], cut at `len` bytes.
fn compressible_text(len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(format!("line {i:05} of the compressible test chunk\n").as_bytes());
        i += 1;
    }
    out.truncate(len);
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
    wrapped_key(
        kdf,
        &kek,
        TIME - 86_400,
        passphrase_wrap_nonce(),
        PASSPHRASE_KEY_ID,
    )
}

/// A key object of repository A: the master key sealed under `kek` by the spec's own code.
fn wrapped_key(kdf: Kdf, kek: &[u8; 32], created: i64, nonce: [u8; 24], id: &str) -> KeyObject {
    KeyObject {
        kdf,
        created,
        host: HOST.into(),
        nonce,
        sealed: spec::wrap_master(kek, &nonce, &layout::key(id), &repo_id_a(), &master_key()),
    }
}

fn key_object_key_file() -> KeyObject {
    let kek = spec::kek_key_file(&key_file_secret(), &key_file_salt());
    let kdf = Kdf::KeyFile {
        salt: key_file_salt(),
    };
    wrapped_key(
        kdf,
        &kek,
        TIME - 3_600,
        key_file_wrap_nonce(),
        KEY_FILE_KEY_ID,
    )
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
        ]
        .into(),
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
        }]
        .into(),
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
// What was added later, each in a file of its own so that no earlier vector changed a byte:
// two more key objects in repository A, and in repository B a compressed chunk, three more
// manifests, a current pointer per series and an exclusive lock.

/// A second passphrase key: not ASCII (the KEK takes its UTF-8 bytes as they are), and with
/// the four lanes new keys get.
const PASSPHRASE_2: &str = "Grüße aus Zürich";
const PASSPHRASE_2_KEY_ID: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf";
const ARGON2_2: (u32, u32, u32) = (256, 2, 4);
fn passphrase_2_salt() -> [u8; 16] {
    counting(0x70)
}
fn passphrase_2_wrap_nonce() -> [u8; 24] {
    counting(0x80)
}

/// A key file of raw bytes (no `blockvault-key-file-v1:` prefix): the whole file, its final
/// newline included, is the secret.
const RAW_KEY_FILE_KEY_ID: &str = "b0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
const RAW_KEY_FILE_LABEL: &str = "blockvault format test vector: raw key file";
fn raw_key_file_contents() -> Vec<u8> {
    let mut out = xof(RAW_KEY_FILE_LABEL, 47);
    out.push(b'\n');
    out
}
fn raw_key_file_salt() -> [u8; 16] {
    counting(0x98)
}
fn raw_key_file_wrap_nonce() -> [u8; 24] {
    counting(0xa8)
}

fn key_object_passphrase_2() -> KeyObject {
    let (m, t, p) = ARGON2_2;
    let kek = spec::kek_argon2id(PASSPHRASE_2.as_bytes(), m, t, p, &passphrase_2_salt());
    let kdf = Kdf::Argon2id {
        memory_kib: m,
        passes: t,
        lanes: p,
        salt: passphrase_2_salt(),
    };
    let nonce = passphrase_2_wrap_nonce();
    wrapped_key(kdf, &kek, TIME - 1_800, nonce, PASSPHRASE_2_KEY_ID)
}

fn key_object_raw_key_file() -> KeyObject {
    let kek = spec::kek_key_file(&raw_key_file_contents(), &raw_key_file_salt());
    let kdf = Kdf::KeyFile {
        salt: raw_key_file_salt(),
    };
    let nonce = raw_key_file_wrap_nonce();
    wrapped_key(kdf, &kek, TIME - 900, nonce, RAW_KEY_FILE_KEY_ID)
}

/// Repository B's compressible chunk: compressed, so the checksum of 4.4 covers a zstd frame.
const COMPRESSIBLE_B_LEN: usize = 10_000;

/// A series name that is not ASCII: every byte of `é` and of the katakana is escaped.
const SERIES_C: &str = "café/データ";
const VERSION_C: &str = "1969-07-20T201740Z";
/// 1969-07-20T20:17:40Z: before 1970, so the manifest's time is a negative integer.
const TIME_C: i64 = -14_182_940;
/// A ZFS send stream (6.4.1) read from a command.
const SERIES_D: &str = "tank/home";
const VERSION_D: &str = VERSION_A;
/// A later version of SERIES_B, read from a FIFO; `-10` sorts after `-2` (section 3), though
/// not byte-wise.
const VERSION_E: &str = "2026-11-22T130507Z-10";
const LOCK_ID_B: &str = "fedcba9876543210fedcba9876543210";

fn manifest_c(id: ChunkId, bytes_new_stored: u64) -> Manifest {
    Manifest {
        series: SERIES_C.into(),
        version: VERSION_C.into(),
        time: TIME_C,
        host: HOST.into(),
        source: SourceInfo {
            kind: SourceKind::File,
            description: "/srv/café/データ.img".into(),
        },
        size: COMPRESSIBLE_B_LEN as u64,
        chunking: Chunking::Fixed { size: FIXED_SIZE },
        chunks: vec![ChunkRef::Data {
            id,
            len: COMPRESSIBLE_B_LEN as u32,
        }]
        .into(),
        parent: None,
        stats: BackupStats {
            chunks_new: 1,
            chunks_reused: 0,
            chunks_zero: 0,
            bytes_new: COMPRESSIBLE_B_LEN as u64,
            bytes_new_stored,
            duration_ms: 3,
        },
        extra: BTreeMap::new(),
    }
}

/// What `zfs send -R tank/home@2026-11-22` would have said of its stream, had the version's
/// bytes been one: a full stream (base 0) of two snapshots.
fn zfs_facts_d() -> ZfsFacts {
    ZfsFacts {
        snapshot: "tank/home@2026-11-22".into(),
        guid: 0x00c0_ffee_0bad_f00d,
        base_guid: 0,
        creation: (TIME - 300) as u64,
        compound: true,
        substreams: 2,
        features: 0x30004,
        snapshots: vec![
            (0x1111_2222_3333_4444, "tank/home@2026-11-21".into()),
            (0x00c0_ffee_0bad_f00d, "tank/home@2026-11-22".into()),
        ],
    }
}

fn manifest_d(id_plain: ChunkId) -> Manifest {
    let mut extra = BTreeMap::new();
    zfs_facts_d().to_extra(&mut extra);
    Manifest {
        series: SERIES_D.into(),
        version: VERSION_D.into(),
        time: TIME,
        host: HOST.into(),
        source: SourceInfo {
            kind: SourceKind::Command,
            description: "zfs send -R tank/home@2026-11-22".into(),
        },
        size: PLAIN_CHUNK.len() as u64,
        chunking: Chunking::Cdc {
            min: CDC.0,
            avg: CDC.1,
            max: CDC.2,
        },
        chunks: vec![ChunkRef::Data {
            id: id_plain,
            len: PLAIN_CHUNK.len() as u32,
        }]
        .into(),
        parent: None,
        stats: BackupStats {
            chunks_reused: 1,
            duration_ms: 5,
            ..BackupStats::default()
        },
        extra,
    }
}

fn manifest_e(id_plain: ChunkId) -> Manifest {
    Manifest {
        version: VERSION_E.into(),
        source: SourceInfo {
            kind: SourceKind::Stream,
            description: "/run/pg_dump.fifo".into(),
        },
        parent: Some(VERSION_B.into()),
        stats: BackupStats {
            chunks_reused: 1,
            duration_ms: 4,
            ..BackupStats::default()
        },
        ..manifest_b(id_plain)
    }
}

fn current_b(series: &str, version: &str, manifest_digest: [u8; 32]) -> CurrentPointer {
    CurrentPointer {
        series: series.into(),
        version: version.into(),
        manifest_digest,
        written: TIME + 3,
    }
}

/// The exclusive lock of a gc, with a host as blockvault writes it today (section 12); its
/// heartbeat is long past, so it is stale and blocks nothing.
fn lock_b() -> LockInfo {
    LockInfo {
        mode: LockMode::Exclusive,
        host: format!("{HOST} [boot 0123456789abcdef, pid-ns 4026531836]"),
        pid: 31337,
        purpose: "gc".into(),
        created: TIME + 200,
        heartbeat: TIME + 260,
    }
}

/// The second FastCDC cut list: small bounds; an odd minimum, with which two chunks come out
/// one byte shorter than it (the first byte hashed is at `min - 1`, and it can end a chunk); a
/// maximum only twice the average, so two chunks are cut there, no cut point found; and an
/// input whose end leaves a tail shorter than the minimum, returned whole. Repository B's
/// gear seed.
const CDC_2: (u32, u32, u32) = (883, 2048, 4096);
const CDC_2_INPUT_LEN: usize = 64_473;

// ---------------------------------------------------------------------------------------------
// The generator: every vector file, in memory.

struct Vectors {
    files: BTreeMap<String, Vec<u8>>,
    id_zstd: ChunkId,
    id_stored: ChunkId,
    id_plain: ChunkId,
    /// Repository B's compressed chunk.
    id_c: ChunkId,
    manifest_digest: [u8; 32],
    cdc_lengths: Vec<usize>,
    cdc_2_lengths: Vec<usize>,
    refuse: Vec<refuse::Case>,
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

    // Added later (see above): repository A's two more key objects and raw key file.
    for (id, obj) in [
        (PASSPHRASE_2_KEY_ID, key_object_passphrase_2()),
        (RAW_KEY_FILE_KEY_ID, key_object_raw_key_file()),
    ] {
        let name = layout::key(id);
        put(
            format!("repo-a/{name}"),
            seal::seal(Kind::Key, None, &name, &encode(&obj), None),
        );
    }
    put("repo-a-raw.key".into(), raw_key_file_contents());

    // Repository B: a compressed chunk, three more manifests, a pointer per series, a lock.
    let plain_c = compressible_text(COMPRESSIBLE_B_LEN);
    let id_c = kb.id.id_of(&plain_c);
    let name = layout::chunk(&id_c);
    let chunk_c = seal::seal(Kind::Chunk, None, &name, &plain_c, Some(ZSTD_LEVEL));
    let stored_c = chunk_c.len() as u64;
    put(format!("repo-b/{name}"), chunk_c);
    let mut pointers = Vec::new();
    for (m, pointed) in [
        (manifest_c(id_c, stored_c), true),
        (manifest_d(id_plain), true),
        (manifest_b(id_plain), false),
        (manifest_e(id_plain), true),
    ] {
        let name = layout::manifest(&m.series, &m.version);
        let bytes = seal::seal(Kind::Manifest, None, &name, &m.encode(), Some(ZSTD_LEVEL));
        if pointed {
            pointers.push(current_b(
                &m.series,
                &m.version,
                *blake3::hash(&bytes).as_bytes(),
            ));
        }
        // Manifest B is put above already (the same call makes the same bytes).
        if m.version != VERSION_B {
            put(format!("repo-b/{name}"), bytes);
        }
    }
    for p in &pointers {
        let name = layout::current(&p.series);
        put(
            format!("repo-b/{name}"),
            seal::seal(Kind::Current, None, &name, &encode(p), None),
        );
    }
    let name = layout::lock(LOCK_ID_B);
    put(
        format!("repo-b/{name}"),
        seal::seal(Kind::Lock, None, &name, &encode(&lock_b()), None),
    );

    let gear = fastcdc::v2020::get_gear_with_seed(0).0;
    let gear_text: String = gear.iter().map(|g| format!("{g:016x}\n")).collect();
    put("fastcdc-gear.txt".into(), gear_text.into_bytes());

    // A FastCDC cut vector: the lengths of the chunks cut from the first `len` bytes of the
    // XOF, with the bounds and gear seed of `repo`, and its text.
    let cdc_vector = |len: usize, (min, avg, max): (u32, u32, u32), seed: u64, repo: &str| {
        let input = xof(CDC_LABEL, len);
        let lengths: Vec<usize> = CdcChunker::new(&input[..], min, avg, max, seed)
            .map(|c| c.expect("reading a slice cannot fail").data.len())
            .collect();
        let mut text = format!(
            "# FastCDC cut vector (see README.md): chunk lengths, one per line.\n\
             # input: first {len} bytes of the BLAKE3 XOF of {CDC_LABEL:?}\n\
             # min {min} avg {avg} max {max}, gear seed 0x{seed:016x} (repository {repo})\n"
        );
        for l in &lengths {
            text.push_str(&format!("{l}\n"));
        }
        (lengths, text.into_bytes())
    };
    let (cdc_lengths, text) = cdc_vector(CDC_INPUT_LEN, CDC, ka.gear_seed, "A");
    put("cdc-cuts.txt".into(), text);
    let (cdc_2_lengths, text) = cdc_vector(CDC_2_INPUT_LEN, CDC_2, kb.gear_seed, "B");
    put("cdc-cuts-2.txt".into(), text);

    let refuse = refuse::cases(&files, id_plain);
    for case in &refuse {
        assert!(files.insert(case.path(), case.bytes.clone()).is_none());
    }

    let mut v = Vectors {
        files,
        id_zstd,
        id_stored,
        id_plain,
        id_c,
        manifest_digest,
        cdc_lengths,
        cdc_2_lengths,
        refuse,
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
        format!("repo-a/keys/{PASSPHRASE_2_KEY_ID}"),
        "master key under the second passphrase (Argon2id, 4 lanes)",
    );
    table += &row(
        format!("repo-a/keys/{RAW_KEY_FILE_KEY_ID}"),
        "master key under the raw key file `repo-a-raw.key`",
    );
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
    table += &row(
        format!("repo-b/{}", ch(&v.id_c)),
        "compressible chunk of an unencrypted repository: zstd, then checksummed",
    );
    table += &row(
        format!("repo-b/{}", layout::manifest(SERIES_C, VERSION_C)),
        "manifest C: a file, a series name that is not ASCII, a time before 1970",
    );
    table += &row(
        format!("repo-b/{}", layout::manifest(SERIES_D, VERSION_D)),
        "manifest D: a command's ZFS send stream, with the `zfs.*` keys",
    );
    table += &row(
        format!("repo-b/{}", layout::manifest(SERIES_B, VERSION_E)),
        "manifest E: a FIFO; the newest version of `.pg dump`",
    );
    for (series, what) in [
        (SERIES_B, "current pointer to manifest E"),
        (SERIES_C, "current pointer to manifest C"),
        (SERIES_D, "current pointer to manifest D"),
    ] {
        table += &row(format!("repo-b/{}", layout::current(series)), what);
    }
    table += &row(
        format!("repo-b/{}", layout::lock(LOCK_ID_B)),
        "an exclusive lock (stale)",
    );

    let mut refuse_table = String::new();
    for case in &v.refuse {
        let instead =
            if v.files
                .contains_key(&format!("{}{}", case.base.prefix(), case.control_name))
            {
                format!("`{}`", case.control_name)
            } else {
                "(added)".into()
            };
        let committed = v
            .files
            .get(&format!("{}{}", case.base.prefix(), case.control_name));
        let mended = if committed == Some(&case.control) {
            "the object it replaces"
        } else {
            assert!(
                !case.mended.is_empty(),
                "{}: say what the control is",
                case.dir
            );
            case.mended
        };
        refuse_table += &format!(
            "| `refuse/{}/` | {} | `{}` | {instead} | {} | {mended} | {} |\n",
            case.dir,
            case.base.letter(),
            case.name,
            case.what,
            case.rule
        );
    }
    let digest_of = |series: &str, version: &str| {
        hex_of(
            blake3::hash(&v.files[&format!("repo-b/{}", layout::manifest(series, version))])
                .as_bytes(),
        )
    };
    let pass_2_kek = spec::kek_argon2id(
        PASSPHRASE_2.as_bytes(),
        ARGON2_2.0,
        ARGON2_2.1,
        ARGON2_2.2,
        &passphrase_2_salt(),
    );
    let raw_kek = spec::kek_key_file(&raw_key_file_contents(), &raw_key_file_salt());
    let lengths_2 = &v.cdc_2_lengths;

    format!(
        r#"# blockvault format test vectors

Generated by `tests/format_vectors.rs`; do not edit by hand. Every file here is checked by
`cargo test --test tests format_vectors`: the library opens each object of `repo-a/` and
`repo-b/` with the secrets below, an independent reader written from `../README.md` opens it
too, and re-sealing with the same nonce reproduces it byte for byte; both refuse each object
under `refuse/` (the last section). After a deliberate format change, regenerate with

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
| second passphrase (UTF-8, no newline) | `{PASSPHRASE_2}` = `{pass_2_hex}` |
| its Argon2id memory / passes / lanes | {m2} KiB / {t2} / {p2} |
| its Argon2id salt | `{pass_2_salt}` |
| key-encryption key from the second passphrase | `{pass_2_kek}` |
| nonce wrapping the master key (second passphrase) | `{pass_2_nonce}` |
| raw key file `repo-a-raw.key` ({raw_len} bytes, no prefix: all of it is the secret) | `{raw_file}` |
| raw key file salt | `{raw_salt}` |
| key-encryption key from the raw key file | `{raw_kek}` |
| nonce wrapping the master key (raw key file) | `{raw_nonce}` |

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
- repository B's compressible chunk ({COMPRESSIBLE_B_LEN} bytes): the lines of the zstd chunk, cut
  at {COMPRESSIBLE_B_LEN} bytes. Its checksum (section 4.4) covers the compressed body.
- `repo-a-raw.key`: the first 47 bytes of the BLAKE3 XOF output of the ASCII string
  `{RAW_KEY_FILE_LABEL}`, then one newline, which is part of the secret.

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
- key objects added later: host `{HOST}`, created {kp2_created} (second passphrase) and
  {kr_created} (raw key file).
- manifest C: series `{SERIES_C}` (escaped `{esc_c}`), version
  `{VERSION_C}`, time {TIME_C} (negative: zigzag {zigzag_c}), host `{HOST}`, source File
  `/srv/café/データ.img`, size {COMPRESSIBLE_B_LEN}, Fixed {FIXED_SIZE}, one Data chunk (the
  compressible one); no parent; stats 1 new, 0 reused, 0 zero, {COMPRESSIBLE_B_LEN} bytes new,
  {stored_c} bytes stored, 3 ms; no extra.
- manifest D: series `{SERIES_D}`, version `{VERSION_D}`, time {TIME}, host `{HOST}`, source
  Command `zfs send -R tank/home@2026-11-22`, size {plain_len}, Cdc {cdc_min}/{cdc_avg}/{cdc_max},
  one Data chunk (repository B's first); no parent; stats 0 new, 1 reused, 5 ms; extra, in
  this order (the bytes are not a send stream: the keys are there to be decoded):
{extra_d}- manifest E: series `{SERIES_B}`, version `{VERSION_E}` (which sorts after
  `{VERSION_B}`), as manifest B but source Stream `/run/pg_dump.fifo`, parent `{VERSION_B}`,
  stats 1 reused, 4 ms.
- current pointers of repository B, each written {written}:
  - `{SERIES_B}` → `{VERSION_E}`, digest `{digest_e}`
  - `{SERIES_C}` → `{VERSION_C}`, digest `{digest_c}`
  - `{SERIES_D}` → `{VERSION_D}`, digest `{digest_d}`
- lock of repository B: Exclusive, host `{lock_b_host}`, pid {lock_b_pid},
  purpose `gc`, created {lock_b_created}, heartbeat {lock_b_heartbeat} (stale).

## Chunking vectors

- `fastcdc-gear.txt`: the 256 base gear values (FastCDC 2020), one 64-bit value per line in hex,
  for byte values 0 to 255 in order.
- `cdc-cuts.txt`: the chunk lengths FastCDC (min {cdc_min}, avg {cdc_avg}, max {cdc_max},
  normalisation level 1) produces from the first {CDC_INPUT_LEN} bytes of the BLAKE3 XOF of the
  ASCII string `{CDC_LABEL}`, with repository A's gear seed: {n_cuts} chunks.
- `cdc-cuts-2.txt`: the same for min {cdc2_min}, avg {cdc2_avg}, max {cdc2_max}, the first
  {CDC_2_INPUT_LEN} bytes of that input and repository B's gear seed: {n_cuts_2} chunks. The
  minimum is odd, so the first byte hashed is byte {cdc2_first}, and {at_min_1} chunks end there
  ({cdc2_first} bytes, one short of the minimum); {at_max} are cut at the maximum (no cut point
  found); the last, {tail} bytes, is shorter than the minimum and returned whole. FastCDC
  hashed a byte at a time from `min`, as the paper writes it, gets this list wrong.

## Objects a reader must refuse (`refuse/`)

Each directory under `refuse/` holds one object, at its object name, that breaks one rule of
the specification. Read as part of repository A or B, in place of that repository's object
named under "instead of", a reader MUST refuse it; where the fault is the name, it MUST NOT
see the object at all. The test checks that blockvault and the spec-only reader each refuse
every one for the reason given, and that both accept the mended object (the same object with
that one fault put right) in the same place, so that each refusal is the rule's doing.

| directory | repository | object name | instead of | what is wrong | mended object | rule (section) |
|---|---|---|---|---|---|---|
{refuse_table}"#,
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
        pass_2_hex = hex_of(PASSPHRASE_2.as_bytes()),
        m2 = ARGON2_2.0,
        t2 = ARGON2_2.1,
        p2 = ARGON2_2.2,
        pass_2_salt = hex_of(&passphrase_2_salt()),
        pass_2_kek = hex_of(&pass_2_kek),
        pass_2_nonce = hex_of(&passphrase_2_wrap_nonce()),
        raw_len = raw_key_file_contents().len(),
        raw_file = hex_of(&raw_key_file_contents()),
        raw_salt = hex_of(&raw_key_file_salt()),
        raw_kek = hex_of(&raw_kek),
        raw_nonce = hex_of(&raw_key_file_wrap_nonce()),
        kp2_created = key_object_passphrase_2().created,
        kr_created = key_object_raw_key_file().created,
        esc_c = layout::escape_series(SERIES_C),
        zigzag_c = (TIME_C << 1) ^ (TIME_C >> 63),
        stored_c = v.files[&format!("repo-b/{}", layout::chunk(&v.id_c))].len(),
        extra_d = manifest_d(v.id_plain)
            .extra
            .iter()
            .map(|(k, val)| format!("  - `{k}` = `{}`\n", val.replace('\n', "\\n")))
            .collect::<String>(),
        digest_e = digest_of(SERIES_B, VERSION_E),
        digest_c = digest_of(SERIES_C, VERSION_C),
        digest_d = digest_of(SERIES_D, VERSION_D),
        lock_b_host = lock_b().host,
        lock_b_pid = lock_b().pid,
        lock_b_created = lock_b().created,
        lock_b_heartbeat = lock_b().heartbeat,
        cdc2_min = CDC_2.0,
        cdc2_first = CDC_2.0 - 1,
        cdc2_avg = CDC_2.1,
        cdc2_max = CDC_2.2,
        n_cuts_2 = lengths_2.len(),
        at_max = lengths_2.iter().filter(|&&l| l == CDC_2.2 as usize).count(),
        at_min_1 = lengths_2
            .iter()
            .filter(|&&l| l == CDC_2.0 as usize - 1)
            .count(),
        tail = lengths_2.last().copied().unwrap_or_default(),
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
        (a(layout::key(PASSPHRASE_2_KEY_ID)), 2, 0, Some(0)),
        (a(layout::key(RAW_KEY_FILE_KEY_ID)), 2, 0, Some(0)),
        // Unencrypted and compressed: the checksum covers the zstd frame (4.4).
        (b(layout::chunk(&v.id_c)), 3, 0, Some(1)),
        (b(layout::manifest(SERIES_C, VERSION_C)), 4, 0, None),
        (b(layout::manifest(SERIES_D, VERSION_D)), 4, 0, None),
        (b(layout::manifest(SERIES_B, VERSION_E)), 4, 0, None),
        (b(layout::current(SERIES_B)), 5, 0, Some(0)),
        (b(layout::current(SERIES_C)), 5, 0, Some(0)),
        (b(layout::current(SERIES_D)), 5, 0, Some(0)),
        (b(layout::lock(LOCK_ID_B)), 6, 0, Some(0)),
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
    assert_eq!(
        layout::manifest(SERIES_C, VERSION_C),
        "manifests/caf%C3%A9%2F%E3%83%87%E3%83%BC%E3%82%BF/1969-07-20T201740Z"
    );
    assert_eq!(
        blockvault::backup::version_name(jiff::Timestamp::from_second(TIME_C).unwrap()),
        VERSION_C
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
    // A key file without the prefix is its bytes, all of them.
    let raw_key_file = keys::parse_key_file(&committed("repo-a-raw.key")).expect("a raw key file");
    assert_eq!(&raw_key_file[..], &raw_key_file_contents()[..]);
    for (id, secret, expected) in [
        (PASSPHRASE_KEY_ID, passphrase(), key_object_passphrase()),
        (
            KEY_FILE_KEY_ID,
            Secret::KeyFile(key_file.clone()),
            key_object_key_file(),
        ),
        (
            PASSPHRASE_2_KEY_ID,
            Secret::Passphrase(Zeroizing::new(PASSPHRASE_2.into())),
            key_object_passphrase_2(),
        ),
        (
            RAW_KEY_FILE_KEY_ID,
            Secret::KeyFile(raw_key_file),
            key_object_raw_key_file(),
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
        (v.id_c, compressible_text(COMPRESSIBLE_B_LEN), &kb, "repo-b"),
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

    // Repository B's later manifests, each with the current pointer of its series.
    let stored_c = committed(&format!("repo-b/{}", layout::chunk(&v.id_c))).len() as u64;
    for m in [
        manifest_c(v.id_c, stored_c),
        manifest_d(v.id_plain),
        manifest_e(v.id_plain),
    ] {
        let name = layout::manifest(&m.series, &m.version);
        let bytes = committed(&format!("repo-b/{name}"));
        let plain = seal::open(Kind::Manifest, None, &name, &bytes, MAX_METADATA_LEN).unwrap();
        assert_eq!(Manifest::decode(&plain).unwrap(), m);
        assert_eq!(
            seal::seal(Kind::Manifest, None, &name, &m.encode(), Some(ZSTD_LEVEL)),
            bytes
        );
        let digest = *blake3::hash(&bytes).as_bytes();
        let name = layout::current(&m.series);
        let bytes = committed(&format!("repo-b/{name}"));
        let plain = seal::open(Kind::Current, None, &name, &bytes, MAX_METADATA_LEN).unwrap();
        let p: CurrentPointer = decode_exact(&plain).unwrap();
        assert_eq!(p, current_b(&m.series, &m.version, digest));
        assert_eq!(
            seal::seal(Kind::Current, None, &name, &encode(&p), None),
            bytes
        );
    }
    // What blockvault's ZFS code reads from manifest D's keys.
    assert_eq!(
        ZfsFacts::from_extra(&manifest_d(v.id_plain).extra),
        Ok(Some(zfs_facts_d()))
    );
    let name = layout::lock(LOCK_ID_B);
    let bytes = committed(&format!("repo-b/{name}"));
    let plain = seal::open(Kind::Lock, None, &name, &bytes, 1 << 16).unwrap();
    let l: LockInfo = decode_exact(&plain).unwrap();
    assert_eq!(l, lock_b());
    assert_eq!(
        seal::seal(Kind::Lock, None, &name, &encode(&l), None),
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
    for (id, len) in m.chunks.data() {
        let bytes = a.store().get(&layout::chunk(&id)).await.unwrap();
        assert_eq!(a.open_chunk(&id, &bytes).unwrap().len(), len as usize);
    }
    let b = Repo::open(
        Arc::new(LocalDir::new(vectors_dir().join("repo-b"))),
        || panic!("an unencrypted repository asks for no secret"),
    )
    .await
    .unwrap();
    assert_eq!(
        b.list_series().await.unwrap(),
        vec![SERIES_B, SERIES_C, SERIES_D]
    );
    let (mb, _) = b.load_manifest(SERIES_B, VERSION_B).await.unwrap();
    assert_eq!(mb.chunks, manifest_b(v.id_plain).chunks);
    // `-10` after `-2`, though not byte-wise.
    assert_eq!(
        b.list_versions(SERIES_B).await.unwrap(),
        vec![VERSION_B, VERSION_E]
    );
    for series in [SERIES_B, SERIES_C, SERIES_D] {
        let p = b.current(series).await.unwrap().unwrap();
        let versions = b.list_versions(series).await.unwrap();
        assert_eq!(Some(&p.version), versions.last(), "{series}");
        let (m, digest) = b.load_manifest(series, &p.version).await.unwrap();
        assert_eq!(digest, p.manifest_digest);
        for (id, len) in m.chunks.data() {
            let bytes = b.store().get(&layout::chunk(&id)).await.unwrap();
            assert_eq!(b.open_chunk(&id, &bytes).unwrap().len(), len as usize);
        }
    }
    let locks = blockvault::lock::list(&b, None).await.unwrap();
    assert_eq!(locks.len(), 1);
    assert!(
        matches!(&locks[0].state, blockvault::lock::LockState::Stale(l) if *l == lock_b()),
        "{:?}",
        locks[0].state
    );

    // Repository A opens with each of its four secrets, and says which key object did it.
    let raw_key_file = keys::parse_key_file(&committed("repo-a-raw.key")).unwrap();
    for (secret, key_id) in [
        (passphrase(), PASSPHRASE_KEY_ID),
        (
            Secret::Passphrase(Zeroizing::new(PASSPHRASE_2.into())),
            PASSPHRASE_2_KEY_ID,
        ),
        (
            Secret::KeyFile(Zeroizing::new(key_file_secret().to_vec())),
            KEY_FILE_KEY_ID,
        ),
        (Secret::KeyFile(raw_key_file), RAW_KEY_FILE_KEY_ID),
    ] {
        let a = Repo::open(
            Arc::new(LocalDir::new(vectors_dir().join("repo-a"))),
            || Ok(secret),
        )
        .await
        .unwrap();
        assert_eq!(a.opened_with(), Some(key_id));
    }
}

/// A copy of a vector repository in memory, where a command may write (its lock).
async fn in_memory(repo: &str) -> Arc<blockvault::store::Memory> {
    use blockvault::store::Store;
    let store = Arc::new(blockvault::store::Memory::new());
    for (name, bytes) in committed_files(&vectors_dir().join(repo)) {
        store.put(&name, bytes).await.unwrap();
    }
    store
}

/// `blockvault check --read-data` finds nothing wrong in either repository: every manifest,
/// pointer and chunk is where the others say, and each pointer names its series' newest
/// version.
#[tokio::test]
async fn both_vector_repositories_pass_check_with_read_data() {
    for (repo, series, versions) in [("repo-a", 1, 1), ("repo-b", 3, 4)] {
        let r = Repo::open(in_memory(repo).await, || Ok(passphrase()))
            .await
            .unwrap();
        let report = blockvault::check::check(
            Arc::new(r),
            blockvault::check::CheckOptions {
                only: None,
                read_data: Some(blockvault::check::Subset {
                    percent: 100.0,
                    seed: 0,
                }),
                in_flight: 4,
                repair: false,
                progress: false,
            },
        )
        .await
        .unwrap();
        assert!(report.is_ok(), "{repo}: {:?}", report.problems);
        assert!(report.notes.is_empty(), "{repo}: {:?}", report.notes);
        assert_eq!(
            (report.series, report.versions),
            (series, versions),
            "{repo}"
        );
        assert_eq!(report.chunks_unreferenced, 0, "{repo}");
        assert_eq!(report.chunks_read, report.chunks_referenced, "{repo}");
    }
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

/// The spec-only reader, through every object of both repositories: each decodes and passes
/// the checks of section 10, every chunk a manifest names is there with its length, and every
/// pointer names the newest version of its series and that manifest's exact bytes. Then the
/// values that only the later vectors hold.
#[test]
fn the_spec_reader_reads_every_object_of_both_repositories() {
    let master = master_key();
    let seal_key = blake3::derive_key(CTX_SEAL, &master);
    let id_key_a = blake3::derive_key(CTX_ID, &master);
    let id_key_b = blake3::derive_key(CTX_UNENCRYPTED_ID, &repo_id_b());
    let key_file = spec::key_file_secret(&committed("repo-a.key")).unwrap();
    let raw_key_file = spec::key_file_secret(&committed("repo-a-raw.key")).unwrap();
    // A raw key file is all of its bytes, the newline at its end too.
    assert_eq!(raw_key_file, committed("repo-a-raw.key"));
    assert_eq!(raw_key_file.last(), Some(&b'\n'));
    assert_eq!(key_file, key_file_secret());

    for (repo, key, id_key, repo_id) in [
        ("repo-a", Some(&seal_key), id_key_a, repo_id_a()),
        ("repo-b", None, id_key_b, repo_id_b()),
    ] {
        let objects = committed_files(&vectors_dir().join(repo));
        let config = spec::read_config(&objects["config"]).unwrap();
        assert_eq!(config.repo_id, repo_id);
        assert_eq!(config.encryption, u32::from(key.is_some()));
        let mut kinds = BTreeSet::new();
        for (name, bytes) in &objects {
            let prefix = name.split('/').next().unwrap();
            kinds.insert(prefix);
            match prefix {
                "config" => {}
                "keys" => {
                    let k = spec::read_key(name, bytes).unwrap();
                    let secret = match &name["keys/".len()..] {
                        PASSPHRASE_KEY_ID => spec::Secret::Passphrase(PASSPHRASE.as_bytes()),
                        PASSPHRASE_2_KEY_ID => spec::Secret::Passphrase(PASSPHRASE_2.as_bytes()),
                        KEY_FILE_KEY_ID => spec::Secret::KeyFile(&key_file),
                        RAW_KEY_FILE_KEY_ID => spec::Secret::KeyFile(&raw_key_file),
                        other => panic!("key {other}"),
                    };
                    assert_eq!(
                        spec::unwrap_key(name, &k, &secret, &repo_id).unwrap(),
                        master
                    );
                }
                "chunks" => {
                    spec::read_chunk(name, key, &id_key, bytes).unwrap();
                }
                "manifests" => {
                    let m = spec::read_manifest(name, key, bytes).unwrap();
                    for c in &m.chunks {
                        if let spec::ChunkRef::Data(id, len) = c {
                            let hexid = hex::encode(id);
                            let chunk = format!("chunks/{}/{hexid}", &hexid[..2]);
                            let plain =
                                spec::read_chunk(&chunk, key, &id_key, &objects[&chunk]).unwrap();
                            assert_eq!(plain.len(), *len as usize, "{chunk}");
                        }
                    }
                }
                "current" => {
                    let p = spec::read_pointer(name, key, bytes).unwrap();
                    let versions =
                        spec::list_versions(objects.keys().map(String::as_str), &p.series);
                    assert_eq!(versions.last(), Some(&p.version), "{name}");
                    let manifest = format!("manifests/{}/{}", spec::escape(&p.series), p.version);
                    assert_eq!(blake3::hash(&objects[&manifest]).as_bytes(), &p.digest);
                }
                "locks" => {
                    spec::read_lock(name, key, bytes).unwrap();
                }
                other => panic!("{repo}: {other}/ is not part of a repository"),
            }
        }
        // Every kind of object, in each repository.
        let expected: BTreeSet<&str> = if key.is_some() {
            BTreeSet::from(["chunks", "config", "current", "keys", "locks", "manifests"])
        } else {
            BTreeSet::from(["chunks", "config", "current", "locks", "manifests"])
        };
        assert_eq!(kinds, expected, "{repo}");
    }

    // Repository A's later keys: four Argon2 lanes; a raw key file.
    let k = spec::read_key(
        &format!("keys/{PASSPHRASE_2_KEY_ID}"),
        &committed(&format!("repo-a/keys/{PASSPHRASE_2_KEY_ID}")),
    )
    .unwrap();
    let (m, t, p) = ARGON2_2;
    assert_eq!(
        k.kdf,
        spec::Kdf::Argon2id {
            m,
            t,
            p,
            salt: passphrase_2_salt()
        }
    );
    assert_eq!(p, 4);

    // Repository B's compressed chunk: the checksum is of the compressed body (4.4), not of
    // the payload.
    let v = build();
    let hexid = v.id_c.to_hex();
    let name = format!("chunks/{}/{hexid}", &hexid[..2]);
    let bytes = committed(&format!("repo-b/{name}"));
    assert_eq!(&bytes[..8], b"BVLT\x01\x03\x00\x01");
    let (body, sum) = bytes[8..].split_at(bytes.len() - 40);
    let plain = spec::read_chunk(&name, None, &id_key_b, &bytes).unwrap();
    assert_eq!(plain, compressible_text(COMPRESSIBLE_B_LEN));
    assert!(body.len() < plain.len() / 4, "{} bytes", body.len());
    let checksum_of = |b: &[u8]| {
        let mut h = blake3::Hasher::new();
        h.update(&bytes[..8]);
        h.update(&(name.len() as u32).to_le_bytes());
        h.update(name.as_bytes());
        h.update(b);
        *h.finalize().as_bytes()
    };
    assert_eq!(&checksum_of(body), sum);
    assert_ne!(&checksum_of(&plain), sum);

    let b = |name: &str| committed(&format!("repo-b/{name}"));
    // Manifest C: a file, a series that is not ASCII, a negative time.
    let name = format!("manifests/{}/{VERSION_C}", spec::escape(SERIES_C));
    assert_eq!(
        name,
        "manifests/caf%C3%A9%2F%E3%83%87%E3%83%BC%E3%82%BF/1969-07-20T201740Z"
    );
    let m = spec::read_manifest(&name, None, &b(&name)).unwrap();
    assert_eq!((m.series.as_str(), m.source_kind), (SERIES_C, 0), "File");
    assert_eq!(m.time, TIME_C);
    assert_eq!(m.chunking, spec::Chunking::Fixed(FIXED_SIZE));
    assert_eq!(
        m.chunks,
        vec![spec::ChunkRef::Data(v.id_c.0, COMPRESSIBLE_B_LEN as u32)]
    );
    // The zigzag varint of the time, after series, version: 2·14182940 − 1 = 28365879.
    let plain = spec::open(&name, None, &b(&name), 4);
    let at = 1 + SERIES_C.len() + 1 + VERSION_C.len();
    assert_eq!(plain[at..at + 4], [0xb7, 0xa8, 0xc3, 0x0d]);
    assert_eq!(0x37 + (0x28 << 7) + (0x43 << 14) + (0x0d << 21), 28_365_879);

    // Manifest D: a command; the `zfs.*` keys of 6.4.1, eight entries in byte-wise order.
    let name = format!("manifests/tank%2Fhome/{VERSION_D}");
    let m = spec::read_manifest(&name, None, &b(&name)).unwrap();
    assert_eq!(m.source_kind, 3, "Command");
    assert_eq!(m.source, "zfs send -R tank/home@2026-11-22");
    let creation = (TIME - 300).to_string();
    let extra: Vec<(&str, &str)> = m
        .extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        extra,
        [
            ("zfs.base_guid", "0000000000000000"),
            ("zfs.compound", "true"),
            ("zfs.creation", creation.as_str()),
            ("zfs.features", "30004"),
            ("zfs.guid", "00c0ffee0badf00d"),
            ("zfs.snapshot", "tank/home@2026-11-22"),
            (
                "zfs.snapshots",
                "1111222233334444 tank/home@2026-11-21\n00c0ffee0badf00d tank/home@2026-11-22"
            ),
            ("zfs.substreams", "2"),
        ]
    );

    // Manifest E: a stream, a parent; `-10` sorts after `-2` though byte-wise it is before.
    let name = format!("manifests/%2Epg%20dump/{VERSION_E}");
    let m = spec::read_manifest(&name, None, &b(&name)).unwrap();
    assert_eq!(m.source_kind, 4, "Stream");
    assert_eq!(m.parent.as_deref(), Some(VERSION_B));
    assert!(VERSION_E < VERSION_B);
    let names = committed_files(&vectors_dir().join("repo-b"));
    assert_eq!(
        spec::list_versions(names.keys().map(String::as_str), SERIES_B),
        [VERSION_B, VERSION_E]
    );

    // The exclusive lock.
    let name = format!("locks/{LOCK_ID_B}");
    let l = spec::read_lock(&name, None, &b(&name)).unwrap();
    assert_eq!(
        (l.mode, l.pid, l.purpose.as_str()),
        (1, 31337, "gc"),
        "Exclusive"
    );
    assert_eq!(
        l.host,
        "vector-host [boot 0123456789abcdef, pid-ns 4026531836]"
    );
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

    // The second list: repository B's seed, and bounds that reach the rarer paths of 9.4.
    let seed_b = keys_b().gear_seed;
    let lengths: Vec<usize> = String::from_utf8(committed("cdc-cuts-2.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(lengths, v.cdc_2_lengths);
    let input = xof(CDC_LABEL, CDC_2_INPUT_LEN);
    assert_eq!(
        spec::cdc_lengths(&input, CDC_2.0, CDC_2.1, CDC_2.2, &gear, seed_b),
        lengths
    );
    assert_eq!(lengths.iter().sum::<usize>(), CDC_2_INPUT_LEN);
    let (min, avg, max) = (CDC_2.0 as usize, CDC_2.1 as usize, CDC_2.2 as usize);
    assert!(!min.is_multiple_of(2), "an odd minimum");
    let (last, cut) = lengths.split_last().unwrap();
    assert!(*last < min, "a tail returned whole: {last}");
    // Cuts found with the small mask, with the large one, and none found: cut at max.
    assert!(cut.iter().any(|&l| l < avg), "{cut:?}");
    assert!(cut.iter().any(|&l| (avg..max).contains(&l)), "{cut:?}");
    assert_eq!(cut.iter().filter(|&&l| l == max).count(), 2, "{cut:?}");
    assert_eq!(cut.iter().filter(|&&l| l == min - 1).count(), 2, "{cut:?}");
    assert!(cut.iter().all(|&l| (min - 1..=max).contains(&l)), "{cut:?}");
    // The paper's loop, a byte at a time from `min`, agrees with the spec's for an even
    // minimum and not for this one: the list tells the two apart.
    let paper = |min: usize| bytewise_cdc(&input, min, avg, max, &gear, seed_b);
    assert_eq!(
        paper(min + 1),
        spec::cdc_lengths(&input, CDC_2.0 + 1, CDC_2.1, CDC_2.2, &gear, seed_b)
    );
    assert_ne!(paper(min), lengths);
}

/// FastCDC as the paper writes it: one byte at a time from `min`, `hash = (hash << 1) +
/// gear[byte]`, the small mask before `center` and the large one after. Not the spec's cut.
fn bytewise_cdc(
    data: &[u8],
    min: usize,
    avg: usize,
    max: usize,
    base_gear: &[u64; 256],
    seed: u64,
) -> Vec<usize> {
    let bits = (avg as f64).log2().round() as usize;
    let (mask_s, mask_l) = (spec::MASKS[bits + 1], spec::MASKS[bits - 1]);
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (mut end, mut center) = (rest.len(), avg);
        if end > max {
            end = max;
        } else if end < center {
            center = end;
        }
        let mut hash = 0u64;
        let cut = (min.min(end)..end)
            .find(|&i| {
                hash = (hash << 1).wrapping_add(base_gear[rest[i] as usize] ^ seed);
                let mask = if i < center { mask_s } else { mask_l };
                hash & mask == 0
            })
            .unwrap_or(end);
        out.push(cut);
        rest = &rest[cut..];
    }
    out
}

/// A reader written from `format-spec/README.md` with no blockvault code.
mod spec {
    use chacha20poly1305::XChaCha20Poly1305;
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use std::collections::BTreeMap;
    use std::io::Read;

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

    pub type R<T> = Result<T, String>;

    /// Section 4.6: the largest payload of each kind, after decompression.
    pub fn limit(kind: u8) -> usize {
        match kind {
            3 => 64 << 20,
            4 => 1 << 30,
            6 => 1 << 16,
            _ => 1 << 20,
        }
    }

    fn checksum(header: &[u8], name: &str, body: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(header);
        h.update(&(name.len() as u32).to_le_bytes());
        h.update(name.as_bytes());
        h.update(body);
        *h.finalize().as_bytes()
    }

    /// Section 4.4, for objects no writer makes: `header || body || checksum`.
    pub fn checksummed(header: [u8; 8], name: &str, body: &[u8]) -> Vec<u8> {
        let mut out = header.to_vec();
        out.extend_from_slice(body);
        out.extend_from_slice(&checksum(&header, name, body));
        out
    }

    /// Section 4.3 likewise: `header || nonce || ciphertext || tag`.
    pub fn encrypted(
        header: [u8; 8],
        key: &[u8; 32],
        nonce: &[u8; 24],
        name: &str,
        body: &[u8],
    ) -> Vec<u8> {
        let mut aad = header.to_vec();
        aad.extend_from_slice(name.as_bytes());
        let mut out = header.to_vec();
        out.extend_from_slice(nonce);
        out.extend(
            XChaCha20Poly1305::new(key.into())
                .encrypt(
                    nonce.into(),
                    Payload {
                        msg: body,
                        aad: &aad,
                    },
                )
                .unwrap(),
        );
        out
    }

    /// [`try_open`] of an object that must open.
    pub fn open(name: &str, key: Option<&[u8; 32]>, bytes: &[u8], kind: u8) -> Vec<u8> {
        try_open(name, key, bytes, kind).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Section 10.1, steps 1 to 3: the payload of object `name`, which must be of `kind`, in a
    /// repository whose sealing key is `key` (None in an unencrypted one, and for its config
    /// and key objects in any: section 4.2).
    pub fn try_open(name: &str, key: Option<&[u8; 32]>, bytes: &[u8], kind: u8) -> R<Vec<u8>> {
        if bytes.len() < 8 {
            return Err("shorter than the header".into());
        }
        let header = &bytes[..8];
        if &header[..4] != b"BVLT" {
            return Err("bad magic".into());
        }
        if header[4] != 1 {
            return Err(format!("version byte {:02x}", header[4]));
        }
        if header[5] != kind {
            return Err(format!("kind {} where the name says {kind}", header[5]));
        }
        let (cipher, codec) = (header[6], header[7]);
        if cipher > 1 || codec > 1 {
            return Err(format!("unknown cipher {cipher} or codec {codec}"));
        }
        let expected = u8::from(key.is_some());
        if cipher != expected {
            return Err(format!(
                "cipher {cipher:02x} where the repository's is {expected:02x}"
            ));
        }
        let body = match key {
            Some(key) => {
                if bytes.len() < 48 {
                    return Err("shorter than header, nonce and tag".into());
                }
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
                    .map_err(|_| "authentication failed".to_string())?
            }
            None => {
                if bytes.len() < 40 {
                    return Err("shorter than header and checksum".into());
                }
                let (body, sum) = bytes[8..].split_at(bytes.len() - 8 - 32);
                if checksum(header, name, body) != sum {
                    return Err("checksum mismatch".into());
                }
                body.to_vec()
            }
        };
        let limit = limit(kind);
        let payload = match codec {
            0 => body,
            _ => decompress(&body, limit)?,
        };
        if payload.len() > limit {
            return Err(format!("payload over the {limit}-byte limit"));
        }
        Ok(payload)
    }

    /// Section 4.5: exactly one zstd frame (not a skippable one) and nothing after it; the
    /// declared size, or else the output, within `limit`.
    fn decompress(body: &[u8], limit: usize) -> R<Vec<u8>> {
        if !body.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            return Err("the body does not start with a zstd frame".into());
        }
        let frame = zstd::zstd_safe::find_frame_compressed_size(body)
            .map_err(|_| "not a zstd frame".to_string())?;
        if frame != body.len() {
            return Err(format!("{} bytes after the zstd frame", body.len() - frame));
        }
        if let Ok(Some(n)) = zstd::zstd_safe::get_frame_content_size(body)
            && n > limit as u64
        {
            return Err(format!(
                "payload over the {limit}-byte limit (the frame declares {n})"
            ));
        }
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(body)
            .and_then(|d| d.take(limit as u64 + 1).read_to_end(&mut out))
            .map_err(|e| format!("zstd: {e}"))?;
        if out.len() > limit {
            return Err(format!("payload over the {limit}-byte limit"));
        }
        Ok(out)
    }

    /// The postcard wire format, as far as blockvault uses it (section 5). The `try_` methods
    /// say why they refuse; the others are for input that must decode.
    pub struct Postcard<'a>(&'a [u8]);

    impl<'a> Postcard<'a> {
        pub fn new(b: &'a [u8]) -> Self {
            Postcard(b)
        }
        pub fn try_take(&mut self, n: usize) -> R<&'a [u8]> {
            if n > self.0.len() {
                return Err("truncated".into());
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }
        pub fn take(&mut self, n: usize) -> &'a [u8] {
            self.try_take(n).unwrap()
        }
        pub fn try_byte(&mut self) -> R<u8> {
            Ok(self.try_take(1)?[0])
        }
        pub fn byte(&mut self) -> u8 {
            self.try_byte().unwrap()
        }
        pub fn try_array<const N: usize>(&mut self) -> R<[u8; N]> {
            Ok(self.try_take(N)?.try_into().unwrap())
        }
        pub fn array<const N: usize>(&mut self) -> [u8; N] {
            self.try_array().unwrap()
        }
        /// LEB128: 7 bits per byte, least significant first, high bit = more; at most 10
        /// bytes, the 10th at most 01.
        pub fn try_varint(&mut self) -> R<u64> {
            let mut v = 0u64;
            for i in 0..10 {
                let b = self.try_byte()?;
                if i == 9 && b > 1 {
                    return Err("varint over 64 bits".into());
                }
                v |= u64::from(b & 0x7f) << (7 * i);
                if b & 0x80 == 0 {
                    return Ok(v);
                }
            }
            unreachable!("the 10th byte ends the varint or is refused")
        }
        pub fn varint(&mut self) -> u64 {
            self.try_varint().unwrap()
        }
        pub fn try_u32(&mut self) -> R<u32> {
            u32::try_from(self.try_varint()?).map_err(|_| "u32 out of range".to_string())
        }
        pub fn u32(&mut self) -> u32 {
            self.try_u32().unwrap()
        }
        /// Zigzag: 0→0, -1→1, 1→2.
        pub fn try_i64(&mut self) -> R<i64> {
            let z = self.try_varint()?;
            Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
        }
        pub fn i64(&mut self) -> i64 {
            self.try_i64().unwrap()
        }
        pub fn try_i32(&mut self) -> R<i32> {
            i32::try_from(self.try_i64()?).map_err(|_| "i32 out of range".to_string())
        }
        pub fn i32(&mut self) -> i32 {
            self.try_i32().unwrap()
        }
        fn try_len(&mut self) -> R<usize> {
            usize::try_from(self.try_varint()?).map_err(|_| "length out of range".to_string())
        }
        pub fn try_bytes(&mut self) -> R<Vec<u8>> {
            let n = self.try_len()?;
            Ok(self.try_take(n)?.to_vec())
        }
        pub fn try_string(&mut self) -> R<String> {
            String::from_utf8(self.try_bytes()?).map_err(|_| "invalid UTF-8".to_string())
        }
        pub fn string(&mut self) -> String {
            self.try_string().unwrap()
        }
        /// An enum's discriminant, one of `variants`.
        pub fn try_enum(&mut self, variants: u32) -> R<u32> {
            let d = self.try_u32()?;
            if d < variants {
                Ok(d)
            } else {
                Err(format!("unknown enum discriminant {d}"))
            }
        }
        pub fn try_option<T>(&mut self, some: impl FnOnce(&mut Self) -> R<T>) -> R<Option<T>> {
            match self.try_byte()? {
                0 => Ok(None),
                1 => some(self).map(Some),
                t => Err(format!("Option tag {t:02x}")),
            }
        }
        /// Keys strictly ascending, byte-wise.
        pub fn try_map(&mut self) -> R<BTreeMap<String, String>> {
            let n = self.try_varint()?;
            let mut out = BTreeMap::new();
            for _ in 0..n {
                let (k, v) = (self.try_string()?, self.try_string()?);
                if out.last_key_value().is_some_and(|(last, _)| *last >= k) {
                    return Err(format!(
                        "map key {k:?} does not come after the key before it"
                    ));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
        pub fn map(&mut self) -> BTreeMap<String, String> {
            self.try_map().unwrap()
        }
        pub fn try_end(self) -> R<()> {
            if self.0.is_empty() {
                Ok(())
            } else {
                Err(format!("{} trailing bytes", self.0.len()))
            }
        }
        pub fn end(self) {
            self.try_end().unwrap()
        }
    }

    // Section 9.3.
    pub fn fixed_rule(size: u32) -> R<()> {
        if size.is_multiple_of(4096) && (65_536..=64 << 20).contains(&size) {
            Ok(())
        } else {
            Err(format!("fixed chunk size {size} breaks section 9.3"))
        }
    }
    pub fn cdc_rule((min, avg, max): (u32, u32, u32)) -> R<()> {
        if (64..=1 << 20).contains(&min)
            && (256..=4 << 20).contains(&avg)
            && (1024..=16 << 20).contains(&max)
            && min <= avg
            && avg <= max
        {
            Ok(())
        } else {
            Err(format!("FastCDC {min}/{avg}/{max} breaks section 9.3"))
        }
    }

    /// Section 6.1, and the checks of 10.6.
    #[derive(Debug, PartialEq)]
    pub struct Config {
        pub repo_id: [u8; 32],
        pub created: i64,
        pub encryption: u32,
        pub fixed_size: u32,
        pub cdc: (u32, u32, u32),
        pub zstd_level: i32,
        pub options: BTreeMap<String, String>,
    }

    pub fn read_config(bytes: &[u8]) -> R<Config> {
        let plain = try_open("config", None, bytes, 1)?;
        let mut r = Postcard::new(&plain);
        let c = Config {
            repo_id: r.try_array()?,
            created: r.try_i64()?,
            encryption: r.try_enum(2)?,
            fixed_size: r.try_u32()?,
            cdc: (r.try_u32()?, r.try_u32()?, r.try_u32()?),
            zstd_level: r.try_i32()?,
            options: r.try_map()?,
        };
        r.try_end()?;
        fixed_rule(c.fixed_size)?;
        cdc_rule(c.cdc)?;
        if !(1..=19).contains(&c.zstd_level) {
            return Err(format!("zstd level {} outside 1..=19", c.zstd_level));
        }
        Ok(c)
    }

    /// Section 6.2.
    #[derive(Debug, PartialEq)]
    pub enum Kdf {
        Argon2id {
            m: u32,
            t: u32,
            p: u32,
            salt: [u8; 16],
        },
        KeyFile {
            salt: [u8; 16],
        },
    }

    #[derive(Debug, PartialEq)]
    pub struct KeyObject {
        pub kdf: Kdf,
        pub created: i64,
        pub host: String,
        pub nonce: [u8; 24],
        pub sealed: Vec<u8>,
    }

    pub fn read_key(name: &str, bytes: &[u8]) -> R<KeyObject> {
        let plain = try_open(name, None, bytes, 2)?;
        let mut r = Postcard::new(&plain);
        let kdf = match r.try_enum(2)? {
            0 => Kdf::Argon2id {
                m: r.try_u32()?,
                t: r.try_u32()?,
                p: r.try_u32()?,
                salt: r.try_array()?,
            },
            _ => Kdf::KeyFile {
                salt: r.try_array()?,
            },
        };
        let k = KeyObject {
            kdf,
            created: r.try_i64()?,
            host: r.try_string()?,
            nonce: r.try_array()?,
            sealed: r.try_bytes()?,
        };
        r.try_end()?;
        Ok(k)
    }

    pub enum Secret<'a> {
        Passphrase(&'a [u8]),
        KeyFile(&'a [u8]),
    }

    /// Sections 7.2 and 7.3: the master key a key object seals, or why not. The Argon2
    /// parameters are checked against the caps before anything is computed.
    pub fn unwrap_key(
        name: &str,
        k: &KeyObject,
        secret: &Secret,
        repo_id: &[u8; 32],
    ) -> R<[u8; 32]> {
        if k.sealed.len() != 48 {
            return Err(format!("sealed is {} bytes, not 48", k.sealed.len()));
        }
        let kek = match (&k.kdf, secret) {
            (Kdf::Argon2id { m, t, p, salt }, Secret::Passphrase(pass)) => {
                if *m > 4_194_304 || *t > 64 || *p > 16 {
                    return Err(format!("Argon2id m={m} t={t} p={p} is over the caps"));
                }
                if *p < 1 || *t < 1 || *m < 8 * p {
                    return Err(format!(
                        "Argon2id m={m} t={t} p={p} is below Argon2's minimum"
                    ));
                }
                kek_argon2id(pass, *m, *t, *p, salt)
            }
            (Kdf::KeyFile { salt }, Secret::KeyFile(s)) => kek_key_file(s, salt),
            _ => return Err("a key object for the other kind of secret".into()),
        };
        let mut aad = name.as_bytes().to_vec();
        aad.extend_from_slice(repo_id);
        let master = XChaCha20Poly1305::new((&kek).into())
            .decrypt(
                (&k.nonce).into(),
                Payload {
                    msg: &k.sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| "the master key does not unwrap".to_string())?;
        Ok(master.try_into().unwrap())
    }

    /// Section 7.2: the secret a key file holds.
    pub fn key_file_secret(bytes: &[u8]) -> R<Vec<u8>> {
        if let Ok(text) = std::str::from_utf8(bytes)
            && let Some(rest) = text.trim().strip_prefix("blockvault-key-file-v1:")
        {
            let rest = rest.trim();
            return match hex::decode(rest) {
                Ok(k) if rest.len() == 64 => Ok(k),
                _ => Err("a key file with the prefix and not 64 hex digits".into()),
            };
        }
        if bytes.len() >= 32 {
            Ok(bytes.to_vec())
        } else {
            Err("a key file shorter than 32 bytes".into())
        }
    }

    /// Section 3: the id a chunk object's name spells (64 lower-case hex digits).
    pub fn chunk_name(name: &str) -> R<[u8; 32]> {
        let bad = || format!("{name:?} is not a chunk name");
        let rest = name.strip_prefix("chunks/").ok_or_else(bad)?;
        let (dir, hexid) = rest.split_once('/').ok_or_else(bad)?;
        let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if hexid.len() != 64 || !hexid.bytes().all(lower_hex) || dir != &hexid[..2] {
            return Err(bad());
        }
        Ok(hex::decode(hexid).unwrap().try_into().unwrap())
    }

    /// Sections 6.3 and 10.3: a chunk's plaintext, which hashes to the id in its name.
    pub fn read_chunk(
        name: &str,
        key: Option<&[u8; 32]>,
        id_key: &[u8; 32],
        bytes: &[u8],
    ) -> R<Vec<u8>> {
        let id = chunk_name(name)?;
        let plain = try_open(name, key, bytes, 3)?;
        if blake3::keyed_hash(id_key, &plain).as_bytes() != &id {
            return Err("the plaintext does not hash to the id in the name".into());
        }
        Ok(plain)
    }

    /// Section 3: a series name as one path segment.
    pub fn escape(series: &str) -> String {
        let mut out = String::new();
        for (i, b) in series.bytes().enumerate() {
            if b.is_ascii_alphanumeric() || b"_-@+=,:".contains(&b) || (b == b'.' && i > 0) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// Section 3: the series an escaped segment names, if it is that series' canonical
    /// escaping.
    pub fn series_of(segment: &str) -> R<String> {
        let b = segment.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let hex = b
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .ok_or_else(|| format!("{segment:?}: a % without two hex digits"))?;
                out.push(u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        let series = String::from_utf8(out).map_err(|_| format!("{segment:?}: not UTF-8"))?;
        if escape(&series) != segment {
            return Err(format!(
                "{segment:?} is not the canonical escaping of {series:?}"
            ));
        }
        Ok(series)
    }

    /// Section 3: `manifests/<series>/<version>` → the series and version, for a version's
    /// name.
    pub fn manifest_name(name: &str) -> R<(String, String)> {
        let bad = || format!("{name:?} is not a manifest name");
        let rest = name.strip_prefix("manifests/").ok_or_else(bad)?;
        let (segment, version) = rest.split_once('/').ok_or_else(bad)?;
        let version_byte = |b: u8| b.is_ascii_alphanumeric() || b"-_.:".contains(&b);
        if !(1..=64).contains(&version.len())
            || !version.bytes().all(version_byte)
            || version.starts_with('.')
        {
            return Err(bad());
        }
        Ok((series_of(segment)?, version.to_string()))
    }

    /// The versions of `series` among object names, in the order of section 3.
    pub fn list_versions<'n>(names: impl Iterator<Item = &'n str>, series: &str) -> Vec<String> {
        let mut out: Vec<String> = names
            .filter_map(|n| manifest_name(n).ok())
            .filter(|(s, _)| s == series)
            .map(|(_, v)| v)
            .collect();
        out.sort_by(|a, b| version_cmp(a, b));
        out
    }

    /// Section 3: time part byte-wise, then the `-N` number.
    pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
        fn key(v: &str) -> (&[u8], u64) {
            if let Some(at) = v.rfind("Z-") {
                let digits = &v[at + 2..];
                if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                    let n = digits.parse().unwrap_or(u64::MAX);
                    return (&v.as_bytes()[..at + 1], n);
                }
            }
            (v.as_bytes(), 1)
        }
        key(a).cmp(&key(b))
    }

    /// Section 6.4.
    #[derive(Debug, PartialEq)]
    pub enum Chunking {
        Fixed(u32),
        Cdc(u32, u32, u32),
    }

    #[derive(Debug, PartialEq)]
    pub enum ChunkRef {
        Data([u8; 32], u32),
        Zero(u32),
    }

    #[derive(Debug, PartialEq)]
    pub struct Manifest {
        pub series: String,
        pub version: String,
        pub time: i64,
        pub host: String,
        pub source_kind: u32,
        pub source: String,
        pub size: u64,
        pub chunking: Chunking,
        pub chunks: Vec<ChunkRef>,
        pub parent: Option<String>,
        pub stats: [u64; 6],
        pub extra: BTreeMap<String, String>,
    }

    /// Sections 6.4 and 10.4.
    pub fn read_manifest(name: &str, key: Option<&[u8; 32]>, bytes: &[u8]) -> R<Manifest> {
        let (series, version) = manifest_name(name)?;
        let plain = try_open(name, key, bytes, 4)?;
        let mut r = Postcard::new(&plain);
        let m = Manifest {
            series: r.try_string()?,
            version: r.try_string()?,
            time: r.try_i64()?,
            host: r.try_string()?,
            source_kind: r.try_enum(5)?,
            source: r.try_string()?,
            size: r.try_varint()?,
            chunking: match r.try_enum(2)? {
                0 => Chunking::Fixed(r.try_u32()?),
                _ => Chunking::Cdc(r.try_u32()?, r.try_u32()?, r.try_u32()?),
            },
            chunks: {
                let n = r.try_varint()?;
                let mut chunks = Vec::new();
                for _ in 0..n {
                    chunks.push(match r.try_enum(2)? {
                        0 => ChunkRef::Data(r.try_array()?, r.try_u32()?),
                        _ => ChunkRef::Zero(r.try_u32()?),
                    });
                }
                chunks
            },
            parent: r.try_option(|r| r.try_string())?,
            stats: [
                r.try_varint()?,
                r.try_varint()?,
                r.try_varint()?,
                r.try_varint()?,
                r.try_varint()?,
                r.try_varint()?,
            ],
            extra: r.try_map()?,
        };
        r.try_end()?;
        if (&m.series, &m.version) != (&series, &version) {
            return Err(format!(
                "it describes {:?} {}, its name {series:?} {version}",
                m.series, m.version
            ));
        }
        let max = match m.chunking {
            Chunking::Fixed(size) => fixed_rule(size).map(|()| size)?,
            Chunking::Cdc(min, avg, max) => cdc_rule((min, avg, max)).map(|()| max)?,
        };
        let mut total = 0u64;
        for (i, c) in m.chunks.iter().enumerate() {
            let len = match c {
                ChunkRef::Data(_, len) | ChunkRef::Zero(len) => *len,
            };
            if !(1..=max).contains(&len) {
                return Err(format!("chunk {i} has length {len}"));
            }
            if let Chunking::Fixed(size) = m.chunking
                && i + 1 < m.chunks.len()
                && len != size
            {
                return Err(format!("fixed chunk {i} has length {len}"));
            }
            total += u64::from(len);
        }
        if total != m.size {
            return Err(format!("chunks add up to {total}, not {}", m.size));
        }
        Ok(m)
    }

    /// Section 6.5 and 10.5.
    #[derive(Debug, PartialEq)]
    pub struct Pointer {
        pub series: String,
        pub version: String,
        pub digest: [u8; 32],
        pub written: i64,
    }

    pub fn read_pointer(name: &str, key: Option<&[u8; 32]>, bytes: &[u8]) -> R<Pointer> {
        let segment = name
            .strip_prefix("current/")
            .ok_or_else(|| format!("{name:?} is not a current pointer's name"))?;
        let series = series_of(segment)?;
        let plain = try_open(name, key, bytes, 5)?;
        let mut r = Postcard::new(&plain);
        let p = Pointer {
            series: r.try_string()?,
            version: r.try_string()?,
            digest: r.try_array()?,
            written: r.try_i64()?,
        };
        r.try_end()?;
        if p.series != series {
            return Err(format!("it points into series {:?}", p.series));
        }
        Ok(p)
    }

    /// Section 6.6.
    #[derive(Debug, PartialEq)]
    pub struct Lock {
        pub mode: u32,
        pub host: String,
        pub pid: u32,
        pub purpose: String,
        pub created: i64,
        pub heartbeat: i64,
    }

    pub fn read_lock(name: &str, key: Option<&[u8; 32]>, bytes: &[u8]) -> R<Lock> {
        let plain = try_open(name, key, bytes, 6)?;
        let mut r = Postcard::new(&plain);
        let l = Lock {
            mode: r.try_enum(2)?,
            host: r.try_string()?,
            pid: r.try_u32()?,
            purpose: r.try_string()?,
            created: r.try_i64()?,
            heartbeat: r.try_i64()?,
        };
        r.try_end()?;
        Ok(l)
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
