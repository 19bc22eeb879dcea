//! The few Linux calls std does not offer, as safe functions: finding data and holes (`lseek`
//! with `SEEK_DATA`/`SEEK_HOLE`), starting write-back early (`sync_file_range`), switching
//! direct I/O on an open file and growing a pipe (`fcntl`), the process's peak memory, and a bound on glibc's
//! malloc arenas. Every `unsafe` block of the crate is
//! here; each passes only a descriptor that a borrowed `File` keeps open for the call, or
//! plain integers.

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
}
