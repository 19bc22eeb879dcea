use super::GlobalArgs;
use crate::lock::{self, LockState};
use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

/// Locks of processes that died are ignored by every command already; `unlock` tidies them
/// away, and removes the ones no command can see through: unreadable locks (damaged, another
/// repository's) and, with --all, live ones.
#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Also remove locks that cannot be read (damaged, from another repository, or written
    /// by a newer blockvault that may still be running).
    #[arg(long)]
    pub unreadable: bool,
    /// Remove every lock, live ones too, except those of processes running on this host:
    /// only when no blockvault uses the repository on any other host. A backup whose lock is
    /// removed fails before it commits (a gc may have swept its new chunks).
    #[arg(long)]
    pub all: bool,
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Serialize)]
struct Row {
    lock: String,
    state: &'static str,
    description: String,
    removed: bool,
}

pub async fn run(g: &GlobalArgs, a: UnlockArgs) -> Result<()> {
    let repo = g.open().await?;
    let mut rows = Vec::new();
    for e in lock::list(&repo, None).await? {
        // Asked once: the answer may change while we look.
        let running_here = match &e.state {
            LockState::Live(i) => lock::held_by_running_process_here(i).then_some(i.pid),
            _ => None,
        };
        let (state, remove) = match &e.state {
            LockState::Stale(_) => ("stale", true),
            LockState::Unreadable(_) => ("unreadable", a.unreadable || a.all),
            LockState::Live(_) => ("live", a.all && running_here.is_none()),
        };
        if remove && !a.dry_run {
            repo.store()
                .delete(&e.name)
                .await
                .with_context(|| format!("removing lock {}", e.name))?;
        }
        rows.push(Row {
            lock: e.name.clone(),
            state,
            description: e.describe(),
            removed: remove && !a.dry_run,
        });
        if !g.quiet && !g.json {
            let verb = match (remove, a.dry_run) {
                (true, false) => "removed",
                (true, true) => "would remove",
                (false, _) => "kept",
            };
            let hint = match (remove, state, running_here) {
                (false, "live", Some(pid)) => &*format!(
                    " (kept even with --all: process {pid}, which took it, is running on this host; its lock goes when it ends)"
                ),
                (false, "live", None) => " (--all removes it; only if it is not really running)",
                (false, "unreadable", _) => " (--unreadable removes it)",
                _ => "",
            };
            outln!("{verb} {state} {}{hint}", e.describe());
        }
    }
    if g.json {
        return super::print_json(&rows);
    }
    if !g.quiet && rows.is_empty() {
        outln!("the repository holds no locks");
    }
    Ok(())
}
