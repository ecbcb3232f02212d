//! The request a backend handler receives: the head, borrowed from the
//! connection's buffer, and a body reader that decodes Content-Length or
//! chunked framing as the handler reads.
//!
//! The head was parsed and validated by `crate::proto::request::parse`, the
//! same parser the proxy uses: every position and the body's framing come
//! from its `RequestHead`, and nothing here parses the head again except to
//! look headers up for the handler.

use std::io::{self, Read};

use crate::proto::body::ChunkedScanner;
use crate::proto::request::{self, RequestBody, RequestHead};

/// A request as the handler sees it. Nothing here is copied out of the
/// connection's buffer.
pub struct Request<'a> {
    /// `parsed.len` bytes: request line, headers, blank line.
    pub(crate) head: &'a [u8],
    pub(crate) parsed: RequestHead,
    pub(crate) body: BodyReader<'a>,
}

impl<'a> Request<'a> {
    /// The request line and headers exactly as received, blank line included.
    pub fn raw_head(&self) -> &[u8] {
        self.head
    }

    /// Was the body sent chunked (as opposed to with a Content-Length)?
    pub fn is_chunked(&self) -> bool {
        self.parsed.body == RequestBody::Chunked
    }

    /// The Content-Length of the body, if it has one (0 when there is none).
    pub fn content_length(&self) -> Option<u64> {
        match self.parsed.body {
            RequestBody::None => Some(0),
            RequestBody::Length(n) => Some(n),
            RequestBody::Chunked => None,
        }
    }

    pub fn method(&self) -> &str {
        // The parser accepted only token bytes here.
        std::str::from_utf8(&self.head[self.parsed.method.clone()]).unwrap_or("")
    }

    /// The request target as sent (`/path?query`).
    pub fn target(&self) -> &str {
        std::str::from_utf8(&self.head[self.parsed.target.clone()]).unwrap_or("")
    }

    /// The target's path, without the query (of an absolute-form target,
    /// `http://host/path?query`, the `/path` part).
    pub fn path(&self) -> &str {
        match std::str::from_utf8(&self.head[self.parsed.path.clone()]) {
            Ok("") | Err(_) => "/",
            Ok(p) => p,
        }
    }

    pub fn query(&self) -> Option<&str> {
        self.target().split_once('?').map(|(_, q)| q)
    }

    /// HTTP minor version: 0 or 1.
    pub fn minor_version(&self) -> u8 {
        self.parsed.minor
    }

    /// Did the client ask to keep the connection open afterwards (its
    /// version and `Connection` header)? Over a proxy connection this is
    /// the proxy's client speaking, and it is the proxy's to honour.
    pub fn keep_alive(&self) -> bool {
        self.parsed.keep_alive
    }

    /// The first header with this name (ASCII case-insensitive), its value
    /// trimmed of surrounding whitespace.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        request::find_header(self.head, name)
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every header, in order, values trimmed.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        // The head was accepted by `proto::request::parse`, which uses
        // httparse with the same header limit: this cannot fail, and only
        // runs when a handler asks for the whole list.
        let mut raw = [httparse::EMPTY_HEADER; request::MAX_HEADERS];
        let mut req = httparse::Request::new(&mut raw);
        let _ = req.parse(self.head);
        let mut list = Vec::with_capacity(self.parsed.headers);
        list.extend(req.headers.iter().map(|h| (h.name, h.value.trim_ascii())));
        list.into_iter()
    }

    /// The body, decoded. Reading it is optional: whatever the handler leaves
    /// unread is drained afterwards so the connection stays in step.
    pub fn body(&mut self) -> &mut BodyReader<'a> {
        &mut self.body
    }
}

pub(crate) enum BodyFraming {
    Length(u64),
    Chunked(ChunkedScanner),
}

impl BodyFraming {
    /// How to read the body `proto::request::parse` found.
    pub(crate) fn of(body: RequestBody) -> Self {
        match body {
            RequestBody::None => BodyFraming::Length(0),
            RequestBody::Length(n) => BodyFraming::Length(n),
            RequestBody::Chunked => BodyFraming::Chunked(ChunkedScanner::new()),
        }
    }
}

/// Reads a request body from bytes already buffered, then from the socket.
pub struct BodyReader<'a> {
    pub(crate) sock: &'a mut dyn Read,
    /// Read-ahead space: `buf[pos..end]` are bytes not yet consumed.
    pub(crate) buf: &'a mut [u8],
    pub(crate) pos: usize,
    pub(crate) end: usize,
    pub(crate) framing: BodyFraming,
}

impl BodyReader<'_> {
    pub fn is_done(&self) -> bool {
        match &self.framing {
            BodyFraming::Length(left) => *left == 0,
            BodyFraming::Chunked(c) => c.is_done(),
        }
    }

    /// Reads the whole remaining body into `out`.
    pub fn read_all(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        self.read_to_end(out)
    }

    /// Consumes the rest of the body without keeping it.
    pub fn drain(&mut self) -> io::Result<u64> {
        io::copy(self, &mut io::sink())
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        }
        loop {
            match self.sock.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in the middle of a request body",
                    ))
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Read for BodyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.is_done() || out.is_empty() {
                return Ok(0);
            }
            if self.pos == self.end {
                self.fill()?;
            }
            let avail = &self.buf[self.pos..self.end];
            match &mut self.framing {
                BodyFraming::Length(left) => {
                    let n = (*left).min(avail.len() as u64).min(out.len() as u64) as usize;
                    out[..n].copy_from_slice(&avail[..n]);
                    self.pos += n;
                    *left -= n as u64;
                    return Ok(n);
                }
                BodyFraming::Chunked(scanner) => {
                    // A window no longer than `out`, so data never overflows it.
                    let window = &avail[..avail.len().min(out.len())];
                    let (used, data) = scanner
                        .decode(window)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                    self.pos += used;
                    if let Some(r) = data {
                        let n = r.len();
                        out[..n].copy_from_slice(&window[r]);
                        return Ok(n);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the `Request` the connection loop would hand a handler for
    /// `raw` (head and whatever body bytes follow it), and runs `f` on it.
    fn with_request<T>(raw: &str, f: impl FnOnce(&mut Request<'_>) -> T) -> T {
        let parsed = request::parse(raw.as_bytes(), 65536)
            .expect("valid")
            .expect("complete");
        let mut buf = raw.as_bytes().to_vec();
        let (head, rest) = buf.split_at_mut(parsed.len);
        let end = rest.len();
        let mut sock = io::empty();
        let framing = BodyFraming::of(parsed.body);
        let mut req = Request {
            head,
            parsed,
            body: BodyReader {
                sock: &mut sock,
                buf: rest,
                pos: 0,
                end,
                framing,
            },
        };
        f(&mut req)
    }

    #[test]
    fn headers_are_looked_up_in_the_parsed_head() {
        let raw = "GET /a/b?x=1&y HTTP/1.1\r\nHost: app.test\r\nX-Two:  first \r\n\
                   x-two: second\r\nAccept:\r\n\r\n";
        with_request(raw, |req| {
            assert_eq!(req.method(), "GET");
            assert_eq!(req.target(), "/a/b?x=1&y");
            assert_eq!(req.path(), "/a/b");
            assert_eq!(req.query(), Some("x=1&y"));
            assert_eq!(req.minor_version(), 1);
            assert!(req.keep_alive());
            assert_eq!(req.header("x-two"), Some(&b"first"[..]));
            assert_eq!(req.header_str("HOST"), Some("app.test"));
            assert_eq!(req.header("accept"), Some(&b""[..]));
            assert_eq!(req.header("x-none"), None);
            // The request line is never a header, whatever the target holds.
            assert_eq!(req.header("get /a/b?x=1&y http/1.1\r\nhost"), None);
            let all: Vec<(&str, &[u8])> = req.headers().collect();
            assert_eq!(
                all,
                [
                    ("Host", &b"app.test"[..]),
                    ("X-Two", b"first"),
                    ("x-two", b"second"),
                    ("Accept", b""),
                ]
            );
            assert_eq!(req.raw_head(), raw.as_bytes());
        });
    }

    #[test]
    fn blank_lines_before_the_request_line_are_skipped_everywhere() {
        let raw = "\r\n\r\nPOST /p HTTP/1.0\r\nUser-Agent: u\r\nContent-Length: 2\r\n\r\nhi";
        with_request(raw, |req| {
            assert_eq!((req.method(), req.path()), ("POST", "/p"));
            assert_eq!(req.header("user-agent"), Some(&b"u"[..]));
            assert_eq!(req.headers().count(), 2);
            assert!(!req.keep_alive());
            let mut body = Vec::new();
            req.body().read_all(&mut body).unwrap();
            assert_eq!(body, b"hi");
        });
    }

    #[test]
    fn the_path_of_an_absolute_target_is_its_origin_part() {
        with_request(
            "GET http://app.test/x/y?q HTTP/1.1\r\nHost: app.test\r\n\r\n",
            |req| {
                assert_eq!(req.target(), "http://app.test/x/y?q");
                assert_eq!(req.path(), "/x/y");
                assert_eq!(req.query(), Some("q"));
            },
        );
        with_request(
            "GET http://app.test HTTP/1.1\r\nHost: app.test\r\n\r\n",
            |req| {
                assert_eq!(req.path(), "/");
            },
        );
    }

    #[test]
    fn body_framing_is_the_parsers() {
        with_request("GET / HTTP/1.1\r\nHost: a\r\n\r\n", |req| {
            assert_eq!((req.content_length(), req.is_chunked()), (Some(0), false));
            assert!(req.body().is_done());
        });
        with_request(
            "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhelloNEXT",
            |req| {
                assert_eq!((req.content_length(), req.is_chunked()), (Some(5), false));
                let mut body = Vec::new();
                req.body().read_all(&mut body).unwrap();
                assert_eq!(body, b"hello");
                assert_eq!(&req.body.buf[req.body.pos..req.body.end], b"NEXT");
            },
        );
        with_request(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n\
             5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: t\r\n\r\nNEXT",
            |req| {
                assert_eq!((req.content_length(), req.is_chunked()), (None, true));
                let mut body = Vec::new();
                req.body().read_all(&mut body).unwrap();
                assert_eq!(body, b"helloabc");
                assert!(req.body().is_done());
                assert_eq!(&req.body.buf[req.body.pos..req.body.end], b"NEXT");
            },
        );
    }
}
