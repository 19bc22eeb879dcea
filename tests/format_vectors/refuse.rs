//! `format-spec/vectors/refuse/`: objects a reader MUST refuse, one rule broken in each.
//!
//! Each case is one object under its object name, read as part of repository A or B (in place
//! of the object its fault was made from, the "control"). The checks: blockvault refuses it
//! and so does the spec-only reader of `super::spec`, each for the reason the case is about
//! (the error names it); and both accept the control, the same object with that one fault
//! mended, in the same place, so that the refusal is the rule's doing and nothing else's.

use super::*;
use blockvault::check::{self, CheckOptions};
use blockvault::lock::{self, LockState};
use blockvault::store::{Memory, Store};
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    A,
    B,
}

impl Base {
    pub fn prefix(self) -> &'static str {
        match self {
            Base::A => "repo-a/",
            Base::B => "repo-b/",
        }
    }
    pub fn letter(self) -> &'static str {
        match self {
            Base::A => "A",
            Base::B => "B",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum KeySecret {
    /// The passphrase of repository A.
    Passphrase,
    /// `repo-a.key`.
    KeyFile,
}

/// What a reader is asked to do with the object.
#[derive(Debug, Clone)]
pub enum Probe {
    /// Open the repository (its config).
    Config,
    /// Open the repository with this secret, the case's the only key object.
    Key(KeySecret),
    /// Read chunk `id` from its name.
    Chunk(ChunkId),
    /// Find chunk `id` in a listing of `chunks/` and read it.
    ChunkName(ChunkId),
    /// Load this version of this series.
    Manifest(String, String),
    /// Read the current pointer of this series.
    Current(String),
    /// Read the locks.
    Lock,
    /// List the versions of this series, and load this one if listed.
    Listing(String, String),
}

pub struct Case {
    /// `refuse/<dir>/`.
    pub dir: &'static str,
    pub base: Base,
    pub name: String,
    pub bytes: Vec<u8>,
    /// The same object with the fault mended, and where it goes; the case's object goes
    /// there in its place (the control's name is the case's, except where the name is the
    /// fault).
    pub control_name: String,
    pub control: Vec<u8>,
    pub probe: Probe,
    /// What is wrong, for the README.
    pub what: String,
    /// What the control is, for the README, where it is not the object it replaces.
    pub mended: &'static str,
    /// The rule broken: spec sections, for the README.
    pub rule: &'static str,
    /// A part of blockvault's error, and of the spec-only reader's.
    pub library_says: &'static str,
    pub spec_says: &'static str,
}

impl Case {
    pub fn path(&self) -> String {
        format!("refuse/{}/{}", self.dir, self.name)
    }
}

fn header(version: u8, kind: u8, cipher: u8, codec: u8) -> [u8; 8] {
    [b'B', b'V', b'L', b'T', version, kind, cipher, codec]
}

/// A lock payload of exactly `len` bytes: repository B's lock with a long purpose.
fn lock_payload(len: usize) -> Vec<u8> {
    let short = encode(&LockInfo {
        purpose: String::new(),
        ..lock_b()
    });
    // The purpose's length takes 1 byte when empty, 3 from 16384 bytes on.
    let purpose = "x".repeat(len - short.len() - 2);
    let payload = encode(&LockInfo {
        purpose,
        ..lock_b()
    });
    assert_eq!(payload.len(), len);
    payload
}

fn zstd_declared(payload: &[u8]) -> Vec<u8> {
    let body = zstd::bulk::compress(payload, 19).unwrap();
    assert_eq!(
        zstd::zstd_safe::get_frame_content_size(&body).ok(),
        Some(Some(payload.len() as u64))
    );
    body
}

fn zstd_undeclared(payload: &[u8]) -> Vec<u8> {
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 19).unwrap();
    e.include_contentsize(false).unwrap();
    e.write_all(payload).unwrap();
    let body = e.finish().unwrap();
    assert_eq!(
        zstd::zstd_safe::get_frame_content_size(&body).ok(),
        Some(None)
    );
    body
}

/// A config payload of repository B with these options in this order.
fn config_payload(options: &[(&str, &str)]) -> Vec<u8> {
    let c = config_b();
    let mut payload = encode(&(c.repo_id, c.created, c.encryption, c.chunker, c.zstd_level));
    let pairs: Vec<(String, String)> = options
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    payload.extend(encode(&pairs));
    payload
}

/// Manifest D's payload with these `extra` entries in this order.
fn manifest_d_payload(id_plain: ChunkId, extra: &[(String, String)]) -> Vec<u8> {
    let mut payload = Manifest {
        extra: BTreeMap::new(),
        ..manifest_d(id_plain)
    }
    .encode();
    assert_eq!(payload.pop(), Some(0), "an empty map is its count, 0");
    payload.extend(encode(&extra.to_vec()));
    payload
}

pub fn cases(files: &BTreeMap<String, Vec<u8>>, id_plain: ChunkId) -> Vec<Case> {
    let a = |name: &str| files[&format!("repo-a/{name}")].clone();
    let b = |name: &str| files[&format!("repo-b/{name}")].clone();
    let seal_key_a = blake3::derive_key(CTX_SEAL, &master_key());
    let mut out = Vec::new();

    // 4.2: the cipher of each kind is fixed by the repository.
    let name = layout::current(SERIES_A);
    let digest_a = *blake3::hash(&a(&layout::manifest(SERIES_A, VERSION_A))).as_bytes();
    out.push(Case {
        dir: "cipher-none-in-encrypted",
        base: Base::A,
        bytes: spec::checksummed(header(1, 5, 0, 0), &name, &encode(&current_a(digest_a))),
        control: a(&name),
        control_name: name.clone(),
        name,
        probe: Probe::Current(SERIES_A.into()),
        what: "repository A's current pointer, checksummed (cipher `00`) instead of encrypted: \
               the forgery anyone who can write to the store could make"
            .into(),
        rule: "4.2",
        mended: "",
        library_says: "authentication failed",
        spec_says: "cipher 00 where the repository's is 01",
    });
    let name = layout::chunk(&id_plain);
    out.push(Case {
        dir: "cipher-xchacha-in-unencrypted",
        base: Base::B,
        bytes: spec::encrypted(
            header(1, 3, 1, 0),
            &seal_key_a,
            &counting(0x00),
            &name,
            PLAIN_CHUNK,
        ),
        control: b(&name),
        control_name: name.clone(),
        name,
        probe: Probe::Chunk(id_plain),
        what: "repository B's chunk encrypted (cipher `01`, under repository A's sealing key, \
               nonce `000102…17`) in unencrypted repository B"
            .into(),
        rule: "4.2",
        mended: "",
        library_says: "authentication failed",
        spec_says: "cipher 01 where the repository's is 00",
    });

    // 4.1: the kind is the name's, the version 01.
    let name = layout::current(SERIES_B);
    let digest_e = *blake3::hash(&b(&layout::manifest(SERIES_B, VERSION_E))).as_bytes();
    let pointer_b = encode(&current_b(SERIES_B, VERSION_E, digest_e));
    out.push(Case {
        dir: "kind-not-the-names",
        base: Base::B,
        bytes: spec::checksummed(header(1, 4, 0, 0), &name, &pointer_b),
        control: b(&name),
        control_name: name.clone(),
        name,
        probe: Probe::Current(SERIES_B.into()),
        what: "repository B's current pointer of `.pg dump` with kind byte `04` (manifest) \
               under its `current/` name"
            .into(),
        rule: "4.1, 10.1",
        mended: "",
        library_says: "expected a current-pointer object, found kind 4",
        spec_says: "kind 4 where the name says 5",
    });
    for (dir, version, library_says, spec_says) in [
        (
            "version-00",
            0,
            "format version 0 does not exist",
            "version byte 00",
        ),
        (
            "version-02",
            2,
            "format version 2 is newer than this blockvault understands",
            "version byte 02",
        ),
    ] {
        let name = layout::chunk(&id_plain);
        out.push(Case {
            dir,
            base: Base::B,
            bytes: spec::checksummed(header(version, 3, 0, 0), &name, PLAIN_CHUNK),
            control: b(&name),
            control_name: name.clone(),
            name,
            probe: Probe::Chunk(id_plain),
            what: format!(
                "repository B's chunk with format version byte `{version:02x}` (checksum \
                 recomputed)"
            ),
            rule: "4.1, 10.1",
            mended: "",
            library_says,
            spec_says,
        });
    }

    // 5: a payload decodes to its end; an Option is 00 or 01.
    let name = layout::current(SERIES_B);
    let mut trailing = pointer_b.clone();
    trailing.push(0);
    out.push(Case {
        dir: "trailing-byte",
        base: Base::B,
        bytes: spec::checksummed(header(1, 5, 0, 0), &name, &trailing),
        control: b(&name),
        control_name: name.clone(),
        name,
        probe: Probe::Current(SERIES_B.into()),
        what: "repository B's current pointer of `.pg dump` with one byte (`00`) after its \
               last field"
            .into(),
        rule: "5, 10.1",
        mended: "",
        library_says: "1 trailing bytes",
        spec_says: "1 trailing bytes",
    });
    let m = manifest_e(id_plain);
    let mut payload = m.encode();
    let without = Manifest {
        parent: None,
        ..m.clone()
    }
    .encode();
    let tag = (0..).find(|&i| payload[i] != without[i]).unwrap();
    assert_eq!(
        (payload[tag], without[tag]),
        (1, 0),
        "the parent's Option tag"
    );
    payload[tag] = 2;
    let name = layout::manifest(SERIES_B, VERSION_E);
    out.push(Case {
        dir: "option-tag-02",
        base: Base::B,
        bytes: seal::seal(Kind::Manifest, None, &name, &payload, Some(ZSTD_LEVEL)),
        control: b(&name),
        control_name: name.clone(),
        name,
        probe: Probe::Manifest(SERIES_B.into(), VERSION_E.into()),
        what: format!(
            "manifest E (`.pg dump` {VERSION_E}) with its `parent` Option tag `02` instead of \
             `01` (payload byte {tag})"
        ),
        rule: "5",
        mended: "",
        library_says: "Option discriminant",
        spec_says: "Option tag 02",
    });

    // 7.2: Argon2 parameters above the caps are refused before anything is computed.
    for (dir, (m, t, p), what) in [
        (
            "argon2-memory-over-cap",
            (4_194_305, ARGON2_PASSES, ARGON2_LANES),
            "memory 4194305 KiB (the cap is 4194304)",
        ),
        (
            "argon2-passes-over-cap",
            (ARGON2_MEMORY_KIB, 65, ARGON2_LANES),
            "65 passes (the cap is 64)",
        ),
        (
            "argon2-lanes-over-cap",
            (ARGON2_MEMORY_KIB, ARGON2_PASSES, 17),
            "17 lanes (the cap is 16)",
        ),
    ] {
        let obj = KeyObject {
            kdf: Kdf::Argon2id {
                memory_kib: m,
                passes: t,
                lanes: p,
                salt: passphrase_salt(),
            },
            ..key_object_passphrase()
        };
        let name = layout::key(PASSPHRASE_KEY_ID);
        out.push(Case {
            dir,
            base: Base::A,
            bytes: seal::seal(Kind::Key, None, &name, &encode(&obj), None),
            control: a(&name),
            control_name: name.clone(),
            name,
            probe: Probe::Key(KeySecret::Passphrase),
            what: format!("repository A's passphrase key object asking Argon2id for {what}"),
            rule: "7.2",
            mended: "",
            library_says: "Argon2id cost out of range",
            spec_says: "over the caps",
        });
    }

    // 6.2: `sealed` is 48 bytes.
    let mut obj = key_object_key_file();
    obj.sealed.push(0);
    let name = layout::key(KEY_FILE_KEY_ID);
    out.push(Case {
        dir: "key-sealed-49-bytes",
        base: Base::A,
        bytes: seal::seal(Kind::Key, None, &name, &encode(&obj), None),
        control: a(&name),
        control_name: name.clone(),
        name,
        probe: Probe::Key(KeySecret::KeyFile),
        what: "repository A's key-file key object with `sealed` of 49 bytes: its own 48, then \
               `00`"
            .into(),
        rule: "6.2",
        mended: "",
        library_says: "sealed master key is 49 bytes, expected 48",
        spec_says: "sealed is 49 bytes, not 48",
    });

    // 4.5, 4.6: a lock's payload is at most 64 KiB, whatever its frame says.
    let limit = 1 << 16;
    let name = layout::lock(LOCK_ID_B);
    for (dir, frame, what) in [
        (
            "lock-over-limit",
            zstd_declared as fn(&[u8]) -> Vec<u8>,
            "its frame declares that size",
        ),
        (
            "lock-over-limit-undeclared",
            zstd_undeclared,
            "its frame declares no size, so the output must be capped",
        ),
    ] {
        out.push(Case {
            dir,
            base: Base::B,
            bytes: spec::checksummed(header(1, 6, 0, 1), &name, &frame(&lock_payload(limit + 1))),
            control: spec::checksummed(header(1, 6, 0, 1), &name, &frame(&lock_payload(limit))),
            control_name: name.clone(),
            name: name.clone(),
            probe: Probe::Lock,
            what: format!(
                "repository B's lock, compressed, with a payload of 65537 bytes (a long \
                 `purpose`), one over the limit of its kind; {what}"
            ),
            rule: "4.5, 4.6",
            mended: "the same with a purpose one byte shorter: 65536 bytes, the limit",
            library_says: "exceeds the 65536-byte limit",
            spec_says: "payload over the 65536-byte limit",
        });
    }

    // 4.5: one zstd frame and nothing after it. A decoder that goes on through every frame
    // reads the same payload from both: only the rule refuses them.
    let name = layout::current(SERIES_B);
    let frame = zstd::bulk::compress(&pointer_b, ZSTD_LEVEL).unwrap();
    let skippable = [0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, b'B', b'V', b'L', b'T'];
    for (dir, after, what) in [
        (
            "zstd-second-frame",
            zstd::bulk::compress(b"", ZSTD_LEVEL).unwrap(),
            "a second zstd frame (of nothing)",
        ),
        (
            "zstd-skippable-frame",
            skippable.to_vec(),
            "a skippable frame (`502a4d18`, 4 bytes: `BVLT`)",
        ),
    ] {
        let body = [&frame[..], &after[..]].concat();
        assert_eq!(zstd::stream::decode_all(&body[..]).unwrap(), pointer_b);
        out.push(Case {
            dir,
            base: Base::B,
            bytes: spec::checksummed(header(1, 5, 0, 1), &name, &body),
            control: spec::checksummed(header(1, 5, 0, 1), &name, &frame),
            control_name: name.clone(),
            name: name.clone(),
            probe: Probe::Current(SERIES_B.into()),
            what: format!(
                "repository B's current pointer of `.pg dump`, compressed, then {what} after \
                 its frame"
            ),
            rule: "4.5",
            mended: "that frame alone",
            library_says: "bytes after the zstd frame",
            spec_says: "bytes after the zstd frame",
        });
    }

    out.push(Case {
        dir: "zstd-skippable-frame-alone",
        base: Base::B,
        bytes: spec::checksummed(header(1, 5, 0, 1), &name, &skippable),
        control: spec::checksummed(header(1, 5, 0, 1), &name, &frame),
        control_name: name.clone(),
        name: name.clone(),
        probe: Probe::Current(SERIES_B.into()),
        what: "repository B's current pointer of `.pg dump`, codec `01`, whose body is that \
               skippable frame alone: no zstd frame at all (it would decode to an empty payload)"
            .into(),
        rule: "4.5",
        mended: "the pointer in one zstd frame",
        library_says: "the body does not begin with a zstd frame",
        spec_says: "the body does not start with a zstd frame",
    });

    // 5: map keys strictly ascending.
    assert_eq!(
        config_payload(&[("note", "test vector")]),
        encode(&config_b())
    );
    let control_config = seal::seal(
        Kind::Config,
        None,
        layout::CONFIG,
        &config_payload(&[("note", "test vector"), ("storage_class", "STANDARD")]),
        None,
    );
    for (dir, options, what) in [
        (
            "config-options-descending",
            &[("storage_class", "STANDARD"), ("note", "test vector")][..],
            "repository B's config with the options `storage_class` = `STANDARD`, then \
             `note` = `test vector`: descending",
        ),
        (
            "config-options-duplicated",
            &[
                ("note", "test vector"),
                ("storage_class", "DEEP_ARCHIVE"),
                ("storage_class", "STANDARD"),
            ][..],
            "repository B's config with the option `storage_class` twice, `DEEP_ARCHIVE` then \
             `STANDARD`: a reader keeping the first and one keeping the last would store chunks \
             in different classes",
        ),
    ] {
        out.push(Case {
            dir,
            base: Base::B,
            name: layout::CONFIG.into(),
            bytes: seal::seal(
                Kind::Config,
                None,
                layout::CONFIG,
                &config_payload(options),
                None,
            ),
            control_name: layout::CONFIG.into(),
            control: control_config.clone(),
            probe: Probe::Config,
            what: what.into(),
            rule: "5",
            mended: "`note` = `test vector`, then `storage_class` = `STANDARD`",
            // postcard keeps no custom message: this one is serde's custom error, which
            // only the ascending-keys check raises here (the control decodes).
            library_says: "corrupt payload: Serde Deserialization Error",
            spec_says: "does not come after the key before it",
        });
    }
    let extra: Vec<(String, String)> = manifest_d(id_plain).extra.into_iter().collect();
    assert_eq!(
        manifest_d_payload(id_plain, &extra),
        manifest_d(id_plain).encode()
    );
    let mut duplicated = extra.clone();
    let at = duplicated
        .iter()
        .position(|(k, _)| k == "zfs.base_guid")
        .unwrap();
    duplicated.insert(at + 1, ("zfs.base_guid".into(), "1111222233334444".into()));
    let mut descending = extra.clone();
    let at = descending
        .iter()
        .position(|(k, _)| k == "zfs.snapshot")
        .unwrap();
    assert_eq!(descending[at + 1].0, "zfs.snapshots");
    descending.swap(at, at + 1);
    let name = layout::manifest(SERIES_D, VERSION_D);
    for (dir, extra, what) in [
        (
            "manifest-extra-duplicated",
            duplicated,
            "`zfs.base_guid` twice, `0000000000000000` then `1111222233334444`: a full stream \
             to a reader keeping the first, an incremental one to a reader keeping the last",
        ),
        (
            "manifest-extra-descending",
            descending,
            "`zfs.snapshots` before `zfs.snapshot`",
        ),
    ] {
        out.push(Case {
            dir,
            base: Base::B,
            bytes: seal::seal(
                Kind::Manifest,
                None,
                &name,
                &manifest_d_payload(id_plain, &extra),
                Some(ZSTD_LEVEL),
            ),
            control: b(&name),
            control_name: name.clone(),
            name: name.clone(),
            probe: Probe::Manifest(SERIES_D.into(), VERSION_D.into()),
            what: format!("manifest D (`tank/home`) with the `extra` entries {what}"),
            rule: "5",
            mended: "",
            // postcard keeps no custom message: this one is serde's custom error, which
            // only the ascending-keys check raises here (the control decodes).
            library_says: "corrupt payload: Serde Deserialization Error",
            spec_says: "does not come after the key before it",
        });
    }

    // 3: only the canonical escaping names a series; only lower-case hex names a chunk.
    for (dir, series, segment, version, time, what, mended) in [
        (
            "series-escaped-needlessly",
            "a",
            "%61",
            VERSION_A,
            TIME,
            "a manifest of series `a`, under `manifests/%61/` (`a` is not escaped): a version \
             of no series",
            "the same under `manifests/a/`",
        ),
        (
            "series-escaped-lower-case",
            SERIES_B,
            "%2epg%20dump",
            "2026-11-23T000000Z",
            TIME + 39_293,
            "a manifest of series `.pg dump`, newer than its others, under \
             `manifests/%2epg%20dump/` (lower-case hex): a version of no series",
            "the same under `manifests/%2Epg%20dump/`",
        ),
    ] {
        let payload = Manifest {
            series: series.into(),
            version: version.into(),
            time,
            ..manifest_b(id_plain)
        }
        .encode();
        let name = format!("manifests/{segment}/{version}");
        let control_name = layout::manifest(series, version);
        assert_ne!(name, control_name);
        out.push(Case {
            dir,
            base: Base::B,
            bytes: seal::seal(Kind::Manifest, None, &name, &payload, Some(ZSTD_LEVEL)),
            control: seal::seal(
                Kind::Manifest,
                None,
                &control_name,
                &payload,
                Some(ZSTD_LEVEL),
            ),
            control_name,
            name,
            probe: Probe::Listing(series.into(), version.into()),
            what: what.into(),
            rule: "3",
            mended,
            library_says: "is not listed",
            spec_says: "is not the canonical escaping of",
        });
    }
    let hexid = id_plain.to_hex().to_uppercase();
    let name = format!("chunks/{}/{hexid}", &hexid[..2]);
    let control_name = layout::chunk(&id_plain);
    assert_ne!(name, control_name);
    out.push(Case {
        dir: "chunk-name-upper-case",
        base: Base::B,
        bytes: spec::checksummed(header(1, 3, 0, 0), &name, PLAIN_CHUNK),
        control: b(&control_name),
        control_name,
        name,
        probe: Probe::ChunkName(id_plain),
        what: "repository B's chunk sealed under its name spelt in upper-case hex, in place of \
               the lower-case one: the chunk is missing"
            .into(),
        rule: "3",
        mended: "",
        library_says: "chunk_missing",
        spec_says: "is not a chunk name",
    });
    out
}

/// The objects of the case's repository with `name` in place of the control's name.
fn objects_with(case: &Case, name: &str, bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut objects: BTreeMap<String, Vec<u8>> = committed_files(&vectors_dir())
        .into_iter()
        .filter_map(|(path, bytes)| {
            let name = path.strip_prefix(case.base.prefix())?.to_string();
            Some((name, bytes))
        })
        .collect();
    if let Probe::Key(_) = case.probe {
        // The case's key object alone: the others would open the repository.
        objects.retain(|n, _| !n.starts_with(layout::KEYS));
    }
    objects.remove(&case.control_name);
    objects.insert(name.to_string(), bytes.to_vec());
    objects
}

fn library_secret(s: KeySecret) -> Secret {
    match s {
        KeySecret::Passphrase => passphrase(),
        KeySecret::KeyFile => Secret::KeyFile(Zeroizing::new(key_file_secret().to_vec())),
    }
}

/// What blockvault makes of the object `name` among `objects`: Ok if it reads it, else why not.
async fn library(
    case: &Case,
    objects: &BTreeMap<String, Vec<u8>>,
    name: &str,
) -> Result<(), String> {
    let store = Arc::new(Memory::new());
    for (n, bytes) in objects {
        store.put(n, bytes.clone()).await.unwrap();
    }
    let secret = match case.probe {
        Probe::Key(s) => library_secret(s),
        _ => passphrase(),
    };
    let repo = Repo::open(store.clone(), || Ok(secret))
        .await
        .map_err(|e| format!("{e:#}"))?;
    let full_check = |repo: Repo| async move {
        check::check(
            Arc::new(repo),
            CheckOptions {
                only: None,
                read_data: None,
                in_flight: 4,
                repair: false,
                progress: false,
            },
        )
        .await
        .unwrap()
    };
    match &case.probe {
        // Opening was the test.
        Probe::Config | Probe::Key(_) => Ok(()),
        Probe::Chunk(id) => {
            let bytes = store.get(&layout::chunk(id)).await.unwrap();
            repo.open_chunk(id, &bytes)
                .map(drop)
                .map_err(|e| e.to_string())
        }
        Probe::ChunkName(id) => {
            let report = full_check(repo).await;
            match report
                .problems
                .iter()
                .find(|p| p.object == layout::chunk(id))
            {
                Some(p) => Err(format!("{}: {}", p.kind, p.reason)),
                None if report.is_ok() => Ok(()),
                None => Err(format!("other problems: {:?}", report.problems)),
            }
        }
        Probe::Manifest(series, version) => repo
            .load_manifest(series, version)
            .await
            .map(drop)
            .map_err(|e| format!("{e:#}")),
        Probe::Current(series) => match repo.current(series).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("no current pointer".into()),
            Err(e) => Err(format!("{e:#}")),
        },
        Probe::Lock => {
            let locks = lock::list(&repo, None).await.unwrap();
            let entry = locks.iter().find(|e| e.name == name).expect("listed");
            match &entry.state {
                LockState::Unreadable(why) => Err(why.clone()),
                LockState::Live(_) | LockState::Stale(_) => Ok(()),
            }
        }
        Probe::Listing(series, version) => {
            // Both of blockvault's listings: series then versions, and check's single
            // listing of every manifest.
            let mut listed = Vec::new();
            for s in repo.list_series().await.unwrap() {
                for v in repo.list_versions(&s).await.unwrap() {
                    listed.push((s.clone(), v));
                }
            }
            let report = full_check(repo).await;
            assert_eq!(report.versions as usize, listed.len(), "{listed:?}");
            assert!(report.is_ok(), "{:?}", report.problems);
            if listed.contains(&(series.clone(), version.clone())) {
                Ok(())
            } else {
                Err(format!(
                    "version {version} of series {series:?} is not listed"
                ))
            }
        }
    }
}

/// What the spec-only reader makes of the object `name` among `objects`.
fn spec_reader(case: &Case, objects: &BTreeMap<String, Vec<u8>>, name: &str) -> Result<(), String> {
    let (key, id_key) = match case.base {
        Base::A => (
            Some(blake3::derive_key(CTX_SEAL, &master_key())),
            blake3::derive_key(CTX_ID, &master_key()),
        ),
        Base::B => (None, blake3::derive_key(CTX_UNENCRYPTED_ID, &repo_id_b())),
    };
    let key = key.as_ref();
    let bytes = &objects[name];
    match &case.probe {
        Probe::Config => spec::read_config(bytes).map(drop),
        Probe::Key(s) => {
            let k = spec::read_key(name, bytes)?;
            let key_file = key_file_secret();
            let secret = match s {
                KeySecret::Passphrase => spec::Secret::Passphrase(PASSPHRASE.as_bytes()),
                KeySecret::KeyFile => spec::Secret::KeyFile(&key_file),
            };
            let master = spec::unwrap_key(name, &k, &secret, &repo_id_a())?;
            assert_eq!(master, master_key());
            Ok(())
        }
        Probe::Chunk(_) => spec::read_chunk(name, key, &id_key, bytes).map(drop),
        Probe::ChunkName(id) => {
            match objects
                .keys()
                .find(|n| spec::chunk_name(n).ok() == Some(id.0))
            {
                Some(n) => spec::read_chunk(n, key, &id_key, &objects[n]).map(drop),
                None => Err(format!(
                    "chunk {id} is missing: {}",
                    spec::chunk_name(name).err().unwrap_or_default()
                )),
            }
        }
        Probe::Manifest(..) => spec::read_manifest(name, key, bytes).map(drop),
        Probe::Current(_) => spec::read_pointer(name, key, bytes).map(drop),
        Probe::Lock => spec::read_lock(name, key, bytes).map(drop),
        Probe::Listing(series, version) => {
            if spec::list_versions(objects.keys().map(String::as_str), series).contains(version) {
                spec::read_manifest(name, key, bytes).map(drop)
            } else {
                Err(format!(
                    "not listed: {}",
                    spec::manifest_name(name).err().unwrap_or_default()
                ))
            }
        }
    }
}

#[test]
fn the_committed_refuse_directory_holds_one_object_per_case() {
    let v = build();
    let found = committed_files(&vectors_dir().join("refuse"));
    let mut dirs = BTreeSet::new();
    for case in &v.refuse {
        assert!(dirs.insert(case.dir), "{} twice", case.dir);
        let name = case.path()["refuse/".len()..].to_string();
        assert_eq!(found.get(&name), Some(&case.bytes), "{}", case.path());
        assert_ne!(case.bytes, case.control, "{}", case.dir);
    }
    assert_eq!(found.len(), v.refuse.len());
}

#[tokio::test]
async fn blockvault_and_the_spec_reader_refuse_every_case_and_accept_its_control() {
    let v = build();
    assert!(v.refuse.len() >= 20);
    for case in &v.refuse {
        let committed = committed(&case.path());
        assert_eq!(committed, case.bytes, "{}", case.dir);
        let with_case = objects_with(case, &case.name, &committed);
        let with_control = objects_with(case, &case.control_name, &case.control);

        let refused = library(case, &with_case, &case.name)
            .await
            .expect_err(&format!("{}: blockvault accepts it", case.dir));
        assert!(
            refused.contains(case.library_says),
            "{}: blockvault refuses it, but says {refused:?}",
            case.dir
        );
        let refused = spec_reader(case, &with_case, &case.name)
            .expect_err(&format!("{}: the spec reader accepts it", case.dir));
        assert!(
            refused.contains(case.spec_says),
            "{}: the spec reader refuses it, but says {refused:?}",
            case.dir
        );

        if let Err(e) = library(case, &with_control, &case.control_name).await {
            panic!("{}: blockvault refuses the control: {e}", case.dir);
        }
        if let Err(e) = spec_reader(case, &with_control, &case.control_name) {
            panic!("{}: the spec reader refuses the control: {e}", case.dir);
        }
    }
}
