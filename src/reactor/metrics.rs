//! `status_uri`: the proxy's own figures, as Prometheus text or the HTML
//! status page (`crate::status` renders both from a `Snapshot`).
//!
//! A worker answers the request from a snapshot of its own state, taken
//! then, merged with the other workers' latest published snapshots. With
//! several workers and `status_uri` set, each worker publishes its
//! snapshot on the shared `Board` once a second (`PUBLISH_EVERY`), so the
//! others' figures in an answer are at most that old. Without
//! `status_uri`, nothing is ever built or published.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::client::{connection_line, Phase};
use super::{client_in, BackendState, Conn, Reactor, Step};
use crate::access_log::Termination;
use crate::proto::request::{find_header, RequestBody, RequestHead};
use crate::status::{
    self, BackendSnapshot, BackendStateName, SectionSnapshot, Snapshot, HTML_CONTENT_TYPE,
    PROMETHEUS_CONTENT_TYPE,
};

/// How often a worker publishes its snapshot for the others.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The workers' latest snapshots, one slot each.
pub(super) struct Board {
    slots: Mutex<Vec<Option<Snapshot>>>,
}

impl Board {
    pub(super) fn new(workers: usize) -> Board {
        Board {
            slots: Mutex::new(vec![None; workers]),
        }
    }
}

/// When the process started (Unix seconds), fixed on first use.
pub(super) fn process_start() -> u64 {
    static START: OnceLock<u64> = OnceLock::new();
    *START.get_or_init(unix_now)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Reactor {
    /// Joins the board the workers share (several workers only).
    pub(super) fn join_board(&mut self, board: Arc<Board>) {
        self.board = Some(board);
        self.next_publish = self.limits.status_uri.as_ref().map(|_| Instant::now());
    }

    /// Publishes this worker's snapshot when it is time to.
    pub(super) fn publish_if_due(&mut self) {
        let Some(at) = self.next_publish else {
            return;
        };
        if self.now < at {
            return;
        }
        if self.limits.status_uri.is_none() {
            self.next_publish = None;
            return;
        }
        self.next_publish = Some(self.now + PUBLISH_EVERY);
        let snap = self.snapshot();
        if let Some(board) = &self.board {
            if let Ok(mut slots) = board.slots.lock() {
                if let Some(slot) = slots.get_mut(self.worker) {
                    *slot = Some(snap);
                }
            }
        }
    }

    /// After a reload: publishing follows `status_uri`.
    pub(super) fn reschedule_publish(&mut self) {
        self.next_publish = match (&self.board, &self.limits.status_uri) {
            (Some(_), Some(_)) => Some(self.next_publish.unwrap_or(self.now)),
            _ => None,
        };
    }

    /// This worker's figures now.
    fn snapshot(&self) -> Snapshot {
        let mut sections: Vec<SectionSnapshot> = self.sections[..self.live_sections]
            .iter()
            .enumerate()
            .map(|(i, s)| SectionSnapshot {
                name: s.name.clone(),
                hosts: s.cfg.incoming.clone(),
                outgoing: s.cfg.outgoing.iter().map(|a| a.to_string()).collect(),
                queue_depth: self.dispatch.waiting_count(i) as u64,
                counters: s.stats.clone(),
                ..SectionSnapshot::default()
            })
            .collect();
        for (_, e) in self.conns.iter() {
            let Conn::Backend(be) = &e.conn else {
                continue;
            };
            // A retired section's backends show under no section; they are
            // counted among the open backend connections.
            let Some(s) = sections.get_mut(be.section) else {
                continue;
            };
            let state = match be.state {
                BackendState::Handshake { .. } => {
                    s.handshaking_backends += 1;
                    BackendStateName::Handshaking
                }
                BackendState::Idle => {
                    s.idle_backends += 1;
                    BackendStateName::Idle
                }
                BackendState::Busy { .. } => {
                    s.busy_backends += 1;
                    BackendStateName::Busy
                }
            };
            s.backends.push(BackendSnapshot {
                id: be.label().to_string(),
                peer: be.peer.to_string(),
                state,
                requests: be.served,
                connected_unix: be.since,
                worker: self.worker,
            });
        }
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            started_unix: process_start(),
            now_unix: unix_now(),
            workers: self.workers,
            reloads: super::workers::RELOADS.load(Ordering::Relaxed),
            reload_failures: super::workers::RELOAD_FAILURES.load(Ordering::Relaxed),
            client_connections: self.open_clients as u64,
            backend_connections: self.open_backends as u64,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            unrouted: self.unrouted,
            sections,
        }
    }

    /// Answers a request for `status_uri`: Prometheus text, or the HTML
    /// page when the client asks for it (`Accept: text/html`, `?html`).
    pub(super) fn serve_status(&mut self, c: usize, head: &RequestHead, start: usize) -> Step {
        let mut snap = self.snapshot();
        if let Some(board) = &self.board {
            if let Ok(slots) = board.slots.lock() {
                for (w, other) in slots.iter().enumerate() {
                    if let (true, Some(other)) = (w != self.worker, other) {
                        snap.merge(other);
                    }
                }
            }
        }
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        let Some(io) = cl.io.as_mut() else {
            return Step::Gone;
        };
        let raw = &io.inbuf.bytes()[start..start + head.len];
        let target = &raw[head.target.clone()];
        let query = target
            .iter()
            .position(|&b| b == b'?')
            .map(|q| &target[q + 1..]);
        let accept = find_header(raw, "accept").filter(|v| !v.is_empty());
        let html = status::wants_html(accept, query);
        let mut body = Vec::new();
        let content_type = if html {
            status::render_html(&snap, &mut body);
            HTML_CONTENT_TYPE
        } else {
            status::render_prometheus(&snap, &mut body);
            PROMETHEUS_CONTENT_TYPE
        };
        let close = !head.keep_alive || head.body != RequestBody::None;
        let out = &mut io.owned;
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: ");
        out.extend_from_slice(content_type.as_bytes());
        out.extend_from_slice(b"\r\nCache-Control: no-store\r\nContent-Length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(connection_line(head.minor, !close).as_bytes());
        out.extend_from_slice(b"\r\n");
        if !head.is_head {
            out.extend_from_slice(&body);
        }
        io.owned_sent = 0;
        io.inbuf.start = start + head.len;
        io.tally.status = 200;
        io.tally.end_as(Termination::Local);
        cl.phase = Phase::Local { close };
        self.set_deadline(c, self.limits.backend_timeout);
        Step::Again
    }
}
