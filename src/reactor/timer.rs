//! Connection deadlines.
//!
//! Each connection has at most one deadline that matters (the timeout of the
//! state it is in). Moving a deadline later is free: the heap entry fires at
//! the old time and is re-armed for the new one. Only an earlier deadline
//! pushes a new entry. So the heap holds about one entry per connection, and
//! a busy keep-alive connection costs no heap traffic per request.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Per-connection timer state.
#[derive(Debug, Default, Clone, Copy)]
pub struct TimerSlot {
    pub deadline: Option<Instant>,
    armed_at: Option<Instant>,
}

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
}

impl Timers {
    /// Sets the slot's deadline; `key`/`gen` identify the connection.
    pub fn set(&mut self, slot: &mut TimerSlot, key: usize, gen: u64, at: Instant) {
        slot.deadline = Some(at);
        if slot.armed_at.is_none_or(|armed| at < armed) {
            self.heap.push(Reverse((at, key, gen)));
            slot.armed_at = Some(at);
        }
    }

    pub fn next_wake(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Pops one heap entry due at `now`: (key, gen, armed time).
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, u64, Instant)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => {
                let Reverse((at, key, gen)) = self.heap.pop()?;
                Some((key, gen, at))
            }
            _ => None,
        }
    }

    /// Called with a popped entry for the connection it names. Returns true
    /// when the connection's deadline has really passed (and clears it).
    pub fn check(
        &mut self,
        slot: &mut TimerSlot,
        key: usize,
        gen: u64,
        armed: Instant,
        now: Instant,
    ) -> bool {
        if slot.armed_at != Some(armed) {
            return false; // superseded by an earlier entry
        }
        slot.armed_at = None;
        match slot.deadline {
            Some(d) if d <= now => {
                slot.deadline = None;
                true
            }
            Some(d) => {
                self.set(slot, key, gen, d);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fire_all(t: &mut Timers, slot: &mut TimerSlot, now: Instant) -> usize {
        let mut fired = 0;
        while let Some((k, g, at)) = t.pop_due(now) {
            if t.check(slot, k, g, at, now) {
                fired += 1;
            }
        }
        fired
    }

    #[test]
    fn a_later_deadline_rearms_and_an_earlier_one_wins() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut t = Timers::default();
        let mut slot = TimerSlot::default();
        t.set(&mut slot, 1, 7, t0 + 2 * s);
        t.set(&mut slot, 1, 7, t0 + 5 * s); // later: no new entry
        assert_eq!(t.heap.len(), 1);
        assert_eq!(fire_all(&mut t, &mut slot, t0 + 3 * s), 0);
        assert_eq!(t.next_wake(), Some(t0 + 5 * s));
        t.set(&mut slot, 1, 7, t0 + 4 * s); // earlier: new entry
        assert_eq!(fire_all(&mut t, &mut slot, t0 + 4 * s), 1);
        assert_eq!(fire_all(&mut t, &mut slot, t0 + 9 * s), 0);
    }

    #[test]
    fn a_cleared_deadline_never_fires() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let mut slot = TimerSlot::default();
        t.set(&mut slot, 1, 1, t0);
        slot.deadline = None;
        assert_eq!(fire_all(&mut t, &mut slot, t0), 0);
    }
}
