//! `check`: is every version restorable? The structure check reads every manifest and pointer
//! and compares the chunks they name with the chunks stored; `--read-data` also fetches,
//! opens and re-hashes every referenced chunk (or a random subset).
//!
//! What is checked, per series in scope:
//! - every manifest opens, decodes and passes `Manifest::validate` (else: the version is
//!   damaged, named with its object);
//! - the `current` pointer opens, names a version that exists, and carries the digest of that
//!   manifest as stored (format-spec 10.5);
//! - every ZFS incremental has a chain of stored streams back to a full one;
//! - every chunk a readable manifest names is stored; with `--read-data`, every chunk fetched
//!   authenticates, its plaintext hashes to its id, and its length is the one each manifest
//!   records.
//!
//! Each bad chunk is reported once per version that uses it, with the byte ranges of that
//! version it covers (`offset..end`), so the damage is stated in the user's terms: which
//! versions are affected and where.
//!
//! **Existence: one listing, not a request per chunk.** `chunks/` is listed once and the
//! referenced ids compared with the listed set, instead of `Store::exists` per chunk. On S3 a
//! LIST returns up to 1000 names, so a repository of a million chunks (4 TiB at 4 MiB) costs
//! about 1000 LIST requests (≈ $0.005 at AWS prices, seconds of latency) where HEAD per chunk
//! would cost a million requests (≈ $0.40, and a million round trips). The listing also shows
//! unreferenced chunks, which are reported as a count (gc's business, not damage). It runs
//! while the manifests are read (it starts after their listing, so every chunk a listed
//! manifest names is in it), and a full `--read-data` does not wait for it: reading a chunk
//! says whether it is there. The price
//! is memory for the set: 32 bytes per stored chunk id plus hash-set overhead, some 50 MB per
//! million chunks; the manifests' chunk lists (about 40 bytes per chunk reference) are held
//! too, to turn bad chunks into byte ranges at the end. Manifests are read with one GET each,
//! `--read-data` adds one GET per chunk checked.
//!
//! Reads run with bounded concurrency (tokio tasks and a semaphore, as in restore); opening
//! and hashing run on the rayon pool (`cpu`). A shared lock keeps gc from deleting chunks
//! while we look (where the store refuses to write it, a check goes on without one after a
//! warning: `crate::lock`); backups, prunes and forgets may run alongside: a manifest that vanishes
//! after the listing is skipped, not reported.

use crate::chunk_id::ChunkId;
use crate::cpu;
use crate::direct::ALIGN;
use crate::error::Error;
use crate::format::FormatError;
use crate::format::lock::LockMode;
use crate::interrupt;
use crate::layout;
use crate::lock::LockGuard;
use crate::manifest::{ChunkRef, Manifest};
use crate::pool::Pool;
use crate::progress;
use crate::repo::Repo;
use crate::seal::{HEADROOM, TAILROOM};
use crate::store::{Requests, StoreError};
use crate::sys;
use crate::zfs::chain::{Chains, Node, Status};
use crate::zfs::{ZfsFacts, facts::hex_guid};
use anyhow::{Context, Result, anyhow};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Objects fetched at once from S3, whose latency wants many requests in flight.
pub const DEFAULT_IN_FLIGHT: usize = 16;
/// Objects read at once from a local directory: two cores verify two at a time, and 16
/// objects of up to 4 MiB each (an image that does not compress) held the peak near 100 MiB
/// for no speed (4, 8 and 16 took the same time on the bench repository).
pub const DEFAULT_IN_FLIGHT_LOCAL: usize = 8;

pub struct CheckOptions {
    /// Only this series.
    pub only: Option<String>,
    /// Fetch and verify chunk data: all of it, or a subset.
    pub read_data: Option<Subset>,
    pub in_flight: usize,
    /// Delete the chunk objects that `read_data` finds damaged (read twice), so that a
    /// `backup --heal` from a source that still holds their data stores them again.
    pub repair: bool,
    /// A bar on a terminal while chunks are read.
    pub progress: bool,
}

/// Which referenced chunks `--read-data` fetches: `percent` of them (rounded up), chosen by
/// `seed` — the same seed and repository give the same subset.
#[derive(Debug, Clone, Copy)]
pub struct Subset {
    pub percent: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `manifest`, `current`, `chunk_missing` or `chunk_damaged`.
    pub kind: &'static str,
    pub object: String,
    pub series: String,
    pub version: Option<String>,
    /// Byte ranges `[start, end)` of the version that this object's damage affects.
    pub ranges: Vec<(u64, u64)>,
    pub reason: String,
}

impl Problem {
    /// A version that cannot be restored for want of what its ZFS chain needs.
    fn chain(series: &str, version: &str, reason: String) -> Problem {
        Problem {
            kind: "chain",
            object: layout::manifest(series, version),
            series: series.to_string(),
            version: Some(version.to_string()),
            ranges: Vec::new(),
            reason,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    pub series: u64,
    pub versions: u64,
    /// `series version` of every damaged version, sorted.
    pub damaged_versions: Vec<String>,
    /// Distinct chunk ids the readable manifests reference.
    pub chunks_referenced: u64,
    /// Chunk objects stored under `chunks/` (in the whole repository).
    pub chunks_stored: u64,
    pub chunks_missing: u64,
    /// Stored chunks that no version in scope references (gc would remove them when the
    /// check covers every series).
    pub chunks_unreferenced: u64,
    pub chunks_read: u64,
    pub chunks_damaged: u64,
    /// Damaged chunk objects moved to `quarantine/` by `--repair`.
    pub chunks_quarantined: u64,
    /// Damaged chunk objects still stored that `--repair` would move aside: proven bad, not
    /// merely written by a newer blockvault.
    pub chunks_repairable: u64,
    /// Stored bytes fetched by --read-data.
    pub bytes_read: u64,
    pub read_data: bool,
    pub subset_percent: Option<f64>,
    pub seed: Option<u64>,
    pub problems: Vec<Problem>,
    /// What is odd but not damage: a current pointer behind its series' newest version.
    pub notes: Vec<String>,
    pub seconds: f64,
    /// Stored bytes read per second by --read-data, in MB (10^6 bytes); 0 without it.
    pub mb_per_s: f64,
    /// The process's peak resident memory (see `BackupSummary::peak_rss_bytes`).
    pub peak_rss_bytes: Option<u64>,
    pub requests: Requests,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn damage_of(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<Error>(),
            Some(Error::Damaged { .. } | Error::Missing { .. })
        )
    })
}

/// Why an object is damaged, without the object's name and series, which the report gives
/// beside it.
fn damage_reason(e: &anyhow::Error) -> String {
    for c in e.chain() {
        match c.downcast_ref::<Error>() {
            Some(Error::Damaged { source, .. }) => return source.to_string(),
            Some(Error::Missing { .. }) => return "it is missing from the repository".into(),
            _ => {}
        }
    }
    format!("{e:#}")
}

/// SplitMix64's finaliser: a well-mixed score per chunk for choosing the subset.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The ids to fetch: all of them, or the `percent` with the lowest seeded scores.
fn choose(mut ids: Vec<ChunkId>, subset: Subset) -> Vec<ChunkId> {
    if subset.percent >= 100.0 {
        return ids;
    }
    let want = ((ids.len() as f64) * subset.percent / 100.0).ceil() as usize;
    let score = |id: &ChunkId| {
        let mut first = [0u8; 8];
        first.copy_from_slice(&id.0[..8]);
        mix(subset.seed ^ u64::from_le_bytes(first))
    };
    ids.sort_by_key(|id| (score(id), *id));
    ids.truncate(want);
    ids
}

/// `chunks/ab/ab…` → the id, for names that are exactly a chunk's.
fn chunk_of(key: &str) -> Option<ChunkId> {
    let rest = key.strip_prefix(layout::CHUNKS)?;
    let (dir, hex) = rest.split_once('/')?;
    let id: ChunkId = hex.parse().ok()?;
    (hex.get(..2) == Some(dir)).then_some(id)
}

pub async fn check(repo: Arc<Repo>, opts: CheckOptions) -> Result<CheckReport> {
    let requests_before = repo.store().requests();
    // Deleting chunks (`--repair`) is gc's kind of work: a backup running meanwhile could
    // decide a chunk is stored just before it goes.
    let mode = if opts.repair {
        LockMode::Exclusive
    } else {
        LockMode::Shared
    };
    let lock = LockGuard::acquire(&repo, mode, "check").await?;
    let result = run(&repo, &opts, &lock).await;
    lock.release().await;
    result.map(|mut r| {
        r.requests = repo.store().requests().since(requests_before);
        r
    })
}

/// A bad chunk in one version: problem kind, reason, the byte ranges it covers.
type BadChunk = (&'static str, String, Vec<(u64, u64)>);

enum Fetched {
    Ok {
        plain_len: u32,
        stored: u64,
    },
    Missing,
    Damaged {
        reason: String,
        stored: u64,
        /// The object is proven bad (it fails authentication, a checksum or its id, or is cut
        /// short), not merely of a format or cipher newer than this build reads: only such
        /// an object may be moved aside by `--repair`.
        proven: bool,
    },
    /// Damaged, and moved to `quarantine/` by `--repair`.
    Quarantined {
        reason: String,
        stored: u64,
    },
}

/// `--repair`: reads each damaged chunk again, and moves it to `quarantine/` when it is still
/// damaged. A damaged object is of no use (no restore can open it; `--allow-damage` writes
/// zeros for it as for a missing one), but a missing one is something a backup can mend:
/// `backup --heal` stores it again from a source that still holds its data. Moved, not
/// deleted: the object is the evidence of what went wrong (a disk, memory, a bug), and a
/// judgement made by this host's memory and CPU should not be able to destroy data. The second read keeps a fault on
/// the way (a flaky disk or link) from costing a good object. Left alone: a chunk whose
/// plaintext length differs from a manifest's (the manifest's fault, not the object's), and
/// one written by a newer blockvault (a format version or cipher this build does not know:
/// readable by that one). The caller holds the exclusive lock, so no backup is deciding
/// meanwhile that the chunk is stored.
async fn quarantine_damaged(
    repo: &Arc<Repo>,
    fetched: &mut HashMap<ChunkId, Fetched>,
    lock: &LockGuard,
) -> Result<u64> {
    let damaged: Vec<ChunkId> = fetched
        .iter()
        .filter(|(_, f)| matches!(f, Fetched::Damaged { proven: true, .. }))
        .map(|(id, _)| *id)
        .collect();
    let mut moved = 0;
    for id in damaged {
        interrupt::check()?;
        let name = layout::chunk(&id);
        let store = repo.store();
        // Read again, and these very bytes are the ones judged and moved.
        let bytes = match store.get(&name).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                fetched.insert(id, Fetched::Missing);
                continue;
            }
            Err(e) => return Err(anyhow!(e).context("reading a damaged chunk again (--repair)")),
        };
        let mut copy = bytes.clone();
        let again = verdict(repo.verify_chunk(&id, &mut copy), bytes.len() as u64);
        let (reason, stored) = match again {
            Fetched::Damaged {
                reason,
                stored,
                proven: true,
            } => (reason, stored),
            // Read well the second time: the first read was the fault.
            other => {
                fetched.insert(id, other);
                continue;
            }
        };
        // An earlier quarantine of the same chunk (damaged again after a heal) is kept.
        let mut aside = layout::quarantined(&name);
        let mut n = 1;
        while store.exists(&aside).await? {
            n += 1;
            aside = format!("{}.{n}", layout::quarantined(&name));
        }
        // As gc before each batch: a lock that another process may have judged stale (or
        // that was removed) no longer keeps backups from counting on this chunk.
        lock.ensure_fresh().await?;
        // Copied before the original goes: a failure in between leaves two copies, never none.
        store
            .put(&aside, bytes)
            .await
            .context("moving a damaged chunk aside (--repair)")?;
        store
            .delete(&name)
            .await
            .context("removing a damaged chunk moved aside (--repair)")?;
        eprintln!("moved damaged chunk {name} to {aside}: {reason}");
        fetched.insert(id, Fetched::Quarantined { reason, stored });
        moved += 1;
    }
    Ok(moved)
}

async fn run(repo: &Arc<Repo>, opts: &CheckOptions, lock: &LockGuard) -> Result<CheckReport> {
    let started = Instant::now();
    let in_flight = opts.in_flight.max(1);
    let mut report = CheckReport {
        read_data: opts.read_data.is_some(),
        subset_percent: opts.read_data.map(|s| s.percent),
        seed: opts
            .read_data
            .and_then(|s| (s.percent < 100.0).then_some(s.seed)),
        ..CheckReport::default()
    };

    // 1. Every version, from one listing of manifests/.
    let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for key in repo.store().list(layout::MANIFESTS).await? {
        if let Some((s, v)) = layout::parse_manifest_key(&key)
            && opts.only.as_ref().is_none_or(|o| *o == s)
        {
            versions.entry(s).or_default().push(v);
        }
    }
    for vs in versions.values_mut() {
        vs.sort_by(|a, b| layout::version_order(a, b));
    }
    // The chunks, listed while the manifests are read. Not before the manifests' listing: a
    // backup writes its chunks before its manifest, so every chunk of a manifest listed
    // above is in a listing that starts now, and a concurrent backup cannot look damaged.
    let mut chunk_listing = ChunkListing::start(repo);

    // 2. Every manifest, read and decoded with bounded concurrency.
    let sem = Arc::new(Semaphore::new(in_flight));
    let mut tasks = JoinSet::new();
    for (s, vs) in &versions {
        for v in vs {
            let (repo, sem, s, v) = (repo.clone(), sem.clone(), s.clone(), v.clone());
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let loaded = repo.load_manifest(&s, &v).await;
                let gone = match &loaded {
                    Err(e) if !damage_of(e) => {
                        !repo.store().exists(&layout::manifest(&s, &v)).await?
                    }
                    _ => false,
                };
                anyhow::Ok((s, v, loaded, gone))
            });
        }
    }
    let mut manifests: BTreeMap<(String, String), (Arc<Manifest>, [u8; 32])> = BTreeMap::new();
    let mut existing: HashSet<(String, String)> = HashSet::new();
    let mut damaged: BTreeSet<String> = BTreeSet::new();
    while let Some(done) = tasks.join_next().await {
        interrupt::check()?;
        let (s, v, loaded, gone) = done.map_err(|e| anyhow!("a check task failed: {e}"))??;
        match loaded {
            Ok((m, digest)) => {
                existing.insert((s.clone(), v.clone()));
                manifests.insert((s, v), (Arc::new(m), digest));
            }
            // Removed by a prune or forget since the listing: not damage.
            Err(_) if gone => {}
            Err(e) if damage_of(&e) => {
                existing.insert((s.clone(), v.clone()));
                damaged.insert(format!("{s} {v}"));
                report.problems.push(Problem {
                    kind: "manifest",
                    object: layout::manifest(&s, &v),
                    series: s,
                    version: Some(v),
                    ranges: Vec::new(),
                    reason: damage_reason(&e),
                });
            }
            Err(e) => return Err(e),
        }
    }
    report.series = versions.len() as u64;
    report.versions = existing.len() as u64;

    // 2b. ZFS chains: an incremental stream whose base no stored stream brings cannot be
    // restored, though every object it names is intact (its base was forgotten with --force,
    // or never backed up).
    let mut chains_of: BTreeMap<&str, Chains> = BTreeMap::new();
    for (s, vs) in &versions {
        let facts: Vec<Option<ZfsFacts>> = vs
            .iter()
            .map(|v| {
                manifests
                    .get(&(s.clone(), v.clone()))
                    .and_then(|(m, _)| ZfsFacts::from_extra(&m.extra).ok().flatten())
            })
            .collect();
        let nodes: Vec<Node> = vs
            .iter()
            .zip(&facts)
            .map(|(v, z)| Node {
                name: v,
                zfs: z.as_ref(),
                readable: manifests.contains_key(&(s.clone(), v.clone())),
            })
            .collect();
        let chains = Chains::resolve(&nodes);
        drop(nodes);
        for (i, v) in vs.iter().enumerate() {
            if let Status::Missing { base_guid } = chains.status(i) {
                report.problems.push(Problem::chain(
                    s,
                    v,
                    format!(
                        "it is an incremental ZFS stream from snapshot GUID {}, which no restorable version of the series brings: it cannot be restored",
                        hex_guid(*base_guid)
                    ),
                ));
            }
        }
        chains_of.insert(s, chains);
    }

    // 3. Current pointers: of every series in scope, and any pointer left without a series.
    let mut pointer_series: BTreeSet<String> = versions.keys().cloned().collect();
    if opts.only.is_none() {
        for key in repo.store().list(layout::CURRENT).await? {
            if let Some(s) = key
                .strip_prefix(layout::CURRENT)
                .and_then(layout::unescape_series)
                .filter(|s| layout::current(s) == key)
            {
                pointer_series.insert(s);
            }
        }
    }
    for s in &pointer_series {
        let object = layout::current(s);
        let problem = |reason: String| Problem {
            kind: "current",
            object: object.clone(),
            series: s.clone(),
            version: None,
            ranges: Vec::new(),
            reason,
        };
        match repo.current(s).await {
            Ok(None) => {}
            Ok(Some(p)) => {
                let key = (s.clone(), p.version.clone());
                if !existing.contains(&key) {
                    report.problems.push(problem(format!(
                        "it names version {} of series {s:?}, which does not exist",
                        p.version
                    )));
                } else if let Some((_, digest)) = manifests.get(&key)
                    && *digest != p.manifest_digest
                {
                    report.problems.push(problem(format!(
                        "it names version {} of series {s:?}, but that manifest is not the one it was written for (digest mismatch)",
                        p.version
                    )));
                } else if let Some(newest) = versions.get(s).and_then(|vs| vs.last())
                    && *newest != p.version
                {
                    report
                        .notes
                        .push(crate::repo::lagging_pointer(s, &p.version, newest));
                }
            }
            Err(e) if damage_of(&e) => report.problems.push(problem(damage_reason(&e))),
            Err(e) => return Err(e),
        }
    }

    // 4. Chunks referenced (with the length each manifest records) against one listing.
    let mut referenced: HashSet<ChunkId> = HashSet::new();
    let mut longest = 0;
    for (m, _) in manifests.values() {
        for c in &m.chunks {
            if let ChunkRef::Data { id, len } = c {
                referenced.insert(*id);
                longest = longest.max(*len as usize);
            }
        }
    }
    // A full read needs no listing to start: reading a chunk says whether it is there. A
    // subset is drawn from the chunks that are there, so it waits for the listing.
    let whole = opts.read_data.is_some_and(|s| s.percent >= 100.0);
    let chosen = if whole {
        let mut all: Vec<ChunkId> = referenced.iter().copied().collect();
        all.sort();
        all
    } else {
        let stored = chunk_listing.result().await?;
        match opts.read_data {
            Some(subset) => {
                let mut candidates: Vec<ChunkId> = referenced
                    .iter()
                    .filter(|id| stored.contains(id))
                    .copied()
                    .collect();
                candidates.sort();
                choose(candidates, subset)
            }
            None => Vec::new(),
        }
    };

    // 5. --read-data: fetch, open, re-hash.
    let mut fetched: HashMap<ChunkId, Fetched> = HashMap::new();
    if !chosen.is_empty() {
        let sem = Arc::new(Semaphore::new(in_flight));
        // Object-sized buffers go round instead of one fresh allocation (and its page faults)
        // per chunk: as many as are read or verified at once. Each has room for the largest
        // object from the start (its pages are only touched as far as objects reach): one
        // that grew with the objects it met would be replaced, faulted in anew, each time a
        // larger one came.
        let largest_object = (HEADROOM + longest + TAILROOM).next_multiple_of(ALIGN) + ALIGN;
        let buffers = Arc::new(Pool::new(largest_object, in_flight + 2));
        let mut tasks: JoinSet<Result<(ChunkId, Fetched)>> = JoinSet::new();
        let pb = progress::count_bar(
            chosen.len() as u64,
            "reading chunks",
            "chunks",
            opts.progress,
        );
        for id in chosen {
            let permit = sem.clone().acquire_owned().await?;
            while let Some(done) = tasks.try_join_next() {
                let (id, f) = done.map_err(|e| anyhow!("a check task failed: {e}"))??;
                fetched.insert(id, f);
                pb.inc(1);
            }
            // A listing that failed ends the check now, not after every chunk was read.
            chunk_listing.fail_early().await?;
            interrupt::check()?;
            let (repo, buffers) = (repo.clone(), buffers.clone());
            tasks.spawn(async move {
                let f = fetch(&repo, id, &buffers).await;
                drop(permit);
                Ok((id, f?))
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (id, f) = done.map_err(|e| anyhow!("a check task failed: {e}"))??;
            fetched.insert(id, f);
            pb.inc(1);
        }
        pb.finish_and_clear();
    }
    let stored = tokio::select! {
        biased;
        stored = chunk_listing.result() => stored?,
        e = interrupt::asked() => return Err(e.into()),
    };
    report.chunks_referenced = referenced.len() as u64;
    report.chunks_stored = stored.len() as u64;
    report.chunks_unreferenced = stored.difference(&referenced).count() as u64;
    for id in referenced.iter().filter(|id| !stored.contains(id)) {
        fetched.entry(*id).or_insert(Fetched::Missing);
    }
    if opts.repair {
        report.chunks_quarantined = quarantine_damaged(repo, &mut fetched, lock).await?;
        report.chunks_stored -= report.chunks_quarantined.min(report.chunks_stored);
    }
    for f in fetched.values() {
        match f {
            Fetched::Ok { stored, .. } => {
                report.chunks_read += 1;
                report.bytes_read += stored;
            }
            Fetched::Missing => report.chunks_missing += 1,
            Fetched::Damaged { stored, proven, .. } => {
                report.chunks_read += 1;
                report.chunks_damaged += 1;
                report.chunks_repairable += u64::from(*proven);
                report.bytes_read += stored;
            }
            Fetched::Quarantined { stored, .. } => {
                report.chunks_read += 1;
                report.chunks_damaged += 1;
                report.bytes_read += stored;
            }
        }
    }

    // 6. Bad chunks → the versions and byte ranges they affect.
    for ((s, v), (m, _)) in &manifests {
        let mut bad: BTreeMap<ChunkId, BadChunk> = BTreeMap::new();
        for (offset, c) in m.offsets() {
            let ChunkRef::Data { id, len } = *c else {
                continue;
            };
            let why = match fetched.get(&id) {
                None => continue,
                Some(Fetched::Ok { plain_len, .. }) if *plain_len == len => continue,
                Some(Fetched::Ok { plain_len, .. }) => (
                    "chunk_damaged",
                    format!("it holds {plain_len} bytes but the manifest says {len}"),
                ),
                Some(Fetched::Missing) => (
                    "chunk_missing",
                    "it is missing from the repository".to_string(),
                ),
                Some(Fetched::Damaged { reason, .. }) => ("chunk_damaged", reason.clone()),
                Some(Fetched::Quarantined { reason, .. }) => (
                    "chunk_damaged",
                    format!(
                        "{reason}; moved to {} by --repair (`backup --heal` stores it again)",
                        layout::QUARANTINE
                    ),
                ),
            };
            bad.entry(id)
                .or_insert_with(|| (why.0, why.1, Vec::new()))
                .2
                .push((offset, offset + u64::from(len)));
        }
        if !bad.is_empty() {
            damaged.insert(format!("{s} {v}"));
        }
        for (id, (kind, reason, ranges)) in bad {
            report.problems.push(Problem {
                kind,
                object: layout::chunk(&id),
                series: s.clone(),
                version: Some(v.clone()),
                ranges,
                reason,
            });
        }
    }
    // 6b. An incremental is no better than the chain it is received on: one whose base (or
    // its base's base) is damaged cannot be restored either, though its own objects are
    // whole.
    for (s, vs) in &versions {
        let Some(chains) = chains_of.get(s.as_str()) else {
            continue;
        };
        for (i, v) in vs.iter().enumerate() {
            let own = format!("{s} {v}");
            if damaged.contains(&own) {
                continue;
            }
            let mut at = i;
            while let Some(p) = chains.needs(at) {
                if damaged.contains(&format!("{s} {}", vs[p])) {
                    report.problems.push(Problem::chain(
                        s,
                        v,
                        format!(
                            "it is received on version {}, which is damaged: it cannot be restored until that version is healed",
                            vs[p]
                        ),
                    ));
                    damaged.insert(own);
                    break;
                }
                at = p;
            }
        }
    }
    report.damaged_versions = damaged.into_iter().collect();
    report.seconds = started.elapsed().as_secs_f64();
    if report.seconds > 0.0 {
        report.mb_per_s = report.bytes_read as f64 / 1e6 / report.seconds;
    }
    report.peak_rss_bytes = sys::peak_rss();
    Ok(report)
}

/// A listing of `chunks/` running beside the check's other work; stopped if the check ends
/// first (an error return), so it does not go on listing for nobody.
enum ChunkListing {
    Running(tokio::task::JoinHandle<Result<Vec<String>, StoreError>>),
    Done(HashSet<ChunkId>),
}

impl ChunkListing {
    fn start(repo: &Arc<Repo>) -> ChunkListing {
        let repo = repo.clone();
        ChunkListing::Running(tokio::spawn(async move {
            repo.store().list(layout::CHUNKS).await
        }))
    }

    /// The chunks the listing found, waiting for it if need be.
    async fn result(&mut self) -> Result<&HashSet<ChunkId>> {
        if let ChunkListing::Running(handle) = self {
            let names = handle
                .await
                .map_err(|e| anyhow!("listing chunks failed: {e}"))??;
            *self = ChunkListing::Done(names.iter().filter_map(|k| chunk_of(k)).collect());
        }
        match self {
            ChunkListing::Done(stored) => Ok(stored),
            ChunkListing::Running(_) => Err(anyhow!("internal error: the chunk listing ran on")),
        }
    }

    /// Its error, if it has ended with one.
    async fn fail_early(&mut self) -> Result<()> {
        if matches!(self, ChunkListing::Running(h) if h.is_finished()) {
            self.result().await?;
        }
        Ok(())
    }
}

impl Drop for ChunkListing {
    fn drop(&mut self) {
        if let ChunkListing::Running(handle) = self {
            handle.abort();
        }
    }
}

/// Reads a chunk object into a buffer from `buffers` (around the page cache, from a local
/// directory: the disk's bytes, not a cached copy) and verifies it.
async fn fetch(repo: &Arc<Repo>, id: ChunkId, buffers: &Arc<Pool>) -> Result<Fetched> {
    let name = layout::chunk(&id);
    let (mut buf, range) = match repo.store().get_reusing(&name, buffers.take()).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(Fetched::Missing),
        Err(e) => return Err(anyhow!(e).context("fetching a chunk")),
    };
    let stored = range.len() as u64;
    let (r, b) = (repo.clone(), buffers.clone());
    let verified = cpu::run(move || {
        let verified = r.verify_chunk(&id, &mut buf[range]);
        b.give(buf);
        verified
    })
    .await?;
    Ok(verdict(verified, stored))
}

/// What a chunk object's verification says of it; `stored` is its size.
fn verdict(verified: Result<usize, FormatError>, stored: u64) -> Fetched {
    match verified {
        Ok(len) => match u32::try_from(len) {
            Ok(plain_len) => Fetched::Ok { plain_len, stored },
            Err(_) => Fetched::Damaged {
                reason: format!("it holds {len} bytes, more than any chunk"),
                stored,
                proven: false,
            },
        },
        Err(e) => Fetched::Damaged {
            reason: e.to_string(),
            stored,
            proven: !matches!(
                e,
                FormatError::UnsupportedVersion { .. } | FormatError::UnknownField { .. }
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_names() {
        let id = ChunkId([0xab; 32]);
        assert_eq!(chunk_of(&layout::chunk(&id)), Some(id));
        assert_eq!(chunk_of(&format!("chunks/cd/{}", id.to_hex())), None);
        assert_eq!(chunk_of("chunks/ab/xyz"), None);
        assert_eq!(chunk_of("manifests/a/b"), None);
    }

    #[test]
    fn subsets_are_sized_and_seeded() {
        let ids: Vec<ChunkId> = (0..200u8)
            .map(|i| ChunkId(*blake3::hash(&[i]).as_bytes()))
            .collect();
        let pick = |percent, seed| choose(ids.clone(), Subset { percent, seed });
        assert_eq!(pick(10.0, 1).len(), 20);
        assert_eq!(pick(0.1, 1).len(), 1);
        assert_eq!(pick(100.0, 1).len(), 200);
        assert_eq!(pick(10.0, 1), pick(10.0, 1));
        assert_ne!(pick(10.0, 1), pick(10.0, 2));
        // A larger subset with the same seed contains the smaller one.
        let small: HashSet<ChunkId> = pick(10.0, 7).into_iter().collect();
        let large: HashSet<ChunkId> = pick(30.0, 7).into_iter().collect();
        assert!(small.is_subset(&large));
    }
}
