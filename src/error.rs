//! The crate's one error type: Asio's `error_code` in Rust.
//!
//! Every failure carries a stable numeric [`Error::code`] (the OS `errno` when
//! the operating system reported it, as `asio::error_code::value()`; one of the
//! documented constants in [`code`] otherwise) and a message (Asio's
//! `message()`) that names the input or endpoint involved, for example
//! `bind [::]:3333: address already in use (os error 98)`.
//!
//! Callers match on [`Error::kind`] or [`Error::code`], never on the text.

use std::fmt;
use std::io;

/// Codes for failures that do not come from the operating system.
///
/// They start at 1000 so they never collide with an `errno` value (Linux uses
/// 1..=133).
pub mod code {
    /// Address text that is not an IPv4 or IPv6 address.
    pub const INVALID_ADDRESS: i32 = 1001;
    /// Port text that is not a number in `0..=65535`.
    pub const INVALID_PORT: i32 = 1002;
    /// `host:port` text without a port.
    pub const MISSING_PORT: i32 = 1003;
    /// A name that could not be resolved, or resolved to no address.
    pub const RESOLVE: i32 = 1004;
    /// A line longer than the configured maximum.
    pub const LINE_TOO_LONG: i32 = 1005;
    /// A length-prefixed frame larger than the configured maximum.
    pub const FRAME_TOO_LARGE: i32 = 1006;
    /// The peer closed the connection in the middle of a frame or message.
    pub const UNEXPECTED_EOF: i32 = 1007;
    /// An `io::Error` of kind `TimedOut` that carries no errno (one built by
    /// another library). tcpkit's own deadlines ([`Error::timed_out`](super::Error::timed_out),
    /// an expired `SO_RCVTIMEO`) report `ETIMEDOUT` instead, as Asio's
    /// `error::timed_out` does: match on [`ErrorKind::TimedOut`](super::ErrorKind::TimedOut)
    /// to catch both.
    pub const TIMED_OUT: i32 = 1008;
    /// Bytes received differ from what was expected (load generator checks).
    pub const VERIFICATION: i32 = 1009;
    /// A configuration value outside its allowed range.
    pub const INVALID_CONFIG: i32 = 1010;
    /// A TLS handshake or record failed for a reason other than the peer's
    /// certificate (protocol error, no shared version or cipher suite, ...).
    pub const TLS: i32 = 1011;
    /// The peer's certificate was refused: unknown issuer, expired, wrong
    /// name, pin mismatch, or a required client certificate missing.
    pub const CERTIFICATE: i32 = 1012;
    /// A certificate or key file that is not what it should be (no PEM
    /// block of the right kind, a key that does not match the certificate).
    pub const BAD_CERTIFICATE_FILE: i32 = 1013;
    /// A PROXY protocol header expected and not there: the first bytes are
    /// not one (`tcpkit::proxy`).
    pub const PROXY_HEADER_MISSING: i32 = 1014;
    /// A PROXY protocol header longer than its cap.
    pub const PROXY_HEADER_TOO_LARGE: i32 = 1015;
    /// A PROXY protocol header that does not parse.
    pub const PROXY_HEADER_MALFORMED: i32 = 1016;
}

/// What went wrong, for matching. New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Text that is not a valid IP address.
    InvalidAddress,
    /// Text that is not a valid port.
    InvalidPort,
    /// `host:port` text with no port.
    MissingPort,
    /// Name resolution failed or gave no address.
    Resolve,
    /// `EADDRINUSE`: the local endpoint is taken.
    AddrInUse,
    /// `EADDRNOTAVAIL`: the local address is not on this host.
    AddrNotAvailable,
    /// `EACCES`/`EPERM`: e.g. a port below 1024 without the capability.
    PermissionDenied,
    /// `ECONNREFUSED`: nothing listens on the remote endpoint.
    ConnectionRefused,
    /// `ECONNRESET`/`EPIPE`: the peer reset or closed the connection.
    ConnectionReset,
    /// `ECONNABORTED`: a queued connection was aborted before `accept` took it.
    ConnectionAborted,
    /// `ENETUNREACH`/`EHOSTUNREACH`.
    Unreachable,
    /// A deadline passed (`ETIMEDOUT` or a tcpkit timeout).
    TimedOut,
    /// `EMFILE`/`ENFILE`: out of file descriptors.
    TooManyOpenFiles,
    /// The peer closed in the middle of a message.
    UnexpectedEof,
    /// A line exceeded its maximum length.
    LineTooLong,
    /// A frame exceeded its maximum size.
    FrameTooLarge,
    /// Echoed bytes differ from those sent.
    Verification,
    /// A configuration value is out of range.
    InvalidConfig,
    /// A TLS handshake or record failed ([`code::TLS`]).
    Tls,
    /// The peer's certificate was refused ([`code::CERTIFICATE`]).
    Certificate,
    /// A certificate or key file is unusable ([`code::BAD_CERTIFICATE_FILE`]).
    BadCertificateFile,
    /// A PROXY protocol header missing, over its cap or malformed
    /// ([`code::PROXY_HEADER_MISSING`], [`code::PROXY_HEADER_TOO_LARGE`],
    /// [`code::PROXY_HEADER_MALFORMED`]).
    ProxyHeader,
    /// Any other I/O failure; see [`Error::code`] for the errno.
    Io,
}

/// A tcpkit error: a kind, a numeric code and a message naming the input.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    code: i32,
    message: String,
    source: Option<io::Error>,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A non-OS error with one of the [`code`] constants.
    pub fn new(kind: ErrorKind, code: i32, message: impl Into<String>) -> Self {
        Error {
            kind,
            code,
            message: message.into(),
            source: None,
        }
    }

    /// Wraps an OS error with what was being done, e.g. `"bind [::]:3333"`.
    ///
    /// The code is the OS `errno` when there is one; the message reads
    /// `"{context}: {os message} (os error N)"`.
    pub fn io(err: io::Error, context: impl fmt::Display) -> Self {
        let kind = kind_of(&err);
        let code = err.raw_os_error().unwrap_or_else(|| fallback_code(kind));
        let text = err.to_string();
        let mut chars = text.chars();
        let os_message = match chars.next() {
            Some(first) => first.to_lowercase().chain(chars).collect::<String>(),
            None => String::new(),
        };
        Error {
            kind,
            code,
            message: format!("{context}: {os_message}"),
            source: Some(err),
        }
    }

    /// A deadline that passed, naming what was waited for. The code is
    /// `ETIMEDOUT` (Asio's `error::timed_out`); [`Error::os_code`] is `None`
    /// because no system call reported it.
    pub fn timed_out(context: impl fmt::Display, after: std::time::Duration) -> Self {
        Error::new(
            ErrorKind::TimedOut,
            libc::ETIMEDOUT,
            format!(
                "{context}: timed out after {}",
                humantime::format_duration(after)
            ),
        )
    }

    /// The same error with `context` in front of its message (`"{context}:
    /// {message}"`); kind, code and the OS error beneath are kept.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// What went wrong, for matching.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The stable numeric code: the OS `errno`, or a [`code`] constant.
    pub fn code(&self) -> i32 {
        self.code
    }

    /// The message, naming the input or endpoint (Asio's `message()`).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The OS error code when the operating system reported the failure.
    pub fn os_code(&self) -> Option<i32> {
        self.source.as_ref().and_then(io::Error::raw_os_error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The message already contains the OS error's text, so `source()` skips the
/// wrapped `io::Error` and returns what lies beneath it (nothing, for an OS
/// error); otherwise chain printers such as anyhow's `{:#}` would print the
/// OS text twice. The errno stays available from [`Error::os_code`].
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().and_then(std::error::Error::source)
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match err.kind {
            ErrorKind::InvalidAddress
            | ErrorKind::InvalidPort
            | ErrorKind::MissingPort
            | ErrorKind::InvalidConfig
            | ErrorKind::BadCertificateFile => io::ErrorKind::InvalidInput,
            ErrorKind::Tls | ErrorKind::Certificate | ErrorKind::ProxyHeader => {
                io::ErrorKind::InvalidData
            }
            ErrorKind::LineTooLong | ErrorKind::FrameTooLarge | ErrorKind::Verification => {
                io::ErrorKind::InvalidData
            }
            ErrorKind::UnexpectedEof => io::ErrorKind::UnexpectedEof,
            ErrorKind::TimedOut => io::ErrorKind::TimedOut,
            ErrorKind::ConnectionRefused => io::ErrorKind::ConnectionRefused,
            ErrorKind::ConnectionReset => io::ErrorKind::ConnectionReset,
            ErrorKind::AddrInUse => io::ErrorKind::AddrInUse,
            ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
            _ => match err.os_code() {
                Some(code) => return io::Error::from_raw_os_error(code),
                None => io::ErrorKind::Other,
            },
        };
        io::Error::new(kind, err)
    }
}

/// An I/O error with no further context (tokio-util's codecs need this).
/// Prefer [`Error::io`], which names what was being done.
impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        Error::io(err, "i/o error")
    }
}

fn kind_of(err: &io::Error) -> ErrorKind {
    if let Some(code) = err.raw_os_error() {
        match code {
            libc::EADDRINUSE => return ErrorKind::AddrInUse,
            libc::EADDRNOTAVAIL => return ErrorKind::AddrNotAvailable,
            libc::EACCES | libc::EPERM => return ErrorKind::PermissionDenied,
            libc::ECONNREFUSED => return ErrorKind::ConnectionRefused,
            libc::ECONNRESET | libc::EPIPE => return ErrorKind::ConnectionReset,
            libc::ECONNABORTED => return ErrorKind::ConnectionAborted,
            libc::ENETUNREACH | libc::EHOSTUNREACH => return ErrorKind::Unreachable,
            libc::ETIMEDOUT => return ErrorKind::TimedOut,
            libc::EMFILE | libc::ENFILE => return ErrorKind::TooManyOpenFiles,
            _ => {}
        }
    }
    match err.kind() {
        io::ErrorKind::AddrInUse => ErrorKind::AddrInUse,
        io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        io::ErrorKind::ConnectionRefused => ErrorKind::ConnectionRefused,
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => ErrorKind::ConnectionReset,
        io::ErrorKind::ConnectionAborted => ErrorKind::ConnectionAborted,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ErrorKind::TimedOut,
        io::ErrorKind::UnexpectedEof => ErrorKind::UnexpectedEof,
        _ => ErrorKind::Io,
    }
}

/// A code for an `io::Error` that carries no errno (e.g. one built by a library).
fn fallback_code(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::TimedOut => code::TIMED_OUT,
        ErrorKind::UnexpectedEof => code::UNEXPECTED_EOF,
        ErrorKind::ConnectionRefused => libc::ECONNREFUSED,
        ErrorKind::ConnectionReset => libc::ECONNRESET,
        ErrorKind::AddrInUse => libc::EADDRINUSE,
        ErrorKind::PermissionDenied => libc::EACCES,
        _ => libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_keep_errno_and_name_the_context() {
        let err = Error::io(
            io::Error::from_raw_os_error(libc::EADDRINUSE),
            "bind [::]:3333",
        );
        assert_eq!(err.kind(), ErrorKind::AddrInUse);
        assert_eq!(err.code(), libc::EADDRINUSE);
        assert_eq!(err.os_code(), Some(libc::EADDRINUSE));
        assert!(
            err.message()
                .starts_with("bind [::]:3333: address already in use"),
            "{err}"
        );
    }

    #[test]
    fn the_os_text_is_not_repeated_by_the_source_chain() {
        let err = Error::io(
            io::Error::from_raw_os_error(libc::EADDRINUSE),
            "bind [::]:3333",
        );
        // What a chain printer (anyhow's `{:#}`) shows: each level's Display.
        let mut text = err.to_string();
        let mut next = std::error::Error::source(&err);
        while let Some(cause) = next {
            text = format!("{text}: {cause}");
            next = cause.source();
        }
        assert_eq!(text.matches("in use").count(), 1, "{text}");
    }

    #[test]
    fn errors_without_errno_get_a_stable_code() {
        let err = Error::io(io::Error::from(io::ErrorKind::TimedOut), "connect x");
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        assert_eq!(err.code(), code::TIMED_OUT);
        let back: io::Error = Error::new(ErrorKind::LineTooLong, code::LINE_TOO_LONG, "l").into();
        assert_eq!(back.kind(), io::ErrorKind::InvalidData);
    }
}
