//! I/O-free framing on `BytesMut`: bytes in, messages out.
//!
//! Each codec implements tokio-util's [`Decoder`](tokio_util::codec::Decoder)
//! and [`Encoder`](tokio_util::codec::Encoder), so it plugs into
//! `FramedRead`/`FramedWrite`, and is tested without a socket. Every buffer a
//! peer fills has a maximum and a typed error past it:
//!
//! * [`LineCodec`]: `\n`- or `\r\n`-terminated lines, bytes (not necessarily
//!   UTF-8), at most `max_length` bytes each ([`ErrorKind::LineTooLong`]).
//! * [`LengthPrefixedCodec`]: a big-endian `u32` length then that many bytes,
//!   at most `max_frame` ([`ErrorKind::FrameTooLarge`]); the buffer never
//!   grows to what a header *announces*, only to what arrives.
//!
//! [`ErrorKind::LineTooLong`]: crate::ErrorKind::LineTooLong
//! [`ErrorKind::FrameTooLarge`]: crate::ErrorKind::FrameTooLarge

mod length_prefixed;
mod lines;

pub use length_prefixed::{DEFAULT_MAX_FRAME, LengthPrefixedCodec};
pub use lines::{DEFAULT_MAX_LINE, LineCodec};
