//! The command line: clap definitions, one file per subcommand. Each subcommand turns what
//! was typed into a validated plan and calls the library; nothing here touches stored bytes.

mod backup;
mod init;
mod list;
mod restore;
mod show;

use crate::keys::{self, Secret};
use crate::store::{LocalDir, Store};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Deduplicating, encrypted backups of block devices, disk images and streams.
#[derive(Parser, Debug)]
#[command(name = "blockvault", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// The repository: a local directory.
    #[arg(long, env = "BLOCKVAULT_REPO", global = true, value_name = "PATH")]
    pub repo: Option<String>,
    /// Read the passphrase from this file (its first line). BLOCKVAULT_PASSWORD also works;
    /// otherwise blockvault asks on the terminal.
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Open the repository with a key file instead of a passphrase (`init --key-file` creates
    /// one if the file does not exist).
    #[arg(long, global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Print a machine-readable JSON summary instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bar and no text summary.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository.
    Init(init::InitArgs),
    /// Back up a file, block device, standard input or command output as a new version.
    Backup(backup::BackupArgs),
    /// List series and their versions.
    List(list::ListArgs),
    /// Show one version in detail.
    Show(show::ShowArgs),
    /// Restore a version to a file, a block device, or standard output.
    Restore(restore::RestoreArgs),
}

pub async fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::Init(a) => init::run(g, a).await,
        Command::Backup(a) => backup::run(g, a).await,
        Command::List(a) => list::run(g, a).await,
        Command::Show(a) => show::run(g, a).await,
        Command::Restore(a) => restore::run(g, a).await,
    }
}

impl GlobalArgs {
    fn repo_location(&self) -> Result<&str> {
        let r = self.repo.as_deref().ok_or_else(|| {
            anyhow!("no repository given: use --repo PATH or set BLOCKVAULT_REPO")
        })?;
        if r.starts_with("s3://") {
            bail!(
                "S3 repositories ({r}) are not supported by this build yet; use a local directory"
            );
        }
        Ok(r)
    }

    /// The store of an existing repository.
    fn store(&self) -> Result<Arc<dyn Store>> {
        let loc = self.repo_location()?;
        let path = Path::new(loc);
        if !path.exists() {
            bail!(
                "no repository at {loc}: the directory does not exist (create one with `blockvault init --repo {loc}`)"
            );
        }
        if !path.is_dir() {
            bail!("{loc} is not a blockvault repository: it is not a directory");
        }
        Ok(Arc::new(LocalDir::new(path)))
    }

    /// Opens the repository, asking for a secret only if it is encrypted.
    async fn open(&self) -> Result<Arc<crate::repo::Repo>> {
        let store = self.store()?;
        let repo = crate::repo::Repo::open(store, || self.secret(false)).await?;
        Ok(Arc::new(repo))
    }

    fn progress(&self) -> bool {
        !self.quiet && !self.json
    }

    /// The passphrase or key file, from (in order) --key-file, --password-file,
    /// BLOCKVAULT_PASSWORD, or the terminal.
    fn secret(&self, confirm: bool) -> Result<Secret> {
        if let Some(path) = &self.key_file {
            let bytes = Zeroizing::new(
                std::fs::read(path)
                    .with_context(|| format!("reading key file {}", path.display()))?,
            );
            let key = keys::parse_key_file(&bytes).ok_or_else(|| {
                anyhow!(
                    "key file {} is not a blockvault key file (it needs at least 32 bytes)",
                    path.display()
                )
            })?;
            return Ok(Secret::KeyFile(key));
        }
        if let Some(path) = &self.password_file {
            let text = Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading password file {}", path.display()))?,
            );
            let line = text.lines().next().unwrap_or("");
            if line.is_empty() {
                bail!("password file {} is empty", path.display());
            }
            return Ok(Secret::Passphrase(Zeroizing::new(line.to_string())));
        }
        if let Ok(p) = std::env::var("BLOCKVAULT_PASSWORD") {
            if p.is_empty() {
                bail!("BLOCKVAULT_PASSWORD is set but empty");
            }
            return Ok(Secret::Passphrase(Zeroizing::new(p)));
        }
        let no_tty = || {
            anyhow!(
                "no passphrase: set BLOCKVAULT_PASSWORD, or use --password-file or --key-file (there is no terminal to ask on)"
            )
        };
        let first = Zeroizing::new(
            rpassword::prompt_password("repository passphrase: ").map_err(|_| no_tty())?,
        );
        if first.is_empty() {
            bail!("an empty passphrase is not accepted");
        }
        if confirm {
            let again = Zeroizing::new(
                rpassword::prompt_password("repeat passphrase: ").map_err(|_| no_tty())?,
            );
            if *again != *first {
                bail!("the passphrases do not match");
            }
        }
        Ok(Secret::Passphrase(first))
    }
}

/// Parses `4M`, `4MiB`, `512k`, `1048576`: binary units, since chunk sizes are powers of two.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 4M or 1048576)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M or G)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn rfc3339(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("4X").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
