//! The bridge from async orchestration to the rayon pool, where hashing, compression and
//! sealing run so they never stall the I/O tasks.

use anyhow::{Result, anyhow};

pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = tx.send(f());
    });
    rx.await.map_err(|_| anyhow!("a worker thread panicked"))
}
