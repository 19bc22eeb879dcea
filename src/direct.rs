//! Writing around the page cache (`O_DIRECT`), for the bulk writes that are fsynced anyway and
//! seldom read back soon: chunk objects in a local repository, and a restore's chunks; and
//! reading block devices around it ([`DirectReads`]), whose cache can be stale.
//!
//! On our VM (ext4 on virtio) 1 GiB written and fsynced took 3.5 s, 2.8 s of it kernel CPU
//! copying into and managing the page cache; with `O_DIRECT` 0.95 s (0.22 s of CPU), in
//! 1 MiB writes 1.07 s. Direct writes need their offset, length and memory aligned to the
//! device's block. Data that already lies at an aligned address (a restore decompresses each
//! chunk to one, [`crate::seal::PLAIN_ALIGN`]; a backup seals each compressed chunk at one,
//! [`crate::seal::seal_compressed`]) is written as it is, all but its last partial block;
//! other data is copied piece by piece into an aligned spot of a reused buffer first (a
//! memcpy, far cheaper than the page cache's, but 4% of a restore's CPU when it was every
//! chunk's).
//!
//! A file system that refuses `O_DIRECT` (tmpfs before Linux 6.6, some FUSE ones), a device
//! that wants a larger alignment, or any failed direct write makes [`Direct::works`] false for
//! the rest of the run, and callers write through the page cache as before.

use crate::pool::Pool;
use crate::sys;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Offsets, lengths and memory of direct writes are multiples of this: the largest logical
/// block size of any disk.
pub const ALIGN: usize = 4096;
const _: () = assert!(crate::seal::PLAIN_ALIGN.is_multiple_of(ALIGN));
/// How much one direct write carries (each aligned buffer's size).
const PIECE: usize = 1 << 20;

pub struct Direct {
    works: AtomicBool,
    /// Buffers of `PIECE + ALIGN` bytes; the aligned piece lies somewhere in each.
    buffers: Pool,
}

impl Default for Direct {
    fn default() -> Self {
        Direct::new()
    }
}

impl Direct {
    pub fn new() -> Direct {
        Direct {
            works: AtomicBool::new(true),
            buffers: Pool::new(PIECE + ALIGN, 16),
        }
    }

    /// False once direct I/O failed here; callers then use the page cache.
    pub fn works(&self) -> bool {
        self.works.load(Ordering::Relaxed)
    }

    /// Puts `f` in direct mode; false (and [`works`](Self::works) false from now on) when the
    /// file system will not have it.
    pub fn enable(&self, f: &File) -> bool {
        if !self.works() {
            return false;
        }
        let ok = sys::set_direct(f, true).is_ok();
        if !ok {
            self.works.store(false, Ordering::Relaxed);
        }
        ok
    }

    /// Writes `data` at `offset` (a multiple of [`ALIGN`]) of `f`, which is in direct mode.
    /// A last partial block is padded with zeros: the caller cuts the file back or writes
    /// what follows over the padding. Any error turns direct writes off for the run, and the
    /// caller writes `data` again through the page cache: `EINVAL` is an alignment the device
    /// refuses or a short write that left the next offset unaligned, and a file system may
    /// answer a direct write it cannot do with other codes; a real failure (a full disk, a
    /// dying one) fails the ordinary write too, which then reports it.
    pub fn write_at(&self, f: &File, data: &[u8], offset: u64) -> io::Result<()> {
        debug_assert!(offset.is_multiple_of(ALIGN as u64));
        // Data at an aligned address goes as it lies, but for a last partial block.
        let whole = if data.as_ptr().addr().is_multiple_of(ALIGN) {
            data.len() - data.len() % ALIGN
        } else {
            0
        };
        let (aligned, rest) = data.split_at(whole);
        let written = f.write_all_at(aligned, offset).and_then(|()| {
            if rest.is_empty() {
                Ok(())
            } else {
                self.write_copied(f, rest, offset + whole as u64)
            }
        });
        if written.is_err() {
            self.works.store(false, Ordering::Relaxed);
        }
        written
    }

    /// [`write_at`](Self::write_at) of data that is not aligned: piece by piece through an
    /// aligned buffer.
    fn write_copied(&self, f: &File, data: &[u8], offset: u64) -> io::Result<()> {
        let mut buf = self.buffers.take();
        buf.resize(PIECE + ALIGN, 0);
        let at = buf.as_ptr().align_offset(ALIGN);
        let mut done = 0;
        let mut written = Ok(());
        while done < data.len() {
            let n = (data.len() - done).min(PIECE);
            let piece = &mut buf[at..at + n.next_multiple_of(ALIGN)];
            piece[..n].copy_from_slice(&data[done..done + n]);
            piece[n..].fill(0);
            written = f.write_all_at(piece, offset + done as u64);
            if written.is_err() {
                break;
            }
            done += n;
        }
        self.buffers.give(buf);
        written
    }
}

/// Reads of a block device around its page cache, into memory of any alignment: a piece at a
/// time into an aligned buffer, then copied out. A filesystem mounted on the device writes
/// its files around the device's cache, so pages an earlier read left there can be older
/// than the disk, and dropping them does not always work (a page that also holds a buffer
/// the filesystem is using stays); a direct read always comes from the disk. Any error of a
/// direct read (a device that wants a larger alignment than [`ALIGN`]) turns direct reads off
/// and the caller reads through the page cache, having dropped what it could of it.
pub struct DirectReads {
    file: File,
    buf: Vec<u8>,
}

impl DirectReads {
    /// A second, direct, open file description for `f` (a block device): `None` where direct
    /// reads are refused.
    pub fn open(f: &File) -> Option<DirectReads> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(format!("/proc/self/fd/{}", f.as_raw_fd()))
            .ok()?;
        Some(DirectReads {
            file,
            buf: vec![0; PIECE + ALIGN],
        })
    }

    /// Fills `out` from `offset` (a multiple of [`ALIGN`]), stopping early only at the end of
    /// the device; returns how much it read.
    pub fn read_full_at(&mut self, out: &mut [u8], offset: u64) -> io::Result<usize> {
        debug_assert!(
            offset.is_multiple_of(ALIGN as u64),
            "unaligned direct read at {offset}"
        );
        let at = self.buf.as_ptr().align_offset(ALIGN);
        let mut n = 0;
        while n < out.len() {
            let want = (out.len() - n).min(PIECE);
            let piece = &mut self.buf[at..at + want.next_multiple_of(ALIGN)];
            match self.file.read_at(piece, offset + n as u64) {
                Ok(0) => break,
                Ok(k) => {
                    let k = k.min(want);
                    out[n..n + k].copy_from_slice(&piece[..k]);
                    n += k;
                    // Short only at the end: a device is read in whole blocks.
                    if k < want {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}

/// Reads all of `f` into `buf`, a buffer for reuse whose contents are not kept, and returns
/// it with the range that holds the file. Directly when that works: the read then comes from
/// the disk, not from a cached copy, and costs no copy out of the page cache (6% of a cold
/// `check --read-data`'s CPU on our VM). Otherwise, or when a direct read fails, through the
/// page cache as ordinary reads do. Meant for files nobody writes while they are read (our
/// objects are written once and renamed into place).
pub fn read_whole(
    direct: &Direct,
    f: &File,
    mut buf: Vec<u8>,
) -> io::Result<(Vec<u8>, Range<usize>)> {
    let len = usize::try_from(f.metadata()?.len())
        .map_err(|_| io::Error::other("file too large to read into memory"))?;
    if direct.enable(f) {
        let rounded = len.next_multiple_of(ALIGN);
        // Exactly what this file needs: buffers go round, and the largest settle in soon.
        if buf.capacity() < rounded + ALIGN {
            buf = Vec::with_capacity(rounded + ALIGN);
        }
        let at = buf.as_ptr().align_offset(ALIGN);
        // Only what was never initialised is zeroed: a reused buffer keeps its length.
        if buf.len() < at + rounded {
            buf.resize(at + rounded, 0);
        }
        let mut done = 0;
        let read = loop {
            if done >= len {
                break Ok(());
            }
            match f.read_at(&mut buf[at + done..at + rounded], done as u64) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if read.is_ok() {
            return Ok((buf, at..at + len));
        }
        // As with writes: direct reads are off for the run, and the ordinary read below says
        // what is wrong if something is.
        direct.works.store(false, Ordering::Relaxed);
        sys::set_direct(f, false)?;
    }
    buf.clear();
    (&*f).read_to_end(&mut buf)?;
    let n = buf.len();
    Ok((buf, 0..n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    #[test]
    fn pieces_padding_and_offsets_come_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = File::create_new(&path).unwrap();
        let d = Direct::new();
        let direct = d.enable(&f);
        // Two pieces and a bit, then a block-aligned write further on.
        let a: Vec<u8> = (0..(2 * PIECE + 100) as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        let b = vec![7u8; 3 * ALIGN];
        let at_b = (4 * PIECE) as u64;
        // At an aligned address but of a length that is not: the blocks go as they lie, the
        // last partial one through the buffer.
        let mut c_buf = vec![9u8; 4 * ALIGN];
        let c_at = c_buf.as_ptr().align_offset(ALIGN);
        let c = &mut c_buf[c_at..c_at + 2 * ALIGN + 100];
        c[ALIGN..].fill(5);
        let at_c = (2 * PIECE + ALIGN) as u64;
        if direct {
            d.write_at(&f, &a, 0).unwrap();
            d.write_at(&f, &b, at_b).unwrap();
            d.write_at(&f, c, at_c).unwrap();
        } else {
            f.write_all_at(&a, 0).unwrap();
            f.write_all_at(&b, at_b).unwrap();
            f.write_all_at(c, at_c).unwrap();
        }
        // Read through the page cache: a direct descriptor reads only into aligned memory.
        let back = std::fs::read(&path).unwrap();
        let end_a = a.len();
        assert!(
            back[..end_a] == a[..],
            "the first write came back different"
        );
        let pad = &back[end_a..end_a.next_multiple_of(ALIGN)];
        assert!(pad.iter().all(|&x| x == 0), "padding is zeros");
        let at_c = at_c as usize;
        assert!(
            back[at_c..at_c + c.len()] == c[..],
            "the aligned write came back different"
        );
        assert_eq!(&back[at_b as usize..], &b[..]);
        assert_eq!(f.metadata().unwrap().len(), at_b + b.len() as u64);
    }

    #[test]
    fn whole_files_read_back_through_a_reused_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let lengths = [3 * PIECE + 7, 0, 1, ALIGN - 1, ALIGN, ALIGN + 1, PIECE, 5];
        let files: Vec<(PathBuf, Vec<u8>)> = lengths
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let data: Vec<u8> = (0..n).map(|j| (j * 7 + i) as u8).collect();
                let path = dir.path().join(format!("f{i}"));
                std::fs::write(&path, &data).unwrap();
                (path, data)
            })
            .collect();
        // Direct where the file system allows it, then through the page cache.
        for through_cache in [false, true] {
            let d = Direct::new();
            if through_cache {
                d.works.store(false, Ordering::Relaxed);
            }
            let mut buf = Vec::new();
            for (path, data) in &files {
                let f = File::open(path).unwrap();
                let (back, range) = read_whole(&d, &f, buf).unwrap();
                assert!(
                    back[range.clone()] == data[..],
                    "{} bytes came back different (through the cache: {through_cache})",
                    data.len()
                );
                buf = back;
            }
            // No direct read failed and fell back unseen, where the file system takes them.
            let can = Direct::new().enable(&File::open(&files[0].0).unwrap());
            assert_eq!(d.works(), can && !through_cache);
        }
    }
}
