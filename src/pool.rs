//! Chunk-sized buffers for reuse. A fresh 4 MiB buffer costs 1,024 page faults, each zeroing
//! a page in the kernel, and glibc gives large freed buffers back to the system readily; the
//! backup and restore pipelines hand buffers back here instead when they are done with them.
//! A pool never holds more than `keep` buffers, and every buffer it holds was in use at once
//! before, so it adds nothing to the peak memory.

use std::sync::Mutex;

pub struct Pool {
    bufs: Mutex<Vec<Vec<u8>>>,
    capacity: usize,
    keep: usize,
}

impl Pool {
    /// A pool of buffers of `capacity` bytes (their capacity; their length is the user's).
    pub fn new(capacity: usize, keep: usize) -> Pool {
        Pool {
            bufs: Mutex::new(Vec::new()),
            capacity,
            keep,
        }
    }

    /// A buffer with at least the pool's capacity; empty if new, else as it was given back.
    pub fn take(&self) -> Vec<u8> {
        self.bufs
            .lock()
            .ok()
            .and_then(|mut b| b.pop())
            .unwrap_or_else(|| Vec::with_capacity(self.capacity))
    }

    /// Keeps `buf` for a later `take`, unless it is too small or the pool is full.
    pub fn give(&self, buf: Vec<u8>) {
        if buf.capacity() < self.capacity {
            return;
        }
        if let Ok(mut bufs) = self.bufs.lock()
            && bufs.len() < self.keep
        {
            bufs.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_up_to_the_limit() {
        let pool = Pool::new(16, 1);
        let mut a = pool.take();
        assert!(a.capacity() >= 16 && a.is_empty());
        a.extend_from_slice(b"abc");
        pool.give(a);
        pool.give(Vec::with_capacity(16)); // the pool is full: dropped
        pool.give(Vec::with_capacity(4)); // too small: dropped
        assert_eq!(pool.take(), b"abc");
        assert!(pool.take().is_empty());
    }
}
