//! [`LineCodec`]: newline-delimited byte lines with a maximum length.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{Error, ErrorKind, code};

/// The default maximum line length: 8 KiB.
pub const DEFAULT_MAX_LINE: usize = 8 * 1024;

/// Splits bytes into lines ending in `\n` (a `\r` before it is dropped too).
///
/// Lines are raw bytes: invalid UTF-8 and NUL pass through untouched. A line
/// longer than `max_length` (terminator excluded) is an error as soon as
/// `max_length + 1` bytes without a newline have arrived, so the buffer never
/// holds more than about `max_length` plus one read.
///
/// ```
/// use bytes::BytesMut;
/// use tcpkit::codec::LineCodec;
/// use tokio_util::codec::Decoder;
///
/// let mut codec = LineCodec::new(16);
/// let mut buf = BytesMut::from(&b"hi\r\nthere\npart"[..]);
/// assert_eq!(codec.decode(&mut buf)?.as_deref(), Some(&b"hi"[..]));
/// assert_eq!(codec.decode(&mut buf)?.as_deref(), Some(&b"there"[..]));
/// assert_eq!(codec.decode(&mut buf)?, None); // "part" waits for its newline
/// # Ok::<(), tcpkit::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LineCodec {
    max_length: usize,
    /// How far `buf` has already been searched for `\n`, so a line arriving a
    /// byte at a time is scanned once, not quadratically.
    scanned: usize,
}

impl LineCodec {
    /// A codec that rejects lines longer than `max_length` bytes.
    pub fn new(max_length: usize) -> LineCodec {
        LineCodec {
            max_length,
            scanned: 0,
        }
    }

    /// The configured maximum line length.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    fn too_long(&self) -> Error {
        Error::new(
            ErrorKind::LineTooLong,
            code::LINE_TOO_LONG,
            format!("line longer than {} bytes", self.max_length),
        )
    }
}

impl Default for LineCodec {
    fn default() -> Self {
        LineCodec::new(DEFAULT_MAX_LINE)
    }
}

fn strip_cr(mut line: BytesMut) -> Bytes {
    if line.last() == Some(&b'\r') {
        line.truncate(line.len() - 1);
    }
    line.freeze()
}

impl Decoder for LineCodec {
    type Item = Bytes;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        // A `\r` may precede the `\n`, so allow one byte over the maximum.
        let limit = self.max_length.saturating_add(2).min(buf.len());
        let start = self.scanned.min(limit);
        match memchr::memchr(b'\n', &buf[start..limit]) {
            Some(offset) => {
                let end = start + offset;
                self.scanned = 0;
                let mut line = buf.split_to(end + 1);
                line.truncate(end);
                let line = strip_cr(line);
                if line.len() > self.max_length {
                    return Err(self.too_long());
                }
                Ok(Some(line))
            }
            None if buf.len() > self.max_length.saturating_add(1) => Err(self.too_long()),
            None => {
                self.scanned = limit;
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        match self.decode(buf)? {
            Some(line) => Ok(Some(line)),
            // A last line without its newline still counts.
            None if !buf.is_empty() => {
                self.scanned = 0;
                let line = strip_cr(buf.split());
                if line.len() > self.max_length {
                    return Err(self.too_long());
                }
                Ok(Some(line))
            }
            None => Ok(None),
        }
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for LineCodec {
    type Error = Error;

    fn encode(&mut self, line: T, dst: &mut BytesMut) -> Result<(), Error> {
        let line = line.as_ref();
        if line.len() > self.max_length {
            return Err(self.too_long());
        }
        dst.reserve(line.len() + 1);
        dst.put_slice(line);
        dst.put_u8(b'\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(codec: &mut LineCodec, input: &[u8]) -> Result<Vec<Bytes>, Error> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in input {
            buf.put_u8(b);
            while let Some(line) = codec.decode(&mut buf)? {
                out.push(line);
            }
        }
        while let Some(line) = codec.decode_eof(&mut buf)? {
            out.push(line);
        }
        Ok(out)
    }

    #[test]
    fn crlf_and_lf_both_end_lines_byte_by_byte() {
        let out = lines(&mut LineCodec::new(8), b"a\r\nbb\n\n\xff\x00z\nlast").unwrap();
        let want: Vec<&[u8]> = vec![b"a", b"bb", b"", b"\xff\x00z", b"last"];
        assert_eq!(out, want);
    }

    #[test]
    fn exact_maximum_passes_one_more_fails() {
        assert_eq!(lines(&mut LineCodec::new(3), b"abc\r\n").unwrap().len(), 1);
        let err = lines(&mut LineCodec::new(3), b"abcd\n").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::LineTooLong);
        assert_eq!(err.code(), code::LINE_TOO_LONG);
    }

    #[test]
    fn long_line_without_newline_fails_before_buffering_it() {
        let mut codec = LineCodec::new(10);
        let mut buf = BytesMut::from(&[b'x'; 12][..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap_err().kind(),
            ErrorKind::LineTooLong
        );
        let mut buf = BytesMut::from(&[b'x'; 11][..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn encoder_appends_newline_and_checks_length() {
        let mut codec = LineCodec::new(4);
        let mut dst = BytesMut::new();
        codec.encode(b"ok", &mut dst).unwrap();
        assert_eq!(&dst[..], b"ok\n");
        assert!(codec.encode(b"toolong", &mut dst).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_split_yields_the_same_lines(
            input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            max in 1usize..32,
        ) {
            let whole = lines(&mut LineCodec::new(max), &input);
            let mut codec = LineCodec::new(max);
            let mut buf = BytesMut::from(&input[..]);
            let mut out = Vec::new();
            let chunked: Result<Vec<Bytes>, Error> = (|| {
                while let Some(l) = codec.decode(&mut buf)? { out.push(l); }
                while let Some(l) = codec.decode_eof(&mut buf)? { out.push(l); }
                Ok(out)
            })();
            match (whole, chunked) {
                (Ok(a), Ok(b)) => {
                    proptest::prop_assert!(a.iter().all(|l| l.len() <= max));
                    proptest::prop_assert_eq!(a, b);
                }
                (Err(a), Err(b)) => proptest::prop_assert_eq!(a.kind(), b.kind()),
                (a, b) => proptest::prop_assert!(false, "{:?} vs {:?}", a, b),
            }
        }
    }
}
