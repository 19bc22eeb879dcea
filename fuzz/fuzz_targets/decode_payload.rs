//! The postcard payloads inside objects (config, key, manifest, current pointer, lock): any
//! bytes, decoded as each. Must never panic, and must never allocate from a hostile length.
#![no_main]
use blockvault::format::config::Config;
use blockvault::format::decode_exact;
use blockvault::format::key::KeyObject;
use blockvault::format::lock::LockInfo;
use blockvault::format::pointer::CurrentPointer;
use blockvault::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_exact::<Config>(data);
    let _ = decode_exact::<KeyObject>(data);
    let _ = decode_exact::<CurrentPointer>(data);
    let _ = decode_exact::<LockInfo>(data);
    if let Ok(m) = Manifest::decode(data) {
        // A manifest that decodes is consistent: its chunks cover exactly its size.
        let total: u64 = m.chunks.iter().map(|c| u64::from(c.len())).sum();
        assert_eq!(total, m.size);
    }
});
