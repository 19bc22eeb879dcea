//! ZFS send streams: any bytes, fed in pieces whose sizes come from the first input bytes.
//! Must never panic, and must accept a stream only if feeding the same bytes in one piece
//! accepts it too, with the same StreamInfo.
#![no_main]
use blockvault::zfs::stream::StreamParser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // Byte 0: require a ZFS stream (low bit) and how many piece sizes follow (up to 7).
    let Some((&control, rest)) = input.split_first() else {
        return;
    };
    let require = control & 1 == 1;
    let (sizes, data) = rest.split_at(usize::from(control >> 1 & 7).min(rest.len()));
    // Sizes 1..=4096, skewed small, so piece ends fall inside headers and payloads alike.
    let mut sizes: Vec<usize> = sizes
        .iter()
        .map(|&b| 1 + usize::from(b) * usize::from(b) / 16)
        .collect();
    if sizes.is_empty() {
        sizes.push(usize::MAX);
    }

    let mut pieces = StreamParser::new(require);
    let mut fed = Ok(());
    let mut left = data;
    for &size in sizes.iter().cycle() {
        if left.is_empty() || fed.is_err() {
            break;
        }
        let (piece, tail) = left.split_at(size.min(left.len()));
        fed = pieces.feed(piece);
        left = tail;
    }
    let result = fed.and_then(|()| pieces.finish());
    // Sticky: asking again gives the same answer.
    assert_eq!(pieces.finish(), result);

    let mut whole = StreamParser::new(require);
    let once = whole.feed(data).and_then(|()| whole.finish());
    match (&result, &once) {
        (Ok(Some(info)), _) => {
            assert_eq!(once, Ok(Some(info.clone())), "accepted in pieces only");
            assert_eq!(info.length, data.len() as u64);
            assert_eq!(pieces.offset(), data.len() as u64);
            assert!(pieces.is_complete() && pieces.is_zfs() == Some(true));
        }
        (Ok(None), _) => {
            assert!(!require, "non-ZFS input accepted although required");
            assert_eq!(once, Ok(None));
        }
        (Err(e), Err(e1)) => {
            assert!(e.offset <= data.len() as u64, "error beyond the input: {e}");
            assert_eq!(
                e.offset, e1.offset,
                "the error moved with the piece sizes: {e} / {e1}"
            );
        }
        (Err(e), Ok(_)) => panic!("rejected in pieces only: {e}"),
    }
});
