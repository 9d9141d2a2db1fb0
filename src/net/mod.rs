//! The seed's blocking socket lifecycle on `socket2`, one type per role.
//!
//! * [`Protocol`]: TCP over IPv4 or IPv6 (the seed's `ip::tcp::v4()`).
//! * [`Socket`]: the *active* socket: `open` → `connect` → `read`/`write`
//!   (seed blocks 3 and 6). An accepted connection is a `Socket` too.
//! * [`Acceptor`]: the *passive* socket: `open` → `bind` → `listen(30)` →
//!   `accept` (seed blocks 4, 5 and 7).
//!
//! Both hand over to tokio with `into_tokio()` (a client socket with
//! [`Socket::connect_async`]), so the async server, client and bench are
//! built on the same lifecycle. [`raise_open_file_limit`]: every socket is a
//! descriptor. [`Inherited`] (Linux): listening sockets handed to the
//! process (systemd socket activation, a predecessor's handover); the
//! `SCM_RIGHTS` passing that the handover uses (`pass_fd`).

mod acceptor;
mod fd_limit;
#[cfg(target_os = "linux")]
mod inherit;
#[cfg(target_os = "linux")]
pub(crate) mod pass_fd;
mod protocol;
mod socket;

pub use acceptor::{Acceptor, DEFAULT_BACKLOG};
pub use fd_limit::{open_file_limit, raise_open_file_limit};
#[cfg(target_os = "linux")]
pub use inherit::{Inherited, LISTEN_FDS_START, ListenFds, MAX_LISTEN_FDS};
pub use protocol::Protocol;
pub use socket::Socket;

use crate::error::{Error, ErrorKind, Result};

/// Sets `O_NONBLOCK`, as tokio's `from_std` requires (it debug-asserts it).
pub(crate) fn set_nonblocking(sock: &socket2::Socket, what: &dyn std::fmt::Display) -> Result<()> {
    sock.set_nonblocking(true)
        .map_err(|e| Error::io(e, format_args!("set non-blocking on {what}")))
}

/// `from_std` panics outside a tokio runtime; report that as an error instead.
pub(crate) fn require_runtime(what: &dyn std::fmt::Display) -> Result<()> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Ok(()),
        Err(_) => Err(Error::new(
            ErrorKind::Io,
            libc::EINVAL,
            format!("register {what} with tokio: not inside a tokio runtime"),
        )),
    }
}

/// `setsockopt(2)` of a C `int` option that socket2 has no setter for;
/// `what` names the option in the error (`"set TCP_DEFER_ACCEPT"`).
#[cfg(target_os = "linux")]
pub(crate) fn setsockopt_int(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
    what: &str,
) -> Result<()> {
    // SAFETY: the caller's valid fd, and a pointer to a c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::io(std::io::Error::last_os_error(), what))
    }
}
