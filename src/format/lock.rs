//! `locks/<lock-id>`: who holds the repository, how, and since when.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockMode {
    /// Backups and restores: many at once.
    Shared,
    /// Garbage collection: alone.
    Exclusive,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub mode: LockMode,
    pub host: String,
    pub pid: u32,
    /// What the holder is doing, for error messages ("backup of vm101").
    pub purpose: String,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds of the last heartbeat; a lock whose heartbeat is older than the stale
    /// limit is ignored.
    pub heartbeat: i64,
}
