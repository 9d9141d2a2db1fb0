//! [`Either`]: one of two upstream types, chosen at run time, as one type
//! (a TCP or a UNIX backend in one list; a decorator that is on or off by
//! a flag).

use super::{Connected, Upstream};
use crate::endpoint::Endpoint;
use crate::error::Result;

/// An upstream that is either an `L` or an `R`. [`Upstream`]'s `connect`
/// returns a future of its own type per implementation, so it cannot be
/// boxed as `dyn Upstream`; this is the closed alternative.
///
/// ```
/// use std::time::Duration;
/// use tcpkit::endpoint::HostPort;
/// use tcpkit::relay::{Either, Fixed, Unix, Upstream};
/// let t = Duration::from_secs(5);
/// let backends: Vec<Either<Fixed, Unix>> = vec![
///     Either::Left(Fixed::new(HostPort::parse("127.0.0.1:8080")?, t)),
///     Either::Right(Unix::new("/run/app.sock", t)),
/// ];
/// assert_eq!(backends[1].describe(), "unix:/run/app.sock");
/// # Ok::<(), tcpkit::Error>(())
/// ```
#[derive(Debug, Clone)]
pub enum Either<L, R> {
    /// The first kind.
    Left(L),
    /// The second kind.
    Right(R),
}

impl<L: Upstream, R: Upstream> Upstream for Either<L, R> {
    async fn connect(&self, client: &Endpoint) -> Result<Connected> {
        match self {
            Either::Left(l) => l.connect(client).await,
            Either::Right(r) => r.connect(client).await,
        }
    }

    fn describe(&self) -> String {
        match self {
            Either::Left(l) => l.describe(),
            Either::Right(r) => r.describe(),
        }
    }
}
