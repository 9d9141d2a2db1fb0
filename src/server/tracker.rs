//! The set of running connection tasks: what the drain waits for and, at the
//! end of the grace period, aborts.
//!
//! Replaces a `JoinSet`, whose per-task entry is a separate 64-byte
//! allocation (an `Arc`'d list node) and whose finished tasks the accept loop
//! had to reap. Here a connection costs one slot in a vector (an
//! `AbortHandle`, no allocation of its own), and a finished task frees its
//! slot itself, from the `Drop` of its [`Slot`] (so aborted tasks do too).

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// One slot's state.
enum Entry {
    Free,
    /// Reserved; the task is being spawned and its handle not stored yet.
    Starting,
    Running(AbortHandle),
    /// Finished before its handle was stored: the spawner frees the slot.
    Finished,
}

#[derive(Default)]
struct Slots {
    entries: Vec<Entry>,
    free: Vec<usize>,
    live: usize,
}

/// Running connection tasks.
#[derive(Default)]
pub(crate) struct Tracker {
    slots: Mutex<Slots>,
    idle: Notify,
}

/// Held by a connection task for its lifetime; dropping it (the task
/// finished or was aborted) frees the slot.
pub(crate) struct Slot {
    tracker: Arc<Tracker>,
    index: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.tracker.release(self.index);
    }
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        // A panic while holding this lock leaves the slots consistent (every
        // change is a single assignment), so a poisoned lock is still usable.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns the future `make` builds around its [`Slot`].
    ///
    /// The lock is not held across `tokio::spawn`: a runtime that is shutting
    /// down drops the future inside `spawn`, and its `Slot` then locks too.
    pub(crate) fn spawn<F>(self: &Arc<Self>, make: impl FnOnce(Slot) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let index = {
            let mut s = self.lock();
            s.live += 1;
            match s.free.pop() {
                Some(i) => {
                    s.entries[i] = Entry::Starting;
                    i
                }
                None => {
                    s.entries.push(Entry::Starting);
                    s.entries.len() - 1
                }
            }
        };
        let task = tokio::spawn(make(Slot {
            tracker: self.clone(),
            index,
        }));
        let mut s = self.lock();
        match s.entries[index] {
            Entry::Starting => s.entries[index] = Entry::Running(task.abort_handle()),
            // Already done (another worker ran it, or the runtime dropped it).
            _ => {
                s.entries[index] = Entry::Free;
                s.free.push(index);
            }
        }
    }

    fn release(&self, index: usize) {
        let now_idle = {
            let mut s = self.lock();
            match s.entries[index] {
                Entry::Starting => s.entries[index] = Entry::Finished,
                _ => {
                    s.entries[index] = Entry::Free;
                    s.free.push(index);
                }
            }
            s.live -= 1;
            s.live == 0
        };
        if now_idle {
            self.idle.notify_waiters();
        }
    }

    /// Tasks running now.
    pub(crate) fn len(&self) -> usize {
        self.lock().live
    }

    /// Waits until no task is running.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before checking, so a release in between is seen.
            notified.as_mut().enable();
            if self.len() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Aborts every running task; returns how many. Each frees its slot
    /// when the runtime drops it, which [`Tracker::wait_idle`] waits for.
    pub(crate) fn abort_all(&self) -> usize {
        let s = self.lock();
        let mut n = 0;
        for e in &s.entries {
            if let Entry::Running(h) = e {
                h.abort();
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn tracks_finishes_and_aborts() {
        let t = Arc::new(Tracker::default());
        t.spawn(|slot| async move {
            drop(slot);
        });
        t.spawn(|slot| async move {
            let _slot = slot;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        assert_eq!(t.len(), 2);
        tokio::task::yield_now().await;
        assert_eq!(t.len(), 1);
        assert_eq!(t.abort_all(), 1);
        tokio::time::timeout(Duration::from_secs(5), t.wait_idle())
            .await
            .expect("aborted task released its slot");
        // Slots are reused.
        t.spawn(|slot| async move { drop(slot) });
        assert_eq!(t.lock().entries.len(), 2);
        t.wait_idle().await;
    }
}
