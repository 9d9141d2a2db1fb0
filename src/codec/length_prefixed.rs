//! [`LengthPrefixedCodec`]: `u32` big-endian length, then the payload.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{Error, ErrorKind, code};

/// The default maximum frame: 8 MiB, as tokio-util's `LengthDelimitedCodec`.
pub const DEFAULT_MAX_FRAME: usize = 8 * 1024 * 1024;

const HEADER: usize = 4;

/// Frames of a 4-byte big-endian length followed by that many bytes.
///
/// A header announcing more than `max_frame` is an error at once. Otherwise
/// the decoder waits for the bytes without reserving the announced size, so a
/// peer that announces 4 GiB and sends nothing costs nothing. A zero-length
/// frame is a valid empty message. EOF in the middle of a frame is
/// [`ErrorKind::UnexpectedEof`].
///
/// ```
/// use bytes::BytesMut;
/// use tcpkit::codec::LengthPrefixedCodec;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = LengthPrefixedCodec::new(1024);
/// let mut buf = BytesMut::new();
/// codec.encode(&b"hello"[..], &mut buf)?;
/// assert_eq!(&buf[..], b"\0\0\0\x05hello");
/// assert_eq!(codec.decode(&mut buf)?.as_deref(), Some(&b"hello"[..]));
/// # Ok::<(), tcpkit::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LengthPrefixedCodec {
    max_frame: usize,
}

impl LengthPrefixedCodec {
    /// A codec that rejects frames larger than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        LengthPrefixedCodec { max_frame }
    }

    /// The configured maximum frame size.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    fn too_large(&self, len: usize) -> Error {
        Error::new(
            ErrorKind::FrameTooLarge,
            code::FRAME_TOO_LARGE,
            format!(
                "frame of {len} bytes exceeds the maximum of {} bytes",
                self.max_frame
            ),
        )
    }
}

impl Default for LengthPrefixedCodec {
    fn default() -> Self {
        LengthPrefixedCodec::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder for LengthPrefixedCodec {
    type Item = Bytes;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        let Some(header) = buf.get(..HEADER) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > self.max_frame {
            return Err(self.too_large(len));
        }
        if buf.len() < HEADER + len {
            return Ok(None);
        }
        buf.advance(HEADER);
        Ok(Some(buf.split_to(len).freeze()))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() => Ok(None),
            None => Err(Error::new(
                ErrorKind::UnexpectedEof,
                code::UNEXPECTED_EOF,
                format!(
                    "connection closed inside a frame ({} bytes of it received)",
                    buf.len()
                ),
            )),
        }
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for LengthPrefixedCodec {
    type Error = Error;

    fn encode(&mut self, frame: T, dst: &mut BytesMut) -> Result<(), Error> {
        let frame = frame.as_ref();
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|&l| l as usize <= self.max_frame)
            .ok_or_else(|| self.too_large(frame.len()))?;
        dst.reserve(HEADER + frame.len());
        dst.put_u32(len);
        dst.put_slice(frame);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_header_fails_without_allocating() {
        let mut codec = LengthPrefixedCodec::new(1024);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        let cap = buf.capacity();
        let err = codec.decode(&mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FrameTooLarge);
        assert!(err.message().contains("4294967295"));
        assert_eq!(buf.capacity(), cap);
    }

    #[test]
    fn waiting_for_a_big_frame_reserves_nothing() {
        let mut codec = LengthPrefixedCodec::new(usize::MAX);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1][..]);
        let cap = buf.capacity();
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(buf.capacity(), cap);
    }

    #[test]
    fn zero_length_and_truncated_frames() {
        let mut codec = LengthPrefixedCodec::new(16);
        let mut buf = BytesMut::from(&[0, 0, 0, 0][..]);
        assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some(&b""[..]));
        let mut buf = BytesMut::from(&[0, 0, 0, 3, b'a'][..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        let err = codec.decode_eof(&mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
        let mut buf = BytesMut::from(&[0, 0][..]);
        assert_eq!(
            codec.decode_eof(&mut buf).unwrap_err().kind(),
            ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn encoder_enforces_the_maximum() {
        let mut codec = LengthPrefixedCodec::new(2);
        let mut dst = BytesMut::new();
        assert_eq!(
            codec.encode(b"abc", &mut dst).unwrap_err().kind(),
            ErrorKind::FrameTooLarge
        );
        assert!(dst.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn round_trips_in_any_split(
            frames in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), 0..8),
            split in 1usize..17,
        ) {
            let mut codec = LengthPrefixedCodec::new(64);
            let mut wire = BytesMut::new();
            for f in &frames { codec.encode(f, &mut wire).unwrap(); }
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for chunk in wire.chunks(split) {
                buf.extend_from_slice(chunk);
                while let Some(f) = codec.decode(&mut buf).unwrap() { out.push(f.to_vec()); }
            }
            proptest::prop_assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
            proptest::prop_assert_eq!(out, frames);
        }
    }
}
