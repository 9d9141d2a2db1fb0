//! tcpkit: TCP clients and servers in Boost.Asio's model, in Rust.
//!
//! The vocabulary is the seed tutorial's: an [`Endpoint`] says whom to talk
//! to; a [`Socket`] is the active side that connects, reads and writes; an
//! [`Acceptor`] is the passive side that binds, listens (with a backlog of 30)
//! and accepts, yielding a new `Socket` per client. Every failure is an
//! [`Error`] with a numeric code and a message naming the input.
//!
//! # The seed's lifecycle
//!
//! ```
//! use std::net::Shutdown;
//! use tcpkit::{Acceptor, Endpoint, Socket, net::Protocol, DEFAULT_BACKLOG};
//!
//! // Server: endpoint, acceptor, bind, listen(30). Port 0 lets the kernel pick.
//! let server_ep = Endpoint::loopback_v4(0);
//! let acceptor = Acceptor::open(Protocol::V4)?;
//! acceptor.set_reuse_address(true)?;
//! acceptor.bind(&server_ep)?;
//! acceptor.listen(DEFAULT_BACKLOG)?;
//! let server_ep = acceptor.local_endpoint()?;
//!
//! // Client: endpoint, open, connect. The kernel completes the handshake
//! // against the backlog even before the server calls accept.
//! let mut client = Socket::open(Protocol::V4)?;
//! client.connect(&server_ep)?;
//!
//! // Server: accept yields a new socket and the client's endpoint.
//! let (mut conn, peer) = acceptor.accept()?;
//! assert_eq!(peer, client.local_endpoint()?);
//!
//! // Write and read, both ways, then close.
//! client.write_all(b"hello")?;
//! let mut buf = [0u8; 5];
//! conn.read_exact(&mut buf)?;
//! conn.write_all(&buf)?;
//! client.read_exact(&mut buf)?;
//! assert_eq!(&buf, b"hello");
//! client.shutdown(Shutdown::Write)?;
//! assert_eq!(conn.read_some(&mut buf)?, 0); // clean EOF
//! # Ok::<(), tcpkit::Error>(())
//! ```
//!
//! # Layout
//!
//! The data path reads top to bottom:
//!
//! * [`error`]: the one error type (code + message), Asio's `error_code`.
//! * [`endpoint`]: parsing (pure) and name resolution behind a trait.
//! * [`net`]: the blocking socket lifecycle: [`Socket`], [`Acceptor`],
//!   handed to tokio with `into_tokio()`; listening sockets inherited from
//!   systemd or a predecessor (Linux).
//! * [`server`]: the async accept loop, connection limits, idle timeouts and
//!   graceful shutdown, running a [`service`] per connection; the handover
//!   of its listening sockets to a successor (Linux).
//! * [`codec`]: I/O-free framing (lines, length-prefixed) with maximums.
//! * [`service`]: what a connection does: echo, discard, chat, over a TCP
//!   socket or any other stream ([`service::Stream`]).
//! * [`client`]: connecting over every resolved address, and stdin/stdout piping.
//! * [`relay`]: a service that connects each client to an upstream (through
//!   `client`'s connector) and copies both ways, half-close and resets
//!   carried through.
//! * [`bench`](mod@bench): the load generator and its histograms.
//! * [`proxy`]: PROXY protocol v1/v2 headers, I/O-free (frame, parse,
//!   encode), read by the server before the service and sent by the client
//!   and the bench.
//! * [`metrics`]: counters shared by the server, the bench and progress output.
//! * `tls` (feature `tls`): rustls configurations and the TLS layer over a
//!   connected stream, for the server, the client and the bench.
//!
//! Dependencies point one way: `server` -> `service` -> `codec`;
//! `relay` -> `service`, `client`; `server`, `client` and `bench` open
//! sockets through `net`.
//!
//! # Features
//!
//! * `cli` (default): the `tcpkit` binary and what only it uses (clap,
//!   anyhow, indicatif, tracing-subscriber, serde_json). A library user sets
//!   `default-features = false` and compiles none of them.
//! * `tls` (default): TLS on rustls with the aws-lc-rs provider;
//!   certificates from PEM files or made at start (rcgen).
//! * `plot` (enabled by `cli`): `bench::plot`, the latency distribution as
//!   an SVG (plotters).
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod bench;
pub mod client;
pub mod codec;
pub mod endpoint;
pub mod error;
pub mod metrics;
pub mod net;
#[cfg(feature = "metrics")]
pub mod prometheus;
pub mod proxy;
pub mod relay;
pub mod server;
pub mod service;
#[cfg(feature = "tls")]
pub mod tls;

pub use endpoint::{DEFAULT_PORT, Endpoint};
pub use error::{Error, ErrorKind, Result};
pub use net::{Acceptor, DEFAULT_BACKLOG, Socket};

/// The README's Rust examples, compiled as doc tests so that they cannot
/// drift from the API (rustdoc sees this item only under `cfg(doctest)`;
/// some use TLS, so the library alone skips them).
#[doc = include_str!("../README.md")]
#[cfg(all(doctest, feature = "tls"))]
pub struct ReadmeDoctests;
