//! Serving requests on one connection, one at a time: read a head, hand the
//! request to the handler, drain what it left of the body, repeat.
//!
//! The same loop serves a connection to a Swiftiply proxy (after the
//! handshake) and a connection accepted by the plain HTTP server: the
//! protocol after the handshake is ordinary HTTP/1.1.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::request::{is_timeout, BodyFraming, BodyReader, Request};
use super::respond::{Responder, StreamFraming};
use super::Handler;
use crate::proto::local;
use crate::proto::request::{self, RequestError, RequestHead};

/// How long the plain HTTP server keeps an idle keep-alive connection.
const SERVER_IDLE: Duration = Duration::from_secs(60);
/// Largest request head accepted; also the read-ahead buffer size.
const BUF: usize = 64 * 1024;
/// After refusing a malformed request, how long the rest of what the peer
/// sends is read and dropped, so that closing does not reset the connection
/// before the peer has read the answer.
const LINGER: Duration = Duration::from_secs(2);

/// Which side of the protocol this connection is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Dialled in to a proxy: the connection outlives every request, and
    /// Connection headers concern the proxy's client, not us.
    Backend { framing: StreamFraming },
    /// Accepted from an HTTP client: keep-alive rules apply.
    Server,
}

/// Why a serve loop ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The peer closed between requests.
    Closed,
    /// Stop was requested and no request was in flight.
    Stopped,
    /// An HTTP client asked to close (or used HTTP/1.0).
    ClientDone,
}

/// Per-connection state, allocated once per connection.
pub(crate) struct Conn {
    buf: Vec<u8>,
    filled: usize,
    out: Vec<u8>,
    pub served: u64,
}

impl Conn {
    pub fn new() -> Self {
        Conn {
            buf: vec![0; BUF],
            filled: 0,
            out: Vec::with_capacity(BUF / 4),
            served: 0,
        }
    }

    /// Forgets any bytes left from a previous connection.
    pub fn reset(&mut self) {
        self.filled = 0;
        self.served = 0;
    }

    /// Serves requests until the peer closes, `stop` is set while idle, or an
    /// error. The socket should have a short read timeout so `stop` is seen.
    ///
    /// A request head `proto::request::parse` refuses (the proxy's own
    /// parser, so the same requests are refused on both sides) is answered
    /// with the status the proxy would give and `Connection: close`, and the
    /// connection closes: that ends the loop with an `InvalidData` error.
    pub fn serve(
        &mut self,
        sock: &TcpStream,
        handler: &dyn Handler,
        role: Role,
        stop: &AtomicBool,
    ) -> io::Result<End> {
        loop {
            // Plain HTTP clients that go quiet are let go; a proxy connection
            // is meant to sit idle between requests.
            let idle_limit = (role == Role::Server).then_some(SERVER_IDLE);
            let head = match self.read_head(sock, stop, idle_limit)? {
                Some(Ok(head)) => head,
                Some(Err(e)) => return Err(refuse(sock, &e, stop)),
                None => {
                    return Ok(if stop.load(Ordering::Relaxed) {
                        End::Stopped
                    } else {
                        End::Closed
                    })
                }
            };
            let end = self.serve_one(sock, handler, role, head)?;
            self.served += 1;
            if let Some(end) = end {
                return Ok(end);
            }
        }
    }

    /// Reads until a complete head is buffered and parses it. `None`: closed
    /// or stopped while idle; `Some(Err)`: the head is malformed or too large.
    fn read_head(
        &mut self,
        mut sock: &TcpStream,
        stop: &AtomicBool,
        idle_limit: Option<Duration>,
    ) -> io::Result<Option<Result<RequestHead, RequestError>>> {
        let idle_since = Instant::now();
        loop {
            if self.filled > 0 {
                // A full buffer without a complete head is an error here.
                match request::parse_mut(&mut self.buf[..self.filled], BUF) {
                    Ok(Some(head)) => return Ok(Some(Ok(head))),
                    Ok(None) => {}
                    Err(e) => return Ok(Some(Err(e))),
                }
            } else if stop.load(Ordering::Relaxed)
                || idle_limit.is_some_and(|limit| idle_since.elapsed() > limit)
            {
                return Ok(None);
            }
            match sock.read(&mut self.buf[self.filled..]) {
                Ok(0) if self.filled == 0 => return Ok(None),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed in the middle of a request head",
                    ))
                }
                Ok(n) => self.filled += n,
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Serves the request whose head, as `proto::request::parse` found it,
    /// is at the start of `buf`. `Some(end)`: the connection must close now.
    fn serve_one(
        &mut self,
        sock: &TcpStream,
        handler: &dyn Handler,
        role: Role,
        parsed: RequestHead,
    ) -> io::Result<Option<End>> {
        let head_len = parsed.len;
        let is_head = parsed.is_head;
        let close = !parsed.keep_alive;
        let (stream_framing, connection) = match role {
            Role::Backend { framing } => (framing, None),
            Role::Server if close => (StreamFraming::UntilClose, Some("Connection: close\r\n")),
            Role::Server if parsed.minor == 0 => (
                StreamFraming::UntilClose,
                Some("Connection: keep-alive\r\n"),
            ),
            Role::Server => (StreamFraming::Chunked, None),
        };
        let framing = BodyFraming::of(parsed.body);

        let mut reader = sock;
        let mut writer = sock;
        let (head, rest) = self.buf.split_at_mut(head_len);
        let mut request = Request {
            head,
            parsed,
            body: BodyReader {
                sock: &mut reader,
                buf: rest,
                pos: 0,
                end: self.filled - head_len,
                framing,
            },
        };
        let mut responder = Responder::new(
            &mut writer,
            &mut self.out,
            is_head,
            stream_framing,
            connection,
        );
        let mut result = catch_unwind(AssertUnwindSafe(|| {
            handler.handle(&mut request, &mut responder)
        }))
        .unwrap_or_else(|_| Err(io::Error::other("the handler panicked")));
        if result.is_ok() && responder.is_aborted() {
            result = Err(io::Error::other("the response body was abandoned"));
        }
        match result {
            Err(e) if responder.is_started() => {
                return Err(io::Error::other(format!(
                    "handler failed mid-response: {e}"
                )));
            }
            Err(e) => {
                log::warn!("handler failed: {e}; answering 500");
                responder.send(
                    500,
                    &[("Content-Type", "text/plain")],
                    b"Internal Server Error\n",
                )?;
            }
            Ok(()) if !responder.is_started() => {
                responder.send(
                    500,
                    &[("Content-Type", "text/plain")],
                    b"The handler sent no response\n",
                )?;
            }
            Ok(()) => {}
        }
        let closes = responder.closes_connection();
        // Whatever the handler left of the body is read and dropped, so the
        // next request starts where it should.
        request.body.drain()?;
        let (pos, end) = (request.body.pos, request.body.end);
        self.buf.copy_within(head_len + pos..head_len + end, 0);
        self.filled = end - pos;
        if role == Role::Server && (close || closes) {
            return Ok(Some(End::ClientDone));
        }
        Ok(None)
    }
}

/// Answers a request head that cannot be served with the status the proxy
/// gives it, closes our side and drops what the peer still sends (for at
/// most `LINGER`), so that it can read the answer. Returns the error that
/// ends the connection.
fn refuse(mut sock: &TcpStream, e: &RequestError, stop: &AtomicBool) -> io::Error {
    let status = e.status();
    let _ = sock
        .write_all(local::error_response(status))
        .and_then(|()| sock.shutdown(Shutdown::Write));
    let until = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        match sock.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) if is_timeout(&err) || err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed request, answered {status}: {e}"),
    )
}
