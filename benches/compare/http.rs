//! A minimal blocking HTTP/1.1 keep-alive client: enough to check that a
//! target answers, to hold idle connections and to drive exact request
//! counts for the cost measurements (where wrk's duration-based runs do
//! not fit). Responses must carry `Content-Length`, as every route of the
//! example application does; the body is read and dropped.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The Host every request carries (Swiftiply's section is the default one,
/// the peers do not look at it).
const HOST: &str = "bench.test";
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    request: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub status: u16,
    pub body_len: usize,
}

impl Client {
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            request: Vec::with_capacity(128),
        })
    }

    /// One `GET path` on this connection, read to the end of its body.
    pub fn get(&mut self, path: &str) -> io::Result<Reply> {
        self.request.clear();
        write!(self.request, "GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n")?;
        self.stream.write_all(&self.request)?;
        self.read_reply()
    }

    /// The bare socket, without the buffers (for holding many idle
    /// connections cheaply).
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    fn read_reply(&mut self) -> io::Result<Reply> {
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("response head too long"));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a complete response head",
                ));
            }
        };
        let (status, length) = parse_head(&self.buf[..head_end])?;
        let mut have = self.buf.len() - head_end;
        if have > length {
            return Err(invalid("more bytes than the response's Content-Length"));
        }
        while have < length {
            let want = (length - have).min(self.buf.capacity().max(16 * 1024));
            self.buf.resize(want, 0);
            let n = self.stream.read(&mut self.buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed after {have} of {length} body bytes"),
                ));
            }
            have += n;
        }
        Ok(Reply {
            status,
            body_len: length,
        })
    }

    /// Appends one read to the buffer; returns its length.
    fn fill(&mut self) -> io::Result<usize> {
        let old = self.buf.len();
        self.buf.resize(old + 16 * 1024, 0);
        let n = match self.stream.read(&mut self.buf[old..]) {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(old);
                return Err(e);
            }
        };
        self.buf.truncate(old + n);
        Ok(n)
    }
}

/// One request on a fresh connection.
pub fn get_once(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Reply> {
    Client::connect(addr, timeout)?.get(path)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Status code and Content-Length of a response head.
fn parse_head(head: &[u8]) -> io::Result<(u16, usize)> {
    let text = std::str::from_utf8(head).map_err(|_| invalid("response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.get(2..5))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| invalid("bad Content-Length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid("chunked responses are not expected here"));
        }
    }
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok((status, 0));
    }
    length
        .map(|l| (status, l))
        .ok_or_else(|| invalid("response without Content-Length"))
}
