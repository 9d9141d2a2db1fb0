//! Exit codes scripts can rely on, and how errors are printed.

use std::process::ExitCode;

use tcpkit::ErrorKind;

/// Exit statuses, documented in `--help` and README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// Any failure not listed below.
    Failure = 1,
    /// Bad arguments or input (also clap's code for usage errors).
    Usage = 2,
    /// A name did not resolve.
    Resolve = 3,
    /// The peer refused the connection.
    Refused = 4,
    /// A connect, idle or overall timeout expired.
    Timeout = 5,
    /// An I/O error in the middle of a stream (reset, broken pipe, ...).
    Io = 6,
    /// The local endpoint could not be bound (in use, permission denied).
    Bind = 7,
    /// Bench: a byte came back wrong, missing or out of order.
    Verification = 8,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  other failure
  2  bad arguments or input (unparsable address, port, duration, ...)
  3  name resolution failed
  4  connection refused
  5  timed out (connect, idle or overall)
  6  I/O error mid-stream (connection reset, broken pipe, ...)
  7  cannot bind the local endpoint (address in use, permission denied)
  8  bench: echoed data failed verification";

/// The exit code for a library error kind.
pub fn for_kind(kind: ErrorKind) -> Exit {
    match kind {
        ErrorKind::InvalidAddress
        | ErrorKind::InvalidPort
        | ErrorKind::MissingPort
        | ErrorKind::InvalidConfig => Exit::Usage,
        ErrorKind::Resolve => Exit::Resolve,
        ErrorKind::ConnectionRefused => Exit::Refused,
        ErrorKind::TimedOut => Exit::Timeout,
        ErrorKind::AddrInUse | ErrorKind::AddrNotAvailable | ErrorKind::PermissionDenied => {
            Exit::Bind
        }
        ErrorKind::Verification => Exit::Verification,
        ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::UnexpectedEof
        | ErrorKind::Unreachable
        | ErrorKind::LineTooLong
        | ErrorKind::FrameTooLarge
        | ErrorKind::Io => Exit::Io,
        _ => Exit::Failure,
    }
}

/// Prints `tcpkit: error [code N]: message` (and causes) to stderr and picks
/// the exit code from the first `tcpkit::Error` in the chain.
pub fn report(err: &anyhow::Error) -> ExitCode {
    let lib = err.chain().find_map(|e| e.downcast_ref::<tcpkit::Error>());
    match lib {
        Some(e) => eprintln!("tcpkit: error [code {}]: {err:#}", e.code()),
        None => eprintln!("tcpkit: error: {err:#}"),
    }
    lib.map_or(Exit::Failure, |e| for_kind(e.kind())).into()
}
