//! A repository in a local directory: one file per object.
//!
//! Writes go to a hidden temporary file in the target's directory, are fsynced, then renamed
//! (or hard-linked, for `put_new`, which fails atomically if the name exists) into place, and
//! the directory is fsynced: after `put` returns, the object survives a power cut, and a crash
//! before that leaves only a hidden `.tmp-*` file that listing ignores.
//!
//! `put_unsynced` does the same except the directory fsync, which `sync` does later for every
//! directory under its prefix: a backup's hundreds of chunk objects then cost one journal
//! commit at the end instead of one each. The file itself is still fsynced before the rename,
//! so a crash can lose a new name but never leave a name on incomplete bytes: a later backup
//! that finds a chunk by name can trust what is under it.
//!
//! Objects of [`DIRECT_MIN`] bytes or more (chunks) are written around the page cache
//! ([`crate::direct`]): the last block padded and the file cut back to the object's length.
//! They are fsynced anyway and seldom read soon; the page cache's copy was most of the cost
//! of storing them.

use super::{Placed, RequestCounter, RequestKind, Requests, Store, StoreError, valid_key};
use crate::direct::Direct;
use crate::sys;
use async_trait::async_trait;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Objects this large or larger are written with `O_DIRECT`.
const DIRECT_MIN: usize = 256 << 10;

pub struct LocalDir {
    root: Arc<PathBuf>,
    direct: Arc<Direct>,
    /// Operations by the S3 request each stands for, so summaries say what a run did here
    /// as they do for a bucket.
    counter: Arc<RequestCounter>,
}

impl LocalDir {
    pub fn new(root: impl Into<PathBuf>) -> LocalDir {
        LocalDir {
            root: Arc::new(root.into()),
            direct: Arc::new(Direct::new()),
            counter: Arc::default(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        if !valid_key(key) {
            return Err(StoreError::BadKey {
                store: self.describe(),
                key: key.into(),
            });
        }
        Ok(self.root.join(key))
    }

    /// Runs blocking file I/O off the async workers, attributing errors to `key`.
    async fn blocking<T: Send + 'static>(
        &self,
        key: &str,
        f: impl FnOnce(&Path, PathBuf) -> io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let path = self.path(key)?;
        let root = self.root.clone();
        let res = tokio::task::spawn_blocking(move || f(&root, path)).await;
        let res = res.unwrap_or_else(|e| Err(io::Error::other(format!("I/O task failed: {e}"))));
        res.map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                StoreError::NotFound {
                    store: self.describe(),
                    key: key.into(),
                }
            } else {
                StoreError::Io {
                    store: self.describe(),
                    key: key.into(),
                    cause: source,
                }
            }
        })
    }

    /// [`blocking`](Self::blocking) for work on every key under `prefix`: errors name the
    /// prefix.
    async fn blocking_under<T: Send + 'static>(
        &self,
        prefix: &str,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let res = tokio::task::spawn_blocking(f).await;
        let res = res.unwrap_or_else(|e| Err(io::Error::other(format!("I/O task failed: {e}"))));
        res.map_err(|cause| StoreError::Io {
            store: self.describe(),
            key: format!("{prefix}*"),
            cause,
        })
    }

    /// The keys that start with `prefix`, sorted, with their sizes if `sizes` (else 0).
    async fn listing(&self, prefix: &str, sizes: bool) -> Result<Vec<(String, u64)>, StoreError> {
        let root = self.root.clone();
        let p = prefix.to_string();
        self.blocking_under(prefix, move || {
            let mut out = Vec::new();
            list_into(&root, &root, &p, sizes, &mut out)?;
            out.sort();
            Ok(out)
        })
        .await
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents below `root`, fsyncing each parent so the new entry
/// is durable before anything is written into it.
fn ensure_dir(root: &Path, dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if !root.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)?;
    }
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.is_dir() && d != root {
        missing.push(d.to_path_buf());
        d = match d.parent() {
            Some(p) => p,
            None => break,
        };
    }
    for m in missing.iter().rev() {
        match fs::DirBuilder::new().mode(0o700).create(m) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        if let Some(parent) = m.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// The entries of `dir`; None when it does not exist (no object was ever stored below it).
fn read_dir_if_any(dir: &Path) -> io::Result<Option<fs::ReadDir>> {
    match fs::read_dir(dir) {
        Ok(e) => Ok(Some(e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Fsyncs `dir` and every directory below it.
fn sync_tree(dir: &Path) -> io::Result<()> {
    let Some(entries) = read_dir_if_any(dir)? else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        }
    }
    sync_dir(dir)
}

/// How `write_atomic` places the object.
#[derive(Clone, Copy, PartialEq)]
enum Place {
    /// Rename over any existing object, fsync the directory.
    Replace,
    /// Rename, leaving the directory fsync to `sync`.
    ReplaceUnsynced,
    /// Link, failing if the name exists; fsync the directory.
    OnlyIfNew,
}

/// Writes `data` at the start of the empty file `f`, directly when the file system lets us.
fn write_data(f: &File, data: &[u8], direct: &Direct) -> io::Result<()> {
    if data.len() < DIRECT_MIN || !direct.enable(f) {
        return f.write_all_at(data, 0);
    }
    match direct.write_at(f, data, 0) {
        // Without the padding of the last block.
        Ok(()) => f.set_len(data.len() as u64),
        // Direct writes are off from now on (`Direct::write_at`); this object goes again
        // through the page cache, which reports a failure that is not about direct I/O.
        Err(_) => {
            sys::set_direct(f, false)?;
            f.write_all_at(data, 0)?;
            f.set_len(data.len() as u64)
        }
    }
}

fn write_atomic(
    root: &Path,
    path: &Path,
    data: &[u8],
    place: Place,
    direct: &Direct,
) -> io::Result<bool> {
    let dir = path.parent().unwrap_or(root);
    ensure_dir(root, dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let placed = (|| {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        write_data(&f, data, direct)?;
        f.sync_all()?;
        drop(f);
        if place == Place::OnlyIfNew {
            match fs::hard_link(&tmp, path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        } else {
            fs::rename(&tmp, path).map(|()| true)
        }
    })();
    // After a rename the temporary name is gone already; after a link or a failure it is not.
    let _ = fs::remove_file(&tmp);
    let placed = placed?;
    if placed && place != Place::ReplaceUnsynced {
        sync_dir(dir)?;
    }
    Ok(placed)
}

/// The keys under `dir` that start with `prefix`, each with its size when `sizes` is set. A
/// size costs a `stat` of the file, and from a cold cache a read of its inode: 10 of the 20 ms
/// of listing the bench repository's 340 chunks.
fn list_into(
    root: &Path,
    dir: &Path,
    prefix: &str,
    sizes: bool,
    out: &mut Vec<(String, u64)>,
) -> io::Result<()> {
    let Some(entries) = read_dir_if_any(dir)? else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let Some(key) = path.strip_prefix(root).ok().and_then(Path::to_str) else {
            continue;
        };
        if entry.file_type()?.is_dir() {
            // Only descend where keys under the prefix can be.
            let as_dir = format!("{key}/");
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                list_into(root, &path, prefix, sizes, out)?;
            }
        } else if key.starts_with(prefix) {
            let size = if sizes { entry.metadata()?.len() } else { 0 };
            out.push((key.to_string(), size));
        }
    }
    Ok(())
}

#[async_trait]
impl Store for LocalDir {
    fn is_local(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("local directory {}", self.root.display())
    }

    fn requests(&self) -> Requests {
        self.counter.snapshot()
    }

    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
        self.counter.count(RequestKind::Put);
        let direct = self.direct.clone();
        self.blocking(key, move |root, path| {
            write_atomic(root, &path, &data, Place::Replace, &direct).map(drop)
        })
        .await
    }

    async fn put_unsynced(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
        self.counter.count(RequestKind::Put);
        let direct = self.direct.clone();
        self.blocking(key, move |root, path| {
            write_atomic(root, &path, &data, Place::ReplaceUnsynced, &direct).map(drop)
        })
        .await
    }

    async fn put_unsynced_placed(&self, key: &str, object: Placed) -> Result<Vec<u8>, StoreError> {
        self.counter.count(RequestKind::Put);
        let direct = self.direct.clone();
        self.blocking(key, move |root, path| {
            write_atomic(root, &path, object.bytes(), Place::ReplaceUnsynced, &direct)
                .map(|_| object.into_buffer())
        })
        .await
    }

    async fn sync(&self, prefix: &str) -> Result<(), StoreError> {
        // The directory that holds every key starting with `prefix`.
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let path = if dir.is_empty() {
            self.root.to_path_buf()
        } else {
            self.path(dir)?
        };
        self.blocking_under(prefix, move || sync_tree(&path)).await
    }

    async fn put_new(&self, key: &str, data: Vec<u8>) -> Result<bool, StoreError> {
        self.counter.count(RequestKind::Put);
        let direct = self.direct.clone();
        self.blocking(key, move |root, path| {
            write_atomic(root, &path, &data, Place::OnlyIfNew, &direct)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.counter.count(RequestKind::Get);
        self.blocking(key, |_, path| fs::read(path)).await
    }

    async fn get_reusing(
        &self,
        key: &str,
        buf: Vec<u8>,
    ) -> Result<(Vec<u8>, std::ops::Range<usize>), StoreError> {
        self.counter.count(RequestKind::Get);
        let direct = self.direct.clone();
        self.blocking(key, move |_, path| {
            crate::direct::read_whole(&direct, &File::open(path)?, buf)
        })
        .await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        self.counter.count(RequestKind::Get);
        self.blocking(key, move |_, path| {
            let mut f = File::open(path)?;
            f.seek(SeekFrom::Start(offset))?;
            let mut out = Vec::new();
            f.take(len).read_to_end(&mut out)?;
            Ok(out)
        })
        .await
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.counter.count(RequestKind::Head);
        self.blocking(key, |_, path| match fs::metadata(path) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.counter.count(RequestKind::List);
        let listed = self.listing(prefix, false).await?;
        Ok(listed.into_iter().map(|(k, _)| k).collect())
    }

    async fn list_sizes(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.counter.count(RequestKind::List);
        self.listing(prefix, true).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.counter.count(RequestKind::Delete);
        self.blocking(key, |_, path| match fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        })
        .await
    }

    async fn sweep_leftovers(
        &self,
        prefixes: &[&str],
        age: std::time::Duration,
        dry_run: bool,
    ) -> Result<(u64, u64), StoreError> {
        let root = self.root.clone();
        let prefixes: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
        let shown = prefixes.join(", ");
        self.blocking_under(&shown, move || {
            let mut found = (0, 0);
            for p in &prefixes {
                let top = p.is_empty();
                sweep_into(&root.join(p), !top, age, dry_run, &mut found)?;
            }
            Ok(found)
        })
        .await
    }
}

/// The `.tmp-*` files of [`write_atomic`] in `dir` (and below it, with `deep`) last written
/// more than `age` ago, counted into `found` (files, bytes freed) and removed unless
/// `dry_run`. An entry that vanishes meanwhile (its write finished) is skipped; a name that
/// is also an object's (a crash between `put_new`'s link and unlink) frees no bytes.
fn sweep_into(
    dir: &Path,
    deep: bool,
    age: std::time::Duration,
    dry_run: bool,
    found: &mut (u64, u64),
) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let named =
        |e: io::Error, path: &Path| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let Some(entries) = read_dir_if_any(dir).map_err(|e| named(e, dir))? else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(|e| named(e, dir))?;
        let (name, path) = (entry.file_name(), entry.path());
        let kind = match entry.file_type() {
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(named(e, &path)),
        };
        if kind.is_dir() {
            if deep && !name.to_string_lossy().starts_with('.') {
                sweep_into(&path, deep, age, dry_run, found)?;
            }
            continue;
        }
        if !kind.is_file() || !name.to_string_lossy().starts_with(".tmp-") {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(named(e, &path)),
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|elapsed| elapsed > age);
        if !old {
            continue;
        }
        if !dry_run {
            match fs::remove_file(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                other => other.map_err(|e| named(e, &path))?,
            }
        }
        found.0 += 1;
        if meta.nlink() == 1 {
            found.1 += meta.len();
        }
    }
    Ok(())
}
