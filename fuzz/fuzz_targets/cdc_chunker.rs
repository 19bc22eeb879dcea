//! Content-defined chunking of any stream: chunks cover the input exactly, in order, within
//! the bounds, however the reader splits it.
#![no_main]
use blockvault::chunker::CdcChunker;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut total = 0usize;
    for (i, c) in CdcChunker::new(data, 64, 256, 1024, 3).enumerate() {
        let Ok(c) = c else { panic!("reading a slice cannot fail") };
        assert_eq!(c.offset as usize, total, "chunk {i} does not follow the previous one");
        assert!(!c.data.is_empty() && c.data.len() <= 1024);
        assert_eq!(&data[total..total + c.data.len()], &c.data[..]);
        total += c.data.len();
    }
    assert_eq!(total, data.len());
});
