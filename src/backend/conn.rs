//! Serving requests on one connection, one at a time: read a head, hand the
//! request to the handler, drain what it left of the body, repeat.
//!
//! The same loop serves a connection to a Swiftiply proxy (after the
//! handshake) and a connection accepted by the plain HTTP server: the
//! protocol after the handshake is ordinary HTTP/1.1.

use std::io::{self, Read};
use std::net::TcpStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::request::{is_timeout, BodyFraming, BodyReader, HeaderPos, Request};
use super::respond::{Responder, StreamFraming};
use super::Handler;
use crate::proto::body::ChunkedScanner;
use crate::proto::{has_token, parse_length};

/// How long the plain HTTP server keeps an idle keep-alive connection.
const SERVER_IDLE: Duration = Duration::from_secs(60);
/// Largest request head accepted; also the read-ahead buffer size.
const BUF: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

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
    headers: Vec<HeaderPos>,
    pub served: u64,
}

impl Conn {
    pub fn new() -> Self {
        Conn {
            buf: vec![0; BUF],
            filled: 0,
            out: Vec::with_capacity(BUF / 4),
            headers: Vec::with_capacity(32),
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
            let Some(head_len) = self.read_head(sock, stop, idle_limit)? else {
                return Ok(if stop.load(Ordering::Relaxed) {
                    End::Stopped
                } else {
                    End::Closed
                });
            };
            let end = self.serve_one(sock, handler, role, head_len)?;
            self.served += 1;
            if let Some(end) = end {
                return Ok(end);
            }
        }
    }

    /// Reads until a complete head is buffered. `None`: closed or stopped
    /// while idle.
    fn read_head(
        &mut self,
        mut sock: &TcpStream,
        stop: &AtomicBool,
        idle_limit: Option<Duration>,
    ) -> io::Result<Option<usize>> {
        let idle_since = Instant::now();
        loop {
            if self.filled > 0 {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&self.buf[..self.filled]) {
                    Ok(httparse::Status::Complete(n)) => return Ok(Some(n)),
                    Ok(httparse::Status::Partial) if self.filled == self.buf.len() => {
                        return Err(invalid("request head larger than 64 KiB"));
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => return Err(invalid(&format!("malformed request head: {e}"))),
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

    /// Serves the request whose head is `buf[..head_len]`. `Some(end)`: the
    /// connection must close now.
    fn serve_one(
        &mut self,
        sock: &TcpStream,
        handler: &dyn Handler,
        role: Role,
        head_len: usize,
    ) -> io::Result<Option<End>> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        // `read_head` parsed these very bytes successfully.
        req.parse(&self.buf[..head_len])
            .map_err(|e| invalid(&e.to_string()))?;
        let base = self.buf.as_ptr() as usize;
        let span = |s: &[u8]| {
            let a = s.as_ptr() as usize - base;
            a..a + s.len()
        };
        let (Some(method_s), Some(target_s), Some(minor)) = (req.method, req.path, req.version)
        else {
            return Err(invalid("malformed request line"));
        };
        let method = span(method_s.as_bytes());
        let target = span(target_s.as_bytes());
        let is_head = method_s == "HEAD";
        self.headers.clear();
        let mut length = None;
        let mut chunked = false;
        let mut close = minor == 0;
        for h in req.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                length = Some(parse_length(h.value).ok_or_else(|| invalid("bad Content-Length"))?);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
                if !chunked {
                    return Err(invalid("unsupported Transfer-Encoding"));
                }
            } else if name.eq_ignore_ascii_case(b"connection") {
                if has_token(h.value, "close") {
                    close = true;
                } else if has_token(h.value, "keep-alive") {
                    close = false;
                }
            }
            self.headers.push(HeaderPos {
                name: span(name),
                value: span(h.value),
            });
        }
        let framing = if chunked {
            BodyFraming::Chunked(ChunkedScanner::new())
        } else {
            BodyFraming::Length(length.unwrap_or(0))
        };
        let (stream_framing, connection) = match role {
            Role::Backend { framing } => (framing, None),
            Role::Server if close => (StreamFraming::UntilClose, Some("Connection: close\r\n")),
            Role::Server if minor == 0 => (
                StreamFraming::UntilClose,
                Some("Connection: keep-alive\r\n"),
            ),
            Role::Server => (StreamFraming::Chunked, None),
        };

        let mut reader = sock;
        let mut writer = sock;
        let (head, rest) = self.buf.split_at_mut(head_len);
        let mut request = Request {
            head,
            method,
            target,
            minor,
            declared_length: length.unwrap_or(0),
            headers: &self.headers,
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

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}
