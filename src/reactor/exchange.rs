//! One exchange: a client's request served by one backend connection.
//!
//! Pairing (as `dispatch` decides: an idle backend takes the oldest waiting
//! request), the pump that
//! moves bytes both ways between the two sockets, and how an exchange ends:
//! the backend returns to its section's pool (or is closed if its stream can
//! no longer be trusted), and a failed backend leads to a redeploy, a 502 or
//! a cut client connection (docs/protocol.md#backend-failures).

use std::os::fd::AsRawFd;

use log::{debug, info, warn};

use super::backend::{BackendState, Unpaired};
use super::client::{self, ForwardError, Phase, ReadOutcome, RespState};
use super::filesend::Sent;
use super::splice::{self, Relayed};
use super::{backend_in, client_in, outq, Conn, Entry, Pump, Reactor, Step};
use crate::access_log::Termination;
use crate::dispatch::{after_failure, AfterFailure, Freed, Placed};
use crate::proto::body::{BodyError, BodyScanner};

impl Reactor {
    /// Pairs the client with an idle backend of `section`, or queues it
    /// (`retry`: ahead of new requests, after its backend failed).
    pub(super) fn place(&mut self, c: usize, section: usize, retry: bool) -> Step {
        let placed = match retry {
            true => self.dispatch.retry(section, c, self.now),
            false => self.dispatch.request(section, c, self.now),
        };
        match placed {
            Placed::Paired(b) => self.pair(c, b, section),
            Placed::Queued => {
                if let Some(cl) = client_in(&mut self.conns, c) {
                    cl.phase = Phase::Queued { section };
                }
                // `dispatch` keeps the queue's deadlines.
                self.clear_deadline(c);
            }
        }
        Step::Again
    }

    pub(super) fn pair(&mut self, c: usize, b: usize, section: usize) {
        let mut id = None;
        if let Some(be) = backend_in(&mut self.conns, b) {
            be.state = BackendState::Busy { client: c };
            id = be.id;
        }
        self.tally_paired(c, section, id);
        if let Some(cl) = client_in(&mut self.conns, c) {
            cl.phase = Phase::Proxying {
                section,
                backend: b,
            };
        }
        self.set_deadline(c, self.limits.backend_timeout);
    }

    pub(super) fn drive_backend(&mut self, b: usize) {
        let Some(be) = backend_in(&mut self.conns, b) else {
            return;
        };
        let section = be.section;
        match be.read_unpaired(self.sections[section].cfg.key.as_bytes()) {
            Unpaired::Wait => {}
            Unpaired::Joined => {
                self.stats.backends_joined += 1;
                self.sections[section].stats.backends_joined += 1;
                let (id, peer) = (be.label().to_string(), be.peer);
                info!(
                    "backend {id} joined section {} from {peer}",
                    self.sections[section].name
                );
                self.clear_deadline(b);
                self.backend_ready(b);
            }
            Unpaired::Refused(why) => {
                self.stats.handshakes_refused += 1;
                self.sections[section].stats.handshakes_refused += 1;
                let peer = be.peer;
                info!(
                    "refused a backend handshake from {peer} for section {}: {why}",
                    self.sections[section].name
                );
                self.close_backend(b, None);
            }
            Unpaired::Close(why) => self.close_backend(b, Some(why)),
        }
    }

    /// The backend is free: it takes the oldest waiting request, or joins
    /// the idle pool.
    pub(super) fn backend_ready(&mut self, b: usize) {
        let Some(be) = backend_in(&mut self.conns, b) else {
            return;
        };
        be.state = BackendState::Idle;
        let section = be.section;
        // A backend that closed (or sent bytes) after its response must not
        // be handed the next request.
        if be.readable {
            if let Unpaired::Close(why) = be.read_unpaired(b"") {
                self.close_backend(b, Some(why));
                return;
            }
        }
        loop {
            match self.dispatch.backend_free(section, b, self.now) {
                Freed::Paired(c) if client_in(&mut self.conns, c).is_none() => {
                    // Closed clients leave their queue (`close_client`).
                    debug_assert!(false, "closed client {c} was still queued");
                    continue;
                }
                Freed::Paired(c) => {
                    self.pair(c, b, section);
                    self.pending.push(c);
                }
                Freed::Idle => {}
                Freed::Close => self.close_backend(b, Some("its section was removed by a reload")),
            }
            return;
        }
    }

    pub(super) fn close_backend(&mut self, b: usize, why: Option<&str>) {
        match self.conns.get(b).map(|e| &e.conn) {
            Some(Conn::Backend(_)) => {}
            Some(Conn::Client(_)) => {
                debug_assert!(false, "close_backend on a client");
                return;
            }
            None => return,
        }
        let Some(Entry {
            conn: Conn::Backend(be),
            ..
        }) = self.conns.try_remove(b)
        else {
            return;
        };
        self.open_backends -= 1;
        if let BackendState::Idle = be.state {
            self.dispatch.backend_gone(be.section, b);
        }
        let section = &mut self.sections[be.section];
        if be.id.is_some() {
            self.stats.backends_left += 1;
            section.stats.backends_left += 1;
            info!(
                "backend {} left section {} ({})",
                be.label(),
                section.name,
                why.unwrap_or("closed by the proxy")
            );
        } else if let Some(why) = why {
            debug!("backend connection from {} {why}", be.peer);
        }
        // Dropping the socket closes it and removes it from the poll set.
    }

    pub(super) fn step_proxy(&mut self, c: usize, section: usize, b: usize) -> Step {
        let pump = self.pump(c, section, b);
        match pump {
            Pump::Progress {
                backend_side,
                paced,
            } => {
                if paced {
                    self.arm_exchange_timer(c, backend_side);
                } else if backend_side {
                    self.set_deadline(c, self.limits.backend_timeout);
                }
                Step::Again
            }
            Pump::Wait { paced } => {
                if paced {
                    self.arm_exchange_timer(c, false);
                }
                Step::Wait
            }
            Pump::Finished => self.finish_exchange(c, b),
            Pump::ClientGone => {
                self.close_client(c);
                Step::Gone
            }
            Pump::BackendFailed(why) => self.backend_failed(c, section, b, &why),
            Pump::BadRequest(status, why) => {
                self.sections[section].stats.aborted_body_error += 1;
                self.close_backend(b, Some("its request was refused mid-way"));
                let io = client_in(&mut self.conns, c).and_then(|cl| cl.io.as_mut());
                let started = io.is_some_and(|io| {
                    if io.ex.started {
                        io.tally.end_as(Termination::BadRequest);
                    }
                    io.ex.started
                });
                if started {
                    self.close_client(c);
                    return Step::Gone;
                }
                self.fail_request(c, status, why)
            }
        }
    }

    /// The exchange's deadline: while the rest of a streamed body is awaited
    /// from the client, the body's pace (`min_body_rate`, `body_timeout`);
    /// otherwise `backend_timeout` from the last byte the backend moved.
    fn arm_exchange_timer(&mut self, c: usize, backend_side: bool) {
        let (now, rule, backend_timeout) =
            (self.now, self.limits.body_pace, self.limits.backend_timeout);
        let Some(io) = client_in(&mut self.conns, c).and_then(|cl| cl.io.as_mut()) else {
            return;
        };
        let ex = &mut io.ex;
        if !ex.body_done() && ex.head_queued && !ex.spool_pending && io.to_backend.is_empty() {
            ex.pace.resume(now);
            if let Some(at) = ex.pace.deadline(&rule) {
                self.set_deadline_at(c, at);
            }
        } else if ex.pace.is_waiting() {
            ex.pace.pause(now);
            self.set_deadline(c, backend_timeout);
        } else if backend_side {
            self.set_deadline(c, backend_timeout);
        }
    }

    /// Moves bytes both ways between a client and its backend.
    pub(super) fn pump(&mut self, c: usize, section: usize, b: usize) -> Pump {
        let cfg = &self.sections[section].cfg;
        let (xff, sizelimit) = (cfg.xforwardedfor, cfg.redeployment_sizelimit);
        let max_body = self.limits.max_body_bytes;
        let Some((ce, be)) = self.conns.get2_mut(c, b) else {
            return Pump::BackendFailed("backend connection vanished".into());
        };
        let (Conn::Client(cl), Conn::Backend(be)) = (&mut ce.conn, &mut be.conn) else {
            return Pump::BackendFailed("backend connection vanished".into());
        };
        let mut read_ahead = false;
        let mut progress = false;
        let mut drained = false;
        let mut filled = false;

        // Client → proxy.
        match cl.read_in(&mut self.pool) {
            ReadOutcome::Data { .. } => read_ahead = true,
            ReadOutcome::Eof => {
                // A client that half-closes after a complete request still
                // gets its response (judged below, once what it sent is
                // forwarded); one that leaves mid-request is gone.
                cl.read_closed = true;
                read_ahead = true;
            }
            ReadOutcome::Error => return Pump::ClientGone,
            ReadOutcome::WouldBlock | ReadOutcome::Full => {}
        }
        let peer = cl.peer;
        let Some(io) = cl.io.as_mut() else {
            return Pump::ClientGone;
        };

        // Proxy → backend.
        match io.forward_request(&peer, xff, sizelimit, max_body) {
            Ok(()) => {}
            Err(ForwardError::Body(e)) => return Pump::BadRequest(400, body_error_text(e)),
            Err(ForwardError::TooLarge) => {
                return Pump::BadRequest(413, "request body larger than max_body_bytes")
            }
            Err(ForwardError::Spool(e)) => {
                return Pump::BackendFailed(format!("spooled request body unreadable: {e}"))
            }
        }
        if cl.read_closed {
            if !io.ex.req_done() && io.ex.fwd == io.inbuf.end {
                return Pump::ClientGone; // the rest of the request will never come
            }
            io.ex.close_after = true;
        }
        if be.writable && !io.to_backend.is_empty() {
            match io.to_backend.flush(&be.sock, io.inbuf.bytes()) {
                Ok((n, state)) => {
                    progress |= n > 0;
                    if let outq::Flushed::Blocked = state {
                        be.writable = false;
                    }
                }
                Err(e) => return Pump::BackendFailed(format!("write failed: {e}")),
            }
        }
        if be.writable && io.to_backend.is_empty() {
            if let Some(send) = io.spool_send.as_mut() {
                let before = send.left;
                match send.send(&be.sock) {
                    Ok(Sent::Done) => {
                        io.spool_send = None;
                        io.ex.spool_pending = false;
                        progress = true;
                    }
                    Ok(Sent::Blocked) => {
                        be.writable = false;
                        progress |= send.left < before;
                    }
                    Ok(Sent::Yielded) => progress = true,
                    Err(e) => return Pump::BackendFailed(format!("write failed: {e}")),
                }
            }
        }
        io.release_forwarded();

        // Backend → pipe → client, for a large body relayed as it is.
        if self.splice && io.to_client.is_empty() && io.ex.resp_parse == io.resp.end {
            if let RespState::Body(BodyScanner::Length(left)) = &mut io.ex.resp {
                if io.pipe.is_none() && *left >= splice::SPLICE_MIN {
                    io.pipe = self.pool.pipe();
                }
                if let Some(pipe) = io.pipe.as_mut() {
                    let before = *left + pipe.held as u64;
                    let backend = splice::End {
                        fd: be.sock.as_raw_fd(),
                        ready: &mut be.readable,
                    };
                    let client = splice::End {
                        fd: cl.sock.as_raw_fd(),
                        ready: &mut cl.writable,
                    };
                    let relayed = splice::relay(pipe, left, backend, client);
                    // What left the pipe went to the client.
                    cl.bytes_out += before - (*left + pipe.held as u64);
                    match relayed {
                        Relayed::Moved(moved) => progress |= moved,
                        Relayed::BackendEof => {
                            io.ex.backend_eof = true;
                            progress = true;
                        }
                        Relayed::BackendError(e) => {
                            return Pump::BackendFailed(format!("read failed: {e}"))
                        }
                        Relayed::ClientGone => return Pump::ClientGone,
                        Relayed::Unsupported => {
                            warn!("splice(2) is not supported here: large bodies are copied");
                            self.splice = false;
                            io.pipe = None;
                        }
                    }
                    if *left == 0 {
                        io.ex.resp = RespState::Done;
                    }
                }
            }
        }

        // Backend → proxy.
        if be.readable && !io.ex.resp_done() && !io.ex.backend_eof && io.resp_room() {
            match client::read_into(&be.sock, &mut io.resp, &mut be.readable) {
                ReadOutcome::Data { short } => {
                    progress = true;
                    drained = short && !be.hup;
                    filled = !short;
                }
                ReadOutcome::WouldBlock => {}
                ReadOutcome::Eof | ReadOutcome::Error => {
                    io.ex.backend_eof = true;
                    progress = true;
                }
                ReadOutcome::Full => {}
            }
        }
        let sec = &self.sections[section];
        let xsendfile = sec
            .sendfile_root
            .as_ref()
            .map(|r| (r, sec.cfg.enable_sendfile_404));
        if let Err(e) = io.relay_response(xsendfile) {
            return Pump::BackendFailed(format!("bad response: {e}"));
        }
        if drained && io.ex.resp_done() {
            // The whole response is in and the socket was drained: the next
            // bytes (or a close) bring a new event; skip the `read` that
            // would only answer `WouldBlock` (see `client::read_into`).
            be.readable = false;
        }
        // Once the backend's response is read and its request sent, the
        // backend is free, even if the client has yet to receive it all.
        if io.ex.resp_done() && io.ex.req_done() && io.to_backend.is_empty() {
            return Pump::Finished;
        }
        // Proxy → client.
        io.more_soon = filled && !io.ex.resp_done();
        match cl.flush_out() {
            Ok(n) => progress |= n > 0,
            Err(_) => return Pump::ClientGone,
        }
        let Some(io) = cl.io.as_mut() else {
            return Pump::ClientGone;
        };
        if io.ex.backend_eof && !io.ex.resp_done() {
            let until_close = matches!(
                io.ex.resp,
                RespState::Body(BodyScanner::UntilClose)
                    | RespState::Discard(BodyScanner::UntilClose)
            );
            if until_close && io.ex.resp_parse == io.resp.end {
                io.ex.resp = RespState::Done;
                progress = true;
            } else if !until_close && !progress && io.to_client.is_empty() {
                // Nothing is waiting for room, yet the response is not complete
                // and no more bytes will come.
                return Pump::BackendFailed("closed before its response was complete".into());
            }
        }
        if cl.corked && !be.readable {
            // Nothing more is waiting in the backend's socket: send what the
            // last MSG_MORE write left in the kernel.
            splice::push(cl.sock.as_raw_fd());
            cl.corked = false;
        }
        let paced = !io.ex.body_done() || io.ex.pace.is_waiting();
        if io.ex.resp_done() && !cl.has_output() {
            return Pump::Finished;
        }
        if progress || read_ahead {
            Pump::Progress {
                backend_side: progress,
                paced,
            }
        } else {
            Pump::Wait { paced }
        }
    }

    pub(super) fn finish_exchange(&mut self, c: usize, b: usize) -> Step {
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        let Some(io) = cl.io.as_mut() else {
            return Step::Gone;
        };
        // The whole request must have reached the backend, or its stream is
        // out of step with ours.
        let req_done = io.ex.req_done() && io.to_backend.is_empty();
        let backend_ok = req_done && !io.ex.backend_extra && !io.ex.backend_eof;
        let backend_why = if io.ex.backend_eof {
            "closed after its response"
        } else if io.ex.backend_extra {
            "sent bytes after its response"
        } else {
            "answered before its request was complete"
        };
        let close = io.ex.close_after || !req_done;
        io.tally.status = io.ex.status;
        io.tally.end_as(Termination::Ok);
        io.finish(&mut self.pool.spool);
        let writing = cl.has_output();
        if cl.corked && !writing {
            // The last write asked the kernel to wait for more, and no write
            // follows to release it.
            splice::push(cl.sock.as_raw_fd());
            cl.corked = false;
        }
        if writing {
            // The backend is done; the client finishes receiving on its own.
            cl.phase = Phase::Local { close };
        }
        self.tally_backend_done(c);
        if let Some(be) = backend_in(&mut self.conns, b) {
            be.served += 1;
        }
        if backend_ok {
            self.backend_ready(b);
        } else {
            self.close_backend(b, Some(backend_why));
        }
        if writing {
            self.set_deadline(c, self.limits.backend_timeout);
            return Step::Again;
        }
        if close {
            return self.shut_client(c);
        }
        self.enter_head(c)
    }

    /// The backend failed mid-exchange: redeploy, 502, or cut the client.
    pub(super) fn backend_failed(&mut self, c: usize, section: usize, b: usize, why: &str) -> Step {
        self.close_backend(b, Some(why));
        let redeployable = self.sections[section].cfg.redeployable;
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        let Some(io) = cl.io.as_mut() else {
            return Step::Gone;
        };
        let redeploys = io.ex.redeploys;
        match after_failure(io.ex.started, redeployable, io.ex.retained, redeploys) {
            AfterFailure::Cut => {
                io.tally.status = io.ex.status;
                io.tally.end_as(Termination::BackendFailed);
                let _ = cl.flush_out();
                self.close_client(c);
                Step::Gone
            }
            AfterFailure::Retry => {
                io.ex.rewind();
                io.to_backend.clear();
                io.spool_send = None;
                io.to_client.clear();
                io.resp.start = 0;
                io.resp.end = 0;
                self.stats.redeploys += 1;
                self.sections[section].stats.redeploys += 1;
                info!(
                    "redeploying a request of section {} to another backend",
                    self.sections[section].name
                );
                self.place(c, section, true)
            }
            AfterFailure::Fail => self.fail_request(c, 502, &format!("backend failed: {why}")),
        }
    }
}

pub(super) fn body_error_text(e: BodyError) -> &'static str {
    match e {
        BodyError::BadChunkSize => "malformed chunk size in the request body",
        BodyError::BadChunkExt => "malformed chunk extension in the request body",
        BodyError::BadChunkEnd => "chunk data not followed by CRLF in the request body",
        BodyError::BadTrailer => "malformed or forbidden trailer field in the request body",
        BodyError::LineTooLong => "chunk extension or trailers too long in the request body",
    }
}
