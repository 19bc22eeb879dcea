//! Backup jobs from a TOML file (`blockvault run --config`): parsing, validation and the
//! schedule. Pure: the text comes in, a validated [`Config`] or an error naming the file, line,
//! job and field goes out; running the jobs is `cli::run`'s.
//!
//! A job is due once per slot of its `every` period: slots start at the Unix epoch plus
//! `phase` (as s3napback's Frequency and Phase) and the job is due when the series has no
//! version made in the current slot. Asking the repository, not a state file, keeps the
//! answer right when a run was missed, a version was made by hand, or the host moved.

use crate::layout;
use crate::retention::{DAY, Hanoi, Policy, Within, parse_period};
use serde::Deserialize;
use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Snapshots a job takes are named `<dataset>@<prefix><time>`.
pub const DEFAULT_SNAPSHOT_PREFIX: &str = "blockvault-";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub repository: Repository,
    pub jobs: Vec<Job>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Repository {
    /// A local directory or `s3://bucket/prefix`.
    pub repo: String,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<String>,
    pub key_file: Option<PathBuf>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub storage_class: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The series name.
    pub name: String,
    pub source: Source,
    pub schedule: Option<Schedule>,
    /// Applied after each successful backup.
    pub keep: Option<Policy>,
    pub in_flight: Option<usize>,
    pub allow_empty: bool,
    /// The backup fails, recording nothing, if it runs longer than this; the next job runs.
    pub timeout: Option<std::time::Duration>,
    /// Where the job's `[[job]]` starts, for messages.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A file or block device, by absolute path.
    File(PathBuf),
    /// A shell command whose standard output is backed up; non-zero exit records nothing.
    Command(String),
    Zfs(ZfsSource),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ZfsSource {
    pub dataset: String,
    /// A snapshot to send (`pool/fs@snap`); without it the job takes one per run.
    pub snapshot: Option<String>,
    /// Send a full stream when the newest `full_every - 1` versions are all incremental.
    pub full_every: Option<u32>,
    pub snapshot_prefix: String,
    /// How many of the snapshots this job took stay on the pool after a successful backup.
    pub keep_snapshots: u32,
    /// The dataset and its descendants: snapshots taken and destroyed with `-r`, sent as a
    /// replication stream (`zfs send -R`).
    pub recursive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub every: i64,
    pub phase: i64,
}

impl Schedule {
    /// The start of the slot `now` falls in.
    pub fn slot_start(&self, now: i64) -> i64 {
        now - (now - self.phase).rem_euclid(self.every)
    }

    /// Due when no version was made in the current slot (a version from the future, e.g. a
    /// clock that was set back, counts as made in it).
    pub fn is_due(&self, now: i64, newest_version: Option<i64>) -> bool {
        newest_version.is_none_or(|t| t < self.slot_start(now))
    }

    pub fn next_due(&self, now: i64) -> i64 {
        self.slot_start(now) + self.every
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Required, but checked after the parse: serde's "missing field" has no place in the file
    /// and would be blamed on the job at its start.
    repository: Option<Spanned<RawRepository>>,
    defaults: Option<Spanned<RawDefaults>>,
    #[serde(default)]
    job: Vec<Spanned<RawJob>>,
}

/// What every job gets unless it says otherwise: the job-level keys that are not about one
/// source.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    every: Option<Spanned<String>>,
    phase: Option<Spanned<String>>,
    keep: Option<Spanned<RawKeep>>,
    in_flight: Option<Spanned<usize>>,
    allow_empty: Option<bool>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepository {
    repo: Spanned<String>,
    password_file: Option<Spanned<PathBuf>>,
    password_command: Option<Spanned<String>>,
    key_file: Option<Spanned<PathBuf>>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    storage_class: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Spanned<String>,
    source: Spanned<RawSource>,
    every: Option<Spanned<String>>,
    phase: Option<Spanned<String>>,
    keep: Option<Spanned<RawKeep>>,
    in_flight: Option<Spanned<usize>>,
    allow_empty: Option<bool>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    file: Option<PathBuf>,
    command: Option<String>,
    zfs: Option<String>,
    full_every: Option<u32>,
    snapshot_prefix: Option<String>,
    keep_snapshots: Option<u32>,
    recursive: Option<bool>,
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
struct RawKeep {
    last: Option<u32>,
    hourly: Option<u32>,
    daily: Option<u32>,
    weekly: Option<u32>,
    monthly: Option<u32>,
    yearly: Option<u32>,
    within: Option<String>,
    weighted: Option<u32>,
    hanoi: Option<u32>,
    hanoi_every: Option<String>,
    #[serde(default)]
    archive_oldest: bool,
    /// `keep = { all = true }`: every version stays, whatever `[defaults]` says.
    #[serde(default)]
    all: bool,
}

/// Only what is needed to name the job an error is in when the strict parse failed.
#[derive(Deserialize)]
struct Outline {
    defaults: Option<Spanned<toml::Table>>,
    #[serde(default)]
    job: Vec<Spanned<toml::Table>>,
}

/// An error in a config file, already worded for the user: file, line, job, field, reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The key written at the start of the line `offset` is on, if any (`every = "1x"`).
    fn key_at(&self, offset: usize) -> Option<String> {
        let end = offset.min(self.text.len());
        let start = self.text[..end].rfind('\n').map_or(0, |i| i + 1);
        let line = self.text[start..].lines().next().unwrap_or("");
        let (key, _) = line.split_once('=')?;
        let key = key.trim();
        let bare = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        bare.then(|| key.to_string())
    }

    fn error(
        &self,
        span: Range<usize>,
        job: Option<(usize, &str)>,
        field: Option<&str>,
        msg: &str,
    ) -> ConfigError {
        let line = self.line_of(span.start);
        let mut out = format!("{}, line {line}", self.path.display());
        if let Some((i, name)) = job {
            if name.is_empty() {
                out.push_str(&format!(", job {} (unnamed)", i + 1));
            } else {
                out.push_str(&format!(", job {:?} (job {})", name, i + 1));
            }
        }
        if let Some(f) = field {
            out.push_str(&format!(", field `{f}`"));
        }
        out.push_str(": ");
        out.push_str(msg);
        let shown = self.text.lines().nth(line - 1).unwrap_or("").trim_end();
        if !shown.is_empty() {
            out.push_str(&format!("\n  {line:>4} | {shown}"));
        }
        ConfigError(out)
    }

    /// Names the job a serde error happened in, by the `[[job]]` header before it.
    fn serde_error(&self, e: &toml::de::Error) -> ConfigError {
        let msg = e.message().to_string();
        let Some(span) = e.span() else {
            return ConfigError(format!("{}: {msg}", self.path.display()));
        };
        let job = toml::from_str::<Outline>(self.text).ok().and_then(|o| {
            // In the table whose header comes last before the error: [defaults] is no job.
            let defaults_at = o
                .defaults
                .map(|d| d.span().start)
                .filter(|&d| d <= span.start);
            o.job
                .iter()
                .enumerate()
                .rev()
                .find(|(_, j)| j.span().start <= span.start)
                .filter(|(_, j)| defaults_at.is_none_or(|d| d < j.span().start))
                .map(|(i, j)| {
                    let name = j
                        .get_ref()
                        .get("name")
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .to_string();
                    (i, name)
                })
        });
        let field = self.key_at(span.start);
        self.error(
            span,
            job.as_ref().map(|(i, n)| (*i, n.as_str())),
            field.as_deref(),
            &msg,
        )
    }
}

/// Parses and validates a whole config file; nothing runs unless all of it is right.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let cx = Ctx { path, text };
    let raw: RawConfig = toml::from_str(text).map_err(|e| cx.serde_error(&e))?;
    let Some(raw_repository) = &raw.repository else {
        return Err(ConfigError(format!(
            "{}: no [repository] table: the file must say which repository its jobs back up to, e.g.\n  [repository]\n  repo = \"/srv/vault\"",
            path.display()
        )));
    };
    let repository = repository(&cx, raw_repository)?;
    if raw.job.is_empty() {
        return Err(ConfigError(format!(
            "{}: no [[job]] defined: nothing to run",
            path.display()
        )));
    }
    let no_defaults = RawDefaults::default();
    let defaults = raw.defaults.as_ref().map_or(&no_defaults, Spanned::get_ref);
    check_defaults(&cx, defaults)?;
    let mut names = HashSet::new();
    let mut jobs = Vec::with_capacity(raw.job.len());
    for (i, j) in raw.job.iter().enumerate() {
        let header = j.span();
        let j = j.get_ref();
        let name = j.name.get_ref().as_str();
        let at = |span: Range<usize>, field: &str, msg: &str| {
            cx.error(span, Some((i, name)), Some(field), msg)
        };
        layout::validate_series(name).map_err(|e| at(j.name.span(), "name", &e))?;
        if !names.insert(name) {
            return Err(at(
                j.name.span(),
                "name",
                "two jobs have this name; each job is one series",
            ));
        }
        let source = source(&j.source, &at)?;
        // A job's own `every` comes with its own phase (none unless given); an inherited
        // `every` brings the default phase unless the job gives one.
        let (every, phase) = match &j.every {
            Some(e) => (Some(e), j.phase.as_ref()),
            None => (
                defaults.every.as_ref(),
                j.phase.as_ref().or(defaults.phase.as_ref()),
            ),
        };
        let Settings {
            schedule,
            keep,
            in_flight,
            timeout,
        } = settings(
            Given {
                every,
                phase,
                keep: j.keep.as_ref().or(defaults.keep.as_ref()),
                in_flight: j.in_flight.as_ref().or(defaults.in_flight.as_ref()),
                timeout: j.timeout.as_ref().or(defaults.timeout.as_ref()),
            },
            &at,
        )?;
        jobs.push(Job {
            name: name.to_string(),
            source,
            schedule,
            keep,
            in_flight,
            allow_empty: j.allow_empty.or(defaults.allow_empty).unwrap_or(false),
            timeout,
            line: cx.line_of(header.start),
        });
    }
    Ok(Config { repository, jobs })
}

/// The defaults on their own, so that a mistake there is reported even when every job
/// gives its own value (each job checks what it inherits again, in its own terms).
fn check_defaults(cx: &Ctx, d: &RawDefaults) -> Result<(), ConfigError> {
    let at = |span: Range<usize>, field: &str, msg: &str| {
        cx.error(span, None, Some(field), &format!("{msg} (in [defaults])"))
    };
    let given = Given {
        every: d.every.as_ref(),
        phase: d.phase.as_ref(),
        keep: d.keep.as_ref(),
        in_flight: d.in_flight.as_ref(),
        timeout: d.timeout.as_ref(),
    };
    settings(given, &at).map(drop)
}

/// The keys a job may take from `[defaults]`, as written (in the job or inherited).
struct Given<'a> {
    every: Option<&'a Spanned<String>>,
    phase: Option<&'a Spanned<String>>,
    keep: Option<&'a Spanned<RawKeep>>,
    in_flight: Option<&'a Spanned<usize>>,
    timeout: Option<&'a Spanned<String>>,
}

/// The same keys, checked and parsed.
struct Settings {
    schedule: Option<Schedule>,
    keep: Option<Policy>,
    in_flight: Option<usize>,
    timeout: Option<std::time::Duration>,
}

fn settings(
    g: Given,
    at: &impl Fn(Range<usize>, &str, &str) -> ConfigError,
) -> Result<Settings, ConfigError> {
    // "none" drops a default: the job is due at every run, or has no time limit.
    let every = g.every.filter(|e| !is_none(e));
    let schedule = match every {
        None => {
            if let Some(p) = g.phase {
                return Err(at(p.span(), "phase", "a phase needs `every`"));
            }
            None
        }
        Some(e) => {
            let every = parse_period(e.get_ref()).map_err(|m| at(e.span(), "every", &m))?;
            let phase = match g.phase {
                None => 0,
                Some(p) if p.get_ref().trim() == "0" => 0,
                Some(p) => {
                    let v = parse_period(p.get_ref()).map_err(|m| at(p.span(), "phase", &m))?;
                    if v >= every {
                        return Err(at(
                            p.span(),
                            "phase",
                            &format!("the phase must be shorter than `every` ({})", e.get_ref()),
                        ));
                    }
                    v
                }
            };
            Some(Schedule { every, phase })
        }
    };
    let keep = match g.keep {
        None => None,
        Some(k) if k.get_ref().all => {
            let only_all = RawKeep {
                all: true,
                ..RawKeep::default()
            };
            if *k.get_ref() != only_all {
                return Err(at(
                    k.span(),
                    "keep",
                    "`all = true` keeps every version and takes no other rule",
                ));
            }
            None
        }
        Some(k) => Some(policy(k.get_ref(), schedule).map_err(|m| at(k.span(), "keep", &m))?),
    };
    let in_flight = match g.in_flight {
        Some(n) if *n.get_ref() == 0 => {
            return Err(at(n.span(), "in_flight", "must be at least 1"));
        }
        n => n.map(|n| *n.get_ref()),
    };
    let timeout = match g.timeout.filter(|t| !is_none(t)) {
        None => None,
        Some(t) => Some(
            crate::retention::parse_timeout(t.get_ref())
                .map_err(|m| at(t.span(), "timeout", &m))?,
        ),
    };
    Ok(Settings {
        schedule,
        keep,
        in_flight,
        timeout,
    })
}

fn is_none(value: &Spanned<String>) -> bool {
    value.get_ref().trim() == "none"
}

fn repository(cx: &Ctx, r: &Spanned<RawRepository>) -> Result<Repository, ConfigError> {
    let at = |span: Range<usize>, field: &str, msg: &str| cx.error(span, None, Some(field), msg);
    let raw = r.get_ref();
    let repo = raw.repo.get_ref();
    if repo.trim().is_empty() {
        return Err(at(
            raw.repo.span(),
            "repo",
            "empty: give a local directory or s3://bucket/prefix",
        ));
    }
    if !repo.starts_with("s3://") && !Path::new(repo).is_absolute() {
        return Err(at(
            raw.repo.span(),
            "repo",
            &format!(
                "{repo:?} must be an absolute path or s3://bucket/prefix (cron and systemd run from another directory)"
            ),
        ));
    }
    for (field, p) in [
        ("password_file", &raw.password_file),
        ("key_file", &raw.key_file),
    ] {
        if let Some(p) = p
            && !p.get_ref().is_absolute()
        {
            return Err(at(
                p.span(),
                field,
                &format!("{:?} must be an absolute path", p.get_ref().display()),
            ));
        }
    }
    let given: Vec<Range<usize>> = [
        raw.password_file.as_ref().map(Spanned::span),
        raw.password_command.as_ref().map(Spanned::span),
        raw.key_file.as_ref().map(Spanned::span),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() > 1 {
        return Err(cx.error(
            given[1].clone(),
            None,
            None,
            "[repository] takes one of password_file, password_command and key_file",
        ));
    }
    if let Some(c) = &raw.password_command
        && c.get_ref().trim().is_empty()
    {
        return Err(at(c.span(), "password_command", "empty"));
    }
    Ok(Repository {
        repo: repo.clone(),
        password_file: raw.password_file.as_ref().map(|p| p.get_ref().clone()),
        password_command: raw.password_command.as_ref().map(|p| p.get_ref().clone()),
        key_file: raw.key_file.as_ref().map(|p| p.get_ref().clone()),
        s3_endpoint: raw.s3_endpoint.clone(),
        s3_region: raw.s3_region.clone(),
        storage_class: raw.storage_class.clone(),
    })
}

fn source(
    s: &Spanned<RawSource>,
    at: &impl Fn(Range<usize>, &str, &str) -> ConfigError,
) -> Result<Source, ConfigError> {
    let span = s.span();
    let r = s.get_ref();
    let err = |msg: &str| at(span.clone(), "source", msg);
    let kinds = [r.file.is_some(), r.command.is_some(), r.zfs.is_some()];
    match kinds.iter().filter(|&&k| k).count() {
        0 => return Err(err("give one of file, command or zfs")),
        1 => {}
        _ => return Err(err("give only one of file, command and zfs")),
    }
    if r.zfs.is_none()
        && (r.full_every.is_some()
            || r.snapshot_prefix.is_some()
            || r.keep_snapshots.is_some()
            || r.recursive.is_some())
    {
        return Err(err(
            "full_every, snapshot_prefix, keep_snapshots and recursive apply to zfs sources only",
        ));
    }
    if let Some(f) = &r.file {
        if !f.is_absolute() {
            return Err(err(&format!(
                "file {:?} must be an absolute path (cron and systemd run jobs from another directory)",
                f.display()
            )));
        }
        return Ok(Source::File(f.clone()));
    }
    if let Some(c) = &r.command {
        if c.trim().is_empty() {
            return Err(err("command is empty"));
        }
        return Ok(Source::Command(c.clone()));
    }
    let Some(z) = &r.zfs else {
        return Err(err("give one of file, command or zfs"));
    };
    let (dataset, snapshot) = match z.split_once('@') {
        Some((d, s)) if !d.is_empty() && !s.is_empty() && !s.contains('@') => {
            (d.to_string(), Some(z.clone()))
        }
        Some(_) => {
            return Err(err(&format!(
                "zfs {z:?} is neither a dataset (pool/fs) nor a snapshot (pool/fs@snap)"
            )));
        }
        None if z.is_empty() || z.starts_with('/') || z.ends_with('/') => {
            return Err(err(&format!("zfs {z:?} is not a dataset name (pool/fs)")));
        }
        None => (z.clone(), None),
    };
    if r.full_every == Some(0) {
        return Err(err(
            "full_every must be at least 1 (1: a full stream every run)",
        ));
    }
    let prefix = r
        .snapshot_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_SNAPSHOT_PREFIX.to_string());
    if prefix.is_empty() || prefix.contains(['@', '/', ' ']) {
        return Err(err(&format!(
            "snapshot_prefix {prefix:?} must be non-empty, without '@', '/' or spaces: it marks the snapshots this job may destroy"
        )));
    }
    if snapshot.is_some() && (r.snapshot_prefix.is_some() || r.keep_snapshots.is_some()) {
        return Err(err(
            "snapshot_prefix and keep_snapshots are for jobs that take their own snapshots; this job names its snapshot",
        ));
    }
    if r.keep_snapshots == Some(0) {
        return Err(err(
            "keep_snapshots must be at least 1: the newest snapshot is the base of the next incremental",
        ));
    }
    Ok(Source::Zfs(ZfsSource {
        dataset,
        snapshot,
        full_every: r.full_every,
        snapshot_prefix: prefix,
        keep_snapshots: r.keep_snapshots.unwrap_or(1),
        recursive: r.recursive.unwrap_or(false),
    }))
}

fn policy(k: &RawKeep, schedule: Option<Schedule>) -> Result<Policy, String> {
    let within = k
        .within
        .as_deref()
        .map(|w| Within::parse(w).map_err(|e| format!("within: {e}")))
        .transpose()?;
    if k.weighted.is_some_and(|n| n < 2) {
        return Err("weighted must be at least 2 (the oldest and newest always stay)".into());
    }
    if k.hanoi.is_some_and(|d| !(1..=32).contains(&d)) {
        return Err("hanoi takes 1 to 32 discs".into());
    }
    if k.hanoi.is_none() && (k.hanoi_every.is_some() || k.archive_oldest) {
        return Err("hanoi_every and archive_oldest need hanoi".into());
    }
    let period = match &k.hanoi_every {
        Some(p) => parse_period(p).map_err(|e| format!("hanoi_every: {e}"))?,
        // The rotation turns once per run of the job unless told otherwise.
        None => schedule.map_or(DAY, |s| s.every),
    };
    let p = Policy {
        last: k.last.unwrap_or(0),
        hourly: k.hourly.unwrap_or(0),
        daily: k.daily.unwrap_or(0),
        weekly: k.weekly.unwrap_or(0),
        monthly: k.monthly.unwrap_or(0),
        yearly: k.yearly.unwrap_or(0),
        within,
        weighted: k.weighted,
        hanoi: k.hanoi.map(|discs| Hanoi {
            discs,
            archive_oldest: k.archive_oldest,
            period_secs: period,
        }),
    };
    if p.is_empty() {
        return Err(
            "keeps nothing: give at least one of last, hourly, daily, weekly, monthly, yearly, within, weighted or hanoi above zero (leave `keep` out to keep every version, or give `keep = { all = true }` to drop a default)"
                .into(),
        );
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(t: &str) -> Result<Config, ConfigError> {
        parse(Path::new("/etc/blockvault.toml"), t)
    }

    const GOOD: &str = r#"
[repository]
repo = "s3://bucket/vault"
password_file = "/etc/blockvault.pass"
s3_endpoint = "http://127.0.0.1:3900"

[[job]]
name = "vm101"
source = { file = "/dev/zvol/tank/vm101" }
every = "1d"
keep = { last = 7, daily = 14, weekly = 8 }

[[job]]
name = "pg"
source = { command = "pg_dump -Fc app" }
every = "1w"
phase = "2d"

[[job]]
name = "tank/home"
source = { zfs = "tank/home", full_every = 30 }
keep = { hanoi = 6 }
"#;

    #[test]
    fn the_example_parses() {
        let c = parse_str(GOOD).expect("valid");
        assert_eq!(c.repository.repo, "s3://bucket/vault");
        assert_eq!(c.jobs.len(), 3);
        assert_eq!(
            c.jobs[0].source,
            Source::File("/dev/zvol/tank/vm101".into())
        );
        assert_eq!(c.jobs[0].keep.as_ref().map(|p| p.weekly), Some(8));
        assert_eq!(
            c.jobs[1].schedule,
            Some(Schedule {
                every: 7 * DAY,
                phase: 2 * DAY
            })
        );
        let Source::Zfs(z) = &c.jobs[2].source else {
            panic!("zfs source expected")
        };
        assert_eq!(z.dataset, "tank/home");
        assert_eq!(z.snapshot, None);
        assert_eq!(z.full_every, Some(30));
        assert_eq!(z.keep_snapshots, 1);
        assert_eq!(
            c.jobs[2]
                .keep
                .as_ref()
                .and_then(|p| p.hanoi)
                .map(|h| h.period_secs),
            Some(DAY)
        );
        assert_eq!(c.jobs[2].line, 19);
    }

    fn err(t: &str) -> String {
        match parse_str(t) {
            Ok(_) => panic!("accepted: {t}"),
            Err(e) => e.0,
        }
    }

    const HEAD: &str = "[repository]\nrepo = \"/srv/vault\"\n";

    /// Regression: a file without `[repository]` was reported as `line 1, job "a" (job 1):
    /// missing field repository`, blaming the first job.
    #[test]
    fn a_missing_repository_table_blames_no_job() {
        for text in [
            "[[job]]\nname = \"a\"\nsource = { file = \"/a\" }\n",
            "[defaults]\nevery = \"1d\"\n[[job]]\nname = \"a\"\nsource = { file = \"/a\" }\n",
        ] {
            let e = err(text);
            assert!(
                e.starts_with("/etc/blockvault.toml: no [repository] table"),
                "{e}"
            );
            assert!(!e.contains("(job 1)") && !e.contains("line 1"), "{e}");
        }
    }

    #[test]
    fn mistakes_name_file_line_job_and_field() {
        let e = err(&format!(
            "{HEAD}[[job]]\nname = \"a\"\nsource = {{ file = \"/a\" }}\n[[job]]\nname = \"pg\"\nsourc = {{ command = \"x\" }}\n"
        ));
        assert!(
            e.starts_with("/etc/blockvault.toml, line 8, job \"pg\" (job 2), field `sourc`: unknown field `sourc`"),
            "{e}"
        );
        let e = err(&format!("{HEAD}[[job]]\nname = \"pg\"\n"));
        assert!(e.contains("line 3, job \"pg\" (job 1)"), "{e}");
        assert!(e.contains("missing field `source`"), "{e}");
        let e = err(&format!(
            "{HEAD}[[job]]\nname = \"pg\"\nsource = {{ command = \"x\" }}\nevery = \"1x\"\n"
        ));
        assert!(
            e.contains(
                "line 6, job \"pg\" (job 1), field `every`: \"1x\": the unit must be m, h, d or w"
            ),
            "{e}"
        );
        assert!(e.contains("   6 | every = \"1x\""), "{e}");
        // One job each (after HEAD and `[[job]]`), and what its error must say.
        for (job, want) in [
            (
                "name = \"pg\"\nsource = { command = \"x\", file = \"/y\" }\n",
                "field `source`: give only one of",
            ),
            (
                "name = \"d\"\nsource = { file = \"disk.img\" }\n",
                "must be an absolute path",
            ),
            (
                "name = \"d\"\nsource = { file = \"/d\" }\nkeep = { last = 0 }\n",
                "field `keep`: keeps nothing",
            ),
            (
                "name = \"d\"\nsource = { file = \"/d\" }\nevery = \"1d\"\nphase = \"1d\"\n",
                "field `phase`: the phase must be shorter",
            ),
            (
                "name = \"d\"\nsource = { file = \"/d\", full_every = 3 }\n",
                "zfs sources only",
            ),
            (
                "name = \"d\"\nsource = { file = \"/d\" }\n[[job]]\nname = \"d\"\nsource = { file = \"/e\" }\n",
                "line 7, job \"d\" (job 2), field `name`: two jobs",
            ),
            (
                "name = \"z\"\nsource = { zfs = \"tank@a@b\" }\n",
                "neither a dataset",
            ),
            (
                "name = \"tank//vm\"\nsource = { file = \"/d\" }\n",
                "line 4, job \"tank//vm\" (job 1), field `name`: series name \"tank//vm\" has an empty part",
            ),
        ] {
            let e = err(&format!("{HEAD}[[job]]\n{job}"));
            assert!(e.contains(want), "{e}");
        }
        let e =
            err("[repository]\nrepo = \"\"\n[[job]]\nname = \"z\"\nsource = { file = \"/x\" }\n");
        assert!(e.contains("line 2, field `repo`: empty"), "{e}");
        let e = err(
            "[repository]\nrepo = \"vault\"\n[[job]]\nname = \"z\"\nsource = { file = \"/x\" }\n",
        );
        assert!(e.contains("must be an absolute path or s3://"), "{e}");
        let e = err(&format!(
            "{HEAD}password_file = \"/p\"\nkey_file = \"/k\"\n[[job]]\nname = \"z\"\nsource = {{ file = \"/x\" }}\n"
        ));
        assert!(
            e.contains("line 4: [repository] takes one of password_file"),
            "{e}"
        );
        let e = err(HEAD);
        assert!(e.contains("no [[job]]"), "{e}");
        let e = err("[repository\nrepo = 1\n");
        assert!(e.starts_with("/etc/blockvault.toml, line 1"), "{e}");
    }

    #[test]
    fn jobs_inherit_defaults_unless_they_say_otherwise() {
        let c = parse_str(&format!(
            r#"{HEAD}
[[job]]
name = "plain"
source = {{ file = "/a" }}

[[job]]
name = "own"
source = {{ command = "x" }}
every = "6h"
keep = {{ last = 3 }}
timeout = "5m"
in_flight = 2
allow_empty = false

[[job]]
name = "shifted"
source = {{ file = "/b" }}
phase = "1h"

[[job]]
name = "unbound"
source = {{ command = "y" }}
every = "none"
keep = {{ all = true }}
timeout = "none"

[defaults]
every = "1d"
phase = "3h"
keep = {{ daily = 7, hanoi = 4 }}
timeout = "2h"
in_flight = 8
allow_empty = true
"#
        ))
        .expect("valid");
        let [plain, own, shifted, unbound] = &c.jobs[..] else {
            panic!("four jobs: {c:?}")
        };
        assert_eq!(
            plain.schedule,
            Some(Schedule {
                every: DAY,
                phase: 3 * 3600
            })
        );
        let keep = plain.keep.as_ref().expect("the default keep");
        assert_eq!(keep.daily, 7);
        // hanoi_every follows the job's own schedule, inherited or not.
        assert_eq!(keep.hanoi.map(|h| h.period_secs), Some(DAY));
        assert_eq!(plain.timeout, Some(std::time::Duration::from_secs(7200)));
        assert_eq!(plain.in_flight, Some(8));
        assert!(plain.allow_empty);

        // A job's own `every` comes without the default phase; its own keep replaces the
        // default one whole.
        assert_eq!(
            own.schedule,
            Some(Schedule {
                every: 6 * 3600,
                phase: 0
            })
        );
        let keep = own.keep.as_ref().expect("its own keep");
        assert_eq!((keep.last, keep.daily, keep.hanoi), (3, 0, None));
        assert_eq!(own.timeout, Some(std::time::Duration::from_secs(300)));
        assert_eq!(own.in_flight, Some(2));
        assert!(!own.allow_empty);

        assert_eq!(
            shifted.schedule,
            Some(Schedule {
                every: DAY,
                phase: 3600
            })
        );

        // "none" and `all = true` drop a default: due at every run, every version kept, no
        // time limit.
        assert_eq!(
            (unbound.schedule, &unbound.keep, unbound.timeout),
            (None, &None, None)
        );

        // Without [defaults], nothing is inherited.
        let c = parse_str(&format!(
            "{HEAD}[[job]]\nname = \"a\"\nsource = {{ file = \"/a\" }}\n"
        ))
        .expect("valid");
        let j = &c.jobs[0];
        assert_eq!(
            (j.schedule, &j.keep, j.timeout, j.in_flight, j.allow_empty),
            (None, &None, None, None, false)
        );
    }

    #[test]
    fn a_mistake_in_defaults_is_reported_on_its_line() {
        let job = "[[job]]\nname = \"pg\"\nsource = { command = \"x\" }\n";
        let e = err(&format!("{HEAD}{job}[defaults]\nevery = \"1x\"\n"));
        assert!(
            e.contains("line 7, field `every`: \"1x\": the unit must be")
                && e.contains("(in [defaults])")
                && e.contains("   7 | every = \"1x\""),
            "{e}"
        );
        // Reported even when no job inherits it.
        let e = err(&format!(
            "{HEAD}[defaults]\nkeep = {{ last = 0 }}\ntimeout = \"0s\"\n{job}keep = {{ last = 2 }}\n"
        ));
        assert!(e.contains("line 4, field `keep`: keeps nothing"), "{e}");
        // A phase longer than the job's own `every` is not inherited: it stays valid.
        parse_str(&format!(
            "{HEAD}[defaults]\nevery = \"1w\"\nphase = \"5d\"\n{job}every = \"1d\"\n"
        ))
        .expect("the default phase goes with the default every only");
        let e = err(&format!(
            "{HEAD}[defaults]\nkeep = {{ all = true, last = 3 }}\n{job}"
        ));
        assert!(
            e.contains("field `keep`: `all = true` keeps every version and takes no other rule"),
            "{e}"
        );
        let e = err(&format!("{HEAD}{job}every = \"none\"\nphase = \"1h\"\n"));
        assert!(e.contains("field `phase`: a phase needs `every`"), "{e}");
        let e = err(&format!("{HEAD}[defaults]\nphase = \"1h\"\n{job}"));
        assert!(e.contains("field `phase`: a phase needs `every`"), "{e}");
        let e = err(&format!(
            "{HEAD}{job}[defaults]\nsource = {{ file = \"/x\" }}\n"
        ));
        assert!(
            e.starts_with("/etc/blockvault.toml, line 7, field `source`: unknown field `source`"),
            "{e}"
        );
    }

    #[test]
    fn slots_follow_every_and_phase() {
        let daily = Schedule {
            every: DAY,
            phase: 0,
        };
        let t = 1_795_352_707; // 2026-11-22T13:05:07Z
        let midnight = t - t % DAY;
        assert_eq!(daily.slot_start(t), midnight);
        assert!(daily.is_due(t, None));
        assert!(!daily.is_due(t, Some(midnight)));
        assert!(daily.is_due(t, Some(midnight - 1)));
        // A cron job at 03:00 that took a while yesterday is still due at 03:00 today.
        assert!(daily.is_due(midnight + 3 * 3600, Some(midnight - DAY + 3 * 3600 + 600)));
        assert_eq!(daily.next_due(t), midnight + DAY);
        let shifted = Schedule {
            every: DAY,
            phase: 3 * 3600,
        };
        assert_eq!(
            shifted.slot_start(midnight + 3600),
            midnight - DAY + 3 * 3600
        );
        assert_eq!(shifted.slot_start(midnight + 4 * 3600), midnight + 3 * 3600);
        // A clock set back: a version "from the future" counts as this slot's.
        assert!(!daily.is_due(t, Some(t + 3600)));
    }
}

#[cfg(test)]
mod doc_tests {
    /// The example in docs/jobs.md is a file users copy: it must stay valid.
    #[test]
    fn the_documented_example_is_valid() {
        let doc = include_str!("../docs/jobs.md");
        let start = doc
            .find("```toml\n")
            .expect("docs/jobs.md has a toml example")
            + 8;
        let len = doc[start..].find("```").expect("the example ends");
        let c = super::parse(
            std::path::Path::new("docs/jobs.md"),
            &doc[start..start + len],
        )
        .unwrap_or_else(|e| panic!("{}", e.0));
        assert_eq!(c.jobs.len(), 9);
    }
}
