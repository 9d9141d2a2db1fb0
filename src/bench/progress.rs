//! Progress while a run goes on: [`Tick`]s handed to [`run`](super::run)'s
//! callback about 5 times a second, each saying which phase the run is in
//! (warm-up, not counted, or the measured window) and the current rate.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::{Mode, worker};

/// A progress snapshot, passed to [`run`](super::run)'s callback about 5
/// times a second.
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    /// Time since the load started (warm-up included).
    pub elapsed: Duration,
    /// Load before the window, not counted.
    pub warmup: Duration,
    /// Warm-up plus measured window.
    pub total: Duration,
    /// Messages counted so far in the window.
    pub messages: u64,
    /// Messages per second over the last tick (0 during the warm-up, whose
    /// messages are not counted).
    pub msgs_per_s: f64,
}

impl Tick {
    /// Whether the run is still warming up: load runs, nothing is counted.
    pub fn in_warmup(&self) -> bool {
        self.elapsed < self.warmup
    }

    /// One line for a progress bar: the warm-up and how long it has left,
    /// then the rate in the mode's unit.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tcpkit::bench::{Mode, Tick};
    /// let mut tick = Tick {
    ///     elapsed: Duration::from_millis(400),
    ///     warmup: Duration::from_secs(1),
    ///     total: Duration::from_secs(11),
    ///     messages: 0,
    ///     msgs_per_s: 0.0,
    /// };
    /// assert_eq!(tick.status(Mode::Echo), "warm-up, 0.6 s left (not counted)");
    /// tick.elapsed = Duration::from_secs(2);
    /// tick.msgs_per_s = 123_456.7;
    /// assert_eq!(tick.status(Mode::Connect), "123,457 conns/s");
    /// ```
    pub fn status(&self, mode: Mode) -> String {
        if self.in_warmup() {
            let left = self.warmup.saturating_sub(self.elapsed);
            format!("warm-up, {:.1} s left (not counted)", left.as_secs_f64())
        } else {
            format!(
                "{} {}/s",
                super::report::thousands(self.msgs_per_s),
                mode.unit()
            )
        }
    }
}

/// Sleeps towards a deadline in short steps, reporting progress.
pub(super) struct Ticker<'a> {
    start: Instant,
    warmup: Duration,
    total: Duration,
    live: &'a worker::Live,
    last: (Instant, u64),
}

impl<'a> Ticker<'a> {
    const STEP: Duration = Duration::from_millis(200);

    pub(super) fn new(
        start: Instant,
        warmup: Duration,
        duration: Duration,
        live: &'a worker::Live,
    ) -> Ticker<'a> {
        Ticker {
            start,
            warmup,
            total: warmup + duration,
            live,
            last: (start, 0),
        }
    }

    pub(super) fn wait_until(&mut self, deadline: Instant, on_tick: &mut impl FnMut(Tick)) {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            std::thread::sleep((deadline - now).min(Self::STEP));
            let now = Instant::now();
            let messages = self.live.messages.load(Relaxed);
            // The first tick of the window divides by the time since the
            // window opened, not since a tick in the warm-up.
            let since = self.last.0.max(self.start + self.warmup).min(now);
            let dt = now.duration_since(since).as_secs_f64().max(1e-9);
            on_tick(Tick {
                elapsed: now.duration_since(self.start),
                warmup: self.warmup,
                total: self.total,
                messages,
                msgs_per_s: messages.saturating_sub(self.last.1) as f64 / dt,
            });
            self.last = (now, messages);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(elapsed_ms: u64, msgs_per_s: f64) -> Tick {
        Tick {
            elapsed: Duration::from_millis(elapsed_ms),
            warmup: Duration::from_secs(1),
            total: Duration::from_secs(11),
            messages: 0,
            msgs_per_s,
        }
    }

    #[test]
    fn the_warm_up_says_it_is_warm_up_not_zero_messages() {
        let status = tick(0, 0.0).status(Mode::Echo);
        assert_eq!(status, "warm-up, 1.0 s left (not counted)");
        let status = tick(999, 0.0).status(Mode::Echo);
        assert!(status.starts_with("warm-up"), "{status}");
        assert!(!status.contains("msgs/s"), "{status}");
    }

    #[test]
    fn the_window_shows_the_rate_in_the_modes_unit() {
        assert_eq!(tick(1000, 0.0).status(Mode::Echo), "0 msgs/s");
        assert_eq!(tick(5000, 1234.4).status(Mode::Echo), "1,234 msgs/s");
        assert_eq!(tick(5000, 20.0).status(Mode::Connect), "20 conns/s");
        assert_eq!(tick(5000, 9.0).status(Mode::Throughput), "9 writes/s");
    }

    #[test]
    fn without_warm_up_the_first_tick_is_the_window() {
        let mut t = tick(0, 5.0);
        t.warmup = Duration::ZERO;
        assert!(!t.in_warmup());
        assert_eq!(t.status(Mode::Echo), "5 msgs/s");
    }
}
