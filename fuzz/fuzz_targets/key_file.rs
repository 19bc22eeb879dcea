//! `--key-file` contents: any bytes. Must never panic, and must give a secret of at least
//! 32 bytes or none: exactly the 32 decoded bytes for a file in our own format, the file
//! itself for any other.
#![no_main]
use blockvault::keys::{KEY_FILE_PREFIX, parse_key_file};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ours = std::str::from_utf8(data)
        .ok()
        .is_some_and(|t| t.trim().starts_with(KEY_FILE_PREFIX));
    match parse_key_file(data) {
        Some(secret) if ours => assert_eq!(secret.len(), 32, "our format holds 32 bytes"),
        Some(secret) => assert_eq!(&secret[..], data, "a file of the user's own is its bytes"),
        None => assert!(ours || data.len() < 32, "a file of 32 bytes or more was refused"),
    }
});
