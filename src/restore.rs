//! Restore: the mirror of backup. Chunks are fetched and opened in parallel (bounded), every
//! one verified against its id, and written positionally (files, devices) or in order
//! (stdout).
//!
//! - A target is checked before the repository is read ([`Target::check`]): a new file may
//!   replace only a regular file, and in place only a regular file or a block device is
//!   written. Anything else (a directory, a character device such as /dev/null, a FIFO, a
//!   socket) is refused, since renaming a file over it would delete it.
//! - A new file is written under a hidden partial name beside it (shortened when the target's
//!   name is long), made sparse (zero chunks, and runs of zeros inside a chunk of at least
//!   [`MIN_HOLE`], are never written), fsynced, and renamed into place only when complete: a
//!   failed restore never leaves a plausible-looking file behind.
//! - In place, the target is read chunk by chunk and only chunks whose content differs are
//!   fetched and written (s3bdbk's restore), so re-syncing a mostly-unchanged device is cheap.
//!   In a regular file that already has holes, the zeros of a chunk that differs become
//!   holes (`fallocate`) where the file system can punch them; a fully allocated file (a
//!   swap file, a preallocated image) and a device get zeros written, so they keep their
//!   allocation. A failure once writing may have begun says that the target is part old,
//!   part new.
//! - A target smaller than the version is refused before anything is written.
//! - With `allow_damage` (disaster recovery), a chunk that is damaged or missing is written as
//!   zeros (left as a hole in a new file) and its byte range recorded in
//!   [`RestoreSummary::damaged`]; the target is completed as usual and the caller reports the
//!   ranges and fails. Only damage and absence are forgiven: a store that cannot be read, a
//!   target that cannot be written, or a manifest that cannot be opened still fail at once.

use crate::chunk_id::ChunkId;
use crate::chunker::is_zero;
use crate::cpu;
use crate::devices;
use crate::direct::{ALIGN, Direct};
use crate::error::Error;
use crate::format::FormatError;
use crate::format::lock::LockMode;
use crate::interrupt;
use crate::layout;
use crate::lock::LockGuard;
use crate::manifest::{ChunkRef, Manifest, Run};
use crate::pool::Pool;
use crate::progress;
use crate::receive::Validating;
use crate::repo::Repo;
use crate::seal::{HEADROOM, PLAIN_ALIGN, Plain, TAILROOM};
use crate::source::{Holes, size_of};
use crate::store::Requests;
use crate::sys::{self, Mapped};
use crate::zfs::ZfsFacts;
use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, FileType, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

#[derive(Debug, Clone)]
pub enum Target {
    /// A new file; `force` replaces an existing one.
    NewFile {
        path: PathBuf,
        force: bool,
    },
    /// An existing file or block device, updated where it differs.
    InPlace(PathBuf),
    Stdout,
}

impl Target {
    /// Refuses a target this restore cannot write, naming it and what it is. [`restore`] calls
    /// it before anything else; the CLI calls it before opening the repository too, so that a
    /// mistyped target is refused before a passphrase is asked for.
    pub fn check(&self) -> Result<()> {
        match self {
            Target::NewFile { path, force } => check_new_file(path, *force),
            Target::InPlace(path) => in_place_target(path).map(drop),
            Target::Stdout => Ok(()),
        }
    }
}

/// The metadata of an in-place target, which must be a regular file or a block device that
/// nothing else is using: no filesystem mounted on the device (under any of its names, on a
/// partition of it, or on a device built on it), no loop device reading the file.
fn in_place_target(path: &Path) -> Result<fs::Metadata> {
    let meta = fs::metadata(path)
        .with_context(|| format!("target {} for an in-place restore", path.display()))?;
    let t = meta.file_type();
    if t.is_block_device() {
        if let Some(m) = devices::mounts_on(meta.rdev()).first() {
            let through = if Path::new(&m.source) == path {
                String::new()
            } else {
                format!(" (through {})", m.source)
            };
            bail!(
                "target {} is mounted at {}{through}: unmount it first; nothing was written",
                path.display(),
                m.at
            );
        }
        return Ok(meta);
    }
    if t.is_file() {
        let loops = devices::loop_devices_backed_by(&meta);
        if !loops.is_empty() {
            bail!(
                "target {} is in use by loop device {}: detach it first (`losetup -d {}`); nothing was written",
                path.display(),
                loops.join(", "),
                loops.join(" ")
            );
        }
        return Ok(meta);
    }
    bail!(
        "target {} is {}: --in-place updates a regular file or a block device{}",
        path.display(),
        kind_of(t),
        stream_hint(t, path)
    )
}

/// What a file is, for a message that says why it cannot be a target.
fn kind_of(t: FileType) -> &'static str {
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else {
        "neither a file nor a device"
    }
}

/// For a target that can take a stream of bytes but not a file: how to give it one.
fn stream_hint(t: FileType, path: &Path) -> String {
    if t.is_char_device() || t.is_fifo() {
        format!(
            "; to write the version into it as a stream, restore to standard output: `- > {}`",
            path.display()
        )
    } else {
        String::new()
    }
}

/// A new file replaces only a regular file (with `force`): renaming over anything else would
/// delete it (a device node, a FIFO) or fail once everything was fetched (a directory).
fn check_new_file(path: &Path, force: bool) -> Result<()> {
    file_name(path)?;
    let missing = match fs::metadata(path) {
        Ok(meta) => {
            let t = meta.file_type();
            if t.is_block_device() {
                bail!(
                    "target {} is a block device: add --in-place to restore onto it",
                    path.display()
                );
            }
            if t.is_dir() {
                bail!(
                    "target {} is a directory: give the path of the file to restore to",
                    path.display()
                );
            }
            if !t.is_file() {
                bail!(
                    "target {} is {}: a restore replaces only a regular file{}",
                    path.display(),
                    kind_of(t),
                    stream_hint(t, path)
                );
            }
            if !force {
                bail!(
                    "target {} already exists: add --in-place to update it (only differing chunks are written) or --force to replace it",
                    path.display()
                );
            }
            return Ok(());
        }
        Err(e) => e,
    };
    // A symbolic link to nothing: the restore would replace the link itself.
    if !force && let Ok(link) = fs::read_link(path) {
        bail!(
            "target {} is a symbolic link to {}, which does not exist: add --force to replace the link, or restore to the path it names",
            path.display(),
            link.display()
        );
    }
    let dir = dir_of(path);
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(meta) => bail!(
            "target {} cannot be created: {} is {}, not a directory",
            path.display(),
            dir.display(),
            kind_of(meta.file_type())
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(e).context(format!(
                "target {} cannot be created: its directory {} does not exist",
                path.display(),
                dir.display()
            ));
        }
        Err(e) => {
            return Err(e).context(format!(
                "target {} cannot be created in {}",
                path.display(),
                dir.display()
            ));
        }
    }
    match missing {
        e if e.kind() == io::ErrorKind::NotFound => Ok(()),
        e if is_too_long(&e) => Err(name_too_long(e, path)),
        e => Err(e).context(format!("target {}", path.display())),
    }
}

fn is_too_long(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENAMETOOLONG)
}

fn name_too_long(e: io::Error, path: &Path) -> anyhow::Error {
    let len = path.file_name().map_or(0, |n| n.len());
    anyhow!(e).context(format!(
        "target {}: its name is {len} bytes, longer than the filesystem of {} allows",
        path.display(),
        dir_of(path).display()
    ))
}

/// The last component of a new file's path (not `..`, not `/`).
fn file_name(path: &Path) -> Result<&OsStr> {
    path.file_name()
        .ok_or_else(|| anyhow!("target {} names no file", path.display()))
}

/// The directory a path's last component is in ("." for a bare name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

pub struct RestoreOptions {
    pub in_flight: usize,
    pub progress: bool,
    /// Write zeros for damaged or missing chunks instead of failing (see the module doc).
    pub allow_damage: bool,
    /// `zfs receive -F`: roll the target back to its newest snapshot before each stream.
    pub zfs_rollback: bool,
}

/// A byte range of the version that could not be restored and holds zeros instead.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedRange {
    /// The chunk object's key in the store.
    pub object: String,
    pub start: u64,
    pub end: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreSummary {
    pub series: String,
    pub version: String,
    pub target: String,
    pub size: u64,
    pub chunks_written: u64,
    pub chunks_unchanged: u64,
    pub chunks_zero: u64,
    /// The length of the chunks written, counting zeros inside them that a file restore
    /// leaves as holes. To stdout every chunk is written out, so zero chunks count here too,
    /// though in `chunks_zero`, not `chunks_written`.
    pub bytes_written: u64,
    pub seconds: f64,
    /// Bytes of the version per second, in MB (10^6 bytes).
    pub mb_per_s: f64,
    /// The process's peak resident memory (see `BackupSummary::peak_rss_bytes`).
    pub peak_rss_bytes: Option<u64>,
    /// Requests this restore made of the store, by type.
    pub requests: Requests,
    /// Ranges written as zeros under `allow_damage`, by offset; empty when all is well.
    pub damaged: Vec<DamagedRange>,
}

#[derive(Default)]
pub(crate) struct Counts {
    pub written: u64,
    pub unchanged: u64,
    pub zero: u64,
    pub bytes: u64,
    pub damaged: Vec<DamagedRange>,
}

pub async fn restore(
    repo: Arc<Repo>,
    series: &str,
    version: &str,
    target: Target,
    opts: RestoreOptions,
) -> Result<RestoreSummary> {
    target.check()?;
    let requests_before = repo.store().requests();
    let lock = LockGuard::acquire(
        &repo,
        LockMode::Shared,
        &format!("restore of {series} {version}"),
    )
    .await?;
    let mut result = run(&repo, series, version, &target, &opts).await;
    lock.release().await;
    // The lock's own requests (and a first conditional-write probe) are part of the cost.
    if let Ok(summary) = &mut result {
        summary.requests = repo.store().requests().since(requests_before);
    }
    result
}

async fn run(
    repo: &Arc<Repo>,
    series: &str,
    version: &str,
    target: &Target,
    opts: &RestoreOptions,
) -> Result<RestoreSummary> {
    let started = Instant::now();
    let requests_before = repo.store().requests();
    let loaded = repo.load_manifest(series, version).await;
    let (m, _) = if opts.allow_damage {
        loaded.context(
            "--allow-damage cannot help here: without the version's manifest there is no map of its chunks to restore by",
        )?
    } else {
        loaded?
    };
    let m = Arc::new(m);
    let pb = progress::bar(
        Some(m.size),
        &format!("restore {series} {version}"),
        opts.progress,
    );
    let (mut counts, shown) = match target {
        Target::NewFile { path, force } => (
            to_new_file(repo, &m, path, *force, opts, &pb).await?,
            path.display().to_string(),
        ),
        Target::InPlace(path) => (
            in_place(repo, &m, path, opts, &pb).await?,
            path.display().to_string(),
        ),
        Target::Stdout => (to_stdout(repo, &m, opts, &pb).await?, "-".to_string()),
    };
    pb.finish_and_clear();
    counts.damaged.sort_by_key(|d| d.start);
    let secs = started.elapsed().as_secs_f64();
    Ok(RestoreSummary {
        series: series.into(),
        version: version.into(),
        target: shown,
        size: m.size,
        chunks_written: counts.written,
        chunks_unchanged: counts.unchanged,
        chunks_zero: counts.zero,
        bytes_written: counts.bytes,
        seconds: secs,
        mb_per_s: if secs > 0.0 {
            m.size as f64 / 1e6 / secs
        } else {
            0.0
        },
        peak_rss_bytes: sys::peak_rss(),
        requests: repo.store().requests().since(requests_before),
        damaged: counts.damaged,
    })
}

/// Fetches a chunk and returns its verified plaintext, in a buffer from `pool` when it was
/// compressed (give it back when written); errors name the chunk, series, version and byte
/// range.
async fn fetch(
    repo: &Arc<Repo>,
    m: &Manifest,
    id: ChunkId,
    offset: u64,
    len: u32,
    pool: &Arc<Pool>,
) -> Result<Plain> {
    let name = layout::chunk(&id);
    let what = format!(
        "chunk {name} (series {:?}, version {}, bytes {offset}..{})",
        m.series,
        m.version,
        offset + u64::from(len)
    );
    // Into a buffer of the pool: from a local directory that is a direct read, which costs
    // neither the kernel's copy nor a fresh buffer's page faults.
    let object = match repo.store().get_reusing(&name, pool.take()).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Err(Error::Missing { what }.into()),
        Err(e) => {
            // The store's error names the object already.
            let range = format!("{offset}..{}", offset + u64::from(len));
            return Err(anyhow!(e).context(format!(
                "fetching a chunk of series {:?}, version {}, bytes {range}",
                m.series, m.version
            )));
        }
    };
    let (r, p) = (repo.clone(), pool.clone());
    let plain = cpu::run(move || {
        let mut spare = p.take();
        let plain = r.open_chunk_reusing(&id, object, &mut spare);
        p.give(spare);
        plain
    })
    .await?
    .map_err(|source| Error::Damaged {
        what: what.clone(),
        source,
    })?;
    if plain.len() != len as usize {
        return Err(Error::Damaged {
            what,
            source: FormatError::Payload(format!("{} bytes, the manifest says {len}", plain.len())),
        }
        .into());
    }
    Ok(plain)
}

/// A chunk's plaintext, or zeros and the range they stand for.
type Fetched = (Plain, Option<DamagedRange>);

/// [`fetch`], except that with `allow` a damaged or missing chunk comes back as zeros and the
/// range it covers; other failures (the store, the network) still fail.
async fn fetch_or_zeros(
    repo: &Arc<Repo>,
    m: &Manifest,
    id: ChunkId,
    offset: u64,
    len: u32,
    allow: bool,
    pool: &Arc<Pool>,
) -> Result<Fetched> {
    let e = match fetch(repo, m, id, offset, len, pool).await {
        Ok(plain) => return Ok((plain, None)),
        Err(e) if !allow => return Err(e),
        Err(e) => e,
    };
    let reason = match e.downcast_ref::<Error>() {
        Some(Error::Missing { .. }) => "missing".to_string(),
        Some(Error::Damaged { source, .. }) => source.to_string(),
        _ => return Err(e),
    };
    let range = DamagedRange {
        object: layout::chunk(&id),
        start: offset,
        end: offset + u64::from(len),
        reason,
    };
    Ok((zeros(pool, len), Some(range)))
}

/// A pool of chunk-sized buffers for a restore of `m`: two for each chunk in flight (its
/// object and its plaintext), plus the ones queued for writing; each with room for the
/// largest object read directly (whole blocks at an aligned address), which leaves room for
/// a plaintext at an aligned address too.
fn chunk_pool(m: &Manifest, opts: &RestoreOptions) -> Arc<Pool> {
    let max_chunk = m.chunks.longest() as usize;
    let max_object = HEADROOM + max_chunk + TAILROOM;
    Arc::new(Pool::new(
        max_object.next_multiple_of(PLAIN_ALIGN) + PLAIN_ALIGN,
        2 * opts.in_flight.max(1) + 3,
    ))
}

/// `len` zeros in a buffer from `pool`.
fn zeros(pool: &Pool, len: u32) -> Plain {
    let mut buf = pool.take();
    buf.clear();
    buf.resize(len as usize, 0);
    Plain::whole(buf)
}

fn join_err(e: tokio::task::JoinError) -> anyhow::Error {
    anyhow!("a restore task failed: {e}")
}

async fn to_new_file(
    repo: &Arc<Repo>,
    m: &Arc<Manifest>,
    path: &Path,
    force: bool,
    opts: &RestoreOptions,
    pb: &indicatif::ProgressBar,
) -> Result<Counts> {
    let (partial, file) = create_partial(path)?;
    // Held (with its lock) until the partial file is renamed or removed: a restore that
    // found it unlocked would take it for a crashed one's leftover.
    let file = Arc::new(file);
    let mut kept = false;
    let result = async {
        // Extending leaves a hole: zero chunks are never written and cost no disk space.
        file.set_len(m.size)
            .with_context(|| format!("sizing {}", partial.display()))?;
        let began = Arc::new(AtomicBool::new(false));
        let counts = write_positional(repo, m, &file, None, opts, pb, &partial, &began).await?;
        file.sync_all()
            .with_context(|| format!("flushing {}", partial.display()))?;
        // Without --force, nothing that appeared at the target while the version was being
        // written is replaced; what was restored is kept for the user to move.
        let renamed = if force {
            fs::rename(&partial, path)
        } else {
            match sys::rename_noreplace(&partial, path) {
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    if fs::symlink_metadata(path).is_ok() {
                        Err(io::ErrorKind::AlreadyExists.into())
                    } else {
                        fs::rename(&partial, path)
                    }
                }
                other => other,
            }
        };
        if let Err(e) = renamed {
            if e.kind() == io::ErrorKind::AlreadyExists {
                kept = true;
                bail!(
                    "target {} appeared while the version was being restored, and is left as it is; the restored version is in {} (move it there yourself, or restore again with --force)",
                    path.display(),
                    partial.display()
                );
            }
            return Err(anyhow!(e).context(format!(
                "renaming {} to {}",
                partial.display(),
                path.display()
            )));
        }
        let dir = dir_of(path);
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("flushing directory {}", dir.display()))?;
        Ok(counts)
    }
    .await;
    match result {
        Err(e) if !kept => {
            let removed = same_file(&file, &partial) && fs::remove_file(&partial).is_ok();
            drop(file);
            // A stop's message already says that the partial file is deleted.
            let stopped = e
                .chain()
                .any(|c| matches!(c.downcast_ref::<Error>(), Some(Error::Interrupted { .. })));
            if removed && !stopped {
                Err(e.context(format!(
                    "nothing was restored to {}; its partial file {} is deleted",
                    path.display(),
                    partial.display()
                )))
            } else {
                Err(e)
            }
        }
        other => other,
    }
}

/// What the hidden name of a file being restored ends with.
const PARTIAL_SUFFIX: &str = ".blockvault-partial";

/// Creates the hidden file a new target is written under until it is complete, beside it:
/// `.NAME.blockvault-partial`, or, where the filesystem finds that too long, a name no longer
/// than the target's own ([`short_partial_name`]), so any name the filesystem accepts works.
fn create_partial(path: &Path) -> Result<(PathBuf, File)> {
    let name = file_name(path)?;
    let mut long = OsString::from(".");
    long.push(name);
    long.push(PARTIAL_SUFFIX);
    let partial = path.with_file_name(long);
    match create_fresh(&partial) {
        Ok(f) => return Ok((partial, f)),
        Err(e) if is_too_long(&e) => {}
        Err(e) => return Err(partial_err(e, path, &partial)),
    }
    let short = path.with_file_name(short_partial_name(name));
    match create_fresh(&short) {
        Ok(f) => Ok((short, f)),
        // A name as long as the target's is refused: so is the target's.
        Err(e) if is_too_long(&e) && name.len() >= SHORT_PARTIAL_MIN => Err(name_too_long(e, path)),
        Err(e) => Err(partial_err(e, path, &short)),
    }
}

/// A new, empty file at `path`, locked (`flock`) for as long as this restore holds it. A
/// file already there is what a crashed restore left and is removed (as is a symbolic link
/// someone planted under that predictable name, which is removed, not followed), unless
/// another restore of the same target holds its lock: then this one stops
/// ([`io::ErrorKind::ResourceBusy`]) instead of pulling the file from under the other.
fn create_fresh(path: &Path) -> io::Result<File> {
    // Each round removes a leftover that another restore may replace with its own.
    for _ in 0..8 {
        match OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(f) => {
                // Between the create and the lock, a restore that took this file for a
                // leftover may have removed it: the name must still be ours once locked.
                return if lock_partial(&f)? && same_file(&f, path) {
                    Ok(f)
                } else {
                    Err(restore_running())
                };
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => remove_leftover(path)?,
            Err(e) => return Err(e),
        }
    }
    Err(restore_running())
}

/// Removes what a crashed restore left at `path`, unless a running restore holds it.
fn remove_leftover(path: &Path) -> io::Result<()> {
    // Non-blocking, so that a FIFO planted there does not wait for a writer.
    // Writable: NFS emulates flock with POSIX locks, whose exclusive kind needs it.
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let held = match opened {
        Ok(f) => {
            if !lock_partial(&f)? {
                return Err(restore_running());
            }
            // The name may have moved on to another restore's file since it was opened.
            if !same_file(&f, path) {
                return Ok(());
            }
            Some(f)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        // A symbolic link (ELOOP), or something that cannot be opened to read: removed as
        // it is, as a leftover always was.
        Err(_) => None,
    };
    let removed = fs::remove_file(path);
    drop(held);
    match removed {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Takes the partial file's lock: false when another restore holds it. A filesystem
/// without locks gives none, as before there were any.
fn lock_partial(f: &File) -> io::Result<bool> {
    match f.try_lock() {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(e))
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOLCK | libc::EOPNOTSUPP | libc::EINVAL | libc::EBADF)
            ) =>
        {
            Ok(true)
        }
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Whether `path` still names the open file `f`.
fn same_file(f: &File, path: &Path) -> bool {
    match (f.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn restore_running() -> io::Error {
    io::Error::new(
        io::ErrorKind::ResourceBusy,
        "another restore of this target is writing it",
    )
}

fn partial_err(e: io::Error, target: &Path, partial: &Path) -> anyhow::Error {
    if e.kind() == io::ErrorKind::ResourceBusy {
        return anyhow!(
            "another restore is writing target {} (its partial file {} is locked): wait for it to finish, or stop it; nothing was written",
            target.display(),
            partial.display()
        );
    }
    anyhow!(e).context(format!(
        "target {} cannot be created: creating its partial file {}",
        target.display(),
        partial.display()
    ))
}

/// The bytes of a short partial name besides the target name's prefix: the dot, a `~`, 16
/// hex digits of hash and the suffix.
const SHORT_PARTIAL_MIN: usize = 1 + 1 + 16 + PARTIAL_SUFFIX.len();

/// `.PREFIX~HASH.blockvault-partial`, exactly as long as `name` when that is at least
/// [`SHORT_PARTIAL_MIN`] bytes: a filesystem that takes the target's name takes this one,
/// which a rename onto the target then needs. The hash of the whole name keeps names that
/// share their first bytes apart; a UTF-8 name is cut between characters (a filesystem may
/// insist on UTF-8), the hash taking up the bytes that leaves over.
fn short_partial_name(name: &OsStr) -> OsString {
    let bytes = name.as_bytes();
    let room = bytes.len().saturating_sub(SHORT_PARTIAL_MIN);
    let cut = match std::str::from_utf8(bytes) {
        Ok(s) => s.floor_char_boundary(room),
        Err(_) => room,
    };
    // A cut moves back at most 3 bytes, well within the 64 hex digits of a hash.
    let hash = blake3::hash(bytes).to_hex();
    let hash = &hash.as_str()[..16 + room - cut];
    let mut short = Vec::with_capacity(SHORT_PARTIAL_MIN + room);
    short.push(b'.');
    short.extend_from_slice(&bytes[..cut]);
    short.push(b'~');
    short.extend_from_slice(hash.as_bytes());
    short.extend_from_slice(PARTIAL_SUFFIX.as_bytes());
    OsString::from_vec(short)
}

async fn in_place(
    repo: &Arc<Repo>,
    m: &Arc<Manifest>,
    path: &Path,
    opts: &RestoreOptions,
    pb: &indicatif::ProgressBar,
) -> Result<Counts> {
    // Again: the target may have changed while the manifest was fetched.
    let is_device = in_place_target(path)?.file_type().is_block_device();
    let mut open = OpenOptions::new();
    open.read(true).write(true);
    if is_device {
        // Exclusive: the kernel refuses (EBUSY) a device that a filesystem, a swap area, a
        // RAID or LVM volume or another exclusive user holds, whatever its name.
        open.custom_flags(libc::O_EXCL);
    }
    let mut file = match open.open(path) {
        Err(e) if is_device && e.raw_os_error() == Some(libc::EBUSY) => bail!(
            "target {} is in use (mounted, a swap area, part of a RAID or LVM volume, or held by another program): stop that first; nothing was written",
            path.display()
        ),
        opened => {
            opened.with_context(|| format!("opening target {} for writing", path.display()))?
        }
    };
    if is_device && sys::block_device_read_only(&file).unwrap_or(false) {
        bail!(
            "target {} is a read-only device (`blockdev --setrw`, or attach a loop device without -r); nothing was written",
            path.display()
        );
    }
    if is_device {
        // What was read from the device before may be stale (see `sys::drop_cached`), and a
        // stale page would pass for a chunk the target already holds.
        let _ = sys::drop_cached(&file);
    }
    let size = size_of(&mut file, path)?;
    if is_device && size < m.size {
        bail!(
            "target {} is {size} bytes, smaller than version {} of series {:?} ({} bytes); nothing was written",
            path.display(),
            m.version,
            m.series,
            m.size
        );
    }
    if is_device && size > m.size {
        eprintln!(
            "note: target {} is {size} bytes, larger than version {} of series {:?}: its last {} bytes (from byte {}) are left as they are",
            path.display(),
            m.version,
            m.series,
            size - m.size,
            m.size
        );
    }
    // A regular file keeps the kind of allocation it has. One that already has holes (a
    // sparse image) gets holes where the version has zeros; a fully allocated one (a swap
    // file, an image preallocated so that it cannot run out of space later) gets zeros
    // written, as a device does. Judged before the file is grown, which adds a hole.
    let zeros =
        if !is_device && matches!(sys::seek_hole(&file, 0), Ok(sys::Seek::At(h)) if h < size) {
            Zeros::Punch
        } else {
            Zeros::Write
        };
    let file = Arc::new(file);
    let began = Arc::new(AtomicBool::new(false));
    let written: Result<Counts> = async {
        // A regular file takes the version's size; growing it is a change, so a failure from
        // here on says the target is part-way.
        if !is_device && size < m.size {
            began.store(true, Ordering::Relaxed);
            file.set_len(m.size)
                .with_context(|| format!("extending {} to {} bytes", path.display(), m.size))?;
        }
        let counts = write_positional(repo, m, &file, Some(zeros), opts, pb, path, &began).await?;
        if !is_device && size > m.size {
            file.set_len(m.size)
                .with_context(|| format!("truncating {} to {} bytes", path.display(), m.size))?;
        }
        file.sync_all()
            .with_context(|| format!("flushing {}", path.display()))?;
        Ok(counts)
    }
    .await;
    // Once a chunk write began, any failure, a stop signal's included, may leave chunks
    // written: the user must know the target is no longer what it was. (Damage written as
    // zeros under `allow_damage` is a finished restore, reported by the caller.)
    written.with_context(|| {
        if began.load(Ordering::Relaxed) {
            format!(
                "restore stopped part-way: {} holds some chunks of the version and the rest as it was; restore in place again to finish",
                path.display()
            )
        } else {
            format!(
                "restore stopped before it wrote anything: {} is as it was",
                path.display()
            )
        }
    })
}

/// Writes every chunk at its offset. With `compare`, reads the target first, skips chunks it
/// already holds, and puts the zeros of the others as the [`Zeros`] given says; without,
/// zeros are skipped (the file is sparse and new). `began` is set before the first chunk is
/// written.
#[allow(clippy::too_many_arguments)]
async fn write_positional(
    repo: &Arc<Repo>,
    m: &Arc<Manifest>,
    file: &Arc<File>,
    compare: Option<Zeros>,
    opts: &RestoreOptions,
    pb: &indicatif::ProgressBar,
    shown: &Path,
    began: &Arc<AtomicBool>,
) -> Result<Counts> {
    let sem = Arc::new(Semaphore::new(opts.in_flight.max(1)));
    // Plaintext, and the target's chunks read for comparison, go into reused buffers.
    let pool = chunk_pool(m, opts);
    // Whole blocks go around the page cache through a second descriptor (`crate::direct`).
    let direct = Direct::new();
    let direct = OpenOptions::new()
        .write(true)
        .open(shown)
        .ok()
        .filter(|f| direct.enable(f))
        .map(|f| (f, direct));
    let zeros = compare.unwrap_or(Zeros::Leave);
    let dest = Arc::new(Dest {
        file: file.clone(),
        direct,
        began: began.clone(),
        zeros,
        punch_works: AtomicBool::new(true),
    });
    let mut tasks: JoinSet<Result<Wrote>> = JoinSet::new();
    let mut counts = Counts::default();
    let tally =
        |counts: &mut Counts, r: Result<Result<Wrote>, tokio::task::JoinError>| -> Result<()> {
            let (len, written, damaged) = r.map_err(join_err)??;
            pb.inc(u64::from(len));
            if let Some(d) = damaged {
                // Neither written nor unchanged: listed as damaged instead.
                counts.damaged.push(d);
                return Ok(());
            }
            match written {
                None => counts.zero += 1,
                Some(true) => {
                    counts.written += 1;
                    counts.bytes += u64::from(len);
                }
                Some(false) => counts.unchanged += 1,
            }
            Ok(())
        };
    let shown = shown.display().to_string();
    // In place, a zero chunk over a hole of the target is there already, unread.
    let mut holes = compare.and_then(|_| Holes::new(file).ok());
    for (at, run) in m.run_offsets() {
        // A new file is a hole there already: a run of zero chunks costs nothing.
        if let (Run::Zero { len, count }, None) = (run, compare) {
            counts.zero += count;
            pb.inc(u64::from(len).saturating_mul(count));
            continue;
        }
        let (c, n) = run.parts();
        for offset in (0..n).map(|i| at + i * u64::from(c.len())) {
            // In place (the only way a zero chunk gets here), one over a hole of the target.
            if let ChunkRef::Zero { len } = c
                && holes
                    .as_mut()
                    .is_some_and(|h| h.is_hole(offset, offset + u64::from(len)))
            {
                counts.unchanged += 1;
                pb.inc(u64::from(len));
                continue;
            }
            // In place, `in_place` says what a stop leaves, as for any other failure.
            interrupt::check().map_err(|e| match compare {
                None => anyhow!(e).context(format!("restore stopped; {shown} is deleted")),
                Some(_) => anyhow!(e),
            })?;
            let permit = sem.clone().acquire_owned().await?;
            while let Some(done) = tasks.try_join_next() {
                tally(&mut counts, done)?;
            }
            let (repo, m, dest, shown) = (repo.clone(), m.clone(), dest.clone(), shown.clone());
            let pool = pool.clone();
            let allow = opts.allow_damage;
            tasks.spawn(async move {
                let compare = compare.is_some();
                let r = write_one(&repo, &m, &dest, c, offset, compare, &pool, allow, &shown).await;
                drop(permit);
                r
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        tally(&mut counts, done)?;
    }
    Ok(counts)
}

/// What [`write_one`] did: the chunk length; None (a zero chunk left as a hole), Some(true)
/// (written) or Some(false) (already there); and the range written as zeros, if damaged.
type Wrote = (u32, Option<bool>, Option<DamagedRange>);

/// Zeros a restore leaves as holes in a regular file instead of writing them: runs of whole
/// [`ALIGN`] blocks (the file system's block on ext4, XFS, btrfs), aligned in the target, at
/// least this long. Shorter runs are written: each hole splits a chunk's one write in two and
/// the file's extent in two, for little space. On the bench image (2 GiB ext4, 345 data
/// chunks) runs of 4 KiB and more hold 27.7 MiB, runs of 64 KiB and more 27.7 MiB in 14 runs,
/// runs of whole aligned 1 MiB blocks 20.0 MiB.
const MIN_HOLE: usize = 64 << 10;

/// How the version's zeros reach the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zeros {
    /// A new file, which is a hole wherever nothing is written.
    Leave,
    /// An existing regular file that is sparse already: its old bytes are deallocated where
    /// the file system can (`fallocate`), and overwritten with zeros where it cannot.
    Punch,
    /// A block device (a discard need not read back as zeros), or a fully allocated file
    /// (which would lose its preallocation): zeros are written.
    Write,
}

/// Where [`write_one`] writes and how.
struct Dest {
    file: Arc<File>,
    /// The same file opened for direct writes, where that works.
    direct: Option<(File, Direct)>,
    /// Set before anything is written.
    began: Arc<AtomicBool>,
    zeros: Zeros,
    /// False once the file system refused to punch a hole: zeros are written from then on.
    punch_works: AtomicBool,
}

impl Dest {
    /// Writes `data` at `offset`, leaving or punching holes for its long zero runs
    /// ([`MIN_HOLE`]) as [`Dest::zeros`] says. `direct`: the chunk lies in whole aligned
    /// blocks, and so does every piece of it between holes.
    fn put(&self, data: &[u8], offset: u64, direct: bool) -> io::Result<()> {
        let mut at = 0;
        let mut cached = false;
        if self.zeros != Zeros::Write {
            for hole in zero_runs(data, offset) {
                cached |= self.write(&data[at..hole.start], offset + at as u64, direct)?;
                if self.zeros == Zeros::Punch {
                    cached |= self.punch(&data[hole.clone()], offset + hole.start as u64)?;
                }
                at = hole.end;
            }
        }
        cached |= self.write(&data[at..], offset + at as u64, direct)?;
        if cached {
            // Left to itself the kernel writes back only when the final fsync asks, and the
            // disk idles while we fetch and decrypt; starting now overlaps the two. A hint:
            // failing costs nothing but the overlap.
            let _ = sys::start_writeback(&self.file, offset, data.len() as u64);
        }
        Ok(())
    }

    /// Writes `data` at `offset`, directly where allowed and working; true when it went
    /// through the page cache.
    fn write(&self, data: &[u8], offset: u64, direct: bool) -> io::Result<bool> {
        if data.is_empty() {
            return Ok(false);
        }
        if let Some((df, d)) = self.direct.as_ref().filter(|_| direct)
            && d.works()
        {
            // On an error direct writes are off from now on, and this piece goes through the
            // page cache, which reports a failure that is not about direct I/O.
            if d.write_at(df, data, offset).is_ok() {
                return Ok(false);
            }
        }
        self.file.write_all_at(data, offset)?;
        Ok(true)
    }

    /// Replaces the target's bytes at `offset` by `zeros` (that many zeros), as a hole where
    /// the file system can punch one; true when zeros went through the page cache instead.
    fn punch(&self, zeros: &[u8], offset: u64) -> io::Result<bool> {
        if self.punch_works.load(Ordering::Relaxed) {
            match sys::punch_hole(&self.file, offset, zeros.len() as u64) {
                Ok(()) => return Ok(false),
                Err(e) if sys::is_unsupported(&e) => {
                    self.punch_works.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        // Through the page cache: the file system that refuses holes may refuse direct I/O
        // too, and this is rare enough not to matter.
        self.file.write_all_at(zeros, offset)?;
        Ok(true)
    }
}

/// The runs of `data` (which lies at `offset` of the target) that [`Dest::put`] leaves as
/// holes: whole [`ALIGN`] blocks of the target, all zeros, at least [`MIN_HOLE`] bytes
/// together; as ranges of `data`, in order.
fn zero_runs(data: &[u8], offset: u64) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let first = (offset.next_multiple_of(ALIGN as u64) - offset) as usize;
    let blocks = data.len().saturating_sub(first) / ALIGN;
    let block = move |i: usize| &data[first + i * ALIGN..first + (i + 1) * ALIGN];
    // Data nearly always shows in a block's first bytes: only a block that begins with zeros
    // is read whole, so a chunk without zero runs costs a glance at each block.
    let zero = move |i: usize| is_zero(&block(i)[..64]) && is_zero(block(i));
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < blocks {
            if !zero(i) {
                i += 1;
                continue;
            }
            let start = i;
            while i < blocks && zero(i) {
                i += 1;
            }
            if (i - start) * ALIGN >= MIN_HOLE {
                return Some(first + start * ALIGN..first + i * ALIGN);
            }
        }
        None
    })
}

#[allow(clippy::too_many_arguments)]
async fn write_one(
    repo: &Arc<Repo>,
    m: &Manifest,
    dest: &Arc<Dest>,
    c: ChunkRef,
    offset: u64,
    compare: bool,
    pool: &Arc<Pool>,
    allow_damage: bool,
    shown: &str,
) -> Result<Wrote> {
    let len = c.len();
    if compare {
        let f = dest.file.clone();
        let keys = repo.keys.clone();
        let pool = pool.clone();
        let same = tokio::task::spawn_blocking(move || -> io::Result<bool> {
            let holds = |bytes: &[u8]| match c {
                ChunkRef::Zero { .. } => is_zero(bytes),
                ChunkRef::Data { id, .. } => keys.id.id_of(bytes) == id,
            };
            // Mapped, the target's bytes are hashed where they lie in the page cache, as an
            // incremental backup's are (`crate::sys::Mapped`), unless the chunk is small.
            if let Some(map) = Mapped::chunk(&f, offset, len as usize) {
                let same = holds(&map);
                if map.cut_short() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the target shrank while it was being read",
                    ));
                }
                return Ok(same);
            }
            let mut buf = pool.take();
            buf.resize(len as usize, 0);
            f.read_exact_at(&mut buf, offset)?;
            let same = holds(&buf);
            pool.give(buf);
            Ok(same)
        })
        .await
        .map_err(join_err)?
        .with_context(|| format!("reading target {shown} at byte {offset}"))?;
        if same {
            return Ok((len, Some(false), None));
        }
    }
    let (data, damaged) = match c {
        ChunkRef::Zero { len } => (zeros(pool, len), None),
        ChunkRef::Data { id, len } => {
            fetch_or_zeros(repo, m, id, offset, len, allow_damage, pool).await?
        }
    };
    // A new file is a hole there already; in place, the old bytes must give way to zeros.
    if damaged.is_some() && !compare {
        pool.give(data.into_buffer());
        return Ok((len, None, damaged));
    }
    dest.began.store(true, Ordering::Relaxed);
    // Only whole blocks go direct: a chunk that shares a block with another goes through the
    // page cache, which merges the two.
    let direct = dest.direct.is_some()
        && offset.is_multiple_of(ALIGN as u64)
        && data.len().is_multiple_of(ALIGN);
    let d = dest.clone();
    let data = tokio::task::spawn_blocking(move || d.put(&data, offset, direct).map(|()| data))
        .await
        .map_err(join_err)?
        .with_context(|| format!("writing target {shown} at byte {offset}"))?;
    pool.give(data.into_buffer());
    Ok((
        len,
        if compare || matches!(c, ChunkRef::Data { .. }) {
            Some(true)
        } else {
            None
        },
        damaged,
    ))
}

async fn to_stdout(
    repo: &Arc<Repo>,
    m: &Arc<Manifest>,
    opts: &RestoreOptions,
    pb: &indicatif::ProgressBar,
) -> Result<Counts> {
    // A stored ZFS stream is validated again on its way out, as `--zfs-receive` does: bytes
    // that would make it invalid are not written.
    let (outcome, written) = if matches!(ZfsFacts::from_extra(&m.extra), Ok(Some(_))) {
        let what = format!("version {} of series {:?}", m.version, m.series);
        to_writer(repo, m, opts, pb, Validating::new(io::stdout(), what)).await
    } else {
        to_writer(repo, m, opts, pb, io::stdout()).await
    };
    outcome?;
    match written {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            // Not a failure of ours (`| head` means it), but a reader that died halfway
            // (`| psql` on an error) would otherwise go unnoticed.
            eprintln!(
                "note: the reader of standard output closed it before the end of version {} of series {:?}; the rest was not written",
                m.version, m.series
            );
            Err(Error::OutputClosed.into())
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(Error::Damaged {
            what: format!("version {} of series {:?}", m.version, m.series),
            source: FormatError::Payload(e.to_string()),
        }
        .into()),
        Err(e) => Err(anyhow!(e).context("writing to standard output")),
        Ok(counts) => Ok(counts),
    }
}

/// Writes the version in order to `out`. Returns the outcome of fetching (damage, missing
/// chunks) and, separately, of writing, so that callers can tell a reader that went away
/// from a repository that failed.
pub(crate) async fn to_writer(
    repo: &Arc<Repo>,
    m: &Arc<Manifest>,
    opts: &RestoreOptions,
    pb: &indicatif::ProgressBar,
    out: impl Write + Send + 'static,
) -> (Result<()>, io::Result<Counts>) {
    // A writer thread keeps blocking writes to a slow pipe off the async workers.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Plain>(2);
    let pool = chunk_pool(m, opts);
    let written_pool = pool.clone();
    let writer = std::thread::spawn(move || -> io::Result<()> {
        let mut out = out;
        while let Some(plain) = rx.blocking_recv() {
            out.write_all(&plain)?;
            written_pool.give(plain.into_buffer());
        }
        out.flush()
    });
    let mut counts = Counts::default();
    // Each with whether it is a zero chunk, for the counts.
    let mut queue: VecDeque<(bool, tokio::task::JoinHandle<Result<Fetched>>)> = VecDeque::new();
    let mut chunks = m.offsets();
    let outcome: Result<()> = async {
        loop {
            while queue.len() < opts.in_flight.max(1) {
                let Some((offset, c)) = chunks.next() else {
                    break;
                };
                let (repo, m, pool) = (repo.clone(), m.clone(), pool.clone());
                let allow = opts.allow_damage;
                let zero = matches!(c, ChunkRef::Zero { .. });
                queue.push_back((
                    zero,
                    tokio::spawn(async move {
                        match c {
                            ChunkRef::Zero { len } => Ok((zeros(&pool, len), None)),
                            ChunkRef::Data { id, len } => {
                                fetch_or_zeros(&repo, &m, id, offset, len, allow, &pool).await
                            }
                        }
                    }),
                ));
            }
            let Some((zero, next)) = queue.pop_front() else {
                break;
            };
            let stopped =
                |e: Error| anyhow!(e).context("restore stopped; the output is incomplete");
            interrupt::check().map_err(stopped)?;
            let (data, damaged) = next.await.map_err(join_err)??;
            let len = data.len() as u64;
            // A reader that stalls must not keep a stop waiting.
            let sent = tokio::select! {
                biased;
                sent = tx.send(data) => sent,
                e = interrupt::asked() => return Err(stopped(e)),
            };
            if sent.is_err() {
                break;
            }
            match damaged {
                Some(d) => counts.damaged.push(d),
                None if zero => counts.zero += 1,
                None => counts.written += 1,
            }
            counts.bytes += len;
            pb.inc(len);
        }
        Ok(())
    }
    .await;
    drop(tx);
    for (_, h) in queue {
        h.abort();
    }
    // The writer may be stuck on a reader that stalls, with the last chunks (or all of a small
    // version) in hand: a stop does not wait for it, and it goes with the process.
    let abandoned = || io::Error::other("abandoned after a stop signal");
    let joined = tokio::task::spawn_blocking(move || writer.join());
    let written = tokio::select! {
        biased;
        joined = joined => match joined {
            Ok(Ok(r)) => r.map(|()| counts),
            _ => Err(io::Error::other("the output thread panicked")),
        },
        e = interrupt::asked() => {
            let stopped = anyhow!(e).context("restore stopped; the output is incomplete");
            return (outcome.and(Err(stopped)), Err(abandoned()));
        }
    };
    (outcome, written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(name: &[u8]) -> Vec<u8> {
        short_partial_name(OsStr::from_bytes(name)).into_vec()
    }

    /// The holes [`zero_runs`] finds in `data` placed at `offset`, as offsets of the target.
    fn holes(data: &[u8], offset: u64) -> Vec<(u64, u64)> {
        zero_runs(data, offset)
            .map(|r| (offset + r.start as u64, offset + r.end as u64))
            .collect()
    }

    /// Where the file system cannot punch holes, zeros are written instead: either way the
    /// target reads back as the version, never as the bytes it held before.
    #[test]
    fn zeros_replace_old_bytes_whether_or_not_holes_can_be_punched() {
        use std::os::unix::fs::FileExt;
        let mut data = vec![0u8; 4 * MIN_HOLE];
        data[..ALIGN].fill(7);
        data[2 * MIN_HOLE..2 * MIN_HOLE + 10].fill(9);
        for (zeros, punch_works) in [
            (Zeros::Punch, false),
            (Zeros::Punch, true),
            (Zeros::Write, true),
        ] {
            let file = tempfile::tempfile().expect("a temporary file");
            file.write_all_at(&vec![0xAA; data.len() + 100], 0)
                .expect("old bytes");
            let dest = Dest {
                file: Arc::new(file),
                direct: None,
                began: Arc::new(AtomicBool::new(true)),
                zeros,
                punch_works: AtomicBool::new(punch_works),
            };
            dest.put(&data, 100, false).expect("writing");
            let mut back = vec![0u8; data.len()];
            dest.file
                .read_exact_at(&mut back, 100)
                .expect("reading back");
            assert!(back == data, "{zeros:?}, punch works: {punch_works}");
            let mut head = [0u8; 100];
            dest.file.read_exact_at(&mut head, 0).expect("reading back");
            assert_eq!(head, [0xAA; 100], "bytes before the chunk are left alone");
        }
    }

    #[test]
    fn zero_runs_are_whole_aligned_blocks_of_at_least_min_hole() {
        let (a, min) = (ALIGN as u64, MIN_HOLE as u64);
        let mut data = vec![0u8; 4 << 20];
        assert_eq!(holes(&data, 0), [(0, 4 << 20)]);
        // A byte of data splits a run; what is left on either side counts if long enough.
        data[MIN_HOLE + 5] = 1;
        data[2 * MIN_HOLE + 5] = 1;
        assert_eq!(
            holes(&data, 0),
            [(0, min), (min + min + a, 4 << 20)],
            "the run between the two bytes is one block short of a hole"
        );
        // A data byte in a block's first bytes, and one only at its end, both count.
        data[40 * ALIGN + 3] = 1;
        data[(4 << 20) - 1] = 1;
        assert_eq!(holes(&data, 0), [(0, min), (41 * a, (4 << 20) - a)]);
        // Placed off a block boundary, a run starts and ends at the target's blocks, and the
        // partial blocks at either end are written.
        let zeros = vec![0u8; 2 * MIN_HOLE];
        assert_eq!(holes(&zeros, 100), [(a, 2 * min)]);
        assert!(holes(&zeros[..MIN_HOLE], 100).is_empty(), "one block short");
        assert!(holes(&[], 0).is_empty());
        assert!(holes(&[0; 100], 0).is_empty());
    }

    #[test]
    fn a_short_partial_name_is_as_long_as_the_target_name_hidden_and_marked() {
        let name = vec![b'y'; 250];
        let p = short(&name);
        assert_eq!(p.len(), 250);
        assert!(p.starts_with(b".yyy") && p.ends_with(PARTIAL_SUFFIX.as_bytes()));
        // The longest name Linux takes still fits its own partial file.
        assert_eq!(short(&[b'y'; 255]).len(), 255);
    }

    #[test]
    fn short_partial_names_of_names_with_a_common_start_differ() {
        let mut a = vec![b'x'; 250];
        let mut b = a.clone();
        a[249] = b'a';
        b[249] = b'b';
        assert_ne!(short(&a), short(&b));
        assert_eq!(
            short(&a),
            short(&a),
            "the same target, the same partial file"
        );
    }

    #[test]
    fn a_short_partial_name_cuts_utf8_between_characters() {
        // 'é' is two bytes: an odd cut would split one.
        let name = "é".repeat(125);
        let p = short(name.as_bytes());
        assert_eq!(p.len(), name.len());
        assert!(std::str::from_utf8(&p).is_ok(), "{p:?}");
        // Not UTF-8 to begin with: cut anywhere, same length.
        let raw = vec![0xff; 250];
        assert_eq!(short(&raw).len(), 250);
    }
}
