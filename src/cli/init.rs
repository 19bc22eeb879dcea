use super::{GlobalArgs, parse_size, usage};
use crate::chunker::{Chunking, DEFAULT_FIXED_SIZE};
use crate::format::config::Encryption;
use crate::keys::Secret;
use crate::repo::{InitOptions, OPTION_STORAGE_CLASS, Repo};
use crate::store::{LocalDir, S3, Store};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EncryptionArg {
    /// XChaCha20-Poly1305 under a random master key, sealed by your passphrase or key file.
    Repokey,
    /// No encryption: for people who ask for it by name.
    None,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    #[arg(long, value_enum, default_value = "repokey")]
    pub encryption: EncryptionArg,
    /// Fixed chunk size for files and block devices (a multiple of 4 KiB, 64K to 64M).
    #[arg(long, value_parser = parse_chunk_size, default_value_t = DEFAULT_FIXED_SIZE)]
    pub chunk_size: u32,
    /// zstd compression level (1-19): 3 balances speed against size.
    #[arg(long, default_value_t = crate::repo::DEFAULT_ZSTD_LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression: i32,
}

/// A size (`4M`) that the fixed chunker accepts, so that a wrong one is a usage error.
fn parse_chunk_size(s: &str) -> Result<u32, String> {
    let size = parse_size(s)?;
    let size = u32::try_from(size).map_err(|_| format!("{s:?} is too large"))?;
    Chunking::Fixed { size }.validate()?;
    Ok(size)
}

pub async fn run(g: &GlobalArgs, a: InitArgs) -> Result<()> {
    let loc = g.repo_location()?;
    let mut options = BTreeMap::new();
    if let Some(class) = &g.storage_class {
        crate::store::s3::storage_class(Some(class))
            .map_err(|e| usage(format!("--storage-class: {e}")))?;
        if loc.starts_with("s3://") {
            options.insert(OPTION_STORAGE_CLASS.to_string(), class.clone());
        }
    }
    if !loc.starts_with("s3://") {
        g.warn_s3_options_ignored(loc);
    }
    // Everything that can be refused is refused before anything is created: a failed init
    // must not leave a directory that makes the next one say "already exists".
    let mut create = None;
    let store: Arc<dyn Store> = if loc.starts_with("s3://") {
        let s3 = S3::connect(g.s3_options(loc)?).await?;
        s3.check_bucket().await?;
        // The probe object may be there from an init that failed after writing it.
        if s3.list("").await?.iter().any(|k| k != crate::layout::PROBE) {
            bail!(
                "{} already holds objects; choose an empty prefix for a new repository",
                s3.describe()
            );
        }
        Arc::new(s3)
    } else {
        let path = Path::new(loc);
        if path.exists() {
            let empty = path.is_dir()
                && path
                    .read_dir()
                    .with_context(|| format!("reading {loc}"))?
                    .next()
                    .is_none();
            if !empty && path.join(crate::layout::CONFIG).is_file() {
                bail!(
                    "{loc} is already a blockvault repository; back up into it as it is, or choose a new path for another"
                );
            }
            if !empty {
                bail!(
                    "{loc} already exists and is not an empty directory; choose a new path for the repository"
                );
            }
        } else {
            create = Some(path);
        }
        Arc::new(LocalDir::new(path))
    };
    let encryption = match a.encryption {
        EncryptionArg::Repokey => Encryption::XChaCha20Poly1305,
        EncryptionArg::None => Encryption::None,
    };
    let secret = match encryption {
        Encryption::None => None,
        Encryption::XChaCha20Poly1305 => Some(init_secret(g)?),
    };
    let mut opts = InitOptions {
        encryption,
        zstd_level: a.compression,
        options,
        ..InitOptions::default()
    };
    opts.chunker.fixed_size = a.chunk_size;
    if let Some(path) = create {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        // Not recursive: it fails if the directory appeared during the passphrase prompt (a
        // second init), which the clean-up below must then not delete.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .with_context(|| format!("creating {loc}"))?;
    }
    let repo = match Repo::init(store, opts, secret).await {
        Ok(repo) => repo,
        Err(e) => {
            // The directory did not exist before this init, so all it holds is this init's
            // (a key object without a config is no repository).
            if let Some(path) = create {
                let _ = std::fs::remove_dir_all(path);
            }
            return Err(e);
        }
    };
    if g.json {
        super::print_json(&serde_json::json!({
            "repository": loc,
            "repo_id": hex::encode(repo.config.repo_id),
            "encryption": format!("{:?}", repo.config.encryption),
            "chunk_size": repo.config.chunker.fixed_size,
        }))?;
    } else if !g.quiet {
        outln!(
            "created {} repository at {loc}",
            if repo.keys.seal.is_some() {
                "an encrypted"
            } else {
                "an unencrypted"
            }
        );
    }
    Ok(())
}

/// For init, --key-file names a file to create when it does not exist yet.
fn init_secret(g: &GlobalArgs) -> Result<Secret> {
    if let Some(kf) = &g.key_file
        && !kf.exists()
    {
        return super::key::create_key_file(kf);
    }
    g.secret(true)
}
