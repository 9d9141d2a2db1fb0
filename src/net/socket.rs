//! [`Socket`]: the active (connected) TCP socket, seed blocks 3 and 6.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::{SockAddr, Type};

use super::Protocol;
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};

/// An active TCP socket: Asio's `ip::tcp::socket`.
///
/// The lifecycle is the seed's: [`Socket::open`] (`socket(2)`), optional
/// options and [`Socket::bind`], [`Socket::connect`] (`connect(2)`), then
/// [`Socket::read_some`] / [`Socket::write_some`] and their `_exact`/`_all`
/// forms until [`Socket::shutdown`] or drop (`close(2)`). A socket returned by
/// [`Acceptor::accept`](super::Acceptor::accept) is already connected.
///
/// Every error names the endpoint involved and keeps the OS `errno`.
#[derive(Debug)]
pub struct Socket {
    inner: socket2::Socket,
    protocol: Protocol,
    /// The remote endpoint once connected; kept for error messages.
    peer: Option<Endpoint>,
}

impl Socket {
    /// Opens a TCP socket for `protocol`: `socket(2)` with `SOCK_STREAM`
    /// (close-on-exec). The seed's `creat_tcp_socket`.
    pub fn open(protocol: Protocol) -> Result<Socket> {
        let inner = socket2::Socket::new(protocol.domain(), Type::STREAM, None)
            .map_err(|e| Error::io(e, format_args!("open {protocol} TCP socket")))?;
        Ok(Socket {
            inner,
            protocol,
            peer: None,
        })
    }

    /// Opens a socket of the endpoint's protocol and connects it, blocking.
    pub fn connect_to(endpoint: &Endpoint) -> Result<Socket> {
        let mut socket = Socket::open(Protocol::of(endpoint))?;
        socket.connect(endpoint)?;
        Ok(socket)
    }

    pub(crate) fn from_accepted(
        inner: socket2::Socket,
        protocol: Protocol,
        peer: Endpoint,
    ) -> Socket {
        Socket {
            inner,
            protocol,
            peer: Some(peer),
        }
    }

    /// The protocol the socket was opened with.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Binds to a local endpoint before connecting (`bind(2)`), e.g. to pick
    /// the source address.
    pub fn bind(&self, endpoint: &Endpoint) -> Result<()> {
        self.inner
            .bind(&SockAddr::from(endpoint.socket_addr()))
            .map_err(|e| Error::io(e, format_args!("bind {endpoint}")))
    }

    /// Connects to `endpoint` (`connect(2)`), blocking until the handshake
    /// completes or fails: refused, unreachable and timed out are distinct
    /// [`ErrorKind`](crate::ErrorKind)s. The seed's `connect_to_end`.
    pub fn connect(&mut self, endpoint: &Endpoint) -> Result<()> {
        self.inner
            .connect(&SockAddr::from(endpoint.socket_addr()))
            .map_err(|e| Error::io(e, format_args!("connect {endpoint}")))?;
        self.peer = Some(*endpoint);
        Ok(())
    }

    /// Like [`Socket::connect`], giving up after `timeout` with
    /// [`ErrorKind::TimedOut`](crate::ErrorKind::TimedOut).
    ///
    /// A non-blocking `connect(2)` then `poll(2)` until the handshake finishes
    /// or the deadline passes; it never returns before `timeout` has elapsed
    /// (`poll` counts whole milliseconds, so the wait is rounded up, not down).
    /// The socket is blocking again afterwards. After a timeout the handshake
    /// may still be in flight: drop the socket rather than reuse it.
    pub fn connect_timeout(&mut self, endpoint: &Endpoint, timeout: Duration) -> Result<()> {
        let context = format!("connect {endpoint}");
        self.inner
            .set_nonblocking(true)
            .map_err(|e| Error::io(e, &context))?;
        let outcome = match self.inner.connect(&SockAddr::from(endpoint.socket_addr())) {
            Ok(()) => Ok(true),
            Err(e)
                if e.raw_os_error() == Some(libc::EINPROGRESS)
                    || e.kind() == io::ErrorKind::WouldBlock =>
            {
                wait_connected(&self.inner, timeout)
            }
            Err(e) => Err(e),
        };
        // Restore blocking mode whatever happened: read_some/write_some and
        // their timeouts rely on it.
        let restored = self.inner.set_nonblocking(false);
        match outcome {
            Ok(true) => {
                restored.map_err(|e| Error::io(e, &context))?;
                self.peer = Some(*endpoint);
                Ok(())
            }
            Ok(false) => Err(Error::timed_out(&context, timeout)),
            Err(e) => Err(Error::io(e, &context)),
        }
    }

    /// Connects without blocking a thread and hands the socket to tokio:
    /// `O_NONBLOCK`, then `connect(2)` (`EINPROGRESS`), completed when the
    /// reactor reports the socket writable and `SO_ERROR` is clear. The async
    /// client's one way to connect, so it opens, binds and configures
    /// sockets as the blocking lifecycle does.
    ///
    /// Cancel-safe: dropping the future closes the socket (and with it a
    /// handshake still in flight). It has no deadline of its own: wrap it in
    /// `tokio::time::timeout`. Must run inside a runtime with I/O enabled;
    /// outside one it is an error.
    ///
    /// ```
    /// use tcpkit::{Acceptor, Endpoint, Socket, net::Protocol};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tcpkit::Result<()> {
    /// let acceptor = Acceptor::bind_listen(&Endpoint::loopback_v4(0), 30)?;
    /// let server = acceptor.local_endpoint()?;
    /// let socket = Socket::open(Protocol::V4)?;
    /// socket.bind(&Endpoint::loopback_v4(0))?; // pick the source
    /// let stream = socket.connect_async(&server).await?;
    /// assert_eq!(stream.peer_addr().ok(), Some(server.socket_addr()));
    /// # Ok(()) }
    /// ```
    pub async fn connect_async(self, endpoint: &Endpoint) -> Result<tokio::net::TcpStream> {
        let context = format_args!("connect {endpoint}").to_string();
        super::require_runtime(&context)?;
        super::set_nonblocking(&self.inner, &context)?;
        let socket = tokio::net::TcpSocket::from_std_stream(self.inner.into());
        socket
            .connect(endpoint.socket_addr())
            .await
            .map_err(|e| Error::io(e, &context))
    }

    /// Reads what is available, at most `buf.len()` bytes (`recv(2)`),
    /// blocking until at least one byte arrives. `Ok(0)` means the peer closed
    /// its side (clean EOF). Asio's `read_some`.
    pub fn read_some(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_error(e, "read from")),
            }
        }
    }

    /// Writes some of `buf` (`send(2)`), returning how much was taken.
    ///
    /// Sends with `MSG_NOSIGNAL`, as `std::net::TcpStream` does: writing to a
    /// connection the peer reset (or we shut down) is an
    /// [`ErrorKind::ConnectionReset`](crate::ErrorKind::ConnectionReset) error
    /// (`EPIPE`), never a `SIGPIPE` that would kill a process that does not
    /// ignore it.
    pub fn write_some(&mut self, buf: &[u8]) -> Result<usize> {
        loop {
            match self.inner.send_with_flags(buf, libc::MSG_NOSIGNAL) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_error(e, "write to")),
            }
        }
    }

    /// Reads exactly `buf.len()` bytes; EOF before that is
    /// [`ErrorKind::UnexpectedEof`](crate::ErrorKind::UnexpectedEof).
    pub fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.read_some(&mut buf[filled..])? {
                0 => {
                    return Err(Error::new(
                        crate::ErrorKind::UnexpectedEof,
                        crate::error::code::UNEXPECTED_EOF,
                        format!(
                            "read from {}: connection closed after {filled} of {} bytes",
                            self.peer_name(),
                            buf.len()
                        ),
                    ));
                }
                n => filled += n,
            }
        }
        Ok(())
    }

    /// Writes all of `buf`, looping over partial writes.
    pub fn write_all(&mut self, mut buf: &[u8]) -> Result<()> {
        while !buf.is_empty() {
            let n = self.write_some(buf)?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Shuts down one or both directions (`shutdown(2)`); after
    /// `Shutdown::Write` the peer reads EOF while this side can still read.
    pub fn shutdown(&self, how: Shutdown) -> Result<()> {
        self.inner
            .shutdown(how)
            .map_err(|e| Error::io(e, format_args!("shutdown {}", self.peer_name())))
    }

    /// The local endpoint (`getsockname(2)`).
    pub fn local_endpoint(&self) -> Result<Endpoint> {
        local_endpoint(&self.inner)
    }

    /// The remote endpoint (`getpeername(2)`).
    pub fn peer_endpoint(&self) -> Result<Endpoint> {
        let addr = self
            .inner
            .peer_addr()
            .map_err(|e| Error::io(e, "getpeername"))?;
        to_endpoint(&addr, "getpeername")
    }

    /// Sets `TCP_NODELAY` (disables Nagle's algorithm).
    pub fn set_nodelay(&self, on: bool) -> Result<()> {
        self.inner
            .set_tcp_nodelay(on)
            .map_err(|e| Error::io(e, "set TCP_NODELAY"))
    }

    /// Reads back `TCP_NODELAY`.
    pub fn nodelay(&self) -> Result<bool> {
        self.inner
            .tcp_nodelay()
            .map_err(|e| Error::io(e, "get TCP_NODELAY"))
    }

    /// Enables `SO_KEEPALIVE` with the given idle time (`TCP_KEEPIDLE`, rounded
    /// up to whole seconds, at least 1), or disables it (`None`).
    pub fn set_keepalive(&self, idle: Option<Duration>) -> Result<()> {
        let result = match idle {
            // TCP_KEEPIDLE counts whole seconds from 1: round up, so 500 ms
            // is 1 s rather than an EINVAL for 0.
            Some(idle) => self.inner.set_tcp_keepalive(
                &socket2::TcpKeepalive::new()
                    .with_time(whole_seconds_up(idle).max(Duration::from_secs(1))),
            ),
            None => self.inner.set_keepalive(false),
        };
        result.map_err(|e| Error::io(e, "set SO_KEEPALIVE"))
    }

    /// `IP_BIND_ADDRESS_NO_PORT` (Linux): a [`Socket::bind`] to a source
    /// address with port 0 leaves the port for `connect(2)` to pick, so one
    /// source address serves as many connections as there are
    /// destination/port pairs, not only one per ephemeral port.
    ///
    /// Linux only: elsewhere it fails with [`io::ErrorKind::Unsupported`].
    pub fn set_bind_address_no_port(&self, on: bool) -> Result<()> {
        #[cfg(not(target_os = "linux"))]
        {
            let _ = on;
            Err(Error::io(
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "IP_BIND_ADDRESS_NO_PORT is Linux-only",
                ),
                "set IP_BIND_ADDRESS_NO_PORT",
            ))
        }
        #[cfg(target_os = "linux")]
        {
            super::setsockopt_int(
                self.inner.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                libc::c_int::from(on),
                "set IP_BIND_ADDRESS_NO_PORT",
            )
        }
    }

    /// Reads back `SO_KEEPALIVE`.
    pub fn keepalive(&self) -> Result<bool> {
        self.inner
            .keepalive()
            .map_err(|e| Error::io(e, "get SO_KEEPALIVE"))
    }

    /// Requests a receive buffer size (`SO_RCVBUF`); read back
    /// [`Socket::recv_buffer_size`] for what the kernel granted (Linux doubles it).
    pub fn set_recv_buffer_size(&self, bytes: usize) -> Result<()> {
        self.inner
            .set_recv_buffer_size(bytes)
            .map_err(|e| Error::io(e, format_args!("set SO_RCVBUF to {bytes}")))
    }

    /// The receive buffer size the kernel granted.
    pub fn recv_buffer_size(&self) -> Result<usize> {
        self.inner
            .recv_buffer_size()
            .map_err(|e| Error::io(e, "get SO_RCVBUF"))
    }

    /// Requests a send buffer size (`SO_SNDBUF`).
    pub fn set_send_buffer_size(&self, bytes: usize) -> Result<()> {
        self.inner
            .set_send_buffer_size(bytes)
            .map_err(|e| Error::io(e, format_args!("set SO_SNDBUF to {bytes}")))
    }

    /// The send buffer size the kernel granted.
    pub fn send_buffer_size(&self) -> Result<usize> {
        self.inner
            .send_buffer_size()
            .map_err(|e| Error::io(e, "get SO_SNDBUF"))
    }

    /// Sets `SO_LINGER`: how long `close(2)` waits for unsent data.
    /// `Some(Duration::ZERO)` makes close send a reset (RST). The kernel counts
    /// whole seconds, so other durations are rounded up: truncating 500 ms to
    /// 0 would silently turn a graceful close into a reset.
    pub fn set_linger(&self, linger: Option<Duration>) -> Result<()> {
        self.inner
            .set_linger(linger.map(whole_seconds_up))
            .map_err(|e| Error::io(e, "set SO_LINGER"))
    }

    /// Reads back `SO_LINGER`.
    pub fn linger(&self) -> Result<Option<Duration>> {
        self.inner
            .linger()
            .map_err(|e| Error::io(e, "get SO_LINGER"))
    }

    /// A deadline for each blocking read (`SO_RCVTIMEO`); `None` waits forever.
    /// An expired read is [`ErrorKind::TimedOut`](crate::ErrorKind::TimedOut).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        self.inner
            .set_read_timeout(timeout)
            .map_err(|e| Error::io(e, "set SO_RCVTIMEO"))
    }

    /// A deadline for each blocking write (`SO_SNDTIMEO`).
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        self.inner
            .set_write_timeout(timeout)
            .map_err(|e| Error::io(e, "set SO_SNDTIMEO"))
    }

    /// The underlying `socket2` socket, for options not wrapped here.
    pub fn as_socket2(&self) -> &socket2::Socket {
        &self.inner
    }

    /// Converts into a standard library stream (still blocking).
    pub fn into_std(self) -> std::net::TcpStream {
        self.inner.into()
    }

    /// Hands the connected socket to tokio (sets `O_NONBLOCK` first, as
    /// `TcpStream::from_std` requires). Must be called inside a runtime with
    /// I/O enabled; outside one it is an error (tokio itself would panic).
    pub fn into_tokio(self) -> Result<tokio::net::TcpStream> {
        let name = self.peer_name();
        super::require_runtime(&name)?;
        super::set_nonblocking(&self.inner, &name)?;
        tokio::net::TcpStream::from_std(self.inner.into())
            .map_err(|e| Error::io(e, format_args!("register {name} with tokio")))
    }

    fn peer_name(&self) -> String {
        match self.peer {
            Some(peer) => peer.to_string(),
            None => format!("unconnected {} socket", self.protocol),
        }
    }

    fn io_error(&self, e: io::Error, verb: &str) -> Error {
        if e.kind() == io::ErrorKind::WouldBlock {
            // SO_RCVTIMEO/SO_SNDTIMEO expiry surfaces as EAGAIN.
            return Error::new(
                crate::ErrorKind::TimedOut,
                libc::ETIMEDOUT,
                format!("{verb} {}: timed out", self.peer_name()),
            );
        }
        Error::io(e, format_args!("{verb} {}", self.peer_name()))
    }
}

/// Rounds up to whole seconds (for options the kernel keeps in seconds),
/// clamped to what a `c_int` holds.
fn whole_seconds_up(d: Duration) -> Duration {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    Duration::from_secs(secs.min(libc::c_int::MAX as u64))
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_some(buf).map_err(io::Error::from)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_some(buf).map_err(io::Error::from)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Waits for a non-blocking connect to finish: `Ok(false)` if `timeout`
/// passed first, the connect error if it failed. A timeout too large to add
/// to the clock (`Duration::MAX`) waits without a deadline.
fn wait_connected(sock: &socket2::Socket, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now().checked_add(timeout);
    loop {
        // poll(2) counts whole milliseconds: round up so it never wakes early.
        let left_ms = match deadline {
            None => -1,
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(false);
                }
                let left_ms = (deadline - now).as_micros().div_ceil(1000);
                libc::c_int::try_from(left_ms).unwrap_or(libc::c_int::MAX)
            }
        };
        let mut pollfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid, initialised pollfd for the call's duration.
        match unsafe { libc::poll(&mut pollfd, 1, left_ms) } {
            0 => continue, // the loop re-checks the deadline
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            _ => {
                // Writable or failed: SO_ERROR says which; getpeername confirms
                // a connection (ENOTCONN otherwise).
                if let Some(e) = sock.take_error()? {
                    return Err(e);
                }
                sock.peer_addr()?;
                return Ok(true);
            }
        }
    }
}

pub(crate) fn local_endpoint(sock: &socket2::Socket) -> Result<Endpoint> {
    let addr = sock.local_addr().map_err(|e| Error::io(e, "getsockname"))?;
    to_endpoint(&addr, "getsockname")
}

pub(crate) fn to_endpoint(addr: &SockAddr, what: &str) -> Result<Endpoint> {
    addr.as_socket().map(Endpoint::from).ok_or_else(|| {
        Error::io(
            io::Error::from_raw_os_error(libc::EAFNOSUPPORT),
            format_args!("{what}: not an IP address"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::net::Acceptor;

    /// A port nothing listens on, held bound (not listening) so no one
    /// else takes it: the kernel answers a SYN to it with a reset.
    fn closed_port() -> (Socket, Endpoint) {
        let sock = Socket::open(Protocol::V4).unwrap();
        sock.bind(&Endpoint::loopback_v4(0)).unwrap();
        let ep = sock.local_endpoint().unwrap();
        (sock, ep)
    }

    #[tokio::test]
    async fn connect_async_binds_the_source_and_reports_refusal_naming_the_endpoint() {
        let acceptor = Acceptor::bind_listen(&Endpoint::loopback_v4(0), 30).unwrap();
        let server = acceptor.local_endpoint().unwrap();
        let source = Endpoint::new("127.0.0.2", 0).unwrap();
        let socket = Socket::open(Protocol::V4).unwrap();
        socket.bind(&source).unwrap();
        let stream = socket.connect_async(&server).await.unwrap();
        assert_eq!(stream.local_addr().unwrap().ip(), source.ip());

        let (_held, target) = closed_port();
        let err = Socket::open(Protocol::V4)
            .unwrap()
            .connect_async(&target)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
        assert_eq!(err.os_code(), Some(libc::ECONNREFUSED));
        assert!(err.message().contains(&target.to_string()), "{err}");
    }

    #[test]
    fn connect_async_outside_a_runtime_is_an_error_not_a_panic() {
        let target = Endpoint::loopback_v4(9);
        let fut = Socket::open(Protocol::V4).unwrap().connect_async(&target);
        let err = futures_util::FutureExt::now_or_never(fut)
            .expect("fails at once")
            .unwrap_err();
        assert!(
            err.message().contains("not inside a tokio runtime"),
            "{err}"
        );
    }
}
