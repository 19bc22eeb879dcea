//! The few Linux calls std does not offer, as safe functions: finding data and holes (`lseek`
//! with `SEEK_DATA`/`SEEK_HOLE`) and punching holes (`fallocate`), starting write-back early
//! (`sync_file_range`), dropping a block device's cached pages (`posix_fadvise`) and asking
//! whether it is read-only (`ioctl`), switching direct I/O on an open file and growing a pipe
//! (`fcntl`), the process's peak memory, a bound on glibc's malloc arenas, zeroed memory for
//! Argon2id ([`KdfMemory`]), and read-only maps of a file ([`Mapped`], with the `SIGBUS`
//! handler that makes them safe against a file that shrinks). Every `unsafe` block of the
//! crate is here; each passes only a descriptor that a borrowed `File` keeps open for the
//! call, plain integers, or memory of a map that this module owns.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Where data or a hole begins at or after `offset`, from `lseek`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    At(u64),
    /// `SEEK_DATA` past the last data: the rest of the file is a hole.
    NoMoreData,
}

fn lseek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Seek> {
    let offset = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset beyond off_t"))?;
    // SAFETY: the descriptor belongs to `file`, which outlives the call; lseek touches no memory.
    let r = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if r >= 0 {
        return Ok(Seek::At(r as u64));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENXIO) {
        Ok(Seek::NoMoreData)
    } else {
        Err(e)
    }
}

/// The first byte of data at or after `offset`. Moves the file offset, which positional reads
/// (`read_at`) ignore.
pub fn seek_data(file: &File, offset: u64) -> io::Result<Seek> {
    lseek(file, offset, libc::SEEK_DATA)
}

/// The first byte of a hole at or after `offset` (the end of the file counts as one).
pub fn seek_hole(file: &File, offset: u64) -> io::Result<Seek> {
    lseek(file, offset, libc::SEEK_HOLE)
}

/// Drops the clean pages of `file` from the page cache, so later reads come from the disk. A
/// block device needs this before it is read: a filesystem mounted on it writes its files
/// around the device's own cache, and pages read from the device before (by an earlier
/// backup) would otherwise be read again as they were.
pub fn drop_cached(file: &File) -> io::Result<()> {
    // SAFETY: the descriptor belongs to `file`, which outlives the call; no memory is passed.
    let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// The file a loop device reads, as (device, inode) of that file (`LOOP_GET_STATUS64`);
/// `None` when the device is bound to nothing (ENXIO).
pub fn loop_backing(dev: &File) -> io::Result<Option<(u64, u64)>> {
    // struct loop_info64 (linux/loop.h): 232 bytes, the backing file's dev and inode first.
    #[repr(C)]
    struct LoopInfo64 {
        lo_device: u64,
        lo_inode: u64,
        rest: [u8; 216],
    }
    const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
    let mut info = LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        rest: [0; 216],
    };
    // SAFETY: the descriptor belongs to `dev`, which outlives the call; the kernel writes
    // one struct loop_info64 (232 bytes, the size of `info`) into `info` on this frame.
    let r = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_GET_STATUS64 as _,
            &mut info as *mut LoopInfo64,
        )
    };
    if r == 0 {
        return Ok(Some((info.lo_device, info.lo_inode)));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENXIO) {
        Ok(None)
    } else {
        Err(e)
    }
}

/// Whether a process `pid` exists in this process's pid namespace (`kill(pid, 0)`): one that
/// exists but belongs to someone else answers EPERM. Unlike a look in `/proc`, this asks the
/// namespace the caller is in, whichever `/proc` is mounted.
pub fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        // 0 and negative numbers name process groups, not a process.
        return false;
    }
    // SAFETY: signal 0 delivers nothing; only integers pass.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// When the process `pid` started, in Unix seconds (rounded down), from /proc: its start in
/// clock ticks after boot, and the boot time. None when it is gone or /proc says otherwise.
pub fn process_started(pid: u32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: fields are counted after its end.
    let after = stat.rsplit_once(')')?.1;
    // Field 22 of the whole line is the 20th after the name (state is the 1st).
    let ticks: i64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let boot: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf only reads a constant.
    let hz = i64::from(u32::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?);
    (hz > 0).then(|| boot + ticks / hz)
}

/// Whether the block device open as `file` is read-only (`BLKROGET`): a write to it fails
/// however it was opened.
pub fn block_device_read_only(file: &File) -> io::Result<bool> {
    // _IO(0x12, 94), from linux/fs.h.
    const BLKROGET: libc::c_ulong = 0x125e;
    let mut ro: libc::c_int = 0;
    // SAFETY: the descriptor belongs to `file`, which outlives the call; BLKROGET writes one
    // int, to `ro`, which lives on this frame.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKROGET as _, &mut ro as *mut libc::c_int) };
    if r == 0 {
        Ok(ro != 0)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` back to the disk, without waiting:
/// a later fsync then finds most of the work done, and the disk works while we compute. Only
/// a hint: it promises no durability, and errors are for the caller to ignore or not.
pub fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return Ok(());
    };
    // SAFETY: the descriptor belongs to `file`, which outlives the call; no memory is passed.
    let r = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Deallocates `len` bytes at `offset` of a regular file (`fallocate` with
/// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`): they read back as zeros and take no disk
/// space, and the file keeps its size. A file system that cannot do it answers `EOPNOTSUPP`
/// (or, on a kernel without `fallocate`, `ENOSYS`), which [`is_unsupported`] tells apart.
pub fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "range beyond off64_t",
        ));
    };
    // SAFETY: the descriptor belongs to `file`, which outlives the call; no memory is passed.
    let r = unsafe {
        libc::fallocate64(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether an error of [`punch_hole`] says the file system cannot punch holes at all.
pub fn is_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS))
}

/// Switches `O_DIRECT` on or off for an open file: its writes then go from our buffer to the
/// device without passing through the page cache. They must then start at and span whole
/// blocks, from memory aligned to one. Fails with `EINVAL` where the file system cannot do it
/// (tmpfs before Linux 6.6, for one).
pub fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: the descriptor belongs to `file`, which outlives both calls; only integers pass.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Renames `from` to `to` unless `to` exists (`renameat2` with `RENAME_NOREPLACE`): a check
/// before a rename leaves a gap in which a file can appear and be replaced unasked.
/// `Unsupported` where the filesystem cannot do it.
pub fn rename_noreplace(from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &std::path::Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both are NUL-terminated strings that outlive the call; renameat2 only reads them.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS) => Err(io::Error::new(io::ErrorKind::Unsupported, e)),
        _ => Err(e),
    }
}

/// Kills process group `pgid` (a command source started as the leader of its own group):
/// the shell and whatever it started, so a command that hangs cannot hold its output pipe,
/// and with it the backup, open. Errors (the group is gone already) do not matter.
pub fn kill_group(pgid: u32) {
    if let Ok(pgid) = libc::pid_t::try_from(pgid)
        && pgid > 0
    {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is shared.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

/// Kills process `pid` (a command source's shell, which has no group of its own) and every
/// process below it: killing the shell alone would leave what it started (the members of a
/// pipeline, a background job) running, and one that writes nothing never meets the closed
/// pipe. Each process found is stopped (SIGSTOP) before its children are looked for, so none
/// can start another behind the search; then all are killed. A process that a double fork
/// moved away from the tree is out of reach, as it is for a shell's own job control.
/// Errors (a process gone meanwhile) do not matter.
pub fn kill_tree(pid: u32) {
    let Ok(root) = libc::pid_t::try_from(pid) else {
        return;
    };
    if root <= 0 {
        return;
    }
    let signal = |p: libc::pid_t, sig: libc::c_int| {
        // SAFETY: kill(2) with a positive pid signals that one process; no memory is shared.
        unsafe { libc::kill(p, sig) };
    };
    let mut found = vec![root];
    signal(root, libc::SIGSTOP);
    // This kernel may lack /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN), so parents
    // come from every process's stat; a round that finds nobody new ends the search.
    let mut stopped_from = 0;
    loop {
        // A stop takes effect when the process next runs: one inside fork() finishes it
        // first, so look for children only once each process found is stopped (or gone).
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
        while found[stopped_from..].iter().any(|p| !halted(*p))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        stopped_from = found.len();
        for (p, parent) in parents() {
            if found.contains(&parent) && !found.contains(&p) {
                signal(p, libc::SIGSTOP);
                found.push(p);
            }
        }
        if found.len() == stopped_from {
            break;
        }
    }
    for p in found {
        signal(p, libc::SIGKILL);
    }
}

/// Whether process `pid` is stopped, a zombie, or gone: it can start nothing more.
fn halted(pid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_none_or(|state| matches!(state, "T" | "t" | "Z" | "X"))
    })
}

/// Every process's (pid, parent pid), from /proc; those that vanish while read are skipped.
fn parents() -> Vec<(libc::pid_t, libc::pid_t)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid: libc::pid_t = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so parse after
        // the last ')'.
        let rest = &stat[stat.rfind(')')? + 1..];
        let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
        Some((pid, ppid))
    })
    .collect()
}

/// Process groups of running command sources (0: a free slot), for [`on_stop_signal`], which
/// may take no lock.
const GROUP_SLOTS: usize = 16;
static GROUPS: [std::sync::atomic::AtomicI32; GROUP_SLOTS] =
    [const { std::sync::atomic::AtomicI32::new(0) }; GROUP_SLOTS];

/// A command source's process group, registered so that an interrupt, a quit, a hangup or a
/// termination of blockvault reaches it too (as SIGKILL when blockvault stops gracefully:
/// [`stop_gracefully`]). The group no longer gets the terminal's Ctrl-C by itself (it is not
/// the terminal's foreground group), and a `pg_dump` left waiting on a lock after blockvault
/// died would hold that lock. Unregistered when dropped.
pub struct ForwardSignals(usize);

impl ForwardSignals {
    /// `None` when every slot is taken (the group then gets only SIGPIPE, at its next write).
    pub fn new(pgid: u32) -> Option<ForwardSignals> {
        use std::sync::atomic::Ordering::{AcqRel, Relaxed};
        let pgid = libc::pid_t::try_from(pgid).ok().filter(|p| *p > 0)?;
        install_stop_handlers();
        GROUPS
            .iter()
            .position(|slot| slot.compare_exchange(0, pgid, AcqRel, Relaxed).is_ok())
            .map(ForwardSignals)
    }
}

impl Drop for ForwardSignals {
    fn drop(&mut self) {
        GROUPS[self.0].store(0, std::sync::atomic::Ordering::Release);
    }
}

const STOP_SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

fn install_stop_handlers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for sig in STOP_SIGNALS {
            // SAFETY: a zeroed sigaction is a valid value to be overwritten; sigaction writes
            // the current action into it and changes nothing when the new action is null.
            let mut before: libc::sigaction = unsafe { std::mem::zeroed() };
            if unsafe { libc::sigaction(sig, std::ptr::null(), &mut before) } != 0 {
                continue;
            }
            // An ignored signal (nohup's SIGHUP) stays ignored, and a handler someone else
            // installed stays theirs.
            if before.sa_sigaction != libc::SIG_DFL {
                continue;
            }
            // SAFETY: as above; the handler is an `extern "C"` function taking the signal
            // number, and it only makes async-signal-safe calls (kill, write, signal, raise)
            // and touches only lock-free atomics.
            let mut ours: libc::sigaction = unsafe { std::mem::zeroed() };
            ours.sa_sigaction = on_stop_signal as *const () as usize;
            // A read or write that the handler interrupts goes on rather than failing with
            // EINTR: the work stops at its own checks.
            ours.sa_flags = libc::SA_RESTART;
            unsafe { libc::sigemptyset(&mut ours.sa_mask) };
            unsafe { libc::sigaction(sig, &ours, std::ptr::null_mut()) };
        }
    });
}

/// Whether a stop signal only asks the work in progress to stop ([`stop_gracefully`]).
static GRACEFUL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// The stop signal that asked it (0: none yet).
static STOP_ASKED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// From now on the first SIGINT, SIGTERM or SIGHUP does not end the process at once: it is
/// recorded ([`stop_asked`]), the command sources' groups are killed, and the work in
/// progress stops at its next check, cleaning up as after any failure (its lock removed, a
/// partial restore target deleted). A second one ends the process at once, as SIGQUIT always
/// does. Killed at once, blockvault would leave its lock behind: other hosts would then wait
/// for it to go stale (30 minutes) before a gc, and `systemctl stop` sends SIGTERM.
pub fn stop_gracefully() {
    GRACEFUL.store(true, std::sync::atomic::Ordering::Release);
    install_stop_handlers();
}

/// The signal that asked the work to stop, if one did.
pub fn stop_asked() -> Option<i32> {
    match STOP_ASKED.load(std::sync::atomic::Ordering::Acquire) {
        0 => None,
        sig => Some(sig),
    }
}

/// The usual name of a stop signal, for messages.
pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        n => format!("signal {n}"),
    }
}

/// The first stop signal after [`stop_gracefully`] is recorded, and kills every registered
/// group: the run they feed is being abandoned, and the signal itself may not end them all (a
/// shell's background jobs ignore SIGINT), while a group is only registered until its leader
/// is reaped, so its id names no one else's. Otherwise the handler passes the signal on to
/// the groups and does what would have happened without it: the default action is put back
/// and the signal raised again, which ends the process as soon as this handler returns (the
/// signal is blocked until then).
extern "C" fn on_stop_signal(sig: libc::c_int) {
    use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
    let to_groups = |what: libc::c_int| {
        for slot in &GROUPS {
            let pgid = slot.load(Acquire);
            if pgid > 0 {
                // SAFETY: kill(2) is async-signal-safe and shares no memory.
                unsafe { libc::kill(-pgid, what) };
            }
        }
    };
    if sig != libc::SIGQUIT
        && GRACEFUL.load(Acquire)
        && STOP_ASKED.compare_exchange(0, sig, AcqRel, Relaxed).is_ok()
    {
        // The interrupted code may be about to read errno, which kill and write can set.
        // SAFETY: errno is this thread's own; reading and writing it is async-signal-safe.
        let errno = unsafe { *libc::__errno_location() };
        to_groups(libc::SIGKILL);
        let note: &[u8] = b"\nblockvault: stopping and cleaning up; a second interrupt ends it at once, leaving its lock behind\n";
        // SAFETY: write(2) is async-signal-safe; the bytes are a static string.
        let _ = unsafe { libc::write(2, note.as_ptr().cast(), note.len()) };
        unsafe { *libc::__errno_location() = errno };
        return;
    }
    to_groups(sig);
    // SAFETY: signal(2) and raise(3) are async-signal-safe.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Asks for a pipe buffer of `bytes` (Linux allows up to `/proc/sys/fs/pipe-max-size`,
/// 1 MiB by default, without privileges); the size granted, or an error when `fd` is no pipe.
/// The default 64 KiB makes a reader of a fast writer wake up and read 64 KiB at a time.
pub fn grow_pipe(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is borrowed, so open for the call; only integers pass.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Limits glibc's malloc to two arenas. Call before any thread starts.
///
/// glibc gives each thread that allocates an arena of its own (up to eight per core), and an
/// arena keeps what its thread freed for reuse. Chunk-sized buffers pass between the reading
/// thread, the rayon workers and tokio's blocking threads, so the resident memory grew with
/// the number of threads that had held a chunk, not with the chunks in flight (DESIGN.md
/// promise 6). Measured on the 2 GiB bench image, four runs each on a loaded machine:
/// restores peaked at 90 MiB with the default arenas and 72 MiB (the Argon2 floor) with two,
/// checks at 90 and 72 MiB, for the same CPU time (restore 6.9 against 7.1 s, check 3.0 and
/// 3.0 s, first backup 9.9 against 10.5 s); restoring 4 GiB of real files (a tar of /usr,
/// less compressible) peaked at 101–126 MiB with the default arenas and 97–101 MiB with two.
pub fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes two integers and changes a setting of the allocator; called before
    // other threads exist, nothing allocates concurrently.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// The peak resident memory of this process so far (`VmHWM` of /proc/self/status), in bytes;
/// None where /proc does not say.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Zeroed memory for Argon2id's blocks, straight from the kernel (an anonymous map).
///
/// `vec![Block::new(); n]` writes its 64 MiB on one thread before the derivation starts: 33 ms
/// here, a third of an open's key derivation, while the map's pages are zeroed by the kernel
/// as the derivation's lanes first touch them, on all cores. Measured on this machine (64 MiB,
/// 3 passes, 4 lanes, 6 runs): 99–108 ms with the vector and its wipe, 78–91 ms mapped. (Huge
/// pages were tried too: 58–113 ms, the kernel's compaction making them erratic.)
///
/// The blocks are derived from the passphrase; unmapped, the pages leave the process and the
/// kernel clears them before anyone else gets them, so nothing needs wiping first.
pub struct KdfMemory {
    addr: *mut libc::c_void,
    blocks: usize,
}

impl KdfMemory {
    /// `blocks` zeroed blocks, or `None` if the kernel refuses the map (the caller then
    /// allocates them itself).
    pub fn new(blocks: usize) -> Option<KdfMemory> {
        let len = blocks.checked_mul(std::mem::size_of::<argon2::Block>())?;
        if len == 0 {
            return None;
        }
        // SAFETY: a fresh private anonymous map; the kernel picks the address.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        (addr != libc::MAP_FAILED).then_some(KdfMemory { addr, blocks })
    }

    pub fn blocks(&mut self) -> &mut [argon2::Block] {
        // SAFETY: the map holds `blocks` blocks' worth of bytes, page-aligned (a block needs
        // 64), zeroed by the kernel: a block is 128 `u64`s, for which any bytes are valid, and
        // all-zero is `Block::new()`. `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.addr.cast::<argon2::Block>(), self.blocks) }
    }
}

impl Drop for KdfMemory {
    fn drop(&mut self) {
        // SAFETY: the map is ours and nothing borrows it any more (`&mut self`).
        unsafe {
            libc::munmap(
                self.addr,
                self.blocks * std::mem::size_of::<argon2::Block>(),
            )
        };
    }
}

/// Part of a file mapped read-only into memory, faulted in: its bytes are read where they lie
/// in the page cache instead of being copied out of it. An incremental backup of a cached
/// image spent a quarter of its CPU in that copy (`_copy_to_iter`, 24% of the samples of the
/// 2 GiB bench image's changed backup), for chunks that were then only hashed and found
/// stored already.
///
/// A map is only safe to read while the file is at least as long as it: pages past the end of
/// a file that shrank raise `SIGBUS`. [`Mapped::new`] therefore installs, once, a handler that
/// puts zeros in place of the rest of a live map from the faulting page on and marks the map
/// [`cut_short`](Mapped::cut_short); the read goes on, reading zeros, and the caller, which
/// asks after its last read, refuses what it read. (A file that ends inside a page raises no
/// fault for the rest of that page, which reads as zeros: `cut_short` compares the size too.) A `SIGBUS` anywhere else goes to the handler
/// that was there before (or kills the process, as it would have).
///
/// Another process writing the file while it is mapped changes the bytes under a shared
/// borrow. That is the price every reader of a live file pays in some form; callers read a
/// map once for a decision (is this chunk stored already?) and copy what they keep.
pub struct Mapped {
    addr: *mut libc::c_void,
    len: usize,
    slot: usize,
    /// A regular file, and where the map ends in it: a file that now ends inside the map's
    /// last page raised no fault for the bytes past its end, which read as zeros.
    regular: Option<(File, u64)>,
}

// SAFETY: the map is read-only memory owned by this value; any thread may read it, and only
// the owner unmaps it (on drop).
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

/// Live maps, for the `SIGBUS` handler, which may take no lock: each slot holds a map's first
/// and one-past-last address (0 when free) and whether a page of it was replaced.
const MAP_SLOTS: usize = 64;
static MAP_START: [std::sync::atomic::AtomicUsize; MAP_SLOTS] =
    [const { std::sync::atomic::AtomicUsize::new(0) }; MAP_SLOTS];
static MAP_END: [std::sync::atomic::AtomicUsize; MAP_SLOTS] =
    [const { std::sync::atomic::AtomicUsize::new(0) }; MAP_SLOTS];
static MAP_CUT: [std::sync::atomic::AtomicBool; MAP_SLOTS] =
    [const { std::sync::atomic::AtomicBool::new(false) }; MAP_SLOTS];
/// The `SIGBUS` action before ours, and the page size; set once, before our handler is.
static SIGBUS_BEFORE: std::sync::OnceLock<(libc::sigaction, usize)> = std::sync::OnceLock::new();

fn install_sigbus_handler() -> bool {
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: sysconf takes an integer.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let Ok(page) = usize::try_from(page) else {
            return false;
        };
        // SAFETY: a zeroed sigaction is a valid value to be overwritten; sigaction writes the
        // current action into it and changes nothing when the new action is null.
        let mut before: libc::sigaction = unsafe { std::mem::zeroed() };
        if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut before) } != 0 {
            return false;
        }
        if SIGBUS_BEFORE.set((before, page)).is_err() {
            return false;
        }
        // SAFETY: as above; the handler is an `extern "C"` function of the signature that
        // SA_SIGINFO calls, and it only makes async-signal-safe calls (mmap, sigaction).
        let mut ours: libc::sigaction = unsafe { std::mem::zeroed() };
        ours.sa_sigaction = on_sigbus as *const () as usize;
        ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        unsafe { libc::sigemptyset(&mut ours.sa_mask) };
        unsafe { libc::sigaction(libc::SIGBUS, &ours, std::ptr::null_mut()) == 0 }
    })
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    use std::sync::atomic::Ordering::{Acquire, Release};
    let Some((before, page)) = SIGBUS_BEFORE.get() else {
        return;
    };
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler, and errno is this
    // thread's; it is put back as it was, so the interrupted code never sees ours.
    let (code, addr, errno) = unsafe {
        (
            (*info).si_code,
            (*info).si_addr() as usize,
            *libc::__errno_location(),
        )
    };
    // Only a fault has an address (BUS_ADRERR: past the end of the file); a SIGBUS that a
    // process sent, or a hardware error, is not ours to answer.
    let slot_of = |slot: usize| {
        let start = MAP_START[slot].load(Acquire);
        start != 0 && addr >= start && addr < MAP_END[slot].load(Acquire)
    };
    let hit = if code == libc::BUS_ADRERR {
        (0..MAP_SLOTS).find(|&s| slot_of(s))
    } else {
        None
    };
    if let Some(slot) = hit {
        let at = addr & !(page - 1);
        let end = MAP_END[slot].load(Acquire);
        // The rest of the map at once: the file ends before all of it, and one fault per
        // page of a 4 MiB chunk would be a thousand.
        // SAFETY: [at, end) lies inside a live map of ours (registered until after it is
        // unmapped); replacing it with anonymous zeros changes no memory anything else owns.
        let zeros = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                end.saturating_sub(at).max(*page),
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if zeros != libc::MAP_FAILED {
            // Every slot that covers the page: one being dropped may still list the range
            // that the kernel has just handed to a new map. (A stale slot marked so can only
            // make a map fail that did not need to, never let one pass that should fail.)
            for slot in (0..MAP_SLOTS).filter(|&s| slot_of(s)) {
                MAP_CUT[slot].store(true, Release);
            }
            // SAFETY: as above.
            unsafe { *libc::__errno_location() = errno };
            return;
        }
    }
    pass_on(sig, info, ctx, before);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Hands a `SIGBUS` that is not ours to the action that was there before ours.
fn pass_on(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
    before: &libc::sigaction,
) {
    match before.sa_sigaction {
        libc::SIG_IGN => {}
        libc::SIG_DFL => {
            // SAFETY: the default action is put back and the signal raised again; it is
            // blocked while this handler runs, so it is delivered, and kills the process, as
            // soon as the handler returns (a fault would recur there anyway).
            unsafe {
                libc::sigaction(libc::SIGBUS, before, std::ptr::null_mut());
                libc::raise(libc::SIGBUS);
            }
        }
        handler if before.sa_flags & libc::SA_SIGINFO != 0 => {
            // SAFETY: the earlier handler was installed with SA_SIGINFO, so it has this
            // signature, and gets the arguments the kernel gave us.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(handler) };
            f(sig, info, ctx);
        }
        handler => {
            // SAFETY: without SA_SIGINFO a handler takes the signal number alone.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
            f(sig);
        }
    }
}

/// The smallest chunk worth mapping rather than reading ([`Mapped::chunk`]). Each map costs
/// an `mmap`, a fault per page and an `munmap` that interrupts the other cores to flush
/// their TLBs; against one copy, that pays only for large chunks. Measured on a 2-core VM,
/// the incremental backup of the 2 GiB bench image with 1% changed, 4 runs each: at 64 KiB
/// chunks 0.93–1.06 s mapped, 0.54–0.69 s read; 256 KiB 0.49–0.55 against 0.36–0.37; 1 MiB
/// 0.38–0.41 against 0.31–0.33; 2 MiB 0.31–0.38 against 0.31–0.34; 4 MiB (the default)
/// 0.30 against 0.33–0.34.
pub const MAP_MIN: usize = 2 << 20;

impl Mapped {
    /// [`Mapped::new`] for a chunk of at least [`MAP_MIN`] bytes; None for a smaller one,
    /// which is cheaper to read.
    pub fn chunk(file: &File, offset: u64, len: usize) -> Option<Mapped> {
        if len < MAP_MIN {
            return None;
        }
        Mapped::new(file, offset, len)
    }

    /// Maps `len` bytes of `file` from `offset`, read ahead and faulted in. `None` when that
    /// cannot be done: `offset` not a multiple of the page size, `len` zero, every registry
    /// slot taken, or the kernel refused; the caller then reads the bytes instead.
    pub fn new(file: &File, offset: u64, len: usize) -> Option<Mapped> {
        use std::sync::atomic::Ordering::{Relaxed, Release};
        if len == 0 || !install_sigbus_handler() {
            return None;
        }
        let page = SIGBUS_BEFORE.get()?.1 as u64;
        let off = libc::off_t::try_from(offset).ok()?;
        if !offset.is_multiple_of(page) {
            return None;
        }
        let slot = (0..MAP_SLOTS).find(|&s| {
            MAP_START[s]
                .compare_exchange(0, usize::MAX, Relaxed, Relaxed)
                .is_ok()
        })?;
        // Large reads from the disk first; the map's own faults would read it in small pieces.
        // SAFETY: the descriptor belongs to `file`, which outlives the call; no memory passes.
        unsafe { libc::readahead(file.as_raw_fd(), off, len) };
        // SAFETY: a fresh read-only shared map of an open descriptor; the kernel picks the
        // address, and the map stays valid after the descriptor is closed.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                file.as_raw_fd(),
                off,
            )
        };
        if addr == libc::MAP_FAILED {
            MAP_START[slot].store(0, Release);
            return None;
        }
        MAP_CUT[slot].store(false, Relaxed);
        MAP_END[slot].store(addr as usize + len, Release);
        MAP_START[slot].store(addr as usize, Release);
        let regular = file
            .metadata()
            .is_ok_and(|m| m.is_file())
            .then(|| file.try_clone().ok())
            .flatten()
            .map(|f| (f, offset + len as u64));
        Some(Mapped {
            addr,
            len,
            slot,
            regular,
        })
    }

    /// Whether any of the map lay past the end of the file when it was read (the file shrank):
    /// those bytes read as zeros. Ask after the last read.
    pub fn cut_short(&self) -> bool {
        MAP_CUT[self.slot].load(std::sync::atomic::Ordering::Acquire)
            || self
                .regular
                .as_ref()
                .is_some_and(|(f, end)| f.metadata().map_or(true, |m| m.len() < *end))
    }
}

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` readable bytes at `addr` until drop; pages past the file's end read
        // as zeros through the handler above.
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Release;
        // SAFETY: the map is ours and nothing borrows it any more (`&mut self`).
        unsafe { libc::munmap(self.addr, self.len) };
        // Unregistered only once unmapped: a fault in between is still ours to answer.
        MAP_END[self.slot].store(0, Release);
        MAP_START[self.slot].store(0, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn holes_and_data_of_a_sparse_file() {
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(8 << 20).unwrap();
        // One block of data at 4 MiB; the rest is a hole on filesystems that have them.
        std::os::unix::fs::FileExt::write_all_at(&f, &[1u8; 4096], 4 << 20).unwrap();
        f.flush().unwrap();
        match seek_data(&f, 0).unwrap() {
            // A filesystem without holes reports data everywhere.
            Seek::At(0) => {}
            Seek::At(d) => {
                assert_eq!(d, 4 << 20);
                assert_eq!(seek_hole(&f, d).unwrap(), Seek::At((4 << 20) + 4096));
                assert_eq!(seek_data(&f, (4 << 20) + 4096).unwrap(), Seek::NoMoreData);
            }
            Seek::NoMoreData => panic!("data at 4 MiB was not found"),
        }
        assert!(peak_rss().is_some_and(|b| b > 1 << 20));
    }

    fn file_of(pages: usize) -> (File, Vec<u8>) {
        let mut f = tempfile::tempfile().unwrap();
        let bytes: Vec<u8> = (0..pages * 4096).map(|i| (i % 251) as u8 + 1).collect();
        f.write_all(&bytes).unwrap();
        (f, bytes)
    }

    #[test]
    fn a_map_reads_the_bytes_of_its_range() {
        let (f, bytes) = file_of(4);
        let map = Mapped::new(&f, 4096, 2 * 4096).expect("maps");
        assert_eq!(&map[..], &bytes[4096..3 * 4096]);
        assert!(!map.cut_short());
        assert!(
            Mapped::new(&f, 100, 4096).is_none(),
            "an unaligned offset is read instead"
        );
        assert!(Mapped::new(&f, 0, 0).is_none());
    }

    /// The file shrinks under a live map: the pages past its new end read as zeros instead of
    /// killing the process with SIGBUS, and the map says so; other maps are untouched.
    #[test]
    fn a_map_of_a_file_that_shrank_reads_zeros_and_says_so() {
        let (f, bytes) = file_of(4);
        let (g, other) = file_of(2);
        let map = Mapped::new(&f, 0, 4 * 4096).expect("maps");
        let untouched = Mapped::new(&g, 0, 2 * 4096).expect("maps");
        f.set_len(4096 + 10).unwrap();
        let seen = map.to_vec();
        assert_eq!(&seen[..4096 + 10], &bytes[..4096 + 10]);
        assert!(
            seen[2 * 4096..].iter().all(|&b| b == 0),
            "past the end: zeros"
        );
        assert!(map.cut_short());
        assert_eq!(&untouched[..], &other[..]);
        assert!(!untouched.cut_short());
        drop(map);
        // The slot is free again and a new map starts clean.
        let again = Mapped::new(&g, 0, 4096).expect("maps");
        assert!(!again.cut_short());
    }

    /// A file that now ends inside the map's last page raises no fault (the rest of that page
    /// reads as zeros); the map is cut short all the same.
    #[test]
    fn a_map_of_a_file_that_ends_inside_its_last_page_is_cut_short() {
        let (f, bytes) = file_of(2);
        let map = Mapped::new(&f, 0, 2 * 4096).expect("maps");
        f.set_len(4096 + 10).unwrap();
        assert_eq!(&map[..4096 + 10], &bytes[..4096 + 10]);
        assert!(map.cut_short());
    }

    #[test]
    fn kdf_memory_is_zeroed_blocks() {
        let mut m = KdfMemory::new(8).expect("maps");
        let blocks = m.blocks();
        assert_eq!(blocks.len(), 8);
        assert!(blocks.iter().all(|b| b.as_ref().iter().all(|&w| w == 0)));
        blocks[7].as_mut()[127] = 1;
        assert!(KdfMemory::new(0).is_none());
    }

    /// Maps taken and dropped on many threads at once, beyond the registry's slots: every map
    /// that is granted reads right, and the rest are refused, not misread.
    #[test]
    fn maps_from_many_threads_at_once() {
        let (f, bytes) = file_of(8);
        std::thread::scope(|s| {
            for t in 0..8 {
                let (f, bytes) = (&f, &bytes);
                s.spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..40 {
                        let page = (t + i) % 8;
                        if let Some(m) = Mapped::new(f, (page * 4096) as u64, 4096) {
                            assert_eq!(&m[..], &bytes[page * 4096..(page + 1) * 4096]);
                            assert!(!m.cut_short());
                            held.push(m);
                        }
                        if held.len() > 10 {
                            held.clear();
                        }
                    }
                });
            }
        });
    }
}
