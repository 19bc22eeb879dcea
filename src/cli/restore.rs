use super::GlobalArgs;
use crate::backup::DEFAULT_IN_FLIGHT;
use crate::error::Error;
use crate::restore::{RestoreOptions, Target, restore};
use anyhow::{Result, anyhow, bail};
use clap::Args;
use indicatif::HumanBytes;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The series to restore a version of.
    #[arg(long)]
    pub name: String,
    /// Version name or a unique prefix of one, or @snapshot for a ZFS series; the current
    /// version if omitted.
    #[arg(long)]
    pub version: Option<String>,
    /// Where to restore: a new file, an existing file or device with --in-place, or `-` for
    /// standard output (one stored stream, as it was backed up).
    #[arg(value_name = "TARGET", required_unless_present = "zfs_receive")]
    pub target: Option<PathBuf>,
    /// Replay the ZFS chain that leads to the version (a full stream, then each incremental
    /// in order, one `zfs receive` each) into this dataset. An existing dataset whose newest
    /// snapshot is on the chain receives only the streams after it; with --force, changes
    /// made there since that snapshot are rolled back first (`zfs receive -F`).
    #[arg(long, value_name = "DATASET", conflicts_with_all = ["target", "in_place"])]
    pub zfs_receive: Option<String>,
    /// Update an existing file or block device, writing only the chunks that differ.
    #[arg(long)]
    pub in_place: bool,
    /// Replace an existing regular file (never a directory, device, FIFO or socket); with
    /// --zfs-receive, roll the target back to its newest snapshot before receiving (a
    /// mounted replication tree counts as changed).
    #[arg(long, conflicts_with = "in_place")]
    pub force: bool,
    /// Disaster recovery: write zeros for chunks that are damaged or missing instead of
    /// failing, list their byte ranges, and exit 3 with the rest of the version restored.
    #[arg(long, conflicts_with = "zfs_receive")]
    pub allow_damage: bool,
    /// Chunks fetched at once.
    #[arg(long, default_value_t = DEFAULT_IN_FLIGHT, value_name = "N", value_parser = super::parse_in_flight)]
    pub in_flight: usize,
}

pub async fn run(g: &GlobalArgs, a: RestoreArgs) -> Result<()> {
    if let Some(dataset) = &a.zfs_receive {
        return zfs_receive(g, &a, dataset).await;
    }
    let Some(target_path) = a.target.clone() else {
        bail!(
            "nothing to restore to: give a TARGET path, `-` for standard output, or --zfs-receive"
        )
    };
    let to_stdout = target_path.as_os_str() == "-";
    let target = match (to_stdout, a.in_place) {
        (true, true) => {
            return Err(super::usage(
                "--in-place needs a file or device, not standard output",
            ));
        }
        (true, false) if std::io::stdout().is_terminal() => {
            bail!(
                "standard output is a terminal: redirect it (`> file`, `| psql`) or give a target file"
            )
        }
        (true, false) => Target::Stdout,
        (false, true) => Target::InPlace(target_path.clone()),
        (false, false) => Target::NewFile {
            path: target_path.clone(),
            force: a.force,
        },
    };
    // Before the repository is opened: a mistyped target is refused before a passphrase is
    // asked for or anything is read.
    target.check()?;
    let repo = g.open().await?;
    let version = super::resolve_version(&repo, &a.name, a.version.as_deref(), false).await?;
    let s = restore(
        repo,
        &a.name,
        &version,
        target,
        RestoreOptions {
            in_flight: a.in_flight,
            progress: g.progress(),
            allow_damage: a.allow_damage,
            zfs_rollback: false,
        },
    )
    .await?;
    if g.json {
        let text = serde_json::to_string_pretty(&s)?;
        // Standard output carries the data when restoring to it.
        if to_stdout {
            eprintln!("{text}")
        } else {
            outln!("{text}")
        }
    }
    let target = if s.target == "-" {
        "standard output"
    } else {
        s.target.as_str()
    };
    if !g.json && !g.quiet {
        eprintln!(
            "restored series {} version {} to {target}: {} in {:.1} s ({}{}); chunks: {} written, {} unchanged, {} zero",
            s.series,
            s.version,
            HumanBytes(s.size),
            s.seconds,
            super::rate(s.mb_per_s),
            super::peak_memory(s.peak_rss_bytes),
            s.chunks_written,
            s.chunks_unchanged,
            s.chunks_zero
        );
        if let Some(line) = super::requests_line(&s.requests) {
            eprintln!("{line}");
        }
    }
    if s.damaged.is_empty() {
        return Ok(());
    }
    if !g.json {
        for d in &s.damaged {
            eprintln!(
                "damaged: {} bytes {}..{} written as zeros ({})",
                d.object, d.start, d.end, d.reason
            );
        }
    }
    let n = s.damaged.len();
    Err(Error::DamageFound(format!(
        "{target} holds zeros in {n} byte range{} instead of the data of version {} of series {:?} ({}): chunks that failed verification or are missing",
        if n == 1 { "" } else { "s" },
        s.version,
        s.series,
        if g.json {
            "the `damaged` array"
        } else {
            "listed above"
        }
    ))
    .into())
}

async fn zfs_receive(g: &GlobalArgs, a: &RestoreArgs, dataset: &str) -> Result<()> {
    crate::zfs::cmd::split_snapshot(&format!("{dataset}@x"))
        .map_err(|_| anyhow!("--zfs-receive {dataset:?} is not a dataset name (pool/fs)"))?;
    if dataset.contains('@') {
        bail!("--zfs-receive takes a dataset (pool/fs), not a snapshot: {dataset}");
    }
    let repo = g.open().await?;
    let version = super::resolve_version(&repo, &a.name, a.version.as_deref(), false).await?;
    let s = crate::receive::receive(
        repo,
        &a.name,
        &version,
        dataset,
        RestoreOptions {
            in_flight: a.in_flight,
            progress: g.progress(),
            allow_damage: false,
            zfs_rollback: a.force,
        },
    )
    .await?;
    if g.json {
        return super::print_json(&s);
    }
    if !g.quiet {
        if !s.skipped.is_empty() {
            outln!(
                "{} already has the snapshots of {}",
                s.target,
                s.skipped.join(", ")
            );
        }
        for r in &s.received {
            outln!(
                "received version {} ({}, guid {}) into {}: {} in {:.1} s",
                r.version,
                r.snapshot,
                r.guid,
                s.target,
                HumanBytes(r.bytes),
                r.seconds
            );
        }
        if s.received.is_empty() {
            outln!(
                "{} is already at version {}: nothing to receive",
                s.target,
                s.version
            );
        }
    }
    Ok(())
}
