//! [`SessionDump`]: a record of a session's bytes, both directions marked,
//! as text (`-o`) or as a hex dump (`-x`).
//!
//! Text lines start with `> ` for bytes sent and `< ` for bytes received;
//! bytes that are not printable ASCII appear as `\xNN`, so a binary session
//! still gives one readable line per line. The hex dump is 16 bytes per row
//! with a per-direction offset, as `ncat -x` writes it:
//!
//! ```
//! use tcpkit::client::{Direction, DumpFormat, SessionDump};
//!
//! let mut dump = SessionDump::new(Vec::new(), DumpFormat::Hex);
//! dump.record(Direction::Sent, b"hi\n")?;
//! let row = String::from_utf8_lossy(&dump.into_inner()).into_owned();
//! assert!(row.starts_with("> 00000000  68 69 0a "));
//! assert!(row.ends_with("|hi.|\n"));
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt::Write as _;
use std::io::{self, Write};

/// Which way bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From us to the peer (`>`).
    Sent,
    /// From the peer to us (`<`).
    Received,
}

impl Direction {
    fn mark(self) -> char {
        match self {
            Direction::Sent => '>',
            Direction::Received => '<',
        }
    }
}

/// The dump's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpFormat {
    /// Escaped text, one marked line per line.
    Text,
    /// 16 bytes per row: offset, hex, ASCII.
    Hex,
}

/// Writes a session record to any `Write` (a file, in the CLI).
#[derive(Debug)]
pub struct SessionDump<W: Write> {
    out: W,
    format: DumpFormat,
    /// Offsets per direction for the hex dump: sent, received.
    offsets: [u64; 2],
    /// Whether the last text line of each direction was left open (no `\n`).
    open_line: [bool; 2],
    last: Option<Direction>,
}

impl<W: Write> SessionDump<W> {
    /// A dump writing `format` to `out`.
    pub fn new(out: W, format: DumpFormat) -> Self {
        SessionDump {
            out,
            format,
            offsets: [0; 2],
            open_line: [false; 2],
            last: None,
        }
    }

    /// Records `bytes` going `direction`.
    pub fn record(&mut self, direction: Direction, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let text = match self.format {
            DumpFormat::Text => self.text(direction, bytes),
            DumpFormat::Hex => self.hex(direction, bytes),
        };
        self.last = Some(direction);
        self.out.write_all(text.as_bytes())
    }

    /// Flushes the writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn text(&mut self, direction: Direction, bytes: &[u8]) -> String {
        let i = direction as usize;
        let mut s = String::with_capacity(bytes.len() + 8);
        // A line interrupted by the other direction is ended so every line
        // carries exactly one mark.
        if self.last.is_some_and(|d| d != direction) {
            let other = 1 - i;
            if self.open_line[other] {
                s.push('\n');
                self.open_line[other] = false;
            }
        }
        let mut at_start = !self.open_line[i] || self.last != Some(direction);
        for &b in bytes {
            if at_start {
                s.push(direction.mark());
                s.push(' ');
                at_start = false;
            }
            match b {
                b'\n' => {
                    s.push('\n');
                    at_start = true;
                }
                b'\t' | 0x20..=0x7e if b != b'\\' => s.push(b as char),
                b'\\' => s.push_str("\\\\"),
                _ => {
                    let _ = write!(s, "\\x{b:02x}");
                }
            }
        }
        self.open_line[i] = !at_start;
        s
    }

    fn hex(&mut self, direction: Direction, bytes: &[u8]) -> String {
        let i = direction as usize;
        let mut s = String::with_capacity(bytes.len() * 5);
        for row in bytes.chunks(16) {
            let _ = write!(s, "{} {:08x}  ", direction.mark(), self.offsets[i]);
            for col in 0..16 {
                match row.get(col) {
                    Some(b) => {
                        let _ = write!(s, "{b:02x} ");
                    }
                    None => s.push_str("   "),
                }
            }
            s.push_str(" |");
            s.extend(row.iter().map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            }));
            s.push_str("|\n");
            self.offsets[i] += row.len() as u64;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(chunks: &[(Direction, &[u8])]) -> String {
        let mut dump = SessionDump::new(Vec::new(), DumpFormat::Text);
        for (d, b) in chunks {
            dump.record(*d, b).unwrap();
        }
        String::from_utf8(dump.into_inner()).unwrap()
    }

    #[test]
    fn text_marks_each_line_and_escapes_binary() {
        let s = text(&[
            (Direction::Sent, b"hello\nwor"),
            (Direction::Sent, b"ld\n"),
            (Direction::Received, b"\x00\xff\\ok"),
            (Direction::Sent, b"x\n"),
        ]);
        assert_eq!(s, "> hello\n> world\n< \\x00\\xff\\\\ok\n> x\n");
    }

    #[test]
    fn hex_rows_keep_per_direction_offsets() {
        let mut dump = SessionDump::new(Vec::new(), DumpFormat::Hex);
        dump.record(Direction::Received, &[0x41; 17]).unwrap();
        dump.record(Direction::Sent, b"z").unwrap();
        let s = String::from_utf8(dump.into_inner()).unwrap();
        let rows: Vec<&str> = s.lines().collect();
        assert_eq!(rows.len(), 3);
        assert!(rows[0].starts_with("< 00000000  41 41"), "{s}");
        assert!(rows[0].ends_with("|AAAAAAAAAAAAAAAA|"), "{s}");
        assert!(rows[1].starts_with("< 00000010  41 "), "{s}");
        assert!(rows[2].starts_with("> 00000000  7a "), "{s}");
    }
}
