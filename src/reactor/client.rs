//! The client connection and the exchange it carries.
//!
//! Lifecycle of one client connection (the reactor in `mod.rs` drives it):
//!
//! ```text
//!  Head ──request head──▶ Body ──body whole──▶ Queued ──backend free──▶ Proxying ──response done──▶ Head (keep-alive)
//!   │  \                   │  \               │                        │  \
//!   │   └─health──▶ Local   │   └─no body──▶ Queued   └─timeout──▶ Local(503)  │   └─backend died, redeployable──▶ Queued (front)
//!   │                       └─bad body, too slow──▶ Local(400/408)
//!   └─bad request──▶ Local(4xx) ──▶ Lingering ──▶ closed
//! ```
//!
//! `Body` reads a request body before a backend is taken: into `inbuf` up
//! to `request_buffer` bytes, else into the spool (`spool.rs`); where the
//! spool is off or full, the request is queued at once and the rest of
//! its body streams while `Proxying`, under `min_body_rate` (`pace.rs`).
//!
//! While a request is in flight the client owns every buffer of the exchange
//! (`ClientIo`): `inbuf` holds the request as read from the client (and any
//! pipelined read-ahead), `resp` holds the response as read from the backend.
//! The backend connection is only a socket attached to the exchange, so a
//! backend that closes mid-response loses nothing the client still has to
//! write. An idle keep-alive client holds no `ClientIo`.
//!
//! Invariants:
//! - `ex.req_start <= ex.fwd <= inbuf.end`; while `ex.retained`, inbuf holds the
//!   whole request from `ex.req_start` (so it can be replayed to another backend).
//! - `to_backend` refers only to `inbuf`, `to_client` only to `resp`; a buffer is
//!   compacted only when the queue that refers to it has no buffer ranges.
//! - Nothing is queued for the client before the response head is parsed, and
//!   `ex.started` is set with the first byte queued.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use mio::net::TcpStream;

use super::buffer::Buf;
use super::filesend::{FileSend, MoreFollows, SavedConditions, Sent};
use super::outq::{Flushed, OutQueue};
use super::splice::Pipe;
use super::spool::{Spool, SpoolFile};
use super::tally::Tally;
use super::timer::TimerSlot;
use crate::pace::BodyPace;
use crate::proto::body::{BodyError, BodyScanner, ChunkedScanner};
use crate::proto::line_end;
use crate::proto::packet::{PacketDecoder, PacketEvent};
use crate::proto::request::{RequestBody, RequestHead};
use crate::proto::response::{self, ResponseBody, ResponseError};
use crate::static_files::{self, StaticRoot};

pub enum Phase {
    /// Waiting for (or reading) a request head.
    Head,
    /// Request routed; its body is read (into the buffer or the spool)
    /// before a backend is taken.
    Body { section: usize },
    /// Request parsed, waiting in its section's queue.
    Queued { section: usize },
    /// Paired with a backend.
    Proxying { section: usize, backend: usize },
    /// Writing a response the proxy made itself.
    Local { close: bool },
    /// Error sent and write side shut: reading and discarding until the
    /// client closes, so the error is not lost to a TCP reset.
    Lingering,
}

pub struct ClientConn {
    pub sock: TcpStream,
    pub peer: SocketAddr,
    pub readable: bool,
    pub writable: bool,
    /// The kernel reported the client's FIN or an error: read until EOF
    /// (see `read_into`).
    pub hup: bool,
    /// The last write asked the kernel to wait for more (MSG_MORE): push
    /// it with `splice::push` once nothing more is certain to come.
    pub corked: bool,
    /// The client half-closed after a complete request: read no more.
    pub read_closed: bool,
    /// No request head has arrived on it yet (a graceful stop leaves such
    /// a connection its chance to send one).
    pub fresh: bool,
    pub phase: Phase,
    pub io: Option<Box<ClientIo>>,
    pub timer: TimerSlot,
    /// Bytes read from / written to this client since the last request
    /// it made ended (`tally.rs` counts them to that request).
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl ClientConn {
    pub fn new(sock: TcpStream, peer: SocketAddr) -> Self {
        ClientConn {
            sock,
            peer,
            readable: false,
            writable: false,
            hup: false,
            corked: false,
            read_closed: false,
            fresh: true,
            phase: Phase::Head,
            io: None,
            timer: TimerSlot::default(),
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// The tally of the request in flight (it lives with the buffers, which
    /// a request always has).
    pub fn tally(&mut self) -> Option<&mut Tally> {
        self.io.as_mut().map(|io| &mut io.tally)
    }

    /// Between requests with nothing received or left to send: closing it
    /// loses nothing.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Head)
            && self.io.as_ref().is_none_or(|io| {
                io.inbuf.is_empty()
                    && io.to_client.is_empty()
                    && io.file.is_none()
                    && io.owned.is_empty()
            })
    }

    /// The connection's buffers, taken from the pool on first use.
    pub fn io(&mut self, pool: &mut IoPool) -> &mut ClientIo {
        self.io.get_or_insert_with(|| pool.get())
    }

    /// Gives the buffers back when nothing is buffered in either direction.
    pub fn release_io_if_idle(&mut self, pool: &mut IoPool) {
        if let Some(io) = &self.io {
            if io.inbuf.is_empty()
                && io.to_client.is_empty()
                && io.to_backend.is_empty()
                && io.file.is_none()
                && io.owned.is_empty()
                && io.pipe.as_ref().is_none_or(|p| p.held == 0)
            {
                if let Some(io) = self.io.take() {
                    pool.put(io);
                }
            }
        }
    }

    /// Reads into `inbuf` (compacting it first if that makes room).
    pub fn read_in(&mut self, pool: &mut IoPool) -> ReadOutcome {
        if !self.readable || self.read_closed {
            return ReadOutcome::WouldBlock;
        }
        let io = self.io.get_or_insert_with(|| pool.get());
        if !io.inbuf.has_spare() && io.to_backend.is_empty() {
            let shift = io.inbuf.compact();
            io.ex.req_start = io.ex.req_start.saturating_sub(shift);
            io.ex.fwd = io.ex.fwd.saturating_sub(shift);
            io.ex.scanned = io.ex.scanned.saturating_sub(shift);
        }
        if !io.inbuf.has_spare() {
            return ReadOutcome::Full;
        }
        let before = io.inbuf.end;
        let outcome = read_into(&self.sock, &mut io.inbuf, &mut self.readable);
        self.bytes_in += (io.inbuf.end - before) as u64;
        outcome
    }

    /// Writes what is queued for the client, then any file body with
    /// `sendfile`. Err: the client is gone.
    pub fn flush_out(&mut self) -> io::Result<usize> {
        let mut n = 0;
        // What went out before an error counts too.
        let res = self.write_out(&mut n);
        self.bytes_out += n as u64;
        res.map(|()| n)
    }

    /// Writes what it can, adding each write's bytes to `n` as it goes.
    fn write_out(&mut self, n: &mut usize) -> io::Result<()> {
        let Some(io) = self.io.as_mut() else {
            return Ok(());
        };
        // Good for this write only, whether or not it happens now.
        let more = std::mem::take(&mut io.more_soon);
        if !self.writable {
            return Ok(());
        }
        if let Some(pipe) = io.pipe.as_mut().filter(|p| p.held > 0) {
            match pipe.drain(self.sock.as_raw_fd(), false) {
                Ok(wrote) => *n += wrote,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if pipe.held > 0 {
                self.writable = false;
                return Ok(());
            }
        }
        if !io.to_client.is_empty() {
            let (wrote, state) = if io.file.is_some() || more {
                io.to_client
                    .flush(MoreFollows(&self.sock), io.resp.bytes())?
            } else {
                io.to_client.flush(&self.sock, io.resp.bytes())?
            };
            if wrote > 0 {
                self.corked = more;
            }
            *n += wrote;
            if let Flushed::Blocked = state {
                self.writable = false;
            }
            if !io.to_client.has_buf_segments() {
                // Everything queued from `resp` is written: release it.
                io.resp.start = io.ex.resp_parse;
                if io.resp.is_empty() {
                    io.resp.start = 0;
                    io.resp.end = 0;
                    io.ex.resp_parse = 0;
                }
            } else if let Some(first) = io.to_client.first_buf_start() {
                io.resp.start = first;
            }
        }
        if self.writable && io.to_client.is_empty() && !io.owned.is_empty() {
            match (&self.sock).write(&io.owned[io.owned_sent..]) {
                Ok(wrote) => {
                    *n += wrote;
                    io.owned_sent += wrote;
                    if io.owned_sent == io.owned.len() {
                        io.owned.clear();
                        io.owned_sent = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.writable && io.to_client.is_empty() {
            if let Some(f) = io.file.as_mut() {
                let before = f.left;
                let state = f.send(&self.sock);
                *n += (before - f.left) as usize;
                match state? {
                    Sent::Done => io.file = None,
                    Sent::Blocked => self.writable = false,
                    Sent::Yielded => {}
                }
            }
        }
        Ok(())
    }

    /// Bytes (or a file) still to be written to the client?
    pub fn has_output(&self) -> bool {
        self.io.as_ref().is_some_and(|io| {
            !io.to_client.is_empty()
                || io.file.is_some()
                || !io.owned.is_empty()
                || io.pipe.as_ref().is_some_and(|p| p.held > 0)
        })
    }
}

pub enum ReadOutcome {
    /// Bytes arrived; `short`: fewer than there was room for (see `read_into`).
    Data {
        short: bool,
    },
    Eof,
    WouldBlock,
    /// No room in the buffer: back-pressure until the writer catches up.
    Full,
    Error,
}

/// Reads once into `buf`'s free space; clears `readable` on `WouldBlock`.
///
/// `Data { short: true }` means the read did not fill the buffer, so it
/// drained the socket: Linux's edge-triggered epoll reports every new
/// arrival of data on a TCP socket, so the caller may clear `readable`
/// itself and save the `read` that would only answer `WouldBlock`. Only
/// where a message has just been completed, though (a request head, a
/// whole response): that extra `read` also lets TCP send a window update
/// at once, which matters while a body streams under back-pressure. And
/// never after `hup`: a FIN that arrived before the read was reported only
/// once.
pub fn read_into(mut sock: &TcpStream, buf: &mut Buf, readable: &mut bool) -> ReadOutcome {
    loop {
        let room = buf.spare().len();
        match sock.read(buf.spare()) {
            Ok(0) => return ReadOutcome::Eof,
            Ok(n) => {
                buf.end += n;
                return ReadOutcome::Data { short: n < room };
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *readable = false;
                return ReadOutcome::WouldBlock;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return ReadOutcome::Error,
        }
    }
}

/// Everything a client holds while it has bytes in flight. Pooled.
pub struct ClientIo {
    pub inbuf: Buf,
    pub resp: Buf,
    pub to_backend: OutQueue,
    pub to_client: OutQueue,
    /// A file body to send after `to_client` (static file or X-Sendfile).
    pub file: Option<FileSend>,
    /// The request body, spooled to disk (`spool.rs`), and its sending to
    /// the backend after the head (`to_backend`).
    pub spool: Option<SpoolFile>,
    pub spool_send: Option<FileSend>,
    /// Body bytes spliced from the backend, written before `to_client`
    /// (which was empty when they began: see splice.rs).
    pub pipe: Option<Pipe>,
    /// More of the response is already waiting in the backend's socket and
    /// is about to be written: send with MSG_MORE, so that the kernel
    /// sends full segments (fewer, larger packets for the client to take
    /// in). Only ever set for the write that follows a read which filled
    /// the buffer; never left set while nothing more is certain to come.
    pub more_soon: bool,
    /// A response the proxy made whole in memory (the status page),
    /// written after `to_client`; `owned_sent` bytes of it are written.
    pub owned: Vec<u8>,
    pub owned_sent: usize,
    pub ex: Exchange,
    /// The request's accounting (`tally.rs`).
    pub tally: Tally,
}

/// The request/response pair in flight on a client connection.
#[derive(Default)]
pub struct Exchange {
    /// The parsed head; its ranges are relative to `req_start`.
    pub head: Option<RequestHead>,
    pub req_start: usize,
    /// Next request byte of `inbuf` to queue for the backend.
    pub fwd: usize,
    /// End of the body bytes of `inbuf` the body scanner has validated
    /// (`fwd <= scanned`): only those may be sent on.
    pub scanned: usize,
    pub body: Option<BodyScanner>,
    /// The body is in `ClientIo::spool`, not in `inbuf`.
    pub spooled: bool,
    /// How the body keeps pace (`min_body_rate`, `body_timeout`).
    pub pace: BodyPace,
    pub head_queued: bool,
    /// The whole request is still in `inbuf` and may be replayed.
    pub retained: bool,
    pub resp: RespState,
    /// Next unparsed byte of `resp`.
    pub resp_parse: usize,
    /// Some response byte was queued for the client.
    pub started: bool,
    /// The status the client is sent (0 until the response head is known).
    pub status: u16,
    pub close_after: bool,
    /// The spooled body is still being sent to the backend.
    pub spool_pending: bool,
    /// The proxy answered `Expect: 100-continue` itself.
    pub continued: bool,
    /// The backend sent bytes past the end of its response.
    pub backend_extra: bool,
    pub backend_eof: bool,
    /// The request's conditional headers, kept for an X-Sendfile answer.
    pub saved_conditions: SavedConditions,
    /// Times this request was handed to another backend after one failed.
    pub redeploys: u8,
}

#[derive(Default)]
pub enum RespState {
    #[default]
    Head,
    /// Relayed as framed (Content-Length, chunked, until close).
    Body(BodyScanner),
    /// Chunked, decoded for an HTTP/1.0 client.
    Dechunk(ChunkedScanner),
    Packets {
        decoder: PacketDecoder,
        reframe: bool,
    },
    /// The backend's body is read and dropped: the proxy answered in its
    /// place (X-Sendfile).
    Discard(BodyScanner),
    DiscardPackets(PacketDecoder),
    Done,
}

impl Exchange {
    pub fn req_done(&self) -> bool {
        self.head_queued && self.body_done() && !self.spool_pending
    }

    /// Every body byte has arrived (and been validated).
    pub fn body_done(&self) -> bool {
        self.body.as_ref().is_none_or(BodyScanner::is_done)
    }

    pub fn resp_done(&self) -> bool {
        matches!(self.resp, RespState::Done)
    }

    /// Starts forwarding `head`, which begins at `inbuf` offset `start`.
    pub fn begin(&mut self, head: RequestHead, start: usize, retain: bool) {
        let body = match head.body {
            RequestBody::None => BodyScanner::Length(0),
            RequestBody::Length(n) => BodyScanner::Length(n),
            RequestBody::Chunked => BodyScanner::Chunked(ChunkedScanner::new()),
        };
        *self = Exchange {
            close_after: !head.keep_alive,
            scanned: start + head.len,
            head: Some(head),
            req_start: start,
            fwd: start,
            body: Some(body),
            retained: retain,
            ..Exchange::default()
        };
    }

    /// Rewinds to replay the retained request to another backend.
    pub fn rewind(&mut self) {
        debug_assert!(self.retained && !self.started);
        if let Some(head) = self.head.take() {
            let start = self.req_start;
            let saved = std::mem::take(&mut self.saved_conditions);
            let (redeploys, spooled, continued) = (self.redeploys, self.spooled, self.continued);
            let body = self.body.take();
            self.begin(head, start, true);
            self.saved_conditions = saved;
            self.redeploys = redeploys.saturating_add(1);
            self.continued = continued;
            if spooled {
                // The body is on disk, whole: it is sent again from there.
                self.spooled = true;
                self.body = body;
            }
        }
    }
}

/// Why a request could not be forwarded.
#[derive(Debug)]
pub enum ForwardError {
    Body(BodyError),
    TooLarge,
    /// The spool file could not be read back.
    Spool(std::io::Error),
}

/// Queue segments a request head may need: the request line in up to
/// three, X-Forwarded-For's three, an added Host's three, the blank line.
const HEAD_OUT_SEGMENTS: usize = 10;

impl ClientIo {
    fn new(size: usize) -> Self {
        ClientIo {
            inbuf: Buf::with_capacity(size),
            resp: Buf::with_capacity(size),
            to_backend: OutQueue::default(),
            to_client: OutQueue::default(),
            file: None,
            spool: None,
            spool_send: None,
            pipe: None,
            more_soon: false,
            owned: Vec::new(),
            owned_sent: 0,
            ex: Exchange::default(),
            tally: Tally::new(),
        }
    }

    /// Lets go of a spooled body (its reservation with it).
    pub fn drop_spool(&mut self, spool: &mut Spool) {
        if let Some(f) = self.spool.take() {
            spool.release(f);
        }
        self.spool_send = None;
    }

    /// Validates the body bytes that arrived since the last call; returns
    /// how many it claimed (framing included). Only validated bytes are
    /// ever sent on, and a backend is taken only once those already read
    /// are known good.
    #[inline]
    pub fn scan_body(&mut self, max_body: Option<u64>) -> Result<usize, ForwardError> {
        let ex = &mut self.ex;
        let Some(body) = ex.body.as_mut() else {
            return Ok(0);
        };
        if body.is_done() || ex.scanned >= self.inbuf.end {
            return Ok(0);
        }
        let n = body
            .scan(&self.inbuf.bytes()[ex.scanned..self.inbuf.end])
            .map_err(ForwardError::Body)?;
        ex.scanned += n;
        ex.pace.received(n as u64);
        if max_body.is_some_and(|max| body.chunked_payload() > max) {
            return Err(ForwardError::TooLarge);
        }
        Ok(n)
    }

    /// Moves the validated body bytes in `inbuf` to the spool file, keeping
    /// the head and whatever follows the body (a pipelined request).
    pub fn spool_body(&mut self, spool: &mut Spool) -> std::io::Result<()> {
        let Some(file) = self.spool.as_mut() else {
            return Ok(());
        };
        let Some(head) = self.ex.head.as_ref() else {
            return Ok(());
        };
        let body_start = self.ex.req_start + head.len;
        let body_end = self.ex.scanned;
        if body_end > body_start {
            spool.append(file, &self.inbuf.bytes()[body_start..body_end])?;
            self.inbuf.remove(body_start..body_end);
            self.ex.scanned = body_start;
        }
        self.ex.spooled = true;
        Ok(())
    }

    /// Queues request bytes for the backend: the head (with its rewrites)
    /// once, then as much validated body as has arrived (or the spool).
    pub fn forward_request(
        &mut self,
        peer: &SocketAddr,
        xff: bool,
        sizelimit: usize,
        max_body: Option<u64>,
    ) -> Result<(), ForwardError> {
        if self.ex.head.is_none() {
            return Ok(());
        }
        // A body spooled whole is done; one the spool could only take part
        // of goes on from the buffer.
        self.scan_body(max_body)?;
        let ex = &mut self.ex;
        let Some(head) = ex.head.as_ref() else {
            return Ok(());
        };
        let q = &mut self.to_backend;
        if !ex.head_queued {
            if !q.has_room(HEAD_OUT_SEGMENTS, 64) {
                return Ok(());
            }
            queue_head(
                q,
                self.inbuf.bytes(),
                ex.req_start,
                head,
                xff.then_some(peer),
            );
            ex.fwd = ex.req_start + head.len;
            ex.head_queued = true;
            if ex.spooled {
                if let Some(f) = self.spool.as_ref() {
                    self.spool_send = Some(f.sender().map_err(ForwardError::Spool)?);
                    ex.spool_pending = true;
                }
            }
        }
        if ex.fwd < ex.scanned && !ex.spool_pending && q.has_room(1, 0) {
            q.push_buf(ex.fwd..ex.scanned);
            ex.fwd = ex.scanned;
        }
        // Replayable only while the whole request can stay within the
        // limit (and its buffer); once it reaches it with more to come, it
        // cannot.
        let sizelimit = sizelimit.min(self.inbuf.bytes().len());
        let spooled = self.spool.as_ref().map_or(0, |f| f.len as usize);
        let used = ex.fwd - ex.req_start + spooled;
        let body_done = ex.body_done();
        if ex.retained && (used > sizelimit || (used == sizelimit && !body_done)) {
            ex.retained = false;
        }
        Ok(())
    }

    /// After the backend took bytes: lets `inbuf` drop what is no longer needed.
    pub fn release_forwarded(&mut self) {
        if !self.to_backend.is_empty() {
            if let Some(first) = self.to_backend.first_buf_start() {
                if !self.ex.retained {
                    self.inbuf.start = first;
                }
            }
            return;
        }
        if !self.ex.retained && self.ex.head_queued {
            self.inbuf.start = self.ex.fwd;
        }
        if self.inbuf.is_empty() {
            self.inbuf.start = 0;
            self.inbuf.end = 0;
            self.ex.req_start = 0;
            self.ex.fwd = 0;
            self.ex.scanned = 0;
        }
    }

    /// Parses what the backend sent and queues the client's bytes.
    /// `client_minor` / `keep_alive`: what the client's request said.
    /// `xsendfile`: the section's sendfileroot and `enable_sendfile_404`.
    pub fn relay_response(
        &mut self,
        xsendfile: Option<(&StaticRoot, bool)>,
    ) -> Result<(), ResponseError> {
        let (is_head, minor, keep_alive) = match &self.ex.head {
            Some(h) => (h.is_head, h.minor, h.keep_alive),
            None => return Ok(()),
        };
        loop {
            let ex = &mut self.ex;
            let q = &mut self.to_client;
            let data = &self.resp.bytes()[..self.resp.end];
            match &mut ex.resp {
                RespState::Done => {
                    if ex.resp_parse < self.resp.end {
                        ex.backend_extra = true;
                    }
                    return Ok(());
                }
                RespState::Head => {
                    if !q.has_room(HEAD_SEGMENTS, 0) {
                        return Ok(());
                    }
                    let start = ex.resp_parse;
                    let Some(h) = response::parse(&data[start..], is_head)? else {
                        if start == 0 && !self.resp.has_spare() {
                            return Err(ResponseError::TooLarge);
                        }
                        return Ok(());
                    };
                    ex.resp_parse = start + h.len;
                    if h.is_interim() {
                        // HTTP/1.0 clients must not see 1xx responses, nor
                        // a client the proxy already sent its `100 Continue`
                        // a second one.
                        let repeat = h.status == 100 && ex.continued;
                        if minor == 1 && !repeat {
                            q.push_buf(start..start + h.len);
                            ex.started = true;
                        }
                        continue;
                    }
                    // Keep-alive only if the request will have been read
                    // completely by the end of this response.
                    let body_seen = ex.body.as_ref().is_none_or(BodyScanner::is_done);
                    // A 204/304 has no body to stand in for: passed through.
                    let replaceable = h.status != 204 && h.status != 304;
                    if let (Some((root, send_404)), Some(v), true) =
                        (xsendfile, h.sendfile.clone(), replaceable)
                    {
                        let keep = keep_alive && body_seen && !h.conn_close;
                        let found = root.lookup_sendfile(&data[start + v.start..start + v.end]);
                        if found.is_some() || send_404 {
                            // The proxy answers in the backend's place; the
                            // backend's own body is read and dropped.
                            self.file = match found {
                                Some(file) => {
                                    let answer = FileAnswer {
                                        start,
                                        head: &h,
                                        is_head,
                                        minor,
                                        keep,
                                    };
                                    let (send, status) =
                                        answer.queue(q, data, file, &ex.saved_conditions);
                                    ex.status = status;
                                    send
                                }
                                None => {
                                    ex.status = 404;
                                    queue_not_found(
                                        q,
                                        &data[start + v.start..start + v.end],
                                        is_head,
                                        minor,
                                        keep,
                                    );
                                    None
                                }
                            };
                            ex.started = true;
                            ex.close_after |= !keep;
                            ex.resp = match h.body {
                                ResponseBody::None | ResponseBody::Length(0) => RespState::Done,
                                ResponseBody::Length(n) => {
                                    RespState::Discard(BodyScanner::Length(n))
                                }
                                ResponseBody::Chunked => {
                                    RespState::Discard(BodyScanner::Chunked(ChunkedScanner::new()))
                                }
                                ResponseBody::UntilClose => {
                                    RespState::Discard(BodyScanner::UntilClose)
                                }
                                ResponseBody::Packets => {
                                    RespState::DiscardPackets(PacketDecoder::new())
                                }
                            };
                            continue;
                        }
                    }
                    let plan = response::plan(&h, minor, keep_alive && body_seen);
                    ex.status = h.status;
                    for r in h.kept_ranges(&plan) {
                        q.push_buf(start + r.start..start + r.end);
                    }
                    q.push_static(plan.extra);
                    q.push_static(b"\r\n");
                    ex.started = true;
                    ex.close_after |= plan.close_after;
                    ex.resp = match h.body {
                        ResponseBody::None | ResponseBody::Length(0) => RespState::Done,
                        ResponseBody::Length(n) => RespState::Body(BodyScanner::Length(n)),
                        ResponseBody::Chunked if plan.dechunk => {
                            RespState::Dechunk(ChunkedScanner::new())
                        }
                        ResponseBody::Chunked => {
                            RespState::Body(BodyScanner::Chunked(ChunkedScanner::new()))
                        }
                        ResponseBody::UntilClose => RespState::Body(BodyScanner::UntilClose),
                        ResponseBody::Packets => RespState::Packets {
                            decoder: PacketDecoder::new(),
                            reframe: plan.reframe_chunked,
                        },
                    };
                }
                RespState::Discard(scanner) => {
                    if scanner.is_done() {
                        ex.resp = RespState::Done;
                        continue;
                    }
                    if ex.resp_parse == self.resp.end {
                        return Ok(());
                    }
                    let n = scanner
                        .scan(&data[ex.resp_parse..])
                        .map_err(ResponseError::Body)?;
                    ex.resp_parse += n;
                }
                RespState::DiscardPackets(decoder) => {
                    if decoder.is_done() {
                        ex.resp = RespState::Done;
                        continue;
                    }
                    if ex.resp_parse == self.resp.end {
                        return Ok(());
                    }
                    let (n, _) = decoder
                        .decode(&data[ex.resp_parse..])
                        .map_err(ResponseError::Packet)?;
                    ex.resp_parse += n;
                }
                RespState::Dechunk(scanner) => {
                    if scanner.is_done() {
                        ex.resp = RespState::Done;
                        continue;
                    }
                    if ex.resp_parse == self.resp.end || !q.has_room(1, 0) {
                        return Ok(());
                    }
                    let at = ex.resp_parse;
                    let (n, data) = scanner.decode(&data[at..]).map_err(ResponseError::Body)?;
                    if let Some(r) = data {
                        q.push_buf(at + r.start..at + r.end);
                    }
                    ex.resp_parse += n;
                }
                RespState::Body(scanner) => {
                    if scanner.is_done() {
                        ex.resp = RespState::Done;
                        continue;
                    }
                    if ex.resp_parse == self.resp.end || !q.has_room(1, 0) {
                        return Ok(());
                    }
                    let n = scanner
                        .scan(&data[ex.resp_parse..])
                        .map_err(ResponseError::Body)?;
                    q.push_buf(ex.resp_parse..ex.resp_parse + n);
                    ex.resp_parse += n;
                    if scanner.is_done() {
                        ex.resp = RespState::Done;
                    }
                }
                RespState::Packets { decoder, reframe } => {
                    if ex.resp_parse == self.resp.end || !q.has_room(3, 24) {
                        return Ok(());
                    }
                    let at = ex.resp_parse;
                    let (n, event) = decoder.decode(&data[at..]).map_err(ResponseError::Packet)?;
                    ex.resp_parse += n;
                    match event {
                        Some(PacketEvent::Payload(r)) => {
                            if *reframe {
                                let mut line = [0u8; 24];
                                let mut w = &mut line[..];
                                let _ = write!(w, "{:x}\r\n", r.len());
                                let n = 24 - w.len();
                                q.push_scratch(&line[..n]);
                                q.push_buf(at + r.start..at + r.end);
                                q.push_static(b"\r\n");
                            } else {
                                q.push_buf(at + r.start..at + r.end);
                            }
                        }
                        Some(PacketEvent::End) => {
                            if *reframe {
                                q.push_static(b"0\r\n\r\n");
                            }
                            ex.resp = RespState::Done;
                        }
                        None => {}
                    }
                }
            }
        }
    }

    /// Makes room in `resp` for the next backend read, if it can be done now.
    pub fn resp_room(&mut self) -> bool {
        if self.resp.has_spare() {
            return true;
        }
        if self.to_client.has_buf_segments() {
            return false;
        }
        self.resp.start = self.ex.resp_parse;
        let shift = self.resp.compact();
        self.ex.resp_parse -= shift;
        self.resp.has_spare()
    }

    /// Ends the exchange; the client goes on to its next request, which
    /// starts at `fwd` (any pipelined bytes are already there).
    ///
    /// The backend may be done before the client has received everything:
    /// what is still queued stays in `resp` (marked consumed, so `flush_out`
    /// empties the buffer once it is written).
    pub fn finish(&mut self, spool: &mut Spool) {
        self.drop_spool(spool);
        self.inbuf.start = self.ex.fwd.max(self.inbuf.start);
        if self.inbuf.is_empty() {
            self.inbuf.start = 0;
            self.inbuf.end = 0;
        }
        let pending = self.to_client.has_buf_segments();
        if !pending {
            self.resp.start = 0;
            self.resp.end = 0;
        }
        self.to_backend.clear();
        self.ex = Exchange {
            resp_parse: if pending { self.resp.end } else { 0 },
            ..Exchange::default()
        };
    }
}

/// Queue segments one response head may need: the kept ranges between at
/// most `MAX_SPECIAL_LINES` removed lines, a status line, the proxy's lines
/// and the blank line.
const HEAD_SEGMENTS: usize = response::MAX_SPECIAL_LINES + 5;

/// A file standing in for a backend's response (X-Sendfile): the backend's
/// status and headers, less X-Sendfile and framing, plus the file's own
/// entity headers; the status becomes 206/304/416 when conditions say so.
struct FileAnswer<'h> {
    /// Where the backend's head starts in `resp`.
    start: usize,
    head: &'h response::ResponseHead,
    is_head: bool,
    minor: u8,
    keep: bool,
}

impl FileAnswer<'_> {
    fn queue(
        &self,
        q: &mut OutQueue,
        data: &[u8],
        file: static_files::FoundFile,
        cond: &SavedConditions,
    ) -> (Option<FileSend>, u16) {
        let plan = static_files::plan(&file, &cond.conditions(), self.is_head);
        let mut entity = [0u8; static_files::ENTITY_HEADERS_MAX];
        let entity_len = static_files::write_entity_headers(&file, &plan, &mut entity).unwrap_or(0);
        let mut cplan = response::plan(self.head, self.minor, self.keep);
        cplan.drop_framing = true;
        cplan.drop_sendfile = true;
        let own_status: Option<&'static [u8]> = match plan.status {
            206 => Some(b"HTTP/1.1 206 Partial Content\r\n"),
            304 => Some(b"HTTP/1.1 304 Not Modified\r\n"),
            416 => Some(b"HTTP/1.1 416 Range Not Satisfiable\r\n"),
            _ => None,
        };
        let status_end = line_end(&data[self.start..self.start + self.head.len], 0);
        if let Some(line) = own_status {
            q.push_static(line);
        }
        for r in self.head.kept_ranges(&cplan) {
            let from = if own_status.is_some() {
                r.start.max(status_end)
            } else {
                r.start
            };
            if from < r.end {
                q.push_buf(self.start + from..self.start + r.end);
            }
        }
        q.push_scratch(&entity[..entity_len]);
        q.push_static(connection_line(self.minor, self.keep).as_bytes());
        q.push_static(b"\r\n");
        let status = if own_status.is_some() {
            plan.status
        } else {
            self.head.status
        };
        let send = plan.body.map(|(offset, left)| FileSend {
            file: file.file,
            offset,
            left,
        });
        (send, status)
    }
}

/// The answer to an X-Sendfile naming a missing file, with
/// `enable_sendfile_404`: `404` and `<path> could not be found`.
fn queue_not_found(q: &mut OutQueue, path: &[u8], is_head: bool, minor: u8, keep: bool) {
    let path: &[u8] = if path.len() <= 160 { path } else { b"the file" };
    let mut tail = [0u8; 320];
    let mut w = &mut tail[..];
    let body_len = path.len() + " could not be found\n".len();
    let _ = write!(w, "{body_len}\r\n");
    let _ = w.write_all(connection_line(minor, keep).as_bytes());
    let _ = w.write_all(b"\r\n");
    if !is_head {
        let _ = w.write_all(path);
        let _ = w.write_all(b" could not be found\n");
    }
    let n = 320 - w.len();
    q.push_static(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: ");
    q.push_scratch(&tail[..n]);
}

/// The Connection line a response the proxy makes itself carries.
pub fn connection_line(minor: u8, keep: bool) -> &'static str {
    match (keep, minor) {
        (false, _) => "Connection: close\r\n",
        (true, 0) => "Connection: keep-alive\r\n",
        (true, _) => "",
    }
}

/// Queues the request head with its permitted rewrites: absolute-form
/// target to origin form, the X-Forwarded-For value, and a Host header
/// naming the absolute-form authority when the request had none.
fn queue_head(q: &mut OutQueue, buf: &[u8], o: usize, h: &RequestHead, xff: Option<&SocketAddr>) {
    match &h.absolute_rest {
        Some(rest) => {
            q.push_buf(o + h.method.start..o + h.target.start);
            if rest.is_empty() || buf[o + rest.start] == b'?' {
                q.push_static(b"/");
            }
            q.push_buf(o + rest.start..o + rest.end);
        }
        None => q.push_buf(o + h.method.start..o + h.target.end),
    }
    let tail = o + h.target.end;
    let end = o + h.len;
    // Lines are inserted before the blank line (the parser accepts CRLF
    // line ends only), which goes with the last range when nothing is.
    let blank = end - 2;
    let last = if h.add_host.is_some() { blank } else { end };
    let mut tmp = [0u8; 64];
    let mut w = &mut tmp[..];
    match (xff, h.xff_value_end) {
        (Some(addr), Some(v)) => {
            let _ = write!(w, ", {}", addr.ip());
            let n = 64 - w.len();
            q.push_buf(tail..o + v);
            q.push_scratch(&tmp[..n]);
            q.push_buf(o + v..last);
        }
        (Some(addr), None) => {
            let _ = write!(w, "X-Forwarded-For: {}\r\n", addr.ip());
            let n = 64 - w.len();
            q.push_buf(tail..blank);
            q.push_scratch(&tmp[..n]);
            if last == end {
                q.push_buf(blank..end);
            }
        }
        (None, _) => q.push_buf(tail..last),
    }
    if let Some(a) = &h.add_host {
        q.push_static(b"Host: ");
        q.push_buf(o + a.start..o + a.end);
        q.push_static(b"\r\n");
        q.push_buf(blank..end);
    }
}

/// A pool of `ClientIo`s, each with two buffers of one size.
pub struct IoPool {
    // Boxed on purpose: a `ClientIo` moves between a connection and the pool
    // many times; the box keeps that a pointer move and idle connections small.
    #[allow(clippy::vec_box)]
    free: Vec<Box<ClientIo>>,
    size: usize,
    /// Where request bodies too large for a buffer wait (`spool.rs`).
    pub spool: Spool,
    max_free: usize,
    /// Empty pipes for splicing, kept rather than made for each body.
    pipes: Vec<Pipe>,
}

/// Empty pipes kept for reuse (two descriptors each).
const MAX_FREE_PIPES: usize = 64;

impl IoPool {
    pub fn new(size: usize, max_free: usize, spool: Spool) -> Self {
        IoPool {
            free: Vec::new(),
            size,
            spool,
            max_free,
            pipes: Vec::new(),
        }
    }

    /// Buffers handed out from now on have `size` bytes (a reload changed
    /// `max_header_bytes` or `redeployment_sizelimit`); those in use keep
    /// theirs until they come back.
    pub fn resize(&mut self, size: usize) {
        if size != self.size {
            self.size = size;
            self.free.clear();
        }
    }

    /// An empty pipe for splicing a body, or None if none can be made now.
    pub fn pipe(&mut self) -> Option<Pipe> {
        self.pipes.pop().or_else(|| Pipe::new().ok())
    }

    pub fn get(&mut self) -> Box<ClientIo> {
        self.free
            .pop()
            .unwrap_or_else(|| Box::new(ClientIo::new(self.size)))
    }

    pub fn put(&mut self, mut io: Box<ClientIo>) {
        io.drop_spool(&mut self.spool);
        if let Some(pipe) = io.pipe.take() {
            // A pipe that still holds bytes is dropped (closed) with them.
            if pipe.held == 0 && self.pipes.len() < MAX_FREE_PIPES {
                self.pipes.push(pipe);
            }
        }
        // After a reload changed the size, older buffers are let go.
        if self.free.len() < self.max_free && io.inbuf.bytes().len() == self.size {
            io.inbuf.start = 0;
            io.inbuf.end = 0;
            io.resp.start = 0;
            io.resp.end = 0;
            io.to_backend.clear();
            io.to_client.clear();
            io.file = None;
            io.spool_send = None;
            io.more_soon = false;
            io.owned.clear();
            io.owned_sent = 0;
            io.ex = Exchange::default();
            io.tally.start = None;
            self.free.push(io);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::request;

    fn io_with(req: &[u8]) -> Box<ClientIo> {
        let mut io = IoPool::new(4096, 1, Spool::new(None, 0)).get();
        io.inbuf.spare()[..req.len()].copy_from_slice(req);
        io.inbuf.end = req.len();
        let head = request::parse(io.inbuf.live(), 4096).unwrap().unwrap();
        io.ex.begin(head, 0, true);
        io
    }

    fn queued(q: &mut OutQueue, buf: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        q.flush(&mut out, buf).unwrap();
        out
    }

    #[test]
    fn absolute_form_is_rewritten_and_xff_added() {
        let peer: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let mut io = io_with(b"GET http://a.example:80?x=1 HTTP/1.1\r\nHost: a.example\r\n\r\n");
        io.forward_request(&peer, true, 16384, None).ok().unwrap();
        let out = queued(&mut io.to_backend, io.inbuf.bytes());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /?x=1 HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n"
        );
        assert!(io.ex.req_done());
    }

    #[test]
    fn an_existing_xff_gets_the_address_appended() {
        let peer: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let mut io = io_with(b"POST /p HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET");
        io.forward_request(&peer, true, 16384, None).ok().unwrap();
        let out = queued(&mut io.to_backend, io.inbuf.bytes());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /p HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1, 10.1.2.3\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        );
        assert!(io.ex.req_done());
        assert_eq!(&io.inbuf.bytes()[io.ex.fwd..io.inbuf.end], b"GET");
    }

    fn respond(io: &mut ClientIo, bytes: &[u8]) -> Vec<u8> {
        let end = io.resp.end;
        io.resp.spare()[..bytes.len()].copy_from_slice(bytes);
        io.resp.end = end + bytes.len();
        io.relay_response(None).unwrap();
        queued(&mut io.to_client, io.resp.bytes())
    }

    #[test]
    fn packets_become_chunks_for_http11_at_every_split() {
        let resp = b"HTTP/1.1 200 OK\r\nX-Swiftiply-Close: 1\r\n\r\n00000003abc00000000000000100123456789--------";
        for cut in 0..resp.len() {
            let mut io = io_with(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            let mut out = respond(&mut io, &resp[..cut]);
            out.extend(respond(&mut io, &resp[cut..]));
            let text = String::from_utf8(out).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert_eq!(
                head, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked",
                "cut {cut}"
            );
            assert_eq!(dechunk(body), "abc0123456789", "cut {cut}");
            assert!(io.ex.resp_done());
        }
    }

    /// Decodes a complete chunked body; panics if it is not one.
    fn dechunk(mut body: &str) -> String {
        let mut out = String::new();
        loop {
            let (size, rest) = body.split_once("\r\n").expect("chunk size line");
            let size = usize::from_str_radix(size, 16).expect("hex size");
            if size == 0 {
                assert_eq!(rest, "\r\n", "final CRLF and nothing after");
                return out;
            }
            out.push_str(&rest[..size]);
            assert_eq!(&rest[size..size + 2], "\r\n");
            body = &rest[size + 2..];
        }
    }

    #[test]
    fn packets_are_raw_and_close_delimited_for_http10() {
        let mut io = io_with(b"GET / HTTP/1.0\r\n\r\n");
        let out = respond(
            &mut io,
            b"HTTP/1.1 200 OK\r\nX-Swiftiply-Close: 1\r\n\r\n00000002hi--------",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhi"
        );
        assert!(io.ex.close_after && io.ex.resp_done());
    }

    #[test]
    fn interim_responses_are_relayed_to_http11_only() {
        let mut io = io_with(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        let out = respond(
            &mut io,
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        );
        let mut io = io_with(b"POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
        let out = respond(
            &mut io,
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        );
    }

    #[test]
    fn a_backend_100_continue_is_dropped_when_the_proxy_sent_its_own() {
        let mut io = io_with(
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
        );
        io.ex.continued = true;
        io.scan_body(None).unwrap();
        let out = respond(
            &mut io,
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        );
    }

    #[test]
    fn an_empty_content_length_response_is_complete_at_its_head() {
        let mut io = io_with(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        respond(&mut io, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(io.ex.resp_done());
    }

    #[test]
    fn chunked_responses_are_decoded_for_http10_clients() {
        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        for cut in 0..resp.len() {
            let mut io = io_with(b"GET / HTTP/1.0\r\n\r\n");
            let mut out = respond(&mut io, &resp[..cut]);
            out.extend(respond(&mut io, &resp[cut..]));
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabcde",
                "cut {cut}"
            );
            assert!(io.ex.resp_done() && io.ex.close_after);
        }
    }

    #[test]
    fn an_early_response_to_an_unfinished_upload_closes_the_client() {
        let mut io = io_with(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc");
        let peer: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        io.forward_request(&peer, false, 16384, None).ok().unwrap();
        let out = respond(
            &mut io,
            b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("Connection: close\r\n"));
        assert!(io.ex.close_after);
    }

    #[test]
    fn a_request_that_fills_the_limit_with_more_to_come_is_not_replayable() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut req = head.to_vec();
        req.extend_from_slice(b"400\r\n");
        req.resize(head.len() + 64, b'x');
        let mut io = io_with(&req);
        let peer: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        io.forward_request(&peer, false, req.len(), None)
            .ok()
            .unwrap();
        assert!(
            !io.ex.retained,
            "a full limit with the body unfinished must end retention"
        );
        let mut io = io_with(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        io.forward_request(&peer, false, 27, None).ok().unwrap();
        assert!(
            io.ex.retained,
            "a complete request exactly at the limit stays replayable"
        );
    }

    #[test]
    fn bytes_after_the_response_mark_the_backend_broken() {
        let mut io = io_with(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        respond(
            &mut io,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokJUNK",
        );
        assert!(io.ex.resp_done());
        assert!(io.ex.backend_extra);
    }
}
