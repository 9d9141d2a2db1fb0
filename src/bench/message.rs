//! The bench's message format, and the verifier that checks every echoed byte.
//!
//! A message of `size` bytes (at least [`HEADER_BYTES`]) is a 16-byte header
//! followed by a filler, all little-endian:
//!
//! | bytes | content |
//! |---|---|
//! | `0..4` | connection id (`u32`) |
//! | `4..12` | sequence number (`u64`), 0 for the connection's first message |
//! | `12..16` | message size in bytes (`u32`) |
//! | `16..size` | filler: byte `i` is `(i * 7 + conn_id * 131 + 0x5a) as u8` |
//!
//! Because message `seq` starts at stream offset `seq * size`, the byte that
//! must arrive at every offset of a connection's echo stream is known in
//! advance: a lost, duplicated or reordered message shows up as a wrong
//! sequence number, a corrupted byte as a filler mismatch, and every failure
//! is reported with the connection and the byte offset. The filler does not
//! depend on the sequence number, so sending a message only rewrites its
//! header in a buffer filled once per connection (no work per byte).

use std::fmt;

/// Header length, and so the smallest message size.
pub const HEADER_BYTES: usize = 16;

/// The smallest message size the bench accepts.
pub const MIN_MESSAGE_BYTES: usize = HEADER_BYTES;

/// One connection's messages: a template buffer plus the header rule.
#[derive(Debug, Clone)]
pub struct MessagePattern {
    conn_id: u32,
    template: Vec<u8>,
}

impl MessagePattern {
    /// The pattern of connection `conn_id` for messages of `size` bytes
    /// (`size >= MIN_MESSAGE_BYTES`; smaller sizes are raised to it).
    pub fn new(conn_id: u32, size: usize) -> MessagePattern {
        let size = size.max(MIN_MESSAGE_BYTES);
        let mut template = vec![0u8; size];
        for (i, b) in template.iter_mut().enumerate().skip(HEADER_BYTES) {
            *b = filler_byte(conn_id, i);
        }
        let mut pattern = MessagePattern { conn_id, template };
        let header = pattern.header(0);
        pattern.template[..HEADER_BYTES].copy_from_slice(&header);
        pattern
    }

    /// Message size in bytes.
    pub fn size(&self) -> usize {
        self.template.len()
    }

    /// The connection id written in every header.
    pub fn conn_id(&self) -> u32 {
        self.conn_id
    }

    /// The header of message `seq`.
    pub fn header(&self, seq: u64) -> [u8; HEADER_BYTES] {
        let mut h = [0u8; HEADER_BYTES];
        h[0..4].copy_from_slice(&self.conn_id.to_le_bytes());
        h[4..12].copy_from_slice(&seq.to_le_bytes());
        h[12..16].copy_from_slice(&(self.size() as u32).to_le_bytes());
        h
    }

    /// A send buffer holding message 0; [`MessagePattern::set_seq`] turns it
    /// into any other message.
    pub fn new_buffer(&self) -> Vec<u8> {
        self.template.clone()
    }

    /// Rewrites the header of `buf` (from [`MessagePattern::new_buffer`]) to
    /// make it message `seq`.
    pub fn set_seq(&self, buf: &mut [u8], seq: u64) {
        buf[..HEADER_BYTES].copy_from_slice(&self.header(seq));
    }

    /// The byte expected at `offset` of this connection's echo stream.
    pub fn expected_at(&self, offset: u64) -> u8 {
        let size = self.size() as u64;
        let i = (offset % size) as usize;
        if i < HEADER_BYTES {
            self.header(offset / size)[i]
        } else {
            self.template[i]
        }
    }
}

fn filler_byte(conn_id: u32, i: usize) -> u8 {
    (i as u32)
        .wrapping_mul(7)
        .wrapping_add(conn_id.wrapping_mul(131))
        .wrapping_add(0x5a) as u8
}

/// A byte of the echo stream that differs from what was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Connection id.
    pub conn_id: u32,
    /// Offset of the byte in the connection's echo stream.
    pub offset: u64,
    /// Sequence number of the message the byte belongs to.
    pub seq: u64,
    /// Offset of the byte inside its message.
    pub byte_in_message: usize,
    /// What was sent at that offset.
    pub expected: u8,
    /// What came back.
    pub got: u8,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.byte_in_message < 4 {
            "connection id"
        } else if self.byte_in_message < 12 {
            "sequence number (lost, duplicated or reordered message)"
        } else if self.byte_in_message < HEADER_BYTES {
            "size field"
        } else {
            "filler"
        };
        write!(
            f,
            "connection {}: byte at stream offset {} (message seq {}, byte {} of its {}) is 0x{:02x}, expected 0x{:02x}",
            self.conn_id,
            self.offset,
            self.seq,
            self.byte_in_message,
            what,
            self.got,
            self.expected
        )
    }
}

/// Checks a connection's echo stream chunk by chunk, as it arrives.
#[derive(Debug, Clone)]
pub struct Verifier {
    pattern: MessagePattern,
    offset: u64,
}

impl Verifier {
    /// A verifier at stream offset 0 for `pattern`'s connection.
    pub fn new(pattern: MessagePattern) -> Verifier {
        Verifier { pattern, offset: 0 }
    }

    /// Bytes verified so far (the stream offset of the next byte).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Starts over at stream offset 0 (a new connection of the same pattern).
    pub fn reset(&mut self) {
        self.offset = 0;
    }

    /// Messages fully received and verified so far.
    pub fn messages_done(&self) -> u64 {
        self.offset / self.pattern.size() as u64
    }

    /// Verifies `data`, the next bytes of the stream; returns how many
    /// messages it completed, or the first byte that differs.
    ///
    /// ```
    /// use tcpkit::bench::message::{MessagePattern, Verifier};
    /// let pattern = MessagePattern::new(3, 32);
    /// let msg = pattern.new_buffer();
    /// let mut v = Verifier::new(pattern.clone());
    /// assert_eq!(v.check(&msg[..10]), Ok(0));
    /// assert_eq!(v.check(&msg[10..]), Ok(1));
    /// // Message 0 again where message 1 belongs: a duplicate.
    /// let err = v.check(&msg).unwrap_err();
    /// assert_eq!((err.conn_id, err.offset, err.seq), (3, 36, 1));
    /// ```
    pub fn check(&mut self, mut data: &[u8]) -> Result<u64, Mismatch> {
        let size = self.pattern.size();
        let mut completed = 0;
        while !data.is_empty() {
            let seq = self.offset / size as u64;
            let pos = (self.offset % size as u64) as usize;
            let n = data.len().min(size - pos);
            let (chunk, rest) = data.split_at(n);
            let header_end = HEADER_BYTES.clamp(pos, pos + n);
            if header_end > pos {
                let header = self.pattern.header(seq);
                let got = &chunk[..header_end - pos];
                if got != &header[pos..header_end] {
                    return Err(self.mismatch(seq, pos, got, &header[pos..header_end]));
                }
            }
            let filler_from = header_end.max(pos);
            let expected = &self.pattern.template[filler_from..pos + n];
            let got = &chunk[filler_from - pos..];
            if got != expected {
                return Err(self.mismatch(seq, filler_from, got, expected));
            }
            self.offset += n as u64;
            if pos + n == size {
                completed += 1;
            }
            data = rest;
        }
        Ok(completed)
    }

    /// The first differing byte of `got` vs `expected`, which start at
    /// `start` inside message `seq` (the stream offset is not yet advanced).
    fn mismatch(&self, seq: u64, start: usize, got: &[u8], expected: &[u8]) -> Mismatch {
        let i = got
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        let size = self.pattern.size() as u64;
        let byte_in_message = start + i;
        Mismatch {
            conn_id: self.pattern.conn_id,
            offset: seq * size + byte_in_message as u64,
            seq,
            byte_in_message,
            expected: expected[i],
            got: got[i],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(pattern: &MessagePattern, messages: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = pattern.new_buffer();
        for seq in 0..messages {
            pattern.set_seq(&mut buf, seq);
            out.extend_from_slice(&buf);
        }
        out
    }

    #[test]
    fn a_correct_stream_verifies_in_any_chunking() {
        let p = MessagePattern::new(7, 40);
        let s = stream(&p, 5);
        for chunk in [1, 3, 16, 17, 40, 41, 200] {
            let mut v = Verifier::new(p.clone());
            let done: u64 = s.chunks(chunk).map(|c| v.check(c).unwrap()).sum();
            assert_eq!(done, 5, "chunk {chunk}");
            assert_eq!(v.offset(), 200);
        }
        for (i, b) in s.iter().enumerate() {
            assert_eq!(p.expected_at(i as u64), *b);
        }
    }

    #[test]
    fn corruption_names_the_offset() {
        let p = MessagePattern::new(2, 64);
        let mut s = stream(&p, 3);
        s[64 + 30] ^= 0x01;
        let err = Verifier::new(p).check(&s).unwrap_err();
        assert_eq!(
            (err.conn_id, err.offset, err.seq, err.byte_in_message),
            (2, 94, 1, 30)
        );
        assert!(err.to_string().contains("stream offset 94"), "{err}");
    }

    #[test]
    fn a_lost_message_is_a_sequence_mismatch() {
        let p = MessagePattern::new(0, 16);
        let mut s = stream(&p, 3);
        s.drain(16..32);
        let err = Verifier::new(p).check(&s).unwrap_err();
        assert_eq!((err.offset, err.seq, err.byte_in_message), (20, 1, 4));
        assert!(err.to_string().contains("sequence number"), "{err}");
    }

    #[test]
    fn a_dropped_byte_is_caught() {
        let p = MessagePattern::new(1, 64);
        let mut s = stream(&p, 2);
        s.remove(40);
        let err = Verifier::new(p).check(&s).unwrap_err();
        assert_eq!(err.offset, 40);
    }

    #[test]
    fn tiny_sizes_are_raised_to_the_header() {
        assert_eq!(MessagePattern::new(0, 1).size(), MIN_MESSAGE_BYTES);
    }
}
