//! The status endpoint's content: a point-in-time `Snapshot` of the proxy's
//! counters and connections, and two renderings of it — Prometheus text
//! (`prometheus.rs`) for scrapers and a small HTML page (`html.rs`) for a
//! person during an incident. `negotiate.rs` picks between them.
//!
//! This module does no I/O and keeps no state: the reactor fills a
//! `Snapshot` from its own counters (one per worker), `Snapshot::merge`
//! folds the workers' snapshots into one, and a renderer appends bytes to a
//! buffer. So every output here is a pure function of a `Snapshot`, which the
//! unit tests build by hand.
//!
//! Invariants:
//! - `merge` is a sum for every counter, gauge of open things and histogram,
//!   and leaves process-wide facts (version, start time, workers, reloads)
//!   as they are in `self`; sections are matched by `name`, so merging the
//!   same workers in another order gives the same numbers.
//! - Renderers never panic on any `Snapshot` (hostile host names and backend
//!   ids included) and escape every dynamic string for their format.

mod histogram;
mod html;
mod negotiate;
mod prometheus;

pub use histogram::{Histogram, BUCKET_BOUNDS_MICROS, BUCKET_LABELS, N_BUCKETS};
pub use html::{render_html, HTML_CONTENT_TYPE};
pub use negotiate::wants_html;
pub use prometheus::{render_prometheus, PROMETHEUS_CONTENT_TYPE};

/// Everything the status endpoint shows, as of `now_unix`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// `env!("CARGO_PKG_VERSION")`, filled by the caller.
    pub version: &'static str,
    /// Process start, Unix seconds.
    pub started_unix: u64,
    pub now_unix: u64,
    pub workers: usize,
    /// Successful configuration reloads (SIGHUP).
    pub reloads: u64,
    pub reload_failures: u64,
    /// Client connections open now.
    pub client_connections: u64,
    /// Backend connections open now, in any state.
    pub backend_connections: u64,
    /// Bytes read from clients (all sections and unrouted).
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Responses given before any section was chosen: 400s, 404 for a host
    /// no section serves, the health check, the status page itself.
    pub unrouted: StatusClasses,
    pub sections: Vec<SectionSnapshot>,
}

/// Response counts by status class: index 0 is 1xx, …, 4 is 5xx.
#[derive(Default, Clone, Copy, Debug, PartialEq)]
pub struct StatusClasses(pub [u64; 5]);

/// One section (site), as seen by one worker or, after `merge`, by all.
#[derive(Debug, Clone, Default)]
pub struct SectionSnapshot {
    /// The first incoming host name; the key `merge` matches on.
    pub name: String,
    pub hosts: Vec<String>,
    /// Addresses where this section's backends connect.
    pub outgoing: Vec<String>,
    /// Requests waiting for a backend now.
    pub queue_depth: u64,
    pub idle_backends: u64,
    pub busy_backends: u64,
    pub handshaking_backends: u64,
    pub counters: SectionCounters,
    pub backends: Vec<BackendSnapshot>,
}

/// A section's counters since the process started, as one worker keeps
/// them (`Section::stats` in the reactor) and as a snapshot shows them.
#[derive(Debug, Clone, Default)]
pub struct SectionCounters {
    /// Responses of this section by class (from backends and static files).
    pub responses: StatusClasses,
    pub status_502: u64,
    pub status_503: u64,
    pub status_504: u64,
    pub backends_joined: u64,
    pub backends_left: u64,
    pub handshakes_refused: u64,
    pub redeploys: u64,
    pub static_files: u64,
    /// Backend connections the proxy closed mid-request because of their
    /// client: a body framing error found after bytes were sent, a body
    /// below `min_body_rate` (or over `body_timeout`), a client gone.
    pub aborted_body_error: u64,
    pub aborted_body_slow: u64,
    pub aborted_client_gone: u64,
    /// Bytes read from / written to its clients, for its requests.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// How long each dispatched request waited for a backend (zero for one
    /// served at once).
    pub queue_wait: Histogram,
}

impl SectionCounters {
    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &SectionCounters) {
        self.responses.merge(&other.responses);
        add(&mut self.status_502, other.status_502);
        add(&mut self.status_503, other.status_503);
        add(&mut self.status_504, other.status_504);
        add(&mut self.backends_joined, other.backends_joined);
        add(&mut self.backends_left, other.backends_left);
        add(&mut self.handshakes_refused, other.handshakes_refused);
        add(&mut self.redeploys, other.redeploys);
        add(&mut self.static_files, other.static_files);
        add(&mut self.aborted_body_error, other.aborted_body_error);
        add(&mut self.aborted_body_slow, other.aborted_body_slow);
        add(&mut self.aborted_client_gone, other.aborted_client_gone);
        add(&mut self.bytes_in, other.bytes_in);
        add(&mut self.bytes_out, other.bytes_out);
        self.queue_wait.merge(&other.queue_wait);
    }
}

/// One backend connection.
#[derive(Debug, Clone, Default)]
pub struct BackendSnapshot {
    /// The id from its handshake ("" while handshaking).
    pub id: String,
    /// Its address.
    pub peer: String,
    pub state: BackendStateName,
    /// Requests it has served.
    pub requests: u64,
    pub connected_unix: u64,
    pub worker: usize,
}

/// What a backend connection is doing, for display.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackendStateName {
    #[default]
    Handshaking,
    Idle,
    Busy,
    /// Finishing its last request after a reload removed its section.
    Closing,
}

impl BackendStateName {
    pub const ALL: [BackendStateName; 4] = [
        BackendStateName::Handshaking,
        BackendStateName::Idle,
        BackendStateName::Busy,
        BackendStateName::Closing,
    ];

    /// The lower-case word used in metrics labels and HTML classes.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendStateName::Handshaking => "handshaking",
            BackendStateName::Idle => "idle",
            BackendStateName::Busy => "busy",
            BackendStateName::Closing => "closing",
        }
    }
}

impl StatusClasses {
    /// Labels of the five classes, in index order.
    pub const LABELS: [&'static str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

    /// Counts one response; a status outside 100..=599 is not an HTTP
    /// status and is ignored.
    pub fn add(&mut self, status: u16) {
        if (100..=599).contains(&status) {
            let class = usize::from(status / 100 - 1);
            self.0[class] = self.0[class].saturating_add(1);
        }
    }

    pub fn total(&self) -> u64 {
        self.0.iter().fold(0u64, |a, &n| a.saturating_add(n))
    }

    pub fn merge(&mut self, other: &StatusClasses) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = a.saturating_add(b);
        }
    }
}

impl Snapshot {
    /// Adds another worker's snapshot into this one: sums counters and
    /// histograms, concatenates backends, matches sections by `name` (a
    /// section missing here is appended), and keeps this one's version,
    /// start time, clock, worker count and reload counts (facts about the
    /// process, which every worker reports alike).
    pub fn merge(&mut self, other: &Snapshot) {
        add(&mut self.client_connections, other.client_connections);
        add(&mut self.backend_connections, other.backend_connections);
        add(&mut self.bytes_in, other.bytes_in);
        add(&mut self.bytes_out, other.bytes_out);
        self.unrouted.merge(&other.unrouted);
        for theirs in &other.sections {
            match self.sections.iter_mut().find(|s| s.name == theirs.name) {
                Some(ours) => ours.merge(theirs),
                None => self.sections.push(theirs.clone()),
            }
        }
    }

    /// Seconds since the process started (0 if the clock went backwards).
    pub fn uptime_secs(&self) -> u64 {
        self.now_unix.saturating_sub(self.started_unix)
    }
}

impl SectionSnapshot {
    /// Adds the same section as seen by another worker. Hosts and outgoing
    /// addresses come from the shared configuration, so this one's are
    /// kept (or taken from `other` if this one has none).
    pub fn merge(&mut self, other: &SectionSnapshot) {
        if self.hosts.is_empty() {
            self.hosts = other.hosts.clone();
        }
        if self.outgoing.is_empty() {
            self.outgoing = other.outgoing.clone();
        }
        add(&mut self.queue_depth, other.queue_depth);
        add(&mut self.idle_backends, other.idle_backends);
        add(&mut self.busy_backends, other.busy_backends);
        add(&mut self.handshaking_backends, other.handshaking_backends);
        self.counters.merge(&other.counters);
        self.backends.extend(other.backends.iter().cloned());
    }
}

fn add(a: &mut u64, b: u64) {
    *a = a.saturating_add(b);
}

#[cfg(test)]
pub(crate) mod fixture {
    //! A snapshot with a bit of everything, shared by the renderers' tests.
    use super::*;
    use std::time::Duration;

    pub const NOW: u64 = 1_764_260_508; // 2025-11-27 16:21:48 UTC
    pub const STARTED: u64 = NOW - 90_061; // 1 day, 1 h, 1 min, 1 s earlier

    pub fn snapshot() -> Snapshot {
        let mut wait = Histogram::default();
        wait.observe(Duration::ZERO);
        wait.observe(Duration::from_micros(700));
        wait.observe(Duration::from_millis(30));
        let mut responses = StatusClasses::default();
        for status in [200, 200, 304, 404, 502] {
            responses.add(status);
        }
        let mut unrouted = StatusClasses::default();
        unrouted.add(400);
        unrouted.add(200);
        Snapshot {
            version: "9.8.7",
            started_unix: STARTED,
            now_unix: NOW,
            workers: 2,
            reloads: 3,
            reload_failures: 1,
            client_connections: 12,
            backend_connections: 4,
            bytes_in: 5000,
            bytes_out: 70_000,
            unrouted,
            sections: vec![
                SectionSnapshot {
                    name: "shop.example".into(),
                    hosts: vec!["shop.example".into(), "www.shop.example".into()],
                    outgoing: vec!["127.0.0.1:9001".into()],
                    queue_depth: 7,
                    idle_backends: 1,
                    busy_backends: 1,
                    handshaking_backends: 1,
                    counters: SectionCounters {
                        responses,
                        status_502: 1,
                        status_503: 0,
                        status_504: 0,
                        backends_joined: 5,
                        backends_left: 2,
                        handshakes_refused: 1,
                        redeploys: 1,
                        static_files: 2,
                        aborted_body_error: 0,
                        aborted_body_slow: 3,
                        aborted_client_gone: 0,
                        bytes_in: 4000,
                        bytes_out: 60_000,
                        queue_wait: wait,
                    },
                    backends: vec![
                        BackendSnapshot {
                            id: "shop-1".into(),
                            peer: "127.0.0.1:40001".into(),
                            state: BackendStateName::Busy,
                            requests: 41,
                            connected_unix: NOW - 3600,
                            worker: 0,
                        },
                        BackendSnapshot {
                            id: "shop-2".into(),
                            peer: "127.0.0.1:40002".into(),
                            state: BackendStateName::Idle,
                            requests: 17,
                            connected_unix: NOW - 65,
                            worker: 1,
                        },
                        BackendSnapshot {
                            id: String::new(),
                            peer: "127.0.0.1:40003".into(),
                            state: BackendStateName::Handshaking,
                            requests: 0,
                            connected_unix: NOW,
                            worker: 1,
                        },
                    ],
                },
                SectionSnapshot {
                    name: "a\"b\\c\nd".into(),
                    hosts: vec!["a\"b\\c\nd".into()],
                    outgoing: vec!["127.0.0.1:9002".into()],
                    ..SectionSnapshot::default()
                },
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn status_classes_count_by_hundreds_and_ignore_non_statuses() {
        let mut c = StatusClasses::default();
        for s in [
            0,
            99,
            100,
            199,
            200,
            299,
            404,
            500,
            599,
            600,
            1000,
            u16::MAX,
        ] {
            c.add(s);
        }
        assert_eq!(c, StatusClasses([2, 2, 0, 1, 2]));
        assert_eq!(c.total(), 7);
    }

    fn worker_snapshot(worker: usize, sections: &[(&str, u64)]) -> Snapshot {
        Snapshot {
            version: "1.0",
            started_unix: 100 + worker as u64,
            now_unix: 200 + worker as u64,
            workers: 2,
            reloads: 4,
            reload_failures: 1,
            client_connections: 10,
            backend_connections: 3,
            bytes_in: 1000,
            bytes_out: 2000,
            unrouted: StatusClasses([0, 1, 0, 2, 0]),
            sections: sections
                .iter()
                .map(|&(name, waited_ms)| {
                    let mut queue_wait = Histogram::default();
                    queue_wait.observe(Duration::from_millis(waited_ms));
                    SectionSnapshot {
                        name: name.into(),
                        hosts: vec![name.into()],
                        queue_depth: 2,
                        busy_backends: 1,
                        counters: SectionCounters {
                            responses: StatusClasses([0, 5, 0, 0, 1]),
                            status_503: 1,
                            bytes_in: 100,
                            queue_wait,
                            ..SectionCounters::default()
                        },
                        backends: vec![BackendSnapshot {
                            id: format!("{name}-w{worker}"),
                            worker,
                            state: BackendStateName::Busy,
                            ..BackendSnapshot::default()
                        }],
                        ..SectionSnapshot::default()
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn merging_two_workers_sums_counters_and_keeps_process_facts() {
        let mut a = worker_snapshot(0, &[("one", 1), ("two", 30)]);
        let b = worker_snapshot(1, &[("two", 2000), ("three", 0)]);
        a.merge(&b);

        assert_eq!(
            (a.started_unix, a.now_unix),
            (100, 200),
            "process facts are this one's"
        );
        assert_eq!((a.workers, a.reloads, a.reload_failures), (2, 4, 1));
        assert_eq!((a.client_connections, a.backend_connections), (20, 6));
        assert_eq!((a.bytes_in, a.bytes_out), (2000, 4000));
        assert_eq!(a.unrouted, StatusClasses([0, 2, 0, 4, 0]));

        let names: Vec<&str> = a.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["one", "two", "three"],
            "a section only in `other` is appended"
        );
        let one = &a.sections[0];
        assert_eq!((one.queue_depth, one.backends.len()), (2, 1), "untouched");
        let two = &a.sections[1];
        assert_eq!(two.queue_depth, 4);
        assert_eq!(two.busy_backends, 2);
        let c = &two.counters;
        assert_eq!(c.responses, StatusClasses([0, 10, 0, 0, 2]));
        assert_eq!((c.status_503, c.bytes_in), (2, 200));
        assert_eq!(c.queue_wait.count, 2);
        assert_eq!(c.queue_wait.sum_micros, 2_030_000);
        let ids: Vec<&str> = two.backends.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids, ["two-w0", "two-w1"], "backends are concatenated");
        assert_eq!(a.sections[2].backends[0].id, "three-w1");
    }

    #[test]
    fn merge_order_does_not_change_the_sums() {
        let w0 = worker_snapshot(0, &[("one", 1), ("two", 30)]);
        let w1 = worker_snapshot(1, &[("two", 2000), ("one", 7)]);
        let mut ab = w0.clone();
        ab.merge(&w1);
        let mut ba = w1.clone();
        ba.merge(&w0);
        for name in ["one", "two"] {
            let x = ab.sections.iter().find(|s| s.name == name).unwrap();
            let y = ba.sections.iter().find(|s| s.name == name).unwrap();
            assert_eq!(x.counters.queue_wait, y.counters.queue_wait, "{name}");
            assert_eq!(x.counters.responses, y.counters.responses, "{name}");
            assert_eq!(x.backends.len(), y.backends.len(), "{name}");
        }
    }

    #[test]
    fn backend_state_words() {
        let words: Vec<&str> = BackendStateName::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(words, ["handshaking", "idle", "busy", "closing"]);
    }
}
