//! Stored objects as a reader meets them: any bytes, opened as each kind, with and without a
//! key. Must never panic or allocate beyond the limits, and must never accept a forgery.
#![no_main]
use blockvault::format::Kind;
use blockvault::keys::{Keys, MasterKey};
use blockvault::seal;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| Keys::unencrypted(&[7; 32]))
}

fn master_keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| Keys::from_master(&MasterKey::random()))
}

fuzz_target!(|data: &[u8]| {
    for kind in [Kind::Config, Kind::Key, Kind::Chunk, Kind::Manifest, Kind::Current, Kind::Lock] {
        let _ = seal::open(kind, None, "chunks/ab/x", data, 1 << 20);
        // Without the random key nobody can forge an encrypted object: opening must fail.
        assert!(seal::open(kind, master_keys().seal.as_ref(), "chunks/ab/x", data, 1 << 20).is_err());
    }
    let id = keys().id.id_of(b"");
    let _ = seal::open_chunk(keys(), &id, "chunks/ab/x", data);
});
