//! Sharing backend connections among workers.
//!
//! Client connections are spread by the kernel: each worker has its own
//! client listeners bound with SO_REUSEPORT. Backend connections must not
//! be: a worker whose clients arrive but whose pool is empty would answer
//! 503 while another worker's backends sit idle, and the kernel's hash
//! cannot know. So each `outgoing` address has ONE backend listener, and
//! every worker registers a duplicate of it in its own epoll; every new
//! backend connection wakes them all, and the worker with the fewest
//! connections from that listener takes it. A backend connection then belongs to the
//! worker that accepted it, for its whole life.
//!
//! The counts live in `BackendShare`, one per backend listener (`outgoing`
//! address), held by every worker's copy of that listener: an atomic count
//! per worker. A `BackendSlot` is held by each accepted backend connection,
//! counted from the accept (handshake included, so a burst is spread while
//! it is still handshaking) until the connection is dropped. Counting per
//! address rather than per section keeps the counts valid across a reload
//! that renumbers, merges or splits sections: an address that stays keeps
//! its listener, its share and its connections.
//!
//! The rule. A worker may accept on a backend listener while its count is no
//! larger than every other worker's (`may_accept`; ties: anyone may, and an
//! `EAGAIN` after losing the race is normal). In `listener.rs`, a worker
//! woken for a backend listener:
//! 1. accepts while it may, until `EAGAIN`;
//! 2. if it stopped because it may no longer accept, after having accepted
//!    at least one connection, the backlog may still hold more: it wakes the
//!    worker with the fewest (`hand_off`);
//! 3. if it may not accept in the first place, it does nothing (no spin).
//!
//! And whenever a worker's count drops (a backend connection closes), that
//! worker wakes itself and looks at its backend listeners again.
//!
//! Why no connection is stranded, although epoll is edge-triggered and a
//! declining worker consumes its edge: the invariant is "while the backlog
//! holds a connection, some worker that may accept has a wake-up coming (an
//! edge or a `Waker`) or is accepting". A new connection wakes every worker,
//! those that may accept included. A worker that may accept keeps that
//! right until its own count rises (it is the one accepting: rule 1 or 2
//! passes the turn on) or other workers' counts drop below it (every worker
//! whose count drops wakes itself after the drop, so the workers that now
//! have the fewest all have a wake-up coming). Counts never rise without an
//! accept. Each hand-off follows an accept, and each self-wake a close, so
//! waking is bounded by connections, never a loop.
//!
//! With one worker there is no `BackendShare` at all and accepting is as
//! before. Separately started processes sharing an `outgoing` port with
//! `reuseport: true` are outside this: there the kernel's hash spreads
//! backend connections, and each process needs its own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use log::{debug, warn};
use mio::Waker;

/// Every worker's count of live backend connections accepted on one
/// backend listener, and a way to wake each worker.
pub(super) struct BackendShare {
    /// `counts[w]`: worker `w`'s connections from this listener.
    counts: Box<[AtomicUsize]>,
    /// `wakers[w]` makes worker `w` retry its backend listeners.
    wakers: Arc<[Waker]>,
}

impl BackendShare {
    /// `wakers[w]` must be registered with worker `w`'s poll under
    /// `WAKE_TOKEN`.
    pub(super) fn new(wakers: Arc<[Waker]>) -> BackendShare {
        BackendShare {
            counts: (0..wakers.len()).map(|_| AtomicUsize::new(0)).collect(),
            wakers,
        }
    }

    /// May `worker` accept a backend connection on this listener now: does
    /// it have no more of them than any other worker?
    pub(super) fn may_accept(&self, worker: usize) -> bool {
        let mine = self.counts[worker].load(Ordering::SeqCst);
        self.counts
            .iter()
            .enumerate()
            .all(|(w, n)| w == worker || mine <= n.load(Ordering::SeqCst))
    }

    /// `worker` accepted and now has more than another worker: wakes the
    /// one with the fewest, which takes over the backlog.
    pub(super) fn hand_off(&self, worker: usize) {
        let fewest = self
            .counts
            .iter()
            .enumerate()
            .filter(|&(w, _)| w != worker)
            .min_by_key(|(_, n)| n.load(Ordering::SeqCst))
            .map(|(w, _)| w);
        if let Some(w) = fewest {
            self.wake(w);
        }
    }

    fn wake(&self, worker: usize) {
        if let Err(e) = self.wakers[worker].wake() {
            warn!("could not wake worker {worker} to accept backend connections: {e}");
        }
    }

    #[cfg(test)]
    fn count(&self, worker: usize) -> usize {
        self.counts[worker].load(Ordering::SeqCst)
    }
}

/// One live backend connection in a worker's count; dropping it (when the
/// connection leaves the slab) gives the count back.
pub(super) struct BackendSlot {
    share: Arc<BackendShare>,
    worker: usize,
}

impl BackendSlot {
    pub(super) fn new(share: &Arc<BackendShare>, worker: usize) -> BackendSlot {
        share.counts[worker].fetch_add(1, Ordering::SeqCst);
        BackendSlot {
            share: share.clone(),
            worker,
        }
    }
}

impl Drop for BackendSlot {
    fn drop(&mut self) {
        let before = self.share.counts[self.worker].fetch_sub(1, Ordering::SeqCst);
        debug_assert!(before > 0, "backend count below zero");
        debug!(
            "a backend connection closed; {} left on this worker for its address",
            before.saturating_sub(1)
        );
        // This worker may now be the one with the fewest, while the others
        // decline a connection already in the backlog: look again.
        self.share.wake(self.worker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Poll, Token};

    fn wakers(workers: usize) -> (Vec<Poll>, Arc<[Waker]>) {
        let polls: Vec<Poll> = (0..workers).map(|_| Poll::new().unwrap()).collect();
        let wakers = polls
            .iter()
            .map(|p| Waker::new(p.registry(), Token(0)).unwrap())
            .collect();
        (polls, wakers)
    }

    fn woken(poll: &mut Poll) -> bool {
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(std::time::Duration::ZERO))
            .unwrap();
        !events.is_empty()
    }

    #[test]
    fn the_worker_with_fewest_accepts_and_ties_let_anyone() {
        let (_polls, w) = wakers(3);
        let s = Arc::new(BackendShare::new(w.clone()));
        let other = Arc::new(BackendShare::new(w));
        assert!((0..3).all(|w| s.may_accept(w)));
        let a = BackendSlot::new(&s, 0);
        assert!(!s.may_accept(0) && s.may_accept(1) && s.may_accept(2));
        // Listeners are counted apart.
        assert!(other.may_accept(0));
        let b = BackendSlot::new(&s, 1);
        assert!(!s.may_accept(1) && s.may_accept(2));
        let _c = BackendSlot::new(&s, 2);
        assert!((0..3).all(|w| s.may_accept(w)));
        drop(a);
        drop(b);
        assert_eq!((s.count(0), s.count(1), s.count(2)), (0, 0, 1));
        assert!(s.may_accept(0) && s.may_accept(1) && !s.may_accept(2));
    }

    #[test]
    fn a_hand_off_wakes_the_worker_with_fewest_and_a_close_wakes_its_own() {
        let (mut polls, w) = wakers(3);
        let s = Arc::new(BackendShare::new(w));
        let _a = BackendSlot::new(&s, 0);
        let _b = BackendSlot::new(&s, 0);
        let c = BackendSlot::new(&s, 1);
        s.hand_off(0);
        assert!(!woken(&mut polls[0]) && !woken(&mut polls[1]) && woken(&mut polls[2]));
        drop(c);
        assert!(!woken(&mut polls[0]) && woken(&mut polls[1]) && !woken(&mut polls[2]));
    }
}
