//! The few Linux calls std does not offer, as safe functions over a borrowed `File`: finding
//! data and holes (`lseek` with `SEEK_DATA`/`SEEK_HOLE`), starting write-back early
//! (`sync_file_range`), and the process's peak memory. Every `unsafe` block of the crate is
//! here; each passes only a descriptor that the borrowed `File` keeps open for the call.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

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
