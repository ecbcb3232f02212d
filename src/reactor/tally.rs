//! What one request did, for the metrics and the access log.
//!
//! Every request carries a `Tally` (in the client's pooled buffers, which a
//! request always holds, so an idle connection pays nothing for it): the
//! reactor opens it when a request head is complete (or when the proxy
//! answers an unparseable one), notes the section, the status, the queue
//! wait and the backend's time as they become known, and closes it exactly
//! once — when the response's last byte is written, or when the connection
//! ends first (`close_client`), with the reason it ended. Closing adds the
//! request to its section's counters (or the worker's `unrouted` ones) and,
//! with `access_log` set, writes its line.
//!
//! With the access log off nothing of the request line or headers is
//! copied: the tally is a few integers and instants on the connection.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use crate::access_log::{Record, Termination};
use crate::proto::handshake::BackendId;
use crate::proto::request::{find_header, RequestHead};

use super::{client_in, Reactor};

/// The request a client connection is on.
pub struct Tally {
    /// When its head was complete; `None`: no request open.
    pub start: Option<Instant>,
    pub section: Option<usize>,
    /// The status sent to the client; 0 before a response head went out.
    pub status: u16,
    /// Time from the head to the pairing with a backend (first pairing).
    pub wait: Option<Duration>,
    pub dispatched: Option<Instant>,
    pub backend_time: Option<Duration>,
    pub backend: Option<BackendId>,
    /// How it ended, once decided (else the connection's end decides).
    pub termination: Option<Termination>,
    /// Request line and headers, only while the access log is on.
    pub fields: Option<Box<LogFields>>,
}

/// The parts of a request the access log shows, copied from its head.
#[derive(Default)]
pub struct LogFields {
    pub method: Vec<u8>,
    pub target: Vec<u8>,
    pub version: Vec<u8>,
    pub referer: Vec<u8>,
    pub user_agent: Vec<u8>,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            start: None,
            section: None,
            status: 0,
            wait: None,
            dispatched: None,
            backend_time: None,
            backend: None,
            termination: None,
            fields: None,
        }
    }

    /// Decides how the request ends, unless that is already decided.
    pub fn end_as(&mut self, t: Termination) {
        if self.start.is_some() && self.termination.is_none() {
            self.termination = Some(t);
        }
    }
}

impl LogFields {
    /// Copies what the log shows of `head` (its bytes are `raw`).
    fn capture(&mut self, raw: &[u8], head: &RequestHead) {
        let copy = |to: &mut Vec<u8>, from: &[u8]| {
            to.clear();
            to.extend_from_slice(from);
        };
        copy(&mut self.method, &raw[head.method.clone()]);
        copy(&mut self.target, &raw[head.target.clone()]);
        copy(
            &mut self.version,
            if head.minor == 0 {
                b"HTTP/1.0"
            } else {
                b"HTTP/1.1"
            },
        );
        copy(
            &mut self.referer,
            find_header(raw, "referer").unwrap_or_default(),
        );
        copy(
            &mut self.user_agent,
            find_header(raw, "user-agent").unwrap_or_default(),
        );
    }

    fn clear(&mut self) {
        for v in [
            &mut self.method,
            &mut self.target,
            &mut self.version,
            &mut self.referer,
            &mut self.user_agent,
        ] {
            v.clear();
        }
    }
}

impl Reactor {
    /// Opens the tally of the request whose head was just parsed; the head
    /// begins at `inbuf` offset `start`.
    pub(super) fn open_tally(&mut self, c: usize, head: &RequestHead, start: usize) {
        let logging = self.access_log.is_some();
        let now = self.now;
        let Some(io) = client_in(&mut self.conns, c).and_then(|cl| cl.io.as_mut()) else {
            return;
        };
        let t = &mut io.tally;
        t.start = Some(now);
        t.section = None;
        t.status = 0;
        t.wait = None;
        t.dispatched = None;
        t.backend_time = None;
        t.backend = None;
        t.termination = None;
        if logging {
            let raw = &io.inbuf.bytes()[start..start + head.len];
            t.fields
                .get_or_insert_with(Default::default)
                .capture(raw, head);
        }
    }

    /// Opens a tally for a response to a request that was never parsed
    /// (a bad or incomplete head), unless one is open.
    pub(super) fn open_tally_unparsed(&mut self, c: usize) {
        let now = self.now;
        let Some(cl) = client_in(&mut self.conns, c) else {
            return;
        };
        let t = &mut cl.io(&mut self.pool).tally;
        if t.start.is_some() {
            return;
        }
        *t = Tally {
            start: Some(now),
            fields: t.fields.take(),
            ..Tally::new()
        };
        if let Some(f) = t.fields.as_mut() {
            f.clear();
        }
    }

    /// The request is paired with backend `b`: its wait is over (counted
    /// once, however often it is redeployed).
    pub(super) fn tally_paired(&mut self, c: usize, section: usize, id: Option<BackendId>) {
        let now = self.now;
        let Some(t) = client_in(&mut self.conns, c).and_then(|cl| cl.tally()) else {
            return;
        };
        t.dispatched = Some(now);
        t.backend = id;
        t.section = Some(section);
        if t.wait.is_none() {
            let wait = t
                .start
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
            t.wait = Some(wait);
            if let Some(s) = self.sections.get_mut(section) {
                s.stats.queue_wait.observe(wait);
            }
        }
    }

    /// The backend's part is over (its response is read).
    pub(super) fn tally_backend_done(&mut self, c: usize) {
        let now = self.now;
        if let Some(t) = client_in(&mut self.conns, c).and_then(|cl| cl.tally()) {
            if let Some(d) = t.dispatched {
                t.backend_time = Some(now.saturating_duration_since(d));
            }
        }
    }

    /// Closes the client's open tally (if any): counts it, logs it.
    /// `goes_on`: the connection carries on to its next request, whose
    /// bytes may already be read.
    pub(super) fn close_tally(&mut self, c: usize, default: Termination, goes_on: bool) {
        let Some(cl) = client_in(&mut self.conns, c) else {
            return;
        };
        let unwritten = cl.has_output();
        let Some(io) = cl.io.as_mut() else {
            return;
        };
        let t = &mut io.tally;
        let Some(start) = t.start.take() else {
            return;
        };
        // Bytes read ahead (a pipelined next request) are not this one's:
        // they stay counted for the next.
        let ahead = if goes_on {
            (io.inbuf.live().len() as u64).min(cl.bytes_in)
        } else {
            0
        };
        let bytes_in = cl.bytes_in - ahead;
        cl.bytes_in = ahead;
        let bytes_out = std::mem::take(&mut cl.bytes_out);
        let mut termination = t.termination.take().unwrap_or(default);
        // A response still being written when its connection ends was cut
        // on the client's side (or by the stop), whatever its source.
        let cut = matches!(default, Termination::ClientClosed | Termination::Shutdown);
        let delivered = matches!(
            termination,
            Termination::Ok | Termination::Static | Termination::Local
        );
        if !goes_on && cut && delivered && unwritten {
            termination = default;
        }
        let status = t.status;
        let section = t.section.filter(|&s| s < self.sections.len());
        match section {
            Some(s) => {
                let st = &mut self.sections[s].stats;
                st.responses.add(status);
                st.bytes_in += bytes_in;
                st.bytes_out += bytes_out;
                match status {
                    502 => st.status_502 += 1,
                    503 => st.status_503 += 1,
                    504 => st.status_504 += 1,
                    _ => {}
                }
            }
            None => self.unrouted.add(status),
        }
        self.bytes_in += bytes_in;
        self.bytes_out += bytes_out;
        let Some(log) = self.access_log.as_mut() else {
            return;
        };
        let total = self.now.saturating_duration_since(start);
        let empty = LogFields::default();
        let f = t.fields.as_deref().unwrap_or(&empty);
        let client: IpAddr = match cl.peer.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let backend = t.backend;
        log.record(&Record {
            client,
            start: SystemTime::now() - self.now.saturating_duration_since(start),
            method: &f.method,
            target: &f.target,
            version: &f.version,
            status,
            bytes_out,
            bytes_in,
            referer: &f.referer,
            user_agent: &f.user_agent,
            section: section.map_or("", |s| self.sections[s].name.as_str()),
            backend: backend.as_ref().map_or("", BackendId::as_str),
            queue_wait: t.wait,
            backend_time: t.backend_time,
            total,
            termination,
        });
        if let Some(f) = t.fields.as_mut() {
            f.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::request;

    fn captured(head: &str) -> LogFields {
        let h = request::parse(head.as_bytes(), 16384).unwrap().unwrap();
        let mut f = LogFields::default();
        f.capture(&head.as_bytes()[..h.len], &h);
        f
    }

    #[test]
    fn the_log_fields_are_copied_from_the_parsed_head() {
        let f = captured(
            "GET /a?b HTTP/1.1\r\nHost: a\r\nUSER-agent:  curl/8 \r\nReferer: http://x/\r\n\r\n",
        );
        assert_eq!(f.method, b"GET");
        assert_eq!(f.target, b"/a?b");
        assert_eq!(f.version, b"HTTP/1.1");
        assert_eq!(f.user_agent, b"curl/8");
        assert_eq!(f.referer, b"http://x/");
        let f = captured("GET /referer: HTTP/1.0\r\n\r\n");
        assert_eq!(f.version, b"HTTP/1.0");
        assert_eq!((f.referer.len(), f.user_agent.len()), (0, 0));
        // Blank lines before the request line are skipped, as the parser
        // skips them: the request line is never taken for a header.
        let f = captured(
            "\r\n\r\nGET http://referer:80/ HTTP/1.1\r\nHost: referer\r\nUser-Agent: u\r\n\r\n",
        );
        assert_eq!((f.referer.len(), f.user_agent.as_slice()), (0, &b"u"[..]));
    }
}
