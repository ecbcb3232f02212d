//! How long the proxy waits for a request body: `min_body_rate` after
//! `min_body_rate_grace`, and `body_timeout` in all (docs/request-framing.md).
//!
//! Sans-I/O, with the clock as an input, like `dispatch`. Only the time the
//! proxy spends waiting *on the client* counts: while what the client sent
//! is still queued for a slow backend, the client is not to blame, and the
//! clock stops.
//!
//! The rule: with `waited` the time spent waiting on the client and
//! `received` the body bytes it sent, the client is too slow once
//! `waited >= min(body_timeout, grace + received / min_rate)`. That moment
//! is a single deadline, which only moves later as bytes arrive, so one
//! timer watches it.

use std::time::{Duration, Instant};

/// The operator's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaceRule {
    /// Bytes per second; 0: no rate, only `timeout`.
    pub min_rate: u64,
    pub grace: Duration,
    pub timeout: Duration,
}

impl PaceRule {
    /// How long the client may have been waited on, having sent `received`.
    fn allowed(&self, received: u64) -> Duration {
        if self.min_rate == 0 {
            return self.timeout;
        }
        let secs = received / self.min_rate;
        let rest = received % self.min_rate;
        let earned = Duration::from_secs(secs)
            + Duration::from_nanos(rest.saturating_mul(1_000_000_000) / self.min_rate);
        self.timeout.min(self.grace.saturating_add(earned))
    }
}

/// One request body's progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BodyPace {
    /// Waiting on the client since then (None: paused, or not started).
    since: Option<Instant>,
    /// Time waited on the client before `since`.
    waited: Duration,
    received: u64,
}

impl BodyPace {
    /// The client sent `n` more body bytes.
    pub fn received(&mut self, n: u64) {
        self.received = self.received.saturating_add(n);
    }

    /// The proxy waits on the client from `now` (no-op if it already does).
    pub fn resume(&mut self, now: Instant) {
        if self.since.is_none() {
            self.since = Some(now);
        }
    }

    /// The proxy waits on something else (a slow backend) from `now`.
    pub fn pause(&mut self, now: Instant) {
        if let Some(since) = self.since.take() {
            self.waited += now.saturating_duration_since(since);
        }
    }

    pub fn is_waiting(&self) -> bool {
        self.since.is_some()
    }

    /// When the client becomes too slow, if the proxy is waiting on it.
    pub fn deadline(&self, rule: &PaceRule) -> Option<Instant> {
        let since = self.since?;
        let left = rule.allowed(self.received).saturating_sub(self.waited);
        Some(since + left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: PaceRule = PaceRule {
        min_rate: 100,
        grace: Duration::from_secs(5),
        timeout: Duration::from_secs(60),
    };

    #[test]
    fn the_grace_period_comes_first_then_each_byte_earns_time() {
        let t0 = Instant::now();
        let mut p = BodyPace::default();
        assert_eq!(p.deadline(&RULE), None, "not waiting yet");
        p.resume(t0);
        assert_eq!(p.deadline(&RULE), Some(t0 + Duration::from_secs(5)));
        p.received(250);
        assert_eq!(p.deadline(&RULE), Some(t0 + Duration::from_millis(7500)));
    }

    #[test]
    fn time_spent_waiting_on_a_backend_does_not_count() {
        let t0 = Instant::now();
        let mut p = BodyPace::default();
        p.resume(t0);
        p.pause(t0 + Duration::from_secs(3));
        assert!(!p.is_waiting());
        assert_eq!(p.deadline(&RULE), None);
        // 100 s later, waiting on the client again: 2 s of grace are left.
        let t1 = t0 + Duration::from_secs(103);
        p.resume(t1);
        assert_eq!(p.deadline(&RULE), Some(t1 + Duration::from_secs(2)));
        // Resuming twice keeps the first start.
        p.resume(t1 + Duration::from_secs(1));
        assert_eq!(p.deadline(&RULE), Some(t1 + Duration::from_secs(2)));
    }

    #[test]
    fn body_timeout_caps_even_a_fast_body() {
        let t0 = Instant::now();
        let mut p = BodyPace::default();
        p.resume(t0);
        p.received(1 << 40);
        assert_eq!(p.deadline(&RULE), Some(t0 + Duration::from_secs(60)));
        let no_rate = PaceRule {
            min_rate: 0,
            ..RULE
        };
        let mut q = BodyPace::default();
        q.resume(t0);
        assert_eq!(q.deadline(&no_rate), Some(t0 + Duration::from_secs(60)));
    }

    #[test]
    fn a_deadline_already_past_is_returned_as_is() {
        let t0 = Instant::now();
        let mut p = BodyPace::default();
        p.resume(t0);
        p.pause(t0 + Duration::from_secs(9));
        p.resume(t0 + Duration::from_secs(10));
        assert_eq!(p.deadline(&RULE), Some(t0 + Duration::from_secs(10)));
    }
}
