//! Errors a caller (or `main`, choosing an exit code) must tell apart. Everything else travels
//! as `anyhow` with context naming the object, series, version or path.

use crate::format::FormatError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A stored object failed authentication, a checksum, its id, or a structural check. The
    /// reason is the error's source (printed by `{:#}`), not repeated here.
    #[error("{what} {}", if matches!(.source, FormatError::UnsupportedVersion { .. }) { "cannot be read" } else { "is damaged" })]
    Damaged {
        what: String,
        #[source]
        source: FormatError,
    },
    /// A command that looks for damage (check, list) found some and has reported it; the
    /// message sums it up.
    #[error("{0}")]
    DamageFound(String),
    /// An object that a manifest or pointer refers to is not in the store.
    #[error("{what} is missing from the repository")]
    Missing { what: String },
    #[error("wrong passphrase or key file for the repository at {repo}")]
    WrongKey { repo: String },
    #[error("the repository at {repo} is locked: {holder}")]
    Locked { repo: String, holder: String },
    /// The reader of standard output went away (`restore - | head`): not a failure.
    #[error("standard output was closed")]
    OutputClosed,
    /// A stop signal arrived (`crate::interrupt`); the exit code is 128 + its number, as a
    /// shell reports a process that the signal ended.
    #[error("interrupted by {}", crate::sys::signal_name(*.signal))]
    Interrupted { signal: i32 },
}

/// Documented exit codes (README "Exit codes").
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const DAMAGE: i32 = 3;
    pub const WRONG_KEY: i32 = 4;
    pub const LOCKED: i32 = 5;

    /// Stopped by signal `sig` (SIGINT: 130, SIGTERM: 143, SIGHUP: 129).
    pub fn signalled(sig: i32) -> i32 {
        128 + sig
    }
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Damaged { .. } | Error::Missing { .. } | Error::DamageFound(_) => exit::DAMAGE,
            Error::WrongKey { .. } => exit::WRONG_KEY,
            Error::Locked { .. } => exit::LOCKED,
            Error::OutputClosed => exit::OK,
            Error::Interrupted { signal } => exit::signalled(*signal),
        }
    }
}

/// Whether `e` says a stored object is damaged (anywhere in its chain of causes), as opposed
/// to a failure to reach it.
pub fn is_damage(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| matches!(c.downcast_ref::<Error>(), Some(Error::Damaged { .. })))
}

/// The first `max` of `items`, joined, and how many more there are: an error about 800
/// versions should not be 800 names long.
pub fn listed(items: &[impl AsRef<str>], max: usize) -> String {
    let shown: Vec<&str> = items.iter().take(max).map(AsRef::as_ref).collect();
    match items.len().saturating_sub(max) {
        0 => shown.join(", "),
        more => format!("{}, and {more} more", shown.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_lists_are_cut_short_with_a_count() {
        let items: Vec<String> = (1..=12).map(|i| i.to_string()).collect();
        assert_eq!(super::listed(&items[..3], 10), "1, 2, 3");
        assert_eq!(
            super::listed(&items, 10),
            "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, and 2 more"
        );
    }
}
