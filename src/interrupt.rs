//! Stopping on SIGINT, SIGTERM or SIGHUP without leaving a lock or a partial target behind.
//!
//! Commands that hold a lock for long (backup, restore, check, gc, run) call [`enable`]. The
//! first such signal is then only recorded (`sys::stop_gracefully`); the work asks [`check`]
//! between units of work (a chunk, a batch of deletes, a job) and races what it waits for
//! (a source's next chunk, a command's exit) against [`asked`], then fails like any other
//! failure does: the lock is removed, a partial target deleted, nothing committed. A second
//! signal ends the process at once.

use crate::error::Error;
use crate::sys;
use std::time::Duration;

/// How often [`asked`] looks: a signal handler cannot wake a task, and the flag costs nothing
/// to read.
const POLL: Duration = Duration::from_millis(50);

pub fn enable() {
    sys::stop_gracefully();
}

/// Fails once a stop was asked.
pub fn check() -> Result<(), Error> {
    match sys::stop_asked() {
        Some(signal) => Err(Error::Interrupted { signal }),
        None => Ok(()),
    }
}

/// Resolves once a stop is asked, with the error to fail with.
pub async fn asked() -> Error {
    if let Err(e) = check() {
        return e;
    }
    // One thread looks at the flag for every waiter, where each waiter (a request on S3, a
    // wait for a chunk) used to start a timer of its own.
    let mut rx = watcher().clone();
    let _ = rx.wait_for(|asked| *asked).await;
    match check() {
        Err(e) => e,
        // Only if the watcher were gone, which it never is: no stop was asked.
        Ok(()) => std::future::pending::<Error>().await,
    }
}

fn watcher() -> &'static tokio::sync::watch::Receiver<bool> {
    static WATCH: std::sync::OnceLock<tokio::sync::watch::Receiver<bool>> =
        std::sync::OnceLock::new();
    WATCH.get_or_init(|| {
        let (tx, rx) = tokio::sync::watch::channel(false);
        std::thread::spawn(move || {
            while sys::stop_asked().is_none() {
                std::thread::sleep(POLL);
            }
            let _ = tx.send(true);
            // Kept, so that receivers never see the channel closed.
            loop {
                std::thread::park();
            }
        });
        rx
    })
}
