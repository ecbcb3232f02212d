//! Forwarding one request to an upstream HTTP/1.1 server and relaying its
//! response, over a pool of keep-alive connections.
//!
//! The request goes out as the proxy sent it: the head byte for byte
//! (`Request::raw_head`), a Content-Length body copied exactly, a chunked
//! body decoded and re-chunked (trailers are dropped). The response comes
//! back with its status and headers, minus the hop-by-hop ones (Connection,
//! Keep-Alive, the headers Connection names, and the framing lines, which the
//! `Responder` writes itself): a Content-Length body through
//! `Responder::sized`, a chunked, packet-mode or close-delimited one through
//! `Responder::stream`, so a streamed response stays streamed.
//!
//! Invariants:
//! - Memory per request is one fixed buffer (`BUF`, per thread): no body, in
//!   either direction, is ever held whole. A response head must fit in it.
//! - A pooled connection is in step: it goes back to the pool only after a
//!   complete exchange (whole request sent, whole response read, nothing
//!   after it) where neither side asked to close (`Connection: close`, an
//!   HTTP/1.0 message without keep-alive, a close-delimited body). Anything
//!   else — an error, a timeout, an early answer — closes it.
//! - Nothing is sent to the proxy until the upstream's final response head
//!   has been read, so every failure before that point can still become a
//!   clean `502` (or `504` on a timeout). After it, a failure abandons the
//!   response (`BodyWriter::abort`) and the handler returns an error: the
//!   library closes the proxy connection, which tells the client it was cut.
//! - A pooled connection that turns out dead (it passed the liveness check,
//!   but the write of the request or the read of the first response byte
//!   fails) is retried once on a fresh connection, provided no request body
//!   byte was consumed yet.
//! - `in_flight` counts the requests each upstream holds; a new request goes
//!   to the upstream with the fewest, round-robin among equals. An upstream
//!   that refuses the connection is skipped for the next one in that order.
//! - Upstream sockets are non-blocking and every wait is a `poll` bounded by
//!   the configured timeout; while the request body is being sent, an
//!   upstream that starts answering (readable) stops the sending, and its
//!   early response is relayed (that connection then closes).

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::backend::{BodyWriter, Request, Responder};
use crate::proto::body::ChunkedScanner;
use crate::proto::packet::{PacketDecoder, PacketEvent};
use crate::proto::response::{self, ResponseBody, ResponseHead};
use crate::proto::{has_token, parse_length};

/// The per-thread relay buffer; also the largest response head accepted.
const BUF: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pooled connections idle longer than this are closed instead of reused.
const IDLE_MAX: Duration = Duration::from_secs(60);
/// Header lines `response::parse` accepts (its own limit, not exported).
const MAX_HEADERS: usize = 100;
const TEXT: &[(&str, &str)] = &[("Content-Type", "text/plain")];

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; BUF]);
}

/// One upstream server and its idle connections.
pub struct Upstream {
    pub addr: SocketAddr,
    in_flight: AtomicUsize,
    idle: Mutex<Vec<(TcpStream, Instant)>>,
}

/// The upstreams a bridge forwards to.
pub struct Upstreams {
    list: Vec<Upstream>,
    next: AtomicUsize,
    timeout: Duration,
}

/// Decrements an upstream's in-flight count when the exchange ends.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        InFlight(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How sending the request ended.
enum Sent {
    Complete,
    /// The upstream started answering before the body was all sent.
    Early,
    /// The upstream connection failed.
    Upstream(io::Error),
}

/// Why no response head could be read.
enum HeadError {
    /// Closed or reset before the first byte: a stale pooled connection.
    Nothing(io::Error),
    TimedOut,
    Broken(io::Error),
    Garbage(String),
}

impl Upstreams {
    /// `timeout`: the longest an upstream may keep us waiting for a byte (or
    /// for room to write one) while it holds a request.
    pub fn new(addrs: Vec<SocketAddr>, timeout: Duration) -> Self {
        Upstreams {
            list: addrs
                .into_iter()
                .map(|addr| Upstream {
                    addr,
                    in_flight: AtomicUsize::new(0),
                    idle: Mutex::new(Vec::new()),
                })
                .collect(),
            next: AtomicUsize::new(0),
            timeout,
        }
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.list.iter().map(|u| u.addr).collect()
    }

    /// Requests in flight per upstream, in `addrs` order.
    pub fn loads(&self) -> Vec<usize> {
        self.list
            .iter()
            .map(|u| u.in_flight.load(Ordering::Relaxed))
            .collect()
    }

    /// Upstream indexes, best first: fewest requests in flight, and among
    /// equals a rotation that moves on by one per request.
    fn preference(&self) -> Vec<usize> {
        let n = self.list.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        let mut order: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
        // A stable sort keeps the rotation among equally loaded upstreams.
        order.sort_by_key(|&i| self.list[i].in_flight.load(Ordering::Relaxed));
        order
    }

    /// The bridge's request handler: forwards `req`, relays the answer.
    pub fn handle(&self, req: &mut Request<'_>, res: &mut Responder<'_>) -> io::Result<()> {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => self.exchange(req, res, &mut buf),
            // Never nested in practice; stay correct if it ever is.
            Err(_) => self.exchange(req, res, &mut vec![0; BUF]),
        })
    }

    /// A connection to one of `order`'s upstreams: a pooled one unless
    /// `fresh`, else a new one; the first upstream that accepts wins.
    fn checkout(&self, order: &[usize], fresh: bool) -> io::Result<(usize, TcpStream, bool)> {
        let mut last = None;
        for &i in order {
            let up = &self.list[i];
            if !fresh {
                while let Some((sock, since)) = pop_idle(up) {
                    if since.elapsed() < IDLE_MAX && still_open(&sock) {
                        return Ok((i, sock, true));
                    }
                    log::debug!("upstream {}: dropping a closed idle connection", up.addr);
                }
            }
            match connect(up.addr) {
                Ok(sock) => return Ok((i, sock, false)),
                Err(e) => {
                    log::warn!("upstream {}: cannot connect: {e}", up.addr);
                    last = Some(io::Error::new(e.kind(), format!("{}: {e}", up.addr)));
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no upstream configured")))
    }

    fn exchange(
        &self,
        req: &mut Request<'_>,
        res: &mut Responder<'_>,
        buf: &mut [u8],
    ) -> io::Result<()> {
        let is_head = req.method() == "HEAD";
        let has_body = req.is_chunked() || req.content_length().unwrap_or(0) > 0;
        let expect_continue = has_body
            && req.minor_version() >= 1
            && req
                .header("expect")
                .is_some_and(|v| has_token(v, "100-continue"));
        let request_closes = !req.keep_alive();
        let order = self.preference();
        let mut state = SendState {
            continued: false,
            body_read: 0,
        };
        let mut retried = false;
        loop {
            let (i, sock, reused) = match self.checkout(&order, retried) {
                Ok(c) => c,
                Err(e) => {
                    log::warn!("{} {}: 502, no upstream: {e}", req.method(), req.target());
                    return res.send(
                        502,
                        TEXT,
                        b"Bad Gateway: the application server is not reachable\n",
                    );
                }
            };
            let up = &self.list[i];
            let _load = InFlight::new(&up.in_flight);
            let stale_ok = reused && !retried;
            let sent = self.send_request(&sock, req, res, buf, expect_continue, &mut state)?;
            let complete = match sent {
                Sent::Complete => true,
                Sent::Early => {
                    log::debug!(
                        "upstream {}: answering before it read the whole request body",
                        up.addr
                    );
                    false
                }
                Sent::Upstream(e) if stale_ok && state.body_read == 0 => {
                    log::debug!(
                        "upstream {}: pooled connection failed ({e}); retrying on a new one",
                        up.addr
                    );
                    retried = true;
                    continue;
                }
                Sent::Upstream(e) => {
                    // It may have answered before it went away: look.
                    log::debug!("upstream {}: sending the request failed: {e}", up.addr);
                    false
                }
            };
            let (head, filled) = match read_head(&sock, buf, is_head, self.timeout) {
                Ok(h) => h,
                Err(HeadError::Nothing(e)) if stale_ok && complete && state.body_read == 0 => {
                    log::debug!(
                        "upstream {}: pooled connection closed ({e}); retrying on a new one",
                        up.addr
                    );
                    retried = true;
                    continue;
                }
                Err(err) => {
                    let (status, why, body): (u16, String, &[u8]) = match err {
                        HeadError::TimedOut => (
                            504,
                            format!("no response within {:?}", self.timeout),
                            b"Gateway Timeout: the application server did not answer in time\n",
                        ),
                        HeadError::Nothing(e) | HeadError::Broken(e) => (
                            502,
                            format!("connection failed before a complete response: {e}"),
                            b"Bad Gateway: the application server closed the connection\n",
                        ),
                        HeadError::Garbage(e) => (
                            502,
                            format!("invalid response: {e}"),
                            b"Bad Gateway: the application server sent an invalid response\n",
                        ),
                    };
                    log::warn!(
                        "{} {}: {status}, upstream {}: {why}",
                        req.method(),
                        req.target(),
                        up.addr
                    );
                    return res.send(status, TEXT, body);
                }
            };
            let keep = relay(&sock, &head, filled, buf, res, self.timeout).map_err(|e| {
                log::warn!(
                    "{} {}: upstream {}: response cut: {e}",
                    req.method(),
                    req.target(),
                    up.addr
                );
                e
            })?;
            if keep && complete && !request_closes {
                if let Ok(mut idle) = up.idle.lock() {
                    idle.push((sock, Instant::now()));
                }
            }
            return Ok(());
        }
    }

    /// Writes the head and the body. `Err` only for failures on the proxy
    /// side (reading the body, sending `100 Continue`).
    fn send_request(
        &self,
        sock: &TcpStream,
        req: &mut Request<'_>,
        res: &mut Responder<'_>,
        buf: &mut [u8],
        expect_continue: bool,
        state: &mut SendState,
    ) -> io::Result<Sent> {
        if let Some(end) = push(sock, &[req.raw_head()], self.timeout) {
            return Ok(end);
        }
        let chunked = req.is_chunked();
        if !chunked && req.content_length().unwrap_or(0) == 0 {
            return Ok(Sent::Complete);
        }
        if expect_continue && !state.continued {
            // The client holds the body back until it hears from us.
            res.interim(100)?;
            state.continued = true;
        }
        loop {
            let n = req.body().read(buf)?;
            if n == 0 {
                if chunked {
                    if let Some(end) = push(sock, &[b"0\r\n\r\n"], self.timeout) {
                        return Ok(end);
                    }
                }
                return Ok(Sent::Complete);
            }
            state.body_read += n as u64;
            let end = if chunked {
                let mut size = [0u8; 20];
                let len = {
                    let mut c = io::Cursor::new(&mut size[..]);
                    let _ = write!(c, "{n:x}\r\n");
                    c.position() as usize
                };
                push(sock, &[&size[..len], &buf[..n], b"\r\n"], self.timeout)
            } else {
                push(sock, &[&buf[..n]], self.timeout)
            };
            if let Some(end) = end {
                return Ok(end);
            }
        }
    }
}

struct SendState {
    /// `100 Continue` was sent to the proxy.
    continued: bool,
    /// Request body bytes taken from the proxy so far.
    body_read: u64,
}

fn pop_idle(up: &Upstream) -> Option<(TcpStream, Instant)> {
    up.idle.lock().ok()?.pop()
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let sock = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    sock.set_nodelay(true)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// An idle connection is usable if the upstream neither closed it nor sent
/// anything on it (unsolicited bytes would put it out of step).
fn still_open(sock: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(sock.peek(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Waits until `sock` is ready for `events`; returns the ready events, 0 on
/// timeout.
fn wait(sock: &TcpStream, events: libc::c_short, timeout: Duration) -> io::Result<libc::c_short> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        let mut pfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd for a socket we own, for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            if Instant::now() >= deadline {
                return Ok(0);
            }
            continue;
        }
        return Ok(pfd.revents);
    }
}

/// Writes every part to the upstream. `None`: all written. While waiting for
/// room, an upstream that has something to say ends the sending (`Early`).
fn push(sock: &TcpStream, parts: &[&[u8]], timeout: Duration) -> Option<Sent> {
    let mut w = sock;
    for part in parts {
        let mut off = 0;
        while off < part.len() {
            match w.write(&part[off..]) {
                Ok(0) => return Some(Sent::Upstream(io::ErrorKind::WriteZero.into())),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match wait(sock, libc::POLLOUT | libc::POLLIN, timeout) {
                        Ok(0) => {
                            return Some(Sent::Upstream(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "the upstream stopped reading the request",
                            )))
                        }
                        Ok(ev) if ev & libc::POLLIN != 0 => return Some(Sent::Early),
                        Ok(_) => {} // writable, or an error the next write reports
                        Err(e) => return Some(Sent::Upstream(e)),
                    }
                }
                Err(e) => return Some(Sent::Upstream(e)),
            }
        }
    }
    None
}

/// One read from the upstream into `buf`, waiting at most `timeout` for it.
fn read_some(sock: &TcpStream, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
    let mut r = sock;
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if wait(sock, libc::POLLIN, timeout)? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the upstream was silent for {timeout:?}"),
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads the final response head (interim 1xx responses are read and
/// dropped: the bridge answers `Expect` itself). Returns the head and how
/// many bytes of `buf` are filled (the head, then the start of the body).
fn read_head(
    sock: &TcpStream,
    buf: &mut [u8],
    is_head: bool,
    timeout: Duration,
) -> Result<(ResponseHead, usize), HeadError> {
    let mut filled = 0;
    let mut any = false;
    loop {
        if filled > 0 {
            match response::parse(&buf[..filled], is_head) {
                Ok(Some(h)) if h.is_interim() => {
                    buf.copy_within(h.len..filled, 0);
                    filled -= h.len;
                    continue;
                }
                Ok(Some(h)) => return Ok((h, filled)),
                Ok(None) if filled == buf.len() => {
                    return Err(HeadError::Garbage(format!(
                        "response head larger than {} KiB",
                        buf.len() / 1024
                    )))
                }
                Ok(None) => {}
                Err(e) => return Err(HeadError::Garbage(e.to_string())),
            }
        }
        match read_some(sock, &mut buf[filled..], timeout) {
            Ok(0) if !any => {
                return Err(HeadError::Nothing(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed without answering",
                )))
            }
            Ok(0) => {
                return Err(HeadError::Broken(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed in the middle of the response head",
                )))
            }
            Ok(n) => {
                any = true;
                filled += n;
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(HeadError::TimedOut),
            Err(e) if !any => return Err(HeadError::Nothing(e)),
            Err(e) => return Err(HeadError::Broken(e)),
        }
    }
}

/// The response's status and end-to-end headers, owned (the buffer they came
/// from is reused for the body), and what the head says about the connection.
struct Passed {
    headers: Vec<(String, String)>,
    /// The upstream keeps the connection open after this response.
    keep_alive: bool,
    /// The Content-Length it announced (for HEAD responses, which have none).
    length: Option<u64>,
}

/// The response's end-to-end headers. Framing and `conn_close` come from
/// `response::parse`; the header list itself is read with httparse, as
/// `response::parse` read these very bytes.
fn pass_headers(head_bytes: &[u8], head: &ResponseHead) -> Passed {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut raw);
    // `response::parse` accepted exactly these bytes.
    let _ = resp.parse(head_bytes);
    let connection = || {
        resp.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .map(|h| h.value)
    };
    let keep_alive_token = connection().any(|v| has_token(v, "keep-alive"));
    let mut length = None;
    let mut headers = Vec::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            // Every Content-Length parses and they agree (`response::parse`).
            length = length.or_else(|| parse_length(h.value));
            continue;
        }
        let hop = [
            "connection",
            "keep-alive",
            "transfer-encoding",
            "x-swiftiply-close",
        ]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
            || connection().any(|v| has_token(v, name));
        if !hop {
            headers.push((
                name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            ));
        }
    }
    Passed {
        headers,
        keep_alive: !head.conn_close && (head.minor >= 1 || keep_alive_token),
        length,
    }
}

/// Relays the response whose head is `buf[..head.len]` (and whose body
/// starts in `buf[head.len..filled]`). `Ok(true)`: the upstream connection
/// is in step and may be reused.
fn relay(
    sock: &TcpStream,
    head: &ResponseHead,
    filled: usize,
    buf: &mut [u8],
    res: &mut Responder<'_>,
    timeout: Duration,
) -> io::Result<bool> {
    let passed = pass_headers(&buf[..head.len], head);
    let headers: Vec<(&str, &str)> = passed
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let status = head.status;
    let (mut pos, mut end) = (head.len, filled);
    match head.body {
        ResponseBody::None => {
            if status == 204 || status == 304 {
                res.send(status, &headers, b"")?;
            } else if let Some(n) = passed.length {
                // A HEAD response: the length a GET would have had.
                res.sized(status, &headers, n)?.finish()?;
            } else {
                res.stream(status, &headers)?.finish()?;
            }
        }
        ResponseBody::Length(n) => {
            let mut w = res.sized(status, &headers, n)?;
            let mut left = n;
            loop {
                let take = left.min((end - pos) as u64) as usize;
                if take > 0 {
                    out(&mut w, &buf[pos..pos + take])?;
                    pos += take;
                    left -= take as u64;
                }
                if left == 0 {
                    break;
                }
                (pos, end) = (0, refill(&mut w, sock, buf, timeout)?);
            }
            w.finish()?;
        }
        ResponseBody::Chunked => {
            let mut w = res.stream(status, &headers)?;
            let mut chunks = ChunkedScanner::new();
            loop {
                while pos < end && !chunks.is_done() {
                    match chunks.decode(&buf[pos..end]) {
                        Ok((used, data)) => {
                            if let Some(r) = data {
                                out(&mut w, &buf[pos + r.start..pos + r.end])?;
                            }
                            pos += used;
                        }
                        Err(e) => return Err(cut(&mut w, &format!("bad chunked body: {e}"))),
                    }
                }
                if chunks.is_done() {
                    break;
                }
                (pos, end) = (0, refill(&mut w, sock, buf, timeout)?);
            }
            w.finish()?;
        }
        ResponseBody::Packets => {
            let mut w = res.stream(status, &headers)?;
            let mut packets = PacketDecoder::new();
            loop {
                while pos < end && !packets.is_done() {
                    match packets.decode(&buf[pos..end]) {
                        Ok((used, event)) => {
                            if let Some(PacketEvent::Payload(r)) = event {
                                out(&mut w, &buf[pos + r.start..pos + r.end])?;
                            }
                            pos += used;
                        }
                        Err(e) => return Err(cut(&mut w, &format!("bad packet-mode body: {e}"))),
                    }
                }
                if packets.is_done() {
                    break;
                }
                (pos, end) = (0, refill(&mut w, sock, buf, timeout)?);
            }
            w.finish()?;
        }
        ResponseBody::UntilClose => {
            let mut w = res.stream(status, &headers)?;
            loop {
                if pos < end {
                    out(&mut w, &buf[pos..end])?;
                }
                match read_some(sock, buf, timeout) {
                    Ok(0) => break,
                    Ok(n) => (pos, end) = (0, n),
                    Err(e) => return Err(cut(&mut w, &e.to_string())),
                }
            }
            w.finish()?;
            return Ok(false);
        }
    }
    // Bytes after the response: the upstream is out of step.
    Ok(passed.keep_alive && pos == end)
}

/// Writes body bytes to the proxy; a failure abandons the response.
fn out(w: &mut BodyWriter<'_, '_>, data: &[u8]) -> io::Result<()> {
    w.write_all(data).inspect_err(|_| w.abort())
}

/// Reads more of the body; a closed or failed upstream abandons the response.
fn refill(
    w: &mut BodyWriter<'_, '_>,
    sock: &TcpStream,
    buf: &mut [u8],
    timeout: Duration,
) -> io::Result<usize> {
    match read_some(sock, buf, timeout) {
        Ok(0) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the upstream closed in the middle of the body",
        )),
        Ok(n) => Ok(n),
        Err(e) => Err(e),
    }
    .inspect_err(|_| w.abort())
}

/// Abandons the response and says why.
fn cut(w: &mut BodyWriter<'_, '_>, why: &str) -> io::Error {
    w.abort();
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passed(s: &str) -> Passed {
        let head = response::parse(s.as_bytes(), false).unwrap().unwrap();
        pass_headers(&s.as_bytes()[..head.len], &head)
    }

    #[test]
    fn hop_by_hop_headers_stay_on_the_upstream_hop() {
        let p = passed(
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nConnection: keep-alive, X-Private\r\n\
             Keep-Alive: timeout=5\r\nX-Private: no\r\nContent-Length: 3\r\nSet-Cookie: b=2\r\n\
             X-Swiftiply-Close: 1\r\nDate: today\r\n\r\n",
        );
        let names: Vec<(&str, &str)> = p
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("Date", "today")
            ]
        );
        assert_eq!(p.length, Some(3));
        assert!(p.keep_alive);
    }

    #[test]
    fn which_responses_keep_the_connection() {
        assert!(passed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(
            !passed("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keep_alive
        );
        assert!(!passed("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(
            passed("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")
                .keep_alive
        );
    }

    #[test]
    fn the_least_busy_upstream_first_round_robin_among_equals() {
        let addrs = (1..=3)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let ups = Upstreams::new(addrs, Duration::from_secs(1));
        let firsts: Vec<usize> = (0..6).map(|_| ups.preference()[0]).collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2]);
        let _busy = InFlight::new(&ups.list[1].in_flight);
        let _busier = [
            InFlight::new(&ups.list[0].in_flight),
            InFlight::new(&ups.list[0].in_flight),
        ];
        assert_eq!(ups.loads(), [2, 1, 0]);
        assert_eq!(ups.preference(), [2, 1, 0]);
        drop(_busier);
        assert_eq!(ups.loads(), [0, 1, 0]);
        let order = ups.preference();
        assert_eq!(order[2], 1, "{order:?}");
    }
}
