//! Stored objects as anyone who can write to the store can make them: the checksum of an
//! unencrypted object is not keyed, so any body can arrive with a valid one. Byte 0 picks
//! the codec (low bit: zstd), the rest is the body; it is framed as each kind and read
//! through `objects`, exactly as a reader does. Must never panic, never allocate beyond the
//! kind's limit, and whatever is accepted must satisfy the reader's rules.
#![no_main]
use blockvault::format::key::Kdf;
use blockvault::format::{Codec, Kind};
use blockvault::keys::{self, Keys, Secret};
use blockvault::objects;
use blockvault::seal;
use blockvault::zfs::facts::ZfsFacts;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use zeroize::Zeroizing;

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| Keys::unencrypted(&[7; 32]))
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, body)) = input.split_first() else {
        return;
    };
    let codec = if control & 1 == 1 {
        Codec::Zstd
    } else {
        Codec::Stored
    };
    let frame = |kind, name| seal::frame(kind, None, name, codec, body, &[0; 24]);

    let _ = objects::config(&frame(Kind::Config, "config"));

    let name = "keys/00112233445566778899aabbccddeeff";
    if let Ok(obj) = objects::key(name, &frame(Kind::Key, name)) {
        let file = Secret::KeyFile(Zeroizing::new(vec![7; 32]));
        assert!(keys::unwrap(&obj, &file, name, &[0; 32]).is_err(), "forged key opened");
        // Argon2 only where it is cheap, so the fuzzer keeps its pace; a hostile cost is
        // refused before any memory is taken.
        if let Kdf::Argon2id { memory_kib, passes, .. } = obj.kdf
            && (memory_kib <= 256 && passes <= 4 || memory_kib > 4 << 20 || passes > 64)
        {
            let p = Secret::Passphrase(Zeroizing::new("x".into()));
            assert!(keys::unwrap(&obj, &p, name, &[0; 32]).is_err(), "forged key opened");
        }
    }

    let name = "manifests/tank%2Fvm/2026-11-22T130507Z";
    if let Ok(m) = objects::manifest(None, name, &frame(Kind::Manifest, name)) {
        let total: u64 = m.chunks.iter().map(|c| u64::from(c.len())).sum();
        assert_eq!(total, m.size, "an accepted manifest's chunks cover its size");
        let _ = ZfsFacts::from_extra(&m.extra);
    }

    let _ = objects::pointer(None, "current/tank%2Fvm", &frame(Kind::Current, "current/tank%2Fvm"));
    let _ = objects::lock(None, "locks/0123", &frame(Kind::Lock, "locks/0123"));

    // A chunk opens, and then its id is checked against what it holds.
    let name = "chunks/00/00";
    let obj = frame(Kind::Chunk, name);
    if let Ok(plain) = seal::open(Kind::Chunk, None, name, &obj, objects::max_len(Kind::Chunk)) {
        let id = keys().id.id_of(&plain);
        assert_eq!(seal::open_chunk(keys(), &id, name, &obj).ok(), Some(plain));
        let other = keys().id.id_of(b"another chunk");
        assert!(seal::open_chunk(keys(), &other, name, &obj).is_err() || id == other);
    }
});
