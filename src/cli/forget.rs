use super::GlobalArgs;
use crate::format::lock::LockMode;
use crate::lock::LockGuard;
use crate::prune;
use anyhow::{Result, bail};
use clap::Args;

/// Removes one version's manifest; its chunks stay until `gc`. If the series' current pointer
/// names it, the pointer moves to the newest remaining version.
#[derive(Args, Debug)]
pub struct ForgetArgs {
    #[arg(long)]
    pub name: String,
    /// The full version name (no prefixes: this removes it).
    #[arg(long)]
    pub version: String,
}

pub async fn run(g: &GlobalArgs, a: ForgetArgs) -> Result<()> {
    let repo = g.open().await?;
    // Reports an unknown series or version with what exists; a prefix is not enough here.
    let resolved = repo.resolve_version(&a.name, Some(&a.version)).await?;
    if resolved != a.version {
        bail!(
            "{:?} is only a prefix of version {resolved} of series {:?}: give the full name to forget it",
            a.version,
            a.name
        );
    }
    let lock = LockGuard::acquire(
        &repo,
        LockMode::Shared,
        &format!("forget of {} {}", a.name, a.version),
    )
    .await?;
    // Whether another version depends on this one is decided inside `prune::forget`, by
    // `retention::dependents` over `retention::needs_of`: the one place the ZFS chain check
    // (an incremental needs its base) plugs in. Today every version is self-contained, so
    // nothing is refused.
    let result = prune::forget(&repo, &a.name, &a.version, |w| eprintln!("warning: {w}")).await;
    lock.release().await;
    let done = result?;
    if g.json {
        return super::print_json(&serde_json::json!({
            "series": a.name,
            "removed": done.removed,
            "current_moved_to": done.current_moved_to,
            "current_deleted": done.current_deleted,
        }));
    }
    if !g.quiet {
        println!(
            "removed version {} of series {}{}",
            a.version,
            a.name,
            match (&done.current_moved_to, done.current_deleted) {
                (Some(v), _) => format!("; current is now {v}"),
                (None, true) => "; it was the last version, the series is now empty".into(),
                (None, false) => String::new(),
            }
        );
    }
    Ok(())
}
