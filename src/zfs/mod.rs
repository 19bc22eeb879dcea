//! ZFS send streams: what a stored stream is (a snapshot, its GUID, the base it needs), how
//! stored streams chain into restorable snapshots, and the `zfs` commands that make and
//! receive them.
//!
//! - [`stream`] walks a send stream as it flows and validates every record and checksum
//!   (pure, no I/O).
//! - [`facts`] turns what the stream said into the facts a manifest records (its `extra`
//!   map, format-spec 6.4) and back.
//! - [`chain`] decides, from those facts alone, which versions are restorable and what each
//!   needs (pure): the one rule every command that removes versions obeys.
//! - [`cmd`] runs `zfs send`, `zfs list`, `zfs get` and `zfs receive`.

pub mod chain;
pub mod cmd;
pub mod facts;
pub mod stream;

pub use chain::{Chains, Status};
pub use facts::ZfsFacts;
