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
    loop {
        if let Err(e) = check() {
            return e;
        }
        tokio::time::sleep(POLL).await;
    }
}
