//! The client side of the reactor: reading request heads, routing them,
//! the proxy's own responses (errors, health check), and closing.
//!
//! A client's phase (`client::Phase`) decides which step runs when it is
//! driven; each step returns whether to go on (`Step::Again`), wait for an
//! event, or stop because the connection is gone. The exchange with a
//! backend itself is in `exchange.rs`.

use std::io::{self, Read};
use std::net::Shutdown;
use std::os::unix::fs::FileExt;

use log::{debug, info, warn};

use super::client::{connection_line, ForwardError, Phase, ReadOutcome};
use super::exchange::body_error_text;
use super::filesend::{conditions_of, FileSend, SavedConditions};
use super::{client_in, Conn, Entry, Reactor, Step, LINGER, LINGER_READS, STEP_BUDGET};
use crate::access_log::Termination;
use crate::proto::local;
use crate::proto::request::{self, RequestBody, RequestHead, MAX_HEADERS};
use crate::static_files::{self, FoundFile};

/// Why a request body was refused with 408.
const SLOW_BODY: &str = "request body below min_body_rate or not complete within body_timeout";

/// Files up to this size are read into the response buffer and written with
/// their head in one `writev`; larger ones go out with `sendfile`.
const INLINE_FILE_MAX: usize = 8 * 1024;

impl Reactor {
    pub(super) fn drive_client(&mut self, c: usize) {
        for _ in 0..STEP_BUDGET {
            let step = match client_in(&mut self.conns, c).map(|cl| &cl.phase) {
                None => return,
                Some(Phase::Head) => self.step_head(c),
                Some(Phase::Body { section }) => {
                    let s = *section;
                    self.step_body(c, s)
                }
                Some(Phase::Queued { section }) => {
                    let s = *section;
                    self.step_queued(c, s)
                }
                Some(Phase::Proxying { section, backend }) => {
                    let (s, b) = (*section, *backend);
                    self.step_proxy(c, s, b)
                }
                Some(Phase::Local { close }) => {
                    let close = *close;
                    self.step_local(c, close)
                }
                Some(Phase::Lingering) => self.step_linger(c),
            };
            match step {
                Step::Again => continue,
                Step::Wait | Step::Gone => return,
            }
        }
        // Out of budget with work left: let other connections run first.
        self.deferred.push(c);
    }

    /// Enters `Head` for the next request on a kept-alive connection.
    pub(super) fn enter_head(&mut self, c: usize) -> Step {
        self.close_tally(c, Termination::Ok, true);
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        cl.phase = Phase::Head;
        let buffered = cl.io.as_ref().is_some_and(|io| !io.inbuf.is_empty());
        cl.release_io_if_idle(&mut self.pool);
        if self.stopping.is_some() && cl.is_idle() {
            self.close_client(c);
            return Step::Gone;
        }
        let after = if buffered {
            self.limits.header_timeout
        } else {
            self.limits.keepalive_timeout
        };
        self.set_deadline(c, after);
        Step::Again
    }

    pub(super) fn step_head(&mut self, c: usize) -> Step {
        let max_head = self.limits.max_header_bytes;
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        if let Some(io) = cl.io.as_mut() {
            if !io.inbuf.is_empty() {
                match request::parse_mut(io.inbuf.live_mut(), max_head) {
                    Ok(Some(head)) => return self.on_request(c, head),
                    Ok(None) => {}
                    Err(e) => return self.fail_request(c, e.status(), &e.to_string()),
                }
            }
        }
        let was_empty = cl.io.as_ref().is_none_or(|io| io.inbuf.is_empty());
        match cl.read_in(&mut self.pool) {
            ReadOutcome::Data { short } => {
                if short && !cl.hup {
                    // The read drained the socket: the rest of the head (or
                    // the body) brings a new event, so skip the `read` that
                    // would only answer `WouldBlock` (see `client::read_into`).
                    cl.readable = false;
                }
                if was_empty {
                    self.set_deadline(c, self.limits.header_timeout);
                }
                Step::Again
            }
            ReadOutcome::WouldBlock => {
                cl.release_io_if_idle(&mut self.pool);
                Step::Wait
            }
            ReadOutcome::Full => self.fail_request(c, 431, "request head does not fit the buffer"),
            ReadOutcome::Eof | ReadOutcome::Error => {
                self.close_client(c);
                Step::Gone
            }
        }
    }

    pub(super) fn on_request(&mut self, c: usize, mut head: RequestHead) -> Step {
        self.stats.requests += 1;
        if let Some(cl) = client_in(&mut self.conns, c) {
            cl.fresh = false;
        }
        if self.stopping.is_some() {
            // Stopping: this response is the connection's last, and says so.
            head.keep_alive = false;
        }
        let (start, is_status) = match client_in(&mut self.conns, c).and_then(|cl| cl.io.as_ref()) {
            Some(io) => {
                let start = io.inbuf.start;
                let path = &io.inbuf.bytes()[start + head.path.start..start + head.path.end];
                let status_uri = self.limits.status_uri.as_deref();
                (start, status_uri.is_some_and(|u| u.as_bytes() == path))
            }
            None => return Step::Gone,
        };
        self.open_tally(c, &head, start);
        if is_status {
            return self.serve_status(c, &head, start);
        }
        let max_body = self.limits.max_body_bytes;
        let health = self.limits.health_uri.as_bytes();
        let router = &self.router;
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        let Some(io) = cl.io.as_mut() else {
            return Step::Gone;
        };
        let start = io.inbuf.start;
        let buf = io.inbuf.bytes();
        if &buf[start + head.path.start..start + head.path.end] == health {
            let close = !head.keep_alive || head.body != RequestBody::None;
            io.inbuf.start = start + head.len;
            let st = &self.stats;
            let counts = [
                ("400", st.status_400),
                ("404", st.status_404),
                ("503", st.status_503),
                ("502", st.status_502),
                ("504", st.status_504),
                ("refused_handshakes", st.handshakes_refused),
            ];
            io.to_client.push_static(local::HEALTH_HEAD);
            let n = local::health_tail(
                io.to_client.scratch_space(),
                &counts,
                close,
                head.minor == 0 && !close,
            );
            io.to_client.commit_scratch(n);
            io.tally.status = 200;
            io.tally.end_as(Termination::Local);
            cl.phase = Phase::Local { close };
            return Step::Again;
        }
        if let RequestBody::Length(n) = head.body {
            if max_body.is_some_and(|max| n > max) {
                return self.fail_request(c, 413, "request body larger than max_body_bytes");
            }
        }
        let host = head
            .host
            .as_ref()
            .map(|r| &buf[start + r.start..start + r.end]);
        let Some(section) = router.route(host) else {
            let host = String::from_utf8_lossy(host.unwrap_or(b"(none)")).into_owned();
            return self.fail_request(c, 404, &format!("no section serves host {host:?}"));
        };
        io.tally.section = Some(section);
        let sec = &self.sections[section];
        if let Some(root) = &sec.docroot {
            let method = &buf[start + head.method.start..start + head.method.end];
            if (method == b"GET" || method == b"HEAD") && head.body == RequestBody::None {
                if let Some(file) =
                    root.lookup(&buf[start + head.path.start..start + head.path.end])
                {
                    return self.serve_file(c, head, file);
                }
            }
        }
        let keep_conditions = sec.sendfile_root.is_some();
        let cfg = &sec.cfg;
        if cfg.xforwardedfor && head.xff_value_end.is_none() && head.headers >= MAX_HEADERS {
            // One line more would be over the limit every parser on the
            // way (this one, the backend library) holds to.
            return self.fail_request(
                c,
                431,
                "100 header lines, and X-Forwarded-For would make 101",
            );
        }
        let (redeployable, sizelimit) = (cfg.redeployable, cfg.redeployment_sizelimit);
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        let Some(io) = cl.io.as_mut() else {
            return Step::Gone;
        };
        // A buffer taken before a reload raised the limit may be smaller.
        let sizelimit = sizelimit.min(io.inbuf.bytes().len());
        let retain = redeployable
            && match head.body {
                RequestBody::None => head.len <= sizelimit,
                RequestBody::Length(n) => (head.len as u64).saturating_add(n) <= sizelimit as u64,
                RequestBody::Chunked => true,
            };
        let head_len = head.len;
        let bodiless = head.body == RequestBody::None;
        io.ex.begin(head, start, retain);
        if keep_conditions {
            io.ex.saved_conditions =
                SavedConditions::capture(&io.inbuf.bytes()[start..start + head_len]);
        }
        if bodiless {
            return self.place(c, section, false);
        }
        self.take_body(c, section)
    }

    /// Reads the routed request's body before a backend is taken: a body
    /// of up to `request_buffer` bytes into the buffer, a larger one into
    /// the spool; only a complete, validated body is handed on. Where the
    /// spool is off or full, the request is placed once the bytes already
    /// read are validated and the rest streams to the backend under
    /// `min_body_rate` (docs/request-framing.md).
    pub(super) fn take_body(&mut self, c: usize, section: usize) -> Step {
        let max_body = self.limits.max_body_bytes;
        let request_buffer = self.limits.request_buffer as u64;
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        let Some(io) = cl.io.as_mut() else {
            return Step::Gone;
        };
        if let Err(e) = io.scan_body(max_body) {
            return self.refuse_body(c, e);
        }
        let Some(head) = io.ex.head.as_ref() else {
            return Step::Gone;
        };
        let (framing, expect, head_len) =
            (head.body, head.expect_continue && head.minor == 1, head.len);
        if io.spool.is_some() {
            if let Err(e) = io.spool_body(&mut self.pool.spool) {
                return self.stream_rest(c, section, &e.to_string());
            }
        }
        if io.ex.body_done() {
            return self.place(c, section, false);
        }
        if io.spool.is_none() {
            let body_start = io.ex.req_start + head_len;
            let in_memory = (io.ex.scanned - body_start) as u64;
            // `request_buffer: 0` buffers no body at all.
            let fits = request_buffer > 0
                && match framing {
                    RequestBody::Length(n) => {
                        n <= request_buffer && head_len as u64 + n <= io.inbuf.bytes().len() as u64
                    }
                    _ => in_memory <= request_buffer && io.inbuf.has_spare(),
                };
            if !fits {
                let len = match framing {
                    RequestBody::Length(n) => Some(n),
                    _ => None,
                };
                match self.pool.spool.open(len) {
                    Ok(Some(f)) => {
                        io.spool = Some(f);
                        if let Err(e) = io.spool_body(&mut self.pool.spool) {
                            return self.stream_rest(c, section, &e.to_string());
                        }
                    }
                    Ok(None) => return self.stream_rest(c, section, "request_spool_limit reached"),
                    Err(e) => {
                        warn!(
                            "request_spool_directory {}: {e}",
                            self.pool.spool.dir().display()
                        );
                        return self.stream_rest(c, section, "the spool could not be opened");
                    }
                }
            }
        }
        if expect && !io.ex.continued {
            // The client waits for this before it sends the body, which the
            // proxy takes itself (RFC 9110 §10.1.1).
            io.to_client.push_static(b"HTTP/1.1 100 Continue\r\n\r\n");
            io.ex.continued = true;
        }
        io.ex.pace.resume(self.now);
        let deadline = io.ex.pace.deadline(&self.limits.body_pace);
        cl.phase = Phase::Body { section };
        if let Some(at) = deadline {
            self.set_deadline_at(c, at);
        }
        Step::Again
    }

    /// The body goes on to a backend as it arrives (the spool is off, full
    /// or failing): placed now, under `min_body_rate`.
    fn stream_rest(&mut self, c: usize, section: usize, why: &str) -> Step {
        if let Some(io) = client_in(&mut self.conns, c).and_then(|cl| cl.io.as_mut()) {
            if self.pool.spool.enabled() {
                debug!(
                    "streaming a request body to section {}: {why}",
                    self.sections[section].name
                );
            }
            // Only a whole spooled body can be replayed.
            if io.spool.is_some() {
                io.ex.retained = false;
            }
            io.ex.pace.pause(self.now);
        }
        self.place(c, section, false)
    }

    /// A body the proxy will not forward, found before a backend was taken.
    fn refuse_body(&mut self, c: usize, e: ForwardError) -> Step {
        match e {
            ForwardError::Body(e) => self.fail_request(c, 400, body_error_text(e)),
            ForwardError::TooLarge => {
                self.fail_request(c, 413, "request body larger than max_body_bytes")
            }
            ForwardError::Spool(e) => {
                self.fail_request(c, 500, &format!("spooled request body unreadable: {e}"))
            }
        }
    }

    pub(super) fn step_body(&mut self, c: usize, section: usize) -> Step {
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        if cl.has_output() && cl.flush_out().is_err() {
            self.close_client(c);
            return Step::Gone;
        }
        match cl.read_in(&mut self.pool) {
            ReadOutcome::Data { .. } | ReadOutcome::Full => self.take_body(c, section),
            ReadOutcome::WouldBlock => Step::Wait,
            ReadOutcome::Eof | ReadOutcome::Error => {
                debug!(
                    "client {} left before its request body was complete",
                    cl.peer
                );
                self.close_client(c);
                Step::Gone
            }
        }
    }

    /// Answers a request with a file of the section's docroot.
    fn serve_file(&mut self, c: usize, head: RequestHead, file: FoundFile) -> Step {
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        let Some(io) = cl.io.as_mut() else {
            return Step::Gone;
        };
        let start = io.inbuf.start;
        let cond = conditions_of(&io.inbuf.bytes()[start..start + head.len]);
        let plan = static_files::plan(&file, &cond, head.is_head);
        let connection = connection_line(head.minor, head.keep_alive);
        io.resp.start = 0;
        io.resp.end = 0;
        let Some(n) = static_files::write_head(&file, &plan, connection, io.resp.spare()) else {
            return self.fail_request(c, 500, "static response head did not fit its buffer");
        };
        io.resp.end = n;
        io.file = plan.body.map(|(offset, left)| FileSend {
            file: file.file,
            offset,
            left,
        });
        // A small body goes out with its head in one write; a larger one
        // with sendfile once the head is written.
        if let Some(send) = io.file.as_mut() {
            if send.left <= INLINE_FILE_MAX as u64 {
                let len = send.left as usize;
                let room = &mut io.resp.spare()[..len];
                if send.file.read_exact_at(room, send.offset).is_ok() {
                    io.resp.end += len;
                    io.file = None;
                }
            }
        }
        // The head counts as consumed, so `resp` empties once it is written.
        io.ex.resp_parse = io.resp.end;
        io.to_client.push_buf(0..io.resp.end);
        io.inbuf.start = start + head.len;
        self.stats.static_files += 1;
        if let Some(s) = io.tally.section.and_then(|s| self.sections.get_mut(s)) {
            s.stats.static_files += 1;
        }
        io.tally.status = plan.status;
        io.tally.end_as(Termination::Static);
        cl.phase = Phase::Local {
            close: !head.keep_alive,
        };
        self.set_deadline(c, self.limits.backend_timeout);
        Step::Again
    }

    pub(super) fn step_queued(&mut self, c: usize, section: usize) -> Step {
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        match cl.read_in(&mut self.pool) {
            ReadOutcome::Data { .. } => Step::Again,
            ReadOutcome::WouldBlock | ReadOutcome::Full => Step::Wait,
            ReadOutcome::Eof | ReadOutcome::Error => {
                debug!(
                    "client {} left the queue of section {}",
                    cl.peer, self.sections[section].name
                );
                self.close_client(c);
                Step::Gone
            }
        }
    }

    /// Answers with an error and closes (after lingering).
    pub(super) fn fail_request(&mut self, c: usize, status: u16, why: &str) -> Step {
        self.open_tally_unparsed(c);
        if let Some(t) = client_in(&mut self.conns, c).and_then(|cl| cl.tally()) {
            t.status = status;
            t.end_as(match status {
                404 => Termination::NoSection,
                408 => Termination::ClientTimeout,
                502 => Termination::BackendFailed,
                503 => Termination::QueueTimeout,
                504 => Termination::BackendTimeout,
                400..=499 | 501 => Termination::BadRequest,
                _ => Termination::Local,
            });
        }
        match status {
            400 => self.stats.status_400 += 1,
            404 => self.stats.status_404 += 1,
            502 => self.stats.status_502 += 1,
            503 => self.stats.status_503 += 1,
            504 => self.stats.status_504 += 1,
            _ => {}
        }
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        info!("{} {status}: {why}", cl.peer);
        if let Phase::Queued { section } = cl.phase {
            self.dispatch.client_gone(section, c);
        }
        let io = cl.io.get_or_insert_with(|| self.pool.get());
        io.drop_spool(&mut self.pool.spool);
        io.to_backend.clear();
        io.to_client.clear();
        io.file = None;
        io.to_client.push_static(local::error_response(status));
        cl.phase = Phase::Local { close: true };
        self.set_deadline(c, self.limits.header_timeout);
        Step::Again
    }

    pub(super) fn step_local(&mut self, c: usize, close: bool) -> Step {
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        let wrote = match cl.flush_out() {
            Ok(n) => n,
            Err(_) => {
                self.close_client(c);
                return Step::Gone;
            }
        };
        if cl.has_output() {
            let more_now = cl.writable;
            if wrote > 0 {
                // A slow reader is fine as long as it keeps reading.
                self.set_deadline(c, self.limits.backend_timeout);
            }
            if more_now {
                // It yielded its turn with the socket still writable: no
                // event will come for it, so come back after the others.
                self.deferred.push(c);
            }
            return Step::Wait;
        }
        if close {
            return self.shut_client(c);
        }
        self.enter_head(c)
    }

    /// Closes the client's write side, then reads until it closes too.
    pub(super) fn shut_client(&mut self, c: usize) -> Step {
        self.close_tally(c, Termination::Ok, false);
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        let _ = cl.sock.shutdown(Shutdown::Write);
        cl.phase = Phase::Lingering;
        if let Some(io) = cl.io.take() {
            self.pool.put(io);
        }
        self.set_deadline(c, LINGER);
        Step::Again
    }

    pub(super) fn step_linger(&mut self, c: usize) -> Step {
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        let mut sink = [0u8; 4096];
        for _ in 0..LINGER_READS {
            if !cl.readable {
                return Step::Wait;
            }
            match (&cl.sock).read(&mut sink) {
                Ok(0) => {
                    self.close_client(c);
                    return Step::Gone;
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    cl.readable = false;
                    return Step::Wait;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close_client(c);
                    return Step::Gone;
                }
            }
        }
        // Still sending: come back after others had their turn.
        self.deferred.push(c);
        Step::Wait
    }

    pub(super) fn close_client(&mut self, c: usize) {
        if let Some(cl) = client_in(&mut self.conns, c) {
            if let (Phase::Queued { .. }, Some(t)) =
                (&cl.phase, cl.io.as_mut().map(|io| &mut io.tally))
            {
                // It left the queue: its whole wait is the log's queue time.
                t.wait = t.start.map(|s| self.now.saturating_duration_since(s));
            }
        }
        match self.conns.get(c).map(|e| &e.conn) {
            Some(Conn::Client(_)) => {}
            Some(Conn::Backend(_)) => {
                debug_assert!(false, "close_client on a backend");
                return;
            }
            None => return,
        }
        self.close_tally(c, Termination::ClientClosed, false);
        let Some(Entry {
            conn: Conn::Client(cl),
            ..
        }) = self.conns.try_remove(c)
        else {
            return;
        };
        self.open_clients -= 1;
        // Bytes no request took (a head never completed, say).
        self.bytes_in += cl.bytes_in;
        self.bytes_out += cl.bytes_out;
        match cl.phase {
            Phase::Queued { section } => {
                self.dispatch.client_gone(section, c);
            }
            Phase::Proxying { backend, section } => {
                // The backend is mid-request for a client that is gone; the
                // only way to resynchronise its stream is to close it.
                if let Some(s) = self.sections.get_mut(section) {
                    s.stats.aborted_client_gone += 1;
                }
                self.close_backend(backend, Some("its client went away mid-request"));
            }
            _ => {}
        }
        if let Some(io) = cl.io {
            self.pool.put(io);
        }
    }

    /// Answers 503 to every request that waited `timeout` for a backend.
    pub(super) fn expire_waiting(&mut self) {
        while let Some(e) = self.dispatch.pop_expired(self.now) {
            let Some(cl) = client_in(&mut self.conns, e.client) else {
                debug_assert!(false, "a closed client was still queued");
                continue;
            };
            debug_assert!(matches!(cl.phase, Phase::Queued { section } if section == e.section));
            if let Some(t) = cl.tally() {
                // The whole wait is the log's queue time.
                t.wait = t.wait.or(Some(e.waited));
            }
            let name = &self.sections[e.section].name;
            let why = format!("no backend of section {name} became free within timeout");
            if let Step::Again = self.fail_request(e.client, 503, &why) {
                self.drive_client(e.client);
            }
        }
    }

    /// Closes the backend of an exchange that timed out; the client gets
    /// `status` if no response had started, else its connection is cut.
    fn abandon_exchange(
        &mut self,
        c: usize,
        backend: usize,
        why: &str,
        termination: Termination,
        status: u16,
        answer: &str,
    ) -> Step {
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        let started = cl.io.as_ref().is_some_and(|io| io.ex.started);
        if let (true, Some(t)) = (started, cl.tally()) {
            t.end_as(termination);
        }
        self.close_backend(backend, Some(why));
        if let Some(cl) = client_in(&mut self.conns, c) {
            cl.phase = Phase::Head; // detached from the closed backend
        }
        if started {
            self.close_client(c);
            Step::Gone
        } else {
            self.fail_request(c, status, answer)
        }
    }

    pub(super) fn client_timeout(&mut self, c: usize) {
        let Some(cl) = client_in(&mut self.conns, c) else {
            return;
        };
        let step = match cl.phase {
            Phase::Head => {
                if cl.io.as_ref().is_some_and(|io| !io.inbuf.is_empty()) {
                    self.fail_request(c, 408, "request head not complete within header_timeout")
                } else {
                    self.close_client(c);
                    Step::Gone
                }
            }
            Phase::Queued { .. } => {
                // `dispatch` keeps a queued request's deadline.
                debug_assert!(false, "a connection timer fired for a queued request");
                Step::Wait
            }
            Phase::Body { .. } => self.fail_request(c, 408, SLOW_BODY),
            Phase::Proxying { backend, section } => {
                let slow_body = cl
                    .io
                    .as_ref()
                    .is_some_and(|io| io.ex.pace.is_waiting() && !io.ex.body_done());
                if slow_body {
                    if let Some(s) = self.sections.get_mut(section) {
                        s.stats.aborted_body_slow += 1;
                    }
                    let why = "its client's request body was too slow";
                    self.abandon_exchange(
                        c,
                        backend,
                        why,
                        Termination::ClientTimeout,
                        408,
                        SLOW_BODY,
                    )
                } else {
                    let why = "no progress within backend_timeout";
                    let answer = "backend sent no response within backend_timeout";
                    self.abandon_exchange(c, backend, why, Termination::BackendTimeout, 504, answer)
                }
            }
            Phase::Local { .. } | Phase::Lingering => {
                // A tally still open here: its response is not all written.
                if let Some(t) = cl.tally() {
                    t.termination = Some(Termination::ClientTimeout);
                }
                self.close_client(c);
                Step::Gone
            }
        };
        if let Step::Again = step {
            self.drive_client(c);
        }
    }
}
