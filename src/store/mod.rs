//! Where objects live: keys and bytes, nothing of chunks, manifests or encryption.
//!
//! Every backend states the same contract (checked by the conformance suite in
//! `tests/store_conformance.rs`, which runs against each of them):
//! - `put` is atomic and durable when it returns: a reader sees the whole old object or the
//!   whole new one, never a mix, and a crash after `put` returned does not lose it.
//! - `put_unsynced` is as atomic, and durable once a later `sync` of a prefix that covers it
//!   has returned (backends whose `put` is durable anyway make it `put`): what a crash before
//!   that loses is the whole object, never a part of it. Backups store chunks this way and
//!   sync `chunks/` once before the manifest that names them.
//! - `put_new` creates an object only if none exists under that name, atomically, and says
//!   whether it did.
//! - `get` of a missing object is `StoreError::NotFound`; `delete` of one is not an error.
//! - `list` returns every key under a prefix, sorted, however many there are.

pub mod fault;
pub mod local_dir;
pub mod memory;
pub mod s3;

pub use local_dir::LocalDir;
pub use memory::Memory;
pub use s3::{S3, S3Options};

use async_trait::async_trait;
use serde::Serialize;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{key} not found in {store}")]
    NotFound { store: String, key: String },
    /// The OS error is part of the message and not a `source`: printed with its chain, the
    /// error would otherwise say it twice.
    #[error("{key} in {store}: {cause}")]
    Io {
        store: String,
        key: String,
        cause: io::Error,
    },
    #[error("{store}: invalid object name {key:?}")]
    BadKey { store: String, key: String },
    /// A remote store refused or failed the request (after retries); `message` says why in
    /// the user's terms: bucket missing, access denied, wrong region, unreachable endpoint.
    #[error("{}{store}: {message}", if key.is_empty() { String::new() } else { format!("{key} in ") })]
    Remote {
        store: String,
        key: String,
        message: String,
    },
    /// A remote store refused the request for lack of permission (S3 `AccessDenied`): with
    /// read-only credentials, every write.
    #[error("{}{store}: {message}", if key.is_empty() { String::new() } else { format!("{key} in ") })]
    Denied {
        store: String,
        key: String,
        message: String,
    },
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// The store refused a write because this client may not write there: a directory it
    /// has no write permission on, a read-only file system, read-only credentials. Not a
    /// full disk or a network failure, which are no answer about permission.
    pub fn refuses_writes(&self) -> bool {
        match self {
            StoreError::Io { cause, .. } => matches!(
                cause.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
            ),
            StoreError::Denied { .. } => true,
            _ => false,
        }
    }
}

/// Requests a store has made, by type: what a run cost on a store that bills per request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Requests {
    pub put: u64,
    pub get: u64,
    pub head: u64,
    pub list: u64,
    pub delete: u64,
}

impl Requests {
    pub fn since(self, earlier: Requests) -> Requests {
        Requests {
            put: self.put - earlier.put,
            get: self.get - earlier.get,
            head: self.head - earlier.head,
            list: self.list - earlier.list,
            delete: self.delete - earlier.delete,
        }
    }

    pub fn total(&self) -> u64 {
        self.put + self.get + self.head + self.list + self.delete
    }
}

/// Counters a store bumps as it makes requests.
#[derive(Debug, Default)]
pub struct RequestCounter {
    put: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
pub enum RequestKind {
    Put,
    Get,
    Head,
    List,
    Delete,
}

impl RequestCounter {
    pub fn count(&self, kind: RequestKind) {
        let c = match kind {
            RequestKind::Put => &self.put,
            RequestKind::Get => &self.get,
            RequestKind::Head => &self.head,
            RequestKind::List => &self.list,
            RequestKind::Delete => &self.delete,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Requests {
        Requests {
            put: self.put.load(Ordering::Relaxed),
            get: self.get.load(Ordering::Relaxed),
            head: self.head.load(Ordering::Relaxed),
            list: self.list.load(Ordering::Relaxed),
            delete: self.delete.load(Ordering::Relaxed),
        }
    }
}

/// An object's bytes where its writer left them: `buf[start..]`. A chunk is sealed at an
/// address direct I/O can write from ([`crate::seal::seal_compressed`]), which saves copying
/// it into aligned memory first.
pub struct Placed {
    buf: Vec<u8>,
    start: usize,
}

impl Placed {
    /// The object `buf[start..]`; `start` past the end is a caller's bug, and panics here
    /// rather than store a wrong object under a chunk's name.
    pub fn new(buf: Vec<u8>, start: usize) -> Placed {
        assert!(start <= buf.len(), "object starts past its buffer's end");
        Placed { buf, start }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The buffer, for reuse.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Where this store is, for messages: "local directory /srv/vault".
    fn describe(&self) -> String;
    /// Whether requests are answered at the speed of local storage (a directory, memory),
    /// not over a network whose latency wants many of them in flight.
    fn is_local(&self) -> bool {
        false
    }
    /// Requests made so far (operations, for a local directory).
    fn requests(&self) -> Requests {
        Requests::default()
    }
    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError>;
    /// `put`, except that the object may become durable only when `sync` returns.
    async fn put_unsynced(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
        self.put(key, data).await
    }
    /// [`put_unsynced`](Self::put_unsynced) of an object that lies at an offset of its buffer,
    /// and the buffer back for reuse (an empty one where the store kept it). A local directory
    /// writes the object from where it lies; other stores move it to the front.
    async fn put_unsynced_placed(&self, key: &str, object: Placed) -> Result<Vec<u8>, StoreError> {
        let Placed { mut buf, start } = object;
        buf.drain(..start);
        self.put_unsynced(key, buf).await.map(|()| Vec::new())
    }
    /// Makes durable every object under `prefix` that anyone stored with `put_unsynced` and
    /// that is visible now (so also those another process stored, which a backup may
    /// reference after finding them with `exists`).
    async fn sync(&self, prefix: &str) -> Result<(), StoreError> {
        let _ = prefix;
        Ok(())
    }
    /// Creates `key` only if it does not exist yet; `Ok(false)` when it already did.
    async fn put_new(&self, key: &str, data: Vec<u8>) -> Result<bool, StoreError>;
    /// Whether [`put_new`](Self::put_new) is atomic. Where it is not (an S3 server that
    /// ignores conditional writes), two creators can both find a key free, and the later
    /// write replaces the earlier: see [`create_manifest`].
    async fn creates_atomically(&self) -> Result<bool, StoreError> {
        Ok(true)
    }
    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError>;
    /// [`get`](Self::get) into `buf`, a buffer for reuse whose contents are not kept: the object
    /// is `range` of the buffer that comes back. A local directory reads it around the page
    /// cache ([`crate::direct::read_whole`]): from the disk itself, without the kernel's copy.
    async fn get_reusing(
        &self,
        key: &str,
        buf: Vec<u8>,
    ) -> Result<(Vec<u8>, std::ops::Range<usize>), StoreError> {
        let object = self.get(key).await?;
        let n = object.len();
        // Copied into `buf` when it has room, so that the caller's pool of buffers keeps its
        // size: a copy costs less than a fresh buffer's page faults when it is next needed.
        if buf.capacity() >= n {
            let mut buf = buf;
            buf.clear();
            buf.extend_from_slice(&object);
            return Ok((buf, 0..n));
        }
        Ok((object, 0..n))
    }
    /// Up to `len` bytes from `offset`; fewer at the end of the object.
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError>;
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .list_sizes(prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }
    /// Like `list`, with each object's size in bytes (for what gc reclaims).
    async fn list_sizes(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// What writes cut short left behind (a local directory's hidden temporary files, from a
    /// process that crashed or was stopped while writing) under each of `prefixes` (`""`: at
    /// the top only) and was last written more than `age` ago: how many, and the bytes that
    /// removing them frees; removed unless `dry_run`. Stores whose writes leave nothing
    /// behind have none.
    async fn sweep_leftovers(
        &self,
        prefixes: &[&str],
        age: std::time::Duration,
        dry_run: bool,
    ) -> Result<(u64, u64), StoreError> {
        let _ = (prefixes, age, dry_run);
        Ok((0, 0))
    }
}

/// How long at least a manifest created without an atomic create waits before it reads
/// itself back (three times its own PUT's time when that is longer): longer than another
/// writer takes from finding the name free to the end of its PUT. A writer slower than that
/// (a PUT stalled in retries) can still replace it: the race is narrowed, not closed, on a
/// store without conditional writes.
pub const RACE_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);

/// What became of [`create_manifest`]'s write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The manifest is stored under the name.
    Created,
    /// Another writer's manifest had the name before ours was written.
    Taken,
    /// Ours was written, then replaced by another writer's that had found the name free too
    /// (a store without conditional writes).
    Replaced,
}

/// Creates a manifest at `key` unless the name is taken, like [`Store::put_new`], where that
/// is not atomic too. Two backups of a series that start in the same second (two cron jobs,
/// two hosts) choose the same version name; without an atomic create both can find it free
/// and the later PUT replaces the earlier, whose writer would report a version that is gone.
/// So the manifest is read back once any writer that found the name free before our write has
/// written: the one whose bytes are not there lost, and takes the next name, as a writer that
/// finds the name taken does.
pub async fn create_manifest(
    store: &dyn Store,
    key: &str,
    data: Vec<u8>,
) -> Result<Claim, StoreError> {
    let claim = |created| {
        if created {
            Claim::Created
        } else {
            Claim::Taken
        }
    };
    if store.creates_atomically().await? {
        return store.put_new(key, data).await.map(claim);
    }
    if store.exists(key).await? {
        return Ok(Claim::Taken);
    }
    let put_started = std::time::Instant::now();
    store.put(key, data.clone()).await?;
    // A rival whose PUT of a manifest as large takes as long must have landed by then too.
    tokio::time::sleep(RACE_WINDOW.max(3 * put_started.elapsed())).await;
    match store.get(key).await {
        Ok(stored) if stored == data => Ok(Claim::Created),
        // Gone is as lost as replaced: a rival's write cannot remove it, but whatever did
        // leaves no manifest of ours to report.
        Ok(_) => Ok(Claim::Replaced),
        Err(e) if e.is_not_found() => Ok(Claim::Replaced),
        Err(e) => Err(e),
    }
}

/// Object names are relative, `/`-separated, and no segment is empty, `.`, `..` or hidden
/// (hidden names are reserved for a backend's temporary files).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 1024
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && !seg.starts_with('.') && !seg.contains('\0'))
}
