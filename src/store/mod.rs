//! Where objects live: keys and bytes, nothing of chunks, manifests or encryption.
//!
//! Every backend states the same contract (checked by the conformance suite in
//! `tests/store_conformance.rs`, which runs against each of them):
//! - `put` is atomic and durable when it returns: a reader sees the whole old object or the
//!   whole new one, never a mix, and a crash after `put` returned does not lose it.
//! - `put_new` creates an object only if none exists under that name, atomically, and says
//!   whether it did.
//! - `get` of a missing object is `StoreError::NotFound`; `delete` of one is not an error.
//! - `list` returns every key under a prefix, sorted, however many there are.

pub mod local_dir;
pub mod memory;

pub use local_dir::LocalDir;
pub use memory::Memory;

use async_trait::async_trait;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{key} not found in {store}")]
    NotFound { store: String, key: String },
    #[error("{key} in {store}: {source}")]
    Io {
        store: String,
        key: String,
        #[source]
        source: io::Error,
    },
    #[error("{store}: invalid object name {key:?}")]
    BadKey { store: String, key: String },
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Where this store is, for messages: "local directory /srv/vault".
    fn describe(&self) -> String;
    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError>;
    /// Creates `key` only if it does not exist yet; `Ok(false)` when it already did.
    async fn put_new(&self, key: &str, data: Vec<u8>) -> Result<bool, StoreError>;
    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError>;
    /// Up to `len` bytes from `offset`; fewer at the end of the object.
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError>;
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
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
