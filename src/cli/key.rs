//! `blockvault key ...`: the key objects of an encrypted repository (list, add, remove,
//! change) and the paper key (export, recover).
//!
//! Secrets never come from an argument's value: the one that opens the repository comes from
//! the global `--password-file`, `--key-file`, `BLOCKVAULT_PASSWORD` or the terminal; a new one
//! from `--new-password-file`, `--new-key-file`, `BLOCKVAULT_NEW_PASSWORD` or the terminal
//! (asked twice). Storing and removing key objects, and the order that keeps a repository
//! openable through a crash, are `Repo`'s; the paper key's text is `keys`'.

use super::{GlobalArgs, rfc3339};
use crate::format::key::{Kdf, KeyObject};
use crate::keys::{self, Argon2Cost, Secret};
use crate::repo::{KeyEntry, Repo, hostname, now_unix};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Where a new passphrase comes from when no file names it.
pub const NEW_PASSWORD_ENV: &str = "BLOCKVAULT_NEW_PASSWORD";
/// A paper key is a few hundred bytes; anything much larger is not one.
const MAX_PAPER_LEN: u64 = 64 * 1024;

#[derive(Args, Debug)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// List the key objects: id, kind, host, creation time, and which one opened the repository.
    List,
    /// Add a passphrase or key file that opens the repository (the master key stays the same).
    Add(NewSecretArgs),
    /// Remove a key object (never the last one; the one in use only with --force).
    Remove(RemoveArgs),
    /// Replace the passphrase or key file in use by a new one.
    #[command(visible_alias = "passwd")]
    Change(NewSecretArgs),
    /// Print the master key as a paper key, for disaster recovery.
    Export(ExportArgs),
    /// Add a passphrase or key file from a paper key, when nothing else opens the repository.
    Recover(RecoverArgs),
}

/// The new secret. With neither option: BLOCKVAULT_NEW_PASSWORD, else a prompt on the terminal.
#[derive(Args, Debug)]
pub struct NewSecretArgs {
    /// Read the new passphrase from this file (its first line). BLOCKVAULT_NEW_PASSWORD also
    /// works; otherwise blockvault asks twice on the terminal.
    #[arg(long, value_name = "FILE", conflicts_with = "new_key_file")]
    pub new_password_file: Option<PathBuf>,
    /// The new secret is a key file: created (mode 0600) if it does not exist, used as it is if
    /// it does.
    #[arg(long, value_name = "FILE")]
    pub new_key_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// The key's id, as `key list` shows it.
    #[arg(long)]
    pub id: String,
    /// Remove it even if it is the key that opened the repository this time.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write the paper key to this new file (created with mode 0600) instead of standard
    /// output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RecoverArgs {
    /// The paper key as `key export` wrote it (or typed back from paper): a file, or - for
    /// standard input.
    #[arg(long, value_name = "FILE|-")]
    pub paper: PathBuf,
    #[command(flatten)]
    pub new: NewSecretArgs,
}

pub async fn run(g: &GlobalArgs, a: KeyArgs) -> Result<()> {
    match a.command {
        KeyCommand::List => list(g).await,
        KeyCommand::Add(a) => add(g, a).await,
        KeyCommand::Remove(a) => remove(g, a).await,
        KeyCommand::Change(a) => change(g, a).await,
        KeyCommand::Export(a) => export(g, a).await,
        KeyCommand::Recover(a) => recover(g, a).await,
    }
}

#[derive(Serialize)]
struct KeyRow {
    id: String,
    /// "passphrase", "key_file", or "damaged".
    kind: &'static str,
    in_use: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    /// Argon2id cost of a passphrase key.
    #[serde(skip_serializing_if = "Option::is_none")]
    argon2: Option<Argon2Row>,
    /// Why the key object could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    damaged: Option<String>,
}

#[derive(Serialize)]
struct Argon2Row {
    memory_kib: u32,
    passes: u32,
    lanes: u32,
}

fn row(e: &KeyEntry) -> KeyRow {
    let mut r = KeyRow {
        id: e.id.clone(),
        kind: "damaged",
        in_use: e.in_use,
        created: None,
        host: None,
        argon2: None,
        damaged: None,
    };
    match &e.object {
        Ok(KeyObject {
            kdf, created, host, ..
        }) => {
            r.created = Some(rfc3339(*created));
            r.host = Some(host.clone());
            match kdf {
                Kdf::Argon2id {
                    memory_kib,
                    passes,
                    lanes,
                    ..
                } => {
                    r.kind = "passphrase";
                    r.argon2 = Some(Argon2Row {
                        memory_kib: *memory_kib,
                        passes: *passes,
                        lanes: *lanes,
                    });
                }
                Kdf::KeyFile { .. } => r.kind = "key_file",
            }
        }
        Err(why) => r.damaged = Some(why.clone()),
    }
    r
}

async fn list(g: &GlobalArgs) -> Result<()> {
    let repo = g.open().await?;
    let entries = repo.list_keys().await?;
    if g.json {
        return super::print_json(&entries.iter().map(row).collect::<Vec<_>>());
    }
    if g.quiet {
        return Ok(());
    }
    outln!("   {:<32}  {:<10}  {:<20}  HOST", "ID", "KIND", "CREATED");
    for e in &entries {
        let r = row(e);
        let mark = if e.in_use { "*" } else { " " };
        match &r.damaged {
            Some(why) => outln!("{mark}  {:<32}  damaged: {why}", r.id),
            None => outln!(
                "{mark}  {:<32}  {:<10}  {:<20}  {}",
                r.id,
                e.kind(),
                r.created.unwrap_or_default(),
                r.host.unwrap_or_default()
            ),
        }
    }
    outln!("(* opened the repository this time)");
    Ok(())
}

async fn add(g: &GlobalArgs, a: NewSecretArgs) -> Result<()> {
    let repo = g.open().await?;
    // An unencrypted repository says so before anything is asked or created.
    repo.master_key()?;
    let new = new_secret(g, &a)?;
    let id = repo
        .add_secret(&new, Argon2Cost::default())
        .await
        .with_context(|| {
            format!(
                "adding a {} to the repository at {}",
                new.kind(),
                repo.location()
            )
        })?;
    if g.json {
        return super::print_json(&serde_json::json!({
            "added": id,
            "kind": json_kind(&new),
            "opened_with": repo.opened_with(),
        }));
    }
    if !g.quiet {
        outln!(
            "added key {id} ({}) to the repository at {}",
            new.kind(),
            repo.location()
        );
    }
    Ok(())
}

async fn remove(g: &GlobalArgs, a: RemoveArgs) -> Result<()> {
    let repo = g.open().await?;
    repo.remove_key(&a.id, a.force).await?;
    if g.json {
        return super::print_json(&serde_json::json!({ "removed": a.id }));
    }
    if !g.quiet {
        outln!(
            "removed key {} from the repository at {}",
            a.id,
            repo.location()
        );
    }
    Ok(())
}

async fn change(g: &GlobalArgs, a: NewSecretArgs) -> Result<()> {
    let (store, _) = g.store().await?;
    let mut used = None;
    let repo = Repo::open(store, || {
        let s = g.secret(false)?;
        used = Some(s.clone());
        Ok(s)
    })
    .await?;
    repo.master_key()?;
    let old = used.ok_or_else(|| anyhow!("internal error: no secret opened the repository"))?;
    let new = new_secret(g, &a)?;
    let done = repo.change_key(&old, &new, Argon2Cost::default()).await?;
    if g.json {
        return super::print_json(&serde_json::json!({
            "added": done.added,
            "kind": json_kind(&new),
            "removed": done.removed,
        }));
    }
    if !g.quiet {
        outln!(
            "added key {} ({}) and removed key {} from the repository at {}: the old {} no longer opens it",
            done.added,
            new.kind(),
            done.removed.join(", "),
            repo.location(),
            old.kind()
        );
    }
    Ok(())
}

async fn export(g: &GlobalArgs, a: ExportArgs) -> Result<()> {
    if g.json {
        return Err(super::usage(
            "key export writes the paper key as text: it has no --json form",
        ));
    }
    let repo = g.open().await?;
    let master = repo.master_key()?;
    let loc = g.repo_location()?;
    let paper = keys::paper_encode(master, &repo.config.repo_id);
    let header = format!(
        "# blockvault paper key: the master key of the repository at {loc}\n\
         # (exported {} on {}). Whoever holds it can read every backup there: keep it\n\
         # offline. It opens the repository even when every passphrase and key file is lost:\n\
         #   blockvault --repo {loc}{s3} key recover --paper FILE\n",
        rfc3339(now_unix()),
        hostname(),
        // The endpoint too: without it the command would ask AWS.
        s3 = [
            ("--s3-endpoint", &g.s3_endpoint),
            ("--s3-region", &g.s3_region)
        ]
        .iter()
        .filter_map(|(flag, v)| v.as_ref().map(|v| format!(" {flag} {v}")))
        .collect::<String>()
    );
    // Sized exactly, so the string holding the key never reallocates and leaves a copy.
    let mut text = Zeroizing::new(String::with_capacity(header.len() + paper.len()));
    text.push_str(&header);
    text.push_str(&paper);
    match &a.output {
        Some(path) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating paper key file {}", path.display()))?;
            f.write_all(text.as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing paper key file {}", path.display()))?;
            if !g.quiet {
                eprintln!(
                    "wrote the paper key of the repository at {loc} to {}: print it, keep it offline, and delete the file",
                    path.display()
                );
            }
        }
        None => {
            if !g.quiet {
                eprintln!(
                    "warning: this is the master key of the repository at {loc}: whoever has it can read every backup; keep it offline"
                );
            }
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .context("writing the paper key to standard output")?;
        }
    }
    Ok(())
}

async fn recover(g: &GlobalArgs, a: RecoverArgs) -> Result<()> {
    let shown = a.paper.display().to_string();
    let text = read_paper(&a.paper)?;
    let text = std::str::from_utf8(&text)
        .map_err(|_| anyhow!("paper key {shown} is not text: it is not a blockvault paper key"))?;
    let paper = keys::paper_decode(text).map_err(|e| anyhow!("paper key {shown}: {e}"))?;
    let (store, _) = g.store().await?;
    let loc = store.describe();
    let mut kind = None;
    let done = Repo::recover_key(
        store,
        &paper,
        || {
            let s = new_secret(g, &a.new)?;
            kind = Some(s.kind());
            Ok(s)
        },
        Argon2Cost::default(),
    )
    .await?;
    let kind = kind.unwrap_or("secret");
    if g.json {
        return super::print_json(&serde_json::json!({
            "added": done.added,
            "kind": kind.replace(' ', "_"),
            "checked_against": done.checked_against,
        }));
    }
    if !g.quiet {
        match &done.checked_against {
            Some(object) => outln!(
                "added key {} ({kind}) to the repository at {loc} from the paper key (its master key opens {object})",
                done.added
            ),
            None => {
                outln!(
                    "added key {} ({kind}) to the repository at {loc} from the paper key",
                    done.added
                );
                eprintln!(
                    "warning: the repository holds no version to check the master key against; it passed the paper key's checks only"
                );
            }
        }
    }
    Ok(())
}

/// The paper key's bytes, from a file or standard input, wiped when dropped.
fn read_paper(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_PAPER_LEN as usize + 1));
    let shown = path.display();
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(MAX_PAPER_LEN + 1)
            .read_to_end(&mut buf)
            .context("reading the paper key from standard input")?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_PAPER_LEN + 1).read_to_end(&mut buf))
            .with_context(|| format!("reading paper key {shown}"))?;
    }
    if buf.len() as u64 > MAX_PAPER_LEN {
        bail!("paper key {shown} is larger than {MAX_PAPER_LEN} bytes: it is not a paper key");
    }
    Ok(buf)
}

fn json_kind(s: &Secret) -> &'static str {
    match s {
        Secret::Passphrase(_) => "passphrase",
        Secret::KeyFile(_) => "key_file",
    }
}

/// The new secret, from (in order) --new-key-file, --new-password-file,
/// BLOCKVAULT_NEW_PASSWORD, or the terminal (asked twice). Never from an argument's value.
fn new_secret(g: &GlobalArgs, a: &NewSecretArgs) -> Result<Secret> {
    // Files are read exactly as the global --key-file and --password-file read them.
    let from_file = |password_file: Option<&PathBuf>, key_file: Option<&PathBuf>| {
        GlobalArgs {
            password_file: password_file.cloned(),
            key_file: key_file.cloned(),
            ..g.clone()
        }
        .secret(false)
    };
    if let Some(path) = &a.new_key_file {
        if path.exists() {
            warn_if_readable_by_others(path);
            return from_file(None, Some(path));
        }
        return create_key_file(path);
    }
    if let Some(path) = &a.new_password_file {
        return from_file(Some(path), None);
    }
    if let Ok(p) = std::env::var(NEW_PASSWORD_ENV) {
        let p = Zeroizing::new(p);
        if p.is_empty() {
            bail!("{NEW_PASSWORD_ENV} is set but empty");
        }
        return Ok(Secret::Passphrase(p));
    }
    let no_tty = || {
        anyhow!(
            "no new passphrase: set {NEW_PASSWORD_ENV}, or use --new-password-file or --new-key-file (there is no terminal to ask on)"
        )
    };
    let first =
        Zeroizing::new(rpassword::prompt_password("new passphrase: ").map_err(|_| no_tty())?);
    if first.is_empty() {
        bail!("an empty passphrase is not accepted");
    }
    let again = Zeroizing::new(
        rpassword::prompt_password("repeat new passphrase: ").map_err(|_| no_tty())?,
    );
    if *again != *first {
        bail!("the new passphrases do not match");
    }
    Ok(Secret::Passphrase(first))
}

/// Creates a key file as `init --key-file` does: a random secret, mode 0600, never over an
/// existing file. It is written (and synced) before any key object refers to it.
pub(super) fn create_key_file(path: &Path) -> Result<Secret> {
    let contents = keys::new_key_file();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating key file {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing key file {}", path.display()))?;
    eprintln!(
        "created key file {}: keep a copy somewhere safe; it opens the repository",
        path.display()
    );
    let key = keys::parse_key_file(contents.as_bytes())
        .ok_or_else(|| anyhow!("internal error: new key file {} unreadable", path.display()))?;
    Ok(Secret::KeyFile(key))
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(m) = std::fs::metadata(path)
        && m.mode() & 0o077 != 0
    {
        eprintln!(
            "warning: key file {} can be read by other users (mode {:o}); chmod 600 it",
            path.display(),
            m.mode() & 0o777
        );
    }
}
