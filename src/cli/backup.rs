use super::GlobalArgs;
use crate::backup::{BackupOptions, BackupSummary, backup};
use crate::prune;
use crate::repo::Repo;
use crate::source::SourceSpec;
use crate::zfs::{self, Status, chain, facts::hex_guid};
use anyhow::{Result, bail};
use clap::Args;
use indicatif::HumanBytes;
use std::io::IsTerminal;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The series this version belongs to (e.g. the VM or device name); with --zfs, the
    /// dataset's name by default.
    #[arg(long, required_unless_present = "zfs")]
    pub name: Option<String>,
    /// What to back up: a file or block device, or `-` for standard input (a ZFS send stream
    /// there is recognised and validated).
    #[arg(
        value_name = "SOURCE",
        required_unless_present_any = ["command", "zfs"],
        conflicts_with_all = ["command", "zfs"]
    )]
    pub source: Option<PathBuf>,
    /// Run `zfs send` of this snapshot (pool/dataset@snap) and store the validated stream.
    #[arg(long, value_name = "SNAPSHOT", conflicts_with = "command")]
    pub zfs: Option<String>,
    /// With --zfs: send incrementally from this earlier snapshot (`@snap` or pool/fs@snap).
    #[arg(
        long,
        value_name = "SNAPSHOT",
        requires = "zfs",
        conflicts_with = "auto_incremental"
    )]
    pub from: Option<String>,
    /// With --zfs: send incrementally from the newest snapshot that is both stored in the
    /// series and still on the pool (same GUID); a full send when there is none.
    #[arg(long, requires = "zfs")]
    pub auto_incremental: bool,
    /// With --zfs: a replication stream (`zfs send -R`) of the dataset and every descendant,
    /// with their snapshots and properties; `restore --zfs-receive` recreates the tree.
    #[arg(long, requires = "zfs")]
    pub recursive: bool,
    /// Back up the standard output of this shell command (bash -o pipefail, else sh); if it,
    /// or any part of its pipeline, exits non-zero, no version is recorded.
    #[arg(long, value_name = "COMMAND")]
    pub command: Option<String>,
    /// Record the version as made at this time (RFC 3339, e.g. 2026-01-01T03:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub time: Option<String>,
    /// Chunks processed at once [default: the CPU threads + 2 into a local directory (4 on
    /// 2 cores), at least 8 into S3, at most 16]; memory use is about this times twice the
    /// chunk size. A directory on a network mount (NFS, SMB) may want 8 or more, as S3 does.
    #[arg(long, value_name = "N", value_parser = super::parse_in_flight)]
    pub in_flight: Option<usize>,
    /// Record a version even when standard input or the command produces no data (refused
    /// by default: an empty stream is usually a producer that failed).
    #[arg(long)]
    pub allow_empty: bool,
    /// Store a stream (standard input, --command, a FIFO) as plain bytes, without looking
    /// for a ZFS send stream in it: for data that starts like one but is not (a damaged or
    /// cut copy of a stream kept as a file, say).
    #[arg(long, conflicts_with = "zfs")]
    pub raw: bool,
    /// Read and chunk the source and say how many objects and bytes would be uploaded,
    /// without writing anything to the repository.
    #[arg(long)]
    pub dry_run: bool,
    /// Give up after this long (90s, 45m, 2h): nothing is recorded, and a --command or --zfs
    /// source is killed with everything it started.
    #[arg(long, value_name = "DURATION", value_parser = crate::retention::parse_timeout)]
    pub timeout: Option<std::time::Duration>,
    /// Repair: ask the repository for every chunk instead of trusting that the previous
    /// version's chunks are there, and store again those that are missing (after `check
    /// --read-data --repair` moved damaged ones to quarantine/). Every version that uses them
    /// is whole again.
    #[arg(long)]
    pub heal: bool,
}

pub async fn run(g: &GlobalArgs, a: BackupArgs) -> Result<()> {
    // clap drops `requires = "zfs"` when SOURCE (which conflicts with --zfs) is given, so the
    // rule is enforced here, as the usage error it is.
    if a.zfs.is_none() && (a.from.is_some() || a.auto_incremental || a.recursive) {
        return Err(clap::Error::raw(
            clap::error::ErrorKind::MissingRequiredArgument,
            "--from, --auto-incremental and --recursive need --zfs SNAPSHOT: they shape the `zfs send` blockvault runs\n",
        )
        .into());
    }
    let series = match (&a.name, &a.zfs) {
        (Some(n), _) => n.clone(),
        (None, Some(snap)) => zfs::cmd::split_snapshot(snap)?.0.to_string(),
        (None, None) => bail!("--name is required: the series this version belongs to"),
    };
    crate::layout::validate_series(&series).map_err(super::usage)?;
    let spec = match (&a.command, &a.source) {
        _ if a.zfs.is_some() => SourceSpec::Stdin, // replaced below, once the repository is open
        (Some(c), _) if c.trim().is_empty() => {
            return Err(super::usage("--command is empty".to_string()));
        }
        (Some(c), _) => SourceSpec::Command(c.clone()),
        (None, Some(p)) if p.as_os_str() == "-" => {
            if std::io::stdin().is_terminal() {
                bail!(
                    "standard input is a terminal: pipe the data to back up into blockvault (e.g. `tar -cf - dir | blockvault backup --name dir -`), or give it a --command"
                );
            }
            SourceSpec::Stdin
        }
        (None, Some(p)) => {
            if !a.raw && !g.quiet && holds_zfs_stream(p) {
                eprintln!(
                    "note: {} holds a ZFS send stream; from a file it is backed up as plain bytes, without checking the stream or recording its snapshot and chain. To back it up as a ZFS stream, give it on standard input: the same command with `- < {}` in place of the path",
                    p.display(),
                    p.display()
                );
            }
            SourceSpec::Path(p.clone())
        }
        (None, None) => {
            bail!("nothing to back up: give a SOURCE path, `-` for standard input, or --command")
        }
    };
    let time = a
        .time
        .as_deref()
        .map(|t| {
            t.parse::<jiff::Timestamp>().map_err(|e| {
                super::usage(format!(
                    "--time {t:?} is not an RFC 3339 time such as 2026-01-01T03:00:00Z: {e}"
                ))
            })
        })
        .transpose()?;
    // Versions are ordered by their time: one from the future stays current, and shadows
    // every real backup after it, until its time has come.
    if let Some(t) = time
        && t > jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1)
    {
        eprintln!(
            "warning: --time {t} is in the future: this version will be the series' current one, ahead of every backup made before then"
        );
    }
    let repo = g.open().await?;
    let (spec, zfs_base) = match &a.zfs {
        Some(snap) => {
            let say = !g.quiet && !g.json;
            let send = ZfsSend {
                snapshot: snap,
                from: a.from.as_deref(),
                auto: a.auto_incremental,
                recursive: a.recursive,
            };
            let p = zfs_send_plan(&repo, &series, send, false, say).await?;
            (p.spec, p.base_guid)
        }
        None => (spec, None),
    };
    let s = backup(
        repo.clone(),
        &spec,
        BackupOptions {
            series: series.clone(),
            time,
            in_flight: a.in_flight,
            progress: g.progress(),
            allow_empty: a.allow_empty,
            dry_run: a.dry_run,
            zfs_required: a.zfs.is_some(),
            raw: a.raw,
            zfs_base,
            timeout: a.timeout,
            heal: a.heal,
        },
    )
    .await?;
    warn_if_unrestorable(&repo, &s).await?;
    if g.json {
        super::print_json(&s)?;
    } else if !g.quiet {
        if s.dry_run {
            outln!(
                "dry run of {} ({}) for series {}: nothing was written; it would upload {} ({} stored)",
                s.source,
                s.source_kind,
                s.series,
                super::count(s.chunks_new, "object"),
                HumanBytes(s.bytes_new_stored)
            );
        } else if !s.recorded {
            outln!(
                "{} ({}) is already stored in series {} as version {} (the same ZFS stream): no version recorded",
                s.source,
                s.source_kind,
                s.series,
                s.version
            );
        } else {
            outln!(
                "backed up {} ({}) as series {} version {}",
                s.source,
                s.source_kind,
                s.series,
                s.version
            );
        }
        outln!(
            "  read {} in {:.1} s ({}{}); new {} ({} stored); chunks: {} new{}, {} reused, {} zero",
            HumanBytes(s.size),
            s.seconds,
            super::rate(s.mb_per_s),
            super::peak_memory(s.peak_rss_bytes),
            HumanBytes(s.bytes_new),
            HumanBytes(s.bytes_new_stored),
            s.chunks_new,
            if a.heal {
                format!(" ({} of them missing before: healed)", s.chunks_healed)
            } else {
                String::new()
            },
            s.chunks_reused,
            s.chunks_zero
        );
        if !s.dry_run && s.recorded && !s.current {
            outln!(
                "  note: this version is older than the series' current version (an earlier --time, or a ZFS snapshot created before the current one's), which stays current: restores without --version pick that one"
            );
        }
        if let Some(z) = &s.zfs {
            outln!(
                "  zfs: {} (guid {}), {}{}",
                z.snapshot,
                z.guid,
                if z.incremental {
                    format!("incremental from guid {}", z.base_guid)
                } else {
                    "full".to_string()
                },
                if z.compound {
                    format!(", {} streams", z.substreams)
                } else {
                    String::new()
                }
            );
        }
        if let Some(line) = super::requests_line(&s.requests) {
            outln!("{line}");
        }
    }
    Ok(())
}

/// After an incremental ZFS backup: says so when no restorable version brings its base.
pub(super) async fn warn_if_unrestorable(repo: &Arc<Repo>, s: &BackupSummary) -> Result<()> {
    let Some(z) = &s.zfs else { return Ok(()) };
    if !z.incremental || s.dry_run {
        return Ok(());
    }
    let loaded = prune::load_series(repo, &s.series, |_| {}).await?;
    if let Some(Status::Missing { base_guid }) = loaded.status(&s.version) {
        eprintln!(
            "warning: version {} of series {} is an incremental stream from snapshot GUID {}, which no restorable version of the series brings: it cannot be restored until that base is backed up (`blockvault backup --zfs ...` without --from, or with --auto-incremental)",
            s.version,
            s.series,
            hex_guid(*base_guid)
        );
    }
    Ok(())
}

/// The `zfs send` to run for one snapshot.
pub(super) struct ZfsSendPlan {
    pub spec: SourceSpec,
    /// The GUID the stream must start from, when the base was chosen here (auto).
    pub base_guid: Option<u64>,
    /// The stored version that holds the chosen base.
    pub base_version: Option<String>,
}

/// What to send: `snapshot`, incremental from `from` when given; with `auto`, from the
/// newest snapshot both stored in the series and still on the pool (same GUID), else full;
/// with `recursive`, as a replication stream of the dataset and its descendants.
pub(super) struct ZfsSend<'a> {
    pub snapshot: &'a str,
    pub from: Option<&'a str>,
    pub auto: bool,
    pub recursive: bool,
}

/// The `zfs send` that [`ZfsSend`] asks for. A `planned` snapshot is one a dry run would
/// take: it is not on the pool yet.
pub(super) async fn zfs_send_plan(
    repo: &Arc<Repo>,
    series: &str,
    send: ZfsSend<'_>,
    planned: bool,
    say: bool,
) -> Result<ZfsSendPlan> {
    let ZfsSend {
        snapshot,
        from,
        auto,
        recursive,
    } = send;
    let (dataset, _) = zfs::cmd::split_snapshot(snapshot)?;
    if !auto {
        return Ok(ZfsSendPlan {
            spec: SourceSpec::ZfsSend(zfs::cmd::send_args(snapshot, from, recursive)),
            base_guid: None,
            base_version: None,
        });
    }
    let mut pool = zfs::cmd::snapshots(dataset)?;
    if planned {
        pool.push(zfs::cmd::Snapshot {
            name: snapshot.to_string(),
            guid: 0,
        });
    }
    if !pool.iter().any(|s| s.name == snapshot) {
        bail!("snapshot {snapshot} does not exist (zfs list shows no such snapshot of {dataset})");
    }
    let stored = if repo.list_versions(series).await?.is_empty() {
        None
    } else {
        Some(prune::load_series(repo, series, |w| eprintln!("warning: {w}")).await?)
    };
    let base = stored.as_ref().and_then(|st| {
        chain::pick_base(&st.nodes(), &pool, snapshot)
            .map(|(p, i)| (pool[p].clone(), st.versions[i].info.name.clone()))
    });
    match base {
        Some((base, version)) => {
            if say {
                outln!(
                    "incremental from {} (guid {}), stored as version {version}",
                    base.name,
                    hex_guid(base.guid)
                );
            }
            Ok(ZfsSendPlan {
                spec: SourceSpec::ZfsSend(zfs::cmd::send_args(
                    snapshot,
                    Some(&base.name),
                    recursive,
                )),
                base_guid: Some(base.guid),
                base_version: Some(version),
            })
        }
        None => {
            if say {
                outln!(
                    "no snapshot of {dataset} before {snapshot} is stored in series {series} with the same GUID: sending a full stream"
                );
            }
            Ok(ZfsSendPlan {
                spec: SourceSpec::ZfsSend(zfs::cmd::send_args(snapshot, None, recursive)),
                base_guid: None,
                base_version: None,
            })
        }
    }
}

/// A saved `zfs send` stream in a regular file. Only regular files are opened here: a FIFO
/// would lose the bytes read, and a device is no stream.
fn holds_zfs_stream(path: &Path) -> bool {
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && zfs::stream::starts_like_stream(&head)
}
