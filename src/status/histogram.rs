//! A fixed-bucket histogram of durations, for the time requests wait for a
//! backend.
//!
//! The bounds are Prometheus' usual latency buckets widened to 10 s (the
//! longest sensible `timeout`), so the histogram costs 15 counters and an
//! observation is a binary search over 14 constants, with no allocation.
//!
//! Invariants:
//! - `counts` are per bucket, not cumulative; bucket `i < N_BUCKETS - 1`
//!   holds the observations `d` with `BOUND[i-1] < d <= BOUND[i]` (the
//!   Prometheus `le` rule), the last one those above 10 s.
//! - `count` is the sum of `counts`; `sum_micros` the sum of the observed
//!   durations in whole microseconds (saturating).

use std::time::Duration;

/// Buckets, the last one being +Inf.
pub const N_BUCKETS: usize = 15;

/// Upper bounds of the finite buckets, in microseconds.
pub const BUCKET_BOUNDS_MICROS: [u64; N_BUCKETS - 1] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// The bounds as Prometheus `le` label values, in seconds.
pub const BUCKET_LABELS: [&str; N_BUCKETS] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10", "+Inf",
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Non-cumulative count per bucket; the last bucket is +Inf.
    pub counts: [u64; N_BUCKETS],
    pub sum_micros: u64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        // Compare in nanoseconds so that 500.4 µs is above the 500 µs bound.
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_BOUNDS_MICROS.partition_point(|&b| b.saturating_mul(1000) < nanos);
        self.counts[bucket] = self.counts[bucket].saturating_add(1);
        self.count = self.count.saturating_add(1);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros = self.sum_micros.saturating_add(micros);
        debug_assert_eq!(self.count, self.counts.iter().sum::<u64>());
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a = a.saturating_add(b);
        }
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
        self.count = self.count.saturating_add(other.count);
    }

    /// Mean observation, or `None` when there is none.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_micros(self.sum_micros / self.count))
    }

    /// The upper bound (an index into `BUCKET_LABELS`) of the bucket that
    /// holds the `q`-quantile (0 < q <= 1), or `None` when empty: "99% of
    /// requests waited at most this long".
    pub fn quantile_bucket(&self, q: f64) -> Option<usize> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(n);
            if seen >= rank {
                return Some(i);
            }
        }
        Some(N_BUCKETS - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket_of(d: Duration) -> usize {
        let mut h = Histogram::default();
        h.observe(d);
        h.counts.iter().position(|&n| n == 1).unwrap()
    }

    #[test]
    fn a_duration_on_a_bound_falls_in_that_bound_and_just_above_in_the_next() {
        assert_eq!(bucket_of(Duration::ZERO), 0);
        assert_eq!(bucket_of(Duration::from_micros(500)), 0);
        assert_eq!(bucket_of(Duration::from_nanos(500_001)), 1);
        assert_eq!(bucket_of(Duration::from_millis(1)), 1);
        assert_eq!(bucket_of(Duration::from_micros(1001)), 2);
        assert_eq!(bucket_of(Duration::from_millis(1000)), 10);
        assert_eq!(bucket_of(Duration::from_secs(10)), 13);
        assert_eq!(bucket_of(Duration::from_nanos(10_000_000_001)), 14);
        assert_eq!(bucket_of(Duration::MAX), 14);
    }

    #[test]
    fn every_finite_bound_is_its_own_label() {
        for (i, &b) in BUCKET_BOUNDS_MICROS.iter().enumerate() {
            assert_eq!(bucket_of(Duration::from_micros(b)), i);
            let secs: f64 = BUCKET_LABELS[i].parse().unwrap();
            assert_eq!((secs * 1e6).round() as u64, b, "label {}", BUCKET_LABELS[i]);
        }
        assert_eq!(BUCKET_LABELS[N_BUCKETS - 1], "+Inf");
    }

    #[test]
    fn sum_and_count_follow_observations_and_merge_adds_them() {
        let mut a = Histogram::default();
        a.observe(Duration::from_micros(1500));
        a.observe(Duration::from_secs(2));
        assert_eq!((a.count, a.sum_micros), (2, 2_001_500));
        let mut b = Histogram::default();
        b.observe(Duration::from_micros(1500));
        b.observe(Duration::MAX);
        a.merge(&b);
        assert_eq!(a.count, 4);
        assert_eq!(a.counts[2], 2);
        assert_eq!(a.counts[11], 1);
        assert_eq!(a.counts[14], 1);
        assert_eq!(a.sum_micros, u64::MAX, "saturates instead of wrapping");
    }

    #[test]
    fn quantile_bucket_names_the_bound_that_covers_the_rank() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_bucket(0.99), None);
        for _ in 0..99 {
            h.observe(Duration::from_micros(100));
        }
        h.observe(Duration::from_secs(3));
        assert_eq!(h.quantile_bucket(0.5), Some(0));
        assert_eq!(h.quantile_bucket(0.99), Some(0));
        assert_eq!(h.quantile_bucket(1.0), Some(12));
        assert_eq!(h.mean(), Some(Duration::from_micros(30_099)));
    }
}
