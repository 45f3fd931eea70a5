//! Frame and message decoding on arbitrary bytes: `frame_len` and `decode`
//! never panic, accept only lengths in 1..=MAX_FRAME, and whatever decodes
//! encodes again to a frame that decodes to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pchat::proto::wire::{self, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    // The input as a stream of frames, read the way the event loop does.
    let mut rest = data;
    loop {
        match wire::frame_len(rest) {
            Ok(Some(n)) => {
                let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
                assert!((1..=MAX_FRAME).contains(&len) && n == len + 4 && n <= rest.len());
                check(&rest[4..n]);
                rest = &rest[n..];
            }
            Ok(None) => break,
            Err(_) => break,
        }
    }
    // And the input as one frame body.
    check(data);
});

fn check(body: &[u8]) {
    if let Ok(m) = wire::decode(body) {
        let f = wire::frame(&m).expect("what decodes encodes");
        assert_eq!(wire::frame_len(&f), Ok(Some(f.len())));
        assert_eq!(wire::decode(&f[4..]), Ok(m));
    }
}
