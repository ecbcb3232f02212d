//! Client request heads: parse, validate strictly, and extract the facts the
//! proxy needs (routing host, body framing, keep-alive, rewrite positions).
//!
//! Validation is strict on purpose: every ambiguity that lets a front end and
//! a back end disagree about where a request ends (request smuggling) is
//! refused with a 4xx/501 and the connection is closed. Positions are returned
//! as offsets into the parsed buffer, so nothing is copied.

use std::fmt;
use std::ops::Range;

use super::{has_token, offset_in, parse_length};

/// Most headers a request may carry (431 beyond).
pub const MAX_HEADERS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    None,
    Length(u64),
    Chunked,
}

/// Facts about one parsed request head. Ranges index the parsed buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of request line, headers and the blank line.
    pub len: usize,
    pub method: Range<usize>,
    pub is_head: bool,
    /// HTTP minor version: 0 or 1.
    pub minor: u8,
    /// Did the client ask to keep the connection open afterwards?
    pub keep_alive: bool,
    pub body: RequestBody,
    /// Routing host: the absolute-form authority or the Host header, port
    /// stripped. Not lower-cased.
    pub host: Option<Range<usize>>,
    /// The request target as sent.
    pub target: Range<usize>,
    /// For an absolute-form target, the part that becomes the origin-form
    /// target (may be empty, meaning `/`, or start with `?`).
    pub absolute_rest: Option<Range<usize>>,
    /// Path of the target without query (for the health check URI).
    pub path: Range<usize>,
    /// For an absolute-form target on a request without a Host header
    /// (HTTP/1.0): the authority, sent to the backend as `Host`.
    pub add_host: Option<Range<usize>>,
    /// End of the last X-Forwarded-For value, where `, <addr>` is appended.
    pub xff_value_end: Option<usize>,
    /// How many header lines it has (at most `MAX_HEADERS`).
    pub headers: usize,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// 400 with the reason.
    Bad(&'static str),
    /// 501 with the reason.
    NotImplemented(&'static str),
    /// 414: the request line alone is over the header limit.
    UriTooLong,
    /// 431: request head over the limit, or too many headers.
    HeaderTooLarge,
}

impl RequestError {
    pub fn status(&self) -> u16 {
        match self {
            RequestError::Bad(_) => 400,
            RequestError::NotImplemented(_) => 501,
            RequestError::UriTooLong => 414,
            RequestError::HeaderTooLarge => 431,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Bad(why) | RequestError::NotImplemented(why) => f.write_str(why),
            RequestError::UriTooLong => f.write_str("request line longer than max_header_bytes"),
            RequestError::HeaderTooLarge => {
                f.write_str("request head longer than max_header_bytes or over 100 headers")
            }
        }
    }
}

/// Parse the request head at the start of `buf`, first rewriting a higher
/// HTTP/1 minor version (`HTTP/1.2`) to `HTTP/1.1` in place: RFC 9110 §2.5
/// has a recipient treat it as the highest minor version it implements,
/// and a proxy forwards its own version.
#[inline]
pub fn parse_mut(buf: &mut [u8], max_head: usize) -> Result<Option<RequestHead>, RequestError> {
    match parse(buf, max_head) {
        Err(RequestError::Bad(VERSION_ERROR)) if lower_minor_version(buf) => parse(buf, max_head),
        other => other,
    }
}

const VERSION_ERROR: &str = "not an HTTP/1.x request";

/// Rewrites `HTTP/1.<2-9>` after the request line's second space to
/// `HTTP/1.1`; says whether it did.
fn lower_minor_version(buf: &mut [u8]) -> bool {
    let skip = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let line = &buf[skip..];
    let line_len = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    let mut spaces = line[..line_len]
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b' ')
        .map(|(i, _)| i);
    let Some(at) = spaces.nth(1).map(|sp| skip + sp + 1) else {
        return false;
    };
    let digit = at + 7;
    match buf.get(at..digit + 1) {
        Some([b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'2'..=b'9']) => {
            buf[digit] = b'1';
            true
        }
        _ => false,
    }
}

/// Parse the request head at the start of `buf`.
///
/// `Ok(None)`: incomplete, read more (unless `buf` already holds `max_head`
/// bytes, which is reported as an error here).
pub fn parse(buf: &[u8], max_head: usize) -> Result<Option<RequestHead>, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= max_head => {
            return Err(over_limit(buf, max_head))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(map_parse_error(e)),
    };
    if len > max_head {
        return Err(over_limit(buf, max_head));
    }
    // httparse fills all three whenever it reports a complete head.
    let (Some(method_s), Some(target_s), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(RequestError::Bad("malformed request line"));
    };
    let m0 = offset_in(buf, method_s.as_bytes());
    let method = m0..m0 + method_s.len();
    let t0 = offset_in(buf, target_s.as_bytes());
    let target = t0..t0 + target_s.len();
    if method_s == "CONNECT" {
        return Err(RequestError::NotImplemented("CONNECT is not supported"));
    }
    check_target(method_s.as_bytes(), target_s.as_bytes())?;
    // httparse takes a bare LF for a line end; a proxy must not send one
    // on (RFC 9112 §2.2), as a backend may end lines elsewhere. Every line
    // end is checked: the request line's (one space, then 8 bytes of
    // version), each field line's before the next one's name (below), and
    // the last two (the last line's and the blank line's).
    if buf.get(target.end + 9) != Some(&b'\r') || !buf[..len].ends_with(b"\r\n\r\n") {
        return Err(BARE_LF);
    }

    let mut host_hdr: Option<&[u8]> = None;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut te_seen = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut xff_value_end = None;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        // The line before this one ends just before its name.
        let n0 = offset_in(buf, name);
        if buf[n0 - 2] != b'\r' {
            return Err(BARE_LF);
        }
        if name.eq_ignore_ascii_case(b"host") {
            if host_hdr.is_some() {
                return Err(RequestError::Bad("more than one Host header"));
            }
            host_hdr = Some(value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n =
                parse_length(value).ok_or(RequestError::Bad("Content-Length is not a number"))?;
            if length.is_some_and(|old| old != n) {
                return Err(RequestError::Bad("Content-Length headers disagree"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if te_seen || !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(RequestError::NotImplemented(
                    "Transfer-Encoding other than a single \"chunked\"",
                ));
            }
            te_seen = true;
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            conn_close |= has_token(value, "close");
            conn_keep_alive |= has_token(value, "keep-alive");
        } else if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            xff_value_end = Some(offset_in(buf, value) + value.trim_ascii_end().len());
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
    }
    if chunked && minor == 0 {
        return Err(RequestError::Bad(
            "Transfer-Encoding in an HTTP/1.0 request",
        ));
    }
    if chunked && length.is_some() {
        return Err(RequestError::Bad(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    let body = match (chunked, length) {
        (true, _) => RequestBody::Chunked,
        (false, Some(0)) | (false, None) => RequestBody::None,
        (false, Some(n)) => RequestBody::Length(n),
    };

    let (absolute_rest, authority) = split_absolute(buf, &target);
    // The Host header is checked even when an absolute-form authority is
    // the routing host: the backend still receives it.
    let header_host = host_hdr
        .map(|v| {
            let v0 = offset_in(buf, v);
            let trimmed = v.trim_ascii();
            let start = v0 + (trimmed.as_ptr() as usize - v.as_ptr() as usize);
            strip_port(buf, start..start + trimmed.len())
        })
        .transpose()?;
    let host = match &authority {
        Some(a) => {
            let host = strip_port(buf, a.clone())?;
            if host.is_empty() {
                return Err(RequestError::Bad("absolute-form target without a host"));
            }
            if let (Some(v), Some(h)) = (host_hdr, header_host.as_ref()) {
                // RFC 9112 §3.2.2: the target's authority is the one the
                // backend must see. Refused, as HAProxy does, rather than
                // rewritten: a client sending two names is up to something.
                let scheme_port: &[u8] = if buf[target.start + 4].eq_ignore_ascii_case(&b's') {
                    b"443"
                } else {
                    b"80"
                };
                let same_host = buf[host.clone()].eq_ignore_ascii_case(&buf[h.clone()]);
                let a_port = port_part(&buf[a.clone()], host.len()).unwrap_or(scheme_port);
                let v_trim = v.trim_ascii();
                let h_port = port_part(v_trim, h.len()).unwrap_or(scheme_port);
                if !same_host || a_port != h_port {
                    return Err(RequestError::Bad(
                        "Host header does not name the request target's authority",
                    ));
                }
            }
            Some(host)
        }
        None => header_host,
    };
    if minor == 1 && host_hdr.is_none() {
        return Err(RequestError::Bad("HTTP/1.1 request without a Host header"));
    }
    let origin = absolute_rest.clone().unwrap_or(target.clone());
    let path_len = buf[origin.clone()]
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(origin.len());
    Ok(Some(RequestHead {
        len,
        is_head: method_s == "HEAD",
        method,
        minor,
        keep_alive: if minor == 1 {
            !conn_close
        } else {
            conn_keep_alive && !conn_close
        },
        body,
        host: host.filter(|h| !h.is_empty()),
        target,
        absolute_rest,
        path: origin.start..origin.start + path_len,
        add_host: authority.filter(|_| host_hdr.is_none()),
        xff_value_end,
        headers: req.headers.len(),
        expect_continue,
    }))
}

const BARE_LF: RequestError = RequestError::Bad("line not ended by CRLF");

/// The port of `host[:port]` (`host_len` bytes of host): `None` when absent
/// or empty.
fn port_part(value: &[u8], host_len: usize) -> Option<&[u8]> {
    match value.get(host_len..) {
        Some([b':', port @ ..]) if !port.is_empty() => Some(port),
        _ => None,
    }
}

/// RFC 9112 §3.2: origin-form (`/…`), absolute-form (`http://…`,
/// `https://…`), or `*` for OPTIONS (authority-form is CONNECT's, refused
/// earlier). A fragment is never part of a request target.
fn check_target(method: &[u8], t: &[u8]) -> Result<(), RequestError> {
    let form_ok = match t.first() {
        Some(b'/') => true,
        Some(b'*') => t.len() == 1 && method == b"OPTIONS",
        _ => {
            (t.len() > 7 && t[..7].eq_ignore_ascii_case(b"http://"))
                || (t.len() > 8 && t[..8].eq_ignore_ascii_case(b"https://"))
        }
    };
    if !form_ok {
        return Err(RequestError::Bad(
            "request target is not origin-form or absolute-form",
        ));
    }
    // One pass for both: a fragment, and a `%` not followed by two hex
    // digits (RFC 3986 §2.1), which backends decode each their own way.
    let mut rest = t;
    while let Some(i) = rest.iter().position(|&b| b == b'%' || b == b'#') {
        if rest[i] == b'#' {
            return Err(RequestError::Bad("request target contains a fragment"));
        }
        match rest.get(i + 1..i + 3) {
            Some([a, b]) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => {}
            _ => {
                return Err(RequestError::Bad(
                    "invalid percent-encoding in the request target",
                ))
            }
        }
        rest = &rest[i + 3..];
    }
    Ok(())
}

/// 414 when the request line alone is over the limit, else 431.
fn over_limit(buf: &[u8], max_head: usize) -> RequestError {
    if buf[..buf.len().min(max_head)].contains(&b'\n') {
        RequestError::HeaderTooLarge
    } else {
        RequestError::UriTooLong
    }
}

fn map_parse_error(e: httparse::Error) -> RequestError {
    use httparse::Error as E;
    match e {
        E::TooManyHeaders => RequestError::HeaderTooLarge,
        E::HeaderName => RequestError::Bad(
            "invalid header name (bad byte, whitespace before the colon, or a folded line)",
        ),
        E::HeaderValue => RequestError::Bad("invalid byte in a header value"),
        E::NewLine => RequestError::Bad("invalid line ending"),
        E::Version => RequestError::Bad("not an HTTP/1.x request"),
        E::Token => RequestError::Bad("invalid request method"),
        E::Status => RequestError::Bad("malformed request line"),
    }
}

/// For `http://authority/rest` targets: (rest, authority).
fn split_absolute(
    buf: &[u8],
    target: &Range<usize>,
) -> (Option<Range<usize>>, Option<Range<usize>>) {
    let t = &buf[target.clone()];
    let scheme = if t.len() >= 7 && t[..7].eq_ignore_ascii_case(b"http://") {
        7
    } else if t.len() >= 8 && t[..8].eq_ignore_ascii_case(b"https://") {
        8
    } else {
        return (None, None);
    };
    let auth_len = t[scheme..]
        .iter()
        .position(|&b| b == b'/' || b == b'?' || b == b'#')
        .unwrap_or(t.len() - scheme);
    let a0 = target.start + scheme;
    let rest0 = a0 + auth_len;
    // Drop a fragment: it is never sent on the wire in origin form.
    let rest_end = buf[rest0..target.end]
        .iter()
        .position(|&b| b == b'#')
        .map_or(target.end, |i| rest0 + i);
    (Some(rest0..rest_end), Some(a0..rest0))
}

/// `host[:port]` or `[v6]:port` → the host part. Userinfo is refused.
fn strip_port(buf: &[u8], r: Range<usize>) -> Result<Range<usize>, RequestError> {
    let v = &buf[r.clone()];
    if v.contains(&b'@') {
        return Err(RequestError::Bad("userinfo in the request authority"));
    }
    let host_len = if v.first() == Some(&b'[') {
        v.iter()
            .position(|&b| b == b']')
            .map(|i| i + 1)
            .ok_or(RequestError::Bad("bad IPv6 host"))?
    } else {
        v.iter().position(|&b| b == b':').unwrap_or(v.len())
    };
    let valid = v[..host_len]
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
    if !valid {
        return Err(RequestError::Bad("invalid character in Host"));
    }
    // RFC 3986 §3.2.3: port = *DIGIT.
    match &v[host_len..] {
        [] => {}
        [b':', port @ ..] if port.len() <= 5 && port.iter().all(u8::is_ascii_digit) => {}
        _ => return Err(RequestError::Bad("invalid port in Host")),
    }
    Ok(r.start..r.start + host_len)
}

/// The value (trimmed) of the first header called `name` in a head the
/// parser has already accepted; `None` if there is none.
pub fn find_header<'a>(head: &'a [u8], name: &str) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n')
        // Blank lines before the request line, which the parser skips too.
        .skip_while(|line| line.is_empty() || *line == b"\r")
        .skip(1) // the request line
        .take_while(|line| !line.is_empty() && *line != b"\r")
        .find_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            line[..colon]
                .eq_ignore_ascii_case(name.as_bytes())
                .then(|| line[colon + 1..].trim_ascii())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> RequestHead {
        parse(s.as_bytes(), 16384).unwrap().expect("complete")
    }

    fn err(s: &str) -> RequestError {
        parse(s.as_bytes(), 16384).unwrap_err()
    }

    fn host(s: &str) -> Option<String> {
        ok(s).host.map(|r| s[r].to_string())
    }

    #[test]
    fn a_simple_get_is_complete_at_the_blank_line_and_not_before() {
        let s = "GET /a?b=1 HTTP/1.1\r\nHost: Example.com:8080\r\n\r\nNEXT";
        for cut in 0..s.len() - 4 {
            assert_eq!(parse(&s.as_bytes()[..cut], 16384), Ok(None), "cut {cut}");
        }
        let h = ok(s);
        assert_eq!(h.len, s.len() - 4);
        assert_eq!(&s[h.path.clone()], "/a");
        assert_eq!(host(s).unwrap(), "Example.com");
        assert!(h.keep_alive);
        assert_eq!(h.body, RequestBody::None);
        assert_eq!(h.minor, 1);
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n").keep_alive);
    }

    #[test]
    fn body_framing_is_found() {
        let h = ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(h.body, RequestBody::Length(12));
        let h = ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(h.body, RequestBody::Length(3));
        let h = ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(h.body, RequestBody::Chunked);
    }

    #[test]
    fn absolute_form_routes_by_its_authority() {
        let s = "GET http://Site.example:99/p?q HTTP/1.1\r\nHost: site.EXAMPLE:99\r\n\r\n";
        let h = ok(s);
        assert_eq!(host(s).unwrap(), "Site.example");
        assert_eq!(&s[h.absolute_rest.clone().unwrap()], "/p?q");
        assert_eq!(&s[h.path.clone()], "/p");
        let s = "GET http://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n";
        assert_eq!(ok(s).absolute_rest.map(|r| r.len()), Some(0));
        let s = "GET /x HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n";
        assert_eq!(host(s).unwrap(), "[::1]");
    }

    #[test]
    fn xff_position_is_the_end_of_the_last_value() {
        let s = "GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nHost: a\r\nX-Forwarded-For: 2.2.2.2 \r\n\r\n";
        let end = ok(s).xff_value_end.unwrap();
        assert!(s[..end].ends_with("2.2.2.2"));
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let cases = [
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3x\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -3\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\n\r\n", 400),
            ("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 501),
        ];
        for (req, status) in cases {
            assert_eq!(err(req).status(), status, "{req:?}");
        }
    }

    #[test]
    fn limits_give_414_and_431() {
        let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(2000));
        assert_eq!(
            parse(long_line.as_bytes(), 1024),
            Err(RequestError::UriTooLong)
        );
        let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "b".repeat(2000));
        assert_eq!(
            parse(big.as_bytes(), 1024),
            Err(RequestError::HeaderTooLarge)
        );
        let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..MAX_HEADERS {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(err(&many), RequestError::HeaderTooLarge);
    }

    #[test]
    fn headers_are_found_by_name_in_an_accepted_head() {
        let head =
            b"GET / HTTP/1.1\r\nHost: a\r\nRange:  bytes=0-1 \r\nrange: second\r\n\r\nbody: no";
        assert_eq!(find_header(head, "range"), Some(&b"bytes=0-1"[..]));
        assert_eq!(find_header(head, "HOST"), Some(&b"a"[..]));
        assert_eq!(find_header(head, "body"), None);
        assert_eq!(find_header(b"GET / HTTP/1.0\n\n", "host"), None);
    }

    #[test]
    fn headers_are_found_after_blank_lines_before_the_request_line() {
        // Found by fuzzing: the parser skips these lines, `find_header` took
        // the first one for the request line and saw no headers.
        let head = b"\r\n\nGET / HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\n\r\n";
        assert_eq!(ok(std::str::from_utf8(head).unwrap()).len, head.len());
        assert_eq!(find_header(head, "range"), Some(&b"bytes=0-1"[..]));
        assert_eq!(find_header(head, "host"), Some(&b"a"[..]));
    }

    #[test]
    fn an_invalid_host_header_is_refused_behind_an_absolute_target() {
        // Found by fuzzing: the authority routed the request, and the Host
        // header the backend receives was never checked.
        let s = "GET https://[::1]:8443?[x HTTP/1.1\r\nHost: [::?].0.\r\n\r\n";
        assert_eq!(err(s), RequestError::Bad("invalid character in Host"));
        let s = "GET http://a.example/ HTTP/1.1\r\nHost: a b\r\n\r\n";
        assert_eq!(err(s).status(), 400);
        assert_eq!(
            host("GET http://a.example/ HTTP/1.1\r\nHost: a.example:80\r\n\r\n").unwrap(),
            "a.example"
        );
    }

    #[test]
    fn a_host_header_naming_another_authority_is_refused() {
        let bad = "Host header does not name the request target's authority";
        for s in [
            "GET http://routed.example/abs HTTP/1.1\r\nHost: evil.example\r\n\r\n",
            "GET http://a.example/ HTTP/1.1\r\nHost: a.example:81\r\n\r\n",
            "GET https://a.example/ HTTP/1.1\r\nHost: a.example:80\r\n\r\n",
            "GET http://a.example:8080/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
        ] {
            assert_eq!(err(s), RequestError::Bad(bad), "{s:?}");
        }
        for s in [
            "GET http://a.example/ HTTP/1.1\r\nHost: A.example\r\n\r\n",
            "GET https://a.example/ HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
            "GET HTTP://a.example:8080/ HTTP/1.1\r\nHost: a.example:8080\r\n\r\n",
        ] {
            assert_eq!(ok(s).add_host, None, "{s:?}");
        }
        assert_eq!(
            err("GET http:///p HTTP/1.1\r\nHost: a\r\n\r\n"),
            RequestError::Bad("absolute-form target without a host")
        );
    }

    #[test]
    fn an_absolute_target_without_a_host_header_gives_the_backend_one() {
        let s = "GET http://a.example:81/p HTTP/1.0\r\n\r\n";
        let h = ok(s);
        assert_eq!(&s[h.add_host.unwrap()], "a.example:81");
    }

    #[test]
    fn every_line_must_end_with_crlf() {
        for s in [
            "GET /lf HTTP/1.1\nHost: a\n\n",
            "GET /lf HTTP/1.1\r\nHost: a\n\r\n",
            "GET /lf HTTP/1.1\r\nHost: a  \n\r\n",
            "GET /lf HTTP/1.1\r\nHost: a\r\n\n",
            "GET /lf HTTP/1.1\nHost: a\r\n\r\n",
            "GET /lf HTTP/1.0\n\n",
        ] {
            assert_eq!(err(s), BARE_LF, "{s:?}");
        }
        let h = ok("GET / HTTP/1.1\r\nHost: a \t\r\nX:\r\n\r\n");
        assert_eq!(h.headers, 2);
    }

    #[test]
    fn targets_must_be_origin_absolute_or_asterisk_form() {
        for s in [
            "GET ! HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
            "OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a/#x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a%4 HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a:80x\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: [::1]x\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a:123456\r\n\r\n",
            "GET http:// HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(err(s).status(), 400, "{s:?}");
        }
        ok("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        ok("GET /a?b=/c HTTP/1.1\r\nHost: a\r\n\r\n");
        ok("GET /a%2F%2e?q=%41 HTTP/1.1\r\nHost: a:\r\n\r\n");
        ok("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n");
    }

    #[test]
    fn a_higher_minor_version_is_handled_as_http11() {
        let mut b = b"GET / HTTP/1.2\r\nHost: a\r\n\r\n".to_vec();
        let h = parse_mut(&mut b, 16384).unwrap().unwrap();
        assert_eq!(h.minor, 1);
        assert_eq!(&b[..16], b"GET / HTTP/1.1\r\n");
        // Split before the head is complete, too.
        let mut b = b"\r\nPOST /x HTTP/1.9".to_vec();
        assert_eq!(parse_mut(&mut b, 16384), Ok(None));
        assert_eq!(&b[..], b"\r\nPOST /x HTTP/1.1");
        for s in [
            "GET / HTTP/2.0\r\n\r\n",
            "GET / HTTP/1.x\r\n\r\n",
            "GET / HTTP/1.22\r\n\r\n",
        ] {
            let mut b = s.as_bytes().to_vec();
            assert_eq!(parse_mut(&mut b, 16384).unwrap_err().status(), 400, "{s:?}");
        }
    }

    #[test]
    fn http10_without_host_has_no_routing_host() {
        assert_eq!(ok("GET / HTTP/1.0\r\n\r\n").host, None);
    }
}
