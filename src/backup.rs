//! The backup pipeline: source → chunker → id → (known? zero?) → seal → store → manifest →
//! current pointer.
//!
//! A reading thread feeds a bounded channel; each chunk becomes a task that hashes and seals on
//! the rayon pool and stores with async I/O; a semaphore bounds the chunks in flight, and so
//! the memory. Commit order (DESIGN.md promise 1): every chunk is durable before the manifest
//! is written, and the manifest before `current` moves. Any failure before the manifest leaves
//! only unreferenced chunks, which the next run reuses.

use crate::chunk_id::ChunkId;
use crate::chunker::{CdcChunker, Chunking, FixedChunker, is_zero};
use crate::cpu;
use crate::error::Error;
use crate::format::lock::LockMode;
use crate::interrupt;
use crate::layout;
use crate::lock::LockGuard;
use crate::manifest::{BackupStats, ChunkRef, Chunks, Manifest, Run};
use crate::pool::Pool;
use crate::progress;
use crate::repo::{Repo, SealedChunk, hostname};
use crate::seal::{HEADROOM, TAILROOM};
use crate::source::{self, ByOffset, Holes, SourceSpec};
use crate::store::{Claim, Requests};
use crate::sys::{self, Mapped};
use crate::zfs::ZfsFacts;
use crate::zfs::facts::hex_guid;
use crate::zfs::stream::{StreamError, StreamInfo, StreamParser};
use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Chunks being hashed, sealed or stored at once into S3, at the least: its latency wants
/// many requests in flight. Also the default of restore and of gc's deletes, from either kind
/// of store.
pub const DEFAULT_IN_FLIGHT: usize = 8;
/// The most chunks a backup keeps in flight by default however many cores there are: each
/// holds up to two chunks' worth of memory (a read buffer and a sealed copy).
pub const MAX_DEFAULT_IN_FLIGHT: usize = 16;

/// The default of `--in-flight` for a backup: the threads that hash and compress, plus two
/// chunks being written; into S3 at least [`DEFAULT_IN_FLIGHT`]; at most
/// [`MAX_DEFAULT_IN_FLIGHT`]. The chunk data in memory is then at most about (in flight + 3)
/// read buffers of the largest chunk's size (kept for reuse) plus the sealed copies being
/// written: it grows with the cores, up to the cap, not with the size of the source. On our 2-core VM, 4 into a local directory was as fast
/// as 8 for a first backup, an incremental one and both streams of the bench, and kept the
/// peak at the 72 MiB that opening the repository takes (Argon2id's working memory) where 8
/// reached 75–82 (benches/RESULTS.md, fourteenth round).
pub fn default_in_flight(local: bool) -> usize {
    let workers = rayon::current_num_threads() + 2;
    let least = if local { 1 } else { DEFAULT_IN_FLIGHT };
    workers.clamp(least, MAX_DEFAULT_IN_FLIGHT)
}

pub struct BackupOptions {
    pub series: String,
    /// When the version is recorded as made; now if None.
    pub time: Option<jiff::Timestamp>,
    /// Chunks in flight; [`default_in_flight`] for the store if None.
    pub in_flight: Option<usize>,
    pub progress: bool,
    /// Record a version even if a stream source produced no bytes at all.
    pub allow_empty: bool,
    /// Read, chunk, hash and compress, ask the store what it has, but write nothing: no
    /// chunk, no manifest, no lock.
    pub dry_run: bool,
    /// The source must be a ZFS send stream (`--zfs`). Streams from stdin, commands and pipes
    /// are recognised as ZFS by their first record either way, and then validated too.
    pub zfs_required: bool,
    /// Store a stream as the bytes it is, without looking for a ZFS send stream in it (one
    /// that starts like one, but is not, or not whole, would fail the run otherwise).
    pub raw: bool,
    /// The stream must be an incremental from exactly this snapshot GUID (the base that
    /// `--auto-incremental` chose from the repository): a pool whose snapshot of that name is
    /// another snapshot now is caught before anything is committed.
    pub zfs_base: Option<u64>,
    /// Give up after this long: the run fails and records nothing, and a command source is
    /// killed with everything it started (a `pg_dump` waiting on a lock, a hung `zfs send`).
    pub timeout: Option<std::time::Duration>,
    /// Ask the store for every chunk instead of trusting that the parent version's chunks are
    /// there, and store again those that are not (deleted by hand, or by `check --repair`
    /// because they were damaged): with them, every version that uses them is whole again.
    pub heal: bool,
}

/// Why [`before`] gave up waiting.
enum Stopped {
    Deadline,
    Asked(Error),
}

impl Stopped {
    fn error(self, timed_out: impl FnOnce() -> anyhow::Error) -> anyhow::Error {
        match self {
            Stopped::Deadline => timed_out(),
            Stopped::Asked(e) => e.into(),
        }
    }
}

/// `f`, unless `deadline` passes or a stop signal arrives first (`crate::interrupt`).
async fn before<T>(
    deadline: Option<tokio::time::Instant>,
    f: impl Future<Output = T>,
) -> Result<T, Stopped> {
    let timed = async {
        match deadline {
            Some(d) => tokio::time::timeout_at(d, f)
                .await
                .map_err(|_| Stopped::Deadline),
            None => Ok(f.await),
        }
    };
    tokio::select! {
        biased;
        r = timed => r,
        e = interrupt::asked() => Err(Stopped::Asked(e)),
    }
}

/// Opens the source on a thread of its own, raced against the deadline and a stop signal:
/// opening can wait for ever (a FIFO waits in open(2) for a writer), and a backup must still
/// honour its timeout and a Ctrl-C. A thread left blocked goes when the process ends.
async fn open_source(
    spec: &SourceSpec,
    opts: &BackupOptions,
    deadline: Option<tokio::time::Instant>,
) -> Result<source::OpenedSource> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let what = spec.in_words();
    let (spec, own_group) = (spec.clone(), opts.timeout.is_some());
    std::thread::spawn(move || {
        let _ = tx.send(source::open(&spec, own_group));
    });
    match before(deadline, rx).await {
        Ok(Ok(opened)) => opened,
        Ok(Err(_)) => bail!("opening source {what}: its thread ended early"),
        Err(stopped) => Err(stopped
            .error(|| {
                anyhow!(
                    "source {what} did not open within the timeout ({})",
                    timeout_words(opts)
                )
            })
            .context(failed(&opts.series))),
    }
}

/// The context of a backup that fails after it began: which series, and that nothing counts.
fn failed(series: &str) -> String {
    format!("backup of series {series:?} failed; no version recorded")
}

/// The run's timeout as the user would write it (`90s`, `2h`).
fn timeout_words(opts: &BackupOptions) -> String {
    opts.timeout
        .map(crate::retention::show_duration)
        .unwrap_or_default()
}

#[derive(Debug, Clone, Serialize)]
pub struct ZfsSummary {
    pub snapshot: String,
    pub guid: String,
    /// Zero for a full stream.
    pub base_guid: String,
    pub incremental: bool,
    pub compound: bool,
    pub substreams: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    pub series: String,
    pub version: String,
    pub time: String,
    pub source_kind: &'static str,
    pub source: String,
    pub parent: Option<String>,
    /// Bytes read from the source (the version's size).
    pub size: u64,
    pub chunks: u64,
    pub chunks_new: u64,
    pub chunks_reused: u64,
    pub chunks_zero: u64,
    /// Of `chunks_new`: chunks the parent version names that were missing from the store and
    /// were stored again (`--heal`).
    pub chunks_healed: u64,
    pub bytes_new: u64,
    pub bytes_new_stored: u64,
    /// False when the version is older than the series' current version (recorded with an
    /// earlier `--time`, or a ZFS snapshot created before the current one's), which stays
    /// current.
    pub current: bool,
    /// False when nothing was recorded because the series already holds this very ZFS
    /// stream (the same snapshot from the same base): `version` then names that version.
    /// Missing chunks were stored all the same (`--heal`).
    pub recorded: bool,
    pub seconds: f64,
    /// Bytes of the source per second, in MB (10^6 bytes).
    pub mb_per_s: f64,
    /// The process's peak resident memory up to the end of the run (`VmHWM`), in bytes; None
    /// where /proc does not say. A long-running process that did more before reports the peak
    /// of all of it.
    pub peak_rss_bytes: Option<u64>,
    /// True when nothing was written (`--dry-run`); `version` is then empty and the chunk
    /// and byte counts say what would have been uploaded.
    pub dry_run: bool,
    /// Requests this run made of the store, by type.
    pub requests: Requests,
    /// What the ZFS send stream said, when the source was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zfs: Option<ZfsSummary>,
}

enum Outcome {
    Zero,
    Reused,
    New { raw: u64, stored: u64 },
}

impl Ctx {
    /// Stored for certain, without asking the store.
    fn trusted(&self, id: &ChunkId) -> bool {
        !self.heal && self.known.contains(id)
    }
}

struct Ctx {
    repo: Arc<Repo>,
    /// Ids the parent version references: certainly stored, no need to ask the store (unless
    /// `heal`).
    known: HashSet<ChunkId>,
    heal: bool,
    /// Chunks of `known` found missing and stored again.
    healed: AtomicU64,
    /// Ids this run has already decided about.
    seen: Mutex<HashSet<ChunkId>>,
    dry_run: bool,
    /// Buffers chunks are read into.
    pool: Arc<Pool>,
    /// The source as errors name it.
    source: String,
}

/// Chunks read ahead of the ones being processed (the channel from the reading thread).
const READ_AHEAD: usize = 2;

/// What the reading thread hands on: a chunk's bytes after [`HEADROOM`] bytes of room (so a
/// chunk that does not compress is sealed where it lies), the chunk's bytes where they lie in
/// the page cache, or the length of a chunk known to be zeros without reading it.
enum Piece {
    Data(Vec<u8>),
    Mapped(Mapped),
    /// `count` neighbouring chunks of `len` bytes each, all in a hole. One piece for a run:
    /// a piece per chunk cost ~6 µs of channel and task wake-ups each, 6.4 s (7.5 s of it in
    /// the kernel) for a 64 GiB sparse file at 64 KiB chunks.
    Holes {
        len: u32,
        count: u32,
    },
}

/// The most chunks one [`Piece::Holes`] stands for, so that progress and the deadline are
/// seen to now and then in a long hole (a GiB at 64 KiB chunks).
const HOLE_RUN: u32 = 1 << 14;

impl Piece {
    fn bytes(&self) -> u64 {
        match self {
            Piece::Data(buf) => (buf.len() - HEADROOM) as u64,
            Piece::Mapped(map) => map.len() as u64,
            Piece::Holes { len, count } => u64::from(*len) * u64::from(*count),
        }
    }
}

type Sender = tokio::sync::mpsc::Sender<io::Result<Piece>>;

/// Reads a file or device of `total` bytes chunk by chunk with positional reads, and sends
/// chunks that lie wholly in a hole as [`Piece::Holes`] without reading them, a run at a
/// time. Stops early when the file turns out shorter than `total`: the source's `finish` then
/// fails the run.
///
/// With `map` (the parent version has data, so most chunks are expected to be stored
/// already), chunks of [`sys::MAP_MIN`] or more are mapped instead of read, and so hashed
/// without being copied; a file that is shorter than a map, whenever it shrank, fails the run
/// through the map's [`cut_short`](Mapped::cut_short).
fn read_positional(src: &mut ByOffset, size: u32, total: u64, map: bool, pool: &Pool, tx: &Sender) {
    let mut holes = Holes::new(&src.file).ok();
    let mut offset = 0;
    while offset < total {
        let len = u64::from(size).min(total - offset);
        if let Some(h) = holes.as_mut()
            && h.is_hole(offset, offset + len)
        {
            // The chunks after it in the same hole go with it (asking is free inside a hole
            // already found).
            let mut count = 1;
            while count < HOLE_RUN {
                let next = offset + u64::from(count) * len;
                if next + len > total || !h.is_hole(next, next + len) {
                    break;
                }
                count += 1;
            }
            let piece = Piece::Holes {
                len: len as u32,
                count,
            };
            if tx.blocking_send(Ok(piece)).is_err() {
                return;
            }
            offset += u64::from(count) * len;
            continue;
        }
        if let Some(mapped) = (map && src.mappable())
            .then(|| Mapped::chunk(&src.file, offset, len as usize))
            .flatten()
        {
            if tx.blocking_send(Ok(Piece::Mapped(mapped))).is_err() {
                return;
            }
            offset += len;
            continue;
        }
        let mut buf = pool.take();
        // A reused buffer is overwritten, not cleared: only a longer chunk grows it.
        buf.resize(HEADROOM + len as usize, 0);
        let n = match src.read_full_at(&mut buf[HEADROOM..], offset) {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        if n == 0 {
            return;
        }
        buf.truncate(HEADROOM + n);
        if tx.blocking_send(Ok(Piece::Data(buf))).is_err() || (n as u64) < len {
            return;
        }
        offset += n as u64;
    }
}

/// Cuts a stream (or a file that must pass the ZFS tee) into chunks, each read into a pooled
/// buffer.
fn read_stream(
    reader: Box<dyn io::Read + Send>,
    chunking: Chunking,
    seed: u64,
    pool: &Pool,
    tx: &Sender,
) {
    let mut fixed = None;
    let mut cdc = None;
    match chunking {
        Chunking::Fixed { size } => fixed = Some(FixedChunker::new(reader, size)),
        Chunking::Cdc { min, avg, max } => {
            cdc = Some(CdcChunker::new(reader, min, avg, max, seed));
        }
    }
    loop {
        let mut buf = pool.take();
        let next = match (&mut fixed, &mut cdc) {
            (Some(c), _) => c.next_into(&mut buf, HEADROOM),
            (_, Some(c)) => c.next_into(&mut buf, HEADROOM),
            (None, None) => None,
        };
        let Some(item) = next else { return };
        let failed = item.is_err();
        if tx.blocking_send(item.map(|_| Piece::Data(buf))).is_err() || failed {
            return;
        }
    }
}

/// Version names sort by time: `2026-11-22T130507Z`.
pub fn version_name(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H%M%SZ").to_string()
}

pub async fn backup(
    repo: Arc<Repo>,
    spec: &SourceSpec,
    opts: BackupOptions,
) -> Result<BackupSummary> {
    layout::validate_series(&opts.series).map_err(|e| anyhow!(e))?;
    let requests_before = repo.store().requests();
    if opts.dry_run {
        // A dry run writes nothing, not even a lock.
        return run(&repo, spec, &opts, None).await;
    }
    let lock = LockGuard::acquire(
        &repo,
        LockMode::Shared,
        &format!("backup of {}", opts.series),
    )
    .await?;
    let mut result = run(&repo, spec, &opts, Some(&lock)).await;
    lock.release().await;
    // The lock's own requests (and a first conditional-write probe) are part of the cost.
    if let Ok(summary) = &mut result {
        summary.requests = repo.store().requests().since(requests_before);
    }
    result
}

async fn run(
    repo: &Arc<Repo>,
    spec: &SourceSpec,
    opts: &BackupOptions,
    lock: Option<&LockGuard>,
) -> Result<BackupSummary> {
    let started = Instant::now();
    let requests_before = repo.store().requests();
    let series = opts.series.as_str();
    let time = opts.time.unwrap_or_else(jiff::Timestamp::now);
    // Past the deadline a command source's process group is killed, which also ends a read of
    // its output or a wait for its exit; and the pipeline below stops waiting for anything
    // else (a file, stdin, the store). Whichever sees the deadline first stops the source
    // (`stop`); the watchdog goes when `watchdog` is dropped. (A deadline too far to
    // represent is none.)
    let deadline = opts
        .timeout
        .and_then(|t| tokio::time::Instant::now().checked_add(t));
    let mut source = open_source(spec, opts, deadline).await?;
    let fired = Arc::new(AtomicBool::new(false));
    let stop = {
        let (fired, group) = (fired.clone(), source.process_group());
        move || {
            if !fired.swap(true, Ordering::SeqCst)
                && let Some(g) = group
            {
                sys::kill_group(g);
            }
        }
    };
    let timed_out = {
        let t = timeout_words(opts);
        let what = source.info.in_words();
        let stop = stop.clone();
        move || {
            stop();
            anyhow!("the backup of {what} ran longer than its timeout ({t}) and was stopped")
        }
    };
    let mut watchdog = JoinSet::new();
    if let Some(d) = deadline {
        watchdog.spawn(async move {
            tokio::time::sleep_until(d).await;
            stop();
        });
    }
    let defaults = repo.config.chunker;
    let chunking = match source.size {
        Some(_) => Chunking::Fixed {
            size: defaults.fixed_size,
        },
        None => Chunking::Cdc {
            min: defaults.cdc_min,
            avg: defaults.cdc_avg,
            max: defaults.cdc_max,
        },
    };
    chunking
        .validate()
        .map_err(|e| anyhow!("repository config: {e}"))?;

    let parent = load_parent(repo, series).await;
    let known: HashSet<ChunkId> = parent
        .iter()
        .flat_map(|m| m.chunks.data())
        .map(|(id, _)| id)
        .collect();
    // Only its name and facts are needed from here on: its chunk list is as large as the one
    // this run builds (40 bytes a data chunk).
    let parent = parent.map(|m| Manifest {
        chunks: Chunks::new(),
        ..m
    });

    let zfs_slot: ZfsSlot = Arc::new(Mutex::new(None));
    let tee = opts.zfs_required || (source.info.kind.is_stream() && !opts.raw);
    let reader: Box<dyn io::Read + Send> = if tee {
        Box::new(ZfsTee {
            inner: source.take_reader(),
            parser: StreamParser::new(opts.zfs_required),
            slot: zfs_slot.clone(),
            ended: false,
        })
    } else {
        source.take_reader()
    };
    let pb = progress::bar(source.size, &format!("backup {series}"), opts.progress);
    // A stream counts its bytes as they come; a file or device, chunk by chunk below.
    let counted = source.size.is_none();
    let reader: Box<dyn io::Read + Send> = if counted {
        Box::new(progress::Counting {
            inner: reader,
            bar: pb.clone(),
        })
    } else {
        reader
    };
    let seed = repo.keys.gear_seed;
    // A file or device is read positionally, skipping holes; a ZFS stream must pass through
    // the tee, which sees the bytes in order.
    let positional = match (chunking, tee, source.size) {
        (Chunking::Fixed { size }, false, Some(total)) => {
            source.take_file().map(|f| (f, size, total))
        }
        _ => None,
    };
    // Read buffers go back to the pool when their chunk is zero or already stored (an
    // unchanged image is almost all such chunks), once a new chunk is compressed into a
    // buffer of its own, or, for a chunk stored as it is, once it is written. They keep their
    // length, so a read into one zeroes nothing first. Sealed chunks are not pooled: kept,
    // each would hold as much memory as the largest it ever held, for no speed (measured).
    let in_flight = opts
        .in_flight
        .unwrap_or_else(|| default_in_flight(repo.store().is_local()))
        .max(1);
    let pool = Arc::new(Pool::new(
        HEADROOM + chunking.max_chunk() + TAILROOM,
        in_flight + READ_AHEAD + 1,
    ));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<Piece>>(READ_AHEAD);
    let reader_pool = pool.clone();
    let map = !known.is_empty();
    let reader_thread = std::thread::spawn(move || match positional {
        Some((mut src, size, total)) => {
            read_positional(&mut src, size, total, map, &reader_pool, &tx)
        }
        None => read_stream(reader, chunking, seed, &reader_pool, &tx),
    });

    let ctx = Arc::new(Ctx {
        repo: repo.clone(),
        known,
        heal: opts.heal,
        healed: AtomicU64::new(0),
        seen: Mutex::new(HashSet::new()),
        dry_run: opts.dry_run,
        pool,
        source: source.info.description.clone(),
    });
    let description = source.info.description.clone();
    let zfs_required = opts.zfs_required;
    let sem = Arc::new(Semaphore::new(in_flight));
    let mut tasks: JoinSet<Result<(usize, ChunkRef, Outcome)>> = JoinSet::new();
    let mut refs = InOrder::default();
    let mut stats = BackupStats::default();
    let mut bytes_read: u64 = 0;
    let pipeline: Result<()> = async {
        while let Some(item) = before(deadline, rx.recv())
            .await
            .map_err(|s| s.error(&timed_out))?
        {
            let piece = item.map_err(|e| {
                // A ZFS stream error names its own byte offset, which is more exact than the
                // start of the chunk being cut.
                let at = match (e.kind() == io::ErrorKind::InvalidData, zfs_required) {
                    (false, _) => format!(" at byte {bytes_read}"),
                    (true, true) => String::new(),
                    (true, false) => ", which starts like a ZFS send stream (to back up its bytes as they are, add --raw)".to_string(),
                };
                anyhow::Error::new(e).context(format!("reading source {description}{at}"))
            })?;
            bytes_read += piece.bytes();
            if !counted {
                pb.set_position(bytes_read);
            }
            // Zeros need no task: recorded here, in order.
            if let Piece::Holes { len, count } = piece {
                let count = u64::from(count);
                let index = refs.issue();
                refs.done(index, Run::Zero { len, count });
                stats.chunks_zero += count;
                continue;
            }
            let index = refs.issue();
            let permit = before(deadline, sem.clone().acquire_owned())
                .await
                .map_err(|s| s.error(&timed_out))??;
            while let Some(done) = tasks.try_join_next() {
                record(done, &mut refs, &mut stats)?;
            }
            let ctx = ctx.clone();
            tasks.spawn(async move {
                let r = process(&ctx, index, piece).await;
                drop(permit);
                r
            });
        }
        while let Some(done) = before(deadline, tasks.join_next())
            .await
            .map_err(|s| s.error(&timed_out))?
        {
            record(done, &mut refs, &mut stats)?;
        }
        Ok(())
    }
    .await;
    // A command killed at the deadline ends its output early: that is the timeout too.
    let pipeline = pipeline.and_then(|()| {
        if fired.load(Ordering::SeqCst) {
            Err(timed_out())
        } else {
            Ok(())
        }
    });
    pb.finish_and_clear();
    if let Err(e) = pipeline {
        tasks.abort_all();
        // The signal handler killed the command's group already, unless it found no free slot
        // to register it in (`sys::ForwardSignals`): then it is killed here. Before
        // `failure_note` reaps the command, while its group id cannot name anyone else's.
        if sys::stop_asked().is_some()
            && let Some(g) = source.process_group()
        {
            sys::kill_group(g);
        }
        // A command killed at the deadline, or after a stop signal, exits with SIGKILL: that
        // says nothing more.
        let note = if fired.load(Ordering::SeqCst) || sys::stop_asked().is_some() {
            None
        } else {
            source.failure_note()
        };
        drop(watchdog);
        source.abandon();
        let e = match note {
            Some(n) => e.context(n),
            None => e,
        };
        return Err(e.context(failed(series)));
    }
    let _ = reader_thread.join();
    let info = source.info.clone();
    // A command that closed its output may still be running: the wait for it is bounded by the
    // deadline too (a grace of seconds after the kill; past it, it is left behind).
    let finished = tokio::task::spawn_blocking(move || source.finish(bytes_read));
    let grace = deadline.and_then(|d| d.checked_add(std::time::Duration::from_secs(5)));
    let finished = before(grace, finished).await;
    // The child is reaped: from now on its process group id may name someone else's.
    drop(watchdog);
    // After a stop signal, how the command ended says nothing: the signal killed its group.
    let finished = match (finished, interrupt::check()) {
        (Err(Stopped::Asked(e)), _) | (_, Err(e)) => {
            return Err(anyhow::Error::new(e).context(failed(series)));
        }
        (Ok(finished), Ok(())) if !fired.load(Ordering::SeqCst) => finished,
        _ => {
            return Err(timed_out().context(failed(series)));
        }
    };
    // Named by series, as other failures are: in a cron mail, the command alone may not say
    // which backup it was.
    finished
        .map_err(|e| anyhow!("waiting for source {}: {e}", info.description))?
        .with_context(|| format!("backup of series {series:?}"))?;
    let zfs = match zfs_slot.lock().map(|mut s| s.take()) {
        Ok(Some(Ok(Some(stream)))) => Some(ZfsFacts::from_stream(&stream).ok_or_else(|| {
            anyhow!(
                "{} is a ZFS send stream that holds no snapshot; no version recorded",
                info.description
            )
        })?),
        Ok(Some(Err(e))) => {
            bail!(
                "{} is not a valid ZFS send stream: {e}; no version recorded{}",
                info.description,
                if opts.zfs_required {
                    ""
                } else {
                    " (it starts like one: to back up its bytes as they are, add --raw)"
                }
            )
        }
        Ok(None) if opts.zfs_required => bail!(
            "internal error: the ZFS stream of {} was not validated; no version recorded",
            info.description
        ),
        _ => None,
    };
    if let (Some(want), Some(z)) = (opts.zfs_base, &zfs)
        && z.base_guid != want
    {
        bail!(
            "{} is not incremental from the stored snapshot (GUID {}) but from GUID {}: the snapshot of that name on the pool is not the one in the repository; no version recorded (back up with a full send, without --auto-incremental)",
            info.description,
            hex_guid(want),
            hex_guid(z.base_guid)
        );
    }
    let zfs_summary = zfs.as_ref().map(|z| ZfsSummary {
        snapshot: z.snapshot.clone(),
        guid: hex_guid(z.guid),
        base_guid: hex_guid(z.base_guid),
        incremental: z.is_incremental(),
        compound: z.compound,
        substreams: z.substreams,
    });
    // `pg_dump db | blockvault backup -` cannot see pg_dump's exit status; a producer that
    // died before writing anything shows up as an empty stream, so do not call that a backup.
    if bytes_read == 0 && info.kind.is_stream() && !opts.allow_empty {
        let what = info.in_words();
        bail!(
            "backup of series {series:?}: {what} produced no data; no version recorded (if an empty backup is what you want, add --allow-empty; in a job file, allow_empty = true)"
        );
    }

    let chunks_healed = ctx.healed.load(Ordering::Relaxed);
    let chunks = refs
        .finish()
        .ok_or_else(|| anyhow!("internal error: a chunk result went missing"))?;
    stats.duration_ms = started.elapsed().as_millis() as u64;
    // What a run that records nothing (a dry run, or a ZFS stream stored already) reports.
    let unrecorded = |version: String, dry_run: bool| {
        let secs = started.elapsed().as_secs_f64();
        BackupSummary {
            series: series.to_string(),
            version,
            time: time.to_string(),
            source_kind: info.kind.as_str(),
            source: info.description.clone(),
            parent: parent.as_ref().map(|m| m.version.clone()),
            size: bytes_read,
            chunks: chunks.len(),
            chunks_new: stats.chunks_new,
            chunks_reused: stats.chunks_reused,
            chunks_zero: stats.chunks_zero,
            chunks_healed,
            bytes_new: stats.bytes_new,
            bytes_new_stored: stats.bytes_new_stored,
            current: false,
            recorded: false,
            seconds: secs,
            mb_per_s: if secs > 0.0 {
                bytes_read as f64 / 1e6 / secs
            } else {
                0.0
            },
            dry_run,
            peak_rss_bytes: sys::peak_rss(),
            requests: repo.store().requests().since(requests_before),
            zfs: zfs_summary.clone(),
        }
    };
    if opts.dry_run {
        return Ok(unrecorded(String::new(), true));
    }
    // A ZFS snapshot created before the current version's is not the series' newest, whatever
    // the time of this backup: it must not become current (nor, recorded twice, shadow the
    // newer snapshots for prune).
    let parent_creation = parent
        .as_ref()
        .and_then(|m| ZfsFacts::from_extra(&m.extra).ok().flatten())
        .map(|p| p.creation);
    let older_snapshot = matches!((&zfs, parent_creation), (Some(z), Some(c)) if z.creation < c);
    if let Some(z) = &zfs
        && parent_creation.is_some_and(|c| z.creation <= c)
        && let Some(stored) = same_stream(repo, series, z).await?
    {
        repo.store()
            .sync(layout::CHUNKS)
            .await
            .context("making the new chunks durable")?;
        return Ok(unrecorded(stored, false));
    }
    let mut manifest = Manifest {
        series: series.to_string(),
        version: version_name(time),
        time: time.as_second(),
        host: hostname(),
        source: info,
        size: bytes_read,
        chunking,
        chunks,
        parent: parent.map(|m| m.version),
        stats,
        extra: BTreeMap::new(),
    };
    if let Some(z) = &zfs {
        z.to_extra(&mut manifest.extra);
    }
    manifest
        .validate()
        .map_err(|e| anyhow!("internal error: the new manifest is inconsistent: {e}"))?;
    // Chunks were stored with `put_unsynced`: durable from here on, before the manifest that
    // names them (format-spec 11, "chunks before manifest").
    repo.store()
        .sync(layout::CHUNKS)
        .await
        .context("making the new chunks durable")?;
    // The last moment a stop signal can still keep the version from being recorded; once its
    // manifest is being written, the commit goes through.
    interrupt::check().map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "backup of series {series:?} stopped; no version recorded"
        ))
    })?;
    if let Some(lock) = lock {
        lock.ensure_fresh().await?;
    }
    let digest = commit_manifest(repo, &mut manifest).await?;
    let current = match repo.current(series).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "warning: replacing the unreadable current pointer of series {series:?}: {e:#}"
            );
            None
        }
    };
    // `current` names the newest version; a backup recorded with an earlier --time does not
    // move it back.
    let became_current = !older_snapshot
        && current.is_none_or(|c| layout::version_order(&c.version, &manifest.version).is_le());
    if became_current {
        // The version is committed by now: say so, or a user would back it up again.
        repo.set_current(series, &manifest.version, digest)
            .await
            .with_context(|| {
                format!(
                    "version {v} of series {series:?} was recorded, but its current pointer was not moved: restores without --version still pick the previous version until the next backup moves it (`--version {v}` restores this one)",
                    v = manifest.version
                )
            })?;
    }

    let secs = started.elapsed().as_secs_f64();
    let s = &manifest.stats;
    Ok(BackupSummary {
        series: manifest.series.clone(),
        version: manifest.version.clone(),
        time: jiff::Timestamp::from_second(manifest.time)
            .map(|t| t.to_string())
            .unwrap_or_default(),
        source_kind: manifest.source.kind.as_str(),
        source: manifest.source.description.clone(),
        parent: manifest.parent.clone(),
        size: manifest.size,
        chunks: manifest.chunks.len(),
        chunks_new: s.chunks_new,
        chunks_reused: s.chunks_reused,
        chunks_zero: s.chunks_zero,
        chunks_healed,
        bytes_new: s.bytes_new,
        bytes_new_stored: s.bytes_new_stored,
        current: became_current,
        recorded: true,
        seconds: secs,
        mb_per_s: if secs > 0.0 {
            manifest.size as f64 / 1e6 / secs
        } else {
            0.0
        },
        dry_run: false,
        peak_rss_bytes: sys::peak_rss(),
        requests: repo.store().requests().since(requests_before),
        zfs: zfs_summary,
    })
}

type ZfsSlot = Arc<Mutex<Option<Result<Option<StreamInfo>, StreamError>>>>;

/// Hands every byte the chunker reads to the ZFS stream parser too, on the reading thread, so
/// a stream is validated as it flows, with no temporary copy. A stream that turns out invalid
/// fails the read, and so the run, at the byte where it went wrong.
struct ZfsTee {
    inner: Box<dyn io::Read + Send>,
    parser: StreamParser,
    slot: ZfsSlot,
    ended: bool,
}

impl ZfsTee {
    fn conclude(&mut self, r: Result<Option<StreamInfo>, StreamError>) -> io::Result<()> {
        self.ended = true;
        let err = r.as_ref().err().cloned();
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some(r);
        }
        match err {
            Some(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            None => Ok(()),
        }
    }
}

impl io::Read for ZfsTee {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.ended {
            return Ok(n);
        }
        if n == 0 {
            let r = self.parser.finish();
            self.conclude(r)?;
            return Ok(0);
        }
        if let Err(e) = self.parser.feed(&buf[..n]) {
            self.conclude(Err(e))?;
        }
        Ok(n)
    }
}

/// The version of `series` that holds exactly this ZFS stream (the same snapshot from the
/// same base), if any: a second copy of it would add nothing a restore could use, and, made
/// later, would count as the newer version for `current` and for prune.
async fn same_stream(repo: &Arc<Repo>, series: &str, z: &ZfsFacts) -> Result<Option<String>> {
    let loaded = crate::prune::load_series(repo, series, |w| eprintln!("warning: {w}")).await?;
    Ok(loaded
        .versions
        .iter()
        .find(|v| {
            v.zfs
                .as_ref()
                .is_some_and(|s| s.guid == z.guid && s.base_guid == z.base_guid)
        })
        .map(|v| v.info.name.clone()))
}

/// The series' current version, used to skip asking the store about chunks it references.
/// A parent that cannot be read only costs dedup speed, so it is a warning, not a failure.
async fn load_parent(repo: &Repo, series: &str) -> Option<Manifest> {
    let pointer = match repo.current(series).await {
        Ok(p) => p?,
        Err(e) => {
            eprintln!("warning: {e:#}; backing up without a parent");
            return None;
        }
    };
    match repo.load_manifest(series, &pointer.version).await {
        Ok((m, digest)) if digest == pointer.manifest_digest => Some(m),
        Ok(_) => {
            eprintln!(
                "warning: the current pointer of series {series:?} does not match manifest {}; backing up without a parent",
                pointer.version
            );
            None
        }
        Err(e) => {
            eprintln!("warning: {e:#}; backing up without a parent");
            None
        }
    }
}

/// Writes the manifest under a fresh version name: the time-based name, or with `-2`, `-3`,
/// ... when another backup of the series took that second.
async fn commit_manifest(repo: &Repo, m: &mut Manifest) -> Result<[u8; 32]> {
    let base = m.version.clone();
    for n in 1..=100 {
        if n > 1 {
            m.version = format!("{base}-{n}");
        }
        match repo.save_manifest(m).await? {
            (Claim::Created, digest) => return Ok(digest),
            (Claim::Taken, _) => {}
            // Said, since the version this backup reports is not the name it first wrote.
            (Claim::Replaced, _) => eprintln!(
                "note: another backup of series {:?} stored version {} at the same moment and replaced this one's manifest; this backup takes the next name",
                m.series, m.version
            ),
        }
    }
    bail!(
        "series {:?}: 100 versions already named {base}; try again in a second",
        m.series
    )
}

/// The version's chunks, put in order as their tasks finish (out of order). A gap cannot wait
/// in the list itself, which holds a run of zero chunks as one entry; only the results that
/// finished ahead of an earlier chunk wait here: usually a few, but all that finish while one
/// chunk's task is slow (an S3 request retrying), as the slot per chunk they replace did.
#[derive(Default)]
struct InOrder {
    chunks: Chunks,
    issued: usize,
    next: usize,
    /// By position: a chunk, or a run of holes.
    ahead: BTreeMap<usize, Run>,
}

impl InOrder {
    /// The position of the next piece read.
    fn issue(&mut self) -> usize {
        self.issued += 1;
        self.issued - 1
    }

    fn done(&mut self, index: usize, run: Run) {
        if index == self.next {
            self.append(run);
        } else {
            self.ahead.insert(index, run);
        }
        while let Some(run) = self.ahead.remove(&self.next) {
            self.append(run);
        }
    }

    fn append(&mut self, run: Run) {
        self.chunks.push_run(run);
        self.next += 1;
    }

    /// The whole list, or None if a piece issued never finished.
    fn finish(self) -> Option<Chunks> {
        (self.next == self.issued && self.ahead.is_empty()).then_some(self.chunks)
    }
}

fn record(
    done: Result<Result<(usize, ChunkRef, Outcome)>, tokio::task::JoinError>,
    refs: &mut InOrder,
    stats: &mut BackupStats,
) -> Result<()> {
    let (index, r, outcome) = done.map_err(|e| anyhow!("a backup task failed: {e}"))??;
    refs.done(index, r.into());
    match outcome {
        Outcome::Zero => stats.chunks_zero += 1,
        Outcome::Reused => stats.chunks_reused += 1,
        Outcome::New { raw, stored } => {
            stats.chunks_new += 1;
            stats.bytes_new += raw;
            stats.bytes_new_stored += stored;
        }
    }
    Ok(())
}

/// A mapped chunk: `Ok` with its reference when it is zeros or stored already, which is all
/// most chunks of an incremental run are; otherwise `Err` with a copy of its bytes in a pooled
/// buffer, for the path of a chunk that was read. The copy is hashed again there: the id a
/// chunk is stored under must be that of the bytes stored, and a live file may have changed
/// between the map's hash and the copy.
async fn process_mapped(ctx: &Ctx, map: Mapped) -> Result<Result<(ChunkRef, Outcome), Vec<u8>>> {
    let len = map.len() as u32;
    let repo = ctx.repo.clone();
    let (map, id) = cpu::run(move || {
        let id = (!is_zero(&map)).then(|| repo.keys.id.id_of(&map));
        (map, id)
    })
    .await?;
    let stored = |id| ctx.trusted(id) || ctx.seen.lock().map(|s| s.contains(id)).unwrap_or(false);
    let decided = match id {
        None => Ok((ChunkRef::Zero { len }, Outcome::Zero)),
        Some(id) if stored(&id) => Ok((ChunkRef::Data { id, len }, Outcome::Reused)),
        Some(_) => {
            let mut buf = ctx.pool.take();
            buf.clear();
            buf.resize(HEADROOM, 0);
            buf.extend_from_slice(&map);
            Err(buf)
        }
    };
    if map.cut_short() {
        bail!(
            "source {} shrank while it was being read: the bytes past its new end read as zeros",
            ctx.source
        );
    }
    Ok(decided)
}

async fn process(ctx: &Ctx, index: usize, piece: Piece) -> Result<(usize, ChunkRef, Outcome)> {
    let len = u32::try_from(piece.bytes())?;
    let buf = match piece {
        // Recorded by the pipeline itself, never sent to a chunk's task.
        Piece::Holes { .. } => bail!("a run of holes was sent to one chunk's task"),
        Piece::Data(buf) => buf,
        Piece::Mapped(map) => match process_mapped(ctx, map).await? {
            Ok((r, outcome)) => return Ok((index, r, outcome)),
            Err(buf) => buf,
        },
    };
    let repo = ctx.repo.clone();
    let (buf, id) = cpu::run(move || {
        let data = &buf[HEADROOM..];
        let id = (!is_zero(data)).then(|| repo.keys.id.id_of(data));
        (buf, id)
    })
    .await?;
    let Some(id) = id else {
        ctx.pool.give(buf);
        return Ok((index, ChunkRef::Zero { len }, Outcome::Zero));
    };
    let r = ChunkRef::Data { id, len };
    let first_sighting = ctx.seen.lock().map(|mut s| s.insert(id)).unwrap_or(true);
    if ctx.trusted(&id) || !first_sighting {
        ctx.pool.give(buf);
        return Ok((index, r, Outcome::Reused));
    }
    let name = layout::chunk(&id);
    if ctx
        .repo
        .store()
        .exists(&name)
        .await
        .context("checking whether a chunk is stored")?
    {
        ctx.pool.give(buf);
        return Ok((index, r, Outcome::Reused));
    }
    if ctx.known.contains(&id) {
        ctx.healed.fetch_add(1, Ordering::Relaxed);
    }
    let repo = ctx.repo.clone();
    // A chunk stored as it is leaves in its read buffer, which comes back once written.
    let (object, read_buffer) = match cpu::run(move || repo.seal_new_chunk(&id, buf)).await? {
        SealedChunk::Compressed { object, read } => {
            ctx.pool.give(read);
            (object, false)
        }
        SealedChunk::Stored(object) => (object, true),
    };
    let outcome = Outcome::New {
        raw: u64::from(len),
        stored: object.bytes().len() as u64,
    };
    if ctx.dry_run {
        if read_buffer {
            ctx.pool.give(object.into_buffer());
        }
        return Ok((index, r, outcome));
    }
    let written = ctx
        .repo
        .store()
        .put_unsynced_placed(&name, object)
        .await
        .context("storing a new chunk")?;
    if read_buffer {
        ctx.pool.give(written);
    }
    Ok((index, r, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_flight_default_follows_the_cores_and_the_store() {
        let workers = rayon::current_num_threads() + 2;
        assert_eq!(default_in_flight(true), workers.min(MAX_DEFAULT_IN_FLIGHT));
        let remote = default_in_flight(false);
        assert!((DEFAULT_IN_FLIGHT..=MAX_DEFAULT_IN_FLIGHT).contains(&remote));
        assert!(
            remote >= default_in_flight(true),
            "S3 gets at least a directory's"
        );
    }

    #[test]
    fn results_that_finish_out_of_order_are_listed_in_order() {
        let data = |b| ChunkRef::Data {
            id: ChunkId([b; 32]),
            len: 8,
        };
        let zero = ChunkRef::Zero { len: 8 };
        let mut refs = InOrder::default();
        let ids: Vec<usize> = (0..6).map(|_| refs.issue()).collect();
        // A run of holes and a zero chunk finish before the data chunk ahead of them.
        refs.done(ids[2], Run::Zero { len: 8, count: 3 });
        refs.done(ids[3], zero.into());
        refs.done(ids[5], data(2).into());
        refs.done(ids[1], data(1).into());
        let unfinished = InOrder {
            chunks: refs.chunks.clone(),
            issued: refs.issued,
            next: refs.next,
            ahead: refs.ahead.clone(),
        };
        assert!(
            unfinished.finish().is_none(),
            "chunks 0 and 4 never finished"
        );
        refs.done(ids[0], zero.into());
        refs.done(ids[4], data(1).into());
        let chunks = refs.finish().expect("every piece finished");
        let expected = [zero, data(1), zero, zero, zero, zero, data(1), data(2)];
        assert_eq!(chunks.iter().collect::<Vec<_>>(), expected);
        // The four neighbouring zero chunks are one run.
        assert_eq!(chunks.runs().len(), 5);
    }
}
