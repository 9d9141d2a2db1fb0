//! [`Room`]s and the hub that holds them: membership and fan-out.
//!
//! Fan-out never waits while holding the lock: each member has a bounded
//! queue and a message is `try_send`'d to it. A member whose queue is full is
//! removed and told to go (its `kick` token), so one slow reader never slows
//! the room. Senders pace themselves against that hard bound: after each
//! line a session waits (outside the lock, at most
//! [`super::STALL_WINDOW`] per line) for any member whose queue is over half
//! full, see [`Hub::say_lagging`]; so a paste of thousands of lines reaches
//! readers that keep up instead of kicking them, and a member whose socket
//! takes no bytes for that window is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::LastWrite;
use super::bus::Bus;
use crate::metrics::ChatGauges;

/// One client as the room sees it.
///
/// Built only by the chat session: its fields (the queue the room writes
/// into, the token that kicks it) are the session's protocol with the hub,
/// free to change, so they are not public.
#[derive(Debug, Clone)]
pub struct Member {
    /// The connection's id.
    pub(crate) id: u64,
    /// Display name, prefixed to what it says.
    pub(crate) name: String,
    /// Its bounded outgoing queue.
    pub(crate) tx: mpsc::Sender<Bytes>,
    /// Cancelled when the member is disconnected for falling behind.
    pub(crate) kick: CancellationToken,
    /// When its socket last took bytes: a lagging member that makes no
    /// progress for [`super::STALL_WINDOW`] is dropped.
    pub(crate) last_write: Arc<LastWrite>,
}

impl Member {
    /// Whether its queue is more than half full.
    fn lags(&self) -> bool {
        self.tx.capacity() * 2 < self.tx.max_capacity()
    }
}

/// The members of one room, and its last few lines.
#[derive(Debug, Default)]
pub struct Room {
    members: Vec<Member>,
    /// The last few lines (the hub's `history`) said here (`name: text`, not
    /// notices), replayed to whoever joins. Bounded in lines, and each line
    /// by the server's maximum line length; gone when the room empties.
    history: VecDeque<Bytes>,
}

impl Room {
    /// Queues `msg` to every member but `from`; returns those too slow to
    /// take it, already removed from the room. With `lagging`, also collects
    /// those whose queue is more than half full after it (in the same pass).
    fn send_others(
        &mut self,
        from: Option<u64>,
        msg: &Bytes,
        mut lagging: Option<&mut Vec<Member>>,
    ) -> Vec<Member> {
        let mut slow = Vec::new();
        self.members.retain(|m| {
            if Some(m.id) == from {
                return true;
            }
            match m.tx.try_send(msg.clone()) {
                Err(mpsc::error::TrySendError::Full(_)) => {
                    m.kick.cancel();
                    slow.push(m.clone());
                    false
                }
                Ok(()) => {
                    if let Some(lagging) = lagging.as_deref_mut()
                        && m.lags()
                    {
                        lagging.push(m.clone());
                    }
                    true
                }
                // Closed: that member is on its way out already.
                Err(mpsc::error::TrySendError::Closed(_)) => true,
            }
        });
        slow
    }

    /// Queues notice `msg` to every member but `from` that has room for it;
    /// one that has none misses it but stays (it is dropped, if it stays
    /// behind, by the next line said). Notices of joins and leaves grow
    /// with the square of a room's size when many join at once: counting
    /// them against a member's queue would drop readers that keep up with
    /// every line (1,000 simultaneous joins dropped ~700 before).
    fn announce(&self, from: Option<u64>, msg: &Bytes) {
        for m in &self.members {
            if Some(m.id) != from {
                let _ = m.tx.try_send(msg.clone());
            }
        }
    }

    /// Sends line `msg`, then tells the room (and the bus, if any) about
    /// anyone dropped for it; returns how many were dropped.
    fn broadcast(
        &mut self,
        room: &str,
        from: Option<u64>,
        msg: &Bytes,
        bus: Option<&dyn Bus>,
        lagging: Option<&mut Vec<Member>>,
    ) -> usize {
        let slow = self.send_others(from, msg, lagging);
        for m in &slow {
            let notice = notice(format_args!("{} left {room} (too slow)", m.name));
            self.announce(None, &notice);
            if let Some(bus) = bus {
                bus.presence(room, &m.name, false);
                bus.publish(room, &notice, false);
            }
        }
        slow.len()
    }
}

/// [`Hub::rename`]'s refusal: another member already has that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameTaken;

/// Every room, by name. A room exists while it has members.
#[derive(Debug)]
pub struct Hub {
    rooms: Mutex<HashMap<String, Room>>,
    /// Lines of history each room keeps for newcomers.
    history: usize,
    /// Rooms and members, for the server's metrics: updated under the
    /// lock, only when a room or its membership changes.
    gauges: Arc<ChatGauges>,
    /// Other instances, when rooms span several (`serve --bus`).
    bus: OnceLock<Arc<dyn Bus>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(super::DEFAULT_HISTORY)
    }
}

/// `* text\r\n`: server notices stand out from `name: text` lines.
pub(crate) fn notice(text: std::fmt::Arguments<'_>) -> Bytes {
    Bytes::from(format!("* {text}\r\n"))
}

impl Hub {
    /// No rooms yet; each room will replay its last `history` lines to
    /// whoever joins it (0: none).
    pub fn new(history: usize) -> Hub {
        Hub {
            rooms: Mutex::default(),
            history,
            gauges: Arc::default(),
            bus: OnceLock::new(),
        }
    }

    /// Connects this hub to other instances: from now on what happens in
    /// its rooms is published on `bus`. The first call wins.
    pub fn set_bus(&self, bus: Arc<dyn Bus>) {
        let _ = self.bus.set(bus);
    }

    /// The bus, if rooms span several instances.
    pub fn bus(&self) -> Option<&Arc<dyn Bus>> {
        self.bus.get()
    }

    fn bus_ref(&self) -> Option<&dyn Bus> {
        self.bus.get().map(|b| &**b)
    }

    /// Delivers `msg`, said in `room` on another instance, to every member
    /// here; returns how many were dropped as slow. A room with no members
    /// here ignores it.
    pub fn deliver(&self, room: &str, msg: &Bytes) -> usize {
        let bus = self.bus_ref();
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let Some(r) = rooms.get_mut(room) else {
            return 0;
        };
        let before = r.members.len();
        // Notices (`* ...`; no name starts with a space) are announced as
        // here; lines count against queues.
        let kicked = if msg.starts_with(b"* ") {
            r.announce(None, msg);
            0
        } else {
            r.broadcast(room, None, msg, bus, None)
        };
        let after = r.members.len();
        if after == 0 {
            rooms.remove(room);
        }
        if after != before {
            self.gauges
                .changed(rooms.len(), after as i64 - before as i64);
        }
        kicked
    }

    /// Queues `msg` to every member of every room here (the bus's own
    /// notices); a full queue skips it (the next line drops that member).
    pub fn tell_all(&self, msg: &Bytes) {
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        for m in rooms.values().flat_map(|r| r.members.iter()) {
            let _ = m.tx.try_send(msg.clone());
        }
    }

    /// Each room here with its members' names (what the bus refreshes).
    pub fn local_members(&self) -> Vec<(String, Vec<String>)> {
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms
            .iter()
            .map(|(room, r)| {
                (
                    room.clone(),
                    r.members.iter().map(|m| m.name.clone()).collect(),
                )
            })
            .collect()
    }

    /// Rooms and members right now, kept as they change (what a server's
    /// metrics report for chat: [`crate::metrics::Metrics::watch_chat`]).
    pub fn gauges(&self) -> &Arc<ChatGauges> {
        &self.gauges
    }

    fn with_room<T>(&self, room: &str, f: impl FnOnce(&mut Room) -> T) -> T {
        // A panic elsewhere while holding the lock leaves consistent data
        // (every mutation is a single push/retain), so poison is ignored.
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let rooms_before = rooms.len();
        // Looked up first: a line said in an existing room (the common
        // case) allocates no key.
        let run = |r: &mut Room| {
            let before = r.members.len();
            let out = f(r);
            (out, before, r.members.len())
        };
        let (out, before, after) = match rooms.get_mut(room) {
            Some(r) => run(r),
            None => run(rooms.entry(room.to_owned()).or_default()),
        };
        if after == 0 {
            rooms.remove(room);
        }
        // Most calls (a message said) change neither: no atomic then.
        if after != before || rooms.len() != rooms_before {
            // Member counts are far below i64::MAX.
            let delta = after as i64 - before as i64;
            self.gauges.changed(rooms.len(), delta);
        }
        out
    }

    /// Adds `member` to `room` and announces it; returns members dropped as
    /// slow. The newcomer is first sent the room's recent lines, under the
    /// same lock, so nothing said meanwhile can arrive before them.
    pub fn join(&self, room: &str, member: Member) -> usize {
        self.join_with(room, member, None)
    }

    /// [`Hub::join`], replaying `history` (from the bus) instead of the
    /// room's own when given.
    pub fn join_with(&self, room: &str, member: Member, history: Option<&[Bytes]>) -> usize {
        let msg = notice(format_args!("{} joined {room}", member.name));
        let bus = self.bus_ref();
        self.with_room(room, |r| {
            let replay: Vec<&Bytes> = match history {
                Some(lines) => lines.iter().collect(),
                None => r.history.iter().collect(),
            };
            if !replay.is_empty() {
                let n = replay.len();
                let lines = if n == 1 { "line" } else { "lines" };
                let header = notice(format_args!("last {n} {lines} in {room}:"));
                // A queue shorter than the history takes what fits.
                let _ = std::iter::once(&header)
                    .chain(replay)
                    .try_for_each(|line| member.tx.try_send(line.clone()));
            }
            let id = member.id;
            if let Some(bus) = bus {
                bus.presence(room, &member.name, true);
                bus.publish(room, &msg, false);
            }
            r.members.push(member);
            r.announce(Some(id), &msg);
            0
        })
    }

    /// Removes member `id` from `room`, announcing it; `None` if it was not
    /// there (e.g. already dropped as slow).
    pub fn leave(&self, room: &str, id: u64) -> Option<Member> {
        let bus = self.bus_ref();
        self.with_room(room, |r| {
            let at = r.members.iter().position(|m| m.id == id)?;
            let member = r.members.remove(at);
            let msg = notice(format_args!("{} left {room}", member.name));
            if let Some(bus) = bus {
                bus.presence(room, &member.name, false);
                bus.publish(room, &msg, false);
            }
            r.announce(None, &msg);
            Some(member)
        })
    }

    /// Queues `msg` to everyone in `room` but `from`; returns how many were
    /// dropped as too slow.
    pub fn say(&self, room: &str, from: u64, msg: &Bytes) -> usize {
        self.say_inner(room, from, msg, None)
    }

    /// [`Hub::say`], also returning the members it left more than half
    /// full (what [`Hub::lagging`] would return next), found in the same
    /// pass under the same lock: the sender paces against them.
    pub(crate) fn say_lagging(&self, room: &str, from: u64, msg: &Bytes) -> (usize, Vec<Member>) {
        let mut lagging = Vec::new();
        let kicked = self.say_inner(room, from, msg, Some(&mut lagging));
        (kicked, lagging)
    }

    fn say_inner(
        &self,
        room: &str,
        from: u64,
        msg: &Bytes,
        lagging: Option<&mut Vec<Member>>,
    ) -> usize {
        let keep = self.history;
        let bus = self.bus_ref();
        self.with_room(room, |r| {
            if keep > 0 {
                if r.history.len() == keep {
                    r.history.pop_front();
                }
                r.history.push_back(msg.clone());
            }
            // Published under the lock: every instance sees this room's
            // lines in the order they were delivered here.
            if let Some(bus) = bus {
                bus.publish(room, msg, true);
            }
            r.broadcast(room, Some(from), msg, bus, lagging)
        })
    }

    /// Renames member `id`, announcing it to the others; returns how many
    /// were dropped as too slow, or [`NameTaken`] if another member in any
    /// room already has `name` (compared ignoring ASCII case). The check and
    /// the rename happen under one lock, so two clients racing for a name
    /// cannot both get it.
    pub fn rename(&self, room: &str, id: u64, name: &str) -> Result<usize, NameTaken> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let taken = rooms
            .values()
            .flat_map(|r| r.members.iter())
            .any(|m| m.id != id && m.name.eq_ignore_ascii_case(name));
        if taken {
            return Err(NameTaken);
        }
        let Some(r) = rooms.get_mut(room) else {
            return Ok(0);
        };
        let Some(m) = r.members.iter_mut().find(|m| m.id == id) else {
            return Ok(0);
        };
        let msg = notice(format_args!("{} is now known as {name}", m.name));
        let bus = self.bus_ref();
        if let Some(bus) = bus {
            bus.presence(room, &m.name, false);
            bus.presence(room, name, true);
            bus.publish(room, &msg, false);
        }
        m.name = name.to_owned();
        r.announce(Some(id), &msg);
        Ok(0)
    }

    /// Members of `room` other than `from` whose queues are more than half
    /// full: the sender should wait for them to drain before its next line.
    pub fn lagging(&self, room: &str, from: u64) -> Vec<Member> {
        self.with_room(room, |r| {
            r.members
                .iter()
                .filter(|m| m.id != from && m.lags())
                .cloned()
                .collect()
        })
    }

    /// Removes member `id` from `room` as too slow, cancelling its `kick`
    /// token and telling the others; returns how many were dropped (the
    /// notice may find more).
    pub fn kick(&self, room: &str, id: u64) -> usize {
        let bus = self.bus_ref();
        self.with_room(room, |r| {
            let Some(at) = r.members.iter().position(|m| m.id == id) else {
                return 0;
            };
            let m = r.members.remove(at);
            m.kick.cancel();
            let msg = notice(format_args!("{} left {room} (too slow)", m.name));
            if let Some(bus) = bus {
                bus.presence(room, &m.name, false);
                bus.publish(room, &msg, false);
            }
            r.announce(None, &msg);
            1
        })
    }

    /// The names in `room`.
    pub fn who(&self, room: &str) -> Vec<String> {
        self.with_room(room, |r| r.members.iter().map(|m| m.name.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, queue: usize) -> (Member, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(queue);
        let m = Member {
            id,
            name: format!("user{id}"),
            tx,
            kick: CancellationToken::new(),
            last_write: Arc::new(LastWrite::new()),
        };
        (m, rx)
    }

    #[test]
    fn fan_out_skips_sender_and_drops_the_slow() {
        // No history: joiners' queues hold only what is said after them.
        let hub = Hub::new(0);
        let (a, mut a_rx) = member(1, 8);
        let (b, _b_rx) = member(2, 1);
        let b_kick = b.kick.clone();
        hub.join("lobby", a);
        hub.join("lobby", b); // a hears "user2 joined"
        assert_eq!(hub.say("lobby", 1, &Bytes::from_static(b"x\r\n")), 0);
        assert_eq!(hub.say("lobby", 1, &Bytes::from_static(b"y\r\n")), 1);
        assert!(b_kick.is_cancelled());
        assert_eq!(hub.who("lobby"), vec!["user1"]);
        assert_eq!(&a_rx.try_recv().unwrap()[..], b"* user2 joined lobby\r\n");
        assert_eq!(
            &a_rx.try_recv().unwrap()[..],
            b"* user2 left lobby (too slow)\r\n"
        );
        assert!(hub.leave("lobby", 2).is_none());
        let (c, _c_rx) = member(3, 4);
        let c_kick = c.kick.clone();
        hub.join("lobby", c); // a hears "user3 joined"
        assert!(hub.lagging("lobby", 1).is_empty());
        hub.say("lobby", 1, &Bytes::from_static(b"1\r\n"));
        hub.say("lobby", 1, &Bytes::from_static(b"2\r\n"));
        hub.say("lobby", 1, &Bytes::from_static(b"3\r\n"));
        let lagging: Vec<u64> = hub.lagging("lobby", 1).iter().map(|m| m.id).collect();
        assert_eq!(lagging, vec![3]);
        assert_eq!(hub.kick("lobby", 3), 1);
        assert!(c_kick.is_cancelled());
        assert_eq!(hub.gauges().get(), (1, 1), "user1 alone in lobby");
        assert!(hub.leave("lobby", 1).is_some());
        assert!(hub.rooms.lock().unwrap().is_empty());
        assert_eq!(hub.gauges().get(), (0, 0));
    }

    #[test]
    fn a_crowd_joining_at_once_drops_nobody() {
        // 1,000 members, none reading yet, queues of 256: the join
        // notices alone (~500,000) would overflow every early queue.
        let hub = Hub::new(0);
        let mut rxs = Vec::new();
        let mut kicked = 0;
        for id in 0..1000 {
            let (m, rx) = member(id, 256);
            kicked += hub.join("lobby", m);
            rxs.push(rx);
        }
        assert_eq!(kicked, 0);
        assert_eq!(hub.who("lobby").len(), 1000);
        // Every member then reads, and a line reaches all of them.
        for rx in &mut rxs {
            while rx.try_recv().is_ok() {}
        }
        assert_eq!(hub.say("lobby", 0, &Bytes::from_static(b"hi\r\n")), 0);
        assert!(rxs[1..].iter_mut().all(|rx| rx.try_recv().is_ok()));
    }

    #[test]
    fn newcomers_get_the_last_lines_and_the_room_forgets_when_empty() {
        let hub = Hub::new(2);
        let (a, _a_rx) = member(1, 8);
        hub.join("lobby", a);
        for text in ["one", "two", "three"] {
            hub.say("lobby", 1, &Bytes::from(format!("user1: {text}\r\n")));
        }
        let (b, mut b_rx) = member(2, 8);
        hub.join("lobby", b);
        let got: Vec<Bytes> = std::iter::from_fn(|| b_rx.try_recv().ok()).collect();
        assert_eq!(
            got,
            [
                &b"* last 2 lines in lobby:\r\n"[..],
                b"user1: two\r\n",
                b"user1: three\r\n"
            ]
        );
        hub.leave("lobby", 1);
        hub.leave("lobby", 2);
        let (c, mut c_rx) = member(3, 8);
        hub.join("lobby", c);
        assert!(c_rx.try_recv().is_err(), "an emptied room starts afresh");

        let quiet = Hub::new(0);
        let (d, _d_rx) = member(4, 8);
        quiet.join("lobby", d);
        quiet.say("lobby", 4, &Bytes::from_static(b"user4: hi\r\n"));
        let (e, mut e_rx) = member(5, 8);
        quiet.join("lobby", e);
        assert!(e_rx.try_recv().is_err(), "history 0 keeps nothing");
    }

    #[test]
    fn names_are_unique_across_rooms_ignoring_case() {
        let hub = Hub::default();
        let (a, _a_rx) = member(1, 8);
        let (b, _b_rx) = member(2, 8);
        hub.join("lobby", a);
        hub.join("attic", b);
        assert_eq!(hub.gauges().get(), (2, 2));
        assert_eq!(hub.rename("lobby", 1, "ana"), Ok(0));
        assert_eq!(hub.rename("attic", 2, "ANA"), Err(NameTaken));
        assert_eq!(hub.rename("lobby", 1, "Ana"), Ok(0), "own name, new case");
        assert_eq!(hub.who("lobby"), vec!["Ana"]);
        hub.leave("lobby", 1);
        assert_eq!(hub.rename("attic", 2, "ana"), Ok(0), "freed on leave");
    }
}
