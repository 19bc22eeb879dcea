//! A repository: a store, its config, the keys that open it, and the object layout.
//!
//! Everything that reads or writes a particular kind of object goes through here, so sealing,
//! naming and the error that names a damaged object are decided in one place.
//!
//! That includes key objects (`blockvault key`): a removal never leaves `keys/` without a key
//! object that decodes, and a change adds the new key object before it removes the old one, so
//! a crash in between leaves both secrets working, never neither. Key management takes no
//! lock: two hosts removing the last two keys at the same instant could still race.

use crate::chunk_id::ChunkId;
use crate::chunker::{
    Chunking, DEFAULT_CDC_AVG, DEFAULT_CDC_MAX, DEFAULT_CDC_MIN, DEFAULT_FIXED_SIZE,
};
use crate::direct;
use crate::error::Error;
use crate::format::config::{ChunkerDefaults, Config, Encryption};
use crate::format::key::{Kdf, KeyObject};
use crate::format::pointer::CurrentPointer;
use crate::format::{FormatError, Kind, encode};
use crate::keys::{self, Argon2Cost, KeyError, Keys, MasterKey, PaperKey, Secret};
use crate::layout;
use crate::lock::Access;
use crate::manifest::Manifest;
use crate::objects;
use crate::seal;
use crate::store::{self, Placed, Store, StoreError};
use anyhow::{Context, Result, anyhow, bail};
use rand::RngCore;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Config option: the S3 storage class for chunk objects when a backup names none.
pub const OPTION_STORAGE_CLASS: &str = "storage_class";

pub struct InitOptions {
    pub encryption: Encryption,
    pub chunker: ChunkerDefaults,
    pub zstd_level: i32,
    pub argon2: Argon2Cost,
    pub options: BTreeMap<String, String>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            encryption: Encryption::XChaCha20Poly1305,
            chunker: ChunkerDefaults {
                fixed_size: DEFAULT_FIXED_SIZE,
                cdc_min: DEFAULT_CDC_MIN,
                cdc_avg: DEFAULT_CDC_AVG,
                cdc_max: DEFAULT_CDC_MAX,
            },
            zstd_level: DEFAULT_ZSTD_LEVEL,
            argon2: Argon2Cost::default(),
            options: BTreeMap::new(),
        }
    }
}

/// A new chunk sealed by [`Repo::seal_new_chunk`].
pub enum SealedChunk {
    /// Compressed into a buffer of its own; `read`, which held the chunk, is free.
    Compressed { object: Placed, read: Vec<u8> },
    /// Sealed as it is, in the buffer that held it.
    Stored(Placed),
}

pub struct Repo {
    store: Arc<dyn Store>,
    pub config: Config,
    pub keys: Keys,
    /// In an encrypted repository: the master key, and the key object that unlocked it.
    unlocked: Option<Unlocked>,
    /// Whether the command using this handle writes to the repository; decides what a lock
    /// that the store refuses to write means ([`crate::lock`]).
    access: Access,
}

struct Unlocked {
    master: MasterKey,
    /// The object name, `keys/<id>`.
    key_name: String,
}

/// One object under `keys/`, as `key list` shows it.
#[derive(Debug)]
pub struct KeyEntry {
    /// The object name without `keys/`.
    pub id: String,
    /// The decoded key object, or why it could not be decoded.
    pub object: Result<KeyObject, String>,
    /// It is the key object that opened the repository this time.
    pub in_use: bool,
}

impl KeyEntry {
    /// "passphrase" or "key file" (or "damaged").
    pub fn kind(&self) -> &'static str {
        match &self.object {
            Ok(KeyObject {
                kdf: Kdf::Argon2id { .. },
                ..
            }) => "passphrase",
            Ok(KeyObject {
                kdf: Kdf::KeyFile { .. },
                ..
            }) => "key file",
            Err(_) => "damaged",
        }
    }
}

/// What `key change` did.
#[derive(Debug)]
pub struct KeyChange {
    pub added: String,
    /// Every key object the old secret opened, the one in use first.
    pub removed: Vec<String>,
}

/// What `key recover` did.
#[derive(Debug)]
pub struct Recovered {
    pub added: String,
    /// The object the paper's master key was checked against (it authenticated), if the
    /// repository held one to check against.
    pub checked_against: Option<String>,
}

/// What `list` and `check` note of a current pointer that names `pointed` while `newest` is
/// the series' newest version: not damage, since restores still pick a version.
pub fn lagging_pointer(series: &str, pointed: &str, newest: &str) -> String {
    format!(
        "the current pointer of series {series:?} names version {pointed}, not the newest, {newest}: restores without --version pick {pointed} until the next backup (a backup whose pointer write failed leaves it so)"
    )
}

pub fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

fn damaged(what: impl Into<String>) -> impl FnOnce(FormatError) -> anyhow::Error {
    let what = what.into();
    move |source| Error::Damaged { what, source }.into()
}

impl Repo {
    /// Creates a repository in an empty store. The config is written last: a store holding a
    /// config holds a complete repository.
    pub async fn init(
        store: Arc<dyn Store>,
        opts: InitOptions,
        secret: Option<Secret>,
    ) -> Result<Repo> {
        let loc = store.describe();
        if store.exists(layout::CONFIG).await? {
            bail!("{loc} already holds a blockvault repository");
        }
        for c in [
            Chunking::Fixed {
                size: opts.chunker.fixed_size,
            },
            Chunking::Cdc {
                min: opts.chunker.cdc_min,
                avg: opts.chunker.cdc_avg,
                max: opts.chunker.cdc_max,
            },
        ] {
            c.validate().map_err(|e| anyhow!(e))?;
        }
        if !(1..=19).contains(&opts.zstd_level) {
            bail!("zstd level {} is outside 1..=19", opts.zstd_level);
        }
        let mut repo_id = [0u8; 32];
        rand::rng().fill_bytes(&mut repo_id);
        let config = Config {
            repo_id,
            created: now_unix(),
            encryption: opts.encryption,
            chunker: opts.chunker,
            zstd_level: opts.zstd_level,
            options: opts.options,
        };
        let mut unlocked = None;
        let keys = match opts.encryption {
            Encryption::None => Keys::unencrypted(&repo_id),
            Encryption::XChaCha20Poly1305 => {
                let secret = secret.ok_or_else(|| {
                    anyhow!("an encrypted repository needs a passphrase or key file")
                })?;
                let master = MasterKey::random();
                let id = add_key(&*store, &master, &secret, opts.argon2, &repo_id).await?;
                let keys = Keys::from_master(&master);
                unlocked = Some(Unlocked {
                    master,
                    key_name: layout::key(&id),
                });
                keys
            }
        };
        let bytes = seal::seal(Kind::Config, None, layout::CONFIG, &encode(&config), None);
        if !store.put_new(layout::CONFIG, bytes).await? {
            bail!("{loc}: another process created a repository here at the same time");
        }
        Ok(Repo {
            store,
            config,
            keys,
            unlocked,
            access: Access::ReadWrite,
        })
    }

    /// Opens a repository. `secret` is asked for only if the repository is encrypted.
    pub async fn open(
        store: Arc<dyn Store>,
        secret: impl FnOnce() -> Result<Secret>,
    ) -> Result<Repo> {
        let loc = store.describe();
        let config = read_config(&*store).await?;
        let what = format!("config of the repository at {loc}");
        let key_names = store.list(layout::KEYS).await?;
        let mut unlocked = None;
        let keys = match config.encryption {
            Encryption::None => {
                // Refuse a config rewritten to "unencrypted" in a repository that has keys: a
                // client believing it would write plaintext.
                if !key_names.is_empty() {
                    return Err(Error::Damaged {
                        what,
                        source: FormatError::Payload(
                            "says unencrypted but keys/ holds keys".into(),
                        ),
                    }
                    .into());
                }
                Keys::unencrypted(&config.repo_id)
            }
            Encryption::XChaCha20Poly1305 => {
                if key_names.is_empty() {
                    bail!(
                        "{loc}: the repository is encrypted but keys/ holds no key; it cannot be opened (with its paper key, `blockvault key recover --paper FILE` can)"
                    );
                }
                let secret = secret()?;
                let (master, key_name) =
                    unlock(&*store, &key_names, &secret, &config.repo_id).await?;
                let keys = Keys::from_master(&master);
                unlocked = Some(Unlocked { master, key_name });
                keys
            }
        };
        Ok(Repo {
            store,
            config,
            keys,
            unlocked,
            access: Access::ReadWrite,
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn location(&self) -> String {
        self.store.describe()
    }

    pub fn access(&self) -> Access {
        self.access
    }

    /// Declares what the command will do with this handle: a handle for reading only may go
    /// on without a lock when the store refuses to write one.
    pub fn set_access(&mut self, access: Access) {
        self.access = access;
    }

    pub fn zstd_level(&self) -> i32 {
        self.config.zstd_level
    }

    /// Adds another passphrase or key file that opens this repository.
    pub async fn add_key(
        &self,
        master: &MasterKey,
        secret: &Secret,
        cost: Argon2Cost,
    ) -> Result<String> {
        add_key(&*self.store, master, secret, cost, &self.config.repo_id).await
    }

    /// The master key of an encrypted repository; an error naming the repository for an
    /// unencrypted one, which has none.
    pub fn master_key(&self) -> Result<&MasterKey> {
        Ok(&self.unlocked()?.master)
    }

    /// The id of the key object that opened the repository (None when unencrypted).
    pub fn opened_with(&self) -> Option<&str> {
        self.unlocked
            .as_ref()
            .and_then(|u| u.key_name.strip_prefix(layout::KEYS))
    }

    fn unlocked(&self) -> Result<&Unlocked> {
        self.unlocked.as_ref().ok_or_else(|| {
            anyhow!(
                "the repository at {} is unencrypted (made with `init --encryption none`): it has no keys",
                self.location()
            )
        })
    }

    /// Every object under `keys/`, in name order, decoded where it can be (a reader must treat
    /// every object there as a key object, format-spec 3).
    pub async fn list_keys(&self) -> Result<Vec<KeyEntry>> {
        let in_use = &self.unlocked()?.key_name;
        let mut out = Vec::new();
        for name in self.store.list(layout::KEYS).await? {
            let Some(object) = read_key(&*self.store, &name).await? else {
                continue;
            };
            out.push(KeyEntry {
                id: name[layout::KEYS.len()..].to_string(),
                object: object.map_err(|e| e.to_string()),
                in_use: name == *in_use,
            });
        }
        Ok(out)
    }

    /// Adds a key object sealing this repository's master key under `secret`; its id.
    pub async fn add_secret(&self, secret: &Secret, cost: Argon2Cost) -> Result<String> {
        let master = self.master_key()?;
        add_key(&*self.store, master, secret, cost, &self.config.repo_id).await
    }

    /// Removes the key object `id`. Refused when no other key object that decodes would be
    /// left, and for the key that opened the repository unless `force`.
    pub async fn remove_key(&self, id: &str, force: bool) -> Result<()> {
        let loc = self.location();
        let id = id.strip_prefix(layout::KEYS).unwrap_or(id);
        let entries = self.list_keys().await?;
        let Some(entry) = entries.iter().find(|e| e.id == id) else {
            let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
            let prefixed: Vec<&str> = ids
                .iter()
                .copied()
                .filter(|i| !id.is_empty() && i.starts_with(id))
                .collect();
            if let [one] = prefixed.as_slice() {
                bail!(
                    "no key {id} in the repository at {loc}: it is the start of key {one}; give the whole id to remove it"
                );
            }
            bail!(
                "no key {id} in the repository at {loc}; its keys are {}",
                ids.join(", ")
            );
        };
        let others = entries
            .iter()
            .filter(|e| e.id != id && e.object.is_ok())
            .count();
        if others == 0 {
            bail!(
                "key {id} is the last {}key of the repository at {loc}: without it the repository cannot be opened; add another first (`blockvault key add`)",
                if entries.len() > 1 { "readable " } else { "" }
            );
        }
        if entry.in_use && !force {
            bail!(
                "key {id} is the one that opened the repository at {loc} this time: add --force to remove it anyway (then this passphrase or key file no longer opens it)"
            );
        }
        let name = layout::key(id);
        self.store
            .delete(&name)
            .await
            .with_context(|| format!("removing key {id} from the repository at {loc}"))
    }

    /// The ids of every key object that `secret` opens (tries each one: an Argon2 run per
    /// passphrase key).
    pub async fn keys_opened_by(&self, secret: &Secret) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for e in self.list_keys().await? {
            let Ok(obj) = &e.object else { continue };
            let name = layout::key(&e.id);
            if keys::unwrap(obj, secret, &name, &self.config.repo_id).is_ok() {
                out.push(e.id);
            }
        }
        Ok(out)
    }

    /// Replaces `old` (the secret that opened the repository) by `new`: first adds a key object
    /// for `new`, then removes every key object `old` opens, so a crash in between leaves both
    /// secrets working, never neither.
    pub async fn change_key(
        &self,
        old: &Secret,
        new: &Secret,
        cost: Argon2Cost,
    ) -> Result<KeyChange> {
        let loc = self.location();
        let in_use = self.unlocked()?.key_name[layout::KEYS.len()..].to_string();
        if old.same_as(new) {
            bail!(
                "the new {} is the one that opens the repository at {loc} already: nothing to change",
                new.kind()
            );
        }
        let mut removed = vec![in_use.clone()];
        for id in self.keys_opened_by(old).await? {
            if id != in_use {
                removed.push(id);
            }
        }
        let added = self.add_secret(new, cost).await?;
        for id in &removed {
            self.store
                .delete(&layout::key(id))
                .await
                .with_context(|| {
                    format!(
                        "added key {added}, but removing the old key {id} from the repository at {loc} failed (remove it with `blockvault key remove --id {id} --force`)"
                    )
                })?;
        }
        Ok(KeyChange { added, removed })
    }

    /// Adds a key object for the secret `new_secret` gives, sealing the master key from a paper
    /// key, without opening the repository with a secret first: for when none opens it any
    /// more. The paper must be for this repository, and its key must authenticate an object
    /// here (a current pointer or manifest) when there is one; `new_secret` is asked for only
    /// after those checks.
    pub async fn recover_key(
        store: Arc<dyn Store>,
        paper: &PaperKey,
        new_secret: impl FnOnce() -> Result<Secret>,
        cost: Argon2Cost,
    ) -> Result<Recovered> {
        let loc = store.describe();
        let config = read_config(&*store).await?;
        if config.encryption == Encryption::None {
            bail!(
                "the repository at {loc} is unencrypted (made with `init --encryption none`): it has no keys to recover"
            );
        }
        if paper.repo_id != config.repo_id {
            bail!(
                "the paper key is for another repository: it names repository {}, and the one at {loc} is {}",
                hex::encode(paper.repo_id),
                hex::encode(config.repo_id)
            );
        }
        let checked_against = check_master(&*store, &paper.master).await?;
        let secret = new_secret()?;
        let added = add_key(&*store, &paper.master, &secret, cost, &config.repo_id).await?;
        Ok(Recovered {
            added,
            checked_against,
        })
    }

    pub fn seal_chunk(&self, id: &ChunkId, data: &[u8]) -> Vec<u8> {
        seal::seal(
            Kind::Chunk,
            self.keys.seal.as_ref(),
            &layout::chunk(id),
            data,
            Some(self.config.zstd_level),
        )
    }

    /// [`Repo::seal_chunk`] of the payload `buf` holds after [`seal::HEADROOM`] bytes. A chunk
    /// that compresses is sealed into a buffer of its own, at an address a direct write takes
    /// as it is, and `buf` is free again; one that does not is sealed where it lies, in `buf`.
    pub fn seal_new_chunk(&self, id: &ChunkId, mut buf: Vec<u8>) -> SealedChunk {
        let name = layout::chunk(id);
        let key = self.keys.seal.as_ref();
        let payload = buf.get(seal::HEADROOM..).unwrap_or_default();
        let level = self.config.zstd_level;
        let mut out = Vec::new();
        match seal::seal_compressed(
            Kind::Chunk,
            key,
            &name,
            payload,
            level,
            direct::ALIGN,
            &mut out,
        ) {
            Some(start) => SealedChunk::Compressed {
                object: Placed::new(out, start),
                read: buf,
            },
            None => {
                seal::seal_in_place(Kind::Chunk, key, &name, &mut buf);
                SealedChunk::Stored(Placed::new(buf, 0))
            }
        }
    }

    pub fn open_chunk(&self, id: &ChunkId, bytes: &[u8]) -> Result<Vec<u8>, FormatError> {
        seal::open_chunk(&self.keys, id, &layout::chunk(id), bytes)
    }

    /// [`Repo::open_chunk_owned`] that decompresses into `spare` ([`seal::open_chunk_reusing`]).
    pub fn open_chunk_reusing(
        &self,
        id: &ChunkId,
        object: (Vec<u8>, std::ops::Range<usize>),
        spare: &mut Vec<u8>,
    ) -> Result<seal::Plain, FormatError> {
        seal::open_chunk_reusing(&self.keys, id, &layout::chunk(id), object, spare)
    }

    /// The plaintext length of a chunk object that authenticates and hashes to `id`
    /// ([`seal::verify_chunk`]).
    pub fn verify_chunk(&self, id: &ChunkId, bytes: &mut [u8]) -> Result<usize, FormatError> {
        seal::verify_chunk(&self.keys, id, &layout::chunk(id), bytes)
    }

    /// [`Repo::open_chunk`] of an object in a buffer of its own, decrypted where it lies.
    pub fn open_chunk_owned(&self, id: &ChunkId, bytes: Vec<u8>) -> Result<Vec<u8>, FormatError> {
        seal::open_chunk_owned(&self.keys, id, &layout::chunk(id), bytes)
    }

    /// Stores a manifest under its series and version: whether that name is now this
    /// manifest's, and the digest a `current` pointer records.
    pub async fn save_manifest(&self, m: &Manifest) -> Result<(store::Claim, [u8; 32])> {
        let name = layout::manifest(&m.series, &m.version);
        let bytes = seal::seal(
            Kind::Manifest,
            self.keys.seal.as_ref(),
            &name,
            &m.encode(),
            Some(self.config.zstd_level),
        );
        let digest = *blake3::hash(&bytes).as_bytes();
        let claim = store::create_manifest(self.store.as_ref(), &name, bytes)
            .await
            .with_context(|| {
                format!(
                    "storing the manifest of series {:?} version {}",
                    m.series, m.version
                )
            })?;
        Ok((claim, digest))
    }

    pub async fn load_manifest(&self, series: &str, version: &str) -> Result<(Manifest, [u8; 32])> {
        let name = layout::manifest(series, version);
        let bytes = match self.store.get(&name).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => bail!(
                "series {series:?} has no version {version} in {}",
                self.location()
            ),
            Err(e) => return Err(e.into()),
        };
        let what = format!("manifest {name} (series {series:?}, version {version})");
        let m =
            objects::manifest(self.keys.seal.as_ref(), &name, &bytes).map_err(damaged(&what))?;
        if m.series != series || m.version != version {
            return Err(damaged(what)(FormatError::Payload(format!(
                "it describes series {:?} version {}",
                m.series, m.version
            ))));
        }
        Ok((m, *blake3::hash(&bytes).as_bytes()))
    }

    pub async fn current(&self, series: &str) -> Result<Option<CurrentPointer>> {
        let name = layout::current(series);
        let bytes = match self.store.get(&name).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let what = format!("current pointer {name} of series {series:?}");
        let p = objects::pointer(self.keys.seal.as_ref(), &name, &bytes).map_err(damaged(&what))?;
        if p.series != series {
            return Err(damaged(what)(FormatError::Payload(format!(
                "it points into series {:?}",
                p.series
            ))));
        }
        Ok(Some(p))
    }

    pub async fn set_current(&self, series: &str, version: &str, digest: [u8; 32]) -> Result<()> {
        let name = layout::current(series);
        let p = CurrentPointer {
            series: series.into(),
            version: version.into(),
            manifest_digest: digest,
            written: now_unix(),
        };
        let bytes = seal::seal(
            Kind::Current,
            self.keys.seal.as_ref(),
            &name,
            &encode(&p),
            None,
        );
        self.store.put(&name, bytes).await.with_context(|| {
            format!("moving the current pointer of series {series:?} to {version}")
        })
    }

    /// Every series that has at least one version, sorted.
    pub async fn list_series(&self) -> Result<Vec<String>> {
        let mut series: Vec<String> = self
            .store
            .list(layout::MANIFESTS)
            .await?
            .iter()
            .filter_map(|k| layout::parse_manifest_key(k))
            .map(|(s, _)| s)
            .collect();
        series.dedup();
        series.sort();
        series.dedup();
        Ok(series)
    }

    /// The versions of a series, oldest first (version names sort by time).
    pub async fn list_versions(&self, series: &str) -> Result<Vec<String>> {
        let keys = self.store.list(&layout::manifests_of(series)).await?;
        let mut v: Vec<String> = keys
            .iter()
            .filter_map(|k| layout::parse_manifest_key(k))
            .filter(|(s, _)| s == series)
            .map(|(_, v)| v)
            .collect();
        v.sort_by(|a, b| layout::version_order(a, b));
        Ok(v)
    }

    /// Turns `--version` (a full name, a unique prefix, or nothing for the current version)
    /// into a version name, with an error that lists what exists.
    pub async fn resolve_version(&self, series: &str, wanted: Option<&str>) -> Result<String> {
        let versions = self.list_versions(series).await?;
        if versions.is_empty() {
            let known = self.list_series().await?;
            if known.is_empty() {
                bail!(
                    "series {series:?} not found: the repository at {} holds no backups yet",
                    self.location()
                );
            }
            bail!(
                "series {series:?} not found in {}; series there: {}",
                self.location(),
                known.join(", ")
            );
        }
        let Some(mut wanted) = wanted else {
            if let Some(p) = self.current(series).await?
                && versions.contains(&p.version)
            {
                return Ok(p.version);
            }
            return Ok(versions[versions.len() - 1].clone());
        };
        if versions.iter().any(|v| v == wanted) {
            return Ok(wanted.to_string());
        }
        // A time as `list` shows it (RFC 3339) names the version made at that time.
        let named;
        if let Ok(t) = wanted.parse::<jiff::Timestamp>() {
            named = crate::backup::version_name(t);
            wanted = &named;
            if versions.iter().any(|v| v == wanted) {
                return Ok(wanted.to_string());
            }
        }
        let matching: Vec<&String> = versions.iter().filter(|v| v.starts_with(wanted)).collect();
        match matching.as_slice() {
            [one] => Ok((*one).clone()),
            [] => bail!(
                "series {series:?} has no version {wanted:?}; its versions are {} .. {} ({} in all; see `blockvault list --name {series}`)",
                versions[0],
                versions[versions.len() - 1],
                versions.len()
            ),
            many => bail!(
                "version {wanted:?} of series {series:?} is ambiguous: it matches {} ({} in all; give more of the name)",
                crate::error::listed(many, 10),
                many.len()
            ),
        }
    }
}

/// Reads and checks `config`: no config means no repository.
async fn read_config(store: &dyn Store) -> Result<Config> {
    let loc = store.describe();
    let bytes = match store.get(layout::CONFIG).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => {
            bail!(
                "{loc} is not a blockvault repository (it has no config object); create one with `blockvault init`"
            )
        }
        Err(e) => return Err(e.into()),
    };
    let what = format!("config of the repository at {loc}");
    objects::config(&bytes).map_err(damaged(&what))
}

/// A key object: `None` if it vanished since it was listed, `Some(Err)` if it is damaged.
async fn read_key(store: &dyn Store, name: &str) -> Result<Option<Result<KeyObject, FormatError>>> {
    let bytes = match store.get(name).await {
        Ok(b) => b,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(Some(objects::key(name, &bytes)))
}

/// How many objects a recovered master key is tried on before it is refused.
const RECOVER_CHECKS: usize = 8;

/// Checks a master key from a paper key against the repository's own sealed objects: current
/// pointers first (one per series), then manifests. The first that authenticates proves the
/// key; `None` when there is nothing sealed to try. An object that fails could be damaged
/// rather than the key wrong, so the key is refused only when every object tried fails.
async fn check_master(store: &dyn Store, master: &MasterKey) -> Result<Option<String>> {
    let keys = Keys::from_master(master);
    let mut tried = Vec::new();
    for (prefix, kind) in [
        (layout::CURRENT, Kind::Current),
        (layout::MANIFESTS, Kind::Manifest),
    ] {
        for name in store.list(prefix).await? {
            if tried.len() >= RECOVER_CHECKS {
                break;
            }
            let bytes = match store.get(&name).await {
                Ok(b) => b,
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            match seal::open(
                kind,
                keys.seal.as_ref(),
                &name,
                &bytes,
                objects::max_len(kind),
            ) {
                // Decompression comes after the tag checked out: these prove the key too.
                Ok(_) | Err(FormatError::TooLarge(_) | FormatError::Payload(_)) => {
                    return Ok(Some(name));
                }
                Err(FormatError::Authentication) => tried.push(name),
                // A header we cannot read: proves nothing either way.
                Err(_) => {}
            }
        }
    }
    match tried.as_slice() {
        [] => Ok(None),
        [first, ..] => bail!(
            "the master key on the paper key does not open {first}{} in {}: the paper key is for another key of this repository id, or those objects are damaged",
            match tried.len() - 1 {
                0 => String::new(),
                n => format!(" (nor {n} other objects)"),
            },
            store.describe()
        ),
    }
}

async fn add_key(
    store: &dyn Store,
    master: &MasterKey,
    secret: &Secret,
    cost: Argon2Cost,
    repo_id: &[u8; 32],
) -> Result<String> {
    let mut id = [0u8; 16];
    rand::rng().fill_bytes(&mut id);
    let id = hex::encode(id);
    let name = layout::key(&id);
    let obj = keys::wrap(
        master,
        secret,
        cost,
        &name,
        repo_id,
        &hostname(),
        now_unix(),
    )
    .map_err(|e| anyhow!("sealing the key: {e}"))?;
    let bytes = seal::seal(Kind::Key, None, &name, &encode(&obj), None);
    if !store.put_new(&name, bytes).await? {
        bail!("key {name} already exists");
    }
    Ok(id)
}

/// What deriving one of the keys blockvault writes costs, in [`derivation_cost`]'s units.
const DEFAULT_COST: u64 =
    keys::DEFAULT_ARGON2_MEMORY_KIB as u64 * keys::DEFAULT_ARGON2_PASSES as u64;
/// Keys dearer than this are announced before they are tried.
const NOTICE_COST: u64 = 16 * DEFAULT_COST;

/// Memory times passes of a key object's key derivation, to order the trials by.
fn derivation_cost(kdf: &Kdf) -> u64 {
    match kdf {
        Kdf::Argon2id {
            memory_kib, passes, ..
        } => u64::from(*memory_kib) * u64::from(*passes),
        Kdf::KeyFile { .. } => 0,
    }
}

/// Tries `secret` on each key object in turn: the master key and the name of the first that
/// opens.
async fn unlock(
    store: &dyn Store,
    names: &[String],
    secret: &Secret,
    repo_id: &[u8; 32],
) -> Result<(MasterKey, String)> {
    let mut damaged_keys: Vec<(String, FormatError)> = Vec::new();
    let mut candidates = Vec::new();
    for name in names {
        match read_key(store, name).await? {
            None => {}
            Some(Ok(o)) => candidates.push((name, o)),
            Some(Err(e)) => damaged_keys.push((name.clone(), e)),
        }
    }
    // Cheapest derivation first: anyone who can write to keys/ could plant a key object that
    // asks Argon2 for 4 GiB and 64 passes, and trying it first would cost every open minutes
    // (or the memory it asks for). Ours are tried before it, and the right secret never
    // reaches it.
    candidates.sort_by_key(|(name, o)| (derivation_cost(&o.kdf), *name));
    for (name, obj) in candidates {
        // A wrong passphrase still reaches such a key, and the wait should not look like a
        // hang: say what is being derived and why it may be someone else's.
        let cost = derivation_cost(&obj.kdf);
        if let Kdf::Argon2id {
            memory_kib, passes, ..
        } = obj.kdf
            && cost > NOTICE_COST
            && keys::argon2_within_caps(&obj.kdf)
        {
            eprintln!(
                "note: trying key object {name}, which asks Argon2id for {} MiB and {passes} passes ({}x the cost of the keys blockvault writes): this may take minutes. blockvault writes no such key; if nobody here made it, someone with write access to the store may have planted it (`blockvault key list`, `key remove`)",
                memory_kib / 1024,
                cost / DEFAULT_COST,
            );
        }
        match keys::unwrap(&obj, secret, name, repo_id) {
            Ok(master) => return Ok((master, name.clone())),
            Err(KeyError::Wrong | KeyError::WrongKind) => continue,
            Err(KeyError::Format(e)) => damaged_keys.push((name.clone(), e)),
        }
    }
    let repo = store.describe();
    if !damaged_keys.is_empty() {
        // A damaged key may have been the one this secret opens: the repository is damaged
        // (exit 3), and blaming the passphrase could send the user hunting for another.
        let names: Vec<String> = damaged_keys.iter().map(|(n, _)| n.clone()).collect();
        let (first, source) = damaged_keys.swap_remove(0);
        return Err(anyhow!(Error::Damaged {
            what: format!("key object {first}"),
            source,
        })
        .context(format!(
            "no key object of the repository at {repo} opens with this passphrase or key file, and {} damaged ({}); if the passphrase is right, its key was the damaged one: use another passphrase, key file or the paper key (`blockvault key recover`)",
            if names.len() == 1 { "one is" } else { "some are" },
            names.join(", ")
        )));
    }
    Err(Error::WrongKey { repo }.into())
}
