//! The client side: connecting over every resolved address, framed helpers,
//! stdin/stdout piping and session dumps.
//!
//! * [`connect`]: [`Connector`] resolves a name through an injectable
//!   [`Resolve`](crate::endpoint::Resolve) and races its IPv6 and IPv4
//!   addresses (RFC 8305, Happy Eyeballs) under per-attempt and overall
//!   deadlines, with optional retries and a source address.
//! * [`framed`]: [`FramedClient`] sends and receives whole lines or
//!   length-prefixed frames with the [`codec`](crate::codec)s' maximums.
//! * [`pipe`](mod@pipe): [`pipe()`] copies an input to a socket and the socket
//!   to an output, both at once: `tcpkit connect` and `tcpkit listen`.
//! * [`dump`]: [`SessionDump`] records both directions as text or hex.

pub mod connect;
pub mod dump;
pub mod framed;
pub mod pipe;

pub use connect::{CONNECTION_ATTEMPT_DELAY, ConnectOptions, Connected, Connector, Family};
pub use dump::{Direction, DumpFormat, SessionDump};
pub use framed::FramedClient;
pub use pipe::{PipeEnd, PipeOptions, PipeStats, pipe, pipe_stream};
