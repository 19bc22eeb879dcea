use super::{GlobalArgs, parse_in_flight};
use crate::backup::DEFAULT_IN_FLIGHT;
use crate::gc::{GcOptions, gc};
use anyhow::Result;
use clap::Args;
use indicatif::HumanBytes;

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Say what would be deleted, delete nothing (takes no lock).
    #[arg(long)]
    pub dry_run: bool,
    /// Deletes issued at once.
    #[arg(long, default_value_t = DEFAULT_IN_FLIGHT, value_name = "N", value_parser = parse_in_flight)]
    pub in_flight: usize,
}

pub async fn run(g: &GlobalArgs, a: GcArgs) -> Result<()> {
    let repo = g.open().await?;
    let s = gc(
        repo,
        GcOptions {
            dry_run: a.dry_run,
            in_flight: a.in_flight,
        },
    )
    .await?;
    if g.json {
        return super::print_json(&s);
    }
    if !g.quiet {
        let verb = if s.dry_run { "would delete" } else { "deleted" };
        outln!(
            "{} in {} series reference {}; {} of {} {} unreferenced{}",
            super::count(s.versions, "version"),
            s.series,
            super::count(s.chunks_referenced, "chunk"),
            s.chunks_deleted,
            super::count(s.chunks_stored, "stored chunk"),
            if s.chunks_deleted == 1 { "was" } else { "were" },
            if s.chunks_deleted == 0 {
                String::new()
            } else {
                format!(": {verb} them, {}", HumanBytes(s.bytes_deleted))
            }
        );
        if let Some(line) = super::requests_line(&s.requests) {
            outln!("{line}");
        }
        if let Some(holder) = &s.blocked_by {
            outln!(
                "note: gc would not run now (exit 5): {holder}; the chunks a backup still running has stored are among those counted"
            );
        }
        if s.leftovers_deleted > 0 {
            outln!(
                "{} temporary files of writes cut short (a crash or a stop): {verb} them, {}",
                s.leftovers_deleted,
                HumanBytes(s.leftover_bytes_deleted)
            );
        }
    }
    Ok(())
}
