//! All integration tests, one binary (ripgrep's layout): helpers in `util`, one module per area.

mod s3_servers;
mod util;

mod bad_input;
mod cli_args;
mod crash;
mod damage;
mod devices;
mod e2e;
mod format_vectors;
mod gc;
mod jobs;
mod keys;
mod restore_targets;
mod retention;
mod s3;
mod signals;
mod store_conformance;
mod zfs;
mod zfs_streams;
