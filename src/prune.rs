//! Carrying out retention: read a series' history for the planner, remove versions, keep the
//! `current` pointer on a version that exists.
//!
//! Removing a version deletes its manifest and nothing else: chunks are left to garbage
//! collection, which alone may delete them (under the exclusive lock). So `prune` and
//! `forget` take a shared lock and run alongside backups: a backup never reads a manifest it
//! did not choose as its parent before we started, and the plan never contains a version
//! that did not exist when it was made, so a version committed meanwhile is never removed.
//!
//! Order: the pointer moves (if it named a removed version) **before** any manifest is
//! deleted, so a crash in between leaves the pointer on a version that exists.
//!
//! What a version depends on is decided in one place, [`crate::zfs::chain`], from the ZFS
//! facts of every version of the series ([`load_series`]): `prune` hands each version's
//! `needs` to the planner (which keeps every needed base) and checks the plan with
//! [`Series::orphaned_by`] before removing anything; `forget` refuses what that check refuses.

use crate::error::is_damage;
use crate::format::lock::LockMode;
use crate::layout;
use crate::lock::LockGuard;
use crate::repo::Repo;
use crate::retention::{self, Decision, Policy, VersionInfo};
use crate::zfs::ZfsFacts;
use crate::zfs::chain::{self, Chains, Node, Status};
use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Manifests read at once while collecting a history (small objects; latency-bound on S3).
const READ_IN_FLIGHT: usize = 16;

/// The time a version's name records (`2026-11-22T130507Z`, maybe with `-N`), for a version
/// whose manifest cannot be read.
pub fn time_from_name(version: &str) -> Option<i64> {
    let base = match version.rsplit_once("Z-") {
        Some((b, n)) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => b,
        _ => version.strip_suffix('Z')?,
    };
    // The `Z` is a literal in the name, not an offset jiff could parse: read a civil time
    // and place it in UTC.
    let civil = jiff::civil::DateTime::strptime("%Y-%m-%dT%H%M%S", base).ok()?;
    jiff::tz::TimeZone::UTC
        .to_timestamp(civil)
        .ok()
        .map(|t| t.as_second())
}

/// One version of a series as the commands that plan over a whole series see it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// What the retention planner needs; `needs` is filled from the ZFS chains.
    pub info: VersionInfo,
    /// False when the manifest is damaged (or its ZFS facts are): planned by the time in its
    /// name, restorable by nothing.
    pub readable: bool,
    pub zfs: Option<ZfsFacts>,
}

/// Every version of a series, oldest first, with the ZFS chains between them resolved.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub versions: Vec<Loaded>,
    pub chains: Chains,
}

impl Series {
    /// The versions as the chain rules see them.
    pub fn nodes(&self) -> Vec<Node<'_>> {
        nodes_of(&self.versions)
    }

    pub fn index_of(&self, version: &str) -> Option<usize> {
        self.versions.iter().position(|v| v.info.name == version)
    }

    /// What the retention planner takes.
    pub fn infos(&self) -> Vec<VersionInfo> {
        self.versions.iter().map(|v| v.info.clone()).collect()
    }

    /// The versions that would stop being restorable if `remove` were removed: an incremental
    /// ZFS stream whose base (or its base's base ...) goes, with no other copy to stand in.
    pub fn orphaned_by(&self, remove: &[String]) -> Vec<String> {
        let idx: Vec<usize> = remove.iter().filter_map(|r| self.index_of(r)).collect();
        chain::orphaned_by(&self.nodes(), &idx)
            .into_iter()
            .map(|i| self.versions[i].info.name.clone())
            .collect()
    }

    /// The versions to replay, oldest first, to restore `version`.
    pub fn chain(&self, version: &str) -> Vec<&Loaded> {
        self.index_of(version)
            .map(|i| self.chains.chain(i))
            .unwrap_or_default()
            .into_iter()
            .map(|i| &self.versions[i])
            .collect()
    }

    pub fn status(&self, version: &str) -> Option<&Status> {
        self.index_of(version).map(|i| self.chains.status(i))
    }
}

fn nodes_of(versions: &[Loaded]) -> Vec<Node<'_>> {
    versions
        .iter()
        .map(|v| Node {
            name: &v.info.name,
            zfs: v.zfs.as_ref(),
            readable: v.readable,
        })
        .collect()
}

/// Every version of `series`, oldest first. A version whose manifest is damaged is still
/// planned for (by the time in its name; `warn` is told), so a damaged version can be pruned
/// like any other; one whose name holds no time either is an error.
pub async fn load_series(
    repo: &Arc<Repo>,
    series: &str,
    mut warn: impl FnMut(String),
) -> Result<Series> {
    let versions = repo.list_versions(series).await?;
    let sem = Arc::new(Semaphore::new(READ_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    for (i, v) in versions.iter().enumerate() {
        let (repo, sem, series, v) = (repo.clone(), sem.clone(), series.to_string(), v.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            (i, repo.load_manifest(&series, &v).await)
        });
    }
    let mut out: Vec<Option<Loaded>> = vec![None; versions.len()];
    while let Some(done) = tasks.join_next().await {
        let (i, loaded) = done.map_err(|e| anyhow!("reading manifests: {e}"))?;
        let name = versions[i].clone();
        let facts = loaded.map(|(m, _)| {
            let zfs = ZfsFacts::from_extra(&m.extra);
            (m, zfs)
        });
        out[i] = Some(match facts {
            Ok((m, Ok(zfs))) => Loaded {
                info: VersionInfo {
                    name,
                    // A ZFS version is as new as its snapshot: one of an older snapshot backed
                    // up later is not the newest, for prune nor for the pointer after it.
                    time: zfs
                        .as_ref()
                        .and_then(|z| i64::try_from(z.creation).ok())
                        .filter(|&c| c > 0)
                        .unwrap_or(m.time),
                    needs: None,
                },
                readable: true,
                zfs,
            },
            Ok((m, Err(why))) => {
                warn(format!(
                    "version {name} of series {series:?} has unreadable ZFS facts ({why}); nothing can be restored through it"
                ));
                Loaded {
                    info: VersionInfo {
                        name,
                        time: m.time,
                        needs: None,
                    },
                    readable: false,
                    zfs: None,
                }
            }
            Err(e) if is_damage(&e) => {
                let Some(time) = time_from_name(&name) else {
                    return Err(e.context(format!(
                        "version {name} of series {series:?} is damaged and its name holds no time to plan by; remove it with `blockvault forget`"
                    )));
                };
                warn(format!(
                    "{e:#}; planning for it by the time in its name (it depends on nothing it could record)"
                ));
                Loaded {
                    info: VersionInfo {
                        name,
                        time,
                        needs: None,
                    },
                    readable: false,
                    zfs: None,
                }
            }
            Err(e) => {
                // A version that vanished since the listing (another prune or forget) is gone.
                if !repo
                    .store()
                    .exists(&layout::manifest(series, &name))
                    .await?
                {
                    continue;
                }
                return Err(e);
            }
        });
    }
    let mut versions: Vec<Loaded> = out.into_iter().flatten().collect();
    let chains = Chains::resolve(&nodes_of(&versions));
    let needs: Vec<Option<String>> = (0..versions.len())
        .map(|i| chains.needs(i).map(|p| versions[p].info.name.clone()))
        .collect();
    for (v, n) in versions.iter_mut().zip(needs) {
        v.info.needs = n;
    }
    Ok(Series {
        name: series.to_string(),
        versions,
        chains,
    })
}

/// Newest first: by time, then by version name for versions made in the same second.
pub fn newer_first(a: &VersionInfo, b: &VersionInfo) -> std::cmp::Ordering {
    b.time
        .cmp(&a.time)
        .then_with(|| layout::version_order(&b.name, &a.name))
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Removal {
    pub removed: Vec<String>,
    /// Where `current` was moved, if it named a removed version.
    pub current_moved_to: Option<String>,
    /// `current` was deleted: no version of the series is left.
    pub current_deleted: bool,
    /// Versions left unrestorable by a forced removal (their ZFS base is gone).
    pub orphaned: Vec<String>,
}

/// Removes `remove` from `series`. `survivors` are the versions that stay, in any order; if
/// `current` names a removed version it moves to the newest survivor whose manifest opens
/// (or is deleted when none is left), before any manifest is deleted.
///
/// The pointer move is a read, then a plain put: a backup that commits in between and moves
/// the pointer forward can have that move undone (stores offer no compare-and-swap here).
/// Only the rare prune that removes the version `current` names takes this path, the newest
/// version is never pruned, and the loss is bounded: `current` then names an older version,
/// restores without `--version` pick it, and the next backup moves it forward again.
pub async fn remove_versions(
    repo: &Repo,
    series: &str,
    remove: &[String],
    survivors: &[VersionInfo],
) -> Result<Removal> {
    let mut out = Removal::default();
    if remove.is_empty() {
        return Ok(out);
    }
    let pointer = match repo.current(series).await {
        Ok(p) => p,
        // An unreadable pointer stays as it is: the next backup replaces it.
        Err(e) if is_damage(&e) => None,
        Err(e) => return Err(e),
    };
    if let Some(p) = pointer
        && remove.contains(&p.version)
    {
        let mut newest_first: Vec<&VersionInfo> = survivors.iter().collect();
        newest_first.sort_by(|a, b| newer_first(a, b));
        let mut target = None;
        for v in newest_first {
            match repo.load_manifest(series, &v.name).await {
                Ok((_, digest)) => {
                    target = Some((v.name.clone(), digest));
                    break;
                }
                Err(e) if is_damage(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        match target {
            Some((version, digest)) => {
                repo.set_current(series, &version, digest).await?;
                out.current_moved_to = Some(version);
            }
            None => {
                let name = layout::current(series);
                repo.store().delete(&name).await.with_context(|| {
                    format!("deleting the current pointer of series {series:?}")
                })?;
                out.current_deleted = true;
            }
        }
    }
    for v in remove {
        let name = layout::manifest(series, v);
        repo.store()
            .delete(&name)
            .await
            .with_context(|| format!("removing version {v} of series {series:?}"))?;
        out.removed.push(v.clone());
    }
    Ok(out)
}

/// What [`apply`] decided and, unless it was a dry run, did.
#[derive(Debug)]
pub struct Pruned {
    pub plan: Vec<Decision>,
    pub removal: Option<Removal>,
    /// The seed of a weighted plan: the one given, or [`retention::seed_of`] the stored
    /// versions.
    pub seed: Option<u64>,
}

/// Where a weighted plan's seed comes from.
#[derive(Debug, Clone, Copy)]
pub enum Seed<'a> {
    /// `--seed`: repeats a printed plan.
    Given(u64),
    /// [`retention::seed_of`] the stored versions, but `leaving_out` (the version the job run
    /// that prunes has just made): a dry run and the real run after it then agree.
    Stored { leaving_out: Option<&'a str> },
}

/// Plans `policy` over `series` and, unless `dry_run`, removes every version the plan does
/// not keep, under a shared lock. A dry run writes nothing, not even a lock (as backup
/// `--dry-run`). `extra` joins the history for planning only: a version a job is about to
/// make, so its dry run shows the plan the real run would follow.
pub async fn apply(
    repo: &Arc<Repo>,
    series: &str,
    policy: &Policy,
    seed: Seed<'_>,
    dry_run: bool,
    extra: Option<VersionInfo>,
    warn: impl FnMut(String),
) -> Result<Pruned> {
    // Resolving reports an unknown series with the names that do exist.
    if extra.is_none() {
        repo.resolve_version(series, None).await?;
    }
    let lock = if dry_run {
        None
    } else {
        Some(LockGuard::acquire(repo, LockMode::Shared, &format!("prune of {series}")).await?)
    };
    let result = async {
        let loaded = if extra.is_some() && repo.list_versions(series).await?.is_empty() {
            None
        } else {
            Some(load_series(repo, series, warn).await?)
        };
        // The version the current pointer names stays, unless this plan is for a run that
        // is about to record a newer one (`extra`).
        let current = match &extra {
            None => repo.current(series).await.ok().flatten().map(|p| p.version),
            Some(_) => None,
        };
        let mut history = loaded.as_ref().map(Series::infos).unwrap_or_default();
        let seed = policy.weighted.map(|_| match seed {
            Seed::Given(s) => s,
            Seed::Stored { leaving_out } => retention::seed_of(
                series,
                history
                    .iter()
                    .map(|v| v.name.as_str())
                    .filter(|n| Some(*n) != leaving_out),
            ),
        });
        history.extend(extra);
        if let Some(h) = &policy.hanoi
            && let Some(why) = retention::hanoi_mismatch(&history, h)
        {
            bail!("series {series:?}: {why}; nothing was removed");
        }
        let plan =
            retention::plan_keeping(&history, policy, seed.unwrap_or(0), current.as_deref());
        if dry_run {
            return Ok(Pruned {
                plan,
                removal: None,
                seed,
            });
        }
        let remove: Vec<String> = plan
            .iter()
            .filter(|d| !d.keep)
            .map(|d| d.version.clone())
            .collect();
        // The planner keeps every base a kept version needs; this re-check over the chains
        // themselves is the last line of DESIGN.md promise 3, so a planner bug cannot orphan
        // an incremental.
        let orphaned = loaded
            .as_ref()
            .map(|l| l.orphaned_by(&remove))
            .unwrap_or_default();
        if !orphaned.is_empty() {
            bail!(
                "internal error: the plan would leave {} of series {series} unrestorable; nothing was removed",
                orphaned.join(", ")
            );
        }
        let removed: HashSet<&str> = remove.iter().map(String::as_str).collect();
        let survivors: Vec<VersionInfo> = history
            .into_iter()
            .filter(|v| !removed.contains(v.name.as_str()))
            .collect();
        let removal = remove_versions(repo, series, &remove, &survivors).await?;
        Ok(Pruned {
            plan,
            removal: Some(removal),
            seed,
        })
    }
    .await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    result
}

/// Removes one version. Refused when that would leave another version unrestorable (an
/// incremental ZFS stream whose chain runs through it), unless `force`, which then removes
/// it all the same and returns the versions it made unrestorable in `orphaned`.
pub async fn forget(
    repo: &Arc<Repo>,
    series: &str,
    version: &str,
    force: bool,
    warn: impl FnMut(String),
) -> Result<Removal> {
    let loaded = load_series(repo, series, warn).await?;
    if loaded.index_of(version).is_none() {
        bail!("series {series:?} has no version {version}");
    }
    let remove = [version.to_string()];
    let orphaned = loaded.orphaned_by(&remove);
    if !orphaned.is_empty() && !force {
        bail!(
            "version {version} of series {series:?} is needed to restore {}: forgetting it would make {} unrestorable; forget those first, or add --force to forget it anyway (they stay, but cannot be restored, and `check` reports them until they are forgotten too)",
            orphaned.join(", "),
            if orphaned.len() == 1 { "it" } else { "them" }
        );
    }
    let survivors: Vec<VersionInfo> = loaded
        .infos()
        .into_iter()
        .filter(|v| v.name != version)
        .collect();
    let mut done = remove_versions(repo, series, &remove, &survivors).await?;
    done.orphaned = orphaned;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_from_names() {
        assert_eq!(time_from_name("2026-11-22T130507Z"), Some(1_795_352_707));
        assert_eq!(time_from_name("2026-11-22T130507Z-12"), Some(1_795_352_707));
        assert_eq!(time_from_name("nightly"), None);
        assert_eq!(time_from_name("2026-11-22T130507Z-x"), None);
    }
}
