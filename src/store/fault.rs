//! A fault-injecting wrapper around any [`Store`], for the fault and crash tests: errors on
//! chosen or random operations, latency, a write that fails after the object was stored, a
//! read that returns fewer bytes, and death of the process at an exact operation.
//!
//! The tests drive the real binary, so the wrapper is switched on by the environment variable
//! `BLOCKVAULT_TEST_FAULTS` (never set in normal use; the CLI says so on stderr when it is),
//! a comma-separated list of:
//!
//! | setting | effect |
//! |---|---|
//! | `die-at=N` | the N-th operation (1-based, any kind) kills the process before it happens |
//! | `die-after=N` | the N-th operation happens, then kills the process before it returns |
//! | `fail-writes=P` | each put, put_new or delete fails with probability P (0..=1) before it happens |
//! | `fail-after-put=P` | each put or put_new is carried out, then reported as failed, with probability P |
//! | `fail-reads=P` | each get, get_range, exists or list fails with probability P |
//! | `short-reads=P` | each get returns its object minus its last byte, with probability P |
//! | `latency-ms=N` | every operation first sleeps N ms |
//! | `barrier=N` | the first put or put_new of an object `only` names (any, without it) waits until N processes with this setting have reached theirs, or a minute has passed |
//! | `barrier-dir=PATH` | where those processes meet: each leaves a file there (needed with `barrier`) |
//! | `seed=S` | the seed of the random choices (default 0), so a failure is reproducible |
//! | `only=PREFIX` | errors and short reads hit only objects whose names start with PREFIX (`chunks/`) |
//!
//! "Kills the process" is `std::process::abort()`: like SIGKILL for everything this program
//! could leave behind, since no destructor, lock release or buffered write runs after it. It
//! happens at the exact operation asked for, which an outside SIGKILL after a delay cannot.

use super::{Placed, Requests, Store, StoreError};
use crate::retention::SplitMix64;
use async_trait::async_trait;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

pub const ENV: &str = "BLOCKVAULT_TEST_FAULTS";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    pub die_at: Option<u64>,
    pub die_after: Option<u64>,
    pub fail_writes: f64,
    pub fail_after_put: f64,
    pub fail_reads: f64,
    pub short_reads: f64,
    pub latency: Option<Duration>,
    /// `barrier` and `barrier-dir`.
    pub barrier: Option<(u64, std::path::PathBuf)>,
    pub seed: u64,
    pub only: Option<String>,
}

impl FaultPlan {
    pub fn parse(spec: &str) -> Result<FaultPlan, String> {
        let mut p = FaultPlan::default();
        let (mut barrier_count, mut barrier_dir) = (None, None);
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("{ENV}: {item:?} is not setting=value"))?;
            let int = || {
                v.parse::<u64>()
                    .map_err(|_| format!("{ENV}: {k}={v:?} is not a whole number"))
            };
            let prob = || match v.parse::<f64>() {
                Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
                _ => Err(format!("{ENV}: {k}={v:?} is not a probability in 0..=1")),
            };
            match k {
                "die-at" => p.die_at = Some(int()?),
                "die-after" => p.die_after = Some(int()?),
                "fail-writes" => p.fail_writes = prob()?,
                "fail-after-put" => p.fail_after_put = prob()?,
                "fail-reads" => p.fail_reads = prob()?,
                "short-reads" => p.short_reads = prob()?,
                "latency-ms" => p.latency = Some(Duration::from_millis(int()?)),
                "barrier" => barrier_count = Some(int()?),
                "barrier-dir" => barrier_dir = Some(std::path::PathBuf::from(v)),
                "seed" => p.seed = int()?,
                "only" => p.only = Some(v.to_string()),
                _ => return Err(format!("{ENV}: unknown setting {k:?}")),
            }
        }
        p.barrier = match (barrier_count, barrier_dir) {
            (Some(n), Some(dir)) => Some((n, dir)),
            (None, None) => None,
            _ => return Err(format!("{ENV}: barrier and barrier-dir go together")),
        };
        Ok(p)
    }
}

pub struct Faulty {
    inner: Arc<dyn Store>,
    plan: FaultPlan,
    ops: AtomicU64,
    barrier_passed: AtomicBool,
    rng: Mutex<SplitMix64>,
}

impl Faulty {
    pub fn new(inner: Arc<dyn Store>, plan: FaultPlan) -> Faulty {
        let seed = plan.seed;
        Faulty {
            inner,
            plan,
            ops: AtomicU64::new(0),
            barrier_passed: AtomicBool::new(false),
            rng: Mutex::new(SplitMix64(seed)),
        }
    }

    /// Draws from a fixed generator, so a seed names one sequence of faults.
    fn chance(&self, key: &str, p: f64) -> bool {
        if p <= 0.0
            || self
                .plan
                .only
                .as_deref()
                .is_some_and(|o| !key.starts_with(o))
        {
            return false;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        rng.next_f64() < p
    }

    /// `barrier`, for a put of `key`: lets processes that race in a test all get this far
    /// (past their checks that a name is free, say) before any of them writes.
    async fn before_put(&self, key: &str) {
        let only = self.plan.only.as_deref();
        let Some((n, dir)) = &self.plan.barrier else {
            return;
        };
        if only.is_some_and(|o| !key.starts_with(o))
            || self.barrier_passed.swap(true, Ordering::SeqCst)
        {
            return;
        }
        // A barrier that cannot be joined leaves the test to fail on what it asserts.
        let _ = std::fs::write(dir.join(std::process::id().to_string()), b"");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let arrived = || std::fs::read_dir(dir).map_or(0, |d| d.count() as u64);
        while arrived() < *n && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Counts the operation; dies here if asked to die before it. Returns its number.
    async fn begin(&self) -> u64 {
        if let Some(d) = self.plan.latency {
            tokio::time::sleep(d).await;
        }
        let n = self.ops.fetch_add(1, Ordering::SeqCst) + 1;
        if self.plan.die_at == Some(n) {
            std::process::abort();
        }
        n
    }

    fn end(&self, n: u64) {
        if self.plan.die_after == Some(n) {
            std::process::abort();
        }
    }

    fn injected(&self, key: &str, what: &str) -> StoreError {
        StoreError::Io {
            store: self.inner.describe(),
            key: key.to_string(),
            cause: std::io::Error::other(format!("injected fault: {what}")),
        }
    }

    async fn write<T>(
        &self,
        key: &str,
        op: impl std::future::Future<Output = Result<T, StoreError>>,
        is_put: bool,
    ) -> Result<T, StoreError> {
        let n = self.begin().await;
        if self.chance(key, self.plan.fail_writes) {
            return Err(self.injected(key, "write refused"));
        }
        let r = op.await;
        self.end(n);
        if is_put && r.is_ok() && self.chance(key, self.plan.fail_after_put) {
            return Err(self.injected(key, "write reported failed after it was stored"));
        }
        r
    }

    async fn read<T>(
        &self,
        key: &str,
        op: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let n = self.begin().await;
        if self.chance(key, self.plan.fail_reads) {
            return Err(self.injected(key, "read failed"));
        }
        let r = op.await;
        self.end(n);
        r
    }
}

#[async_trait]
impl Store for Faulty {
    fn is_local(&self) -> bool {
        self.inner.is_local()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn requests(&self) -> Requests {
        self.inner.requests()
    }

    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
        self.before_put(key).await;
        self.write(key, self.inner.put(key, data), true).await
    }

    async fn put_unsynced(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
        self.write(key, self.inner.put_unsynced(key, data), true)
            .await
    }

    async fn put_unsynced_placed(&self, key: &str, object: Placed) -> Result<Vec<u8>, StoreError> {
        self.write(key, self.inner.put_unsynced_placed(key, object), true)
            .await
    }

    async fn put_new(&self, key: &str, data: Vec<u8>) -> Result<bool, StoreError> {
        self.before_put(key).await;
        self.write(key, self.inner.put_new(key, data), true).await
    }

    async fn sync(&self, prefix: &str) -> Result<(), StoreError> {
        self.write(prefix, self.inner.sync(prefix), false).await
    }

    async fn creates_atomically(&self) -> Result<bool, StoreError> {
        self.inner.creates_atomically().await
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let mut bytes = self.read(key, self.inner.get(key)).await?;
        if !bytes.is_empty() && self.chance(key, self.plan.short_reads) {
            bytes.pop();
        }
        Ok(bytes)
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        self.read(key, self.inner.get_range(key, offset, len)).await
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.read(key, self.inner.exists(key)).await
    }

    async fn list_sizes(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(prefix, self.inner.list_sizes(prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.write(key, self.inner.delete(key), false).await
    }

    async fn sweep_leftovers(
        &self,
        prefixes: &[&str],
        age: std::time::Duration,
        dry_run: bool,
    ) -> Result<(u64, u64), StoreError> {
        self.inner.sweep_leftovers(prefixes, age, dry_run).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Memory;

    #[test]
    fn plans_parse_and_refuse_nonsense() {
        let p = FaultPlan::parse("die-at=7, fail-writes=0.5,seed=3,latency-ms=2").unwrap();
        assert_eq!(p.die_at, Some(7));
        assert_eq!(p.fail_writes, 0.5);
        assert_eq!(p.seed, 3);
        assert_eq!(p.latency, Some(Duration::from_millis(2)));
        assert!(FaultPlan::parse("fail-writes=2").is_err());
        assert!(FaultPlan::parse("explode=1").is_err());
        assert!(FaultPlan::parse("die-at").is_err());
        assert!(FaultPlan::parse("barrier=3").is_err());
        let p = FaultPlan::parse("barrier=3,barrier-dir=/tmp/meet").unwrap();
        assert_eq!(p.barrier, Some((3, "/tmp/meet".into())));
    }

    #[tokio::test]
    async fn a_put_reported_failed_is_stored_all_the_same() {
        let inner: Arc<dyn Store> = Arc::new(Memory::new());
        let f = Faulty::new(
            inner.clone(),
            FaultPlan {
                fail_after_put: 1.0,
                short_reads: 1.0,
                ..FaultPlan::default()
            },
        );
        assert!(f.put("a/b", vec![1, 2, 3]).await.is_err());
        assert_eq!(inner.get("a/b").await.unwrap(), vec![1, 2, 3]);
        assert_eq!(f.get("a/b").await.unwrap(), vec![1, 2], "a short read");
    }

    #[test]
    fn a_wrapped_store_is_as_local_as_the_store_it_wraps() {
        // A fault run on a local directory must get a local directory's defaults (a backup's
        // chunks in flight), not S3's.
        let f = Faulty::new(Arc::new(Memory::new()), FaultPlan::default());
        assert!(f.is_local());
        let dir = tempfile::tempdir().unwrap();
        let f = Faulty::new(
            Arc::new(crate::store::LocalDir::new(dir.path())),
            FaultPlan::default(),
        );
        assert!(f.is_local());
    }
}
