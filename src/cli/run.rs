//! `blockvault run --config FILE`: every due job of a job file, one after another. A job that
//! fails is reported and the others still run; the exit status is non-zero if any failed.

use super::backup::{ZfsSend, warn_if_unrestorable, zfs_send_plan};
use super::{GlobalArgs, usage};
use crate::backup::{BackupOptions, BackupSummary, backup};
use crate::interrupt;
use crate::jobs::{self, Config, Job, Source, ZfsSource};
use crate::prune;
use crate::repo::Repo;
use crate::retention::VersionInfo;
use crate::source::SourceSpec;
use crate::zfs;
use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use indicatif::HumanBytes;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The job file (TOML): the repository, where its passphrase comes from, and the jobs
    /// (docs/jobs.md). The repository named there is used, whatever --repo says.
    #[arg(long, env = "BLOCKVAULT_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// Run only this job (its name); may be given more than once.
    #[arg(long = "job", value_name = "NAME")]
    pub jobs: Vec<String>,
    /// Read the sources and show, per job, what would be backed up and what pruned; write
    /// nothing (no snapshot is taken: a ZFS job says what it would send).
    #[arg(long)]
    pub dry_run: bool,
    /// Run jobs that are not due yet.
    #[arg(long)]
    pub force: bool,
    /// Back up as `backup --heal` does: store again the chunks of the previous versions that
    /// are missing (after `check --read-data --repair`). ZFS jobs send a full stream: a new
    /// chain that does not depend on the damaged one.
    #[arg(long)]
    pub heal: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    config: String,
    dry_run: bool,
    jobs: Vec<JobReport>,
    failed: usize,
    /// Why no job could run (the repository did not open): each job is reported failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct JobReport {
    job: String,
    /// `backed-up`, `dry-run`, `skipped` or `failed`.
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    backup: Option<BackupSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prune: Option<PruneReport>,
    /// The snapshot this run took (ZFS jobs without a named snapshot).
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_taken: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    snapshots_destroyed: Vec<String>,
    /// When the job is due next (jobs with `every`).
    #[serde(skip_serializing_if = "Option::is_none")]
    next_due: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
struct PruneReport {
    /// Removed, or in a dry run, would be removed.
    removed: Vec<String>,
    kept: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
}

impl JobReport {
    fn new(job: &Job) -> JobReport {
        JobReport {
            job: job.name.clone(),
            outcome: "failed",
            reason: None,
            seconds: 0.0,
            backup: None,
            prune: None,
            snapshot_taken: None,
            snapshots_destroyed: Vec::new(),
            next_due: None,
            warnings: Vec::new(),
        }
    }
}

/// Another run of the same file holds this lock (flock on the file itself), so a cron run
/// that overlaps a slow one does not back the same sources up twice.
fn lock_config(path: &std::path::Path) -> Result<std::fs::File> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("cannot open the job file {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another `blockvault run` of {} is still running; this one does nothing",
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock the job file {}", path.display()))
        }
    }
}

pub async fn run(g: &GlobalArgs, a: RunArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("cannot read the job file {}", a.config.display()))?;
    let config = jobs::parse(&a.config, &text).map_err(|e| usage(e.0))?;
    for wanted in &a.jobs {
        if !config.jobs.iter().any(|j| &j.name == wanted) {
            let names: Vec<&str> = config.jobs.iter().map(|j| j.name.as_str()).collect();
            return Err(usage(format!(
                "{} has no job {wanted:?}; its jobs are {}",
                a.config.display(),
                names.join(", ")
            )));
        }
    }
    let cg = repository_args(g, &config);
    let selected: Vec<&Job> = config
        .jobs
        .iter()
        .filter(|j| a.jobs.is_empty() || a.jobs.contains(&j.name))
        .collect();
    // Monitoring that reads the JSON report learns of a run that could not start too, not
    // only from the exit code (a wrong passphrase is 4).
    let not_started = |e: anyhow::Error| -> Result<()> {
        if g.json {
            let error = format!("{e:#}");
            let jobs: Vec<JobReport> = selected
                .iter()
                .map(|job| {
                    let mut r = JobReport::new(job);
                    r.outcome = "failed";
                    r.reason = Some(format!("the run could not start: {error}"));
                    r
                })
                .collect();
            super::print_json(&Report {
                config: a.config.display().to_string(),
                dry_run: a.dry_run,
                failed: jobs.len(),
                jobs,
                error: Some(error),
            })?;
        }
        Err(e)
    };
    let _lock = match lock_config(&a.config) {
        Ok(l) => l,
        Err(e) => return not_started(e),
    };
    let repo = match cg.open().await {
        Ok(repo) => repo,
        Err(e) => return not_started(e),
    };
    let say = !g.quiet && !g.json;
    let mut reports = Vec::new();
    let mut stopped = None;
    for job in selected.iter().copied() {
        // A stop signal ends the run after the job it came in (which fails, recording
        // nothing); the jobs after it are not started.
        if let Err(e) = interrupt::check() {
            stopped = Some(e);
            break;
        }
        let started = Instant::now();
        let mut r = JobReport::new(job);
        if let Err(e) = run_job(&cg, &repo, job, &a, &mut r).await {
            r.outcome = "failed";
            r.reason = Some(format!("{e:#}"));
        }
        r.seconds = started.elapsed().as_secs_f64();
        if say {
            print_line(&r);
        }
        reports.push(r);
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| r.outcome == "failed")
        .map(|r| r.job.as_str())
        .collect();
    let count = |o: &str| reports.iter().filter(|r| r.outcome == o).count();
    if say {
        outln!(
            "{} job{}: {} backed up, {} dry run, {} skipped, {} failed{}",
            reports.len(),
            if reports.len() == 1 { "" } else { "s" },
            count("backed-up"),
            count("dry-run"),
            count("skipped"),
            failed.len(),
            if failed.is_empty() {
                String::new()
            } else {
                format!(" ({})", failed.join(", "))
            }
        );
    }
    let failed_names = failed.join(", ");
    let failed_count = failed.len();
    let total = reports.len();
    if g.json {
        super::print_json(&Report {
            config: a.config.display().to_string(),
            dry_run: a.dry_run,
            jobs: reports,
            failed: failed_count,
            error: None,
        })?;
    }
    if let Some(e) = stopped {
        let not_run = selected[total..]
            .iter()
            .map(|j| j.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(anyhow::Error::new(e).context(format!("jobs not run: {not_run}")));
    }
    if failed_count > 0 {
        bail!("{failed_count} of {total} jobs failed: {failed_names}");
    }
    Ok(())
}

/// The global options, with the repository and its secret taken from the job file; a file
/// that says nothing of the secret leaves it to the command line and environment.
fn repository_args(g: &GlobalArgs, c: &Config) -> GlobalArgs {
    let r = &c.repository;
    if let Some(other) = g.repo.as_deref().filter(|o| *o != r.repo) {
        eprintln!(
            "warning: the repository {other} (--repo or BLOCKVAULT_REPO) is not used: the job file names {}",
            r.repo
        );
    }
    let file_names_secret =
        r.password_file.is_some() || r.password_command.is_some() || r.key_file.is_some();
    let (password_file, password_command, key_file) = if file_names_secret {
        (
            r.password_file.clone(),
            r.password_command.clone(),
            r.key_file.clone(),
        )
    } else {
        (
            g.password_file.clone(),
            g.password_command.clone(),
            g.key_file.clone(),
        )
    };
    GlobalArgs {
        repo: Some(r.repo.clone()),
        password_file,
        password_command,
        key_file,
        json: g.json,
        quiet: g.quiet,
        s3_endpoint: r.s3_endpoint.clone().or_else(|| g.s3_endpoint.clone()),
        s3_region: r.s3_region.clone().or_else(|| g.s3_region.clone()),
        storage_class: r.storage_class.clone(),
        access: g.access,
    }
}

fn print_line(r: &JobReport) {
    let mut line = format!("[{}] ", r.job);
    match (r.outcome, &r.backup) {
        ("skipped", _) => line.push_str(&format!(
            "skipped: {}",
            r.reason.as_deref().unwrap_or("not due")
        )),
        ("failed", _) => line.push_str(&format!(
            "FAILED after {:.1} s: {}",
            r.seconds,
            r.reason.as_deref().unwrap_or("unknown error")
        )),
        ("dry-run", None) => line.push_str(&format!(
            "dry run: {}",
            r.reason.as_deref().unwrap_or("nothing read")
        )),
        (_, Some(b)) => {
            if b.dry_run {
                line.push_str(&format!(
                    "dry run: read {} from {}; would upload {} ({} stored)",
                    HumanBytes(b.size),
                    b.source,
                    super::count(b.chunks_new, "object"),
                    HumanBytes(b.bytes_new_stored)
                ));
            } else {
                line.push_str(&format!(
                    "backed up {} as version {}: {} read, {} new ({} stored) in {:.1} s",
                    b.source,
                    b.version,
                    HumanBytes(b.size),
                    HumanBytes(b.bytes_new),
                    HumanBytes(b.bytes_new_stored),
                    r.seconds
                ));
            }
        }
        (o, None) => line.push_str(o),
    }
    if let Some(t) = &r.snapshot_taken {
        line.push_str(&format!("; took snapshot {t}"));
    }
    if !r.snapshots_destroyed.is_empty() {
        line.push_str(&format!(
            "; destroyed {} older snapshots",
            r.snapshots_destroyed.len()
        ));
    }
    if let Some(p) = &r.prune {
        let verb = if r.outcome == "dry-run" {
            "prune would remove"
        } else {
            "pruned"
        };
        if p.removed.is_empty() {
            line.push_str(&format!("; {verb} nothing ({} kept)", p.kept));
        } else {
            // A job's first prune of a long history can remove hundreds of versions: the
            // line names the first few, and --json lists them all.
            line.push_str(&format!(
                "; {verb} {} ({} kept)",
                crate::error::listed(&p.removed, 10),
                p.kept
            ));
        }
    }
    if let Some(n) = r.next_due.as_ref().filter(|_| r.outcome != "skipped") {
        line.push_str(&format!("; next due {n}"));
    }
    outln!("{line}");
    for w in &r.warnings {
        outln!("[{}] warning: {w}", r.job);
    }
}

async fn run_job(
    g: &GlobalArgs,
    repo: &Arc<Repo>,
    job: &Job,
    a: &RunArgs,
    r: &mut JobReport,
) -> Result<()> {
    let now = crate::repo::now_unix();
    if let Some(s) = &job.schedule {
        let newest = repo
            .list_versions(&job.name)
            .await?
            .iter()
            .filter_map(|v| prune::time_from_name(v))
            .max();
        if !a.force && !s.is_due(now, newest) {
            r.outcome = "skipped";
            r.reason = Some(format!(
                "not due until {} (a version was made in this period, at {}; --force runs it now)",
                super::rfc3339(s.next_due(now)),
                newest.map_or_else(String::new, super::rfc3339)
            ));
            r.next_due = Some(super::rfc3339(s.next_due(now)));
            return Ok(());
        }
    }
    if !g.quiet && !g.json {
        outln!("[{}] starting: {}", job.name, describe(&job.source));
    }
    let recursive = matches!(&job.source, Source::Zfs(z) if z.recursive);
    let (spec, zfs_base, base_version) = match &job.source {
        Source::File(p) => (SourceSpec::Path(p.clone()), None, None),
        Source::Command(c) => (SourceSpec::Command(c.clone()), None, None),
        Source::Zfs(z) => {
            let snapshot = match &z.snapshot {
                Some(s) => s.clone(),
                None => {
                    let name = new_snapshot_name(z)?;
                    if !a.dry_run {
                        zfs::cmd::create_snapshot(&name, z.recursive)?;
                        r.snapshot_taken = Some(name.clone());
                    }
                    name
                }
            };
            // Healing a ZFS job sends a full stream: an incremental would build on the
            // stored chain, whose damage it cannot mend (the snapshots that hold the lost
            // data are usually gone from the pool), and would depend on it.
            let full = a.heal || full_due(repo, &job.name, z).await?;
            let planned = a.dry_run && z.snapshot.is_none();
            let send = ZfsSend {
                snapshot: &snapshot,
                from: None,
                auto: !full,
                recursive: z.recursive,
            };
            let plan = zfs_send_plan(repo, &job.name, send, planned, false).await;
            let plan = match plan {
                Ok(p) => p,
                Err(e) => {
                    drop_snapshot(r, recursive);
                    return Err(e);
                }
            };
            if planned {
                r.outcome = "dry-run";
                r.reason = Some(format!(
                    "would take snapshot {snapshot} and send it {}",
                    match &plan.base_version {
                        Some(v) => format!("incremental from the snapshot stored as version {v}"),
                        None if a.heal => "in full (--heal)".to_string(),
                        None if full => {
                            format!("in full (full_every = {})", z.full_every.unwrap_or(1))
                        }
                        None => "in full (no stored snapshot of it is on the pool)".to_string(),
                    }
                ));
                prune_after(repo, job, a, r, now, plan.base_version.clone()).await?;
                return Ok(());
            }
            (plan.spec, plan.base_guid, plan.base_version)
        }
    };
    let done = backup(
        repo.clone(),
        &spec,
        BackupOptions {
            series: job.name.clone(),
            time: None,
            in_flight: job.in_flight,
            progress: g.progress(),
            allow_empty: job.allow_empty,
            dry_run: a.dry_run,
            zfs_required: matches!(job.source, Source::Zfs(_)),
            raw: false,
            zfs_base,
            timeout: job.timeout,
            heal: a.heal,
        },
    )
    .await;
    let summary = match done {
        Ok(s) => s,
        Err(e) => {
            drop_snapshot(r, recursive);
            return Err(e);
        }
    };
    warn_if_unrestorable(repo, &summary).await?;
    r.outcome = if summary.dry_run {
        "dry-run"
    } else {
        "backed-up"
    };
    r.backup = Some(summary);
    if !a.dry_run
        && let Source::Zfs(z) = &job.source
        && z.snapshot.is_none()
    {
        match destroy_old_snapshots(z) {
            Ok(gone) => r.snapshots_destroyed = gone,
            Err(e) => r.warnings.push(format!("{e:#}")),
        }
    }
    prune_after(repo, job, a, r, now, base_version).await?;
    if let Some(s) = &job.schedule {
        r.next_due = Some(super::rfc3339(s.next_due(now)));
    }
    Ok(())
}

fn describe(s: &Source) -> String {
    match s {
        Source::File(p) => format!("file {}", p.display()),
        Source::Command(c) => format!("command `{c}`"),
        Source::Zfs(z) => match &z.snapshot {
            Some(s) => format!("zfs send of {s}"),
            None => format!("zfs send of a new snapshot of {}", z.dataset),
        },
    }
}

/// `dataset@<prefix><UTC time>`, with `-2`, `-3`, ... when two runs fall in one second.
fn new_snapshot_name(z: &ZfsSource) -> Result<String> {
    let base = format!(
        "{}@{}{}",
        z.dataset,
        z.snapshot_prefix,
        jiff::Timestamp::now().strftime("%Y-%m-%dT%H%M%SZ")
    );
    // After the newest of this second's names, not in the first gap: an older snapshot of
    // this second may be destroyed already but stored in the series, and a chain holding two
    // snapshots of one name cannot be received (`destination already exists`). The newest
    // one stays on the pool (keep_snapshots >= 1) until a later run succeeds.
    let newest = zfs::cmd::snapshots(&z.dataset)?
        .iter()
        .filter_map(|s| match s.name.strip_prefix(&base) {
            Some("") => Some(1),
            Some(rest) => rest.strip_prefix('-')?.parse::<u32>().ok(),
            None => None,
        })
        .max();
    Ok(match newest {
        None => base,
        Some(n) => format!("{base}-{}", n.saturating_add(1)),
    })
}

/// A snapshot this run took for a backup that recorded nothing would only take pool space.
fn drop_snapshot(r: &mut JobReport, recursive: bool) {
    if let Some(s) = r.snapshot_taken.take()
        && let Err(e) = zfs::cmd::destroy_snapshot(&s, recursive)
    {
        r.warnings
            .push(format!("the snapshot this run took stays: {e:#}"));
    }
}

/// With `full_every = N`, a full stream is due when the newest N-1 versions are all
/// incremental.
async fn full_due(repo: &Arc<Repo>, series: &str, z: &ZfsSource) -> Result<bool> {
    let Some(n) = z.full_every else {
        return Ok(false);
    };
    if n <= 1 || repo.list_versions(series).await?.is_empty() {
        return Ok(true);
    }
    let loaded = prune::load_series(repo, series, |w| eprintln!("warning: {w}")).await?;
    let mut newest_first: Vec<&prune::Loaded> = loaded.versions.iter().collect();
    newest_first.sort_by(|a, b| prune::newer_first(&a.info, &b.info));
    let incrementals = newest_first
        .iter()
        .take_while(|v| v.zfs.as_ref().is_some_and(|f| f.is_incremental()))
        .count();
    Ok(incrementals as u64 + 1 >= u64::from(n))
}

/// Destroys the snapshots this job took (by prefix), all but the newest `keep_snapshots`.
fn destroy_old_snapshots(z: &ZfsSource) -> Result<Vec<String>> {
    let pool = zfs::cmd::snapshots(&z.dataset)?;
    let ours: Vec<&zfs::cmd::Snapshot> = pool
        .iter()
        .filter(|s| s.short_name().starts_with(&z.snapshot_prefix))
        .collect();
    let keep = z.keep_snapshots as usize;
    let mut gone = Vec::new();
    if ours.len() > keep {
        for s in &ours[..ours.len() - keep] {
            zfs::cmd::destroy_snapshot(&s.name, z.recursive)?;
            gone.push(s.name.clone());
        }
    }
    Ok(gone)
}

async fn prune_after(
    repo: &Arc<Repo>,
    job: &Job,
    a: &RunArgs,
    r: &mut JobReport,
    now: i64,
    base_version: Option<String>,
) -> Result<()> {
    let Some(policy) = &job.keep else {
        return Ok(());
    };
    let made = r
        .backup
        .as_ref()
        .filter(|b| !b.dry_run && b.recorded)
        .map(|b| b.version.clone());
    let done = async {
        // A dry run plans as if this run's version existed, so it shows the real run's plan.
        let extra = a.dry_run.then(|| VersionInfo {
            name: "(this run)".to_string(),
            time: now,
            needs: base_version,
        });
        let seed = prune::Seed::Stored {
            leaving_out: made.as_deref(),
        };
        let warn = |w| eprintln!("warning: {w}");
        prune::apply(repo, &job.name, policy, seed, a.dry_run, extra, warn).await
    }
    .await
    .map_err(|e| {
        let made = r
            .backup
            .as_ref()
            .filter(|b| !b.dry_run)
            .map(|b| format!("version {} was recorded, but ", b.version))
            .unwrap_or_default();
        anyhow!("{made}pruning series {} failed: {e:#}", job.name)
    })?;
    let removed: Vec<String> = done
        .plan
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.version.clone())
        .collect();
    r.prune = Some(PruneReport {
        kept: done.plan.len() - removed.len(),
        removed: match done.removal {
            Some(rm) => rm.removed,
            None => removed,
        },
        seed: done.seed,
    });
    Ok(())
}
