//! blockvault: content-addressed, deduplicating, encrypted backups of block devices, disk
//! images and streams.
//!
//! The data flow (DESIGN.md):
//!
//! ```text
//! source ─► chunker ─► id = keyed BLAKE3 ─► zero? hole : known? reference : seal ─► Store::put
//!  (source)  (chunker)   (chunk_id)                                 (seal)     (store)
//!                                   manifest ─► sealed ─► stored ─► current moved   (backup)
//! Store::get ─► open ─► verify id ─► positional or ordered writes                  (restore)
//! ```
//!
//! The pure core (chunker, chunk_id, keys, seal, format, objects, manifest, layout) does no
//! I/O and no async, so tests, fuzz targets and benches call it directly. `store` is keys and
//! bytes only; `repo` binds a store to its config, keys and layout; `backup` and `restore` are
//! the only modules that touch both the core and the store. Hashing, compression and sealing
//! run on rayon (`cpu`); storage I/O is async (tokio) with bounded concurrency.
//!
//! ZFS send streams (`zfs`) are validated as they flow through backup (a tee on the reading
//! thread, no temporary files) and again on their way out; their snapshot GUIDs chain
//! versions together, and `prune`, `forget` and `receive` (restore into `zfs receive`) obey
//! those chains.

pub mod aead;
pub mod backup;
pub mod check;
pub mod chunk_id;
pub mod chunker;
pub mod cli;
pub mod cpu;
pub mod devices;
pub mod direct;
pub mod error;
pub mod format;
pub mod gc;
pub mod interrupt;
pub mod jobs;
pub mod keys;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod objects;
pub mod pool;
pub mod progress;
pub mod prune;
pub mod receive;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod seal;
pub mod source;
pub mod store;
pub mod sys;
pub mod zfs;
