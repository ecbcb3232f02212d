//! Which request each backend serves, decided without I/O.
//!
//! One `Dispatch` per worker holds, for every section, its idle backend
//! connections and its waiting requests, and makes every decision that pairs
//! them: a new request takes the backend idle the longest or waits; a freed
//! backend takes the request that has waited the longest or goes idle; a
//! request waits at most `timeout`; a request whose backend failed before
//! answering is tried again ahead of new ones, a bounded number of times.
//! Connections are named by the reactor's slab keys and time is whatever
//! clock the caller passes in, so `tests/simulation.rs` drives this very code
//! through seeded random schedules with an invented clock, and the reactor
//! (`reactor/exchange.rs`, `requests.rs`, `reload.rs`) only applies what it
//! answers.
//!
//! Invariants (checked with `debug_assert!` where cheap):
//! - a backend key is in one idle queue at most once, a client key in one
//!   wait queue at most once;
//! - a live section never has both an idle backend and a waiting request:
//!   whichever arrives second is paired at once;
//! - each class of a wait queue (retries, new requests) is ordered by the
//!   time its entries were queued, so the soonest deadline of a section is
//!   at the front of one of the two, and taking a request never passes over
//!   one of the same class that has waited longer;
//! - a request is never handed out at or after its deadline: `next_deadline`
//!   says when the caller must wake, and the caller calls `pop_expired` with
//!   each new `now` (and after a reload) before anything can free a backend;
//!   `backend_free` and `next_pairing` check that it did.
//!
//! Sections after the first `live` are *retired* (a reload removed them
//! while some of their backends were busy): they take no new requests, and
//! a backend freed there serves what still waits and is then closed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A request is handed to another backend at most this many times: one
/// that makes every backend fail (a poison request) then gets its 502
/// instead of closing backend connection after backend connection.
pub const MAX_REDEPLOYS: u8 = 3;

/// A waiting request: the client's key and when it joined the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    pub client: usize,
    pub since: Instant,
}

/// Which part of a wait queue a request is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Its backend failed before answering: it goes before new requests,
    /// since it already waited its turn.
    Retry,
    New,
}

/// One section's waiting requests: retries, then new requests, each in the
/// order they were queued.
#[derive(Debug, Default)]
pub struct WaitQueue {
    retries: VecDeque<Waiter>,
    new: VecDeque<Waiter>,
}

impl WaitQueue {
    pub fn len(&self) -> usize {
        self.retries.len() + self.new.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every waiting request with its class, in the order they are served.
    pub fn iter(&self) -> impl Iterator<Item = (Class, &Waiter)> {
        let retries = self.retries.iter().map(|w| (Class::Retry, w));
        retries.chain(self.new.iter().map(|w| (Class::New, w)))
    }

    fn push(&mut self, class: Class, w: Waiter) {
        let q = match class {
            Class::Retry => &mut self.retries,
            Class::New => &mut self.new,
        };
        debug_assert!(q.back().is_none_or(|last| last.since <= w.since));
        q.push_back(w);
    }

    fn pop_next(&mut self) -> Option<Waiter> {
        self.retries.pop_front().or_else(|| self.new.pop_front())
    }

    fn remove(&mut self, client: usize) -> bool {
        for q in [&mut self.retries, &mut self.new] {
            if let Some(i) = q.iter().position(|w| w.client == client) {
                q.remove(i);
                return true;
            }
        }
        false
    }

    /// When the request that has waited the longest began waiting.
    fn oldest(&self) -> Option<Instant> {
        let r = self.retries.front().map(|w| w.since);
        let n = self.new.front().map(|w| w.since);
        r.into_iter().chain(n).min()
    }

    /// Takes the request that has waited the longest if it has waited
    /// `timeout` by `now`.
    fn pop_expired(&mut self, now: Instant, timeout: Duration) -> Option<Waiter> {
        let r = self.retries.front().map(|w| w.since);
        let n = self.new.front().map(|w| w.since);
        let q = match (r, n) {
            (Some(r), Some(n)) if n < r => &mut self.new,
            (Some(_), _) => &mut self.retries,
            (None, Some(_)) => &mut self.new,
            (None, None) => return None,
        };
        match q.front() {
            Some(w) if w.since + timeout <= now => q.pop_front(),
            _ => None,
        }
    }

    /// Adds `other`'s requests, each class kept in order of queueing (on a
    /// tie, this queue's first).
    fn merge(&mut self, other: WaitQueue) {
        merge_sorted(&mut self.retries, other.retries);
        merge_sorted(&mut self.new, other.new);
    }
}

fn merge_sorted(into: &mut VecDeque<Waiter>, from: VecDeque<Waiter>) {
    if from.is_empty() {
        return;
    }
    let mine = std::mem::take(into);
    let (mut a, mut b) = (mine.into_iter().peekable(), from.into_iter().peekable());
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.since <= y.since,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_a { a.next() } else { b.next() };
        into.extend(next);
    }
}

#[derive(Debug, Default)]
struct Queues {
    idle: VecDeque<usize>,
    waiting: WaitQueue,
}

/// What became of a request handed to `request` or `retry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// It goes to this backend now.
    Paired(usize),
    /// It waits; `next_deadline` accounts for it.
    Queued,
}

/// What a freed backend does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freed {
    /// It serves this waiting client now.
    Paired(usize),
    /// It waits in its section's idle queue.
    Idle,
    /// Its section was retired and nothing waits there: close it.
    Close,
}

/// A request that waited `timeout` without a backend: answer 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    pub section: usize,
    pub client: usize,
    pub waited: Duration,
}

/// An idle backend and a waiting request of one section, paired after a
/// reload brought them together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pairing {
    pub section: usize,
    pub client: usize,
    pub backend: usize,
}

/// What a client gets when its backend fails mid-exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Response bytes already went out: the client must see a cut.
    Cut,
    /// Nothing was answered and the request was kept: try another backend.
    Retry,
    /// Answer 502.
    Fail,
}

/// The rule for a request whose backend failed: `started` if response
/// bytes reached the client, `retained` if the whole request is still held
/// (within `redeployment_sizelimit`), `redeploys` how often it was already
/// handed on.
pub fn after_failure(
    started: bool,
    redeployable: bool,
    retained: bool,
    redeploys: u8,
) -> AfterFailure {
    if started {
        AfterFailure::Cut
    } else if redeployable && retained && redeploys < MAX_REDEPLOYS {
        AfterFailure::Retry
    } else {
        AfterFailure::Fail
    }
}

/// The per-worker dispatch state: see the module documentation.
#[derive(Debug)]
pub struct Dispatch {
    sections: Vec<Queues>,
    /// How many of `sections` are the config's (the rest are retired).
    live: usize,
    timeout: Duration,
    /// Waiting requests in all sections (so `next_deadline` costs nothing
    /// while no request waits).
    waiting: usize,
}

impl Dispatch {
    /// `sections` live sections, none with a backend or a request yet;
    /// requests wait at most `timeout`.
    pub fn new(sections: usize, timeout: Duration) -> Dispatch {
        Dispatch {
            sections: (0..sections).map(|_| Queues::default()).collect(),
            live: sections,
            timeout,
            waiting: 0,
        }
    }

    /// The config's sections, then the retired ones.
    pub fn sections(&self) -> usize {
        self.sections.len()
    }

    pub fn live(&self) -> usize {
        self.live
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A new request for `section` (a live one).
    pub fn request(&mut self, section: usize, client: usize, now: Instant) -> Placed {
        debug_assert!(section < self.live, "a request routed to a retired section");
        self.place(section, client, now, Class::New)
    }

    /// A request whose backend failed before answering: it takes an idle
    /// backend, or waits ahead of every new request (a fresh `timeout`).
    pub fn retry(&mut self, section: usize, client: usize, now: Instant) -> Placed {
        self.place(section, client, now, Class::Retry)
    }

    fn place(&mut self, section: usize, client: usize, now: Instant, class: Class) -> Placed {
        let q = &mut self.sections[section];
        debug_assert!(!q.waiting.iter().any(|(_, w)| w.client == client));
        if let Some(b) = q.idle.pop_front() {
            debug_assert!(q.waiting.is_empty());
            return Placed::Paired(b);
        }
        q.waiting.push(class, Waiter { client, since: now });
        self.waiting += 1;
        Placed::Queued
    }

    /// `backend` (of `section`) is free: its handshake is done or its last
    /// response was read. `now`: the clock `pop_expired` was last called with.
    pub fn backend_free(&mut self, section: usize, backend: usize, now: Instant) -> Freed {
        let retired = section >= self.live;
        let q = &mut self.sections[section];
        debug_assert!(!q.idle.contains(&backend));
        if let Some(w) = q.waiting.pop_next() {
            debug_assert!(
                w.since + self.timeout > now,
                "an expired request handed out"
            );
            self.waiting -= 1;
            return Freed::Paired(w.client);
        }
        if retired {
            return Freed::Close;
        }
        q.idle.push_back(backend);
        Freed::Idle
    }

    /// An idle backend closed (or was closed); false if it was not idle in
    /// `section`.
    pub fn backend_gone(&mut self, section: usize, backend: usize) -> bool {
        let Some(q) = self.sections.get_mut(section) else {
            return false;
        };
        match q.idle.iter().position(|&b| b == backend) {
            Some(i) => {
                q.idle.remove(i);
                true
            }
            None => false,
        }
    }

    /// A waiting client left (closed, or answered otherwise); false if it
    /// was not waiting in `section`.
    pub fn client_gone(&mut self, section: usize, client: usize) -> bool {
        let removed = self
            .sections
            .get_mut(section)
            .is_some_and(|q| q.waiting.remove(client));
        if removed {
            self.waiting -= 1;
        }
        removed
    }

    /// When the soonest waiting request runs out of time; `None` while
    /// nothing waits.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.waiting == 0 {
            return None;
        }
        let oldest = self.sections.iter().filter_map(|q| q.waiting.oldest());
        oldest.min().map(|t| t + self.timeout)
    }

    /// Takes one request that has waited `timeout` by `now`, if any.
    pub fn pop_expired(&mut self, now: Instant) -> Option<Expired> {
        if self.waiting == 0 {
            return None;
        }
        for (section, q) in self.sections.iter_mut().enumerate() {
            if let Some(w) = q.waiting.pop_expired(now, self.timeout) {
                self.waiting -= 1;
                return Some(Expired {
                    section,
                    client: w.client,
                    waited: now.saturating_duration_since(w.since),
                });
            }
        }
        None
    }

    /// Waiting requests in all sections.
    pub fn waiting_total(&self) -> usize {
        self.waiting
    }

    pub fn waiting_count(&self, section: usize) -> usize {
        self.sections.get(section).map_or(0, |q| q.waiting.len())
    }

    /// The section's idle backends, the one idle the longest first.
    pub fn idle(&self, section: usize) -> impl Iterator<Item = usize> + '_ {
        self.sections
            .get(section)
            .into_iter()
            .flat_map(|q| q.idle.iter().copied())
    }

    /// The section's waiting requests, in the order they will be served.
    pub fn waiting(&self, section: usize) -> impl Iterator<Item = (Class, &Waiter)> {
        self.sections
            .get(section)
            .into_iter()
            .flat_map(|q| q.waiting.iter())
    }

    /// Applies a reload's moves (`reactor/reload.rs` decides them):
    /// - `live`: how many sections the new config has; `total`: those and
    ///   the retired ones after them;
    /// - `waiting_to[i]`: where old section `i`'s waiting requests go, for
    ///   each old section that has any (several old queues merge in order
    ///   of queueing);
    /// - `idle_to(b)`: the new section of idle backend `b`, or `None` if its
    ///   address is gone.
    ///
    /// Returns the idle backends to close, with their old section. Then
    /// call `pop_expired` (the new `timeout` may be lower) and pair what the
    /// moves brought together with `next_pairing`.
    pub fn reload(
        &mut self,
        live: usize,
        total: usize,
        waiting_to: &[usize],
        timeout: Duration,
        mut idle_to: impl FnMut(usize) -> Option<usize>,
    ) -> Vec<(usize, usize)> {
        let mut old: Vec<Queues> = std::mem::take(&mut self.sections);
        self.sections = (0..total).map(|_| Queues::default()).collect();
        self.live = live;
        self.timeout = timeout;
        let mut gone = Vec::new();
        for (i, q) in old.iter_mut().enumerate() {
            for b in q.idle.drain(..) {
                match idle_to(b) {
                    Some(j) if j < live => self.sections[j].idle.push_back(b),
                    _ => gone.push((b, i)),
                }
            }
        }
        for (i, q) in old.into_iter().enumerate() {
            if q.waiting.is_empty() {
                continue;
            }
            let to = waiting_to[i];
            debug_assert!(to < total, "waiting requests moved to no section");
            if let Some(into) = self.sections.get_mut(to) {
                into.waiting.merge(q.waiting);
            }
        }
        self.waiting = self.sections.iter().map(|q| q.waiting.len()).sum();
        gone
    }

    /// An idle backend and a waiting request of the same section, if a
    /// reload left any such pair. Call `pop_expired` first: a lowered
    /// `timeout` may have expired some.
    pub fn next_pairing(&mut self, now: Instant) -> Option<Pairing> {
        for (section, q) in self.sections.iter_mut().enumerate() {
            if q.idle.is_empty() || q.waiting.is_empty() {
                continue;
            }
            let (backend, w) = (q.idle.pop_front()?, q.waiting.pop_next()?);
            debug_assert!(
                w.since + self.timeout > now,
                "an expired request handed out"
            );
            self.waiting -= 1;
            return Some(Pairing {
                section,
                client: w.client,
                backend,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn the_backend_idle_longest_takes_the_oldest_request() {
        let t0 = Instant::now();
        let mut d = Dispatch::new(1, Duration::from_secs(1));
        assert_eq!(d.backend_free(0, 1, t0), Freed::Idle);
        assert_eq!(d.backend_free(0, 2, t0), Freed::Idle);
        assert_eq!(d.request(0, 10, t0), Placed::Paired(1));
        assert_eq!(d.request(0, 11, t0), Placed::Paired(2));
        assert_eq!(d.request(0, 12, at(t0, 1)), Placed::Queued);
        assert_eq!(d.request(0, 13, at(t0, 2)), Placed::Queued);
        assert_eq!(d.backend_free(0, 2, t0), Freed::Paired(12));
        assert_eq!(d.backend_free(0, 1, t0), Freed::Paired(13));
        assert_eq!(d.backend_free(0, 1, t0), Freed::Idle);
        assert!(d.backend_gone(0, 1));
        assert!(!d.backend_gone(0, 1));
    }

    #[test]
    fn retries_go_before_new_requests_and_keep_their_own_order() {
        let t0 = Instant::now();
        let mut d = Dispatch::new(1, Duration::from_secs(1));
        assert_eq!(d.request(0, 10, t0), Placed::Queued);
        assert_eq!(d.retry(0, 20, at(t0, 5)), Placed::Queued);
        assert_eq!(d.retry(0, 21, at(t0, 6)), Placed::Queued);
        assert_eq!(d.backend_free(0, 1, t0), Freed::Paired(20));
        assert_eq!(d.backend_free(0, 1, t0), Freed::Paired(21));
        assert_eq!(d.backend_free(0, 1, t0), Freed::Paired(10));
    }

    #[test]
    fn a_request_expires_exactly_timeout_after_it_began_waiting() {
        let t0 = Instant::now();
        let mut d = Dispatch::new(2, Duration::from_millis(100));
        assert_eq!(d.next_deadline(), None);
        d.request(1, 10, at(t0, 0));
        d.request(0, 11, at(t0, 30));
        // A retry queued later ahead of 10 does not hide 10's deadline.
        d.retry(1, 12, at(t0, 50));
        assert_eq!(d.next_deadline(), Some(at(t0, 100)));
        assert_eq!(d.pop_expired(at(t0, 99)), None);
        let e = d.pop_expired(at(t0, 100)).unwrap();
        assert_eq!(
            (e.section, e.client, e.waited),
            (1, 10, Duration::from_millis(100))
        );
        assert_eq!(d.next_deadline(), Some(at(t0, 130)));
        assert!(d.client_gone(0, 11));
        assert_eq!(d.next_deadline(), Some(at(t0, 150)));
        assert_eq!(d.pop_expired(at(t0, 150)).map(|e| e.client), Some(12));
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn a_reload_merges_queues_in_order_and_pairs_what_it_brings_together() {
        let t0 = Instant::now();
        let mut d = Dispatch::new(3, Duration::from_secs(1));
        d.request(0, 10, at(t0, 1));
        d.request(0, 11, at(t0, 4));
        d.request(1, 20, at(t0, 2));
        d.request(1, 21, at(t0, 3));
        d.backend_free(2, 30, t0);
        d.backend_free(2, 31, t0);
        // Old sections 0 and 1 merge into new 0; old 2's backends: 30 to
        // new 0, 31 gone.
        let gone = d.reload(1, 1, &[0, 0, 0], Duration::from_secs(2), |b| {
            (b == 30).then_some(0)
        });
        assert_eq!(gone, vec![(31, 2)]);
        let order: Vec<usize> = d.waiting(0).map(|(_, w)| w.client).collect();
        assert_eq!(order, [10, 20, 21, 11]);
        let p = d.next_pairing(t0).unwrap();
        assert_eq!((p.section, p.client, p.backend), (0, 10, 30));
        assert_eq!(d.next_pairing(t0), None);
        assert_eq!(d.timeout(), Duration::from_secs(2));
    }

    #[test]
    fn a_retired_section_serves_what_waits_then_closes_its_backends() {
        let t0 = Instant::now();
        let mut d = Dispatch::new(1, Duration::from_secs(1));
        d.request(0, 10, t0);
        // Section 0 is removed; its queue is kept as retired section 1.
        d.reload(1, 2, &[1], Duration::from_secs(1), |_| None);
        assert_eq!(d.live(), 1);
        assert_eq!(d.backend_free(1, 7, t0), Freed::Paired(10));
        assert_eq!(d.backend_free(1, 7, t0), Freed::Close);
    }

    #[test]
    fn a_request_is_tried_again_a_bounded_number_of_times() {
        use AfterFailure::*;
        assert_eq!(after_failure(true, true, true, 0), Cut);
        assert_eq!(after_failure(false, true, true, 0), Retry);
        assert_eq!(after_failure(false, true, true, MAX_REDEPLOYS - 1), Retry);
        assert_eq!(after_failure(false, true, true, MAX_REDEPLOYS), Fail);
        assert_eq!(after_failure(false, false, true, 0), Fail);
        assert_eq!(after_failure(false, true, false, 0), Fail);
    }
}
