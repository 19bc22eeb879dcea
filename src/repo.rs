//! A repository: a store, its config, the keys that open it, and the object layout.
//!
//! Everything that reads or writes a particular kind of object goes through here, so sealing,
//! naming and the error that names a damaged object are decided in one place.

use crate::chunk_id::ChunkId;
use crate::chunker::{
    Chunking, DEFAULT_CDC_AVG, DEFAULT_CDC_MAX, DEFAULT_CDC_MIN, DEFAULT_FIXED_SIZE,
};
use crate::error::Error;
use crate::format::config::{ChunkerDefaults, Config, Encryption};
use crate::format::key::KeyObject;
use crate::format::pointer::CurrentPointer;
use crate::format::{FormatError, Kind, decode_exact, encode};
use crate::keys::{self, Argon2Cost, KeyError, Keys, MasterKey, Secret};
use crate::layout;
use crate::manifest::Manifest;
use crate::seal::{self, MAX_METADATA_LEN};
use crate::store::{Store, StoreError};
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

pub struct Repo {
    store: Arc<dyn Store>,
    pub config: Config,
    pub keys: Keys,
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
        let keys = match opts.encryption {
            Encryption::None => Keys::unencrypted(&repo_id),
            Encryption::XChaCha20Poly1305 => {
                let secret = secret.ok_or_else(|| {
                    anyhow!("an encrypted repository needs a passphrase or key file")
                })?;
                let master = MasterKey::random();
                add_key(&*store, &master, &secret, opts.argon2, &repo_id).await?;
                Keys::from_master(&master)
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
        })
    }

    /// Opens a repository. `secret` is asked for only if the repository is encrypted.
    pub async fn open(
        store: Arc<dyn Store>,
        secret: impl FnOnce() -> Result<Secret>,
    ) -> Result<Repo> {
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
        let plain = seal::open(Kind::Config, None, layout::CONFIG, &bytes, MAX_METADATA_LEN)
            .map_err(damaged(&what))?;
        let config: Config = decode_exact(&plain).map_err(damaged(&what))?;
        validate_config(&config).map_err(|e| damaged(&what)(FormatError::Payload(e)))?;
        let key_names = store.list(layout::KEYS).await?;
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
                        "{loc}: the repository is encrypted but keys/ holds no key; it cannot be opened"
                    );
                }
                let secret = secret()?;
                let master = unlock(&*store, &key_names, &secret, &config.repo_id).await?;
                Keys::from_master(&master)
            }
        };
        Ok(Repo {
            store,
            config,
            keys,
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn location(&self) -> String {
        self.store.describe()
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

    pub fn seal_chunk(&self, id: &ChunkId, data: &[u8]) -> Vec<u8> {
        seal::seal(
            Kind::Chunk,
            self.keys.seal.as_ref(),
            &layout::chunk(id),
            data,
            Some(self.config.zstd_level),
        )
    }

    pub fn open_chunk(&self, id: &ChunkId, bytes: &[u8]) -> Result<Vec<u8>, FormatError> {
        seal::open_chunk(&self.keys, id, &layout::chunk(id), bytes)
    }

    /// Stores a manifest under its series and version. `Ok(None)` if that version name is
    /// taken; otherwise the digest a `current` pointer records.
    pub async fn save_manifest(&self, m: &Manifest) -> Result<Option<[u8; 32]>> {
        let name = layout::manifest(&m.series, &m.version);
        let bytes = seal::seal(
            Kind::Manifest,
            self.keys.seal.as_ref(),
            &name,
            &m.encode(),
            Some(self.config.zstd_level),
        );
        let digest = *blake3::hash(&bytes).as_bytes();
        let created = self.store.put_new(&name, bytes).await.with_context(|| {
            format!(
                "storing the manifest of series {:?} version {}",
                m.series, m.version
            )
        })?;
        Ok(created.then_some(digest))
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
        let plain = seal::open(
            Kind::Manifest,
            self.keys.seal.as_ref(),
            &name,
            &bytes,
            MAX_METADATA_LEN,
        )
        .map_err(damaged(&what))?;
        let m = Manifest::decode(&plain).map_err(damaged(&what))?;
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
        let plain = seal::open(
            Kind::Current,
            self.keys.seal.as_ref(),
            &name,
            &bytes,
            MAX_METADATA_LEN,
        )
        .map_err(damaged(&what))?;
        let p: CurrentPointer = decode_exact(&plain).map_err(damaged(&what))?;
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
        let Some(wanted) = wanted else {
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
                "version {wanted:?} of series {series:?} is ambiguous: it matches {}",
                many.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// What a client checks before trusting a config's settings.
fn validate_config(c: &Config) -> Result<(), String> {
    Chunking::Fixed {
        size: c.chunker.fixed_size,
    }
    .validate()?;
    Chunking::Cdc {
        min: c.chunker.cdc_min,
        avg: c.chunker.cdc_avg,
        max: c.chunker.cdc_max,
    }
    .validate()?;
    if !(1..=19).contains(&c.zstd_level) {
        return Err(format!("zstd level {} is outside 1..=19", c.zstd_level));
    }
    Ok(())
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

async fn unlock(
    store: &dyn Store,
    names: &[String],
    secret: &Secret,
    repo_id: &[u8; 32],
) -> Result<MasterKey> {
    let mut damaged_keys = Vec::new();
    for name in names {
        let bytes = match store.get(name).await {
            Ok(b) => b,
            Err(StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let obj: KeyObject = match seal::open(Kind::Key, None, name, &bytes, 1 << 20)
            .and_then(|p| decode_exact(&p))
        {
            Ok(o) => o,
            Err(e) => {
                damaged_keys.push(format!("{name}: {e}"));
                continue;
            }
        };
        match keys::unwrap(&obj, secret, name, repo_id) {
            Ok(master) => return Ok(master),
            Err(KeyError::Wrong | KeyError::WrongKind) => continue,
            Err(KeyError::Format(e)) => damaged_keys.push(format!("{name}: {e}")),
        }
    }
    let repo = store.describe();
    if !damaged_keys.is_empty() {
        // A damaged key may have been the one this secret opens: say so rather than blame the user.
        return Err(anyhow!(Error::WrongKey { repo })
            .context(format!("damaged key objects: {}", damaged_keys.join("; "))));
    }
    Err(Error::WrongKey { repo }.into())
}
