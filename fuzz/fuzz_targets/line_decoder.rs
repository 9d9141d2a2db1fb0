//! `LineCodec` fed in fuzzer-chosen chunks, against the same bytes decoded in
//! one go. It never panics; no line exceeds the maximum; between reads the
//! buffer holds at most `max + 2` bytes plus the chunk just read (the peer
//! cannot make it buffer a long line); and the chunked lines (and error, if
//! any) equal the one-shot ones.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tcpkit::ErrorKind;
use tcpkit::codec::LineCodec;
use tokio_util::codec::Decoder;

#[derive(Debug, Arbitrary)]
struct Input {
    max: u8,
    chunks: Vec<Vec<u8>>,
}

/// Lines until the end or the first error (the stream is dead after one).
#[derive(Debug, PartialEq)]
struct Outcome {
    lines: Vec<Bytes>,
    error: Option<ErrorKind>,
}

fn drain(
    codec: &mut LineCodec,
    buf: &mut BytesMut,
    out: &mut Outcome,
    eof: bool,
    max: usize,
) -> bool {
    loop {
        let next = if eof {
            codec.decode_eof(buf)
        } else {
            codec.decode(buf)
        };
        match next {
            Ok(Some(line)) => {
                assert!(line.len() <= max, "line of {} > max {max}", line.len());
                out.lines.push(line);
            }
            Ok(None) => return true,
            Err(err) => {
                out.error = Some(err.kind());
                return false;
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let max = usize::from(input.max % 32) + 1;

    let mut codec = LineCodec::new(max);
    let mut buf = BytesMut::new();
    let mut chunked = Outcome {
        lines: Vec::new(),
        error: None,
    };
    let mut alive = true;
    for chunk in &input.chunks {
        buf.extend_from_slice(chunk);
        alive = drain(&mut codec, &mut buf, &mut chunked, false, max);
        if !alive {
            break;
        }
        // Nothing waits that is not part of an unfinished line of <= max+1.
        assert!(
            buf.len() <= max + 2 + chunk.len(),
            "buffer {} bytes, max {max}, chunk {}",
            buf.len(),
            chunk.len()
        );
        assert!(
            buf.len() <= max + 1,
            "undecoded {} bytes > max+1",
            buf.len()
        );
    }
    if alive {
        drain(&mut codec, &mut buf, &mut chunked, true, max);
    }

    let mut codec = LineCodec::new(max);
    let mut whole = BytesMut::from(&input.chunks.concat()[..]);
    let mut oneshot = Outcome {
        lines: Vec::new(),
        error: None,
    };
    if drain(&mut codec, &mut whole, &mut oneshot, false, max) {
        drain(&mut codec, &mut whole, &mut oneshot, true, max);
    }

    assert_eq!(chunked, oneshot);
});
