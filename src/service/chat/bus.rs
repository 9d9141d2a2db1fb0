//! The bus between chat instances, behind a small trait so that a chat on
//! one process never touches it (`serve --mode chat` without `--bus`).
//!
//! A [`Hub`](super::Hub) with a bus tells it, under the hub's lock and
//! without waiting, every line and notice it delivers locally
//! ([`Bus::publish`]) and every member who comes or goes
//! ([`Bus::presence`]); the bus carries them to the other instances, which
//! deliver them to their own members. Sessions ask the bus, with a
//! deadline, for a room's history, its members on every instance, and a
//! name's owner ([`Bus::history`], [`Bus::who`], [`Bus::claim`]).
//! `redis_bus.rs` (feature `redis`) is the one implementation.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

/// A boxed future the bus answers with.
pub type Answer<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What [`Bus::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The name is now the caller's (or already was).
    Granted,
    /// Someone on some instance has it.
    Taken,
    /// The bus could not be asked (down, or no answer in time).
    Unavailable,
}

/// Chat rooms across instances. Every method that does not return an
/// [`Answer`] must return at once: the hub calls them under its lock.
pub trait Bus: Send + Sync + Debug {
    /// A short tag unique to this instance, part of its guest names
    /// (`user<N>-<tag>`) so that guests on different instances differ.
    fn tag(&self) -> &str;

    /// Carries `msg`, just delivered in `room` here, to the other
    /// instances; with `keep`, also appends it to the room's shared
    /// history. Never waits: a full queue or a bus that is down drops it
    /// (counted).
    fn publish(&self, room: &str, msg: &Bytes, keep: bool);

    /// `name` is now (`present`) or no longer a member of `room` here.
    fn presence(&self, room: &str, name: &str, present: bool);

    /// The room's last lines, oldest first; `None` if the bus could not
    /// answer in time.
    fn history(&self, room: &str) -> Answer<Option<Vec<Bytes>>>;

    /// The names in `room` on every instance; `None` if the bus could not
    /// answer in time.
    fn who(&self, room: &str) -> Answer<Option<Vec<String>>>;

    /// Claims `name` (ignoring ASCII case) for connection `owner` of this
    /// instance, on every instance at once: of two racing claims exactly
    /// one is granted.
    fn claim(&self, name: &str, owner: u64) -> Answer<Claim>;

    /// Gives up `name` if `owner` holds it. Never waits.
    fn release(&self, name: &str, owner: u64);

    /// Whether the bus is connected right now.
    fn is_up(&self) -> bool;
}
