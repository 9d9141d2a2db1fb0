//! `LengthPrefixedCodec` on arbitrary bytes in arbitrary chunks, and on its
//! own encoding. It never panics; no frame exceeds the maximum; the buffer's
//! capacity is bounded by what was actually fed (never by what a header
//! announces, even when the maximum allows 4 GiB); and encode -> decode in any
//! split gives back the frames.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tcpkit::ErrorKind;
use tcpkit::codec::LengthPrefixedCodec;
use tokio_util::codec::{Decoder, Encoder};

#[derive(Debug, Arbitrary)]
struct Input {
    max: u8,
    /// With a maximum of `u32::MAX`, a 4 GiB header is legal and must still
    /// cost nothing until its bytes arrive.
    huge_max: bool,
    chunks: Vec<Vec<u8>>,
    frames: Vec<Vec<u8>>,
}

/// `BytesMut` grows like `Vec` (doubling), so what it holds is bounded by
/// twice what was written into it plus a small constant.
fn capacity_bound(fed: usize) -> usize {
    2 * fed + 64
}

fn raw_bytes(input: &Input, max: usize) {
    let mut codec = LengthPrefixedCodec::new(max);
    let mut buf = BytesMut::new();
    let mut fed = 0usize;
    for chunk in &input.chunks {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => assert!(frame.len() <= max),
                Ok(None) => break,
                Err(err) => {
                    assert_eq!(err.kind(), ErrorKind::FrameTooLarge);
                    return;
                }
            }
            assert!(buf.capacity() <= capacity_bound(fed));
        }
        assert!(
            buf.capacity() <= capacity_bound(fed),
            "capacity {} after {fed} bytes fed",
            buf.capacity()
        );
    }
    match codec.decode_eof(&mut buf) {
        Ok(Some(frame)) => assert!(frame.len() <= max),
        Ok(None) => assert!(buf.is_empty()),
        Err(err) => assert!(
            matches!(
                err.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::FrameTooLarge
            ),
            "{err}"
        ),
    }
}

fn round_trip(input: &Input, max: usize) {
    let mut codec = LengthPrefixedCodec::new(max);
    let mut wire = BytesMut::new();
    let mut sent = Vec::new();
    for frame in &input.frames {
        let before = wire.len();
        match codec.encode(frame, &mut wire) {
            Ok(()) => sent.push(Bytes::copy_from_slice(frame)),
            Err(err) => {
                assert!(frame.len() > max);
                assert_eq!(err.kind(), ErrorKind::FrameTooLarge);
                assert_eq!(wire.len(), before, "a rejected frame left bytes behind");
            }
        }
    }
    // Split the wire where the chunk lengths say (at least one byte each).
    let mut splits = input.chunks.iter().map(|c| c.len().max(1)).cycle();
    let mut rest = &wire[..];
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    while !rest.is_empty() {
        let n = splits.next().unwrap_or(rest.len()).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(frame) = codec.decode(&mut buf).expect("own encoding decodes") {
            got.push(frame);
        }
    }
    assert_eq!(codec.decode_eof(&mut buf).expect("no partial frame"), None);
    assert_eq!(got, sent);
}

fuzz_target!(|input: Input| {
    let max = if input.huge_max {
        u32::MAX as usize
    } else {
        usize::from(input.max % 64)
    };
    raw_bytes(&input, max);
    round_trip(&input, max);
});
