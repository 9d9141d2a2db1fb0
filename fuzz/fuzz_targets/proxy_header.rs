//! The PROXY header path as the server reads it: `proxy::frame` on every
//! prefix of the fuzzer's bytes (the server peeks whatever has arrived, in
//! any segmentation), then `proxy::parse` on what it framed. It never
//! panics; framing is monotone (a prefix is incomplete, or already has the
//! final answer), so how the bytes are split cannot change the outcome;
//! a complete header is within the caps and never longer than the bytes
//! seen; and a header that parses says the same after being encoded again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcpkit::proxy::{self, Frame, MAX_HEADER_BYTES, V1_MAX_BYTES, Version};

fuzz_target!(|bytes: &[u8]| {
    let full = proxy::frame(bytes);
    let mut settled = None;
    for k in 0..=bytes.len().min(MAX_HEADER_BYTES + 1) {
        let f = proxy::frame(&bytes[..k]);
        match settled {
            Some(answer) => assert_eq!(f, answer, "prefix of {k} bytes changed its mind"),
            None if f != Frame::Incomplete => {
                assert_eq!(f, full, "prefix of {k} bytes disagrees with the whole");
                settled = Some(f);
            }
            None => {}
        }
    }
    if bytes.len() >= MAX_HEADER_BYTES {
        assert_ne!(full, Frame::Incomplete, "{} bytes and still incomplete", bytes.len());
    }
    let Frame::Complete(len) = full else {
        return;
    };
    assert!(len <= bytes.len() && len <= MAX_HEADER_BYTES);
    let Ok(header) = proxy::parse(&bytes[..len]) else {
        return;
    };
    assert_eq!(header.len, len);
    if header.version == Version::V1 {
        assert!(len <= V1_MAX_BYTES);
    }
    if let (Some(src), Some(dst)) = (header.source, header.destination) {
        let again = proxy::parse(&proxy::encode(header.version, src, dst)).expect("re-encoded");
        let canonical = |a: std::net::SocketAddr| (a.ip().to_canonical(), a.port());
        assert_eq!(again.source.map(canonical), Some(canonical(src)));
        assert_eq!(again.destination.map(canonical), Some(canonical(dst)));
    }
});
