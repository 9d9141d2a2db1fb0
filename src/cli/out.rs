//! Results on stdout, where a reader that went away (`tcpkit serve | head`)
//! is not an error: the write fails with `EPIPE` (Rust ignores `SIGPIPE`),
//! and the command ends quietly with status 0, as `cat` does under `head`.

use std::fmt;
use std::io::Write;

/// Stdout was closed by its reader; [`super::exit::report`] turns it into a
/// quiet exit 0.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes one line to stdout and flushes it (a result a reader may be
/// waiting for, such as `listening on ...`).
pub fn line(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{args}")
        .and_then(|()| out.flush())
        .map_err(closed_or_error)
}

/// Writes `bytes` to stdout and flushes.
pub fn bytes(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(closed_or_error)
}

/// `EPIPE` is [`StdoutClosed`]; any other failure an error with its errno.
pub fn closed_or_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        tcpkit::Error::io(e, "write to stdout").into()
    }
}

/// `println!` that ends the command quietly on a closed stdout.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;
