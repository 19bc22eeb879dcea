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
    /// The series to remove a version from.
    #[arg(long)]
    pub name: String,
    /// The full version name (no prefixes: this removes it), or @snapshot when exactly one
    /// version of a ZFS series stores that snapshot.
    #[arg(long)]
    pub version: String,
    /// Remove it even when an incremental ZFS stream needs it; the versions that then can no
    /// longer be restored are named.
    #[arg(long)]
    pub force: bool,
}

pub async fn run(g: &GlobalArgs, a: ForgetArgs) -> Result<()> {
    let repo = g.open().await?;
    let requests_before = repo.store().requests();
    // Reports an unknown series or version with what exists; a prefix is not enough here.
    let resolved = super::resolve_version(&repo, &a.name, Some(&a.version), true).await?;
    if resolved != a.version && !a.version.starts_with('@') {
        bail!(
            "{:?} is only a prefix of version {resolved} of series {:?}: give the full name to forget it",
            a.version,
            a.name
        );
    }
    let a = ForgetArgs {
        version: resolved,
        ..a
    };
    let lock = LockGuard::acquire(
        &repo,
        LockMode::Shared,
        &format!("forget of {} {}", a.name, a.version),
    )
    .await?;
    let result = prune::forget(&repo, &a.name, &a.version, a.force, |w| {
        eprintln!("warning: {w}")
    })
    .await;
    lock.release().await;
    let done = result?;
    let requests = repo.store().requests().since(requests_before);
    if g.json {
        return super::print_json(&serde_json::json!({
            "series": a.name,
            "removed": done.removed,
            "current_moved_to": done.current_moved_to,
            "current_deleted": done.current_deleted,
            "orphaned": done.orphaned,
            "requests": requests,
        }));
    }
    if !done.orphaned.is_empty() {
        eprintln!(
            "warning: --force: {} of series {} can no longer be restored (their ZFS base is gone)",
            done.orphaned.join(", "),
            a.name
        );
    }
    if !g.quiet {
        outln!(
            "removed version {} of series {}{}",
            a.version,
            a.name,
            match (&done.current_moved_to, done.current_deleted) {
                (Some(v), _) => format!("; current is now {v}"),
                (None, true) => "; it was the last version, the series is now empty".into(),
                (None, false) => String::new(),
            }
        );
        if let Some(line) = super::requests_line(&requests) {
            outln!("{line}");
        }
    }
    Ok(())
}
