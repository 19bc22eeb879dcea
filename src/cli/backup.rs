use super::GlobalArgs;
use crate::backup::{BackupOptions, DEFAULT_IN_FLIGHT, backup};
use crate::source::SourceSpec;
use anyhow::{Result, anyhow, bail};
use clap::Args;
use indicatif::HumanBytes;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The series this version belongs to (e.g. the VM or device name).
    #[arg(long)]
    pub name: String,
    /// What to back up: a file or block device, or `-` for standard input.
    #[arg(
        value_name = "SOURCE",
        required_unless_present = "command",
        conflicts_with = "command"
    )]
    pub source: Option<PathBuf>,
    /// Back up the standard output of this shell command; if it exits non-zero, no version is
    /// recorded.
    #[arg(long, value_name = "COMMAND")]
    pub command: Option<String>,
    /// Record the version as made at this time (RFC 3339, e.g. 2026-01-01T03:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub time: Option<String>,
    /// Chunks processed at once; memory use is about this times twice the chunk size.
    #[arg(long, default_value_t = DEFAULT_IN_FLIGHT, value_name = "N")]
    pub in_flight: usize,
    /// Record a version even when standard input or the command produces no data (refused
    /// by default: an empty stream is usually a producer that failed).
    #[arg(long)]
    pub allow_empty: bool,
    /// Read and chunk the source and say how many objects and bytes would be uploaded,
    /// without writing anything to the repository.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(g: &GlobalArgs, a: BackupArgs) -> Result<()> {
    let spec = match (&a.command, &a.source) {
        (Some(c), _) if c.trim().is_empty() => bail!("--command is empty"),
        (Some(c), _) => SourceSpec::Command(c.clone()),
        (None, Some(p)) if p.as_os_str() == "-" => {
            if std::io::stdin().is_terminal() {
                bail!(
                    "standard input is a terminal: pipe the data to back up into blockvault (e.g. `pg_dump db | blockvault backup --name db -`)"
                );
            }
            SourceSpec::Stdin
        }
        (None, Some(p)) => SourceSpec::Path(p.clone()),
        (None, None) => {
            bail!("nothing to back up: give a SOURCE path, `-` for standard input, or --command")
        }
    };
    let time = a
        .time
        .as_deref()
        .map(|t| {
            t.parse::<jiff::Timestamp>().map_err(|e| {
                anyhow!("--time {t:?} is not an RFC 3339 time such as 2026-01-01T03:00:00Z: {e}")
            })
        })
        .transpose()?;
    let repo = g.open().await?;
    let s = backup(
        repo,
        &spec,
        BackupOptions {
            series: a.name,
            time,
            in_flight: a.in_flight,
            progress: g.progress(),
            allow_empty: a.allow_empty,
            dry_run: a.dry_run,
        },
    )
    .await?;
    if g.json {
        super::print_json(&s)?;
    } else if !g.quiet {
        if s.dry_run {
            println!(
                "dry run of {} ({}) for series {}: nothing was written; it would upload {} objects ({} stored)",
                s.source,
                s.source_kind,
                s.series,
                s.chunks_new,
                HumanBytes(s.bytes_new_stored)
            );
        } else {
            println!(
                "backed up {} ({}) as series {} version {}",
                s.source, s.source_kind, s.series, s.version
            );
        }
        println!(
            "  read {} in {:.1} s ({:.0} MB/s); new {} ({} stored); chunks: {} new, {} reused, {} zero",
            HumanBytes(s.size),
            s.seconds,
            s.mb_per_s,
            HumanBytes(s.bytes_new),
            HumanBytes(s.bytes_new_stored),
            s.chunks_new,
            s.chunks_reused,
            s.chunks_zero
        );
        let r = &s.requests;
        if r.total() > 0 {
            println!(
                "  requests: {} PUT, {} GET, {} HEAD, {} LIST, {} DELETE",
                r.put, r.get, r.head, r.list, r.delete
            );
        }
    }
    Ok(())
}
