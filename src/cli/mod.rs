//! The command line: clap definitions, one file per subcommand. Each subcommand turns what
//! was typed into a validated plan and calls the library; nothing here touches stored bytes.

/// `println!` for what a command prints on standard output. Its reader may go away before
/// the end (`list | head`, `backup ... | head -c 5`): the rest is dropped, and the command's
/// exit code stays what its work says. `println!` panicked there (exit 101), after a backup
/// had been recorded or versions removed.
macro_rules! outln {
    () => {
        $crate::cli::out_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::out_line(format_args!($($arg)*))
    };
}

mod backup;
mod check;
mod forget;
mod gc;
mod init;
mod key;
mod list;
mod prune;
mod restore;
mod run;
mod show;
mod unlock;

use crate::keys::{self, Secret};
use crate::lock::Access;
use crate::store::{LocalDir, S3, S3Options, Store, fault};
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
#[command(next_help_heading = "Repository and output options")]
pub struct GlobalArgs {
    /// The repository: a local directory, or s3://bucket/prefix.
    #[arg(long, env = "BLOCKVAULT_REPO", global = true, value_name = "PATH|URL", value_parser = parse_repo)]
    pub repo: Option<String>,
    /// Read the passphrase from this file (its first line). BLOCKVAULT_PASSWORD also works;
    /// otherwise blockvault asks on the terminal.
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Run this shell command and take the passphrase from the first line it prints (a
    /// secret store: `pass show backup`, `systemd-creds cat ...`).
    #[arg(long, global = true, value_name = "COMMAND")]
    pub password_command: Option<String>,
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
    /// S3-compatible endpoint (Garage, Ceph RGW, MinIO, ...), e.g. http://10.0.0.5:3900.
    /// AWS_ENDPOINT_URL also works.
    #[arg(long, global = true, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region (Garage: its s3_region). AWS_REGION and profiles also work.
    #[arg(long, global = true, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Storage class for chunk data on S3 (STANDARD_IA, GLACIER_IR, ...); manifests,
    /// pointers, keys and locks stay STANDARD. With init: the repository's default.
    #[arg(long, global = true, value_name = "CLASS")]
    pub storage_class: Option<String>,
    /// Whether the command writes to the repository: set from the subcommand, never typed.
    #[arg(skip)]
    pub access: Access,
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
    /// Remove the versions of a series that no retention policy keeps (--dry-run to see the plan).
    Prune(prune::PruneArgs),
    /// Remove one version of a series.
    Forget(forget::ForgetArgs),
    /// Verify the repository: manifests, pointers, chunks; with --read-data, chunk contents.
    Check(check::CheckArgs),
    /// Delete chunk objects that no version references (takes the exclusive lock).
    Gc(gc::GcArgs),
    /// Manage passphrases and key files; export the master key as a paper key, and recover.
    Key(key::KeyArgs),
    /// Remove locks left by processes that died; with --unreadable or --all, others too.
    Unlock(unlock::UnlockArgs),
    /// Run the backup jobs of a job file: every due job, or those named (docs/jobs.md).
    Run(run::RunArgs),
}

pub async fn run(cli: Cli) -> Result<()> {
    let mut global = cli.global;
    crate::lock::stale_secs_from_env().map_err(usage)?;
    // Restore and check only read: on read-only media or with read-only credentials they go
    // on without a lock rather than not at all (`crate::lock`). Not `check --repair`, which
    // deletes chunks and must hold its lock.
    if matches!(&cli.command, Command::Restore(_))
        || matches!(&cli.command, Command::Check(a) if !a.repair)
    {
        global.access = Access::ReadOnly;
    }
    let g = &global;
    // Long runs that hold a lock stop cleanly on the first SIGINT, SIGTERM or SIGHUP; the
    // others are short, and end at once as before.
    if matches!(
        cli.command,
        Command::Backup(_)
            | Command::Restore(_)
            | Command::Check(_)
            | Command::Gc(_)
            | Command::Run(_)
    ) {
        crate::interrupt::enable();
    }
    let done = match cli.command {
        Command::Init(a) => init::run(g, a).await,
        Command::Backup(a) => backup::run(g, a).await,
        Command::List(a) => list::run(g, a).await,
        Command::Show(a) => show::run(g, a).await,
        Command::Restore(a) => restore::run(g, a).await,
        Command::Prune(a) => prune::run(g, a).await,
        Command::Forget(a) => forget::run(g, a).await,
        Command::Check(a) => check::run(g, a).await,
        Command::Gc(a) => gc::run(g, a).await,
        Command::Key(a) => key::run(g, a).await,
        Command::Run(a) => run::run(g, a).await,
        Command::Unlock(a) => unlock::run(g, a).await,
    };
    // The work's own failure comes first; an output that failed under it is secondary.
    match (done, output_failure()) {
        (Ok(()), Some(e)) => Err(e),
        (done, _) => done,
    }
}

/// Refuses an endpoint the S3 client cannot use, or one that carries secrets, which errors
/// would then print: it is `http://` or `https://`, a host and maybe a port and path.
fn check_endpoint(raw: &str, from: &str) -> Result<()> {
    let example = "e.g. http://10.0.0.5:3900 or https://s3.example.com";
    let Some(rest) = raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("https://"))
    else {
        let shown = if raw.contains('@') {
            "(not shown: it holds a '@')"
        } else {
            raw
        };
        return Err(usage(format!(
            "{from} {shown:?} is not an endpoint URL: it needs http:// or https:// and a host, {example}"
        )));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') || rest.contains(['?', '#']) {
        return Err(usage(format!(
            "{from}: an endpoint URL with a user, password, query or fragment is refused (it would be printed in messages); give credentials through AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or a profile, {example}"
        )));
    }
    if authority.is_empty() || authority.starts_with(':') {
        return Err(usage(format!("{from} {raw:?} names no host, {example}")));
    }
    Ok(())
}

impl GlobalArgs {
    fn repo_location(&self) -> Result<&str> {
        self.repo.as_deref().ok_or_else(|| {
            usage(
                "no repository given: use --repo PATH or s3://bucket/prefix, or set BLOCKVAULT_REPO",
            )
        })
    }

    /// What the command line says about an S3 repository, each part checked before any
    /// request: a wrong URL, endpoint or storage class is a usage error (exit 2).
    fn s3_options(&self, url: &str) -> Result<S3Options> {
        let mut o = S3Options::from_url(url).map_err(usage)?;
        match (&self.s3_endpoint, std::env::var("AWS_ENDPOINT_URL")) {
            (Some(e), _) => check_endpoint(e, "--s3-endpoint")?,
            // The SDK reads an empty variable as unset.
            (None, Ok(e)) if !e.is_empty() => check_endpoint(&e, "AWS_ENDPOINT_URL")?,
            (None, Ok(_)) => {}
            (None, Err(_)) => {}
        }
        if let Some(class) = &self.storage_class {
            crate::store::s3::storage_class(Some(class))
                .map_err(|e| usage(format!("--storage-class: {e}")))?;
        }
        o.endpoint = self.s3_endpoint.clone();
        o.region = self.s3_region.clone();
        o.chunk_storage_class = self.storage_class.clone();
        Ok(o)
    }

    /// The store of an existing repository, and the S3 handle when it is one; wrapped in the
    /// fault injector when the fault tests ask for it.
    async fn store(&self) -> Result<(Arc<dyn Store>, Option<Arc<S3>>)> {
        let (store, s3) = self.real_store().await?;
        match std::env::var(fault::ENV) {
            Ok(spec) if !spec.is_empty() => {
                let plan = fault::FaultPlan::parse(&spec).map_err(|e| anyhow!(e))?;
                eprintln!(
                    "warning: {}={spec}: injecting store faults (for tests only)",
                    fault::ENV
                );
                Ok((Arc::new(fault::Faulty::new(store, plan)), s3))
            }
            _ => Ok((store, s3)),
        }
    }

    /// A warning for each S3-only option given for the local directory `loc`.
    pub(crate) fn warn_s3_options_ignored(&self, loc: &str) {
        if let Some(class) = &self.storage_class {
            eprintln!(
                "warning: --storage-class {class} is for S3 repositories; {loc} is a local directory, which has none (ignored)"
            );
        }
        for (option, given) in [
            ("--s3-endpoint", &self.s3_endpoint),
            ("--s3-region", &self.s3_region),
        ] {
            if given.is_some() {
                eprintln!(
                    "warning: {option} is for S3 repositories; {loc} is a local directory (ignored)"
                );
            }
        }
    }

    async fn real_store(&self) -> Result<(Arc<dyn Store>, Option<Arc<S3>>)> {
        let loc = self.repo_location()?;
        if loc.starts_with("s3://") {
            let s3 = Arc::new(S3::connect(self.s3_options(loc)?).await?);
            return Ok((s3.clone(), Some(s3)));
        }
        self.warn_s3_options_ignored(loc);
        let path = Path::new(loc);
        if !path.exists() {
            bail!(
                "no repository at {loc}: the directory does not exist (create one with `blockvault init --repo {loc}`)"
            );
        }
        if !path.is_dir() {
            bail!("{loc} is not a blockvault repository: it is not a directory");
        }
        Ok((Arc::new(LocalDir::new(path)), None))
    }

    /// Opens the repository, asking for a secret only if it is encrypted.
    async fn open(&self) -> Result<Arc<crate::repo::Repo>> {
        let (store, s3) = self.store().await?;
        let mut repo = crate::repo::Repo::open(store, || self.secret(false)).await?;
        repo.set_access(self.access);
        if let (Some(s3), None) = (s3, &self.storage_class) {
            let default = repo.config.options.get(crate::repo::OPTION_STORAGE_CLASS);
            s3.set_chunk_storage_class(default.map(String::as_str))
                .map_err(|e| anyhow!("the repository's default storage class: {e}"))?;
        }
        Ok(Arc::new(repo))
    }

    fn progress(&self) -> bool {
        !self.quiet && !self.json
    }

    /// The passphrase or key file, from (in order) --key-file, --password-file,
    /// --password-command, BLOCKVAULT_PASSWORD, or the terminal.
    fn secret(&self, confirm: bool) -> Result<Secret> {
        if let Some(path) = &self.key_file {
            let bytes = read_secret_file(path, "key file", keys::MAX_KEY_FILE_LEN)?;
            let key = keys::parse_key_file(&bytes).ok_or_else(|| {
                anyhow!(
                    "key file {} is not a blockvault key file (it needs at least 32 bytes)",
                    path.display()
                )
            })?;
            return Ok(Secret::KeyFile(key));
        }
        if let Some(path) = &self.password_file {
            let bytes = read_secret_file(path, "password file", keys::MAX_PASSWORD_FILE_LEN)?;
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| anyhow!("password file {} is not UTF-8 text", path.display()))?;
            let line = text.lines().next().unwrap_or("");
            if line.is_empty() {
                bail!("password file {} is empty", path.display());
            }
            return Ok(Secret::Passphrase(Zeroizing::new(line.to_string())));
        }
        if let Some(command) = &self.password_command {
            return password_from_command(command).map(Secret::Passphrase);
        }
        if let Ok(p) = std::env::var("BLOCKVAULT_PASSWORD") {
            if p.is_empty() {
                bail!("BLOCKVAULT_PASSWORD is set but empty");
            }
            return Ok(Secret::Passphrase(Zeroizing::new(p)));
        }
        let no_tty = || {
            anyhow!(
                "no passphrase: set BLOCKVAULT_PASSWORD, or use --password-file, --password-command or --key-file (there is no terminal to ask on)"
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

/// The first line a password command prints; it must exit 0. Its standard error passes
/// through, so a prompt of its own (a GPG agent's, say) still reaches the user.
fn password_from_command(command: &str) -> Result<Zeroizing<String>> {
    let out = crate::source::shell(command)
        // A terminal it may prompt on; anything else is not its to read: standard input may
        // be the data of `backup -`, and a command that reads it (ssh without -n) would eat
        // the start of the backup.
        .stdin(if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        })
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run the password command `{command}`"))?;
    let text = Zeroizing::new(String::from_utf8_lossy(&out.stdout).into_owned());
    if !out.status.success() {
        bail!("the password command `{command}` failed ({})", out.status);
    }
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        bail!("the password command `{command}` printed no passphrase");
    }
    Ok(Zeroizing::new(line.to_string()))
}

/// Reads a file holding a secret, wiped when dropped. Bounded, because a mistyped path can
/// name something endless (`/dev/zero`, a disk) that would otherwise be read into memory.
fn read_secret_file(path: &Path, what: &str, max: u64) -> Result<Zeroizing<Vec<u8>>> {
    use std::io::Read;
    // Room for all of it up front: a buffer that grew would leave copies of the secret in
    // memory it gave back.
    let mut buf = Zeroizing::new(Vec::with_capacity(max as usize + 1));
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut buf))
        .with_context(|| format!("reading {what} {}", path.display()))?;
    if buf.len() as u64 > max {
        bail!(
            "{what} {} is larger than {max} bytes: it is not a blockvault {what}",
            path.display()
        );
    }
    Ok(buf)
}

/// A throughput in MB/s (10^6 bytes), with a decimal where a whole number would say 0.
pub fn rate(mb_per_s: f64) -> String {
    if mb_per_s < 9.95 {
        format!("{mb_per_s:.1} MB/s")
    } else {
        format!("{mb_per_s:.0} MB/s")
    }
}

/// The summaries' requests line: what a run cost on a store that bills per request. None for
/// a run that made none.
pub fn requests_line(r: &crate::store::Requests) -> Option<String> {
    (r.total() > 0).then(|| {
        format!(
            "  requests: {} PUT, {} GET, {} HEAD, {} LIST, {} DELETE",
            r.put, r.get, r.head, r.list, r.delete
        )
    })
}

/// "1 chunk", "2 chunks".
pub fn count(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// An error in what was typed, found after clap's parse: `main` prints it as it prints clap's
/// own and exits 2.
pub fn usage(msg: impl std::fmt::Display) -> anyhow::Error {
    clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{msg}\n")).into()
}

/// `--repo` (or `BLOCKVAULT_REPO`): an empty one would name the current directory without
/// saying so, and `init` would write there.
fn parse_repo(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("the repository is empty: give a local directory or s3://bucket/prefix".into());
    }
    // A URL scheme other than s3:// would otherwise be taken as a relative local path, and
    // `init` would create a directory named after it.
    if let Some((scheme, _)) = s.split_once("://")
        && !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && scheme != "s3"
    {
        return Err(if scheme.eq_ignore_ascii_case("s3") {
            format!("{s:?}: the scheme is written s3:// (lower case)")
        } else {
            format!(
                "{s:?}: blockvault reaches repositories as local directories or s3://bucket/prefix, not {scheme}:// (for a directory of that name, write ./{s})"
            )
        });
    }
    if s.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("s3:")) && !s.starts_with("s3://") {
        return Err(format!(
            "{s:?}: an S3 repository is written s3://bucket/prefix (for a directory of that name, write ./{s})"
        ));
    }
    Ok(s.to_string())
}

/// `--in-flight N`: at least 1, as a job file's `in_flight` must be.
pub fn parse_in_flight(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a number")),
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

/// The version a restore or show without `--version` uses: the one the series' current
/// pointer names. Where its manifest is gone, fails (as missing data, exit 3) when no version
/// is left, where "series not found" would say there never was one, and otherwise warns
/// that the newest stored version stands in. `None` without a readable pointer: the caller
/// resolves as for any series.
async fn current_version(repo: &crate::repo::Repo, series: &str) -> Result<Option<String>> {
    let Ok(Some(p)) = repo.current(series).await else {
        return Ok(None);
    };
    let versions = repo.list_versions(series).await?;
    if versions.contains(&p.version) {
        return Ok(Some(p.version));
    }
    let manifest = crate::layout::manifest(series, &p.version);
    match versions.last() {
        None => Err(crate::error::Error::Missing {
            what: format!(
                "manifest {manifest} (series {series:?}, version {}, which its current pointer names)",
                p.version
            ),
        }
        .into()),
        Some(newest) => {
            eprintln!(
                "warning: the current pointer of series {series:?} names version {}, whose manifest {manifest} is missing; using the newest stored version, {newest}",
                p.version
            );
            Ok(Some(newest.clone()))
        }
    }
}

/// `--version` as given: a version name, a unique prefix, nothing (the current version) or,
/// for a ZFS series, `@snap`: the newest version that stores that snapshot (the only one, with
/// `unique`).
pub async fn resolve_version(
    repo: &Arc<crate::repo::Repo>,
    series: &str,
    wanted: Option<&str>,
    unique: bool,
) -> Result<String> {
    let Some(snap) = wanted.and_then(|w| w.strip_prefix('@')) else {
        if wanted.is_none()
            && let Some(v) = current_version(repo, series).await?
        {
            return Ok(v);
        }
        return repo.resolve_version(series, wanted).await;
    };
    let loaded = crate::prune::load_series(repo, series, |w| eprintln!("warning: {w}")).await?;
    // Only to report a series that does not exist, with the names of those that do. Not
    // before loading: resolving a series that has versions reads its current pointer, and a
    // damaged one must not stop a restore that names its snapshot.
    if loaded.versions.is_empty() {
        repo.resolve_version(series, None).await?;
    }
    let matching: Vec<&str> = loaded
        .versions
        .iter()
        .filter(|v| v.zfs.as_ref().is_some_and(|z| z.short_name() == snap))
        .map(|v| v.info.name.as_str())
        .collect();
    match matching.as_slice() {
        [] => {
            let known: Vec<String> = loaded
                .versions
                .iter()
                .filter_map(|v| v.zfs.as_ref().map(|z| format!("@{}", z.short_name())))
                .collect();
            if known.is_empty() {
                bail!("series {series:?} holds no ZFS snapshots, so there is no version @{snap}")
            }
            bail!(
                "series {series:?} has no version of snapshot @{snap}; its snapshots are {}",
                known.join(", ")
            )
        }
        [.., last] if !unique || matching.len() == 1 => Ok(last.to_string()),
        many => bail!(
            "snapshot @{snap} is stored in {} versions of series {series:?} ({}): give the version name",
            many.len(),
            many.join(", ")
        ),
    }
}

/// ", peak memory 73 MiB" for a text summary; nothing when the peak is not known.
pub fn peak_memory(bytes: Option<u64>) -> String {
    bytes
        .map(|b| format!(", peak memory {:.0} MiB", b as f64 / 1048576.0))
        .unwrap_or_default()
}

pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Standard output's fate: its reader went away (the rest is dropped, no failure), or a write
/// failed otherwise (a full disk under `> file`: the command fails at its end).
static OUTPUT: std::sync::Mutex<Option<std::io::Error>> = std::sync::Mutex::new(None);

/// One line on standard output, unless a write there failed before (see `outln!`).
pub fn out_line(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut failed = OUTPUT.lock().unwrap_or_else(|e| e.into_inner());
    if failed.is_some() {
        return;
    }
    if let Err(e) = writeln!(std::io::stdout().lock(), "{args}") {
        *failed = Some(e);
    }
}

/// The error of a write to standard output that failed other than by its reader going away.
fn output_failure() -> Option<anyhow::Error> {
    let failed = OUTPUT.lock().unwrap_or_else(|e| e.into_inner());
    match failed.as_ref() {
        Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Some(anyhow!(
            "writing to standard output: {e} (what was printed is incomplete)"
        )),
        _ => None,
    }
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
    fn repositories() {
        for local in [
            "./vault",
            "/srv/x://y",
            "./a://b",
            "x/y://z",
            "vault",
            "é://x",
            "s3",
        ] {
            assert_eq!(parse_repo(local).as_deref(), Ok(local), "{local}");
        }
        assert_eq!(parse_repo("s3://b/p").as_deref(), Ok("s3://b/p"));
        for (wrong, says) in [
            ("S3://b/p", "lower case"),
            ("s3:/b/p", "s3://bucket/prefix"),
            ("s3:b", "s3://bucket/prefix"),
            ("https://h/p", "not https://"),
            ("file:///srv/vault", "not file://"),
            ("  ", "empty"),
        ] {
            let e = parse_repo(wrong).expect_err(wrong);
            assert!(e.contains(says), "{wrong}: {e}");
        }
    }

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
