//! Garbage collection: mark every chunk that any manifest references, sweep the rest.
//!
//! # Why it never deletes a chunk that a finished or running backup needs (DESIGN.md promise 4)
//!
//! 1. **gc runs alone.** It takes the exclusive lock (`lock.rs`): acquiring writes the lock,
//!    lists `locks/` again and backs off if any other live lock is there. Backups, restores,
//!    checks, prunes and forgets take shared locks and back off in the same way if a live
//!    exclusive lock is there. Two racers may both back off; neither proceeds believing it is
//!    alone. The one exception reads and never writes: a restore or check whose store refuses
//!    to write its lock (read-only media or credentials) goes on without one, after a
//!    warning, so a gc started meanwhile may delete chunks it is about to read. It then
//!    reports them missing (never wrong bytes); the repository itself, and every backup in
//!    it, is no worse off, since the reader changes nothing.
//! 2. **A backup decides about chunks only under its lock.** Every "this chunk is already
//!    stored" decision (the parent manifest, `exists` in the store) is made after its shared
//!    lock was taken and before its manifest is committed. No gc can run in between, so no
//!    chunk it decided to reuse can disappear before its manifest names it.
//! 3. **Stale locks.** A lock with no heartbeat for the stale limit (30 min by default;
//!    heartbeats come every 2 min, or every quarter of a shorter limit), or held by a dead
//!    process on this host, is ignored. A backup that is alive but cannot heartbeat (a
//!    network partition) refuses to commit once its last accepted heartbeat is older than
//!    half the stale limit, and so does one whose lock was removed (`unlock --all`
//!    elsewhere; `LockGuard::ensure_fresh`). So a gc that ignored its lock never sees that
//!    backup's manifest appear. gc checks its own lock the same way before every batch of
//!    deletes. One window is left: a removal between a heartbeat's check that the lock is
//!    there and its rewrite, which puts the lock back unnoticed.
//! 4. **Mark from every manifest, or not at all.** If any manifest cannot be listed, read or
//!    authenticated, gc stops before deleting anything, so a damaged manifest never turns
//!    into deleted chunks.
//! 5. **Only unreferenced chunks are deleted, nothing else.** Manifests, pointers, keys and
//!    locks are never touched. A gc interrupted at any point has deleted only chunks that no
//!    version needs: the repository is consistent, and the next gc finishes the sweep.
//!
//! Which operations may run at once:
//!
//! | running \ starting | backup, restore, check, prune, forget (shared) | gc, check --repair (exclusive) | list, show, gc --dry-run (no lock) |
//! |---|---|---|---|
//! | shared             | yes | refused, exit 5 | yes |
//! | exclusive          | refused, exit 5 | refused, exit 5 | yes |
//! | restore or check without a lock (the store refused it) | yes | yes: it cannot see them | yes |
//!
//! No client keeps a cache of chunk ids across runs yet. One that does must drop it when a
//! gc has run since it was written.

use crate::chunk_id::ChunkId;
use crate::format::lock::LockMode;
use crate::interrupt;
use crate::layout;
use crate::lock::LockGuard;
use crate::repo::Repo;
use crate::store::Requests;
use anyhow::{Context, Result, anyhow};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub struct GcOptions {
    pub dry_run: bool,
    /// Deletes issued at once.
    pub in_flight: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct GcSummary {
    pub dry_run: bool,
    pub series: u64,
    pub versions: u64,
    pub chunks_referenced: u64,
    pub chunks_stored: u64,
    /// Deleted, or with `--dry-run` would be deleted.
    pub chunks_deleted: u64,
    pub bytes_deleted: u64,
    /// Temporary files of writes cut short (a local directory's), older than the lock's stale
    /// limit: deleted, or with `--dry-run` would be deleted.
    pub leftovers_deleted: u64,
    pub leftover_bytes_deleted: u64,
    /// `--dry-run`: the lock that would keep a real gc from running now (a backup still
    /// going, whose new chunks are among those counted as unreferenced); null when none.
    pub blocked_by: Option<String>,
    pub seconds: f64,
    pub requests: Requests,
}

/// Deletes happen in batches; the lock is checked before each one.
const BATCH: usize = 256;

/// The least age of a temporary file that gc removes, whatever the lock stale limit.
const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

pub async fn gc(repo: Arc<Repo>, opts: GcOptions) -> Result<GcSummary> {
    let before = repo.store().requests();
    // A dry run deletes nothing, so it needs no lock and never blocks backups.
    let lock = if opts.dry_run {
        None
    } else {
        Some(LockGuard::acquire(&repo, LockMode::Exclusive, "gc").await?)
    };
    let result = run(&repo, &opts, lock.as_ref()).await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    let mut summary = result?;
    if opts.dry_run {
        summary.blocked_by = crate::lock::would_block(&repo, LockMode::Exclusive).await?;
    }
    summary.requests = repo.store().requests().since(before);
    Ok(summary)
}

async fn run(repo: &Arc<Repo>, opts: &GcOptions, lock: Option<&LockGuard>) -> Result<GcSummary> {
    let started = Instant::now();
    // Mark.
    let mut referenced: HashSet<ChunkId> = HashSet::new();
    // One listing of manifests/ names every version of every series: a listing per series
    // costs a LIST request each on S3.
    let mut all: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for key in repo.store().list(layout::MANIFESTS).await? {
        if let Some((s, v)) = layout::parse_manifest_key(&key) {
            all.entry(s).or_default().push(v);
        }
    }
    let mut versions = 0u64;
    for (s, vs) in &all {
        for v in vs {
            interrupt::check()?;
            let (m, _) = repo
                .load_manifest(s, v)
                .await
                .with_context(|| format!("gc stopped before deleting anything: version {v} of series {s:?} cannot be read (forget it, or repair it, first)"))?;
            versions += 1;
            referenced.extend(m.chunks.data().map(|(id, _)| id));
        }
    }
    // Sweep: every chunk object whose name is a chunk id nobody references. Objects under
    // chunks/ whose names are not chunk ids are not ours to judge and are left alone.
    let stored = repo.store().list_sizes(layout::CHUNKS).await?;
    let chunks_stored = stored.len() as u64;
    let garbage: Vec<(String, u64)> = stored
        .into_iter()
        .filter(|(key, _)| {
            key.rsplit('/')
                .next()
                .and_then(|name| name.parse::<ChunkId>().ok())
                .is_some_and(|id| layout::chunk(&id) == *key && !referenced.contains(&id))
        })
        .collect();
    let bytes: u64 = garbage.iter().map(|(_, size)| size).sum();
    if !opts.dry_run {
        let sem = Arc::new(Semaphore::new(opts.in_flight.max(1)));
        for batch in garbage.chunks(BATCH) {
            // Stopped between batches: what was deleted was garbage, and the rest stays so.
            interrupt::check()?;
            if let Some(lock) = lock {
                lock.ensure_fresh().await?;
            }
            let mut tasks = JoinSet::new();
            for (key, _) in batch {
                let permit = sem.clone().acquire_owned().await?;
                let (repo, key) = (repo.clone(), key.clone());
                tasks.spawn(async move {
                    let r = repo
                        .store()
                        .delete(&key)
                        .await
                        .context("deleting an unreferenced chunk");
                    drop(permit);
                    r
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.map_err(|e| anyhow!("a delete task failed: {e}"))??;
            }
        }
    }
    // Writes cut short (a crash, a kill, a stop while a chunk was being written) leave hidden
    // temporary files in a local directory that no listing shows. One older than the lock's
    // stale limit (and than an hour, whatever that limit) belongs to no run still going. Not
    // worth failing a gc for: what it did is reported either way.
    interrupt::check()?;
    let age = crate::lock::stale_limit().max(LEFTOVER_AGE);
    let dirs = [
        "",
        layout::KEYS,
        layout::CHUNKS,
        layout::MANIFESTS,
        layout::CURRENT,
        layout::LOCKS,
    ];
    let (leftovers_deleted, leftover_bytes_deleted) =
        match repo.store().sweep_leftovers(&dirs, age, opts.dry_run).await {
            Ok(found) => found,
            Err(e) => {
                eprintln!("warning: gc left temporary files of interrupted writes: {e}");
                (0, 0)
            }
        };
    Ok(GcSummary {
        dry_run: opts.dry_run,
        series: all.len() as u64,
        versions,
        chunks_referenced: referenced.len() as u64,
        chunks_stored,
        chunks_deleted: garbage.len() as u64,
        bytes_deleted: bytes,
        leftovers_deleted,
        leftover_bytes_deleted,
        blocked_by: None,
        seconds: started.elapsed().as_secs_f64(),
        requests: Requests::default(),
    })
}
