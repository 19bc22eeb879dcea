use super::GlobalArgs;
use crate::backup::DEFAULT_IN_FLIGHT;
use crate::restore::{RestoreOptions, Target, restore};
use anyhow::{Result, bail};
use clap::Args;
use indicatif::HumanBytes;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[arg(long)]
    pub name: String,
    /// Version name or a unique prefix of one; the current version if omitted.
    #[arg(long)]
    pub version: Option<String>,
    /// Where to restore: a new file, an existing file or device with --in-place, or `-` for
    /// standard output.
    #[arg(value_name = "TARGET")]
    pub target: PathBuf,
    /// Update an existing file or block device, writing only the chunks that differ.
    #[arg(long)]
    pub in_place: bool,
    /// Replace an existing file.
    #[arg(long, conflicts_with = "in_place")]
    pub force: bool,
    /// Chunks fetched at once.
    #[arg(long, default_value_t = DEFAULT_IN_FLIGHT, value_name = "N")]
    pub in_flight: usize,
}

pub async fn run(g: &GlobalArgs, a: RestoreArgs) -> Result<()> {
    let to_stdout = a.target.as_os_str() == "-";
    let target = match (to_stdout, a.in_place) {
        (true, true) => bail!("--in-place needs a file or device, not standard output"),
        (true, false) if std::io::stdout().is_terminal() => {
            bail!(
                "standard output is a terminal: redirect it (`> file`, `| psql`) or give a target file"
            )
        }
        (true, false) => Target::Stdout,
        (false, true) => Target::InPlace(a.target.clone()),
        (false, false) => Target::NewFile {
            path: a.target.clone(),
            force: a.force,
        },
    };
    let repo = g.open().await?;
    let version = repo.resolve_version(&a.name, a.version.as_deref()).await?;
    let s = restore(
        repo,
        &a.name,
        &version,
        target,
        RestoreOptions {
            in_flight: a.in_flight,
            progress: g.progress(),
        },
    )
    .await?;
    if g.json {
        let text = serde_json::to_string_pretty(&s)?;
        // Standard output carries the data when restoring to it.
        if to_stdout {
            eprintln!("{text}")
        } else {
            println!("{text}")
        }
    } else if !g.quiet {
        eprintln!(
            "restored series {} version {} to {}: {} in {:.1} s ({:.0} MB/s); chunks: {} written, {} unchanged, {} zero",
            s.series,
            s.version,
            s.target,
            HumanBytes(s.size),
            s.seconds,
            s.mb_per_s,
            s.chunks_written,
            s.chunks_unchanged,
            s.chunks_zero
        );
    }
    Ok(())
}
