//! How a handler answers: a whole body with Content-Length, or a body
//! streamed in pieces.
//!
//! Streamed bodies are framed as the connection needs: HTTP/1.1 chunks by
//! default; packet mode (`X-Swiftiply-Close`, docs/protocol.md#responses-and-how-their-end-is-found) for proxies of
//! the classic kind that do not parse chunked responses; raw bytes ended by
//! closing the connection for an HTTP/1.0 client of the plain HTTP server.

use std::io::{self, Write};

/// How bodies of unknown length are framed on this connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFraming {
    Chunked,
    Packets,
    UntilClose,
}

/// Bodies up to this size are copied next to the head and sent with one
/// write; larger ones are written straight from the handler's slice.
const COALESCE: usize = 16 * 1024;
/// Largest payload of one packet ("%08d").
const MAX_PACKET: usize = 99_999_999;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Fresh,
    Streaming,
    Done,
}

/// Answers one request. Exactly one of `send` or `stream` must be called.
pub struct Responder<'a> {
    pub(crate) sock: &'a mut dyn Write,
    pub(crate) out: &'a mut Vec<u8>,
    pub(crate) is_head: bool,
    pub(crate) framing: StreamFraming,
    /// A `Connection` line the plain HTTP server adds; none for backends.
    pub(crate) connection: Option<&'static str>,
    state: State,
    streamed: bool,
    /// A body was abandoned mid-way (`BodyWriter::abort`): the connection
    /// cannot carry another response.
    aborted: bool,
}

impl<'a> Responder<'a> {
    pub(crate) fn new(
        sock: &'a mut dyn Write,
        out: &'a mut Vec<u8>,
        is_head: bool,
        framing: StreamFraming,
        connection: Option<&'static str>,
    ) -> Self {
        Responder {
            sock,
            out,
            is_head,
            framing,
            connection,
            state: State::Fresh,
            streamed: false,
            aborted: false,
        }
    }

    /// Sends an interim `1xx` response (say `100 Continue` before reading a
    /// body the client holds back for `Expect: 100-continue`) ahead of the
    /// real one. Only before the response starts, never `101`, and only for
    /// HTTP/1.1 requests (HTTP/1.0 clients do not expect interim responses).
    pub fn interim(&mut self, status: u16) -> io::Result<()> {
        if self.state != State::Fresh {
            return Err(io::Error::other(
                "an interim response must come before the response",
            ));
        }
        if !(100..200).contains(&status) || status == 101 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{status} is not an interim status"),
            ));
        }
        self.out.clear();
        let _ = write!(self.out, "HTTP/1.1 {status} {}\r\n\r\n", reason(status));
        self.sock.write_all(self.out)?;
        self.out.clear();
        Ok(())
    }

    /// A body was abandoned with `BodyWriter::abort`.
    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted
    }

    /// Has a response been started?
    pub fn is_started(&self) -> bool {
        self.state != State::Fresh
    }

    /// The body was delimited by closing the connection, which must now close.
    pub(crate) fn closes_connection(&self) -> bool {
        self.state != State::Fresh && self.framing == StreamFraming::UntilClose && self.streamed
    }

    /// Sends a complete response with a Content-Length body.
    pub fn send(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
        self.begin(status, headers)?;
        let bodyless = no_body(status);
        if !bodyless {
            let _ = write!(self.out, "Content-Length: {}\r\n", body.len());
        }
        self.out.extend_from_slice(b"\r\n");
        let send_body = !bodyless && !self.is_head;
        if send_body && body.len() <= COALESCE {
            self.out.extend_from_slice(body);
            self.sock.write_all(self.out)?;
        } else {
            self.sock.write_all(self.out)?;
            if send_body {
                self.sock.write_all(body)?;
            }
        }
        self.out.clear();
        self.state = State::Done;
        Ok(())
    }

    /// Starts a response with a Content-Length body of `len` bytes that the
    /// caller writes in pieces (for relaying a body of known size); writing
    /// more than `len` bytes is an error.
    pub fn sized(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        len: u64,
    ) -> io::Result<BodyWriter<'_, 'a>> {
        self.begin(status, headers)?;
        let bodyless = no_body(status) || self.is_head;
        if !no_body(status) {
            let _ = write!(self.out, "Content-Length: {len}\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        self.sock.write_all(self.out)?;
        self.out.clear();
        self.state = State::Streaming;
        Ok(BodyWriter {
            resp: self,
            bodyless,
            finished: false,
            sized: Some(len),
        })
    }

    /// Starts a response whose body is written in pieces through the
    /// returned writer; `finish` it (dropping it finishes too, ignoring errors).
    pub fn stream(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
    ) -> io::Result<BodyWriter<'_, 'a>> {
        self.streamed = true;
        if self.framing == StreamFraming::UntilClose && self.connection.is_some() {
            // Only closing can end this body: say so, whatever was asked.
            self.connection = Some("Connection: close\r\n");
        }
        self.begin(status, headers)?;
        let bodyless = no_body(status) || self.is_head;
        if !bodyless {
            self.out.extend_from_slice(match self.framing {
                StreamFraming::Chunked => b"Transfer-Encoding: chunked\r\n".as_slice(),
                StreamFraming::Packets => b"X-Swiftiply-Close: 1\r\n",
                StreamFraming::UntilClose => b"",
            });
        }
        self.out.extend_from_slice(b"\r\n");
        self.sock.write_all(self.out)?;
        self.out.clear();
        self.state = State::Streaming;
        Ok(BodyWriter {
            resp: self,
            bodyless,
            finished: false,
            sized: None,
        })
    }

    fn begin(&mut self, status: u16, headers: &[(&str, &str)]) -> io::Result<()> {
        if self.state != State::Fresh {
            return Err(io::Error::other(
                "a response was already sent for this request",
            ));
        }
        self.out.clear();
        let _ = write!(self.out, "HTTP/1.1 {status} {}\r\n", reason(status));
        for (name, value) in headers {
            let framing = name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("transfer-encoding")
                || name.eq_ignore_ascii_case("connection");
            if framing || value.contains(['\r', '\n']) || name.contains(['\r', '\n', ':']) {
                continue; // framing is ours; CR/LF would split the head
            }
            let _ = write!(self.out, "{name}: {value}\r\n");
        }
        if let Some(c) = self.connection {
            self.out.extend_from_slice(c.as_bytes());
        }
        Ok(())
    }
}

/// Writes a streamed body; each `write` sends one chunk or packet at once.
pub struct BodyWriter<'r, 'a> {
    resp: &'r mut Responder<'a>,
    bodyless: bool,
    finished: bool,
    /// Content-Length body: bytes still expected (raw writes, no framing).
    sized: Option<u64>,
}

impl BodyWriter<'_, '_> {
    /// Ends the body (the last chunk or the packet terminator).
    pub fn finish(mut self) -> io::Result<()> {
        self.end()
    }

    /// Abandons the body without ending it: no last chunk, no terminator,
    /// so the receiver can tell the body was cut (a relay uses this when its
    /// source fails mid-body). The connection is closed once the handler
    /// returns, whatever it returns.
    pub fn abort(&mut self) {
        self.finished = true;
        self.resp.aborted = true;
    }

    fn end(&mut self) -> io::Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.resp.state = State::Done;
        if self.bodyless {
            return Ok(());
        }
        if let Some(left) = self.sized {
            return match left {
                0 => Ok(()),
                _ => Err(io::Error::other(format!(
                    "body ended {left} bytes short of its Content-Length"
                ))),
            };
        }
        match self.resp.framing {
            StreamFraming::Chunked => self.resp.sock.write_all(b"0\r\n\r\n"),
            StreamFraming::Packets => self.resp.sock.write_all(b"--------"),
            StreamFraming::UntilClose => Ok(()),
        }
    }
}

impl Write for BodyWriter<'_, '_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.finished {
            return Err(io::Error::other("body already finished"));
        }
        if self.bodyless || data.is_empty() {
            return Ok(data.len());
        }
        if let Some(left) = self.sized.as_mut() {
            if data.len() as u64 > *left {
                return Err(io::Error::other(
                    "more body than the Content-Length announced",
                ));
            }
            *left -= data.len() as u64;
            return self.resp.sock.write_all(data).map(|()| data.len());
        }
        let data = &data[..data.len().min(MAX_PACKET)];
        let out = &mut *self.resp.out;
        out.clear();
        let trailer: &[u8] = match self.resp.framing {
            StreamFraming::Chunked => {
                let _ = write!(out, "{:x}\r\n", data.len());
                b"\r\n"
            }
            StreamFraming::Packets => {
                let _ = write!(out, "{:08}", data.len());
                b""
            }
            StreamFraming::UntilClose => b"",
        };
        if data.len() <= COALESCE {
            out.extend_from_slice(data);
            out.extend_from_slice(trailer);
            self.resp.sock.write_all(out)?;
        } else {
            self.resp.sock.write_all(out)?;
            self.resp.sock.write_all(data)?;
            self.resp.sock.write_all(trailer)?;
        }
        out.clear();
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.resp.sock.flush()
    }
}

impl Drop for BodyWriter<'_, '_> {
    fn drop(&mut self) {
        let _ = self.end();
    }
}

fn no_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// The reason phrase for common status codes.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn respond(framing: StreamFraming, f: impl FnOnce(&mut Responder<'_>)) -> String {
        let mut sock = Vec::new();
        let mut out = Vec::new();
        let mut r = Responder::new(&mut sock, &mut out, false, framing, None);
        f(&mut r);
        String::from_utf8(sock).unwrap()
    }

    #[test]
    fn a_fixed_body_gets_a_content_length_and_our_framing_only() {
        let text = respond(StreamFraming::Chunked, |r| {
            r.send(
                200,
                &[
                    ("Content-Type", "text/plain"),
                    ("Content-Length", "99"),
                    ("X-Bad", "a\r\nb"),
                ],
                b"hi",
            )
            .unwrap()
        });
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
        );
    }

    #[test]
    fn streams_are_chunked_or_packets() {
        let text = respond(StreamFraming::Chunked, |r| {
            let mut w = r.stream(200, &[]).unwrap();
            w.write_all(b"abc").unwrap();
            w.write_all(b"").unwrap();
            w.write_all(&[b'x'; 20]).unwrap();
            w.finish().unwrap();
        });
        assert_eq!(
            text,
            format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n14\r\n{}\r\n0\r\n\r\n", "x".repeat(20))
        );
        let text = respond(StreamFraming::Packets, |r| {
            let mut w = r.stream(200, &[]).unwrap();
            w.write_all(b"abc").unwrap();
            // Dropping the writer finishes the body.
        });
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nX-Swiftiply-Close: 1\r\n\r\n00000003abc--------"
        );
    }

    #[test]
    fn a_sized_body_is_written_raw_and_checked() {
        let text = respond(StreamFraming::Packets, |r| {
            let mut w = r.sized(200, &[], 5).unwrap();
            w.write_all(b"ab").unwrap();
            w.write_all(b"cde").unwrap();
            assert!(w.write_all(b"f").is_err());
            w.finish().unwrap();
        });
        assert_eq!(text, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabcde");
        respond(StreamFraming::Chunked, |r| {
            let w = r.sized(200, &[], 5).unwrap();
            assert!(w.finish().is_err(), "a short body must be reported");
        });
    }

    #[test]
    fn head_and_204_responses_have_no_body() {
        let mut sock = Vec::new();
        let mut out = Vec::new();
        let mut r = Responder::new(&mut sock, &mut out, true, StreamFraming::Chunked, None);
        r.send(200, &[], b"hello").unwrap();
        assert_eq!(
            String::from_utf8(sock).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        );
        let text = respond(StreamFraming::Chunked, |r| r.send(204, &[], b"").unwrap());
        assert_eq!(text, "HTTP/1.1 204 No Content\r\n\r\n");
    }

    #[test]
    fn interim_responses_come_first_and_only_1xx() {
        let text = respond(StreamFraming::Chunked, |r| {
            r.interim(100).unwrap();
            assert!(r.interim(101).is_err());
            assert!(r.interim(200).is_err());
            assert!(!r.is_started());
            r.send(200, &[], b"ok").unwrap();
            assert!(r.interim(100).is_err());
        });
        assert_eq!(
            text,
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        );
    }

    #[test]
    fn an_aborted_body_is_left_unterminated() {
        let text = respond(StreamFraming::Chunked, |r| {
            let mut w = r.stream(200, &[]).unwrap();
            w.write_all(b"abc").unwrap();
            w.abort();
            assert!(w.write_all(b"more").is_err());
            drop(w);
            assert!(r.is_aborted());
        });
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        );
    }

    #[test]
    fn only_one_response_per_request() {
        respond(StreamFraming::Chunked, |r| {
            r.send(200, &[], b"").unwrap();
            assert!(r.send(200, &[], b"").is_err());
        });
    }
}
