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
//! million chunks. Manifests are read with one GET each, `--read-data` adds one GET per chunk
//! checked.
//!
//! **Memory follows the unique chunks, not the references.** A manifest's chunk list costs
//! about 40 bytes per reference, and every version references every chunk of its source
//! again: 42 versions of a 400 GB device at 4 MiB chunks took check to a peak of 187 MB, at 64 KiB
//! chunks it would be gigabytes (issue 7). So each manifest is dropped as soon as it has been
//! read, keeping only its distinct chunk ids with their lengths (merged across versions), its
//! digest and its ZFS facts; at most `in_flight` manifests are decoded at once. Byte ranges
//! need the lists again, and only when something is bad: then the manifests are read a
//! second time, as many at once, and each is searched for the bad chunks alone. That costs
//! one more GET per version in a damaged repository, none in a healthy one.
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
use crate::manifest::{Manifest, Run};
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

    /// A version whose manifest cannot be read.
    fn manifest(series: &str, version: &str, reason: String) -> Problem {
        Problem {
            kind: "manifest",
            ..Problem::chain(series, version, reason)
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

    // 2. Every manifest, read and decoded with bounded concurrency, and reduced at once to
    // what the later phases need.
    let sem = Arc::new(Semaphore::new(in_flight));
    let mut tasks = JoinSet::new();
    for (s, vs) in &versions {
        for v in vs {
            let (repo, sem, s, v) = (repo.clone(), sem.clone(), s.clone(), v.clone());
            tasks.spawn(async move {
                // Returned with the manifest and given back only once the loop below has
                // reduced it: a finished task's manifest waiting to be joined is held as
                // surely as one being read, so it must count against the bound too.
                let permit = sem.acquire_owned().await?;
                let (loaded, gone) = read_manifest(&repo, &s, &v).await?;
                anyhow::Ok((s, v, loaded, gone, permit))
            });
        }
    }
    let mut readable: BTreeMap<(String, String), Readable> = BTreeMap::new();
    let mut referenced = Referenced::default();
    let mut existing: HashSet<(String, String)> = HashSet::new();
    let mut damaged: BTreeSet<String> = BTreeSet::new();
    while let Some(done) = tasks.join_next().await {
        interrupt::check()?;
        let (s, v, loaded, gone, permit) =
            done.map_err(|e| anyhow!("a check task failed: {e}"))??;
        match loaded {
            Ok((m, digest)) => {
                referenced.add(&m);
                existing.insert((s.clone(), v.clone()));
                readable.insert(
                    (s, v),
                    Readable {
                        digest,
                        zfs: ZfsFacts::from_extra(&m.extra).ok().flatten(),
                    },
                );
            }
            // Removed by a prune or forget since the listing: not damage.
            Err(_) if gone => {}
            Err(e) if damage_of(&e) => {
                existing.insert((s.clone(), v.clone()));
                damaged.insert(format!("{s} {v}"));
                report
                    .problems
                    .push(Problem::manifest(&s, &v, damage_reason(&e)));
            }
            Err(e) => return Err(e),
        }
        drop(permit);
    }
    report.series = versions.len() as u64;
    report.versions = existing.len() as u64;

    // 2b. ZFS chains: an incremental stream whose base no stored stream brings cannot be
    // restored, though every object it names is intact (its base was forgotten with --force,
    // or never backed up).
    let mut chains_of: BTreeMap<&str, Chains> = BTreeMap::new();
    for (s, vs) in &versions {
        let nodes: Vec<Node> = vs
            .iter()
            .map(|v| {
                let r = readable.get(&(s.clone(), v.clone()));
                Node {
                    name: v,
                    zfs: r.and_then(|r| r.zfs.as_ref()),
                    readable: r.is_some(),
                }
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
                } else if let Some(r) = readable.get(&key)
                    && r.digest != p.manifest_digest
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
    // A full read needs no listing to start: reading a chunk says whether it is there. A
    // subset is drawn from the chunks that are there, so it waits for the listing.
    let whole = opts.read_data.is_some_and(|s| s.percent >= 100.0);
    let chosen = if whole {
        let mut all: Vec<ChunkId> = referenced.ids().copied().collect();
        all.sort();
        all
    } else {
        let stored = chunk_listing.result().await?;
        match opts.read_data {
            Some(subset) => {
                let mut candidates: Vec<ChunkId> = referenced
                    .ids()
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
        let largest_object =
            (HEADROOM + referenced.longest as usize + TAILROOM).next_multiple_of(ALIGN) + ALIGN;
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
    report.chunks_unreferenced = stored.iter().filter(|id| !referenced.contains(id)).count() as u64;
    for id in referenced.ids().filter(|id| !stored.contains(id)) {
        fetched.entry(*id).or_insert(Fetched::Missing);
    }
    drop(chunk_listing);
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

    // 6. Bad chunks → the versions and byte ranges they affect. Only the bad ones are kept
    // for it, and the manifests are read again only if there are any.
    fetched.retain(|id, f| match f {
        Fetched::Ok { plain_len, .. } => referenced.disagrees(id, *plain_len),
        _ => true,
    });
    drop(referenced);
    if !fetched.is_empty() {
        let mut unmapped: HashSet<ChunkId> = fetched.keys().copied().collect();
        let remapped = remap(repo, &readable, Arc::new(fetched), in_flight).await?;
        let changed = remapped.values().any(|r| !matches!(r, Remapped::Bad(_)));
        for ((s, v), found) in remapped {
            match found {
                Remapped::Bad(bad) => {
                    if !bad.is_empty() {
                        damaged.insert(format!("{s} {v}"));
                    }
                    for id in bad.keys() {
                        unmapped.remove(id);
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
                Remapped::Unreadable(reason) => {
                    damaged.insert(format!("{s} {v}"));
                    report.problems.push(Problem::manifest(
                        &s,
                        &v,
                        format!(
                            "{reason} (it read well earlier in this check, so which of its bytes the bad chunks cover is not known)"
                        ),
                    ));
                }
                // Removed by a prune or forget since the first read: it is no longer a
                // version anything could restore, so its chunks are nobody's damage.
                Remapped::Gone => {}
            }
        }
        // Every bad chunk lies in some version read whole the first time; one that none of
        // them holds on the second read belongs only to versions removed (or changed) since.
        if changed && !unmapped.is_empty() {
            report.notes.push(format!(
                "{} found missing or damaged {} named by no version left: the versions that named {} were removed while this check ran (check again to be sure)",
                crate::cli::count(unmapped.len() as u64, "chunk"),
                if unmapped.len() == 1 { "is" } else { "are" },
                if unmapped.len() == 1 { "it" } else { "them" },
            ));
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

/// What the later phases need of a manifest that was read whole, kept instead of the
/// manifest itself.
struct Readable {
    /// Of the stored object, for the current pointer's check.
    digest: [u8; 32],
    zfs: Option<ZfsFacts>,
}

/// The distinct chunk ids the readable manifests name, with the plaintext length each records.
/// One entry per chunk, however many versions name it.
#[derive(Default)]
struct Referenced {
    len_of: HashMap<ChunkId, u32>,
    /// Lengths other than the one in `len_of` that further manifests record for the same id.
    /// An id is a hash of the plaintext, so only a damaged or forged manifest disagrees: this
    /// stays empty in practice, and a disagreement is reported where it lies, per version.
    other_lens: HashMap<ChunkId, Vec<u32>>,
    longest: u32,
}

impl Referenced {
    fn add(&mut self, m: &Manifest) {
        for (id, len) in m.chunks.data() {
            self.longest = self.longest.max(len);
            let first = *self.len_of.entry(id).or_insert(len);
            if first != len {
                let others = self.other_lens.entry(id).or_default();
                if !others.contains(&len) {
                    others.push(len);
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.len_of.len()
    }

    fn contains(&self, id: &ChunkId) -> bool {
        self.len_of.contains_key(id)
    }

    fn ids(&self) -> impl Iterator<Item = &ChunkId> {
        self.len_of.keys()
    }

    /// Whether some manifest records a length for `id` other than `plain_len`, the length
    /// its object holds.
    fn disagrees(&self, id: &ChunkId, plain_len: u32) -> bool {
        self.len_of.get(id).is_some_and(|l| *l != plain_len)
            || self
                .other_lens
                .get(id)
                .is_some_and(|ls| ls.iter().any(|l| *l != plain_len))
    }
}

/// A version's bad chunks found on its second read.
enum Remapped {
    /// Each bad chunk it names, with the byte ranges it covers there.
    Bad(BTreeMap<ChunkId, BadChunk>),
    /// Damaged since its first read; why.
    Unreadable(String),
    /// Removed since its first read.
    Gone,
}

/// Reads each readable version's manifest again (`in_flight` at once) and finds where the
/// chunks in `bad` lie in it; by version, in order.
async fn remap(
    repo: &Arc<Repo>,
    readable: &BTreeMap<(String, String), Readable>,
    bad: Arc<HashMap<ChunkId, Fetched>>,
    in_flight: usize,
) -> Result<BTreeMap<(String, String), Remapped>> {
    let sem = Arc::new(Semaphore::new(in_flight));
    let mut tasks = JoinSet::new();
    for ((s, v), first) in readable {
        let (repo, sem, bad, s, v) = (repo.clone(), sem.clone(), bad.clone(), s.clone(), v.clone());
        let first_digest = first.digest;
        tasks.spawn(async move {
            // The result is small (the bad chunks alone), so the permit can go with the
            // manifest, before the loop below joins it.
            let _permit = sem.acquire_owned().await?;
            let (loaded, gone) = read_manifest(&repo, &s, &v).await?;
            let found = match loaded {
                Ok((m, digest)) if digest == first_digest => Remapped::Bad(bad_chunks(&m, &bad)),
                // Manifests are never rewritten: whatever it says now is not what was checked.
                Ok(_) => Remapped::Unreadable(
                    "its bytes changed since this check first read it (a manifest is written once)"
                        .into(),
                ),
                Err(_) if gone => Remapped::Gone,
                Err(e) if damage_of(&e) => Remapped::Unreadable(damage_reason(&e)),
                Err(e) => {
                    return Err(e.context(format!(
                        "reading manifest {} (series {s:?}, version {v}) again to find where its bad chunks lie",
                        layout::manifest(&s, &v)
                    )));
                }
            };
            anyhow::Ok(((s, v), found))
        });
    }
    let mut remapped = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        interrupt::check()?;
        let (key, found) = done.map_err(|e| anyhow!("a check task failed: {e}"))??;
        remapped.insert(key, found);
    }
    Ok(remapped)
}

/// Reads a manifest for check: what loading it gave, and whether a failure means the object
/// is gone (removed by a prune or forget since it was listed), which is nobody's damage.
async fn read_manifest(
    repo: &Arc<Repo>,
    series: &str,
    version: &str,
) -> Result<(Result<(Manifest, [u8; 32])>, bool)> {
    let loaded = repo.load_manifest(series, version).await;
    let gone = match &loaded {
        Err(e) if !damage_of(e) => {
            !repo
                .store()
                .exists(&layout::manifest(series, version))
                .await?
        }
        _ => false,
    };
    Ok((loaded, gone))
}

/// The chunks of `m` that `bad` holds a verdict against, each with the byte ranges of the
/// version it covers.
fn bad_chunks(m: &Manifest, bad: &HashMap<ChunkId, Fetched>) -> BTreeMap<ChunkId, BadChunk> {
    let mut found: BTreeMap<ChunkId, BadChunk> = BTreeMap::new();
    for (offset, r) in m.run_offsets() {
        let Run::Data { id, len } = r else {
            continue;
        };
        let why = match bad.get(&id) {
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
        found
            .entry(id)
            .or_insert_with(|| (why.0, why.1, Vec::new()))
            .2
            .push((offset, offset + u64::from(len)));
    }
    found
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
    use crate::manifest::ChunkRef;

    #[test]
    fn chunk_names() {
        let id = ChunkId([0xab; 32]);
        assert_eq!(chunk_of(&layout::chunk(&id)), Some(id));
        assert_eq!(chunk_of(&format!("chunks/cd/{}", id.to_hex())), None);
        assert_eq!(chunk_of("chunks/ab/xyz"), None);
        assert_eq!(chunk_of("manifests/a/b"), None);
    }

    /// A version of series `s` cut in 64 KiB chunks.
    fn manifest_of(version: &str, chunks: Vec<ChunkRef>) -> Manifest {
        use crate::chunker::Chunking;
        use crate::manifest::{BackupStats, SourceInfo, SourceKind};
        Manifest {
            series: "s".into(),
            version: version.into(),
            time: 0,
            host: "h".into(),
            source: SourceInfo {
                kind: SourceKind::File,
                description: "/img".into(),
            },
            size: chunks.iter().map(|c| u64::from(c.len())).sum(),
            chunking: Chunking::Fixed { size: 64 << 10 },
            chunks: chunks.into(),
            parent: None,
            stats: BackupStats::default(),
            extra: BTreeMap::new(),
        }
    }

    /// A manifest read well the first time may be gone (pruned) or damaged by the time bad
    /// chunks send check back to it for byte ranges: gone is nobody's damage, damaged is
    /// reported, and the others still get their ranges, one per reference, with a length
    /// the chunk's object disagrees with reported where the manifest says it.
    #[tokio::test]
    async fn a_second_read_copes_with_manifests_gone_or_damaged_meanwhile() {
        use crate::format::config::Encryption;
        use crate::repo::InitOptions;
        use crate::store::{Memory, Store};

        let store: Arc<dyn Store> = Arc::new(Memory::new());
        let opts = InitOptions {
            encryption: Encryption::None,
            ..InitOptions::default()
        };
        let repo = Arc::new(Repo::init(store.clone(), opts, None).await.unwrap());
        const SIZE: u32 = 64 << 10;
        let (lost, short, fine) = (ChunkId([1; 32]), ChunkId([2; 32]), ChunkId([3; 32]));
        let chunks = vec![
            ChunkRef::Data {
                id: lost,
                len: SIZE,
            },
            ChunkRef::Data {
                id: fine,
                len: SIZE,
            },
            ChunkRef::Zero { len: SIZE },
            ChunkRef::Data {
                id: lost,
                len: SIZE,
            },
            ChunkRef::Data {
                id: short,
                len: 100,
            },
        ];
        let versions = [
            "2026-01-01T000000Z",
            "2026-01-02T000000Z",
            "2026-01-03T000000Z",
            "2026-01-04T000000Z",
        ];
        let mut readable = BTreeMap::new();
        for v in versions {
            let m = manifest_of(v, chunks.clone());
            let (_, digest) = repo.save_manifest(&m).await.unwrap();
            readable.insert(
                ("s".to_string(), v.to_string()),
                Readable { digest, zfs: None },
            );
        }
        store
            .delete(&layout::manifest("s", versions[1]))
            .await
            .unwrap();
        store
            .put(
                &layout::manifest("s", versions[2]),
                b"not a manifest".to_vec(),
            )
            .await
            .unwrap();
        // Written again with other content under the same name, as no writer does.
        let mut other = manifest_of(versions[3], chunks.clone());
        other.host = "elsewhere".into();
        store
            .delete(&layout::manifest("s", versions[3]))
            .await
            .unwrap();
        repo.save_manifest(&other).await.unwrap();
        let bad = HashMap::from([
            (lost, Fetched::Missing),
            (
                short,
                Fetched::Ok {
                    plain_len: 99,
                    stored: 140,
                },
            ),
        ]);
        let found = remap(&repo, &readable, Arc::new(bad), 2).await.unwrap();
        assert_eq!(found.len(), 4);
        let at = |v: &str| &found[&("s".to_string(), v.to_string())];
        let Remapped::Bad(bad) = at(versions[0]) else {
            panic!("the intact version is searched");
        };
        let s = u64::from(SIZE);
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[&lost].0, "chunk_missing");
        assert_eq!(bad[&lost].2, [(0, s), (3 * s, 4 * s)]);
        assert_eq!(bad[&short].0, "chunk_damaged");
        assert!(
            bad[&short].1.contains("holds 99 bytes"),
            "{}",
            bad[&short].1
        );
        assert_eq!(bad[&short].2, [(4 * s, 4 * s + 100)]);
        assert!(matches!(at(versions[1]), Remapped::Gone));
        assert!(matches!(at(versions[2]), Remapped::Unreadable(r) if !r.is_empty()));
        assert!(
            matches!(at(versions[3]), Remapped::Unreadable(r) if r.contains("changed since")),
            "a manifest rewritten meanwhile is not mapped by its new content"
        );
    }

    #[test]
    fn lengths_that_manifests_disagree_on_are_all_kept() {
        let id = ChunkId([9; 32]);
        let mut r = Referenced::default();
        for len in [100, 100, 90] {
            r.add(&manifest_of("v", vec![ChunkRef::Data { id, len }]));
        }
        assert_eq!(r.len(), 1);
        assert_eq!(r.longest, 100);
        assert!(r.disagrees(&id, 100), "a manifest says 90");
        assert!(r.disagrees(&id, 90), "manifests say 100");
        assert!(!r.disagrees(&ChunkId([8; 32]), 5), "not referenced");
        let mut one = Referenced::default();
        one.add(&manifest_of("v", vec![ChunkRef::Data { id, len: 100 }]));
        assert!(!one.disagrees(&id, 100));
        assert!(one.disagrees(&id, 99));
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
