//! [`Acceptor`]: the passive (listening) socket, seed blocks 4, 5 and 7.

use std::io;

use socket2::{SockAddr, Type};

use super::socket::{local_endpoint, to_endpoint};
use super::{Protocol, Socket};
use crate::endpoint::Endpoint;
use crate::error::{Error, ErrorKind, Result};

/// The seed's listen backlog: up to 30 connections the kernel has completed
/// but the program has not yet accepted. The kernel caps it at
/// `net.core.somaxconn`; see [`Acceptor::effective_backlog`].
pub const DEFAULT_BACKLOG: u32 = 30;

/// A listening TCP socket: Asio's `ip::tcp::acceptor`.
///
/// Distinct from [`Socket`]: it never carries data, it only produces connected
/// `Socket`s. Lifecycle: [`Acceptor::open`] → [`Acceptor::set_reuse_address`]
/// → [`Acceptor::bind`] → [`Acceptor::listen`] → [`Acceptor::accept`] (as
/// many times as there are clients). [`Acceptor::bind_listen`] does the first
/// four in one call.
#[derive(Debug)]
pub struct Acceptor {
    inner: socket2::Socket,
    protocol: Protocol,
}

impl Acceptor {
    /// Opens a socket for listening (`socket(2)`): the seed's
    /// `crear_acceptor_socket`.
    pub fn open(protocol: Protocol) -> Result<Acceptor> {
        let inner = socket2::Socket::new(protocol.domain(), Type::STREAM, None)
            .map_err(|e| Error::io(e, format_args!("open {protocol} acceptor")))?;
        Ok(Acceptor { inner, protocol })
    }

    /// Opens, sets `SO_REUSEADDR`, makes a `::` endpoint dual-stack (accepting
    /// IPv4 clients too), binds and listens with `backlog`.
    ///
    /// ```
    /// use tcpkit::{Acceptor, Endpoint};
    /// let acceptor = Acceptor::bind_listen(&Endpoint::loopback_v4(0), 30)?;
    /// assert_ne!(acceptor.local_endpoint()?.port(), 0);
    /// # Ok::<(), tcpkit::Error>(())
    /// ```
    pub fn bind_listen(endpoint: &Endpoint, backlog: u32) -> Result<Acceptor> {
        Acceptor::bind_listen_with(endpoint, backlog, false)
    }

    /// [`Acceptor::bind_listen`] with `SO_REUSEPORT` set before `bind(2)`:
    /// call it again with the first one's [`Acceptor::local_endpoint`] for
    /// more acceptors on the same port (one per thread), and the kernel
    /// spreads incoming connections among them by a hash of the client's
    /// address and port. Only sockets of the same user can join the group,
    /// but a second server of the same user would share the port instead of
    /// failing with "address in use".
    ///
    /// ```
    /// use tcpkit::{Acceptor, Endpoint};
    /// let first = Acceptor::bind_listen_shared(&Endpoint::loopback_v4(0), 30)?;
    /// let second = Acceptor::bind_listen_shared(&first.local_endpoint()?, 30)?;
    /// assert_eq!(first.local_endpoint()?, second.local_endpoint()?);
    /// # Ok::<(), tcpkit::Error>(())
    /// ```
    pub fn bind_listen_shared(endpoint: &Endpoint, backlog: u32) -> Result<Acceptor> {
        Acceptor::bind_listen_with(endpoint, backlog, true)
    }

    fn bind_listen_with(endpoint: &Endpoint, backlog: u32, reuse_port: bool) -> Result<Acceptor> {
        let acceptor = Acceptor::open(Protocol::of(endpoint))?;
        acceptor.set_reuse_address(true)?;
        if reuse_port {
            acceptor.set_reuse_port(true)?;
        }
        if endpoint.is_ipv6() && endpoint.is_unspecified() {
            acceptor.set_v6_only(false)?;
        }
        acceptor.bind(endpoint)?;
        acceptor.listen(backlog)?;
        Ok(acceptor)
    }

    /// Listens on every interface: dual-stack `[::]:port`, or `0.0.0.0:port`
    /// where the host has IPv6 disabled.
    pub fn bind_listen_any(port: u16, backlog: u32) -> Result<Acceptor> {
        Acceptor::bind_listen_any_with(port, backlog, false)
    }

    /// [`Acceptor::bind_listen_any`] with `SO_REUSEPORT`, as
    /// [`Acceptor::bind_listen_shared`].
    pub fn bind_listen_any_shared(port: u16, backlog: u32) -> Result<Acceptor> {
        Acceptor::bind_listen_any_with(port, backlog, true)
    }

    fn bind_listen_any_with(port: u16, backlog: u32, reuse_port: bool) -> Result<Acceptor> {
        match Acceptor::bind_listen_with(&Endpoint::any_v6(port), backlog, reuse_port) {
            Err(e) if ipv6_unavailable(&e) => {
                Acceptor::bind_listen_with(&Endpoint::any_v4(port), backlog, reuse_port)
            }
            other => other,
        }
    }

    /// Wraps a socket already checked to be a listening one of `protocol`
    /// (inherited ones, Linux).
    #[cfg(target_os = "linux")]
    pub(crate) fn from_socket2(inner: socket2::Socket, protocol: Protocol) -> Acceptor {
        Acceptor { inner, protocol }
    }

    /// The protocol the acceptor was opened with.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// `SO_REUSEADDR`: lets a restarted server bind while old connections
    /// linger in `TIME_WAIT`. It does not let two servers share a port.
    pub fn set_reuse_address(&self, on: bool) -> Result<()> {
        self.inner
            .set_reuse_address(on)
            .map_err(|e| Error::io(e, "set SO_REUSEADDR"))
    }

    /// `SO_REUSEPORT`: several acceptors on one port, the kernel spreading
    /// connections among them (one per worker thread).
    pub fn set_reuse_port(&self, on: bool) -> Result<()> {
        self.inner
            .set_reuse_port(on)
            .map_err(|e| Error::io(e, "set SO_REUSEPORT"))
    }

    /// `IPV6_V6ONLY`: `false` lets an acceptor bound to `::` also accept IPv4
    /// clients (seen as `::ffff:a.b.c.d`).
    pub fn set_v6_only(&self, only: bool) -> Result<()> {
        self.inner
            .set_only_v6(only)
            .map_err(|e| Error::io(e, "set IPV6_V6ONLY"))
    }

    /// `TCP_DEFER_ACCEPT` (Linux): complete `accept` only once the client has
    /// sent data, so accept and the first read happen together. Only for
    /// protocols where the client speaks first.
    ///
    /// Linux only: elsewhere it fails with [`io::ErrorKind::Unsupported`],
    /// and `tcpkit serve` does not ask for it.
    pub fn set_defer_accept(&self, seconds: u32) -> Result<()> {
        #[cfg(not(target_os = "linux"))]
        {
            let _ = seconds;
            Err(Error::io(
                io::Error::new(io::ErrorKind::Unsupported, "TCP_DEFER_ACCEPT is Linux-only"),
                "set TCP_DEFER_ACCEPT",
            ))
        }
        #[cfg(target_os = "linux")]
        self.set_defer_accept_linux(seconds)
    }

    #[cfg(target_os = "linux")]
    fn set_defer_accept_linux(&self, seconds: u32) -> Result<()> {
        let secs = libc::c_int::try_from(seconds).unwrap_or(libc::c_int::MAX);
        super::setsockopt_int(
            std::os::fd::AsRawFd::as_raw_fd(&self.inner),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            secs,
            "set TCP_DEFER_ACCEPT",
        )
    }

    /// Binds to a local endpoint (`bind(2)`): the seed's `bind_acceptor_socket`.
    /// A taken port is [`ErrorKind::AddrInUse`], a privileged one
    /// [`ErrorKind::PermissionDenied`], both naming the endpoint.
    pub fn bind(&self, endpoint: &Endpoint) -> Result<()> {
        self.inner
            .bind(&SockAddr::from(endpoint.socket_addr()))
            .map_err(|e| Error::io(e, format_args!("bind {endpoint}")))
    }

    /// Starts listening (`listen(2)`) with a queue of `backlog` completed
    /// connections (the seed uses [`DEFAULT_BACKLOG`] = 30).
    pub fn listen(&self, backlog: u32) -> Result<()> {
        let backlog_i32 = i32::try_from(backlog).unwrap_or(i32::MAX);
        self.inner.listen(backlog_i32).map_err(|e| {
            Error::io(
                e,
                format_args!("listen on {} (backlog {backlog})", self.name()),
            )
        })
    }

    /// The backlog the kernel will actually use for a requested one: Linux
    /// silently caps it at `net.core.somaxconn`.
    pub fn effective_backlog(requested: u32) -> u32 {
        match somaxconn() {
            Some(max) => requested.min(max),
            None => requested,
        }
    }

    /// Blocks until a client connects (`accept4(2)`), then returns a new
    /// connected [`Socket`] for it and its endpoint. The acceptor keeps
    /// listening. The seed's `accept_new_connection`.
    pub fn accept(&self) -> Result<(Socket, Endpoint)> {
        loop {
            match self.inner.accept() {
                Ok((sock, addr)) => {
                    let peer = to_endpoint(&addr, "accept")?;
                    return Ok((Socket::from_accepted(sock, self.protocol, peer), peer));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(e, format_args!("accept on {}", self.name()))),
            }
        }
    }

    /// The endpoint actually bound (`getsockname(2)`): after binding port 0,
    /// this has the port the kernel chose.
    pub fn local_endpoint(&self) -> Result<Endpoint> {
        local_endpoint(&self.inner)
    }

    /// The underlying `socket2` socket, for options not wrapped here.
    pub fn as_socket2(&self) -> &socket2::Socket {
        &self.inner
    }

    /// Converts into a standard library listener (still blocking).
    pub fn into_std(self) -> std::net::TcpListener {
        self.inner.into()
    }

    /// Hands the listening socket to tokio (sets `O_NONBLOCK` first). Must be
    /// called inside a runtime with I/O enabled; outside one it is an error
    /// (tokio itself would panic).
    pub fn into_tokio(self) -> Result<tokio::net::TcpListener> {
        let name = self.name();
        super::require_runtime(&name)?;
        super::set_nonblocking(&self.inner, &name)?;
        tokio::net::TcpListener::from_std(self.inner.into())
            .map_err(|e| Error::io(e, format_args!("register {name} with tokio")))
    }

    fn name(&self) -> String {
        match self.local_endpoint().ok().filter(|ep| ep.port() != 0) {
            Some(ep) => ep.to_string(),
            None => format!("unbound {} acceptor", self.protocol),
        }
    }
}

/// Whether an error means "this host has no IPv6" rather than a real failure.
pub(crate) fn ipv6_unavailable(e: &Error) -> bool {
    matches!(
        e.os_code(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)
    ) || e.kind() == ErrorKind::AddrNotAvailable
}

fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}
