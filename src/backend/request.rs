//! The request a backend handler receives: the head, borrowed from the
//! connection's buffer, and a body reader that decodes Content-Length or
//! chunked framing as the handler reads.

use std::io::{self, Read};
use std::ops::Range;

use crate::proto::body::ChunkedScanner;

/// One request header, as offsets into the head.
#[derive(Clone, Debug)]
pub(crate) struct HeaderPos {
    pub name: Range<usize>,
    pub value: Range<usize>,
}

/// A request as the handler sees it. Nothing here is copied out of the
/// connection's buffer.
pub struct Request<'a> {
    pub(crate) head: &'a [u8],
    pub(crate) method: Range<usize>,
    pub(crate) target: Range<usize>,
    pub(crate) minor: u8,
    pub(crate) declared_length: u64,
    pub(crate) headers: &'a [HeaderPos],
    pub(crate) body: BodyReader<'a>,
}

impl<'a> Request<'a> {
    /// The request line and headers exactly as received, blank line included.
    pub fn raw_head(&self) -> &[u8] {
        self.head
    }

    /// Was the body sent chunked (as opposed to with a Content-Length)?
    pub fn is_chunked(&self) -> bool {
        matches!(self.body.framing, BodyFraming::Chunked(_))
    }

    /// The Content-Length of the body, if it has one (0 when there is none).
    pub fn content_length(&self) -> Option<u64> {
        match &self.body.framing {
            BodyFraming::Length(_) => Some(self.declared_length),
            BodyFraming::Chunked(_) => None,
        }
    }

    pub fn method(&self) -> &str {
        // The parser accepted only token bytes here.
        std::str::from_utf8(&self.head[self.method.clone()]).unwrap_or("")
    }

    /// The request target as sent (`/path?query`).
    pub fn target(&self) -> &str {
        std::str::from_utf8(&self.head[self.target.clone()]).unwrap_or("")
    }

    pub fn path(&self) -> &str {
        let t = self.target();
        t.split_once('?').map_or(t, |(p, _)| p)
    }

    pub fn query(&self) -> Option<&str> {
        self.target().split_once('?').map(|(_, q)| q)
    }

    /// HTTP minor version: 0 or 1.
    pub fn minor_version(&self) -> u8 {
        self.minor
    }

    /// The first header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|h| {
            (
                std::str::from_utf8(&self.head[h.name.clone()]).unwrap_or(""),
                &self.head[h.value.clone()],
            )
        })
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
