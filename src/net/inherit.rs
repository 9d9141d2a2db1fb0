//! Listening sockets this process did not open: systemd socket activation
//! (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, see `sd_listen_fds(3)`), a
//! descriptor handed over by a predecessor (`crate::server::handover`), or
//! a caller's own `std::net::TcpListener`.
//!
//! Every descriptor is checked before it is served: a stream socket
//! (`SO_TYPE`), already listening (`SO_ACCEPTCONN`), of TCP over IPv4 or IPv6
//! (`SO_DOMAIN`); it is made close-on-exec so no child inherits it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Acceptor, Protocol};
use crate::error::{Error, ErrorKind, Result, code};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// The most descriptors accepted from `LISTEN_FDS` (systemd itself allows a
/// few hundred per unit; more is a corrupt environment).
pub const MAX_LISTEN_FDS: usize = 1024;

/// Listening sockets handed to this process, for
/// [`Listen::Inherited`](crate::server::Listen::Inherited). Cloning shares
/// them; the first [`Inherited::take`] (done by
/// [`ServerBuilder::bind`](crate::server::ServerBuilder::bind)) owns them,
/// and a second one is an error rather than two owners of one descriptor.
#[derive(Debug, Clone)]
pub struct Inherited {
    fds: Arc<Mutex<Option<Vec<Named>>>>,
    count: usize,
}

/// A descriptor and what errors call it.
type Named = (OwnedFd, String);

impl PartialEq for Inherited {
    fn eq(&self, other: &Inherited) -> bool {
        Arc::ptr_eq(&self.fds, &other.fds)
    }
}

impl Eq for Inherited {}

impl Inherited {
    /// Descriptors with a name each for errors and logs (systemd's
    /// `FileDescriptorName=`, or `fd N`).
    pub fn new(fds: Vec<(OwnedFd, String)>) -> Inherited {
        Inherited {
            count: fds.len(),
            fds: Arc::new(Mutex::new(Some(fds))),
        }
    }

    /// A listener the caller opened (already bound and listening).
    pub fn from_listener(listener: std::net::TcpListener) -> Inherited {
        let fd = OwnedFd::from(listener);
        let name = format!("fd {}", fd.as_raw_fd());
        Inherited::new(vec![(fd, name)])
    }

    /// How many sockets were handed over.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether none were.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Validates each descriptor and wraps it as an [`Acceptor`]; fails if
    /// they were taken already or one is not a listening TCP socket (the
    /// error names it).
    pub fn take(&self) -> Result<Vec<Acceptor>> {
        let fds = self
            .fds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidConfig,
                    code::INVALID_CONFIG,
                    "inherited listeners were already taken by another server",
                )
            })?;
        if fds.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                code::INVALID_CONFIG,
                "no inherited listener to serve on",
            ));
        }
        fds.into_iter()
            .map(|(fd, name)| Acceptor::from_listening_fd(fd, &name))
            .collect()
    }
}

/// What systemd put in the environment, parsed (`sd_listen_fds(3)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenFds {
    /// Descriptors 3, 4, ... (`LISTEN_FDS` of them).
    pub fds: Vec<RawFd>,
    /// What errors and logs call them: `fd N (NAME)` with the
    /// `LISTEN_FDNAMES` entry, or `fd N` where none was given.
    pub names: Vec<String>,
}

impl ListenFds {
    /// Parses the three variables for a process whose pid is `my_pid`: an
    /// error says which variable is missing or wrong, so a unit that forgot
    /// its `.socket` fails loudly instead of listening somewhere else.
    ///
    /// ```
    /// use tcpkit::net::ListenFds;
    /// let got = ListenFds::parse(Some("42"), Some("2"), Some("web:admin"), 42)?;
    /// assert_eq!(got.fds, [3, 4]);
    /// assert_eq!(got.names, ["fd 3 (web)", "fd 4 (admin)"]);
    /// assert!(ListenFds::parse(Some("41"), Some("1"), None, 42).is_err());
    /// # Ok::<(), tcpkit::Error>(())
    /// ```
    pub fn parse(
        pid: Option<&str>,
        fds: Option<&str>,
        names: Option<&str>,
        my_pid: u32,
    ) -> Result<ListenFds> {
        let bad = |msg: String| Error::new(ErrorKind::InvalidConfig, code::INVALID_CONFIG, msg);
        let pid = pid.ok_or_else(|| {
            bad(
                "--listen systemd: LISTEN_PID is not set (not started by socket activation?)"
                    .into(),
            )
        })?;
        if pid.trim().parse::<u32>().ok() != Some(my_pid) {
            return Err(bad(format!(
                "--listen systemd: LISTEN_PID={pid:?} is not this process ({my_pid}); the sockets were meant for another one"
            )));
        }
        let count = fds
            .ok_or_else(|| bad("--listen systemd: LISTEN_FDS is not set".into()))?
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LISTEN_FDS).contains(n))
            .ok_or_else(|| {
                bad(format!(
                    "--listen systemd: LISTEN_FDS={:?} must be 1..={MAX_LISTEN_FDS}",
                    fds.unwrap_or("")
                ))
            })?;
        let given: Vec<&str> = names.map(|n| n.split(':').collect()).unwrap_or_default();
        let fds: Vec<RawFd> = (0..count as RawFd).map(|i| LISTEN_FDS_START + i).collect();
        let names = fds
            .iter()
            .enumerate()
            .map(|(i, fd)| match given.get(i) {
                Some(name) if !name.is_empty() => format!("fd {fd} ({name})"),
                _ => format!("fd {fd}"),
            })
            .collect();
        Ok(ListenFds { fds, names })
    }

    /// Reads `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` for this
    /// process. It does not unset them (that is not thread-safe in a
    /// library): `tcpkit serve` does, before any thread starts.
    pub fn from_env() -> Result<ListenFds> {
        let var = |name| std::env::var(name).ok();
        ListenFds::parse(
            var("LISTEN_PID").as_deref(),
            var("LISTEN_FDS").as_deref(),
            var("LISTEN_FDNAMES").as_deref(),
            std::process::id(),
        )
    }

    /// Takes ownership of the descriptors. Call it once per process: the
    /// variables describe descriptors this process owns from `exec` on,
    /// and nothing else may close or use them.
    pub fn into_inherited(self) -> Inherited {
        Inherited::new(
            self.fds
                .into_iter()
                .zip(self.names)
                // SAFETY: sd_listen_fds(3)'s contract: with LISTEN_PID ours,
                // these descriptors were opened for this process and nothing
                // else in it owns them (the caller calls this once).
                .map(|(fd, name)| (unsafe { OwnedFd::from_raw_fd(fd) }, name))
                .collect(),
        )
    }
}

/// `getsockopt(2)` of an `int` option, the error naming the descriptor.
fn getsockopt_int(fd: RawFd, level: libc::c_int, opt: libc::c_int, what: &str) -> Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a pointer to a c_int and its size; the kernel writes at most that.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            opt,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(Error::io(std::io::Error::last_os_error(), what))
    }
}

impl Acceptor {
    /// Wraps a descriptor that must already be a listening TCP socket
    /// (`SO_TYPE` stream, `SO_ACCEPTCONN` set, `SO_DOMAIN` IPv4 or IPv6) and
    /// sets `FD_CLOEXEC` on it. `name` says in errors which one it was.
    pub fn from_listening_fd(fd: OwnedFd, name: &str) -> Result<Acceptor> {
        let raw = fd.as_raw_fd();
        let not = |what: &str| {
            Error::new(
                ErrorKind::InvalidConfig,
                code::INVALID_CONFIG,
                format!("inherited {name}: {what}"),
            )
        };
        let ctx = |opt: &str| format!("inherited {name}: getsockopt {opt}");
        let kind = getsockopt_int(raw, libc::SOL_SOCKET, libc::SO_TYPE, &ctx("SO_TYPE"))?;
        if kind != libc::SOCK_STREAM {
            return Err(not("not a stream socket (SO_TYPE)"));
        }
        let domain = getsockopt_int(raw, libc::SOL_SOCKET, libc::SO_DOMAIN, &ctx("SO_DOMAIN"))?;
        let protocol = match domain {
            libc::AF_INET => Protocol::V4,
            libc::AF_INET6 => Protocol::V6,
            _ => return Err(not("not a TCP/IP socket (SO_DOMAIN)")),
        };
        let listening = getsockopt_int(
            raw,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            &ctx("SO_ACCEPTCONN"),
        )?;
        if listening == 0 {
            return Err(not("not listening (SO_ACCEPTCONN is 0)"));
        }
        let inner = socket2::Socket::from(fd);
        inner
            .set_cloexec(true)
            .map_err(|e| Error::io(e, format_args!("inherited {name}: set FD_CLOEXEC")))?;
        Ok(Acceptor::from_socket2(inner, protocol))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Endpoint;

    #[test]
    fn parse_names_each_problem() {
        let err = |pid, fds, names| ListenFds::parse(pid, fds, names, 7).unwrap_err();
        assert!(err(None, Some("1"), None).message().contains("LISTEN_PID"));
        assert!(
            err(Some("8"), Some("1"), None)
                .message()
                .contains("LISTEN_PID")
        );
        assert!(err(Some("7"), None, None).message().contains("LISTEN_FDS"));
        for bad in ["0", "-1", "x", "", "1025"] {
            assert!(
                err(Some("7"), Some(bad), None)
                    .message()
                    .contains("LISTEN_FDS")
            );
        }
        let ok = ListenFds::parse(Some("7"), Some("3"), Some("a::c"), 7).unwrap();
        assert_eq!(ok.fds, [3, 4, 5]);
        assert_eq!(ok.names, ["fd 3 (a)", "fd 4", "fd 5 (c)"]);
    }

    #[test]
    fn a_listener_passes_and_other_sockets_are_named_in_the_error() {
        let acceptor = Acceptor::bind_listen(&Endpoint::loopback_v4(0), 4).unwrap();
        let at = acceptor.local_endpoint().unwrap();
        let inherited = Inherited::from_listener(acceptor.into_std());
        let got = inherited.take().unwrap();
        assert_eq!(got[0].local_endpoint().unwrap(), at);
        assert!(inherited.take().is_err(), "taken twice");

        // Bound but not listening.
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = Acceptor::from_listening_fd(OwnedFd::from(sock), "fd 9 (web)").unwrap_err();
        assert!(
            e.message().contains("fd 9 (web)") && e.message().contains("SO_TYPE"),
            "{e}"
        );
        let idle =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let e = Acceptor::from_listening_fd(OwnedFd::from(idle), "fd 5").unwrap_err();
        assert!(e.message().contains("SO_ACCEPTCONN"), "{e}");
        let (unix, _) = std::os::unix::net::UnixStream::pair().unwrap();
        let e = Acceptor::from_listening_fd(OwnedFd::from(unix), "fd 6").unwrap_err();
        assert!(e.message().contains("SO_DOMAIN"), "{e}");
    }
}
