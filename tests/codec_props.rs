//! Properties of the codecs that the unit tests beside them do not state:
//! memory a peer can make the decoder hold is bounded by what the peer
//! actually sent (never by what a header announces), and a line decoder
//! holds no more than one unfinished line of at most `max + 1` bytes between
//! reads. The cargo-fuzz targets in `fuzz/` check the same invariants on
//! fuzzer-chosen input; these run on every `cargo test`.

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;
use tcpkit::ErrorKind;
use tcpkit::codec::{LengthPrefixedCodec, LineCodec};
use tokio_util::codec::Decoder;

/// `BytesMut` grows like `Vec` (by doubling), so a buffer that was only ever
/// fed `fed` bytes holds at most about twice that.
fn capacity_bound(fed: usize) -> usize {
    2 * fed + 64
}

proptest! {
    /// With a maximum that allows any `u32` length, a header announcing up
    /// to 4 GiB followed by a trickle of bytes reserves nothing extra.
    #[test]
    fn length_decoder_capacity_tracks_bytes_fed_not_announced(
        announced in any::<u32>(),
        chunks in vec(vec(any::<u8>(), 0..64), 0..16),
    ) {
        let mut codec = LengthPrefixedCodec::new(u32::MAX as usize);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&announced.to_be_bytes());
        let mut fed = 4;
        for chunk in &chunks {
            buf.extend_from_slice(chunk);
            fed += chunk.len();
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                prop_assert!(frame.len() <= fed);
            }
            prop_assert!(
                buf.capacity() <= capacity_bound(fed),
                "capacity {} after {} bytes fed (header announced {})",
                buf.capacity(), fed, announced
            );
        }
    }

    /// A header over the maximum is rejected at once, before its payload,
    /// and leaves the buffer as it was.
    #[test]
    fn length_decoder_rejects_oversized_header_without_allocating(
        max in 0usize..1024,
        announced in any::<u32>(),
        tail in vec(any::<u8>(), 0..8),
    ) {
        prop_assume!(announced as usize > max);
        let mut codec = LengthPrefixedCodec::new(max);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&announced.to_be_bytes());
        buf.extend_from_slice(&tail);
        let (len, cap) = (buf.len(), buf.capacity());
        let err = codec.decode(&mut buf).unwrap_err();
        prop_assert_eq!(err.kind(), ErrorKind::FrameTooLarge);
        prop_assert_eq!((buf.len(), buf.capacity()), (len, cap));
    }

    /// Whatever the chunking, after each read the line decoder either failed
    /// or holds at most one unfinished line of `max + 1` bytes (a `\r` may
    /// still be followed by its `\n`), and every line it gave is `<= max`.
    #[test]
    fn line_decoder_holds_at_most_one_short_partial_line(
        max in 1usize..64,
        chunks in vec(vec(prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..48), 0..24),
    ) {
        let mut codec = LineCodec::new(max);
        let mut buf = BytesMut::new();
        'feed: for chunk in &chunks {
            buf.extend_from_slice(chunk);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(line)) => prop_assert!(line.len() <= max),
                    Ok(None) => break,
                    Err(err) => {
                        prop_assert_eq!(err.kind(), ErrorKind::LineTooLong);
                        break 'feed;
                    }
                }
            }
            prop_assert!(buf.len() <= max + 1, "{} bytes held, max {}", buf.len(), max);
            prop_assert!(!buf.contains(&b'\n'));
        }
    }
}
